/* The documented control endpoints: strict argument checks (a wrong type or a
 * missing field is a 400 naming the field, never a 500), one MQTT request to
 * icefarm-ctl acting for the caller's name, and the old JSON shapes back. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/crypto.h>

#include "http.h"
#include "icefarm/log.h"

typedef enum {
    SHAPE_AMOUNT,
    SHAPE_SERIALS,
    SHAPE_LEASES,
    SHAPE_STATUS,
    SHAPE_LOCAL /* answered by the shim itself (/log) */
} reply_shape;

enum {
    F_NAME = 1,      /* name: the acting client */
    F_SERIALS = 2,   /* serials: list of strings */
    F_AMOUNT = 4,    /* amount: integer */
    F_KIND = 8,      /* kind: string, required */
    F_KIND_OPT = 16, /* kind: string, optional filter */
    F_ARGS = 32,     /* args: object, optional */
    F_DURATION = 64, /* duration_s: integer, optional (an extension) */
    F_WAIT = 128,    /* wait_ms: integer, optional (an extension) */
    F_NAME_OPT = 256 /* name: optional (the documented /reboot and /delete take serials only) */
};

struct endpoint {
    const char *path;
    ifm_verb verb;
    unsigned fields;
    reply_shape shape;
};

static const struct endpoint endpoints[] = {
    { "/available", IFM_VERB_AVAILABLE, F_KIND_OPT, SHAPE_AMOUNT },
    { "/devices", IFM_VERB_DEVICES, F_KIND_OPT, SHAPE_SERIALS },
    { "/reserve", IFM_VERB_RESERVE, F_NAME | F_AMOUNT | F_KIND | F_ARGS | F_DURATION | F_WAIT, SHAPE_LEASES },
    { "/reserveserials", IFM_VERB_RESERVE_SERIALS, F_NAME | F_SERIALS | F_KIND | F_ARGS | F_DURATION, SHAPE_LEASES },
    { "/extend", IFM_VERB_EXTEND, F_NAME | F_SERIALS | F_DURATION, SHAPE_SERIALS },
    { "/extendall", IFM_VERB_EXTEND_ALL, F_NAME | F_DURATION, SHAPE_SERIALS },
    { "/end", IFM_VERB_END, F_NAME | F_SERIALS, SHAPE_SERIALS },
    { "/endall", IFM_VERB_END_ALL, F_NAME, SHAPE_SERIALS },
    { "/reboot", IFM_VERB_REBOOT, F_NAME_OPT | F_SERIALS, SHAPE_SERIALS },
    { "/delete", IFM_VERB_DELETE, F_NAME_OPT | F_SERIALS, SHAPE_SERIALS },
    { "/status", IFM_VERB_STATUS, 0, SHAPE_STATUS },
    { "/log", IFM_VERB_COUNT, 0, SHAPE_LOCAL },
};

const struct endpoint *api_find(const char *path)
{
    for (size_t i = 0; i < sizeof endpoints / sizeof *endpoints; i++)
        if (strcmp(path, endpoints[i].path) == 0)
            return &endpoints[i];
    return NULL;
}

/* ---- argument checks: 0 found, 1 absent (optional), -1 error in err ---- */

typedef struct {
    char msg[300];
} argerr;

static int get_field(json_t *args, const char *key, bool required, json_type want, const char *what, json_t **out,
                     argerr *err)
{
    json_t *v = json_object_get(args, key);
    if (!v || (json_is_null(v) && !required)) {
        if (!required)
            return 1;
        snprintf(err->msg, sizeof err->msg, "missing field \"%s\" (%s)", key, what);
        return -1;
    }
    if (json_typeof(v) != want) {
        snprintf(err->msg, sizeof err->msg, "field \"%s\" must be %s, not %s", key, what, ifm_json_type_name(v));
        return -1;
    }
    *out = v;
    return 0;
}

/* A client name as control accepts it: one MQTT topic level (names.h, the one
 * rule: it refuses control characters, C1 ones included, itself). */
bool api_name_ok(const char *name)
{
    return ifm_name_valid(name, IFM_NAME_MAX);
}

