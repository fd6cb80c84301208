/* The USB/IP server's connection state machine (wrk/usbip) against a scripted
 * device: a transport whose URBs complete only when the test says so, in any
 * order, and a carrier that is a byte buffer. Covers the op phase (DEVLIST, a
 * wrong token, a second import, the busy hook), URB forwarding with
 * out-of-order completions, an unknown endpoint (-EPIPE), an unclaimable
 * interface (-EPERM), UNLINK of pending, completed and completing URBs, the
 * intercepted requests, a wrong devid, the device going (-ENODEV, then close),
 * the client hanging up with URBs in flight, back-pressure, and the partial-PDU
 * and late-unlink hooks. Every URB the server allocates is freed. */
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
#include "usbip.h"

/* ---- the scripted device ---- */

#define MAX_URBS 64

typedef struct {
    wrk_transport base;
    int allocs, frees;
    wrk_urb *pending[MAX_URBS]; /* submitted, in order */
    int npending;
    int set_configs, set_alts, clear_halts, resets;
    uint8_t last_halt_ep;
    unsigned hooks[WRK_HOOK_COUNT];
    uint64_t t_fire;
    wrk_urb *firing[MAX_URBS]; /* completions due on the next loop turn */
    int nfiring;
} scr;

static scr *scr_of(wrk_transport *t)
{
    return (scr *)t;
}

static struct wrk_usbdev {
    int dummy;
} g_dev;

static int s_desc(wrk_transport *t, wrk_usbdev *dev, wrk_usb_desc *d)
{
    memset(d, 0, sizeof *d);
    const uint8_t dd[18] = { 18, 1, 0, 2, 0xef, 2, 1, 64, 0x09, 0x12, 0xc0, 0xb1, 0, 1, 1, 2, 3, 1 };
    memcpy(d->device, dd, 18);
    d->busnum = 1;
    d->devnum = 7;
    d->speed = 2;
    d->config_value = 1;
    d->nifaces = 3;
    const uint8_t cls[3] = { 2, 0x0a, 0xff }, nalts[3] = { 1, 2, 1 };
    for (int i = 0; i < 3; i++) {
        d->iface[i].cls = cls[i];
        d->iface[i].nalts = nalts[i];
    }
    snprintf(d->path, sizeof d->path, "scripted/1");
    return 0;
}

static int s_eps(wrk_transport *t, wrk_usbdev *dev, uint8_t iface, uint8_t alt, wrk_usb_ep *eps, size_t max)
{
    if (iface == 0) {
        eps[0] = (wrk_usb_ep){ 0x81, WRK_EP_INTERRUPT, 16, 8 };
        return 1;
    }
    if (iface == 1) {
        eps[0] = (wrk_usb_ep){ 0x02, WRK_EP_BULK, 0, 64 };
        eps[1] = (wrk_usb_ep){ 0x82, WRK_EP_BULK, 0, 64 };
        if (alt == 1) { /* alternate setting 1 adds an ISO endpoint */
            eps[2] = (wrk_usb_ep){ 0x83, WRK_EP_ISO, 1, 64 };
            return 3;
        }
        return 2;
    }
    if (iface == 2) {
        eps[0] = (wrk_usb_ep){ 0x84, WRK_EP_BULK, 0, 64 };
        return 1;
    }
    return -ENOENT;
}

static int s_claim(wrk_transport *t, wrk_usbdev *dev, uint8_t iface)
{
    return iface == 2 ? -EBUSY : 0; /* a driver we cannot detach holds it */
}

static int s_release(wrk_transport *t, wrk_usbdev *dev, uint8_t iface)
{
    return 0;
}

static int s_set_config(wrk_transport *t, wrk_usbdev *dev, uint8_t v)
{
    scr_of(t)->set_configs++;
    return 0;
}

static int s_set_alt(wrk_transport *t, wrk_usbdev *dev, uint8_t iface, uint8_t alt)
{
    scr_of(t)->set_alts++;
    return 0;
}

static int s_clear_halt(wrk_transport *t, wrk_usbdev *dev, uint8_t ep)
{
    scr_of(t)->clear_halts++;
    scr_of(t)->last_halt_ep = ep;
    return 0;
}

static int s_reset(wrk_transport *t, wrk_usbdev *dev)
{
    scr_of(t)->resets++;
    return 0;
}

