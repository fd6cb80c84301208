/* libmicrohttpd on the ifm_loop: external epoll mode, suspended connections for
 * requests waiting on MQTT, routing, argument parsing and the request log. */
#include <ctype.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#include "http.h"
#include "icefarm/grow.h"
#include "icefarm/log.h"

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- MHD on the loop ---- */

static void mhd_pump(http_srv *s);

static void on_mhd_timer(ifm_loop *loop, void *arg)
{
    http_srv *s = arg;
    s->mhd_timer = 0;
    mhd_pump(s);
}

static void on_mhd_fd(ifm_loop *loop, int fd, int events, void *arg)
{
    mhd_pump(arg);
}

/* Runs MHD once (it never blocks here) and re-arms the timer MHD asks for. */
static void mhd_pump(http_srv *s)
{
    if (!s->mhd)
        return;
    MHD_run(s->mhd);
    if (s->mhd_timer) {
        ifm_timer_cancel(s->loop, s->mhd_timer);
        s->mhd_timer = 0;
    }
    MHD_UNSIGNED_LONG_LONG ms;
    if (MHD_get_timeout(s->mhd, &ms) == MHD_YES)
        s->mhd_timer = ifm_timer_add(s->loop, ms, on_mhd_timer, s);
}

static void on_kick(ifm_loop *loop, void *arg)
{
    http_srv *s = arg;
    s->kick_timer = 0;
    for (http_req *r = s->reqs; r; r = r->next) {
        if (r->resume_pending) {
            r->resume_pending = false;
            MHD_resume_connection(r->conn);
        }
    }
    events_resume(s);
    mhd_pump(s);
}

void http_kick(http_srv *s)
{
    if (!s->kick_timer && s->mhd)
        s->kick_timer = ifm_timer_add(s->loop, 0, on_kick, s);
}

/* ---- responses ---- */

static enum MHD_Result queue_text(http_req *r, unsigned status, char *text, size_t len, const char *allow)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->ctype ? r->ctype : "application/json");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    if (r->challenge)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Basic realm=\"icefarm\"");
    if (r->retry_after) {
        char ra[16];
        snprintf(ra, sizeof ra, "%u", r->retry_after);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    enum MHD_Result rc = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    r->status = status;
    r->state = REQ_DONE;
    return rc;
}

/* JSON text with a trailing newline (friendlier on a terminal, still one JSON value). */
static char *dump(json_t *body, size_t *len)
{
    char *s = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(body);
    if (!s)
        s = strdup("{\"error\": \"out of memory\"}");
    if (!s)
        return NULL;
    size_t n = strlen(s);
    char *t = realloc(s, n + 2);
    if (!t) {
        free(s);
        return NULL;
    }
    t[n] = '\n';
    t[n + 1] = '\0';
    *len = n + 1;
    return t;
}

enum MHD_Result http_reply_json(http_req *r, unsigned status, json_t *body)
{
    r->ctype = NULL;
    size_t len = 0;
    char *text = dump(body, &len);
    return text ? queue_text(r, status, text, len, NULL) : MHD_NO;
}

static json_t *error_body(const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    json_t *s = json_string(msg);
    if (!s) /* the message quoted invalid UTF-8 */
        s = json_string("invalid request");
    return json_pack("{s:o}", "error", s);
}

enum MHD_Result http_reply_text(http_req *r, unsigned status, char *text)
{
    return text ? queue_text(r, status, text, strlen(text), NULL) : MHD_NO;
}

void http_finish_text(http_req *r, unsigned status, char *text, const char *ctype)
{
    if (r->state != REQ_SIO_HOLD || !text) {
        free(text);
        return;
    }
    r->ready_body = text;
    r->ready_status = status;
    r->ctype = ctype;
    r->state = REQ_READY;
    r->resume_pending = true;
    http_kick(r->srv);
}

enum MHD_Result http_reply_error(http_req *r, unsigned status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    json_t *body = error_body(fmt, ap);
    va_end(ap);
    return http_reply_json(r, status, body);
}

