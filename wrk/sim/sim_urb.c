/* The URB level of a simulated board: the device as a USB host sees it.
 *
 * Endpoint 0 answers the standard requests (descriptors of the current identity,
 * configuration, interfaces and alternate settings, status, endpoint halt) and
 * the CDC ACM class requests (line coding, control line state, break) of each
 * CDC function, and in BOOTSEL PICOBOOT's interface requests (sim_picoboot.c);
 * requests for the interfaces the farm does not drive (DFU, mass storage, the
 * SDK's reset interface) and other vendor requests stall.
 *
 * Data moves on the same USB tick as the CDC channel (sim_usb.c): each tick
 * takes at most usb_packet bytes of OUT URBs into the firmware's 512-byte FIFO
 * (an OUT URB completes once the firmware has room for all of it: a firmware
 * that stops reading stalls the host, as on a real board) and hands at most
 * usb_packet printed bytes to IN URBs (an IN URB completes with what is there,
 * like a short packet). The firmware listens on CDC0 (bulk 0x02/0x82) and
 * prints only while DTR is up (SET_CONTROL_LINE_STATE bit 0 on interface 0).
 * CDC1 of the pico-ice firmware (0x04/0x84) loops back what is written to it, as
 * a design wiring the FPGA's UART TX to RX would. Notification endpoints never
 * complete (TinyUSB sends no SERIAL_STATE). In BOOTSEL, PICOBOOT's bulk pair
 * (0x03/0x84) runs the bootrom's command protocol on the same tick
 * (sim_picoboot.c: erase, write, read back, reboot into what was written);
 * mass storage stalls.
 *
 * SET_LINE_CODING to 1200 baud on a CDC reboots into BOOTSEL once the request
 * has completed, like pico-sdk's and pico-ice-sdk's magic baud rate.
 *
 * Completions run from the tick, never inside submit or cancel. When the device
 * leaves, every URB still queued completes with -ENODEV before `leave`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "icefarm/usbip.h"
#include "sim_internal.h"

static int slot_of(uint8_t addr, uint8_t type)
{
    if (type == WRK_EP_CONTROL)
        return 0;
    return (addr & 0x0f) | ((addr & 0x80) ? 16 : 0);
}

const sim_identity *sim_identity_of(const sim_board *b)
{
    const sim_descs *d = &b->sim->descs;
    if (b->bootsel)
        return &d->id[SIM_ID_BOOTSEL];
    if (b->flashed == SIM_FW_PULSECOUNT || b->flashed == SIM_FW_VARIANCE)
        return &d->id[SIM_ID_PICO_ICE];
    return &d->id[SIM_ID_DEFAULT];
}

static bool is_pico_ice(const sim_board *b)
{
    return sim_identity_of(b) == &b->sim->descs.id[SIM_ID_PICO_ICE];
}

static const uint8_t LINE_115200[7] = { 0x00, 0xc2, 0x01, 0x00, 0, 0, 8 };

void sim_urb_enumerated(sim_board *b)
{
    sim_transport *s = b->sim;
    /* Addresses 2..127 in turn, as a hub hands them out (1 is the root hub). */
    if (s->next_devnum < 2 || s->next_devnum > 127)
        s->next_devnum = 2;
    b->devnum = s->next_devnum++;
    b->config = 1; /* the host's kernel configures it when it arrives */
    memset(b->alt, 0, sizeof b->alt);
    b->claimed = 0;
    b->halted = 0;
    memcpy(b->line_coding[0], LINE_115200, 7);
    memcpy(b->line_coding[1], LINE_115200, 7);
    b->line_state[0] = b->line_state[1] = 0;
    b->echo_len = 0;
    b->leaving = false;
    sim_pb_reset(b);
}

bool sim_urb_active(const sim_board *b)
{
    return b->urbs > 0;
}

/* ---- queues ---- */

static void finish(sim_board *b, sim_urb *su, int status)
{
    su->u.status = status;
    su->finished = true;
    su->next = NULL;
    if (b->fin_tail)
        b->fin_tail->next = su;
    else
        b->fin = su;
    b->fin_tail = su;
}

static sim_urb *pop_head(sim_board *b, int slot)
{
    sim_urb *su = b->q[slot];
    if (su) {
        b->q[slot] = su->next;
        if (!b->q[slot])
            b->qt[slot] = NULL;
        su->queued = false;
    }
    return su;
}

