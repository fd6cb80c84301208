/* The USB/IP CDC ACM session (icefarm/usbip_client.h): connect, import, read
 * the descriptors, configure, line coding and DTR, the bulk-IN queue, writes,
 * reads, vanishing devices and re-imports. The connection below is usbip_conn.c;
 * where the export is (farm events, the tunnel) is usbip_farm.c. */
#include "usbip_session.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "usbip_host.h"

#define DEF_TIMEOUT_MS 5000
#define DEF_WRITE_TIMEOUT_MS 10000
#define DEF_IN_URBS 8
#define DEF_IN_SIZE 4096
#define DEF_RX_BUFFER (1u << 20)
#define OUT_CHUNK 16384 /* bytes per bulk-OUT URB */
#define OUT_URBS 2      /* bulk-OUT URBs in flight */
#define MAX_CONFIG_LEN 4096

/* One queued control request. */
typedef struct ctl_op {
    struct ctl_op *next;
    uint8_t setup[8];
    uint8_t *data;
    uint16_t len;
    void (*internal)(icefarm_usbip *u, struct ctl_op *op, int status); /* the setup chain's steps */
    icefarm_usbip_done_cb done;
    void *arg;
    uint32_t actual;
} ctl_op;

/* One queued write. */
typedef struct wr {
    struct wr *next;
    uint8_t *data;
    size_t len, sent, acked;
    int status;
    icefarm_usbip_done_cb done;
    void *arg;
} wr;

const char *icefarm_usbip_state_name(icefarm_usbip_state s)
{
    static const char *const n[] = { "connecting", "up", "no-cdc", "gone", "closed" };
    return (unsigned)s < sizeof n / sizeof *n ? n[s] : "?";
}

/* ---- state and user callbacks ---- */

static void user_state(icefarm_usbip *u, icefarm_usbip_state st, const char *why)
{
    if (u->closing)
        return;
    bool changed = u->st != st;
    u->st = st;
    snprintf(u->reason, sizeof u->reason, "%s", why);
    if (!changed)
        return;
    LIB_INFO(u->f, "usbip serial=%s busid=%s state=%s %s", u->serial[0] ? u->serial : "-", u->busid,
             icefarm_usbip_state_name(st), why);
    if (u->o.on_state) {
        usbc_host_cb_enter(u->f);
        u->depth++;
        u->o.on_state(u, st, why, u->o.arg);
        u->depth--;
        usbc_host_cb_leave(u->f);
    }
}

static void user_done(icefarm_usbip *u, icefarm_usbip_done_cb done, void *arg, int status)
{
    if (!done)
        return;
    usbc_host_cb_enter(u->f);
    u->depth++;
    done(u, status, arg);
    u->depth--;
    usbc_host_cb_leave(u->f);
}

static void add_stats(icefarm_usbip *u)
{
    if (!u->c)
        return;
    const usbc_stats *s = usbc_conn_stats(u->c);
    u->acc.urbs_submitted += s->submitted;
    u->acc.urbs_completed += s->completed;
    u->acc.urb_timeouts += s->timeouts;
    u->acc.unlinks_sent += s->unlinks_sent;
    u->acc.ret_unlink_reset += s->ret_unlink_reset;
    u->acc.ret_unlink_done += s->ret_unlink_done;
    u->acc.ret_unlink_late += s->ret_unlink_late;
    u->acc.dropped_ret_submit += s->dropped_ret_submit;
}

/* ---- tearing a connection down ---- */

static void fail_queues(icefarm_usbip *u, int status)
{
    while (u->ctl_head) {
        ctl_op *op = u->ctl_head;
        u->ctl_head = op->next;
        if (!op->internal)
            user_done(u, op->done, op->arg, status);
        free(op->data);
        free(op);
    }
    u->ctl_tail = NULL;
    u->ctl.urb.busy = false;
    while (u->wq) {
        wr *w = u->wq;
        u->wq = w->next;
        user_done(u, w->done, w->arg, status);
        free(w->data);
        free(w);
    }
}

/* Drops the connection (no callbacks from it), forgets its URBs. */
static void drop_conn(icefarm_usbip *u)
{
    if (!u->c)
        return;
    add_stats(u);
    usbc_conn *c = u->c;
    u->c = NULL;
    usbc_conn_free(c);
    for (unsigned i = 0; i < u->nin; i++)
        u->in[i].urb.busy = false;
    for (unsigned i = 0; i < OUT_URBS; i++) {
        u->out[i].urb.busy = false;
        u->out[i].w = NULL;
    }
    u->ctl.urb.busy = false;
    u->imported = false;
}

static void schedule_retry(icefarm_usbip *u, uint64_t ms);