static wrk_urb *s_alloc(wrk_transport *t, wrk_usbdev *dev, size_t size)
{
    wrk_urb *u = calloc(1, sizeof *u + size + 1);
    u->buf = (uint8_t *)(u + 1);
    u->size = size;
    scr_of(t)->allocs++;
    return u;
}

static void s_free(wrk_transport *t, wrk_urb *u)
{
    scr *s = scr_of(t);
    for (int i = 0; i < s->npending; i++)
        assert_ptr_not_equal(s->pending[i], u); /* never while submitted */
    s->frees++;
    free(u);
}

static int s_submit(wrk_transport *t, wrk_urb *u)
{
    scr *s = scr_of(t);
    if (s->npending == MAX_URBS)
        return -ENOMEM;
    u->priv = NULL;
    s->pending[s->npending++] = u;
    return 0;
}

static void fire(ifm_loop *loop, void *arg)
{
    scr *s = arg;
    s->t_fire = 0;
    int n = s->nfiring;
    wrk_urb *list[MAX_URBS];
    memcpy(list, s->firing, sizeof(wrk_urb *) * (size_t)n);
    s->nfiring = 0;
    for (int i = 0; i < n; i++)
        list[i]->done(list[i]);
}

/* Take pending URB `u` off the device and complete it on the next loop turn. */
static void complete(scr *s, wrk_urb *u, int status, const void *data, uint32_t actual)
{
    int i = 0;
    while (i < s->npending && s->pending[i] != u)
        i++;
    assert_true(i < s->npending);
    memmove(s->pending + i, s->pending + i + 1, sizeof(wrk_urb *) * (size_t)(s->npending - i - 1));
    s->npending--;
    u->status = status;
    u->actual = actual;
    if (data && actual)
        memcpy(u->buf, data, actual);
    s->firing[s->nfiring++] = u;
    if (!s->t_fire)
        s->t_fire = ifm_timer_add(s->base.loop, 0, fire, s);
}

static int s_cancel(wrk_transport *t, wrk_urb *u)
{
    scr *s = scr_of(t);
    for (int i = 0; i < s->npending; i++)
        if (s->pending[i] == u) {
            complete(s, u, -ECONNRESET, NULL, 0);
            return 0;
        }
    return -ENOENT; /* completing already */
}

static bool s_hook(wrk_transport *t, wrk_usbdev *dev, wrk_hook h)
{
    scr *s = scr_of(t);
    if (!s->hooks[h])
        return false;
    s->hooks[h]--;
    return true;
}

static const wrk_transport_ops scr_ops = {
    .name = "scripted",
    .usb_desc = s_desc,
    .usb_endpoints = s_eps,
    .usb_claim = s_claim,
    .usb_release = s_release,
    .usb_set_config = s_set_config,
    .usb_set_altsetting = s_set_alt,
    .usb_clear_halt = s_clear_halt,
    .usb_reset = s_reset,
    .urb_alloc = s_alloc,
    .urb_free = s_free,
    .urb_submit = s_submit,
    .urb_cancel = s_cancel,
    .take_hook = s_hook,
};

/* ---- the carrier: a byte buffer ---- */

typedef struct {
    uint8_t out[1 << 16];
    size_t len, off; /* written / parsed so far */
    bool ended, paused, aborted;
    int slow; /* write returns 1 while > 0 (counts down) */
    usbip_conn *c;
    uint32_t in_seq[256]; /* seqnums we submitted as IN */
    int nin;
} carrier;

static int io_write(void *ctx, const uint8_t *data, size_t len)
{
    carrier *k = ctx;
    assert_false(k->ended);
    assert_true(k->len + len <= sizeof k->out);
    memcpy(k->out + k->len, data, len);
    k->len += len;
    if (k->slow > 0) {
        k->slow--;
        return 1;
    }
    return 0;
}

static void io_pause(void *ctx, bool p)
{
    ((carrier *)ctx)->paused = p;
}

static void io_end(void *ctx)
{
    ((carrier *)ctx)->ended = true;
}

static void io_abort(void *ctx)
{
    ((carrier *)ctx)->aborted = true;
}

static const usbip_io mem_io = { io_write, io_pause, io_end, io_abort, false };
static const usbip_io tunnel_mem_io = { io_write, io_pause, io_end, io_abort, true }; /* counted as the tunnel */

/* ---- fixture ---- */

typedef struct {
    ifm_loop *loop;
    scr s;
    usbip_server *srv;
    usbip_export *e;
    char token[IFM_USBIP_TOKEN_LEN + 1];
} fx;

