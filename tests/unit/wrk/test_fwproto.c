/* Firmware serial protocol, host side: line splitting over arbitrary chunk
 * boundaries, the line classifier, and the variance fitness. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fwproto.h"

/* ---- line collection ---- */

#define MAX_LINES 64

typedef struct {
    char *line[MAX_LINES];
    size_t len[MAX_LINES];
    bool truncated[MAX_LINES];
    size_t n;
    size_t stop_after; /* 0: never stop */
} collected;

static bool collect(void *arg, const char *line, size_t len, bool truncated)
{
    collected *c = arg;
    assert_true(c->n < MAX_LINES);
    assert_int_equal(line[len], '\0');
    c->line[c->n] = malloc(len + 1);
    memcpy(c->line[c->n], line, len + 1);
    c->len[c->n] = len;
    c->truncated[c->n] = truncated;
    c->n++;
    return c->stop_after == 0 || c->n < c->stop_after;
}

static void collected_free(collected *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->line[i]);
    c->n = 0;
}

static fw_lines *splitter(void)
{
    fw_lines *s = malloc(sizeof *s);
    fw_lines_init(s);
    return s;
}

static uint32_t rng(uint32_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

/* What a pulse-count board says during one evaluation, plus odd endings. */
static const char transcript[] = "USB Connected :)\r\n"
                                 "Waiting for bitstream transfer\r\n"
                                 "Bitstream transfer started\r\n"
                                 "Receiving bitstream\r\n"
                                 "Received bitstream in 104331 us :)\r\n"
                                 "Flashing FPGA\r\n"
                                 "FPGA Flash times (us): init 1021, start 2, open 5, write 7344, close 118\r\n"
                                 ", pulses: 1998\r\n"
                                 "IDLE\r\n"
                                 "\r\n"
                                 "lone newline\n"
                                 "cr inside\rline\r\n"
                                 "double cr\r\r\n";

static const char *const expected_lines[] = {
    "USB Connected :)",
    "Waiting for bitstream transfer",
    "Bitstream transfer started",
    "Receiving bitstream",
    "Received bitstream in 104331 us :)",
    "Flashing FPGA",
    "FPGA Flash times (us): init 1021, start 2, open 5, write 7344, close 118",
    ", pulses: 1998",
    "IDLE",
    "",
    "lone newline",
    "cr inside\rline",
    "double cr\r",
};
#define N_EXPECTED (sizeof expected_lines / sizeof expected_lines[0])

static void check_transcript(collected *c)
{
    assert_int_equal(c->n, N_EXPECTED);
    for (size_t i = 0; i < N_EXPECTED; i++) {
        assert_string_equal(c->line[i], expected_lines[i]);
        assert_false(c->truncated[i]);
    }
}

static void test_split_whole(void **state)
{
    fw_lines *s = splitter();
    collected c = { 0 };
    fw_lines_feed(s, (const uint8_t *)transcript, strlen(transcript), collect, &c);
    check_transcript(&c);
    collected_free(&c);
    free(s);
}

static void test_split_byte_by_byte(void **state)
{
    fw_lines *s = splitter();
    collected c = { 0 };
    for (size_t i = 0; i < strlen(transcript); i++)
        fw_lines_feed(s, (const uint8_t *)transcript + i, 1, collect, &c);
    check_transcript(&c);
    collected_free(&c);
    free(s);
}

static void test_split_random_chunks(void **state)
{
    uint32_t x = 99;
    for (int round = 0; round < 500; round++) {
        fw_lines *s = splitter();
        collected c = { 0 };
        size_t len = strlen(transcript), i = 0;
        while (i < len) {
            size_t n = 1 + rng(&x) % 40;
            if (n > len - i)
                n = len - i;
            fw_lines_feed(s, (const uint8_t *)transcript + i, n, collect, &c);
            i += n;
        }
        check_transcript(&c);
        collected_free(&c);
        free(s);
    }
}

static void test_split_partial_and_empty(void **state)
{
    fw_lines *s = splitter();
    collected c = { 0 };
    fw_lines_feed(s, (const uint8_t *)"", 0, collect, &c);
    fw_lines_feed(s, (const uint8_t *)"no end yet", 10, collect, &c);
    assert_int_equal(c.n, 0);
    fw_lines_feed(s, (const uint8_t *)"\r", 1, collect, &c);
    assert_int_equal(c.n, 0);
    fw_lines_feed(s, (const uint8_t *)"\n", 1, collect, &c);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.line[0], "no end yet");
    /* Bytes with NULs pass through with their length. */
    fw_lines_feed(s, (const uint8_t *)"a\0b\r\n", 5, collect, &c);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.len[1], 3);
    assert_memory_equal(c.line[1], "a\0b", 3);
    collected_free(&c);
    free(s);
}

