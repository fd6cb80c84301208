/* The simulated bootrom's PICOBOOT interface at the URB level (sim_picoboot.c),
 * driven the way picotool and the worker's libusb flasher drive a real RP2350:
 * the 32-byte command on bulk OUT 0x03, the data phase, the acknowledgement in
 * the other direction, GET_CMD_STATUS and INTERFACE_RESET on endpoint 0.
 * Flashing the pico-ice firmware the sim uses and rebooting brings the board
 * back as 1209:b1c0; refused commands stall with the bootrom's status code. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "icefarm/usbip.h"
#include "picoboot.h"
#include "sim_driver.h"
#include "uf2.h"

#define EP_OUT 0x03
#define EP_IN 0x84
#define IFACE 1
#define BASE PICOBOOT_FLASH_BASE

typedef struct {
    int done;
    int status;
    uint32_t actual;
    uint8_t data[8192];
} rec;

static void on_done(wrk_urb *u)
{
    rec *r = u->arg;
    r->done++;
    r->status = u->status;
    r->actual = u->actual;
    if (u->actual && u->actual <= sizeof r->data && ((u->ep & 0x80) || u->type == WRK_EP_CONTROL))
        memcpy(r->data, u->buf, u->actual);
}

static const wrk_transport_ops *ops(drv *d)
{
    return d->t->ops;
}

/* One URB, submitted and waited for. Returns its status. */
static int xfer(drv_board *b, uint8_t type, uint8_t ep, const ifm_usb_setup *s, const void *out, uint32_t len, rec *r)
{
    wrk_urb *u = ops(b->d)->urb_alloc(b->d->t, b->dev, len);
    assert_non_null(u);
    memset(r, 0, sizeof *r);
    u->done = on_done;
    u->arg = r;
    u->type = type;
    u->ep = ep;
    u->len = len;
    if (s)
        ifm_usb_setup_put(s, u->setup);
    if (out && len)
        memcpy(u->buf, out, len);
    assert_int_equal(ops(b->d)->urb_submit(b->d->t, u), 0);
    RUN_UNTIL(b->d, r->done == 1);
    ops(b->d)->urb_free(b->d->t, u);
    return r->status;
}

static int bulk(drv_board *b, uint8_t ep, const void *out, uint32_t len, rec *r)
{
    return xfer(b, WRK_EP_BULK, ep, NULL, out, len, r);
}

static picoboot_status cmd_status(drv_board *b)
{
    rec r;
    ifm_usb_setup s = { 0xc1, PICOBOOT_IF_CMD_STATUS, 0, IFACE, PICOBOOT_STATUS_SIZE };
    assert_int_equal(xfer(b, WRK_EP_CONTROL, 0x80, &s, NULL, PICOBOOT_STATUS_SIZE, &r), 0);
    assert_int_equal(r.actual, PICOBOOT_STATUS_SIZE);
    picoboot_status st;
    char why[96];
    assert_int_equal(picoboot_status_unpack(r.data, r.actual, &st, why, sizeof why), 0);
    return st;
}

static void if_reset(drv_board *b)
{
    rec r;
    ifm_usb_setup s = { 0x41, PICOBOOT_IF_RESET, 0, IFACE, 0 };
    assert_int_equal(xfer(b, WRK_EP_CONTROL, 0x00, &s, NULL, 0, &r), 0);
}

static uint32_t g_token = 100;

typedef enum {
    PH_CMD,
    PH_DATA,
    PH_ACK,
    PH_NONE
} phase;

/* One PICOBOOT command as picotool runs it. `data` is what WRITE sends or where
 * READ's bytes go. Returns 0, or the status of the phase that failed (set in
 * *failed). `zlp_ack`: acknowledge an IN command with a ZLP instead of 1 byte. */