void sim_urb_complete_head(sim_board *b, int slot, int status)
{
    finish(b, pop_head(b, slot), status);
}

static void fail_queued(sim_board *b, int status, bool keep_control)
{
    for (int slot = keep_control ? 1 : 0; slot < SIM_EP_SLOTS; slot++)
        while (b->q[slot])
            sim_urb_complete_head(b, slot, status);
}

/* Calls `done` for every finished URB, in order. A callback may submit, cancel
 * or free URBs; the board stays (boards live as long as the transport). */
static void run_completions(sim_board *b)
{
    while (b->fin) {
        sim_urb *su = b->fin;
        b->fin = su->next;
        if (!b->fin)
            b->fin_tail = NULL;
        su->next = NULL;
        su->finished = false;
        b->urbs--;
        if (su->u.done)
            su->u.done(&su->u);
    }
}

void sim_urb_fail_all(sim_board *b)
{
    b->leaving = true;
    fail_queued(b, -ENODEV, false);
    run_completions(b);
}

/* ---- endpoint 0 ---- */

static int cdc_index(const sim_board *b, uint16_t iface)
{
    if (b->bootsel)
        return -1;
    if (iface == 0)
        return 0;
    if (iface == 2 && is_pico_ice(b))
        return 1;
    return -1;
}

static uint32_t reply(wrk_urb *u, uint16_t wlength, const void *data, size_t n)
{
    size_t room = wlength < u->size ? wlength : u->size;
    if (n > room)
        n = room;
    memcpy(u->buf, data, n);
    return (uint32_t)n;
}

static int set_dtr(sim_board *b, int cdc, uint16_t lines)
{
    uint16_t was = b->line_state[cdc];
    b->line_state[cdc] = lines;
    if (cdc == 0 && (was & 1) != (lines & 1))
        sim_fw_dtr(b, (lines & 1) != 0);
    return 0;
}

static int get_descriptor(sim_board *b, wrk_urb *u, uint16_t wvalue, uint16_t wlength)
{
    const sim_identity *id = sim_identity_of(b);
    uint8_t type = (uint8_t)(wvalue >> 8), index = (uint8_t)wvalue;
    uint8_t str[256];
    size_t n;
    switch (type) {
    case 1:
        u->actual = reply(u, wlength, id->device, 18);
        return 0;
    case 2:
        if (index != 0)
            return -EPIPE;
        u->actual = reply(u, wlength, id->config, id->config_len);
        return 0;
    case 3:
        n = sim_desc_string(id, b->serial, index, str, sizeof str);
        if (n == 0)
            return -EPIPE;
        u->actual = reply(u, wlength, str, n);
        return 0;
    default:
        return -EPIPE; /* device qualifier, BOS...: a full-speed USB 2.0 device has none */
    }
}

static int standard(sim_board *b, wrk_urb *u, const ifm_usb_setup *s)
{
    static const uint8_t zero2[2] = { 0, 0 };
    const sim_identity *id = sim_identity_of(b);
    wrk_usb_desc d;
    sim_desc_info(id, b->config, &d);
    uint8_t iface = (uint8_t)s->wIndex;
    switch (s->bmRequestType << 8 | s->bRequest) {
    case 0x8006:
        return get_descriptor(b, u, s->wValue, s->wLength);
    case 0x8000: /* GET_STATUS: bus powered, no remote wakeup */
    case 0x8100:
        u->actual = reply(u, s->wLength, zero2, 2);
        return 0;
    case 0x8200: {
        wrk_usb_ep ep;
        uint8_t owner;
        if (s->wIndex & 0x0f && sim_desc_find_ep(id, b->alt, (uint8_t)s->wIndex, &ep, &owner) != 0)
            return -EPIPE;
        uint8_t st[2] = { (b->halted >> slot_of((uint8_t)s->wIndex, WRK_EP_BULK)) & 1, 0 };
        u->actual = reply(u, s->wLength, st, 2);
        return 0;
    }
    case 0x8008:
        u->actual = reply(u, s->wLength, &b->config, 1);
        return 0;
    case 0x0009:
        return sim_usb_set_config(&b->sim->base, b->dev, (uint8_t)s->wValue) ? -EPIPE : 0;
    case 0x810a:
        if (iface >= d.nifaces)
            return -EPIPE;
        u->actual = reply(u, s->wLength, &b->alt[iface], 1);
        return 0;
    case 0x010b:
        return sim_usb_set_altsetting(&b->sim->base, b->dev, iface, (uint8_t)s->wValue) ? -EPIPE : 0;
    case 0x0201: /* CLEAR_FEATURE(ENDPOINT_HALT) */
    case 0x0203: /* SET_FEATURE(ENDPOINT_HALT) */
        if (s->wValue != 0 || (s->wIndex & 0x0f) == 0)
            return s->wValue == 0 ? 0 : -EPIPE;
        if (s->bRequest == 1)
            b->halted &= ~(1u << slot_of((uint8_t)s->wIndex, WRK_EP_BULK));
        else
            b->halted |= 1u << slot_of((uint8_t)s->wIndex, WRK_EP_BULK);
        return 0;
    case 0x0001: /* device remote wakeup on/off: accepted, never used */
    case 0x0003:
        return 0;
    default:
        return -EPIPE; /* SET_ADDRESS (the host controller's job), SYNCH_FRAME, ... */
    }
}

