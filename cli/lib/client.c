/* libicefarm: connection, control calls and event dispatch. */
#include "icefarm/client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "icefarm/log.h"

typedef struct handler {
    struct handler *next;
    char event[32]; /* "" = all */
    icefarm_event_cb cb;
    void *arg;
    bool dead; /* removed during dispatch; freed right after it */
} handler;

typedef struct watched {
    struct watched *next;
    char serial[IFM_SERIAL_MAX];
    ifm_board_state state;
} watched;

struct icefarm {
    ifm_loop *loop;
    ifm_mqtt *mqtt;
    char name[IFM_NAME_MAX];
    char host[256];
    uint64_t timeout_ms;
    bool auto_extend;
    handler *handlers;
    int dispatching;
    watched *watched;
};

static void sweep_handlers(icefarm *f)
{
    for (handler **pp = &f->handlers; *pp;) {
        handler *h = *pp;
        if (h->dead) {
            *pp = h->next;
            free(h);
        } else {
            pp = &h->next;
        }
    }
}

typedef struct {
    bool done;
    int status;
    icefarm_reply *reply;
} call_state;

static void dispatch(icefarm *f, const ifm_event *ev)
{
    f->dispatching++;
    for (handler *h = f->handlers; h; h = h->next)
        if (!h->dead && (!h->event[0] || strcmp(h->event, ev->event) == 0))
            h->cb(f, ev, h->arg);
    if (--f->dispatching == 0)
        sweep_handlers(f);
}

static void on_event_msg(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    icefarm *f = arg;
    ifm_doc doc;
    ifm_err err = { "" };
    ifm_event ev;
    if (ifm_doc_parse(&doc, msg->payload, msg->len, &err) || ifm_event_decode(&doc, &ev, &err)) {
        IFM_WARN("ignoring malformed event on %s: %s", msg->topic, err.msg);
    } else {
        if (strcmp(ev.event, "reservation ending soon") == 0 && f->auto_extend && ev.serial[0]) {
            /* Extend without waiting for the reply: we are inside the loop. */
            ifm_ctl_req req;
            memset(&req, 0, sizeof req);
            req.verb = IFM_VERB_EXTEND;
            req.serials = &ev.serial;
            req.nserials = 1;
            icefarm_send(f, &req);
        }
        dispatch(f, &ev);
    }
    ifm_doc_free(&doc);
}

static watched *find_watched(icefarm *f, const char *serial)
{
    for (watched *w = f->watched; w; w = w->next)
        if (strcmp(w->serial, serial) == 0)
            return w;
    return NULL;
}

static void on_state_msg(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    icefarm *f = arg;
    ifm_doc doc;
    ifm_err err = { "" };
    ifm_board_status bs;
    if (msg->len && !ifm_doc_parse(&doc, msg->payload, msg->len, &err) && !ifm_board_status_decode(&doc, &bs, &err)) {
        watched *w = find_watched(f, bs.serial);
        if (w)
            w->state = bs.state;
    }
    if (msg->len)
        ifm_doc_free(&doc);
}

/* The broker refused a command to a board: in a secured farm that means we do
 * not hold it. Handlers hear it as the board's `error` event. */
static void on_refused(ifm_mqtt *m, const char *topic, int reason, void *arg)
{
    ifm_event ev;
    memset(&ev, 0, sizeof ev);
    char leaf[16];
    if (ifm_topic_level(topic, 1, ev.serial, sizeof ev.serial) || ifm_topic_level(topic, 2, leaf, sizeof leaf) ||
        strcmp(leaf, "cmd") != 0)
        return;
    snprintf(ev.event, sizeof ev.event, "error");
    snprintf(ev.reason, sizeof ev.reason, "the broker refused the command: %s", mosquitto_reason_string(reason));
    dispatch(arg, &ev);
}

