/* Workers and boards as the workers report them. A worker's birth (retained,
 * with an epoch) lists its boards; its Will names the epoch it ends, so a late
 * death of an old connection never takes down a newer one (Sparkplug's bdSeq). */
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "icefarm/log.h"
#include "icefarm/grow.h"

ctl_worker *ctl_worker_find(ctl *c, const char *id)
{
    for (size_t i = 0; i < c->nworkers; i++)
        if (strcmp(c->workers[i].id, id) == 0)
            return &c->workers[i];
    return NULL;
}

static ctl_worker *worker_get(ctl *c, const char *id)
{
    ctl_worker *w = ctl_worker_find(c, id);
    if (w)
        return w;
    ctl_worker *nw = ifm_grow(c->workers, &c->capworkers, c->nworkers, sizeof *nw, 16);
    if (!nw)
        return NULL;
    c->workers = nw;
    w = &c->workers[c->nworkers++];
    memset(w, 0, sizeof *w);
    snprintf(w->id, sizeof w->id, "%s", id);
    return w;
}

ctl_board *ctl_board_find(ctl *c, const char *serial)
{
    for (size_t i = 0; i < c->nboards; i++)
        if (strcmp(c->boards[i]->serial, serial) == 0)
            return c->boards[i];
    return NULL;
}

ctl_board *ctl_board_get(ctl *c, const char *serial)
{
    ctl_board *b = ctl_board_find(c, serial);
    if (b)
        return b;
    ctl_board **nb = ifm_grow(c->boards, &c->capboards, c->nboards, sizeof *nb, 64);
    if (!nb)
        return NULL;
    c->boards = nb;
    b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->owner = c;
    c->boards[c->nboards++] = b;
    snprintf(b->serial, sizeof b->serial, "%s", serial);
    b->state = IFM_BOARD_GONE;
    return b;
}

ctl_worker *ctl_board_worker(ctl *c, ctl_board *b)
{
    if (b->worker_hint < c->nworkers && strcmp(c->workers[b->worker_hint].id, b->worker) == 0)
        return &c->workers[b->worker_hint];
    ctl_worker *w = ctl_worker_find(c, b->worker);
    if (w)
        b->worker_hint = (size_t)(w - c->workers);
    return w;
}

bool ctl_worker_offers(const ctl_worker *w, const char *kind)
{
    for (size_t i = 0; i < w->nkinds; i++)
        if (strcmp(w->kinds[i], kind) == 0)
            return true;
    return false;
}

bool ctl_board_allocatable(ctl *c, ctl_board *b, const char *kind)
{
    if (!b->known || b->leased || b->state != IFM_BOARD_READY)
        return false;
    const ctl_worker *w = ctl_board_worker(c, b);
    return w && w->online && !w->hung && (!kind || !*kind || ctl_worker_offers(w, kind));
}

ifm_live_state ctl_worker_live(const ctl_worker *w)
{
    if (w->online)
        return w->hung ? IFM_LIVE_HUNG : IFM_LIVE_ONLINE;
    return w->reconnecting ? IFM_LIVE_RECONNECTING : IFM_LIVE_OFFLINE;
}

const char *ctl_worker_state_name(const ctl_worker *w)
{
    return ifm_live_state_name(ctl_worker_live(w));
}

/* The worker's view of a board against the lease store's: a board serving a
 * lease nobody holds is released (e.g. a release sent while the worker was cut
 * off), and a lease whose board went back to the default firmware without
 * control asking (a refused reserve, a worker that lost its state) ends with a
 * failure instead of lingering until it expires. */
static void reconcile(ctl *c, ctl_board *b)
{
    bool serving = b->state == IFM_BOARD_PREPARING || b->state == IFM_BOARD_RESERVED;
    bool idle = b->state == IFM_BOARD_READY || b->state == IFM_BOARD_TESTING || b->state == IFM_BOARD_FLASHING;
    if (serving && !b->leased) {
        IFM_WARN("serial=%s worker=%s serves a lease that no longer exists; releasing it", b->serial, b->worker);
        ctl_send_worker_cmd(c, b->worker, IFM_WOP_RELEASE, b->serial, NULL, NULL, 0, NULL, 0);
    } else if (idle && b->leased) {
        char why[120];
        snprintf(why, sizeof why, "the worker is not serving this lease (board %s)", ifm_board_state_name(b->state));
        ctl_board_end(c, b, why);
    }
}

