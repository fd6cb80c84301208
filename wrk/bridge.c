/* The worker on MQTT. Births are retained and carry an epoch that grows with
 * every connection and the process's instance id that does not; the Will
 * carries both, so control can tell a late death of an old connection from the
 * death of the current one, and a reconnect from a restart. */
#include "bridge.h"

#include <stdlib.h>
#include <string.h>

#include "icefarm/log.h"
#include "icefarm/grow.h"
#include "sim.h"
#include "usbip_tunnel.h"

#define CACHE_MAX 1024 /* results kept per board for its current lease */

typedef struct {
    char batch[IFM_ID_MAX];
    ifm_result r;      /* r.samples points at `samples` */
    uint16_t *samples; /* owned */
    bool sent;         /* the broker took it (as far as we know) */
} cached;

struct wrk_bridge_board {
    const wrk_board *b;
    uint64_t lease; /* the lease the cache belongs to; 0: none */
    char holder[IFM_NAME_MAX];
    cached *c; /* a ring of CACHE_MAX */
    size_t n, next;
};

static void publish_enc(const wrk_ctx *w, const char *topic, ifm_enc *e, bool retain, int *rc)
{
    /* Retained state (births, board states) is published again on every
     * reconnect; results are kept for the next connection (sink_results); any
     * other event lost to a disconnect is worth a warning. */
    int r = ifm_mqtt_publish(w->mqtt, topic, ifm_enc_data(e), ifm_enc_size(e), 1, retain);
    if (r != 0 && !rc) {
        if (retain)
            IFM_INFO("not connected: %s is published again on reconnect", topic);
        else
            IFM_WARN("not connected: message to %s dropped", topic);
    }
    if (rc)
        *rc = r;
    ifm_enc_free(e);
}

static void publish_board(const wrk_board *b)
{
    wrk_ctx *w = b->w;
    char topic[IFM_TOPIC_MAX];
    if (!ifm_mqtt_connected(w->mqtt) || ifm_topic_board(topic, sizeof topic, b->serial, "state"))
        return;
    ifm_board_status bs;
    memset(&bs, 0, sizeof bs);
    snprintf(bs.serial, sizeof bs.serial, "%s", b->serial);
    snprintf(bs.worker, sizeof bs.worker, "%s", w->id);
    bs.epoch = w->epoch;
    bs.state = b->state;
    snprintf(bs.kind, sizeof bs.kind, "%s", wrk_board_kind(b));
    snprintf(bs.reason, sizeof bs.reason, "%s", b->reason);
    bs.exported = b->exported;
    bs.since_ms = b->state_since_ms;
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_board_status_encode(&e, &bs);
    publish_enc(w, topic, &e, true, NULL);
}

static void encode_worker_state(const wrk_bridge *br, ifm_enc *e, bool online)
{
    const wrk_ctx *w = br->w;
    ifm_worker_state ws;
    memset(&ws, 0, sizeof ws);
    snprintf(ws.worker, sizeof ws.worker, "%s", w->id);
    ws.online = online;
    ws.epoch = w->epoch;
    ws.instance = w->instance;
    ws.heartbeat_ms = online ? br->heartbeat_ms : 0;
    ws.clean = !online && w->stopping; /* the Will is encoded while running */
    for (int k = FW_PULSECOUNT; k < FW_COUNT; k++)
        if (w->offers[k])
            snprintf(ws.kinds[ws.nkinds++], IFM_KIND_MAX, "%s", wrk_kind_name(k));
    if (w->usbip)
        snprintf(ws.kinds[ws.nkinds++], IFM_KIND_MAX, "usbip");
    if (online) {
        ws.boards = calloc(w->nboards ? w->nboards : 1, sizeof *ws.boards);
        for (size_t i = 0; ws.boards && i < w->nboards; i++) {
            const wrk_board *b = w->boards[i];
            if (b->state == IFM_BOARD_GONE)
                continue;
            ifm_board_brief *bb = &ws.boards[ws.nboards++];
            snprintf(bb->serial, sizeof bb->serial, "%s", b->serial);
            bb->state = b->state;
            snprintf(bb->kind, sizeof bb->kind, "%s", wrk_board_kind(b));
        }
    }
    ifm_enc_init(e);
    ifm_worker_state_encode(e, &ws);
    free(ws.boards);
}

