/* GET /events?name=NAME: a client's events as Server-Sent Events.
 *
 * A stream carries what control sends the client (icefarm/client/<name>/event)
 * and what the boards it holds send (icefarm/<serial>/event). Who holds which
 * board comes from the retained icefarm/lease/+ topic, which the shim follows
 * all the time. The same events feed the socket.io face (sio.c). A client's
 * topic is subscribed while that name has a stream or a socket.io client;
 * icefarm/+/event (one subscription, so a board's first event after a reserve
 * cannot slip past a late per-board subscription: control publishes the lease
 * before it commands the worker) while anybody has one.
 *
 * A stream's bytes wait in its queue; MHD pulls them through a content reader,
 * which suspends the connection when the queue is empty. New data (or the 15 s
 * keep-alive comment) resumes it through the server's kick timer.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "http.h"
#include "icefarm/mp.h"
#include "icefarm/log.h"
#include "icefarm/grow.h"

#define LEASE_FILTER "icefarm/lease/+"

struct sse_stream {
    sse_stream *prev, *next;
    http_srv *srv;
    struct MHD_Connection *conn;
    char name[IFM_NAME_MAX];
    char *buf;
    size_t off, len, cap;
    bool suspended, resume_pending, closed;
    int peer_fd; /* watched while suspended, to notice a client that hangs up */
    uint64_t ka_timer;
};

/* Resumes a suspended stream (never from inside an MHD callback). */
static void unpark(sse_stream *st)
{
    if (st->peer_fd >= 0) {
        ifm_loop_unwatch(st->srv->loop, st->peer_fd);
        st->peer_fd = -1;
    }
    if (st->suspended) {
        st->suspended = false;
        MHD_resume_connection(st->conn);
    }
}

/* MHD does not watch a suspended connection, so the stream watches its socket
 * meanwhile. An SSE client sends nothing: end of file (or any bytes, or an
 * error) means it is gone, and the stream ends so MHD closes the connection. */
static void on_peer(ifm_loop *loop, int fd, int events, void *arg)
{
    sse_stream *st = arg;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    st->closed = true;
    st->off = st->len = 0;
    unpark(st);
    http_kick(st->srv);
}

static size_t streams_for(http_srv *s, const char *name)
{
    size_t n = 0;
    for (sse_stream *st = s->streams; st; st = st->next)
        n += strcmp(st->name, name) == 0;
    return n;
}

static void wake(sse_stream *st)
{
    if (st->suspended && !st->resume_pending) {
        st->resume_pending = true;
        http_kick(st->srv);
    }
}

static void push(sse_stream *st, const char *data, size_t n)
{
    if (st->closed)
        return;
    if (st->len - st->off + n > HTTP_SSE_QUEUE_MAX) {
        IFM_WARN("client=%s event stream is not being read; closing it", st->name);
        st->closed = true;
        st->off = st->len = 0;
        wake(st);
        return;
    }
    if (st->off && st->off == st->len)
        st->off = st->len = 0;
    if (st->len + n > st->cap) {
        if (st->off) { /* compact before growing */
            memmove(st->buf, st->buf + st->off, st->len - st->off);
            st->len -= st->off;
            st->off = 0;
        }
        char *b = ifm_grow_bytes(st->buf, &st->cap, st->len + n, 1024, 0);
        if (!b) {
            st->closed = true;
            wake(st);
            return;
        }
        st->buf = b;
    }
    memcpy(st->buf + st->len, data, n);
    st->len += n;
    wake(st);
}

/* ---- subscriptions ---- */

static void on_client_event(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg);
static void on_board_event(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg);

#define BOARD_EVENTS "icefarm/+/event"

static size_t interest(http_srv *s, const char *name)
{
    return streams_for(s, name) + (sio_has_client(s, name) ? 1 : 0);
}

/* icefarm/+/event while anybody listens. */
static void sync_boards(http_srv *s)
{
    bool want = !s->stopping && (s->streams || sio_any(s));
    if (want == s->board_sub || !s->mqtt)
        return;
    if (want && ifm_mqtt_subscribe(s->mqtt, BOARD_EVENTS, 1, on_board_event, s)) {
        IFM_WARN("cannot subscribe to %s (out of memory): retried when the next listener comes", BOARD_EVENTS);
        return;
    }
    if (!want)
        ifm_mqtt_unsubscribe(s->mqtt, BOARD_EVENTS);
    s->board_sub = want;
}

