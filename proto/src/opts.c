/* The daemons' one option table; see icefarm/opts.h. */
#include "icefarm/opts.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "icefarm/err.h"

#ifndef IFM_VERSION
#define IFM_VERSION "unknown"
#endif

#define PASSWORD_MAX 4096

const char *ifm_version(void)
{
    return IFM_VERSION;
}

/* The shared options, each declared once. */
static const struct {
    unsigned group; /* 0: every daemon */
    ifm_opt opt;
} shared[] = {
    { IFM_OPTS_MQTT,
      { .name = "broker",
        .type = IFM_OPT_URL,
        .arg = "URL",
        .def = "mqtt://127.0.0.1:1883",
        .help = "MQTT broker: mqtt://HOST[:PORT], mqtts:// for TLS" } },
    { IFM_OPTS_MQTT, { .name = "user", .type = IFM_OPT_TEXT, .arg = "NAME", .def = NULL, .help = "broker login" } },
    { IFM_OPTS_MQTT,
      { .name = "password-file",
        .type = IFM_OPT_SECRET_FILE,
        .arg = "FILE",
        .def = NULL,
        .help = "file holding the broker password (mode 0600 or stricter)" } },
    { IFM_OPTS_MQTT,
      { .name = "password",
        .type = IFM_OPT_SECRET,
        .arg = "PW",
        .def = NULL,
        .help = "broker password, for interactive use only: every local user sees it in the process list" } },
    { IFM_OPTS_MQTT,
      { .name = "cafile",
        .type = IFM_OPT_TEXT,
        .arg = "FILE",
        .def = NULL,
        .help = "CA certificate for TLS (mqtts://: the system's CAs)" } },
    { IFM_OPTS_MQTT,
      { .name = "keepalive",
        .type = IFM_OPT_INT,
        .arg = "SECONDS",
        .def = "5",
        .help = "MQTT keep-alive; a dead peer is noticed within 1.5x",
        .min = 5,
        .max = 3600 } },
    { IFM_OPTS_METRICS,
      { .name = "metrics-listen",
        .type = IFM_OPT_HOSTPORT,
        .arg = "HOST:PORT",
        .def = NULL,
        .help = "serve Prometheus /metrics there (no login: loopback or a private network)" } },
    { IFM_OPTS_USBIP,
      { .name = "usbip-listen",
        .type = IFM_OPT_TEXT,
        .arg = "[HOST][:PORT]",
        .help = "serve kind usbip's USB/IP exports there (port 3240 by default; the busid token travels in clear: "
                "trusted networks only, else the broker tunnel)" } },
    { IFM_OPTS_DCSS,
      { .name = "dcss",
        .type = IFM_OPT_HOSTPORT,
        .arg = "HOST:PORT",
        .def = NULL,
        .help = "the DCSS server to connect to" } },
    { 0,
      { .name = "config",
        .type = IFM_OPT_TEXT,
        .arg = "FILE",
        .def = NULL,
        .help = "`name = value` file, read after flags and environment" } },
    { 0,
      { .name = "log-level",
        .type = IFM_OPT_LEVEL,
        .arg = "LEVEL",
        .def = "info",
        .help = "debug, info, warn or error" } },
};
#define NSHARED (sizeof shared / sizeof *shared)

enum {
    SRC_DEFAULT,
    SRC_FILE,
    SRC_ENV,
    SRC_FLAG
};

typedef struct {
    const ifm_opt *opt;
    const char *val; /* resolved */
    const char *flag, *env, *file;
    int file_line;
    int src;
} slot;

struct ifm_opts {
    const ifm_opts_spec *spec;
    slot *s;
    size_t n;
    char **owned; /* config file keys and values */
    size_t nowned;
    char *config_path;
    char *password; /* the resolved secret, wiped on free */
};

/* The table a daemon sees: the MQTT group, its own options, then the rest of
 * the shared ones, in that order (which is also --help's). */
