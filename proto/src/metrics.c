/* The metrics registry and its Prometheus text rendering. Families and series
 * are small arrays searched linearly: a daemon has a few dozen series, and hot
 * paths keep their series pointers. */
#include "icefarm/metrics.h"
#include "icefarm/grow.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double IFM_BUCKETS_LATENCY[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 };
const size_t IFM_BUCKETS_LATENCY_N = sizeof IFM_BUCKETS_LATENCY / sizeof IFM_BUCKETS_LATENCY[0];
const double IFM_BUCKETS_SLOW[] = { 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300 };
const size_t IFM_BUCKETS_SLOW_N = sizeof IFM_BUCKETS_SLOW / sizeof IFM_BUCKETS_SLOW[0];

enum kind {
    K_COUNTER,
    K_GAUGE,
    K_HISTOGRAM
};

struct ifm_series {
    ifm_metric *m;
    char *values[IFM_METRIC_MAX_LABELS];
    double v;        /* counter/gauge value; histogram count */
    double sum;      /* histogram */
    double *buckets; /* histogram: per-bucket (not cumulative) counts, nbounds of them */
};

struct ifm_metric {
    enum kind kind;
    char *name, *help;
    char *labels[IFM_METRIC_MAX_LABELS];
    size_t nlabels;
    double *bounds;
    size_t nbounds;
    ifm_series **series;
    size_t nseries, capseries;
};

typedef struct {
    void (*cb)(ifm_metrics *r, void *arg);
    void *arg;
} collector;

struct ifm_metrics {
    ifm_metric **fams;
    size_t nfams, capfams;
    collector collectors[8];
    size_t ncollectors;
};

ifm_metrics *ifm_metrics_new(void)
{
    return calloc(1, sizeof(ifm_metrics));
}

static void series_free(ifm_series *s, size_t nlabels)
{
    for (size_t i = 0; i < nlabels; i++)
        free(s->values[i]);
    free(s->buckets);
    free(s);
}

static void metric_free(ifm_metric *m)
{
    for (size_t i = 0; i < m->nseries; i++)
        series_free(m->series[i], m->nlabels);
    for (size_t i = 0; i < m->nlabels; i++)
        free(m->labels[i]);
    free(m->series);
    free(m->bounds);
    free(m->name);
    free(m->help);
    free(m);
}

void ifm_metrics_free(ifm_metrics *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nfams; i++)
        metric_free(r->fams[i]);
    free(r->fams);
    free(r);
}

/* ---- registration ---- */

static bool name_ok(const char *n, bool colons)
{
    if (!n || !*n)
        return false;
    for (const char *p = n; *p; p++) {
        bool alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' || (colons && *p == ':');
        if (!alpha && !(p > n && *p >= '0' && *p <= '9'))
            return false;
    }
    return true;
}

static ifm_metric *add_family(ifm_metrics *r, enum kind kind, const char *name, const char *help,
                              const char *const *labels)
{
    if (!r || !name_ok(name, true) || !help)
        return NULL;
    for (size_t i = 0; i < r->nfams; i++)
        if (strcmp(r->fams[i]->name, name) == 0)
            return NULL;
    size_t n = 0;
    for (; labels && labels[n]; n++) {
        if (n == IFM_METRIC_MAX_LABELS || !name_ok(labels[n], false) || strncmp(labels[n], "__", 2) == 0 ||
            (kind == K_HISTOGRAM && strcmp(labels[n], "le") == 0))
            return NULL;
        for (size_t j = 0; j < n; j++)
            if (strcmp(labels[j], labels[n]) == 0)
                return NULL;
    }
    ifm_metric **nf = ifm_grow(r->fams, &r->capfams, r->nfams, sizeof *nf, 16);
    if (!nf)
        return NULL;
    r->fams = nf;
    ifm_metric *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->kind = kind;
    m->name = strdup(name);
    m->help = strdup(help);
    bool ok = m->name && m->help;
    for (size_t i = 0; i < n; i++) {
        m->labels[i] = strdup(labels[i]);
        ok = ok && m->labels[i];
    }
    m->nlabels = n;
    if (!ok) {
        metric_free(m);
        return NULL;
    }
    r->fams[r->nfams++] = m;
    return m;
}

