/* The USB/IP wire codec against golden vectors and every malformed-PDU case.
 *
 * Golden vectors:
 *   - the kernel's Documentation/usb/usbip_protocol.rst example (a HID device:
 *     CmdIntrIN, CmdIntrOUT, RetIntrOut, RetIntrIn);
 *   - an OP_REP_DEVLIST captured from usbipd-win (serial-usbipclient's
 *     tests/usbip_packets.json): two CDC devices, busids 9-2 and 9-1;
 *   - replies of the real Linux usbipd and PDUs of a vhci_hcd trace, both
 *     recorded against our server: SET_LINE_CODING 9600 8N1,
 *     the interrupt IN with start_frame -1, RET_UNLINK -ECONNRESET.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "icefarm/usbip.h"

/* hex (whitespace ignored) -> bytes; returns the length */
static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = 0;
    int hi = -1;
    for (const char *p = hex; *p; p++) {
        int v;
        if (*p >= '0' && *p <= '9')
            v = *p - '0';
        else if (*p >= 'a' && *p <= 'f')
            v = *p - 'a' + 10;
        else if (*p >= 'A' && *p <= 'F')
            v = *p - 'A' + 10;
        else
            continue;
        if (hi < 0) {
            hi = v;
        } else {
            assert_true(n < cap);
            out[n++] = (uint8_t)(hi << 4 | v);
            hi = -1;
        }
    }
    assert_int_equal(hi, -1);
    return n;
}

/* ---- the kernel document's example ---- */

static const char k_cmd_intr_in[] = "00000001 00000d05 0001000f 00000001 00000001 00000200 00000040 ffffffff "
                                    "00000000 00000004 00000000 00000000";
static const char k_cmd_intr_out[] =
    "00000001 00000d06 0001000f 00000000 00000001 00000000 00000040 ffffffff 00000000 00000004 00000000 00000000"
    "ffffffff860008a784ce5ae21237630000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000";
static const char k_ret_intr_out[] = "00000003 00000d06 00000000 00000000 00000000 00000000 00000040 ffffffff "
                                     "00000000 00000000 00000000 00000000";
static const char k_ret_intr_in[] =
    "00000003 00000d05 00000000 00000000 00000000 00000000 00000040 ffffffff 00000000 00000000 00000000 00000000"
    "ffffffff860011a784ce5ae2123763612891b102010000040000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000";

/* A shape callback: tests say what the receiver knows about the URB. */
typedef struct {
    ifm_usbip_shape shape;
    int calls;
    int fail; /* nonzero: reject with this */
} shape_ctx;

static int shape_cb(void *arg, const ifm_usbip_hdr *h, ifm_usbip_shape *shape, ifm_err *err)
{
    shape_ctx *c = arg;
    c->calls++;
    if (c->fail) {
        ifm_err_set(err, "no URB with seqnum %u", h->seqnum);
        return c->fail;
    }
    *shape = c->shape;
    return 0;
}

/* Decodes a whole PDU, checks every shorter prefix asks for more, re-encodes it
 * and compares the bytes. */
static void roundtrip(const uint8_t *pdu, size_t len, ifm_usbip_shape shape, ifm_usbip_urb *u)
{
    shape_ctx c = { .shape = shape };
    ifm_err err = { "" };
    for (size_t i = 0; i < len; i++) {
        size_t need = 0;
        assert_int_equal(ifm_usbip_urb_unpack(pdu, i, shape_cb, &c, u, &need, &err), 0);
        assert_true(need > i);
        assert_true(need <= len);
    }
    size_t need = 0;
    assert_int_equal(ifm_usbip_urb_unpack(pdu, len, shape_cb, &c, u, &need, &err), (ssize_t)len);
    assert_int_equal(need, len);
    uint8_t *again = malloc(len);
    assert_non_null(again);
    uint32_t niso = u->niso;
    ifm_usbip_iso_desc iso[8];
    assert_true(niso <= 8);
    for (uint32_t i = 0; i < niso; i++)
        ifm_usbip_iso_get(u, i, &iso[i]);
    assert_int_equal(ifm_usbip_urb_pack(&u->h, u->data, u->data_len, iso, niso, again, len), (ssize_t)len);
    assert_memory_equal(again, pdu, len);
    assert_int_equal(ifm_usbip_urb_pack(&u->h, u->data, u->data_len, iso, niso, again, len - 1), -ENOSPC);
    free(again);
}