static size_t table(const ifm_opts_spec *spec, const ifm_opt **out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < NSHARED; i++)
        if (shared[i].group == IFM_OPTS_MQTT && (spec->shared & IFM_OPTS_MQTT) && n < cap)
            out[n++] = &shared[i].opt;
    for (const ifm_opt *o = spec->own; o && o->name; o++)
        if (n < cap)
            out[n++] = o;
    for (size_t i = 0; i < NSHARED; i++)
        if (shared[i].group != IFM_OPTS_MQTT && (!shared[i].group || (spec->shared & shared[i].group)) && n < cap)
            out[n++] = &shared[i].opt;
    return n;
}

static void env_name(const ifm_opt *o, char *out, size_t cap)
{
    if (o->env) {
        snprintf(out, cap, "%s", o->env);
        return;
    }
    size_t n = (size_t)snprintf(out, cap, "ICEFARM_");
    for (const char *p = o->name; *p && n + 1 < cap; p++)
        out[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    out[n] = '\0';
}

void ifm_opts_usage(const ifm_opts_spec *spec, FILE *f)
{
    const ifm_opt *t[128];
    size_t n = table(spec, t, 128);
    fprintf(f, "Usage: %s [OPTIONS]\n%s\n\n", spec->prog, spec->about);
    for (size_t i = 0; i < n; i++) {
        char left[64], env[64];
        snprintf(left, sizeof left, "  --%s %s", t[i]->name, t[i]->arg ? t[i]->arg : "VALUE");
        env_name(t[i], env, sizeof env);
        char where[160];
        snprintf(where, sizeof where, "[%s%s%s]", env, t[i]->def ? ", " : "", t[i]->def ? t[i]->def : "");
        if (strlen(left) >= 29) { /* no room for the two spaces: the text goes below (help2man reads both) */
            fprintf(f, "%s\n", left);
            left[0] = '\0';
        }
        if (strlen(t[i]->help) + 1 + strlen(where) <= 80)
            fprintf(f, "%-30s%s %s\n", left, t[i]->help, where);
        else
            fprintf(f, "%-30s%s\n%-30s%s\n", left, t[i]->help, "", where);
    }
    fprintf(f, "%-30s%s\n%-30s%s\n", "  -h, --help", "this help", "  --version", "the version, then exit");
    fprintf(f,
            "\nA flag beats the environment, which beats the --config file, which beats the default.\n"
            "The config file's keys are the option names; an unknown key is an error.\n");
    if (spec->notes)
        fprintf(f, "%s\n", spec->notes);
}

static int fail(const ifm_opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(const ifm_opts *o, const char *fmt, ...)
{
    fprintf(stderr, "%s: ", o->spec->prog);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return -1;
}

static slot *find(const ifm_opts *o, const char *name)
{
    for (size_t i = 0; i < o->n; i++)
        if (strcmp(o->s[i].opt->name, name) == 0)
            return &o->s[i];
    return NULL;
}

/* "--keepalive", "ICEFARM_KEEPALIVE" or "FILE:LINE: keepalive": where a value came from. */
static void origin(const ifm_opts *o, const slot *s, char *out, size_t cap)
{
    switch (s->src) {
    case SRC_FLAG:
        snprintf(out, cap, "--%s", s->opt->name);
        break;
    case SRC_ENV:
        env_name(s->opt, out, cap);
        break;
    case SRC_FILE:
        snprintf(out, cap, "%s:%d: %s", o->config_path, s->file_line, s->opt->name);
        break;
    default:
        snprintf(out, cap, "the default of --%s", s->opt->name);
    }
}

int ifm_secret_read(const char *path, char *out, size_t cap, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return ifm_failbuf(err, errlen, -errno, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0) {
        rc = ifm_failbuf(err, errlen, -errno, "cannot stat %s: %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        rc = ifm_failbuf(err, errlen, IFM_EINVAL, "%s is not a regular file", path);
    } else if (st.st_mode & 077) {
        rc = ifm_failbuf(err, errlen, IFM_EACCES,
                         "%s is mode %04o: group or others may read it; a secret's file must be 0600 or stricter "
                         "(chmod 600 %s)",
                         path, (unsigned)(st.st_mode & 07777), path);
    }
    if (rc) {
        close(fd);
        return rc;
    }
    size_t len = 0;
    ssize_t k;
    while (len + 1 < cap && (k = read(fd, out + len, cap - 1 - len)) != 0) {
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            rc = ifm_failbuf(err, errlen, -errno, "cannot read %s: %s", path, strerror(errno));
            break;
        }
        len += (size_t)k;
    }
    char extra;
    /* A full buffer is fine if the first line ended inside it or right after it. */
    if (!rc && len + 1 >= cap && !memchr(out, '\n', len) && !memchr(out, '\r', len) && read(fd, &extra, 1) == 1 &&
        extra != '\n' && extra != '\r')
        rc = ifm_failbuf(err, errlen, IFM_EMSGSIZE, "%s: the secret is longer than %zu bytes", path, cap - 1);
    close(fd);
    if (rc) {
        memset(out, 0, cap);
        return rc;
    }
    size_t line = 0; /* the first line's length */
    while (line < len && out[line] != '\n' && out[line] != '\r')
        line++;
    bool nul = memchr(out, '\0', line) != NULL;
    memset(out + line, 0, cap - line);
    if (nul) {
        memset(out, 0, cap);
        return ifm_failbuf(err, errlen, IFM_EINVAL, "%s: the secret holds a NUL byte", path);
    }
    if (!out[0])
        return ifm_failbuf(err, errlen, IFM_EINVAL, "%s holds no secret (its first line is empty)", path);
    return 0;
}

static char *keep(ifm_opts *o, const char *s, size_t n)
{
    char **no = realloc(o->owned, (o->nowned + 1) * sizeof *no);
    if (!no)
        return NULL;
    o->owned = no;
    char *c = strndup(s, n);
    if (c)
        o->owned[o->nowned++] = c;
    return c;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static int load_config(ifm_opts *o, const char *path)
{
    o->config_path = keep(o, path, strlen(path));
    FILE *f = fopen(path, "r");
    if (!f)
        return fail(o, "cannot open config file %s: %s", path, strerror(errno));
    struct stat st;
    bool private = fstat(fileno(f), &st) == 0 && !(st.st_mode & 077);
    char line[4096];
    int lineno = 0, rc = 0;
    while (!rc && fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            rc = fail(o, "%s:%d: line longer than %zu bytes", path, lineno, sizeof line - 2);
            break;
        }
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = trim(line);
        if (!*s)
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = fail(o, "%s:%d: expected `name = value`", path, lineno);
            break;
        }
        *eq = '\0';
        char *key = trim(s), *val = trim(eq + 1);
        slot *sl = find(o, key);
        if (!sl || strcmp(key, "config") == 0) {
            rc = fail(o, "%s:%d: unknown key %s", path, lineno, key);
        } else if (sl->file) {
            rc = fail(o, "%s:%d: key %s given twice (first on line %d)", path, lineno, key, sl->file_line);
        } else if (!*val) {
            rc = fail(o, "%s:%d: key %s has no value", path, lineno, key);
        } else if (sl->opt->type == IFM_OPT_SECRET && !private) {
            rc = fail(o, "%s:%d: the file holds a password but group or others may read it: chmod 600 %s", path, lineno,
                      path);
        } else if (!(sl->file = keep(o, val, strlen(val)))) {
            rc = fail(o, "out of memory");
        } else {
            sl->file_line = lineno;
        }
    }
    explicit_bzero(line, sizeof line);
    fclose(f);
    return rc;
}

static int check_value(const ifm_opts *o, const slot *s)
{
    const char *v = s->val;
    char from[320];
    origin(o, s, from, sizeof from);
    switch (s->opt->type) {
    case IFM_OPT_INT: {
        char *end;
        errno = 0;
        long x = strtol(v, &end, 10);
        if (!*v || *end || errno || x < s->opt->min || x > s->opt->max)
            return fail(o, "%s must be a number from %ld to %ld, not \"%s\"", from, s->opt->min, s->opt->max, v);
        return 0;
    }
    case IFM_OPT_URL: {
        ifm_mqtt_opts mo = { 0 };
        char host[256];
        if (ifm_mqtt_parse_url(v, &mo, host, sizeof host))
            return fail(o, "%s: bad broker address \"%s\" (mqtt://HOST[:PORT] or mqtts://HOST[:PORT])", from, v);
        return 0;
    }
    case IFM_OPT_HOSTPORT: {
        const char *colon = strrchr(v, ':');
        char *end;
        long port = colon ? strtol(colon + 1, &end, 10) : 0;
        if (!colon || !colon[1] || *end || port < 0 || port > 65535)
            return fail(o, "%s must be HOST:PORT (or :PORT), not \"%s\"", from, v);
        return 0;
    }
    case IFM_OPT_LEVEL:
        if (strcmp(v, "debug") && strcmp(v, "info") && strcmp(v, "warn") && strcmp(v, "error"))
            return fail(o, "%s must be debug, info, warn or error, not \"%s\"", from, v);
        return 0;
    default:
        if (!*v)
            return fail(o, "%s is empty", from);
        return 0;
    }
}

/* The password: --password-file or --password (or their variables or keys),
 * whichever comes from the strongest source; both at once is an error. */
static int resolve_password(ifm_opts *o)
{
    slot *pf = find(o, "password-file"), *pw = find(o, "password");
    if (!pf || !pw || (pf->src == SRC_DEFAULT && pw->src == SRC_DEFAULT))
        return 0;
    if (pf->src == pw->src) {
        char a[320], b[320];
        origin(o, pf, a, sizeof a);
        origin(o, pw, b, sizeof b);
        return fail(o, "%s and %s both give the password: keep one", a, b);
    }
    o->password = calloc(1, PASSWORD_MAX);
    if (!o->password)
        return fail(o, "out of memory");
    if (pf->src > pw->src) {
        char err[512];
        if (ifm_secret_read(pf->val, o->password, PASSWORD_MAX, err, sizeof err)) {
            char from[320];
            origin(o, pf, from, sizeof from);
            return fail(o, "%s: %s", from, err);
        }
    } else {
        if (strlen(pw->val) >= PASSWORD_MAX)
            return fail(o, "the password is longer than %d bytes", PASSWORD_MAX - 1);
        strcpy(o->password, pw->val);
        if (pw->src == SRC_FLAG) {
            fprintf(stderr,
                    "%s: warning: --password is visible to every local user in the process list; use "
                    "--password-file FILE (mode 0600) or ICEFARM_PASSWORD instead\n",
                    o->spec->prog);
            /* Blank the command line's copy: /proc/PID/cmdline shows it from now on as stars. */
            memset((char *)pw->flag, '*', strlen(pw->flag));
        }
    }
    pw->val = o->password;
    return 0;
}

static int resolve(ifm_opts *o, const char *config_flag)
{
    const char *path = config_flag ? config_flag : getenv("ICEFARM_CONFIG");
    if (path && *path && load_config(o, path))
        return -1;
    for (size_t i = 0; i < o->n; i++) {
        slot *s = &o->s[i];
        char env[64];
        env_name(s->opt, env, sizeof env);
        const char *e = getenv(env);
        s->env = e && *e ? e : NULL;
        if (s->flag)
            s->val = s->flag, s->src = SRC_FLAG;
        else if (s->env)
            s->val = s->env, s->src = SRC_ENV;
        else if (s->file)
            s->val = s->file, s->src = SRC_FILE;
        else
            s->val = s->opt->def, s->src = SRC_DEFAULT;
        if (s->val && s->opt->type != IFM_OPT_SECRET && check_value(o, s))
            return -1;
    }
    if (resolve_password(o))
        return -1;
    const char *level = ifm_opts_get(o, "log-level");
    if (ifm_opts_isset(o, "log-level"))
        setenv("ICEFARM_LOG_LEVEL", level, 1);
    return 0;
}

ifm_opts *ifm_opts_parse(const ifm_opts_spec *spec, int argc, char **argv, int *exit_code)
{
    *exit_code = 2;
    ifm_opts *o = calloc(1, sizeof *o);
    const ifm_opt *t[128];
    size_t n = table(spec, t, 128);
    struct option *lo = calloc(n + 3, sizeof *lo);
    if (o)
        o->s = calloc(n, sizeof *o->s);
    if (!o || !lo || !o->s) {
        fprintf(stderr, "%s: out of memory\n", spec->prog);
        free(lo);
        ifm_opts_free(o);
        return NULL;
    }
    o->spec = spec;
    o->n = n;
    for (size_t i = 0; i < n; i++) {
        o->s[i].opt = t[i];
        lo[i] = (struct option){ t[i]->name, required_argument, NULL, 256 + (int)i };
    }
    enum {
        O_VERSION = 255
    };
    lo[n] = (struct option){ "help", no_argument, NULL, 'h' };
    lo[n + 1] = (struct option){ "version", no_argument, NULL, O_VERSION };
    int c, rc = 0;
    optind = 1;
    while (!rc && (c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        if (c == 'h') {
            ifm_opts_usage(spec, stdout);
            *exit_code = 0;
            rc = 1;
        } else if (c == O_VERSION) {
            printf("%s %s\n", spec->prog, ifm_version());
            *exit_code = 0;
            rc = 1;
        } else if (c >= 256 && (size_t)(c - 256) < n) {
            o->s[c - 256].flag = optarg;
        } else {
            fprintf(stderr, "Try '%s --help'.\n", spec->prog);
            rc = 1;
        }
    }
    if (!rc && optind < argc) {
        fail(o, "unexpected argument %s", argv[optind]);
        rc = 1;
    }
    slot *cfg = find(o, "config");
    if (!rc && resolve(o, cfg ? cfg->flag : NULL))
        rc = 1;
    free(lo);
    if (rc) {
        ifm_opts_free(o);
        return NULL;
    }
    *exit_code = 0;
    return o;
}

void ifm_opts_free(ifm_opts *o)
{
    if (!o)
        return;
    for (size_t i = 0; i < o->nowned; i++) {
        explicit_bzero(o->owned[i], strlen(o->owned[i]));
        free(o->owned[i]);
    }
    if (o->password)
        explicit_bzero(o->password, PASSWORD_MAX);
    free(o->password);
    free(o->owned);
    free(o->s);
    free(o);
}

static const slot *must(const ifm_opts *o, const char *name)
{
    const slot *s = find(o, name);
    if (!s) {
        fprintf(stderr, "%s: internal error: option %s is not declared\n", o->spec->prog, name);
        abort();
    }
    return s;
}

const char *ifm_opts_get(const ifm_opts *o, const char *name)
{
    return must(o, name)->val;
}

long ifm_opts_long(const ifm_opts *o, const char *name)
{
    const char *v = must(o, name)->val;
    return v ? strtol(v, NULL, 10) : 0;
}

bool ifm_opts_isset(const ifm_opts *o, const char *name)
{
    return must(o, name)->src != SRC_DEFAULT;
}

void ifm_opts_mqtt(const ifm_opts *o, ifm_mqtt_opts *mo, char *host, size_t cap)
{
    ifm_mqtt_parse_url(ifm_opts_get(o, "broker"), mo, host, cap);
    mo->username = ifm_opts_get(o, "user");
    mo->password = ifm_opts_get(o, "password");
    mo->cafile = ifm_opts_get(o, "cafile");
    mo->keepalive = (int)ifm_opts_long(o, "keepalive");
}