/* Ends the lease on `b` with a failure. */
void ctl_board_end(ctl *c, ctl_board *b, const char *why)
{
    const char *serial = b->serial;
    char err[200];
    ctl_lease_list ended = CTL_LEASE_LIST_INIT;
    if (ctl_store_end(c->store, NULL, &serial, 1, &ended, err, sizeof err) == CTL_STORE_OK)
        for (size_t i = 0; i < ended.n; i++)
            ctl_lease_ended(c, &ended.v[i], true, why);
    else
        IFM_ERROR("serial=%s client=%s ending the lease failed: %s", b->serial, b->client, err);
    ctl_lease_list_free(&ended);
}

/* The worker is gone for good: its boards stop being allocatable and their
 * holders are told at once; the leases end because nobody can serve them. */
static void worker_lost(ctl *c, ctl_worker *w, const char *why)
{
    w->online = false;
    w->reconnecting = false;
    w->hung = false;
    snprintf(w->why, sizeof w->why, "%s", why);
    ctl_lease_list ended = CTL_LEASE_LIST_INIT;
    char err[200];
    if (ctl_store_end_worker(c->store, w->id, &ended, err, sizeof err) != CTL_STORE_OK)
        IFM_ERROR("worker=%s ending its leases failed: %s", w->id, err);
    size_t n = ended.n;
    for (size_t i = 0; i < n; i++)
        ctl_lease_ended(c, &ended.v[i], true, why);
    ctl_lease_list_free(&ended);
    IFM_WARN("worker=%s offline (%s); %zu lease(s) ended", w->id, why, n);
    ctl_publish_available(c, false);
}

/* Sends `event` to the holder of every lease on w's boards; returns how many. */
static size_t tell_holders(ctl *c, const ctl_worker *w, const char *event, uint64_t until_ms)
{
    size_t n = 0;
    for (size_t i = 0; i < c->nboards; i++) {
        const ctl_board *b = c->boards[i];
        if (b->leased && strcmp(b->worker, w->id) == 0) {
            ctl_send_client_event(c, b->client, event, b->serial, until_ms, NULL);
            n++;
        }
    }
    return n;
}

/* The worker's connection is gone but the process may not be: its boards are
 * not granted, its leases stay for worker_grace_s (PROTOCOL.md section 14.1). */
static void worker_grace(ctl *c, ctl_worker *w, bool tell, const char *why)
{
    if (!c->cfg.worker_grace_s) {
        worker_lost(c, w, why);
        return;
    }
    w->online = false;
    w->hung = false;
    snprintf(w->why, sizeof w->why, "%s", why);
    if (!w->reconnecting) {
        w->reconnecting = true;
        w->told_holders = false;
        w->grace_until_ms = ifm_wall_ms() + c->cfg.worker_grace_s * 1000;
    }
    size_t told = 0;
    if (tell && !w->told_holders) {
        told = tell_holders(c, w, "worker reconnecting", w->grace_until_ms);
        w->told_holders = true;
    }
    IFM_WARN("worker=%s reconnecting (%s): its leases are kept for %llu s; %zu holder event(s)", w->id, why,
             (unsigned long long)c->cfg.worker_grace_s, told);
    ctl_publish_available(c, false);
}

/* A reconnected worker kept its boards' state: only leases on boards it no
 * longer has end. */
static void end_missing(ctl *c, const ctl_worker *w, const ifm_worker_state *ws)
{
    for (size_t i = 0; i < c->nboards; i++) {
        ctl_board *b = c->boards[i];
        if (!b->leased || strcmp(b->worker, w->id) != 0)
            continue;
        bool listed = false;
        for (size_t k = 0; k < ws->nboards && !listed; k++)
            listed = strcmp(ws->boards[k].serial, b->serial) == 0;
        if (!listed)
            ctl_board_end(c, b, "the board went away while its worker was reconnecting");
    }
}

