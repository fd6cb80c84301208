/* libicefarm's USB/IP client against icefarm-wrk's own USB/IP server (wrk/usbip)
 * exporting a simulated pico2-ice board, over real loopback TCP, everything on
 * one loop. The board runs the pulse-count firmware (1209:b1c0: CDC0 on
 * interface 0 carries the firmware protocol, CDC1 on interface 2 loops back).
 *
 * Covers: import, descriptors, CDC function discovery and choice, line coding
 * and DTR, the firmware protocol end to end, CDC1's loopback, a missing
 * completion (write times out, URB unlinked, session lives on), a stall (halt
 * cleared), a partial PDU then close (reported, re-imported), a late RET_UNLINK,
 * a busy import, an unknown busid, no such CDC function, and the board
 * re-enumerating mid-read (1200-baud touch: GONE, then BOOTSEL without CDC, then
 * back up after a flash), and flashing the board in BOOTSEL through the import
 * with PICOBOOT URBs, as picotool would over USB/IP (erase, write, read back,
 * REBOOT2: the export follows it back into the pico-ice firmware). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "icefarm/usbip_client.h"
#include "picoboot.h"
#include "sim.h"
#include "uf2.h"
#include "usbip.h"
#include "usbip_session.h"

#define TOKEN "TestToken0123456789abcde" /* IFM_USBIP_TOKEN_LEN */
#define WAIT_MS 20000                    /* generous: only a wedged test waits this long */

typedef struct {
    ifm_loop *loop;
    wrk_transport *t;
    usbip_server *srv;
    usbip_export *exp;
    char serial[WRK_SERIAL_MAX];
    char port[16];
    wrk_usbdev *dev;
    int arrivals, leaves;
    uint16_t pid;
} fx;

static void on_arrive(void *arg, wrk_usbdev *dev, const wrk_usbinfo *info)
{
    fx *f = arg;
    snprintf(f->serial, sizeof f->serial, "%s", info->serial);
    f->dev = dev;
    f->pid = info->pid;
    f->arrivals++;
    if (f->exp)
        usbip_export_set_device(f->exp, dev);
}

static void on_leave(void *arg, wrk_usbdev *dev)
{
    (void)dev;
    fx *f = arg;
    f->dev = NULL;
    f->leaves++;
    if (f->exp)
        usbip_export_set_device(f->exp, NULL);
}

static void run_until(fx *f, bool (*cond)(fx *f, void *arg), void *arg)
{
    uint64_t dl = ifm_now_ms() + WAIT_MS;
    while (!cond(f, arg) && ifm_now_ms() < dl)
        ifm_loop_once(f->loop, 10);
    assert_true(cond(f, arg));
}

static bool arrived(fx *f, void *arg)
{
    return f->arrivals >= *(int *)arg && f->dev;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    f->loop = ifm_loop_new();
    sim_options so;
    sim_options_default(&so);
    so.boards = 1;
    so.seed = "usbip-client";
    so.initial_fw = SIM_FW_PULSECOUNT;
    so.enum_ms = 50;
    so.flash_ms = 50;
    so.count_window_ms = 50;
    f->t = sim_transport_new(f->loop, &so);
    assert_non_null(f->t);
    static const wrk_transport_events ev = { on_arrive, on_leave };
    assert_int_equal(f->t->ops->start(f->t, &ev, f), 0);
    int one = 1;
    run_until(f, arrived, &one);
    char why[200];
    usbip_server_opts o = { .listen_host = "127.0.0.1", .listen_port = "0" };
    f->srv = usbip_server_new(f->loop, f->t, &o, why, sizeof why);
    assert_non_null(f->srv);
    snprintf(f->port, sizeof f->port, "%d", usbip_server_port(f->srv));
    f->exp = usbip_export_new(f->srv, f->serial, TOKEN, "tester");
    usbip_export_set_device(f->exp, f->dev);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    usbip_server_free(f->srv);
    /* the server's cancelled URBs come back from the transport on later turns */
    for (int i = 0; i < 20; i++)
        ifm_loop_once(f->loop, 5);
    f->t->ops->free(f->t);
    ifm_loop_free(f->loop);
    free(f);
    return 0;
}

