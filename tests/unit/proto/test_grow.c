/* ifm_grow and ifm_grow_bytes (icefarm/grow.h), icefarm-base's doubling
 * steps: the first allocation, doubling, no realloc while there is room, the
 * byte buffer's limit, and refusals (a need beyond the limit, size overflow,
 * realloc failing) that leave the buffer and its capacity as they were; and
 * that ifm_grow_bytes sizes buffers as the "while (cap < need) cap *= 2" loops
 * it replaced did. realloc is wrapped (-Wl,--wrap=realloc) to count calls and to fail on
 * demand; the test links icefarm-base alone, which must need nothing else. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "icefarm/err.h"
#include "icefarm/grow.h"

void *__real_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n);

static int reallocs;      /* calls that reached realloc */
static size_t last_bytes; /* the size the last one asked for */
static int fail_reallocs; /* the test's switch: make realloc fail */

void *__wrap_realloc(void *p, size_t n)
{
    reallocs++;
    last_bytes = n;
    if (fail_reallocs) {
        errno = ENOMEM; /* as glibc's would */
        return NULL;
    }
    return __real_realloc(p, n);
}

static int reset(void **state)
{
    (void)state;
    reallocs = 0;
    last_bytes = 0;
    fail_reallocs = 0;
    return 0;
}

/* A new array's first growth, checked: *cap becomes `first` (0 counts as 1). */
static void *new_array(size_t *cap, size_t elem, size_t first)
{
    *cap = 0;
    void *v = ifm_grow(NULL, cap, 0, elem, first);
    assert_non_null(v);
    assert_int_equal(*cap, first ? first : 1);
    return v;
}

static void first_growth_allocates_first(void **state)
{
    (void)state;
    size_t cap;
    int *v = new_array(&cap, sizeof *v, 16);
    assert_int_equal(reallocs, 1);
    assert_int_equal(last_bytes, 16 * sizeof *v);
    v[15] = 7; /* all 16 are usable (ASan would object otherwise) */
    free(v);
}

static void first_of_zero_counts_as_one(void **state)
{
    (void)state;
    size_t cap;
    free(new_array(&cap, 1, 0));
}

static void full_array_doubles_and_keeps_its_elements(void **state)
{
    (void)state;
    size_t cap = 0, n = 0;
    int *v = NULL;
    for (int i = 0; i < 100; i++) {
        int *nv = ifm_grow(v, &cap, n, sizeof *nv, 8);
        assert_non_null(nv);
        v = nv;
        v[n++] = i;
    }
    assert_int_equal(cap, 128); /* 8, 16, 32, 64, 128 */
    assert_int_equal(reallocs, 5);
    assert_int_equal(last_bytes, 128 * sizeof *v);
    for (int i = 0; i < 100; i++)
        assert_int_equal(v[i], i);
    free(v);
}

static void no_realloc_while_there_is_room(void **state)
{
    (void)state;
    size_t cap;
    double *v = new_array(&cap, sizeof *v, 4);
    assert_int_equal(reallocs, 1);
    for (size_t n = 0; n < 4; n++) {
        fail_reallocs = 1; /* a realloc now would fail the call */
        assert_ptr_equal(ifm_grow(v, &cap, n, sizeof *v, 4), v);
        assert_int_equal(cap, 4);
    }
    assert_int_equal(reallocs, 1);
    free(v);
}

/* A buffer the refusals below must leave whole: "1234567". */
static char *keepsake(void)
{
    char *v = malloc(8);
    assert_non_null(v);
    memcpy(v, "1234567", 8);
    return v;
}

/* The capacity doubled, or doubled times the element size, would not fit a
 * size_t: refused before realloc, with the array and its capacity untouched. */