static int cdc_class(sim_board *b, wrk_urb *u, const ifm_usb_setup *s, bool *reboot)
{
    int cdc = cdc_index(b, s->wIndex);
    if (cdc < 0 || (s->bmRequestType & 0x1f) != 1)
        return -EPIPE; /* DFU, mass storage, PICOBOOT, reset interface: not modelled */
    switch (s->bmRequestType << 8 | s->bRequest) {
    case 0x2120: /* SET_LINE_CODING */
        if (s->wLength < 7)
            return -EPIPE;
        memcpy(b->line_coding[cdc], u->buf, 7);
        u->actual = 7;
        uint32_t baud =
            (uint32_t)u->buf[0] | (uint32_t)u->buf[1] << 8 | (uint32_t)u->buf[2] << 16 | (uint32_t)u->buf[3] << 24;
        if (baud == 1200)
            *reboot = true;
        return 0;
    case 0xa121: /* GET_LINE_CODING */
        u->actual = reply(u, s->wLength, b->line_coding[cdc], 7);
        return 0;
    case 0x2122: /* SET_CONTROL_LINE_STATE */
        return set_dtr(b, cdc, s->wValue);
    case 0x2123: /* SEND_BREAK */
        return 0;
    default:
        return -EPIPE;
    }
}

static int control(sim_board *b, wrk_urb *u, bool *reboot)
{
    ifm_usb_setup s;
    ifm_usb_setup_get(u->setup, &s);
    u->actual = 0;
    switch (s.bmRequestType & 0x60) {
    case 0x00:
        return standard(b, u, &s);
    case 0x20:
        return cdc_class(b, u, &s, reboot);
    case 0x40:
        if (b->bootsel && (s.bmRequestType & 0x1f) == 1 && (uint8_t)s.wIndex == SIM_PB_IFACE)
            return sim_pb_control(b, u, &s);
        return -EPIPE; /* the reset interface's, and any other vendor request */
    default:
        return -EPIPE;
    }
}

/* ---- data endpoints ---- */

/* OUT into the firmware's FIFO (CDC0). True if the head URB completed. */
static bool out_to_fifo(sim_board *b, sim_urb *su, uint32_t *budget)
{
    uint32_t n = su->u.len - su->off;
    if (n > *budget)
        n = *budget;
    if (!sim_fw_dropping(b)) {
        size_t room = SIM_FIFO_SIZE - b->fifo_len;
        if (n > room)
            n = (uint32_t)room;
        memcpy(b->fifo + b->fifo_len, su->u.buf + su->off, n);
        b->fifo_len += n;
    }
    su->off += n;
    *budget -= n;
    return su->off == su->u.len;
}

static bool out_to_echo(sim_board *b, sim_urb *su, uint32_t *budget)
{
    uint32_t n = su->u.len - su->off;
    size_t room = sizeof b->echo - b->echo_len;
    if (n > *budget)
        n = *budget;
    if (n > room)
        n = (uint32_t)room;
    memcpy(b->echo + b->echo_len, su->u.buf + su->off, n);
    b->echo_len += n;
    su->off += n;
    *budget -= n;
    return su->off == su->u.len;
}

