/* The libusb backend against fake boards in a umockdev testbed (fake_usb.h):
 * discovery and hotplug, the serial string, CDC I/O through emulated usbfs
 * URBs (echo, chunking, cancellation on close, timeouts, stalls, unplug), the
 * 1200-baud touch and PICOBOOT flashing. The transport is driven only through
 * wrk_transport_ops on a real ifm_loop, and every callback checks the contract:
 * never inside the op that caused it, never for a closed channel or after the
 * device's leave.
 *
 * Waits are on conditions (with a generous deadline that only a wedged test
 * reaches); "nothing more happens" is checked after the fake saw every URB of
 * the channel cancelled and reaped, not after a sleep.
 *
 * Must run with libumockdev-preload (umockdev-wrapper); main() re-executes
 * itself under it when started bare.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "fake_usb.h"
#include "icefarm/loop.h"
#include "sim_firmware.h"
#include "transport.h"
#include "uf2.h"
#include "usb_transport.h"

#define MAX_BOARDS 8
#define MAX_WRITES 256
#define DEADLINE_MS 20000

typedef struct drv drv;
typedef struct board board;

typedef struct {
    board *b;
    unsigned chan;
    int idx;
} wtoken;

struct board {
    drv *d;
    char serial[WRK_SERIAL_MAX];
    wrk_usbdev *dev;
    wrk_usbinfo info;
    int arrivals, leaves;
    bool open;
    unsigned chan;
    uint8_t *rx;
    size_t rxlen, rxcap;
    int rx_calls;
    bool close_in_rx;
    int errs;
    char err[160];
    int writes_done;
    int write_status[MAX_WRITES];
    char write_reason[160];
    wtoken tok[MAX_WRITES];
    int nwrites;
    int expect; /* the next write of this channel to complete */
    int flashes;
    int flash_status;
    char flash_reason[200];
    bool flash_pending;
    char events[128]; /* A arrive, L leave, F flash done, E err, W write done */
    size_t nevents;
};

struct drv {
    ifm_loop *loop;
    wrk_transport *t;
    fake_bed *bed;
    board b[MAX_BOARDS];
    int n;
    bool in_call;
    int violations;
};

static void violation(drv *d, const char *what)
{
    fprintf(stderr, "contract violation: %s\n", what);
    d->violations++;
}

static void note(board *b, char ev)
{
    if (b->nevents + 1 < sizeof b->events)
        b->events[b->nevents++] = ev;
}

static board *by_serial(drv *d, const char *serial, bool create)
{
    for (int i = 0; i < d->n; i++)
        if (strcmp(d->b[i].serial, serial) == 0)
            return &d->b[i];
    if (!create || d->n == MAX_BOARDS)
        return NULL;
    board *b = &d->b[d->n++];
    b->d = d;
    snprintf(b->serial, sizeof b->serial, "%s", serial);
    return b;
}

static void on_arrive(void *arg, wrk_usbdev *dev, const wrk_usbinfo *info)
{
    drv *d = arg;
    if (d->in_call)
        violation(d, "arrive inside an op");
    board *b = by_serial(d, info->serial, true);
    if (b->dev)
        violation(d, "arrive while present");
    b->dev = dev;
    b->info = *info;
    b->arrivals++;
    note(b, 'A');
}

static void on_leave(void *arg, wrk_usbdev *dev)
{
    drv *d = arg;
    if (d->in_call)
        violation(d, "leave inside an op");
    for (int i = 0; i < d->n; i++)
        if (d->b[i].dev == dev) {
            board *b = &d->b[i];
            b->dev = NULL;
            b->open = false;
            b->chan++;
            b->leaves++;
            note(b, 'L');
            return;
        }
    violation(d, "leave of an unknown device");
}

static void on_rx(void *arg, const uint8_t *data, size_t len)
{
    board *b = arg;
    if (b->d->in_call)
        violation(b->d, "rx inside an op");
    if (!b->open)
        violation(b->d, "rx on a closed channel");
    if (b->rxlen + len > b->rxcap) {
        size_t cap = b->rxcap ? b->rxcap * 2 : 4096;
        while (cap < b->rxlen + len)
            cap *= 2;
        b->rx = realloc(b->rx, cap);
        b->rxcap = cap;
    }
    memcpy(b->rx + b->rxlen, data, len);
    b->rxlen += len;
    b->rx_calls++;
    if (b->close_in_rx) {
        b->open = false;
        b->chan++;
        b->d->t->ops->cdc_close(b->d->t, b->dev);
    }
}