/* The device or the connection went away. */
static void went_gone(icefarm_usbip *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void went_gone(icefarm_usbip *u, const char *fmt, ...)
{
    char why[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    drop_conn(u);
    u->gone_seq++;
    fail_queues(u, -ENODEV);
    if (u->o.no_reconnect) {
        user_state(u, ICEFARM_USBIP_CLOSED, why);
        return;
    }
    user_state(u, ICEFARM_USBIP_GONE, why);
    schedule_retry(u, ifm_backoff_next(&u->bo));
}

void usbc_session_closed(icefarm_usbip *u, int status, const char *why)
{
    drop_conn(u);
    u->gone_seq++;
    fail_queues(u, -ENODEV);
    if (!u->open_status)
        u->open_status = status;
    snprintf(u->open_reason, sizeof u->open_reason, "%s", why);
    user_state(u, ICEFARM_USBIP_CLOSED, why);
}

/* ---- control requests, one at a time ---- */

static void ctl_next(icefarm_usbip *u);

static void ctl_urb_done(usbc_urb *urb)
{
    icefarm_usbip *u = urb->arg;
    ctl_op *op = u->ctl_head;
    u->ctl_busy = false;
    if (!op)
        return;
    u->ctl_head = op->next;
    if (!u->ctl_head)
        u->ctl_tail = NULL;
    op->actual = urb->actual;
    int status = urb->status;
    if (op->internal)
        op->internal(u, op, status);
    else
        user_done(u, op->done, op->arg, status);
    free(op->data);
    free(op);
    if (u->c && u->imported)
        ctl_next(u);
}

static void ctl_next(icefarm_usbip *u)
{
    if (u->ctl_busy || !u->ctl_head || !u->c)
        return;
    ctl_op *op = u->ctl_head;
    memset(&u->ctl.urb, 0, sizeof u->ctl.urb);
    memcpy(u->ctl.urb.setup, op->setup, 8);
    u->ctl.urb.ep = op->setup[0] & 0x80;
    u->ctl.urb.type = 0;
    u->ctl.urb.buf = op->data;
    u->ctl.urb.len = op->len;
    u->ctl.urb.timeout_ms = u->timeout_ms;
    u->ctl.urb.done = ctl_urb_done;
    u->ctl.urb.arg = u;
    int rc = usbc_submit(u->c, &u->ctl.urb);
    if (rc) {
        went_gone(u, "cannot send a control request: %s", ifm_strerror(rc));
        return;
    }
    u->ctl_busy = true;
}

static int ctl_queue(icefarm_usbip *u, uint8_t type, uint8_t req, uint16_t value, uint16_t index, const void *out,
                     uint16_t len, void (*internal)(icefarm_usbip *, ctl_op *, int), icefarm_usbip_done_cb done,
                     void *arg)
{
    ctl_op *op = calloc(1, sizeof *op);
    if (!op)
        return -ENOMEM;
    if (len) {
        op->data = malloc(len);
        if (!op->data) {
            free(op);
            return -ENOMEM;
        }
        if (out)
            memcpy(op->data, out, len);
        else
            memset(op->data, 0, len);
    }
    ifm_usb_setup s = { type, req, value, index, len };
    ifm_usb_setup_put(&s, op->setup);
    op->len = len;
    op->internal = internal;
    op->done = done;
    op->arg = arg;
    if (u->ctl_tail)
        u->ctl_tail->next = op;
    else
        u->ctl_head = op;
    u->ctl_tail = op;
    ctl_next(u);
    return 0;
}

/* ---- the bulk-IN queue ---- */

static size_t rx_room(const icefarm_usbip *u)
{
    return u->rx_cap - u->rx_len;
}

static void in_submit(icefarm_usbip *u, usbc_urb_slot *iu);

static void in_refill(icefarm_usbip *u)
{
    if (u->st != ICEFARM_USBIP_UP || !u->c || u->paused)
        return;
    for (unsigned i = 0; i < u->nin; i++) {
        if (u->in[i].urb.busy)
            continue;
        /* keep room for every URB in flight: the device is flow-controlled instead */
        size_t inflight = 0;
        for (unsigned k = 0; k < u->nin; k++)
            inflight += u->in[k].urb.busy ? u->in_size : 0;
        if (!u->o.on_data && rx_room(u) < inflight + u->in_size)
            return;
        in_submit(u, &u->in[i]);
        if (!u->c)
            return;
    }
}

static void clear_halt_done(icefarm_usbip *u, ctl_op *op, int status)
{
    (void)op;
    if (status == 0) {
        u->acc.stalls_cleared++;
        in_refill(u);
    } else if (status != -ENODEV && status != -ESHUTDOWN) {
        LIB_WARN(u->f, "usbip serial=%s CLEAR_FEATURE(ENDPOINT_HALT) failed: %s", u->serial, ifm_strerror(status));
    }
}

static void rx_deliver(icefarm_usbip *u, const uint8_t *p, size_t n)
{
    u->acc.bytes_in += n;
    if (u->o.on_data) {
        usbc_host_cb_enter(u->f);
        u->depth++;
        u->o.on_data(u, p, n, u->o.arg);
        u->depth--;
        usbc_host_cb_leave(u->f);
        return;
    }
    if (u->rx_off + u->rx_len + n > u->rx_cap) {
        memmove(u->rx, u->rx + u->rx_off, u->rx_len);
        u->rx_off = 0;
    }
    size_t take = n <= rx_room(u) ? n : rx_room(u); /* in_refill keeps room: never short */
    memcpy(u->rx + u->rx_off + u->rx_len, p, take);
    u->rx_len += take;
}

static void in_done(usbc_urb *urb)
{
    usbc_urb_slot *iu = (usbc_urb_slot *)urb;
    icefarm_usbip *u = iu->u;
    int st = urb->status;
    if (st == 0) {
        if (urb->actual)
            rx_deliver(u, urb->buf, urb->actual);
        if (u->closing)
            return;
        in_refill(u);
        return;
    }
    if (st == -ECONNRESET || st == -ESHUTDOWN)
        return; /* unlinked by us, or the connection is ending (its on_end follows) */
    if (st == -EPIPE) {
        /* a stall halts the endpoint until CLEAR_FEATURE(ENDPOINT_HALT) */
        LIB_INFO(u->f, "usbip serial=%s bulk IN 0x%02x stalled: clearing the halt", u->serial, urb->ep);
        bool pending = false;
        for (ctl_op *op = u->ctl_head; op; op = op->next)
            pending |= op->internal == clear_halt_done && op->setup[4] == u->fn.in.addr;
        if (!pending)
            ctl_queue(u, 0x02, USB_REQ_CLEAR_FEATURE, 0, u->fn.in.addr, NULL, 0, clear_halt_done, NULL, NULL);
        return;
    }
    if (st == -ENODEV || st == -EPROTO || st == -EILSEQ || st == -ETIME) {
        went_gone(u, "device gone (bulk IN: %s)", ifm_strerror(st));
        return;
    }
    LIB_WARN(u->f, "usbip serial=%s bulk IN failed: %s; resubmitting", u->serial, ifm_strerror(st));
    in_refill(u);
}

static void in_submit(icefarm_usbip *u, usbc_urb_slot *iu)
{
    usbc_urb *urb = &iu->urb;
    uint8_t *buf = urb->buf;
    memset(urb, 0, sizeof *urb);
    urb->buf = buf;
    urb->len = u->in_size;
    urb->ep = u->fn.in.addr;
    urb->type = 2;
    urb->done = in_done;
    urb->arg = iu;
    int rc = usbc_submit(u->c, urb);
    if (rc)
        went_gone(u, "cannot queue a bulk IN: %s", ifm_strerror(rc));
}

/* ---- writes ---- */

static void out_pump(icefarm_usbip *u);

static void out_done(usbc_urb *urb)
{
    usbc_urb_slot *ou = (usbc_urb_slot *)urb;
    icefarm_usbip *u = ou->u;
    wr *w = ou->w;
    ou->w = NULL;
    if (!w)
        return;
    int st = urb->status;
    w->acked += urb->actual;
    u->acc.bytes_out += urb->actual;
    if (st == -ENODEV || st == -ESHUTDOWN) {
        return; /* went_gone / on_end fail the queue */
    }
    if (st && !w->status)
        w->status = st;
    if (st == -EPIPE) {
        LIB_INFO(u->f, "usbip serial=%s bulk OUT 0x%02x stalled: clearing the halt", u->serial, u->fn.out.addr);
        ctl_queue(u, 0x02, USB_REQ_CLEAR_FEATURE, 0, u->fn.out.addr, NULL, 0, clear_halt_done, NULL, NULL);
    }
    /* the write is over when every chunk came back, or at its first failure once
     * no chunk of it is in flight */
    bool inflight = false;
    for (unsigned i = 0; i < OUT_URBS; i++)
        inflight |= u->out[i].w == w;
    if (!inflight && (w->acked >= w->len || w->status)) {
        /* it is the head of the queue: writes complete in order */
        if (u->wq == w)
            u->wq = w->next;
        int status = w->status;
        user_done(u, w->done, w->arg, status);
        free(w->data);
        free(w);
    }
    if (!u->closing)
        out_pump(u);
}

static void out_pump(icefarm_usbip *u)
{
    if (u->st != ICEFARM_USBIP_UP || !u->c)
        return;
    wr *w = u->wq;
    if (!w || w->status)
        return;
    for (unsigned i = 0; i < OUT_URBS && w->sent < w->len; i++) {
        usbc_urb_slot *ou = &u->out[i];
        if (ou->urb.busy || ou->w)
            continue;
        size_t n = w->len - w->sent;
        if (n > OUT_CHUNK)
            n = OUT_CHUNK;
        memset(&ou->urb, 0, sizeof ou->urb);
        ou->urb.ep = u->fn.out.addr;
        ou->urb.type = 2;
        ou->urb.buf = w->data + w->sent;
        ou->urb.len = (uint32_t)n;
        ou->urb.timeout_ms = u->write_timeout_ms;
        ou->urb.done = out_done;
        ou->urb.arg = ou;
        ou->u = u;
        ou->w = w;
        int rc = usbc_submit(u->c, &ou->urb);
        if (rc) {
            ou->w = NULL;
            went_gone(u, "cannot send a bulk OUT: %s", ifm_strerror(rc));
            return;
        }
        w->sent += n;
    }
}

/* ---- the setup chain after an import ---- */

static void setup_fail(icefarm_usbip *u, int status, const char *what)
{
    if (status == -ENODEV || status == -ESHUTDOWN || status == -ECONNRESET) {
        went_gone(u, "device gone during set-up (%s: %s)", what, ifm_strerror(status));
        return;
    }
    /* the device answered, but not as a CDC ACM device should: keep the import,
     * say why, and wait for it to change (re-enumerate) */
    char why[200];
    snprintf(why, sizeof why, "%s failed: %s", what, ifm_strerror(status));
    user_state(u, ICEFARM_USBIP_NO_CDC, why);
}

static void step_dtr(icefarm_usbip *u, ctl_op *op, int status);
static void step_config_value(icefarm_usbip *u);

static void step_up(icefarm_usbip *u)
{
    ifm_backoff_reset(&u->bo);
    u->info.imports++;
    char why[200];
    snprintf(why, sizeof why, "%04x:%04x CDC ACM on interfaces %u/%u, %u baud, DTR %s", u->ddesc.vid, u->ddesc.pid,
             u->fn.comm_iface, u->fn.data_iface, u->line.baud, u->dtr ? "on" : "off");
    user_state(u, ICEFARM_USBIP_UP, why);
    in_refill(u);
    out_pump(u);
}

static void step_dtr(icefarm_usbip *u, ctl_op *op, int status)
{
    (void)op;
    if (status) {
        setup_fail(u, status, "SET_CONTROL_LINE_STATE");
        return;
    }
    step_up(u);
}

static void step_line(icefarm_usbip *u, ctl_op *op, int status)
{
    (void)op;
    if (status) {
        setup_fail(u, status, "SET_LINE_CODING");
        return;
    }
    uint16_t v = (uint16_t)((u->dtr ? CDC_CTRL_DTR : 0) | (u->rts ? CDC_CTRL_RTS : 0));
    ctl_queue(u, 0x21, CDC_SET_CONTROL_LINE_STATE, v, u->fn.comm_iface, NULL, 0, step_dtr, NULL, NULL);
}

static void line_bytes(const icefarm_usbip_line_coding *lc, uint8_t b[7])
{
    b[0] = (uint8_t)lc->baud;
    b[1] = (uint8_t)(lc->baud >> 8);
    b[2] = (uint8_t)(lc->baud >> 16);
    b[3] = (uint8_t)(lc->baud >> 24);
    b[4] = lc->stop_bits;
    b[5] = lc->parity;
    b[6] = lc->data_bits;
}

static void step_altsetting(icefarm_usbip *u, ctl_op *op, int status)
{
    (void)op;
    if (status) {
        setup_fail(u, status, "SET_INTERFACE");
        return;
    }
    uint8_t b[7];
    line_bytes(&u->line, b);
    ctl_queue(u, 0x21, CDC_SET_LINE_CODING, 0, u->fn.comm_iface, b, 7, step_line, NULL, NULL);
}

static void step_configured(icefarm_usbip *u, ctl_op *op, int status)
{
    if (status) {
        setup_fail(u, status, "SET_CONFIGURATION");
        return;
    }
    u->info.config_value = u->cfg.value;
    if (u->fn.data_alt)
        ctl_queue(u, 0x01, 0x0b /* SET_INTERFACE */, u->fn.data_alt, u->fn.data_iface, NULL, 0, step_altsetting, NULL,
                  NULL);
    else
        step_altsetting(u, op, 0);
}

static void step_serial(icefarm_usbip *u, ctl_op *op, int status)
{
    if (status == 0) {
        ifm_err err;
        if (usbc_parse_string(op->data, op->actual, u->info.serial, sizeof u->info.serial, &err) != 0)
            LIB_DEBUG(u->f, "usbip busid=%s serial string: %s", u->busid, err.msg);
    }
    /* a device without a readable serial is still usable */
    step_config_value(u);
}

static void step_langs(icefarm_usbip *u, ctl_op *op, int status)
{
    uint16_t lang = 0x0409;
    if (status == 0 && op->actual >= 4 && op->data[1] == USB_DT_STRING)
        lang = (uint16_t)(op->data[2] | op->data[3] << 8);
    ctl_queue(u, 0x80, USB_REQ_GET_DESCRIPTOR, (uint16_t)(USB_DT_STRING << 8 | u->ddesc.iSerial), lang, NULL, 255,
              step_serial, NULL, NULL);
}

static void choose_function(icefarm_usbip *u);
static void step_config_header(icefarm_usbip *u, ctl_op *op, int status);

static void step_config_full(icefarm_usbip *u, ctl_op *op, int status)
{
    if (status) {
        setup_fail(u, status, "GET_DESCRIPTOR(configuration)");
        return;
    }
    ifm_err err;
    usbc_config cfg;
    if (usbc_parse_config(op->data, op->actual, &cfg, &err) != 0) {
        char why[260];
        snprintf(why, sizeof why, "configuration %u: %s", u->cfg_index, err.msg);
        user_state(u, ICEFARM_USBIP_NO_CDC, why);
        return;
    }
    if (cfg.ncdc == 0 && u->cfg_index + 1 < u->ddesc.nconfigs) {
        /* no CDC ACM function here: look at the next configuration */
        u->cfg_index++;
        ctl_queue(u, 0x80, USB_REQ_GET_DESCRIPTOR, (uint16_t)(USB_DT_CONFIG << 8 | u->cfg_index), 0, NULL, 9,
                  step_config_header, NULL, NULL);
        return;
    }
    u->cfg = cfg;
    choose_function(u);
}

static void step_config_header(icefarm_usbip *u, ctl_op *op, int status)
{
    if (status) {
        setup_fail(u, status, "GET_DESCRIPTOR(configuration header)");
        return;
    }
    uint16_t total;
    ifm_err err;
    if (usbc_parse_config_header(op->data, op->actual, &total, &err) != 0) {
        user_state(u, ICEFARM_USBIP_NO_CDC, err.msg);
        return;
    }
    if (total > MAX_CONFIG_LEN)
        total = MAX_CONFIG_LEN;
    ctl_queue(u, 0x80, USB_REQ_GET_DESCRIPTOR, (uint16_t)(USB_DT_CONFIG << 8 | u->cfg_index), 0, NULL, total,
              step_config_full, NULL, NULL);
}

static void step_device(icefarm_usbip *u, ctl_op *op, int status)
{
    if (status) {
        setup_fail(u, status, "GET_DESCRIPTOR(device)");
        return;
    }
    ifm_err err;
    if (usbc_parse_device(op->data, op->actual, &u->ddesc, &err) != 0) {
        user_state(u, ICEFARM_USBIP_NO_CDC, err.msg);
        return;
    }
    u->info.vid = u->ddesc.vid;
    u->info.pid = u->ddesc.pid;
    u->cfg_index = 0;
    if (u->ddesc.nconfigs == 0) {
        user_state(u, ICEFARM_USBIP_NO_CDC, "the device has no configuration");
        return;
    }
    ctl_queue(u, 0x80, USB_REQ_GET_DESCRIPTOR, USB_DT_CONFIG << 8, 0, NULL, 9, step_config_header, NULL, NULL);
}

static void choose_function(icefarm_usbip *u)
{
    u->info.ncdc = 0;
    for (size_t i = 0; i < u->cfg.ncdc && i < sizeof u->info.cdc_comm; i++)
        u->info.cdc_comm[u->info.ncdc++] = u->cfg.cdc[i].comm_iface;
    const usbc_cdc_fn *fn = usbc_cdc_by_comm(&u->cfg, u->o.cdc_interface);
    if (!fn && u->o.cdc_interface == 0 && u->cfg.ncdc)
        fn = &u->cfg.cdc[0];
    if (!fn) {
        char why[200], list[64] = "";
        size_t n = 0;
        for (size_t i = 0; i < u->cfg.ncdc; i++)
            n += (size_t)snprintf(list + n, n < sizeof list ? sizeof list - n : 0, "%s%u", i ? ", " : "",
                                  u->cfg.cdc[i].comm_iface);
        if (u->cfg.ncdc)
            snprintf(why, sizeof why, "%04x:%04x has no CDC ACM function on interface %u (it has: %s)", u->ddesc.vid,
                     u->ddesc.pid, u->o.cdc_interface, list);
        else
            snprintf(why, sizeof why, "%04x:%04x has no CDC ACM function%s", u->ddesc.vid, u->ddesc.pid,
                     u->ddesc.vid == 0x2e8a && u->ddesc.pid == 0x000f ? " (the RP2350 bootloader, BOOTSEL)" : "");
        user_state(u, ICEFARM_USBIP_NO_CDC, why);
        return;
    }
    u->fn = *fn;
    u->info.comm_iface = fn->comm_iface;
    u->info.data_iface = fn->data_iface;
    u->info.ep_in = fn->in.addr;
    u->info.ep_out = fn->out.addr;
    if (u->ddesc.iSerial)
        ctl_queue(u, 0x80, USB_REQ_GET_DESCRIPTOR, USB_DT_STRING << 8, 0, NULL, 255, step_langs, NULL, NULL);
    else
        step_config_value(u);
}

static void step_config_value(icefarm_usbip *u)
{
    /* the value the descriptors give: g_serial's ACM configuration is 2 */
    ctl_queue(u, 0x00, USB_REQ_SET_CONFIGURATION, u->cfg.value, 0, NULL, 0, step_configured, NULL, NULL);
}

/* ---- connection callbacks ---- */

static void on_import(usbc_conn *c, int status, const ifm_usbip_device *dev, const char *why, void *arg)
{
    (void)c;
    icefarm_usbip *u = arg;
    if (status) {
        /* on_end follows; remember why for it */
        u->import_status = status;
        snprintf(u->import_why, sizeof u->import_why, "%s", why);
        return;
    }
    u->imported = true;
    u->import_status = 0;
    u->info.devid = ifm_usbip_devid(dev);
    u->info.speed = dev->speed;
    u->info.vid = dev->idVendor;
    u->info.pid = dev->idProduct;
    u->info.serial[0] = '\0';
    LIB_DEBUG(u->f, "usbip serial=%s busid=%s imported %04x:%04x devid=0x%x from %s", u->serial, u->busid,
              dev->idVendor, dev->idProduct, u->info.devid, usbc_conn_peer(u->c));
    ctl_queue(u, 0x80, USB_REQ_GET_DESCRIPTOR, USB_DT_DEVICE << 8, 0, NULL, 18, step_device, NULL, NULL);
}

static void on_end(usbc_conn *c, int status, const char *why, void *arg)
{
    (void)c;
    icefarm_usbip *u = arg;
    bool was_imported = u->imported;
    int ist = u->import_status;
    char iwhy[256];
    snprintf(iwhy, sizeof iwhy, "%s", u->import_why);
    drop_conn(u);
    if (was_imported) {
        went_gone(u, "connection to %s:%s lost: %s", u->host, u->port, why);
        return;
    }
    int st = ist ? ist : status;
    const char *w = ist ? iwhy : why;
    usbc_session_import_failed(u, st, w);
}

/* Import failures: some are for good, others worth another try. */
void usbc_session_import_failed(icefarm_usbip *u, int st, const char *w)
{
    char msg[400];
    snprintf(msg, sizeof msg, "%s:%s busid %s: %s", u->host, u->port, u->busid, w);
    bool first = u->info.imports == 0;
    bool retry;
    switch (st) {
    case -EAGAIN: /* ST_DEV_ERR: the device is re-enumerating */
        retry = true;
        break;
    case -EBUSY: /* after an import of ours: the server may not have seen our old connection end yet */
    case -ECONNRESET:
    case -ESHUTDOWN:
    case -ECONNREFUSED: /* a worker restarting */
    case -ETIMEDOUT:
    case -EHOSTUNREACH:
    case -ENETUNREACH:
        retry = !first;
        break;
    case -ENOENT: /* a farm board: the farm says when the lease ends */
        retry = !first && u->farm_bound;
        break;
    default:
        retry = false;
    }
    if (retry && !u->o.no_reconnect) {
        u->gone_seq++;
        user_state(u, ICEFARM_USBIP_GONE, msg);
        schedule_retry(u, ifm_backoff_next(&u->bo));
        return;
    }
    usbc_session_closed(u, st, msg);
}

/* ---- connecting ---- */

static const usbc_conn_cbs conn_cbs = { .on_import = on_import, .on_end = on_end };

void usbc_session_connect(icefarm_usbip *u)
{
    if (u->closing || u->st == ICEFARM_USBIP_CLOSED)
        return;
    if (u->retry_timer) {
        ifm_timer_cancel(u->loop, u->retry_timer);
        u->retry_timer = 0;
    }
    drop_conn(u);
    u->import_status = 0;
    u->import_why[0] = '\0';
    if (!u->busid[0]) {
        user_state(u, ICEFARM_USBIP_GONE, "waiting for the board's export");
        return;
    }
    char why[200] = "";
    int rc;
    if (u->carrier_open)
        rc = u->carrier_open(u, &conn_cbs, &u->c, why, sizeof why);
    else
        rc = usbc_tcp_open(u->loop, u->host, u->port, &conn_cbs, u, u->timeout_ms, &u->c, NULL, why, sizeof why);
    if (rc) {
        u->c = NULL;
        usbc_session_import_failed(u, rc, why);
        return;
    }
    usbc_conn_set_log(u->c, u->f);
    if (u->st != ICEFARM_USBIP_CONNECTING)
        user_state(u, ICEFARM_USBIP_CONNECTING, "importing");
    rc = usbc_conn_import(u->c, u->busid);
    if (rc) {
        drop_conn(u);
        usbc_session_closed(u, rc, "bad busid");
    }
}

static void retry_due(ifm_loop *loop, void *arg)
{
    (void)loop;
    icefarm_usbip *u = arg;
    u->retry_timer = 0;
    usbc_session_connect(u);
}

static void schedule_retry(icefarm_usbip *u, uint64_t ms)
{
    if (u->closing || u->st == ICEFARM_USBIP_CLOSED)
        return;
    if (u->retry_timer)
        ifm_timer_cancel(u->loop, u->retry_timer);
    u->retry_timer = ifm_timer_add(u->loop, ms, retry_due, u);
}

void usbc_session_start(icefarm_usbip *u)
{
    schedule_retry(u, 0);
}

/* ---- the public API ---- */

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

int usbc_session_new(icefarm *f, ifm_loop *loop, const icefarm_usbip_opts *o, icefarm_usbip **out, char *reason,
                     size_t reason_len)
{
    if (!o)
        return ifm_failbuf(reason, reason_len, -EINVAL, "no options");
    icefarm_usbip *u = calloc(1, sizeof *u);
    if (!u)
        return -ENOMEM;
    u->o = *o;
    u->f = f;
    if (f) {
        u->loop = usbc_host_loop(f);
    } else if (loop) {
        u->loop = loop;
    } else {
        u->own_loop = ifm_loop_new();
        u->loop = u->own_loop;
    }
    if (!u->loop) {
        free(u);
        return ifm_failbuf(reason, reason_len, -ENOMEM, "no event loop");
    }
    copy_str(u->host, sizeof u->host, o->host);
    copy_str(u->port, sizeof u->port, o->port ? o->port : "3240");
    copy_str(u->busid, sizeof u->busid, o->busid);
    copy_str(u->serial, sizeof u->serial, o->serial);
    u->o.host = u->o.port = u->o.busid = u->o.serial = NULL;
    u->timeout_ms = o->timeout_ms ? o->timeout_ms : DEF_TIMEOUT_MS;
    u->write_timeout_ms = o->write_timeout_ms ? o->write_timeout_ms : DEF_WRITE_TIMEOUT_MS;
    u->nin = o->in_urbs ? o->in_urbs : DEF_IN_URBS;
    if (u->nin > 64)
        u->nin = 64;
    u->in_size = o->in_size ? o->in_size : DEF_IN_SIZE;
    if (u->in_size > 65536)
        u->in_size = 65536;
    u->rx_cap = o->rx_buffer ? o->rx_buffer : DEF_RX_BUFFER;
    if (u->rx_cap < (size_t)u->nin * u->in_size * 2)
        u->rx_cap = (size_t)u->nin * u->in_size * 2;
    u->initial_line = o->line;
    if (!u->initial_line.baud)
        u->initial_line.baud = 115200;
    if (!u->initial_line.data_bits)
        u->initial_line.data_bits = 8;
    u->line = u->initial_line;
    u->dtr = u->rts = !o->no_dtr;
    u->in = calloc(u->nin, sizeof *u->in);
    u->in_bufs = malloc((size_t)u->nin * u->in_size);
    u->rx = o->on_data ? NULL : malloc(u->rx_cap);
    if (!u->in || !u->in_bufs || (!o->on_data && !u->rx)) {
        usbc_session_free(u);
        return -ENOMEM;
    }
    if (o->on_data)
        u->rx_cap = 0;
    for (unsigned i = 0; i < u->nin; i++) {
        u->in[i].u = u;
        u->in[i].urb.buf = u->in_bufs + (size_t)i * u->in_size;
    }
    for (unsigned i = 0; i < OUT_URBS; i++)
        u->out[i].u = u;
    ifm_backoff_opts bo = { .base_ms = 100, .max_ms = 2000 };
    ifm_backoff_init(&u->bo, &bo);
    u->st = ICEFARM_USBIP_CONNECTING;
    *out = u;
    return 0;
}

void usbc_session_free(icefarm_usbip *u)
{
    if (!u)
        return;
    u->closing = true;
    if (u->retry_timer)
        ifm_timer_cancel(u->loop, u->retry_timer);
    if (u->farm_unbind)
        u->farm_unbind(u);
    drop_conn(u);
    fail_queues(u, -ECANCELED);
    free(u->in);
    free(u->in_bufs);
    free(u->rx);
    if (u->own_loop)
        ifm_loop_free(u->own_loop);
    free(u);
}

int usbc_session_wait(icefarm_usbip *u, bool (*done)(icefarm_usbip *u, void *arg), void *arg, uint64_t timeout_ms)
{
    if (usbc_host_in_callback(u->f, u->depth))
        return -EDEADLK;
    uint64_t deadline = timeout_ms ? ifm_now_ms() + timeout_ms : 0;
    while (!done(u, arg)) {
        int wait = 200;
        if (deadline) {
            uint64_t now = ifm_now_ms();
            if (now >= deadline)
                return -ETIMEDOUT;
            if (deadline - now < (uint64_t)wait)
                wait = (int)(deadline - now);
        }
        int rc = usbc_host_wait(u->f, u->loop, wait);
        if (rc)
            return rc;
    }
    return 0;
}

icefarm_usbip_state icefarm_usbip_get_state(const icefarm_usbip *u)
{
    return u->st;
}

typedef struct {
    icefarm_usbip_state want;
} state_wait;

static bool reached(icefarm_usbip *u, void *arg)
{
    state_wait *w = arg;
    return u->st == w->want || u->st == ICEFARM_USBIP_CLOSED;
}

int icefarm_usbip_wait_state(icefarm_usbip *u, icefarm_usbip_state state, uint64_t timeout_ms)
{
    state_wait w = { state };
    int rc = usbc_session_wait(u, reached, &w, timeout_ms);
    if (rc)
        return rc;
    return u->st == state ? 0 : -ESHUTDOWN;
}

/* ---- writes and control requests: async, or waiting when done is NULL ---- */

typedef struct {
    bool finished;
    int status;
} sync_done;

static void sync_cb(icefarm_usbip *u, int status, void *arg)
{
    (void)u;
    sync_done *s = arg;
    s->finished = true;
    s->status = status;
}

static bool sync_finished(icefarm_usbip *u, void *arg)
{
    (void)u;
    return ((sync_done *)arg)->finished;
}

/* Runs `start` with a callback of our own and waits for it. */
static int run_sync(icefarm_usbip *u, int rc, sync_done *s)
{
    if (rc)
        return rc;
    /* the request holds the callback: a timeout here would leave it dangling, so
     * wait without one (every request is bounded by its URB timeouts) */
    rc = usbc_session_wait(u, sync_finished, s, 0);
    return rc ? rc : s->status;
}

static int write_start(icefarm_usbip *u, const void *data, size_t len, icefarm_usbip_done_cb done, void *arg)
{
    if (u->st != ICEFARM_USBIP_UP)
        return -ENOTCONN;
    wr *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->data = malloc(len ? len : 1);
    if (!w->data) {
        free(w);
        return -ENOMEM;
    }
    memcpy(w->data, data, len);
    w->len = len;
    w->done = done;
    w->arg = arg;
    wr **pp = &u->wq;
    while (*pp)
        pp = &(*pp)->next;
    *pp = w;
    if (len == 0) {
        /* nothing to send: complete in order through the pump */
        w->acked = 0;
    }
    out_pump(u);
    return 0;
}

int icefarm_usbip_write(icefarm_usbip *u, const void *data, size_t len, icefarm_usbip_done_cb done, void *arg)
{
    if (!u || (len && !data))
        return -EINVAL;
    if (done)
        return write_start(u, data, len, done, arg);
    if (usbc_host_in_callback(u->f, u->depth))
        return -EDEADLK;
    sync_done s = { 0 };
    return run_sync(u, write_start(u, data, len, sync_cb, &s), &s);
}

int icefarm_usbip_set_line_coding(icefarm_usbip *u, const icefarm_usbip_line_coding *lc, icefarm_usbip_done_cb done,
                                  void *arg)
{
    if (!u || !lc)
        return -EINVAL;
    if (u->st != ICEFARM_USBIP_UP)
        return -ENOTCONN;
    icefarm_usbip_line_coding l = *lc;
    if (!l.data_bits)
        l.data_bits = 8;
    uint8_t b[7];
    line_bytes(&l, b);
    /* what a re-import applies again; the touch itself is never repeated */
    u->line = l.baud == 1200 ? u->initial_line : l;
    if (done)
        return ctl_queue(u, 0x21, CDC_SET_LINE_CODING, 0, u->fn.comm_iface, b, 7, NULL, done, arg);
    if (usbc_host_in_callback(u->f, u->depth))
        return -EDEADLK;
    sync_done s = { 0 };
    return run_sync(u, ctl_queue(u, 0x21, CDC_SET_LINE_CODING, 0, u->fn.comm_iface, b, 7, NULL, sync_cb, &s), &s);
}

int icefarm_usbip_set_control_lines(icefarm_usbip *u, bool dtr, bool rts, icefarm_usbip_done_cb done, void *arg)
{
    if (!u)
        return -EINVAL;
    if (u->st != ICEFARM_USBIP_UP)
        return -ENOTCONN;
    u->dtr = dtr;
    u->rts = rts;
    uint16_t v = (uint16_t)((dtr ? CDC_CTRL_DTR : 0) | (rts ? CDC_CTRL_RTS : 0));
    if (done)
        return ctl_queue(u, 0x21, CDC_SET_CONTROL_LINE_STATE, v, u->fn.comm_iface, NULL, 0, NULL, done, arg);
    if (usbc_host_in_callback(u->f, u->depth))
        return -EDEADLK;
    sync_done s = { 0 };
    return run_sync(u, ctl_queue(u, 0x21, CDC_SET_CONTROL_LINE_STATE, v, u->fn.comm_iface, NULL, 0, NULL, sync_cb, &s),
                    &s);
}

/* ---- reads ---- */

typedef struct {
    size_t want, cap;
    const uint8_t *delim;
    size_t delim_len;
    unsigned gone_seq;
    size_t scanned; /* delimiter search resumes here */
    size_t found;   /* bytes to return, 0 while not ready */
} read_wait;

static bool read_ready(icefarm_usbip *u, void *arg)
{
    read_wait *r = arg;
    const uint8_t *p = u->rx + u->rx_off;
    if (r->delim_len) {
        size_t start = r->scanned >= r->delim_len ? r->scanned - r->delim_len + 1 : 0;
        for (size_t i = start; i + r->delim_len <= u->rx_len && i + r->delim_len <= r->cap; i++)
            if (memcmp(p + i, r->delim, r->delim_len) == 0) {
                r->found = i + r->delim_len;
                return true;
            }
        r->scanned = u->rx_len;
    }
    if (u->rx_len >= r->cap) {
        r->found = r->cap;
        return true;
    }
    if (!r->delim_len && u->rx_len && u->rx_len >= (r->want ? r->want : 1)) {
        r->found = r->want ? r->want : u->rx_len;
        return true;
    }
    return u->gone_seq != r->gone_seq || u->st == ICEFARM_USBIP_CLOSED;
}

ptrdiff_t icefarm_usbip_read(icefarm_usbip *u, void *buf, size_t cap, size_t want, const void *delim, size_t delim_len,
                             uint64_t timeout_ms)
{
    if (!u || !buf || !cap || u->o.on_data || want > cap)
        return -EINVAL;
    read_wait r = {
        .want = want, .cap = cap, .delim = delim, .delim_len = delim ? delim_len : 0, .gone_seq = u->gone_seq
    };
    bool absent = u->st != ICEFARM_USBIP_UP;
    int rc = 0;
    if (!read_ready(u, &r)) {
        if (absent)
            return u->st == ICEFARM_USBIP_CLOSED ? -ESHUTDOWN : -ENODEV;
        rc = usbc_session_wait(u, read_ready, &r, timeout_ms ? timeout_ms : 1);
    }
    if (rc && rc != -ETIMEDOUT)
        return rc;
    if (!r.found) {
        if (rc == -ETIMEDOUT)
            return -ETIMEDOUT;
        return u->st == ICEFARM_USBIP_CLOSED ? -ESHUTDOWN : -ENODEV;
    }
    memcpy(buf, u->rx + u->rx_off, r.found);
    u->rx_off += r.found;
    u->rx_len -= r.found;
    if (!u->rx_len)
        u->rx_off = 0;
    in_refill(u);
    return (ptrdiff_t)r.found;
}

size_t icefarm_usbip_buffered(const icefarm_usbip *u)
{
    return u->rx_len;
}

void icefarm_usbip_pause(icefarm_usbip *u, bool paused)
{
    u->paused = paused;
    if (!paused)
        in_refill(u);
}

void icefarm_usbip_get_info(const icefarm_usbip *u, icefarm_usbip_info *info)
{
    *info = u->info;
    copy_str(info->host, sizeof info->host, u->host);
    copy_str(info->port, sizeof info->port, u->port);
    copy_str(info->busid, sizeof info->busid, u->busid);
    info->line = u->line;
    info->dtr = u->dtr;
    info->rts = u->rts;
}

void icefarm_usbip_get_stats(const icefarm_usbip *u, icefarm_usbip_stats *st)
{
    *st = u->acc;
    if (u->c) {
        const usbc_stats *s = usbc_conn_stats(u->c);
        st->urbs_submitted += s->submitted;
        st->urbs_completed += s->completed;
        st->urb_timeouts += s->timeouts;
        st->unlinks_sent += s->unlinks_sent;
        st->ret_unlink_reset += s->ret_unlink_reset;
        st->ret_unlink_done += s->ret_unlink_done;
        st->ret_unlink_late += s->ret_unlink_late;
        st->dropped_ret_submit += s->dropped_ret_submit;
    }
}
