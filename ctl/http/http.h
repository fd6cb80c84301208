/* icefarm-http: the documented HTTP API of the old control server, translated
 * to MQTT requests to icefarm-ctl. One thread, one ifm_loop: libmicrohttpd runs
 * in external epoll mode (its epoll fd is watched by the loop, its timeouts are
 * a loop timer), and a request waiting for control's reply is a suspended MHD
 * connection, so nothing ever blocks.
 *
 * Ownership: the server owns every http_req (one per HTTP request, freed by the
 * MHD "request completed" callback) and every sse_stream (owned by its MHD
 * response, freed by the response's free callback). MQTT callbacks never touch
 * MHD directly: they mark a connection to resume and kick a 0 ms timer, which
 * resumes it and runs MHD from the loop, outside any MHD callback.
 */
#ifndef ICEFARM_HTTP_H
#define ICEFARM_HTTP_H

#include <jansson.h>

#include "icefarm/json.h"
#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "icefarm/loop.h"
#include "icefarm/metrics.h"
#include "icefarm/mqtt.h"
#include "icefarm/msg.h"

#define HTTP_BODY_MAX (64u * 1024u)        /* request bodies above this get 413 */
#define HTTP_SIO_BODY_MAX (32u << 20)      /* ... except socket.io POSTs (bitstreams, base64) */
#define HTTP_SSE_KEEPALIVE_MS 15000u       /* comment line on idle event streams */
#define HTTP_SSE_QUEUE_MAX (1024u * 1024u) /* a slower reader than this is dropped */

typedef struct http_srv http_srv;
typedef struct http_req http_req;
typedef struct sse_stream sse_stream;
typedef struct http_call http_call;
typedef struct http_auth http_auth;
typedef struct auth_check auth_check;
typedef struct sio_state sio_state;
typedef struct sio_sess sio_sess;

#define HTTP_IP_MAX 64 /* a numeric IPv4 or IPv6 address */
/* Connection limits against slow clients (server.c). The idle timeout must stay
 * above nothing in particular: SSE streams and long-polls are suspended while
 * they wait, and suspended connections do not time out. */
#define HTTP_CONNECTION_LIMIT 4000
#define HTTP_PER_IP_LIMIT 64
#define HTTP_IDLE_TIMEOUT_S 10
/* An event larger than this is not turned into JSON for /events or socket.io:
 * its callers get {event, serial, batch_id, lease, too_large: true, bytes}
 * instead (a 12 MiB results event made a 200 MB JSON tree; PROTOCOL.md 4.3). */
#define HTTP_EVENT_FORWARD_MAX (256u * 1024u)

typedef enum {
    AUTH_NONE,
    AUTH_BROKER
} auth_mode;
typedef enum {
    ROUTE_NONE,
    ROUTE_EVENTS,
    ROUTE_API,
    ROUTE_TOKEN,
    ROUTE_METRICS,
    ROUTE_SIO, /* /socket.io/: the compatibility face (sio.c) */
    ROUTE_PAGE /* the dashboard's files (page.c) */
} req_route;

typedef enum {
    REQ_NEW,     /* reading the request */
    REQ_AUTH,    /* suspended until the broker has checked the credentials */
    REQ_AUTHED,  /* credentials good, connection resumed: serve it */
    REQ_WAITING, /* suspended until control answers */
    REQ_READY,   /* answer prepared, connection resumed (or about to be) */
    REQ_DONE,    /* response queued */
    REQ_SIO_HOLD /* a held socket.io GET: suspended until packets are queued */
} req_state;