static void test_split_stop(void **state)
{
    fw_lines *s = splitter();
    collected c = { .stop_after = 2 };
    fw_lines_feed(s, (const uint8_t *)"1\r\n2\r\n3\r\n", 9, collect, &c);
    assert_int_equal(c.n, 2); /* the rest of the chunk was dropped */
    c.stop_after = 0;
    fw_lines_init(s);
    fw_lines_feed(s, (const uint8_t *)"4\r\n", 3, collect, &c);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.line[2], "4");
    collected_free(&c);
    free(s);
}

static void test_split_long_lines(void **state)
{
    size_t big = FW_LINE_MAX * 3;
    char *buf = malloc(big + 64);
    memset(buf, 'x', big);
    memcpy(buf + big, "\r\nok\r\n", 6);

    /* Whole, and in odd chunks: the over-long line is cut to FW_LINE_MAX and
     * flagged, the buffer does not grow, the next line is intact. */
    for (int mode = 0; mode < 2; mode++) {
        fw_lines *s = splitter();
        collected c = { 0 };
        if (mode == 0) {
            fw_lines_feed(s, (const uint8_t *)buf, big + 6, collect, &c);
        } else {
            for (size_t i = 0; i < big + 6; i += 1000)
                fw_lines_feed(s, (const uint8_t *)buf + i, big + 6 - i < 1000 ? big + 6 - i : 1000, collect, &c);
        }
        assert_int_equal(c.n, 2);
        assert_true(c.truncated[0]);
        assert_int_equal(c.len[0], FW_LINE_MAX);
        assert_false(c.truncated[1]);
        assert_string_equal(c.line[1], "ok");
        collected_free(&c);
        free(s);
    }

    /* Exactly FW_LINE_MAX bytes plus "\r\n" fits; one more does not. */
    fw_lines *s = splitter();
    collected c = { 0 };
    memcpy(buf + FW_LINE_MAX, "\r\n", 2);
    fw_lines_feed(s, (const uint8_t *)buf, FW_LINE_MAX + 2, collect, &c);
    buf[FW_LINE_MAX] = 'x';
    memcpy(buf + FW_LINE_MAX + 1, "\r\n", 2);
    fw_lines_feed(s, (const uint8_t *)buf, FW_LINE_MAX + 3, collect, &c);
    memcpy(buf + FW_LINE_MAX + 1, "\n", 1); /* lone \n: the x is content */
    fw_lines_feed(s, (const uint8_t *)buf, FW_LINE_MAX + 2, collect, &c);
    assert_int_equal(c.n, 3);
    assert_false(c.truncated[0]);
    assert_int_equal(c.len[0], FW_LINE_MAX);
    assert_true(c.truncated[1]);
    assert_true(c.truncated[2]);
    assert_int_equal(c.len[2], FW_LINE_MAX);
    collected_free(&c);
    free(s);
    free(buf);
}

/* ---- classifier ---- */

static fw_line_info classify(const char *line)
{
    static uint16_t samples[FW_SAMPLES_MAX];
    fw_line_info info;
    fw_line_kind k = fw_classify(line, strlen(line), false, samples, FW_SAMPLES_MAX, &info);
    assert_int_equal(k, info.kind);
    return info;
}

