/* The CDC ACM channel of a board on its control interface (0) and data interface.
 *
 * Reads: `rx_transfers` bulk IN transfers stay in flight and are resubmitted as
 * they complete, so the board's output streams to `rx` in order. Writes: queued,
 * sent as one bulk OUT chunk at a time (a copy, so a closed channel never reads
 * the caller's buffer again), each with its own timeout; a write's done runs
 * when its last chunk completed.
 *
 * Callback discipline: user callbacks run only from transfer completions or a
 * 0 ms timer, bracketed by in_cb, and the channel may be closed (or the device
 * lost) inside any of them. A closed channel is freed by whoever holds it last:
 * cdc_close if nothing is calling out, else the completion that was.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "icefarm/log.h"
#include "usb_internal.h"

#define CDC_RX_MAX 8
#define CDC_SET_LINE_CODING 0x20
#define CDC_SET_CONTROL_LINE_STATE 0x22
#define CDC_REQ_OUT (LIBUSB_REQUEST_TYPE_CLASS | LIBUSB_RECIPIENT_INTERFACE | LIBUSB_ENDPOINT_OUT)
#define CDC_DTR 0x0001

typedef struct cdc_write {
    struct cdc_write *next;
    const uint8_t *data; /* the caller's, alive until done */
    size_t len, off;
    wrk_done_cb done;
    void *arg;
} cdc_write;

struct usb_cdc {
    wrk_usbdev *dev;
    bool closed; /* closed or dropped: no callbacks any more */
    bool failed; /* an error was reported: no callbacks any more */
    int in_cb;   /* > 0 while a user callback of this channel runs */
    wrk_cdc_rx_cb rx;
    wrk_cdc_err_cb err;
    void *arg;
    uint8_t ctrl_if, data_if, ep_in, ep_out;
    uint16_t mps_in, mps_out;
    unsigned nin;
    usb_xfer *in[CDC_RX_MAX];
    usb_xfer *out; /* the chunk in flight */
    size_t out_len;
    usb_xfer *ctrl; /* line coding / DTR in flight */
    cdc_write *wq_head, *wq_tail;
    uint64_t t_pump;
};

static bool cdc_alive(const usb_cdc *c)
{
    return !c->closed && !c->failed && usb_dev_usable(c->dev) == 0;
}

static ifm_loop *cdc_loop(const usb_cdc *c)
{
    return c->dev->ut->base.loop;
}

static void cdc_release(usb_cdc *c)
{
    if (c->closed && c->in_cb == 0)
        free(c);
}

static void free_writes(usb_cdc *c)
{
    for (cdc_write *w = c->wq_head, *next; w; w = next) {
        next = w->next;
        free(w);
    }
    c->wq_head = c->wq_tail = NULL;
}

static cdc_write *pop_write(usb_cdc *c)
{
    cdc_write *w = c->wq_head;
    if (w) {
        c->wq_head = w->next;
        if (!c->wq_head)
            c->wq_tail = NULL;
    }
    return w;
}

/* The head write is all out: off the queue, its `done` told (as a callback), freed. */
static void finish_write(usb_cdc *c)
{
    cdc_write *w = pop_write(c);
    c->in_cb++;
    if (w->done)
        w->done(w->arg, 0, NULL);
    c->in_cb--;
    free(w);
}

/* Cancel what is in flight. A transfer that is not submitted is the one whose
 * completion is running right now: it frees itself. */
static void abandon_transfers(usb_cdc *c)
{
    for (unsigned i = 0; i < c->nin; i++) {
        if (c->in[i] && c->in[i]->submitted)
            usb_xfer_abandon(c->in[i]);
        c->in[i] = NULL;
    }
    if (c->out && c->out->submitted)
        usb_xfer_abandon(c->out);
    c->out = NULL;
    if (c->ctrl && c->ctrl->submitted)
        usb_xfer_abandon(c->ctrl);
    c->ctrl = NULL;
    ifm_timer_cancel(cdc_loop(c), c->t_pump);
    c->t_pump = 0;
}

/* Every queued write fails with `status`, then `err` runs once (unless the
 * caller closed the channel meanwhile). The channel stays dead until closed. */
static void cdc_fail(usb_cdc *c, int status, const char *reason)
{
    if (c->failed || c->closed)
        return;
    c->failed = true;
    abandon_transfers(c);
    IFM_WARN("serial=%s serial channel failed: %s", c->dev->info.serial, reason);
    c->in_cb++;
    while (!c->closed && c->wq_head) {
        cdc_write *w = pop_write(c);
        if (w->done)
            w->done(w->arg, status, reason);
        free(w);
    }
    if (!c->closed && c->err)
        c->err(c->arg, reason);
    c->in_cb--;
}

