/* USB descriptors as the USB/IP client reads them from a device: the device
 * descriptor, and a configuration descriptor walked for its CDC ACM functions
 * (IAD, communication interface, data interface, their endpoints).
 *
 * Pure: no I/O, no allocation, no state; re-entrant. Internal to libicefarm (the
 * public view is icefarm/usbip_client.h). Every parser rejects a malformed
 * descriptor with -EBADMSG and a reason that names the byte offset and field,
 * and never reads outside the buffer it was given (tests/fuzz/fuzz_usbdesc.c).
 *
 * A CDC ACM function is found by its descriptors, never by position:
 *   - a communication interface: class 0x02, subclass 0x02 (ACM), alternate
 *     setting 0, whose endpoint (if any) is the interrupt IN notification;
 *   - its data interface, class 0x0A, taken in this order of preference from
 *     the IAD that groups the two (bFirstInterface, bInterfaceCount 2), the
 *     Union functional descriptor (bControlInterface, bSubordinateInterface0),
 *     the Call Management functional descriptor (bDataInterface), or the
 *     interface right after the communication interface;
 *   - the data interface's alternate setting with one bulk IN and one bulk OUT
 *     endpoint (normally 0).
 * A function missing a piece (no data interface, no bulk pair) is skipped.
 */
#ifndef ICEFARM_LIB_USBIP_DESC_H
#define ICEFARM_LIB_USBIP_DESC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "icefarm/err.h"

#define USBC_MAX_CDC 8 /* CDC ACM functions remembered per configuration */

/* USB standard request codes and descriptor types the client uses. */
enum {
    USB_REQ_GET_DESCRIPTOR = 0x06,
    USB_REQ_SET_CONFIGURATION = 0x09,
    USB_REQ_CLEAR_FEATURE = 0x01,
    USB_DT_DEVICE = 1,
    USB_DT_CONFIG = 2,
    USB_DT_STRING = 3,
    USB_DT_INTERFACE = 4,
    USB_DT_ENDPOINT = 5,
    USB_DT_IAD = 0x0b,
    USB_DT_CS_INTERFACE = 0x24,
    /* CDC class requests (bmRequestType 0x21 / 0xa1, wIndex = the communication interface) */
    CDC_SET_LINE_CODING = 0x20,
    CDC_GET_LINE_CODING = 0x21,
    CDC_SET_CONTROL_LINE_STATE = 0x22,
    CDC_CTRL_DTR = 0x01, /* SET_CONTROL_LINE_STATE wValue bits */
    CDC_CTRL_RTS = 0x02,
};

typedef struct {
    uint16_t bcdUSB;
    uint8_t cls, subclass, protocol;
    uint8_t max_packet0;
    uint16_t vid, pid, bcdDevice;
    uint8_t iManufacturer, iProduct, iSerial;
    uint8_t nconfigs;
} usbc_device_desc;

typedef struct {
    uint8_t addr; /* with the direction bit (0x80 = IN) */
    uint8_t type; /* bmAttributes & 3: 2 bulk, 3 interrupt */
    uint16_t max_packet;
    uint8_t interval;
} usbc_ep;

typedef struct {
    uint8_t comm_iface;      /* the communication interface: CDC requests go to it (wIndex) */
    uint8_t data_iface;      /* the data interface carrying the bulk pair */
    uint8_t data_alt;        /* its alternate setting with the bulk pair (normally 0) */
    bool has_notify;         /* the communication interface has an interrupt IN endpoint */
    usbc_ep notify, in, out; /* notification, bulk IN, bulk OUT */
    uint8_t istr;            /* string index naming the function (IAD iFunction, else iInterface), 0 if none */
    bool via_iad;            /* found through an IAD (else union/call-management/next interface) */
} usbc_cdc_fn;

typedef struct {
    uint8_t value;   /* bConfigurationValue: what SET_CONFIGURATION takes */
    uint8_t nifaces; /* bNumInterfaces */
    uint16_t total;  /* wTotalLength */
    size_t ncdc;     /* CDC ACM functions found, in interface order (at most USBC_MAX_CDC kept) */
    usbc_cdc_fn cdc[USBC_MAX_CDC];
} usbc_config;

/* The 18-byte device descriptor. 0, or -EBADMSG with a reason. */
int usbc_parse_device(const uint8_t *buf, size_t len, usbc_device_desc *d, ifm_err *err);
/* The 9-byte configuration header alone (to learn wTotalLength). */
int usbc_parse_config_header(const uint8_t *buf, size_t len, uint16_t *total, ifm_err *err);
/* A whole configuration descriptor (len >= wTotalLength; bytes beyond are ignored). */
int usbc_parse_config(const uint8_t *buf, size_t len, usbc_config *c, ifm_err *err);
/* The CDC function whose communication interface is `comm_iface`, or NULL. */
const usbc_cdc_fn *usbc_cdc_by_comm(const usbc_config *c, uint8_t comm_iface);
/* A string descriptor (UTF-16LE) as ASCII/UTF-8 into out (always terminated);
 * 0 or -EBADMSG. */
int usbc_parse_string(const uint8_t *buf, size_t len, char *out, size_t cap, ifm_err *err);

#endif
