/* The USB/IP server's exports and its TCP carrier (usbip.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "icefarm/log.h"
#include "usbip_internal.h"

/* ---- tokens ---- */

int usbip_token_new(char out[IFM_USBIP_TOKEN_LEN + 1])
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    size_t n = 0;
    while (n < IFM_USBIP_TOKEN_LEN) {
        uint8_t buf[64];
        ssize_t got = getrandom(buf, sizeof buf, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        for (ssize_t i = 0; i < got && n < IFM_USBIP_TOKEN_LEN; i++)
            if (buf[i] < 248) /* 248 = 4 x 62: no bias */
                out[n++] = alphabet[buf[i] % 62];
    }
    out[n] = '\0';
    return 0;
}

/* ---- exports ---- */

usbip_export *usbip_export_find(usbip_server *s, const char *token)
{
    size_t tl = strnlen(token, IFM_USBIP_BUSID_SIZE);
    usbip_export *found = NULL;
    for (usbip_export *e = s->exports; e; e = e->next) {
        /* compare every byte: the time does not tell how much of a guess was right */
        unsigned diff = tl != IFM_USBIP_TOKEN_LEN;
        for (size_t i = 0; i < IFM_USBIP_TOKEN_LEN; i++)
            diff |= (unsigned)(e->token[i] ^ (i < tl ? token[i] : 0));
        if (!diff)
            found = e;
    }
    return found;
}

usbip_export *usbip_export_new(usbip_server *s, const char *serial, const char *token, const char *holder)
{
    if (!token || strlen(token) != IFM_USBIP_TOKEN_LEN)
        return NULL;
    usbip_export *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->s = s;
    snprintf(e->serial, sizeof e->serial, "%s", serial ? serial : "");
    memcpy(e->token, token, IFM_USBIP_TOKEN_LEN + 1);
    snprintf(e->holder, sizeof e->holder, "%s", holder ? holder : "");
    e->next = s->exports;
    s->exports = e;
    return e;
}

void usbip_export_set_device(usbip_export *e, wrk_usbdev *dev)
{
    if (e->dev == dev)
        return;
    e->dev = dev;
    /* The old enumeration is over: its connection ends (its URBs were answered
     * -ENODEV already, the transport completes them before the leave). */
    if (e->conn)
        usbip_conn_close(e->conn, dev ? "device re-enumerated" : "device gone");
}

void usbip_export_unbind(usbip_export *e)
{
    if (e->conn)
        usbip_conn_close(e->conn, "unbind");
}

bool usbip_export_attached(const usbip_export *e)
{
    return e->conn != NULL;
}

const char *usbip_export_token(const usbip_export *e)
{
    return e->token;
}

void usbip_export_free(usbip_export *e)
{
    if (!e)
        return;
    if (e->conn)
        usbip_conn_close(e->conn, "export ended");
    for (usbip_export **pp = &e->s->exports; *pp; pp = &(*pp)->next)
        if (*pp == e) {
            *pp = e->next;
            break;
        }
    free(e);
}

/* ---- the TCP carrier ---- */

static int tcp_write(void *ctx, const uint8_t *data, size_t len)
{
    return ifm_tcp_write(ctx, data, len);
}

static void tcp_pause(void *ctx, bool paused)
{
    if (paused)
        ifm_tcp_read_pause(ctx);
    else
        ifm_tcp_read_resume(ctx);
}

static void tcp_end(void *ctx)
{
    ifm_tcp_end(ctx);
}

static void tcp_abort(void *ctx)
{
    ifm_tcp_close(ctx);
}

static const usbip_io tcp_io = { tcp_write, tcp_pause, tcp_end, tcp_abort, false };

static void on_data(ifm_tcp *s, const uint8_t *data, size_t len, void *arg)
{
    usbip_conn_feed(arg, data, len);
}

static void on_drain(ifm_tcp *s, void *arg)
{
    usbip_conn_drained(arg);
}

static void on_close(ifm_tcp *s, int status, void *arg)
{
    usbip_conn_gone(arg);
}

static const ifm_tcp_cbs tcp_cbs = { .on_data = on_data, .on_drain = on_drain, .on_close = on_close };