/* IN from `src` (consumed from the front). True if the head URB completed. */
static bool in_from(sim_urb *su, uint8_t *src, size_t *srclen, uint32_t *budget)
{
    if (su->u.len == 0)
        return true;
    if (*srclen == 0 || *budget == 0)
        return false;
    size_t n = *srclen;
    if (n > su->u.len)
        n = su->u.len;
    if (n > *budget)
        n = *budget;
    memcpy(su->u.buf, src, n);
    memmove(src, src + n, *srclen - n);
    *srclen -= n;
    *budget -= (uint32_t)n;
    su->u.actual = (uint32_t)n;
    return true;
}

static bool in_from_tx(sim_board *b, sim_urb *su, uint32_t *budget)
{
    if (su->u.len == 0)
        return true;
    size_t avail = b->tx_len - b->tx_off;
    if (avail == 0 || *budget == 0)
        return false;
    size_t n = avail < su->u.len ? avail : su->u.len;
    if (n > *budget)
        n = *budget;
    memcpy(su->u.buf, b->tx + b->tx_off, n);
    b->tx_off += n;
    if (b->tx_off == b->tx_len)
        b->tx_off = b->tx_len = 0;
    *budget -= (uint32_t)n;
    su->u.actual = (uint32_t)n;
    return true;
}

/* Moves the head of one data endpoint as far as it goes. */
static void serve_slot(sim_board *b, int slot, uint32_t *out_budget, uint32_t *in_budget)
{
    sim_urb *su;
    if (b->bootsel && sim_pb_slot(slot)) {
        if (slot < 16) /* both of PICOBOOT's endpoints, together */
            sim_pb_serve(b, out_budget, in_budget);
        return;
    }
    while ((su = b->q[slot]) != NULL && !su->lost) {
        if (b->halted & (1u << slot)) {
            sim_urb_complete_head(b, slot, -EPIPE);
            continue;
        }
        bool in = slot >= 16, done = false;
        uint8_t num = (uint8_t)(slot & 15);
        if (b->bootsel || su->u.type == WRK_EP_ISO) {
            sim_urb_complete_head(b, slot, -EPIPE); /* mass storage is not modelled */
            continue;
        }
        if (su->u.type == WRK_EP_INTERRUPT)
            return; /* notifications: none is ever sent */
        if (num == 2)
            done = in ? in_from_tx(b, su, in_budget) : out_to_fifo(b, su, out_budget);
        else if (num == 4)
            done = in ? in_from(su, b->echo, &b->echo_len, in_budget) : out_to_echo(b, su, out_budget);
        if (!done)
            return;
        if (!in)
            su->u.actual = su->off;
        int status = in && su->u.actual < su->u.len && (su->u.flags & WRK_URB_SHORT_NOT_OK) ? -EREMOTEIO : 0;
        sim_urb_complete_head(b, slot, status);
    }
}

static bool more_work(const sim_board *b)
{
    if (b->fin)
        return true;
    if (b->bootsel && sim_pb_more_work(b))
        return true;
    for (int slot = 1; slot < SIM_EP_SLOTS; slot++) {
        if (b->bootsel && sim_pb_slot(slot))
            continue;
        const sim_urb *su = b->q[slot];
        if (!su || su->lost || su->u.type == WRK_EP_INTERRUPT)
            continue;
        int num = slot & 15;
        bool in = slot >= 16;
        if ((b->halted & (1u << slot)) || b->bootsel || (num != 2 && num != 4))
            return true;
        if (num == 2 && (in ? b->tx_len > b->tx_off : (b->fifo_len < SIM_FIFO_SIZE || sim_fw_dropping(b))))
            return true;
        if (num == 4 && (in ? b->echo_len > 0 : b->echo_len < sizeof b->echo))
            return true;
    }
    return false;
}

