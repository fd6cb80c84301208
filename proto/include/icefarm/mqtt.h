/* MQTT 5 glue shared by every icefarm process: libmosquitto driven by the
 * process's ifm_loop (no libmosquitto thread), TCP_NODELAY always on (without it
 * a QoS 1 round trip costs ~88 ms instead of ~0.13 ms), a Will, automatic
 * reconnect with back-off and re-subscription, and request/response with Response
 * Topic + Correlation Data.
 *
 * Ownership: ifm_mqtt_free() releases the connection, its subscriptions and any
 * pending requests (their callbacks are not called). Message callbacks get
 * borrowed pointers valid only during the call.
 */
#ifndef ICEFARM_MQTT_H
#define ICEFARM_MQTT_H

#include <mosquitto.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "icefarm/log.h"
#include "icefarm/loop.h"
#include "icefarm/err.h"

typedef struct ifm_mqtt ifm_mqtt;

/* The MQTT 5 user property that names the client a request acts for. In the
 * embedded (anonymous) farm the client sets it; in a secured farm the broker
 * plugin overwrites it with the authenticated username, so control can trust it. */
#define IFM_PROP_CLIENT "icefarm-client"
/* Set by the secured farm's broker plugin on every request (never trusted from a
 * client: the plugin removes any the client sent): the acting client's role,
 * "client" or "operator". Its presence tells control the farm is secured. */
#define IFM_PROP_ROLE "icefarm-role"

/* Receives this connection's log lines (one event each, no newline, no timestamp). */
typedef void (*ifm_mqtt_log_cb)(enum ifm_log_level level, const char *msg, void *arg);
/* The MQTT client id of the connection a request came from (the broker plugin
 * sets it in a secured farm): a waiting reserve ends with that connection. */
#define IFM_PROP_CONN "icefarm-conn"

typedef struct {
    const char *host;      /* default 127.0.0.1 */
    int port;              /* default 1883 */
    const char *client_id; /* MQTT client id; NULL: generated ("ifm-" + 16 random hex digits) */
    const char *name;      /* icefarm identity: reply topic icefarm/client/<name>/reply */
    const char *username, *password;
    const char *cafile; /* TLS, verified against this CA, when set */
    bool tls;           /* TLS even without cafile (mqtts:// URLs): the system's CAs */
    int keepalive;      /* seconds; default 5 */
    /* Will: published by the broker if the connection dies without DISCONNECT. */
    const char *will_topic;
    const void *will_payload;
    size_t will_len;
    bool will_retain;
    /* Where this connection's log lines go (connects, losses, refusals); NULL:
     * ifm_log, i.e. stderr. A library embedding the client routes them to its user. */
    ifm_mqtt_log_cb log;
    void *log_arg;
    /* A client's presence (needs `name`, and no Will of its own): on every
     * connect, after the subscriptions, the retained {state: online} on
     * icefarm/client/<name>/presence/<client id>; the Will clears it. Control
     * ends the connection's waiting reserves when it is cleared; workers hold a
     * holder's results while none of its connections is present. */
    bool presence;
} ifm_mqtt_opts;

typedef struct {
    const char *topic;
    const void *payload;
    size_t len;
    bool retain;
    const mosquitto_property *props; /* response topic, correlation data, user props */
} ifm_mqtt_msg;

typedef void (*ifm_mqtt_msg_cb)(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg);
/* Called after every successful (re)connect: republish births and retained state here. */
typedef void (*ifm_mqtt_conn_cb)(ifm_mqtt *m, bool connected, void *arg);
/* status 0: reply in msg; -ETIMEDOUT: no reply in time; -ENOTCONN: connection lost. */
typedef void (*ifm_mqtt_reply_cb)(ifm_mqtt *m, int status, const ifm_mqtt_msg *reply, void *arg);

/* Parses "mqtt://host:port", "mqtts://host:port" (sets opts->tls), "host:port" or
 * "host" into opts->host/port; an IPv6 literal in brackets ("mqtt://[::1]:1883"), copied
 * without them. The host is copied into `hostbuf`. Returns 0 or -1. */
int ifm_mqtt_parse_url(const char *url, ifm_mqtt_opts *opts, char *hostbuf, size_t cap);

ifm_mqtt *ifm_mqtt_new(ifm_loop *loop, const ifm_mqtt_opts *opts, ifm_mqtt_conn_cb on_conn, void *arg);
void ifm_mqtt_free(ifm_mqtt *m);

/* Starts connecting (from the loop, never inside this call); keeps retrying with
 * back-off (0.1 s doubling to 2 s) until connected, and reconnects after any loss.
 * Cannot fail: returns 0 (ifm_mqtt_new checked the options; a second call is a
 * no-op). Why a connection does not come up is ifm_mqtt_conn_error's to say. */
int ifm_mqtt_start(ifm_mqtt *m);
bool ifm_mqtt_connected(const ifm_mqtt *m);
/* Blocks (running the loop) until connected, refused by the broker (bad
 * credentials, not authorized) or `timeout_ms` passes. */