static void test_kernel_doc_example(void **state)
{
    uint8_t buf[256];
    ifm_usbip_urb u;
    const ifm_usbip_shape out_ret = { false, false }, in_ret = { false, true };

    size_t n = unhex(k_cmd_intr_in, buf, sizeof buf);
    assert_int_equal(n, 48);
    roundtrip(buf, n, out_ret, &u);
    assert_int_equal(u.h.command, IFM_USBIP_CMD_SUBMIT);
    assert_int_equal(u.h.seqnum, 0xd05);
    assert_int_equal(u.h.devid, 0x1000f);
    assert_int_equal(u.h.direction, IFM_USBIP_DIR_IN);
    assert_int_equal(u.h.ep, 1);
    assert_int_equal(u.h.u.submit.transfer_flags, IFM_USBIP_URB_DIR_IN);
    assert_int_equal(u.h.u.submit.transfer_buffer_length, 64);
    assert_int_equal(u.h.u.submit.start_frame, -1);
    assert_int_equal(u.h.u.submit.number_of_packets, 0);
    assert_int_equal(u.h.u.submit.interval, 4);
    assert_int_equal(u.data_len, 0); /* IN: no data in the submit */
    assert_null(u.data);

    n = unhex(k_cmd_intr_out, buf, sizeof buf);
    assert_int_equal(n, 48 + 64);
    roundtrip(buf, n, out_ret, &u);
    assert_int_equal(u.h.seqnum, 0xd06);
    assert_int_equal(u.h.direction, IFM_USBIP_DIR_OUT);
    assert_int_equal(u.h.u.submit.transfer_flags, 0);
    assert_int_equal(u.data_len, 64);
    assert_ptr_equal(u.data, buf + 48);
    assert_int_equal(u.data[0], 0xff);
    assert_int_equal(u.data[4], 0x86);

    n = unhex(k_ret_intr_out, buf, sizeof buf);
    assert_int_equal(n, 48);
    roundtrip(buf, n, out_ret, &u);
    assert_int_equal(u.h.command, IFM_USBIP_RET_SUBMIT);
    assert_int_equal(u.h.seqnum, 0xd06);
    assert_int_equal(u.h.u.ret.status, 0);
    assert_int_equal(u.h.u.ret.actual_length, 64);
    assert_int_equal(u.h.u.ret.start_frame, -1);
    assert_int_equal(u.data_len, 0); /* OUT: the length says what was written, no bytes follow */

    n = unhex(k_ret_intr_in, buf, sizeof buf);
    assert_int_equal(n, 48 + 64);
    roundtrip(buf, n, in_ret, &u);
    assert_int_equal(u.h.seqnum, 0xd05);
    assert_int_equal(u.data_len, 64);
    assert_int_equal(u.data[5], 0x00);
    assert_int_equal(u.data[6], 0x11);
    /* the same bytes read as an OUT reply stop after the header */
    shape_ctx c = { .shape = out_ret };
    ifm_err err;
    assert_int_equal(ifm_usbip_urb_unpack(buf, n, shape_cb, &c, &u, NULL, &err), 48);
}

/* ---- usbipd-win's OP_REP_DEVLIST ---- */

/* The capture's fields, in order. The NUL padding of the 256-byte path field is
 * regenerated by win_devlist() (the stored capture's runs of zeros are mangled:
 * 259 and 257.5 bytes); every other byte is the capture's. */
static const char win_hdr[] = "011100050000000000000002";
static const char *const win_path[2] = { "USB\\VID_0525&PID_A4A7\\9&D4400D1&0&2", "USB\\VID_1A86&PID_CA88\\CT88INCH" };
static const char *const win_tail[2] = {
    "392d3200000000000000000000000000000000000000000000000000000000000000000900000002000000030525a4a70504020000020102"
    "02020100"
    "0a000000",
    "392d3100000000000000000000000000000000000000000000000000000000000000000900000001000000021a86ca880100020000010102"
    "02020100"
    "0a000000",
};

static size_t win_devlist(uint8_t *out, size_t cap)
{
    size_t n = unhex(win_hdr, out, cap);
    for (int i = 0; i < 2; i++) {
        assert_true(cap - n >= 256);
        memset(out + n, 0, 256);
        memcpy(out + n, win_path[i], strlen(win_path[i]));
        n += 256;
        n += unhex(win_tail[i], out + n, cap - n);
    }
    return n;
}