static int pb_cmd_ex(drv_board *b, uint8_t id, const void *args, uint8_t nargs, uint32_t xfer_len, void *data,
                     phase *failed, bool zlp_ack)
{
    picoboot_cmd c;
    uint8_t pkt[PICOBOOT_CMD_SIZE];
    picoboot_cmd_make(&c, ++g_token, id, args, nargs, xfer_len);
    picoboot_cmd_pack(&c, pkt);
    rec r;
    *failed = PH_NONE;
    int rc = bulk(b, EP_OUT, pkt, sizeof pkt, &r);
    if (rc) {
        *failed = PH_CMD;
        return rc;
    }
    assert_int_equal(r.actual, PICOBOOT_CMD_SIZE);
    if (xfer_len) {
        rc = (id & 0x80) ? bulk(b, EP_IN, NULL, xfer_len, &r) : bulk(b, EP_OUT, data, xfer_len, &r);
        if (rc) {
            *failed = PH_DATA;
            return rc;
        }
        assert_int_equal(r.actual, xfer_len);
        if (id & 0x80)
            memcpy(data, r.data, xfer_len);
    }
    static const uint8_t spoon = 0;
    rc = (id & 0x80) ? bulk(b, EP_OUT, &spoon, zlp_ack ? 0 : 1, &r) : bulk(b, EP_IN, NULL, 64, &r);
    if (rc) {
        *failed = PH_ACK;
        return rc;
    }
    if (!(id & 0x80))
        assert_int_equal(r.actual, 0); /* the acknowledgement is an empty packet */
    return 0;
}

static int pb_cmd(drv_board *b, uint8_t id, const void *args, uint8_t nargs, uint32_t xfer_len, void *data)
{
    phase ph;
    return pb_cmd_ex(b, id, args, nargs, xfer_len, data, &ph, false);
}

static int range(drv_board *b, uint8_t id, uint32_t addr, uint32_t size, void *data, phase *failed)
{
    uint8_t a[8];
    picoboot_put32(a, addr);
    picoboot_put32(a + 4, size);
    return pb_cmd_ex(b, id, a, 8, id == PC_FLASH_ERASE ? 0 : size, data, failed, false);
}

static void ok_range(drv_board *b, uint8_t id, uint32_t addr, uint32_t size, void *data)
{
    phase ph;
    assert_int_equal(range(b, id, addr, size, data, &ph), 0);
    picoboot_status st = cmd_status(b);
    assert_int_equal(st.code, PICOBOOT_OK);
    assert_int_equal(st.token, g_token);
    assert_int_equal(st.cmd_id, id);
    assert_false(st.in_progress);
}

static int reboot2(drv_board *b, uint32_t flags, uint32_t delay)
{
    uint8_t a[16] = { 0 };
    picoboot_put32(a, flags);
    picoboot_put32(a + 4, delay);
    return pb_cmd(b, PC_REBOOT2, a, sizeof a, 0, NULL);
}

/* A refused command: the phase that meets the stall, then the status. Both
 * halts are cleared with INTERFACE_RESET or CLEAR_FEATURE, as picotool does. */
static void expect_refused(drv_board *b, int rc, phase ph, phase want_ph, uint32_t want_code, uint8_t want_id)
{
    assert_int_equal(rc, -EPIPE);
    assert_int_equal(ph, want_ph);
    picoboot_status st = cmd_status(b);
    assert_int_equal(st.code, want_code);
    assert_int_equal(st.token, g_token);
    assert_int_equal(st.cmd_id, want_id);
    if_reset(b);
    assert_int_equal(cmd_status(b).code, PICOBOOT_OK); /* the reset clears the result */
}

