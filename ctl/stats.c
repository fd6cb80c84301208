/* The farm's statistics for dashboards (PROTOCOL.md 7.6, 7.7): control sums
 * the workers' retained counters (icefarm/worker/<id>/stats) and publishes
 * icefarm/farm/stats, retained, with the reserve requests waiting per kind and
 * the last ten minutes in 5 s buckets.
 *
 * Cost: one message per worker per second in, at most one message per second
 * out, whatever the evaluation rate: at 10,000 evaluations/s across the farm
 * control does exactly the same work as at 1/s.
 *
 * Totals count from control's start (its epoch): a worker's first stats seen
 * as a retained message replayed on subscribe is a baseline (those evaluations
 * happened before control watched); a live first message from a new worker
 * process counts in full; a worker's counters that go down mean a new process
 * that kept the old instance id, and count from zero. */
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "icefarm/log.h"
#include "icefarm/grow.h"

#define STATS_TICK_MS 1000

static ctl_wstats *wstats_get(ctl_stats *st, const char *worker)
{
    for (size_t i = 0; i < st->nworkers; i++)
        if (strcmp(st->workers[i].worker, worker) == 0)
            return &st->workers[i];
    ctl_wstats *n = ifm_grow(st->workers, &st->capworkers, st->nworkers, sizeof *n, 8);
    if (!n)
        return NULL;
    st->workers = n;
    ctl_wstats *w = &st->workers[st->nworkers++];
    memset(w, 0, sizeof *w);
    snprintf(w->worker, sizeof w->worker, "%s", worker);
    return w;
}

/* Moves the history on to the bucket holding `now_ms`. */
static void advance(ctl_stats *st, uint64_t now_ms)
{
    uint64_t idx = now_ms / IFM_STATS_BUCKET_MS;
    if (st->nhistory == 0 || idx < st->history_start_ms / IFM_STATS_BUCKET_MS ||
        idx - st->history_start_ms / IFM_STATS_BUCKET_MS >= 2 * IFM_STATS_BUCKETS) {
        /* the first bucket, a clock that went back, or a long silence: start over */
        st->history_start_ms = idx * IFM_STATS_BUCKET_MS;
        st->nhistory = 1;
        st->hist_evaluations[0] = st->hist_failures[0] = 0;
        return;
    }
    uint64_t last = st->history_start_ms / IFM_STATS_BUCKET_MS + st->nhistory - 1;
    for (; last < idx; last++) {
        if (st->nhistory == IFM_STATS_BUCKETS) {
            memmove(st->hist_evaluations, st->hist_evaluations + 1, (IFM_STATS_BUCKETS - 1) * sizeof(uint32_t));
            memmove(st->hist_failures, st->hist_failures + 1, (IFM_STATS_BUCKETS - 1) * sizeof(uint32_t));
            st->history_start_ms += IFM_STATS_BUCKET_MS;
            st->nhistory--;
        }
        st->hist_evaluations[st->nhistory] = st->hist_failures[st->nhistory] = 0;
        st->nhistory++;
    }
}

static uint32_t sat32(uint64_t a, uint64_t b)
{
    return a + b > UINT32_MAX ? UINT32_MAX : (uint32_t)(a + b);
}

void ctl_on_worker_stats(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    ctl *c = arg;
    ctl_stats *st = &c->stats;
    if (msg->len == 0)
        return; /* a cleared retained message */
    ifm_doc doc;
    ifm_err err = { "" };
    ifm_worker_stats ws;
    if (ifm_doc_parse(&doc, msg->payload, msg->len, &err) || ifm_worker_stats_decode(&doc, &ws, &err)) {
        IFM_WARN("ignoring malformed worker stats on %s: %s", msg->topic, err.msg);
        ifm_doc_free(&doc);
        return;
    }
    ifm_doc_free(&doc);
    char topic_id[IFM_NAME_MAX];
    if (ifm_topic_level(msg->topic, 2, topic_id, sizeof topic_id) || strcmp(topic_id, ws.worker) != 0) {
        IFM_WARN("ignoring worker stats on %s: they name worker %s", msg->topic, ws.worker);
        return;
    }
    ctl_wstats *w = wstats_get(st, ws.worker);
    if (!w)
        return;
    uint64_t de = 0, df = 0;
    if (w->instance == ws.instance && ws.evaluations >= w->evaluations && ws.failures >= w->failures) {
        de = ws.evaluations - w->evaluations;
        df = ws.failures - w->failures;
    } else if (w->instance == ws.instance || w->instance != 0 || !msg->retain) {
        /* counters that went down, or a new worker process seen live: all of it is new */
        de = ws.evaluations;
        df = ws.failures;
    } /* else: first sight, replayed on subscribe: a baseline */
    w->instance = ws.instance;
    w->evaluations = ws.evaluations;
    w->failures = ws.failures;
    if (!de && !df)
        return;
    st->evaluations += de;
    st->failures += df;
    advance(st, ifm_wall_ms());
    st->hist_evaluations[st->nhistory - 1] = sat32(st->hist_evaluations[st->nhistory - 1], de);
    st->hist_failures[st->nhistory - 1] = sat32(st->hist_failures[st->nhistory - 1], df);
    st->dirty = true;
}

