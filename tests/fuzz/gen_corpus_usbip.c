/* Writes the USB/IP seed corpus from real encodings:
 *     fuzz_gen_corpus_usbip tests/fuzz/corpus
 * creates corpus/usbip/<name>: a selector byte (see fuzz_usbip.c) and a byte
 * stream. Deterministic: rerunning rewrites the same files. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "icefarm/usbip.h"

static const char *g_dir;
static int g_count;

enum {
    SEL_OP_REQ = 0,
    SEL_DEVLIST = 1,
    SEL_IMPORT = 2,
    SEL_URB = 3,
    SEL_ISO = 4,
    SEL_IN = 8
};

static int write_seed(const char *name, int sel, const uint8_t *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/usbip", g_dir);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        perror(path);
        return -1;
    }
    snprintf(path, sizeof path, "%s/usbip/%s", g_dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        return -1;
    }
    fputc(sel, f);
    fwrite(p, 1, n, f);
    if (fclose(f) != 0) {
        perror(path);
        return -1;
    }
    g_count++;
    return 0;
}

static const ifm_usbip_device PICO = {
    .path = "icefarm/E6614C311B4B8F2C",
    .busid = "Zq3vK8pW1mXc7RtY2nLd",
    .busnum = 1,
    .devnum = 2,
    .speed = IFM_USBIP_SPEED_FULL,
    .idVendor = 0x1209,
    .idProduct = 0xb1c0,
    .bcdDevice = 0x0100,
    .bDeviceClass = 0xef,
    .bDeviceSubClass = 2,
    .bDeviceProtocol = 1,
    .bConfigurationValue = 1,
    .bNumConfigurations = 1,
    .bNumInterfaces = 5,
};

/* One URB PDU appended to a stream. */
static size_t urb(uint8_t *out, size_t cap, const ifm_usbip_hdr *h, const uint8_t *data, size_t n,
                  const ifm_usbip_iso_desc *iso, uint32_t niso)
{
    ssize_t m = ifm_usbip_urb_pack(h, data, n, iso, niso, out, cap);
    if (m < 0) {
        fprintf(stderr, "gen_corpus_usbip: cannot pack seqnum %u: %zd\n", h->seqnum, m);
        return 0;
    }
    return (size_t)m;
}

