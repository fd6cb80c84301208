/* The recording sink: see rec_sink.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rec_sink.h"

rec_sink *rec_new(void)
{
    rec_sink *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->results = calloc(REC_MAX_RESULTS, sizeof *r->results);
    assert_non_null(r->results);
    return r;
}

static void log_free(rec_log *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->line[i]);
}

void rec_free(rec_sink *r)
{
    for (size_t i = 0; i < r->nboards; i++)
        log_free(&r->board[i]);
    log_free(&r->worker);
    free(r->results);
    free(r);
}

rec_log *rec_board(rec_sink *r, const char *serial)
{
    for (size_t i = 0; i < r->nboards; i++)
        if (strcmp(r->serial[i], serial) == 0)
            return &r->board[i];
    return NULL;
}

static void add_line(rec_log *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void add_line(rec_log *l, const char *fmt, ...)
{
    assert_true(l->n < REC_MAX_LINES);
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    l->line[l->n] = strdup(buf);
    assert_non_null(l->line[l->n]);
    l->at[l->n++] = ifm_now_ms();
}

static rec_log *log_of(rec_sink *r, const wrk_board *b)
{
    rec_log *l = rec_board(r, b->serial);
    if (!l)
        r->contract_violations++;
    return l;
}

static void on_added(void *ctx, wrk_board *b)
{
    rec_sink *r = ctx;
    if (rec_board(r, b->serial)) {
        r->contract_violations++; /* announced twice */
        return;
    }
    assert_true(r->nboards < REC_MAX_BOARDS);
    snprintf(r->serial[r->nboards], sizeof r->serial[0], "%s", b->serial);
    add_line(&r->board[r->nboards++], "added");
}

static void on_state(void *ctx, const wrk_board *b)
{
    rec_log *l = log_of(ctx, b);
    if (l)
        add_line(l, "state %s%s%s%s%s", ifm_board_state_name(b->state), b->kind >= 0 ? " " : "",
                 b->kind >= 0 ? wrk_kind_name(b->kind) : "", b->reason[0] ? ": " : "", b->reason);
}

static void on_worker(void *ctx, const wrk_ctx *w, bool online)
{
    rec_sink *r = ctx;
    size_t present = 0;
    for (size_t i = 0; i < w->nboards; i++)
        present += w->boards[i]->state != IFM_BOARD_GONE;
    if (online)
        add_line(&r->worker, "birth online boards=%zu", present);
    else
        add_line(&r->worker, "birth offline");
}

static void on_event(void *ctx, const wrk_board *b, const wrk_event *ev)
{
    rec_log *l = log_of(ctx, b);
    if (!l)
        return;
    char batch[IFM_ID_MAX + 8] = "";
    if (ev->batch_id && ev->batch_id[0])
        snprintf(batch, sizeof batch, " batch=%s", ev->batch_id);
    add_line(l, "event %s to=%s%s%s%s", ev->name, ev->client ? ev->client : "(null)", batch, ev->reason ? ": " : "",
             ev->reason ? ev->reason : "");
}

static void on_results(void *ctx, const wrk_board *b, const char *batch_id, const ifm_result *res, size_t n)
{
    rec_sink *r = ctx;
    rec_log *l = log_of(r, b);
    if (!l)
        return;
    add_line(l, "results %s n=%zu", batch_id, n);
    for (size_t i = 0; i < n; i++) {
        assert_true(r->nresults < REC_MAX_RESULTS);
        rec_result *o = &r->results[r->nresults++];
        snprintf(o->batch, sizeof o->batch, "%s", batch_id);
        snprintf(o->id, sizeof o->id, "%s", res[i].id);
        o->type = res[i].type;
        o->pulses = res[i].pulses;
        o->fitness = res[i].fitness;
        assert_true(res[i].nsamples <= FW_SAMPLES_MAX);
        o->nsamples = res[i].nsamples;
        if (res[i].nsamples)
            memcpy(o->samples, res[i].samples, res[i].nsamples * sizeof *o->samples);
        snprintf(o->error, sizeof o->error, "%s", res[i].error);
    }
}

const wrk_sink_ops rec_sink_ops = {
    .board_added = on_added,
    .board_state = on_state,
    .worker_state = on_worker,
    .event = on_event,
    .results = on_results,
};

void rec_expect_at(const char *file, int line, rec_log *l, ...)
{
    va_list ap;
    va_start(ap, l);
    size_t i = l->seen;
    const char *want;
    bool ok = true;
    char msg[4096] = "";
    size_t used = 0;
    while ((want = va_arg(ap, const char *))) {
        if (i >= l->n || strcmp(l->line[i], want) != 0) {
            ok = false;
            used += (size_t)snprintf(msg + used, sizeof msg - used, "\n  line %zu: expected \"%s\", got \"%s\"", i,
                                     want, i < l->n ? l->line[i] : "(nothing)");
            if (used >= sizeof msg)
                used = sizeof msg - 1;
        }
        i++;
    }
    va_end(ap);
    if (i < l->n) {
        ok = false;
        for (size_t k = i; k < l->n && used < sizeof msg - 1; k++) {
            used += (size_t)snprintf(msg + used, sizeof msg - used, "\n  line %zu: unexpected \"%s\"", k, l->line[k]);
            if (used >= sizeof msg)
                used = sizeof msg - 1;
        }
    }
    if (!ok) {
        /* The whole log, for the reader of a failure. */
        for (size_t k = 0; k < l->n && used < sizeof msg - 1; k++) {
            used += (size_t)snprintf(msg + used, sizeof msg - used, "\n    [%zu] %s", k, l->line[k]);
            if (used >= sizeof msg)
                used = sizeof msg - 1;
        }
        print_error("the sequence differs:%s\n", msg);
        _fail(file, line);
    }
    l->seen = i;
}

size_t rec_last(const rec_log *l)
{
    assert_true(l->n > 0);
    return l->n - 1;
}
