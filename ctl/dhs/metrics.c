/* icefarm-dhs's Prometheus metrics (README "Metrics" lists them). Counters move
 * where things happen (ops.c, dcss.c, farm.c call in here); the gauges that
 * mirror state (running operations, the DCSS link, the farm connection) are read
 * from the dhs just before each scrape. */
#include <string.h>
#include <time.h>

#include "dhs.h"
#include "icefarm/log.h"

static const char *const L_OP[] = { "operation", NULL };
static const char *const L_OP_STATUS[] = { "operation", "status", NULL };
static const char *const L_RESULT[] = { "result", NULL };

double dhs_metrics_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void collect(ifm_metrics *r, void *arg)
{
    dhs *d = arg;
    dhs_metrics *m = &d->metrics;
    ifm_series_set(ifm_metric_at(m->running), (double)dhs_ops_count(d));
    ifm_series_set(ifm_metric_at(m->dcss_connected), d->link == LINK_UP ? 1 : 0);
    ifm_series_set(ifm_metric_at(m->mqtt_connected), dhs_farm_online(d) ? 1 : 0);
}

int dhs_metrics_start(dhs *d, const char *listen)
{
    dhs_metrics *m = &d->metrics;
    memset(m, 0, sizeof *m);
    ifm_metrics *r = m->reg = ifm_metrics_new();
    if (!r)
        return -1;
    m->started =
        ifm_metrics_counter(r, "icefarm_dhs_operations_started_total",
                            "DCSS operation handles started, by hwName (unknown: not one this DHS serves).", L_OP);
    m->completed = ifm_metrics_counter(r, "icefarm_dhs_operations_completed_total",
                                       "DCSS operation handles ended, by hwName and completion status (forgotten: "
                                       "the DCSS session ended first, no completion sent).",
                                       L_OP_STATUS);
    m->op_duration = ifm_metrics_histogram(r, "icefarm_dhs_operation_duration_seconds",
                                           "Time from an operation's start to its end, by hwName.", L_OP,
                                           IFM_BUCKETS_SLOW, IFM_BUCKETS_SLOW_N);
    m->running = ifm_metrics_gauge(r, "icefarm_dhs_operations_running", "DCSS operation handles running now.", NULL);
    m->fetch_duration = ifm_metrics_histogram(r, "icefarm_dhs_fetch_duration_seconds",
                                              "Time to fetch a bitstream or UF2 reference, by result (ok, failed).",
                                              L_RESULT, IFM_BUCKETS_LATENCY, IFM_BUCKETS_LATENCY_N);
    m->fetch_bytes = ifm_metric_at(
        ifm_metrics_counter(r, "icefarm_dhs_fetch_bytes_total", "Bytes of bitstreams and UF2 images fetched.", NULL));
    m->dcss_connected =
        ifm_metrics_gauge(r, "icefarm_dhs_dcss_connected", "1 while a DCSS session is up (handshake done).", NULL);
    m->dcss_sessions = ifm_metric_at(
        ifm_metrics_counter(r, "icefarm_dhs_dcss_sessions_total", "DCSS sessions established (handshakes).", NULL));
    m->mqtt_reconnects = ifm_metric_at(
        ifm_metrics_counter(r, "icefarm_mqtt_reconnects_total", "Connections to the broker after the first.", NULL));
    m->mqtt_connected = ifm_metrics_gauge(r, "icefarm_mqtt_connected", "1 while connected to the broker.", NULL);
    /* Both fetch results and the unlabelled series exist from the start, so a
     * scrape before the first fetch already lists them (as 0). */
    ifm_metric_at(m->fetch_duration, "ok");
    ifm_metric_at(m->fetch_duration, "failed");
    if (ifm_metrics_on_collect(r, collect, d) != 0)
        return -1;
    if (!listen || !*listen)
        return 0;
    char why[256] = "";
    if (ifm_metrics_serve(d->loop, r, listen, &m->srv, why, sizeof why) != 0) {
        IFM_ERROR("metrics: %s", why);
        return -1;
    }
    IFM_INFO("metrics on http://%s/metrics (port %d)", listen, ifm_metrics_server_port(m->srv));
    return 0;
}

void dhs_metrics_stop(dhs *d)
{
    dhs_metrics *m = &d->metrics;
    ifm_metrics_server_free(m->srv);
    ifm_metrics_free(m->reg);
    memset(m, 0, sizeof *m);
}

void dhs_metrics_op_started(dhs *d, const char *hw)
{
    ifm_series_add(ifm_metric_at(d->metrics.started, hw), 1);
}

void dhs_metrics_op_ended(dhs *d, const char *hw, const char *status, double seconds)
{
    ifm_series_add(ifm_metric_at(d->metrics.completed, hw, status), 1);
    ifm_series_observe(ifm_metric_at(d->metrics.op_duration, hw), seconds);
}

void dhs_metrics_fetched(dhs *d, int status, size_t bytes, double seconds)
{
    ifm_series_observe(ifm_metric_at(d->metrics.fetch_duration, status ? "failed" : "ok"), seconds);
    if (!status)
        ifm_series_add(d->metrics.fetch_bytes, (double)bytes);
}

void dhs_metrics_dcss_session(dhs *d)
{
    ifm_series_add(d->metrics.dcss_sessions, 1);
}

void dhs_metrics_farm_up(dhs *d)
{
    if (d->metrics.farm_ups++ > 0)
        ifm_series_add(d->metrics.mqtt_reconnects, 1);
}