icefarm *icefarm_connect(const icefarm_opts *o, char *err, size_t errlen)
{
    icefarm *f = calloc(1, sizeof *f);
    if (!f) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    f->timeout_ms = o->timeout_ms ? o->timeout_ms : 10000;
    f->auto_extend = !o->no_auto_extend;
    const char *name = o->name ? o->name : getenv("ICEFARM_NAME");
    const char *user = o->user ? o->user : getenv("ICEFARM_USER");
    /* In a secured farm the broker acts for the authenticated user whatever
     * name we give, so the user is the only name that can work. */
    if ((!name || !*name) && user && *user)
        name = user;
    if (name && *name) {
        snprintf(f->name, sizeof f->name, "%s", name);
    } else {
        char host[64] = "host";
        gethostname(host, sizeof host - 1);
        const char *login = getenv("USER");
        snprintf(f->name, sizeof f->name, "%s@%s", login && *login ? login : "user", host);
    }
    if (!ifm_name_valid(f->name, IFM_NAME_MAX)) {
        snprintf(err, errlen, "invalid client name \"%s\" (no '/', '+', '#', leading '$')", f->name);
        goto fail;
    }
    const char *broker = o->broker ? o->broker : getenv("ICEFARM_BROKER");
    if (!broker || !*broker)
        broker = "mqtt://127.0.0.1:1883";
    ifm_mqtt_opts mo = { 0 };
    mo.port = 1883;
    if (ifm_mqtt_parse_url(broker, &mo, f->host, sizeof f->host)) {
        snprintf(err, errlen, "bad broker address \"%s\" (want mqtt://HOST:PORT)", broker);
        goto fail;
    }
    mo.name = f->name;
    mo.username = o->user ? o->user : getenv("ICEFARM_USER");
    mo.password = o->password ? o->password : getenv("ICEFARM_PASSWORD");
    mo.cafile = o->cafile ? o->cafile : getenv("ICEFARM_CAFILE");
    if (mo.cafile && !*mo.cafile)
        mo.cafile = NULL;
    f->loop = ifm_loop_new();
    f->mqtt = f->loop ? ifm_mqtt_new(f->loop, &mo, NULL, NULL) : NULL;
    if (!f->mqtt) {
        snprintf(err, errlen, "cannot set up an MQTT client for %s", broker);
        goto fail;
    }
    char topic[IFM_TOPIC_MAX];
    ifm_topic_client(topic, sizeof topic, f->name, "event");
    ifm_mqtt_subscribe(f->mqtt, topic, 1, on_event_msg, f);
    ifm_mqtt_on_refused(f->mqtt, on_refused, f);
    ifm_mqtt_start(f->mqtt);
    if (ifm_mqtt_wait_connected(f->mqtt, f->timeout_ms) && ifm_mqtt_refused(f->mqtt)) {
        snprintf(err, errlen,
                 "the icefarm broker at %s:%d refused the connection: %s (check --user/--password or "
                 "ICEFARM_USER/ICEFARM_PASSWORD)",
                 mo.host, mo.port, ifm_mqtt_refused(f->mqtt));
        goto fail;
    }
    if (!ifm_mqtt_connected(f->mqtt)) {
        snprintf(err, errlen,
                 "cannot reach the icefarm broker at %s:%d (is the farm up? set --broker or ICEFARM_BROKER)", mo.host,
                 mo.port);
        goto fail;
    }
    return f;
fail:
    icefarm_close(f);
    return NULL;
}

void icefarm_close(icefarm *f)
{
    if (!f)
        return;
    if (f->mqtt) {
        ifm_mqtt_disconnect(f->mqtt);
        ifm_mqtt_free(f->mqtt);
    }
    ifm_loop_free(f->loop);
    while (f->handlers) {
        handler *h = f->handlers;
        f->handlers = h->next;
        free(h);
    }
    while (f->watched) {
        watched *w = f->watched;
        f->watched = w->next;
        free(w);
    }
    free(f);
}

const char *icefarm_name(const icefarm *f)
{
    return f->name;
}
ifm_loop *icefarm_loop(icefarm *f)
{
    return f->loop;
}
ifm_mqtt *icefarm_mqtt(icefarm *f)
{
    return f->mqtt;
}

static void on_reply(ifm_mqtt *m, int status, const ifm_mqtt_msg *msg, void *arg)
{
    call_state *cs = arg;
    cs->done = true;
    cs->status = status;
    if (status == 0) {
        cs->reply->buf = malloc(msg->len ? msg->len : 1);
        if (cs->reply->buf) {
            memcpy(cs->reply->buf, msg->payload, msg->len);
            cs->reply->len = msg->len;
        } else {
            cs->status = -ENOMEM;
        }
    }
}

int icefarm_call(icefarm *f, const ifm_ctl_req *req, const void *args, size_t args_len, icefarm_reply *reply, char *err,
                 size_t errlen)
{
    memset(reply, 0, sizeof *reply);
    msgpack_unpacked_init(&reply->doc.up);
    char topic[IFM_TOPIC_MAX];
    ifm_topic_ctl_req(topic, sizeof topic, ifm_verb_name(req->verb));
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_ctl_req_encode(&e, req, args, args_len);
    call_state cs = { false, 0, reply };
    /* A reserve that waits for boards needs the wait on top of the call timeout. */
    uint64_t timeout = f->timeout_ms + req->wait_ms;
    int rc = ifm_mqtt_request(f->mqtt, topic, ifm_enc_data(&e), ifm_enc_size(&e), timeout, on_reply, &cs);
    ifm_enc_free(&e);
    if (rc) {
        snprintf(err, errlen, "not connected to the broker");
        return -1;
    }
    while (!cs.done && !ifm_loop_stopped(f->loop))
        ifm_loop_once(f->loop, 100);
    if (cs.status == -ETIMEDOUT) {
        snprintf(err, errlen, "icefarm control did not answer within %llu ms (is icefarm-ctl running?)",
                 (unsigned long long)timeout);
        return -1;
    }
    if (cs.status) {
        snprintf(err, errlen, "lost the broker connection while waiting for control");
        return -1;
    }
    ifm_err perr = { "" };
    msgpack_unpacked_destroy(&reply->doc.up);
    if (ifm_doc_parse(&reply->doc, reply->buf, reply->len, &perr) ||
        ifm_reply_status_decode(&reply->doc, &reply->st, &perr)) {
        snprintf(err, errlen, "malformed reply from control: %s", perr.msg);
        return -1;
    }
    return 0;
}