/* 0 found, 1 absent (optional only), -1 error. */
static int get_name(json_t *args, bool required, const char **name, argerr *err)
{
    json_t *v;
    int rc = get_field(args, "name", required, JSON_STRING, "a string", &v, err);
    if (rc)
        return rc;
    *name = json_string_value(v);
    if (!api_name_ok(*name)) {
        snprintf(err->msg, sizeof err->msg,
                 "field \"name\" must be 1 to %d bytes without '/', '+', '#', control characters or a "
                 "leading '$'",
                 IFM_NAME_MAX - 1);
        return -1;
    }
    return 0;
}

static int get_uint(json_t *args, const char *key, bool required, uint64_t min, uint64_t max, uint64_t *out,
                    argerr *err)
{
    json_t *v;
    int rc = get_field(args, key, required, JSON_INTEGER, "an integer", &v, err);
    if (rc)
        return rc;
    json_int_t n = json_integer_value(v);
    if (n < 0 || (uint64_t)n < min || (uint64_t)n > max) {
        snprintf(err->msg, sizeof err->msg, "field \"%s\" must be between %llu and %llu, not %lld", key,
                 (unsigned long long)min, (unsigned long long)max, (long long)n);
        return -1;
    }
    *out = (uint64_t)n;
    return 0;
}

static int get_serials(json_t *args, ifm_ctl_req *req, argerr *err)
{
    json_t *v;
    if (get_field(args, "serials", true, JSON_ARRAY, "a list of serials", &v, err))
        return -1;
    size_t n = json_array_size(v);
    if (n > IFM_MAX_SERIALS) {
        snprintf(err->msg, sizeof err->msg, "field \"serials\" lists %zu serials; at most %d at once", n,
                 IFM_MAX_SERIALS);
        return -1;
    }
    req->serials = calloc(n ? n : 1, sizeof *req->serials);
    if (!req->serials) {
        snprintf(err->msg, sizeof err->msg, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_string(e)) {
            snprintf(err->msg, sizeof err->msg, "field \"serials\" must be a list of strings; serials[%zu] is %s", i,
                     ifm_json_type_name(e));
            return -1;
        }
        const char *sv = json_string_value(e);
        if (!ifm_serial_valid(sv)) {
            snprintf(err->msg, sizeof err->msg, "serials[%zu] is not a valid serial: \"%.64s\"", i, sv);
            return -1;
        }
        snprintf(req->serials[i], IFM_SERIAL_MAX, "%s", sv);
    }
    req->nserials = n;
    return 0;
}

static int get_kind(json_t *args, bool required, ifm_ctl_req *req, argerr *err)
{
    json_t *v;
    int rc = get_field(args, "kind", required, JSON_STRING, "a string", &v, err);
    if (rc)
        return rc;
    const char *k = json_string_value(v);
    /* control's rule for a requested kind (ifm_ctl_req_decode): MQTT UTF-8, no control characters */
    if (!*k || strlen(k) >= IFM_KIND_MAX || !ifm_mqtt_utf8_valid(k, strlen(k))) {
        snprintf(err->msg, sizeof err->msg, "field \"kind\" must be 1 to %d printable bytes", IFM_KIND_MAX - 1);
        return -1;
    }
    snprintf(req->kind, sizeof req->kind, "%s", k);
    return 0;
}

static int get_args(json_t *args, ifm_enc *enc, bool *have, argerr *err)
{
    json_t *v;
    int rc = get_field(args, "args", false, JSON_OBJECT, "an object", &v, err);
    if (rc)
        return rc < 0 ? -1 : 0;
    if (ifm_json_to_msgpack(v, enc)) {
        snprintf(err->msg, sizeof err->msg, "field \"args\" cannot be encoded");
        return -1;
    }
    if (ifm_enc_size(enc) > IFM_MAX_ARGS) {
        snprintf(err->msg, sizeof err->msg, "field \"args\" is larger than %d bytes", IFM_MAX_ARGS);
        return -1;
    }
    *have = true;
    return 0;
}

