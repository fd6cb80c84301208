/* libmosquitto on an ifm_loop. libmosquitto does the protocol; this file owns the
 * socket's place in the loop, reconnection, subscriptions and request/response. */
#include "icefarm/mqtt.h"

#include <errno.h>
#include <stdarg.h>
#include <mqtt_protocol.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "icefarm/log.h"
#include "icefarm/tcp.h"
#include "icefarm/msg.h"
#include "icefarm/topics.h"

#define CORR_LEN 16

typedef struct sub {
    struct sub *next;
    uint32_t id; /* MQTT 5 subscription identifier */
    char *filter;
    int qos;
    ifm_mqtt_msg_cb cb;
    void *arg;
    bool dead; /* unsubscribed during dispatch; freed right after it */
} sub;

typedef struct pending {
    struct pending *next;
    ifm_mqtt *m;
    uint8_t corr[CORR_LEN];
    uint64_t timer;
    ifm_mqtt_reply_cb cb;
    void *arg;
} pending;

/* Recent QoS 1 publishes, so a refusal (which names only the packet id) can be
 * reported with its topic. A ring: acks come back in order, long before 64
 * newer publishes could overwrite an entry. */
#define RECENT 64
typedef struct {
    int mid;
    char topic[IFM_TOPIC_MAX];
} recent_pub;

struct ifm_mqtt {
    ifm_loop *loop;
    struct mosquitto *mosq;
    char host[256];
    int port;
    int keepalive;
    char name[IFM_NAME_MAX];
    char client_id[IFM_NAME_MAX];
    char reply_topic[IFM_TOPIC_MAX];
    char presence_topic[IFM_TOPIC_MAX]; /* "" without opts.presence */
    uint8_t last_corr[CORR_LEN];
    bool started, connected, stopping;
    int dispatching;
    size_t unacked;   /* QoS 1 publishes the broker has not acknowledged yet */
    char refused[96]; /* why the broker last refused our CONNECT, "" if it did not */
    /* Why the last connection attempt failed before any CONNACK ("" after a
     * success), whether retrying cannot help, and libmosquitto's latest TLS
     * error line (the detail OpenSSL gives). */
    char conn_error[224];
    bool conn_permanent, tls;
    char tls_error[128];
    int fd; /* the fd currently in the loop, or -1 */
    uint64_t misc_timer, retry_timer;
    uint64_t backoff_ms;
    sub *subs;
    pending *pending;
    uint64_t corr_seq;
    uint32_t last_sub_id;
    uint8_t corr_prefix[8];
    ifm_mqtt_conn_cb on_conn;
    void *arg;
    recent_pub recent[RECENT];
    size_t recent_next;
    ifm_mqtt_refused_cb on_refused;
    void *refused_arg;
    ifm_mqtt_log_cb log;
    void *log_arg;
};