void events_watch_name(http_srv *s, const char *name)
{
    if (interest(s, name) == 1 && s->mqtt) {
        char topic[IFM_TOPIC_MAX];
        if (ifm_topic_client(topic, sizeof topic, name, "event") == 0 &&
            ifm_mqtt_subscribe(s->mqtt, topic, 1, on_client_event, s))
            IFM_WARN("client=%s cannot subscribe to %s (out of memory): no client events for it", name, topic);
    }
    sync_boards(s);
}

void events_unwatch_name(http_srv *s, const char *name)
{
    if (interest(s, name) == 0 && s->mqtt) {
        char topic[IFM_TOPIC_MAX];
        if (ifm_topic_client(topic, sizeof topic, name, "event") == 0)
            ifm_mqtt_unsubscribe(s->mqtt, topic);
    }
    sync_boards(s);
}

static void on_lease(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    http_srv *s = arg;
    char serial[IFM_SERIAL_MAX];
    if (ifm_topic_level(msg->topic, 2, serial, sizeof serial))
        return;
    ifm_lease_info li;
    memset(&li, 0, sizeof li);
    if (msg->len) {
        ifm_doc doc;
        ifm_err err = { "" };
        int bad = ifm_doc_parse(&doc, msg->payload, msg->len, &err) || ifm_lease_info_decode(&doc, &li, &err);
        ifm_doc_free(&doc);
        if (bad) {
            IFM_WARN("ignoring a malformed lease on %s: %s", msg->topic, err.msg);
            return;
        }
    }
    size_t i = 0;
    while (i < s->nleases && strcmp(s->leases[i].serial, serial) != 0)
        i++;
    if (!li.client[0]) { /* free: forget it */
        if (i < s->nleases)
            s->leases[i] = s->leases[--s->nleases];
        return;
    }
    if (i == s->nleases) {
        lease_ent *n = ifm_grow(s->leases, &s->capleases, s->nleases, sizeof *n, 16);
        if (!n)
            return;
        s->leases = n;
        memset(&s->leases[i], 0, sizeof s->leases[i]);
        snprintf(s->leases[i].serial, sizeof s->leases[i].serial, "%s", serial);
        s->nleases++;
    }
    snprintf(s->leases[i].client, sizeof s->leases[i].client, "%s", li.client);
}

int events_init(http_srv *s)
{
    return ifm_mqtt_subscribe(s->mqtt, LEASE_FILTER, 1, on_lease, s);
}

/* ---- delivery ---- */

/* The small stand-in for an event too large to forward (HTTP_EVENT_FORWARD_MAX):
 * its header fields, read with the allocation-free reader, and its size. */
static void encode_too_large(const ifm_mqtt_msg *msg, ifm_enc *e)
{
    char event[32] = "", batch[IFM_ID_MAX] = "", serial[IFM_SERIAL_MAX] = "";
    uint64_t lease = 0;
    ifm_mp r;
    ifm_mp_init(&r, msg->payload, msg->len, NULL, 0);
    uint32_t n = 0;
    if (ifm_mp_map(&r, &n) == 0)
        for (uint32_t i = 0; i < n; i++) {
            const char *k;
            uint32_t kl;
            if (ifm_mp_str(&r, &k, &kl))
                break;
            int rc;
            if (kl == 5 && memcmp(k, "event", 5) == 0)
                rc = ifm_mp_cstr(&r, event, sizeof event);
            else if (kl == 8 && memcmp(k, "batch_id", 8) == 0)
                rc = ifm_mp_cstr(&r, batch, sizeof batch);
            else if (kl == 6 && memcmp(k, "serial", 6) == 0)
                rc = ifm_mp_cstr(&r, serial, sizeof serial);
            else if (kl == 5 && memcmp(k, "lease", 5) == 0)
                rc = ifm_mp_uint(&r, &lease);
            else
                rc = ifm_mp_skip(&r, IFM_MAX_DEPTH);
            if (rc)
                break;
        }
    ifm_enc_root(e, 3 + (serial[0] != 0) + (batch[0] != 0) + (lease != 0));
    ifm_enc_kstr(e, "event", event[0] ? event : "message");
    if (serial[0])
        ifm_enc_kstr(e, "serial", serial);
    if (batch[0])
        ifm_enc_kstr(e, "batch_id", batch);
    if (lease)
        ifm_enc_kuint(e, "lease", lease);
    ifm_enc_kbool(e, "too_large", true);
    ifm_enc_kuint(e, "bytes", msg->len);
}