static drv *setup_bootsel(sim_fw_kind fw)
{
    sim_options o;
    drv_test_options(&o, 1);
    o.initial_fw = fw;
    drv *d = drv_new(&o);
    drv_board *b = drv_wait_boards(d, 1);
    /* the 1200-baud touch at the URB level, as a USB/IP user does it */
    int arrivals = b->arrivals;
    const uint8_t lc1200[7] = { 0xb0, 0x04, 0, 0, 0, 0, 8 };
    rec r;
    ifm_usb_setup s = { 0x21, 0x20, 0, 0, 7 };
    assert_int_equal(xfer(b, WRK_EP_CONTROL, 0x00, &s, lc1200, 7, &r), 0);
    RUN_UNTIL(d, b->arrivals == arrivals + 1);
    assert_int_equal(b->info.vid, WRK_VID_RPI);
    assert_int_equal(b->info.pid, WRK_PID_BOOTSEL);
    assert_int_equal(ops(d)->usb_claim(d->t, b->dev, IFACE), 0);
    return d;
}

static uf2_image image_of(sim_fw_kind kind)
{
    size_t len;
    uint8_t *uf2 = sim_fw_build_uf2(kind, &len);
    assert_non_null(uf2);
    uf2_image img;
    char why[UF2_REASON_MAX];
    assert_int_equal(uf2_parse(uf2, len, UF2_TARGET_RP2350, &img, why), 0);
    free(uf2);
    return img;
}

/* picotool load -v -x: erase, write the pages, read back and compare, reboot. */
static void test_flash_pico_ice_firmware(void **state)
{
    drv *d = setup_bootsel(SIM_FW_DEFAULT);
    drv_board *b = &d->b[0];
    uf2_image img = image_of(SIM_FW_PULSECOUNT);
    assert_int_equal(img.base, BASE);
    uint8_t excl = 1;
    assert_int_equal(pb_cmd(b, PC_EXCLUSIVE_ACCESS, &excl, 1, 0, NULL), 0);
    assert_int_equal(pb_cmd(b, PC_EXIT_XIP, NULL, 0, 0, NULL), 0);
    uint32_t end = (uint32_t)((img.len + PICOBOOT_FLASH_PAGE - 1) / PICOBOOT_FLASH_PAGE * PICOBOOT_FLASH_PAGE);
    uint32_t erase = (end + PICOBOOT_FLASH_SECTOR - 1) / PICOBOOT_FLASH_SECTOR * PICOBOOT_FLASH_SECTOR;
    ok_range(b, PC_FLASH_ERASE, BASE, erase, NULL);
    /* the first sector page by page (the worker's way), the rest 4 KiB at once */
    uint8_t page[8192];
    for (uint32_t off = 0, n; off < end; off += n) {
        n = off < PICOBOOT_FLASH_SECTOR ? PICOBOOT_FLASH_PAGE : end - off < 4096 ? end - off : 4096;
        memset(page, 0xff, n);
        memcpy(page, img.data + off, off + n <= img.len ? n : img.len - off);
        ok_range(b, PC_WRITE, BASE + off, n, page);
    }
    assert_int_equal(pb_cmd(b, PC_ENTER_CMD_XIP, NULL, 0, 0, NULL), 0);
    for (uint32_t off = 0; off < img.len; off += 4096) {
        uint32_t n = img.len - off < 4096 ? (uint32_t)(img.len - off) : 4096;
        memset(page, 0, sizeof page);
        ok_range(b, PC_READ, BASE + off, n, page);
        assert_memory_equal(page, img.data + off, n);
    }
    /* past the image: erased flash reads 0xff; a ZLP acknowledges as well as 1 byte */
    uint8_t a[8];
    picoboot_put32(a, BASE + erase);
    picoboot_put32(a + 4, 64);
    phase ph;
    assert_int_equal(pb_cmd_ex(b, PC_READ, a, 8, 64, page, &ph, true), 0);
    for (int i = 0; i < 64; i++)
        assert_int_equal(page[i], 0xff);

    /* REBOOT2 normal: acknowledged, then the board leaves after the delay and
     * comes back running what was written: the pico-ice firmware */
    int leaves = b->leaves, arrivals = b->arrivals;
    assert_int_equal(reboot2(b, PICOBOOT_REBOOT2_NORMAL, 20), 0);
    assert_int_equal(cmd_status(b).code, PICOBOOT_OK); /* still there inside the delay */
    RUN_UNTIL(d, b->leaves == leaves + 1);
    RUN_UNTIL(d, b->arrivals == arrivals + 1);
    assert_int_equal(b->info.vid, WRK_VID_PIDCODES);
    assert_int_equal(b->info.pid, WRK_PID_PICO_ICE);
    wrk_usb_desc desc;
    assert_int_equal(ops(d)->usb_desc(d->t, b->dev, &desc), 0);
    assert_int_equal(desc.nifaces, 5);
    /* and it runs the firmware protocol */
    assert_int_equal(drv_open(b), 0);
    RUN_UNTIL(d, b->n_ready >= 1);
    drv_close(b);
    uf2_image_free(&img);
    assert_int_equal(d->violations, 0);
    drv_free(d);
}

