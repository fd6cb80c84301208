/* ifm_doc_parse on maps with many distinct keys must not be quadratic: an 8 MB
 * payload holds ~1.6 million distinct 3-byte keys, and checking them pairwise
 * (~10^12 key comparisons) would stall a process's only thread for hours.
 *
 * Measured without clocks: the program is linked with -Wl,--wrap=memcmp, so
 * every memcmp() made by the proto library (the duplicate-key check compares
 * keys of equal length with memcmp) is counted. If the library stops using
 * memcmp for keys, the count is zero and the bound holds trivially. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "icefarm/codec.h"

int __real_memcmp(const void *a, const void *b, size_t n);
int __wrap_memcmp(const void *a, const void *b, size_t n);

static unsigned long long g_memcmps;

int __wrap_memcmp(const void *a, const void *b, size_t n)
{
    g_memcmps++;
    return __real_memcmp(a, b, n);
}

/* {v: 1, <n distinct 3-byte keys>: nil} */
static void big_map(ifm_enc *e, uint32_t n, bool dup_last)
{
    ifm_enc_init(e);
    ifm_enc_root(e, n);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t k = dup_last && i == n - 1 ? 0 : i;
        char key[3] = { (char)('A' + (k >> 12 & 0x3f)), (char)('A' + (k >> 6 & 0x3f)), (char)('A' + (k & 0x3f)) };
        ifm_enc_strn(e, key, 3);
        ifm_enc_nil(e);
    }
}

static void test_many_keys_not_quadratic(void **state)
{
    const uint32_t n = 20000;
    ifm_enc e;
    big_map(&e, n, false);
    ifm_doc doc;
    ifm_err err = { "" };
    g_memcmps = 0;
    int rc = ifm_doc_parse(&doc, ifm_enc_data(&e), ifm_enc_size(&e), &err);
    unsigned long long used = g_memcmps;
    ifm_doc_free(&doc);
    ifm_enc_free(&e);
    if (rc)
        fail_msg("a map of %u distinct keys was rejected: %s", n, err.msg);
    /* n log2 n is ~3e5; pairwise is n^2/2 = 2e8 */
    unsigned long long bound = 50ull * n * 15;
    if (used > bound)
        fail_msg("duplicate-key check made %llu key comparisons for %u keys (bound %llu): "
                 "quadratic; a client can stall the parser for hours with one 8 MB payload",
                 used, n, bound);
}

static void test_duplicate_found_in_big_map(void **state)
{
    /* whatever the algorithm, a duplicate far apart is still found */
    ifm_enc e;
    big_map(&e, 5000, true);
    ifm_doc doc;
    ifm_err err = { "" };
    assert_int_equal(ifm_doc_parse(&doc, ifm_enc_data(&e), ifm_enc_size(&e), &err), -1);
    assert_non_null(strstr(err.msg, "duplicate key \"AAA\""));
    ifm_doc_free(&doc);
    ifm_enc_free(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duplicate_found_in_big_map),
        cmocka_unit_test(test_many_keys_not_quadratic),
    };
    return cmocka_run_group_tests_name("proto_codec_bigmap", tests, NULL, NULL);
}
