/* Descriptor parsing and CDC ACM function discovery for the USB/IP client
 * (usbip_desc.h). The rules are in the header; this file walks the bytes. */
#include "usbip_desc.h"

#include <string.h>

#define MAX_ALTS 64 /* interface descriptors (all alternate settings) looked at */
#define MAX_IADS 16
#define ALT_EPS 4 /* endpoints remembered per alternate setting */

static uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

int usbc_parse_device(const uint8_t *buf, size_t len, usbc_device_desc *d, ifm_err *err)
{
    if (len < 18)
        return ifm_fail(err, -EBADMSG, "device descriptor: %zu bytes, need 18", len);
    if (buf[0] < 18 || buf[1] != USB_DT_DEVICE)
        return ifm_fail(err, -EBADMSG, "device descriptor: bLength %u, bDescriptorType %u (want 18, 1)", buf[0],
                        buf[1]);
    memset(d, 0, sizeof *d);
    d->bcdUSB = le16(buf + 2);
    d->cls = buf[4];
    d->subclass = buf[5];
    d->protocol = buf[6];
    d->max_packet0 = buf[7];
    d->vid = le16(buf + 8);
    d->pid = le16(buf + 10);
    d->bcdDevice = le16(buf + 12);
    d->iManufacturer = buf[14];
    d->iProduct = buf[15];
    d->iSerial = buf[16];
    d->nconfigs = buf[17];
    return 0;
}

int usbc_parse_config_header(const uint8_t *buf, size_t len, uint16_t *total, ifm_err *err)
{
    if (len < 9)
        return ifm_fail(err, -EBADMSG, "configuration descriptor: %zu bytes, need 9", len);
    if (buf[0] < 9 || buf[1] != USB_DT_CONFIG)
        return ifm_fail(err, -EBADMSG, "configuration descriptor: bLength %u, bDescriptorType %u (want 9, 2)", buf[0],
                        buf[1]);
    uint16_t t = le16(buf + 2);
    if (t < buf[0])
        return ifm_fail(err, -EBADMSG, "configuration descriptor: wTotalLength %u shorter than its header (%u)", t,
                        buf[0]);
    *total = t;
    return 0;
}

typedef struct {
    uint8_t num, alt, cls, sub, istr;
    uint8_t neps;
    usbc_ep eps[ALT_EPS];
    int union_data; /* -1: no Union functional descriptor */
    int cm_data;    /* -1: no Call Management functional descriptor */
} alt_rec;

typedef struct {
    uint8_t first, count, cls, sub, istr;
} iad_rec;

static const alt_rec *find_alt(const alt_rec *alts, size_t n, uint8_t num, uint8_t alt)
{
    for (size_t i = 0; i < n; i++)
        if (alts[i].num == num && alts[i].alt == alt)
            return &alts[i];
    return NULL;
}

/* The data interface's alternate setting with a bulk IN and a bulk OUT. */
static bool bulk_pair(const alt_rec *alts, size_t n, uint8_t num, usbc_cdc_fn *fn)
{
    for (size_t i = 0; i < n; i++) {
        const alt_rec *a = &alts[i];
        if (a->num != num || a->cls != 0x0a)
            continue;
        const usbc_ep *in = NULL, *out = NULL;
        for (size_t e = 0; e < a->neps; e++) {
            if (a->eps[e].type != 2)
                continue;
            if (a->eps[e].addr & 0x80) {
                if (!in)
                    in = &a->eps[e];
            } else if (!out) {
                out = &a->eps[e];
            }
        }
        if (in && out) {
            fn->data_iface = num;
            fn->data_alt = a->alt;
            fn->in = *in;
            fn->out = *out;
            return true;
        }
    }
    return false;
}