static icefarm_usbip *open_ok(fx *f, icefarm_usbip_opts *o)
{
    o->host = "127.0.0.1";
    o->port = f->port;
    o->busid = TOKEN;
    icefarm_usbip *u = NULL;
    char why[400];
    int rc = usbc_open_on_loop(f->loop, o, true, &u, why, sizeof why);
    if (rc)
        fail_msg("open: %s (%s)", ifm_strerror(rc), why);
    return u;
}

/* Reads lines until one contains `want`. */
static void read_until(icefarm_usbip *u, const char *want, char *line, size_t cap)
{
    for (int i = 0; i < 50; i++) {
        ssize_t n = icefarm_usbip_read(u, line, cap - 1, 0, "\r\n", 2, WAIT_MS);
        if (n < 0)
            fail_msg("read: %s", ifm_strerror((int)n));
        line[n] = '\0';
        if (strstr(line, want))
            return;
    }
    fail_msg("no line with \"%s\"", want);
}

/* Lets the server read what the client has sent (the bulk-IN URBs queued at
 * UP) before a fault is armed for "the next URB". */
static void settle(fx *f)
{
    for (int i = 0; i < 10; i++)
        ifm_loop_once(f->loop, 20);
}

/* ---- the firmware protocol through CDC0 ---- */

static void test_pulsecount_end_to_end(void **state)
{
    fx *f = *state;
    icefarm_usbip_opts o = { 0 };
    icefarm_usbip *u = open_ok(f, &o);
    assert_int_equal(icefarm_usbip_get_state(u), ICEFARM_USBIP_UP);
    icefarm_usbip_info info;
    icefarm_usbip_get_info(u, &info);
    assert_int_equal(info.vid, 0x1209);
    assert_int_equal(info.pid, 0xb1c0);
    assert_int_equal(info.ncdc, 2);
    assert_int_equal(info.cdc_comm[0], 0);
    assert_int_equal(info.cdc_comm[1], 2);
    assert_int_equal(info.comm_iface, 0);
    assert_int_equal(info.data_iface, 1);
    assert_int_equal(info.ep_in, 0x82);
    assert_int_equal(info.ep_out, 0x02);
    assert_int_equal(info.config_value, 1);
    assert_string_equal(info.serial, f->serial);
    assert_int_equal(info.line.baud, 115200);
    assert_true(info.dtr && info.rts);
    assert_int_equal(info.speed, 2);

    char line[512];
    read_until(u, "Waiting for bitstream transfer", line, sizeof line);
    uint8_t *bits = malloc(104090);
    for (size_t i = 0; i < 104090; i++)
        bits[i] = (uint8_t)(i * 7 + 3);
    assert_int_equal(icefarm_usbip_write(u, bits, 104090, NULL, NULL), 0);
    read_until(u, "pulses: ", line, sizeof line);
    unsigned long got = strtoul(strstr(line, "pulses: ") + 8, NULL, 10);
    assert_int_equal(got, sim_expected_pulses(bits, 104090));
    free(bits);
    icefarm_usbip_stats st;
    icefarm_usbip_get_stats(u, &st);
    assert_true(st.bytes_out == 104090);
    assert_true(st.bytes_in > 0);
    icefarm_usbip_close(u);
}

/* DTR off at import, raised later (icefarm-cli serial --pty raises it when the pty
 * is opened): the firmware greets then. */