static fx *fx_new(void)
{
    fx *f = calloc(1, sizeof *f);
    f->loop = ifm_loop_new();
    f->s.base = (wrk_transport){ .ops = &scr_ops, .loop = f->loop };
    char why[128];
    f->srv = usbip_server_new(f->loop, &f->s.base, NULL, why, sizeof why);
    assert_non_null(f->srv);
    assert_int_equal(usbip_server_port(f->srv), 0);
    assert_int_equal(usbip_token_new(f->token), 0);
    f->e = usbip_export_new(f->srv, "E6614C311B4B8F2C", f->token, "alice");
    assert_non_null(f->e);
    usbip_export_set_device(f->e, &g_dev);
    return f;
}

static void turns(fx *f, int n)
{
    for (int i = 0; i < n; i++)
        ifm_loop_once(f->loop, 0);
}

static void fx_free(fx *f)
{
    turns(f, 3); /* completions of cancelled URBs */
    usbip_server_free(f->srv);
    turns(f, 3);
    assert_int_equal(f->s.npending, 0);
    assert_int_equal(f->s.allocs, f->s.frees);
    ifm_loop_free(f->loop);
    free(f);
}

static carrier *conn(fx *f)
{
    carrier *k = calloc(1, sizeof *k);
    k->c = usbip_conn_new(f->srv, &mem_io, k, "127.0.0.1:5555");
    assert_non_null(k->c);
    return k;
}

/* The carrier ended by the server: it says so, as a real one would. */
static void hang_up(carrier *k)
{
    assert_true(k->ended);
    usbip_conn_gone(k->c);
    free(k);
}

static void feed(carrier *k, const uint8_t *p, size_t n)
{
    usbip_conn_feed(k->c, p, n);
}

static uint32_t import(fx *f, carrier *k, const char *busid)
{
    uint8_t req[IFM_USBIP_IMPORT_REQ_SIZE];
    assert_int_equal(ifm_usbip_import_req_pack(busid, req, sizeof req), 40);
    /* byte by byte: framing must not care how the stream is cut */
    for (size_t i = 0; i < sizeof req; i++)
        feed(k, req + i, 1);
    uint32_t st;
    ifm_usbip_device d;
    ifm_err err;
    ssize_t n = ifm_usbip_import_rep_unpack(k->out + k->off, k->len - k->off, &st, &d, &err);
    assert_true(n > 0);
    k->off += (size_t)n;
    if (st != IFM_USBIP_ST_OK)
        return 0x80000000u | st;
    assert_string_equal(d.busid, busid);
    assert_int_equal(d.idVendor, 0x1209);
    assert_int_equal(d.bNumInterfaces, 3);
    return ifm_usbip_devid(&d);
}

static void submit(carrier *k, uint32_t devid, uint32_t seq, bool in, uint32_t ep, const void *data, int32_t len,
                   const uint8_t setup[8])
{
    ifm_usbip_hdr h = { .command = IFM_USBIP_CMD_SUBMIT, .seqnum = seq, .devid = devid, .direction = in, .ep = ep };
    h.u.submit.transfer_buffer_length = len;
    h.u.submit.transfer_flags = in ? IFM_USBIP_URB_DIR_IN : 0;
    if (setup)
        memcpy(h.u.submit.setup, setup, 8);
    uint8_t pdu[512];
    ssize_t n = ifm_usbip_urb_pack(&h, in ? NULL : data, in ? 0 : (size_t)len, NULL, 0, pdu, sizeof pdu);
    assert_true(n > 0);
    if (in)
        k->in_seq[k->nin++] = seq;
    feed(k, pdu, (size_t)n);
}

static void unlink_urb(carrier *k, uint32_t devid, uint32_t seq, uint32_t target)
{
    ifm_usbip_hdr h = { .command = IFM_USBIP_CMD_UNLINK, .seqnum = seq, .devid = devid };
    h.u.unlink_seqnum = target;
    uint8_t pdu[48];
    ifm_usbip_hdr_pack(&h, pdu);
    feed(k, pdu, sizeof pdu);
}

static int ret_shape(void *arg, const ifm_usbip_hdr *h, ifm_usbip_shape *shape, ifm_err *err)
{
    carrier *k = arg;
    shape->iso = false;
    shape->in = false;
    for (int i = 0; i < k->nin; i++)
        shape->in |= k->in_seq[i] == h->seqnum && h->command == IFM_USBIP_RET_SUBMIT;
    return 0;
}