void sim_urb_tick(sim_board *b)
{
    bool reboot = false;
    while (b->q[0]) {
        sim_urb *su = b->q[0];
        int status = control(b, &su->u, &reboot);
        sim_urb_complete_head(b, 0, status);
    }
    uint32_t out_budget = b->sim->opt.usb_packet, in_budget = b->sim->opt.usb_packet;
    for (int slot = 1; slot < SIM_EP_SLOTS; slot++)
        serve_slot(b, slot, &out_budget, &in_budget);
    sim_fw_consume(b);
    run_completions(b);
    if (reboot && !sim_rebooting(b) && b->dev) {
        /* The firmware resets into the bootrom once the request has completed. */
        sim_schedule_leave(b, 0, NEXT_BOOTSEL, b->sim->opt.enum_ms, false);
        return;
    }
    if (more_work(b))
        sim_usb_kick(b);
}

/* ---- ops ---- */

static int usable(wrk_transport *t, wrk_usbdev *dev)
{
    if (!sim_of(t))
        return -EINVAL;
    int rc = sim_dev_usable(dev);
    if (rc)
        return -ENODEV; /* gone, or about to reboot: either way this enumeration is over */
    return dev->board->leaving ? -ENODEV : 0;
}

int sim_usb_desc(wrk_transport *t, wrk_usbdev *dev, wrk_usb_desc *out)
{
    int rc = usable(t, dev);
    if (rc)
        return rc;
    sim_board *b = dev->board;
    memset(out, 0, sizeof *out);
    sim_desc_info(sim_identity_of(b), b->config, out);
    out->busnum = 1;
    out->devnum = b->devnum;
    out->speed = 2; /* full speed */
    snprintf(out->path, sizeof out->path, "sim/%s", b->serial);
    return 0;
}

int sim_usb_endpoints(wrk_transport *t, wrk_usbdev *dev, uint8_t iface, uint8_t alt, wrk_usb_ep *eps, size_t max)
{
    int rc = usable(t, dev);
    if (rc)
        return rc;
    if (dev->board->config == 0)
        return -ENOENT;
    return sim_desc_endpoints(sim_identity_of(dev->board), iface, alt, eps, max);
}

static int iface_ok(sim_board *b, uint8_t iface)
{
    wrk_usb_desc d;
    sim_desc_info(sim_identity_of(b), b->config, &d);
    return iface < d.nifaces ? 0 : -ENOENT;
}

int sim_usb_claim(wrk_transport *t, wrk_usbdev *dev, uint8_t iface)
{
    int rc = usable(t, dev);
    if (!rc)
        rc = iface_ok(dev->board, iface);
    if (!rc)
        dev->board->claimed |= 1u << iface;
    return rc;
}

int sim_usb_release(wrk_transport *t, wrk_usbdev *dev, uint8_t iface)
{
    int rc = usable(t, dev);
    if (rc)
        return rc;
    if (iface >= WRK_USB_MAX_IFACES || !(dev->board->claimed & (1u << iface)))
        return -ENOENT;
    dev->board->claimed &= ~(1u << iface);
    return 0;
}

/* Line state drops and data URBs end when the configuration or a reset changes
 * what the endpoints are. */
static void endpoints_reset(sim_board *b, int status)
{
    fail_queued(b, status, true);
    b->halted = 0;
    sim_pb_reset(b); /* the bootrom resets PICOBOOT when it is configured */
    memset(b->alt, 0, sizeof b->alt);
    set_dtr(b, 0, 0);
    b->line_state[1] = 0;
    sim_usb_kick(b);
}

int sim_usb_set_config(wrk_transport *t, wrk_usbdev *dev, uint8_t value)
{
    int rc = usable(t, dev);
    if (rc)
        return rc;
    sim_board *b = dev->board;
    if (value > 1)
        return -EINVAL;
    if (value == b->config)
        return 0;
    if (b->claimed)
        return -EBUSY;
    b->config = value;
    endpoints_reset(b, -ESHUTDOWN);
    return 0;
}

int sim_usb_set_altsetting(wrk_transport *t, wrk_usbdev *dev, uint8_t iface, uint8_t alt)
{
    int rc = usable(t, dev);
    if (rc)
        return rc;
    sim_board *b = dev->board;
    if (b->config == 0 || sim_desc_endpoints(sim_identity_of(b), iface, alt, NULL, 0) < 0)
        return -EINVAL;
    b->alt[iface] = alt;
    return 0;
}

int sim_usb_clear_halt(wrk_transport *t, wrk_usbdev *dev, uint8_t ep)
{
    int rc = usable(t, dev);
    if (rc)
        return rc;
    dev->board->halted &= ~(1u << slot_of(ep, WRK_EP_BULK));
    return 0;
}