static void worker_birth(ctl *c, ctl_worker *w, const ifm_worker_state *ws)
{
    bool was_live = w->online || w->reconnecting;
    bool same = ws->instance && ws->instance == w->instance;
    bool newconn = ws->epoch != w->epoch;
    /* Another process: whatever the old one held is lost. The same process on a
     * new connection (a broker restart, a network cut): it kept everything. */
    bool restarted = was_live && newconn && !same;
    bool reconnected = was_live && newconn && same;
    bool graced = w->reconnecting;
    bool tell = w->told_holders || reconnected;
    w->epoch = ws->epoch;
    w->instance = ws->instance;
    w->online = true;
    w->reconnecting = false;
    w->told_holders = false;
    w->hung = false;
    w->why[0] = '\0';
    w->heartbeat_ms = ws->heartbeat_ms;
    w->last_beat_ms = ifm_now_ms();
    w->online_since_ms = ifm_wall_ms();
    w->nkinds = ws->nkinds;
    memcpy(w->kinds, ws->kinds, sizeof w->kinds);
    if (restarted)
        IFM_WARN("worker=%s restarted (epoch %llu, instance %llu)", w->id, (unsigned long long)ws->epoch,
                 (unsigned long long)ws->instance);
    /* The birth is the complete list: boards it no longer has are gone. */
    for (size_t i = 0; i < c->nboards; i++) {
        ctl_board *b = c->boards[i];
        if (strcmp(b->worker, w->id) != 0)
            continue;
        bool listed = false;
        for (size_t k = 0; k < ws->nboards && !listed; k++)
            listed = strcmp(ws->boards[k].serial, b->serial) == 0;
        if (!listed)
            b->state = IFM_BOARD_GONE;
    }
    for (size_t k = 0; k < ws->nboards; k++) {
        ctl_board *b = ctl_board_get(c, ws->boards[k].serial);
        if (!b)
            continue;
        snprintf(b->worker, sizeof b->worker, "%s", w->id);
        /* A birth's board states are as of the birth (a retained birth can be
         * old); the boards' own retained state messages are current, so the
         * birth only fills in boards we have not heard from yet, and never
         * triggers reconciliation. */
        if (!b->known) {
            b->state = ws->boards[k].state;
            snprintf(b->kind, sizeof b->kind, "%s", ws->boards[k].kind);
        }
        b->known = true;
    }
    IFM_INFO("worker=%s online epoch=%llu instance=%llu boards=%zu kinds=%zu", w->id, (unsigned long long)ws->epoch,
             (unsigned long long)ws->instance, ws->nboards, ws->nkinds);
    if (restarted) {
        /* Leases on a restarted worker were lost with its old process. */
        worker_lost(c, w, "worker restarted");
        w->online = true;
    } else if (reconnected || graced) {
        end_missing(c, w, ws);
        size_t told = tell ? tell_holders(c, w, "worker reconnected", 0) : 0;
        IFM_INFO("worker=%s back (same process): leases kept; %zu holder event(s)", w->id, told);
    }
    ctl_publish_available(c, false);
    ctl_waiters_serve(c);
}

static void worker_death(ctl *c, ctl_worker *w, const ifm_worker_state *ws)
{
    if (!(w->online || w->reconnecting || w->epoch == 0))
        return; /* already offline */
    w->epoch = ws->epoch;
    if (ws->instance && !w->instance)
        w->instance = ws->instance; /* control learns of the worker from its Will */
    bool other = ws->instance && w->instance && ws->instance != w->instance;
    if (ws->clean)
        worker_lost(c, w, "worker shut down");
    else if (!ws->instance || other)
        worker_lost(c, w, "worker died");
    else
        worker_grace(c, w, true, "its connection died");
}

void ctl_workers_unconfirmed(ctl *c)
{
    for (size_t i = 0; i < c->nworkers; i++)
        if (c->workers[i].online)
            worker_grace(c, &c->workers[i], false, "control reconnected to the broker");
}

#define WATCH_MS 250

static void on_watch(ifm_loop *loop, void *arg)
{
    ctl *c = arg;
    c->watch_timer = ifm_timer_add(loop, WATCH_MS, on_watch, c);
    uint64_t wall = ifm_wall_ms(), mono = ifm_now_ms();
    for (size_t i = 0; i < c->nworkers; i++) {
        ctl_worker *w = &c->workers[i];
        if (w->reconnecting && wall >= w->grace_until_ms) {
            char why[96];
            snprintf(why, sizeof why, "worker did not come back within %llu s",
                     (unsigned long long)c->cfg.worker_grace_s);
            worker_lost(c, w, why);
        } else if (w->online && !w->hung && w->heartbeat_ms && mono - w->last_beat_ms > 2 * w->heartbeat_ms) {
            /* Hung (stopped, swapping, a stuck loop): its connection may live on
             * for 1.5 x keep-alive, but no board of it is granted meanwhile. Its
             * leases stay: a slow machine must not lose experiments. */
            w->hung = true;
            snprintf(w->why, sizeof w->why, "no heartbeat for %llu ms (one is due every %llu ms)",
                     (unsigned long long)(mono - w->last_beat_ms), (unsigned long long)w->heartbeat_ms);
            IFM_WARN("worker=%s hung: no heartbeat for %llu ms; its boards are not granted", w->id,
                     (unsigned long long)(mono - w->last_beat_ms));
            ctl_publish_available(c, false);
        }
        ctl_publish_liveness(c, w, false);
    }
}

void ctl_watch_start(ctl *c)
{
    if (!c->watch_timer)
        c->watch_timer = ifm_timer_add(c->loop, WATCH_MS, on_watch, c);
}

