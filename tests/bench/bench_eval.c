/* Evaluation throughput through libicefarm: reserve B boards, keep W bitstreams
 * in flight per board, run N evaluations, and report evaluations per second and
 * the time per evaluation per board beyond the board's own count window (the
 * farm's overhead). Worker CPU per evaluation is measured by the caller from
 * /proc (see run.sh). A benchmark: it asserts nothing about speed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "icefarm/client.h"

typedef struct {
    icefarm *f;
    char (*serials)[IFM_SERIAL_MAX];
    size_t nboards;
    uint32_t *inflight;
    bool *ready;
    size_t sent, done, total, window;
    uint8_t *bits;
    char batch[64];
} run;

static size_t board_index(run *r, const char *serial)
{
    for (size_t i = 0; i < r->nboards; i++)
        if (strcmp(r->serials[i], serial) == 0)
            return i;
    return SIZE_MAX;
}

static void top_up(run *r, size_t i)
{
    while (r->ready[i] && r->inflight[i] < r->window && r->sent < r->total) {
        ifm_file f = { "", r->bits, IFM_BITSTREAM_SIZE };
        snprintf(f.id, sizeof f.id, "%zu", r->sent);
        if (icefarm_evaluate(r->f, r->serials[i], r->batch, &f, 1))
            return;
        r->sent++;
        r->inflight[i]++;
    }
}

static void on_results(icefarm *f, const ifm_event *ev, void *arg)
{
    run *r = arg;
    size_t i = board_index(r, ev->serial);
    if (i == SIZE_MAX || !ev->results)
        return;
    size_t n = ev->results->via.array.size;
    r->done += n;
    r->inflight[i] -= n < r->inflight[i] ? (uint32_t)n : r->inflight[i];
    top_up(r, i);
}

static void on_init(icefarm *f, const ifm_event *ev, void *arg)
{
    run *r = arg;
    size_t i = board_index(r, ev->serial);
    if (i != SIZE_MAX) {
        r->ready[i] = true;
        top_up(r, i);
    }
}

static bool all_ready(void *arg)
{
    run *r = arg;
    for (size_t i = 0; i < r->nboards; i++) {
        if (!r->ready[i] && icefarm_board_state(r->f, r->serials[i]) == IFM_BOARD_RESERVED)
            r->ready[i] = true;
        if (!r->ready[i])
            return false;
    }
    return true;
}

static bool finished(void *arg)
{
    run *r = arg;
    return r->done >= r->total;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: bench_eval BROKER BOARDS EVALS_PER_BOARD WINDOW COUNT_WINDOW_MS\n");
        return 2;
    }
    run r;
    memset(&r, 0, sizeof r);
    size_t boards = (size_t)atoi(argv[2]);
    r.total = boards * (size_t)atoi(argv[3]);
    r.window = (size_t)atoi(argv[4]);
    double window_ms = atof(argv[5]);
    char err[256];
    icefarm_opts o = { .broker = argv[1], .name = "bench-eval", .timeout_ms = 30000 };
    r.f = icefarm_connect(&o, err, sizeof err);
    if (!r.f) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    r.bits = malloc(IFM_BITSTREAM_SIZE);
    for (size_t i = 0; i < IFM_BITSTREAM_SIZE; i++)
        r.bits[i] = (uint8_t)(i * 131u + 7u);
    snprintf(r.batch, sizeof r.batch, "bench-%ld", (long)time(NULL));
    ifm_enc a;
    ifm_enc_init(&a);
    ifm_enc_map(&a, 2);
    ifm_enc_kuint(&a, "flush_interval_seconds", 1);
    ifm_enc_kuint(&a, "flush_at_bitstreams_remaining", r.window);
    if (icefarm_reserve(r.f, (uint32_t)boards, "pulsecount", ifm_enc_data(&a), ifm_enc_size(&a), 30000,
                        &r.serials, &r.nboards, err, sizeof err)) {
        fprintf(stderr, "reserve: %s\n", err);
        return 1;
    }
    ifm_enc_free(&a);
    r.inflight = calloc(r.nboards, sizeof *r.inflight);
    r.ready = calloc(r.nboards, sizeof *r.ready);
    icefarm_on(r.f, "results", on_results, &r);
    icefarm_on(r.f, "initialized", on_init, &r);
    if (icefarm_run_until(r.f, all_ready, &r, 60000)) {
        fprintf(stderr, "boards did not become ready\n");
        return 1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (size_t i = 0; i < r.nboards; i++)
        top_up(&r, i);
    int rc = icefarm_run_until(r.f, finished, &r, 600000);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    double per_board_ms = secs * 1000.0 * (double)r.nboards / (double)r.done;
    printf("boards=%zu evals=%zu seconds=%.2f evals_per_s=%.1f per_eval_per_board_ms=%.1f "
           "overhead_ms=%.1f%s\n",
           r.nboards, r.done, secs, (double)r.done / secs, per_board_ms, per_board_ms - window_ms,
           rc ? " (TIMED OUT)" : "");
    size_t n;
    icefarm_end_all(r.f, &n, err, sizeof err);
    icefarm_close(r.f);
    free(r.serials);
    free(r.inflight);
    free(r.ready);
    free(r.bits);
    return rc ? 1 : 0;
}
