/* One USB/IP connection (usbip.h): the op phase (one DEVLIST or IMPORT), then the
 * URB phase: CMD_SUBMIT forwarded through the transport's URB level, CMD_UNLINK,
 * replies queued to the carrier as whole PDUs. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "icefarm/grow.h"
#include "icefarm/log.h"
#include "usbip_internal.h"

#define EP_NONE 0xff
#define RX_MAX (IFM_USBIP_URB_HDR_SIZE + IFM_USBIP_MAX_TRANSFER + IFM_USBIP_MAX_ISO_PACKETS * IFM_USBIP_ISO_DESC_SIZE)

typedef enum {
    PH_OP,
    PH_URB,
    PH_CLOSED /* ended by us: waiting for the carrier to go */
} phase;

/* A URB the client submitted and the transport has. */
typedef struct srv_urb {
    usbip_conn *c; /* NULL: the connection went; freed on completion */
    wrk_transport *t;
    wrk_urb *u;
    uint32_t seqnum;
    uint32_t unlink_seqnum; /* the CMD_UNLINK that targets it, if unlinking */
    bool unlinking;
    bool in;
    int32_t np; /* number_of_packets, echoed */
    struct srv_urb *prev, *next;
} srv_urb;

struct usbip_conn {
    usbip_server *s;
    usbip_conn *next; /* s->conns */
    const usbip_io *io;
    void *ioc;
    char peer[64];
    phase ph;
    uint8_t *rx;
    size_t rxlen, rxcap;
    bool paused; /* we paused the carrier's input (back-pressure) */
    bool feeding;
    /* the URB phase */
    usbip_export *exp;
    wrk_usbdev *dev;
    uint32_t devid;
    uint8_t eptype[32]; /* by endpoint slot (number | 16 for IN): wrk_ep_type or EP_NONE */
    uint8_t epif[32];   /* owning interface */
    uint32_t claimed;   /* interfaces we hold */
    uint8_t nifaces;
    uint8_t alts[WRK_USB_MAX_IFACES]; /* current alternate settings */
    srv_urb *inflight;
    size_t ninflight;
    uint8_t *tx; /* scratch for one PDU */
    size_t txcap;
    uint8_t held_unlink[IFM_USBIP_URB_HDR_SIZE]; /* LATE_UNLINK hook */
    bool have_held;
    bool counted; /* in the open-sessions gauge */
};

static usbip_stats *stats(const usbip_conn *c)
{
    return &c->s->stats;
}

static int path_of(const usbip_conn *c)
{
    return c->io->tunnel ? 1 : 0;
}

static const char *serial_of(const usbip_conn *c)
{
    return c->exp ? c->exp->serial : "-";
}

static const char *holder_of(const usbip_conn *c)
{
    return c->exp ? c->exp->holder : "-";
}

/* ---- output ---- */

static uint8_t *tx_room(usbip_conn *c, size_t n)
{
    if (n > c->txcap) {
        uint8_t *p = ifm_grow_bytes(c->tx, &c->txcap, n, 4096, 0);
        if (!p)
            return NULL;
        c->tx = p;
    }
    return c->tx;
}

static void send_bytes(usbip_conn *c, const uint8_t *p, size_t n)
{
    if (c->ph == PH_CLOSED)
        return;
    int rc = c->io->write(c->ioc, p, n);
    if (rc < 0) {
        usbip_conn_close(c, "the carrier failed");
        return;
    }
    if (rc == 1 && !c->paused) {
        c->paused = true;
        c->io->pause(c->ioc, true);
    }
}

static bool hook(usbip_conn *c, wrk_hook h)
{
    wrk_transport *t = c->s->t;
    return c->dev && t->ops->take_hook && t->ops->take_hook(t, c->dev, h);
}

static void send_ret_unlink(usbip_conn *c, uint32_t seqnum, int32_t status)
{
    ifm_usbip_hdr h = { .command = IFM_USBIP_RET_UNLINK, .seqnum = seqnum };
    h.u.unlink_status = status;
    ifm_series_add(stats(c)->unlinks[status == 0], 1);
    uint8_t pdu[IFM_USBIP_URB_HDR_SIZE];
    ifm_usbip_hdr_pack(&h, pdu);
    if (!c->have_held && hook(c, WRK_HOOK_LATE_UNLINK)) {
        memcpy(c->held_unlink, pdu, sizeof pdu); /* goes out after the next RET_SUBMIT */
        c->have_held = true;
        return;
    }
    send_bytes(c, pdu, sizeof pdu);
}