static void test_dtr_later(void **state)
{
    fx *f = *state;
    icefarm_usbip_opts o = { .no_dtr = true };
    icefarm_usbip *u = open_ok(f, &o);
    icefarm_usbip_info info;
    icefarm_usbip_get_info(u, &info);
    assert_false(info.dtr);
    char line[512];
    assert_int_equal(icefarm_usbip_read(u, line, sizeof line, 1, NULL, 0, 300), -ETIMEDOUT); /* silent without DTR */
    assert_int_equal(icefarm_usbip_set_control_lines(u, true, true, NULL, NULL), 0);
    read_until(u, "Waiting for bitstream transfer", line, sizeof line);
    icefarm_usbip_close(u);
}

/* ---- CDC1 by its interface: the loopback ---- */

static void echo(icefarm_usbip *u, const char *msg)
{
    size_t n = strlen(msg);
    assert_int_equal(icefarm_usbip_write(u, msg, n, NULL, NULL), 0);
    char buf[256];
    ssize_t got = icefarm_usbip_read(u, buf, sizeof buf, n, NULL, 0, WAIT_MS);
    assert_int_equal(got, (ssize_t)n);
    assert_memory_equal(buf, msg, n);
}

static void test_second_function_loopback(void **state)
{
    fx *f = *state;
    icefarm_usbip_opts o = { .cdc_interface = 2 };
    icefarm_usbip *u = open_ok(f, &o);
    icefarm_usbip_info info;
    icefarm_usbip_get_info(u, &info);
    assert_int_equal(info.comm_iface, 2);
    assert_int_equal(info.data_iface, 3);
    assert_int_equal(info.ep_in, 0x84);
    assert_int_equal(info.ep_out, 0x04);
    echo(u, "hello through CDC1");
    /* the delimiter read returns exactly up to it */
    assert_int_equal(icefarm_usbip_write(u, "one\ntwo\n", 8, NULL, NULL), 0);
    char buf[64];
    assert_int_equal(icefarm_usbip_read(u, buf, sizeof buf, 0, "\n", 1, WAIT_MS), 4);
    assert_memory_equal(buf, "one\n", 4);
    assert_int_equal(icefarm_usbip_read(u, buf, sizeof buf, 0, "\n", 1, WAIT_MS), 4);
    assert_memory_equal(buf, "two\n", 4);
    /* nothing more: a deadline, not a hang */
    assert_int_equal(icefarm_usbip_read(u, buf, sizeof buf, 1, NULL, 0, 200), -ETIMEDOUT);
    icefarm_usbip_close(u);
}

static void test_no_such_function(void **state)
{
    fx *f = *state;
    icefarm_usbip_opts o = { .cdc_interface = 5 };
    icefarm_usbip *u = open_ok(f, &o);
    assert_int_equal(icefarm_usbip_get_state(u), ICEFARM_USBIP_NO_CDC);
    assert_int_equal(icefarm_usbip_write(u, "x", 1, NULL, NULL), -ENOTCONN);
    icefarm_usbip_close(u);
}

/* ---- refused imports ---- */

static void test_unknown_busid(void **state)
{
    fx *f = *state;
    icefarm_usbip_opts o = { .host = "127.0.0.1", .port = f->port, .busid = "NoSuchToken" };
    icefarm_usbip *u = NULL;
    char why[400];
    assert_int_equal(usbc_open_on_loop(f->loop, &o, true, &u, why, sizeof why), -ENOENT);
    assert_null(u);
    assert_non_null(strstr(why, "Device not found"));
}

static void test_busy_import(void **state)
{
    fx *f = *state;
    assert_int_equal(sim_inject(f->t, f->serial, SIM_FAULT_BUSY_IMPORT, 1), 0);
    icefarm_usbip_opts o = { .host = "127.0.0.1", .port = f->port, .busid = TOKEN };
    icefarm_usbip *u = NULL;
    char why[400];
    assert_int_equal(usbc_open_on_loop(f->loop, &o, true, &u, why, sizeof why), -EBUSY);
    assert_non_null(strstr(why, "busy"));
    /* the next import goes through */
    u = open_ok(f, &o);
    assert_int_equal(icefarm_usbip_get_state(u), ICEFARM_USBIP_UP);
    icefarm_usbip_close(u);
}