static void publish_worker(const wrk_bridge *br, bool online)
{
    char topic[IFM_TOPIC_MAX];
    if (!ifm_mqtt_connected(br->w->mqtt) || ifm_topic_worker(topic, sizeof topic, br->w->id, "state"))
        return;
    ifm_enc e;
    encode_worker_state(br, &e, online);
    publish_enc(br->w, topic, &e, true, NULL);
}

/* The Will (retained offline state, this epoch) control sees at once if the
 * connection dies; without it a dead worker is noticed only by its missing
 * heartbeats. Returns 0 or -1 (logged). */
static int set_will(const wrk_bridge *br)
{
    char topic[IFM_TOPIC_MAX];
    if (ifm_topic_worker(topic, sizeof topic, br->w->id, "state")) {
        IFM_ERROR("worker=%s cannot build its state topic for the Will", br->w->id);
        return -1;
    }
    ifm_enc e;
    encode_worker_state(br, &e, false);
    int rc = ifm_mqtt_set_will(br->w->mqtt, topic, ifm_enc_data(&e), ifm_enc_size(&e), true);
    ifm_enc_free(&e);
    if (rc)
        IFM_ERROR("worker=%s cannot set its Will on %s (epoch %llu)", br->w->id, topic,
                  (unsigned long long)br->w->epoch);
    return rc;
}

/* ---- per-board bookkeeping: the lease and its results ---- */

static wrk_bridge_board *bb_find(wrk_bridge *br, const wrk_board *b)
{
    for (size_t i = 0; i < br->nboards; i++)
        if (br->boards[i]->b == b)
            return br->boards[i];
    return NULL;
}

static void cache_clear(wrk_bridge_board *bb)
{
    for (size_t i = 0; bb->c && i < bb->n; i++)
        free(bb->c[i].samples);
    free(bb->c);
    bb->c = NULL;
    bb->n = bb->next = 0;
}

static const cached *cache_find(const wrk_bridge_board *bb, const char *batch, const char *id)
{
    for (size_t i = 0; i < bb->n; i++)
        if (strcmp(bb->c[i].r.id, id) == 0 && strcmp(bb->c[i].batch, batch) == 0)
            return &bb->c[i];
    return NULL;
}

static cached *cache_add(wrk_bridge_board *bb, const char *batch, const ifm_result *r)
{
    if (!bb->c && !(bb->c = calloc(CACHE_MAX, sizeof *bb->c)))
        return NULL;
    cached *x = &bb->c[bb->next];
    bb->next = (bb->next + 1) % CACHE_MAX;
    if (bb->n < CACHE_MAX)
        bb->n++;
    else
        free(x->samples);
    memset(x, 0, sizeof *x);
    snprintf(x->batch, sizeof x->batch, "%s", batch);
    x->r = *r;
    x->r.samples = NULL;
    if (r->type == IFM_VALUE_WAVEFORM && r->nsamples) {
        x->samples = malloc(r->nsamples * sizeof *x->samples);
        if (x->samples)
            memcpy(x->samples, r->samples, r->nsamples * sizeof *x->samples);
        else
            x->r.nsamples = 0;
        x->r.samples = x->samples;
    }
    return x;
}

static void publish_results_tagged(const wrk_board *b, const char *batch_id, uint64_t lease, const ifm_result *r,
                                   size_t n, int *rc)
{
    char topic[IFM_TOPIC_MAX];
    *rc = -1;
    if (ifm_topic_board(topic, sizeof topic, b->serial, "event"))
        return;
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_event_results_lease_encode(&e, b->serial, batch_id, lease, r, n);
    publish_enc(b->w, topic, &e, false, rc);
}

