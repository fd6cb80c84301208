/* Soak: N evaluations across B simulated boards while faults are injected
 * (hangs, watchdog timeouts, disconnects, slow flashing). Checks that every
 * evaluation ends in exactly one result or one explicit failure, that every
 * measured value is right (the sim's CRC-32 function), and that no worker ever
 * reported the same evaluation twice. Prints "N passed, M failed". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "icefarm/batch.h"
#include "sim.h"

typedef struct {
    icefarm *f;
    size_t n;
    uint8_t *calls; /* on_result calls per evaluation */
    uint32_t *expected;
    size_t wrong_values, failures;
    /* (serial, id) pairs seen on the wire, to catch a worker reporting twice */
    char (*seen)[IFM_SERIAL_MAX + 2 * IFM_ID_MAX + 4];
    size_t nseen, capseen, wire_duplicates;
    char (*serials)[IFM_SERIAL_MAX];
    size_t nserials;
    unsigned seed;
    const char *worker;
} soak;

static void on_result(icefarm_batch *b, size_t index, const char *serial, const ifm_result *r, void *arg)
{
    soak *s = arg;
    s->calls[index]++;
    if (r->type == IFM_VALUE_FAILED)
        s->failures++;
    else if (r->type != IFM_VALUE_PULSES || (uint32_t)r->pulses != s->expected[index])
        s->wrong_values++;
}

