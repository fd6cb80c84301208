/* The daemons' one option table.
 *
 * Every option is declared once, as an ifm_opt: its name (the long flag
 * --NAME, the config-file key NAME and the environment variable ICEFARM_<NAME>
 * upper-cased with '-' -> '_'), its type, its default and its help line. The
 * options several daemons share (the broker connection, the listeners that
 * are coming, config and log level) are declared here, in opts.c; a daemon
 * picks the groups it uses (IFM_OPTS_*) and adds a table of its own. From the
 * tables come the parser, the validation of every value, the --help text and
 * --version, so a daemon's usage cannot disagree with what it accepts.
 *
 * A value comes from, in order: the command line, the environment, the config
 * file (--config FILE or ICEFARM_CONFIG: `name = value` lines, '#' comments),
 * the default. A config file naming a key the daemon does not have is an error
 * (`FILE:LINE: unknown key K`), as is a key given twice.
 *
 * Secrets. The broker password comes from --password-file FILE (or
 * ICEFARM_PASSWORD_FILE, or `password-file` in the config file): the file's
 * first line, and the file must be mode 0600 or stricter, else the daemon
 * refuses to start and says why. ICEFARM_PASSWORD in the environment is also
 * fine (a process's environment is private to its user). --password PW stays
 * for interactive use: it works, but warns that every local user sees it in
 * the process list, and the copy in argv is blanked once read. A config file
 * holding `password` must itself be mode 0600 or stricter.
 *
 * Errors in options, the environment or the config file print one line,
 * "<prog>: <reason>", and make ifm_opts_parse() ask for exit status 2; --help
 * and --version print to stdout and ask for status 0.
 *
 * Ownership: the returned ifm_opts owns the config file's text and the
 * password; strings it returns live until ifm_opts_free(), which wipes the
 * password. Values from argv and the environment are borrowed from them. Not
 * thread-safe (getopt_long, setenv): call it first thing in main().
 */
#ifndef ICEFARM_OPTS_H
#define ICEFARM_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "icefarm/mqtt.h"

typedef enum {
    IFM_OPT_TEXT,        /* any non-empty string */
    IFM_OPT_INT,         /* a decimal number in [min, max] */
    IFM_OPT_URL,         /* a broker URL: mqtt://HOST[:PORT] or mqtts://HOST[:PORT] */
    IFM_OPT_HOSTPORT,    /* HOST:PORT, [V6]:PORT, or :PORT for every interface */
    IFM_OPT_LEVEL,       /* a log level: debug, info, warn or error */
    IFM_OPT_SECRET,      /* a secret given inline (--password): warned about on the command line */
    IFM_OPT_SECRET_FILE, /* a file holding a secret: mode 0600 or stricter */
} ifm_opt_type;

typedef struct {
    const char *name; /* flag, config key and (unless env says otherwise) ICEFARM_<NAME> */
    ifm_opt_type type;
    const char *arg;  /* the value's name in --help: "URL", "SECONDS" */
    const char *def;  /* the default, as it would be written; NULL: none */
    const char *help; /* one line */
    long min, max;    /* IFM_OPT_INT */
    const char *env;  /* the environment variable if not ICEFARM_<NAME> */
} ifm_opt;

/* Groups of shared options a daemon may pick. config and log-level, --help
 * and --version are always there. */
#define IFM_OPTS_MQTT 0x01u    /* broker, user, password-file, password, cafile, keepalive */
#define IFM_OPTS_METRICS 0x02u /* metrics-listen HOST:PORT: Prometheus /metrics */
#define IFM_OPTS_USBIP 0x04u   /* usbip-listen HOST:PORT: the USB/IP server */
#define IFM_OPTS_DCSS 0x08u    /* dcss HOST:PORT: the DCSS server to connect to */

typedef struct {
    const char *prog;   /* "icefarm-ctl" */
    const char *about;  /* what it is, a line or two, for --help */
    const char *notes;  /* printed after the options (may be NULL) */
    unsigned shared;    /* IFM_OPTS_* */
    const ifm_opt *own; /* this daemon's own options, ended by an entry with name NULL */
} ifm_opts_spec;

typedef struct ifm_opts ifm_opts;

/* Parses argv, the environment and the config file; validates every value.
 * NULL means "exit now with *exit_code" (0 after --help/--version, 2 after an
 * error, which has been printed). */
ifm_opts *ifm_opts_parse(const ifm_opts_spec *spec, int argc, char **argv, int *exit_code);
void ifm_opts_free(ifm_opts *o);

/* The value of option `name` (NULL: unset and no default). For "password",
 * the secret itself, wherever it came from. Asking for an option the daemon
 * did not declare is a programming error: it aborts. */
const char *ifm_opts_get(const ifm_opts *o, const char *name);
/* An IFM_OPT_INT's value (validated by the parse). */
long ifm_opts_long(const ifm_opts *o, const char *name);
/* true if the value came from the command line, environment or config file. */
bool ifm_opts_isset(const ifm_opts *o, const char *name);

/* The broker connection the shared MQTT options describe: host (into
 * host[cap]), port, tls, username, password, cafile and keepalive. */
void ifm_opts_mqtt(const ifm_opts *o, ifm_mqtt_opts *mo, char *host, size_t cap);

/* The version every binary's --version prints ("0.1.0"). */
const char *ifm_version(void);

/* The --help text. */
void ifm_opts_usage(const ifm_opts_spec *spec, FILE *f);

/* Reads a secret from `path`: its first line (without the newline), at most
 * cap-1 bytes. Refuses (with the reason in err) a file that is not a regular
 * file, that group or others may read or write (mode must be 0600 or
 * stricter), that is empty, or whose secret does not fit. Returns 0, or a
 * negative IFM_E* code (icefarm/err.h). For the CLI too. */
int ifm_secret_read(const char *path, char *out, size_t cap, char *err, size_t errlen);

#endif
