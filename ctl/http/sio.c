/* The socket.io face: what the old iCEFARM Python clients (EventServer,
 * BaseClient, BatchClient on python-socketio 5 / python-engineio 4) need from
 * "control" and from "workers", served at /socket.io/ over Engine.IO v4
 * long-polling only (upgrades: []). A plain farm client: events come from the
 * MQTT topics events.c follows, requests become board commands and control
 * requests like everybody else's. ctl/http/README.md describes the face.
 *
 * Sessions (sio_sess): one per Engine.IO connection, keyed by a random sid; at
 * most one held GET each (a suspended MHD connection, answered when packets are
 * queued, at the latest by the next PING every pingInterval). After the
 * Socket.IO CONNECT a session is one socket of a client name (sio_client).
 *
 * Clients (sio_client): one per name, with its sockets in connect order and one
 * FIFO of events. The head event goes to the newest socket; a board event waits
 * while the name has fewer than two sockets (the old client's "worker" socket
 * is its second) for at most SIO_HOLD_MS; with no socket at all events wait
 * SIO_HOLD_MS and are then dropped. A client with no socket is forgotten after
 * SIO_HOLD_MS.
 *
 * Ownership: the server's sio_state owns sessions and clients. A held GET's
 * http_req points at its session (r->sio) and the session at it (sess->get);
 * whichever goes first clears the other's pointer. Single-threaded (the loop). */
#include <errno.h>
#include <mqtt_protocol.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "http.h"
#include "icefarm/log.h"
#include "icefarm/grow.h"
#include "sio_codec.h"

#define SIO_HOLD_MS 60000u         /* board events wait this long for the worker socket */
#define SIO_MAX_PACKETS_PER_GET 16 /* python-engineio 4 refuses longer payloads */
#define SIO_MAX_OUT 10000          /* queued packets per session before it is closed */
#define SIO_MAX_EVENTS 10000       /* queued events per client name */
#define SIO_MAX_SESSIONS 1000

typedef struct sio_client sio_client;

typedef struct {
    char *pkt; /* an Engine.IO packet: 42["event","..."] */
    bool board;
    uint64_t t;
} sio_ev;

struct sio_sess {
    sio_sess *prev, *next;
    http_srv *srv;
    char sid[24];
    sio_client *cl;    /* after CONNECT */
    sio_sess *cl_next; /* the client's sockets, oldest first */
    char **out;        /* queued Engine.IO packets */
    size_t nout, capout;
    http_req *get; /* the held GET, if any */
    uint64_t ping_timer;
    bool pong_due;
    uint8_t auth[32]; /* SHA-256 of the handshake's Authorization header */
    bool has_auth;
    char user[IFM_NAME_MAX]; /* --auth broker: who opened it */
    char ip[HTTP_IP_MAX];
    sio_asm as;
};

struct sio_client {
    sio_client *prev, *next;
    http_srv *srv;
    char name[IFM_NAME_MAX];
    sio_sess *socks;
    sio_ev *q;
    size_t nq, capq;
    uint64_t timer;
    uint64_t alone_since; /* 0 while a socket is attached */
};

struct sio_state {
    sio_sess *sessions;
    size_t nsessions;
    sio_client *clients;
    uint32_t last_amount;
    bool have_amount;
};

static void client_flush(sio_client *cl);
static void sess_close(sio_sess *ss, const char *why);

static void rand_id(char *out, size_t cap)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint8_t raw[20];
    size_t n = cap - 1 < sizeof raw ? cap - 1 : sizeof raw;
    if (getrandom(raw, n, 0) != (ssize_t)n)
        for (size_t i = 0; i < n; i++) /* never expected; still unique enough per process */
            raw[i] = (uint8_t)(ifm_now_ms() * 2654435761u >> (i % 24));
    for (size_t i = 0; i < n; i++)
        out[i] = al[raw[i] & 63];
    out[n] = '\0';
}

static const char *who(const char *name, char *buf, size_t cap)
{
    return http_log_name(name, buf, cap);
}

/* ---- clients ---- */