struct http_req {
    http_req *prev, *next;
    http_srv *srv;
    struct MHD_Connection *conn;
    char method[16];
    char *path;
    char client[IFM_NAME_MAX]; /* the acting client, for the log ("" if none) */
    char user[IFM_NAME_MAX];   /* --auth broker: the authenticated user, the acting client */
    char ip[HTTP_IP_MAX];      /* the peer's address (rate limit, auth log) */
    req_route route;
    auth_check *check;    /* REQ_AUTH: the credential check it waits for */
    http_req *check_next; /* the check's other waiters */
    bool challenge;       /* add WWW-Authenticate: Basic realm="icefarm" to the reply */
    unsigned retry_after; /* add Retry-After: N (seconds) to the reply, if nonzero */
    uint64_t t0;
    char *body;
    size_t len, cap;
    req_state state;
    bool resume_pending;
    unsigned status;           /* as queued; 0 if no response was ever queued */
    unsigned ready_status;     /* REQ_READY: the answer to queue */
    char *ready_body;          /* REQ_READY: malloc'd JSON text */
    const struct endpoint *ep; /* the API endpoint being served */
    uint64_t wait_ms;          /* reserve's wait_ms: added to the reply timeout */
    http_call *call;           /* the MQTT request in flight, if any */
    json_t *plan, *acc;        /* name-less /reboot: groups still to send, serials done */
    sio_sess *sio;             /* REQ_SIO_HOLD: the session whose GET this is */
    const char *ctype;         /* reply Content-Type (static string); NULL: application/json */
    size_t body_max;           /* bodies above this get 413 */
    /* A reserve waiting for boards (wait_ms): its caller's socket is watched
     * while the connection is suspended, and a caller that hangs up has the
     * wait cancelled at control (PROTOCOL.md 5.1). */
    bool peer_watched;
    int peer_fd;
    bool waits;                /* the call in flight is such a reserve */
    uint8_t corr[16];          /* its correlation data */
    char acting[IFM_NAME_MAX]; /* the client it acts for */
};

/* An MQTT request in flight; outlives its http_req if the server stops first. */
struct http_call {
    http_call *prev, *next;
    http_srv *srv;
    http_req *req; /* NULL once the request is gone */
};

typedef struct {
    char serial[IFM_SERIAL_MAX];
    char client[IFM_NAME_MAX]; /* the holder (free boards are not kept) */
} lease_ent;

/* metrics.c: the registry behind /metrics. */
typedef struct {
    ifm_metrics *reg;
    ifm_metric *requests, *latency, *connected;
    ifm_series *reconnects;
    unsigned connects;
} http_metrics;

struct http_srv {
    ifm_loop *loop;
    ifm_mqtt *mqtt;
    struct MHD_Daemon *mhd;
    int epfd;
    uint64_t mhd_timer, kick_timer;
    char broker_host[256];
    int broker_port;
    bool broker_tls;
    const char *cafile; /* for credential checks: the shim's own CA */
    int keepalive;
    uint64_t timeout_ms;
    auth_mode auth_mode;
    uint64_t token_ttl_ms, auth_cache_ms;
    http_auth *auth; /* --auth broker */
    char listen_url[300];
    http_req *reqs;
    http_call *calls;
    sse_stream *streams;
    lease_ent *leases;
    size_t nleases, capleases;
    bool board_sub; /* subscribed to icefarm/+/event */
    sio_state *sio;
    unsigned ping_interval_ms, ping_timeout_ms; /* Engine.IO */
    char advertise[300];                        /* --advertise HOST:PORT, or "" */
    bool stopping;
    http_metrics metrics;
    char dashboard[4096]; /* the dashboard bundle's directory; "" = not built (page.c) */
    const char *ws_url;   /* --ws-url: the broker's websocket URL, for the page; NULL = ask */
};

