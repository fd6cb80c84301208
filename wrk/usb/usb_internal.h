/* Private to the libusb backend:
 *   usb_transport.c  context, loop integration, transfers, discovery, ops, touch
 *   usb_cdc.c        the CDC ACM channel
 *   usb_picoboot.c   flashing a BOOTSEL device over PICOBOOT
 *   usb_urb.c        the URB level (descriptors, control plane, URBs)
 *
 * Transfers. Every libusb transfer is wrapped in a usb_xfer that belongs to one
 * device and is on its list until freed. Its completion runs `fn`; a transfer
 * whose owner went away is "abandoned": fn is cleared and it is cancelled, and
 * when libusb completes it (cancellation is asynchronous) it is freed without
 * calling anyone. A device record is freed only once libusb has told us it is
 * gone and none of its transfers is still in flight.
 */
#ifndef ICEFARM_WRK_USB_INTERNAL_H
#define ICEFARM_WRK_USB_INTERNAL_H

#include <errno.h>
#include <libusb.h>
#include <stdbool.h>
#include <stdint.h>

#include "usb_transport.h"

typedef struct usb_transport usb_transport;
typedef struct usb_xfer usb_xfer;
typedef struct usb_cdc usb_cdc;
typedef struct usb_flash usb_flash;
typedef struct usb_urb usb_urb;

/* How long a departing device's URBs may take to come back from libusb. */
#define USB_URB_DRAIN_MS 1000u

typedef void (*usb_xfer_fn)(usb_xfer *x);

struct usb_xfer {
    struct libusb_transfer *t;
    wrk_usbdev *dev;
    usb_xfer_fn fn; /* NULL: abandoned, freed silently on completion */
    void *owner;
    int tag;
    bool submitted;
    usb_xfer *prev, *next; /* dev->xfers */
};

typedef enum {
    USBDEV_PROBING, /* opening it and reading its serial string */
    USBDEV_READY,   /* identified; arrive not reported yet */
    USBDEV_PRESENT, /* reported with arrive */
    USBDEV_GONE,    /* leave reported, or never arrived: waiting to be reaped */
} usbdev_state;

struct wrk_usbdev {
    usb_transport *ut;
    wrk_usbdev *next;
    libusb_device *ldev; /* referenced */
    libusb_device_handle *h;
    usbdev_state state;
    bool left;       /* libusb reported it gone (hotplug, or missing from a rescan) */
    bool lost;       /* a transfer or a request saw LIBUSB_ERROR_NO_DEVICE */
    bool ignored;    /* could not be opened or identified: ignored until it leaves */
    bool probing;    /* a serial request is in flight */
    bool autodetach; /* libusb detaches kernel drivers on claim */
    uint8_t iserial;
    uint16_t langid;
    uint32_t claimed; /* bit i: interface i claimed by us */
    wrk_usbinfo info;
    usb_xfer *xfers;
    unsigned inflight;
    usb_cdc *cdc;
    usb_flash *flash;
    /* URBs (usb_urb.c): every one allocated and not yet freed */
    usb_urb *urbs;
    unsigned urbs_inflight;
    bool urbs_cancelled;    /* the device goes: its URBs were cancelled */
    uint64_t urbs_deadline; /* ms: then they are completed without libusb */
    uint64_t t_drain;
};

struct usb_transport {
    wrk_transport base; /* first: a wrk_transport* is a usb_transport* */
    usb_options opt;
    libusb_context *ctx;
    bool started, freeing, hotplug, timerfd;
    wrk_transport_events ev;
    void *ev_arg;
    libusb_hotplug_callback_handle hp[2];
    int nhp;
    wrk_usbdev *devs;
    uint64_t t_work, t_rescan, t_timeout;
    int *fds;
    size_t nfds, capfds;
};

/* usb_transport.c */
usb_transport *usb_of(const wrk_transport *t); /* NULL if t is not ours */
/* 0 if ops may use dev now, else -ENODEV. */
int usb_dev_usable(const wrk_usbdev *dev);
bool usb_is_bootsel(const wrk_usbdev *dev);
/* A transfer for dev with a `len`-byte buffer; not submitted. NULL: no memory. */
usb_xfer *usb_xfer_new(wrk_usbdev *dev, int len, usb_xfer_fn fn, void *owner);
/* A control transfer; `data` (wLength bytes) is copied for OUT requests. */
usb_xfer *usb_xfer_control(wrk_usbdev *dev, uint8_t type, uint8_t req, uint16_t value, uint16_t index, const void *data,
                           uint16_t len, usb_xfer_fn fn, void *owner);
