/* Allocation policy: spreading, eligibility filters, explicit serials with reasons. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "alloc.h"

static ctl_alloc_board ok(const char *serial, const char *worker)
{
    return (ctl_alloc_board){ serial, worker, true, true, true, false };
}

/* Serials picked, joined with spaces, for readable assertions. */
static const char *picked(const ctl_alloc_board *b, const size_t *out, size_t n)
{
    static char s[512];
    s[0] = 0;
    for (size_t i = 0; i < n; i++) {
        strcat(s, i ? " " : "");
        strcat(s, b[out[i]].serial);
    }
    return s;
}

static void spreads_round_robin(void **state)
{
    (void)state;
    /* Deliberately unsorted input: the result must not depend on input order. */
    ctl_alloc_board b[] = { ok("c2", "wc"), ok("a2", "wa"), ok("b1", "wb"), ok("a1", "wa"),
                            ok("c1", "wc"), ok("b2", "wb"), ok("a3", "wa") };
    size_t out[7], elig;
    char err[128];
    assert_int_equal(ctl_alloc_pick(b, 7, NULL, 0, 6, out, &elig, err, sizeof err), CTL_ALLOC_DONE);
    assert_int_equal(elig, 7);
    assert_string_equal(picked(b, out, 6), "a1 b1 c1 a2 b2 c2");
    assert_int_equal(ctl_alloc_pick(b, 7, NULL, 0, 7, out, NULL, err, sizeof err), CTL_ALLOC_DONE);
    assert_string_equal(picked(b, out, 7), "a1 b1 c1 a2 b2 c2 a3");
}

static void least_loaded_first(void **state)
{
    (void)state;
    ctl_alloc_board b[] = { ok("a1", "wa"), ok("a2", "wa"), ok("b1", "wb"),
                            ok("b2", "wb"), ok("c1", "wc"), ok("c2", "wc") };
    ctl_alloc_load load[] = { { "wa", 2 }, { "wc", 1 }, { "gone", 9 } };
    size_t out[6];
    char err[128];
    /* wb (0) twice (tie with wc at 1 goes to the smaller id), then wc. */
    assert_int_equal(ctl_alloc_pick(b, 6, load, 3, 3, out, NULL, err, sizeof err), CTL_ALLOC_DONE);
    assert_string_equal(picked(b, out, 3), "b1 b2 c1");
    /* A worker listed twice counts the sum. */
    ctl_alloc_load twice[] = { { "wb", 1 }, { "wb", 1 } };
    assert_int_equal(ctl_alloc_pick(b, 6, twice, 2, 2, out, NULL, err, sizeof err), CTL_ALLOC_DONE);
    assert_string_equal(picked(b, out, 2), "a1 c1");
    /* A worker whose boards run out stops being picked. */
    ctl_alloc_board c[] = { ok("a1", "wa"), ok("b1", "wb"), ok("b2", "wb"), ok("b3", "wb"), ok("b4", "wb") };
    assert_int_equal(ctl_alloc_pick(c, 5, NULL, 0, 4, out, NULL, err, sizeof err), CTL_ALLOC_DONE);
    assert_string_equal(picked(c, out, 4), "a1 b1 b2 b3");
}

static void filters_ineligible(void **state)
{
    (void)state;
    ctl_alloc_board b[] = { ok("a1", "wa"), ok("a2", "wa"), ok("b1", "wb"), ok("c1", "wc"), ok("d1", "wd"),
                            ok("e1", "we"), ok("x1", "wx"), ok("x1", "wy"), ok("f1", "wf") };
    b[1].ready = false;        /* a2: not ready */
    b[2].worker_alive = false; /* b1: worker dead */
    b[3].kind_offered = false; /* c1: kind not offered */
    b[4].leased = true;        /* d1: already leased */
    b[8].serial = "";          /* f1: no serial, not a board */
    /* x1 on two workers: ambiguous, excluded. Eligible: a1, e1. */
    size_t out[9], elig;
    char err[128];
    assert_int_equal(ctl_alloc_pick(b, 9, NULL, 0, 2, out, &elig, err, sizeof err), CTL_ALLOC_DONE);
    assert_int_equal(elig, 2);
    assert_string_equal(picked(b, out, 2), "a1 e1");
    /* All or nothing: asking for 3 gets none, with the count. */
    assert_int_equal(ctl_alloc_pick(b, 9, NULL, 0, 3, out, &elig, err, sizeof err), CTL_ALLOC_REFUSED);
    assert_int_equal(elig, 2);
    assert_string_equal(err, "3 boards requested, 2 eligible");
    assert_int_equal(ctl_alloc_pick(NULL, 0, NULL, 0, 1, out, &elig, err, sizeof err), CTL_ALLOC_REFUSED);
    assert_int_equal(elig, 0);
    assert_int_equal(ctl_alloc_pick(b, 9, NULL, 0, 0, out, &elig, err, sizeof err), CTL_ALLOC_ERROR);
    assert_string_equal(err, "amount must be at least 1");
}

