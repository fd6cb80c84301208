/* The worker as a whole: its boards by serial, the transport's hotplug events
 * routed to them, start, the clean goodbye and the final free. */
#include <stdlib.h>
#include <string.h>

#include "icefarm/log.h"
#include "icefarm/grow.h"
#include "worker.h"

wrk_board *wrk_board_get(wrk_ctx *w, const char *serial, bool create)
{
    for (size_t i = 0; i < w->nboards; i++)
        if (strcmp(w->boards[i]->serial, serial) == 0)
            return w->boards[i];
    if (!create || !ifm_serial_valid(serial))
        return NULL;
    wrk_board **nb = ifm_grow(w->boards, &w->capboards, w->nboards, sizeof *nb, 16);
    if (!nb)
        return NULL;
    w->boards = nb;
    /* Boards are never freed before the worker exits: timers and transport
     * callbacks may hold pointers to them. */
    wrk_board *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->w = w;
    snprintf(b->serial, sizeof b->serial, "%s", serial);
    b->state = IFM_BOARD_GONE;
    b->kind = -1;
    w->boards[w->nboards++] = b;
    wrk_emit_board_added(b);
    return b;
}

static void on_arrive(void *arg, wrk_usbdev *dev, const wrk_usbinfo *info)
{
    wrk_ctx *w = arg;
    wrk_board *b = wrk_board_get(w, info->serial, true);
    if (!b) {
        IFM_WARN("ignoring a board with an unusable serial \"%s\"", info->serial);
        return;
    }
    wrk_board_arrive(b, dev, info);
}

static void on_leave(void *arg, wrk_usbdev *dev)
{
    wrk_ctx *w = arg;
    for (size_t i = 0; i < w->nboards; i++)
        if (w->boards[i]->dev == dev) {
            wrk_board_leave(w->boards[i]);
            return;
        }
}

int wrk_start(wrk_ctx *w)
{
    static const wrk_transport_events ev = { on_arrive, on_leave };
    return w->t->ops->start(w->t, &ev, w);
}

void wrk_stop(wrk_ctx *w)
{
    w->stopping = true;
    /* A clean shutdown says so itself (the broker drops the Will on DISCONNECT). */
    wrk_emit_worker(w, false);
    for (size_t i = 0; i < w->nboards; i++) {
        wrk_board *b = w->boards[i];
        if (b->state == IFM_BOARD_GONE)
            continue;
        b->state = IFM_BOARD_GONE;
        snprintf(b->reason, sizeof b->reason, "worker stopped");
        wrk_emit_state(b);
    }
}

void wrk_boards_free(wrk_ctx *w)
{
    for (size_t i = 0; i < w->nboards; i++) {
        wrk_board *b = w->boards[i];
        wrk_upload_free(b);
        free(b->custom);
        ifm_timer_cancel(w->loop, b->state_timer);
        free(b);
    }
    free(w->boards);
    w->boards = NULL;
    w->nboards = w->capboards = 0;
}