static void publish_event_tagged(const wrk_board *b, const char *name, const char *reason, const char *batch_id,
                                 uint64_t lease)
{
    char topic[IFM_TOPIC_MAX];
    if (ifm_topic_board(topic, sizeof topic, b->serial, "event"))
        return;
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_event_lease_encode(&e, name, b->serial, reason, batch_id, lease);
    publish_enc(b->w, topic, &e, false, NULL);
}

/* The board left lease bb->lease (released, deleted, or a new lease): its
 * holder hears `released`, the last event of that lease (the broker plugin
 * stops delivering the lease's events to it then). */
static void lease_moved(wrk_bridge_board *bb)
{
    const wrk_board *b = bb->b;
    if (bb->lease == b->lease)
        return;
    if (bb->lease) {
        publish_event_tagged(b, "released", NULL, NULL, bb->lease);
        IFM_INFO("serial=%s client=%s lease %llu released", b->serial, bb->holder[0] ? bb->holder : "-",
                 (unsigned long long)bb->lease);
    }
    cache_clear(bb);
    bb->lease = b->lease;
    snprintf(bb->holder, sizeof bb->holder, "%s", b->holder);
}

/* Results measured while cut off go out on the next connection. */
static void publish_unsent(wrk_bridge *br)
{
    size_t n = 0;
    for (size_t i = 0; i < br->nboards; i++) {
        wrk_bridge_board *bb = br->boards[i];
        for (size_t k = 0; k < bb->n && ifm_mqtt_connected(br->w->mqtt); k++) {
            cached *x = &bb->c[(bb->next + CACHE_MAX - bb->n + k) % CACHE_MAX];
            if (x->sent)
                continue;
            int rc;
            publish_results_tagged(bb->b, x->batch, bb->lease, &x->r, 1, &rc);
            x->sent = rc == 0;
            n += x->sent;
        }
    }
    if (n)
        IFM_INFO("published %zu result(s) measured while cut off from the broker", n);
}

/* ---- inbound ---- */

static bool in_queue(const wrk_board *b, const char *batch, const char *id)
{
    if (b->current && strcmp(b->current->id, id) == 0 && strcmp(b->current->batch, batch) == 0)
        return true;
    for (const evaljob *j = b->qhead; j; j = j->next)
        if (strcmp(j->id, id) == 0 && strcmp(j->batch, batch) == 0)
            return true;
    for (const resbatch *rb = b->results; rb; rb = rb->next)
        if (strcmp(rb->batch, batch) == 0)
            for (size_t i = 0; i < rb->n; i++)
                if (strcmp(rb->r[i].id, id) == 0)
                    return true;
    return false;
}

/* A resend: files the board has (queued, running, measured but not flushed)
 * are skipped, measured ones are answered from the cache, the rest evaluated. */
static void resend(wrk_bridge *br, wrk_board *b, ifm_board_cmd *cmd)
{
    wrk_bridge_board *bb = bb_find(br, b);
    size_t keep = 0, again = 0, skipped = 0;
    for (size_t i = 0; i < cmd->nfiles; i++) {
        const ifm_file *f = &cmd->files[i];
        const cached *x = bb && bb->lease == b->lease ? cache_find(bb, cmd->batch_id, f->id) : NULL;
        if (x) {
            int rc;
            publish_results_tagged(b, x->batch, bb->lease, &x->r, 1, &rc);
            again++;
        } else if (in_queue(b, cmd->batch_id, f->id)) {
            skipped++;
        } else {
            cmd->files[keep++] = *f;
        }
    }
    IFM_INFO("serial=%s client=%s resend of %zu file(s): %zu answered again, %zu already queued, %zu new", b->serial,
             b->holder[0] ? b->holder : "-", cmd->nfiles, again, skipped, keep);
    cmd->nfiles = keep;
    if (keep)
        wrk_cmd_board(b, cmd);
}

/* Holder -> board: icefarm/<serial>/cmd. The broker's ACL plugin makes sure only
 * the lease holder can publish here in a secured farm; in any farm the core
 * runs only commands whose icefarm-client names the holder (commands.c). */