static void test_refused_commands(void **state)
{
    drv *d = setup_bootsel(SIM_FW_DEFAULT);
    drv_board *b = &d->b[0];
    uint8_t excl = 1;
    assert_int_equal(pb_cmd(b, PC_EXCLUSIVE_ACCESS, &excl, 1, 0, NULL), 0);
    uint32_t good = g_token;

    /* bad magic: the packet is taken, both endpoints halt, the status is still
     * the previous command's */
    picoboot_cmd c;
    uint8_t pkt[PICOBOOT_CMD_SIZE];
    picoboot_cmd_make(&c, 7777, PC_EXIT_XIP, NULL, 0, 0);
    picoboot_cmd_pack(&c, pkt);
    pkt[0] ^= 0xff;
    rec r;
    assert_int_equal(bulk(b, EP_OUT, pkt, sizeof pkt, &r), 0);
    assert_int_equal(bulk(b, EP_IN, NULL, 64, &r), -EPIPE);
    picoboot_status st = cmd_status(b);
    assert_int_equal(st.token, good);
    assert_int_equal(st.code, PICOBOOT_OK);
    assert_int_equal(bulk(b, EP_OUT, pkt, sizeof pkt, &r), -EPIPE); /* still halted */
    /* CLEAR_FEATURE(HALT) on both, as a host does after a stall */
    ifm_usb_setup clr = { 0x02, 0x01, 0, EP_OUT, 0 };
    assert_int_equal(xfer(b, WRK_EP_CONTROL, 0x00, &clr, NULL, 0, &r), 0);
    assert_int_equal(ops(d)->usb_clear_halt(d->t, b->dev, EP_IN), 0);
    assert_int_equal(pb_cmd(b, PC_EXIT_XIP, NULL, 0, 0, NULL), 0);
    /* a 31-byte packet is no command either */
    assert_int_equal(bulk(b, EP_OUT, pkt, 31, &r), 0);
    assert_int_equal(bulk(b, EP_IN, NULL, 64, &r), -EPIPE);
    if_reset(b);

    /* unknown command: stall, UNKNOWN_CMD for its token */
    phase ph;
    int rc = pb_cmd_ex(b, 0x7f, NULL, 0, 0, NULL, &ph, false);
    expect_refused(b, rc, ph, PH_ACK, PICOBOOT_UNKNOWN_CMD, 0x7f);
    /* REBOOT is RP2040's: the RP2350 answers UNKNOWN_CMD */
    uint8_t rb[12] = { 0 };
    rc = pb_cmd_ex(b, PC_REBOOT, rb, sizeof rb, 0, NULL, &ph, false);
    expect_refused(b, rc, ph, PH_ACK, PICOBOOT_UNKNOWN_CMD, PC_REBOOT);
    /* wrong argument size, wrong transfer length */
    rc = pb_cmd_ex(b, PC_EXIT_XIP, rb, 4, 0, NULL, &ph, false);
    expect_refused(b, rc, ph, PH_ACK, PICOBOOT_INVALID_CMD_LENGTH, PC_EXIT_XIP);
    uint8_t a[8];
    picoboot_put32(a, BASE);
    picoboot_put32(a + 4, 4096);
    rc = pb_cmd_ex(b, PC_FLASH_ERASE, a, 8, 4096, NULL, &ph, false);
    expect_refused(b, rc, ph, PH_DATA, PICOBOOT_INVALID_TRANSFER_LENGTH, PC_FLASH_ERASE);

    /* misaligned erase: address, then size */
    rc = range(b, PC_FLASH_ERASE, BASE + 256, 4096, NULL, &ph);
    expect_refused(b, rc, ph, PH_ACK, PICOBOOT_BAD_ALIGNMENT, PC_FLASH_ERASE);
    rc = range(b, PC_FLASH_ERASE, BASE, 100, NULL, &ph);
    expect_refused(b, rc, ph, PH_ACK, PICOBOOT_BAD_ALIGNMENT, PC_FLASH_ERASE);
    /* outside the 4 MiB flash */
    rc = range(b, PC_FLASH_ERASE, BASE + SIM_FLASH_SIZE, 4096, NULL, &ph);
    expect_refused(b, rc, ph, PH_ACK, PICOBOOT_INVALID_ADDRESS, PC_FLASH_ERASE);

    /* a misaligned WRITE: the 256 bytes are taken, the acknowledgement stalls */
    uint8_t page[4096];
    memset(page, 0x5a, sizeof page);
    rc = range(b, PC_WRITE, BASE + 16, 256, page, &ph);
    expect_refused(b, rc, ph, PH_ACK, PICOBOOT_BAD_ALIGNMENT, PC_WRITE);
    /* ... and a longer one stalls in the data phase after the first 256 bytes */
    rc = range(b, PC_WRITE, BASE + 16, 4096, page, &ph);
    expect_refused(b, rc, ph, PH_DATA, PICOBOOT_BAD_ALIGNMENT, PC_WRITE);
    /* READ from where there is no flash (RAM, ROM are not modelled) */
    rc = range(b, PC_READ, 0x20000000u, 256, page, &ph);
    expect_refused(b, rc, ph, PH_DATA, PICOBOOT_INVALID_ADDRESS, PC_READ);
    /* REBOOT2 into a RAM image: there is no RAM in the model */
    uint8_t r2[16] = { 0 };
    picoboot_put32(r2, PICOBOOT_REBOOT2_PC_SP);
    rc = pb_cmd_ex(b, PC_REBOOT2, r2, sizeof r2, 0, NULL, &ph, false);
    expect_refused(b, rc, ph, PH_ACK, PICOBOOT_NOT_PERMITTED, PC_REBOOT2);
    /* vendor requests PICOBOOT does not have stall */
    ifm_usb_setup bad = { 0xc1, 0x43, 0, IFACE, 16 };
    assert_int_equal(xfer(b, WRK_EP_CONTROL, 0x80, &bad, NULL, 16, &r), -EPIPE);

    /* after all that, the interface still works */
    uint8_t back[256];
    ok_range(b, PC_READ, BASE, 256, back);
    assert_int_equal(d->violations, 0);
    drv_free(d);
}

