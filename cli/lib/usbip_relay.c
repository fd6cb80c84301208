/* A local USB/IP endpoint relaying to a board through the broker tunnel
 * (icefarm_usbip_tunnel_*, icefarm/usbip_client.h): `icefarm-cli usbip tunnel`,
 * so the kernel's own `usbip attach -r 127.0.0.1` works in a secured farm with no
 * other port open.
 *
 * Each accepted TCP connection gets a tunnel session of its own (usbip_tunnel.h).
 * The tunnel carries whole PDUs per message (PROTOCOL.md 19.3), so the client's
 * byte stream is cut at PDU boundaries with the codec: the op request (DEVLIST
 * or IMPORT), then URB PDUs (a 48-byte header and the OUT data, ISO descriptors
 * when number_of_packets says so). What the worker sends is already whole PDUs
 * and goes to the socket as it comes. A malformed PDU from the local client
 * closes its connection; either end closing closes the other. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "icefarm/grow.h"
#include "icefarm/tcp.h"
#include "icefarm/usbip.h"
#include "icefarm/usbip_client.h"
#include "internal.h"
#include "usbip_tunnel.h"

typedef struct relay relay;

struct icefarm_usbip_tunnel {
    icefarm *f;
    char serial[IFM_SERIAL_MAX];
    ifm_tcp_listener *l;
    relay *relays;
    unsigned sessions;
};

struct relay {
    relay *next;
    icefarm_usbip_tunnel *tu;
    ifm_tcp *s;
    usbc_tstream *t;
    bool urb_phase;
    uint8_t *rx;
    size_t rxlen, rxcap;
    char peer[64];
};

static void relay_free(relay *r)
{
    for (relay **pp = &r->tu->relays; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    if (r->s)
        ifm_tcp_close(r->s);
    if (r->t)
        usbc_tstream_close(r->t);
    free(r->rx);
    free(r);
}

/* The size of the PDU at the start of the buffer: > 0, 0 (need more), < 0 (bad). */
static ssize_t next_pdu(relay *r, const uint8_t *p, size_t n, ifm_err *err)
{
    if (!r->urb_phase) {
        ifm_usbip_op_req req;
        ssize_t k = ifm_usbip_op_req_unpack(p, n, &req, err);
        if (k > 0 && req.code == IFM_USBIP_OP_REQ_IMPORT)
            r->urb_phase = true; /* what follows the import request is URBs */
        return k;
    }
    ifm_usbip_hdr h;
    ssize_t k = ifm_usbip_hdr_unpack(p, n, &h, err);
    if (k <= 0)
        return k;
    if (h.command != IFM_USBIP_CMD_SUBMIT && h.command != IFM_USBIP_CMD_UNLINK)
        return ifm_fail(err, -EPROTO, "command %u from a client", h.command);
    ifm_usbip_shape shape = { .iso = h.command == IFM_USBIP_CMD_SUBMIT && h.u.submit.number_of_packets > 0 };
    size_t size;
    int rc = ifm_usbip_urb_size(&h, shape, &size, err);
    if (rc)
        return rc;
    return n >= size ? (ssize_t)size : 0;
}

static void on_tcp_data(ifm_tcp *s, const uint8_t *data, size_t len, void *arg)
{
    (void)s;
    relay *r = arg;
    if (r->rxlen + len > r->rxcap) {
        uint8_t *p = ifm_grow_bytes(r->rx, &r->rxcap, r->rxlen + len, 65536, 0);
        if (!p) {
            relay_free(r);
            return;
        }
        r->rx = p;
    }
    if (!r->t)
        return; /* the session is over; the socket is ending */
    memcpy(r->rx + r->rxlen, data, len);
    r->rxlen += len;
    size_t off = 0;
    for (;;) {
        ifm_err err = { "" };
        ssize_t k = next_pdu(r, r->rx + off, r->rxlen - off, &err);
        if (k == 0)
            break;
        if (k < 0) {
            LIB_WARN(r->tu->f, "usbip serial=%s client=%s tunnel relay: bad PDU from the local client: %s",
                     r->tu->serial, r->peer, err.msg);
            relay_free(r);
            return;
        }
        if (usbc_tstream_write(r->t, r->rx + off, (size_t)k) != 0) {
            relay_free(r);
            return;
        }
        off += (size_t)k;
    }
    memmove(r->rx, r->rx + off, r->rxlen - off);
    r->rxlen -= off;
}