static void overflow_is_refused_and_changes_nothing(void **state)
{
    (void)state;
    char *v = keepsake();

    size_t cap = SIZE_MAX / 2 + 1; /* cap * 2 wraps */
    errno = 0;
    assert_null(ifm_grow(v, &cap, cap, 1, 16));
    assert_int_equal(errno, ENOMEM);
    assert_int_equal(cap, SIZE_MAX / 2 + 1);

    cap = SIZE_MAX / 8; /* cap * 2 fits, cap * 2 * 8 does not */
    errno = 0;
    assert_null(ifm_grow(v, &cap, cap, 8, 16));
    assert_int_equal(errno, ENOMEM);
    assert_int_equal(cap, SIZE_MAX / 8);

    cap = 0; /* a first capacity whose bytes overflow */
    assert_null(ifm_grow(v, &cap, 0, SIZE_MAX / 4, 8));
    assert_int_equal(cap, 0);

    cap = 4; /* an element of 0 bytes is a caller's bug */
    errno = 0;
    assert_null(ifm_grow(v, &cap, 4, 0, 16));
    assert_int_equal(errno, EINVAL);
    assert_int_equal(cap, 4);

    assert_int_equal(reallocs, 0);
    assert_string_equal(v, "1234567"); /* still the caller's, still whole */
    free(v);
}

static void failed_realloc_changes_nothing(void **state)
{
    (void)state;
    size_t cap;
    int *v = new_array(&cap, sizeof *v, 2);
    v[0] = 10;
    v[1] = 11;
    fail_reallocs = 1;
    assert_null(ifm_grow(v, &cap, 2, sizeof *v, 2));
    assert_int_equal(cap, 2);
    assert_int_equal(v[0], 10); /* v is still valid */
    assert_int_equal(v[1], 11);
    fail_reallocs = 0;
    int *nv = ifm_grow(v, &cap, 2, sizeof *nv, 2);
    assert_non_null(nv);
    assert_int_equal(cap, 4);
    assert_int_equal(nv[1], 11);
    free(nv);
}

/* ---- ifm_grow_bytes ---- */

/* An empty buffer's first growth, checked: *cap becomes `expect`. */
static char *new_bytes(size_t *cap, size_t need, size_t first, size_t max, size_t expect)
{
    *cap = 0;
    char *b = ifm_grow_bytes(NULL, cap, need, first, max);
    assert_non_null(b);
    assert_int_equal(*cap, expect);
    b[expect - 1] = 'x'; /* all of it is usable (ASan would object otherwise) */
    return b;
}

static void bytes_first_growth_is_first_or_its_doubling(void **state)
{
    (void)state;
    size_t cap;
    free(new_bytes(&cap, 100, 4096, 0, 4096));
    assert_int_equal(reallocs, 1);
    assert_int_equal(last_bytes, 4096);
    free(new_bytes(&cap, 3000, 1024, 0, 4096)); /* more than first: doubled once, one realloc */
    assert_int_equal(reallocs, 2);
    free(new_bytes(&cap, 5, 0, 0, 8)); /* first 0 counts as 1 */
}

static void bytes_double_to_cover_need_and_keep_contents(void **state)
{
    (void)state;
    size_t cap;
    char *b = new_bytes(&cap, 10, 16, 0, 16);
    memcpy(b, "0123456789", 10);
    char *nb = ifm_grow_bytes(b, &cap, 17, 16, 0); /* one past: doubles once */
    assert_non_null(nb);
    assert_int_equal(cap, 32);
    b = nb;
    nb = ifm_grow_bytes(b, &cap, 1000, 16, 0); /* far past: one realloc, to 32 * 2^5 */
    assert_non_null(nb);
    assert_int_equal(cap, 1024);
    assert_int_equal(reallocs, 3);
    assert_int_equal(last_bytes, 1024);
    assert_memory_equal(nb, "0123456789", 10);
    free(nb);
}