/* This connection's log lines: to opts.log when given, else to ifm_log. */
static void mlog(const ifm_mqtt *m, enum ifm_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void mlog(const ifm_mqtt *m, enum ifm_log_level level, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (m->log)
        m->log(level, line, m->log_arg);
    else
        ifm_log(level, "%s", line);
}

static void pump(ifm_mqtt *m);
static void schedule_connect(ifm_mqtt *m);

int ifm_mqtt_parse_url(const char *url, ifm_mqtt_opts *opts, char *hostbuf, size_t cap)
{
    const char *p = url;
    if (!p || !*p)
        return -1;
    opts->tls = false;
    if (strncmp(p, "mqtt://", 7) == 0)
        p += 7;
    else if (strncmp(p, "mqtts://", 8) == 0) {
        p += 8;
        opts->tls = true;
    } else if (strstr(p, "://"))
        return -1;
    /* The authority ends at a path; without a port it gets the scheme's default,
     * so one splitter (the TCP helper's, brackets for IPv6: mqtt://[::1]:1883)
     * reads every form. */
    char auth[512], port[8];
    size_t al = strcspn(p, "/");
    if (al + sizeof ":65535" > sizeof auth)
        return -1;
    memcpy(auth, p, al);
    auth[al] = '\0';
    const char *bracket = strrchr(auth, ']'), *colon = strrchr(auth, ':');
    if (!colon || (bracket && colon < bracket))
        snprintf(auth + al, sizeof auth - al, ":%d", opts->tls ? 8883 : 1883);
    if (ifm_tcp_split_hostport(auth, hostbuf, cap, port, sizeof port) || atoi(port) == 0)
        return -1;
    if (!hostbuf[0])
        snprintf(hostbuf, cap, "127.0.0.1");
    opts->host = hostbuf;
    opts->port = atoi(port);
    return 0;
}

/* ---- dispatch ---- */

static pending *take_pending(ifm_mqtt *m, const void *corr, size_t len)
{
    if (len != CORR_LEN)
        return NULL;
    for (pending **pp = &m->pending; *pp; pp = &(*pp)->next) {
        if (memcmp((*pp)->corr, corr, CORR_LEN) == 0) {
            pending *p = *pp;
            *pp = p->next;
            return p;
        }
    }
    return NULL;
}

static void on_reply(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    void *corr = NULL;
    uint16_t len = 0;
    if (!mosquitto_property_read_binary(msg->props, MQTT_PROP_CORRELATION_DATA, &corr, &len, false))
        return;
    pending *p = take_pending(m, corr, len);
    free(corr);
    if (!p)
        return; /* a late reply after its timeout: nobody is waiting */
    ifm_timer_cancel(m->loop, p->timer);
    p->cb(m, 0, msg, p->arg);
    free(p);
}

static void send_subscribe(ifm_mqtt *m, const sub *s)
{
    mosquitto_property *props = NULL;
    mosquitto_property_add_varint(&props, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, s->id);
    mosquitto_subscribe_v5(m->mosq, NULL, s->filter, s->qos, 0, props);
    mosquitto_property_free_all(&props);
}

/* The live subscriptions a copy of a message is for. Mosquitto sends one copy per
 * matching subscription, tagged with that subscription's identifier: a copy goes
 * to the subs with the filter it was tagged for (subscribing a filter twice
 * replaces the broker-side subscription, so match by filter). Untagged copies
 * go to every matching filter. */
static bool sub_wants(const ifm_mqtt *m, const sub *s, const char *topic, const mosquitto_property *props)
{
    if (s->dead)
        return false;
    uint32_t sid = 0;
    const mosquitto_property *p = mosquitto_property_read_varint(props, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, &sid, false);
    if (!p) {
        bool match = false;
        return mosquitto_topic_matches_sub(s->filter, topic, &match) == MOSQ_ERR_SUCCESS && match;
    }
    for (; p; p = mosquitto_property_read_varint(p, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, &sid, true))
        for (const sub *t = m->subs; t; t = t->next)
            if (t->id == sid && strcmp(t->filter, s->filter) == 0)
                return true;
    return false;
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *mm,
                       const mosquitto_property *props)
{
    ifm_mqtt *m = obj;
    ifm_mqtt_msg msg = { mm->topic, mm->payload, (size_t)mm->payloadlen, mm->retain, props };
    /* Callbacks may subscribe or unsubscribe: unsubscribed entries are only
     * marked while we walk the list, and swept afterwards. */
    m->dispatching++;
    for (sub *s = m->subs; s; s = s->next) {
        if (sub_wants(m, s, mm->topic, props))
            s->cb(m, &msg, s->arg);
    }
    if (--m->dispatching == 0) {
        for (sub **pp = &m->subs; *pp;) {
            sub *s = *pp;
            if (s->dead) {
                *pp = s->next;
                free(s->filter);
                free(s);
            } else {
                pp = &s->next;
            }
        }
    }
}

static void on_connect(struct mosquitto *mosq, void *obj, int rc, int flags, const mosquitto_property *props)
{
    ifm_mqtt *m = obj;
    if (rc != 0) {
        mlog(m, IFM_LOG_WARN, "broker %s:%d refused the connection: %s", m->host, m->port, mosquitto_reason_string(rc));
        snprintf(m->refused, sizeof m->refused, "%s", mosquitto_reason_string(rc));
        return; /* the broker closes the socket; pump() notices and retries */
    }
    m->refused[0] = '\0';
    m->conn_error[0] = '\0';
    m->conn_permanent = false;
    m->connected = true;
    m->backoff_ms = 100;
    for (sub *s = m->subs; s; s = s->next)
        if (!s->dead)
            send_subscribe(m, s);
    mlog(m, IFM_LOG_INFO, "connected to broker %s:%d as %s", m->host, m->port, m->name[0] ? m->name : "-");
    if (m->presence_topic[0]) {
        /* After the SUBSCRIBEs: whoever waits for this connection's presence
         * (a worker holding our results) finds our subscriptions in place. */
        ifm_enc e;
        ifm_enc_init(&e);
        ifm_presence_encode(&e);
        ifm_mqtt_publish(m, m->presence_topic, ifm_enc_data(&e), ifm_enc_size(&e), 1, true);
        ifm_enc_free(&e);
    }
    if (m->on_conn)
        m->on_conn(m, true, m->arg);
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid, int rc, const mosquitto_property *props)
{
    ifm_mqtt *m = obj;
    if (m->unacked)
        m->unacked--;
    if (rc < 0x80)
        return;
    const char *topic = "?";
    for (size_t i = 0; i < RECENT; i++)
        if (m->recent[i].mid == mid && m->recent[i].topic[0])
            topic = m->recent[i].topic;
    mlog(m, IFM_LOG_WARN, "the broker refused a publish to %s: %s", topic, mosquitto_reason_string(rc));
    if (m->on_refused)
        m->on_refused(m, topic, rc, m->refused_arg);
}

void ifm_mqtt_on_refused(ifm_mqtt *m, ifm_mqtt_refused_cb cb, void *arg)
{
    m->on_refused = cb;
    m->refused_arg = arg;
}

static void fail_pending(ifm_mqtt *m, int status)
{
    while (m->pending) {
        pending *p = m->pending;
        m->pending = p->next;
        ifm_timer_cancel(m->loop, p->timer);
        p->cb(m, status, NULL, p->arg);
        free(p);
    }
}

static void lost(ifm_mqtt *m)
{
    if (m->fd >= 0) {
        ifm_loop_unwatch(m->loop, m->fd);
        m->fd = -1;
    }
    ifm_timer_cancel(m->loop, m->misc_timer);
    m->misc_timer = 0;
    bool was = m->connected;
    m->connected = false;
    m->unacked = 0;
    if (was) {
        if (!m->stopping)
            mlog(m, IFM_LOG_WARN, "lost connection to broker %s:%d; reconnecting", m->host, m->port);
        fail_pending(m, -ENOTCONN);
        if (m->on_conn)
            m->on_conn(m, false, m->arg);
    }
    if (!m->stopping)
        schedule_connect(m);
}

/* ---- the socket in the loop ---- */

/* Records why an attempt to connect failed: `permanent` when retrying cannot
 * help (refused, no such host, TLS verification), the way mosquitto_sub fails
 * at once on these. */
static void conn_failed(ifm_mqtt *m, bool permanent, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void conn_failed(ifm_mqtt *m, bool permanent, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->conn_error, sizeof m->conn_error, fmt, ap);
    va_end(ap);
    m->conn_permanent = permanent;
}

static void tls_failed(ifm_mqtt *m)
{
    bool verify = strstr(m->tls_error, "verify") != NULL;
    conn_failed(m, true, "TLS: %s%s", m->tls_error[0] ? m->tls_error : "the handshake failed",
                verify ? ": give --cafile with the farm's CA certificate" : "");
}

/* libmosquitto's own log: only its TLS errors are kept ("OpenSSL Error[0]:
 * error:0A000086:SSL routines::certificate verify failed" -> the last part). */
static void on_mosq_log(struct mosquitto *mosq, void *obj, int level, const char *line)
{
    ifm_mqtt *m = obj;
    if (!(level & MOSQ_LOG_ERR) || !strstr(line, "OpenSSL Error") || !m || m->tls_error[0])
        return;
    const char *tail = strrchr(line, ':');
    snprintf(m->tls_error, sizeof m->tls_error, "%s", tail && tail[1] ? tail + 1 : line);
}

static void on_fd(ifm_loop *loop, int fd, int events, void *arg)
{
    ifm_mqtt *m = arg;
    int rc = MOSQ_ERR_SUCCESS;
    if (events & IFM_READ)
        rc = mosquitto_loop_read(m->mosq, 1);
    if (rc == MOSQ_ERR_SUCCESS && (events & IFM_WRITE))
        rc = mosquitto_loop_write(m->mosq, 1);
    if (rc == MOSQ_ERR_TLS)
        tls_failed(m);
    else if (rc != MOSQ_ERR_SUCCESS && !m->connected && !m->refused[0])
        conn_failed(m, !m->tls, "the broker closed the connection before accepting it%s",
                    m->tls ? "" : " (a TLS port? use mqtts://)");
    if (rc != MOSQ_ERR_SUCCESS && mosquitto_socket(m->mosq) >= 0)
        mosquitto_disconnect(m->mosq);
    pump(m);
}

static void on_misc(ifm_loop *loop, void *arg)
{
    ifm_mqtt *m = arg;
    m->misc_timer = 0;
    mosquitto_loop_misc(m->mosq);
    pump(m);
    if (m->fd >= 0 && !m->misc_timer)
        m->misc_timer = ifm_timer_add(m->loop, 250, on_misc, m);
}

/* Brings the loop's view in line with libmosquitto's: the current socket, and
 * whether it has bytes to write. Called after every call into libmosquitto. */
static void pump(ifm_mqtt *m)
{
    int fd = mosquitto_socket(m->mosq);
    if (fd < 0) {
        if (m->fd >= 0 || m->connected)
            lost(m);
        return;
    }
    int ev = IFM_READ | (mosquitto_want_write(m->mosq) ? IFM_WRITE : 0);
    if (fd == m->fd) {
        ifm_loop_modify(m->loop, fd, ev);
    } else {
        if (m->fd >= 0)
            ifm_loop_unwatch(m->loop, m->fd);
        m->fd = -1;
        if (ifm_loop_watch(m->loop, fd, ev, on_fd, m) != 0) {
            /* Out of memory: the socket is not served yet; on_misc calls pump again. */
            mlog(m, IFM_LOG_ERROR, "cannot watch the connection to broker %s:%d (out of memory); retrying in 250 ms",
                 m->host, m->port);
        } else {
            m->fd = fd;
        }
    }
    if (!m->misc_timer)
        m->misc_timer = ifm_timer_add(m->loop, 250, on_misc, m);
}

static void try_connect(ifm_loop *loop, void *arg)
{
    ifm_mqtt *m = arg;
    m->retry_timer = 0;
    /* Blocking TCP connect: quick on a LAN or loopback, and a refused port fails at once. */
    m->tls_error[0] = '\0';
    errno = 0;
    int rc = mosquitto_connect_bind_v5(m->mosq, m->host, m->port, m->keepalive, NULL, NULL);
    int e = errno;
    if (rc == MOSQ_ERR_EAI)
        conn_failed(m, e != EAI_AGAIN, "cannot resolve %s: %s", m->host, gai_strerror(e));
    else if (rc == MOSQ_ERR_TLS)
        tls_failed(m);
    else if (rc == MOSQ_ERR_ERRNO)
        conn_failed(m, e == ECONNREFUSED, "%s", strerror(e));
    else if (rc != MOSQ_ERR_SUCCESS)
        conn_failed(m, false, "%s", mosquitto_strerror(rc));
    errno = e;
    if (rc != MOSQ_ERR_SUCCESS) {
        /* Say it once, then quietly keep trying (the broker may just be late). */
        if (m->backoff_ms <= 100)
            mlog(m, IFM_LOG_WARN, "cannot connect to broker %s:%d: %s; retrying", m->host, m->port,
                 rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
        schedule_connect(m);
        return;
    }
    pump(m);
}

static void schedule_connect(ifm_mqtt *m)
{
    if (m->retry_timer || m->stopping)
        return;
    m->retry_timer = ifm_timer_add(m->loop, m->backoff_ms, try_connect, m);
    m->backoff_ms = m->backoff_ms * 2 > 2000 ? 2000 : m->backoff_ms * 2;
}

/* ---- public API ---- */

ifm_mqtt *ifm_mqtt_new(ifm_loop *loop, const ifm_mqtt_opts *o, ifm_mqtt_conn_cb on_conn, void *arg)
{
    ifm_mqtt *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    mosquitto_lib_init();
    m->loop = loop;
    m->fd = -1;
    m->backoff_ms = 100;
    m->on_conn = on_conn;
    m->arg = arg;
    m->log = o->log;
    m->log_arg = o->log_arg;
    snprintf(m->host, sizeof m->host, "%s", o->host ? o->host : "127.0.0.1");
    m->port = o->port ? o->port : 1883;
    /* libmosquitto refuses keep-alives under 5 s. */
    m->keepalive = o->keepalive >= 5 ? o->keepalive : 5;
    if (o->name)
        snprintf(m->name, sizeof m->name, "%s", o->name);
    FILE *ur = fopen("/dev/urandom", "rb");
    uint8_t idr[8] = { 0 };
    if (!ur || fread(m->corr_prefix, 1, sizeof m->corr_prefix, ur) != sizeof m->corr_prefix ||
        fread(idr, 1, sizeof idr, ur) != sizeof idr) {
        memcpy(m->corr_prefix, &m, sizeof m < sizeof m->corr_prefix ? sizeof m : sizeof m->corr_prefix);
        uint64_t t = ifm_now_ms() ^ ((uint64_t)getpid() << 32);
        memcpy(idr, &t, sizeof idr);
    }
    if (ur)
        fclose(ur);
    if (o->client_id) {
        snprintf(m->client_id, sizeof m->client_id, "%s", o->client_id);
    } else {
        static const char hex[] = "0123456789abcdef";
        char *p = m->client_id + snprintf(m->client_id, sizeof m->client_id, "ifm-");
        for (size_t i = 0; i < sizeof idr; i++) {
            *p++ = hex[idr[i] >> 4];
            *p++ = hex[idr[i] & 15];
        }
        *p = '\0';
    }
    m->mosq = mosquitto_new(m->client_id, true, m);
    if (!m->mosq)
        goto fail;
    mosquitto_int_option(m->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_int_option(m->mosq, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_connect_v5_callback_set(m->mosq, on_connect);
    mosquitto_log_callback_set(m->mosq, on_mosq_log);
    m->tls = o->cafile || o->tls;
    mosquitto_message_v5_callback_set(m->mosq, on_message);
    mosquitto_publish_v5_callback_set(m->mosq, on_publish);
    if (o->username && mosquitto_username_pw_set(m->mosq, o->username, o->password))
        goto fail;
    if (o->cafile && mosquitto_tls_set(m->mosq, o->cafile, NULL, NULL, NULL, NULL)) {
        mlog(m, IFM_LOG_ERROR, "cannot use CA file %s", o->cafile);
        goto fail;
    }
    if (!o->cafile && o->tls && mosquitto_int_option(m->mosq, MOSQ_OPT_TLS_USE_OS_CERTS, 1)) {
        mlog(m, IFM_LOG_ERROR, "cannot use the system's CA certificates for TLS");
        goto fail;
    }
    if (o->will_topic &&
        mosquitto_will_set_v5(m->mosq, o->will_topic, (int)o->will_len, o->will_payload, 1, o->will_retain, NULL))
        goto fail;
    if (o->presence && !o->will_topic && m->name[0] &&
        ifm_topic_presence(m->presence_topic, sizeof m->presence_topic, m->name, m->client_id) == 0 &&
        mosquitto_will_set_v5(m->mosq, m->presence_topic, 0, NULL, 1, true, NULL))
        goto fail;
    if (m->name[0]) {
        if (ifm_topic_client(m->reply_topic, sizeof m->reply_topic, m->name, "reply"))
            goto fail;
        if (ifm_mqtt_subscribe(m, m->reply_topic, 1, on_reply, NULL))
            goto fail;
    }
    return m;
fail:
    ifm_mqtt_free(m);
    return NULL;
}

void ifm_mqtt_free(ifm_mqtt *m)
{
    if (!m)
        return;
    m->stopping = true;
    if (m->fd >= 0)
        ifm_loop_unwatch(m->loop, m->fd);
    ifm_timer_cancel(m->loop, m->misc_timer);
    ifm_timer_cancel(m->loop, m->retry_timer);
    while (m->pending) {
        pending *p = m->pending;
        m->pending = p->next;
        ifm_timer_cancel(m->loop, p->timer);
        free(p);
    }
    while (m->subs) {
        sub *s = m->subs;
        m->subs = s->next;
        free(s->filter);
        free(s);
    }
    if (m->mosq)
        mosquitto_destroy(m->mosq);
    mosquitto_lib_cleanup();
    free(m);
}

int ifm_mqtt_start(ifm_mqtt *m)
{
    if (m->started)
        return 0;
    m->started = true;
    m->retry_timer = ifm_timer_add(m->loop, 0, try_connect, m);
    return 0;
}

bool ifm_mqtt_connected(const ifm_mqtt *m)
{
    return m->connected;
}
const char *ifm_mqtt_name(const ifm_mqtt *m)
{
    return m->name;
}
const char *ifm_mqtt_client_id(const ifm_mqtt *m)
{
    return m->client_id;
}
size_t ifm_mqtt_last_corr(const ifm_mqtt *m, uint8_t *out, size_t cap)
{
    if (cap < CORR_LEN)
        return 0;
    memcpy(out, m->last_corr, CORR_LEN);
    return CORR_LEN;
}
ifm_loop *ifm_mqtt_loop(const ifm_mqtt *m)
{
    return m->loop;
}

int ifm_mqtt_wait_connected(ifm_mqtt *m, uint64_t timeout_ms)
{
    uint64_t deadline = ifm_now_ms() + timeout_ms;
    while (!m->connected && !m->refused[0] && ifm_now_ms() < deadline && !ifm_loop_stopped(m->loop))
        ifm_loop_once(m->loop, 50);
    return m->connected ? 0 : -1;
}

const char *ifm_mqtt_refused(const ifm_mqtt *m)
{
    return m->refused[0] ? m->refused : NULL;
}

const char *ifm_mqtt_conn_error(const ifm_mqtt *m, bool *permanent)
{
    if (permanent)
        *permanent = m->conn_permanent;
    return m->conn_error[0] ? m->conn_error : NULL;
}

int ifm_mqtt_flush(ifm_mqtt *m, uint64_t timeout_ms)
{
    uint64_t deadline = ifm_now_ms() + timeout_ms;
    while (m->connected && mosquitto_want_write(m->mosq) && ifm_now_ms() < deadline)
        ifm_loop_once(m->loop, 20);
    return mosquitto_want_write(m->mosq) ? -1 : 0;
}

void ifm_mqtt_disconnect(ifm_mqtt *m)
{
    /* A clean DISCONNECT drops the Will: clear the presence ourselves. */
    if (m->presence_topic[0] && m->connected)
        ifm_mqtt_publish(m, m->presence_topic, NULL, 0, 1, true);
    ifm_mqtt_flush(m, 2000);
    /* Wait for the broker's acknowledgements too: closing a socket with unread
     * PUBACKs makes the kernel send a reset, and the broker then loses our
     * DISCONNECT (and publishes the Will as if we had died). */
    uint64_t deadline = ifm_now_ms() + 2000;
    while (m->connected && m->unacked && ifm_now_ms() < deadline)
        ifm_loop_once(m->loop, 20);
    m->stopping = true;
    ifm_timer_cancel(m->loop, m->retry_timer);
    m->retry_timer = 0;
    if (mosquitto_socket(m->mosq) >= 0)
        mosquitto_disconnect_v5(m->mosq, 0, NULL);
    pump(m);
    if (m->fd >= 0 || m->connected)
        lost(m);
}

int ifm_mqtt_subscribe(ifm_mqtt *m, const char *filter, int qos, ifm_mqtt_msg_cb cb, void *arg)
{
    sub *s = calloc(1, sizeof *s);
    if (!s || !(s->filter = strdup(filter))) {
        free(s);
        return -1;
    }
    s->id = ++m->last_sub_id;
    s->qos = qos;
    s->cb = cb;
    s->arg = arg;
    /* Append so dispatch order is subscription order. */
    sub **pp = &m->subs;
    while (*pp)
        pp = &(*pp)->next;
    *pp = s;
    if (m->connected) {
        send_subscribe(m, s);
        pump(m);
    }
    return 0;
}

int ifm_mqtt_set_will(ifm_mqtt *m, const char *topic, const void *payload, size_t len, bool retain)
{
    return mosquitto_will_set_v5(m->mosq, topic, (int)len, payload, 1, retain, NULL) == MOSQ_ERR_SUCCESS ? 0 : -1;
}

int ifm_mqtt_unsubscribe(ifm_mqtt *m, const char *filter)
{
    bool found = false;
    for (sub **pp = &m->subs; *pp;) {
        sub *s = *pp;
        if (!s->dead && strcmp(s->filter, filter) == 0) {
            found = true;
            if (m->dispatching) {
                s->dead = true;
            } else {
                *pp = s->next;
                free(s->filter);
                free(s);
                continue;
            }
        }
        pp = &s->next;
    }
    if (found && m->connected) {
        mosquitto_unsubscribe_v5(m->mosq, NULL, filter, NULL);
        pump(m);
    }
    return found ? 0 : -1;
}

int ifm_mqtt_publish_props(ifm_mqtt *m, const char *topic, const void *payload, size_t len, int qos, bool retain,
                           const mosquitto_property *props)
{
    if (!m->connected)
        return -1;
    if (len > INT32_MAX)
        return -1;
    int mid = 0;
    int rc = mosquitto_publish_v5(m->mosq, &mid, topic, (int)len, payload, qos, retain, props);
    if (rc == MOSQ_ERR_SUCCESS && qos > 0) {
        m->unacked++;
        recent_pub *r = &m->recent[m->recent_next++ % RECENT];
        r->mid = mid;
        snprintf(r->topic, sizeof r->topic, "%s", topic);
    }
    pump(m);
    if (rc != MOSQ_ERR_SUCCESS) {
        mlog(m, IFM_LOG_WARN, "publish to %s failed: %s", topic, mosquitto_strerror(rc));
        return -1;
    }
    return 0;
}

int ifm_mqtt_publish(ifm_mqtt *m, const char *topic, const void *payload, size_t len, int qos, bool retain)
{
    return ifm_mqtt_publish_props(m, topic, payload, len, qos, retain, NULL);
}

static void on_request_timeout(ifm_loop *loop, void *arg)
{
    pending *p = arg;
    ifm_mqtt *m = p->m;
    for (pending **pp = &m->pending; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    p->cb(m, -ETIMEDOUT, NULL, p->arg);
    free(p);
}

int ifm_mqtt_request(ifm_mqtt *m, const char *topic, const void *payload, size_t len, uint64_t timeout_ms,
                     ifm_mqtt_reply_cb cb, void *arg)
{
    return ifm_mqtt_request_as(m, m->name, topic, payload, len, timeout_ms, cb, arg);
}

int ifm_mqtt_request_as(ifm_mqtt *m, const char *client, const char *topic, const void *payload, size_t len,
                        uint64_t timeout_ms, ifm_mqtt_reply_cb cb, void *arg)
{
    if (!m->reply_topic[0] || !m->connected || !ifm_name_valid(client, IFM_NAME_MAX))
        return -1;
    pending *p = calloc(1, sizeof *p);
    if (!p)
        return -1;
    p->m = m;
    p->cb = cb;
    p->arg = arg;
    memcpy(p->corr, m->corr_prefix, 8);
    uint64_t seq = ++m->corr_seq;
    memcpy(p->corr + 8, &seq, 8);
    mosquitto_property *props = NULL;
    uint32_t expiry = (uint32_t)(timeout_ms / 1000 + 1);
    int rc = mosquitto_property_add_string(&props, MQTT_PROP_RESPONSE_TOPIC, m->reply_topic);
    rc = rc ? rc : mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA, p->corr, CORR_LEN);
    rc = rc ? rc : mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, IFM_PROP_CLIENT, client);
    rc = rc ? rc : mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, IFM_PROP_CONN, m->client_id);
    /* Expiry: a request nobody picks up in time must not be acted on later. */
    rc = rc ? rc : mosquitto_property_add_int32(&props, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, expiry);
    if (rc == 0)
        /* QoS 0: libmosquitto re-sends unacknowledged QoS 1 messages after a
         * reconnect, which would deliver a request whose caller was already
         * told -ENOTCONN. A request lives and dies with its connection. */
        rc = ifm_mqtt_publish_props(m, topic, payload, len, 0, false, props);
    mosquitto_property_free_all(&props);
    if (rc) {
        free(p);
        return -1;
    }
    memcpy(m->last_corr, p->corr, CORR_LEN);
    p->timer = ifm_timer_add(m->loop, timeout_ms, on_request_timeout, p);
    p->next = m->pending;
    m->pending = p;
    return 0;
}

struct ifm_reply_to {
    char *topic;
    void *corr;
    uint16_t corr_len;
};

ifm_reply_to *ifm_reply_to_save(const ifm_mqtt_msg *req)
{
    ifm_reply_to *to = calloc(1, sizeof *to);
    if (!to)
        return NULL;
    if (!mosquitto_property_read_string(req->props, MQTT_PROP_RESPONSE_TOPIC, &to->topic, false)) {
        free(to);
        return NULL;
    }
    mosquitto_property_read_binary(req->props, MQTT_PROP_CORRELATION_DATA, &to->corr, &to->corr_len, false);
    return to;
}

void ifm_reply_to_free(ifm_reply_to *to)
{
    if (!to)
        return;
    free(to->topic);
    free(to->corr);
    free(to);
}

int ifm_mqtt_reply_to(ifm_mqtt *m, const ifm_reply_to *to, const void *payload, size_t len)
{
    mosquitto_property *props = NULL;
    int rc = 0;
    if (to->corr)
        rc = mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA, to->corr, to->corr_len);
    if (rc == 0)
        rc = ifm_mqtt_publish_props(m, to->topic, payload, len, 1, false, props);
    mosquitto_property_free_all(&props);
    return rc ? -1 : 0;
}

int ifm_mqtt_reply(ifm_mqtt *m, const ifm_mqtt_msg *req, const void *payload, size_t len)
{
    ifm_reply_to *to = ifm_reply_to_save(req);
    if (!to)
        return -1;
    int rc = ifm_mqtt_reply_to(m, to, payload, len);
    ifm_reply_to_free(to);
    return rc;
}

int ifm_mqtt_msg_client(const ifm_mqtt_msg *msg, char *out, size_t cap)
{
    return ifm_mqtt_msg_user_prop(msg, IFM_PROP_CLIENT, out, cap);
}

int ifm_mqtt_msg_user_prop(const ifm_mqtt_msg *msg, const char *key, char *out, size_t cap)
{
    char *name = NULL, *value = NULL;
    const mosquitto_property *p =
        mosquitto_property_read_string_pair(msg->props, MQTT_PROP_USER_PROPERTY, &name, &value, false);
    while (p) {
        bool hit = strcmp(name, key) == 0;
        int rc = hit && ifm_name_valid(value, cap) ? 0 : -1;
        if (rc == 0)
            snprintf(out, cap, "%s", value);
        free(name);
        free(value);
        name = value = NULL;
        if (hit)
            return rc;
        p = mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &name, &value, true);
    }
    return -1;
}
