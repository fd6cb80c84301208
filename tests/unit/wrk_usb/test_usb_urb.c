/* The libusb backend at the URB level (transport.h), against fake boards in a
 * umockdev testbed (fake_usb.h): descriptors without I/O, claim with the
 * kernel driver detached and release without reattaching it, control URBs
 * (descriptors, CDC line coding and line state), bulk URBs many in flight
 * (echo), cancel, interrupt URBs that never complete, and a device that goes
 * with URBs in flight: each completes with -ENODEV before `leave`.
 *
 * Must run with libumockdev-preload; main() re-executes itself under it. */
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
#include "icefarm/usbip.h"
#include "transport.h"
#include "usb_transport.h"

#define DEADLINE_MS 20000

typedef struct {
    ifm_loop *loop;
    wrk_transport *t;
    fake_bed *bed;
    wrk_usbdev *dev;
    int arrivals, leaves;
    bool in_op;
    int violations;
    char events[64]; /* A arrive, L leave, U a URB completed */
    size_t nevents;
} harness;

typedef struct {
    harness *h;
    int done, status;
    uint32_t actual;
    uint8_t data[512];
} rec;

static harness *current;

static void event(harness *h, char c)
{
    if (h->nevents + 1 < sizeof h->events)
        h->events[h->nevents++] = c;
}

static void on_arrive(void *arg, wrk_usbdev *dev, const wrk_usbinfo *info)
{
    harness *h = arg;
    h->violations += h->in_op;
    h->dev = dev;
    h->arrivals++;
    event(h, 'A');
}

static void on_leave(void *arg, wrk_usbdev *dev)
{
    harness *h = arg;
    h->violations += h->in_op || dev != h->dev;
    h->dev = NULL;
    h->leaves++;
    event(h, 'L');
}

static const wrk_transport_events events = { on_arrive, on_leave };

static void on_done(wrk_urb *u)
{
    rec *r = u->arg;
    r->h->violations += r->h->in_op;
    r->done++;
    r->status = u->status;
    r->actual = u->actual;
    if ((u->ep & 0x80) && u->actual <= sizeof r->data)
        memcpy(r->data, u->buf, u->actual);
    event(r->h, 'U');
}

