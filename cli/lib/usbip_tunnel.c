/* The broker-tunnel carrier of the USB/IP client (usbip_tunnel.h). */
#include "usbip_tunnel.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "icefarm/grow.h"
#include "icefarm/topics.h"
#include "internal.h"

struct usbc_tstream {
    ifm_loop *loop;
    ifm_mqtt *m;
    usbc_tstream_cbs cbs;
    void *arg;
    char session[17];
    char c2s[IFM_TOPIC_MAX], s2c[IFM_TOPIC_MAX];
    uint8_t *tx;
    size_t txlen, txcap;
    uint64_t flush_timer, connect_timer, free_timer;
    bool up, ended; /* ended: no more callbacks */
};

static void free_now(ifm_loop *loop, void *arg)
{
    (void)loop;
    usbc_tstream *t = arg;
    ifm_mqtt_free(t->m); /* no DISCONNECT: the broker publishes our Will, the empty c2s */
    free(t->tx);
    free(t);
}

/* Stops everything; the MQTT client goes from the loop, never inside one of its
 * own callbacks. */
static void retire(usbc_tstream *t)
{
    t->ended = true;
    ifm_timer_cancel(t->loop, t->flush_timer);
    ifm_timer_cancel(t->loop, t->connect_timer);
    t->flush_timer = t->connect_timer = 0;
    if (!t->free_timer)
        t->free_timer = ifm_timer_add(t->loop, 0, free_now, t);
}

static void end(usbc_tstream *t, int status, const char *why)
{
    if (t->ended)
        return;
    retire(t);
    if (t->cbs.on_end)
        t->cbs.on_end(status, why, t->arg);
}

static void flush(usbc_tstream *t)
{
    if (!t->txlen || !t->up || t->ended)
        return;
    int rc = ifm_mqtt_publish(t->m, t->c2s, t->tx, t->txlen, 1, false);
    t->txlen = 0;
    if (rc)
        end(t, -EPIPE, "the broker connection refused a tunnel message");
}

static void flush_due(ifm_loop *loop, void *arg)
{
    (void)loop;
    usbc_tstream *t = arg;
    t->flush_timer = 0;
    flush(t);
}

int usbc_tstream_write(usbc_tstream *t, const uint8_t *data, size_t len)
{
    if (t->ended)
        return -EPIPE;
    if (t->txlen && t->txlen + len > USBC_TUNNEL_BATCH)
        flush(t);
    if (t->txlen + len > t->txcap) {
        uint8_t *p = ifm_grow_bytes(t->tx, &t->txcap, t->txlen + len, 4096, 0);
        if (!p)
            return -ENOMEM;
        t->tx = p;
    }
    memcpy(t->tx + t->txlen, data, len);
    t->txlen += len;
    if (t->up && !t->flush_timer)
        t->flush_timer = ifm_timer_add(t->loop, 0, flush_due, t);
    return 0;
}

void usbc_tstream_close(usbc_tstream *t)
{
    if (!t)
        return;
    if (t->up && !t->ended)
        flush(t);
    retire(t);
}

const char *usbc_tstream_session(const usbc_tstream *t)
{
    return t->session;
}

static void on_s2c(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    (void)m;
    usbc_tstream *t = arg;
    if (t->ended)
        return;
    if (msg->len == 0) {
        end(t, -ESHUTDOWN, "the worker ended the tunnel session");
        return;
    }
    if (t->cbs.on_data)
        t->cbs.on_data(msg->payload, msg->len, t->arg);
}

static void on_conn(ifm_mqtt *m, bool connected, void *arg)
{
    (void)m;
    usbc_tstream *t = arg;
    if (t->ended)
        return;
    if (connected && !t->up) {
        t->up = true;
        ifm_timer_cancel(t->loop, t->connect_timer);
        t->connect_timer = 0;
        if (t->cbs.on_up)
            t->cbs.on_up(t->arg);
        flush(t);
    } else if (!connected && t->up) {
        end(t, -ECONNRESET, "the tunnel's broker connection dropped");
    }
}

static void connect_timeout(ifm_loop *loop, void *arg)
{
    (void)loop;
    usbc_tstream *t = arg;
    t->connect_timer = 0;
    const char *e = ifm_mqtt_conn_error(t->m, NULL);
    char why[300];
    snprintf(why, sizeof why, "the tunnel's broker connection did not come up%s%s", e && *e ? ": " : "", e ? e : "");
    end(t, -ETIMEDOUT, why);
}

