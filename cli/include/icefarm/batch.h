/* libicefarm's batch evaluation engine: N bitstreams over a set of reserved
 * boards, one result per bitstream, whatever the boards do.
 *
 * Work is balanced by keeping at most `window` bitstreams in flight per board and
 * topping a board up whenever one of its results comes back, so faster boards
 * take more. A board that returns nothing for `result_timeout_ms` while it has
 * work is rebooted once (the worker keeps its queue across a reboot); if it
 * stalls again, fails or loses its lease, its in-flight bitstreams move to the
 * other boards and the board is released. Each bitstream is assigned to exactly
 * one board at a time and only that board's result is accepted, so nothing is
 * lost or counted twice. When no board is left, the rest fail explicitly.
 *
 *   icefarm_batch *b = icefarm_batch_new(f, serials, n, NULL, on_result, ctx);
 *   icefarm_batch_add(b, bits, 104090, &index);  ...
 *   icefarm_batch_run(b, 0);          // runs the client's loop until done
 *   icefarm_batch_free(b);
 *
 * The batch works from the handle's loop (its events and a 100 ms timer), so a
 * program that drives the loop itself (icefarm_run_once, see client.h) can skip
 * icefarm_batch_run and count results in its callback instead. A batch belongs
 * to one handle and follows its threading rules; free it before the handle.
 */
#ifndef ICEFARM_BATCH_H
#define ICEFARM_BATCH_H

#include "icefarm/client.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct icefarm_batch icefarm_batch;

typedef struct {
    uint32_t window;            /* bitstreams in flight per board; 0: 2 */
    uint64_t result_timeout_ms; /* a board with work and no result this long is stalled; 0: 60 s */
    bool no_reboot;             /* give up on a stalled board without rebooting it first */
    bool keep_failed_boards;    /* do not end the lease of a board that failed */
} icefarm_batch_opts;

/* Called once per bitstream, in completion order; r->type is
 * ICEFARM_VALUE_FAILED with r->error when it could not be measured. `serial` is
 * the board that measured it ("" when it never reached one). r and its samples
 * are valid only during the call. The callback may call icefarm_batch_add and
 * icefarm_batch_cancel, not icefarm_batch_free. */
typedef void (*icefarm_result_cb)(icefarm_batch *b, size_t index, const char *serial, const icefarm_result *r,
                                  void *arg);
/* Called when a board is dropped from the batch (or rebooted once), with the reason. */
typedef void (*icefarm_board_cb)(icefarm_batch *b, const char *serial, const char *why, void *arg);

/* A batch over boards this client has reserved (with the kind to evaluate);
 * the serials are copied. NULL when out of memory. */
ICEFARM_API icefarm_batch *icefarm_batch_new(icefarm *f, char (*serials)[ICEFARM_SERIAL_MAX], size_t nserials,
                                             const icefarm_batch_opts *opts, icefarm_result_cb on_result, void *arg);
ICEFARM_API void icefarm_batch_on_board_dropped(icefarm_batch *b, icefarm_board_cb cb);
/* Copies the bitstream; *index (may be NULL) numbers bitstreams from 0 in the
 * order added. 0 or -ENOMEM. */
ICEFARM_API int icefarm_batch_add(icefarm_batch *b, const uint8_t *data, size_t len, size_t *index);
/* Runs the handle's loop until every bitstream has its result (0),
 * icefarm_batch_cancel or icefarm_stop (-ECANCELED), or timeout_ms passes
 * (-ETIMEDOUT; 0: no timeout). -EDEADLK inside a callback. */
ICEFARM_API int icefarm_batch_run(icefarm_batch *b, uint64_t timeout_ms);
/* Stops handing out work; icefarm_batch_run returns. Bitstreams in flight may
 * still report. Safe inside callbacks. */
ICEFARM_API void icefarm_batch_cancel(icefarm_batch *b);
ICEFARM_API size_t icefarm_batch_count(const icefarm_batch *b);
ICEFARM_API size_t icefarm_batch_done(const icefarm_batch *b);
ICEFARM_API size_t icefarm_batch_failed(const icefarm_batch *b);
ICEFARM_API size_t icefarm_batch_boards_alive(const icefarm_batch *b);
/* Frees the batch and stops its handlers and timer (boards stay reserved).
 * Not inside the batch's own callbacks. NULL is a no-op. */
ICEFARM_API void icefarm_batch_free(icefarm_batch *b);

#ifdef __cplusplus
}
#endif

#endif
