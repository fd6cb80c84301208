/* The simulated CDC pipe of one board.
 *
 * Like real USB, data moves in packets on a clock: each USB tick moves at most
 * usb_packet bytes of the host's queued writes into the device's 512-byte RX FIFO
 * (only as far as it has room, so a firmware that stops reading stalls the host's
 * writes, exactly the hung-board case) and at most usb_packet bytes of what the
 * firmware printed to the host's rx callback. A write's `done` runs once all of
 * its bytes left the host.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "icefarm/grow.h"
#include "sim_internal.h"

static void usb_tick(ifm_loop *loop, void *arg);

void sim_usb_kick(sim_board *b)
{
    if ((b->cdc_open || sim_urb_active(b)) && !b->t_usb)
        b->t_usb = ifm_timer_add(b->sim->base.loop, b->sim->opt.usb_tick_ms, usb_tick, b);
}

void sim_usb_print(sim_board *b, const char *text)
{
    /* pico-sdk and TinyUSB drop output while DTR is low (the CDC channel raises
     * it; at the URB level the host does, with SET_CONTROL_LINE_STATE). */
    if (!b->cdc_open && !(b->line_state[0] & 1))
        return;
    size_t n = strlen(text);
    if (b->tx_off == b->tx_len)
        b->tx_off = b->tx_len = 0;
    if (b->tx_len - b->tx_off + n > SIM_TX_MAX)
        return;
    if (b->tx_len + n > b->tx_cap) {
        /* Compact first; grow only if the pending bytes really need it. */
        if (b->tx_off) {
            memmove(b->tx, b->tx + b->tx_off, b->tx_len - b->tx_off);
            b->tx_len -= b->tx_off;
            b->tx_off = 0;
        }
        if (b->tx_len + n > b->tx_cap) {
            uint8_t *nt = ifm_grow_bytes(b->tx, &b->tx_cap, b->tx_len + n, 1024, 0);
            if (!nt)
                return;
            b->tx = nt;
        }
    }
    memcpy(b->tx + b->tx_len, text, n);
    b->tx_len += n;
    sim_usb_kick(b);
}

static void free_writes(sim_board *b)
{
    for (sim_write *w = b->wq_head, *next; w; w = next) {
        next = w->next;
        free(w);
    }
    b->wq_head = b->wq_tail = NULL;
}

void sim_usb_close(sim_board *b)
{
    if (!b->cdc_open)
        return;
    b->cdc_open = false;
    b->gen++;
    ifm_timer_cancel(b->sim->base.loop, b->t_usb);
    b->t_usb = 0;
    free_writes(b);
    /* Keep the buffer: an rx callback that closed the channel may still be
     * looking at the chunk it was given. */
    b->tx_off = b->tx_len = 0;
    b->rx = NULL;
    b->err = NULL;
    b->cdc_arg = NULL;
    if (b->dtr)
        sim_fw_dtr(b, false);
}

void sim_usb_free(sim_board *b)
{
    free_writes(b);
    free(b->tx);
    b->tx = NULL;
    b->tx_off = b->tx_len = b->tx_cap = 0;
}

static void move_host_bytes(sim_board *b)
{
    size_t budget = b->sim->opt.usb_packet;
    for (sim_write *w = b->wq_head; w && budget; w = w->next) {
        size_t n = w->len - w->off;
        if (n > budget)
            n = budget;
        if (!sim_fw_dropping(b)) {
            size_t room = SIM_FIFO_SIZE - b->fifo_len;
            if (n > room)
                n = room;
            memcpy(b->fifo + b->fifo_len, w->data + w->off, n);
            b->fifo_len += n;
        }
        w->off += n;
        budget -= n;
        if (w->off < w->len)
            break;
    }
}

static bool more_work(const sim_board *b)
{
    const sim_write *w = b->wq_head;
    return b->tx_len > b->tx_off || (b->fifo_len && sim_fw_reads(b)) ||
        (w && (w->off == w->len || b->fifo_len < SIM_FIFO_SIZE || sim_fw_dropping(b)));
}

static void usb_tick(ifm_loop *loop, void *arg)
{
    sim_board *b = arg;
    b->t_usb = 0;
    if (!b->cdc_open) {
        if (sim_urb_active(b))
            sim_urb_tick(b);
        return;
    }
    if (!b->dtr)
        sim_fw_dtr(b, true);
    move_host_bytes(b);
    sim_fw_consume(b);

    /* From here on we call out; stop if the callee closed (or reopened) the channel. */
    unsigned gen = b->gen;
    if (b->tx_len > b->tx_off) {
        size_t n = b->tx_len - b->tx_off;
        if (n > b->sim->opt.usb_packet)
            n = b->sim->opt.usb_packet;
        const uint8_t *chunk = b->tx + b->tx_off;
        b->tx_off += n;
        b->rx(b->cdc_arg, chunk, n);
        if (b->gen != gen)
            return;
    }
    while (b->wq_head && b->wq_head->off == b->wq_head->len) {
        sim_write *w = b->wq_head;
        b->wq_head = w->next;
        if (!b->wq_head)
            b->wq_tail = NULL;
        wrk_done_cb done = w->done;
        void *darg = w->arg;
        free(w);
        if (done)
            done(darg, 0, NULL);
        if (b->gen != gen)
            return;
    }
    if (more_work(b))
        sim_usb_kick(b);
}

/* ---- the CDC transport ops ---- */

int sim_cdc_open(wrk_transport *t, wrk_usbdev *dev, wrk_cdc_rx_cb rx, wrk_cdc_err_cb err, void *arg)
{
    int rc = sim_dev_usable(dev);
    if (rc)
        return rc;
    sim_board *b = dev->board;
    if (b->bootsel)
        return -EOPNOTSUPP; /* the bootrom has no CDC interface */
    if (b->cdc_open)
        return -EBUSY;
    if (!rx)
        return -EINVAL;
    b->cdc_open = true;
    b->gen++;
    b->rx = rx;
    b->err = err;
    b->cdc_arg = arg;
    /* The firmware notices DTR in its main loop, i.e. not inside this call. */
    sim_usb_kick(b);
    return 0;
}

int sim_cdc_write(wrk_transport *t, wrk_usbdev *dev, const uint8_t *data, size_t len, wrk_done_cb done, void *arg)
{
    int rc = sim_dev_usable(dev);
    if (rc)
        return rc;
    sim_board *b = dev->board;
    if (!b->cdc_open)
        return -ENOTCONN;
    if (!data && len)
        return -EINVAL;
    sim_write *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    *w = (sim_write){ .data = data, .len = len, .done = done, .arg = arg };
    if (b->wq_tail)
        b->wq_tail->next = w;
    else
        b->wq_head = w;
    b->wq_tail = w;
    sim_usb_kick(b);
    return 0;
}

void sim_cdc_close(wrk_transport *t, wrk_usbdev *dev)
{
    if (dev && dev->board->dev == dev)
        sim_usb_close(dev->board);
}
