/* The sim backend's wrk_transport: board lifetime, enumeration and flashing.
 * The CDC ops live in sim_usb.c, the firmware in sim_board.c. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_internal.h"

static const wrk_transport_ops sim_ops;

sim_transport *sim_of(const wrk_transport *t)
{
    return t && t->ops == &sim_ops ? (sim_transport *)t : NULL;
}

void sim_options_default(sim_options *o)
{
    *o = (sim_options){
        .boards = 4,
        .seed = "sim",
        .initial_fw = SIM_FW_DEFAULT,
        .count_window_ms = 1000,
        .flash_ms = 300,
        .enum_ms = 150,
        .default_print_ms = 5,
        .watchdog_ms = 2000,
        .replug_ms = 1000,
        .slow_flash_factor = 10,
        .usb_packet = 512,
        .usb_tick_ms = 0,
    };
}

void sim_serial_for(const char *seed, unsigned index, char out[SIM_SERIAL_LEN + 1])
{
    char idx[16];
    snprintf(idx, sizeof idx, "/%u", index);
    uint64_t h = 0xcbf29ce484222325u; /* FNV-1a 64 */
    for (const char *p = seed ? seed : ""; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3u;
    for (const char *p = idx; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3u;
    /* splitmix64's finaliser spreads FNV's weak low bits over all 16 digits. */
    h += 0x9e3779b97f4a7c15u;
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9u;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebu;
    h ^= h >> 31;
    snprintf(out, SIM_SERIAL_LEN + 1, "%016" PRIX64, h);
}

sim_board *sim_find(sim_transport *s, const char *serial)
{
    for (size_t i = 0; serial && i < s->nboards; i++)
        if (strcmp(s->boards[i].serial, serial) == 0)
            return &s->boards[i];
    return NULL;
}

/* ---- enumeration ---- */

static void enum_fire(ifm_loop *loop, void *arg);

void sim_cancel_enum(sim_board *b)
{
    ifm_timer_cancel(b->sim->base.loop, b->t_enum);
    b->t_enum = 0;
}

void sim_schedule_leave(sim_board *b, uint32_t ms, sim_next next, uint32_t next_ms, bool flap)
{
    sim_cancel_enum(b);
    b->enum_arrive = false;
    b->leave_flap = flap;
    b->next = next;
    b->next_ms = next_ms;
    b->t_enum = ifm_timer_add(b->sim->base.loop, ms, enum_fire, b);
}

void sim_schedule_arrive(sim_board *b, uint32_t ms, bool bootsel)
{
    sim_cancel_enum(b);
    b->enum_arrive = true;
    b->leave_flap = false;
    b->bootsel = bootsel;
    b->t_enum = ifm_timer_add(b->sim->base.loop, ms, enum_fire, b);
}

static void usb_id(const sim_board *b, wrk_usbinfo *info)
{
    if (b->bootsel) {
        info->vid = WRK_VID_RPI;
        info->pid = WRK_PID_BOOTSEL;
    } else if (b->flashed == SIM_FW_PULSECOUNT || b->flashed == SIM_FW_VARIANCE) {
        info->vid = WRK_VID_PIDCODES;
        info->pid = WRK_PID_PICO_ICE;
    } else {
        /* default firmware, and unknown firmware looks like pico-sdk stdio too */
        info->vid = WRK_VID_RPI;
        info->pid = WRK_PID_PICO_STDIO;
    }
    snprintf(info->serial, sizeof info->serial, "%s", b->serial);
}

static void do_arrive(sim_board *b)
{
    sim_transport *s = b->sim;
    if (!b->plugged || b->dev)
        return;
    wrk_usbdev *dev = calloc(1, sizeof *dev);
    if (!dev) {
        sim_schedule_arrive(b, s->opt.enum_ms, b->bootsel); /* try again later */
        return;
    }
    dev->board = b;
    usb_id(b, &dev->info);
    b->dev = dev;
    sim_urb_enumerated(b);
    sim_fw_boot(b);
    if (b->faults[SIM_FAULT_DISCONNECT])
        sim_schedule_leave(b, s->opt.replug_ms, NEXT_APP, s->opt.replug_ms, true);
    s->ev.arrive(s->ev_arg, dev, &dev->info);
}

static void do_leave(sim_board *b)
{
    sim_transport *s = b->sim;
    wrk_usbdev *dev = b->dev;
    if (b->leave_flap && b->faults[SIM_FAULT_DISCONNECT])
        b->faults[SIM_FAULT_DISCONNECT]--;
    /* Every URB ends first, while the board still points at this enumeration. */
    sim_urb_fail_all(b);
    /* Power off: the channel goes without callbacks, the firmware stops. */
    sim_usb_close(b);
    sim_fw_stop(b);
    sim_pb_stop(b);
    b->dev = NULL; /* ops on dev fail with -ENODEV from here on */
    /* Set up what follows before calling out, so the callbacks see a consistent
     * board (and may e.g. unplug it). */
    if (b->next != NEXT_NONE && b->plugged)
        sim_schedule_arrive(b, b->next_ms, b->next == NEXT_BOOTSEL);
    if (b->flashing) {
        ifm_timer_cancel(s->base.loop, b->t_flash);
        b->t_flash = 0;
        b->flashing = false;
        uf2_image_free(&b->flash_img);
        wrk_done_cb done = b->flash_done;
        void *arg = b->flash_arg;
        b->flash_done = NULL;
        done(arg, -ENODEV, "device left during flash");
    }
    if (dev) {
        s->ev.leave(s->ev_arg, dev);
        free(dev);
    }
}

static void enum_fire(ifm_loop *loop, void *arg)
{
    sim_board *b = arg;
    b->t_enum = 0;
    if (b->enum_arrive)
        do_arrive(b);
    else
        do_leave(b);
}

/* ---- ops ---- */

static int sim_start(wrk_transport *t, const wrk_transport_events *ev, void *arg)
{
    sim_transport *s = sim_of(t);
    if (!s || !ev || !ev->arrive || !ev->leave)
        return -EINVAL;
    if (s->started)
        return -EALREADY;
    s->started = true;
    s->ev = *ev;
    s->ev_arg = arg;
    for (size_t i = 0; i < s->nboards; i++)
        if (s->boards[i].plugged)
            sim_schedule_arrive(&s->boards[i], 0, false);
    return 0;
}

static int sim_touch_1200(wrk_transport *t, wrk_usbdev *dev)
{
    int rc = sim_dev_usable(dev);
    if (rc)
        return rc;
    sim_board *b = dev->board;
    if (b->bootsel)
        return -EOPNOTSUPP; /* the bootrom has no CDC to touch */
    /* Honoured even by hung or unknown firmware: the farm relies on it (ref 5). */
    sim_schedule_leave(b, 0, NEXT_BOOTSEL, b->sim->opt.enum_ms, false);
    return 0;
}

static void flash_fire(ifm_loop *loop, void *arg)
{
    sim_board *b = arg;
    b->t_flash = 0;
    b->flashing = false;
    int status = b->flash_status;
    if (status == 0) {
        b->flashed = b->flash_kind;
        /* What PICOBOOT reads back from now on; if the flash memory cannot be
         * had, the contents follow `flashed` (sim_picoboot.c). */
        if (sim_flash_store(b, &b->flash_img) != 0)
            sim_flash_free(b);
        /* The bootrom reboots into the new image once the last block is written. */
        sim_schedule_leave(b, 0, NEXT_APP, b->sim->opt.enum_ms, false);
    }
    uf2_image_free(&b->flash_img);
    char reason[UF2_REASON_MAX];
    snprintf(reason, sizeof reason, "%s", b->flash_reason);
    wrk_done_cb done = b->flash_done;
    void *darg = b->flash_arg;
    b->flash_done = NULL;
    done(darg, status, status ? reason : NULL);
}

static int sim_flash_uf2(wrk_transport *t, wrk_usbdev *dev, const uint8_t *uf2, size_t len, wrk_done_cb done, void *arg)
{
    int rc = sim_dev_usable(dev);
    if (rc)
        return rc;
    sim_board *b = dev->board;
    if (!done)
        return -EINVAL;
    if (!b->bootsel)
        return -EOPNOTSUPP;
    if (b->flashing)
        return -EBUSY;
    const sim_options *o = &b->sim->opt;
    uint32_t ms = o->flash_ms;
    uf2_image img;
    b->flash_reason[0] = '\0';
    b->flash_status = 0;
    /* Validate now, so the caller's buffer is not needed after this call. */
    if (uf2_parse(uf2, len, UF2_TARGET_RP2350, &img, b->flash_reason) != 0) {
        b->flash_status = -EINVAL;
        ms = 0; /* a real copy would fail quickly too */
    } else {
        b->flash_kind = sim_fw_identify(img.data, img.len);
        uf2_image_free(&b->flash_img);
        b->flash_img = img; /* written into the flash memory when the flash completes */
        if (b->faults[SIM_FAULT_FLASH_FAIL]) {
            b->faults[SIM_FAULT_FLASH_FAIL]--;
            b->flash_status = -EIO;
            snprintf(b->flash_reason, sizeof b->flash_reason, "simulated flash failure: verify mismatch");
        } else if (b->faults[SIM_FAULT_WRONG_FW]) {
            b->faults[SIM_FAULT_WRONG_FW]--;
            b->flash_kind = SIM_FW_UNKNOWN;
        }
        if (b->faults[SIM_FAULT_SLOW_FLASH]) {
            b->faults[SIM_FAULT_SLOW_FLASH]--;
            ms *= o->slow_flash_factor;
        }
    }
    b->t_flash = ifm_timer_add(b->sim->base.loop, ms, flash_fire, b);
    if (!b->t_flash)
        return -ENOMEM;
    b->flashing = true;
    b->flash_done = done;
    b->flash_arg = arg;
    return 0;
}

static void free_board(sim_board *b)
{
    ifm_loop *l = b->sim->base.loop;
    ifm_timer_cancel(l, b->t_enum);
    ifm_timer_cancel(l, b->t_usb);
    ifm_timer_cancel(l, b->t_fw);
    ifm_timer_cancel(l, b->t_flash);
    sim_pb_stop(b);
    sim_usb_free(b);
    sim_flash_free(b);
    uf2_image_free(&b->flash_img);
    free(b->dev);
}

static void sim_free(wrk_transport *t)
{
    sim_transport *s = sim_of(t);
    if (!s)
        return;
    for (size_t i = 0; i < s->nboards; i++)
        free_board(&s->boards[i]);
    free(s->boards);
    free(s->seed);
    free(s);
}

static const wrk_transport_ops sim_ops = {
    .name = "sim",
    .start = sim_start,
    .touch_1200 = sim_touch_1200,
    .flash_uf2 = sim_flash_uf2,
    .cdc_open = sim_cdc_open,
    .cdc_write = sim_cdc_write,
    .cdc_close = sim_cdc_close,
    .usb_desc = sim_usb_desc,
    .usb_endpoints = sim_usb_endpoints,
    .usb_claim = sim_usb_claim,
    .usb_release = sim_usb_release,
    .usb_set_config = sim_usb_set_config,
    .usb_set_altsetting = sim_usb_set_altsetting,
    .usb_clear_halt = sim_usb_clear_halt,
    .usb_reset = sim_usb_reset,
    .urb_alloc = sim_urb_alloc,
    .urb_free = sim_urb_free,
    .urb_submit = sim_urb_submit,
    .urb_cancel = sim_urb_cancel,
    .take_hook = sim_take_hook,
    .free = sim_free,
};

wrk_transport *sim_transport_new(ifm_loop *loop, const sim_options *opts)
{
    sim_options o;
    if (opts)
        o = *opts;
    else
        sim_options_default(&o);
    if (!loop || o.usb_packet == 0 || o.slow_flash_factor == 0 || o.boards > 65536)
        return NULL;
    sim_transport *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->base = (wrk_transport){ .ops = &sim_ops, .loop = loop };
    if (sim_desc_build(&s->descs) != 0) {
        free(s);
        return NULL;
    }
    s->seed = strdup(o.seed ? o.seed : "sim");
    s->boards = calloc(o.boards ? o.boards : 1, sizeof *s->boards);
    if (!s->seed || !s->boards) {
        free(s->seed);
        free(s->boards);
        free(s);
        return NULL;
    }
    o.seed = s->seed;
    s->opt = o;
    s->nboards = o.boards;
    for (size_t i = 0; i < s->nboards; i++) {
        sim_board *b = &s->boards[i];
        b->sim = s;
        b->plugged = true;
        b->flashed = o.initial_fw;
        sim_serial_for(s->seed, (unsigned)i, b->serial);
    }
    return &s->base;
}