static void on_board_cmd(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    wrk_bridge *br = arg;
    char serial[IFM_SERIAL_MAX];
    if (ifm_topic_level(msg->topic, 1, serial, sizeof serial))
        return;
    wrk_board *b = wrk_board_get(br->w, serial, false);
    if (!b)
        return;
    ifm_doc doc;
    ifm_err err = { "" };
    ifm_board_cmd cmd;
    memset(&cmd, 0, sizeof cmd);
    if (ifm_doc_parse(&doc, msg->payload, msg->len, &err) || ifm_board_cmd_decode(&doc, &cmd, &err)) {
        char why[WRK_REASON_MAX];
        snprintf(why, sizeof why, "bad command: %s", err.msg);
        wrk_cmd_refuse(b, why, cmd.batch_id);
    } else {
        if (ifm_mqtt_msg_client(msg, cmd.client, sizeof cmd.client))
            cmd.client[0] = '\0';
        /* Only the holder's resend is answered from the cache; anything else
         * goes through the core, which refuses others' commands. */
        if (cmd.resend && cmd.nfiles && b->kind >= 0 && b->holder[0] && strcmp(cmd.client, b->holder) == 0)
            resend(br, b, &cmd);
        else
            wrk_cmd_board(b, &cmd);
    }
    ifm_board_cmd_free(&cmd);
    ifm_doc_free(&doc);
}

/* Control -> worker: icefarm/worker/<id>/cmd. */
static void on_worker_cmd(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    wrk_bridge *br = arg;
    ifm_doc doc;
    ifm_err err = { "" };
    ifm_worker_cmd cmd;
    if (ifm_doc_parse(&doc, msg->payload, msg->len, &err) || ifm_worker_cmd_decode(&doc, &cmd, &err))
        IFM_WARN("ignoring malformed control command: %s", err.msg);
    else
        wrk_cmd_worker(br->w, &cmd);
    ifm_doc_free(&doc);
}

/* Fault injection for simulated boards: {v, serial, fault, count} or
 * {v, serial, fault: "plug"}. Only subscribed when the worker runs --sim. */
static void on_sim_cmd(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    wrk_bridge *br = arg;
    ifm_doc doc;
    ifm_err err = { "" };
    char serial[IFM_SERIAL_MAX], fault[32];
    uint64_t count = 1;
    if (ifm_doc_parse(&doc, msg->payload, msg->len, &err) ||
        ifm_get_str(doc.root, "serial", true, serial, sizeof serial, &err) ||
        ifm_get_str(doc.root, "fault", true, fault, sizeof fault, &err) ||
        ifm_get_uint(doc.root, "count", false, 0, 1000000, &count, &err) < 0) {
        IFM_WARN("ignoring malformed sim command: %s", err.msg);
        ifm_doc_free(&doc);
        return;
    }
    ifm_doc_free(&doc);
    sim_fault f;
    int rc;
    if (strcmp(fault, "plug") == 0)
        rc = sim_plug(br->w->t, serial);
    else if (sim_fault_from_name(fault, &f) == 0)
        rc = sim_inject(br->w->t, serial, f, (unsigned)count);
    else
        rc = -1;
    IFM_INFO("serial=%s sim fault %s x%llu: %s", serial, fault, (unsigned long long)count, rc ? "refused" : "armed");
}

/* ---- heartbeat: control notices a hung worker long before the Will ---- */

static void on_heartbeat(ifm_loop *loop, void *arg)
{
    wrk_bridge *br = arg;
    br->hb_timer = ifm_timer_add(loop, br->heartbeat_ms, on_heartbeat, br);
    char topic[IFM_TOPIC_MAX];
    if (!ifm_mqtt_connected(br->w->mqtt) || ifm_topic_worker(topic, sizeof topic, br->w->id, "heartbeat"))
        return;
    ifm_heartbeat h = { .epoch = br->w->epoch, .instance = br->w->instance, .seq = ++br->hb_seq };
    snprintf(h.worker, sizeof h.worker, "%s", br->w->id);
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_heartbeat_encode(&e, &h);
    ifm_mqtt_publish(br->w->mqtt, topic, ifm_enc_data(&e), ifm_enc_size(&e), 0, false);
    ifm_enc_free(&e);
}

