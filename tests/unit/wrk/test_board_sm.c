/* The worker's state machine (wrk/core: board.c, flash.c, upload.c, commands.c)
 * driven on the simulated transport with a recording sink, on the real event
 * loop: every test asserts the exact sequence of board states and events the
 * worker emits, through flash default, test, ready, reserve (prepare), evaluate,
 * a hung board, a broken board's quarantine and its retries with back-off.
 *
 * Commands are encoded and decoded with the protocol's codecs, exactly as the
 * MQTT bridge hands them to the core. Every wait is bounded (FX_UNTIL). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rec_sink.h"
#include "sim.h"

/* Only a wedged test ever waits this long; the timeouts below are what is timed. */
#define FX_WAIT_MS 30000

typedef struct {
    ifm_loop *loop;
    wrk_ctx w;
    rec_sink *rec;
    sim_options so;
    uint8_t *bits[3];
    const char *serial[REC_MAX_BOARDS];
} fx;

#define FX_UNTIL(f, cond)                                                                                              \
    do {                                                                                                               \
        uint64_t dl_ = ifm_now_ms() + FX_WAIT_MS;                                                                      \
        while (!(cond) && ifm_now_ms() < dl_)                                                                          \
            ifm_loop_once((f)->loop, 10);                                                                              \
        if (!(cond))                                                                                                   \
            fail_msg("timed out after %d ms waiting for %s", FX_WAIT_MS, #cond);                                       \
    } while (0)

static uint8_t *make_bitstream(uint32_t seed)
{
    uint8_t *p = malloc(BITSTREAM_SIZE);
    assert_non_null(p);
    uint32_t x = seed;
    for (size_t i = 0; i < BITSTREAM_SIZE; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)(x >> 24);
    }
    return p;
}

/* Sim timing as in the other wrk tests; the worker's timeouts are short where a
 * test waits for one to fire, generous where they only guard a healthy step. */
static fx *fx_new(unsigned boards)
{
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->loop = ifm_loop_new();
    assert_non_null(f->loop);
    sim_options_default(&f->so);
    f->so.boards = boards;
    f->so.seed = "board-sm";
    f->so.count_window_ms = 20;
    f->so.flash_ms = 10;
    f->so.enum_ms = 5;
    f->so.replug_ms = 20;
    f->so.watchdog_ms = 60000; /* a full transfer is never cut short by a slow machine */
    f->w.loop = f->loop;
    snprintf(f->w.id, sizeof f->w.id, "unit-worker");
    f->w.sim = true;
    f->w.to = (wrk_timeouts){
        .flash_ms = 10000,
        .test_ms = 1000,
        .ready_ms = 1000,
        .eval_ms = 2000,
        .retry_min_ms = 100,
        .retry_max_ms = 300,
        .max_attempts = 3,
    };
    static const sim_fw_kind sk[FW_COUNT] = { SIM_FW_DEFAULT, SIM_FW_PULSECOUNT, SIM_FW_VARIANCE };
    for (int k = 0; k < FW_COUNT; k++) {
        f->w.fw[k].data = sim_fw_build_uf2(sk[k], &f->w.fw[k].len);
        assert_non_null(f->w.fw[k].data);
        f->w.offers[k] = k != FW_DEFAULT;
    }
    f->rec = rec_new();
    f->w.sink = (wrk_sink){ &rec_sink_ops, f->rec };
    for (int i = 0; i < 3; i++)
        f->bits[i] = make_bitstream(0x1ce5eedu + (uint32_t)i);
    return f;
}

/* Creates the boards (sim options may be changed before this) and starts the
 * worker on them. */
static void fx_start(fx *f)
{
    f->w.t = sim_transport_new(f->loop, &f->so);
    assert_non_null(f->w.t);
    for (unsigned i = 0; i < f->so.boards; i++)
        f->serial[i] = sim_board_serial(f->w.t, i);
    assert_int_equal(wrk_start(&f->w), 0);
    assert_int_equal(f->w.nboards, 0); /* arrivals come on a later loop turn */
}