/* The next reply, or false if none is complete. */
static bool next_ret(carrier *k, ifm_usbip_urb *u)
{
    ifm_err err = { "" };
    ssize_t n = ifm_usbip_urb_unpack(k->out + k->off, k->len - k->off, ret_shape, k, u, NULL, &err);
    if (n < 0)
        fail_msg("bad reply from the server: %s", err.msg);
    if (n == 0)
        return false;
    k->off += (size_t)n;
    return true;
}

static void expect_ret_submit(carrier *k, uint32_t seq, int32_t status, const char *data)
{
    ifm_usbip_urb u;
    assert_true(next_ret(k, &u));
    assert_int_equal(u.h.command, IFM_USBIP_RET_SUBMIT);
    assert_int_equal(u.h.seqnum, seq);
    assert_int_equal(u.h.u.ret.status, status);
    if (data) {
        assert_int_equal(u.data_len, strlen(data));
        assert_memory_equal(u.data, data, strlen(data));
    }
}

static void expect_ret_unlink(carrier *k, uint32_t seq, int32_t status)
{
    ifm_usbip_urb u;
    assert_true(next_ret(k, &u));
    assert_int_equal(u.h.command, IFM_USBIP_RET_UNLINK);
    assert_int_equal(u.h.seqnum, seq);
    assert_int_equal(u.h.u.unlink_status, status);
}

static void expect_nothing(carrier *k)
{
    assert_int_equal(k->len, k->off);
}

static wrk_urb *pending(fx *f, int i)
{
    assert_true(i < f->s.npending);
    return f->s.pending[i];
}

/* ---- tests ---- */

static void test_op_phase(void **state)
{
    fx *f = fx_new();
    /* DEVLIST: 0 devices, whatever is exported, then the connection ends */
    carrier *k = conn(f);
    uint8_t req[8];
    ifm_usbip_devlist_req_pack(req, sizeof req);
    feed(k, req, 8);
    uint32_t st, ndev;
    ifm_err err;
    assert_int_equal(ifm_usbip_devlist_rep_unpack(k->out, k->len, &st, NULL, 0, &ndev, NULL, &err), 12);
    assert_int_equal(ndev, 0);
    hang_up(k);
    /* a wrong token: ST_NODEV, closed */
    k = conn(f);
    char wrong[IFM_USBIP_TOKEN_LEN + 1];
    memcpy(wrong, f->token, sizeof wrong);
    wrong[5] = wrong[5] == 'A' ? 'B' : 'A';
    assert_int_equal(import(f, k, wrong), 0x80000000u | IFM_USBIP_ST_NODEV);
    hang_up(k);
    k = conn(f);
    assert_int_equal(import(f, k, "1-1"), 0x80000000u | IFM_USBIP_ST_NODEV);
    hang_up(k);
    /* the right one; a second client meanwhile is busy */
    carrier *a = conn(f);
    uint32_t devid = import(f, a, f->token);
    assert_int_equal(devid, 0x10007);
    assert_false(a->ended);
    assert_true(usbip_export_attached(f->e));
    carrier *b = conn(f);
    assert_int_equal(import(f, b, f->token), 0x80000000u | IFM_USBIP_ST_DEV_BUSY);
    hang_up(b);
    assert_false(a->ended);
    /* the busy hook */
    usbip_export_unbind(f->e);
    hang_up(a);
    assert_false(usbip_export_attached(f->e));
    f->s.hooks[WRK_HOOK_BUSY_IMPORT] = 1;
    k = conn(f);
    assert_int_equal(import(f, k, f->token), 0x80000000u | IFM_USBIP_ST_DEV_BUSY);
    hang_up(k);
    /* while the board re-enumerates: try again later */
    usbip_export_set_device(f->e, NULL);
    k = conn(f);
    assert_int_equal(import(f, k, f->token), 0x80000000u | IFM_USBIP_ST_DEV_ERR);
    hang_up(k);
    usbip_export_set_device(f->e, &g_dev);
    k = conn(f);
    assert_int_equal(import(f, k, f->token), 0x10007);
    /* a bad version ends the op phase too */
    carrier *v = conn(f);
    const uint8_t old[8] = { 0x01, 0x06, 0x80, 0x05, 0, 0, 0, 0 };
    feed(v, old, 8);
    assert_int_equal(v->len, 0);
    hang_up(v);
    usbip_export_free(f->e); /* the lease ends: the connection closes */
    hang_up(k);
    fx_free(f);
}