static sio_client *client_find(http_srv *s, const char *name)
{
    for (sio_client *c = s->sio->clients; c; c = c->next)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

bool sio_has_client(const http_srv *s, const char *name)
{
    return s->sio && client_find((http_srv *)s, name);
}

bool sio_any(const http_srv *s)
{
    return s->sio && s->sio->clients;
}

static size_t nsocks(const sio_client *cl)
{
    size_t n = 0;
    for (sio_sess *ss = cl->socks; ss; ss = ss->cl_next)
        n++;
    return n;
}

static void client_free(sio_client *cl)
{
    http_srv *s = cl->srv;
    char buf[IFM_NAME_MAX * 4 + 4];
    if (cl->nq)
        IFM_WARN("client=%s socket.io: dropping %zu undelivered events (no socket for %u s)",
                 who(cl->name, buf, sizeof buf), cl->nq, SIO_HOLD_MS / 1000);
    if (cl->prev)
        cl->prev->next = cl->next;
    else
        s->sio->clients = cl->next;
    if (cl->next)
        cl->next->prev = cl->prev;
    ifm_timer_cancel(s->loop, cl->timer);
    for (size_t i = 0; i < cl->nq; i++)
        free(cl->q[i].pkt);
    free(cl->q);
    char name[IFM_NAME_MAX];
    snprintf(name, sizeof name, "%s", cl->name);
    free(cl);
    events_unwatch_name(s, name);
}

static void on_client_timer(ifm_loop *loop, void *arg)
{
    sio_client *cl = arg;
    cl->timer = 0;
    if (!cl->socks && cl->alone_since && ifm_now_ms() - cl->alone_since >= SIO_HOLD_MS) {
        client_free(cl);
        return;
    }
    client_flush(cl);
}

static void client_arm(sio_client *cl, uint64_t at)
{
    http_srv *s = cl->srv;
    uint64_t now = ifm_now_ms();
    ifm_timer_cancel(s->loop, cl->timer);
    cl->timer = ifm_timer_add(s->loop, at > now ? at - now : 0, on_client_timer, cl);
}

static sio_client *client_get(http_srv *s, const char *name)
{
    sio_client *cl = client_find(s, name);
    if (cl)
        return cl;
    cl = calloc(1, sizeof *cl);
    if (!cl)
        return NULL;
    cl->srv = s;
    snprintf(cl->name, sizeof cl->name, "%s", name);
    cl->next = s->sio->clients;
    if (s->sio->clients)
        s->sio->clients->prev = cl;
    s->sio->clients = cl;
    events_watch_name(s, name);
    return cl;
}

static void sess_push(sio_sess *ss, char *pkt);

/* Delivers what may be delivered now, in order; arms the timer for the rest. */
static void client_flush(sio_client *cl)
{
    uint64_t now = ifm_now_ms();
    size_t n = nsocks(cl), done = 0;
    sio_sess *newest = cl->socks;
    while (newest && newest->cl_next)
        newest = newest->cl_next;
    while (done < cl->nq) {
        sio_ev *e = &cl->q[done];
        bool expired = now - e->t >= SIO_HOLD_MS;
        if (n == 0) {
            if (!expired)
                break;
            char buf[IFM_NAME_MAX * 4 + 4];
            IFM_WARN("client=%s socket.io: an event waited %u s for a socket; dropped", who(cl->name, buf, sizeof buf),
                     SIO_HOLD_MS / 1000);
            free(e->pkt);
        } else if (e->board && n < 2 && !expired) {
            break;
        } else {
            sess_push(newest, e->pkt);
        }
        e->pkt = NULL;
        done++;
    }
    if (done) {
        memmove(cl->q, cl->q + done, (cl->nq - done) * sizeof *cl->q);
        cl->nq -= done;
    }
    uint64_t next = 0;
    if (cl->nq)
        next = cl->q[0].t + SIO_HOLD_MS;
    if (!cl->socks && cl->alone_since && (!next || cl->alone_since + SIO_HOLD_MS < next))
        next = cl->alone_since + SIO_HOLD_MS;
    if (next)
        client_arm(cl, next);
    else if (cl->timer) {
        ifm_timer_cancel(cl->srv->loop, cl->timer);
        cl->timer = 0;
    }
}

static void client_push(sio_client *cl, char *pkt, bool board)
{
    if (!pkt)
        return;
    if (cl->nq >= SIO_MAX_EVENTS) {
        char buf[IFM_NAME_MAX * 4 + 4];
        IFM_WARN("client=%s socket.io: %zu events waiting; dropping a new one", who(cl->name, buf, sizeof buf), cl->nq);
        free(pkt);
        return;
    }
    sio_ev *q = ifm_grow(cl->q, &cl->capq, cl->nq, sizeof *q, 16);
    if (!q) {
        free(pkt);
        return;
    }
    cl->q = q;
    cl->q[cl->nq++] = (sio_ev){ pkt, board, ifm_now_ms() };
    client_flush(cl);
}

static void client_attach(sio_client *cl, sio_sess *ss)
{
    ss->cl = cl;
    ss->cl_next = NULL;
    sio_sess **pp = &cl->socks;
    while (*pp)
        pp = &(*pp)->cl_next;
    *pp = ss;
    cl->alone_since = 0;
    client_flush(cl);
}

/* A socket that goes away with events it was given but never polled for hands
 * them back, in order, to the head of its client's queue: the old client's
 * stop() closes its worker socket and ends its leases at once, so "reservation
 * end" can reach the shim while that socket is still the newest. */
static void client_take_back(sio_client *cl, sio_sess *ss)
{
    size_t nev = 0;
    for (size_t i = 0; i < ss->nout; i++)
        nev += strncmp(ss->out[i], "42[\"event\"", 10) == 0;
    if (!nev || cl->nq + nev > SIO_MAX_EVENTS)
        return;
    if (cl->nq + nev > cl->capq) {
        sio_ev *q = realloc(cl->q, (cl->nq + nev) * sizeof *q);
        if (!q)
            return;
        cl->q = q;
        cl->capq = cl->nq + nev;
    }
    memmove(cl->q + nev, cl->q, cl->nq * sizeof *cl->q);
    size_t k = 0, kept = 0;
    uint64_t now = ifm_now_ms();
    for (size_t i = 0; i < ss->nout; i++) {
        if (strncmp(ss->out[i], "42[\"event\"", 10) == 0)
            cl->q[k++] = (sio_ev){ ss->out[i], false, now };
        else
            ss->out[kept++] = ss->out[i];
    }
    cl->nq += nev;
    ss->nout = kept;
}

static void client_detach(sio_sess *ss)
{
    sio_client *cl = ss->cl;
    if (!cl)
        return;
    for (sio_sess **pp = &cl->socks; *pp; pp = &(*pp)->cl_next)
        if (*pp == ss) {
            *pp = ss->cl_next;
            break;
        }
    ss->cl = NULL;
    ss->cl_next = NULL;
    client_take_back(cl, ss);
    if (!cl->socks)
        cl->alone_since = ifm_now_ms();
    client_flush(cl);
}

/* ---- sessions: the out queue and the held GET ---- */

static void answer_get(sio_sess *ss)
{
    http_req *r = ss->get;
    if (!r || !ss->nout)
        return;
    size_t n = ss->nout < SIO_MAX_PACKETS_PER_GET ? ss->nout : SIO_MAX_PACKETS_PER_GET, len = 0;
    for (size_t i = 0; i < n; i++)
        len += strlen(ss->out[i]) + 1;
    char *body = malloc(len + 1), *p = body;
    if (!body)
        return;
    for (size_t i = 0; i < n; i++) {
        if (i)
            *p++ = 0x1e;
        size_t k = strlen(ss->out[i]);
        memcpy(p, ss->out[i], k);
        p += k;
        free(ss->out[i]);
    }
    *p = '\0';
    memmove(ss->out, ss->out + n, (ss->nout - n) * sizeof *ss->out);
    ss->nout -= n;
    ss->get = NULL;
    r->sio = NULL;
    http_finish_text(r, 200, body, "text/plain; charset=UTF-8");
}

static void sess_push(sio_sess *ss, char *pkt)
{
    if (!pkt)
        return;
    if (ss->nout >= SIO_MAX_OUT) {
        free(pkt);
        sess_close(ss, "its client stopped polling");
        return;
    }
    char **o = ifm_grow(ss->out, &ss->capout, ss->nout, sizeof *o, 16);
    if (!o) {
        free(pkt);
        return;
    }
    ss->out = o;
    ss->out[ss->nout++] = pkt;
    answer_get(ss);
}

static char *dupstr(const char *s)
{
    return strdup(s);
}

static void on_ping(ifm_loop *loop, void *arg)
{
    sio_sess *ss = arg;
    http_srv *s = ss->srv;
    ss->ping_timer = 0;
    if (ss->pong_due) {
        sess_close(ss, "no PONG within pingInterval + pingTimeout");
        return;
    }
    ss->pong_due = true;
    ss->ping_timer = ifm_timer_add(loop, s->ping_interval_ms + s->ping_timeout_ms, on_ping, ss);
    sess_push(ss, dupstr("2"));
}

static void sess_free(sio_sess *ss)
{
    http_srv *s = ss->srv;
    client_detach(ss);
    if (ss->prev)
        ss->prev->next = ss->next;
    else
        s->sio->sessions = ss->next;
    if (ss->next)
        ss->next->prev = ss->prev;
    s->sio->nsessions--;
    ifm_timer_cancel(s->loop, ss->ping_timer);
    for (size_t i = 0; i < ss->nout; i++)
        free(ss->out[i]);
    free(ss->out);
    sio_asm_free(&ss->as);
    OPENSSL_cleanse(ss->auth, sizeof ss->auth);
    free(ss);
}

/* Ends a session: a held GET gets a NOOP (the client is leaving or gone). */
static void sess_close(sio_sess *ss, const char *why)
{
    char buf[IFM_NAME_MAX * 4 + 4];
    IFM_INFO("client=%s socket.io session %s closed: %s", ss->cl ? who(ss->cl->name, buf, sizeof buf) : "-", ss->sid,
             why);
    if (ss->get) {
        http_req *r = ss->get;
        ss->get = NULL;
        r->sio = NULL;
        http_finish_text(r, 200, dupstr("6"), "text/plain; charset=UTF-8");
    }
    sess_free(ss);
}

static sio_sess *sess_find(http_srv *s, const char *sid)
{
    for (sio_sess *ss = s->sio->sessions; ss; ss = ss->next)
        if (strcmp(ss->sid, sid) == 0)
            return ss;
    return NULL;
}

static void auth_hash(http_req *r, uint8_t out[32], bool *have)
{
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    *have = h != NULL;
    if (h)
        SHA256((const unsigned char *)h, strlen(h), out);
    else
        memset(out, 0, 32);
}

bool sio_session_authorized(http_req *r)
{
    http_srv *s = r->srv;
    const char *sid = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "sid");
    sio_sess *ss = sid && s->sio ? sess_find(s, sid) : NULL;
    if (!ss || !ss->has_auth)
        return false;
    uint8_t h[32];
    bool have;
    auth_hash(r, h, &have);
    bool same = have && CRYPTO_memcmp(h, ss->auth, 32) == 0;
    if (same)
        snprintf(r->user, sizeof r->user, "%s", ss->user);
    return same;
}