static void fx_free(fx *f)
{
    assert_int_equal(f->rec->contract_violations, 0);
    f->w.t->ops->free(f->w.t);
    wrk_boards_free(&f->w);
    /* Timers die with their state and their board: nothing may be left. */
    assert_int_equal(ifm_timer_count(f->loop), 0);
    ifm_loop_free(f->loop);
    for (int k = 0; k < FW_COUNT; k++)
        free(f->w.fw[k].data);
    for (int i = 0; i < 3; i++)
        free(f->bits[i]);
    rec_free(f->rec);
    free(f);
}

static rec_log *fx_log(fx *f, unsigned i)
{
    FX_UNTIL(f, rec_board(f->rec, f->serial[i]) != NULL);
    return rec_board(f->rec, f->serial[i]);
}

static wrk_board *fx_board(fx *f, unsigned i)
{
    wrk_board *b = wrk_board_get(&f->w, f->serial[i], false);
    assert_non_null(b);
    return b;
}

/* Has `line` been logged since the last rec_expect? */
static bool logged(const rec_log *l, const char *line)
{
    for (size_t i = l->seen; i < l->n; i++)
        if (strcmp(l->line[i], line) == 0)
            return true;
    return false;
}

static int count_lines(const rec_log *l, const char *line)
{
    int n = 0;
    for (size_t i = l->seen; i < l->n; i++)
        n += strcmp(l->line[i], line) == 0;
    return n;
}

static size_t find_line(const rec_log *l, const char *line, size_t from)
{
    for (size_t i = from; i < l->n; i++)
        if (strcmp(l->line[i], line) == 0)
            return i;
    fail_msg("\"%s\" not logged", line);
    return 0;
}

/* Control's command, through the codec the bridge uses. `args` is a msgpack map or NULL. */
static void fx_worker_cmd(fx *f, ifm_worker_op op, unsigned board, const char *kind, const char *client,
                          const ifm_enc *args)
{
    ifm_worker_cmd c;
    memset(&c, 0, sizeof c);
    c.op = op;
    snprintf(c.serial, sizeof c.serial, "%s", f->serial[board]);
    snprintf(c.kind, sizeof c.kind, "%s", kind ? kind : "");
    snprintf(c.client, sizeof c.client, "%s", client ? client : "");
    c.lease = 7;
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_worker_cmd_encode(&e, &c, args ? ifm_enc_data(args) : NULL, args ? ifm_enc_size(args) : 0);
    ifm_doc doc;
    ifm_err err = { "" };
    ifm_worker_cmd dec;
    if (ifm_doc_parse(&doc, ifm_enc_data(&e), ifm_enc_size(&e), &err) || ifm_worker_cmd_decode(&doc, &dec, &err))
        fail_msg("worker command does not decode: %s", err.msg);
    wrk_cmd_worker(&f->w, &dec);
    ifm_doc_free(&doc);
    ifm_enc_free(&e);
}

static void fx_reserve(fx *f, unsigned board, const char *kind, const char *client, const ifm_enc *args)
{
    fx_worker_cmd(f, IFM_WOP_RESERVE, board, kind, client, args);
}

/* Who sends a board command: the holder, or "alice" for a board nobody holds. */
static const char *sender(fx *f, unsigned board)
{
    return fx_board(f, board)->holder[0] ? fx_board(f, board)->holder : "alice";
}

/* An evaluate of `n` files (ids "<prefix>0".."), through the codec, sent by
 * `client` (the bridge puts the message's icefarm-client property there). */
static void fx_evaluate_as(fx *f, unsigned board, const char *client, const char *batch, const char *prefix,
                           uint8_t *const *bits, const size_t *lens, size_t n)
{
    ifm_file files[8];
    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++) {
        snprintf(files[i].id, sizeof files[i].id, "%s%zu", prefix, i);
        files[i].data = bits[i];
        files[i].len = lens ? lens[i] : BITSTREAM_SIZE;
    }
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_board_cmd_encode(&e, batch, files, n);
    ifm_doc doc;
    ifm_err err = { "" };
    ifm_board_cmd dec;
    memset(&dec, 0, sizeof dec);
    if (ifm_doc_parse(&doc, ifm_enc_data(&e), ifm_enc_size(&e), &err) || ifm_board_cmd_decode(&doc, &dec, &err))
        fail_msg("evaluate does not decode: %s", err.msg);
    snprintf(dec.client, sizeof dec.client, "%s", client);
    wrk_cmd_board(fx_board(f, board), &dec);
    ifm_board_cmd_free(&dec);
    ifm_doc_free(&doc);
    ifm_enc_free(&e);
}

