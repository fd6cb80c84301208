/* The USB/IP client connection (usbip_conn.h): op phase, URB phase, the in-flight
 * table, UNLINK bookkeeping. Wire format only through icefarm/usbip.h. */
#include "usbip_conn.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "icefarm/grow.h"
#include "icefarm/log.h"
#include "internal.h"

#define MAX_DEVLIST 64
#define MAX_GHOSTS 4096 /* unlinked URBs whose server answers are still due */

/* A URB we gave up on (timeout, cancel) whose RET_SUBMIT and/or RET_UNLINK may
 * still arrive. */
typedef struct ghost {
    struct ghost *next;
    uint32_t target;     /* the URB's seqnum */
    uint32_t unlink_seq; /* our CMD_UNLINK's seqnum */
    bool in;             /* a RET_SUBMIT for it carries IN data */
    bool target_open;    /* a RET_SUBMIT may still come */
    bool unlink_open;    /* the RET_UNLINK has not come */
    bool passed;         /* another URB's RET_SUBMIT arrived while the RET_UNLINK was due */
} ghost;

typedef enum {
    PH_IDLE,    /* nothing asked yet */
    PH_IMPORT,  /* IMPORT sent, reply due */
    PH_DEVLIST, /* DEVLIST sent, reply due */
    PH_URB,     /* imported */
    PH_OVER
} phase;

struct usbc_conn {
    ifm_loop *loop;
    usbc_io io;
    void *io_ctx;
    usbc_conn_cbs cbs;
    void *arg;
    char peer[96];
    const struct icefarm *log_f; /* the sink of our log lines (NULL: ifm_log) */
    uint64_t op_timeout_ms;
    uint64_t op_timer;
    phase ph;
    bool carrier_up;
    uint8_t *pending_req; /* an op request made before the carrier was up */
    size_t pending_len;
    ifm_usbip_device dev;
    uint32_t devid;
    uint32_t next_seq;
    usbc_urb *inflight;
    ghost *ghosts;
    size_t nghosts;
    usbc_urb *deferred; /* cancelled URBs whose done runs from the loop */
    uint64_t defer_timer;
    uint8_t *rx;
    size_t rx_len, rx_cap;
    uint8_t *tx;
    size_t tx_cap;
    usbc_stats stats;
    int depth;  /* callbacks running */
    bool freed; /* usbc_conn_free() inside a callback: free on the way out */
};

static void conn_destroy(usbc_conn *c);

/* ---- callbacks with re-entrancy protection ---- */

static void enter(usbc_conn *c)
{
    c->depth++;
}

/* true if the connection is gone and the caller must stop touching it */
static bool leave(usbc_conn *c)
{
    if (--c->depth == 0 && c->freed) {
        conn_destroy(c);
        return true;
    }
    return c->freed;
}

static void complete(usbc_conn *c, usbc_urb *u, int status)
{
    u->status = status;
    u->busy = false;
    u->conn = NULL;
    if (u->timer) {
        ifm_timer_cancel(c->loop, u->timer);
        u->timer = 0;
    }
    c->stats.completed++;
    if (u->done)
        u->done(u);
}

static void unlink_inflight(usbc_conn *c, usbc_urb *u)
{
    for (usbc_urb **pp = &c->inflight; *pp; pp = &(*pp)->next)
        if (*pp == u) {
            *pp = u->next;
            u->next = NULL;
            return;
        }
}

/* ---- ending ---- */

