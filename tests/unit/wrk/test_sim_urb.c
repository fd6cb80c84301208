/* The simulated board at the URB level (transport.h): its three USB identities,
 * the standard and CDC requests, bulk endpoints carrying the firmware protocol,
 * CDC1's loopback, the 1200-baud touch re-enumerating into BOOTSEL, cancel,
 * completions before leave, the URB faults and the server hooks. */
#include <errno.h>
#include <string.h>

#include "icefarm/usbip.h"
#include "sim_driver.h"

typedef struct {
    drv_board *b;
    int done;
    int status;
    uint32_t actual;
    uint8_t data[4096];
    bool inside; /* done ran inside an op: a contract breach */
} rec;

static bool g_in_op;

static void on_done(wrk_urb *u)
{
    rec *r = u->arg;
    r->done++;
    r->status = u->status;
    r->actual = u->actual;
    r->inside |= g_in_op;
    if (u->actual && u->actual <= sizeof r->data && (u->ep & 0x80))
        memcpy(r->data, u->buf, u->actual);
}

static const wrk_transport_ops *ops(drv *d)
{
    return d->t->ops;
}

static wrk_urb *urb_new(drv_board *b, size_t size, rec *r)
{
    wrk_urb *u = ops(b->d)->urb_alloc(b->d->t, b->dev, size);
    assert_non_null(u);
    memset(r, 0, sizeof *r);
    r->b = b;
    u->done = on_done;
    u->arg = r;
    return u;
}

static int submit(drv_board *b, wrk_urb *u)
{
    g_in_op = true;
    int rc = ops(b->d)->urb_submit(b->d->t, u);
    g_in_op = false;
    return rc;
}

/* A control request, waited for. Returns its status; IN data lands in r->data. */
static int ctrl(drv_board *b, uint8_t rt, uint8_t req, uint16_t value, uint16_t index, uint16_t len, const void *out,
                rec *r)
{
    wrk_urb *u = urb_new(b, len, r);
    u->type = WRK_EP_CONTROL;
    u->ep = rt & 0x80;
    ifm_usb_setup s = { rt, req, value, index, len };
    ifm_usb_setup_put(&s, u->setup);
    if (!(rt & 0x80) && len)
        memcpy(u->buf, out, len);
    u->len = len;
    assert_int_equal(submit(b, u), 0);
    assert_int_equal(r->done, 0); /* never inside submit */
    RUN_UNTIL(b->d, r->done == 1);
    assert_false(r->inside);
    ops(b->d)->urb_free(b->d->t, u);
    return r->status;
}

/* Submit again a URB whose done has run: its record starts over. */
static int resubmit(drv_board *b, wrk_urb *u)
{
    rec *r = u->arg;
    r->done = 0;
    r->status = 0;
    r->actual = 0;
    return submit(b, u);
}

static wrk_urb *bulk(drv_board *b, uint8_t ep, const void *out, uint32_t len, rec *r)
{
    wrk_urb *u = urb_new(b, len, r);
    u->type = WRK_EP_BULK;
    u->ep = ep;
    u->len = len;
    if (!(ep & 0x80) && len)
        memcpy(u->buf, out, len);
    assert_int_equal(submit(b, u), 0);
    return u;
}

static void set_dtr(drv_board *b, uint16_t iface, bool up)
{
    rec r;
    assert_int_equal(ctrl(b, 0x21, 0x22, up ? 3 : 0, iface, 0, NULL, &r), 0);
}

/* Reads from bulk IN `ep` until the text contains `want`; returns it (static). */
static const char *read_until(drv_board *b, uint8_t ep, const char *want)
{
    static char acc[16384];
    size_t n = 0;
    acc[0] = '\0';
    uint64_t deadline = ifm_now_ms() + DRV_TIMEOUT_MS;
    while (!strstr(acc, want)) {
        rec r;
        wrk_urb *u = bulk(b, ep, NULL, 64, &r);
        while (r.done == 0 && ifm_now_ms() < deadline)
            ifm_loop_once(b->d->loop, 10);
        if (r.done == 0)
            fail_msg("timed out reading \"%s\" (have \"%s\")", want, acc);
        assert_int_equal(r.status, 0);
        if (n + r.actual >= sizeof acc) {
            size_t keep = sizeof acc / 2;
            memmove(acc, acc + n - keep, keep);
            n = keep;
        }
        memcpy(acc + n, r.data, r.actual);
        n += r.actual;
        acc[n] = '\0';
        ops(b->d)->urb_free(b->d->t, u);
    }
    return acc;
}

