/* A small metrics registry and the Prometheus text exposition format (0.0.4).
 *
 * A registry holds families (counter, gauge, histogram) in registration order;
 * a family has a fixed list of label names (at most IFM_METRIC_MAX_LABELS) and
 * one series per combination of label values, created on first use (at most
 * IFM_METRIC_MAX_SERIES per family: label values must come from a small fixed
 * set such as verbs, states or kinds, never from serials or client names).
 * Histograms have fixed bucket bounds (ascending; +Inf is implicit). Values are
 * doubles; durations are in seconds, as Prometheus expects.
 *
 * Gauges that mirror current state (boards by state...) are best set just before
 * a scrape: ifm_metrics_on_collect registers a callback that runs first in
 * ifm_metrics_render, and ifm_metric_reset zeroes a family so combinations that
 * went away read 0 rather than a stale value.
 *
 * Ownership: the registry owns its families and series; ifm_metrics_free frees
 * them all. Names, help texts and label values are copied. A NULL family or
 * series (a registration that failed, or the series limit) makes every call a
 * no-op, so instrumentation never needs its own error paths.
 * Threads: none; use it from the loop's thread (every icefarm process has one).
 */
#ifndef ICEFARM_METRICS_H
#define ICEFARM_METRICS_H

#include <stddef.h>
#include "icefarm/err.h"

#define IFM_METRIC_MAX_LABELS 4
#define IFM_METRIC_MAX_SERIES 256
#define IFM_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

typedef struct ifm_metrics ifm_metrics;
typedef struct ifm_metric ifm_metric;
typedef struct ifm_series ifm_series;

ifm_metrics *ifm_metrics_new(void);
void ifm_metrics_free(ifm_metrics *r);

/* Registers a family. `labels` is NULL (no labels) or a NULL-terminated list of
 * label names. Returns NULL for an invalid or duplicate name, an invalid label
 * name ("le" is reserved for histograms, "__" prefixes for Prometheus), too many
 * labels, unsorted bounds, or no memory. Counter names should end in _total. */
ifm_metric *ifm_metrics_counter(ifm_metrics *r, const char *name, const char *help, const char *const *labels);
ifm_metric *ifm_metrics_gauge(ifm_metrics *r, const char *name, const char *help, const char *const *labels);
ifm_metric *ifm_metrics_histogram(ifm_metrics *r, const char *name, const char *help, const char *const *labels,
                                  const double *bounds, size_t nbounds);

/* The series for these label values: exactly as many `const char *` arguments as
 * the family has label names (none for an unlabelled family). Cache the result on
 * hot paths. NULL when the family is NULL or full. */
ifm_series *ifm_metric_at(ifm_metric *m, ...);

void ifm_series_add(ifm_series *s, double v);     /* counters (v >= 0) and gauges */
void ifm_series_set(ifm_series *s, double v);     /* gauges */
void ifm_series_observe(ifm_series *s, double v); /* histograms */
double ifm_series_value(const ifm_series *s);     /* counter/gauge value; a histogram's count */
double ifm_series_sum(const ifm_series *s);       /* a histogram's sum */

/* Every series of the family back to 0 (the series stay listed). */
void ifm_metric_reset(ifm_metric *m);

/* Called at the start of each ifm_metrics_render (up to 8 callbacks). 0 or -ENOSPC. */
IFM_MUST_CHECK int ifm_metrics_on_collect(ifm_metrics *r, void (*cb)(ifm_metrics *r, void *arg), void *arg);

/* The exposition text, malloc'd and NUL-terminated (free() it); *len without the
 * NUL. NULL when out of memory. */
char *ifm_metrics_render(ifm_metrics *r, size_t *len);

/* Common bucket bounds, in seconds. */
extern const double IFM_BUCKETS_LATENCY[];
extern const size_t IFM_BUCKETS_LATENCY_N;
extern const double IFM_BUCKETS_SLOW[];
extern const size_t IFM_BUCKETS_SLOW_N;

#endif
