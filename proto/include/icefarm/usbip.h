/* The USB/IP wire codec: pure pack and unpack of every PDU, no I/O, no allocation.
 *
 * Shared by the worker's USB/IP server (wrk/usbip/) and the client side
 * (libicefarm). The protocol is the Linux kernel's (Documentation/usb/
 * usbip_protocol.rst) as the real peers speak it; proto/PROTOCOL.md "USB/IP"
 * has the summary and the deviations from the kernel document that real peers
 * make and this codec accepts.
 *
 *   Phase 1, "op" PDUs: an 8-byte header {version 0x0111, code, status}, then
 *     OP_REQ_DEVLIST (no body)   -> OP_REP_DEVLIST  {ndev, ndev x (device, nif x interface)}
 *     OP_REQ_IMPORT  (busid[32]) -> OP_REP_IMPORT   {device} when status is ST_OK, else nothing
 *   Phase 2, after a successful import, "URB" PDUs: a 48-byte header, then
 *     CMD_SUBMIT  + OUT data (transfer_buffer_length bytes) + ISO descriptors
 *     RET_SUBMIT  + IN data (actual_length bytes)           + ISO descriptors
 *     CMD_UNLINK, RET_UNLINK (header only)
 *
 * Every integer on the wire is big-endian except the 8-byte USB SETUP packet,
 * which is carried as raw bytes (little-endian inside, as on the USB wire).
 *
 * Decoding. Every unpack function works on a prefix of a byte stream and returns
 *   > 0  the number of bytes of the one PDU it decoded;
 *     0  the PDU is not complete yet: read more and call again (*need, where a
 *        function has it, says how many bytes the whole PDU needs, as far as is
 *        known from what arrived);
 *   < 0  a negative errno: -EPROTO for a malformed PDU, -EMSGSIZE for one larger
 *        than the limits below; err->msg names the field and the value. The
 *        stream cannot be resynchronised after an error: close the connection.
 * Decoded structs never point into the input except usbip_urb's data and iso
 * pointers, which are views into the caller's buffer.
 *
 * A URB PDU's length depends on facts the header does not carry: whether the
 * endpoint is isochronous (the real client sends number_of_packets 0 for
 * non-ISO URBs, the kernel document says 0xffffffff; both are accepted and the
 * field is otherwise ignored) and, for a RET_SUBMIT, the direction of the URB it
 * answers (RET headers carry direction 0). The receiver knows both: the server
 * from its endpoint map, the client from its record of the submit. So a URB PDU
 * is decoded in two steps, header then body, with an ifm_usbip_shape in between;
 * ifm_usbip_urb_unpack() does both given a callback.
 *
 * Encoding functions write into a caller's buffer and return the bytes written,
 * or -ENOSPC if `cap` is too small (nothing useful is written then), or -EINVAL
 * for a value the wire cannot carry. ifm_usbip_*_size() tell the size first.
 *
 * Everything here is re-entrant and thread-safe (no state).
 */
#ifndef ICEFARM_USBIP_H
#define ICEFARM_USBIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "icefarm/codec.h" /* ifm_err */

#define IFM_USBIP_VERSION 0x0111
#define IFM_USBIP_PORT 3240

#define IFM_USBIP_OP_HDR_SIZE 8
#define IFM_USBIP_IMPORT_REQ_SIZE 40  /* header + busid[32] */
#define IFM_USBIP_DEVICE_SIZE 312     /* struct usbip_usb_device */
#define IFM_USBIP_IMPORT_REP_SIZE 320 /* header + device */
#define IFM_USBIP_INTERFACE_SIZE 4
#define IFM_USBIP_URB_HDR_SIZE 48
#define IFM_USBIP_ISO_DESC_SIZE 16
#define IFM_USBIP_PATH_SIZE 256 /* NUL-padded on the wire */
#define IFM_USBIP_BUSID_SIZE 32 /* NUL-padded; at most 31 characters */

/* Limits enforced by the decoders (and the encoders). */
#define IFM_USBIP_MAX_TRANSFER (1u << 20) /* bytes in one URB's buffer */
#define IFM_USBIP_MAX_ISO_PACKETS 1024u
#define IFM_USBIP_MAX_INTERFACES 32u /* per device (the Linux USB core's USB_MAXINTERFACES) */
#define IFM_USBIP_MAX_DEVICES 1024u  /* in one OP_REP_DEVLIST */