static void cdc_in_done(usb_xfer *x);
static void cdc_out_done(usb_xfer *x);

/* Start the next chunk if nothing is in flight. May call `done` of zero-length
 * writes, so only from a completion or the pump timer. */
static void cdc_pump(usb_cdc *c)
{
    const usb_options *o = &c->dev->ut->opt;
    size_t chunk = o->write_chunk / c->mps_out * c->mps_out;
    if (chunk == 0)
        chunk = c->mps_out;
    while (cdc_alive(c) && !c->out && c->wq_head) {
        cdc_write *w = c->wq_head;
        if (w->off >= w->len) {
            finish_write(c);
            continue;
        }
        size_t n = w->len - w->off < chunk ? w->len - w->off : chunk;
        usb_xfer *x = usb_xfer_new(c->dev, (int)n, cdc_out_done, c);
        if (!x) {
            cdc_fail(c, -ENOMEM, "out of memory");
            return;
        }
        memcpy(x->t->buffer, w->data + w->off, n);
        usb_xfer_bulk(x, c->ep_out, (int)n, o->write_timeout_ms);
        int rc = usb_xfer_submit(x);
        if (rc) {
            usb_xfer_free(x);
            if (rc != LIBUSB_ERROR_NO_DEVICE) {
                char why[96];
                snprintf(why, sizeof why, "cannot start a write: %s", libusb_strerror(rc));
                cdc_fail(c, usb_errno(rc), why);
            }
            return;
        }
        c->out = x;
        c->out_len = n;
    }
}

static void cdc_pump_timer(ifm_loop *loop, void *arg)
{
    usb_cdc *c = arg;
    c->t_pump = 0;
    cdc_pump(c);
    cdc_release(c);
}

static void cdc_in_done(usb_xfer *x)
{
    usb_cdc *c = x->owner;
    struct libusb_transfer *t = x->t;
    enum libusb_transfer_status st = t->status;
    if (st == LIBUSB_TRANSFER_COMPLETED && cdc_alive(c)) {
        if (t->actual_length > 0) {
            c->in_cb++;
            c->rx(c->arg, t->buffer, (size_t)t->actual_length);
            c->in_cb--;
        }
        if (cdc_alive(c)) {
            int rc = usb_xfer_submit(x);
            if (rc == 0)
                return;
            c->in[x->tag] = NULL;
            usb_xfer_free(x);
            if (rc != LIBUSB_ERROR_NO_DEVICE) {
                char why[96];
                snprintf(why, sizeof why, "cannot continue reading: %s", libusb_strerror(rc));
                cdc_fail(c, usb_errno(rc), why);
            }
            cdc_release(c);
            return;
        }
    }
    if (c->in[x->tag] == x)
        c->in[x->tag] = NULL;
    usb_xfer_free(x);
    if (st != LIBUSB_TRANSFER_COMPLETED && st != LIBUSB_TRANSFER_NO_DEVICE && cdc_alive(c)) {
        char why[96];
        snprintf(why, sizeof why, "serial read failed: %s", usb_status_text(st));
        cdc_fail(c, usb_status_errno(st), why);
    }
    cdc_release(c);
}

static void cdc_out_done(usb_xfer *x)
{
    usb_cdc *c = x->owner;
    enum libusb_transfer_status st = x->t->status;
    if (c->out == x)
        c->out = NULL;
    usb_xfer_free(x);
    if (!cdc_alive(c)) {
        cdc_release(c);
        return;
    }
    if (st != LIBUSB_TRANSFER_COMPLETED) {
        if (st != LIBUSB_TRANSFER_NO_DEVICE) {
            char why[128];
            if (st == LIBUSB_TRANSFER_TIMED_OUT)
                snprintf(why, sizeof why, "write timed out after %u ms (the board stopped reading)",
                         c->dev->ut->opt.write_timeout_ms);
            else
                snprintf(why, sizeof why, "write failed: %s", usb_status_text(st));
            cdc_fail(c, usb_status_errno(st), why);
        }
        cdc_release(c);
        return;
    }
    cdc_write *w = c->wq_head;
    if (w) {
        w->off += c->out_len;
        if (w->off >= w->len)
            finish_write(c);
    }
    cdc_pump(c);
    cdc_release(c);
}

static int cdc_ctrl(usb_cdc *c, int step);