static void bytes_no_realloc_while_there_is_room(void **state)
{
    (void)state;
    size_t cap;
    char *b = new_bytes(&cap, 64, 64, 0, 64);
    fail_reallocs = 1; /* a realloc now would fail the call */
    size_t needs[] = { 0, 1, 63, 64 };
    for (size_t i = 0; i < sizeof needs / sizeof needs[0]; i++) {
        assert_ptr_equal(ifm_grow_bytes(b, &cap, needs[i], 64, 0), b);
        assert_ptr_equal(ifm_grow_bytes(b, &cap, needs[i], 64, 64), b);
        assert_int_equal(cap, 64);
    }
    /* the documented corner: an empty buffer asked for nothing stays NULL */
    size_t none = 0;
    assert_null(ifm_grow_bytes(NULL, &none, 0, 64, 0));
    assert_int_equal(none, 0);
    assert_int_equal(reallocs, 1);
    free(b);
}

static void bytes_beyond_max_is_refused_and_max_clamps(void **state)
{
    (void)state;
    size_t cap;
    char *b = new_bytes(&cap, 3, 4, 100, 4);
    memcpy(b, "ab", 3);

    errno = 0; /* need beyond max: refused before realloc, nothing changed */
    assert_null(ifm_grow_bytes(b, &cap, 101, 4, 100));
    assert_int_equal(errno, EMSGSIZE);
    assert_int_equal(cap, 4);
    assert_int_equal(reallocs, 1);
    assert_string_equal(b, "ab");

    char *nb = ifm_grow_bytes(b, &cap, 70, 4, 100); /* 4 doubled to 128: clamped to 100 */
    assert_non_null(nb);
    assert_int_equal(cap, 100);
    assert_int_equal(last_bytes, 100);
    assert_string_equal(nb, "ab");
    nb[99] = 'x';
    assert_ptr_equal(ifm_grow_bytes(nb, &cap, 100, 4, 100), nb); /* need == max: room already */
    assert_int_equal(reallocs, 2);
    free(nb);

    free(new_bytes(&cap, 10, 65536, 1000, 1000)); /* a first size above max is clamped too */
}

/* Doubling that would wrap a size_t: refused without a max; with one, the
 * buffer stops at max instead (nothing wraps). Neither allocates for real. */
static void bytes_overflow_is_refused(void **state)
{
    (void)state;
    char *b = keepsake();
    size_t cap = SIZE_MAX / 2 + 1; /* cap * 2 wraps */
    errno = 0;
    assert_null(ifm_grow_bytes(b, &cap, SIZE_MAX / 2 + 2, 4096, 0));
    assert_int_equal(errno, ENOMEM);
    assert_int_equal(cap, SIZE_MAX / 2 + 1);

    size_t empty = 0; /* first doubled would wrap on the way to need */
    errno = 0;
    assert_null(ifm_grow_bytes(b, &empty, SIZE_MAX - 1, 3, 0));
    assert_int_equal(errno, ENOMEM);
    assert_int_equal(empty, 0);
    assert_int_equal(reallocs, 0);

    fail_reallocs = 1; /* with a max: clamped to it and asked of realloc (failing here) */
    assert_null(ifm_grow_bytes(b, &cap, SIZE_MAX / 2 + 2, 4096, SIZE_MAX - 1));
    assert_int_equal(reallocs, 1);
    assert_int_equal(last_bytes, SIZE_MAX - 1);
    assert_int_equal(cap, SIZE_MAX / 2 + 1);

    assert_string_equal(b, "1234567"); /* still the caller's, still whole */
    free(b);
}

static void bytes_failed_realloc_leaves_buf_valid(void **state)
{
    (void)state;
    size_t cap = 8;
    char *b = keepsake(); /* 8 bytes, full */
    fail_reallocs = 1;
    errno = 0;
    assert_null(ifm_grow_bytes(b, &cap, 9, 8, 0));
    assert_int_equal(errno, ENOMEM);
    assert_int_equal(cap, 8);
    assert_string_equal(b, "1234567"); /* still valid, still the caller's */
    fail_reallocs = 0;
    char *nb = ifm_grow_bytes(b, &cap, 9, 8, 0);
    assert_non_null(nb);
    assert_int_equal(cap, 16);
    assert_string_equal(nb, "1234567");
    free(nb);
}

