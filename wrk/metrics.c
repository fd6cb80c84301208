/* icefarm-wrk's metrics: a recording sink in front of the bridge. */
#include "metrics.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "icefarm/log.h"
#include "icefarm/grow.h"

static const char *const L_STATE[] = { "state", NULL };
static const char *const L_KIND[] = { "kind", NULL };
static const char *const L_FLASH[] = { "state", "result", NULL };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *kind_of(const wrk_board *b)
{
    return *wrk_board_kind(b) ? wrk_board_kind(b) : "none";
}

static wrk_metrics_board *seen(wrk_metrics *m, const wrk_board *b)
{
    for (size_t i = 0; i < m->nseen; i++)
        if (m->seen[i].b == b)
            return &m->seen[i];
    wrk_metrics_board *ns = ifm_grow(m->seen, &m->capseen, m->nseen, sizeof *ns, 16);
    if (!ns)
        return NULL;
    m->seen = ns;
    m->seen[m->nseen] = (wrk_metrics_board){ b, IFM_BOARD_STATE_COUNT, now_s() };
    return &m->seen[m->nseen++];
}

static bool flashing(ifm_board_state s)
{
    return s == IFM_BOARD_FLASHING || s == IFM_BOARD_PREPARING;
}

/* A state change: flash durations, broken boards and their retries. */
static void transition(wrk_metrics *m, const wrk_board *b)
{
    wrk_metrics_board *s = seen(m, b);
    if (!s || s->state == b->state)
        return;
    double t = now_s();
    if (flashing(s->state)) {
        bool ok = b->state != IFM_BOARD_BROKEN && b->state != IFM_BOARD_GONE;
        ifm_series_observe(ifm_metric_at(m->flash, ifm_board_state_name(s->state), ok ? "ok" : "failed"), t - s->since);
    }
    if (b->state == IFM_BOARD_BROKEN)
        ifm_series_add(ifm_metric_at(m->broken, kind_of(b)), 1);
    if (s->state == IFM_BOARD_BROKEN && b->state != IFM_BOARD_GONE)
        ifm_series_add(m->retries, 1);
    s->state = b->state;
    s->since = t;
}

/* ---- the sink: record, then forward ---- */

static void t_board_added(void *ctx, wrk_board *b)
{
    wrk_metrics *m = ctx;
    if (m->inner.ops && m->inner.ops->board_added)
        m->inner.ops->board_added(m->inner.ctx, b);
}

static void t_board_state(void *ctx, const wrk_board *b)
{
    wrk_metrics *m = ctx;
    transition(m, b);
    if (m->inner.ops && m->inner.ops->board_state)
        m->inner.ops->board_state(m->inner.ctx, b);
}

static void t_worker_state(void *ctx, const wrk_ctx *w, bool online)
{
    wrk_metrics *m = ctx;
    if (m->inner.ops && m->inner.ops->worker_state)
        m->inner.ops->worker_state(m->inner.ctx, w, online);
}

static void t_event(void *ctx, const wrk_board *b, const wrk_event *ev)
{
    wrk_metrics *m = ctx;
    if (m->inner.ops && m->inner.ops->event)
        m->inner.ops->event(m->inner.ctx, b, ev);
}

static void t_results(void *ctx, const wrk_board *b, const char *batch_id, const ifm_result *r, size_t n)
{
    wrk_metrics *m = ctx;
    double failed = 0;
    for (size_t i = 0; i < n; i++)
        failed += r[i].type == IFM_VALUE_FAILED;
    ifm_series_add(ifm_metric_at(m->evals, kind_of(b)), (double)n);
    ifm_series_add(ifm_metric_at(m->eval_failures, kind_of(b)), failed);
    if (m->inner.ops && m->inner.ops->results)
        m->inner.ops->results(m->inner.ctx, b, batch_id, r, n);
}