/* NOR semantics: the bootrom does not refuse a write to unerased flash; bits
 * only clear, and READ shows the AND. A short WRITE zero-fills its page. */
static void test_write_unerased_and_short(void **state)
{
    drv *d = setup_bootsel(SIM_FW_DEFAULT);
    drv_board *b = &d->b[0];
    uint32_t at = BASE + 0x100000;
    ok_range(b, PC_FLASH_ERASE, at, 4096, NULL);
    uint8_t p1[256], p2[256], back[256];
    memset(p1, 0xf0, sizeof p1);
    memset(p2, 0x3c, sizeof p2);
    ok_range(b, PC_WRITE, at, 256, p1);
    ok_range(b, PC_WRITE, at, 256, p2);
    ok_range(b, PC_READ, at, 256, back);
    for (int i = 0; i < 256; i++)
        assert_int_equal(back[i], 0x30);
    /* 100 bytes into the next page: the other 156 become 0 */
    ok_range(b, PC_WRITE, at + 256, 100, p1);
    ok_range(b, PC_READ, at + 256, 256, back);
    for (int i = 0; i < 256; i++)
        assert_int_equal(back[i], i < 100 ? 0xf0 : 0x00);
    /* the page after stays erased */
    ok_range(b, PC_READ, at + 512, 256, back);
    for (int i = 0; i < 256; i++)
        assert_int_equal(back[i], 0xff);
    drv_free(d);
}