usbc_tstream *usbc_tstream_open(icefarm *f, const char *serial, const usbc_tstream_cbs *cbs, void *arg,
                                uint64_t timeout_ms, char *why, size_t whylen)
{
    usbc_tstream *t = calloc(1, sizeof *t);
    if (!t) {
        ifm_failbuf(why, whylen, -ENOMEM, "out of memory");
        return NULL;
    }
    t->loop = f->loop;
    t->cbs = *cbs;
    t->arg = arg;
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    uint8_t rnd[16];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        free(t);
        ifm_failbuf(why, whylen, -EIO, "no randomness for a session id");
        return NULL;
    }
    for (size_t i = 0; i < sizeof rnd; i++)
        t->session[i] = abc[rnd[i] % (sizeof abc - 1)];
    char leaf[64];
    snprintf(leaf, sizeof leaf, "usbip/%s/c2s", t->session);
    if (ifm_topic_board(t->c2s, sizeof t->c2s, serial, leaf)) {
        free(t);
        ifm_failbuf(why, whylen, -EINVAL, "bad serial \"%s\"", serial);
        return NULL;
    }
    snprintf(leaf, sizeof leaf, "usbip/%s/s2c", t->session);
    ifm_topic_board(t->s2c, sizeof t->s2c, serial, leaf);
    ifm_mqtt_opts mo = {
        .host = f->host,
        .port = f->port,
        .name = f->name,
        .username = f->user,
        .password = f->password,
        .cafile = f->cafile,
        .tls = f->tls,
        .will_topic = t->c2s,
        .will_payload = "",
        .will_len = 0,
        .log = lib_mqtt_log, /* the library's log sink, as the handle's own connection */
        .log_arg = f,
    };
    t->m = ifm_mqtt_new(t->loop, &mo, on_conn, t);
    if (!t->m || ifm_mqtt_subscribe(t->m, t->s2c, 1, on_s2c, t) || ifm_mqtt_start(t->m)) {
        ifm_mqtt_free(t->m);
        free(t);
        ifm_failbuf(why, whylen, -ENOMEM, "cannot set up the tunnel's broker connection");
        return NULL;
    }
    t->connect_timer = ifm_timer_add(t->loop, timeout_ms ? timeout_ms : 10000, connect_timeout, t);
    LIB_DEBUG(f, "usbip serial=%s tunnel session %s", serial, t->session);
    return t;
}

/* ---- a USB/IP client connection over a stream ---- */

typedef struct {
    usbc_tstream *t;
    usbc_conn *c;
} carrier;

static int c_write(void *ctx, const uint8_t *data, size_t len)
{
    carrier *k = ctx;
    return usbc_tstream_write(k->t, data, len); /* usbip_conn writes one whole PDU per call */
}

static void c_close(void *ctx)
{
    carrier *k = ctx;
    usbc_tstream_close(k->t);
    free(k);
}

static void c_up(void *arg)
{
    carrier *k = arg;
    usbc_conn_carrier_up(k->c);
}

static void c_data(const uint8_t *data, size_t len, void *arg)
{
    carrier *k = arg;
    usbc_conn_feed(k->c, data, len);
}

static void c_end(int status, const char *why, void *arg)
{
    carrier *k = arg;
    usbc_conn *c = k->c;
    free(k); /* the stream frees itself; the connection must not close us again */
    usbc_conn_carrier_end(c, status, why);
}

int usbc_tunnel_open(icefarm *f, const char *serial, const usbc_conn_cbs *cbs, void *arg, uint64_t timeout_ms,
                     usbc_conn **out, char *why, size_t whylen)
{
    carrier *k = calloc(1, sizeof *k);
    if (!k)
        return -ENOMEM;
    static const usbc_tstream_cbs tcbs = { c_up, c_data, c_end };
    k->t = usbc_tstream_open(f, serial, &tcbs, k, timeout_ms, why, whylen);
    if (!k->t) {
        free(k);
        return -ENOMEM;
    }
    char peer[96];
    snprintf(peer, sizeof peer, "tunnel:%s/%s", serial, usbc_tstream_session(k->t));
    static const usbc_io io = { c_write, c_close };
    k->c = usbc_conn_new(f->loop, &io, k, cbs, arg, peer, timeout_ms);
    if (!k->c) {
        usbc_tstream_close(k->t);
        free(k);
        return -ENOMEM;
    }
    *out = k->c;
    return 0;
}
