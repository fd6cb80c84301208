/* The variance kind end to end through libicefarm's per-kind helper: fitness
 * (VarMax: sum |s[i+1]-s[i]| / n) and, with send_waveform, the 500 samples,
 * checked against the simulated board's documented sample function. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fwproto.h"
#include "icefarm/icefarm.h"
#include "sim.h"

typedef struct {
    bool got;
    icefarm_result r;
    uint16_t samples[SIM_SAMPLES];
} outcome;

static void on_result(icefarm_batch *b, size_t index, const char *serial, const icefarm_result *r, void *arg)
{
    outcome *o = arg;
    o->got = true;
    o->r = *r;
    if (r->type == ICEFARM_VALUE_WAVEFORM && r->nsamples == SIM_SAMPLES)
        memcpy(o->samples, r->samples, sizeof o->samples);
}

static int run(icefarm *f, bool waveform, const uint8_t *bits, int *pass, int *fail)
{
    char err[256];
    char(*serials)[ICEFARM_SERIAL_MAX];
    size_t n;
    if (icefarm_reserve_variance(f, 1, waveform, 1, 1, 30000, &serials, &n, err, sizeof err)) {
        fprintf(stderr, "reserve: %s\n", err);
        return -1;
    }
    outcome o = { 0 };
    icefarm_batch *b = icefarm_batch_new(f, serials, n, NULL, on_result, &o);
    icefarm_batch_add(b, bits, ICEFARM_BITSTREAM_SIZE, NULL);
    icefarm_batch_run(b, 120000);
    uint16_t want[SIM_SAMPLES];
    sim_expected_samples(bits, ICEFARM_BITSTREAM_SIZE, want);
    double fitness = fw_variance_fitness(want, SIM_SAMPLES);
#define CHECK(c, ...)                                                                                                  \
    do {                                                                                                               \
        if (c) {                                                                                                       \
            (*pass)++;                                                                                                 \
            printf("ok - ");                                                                                           \
        } else {                                                                                                       \
            (*fail)++;                                                                                                 \
            printf("not ok - ");                                                                                       \
        }                                                                                                              \
        printf(__VA_ARGS__);                                                                                           \
        printf("\n");                                                                                                  \
    } while (0)
    CHECK(o.got, "%s: a result came back", waveform ? "waveform" : "fitness");
    CHECK(o.r.type == (waveform ? ICEFARM_VALUE_WAVEFORM : ICEFARM_VALUE_FITNESS), "%s: result type %d",
          waveform ? "waveform" : "fitness", o.r.type);
    CHECK(fabs(o.r.fitness - fitness) < 1e-9, "%s: fitness %.6f == %.6f", waveform ? "waveform" : "fitness",
          o.r.fitness, fitness);
    if (waveform)
        CHECK(memcmp(o.samples, want, sizeof want) == 0, "waveform: all %d samples are the board's", SIM_SAMPLES);
    icefarm_batch_free(b);
    icefarm_end_all(f, NULL, err, sizeof err);
    free(serials);
    return 0;
}

int main(int argc, char **argv)
{
    char err[256];
    icefarm_opts o = { .broker = argv[1], .name = "variance-test" };
    icefarm *f;
    if (icefarm_connect(&o, &f, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    uint8_t *bits = malloc(ICEFARM_BITSTREAM_SIZE);
    for (size_t i = 0; i < ICEFARM_BITSTREAM_SIZE; i++)
        bits[i] = (uint8_t)(i * 7u + (i >> 9));
    int pass = 0, fail = 0;
    if (run(f, false, bits, &pass, &fail) || run(f, true, bits, &pass, &fail))
        fail++;
    printf("%d passed, %d failed\n", pass, fail);
    free(bits);
    icefarm_close(f);
    return fail ? 1 : 0;
}