ifm_metric *ifm_metrics_counter(ifm_metrics *r, const char *name, const char *help, const char *const *labels)
{
    return add_family(r, K_COUNTER, name, help, labels);
}

ifm_metric *ifm_metrics_gauge(ifm_metrics *r, const char *name, const char *help, const char *const *labels)
{
    return add_family(r, K_GAUGE, name, help, labels);
}

ifm_metric *ifm_metrics_histogram(ifm_metrics *r, const char *name, const char *help, const char *const *labels,
                                  const double *bounds, size_t nbounds)
{
    if (!bounds || !nbounds)
        return NULL;
    for (size_t i = 0; i < nbounds; i++)
        if (!isfinite(bounds[i]) || (i && bounds[i] <= bounds[i - 1]))
            return NULL;
    double *b = malloc(nbounds * sizeof *b);
    if (!b)
        return NULL;
    ifm_metric *m = add_family(r, K_HISTOGRAM, name, help, labels);
    if (!m) {
        free(b);
        return NULL;
    }
    memcpy(b, bounds, nbounds * sizeof *b);
    m->bounds = b;
    m->nbounds = nbounds;
    return m;
}

/* ---- series ---- */

static ifm_series *series_new(ifm_metric *m, const char **values)
{
    if (m->nseries == IFM_METRIC_MAX_SERIES)
        return NULL;
    ifm_series **ns = ifm_grow(m->series, &m->capseries, m->nseries, sizeof *ns, 8);
    if (!ns)
        return NULL;
    m->series = ns;
    ifm_series *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->m = m;
    bool ok = true;
    for (size_t i = 0; i < m->nlabels; i++) {
        s->values[i] = strdup(values[i] ? values[i] : "");
        ok = ok && s->values[i];
    }
    if (m->kind == K_HISTOGRAM) {
        s->buckets = calloc(m->nbounds, sizeof *s->buckets);
        ok = ok && s->buckets;
    }
    if (!ok) {
        series_free(s, m->nlabels);
        return NULL;
    }
    m->series[m->nseries++] = s;
    return s;
}

ifm_series *ifm_metric_at(ifm_metric *m, ...)
{
    if (!m)
        return NULL;
    const char *values[IFM_METRIC_MAX_LABELS] = { 0 };
    va_list ap;
    va_start(ap, m);
    for (size_t i = 0; i < m->nlabels; i++)
        values[i] = va_arg(ap, const char *);
    va_end(ap);
    for (size_t i = 0; i < m->nseries; i++) {
        ifm_series *s = m->series[i];
        size_t j = 0;
        while (j < m->nlabels && strcmp(s->values[j], values[j] ? values[j] : "") == 0)
            j++;
        if (j == m->nlabels)
            return s;
    }
    return series_new(m, values);
}

void ifm_series_add(ifm_series *s, double v)
{
    if (!s || s->m->kind == K_HISTOGRAM || (s->m->kind == K_COUNTER && !(v >= 0)))
        return;
    s->v += v;
}

void ifm_series_set(ifm_series *s, double v)
{
    if (s && s->m->kind == K_GAUGE)
        s->v = v;
}

void ifm_series_observe(ifm_series *s, double v)
{
    if (!s || s->m->kind != K_HISTOGRAM || isnan(v))
        return;
    for (size_t i = 0; i < s->m->nbounds; i++) {
        if (v <= s->m->bounds[i]) {
            s->buckets[i] += 1;
            break;
        }
    }
    s->v += 1;
    s->sum += v;
}

double ifm_series_value(const ifm_series *s)
{
    return s ? s->v : 0;
}

double ifm_series_sum(const ifm_series *s)
{
    return s ? s->sum : 0;
}