/* The holder's evaluate. */
static void fx_evaluate(fx *f, unsigned board, const char *batch, const char *prefix, uint8_t *const *bits,
                        const size_t *lens, size_t n)
{
    fx_evaluate_as(f, board, sender(f, board), batch, prefix, bits, lens, n);
}

static void fx_flash(fx *f, unsigned board, const uint8_t *image, size_t len)
{
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_board_flash_encode(&e, image, len);
    ifm_doc doc;
    ifm_err err = { "" };
    ifm_board_cmd dec;
    memset(&dec, 0, sizeof dec);
    if (ifm_doc_parse(&doc, ifm_enc_data(&e), ifm_enc_size(&e), &err) || ifm_board_cmd_decode(&doc, &dec, &err))
        fail_msg("flash does not decode: %s", err.msg);
    snprintf(dec.client, sizeof dec.client, "%s", sender(f, board));
    wrk_cmd_board(fx_board(f, board), &dec);
    ifm_board_cmd_free(&dec);
    ifm_doc_free(&doc);
    ifm_enc_free(&e);
}

static const char *const BRING_UP[] = { "added", "state flashing", "state testing", "state ready" };

static void expect_bring_up(fx *f, unsigned board)
{
    rec_log *l = fx_log(f, board);
    FX_UNTIL(f, logged(l, "state ready"));
    rec_expect(l, BRING_UP[0], BRING_UP[1], BRING_UP[2], BRING_UP[3], NULL);
}

/* ready -> preparing -> reserved + initialized for `client`. */
static void reserve_ok(fx *f, unsigned board, const char *kind, const char *client, const ifm_enc *args)
{
    rec_log *l = fx_log(f, board);
    fx_reserve(f, board, kind, client, args);
    char prep[64], res[64], init[64];
    snprintf(prep, sizeof prep, "state preparing %s", kind);
    snprintf(res, sizeof res, "state reserved %s", kind);
    snprintf(init, sizeof init, "event initialized to=%s", client);
    FX_UNTIL(f, logged(l, init));
    rec_expect(l, prep, res, init, NULL);
}

static const rec_result *result(fx *f, size_t i)
{
    assert_true(i < f->rec->nresults);
    return &f->rec->results[i];
}

/* ---- the tests ---- */

/* Two boards: flash default, test, ready; the birth follows the boards joining. */
static void test_bring_up(void **state)
{
    fx *f = fx_new(2);
    fx_start(f);
    expect_bring_up(f, 0);
    expect_bring_up(f, 1);
    rec_expect(&f->rec->worker, "birth online boards=1", "birth online boards=2", NULL);
    assert_int_equal(fx_board(f, 0)->failures, 0);
    /* A ready board holds no timer: it is waiting, not timing anything. */
    assert_int_equal(fx_board(f, 0)->state_timer, 0);
    /* The clean goodbye: offline first, then each board gone. */
    wrk_stop(&f->w);
    rec_expect(&f->rec->worker, "birth offline", NULL);
    rec_expect(fx_log(f, 0), "state gone: worker stopped", NULL);
    rec_expect(fx_log(f, 1), "state gone: worker stopped", NULL);
    fx_free(f);
}

/* reserve -> evaluate (one results event per bitstream with the default flush
 * threshold) -> release back to ready; measurements are the sim's. */
