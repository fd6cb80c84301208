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
 */
#ifndef ICEFARM_WRK_TRANSPORT_H
#define ICEFARM_WRK_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "icefarm/loop.h"

#define WRK_SERIAL_MAX 64

/* USB identities the farm recognises (DESIGN.md "Boards without hardware"). */
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
    void (*free)(wrk_transport *t);
} wrk_transport_ops;

struct wrk_transport {
    const wrk_transport_ops *ops;
    ifm_loop *loop;
};

#endif