static void test_usbipd_win_devlist(void **state)
{
    uint8_t buf[1024];
    size_t n = win_devlist(buf, sizeof buf);
    assert_int_equal(n, 12 + 2 * (312 + 8));
    ifm_usbip_devlist_entry devs[2];
    uint32_t st = 99, ndev = 99;
    size_t need = 0;
    ifm_err err = { "" };
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ifm_usbip_devlist_rep_unpack(buf, i, &st, devs, 2, &ndev, &need, &err), 0);
        assert_true(need > i);
    }
    assert_int_equal(ifm_usbip_devlist_rep_unpack(buf, n, &st, devs, 2, &ndev, &need, &err), (ssize_t)n);
    assert_int_equal(need, n);
    assert_int_equal(st, 0);
    assert_int_equal(ndev, 2);
    assert_string_equal(devs[0].dev.path, "USB\\VID_0525&PID_A4A7\\9&D4400D1&0&2");
    assert_string_equal(devs[0].dev.busid, "9-2");
    assert_int_equal(devs[0].dev.busnum, 9);
    assert_int_equal(devs[0].dev.devnum, 2);
    assert_int_equal(devs[0].dev.speed, IFM_USBIP_SPEED_HIGH);
    assert_int_equal(devs[0].dev.idVendor, 0x0525);
    assert_int_equal(devs[0].dev.idProduct, 0xa4a7);
    assert_int_equal(devs[0].dev.bcdDevice, 0x0504);
    assert_int_equal(devs[0].dev.bDeviceClass, 2);
    assert_int_equal(devs[0].dev.bConfigurationValue, 2);
    assert_int_equal(devs[0].dev.bNumConfigurations, 1);
    assert_int_equal(devs[0].dev.bNumInterfaces, 2);
    assert_int_equal(devs[0].ifs[0].bInterfaceClass, 2);
    assert_int_equal(devs[0].ifs[0].bInterfaceSubClass, 2);
    assert_int_equal(devs[0].ifs[0].bInterfaceProtocol, 1);
    assert_int_equal(devs[0].ifs[1].bInterfaceClass, 0x0a);
    assert_int_equal(ifm_usbip_devid(&devs[0].dev), 0x90002);
    assert_string_equal(devs[1].dev.busid, "9-1");
    assert_int_equal(devs[1].dev.speed, IFM_USBIP_SPEED_FULL);
    assert_int_equal(devs[1].dev.idVendor, 0x1a86);
    assert_int_equal(devs[1].dev.idProduct, 0xca88);

    /* re-encoding gives the same bytes */
    uint8_t again[1024];
    assert_int_equal(ifm_usbip_devlist_rep_size(devs, 2), n);
    assert_int_equal(ifm_usbip_devlist_rep_pack(devs, 2, again, sizeof again), (ssize_t)n);
    assert_memory_equal(again, buf, n);
    assert_int_equal(ifm_usbip_devlist_rep_pack(devs, 2, again, n - 1), -ENOSPC);

    /* room for one record: both are validated and consumed, one is stored */
    ifm_usbip_devlist_entry one;
    assert_int_equal(ifm_usbip_devlist_rep_unpack(buf, n, &st, &one, 1, &ndev, NULL, &err), (ssize_t)n);
    assert_int_equal(ndev, 2);
    assert_string_equal(one.dev.busid, "9-2");
    assert_int_equal(ifm_usbip_devlist_rep_unpack(buf, n, &st, NULL, 0, &ndev, NULL, &err), (ssize_t)n);

    /* an IMPORT reply carries the same record at offset 8 */
    uint8_t rep[IFM_USBIP_IMPORT_REP_SIZE];
    assert_int_equal(ifm_usbip_import_rep_pack(IFM_USBIP_ST_OK, &devs[0].dev, rep, sizeof rep), 320);
    assert_memory_equal(rep + 8, buf + 12, 312);
    assert_int_equal(rep[3], IFM_USBIP_OP_REP_IMPORT);
    ifm_usbip_device d;
    for (size_t i = 0; i < sizeof rep; i++)
        assert_int_equal(ifm_usbip_import_rep_unpack(rep, i, &st, &d, &err), 0);
    assert_int_equal(ifm_usbip_import_rep_unpack(rep, sizeof rep, &st, &d, &err), 320);
    assert_int_equal(st, IFM_USBIP_ST_OK);
    assert_memory_equal(&d, &devs[0].dev, sizeof d);
}

/* ---- the Linux usbipd and vhci traces ---- */

