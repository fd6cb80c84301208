/* The evaluation engine of a reserved board: bitstreams in, measurements out.
 *
 * The firmware takes one bitstream at a time: the host waits for "Waiting for
 * bitstream transfer", writes exactly 104,090 bytes, and reads lines until a
 * result ("pulses: N" / "samples: ...") or "Watchdog timeout". Every evaluation
 * ends in exactly one result: a measurement, or an explicit failure after
 * max_attempts tries (each failed try reboots the board, keeping the queue).
 *
 * Results are batched per batch_id and flushed (one `results` event per batch)
 * when the queue is down to flush_at_bitstreams_remaining or fewer, when it is
 * empty, or when the flush interval timer fires: a real timer, not a check that
 * only runs after the next result. */
#include <stdlib.h>
#include <string.h>

#include "icefarm/log.h"
#include "icefarm/grow.h"
#include "worker.h"

static void try_send(wrk_board *b);

static void job_free(evaljob *j)
{
    if (j) {
        free(j->data);
        free(j);
    }
}

static void push_front(wrk_board *b, evaljob *j)
{
    j->next = b->qhead;
    b->qhead = j;
    if (!b->qtail)
        b->qtail = j;
    b->queued++;
}

static evaljob *pop(wrk_board *b)
{
    evaljob *j = b->qhead;
    if (j) {
        b->qhead = j->next;
        if (!b->qhead)
            b->qtail = NULL;
        b->queued--;
        j->next = NULL;
    }
    return j;
}

static resbatch *batch_for(wrk_board *b, const char *batch)
{
    resbatch **pp = &b->results;
    for (; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->batch, batch) == 0)
            return *pp;
    resbatch *rb = calloc(1, sizeof *rb);
    if (rb) {
        snprintf(rb->batch, sizeof rb->batch, "%s", batch);
        *pp = rb;
    }
    return rb;
}

static void batch_free(resbatch *rb)
{
    for (size_t i = 0; i < rb->n; i++)
        free(rb->samples[i]);
    free(rb->samples);
    free(rb->r);
    free(rb);
}

static void on_flush_timer(ifm_loop *loop, void *arg)
{
    wrk_board *b = arg;
    b->flush_timer = 0;
    wrk_upload_flush(b);
}

void wrk_upload_flush(wrk_board *b)
{
    ifm_timer_cancel(b->w->loop, b->flush_timer);
    b->flush_timer = 0;
    while (b->results) {
        resbatch *rb = b->results;
        b->results = rb->next;
        if (rb->n)
            wrk_emit_results(b, rb);
        batch_free(rb);
    }
}

static void add_result(wrk_board *b, const evaljob *j, const ifm_result *r, const uint16_t *samples)
{
    resbatch *rb = batch_for(b, j->batch);
    if (!rb)
        return;
    /* Two arrays of one capacity: each grows from the same rb->cap, which
     * changes only once both have; a grown r with the old cap is harmless. */
    size_t cap = rb->cap, scap = rb->cap;
    ifm_result *nr = ifm_grow(rb->r, &cap, rb->n, sizeof *nr, 8);
    if (!nr)
        return;
    rb->r = nr;
    uint16_t **ns = ifm_grow(rb->samples, &scap, rb->n, sizeof *ns, 8);
    if (!ns)
        return;
    rb->samples = ns;
    rb->cap = cap;
    rb->r[rb->n] = *r;
    snprintf(rb->r[rb->n].id, sizeof rb->r[rb->n].id, "%s", j->id);
    rb->samples[rb->n] = NULL;
    /* Only a waveform keeps its samples (an owned copy); the caller's array is
     * gone by the time the batch is flushed. */
    rb->r[rb->n].samples = NULL;
    rb->r[rb->n].nsamples = 0;
    if (r->type == IFM_VALUE_WAVEFORM && r->nsamples) {
        rb->samples[rb->n] = malloc(r->nsamples * sizeof(uint16_t));
        if (rb->samples[rb->n]) {
            memcpy(rb->samples[rb->n], samples, r->nsamples * sizeof(uint16_t));
            rb->r[rb->n].nsamples = r->nsamples;
        }
        rb->r[rb->n].samples = rb->samples[rb->n];
    }
    rb->n++;
    bool drained = !b->queued && !b->current;
    if (drained || b->queued <= b->flush_at)
        wrk_upload_flush(b);
    else if (!b->flush_timer && b->flush_interval_ms)
        b->flush_timer = ifm_timer_add(b->w->loop, b->flush_interval_ms, on_flush_timer, b);
}