void wrk_bridge_on_conn(ifm_mqtt *m, bool connected, void *arg)
{
    wrk_bridge *br = arg;
    wrk_ctx *w = br->w;
    if (!connected) {
        /* Tunnel sessions die with the connection that carried them (19.3). */
        if (w->usbip_tunnel)
            usbip_tunnel_reset(w->usbip_tunnel);
        /* Next connection, next epoch: the Will of this one must not kill it. */
        w->epoch++;
        if (set_will(br))
            IFM_WARN("worker=%s reconnects with the previous epoch's Will: control may take its death for the "
                     "old connection's and wait for missing heartbeats instead",
                     w->id);
        return;
    }
    publish_worker(br, true);
    for (size_t i = 0; i < w->nboards; i++)
        publish_board(w->boards[i]);
    publish_unsent(br);
}

/* icefarm/<serial>/usbip/<session>/c2s: a tunnel session's bytes (PROTOCOL.md
 * 19.3), subscribed per board when the worker offers kind usbip. The broker's
 * ACL lets only the board's holder publish here; the busid token inside the
 * stream is still what opens an export, as on TCP. */
static void on_usbip_c2s(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    wrk_ctx *w = arg;
    if (!w->usbip_tunnel && !(w->usbip_tunnel = usbip_tunnel_new(w->usbip, w->loop, w->mqtt))) {
        IFM_ERROR("usbip tunnel: out of memory");
        return;
    }
    if (usbip_tunnel_c2s_msg(w->usbip_tunnel, msg->topic, msg->payload, msg->len))
        IFM_WARN("usbip tunnel: refused a message on %s (%zu bytes)", msg->topic, msg->len);
}

/* ---- the sink: what the state machine emits, as MQTT messages ---- */

/* Each board's command topic is subscribed on its own, so a bitstream only
 * travels to the worker that has the board. */
static void sink_board_added(void *ctx, wrk_board *b)
{
    wrk_bridge *br = ctx;
    char topic[IFM_TOPIC_MAX];
    if (ifm_topic_board(topic, sizeof topic, b->serial, "cmd") ||
        ifm_mqtt_subscribe(br->w->mqtt, topic, 1, on_board_cmd, br))
        IFM_WARN("serial=%s cannot subscribe to the board's commands", b->serial);
    if (br->w->usbip &&
        (ifm_topic_board(topic, sizeof topic, b->serial, "usbip/+/c2s") ||
         ifm_mqtt_subscribe(br->w->mqtt, topic, 1, on_usbip_c2s, br->w)))
        IFM_WARN("serial=%s cannot subscribe to the board's USB/IP tunnel", b->serial);
    wrk_bridge_board **nb = ifm_grow(br->boards, &br->capboards, br->nboards, sizeof *nb, 16);
    if (!nb)
        return;
    br->boards = nb;
    wrk_bridge_board *bb = calloc(1, sizeof *bb);
    if (!bb)
        return;
    bb->b = b;
    br->boards[br->nboards++] = bb;
}

static void sink_board_state(void *ctx, const wrk_board *b)
{
    wrk_bridge *br = ctx;
    wrk_bridge_board *bb = bb_find(br, b);
    if (bb)
        lease_moved(bb);
    publish_board(b);
}

static void sink_worker_state(void *ctx, const wrk_ctx *w, bool online)
{
    publish_worker(ctx, online);
}