int ifm_mqtt_wait_connected(ifm_mqtt *m, uint64_t timeout_ms);
/* The broker's reason for refusing the last connection attempt, or NULL. */
const char *ifm_mqtt_refused(const ifm_mqtt *m);
/* Why the last attempt to reach the broker failed before it answered ("Connection
 * refused", "cannot resolve HOST: ...", "TLS: certificate verify failed: give
 * --cafile ..."), or NULL (none yet, or connected since). *permanent (may be
 * NULL) says whether retrying cannot help, so a one-shot client stops there. The
 * connection itself keeps retrying either way. */
const char *ifm_mqtt_conn_error(const ifm_mqtt *m, bool *permanent);
/* Publishes pending retained-offline state and disconnects cleanly, so no Will fires. */
void ifm_mqtt_disconnect(ifm_mqtt *m);
/* Runs the loop until every queued outgoing packet is written (or timeout). */
int ifm_mqtt_flush(ifm_mqtt *m, uint64_t timeout_ms);

/* Replaces the Will used from the next connect on (e.g. with a new epoch after a
 * disconnect, so the old connection's late Will can be told apart). */
IFM_MUST_CHECK int ifm_mqtt_set_will(ifm_mqtt *m, const char *topic, const void *payload, size_t len, bool retain);

/* Called when the broker refuses a QoS 1 publish (MQTT 5 PUBACK reason >= 0x80,
 * e.g. 0x87 "not authorized" from the ACL plugin), with the topic it was for. */
typedef void (*ifm_mqtt_refused_cb)(ifm_mqtt *m, const char *topic, int reason, void *arg);
void ifm_mqtt_on_refused(ifm_mqtt *m, ifm_mqtt_refused_cb cb, void *arg);

/* Subscriptions are remembered and renewed on every reconnect. Messages are
 * dispatched to every subscription whose filter matches. */
IFM_MUST_CHECK int ifm_mqtt_subscribe(ifm_mqtt *m, const char *filter, int qos, ifm_mqtt_msg_cb cb, void *arg);
/* Forgets every subscription with this exact filter (and unsubscribes). */
int ifm_mqtt_unsubscribe(ifm_mqtt *m, const char *filter);

int ifm_mqtt_publish(ifm_mqtt *m, const char *topic, const void *payload, size_t len, int qos, bool retain);
/* Publish with an IFM_PROP_CLIENT user property and optional message expiry. */
int ifm_mqtt_publish_props(ifm_mqtt *m, const char *topic, const void *payload, size_t len, int qos, bool retain,
                           const mosquitto_property *props);

/* Request/response: publishes to `topic` with Response Topic
 * icefarm/client/<name>/reply, fresh Correlation Data and the client name as a user
 * property; `cb` runs exactly once. Requires opts.name. */
IFM_MUST_CHECK int ifm_mqtt_request(ifm_mqtt *m, const char *topic, const void *payload, size_t len,
                                    uint64_t timeout_ms, ifm_mqtt_reply_cb cb, void *arg);
/* The same, acting for `client` (a gateway such as the HTTP shim serving many
 * callers); the reply still comes to this connection's reply topic. */
IFM_MUST_CHECK int ifm_mqtt_request_as(ifm_mqtt *m, const char *client, const char *topic, const void *payload,
                                       size_t len, uint64_t timeout_ms, ifm_mqtt_reply_cb cb, void *arg);
/* Answers a request message: publishes to its Response Topic with its Correlation
 * Data. Returns -1 if the request carried no Response Topic. */
int ifm_mqtt_reply(ifm_mqtt *m, const ifm_mqtt_msg *request, const void *payload, size_t len);

/* For answering later (e.g. a reserve that waits for boards): saves the request's
 * Response Topic and Correlation Data. NULL if the request has no Response Topic. */
typedef struct ifm_reply_to ifm_reply_to;
ifm_reply_to *ifm_reply_to_save(const ifm_mqtt_msg *request);
int ifm_mqtt_reply_to(ifm_mqtt *m, const ifm_reply_to *to, const void *payload, size_t len);
void ifm_reply_to_free(ifm_reply_to *to);

/* Reads the IFM_PROP_CLIENT user property into out; -1 if absent or invalid. */
int ifm_mqtt_msg_client(const ifm_mqtt_msg *msg, char *out, size_t cap);
/* Reads the first user property named `key` into out (a valid name); -1 if absent or invalid. */
int ifm_mqtt_msg_user_prop(const ifm_mqtt_msg *msg, const char *key, char *out, size_t cap);

const char *ifm_mqtt_name(const ifm_mqtt *m);
/* The MQTT client id this connection uses. */
const char *ifm_mqtt_client_id(const ifm_mqtt *m);
/* The correlation data of the latest ifm_mqtt_request*() (CORR bytes), for a
 * later `cancel` of that request. Returns its length. */
size_t ifm_mqtt_last_corr(const ifm_mqtt *m, uint8_t *out, size_t cap);
ifm_loop *ifm_mqtt_loop(const ifm_mqtt *m);

#endif