static void test_reserve_evaluate_release(void **state)
{
    fx *f = fx_new(1);
    fx_start(f);
    expect_bring_up(f, 0);
    rec_log *l = fx_log(f, 0);
    reserve_ok(f, 0, "pulsecount", "alice", NULL);
    wrk_board *b = fx_board(f, 0);
    assert_string_equal(b->holder, "alice");
    fx_evaluate(f, 0, "b1", "f", f->bits, NULL, 3);
    FX_UNTIL(f, f->rec->nresults == 3);
    /* 3 queued <= flush_at (25): every result is flushed at once, in order. */
    rec_expect(l, "results b1 n=1", "results b1 n=1", "results b1 n=1", NULL);
    for (size_t i = 0; i < 3; i++) {
        const rec_result *r = result(f, i);
        char id[8];
        snprintf(id, sizeof id, "f%zu", i);
        assert_string_equal(r->id, id);
        assert_int_equal(r->type, IFM_VALUE_PULSES);
        assert_int_equal(r->pulses, sim_expected_pulses(f->bits[i], BITSTREAM_SIZE));
    }
    fx_worker_cmd(f, IFM_WOP_RELEASE, 0, NULL, NULL, NULL);
    FX_UNTIL(f, logged(l, "state ready"));
    rec_expect(l, "state flashing", "state testing", "state ready", NULL);
    assert_string_equal(b->holder, "");
    assert_int_equal(b->kind, -1);
    fx_free(f);
}

/* Reserve args: results are batched until the queue is empty; variance with
 * send_waveform reports the samples and their fitness. */
static void test_variance_batched(void **state)
{
    fx *f = fx_new(1);
    fx_start(f);
    expect_bring_up(f, 0);
    rec_log *l = fx_log(f, 0);
    ifm_enc args;
    ifm_enc_init(&args);
    ifm_enc_map(&args, 3);
    ifm_enc_kuint(&args, "flush_at_bitstreams_remaining", 0);
    ifm_enc_kuint(&args, "flush_interval_seconds", 600);
    ifm_enc_kbool(&args, "send_waveform", true);
    reserve_ok(f, 0, "variance", "bob", &args);
    ifm_enc_free(&args);
    fx_evaluate(f, 0, "v1", "w", f->bits, NULL, 2);
    FX_UNTIL(f, f->rec->nresults == 2);
    rec_expect(l, "results v1 n=2", NULL);
    for (size_t i = 0; i < 2; i++) {
        const rec_result *r = result(f, i);
        uint16_t want[SIM_SAMPLES];
        sim_expected_samples(f->bits[i], BITSTREAM_SIZE, want);
        assert_int_equal(r->type, IFM_VALUE_WAVEFORM);
        assert_int_equal(r->nsamples, SIM_SAMPLES);
        assert_memory_equal(r->samples, want, sizeof want);
        assert_true(r->fitness == fw_variance_fitness(want, SIM_SAMPLES));
    }
    fx_free(f);
}

/* A board that stops answering mid-transfer: the evaluation times out, the board
 * is rebooted (reflashed, queue kept) and the bitstream runs again. */
static void test_hang_then_recover(void **state)
{
    fx *f = fx_new(1);
    fx_start(f);
    expect_bring_up(f, 0);
    rec_log *l = fx_log(f, 0);
    reserve_ok(f, 0, "pulsecount", "alice", NULL);
    assert_int_equal(sim_inject(f->w.t, f->serial[0], SIM_FAULT_HANG, 1), 0);
    fx_evaluate(f, 0, "h1", "x", f->bits, NULL, 1);
    FX_UNTIL(f, f->rec->nresults == 1);
    rec_expect(l, "state preparing pulsecount: rebooting", "state reserved pulsecount", "event initialized to=alice",
               "results h1 n=1", NULL);
    /* The reboot came after eval_ms of silence, not before. */
    size_t sent = find_line(l, "state reserved pulsecount", 0);
    size_t reboot = find_line(l, "state preparing pulsecount: rebooting", 0);
    assert_true(l->at[reboot] - l->at[sent] >= f->w.to.eval_ms);
    assert_int_equal(result(f, 0)->type, IFM_VALUE_PULSES);
    assert_int_equal(result(f, 0)->pulses, sim_expected_pulses(f->bits[0], BITSTREAM_SIZE));
    fx_free(f);
}

/* A board that hangs on every try: after max_attempts the evaluation is
 * reported failed (never silently lost) and the board is usable again. */
