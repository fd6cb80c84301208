/* libFuzzer target: every USB/IP decoder (icefarm/usbip.h).
 *
 * Input: one selector byte, then a byte stream. The selector's low 2 bits pick
 * the decoder (op request, DEVLIST reply, IMPORT reply, URB stream); for URB
 * streams bit 2 says the endpoint is isochronous and bit 3 that a RET_SUBMIT
 * answers an IN URB. URB streams are decoded PDU after PDU, like a connection.
 *
 * Invariants: a decoder returns need-more (0, asking for more than it was
 * given), an error with a reason, or a length within the input; whatever it
 * accepts is encoded again and must decode to the same values. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "icefarm/usbip.h"

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "fuzz_usbip: check failed: %s (line %d)\n", #cond, __LINE__);                              \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_rc(ssize_t n, size_t len, const ifm_err *err)
{
    CHECK(n <= (ssize_t)len);
    if (n < 0) {
        CHECK(n == -EPROTO || n == -EMSGSIZE);
        CHECK(err->msg[0] != '\0');
    }
}

static void fuzz_op_req(const uint8_t *p, size_t len)
{
    ifm_usbip_op_req req;
    ifm_err err = { "" };
    ssize_t n = ifm_usbip_op_req_unpack(p, len, &req, &err);
    check_rc(n, len, &err);
    if (n <= 0)
        return;
    uint8_t out[IFM_USBIP_IMPORT_REQ_SIZE];
    ssize_t m;
    if (req.code == IFM_USBIP_OP_REQ_DEVLIST) {
        m = ifm_usbip_devlist_req_pack(out, sizeof out);
    } else {
        CHECK(req.code == IFM_USBIP_OP_REQ_IMPORT);
        m = ifm_usbip_import_req_pack(req.busid, out, sizeof out);
        if (req.busid[0] == '\0') {
            CHECK(m == -EINVAL); /* an empty busid decodes but is never sent */
            return;
        }
    }
    CHECK(m == n);
    ifm_usbip_op_req again;
    CHECK(ifm_usbip_op_req_unpack(out, (size_t)m, &again, &err) == m);
    CHECK(again.code == req.code && strcmp(again.busid, req.busid) == 0);
}

static void fuzz_devlist(const uint8_t *p, size_t len)
{
    static ifm_usbip_devlist_entry devs[4], again[4];
    uint32_t st, ndev, st2, ndev2;
    size_t need = 0;
    ifm_err err = { "" };
    ssize_t n = ifm_usbip_devlist_rep_unpack(p, len, &st, devs, 4, &ndev, &need, &err);
    check_rc(n, len, &err);
    if (n == 0)
        CHECK(need > len);
    if (n <= 0 || st != IFM_USBIP_ST_OK || ndev > 4)
        return;
    for (uint32_t i = 0; i < ndev; i++)
        if (devs[i].dev.busid[0] == '\0')
            return; /* decodes, but the encoder refuses an empty busid */
    size_t size = ifm_usbip_devlist_rep_size(devs, ndev);
    CHECK(size == (size_t)n);
    uint8_t *out = malloc(size);
    CHECK(out);
    CHECK(ifm_usbip_devlist_rep_pack(devs, ndev, out, size) == (ssize_t)size);
    CHECK(ifm_usbip_devlist_rep_unpack(out, size, &st2, again, 4, &ndev2, NULL, &err) == (ssize_t)size);
    CHECK(st2 == st && ndev2 == ndev);
    for (uint32_t i = 0; i < ndev; i++) {
        CHECK(memcmp(&again[i].dev, &devs[i].dev, sizeof devs[i].dev) == 0);
        CHECK(memcmp(again[i].ifs, devs[i].ifs, devs[i].dev.bNumInterfaces * sizeof devs[i].ifs[0]) == 0);
    }
    free(out);
}

static void fuzz_import(const uint8_t *p, size_t len)
{
    ifm_usbip_device d, d2;
    uint32_t st, st2;
    ifm_err err = { "" };
    ssize_t n = ifm_usbip_import_rep_unpack(p, len, &st, &d, &err);
    check_rc(n, len, &err);
    if (n <= 0)
        return;
    uint8_t out[IFM_USBIP_IMPORT_REP_SIZE];
    ssize_t m = ifm_usbip_import_rep_pack(st, &d, out, sizeof out);
    if (st == IFM_USBIP_ST_OK && d.busid[0] == '\0') {
        CHECK(m == -EINVAL);
        return;
    }
    CHECK(m == n);
    CHECK(ifm_usbip_import_rep_unpack(out, (size_t)m, &st2, &d2, &err) == m);
    CHECK(st2 == st);
    if (st == IFM_USBIP_ST_OK)
        CHECK(memcmp(&d, &d2, sizeof d) == 0);
}

static int shape_cb(void *arg, const ifm_usbip_hdr *h, ifm_usbip_shape *shape, ifm_err *err)
{
    *shape = *(const ifm_usbip_shape *)arg;
    return 0;
}

static void same_hdr(const ifm_usbip_hdr *a, const ifm_usbip_hdr *b)
{
    CHECK(a->command == b->command && a->seqnum == b->seqnum && a->devid == b->devid);
    CHECK(a->direction == b->direction && a->ep == b->ep);
    CHECK(memcmp(&a->u, &b->u, sizeof a->u) == 0);
}

static void fuzz_urbs(const uint8_t *p, size_t len, ifm_usbip_shape shape)
{
    size_t off = 0;
    while (off < len) {
        ifm_usbip_urb u;
        size_t need = 0;
        ifm_err err = { "" };
        ssize_t n = ifm_usbip_urb_unpack(p + off, len - off, shape_cb, &shape, &u, &need, &err);
        check_rc(n, len - off, &err);
        if (n == 0)
            CHECK(need > len - off);
        if (n <= 0)
            return;
        CHECK((size_t)n == ifm_usbip_urb_pdu_size(u.data_len, u.niso));
        ifm_usbip_iso_desc *iso = u.niso ? malloc(u.niso * sizeof *iso) : NULL;
        CHECK(!u.niso || iso);
        for (uint32_t i = 0; i < u.niso; i++)
            ifm_usbip_iso_get(&u, i, &iso[i]);
        uint8_t *out = malloc((size_t)n);
        CHECK(out);
        CHECK(ifm_usbip_urb_pack(&u.h, u.data, u.data_len, iso, u.niso, out, (size_t)n) == n);
        ifm_usbip_urb v;
        CHECK(ifm_usbip_urb_unpack(out, (size_t)n, shape_cb, &shape, &v, NULL, &err) == n);
        same_hdr(&u.h, &v.h);
        CHECK(v.data_len == u.data_len && v.niso == u.niso);
        CHECK(u.data_len == 0 || memcmp(v.data, u.data, u.data_len) == 0);
        CHECK(u.niso == 0 || memcmp(v.iso, u.iso, (size_t)u.niso * IFM_USBIP_ISO_DESC_SIZE) == 0);
        free(out);
        free(iso);
        off += (size_t)n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t sel = data[0];
    const uint8_t *p = data + 1;
    size_t len = size - 1;
    switch (sel & 3) {
    case 0:
        fuzz_op_req(p, len);
        break;
    case 1:
        fuzz_devlist(p, len);
        break;
    case 2:
        fuzz_import(p, len);
        break;
    default:
        fuzz_urbs(p, len, (ifm_usbip_shape){ .iso = (sel & 4) != 0, .in = (sel & 8) != 0 });
        break;
    }
    return 0;
}
