#include "icefarm/conf.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *key, *value;
} entry;

struct ifm_conf {
    entry *e;
    size_t n;
};

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

ifm_conf *ifm_conf_load(const char *path, char *err, size_t errlen)
{
    ifm_conf *c = calloc(1, sizeof *c);
    if (!c || !path)
        return c;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot open config file %s", path);
        ifm_conf_free(c);
        return NULL;
    }
    char line[1024];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = trim(line);
        if (!*s)
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s:%d: expected `name = value`", path, lineno);
            fclose(f);
            ifm_conf_free(c);
            return NULL;
        }
        *eq = '\0';
        entry *ne = realloc(c->e, (c->n + 1) * sizeof *ne);
        if (!ne)
            break;
        c->e = ne;
        c->e[c->n].key = strdup(trim(s));
        c->e[c->n].value = strdup(trim(eq + 1));
        c->n++;
    }
    fclose(f);
    return c;
}

void ifm_conf_free(ifm_conf *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++) {
        free(c->e[i].key);
        free(c->e[i].value);
    }
    free(c->e);
    free(c);
}

const char *ifm_conf_get(const ifm_conf *c, const char *name, const char *flag, const char *def)
{
    if (flag)
        return flag;
    char env[96] = "ICEFARM_";
    size_t n = strlen(env);
    for (const char *p = name; *p && n < sizeof env - 1; p++)
        env[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    env[n] = '\0';
    const char *v = getenv(env);
    if (v && *v)
        return v;
    for (size_t i = 0; c && i < c->n; i++)
        if (c->e[i].key && strcmp(c->e[i].key, name) == 0)
            return c->e[i].value;
    return def;
}

ifm_conf *ifm_conf_from_args(int argc, char **argv, const struct option *opts, const char **flag, int nflags,
                             int config_flag, const char *config_key, void (*usage)(FILE *))
{
    int o;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (o == 'h') {
            usage(stdout);
            exit(0);
        }
        if (o <= 0 || o >= nflags) {
            usage(stderr);
            return NULL;
        }
        flag[o] = optarg;
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument %s\n", argv[0], argv[optind]);
        return NULL;
    }
    char err[256] = "";
    ifm_conf *conf = ifm_conf_load(ifm_conf_get(NULL, config_key, flag[config_flag], NULL), err, sizeof err);
    if (!conf)
        fprintf(stderr, "%s: %s\n", argv[0], err);
    return conf;
}

int ifm_conf_get_long(const ifm_conf *c, const char *name, const char *flag, long def, long min, long max, long *out,
                      char *err, size_t errlen)
{
    const char *v = ifm_conf_get(c, name, flag, NULL);
    if (!v) {
        *out = def;
        return 0;
    }
    char *end;
    long x = strtol(v, &end, 10);
    if (*v == '\0' || *end != '\0' || x < min || x > max) {
        snprintf(err, errlen, "option %s must be a number from %ld to %ld, got \"%s\"", name, min, max, v);
        return -1;
    }
    *out = x;
    return 0;
}
