/* The worker on MQTT. Births are retained and carry an epoch that grows with
 * every connection; the Will carries the same epoch, so control can tell a late
 * death of an old connection from the death of the current one. */
#include <stdlib.h>
#include <string.h>

#include "bridge.h"
#include "icefarm/log.h"
#include "sim.h"
#include "usbip_tunnel.h"

static void publish_enc(const wrk_ctx *w, const char *topic, ifm_enc *e, bool retain)
{
    /* Retained state (births, board states) is published again on every
     * reconnect; an event lost to a disconnect is worth a warning. */
    if (ifm_mqtt_publish(w->mqtt, topic, ifm_enc_data(e), ifm_enc_size(e), 1, retain) != 0) {
        if (retain)
            IFM_INFO("not connected: %s is published again on reconnect", topic);
        else
            IFM_WARN("not connected: message to %s dropped", topic);
    }
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
    publish_enc(w, topic, &e, true);
}

static void encode_worker_state(const wrk_ctx *w, ifm_enc *e, bool online)
{
    ifm_worker_state ws;
    memset(&ws, 0, sizeof ws);
    snprintf(ws.worker, sizeof ws.worker, "%s", w->id);
    ws.online = online;
    ws.epoch = w->epoch;
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

static void publish_worker(const wrk_ctx *w, bool online)
{
    char topic[IFM_TOPIC_MAX];
    if (!ifm_mqtt_connected(w->mqtt) || ifm_topic_worker(topic, sizeof topic, w->id, "state"))
        return;
    ifm_enc e;
    encode_worker_state(w, &e, online);
    publish_enc(w, topic, &e, true);
}

static void set_will(wrk_ctx *w)
{
    char topic[IFM_TOPIC_MAX];
    ifm_topic_worker(topic, sizeof topic, w->id, "state");
    ifm_enc e;
    encode_worker_state(w, &e, false);
    ifm_mqtt_set_will(w->mqtt, topic, ifm_enc_data(&e), ifm_enc_size(&e), true);
    ifm_enc_free(&e);
}

static void publish_event(const wrk_board *b, const wrk_event *ev)
{
    char topic[IFM_TOPIC_MAX];
    if (ifm_topic_board(topic, sizeof topic, b->serial, "event"))
        return;
    ifm_enc e;
    ifm_enc_init(&e);
    if (ev->busid)
        ifm_event_usbip_encode(&e, ev->name, b->serial, ev->busid, ev->host ? ev->host : "", ev->port, ev->reason);
    else if (strcmp(ev->name, "error") == 0)
        ifm_event_error_encode(&e, b->serial, ev->reason, ev->batch_id, ev->client); /* whose command */
    else
        ifm_event_encode(&e, ev->name, b->serial, ev->reason, ev->batch_id);
    publish_enc(b->w, topic, &e, false);
}

static void publish_results(const wrk_board *b, const char *batch_id, const ifm_result *r, size_t n)
{
    char topic[IFM_TOPIC_MAX];
    if (ifm_topic_board(topic, sizeof topic, b->serial, "event"))
        return;
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_event_results_encode(&e, b->serial, batch_id, r, n);
    publish_enc(b->w, topic, &e, false);
}

/* Holder -> board: icefarm/<serial>/cmd. The broker's ACL plugin makes sure only
 * the lease holder can publish here in a secured farm; in any farm the core
 * runs only commands whose icefarm-client names the holder (commands.c). */
static void on_board_cmd(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    wrk_ctx *w = arg;
    char serial[IFM_SERIAL_MAX];
    if (ifm_topic_level(msg->topic, 1, serial, sizeof serial))
        return;
    wrk_board *b = wrk_board_get(w, serial, false);
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
        wrk_cmd_board(b, &cmd);
    }
    ifm_board_cmd_free(&cmd);
    ifm_doc_free(&doc);
}

/* Control -> worker: icefarm/worker/<id>/cmd. */
static void on_worker_cmd(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    wrk_ctx *w = arg;
    ifm_doc doc;
    ifm_err err = { "" };
    ifm_worker_cmd cmd;
    if (ifm_doc_parse(&doc, msg->payload, msg->len, &err) || ifm_worker_cmd_decode(&doc, &cmd, &err))
        IFM_WARN("ignoring malformed control command: %s", err.msg);
    else
        wrk_cmd_worker(w, &cmd);
    ifm_doc_free(&doc);
}

/* Fault injection for simulated boards: {v, serial, fault, count} or
 * {v, serial, fault: "plug"}. Only subscribed when the worker runs --sim. */
static void on_sim_cmd(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    wrk_ctx *w = arg;
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
        rc = sim_plug(w->t, serial);
    else if (sim_fault_from_name(fault, &f) == 0)
        rc = sim_inject(w->t, serial, f, (unsigned)count);
    else
        rc = -1;
    IFM_INFO("serial=%s sim fault %s x%llu: %s", serial, fault, (unsigned long long)count, rc ? "refused" : "armed");
}

void wrk_bridge_on_conn(ifm_mqtt *m, bool connected, void *arg)
{
    wrk_ctx *w = arg;
    if (!connected) {
        /* Tunnel sessions die with the connection that carried them (19.3). */
        if (w->usbip_tunnel)
            usbip_tunnel_reset(w->usbip_tunnel);
        /* Next connection, next epoch: the Will of this one must not kill it. */
        w->epoch++;
        set_will(w);
        return;
    }
    publish_worker(w, true);
    for (size_t i = 0; i < w->nboards; i++)
        publish_board(w->boards[i]);
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
    wrk_ctx *w = ctx;
    char topic[IFM_TOPIC_MAX];
    if (ifm_topic_board(topic, sizeof topic, b->serial, "cmd") ||
        ifm_mqtt_subscribe(w->mqtt, topic, 1, on_board_cmd, w))
        IFM_WARN("serial=%s cannot subscribe to the board's commands", b->serial);
    if (w->usbip &&
        (ifm_topic_board(topic, sizeof topic, b->serial, "usbip/+/c2s") ||
         ifm_mqtt_subscribe(w->mqtt, topic, 1, on_usbip_c2s, w)))
        IFM_WARN("serial=%s cannot subscribe to the board's USB/IP tunnel", b->serial);
}

static void sink_board_state(void *ctx, const wrk_board *b)
{
    publish_board(b);
}

static void sink_worker_state(void *ctx, const wrk_ctx *w, bool online)
{
    publish_worker(w, online);
}

static void sink_event(void *ctx, const wrk_board *b, const wrk_event *ev)
{
    publish_event(b, ev);
}

static void sink_results(void *ctx, const wrk_board *b, const char *batch_id, const ifm_result *r, size_t n)
{
    publish_results(b, batch_id, r, n);
}

static const wrk_sink_ops bridge_sink = {
    .board_added = sink_board_added,
    .board_state = sink_board_state,
    .worker_state = sink_worker_state,
    .event = sink_event,
    .results = sink_results,
};

int wrk_bridge_start(wrk_ctx *w)
{
    char topic[IFM_TOPIC_MAX];
    w->sink.ops = &bridge_sink;
    w->sink.ctx = w;
    set_will(w);
    ifm_topic_worker(topic, sizeof topic, w->id, "cmd");
    if (ifm_mqtt_subscribe(w->mqtt, topic, 1, on_worker_cmd, w))
        return -1;
    if (w->sim) {
        ifm_topic_worker(topic, sizeof topic, w->id, "sim");
        if (ifm_mqtt_subscribe(w->mqtt, topic, 1, on_sim_cmd, w))
            return -1;
    }
    return 0;
}