static void test_urbs(void **state)
{
    fx *f = fx_new();
    carrier *k = conn(f);
    uint32_t devid = import(f, k, f->token);
    /* an IN then an OUT; the OUT completes first */
    submit(k, devid, 1, true, 2, NULL, 64, NULL);
    submit(k, devid, 2, false, 2, "hello", 5, NULL);
    assert_int_equal(f->s.npending, 2);
    wrk_urb *in = pending(f, 0), *out = pending(f, 1);
    assert_int_equal(in->ep, 0x82);
    assert_int_equal(in->type, WRK_EP_BULK);
    assert_int_equal(out->ep, 0x02);
    assert_int_equal(out->len, 5);
    assert_memory_equal(out->buf, "hello", 5);
    complete(&f->s, out, 0, NULL, 5);
    turns(f, 1);
    expect_ret_submit(k, 2, 0, NULL);
    complete(&f->s, in, 0, "olleh", 5);
    turns(f, 1);
    expect_ret_submit(k, 1, 0, "olleh");
    expect_nothing(k);

    /* an endpoint the configuration does not have; one of an interface we could not claim */
    submit(k, devid, 3, true, 5, NULL, 64, NULL);
    expect_ret_submit(k, 3, -EPIPE, NULL);
    submit(k, devid, 4, true, 4, NULL, 64, NULL);
    expect_ret_submit(k, 4, -EPERM, NULL);
    assert_int_equal(f->s.npending, 0);

    /* UNLINK of a pending URB: RET_UNLINK -ECONNRESET, never its RET_SUBMIT */
    submit(k, devid, 5, true, 2, NULL, 64, NULL);
    unlink_urb(k, devid, 6, 5);
    turns(f, 1);
    expect_ret_unlink(k, 6, -ECONNRESET);
    expect_nothing(k);
    /* UNLINK of a completed one: RET_UNLINK 0 at once */
    unlink_urb(k, devid, 7, 2);
    expect_ret_unlink(k, 7, 0);
    /* UNLINK racing the completion: RET_SUBMIT, then RET_UNLINK 0 */
    submit(k, devid, 8, true, 2, NULL, 64, NULL);
    complete(&f->s, pending(f, 0), 0, "x", 1); /* completing: cancel finds nothing */
    unlink_urb(k, devid, 9, 8);
    expect_nothing(k);
    turns(f, 1);
    expect_ret_submit(k, 8, 0, "x");
    expect_ret_unlink(k, 9, 0);

    /* a stall fails only its URB */
    submit(k, devid, 10, true, 2, NULL, 64, NULL);
    complete(&f->s, pending(f, 0), -EPIPE, NULL, 0);
    turns(f, 1);
    expect_ret_submit(k, 10, -EPIPE, NULL);
    assert_false(k->ended);

    /* the intercepted control requests */
    const uint8_t set_config[8] = { 0x00, 9, 1, 0, 0, 0, 0, 0 };
    submit(k, devid, 11, false, 0, NULL, 0, set_config);
    expect_ret_submit(k, 11, 0, NULL);
    assert_int_equal(f->s.set_configs, 0); /* already configuration 1 */
    const uint8_t set_alt[8] = { 0x01, 11, 1, 0, 1, 0, 0, 0 };
    submit(k, devid, 12, false, 0, NULL, 0, set_alt);
    expect_ret_submit(k, 12, 0, NULL);
    assert_int_equal(f->s.set_alts, 1);
    const uint8_t clear_halt[8] = { 0x02, 1, 0, 0, 0x82, 0, 0, 0 };
    submit(k, devid, 13, false, 0, NULL, 0, clear_halt);
    expect_ret_submit(k, 13, 0, NULL);
    assert_int_equal(f->s.last_halt_ep, 0x82);
    const uint8_t set_address[8] = { 0x00, 5, 9, 0, 0, 0, 0, 0 };
    submit(k, devid, 14, false, 0, NULL, 0, set_address);
    expect_ret_submit(k, 14, -EPIPE, NULL);
    const uint8_t reset[8] = { 0x23, 3, 4, 0, 1, 0, 0, 0 };
    submit(k, devid, 15, false, 0, NULL, 0, reset);
    expect_ret_submit(k, 15, 0, NULL);
    assert_int_equal(f->s.resets, 1);
    /* after SET_INTERFACE alt 1 an ISO endpoint exists: refused per URB, with its packets */
    ifm_usbip_hdr iso = { .command = IFM_USBIP_CMD_SUBMIT, .seqnum = 16, .devid = devid, .direction = 1, .ep = 3 };
    iso.u.submit = (ifm_usbip_cmd_submit){ .transfer_buffer_length = 64, .number_of_packets = 2 };
    ifm_usbip_iso_desc d[2] = { { 0, 32, 0, 0 }, { 32, 32, 0, 0 } };
    uint8_t pdu[256];
    ssize_t n = ifm_usbip_urb_pack(&iso, NULL, 0, d, 2, pdu, sizeof pdu);
    feed(k, pdu, (size_t)n);
    ifm_usbip_urb u;
    ifm_err err;
    const ifm_usbip_shape isoin = { true, true };
    ifm_usbip_hdr rh;
    assert_int_equal(ifm_usbip_hdr_unpack(k->out + k->off, k->len - k->off, &rh, &err), 48);
    size_t size;
    assert_int_equal(ifm_usbip_urb_size(&rh, isoin, &size, &err), 0);
    assert_int_equal(size, 48 + 2 * 16); /* no data, two packet descriptors */
    assert_int_equal(k->len - k->off, size);
    assert_int_equal(ifm_usbip_urb_body(k->out + k->off, &rh, isoin, &u, &err), 0);
    assert_int_equal(u.h.seqnum, 16);
    assert_int_equal(u.h.u.ret.status, -EINVAL);
    assert_int_equal(u.niso, 2);
    k->off += size;
    /* a forwarded control request goes to the device with its SETUP */
    const uint8_t get_desc[8] = { 0x80, 6, 0, 1, 0, 0, 18, 0 };
    submit(k, devid, 17, true, 0, NULL, 18, get_desc);
    wrk_urb *cu = pending(f, 0);
    assert_int_equal(cu->type, WRK_EP_CONTROL);
    assert_memory_equal(cu->setup, get_desc, 8);
    complete(&f->s, cu, 0, "0123456789abcdefgh", 18);
    turns(f, 1);
    expect_ret_submit(k, 17, 0, "0123456789abcdefgh");
    expect_nothing(k);
    usbip_export_free(f->e);
    hang_up(k);
    fx_free(f);
}

