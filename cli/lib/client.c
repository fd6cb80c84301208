/* libicefarm: the handle (connect, close, logging), driving its loop, event
 * dispatch and board commands. Requests and replies are in call.c. */
#include <errno.h>
#include <mqtt_protocol.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#ifndef ICEFARM_VERSION
#define ICEFARM_VERSION "0"
#endif

const char *icefarm_version(void)
{
    return ICEFARM_VERSION;
}

/* One set of names for every code in icefarm (icefarm/err.h). */
const char *icefarm_strerror(int err)
{
    return ifm_strerror(err);
}

void lib_log(const icefarm *f, icefarm_log_level level, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (f && f->log)
        f->log(level, line, f->log_arg);
    else
        ifm_log((enum ifm_log_level)level, "%s", line);
}

void lib_mqtt_log(enum ifm_log_level level, const char *msg, void *arg)
{
    lib_log(arg, (icefarm_log_level)level, "%s", msg);
}

/* ---- events ---- */

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

static void dispatch(icefarm *f, const icefarm_event *ev)
{
    f->dispatching++;
    f->in_cb++;
    for (handler *h = f->handlers; h; h = h->next)
        if (!h->dead && (!h->event[0] || strcmp(h->event, ev->ev.event) == 0))
            h->cb(f, ev, h->arg);
    f->in_cb--;
    if (--f->dispatching == 0)
        sweep_handlers(f);
}

static void on_conn(ifm_mqtt *m, bool connected, void *arg)
{
    icefarm *f = arg;
    if (connected)
        f->connects++;
}

static void on_event_msg(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    icefarm *f = arg;
    if (f->closing)
        return; /* icefarm_close flushes the connection: no handler runs from inside it */
    ifm_doc doc;
    ifm_err err = { "" };
    icefarm_event ev = { .data = msg->payload, .len = msg->len };
    if (ifm_doc_parse(&doc, msg->payload, msg->len, &err) || ifm_event_decode(&doc, &ev.ev, &err)) {
        lib_log(f, ICEFARM_LOG_WARN, "ignoring malformed event on %s: %s", msg->topic, err.msg);
    } else if (ev.ev.client[0] && strcmp(ev.ev.client, f->name) != 0) {
        /* A board refused another client's command: not about ours. */
    } else {
        if (strcmp(ev.ev.event, "reservation ending soon") == 0 && f->auto_extend && ev.ev.serial[0]) {
            /* Extend without waiting for the reply: we are inside the loop. */
            const char *one[1] = { ev.ev.serial };
            icefarm_req req = { .verb = "extend", .serials = one, .nserials = 1 };
            char why[160];
            if (icefarm_call_async(f, &req, 0, NULL, NULL, NULL, why, sizeof why))
                lib_log(f, ICEFARM_LOG_WARN, "serial=%s cannot extend the lease: %s", ev.ev.serial, why);
        }
        dispatch(f, &ev);
    }
    ifm_doc_free(&doc);
}

static void on_ctl_state(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    icefarm *f = arg;
    ifm_doc doc;
    ifm_err err = { "" };
    char state[16] = "";
    if (msg->len && !ifm_doc_parse(&doc, msg->payload, msg->len, &err))
        ifm_get_str(doc.root, "state", false, state, sizeof state, &err);
    if (msg->len)
        ifm_doc_free(&doc);
    f->ctl_state = strcmp(state, "online") == 0 ? LIB_CTL_ONLINE : LIB_CTL_OFFLINE;
}

static watched *find_watched(const icefarm *f, const char *serial)
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
    icefarm_event ev = { .data = NULL, .len = 0 };
    char leaf[16];
    if (ifm_topic_level(topic, 1, ev.ev.serial, sizeof ev.ev.serial) || ifm_topic_level(topic, 2, leaf, sizeof leaf) ||
        strcmp(leaf, "cmd") != 0)
        return;
    snprintf(ev.ev.event, sizeof ev.ev.event, "error");
    snprintf(ev.ev.reason, sizeof ev.ev.reason, "the broker refused the command: %s", mosquitto_reason_string(reason));
    dispatch(arg, &ev);
}

