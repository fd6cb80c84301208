/* The worker's view of USB: one interface, two backends (libusb for real boards,
 * sim for simulated pico2-ice boards). The board state machine and the firmware
 * protocol code sit above this line and are identical for both backends, so tests
 * of the simulated path exercise the real logic.
 *
 * Threading: everything runs on the worker's ifm_loop; callbacks are never called
 * from inside the call that requested them (always from a later loop turn), so a
 * caller may hold state across a call without re-entrancy surprises.
 *
 * Lifetime: a wrk_usbdev is one enumeration of a board. It is valid from the
 * `arrive` callback until the `leave` callback returns. A board that re-enumerates
 * (1200-baud touch, flashing) leaves and arrives again as a new wrk_usbdev with the
 * same serial string; that serial is the board's identity.
 *
 * Two levels of access to a device: the farm's own (touch, flash, one CDC
 * channel: what the state machine drives) and the URB level (the whole USB
 * device, endpoint by endpoint: what the USB/IP server forwards). A caller uses
 * one level at a time on a device.
 */
#ifndef ICEFARM_WRK_TRANSPORT_H
#define ICEFARM_WRK_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "icefarm/limits.h"
#include "icefarm/loop.h"

#define WRK_SERIAL_MAX IFM_SERIAL_MAX /* a USB serial string becomes a topic level */

/* USB identities the farm recognises (wrk/README.md). */
#define WRK_VID_RPI 0x2e8a
#define WRK_PID_BOOTSEL 0x000f    /* RP2350 bootrom: UF2 mass storage + PICOBOOT */
#define WRK_PID_PICO_STDIO 0x0009 /* pico-sdk stdio USB: the default firmware */
#define WRK_VID_PIDCODES 0x1209
#define WRK_PID_PICO_ICE 0xb1c0 /* pico-ice-sdk firmware (pulsecount, variance) */
#define WRK_PID_PICO2_ICE 0xb1c1

typedef struct wrk_transport wrk_transport;
typedef struct wrk_usbdev wrk_usbdev;

typedef struct {
    uint16_t vid, pid;
    char serial[WRK_SERIAL_MAX];
} wrk_usbinfo;

typedef struct {
    void (*arrive)(void *arg, wrk_usbdev *dev, const wrk_usbinfo *info);
    /* The device is gone (unplugged or re-enumerating). After this returns, `dev`
     * is invalid; any open CDC was closed without further callbacks. */
    void (*leave)(void *arg, wrk_usbdev *dev);
} wrk_transport_events;

/* status 0 = success; otherwise a negative errno and a human-readable reason. */
typedef void (*wrk_done_cb)(void *arg, int status, const char *reason);
typedef void (*wrk_cdc_rx_cb)(void *arg, const uint8_t *data, size_t len);
/* The CDC channel failed (I/O error, stall). The device may still leave later. */
typedef void (*wrk_cdc_err_cb)(void *arg, const char *reason);

/* ---- the URB level ---- */

/* Endpoint types, as in bmAttributes & 3. */
typedef enum {
    WRK_EP_CONTROL = 0,
    WRK_EP_ISO = 1,
    WRK_EP_BULK = 2,
    WRK_EP_INTERRUPT = 3,
} wrk_ep_type;

#define WRK_USB_MAX_IFACES 32
#define WRK_USB_MAX_EPS 32 /* endpoints of one alternate setting */

/* What the URB level needs to know about a device, read without I/O. */
typedef struct {
    uint8_t busnum, devnum; /* where it is on the host (sim: bus 1, a fresh address per enumeration) */
    uint8_t speed;          /* the Linux enum usb_device_speed: 1 low, 2 full, 3 high, 5 super, 6 super+ */
    uint8_t device[18];     /* the device descriptor, as on the wire */
    uint8_t config_value;   /* bConfigurationValue of the active configuration, 0 if unconfigured */
    uint8_t nifaces;        /* interfaces of the active configuration, numbered 0..nifaces-1 */
    struct {
        uint8_t cls, subclass, protocol; /* of alternate setting 0 */
        uint8_t nalts;
    } iface[WRK_USB_MAX_IFACES];
    char path[64]; /* a stable name of the port it is plugged into, e.g. "usb1/1-4" or "sim/E6614C311B4B8F2C" */
} wrk_usb_desc;

typedef struct {
    uint8_t addr; /* with the direction bit: 0x81 is IN 1 */
    uint8_t type; /* wrk_ep_type */
    uint8_t interval;
    uint16_t max_packet;
} wrk_usb_ep;

/* URB flags (the USB/IP ones a device can honour). */
#define WRK_URB_SHORT_NOT_OK 0x1u /* an IN transfer shorter than asked fails with -EREMOTEIO */
#define WRK_URB_ZERO_PACKET 0x2u  /* a bulk OUT of a multiple of max_packet ends with a zero-length packet */

typedef struct wrk_urb wrk_urb;
typedef void (*wrk_urb_cb)(wrk_urb *urb);

/* One transfer on one endpoint. Allocate with urb_alloc (the buffer is the
 * backend's, so a device that vanishes never writes into the caller's memory),
 * fill in the request, submit; `done` runs once, from a later loop turn, with
 * status and actual set. Then resubmit it or free it. */