static void test_endings(void **state)
{
    fx *f = fx_new();
    /* a wrong devid is a protocol violation: closed, its URBs cancelled and freed */
    carrier *k = conn(f);
    uint32_t devid = import(f, k, f->token);
    submit(k, devid, 1, true, 2, NULL, 64, NULL);
    submit(k, devid + 1, 2, true, 2, NULL, 64, NULL);
    assert_true(k->ended);
    assert_false(usbip_export_attached(f->e));
    turns(f, 2);
    assert_int_equal(f->s.npending, 0);
    hang_up(k);
    /* a malformed PDU */
    k = conn(f);
    devid = import(f, k, f->token);
    uint8_t junk[48] = { 0, 0, 0, 9 };
    feed(k, junk, sizeof junk);
    assert_true(k->ended);
    hang_up(k);
    /* the device goes: every pending URB is answered -ENODEV, then the connection closes */
    k = conn(f);
    devid = import(f, k, f->token);
    for (uint32_t s = 1; s <= 3; s++)
        submit(k, devid, s, true, 2, NULL, 64, NULL);
    while (f->s.npending) /* what the transport does before reporting the leave */
        complete(&f->s, pending(f, 0), -ENODEV, NULL, 0);
    turns(f, 1);
    usbip_export_set_device(f->e, NULL); /* the leave */
    for (uint32_t s = 1; s <= 3; s++)
        expect_ret_submit(k, s, -ENODEV, NULL);
    assert_true(k->ended);
    hang_up(k);
    usbip_export_set_device(f->e, &g_dev);
    /* the client hangs up with URBs in flight (vhci on detach): cancelled, freed, importable again */
    k = conn(f);
    devid = import(f, k, f->token);
    for (uint32_t s = 1; s <= 17; s++)
        submit(k, devid, s, true, 2, NULL, 128, NULL);
    assert_int_equal(f->s.npending, 17);
    usbip_conn_gone(k->c);
    free(k);
    assert_false(usbip_export_attached(f->e));
    turns(f, 2);
    assert_int_equal(f->s.npending, 0);
    assert_int_equal(f->s.allocs, f->s.frees);
    k = conn(f);
    assert_int_equal(import(f, k, f->token), devid);
    /* the server goes with a connection open: the carrier is aborted */
    submit(k, devid, 1, true, 2, NULL, 64, NULL);
    usbip_server_free(f->srv);
    f->srv = usbip_server_new(f->loop, &f->s.base, NULL, (char[64]){ 0 }, 64);
    assert_true(k->aborted);
    free(k);
    fx_free(f);
}

