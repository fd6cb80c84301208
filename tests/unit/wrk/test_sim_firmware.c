/* Simulated firmware images: valid RP2350 UF2s that identify as their kind.
 * With arguments `--check FILE KIND` it instead validates a file written by the
 * icefarm-sim-firmware tool (see CMakeLists.txt). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fwproto.h"
#include "sim.h"
#include "sim_firmware.h"
#include "uf2.h"

static sim_fw_kind identify_image(const uint8_t *img, size_t len)
{
    uf2_image out;
    char why[UF2_REASON_MAX];
    if (uf2_parse(img, len, UF2_TARGET_RP2350, &out, why) != 0)
        fail_msg("invalid UF2: %s", why);
    assert_int_equal(out.base, SIM_FW_BASE);
    assert_int_equal(out.family, UF2_FAMILY_RP2350_ARM_S);
    sim_fw_kind k = sim_fw_identify(out.data, out.len);
    uf2_image_free(&out);
    return k;
}

static void test_build_and_identify(void **state)
{
    static const sim_fw_kind kinds[] = { SIM_FW_DEFAULT, SIM_FW_PULSECOUNT, SIM_FW_VARIANCE, SIM_FW_UNKNOWN };
    uint8_t *imgs[4];
    size_t lens[4];
    for (size_t i = 0; i < 4; i++) {
        imgs[i] = sim_fw_build_uf2(kinds[i], &lens[i]);
        assert_non_null(imgs[i]);
        assert_int_equal(lens[i] % 512, 0);
        assert_int_equal(identify_image(imgs[i], lens[i]), kinds[i]);
    }
    /* Deterministic per kind, distinct across kinds. */
    size_t l2;
    uint8_t *again = sim_fw_build_uf2(SIM_FW_PULSECOUNT, &l2);
    assert_int_equal(l2, lens[1]);
    assert_memory_equal(again, imgs[1], l2);
    assert_true(memcmp(imgs[1], imgs[2], lens[1]) != 0);
    free(again);
    for (size_t i = 0; i < 4; i++)
        free(imgs[i]);
}

static void test_identify_rejects(void **state)
{
    static const char *const payloads[] = {
        "",
        "ICEFARM-SIM-FIRMWARE v1 kind=",
        "ICEFARM-SIM-FIRMWARE v1 kind=pulsecount", /* no newline */
        "ICEFARM-SIM-FIRMWARE v1 kind=pulsecounter\n",
        "ICEFARM-SIM-FIRMWARE v2 kind=default\n",
        "icefarm-sim-firmware v1 kind=default\n",
        "\x00\x20\x08\x20 a vector table",
    };
    for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++)
        assert_int_equal(sim_fw_identify((const uint8_t *)payloads[i], strlen(payloads[i])), SIM_FW_UNKNOWN);
    assert_int_equal(sim_fw_identify(NULL, 10), SIM_FW_UNKNOWN);
    const char *ok = "ICEFARM-SIM-FIRMWARE v1 kind=variance\nfiller";
    assert_int_equal(sim_fw_identify((const uint8_t *)ok, strlen(ok)), SIM_FW_VARIANCE);
}

static void test_names(void **state)
{
    static const char *const names[] = { "default", "pulsecount", "variance", "unknown" };
    for (size_t i = 0; i < 4; i++) {
        sim_fw_kind k;
        assert_int_equal(sim_fw_kind_from_name(names[i], &k), 0);
        assert_string_equal(sim_fw_kind_name(k), names[i]);
    }
    sim_fw_kind k;
    assert_int_equal(sim_fw_kind_from_name("Default", &k), -1);
    assert_int_equal(sim_fw_kind_from_name(NULL, &k), -1);
    assert_string_equal(sim_fw_kind_name((sim_fw_kind)99), "unknown");
}

/* The documented measurement definitions (sim.h, wrk/README.md), pinned to
 * values computed independently with Python's zlib.crc32 and a plain xorshift32,
 * so end-to-end tests in any language can reproduce them. */
static void test_measure_definition(void **state)
{
    assert_int_equal(sim_crc32(0, (const uint8_t *)"123456789", 9), 0xCBF43926u);
    assert_int_equal(sim_expected_pulses((const uint8_t *)"123456789", 9), 80262);
    /* Chaining, as the sim computes it while bytes stream in. */
    assert_int_equal(sim_crc32(sim_crc32(0, (const uint8_t *)"1234", 4), (const uint8_t *)"56789", 5), 0xCBF43926u);

    uint8_t *bits = malloc(BITSTREAM_SIZE);
    for (size_t i = 0; i < BITSTREAM_SIZE; i++)
        bits[i] = (uint8_t)(i * 7 + 3);
    assert_int_equal(sim_crc32(0, bits, BITSTREAM_SIZE), 0x777165B8u);
    assert_int_equal(sim_expected_pulses(bits, BITSTREAM_SIZE), 20312);
    uint16_t s[SIM_SAMPLES];
    sim_expected_samples(bits, BITSTREAM_SIZE, s);
    static const uint16_t head[] = { 560, 2662, 594, 2833, 2722 };
    assert_memory_equal(s, head, sizeof head);
    assert_int_equal(s[SIM_SAMPLES - 1], 3109);
    assert_true(fw_variance_fitness(s, SIM_SAMPLES) == 1340.122);
    free(bits);

    sim_samples_from_crc(0, s); /* xorshift32 cannot start from 0 */
    assert_int_equal(s[0], 1296);
}

static int check_file(const char *path, const char *kind_name)
{
    sim_fw_kind want;
    if (sim_fw_kind_from_name(kind_name, &want) != 0) {
        fprintf(stderr, "bad kind %s\n", kind_name);
        return 1;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return 1;
    }
    uint8_t *buf = malloc(1 << 20);
    size_t len = fread(buf, 1, 1 << 20, f);
    fclose(f);
    uf2_image out;
    char why[UF2_REASON_MAX];
    int rc = 1;
    if (uf2_parse(buf, len, UF2_TARGET_RP2350, &out, why) != 0) {
        fprintf(stderr, "%s: %s\n", path, why);
    } else {
        sim_fw_kind got = sim_fw_identify(out.data, out.len);
        if (got == want)
            rc = 0;
        else
            fprintf(stderr, "%s: is %s, expected %s\n", path, sim_fw_kind_name(got), kind_name);
        uf2_image_free(&out);
    }
    free(buf);
    if (rc == 0)
        printf("%s: valid %s image\n", path, kind_name);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--check") == 0)
        return check_file(argv[2], argv[3]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_and_identify),
        cmocka_unit_test(test_identify_rejects),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_measure_definition),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