static void fail_job(wrk_board *b, evaljob *j, const char *why)
{
    ifm_result r;
    memset(&r, 0, sizeof r);
    r.type = IFM_VALUE_FAILED;
    snprintf(r.error, sizeof r.error, "%s", why);
    add_result(b, j, &r, NULL);
    IFM_WARN("serial=%s client=%s evaluation %s failed: %s", b->serial, b->holder, j->id, why);
}

/* The current evaluation did not finish: try it again after a reboot, or give up. */
static void retry_current(wrk_board *b, const char *why)
{
    evaljob *j = b->current;
    b->current = NULL;
    if (j) {
        if (++j->attempts >= b->w->to.max_attempts) {
            char msg[160];
            snprintf(msg, sizeof msg, "%s (after %d attempts)", why, j->attempts);
            fail_job(b, j, msg);
            job_free(j);
        } else {
            push_front(b, j);
        }
    }
    wrk_board_reboot(b);
}

static void on_eval_timeout(ifm_loop *loop, void *arg)
{
    wrk_board *b = arg;
    b->state_timer = 0;
    wrk_board_close_cdc(b);
    retry_current(b, "no result in time (board hung)");
}

static void on_ready_timeout(ifm_loop *loop, void *arg)
{
    wrk_board *b = arg;
    b->state_timer = 0;
    wrk_board_close_cdc(b);
    /* The firmware never asked for a bitstream: wrong or crashed firmware. */
    if (b->reboots >= b->w->to.max_attempts)
        wrk_board_broken(b, "firmware never became ready");
    else
        wrk_board_reboot(b);
}

static bool on_line(void *arg, const char *line, size_t len, bool truncated)
{
    wrk_board *b = arg;
    uint16_t samples[FW_SAMPLES_MAX];
    fw_line_info info;
    switch (fw_classify(line, len, truncated, samples, FW_SAMPLES_MAX, &info)) {
    case FW_LINE_READY:
        b->fw_ready = true;
        if (b->state == IFM_BOARD_PREPARING) {
            /* First "Waiting for bitstream transfer" after a flash: usable. */
            b->reboots = 0;
            wrk_board_set_state(b, IFM_BOARD_RESERVED, NULL);
            wrk_emit_event(b, "initialized", NULL);
        }
        try_send(b);
        return true;
    case FW_LINE_PULSES:
    case FW_LINE_SAMPLES: {
        evaljob *j = b->current;
        if (!j || b->writing)
            return true; /* a stray result (e.g. after a reconnect) belongs to nobody */
        b->current = NULL;
        ifm_timer_cancel(b->w->loop, b->state_timer);
        b->state_timer = 0;
        ifm_result r;
        memset(&r, 0, sizeof r);
        if (info.kind == FW_LINE_PULSES) {
            r.type = IFM_VALUE_PULSES;
            r.pulses = info.pulses;
        } else {
            r.fitness = fw_variance_fitness(samples, info.nsamples);
            r.type = b->send_waveform ? IFM_VALUE_WAVEFORM : IFM_VALUE_FITNESS;
            r.samples = samples;
            r.nsamples = info.nsamples;
        }
        add_result(b, j, &r, samples);
        job_free(j);
        try_send(b);
        return true;
    }
    case FW_LINE_WATCHDOG:
        if (b->current) {
            /* The firmware gave up on the transfer: the bytes did not all arrive. */
            wrk_board_close_cdc(b);
            retry_current(b, "firmware watchdog: bitstream transfer incomplete");
            return false;
        }
        return true;
    case FW_LINE_MALFORMED:
        IFM_WARN("serial=%s unparsable firmware line: %s", b->serial, info.reason);
        return true;
    default:
        return true;
    }
}

static void on_rx(void *arg, const uint8_t *data, size_t len)
{
    wrk_board *b = arg;
    fw_lines_feed(&b->lines, data, len, on_line, b);
}

static void on_cdc_err(void *arg, const char *reason)
{
    wrk_board *b = arg;
    IFM_WARN("serial=%s client=%s serial channel error: %s", b->serial, b->holder, reason);
    wrk_board_close_cdc(b);
    retry_current(b, reason);
}