static drv *setup_drv(unsigned boards, sim_fw_kind fw)
{
    sim_options o;
    drv_test_options(&o, boards);
    o.initial_fw = fw;
    drv *d = drv_new(&o);
    drv_wait_boards(d, boards);
    return d;
}

static void test_default_identity(void **state)
{
    drv *d = setup_drv(1, SIM_FW_DEFAULT);
    drv_board *b = &d->b[0];
    wrk_usb_desc desc;
    assert_int_equal(ops(d)->usb_desc(d->t, b->dev, &desc), 0);
    assert_int_equal(desc.busnum, 1);
    assert_true(desc.devnum >= 2 && desc.devnum <= 127);
    assert_int_equal(desc.speed, 2);
    assert_int_equal(desc.config_value, 1);
    assert_int_equal(desc.nifaces, 3);
    assert_int_equal(desc.iface[0].cls, 2);
    assert_int_equal(desc.iface[1].cls, 0x0a);
    assert_int_equal(desc.iface[2].cls, 0xff);
    assert_int_equal(desc.device[8] | desc.device[9] << 8, 0x2e8a);
    assert_int_equal(desc.device[10] | desc.device[11] << 8, 0x0009);
    wrk_usb_ep eps[4];
    assert_int_equal(ops(d)->usb_endpoints(d->t, b->dev, 1, 0, eps, 4), 2);
    assert_int_equal(eps[0].addr, 0x02);
    assert_int_equal(eps[0].type, WRK_EP_BULK);
    assert_int_equal(eps[1].addr, 0x82);
    assert_int_equal(eps[1].max_packet, 64);
    assert_int_equal(ops(d)->usb_endpoints(d->t, b->dev, 0, 0, eps, 4), 1);
    assert_int_equal(eps[0].type, WRK_EP_INTERRUPT);
    assert_int_equal(eps[0].interval, 16);
    assert_int_equal(ops(d)->usb_endpoints(d->t, b->dev, 7, 0, eps, 4), -ENOENT);

    /* the descriptors over endpoint 0, as an enumerating host reads them */
    rec r;
    assert_int_equal(ctrl(b, 0x80, 6, 0x0100, 0, 64, NULL, &r), 0);
    assert_int_equal(r.actual, 18);
    assert_memory_equal(r.data, desc.device, 18);
    assert_int_equal(ctrl(b, 0x80, 6, 0x0200, 0, 9, NULL, &r), 0);
    assert_int_equal(r.actual, 9);
    uint16_t total = (uint16_t)(r.data[2] | r.data[3] << 8);
    assert_int_equal(r.data[4], 3);
    assert_int_equal(ctrl(b, 0x80, 6, 0x0200, 0, total, NULL, &r), 0);
    assert_int_equal(r.actual, total);
    assert_int_equal(ctrl(b, 0x80, 6, 0x0300, 0, 255, NULL, &r), 0);
    assert_int_equal(r.actual, 4);
    assert_int_equal(r.data[2] | r.data[3] << 8, 0x0409);
    assert_int_equal(ctrl(b, 0x80, 6, 0x0303, 0x0409, 255, NULL, &r), 0);
    assert_int_equal(r.actual, 2 + 2 * strlen(b->serial));
    for (size_t i = 0; i < strlen(b->serial); i++)
        assert_int_equal(r.data[2 + 2 * i], (uint8_t)b->serial[i]);
    assert_int_equal(ctrl(b, 0x80, 6, 0x0302, 0x0409, 255, NULL, &r), 0);
    assert_int_equal(r.data[2], 'P');                                    /* "Pico" */
    assert_int_equal(ctrl(b, 0x80, 6, 0x0600, 0, 10, NULL, &r), -EPIPE); /* no device qualifier at full speed */
    assert_int_equal(ctrl(b, 0x80, 6, 0x0309, 0x0409, 255, NULL, &r), -EPIPE);
    assert_int_equal(ctrl(b, 0x80, 8, 0, 0, 1, NULL, &r), 0);
    assert_int_equal(r.data[0], 1);
    assert_int_equal(ctrl(b, 0x80, 0, 0, 0, 2, NULL, &r), 0);
    assert_int_equal(r.actual, 2);
    assert_int_equal(ctrl(b, 0x00, 5, 9, 0, 0, NULL, &r), -EPIPE);    /* SET_ADDRESS */
    assert_int_equal(ctrl(b, 0xc0, 0x01, 0, 0, 4, NULL, &r), -EPIPE); /* vendor */
    assert_int_equal(ctrl(b, 0x21, 0x00, 0, 2, 0, NULL, &r), -EPIPE); /* the reset interface */

    /* DTR up: the default firmware floods its line */
    set_dtr(b, 0, true);
    read_until(b, 0x82, "default firmware\r\n");
    set_dtr(b, 0, false);
    drv_free(d);
}

