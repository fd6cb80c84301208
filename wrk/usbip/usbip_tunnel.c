/* The broker tunnel: USB/IP sessions carried by MQTT messages (usbip_tunnel.h). */
#include "usbip_tunnel.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "icefarm/grow.h"
#include "icefarm/log.h"
#include "icefarm/topics.h"
#include "usbip_internal.h"

typedef struct tsession tsession;
struct tsession {
    tsession *next;
    usbip_tunnel *t;
    usbip_conn *conn;
    char serial[IFM_SERIAL_MAX];
    char session[33];
    char s2c[IFM_TOPIC_MAX];
    uint8_t *tx; /* what this turn of the loop wrote: whole PDUs */
    size_t txlen, txcap;
    uint64_t flush_timer;
    uint64_t gone_timer; /* the carrier ended: usbip_conn_gone from the loop */
    bool ended;          /* the empty message went out; no more writes */
};

struct usbip_tunnel {
    usbip_server *s;
    ifm_loop *loop;
    ifm_mqtt *m;
    tsession *sessions;
};

static tsession *find(usbip_tunnel *t, const char *serial, const char *session)
{
    for (tsession *x = t->sessions; x; x = x->next)
        if (strcmp(x->serial, serial) == 0 && strcmp(x->session, session) == 0)
            return x;
    return NULL;
}

static void unlink_free(tsession *x)
{
    for (tsession **pp = &x->t->sessions; *pp; pp = &(*pp)->next)
        if (*pp == x) {
            *pp = x->next;
            break;
        }
    ifm_timer_cancel(x->t->loop, x->flush_timer);
    ifm_timer_cancel(x->t->loop, x->gone_timer);
    free(x->tx);
    free(x);
}

/* QoS 1 keeps the stream in order; a refused publish (not connected) loses the
 * stream, which then ends: the client hears of it from the worker's birth. */
static int publish(tsession *x, const uint8_t *p, size_t n)
{
    int rc = ifm_mqtt_publish(x->t->m, x->s2c, p, n, 1, false);
    if (rc)
        IFM_WARN("serial=%s usbip tunnel %s: cannot publish %zu bytes", x->serial, x->session, n);
    return rc;
}

static void flush(tsession *x)
{
    ifm_timer_cancel(x->t->loop, x->flush_timer);
    x->flush_timer = 0;
    if (x->txlen)
        publish(x, x->tx, x->txlen);
    x->txlen = 0;
}

static void on_flush(ifm_loop *loop, void *arg)
{
    tsession *x = arg;
    x->flush_timer = 0;
    flush(x);
}

/* ---- the carrier (usbip_io) ---- */

static int io_write(void *ctx, const uint8_t *data, size_t len)
{
    tsession *x = ctx;
    if (x->ended)
        return -EPIPE;
    if (x->txlen && x->txlen + len > IFM_USBIP_TUNNEL_BATCH)
        flush(x);
    if (len > IFM_USBIP_TUNNEL_BATCH) /* one large PDU: a message of its own */
        return publish(x, data, len) ? -EIO : 0;
    if (x->txlen + len > x->txcap) {
        uint8_t *p = ifm_grow_bytes(x->tx, &x->txcap, x->txlen + len, 4096, 0);
        if (!p)
            return -ENOMEM;
        x->tx = p;
    }
    memcpy(x->tx + x->txlen, data, len);
    x->txlen += len;
    if (!x->flush_timer)
        x->flush_timer = ifm_timer_add(x->t->loop, 0, on_flush, x);
    return x->flush_timer ? 0 : -ENOMEM;
}

/* MQTT has no per-topic flow control; the broker's queue limits bound a slow
 * client instead (max_queued_messages). */
static void io_pause(void *ctx, bool paused)
{
}

static void on_gone(ifm_loop *loop, void *arg)
{
    tsession *x = arg;
    x->gone_timer = 0;
    usbip_conn *c = x->conn;
    unlink_free(x);
    usbip_conn_gone(c);
}