static void test_usbipd_replies(void **state)
{
    uint8_t buf[64], out[64];
    ifm_err err = { "" };
    uint32_t st, ndev;
    /* DEVLIST -> 0 devices */
    size_t n = unhex("0111 0005 00000000 00000000", buf, sizeof buf);
    assert_int_equal(ifm_usbip_devlist_rep_unpack(buf, n, &st, NULL, 0, &ndev, NULL, &err), 12);
    assert_int_equal(st, 0);
    assert_int_equal(ndev, 0);
    assert_int_equal(ifm_usbip_devlist_rep_pack(NULL, 0, out, sizeof out), 12);
    assert_memory_equal(out, buf, 12);
    /* IMPORT of an unknown busid -> ST_NODEV, header only */
    n = unhex("0111 0003 00000004", buf, sizeof buf);
    ifm_usbip_device d;
    assert_int_equal(ifm_usbip_import_rep_unpack(buf, n, &st, &d, &err), 8);
    assert_int_equal(st, IFM_USBIP_ST_NODEV);
    assert_string_equal(ifm_usbip_status_str(st), "Device not found");
    assert_int_equal(ifm_usbip_import_rep_pack(IFM_USBIP_ST_NODEV, NULL, out, sizeof out), 8);
    assert_memory_equal(out, buf, 8);
    /* a DEVLIST reply with an error status is the header alone */
    n = unhex("0111 0005 00000001", buf, sizeof buf);
    assert_int_equal(ifm_usbip_devlist_rep_unpack(buf, n, &st, NULL, 0, &ndev, NULL, &err), 8);
    assert_int_equal(st, IFM_USBIP_ST_NA);
    assert_int_equal(ndev, 0);
}

static void test_requests(void **state)
{
    uint8_t buf[64];
    ifm_err err = { "" };
    ifm_usbip_op_req req;
    assert_int_equal(ifm_usbip_devlist_req_pack(buf, sizeof buf), 8);
    uint8_t want[64];
    size_t n = unhex("0111 8005 00000000", want, sizeof want);
    assert_memory_equal(buf, want, n);
    for (size_t i = 0; i < 8; i++)
        assert_int_equal(ifm_usbip_op_req_unpack(buf, i, &req, &err), 0);
    assert_int_equal(ifm_usbip_op_req_unpack(buf, 8, &req, &err), 8);
    assert_int_equal(req.code, IFM_USBIP_OP_REQ_DEVLIST);

    /* IMPORT "1-4", as the Linux tool sends it */
    n = unhex("0111 8003 00000000 312d3400000000000000000000000000 00000000000000000000000000000000", want,
              sizeof want);
    assert_int_equal(n, 40);
    assert_int_equal(ifm_usbip_import_req_pack("1-4", buf, sizeof buf), 40);
    assert_memory_equal(buf, want, 40);
    for (size_t i = 0; i < 40; i++)
        assert_int_equal(ifm_usbip_op_req_unpack(buf, i, &req, &err), 0);
    assert_int_equal(ifm_usbip_op_req_unpack(buf, 40, &req, &err), 40);
    assert_int_equal(req.code, IFM_USBIP_OP_REQ_IMPORT);
    assert_string_equal(req.busid, "1-4");
    /* a nonzero status in a request is ignored, as usbipd does */
    buf[7] = 1;
    assert_int_equal(ifm_usbip_op_req_unpack(buf, 40, &req, &err), 40);

    /* the longest busid the tools take is 31 characters */
    char id31[32];
    memset(id31, 'A', 31);
    id31[31] = '\0';
    assert_int_equal(ifm_usbip_import_req_pack(id31, buf, sizeof buf), 40);
    assert_int_equal(ifm_usbip_op_req_unpack(buf, 40, &req, &err), 40);
    assert_string_equal(req.busid, id31);
    char id32[33];
    memset(id32, 'A', 32);
    id32[32] = '\0';
    assert_int_equal(ifm_usbip_import_req_pack(id32, buf, sizeof buf), -EINVAL);
    assert_int_equal(ifm_usbip_import_req_pack("", buf, sizeof buf), -EINVAL);
    assert_int_equal(ifm_usbip_import_req_pack("1-1", buf, 39), -ENOSPC);
    assert_int_equal(ifm_usbip_devlist_req_pack(buf, 7), -ENOSPC);
}