void sio_req_gone(http_req *r)
{
    sio_sess *ss = r->sio;
    if (ss && ss->get == r)
        ss->get = NULL;
    r->sio = NULL;
}

/* ---- from the farm to the clients ---- */

/* The old envelope {"serial": S, "contents": [item]}: the event map without v
 * (and serial); results' integers as decimal strings, as the old workers sent
 * pulse counts. */
static char *envelope(const msgpack_object *root, const char *serial)
{
    json_t *item = ifm_json_from_msgpack(root);
    if (!json_is_object(item)) {
        json_decref(item);
        return NULL;
    }
    json_object_del(item, "v");
    const char *sv = json_string_value(json_object_get(item, "serial"));
    char ser[IFM_SERIAL_MAX];
    snprintf(ser, sizeof ser, "%s", serial ? serial : sv ? sv : "meta");
    json_object_del(item, "serial");
    json_t *results = json_object_get(item, "results");
    for (size_t i = 0; json_is_array(results) && i < json_array_size(results); i++) {
        json_t *pair = json_array_get(results, i);
        json_t *v = json_array_get(pair, 1);
        if (json_is_integer(v)) {
            char num[32];
            snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
            json_array_set_new(pair, 1, json_string(num));
        }
    }
    json_t *env = json_pack("{s:s, s:[o]}", "serial", ser, "contents", item);
    char *text = env ? json_dumps(env, JSON_COMPACT) : NULL;
    json_decref(env);
    if (!text)
        return NULL;
    char *pkt = sio_event_packet("event", text);
    free(text);
    return pkt;
}