/* What the flash holds: the running firmware's image from the start, what the
 * worker's flash wrote, and what a reboot boots (BOOTSEL for blank flash). */
static void test_contents_and_reboots(void **state)
{
    drv *d = setup_bootsel(SIM_FW_PULSECOUNT);
    drv_board *b = &d->b[0];
    uint8_t head[256];
    const char *want = SIM_FW_MARKER "pulsecount\n";
    ok_range(b, PC_READ, BASE, sizeof head, head);
    assert_memory_equal(head, want, strlen(want));

    /* REBOOT2 BOOTSEL: back in BOOTSEL */
    int arrivals = b->arrivals;
    assert_int_equal(reboot2(b, PICOBOOT_REBOOT2_BOOTSEL, 1), 0);
    RUN_UNTIL(d, b->arrivals == arrivals + 1);
    assert_int_equal(b->info.pid, WRK_PID_BOOTSEL);

    /* a flash through the worker: PICOBOOT reads back the image it wrote */
    arrivals = b->arrivals;
    assert_int_equal(drv_flash(b, SIM_FW_VARIANCE), 0);
    RUN_UNTIL(d, b->arrivals == arrivals + 1);
    assert_int_equal(b->info.pid, WRK_PID_PICO_ICE);
    drv_to_bootsel(b);
    want = SIM_FW_MARKER "variance\n";
    ok_range(b, PC_READ, BASE, sizeof head, head);
    assert_memory_equal(head, want, strlen(want));

    /* an image the sim does not know boots as unknown firmware (2e8a:0009) */
    ok_range(b, PC_FLASH_ERASE, BASE, 4096, NULL);
    memset(head, 0, sizeof head);
    memcpy(head, "not a sim image", 15);
    ok_range(b, PC_WRITE, BASE, sizeof head, head);
    arrivals = b->arrivals;
    assert_int_equal(reboot2(b, PICOBOOT_REBOOT2_NORMAL, 1), 0);
    RUN_UNTIL(d, b->arrivals == arrivals + 1);
    assert_int_equal(b->info.vid, WRK_VID_RPI);
    assert_int_equal(b->info.pid, WRK_PID_PICO_STDIO);

    /* blank flash: the bootrom finds nothing to boot and stays in BOOTSEL */
    drv_to_bootsel(b);
    assert_int_equal(ops(d)->usb_claim(d->t, b->dev, IFACE), 0);
    ok_range(b, PC_FLASH_ERASE, BASE, 4096, NULL);
    arrivals = b->arrivals;
    int leaves = b->leaves;
    assert_int_equal(reboot2(b, PICOBOOT_REBOOT2_NORMAL, 1), 0);
    RUN_UNTIL(d, b->arrivals == arrivals + 1);
    assert_int_equal(b->leaves, leaves + 1);
    assert_int_equal(b->info.pid, WRK_PID_BOOTSEL);
    assert_int_equal(d->violations, 0);
    drv_free(d);
}

/* Worker flashes on a board whose flash PICOBOOT never touched: the image the
 * sim builds for a kind, and a custom one, both read back as written. */