static void test_hang_gives_up(void **state)
{
    fx *f = fx_new(1);
    f->w.to.eval_ms = 500;
    fx_start(f);
    expect_bring_up(f, 0);
    rec_log *l = fx_log(f, 0);
    reserve_ok(f, 0, "pulsecount", "alice", NULL);
    assert_int_equal(sim_inject(f->w.t, f->serial[0], SIM_FAULT_HANG, 3), 0);
    fx_evaluate(f, 0, "h2", "x", f->bits, NULL, 1);
    FX_UNTIL(f, f->rec->nresults == 1 && count_lines(l, "event initialized to=alice") == 3);
    /* Each reboot says "initialized" again; the third failure ends the job, and
     * the board is rebooted once more after it. */
    rec_expect(l, "state preparing pulsecount: rebooting", "state reserved pulsecount", "event initialized to=alice",
               "state preparing pulsecount: rebooting", "state reserved pulsecount", "event initialized to=alice",
               "results h2 n=1", "state preparing pulsecount: rebooting", "state reserved pulsecount",
               "event initialized to=alice", NULL);
    assert_int_equal(result(f, 0)->type, IFM_VALUE_FAILED);
    assert_string_equal(result(f, 0)->error, "no result in time (board hung) (after 3 attempts)");
    /* Healthy again: the next bitstream is measured. */
    fx_evaluate(f, 0, "h3", "y", &f->bits[1], NULL, 1);
    FX_UNTIL(f, f->rec->nresults == 2);
    rec_expect(l, "results h3 n=1", NULL);
    assert_int_equal(result(f, 1)->pulses, sim_expected_pulses(f->bits[1], BITSTREAM_SIZE));
    fx_free(f);
}

/* The default firmware hangs during the test: broken (quarantined), retried
 * after retry_min_ms, and ready once it answers. */
static void test_broken_default_then_retry(void **state)
{
    fx *f = fx_new(1);
    fx_start(f);
    assert_int_equal(sim_inject(f->w.t, f->serial[0], SIM_FAULT_HANG, 1), 0);
    rec_log *l = fx_log(f, 0);
    FX_UNTIL(f, logged(l, "state ready"));
    rec_expect(l, "added", "state flashing", "state testing", "state broken: default firmware did not answer",
               "state flashing", "state testing", "state ready", NULL);
    size_t broken = find_line(l, "state broken: default firmware did not answer", 0);
    assert_true(l->at[broken + 1] - l->at[broken] >= f->w.to.retry_min_ms);
    assert_int_equal(fx_board(f, 0)->failures, 0); /* ready clears the count */
    fx_free(f);
}

/* Wrong firmware three times in a row: each retry waits twice as long, capped at
 * retry_max_ms; a quarantined board refuses reservations and says so to the
 * client that asked. */
static void test_backoff_and_quarantine(void **state)
{
    fx *f = fx_new(1);
    fx_start(f);
    assert_int_equal(sim_inject(f->w.t, f->serial[0], SIM_FAULT_WRONG_FW, 3), 0);
    rec_log *l = fx_log(f, 0);
    const char *broken = "state broken: default firmware did not answer";
    FX_UNTIL(f, logged(l, broken));
    /* Quarantined: reservations are refused with a failure to the asker. */
    fx_reserve(f, 0, "pulsecount", "carol", NULL);
    rec_expect(l, "added", "state flashing", "state testing", broken,
               "event failure to=carol: board is broken, not ready", broken, NULL);
    FX_UNTIL(f, logged(l, "state ready"));
    rec_expect(l, "state flashing", "state testing", broken, "state flashing", "state testing", broken,
               "state flashing", "state testing", "state ready", NULL);
    const uint64_t want[] = { 100, 200, 300 }; /* retry_min_ms doubling, capped at retry_max_ms */
    size_t at = 0;
    for (int i = 0; i < 3; i++) {
        at = find_line(l, broken, at);
        size_t next = find_line(l, "state flashing", at);
        assert_true(l->at[next] - l->at[at] >= want[i]);
        at = next;
    }
    assert_string_equal(fx_board(f, 0)->holder, "");
    fx_free(f);
}

/* The reserved kind never becomes ready: rebooted up to max_attempts, then
 * broken with a failure for the holder; the retry brings the kind back. */