static enum MHD_Result reply_405(http_req *r, const char *allow)
{
    size_t len = 0;
    char *text = dump(json_pack("{s:s+}", "error", "method not allowed; use ", allow), &len);
    return text ? queue_text(r, MHD_HTTP_METHOD_NOT_ALLOWED, text, len, allow) : MHD_NO;
}

void http_finish(http_req *r, unsigned status, json_t *body)
{
    api_unwatch_caller(r);
    if (r->state != REQ_WAITING) {
        json_decref(body);
        return;
    }
    size_t len = 0;
    r->ready_body = dump(body, &len);
    r->ready_status = status;
    r->state = REQ_READY;
    r->resume_pending = true;
    http_kick(r->srv);
}

void http_finish_error(http_req *r, unsigned status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    json_t *body = error_body(fmt, ap);
    va_end(ap);
    http_finish(r, status, body);
}

void http_auth_finish(http_req *r, unsigned status, unsigned retry_after, bool challenge, const char *fmt, ...)
{
    if (r->state != REQ_AUTH)
        return;
    if (status) {
        va_list ap;
        va_start(ap, fmt);
        json_t *body = error_body(fmt, ap);
        va_end(ap);
        size_t len = 0;
        r->ready_body = dump(body, &len);
        r->ready_status = status;
        r->challenge = challenge;
        r->retry_after = retry_after;
        r->state = REQ_READY;
    } else {
        r->state = REQ_AUTHED;
    }
    r->resume_pending = true;
    http_kick(r->srv);
}

/* ---- arguments: ?json=..., or the body (JSON, or a form with json=...) ---- */

static bool blank(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isspace((unsigned char)p[i]))
            return false;
    return true;
}

/* Returns the arguments object, or NULL after queueing a 400. */
static json_t *parse_args(http_req *r, enum MHD_Result *rc)
{
    const char *q = NULL;
    size_t qlen = 0;
    if (MHD_lookup_connection_value_n(r->conn, MHD_GET_ARGUMENT_KIND, "json", 4, &q, &qlen) != MHD_YES)
        q = NULL;
    const char *text = q;
    size_t len = qlen;
    const char *where = "?json=";
    if (r->len && !blank(r->body, r->len)) {
        if (q) {
            *rc = http_reply_error(r, 400, "give the arguments either as ?json= or as the request body, not both");
            return NULL;
        }
        text = r->body;
        len = r->len;
        where = "the request body";
        /* An HTML form posting json=<urlencoded JSON>. */
        const char *ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        if (ct && strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0 && len > 5 &&
            memcmp(text, "json=", 5) == 0) {
            r->body[r->len] = '\0';
            for (char *p = r->body + 5; *p; p++)
                if (*p == '+')
                    *p = ' ';
            len = MHD_http_unescape(r->body + 5);
            text = r->body + 5;
        }
    }
    if (!text || blank(text, len))
        return json_object();
    json_error_t je;
    json_t *args = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!args) {
        *rc = http_reply_error(r, 400, "malformed JSON in %s: %s (line %d, column %d)", where, je.text, je.line,
                               je.column);
        return NULL;
    }
    if (!json_is_object(args)) {
        *rc = http_reply_error(r, 400, "the arguments must be a JSON object, not %s", ifm_json_type_name(args));
        json_decref(args);
        return NULL;
    }
    return args;
}

/* ---- the access handler ---- */

static http_req *req_new(http_srv *s, struct MHD_Connection *conn, const char *url, const char *method)
{
    http_req *r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup(url))) {
        free(r);
        return NULL;
    }
    r->srv = s;
    r->conn = conn;
    r->t0 = now_us();
    snprintf(r->method, sizeof r->method, "%s", method);
    snprintf(r->ip, sizeof r->ip, "?");
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        socklen_t salen = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
        getnameinfo(sa, salen, r->ip, sizeof r->ip, NULL, 0, NI_NUMERICHOST);
    }
    r->next = s->reqs;
    if (s->reqs)
        s->reqs->prev = r;
    s->reqs = r;
    return r;
}