static void on_written(void *arg, int status, const char *reason)
{
    wrk_board *b = arg;
    b->writing = false;
    if (status != 0) {
        wrk_board_close_cdc(b);
        retry_current(b, reason ? reason : "write failed");
    }
}

static void try_send(wrk_board *b)
{
    if (b->state != IFM_BOARD_RESERVED || !b->cdc || !b->fw_ready || b->current || b->writing || !b->qhead)
        return;
    evaljob *j = pop(b);
    b->current = j;
    b->fw_ready = false;
    b->writing = true;
    wrk_board_arm(b, b->w->to.eval_ms, on_eval_timeout);
    if (b->w->t->ops->cdc_write(b->w->t, b->dev, j->data, j->len, on_written, b)) {
        b->writing = false;
        wrk_board_close_cdc(b);
        retry_current(b, "cannot write to the board");
    }
}

void wrk_upload_start(wrk_board *b)
{
    fw_lines_init(&b->lines);
    b->fw_ready = false;
    wrk_board_arm(b, b->w->to.ready_ms, on_ready_timeout);
    if (!b->dev || b->w->t->ops->cdc_open(b->w->t, b->dev, on_rx, on_cdc_err, b) != 0) {
        IFM_WARN("serial=%s cannot open the serial channel", b->serial);
        return; /* the ready timeout reboots it */
    }
    b->cdc = true;
}

int wrk_upload_evaluate(wrk_board *b, const ifm_board_cmd *cmd, char *err, size_t errlen)
{
    if (b->kind < 0 || (b->state != IFM_BOARD_RESERVED && b->state != IFM_BOARD_PREPARING)) {
        snprintf(err, errlen, "board is %s, not reserved", ifm_board_state_name(b->state));
        return -1;
    }
    if (b->custom_running) {
        snprintf(err, errlen, "board runs custom firmware; reboot it to evaluate again");
        return -1;
    }
    for (size_t i = 0; i < cmd->nfiles; i++) {
        const ifm_file *f = &cmd->files[i];
        evaljob *j = calloc(1, sizeof *j);
        if (!j) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        snprintf(j->id, sizeof j->id, "%s", f->id);
        snprintf(j->batch, sizeof j->batch, "%s", cmd->batch_id);
        if (f->len != BITSTREAM_SIZE) {
            /* Never send a wrong-size image: extra bytes would corrupt the next one. */
            char why[120];
            snprintf(why, sizeof why, "bitstream is %zu bytes, must be exactly %d", f->len, BITSTREAM_SIZE);
            fail_job(b, j, why);
            job_free(j);
            continue;
        }
        j->data = malloc(f->len);
        if (!j->data) {
            job_free(j);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        memcpy(j->data, f->data, f->len);
        j->len = f->len;
        if (b->qtail)
            b->qtail->next = j;
        else
            b->qhead = j;
        b->qtail = j;
        b->queued++;
    }
    if (!b->queued && !b->current)
        wrk_upload_flush(b); /* every file was rejected: say so now */
    try_send(b);
    return 0;
}

void wrk_upload_stop(wrk_board *b, bool keep_queue)
{
    wrk_board_close_cdc(b);
    if (b->current) {
        /* Interrupted, not failed: it runs again first after the reboot. */
        push_front(b, b->current);
        b->current = NULL;
    }
    b->fw_ready = false;
    if (!keep_queue)
        wrk_upload_free(b);
}

void wrk_upload_fail_all(wrk_board *b, const char *why)
{
    if (b->current) {
        push_front(b, b->current);
        b->current = NULL;
    }
    evaljob *j;
    while ((j = pop(b))) {
        fail_job(b, j, why);
        job_free(j);
    }
    wrk_upload_flush(b);
}

void wrk_upload_free(wrk_board *b)
{
    ifm_timer_cancel(b->w->loop, b->flush_timer);
    b->flush_timer = 0;
    if (b->current) {
        job_free(b->current);
        b->current = NULL;
    }
    evaljob *j;
    while ((j = pop(b)))
        job_free(j);
    while (b->results) {
        resbatch *rb = b->results;
        b->results = rb->next;
        batch_free(rb);
    }
}
