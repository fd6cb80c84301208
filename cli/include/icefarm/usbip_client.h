/* libicefarm's USB/IP client: a board's CDC ACM serial console over the network,
 * in userspace (no root, no kernel module), and the pieces `icefarm-cli usbip
 * attach` hands to the kernel.
 *
 * A board reserved with kind `usbip` is exported by its worker with USB/IP
 * (PROTOCOL.md section 19). This client imports the device, reads its
 * descriptors, finds its CDC ACM functions by their descriptors (IAD,
 * communication and data interfaces; the pico-ice firmware has two: the one on
 * communication interface 0 by default), configures it with the configuration
 * value its descriptors give, sends SET_LINE_CODING and SET_CONTROL_LINE_STATE
 * (DTR and RTS in wValue) to the communication interface, keeps several bulk-IN
 * URBs queued, and writes with completion. It unlinks URBs that time out and
 * copes with servers that answer an unlink late (the Linux stub does).
 *
 * A device that vanishes (the 1200-baud touch, a reset, a reflash) is reported
 * as such (ICEFARM_USBIP_GONE; a blocked read or write returns -ENODEV) and the
 * session imports it again by itself: at once on the board's `usbip exported`
 * event when it is a farm board, otherwise with back-off (100 ms to 2 s) until
 * the server takes it. After a re-import the line coding last set is applied
 * again (except 1200 baud, the touch itself: the initial one is used then), and
 * DTR/RTS as last set.
 *
 * Where the device is, one of:
 *   - a farm board: `serial` with a farm handle (icefarm_connect) that holds its
 *     lease with kind usbip; the export's host, port and token come from the
 *     board's `usbip exported` event; `tunnel` carries USB/IP through the broker
 *     (TLS, passwords, holder-only) instead of TCP to the worker;
 *   - any USB/IP server: `host`, `port` and `busid`, with or without a farm
 *     handle (f NULL: the session runs its own event loop inside the waiting
 *     calls).
 *
 * Conventions (those of client.h): 0 or a negative errno, a reason buffer; every
 * callback runs on the loop's thread (the farm handle's, or the session's own
 * inside a waiting call); functions with a done callback wait when it is NULL
 * (and then return -EDEADLK inside a callback) and return at once otherwise,
 * the callback running exactly once from the loop. A session is used from one
 * thread; icefarm_usbip_close is not allowed inside its own callbacks.
 */
#ifndef ICEFARM_USBIP_CLIENT_H
#define ICEFARM_USBIP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "icefarm/client.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ICEFARM_USBIP_PORT 3240
#define ICEFARM_USBIP_BUSID_MAX 32

typedef struct icefarm_usbip icefarm_usbip;

typedef enum {
    ICEFARM_USBIP_CONNECTING, /* connecting, importing, reading descriptors, configuring */
    ICEFARM_USBIP_UP,         /* the CDC function is configured, DTR/RTS set, bulk-IN URBs queued: I/O works */
    ICEFARM_USBIP_NO_CDC,     /* imported, but the device has no such CDC ACM function now (BOOTSEL after a touch) */
    ICEFARM_USBIP_GONE,       /* the device vanished or the connection was lost: importing it again */
    ICEFARM_USBIP_CLOSED      /* over: the import was refused for good, the lease ended, or closed */
} icefarm_usbip_state;

/* "connecting", "up", "no-cdc", "gone", "closed"; static storage. */
ICEFARM_API const char *icefarm_usbip_state_name(icefarm_usbip_state s);

/* CDC line coding (USB CDC PSTN 6.3.11). */
typedef struct {
    uint32_t baud;     /* dwDTERate; 0: 115200 */
    uint8_t stop_bits; /* bCharFormat: 0 one, 1 one and a half, 2 two */
    uint8_t parity;    /* bParityType: 0 none, 1 odd, 2 even, 3 mark, 4 space */
    uint8_t data_bits; /* 5, 6, 7, 8 or 16; 0: 8 */
} icefarm_usbip_line_coding;

typedef void (*icefarm_usbip_state_cb)(icefarm_usbip *u, icefarm_usbip_state state, const char *reason, void *arg);
/* Received bytes, borrowed for the call. */
typedef void (*icefarm_usbip_data_cb)(icefarm_usbip *u, const uint8_t *data, size_t len, void *arg);
/* A write, line coding or control-line request finished: 0, or -ENODEV (the
 * device went away), -ETIMEDOUT (no completion in time: the URB was unlinked),
 * -EPIPE (stalled; the halt was cleared), -ENOTCONN (not up), -ECANCELED (closed). */
typedef void (*icefarm_usbip_done_cb)(icefarm_usbip *u, int status, void *arg);

