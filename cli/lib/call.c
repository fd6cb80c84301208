/* libicefarm: requests to control (asynchronous, cancellable, and the blocking
 * form built on them) and the replies' accessors. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- replies ---- */

static size_t read_serials(const ifm_doc *doc, char (**serials)[IFM_SERIAL_MAX])
{
    *serials = NULL;
    const msgpack_object *arr = ifm_map_get(doc->root, "serials");
    if (!arr || arr->type != MSGPACK_OBJECT_ARRAY || !arr->via.array.size)
        return 0;
    size_t n = arr->via.array.size, k = 0;
    *serials = calloc(n, sizeof **serials);
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

icefarm_reply *lib_reply_parse(const void *data, size_t len, char *why, size_t whylen)
{
    icefarm_reply *r = calloc(1, sizeof *r);
    if (!r || !(r->buf = malloc(len ? len : 1))) {
        free(r);
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    memcpy(r->buf, data, len);
    r->len = len;
    ifm_err err = { "" };
    if (ifm_doc_parse(&r->doc, r->buf, r->len, &err) || ifm_reply_status_decode(&r->doc, &r->st, &err)) {
        snprintf(why, whylen, "%s", err.msg);
        icefarm_reply_free(r);
        return NULL;
    }
    r->nserials = read_serials(&r->doc, &r->serials);
    return r;
}

icefarm_reply *icefarm_reply_dup(const icefarm_reply *r)
{
    char why[200];
    return lib_reply_parse(r->buf, r->len, why, sizeof why);
}

void icefarm_reply_free(icefarm_reply *r)
{
    if (!r)
        return;
    ifm_doc_free(&r->doc);
    free(r->serials);
    free(r->buf);
    free(r);
}

bool icefarm_reply_ok(const icefarm_reply *r)
{
    return r->st.ok;
}
unsigned icefarm_reply_code(const icefarm_reply *r)
{
    return r->st.code;
}
const char *icefarm_reply_error(const icefarm_reply *r)
{
    return r->st.ok ? "" : r->st.error;
}

int icefarm_reply_errno(const icefarm_reply *r)
{
    return r->st.ok ? 0 : ifm_err_from_http((int)r->st.code);
}

size_t icefarm_reply_nserials(const icefarm_reply *r)
{
    return r->nserials;
}
const char *icefarm_reply_serial(const icefarm_reply *r, size_t i)
{
    return i < r->nserials ? r->serials[i] : NULL;
}

int icefarm_reply_uint(const icefarm_reply *r, const char *key, uint64_t *value)
{
    const msgpack_object *o = ifm_map_get(r->doc.root, key);
    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return -ENOENT;
    *value = o->via.u64;
    return 0;
}

const void *icefarm_reply_data(const icefarm_reply *r, size_t *len)
{
    *len = r->len;
    return r->buf;
}

/* ---- requests ---- */

int lib_req_convert(const icefarm_req *in, ifm_ctl_req *out, char *reason, size_t reason_len)
{
    memset(out, 0, sizeof *out);
    int verb = in->verb ? ifm_verb_parse(in->verb) : -1;
    if (verb < 0)
        return ifm_failbuf(reason, reason_len, -EINVAL, "unknown verb \"%s\"", in->verb ? in->verb : "(null)");
    out->verb = (ifm_verb)verb;
    out->amount = in->amount;
    out->wait_ms = in->wait_ms;
    out->duration_s = in->duration_s;
    out->set = in->set;
    if (in->kind && snprintf(out->kind, sizeof out->kind, "%s", in->kind) >= (int)sizeof out->kind)
        return ifm_failbuf(reason, reason_len, -EINVAL, "kind \"%s\" is longer than %d bytes", in->kind,
                           IFM_KIND_MAX - 1);
    if (in->tag && snprintf(out->tag, sizeof out->tag, "%s", in->tag) >= (int)sizeof out->tag)
        return ifm_failbuf(reason, reason_len, -EINVAL, "tag is longer than %d bytes", IFM_TAG_MAX - 1);
    if (in->nserials > IFM_MAX_SERIALS)
        return ifm_failbuf(reason, reason_len, -EINVAL, "%zu serials (at most %d in one request)", in->nserials,
                           IFM_MAX_SERIALS);
    if (in->args_len > IFM_MAX_ARGS)
        return ifm_failbuf(reason, reason_len, -EINVAL, "args are %zu bytes (at most %d)", in->args_len, IFM_MAX_ARGS);
    if (in->nserials) {
        out->serials = calloc(in->nserials, sizeof *out->serials);
        if (!out->serials)
            return ifm_failbuf(reason, reason_len, -ENOMEM, "out of memory");
        out->nserials = in->nserials;
        for (size_t i = 0; i < in->nserials; i++) {
            const char *s = in->serials[i];
            /* Only what fits is checked here; the syntax is control's to judge (400). */
            if (!s || strlen(s) >= IFM_SERIAL_MAX) {
                ifm_ctl_req_free(out);
                return ifm_failbuf(reason, reason_len, -EINVAL, "invalid serial \"%s\"", s ? s : "(null)");
            }
            snprintf(out->serials[i], IFM_SERIAL_MAX, "%s", s);
        }
    }
    return 0;
}

static void unlink_call(icefarm *f, call *c)
{
    for (call **pp = &f->calls; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            return;
        }
}

/* ifm_mqtt's answer for one request: exactly once per request it accepted. */
static void on_mqtt_reply(ifm_mqtt *m, int status, const ifm_mqtt_msg *msg, void *arg)
{
    call *c = arg;
    icefarm *f = c->f;
    unlink_call(f, c);
    icefarm_reply *r = NULL;
    if (status == 0) {
        char why[200];
        r = lib_reply_parse(msg->payload, msg->len, why, sizeof why);
        if (!r) {
            status = -EBADMSG;
            snprintf(f->bad_reply, sizeof f->bad_reply, "%s", why);
            lib_log(f, ICEFARM_LOG_WARN, "malformed reply from control to %s: %s", c->verb, why);
        }
    }
    if (c->cancelled) {
        /* Its callback already ran with -ECANCELED: a late answer is dropped. */
    } else if (c->cb) {
        f->in_cb++;
        c->cb(f, status, r, c->arg);
        f->in_cb--;
    } else if (r && !r->st.ok) {
        lib_log(f, ICEFARM_LOG_WARN, "control refused a request (%s): %s", c->verb, r->st.error);
    }
    icefarm_reply_free(r);
    free(c);
}

int icefarm_call_async(icefarm *f, const icefarm_req *req, uint64_t timeout_ms, icefarm_reply_cb cb, void *arg,
                       uint64_t *id, char *reason, size_t reason_len)
{
    if (f->closing)
        return ifm_failbuf(reason, reason_len, -ESHUTDOWN, "the handle is closing");
    ifm_ctl_req cr;
    int rc = lib_req_convert(req, &cr, reason, reason_len);
    if (rc)
        return rc;
    call *c = calloc(1, sizeof *c);
    if (!c) {
        ifm_ctl_req_free(&cr);
        return ifm_failbuf(reason, reason_len, -ENOMEM, "out of memory");
    }
    c->f = f;
    c->cb = cb;
    c->arg = arg;
    c->id = ++f->next_call_id;
    snprintf(c->verb, sizeof c->verb, "%s", ifm_verb_name(cr.verb));
    char topic[IFM_TOPIC_MAX];
    ifm_topic_ctl_req(topic, sizeof topic, c->verb);
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_ctl_req_encode(&e, &cr, req->args, req->args_len);
    /* A reserve that waits for boards needs the wait on top of the call timeout. */
    uint64_t timeout = timeout_ms ? timeout_ms : f->timeout_ms + req->wait_ms;
    rc = ifm_mqtt_request(f->mqtt, topic, ifm_enc_data(&e), ifm_enc_size(&e), timeout, on_mqtt_reply, c);
    ifm_enc_free(&e);
    ifm_ctl_req_free(&cr);
    if (rc) {
        free(c);
        return ifm_failbuf(reason, reason_len, -ENOTCONN, "not connected to the broker");
    }
    c->waits = strcmp(c->verb, "reserve") == 0 && req->wait_ms;
    ifm_mqtt_last_corr(f->mqtt, c->corr, sizeof c->corr);
    c->next = f->calls;
    f->calls = c;
    if (id)
        *id = c->id;
    return 0;
}

static void on_cancel_reply(ifm_mqtt *m, int status, const ifm_mqtt_msg *msg, void *arg)
{
}

/* A reserve waiting at control for boards is cancelled there too, so it is never
 * granted to nobody (PROTOCOL.md 5.1). Fire and forget: the 409 it gets goes
 * nowhere, and icefarm_close flushes the request out before disconnecting. */
static void cancel_at_control(icefarm *f, const call *c)
{
    ifm_ctl_req req = { .verb = IFM_VERB_CANCEL, .corr = c->corr, .corr_len = sizeof c->corr };
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_ctl_req_encode(&e, &req, NULL, 0);
    char topic[IFM_TOPIC_MAX];
    ifm_topic_ctl_req(topic, sizeof topic, "cancel");
    if (ifm_mqtt_request(f->mqtt, topic, ifm_enc_data(&e), ifm_enc_size(&e), 2000, on_cancel_reply, NULL) == 0)
        lib_log(f, ICEFARM_LOG_INFO, "asked control to cancel the waiting reserve");
    ifm_enc_free(&e);
}

int icefarm_cancel(icefarm *f, uint64_t id)
{
    for (call *c = f->calls; c; c = c->next) {
        if (c->id != id || c->cancelled)
            continue;
        c->cancelled = true;
        if (c->waits && ifm_mqtt_connected(f->mqtt))
            cancel_at_control(f, c);
        if (c->cb) {
            f->in_cb++;
            c->cb(f, -ECANCELED, NULL, c->arg);
            f->in_cb--;
        }
        return 0;
    }
    return -ENOENT;
}

typedef struct {
    bool done;
    int status;
    icefarm_reply *reply;
} waiter;

static void on_blocking_reply(icefarm *f, int status, const icefarm_reply *r, void *arg)
{
    waiter *w = arg;
    w->done = true;
    w->status = status;
    if (r && !(w->reply = icefarm_reply_dup(r)))
        w->status = -ENOMEM;
}

int icefarm_call(icefarm *f, const icefarm_req *req, icefarm_reply **reply, char *reason, size_t reason_len)
{
    *reply = NULL;
    if (f->in_cb)
        return ifm_failbuf(reason, reason_len, -EDEADLK,
                           "icefarm_call inside a callback would wait there: use icefarm_call_async");
    waiter w = { false, 0, NULL };
    uint64_t id;
    int rc = icefarm_call_async(f, req, 0, on_blocking_reply, &w, &id, reason, reason_len);
    if (rc)
        return rc;
    while (!w.done) {
        if (f->stop) {
            f->stop = false;
            icefarm_cancel(f, id);
            break;
        }
        if ((rc = lib_wait_once(f, 100)) != 0) {
            icefarm_cancel(f, id);
            return ifm_failbuf(reason, reason_len, rc, "the event loop failed: %s", icefarm_strerror(rc));
        }
    }
    switch (w.status) {
    case 0:
        *reply = w.reply;
        return 0;
    case -ETIMEDOUT:
        if (f->ctl_state == LIB_CTL_UNKNOWN)
            return ifm_failbuf(reason, reason_len, w.status,
                               "no answer within %llu ms: the broker at %s:%d is not an icefarm farm (it has no "
                               "retained icefarm/ctl/state; another MQTT broker, e.g. Debian's mosquitto service on "
                               "1883?): give --broker or ICEFARM_BROKER",
                               (unsigned long long)(f->timeout_ms + req->wait_ms), f->host, f->port);
        return ifm_failbuf(reason, reason_len, w.status, "icefarm control did not answer within %llu ms (%s)",
                           (unsigned long long)(f->timeout_ms + req->wait_ms),
                           f->ctl_state == LIB_CTL_OFFLINE ? "its icefarm/ctl/state says offline: start icefarm-ctl"
                                                           : "is icefarm-ctl running?");
    case -ENOTCONN:
        return ifm_failbuf(reason, reason_len, w.status, "lost the broker connection while waiting for control");
    case -EBADMSG:
        return ifm_failbuf(reason, reason_len, w.status, "malformed reply from control: %s", f->bad_reply);
    default:
        return ifm_failbuf(reason, reason_len, w.status, "%s", icefarm_strerror(w.status));
    }
}