/* op codes: a request is 0x8000 | op, its reply 0x0000 | op */
#define IFM_USBIP_OP_IMPORT 0x03
#define IFM_USBIP_OP_DEVLIST 0x05
#define IFM_USBIP_OP_REQUEST 0x8000
#define IFM_USBIP_OP_REQ_IMPORT (IFM_USBIP_OP_REQUEST | IFM_USBIP_OP_IMPORT)
#define IFM_USBIP_OP_REQ_DEVLIST (IFM_USBIP_OP_REQUEST | IFM_USBIP_OP_DEVLIST)
#define IFM_USBIP_OP_REP_IMPORT IFM_USBIP_OP_IMPORT
#define IFM_USBIP_OP_REP_DEVLIST IFM_USBIP_OP_DEVLIST

/* op_common.status in replies; the Linux tool's wording in quotes */
typedef enum {
    IFM_USBIP_ST_OK = 0,
    IFM_USBIP_ST_NA = 1,       /* "Request Failed" */
    IFM_USBIP_ST_DEV_BUSY = 2, /* "Device busy (exported)" */
    IFM_USBIP_ST_DEV_ERR = 3,  /* "Device in error state" */
    IFM_USBIP_ST_NODEV = 4,    /* "Device not found" */
    IFM_USBIP_ST_ERROR = 5,    /* "Unexpected response" */
} ifm_usbip_status;

/* usbip_header_basic.command */
#define IFM_USBIP_CMD_SUBMIT 1u
#define IFM_USBIP_CMD_UNLINK 2u
#define IFM_USBIP_RET_SUBMIT 3u
#define IFM_USBIP_RET_UNLINK 4u

#define IFM_USBIP_DIR_OUT 0u
#define IFM_USBIP_DIR_IN 1u

/* transfer_flags bits a server honours (include/uapi/linux/usbip.h) */
#define IFM_USBIP_URB_SHORT_NOT_OK 0x0001u
#define IFM_USBIP_URB_ISO_ASAP 0x0002u
#define IFM_USBIP_URB_ZERO_PACKET 0x0040u
#define IFM_USBIP_URB_DIR_IN 0x0200u

/* Kernel enum usb_device_speed, as carried in the device record (not libusb's). */
enum {
    IFM_USBIP_SPEED_UNKNOWN = 0,
    IFM_USBIP_SPEED_LOW = 1,
    IFM_USBIP_SPEED_FULL = 2,
    IFM_USBIP_SPEED_HIGH = 3,
    IFM_USBIP_SPEED_WIRELESS = 4,
    IFM_USBIP_SPEED_SUPER = 5,
    IFM_USBIP_SPEED_SUPER_PLUS = 6,
};

/* ---- phase 1: op PDUs ---- */

typedef struct {
    uint16_t version;
    uint16_t code;
    uint32_t status;
} ifm_usbip_op_hdr;

/* struct usbip_usb_device. path and busid are NUL-terminated C strings here. */
typedef struct {
    char path[IFM_USBIP_PATH_SIZE];
    char busid[IFM_USBIP_BUSID_SIZE];
    uint32_t busnum, devnum, speed;
    uint16_t idVendor, idProduct, bcdDevice;
    uint8_t bDeviceClass, bDeviceSubClass, bDeviceProtocol;
    uint8_t bConfigurationValue; /* active configuration, 0 if unconfigured */
    uint8_t bNumConfigurations;
    uint8_t bNumInterfaces; /* of the active configuration (DEVLIST sends this many interfaces) */
} ifm_usbip_device;

typedef struct {
    uint8_t bInterfaceClass, bInterfaceSubClass, bInterfaceProtocol;
} ifm_usbip_interface;

/* One OP_REP_DEVLIST record: a device and its interfaces. */
typedef struct {
    ifm_usbip_device dev;
    ifm_usbip_interface ifs[IFM_USBIP_MAX_INTERFACES];
} ifm_usbip_devlist_entry;

/* A request as the server reads it. */
typedef struct {
    uint16_t code;                    /* IFM_USBIP_OP_REQ_DEVLIST or IFM_USBIP_OP_REQ_IMPORT */
    char busid[IFM_USBIP_BUSID_SIZE]; /* IMPORT: the requested busid */
} ifm_usbip_op_req;