static void send_ret_submit(usbip_conn *c, uint32_t seqnum, int32_t status, const uint8_t *data, uint32_t actual,
                            bool in, int32_t np)
{
    ifm_usbip_hdr h = { .command = IFM_USBIP_RET_SUBMIT, .seqnum = seqnum };
    h.u.ret = (ifm_usbip_ret_submit){ .status = status, .actual_length = (int32_t)actual, .number_of_packets = np };
    size_t dlen = in ? actual : 0;
    ifm_series_add(stats(c)->bytes[path_of(c)][in], actual);
    uint8_t *out = tx_room(c, ifm_usbip_urb_pdu_size(dlen, 0));
    if (!out) {
        usbip_conn_close(c, "out of memory");
        return;
    }
    ssize_t n = ifm_usbip_urb_pack(&h, data, dlen, NULL, 0, out, c->txcap);
    if (n < 0) {
        IFM_ERROR("serial=%s client=%s usbip: cannot pack RET_SUBMIT %u (%zd)", serial_of(c), holder_of(c), seqnum, n);
        usbip_conn_close(c, "internal error");
        return;
    }
    if (hook(c, WRK_HOOK_PARTIAL_PDU)) {
        send_bytes(c, out, (size_t)n / 2);
        usbip_conn_close(c, "fault injection: partial PDU");
        return;
    }
    send_bytes(c, out, (size_t)n);
    if (c->have_held) {
        c->have_held = false;
        send_bytes(c, c->held_unlink, sizeof c->held_unlink);
    }
}

/* An ISO URB this server cannot forward: its packets all fail. */
static void send_iso_refusal(usbip_conn *c, uint32_t seqnum, int32_t np)
{
    ifm_usbip_hdr h = { .command = IFM_USBIP_RET_SUBMIT, .seqnum = seqnum };
    h.u.ret = (ifm_usbip_ret_submit){ .status = -EINVAL, .number_of_packets = np, .error_count = np };
    uint8_t *out = tx_room(c, ifm_usbip_urb_pdu_size(0, (uint32_t)np));
    if (!out) {
        usbip_conn_close(c, "out of memory");
        return;
    }
    ifm_usbip_hdr_pack(&h, out);
    uint8_t *p = out + IFM_USBIP_URB_HDR_SIZE;
    for (int32_t i = 0; i < np; i++, p += IFM_USBIP_ISO_DESC_SIZE) {
        ifm_usbip_iso_desc d = { .status = -EINVAL };
        ifm_usbip_iso_pack(&d, p);
    }
    send_bytes(c, out, ifm_usbip_urb_pdu_size(0, (uint32_t)np));
}

/* ---- URBs ---- */

static void urb_unlist(usbip_conn *c, srv_urb *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        c->inflight = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    c->ninflight--;
}

static void urb_release(srv_urb *r)
{
    r->t->ops->urb_free(r->t, r->u);
    free(r);
}

static void urb_done(wrk_urb *u)
{
    srv_urb *r = u->arg;
    usbip_conn *c = r->c;
    if (!c) {
        urb_release(r); /* its connection is gone: nobody to tell */
        return;
    }
    urb_unlist(c, r);
    if (r->unlinking && u->status == -ECONNRESET) {
        /* cancelled for its CMD_UNLINK: that is the only answer */
        send_ret_unlink(c, r->unlink_seqnum, -ECONNRESET);
    } else {
        send_ret_submit(c, r->seqnum, u->status, u->buf, u->actual, r->in, r->np);
        if (r->unlinking) /* it completed before the cancel took */
            send_ret_unlink(c, r->unlink_seqnum, 0);
    }
    urb_release(r);
}

/* Cancel everything in flight and forget it (the completions free the URBs). */
static void orphan_urbs(usbip_conn *c)
{
    wrk_transport *t = c->s->t;
    while (c->inflight) {
        srv_urb *r = c->inflight;
        urb_unlist(c, r);
        r->c = NULL;
        t->ops->urb_cancel(t, r->u);
    }
}

static void release_claims(usbip_conn *c)
{
    wrk_transport *t = c->s->t;
    for (uint8_t i = 0; i < 32 && c->dev; i++)
        if (c->claimed & (1u << i))
            t->ops->usb_release(t, c->dev, i);
    c->claimed = 0;
}

/* Claim every interface of the active configuration and map its endpoints
 * (in the current alternate settings). */