static void test_worker_flash_read_back(void **state)
{
    drv *d = setup_bootsel(SIM_FW_DEFAULT);
    drv_board *b = &d->b[0];
    int arrivals = b->arrivals;
    assert_int_equal(drv_flash(b, SIM_FW_VARIANCE), 0);
    RUN_UNTIL(d, b->arrivals == arrivals + 1);
    drv_to_bootsel(b);
    uint8_t head[256];
    const char *want = SIM_FW_MARKER "variance\n";
    ok_range(b, PC_READ, BASE, sizeof head, head);
    assert_memory_equal(head, want, strlen(want));

    uint8_t payload[600];
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)(i * 7 + 3);
    uf2_build_opts bo = { .base = BASE, .family = UF2_FAMILY_RP2350_ARM_S, .e10_block = true };
    size_t len;
    uint8_t *uf2 = uf2_build(payload, sizeof payload, &bo, &len);
    assert_non_null(uf2);
    arrivals = b->arrivals;
    assert_int_equal(drv_flash_raw(b, uf2, len), 0);
    free(uf2);
    RUN_UNTIL(d, b->arrivals == arrivals + 1);
    assert_int_equal(b->info.pid, WRK_PID_PICO_STDIO); /* unknown firmware */
    drv_to_bootsel(b);
    uint8_t back[768];
    ok_range(b, PC_READ, BASE, sizeof back, back);
    assert_memory_equal(back, payload, sizeof payload);
    for (size_t i = sizeof payload; i < 768; i++) /* uf2_build pads the last 256-byte block with zeros */
        assert_int_equal(back[i], 0);
    drv_free(d);
}

/* A READ whose IN URBs are smaller than the transfer: several URBs; and a
 * command packet while a transfer waits is queued behind it. */
static void test_read_in_pieces(void **state)
{
    drv *d = setup_bootsel(SIM_FW_PULSECOUNT);
    drv_board *b = &d->b[0];
    uf2_image img = image_of(SIM_FW_PULSECOUNT);
    picoboot_cmd c;
    uint8_t pkt[PICOBOOT_CMD_SIZE], a[8];
    picoboot_put32(a, BASE);
    picoboot_put32(a + 4, 1024);
    picoboot_cmd_make(&c, ++g_token, PC_READ, a, 8, 1024);
    picoboot_cmd_pack(&c, pkt);
    rec r;
    assert_int_equal(bulk(b, EP_OUT, pkt, sizeof pkt, &r), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(bulk(b, EP_IN, NULL, 256, &r), 0);
        assert_int_equal(r.actual, 256);
        assert_memory_equal(r.data, img.data + i * 256, 256);
    }
    /* an IN URB now has nothing to get until the next command: it waits */
    wrk_urb *u = ops(d)->urb_alloc(d->t, b->dev, 64);
    rec w = { 0 };
    u->done = on_done;
    u->arg = &w;
    u->type = WRK_EP_BULK;
    u->ep = EP_IN;
    u->len = 64;
    assert_int_equal(ops(d)->urb_submit(d->t, u), 0);
    assert_int_equal(bulk(b, EP_OUT, "\0", 1, &r), 0); /* the READ's acknowledgement */
    drv_idle(d, 20);
    assert_int_equal(w.done, 0);
    picoboot_cmd_make(&c, ++g_token, PC_EXIT_XIP, NULL, 0, 0);
    picoboot_cmd_pack(&c, pkt);
    assert_int_equal(bulk(b, EP_OUT, pkt, sizeof pkt, &r), 0); /* its ZLP ends the waiting URB */
    RUN_UNTIL(d, w.done == 1);
    assert_int_equal(w.status, 0);
    assert_int_equal(w.actual, 0);
    ops(d)->urb_free(d->t, u);
    uf2_image_free(&img);
    drv_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flash_pico_ice_firmware),  cmocka_unit_test(test_refused_commands),
        cmocka_unit_test(test_write_unerased_and_short), cmocka_unit_test(test_contents_and_reboots),
        cmocka_unit_test(test_read_in_pieces),           cmocka_unit_test(test_worker_flash_read_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