/* devid = busnum << 16 | devnum */
static inline uint32_t ifm_usbip_devid(const ifm_usbip_device *d)
{
    return d->busnum << 16 | (d->devnum & 0xffffu);
}

/* The status text the Linux tool prints for `st`. */
const char *ifm_usbip_status_str(uint32_t st);

/* Requests (client side). busid: 1..31 characters. */
ssize_t ifm_usbip_devlist_req_pack(uint8_t *out, size_t cap);
ssize_t ifm_usbip_import_req_pack(const char *busid, uint8_t *out, size_t cap);

/* Server side: one request. A wrong version or an unknown or reply code is
 * -EPROTO (usbipd closes without answering both). The status field of a request
 * is ignored, as usbipd does. */
ssize_t ifm_usbip_op_req_unpack(const uint8_t *buf, size_t len, ifm_usbip_op_req *req, ifm_err *err);

/* Replies (server side). An error reply is the 8-byte header alone. */
ssize_t ifm_usbip_op_rep_pack(uint16_t code, uint32_t status, uint8_t *out, size_t cap);
size_t ifm_usbip_devlist_rep_size(const ifm_usbip_devlist_entry *devs, size_t ndev);
ssize_t ifm_usbip_devlist_rep_pack(const ifm_usbip_devlist_entry *devs, size_t ndev, uint8_t *out, size_t cap);
/* status ST_OK needs `dev`; any other status packs the header only. */
ssize_t ifm_usbip_import_rep_pack(uint32_t status, const ifm_usbip_device *dev, uint8_t *out, size_t cap);
/* The 312-byte device record alone. */
ssize_t ifm_usbip_device_pack(const ifm_usbip_device *dev, uint8_t *out, size_t cap);

/* Client side. The reply header: checks version and that code is a reply. */
ssize_t ifm_usbip_op_hdr_unpack(const uint8_t *buf, size_t len, ifm_usbip_op_hdr *h, ifm_err *err);
/* OP_REP_DEVLIST: stores up to `max` records in devs (max may be 0) and reports
 * the count the server sent in *ndev; every record is validated and consumed
 * either way. A reply with a nonzero status *st is the header alone (*ndev 0). */
ssize_t ifm_usbip_devlist_rep_unpack(const uint8_t *buf, size_t len, uint32_t *st, ifm_usbip_devlist_entry *devs,
                                     size_t max, uint32_t *ndev, size_t *need, ifm_err *err);
/* OP_REP_IMPORT: *st is the status; `dev` is filled only when it is ST_OK. */
ssize_t ifm_usbip_import_rep_unpack(const uint8_t *buf, size_t len, uint32_t *st, ifm_usbip_device *dev, ifm_err *err);
ssize_t ifm_usbip_device_unpack(const uint8_t *buf, size_t len, ifm_usbip_device *dev, ifm_err *err);

/* ---- phase 2: URB PDUs ---- */

typedef struct {
    uint32_t transfer_flags;
    int32_t transfer_buffer_length;
    int32_t start_frame;       /* ISO only; vhci sends -1 for interrupt URBs */
    int32_t number_of_packets; /* ISO only; 0 or -1 (0xffffffff) otherwise */
    int32_t interval;
    uint8_t setup[8]; /* control URBs: the raw SETUP packet */
} ifm_usbip_cmd_submit;

typedef struct {
    int32_t status; /* 0 or a negative Linux errno */
    int32_t actual_length;
    int32_t start_frame;
    int32_t number_of_packets; /* non-ISO: echo what the submit carried */
    int32_t error_count;
} ifm_usbip_ret_submit;

typedef struct {
    uint32_t command;   /* IFM_USBIP_CMD_* / IFM_USBIP_RET_* */
    uint32_t seqnum;    /* RET_*: the seqnum of the CMD it answers */
    uint32_t devid;     /* CMD_*: busnum << 16 | devnum; RET_*: 0 */
    uint32_t direction; /* CMD_SUBMIT: IFM_USBIP_DIR_*; otherwise 0 */
    uint32_t ep;        /* CMD_SUBMIT: endpoint number 0..15 (no direction bit) */
    union {
        ifm_usbip_cmd_submit submit;
        ifm_usbip_ret_submit ret;
        uint32_t unlink_seqnum; /* CMD_UNLINK: the CMD_SUBMIT to cancel */
        int32_t unlink_status;  /* RET_UNLINK: -ECONNRESET (cancelled) or 0 (had completed) */
    } u;
} ifm_usbip_hdr;