static void test_pico_ice_protocol(void **state)
{
    drv *d = setup_drv(1, SIM_FW_PULSECOUNT);
    drv_board *b = &d->b[0];
    assert_int_equal(b->info.vid, 0x1209);
    assert_int_equal(b->info.pid, 0xb1c0);
    wrk_usb_desc desc;
    assert_int_equal(ops(d)->usb_desc(d->t, b->dev, &desc), 0);
    assert_int_equal(desc.nifaces, 5);
    assert_int_equal(desc.iface[4].cls, 0xfe);
    assert_int_equal(desc.iface[4].nalts, 2);
    wrk_usb_ep eps[4];
    assert_int_equal(ops(d)->usb_endpoints(d->t, b->dev, 3, 0, eps, 4), 2);
    assert_int_equal(eps[0].addr, 0x04);
    assert_int_equal(eps[1].addr, 0x84);
    assert_int_equal(ops(d)->usb_endpoints(d->t, b->dev, 4, 1, eps, 4), 0);
    for (uint8_t i = 0; i < 5; i++)
        assert_int_equal(ops(d)->usb_claim(d->t, b->dev, i), 0);
    assert_int_equal(ops(d)->usb_claim(d->t, b->dev, 5), -ENOENT);
    assert_int_equal(ops(d)->usb_set_altsetting(d->t, b->dev, 4, 1), 0);
    assert_int_equal(ops(d)->usb_set_altsetting(d->t, b->dev, 4, 2), -EINVAL);
    rec r;
    assert_int_equal(ctrl(b, 0x81, 0x0a, 0, 4, 1, NULL, &r), 0);
    assert_int_equal(r.data[0], 1);
    assert_int_equal(ctrl(b, 0x01, 0x0b, 0, 4, 0, NULL, &r), 0);
    assert_int_equal(ctrl(b, 0xa1, 0x03, 0, 4, 6, NULL, &r), -EPIPE); /* DFU_GETSTATUS: not modelled */

    /* line coding round trip on CDC0 */
    const uint8_t lc[7] = { 0x00, 0x96, 0x00, 0x00, 0, 0, 8 }; /* 38400 8N1 */
    assert_int_equal(ctrl(b, 0x21, 0x20, 0, 0, 7, lc, &r), 0);
    assert_int_equal(ctrl(b, 0xa1, 0x21, 0, 0, 7, NULL, &r), 0);
    assert_memory_equal(r.data, lc, 7);

    /* the firmware protocol: DTR, wait for the ready line, 104090 bytes in 4 KiB
     * URBs with several in flight, read the count */
    set_dtr(b, 0, true);
    read_until(b, 0x82, "Waiting for bitstream transfer\r\n");
    const uint8_t *bits = d->bits[0];
    enum {
        CHUNK = 4096,
        INFLIGHT = 4
    };
    rec wr[INFLIGHT];
    wrk_urb *w[INFLIGHT] = { 0 };
    size_t sent = 0, completed = 0;
    while (completed < BITSTREAM_SIZE) {
        for (int i = 0; i < INFLIGHT; i++) {
            if (w[i] && wr[i].done) {
                assert_int_equal(wr[i].status, 0);
                completed += wr[i].actual;
                ops(d)->urb_free(d->t, w[i]);
                w[i] = NULL;
            }
            if (!w[i] && sent < BITSTREAM_SIZE) {
                uint32_t n = BITSTREAM_SIZE - sent < CHUNK ? (uint32_t)(BITSTREAM_SIZE - sent) : CHUNK;
                w[i] = bulk(b, 0x02, bits + sent, n, &wr[i]);
                sent += n;
            }
        }
        ifm_loop_once(d->loop, 10);
    }
    char want[48];
    snprintf(want, sizeof want, "pulses: %u\r\n", (unsigned)sim_expected_pulses(bits, BITSTREAM_SIZE));
    read_until(b, 0x82, want);

    /* CDC1 loops back */
    set_dtr(b, 2, true);
    wrk_urb *o = bulk(b, 0x04, "uart loop", 9, &r);
    RUN_UNTIL(d, r.done == 1);
    assert_int_equal(r.actual, 9);
    ops(d)->urb_free(d->t, o);
    read_until(b, 0x84, "uart loop");
    drv_free(d);
}