static void deliver(http_srv *s, const char *name, const ifm_mqtt_msg *msg, const char *serial)
{
    if (!interest(s, name))
        return;
    if (msg->len > HTTP_EVENT_FORWARD_MAX) {
        /* Bounded memory: forward a stand-in, never the JSON of megabytes. */
        ifm_enc e;
        ifm_enc_init(&e);
        encode_too_large(msg, &e);
        ifm_mqtt_msg small = *msg;
        small.payload = ifm_enc_data(&e);
        small.len = ifm_enc_size(&e);
        IFM_WARN("client=%s event of %zu bytes on %s is too large for HTTP: forwarded as too_large", name, msg->len,
                 msg->topic);
        deliver(s, name, &small, serial);
        ifm_enc_free(&e);
        return;
    }
    ifm_doc doc;
    ifm_err err = { "" };
    if (ifm_doc_parse(&doc, msg->payload, msg->len, &err) || doc.root->type != MSGPACK_OBJECT_MAP) {
        IFM_WARN("client=%s dropping a malformed event from %s: %s", name, msg->topic,
                 err.msg[0] ? err.msg : "not a map");
        ifm_doc_free(&doc);
        return;
    }
    sio_deliver(s, name, doc.root, serial);
    if (!streams_for(s, name)) {
        ifm_doc_free(&doc);
        return;
    }
    json_t *j = ifm_json_from_msgpack(doc.root);
    ifm_doc_free(&doc);
    if (!j)
        return;
    json_object_del(j, "v");
    if (serial && !json_object_get(j, "serial"))
        json_object_set_new(j, "serial", json_string(serial));
    char event[64];
    const char *ev = json_string_value(json_object_get(j, "event"));
    snprintf(event, sizeof event, "%s", ev && *ev ? ev : "message");
    for (char *p = event; *p; p++)
        if (*p == '\r' || *p == '\n')
            *p = ' ';
    char *data = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!data)
        return;
    size_t n = strlen(event) + strlen(data) + 20;
    char *text = malloc(n);
    if (text) {
        int len = snprintf(text, n, "event: %s\ndata: %s\n\n", event, data);
        for (sse_stream *st = s->streams; st; st = st->next)
            if (strcmp(st->name, name) == 0)
                push(st, text, (size_t)len);
    }
    free(text);
    free(data);
}

static void on_client_event(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    char name[IFM_NAME_MAX];
    if (ifm_topic_level(msg->topic, 2, name, sizeof name) == 0)
        deliver(arg, name, msg, NULL);
}

static void on_board_event(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    http_srv *s = arg;
    char serial[IFM_SERIAL_MAX];
    if (ifm_topic_level(msg->topic, 1, serial, sizeof serial))
        return;
    for (size_t i = 0; i < s->nleases; i++)
        if (strcmp(s->leases[i].serial, serial) == 0) {
            char holder[IFM_NAME_MAX];
            /* deliver() may not change the table, but copy: the entry is not ours to pin. */
            snprintf(holder, sizeof holder, "%s", s->leases[i].client);
            deliver(s, holder, msg, serial);
            return;
        }
}

/* ---- the stream ---- */

static void on_keepalive(ifm_loop *loop, void *arg)
{
    sse_stream *st = arg;
    st->ka_timer = ifm_timer_add(loop, HTTP_SSE_KEEPALIVE_MS, on_keepalive, st);
    static const char ka[] = ": keep-alive\n\n";
    push(st, ka, sizeof ka - 1);
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    sse_stream *st = cls;
    if (st->len > st->off) {
        size_t n = st->len - st->off < max ? st->len - st->off : max;
        memcpy(buf, st->buf + st->off, n);
        st->off += n;
        if (st->off == st->len)
            st->off = st->len = 0;
        return (ssize_t)n;
    }
    if (st->closed)
        return MHD_CONTENT_READER_END_OF_STREAM;
    /* Nothing to send: park the connection until push() wakes it. */
    st->suspended = true;
    MHD_suspend_connection(st->conn);
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(st->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci && ci->connect_fd >= 0 && ifm_loop_watch(st->srv->loop, ci->connect_fd, IFM_READ, on_peer, st) == 0)
        st->peer_fd = ci->connect_fd;
    return 0;
}