static void test_hooks_and_backpressure(void **state)
{
    fx *f = fx_new();
    carrier *k = conn(f);
    uint32_t devid = import(f, k, f->token);
    /* late_unlink: the RET_UNLINK waits for the next RET_SUBMIT */
    f->s.hooks[WRK_HOOK_LATE_UNLINK] = 1;
    submit(k, devid, 1, true, 2, NULL, 64, NULL);
    unlink_urb(k, devid, 2, 1);
    turns(f, 1);
    expect_nothing(k);
    submit(k, devid, 3, true, 2, NULL, 64, NULL);
    complete(&f->s, pending(f, 0), 0, "late", 4);
    turns(f, 1);
    expect_ret_submit(k, 3, 0, "late");
    expect_ret_unlink(k, 2, -ECONNRESET);
    /* back-pressure: a full carrier pauses input until it drains */
    k->slow = 1;
    submit(k, devid, 4, true, 2, NULL, 64, NULL);
    complete(&f->s, pending(f, 0), 0, "big", 3);
    turns(f, 1);
    assert_true(k->paused);
    usbip_conn_drained(k->c);
    assert_false(k->paused);
    expect_ret_submit(k, 4, 0, "big");
    /* partial_pdu: half a RET_SUBMIT, then the end */
    f->s.hooks[WRK_HOOK_PARTIAL_PDU] = 1;
    submit(k, devid, 5, true, 2, NULL, 64, NULL);
    complete(&f->s, pending(f, 0), 0, "0123456789", 10);
    turns(f, 1);
    assert_int_equal(k->len - k->off, (48 + 10) / 2);
    assert_true(k->ended);
    hang_up(k);
    fx_free(f);
}

