/* The libusb backend: real pico2-ice boards on this host's USB.
 *
 * Discovery: libusb hotplug for 2e8a:000f (RP2350 BOOTSEL), 2e8a:0009 (pico-sdk
 * stdio), 1209:b1c0 / 1209:b1c1 (pico-ice firmware); where libusb has no hotplug
 * (or `force_rescan` is set) a periodic rescan of the device list instead. No
 * udev rules are read and nothing runs as root, but the worker's user needs
 * read/write access to the boards' /dev/bus/usb nodes (a udev rule granting it
 * is a deployment matter). A board is its USB serial string, read with a string
 * descriptor request when it arrives; a device that cannot be opened or has no
 * serial is logged and ignored until it leaves.
 *
 * Everything runs on the worker's ifm_loop: libusb's fds are watched through
 * its pollfd notifiers and serviced with a zero-timeout
 * libusb_handle_events_timeout_completed(); libusb's timeouts ride on its
 * timerfd (or an ifm timer where it has none). Callbacks never run inside the
 * op that caused them and never after cdc_close() or the device's leave.
 *
 *   touch_1200  claims CDC interface 0 (detaching cdc_acm) and sends
 *               SET_LINE_CODING 1200 8N1, then SET_CONTROL_LINE_STATE DTR|RTS
 *               and DTR off (pico-sdk reboots on the baud rate, Arduino-style
 *               firmware on the DTR drop at 1200).
 *   flash_uf2   PICOBOOT on the bootrom's vendor interface: exclusive access,
 *               exit XIP, erase the sectors, write 256-byte pages, enter XIP,
 *               read back and compare, REBOOT2 (normal boot, 500 ms delay).
 *               There is no mass-storage fallback.
 *   cdc_*       CDC ACM on interface 0 and its data interface: line coding
 *               115200 8N1, DTR up, IN transfers kept in flight, writes as
 *               ordered bulk OUT chunks with a timeout each. A stall, an I/O
 *               error or a write timeout fails every queued write (done with
 *               the error) and then calls `err` once; the channel stays dead
 *               until closed. cdc_close drops DTR.
 */
#ifndef ICEFARM_WRK_USB_TRANSPORT_H
#define ICEFARM_WRK_USB_TRANSPORT_H

#include <stdbool.h>
#include <stdint.h>

#include "transport.h"

typedef struct {
    uint32_t rescan_ms;           /* discovery period without hotplug (1000) */
    bool force_rescan;            /* rescan even where libusb has hotplug (false) */
    uint32_t ctrl_timeout_ms;     /* control transfers (1000) */
    uint32_t write_timeout_ms;    /* one CDC OUT chunk (5000) */
    uint32_t write_chunk;         /* CDC OUT chunk, rounded down to wMaxPacketSize (4096) */
    uint32_t rx_size;             /* one CDC IN transfer, rounded up to wMaxPacketSize (4096) */
    unsigned rx_transfers;        /* CDC IN transfers in flight, 1..8 (2) */
    uint32_t picoboot_timeout_ms; /* PICOBOOT command and data phases (3000) */
    uint32_t picoboot_ack_ms;     /* PICOBOOT status phase; erases add per sector (10000) */
    int log_level;                /* libusb log level, 0 = none (LIBUSB_DEBUG also works) */
} usb_options;

void usb_options_default(usb_options *o);

/* NULL if libusb cannot be initialised (logged) or out of memory. */
wrk_transport *usb_transport_new(ifm_loop *loop, const usb_options *opts);

/* Whether the transport discovers boards through libusb hotplug (after start). */
bool usb_transport_uses_hotplug(const wrk_transport *t);

#endif
