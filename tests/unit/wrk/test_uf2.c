/* UF2 builder and strict parser: round trips and every way an image can be bad. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "uf2.h"

static uint32_t rng(uint32_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

static uint8_t *payload_of(size_t len, uint32_t seed)
{
    uint8_t *p = malloc(len ? len : 1);
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)rng(&seed);
    return p;
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void wr32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Field offsets within a block. */
enum {
    F_FLAGS = 8,
    F_ADDR = 12,
    F_SIZE = 16,
    F_NO = 20,
    F_COUNT = 24,
    F_FAMILY = 28
};

static uint8_t *build(size_t plen, bool e10, uint32_t family, size_t *len)
{
    uint8_t *p = payload_of(plen, 7);
    uf2_build_opts o = { .base = 0x10000000, .family = family, .e10_block = e10 };
    uint8_t *img = uf2_build(p, plen, &o, len);
    free(p);
    assert_non_null(img);
    return img;
}

/* Parse and expect failure whose reason contains `needle`. */
static void expect_reject(const uint8_t *img, size_t len, uf2_target target, const char *needle)
{
    uf2_image out;
    char why[UF2_REASON_MAX];
    assert_int_equal(uf2_parse(img, len, target, &out, why), -1);
    assert_null(out.data);
    if (!strstr(why, needle))
        fail_msg("reason \"%s\" lacks \"%s\"", why, needle);
}

static void test_round_trip(void **state)
{
    static const size_t sizes[] = { 1, 255, 256, 257, 476 * 3, 4096, 104090, 300001 };
    for (size_t e10 = 0; e10 < 2; e10++) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            size_t plen = sizes[i], len;
            uint8_t *p = payload_of(plen, (uint32_t)(i + 1));
            uf2_build_opts o = { .base = 0x10000000, .family = UF2_FAMILY_RP2350_ARM_S, .e10_block = e10 };
            uint8_t *img = uf2_build(p, plen, &o, &len);
            assert_non_null(img);
            size_t pages = (plen + 255) / 256;
            assert_int_equal(len, (pages + e10) * UF2_BLOCK_SIZE);
            if (e10) /* picotool's block: ABSOLUTE family at 0x10ffff00 */
                assert_int_equal(rd32(img + F_FAMILY), UF2_FAMILY_ABSOLUTE);

            uf2_image out;
            char why[UF2_REASON_MAX];
            assert_int_equal(uf2_parse(img, len, UF2_TARGET_RP2350, &out, why), 0);
            assert_int_equal(out.base, 0x10000000);
            assert_int_equal(out.family, UF2_FAMILY_RP2350_ARM_S);
            assert_int_equal(out.blocks, pages);
            assert_int_equal(out.len, pages * 256);
            assert_memory_equal(out.data, p, plen);
            for (size_t k = plen; k < out.len; k++) /* zero padding to the page */
                assert_int_equal(out.data[k], 0);
            uf2_image_free(&out);
            assert_null(out.data);
            free(img);
            free(p);
        }
    }
}

static void test_build_rejects(void **state)
{
    uint8_t p[16] = { 0 };
    size_t len;
    uf2_build_opts o = { .base = 0xFFFFFF00u, .family = UF2_FAMILY_RP2350_ARM_S };
    assert_null(uf2_build(p, 0, &o, &len));
    assert_null(uf2_build(NULL, 16, &o, &len));
    o.base = 0xFFFFFF80u; /* one page would wrap the address space */
    assert_null(uf2_build(p, 16, &o, &len));
    o.base = 0xFFFFFF00u; /* the last page is fine */
    uint8_t *img = uf2_build(p, 16, &o, &len);
    assert_non_null(img);
    free(img);
}

static void test_accepted_families(void **state)
{
    static const uint32_t ok[] = { UF2_FAMILY_RP2350_ARM_S, UF2_FAMILY_RP2350_RISCV, UF2_FAMILY_RP2350_ARM_NS,
                                   UF2_FAMILY_ABSOLUTE };
    for (size_t i = 0; i < 4; i++) {
        size_t len;
        uint8_t *img = build(1000, false, ok[i], &len);
        uf2_image out;
        char why[UF2_REASON_MAX];
        assert_int_equal(uf2_parse(img, len, UF2_TARGET_RP2350, &out, why), 0);
        assert_int_equal(out.family, ok[i]);
        assert_non_null(uf2_family_name(ok[i]));
        uf2_image_free(&out);
        free(img);
    }
}