static void test_prepare_fails_then_retry(void **state)
{
    fx *f = fx_new(1);
    f->w.to.ready_ms = 300;
    fx_start(f);
    expect_bring_up(f, 0);
    rec_log *l = fx_log(f, 0);
    assert_int_equal(sim_inject(f->w.t, f->serial[0], SIM_FAULT_WRONG_FW, 4), 0);
    fx_reserve(f, 0, "pulsecount", "alice", NULL);
    FX_UNTIL(f, logged(l, "event initialized to=alice"));
    /* A repeated "rebooting" is not a change, so it is said once. */
    rec_expect(l, "state preparing pulsecount", "state preparing pulsecount: rebooting",
               "event failure to=alice: firmware never became ready",
               "state broken pulsecount: firmware never became ready", "state preparing pulsecount: rebooting",
               "state reserved pulsecount", "event initialized to=alice", NULL);
    assert_string_equal(fx_board(f, 0)->holder, "alice");
    fx_free(f);
}

/* A refused reservation of a reserved board goes to the asker and leaves the
 * holder alone; unplugging fails the holder's queue, replugging brings its kind
 * back; delete starts over. */
static void test_refusal_unplug_delete(void **state)
{
    fx *f = fx_new(1);
    fx_start(f);
    expect_bring_up(f, 0);
    rec_log *l = fx_log(f, 0);
    reserve_ok(f, 0, "pulsecount", "alice", NULL);
    fx_reserve(f, 0, "pulsecount", "bob", NULL);
    rec_expect(l, "event failure to=bob: board is reserved, not ready", "state reserved pulsecount", NULL);
    assert_string_equal(fx_board(f, 0)->holder, "alice");
    fx_reserve(f, 0, "bogus", "bob", NULL);
    rec_expect(l, "event failure to=bob: this worker does not offer kind bogus", "state reserved pulsecount", NULL);

    /* Unplugged mid-evaluation (a transfer takes hundreds of loop turns; the
     * unplug acts on the next): the holder hears, nothing is silently lost. */
    fx_evaluate(f, 0, "u1", "z", f->bits, NULL, 2);
    assert_int_equal(sim_inject(f->w.t, f->serial[0], SIM_FAULT_UNPLUG, 1), 0);
    FX_UNTIL(f, logged(l, "state gone pulsecount: disconnected"));
    rec_expect(l, "results u1 n=1", "results u1 n=1", "event failure to=alice: board disconnected",
               "state gone pulsecount: disconnected", NULL);
    assert_int_equal(f->rec->nresults, 2);
    for (size_t i = 0; i < 2; i++) {
        char id[8];
        snprintf(id, sizeof id, "z%zu", i);
        assert_string_equal(result(f, i)->id, id);
        assert_int_equal(result(f, i)->type, IFM_VALUE_FAILED);
        assert_string_equal(result(f, i)->error, "board disconnected");
    }
    rec_expect(&f->rec->worker, "birth online boards=1", "birth online boards=0", NULL);

    assert_int_equal(sim_plug(f->w.t, f->serial[0]), 0);
    FX_UNTIL(f, logged(l, "event initialized to=alice"));
    rec_expect(l, "state preparing pulsecount: rebooting", "state reserved pulsecount", "event initialized to=alice",
               NULL);
    rec_expect(&f->rec->worker, "birth online boards=1", NULL);

    fx_worker_cmd(f, IFM_WOP_DELETE, 0, NULL, NULL, NULL);
    FX_UNTIL(f, logged(l, "state ready"));
    rec_expect(l, "state flashing", "state testing", "state ready", NULL);
    assert_string_equal(fx_board(f, 0)->holder, "");
    fx_free(f);
}

/* The holder's commands: refusals are "error" events naming the batch; a wrong
 * size bitstream is a failed result; custom firmware keeps the farm's hands off
 * until a reboot brings the kind back. */