static const wrk_sink_ops metrics_sink = {
    .board_added = t_board_added,
    .board_state = t_board_state,
    .worker_state = t_worker_state,
    .event = t_event,
    .results = t_results,
};

static void collect(ifm_metrics *r, void *arg)
{
    wrk_metrics *m = arg;
    ifm_metric_reset(m->boards);
    for (int s = 0; s < IFM_BOARD_STATE_COUNT; s++)
        ifm_metric_at(m->boards, ifm_board_state_name((ifm_board_state)s));
    for (size_t i = 0; i < m->w->nboards; i++)
        ifm_series_add(ifm_metric_at(m->boards, ifm_board_state_name(m->w->boards[i]->state)), 1);
    ifm_series_set(ifm_metric_at(m->mqtt_connected), m->w->mqtt && ifm_mqtt_connected(m->w->mqtt) ? 1 : 0);
}

int wrk_metrics_start(wrk_metrics *m, wrk_ctx *w, const char *listen)
{
    memset(m, 0, sizeof *m);
    m->w = w;
    ifm_metrics *r = m->reg = ifm_metrics_new();
    if (!r)
        return -1;
    m->boards = ifm_metrics_gauge(r, "icefarm_wrk_boards", "Boards on this worker, by state.", L_STATE);
    m->evals = ifm_metrics_counter(r, "icefarm_wrk_evaluations_total",
                                   "Evaluations answered (a result or an explicit failure), by kind.", L_KIND);
    m->eval_failures = ifm_metrics_counter(r, "icefarm_wrk_evaluation_failures_total",
                                           "Evaluations answered with a failure, by kind.", L_KIND);
    m->flash = ifm_metrics_histogram(r, "icefarm_wrk_flash_duration_seconds",
                                     "Time in a flashing state (flashing: default firmware; preparing: the kind's), "
                                     "by how it ended.",
                                     L_FLASH, IFM_BUCKETS_SLOW, IFM_BUCKETS_SLOW_N);
    m->broken = ifm_metrics_counter(r, "icefarm_wrk_boards_broken_total",
                                    "Times a board was quarantined as broken, by the kind it held.", L_KIND);
    m->retries = ifm_metric_at(ifm_metrics_counter(r, "icefarm_wrk_broken_retries_total",
                                                   "Broken boards taken out of quarantine for another try.", NULL));
    m->reconnects = ifm_metric_at(
        ifm_metrics_counter(r, "icefarm_mqtt_reconnects_total", "Connections to the broker after the first.", NULL));
    m->mqtt_connected = ifm_metrics_gauge(r, "icefarm_mqtt_connected", "1 while connected to the broker.", NULL);
    for (int k = 0; k < FW_COUNT; k++) {
        if (k == FW_DEFAULT || !w->offers[k])
            continue;
        ifm_metric_at(m->evals, wrk_kind_name(k));
        ifm_metric_at(m->eval_failures, wrk_kind_name(k));
    }
    if (ifm_metrics_on_collect(r, collect, m) != 0)
        return -1;
    m->inner = w->sink;
    w->sink = (wrk_sink){ &metrics_sink, m };
    if (!listen || !*listen)
        return 0;
    char why[256] = "";
    if (ifm_metrics_serve(w->loop, r, listen, &m->srv, why, sizeof why) != 0) {
        IFM_ERROR("metrics: %s", why);
        return -1;
    }
    IFM_INFO("metrics on http://%s/metrics (port %d)", listen, ifm_metrics_server_port(m->srv));
    return 0;
}

void wrk_metrics_mqtt(wrk_metrics *m, bool connected)
{
    if (connected && m->connects++)
        ifm_series_add(m->reconnects, 1);
}

void wrk_metrics_stop(wrk_metrics *m)
{
    if (m->w && m->w->sink.ctx == m)
        m->w->sink = m->inner;
    ifm_metrics_server_free(m->srv);
    ifm_metrics_free(m->reg);
    free(m->seen);
    memset(m, 0, sizeof *m);
}