void sio_deliver(http_srv *s, const char *name, const msgpack_object *root, const char *serial)
{
    sio_client *cl = s->sio ? client_find(s, name) : NULL;
    if (cl)
        client_push(cl, envelope(root, serial), serial != NULL);
}

/* A locally made event (a refused request) for one client. */
static void tell(sio_client *cl, const char *serial, const char *event, const char *reason, const char *batch_id)
{
    if (!cl)
        return;
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_event_encode(&e, event, serial && *serial ? serial : "meta", reason, batch_id);
    ifm_doc doc;
    ifm_err err = { "" };
    /* Not held like board events: it answers a request the client just sent. */
    if (ifm_doc_parse(&doc, ifm_enc_data(&e), ifm_enc_size(&e), &err) == 0)
        client_push(cl, envelope(doc.root, NULL), false);
    ifm_doc_free(&doc);
    ifm_enc_free(&e);
}

static void on_available(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    http_srv *s = arg;
    if (!msg->len || !s->sio)
        return; /* (messages still arrive while the shim disconnects, after sio_free) */
    ifm_doc doc;
    ifm_err err = { "" };
    ifm_available a;
    int bad = ifm_doc_parse(&doc, msg->payload, msg->len, &err) || ifm_available_decode(&doc, &a, &err);
    ifm_doc_free(&doc);
    if (bad) {
        IFM_WARN("ignoring a malformed %s: %s", msg->topic, err.msg);
        return;
    }
    bool changed = !s->sio->have_amount || a.amount != s->sio->last_amount;
    s->sio->have_amount = true;
    s->sio->last_amount = a.amount;
    if (!changed)
        return;
    char text[96];
    snprintf(text, sizeof text, "{\"serial\":\"meta\",\"contents\":[{\"event\":\"devices_available\",\"amount\":%u}]}",
             a.amount);
    for (sio_client *cl = s->sio->clients; cl; cl = cl->next)
        client_push(cl, sio_event_packet("event", text), false);
}

static void on_refused(ifm_mqtt *m, const char *topic, int reason, void *arg)
{
    http_srv *s = arg;
    char serial[IFM_SERIAL_MAX], leaf[16];
    if (!s->sio || ifm_topic_level(topic, 1, serial, sizeof serial) || ifm_topic_level(topic, 2, leaf, sizeof leaf) ||
        strcmp(leaf, "cmd") != 0)
        return;
    const char *holder = events_holder(s, serial);
    IFM_WARN("serial=%s client=%s the broker refused a command (reason 0x%02x)", serial, holder ? holder : "-",
             (unsigned)reason);
    if (holder)
        tell(client_find(s, holder), serial, "error", "the broker refused the command (not authorized)", NULL);
}

/* ---- from the clients to the farm: the "request" event ---- */

static int publish_cmd(http_srv *s, sio_client *cl, const char *serial, const ifm_enc *cmd)
{
    char topic[IFM_TOPIC_MAX];
    if (ifm_topic_board(topic, sizeof topic, serial, "cmd"))
        return -1;
    mosquitto_property *props = NULL;
    if (mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, IFM_PROP_CLIENT, cl->name))
        return -1;
    int rc = ifm_mqtt_publish_props(s->mqtt, topic, ifm_enc_data(cmd), ifm_enc_size(cmd), 1, false, props);
    mosquitto_property_free_all(&props);
    return rc;
}