int usbc_parse_config(const uint8_t *buf, size_t len, usbc_config *c, ifm_err *err)
{
    uint16_t total;
    int rc = usbc_parse_config_header(buf, len, &total, err);
    if (rc)
        return rc;
    if (total > len)
        return ifm_fail(err, -EBADMSG, "configuration descriptor: wTotalLength %u, only %zu bytes read", total, len);
    memset(c, 0, sizeof *c);
    c->total = total;
    c->nifaces = buf[4];
    c->value = buf[5];

    alt_rec alts[MAX_ALTS];
    iad_rec iads[MAX_IADS];
    size_t nalts = 0, niads = 0;
    alt_rec *cur = NULL; /* the interface descriptor the following ones belong to */
    for (size_t off = buf[0]; off < total;) {
        const uint8_t *p = buf + off;
        if (total - off < 2 || p[0] < 2 || p[0] > total - off)
            return ifm_fail(err, -EBADMSG,
                            "configuration descriptor: the descriptor at offset %zu (bLength %u) runs "
                            "past wTotalLength %u",
                            off, total - off >= 1 ? p[0] : 0, total);
        uint8_t bl = p[0], type = p[1];
        off += bl;
        switch (type) {
        case USB_DT_INTERFACE:
            if (bl < 9)
                return ifm_fail(err, -EBADMSG, "interface descriptor at offset %zu: bLength %u, need 9", off - bl, bl);
            cur = NULL;
            if (nalts < MAX_ALTS) {
                cur = &alts[nalts++];
                *cur = (alt_rec){
                    .num = p[2], .alt = p[3], .cls = p[5], .sub = p[6], .istr = p[8], .union_data = -1, .cm_data = -1
                };
            }
            break;
        case USB_DT_ENDPOINT:
            if (bl < 7)
                return ifm_fail(err, -EBADMSG, "endpoint descriptor at offset %zu: bLength %u, need 7", off - bl, bl);
            if (cur && cur->neps < ALT_EPS)
                cur->eps[cur->neps++] =
                    (usbc_ep){ .addr = p[2], .type = (uint8_t)(p[3] & 3), .max_packet = le16(p + 4), .interval = p[6] };
            break;
        case USB_DT_IAD:
            if (bl < 8)
                return ifm_fail(err, -EBADMSG, "interface association descriptor at offset %zu: bLength %u, need 8",
                                off - bl, bl);
            if (niads < MAX_IADS)
                iads[niads++] = (iad_rec){ .first = p[2], .count = p[3], .cls = p[4], .sub = p[5], .istr = p[7] };
            break;
        case USB_DT_CS_INTERFACE:
            /* CDC functional descriptors: bDescriptorSubtype at [2] */
            if (bl >= 5 && p[2] == 0x06 && cur) /* Union: bControlInterface, bSubordinateInterface0 */
                cur->union_data = p[4];
            else if (bl >= 5 && p[2] == 0x01 && cur) /* Call Management: bmCapabilities, bDataInterface */
                cur->cm_data = p[4];
            break;
        default:
            break;
        }
    }

    for (size_t i = 0; i < nalts && c->ncdc < USBC_MAX_CDC; i++) {
        const alt_rec *a = &alts[i];
        if (a->alt != 0 || a->cls != 0x02 || a->sub != 0x02 || usbc_cdc_by_comm(c, a->num))
            continue; /* not a communication interface, or one seen already (a malformed repeat) */
        usbc_cdc_fn fn = { .comm_iface = a->num, .istr = a->istr };
        for (size_t e = 0; e < a->neps; e++)
            if (a->eps[e].type == 3 && (a->eps[e].addr & 0x80)) {
                fn.has_notify = true;
                fn.notify = a->eps[e];
                break;
            }
        int cand[4], ncand = 0;
        for (size_t k = 0; k < niads; k++)
            if (iads[k].first == a->num && iads[k].count >= 2 && iads[k].cls == 0x02) {
                cand[ncand++] = a->num + 1;
                fn.via_iad = true;
                if (iads[k].istr)
                    fn.istr = iads[k].istr;
                break;
            }
        if (a->union_data >= 0)
            cand[ncand++] = a->union_data;
        if (a->cm_data >= 0)
            cand[ncand++] = a->cm_data;
        cand[ncand++] = a->num + 1;
        bool found = false;
        for (int k = 0; k < ncand && !found; k++)
            if (cand[k] <= 255 && cand[k] != a->num && find_alt(alts, nalts, (uint8_t)cand[k], 0))
                found = bulk_pair(alts, nalts, (uint8_t)cand[k], &fn);
        if (!found)
            continue;
        /* An IAD's claim that the next interface is the data one was wrong if the
         * pair was found elsewhere. */
        if (fn.data_iface != a->num + 1)
            fn.via_iad = false;
        c->cdc[c->ncdc++] = fn;
    }
    return 0;
}

const usbc_cdc_fn *usbc_cdc_by_comm(const usbc_config *c, uint8_t comm_iface)
{
    for (size_t i = 0; i < c->ncdc; i++)
        if (c->cdc[i].comm_iface == comm_iface)
            return &c->cdc[i];
    return NULL;
}

int usbc_parse_string(const uint8_t *buf, size_t len, char *out, size_t cap, ifm_err *err)
{
    if (cap)
        out[0] = '\0';
    if (len < 2 || buf[1] != USB_DT_STRING || buf[0] < 2 || buf[0] > len || (buf[0] & 1))
        return ifm_fail(err, -EBADMSG, "string descriptor: bLength %u, bDescriptorType %u in %zu bytes",
                        len ? buf[0] : 0, len > 1 ? buf[1] : 0, len);
    size_t n = 0;
    for (size_t i = 2; i + 1 < buf[0] && n + 1 < cap; i += 2) {
        uint16_t ch = le16(buf + i);
        out[n++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    if (cap)
        out[n] = '\0';
    return 0;
}