/* The value of one series of the rendered registry (-1 if absent). */
static double metric(ifm_metrics *reg, const char *series)
{
    size_t len;
    char *text = ifm_metrics_render(reg, &len);
    assert_non_null(text);
    double v = -1;
    size_t n = strlen(series);
    for (char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
        if (strncmp(line, series, n) == 0 && line[n] == ' ')
            v = strtod(line + n + 1, NULL);
    free(text);
    return v;
}

static void test_metrics(void **state)
{
    fx *f = fx_new();
    ifm_metrics *reg = ifm_metrics_new();
    assert_int_equal(usbip_server_metrics(f->srv, reg), 0);
    assert_true(metric(reg, "icefarm_wrk_usbip_sessions{path=\"direct\"}") == 0);
    assert_true(metric(reg, "icefarm_wrk_usbip_imports_refused_total{reason=\"busy\"}") == 0);
    /* refused: a wrong token, then busy, then re-enumerating */
    carrier *k = conn(f);
    assert_int_equal(import(f, k, "1-1"), 0x80000000u | IFM_USBIP_ST_NODEV);
    hang_up(k);
    carrier *a = conn(f);
    uint32_t devid = import(f, a, f->token);
    assert_true(metric(reg, "icefarm_wrk_usbip_sessions{path=\"direct\"}") == 1);
    assert_true(metric(reg, "icefarm_wrk_usbip_sessions_total{path=\"direct\"}") == 1);
    k = conn(f);
    assert_int_equal(import(f, k, f->token), 0x80000000u | IFM_USBIP_ST_DEV_BUSY);
    hang_up(k);
    /* URBs: 5 bytes OUT, 3 bytes IN, one cancelled by UNLINK, one UNLINK of a completed URB */
    submit(a, devid, 1, false, 2, "hello", 5, NULL);
    complete(&f->s, pending(f, 0), 0, NULL, 5);
    turns(f, 1);
    expect_ret_submit(a, 1, 0, NULL);
    submit(a, devid, 2, true, 2, NULL, 64, NULL);
    complete(&f->s, pending(f, 0), 0, "abc", 3);
    turns(f, 1);
    expect_ret_submit(a, 2, 0, "abc");
    submit(a, devid, 3, true, 2, NULL, 64, NULL);
    unlink_urb(a, devid, 4, 3);
    turns(f, 1);
    expect_ret_unlink(a, 4, -ECONNRESET);
    unlink_urb(a, devid, 5, 1);
    expect_ret_unlink(a, 5, 0);
    assert_true(metric(reg, "icefarm_wrk_usbip_urbs_total{path=\"direct\"}") == 3);
    assert_true(metric(reg, "icefarm_wrk_usbip_bytes_total{path=\"direct\",direction=\"out\"}") == 5);
    assert_true(metric(reg, "icefarm_wrk_usbip_bytes_total{path=\"direct\",direction=\"in\"}") == 3);
    assert_true(metric(reg, "icefarm_wrk_usbip_unlinks_total{result=\"cancelled\"}") == 1);
    assert_true(metric(reg, "icefarm_wrk_usbip_unlinks_total{result=\"completed\"}") == 1);
    /* the board leaves: the session ends, and an import meanwhile is refused */
    usbip_export_set_device(f->e, NULL);
    assert_true(metric(reg, "icefarm_wrk_usbip_sessions{path=\"direct\"}") == 0);
    hang_up(a);
    k = conn(f);
    assert_int_equal(import(f, k, f->token), 0x80000000u | IFM_USBIP_ST_DEV_ERR);
    hang_up(k);
    usbip_export_set_device(f->e, &g_dev);
    /* a session through the tunnel counts under its own path; the gauge falls when the client hangs up */
    carrier *t = calloc(1, sizeof *t);
    t->c = usbip_conn_new(f->srv, &tunnel_mem_io, t, "tunnel BENCH/session");
    devid = import(f, t, f->token);
    submit(t, devid, 1, false, 2, "hi", 2, NULL);
    complete(&f->s, pending(f, 0), 0, NULL, 2);
    turns(f, 1);
    expect_ret_submit(t, 1, 0, NULL);
    assert_true(metric(reg, "icefarm_wrk_usbip_sessions{path=\"tunnel\"}") == 1);
    assert_true(metric(reg, "icefarm_wrk_usbip_sessions_total{path=\"tunnel\"}") == 1);
    assert_true(metric(reg, "icefarm_wrk_usbip_urbs_total{path=\"tunnel\"}") == 1);
    assert_true(metric(reg, "icefarm_wrk_usbip_bytes_total{path=\"tunnel\",direction=\"out\"}") == 2);
    usbip_conn_gone(t->c);
    free(t);
    assert_true(metric(reg, "icefarm_wrk_usbip_sessions{path=\"tunnel\"}") == 0);
    assert_true(metric(reg, "icefarm_wrk_usbip_sessions_total{path=\"direct\"}") == 1);
    assert_true(metric(reg, "icefarm_wrk_usbip_imports_refused_total{reason=\"unknown_busid\"}") == 1);
    assert_true(metric(reg, "icefarm_wrk_usbip_imports_refused_total{reason=\"busy\"}") == 1);
    assert_true(metric(reg, "icefarm_wrk_usbip_imports_refused_total{reason=\"not_present\"}") == 1);
    assert_true(metric(reg, "icefarm_wrk_usbip_urbs_total{path=\"direct\"}") == 3);
    fx_free(f);
    ifm_metrics_free(reg); /* after the server: the registry outlives it */
}

static void test_tokens(void **state)
{
    char a[IFM_USBIP_TOKEN_LEN + 1], b[IFM_USBIP_TOKEN_LEN + 1];
    assert_int_equal(usbip_token_new(a), 0);
    assert_int_equal(usbip_token_new(b), 0);
    assert_int_equal(strlen(a), IFM_USBIP_TOKEN_LEN);
    assert_true(IFM_USBIP_TOKEN_LEN >= 16 && IFM_USBIP_TOKEN_LEN <= 31);
    assert_string_not_equal(a, b);
    for (size_t i = 0; i < IFM_USBIP_TOKEN_LEN; i++)
        assert_non_null(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", a[i]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_op_phase), cmocka_unit_test(test_urbs),
        cmocka_unit_test(test_endings),  cmocka_unit_test(test_hooks_and_backpressure),
        cmocka_unit_test(test_tokens),   cmocka_unit_test(test_metrics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