static int urb_seeds(void)
{
    uint8_t buf[4096];
    size_t n = 0;
    int rc = 0;
    /* an enumeration and a CDC session, as vhci sends it */
    ifm_usbip_hdr h = { .command = IFM_USBIP_CMD_SUBMIT, .seqnum = 1, .devid = 0x10002, .direction = 1, .ep = 0 };
    h.u.submit.transfer_flags = IFM_USBIP_URB_DIR_IN;
    h.u.submit.transfer_buffer_length = 64;
    ifm_usb_setup s = { 0x80, 6, 0x0100, 0, 64 };
    ifm_usb_setup_put(&s, h.u.submit.setup);
    n += urb(buf + n, sizeof buf - n, &h, NULL, 0, NULL, 0);
    ifm_usbip_hdr lc = { .command = IFM_USBIP_CMD_SUBMIT, .seqnum = 2, .devid = 0x10002 };
    lc.u.submit.transfer_buffer_length = 7;
    s = (ifm_usb_setup){ 0x21, 0x20, 0, 0, 7 };
    ifm_usb_setup_put(&s, lc.u.submit.setup);
    const uint8_t coding[7] = { 0x80, 0x25, 0, 0, 0, 0, 8 };
    n += urb(buf + n, sizeof buf - n, &lc, coding, 7, NULL, 0);
    ifm_usbip_hdr in = { .command = IFM_USBIP_CMD_SUBMIT, .seqnum = 3, .devid = 0x10002, .direction = 1, .ep = 2 };
    in.u.submit = (ifm_usbip_cmd_submit){ .transfer_flags = IFM_USBIP_URB_DIR_IN,
                                          .transfer_buffer_length = 128,
                                          .number_of_packets = -1 };
    n += urb(buf + n, sizeof buf - n, &in, NULL, 0, NULL, 0);
    ifm_usbip_hdr intr = in;
    intr.seqnum = 4;
    intr.ep = 1;
    intr.u.submit = (ifm_usbip_cmd_submit){
        .transfer_flags = IFM_USBIP_URB_DIR_IN, .transfer_buffer_length = 8, .start_frame = -1, .interval = 16
    };
    n += urb(buf + n, sizeof buf - n, &intr, NULL, 0, NULL, 0);
    ifm_usbip_hdr out = { .command = IFM_USBIP_CMD_SUBMIT, .seqnum = 5, .devid = 0x10002, .direction = 0, .ep = 2 };
    out.u.submit.transfer_buffer_length = 12;
    out.u.submit.transfer_flags = IFM_USBIP_URB_ZERO_PACKET;
    n += urb(buf + n, sizeof buf - n, &out, (const uint8_t *)"hello pico\r\n", 12, NULL, 0);
    ifm_usbip_hdr ul = { .command = IFM_USBIP_CMD_UNLINK, .seqnum = 6, .devid = 0x10002, .u.unlink_seqnum = 3 };
    n += urb(buf + n, sizeof buf - n, &ul, NULL, 0, NULL, 0);
    rc |= write_seed("cmd_session", SEL_URB, buf, n);

    /* the server's answers to an IN URB */
    n = 0;
    ifm_usbip_hdr r = { .command = IFM_USBIP_RET_SUBMIT, .seqnum = 3 };
    r.u.ret = (ifm_usbip_ret_submit){ .actual_length = 30, .number_of_packets = -1 };
    n += urb(buf + n, sizeof buf - n, &r, (const uint8_t *)"Waiting for bitstream transfer", 30, NULL, 0);
    ifm_usbip_hdr stall = { .command = IFM_USBIP_RET_SUBMIT, .seqnum = 9 };
    stall.u.ret.status = -32;
    n += urb(buf + n, sizeof buf - n, &stall, NULL, 0, NULL, 0);
    ifm_usbip_hdr ru = { .command = IFM_USBIP_RET_UNLINK, .seqnum = 6, .u.unlink_status = -104 };
    n += urb(buf + n, sizeof buf - n, &ru, NULL, 0, NULL, 0);
    rc |= write_seed("ret_in", SEL_URB | SEL_IN, buf, n);

    /* isochronous: a submit with 3 packets, and its reply */
    n = 0;
    ifm_usbip_hdr iso = { .command = IFM_USBIP_CMD_SUBMIT, .seqnum = 10, .devid = 0x10002, .direction = 0, .ep = 3 };
    iso.u.submit = (ifm_usbip_cmd_submit){ .transfer_flags = IFM_USBIP_URB_ISO_ASAP,
                                           .transfer_buffer_length = 12,
                                           .number_of_packets = 3 };
    const ifm_usbip_iso_desc d[3] = { { 0, 4, 0, 0 }, { 4, 4, 0, 0 }, { 8, 4, 0, 0 } };
    n += urb(buf + n, sizeof buf - n, &iso, (const uint8_t *)"abcdefghijkl", 12, d, 3);
    rc |= write_seed("iso_cmd", SEL_URB | SEL_ISO, buf, n);
    n = 0;
    ifm_usbip_hdr isor = { .command = IFM_USBIP_RET_SUBMIT, .seqnum = 10 };
    isor.u.ret = (ifm_usbip_ret_submit){ .actual_length = 5, .number_of_packets = 3, .error_count = 1 };
    const ifm_usbip_iso_desc rd[3] = { { 0, 4, 3, 0 }, { 4, 4, 0, -18 }, { 8, 4, 2, 0 } };
    n += urb(buf + n, sizeof buf - n, &isor, (const uint8_t *)"abcij", 5, rd, 3);
    rc |= write_seed("iso_ret_in", SEL_URB | SEL_ISO | SEL_IN, buf, n);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    g_dir = argv[1];
    mkdir(g_dir, 0755);
    uint8_t buf[2048];
    int rc = 0;

    rc |= write_seed("req_devlist", SEL_OP_REQ, buf, (size_t)ifm_usbip_devlist_req_pack(buf, sizeof buf));
    rc |= write_seed("req_import", SEL_OP_REQ, buf, (size_t)ifm_usbip_import_req_pack(PICO.busid, buf, sizeof buf));
    rc |=
        write_seed("rep_devlist_empty", SEL_DEVLIST, buf, (size_t)ifm_usbip_devlist_rep_pack(NULL, 0, buf, sizeof buf));
    ifm_usbip_devlist_entry e[2] = { { .dev = PICO }, { .dev = PICO } };
    const ifm_usbip_interface ifs[5] = { { 2, 2, 0 }, { 0x0a, 0, 0 }, { 2, 2, 0 }, { 0x0a, 0, 0 }, { 0xfe, 1, 2 } };
    memcpy(e[0].ifs, ifs, sizeof ifs);
    snprintf(e[1].dev.busid, sizeof e[1].dev.busid, "1-4");
    e[1].dev.bNumInterfaces = 0;
    e[1].dev.bConfigurationValue = 0;
    rc |= write_seed("rep_devlist_two", SEL_DEVLIST, buf, (size_t)ifm_usbip_devlist_rep_pack(e, 2, buf, sizeof buf));
    rc |= write_seed("rep_import_ok", SEL_IMPORT, buf,
                     (size_t)ifm_usbip_import_rep_pack(IFM_USBIP_ST_OK, &PICO, buf, sizeof buf));
    rc |= write_seed("rep_import_nodev", SEL_IMPORT, buf,
                     (size_t)ifm_usbip_import_rep_pack(IFM_USBIP_ST_NODEV, NULL, buf, sizeof buf));
    rc |= urb_seeds();
    if (rc)
        return 1;
    printf("wrote %d files under %s/usbip\n", g_count, g_dir);
    return 0;
}