static int check_args(const struct endpoint *ep, json_t *args, ifm_ctl_req *req, const char **name, ifm_enc *renc,
                      bool *have_args, argerr *err)
{
    unsigned f = ep->fields;
    uint64_t u;
    if ((f & (F_NAME | F_NAME_OPT)) && get_name(args, (f & F_NAME) != 0, name, err) < 0)
        return -1;
    if (f & F_AMOUNT) {
        if (get_uint(args, "amount", true, 1, IFM_MAX_SERIALS, &u, err))
            return -1;
        req->amount = (uint32_t)u;
    }
    if ((f & F_SERIALS) && get_serials(args, req, err))
        return -1;
    if ((f & (F_KIND | F_KIND_OPT)) && get_kind(args, (f & F_KIND) != 0, req, err) < 0)
        return -1;
    if ((f & F_ARGS) && get_args(args, renc, have_args, err))
        return -1;
    if ((f & F_DURATION) && get_uint(args, "duration_s", false, 0, 365u * 86400u, &req->duration_s, err) < 0)
        return -1;
    if ((f & F_WAIT) && get_uint(args, "wait_ms", false, 0, 3600u * 1000u, &req->wait_ms, err) < 0)
        return -1;
    return 0;
}

/* --auth broker: the authenticated user is the acting client. A "name" may be
 * omitted; one that names somebody else is a 403. Returns 0, or the status of
 * the error in err. */
int api_acting_user(http_req *r, json_t *args, char *err, size_t errlen)
{
    json_t *v = json_object_get(args, "name");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v)) {
            snprintf(err, errlen, "field \"name\" must be a string, not %s", ifm_json_type_name(v));
            return 400;
        }
        if (json_string_length(v) != strlen(r->user) || strcmp(json_string_value(v), r->user) != 0) {
            snprintf(err, errlen, "you are %s; \"name\" must be omitted or your own user name", r->user);
            return 403;
        }
    }
    return 0;
}

/* ---- control's reply -> the old JSON shapes ---- */

static int advertised(http_req *r, char *ip, size_t cap);

static json_t *shape_reply(http_srv *s, http_req *r, const msgpack_object *root)
{
    switch (r->ep->shape) {
    case SHAPE_AMOUNT: {
        const msgpack_object *a = ifm_map_get(root, "amount");
        return a ? json_pack("{s:o}", "amount", ifm_json_from_msgpack(a)) : NULL;
    }
    case SHAPE_SERIALS: {
        const msgpack_object *a = ifm_map_get(root, "serials");
        return a && a->type == MSGPACK_OBJECT_ARRAY ? ifm_json_from_msgpack(a) : NULL;
    }
    case SHAPE_LOCAL:
        return NULL;
    case SHAPE_LEASES: {
        const msgpack_object *a = ifm_map_get(root, "serials");
        if (!a || a->type != MSGPACK_OBJECT_ARRAY)
            return NULL;
        char ip[IFM_NAME_MAX * 3 + 400];
        int port = advertised(r, ip, sizeof ip);
        json_t *out = json_array();
        for (uint32_t i = 0; out && i < a->via.array.size; i++) {
            const msgpack_object *l = &a->via.array.ptr[i];
            if (l->type != MSGPACK_OBJECT_MAP)
                continue;
            json_t *o = json_object();
            const msgpack_object *v;
            if ((v = ifm_map_get(l, "serial")))
                json_object_set_new(o, "serial", ifm_json_from_msgpack(v));
            /* The old API named the worker's socket.io server: this shim's
             * socket.io face serves that role now. */
            json_object_set_new(o, "ip", json_string(ip));
            json_object_set_new(o, "serverport", json_integer(port));
            if ((v = ifm_map_get(l, "worker")))
                json_object_set_new(o, "worker", ifm_json_from_msgpack(v));
            if ((v = ifm_map_get(l, "until")))
                json_object_set_new(o, "until", ifm_json_from_msgpack(v));
            json_array_append_new(out, o);
        }
        return out;
    }
    case SHAPE_STATUS: {
        json_t *o = ifm_json_from_msgpack(root);
        json_object_del(o, "v");
        json_object_del(o, "ok");
        json_object_del(o, "code");
        return o;
    }
    }
    return NULL;
}