static void test_touch_reenumerates(void **state)
{
    drv *d = setup_drv(1, SIM_FW_PULSECOUNT);
    drv_board *b = &d->b[0];
    wrk_usbdev *old = b->dev;
    int arrivals = b->arrivals, leaves = b->leaves;
    /* cdc_acm's reads in flight, as on a real host */
    rec in[3];
    wrk_urb *u[3];
    for (int i = 0; i < 3; i++)
        u[i] = bulk(b, 0x82, NULL, 128, &in[i]);
    rec intr;
    wrk_urb *iu = urb_new(b, 8, &intr);
    iu->type = WRK_EP_INTERRUPT;
    iu->ep = 0x81;
    iu->len = 8;
    assert_int_equal(submit(b, iu), 0);
    const uint8_t lc1200[7] = { 0xb0, 0x04, 0, 0, 0, 0, 8 };
    rec r;
    assert_int_equal(ctrl(b, 0x21, 0x20, 0, 0, 7, lc1200, &r), 0); /* the request itself completes */
    RUN_UNTIL(d, b->leaves == leaves + 1);
    /* every URB completed with -ENODEV before the leave */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(in[i].done, 1);
        assert_int_equal(in[i].status, -ENODEV);
        ops(d)->urb_free(d->t, u[i]);
    }
    assert_int_equal(intr.done, 1);
    assert_int_equal(intr.status, -ENODEV);
    ops(d)->urb_free(d->t, iu);
    RUN_UNTIL(d, b->arrivals == arrivals + 1);
    assert_ptr_not_equal(b->dev, old);
    assert_int_equal(b->info.vid, 0x2e8a);
    assert_int_equal(b->info.pid, 0x000f);
    wrk_usb_desc desc;
    assert_int_equal(ops(d)->usb_desc(d->t, b->dev, &desc), 0);
    assert_int_equal(desc.nifaces, 2);
    assert_int_equal(desc.iface[0].cls, 0x08);
    assert_int_equal(desc.iface[1].cls, 0xff);
    assert_int_equal(ctrl(b, 0x80, 6, 0x0302, 0x0409, 255, NULL, &r), 0);
    assert_int_equal(r.data[2], 'R'); /* "RP2350 Boot" */
    /* mass storage is not modelled: it stalls */
    wrk_urb *p = bulk(b, 0x02, "\x00", 1, &r);
    RUN_UNTIL(d, r.done == 1);
    assert_int_equal(r.status, -EPIPE);
    ops(d)->urb_free(d->t, p);
    /* PICOBOOT takes a packet that is no command, then stalls (test_sim_picoboot.c
     * drives it properly) */
    p = bulk(b, 0x03, "\x00", 1, &r);
    RUN_UNTIL(d, r.done == 1);
    assert_int_equal(r.status, 0);
    ops(d)->urb_free(d->t, p);
    p = bulk(b, 0x84, NULL, 64, &r);
    RUN_UNTIL(d, r.done == 1);
    assert_int_equal(r.status, -EPIPE);
    ops(d)->urb_free(d->t, p);
    /* a line coding on the bootrom: there is no CDC */
    assert_int_equal(ctrl(b, 0x21, 0x20, 0, 0, 7, lc1200, &r), -EPIPE);
    drv_free(d);
}