static void on_err(void *arg, const char *reason)
{
    board *b = arg;
    if (b->d->in_call)
        violation(b->d, "err inside an op");
    if (!b->open)
        violation(b->d, "err on a closed channel");
    b->errs++;
    snprintf(b->err, sizeof b->err, "%s", reason ? reason : "");
    note(b, 'E');
}

static void on_written(void *arg, int status, const char *reason)
{
    wtoken *t = arg;
    board *b = t->b;
    if (b->d->in_call)
        violation(b->d, "write done inside an op");
    if (!b->open || t->chan != b->chan)
        violation(b->d, "write done on a closed channel");
    if (t->idx != b->expect)
        violation(b->d, "writes completed out of order");
    b->expect++;
    if (t->idx < MAX_WRITES)
        b->write_status[t->idx] = status;
    if (status && reason)
        snprintf(b->write_reason, sizeof b->write_reason, "%s", reason);
    b->writes_done++;
    note(b, 'W');
}

static void on_flashed(void *arg, int status, const char *reason)
{
    board *b = arg;
    if (b->d->in_call)
        violation(b->d, "flash done inside an op");
    if (!b->flash_pending)
        violation(b->d, "flash done twice");
    b->flash_pending = false;
    b->flashes++;
    b->flash_status = status;
    snprintf(b->flash_reason, sizeof b->flash_reason, "%s", reason ? reason : "");
    note(b, 'F');
}

static const wrk_transport_events events = { on_arrive, on_leave };

/* ---- driver ---- */

static void test_options(usb_options *o)
{
    usb_options_default(o);
    o->write_timeout_ms = 10000; /* the timeout test lowers it */
}

/* The test's driver, so that a failed test's teardown can still free it: a
 * libusb context left behind would keep libusb's hotplug monitor on the old
 * testbed. */
static drv *current;

/* A testbed and a loop; the transport comes with drv_transport, so a test can
 * plug devices in before libusb looks. */
static drv *drv_bed(void)
{
    drv *d = calloc(1, sizeof *d);
    d->bed = fake_bed_new();
    d->loop = ifm_loop_new();
    current = d;
    return d;
}

static void drv_transport(drv *d, const usb_options *o)
{
    usb_options def;
    if (!o) {
        test_options(&def);
        o = &def;
    }
    d->t = usb_transport_new(d->loop, o);
    assert_non_null(d->t);
    assert_string_equal(d->t->ops->name, "libusb");
}

static drv *drv_new(const usb_options *o)
{
    drv *d = drv_bed();
    drv_transport(d, o);
    return d;
}

static void drv_release(drv *d)
{
    if (d->t) {
        d->in_call = true; /* nothing may call back while freeing */
        d->t->ops->free(d->t);
        d->t = NULL;
        d->in_call = false;
    }
    ifm_loop_free(d->loop);
    fake_bed_free(d->bed);
    for (int i = 0; i < d->n; i++)
        free(d->b[i].rx);
    current = NULL;
}

static int teardown(void **state)
{
    if (current) {
        drv_release(current);
        free(current);
    }
    return 0;
}

static void drv_start(drv *d)
{
    d->in_call = true;
    assert_int_equal(d->t->ops->start(d->t, &events, d), 0);
    d->in_call = false;
}

static void drv_free(drv *d)
{
    drv_release(d);
    int violations = d->violations;
    free(d);
    assert_int_equal(violations, 0);
}