/* Line coding (a failure is tolerated: not every ACM implements it), then DTR. */
static void cdc_ctrl_done(usb_xfer *x)
{
    usb_cdc *c = x->owner;
    int step = x->tag;
    enum libusb_transfer_status st = x->t->status;
    if (c->ctrl == x)
        c->ctrl = NULL;
    usb_xfer_free(x);
    if (!cdc_alive(c) || st == LIBUSB_TRANSFER_NO_DEVICE) {
        cdc_release(c);
        return;
    }
    if (step == 0) {
        int rc = cdc_ctrl(c, 1);
        if (rc && rc != LIBUSB_ERROR_NO_DEVICE) {
            char why[96];
            snprintf(why, sizeof why, "cannot raise DTR: %s", libusb_strerror(rc));
            cdc_fail(c, usb_errno(rc), why);
        }
    } else if (st != LIBUSB_TRANSFER_COMPLETED) {
        char why[96];
        snprintf(why, sizeof why, "raising DTR failed: %s", usb_status_text(st));
        cdc_fail(c, usb_status_errno(st), why);
    }
    cdc_release(c);
}

static int cdc_ctrl(usb_cdc *c, int step)
{
    /* 115200 8N1: harmless for a CDC that ignores it, and it moves a board
     * away from 1200 baud before DTR goes up. */
    static const uint8_t lc115200[7] = { 0x00, 0xc2, 0x01, 0x00, 0, 0, 8 };
    usb_xfer *x = step == 0 ? usb_xfer_control(c->dev, CDC_REQ_OUT, CDC_SET_LINE_CODING, 0, c->ctrl_if, lc115200,
                                               sizeof lc115200, cdc_ctrl_done, c)
                            : usb_xfer_control(c->dev, CDC_REQ_OUT, CDC_SET_CONTROL_LINE_STATE, CDC_DTR, c->ctrl_if,
                                               NULL, 0, cdc_ctrl_done, c);
    if (!x)
        return LIBUSB_ERROR_NO_MEM;
    x->tag = step;
    int rc = usb_xfer_submit(x);
    if (rc) {
        usb_xfer_free(x);
        return rc;
    }
    c->ctrl = x;
    return 0;
}

int usb_cdc_find(wrk_usbdev *dev, uint8_t *ctrl_if, uint8_t *data_if, uint8_t *ep_in, uint8_t *ep_out, uint16_t *mps_in,
                 uint16_t *mps_out)
{
    struct libusb_config_descriptor *cfg;
    if (libusb_get_active_config_descriptor(dev->ldev, &cfg) != 0)
        return -EIO;
    const struct libusb_interface_descriptor *ctrl = NULL, *data = NULL;
    for (int i = 0; i < cfg->bNumInterfaces; i++) {
        if (cfg->interface[i].num_altsetting < 1)
            continue;
        const struct libusb_interface_descriptor *a = &cfg->interface[i].altsetting[0];
        /* Interface 0 when it is the ACM (it is on every pico firmware). */
        if (a->bInterfaceClass == LIBUSB_CLASS_COMM && a->bInterfaceSubClass == 2 &&
            (!ctrl || a->bInterfaceNumber == 0))
            ctrl = a;
    }
    int want = -1;
    if (ctrl) {
        want = ctrl->bInterfaceNumber + 1;
        /* The union functional descriptor names the data interface. */
        for (int p = 0; p + 5 <= ctrl->extra_length;) {
            const uint8_t *d = ctrl->extra + p;
            if (d[0] < 2)
                break;
            if (d[1] == 0x24 && d[2] == 0x06 && d[0] >= 5) {
                want = d[4];
                break;
            }
            p += d[0];
        }
    }
    for (int i = 0; ctrl && i < cfg->bNumInterfaces; i++)
        for (int k = 0; k < cfg->interface[i].num_altsetting; k++) {
            const struct libusb_interface_descriptor *a = &cfg->interface[i].altsetting[k];
            if (a->bInterfaceNumber == want && a->bInterfaceClass == LIBUSB_CLASS_DATA && !data)
                data = a;
        }
    int rc = -EOPNOTSUPP;
    *ep_in = *ep_out = 0;
    if (ctrl && data) {
        for (int e = 0; e < data->bNumEndpoints; e++) {
            const struct libusb_endpoint_descriptor *ep = &data->endpoint[e];
            if ((ep->bmAttributes & 3) != LIBUSB_TRANSFER_TYPE_BULK)
                continue;
            if (ep->bEndpointAddress & LIBUSB_ENDPOINT_IN) {
                *ep_in = ep->bEndpointAddress;
                *mps_in = ep->wMaxPacketSize ? ep->wMaxPacketSize : 64;
            } else {
                *ep_out = ep->bEndpointAddress;
                *mps_out = ep->wMaxPacketSize ? ep->wMaxPacketSize : 64;
            }
        }
        if (*ep_in && *ep_out) {
            *ctrl_if = ctrl->bInterfaceNumber;
            *data_if = data->bInterfaceNumber;
            rc = 0;
        }
    }
    libusb_free_config_descriptor(cfg);
    return rc;
}

