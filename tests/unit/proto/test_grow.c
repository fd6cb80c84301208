/* ifm_grow (icefarm/grow.h), icefarm-base's array-doubling step: the first
 * allocation, doubling, no realloc while there is room, and refusals (size
 * overflow, realloc failing) that leave the array and its capacity as they
 * were. realloc is wrapped (-Wl,--wrap=realloc) to count calls and to fail on
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
    return fail_reallocs ? NULL : __real_realloc(p, n);
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

/* The capacity doubled, or doubled times the element size, would not fit a
 * size_t: refused before realloc, with the array and its capacity untouched. */
static void overflow_is_refused_and_changes_nothing(void **state)
{
    (void)state;
    char *v = malloc(8);
    assert_non_null(v);
    memcpy(v, "1234567", 8);

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
        cmocka_unit_test_setup(reason_helpers_are_in_base, reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