static void on_sent_reply(ifm_mqtt *m, int status, const ifm_mqtt_msg *msg, void *arg)
{
    ifm_doc doc;
    ifm_err err = { "" };
    ifm_reply_status st;
    if (status == 0 && !ifm_doc_parse(&doc, msg->payload, msg->len, &err) &&
        !ifm_reply_status_decode(&doc, &st, &err) && !st.ok)
        IFM_WARN("control refused a request: %s", st.error);
    if (status == 0)
        ifm_doc_free(&doc);
}

int icefarm_send(icefarm *f, const ifm_ctl_req *req)
{
    char topic[IFM_TOPIC_MAX];
    ifm_topic_ctl_req(topic, sizeof topic, ifm_verb_name(req->verb));
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_ctl_req_encode(&e, req, NULL, 0);
    int rc = ifm_mqtt_request(f->mqtt, topic, ifm_enc_data(&e), ifm_enc_size(&e), f->timeout_ms, on_sent_reply, NULL);
    ifm_enc_free(&e);
    return rc;
}

void icefarm_reply_free(icefarm_reply *reply)
{
    ifm_doc_free(&reply->doc);
    free(reply->buf);
    reply->buf = NULL;
}

size_t icefarm_reply_serials(const icefarm_reply *reply, char (**serials)[IFM_SERIAL_MAX])
{
    *serials = NULL;
    const msgpack_object *arr = ifm_map_get(reply->doc.root, "serials");
    if (!arr || arr->type != MSGPACK_OBJECT_ARRAY)
        return 0;
    size_t n = arr->via.array.size, k = 0;
    *serials = calloc(n ? n : 1, sizeof **serials);
    if (!*serials)
        return 0;
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *o = &arr->via.array.ptr[i];
        if (o->type == MSGPACK_OBJECT_MAP)
            o = ifm_map_get(o, "serial");
        if (o && !ifm_obj_str(o, "serial", true, (*serials)[k], IFM_SERIAL_MAX, NULL))
            k++;
    }
    return k;
}

int icefarm_on(icefarm *f, const char *event, icefarm_event_cb cb, void *arg)
{
    handler *h = calloc(1, sizeof *h);
    if (!h)
        return -1;
    snprintf(h->event, sizeof h->event, "%s", event ? event : "");
    h->cb = cb;
    h->arg = arg;
    handler **pp = &f->handlers;
    while (*pp)
        pp = &(*pp)->next;
    *pp = h;
    return 0;
}

void icefarm_off(icefarm *f, icefarm_event_cb cb, void *arg)
{
    for (handler *h = f->handlers; h; h = h->next)
        if (h->cb == cb && h->arg == arg)
            h->dead = true;
    if (!f->dispatching)
        sweep_handlers(f);
}

int icefarm_watch(icefarm *f, const char *serial)
{
    if (find_watched(f, serial))
        return 0;
    char ev[IFM_TOPIC_MAX], st[IFM_TOPIC_MAX];
    if (ifm_topic_board(ev, sizeof ev, serial, "event") || ifm_topic_board(st, sizeof st, serial, "state"))
        return -1;
    watched *w = calloc(1, sizeof *w);
    if (!w)
        return -1;
    snprintf(w->serial, sizeof w->serial, "%s", serial);
    w->state = IFM_BOARD_GONE;
    w->next = f->watched;
    f->watched = w;
    if (ifm_mqtt_subscribe(f->mqtt, ev, 1, on_event_msg, f) || ifm_mqtt_subscribe(f->mqtt, st, 1, on_state_msg, f))
        return -1;
    return 0;
}

ifm_board_state icefarm_board_state(icefarm *f, const char *serial)
{
    watched *w = find_watched(f, serial);
    return w ? w->state : IFM_BOARD_GONE;
}