static void map_endpoints(usbip_conn *c)
{
    wrk_transport *t = c->s->t;
    memset(c->eptype, EP_NONE, sizeof c->eptype);
    memset(c->epif, 0, sizeof c->epif);
    for (uint8_t i = 0; i < c->nifaces; i++) {
        wrk_usb_ep eps[WRK_USB_MAX_EPS];
        int n = t->ops->usb_endpoints(t, c->dev, i, c->alts[i], eps, WRK_USB_MAX_EPS);
        for (int k = 0; k < n; k++) {
            int slot = (eps[k].addr & 0x0f) | ((eps[k].addr & 0x80) ? 16 : 0);
            c->eptype[slot] = eps[k].type;
            c->epif[slot] = i;
        }
    }
}

static int claim_all(usbip_conn *c)
{
    wrk_transport *t = c->s->t;
    wrk_usb_desc d;
    int rc = t->ops->usb_desc(t, c->dev, &d);
    if (rc)
        return rc;
    c->nifaces = d.nifaces;
    for (uint8_t i = 0; i < d.nifaces; i++) {
        if (t->ops->usb_claim(t, c->dev, i) == 0)
            c->claimed |= 1u << i;
        else
            IFM_WARN("serial=%s client=%s usbip: interface %u cannot be claimed: its URBs fail with -EPERM",
                     serial_of(c), holder_of(c), i);
    }
    memset(c->alts, 0, sizeof c->alts);
    map_endpoints(c);
    return 0;
}

/* The requests the server executes itself, as the Linux stub does. 1 if `s` was
 * one of them (*status set), 0 to forward it. */
static int intercept(usbip_conn *c, const ifm_usb_setup *s, int *status)
{
    wrk_transport *t = c->s->t;
    if (s->bmRequestType == 0x00 && s->bRequest == 9) { /* SET_CONFIGURATION */
        wrk_usb_desc d;
        if (t->ops->usb_desc(t, c->dev, &d) == 0 && d.config_value == (uint8_t)s->wValue) {
            *status = 0; /* what vhci always sends: nothing to do */
            return 1;
        }
        release_claims(c);
        *status = t->ops->usb_set_config(t, c->dev, (uint8_t)s->wValue);
        if (claim_all(c) != 0)
            memset(c->eptype, EP_NONE, sizeof c->eptype);
        return 1;
    }
    if (s->bmRequestType == 0x01 && s->bRequest == 11) { /* SET_INTERFACE */
        uint8_t iface = (uint8_t)s->wIndex;
        if (iface >= WRK_USB_MAX_IFACES) {
            *status = -EPIPE;
            return 1;
        }
        *status = t->ops->usb_set_altsetting(t, c->dev, iface, (uint8_t)s->wValue);
        if (*status == 0) {
            c->alts[iface] = (uint8_t)s->wValue;
            map_endpoints(c);
        }
        return 1;
    }
    if (s->bmRequestType == 0x02 && s->bRequest == 1 && s->wValue == 0) { /* CLEAR_FEATURE(ENDPOINT_HALT) */
        *status = t->ops->usb_clear_halt(t, c->dev, (uint8_t)s->wIndex);
        return 1;
    }
    if (s->bmRequestType == 0x23 && s->bRequest == 3 && s->wValue == 4) { /* SET_FEATURE(PORT_RESET) */
        *status = t->ops->usb_reset(t, c->dev);
        return 1;
    }
    if (s->bmRequestType == 0x00 && s->bRequest == 5) { /* SET_ADDRESS: the host controller's job */
        *status = -EPIPE;
        return 1;
    }
    return 0;
}

static int errno_of_submit(int rc)
{
    switch (rc) {
    case -ENOENT:
    case -EINVAL:
        return -EPIPE; /* an endpoint the device does not have right now */
    default:
        return rc;
    }
}

