/* What the worker's state machine emits, behind one ops table (the way
 * transport.h hides the USB backends one layer down). board.c, flash.c and
 * upload.c never publish anything themselves: every board state, worker birth,
 * board event and batch of results goes through the wrk_sink in wrk_ctx.
 *
 * Implementations: the MQTT bridge (wrk/bridge.c) encodes each call as a
 * message; the unit tests (tests/unit/wrk/rec_sink.c) record the calls so they
 * can assert on the exact sequence. A NULL `ops` (or a NULL op) drops the call.
 *
 * Threading and re-entrancy: ops are called on the worker's loop, from inside a
 * state-machine transition. An op must not call back into the state machine
 * (no wrk_board_*, wrk_upload_*, wrk_flash_*, wrk_cmd_* calls) and must not
 * change the board or the worker; it reads them and returns. Anything it needs
 * to do to a board later, it does from its own callback (a later loop turn).
 *
 * Lifetime: `w` and `b` stay valid until wrk_boards_free() (boards are never
 * freed while the worker runs), so a sink may keep a board pointer. Everything
 * else it is handed (strings, the event, the results and their samples) is
 * borrowed for the duration of the call only: copy what you keep.
 */
#ifndef ICEFARM_WRK_SINK_H
#define ICEFARM_WRK_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "icefarm/msg.h"

struct wrk_ctx;
struct wrk_board;

/* A board event for its holder (icefarm/<serial>/event). New events add fields
 * here; a sink ignores the fields it does not know. */
typedef struct {
    const char *name;     /* "initialized", "failure", "flashed", "error" (a refused command) */
    const char *reason;   /* NULL, or why */
    const char *batch_id; /* NULL or "": the refused evaluate's batch, for "error" */
    const char *client;   /* the client it is meant for (the holder, or the refused one); "" if unknown */
    /* "usbip exported" / "usbip detached": where the export is served */
    const char *busid; /* NULL for every other event */
    const char *host;
    uint32_t port;
} wrk_event;

typedef struct {
    /* A board was seen for the first time (before its first state): the bridge
     * subscribes to its command topic. */
    void (*board_added)(void *ctx, struct wrk_board *b);
    /* The board's state, reason or kind changed, or must be said again (a refused
     * reservation, the worker stopping). Read b->state, b->reason, wrk_board_kind(b),
     * b->exported. */
    void (*board_state)(void *ctx, const struct wrk_board *b);
    /* The worker's birth: `online` with the boards that are present (state !=
     * gone), or the clean goodbye when it stops (online = false). Emitted when
     * a board arrives or leaves the farm, and when the worker stops. */
    void (*worker_state)(void *ctx, const struct wrk_ctx *w, bool online);
    void (*event)(void *ctx, const struct wrk_board *b, const wrk_event *ev);
    /* One batch of measurements, in the order they were taken. */
    void (*results)(void *ctx, const struct wrk_board *b, const char *batch_id, const ifm_result *r, size_t n);
} wrk_sink_ops;

typedef struct {
    const wrk_sink_ops *ops; /* static, not owned; NULL drops everything */
    void *ctx;               /* the implementation's; not owned */
} wrk_sink;

#endif