static void deterministic(void **state)
{
    (void)state;
    enum {
        N = 60
    };
    ctl_alloc_board b[N];
    char names[N][16], workers[N][8];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "s%02d", i);
        snprintf(workers[i], sizeof workers[i], "w%d", i % 7);
        b[i] = ok(names[i], workers[i]);
        b[i].ready = i % 5 != 0;
    }
    size_t out[N], out2[N];
    char first[512], err[128];
    assert_int_equal(ctl_alloc_pick(b, N, NULL, 0, 20, out, NULL, err, sizeof err), CTL_ALLOC_DONE);
    snprintf(first, sizeof first, "%s", picked(b, out, 20));
    /* Shuffle and pick again: same serials in the same order. */
    srand(7);
    for (int r = 0; r < 5; r++) {
        for (int i = N - 1; i > 0; i--) {
            int j = rand() % (i + 1);
            ctl_alloc_board t = b[i];
            b[i] = b[j];
            b[j] = t;
        }
        assert_int_equal(ctl_alloc_pick(b, N, NULL, 0, 20, out2, NULL, err, sizeof err), CTL_ALLOC_DONE);
        assert_string_equal(picked(b, out2, 20), first);
    }
    /* Each of the 7 workers got 2 or 3 of the 20. */
    int per[7] = { 0 };
    for (int i = 0; i < 20; i++)
        per[b[out2[i]].worker[1] - '0']++;
    for (int w = 0; w < 7; w++)
        assert_true(per[w] == 2 || per[w] == 3);
}

static void explicit_ok(void **state)
{
    (void)state;
    ctl_alloc_board b[] = { ok("a1", "wa"), ok("b1", "wb"), ok("a2", "wa") };
    const char *want[] = { "a2", "b1" };
    size_t out[2], bad = 99;
    ctl_alloc_reason why = CTL_ALLOC_UNKNOWN;
    char err[128];
    assert_int_equal(ctl_alloc_serials(b, 3, want, 2, out, &bad, &why, err, sizeof err), CTL_ALLOC_DONE);
    assert_int_equal(out[0], 2);
    assert_int_equal(out[1], 1);
    assert_int_equal(why, CTL_ALLOC_OK);
}

static void expect_reason(const ctl_alloc_board *b, size_t nb, const char *const *want, size_t n, size_t bad_at,
                          ctl_alloc_reason reason, const char *msg)
{
    size_t out[16], bad = 99;
    ctl_alloc_reason why = CTL_ALLOC_OK;
    char err[128];
    assert_int_equal(ctl_alloc_serials(b, nb, want, n, out, &bad, &why, err, sizeof err), CTL_ALLOC_REFUSED);
    assert_int_equal(bad, bad_at);
    assert_int_equal(why, reason);
    assert_string_equal(err, msg);
}

static void explicit_reasons(void **state)
{
    (void)state;
    ctl_alloc_board b[] = { ok("ok1", "w1"), ok("nr", "w1"),  ok("off", "w2"), ok("kind", "w1"),
                            ok("res", "w1"), ok("dup", "w1"), ok("dup", "w3"), ok("ok2", "w3") };
    b[1].ready = false;
    b[2].worker_alive = false;
    b[3].kind_offered = false;
    b[4].leased = true;
    b[4].ready = false; /* a leased board is also not ready: "already reserved" wins */
    const char *r1[] = { "ok1", "nope" };
    expect_reason(b, 8, r1, 2, 1, CTL_ALLOC_UNKNOWN, "serial nope: unknown serial");
    const char *r2[] = { "nr", "ok1" };
    expect_reason(b, 8, r2, 2, 0, CTL_ALLOC_NOT_READY, "serial nr: not ready");
    const char *r3[] = { "ok1", "ok2", "off" };
    expect_reason(b, 8, r3, 3, 2, CTL_ALLOC_OFFLINE, "serial off: worker offline");
    const char *r4[] = { "kind" };
    expect_reason(b, 8, r4, 1, 0, CTL_ALLOC_KIND, "serial kind: kind not offered");
    const char *r5[] = { "res" };
    expect_reason(b, 8, r5, 1, 0, CTL_ALLOC_RESERVED, "serial res: already reserved");
    const char *r6[] = { "ok2", "ok1", "ok2" };
    expect_reason(b, 8, r6, 3, 2, CTL_ALLOC_DUPLICATE, "serial ok2: duplicate serial in request");
    const char *r7[] = { "dup" };
    expect_reason(b, 8, r7, 1, 0, CTL_ALLOC_AMBIGUOUS, "serial dup: serial on several workers");
    const char *r8[] = { "ok1", NULL };
    expect_reason(b, 8, r8, 2, 1, CTL_ALLOC_UNKNOWN, "serial (null): unknown serial");
    /* The first failure in request order is the one reported. */
    const char *r9[] = { "ok1", "kind", "nope" };
    expect_reason(b, 8, r9, 3, 1, CTL_ALLOC_KIND, "serial kind: kind not offered");
    size_t out[1];
    char err[128];
    assert_int_equal(ctl_alloc_serials(b, 8, r9, 0, out, NULL, NULL, err, sizeof err), CTL_ALLOC_ERROR);
    assert_int_equal(ctl_alloc_serials(NULL, 0, r9, 1, out, NULL, NULL, err, sizeof err), CTL_ALLOC_REFUSED);
    assert_string_equal(err, "serial ok1: unknown serial");
    for (int r = CTL_ALLOC_OK; r <= CTL_ALLOC_NOT_READY; r++)
        assert_string_not_equal(ctl_alloc_reason_str((ctl_alloc_reason)r), "invalid reason");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(spreads_round_robin), cmocka_unit_test(least_loaded_first),
        cmocka_unit_test(filters_ineligible),  cmocka_unit_test(deterministic),
        cmocka_unit_test(explicit_ok),         cmocka_unit_test(explicit_reasons),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