static void end(usbc_conn *c, int status, const char *why)
{
    if (c->ph == PH_OVER)
        return;
    phase was = c->ph;
    c->ph = PH_OVER;
    if (c->op_timer) {
        ifm_timer_cancel(c->loop, c->op_timer);
        c->op_timer = 0;
    }
    if (c->io.close)
        c->io.close(c->io_ctx);
    c->io.close = NULL;
    c->io.write = NULL;
    LIB_DEBUG(c->log_f, "usbip client=%s connection over: %s", c->peer, why);
    enter(c);
    /* the op phase's caller hears of it through its own callback first */
    if (was == PH_IMPORT && c->cbs.on_import)
        c->cbs.on_import(c, status ? status : -ESHUTDOWN, NULL, why, c->arg);
    else if (was == PH_DEVLIST && c->cbs.on_devlist)
        c->cbs.on_devlist(c, status ? status : -ESHUTDOWN, NULL, 0, why, c->arg);
    while (!c->freed && c->inflight) {
        usbc_urb *u = c->inflight;
        c->inflight = u->next;
        u->next = NULL;
        complete(c, u, -ESHUTDOWN);
    }
    while (!c->freed && c->deferred) {
        usbc_urb *u = c->deferred;
        c->deferred = u->next;
        u->next = NULL;
        complete(c, u, u->status);
    }
    if (!c->freed && c->cbs.on_end)
        c->cbs.on_end(c, status, why, c->arg);
    leave(c);
}