static void handle_submit(usbip_conn *c, const ifm_usbip_urb *in)
{
    const ifm_usbip_hdr *h = &in->h;
    const ifm_usbip_cmd_submit *cs = &h->u.submit;
    bool dir_in = h->direction == IFM_USBIP_DIR_IN;
    wrk_transport *t = c->s->t;
    uint8_t type, iface = 0;
    ifm_series_add(stats(c)->urbs[path_of(c)], 1);
    if (h->ep == 0) {
        type = WRK_EP_CONTROL;
    } else {
        int slot = (int)h->ep | (dir_in ? 16 : 0);
        type = c->eptype[slot];
        iface = c->epif[slot];
        if (type == EP_NONE) {
            send_ret_submit(c, h->seqnum, -EPIPE, NULL, 0, dir_in, cs->number_of_packets);
            return;
        }
        if (!(c->claimed & (1u << iface))) {
            send_ret_submit(c, h->seqnum, -EPERM, NULL, 0, dir_in, cs->number_of_packets);
            return;
        }
        if (type == WRK_EP_ISO) {
            send_iso_refusal(c, h->seqnum, cs->number_of_packets);
            return;
        }
    }
    ifm_usb_setup s = { 0 };
    size_t size = (size_t)cs->transfer_buffer_length;
    if (type == WRK_EP_CONTROL) {
        ifm_usb_setup_get(cs->setup, &s);
        if (((s.bmRequestType & 0x80) != 0) != dir_in && s.wLength) {
            send_ret_submit(c, h->seqnum, -EINVAL, NULL, 0, dir_in, cs->number_of_packets);
            return;
        }
        int status;
        if (intercept(c, &s, &status)) {
            send_ret_submit(c, h->seqnum, status, NULL, 0, dir_in, cs->number_of_packets);
            return;
        }
        if (s.wLength > size) {
            send_ret_submit(c, h->seqnum, -EINVAL, NULL, 0, dir_in, cs->number_of_packets);
            return;
        }
    }
    srv_urb *r = calloc(1, sizeof *r);
    wrk_urb *u = r ? t->ops->urb_alloc(t, c->dev, size) : NULL;
    if (!u) {
        free(r);
        send_ret_submit(c, h->seqnum, -ENOMEM, NULL, 0, dir_in, cs->number_of_packets);
        return;
    }
    u->type = type;
    u->ep = (uint8_t)(h->ep | (dir_in ? 0x80 : 0));
    u->len = (uint32_t)cs->transfer_buffer_length;
    if (cs->transfer_flags & IFM_USBIP_URB_SHORT_NOT_OK)
        u->flags |= WRK_URB_SHORT_NOT_OK;
    if (cs->transfer_flags & IFM_USBIP_URB_ZERO_PACKET)
        u->flags |= WRK_URB_ZERO_PACKET;
    memcpy(u->setup, cs->setup, 8);
    if (!dir_in && in->data_len)
        memcpy(u->buf, in->data, in->data_len);
    u->done = urb_done;
    u->arg = r;
    *r = (srv_urb){ .c = c, .t = t, .u = u, .seqnum = h->seqnum, .in = dir_in, .np = cs->number_of_packets };
    int rc = t->ops->urb_submit(t, u);
    if (rc) {
        urb_release(r);
        send_ret_submit(c, h->seqnum, errno_of_submit(rc), NULL, 0, dir_in, cs->number_of_packets);
        return;
    }
    r->next = c->inflight;
    if (c->inflight)
        c->inflight->prev = r;
    c->inflight = r;
    c->ninflight++;
}

static void handle_unlink(usbip_conn *c, const ifm_usbip_hdr *h)
{
    for (srv_urb *r = c->inflight; r; r = r->next) {
        if (r->seqnum != h->u.unlink_seqnum || r->unlinking)
            continue;
        r->unlinking = true;
        r->unlink_seqnum = h->seqnum;
        /* -ENOENT: it is completing already; urb_done sends RET_SUBMIT, then RET_UNLINK 0 */
        c->s->t->ops->urb_cancel(c->s->t, r->u);
        return;
    }
    /* not in flight: it completed and its RET_SUBMIT went out */
    send_ret_unlink(c, h->seqnum, 0);
}

/* ---- the op phase ---- */

static void reply_status(usbip_conn *c, uint16_t code, uint32_t st, const char *why)
{
    uint8_t out[IFM_USBIP_OP_HDR_SIZE + 4];
    ssize_t n = code == IFM_USBIP_OP_REP_DEVLIST ? ifm_usbip_devlist_rep_pack(NULL, 0, out, sizeof out)
                                                 : ifm_usbip_op_rep_pack(code, st, out, sizeof out);
    if (n > 0)
        send_bytes(c, out, (size_t)n);
    usbip_conn_close(c, why);
}

