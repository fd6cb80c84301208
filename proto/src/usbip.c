/* The USB/IP wire codec (icefarm/usbip.h). Offsets follow the kernel's
 * Documentation/usb/usbip_protocol.rst and include/uapi/linux/usbip.h. */
#include "icefarm/usbip.h"

#include <errno.h>
#include <string.h>

/* ---- big-endian helpers ---- */

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int32_t gets32(const uint8_t *p)
{
    uint32_t v = get32(p);
    int32_t s;
    memcpy(&s, &v, sizeof s); /* two's complement, without implementation-defined casts */
    return s;
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void puts32(uint8_t *p, int32_t v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    put32(p, u);
}

const char *ifm_usbip_status_str(uint32_t st)
{
    switch (st) {
    case IFM_USBIP_ST_OK:
        return "OK";
    case IFM_USBIP_ST_NA:
        return "Request Failed";
    case IFM_USBIP_ST_DEV_BUSY:
        return "Device busy (exported)";
    case IFM_USBIP_ST_DEV_ERR:
        return "Device in error state";
    case IFM_USBIP_ST_NODEV:
        return "Device not found";
    case IFM_USBIP_ST_ERROR:
        return "Unexpected response";
    default:
        return "unknown status";
    }
}

/* A NUL-padded fixed field holding a C string: needs a NUL inside the field. */
static int get_cstr(const uint8_t *p, size_t size, char *out, const char *what, ifm_err *err)
{
    const uint8_t *nul = memchr(p, 0, size);
    if (!nul) {
        ifm_err_set(err, "%s: no NUL within its %zu bytes", what, size);
        return -EPROTO;
    }
    memcpy(out, p, (size_t)(nul - p) + 1);
    return 0;
}

static int busid_ok(const char *busid)
{
    size_t n = busid ? strnlen(busid, IFM_USBIP_BUSID_SIZE) : 0;
    return n > 0 && n < IFM_USBIP_BUSID_SIZE;
}

/* ---- op PDUs ---- */

static void op_hdr_put(uint8_t *out, uint16_t code, uint32_t status)
{
    put16(out, IFM_USBIP_VERSION);
    put16(out + 2, code);
    put32(out + 4, status);
}

ssize_t ifm_usbip_devlist_req_pack(uint8_t *out, size_t cap)
{
    if (cap < IFM_USBIP_OP_HDR_SIZE)
        return -ENOSPC;
    op_hdr_put(out, IFM_USBIP_OP_REQ_DEVLIST, 0);
    return IFM_USBIP_OP_HDR_SIZE;
}

ssize_t ifm_usbip_import_req_pack(const char *busid, uint8_t *out, size_t cap)
{
    if (!busid_ok(busid))
        return -EINVAL;
    if (cap < IFM_USBIP_IMPORT_REQ_SIZE)
        return -ENOSPC;
    op_hdr_put(out, IFM_USBIP_OP_REQ_IMPORT, 0);
    memset(out + 8, 0, IFM_USBIP_BUSID_SIZE);
    memcpy(out + 8, busid, strlen(busid));
    return IFM_USBIP_IMPORT_REQ_SIZE;
}

static int check_version(uint16_t v, ifm_err *err)
{
    if (v == IFM_USBIP_VERSION)
        return 0;
    ifm_err_set(err, "version 0x%04x, expected 0x%04x", v, IFM_USBIP_VERSION);
    return -EPROTO;
}

ssize_t ifm_usbip_op_req_unpack(const uint8_t *buf, size_t len, ifm_usbip_op_req *req, ifm_err *err)
{
    if (len < IFM_USBIP_OP_HDR_SIZE)
        return 0;
    int rc = check_version(get16(buf), err);
    if (rc)
        return rc;
    memset(req, 0, sizeof *req);
    req->code = get16(buf + 2);
    switch (req->code) {
    case IFM_USBIP_OP_REQ_DEVLIST:
        return IFM_USBIP_OP_HDR_SIZE;
    case IFM_USBIP_OP_REQ_IMPORT:
        if (len < IFM_USBIP_IMPORT_REQ_SIZE)
            return 0;
        rc = get_cstr(buf + 8, IFM_USBIP_BUSID_SIZE, req->busid, "busid", err);
        if (rc)
            return rc;
        return IFM_USBIP_IMPORT_REQ_SIZE;
    default:
        ifm_err_set(err, "unknown op code 0x%04x", req->code);
        return -EPROTO;
    }
}

ssize_t ifm_usbip_op_rep_pack(uint16_t code, uint32_t status, uint8_t *out, size_t cap)
{
    if (code & IFM_USBIP_OP_REQUEST)
        return -EINVAL;
    if (cap < IFM_USBIP_OP_HDR_SIZE)
        return -ENOSPC;
    op_hdr_put(out, code, status);
    return IFM_USBIP_OP_HDR_SIZE;
}

static int device_ok(const ifm_usbip_device *d)
{
    return d && busid_ok(d->busid) && strnlen(d->path, IFM_USBIP_PATH_SIZE) < IFM_USBIP_PATH_SIZE;
}

static void device_put(const ifm_usbip_device *d, uint8_t *p)
{
    memset(p, 0, IFM_USBIP_DEVICE_SIZE);
    memcpy(p, d->path, strlen(d->path));
    memcpy(p + 0x100, d->busid, strlen(d->busid));
    put32(p + 0x120, d->busnum);
    put32(p + 0x124, d->devnum);
    put32(p + 0x128, d->speed);
    put16(p + 0x12c, d->idVendor);
    put16(p + 0x12e, d->idProduct);
    put16(p + 0x130, d->bcdDevice);
    p[0x132] = d->bDeviceClass;
    p[0x133] = d->bDeviceSubClass;
    p[0x134] = d->bDeviceProtocol;
    p[0x135] = d->bConfigurationValue;
    p[0x136] = d->bNumConfigurations;
    p[0x137] = d->bNumInterfaces;
}

ssize_t ifm_usbip_device_pack(const ifm_usbip_device *dev, uint8_t *out, size_t cap)
{
    if (!device_ok(dev))
        return -EINVAL;
    if (cap < IFM_USBIP_DEVICE_SIZE)
        return -ENOSPC;
    device_put(dev, out);
    return IFM_USBIP_DEVICE_SIZE;
}

size_t ifm_usbip_devlist_rep_size(const ifm_usbip_devlist_entry *devs, size_t ndev)
{
    size_t n = IFM_USBIP_OP_HDR_SIZE + 4;
    for (size_t i = 0; i < ndev; i++)
        n += IFM_USBIP_DEVICE_SIZE + (size_t)devs[i].dev.bNumInterfaces * IFM_USBIP_INTERFACE_SIZE;
    return n;
}

ssize_t ifm_usbip_devlist_rep_pack(const ifm_usbip_devlist_entry *devs, size_t ndev, uint8_t *out, size_t cap)
{
    if (ndev > IFM_USBIP_MAX_DEVICES || (ndev && !devs))
        return -EINVAL;
    for (size_t i = 0; i < ndev; i++)
        if (!device_ok(&devs[i].dev) || devs[i].dev.bNumInterfaces > IFM_USBIP_MAX_INTERFACES)
            return -EINVAL;
    size_t size = ifm_usbip_devlist_rep_size(devs, ndev);
    if (cap < size)
        return -ENOSPC;
    op_hdr_put(out, IFM_USBIP_OP_REP_DEVLIST, IFM_USBIP_ST_OK);
    put32(out + 8, (uint32_t)ndev);
    uint8_t *p = out + 12;
    for (size_t i = 0; i < ndev; i++) {
        device_put(&devs[i].dev, p);
        p += IFM_USBIP_DEVICE_SIZE;
        for (unsigned k = 0; k < devs[i].dev.bNumInterfaces; k++) {
            const ifm_usbip_interface *f = &devs[i].ifs[k];
            p[0] = f->bInterfaceClass;
            p[1] = f->bInterfaceSubClass;
            p[2] = f->bInterfaceProtocol;
            p[3] = 0;
            p += IFM_USBIP_INTERFACE_SIZE;
        }
    }
    return (ssize_t)size;
}

ssize_t ifm_usbip_import_rep_pack(uint32_t status, const ifm_usbip_device *dev, uint8_t *out, size_t cap)
{
    if (status != IFM_USBIP_ST_OK)
        return ifm_usbip_op_rep_pack(IFM_USBIP_OP_REP_IMPORT, status, out, cap);
    if (!device_ok(dev))
        return -EINVAL;
    if (cap < IFM_USBIP_IMPORT_REP_SIZE)
        return -ENOSPC;
    op_hdr_put(out, IFM_USBIP_OP_REP_IMPORT, IFM_USBIP_ST_OK);
    device_put(dev, out + IFM_USBIP_OP_HDR_SIZE);
    return IFM_USBIP_IMPORT_REP_SIZE;
}

ssize_t ifm_usbip_op_hdr_unpack(const uint8_t *buf, size_t len, ifm_usbip_op_hdr *h, ifm_err *err)
{
    if (len < IFM_USBIP_OP_HDR_SIZE)
        return 0;
    h->version = get16(buf);
    h->code = get16(buf + 2);
    h->status = get32(buf + 4);
    int rc = check_version(h->version, err);
    if (rc)
        return rc;
    if (h->code & IFM_USBIP_OP_REQUEST) {
        ifm_err_set(err, "code 0x%04x is a request, expected a reply", h->code);
        return -EPROTO;
    }
    return IFM_USBIP_OP_HDR_SIZE;
}

ssize_t ifm_usbip_device_unpack(const uint8_t *p, size_t len, ifm_usbip_device *d, ifm_err *err)
{
    if (len < IFM_USBIP_DEVICE_SIZE)
        return 0;
    memset(d, 0, sizeof *d);
    int rc = get_cstr(p, IFM_USBIP_PATH_SIZE, d->path, "path", err);
    if (!rc)
        rc = get_cstr(p + 0x100, IFM_USBIP_BUSID_SIZE, d->busid, "busid", err);
    if (rc)
        return rc;
    d->busnum = get32(p + 0x120);
    d->devnum = get32(p + 0x124);
    d->speed = get32(p + 0x128);
    d->idVendor = get16(p + 0x12c);
    d->idProduct = get16(p + 0x12e);
    d->bcdDevice = get16(p + 0x130);
    d->bDeviceClass = p[0x132];
    d->bDeviceSubClass = p[0x133];
    d->bDeviceProtocol = p[0x134];
    d->bConfigurationValue = p[0x135];
    d->bNumConfigurations = p[0x136];
    d->bNumInterfaces = p[0x137];
    return IFM_USBIP_DEVICE_SIZE;
}

static ssize_t rep_hdr(const uint8_t *buf, size_t len, uint16_t code, uint32_t *st, ifm_err *err)
{
    ifm_usbip_op_hdr h;
    ssize_t n = ifm_usbip_op_hdr_unpack(buf, len, &h, err);
    if (n <= 0)
        return n;
    if (h.code != code) {
        ifm_err_set(err, "reply code 0x%04x, expected 0x%04x", h.code, code);
        return -EPROTO;
    }
    *st = h.status;
    return n;
}

ssize_t ifm_usbip_devlist_rep_unpack(const uint8_t *buf, size_t len, uint32_t *st, ifm_usbip_devlist_entry *devs,
                                     size_t max, uint32_t *ndev, size_t *need, ifm_err *err)
{
    size_t want = IFM_USBIP_OP_HDR_SIZE;
    if (need)
        *need = want;
    *ndev = 0;
    ssize_t n = rep_hdr(buf, len, IFM_USBIP_OP_REP_DEVLIST, st, err);
    if (n <= 0)
        return n;
    if (*st != IFM_USBIP_ST_OK)
        return n;
    want += 4;
    if (need)
        *need = want;
    if (len < want)
        return 0;
    uint32_t count = get32(buf + 8);
    if (count > IFM_USBIP_MAX_DEVICES) {
        ifm_err_set(err, "ndev %u exceeds %u", count, IFM_USBIP_MAX_DEVICES);
        return -EMSGSIZE;
    }
    size_t off = want;
    for (uint32_t i = 0; i < count; i++) {
        if (need)
            *need = off + IFM_USBIP_DEVICE_SIZE;
        ifm_usbip_devlist_entry tmp, *e = i < max ? &devs[i] : &tmp;
        n = ifm_usbip_device_unpack(buf + off, len - off, &e->dev, err);
        if (n <= 0)
            return n;
        off += (size_t)n;
        unsigned nif = e->dev.bNumInterfaces;
        if (nif > IFM_USBIP_MAX_INTERFACES) {
            ifm_err_set(err, "device %u: bNumInterfaces %u exceeds %u", i, nif, IFM_USBIP_MAX_INTERFACES);
            return -EPROTO;
        }
        if (need)
            *need = off + nif * IFM_USBIP_INTERFACE_SIZE;
        if (len - off < nif * IFM_USBIP_INTERFACE_SIZE)
            return 0;
        for (unsigned k = 0; k < nif; k++, off += IFM_USBIP_INTERFACE_SIZE) {
            e->ifs[k].bInterfaceClass = buf[off];
            e->ifs[k].bInterfaceSubClass = buf[off + 1];
            e->ifs[k].bInterfaceProtocol = buf[off + 2];
        }
    }
    *ndev = count;
    if (need)
        *need = off;
    return (ssize_t)off;
}

ssize_t ifm_usbip_import_rep_unpack(const uint8_t *buf, size_t len, uint32_t *st, ifm_usbip_device *dev, ifm_err *err)
{
    ssize_t n = rep_hdr(buf, len, IFM_USBIP_OP_REP_IMPORT, st, err);
    if (n <= 0 || *st != IFM_USBIP_ST_OK)
        return n;
    n = ifm_usbip_device_unpack(buf + IFM_USBIP_OP_HDR_SIZE, len - IFM_USBIP_OP_HDR_SIZE, dev, err);
    return n <= 0 ? n : IFM_USBIP_IMPORT_REP_SIZE;
}

/* ---- URB PDUs ---- */

static int check_length(int32_t v, const char *what, ifm_err *err)
{
    if (v < 0) {
        ifm_err_set(err, "%s %d is negative", what, v);
        return -EPROTO;
    }
    if ((uint32_t)v > IFM_USBIP_MAX_TRANSFER) {
        ifm_err_set(err, "%s %d exceeds %u", what, v, IFM_USBIP_MAX_TRANSFER);
        return -EMSGSIZE;
    }
    return 0;
}

ssize_t ifm_usbip_hdr_unpack(const uint8_t *p, size_t len, ifm_usbip_hdr *h, ifm_err *err)
{
    if (len < IFM_USBIP_URB_HDR_SIZE)
        return 0;
    memset(h, 0, sizeof *h);
    h->command = get32(p);
    h->seqnum = get32(p + 4);
    h->devid = get32(p + 8);
    h->direction = get32(p + 12);
    h->ep = get32(p + 16);
    int rc = 0;
    switch (h->command) {
    case IFM_USBIP_CMD_SUBMIT: {
        ifm_usbip_cmd_submit *s = &h->u.submit;
        s->transfer_flags = get32(p + 0x14);
        s->transfer_buffer_length = gets32(p + 0x18);
        s->start_frame = gets32(p + 0x1c);
        s->number_of_packets = gets32(p + 0x20);
        s->interval = gets32(p + 0x24);
        memcpy(s->setup, p + 0x28, 8);
        if (h->direction > IFM_USBIP_DIR_IN) {
            ifm_err_set(err, "CMD_SUBMIT seqnum %u: direction %u is neither 0 (OUT) nor 1 (IN)", h->seqnum,
                        h->direction);
            return -EPROTO;
        }
        if (h->ep > 15) {
            ifm_err_set(err, "CMD_SUBMIT seqnum %u: ep %u out of range 0..15", h->seqnum, h->ep);
            return -EPROTO;
        }
        rc = check_length(s->transfer_buffer_length, "CMD_SUBMIT transfer_buffer_length", err);
        break;
    }
    case IFM_USBIP_RET_SUBMIT: {
        ifm_usbip_ret_submit *r = &h->u.ret;
        r->status = gets32(p + 0x14);
        r->actual_length = gets32(p + 0x18);
        r->start_frame = gets32(p + 0x1c);
        r->number_of_packets = gets32(p + 0x20);
        r->error_count = gets32(p + 0x24);
        rc = check_length(r->actual_length, "RET_SUBMIT actual_length", err);
        break;
    }
    case IFM_USBIP_CMD_UNLINK:
        h->u.unlink_seqnum = get32(p + 0x14);
        break;
    case IFM_USBIP_RET_UNLINK:
        h->u.unlink_status = gets32(p + 0x14);
        break;
    default:
        ifm_err_set(err, "unknown command 0x%08x (seqnum %u)", h->command, h->seqnum);
        return -EPROTO;
    }
    return rc ? rc : IFM_USBIP_URB_HDR_SIZE;
}

/* ISO packet count of a PDU on an ISO endpoint. */
static int iso_count(int32_t np, uint32_t seqnum, uint32_t *out, ifm_err *err)
{
    if (np < 0) {
        ifm_err_set(err, "seqnum %u: number_of_packets %d on an isochronous endpoint", seqnum, np);
        return -EPROTO;
    }
    if ((uint32_t)np > IFM_USBIP_MAX_ISO_PACKETS) {
        ifm_err_set(err, "seqnum %u: number_of_packets %d exceeds %u", seqnum, np, IFM_USBIP_MAX_ISO_PACKETS);
        return -EMSGSIZE;
    }
    *out = (uint32_t)np;
    return 0;
}

/* Data bytes and ISO descriptors that follow the header. */
static int body_of(const ifm_usbip_hdr *h, ifm_usbip_shape shape, size_t *data, uint32_t *niso, ifm_err *err)
{
    *data = 0;
    *niso = 0;
    switch (h->command) {
    case IFM_USBIP_CMD_SUBMIT:
        if (h->direction == IFM_USBIP_DIR_OUT)
            *data = (size_t)h->u.submit.transfer_buffer_length;
        return shape.iso ? iso_count(h->u.submit.number_of_packets, h->seqnum, niso, err) : 0;
    case IFM_USBIP_RET_SUBMIT:
        if (shape.in)
            *data = (size_t)h->u.ret.actual_length;
        return shape.iso ? iso_count(h->u.ret.number_of_packets, h->seqnum, niso, err) : 0;
    default:
        return 0;
    }
}

size_t ifm_usbip_urb_pdu_size(size_t data_len, uint32_t niso)
{
    return IFM_USBIP_URB_HDR_SIZE + data_len + (size_t)niso * IFM_USBIP_ISO_DESC_SIZE;
}

int ifm_usbip_urb_size(const ifm_usbip_hdr *h, ifm_usbip_shape shape, size_t *size, ifm_err *err)
{
    size_t data;
    uint32_t niso;
    int rc = body_of(h, shape, &data, &niso, err);
    if (rc)
        return rc;
    *size = ifm_usbip_urb_pdu_size(data, niso);
    return 0;
}

void ifm_usbip_iso_get(const ifm_usbip_urb *u, uint32_t i, ifm_usbip_iso_desc *d)
{
    const uint8_t *p = u->iso + (size_t)i * IFM_USBIP_ISO_DESC_SIZE;
    d->offset = get32(p);
    d->length = get32(p + 4);
    d->actual_length = get32(p + 8);
    d->status = gets32(p + 12);
}

static int check_iso(const ifm_usbip_urb *u, bool in, ifm_err *err)
{
    const ifm_usbip_hdr *h = &u->h;
    uint64_t sum = 0;
    for (uint32_t i = 0; i < u->niso; i++) {
        ifm_usbip_iso_desc d;
        ifm_usbip_iso_get(u, i, &d);
        if (h->command == IFM_USBIP_CMD_SUBMIT) {
            if ((uint64_t)d.offset + d.length > (uint64_t)h->u.submit.transfer_buffer_length) {
                ifm_err_set(err,
                            "CMD_SUBMIT seqnum %u: ISO packet %u (offset %u, length %u) outside the %d-byte buffer",
                            h->seqnum, i, d.offset, d.length, h->u.submit.transfer_buffer_length);
                return -EPROTO;
            }
        } else {
            if (d.actual_length > d.length) {
                ifm_err_set(err, "RET_SUBMIT seqnum %u: ISO packet %u actual_length %u exceeds its length %u",
                            h->seqnum, i, d.actual_length, d.length);
                return -EPROTO;
            }
            sum += d.actual_length;
        }
    }
    /* IN data is the packets' actual bytes back to back; OUT carries none. */
    if (h->command == IFM_USBIP_RET_SUBMIT && in && sum != u->data_len) {
        ifm_err_set(err, "RET_SUBMIT seqnum %u: ISO packets hold %llu bytes, actual_length is %zu", h->seqnum,
                    (unsigned long long)sum, u->data_len);
        return -EPROTO;
    }
    return 0;
}

int ifm_usbip_urb_body(const uint8_t *buf, const ifm_usbip_hdr *h, ifm_usbip_shape shape, ifm_usbip_urb *u,
                       ifm_err *err)
{
    size_t data;
    uint32_t niso;
    int rc = body_of(h, shape, &data, &niso, err);
    if (rc)
        return rc;
    u->h = *h;
    u->data = data ? buf + IFM_USBIP_URB_HDR_SIZE : NULL;
    u->data_len = data;
    u->niso = niso;
    u->iso = niso ? buf + IFM_USBIP_URB_HDR_SIZE + data : NULL;
    return niso ? check_iso(u, shape.in, err) : 0;
}

ssize_t ifm_usbip_urb_unpack(const uint8_t *buf, size_t len, ifm_usbip_shape_fn shape_of, void *arg, ifm_usbip_urb *u,
                             size_t *need, ifm_err *err)
{
    if (need)
        *need = IFM_USBIP_URB_HDR_SIZE;
    ifm_usbip_hdr h;
    ssize_t n = ifm_usbip_hdr_unpack(buf, len, &h, err);
    if (n <= 0)
        return n;
    ifm_usbip_shape shape = { false, false };
    if (shape_of) {
        int rc = shape_of(arg, &h, &shape, err);
        if (rc)
            return rc < 0 ? rc : -EPROTO;
    }
    size_t size;
    int rc = ifm_usbip_urb_size(&h, shape, &size, err);
    if (rc)
        return rc;
    if (need)
        *need = size;
    if (len < size)
        return 0;
    rc = ifm_usbip_urb_body(buf, &h, shape, u, err);
    return rc ? rc : (ssize_t)size;
}

void ifm_usbip_hdr_pack(const ifm_usbip_hdr *h, uint8_t out[IFM_USBIP_URB_HDR_SIZE])
{
    memset(out, 0, IFM_USBIP_URB_HDR_SIZE);
    put32(out, h->command);
    put32(out + 4, h->seqnum);
    put32(out + 8, h->devid);
    put32(out + 12, h->direction);
    put32(out + 16, h->ep);
    switch (h->command) {
    case IFM_USBIP_CMD_SUBMIT:
        put32(out + 0x14, h->u.submit.transfer_flags);
        puts32(out + 0x18, h->u.submit.transfer_buffer_length);
        puts32(out + 0x1c, h->u.submit.start_frame);
        puts32(out + 0x20, h->u.submit.number_of_packets);
        puts32(out + 0x24, h->u.submit.interval);
        memcpy(out + 0x28, h->u.submit.setup, 8);
        break;
    case IFM_USBIP_RET_SUBMIT:
        puts32(out + 0x14, h->u.ret.status);
        puts32(out + 0x18, h->u.ret.actual_length);
        puts32(out + 0x1c, h->u.ret.start_frame);
        puts32(out + 0x20, h->u.ret.number_of_packets);
        puts32(out + 0x24, h->u.ret.error_count);
        break;
    case IFM_USBIP_CMD_UNLINK:
        put32(out + 0x14, h->u.unlink_seqnum);
        break;
    case IFM_USBIP_RET_UNLINK:
        puts32(out + 0x14, h->u.unlink_status);
        break;
    default:
        break;
    }
}

void ifm_usbip_iso_pack(const ifm_usbip_iso_desc *d, uint8_t out[IFM_USBIP_ISO_DESC_SIZE])
{
    put32(out, d->offset);
    put32(out + 4, d->length);
    put32(out + 8, d->actual_length);
    puts32(out + 12, d->status);
}

static int data_len_ok(const ifm_usbip_hdr *h, size_t data_len)
{
    switch (h->command) {
    case IFM_USBIP_CMD_SUBMIT:
        if (h->direction > IFM_USBIP_DIR_IN || h->ep > 15 || h->u.submit.transfer_buffer_length < 0 ||
            (uint32_t)h->u.submit.transfer_buffer_length > IFM_USBIP_MAX_TRANSFER)
            return 0;
        return data_len == (h->direction == IFM_USBIP_DIR_OUT ? (size_t)h->u.submit.transfer_buffer_length : 0);
    case IFM_USBIP_RET_SUBMIT:
        if (h->u.ret.actual_length < 0 || (uint32_t)h->u.ret.actual_length > IFM_USBIP_MAX_TRANSFER)
            return 0;
        return data_len == 0 || data_len == (size_t)h->u.ret.actual_length;
    case IFM_USBIP_CMD_UNLINK:
    case IFM_USBIP_RET_UNLINK:
        return data_len == 0;
    default:
        return 0;
    }
}

ssize_t ifm_usbip_urb_pack(const ifm_usbip_hdr *h, const uint8_t *data, size_t data_len, const ifm_usbip_iso_desc *iso,
                           uint32_t niso, uint8_t *out, size_t cap)
{
    if (!data_len_ok(h, data_len) || (data_len && !data) || niso > IFM_USBIP_MAX_ISO_PACKETS || (niso && !iso))
        return -EINVAL;
    if (niso && h->command != IFM_USBIP_CMD_SUBMIT && h->command != IFM_USBIP_RET_SUBMIT)
        return -EINVAL;
    size_t size = ifm_usbip_urb_pdu_size(data_len, niso);
    if (cap < size)
        return -ENOSPC;
    ifm_usbip_hdr_pack(h, out);
    if (data_len)
        memcpy(out + IFM_USBIP_URB_HDR_SIZE, data, data_len);
    uint8_t *p = out + IFM_USBIP_URB_HDR_SIZE + data_len;
    for (uint32_t i = 0; i < niso; i++, p += IFM_USBIP_ISO_DESC_SIZE)
        ifm_usbip_iso_pack(&iso[i], p);
    return (ssize_t)size;
}

void ifm_usb_setup_get(const uint8_t raw[8], ifm_usb_setup *s)
{
    s->bmRequestType = raw[0];
    s->bRequest = raw[1];
    s->wValue = (uint16_t)(raw[2] | raw[3] << 8);
    s->wIndex = (uint16_t)(raw[4] | raw[5] << 8);
    s->wLength = (uint16_t)(raw[6] | raw[7] << 8);
}

void ifm_usb_setup_put(const ifm_usb_setup *s, uint8_t raw[8])
{
    raw[0] = s->bmRequestType;
    raw[1] = s->bRequest;
    raw[2] = (uint8_t)s->wValue;
    raw[3] = (uint8_t)(s->wValue >> 8);
    raw[4] = (uint8_t)s->wIndex;
    raw[5] = (uint8_t)(s->wIndex >> 8);
    raw[6] = (uint8_t)s->wLength;
    raw[7] = (uint8_t)(s->wLength >> 8);
}