static void add_waiter(const char *kind, uint32_t amount, void *arg)
{
    ifm_farm_stats *f = arg;
    size_t i = 0;
    while (i < f->nkinds && strcmp(f->kinds[i], kind) != 0)
        i++;
    if (i == f->nkinds) {
        if (f->nkinds == IFM_MAX_KINDS)
            return; /* more kinds waiting than a message lists: the first 16 are shown */
        snprintf(f->kinds[f->nkinds++], IFM_KIND_MAX, "%s", kind);
    }
    f->waiting[i]++;
    f->waiting_boards[i] = sat32(f->waiting_boards[i], amount);
}

static void snapshot(ctl *c, ifm_farm_stats *f)
{
    ctl_stats *st = &c->stats;
    memset(f, 0, sizeof *f);
    f->epoch = c->epoch;
    f->time_ms = ifm_wall_ms();
    f->evaluations = st->evaluations;
    f->failures = st->failures;
    ctl_waiters_each(c, add_waiter, f);
    advance(st, f->time_ms);
    f->history_start_ms = st->history_start_ms;
    f->bucket_ms = IFM_STATS_BUCKET_MS;
    f->nhistory = st->nhistory;
    memcpy(f->hist_evaluations, st->hist_evaluations, st->nhistory * sizeof(uint32_t));
    memcpy(f->hist_failures, st->hist_failures, st->nhistory * sizeof(uint32_t));
}

static bool same_waiting(const ifm_farm_stats *a, const ifm_farm_stats *b)
{
    if (a->nkinds != b->nkinds)
        return false;
    for (size_t i = 0; i < a->nkinds; i++)
        if (strcmp(a->kinds[i], b->kinds[i]) != 0 || a->waiting[i] != b->waiting[i] ||
            a->waiting_boards[i] != b->waiting_boards[i])
            return false;
    return true;
}

void ctl_stats_publish(ctl *c, bool force)
{
    ctl_stats *st = &c->stats;
    if (!c->mqtt || !ifm_mqtt_connected(c->mqtt))
        return;
    ifm_farm_stats *f = malloc(sizeof *f);
    if (!f)
        return;
    snapshot(c, f);
    if (force || st->dirty || !same_waiting(f, &st->last)) {
        ifm_enc e;
        ifm_enc_init(&e);
        ifm_farm_stats_encode(&e, f);
        if (ifm_mqtt_publish(c->mqtt, IFM_TOPIC_FARM_STATS, ifm_enc_data(&e), ifm_enc_size(&e), 1, true) == 0) {
            st->last = *f;
            st->dirty = false;
        }
        ifm_enc_free(&e);
    }
    free(f);
}

static void on_tick(ifm_loop *loop, void *arg)
{
    ctl *c = arg;
    c->stats.timer = ifm_timer_add(loop, STATS_TICK_MS, on_tick, c);
    ctl_stats_publish(c, false);
}

int ctl_stats_init(ctl *c)
{
    c->stats.timer = ifm_timer_add(c->loop, STATS_TICK_MS, on_tick, c);
    return c->stats.timer ? 0 : -1;
}

void ctl_stats_free(ctl *c)
{
    if (c->loop)
        ifm_timer_cancel(c->loop, c->stats.timer);
    free(c->stats.workers);
    memset(&c->stats, 0, sizeof c->stats);
}
