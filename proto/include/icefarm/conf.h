/* Configuration in the usual order: command-line flag, then environment
 * (ICEFARM_<NAME>), then the config file (`name = value` lines, '#' comments),
 * then the built-in default. Every daemon and the CLI resolve options the same way.
 */
#ifndef ICEFARM_CONF_H
#define ICEFARM_CONF_H

#include <getopt.h>
#include <stddef.h>
#include <stdio.h>

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
int ifm_conf_get_long(const ifm_conf *c, const char *name, const char *flag, long def, long min, long max, long *out,
                      char *err, size_t errlen);

/* The start of every daemon's configuration: parses `opts` (getopt_long; each
 * option's `val` is its index 1..nflags-1 into `flag`, which receives its
 * argument), answers -h/--help with usage(stdout) and exit(0), rejects unknown
 * options (usage(stderr)) and positional arguments, then loads the config file
 * named by flag[config_flag], or else $ICEFARM_<CONFIG_KEY>. Returns the conf, or
 * NULL after printing why on stderr as "<prog>: ...". */
ifm_conf *ifm_conf_from_args(int argc, char **argv, const struct option *opts, const char **flag, int nflags,
                             int config_flag, const char *config_key, void (*usage)(FILE *));

#endif