static void io_end(void *ctx)
{
    tsession *x = ctx;
    if (x->ended)
        return;
    flush(x);
    publish(x, NULL, 0);
    x->ended = true;
    x->gone_timer = ifm_timer_add(x->t->loop, 0, on_gone, x);
    if (!x->gone_timer)
        IFM_ERROR("serial=%s usbip tunnel %s: no timer to end the session", x->serial, x->session);
}

static void io_abort(void *ctx)
{
    unlink_free(ctx);
}

static const usbip_io tunnel_io = { io_write, io_pause, io_end, io_abort, true };

/* ---- sessions ---- */

static tsession *open_session(usbip_tunnel *t, const char *serial, const char *session)
{
    tsession *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    x->t = t;
    snprintf(x->serial, sizeof x->serial, "%s", serial);
    snprintf(x->session, sizeof x->session, "%s", session);
    if (ifm_topic_usbip(x->s2c, sizeof x->s2c, serial, session, "s2c")) {
        free(x);
        return NULL;
    }
    char peer[IFM_SERIAL_MAX + 48];
    snprintf(peer, sizeof peer, "tunnel %s/%s", serial, session);
    x->conn = usbip_conn_new(t->s, &tunnel_io, x, peer);
    if (!x->conn) {
        free(x);
        return NULL;
    }
    x->next = t->sessions;
    t->sessions = x;
    IFM_INFO("serial=%s usbip tunnel session %s opened", serial, session);
    return x;
}

int usbip_tunnel_c2s(usbip_tunnel *t, const char *serial, const char *session, const uint8_t *payload, size_t len)
{
    if (!ifm_serial_valid(serial) || !ifm_usbip_session_valid(session))
        return -EINVAL;
    tsession *x = find(t, serial, session);
    if (len > IFM_USBIP_TUNNEL_MSG_MAX) {
        IFM_WARN("serial=%s usbip tunnel %s: a %zu-byte message is over the %u-byte limit: session ends", serial,
                 session, len, IFM_USBIP_TUNNEL_MSG_MAX);
        if (x && !x->ended)
            usbip_conn_close(x->conn, "oversized tunnel message");
        return -EMSGSIZE;
    }
    if (len == 0) { /* the client ended the session (or its Will did) */
        if (x && !x->ended) {
            IFM_INFO("serial=%s usbip tunnel session %s ended by the client", serial, session);
            usbip_conn *c = x->conn;
            unlink_free(x);
            usbip_conn_gone(c);
        }
        return 0;
    }
    if (x && x->ended)
        return 0; /* late bytes of a session that is over */
    if (!x && !(x = open_session(t, serial, session)))
        return -ENOMEM;
    usbip_conn_feed(x->conn, payload, len);
    return 0;
}

int usbip_tunnel_c2s_msg(usbip_tunnel *t, const char *topic, const uint8_t *payload, size_t len)
{
    char serial[IFM_SERIAL_MAX], session[64];
    if (ifm_topic_level(topic, 1, serial, sizeof serial) || ifm_topic_level(topic, 3, session, sizeof session))
        return -EINVAL;
    return usbip_tunnel_c2s(t, serial, session, payload, len);
}

usbip_tunnel *usbip_tunnel_new(usbip_server *s, ifm_loop *loop, ifm_mqtt *m)
{
    usbip_tunnel *t = calloc(1, sizeof *t);
    if (t) {
        t->s = s;
        t->loop = loop;
        t->m = m;
    }
    return t;
}

void usbip_tunnel_reset(usbip_tunnel *t)
{
    while (t->sessions) {
        tsession *x = t->sessions;
        usbip_conn *c = x->conn;
        unlink_free(x); /* an ended session's pending gone timer goes with it */
        usbip_conn_gone(c);
    }
}

void usbip_tunnel_free(usbip_tunnel *t)
{
    if (!t)
        return;
    while (t->sessions)
        usbip_conn_abort(t->sessions->conn); /* calls io_abort, which frees the session */
    free(t);
}