/* ---- URB faults ---- */

static void test_missing_completion(void **state)
{
    fx *f = *state;
    icefarm_usbip_opts o = { .cdc_interface = 2, .write_timeout_ms = 300 };
    icefarm_usbip *u = open_ok(f, &o);
    settle(f);
    assert_int_equal(sim_inject(f->t, f->serial, SIM_FAULT_NO_COMPLETION, 1), 0);
    assert_int_equal(icefarm_usbip_write(u, "lost", 4, NULL, NULL), -ETIMEDOUT);
    icefarm_usbip_stats st;
    icefarm_usbip_get_stats(u, &st);
    assert_true(st.urb_timeouts >= 1);
    assert_true(st.unlinks_sent >= 1);
    assert_int_equal(icefarm_usbip_get_state(u), ICEFARM_USBIP_UP);
    echo(u, "after the lost one");
    icefarm_usbip_get_stats(u, &st);
    assert_int_equal(st.ret_unlink_reset, 1); /* the server cancelled it: no RET_SUBMIT */
    icefarm_usbip_close(u);
}

static void test_stall(void **state)
{
    fx *f = *state;
    icefarm_usbip_opts o = { .cdc_interface = 2 };
    icefarm_usbip *u = open_ok(f, &o);
    assert_int_equal(sim_inject(f->t, f->serial, SIM_FAULT_STALL, 1), 0);
    int rc = icefarm_usbip_write(u, "stalled?", 8, NULL, NULL);
    assert_true(rc == 0 || rc == -EPIPE);
    /* the halt gets cleared either way (bulk OUT or a bulk IN resubmitted) */
    icefarm_usbip_stats st;
    for (int i = 0; i < 200; i++) {
        icefarm_usbip_get_stats(u, &st);
        if (st.stalls_cleared)
            break;
        ifm_loop_once(f->loop, 10);
    }
    assert_int_equal(st.stalls_cleared, 1);
    char buf[64];
    while (icefarm_usbip_read(u, buf, sizeof buf, 0, NULL, 0, 200) > 0)
        ;
    echo(u, "after the stall");
    icefarm_usbip_close(u);
}

typedef struct {
    int n[5];
    char last_reason[300];
} states;

static void on_state(icefarm_usbip *u, icefarm_usbip_state st, const char *why, void *arg)
{
    (void)u;
    states *s = arg;
    s->n[st]++;
    snprintf(s->last_reason, sizeof s->last_reason, "%s", why);
}

static void test_partial_pdu_then_close(void **state)
{
    fx *f = *state;
    states s;
    memset(&s, 0, sizeof s);
    icefarm_usbip_opts o = { .cdc_interface = 2, .on_state = on_state, .arg = &s };
    icefarm_usbip *u = open_ok(f, &o);
    assert_int_equal(sim_inject(f->t, f->serial, SIM_FAULT_PARTIAL_PDU, 1), 0);
    icefarm_usbip_write(u, "cut", 3, NULL, NULL); /* its RET_SUBMIT or a bulk IN's is cut */
    assert_int_equal(icefarm_usbip_wait_state(u, ICEFARM_USBIP_UP, WAIT_MS), 0);
    assert_true(s.n[ICEFARM_USBIP_GONE] >= 1);
    icefarm_usbip_info info;
    icefarm_usbip_get_info(u, &info);
    assert_int_equal(info.imports, 2);
    char buf[64];
    while (icefarm_usbip_read(u, buf, sizeof buf, 0, NULL, 0, 200) > 0)
        ;
    echo(u, "after the cut");
    icefarm_usbip_close(u);
}