typedef struct {
    uint32_t offset;
    uint32_t length;
    uint32_t actual_length;
    int32_t status;
} ifm_usbip_iso_desc;

/* What the receiver knows about the URB a PDU belongs to. */
typedef struct {
    bool iso; /* the endpoint is isochronous: ISO descriptors follow the data */
    bool in;  /* RET_SUBMIT only: the URB was IN, so actual_length bytes follow */
} ifm_usbip_shape;

/* A decoded URB PDU. data and iso point into the decoded buffer. */
typedef struct {
    ifm_usbip_hdr h;
    const uint8_t *data; /* CMD_SUBMIT OUT: transfer_buffer_length bytes; RET_SUBMIT IN: actual_length bytes */
    size_t data_len;
    const uint8_t *iso; /* niso raw descriptors: read them with ifm_usbip_iso_get() */
    uint32_t niso;
} ifm_usbip_urb;

/* Step 1: the 48-byte header. Checks the command, direction, ep <= 15, and
 * lengths and packet counts against the limits; 0 if len < 48. */
ssize_t ifm_usbip_hdr_unpack(const uint8_t *buf, size_t len, ifm_usbip_hdr *h, ifm_err *err);
/* Step 2: the whole PDU's size, header included, for a header from step 1. */
int ifm_usbip_urb_size(const ifm_usbip_hdr *h, ifm_usbip_shape shape, size_t *size, ifm_err *err);
/* Step 3: the body. `buf` holds the whole PDU (ifm_usbip_urb_size bytes); checks
 * the ISO descriptors (CMD_SUBMIT: each packet inside the buffer; RET_SUBMIT:
 * actual lengths within lengths and summing to actual_length). */
int ifm_usbip_urb_body(const uint8_t *buf, const ifm_usbip_hdr *h, ifm_usbip_shape shape, ifm_usbip_urb *u,
                       ifm_err *err);

/* All three steps. `shape_of` is called once the header is known (and may be
 * called again on a later call for the same PDU); it returns 0, or a negative
 * errno with err set to reject the PDU (e.g. a RET_SUBMIT for an unknown seqnum). */
typedef int (*ifm_usbip_shape_fn)(void *arg, const ifm_usbip_hdr *h, ifm_usbip_shape *shape, ifm_err *err);
ssize_t ifm_usbip_urb_unpack(const uint8_t *buf, size_t len, ifm_usbip_shape_fn shape_of, void *arg, ifm_usbip_urb *u,
                             size_t *need, ifm_err *err);

void ifm_usbip_iso_get(const ifm_usbip_urb *u, uint32_t i, ifm_usbip_iso_desc *d);

/* Encoders. The header alone (command-specific fields from the union; unused
 * bytes zero): */
void ifm_usbip_hdr_pack(const ifm_usbip_hdr *h, uint8_t out[IFM_USBIP_URB_HDR_SIZE]);
void ifm_usbip_iso_pack(const ifm_usbip_iso_desc *d, uint8_t out[IFM_USBIP_ISO_DESC_SIZE]);
/* A whole PDU: header, `data_len` bytes of data, `niso` descriptors. The data
 * length must agree with the header (CMD_SUBMIT OUT: transfer_buffer_length;
 * RET_SUBMIT: actual_length, or 0 for an OUT URB): -EINVAL otherwise. */
size_t ifm_usbip_urb_pdu_size(size_t data_len, uint32_t niso);
ssize_t ifm_usbip_urb_pack(const ifm_usbip_hdr *h, const uint8_t *data, size_t data_len, const ifm_usbip_iso_desc *iso,
                           uint32_t niso, uint8_t *out, size_t cap);

/* The USB SETUP packet carried in a control CMD_SUBMIT. */
typedef struct {
    uint8_t bmRequestType, bRequest;
    uint16_t wValue, wIndex, wLength;
} ifm_usb_setup;
void ifm_usb_setup_get(const uint8_t raw[8], ifm_usb_setup *s);
void ifm_usb_setup_put(const ifm_usb_setup *s, uint8_t raw[8]);

#endif