void ctl_watch_stop(ctl *c)
{
    ifm_timer_cancel(c->loop, c->watch_timer);
    c->watch_timer = 0;
}

void ctl_on_heartbeat(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    ctl *c = arg;
    ifm_doc doc;
    ifm_err err = { "" };
    ifm_heartbeat h;
    if (ifm_doc_parse(&doc, msg->payload, msg->len, &err) || ifm_heartbeat_decode(&doc, &h, &err)) {
        IFM_WARN("ignoring malformed heartbeat on %s: %s", msg->topic, err.msg);
        ifm_doc_free(&doc);
        return;
    }
    ifm_doc_free(&doc);
    char topic_id[IFM_NAME_MAX];
    ctl_worker *w = ctl_worker_find(c, h.worker);
    if (!w || ifm_topic_level(msg->topic, 2, topic_id, sizeof topic_id) || strcmp(topic_id, h.worker) != 0 ||
        !w->online || h.instance != w->instance || h.epoch != w->epoch)
        return; /* not the connection control knows as online */
    w->last_beat_ms = ifm_now_ms();
    if (w->hung) {
        w->hung = false;
        w->why[0] = '\0';
        ctl_publish_liveness(c, w, false);
        IFM_INFO("worker=%s heartbeat again: its boards are granted again", w->id);
        ctl_publish_available(c, false);
        ctl_waiters_serve(c);
    }
}

void ctl_on_worker_state(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    ctl *c = arg;
    if (msg->len == 0)
        return; /* a cleared retained message */
    ifm_doc doc;
    ifm_err err = { "" };
    ifm_worker_state ws;
    memset(&ws, 0, sizeof ws);
    if (ifm_doc_parse(&doc, msg->payload, msg->len, &err) || ifm_worker_state_decode(&doc, &ws, &err)) {
        IFM_WARN("ignoring malformed worker state on %s: %s", msg->topic, err.msg);
        goto out;
    }
    char topic_id[IFM_NAME_MAX];
    if (ifm_topic_level(msg->topic, 2, topic_id, sizeof topic_id) || strcmp(topic_id, ws.worker) != 0) {
        IFM_WARN("ignoring worker state on %s: it names worker %s", msg->topic, ws.worker);
        goto out;
    }
    ctl_worker *w = worker_get(c, ws.worker);
    if (!w)
        goto out;
    if (ws.epoch < w->epoch) {
        IFM_INFO("worker=%s ignoring %s from old epoch %llu (current %llu)", w->id, ws.online ? "birth" : "death",
                 (unsigned long long)ws.epoch, (unsigned long long)w->epoch);
        goto out;
    }
    if (ws.online)
        worker_birth(c, w, &ws);
    else
        worker_death(c, w, &ws);
    ctl_publish_liveness(c, w, false);
out:
    ifm_worker_state_free(&ws);
    ifm_doc_free(&doc);
}

void ctl_on_board_state(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    ctl *c = arg;
    char first[IFM_SERIAL_MAX];
    if (msg->len == 0 || ifm_topic_level(msg->topic, 1, first, sizeof first) || !ifm_serial_valid(first))
        return; /* icefarm/ctl/state and friends share the filter */
    ifm_doc doc;
    ifm_err err = { "" };
    ifm_board_status bs;
    if (ifm_doc_parse(&doc, msg->payload, msg->len, &err) || ifm_board_status_decode(&doc, &bs, &err)) {
        IFM_WARN("serial=%s ignoring malformed board state: %s", first, err.msg);
        ifm_doc_free(&doc);
        return;
    }
    ifm_doc_free(&doc);
    if (strcmp(bs.serial, first) != 0)
        return;
    ctl_worker *w = ctl_worker_find(c, bs.worker);
    if (w && bs.epoch < w->epoch)
        return; /* stale retained state from an older worker process */
    ctl_board *b = ctl_board_get(c, bs.serial);
    if (!b)
        return;
    ifm_board_state old = b->state;
    snprintf(b->worker, sizeof b->worker, "%s", bs.worker);
    b->state = bs.state;
    snprintf(b->kind, sizeof b->kind, "%s", bs.kind);
    snprintf(b->reason, sizeof b->reason, "%s", bs.reason);
    b->known = true;
    if (old != bs.state)
        IFM_INFO("serial=%s worker=%s state %s -> %s%s%s", bs.serial, bs.worker, ifm_board_state_name(old),
                 ifm_board_state_name(bs.state), bs.reason[0] ? ": " : "", bs.reason);
    reconcile(c, b);
    ctl_publish_available(c, false);
    if (bs.state == IFM_BOARD_READY)
        ctl_waiters_serve(c);
}