/* Zero-initialize, set what you need. Strings are copied. */
typedef struct {
    /* a farm board (needs a farm handle) ... */
    const char *serial;
    bool tunnel; /* through the broker rather than TCP to the worker */
    /* ... or any USB/IP server */
    const char *host;  /* name or address */
    const char *port;  /* NULL: "3240" */
    const char *busid; /* what to import */

    /* The CDC ACM function: its communication interface. 0 (the default) means
     * interface 0, or the first function when no function has interface 0. */
    uint8_t cdc_interface;
    icefarm_usbip_line_coding line; /* set at every import; zero: 115200 8N1 */
    bool no_dtr;                    /* do not assert DTR and RTS (the firmware prints nothing without DTR) */
    unsigned in_urbs;               /* bulk-IN URBs kept queued; 0: 8 */
    uint32_t in_size;               /* bytes per bulk-IN URB; 0: 4096 */
    size_t rx_buffer;               /* bytes kept for icefarm_usbip_read; 0: 1 MiB. When full, bulk-IN
                                       URBs are not resubmitted (the device sees flow control) */
    uint64_t timeout_ms;            /* connect, import, each control request; 0: 5000 */
    uint64_t write_timeout_ms;      /* a bulk-OUT URB not completed in this long fails; 0: 10000 */
    bool no_reconnect;              /* a vanished device ends the session (CLOSED) instead */

    icefarm_usbip_state_cb on_state; /* every state change, with a human reason */
    icefarm_usbip_data_cb on_data;   /* received bytes go here instead of the read buffer */
    void *arg;
} icefarm_usbip_opts;

/* Opens a session. With `wait` true, it returns once the session is UP or
 * NO_CDC (0), or failed (-ENOENT: no such device/busid, -EBUSY: imported by
 * someone else, -ECONNREFUSED/-EHOSTUNREACH: no server, -ETIMEDOUT, -EPROTO: not
 * a USB/IP server we understand, -EPERM: the board is not held with kind usbip
 * by this client), all with a reason; *out is then NULL and the session that
 * on_state callbacks were handed meanwhile is freed. With `wait` false it
 * returns at once (-EINVAL on bad options) and on_state reports progress; a
 * failure ends in CLOSED. f may be NULL for a direct server. Free with
 * icefarm_usbip_close. */
ICEFARM_API int icefarm_usbip_open(icefarm *f, const icefarm_usbip_opts *opts, bool wait, icefarm_usbip **out,
                                   char *reason, size_t reason_len);
/* Unlinks what is in flight, closes the connection, frees the session. No
 * callback runs after it returns (a pending done gets -ECANCELED inside it). */
ICEFARM_API void icefarm_usbip_close(icefarm_usbip *u);

ICEFARM_API icefarm_usbip_state icefarm_usbip_get_state(const icefarm_usbip *u);
/* Waits until the session is in `state` (0), CLOSED (-ESHUTDOWN, unless that was
 * asked) or timeout_ms passed (-ETIMEDOUT; 0: no limit). */
ICEFARM_API int icefarm_usbip_wait_state(icefarm_usbip *u, icefarm_usbip_state state, uint64_t timeout_ms);

/* Writes `len` bytes (copied) to the bulk-OUT endpoint; done when the device
 * took them all. -ENOTCONN when the session is not UP. */
ICEFARM_API int icefarm_usbip_write(icefarm_usbip *u, const void *data, size_t len, icefarm_usbip_done_cb done,
                                    void *arg);
/* Reads from the read buffer: returns as soon as `want` bytes are there (want 0:
 * any), or the buffer holds `delim` (the bytes up to and including it are
 * returned), or cap bytes are there; at most cap. -ETIMEDOUT if neither happened
 * within timeout_ms (the bytes stay buffered), -ENODEV when the device vanished
 * meanwhile (buffered bytes are still returned first), -ESHUTDOWN when closed,
 * -EINVAL with on_data set. A waiting call (-EDEADLK inside callbacks). */
ICEFARM_API ptrdiff_t icefarm_usbip_read(icefarm_usbip *u, void *buf, size_t cap, size_t want, const void *delim,
                                         size_t delim_len, uint64_t timeout_ms);
/* Bytes in the read buffer. */
ICEFARM_API size_t icefarm_usbip_buffered(const icefarm_usbip *u);
/* on_data mode: stop (true) or resume resubmitting bulk-IN URBs. */
ICEFARM_API void icefarm_usbip_pause(icefarm_usbip *u, bool paused);

/* SET_LINE_CODING to the communication interface. 1200 baud is the touch: the
 * board reboots into BOOTSEL and the session goes GONE. */
ICEFARM_API int icefarm_usbip_set_line_coding(icefarm_usbip *u, const icefarm_usbip_line_coding *lc,
                                              icefarm_usbip_done_cb done, void *arg);
/* SET_CONTROL_LINE_STATE with DTR (bit 0) and RTS (bit 1) in wValue. */
ICEFARM_API int icefarm_usbip_set_control_lines(icefarm_usbip *u, bool dtr, bool rts, icefarm_usbip_done_cb done,
                                                void *arg);