static void expect_kind(const char *line, fw_line_kind kind)
{
    fw_line_info i = classify(line);
    if (i.kind != kind)
        fail_msg("\"%.60s\": %s, expected %s", line, fw_line_kind_name(i.kind), fw_line_kind_name(kind));
    if (kind == FW_LINE_MALFORMED)
        assert_non_null(i.reason);
}

static void test_classify_simple(void **state)
{
    expect_kind("Waiting for bitstream transfer", FW_LINE_READY);
    expect_kind("default firmware", FW_LINE_DEFAULT_FW);
    expect_kind("xxdefault firmwaredefault firmware", FW_LINE_DEFAULT_FW); /* flood, mid-line */
    static const char *const other[] = {
        "",
        "USB Connected :)",
        "USB Reconnected :)",
        "USB Disconnected :(",
        "IDLE",
        "Bitstream transfer started",
        "Receiving bitstream",
        "Received bitstream in 5 us :)",
        "Flashing FPGA",
        "Sampling ADC",
        "UNKNOWN STATE",
        "FPGA Flash times (us): init 1021, start -1, open 5, write 7344, close 118",
        "pulses:12",
        "Waiting for bitstream",
        "\xff\xfe garbage \x01",
    };
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
        expect_kind(other[i], FW_LINE_OTHER);
    /* NUL bytes do not hide what follows them. */
    fw_line_info info;
    assert_int_equal(fw_classify("\0Waiting for bitstream transfer", 31, false, NULL, 0, &info), FW_LINE_READY);
    /* A truncated line is never trusted. */
    assert_int_equal(fw_classify("pulses: 5", 9, true, NULL, 0, &info), FW_LINE_MALFORMED);
    assert_string_equal(fw_line_kind_name(FW_LINE_READY), "ready");
}

static void test_classify_watchdog(void **state)
{
    fw_line_info i = classify("Watchdog timeout, 52045 bytes received of 104090");
    assert_int_equal(i.kind, FW_LINE_WATCHDOG);
    assert_int_equal(i.received, 52045);
    i = classify("Watchdog timeout, 0 bytes received of 104090");
    assert_int_equal(i.received, 0);
    i = classify("Watchdog timeout");
    assert_int_equal(i.kind, FW_LINE_WATCHDOG);
    assert_int_equal(i.received, -1);
    i = classify("junk Watchdog timeout, many bytes received");
    assert_int_equal(i.kind, FW_LINE_WATCHDOG);
    assert_int_equal(i.received, -1);
    i = classify("Watchdog timeout, 99999999999999 bytes received of 104090");
    assert_int_equal(i.received, -1);
}

static void test_classify_pulses(void **state)
{
    fw_line_info i = classify(", pulses: 1998");
    assert_int_equal(i.kind, FW_LINE_PULSES);
    assert_int_equal(i.pulses, 1998);
    i = classify("pulses: 0");
    assert_int_equal(i.pulses, 0);
    i = classify("FPGA Flash times (us): init 1, start 2, open 3, write 4, close 5, pulses: 77 \r");
    assert_int_equal(i.kind, FW_LINE_PULSES);
    assert_int_equal(i.pulses, 77);
    i = classify("pulses: 4294967295");
    assert_int_equal(i.kind, FW_LINE_PULSES);
    assert_int_equal(i.pulses, UINT32_MAX);
    expect_kind("pulses: 4294967296", FW_LINE_MALFORMED);
    expect_kind("pulses: 99999999999999999999999", FW_LINE_MALFORMED);
    expect_kind("pulses: -5", FW_LINE_MALFORMED);
    expect_kind("pulses: +5", FW_LINE_MALFORMED);
    expect_kind("pulses: ", FW_LINE_MALFORMED);
    expect_kind("pulses: 12a", FW_LINE_MALFORMED);
    expect_kind("pulses: 0x10", FW_LINE_MALFORMED);
    expect_kind("pulses: 1, 2, 3, 4", FW_LINE_MALFORMED); /* the fork's 4-counter firmware */
}