static int cmp_seen(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void on_wire(icefarm *f, const ifm_event *ev, void *arg)
{
    soak *s = arg;
    for (size_t i = 0; ev->results && i < ev->results->via.array.size; i++) {
        ifm_result r;
        ifm_err err;
        if (ifm_event_result_at(ev, i, &r, NULL, 0, &err))
            continue;
        if (s->nseen == s->capseen) {
            s->capseen = s->capseen ? s->capseen * 2 : 1024;
            s->seen = realloc(s->seen, s->capseen * sizeof *s->seen);
        }
        snprintf(s->seen[s->nseen++], sizeof *s->seen, "%s/%s/%s", ev->serial, ev->batch_id, r.id);
    }
}

static void inject(soak *s)
{
    static const char *const faults[] = { "hang", "watchdog", "watchdog", "disconnect", "slow_flash" };
    const char *serial = s->serials[rand_r(&s->seed) % s->nserials];
    const char *fault = faults[rand_r(&s->seed) % (sizeof faults / sizeof *faults)];
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_enc_root(&e, 3);
    ifm_enc_kstr(&e, "serial", serial);
    ifm_enc_kstr(&e, "fault", fault);
    ifm_enc_kuint(&e, "count", 1);
    char topic[IFM_TOPIC_MAX];
    ifm_topic_worker(topic, sizeof topic, s->worker, "sim");
    ifm_mqtt_publish(icefarm_mqtt(s->f), topic, ifm_enc_data(&e), ifm_enc_size(&e), 1, false);
    ifm_enc_free(&e);
}

typedef struct {
    soak *s;
    icefarm_batch *b;
    int left;
} injector;

static void on_tick(ifm_loop *loop, void *arg)
{
    injector *in = arg;
    if (in->left-- > 0 && icefarm_batch_done(in->b) < icefarm_batch_count(in->b)) {
        inject(in->s);
        ifm_timer_add(loop, 300 + rand_r(&in->s->seed) % 400, on_tick, in);
    }
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: soak BROKER WORKER BOARDS EVALUATIONS FAULTS\n");
        return 2;
    }
    soak s;
    memset(&s, 0, sizeof s);
    s.worker = argv[2];
    size_t boards = (size_t)atoi(argv[3]);
    s.n = (size_t)atol(argv[4]);
    int nfaults = atoi(argv[5]);
    s.seed = 12345;
    char err[256];
    icefarm_opts o = { .broker = argv[1], .name = "soak", .timeout_ms = 30000 };
    s.f = icefarm_connect(&o, err, sizeof err);
    if (!s.f) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    ifm_enc a;
    ifm_enc_init(&a);
    ifm_enc_map(&a, 2);
    ifm_enc_kuint(&a, "flush_interval_seconds", 1);
    ifm_enc_kuint(&a, "flush_at_bitstreams_remaining", 2);
    if (icefarm_reserve(s.f, (uint32_t)boards, "pulsecount", ifm_enc_data(&a), ifm_enc_size(&a), 60000, &s.serials,
                        &s.nserials, err, sizeof err)) {
        fprintf(stderr, "reserve: %s\n", err);
        return 1;
    }
    ifm_enc_free(&a);
    s.calls = calloc(s.n, 1);
    s.expected = calloc(s.n, sizeof *s.expected);
    icefarm_on(s.f, "results", on_wire, &s);
    icefarm_batch_opts bo = { .window = 2, .result_timeout_ms = 20000 };
    icefarm_batch *b = icefarm_batch_new(s.f, s.serials, s.nserials, &bo, on_result, &s);
    uint8_t *bits = malloc(IFM_BITSTREAM_SIZE);
    for (size_t i = 0; i < s.n; i++) {
        /* Every evaluation a different bitstream, so a mix-up shows as a wrong value. */
        uint32_t x = (uint32_t)i * 2654435761u + 1;
        for (size_t k = 0; k < IFM_BITSTREAM_SIZE; k++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            bits[k] = (uint8_t)x;
        }
        s.expected[i] = sim_expected_pulses(bits, IFM_BITSTREAM_SIZE);
        icefarm_batch_add(b, bits, IFM_BITSTREAM_SIZE, NULL);
    }
    free(bits);
    injector in = { &s, b, nfaults };
    ifm_timer_add(icefarm_loop(s.f), 1000, on_tick, &in);
    uint64_t t0 = ifm_now_ms();
    int rc = icefarm_batch_run(b, 1800000);
    double secs = (double)(ifm_now_ms() - t0) / 1000.0;
    size_t missing = 0, twice = 0;
    for (size_t i = 0; i < s.n; i++) {
        missing += s.calls[i] == 0;
        twice += s.calls[i] > 1;
    }
    qsort(s.seen, s.nseen, sizeof *s.seen, cmp_seen);
    for (size_t i = 1; i < s.nseen; i++)
        if (strcmp(s.seen[i], s.seen[i - 1]) == 0)
            s.wire_duplicates++;
    printf("%zu evaluations on %zu boards with %d faults injected in %.1f s: %zu failed explicitly, %zu boards left\n",
           s.n, s.nserials, nfaults - (in.left > 0 ? in.left : 0), secs, s.failures, icefarm_batch_boards_alive(b));
    int pass = 0, fail = 0;
#define CHECK(cond, ...)                                                                                               \
    do {                                                                                                               \
        if (cond) {                                                                                                    \
            pass++;                                                                                                    \
            printf("ok - ");                                                                                           \
        } else {                                                                                                       \
            fail++;                                                                                                    \
            printf("not ok - ");                                                                                       \
        }                                                                                                              \
        printf(__VA_ARGS__);                                                                                           \
        printf("\n");                                                                                                  \
    } while (0)
    CHECK(rc == 0, "the batch completed");
    CHECK(missing == 0, "every evaluation has a result or an explicit failure (%zu missing)", missing);
    CHECK(twice == 0, "no evaluation reported twice to the caller (%zu)", twice);
    CHECK(s.wrong_values == 0, "every measured value is the right one (%zu wrong)", s.wrong_values);
    CHECK(s.wire_duplicates == 0, "no worker reported the same evaluation twice (%zu)", s.wire_duplicates);
    CHECK(s.failures * 100 <= s.n, "explicit failures stay rare (%zu of %zu)", s.failures, s.n);
    printf("%d passed, %d failed\n", pass, fail);
    icefarm_batch_free(b);
    icefarm_end_all(s.f, NULL, err, sizeof err);
    icefarm_close(s.f);
    free(s.calls);
    free(s.expected);
    free(s.seen);
    free(s.serials);
    return fail ? 1 : 0;
}