static void test_wrong_family(void **state)
{
    size_t len;
    uint8_t *img = build(1000, false, UF2_FAMILY_RP2040, &len);
    expect_reject(img, len, UF2_TARGET_RP2350, "RP2040");
    /* Any target accepts it: the family check is the target's business. */
    uf2_image out;
    char why[UF2_REASON_MAX];
    assert_int_equal(uf2_parse(img, len, UF2_TARGET_ANY, &out, why), 0);
    uf2_image_free(&out);
    free(img);

    img = build(1000, false, UF2_FAMILY_DATA, &len);
    expect_reject(img, len, UF2_TARGET_RP2350, "DATA");
    free(img);
    img = build(1000, false, 0x12345678u, &len);
    expect_reject(img, len, UF2_TARGET_RP2350, "unknown family id 0x12345678");
    assert_null(uf2_family_name(0x12345678u));
    free(img);

    /* Mixed families within one image. */
    img = build(1000, false, UF2_FAMILY_RP2350_ARM_S, &len);
    wr32(img + 2 * UF2_BLOCK_SIZE + F_FAMILY, UF2_FAMILY_RP2350_RISCV);
    expect_reject(img, len, UF2_TARGET_RP2350, "wrong family");
    free(img);

    /* No family flag at all: the RP2350 bootrom ignores such blocks. */
    img = build(1000, false, UF2_FAMILY_RP2350_ARM_S, &len);
    for (size_t b = 0; b < len / UF2_BLOCK_SIZE; b++)
        wr32(img + b * UF2_BLOCK_SIZE + F_FLAGS, 0);
    expect_reject(img, len, UF2_TARGET_RP2350, "no family id");
    assert_int_equal(uf2_parse(img, len, UF2_TARGET_ANY, &out, why), 0);
    uf2_image_free(&out);
    free(img);
}

static void test_bad_magic(void **state)
{
    static const size_t offs[] = { 0, 4, 508 };
    for (size_t i = 0; i < 3; i++) {
        size_t len;
        uint8_t *img = build(1000, true, UF2_FAMILY_RP2350_ARM_S, &len);
        img[UF2_BLOCK_SIZE * 2 + offs[i]] ^= 0x40;
        expect_reject(img, len, UF2_TARGET_RP2350, "block 2: bad magic");
        free(img);
    }
}

static void test_truncated(void **state)
{
    size_t len;
    uint8_t *img = build(2000, true, UF2_FAMILY_RP2350_ARM_S, &len);
    expect_reject(img, 0, UF2_TARGET_RP2350, "empty");
    expect_reject(NULL, 512, UF2_TARGET_RP2350, "empty");
    expect_reject(img, len - 100, UF2_TARGET_RP2350, "truncated");
    expect_reject(img, len - UF2_BLOCK_SIZE, UF2_TARGET_RP2350, "truncated: 7 of 8 blocks");
    /* Only picotool's ignore block left. */
    expect_reject(img, UF2_BLOCK_SIZE, UF2_TARGET_RP2350, "no program blocks");
    free(img);
}

static void test_block_count_and_order(void **state)
{
    size_t len;
    uint8_t *img = build(1024, false, UF2_FAMILY_RP2350_ARM_S, &len); /* 4 blocks */
    uint8_t tmp[UF2_BLOCK_SIZE];

    wr32(img + 2 * UF2_BLOCK_SIZE + F_COUNT, 5);
    expect_reject(img, len, UF2_TARGET_RP2350, "inconsistent block count");
    wr32(img + 2 * UF2_BLOCK_SIZE + F_COUNT, 4);

    wr32(img + F_COUNT, 0);
    expect_reject(img, len, UF2_TARGET_RP2350, "inconsistent block count 0");
    wr32(img + F_COUNT, 4);

    /* Swapped blocks. */
    memcpy(tmp, img + UF2_BLOCK_SIZE, UF2_BLOCK_SIZE);
    memcpy(img + UF2_BLOCK_SIZE, img + 2 * UF2_BLOCK_SIZE, UF2_BLOCK_SIZE);
    memcpy(img + 2 * UF2_BLOCK_SIZE, tmp, UF2_BLOCK_SIZE);
    expect_reject(img, len, UF2_TARGET_RP2350, "block 1: numbered 2, expected 1");
    memcpy(img + 2 * UF2_BLOCK_SIZE, img + UF2_BLOCK_SIZE, UF2_BLOCK_SIZE);
    memcpy(img + UF2_BLOCK_SIZE, tmp, UF2_BLOCK_SIZE);

    /* Duplicated block. */
    uint8_t *dup = malloc(len);
    memcpy(dup, img, len);
    memcpy(dup + 2 * UF2_BLOCK_SIZE, dup + UF2_BLOCK_SIZE, UF2_BLOCK_SIZE);
    expect_reject(dup, len, UF2_TARGET_RP2350, "out of order or missing");
    free(dup);

    /* One block too many. */
    uint8_t *more = malloc(len + UF2_BLOCK_SIZE);
    memcpy(more, img, len);
    memcpy(more + len, img + len - UF2_BLOCK_SIZE, UF2_BLOCK_SIZE);
    wr32(more + len + F_NO, 4);
    wr32(more + len + F_ADDR, 0x10000000 + 4 * 256);
    expect_reject(more, len + UF2_BLOCK_SIZE, UF2_TARGET_RP2350, "inconsistent block count");
    free(more);

    /* A gap in the addresses. */
    wr32(img + 3 * UF2_BLOCK_SIZE + F_ADDR, 0x10000000 + 4 * 256);
    expect_reject(img, len, UF2_TARGET_RP2350, "non-contiguous");
    free(img);
}