static void sink_event(void *ctx, const wrk_board *b, const wrk_event *ev)
{
    wrk_bridge *br = ctx;
    wrk_bridge_board *bb = bb_find(br, b);
    if (bb)
        lease_moved(bb);
    /* A refusal meant for someone else than the holder belongs to no lease. */
    bool holders = ev->client && b->holder[0] && strcmp(ev->client, b->holder) == 0;
    if (ev->busid) {
        /* USB/IP export events: only the holder learns the busid token (ACL);
         * tagged with the lease like the others, so the last one, at the
         * lease's end, still reaches the holder while the lease drains. */
        char topic[IFM_TOPIC_MAX];
        if (ifm_topic_board(topic, sizeof topic, b->serial, "event"))
            return;
        ifm_enc e;
        ifm_enc_init(&e);
        ifm_event_usbip_encode(&e, ev->name, b->serial, ev->busid, ev->host ? ev->host : "", ev->port, ev->reason,
                               holders ? b->lease : 0);
        publish_enc(b->w, topic, &e, false, NULL);
        return;
    }
    if (strcmp(ev->name, "error") == 0) {
        /* A refused command: it names whose it was and belongs to no lease. */
        char topic[IFM_TOPIC_MAX];
        if (ifm_topic_board(topic, sizeof topic, b->serial, "event"))
            return;
        ifm_enc e;
        ifm_enc_init(&e);
        ifm_event_error_encode(&e, b->serial, ev->reason, ev->batch_id, ev->client);
        publish_enc(b->w, topic, &e, false, NULL);
        return;
    }
    publish_event_tagged(b, ev->name, ev->reason, ev->batch_id, holders ? b->lease : 0);
}

static void sink_results(void *ctx, const wrk_board *b, const char *batch_id, const ifm_result *r, size_t n)
{
    wrk_bridge *br = ctx;
    wrk_bridge_board *bb = bb_find(br, b);
    if (bb)
        lease_moved(bb);
    int rc = -1;
    if (ifm_mqtt_connected(br->w->mqtt))
        publish_results_tagged(b, batch_id, b->lease, r, n, &rc);
    for (size_t i = 0; bb && b->lease && i < n; i++) {
        cached *x = cache_add(bb, batch_id, &r[i]);
        if (x)
            x->sent = rc == 0;
    }
    if (rc)
        IFM_WARN("serial=%s client=%s %zu result(s) kept for the next connection", b->serial,
                 b->holder[0] ? b->holder : "-", n);
}

static const wrk_sink_ops bridge_sink = {
    .board_added = sink_board_added,
    .board_state = sink_board_state,
    .worker_state = sink_worker_state,
    .event = sink_event,
    .results = sink_results,
};

int wrk_bridge_start(wrk_bridge *br, wrk_ctx *w, uint64_t heartbeat_ms)
{
    char topic[IFM_TOPIC_MAX];
    memset(br, 0, sizeof *br);
    br->w = w;
    br->heartbeat_ms = heartbeat_ms;
    w->sink.ops = &bridge_sink;
    w->sink.ctx = br;
    if (set_will(br))
        return -1;
    if (ifm_topic_worker(topic, sizeof topic, w->id, "cmd") ||
        ifm_mqtt_subscribe(w->mqtt, topic, 1, on_worker_cmd, br)) {
        IFM_ERROR("worker=%s cannot subscribe to its command topic", w->id);
        return -1;
    }
    if (w->sim &&
        (ifm_topic_worker(topic, sizeof topic, w->id, "sim") ||
         ifm_mqtt_subscribe(w->mqtt, topic, 1, on_sim_cmd, br))) {
        IFM_ERROR("worker=%s cannot subscribe to its simulator topic", w->id);
        return -1;
    }
    if (heartbeat_ms)
        br->hb_timer = ifm_timer_add(w->loop, heartbeat_ms, on_heartbeat, br);
    return 0;
}

void wrk_bridge_stop(wrk_bridge *br)
{
    if (br->w)
        ifm_timer_cancel(br->w->loop, br->hb_timer);
    br->hb_timer = 0;
    for (size_t i = 0; i < br->nboards; i++) {
        cache_clear(br->boards[i]);
        free(br->boards[i]);
    }
    free(br->boards);
    br->boards = NULL;
    br->nboards = br->capboards = 0;
}