static void test_cancel_and_faults(void **state)
{
    drv *d = setup_drv(1, SIM_FW_PULSECOUNT);
    drv_board *b = &d->b[0];
    rec r, r2;
    /* an IN with nothing to read stays pending; cancel completes it later */
    wrk_urb *u = bulk(b, 0x82, NULL, 64, &r);
    drv_turns(d, 5);
    assert_int_equal(r.done, 0);
    g_in_op = true;
    assert_int_equal(ops(d)->urb_cancel(d->t, u), 0);
    g_in_op = false;
    assert_int_equal(r.done, 0);
    RUN_UNTIL(d, r.done == 1);
    assert_false(r.inside);
    assert_int_equal(r.status, -ECONNRESET);
    assert_int_equal(ops(d)->urb_cancel(d->t, u), -ENOENT); /* completed */
    /* resubmitting the same URB works */
    assert_int_equal(resubmit(b, u), 0);
    assert_int_equal(ops(d)->urb_cancel(d->t, u), 0);
    RUN_UNTIL(d, r.done == 1);
    ops(d)->urb_free(d->t, u);

    /* an endpoint that is not in the configuration */
    wrk_urb *x = urb_new(b, 8, &r);
    x->type = WRK_EP_BULK;
    x->ep = 0x86;
    x->len = 8;
    assert_int_equal(submit(b, x), -ENOENT);
    x->ep = 0x81; /* interrupt, submitted as bulk */
    assert_int_equal(submit(b, x), -EINVAL);
    ops(d)->urb_free(d->t, x);

    /* no_completion: the next bulk URB hangs until cancelled; later ones queue behind it */
    assert_int_equal(sim_inject(d->t, b->serial, SIM_FAULT_NO_COMPLETION, 1), 0);
    wrk_urb *lost = bulk(b, 0x04, "lost", 4, &r);
    wrk_urb *next = bulk(b, 0x04, "next", 4, &r2);
    drv_idle(d, 50);
    assert_int_equal(r.done, 0);
    assert_int_equal(r2.done, 0);
    assert_int_equal(ops(d)->urb_cancel(d->t, lost), 0);
    RUN_UNTIL(d, r.done == 1 && r2.done == 1);
    assert_int_equal(r.status, -ECONNRESET);
    assert_int_equal(r2.status, 0);
    ops(d)->urb_free(d->t, lost);
    ops(d)->urb_free(d->t, next);

    /* stall: -EPIPE and the endpoint halted until CLEAR_FEATURE(HALT) */
    assert_int_equal(sim_inject(d->t, b->serial, SIM_FAULT_STALL, 1), 0);
    wrk_urb *s = bulk(b, 0x04, "st", 2, &r);
    RUN_UNTIL(d, r.done == 1);
    assert_int_equal(r.status, -EPIPE);
    rec st;
    assert_int_equal(ctrl(b, 0x82, 0, 0, 0x04, 2, NULL, &st), 0);
    assert_int_equal(st.data[0], 1);
    assert_int_equal(resubmit(b, s), 0);
    RUN_UNTIL(d, r.done == 1);
    assert_int_equal(r.status, -EPIPE); /* still halted */
    assert_int_equal(ops(d)->usb_clear_halt(d->t, b->dev, 0x04), 0);
    assert_int_equal(resubmit(b, s), 0);
    RUN_UNTIL(d, r.done == 1);
    assert_int_equal(r.status, 0);
    assert_int_equal(ctrl(b, 0x82, 0, 0, 0x04, 2, NULL, &st), 0);
    assert_int_equal(st.data[0], 0);
    ops(d)->urb_free(d->t, s);

    /* the server hooks count down */
    assert_false(ops(d)->take_hook(d->t, b->dev, WRK_HOOK_BUSY_IMPORT));
    assert_int_equal(sim_inject(d->t, b->serial, SIM_FAULT_BUSY_IMPORT, 2), 0);
    assert_true(ops(d)->take_hook(d->t, b->dev, WRK_HOOK_BUSY_IMPORT));
    assert_false(ops(d)->take_hook(d->t, b->dev, WRK_HOOK_PARTIAL_PDU));
    assert_true(ops(d)->take_hook(d->t, b->dev, WRK_HOOK_BUSY_IMPORT));
    assert_false(ops(d)->take_hook(d->t, b->dev, WRK_HOOK_BUSY_IMPORT));

    /* a reset ends the data URBs and drops DTR; the device stays */
    wrk_usbdev *dev = b->dev;
    wrk_urb *pend = bulk(b, 0x82, NULL, 64, &r);
    assert_int_equal(ops(d)->usb_reset(d->t, b->dev), 0);
    RUN_UNTIL(d, r.done == 1);
    assert_int_equal(r.status, -ESHUTDOWN);
    assert_ptr_equal(b->dev, dev);
    ops(d)->urb_free(d->t, pend);

    /* configuration: 0 unconfigures (no endpoints), busy while claimed */
    assert_int_equal(ops(d)->usb_claim(d->t, b->dev, 0), 0);
    assert_int_equal(ops(d)->usb_set_config(d->t, b->dev, 0), -EBUSY);
    assert_int_equal(ops(d)->usb_release(d->t, b->dev, 0), 0);
    assert_int_equal(ops(d)->usb_set_config(d->t, b->dev, 0), 0);
    wrk_usb_desc desc;
    assert_int_equal(ops(d)->usb_desc(d->t, b->dev, &desc), 0);
    assert_int_equal(desc.config_value, 0);
    assert_int_equal(desc.nifaces, 0);
    wrk_urb *nu = urb_new(b, 8, &r);
    nu->type = WRK_EP_BULK;
    nu->ep = 0x82;
    nu->len = 8;
    assert_int_equal(submit(b, nu), -ENOENT);
    assert_int_equal(ops(d)->usb_set_config(d->t, b->dev, 1), 0);
    assert_int_equal(resubmit(b, nu), 0);
    assert_int_equal(ops(d)->urb_cancel(d->t, nu), 0);
    RUN_UNTIL(d, r.done == 1);
    ops(d)->urb_free(d->t, nu);
    assert_int_equal(ops(d)->usb_set_config(d->t, b->dev, 2), -EINVAL);
    assert_int_equal(d->violations, 0);
    drv_free(d);
}

/* A URB left in flight when the transport is freed, and one freed with the board gone. */
static void test_unplug_mid_transfer(void **state)
{
    drv *d = setup_drv(1, SIM_FW_PULSECOUNT);
    drv_board *b = &d->b[0];
    rec r;
    wrk_urb *u = bulk(b, 0x82, NULL, 64, &r);
    assert_int_equal(sim_inject(d->t, b->serial, SIM_FAULT_UNPLUG, 1), 0);
    RUN_UNTIL(d, b->dev == NULL);
    assert_int_equal(r.done, 1);
    assert_int_equal(r.status, -ENODEV);
    ops(d)->urb_free(d->t, u);
    drv_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_identity),    cmocka_unit_test(test_pico_ice_protocol),
        cmocka_unit_test(test_touch_reenumerates),  cmocka_unit_test(test_cancel_and_faults),
        cmocka_unit_test(test_unplug_mid_transfer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