void ifm_metric_reset(ifm_metric *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nseries; i++) {
        ifm_series *s = m->series[i];
        s->v = s->sum = 0;
        if (s->buckets)
            memset(s->buckets, 0, m->nbounds * sizeof *s->buckets);
    }
}

int ifm_metrics_on_collect(ifm_metrics *r, void (*cb)(ifm_metrics *r, void *arg), void *arg)
{
    if (r->ncollectors == sizeof r->collectors / sizeof r->collectors[0])
        return -ENOSPC;
    r->collectors[r->ncollectors++] = (collector){ cb, arg };
    return 0;
}

/* ---- rendering ---- */

typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} buf;

static void put(buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        char *np = ifm_grow_bytes(b->p, &b->cap, b->len + n + 1, 4096, 0);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(buf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* HELP text escapes \ and newline; label values also escape ". */
static void put_escaped(buf *b, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            puts_(b, "\\\\");
        else if (*s == '\n')
            puts_(b, "\\n");
        else if (quote && *s == '"')
            puts_(b, "\\\"");
        else
            put(b, s, 1);
    }
}

/* The shortest text that reads back as the same double; integers without ".0". */
static void put_number(buf *b, double v)
{
    char t[40];
    if (isnan(v)) {
        puts_(b, "NaN");
        return;
    }
    if (isinf(v)) {
        puts_(b, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(t, sizeof t, "%.*g", prec, v);
        if (strtod(t, NULL) == v)
            break;
    }
    puts_(b, t);
}

static void put_labels(buf *b, const ifm_series *s, const char *le)
{
    const ifm_metric *m = s->m;
    if (!m->nlabels && !le)
        return;
    puts_(b, "{");
    for (size_t i = 0; i < m->nlabels; i++) {
        if (i)
            puts_(b, ",");
        puts_(b, m->labels[i]);
        puts_(b, "=\"");
        put_escaped(b, s->values[i], true);
        puts_(b, "\"");
    }
    if (le) {
        puts_(b, m->nlabels ? ",le=\"" : "le=\"");
        puts_(b, le);
        puts_(b, "\"");
    }
    puts_(b, "}");
}

static void put_sample(buf *b, const char *name, const char *suffix, const ifm_series *s, const char *le, double v)
{
    puts_(b, name);
    puts_(b, suffix);
    put_labels(b, s, le);
    puts_(b, " ");
    put_number(b, v);
    puts_(b, "\n");
}

static void render_family(buf *b, const ifm_metric *m)
{
    static const char *const types[] = { "counter", "gauge", "histogram" };
    puts_(b, "# HELP ");
    puts_(b, m->name);
    puts_(b, " ");
    put_escaped(b, m->help, false);
    puts_(b, "\n# TYPE ");
    puts_(b, m->name);
    puts_(b, " ");
    puts_(b, types[m->kind]);
    puts_(b, "\n");
    for (size_t i = 0; i < m->nseries; i++) {
        const ifm_series *s = m->series[i];
        if (m->kind != K_HISTOGRAM) {
            put_sample(b, m->name, "", s, NULL, s->v);
            continue;
        }
        double cum = 0;
        for (size_t k = 0; k < m->nbounds; k++) {
            buf le = { 0 };
            put_number(&le, m->bounds[k]);
            cum += s->buckets[k];
            put_sample(b, m->name, "_bucket", s, le.oom ? "0" : le.p, cum);
            b->oom = b->oom || le.oom;
            free(le.p);
        }
        put_sample(b, m->name, "_bucket", s, "+Inf", s->v);
        put_sample(b, m->name, "_sum", s, NULL, s->sum);
        put_sample(b, m->name, "_count", s, NULL, s->v);
    }
}

char *ifm_metrics_render(ifm_metrics *r, size_t *len)
{
    for (size_t i = 0; i < r->ncollectors; i++)
        r->collectors[i].cb(r, r->collectors[i].arg);
    buf b = { 0 };
    put(&b, "", 0);
    for (size_t i = 0; i < r->nfams; i++)
        render_family(&b, r->fams[i]);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.p;
}
