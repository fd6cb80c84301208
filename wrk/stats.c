/* icefarm/worker/<id>/stats: a counting sink and a once-a-second publisher. */
#include "stats.h"

#include <string.h>

#include "icefarm/log.h"

static void publish(wrk_stats *s, bool force)
{
    wrk_ctx *w = s->w;
    char topic[IFM_TOPIC_MAX];
    if (!w->mqtt || !ifm_mqtt_connected(w->mqtt) || ifm_topic_worker(topic, sizeof topic, w->id, "stats"))
        return;
    if (!force && s->sent && s->evaluations == s->sent_evaluations && s->failures == s->sent_failures)
        return;
    ifm_worker_stats ws;
    memset(&ws, 0, sizeof ws);
    snprintf(ws.worker, sizeof ws.worker, "%s", w->id);
    ws.instance = s->instance;
    ws.evaluations = s->evaluations;
    ws.failures = s->failures;
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_worker_stats_encode(&e, &ws);
    if (ifm_mqtt_publish(w->mqtt, topic, ifm_enc_data(&e), ifm_enc_size(&e), 1, true) == 0) {
        s->sent = true;
        s->sent_evaluations = ws.evaluations;
        s->sent_failures = ws.failures;
    }
    ifm_enc_free(&e);
}

static void on_timer(ifm_loop *loop, void *arg)
{
    wrk_stats *s = arg;
    s->timer = ifm_timer_add(loop, WRK_STATS_INTERVAL_MS, on_timer, s);
    publish(s, false);
}

/* ---- the sink: count, then forward ---- */

static void t_board_added(void *ctx, wrk_board *b)
{
    wrk_stats *s = ctx;
    if (s->inner.ops && s->inner.ops->board_added)
        s->inner.ops->board_added(s->inner.ctx, b);
}

static void t_board_state(void *ctx, const wrk_board *b)
{
    wrk_stats *s = ctx;
    if (s->inner.ops && s->inner.ops->board_state)
        s->inner.ops->board_state(s->inner.ctx, b);
}

static void t_worker_state(void *ctx, const wrk_ctx *w, bool online)
{
    wrk_stats *s = ctx;
    if (s->inner.ops && s->inner.ops->worker_state)
        s->inner.ops->worker_state(s->inner.ctx, w, online);
}

static void t_event(void *ctx, const wrk_board *b, const wrk_event *ev)
{
    wrk_stats *s = ctx;
    if (s->inner.ops && s->inner.ops->event)
        s->inner.ops->event(s->inner.ctx, b, ev);
}

static void t_results(void *ctx, const wrk_board *b, const char *batch_id, const ifm_result *r, size_t n)
{
    wrk_stats *s = ctx;
    s->evaluations += n;
    for (size_t i = 0; i < n; i++)
        s->failures += r[i].type == IFM_VALUE_FAILED;
    if (s->inner.ops && s->inner.ops->results)
        s->inner.ops->results(s->inner.ctx, b, batch_id, r, n);
}

static const wrk_sink_ops stats_sink = {
    .board_added = t_board_added,
    .board_state = t_board_state,
    .worker_state = t_worker_state,
    .event = t_event,
    .results = t_results,
};

int wrk_stats_start(wrk_stats *s, wrk_ctx *w)
{
    memset(s, 0, sizeof *s);
    s->w = w;
    s->instance = w->instance ? w->instance : ifm_wall_ms(); /* the process instance of PROTOCOL.md 14.1 */
    s->inner = w->sink;
    w->sink = (wrk_sink){ &stats_sink, s };
    s->timer = ifm_timer_add(w->loop, WRK_STATS_INTERVAL_MS, on_timer, s);
    return s->timer ? 0 : -1;
}

void wrk_stats_mqtt(wrk_stats *s, bool connected)
{
    if (s->w && connected)
        publish(s, true);
}

void wrk_stats_flush(wrk_stats *s)
{
    if (s->w)
        publish(s, false);
}

void wrk_stats_stop(wrk_stats *s)
{
    if (!s->w)
        return;
    if (s->w->sink.ctx == s)
        s->w->sink = s->inner;
    ifm_timer_cancel(s->w->loop, s->timer);
    memset(s, 0, sizeof *s);
}
