/* One USB/IP client connection: the client's half of the protocol on a byte
 * stream (TCP, or the broker tunnel), on an ifm_loop. Internal to libicefarm.
 *
 *   phase 1  one op request: DEVLIST (the server then closes) or IMPORT;
 *   phase 2  after a successful IMPORT: URBs. Any number in flight, matched to
 *            their RET_SUBMIT by seqnum (the reply's direction field is 0, so the
 *            direction comes from our own record), replies in any order.
 *
 * URBs. The caller owns a usbc_urb and its buffer; usbc_submit() sends it and
 * `done` runs exactly once, from the loop (never inside usbc_submit), with
 * status 0 or a negative errno, after which the connection no longer touches
 * the URB or its buffer:
 *   - the server's status (-EPIPE stall, -ENODEV device gone, -EPERM, ...);
 *   - -ETIMEDOUT when urb->timeout_ms passed without a reply, or -ECONNRESET
 *     after usbc_cancel(): the connection sends CMD_UNLINK and calls done at once,
 *     without waiting for the RET_UNLINK. What the server answers later is
 *     consumed by a record of its own: RET_UNLINK -ECONNRESET (no RET_SUBMIT will
 *     come), or a RET_SUBMIT (data dropped) followed by RET_UNLINK 0, which the
 *     Linux 6.1 stub sends only after its next completion (observed under QEMU): any order,
 *     any delay, nobody waits for it;
 *   - -ESHUTDOWN when the connection ends with the URB in flight.
 * Protocol violations from the server (malformed PDU, a RET_SUBMIT for a seqnum
 * never sent, more IN data than asked for) end the connection with -EPROTO.
 *
 * Lifetime: usbc_conn_new() makes it; on_end(status, why) runs once when the
 * connection is over (carrier closed, protocol violation, DEVLIST answered), after
 * every URB's done; the owner then calls usbc_conn_free() (also allowed from
 * on_end). usbc_conn_free() at any other time ends it silently: no callback
 * runs, URBs in flight are forgotten (their done never runs; their memory is the
 * caller's to free).
 * Re-entrancy: every function may be called from inside any callback of this
 * connection; everything runs on the loop's thread.
 */
#ifndef ICEFARM_LIB_USBIP_CONN_H
#define ICEFARM_LIB_USBIP_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "icefarm/err.h"
#include "icefarm/loop.h"
#include "icefarm/usbip.h"

struct icefarm; /* the library handle (internal.h) */
typedef struct usbc_conn usbc_conn;
typedef struct usbc_urb usbc_urb;

/* A byte-stream carrier under a connection (usbip_tcp.c, usbip_tunnel.c). */
typedef struct {
    /* Queue bytes for the server: 0, or a negative errno (the carrier is broken:
     * it reports the end through usbc_conn_carrier_end). */
    int (*write)(void *ctx, const uint8_t *data, size_t len);
    /* Close now; no further usbc_conn_* call from the carrier. */
    void (*close)(void *ctx);
} usbc_io;

struct usbc_urb {
    /* the request */
    uint8_t ep;          /* endpoint address with the direction bit; 0x00 (or 0x80) for control */
    uint8_t type;        /* 0 control, 2 bulk, 3 interrupt (the endpoint's type) */
    uint32_t flags;      /* IFM_USBIP_URB_SHORT_NOT_OK / ZERO_PACKET */
    uint8_t setup[8];    /* control: the SETUP packet; its bit 7 of bmRequestType gives the direction */
    uint8_t *buf;        /* OUT data, or room for IN data; the caller's, until done */
    uint32_t len;        /* bytes to send, or room to receive */
    uint32_t interval;   /* interrupt endpoints: bInterval */
    uint64_t timeout_ms; /* 0: none (a bulk IN that waits for data) */
    void (*done)(usbc_urb *u);
    void *arg;
    /* the result */
    int status;
    uint32_t actual;
    /* the connection's */
    usbc_conn *conn;
    uint32_t seqnum;
    uint64_t timer;
    usbc_urb *next;
    bool busy;
};