int icefarm_evaluate(icefarm *f, const char *serial, const char *batch_id, const ifm_file *files, size_t n)
{
    char topic[IFM_TOPIC_MAX];
    if (ifm_topic_board(topic, sizeof topic, serial, "cmd"))
        return -1;
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_board_cmd_encode(&e, batch_id, files, n);
    int rc = ifm_mqtt_publish(f->mqtt, topic, ifm_enc_data(&e), ifm_enc_size(&e), 1, false);
    ifm_enc_free(&e);
    return rc;
}

int icefarm_run_until(icefarm *f, bool (*done)(void *arg), void *arg, uint64_t timeout_ms)
{
    uint64_t deadline = timeout_ms ? ifm_now_ms() + timeout_ms : UINT64_MAX;
    while (!done(arg)) {
        if (ifm_loop_stopped(f->loop) || ifm_now_ms() >= deadline)
            return -1;
        ifm_loop_once(f->loop, 100);
    }
    return 0;
}

int icefarm_reserve(icefarm *f, uint32_t amount, const char *kind, const void *args, size_t args_len, uint64_t wait_ms,
                    char (**serials)[IFM_SERIAL_MAX], size_t *n, char *err, size_t errlen)
{
    ifm_ctl_req req;
    memset(&req, 0, sizeof req);
    req.verb = IFM_VERB_RESERVE;
    req.amount = amount;
    snprintf(req.kind, sizeof req.kind, "%s", kind);
    req.wait_ms = wait_ms;
    icefarm_reply r;
    *serials = NULL;
    *n = 0;
    if (icefarm_call(f, &req, args, args_len, &r, err, errlen)) {
        icefarm_reply_free(&r);
        return -1;
    }
    int rc = 0;
    if (!r.st.ok) {
        snprintf(err, errlen, "%s", r.st.error[0] ? r.st.error : "reserve refused");
        rc = -1;
    } else {
        *n = icefarm_reply_serials(&r, serials);
        for (size_t i = 0; i < *n; i++)
            icefarm_watch(f, (*serials)[i]);
    }
    icefarm_reply_free(&r);
    return rc;
}

int icefarm_end_all(icefarm *f, size_t *n_ended, char *err, size_t errlen)
{
    ifm_ctl_req req;
    memset(&req, 0, sizeof req);
    req.verb = IFM_VERB_END_ALL;
    icefarm_reply r;
    if (icefarm_call(f, &req, NULL, 0, &r, err, errlen)) {
        icefarm_reply_free(&r);
        return -1;
    }
    int rc = 0;
    if (!r.st.ok) {
        snprintf(err, errlen, "%s", r.st.error);
        rc = -1;
    } else if (n_ended) {
        const msgpack_object *a = ifm_map_get(r.doc.root, "serials");
        *n_ended = a && a->type == MSGPACK_OBJECT_ARRAY ? a->via.array.size : 0;
    }
    icefarm_reply_free(&r);
    return rc;
}

static int reserve_kind(icefarm *f, const char *kind, uint32_t amount, int send_waveform, uint32_t interval,
                        uint32_t flush_at, uint64_t wait_ms, char (**serials)[IFM_SERIAL_MAX], size_t *n, char *err,
                        size_t errlen)
{
    ifm_enc a;
    ifm_enc_init(&a);
    ifm_enc_map(&a, 2 + (send_waveform >= 0));
    ifm_enc_kuint(&a, "flush_interval_seconds", interval ? interval : 10);
    ifm_enc_kuint(&a, "flush_at_bitstreams_remaining", flush_at ? flush_at : 25);
    if (send_waveform >= 0)
        ifm_enc_kbool(&a, "send_waveform", send_waveform);
    int rc = icefarm_reserve(f, amount, kind, ifm_enc_data(&a), ifm_enc_size(&a), wait_ms, serials, n, err, errlen);
    ifm_enc_free(&a);
    return rc;
}

int icefarm_reserve_pulsecount(icefarm *f, uint32_t amount, uint32_t flush_interval_s, uint32_t flush_at,
                               uint64_t wait_ms, char (**serials)[IFM_SERIAL_MAX], size_t *n, char *err, size_t errlen)
{
    return reserve_kind(f, "pulsecount", amount, -1, flush_interval_s, flush_at, wait_ms, serials, n, err, errlen);
}

int icefarm_reserve_variance(icefarm *f, uint32_t amount, bool send_waveform, uint32_t flush_interval_s,
                             uint32_t flush_at, uint64_t wait_ms, char (**serials)[IFM_SERIAL_MAX], size_t *n,
                             char *err, size_t errlen)
{
    return reserve_kind(f, "variance", amount, send_waveform, flush_interval_s, flush_at, wait_ms, serials, n, err,
                        errlen);
}