static void test_recorded_vhci(void **state)
{
    uint8_t buf[128];
    ifm_usbip_urb u;
    const ifm_usbip_shape plain = { false, false };
    /* cdc_acm's SET_LINE_CODING 9600 8N1 on ep 0 (from the vhci trace) */
    size_t n = unhex("00000001 00000010 00010002 00000000 00000000 00000000 00000007 00000000 "
                     "00000000 00000000 2120000000000700 80250000000008",
                     buf, sizeof buf);
    assert_int_equal(n, 55);
    roundtrip(buf, n, plain, &u);
    ifm_usb_setup s;
    ifm_usb_setup_get(u.h.u.submit.setup, &s);
    assert_int_equal(s.bmRequestType, 0x21);
    assert_int_equal(s.bRequest, 0x20);
    assert_int_equal(s.wValue, 0);
    assert_int_equal(s.wIndex, 0);
    assert_int_equal(s.wLength, 7);
    uint8_t raw[8];
    ifm_usb_setup_put(&s, raw);
    assert_memory_equal(raw, u.h.u.submit.setup, 8);
    assert_int_equal(u.data_len, 7);
    assert_int_equal(u.data[0], 0x80);
    assert_int_equal(u.data[1], 0x25);

    /* the interrupt IN of cdc_acm: 8 bytes, interval 16, start_frame -1 */
    n = unhex("00000001 00000011 00010002 00000001 00000001 00000200 00000008 ffffffff "
              "00000000 00000010 0000000000000000",
              buf, sizeof buf);
    roundtrip(buf, n, plain, &u);
    assert_int_equal(u.h.u.submit.start_frame, -1);
    assert_int_equal(u.h.u.submit.interval, 16);

    /* a bulk IN with the kernel document's 0xffffffff: not ISO, no descriptors */
    n = unhex("00000001 00000012 00010002 00000001 00000002 00000200 00000080 00000000 "
              "ffffffff 00000000 0000000000000000",
              buf, sizeof buf);
    roundtrip(buf, n, plain, &u);
    assert_int_equal(u.h.u.submit.number_of_packets, -1);
    assert_int_equal(u.niso, 0);

    /* the stub's RET_SUBMIT echoing -1 back, 13 bytes of IN data */
    n = unhex("00000003 00000012 00000000 00000000 00000000 00000000 0000000d 00000000 "
              "ffffffff 00000000 0000000000000000 68656c6c6f2d6761646765740a",
              buf, sizeof buf);
    roundtrip(buf, n, (ifm_usbip_shape){ false, true }, &u);
    assert_int_equal(u.data_len, 13);
    assert_memory_equal(u.data, "hello-gadget\n", 13);

    /* the UNLINK storm of a tty close: CMD_UNLINK and RET_UNLINK -ECONNRESET */
    n = unhex("00000002 00000020 00010002 00000000 00000000 00000012 00000000000000000000000000000000"
              "0000000000000000",
              buf, sizeof buf);
    roundtrip(buf, n, plain, &u);
    assert_int_equal(u.h.command, IFM_USBIP_CMD_UNLINK);
    assert_int_equal(u.h.u.unlink_seqnum, 0x12);
    n = unhex("00000004 00000020 00000000 00000000 00000000 ffffff98 00000000000000000000000000000000"
              "0000000000000000",
              buf, sizeof buf);
    roundtrip(buf, n, plain, &u);
    assert_int_equal(u.h.command, IFM_USBIP_RET_UNLINK);
    assert_int_equal(u.h.u.unlink_status, -ECONNRESET);
}

/* ---- isochronous URBs ---- */