/* server.c */
int http_server_start(http_srv *s, const char *listen, char *err, size_t errlen);
void http_server_stop(http_srv *s);
/* Runs MHD from the loop on the next iteration (after resumes). */
void http_kick(http_srv *s);
/* Queues a JSON body with this status on a request in the access handler. */
enum MHD_Result http_reply_json(http_req *r, unsigned status, json_t *body);
enum MHD_Result http_reply_error(http_req *r, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Finishes a suspended request from an MQTT callback: stores the answer, resumes. */
void http_finish(http_req *r, unsigned status, json_t *body);
void http_finish_error(http_req *r, unsigned status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Queues `text` (malloc'd, taken) with r->ctype in the access handler. */
enum MHD_Result http_reply_text(http_req *r, unsigned status, char *text);
/* Finishes a held socket.io GET (REQ_SIO_HOLD) with `text` (malloc'd, taken). */
void http_finish_text(http_req *r, unsigned status, char *text, const char *ctype);
/* Ends a REQ_AUTH wait: status 0 serves the request as r->user, else answers
 * the error (with WWW-Authenticate if `challenge`, Retry-After if nonzero). */
void http_auth_finish(http_req *r, unsigned status, unsigned retry_after, bool challenge, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* A name from the network as one log token: quoted and escaped if needed. */
const char *http_log_name(const char *name, char *out, size_t cap);

/* auth.c: --auth broker (Basic and Bearer, checked against the broker). */
typedef enum {
    AUTH_OK,
    AUTH_REPLIED,
    AUTH_PENDING
} auth_result;
int auth_init(http_srv *s);
/* Authenticates a request: AUTH_OK (r->user set), AUTH_REPLIED (an error is
 * queued, *rc is MHD's result) or AUTH_PENDING (suspended in REQ_AUTH). */
auth_result auth_begin(http_req *r, enum MHD_Result *rc);
/* Forgets a request waiting for a check (it completed or is being answered). */
void auth_detach(http_req *r);
/* A token for `user` (the worker address of the socket.io face): 0 with its
 * text in hex, or -1 (logged). */
int auth_session_token(http_srv *s, const char *user, char hex[65]);
/* POST /token, authenticated as r->user. */
enum MHD_Result auth_token_serve(http_req *r);
/* The start-up probe found a broker that accepts any password: exit. */
bool auth_failed(const http_srv *s);
void auth_free(http_srv *s);

/* api.c: the control endpoints. Returns NULL for a path that is not one. */
const struct endpoint *api_find(const char *path);
/* Serves an endpoint once the body is complete; may suspend the connection. */
enum MHD_Result api_serve(http_req *r, json_t *args);
void api_call_done(http_call *c);
/* Stops watching a waiting reserve's caller (http_finish calls it). */
void api_unwatch_caller(http_req *r);
/* A client name control accepts: one topic level, no control characters. */
bool api_name_ok(const char *name);
/* --auth broker: a "name" argument must be absent, null or r->user. Returns 0,
 * or 400/403 with the message in err. */
int api_acting_user(http_req *r, json_t *args, char *err, size_t errlen);

/* events.c: GET /events (Server-Sent Events) and the lease table. */
int events_init(http_srv *s);
enum MHD_Result events_serve(http_req *r, json_t *args);
/* Resumes streams with pending data (from the kick timer). */
void events_resume(http_srv *s);
/* Ends every stream (shutdown). */
void events_close_all(http_srv *s);
void events_free(http_srv *s);
/* The lease holder of a board as the shim last saw it (icefarm/lease/+), or NULL. */
const char *events_holder(const http_srv *s, const char *serial);
/* A name gained (lost) a listener (SSE stream or socket.io client): subscribe
 * (unsubscribe) what it needs. Call after the listener is added (removed). */
void events_watch_name(http_srv *s, const char *name);
void events_unwatch_name(http_srv *s, const char *name);

/* sio.c: the socket.io face for the old Python clients. */
int sio_init(http_srv *s);
enum MHD_Result sio_serve(http_req *r);
/* A request with the sid and the Authorization header of an authenticated
 * session needs no new check (r->user is set from the session). */
bool sio_session_authorized(http_req *r);
/* An event for `name` (root: the event's map; serial: the board, NULL for
 * control's client events). */
void sio_deliver(http_srv *s, const char *name, const msgpack_object *root, const char *serial);
bool sio_has_client(const http_srv *s, const char *name);
bool sio_any(const http_srv *s);
/* MHD is done with a request that may be a held GET. */
void sio_req_gone(http_req *r);
void sio_close_all(http_srv *s);
void sio_free(http_srv *s);

/* msgpack <-> JSON: icefarm/json.h */

/* metrics.c */
int http_metrics_init(http_srv *s);
void http_metrics_free(http_srv *s);
/* The MQTT connection callback (counts reconnects); arg is the server. */
void http_metrics_mqtt(ifm_mqtt *m, bool connected, void *arg);
/* One finished request (from the request log). */
void http_metrics_request(http_srv *s, const http_req *r, double seconds);
/* GET /metrics, authenticated as the rest of the API is. */
enum MHD_Result http_metrics_serve(http_req *r);

/* page.c: the dashboard. page_init finds the bundle (`dir`, else next to the
 * program or in PREFIX/share/icefarm/dashboard); page_match says whether a path
 * is the page's ("/", "/config.json", "/<file>.<known extension>"). */
void page_init(http_srv *s, const char *dir);
bool page_match(const char *path);
enum MHD_Result page_serve(http_req *r);

#endif
