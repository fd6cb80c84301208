/* The state machine's only way out: every board state, birth, event and batch of
 * results goes through the worker's sink (sink.h). A missing sink or op drops
 * the call, so a core without a bridge still runs. */
#include "worker.h"

#define SINK_OP(w, op) ((w)->sink.ops && (w)->sink.ops->op)

void wrk_emit_board_added(wrk_board *b)
{
    if (SINK_OP(b->w, board_added))
        b->w->sink.ops->board_added(b->w->sink.ctx, b);
}

void wrk_emit_state(const wrk_board *b)
{
    if (SINK_OP(b->w, board_state))
        b->w->sink.ops->board_state(b->w->sink.ctx, b);
}

void wrk_emit_worker(const wrk_ctx *w, bool online)
{
    if (SINK_OP(w, worker_state))
        w->sink.ops->worker_state(w->sink.ctx, w, online);
}

void wrk_emit(const wrk_board *b, const wrk_event *ev)
{
    if (SINK_OP(b->w, event))
        b->w->sink.ops->event(b->w->sink.ctx, b, ev);
}

void wrk_emit_event(const wrk_board *b, const char *name, const char *reason)
{
    const wrk_event ev = { .name = name, .reason = reason, .batch_id = NULL, .client = b->holder };
    wrk_emit(b, &ev);
}

void wrk_emit_results(const wrk_board *b, const resbatch *rb)
{
    if (SINK_OP(b->w, results))
        b->w->sink.ops->results(b->w->sink.ctx, b, rb->batch, rb->r, rb->n);
}