static void test_board_commands(void **state)
{
    fx *f = fx_new(1);
    fx_start(f);
    expect_bring_up(f, 0);
    rec_log *l = fx_log(f, 0);
    fx_evaluate(f, 0, "e0", "a", f->bits, NULL, 1);
    rec_expect(l, "event error to= batch=e0: board is ready, not reserved", NULL);

    reserve_ok(f, 0, "pulsecount", "alice", NULL);
    const size_t short_len[] = { 1000 };
    fx_evaluate(f, 0, "e1", "s", f->bits, short_len, 1);
    rec_expect(l, "results e1 n=1", NULL);
    assert_int_equal(result(f, 0)->type, IFM_VALUE_FAILED);
    assert_string_equal(result(f, 0)->error, "bitstream is 1000 bytes, must be exactly 104090");
    /* Only the holder's commands run: another name, or none, is refused to its
     * sender (the refusal names it), and nothing reaches the board. */
    fx_evaluate_as(f, 0, "bob", "eb", "b", f->bits, NULL, 1);
    rec_expect(l, "event error to=bob batch=eb: refused: the board is reserved by another client, not by bob", NULL);
    fx_evaluate_as(f, 0, "", "en", "n", f->bits, NULL, 1);
    rec_expect(l, "event error to= batch=en: refused: the command carries no icefarm-client user property", NULL);
    assert_int_equal(f->rec->nresults, 1);

    static const uint8_t not_uf2[512] = { 1, 2, 3 };
    fx_flash(f, 0, not_uf2, sizeof not_uf2);
    assert_true(l->n == l->seen + 1);
    assert_non_null(strstr(l->line[l->seen], "event error to=alice: not a UF2 image for the RP2350"));
    l->seen++;

    size_t len;
    uint8_t *custom = sim_fw_build_uf2(SIM_FW_VARIANCE, &len);
    assert_non_null(custom);
    fx_flash(f, 0, custom, len);
    free(custom);
    FX_UNTIL(f, logged(l, "event flashed to=alice"));
    rec_expect(l, "state preparing pulsecount: flashing custom firmware", "state reserved pulsecount: custom firmware",
               "event flashed to=alice", NULL);
    fx_evaluate(f, 0, "e2", "c", f->bits, NULL, 1);
    rec_expect(l, "event error to=alice batch=e2: board runs custom firmware; reboot it to evaluate again", NULL);
    /* Hands off: the farm does not talk to it, so it holds no timer. */
    assert_int_equal(fx_board(f, 0)->state_timer, 0);
    assert_false(fx_board(f, 0)->cdc);

    fx_worker_cmd(f, IFM_WOP_REBOOT, 0, NULL, NULL, NULL);
    FX_UNTIL(f, logged(l, "event initialized to=alice"));
    rec_expect(l, "state preparing pulsecount: rebooting", "state reserved pulsecount", "event initialized to=alice",
               NULL);
    fx_evaluate(f, 0, "e3", "k", f->bits, NULL, 1);
    FX_UNTIL(f, f->rec->nresults == 2);
    rec_expect(l, "results e3 n=1", NULL);
    assert_int_equal(result(f, 1)->pulses, sim_expected_pulses(f->bits[0], BITSTREAM_SIZE));
    fx_free(f);
}

/* The firmware's watchdog reports a short transfer: retried after a reboot. */
static void test_watchdog_retry(void **state)
{
    fx *f = fx_new(1);
    f->so.watchdog_ms = 100;
    fx_start(f);
    expect_bring_up(f, 0);
    rec_log *l = fx_log(f, 0);
    reserve_ok(f, 0, "pulsecount", "alice", NULL);
    assert_int_equal(sim_inject(f->w.t, f->serial[0], SIM_FAULT_WATCHDOG, 1), 0);
    fx_evaluate(f, 0, "w1", "q", f->bits, NULL, 1);
    FX_UNTIL(f, f->rec->nresults == 1);
    rec_expect(l, "state preparing pulsecount: rebooting", "state reserved pulsecount", "event initialized to=alice",
               "results w1 n=1", NULL);
    assert_int_equal(result(f, 0)->pulses, sim_expected_pulses(f->bits[0], BITSTREAM_SIZE));
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bring_up),
        cmocka_unit_test(test_reserve_evaluate_release),
        cmocka_unit_test(test_variance_batched),
        cmocka_unit_test(test_hang_then_recover),
        cmocka_unit_test(test_hang_gives_up),
        cmocka_unit_test(test_broken_default_then_retry),
        cmocka_unit_test(test_backoff_and_quarantine),
        cmocka_unit_test(test_prepare_fails_then_retry),
        cmocka_unit_test(test_refusal_unplug_delete),
        cmocka_unit_test(test_board_commands),
        cmocka_unit_test(test_watchdog_retry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