#define RUN_UNTIL(h, cond)                                                                                             \
    do {                                                                                                               \
        uint64_t dl_ = ifm_now_ms() + DEADLINE_MS;                                                                     \
        while (!(cond)) {                                                                                              \
            if (ifm_now_ms() > dl_)                                                                                    \
                fail_msg("%s:%d: timed out waiting for %s", __FILE__, __LINE__, #cond);                                \
            ifm_loop_once((h)->loop, 5);                                                                               \
        }                                                                                                              \
    } while (0)

static harness *harness_new(fake_kind kind, fake_dev **fd)
{
    harness *h = calloc(1, sizeof *h);
    current = h;
    h->bed = fake_bed_new();
    h->loop = ifm_loop_new();
    *fd = fake_plug(h->bed, kind, "E6614C311B4B8F2C", false);
    usb_options o;
    usb_options_default(&o);
    h->t = usb_transport_new(h->loop, &o);
    assert_non_null(h->t);
    h->in_op = true;
    assert_int_equal(h->t->ops->start(h->t, &events, h), 0);
    h->in_op = false;
    RUN_UNTIL(h, h->dev != NULL);
    return h;
}

static void harness_release(harness *h)
{
    if (h->t)
        h->t->ops->free(h->t);
    h->t = NULL;
    ifm_loop_free(h->loop);
    fake_bed_free(h->bed);
    current = NULL;
}

static int teardown(void **state)
{
    if (current) {
        harness_release(current);
        free(current);
    }
    return 0;
}

static void harness_free(harness *h)
{
    harness_release(h);
    int v = h->violations;
    free(h);
    assert_int_equal(v, 0);
}

static wrk_urb *urb(harness *h, uint8_t type, uint8_t ep, size_t size, rec *r)
{
    wrk_urb *u = h->t->ops->urb_alloc(h->t, h->dev, size);
    assert_non_null(u);
    memset(r, 0, sizeof *r);
    r->h = h;
    u->type = type;
    u->ep = ep;
    u->len = (uint32_t)size;
    u->done = on_done;
    u->arg = r;
    return u;
}

static int submit(harness *h, wrk_urb *u)
{
    h->in_op = true;
    int rc = h->t->ops->urb_submit(h->t, u);
    h->in_op = false;
    return rc;
}

static int ctrl(harness *h, uint8_t rt, uint8_t req, uint16_t value, uint16_t index, uint16_t len, const void *out,
                rec *r)
{
    wrk_urb *u = urb(h, WRK_EP_CONTROL, rt & 0x80, len, r);
    ifm_usb_setup s = { rt, req, value, index, len };
    ifm_usb_setup_put(&s, u->setup);
    if (out && len)
        memcpy(u->buf, out, len);
    assert_int_equal(submit(h, u), 0);
    RUN_UNTIL(h, r->done == 1);
    h->t->ops->urb_free(h->t, u);
    return r->status;
}

static fake_stats stats(fake_dev *f)
{
    fake_stats st;
    fake_get_stats(f, &st);
    return st;
}

static void test_descriptors_and_claims(void **state)
{
    fake_dev *fd;
    harness *h = harness_new(FAKE_PICO_ICE, &fd);
    const wrk_transport_ops *ops = h->t->ops;
    wrk_usb_desc d;
    assert_int_equal(ops->usb_desc(h->t, h->dev, &d), 0);
    assert_int_equal(d.busnum, 1);
    assert_true(d.devnum >= 2);
    assert_int_equal(d.speed, IFM_USBIP_SPEED_FULL);
    assert_int_equal(d.device[8] | d.device[9] << 8, 0x1209);
    assert_int_equal(d.device[10] | d.device[11] << 8, 0xb1c0);
    assert_int_equal(d.config_value, 1);
    assert_int_equal(d.nifaces, 5);
    assert_int_equal(d.iface[0].cls, 2);
    assert_int_equal(d.iface[3].cls, 0x0a);
    assert_int_equal(d.iface[4].cls, 0xfe);
    assert_non_null(strstr(d.path, "usb1/"));
    wrk_usb_ep eps[4];
    assert_int_equal(ops->usb_endpoints(h->t, h->dev, 1, 0, eps, 4), 2);
    assert_int_equal(eps[0].addr, 0x02);
    assert_int_equal(eps[0].type, WRK_EP_BULK);
    assert_int_equal(eps[1].addr, 0x82);
    assert_int_equal(ops->usb_endpoints(h->t, h->dev, 0, 0, eps, 4), 1);
    assert_int_equal(eps[0].type, WRK_EP_INTERRUPT);
    assert_int_equal(ops->usb_endpoints(h->t, h->dev, 9, 0, eps, 4), -ENOENT);

    /* claim detaches cdc_acm; release does not give it back (the device is exported) */
    assert_int_equal(stats(fd).driver_bound & 0x3, 0x3);
    for (uint8_t i = 0; i < 5; i++)
        assert_int_equal(ops->usb_claim(h->t, h->dev, i), 0);
    fake_stats st = stats(fd);
    assert_int_equal(st.claimed & 0x1f, 0x1f);
    assert_int_equal(st.driver_bound, 0);
    assert_int_equal(ops->usb_release(h->t, h->dev, 1), 0);
    st = stats(fd);
    assert_int_equal(st.claimed & 0x2, 0);
    assert_int_equal(st.driver_bound, 0);
    assert_int_equal(ops->usb_release(h->t, h->dev, 1), -ENOENT);
    assert_int_equal(ops->usb_set_config(h->t, h->dev, 1), 0); /* already: nothing to do */
    assert_int_equal(ops->usb_set_altsetting(h->t, h->dev, 0, 0), 0);
    assert_int_equal(ops->usb_clear_halt(h->t, h->dev, 0x82), 0);
    assert_int_equal(ops->usb_reset(h->t, h->dev), 0);
    harness_free(h);
}

static void test_control_and_bulk(void **state)
{
    fake_dev *fd;
    harness *h = harness_new(FAKE_PICO_ICE, &fd);
    const wrk_transport_ops *ops = h->t->ops;
    for (uint8_t i = 0; i < 2; i++)
        assert_int_equal(ops->usb_claim(h->t, h->dev, i), 0);
    rec r;
    assert_int_equal(ctrl(h, 0x80, 6, 0x0100, 0, 64, NULL, &r), 0);
    assert_int_equal(r.actual, 18);
    assert_int_equal(r.data[10] | r.data[11] << 8, 0xb1c0);
    assert_int_equal(ctrl(h, 0x80, 6, 0x0303, 0x0409, 255, NULL, &r), 0);
    assert_int_equal(r.actual, 2 + 2 * 16);
    assert_int_equal(r.data[2], 'E');
    const uint8_t lc[7] = { 0x00, 0xc2, 0x01, 0x00, 0, 0, 8 };
    assert_int_equal(ctrl(h, 0x21, 0x20, 0, 0, 7, lc, &r), 0);
    assert_int_equal(r.actual, 7);
    assert_int_equal(ctrl(h, 0x21, 0x22, 3, 0, 0, NULL, &r), 0);
    fake_stats st = stats(fd);
    assert_int_equal(st.baud, 115200);
    assert_int_equal(st.lines, 3);
    assert_int_equal(ctrl(h, 0xc0, 0x33, 0, 0, 4, NULL, &r), -EPIPE); /* a vendor request the device stalls */

    /* 4 reads in flight, one write: the echo lands in the first read */
    rec in[4], out;
    wrk_urb *iu[4];
    for (int i = 0; i < 4; i++) {
        iu[i] = urb(h, WRK_EP_BULK, 0x82, 64, &in[i]);
        assert_int_equal(submit(h, iu[i]), 0);
    }
    wrk_urb *ou = urb(h, WRK_EP_BULK, 0x02, 10, &out);
    memcpy(ou->buf, "hello pico", 10);
    ou->flags = WRK_URB_ZERO_PACKET;
    assert_int_equal(submit(h, ou), 0);
    RUN_UNTIL(h, out.done == 1 && in[0].done == 1);
    assert_int_equal(out.status, 0);
    assert_int_equal(out.actual, 10);
    assert_int_equal(in[0].status, 0);
    assert_int_equal(in[0].actual, 10);
    assert_memory_equal(in[0].data, "hello pico", 10);
    /* cancel a pending read */
    assert_int_equal(in[1].done, 0);
    h->in_op = true;
    assert_int_equal(ops->urb_cancel(h->t, iu[1]), 0);
    h->in_op = false;
    RUN_UNTIL(h, in[1].done == 1);
    assert_int_equal(in[1].status, -ECONNRESET);
    assert_int_equal(ops->urb_cancel(h->t, iu[1]), -ENOENT);
    assert_true(stats(fd).discards >= 1);
    /* and again through the same URB */
    in[1].done = 0;
    assert_int_equal(submit(h, iu[1]), 0);
    fake_print(fd, "again", 5);
    RUN_UNTIL(h, in[1].done + in[2].done + in[3].done >= 1);
    ops->urb_free(h->t, ou);
    ops->urb_free(h->t, iu[0]);
    /* the rest are freed while still in flight: the backend finishes them */
    for (int i = 1; i < 4; i++)
        ops->urb_free(h->t, iu[i]);
    harness_free(h);
}

static void test_unplug_in_flight(void **state)
{
    fake_dev *fd;
    harness *h = harness_new(FAKE_PICO_ICE, &fd);
    const wrk_transport_ops *ops = h->t->ops;
    assert_int_equal(ops->usb_claim(h->t, h->dev, 0), 0);
    assert_int_equal(ops->usb_claim(h->t, h->dev, 1), 0);
    rec in[3], intr;
    wrk_urb *u[3];
    for (int i = 0; i < 3; i++) {
        u[i] = urb(h, WRK_EP_BULK, 0x82, 64, &in[i]);
        assert_int_equal(submit(h, u[i]), 0);
    }
    wrk_urb *iu = urb(h, WRK_EP_INTERRUPT, 0x81, 8, &intr);
    assert_int_equal(submit(h, iu), 0);
    h->nevents = 0;
    fake_unplug(fd);
    RUN_UNTIL(h, h->leaves == 1);
    /* every URB completed, with -ENODEV, before the leave */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(in[i].done, 1);
        assert_int_equal(in[i].status, -ENODEV);
    }
    assert_int_equal(intr.done, 1);
    assert_int_equal(intr.status, -ENODEV);
    assert_string_equal(h->events, "UUUUL");
    /* URBs outlive their device safely */
    for (int i = 0; i < 3; i++)
        ops->urb_free(h->t, u[i]);
    ops->urb_free(h->t, iu);
    harness_free(h);
}

int main(int argc, char **argv)
{
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
        cmocka_unit_test_teardown(test_descriptors_and_claims, teardown),
        cmocka_unit_test_teardown(test_control_and_bulk, teardown),
        cmocka_unit_test_teardown(test_unplug_in_flight, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