static void test_late_ret_unlink(void **state)
{
    fx *f = *state;
    icefarm_usbip_opts o = { .cdc_interface = 2, .write_timeout_ms = 300 };
    icefarm_usbip *u = open_ok(f, &o);
    settle(f);
    assert_int_equal(sim_inject(f->t, f->serial, SIM_FAULT_NO_COMPLETION, 1), 0);
    assert_int_equal(sim_inject(f->t, f->serial, SIM_FAULT_LATE_UNLINK, 1), 0);
    assert_int_equal(icefarm_usbip_write(u, "lost", 4, NULL, NULL), -ETIMEDOUT);
    icefarm_usbip_stats st;
    icefarm_usbip_get_stats(u, &st);
    assert_int_equal(st.ret_unlink_reset + st.ret_unlink_done, 0); /* held back by the server */
    echo(u, "the next completion releases it");
    for (int i = 0; i < 100 && !(st.ret_unlink_reset + st.ret_unlink_done); i++) {
        ifm_loop_once(f->loop, 10);
        icefarm_usbip_get_stats(u, &st);
    }
    assert_int_equal(st.ret_unlink_reset + st.ret_unlink_done, 1);
    assert_int_equal(st.ret_unlink_late, 1);
    assert_int_equal(icefarm_usbip_get_state(u), ICEFARM_USBIP_UP);
    echo(u, "still fine");
    icefarm_usbip_close(u);
}

/* ---- the board re-enumerates mid-read ---- */

static void flashed(void *arg, int status, const char *reason)
{
    (void)reason;
    *(int *)arg = status == 0 ? 1 : status;
}

static void touch_sent(icefarm_usbip *u, int status, void *arg)
{
    (void)u;
    *(int *)arg = status == 0 ? 1 : status;
}

/* Imports the board, reads the firmware's greeting and sends the 1200-baud
 * touch (BOOTSEL follows); *touched becomes 1 once the request completed. */
static icefarm_usbip *open_and_touch(fx *f, states *s, int *touched)
{
    memset(s, 0, sizeof *s);
    icefarm_usbip_opts o = { .on_state = on_state, .arg = s };
    icefarm_usbip *u = open_ok(f, &o);
    char line[512];
    read_until(u, "Waiting for bitstream transfer", line, sizeof line);
    *touched = 0;
    icefarm_usbip_line_coding lc = { .baud = 1200 };
    assert_int_equal(icefarm_usbip_set_line_coding(u, &lc, touch_sent, touched), 0);
    return u;
}

static void test_reenumeration_mid_read(void **state)
{
    fx *f = *state;
    states s;
    int touched;
    icefarm_usbip *u = open_and_touch(f, &s, &touched);
    char line[512];
    /* a read that would wait for more: the device vanishes under it */
    ssize_t n;
    do
        n = icefarm_usbip_read(u, line, sizeof line, 0, "never", 5, WAIT_MS);
    while (n > 0);
    assert_int_equal(n, -ENODEV);
    assert_int_not_equal(touched, 0);
    /* it comes back as BOOTSEL: imported, no CDC */
    assert_int_equal(icefarm_usbip_wait_state(u, ICEFARM_USBIP_NO_CDC, WAIT_MS), 0);
    assert_non_null(strstr(s.last_reason, "2e8a:000f"));
    assert_int_equal(icefarm_usbip_write(u, "x", 1, NULL, NULL), -ENOTCONN);
    /* flashed (the worker's flash command would do this): firmware back, session back */
    size_t len;
    uint8_t *uf2 = sim_fw_build_uf2(SIM_FW_PULSECOUNT, &len);
    assert_non_null(f->dev);
    int flash_done = 0;
    assert_int_equal(f->t->ops->flash_uf2(f->t, f->dev, uf2, len, flashed, &flash_done), 0);
    assert_int_equal(icefarm_usbip_wait_state(u, ICEFARM_USBIP_UP, WAIT_MS), 0);
    free(uf2);
    assert_int_equal(flash_done, 1);
    icefarm_usbip_info info;
    icefarm_usbip_get_info(u, &info);
    assert_int_equal(info.pid, 0xb1c0);
    assert_int_equal(info.line.baud, 115200); /* the touch is not repeated */
    read_until(u, "Waiting for bitstream transfer", line, sizeof line);
    icefarm_usbip_close(u);
}