typedef struct {
    http_srv *srv;
    char name[IFM_NAME_MAX];
    char serial[IFM_SERIAL_MAX];
} reboot_call;

static void on_reboot_reply(ifm_mqtt *m, int status, const ifm_mqtt_msg *reply, void *arg)
{
    reboot_call *rc = arg;
    http_srv *s = rc->srv;
    char why[240] = "";
    if (status) {
        snprintf(why, sizeof why, "reboot: control did not answer");
    } else {
        ifm_doc doc;
        ifm_err err = { "" };
        ifm_reply_status st;
        if (ifm_doc_parse(&doc, reply->payload, reply->len, &err) || ifm_reply_status_decode(&doc, &st, &err))
            snprintf(why, sizeof why, "reboot: malformed reply from control: %s", err.msg);
        else if (!st.ok)
            snprintf(why, sizeof why, "reboot refused: %s", st.error);
        ifm_doc_free(&doc);
    }
    if (why[0] && s->sio) {
        char buf[IFM_NAME_MAX * 4 + 4];
        IFM_WARN("client=%s socket.io %s", who(rc->name, buf, sizeof buf), why);
        tell(client_find(s, rc->name), rc->serial, "error", why, NULL);
    }
    free(rc);
}

/* The request's serials: a string or a list of strings. */
static int request_serials(const msgpack_object *v, char (**out)[IFM_SERIAL_MAX], size_t *n, char *why, size_t cap)
{
    size_t cnt = v && v->type == MSGPACK_OBJECT_ARRAY ? v->via.array.size : 1;
    if (!v || (v->type != MSGPACK_OBJECT_STR && v->type != MSGPACK_OBJECT_ARRAY) || cnt == 0 || cnt > IFM_MAX_SERIALS) {
        snprintf(why, cap, "\"serial\" must be a serial or a list of 1 to %d serials", IFM_MAX_SERIALS);
        return -1;
    }
    *out = calloc(cnt, sizeof **out);
    if (!*out) {
        snprintf(why, cap, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < cnt; i++) {
        const msgpack_object *o = v->type == MSGPACK_OBJECT_ARRAY ? &v->via.array.ptr[i] : v;
        ifm_err err = { "" };
        if (ifm_obj_str(o, "serial", true, (*out)[i], IFM_SERIAL_MAX, &err) || !ifm_serial_valid((*out)[i])) {
            snprintf(why, cap, "\"serial\" holds something that is not a serial");
            free(*out);
            *out = NULL;
            return -1;
        }
    }
    *n = cnt;
    return 0;
}

static void handle_request(sio_sess *ss, const void *mp, size_t len)
{
    http_srv *s = ss->srv;
    sio_client *cl = ss->cl;
    char buf[IFM_NAME_MAX * 4 + 4], why[300] = "", event[32] = "", batch[IFM_ID_MAX] = "";
    const char *name = who(cl->name, buf, sizeof buf);
    ifm_doc doc;
    ifm_err err = { "" };
    char(*serials)[IFM_SERIAL_MAX] = NULL;
    size_t nserials = 0;
    const msgpack_object *contents = NULL;
    ifm_enc cmd;
    ifm_enc_init(&cmd);
    ifm_file *files = NULL;
    /* The old clients' requests carry no protocol version: scanned (bounded,
     * allocation-free), then unpacked without ifm_doc_parse's "v" rule. */
    msgpack_unpacked_init(&doc.up);
    doc.root = NULL;
    size_t off = 0;
    if (ifm_msgpack_scan(mp, len, IFM_MAX_DEPTH, &err)) {
        snprintf(why, sizeof why, "bad request: %s", err.msg);
        goto refuse;
    }
    if (msgpack_unpack_next(&doc.up, mp, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        doc.up.data.type != MSGPACK_OBJECT_MAP) {
        snprintf(why, sizeof why, "bad request: not a msgpack map");
        goto refuse;
    }
    doc.root = &doc.up.data;
    if (request_serials(ifm_map_get(doc.root, "serial"), &serials, &nserials, why, sizeof why))
        goto refuse;
    if (ifm_get_str(doc.root, "event", true, event, sizeof event, &err) ||
        ifm_get_map(doc.root, "contents", false, &contents, &err) < 0) {
        snprintf(why, sizeof why, "bad request: %s", err.msg);
        goto refuse;
    }
    if (strcmp(event, "reboot") == 0) {
        ifm_ctl_req req;
        memset(&req, 0, sizeof req);
        req.verb = IFM_VERB_REBOOT;
        req.serials = serials;
        req.nserials = nserials;
        ifm_enc e;
        ifm_enc_init(&e);
        ifm_ctl_req_encode(&e, &req, NULL, 0);
        char topic[IFM_TOPIC_MAX];
        ifm_topic_ctl_req(topic, sizeof topic, "reboot");
        reboot_call *rc = calloc(1, sizeof *rc);
        if (rc) {
            rc->srv = s;
            snprintf(rc->name, sizeof rc->name, "%s", cl->name);
            snprintf(rc->serial, sizeof rc->serial, "%s", serials[0]);
        }
        if (!rc ||
            ifm_mqtt_request_as(s->mqtt, cl->name, topic, ifm_enc_data(&e), ifm_enc_size(&e), s->timeout_ms,
                                on_reboot_reply, rc)) {
            free(rc);
            snprintf(why, sizeof why, "reboot: control unreachable");
        }
        ifm_enc_free(&e);
        IFM_INFO("serial=%s client=%s socket.io reboot request (%zu boards)", serials[0], name, nserials);
        if (why[0])
            goto refuse;
        goto out;
    }
    if (!contents) {
        snprintf(why, sizeof why, "bad request: missing field \"contents\"");
        goto refuse;
    }
    if (strcmp(event, "evaluate") == 0) {
        const msgpack_object *fm = NULL;
        if (ifm_get_str(contents, "batch_id", true, batch, sizeof batch, &err) || !batch[0] ||
            ifm_get_map(contents, "files", true, &fm, &err) || fm->via.map.size == 0 ||
            fm->via.map.size > IFM_MAX_FILES) {
            snprintf(why, sizeof why, "bad evaluate: %s",
                     err.msg[0] ? err.msg : "1 to 256 files and a batch_id needed");
            goto refuse;
        }
        files = calloc(fm->via.map.size, sizeof *files);
        if (!files) {
            snprintf(why, sizeof why, "out of memory");
            goto refuse;
        }
        for (uint32_t i = 0; i < fm->via.map.size; i++) {
            const msgpack_object_kv *kv = &fm->via.map.ptr[i];
            if (ifm_obj_str(&kv->key, "file id", true, files[i].id, sizeof files[i].id, &err) ||
                kv->val.type != MSGPACK_OBJECT_BIN || kv->val.via.bin.size == 0) {
                snprintf(why, sizeof why, "bad evaluate: every file must be an id and non-empty bytes");
                goto refuse;
            }
            files[i].data = (const uint8_t *)kv->val.via.bin.ptr;
            files[i].len = kv->val.via.bin.size;
        }
        ifm_board_cmd_encode(&cmd, batch, files, fm->via.map.size);
    } else if (strcmp(event, "flash") == 0) {
        const uint8_t *img;
        size_t ilen;
        if (ifm_get_bin(contents, "image", true, 1, IFM_MAX_IMAGE, &img, &ilen, &err)) {
            snprintf(why, sizeof why, "bad flash: %s", err.msg);
            goto refuse;
        }
        ifm_board_flash_encode(&cmd, img, ilen);
    } else {
        snprintf(why, sizeof why, "unsupported request event \"%s\" (evaluate, flash, reboot)", event);
        goto refuse;
    }
    /* One command per board, each only if this client holds it. */
    for (size_t i = 0; i < nserials; i++) {
        const char *holder = events_holder(s, serials[i]);
        if (!holder || strcmp(holder, cl->name) != 0) {
            char w[200];
            snprintf(w, sizeof w, "serial %s is not reserved by you", serials[i]);
            IFM_WARN("serial=%s client=%s socket.io %s refused: %s", serials[i], name, event, w);
            tell(cl, serials[i], "error", w, batch[0] ? batch : NULL);
        } else if (publish_cmd(s, cl, serials[i], &cmd)) {
            IFM_WARN("serial=%s client=%s socket.io %s: not connected to the broker", serials[i], name, event);
            tell(cl, serials[i], "error", "the shim is not connected to the broker", batch[0] ? batch : NULL);
        }
    }
    goto out;
refuse:
    IFM_WARN("client=%s socket.io request refused: %s", name, why);
    tell(cl, nserials ? serials[0] : NULL, "error", why, batch[0] ? batch : NULL);
out:
    free(files);
    free(serials);
    ifm_enc_free(&cmd);
    ifm_doc_free(&doc);
}

/* ---- Socket.IO messages of a session ---- */

static void on_connect(sio_sess *ss, sio_msg *m)
{
    http_srv *s = ss->srv;
    if (strcmp(m->pkt.nsp, "/") != 0) {
        char *pkt = sio_connect_error_packet("Invalid namespace");
        /* 44/nsp,{...}: the error names the namespace it answers */
        if (pkt) {
            size_t need = strlen(pkt) + strlen(m->pkt.nsp) + 2;
            char *full = malloc(need);
            if (full)
                snprintf(full, need, "44%s,%s", m->pkt.nsp, pkt + 2);
            free(pkt);
            sess_push(ss, full);
        }
        return;
    }
    if (ss->cl)
        return; /* already connected */
    const char *id = json_string_value(json_object_get(m->pkt.data, "client_id"));
    char w[200] = "";
    if (!id || !api_name_ok(id))
        snprintf(w, sizeof w, "auth.client_id must be a client name (1 to %d bytes, no '/', '+', '#')",
                 IFM_NAME_MAX - 1);
    else if (ss->user[0] && strcmp(id, ss->user) != 0)
        snprintf(w, sizeof w, "you are %s; auth.client_id must be your user name", ss->user);
    if (w[0]) {
        IFM_WARN("socket.io session %s from %s: CONNECT refused: %s", ss->sid, ss->ip, w);
        sess_push(ss, sio_connect_error_packet(w));
        return;
    }
    sio_client *cl = client_get(s, id);
    if (!cl) {
        sess_push(ss, sio_connect_error_packet("out of memory"));
        return;
    }
    char sid[24], buf[IFM_NAME_MAX * 4 + 4];
    rand_id(sid, sizeof sid);
    sess_push(ss, sio_connect_packet(sid));
    client_attach(cl, ss);
    IFM_INFO("client=%s socket.io socket %zu connected (session %s from %s)", who(cl->name, buf, sizeof buf),
             nsocks(cl), ss->sid, ss->ip);
}

static void on_event(sio_sess *ss, sio_msg *m)
{
    char buf[IFM_NAME_MAX * 4 + 4];
    if (!ss->cl || strcmp(m->pkt.nsp, "/") != 0) {
        IFM_WARN("socket.io session %s: an event before CONNECT (or for namespace %s) dropped", ss->sid, m->pkt.nsp);
        return;
    }
    if (m->pkt.ack_id >= 0)
        sess_push(ss, sio_ack_packet(m->pkt.ack_id));
    const char *name = json_string_value(json_array_get(m->pkt.data, 0));
    if (strcmp(name, "request") != 0) {
        IFM_INFO("client=%s socket.io event \"%.40s\" ignored", who(ss->cl->name, buf, sizeof buf), name);
        return;
    }
    json_t *arg = json_array_get(m->pkt.data, 1);
    ifm_enc e;
    ifm_enc_init(&e);
    sio_err err = { "" };
    int rc = -1;
    if (json_is_object(arg) && json_is_true(json_object_get(arg, "_placeholder"))) {
        /* msgpack bytes (what the old client's EventServer sends) */
        json_t *num = json_object_get(arg, "num");
        json_int_t k = json_is_integer(num) ? json_integer_value(num) : -1;
        if (k >= 0 && k < (json_int_t)m->natt) {
            handle_request(ss, m->att[k], m->attlen[k]);
            rc = 0;
        } else {
            snprintf(err.msg, sizeof err.msg, "placeholder without a valid \"num\"");
        }
    } else if (json_is_string(arg)) {
        /* JSON text (older clients' json.dumps) */
        json_error_t je;
        json_t *j = json_loadb(json_string_value(arg), json_string_length(arg), JSON_REJECT_DUPLICATES, &je);
        if (!j)
            snprintf(err.msg, sizeof err.msg, "malformed JSON: %s", je.text);
        else if ((rc = sio_json_to_msgpack(j, m, &e, &err)) == 0)
            handle_request(ss, ifm_enc_data(&e), ifm_enc_size(&e));
        json_decref(j);
    } else if (json_is_object(arg) && (rc = sio_json_to_msgpack(arg, m, &e, &err)) == 0) {
        handle_request(ss, ifm_enc_data(&e), ifm_enc_size(&e));
    } else if (!err.msg[0]) {
        snprintf(err.msg, sizeof err.msg, "the argument must be msgpack bytes, a JSON string or an object");
    }
    if (rc) {
        IFM_WARN("client=%s socket.io request refused: %s", who(ss->cl->name, buf, sizeof buf), err.msg);
        tell(ss->cl, NULL, "error", err.msg, NULL);
    }
    ifm_enc_free(&e);
}

static void on_message(sio_sess *ss, sio_msg *m)
{
    switch (m->pkt.type) {
    case SIO_CONNECT:
        on_connect(ss, m);
        break;
    case SIO_DISCONNECT:
        if (ss->cl) {
            char buf[IFM_NAME_MAX * 4 + 4];
            IFM_INFO("client=%s socket.io socket disconnected (session %s)", who(ss->cl->name, buf, sizeof buf),
                     ss->sid);
            client_detach(ss);
        }
        break;
    case SIO_EVENT:
    case SIO_BINARY_EVENT:
        on_event(ss, m);
        break;
    default:
        break; /* acks of nothing we asked, errors: nothing to do */
    }
}

/* A POST's payload. Returns 0, or -1 with the reason of the first malformed
 * packet (the session is then closed by the caller). */
static int post_payload(sio_sess *ss, const char *body, size_t len, bool *close, sio_err *err)
{
    size_t off = 0;
    eio_packet p;
    int rc;
    while ((rc = eio_next(body, len, &off, &p, err)) == 1) {
        sio_msg m;
        int got = 0;
        switch (p.type) {
        case 'b':
            got = sio_asm_binary(&ss->as, p.bin, p.binlen, &m, err);
            p.bin = NULL;
            break;
        case '1':
            *close = true;
            break;
        case '2': { /* a client-sent PING (Engine.IO v3 habit): answer it */
            char *pong = malloc(p.len + 2);
            if (pong) {
                pong[0] = '3';
                memcpy(pong + 1, p.data, p.len);
                pong[p.len + 1] = '\0';
            }
            sess_push(ss, pong);
            break;
        }
        case '3':
            ss->pong_due = false;
            break;
        case '4':
            got = sio_asm_text(&ss->as, p.data, p.len, &m, err);
            break;
        default:
            break; /* '0' open, '5' upgrade, '6' noop: nothing to do */
        }
        eio_packet_free(&p);
        if (got < 0)
            return -1;
        if (got == 1) {
            on_message(ss, &m);
            sio_msg_free(&m);
        }
    }
    return rc < 0 ? -1 : 0;
}

/* ---- HTTP ---- */

static enum MHD_Result eio_error(http_req *r, unsigned code, const char *message)
{
    return http_reply_json(r, 400, json_pack("{s:I, s:s}", "code", (json_int_t)code, "message", message));
}

enum MHD_Result sio_serve(http_req *r)
{
    http_srv *s = r->srv;
    const char *eio = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "EIO");
    const char *transport = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "transport");
    const char *sid = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "sid");
    bool get = strcmp(r->method, MHD_HTTP_METHOD_GET) == 0;
    r->ctype = "text/plain; charset=UTF-8";
    if (!eio || strcmp(eio, "4") != 0)
        return eio_error(r, 5, "Unsupported protocol version (this is Engine.IO 4)");
    if (!transport || strcmp(transport, "polling") != 0)
        return eio_error(r, 0, "Transport unknown (only polling is offered)");
    if (s->stopping)
        return http_reply_error(r, 503, "icefarm-http is shutting down");
    if (!sid) {
        if (!get)
            return eio_error(r, 3, "Bad request (a POST needs a sid)");
        if (s->sio->nsessions >= SIO_MAX_SESSIONS)
            return http_reply_error(r, 503, "too many socket.io sessions");
        sio_sess *ss = calloc(1, sizeof *ss);
        if (!ss)
            return http_reply_error(r, 500, "out of memory");
        ss->srv = s;
        rand_id(ss->sid, sizeof ss->sid);
        auth_hash(r, ss->auth, &ss->has_auth);
        ss->has_auth = ss->has_auth && r->user[0];
        snprintf(ss->user, sizeof ss->user, "%s", r->user);
        snprintf(ss->ip, sizeof ss->ip, "%s", r->ip);
        ss->next = s->sio->sessions;
        if (s->sio->sessions)
            s->sio->sessions->prev = ss;
        s->sio->sessions = ss;
        s->sio->nsessions++;
        ss->ping_timer = ifm_timer_add(s->loop, s->ping_interval_ms, on_ping, ss);
        char *open = eio_open_packet(ss->sid, s->ping_interval_ms, s->ping_timeout_ms, HTTP_SIO_BODY_MAX);
        if (!open)
            return http_reply_error(r, 500, "out of memory");
        IFM_INFO("socket.io session %s opened from %s%s%s", ss->sid, r->ip, r->user[0] ? " as " : "", r->user);
        r->status = 200;
        return http_reply_text(r, 200, open);
    }
    sio_sess *ss = sess_find(s, sid);
    if (!ss || (ss->user[0] && strcmp(ss->user, r->user) != 0))
        return eio_error(r, 1, "Session ID unknown");
    if (r->user[0] && !ss->has_auth) { /* re-authenticated: bind the new header */
        auth_hash(r, ss->auth, &ss->has_auth);
    }
    if (ss->cl)
        snprintf(r->client, sizeof r->client, "%s", ss->cl->name);
    if (get) {
        if (ss->get) {
            sess_close(ss, "two GETs at once");
            return eio_error(r, 3, "Bad request (overlapping GET)");
        }
        if (ss->nout) {
            ss->get = r;
            r->sio = ss;
            r->state = REQ_SIO_HOLD;
            MHD_suspend_connection(r->conn);
            answer_get(ss);
            return MHD_YES;
        }
        ss->get = r;
        r->sio = ss;
        r->state = REQ_SIO_HOLD;
        MHD_suspend_connection(r->conn);
        return MHD_YES;
    }
    bool close = false;
    sio_err err = { "" };
    if (post_payload(ss, r->body ? r->body : "", r->len, &close, &err)) {
        char buf[IFM_NAME_MAX * 4 + 4];
        IFM_WARN("client=%s socket.io session %s from %s: malformed payload: %s",
                 ss->cl ? who(ss->cl->name, buf, sizeof buf) : "-", ss->sid, r->ip, err.msg);
        sess_close(ss, "malformed payload");
        return http_reply_error(r, 400, "malformed Engine.IO payload: %s", err.msg);
    }
    if (close)
        sess_close(ss, "closed by the client");
    r->ctype = "text/html";
    return http_reply_text(r, 200, dupstr("ok"));
}

int sio_init(http_srv *s)
{
    s->sio = calloc(1, sizeof *s->sio);
    if (!s->sio)
        return -1;
    ifm_mqtt_on_refused(s->mqtt, on_refused, s);
    return ifm_mqtt_subscribe(s->mqtt, "icefarm/farm/available", 1, on_available, s);
}

void sio_close_all(http_srv *s)
{
    if (!s->sio)
        return;
    while (s->sio->sessions)
        sess_close(s->sio->sessions, "icefarm-http is shutting down");
}

void sio_free(http_srv *s)
{
    if (!s->sio)
        return;
    while (s->sio->sessions)
        sess_free(s->sio->sessions);
    while (s->sio->clients)
        client_free(s->sio->clients);
    free(s->sio);
    s->sio = NULL;
}