/* A host as a URL may carry it: a name or IPv4 address, or [IPv6]. */
static bool host_ok(const char *h, size_t n)
{
    if (n == 0 || n > 255)
        return false;
    if (h[0] == '[')
        return n > 2 && h[n - 1] == ']' && strspn(h + 1, "0123456789abcdefABCDEF:.%") == n - 2;
    return strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") == n;
}

/* HOST[:PORT] into host/port; false if it is not one. */
static bool split_host(const char *src, char *host, size_t cap, int *port)
{
    const char *colon = src[0] == '[' ? strchr(src, ']') : strrchr(src, ':');
    size_t hn = strlen(src);
    *port = 80;
    if (src[0] == '[') {
        if (!colon)
            return false;
        hn = (size_t)(colon - src) + 1;
        colon = colon[1] == ':' ? colon + 1 : colon[1] ? NULL : colon + 1;
        if (!colon)
            return false;
    } else if (colon) {
        hn = (size_t)(colon - src);
    }
    if (colon && *colon == ':') {
        char *end;
        long p = strtol(colon + 1, &end, 10);
        if (*end || p < 1 || p > 65535)
            return false;
        *port = (int)p;
    }
    if (!host_ok(src, hn) || hn >= cap)
        return false;
    memcpy(host, src, hn);
    host[hn] = '\0';
    return true;
}

/* The "ip" and "serverport" of a /reserve reply: where this shim's socket.io
 * face is reached (--advertise, else the request's Host header, else the listen
 * address). With --auth broker the ip carries user:TOKEN@ so the old client's
 * worker socket (which has only ip and port) is authenticated too. */
static int advertised(http_req *r, char *ip, size_t cap)
{
    http_srv *s = r->srv;
    char host[300];
    int port = 80;
    const char *hdr = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    if (!(s->advertise[0] && split_host(s->advertise, host, sizeof host, &port)) &&
        !(hdr && split_host(hdr, host, sizeof host, &port)) &&
        !split_host(s->listen_url + strlen("http://"), host, sizeof host, &port))
        snprintf(host, sizeof host, "127.0.0.1");
    char token[65];
    if (!r->user[0] || auth_session_token(s, r->user, token)) {
        snprintf(ip, cap, "%s", host);
        return port;
    }
    /* userinfo: the user name percent-encoded (names may hold '@', ':', ...) */
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)r->user; *p && o + 4 < cap; p++) {
        if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~", *p) && *p)
            ip[o++] = (char)*p;
        else
            o += (size_t)snprintf(ip + o, cap - o, "%%%02X", *p);
    }
    snprintf(ip + o, cap - o, ":%s@%s", token, host);
    OPENSSL_cleanse(token, sizeof token);
    return port;
}