static void test_iso(void **state)
{
    const ifm_usbip_shape iso_in = { true, true }, iso_cmd = { true, false };
    uint8_t buf[256];
    ifm_usbip_urb u;
    ifm_err err = { "" };
    /* ISO OUT submit: 12 bytes in 3 packets of 4 */
    ifm_usbip_hdr h = { .command = IFM_USBIP_CMD_SUBMIT, .seqnum = 7, .devid = 0x10002, .direction = 0, .ep = 3 };
    h.u.submit = (ifm_usbip_cmd_submit){
        .transfer_flags = IFM_USBIP_URB_ISO_ASAP, .transfer_buffer_length = 12, .number_of_packets = 3, .interval = 1
    };
    ifm_usbip_iso_desc d[3] = { { 0, 4, 0, 0 }, { 4, 4, 0, 0 }, { 8, 4, 0, 0 } };
    const uint8_t data[12] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 };
    ssize_t n = ifm_usbip_urb_pack(&h, data, 12, d, 3, buf, sizeof buf);
    assert_int_equal(n, 48 + 12 + 48);
    roundtrip(buf, (size_t)n, iso_cmd, &u);
    assert_int_equal(u.niso, 3);
    ifm_usbip_iso_desc got;
    ifm_usbip_iso_get(&u, 2, &got);
    assert_int_equal(got.offset, 8);
    assert_int_equal(got.length, 4);
    /* a packet past the end of the buffer */
    d[2].length = 5;
    n = ifm_usbip_urb_pack(&h, data, 12, d, 3, buf, sizeof buf);
    shape_ctx c = { .shape = iso_cmd };
    assert_int_equal(ifm_usbip_urb_unpack(buf, (size_t)n, shape_cb, &c, &u, NULL, &err), -EPROTO);
    assert_non_null(strstr(err.msg, "ISO packet 2"));
    /* the same submit on a non-ISO endpoint: no descriptors expected */
    c.shape = (ifm_usbip_shape){ false, false };
    assert_int_equal(ifm_usbip_urb_unpack(buf, (size_t)n, shape_cb, &c, &u, NULL, &err), 48 + 12);

    /* ISO IN reply: packets' data back to back (3 + 0 + 2 bytes), then descriptors */
    ifm_usbip_hdr r = { .command = IFM_USBIP_RET_SUBMIT, .seqnum = 8 };
    r.u.ret = (ifm_usbip_ret_submit){ .status = 0, .actual_length = 5, .number_of_packets = 3, .error_count = 1 };
    ifm_usbip_iso_desc rd[3] = { { 0, 4, 3, 0 }, { 4, 4, 0, -EXDEV }, { 8, 4, 2, 0 } };
    n = ifm_usbip_urb_pack(&r, data, 5, rd, 3, buf, sizeof buf);
    assert_int_equal(n, 48 + 5 + 48);
    roundtrip(buf, (size_t)n, iso_in, &u);
    ifm_usbip_iso_get(&u, 1, &got);
    assert_int_equal(got.status, -EXDEV);
    /* the sum of actual lengths must be actual_length */
    rd[2].actual_length = 1;
    n = ifm_usbip_urb_pack(&r, data, 5, rd, 3, buf, sizeof buf);
    c.shape = iso_in;
    assert_int_equal(ifm_usbip_urb_unpack(buf, (size_t)n, shape_cb, &c, &u, NULL, &err), -EPROTO);
    /* actual beyond length */
    rd[2] = (ifm_usbip_iso_desc){ 8, 1, 2, 0 };
    n = ifm_usbip_urb_pack(&r, data, 5, rd, 3, buf, sizeof buf);
    assert_int_equal(ifm_usbip_urb_unpack(buf, (size_t)n, shape_cb, &c, &u, NULL, &err), -EPROTO);
    assert_non_null(strstr(err.msg, "exceeds its length"));

    /* number_of_packets -1 or too many on an ISO endpoint */
    h.u.submit.number_of_packets = -1;
    n = ifm_usbip_urb_pack(&h, data, 12, NULL, 0, buf, sizeof buf);
    c.shape = iso_cmd;
    assert_int_equal(ifm_usbip_urb_unpack(buf, (size_t)n, shape_cb, &c, &u, NULL, &err), -EPROTO);
    h.u.submit.number_of_packets = (int32_t)IFM_USBIP_MAX_ISO_PACKETS + 1;
    n = ifm_usbip_urb_pack(&h, data, 12, NULL, 0, buf, sizeof buf);
    assert_int_equal(ifm_usbip_urb_unpack(buf, (size_t)n, shape_cb, &c, &u, NULL, &err), -EMSGSIZE);
}

/* ---- malformed PDUs: each rejected with a reason ---- */

static void expect_hdr_error(const char *hex, ssize_t rc, const char *words)
{
    uint8_t buf[64];
    size_t n = unhex(hex, buf, sizeof buf);
    assert_int_equal(n, 48);
    ifm_usbip_hdr h;
    ifm_err err = { "" };
    assert_int_equal(ifm_usbip_hdr_unpack(buf, n, &h, &err), rc);
    if (!strstr(err.msg, words))
        fail_msg("reason \"%s\" lacks \"%s\"", err.msg, words);
}