static void on_tcp_close(ifm_tcp *s, int status, void *arg)
{
    (void)s;
    (void)status;
    relay *r = arg;
    r->s = NULL; /* freed by the helper */
    relay_free(r);
}

static void on_t_up(void *arg)
{
    relay *r = arg;
    LIB_DEBUG(r->tu->f, "usbip serial=%s client=%s tunnel relay up (session %s)", r->tu->serial, r->peer,
              usbc_tstream_session(r->t));
}

static void on_t_data(const uint8_t *data, size_t len, void *arg)
{
    relay *r = arg;
    if (r->s && ifm_tcp_write(r->s, data, len) < 0)
        relay_free(r);
}

static void on_t_end(int status, const char *why, void *arg)
{
    relay *r = arg;
    LIB_INFO(r->tu->f, "usbip serial=%s client=%s tunnel relay ends: %s (%s)", r->tu->serial, r->peer, why,
             ifm_strerror(status));
    r->t = NULL; /* it frees itself */
    if (r->s)
        ifm_tcp_end(r->s); /* what the worker sent last still reaches the client; on_tcp_close frees r */
    else
        relay_free(r);
}

static void on_accept(ifm_tcp_listener *l, ifm_tcp *s, void *arg)
{
    (void)l;
    icefarm_usbip_tunnel *tu = arg;
    relay *r = calloc(1, sizeof *r);
    if (!r) {
        ifm_tcp_close(s);
        return;
    }
    r->tu = tu;
    r->s = s;
    snprintf(r->peer, sizeof r->peer, "%s", ifm_tcp_peer(s));
    static const usbc_tstream_cbs tcbs = { on_t_up, on_t_data, on_t_end };
    char why[200];
    r->t = usbc_tstream_open(tu->f, tu->serial, &tcbs, r, tu->f->timeout_ms, why, sizeof why);
    if (!r->t) {
        LIB_WARN(tu->f, "usbip serial=%s client=%s tunnel relay: %s", tu->serial, r->peer, why);
        ifm_tcp_close(s);
        free(r);
        return;
    }
    r->next = tu->relays;
    tu->relays = r;
    tu->sessions++;
    static const ifm_tcp_cbs cbs = { .on_data = on_tcp_data, .on_close = on_tcp_close };
    ifm_tcp_start(s, &cbs, r);
}

int icefarm_usbip_tunnel_open(icefarm *f, const char *serial, const char *listen, icefarm_usbip_tunnel **out,
                              char *reason, size_t reason_len)
{
    if (reason && reason_len)
        reason[0] = '\0';
    if (!f || !serial || !*serial || !out)
        return ifm_failbuf(reason, reason_len, -EINVAL, "a farm handle and a board serial are needed");
    char host[256] = "127.0.0.1", port[16] = "3240";
    if (listen && *listen && ifm_tcp_split_hostport(listen, host, sizeof host, port, sizeof port) != 0)
        return ifm_failbuf(reason, reason_len, -EINVAL, "bad listen address \"%s\" (want HOST:PORT)", listen);
    if (!host[0])
        snprintf(host, sizeof host, "127.0.0.1");
    icefarm_usbip_tunnel *tu = calloc(1, sizeof *tu);
    if (!tu)
        return -ENOMEM;
    tu->f = f;
    snprintf(tu->serial, sizeof tu->serial, "%s", serial);
    char why[200] = "";
    int rc = ifm_tcp_listen(f->loop, host, port, NULL, on_accept, tu, &tu->l, why, sizeof why);
    if (rc) {
        free(tu);
        return ifm_failbuf(reason, reason_len, rc, "cannot listen on %s:%s: %s", host, port, why);
    }
    *out = tu;
    return 0;
}

int icefarm_usbip_tunnel_port(const icefarm_usbip_tunnel *tu)
{
    return ifm_tcp_listener_port(tu->l);
}

unsigned icefarm_usbip_tunnel_sessions(const icefarm_usbip_tunnel *tu)
{
    return tu->sessions;
}

void icefarm_usbip_tunnel_close(icefarm_usbip_tunnel *tu)
{
    if (!tu)
        return;
    ifm_tcp_listener_close(tu->l);
    while (tu->relays)
        relay_free(tu->relays);
    free(tu);
}