static void handle_import(usbip_conn *c, const char *busid)
{
    usbip_export *e = usbip_export_find(c->s, busid);
    if (!e) {
        IFM_WARN("client=- usbip: %s asked for an unknown busid: Device not found", c->peer);
        ifm_series_add(stats(c)->refused[USBIP_REFUSED_UNKNOWN_BUSID], 1);
        reply_status(c, IFM_USBIP_OP_REP_IMPORT, IFM_USBIP_ST_NODEV, "unknown busid");
        return;
    }
    c->exp = e; /* for log lines; attached only on success */
    c->dev = e->dev;
    if (e->conn || hook(c, WRK_HOOK_BUSY_IMPORT)) {
        IFM_WARN("serial=%s client=%s usbip: import from %s refused: already imported", e->serial, e->holder, c->peer);
        c->exp = NULL;
        c->dev = NULL;
        ifm_series_add(stats(c)->refused[USBIP_REFUSED_BUSY], 1);
        reply_status(c, IFM_USBIP_OP_REP_IMPORT, IFM_USBIP_ST_DEV_BUSY, "busy");
        return;
    }
    wrk_transport *t = c->s->t;
    wrk_usb_desc d;
    if (!e->dev || t->ops->usb_desc(t, e->dev, &d) != 0) {
        IFM_INFO("serial=%s client=%s usbip: import from %s while the board re-enumerates: try again", e->serial,
                 e->holder, c->peer);
        c->exp = NULL;
        c->dev = NULL;
        ifm_series_add(stats(c)->refused[USBIP_REFUSED_NOT_PRESENT], 1);
        reply_status(c, IFM_USBIP_OP_REP_IMPORT, IFM_USBIP_ST_DEV_ERR, "device not present");
        return;
    }
    claim_all(c);
    ifm_usbip_device dev = {
        .busnum = d.busnum,
        .devnum = d.devnum,
        .speed = d.speed,
        .idVendor = (uint16_t)(d.device[8] | d.device[9] << 8),
        .idProduct = (uint16_t)(d.device[10] | d.device[11] << 8),
        .bcdDevice = (uint16_t)(d.device[12] | d.device[13] << 8),
        .bDeviceClass = d.device[4],
        .bDeviceSubClass = d.device[5],
        .bDeviceProtocol = d.device[6],
        .bConfigurationValue = d.config_value,
        .bNumConfigurations = d.device[17],
        .bNumInterfaces = d.nifaces,
    };
    snprintf(dev.path, sizeof dev.path, "/icefarm/%s", d.path);
    snprintf(dev.busid, sizeof dev.busid, "%s", e->token);
    uint8_t out[IFM_USBIP_IMPORT_REP_SIZE];
    ssize_t n = ifm_usbip_import_rep_pack(IFM_USBIP_ST_OK, &dev, out, sizeof out);
    if (n < 0) {
        ifm_series_add(stats(c)->refused[USBIP_REFUSED_ERROR], 1);
        reply_status(c, IFM_USBIP_OP_REP_IMPORT, IFM_USBIP_ST_ERROR, "cannot pack the device");
        return;
    }
    c->devid = ifm_usbip_devid(&dev);
    c->ph = PH_URB;
    e->conn = c;
    c->counted = true;
    ifm_series_add(stats(c)->sessions[path_of(c)], 1);
    ifm_series_add(stats(c)->sessions_total[path_of(c)], 1);
    IFM_INFO("serial=%s client=%s usbip: imported by %s (%04x:%04x, devid 0x%x)", e->serial, e->holder, c->peer,
             dev.idVendor, dev.idProduct, c->devid);
    send_bytes(c, out, (size_t)n);
}

/* ---- input ---- */

static int shape_of(void *arg, const ifm_usbip_hdr *h, ifm_usbip_shape *shape, ifm_err *err)
{
    usbip_conn *c = arg;
    if (h->command != IFM_USBIP_CMD_SUBMIT && h->command != IFM_USBIP_CMD_UNLINK) {
        ifm_err_set(err, "command %u is a reply; a client sends CMD_SUBMIT or CMD_UNLINK", h->command);
        return -EPROTO;
    }
    if (h->devid != c->devid) {
        ifm_err_set(err, "seqnum %u: devid 0x%x, the imported device is 0x%x", h->seqnum, h->devid, c->devid);
        return -EPROTO;
    }
    shape->in = false;
    shape->iso = false;
    if (h->command == IFM_USBIP_CMD_SUBMIT && h->ep)
        shape->iso = c->eptype[h->ep | (h->direction ? 16 : 0)] == WRK_EP_ISO;
    return 0;
}