/* Serves an authenticated (or --auth none) request whose route is known. */
static enum MHD_Result serve(http_req *r)
{
    enum MHD_Result rc = MHD_NO;
    if (r->user[0])
        snprintf(r->client, sizeof r->client, "%s", r->user);
    if (r->route == ROUTE_TOKEN)
        return auth_token_serve(r);
    if (r->route == ROUTE_SIO)
        return sio_serve(r);
    if (r->route == ROUTE_METRICS)
        return http_metrics_serve(r);
    json_t *args = parse_args(r, &rc);
    if (!args)
        return rc;
    rc = r->route == ROUTE_EVENTS ? events_serve(r, args) : api_serve(r, args);
    json_decref(args);
    return rc;
}

/* Paths and methods first (the page needs no credentials; 404 and 405 say
 * nothing about the farm), then --auth broker's credentials, then the arguments. */
static enum MHD_Result route(http_req *r)
{
    bool get = strcmp(r->method, MHD_HTTP_METHOD_GET) == 0;
    bool post = strcmp(r->method, MHD_HTTP_METHOD_POST) == 0;
    bool head = strcmp(r->method, MHD_HTTP_METHOD_HEAD) == 0;
    bool auth = r->srv->auth_mode == AUTH_BROKER;
    if (page_match(r->path)) {
        r->route = ROUTE_PAGE;
        return get || head ? page_serve(r) : reply_405(r, "GET, HEAD");
    }
    if (strcmp(r->path, "/socket.io/") == 0 || strcmp(r->path, "/socket.io") == 0) {
        if (!get && !post)
            return reply_405(r, "GET, POST");
        r->route = ROUTE_SIO;
        if (auth && sio_session_authorized(r))
            return serve(r);
    } else if (strcmp(r->path, "/events") == 0) {
        if (!get)
            return reply_405(r, "GET");
        r->route = ROUTE_EVENTS;
    } else if (strcmp(r->path, "/metrics") == 0) {
        if (!get && !head)
            return reply_405(r, "GET, HEAD");
        r->route = ROUTE_METRICS;
    } else if (strcmp(r->path, "/token") == 0 && auth) {
        if (!post)
            return reply_405(r, "POST");
        r->route = ROUTE_TOKEN;
    } else {
        r->ep = api_find(r->path);
        if (!r->ep)
            return http_reply_error(r, 404, "unknown path %s", r->path);
        if (!get && !post)
            return reply_405(r, "GET, POST");
        r->route = ROUTE_API;
    }
    if (auth) {
        enum MHD_Result rc = MHD_NO;
        if (auth_begin(r, &rc) != AUTH_OK)
            return rc;
    }
    return serve(r);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    http_srv *s = cls;
    http_req *r = *con_cls;
    if (!r) {
        r = req_new(s, conn, url, method);
        if (!r)
            return MHD_NO;
        *con_cls = r;
        r->body_max = strncmp(url, "/socket.io", 10) == 0 ? HTTP_SIO_BODY_MAX : HTTP_BODY_MAX;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > r->body_max)
            return http_reply_error(r, MHD_HTTP_CONTENT_TOO_LARGE, "request body larger than %zu bytes", r->body_max);
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->state != REQ_NEW)
            return MHD_YES;
        if (r->len + n > r->body_max) {
            r->len = r->body_max + 1; /* too large: keep reading, answer 413 at the end */
            return MHD_YES;
        }
        if (r->len + n + 1 > r->cap) {
            char *b = ifm_grow_bytes(r->body, &r->cap, r->len + n + 1, 1024, 0);
            if (!b)
                return MHD_NO;
            r->body = b;
        }
        memcpy(r->body + r->len, upload_data, n);
        r->len += n;
        r->body[r->len] = '\0';
        return MHD_YES;
    }
    switch (r->state) {
    case REQ_NEW:
        if (r->len > r->body_max)
            return http_reply_error(r, MHD_HTTP_CONTENT_TOO_LARGE, "request body larger than %zu bytes", r->body_max);
        return route(r);
    case REQ_AUTHED:
        return serve(r);
    case REQ_READY: {
        char *text = r->ready_body;
        r->ready_body = NULL;
        if (!text)
            return MHD_NO;
        return queue_text(r, r->ready_status, text, strlen(text), NULL);
    }
    case REQ_AUTH:
    case REQ_WAITING:
    case REQ_SIO_HOLD:
    case REQ_DONE:
        return MHD_YES;
    }
    return MHD_NO;
}