static void fail(usbc_conn *c, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(usbc_conn *c, int status, const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (status == -EPROTO || status == -EMSGSIZE)
        LIB_WARN(c->log_f, "usbip client=%s protocol violation by the server: %s", c->peer, why);
    end(c, status, why);
}

/* ---- sending ---- */

static int send_bytes(usbc_conn *c, const uint8_t *p, size_t n)
{
    if (!c->io.write)
        return -ENOTCONN;
    int rc = c->io.write(c->io_ctx, p, n);
    return rc < 0 ? rc : 0;
}

static uint8_t *tx_room(usbc_conn *c, size_t n)
{
    if (n > c->tx_cap) {
        uint8_t *p = realloc(c->tx, n);
        if (!p)
            return NULL;
        c->tx = p;
        c->tx_cap = n;
    }
    return c->tx;
}

static void op_timeout(ifm_loop *loop, void *arg)
{
    (void)loop;
    usbc_conn *c = arg;
    c->op_timer = 0;
    fail(c, -ETIMEDOUT, "no reply to the %s request within %llu ms", c->ph == PH_IMPORT ? "IMPORT" : "DEVLIST",
         (unsigned long long)c->op_timeout_ms);
}

static int send_op(usbc_conn *c, const uint8_t *req, size_t n)
{
    c->op_timer = ifm_timer_add(c->loop, c->op_timeout_ms, op_timeout, c);
    if (!c->carrier_up) {
        c->pending_req = malloc(n);
        if (!c->pending_req)
            return -ENOMEM;
        memcpy(c->pending_req, req, n);
        c->pending_len = n;
        return 0;
    }
    return send_bytes(c, req, n);
}

int usbc_conn_import(usbc_conn *c, const char *busid)
{
    if (c->ph != PH_IDLE)
        return -EALREADY;
    uint8_t req[IFM_USBIP_IMPORT_REQ_SIZE];
    ssize_t n = ifm_usbip_import_req_pack(busid, req, sizeof req);
    if (n < 0)
        return -EINVAL;
    c->ph = PH_IMPORT;
    return send_op(c, req, (size_t)n);
}

int usbc_conn_devlist(usbc_conn *c)
{
    if (c->ph != PH_IDLE)
        return -EALREADY;
    uint8_t req[IFM_USBIP_OP_HDR_SIZE];
    ssize_t n = ifm_usbip_devlist_req_pack(req, sizeof req);
    if (n < 0)
        return -EINVAL;
    c->ph = PH_DEVLIST;
    return send_op(c, req, (size_t)n);
}

void usbc_conn_carrier_up(usbc_conn *c)
{
    c->carrier_up = true;
    if (c->pending_req) {
        int rc = send_bytes(c, c->pending_req, c->pending_len);
        free(c->pending_req);
        c->pending_req = NULL;
        if (rc)
            fail(c, rc, "could not send the request: %s", ifm_strerror(rc));
    }
}

void usbc_control_setup(usbc_urb *u, uint8_t bmRequestType, uint8_t bRequest, uint16_t wValue, uint16_t wIndex,
                        uint16_t wLength)
{
    ifm_usb_setup s = { bmRequestType, bRequest, wValue, wIndex, wLength };
    ifm_usb_setup_put(&s, u->setup);
    u->ep = bmRequestType & 0x80;
    u->type = 0;
}

static void urb_timeout(ifm_loop *loop, void *arg);

static ghost *ghost_add(usbc_conn *c, uint32_t target, bool in)
{
    if (c->nghosts >= MAX_GHOSTS) {
        /* forget the oldest; if its answers still come, that is a violation we report */
        ghost **pp = &c->ghosts;
        while ((*pp)->next)
            pp = &(*pp)->next;
        free(*pp);
        *pp = NULL;
        c->nghosts--;
    }
    ghost *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->target = target;
    g->in = in;
    g->target_open = true;
    g->unlink_open = true;
    g->next = c->ghosts;
    c->ghosts = g;
    c->nghosts++;
    return g;
}

static void ghost_maybe_free(usbc_conn *c, ghost *g)
{
    if (g->target_open || g->unlink_open)
        return;
    for (ghost **pp = &c->ghosts; *pp; pp = &(*pp)->next)
        if (*pp == g) {
            *pp = g->next;
            free(g);
            c->nghosts--;
            return;
        }
}

/* Sends CMD_UNLINK for u (in flight) and turns it into a ghost. */
static int unlink_urb(usbc_conn *c, usbc_urb *u)
{
    ghost *g = ghost_add(c, u->seqnum, (u->ep & 0x80) != 0);
    if (!g)
        return -ENOMEM;
    g->unlink_seq = ++c->next_seq;
    ifm_usbip_hdr h = { .command = IFM_USBIP_CMD_UNLINK, .seqnum = g->unlink_seq, .devid = c->devid };
    h.u.unlink_seqnum = u->seqnum;
    uint8_t pdu[IFM_USBIP_URB_HDR_SIZE];
    ifm_usbip_hdr_pack(&h, pdu);
    c->stats.unlinks_sent++;
    unlink_inflight(c, u);
    return send_bytes(c, pdu, sizeof pdu);
}

int usbc_submit(usbc_conn *c, usbc_urb *u)
{
    if (c->ph != PH_URB)
        return -ENOTCONN;
    if (u->busy)
        return -EBUSY;
    if (u->len > IFM_USBIP_MAX_TRANSFER || (u->len && !u->buf))
        return -EINVAL;
    bool in = u->type == 0 ? (u->setup[0] & 0x80) != 0 : (u->ep & 0x80) != 0;
    if (u->type == 0) {
        ifm_usb_setup s;
        ifm_usb_setup_get(u->setup, &s);
        if (s.wLength != u->len)
            return -EINVAL;
    }
    ifm_usbip_hdr h = {
        .command = IFM_USBIP_CMD_SUBMIT,
        .seqnum = ++c->next_seq,
        .devid = c->devid,
        .direction = in ? IFM_USBIP_DIR_IN : IFM_USBIP_DIR_OUT,
        .ep = u->ep & 0x0f,
    };
    h.u.submit.transfer_flags =
        (u->flags & (IFM_USBIP_URB_SHORT_NOT_OK | IFM_USBIP_URB_ZERO_PACKET)) | (in ? IFM_USBIP_URB_DIR_IN : 0);
    h.u.submit.transfer_buffer_length = (int32_t)u->len;
    h.u.submit.start_frame = u->type == 3 ? -1 : 0;
    h.u.submit.number_of_packets = 0; /* what Linux vhci sends for non-ISO URBs */
    h.u.submit.interval = (int32_t)u->interval;
    if (u->type == 0)
        memcpy(h.u.submit.setup, u->setup, 8);
    size_t data = in ? 0 : u->len;
    uint8_t *out = tx_room(c, ifm_usbip_urb_pdu_size(data, 0));
    if (!out)
        return -ENOMEM;
    ssize_t n = ifm_usbip_urb_pack(&h, in ? NULL : u->buf, data, NULL, 0, out, c->tx_cap);
    if (n < 0)
        return (int)n;
    int rc = send_bytes(c, out, (size_t)n);
    if (rc)
        return rc;
    u->seqnum = h.seqnum;
    u->conn = c;
    u->busy = true;
    u->status = 0;
    u->actual = 0;
    u->next = c->inflight;
    c->inflight = u;
    u->timer = u->timeout_ms ? ifm_timer_add(c->loop, u->timeout_ms, urb_timeout, u) : 0;
    c->stats.submitted++;
    return 0;
}

static void urb_timeout(ifm_loop *loop, void *arg)
{
    (void)loop;
    usbc_urb *u = arg;
    usbc_conn *c = u->conn;
    u->timer = 0;
    c->stats.timeouts++;
    LIB_DEBUG(c->log_f, "usbip client=%s seqnum=%u ep=0x%02x no reply within %llu ms: unlinking", c->peer, u->seqnum,
              u->ep, (unsigned long long)u->timeout_ms);
    int rc = unlink_urb(c, u);
    enter(c);
    complete(c, u, -ETIMEDOUT);
    if (leave(c))
        return;
    if (rc)
        fail(c, rc, "could not send CMD_UNLINK: %s", ifm_strerror(rc));
}

static void run_deferred(ifm_loop *loop, void *arg)
{
    (void)loop;
    usbc_conn *c = arg;
    c->defer_timer = 0;
    enter(c);
    while (!c->freed && c->deferred) {
        usbc_urb *u = c->deferred;
        c->deferred = u->next;
        u->next = NULL;
        complete(c, u, u->status);
    }
    leave(c);
}

int usbc_cancel(usbc_urb *u)
{
    usbc_conn *c = u->conn;
    if (!c || !u->busy)
        return -ENOENT;
    bool found = false;
    for (usbc_urb *p = c->inflight; p; p = p->next)
        found |= p == u;
    if (!found)
        return -ENOENT; /* already in the deferred list */
    int rc = unlink_urb(c, u);
    if (u->timer) {
        ifm_timer_cancel(c->loop, u->timer);
        u->timer = 0;
    }
    u->status = -ECONNRESET;
    u->next = c->deferred;
    c->deferred = u;
    if (!c->defer_timer)
        c->defer_timer = ifm_timer_add(c->loop, 0, run_deferred, c);
    if (rc && c->ph == PH_URB)
        fail(c, rc, "could not send CMD_UNLINK: %s", ifm_strerror(rc));
    return 0;
}

/* ---- receiving ---- */

static usbc_urb *find_inflight(usbc_conn *c, uint32_t seq)
{
    for (usbc_urb *u = c->inflight; u; u = u->next)
        if (u->seqnum == seq)
            return u;
    return NULL;
}

static ghost *find_ghost_target(usbc_conn *c, uint32_t seq)
{
    for (ghost *g = c->ghosts; g; g = g->next)
        if (g->target_open && g->target == seq)
            return g;
    return NULL;
}

static ghost *find_ghost_unlink(usbc_conn *c, uint32_t seq)
{
    for (ghost *g = c->ghosts; g; g = g->next)
        if (g->unlink_open && g->unlink_seq == seq)
            return g;
    return NULL;
}

static int shape_of(void *arg, const ifm_usbip_hdr *h, ifm_usbip_shape *shape, ifm_err *err)
{
    usbc_conn *c = arg;
    shape->iso = false;
    shape->in = false;
    if (h->command == IFM_USBIP_RET_UNLINK)
        return 0;
    if (h->command != IFM_USBIP_RET_SUBMIT)
        return ifm_fail(err, -EPROTO, "command %u from a server (seqnum %u)", h->command, h->seqnum);
    usbc_urb *u = find_inflight(c, h->seqnum);
    if (u) {
        shape->in = u->type == 0 ? (u->setup[0] & 0x80) != 0 : (u->ep & 0x80) != 0;
        return 0;
    }
    ghost *g = find_ghost_target(c, h->seqnum);
    if (g) {
        shape->in = g->in;
        return 0;
    }
    return ifm_fail(err, -EPROTO, "RET_SUBMIT for seqnum %u, which is not in flight", h->seqnum);
}

static void on_ret_submit(usbc_conn *c, const ifm_usbip_urb *p)
{
    for (ghost *g = c->ghosts; g; g = g->next)
        if (g->unlink_open && g->target != p->h.seqnum)
            g->passed = true;
    usbc_urb *u = find_inflight(c, p->h.seqnum);
    if (!u) {
        ghost *g = find_ghost_target(c, p->h.seqnum);
        if (g) {
            g->target_open = false;
            c->stats.dropped_ret_submit++;
            ghost_maybe_free(c, g);
        }
        return;
    }
    bool in = u->type == 0 ? (u->setup[0] & 0x80) != 0 : (u->ep & 0x80) != 0;
    int32_t actual = p->h.u.ret.actual_length;
    if (actual < 0 || (uint32_t)actual > u->len) {
        fail(c, -EPROTO, "RET_SUBMIT seqnum %u: actual_length %d for a %u-byte URB", u->seqnum, actual, u->len);
        return;
    }
    if (in && p->data_len)
        memcpy(u->buf, p->data, p->data_len);
    u->actual = (uint32_t)actual;
    unlink_inflight(c, u);
    complete(c, u, p->h.u.ret.status > 0 ? -EIO : p->h.u.ret.status);
}

static void on_ret_unlink(usbc_conn *c, const ifm_usbip_hdr *h)
{
    ghost *g = find_ghost_unlink(c, h->seqnum);
    if (!g) {
        LIB_DEBUG(c->log_f, "usbip client=%s RET_UNLINK seqnum %u (status %d) for no CMD_UNLINK of ours: ignored",
                  c->peer, h->seqnum, h->u.unlink_status);
        return;
    }
    g->unlink_open = false;
    if (g->passed)
        c->stats.ret_unlink_late++;
    if (h->u.unlink_status == -ECONNRESET) {
        c->stats.ret_unlink_reset++;
        g->target_open = false; /* cancelled: no RET_SUBMIT will come */
    } else {
        c->stats.ret_unlink_done++;
        /* it had completed: its RET_SUBMIT came before this (TCP keeps order) */
        g->target_open = false;
    }
    ghost_maybe_free(c, g);
}

static size_t parse_op(usbc_conn *c)
{
    ifm_err err = { { 0 } };
    uint32_t st = 0;
    if (c->ph == PH_IMPORT) {
        ifm_usbip_device dev;
        ssize_t n = ifm_usbip_import_rep_unpack(c->rx, c->rx_len, &st, &dev, &err);
        if (n == 0)
            return 0;
        ifm_timer_cancel(c->loop, c->op_timer);
        c->op_timer = 0;
        if (n < 0) {
            fail(c, (int)n, "bad IMPORT reply: %s", err.msg);
            return 0;
        }
        if (st != IFM_USBIP_ST_OK) {
            int code = st == IFM_USBIP_ST_NODEV ? -ENOENT
                : st == IFM_USBIP_ST_DEV_BUSY   ? -EBUSY
                : st == IFM_USBIP_ST_DEV_ERR    ? -EAGAIN
                : st == IFM_USBIP_ST_NA         ? -EACCES
                                                : -EIO;
            if (st == IFM_USBIP_ST_DEV_BUSY)
                fail(c, code,
                     "import refused: status %u (%s): the device is already in use by another USB/IP client "
                     "(one import at a time: end the other icefarm-cli serial, usbip attach or tunnel session)",
                     st, ifm_usbip_status_str(st));
            else if (st == IFM_USBIP_ST_DEV_ERR)
                fail(c, code, "import refused: status %u (%s): the device is re-enumerating", st,
                     ifm_usbip_status_str(st));
            else
                fail(c, code, "import refused: status %u (%s)", st, ifm_usbip_status_str(st));
            return 0;
        }
        c->dev = dev;
        c->devid = ifm_usbip_devid(&dev);
        c->ph = PH_URB;
        enter(c);
        if (c->cbs.on_import)
            c->cbs.on_import(c, 0, &c->dev, "", c->arg);
        if (leave(c))
            return SIZE_MAX;
        return (size_t)n;
    }
    /* DEVLIST */
    ifm_usbip_devlist_entry *devs = calloc(MAX_DEVLIST, sizeof *devs);
    if (!devs) {
        fail(c, -ENOMEM, "out of memory");
        return 0;
    }
    uint32_t ndev = 0;
    size_t need = 0;
    ssize_t n = ifm_usbip_devlist_rep_unpack(c->rx, c->rx_len, &st, devs, MAX_DEVLIST, &ndev, &need, &err);
    if (n == 0) {
        free(devs);
        return 0;
    }
    ifm_timer_cancel(c->loop, c->op_timer);
    c->op_timer = 0;
    if (n < 0) {
        free(devs);
        fail(c, (int)n, "bad DEVLIST reply: %s", err.msg);
        return 0;
    }
    if (st != IFM_USBIP_ST_OK) {
        free(devs);
        fail(c, -EIO, "DEVLIST refused: status %u (%s)", st, ifm_usbip_status_str(st));
        return 0;
    }
    c->ph = PH_OVER; /* one request per connection, as usbipd */
    enter(c);
    if (c->cbs.on_devlist)
        c->cbs.on_devlist(c, 0, devs, ndev < MAX_DEVLIST ? ndev : MAX_DEVLIST, "", c->arg);
    free(devs);
    if (c->io.close && !c->freed)
        c->io.close(c->io_ctx);
    c->io.close = NULL;
    c->io.write = NULL;
    if (!c->freed && c->cbs.on_end)
        c->cbs.on_end(c, 0, "listed", c->arg);
    leave(c);
    return SIZE_MAX;
}

void usbc_conn_feed(usbc_conn *c, const uint8_t *data, size_t len)
{
    if (c->ph == PH_OVER || c->freed)
        return;
    if (c->ph == PH_IDLE) {
        fail(c, -EPROTO, "%zu bytes from the server before any request", len);
        return;
    }
    if (c->rx_len + len > c->rx_cap) {
        uint8_t *p = ifm_grow_bytes(c->rx, &c->rx_cap, c->rx_len + len, 4096, 0);
        if (!p) {
            fail(c, -ENOMEM, "out of memory for %zu bytes of input", c->rx_len + len);
            return;
        }
        c->rx = p;
    }
    memcpy(c->rx + c->rx_len, data, len);
    c->rx_len += len;
    enter(c);
    size_t off = 0;
    while (!c->freed && c->ph != PH_OVER && off < c->rx_len) {
        if (c->ph == PH_IMPORT || c->ph == PH_DEVLIST) {
            /* parse_op works on the buffer's start */
            if (off) {
                memmove(c->rx, c->rx + off, c->rx_len - off);
                c->rx_len -= off;
                off = 0;
            }
            size_t n = parse_op(c);
            if (n == SIZE_MAX || n == 0)
                break;
            off = n;
            continue;
        }
        ifm_usbip_urb p;
        ifm_err err = { { 0 } };
        size_t need = 0;
        ssize_t n = ifm_usbip_urb_unpack(c->rx + off, c->rx_len - off, shape_of, c, &p, &need, &err);
        if (n == 0)
            break;
        if (n < 0) {
            fail(c, (int)n, "bad URB PDU: %s", err.msg);
            break;
        }
        off += (size_t)n;
        if (p.h.command == IFM_USBIP_RET_SUBMIT)
            on_ret_submit(c, &p);
        else
            on_ret_unlink(c, &p.h);
    }
    if (leave(c))
        return;
    if (off && c->ph != PH_OVER) {
        memmove(c->rx, c->rx + off, c->rx_len - off);
        c->rx_len -= off;
    }
}

void usbc_conn_carrier_end(usbc_conn *c, int status, const char *why)
{
    c->io.close = NULL; /* the carrier is gone already */
    c->io.write = NULL;
    if (c->ph == PH_OVER)
        return;
    if (!c->carrier_up) /* it never connected: no server ever spoke */
        fail(c, status ? status : -ESHUTDOWN, "%s", why && *why ? why : "cannot connect");
    else if (c->rx_len && c->ph == PH_URB)
        fail(c, -ECONNRESET, "the server closed the connection in the middle of a PDU (%zu bytes of it came)%s%s",
             c->rx_len, why && *why ? ": " : "", why ? why : "");
    else
        fail(c, status ? status : -ESHUTDOWN, "the server closed the connection%s%s", why && *why ? ": " : "",
             why ? why : "");
}

/* ---- life cycle ---- */

usbc_conn *usbc_conn_new(ifm_loop *loop, const usbc_io *io, void *io_ctx, const usbc_conn_cbs *cbs, void *arg,
                         const char *peer, uint64_t op_timeout_ms)
{
    usbc_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->loop = loop;
    c->io = *io;
    c->io_ctx = io_ctx;
    if (cbs)
        c->cbs = *cbs;
    c->arg = arg;
    snprintf(c->peer, sizeof c->peer, "%s", peer ? peer : "?");
    c->op_timeout_ms = op_timeout_ms ? op_timeout_ms : 10000;
    c->ph = PH_IDLE;
    return c;
}

static void conn_destroy(usbc_conn *c)
{
    if (c->op_timer)
        ifm_timer_cancel(c->loop, c->op_timer);
    if (c->defer_timer)
        ifm_timer_cancel(c->loop, c->defer_timer);
    for (usbc_urb *u = c->inflight; u; u = u->next) {
        if (u->timer)
            ifm_timer_cancel(c->loop, u->timer);
        u->timer = 0;
        u->busy = false;
        u->conn = NULL;
    }
    for (usbc_urb *u = c->deferred; u; u = u->next) {
        u->busy = false;
        u->conn = NULL;
    }
    while (c->ghosts) {
        ghost *g = c->ghosts;
        c->ghosts = g->next;
        free(g);
    }
    free(c->pending_req);
    free(c->rx);
    free(c->tx);
    free(c);
}

void usbc_conn_set_log(usbc_conn *c, const struct icefarm *f)
{
    c->log_f = f;
}

void usbc_conn_free(usbc_conn *c)
{
    if (!c || c->freed)
        return;
    if (c->io.close)
        c->io.close(c->io_ctx);
    c->io.close = NULL;
    c->io.write = NULL;
    c->ph = PH_OVER;
    c->freed = true;
    if (c->depth == 0)
        conn_destroy(c);
}

const ifm_usbip_device *usbc_conn_device(const usbc_conn *c)
{
    return &c->dev;
}

const char *usbc_conn_peer(const usbc_conn *c)
{
    return c->peer;
}

const usbc_stats *usbc_conn_stats(const usbc_conn *c)
{
    return &c->stats;
}

size_t usbc_conn_inflight(const usbc_conn *c)
{
    size_t n = 0;
    for (const usbc_urb *u = c->inflight; u; u = u->next)
        n++;
    return n;
}