int usb_cdc_open(wrk_transport *t, wrk_usbdev *dev, wrk_cdc_rx_cb rx, wrk_cdc_err_cb err, void *arg)
{
    usb_transport *ut = usb_of(t);
    if (!ut)
        return -EINVAL;
    int rc = usb_dev_usable(dev);
    if (rc)
        return rc;
    if (usb_is_bootsel(dev))
        return -EOPNOTSUPP; /* the bootrom has no CDC interface */
    if (dev->cdc)
        return -EBUSY;
    if (!rx)
        return -EINVAL;
    usb_cdc *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    *c = (usb_cdc){ .dev = dev, .rx = rx, .err = err, .arg = arg };
    rc = usb_cdc_find(dev, &c->ctrl_if, &c->data_if, &c->ep_in, &c->ep_out, &c->mps_in, &c->mps_out);
    if (rc) {
        IFM_WARN("serial=%s has no usable CDC ACM interface", dev->info.serial);
        free(c);
        return rc;
    }
    char why[160];
    if ((rc = usb_claim(dev, c->ctrl_if, why, sizeof why)) != 0 ||
        (rc = usb_claim(dev, c->data_if, why, sizeof why)) != 0) {
        IFM_WARN("serial=%s cannot open the serial channel: %s", dev->info.serial, why);
        free(c);
        return rc;
    }
    uint32_t size = (ut->opt.rx_size + c->mps_in - 1) / c->mps_in * c->mps_in;
    c->nin = ut->opt.rx_transfers;
    int lrc = 0;
    for (unsigned i = 0; i < c->nin && lrc == 0; i++) {
        usb_xfer *x = usb_xfer_new(dev, (int)size, cdc_in_done, c);
        if (!x) {
            lrc = LIBUSB_ERROR_NO_MEM;
            break;
        }
        x->tag = (int)i;
        usb_xfer_bulk(x, c->ep_in, (int)size, 0);
        lrc = usb_xfer_submit(x);
        if (lrc)
            usb_xfer_free(x);
        else
            c->in[i] = x;
    }
    if (lrc == 0)
        lrc = cdc_ctrl(c, 0);
    if (lrc) {
        abandon_transfers(c);
        free(c);
        IFM_WARN("serial=%s cannot start the serial channel: %s", dev->info.serial, libusb_strerror(lrc));
        return usb_errno(lrc);
    }
    dev->cdc = c;
    return 0;
}

int usb_cdc_write(wrk_transport *t, wrk_usbdev *dev, const uint8_t *data, size_t len, wrk_done_cb done, void *arg)
{
    if (!usb_of(t))
        return -EINVAL;
    int rc = usb_dev_usable(dev);
    if (rc)
        return rc;
    usb_cdc *c = dev->cdc;
    if (!c)
        return -ENOTCONN;
    if (c->failed)
        return -EIO;
    if (!data && len)
        return -EINVAL;
    cdc_write *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    *w = (cdc_write){ .data = data, .len = len, .done = done, .arg = arg };
    if (c->wq_tail)
        c->wq_tail->next = w;
    else
        c->wq_head = w;
    c->wq_tail = w;
    /* Never from inside this call: a completion or the next loop turn starts it. */
    if (!c->out && !c->t_pump)
        c->t_pump = ifm_timer_add(cdc_loop(c), 0, cdc_pump_timer, c);
    return 0;
}

static void cdc_shutdown(usb_cdc *c, bool drop_dtr)
{
    wrk_usbdev *dev = c->dev;
    if (dev->cdc == c)
        dev->cdc = NULL;
    c->closed = true;
    abandon_transfers(c);
    free_writes(c);
    if (drop_dtr) {
        /* Like closing a tty: the firmware sees DTR fall. Nobody waits for it. */
        usb_xfer *x =
            usb_xfer_control(dev, CDC_REQ_OUT, CDC_SET_CONTROL_LINE_STATE, 0, c->ctrl_if, NULL, 0, NULL, NULL);
        if (x && usb_xfer_submit(x) != 0)
            usb_xfer_free(x);
    }
    cdc_release(c);
}

void usb_cdc_close(wrk_transport *t, wrk_usbdev *dev)
{
    if (!usb_of(t) || !dev || !dev->cdc)
        return;
    cdc_shutdown(dev->cdc, usb_dev_usable(dev) == 0);
}

void usb_cdc_drop(wrk_usbdev *dev)
{
    if (dev->cdc)
        cdc_shutdown(dev->cdc, false);
}
