/* The worker's USB/IP server: exports a reserved board's whole USB device to its
 * lease holder, in userspace, on the worker's one event loop, forwarding URBs
 * through the transport's URB level (transport.h) and speaking the wire protocol
 * through the codec in proto (icefarm/usbip.h). No kernel usbip-host, no usbipd,
 * no thread.
 *
 *   exports     one per leased board of kind `usbip`, named by a per-lease busid
 *               token of IFM_USBIP_TOKEN_LEN characters from [A-Za-z0-9] that
 *               only the holder learns (the board's ACL'd event topic). DEVLIST
 *               always answers 0 devices; IMPORT of an unknown token is answered
 *               ST_NODEV and the connection closes, like usbipd; an export whose
 *               device is re-enumerating answers ST_DEV_ERR (try again); one
 *               connection per export at a time (ST_DEV_BUSY otherwise).
 *   connections any number; each is a byte stream from a carrier: TCP (the
 *               listener here) or the broker tunnel (usbip_tunnel.c). A
 *               connection imports at most one export.
 *
 * A connection forwards every URB asynchronously (many in flight per endpoint,
 * completions in any order), executes SET_CONFIGURATION, SET_INTERFACE,
 * CLEAR_FEATURE(ENDPOINT_HALT) and port reset itself, answers CMD_UNLINK as the
 * kernel does (pending: RET_UNLINK -ECONNRESET and never a RET_SUBMIT; already
 * completed: RET_UNLINK 0 at once), fails a URB for an unknown endpoint with
 * -EPIPE and one for an interface it could not claim with -EPERM; a USB error
 * fails only its URB. A protocol violation (malformed or oversized PDU, wrong
 * devid) closes the connection; so does the device going away, after every
 * pending URB was answered -ENODEV. A carrier that closes with URBs in flight
 * costs nothing: they are cancelled and freed when the transport returns them.
 *
 * Threading and re-entrancy: everything on the loop's thread. No callback of
 * this module runs inside one of its functions. Lifetime: usbip_server_free()
 * frees every export and connection; an export's device pointer is the caller's
 * to keep current (usbip_export_set_device on every arrive and leave).
 */
#ifndef ICEFARM_WRK_USBIP_H
#define ICEFARM_WRK_USBIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "icefarm/loop.h"
#include "icefarm/metrics.h"
#include "transport.h"

#define IFM_USBIP_TOKEN_LEN 24 /* the Linux tools take at most 31 */

typedef struct usbip_server usbip_server;
typedef struct usbip_export usbip_export;
typedef struct usbip_conn usbip_conn;

typedef struct {
    const char *listen_host; /* NULL/"": every address */
    const char *listen_port; /* "3240"; "0": an ephemeral port; NULL: no TCP listener (tunnel only) */
} usbip_server_opts;

/* NULL on failure, with the reason in `why`. */
usbip_server *usbip_server_new(ifm_loop *loop, wrk_transport *t, const usbip_server_opts *o, char *why, size_t whylen);
/* The TCP port listened on, or 0 without a listener. */
int usbip_server_port(const usbip_server *s);
/* Closes every connection and export (their URBs are cancelled). */
void usbip_server_free(usbip_server *s);
/* Counts this server's work in `reg` (README "Metrics"): registers the
 * icefarm_wrk_usbip_* families (sessions open and opened by path direct|tunnel,
 * imports refused by reason, URBs, transferred bytes, unlinks). Once, before the
 * first connection; `reg` must outlive the server. Without it nothing is
 * counted. 0, or -1 if a family could not be registered. */
int usbip_server_metrics(usbip_server *s, ifm_metrics *reg);

/* A fresh unguessable busid token (IFM_USBIP_TOKEN_LEN characters and a NUL)
 * from the kernel's random source. 0 or a negative errno. */
int usbip_token_new(char out[IFM_USBIP_TOKEN_LEN + 1]);

/* Export the board `serial` under `token` for `holder` (both copied; names for
 * log lines). Its device comes with usbip_export_set_device. */
usbip_export *usbip_export_new(usbip_server *s, const char *serial, const char *token, const char *holder);
/* The board's current enumeration, or NULL when it left: the imported
 * connection (whose URBs the transport has already completed) is closed. */
void usbip_export_set_device(usbip_export *e, wrk_usbdev *dev);
/* Close the connection that imported it, if any (the original's `unbind`). */
void usbip_export_unbind(usbip_export *e);
/* Whether a connection has imported it. */
bool usbip_export_attached(const usbip_export *e);
const char *usbip_export_token(const usbip_export *e);
/* The export ends: its connection closes at once. */
void usbip_export_free(usbip_export *e);

/* ---- carriers ---- */

typedef struct {
    /* Queue bytes for the client: 0; 1 = queued, but slow down (input is paused
     * until usbip_conn_drained); negative = the carrier is broken. */
    int (*write)(void *ctx, const uint8_t *data, size_t len);
    /* Pause or resume delivering input (back-pressure on a slow client). */
    void (*pause)(void *ctx, bool paused);
    /* End the carrier after what is queued has gone; it calls usbip_conn_gone
     * when it is over (not from inside this call). */
    void (*end)(void *ctx);
    /* Close the carrier now, without calling back (the server is being freed). */
    void (*abort)(void *ctx);
    /* The broker tunnel (metrics: path="tunnel"); false: a direct connection. */
    bool tunnel;
} usbip_io;

/* A new connection on a carrier; `peer` names it in logs (copied). */
usbip_conn *usbip_conn_new(usbip_server *s, const usbip_io *io, void *ctx, const char *peer);
/* Bytes from the client. */
void usbip_conn_feed(usbip_conn *c, const uint8_t *data, size_t len);
/* The carrier took what was queued: input may resume. */
void usbip_conn_drained(usbip_conn *c);
/* The carrier is gone: the connection is freed (no more io calls). */
void usbip_conn_gone(usbip_conn *c);

#endif