/* ---- the request log ---- */

/* The client name as a log token: quoted and escaped when it needs to be. */
const char *http_log_name(const char *name, char *out, size_t cap)
{
    if (!*name)
        return "-";
    bool plain = true;
    for (const char *p = name; *p; p++)
        if (*p == '"' || *p == '\\' || (unsigned char)*p <= ' ' || *p == 0x7f)
            plain = false;
    if (plain)
        return name;
    size_t o = 0;
    out[o++] = '"';
    for (const char *p = name; *p && o + 6 < cap; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < ' ' || c == 0x7f) {
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    http_srv *s = cls;
    http_req *r = *con_cls;
    if (!r)
        return;
    *con_cls = NULL;
    char buf[IFM_NAME_MAX * 4 + 4];
    char path[200];
    /* Paths come from the network: keep control characters out of the log. */
    size_t i = 0;
    for (; r->path[i] && i < sizeof path - 1; i++)
        path[i] = (unsigned char)r->path[i] < ' ' || r->path[i] == 0x7f ? '?' : r->path[i];
    path[i] = '\0';
    char status[8];
    snprintf(status, sizeof status, "%u", r->status);
    IFM_INFO("%s %s client=%s status=%s %.1f ms%s", r->method, path, http_log_name(r->client, buf, sizeof buf),
             r->status ? status : "-", (double)(now_us() - r->t0) / 1000.0,
             toe == MHD_REQUEST_TERMINATED_COMPLETED_OK          ? ""
                 : toe == MHD_REQUEST_TERMINATED_CLIENT_ABORT    ? " (client went away)"
                 : toe == MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN ? " (shutting down)"
                 : toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED ? " (timed out)"
                                                                 : " (connection closed)");
    http_metrics_request(s, r, (double)(now_us() - r->t0) / 1e6);
    if (r->call)
        r->call->req = NULL;
    sio_req_gone(r);
    api_unwatch_caller(r);
    auth_detach(r);
    if (r->prev)
        r->prev->next = r->next;
    else
        s->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    json_decref(r->plan);
    json_decref(r->acc);
    free(r->ready_body);
    free(r->body);
    free(r->path);
    free(r);
}

/* ---- start / stop ---- */

/* "HOST:PORT", "[V6]:PORT", ":PORT" (all interfaces) or "PORT" (loopback). */
static int resolve_listen(const char *spec, struct sockaddr_storage *ss, socklen_t *sslen, char *host, size_t hostcap,
                          char *port, size_t portcap)
{
    const char *colon = NULL;
    if (spec[0] == '[') {
        const char *end = strchr(spec, ']');
        if (!end || end[1] != ':')
            return -1;
        snprintf(host, hostcap, "%.*s", (int)(end - spec - 1), spec + 1);
        colon = end + 1;
    } else {
        colon = strrchr(spec, ':');
        if (!colon)
            snprintf(host, hostcap, "127.0.0.1");
        else
            snprintf(host, hostcap, "%.*s", (int)(colon - spec), spec);
    }
    snprintf(port, portcap, "%s", colon ? colon + 1 : spec);
    char *end;
    long p = strtol(port, &end, 10);
    if (!*port || *end || p < 0 || p > 65535)
        return -1;
    struct addrinfo hints = { 0 }, *res = NULL;
    hints.ai_family = *host ? AF_UNSPEC : AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if (getaddrinfo(*host ? host : NULL, port, &hints, &res) || !res)
        return -1;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sslen = res->ai_addrlen;
    freeaddrinfo(res);
    if (!*host)
        snprintf(host, hostcap, "0.0.0.0");
    return 0;
}

/* The daemon's connection limit needs as many descriptors: raise the soft
 * limit towards the hard one if it is lower (a shell's 1024, say). */
static void raise_fd_limit(rlim_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur >= want)
        return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want)
        IFM_WARN("only %llu file descriptors: fewer than %u HTTP connections at once", (unsigned long long)rl.rlim_cur,
                 (unsigned)HTTP_CONNECTION_LIMIT);
}

