/* Soak: N evaluations across B simulated boards while faults are injected
 * (hangs, watchdog timeouts, disconnects, slow flashing). Checks that every
 * evaluation ends in exactly one result or one explicit failure, that every
 * measured value is right (the sim's CRC-32 function), and that no worker ever
 * reported the same evaluation twice. Prints "N passed, M failed". */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "icefarm/icefarm.h"
#include "icefarm/mqtt.h"
#include "icefarm/msg.h"
#include "sim.h"

typedef struct {
    icefarm *f;
    ifm_loop *inj_loop; /* the fault injector's own connection: a separate actor */
    ifm_mqtt *inj;
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
    size_t ndone;          /* results so far */
    int nfaults, injected; /* fault k goes in at k/(nfaults+1) of the results */
} soak;

static void inject(soak *s);

static void on_result(icefarm_batch *b, size_t index, const char *serial, const icefarm_result *r, void *arg)
{
    soak *s = arg;
    s->calls[index]++;
    /* Faults by progress, from inside the run: every one lands, whatever the
     * size (a clock let a small run finish before the first one). */
    s->ndone++;
    while (s->injected < s->nfaults && s->ndone >= (size_t)(s->injected + 1) * s->n / (size_t)(s->nfaults + 1)) {
        inject(s);
        s->injected++;
    }
    if (r->type == ICEFARM_VALUE_FAILED)
        s->failures++;
    else if (r->type != ICEFARM_VALUE_PULSES || (uint32_t)r->pulses != s->expected[index])
        s->wrong_values++;
}

static int cmp_seen(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void on_wire(icefarm *f, const icefarm_event *ev, void *arg)
{
    soak *s = arg;
    for (size_t i = 0; i < icefarm_event_nresults(ev); i++) {
        icefarm_result r;
        if (icefarm_event_result(ev, i, &r, NULL, 0))
            continue;
        if (s->nseen == s->capseen) {
            s->capseen = s->capseen ? s->capseen * 2 : 1024;
            s->seen = realloc(s->seen, s->capseen * sizeof *s->seen);
        }
        snprintf(s->seen[s->nseen++], sizeof *s->seen, "%s/%s/%s", icefarm_event_serial(ev), icefarm_event_batch_id(ev),
                 r.id);
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
    ifm_mqtt_publish(s->inj, topic, ifm_enc_data(&e), ifm_enc_size(&e), 1, false);
    ifm_mqtt_flush(s->inj, 2000);
    ifm_enc_free(&e);
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
    if (icefarm_connect(&o, &s.f, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    char host[256];
    ifm_mqtt_opts mo = { .name = "soak-faults" };
    s.inj_loop = ifm_loop_new();
    if (ifm_mqtt_parse_url(argv[1], &mo, host, sizeof host) || !(s.inj = ifm_mqtt_new(s.inj_loop, &mo, NULL, NULL)) ||
        ifm_mqtt_start(s.inj) || ifm_mqtt_wait_connected(s.inj, 10000)) {
        fprintf(stderr, "the fault injector cannot connect to %s\n", argv[1]);
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
    uint8_t *bits = malloc(ICEFARM_BITSTREAM_SIZE);
    for (size_t i = 0; i < s.n; i++) {
        /* Every evaluation a different bitstream, so a mix-up shows as a wrong value. */
        uint32_t x = (uint32_t)i * 2654435761u + 1;
        for (size_t k = 0; k < ICEFARM_BITSTREAM_SIZE; k++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            bits[k] = (uint8_t)x;
        }
        s.expected[i] = sim_expected_pulses(bits, ICEFARM_BITSTREAM_SIZE);
        icefarm_batch_add(b, bits, ICEFARM_BITSTREAM_SIZE, NULL);
    }
    free(bits);
    /* The faults go in from on_result, as the results come. */
    s.nfaults = nfaults;
    uint64_t t0 = ifm_now_ms();
    int rc = icefarm_batch_run(b, 1800000);
    int left = nfaults - s.injected;
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
           s.n, s.nserials, nfaults - (left > 0 ? left : 0), secs, s.failures, icefarm_batch_boards_alive(b));
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
    CHECK(left == 0, "all %d faults were injected during the run (%d were not)", nfaults, left);
    CHECK(missing == 0, "every evaluation has a result or an explicit failure (%zu missing)", missing);
    CHECK(twice == 0, "no evaluation reported twice to the caller (%zu)", twice);
    CHECK(s.wrong_values == 0, "every measured value is the right one (%zu wrong)", s.wrong_values);
    CHECK(s.wire_duplicates == 0, "no worker reported the same evaluation twice (%zu)", s.wire_duplicates);
    CHECK(s.failures * 100 <= s.n, "explicit failures stay rare (%zu of %zu)", s.failures, s.n);
    printf("%d passed, %d failed\n", pass, fail);
    icefarm_batch_free(b);
    icefarm_end_all(s.f, NULL, err, sizeof err);
    icefarm_close(s.f);
    ifm_mqtt_disconnect(s.inj);
    ifm_mqtt_free(s.inj);
    ifm_loop_free(s.inj_loop);
    free(s.calls);
    free(s.expected);
    free(s.seen);
    free(s.serials);
    return fail ? 1 : 0;
}