/* ---- flashing in BOOTSEL through the import, as picotool over USB/IP ---- */

typedef struct {
    int done, status;
    uint32_t actual;
} urb_rec;

static void urb_done(usbc_urb *urb)
{
    urb_rec *r = urb->arg;
    r->done = 1;
    r->status = urb->status;
    r->actual = urb->actual;
}

/* One URB through the session's connection, waited for: its status. */
static int urb(fx *f, icefarm_usbip *u, uint8_t ep, uint8_t type, const uint8_t *setup, uint8_t *buf, uint32_t len,
               uint32_t *actual)
{
    urb_rec r = { 0 };
    usbc_urb x = { .ep = ep, .type = type, .buf = buf, .len = len, .timeout_ms = WAIT_MS, .done = urb_done, .arg = &r };
    if (setup)
        memcpy(x.setup, setup, 8);
    assert_non_null(u->c);
    assert_int_equal(usbc_submit(u->c, &x), 0);
    uint64_t dl = ifm_now_ms() + WAIT_MS;
    while (!r.done && ifm_now_ms() < dl)
        ifm_loop_once(f->loop, 10);
    assert_int_equal(r.done, 1);
    if (actual)
        *actual = r.actual;
    return r.status;
}

/* A PICOBOOT command: the block on bulk OUT 0x03, the data phase, the
 * acknowledgement (a ZLP on IN 0x84, or 1 byte on OUT after READ). 0 or the
 * failing phase's status. */
static int picoboot(fx *f, icefarm_usbip *u, uint32_t token, uint8_t id, const uint8_t *args, uint8_t nargs,
                    uint8_t *data, uint32_t xfer_len)
{
    picoboot_cmd c;
    uint8_t blk[PICOBOOT_CMD_SIZE], ack[64] = { 0 };
    picoboot_cmd_make(&c, token, id, args, nargs, xfer_len);
    picoboot_cmd_pack(&c, blk);
    uint32_t n;
    int rc = urb(f, u, 0x03, 2, NULL, blk, sizeof blk, &n);
    if (rc)
        return rc;
    assert_int_equal(n, PICOBOOT_CMD_SIZE);
    if (xfer_len) {
        rc = urb(f, u, (id & 0x80) ? 0x84 : 0x03, 2, NULL, data, xfer_len, &n);
        if (rc)
            return rc;
        assert_int_equal(n, xfer_len);
    }
    if (id & 0x80)
        return urb(f, u, 0x03, 2, NULL, ack, 1, NULL);
    rc = urb(f, u, 0x84, 2, NULL, ack, sizeof ack, &n);
    if (rc == 0)
        assert_int_equal(n, 0);
    return rc;
}

static int picoboot_range(fx *f, icefarm_usbip *u, uint32_t token, uint8_t id, uint32_t addr, uint32_t size,
                          uint8_t *data)
{
    uint8_t a[8];
    picoboot_put32(a, addr);
    picoboot_put32(a + 4, size);
    return picoboot(f, u, token, id, a, sizeof a, data, id == PC_FLASH_ERASE ? 0 : size);
}

static picoboot_status picoboot_get_status(fx *f, icefarm_usbip *u)
{
    uint8_t setup[8] = { 0xc1, PICOBOOT_IF_CMD_STATUS, 0, 0, 1, 0, PICOBOOT_STATUS_SIZE, 0 };
    uint8_t buf[PICOBOOT_STATUS_SIZE];
    uint32_t n;
    assert_int_equal(urb(f, u, 0x80, 0, setup, buf, sizeof buf, &n), 0);
    picoboot_status st;
    char why[100];
    assert_int_equal(picoboot_status_unpack(buf, n, &st, why, sizeof why), 0);
    return st;
}