static void sse_free(void *cls)
{
    sse_stream *st = cls;
    http_srv *s = st->srv;
    if (st->prev)
        st->prev->next = st->next;
    else
        s->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    ifm_timer_cancel(s->loop, st->ka_timer);
    if (st->peer_fd >= 0)
        ifm_loop_unwatch(s->loop, st->peer_fd);
    events_unwatch_name(s, st->name);
    IFM_INFO("client=%s event stream closed", st->name);
    free(st->buf);
    free(st);
}

enum MHD_Result events_serve(http_req *r, json_t *args)
{
    http_srv *s = r->srv;
    const char *name = NULL;
    size_t nlen = 0;
    if (r->user[0]) {
        /* --auth broker: the stream is the authenticated user's; ?name= or
         * "name" may repeat it, not name somebody else. */
        char err[300];
        int st = 0;
        if (MHD_lookup_connection_value_n(r->conn, MHD_GET_ARGUMENT_KIND, "name", 4, &name, &nlen) == MHD_YES) {
            if (nlen != strlen(r->user) || memcmp(name, r->user, nlen) != 0) {
                snprintf(err, sizeof err, "you are %s; \"name\" must be omitted or your own user name", r->user);
                st = 403;
            }
        } else {
            st = api_acting_user(r, args, err, sizeof err);
        }
        if (st)
            return http_reply_error(r, (unsigned)st, "%s", err);
        name = r->user;
        nlen = strlen(name);
    } else if (MHD_lookup_connection_value_n(r->conn, MHD_GET_ARGUMENT_KIND, "name", 4, &name, &nlen) != MHD_YES) {
        json_t *v = json_object_get(args, "name");
        if (v && !json_is_string(v))
            return http_reply_error(r, 400, "field \"name\" must be a string, not %s", ifm_json_type_name(v));
        name = json_string_value(v);
        nlen = name ? json_string_length(v) : 0;
    }
    if (!name)
        return http_reply_error(r, 400, "missing query parameter \"name\" (GET /events?name=NAME)");
    json_t *utf8 = json_stringn(name, nlen); /* NULL for invalid UTF-8 */
    bool ok = utf8 && strlen(name) == nlen && api_name_ok(name);
    json_decref(utf8);
    if (!ok)
        return http_reply_error(r, 400,
                                "\"name\" must be 1 to %d bytes of UTF-8 without '/', '+', '#', control "
                                "characters or a leading '$'",
                                IFM_NAME_MAX - 1);
    snprintf(r->client, sizeof r->client, "%s", name);
    if (s->stopping)
        return http_reply_error(r, 503, "icefarm-http is shutting down");
    sse_stream *st = calloc(1, sizeof *st);
    if (!st)
        return http_reply_error(r, 500, "out of memory");
    st->srv = s;
    st->conn = r->conn;
    st->peer_fd = -1;
    snprintf(st->name, sizeof st->name, "%s", name);
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_read, st, sse_free);
    if (!resp) {
        free(st);
        return http_reply_error(r, 500, "out of memory");
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    st->next = s->streams;
    if (s->streams)
        s->streams->prev = st;
    s->streams = st;
    events_watch_name(s, name);
    static const char hello[] = ": icefarm events\nretry: 3000\n\n";
    push(st, hello, sizeof hello - 1);
    st->ka_timer = ifm_timer_add(s->loop, HTTP_SSE_KEEPALIVE_MS, on_keepalive, st);
    enum MHD_Result rc = MHD_queue_response(r->conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp); /* the connection holds it; sse_free runs when it closes */
    r->status = MHD_HTTP_OK;
    r->state = REQ_DONE;
    IFM_INFO("client=%s event stream opened", st->name);
    return rc;
}

void events_resume(http_srv *s)
{
    for (sse_stream *st = s->streams; st; st = st->next) {
        if (!st->resume_pending)
            continue;
        st->resume_pending = false;
        unpark(st);
    }
}

void events_close_all(http_srv *s)
{
    for (sse_stream *st = s->streams; st; st = st->next) {
        st->closed = true;
        st->off = st->len = 0;
        ifm_timer_cancel(s->loop, st->ka_timer);
        st->ka_timer = 0;
        st->resume_pending = false;
        unpark(st);
    }
}

void events_free(http_srv *s)
{
    free(s->leases);
    s->leases = NULL;
    s->nleases = s->capleases = 0;
}

const char *events_holder(const http_srv *s, const char *serial)
{
    for (size_t i = 0; i < s->nleases; i++)
        if (strcmp(s->leases[i].serial, serial) == 0)
            return s->leases[i].client[0] ? s->leases[i].client : NULL;
    return NULL;
}