#define RUN_UNTIL(d, cond)                                                                                             \
    do {                                                                                                               \
        uint64_t dl_ = ifm_now_ms() + DEADLINE_MS;                                                                     \
        while (!(cond)) {                                                                                              \
            if (ifm_now_ms() > dl_)                                                                                    \
                fail_msg("%s:%d: timed out waiting for %s", __FILE__, __LINE__, #cond);                                \
            ifm_loop_once((d)->loop, 5);                                                                               \
        }                                                                                                              \
    } while (0)

static int outstanding(fake_dev *f)
{
    fake_stats st;
    fake_get_stats(f, &st);
    return st.outstanding;
}

static fake_stats stats(fake_dev *f)
{
    fake_stats st;
    fake_get_stats(f, &st);
    return st;
}

static int op_open(board *b)
{
    drv *d = b->d;
    d->in_call = true;
    int rc = d->t->ops->cdc_open(d->t, b->dev, on_rx, on_err, b);
    d->in_call = false;
    if (rc == 0) {
        b->open = true;
        b->chan++;
        b->expect = b->nwrites; /* the closed channel's writes never complete */
    }
    return rc;
}

static void op_close(board *b)
{
    drv *d = b->d;
    b->open = false;
    b->chan++;
    d->in_call = true;
    d->t->ops->cdc_close(d->t, b->dev);
    d->in_call = false;
}

static int op_write(board *b, const uint8_t *data, size_t len)
{
    drv *d = b->d;
    assert_true(b->nwrites < MAX_WRITES);
    wtoken *t = &b->tok[b->nwrites];
    *t = (wtoken){ b, b->chan, b->nwrites };
    d->in_call = true;
    int rc = d->t->ops->cdc_write(d->t, b->dev, data, len, on_written, t);
    d->in_call = false;
    if (rc == 0)
        b->nwrites++;
    return rc;
}

static int op_flash(board *b, const uint8_t *img, size_t len)
{
    drv *d = b->d;
    b->flash_pending = true;
    d->in_call = true;
    int rc = d->t->ops->flash_uf2(d->t, b->dev, img, len, on_flashed, b);
    d->in_call = false;
    if (rc)
        b->flash_pending = false;
    return rc;
}

static int op_touch(board *b)
{
    drv *d = b->d;
    d->in_call = true;
    int rc = d->t->ops->touch_1200(d->t, b->dev);
    d->in_call = false;
    return rc;
}

static uint8_t *pattern(size_t len, uint32_t seed)
{
    uint8_t *p = malloc(len);
    uint32_t x = seed ? seed : 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
    return p;
}

/* ---- discovery ---- */

static void test_enumerate(void **state)
{
    drv *d = drv_bed();
    fake_dev *pico = fake_plug(d->bed, FAKE_PICO_STDIO, "E66118604B2D5F21", false);
    fake_dev *ice = fake_plug(d->bed, FAKE_PICO_ICE, "DE62A4B0E3574E2C", false);
    fake_dev *boot = fake_plug(d->bed, FAKE_BOOTSEL, "A1B2C3D4E5F60718", false);
    fake_plug(d->bed, FAKE_OTHER, "NOTABOARD", false);
    fake_dev *noser = fake_plug(d->bed, FAKE_NOSERIAL, "", false);
    drv_transport(d, NULL); /* present before libusb starts */
    drv_start(d);
    assert_int_equal(d->n, 0); /* nothing from inside start */
    RUN_UNTIL(d, d->n == 3 && d->b[0].arrivals && d->b[1].arrivals && d->b[2].arrivals);
    board *b = by_serial(d, "E66118604B2D5F21", false);
    assert_non_null(b);
    assert_int_equal(b->info.vid, 0x2e8a);
    assert_int_equal(b->info.pid, 0x0009);
    b = by_serial(d, "DE62A4B0E3574E2C", false);
    assert_non_null(b);
    assert_int_equal(b->info.vid, 0x1209);
    assert_int_equal(b->info.pid, 0xb1c0);
    b = by_serial(d, "A1B2C3D4E5F60718", false);
    assert_non_null(b);
    assert_int_equal(b->info.pid, 0x000f);
    /* The serial came from the string descriptor (language id first). */
    assert_int_equal(stats(pico).string_requests, 1);
    assert_int_equal(stats(pico).langid_requests, 1);
    assert_int_equal(stats(ice).string_requests, 1);
    assert_int_equal(stats(boot).string_requests, 1);
    assert_int_equal(stats(noser).string_requests, 0);
    /* The unrelated device and the one without a serial never arrive. */
    RUN_UNTIL(d, outstanding(pico) == 0 && outstanding(noser) == 0);
    assert_int_equal(d->n, 3);
    drv_free(d);
}

static void hotplug_cycle(bool rescan)
{
    usb_options o;
    test_options(&o);
    o.force_rescan = rescan;
    o.rescan_ms = 5;
    drv *d = drv_new(&o);
    drv_start(d);
    assert_int_equal(usb_transport_uses_hotplug(d->t), !rescan);
    fake_dev *f = fake_plug(d->bed, FAKE_PICO_ICE, "0123456789ABCDEF", true);
    RUN_UNTIL(d, d->n == 1 && d->b[0].arrivals == 1);
    board *b = &d->b[0];
    assert_string_equal(b->serial, "0123456789ABCDEF");
    fake_unplug(f);
    RUN_UNTIL(d, b->leaves == 1);
    assert_null(b->dev);
    /* Back, at a new address: a new enumeration with the same identity. */
    fake_plug(d->bed, FAKE_PICO_ICE, "0123456789ABCDEF", true);
    RUN_UNTIL(d, b->arrivals == 2);
    assert_non_null(b->dev);
    assert_int_equal(b->leaves, 1);
    assert_string_equal(b->events, "ALA");
    drv_free(d);
}

static void test_hotplug(void **state)
{
    hotplug_cycle(false);
}

static void test_rescan(void **state)
{
    hotplug_cycle(true);
}

/* ---- CDC ---- */

static board *open_board(drv *d, fake_kind kind, const char *serial, fake_dev **out)
{
    fake_dev *f = fake_plug(d->bed, kind, serial, true);
    board *b = NULL;
    RUN_UNTIL(d, (b = by_serial(d, serial, false)) != NULL && b->dev);
    assert_int_equal(op_open(b), 0);
    *out = f;
    return b;
}

static void test_cdc_echo(void **state)
{
    usb_options o;
    test_options(&o);
    o.write_chunk = 512; /* 8 packets: chunking is visible */
    drv *d = drv_new(&o);
    drv_start(d);
    fake_dev *f;
    board *b = open_board(d, FAKE_PICO_STDIO, "E66118604B2D5F21", &f);
    /* Claimed both interfaces, took them from cdc_acm, 115200 8N1, DTR up. */
    RUN_UNTIL(d, stats(f).lines == 1);
    fake_stats st = stats(f);
    assert_int_equal(st.claimed & 3u, 3u);
    assert_int_equal(st.driver_bound & 3u, 0u);
    assert_int_equal(st.disconnect_claims, 2);
    assert_int_equal(st.baud, 115200);
    assert_int_equal(st.line_history[0], 1);

    /* The board prints; rx gets it. */
    fake_print(f, "default firmware\r\n", 18);
    RUN_UNTIL(d, b->rxlen == 18);
    assert_memory_equal(b->rx, "default firmware\r\n", 18);
    b->rxlen = 0;

    /* Three writes, echoed: in order, intact, chunked. */
    static const size_t sizes[3] = { 1, 5000, 104090 };
    uint8_t *bufs[3];
    size_t total = 0;
    for (int i = 0; i < 3; i++) {
        bufs[i] = pattern(sizes[i], 7u + (uint32_t)i);
        assert_int_equal(op_write(b, bufs[i], sizes[i]), 0);
        total += sizes[i];
    }
    assert_int_equal(b->writes_done, 0); /* not from inside the call */
    RUN_UNTIL(d, b->writes_done == 3 && b->rxlen == total);
    for (int i = 0; i < 3; i++)
        assert_int_equal(b->write_status[i], 0);
    size_t off = 0;
    for (int i = 0; i < 3; i++) {
        assert_memory_equal(b->rx + off, bufs[i], sizes[i]);
        off += sizes[i];
    }
    uint8_t *got = malloc(total);
    assert_int_equal(fake_received(f, got, total), total);
    off = 0;
    for (int i = 0; i < 3; i++) {
        assert_memory_equal(got + off, bufs[i], sizes[i]);
        off += sizes[i];
    }
    free(got);
    st = stats(f);
    assert_int_equal(st.max_out_urb, 512);
    assert_true(st.out_urbs >= (int)(104090 / 512));
    /* A zero-length write completes too, in order. */
    assert_int_equal(op_write(b, (const uint8_t *)"", 0), 0);
    RUN_UNTIL(d, b->writes_done == 4);
    assert_int_equal(b->errs, 0);
    for (int i = 0; i < 3; i++)
        free(bufs[i]);
    drv_free(d);
}

static void test_cdc_close_cancels(void **state)
{
    drv *d = drv_new(NULL);
    drv_start(d);
    fake_dev *f;
    board *b = open_board(d, FAKE_PICO_ICE, "CAFEF00DCAFEF00D", &f);
    RUN_UNTIL(d, stats(f).lines == 1);
    /* A hung board: writes never drain. Two queued, IN transfers pending. */
    fake_set_hold_out(f, true);
    uint8_t *buf = pattern(10000, 3);
    assert_int_equal(op_write(b, buf, 10000), 0);
    assert_int_equal(op_write(b, buf, 100), 0);
    RUN_UNTIL(d, stats(f).out_urbs >= 1);
    op_close(b);
    /* Cancellation completes asynchronously; wait until every URB was
     * discarded and reaped, then nothing may have been called. */
    RUN_UNTIL(d, outstanding(f) == 0 && stats(f).lines == 0);
    fake_stats st = stats(f);
    assert_true(st.discards >= 3); /* 2 IN + the OUT in flight */
    assert_int_equal(b->writes_done, 0);
    assert_int_equal(b->errs, 0);
    fake_print(f, "late\r\n", 6);
    fake_set_hold_out(f, false);
    assert_int_equal(b->rxlen, 0);

    /* Reopen: the bytes printed while closed arrive, and echo works again. */
    assert_int_equal(op_open(b), 0);
    RUN_UNTIL(d, b->rxlen >= 6);
    assert_memory_equal(b->rx, "late\r\n", 6);
    b->rxlen = 0;
    int before = b->writes_done;
    assert_int_equal(op_write(b, buf, 300), 0);
    RUN_UNTIL(d, b->writes_done == before + 1 && b->rxlen == 300);
    assert_memory_equal(b->rx, buf, 300);

    /* Closed from inside rx: nothing after, even with more data waiting. */
    b->close_in_rx = true;
    b->rxlen = 0;
    b->rx_calls = 0;
    fake_print(f, "one\r\n", 5);
    RUN_UNTIL(d, b->rx_calls > 0 && !b->open && outstanding(f) == 0);
    size_t seen = b->rxlen;
    fake_print(f, "two\r\n", 5);
    assert_int_equal(b->rxlen, seen);
    assert_int_equal(b->errs, 0);
    free(buf);
    drv_free(d);
}

static void test_cdc_write_timeout(void **state)
{
    usb_options o;
    test_options(&o);
    o.write_timeout_ms = 30;
    drv *d = drv_new(&o);
    drv_start(d);
    fake_dev *f;
    board *b = open_board(d, FAKE_PICO_ICE, "7E57000000000001", &f);
    fake_set_hold_out(f, true);
    uint8_t *buf = pattern(5000, 9);
    assert_int_equal(op_write(b, buf, 5000), 0);
    assert_int_equal(op_write(b, buf, 10), 0);
    RUN_UNTIL(d, b->errs == 1);
    /* Both writes failed first, in order, then err once. */
    assert_int_equal(b->writes_done, 2);
    assert_int_equal(b->write_status[0], -ETIMEDOUT);
    assert_int_equal(b->write_status[1], -ETIMEDOUT);
    assert_string_equal(b->events + b->nevents - 3, "WWE");
    assert_non_null(strstr(b->err, "timed out"));
    assert_true(stats(f).discards >= 1); /* libusb cancelled the URB */
    /* The channel is dead until closed. */
    assert_int_equal(op_write(b, buf, 10), -EIO);
    op_close(b);
    RUN_UNTIL(d, outstanding(f) == 0);
    assert_int_equal(b->errs, 1);
    free(buf);
    drv_free(d);
}

static void test_cdc_stall(void **state)
{
    drv *d = drv_new(NULL);
    drv_start(d);
    fake_dev *f;
    board *b = open_board(d, FAKE_PICO_STDIO, "57A1100000000002", &f);
    RUN_UNTIL(d, stats(f).lines == 1);
    fake_set_hold_out(f, true);
    uint8_t one = 'x';
    assert_int_equal(op_write(b, &one, 1), 0);
    RUN_UNTIL(d, stats(f).out_urbs == 1);
    fake_stall_in(f);
    RUN_UNTIL(d, b->errs == 1);
    assert_non_null(strstr(b->err, "stalled"));
    assert_int_equal(b->writes_done, 1);
    assert_int_equal(b->write_status[0], -EPIPE);
    RUN_UNTIL(d, outstanding(f) == 0);
    fake_print(f, "after\r\n", 7);
    assert_int_equal(b->rxlen, 0);
    op_close(b);
    drv_free(d);
}

static void test_unplug_with_channel_open(void **state)
{
    drv *d = drv_new(NULL);
    drv_start(d);
    fake_dev *f;
    board *b = open_board(d, FAKE_PICO_ICE, "0DDBA11000000003", &f);
    RUN_UNTIL(d, stats(f).lines == 1);
    fake_set_hold_out(f, true);
    uint8_t buf[64] = { 0 };
    assert_int_equal(op_write(b, buf, sizeof buf), 0);
    RUN_UNTIL(d, stats(f).out_urbs == 1);
    /* usbfs sees the disconnect before udev announces it: the transfers end
     * with NO_DEVICE, and that alone makes the board leave, silently. */
    fake_kill(f);
    RUN_UNTIL(d, b->leaves == 1);
    assert_int_equal(b->errs, 0);
    assert_int_equal(b->writes_done, 0);
    /* The late announcement changes nothing. */
    fake_remove(f);
    RUN_UNTIL(d, outstanding(f) == 0);
    fake_plug(d->bed, FAKE_PICO_ICE, "0DDBA11000000003", true);
    RUN_UNTIL(d, b->arrivals == 2);
    assert_int_equal(b->leaves, 1);
    drv_free(d);
}

static void test_remove_with_channel_open(void **state)
{
    drv *d = drv_new(NULL);
    drv_start(d);
    fake_dev *f;
    board *b = open_board(d, FAKE_PICO_STDIO, "0DDBA11000000004", &f);
    RUN_UNTIL(d, stats(f).lines == 1);
    fake_set_hold_out(f, true);
    uint8_t buf[64] = { 0 };
    assert_int_equal(op_write(b, buf, sizeof buf), 0);
    RUN_UNTIL(d, stats(f).out_urbs == 1);
    /* This time udev speaks first, while usbfs still answers: the leave comes
     * from hotplug, the channel's transfers are cancelled, nobody is called. */
    fake_remove(f);
    RUN_UNTIL(d, b->leaves == 1);
    RUN_UNTIL(d, outstanding(f) == 0);
    assert_true(stats(f).discards >= 3);
    assert_int_equal(b->errs, 0);
    assert_int_equal(b->writes_done, 0);
    fake_print(f, "ghost\r\n", 7);
    fake_set_hold_out(f, false);
    assert_int_equal(b->rxlen, 0);
    drv_free(d);
}

/* ---- the 1200-baud touch ---- */

static void test_touch_1200(void **state)
{
    drv *d = drv_new(NULL);
    drv_start(d);
    fake_dev *f = fake_plug(d->bed, FAKE_PICO_STDIO, "B00757E100000004", true);
    board *b = NULL;
    RUN_UNTIL(d, (b = by_serial(d, "B00757E100000004", false)) != NULL && b->dev);
    assert_int_equal(op_touch(b), 0);
    RUN_UNTIL(d, stats(f).touched && stats(f).line_states >= 2);
    fake_stats st = stats(f);
    assert_int_equal(st.baud, 1200);
    assert_int_equal(st.line_history[0], 3); /* DTR|RTS, then dropped */
    assert_int_equal(st.line_history[1], 0);
    assert_int_equal(st.driver_bound & 1u, 0u); /* cdc_acm detached from interface 0 */
    /* The firmware reboots into BOOTSEL: same serial, bootrom ids. */
    fake_unplug(f);
    fake_plug(d->bed, FAKE_BOOTSEL, "B00757E100000004", true);
    RUN_UNTIL(d, b->arrivals == 2);
    assert_int_equal(b->leaves, 1);
    assert_int_equal(b->info.vid, 0x2e8a);
    assert_int_equal(b->info.pid, 0x000f);
    /* The bootrom has no CDC. */
    assert_int_equal(op_touch(b), -EOPNOTSUPP);
    assert_int_equal(op_open(b), -EOPNOTSUPP);
    drv_free(d);
}

/* ---- PICOBOOT ---- */

static board *bootsel_board(drv *d, const char *serial, fake_dev **out)
{
    *out = fake_plug(d->bed, FAKE_BOOTSEL, serial, true);
    board *b = NULL;
    RUN_UNTIL(d, (b = by_serial(d, serial, false)) != NULL && b->dev);
    return b;
}

static void test_flash(void **state)
{
    drv *d = drv_new(NULL);
    drv_start(d);
    fake_dev *f;
    board *b = bootsel_board(d, "F1A5400000000005", &f);
    size_t len;
    uint8_t *img = sim_fw_build_uf2(SIM_FW_PULSECOUNT, &len);
    assert_non_null(img);
    uf2_image want;
    char why[UF2_REASON_MAX];
    assert_int_equal(uf2_parse(img, len, UF2_TARGET_RP2350, &want, why), 0);
    assert_int_equal(op_flash(b, img, len), 0);
    free(img); /* the transport parsed (copied) it */
    assert_int_equal(b->flashes, 0);
    RUN_UNTIL(d, b->flashes == 1);
    assert_int_equal(b->flash_status, 0);
    fake_stats st = stats(f);
    assert_true(st.pb_exclusive);
    assert_true(st.pb_xip_exited);
    assert_true(st.pb_xip_entered);
    assert_int_equal(st.pb_erases, 1);
    assert_int_equal(st.pb_writes, (int)((want.len + 255) / 256));
    assert_int_equal(st.pb_reads, (int)((want.len + 4095) / 4096));
    assert_true(st.rebooted);
    assert_int_equal(st.reboot_flags, 0);
    assert_int_equal(st.reboot_delay, 500);
    assert_int_equal(st.pb_ids[0], 0x01);
    assert_int_equal(st.pb_ids[1], 0x06);
    assert_int_equal(st.pb_ids[2], 0x03);
    assert_int_equal(st.pb_ids[3], 0x05);
    uint8_t *flash = malloc(want.len);
    fake_flash_read(f, want.base, flash, want.len);
    assert_memory_equal(flash, want.data, want.len);
    /* Only the sectors the image covers were erased: past them, the old image. */
    uint8_t tail;
    fake_flash_read(f, (want.base + (uint32_t)want.len + 4095u) / 4096u * 4096u, &tail, 1);
    assert_int_equal(tail, 0x5a);
    free(flash);
    /* The board reboots into the image: leave, arrive with the firmware's ids. */
    fake_unplug(f);
    fake_plug(d->bed, FAKE_PICO_ICE, "F1A5400000000005", true);
    RUN_UNTIL(d, b->arrivals == 2);
    assert_int_equal(b->info.vid, 0x1209);
    assert_string_equal(b->events, "AFLA");
    uf2_image_free(&want);
    drv_free(d);
}

static void test_flash_invalid(void **state)
{
    drv *d = drv_new(NULL);
    drv_start(d);
    fake_dev *f;
    board *b = bootsel_board(d, "BADF1A5400000006", &f);
    uint8_t junk[1024];
    memset(junk, 0x42, sizeof junk);
    assert_int_equal(op_flash(b, junk, sizeof junk), 0);
    assert_int_equal(b->flashes, 0);
    RUN_UNTIL(d, b->flashes == 1);
    assert_int_equal(b->flash_status, -EINVAL);
    assert_non_null(strstr(b->flash_reason, "invalid UF2"));
    assert_int_equal(stats(f).pb_cmds, 0);
    /* Not in BOOTSEL: refused at once. */
    fake_plug(d->bed, FAKE_PICO_STDIO, "0000000000000007", true);
    board *p = NULL;
    RUN_UNTIL(d, (p = by_serial(d, "0000000000000007", false)) != NULL && p->dev);
    size_t len;
    uint8_t *img = sim_fw_build_uf2(SIM_FW_DEFAULT, &len);
    assert_int_equal(op_flash(p, img, len), -EOPNOTSUPP);
    /* Writes without an open channel; double open. */
    assert_int_equal(op_write(p, img, 10), -ENOTCONN);
    assert_int_equal(op_open(p), 0);
    d->in_call = true;
    assert_int_equal(d->t->ops->cdc_open(d->t, p->dev, on_rx, on_err, p), -EBUSY);
    d->in_call = false;
    free(img);
    drv_free(d);
}

static void flash_fault(int fault)
{
    drv *d = drv_new(NULL);
    drv_start(d);
    fake_dev *f;
    board *b = bootsel_board(d, "FA0170000000000A", &f);
    size_t len;
    uint8_t *img = sim_fw_build_uf2(SIM_FW_VARIANCE, &len);
    if (fault == 0)
        fake_pb_corrupt_read_at(f, FAKE_FLASH_BASE + 5000);
    else
        fake_pb_fail_write_at(f, FAKE_FLASH_BASE + 0x1000);
    assert_int_equal(op_flash(b, img, len), 0);
    free(img);
    RUN_UNTIL(d, b->flashes == 1);
    assert_int_equal(b->flash_status, -EIO);
    if (fault == 0) {
        assert_non_null(strstr(b->flash_reason, "verify failed at 0x10001388"));
    } else {
        assert_non_null(strstr(b->flash_reason, "WRITE 0x10001000"));
        assert_non_null(strstr(b->flash_reason, "invalid address"));
    }
    assert_false(stats(f).rebooted);
    assert_int_equal(b->leaves, 0);
    drv_free(d);
}

static void test_flash_verify_mismatch(void **state)
{
    flash_fault(0);
}

static void test_flash_refused(void **state)
{
    flash_fault(1);
}

static void test_flash_leave(void **state)
{
    drv *d = drv_new(NULL);
    drv_start(d);
    fake_dev *f;
    board *b = bootsel_board(d, "1EAF000000000008", &f);
    fake_pb_hang_erase(f, true);
    size_t len;
    uint8_t *img = sim_fw_build_uf2(SIM_FW_DEFAULT, &len);
    assert_int_equal(op_flash(b, img, len), 0);
    free(img);
    RUN_UNTIL(d, stats(f).pb_erases == 1);
    fake_unplug(f);
    RUN_UNTIL(d, b->leaves == 1);
    assert_int_equal(b->flashes, 1);
    assert_int_equal(b->flash_status, -ENODEV);
    assert_string_equal(b->events, "AFL"); /* done before leave, as in the sim */
    drv_free(d);
}

static void test_free_midflight(void **state)
{
    drv *d = drv_new(NULL);
    drv_start(d);
    fake_dev *f, *boot;
    board *b = open_board(d, FAKE_PICO_STDIO, "F4EE000000000009", &f);
    board *fb = bootsel_board(d, "F4EE00000000000A", &boot);
    RUN_UNTIL(d, stats(f).lines == 1);
    fake_set_hold_out(f, true);
    uint8_t *buf = pattern(8192, 5);
    assert_int_equal(op_write(b, buf, 8192), 0);
    fake_pb_hang_erase(boot, true);
    size_t len;
    uint8_t *img = sim_fw_build_uf2(SIM_FW_DEFAULT, &len);
    assert_int_equal(op_flash(fb, img, len), 0);
    free(img);
    RUN_UNTIL(d, stats(f).out_urbs >= 1 && stats(boot).pb_erases == 1);
    /* Freeing with transfers in flight: they are cancelled and reaped, no
     * callback runs (drv_free flags any), ASan sees no leak. The claimed
     * interfaces go back to cdc_acm. */
    d->in_call = true;
    d->t->ops->free(d->t);
    d->t = NULL;
    d->in_call = false;
    free(buf);
    assert_int_equal(outstanding(f), 0);
    assert_int_equal(outstanding(boot), 0);
    assert_int_equal(stats(f).driver_bound & 3u, 3u);
    assert_int_equal(b->writes_done, 0);
    assert_int_equal(fb->flashes, 0);
    drv_free(d);
}

int main(int argc, char **argv)
{
    /* umockdev needs its preload library in this process. */
    const char *pre = getenv("LD_PRELOAD");
    if (!pre || !strstr(pre, "libumockdev-preload")) {
        char val[1024];
        snprintf(val, sizeof val, "libumockdev-preload.so.0%s%s", pre ? ":" : "", pre ? pre : "");
        setenv("LD_PRELOAD", val, 1);
        execv("/proc/self/exe", argv);
        perror("re-exec under libumockdev-preload");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_enumerate, teardown),
        cmocka_unit_test_teardown(test_hotplug, teardown),
        cmocka_unit_test_teardown(test_rescan, teardown),
        cmocka_unit_test_teardown(test_cdc_echo, teardown),
        cmocka_unit_test_teardown(test_cdc_close_cancels, teardown),
        cmocka_unit_test_teardown(test_cdc_write_timeout, teardown),
        cmocka_unit_test_teardown(test_cdc_stall, teardown),
        cmocka_unit_test_teardown(test_unplug_with_channel_open, teardown),
        cmocka_unit_test_teardown(test_remove_with_channel_open, teardown),
        cmocka_unit_test_teardown(test_touch_1200, teardown),
        cmocka_unit_test_teardown(test_flash, teardown),
        cmocka_unit_test_teardown(test_flash_invalid, teardown),
        cmocka_unit_test_teardown(test_flash_verify_mismatch, teardown),
        cmocka_unit_test_teardown(test_flash_refused, teardown),
        cmocka_unit_test_teardown(test_flash_leave, teardown),
        cmocka_unit_test_teardown(test_free_midflight, teardown),
    };
    if (getenv("WRK_USB_TEST")) /* e.g. WRK_USB_TEST=test_flash* */
        cmocka_set_test_filter(getenv("WRK_USB_TEST"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