int sim_usb_reset(wrk_transport *t, wrk_usbdev *dev)
{
    int rc = usable(t, dev);
    if (rc)
        return rc;
    /* The same device comes back at the same address, configured again by the
     * host; TinyUSB sees the bus reset as an unmount (DTR low). */
    endpoints_reset(dev->board, -ESHUTDOWN);
    return 0;
}

wrk_urb *sim_urb_alloc(wrk_transport *t, wrk_usbdev *dev, size_t size)
{
    if (!sim_of(t) || !dev || dev->board->dev != dev || size > (1u << 20))
        return NULL;
    sim_urb *su = calloc(1, sizeof *su + (size ? size : 1));
    if (!su)
        return NULL;
    su->board = dev->board;
    su->dev = dev;
    su->u.buf = (uint8_t *)(su + 1);
    su->u.size = size;
    return &su->u;
}

void sim_urb_free(wrk_transport *t, wrk_urb *urb)
{
    sim_urb *su = (sim_urb *)urb;
    if (!su || su->queued || su->finished)
        return; /* submitted: the caller broke the contract; leaking beats a use after free */
    free(su);
}

int sim_urb_submit(wrk_transport *t, wrk_urb *urb)
{
    sim_urb *su = (sim_urb *)urb;
    if (!su || su->queued || su->finished)
        return -EINVAL;
    sim_board *b = su->board;
    if (b->dev != su->dev)
        return -ENODEV;
    int rc = usable(t, su->dev);
    if (rc)
        return rc;
    wrk_urb *u = &su->u;
    if (u->type == WRK_EP_CONTROL) {
        ifm_usb_setup s;
        ifm_usb_setup_get(u->setup, &s);
        if (s.wLength > u->size)
            return -EINVAL;
        u->len = s.wLength;
    } else {
        if (u->len > u->size)
            return -EINVAL;
        wrk_usb_ep ep;
        uint8_t owner;
        if (b->config == 0 || sim_desc_find_ep(sim_identity_of(b), b->alt, u->ep, &ep, &owner) != 0)
            return -ENOENT;
        if (ep.type != u->type)
            return -EINVAL;
    }
    u->status = 0;
    u->actual = 0;
    su->off = 0;
    su->lost = false;
    if (u->type == WRK_EP_BULK || u->type == WRK_EP_INTERRUPT) {
        if (b->faults[SIM_FAULT_NO_COMPLETION]) {
            b->faults[SIM_FAULT_NO_COMPLETION]--;
            su->lost = true;
        } else if (u->type == WRK_EP_BULK && b->faults[SIM_FAULT_STALL]) {
            b->faults[SIM_FAULT_STALL]--;
            b->halted |= 1u << slot_of(u->ep, u->type);
        }
    }
    int slot = slot_of(u->ep, u->type);
    su->slot = (uint8_t)slot;
    su->queued = true;
    su->next = NULL;
    if (b->qt[slot])
        b->qt[slot]->next = su;
    else
        b->q[slot] = su;
    b->qt[slot] = su;
    b->urbs++;
    sim_usb_kick(b);
    return 0;
}

int sim_urb_cancel(wrk_transport *t, wrk_urb *urb)
{
    sim_urb *su = (sim_urb *)urb;
    if (!su || !su->queued)
        return -ENOENT;
    sim_board *b = su->board;
    sim_urb **pp = &b->q[su->slot], *prev = NULL;
    while (*pp && *pp != su) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return -ENOENT;
    *pp = su->next;
    if (b->qt[su->slot] == su)
        b->qt[su->slot] = prev;
    su->queued = false;
    su->u.actual = su->slot < 16 && su->u.type != WRK_EP_CONTROL ? su->off : 0;
    finish(b, su, -ECONNRESET);
    sim_usb_kick(b);
    return 0;
}

bool sim_take_hook(wrk_transport *t, wrk_usbdev *dev, wrk_hook hook)
{
    if (!sim_of(t) || !dev || (unsigned)hook >= WRK_HOOK_COUNT)
        return false;
    sim_board *b = dev->board;
    unsigned *f = &b->faults[SIM_FAULT_PARTIAL_PDU + (int)hook];
    if (!*f)
        return false;
    (*f)--;
    return true;
}
