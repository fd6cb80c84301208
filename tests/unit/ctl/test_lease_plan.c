/* When control warns and expires a lease, as a function of a clock the test owns. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ctl.h"

#define MIN (60u * 1000u)

/* A deadline of unknown origin (as after a restart). */
static void plan(uint64_t now, uint64_t until, bool warned, uint64_t lead, uint64_t *w, uint64_t *e)
{
    ctl_lease_plan(now, 0, until, warned, lead, w, e);
}

/* A deadline set now (a grant or an extend). */
static void plan_set(uint64_t now, uint64_t until, uint64_t lead, uint64_t *w, uint64_t *e)
{
    ctl_lease_plan(now, now, until, false, lead, w, e);
}

static void test_hour_lease_warns_twenty_minutes_ahead(void **s)
{
    uint64_t w, e, now = 1000000;
    plan(now, now + 60 * MIN, false, 20 * MIN, &w, &e);
    assert_int_equal(e, 60 * MIN);
    assert_int_equal(w, 40 * MIN);
}

static void test_already_warned_lease_only_expires(void **s)
{
    uint64_t w, e;
    plan(0, 60 * MIN, true, 20 * MIN, &w, &e);
    assert_int_equal(w, UINT64_MAX);
    assert_int_equal(e, 60 * MIN);
}

static void test_short_lease_is_warned_halfway(void **s)
{
    /* Granted for 3 s with a 20 min lead: warned after 1.5 s, not at once. */
    uint64_t w, e;
    plan_set(5000, 5000 + 3000, 20 * MIN, &w, &e);
    assert_int_equal(w, 1500);
    assert_int_equal(e, 3000);
    /* Just under twice the lead: halfway too; at twice the lead: the lead. */
    plan_set(1000, 1000 + 40 * MIN - 2, 20 * MIN, &w, &e);
    assert_int_equal(w, 20 * MIN - 1);
    plan_set(1000, 1000 + 40 * MIN, 20 * MIN, &w, &e);
    assert_int_equal(w, 20 * MIN);
}

static void test_short_lease_after_restart_is_warned_at_once(void **s)
{
    /* Loaded after a restart, its start unknown, inside the lead: at once. */
    uint64_t w, e;
    plan(5000, 5000 + 3000, false, 20 * MIN, &w, &e);
    assert_int_equal(w, 0);
    assert_int_equal(e, 3000);
}

static void test_extending_on_every_warning_does_not_loop(void **s)
{
    /* A holder that extends by 4 s on every warning (lead 20 min), for one
     * simulated minute: warned every 2 s, each warning before its deadline. */
    uint64_t now = 1000000, end = now + MIN, until = now + 4000, w, e;
    unsigned warnings = 0;
    plan_set(now, until, 20 * MIN, &w, &e);
    while (now + w < end) {
        now += w; /* the warning fires; the holder extends at once */
        assert_true(now < until);
        warnings++;
        until = now + 4000;
        plan_set(now, until, 20 * MIN, &w, &e);
        assert_int_equal(w, 2000);
        assert_int_equal(e, 4000);
    }
    assert_in_range(warnings, 28, 30);
}

static void test_past_deadline_expires_now_without_warning(void **s)
{
    /* Control was down across the deadline: expire immediately; a warning
     * after the fact would only confuse the holder. */
    uint64_t w, e;
    plan(10 * MIN, 5 * MIN, false, 20 * MIN, &w, &e);
    assert_int_equal(e, 0);
    assert_int_equal(w, UINT64_MAX);
}

static void test_inside_warning_window_warns_now(void **s)
{
    uint64_t w, e;
    plan(50 * MIN, 60 * MIN, false, 20 * MIN, &w, &e);
    assert_int_equal(w, 0);
    assert_int_equal(e, 10 * MIN);
}

static void test_warnings_disabled(void **s)
{
    uint64_t w, e;
    plan(0, 60 * MIN, false, 0, &w, &e);
    assert_int_equal(w, UINT64_MAX);
    assert_int_equal(e, 60 * MIN);
}

static void test_extension_moves_both_timers(void **s)
{
    /* Extend at t=45 min: the deadline is now + 60 min and warned is cleared. */
    uint64_t w, e;
    plan(45 * MIN, 45 * MIN + 60 * MIN, false, 20 * MIN, &w, &e);
    assert_int_equal(w, 40 * MIN);
    assert_int_equal(e, 60 * MIN);
}

static void test_deadline_at_the_millisecond(void **s)
{
    uint64_t w, e;
    plan(1234, 1234, false, 20 * MIN, &w, &e);
    assert_int_equal(e, 0);
    plan(1233, 1234, false, 20 * MIN, &w, &e);
    assert_int_equal(e, 1);
    assert_int_equal(w, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hour_lease_warns_twenty_minutes_ahead),
        cmocka_unit_test(test_already_warned_lease_only_expires),
        cmocka_unit_test(test_short_lease_is_warned_halfway),
        cmocka_unit_test(test_short_lease_after_restart_is_warned_at_once),
        cmocka_unit_test(test_extending_on_every_warning_does_not_loop),
        cmocka_unit_test(test_past_deadline_expires_now_without_warning),
        cmocka_unit_test(test_inside_warning_window_warns_now),
        cmocka_unit_test(test_warnings_disabled),
        cmocka_unit_test(test_extension_moves_both_timers),
        cmocka_unit_test(test_deadline_at_the_millisecond),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