static void test_malformed_urb(void **state)
{
    expect_hdr_error("00000009 00000001 00010002 00000000 00000000 00000000 00000000 00000000 00000000 00000000 "
                     "0000000000000000",
                     -EPROTO, "unknown command");
    expect_hdr_error("00000000 00000001 00010002 00000000 00000000 00000000 00000000 00000000 00000000 00000000 "
                     "0000000000000000",
                     -EPROTO, "unknown command");
    expect_hdr_error("00000001 00000001 00010002 00000002 00000000 00000000 00000000 00000000 00000000 00000000 "
                     "0000000000000000",
                     -EPROTO, "direction 2");
    expect_hdr_error("00000001 00000001 00010002 00000001 00000010 00000000 00000000 00000000 00000000 00000000 "
                     "0000000000000000",
                     -EPROTO, "ep 16");
    expect_hdr_error("00000001 00000001 00010002 00000000 00000002 00000000 ffffffff 00000000 00000000 00000000 "
                     "0000000000000000",
                     -EPROTO, "negative");
    expect_hdr_error("00000001 00000001 00010002 00000000 00000002 00000000 00100001 00000000 00000000 00000000 "
                     "0000000000000000",
                     -EMSGSIZE, "exceeds");
    expect_hdr_error("00000003 00000001 00000000 00000000 00000000 00000000 80000000 00000000 00000000 00000000 "
                     "0000000000000000",
                     -EPROTO, "actual_length");
    expect_hdr_error("00000003 00000001 00000000 00000000 00000000 00000000 7fffffff 00000000 00000000 00000000 "
                     "0000000000000000",
                     -EMSGSIZE, "actual_length");

    /* the biggest transfer is accepted; its PDU needs all its bytes */
    uint8_t buf[64];
    size_t n = unhex("00000001 00000001 00010002 00000000 00000002 00000000 00100000 00000000 00000000 00000000 "
                     "0000000000000000",
                     buf, sizeof buf);
    ifm_usbip_urb u;
    size_t need = 0;
    ifm_err err = { "" };
    assert_int_equal(ifm_usbip_urb_unpack(buf, n, NULL, NULL, &u, &need, &err), 0);
    assert_int_equal(need, 48 + IFM_USBIP_MAX_TRANSFER);

    /* the receiver's shape callback can refuse a PDU */
    shape_ctx c = { .fail = -ENOENT };
    uint8_t big[128];
    n = unhex(k_ret_intr_in, big, sizeof big);
    memcpy(buf, big, 48);
    assert_int_equal(ifm_usbip_urb_unpack(buf, 48, shape_cb, &c, &u, NULL, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "seqnum 3333"));
    c.fail = 5; /* a positive return is still a refusal */
    assert_int_equal(ifm_usbip_urb_unpack(buf, 48, shape_cb, &c, &u, NULL, &err), -EPROTO);
}

static void expect_req_error(const char *hex, const char *words)
{
    uint8_t buf[64];
    size_t n = unhex(hex, buf, sizeof buf);
    ifm_usbip_op_req req;
    ifm_err err = { "" };
    assert_int_equal(ifm_usbip_op_req_unpack(buf, n, &req, &err), -EPROTO);
    if (!strstr(err.msg, words))
        fail_msg("reason \"%s\" lacks \"%s\"", err.msg, words);
}

static void test_malformed_op(void **state)
{
    expect_req_error("0106 8005 00000000", "version 0x0106");
    expect_req_error("0111 8009 00000000", "unknown op code 0x8009");
    expect_req_error("0111 0005 00000000", "unknown op code 0x0005"); /* a reply sent as a request */
    expect_req_error("0111 8003 00000000 41414141414141414141414141414141 41414141414141414141414141414141",
                     "busid: no NUL");

    uint8_t buf[1024];
    ifm_err err = { "" };
    uint32_t st, ndev;
    ifm_usbip_device d;
    /* a reply header that is a request, or the wrong reply */
    size_t n = unhex("0111 8003 00000000", buf, sizeof buf);
    assert_int_equal(ifm_usbip_import_rep_unpack(buf, n, &st, &d, &err), -EPROTO);
    assert_non_null(strstr(err.msg, "is a request"));
    n = unhex("0111 0005 00000000", buf, sizeof buf);
    assert_int_equal(ifm_usbip_import_rep_unpack(buf, n, &st, &d, &err), -EPROTO);
    assert_non_null(strstr(err.msg, "expected 0x0003"));
    n = unhex("0112 0003 00000000", buf, sizeof buf);
    assert_int_equal(ifm_usbip_import_rep_unpack(buf, n, &st, &d, &err), -EPROTO);
    /* too many devices */
    n = unhex("0111 0005 00000000 00000401", buf, sizeof buf);
    assert_int_equal(ifm_usbip_devlist_rep_unpack(buf, n, &st, NULL, 0, &ndev, NULL, &err), -EMSGSIZE);
    /* a record with 33 interfaces, or a path with no NUL */
    n = win_devlist(buf, sizeof buf);
    buf[12 + 0x137] = 33;
    assert_int_equal(ifm_usbip_devlist_rep_unpack(buf, n, &st, NULL, 0, &ndev, NULL, &err), -EPROTO);
    assert_non_null(strstr(err.msg, "bNumInterfaces 33"));
    n = win_devlist(buf, sizeof buf);
    memset(buf + 12, 'x', 256);
    assert_int_equal(ifm_usbip_devlist_rep_unpack(buf, n, &st, NULL, 0, &ndev, NULL, &err), -EPROTO);
    assert_non_null(strstr(err.msg, "path"));
    /* an import reply with a busid of 32 characters */
    n = win_devlist(buf, sizeof buf);
    memset(buf + 12 + 0x100, 'b', 32);
    memmove(buf + 8, buf + 12, 312);
    buf[3] = IFM_USBIP_OP_REP_IMPORT;
    assert_int_equal(ifm_usbip_import_rep_unpack(buf, 320, &st, &d, &err), -EPROTO);
    assert_non_null(strstr(err.msg, "busid"));
}