typedef struct {
    /* The op reply. status 0 with dev (IMPORT ok; phase 2 begins), or a negative
     * errno with why: -ENOENT (ST_NODEV), -EBUSY (ST_DEV_BUSY), -EAGAIN
     * (ST_DEV_ERR: the device is re-enumerating), -EACCES/-EIO (ST_NA/ST_ERROR),
     * -EPROTO (a wrong version or reply), -ETIMEDOUT. After a failure on_end follows. */
    void (*on_import)(usbc_conn *c, int status, const ifm_usbip_device *dev, const char *why, void *arg);
    /* DEVLIST: the devices (n of them, up to the 64 kept), or a failure. */
    void (*on_devlist)(usbc_conn *c, int status, const ifm_usbip_devlist_entry *devs, size_t n, const char *why,
                       void *arg);
    /* The connection is over: 0 after a DEVLIST, else -ESHUTDOWN (the server
     * closed), -EPROTO (a protocol violation), -ECONNRESET... with a reason. */
    void (*on_end)(usbc_conn *c, int status, const char *why, void *arg);
} usbc_conn_cbs;

/* Counters for logs and tests. */
typedef struct {
    uint64_t submitted, completed, timeouts, unlinks_sent;
    uint64_t ret_unlink_reset;   /* RET_UNLINK -ECONNRESET received */
    uint64_t ret_unlink_done;    /* RET_UNLINK 0 received (the target had completed) */
    uint64_t ret_unlink_late;    /* RET_UNLINKs that arrived after another URB's RET_SUBMIT */
    uint64_t dropped_ret_submit; /* RET_SUBMITs of unlinked or timed-out URBs, consumed and dropped */
} usbc_stats;

/* `peer` names the server in log lines (copied). op_timeout_ms bounds the op
 * reply (0: 10 s). */
usbc_conn *usbc_conn_new(ifm_loop *loop, const usbc_io *io, void *io_ctx, const usbc_conn_cbs *cbs, void *arg,
                         const char *peer, uint64_t op_timeout_ms);
void usbc_conn_free(usbc_conn *c);
/* Where the connection's log lines go: the library handle's sink (NULL, the
 * default: ifm_log). f must outlive c. */
void usbc_conn_set_log(usbc_conn *c, const struct icefarm *f);

/* Carrier side: bytes from the server; the carrier ended (status 0: EOF). */
void usbc_conn_feed(usbc_conn *c, const uint8_t *data, size_t len);
void usbc_conn_carrier_end(usbc_conn *c, int status, const char *why);
/* The carrier is connected: requests queued before are sent now. Carriers that
 * are connected from the start call it at once. */
void usbc_conn_carrier_up(usbc_conn *c);

/* Phase 1. One of them, once. 0 or -EINVAL (bad busid) / -EALREADY. */
int usbc_conn_import(usbc_conn *c, const char *busid);
int usbc_conn_devlist(usbc_conn *c);

/* Phase 2 (after on_import with 0). 0, or -ENOTCONN (not imported, or over),
 * -EINVAL (a bad URB), -EBUSY (the URB is in flight). */
int usbc_submit(usbc_conn *c, usbc_urb *u);
/* Unlinks a URB in flight: done(-ECONNRESET) runs from the loop. -ENOENT if it is not in flight. */
int usbc_cancel(usbc_urb *u);

/* The imported device (valid after on_import with 0). */
const ifm_usbip_device *usbc_conn_device(const usbc_conn *c);
const char *usbc_conn_peer(const usbc_conn *c);
const usbc_stats *usbc_conn_stats(const usbc_conn *c);
/* URBs in flight (for tests and leak checks). */
size_t usbc_conn_inflight(const usbc_conn *c);

/* Fill a control URB's setup (the direction is bit 7 of bmRequestType). */
void usbc_control_setup(usbc_urb *u, uint8_t bmRequestType, uint8_t bRequest, uint16_t wValue, uint16_t wIndex,
                        uint16_t wLength);

#endif