static void test_classify_samples(void **state)
{
    uint16_t s[FW_SAMPLES_MAX];
    fw_line_info i;
    const char *l = "samples: 512,489,523,501,498";
    assert_int_equal(fw_classify(l, strlen(l), false, s, FW_SAMPLES_MAX, &i), FW_LINE_SAMPLES);
    assert_int_equal(i.nsamples, 5);
    assert_int_equal(s[0], 512);
    assert_int_equal(s[4], 498);
    i = classify("samples: 0,4095 \r");
    assert_int_equal(i.kind, FW_LINE_SAMPLES);
    assert_int_equal(i.nsamples, 2);
    i = classify("samples: 7");
    assert_int_equal(i.nsamples, 1);

    static const char *const bad[] = {
        "samples:",    "samples: ",  "samples:1,2",  "samples: 4096", "samples: 1,,2", "samples: 1,2,",
        "samples: ,1", "samples: a", "samples: 1;2", "samples: 1, 2", "samples: -1",   "samples: 99999999999",
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
        expect_kind(bad[k], FW_LINE_MALFORMED);

    /* Capacity: more values than the caller's buffer is malformed. */
    l = "samples: 1,2,3,4";
    assert_int_equal(fw_classify(l, strlen(l), false, s, 3, &i), FW_LINE_MALFORMED);
    assert_int_equal(fw_classify(l, strlen(l), false, s, 4, &i), FW_LINE_SAMPLES);

    /* A full 4096-sample line parses, one more value does not. */
    char *big = malloc(16 + (FW_SAMPLES_MAX + 1) * 5);
    size_t n = (size_t)sprintf(big, "samples:");
    for (int k = 0; k < FW_SAMPLES_MAX; k++)
        n += (size_t)sprintf(big + n, k ? ",%d" : " %d", 4095 - k % 4096);
    assert_true(n <= FW_LINE_MAX);
    assert_int_equal(fw_classify(big, n, false, s, FW_SAMPLES_MAX, &i), FW_LINE_SAMPLES);
    assert_int_equal(i.nsamples, FW_SAMPLES_MAX);
    assert_int_equal(s[FW_SAMPLES_MAX - 1], 0);
    n += (size_t)sprintf(big + n, ",1");
    assert_int_equal(fw_classify(big, n, false, s, 1 << 20, &i), FW_LINE_MALFORMED);
    free(big);
}

/* ---- variance ---- */

static void test_variance(void **state)
{
    const uint16_t zero[] = { 100, 100, 100, 100, 100 };
    const uint16_t square[] = { 0, 100, 0, 100, 0 };
    const uint16_t ramp[] = { 0, 1, 2, 3, 4 };
    const uint16_t extreme[] = { 4095, 0 };
    const uint16_t one[] = { 42 };
    assert_true(fw_variance_fitness(NULL, 0) == 0.0);
    assert_true(fw_variance_fitness(one, 1) == 0.0);
    assert_true(fw_variance_fitness(zero, 5) == 0.0);
    assert_true(fw_variance_fitness(square, 5) == 80.0); /* 400 / 5, not / 4 */
    assert_true(fw_variance_fitness(ramp, 5) == 0.8);
    assert_true(fw_variance_fitness(extreme, 2) == 2047.5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_whole),
        cmocka_unit_test(test_split_byte_by_byte),
        cmocka_unit_test(test_split_random_chunks),
        cmocka_unit_test(test_split_partial_and_empty),
        cmocka_unit_test(test_split_stop),
        cmocka_unit_test(test_split_long_lines),
        cmocka_unit_test(test_classify_simple),
        cmocka_unit_test(test_classify_watchdog),
        cmocka_unit_test(test_classify_pulses),
        cmocka_unit_test(test_classify_samples),
        cmocka_unit_test(test_variance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