int http_server_start(http_srv *s, const char *listen, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sslen = 0;
    char host[256], port[16];
    if (resolve_listen(listen, &ss, &sslen, host, sizeof host, port, sizeof port)) {
        snprintf(err, errlen, "bad --listen address %s (want HOST:PORT)", listen);
        return -1;
    }
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* Slow clients (issue 16 item 5): libmicrohttpd cannot time a whole request
     * head, so a client trickling a header line now and then holds its
     * connection. One address may hold HTTP_PER_IP_LIMIT connections, the
     * daemon HTTP_CONNECTION_LIMIT, and a connection idle for
     * HTTP_IDLE_TIMEOUT_S is closed. Suspended connections (SSE streams and
     * socket.io long-polls waiting for data) never time out in libmicrohttpd,
     * so the short idle timeout does not cut them; they do count against the
     * limits, which leave room for two held GETs per old client. */
    raise_fd_limit(HTTP_CONNECTION_LIMIT + 64);
    s->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_access, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, s, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_IDLE_TIMEOUT_S, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)HTTP_CONNECTION_LIMIT, MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)HTTP_PER_IP_LIMIT,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1, MHD_OPTION_END);
    if (!s->mhd) {
        snprintf(err, errlen, "cannot listen on %s (address in use or not available?)", listen);
        return -1;
    }
    const union MHD_DaemonInfo *ep = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    const union MHD_DaemonInfo *bp = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    if (!ep) {
        snprintf(err, errlen, "libmicrohttpd has no epoll fd");
        MHD_stop_daemon(s->mhd);
        s->mhd = NULL;
        return -1;
    }
    /* Without the watch the port would be open and nothing would ever answer it. */
    if (ifm_loop_watch(s->loop, ep->epoll_fd, IFM_READ, on_mhd_fd, s) != 0) {
        snprintf(err, errlen, "cannot watch libmicrohttpd's epoll fd on the event loop (out of memory)");
        MHD_stop_daemon(s->mhd);
        s->mhd = NULL;
        return -1;
    }
    s->epfd = ep->epoll_fd;
    bool v6 = strchr(host, ':') != NULL;
    snprintf(s->listen_url, sizeof s->listen_url, "http://%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "",
             bp ? (unsigned)bp->port : (unsigned)atoi(port));
    mhd_pump(s);
    return 0;
}

void http_server_stop(http_srv *s)
{
    s->stopping = true;
    if (!s->mhd)
        return;
    /* MHD must not be stopped with suspended connections: answer and resume them. */
    sio_close_all(s);
    for (http_req *r = s->reqs; r; r = r->next) {
        if (r->state == REQ_AUTH) {
            auth_detach(r);
            http_auth_finish(r, 503, 0, false, "icefarm-http is shutting down");
        }
        if (r->state == REQ_WAITING) {
            if (r->call) {
                r->call->req = NULL;
                r->call = NULL;
            }
            http_finish_error(r, 503, "icefarm-http is shutting down");
        }
        if (r->resume_pending) {
            r->resume_pending = false;
            MHD_resume_connection(r->conn);
        }
    }
    events_close_all(s);
    for (int i = 0; i < 3; i++)
        MHD_run(s->mhd);
    ifm_loop_unwatch(s->loop, s->epfd);
    MHD_stop_daemon(s->mhd);
    s->mhd = NULL;
    ifm_timer_cancel(s->loop, s->mhd_timer);
    ifm_timer_cancel(s->loop, s->kick_timer);
    s->mhd_timer = s->kick_timer = 0;
}