/* One PDU from rx: bytes consumed, 0 for more, <0 closed. */
static ssize_t step(usbip_conn *c)
{
    ifm_err err = { "" };
    ssize_t n;
    if (c->ph == PH_OP) {
        ifm_usbip_op_req req;
        n = ifm_usbip_op_req_unpack(c->rx, c->rxlen, &req, &err);
        if (n > 0) {
            if (req.code == IFM_USBIP_OP_REQ_DEVLIST) /* never lists anything: leased devices are private */
                reply_status(c, IFM_USBIP_OP_REP_DEVLIST, IFM_USBIP_ST_OK, "devlist answered");
            else
                handle_import(c, req.busid);
        }
    } else {
        ifm_usbip_urb u;
        n = ifm_usbip_urb_unpack(c->rx, c->rxlen, shape_of, c, &u, NULL, &err);
        if (n > 0) {
            if (u.h.command == IFM_USBIP_CMD_SUBMIT)
                handle_submit(c, &u);
            else
                handle_unlink(c, &u.h);
        }
    }
    if (n < 0) {
        IFM_WARN("serial=%s client=%s usbip: protocol violation from %s: %s", serial_of(c), holder_of(c), c->peer,
                 err.msg);
        usbip_conn_close(c, "protocol violation");
    }
    return n;
}

void usbip_conn_feed(usbip_conn *c, const uint8_t *data, size_t len)
{
    if (c->ph == PH_CLOSED || !len)
        return;
    if (c->rxlen + len > c->rxcap) {
        uint8_t *p = ifm_grow_bytes(c->rx, &c->rxcap, c->rxlen + len, 4096, 2 * RX_MAX);
        if (!p) {
            usbip_conn_close(c, "out of memory");
            return;
        }
        c->rx = p;
    }
    memcpy(c->rx + c->rxlen, data, len);
    c->rxlen += len;
    size_t off = 0;
    c->feeding = true;
    while (c->ph != PH_CLOSED && off < c->rxlen) {
        /* step() reads from c->rx: shift consumed bytes out first */
        if (off) {
            memmove(c->rx, c->rx + off, c->rxlen - off);
            c->rxlen -= off;
            off = 0;
        }
        ssize_t n = step(c);
        if (n <= 0)
            break;
        off = (size_t)n;
    }
    if (off && c->ph != PH_CLOSED) {
        memmove(c->rx, c->rx + off, c->rxlen - off);
        c->rxlen -= off;
    }
    c->feeding = false;
}

void usbip_conn_drained(usbip_conn *c)
{
    if (c->paused && c->ph != PH_CLOSED) {
        c->paused = false;
        c->io->pause(c->ioc, false);
    }
}

/* ---- life ---- */

usbip_conn *usbip_conn_new(usbip_server *s, const usbip_io *io, void *ctx, const char *peer)
{
    usbip_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->s = s;
    c->io = io;
    c->ioc = ctx;
    snprintf(c->peer, sizeof c->peer, "%s", peer ? peer : "?");
    memset(c->eptype, EP_NONE, sizeof c->eptype);
    c->next = s->conns;
    s->conns = c;
    return c;
}

static void detach(usbip_conn *c)
{
    if (c->counted) {
        c->counted = false;
        ifm_series_add(stats(c)->sessions[path_of(c)], -1);
    }
    orphan_urbs(c);
    release_claims(c);
    if (c->exp && c->exp->conn == c)
        c->exp->conn = NULL;
    c->exp = NULL;
    c->dev = NULL;
}

void usbip_conn_close(usbip_conn *c, const char *why)
{
    if (c->ph == PH_CLOSED)
        return;
    if (c->ph == PH_URB)
        IFM_INFO("serial=%s client=%s usbip: connection from %s closed: %s (%zu URBs in flight)", serial_of(c),
                 holder_of(c), c->peer, why, c->ninflight);
    detach(c);
    c->ph = PH_CLOSED;
    c->have_held = false;
    if (c->paused) { /* keep reading (and dropping) until the client hangs up: no reset */
        c->paused = false;
        c->io->pause(c->ioc, false);
    }
    c->io->end(c->ioc);
}

static void unlink_conn(usbip_conn *c)
{
    for (usbip_conn **pp = &c->s->conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
}

static void destroy(usbip_conn *c)
{
    detach(c);
    unlink_conn(c);
    free(c->rx);
    free(c->tx);
    free(c);
}

void usbip_conn_gone(usbip_conn *c)
{
    if (c->ph == PH_URB)
        IFM_INFO("serial=%s client=%s usbip: %s hung up (%zu URBs in flight, cancelled)", serial_of(c), holder_of(c),
                 c->peer, c->ninflight);
    destroy(c);
}

void usbip_conn_abort(usbip_conn *c)
{
    void *ctx = c->ioc;
    const usbip_io *io = c->io;
    destroy(c);
    io->abort(ctx);
}