void usb_xfer_bulk(usb_xfer *x, uint8_t ep, int len, unsigned timeout_ms);
/* 0 or a libusb error; NO_DEVICE also marks the device lost. */
int usb_xfer_submit(usb_xfer *x);
void usb_xfer_free(usb_xfer *x); /* only when not submitted */
/* Submitted: cancel and free silently on completion. Otherwise free now. */
void usb_xfer_abandon(usb_xfer *x);
/* The device is gone as far as its transfers can tell: drop the CDC channel
 * silently and have the work turn report the leave. */
void usb_dev_lost(wrk_usbdev *dev);
/* Claim `iface`, detaching a kernel driver. 0 or a negative errno. */
int usb_claim(wrk_usbdev *dev, int iface, char *why, size_t whylen);
void usb_kick(usb_transport *ut);
void usb_arm_timeout(usb_transport *ut);
int usb_errno(int libusb_error);
int usb_status_errno(enum libusb_transfer_status st);
const char *usb_status_text(enum libusb_transfer_status st);

/* usb_cdc.c */
int usb_cdc_open(wrk_transport *t, wrk_usbdev *dev, wrk_cdc_rx_cb rx, wrk_cdc_err_cb err, void *arg);
int usb_cdc_write(wrk_transport *t, wrk_usbdev *dev, const uint8_t *data, size_t len, wrk_done_cb done, void *arg);
void usb_cdc_close(wrk_transport *t, wrk_usbdev *dev);
/* Close without callbacks and without touching the device (lost, leave, free). */
void usb_cdc_drop(wrk_usbdev *dev);
/* Find the CDC ACM control interface (0 if it is one) and its data interface. */
int usb_cdc_find(wrk_usbdev *dev, uint8_t *ctrl_if, uint8_t *data_if, uint8_t *ep_in, uint8_t *ep_out, uint16_t *mps_in,
                 uint16_t *mps_out);

/* usb_urb.c */
/* The device goes: cancels its URBs (first call) and says whether all came back
 * (or the drain deadline passed and the rest were completed with -ENODEV). */
bool usb_urb_drained(wrk_usbdev *d);
void usb_urb_free_all(wrk_usbdev *d);    /* the device record goes: nothing in flight */
void usb_urb_silence_all(wrk_usbdev *d); /* the transport goes: cancel, never call back */
int usb_usb_desc(wrk_transport *t, wrk_usbdev *dev, wrk_usb_desc *out);
int usb_usb_endpoints(wrk_transport *t, wrk_usbdev *dev, uint8_t iface, uint8_t alt, wrk_usb_ep *eps, size_t max);
int usb_usb_claim(wrk_transport *t, wrk_usbdev *dev, uint8_t iface);
int usb_usb_release(wrk_transport *t, wrk_usbdev *dev, uint8_t iface);
int usb_usb_set_config(wrk_transport *t, wrk_usbdev *dev, uint8_t value);
int usb_usb_set_altsetting(wrk_transport *t, wrk_usbdev *dev, uint8_t iface, uint8_t alt);
int usb_usb_clear_halt(wrk_transport *t, wrk_usbdev *dev, uint8_t ep);
int usb_usb_reset(wrk_transport *t, wrk_usbdev *dev);
wrk_urb *usb_urb_alloc(wrk_transport *t, wrk_usbdev *dev, size_t size);
void usb_urb_free(wrk_transport *t, wrk_urb *urb);
int usb_urb_submit(wrk_transport *t, wrk_urb *urb);
int usb_urb_cancel(wrk_transport *t, wrk_urb *urb);

/* usb_picoboot.c */
int usb_flash_uf2(wrk_transport *t, wrk_usbdev *dev, const uint8_t *uf2, size_t len, wrk_done_cb done, void *arg);
/* Stop a running flash; with `report`, its done(status, reason) runs now. */
void usb_flash_abort(wrk_usbdev *dev, bool report, int status, const char *reason);

#endif