static void test_encoder_errors(void **state)
{
    uint8_t buf[512];
    ifm_usbip_device d = { .busid = "1-1", .busnum = 1, .devnum = 2 };
    assert_int_equal(ifm_usbip_device_pack(&d, buf, 311), -ENOSPC);
    assert_int_equal(ifm_usbip_device_pack(&d, buf, 312), 312);
    d.busid[0] = '\0';
    assert_int_equal(ifm_usbip_device_pack(&d, buf, sizeof buf), -EINVAL);
    assert_int_equal(ifm_usbip_import_rep_pack(IFM_USBIP_ST_OK, NULL, buf, sizeof buf), -EINVAL);
    assert_int_equal(ifm_usbip_op_rep_pack(IFM_USBIP_OP_REQ_IMPORT, 0, buf, sizeof buf), -EINVAL);
    ifm_usbip_devlist_entry e = { .dev = { .busid = "1-1", .bNumInterfaces = 33 } };
    assert_int_equal(ifm_usbip_devlist_rep_pack(&e, 1, buf, sizeof buf), -EINVAL);

    ifm_usbip_hdr h = { .command = IFM_USBIP_CMD_SUBMIT, .direction = IFM_USBIP_DIR_OUT, .ep = 2 };
    h.u.submit.transfer_buffer_length = 4;
    const uint8_t data[4] = { 0 };
    assert_int_equal(ifm_usbip_urb_pack(&h, data, 3, NULL, 0, buf, sizeof buf), -EINVAL); /* length mismatch */
    assert_int_equal(ifm_usbip_urb_pack(&h, NULL, 4, NULL, 0, buf, sizeof buf), -EINVAL);
    assert_int_equal(ifm_usbip_urb_pack(&h, data, 4, NULL, 0, buf, sizeof buf), 52);
    h.direction = IFM_USBIP_DIR_IN;
    assert_int_equal(ifm_usbip_urb_pack(&h, data, 4, NULL, 0, buf, sizeof buf), -EINVAL); /* IN carries no data */
    h.ep = 16;
    assert_int_equal(ifm_usbip_urb_pack(&h, NULL, 0, NULL, 0, buf, sizeof buf), -EINVAL);
    ifm_usbip_hdr r = { .command = IFM_USBIP_RET_UNLINK, .seqnum = 1 };
    ifm_usbip_iso_desc iso = { 0 };
    assert_int_equal(ifm_usbip_urb_pack(&r, NULL, 0, &iso, 1, buf, sizeof buf), -EINVAL);
    assert_int_equal(ifm_usbip_urb_pack(&r, NULL, 0, NULL, 0, buf, sizeof buf), 48);
    r.command = 77;
    assert_int_equal(ifm_usbip_urb_pack(&r, NULL, 0, NULL, 0, buf, sizeof buf), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernel_doc_example), cmocka_unit_test(test_usbipd_win_devlist),
        cmocka_unit_test(test_usbipd_replies),     cmocka_unit_test(test_requests),
        cmocka_unit_test(test_recorded_vhci),      cmocka_unit_test(test_iso),
        cmocka_unit_test(test_malformed_urb),      cmocka_unit_test(test_malformed_op),
        cmocka_unit_test(test_encoder_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