static void test_payload_size(void **state)
{
    size_t len;
    uint8_t *img = build(1024, false, UF2_FAMILY_RP2350_ARM_S, &len);
    wr32(img + UF2_BLOCK_SIZE + F_SIZE, 477);
    expect_reject(img, len, UF2_TARGET_RP2350, "oversize payload 477");
    wr32(img + UF2_BLOCK_SIZE + F_SIZE, 0);
    expect_reject(img, len, UF2_TARGET_RP2350, "empty payload");
    free(img);

    /* 476 is legal, and consecutive 476-byte blocks must chain at +476. */
    uint8_t *p = payload_of(476 * 2, 3);
    img = build(512, false, UF2_FAMILY_RP2350_ARM_S, &len);
    wr32(img + F_SIZE, 476);
    memcpy(img + 32, p, 476);
    wr32(img + UF2_BLOCK_SIZE + F_SIZE, 476);
    wr32(img + UF2_BLOCK_SIZE + F_ADDR, 0x10000000 + 476);
    memcpy(img + UF2_BLOCK_SIZE + 32, p + 476, 476);
    uf2_image out;
    char why[UF2_REASON_MAX];
    assert_int_equal(uf2_parse(img, len, UF2_TARGET_RP2350, &out, why), 0);
    assert_int_equal(out.len, 952);
    assert_memory_equal(out.data, p, 952);
    uf2_image_free(&out);
    free(p);

    /* Running off the end of the address space. */
    wr32(img + F_ADDR, 0xFFFFFF00u);
    wr32(img + UF2_BLOCK_SIZE + F_ADDR, 0xFFFFFF00u + 476);
    expect_reject(img, len, UF2_TARGET_ANY, "32-bit address space");
    free(img);
}

static void test_skipped_blocks_and_container(void **state)
{
    size_t len;
    uint8_t *img = build(1024, true, UF2_FAMILY_RP2350_ARM_S, &len); /* E10 + 4 */
    /* A not-main-flash block in the middle is skipped. */
    uint8_t *ext = malloc(len + UF2_BLOCK_SIZE);
    memcpy(ext, img, 3 * UF2_BLOCK_SIZE);
    memcpy(ext + 3 * UF2_BLOCK_SIZE, img + UF2_BLOCK_SIZE, UF2_BLOCK_SIZE);
    wr32(ext + 3 * UF2_BLOCK_SIZE + F_FLAGS, UF2_FLAG_NOT_MAIN_FLASH | UF2_FLAG_FAMILY_ID_PRESENT);
    wr32(ext + 3 * UF2_BLOCK_SIZE + F_ADDR, 0x20000000);
    memcpy(ext + 4 * UF2_BLOCK_SIZE, img + 3 * UF2_BLOCK_SIZE, 2 * UF2_BLOCK_SIZE);
    uf2_image a, b;
    char why[UF2_REASON_MAX];
    assert_int_equal(uf2_parse(img, len, UF2_TARGET_RP2350, &a, why), 0);
    assert_int_equal(uf2_parse(ext, len + UF2_BLOCK_SIZE, UF2_TARGET_RP2350, &b, why), 0);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.data, b.data, a.len);
    uf2_image_free(&a);
    uf2_image_free(&b);
    free(ext);

    /* Without its "ignore" tag the E10 block is an ABSOLUTE program block, and the
     * image then mixes families. */
    wr32(img + 32 + 256, 0);
    expect_reject(img, len, UF2_TARGET_RP2350, "wrong family");
    wr32(img + 32 + 256, UF2_EXT_RP2_IGNORE_BLOCK);

    wr32(img + UF2_BLOCK_SIZE + F_FLAGS, UF2_FLAG_FILE_CONTAINER);
    expect_reject(img, len, UF2_TARGET_ANY, "file-container");
    free(img);
}

/* Random damage must be rejected or accepted, never crash (ASan watches). */
static void test_mutations_never_crash(void **state)
{
    size_t len;
    uint8_t *img = build(3000, true, UF2_FAMILY_RP2350_ARM_S, &len);
    uint8_t *m = malloc(len);
    uint32_t x = 12345;
    for (int round = 0; round < 3000; round++) {
        memcpy(m, img, len);
        int flips = 1 + (int)(rng(&x) % 4);
        for (int f = 0; f < flips; f++) {
            size_t blk = rng(&x) % (len / UF2_BLOCK_SIZE);
            size_t off = rng(&x) % 32; /* headers are where the logic is */
            m[blk * UF2_BLOCK_SIZE + off] = (uint8_t)rng(&x);
        }
        size_t l = (rng(&x) % 8 == 0) ? rng(&x) % (len + 1) : len;
        uf2_image out;
        char why[UF2_REASON_MAX];
        if (uf2_parse(m, l, UF2_TARGET_RP2350, &out, why) == 0)
            uf2_image_free(&out);
        else
            assert_true(why[0] != '\0');
    }
    free(m);
    free(img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_build_rejects),
        cmocka_unit_test(test_accepted_families),
        cmocka_unit_test(test_wrong_family),
        cmocka_unit_test(test_bad_magic),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_block_count_and_order),
        cmocka_unit_test(test_payload_size),
        cmocka_unit_test(test_skipped_blocks_and_container),
        cmocka_unit_test(test_mutations_never_crash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