/* The loop the 13 byte-buffer sites had, with fetch.c's clamp to max. */
static size_t old_loop(size_t cap, size_t need, size_t first, size_t max)
{
    size_t c = cap ? cap : first;
    while (c < need)
        c *= 2;
    if (max && c > max)
        c = max;
    return c;
}

/* For the sites' first sizes and limits and every capacity the old loop could
 * have left, each need up to well past it gets the size the old loop chose
 * (asked of a failing realloc, so nothing is allocated). */
static void bytes_size_is_the_old_loops(void **state)
{
    (void)state;
    const size_t firsts[] = { 1024, 4096, 65536 };
    const size_t maxes[] = { 0, 100000, 16u << 20 };
    fail_reallocs = 1;
    int asked = 0;
    for (size_t f = 0; f < sizeof firsts / sizeof firsts[0]; f++)
        for (size_t m = 0; m < sizeof maxes / sizeof maxes[0]; m++)
            for (size_t cap = 0; cap <= 8 * firsts[f]; cap = cap ? cap * 2 : firsts[f]) {
                size_t limit = maxes[m] ? maxes[m] : SIZE_MAX;
                if (cap > limit)
                    break;
                for (size_t need = cap + 1; need <= 40 * firsts[f] && need <= limit; need += 97) {
                    size_t c = cap;
                    reallocs = 0;
                    assert_null(ifm_grow_bytes(NULL, &c, need, firsts[f], maxes[m]));
                    assert_int_equal(reallocs, 1);
                    assert_int_equal(last_bytes, old_loop(cap, need, firsts[f], maxes[m]));
                    assert_int_equal(c, cap);
                    asked++;
                }
            }
    assert_true(asked > 1000);
}

/* err.h's reason helpers live in icefarm-base too (the lease store links only
 * that): they write the reason and return the code, and leave a NULL or empty
 * buffer alone. */
static void reason_helpers_are_in_base(void **state)
{
    (void)state;
    char buf[16];
    assert_int_equal(ifm_failbuf(buf, sizeof buf, -7, "field %s: %d", "serial", 80), -7);
    assert_string_equal(buf, "field serial: 8"); /* truncated, NUL-terminated */
    assert_int_equal(ifm_failbuf(NULL, 10, IFM_EINVAL, "x"), IFM_EINVAL);
    buf[0] = 'k';
    assert_int_equal(ifm_failbuf(buf, 0, -1, "x"), -1);
    assert_int_equal(buf[0], 'k');
    ifm_err e = { "" };
    assert_int_equal(ifm_fail(&e, IFM_EMSGSIZE, "%zu bytes", (size_t)300), IFM_EMSGSIZE);
    assert_string_equal(e.msg, "300 bytes");
    assert_int_equal(ifm_fail(NULL, IFM_EIO, "nothing"), IFM_EIO);
    ifm_err_set(&e, "again %s", "here");
    assert_string_equal(e.msg, "again here");
    ifm_err_set(NULL, "nowhere");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(first_growth_allocates_first, reset),
        cmocka_unit_test_setup(first_of_zero_counts_as_one, reset),
        cmocka_unit_test_setup(full_array_doubles_and_keeps_its_elements, reset),
        cmocka_unit_test_setup(no_realloc_while_there_is_room, reset),
        cmocka_unit_test_setup(overflow_is_refused_and_changes_nothing, reset),
        cmocka_unit_test_setup(failed_realloc_changes_nothing, reset),
        cmocka_unit_test_setup(bytes_first_growth_is_first_or_its_doubling, reset),
        cmocka_unit_test_setup(bytes_double_to_cover_need_and_keep_contents, reset),
        cmocka_unit_test_setup(bytes_no_realloc_while_there_is_room, reset),
        cmocka_unit_test_setup(bytes_beyond_max_is_refused_and_max_clamps, reset),
        cmocka_unit_test_setup(bytes_overflow_is_refused, reset),
        cmocka_unit_test_setup(bytes_failed_realloc_leaves_buf_valid, reset),
        cmocka_unit_test_setup(bytes_size_is_the_old_loops, reset),
        cmocka_unit_test_setup(reason_helpers_are_in_base, reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