struct wrk_urb {
    /* the request */
    uint8_t ep;       /* endpoint address with the direction bit; 0x00 or 0x80 for control */
    uint8_t type;     /* wrk_ep_type of the endpoint */
    uint32_t flags;   /* WRK_URB_* */
    uint8_t setup[8]; /* control: the SETUP packet (its wLength is the data stage's length) */
    uint32_t len;     /* bytes to transfer: OUT data in buf, or the room for IN data (<= the allocated size) */
    uint8_t *buf;     /* the backend's buffer of the allocated size: OUT data / IN data (no setup bytes) */
    wrk_urb_cb done;
    void *arg; /* the caller's */
    /* the result */
    int status;      /* 0, or -EPIPE (stall), -ECONNRESET (cancelled), -ENODEV (device gone), -EPROTO, -EOVERFLOW,
                        -EREMOTEIO (short with SHORT_NOT_OK), -ETIMEDOUT, -EPERM (interface not claimed), -EINVAL */
    uint32_t actual; /* bytes transferred in the data stage */
    /* the backend's */
    size_t size;
    void *priv;
};

/* Test hooks of the simulated backend for the layers above (the USB/IP server's
 * fault injection on the sim fault topic). */
typedef enum {
    WRK_HOOK_PARTIAL_PDU, /* the next RET_SUBMIT goes out half written, then the connection closes */
    WRK_HOOK_LATE_UNLINK, /* the next RET_UNLINK is held back until the next RET_SUBMIT has gone out */
    WRK_HOOK_BUSY_IMPORT, /* the next import is answered ST_DEV_BUSY */
    WRK_HOOK_COUNT
} wrk_hook;

typedef struct {
    const char *name; /* "sim" or "libusb" */
    /* Report every present device through ev->arrive (from a later loop turn),
     * then keep reporting hotplug arrive/leave. */
    int (*start)(wrk_transport *t, const wrk_transport_events *ev, void *arg);
    /* The 1200-baud touch: CDC SET_LINE_CODING at 1200 baud on interface 0. A
     * pico-sdk/TinyUSB firmware reboots into BOOTSEL (leave, then arrive as
     * 2e8a:000f with the same serial). */
    int (*touch_1200)(wrk_transport *t, wrk_usbdev *dev);
    /* Write a UF2 image to a device in BOOTSEL and verify it; `done` is called
     * once. On success the device then reboots into the new firmware (leave,
     * then arrive with the firmware's VID:PID). */
    int (*flash_uf2)(wrk_transport *t, wrk_usbdev *dev, const uint8_t *uf2, size_t len, wrk_done_cb done, void *arg);
    /* Open CDC interface 0 (claim, detach kernel driver, raise DTR) and stream
     * everything the board prints to `rx`. */
    int (*cdc_open)(wrk_transport *t, wrk_usbdev *dev, wrk_cdc_rx_cb rx, wrk_cdc_err_cb err, void *arg);
    /* Queue `len` bytes; the caller keeps `data` alive until `done` runs. Writes
     * complete in order. */
    int (*cdc_write)(wrk_transport *t, wrk_usbdev *dev, const uint8_t *data, size_t len, wrk_done_cb done, void *arg);
    /* Close the CDC channel, cancelling pending transfers. No callback for this
     * channel (rx, err or a pending write's done) runs after this returns. */
    void (*cdc_close)(wrk_transport *t, wrk_usbdev *dev);

    /* ---- the URB level: 0 or a negative errno each ----
     *
     * The control-plane calls below act at once (libusb does them synchronously:
     * they cost a short ioctl, or one control transfer for set_altsetting and
     * clear_halt) and need no completion. */
    int (*usb_desc)(wrk_transport *t, wrk_usbdev *dev, wrk_usb_desc *out);
    /* The endpoints of interface `iface`, alternate setting `alt`, of the active
     * configuration: how many (<= max) were stored, or a negative errno. */
    int (*usb_endpoints)(wrk_transport *t, wrk_usbdev *dev, uint8_t iface, uint8_t alt, wrk_usb_ep *eps, size_t max);
    /* Claim an interface for URBs, detaching a kernel driver bound to it. */
    int (*usb_claim)(wrk_transport *t, wrk_usbdev *dev, uint8_t iface);
    /* Release it (the kernel driver is not reattached: the device is exported). */
    int (*usb_release)(wrk_transport *t, wrk_usbdev *dev, uint8_t iface);
    /* SET_CONFIGURATION: interfaces must be released first; 0 unconfigures. */
    int (*usb_set_config)(wrk_transport *t, wrk_usbdev *dev, uint8_t value);
    int (*usb_set_altsetting)(wrk_transport *t, wrk_usbdev *dev, uint8_t iface, uint8_t alt);
    int (*usb_clear_halt)(wrk_transport *t, wrk_usbdev *dev, uint8_t ep);
    /* A port reset. The device may re-enumerate (leave, then arrive). */
    int (*usb_reset)(wrk_transport *t, wrk_usbdev *dev);
    /* A URB with a `size`-byte buffer (at most 1 MiB), not yet submitted. */
    wrk_urb *(*urb_alloc)(wrk_transport *t, wrk_usbdev *dev, size_t size);
    /* Not while it is submitted. */
    void (*urb_free)(wrk_transport *t, wrk_urb *urb);
    /* Queue it on its endpoint. Any number may be in flight per endpoint; on one
     * endpoint they complete in order, across endpoints in any order. Every
     * submitted URB's done runs exactly once: with its result, with -ECONNRESET
     * after urb_cancel (unless it completed first), or with -ENODEV when the
     * device goes away; all of a device's completions run before its `leave`. */
    int (*urb_submit)(wrk_transport *t, wrk_urb *urb);
    /* Asynchronous: done follows from a later loop turn. -ENOENT if it is not in
     * flight (already completed, its done may be pending). */
    int (*urb_cancel)(wrk_transport *t, wrk_urb *urb);
    /* The sim's test hooks: true if `hook` was armed on dev (and counts it down).
     * NULL on real backends. */
    bool (*take_hook)(wrk_transport *t, wrk_usbdev *dev, wrk_hook hook);

    void (*free)(wrk_transport *t);
} wrk_transport_ops;

struct wrk_transport {
    const wrk_transport_ops *ops;
    ifm_loop *loop;
};

#endif
