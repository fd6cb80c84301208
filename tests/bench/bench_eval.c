/* Evaluation throughput through libicefarm's batch engine: reserve B boards, keep
 * W bitstreams in flight per board, run N evaluations, and report evaluations per second and
 * the time per evaluation per board beyond the board's own count window (the
 * farm's overhead). Worker CPU per evaluation is measured by the caller from
 * /proc (see run.sh). A benchmark: it asserts nothing about speed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "icefarm/codec.h"
#include "icefarm/icefarm.h"

typedef struct {
    size_t done;
} counter;

static void on_result(icefarm_batch *b, size_t index, const char *serial, const icefarm_result *r, void *arg)
{
    ((counter *)arg)->done++;
}

static bool all_ready(void *arg)
{
    void **a = arg;
    icefarm *f = a[0];
    char(*serials)[ICEFARM_SERIAL_MAX] = a[1];
    size_t n = *(size_t *)a[2];
    for (size_t i = 0; i < n; i++)
        if (icefarm_get_board_state(f, serials[i]) != ICEFARM_BOARD_RESERVED)
            return false;
    return true;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: bench_eval BROKER BOARDS EVALS_PER_BOARD WINDOW COUNT_WINDOW_MS\n");
        return 2;
    }
    size_t boards = (size_t)atoi(argv[2]), total = boards * (size_t)atoi(argv[3]);
    uint32_t window = (uint32_t)atoi(argv[4]);
    double window_ms = atof(argv[5]);
    char err[256];
    icefarm_opts o = { .broker = argv[1], .name = "bench-eval", .timeout_ms = 30000 };
    icefarm *f;
    if (icefarm_connect(&o, &f, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    ifm_enc a;
    ifm_enc_init(&a);
    ifm_enc_map(&a, 2);
    ifm_enc_kuint(&a, "flush_interval_seconds", 1);
    ifm_enc_kuint(&a, "flush_at_bitstreams_remaining", window);
    char(*serials)[ICEFARM_SERIAL_MAX];
    size_t n;
    if (icefarm_reserve(f, (uint32_t)boards, "pulsecount", ifm_enc_data(&a), ifm_enc_size(&a), 30000, &serials, &n, err,
                        sizeof err)) {
        fprintf(stderr, "reserve: %s\n", err);
        return 1;
    }
    ifm_enc_free(&a);
    void *ra[3] = { f, serials, &n };
    if (icefarm_run_until(f, all_ready, ra, 60000)) {
        fprintf(stderr, "boards did not become ready\n");
        return 1;
    }
    counter c = { 0 };
    icefarm_batch_opts bo = { .window = window };
    icefarm_batch *b = icefarm_batch_new(f, serials, n, &bo, on_result, &c);
    uint8_t *bits = malloc(ICEFARM_BITSTREAM_SIZE);
    for (size_t i = 0; i < ICEFARM_BITSTREAM_SIZE; i++)
        bits[i] = (uint8_t)(i * 131u + 7u);
    for (size_t i = 0; i < total; i++)
        icefarm_batch_add(b, bits, ICEFARM_BITSTREAM_SIZE, NULL);
    free(bits);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = icefarm_batch_run(b, 600000);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    double per_board_ms = secs * 1000.0 * (double)n / (double)c.done;
    printf("boards=%zu evals=%zu seconds=%.2f evals_per_s=%.1f per_eval_per_board_ms=%.1f overhead_ms=%.1f%s\n", n,
           c.done, secs, (double)c.done / secs, per_board_ms, per_board_ms - window_ms, rc ? " (INCOMPLETE)" : "");
    icefarm_batch_free(b);
    icefarm_end_all(f, NULL, err, sizeof err);
    icefarm_close(f);
    free(serials);
    return rc ? 1 : 0;
}