static void test_picoboot_flash_over_usbip(void **state)
{
    fx *f = *state;
    states s;
    int touched; /* the 1200-baud touch: the export follows the board into BOOTSEL */
    icefarm_usbip *u = open_and_touch(f, &s, &touched);
    assert_int_equal(icefarm_usbip_wait_state(u, ICEFARM_USBIP_NO_CDC, WAIT_MS), 0);
    assert_non_null(strstr(s.last_reason, "2e8a:000f"));
    int arrivals = f->arrivals;

    /* the variance firmware (pico-ice too), so the board's contents change */
    size_t len;
    uint8_t *uf2 = sim_fw_build_uf2(SIM_FW_VARIANCE, &len);
    uf2_image img;
    char why[UF2_REASON_MAX];
    assert_int_equal(uf2_parse(uf2, len, UF2_TARGET_RP2350, &img, why), 0);
    free(uf2);
    uint32_t tok = 1;
    uint8_t excl = 1;
    assert_int_equal(picoboot(f, u, tok++, PC_EXCLUSIVE_ACCESS, &excl, 1, NULL, 0), 0);
    assert_int_equal(picoboot(f, u, tok++, PC_EXIT_XIP, NULL, 0, NULL, 0), 0);
    /* a misaligned erase stalls; GET_CMD_STATUS says why; INTERFACE_RESET clears it */
    assert_int_equal(picoboot_range(f, u, tok++, PC_FLASH_ERASE, img.base + 256, 4096, NULL), -EPIPE);
    picoboot_status st = picoboot_get_status(f, u);
    assert_int_equal(st.code, PICOBOOT_BAD_ALIGNMENT);
    assert_int_equal(st.token, tok - 1);
    uint8_t reset[8] = { 0x41, PICOBOOT_IF_RESET, 0, 0, 1, 0, 0, 0 };
    assert_int_equal(urb(f, u, 0x00, 0, reset, NULL, 0, NULL), 0);

    uint32_t end = (uint32_t)((img.len + 255) / 256 * 256);
    assert_int_equal(picoboot_range(f, u, tok++, PC_FLASH_ERASE, img.base, (end + 4095) / 4096 * 4096, NULL), 0);
    uint8_t page[4096];
    for (uint32_t off = 0; off < end; off += 256) {
        memset(page, 0xff, 256);
        memcpy(page, img.data + off, off + 256 <= img.len ? 256 : img.len - off);
        assert_int_equal(picoboot_range(f, u, tok++, PC_WRITE, img.base + off, 256, page), 0);
    }
    for (uint32_t off = 0; off < img.len; off += sizeof page) {
        uint32_t n = img.len - off < sizeof page ? (uint32_t)(img.len - off) : (uint32_t)sizeof page;
        assert_int_equal(picoboot_range(f, u, tok++, PC_READ, img.base + off, n, page), 0);
        assert_memory_equal(page, img.data + off, n);
    }
    uf2_image_free(&img);
    /* REBOOT2: the board comes back running what was written, and the session
     * with it (the server exports the new enumeration, the client re-imports) */
    uint8_t r2[16] = { 0 };
    picoboot_put32(r2 + 4, 100);
    assert_int_equal(picoboot(f, u, tok++, PC_REBOOT2, r2, sizeof r2, NULL, 0), 0);
    arrivals++;
    run_until(f, arrived, &arrivals);
    assert_int_equal(f->pid, 0xb1c0);
    assert_int_equal(icefarm_usbip_wait_state(u, ICEFARM_USBIP_UP, WAIT_MS), 0);
    icefarm_usbip_info info;
    icefarm_usbip_get_info(u, &info);
    assert_int_equal(info.pid, 0xb1c0);
    char line[512];
    read_until(u, "Waiting for bitstream transfer", line, sizeof line);
    icefarm_usbip_close(u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pulsecount_end_to_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dtr_later, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_function_loopback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_such_function, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_busid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy_import, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_completion, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stall, setup, teardown),
        cmocka_unit_test_setup_teardown(test_partial_pdu_then_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_late_ret_unlink, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reenumeration_mid_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_picoboot_flash_over_usbip, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
