/* Fake pico2-ice USB devices in a umockdev testbed, for the libusb backend.
 *
 * Each fake is a sysfs USB device (idVendor, idProduct, serial, busnum, devnum,
 * bConfigurationValue, speed and the binary `descriptors` attribute written by
 * hand), a /dev/bus/usb/001/NNN node, and a usbfs emulation attached to that
 * node with umockdev_testbed_attach_ioctl(): a UMockdevIoctlBase whose
 * handle-ioctl signal implements the usbdevfs ioctls libusb uses
 * (GET_CAPABILITIES, CLAIM/RELEASEINTERFACE, DISCONNECT_CLAIM, GETDRIVER,
 * IOCTL(DISCONNECT/CONNECT), SUBMITURB, REAPURBNDELAY, DISCARDURB, ...). URBs are
 * really queued, completed and reaped, so libusb's asynchronous transfers,
 * cancellation and timeouts run their real code paths.
 *
 * Endpoint 0 answers GET_DESCRIPTOR for the device, its configuration and its
 * strings; interrupt URBs (CDC notifications) stay pending until discarded.
 * Behind the bulk URBs sits a small device model per kind:
 *   pico stdio (2e8a:0009) and pico-ice (1209:b1c0): CDC ACM with an echo (or
 *     hold) on the data interface, line coding / control line state recorded,
 *     a 1200-baud line coding noted as a touch;
 *   BOOTSEL (2e8a:000f): PICOBOOT on a vendor interface over a 1 MiB NOR flash
 *     model at 0x10000000 (erase sets 0xff, writes AND), GET_CMD_STATUS.
 *
 * The ioctl handler runs on umockdev's worker thread; every fake's state is
 * behind its mutex, and the fake_* accessors below take it. FAKE_USB_DEBUG=1
 * in the environment traces every URB.
 */
#ifndef ICEFARM_TESTS_FAKE_USB_H
#define ICEFARM_TESTS_FAKE_USB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    FAKE_PICO_STDIO, /* 2e8a:0009, CDC on interfaces 0/1, vendor reset interface 2 */
    FAKE_PICO_ICE,   /* 1209:b1c0, CDC0 0/1, CDC1 2/3, DFU 4 */
    FAKE_BOOTSEL,    /* 2e8a:000f, MSC 0, PICOBOOT 1 */
    FAKE_OTHER,      /* 046d:c52b, not a board */
    FAKE_NOSERIAL,   /* 2e8a:0009 without iSerialNumber */
} fake_kind;

#define FAKE_FLASH_BASE 0x10000000u
#define FAKE_FLASH_SIZE (1u << 20)

typedef struct fake_bed fake_bed;
typedef struct fake_dev fake_dev;

/* A testbed (sets $UMOCKDEV_DIR for this process). Needs the preload library:
 * run under umockdev-wrapper. */
fake_bed *fake_bed_new(void);
void fake_bed_free(fake_bed *bed); /* after the transport was freed */

/* Plug a device in. With `uevent`, an "add" uevent tells libusb's hotplug. */
fake_dev *fake_plug(fake_bed *bed, fake_kind kind, const char *serial, bool uevent);
/* The electrical side of an unplug, as usbfs sees it: every URB in flight
 * completes with -ESHUTDOWN and later ioctls fail with ENODEV. */
void fake_kill(fake_dev *d);
/* The announcement: a "remove" uevent, then the sysfs device and its node go. */
void fake_remove(fake_dev *d);
/* Both (the fake stays allocated until fake_bed_free). */
void fake_unplug(fake_dev *d);

/* ---- knobs (thread-safe) ---- */
void fake_set_echo(fake_dev *d, bool on);                   /* CDC OUT bytes come back on IN (default on) */
void fake_set_hold_out(fake_dev *d, bool on);               /* CDC OUT URBs never complete (a hung board) */
void fake_stall_in(fake_dev *d);                            /* the next CDC IN URB completes with -EPIPE */
void fake_print(fake_dev *d, const void *data, size_t len); /* the board prints */
void fake_pb_fail_write_at(fake_dev *d, uint32_t addr);     /* WRITE there: status 4, stall */
void fake_pb_corrupt_read_at(fake_dev *d, uint32_t addr);   /* READ returns a flipped bit there */
void fake_pb_hang_erase(fake_dev *d, bool on);              /* the erase never acknowledges */

/* ---- observations (thread-safe) ---- */
typedef struct {
    int string_requests, langid_requests;
    uint32_t claimed;      /* interfaces claimed now */
    uint32_t driver_bound; /* interfaces a kernel driver holds now */
    int disconnect_claims; /* USBDEVFS_DISCONNECT_CLAIM + IOCTL(DISCONNECT) */
    uint32_t baud;         /* last SET_LINE_CODING */
    int line_codings;
    int lines; /* last SET_CONTROL_LINE_STATE value, -1 never */
    int line_states;
    int line_history[16]; /* the first 16 values */
    bool touched;         /* saw 1200 baud */
    size_t received;      /* CDC OUT bytes accepted */
    size_t max_out_urb;   /* largest CDC OUT URB */
    int out_urbs;
    int discards;    /* URBs cancelled with DISCARDURB */
    int outstanding; /* URBs submitted and not yet reaped */
    int unknown_ioctls;
    /* PICOBOOT */
    int pb_cmds;
    uint8_t pb_ids[64]; /* the first 64 command ids */
    bool pb_exclusive, pb_xip_exited, pb_xip_entered;
    bool rebooted;
    uint32_t reboot_flags, reboot_delay;
    int pb_erases, pb_writes, pb_reads;
} fake_stats;

void fake_get_stats(fake_dev *d, fake_stats *out);
/* Copy out the CDC bytes received so far (up to cap); returns the count. */
size_t fake_received(fake_dev *d, uint8_t *out, size_t cap);
/* Copy `len` bytes of the flash model at `addr`. */
void fake_flash_read(fake_dev *d, uint32_t addr, uint8_t *out, size_t len);
const char *fake_serial(const fake_dev *d);

#endif