int icefarm_on(icefarm *f, const char *event, icefarm_event_cb cb, void *arg)
{
    if (!cb || (event && strlen(event) >= sizeof((handler *)0)->event))
        return -EINVAL;
    handler *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
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

const char *icefarm_event_name(const icefarm_event *ev)
{
    return ev->ev.event;
}
const char *icefarm_event_serial(const icefarm_event *ev)
{
    return ev->ev.serial;
}
const char *icefarm_event_batch_id(const icefarm_event *ev)
{
    return ev->ev.batch_id;
}
const char *icefarm_event_reason(const icefarm_event *ev)
{
    return ev->ev.reason;
}
const void *icefarm_event_data(const icefarm_event *ev, size_t *len)
{
    *len = ev->len;
    return ev->data;
}

size_t icefarm_event_nresults(const icefarm_event *ev)
{
    return ev->ev.results ? ev->ev.results->via.array.size : 0;
}

int icefarm_event_result(const icefarm_event *ev, size_t i, icefarm_result *r, uint16_t *samples, size_t cap)
{
    if (i >= icefarm_event_nresults(ev))
        return -ERANGE;
    ifm_result ir;
    ifm_err err;
    if (ifm_event_result_at(&ev->ev, i, &ir, samples, cap, &err))
        return -EBADMSG;
    memset(r, 0, sizeof *r);
    snprintf(r->id, sizeof r->id, "%s", ir.id);
    r->type = (icefarm_value_type)ir.type;
    r->pulses = ir.pulses;
    r->fitness = ir.fitness;
    r->samples = ir.samples;
    r->nsamples = ir.nsamples;
    snprintf(r->error, sizeof r->error, "%s", ir.error);
    return 0;
}

/* ---- the handle ---- */

int icefarm_connect(const icefarm_opts *o, icefarm **out, char *reason, size_t reason_len)
{
    *out = NULL;
    icefarm *f = calloc(1, sizeof *f);
    if (!f)
        return ifm_failbuf(reason, reason_len, -ENOMEM, "out of memory");
    f->timeout_ms = o->timeout_ms ? o->timeout_ms : 10000;
    f->auto_extend = !o->no_auto_extend;
    f->log = o->log;
    f->log_arg = o->log_arg;
    int rc;
    const char *name = o->name ? o->name : getenv("ICEFARM_NAME");
    const char *user = o->user ? o->user : getenv("ICEFARM_USER");
    /* In a secured farm the broker acts for the authenticated user whatever
     * name we give, so the user is the only name that can work. */
    if ((!name || !*name) && user && *user)
        name = user;
    if (name && *name) {
        /* Never a silent cut: a truncated name would hold leases under a name
         * its owner never gave. */
        if (strlen(name) >= sizeof f->name) {
            rc = ifm_failbuf(reason, reason_len, -EINVAL, "client name too long (%zu bytes; at most %zu)", strlen(name),
                             sizeof f->name - 1);
            goto fail;
        }
        snprintf(f->name, sizeof f->name, "%s", name);
    } else {
        char host[64] = "host";
        gethostname(host, sizeof host - 1);
        const char *login = getenv("USER");
        snprintf(f->name, sizeof f->name, "%s@%s", login && *login ? login : "user", host);
    }
    const char *problem = ifm_name_problem(f->name, IFM_NAME_MAX);
    if (problem) {
        rc = ifm_failbuf(reason, reason_len, -EINVAL, "invalid client name \"%s\": the name %s", f->name, problem);
        goto fail;
    }
    const char *broker = o->broker ? o->broker : getenv("ICEFARM_BROKER");
    if (!broker || !*broker)
        broker = "mqtt://127.0.0.1:1883";
    ifm_mqtt_opts mo = { 0 };
    mo.port = 1883;
    if (ifm_mqtt_parse_url(broker, &mo, f->host, sizeof f->host)) {
        rc = ifm_failbuf(reason, reason_len, -EINVAL, "bad broker address \"%s\" (want mqtt://HOST:PORT)", broker);
        goto fail;
    }
    f->port = mo.port;
    mo.name = f->name;
    mo.username = user;
    mo.password = o->password ? o->password : getenv("ICEFARM_PASSWORD");
    mo.cafile = o->cafile ? o->cafile : getenv("ICEFARM_CAFILE");
    if (mo.cafile && !*mo.cafile)
        mo.cafile = NULL;
    if (mo.cafile && access(mo.cafile, R_OK)) {
        rc = ifm_failbuf(reason, reason_len, -EINVAL, "cannot read the CA file %s: %s", mo.cafile, strerror(errno));
        goto fail;
    }
    f->tls = mo.tls;
    if ((mo.username && !(f->user = strdup(mo.username))) || (mo.password && !(f->password = strdup(mo.password))) ||
        (mo.cafile && !(f->cafile = strdup(mo.cafile)))) {
        rc = ifm_failbuf(reason, reason_len, -ENOMEM, "out of memory");
        goto fail;
    }
    mo.log = lib_mqtt_log;
    mo.log_arg = f;
    mo.presence = true; /* a waiting reserve dies with this connection (PROTOCOL.md 5.1) */
    f->loop = ifm_loop_new();
    f->mqtt = f->loop ? ifm_mqtt_new(f->loop, &mo, on_conn, f) : NULL;
    if (!f->mqtt) {
        rc = ifm_failbuf(reason, reason_len, -ENOMEM, "cannot set up an MQTT client for %s", broker);
        goto fail;
    }
    char topic[IFM_TOPIC_MAX];
    ifm_topic_client(topic, sizeof topic, f->name, "event");
    if (ifm_mqtt_subscribe(f->mqtt, topic, 1, on_event_msg, f)) {
        rc = ifm_failbuf(reason, reason_len, -ENOMEM, "cannot subscribe to %s", topic);
        goto fail;
    }
    /* Control's retained state says whether this broker is an icefarm farm at
     * all, and whether control is up: a timed-out request says which. */
    if (ifm_mqtt_subscribe(f->mqtt, IFM_TOPIC_CTL_STATE, 1, on_ctl_state, f)) {
        rc = ifm_failbuf(reason, reason_len, -ENOMEM, "cannot subscribe to %s", IFM_TOPIC_CTL_STATE);
        goto fail;
    }
    ifm_mqtt_on_refused(f->mqtt, on_refused, f);
    ifm_mqtt_start(f->mqtt);
    /* Wait for the broker, but stop at once where retrying cannot help
     * (refused, no such host, TLS verification, bad credentials). */
    uint64_t deadline = ifm_now_ms() + f->timeout_ms;
    const char *why = NULL;
    bool permanent = false;
    while (!ifm_mqtt_connected(f->mqtt) && !ifm_mqtt_refused(f->mqtt) && ifm_now_ms() < deadline) {
        why = ifm_mqtt_conn_error(f->mqtt, &permanent);
        if (why && permanent)
            break;
        uint64_t left = deadline - ifm_now_ms();
        if (lib_wait_once(f, left < 50 ? (int)left : 50))
            break;
    }
    if (ifm_mqtt_refused(f->mqtt)) {
        rc = ifm_failbuf(reason, reason_len, -EACCES,
                         "the icefarm broker at %s:%d refused the connection: %s (check --user/--password-file or "
                         "ICEFARM_USER/ICEFARM_PASSWORD)",
                         mo.host, mo.port, ifm_mqtt_refused(f->mqtt));
        goto fail;
    }
    if (!ifm_mqtt_connected(f->mqtt)) {
        why = ifm_mqtt_conn_error(f->mqtt, &permanent);
        if (why && permanent)
            rc = ifm_failbuf(reason, reason_len, IFM_ENOTCONN, "cannot connect to the broker at %s:%d: %s", mo.host,
                             mo.port, why);
        else
            rc = ifm_failbuf(reason, reason_len, IFM_ENOTCONN,
                             "no broker answered at %s:%d within %llu ms%s%s (is the farm up? set --broker or "
                             "ICEFARM_BROKER)",
                             mo.host, mo.port, (unsigned long long)f->timeout_ms, why ? ": " : "", why ? why : "");
        goto fail;
    }
    *out = f;
    return 0;
fail:
    icefarm_close(f);
    return rc;
}

void icefarm_close(icefarm *f)
{
    if (!f)
        return;
    f->closing = true;
    /* Every accepted request hears its end exactly once. */
    for (call *c = f->calls; c; c = c->next) {
        if (c->cancelled || !c->cb)
            continue;
        c->cancelled = true;
        f->in_cb++;
        c->cb(f, -ECANCELED, NULL, c->arg);
        f->in_cb--;
    }
    if (f->mqtt) {
        ifm_mqtt_disconnect(f->mqtt);
        ifm_mqtt_free(f->mqtt); /* drops its pending requests without calling back */
    }
    ifm_loop_free(f->loop);
    while (f->calls) {
        call *c = f->calls;
        f->calls = c->next;
        free(c);
    }
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
    free(f->user);
    if (f->password) {
        explicit_bzero(f->password, strlen(f->password));
        free(f->password);
    }
    free(f->cafile);
    free(f);
}

const char *icefarm_name(const icefarm *f)
{
    return f->name;
}

bool icefarm_connected(const icefarm *f)
{
    return ifm_mqtt_connected(f->mqtt);
}

/* ---- the loop ---- */

int icefarm_fd(icefarm *f)
{
    int fd = ifm_loop_fd(f->loop);
    return fd >= 0 ? fd : -(errno ? errno : EIO);
}

int icefarm_timeout(const icefarm *f)
{
    return ifm_loop_timeout(f->loop);
}

int lib_wait_once(icefarm *f, int max_ms)
{
    return ifm_loop_once(f->loop, max_ms) ? -(errno ? errno : EIO) : 0;
}

int icefarm_run_once(icefarm *f, int timeout_ms)
{
    if (f->in_cb)
        return -EDEADLK;
    return lib_wait_once(f, timeout_ms);
}

int icefarm_run_until(icefarm *f, bool (*done)(void *arg), void *arg, uint64_t timeout_ms)
{
    if (f->in_cb)
        return -EDEADLK;
    uint64_t deadline = timeout_ms ? ifm_now_ms() + timeout_ms : UINT64_MAX;
    while (!done || !done(arg)) {
        if (f->stop) {
            f->stop = false;
            return -ECANCELED;
        }
        uint64_t now = ifm_now_ms();
        if (now >= deadline)
            return -ETIMEDOUT;
        int rc = lib_wait_once(f, deadline - now < 100 ? (int)(deadline - now) : 100);
        if (rc)
            return rc;
    }
    return 0;
}

void icefarm_stop(icefarm *f)
{
    f->stop = true;
}

static void on_signal(ifm_loop *loop, int signo, void *arg)
{
    icefarm *f = arg;
    if (!f->sigcb)
        return;
    f->in_cb++;
    f->sigcb(f, signo, f->sigarg);
    f->in_cb--;
}

int icefarm_on_signals(icefarm *f, const int *signals, int n, icefarm_signal_cb cb, void *arg)
{
    f->sigcb = cb;
    f->sigarg = arg;
    return ifm_loop_signals(f->loop, signals, n, on_signal, f) ? -(errno ? errno : EINVAL) : 0;
}

/* ---- boards ---- */

const char *icefarm_board_state_name(icefarm_board_state s)
{
    return ifm_board_state_name((ifm_board_state)s);
}

int icefarm_watch(icefarm *f, const char *serial)
{
    if (find_watched(f, serial))
        return 0;
    char ev[IFM_TOPIC_MAX], st[IFM_TOPIC_MAX];
    if (ifm_topic_board(ev, sizeof ev, serial, "event") || ifm_topic_board(st, sizeof st, serial, "state"))
        return -EINVAL;
    watched *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    snprintf(w->serial, sizeof w->serial, "%s", serial);
    w->state = IFM_BOARD_GONE;
    w->next = f->watched;
    f->watched = w;
    if (ifm_mqtt_subscribe(f->mqtt, ev, 1, on_event_msg, f) || ifm_mqtt_subscribe(f->mqtt, st, 1, on_state_msg, f))
        return -ENOMEM;
    return 0;
}

icefarm_board_state icefarm_get_board_state(const icefarm *f, const char *serial)
{
    watched *w = find_watched(f, serial);
    return w ? (icefarm_board_state)w->state : ICEFARM_BOARD_GONE;
}

/* A board command carries our name (PROTOCOL.md section 2): the worker runs
 * only its holder's commands (in a secured farm the broker sets the name). */
int lib_publish_cmd(icefarm *f, const char *serial, ifm_enc *e)
{
    char topic[IFM_TOPIC_MAX];
    mosquitto_property *props = NULL;
    int rc = 0;
    if (ifm_topic_board(topic, sizeof topic, serial, "cmd"))
        rc = -EINVAL;
    else if (!ifm_mqtt_connected(f->mqtt))
        rc = -ENOTCONN;
    else if (mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, IFM_PROP_CLIENT, f->name))
        rc = -ENOMEM;
    else if (ifm_mqtt_publish_props(f->mqtt, topic, ifm_enc_data(e), ifm_enc_size(e), 1, false, props))
        rc = -ENOMEM;
    mosquitto_property_free_all(&props);
    ifm_enc_free(e);
    return rc;
}