static void on_accept(ifm_tcp_listener *l, ifm_tcp *stream, void *arg)
{
    usbip_server *s = arg;
    usbip_conn *c = usbip_conn_new(s, &tcp_io, stream, ifm_tcp_peer(stream));
    if (!c) {
        IFM_ERROR("usbip: out of memory for a connection from %s", ifm_tcp_peer(stream));
        ifm_tcp_close(stream);
        return;
    }
    ifm_tcp_start(stream, &tcp_cbs, c);
}

usbip_server *usbip_server_new(ifm_loop *loop, wrk_transport *t, const usbip_server_opts *o, char *why, size_t whylen)
{
    if (!t->ops->urb_submit) {
        snprintf(why, whylen, "the %s transport has no URB level", t->ops->name);
        return NULL;
    }
    usbip_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    s->loop = loop;
    s->t = t;
    if (o && o->listen_port) {
        /* A closing connection sends its FIN at once (the client sees the end
         * at once) and reads until the client hangs up too, at most 2 s: vhci
         * may still be sending its UNLINKs, and a reset would fail them. */
        ifm_tcp_opts to = { .linger_ms = 2000 };
        int rc = ifm_tcp_listen(loop, o->listen_host, o->listen_port, &to, on_accept, s, &s->listener, why, whylen);
        if (rc) {
            free(s);
            return NULL;
        }
    }
    return s;
}

int usbip_server_metrics(usbip_server *s, ifm_metrics *reg)
{
    static const char *const L_PATH[] = { "path", NULL };
    static const char *const L_PATH_DIR[] = { "path", "direction", NULL };
    static const char *const L_REASON[] = { "reason", NULL };
    static const char *const L_RESULT[] = { "result", NULL };
    static const char *const paths[2] = { "direct", "tunnel" };
    static const char *const reasons[USBIP_REFUSED_COUNT] = { "unknown_busid", "busy", "not_present", "error" };
    ifm_metric *open =
        ifm_metrics_gauge(reg, "icefarm_wrk_usbip_sessions",
                          "USB/IP sessions open (an import until its connection ends), by path.", L_PATH);
    ifm_metric *opened =
        ifm_metrics_counter(reg, "icefarm_wrk_usbip_sessions_total", "USB/IP imports accepted, by path.", L_PATH);
    ifm_metric *refused = ifm_metrics_counter(reg, "icefarm_wrk_usbip_imports_refused_total",
                                              "USB/IP imports refused, by reason.", L_REASON);
    ifm_metric *urbs = ifm_metrics_counter(reg, "icefarm_wrk_usbip_urbs_total",
                                           "CMD_SUBMITs received from USB/IP clients, by path.", L_PATH);
    ifm_metric *bytes = ifm_metrics_counter(
        reg, "icefarm_wrk_usbip_bytes_total",
        "USB data moved for USB/IP clients (actual_length of answered URBs), by path and USB direction.", L_PATH_DIR);
    ifm_metric *unlinks =
        ifm_metrics_counter(reg, "icefarm_wrk_usbip_unlinks_total",
                            "CMD_UNLINKs answered: cancelled (-ECONNRESET) or the URB had completed (0).", L_RESULT);
    if (!open || !opened || !refused || !urbs || !bytes || !unlinks)
        return -1;
    usbip_stats *st = &s->stats;
    for (int p = 0; p < 2; p++) {
        st->sessions[p] = ifm_metric_at(open, paths[p]);
        st->sessions_total[p] = ifm_metric_at(opened, paths[p]);
        st->urbs[p] = ifm_metric_at(urbs, paths[p]);
        st->bytes[p][0] = ifm_metric_at(bytes, paths[p], "out");
        st->bytes[p][1] = ifm_metric_at(bytes, paths[p], "in");
    }
    for (int r = 0; r < USBIP_REFUSED_COUNT; r++)
        st->refused[r] = ifm_metric_at(refused, reasons[r]);
    st->unlinks[0] = ifm_metric_at(unlinks, "cancelled");
    st->unlinks[1] = ifm_metric_at(unlinks, "completed");
    return 0;
}

int usbip_server_port(const usbip_server *s)
{
    return s->listener ? ifm_tcp_listener_port(s->listener) : 0;
}

void usbip_server_free(usbip_server *s)
{
    if (!s)
        return;
    if (s->listener)
        ifm_tcp_listener_close(s->listener);
    while (s->conns)
        usbip_conn_abort(s->conns);
    while (s->exports) {
        usbip_export *e = s->exports;
        s->exports = e->next;
        free(e);
    }
    free(s);
}