static void unlink_call(http_call *c)
{
    http_srv *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

void api_call_done(http_call *c)
{
    unlink_call(c);
    if (c->req)
        c->req->call = NULL;
    free(c);
}

static int send_call(http_req *r, const char *acting, const ifm_ctl_req *req, const void *args, size_t args_len);

/* The documented /reboot without a name (anonymous farm): one request per
 * holder, one after the other; r->plan holds the groups still to send
 * ({"client": name, "serials": [...]}), r->acc the serials done so far. */
/* Sends the next group of r->plan: 1 sent, 0 none left, -1 not sent. */
static int plan_next(http_req *r)
{
    json_t *g = json_array_get(r->plan, 0);
    if (!g)
        return 0;
    json_incref(g);
    json_array_remove(r->plan, 0);
    ifm_ctl_req req;
    memset(&req, 0, sizeof req);
    req.verb = r->ep->verb;
    json_t *serials = json_object_get(g, "serials");
    req.nserials = json_array_size(serials);
    req.serials = calloc(req.nserials ? req.nserials : 1, sizeof *req.serials);
    int rc = -1;
    if (req.serials) {
        for (size_t i = 0; i < req.nserials; i++)
            snprintf(req.serials[i], IFM_SERIAL_MAX, "%s", json_string_value(json_array_get(serials, i)));
        rc = send_call(r, json_string_value(json_object_get(g, "client")), &req, NULL, 0);
    }
    ifm_ctl_req_free(&req);
    json_decref(g);
    return rc ? -1 : 1;
}

static void on_reply(ifm_mqtt *m, int status, const ifm_mqtt_msg *reply, void *arg)
{
    http_call *c = arg;
    http_req *r = c->req;
    http_srv *s = c->srv;
    api_call_done(c);
    if (!r)
        return; /* the HTTP request is gone */
    const char *partial = r->acc && json_array_size(r->acc) ? " (the boards before were rebooted: see the log)" : "";
    if (status == -ETIMEDOUT) {
        http_finish_error(r, 503, "control did not answer within %llu ms (is icefarm-ctl running?)%s",
                          (unsigned long long)(s->timeout_ms + r->wait_ms), partial);
        return;
    }
    if (status) {
        http_finish_error(r, 503, "lost the connection to the broker before control answered%s", partial);
        return;
    }
    ifm_doc doc;
    ifm_err err = { "" };
    ifm_reply_status st;
    if (ifm_doc_parse(&doc, reply->payload, reply->len, &err) || ifm_reply_status_decode(&doc, &st, &err)) {
        IFM_WARN("malformed reply from control to %s: %s", r->path, err.msg);
        http_finish_error(r, 502, "malformed reply from control: %s", err.msg);
    } else if (!st.ok) {
        unsigned code = st.code >= 400 && st.code <= 599 ? st.code : 502;
        http_finish_error(r, code, "%s%s", st.error[0] ? st.error : "control refused the request", partial);
    } else {
        json_t *body = shape_reply(s, r, doc.root);
        if (body && r->acc) {
            json_array_extend(r->acc, body);
            json_decref(body);
            body = NULL;
            int more = plan_next(r);
            if (more == 0) {
                body = r->acc;
                r->acc = NULL;
                http_finish(r, 200, body);
            } else if (more < 0) {
                http_finish_error(r, 503, "control unreachable: not connected to the MQTT broker%s", partial);
            }
        } else if (body) {
            http_finish(r, 200, body);
        } else {
            http_finish_error(r, 502, "control's reply to %s lacks the expected fields", r->path);
        }
    }
    ifm_doc_free(&doc);
}

/* Sends one request to control acting for `acting` (NULL: the shim itself);
 * the reply finishes r (or continues its plan). Returns 0, or -1 if it could
 * not be sent. */
static int send_call(http_req *r, const char *acting, const ifm_ctl_req *req, const void *args, size_t args_len)
{
    http_srv *s = r->srv;
    char topic[IFM_TOPIC_MAX];
    ifm_topic_ctl_req(topic, sizeof topic, ifm_verb_name(req->verb));
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_ctl_req_encode(&e, req, args, args_len);
    http_call *c = calloc(1, sizeof *c);
    if (!c) {
        ifm_enc_free(&e);
        return -1;
    }
    c->srv = s;
    c->req = r;
    c->next = s->calls;
    if (s->calls)
        s->calls->prev = c;
    s->calls = c;
    int sent = s->mqtt && !s->stopping
        ? ifm_mqtt_request_as(s->mqtt, acting ? acting : ifm_mqtt_name(s->mqtt), topic, ifm_enc_data(&e),
                              ifm_enc_size(&e), s->timeout_ms + req->wait_ms, on_reply, c)
        : -1;
    ifm_enc_free(&e);
    if (sent) {
        c->req = NULL;
        api_call_done(c);
        return -1;
    }
    r->call = c;
    r->waits = req->verb == IFM_VERB_RESERVE && req->wait_ms;
    if (r->waits) {
        ifm_mqtt_last_corr(s->mqtt, r->corr, sizeof r->corr);
        snprintf(r->acting, sizeof r->acting, "%s", acting ? acting : ifm_mqtt_name(s->mqtt));
    }
    return 0;
}

static void on_cancel_reply(ifm_mqtt *m, int status, const ifm_mqtt_msg *reply, void *arg)
{
}

void api_unwatch_caller(http_req *r)
{
    if (r->peer_watched)
        ifm_loop_unwatch(r->srv->loop, r->peer_fd);
    r->peer_watched = false;
}

/* A waiting reserve's caller hung up (MHD does not watch a suspended
 * connection): the wait is cancelled at control, so no board is granted to
 * nobody, and the request ends. Bytes from the caller (pipelining) are not a
 * hang-up; the watch just stops. */
static void on_caller(ifm_loop *loop, int fd, int events, void *arg)
{
    http_req *r = arg;
    http_srv *s = r->srv;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    api_unwatch_caller(r);
    if (n > 0 || r->state != REQ_WAITING)
        return;
    ifm_ctl_req cancel = { .verb = IFM_VERB_CANCEL, .corr = r->corr, .corr_len = sizeof r->corr };
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_ctl_req_encode(&e, &cancel, NULL, 0);
    char topic[IFM_TOPIC_MAX];
    ifm_topic_ctl_req(topic, sizeof topic, "cancel");
    if (s->mqtt &&
        ifm_mqtt_request_as(s->mqtt, r->acting, topic, ifm_enc_data(&e), ifm_enc_size(&e), s->timeout_ms,
                            on_cancel_reply, NULL) == 0)
        IFM_INFO("client=%s the caller of a waiting reserve went away: cancelled at control", r->acting);
    ifm_enc_free(&e);
    if (r->call) {
        r->call->req = NULL; /* its 409 goes nowhere */
        r->call = NULL;
    }
    http_finish_error(r, 499, "the caller went away");
}

/* Groups the serials of a name-less /reboot by their lease holder (from the
 * retained icefarm/lease/+ the shim follows). A free or unknown board goes in a
 * group of its own sent as the shim itself, so control says why it refuses. */
static json_t *plan_for_holders(http_req *r, const ifm_ctl_req *req)
{
    json_t *plan = json_array();
    for (size_t i = 0; plan && i < req->nserials; i++) {
        const char *holder = events_holder(r->srv, req->serials[i]);
        char buf[IFM_NAME_MAX * 4 + 4];
        if (holder)
            IFM_INFO("serial=%s client=%s reboot without a name from %s: acting for the holder", req->serials[i],
                     http_log_name(holder, buf, sizeof buf), r->ip);
        json_t *g = NULL;
        for (size_t k = 0; holder && k < json_array_size(plan); k++) {
            json_t *cand = json_array_get(plan, k);
            const char *cl = json_string_value(json_object_get(cand, "client"));
            if (cl && strcmp(cl, holder) == 0)
                g = cand;
        }
        if (!g) {
            g = json_pack("{s:o, s:[]}", "client", holder ? json_string(holder) : json_null(), "serials");
            if (!g || json_array_append_new(plan, g)) {
                json_decref(plan);
                return NULL;
            }
        }
        json_array_append_new(json_object_get(g, "serials"), json_string(req->serials[i]));
    }
    return plan;
}

/* POST /log {name?, logs: [[level, message], ...]}: what the old client's
 * RemoteLogger sends every 30 s. Each well-formed entry becomes one log line
 * (levels as Python's logging: 40+ error, 30+ warning, else info); other
 * entries are counted and skipped. */
static enum MHD_Result serve_log(http_req *r, json_t *args)
{
    json_t *v = json_object_get(args, "name");
    if (v && !json_is_null(v) && (!json_is_string(v) || !api_name_ok(json_string_value(v))))
        return http_reply_error(r, 400, "field \"name\" must be a client name");
    if (v && json_is_string(v) && !r->user[0])
        snprintf(r->client, sizeof r->client, "%s", json_string_value(v));
    json_t *logs = json_object_get(args, "logs");
    if (!json_is_array(logs))
        return http_reply_error(r, 400, "field \"logs\" must be a list of [level, message] pairs, not %s",
                                logs ? ifm_json_type_name(logs) : "missing");
    size_t logged = 0, skipped = 0;
    char who[IFM_NAME_MAX * 4 + 4];
    for (size_t i = 0; i < json_array_size(logs); i++) {
        json_t *e = json_array_get(logs, i);
        json_t *lv = json_array_get(e, 0), *msg = json_array_get(e, 1);
        if (!json_is_array(e) || json_array_size(e) != 2 || !json_is_integer(lv) || !json_is_string(msg)) {
            skipped++;
            continue;
        }
        char line[1024];
        size_t n = 0;
        for (const char *p = json_string_value(msg); *p && n < sizeof line - 1; p++)
            line[n++] = (unsigned char)*p < ' ' || *p == 0x7f ? ' ' : *p;
        line[n] = '\0';
        json_int_t level = json_integer_value(lv);
        if (level >= 40)
            IFM_ERROR("remote log client=%s from %s: %s", http_log_name(r->client, who, sizeof who), r->ip, line);
        else if (level >= 30)
            IFM_WARN("remote log client=%s from %s: %s", http_log_name(r->client, who, sizeof who), r->ip, line);
        else
            IFM_INFO("remote log client=%s from %s: %s", http_log_name(r->client, who, sizeof who), r->ip, line);
        logged++;
    }
    return http_reply_json(r, 200,
                           json_pack("{s:I, s:I}", "logged", (json_int_t)logged, "skipped", (json_int_t)skipped));
}

enum MHD_Result api_serve(http_req *r, json_t *args)
{
    const struct endpoint *ep = r->ep;
    ifm_ctl_req req;
    memset(&req, 0, sizeof req);
    req.verb = ep->verb;
    const char *name = NULL;
    ifm_enc renc;
    ifm_enc_init(&renc);
    bool have_args = false;
    argerr err = { "" };
    enum MHD_Result rc;
    if (r->user[0]) {
        int st = api_acting_user(r, args, err.msg, sizeof err.msg);
        if (st) {
            rc = http_reply_error(r, (unsigned)st, "%s", err.msg);
            goto out;
        }
        if (json_object_set_new(args, "name", json_string(r->user))) {
            rc = http_reply_error(r, 500, "out of memory");
            goto out;
        }
    }
    if (ep->shape == SHAPE_LOCAL) {
        rc = serve_log(r, args);
        goto out;
    }
    if (check_args(ep, args, &req, &name, &renc, &have_args, &err)) {
        if (name)
            snprintf(r->client, sizeof r->client, "%s", name);
        rc = http_reply_error(r, 400, "%s", err.msg);
        goto out;
    }
    if (name)
        snprintf(r->client, sizeof r->client, "%s", name);
    else if (r->user[0])
        snprintf(r->client, sizeof r->client, "%s", r->user);
    r->wait_ms = req.wait_ms;
    int sent;
    if (!name && !r->user[0] && ep->verb == IFM_VERB_REBOOT) {
        /* The documented form: serials only. Acts for each board's holder. */
        r->plan = plan_for_holders(r, &req);
        r->acc = json_array();
        if (!r->plan || !r->acc) {
            rc = http_reply_error(r, 500, "out of memory");
            goto out;
        }
        int more = plan_next(r);
        if (more == 0) { /* "serials": [] */
            rc = http_reply_json(r, 200, json_array());
            goto out;
        }
        sent = more < 0 ? -1 : 0;
    } else {
        /* name-less /delete: as the shim itself, so only free boards (control
         * refuses a board somebody holds). */
        sent = send_call(r, r->user[0] ? r->user : name, &req, have_args ? ifm_enc_data(&renc) : NULL,
                         ifm_enc_size(&renc));
    }
    if (sent) {
        rc = http_reply_error(r, 503, "control unreachable: not connected to the MQTT broker");
        goto out;
    }
    r->state = REQ_WAITING;
    MHD_suspend_connection(r->conn);
    if (r->waits) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (ci && ci->connect_fd >= 0 && ifm_loop_watch(r->srv->loop, ci->connect_fd, IFM_READ, on_caller, r) == 0) {
            r->peer_fd = ci->connect_fd;
            r->peer_watched = true;
        }
    }
    rc = MHD_YES;
out:
    ifm_enc_free(&renc);
    ifm_ctl_req_free(&req);
    return rc;
}