int icefarm_evaluate(icefarm *f, const char *serial, const char *batch_id, const icefarm_file *files, size_t n)
{
    return lib_evaluate(f, serial, batch_id, files, n, false);
}

int lib_evaluate(icefarm *f, const char *serial, const char *batch_id, const icefarm_file *files, size_t n, bool resend)
{
    if (n == 0 || n > IFM_MAX_FILES || (batch_id && strlen(batch_id) >= IFM_ID_MAX))
        return -EINVAL;
    ifm_file *fs = calloc(n, sizeof *fs);
    if (!fs)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (!files[i].id || strlen(files[i].id) >= IFM_ID_MAX || !files[i].data || !files[i].len) {
            free(fs);
            return -EINVAL;
        }
        snprintf(fs[i].id, sizeof fs[i].id, "%s", files[i].id);
        fs[i].data = files[i].data;
        fs[i].len = files[i].len;
    }
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_board_cmd_encode_resend(&e, batch_id ? batch_id : "", fs, n, resend);
    free(fs);
    return lib_publish_cmd(f, serial, &e);
}

int icefarm_flash(icefarm *f, const char *serial, const void *image, size_t len)
{
    if (!image || !len || len > IFM_MAX_IMAGE)
        return -EINVAL;
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_board_flash_encode(&e, image, len);
    return lib_publish_cmd(f, serial, &e);
}