/* What the session imported. Strings are NUL-terminated; valid until the next state change. */
typedef struct {
    char host[256], port[16], busid[ICEFARM_USBIP_BUSID_MAX];
    uint32_t devid; /* busnum << 16 | devnum on the server */
    uint32_t speed; /* Linux usb_device_speed: 1 low, 2 full, 3 high, 5 super */
    uint16_t vid, pid;
    char serial[64];                /* the iSerialNumber string ("" if none) */
    uint8_t config_value;           /* the configuration set */
    uint8_t ncdc;                   /* CDC ACM functions found */
    uint8_t cdc_comm[8];            /* their communication interfaces */
    uint8_t comm_iface, data_iface; /* the function in use */
    uint8_t ep_in, ep_out;          /* its bulk endpoints */
    icefarm_usbip_line_coding line; /* as last set */
    bool dtr, rts;
    unsigned imports; /* successful imports so far (1 + re-imports) */
} icefarm_usbip_info;
ICEFARM_API void icefarm_usbip_get_info(const icefarm_usbip *u, icefarm_usbip_info *info);

/* Counters (for tests and diagnostics). */
typedef struct {
    uint64_t urbs_submitted, urbs_completed, urb_timeouts, unlinks_sent;
    uint64_t ret_unlink_reset;   /* RET_UNLINK -ECONNRESET: the URB was cancelled */
    uint64_t ret_unlink_done;    /* RET_UNLINK 0: it had completed first */
    uint64_t ret_unlink_late;    /* RET_UNLINKs that came after another URB's completion */
    uint64_t dropped_ret_submit; /* completions of unlinked URBs, consumed */
    uint64_t stalls_cleared;     /* bulk endpoints un-halted with CLEAR_FEATURE */
    uint64_t bytes_in, bytes_out;
} icefarm_usbip_stats;
/* Summed over every connection of the session. */
ICEFARM_API void icefarm_usbip_get_stats(const icefarm_usbip *u, icefarm_usbip_stats *st);

/* Asks the worker of a board this client holds with kind usbip to send its
 * `usbip exported` event again (board command `announce`), for a program that
 * starts after the export was announced. Returns at once: 0, -EINVAL,
 * -ENOTCONN. The answer is the event (or an `error` event from the worker). */
ICEFARM_API int icefarm_usbip_announce(icefarm *f, const char *serial);

/* ---- the server's device list, and imports handed to the kernel ---- */

/* One device as a server lists it (OP_REP_DEVLIST). */
typedef struct {
    char busid[ICEFARM_USBIP_BUSID_MAX];
    char path[256];
    uint32_t busnum, devnum, speed;
    uint16_t vid, pid, bcd_device;
    uint8_t device_class, device_subclass, device_protocol;
    uint8_t config_value, nconfigs, ninterfaces;
} icefarm_usbip_device;

/* Lists a server's exported devices (waits; -EDEADLK inside callbacks). On 0,
 * *devs is a malloc'd array of *n (free() it; NULL when 0). f may be NULL. */
ICEFARM_API int icefarm_usbip_list(icefarm *f, const char *host, const char *port, uint64_t timeout_ms,
                                   icefarm_usbip_device **devs, size_t *n, char *reason, size_t reason_len);

/* Imports busid and hands the connected socket over (for vhci_hcd's attach,
 * which takes an imported socket: `icefarm-cli usbip attach`). status 0: fd is
 * the socket (the callee owns it), dev the device. Else fd is -1 and status as
 * for icefarm_usbip_open. The callback runs once, from the loop. */
typedef void (*icefarm_usbip_import_cb)(int status, int fd, const icefarm_usbip_device *dev, const char *reason,
                                        void *arg);
ICEFARM_API int icefarm_usbip_import_fd(icefarm *f, const char *host, const char *port, const char *busid,
                                        uint64_t timeout_ms, icefarm_usbip_import_cb cb, void *arg);

/* ---- a local USB/IP endpoint through the broker (icefarm-cli usbip tunnel) ---- */

/* Listens on `listen` (HOST:PORT; NULL: 127.0.0.1:3240) on the handle's loop; each
 * connection (the kernel's `usbip attach -r HOST -b BUSID`, with the busid of the
 * board's `usbip exported` event) is relayed to board `serial` through the broker
 * tunnel (PROTOCOL.md 19.3): TLS, passwords and the holder-only ACL of the
 * broker, no other port. Close it before the handle. */
typedef struct icefarm_usbip_tunnel icefarm_usbip_tunnel;
ICEFARM_API int icefarm_usbip_tunnel_open(icefarm *f, const char *serial, const char *listen,
                                          icefarm_usbip_tunnel **out, char *reason, size_t reason_len);
/* The port listened on (for port 0: the one the system chose). */
ICEFARM_API int icefarm_usbip_tunnel_port(const icefarm_usbip_tunnel *t);
/* Connections relayed so far. */
ICEFARM_API unsigned icefarm_usbip_tunnel_sessions(const icefarm_usbip_tunnel *t);
/* Stops listening and ends every relayed connection. NULL is a no-op. */
ICEFARM_API void icefarm_usbip_tunnel_close(icefarm_usbip_tunnel *t);

#ifdef __cplusplus
}
#endif

#endif
