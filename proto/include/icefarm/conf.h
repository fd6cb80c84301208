/* Configuration in the usual order: command-line flag, then environment
 * (ICEFARM_<NAME>), then the config file (`name = value` lines, '#' comments),
 * then the built-in default. Every daemon and the CLI resolve options the same way.
 */
#ifndef ICEFARM_CONF_H
#define ICEFARM_CONF_H

#include <stddef.h>

typedef struct ifm_conf ifm_conf;

/* Loads `path` (NULL: an empty config). Returns NULL and sets err on a missing
 * file or a malformed line (with its line number). */
ifm_conf *ifm_conf_load(const char *path, char *err, size_t errlen);
void ifm_conf_free(ifm_conf *c);

/* Resolves option `name` (e.g. "broker"): flag value if non-NULL, else env
 * ICEFARM_<NAME upper-cased, '-' -> '_'>, else the file's value, else `def`.
 * The returned string lives as long as the conf / the flag / the environment. */
const char *ifm_conf_get(const ifm_conf *c, const char *name, const char *flag, const char *def);

/* Same for a number; returns -1 (and names the option in err) if not a number
 * in [min, max]. */
int ifm_conf_get_long(const ifm_conf *c, const char *name, const char *flag, long def, long min,
                      long max, long *out, char *err, size_t errlen);

#endif
