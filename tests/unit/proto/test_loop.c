/* libicefarm-proto event loop: timers, cancellation, fd watches, signals, stop.
 * No assertion depends on how fast the machine is: waits are "until X happens,
 * within a generous deadline", and ordering comes from the timer heap. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "icefarm/loop.h"

#define DEADLINE_MS 30000

/* Runs the loop until *flag becomes true; fails the test after DEADLINE_MS. */
static void run_until(ifm_loop *l, const bool *flag)
{
    uint64_t deadline = ifm_now_ms() + DEADLINE_MS;
    while (!*flag) {
        if (ifm_now_ms() > deadline)
            fail_msg("condition not reached within %d ms", DEADLINE_MS);
        assert_int_equal(ifm_loop_once(l, 100), 0);
    }
}

/* ---- timers ---- */

typedef struct {
    ifm_loop *loop;
    int order[32];
    int n;
    uint64_t ids[32];
    bool done;
} rec;

typedef struct {
    rec *r;
    int tag;
} tagged;

static void record(ifm_loop *l, void *arg)
{
    tagged *t = arg;
    assert_true(t->r->n < 32);
    t->r->order[t->r->n++] = t->tag;
}

static void set_flag(ifm_loop *l, void *arg)
{
    *(bool *)arg = true;
}

static void test_timers_fire_in_order(void **state)
{
    ifm_loop *l = ifm_loop_new();
    assert_non_null(l);
    rec r = { .loop = l };
    /* added out of order; equal delays fire in the order they were added. (The
     * delays differ by far more than the microseconds between two adds.) */
    const struct {
        uint64_t ms;
        int tag;
    } plan[] = {
        { 1200, 6 }, { 400, 3 }, { 0, 0 }, { 800, 5 }, { 400, 4 }, { 0, 1 }, { 0, 2 },
    };
    tagged tags[7];
    for (int i = 0; i < 7; i++) {
        tags[i] = (tagged){ &r, plan[i].tag };
        uint64_t id = ifm_timer_add(l, plan[i].ms, record, &tags[i]);
        assert_true(id != 0);
        for (int k = 0; k < i; k++)
            assert_true(r.ids[k] != id); /* ids are unique */
        r.ids[i] = id;
    }
    assert_int_equal(ifm_timer_count(l), 7);
    bool done = false;
    ifm_timer_add(l, 1201, set_flag, &done);
    run_until(l, &done);
    assert_int_equal(r.n, 7);
    for (int i = 0; i < 7; i++)
        assert_int_equal(r.order[i], i);
    assert_int_equal(ifm_timer_count(l), 0);
    ifm_loop_free(l);
}

static void test_timer_not_early(void **state)
{
    /* a timer never fires before its delay has passed */
    ifm_loop *l = ifm_loop_new();
    bool done = false;
    uint64_t start = ifm_now_ms();
    ifm_timer_add(l, 50, set_flag, &done);
    run_until(l, &done);
    assert_true(ifm_now_ms() - start >= 50);
    ifm_loop_free(l);
}

static void test_timer_cancel(void **state)
{
    ifm_loop *l = ifm_loop_new();
    rec r = { .loop = l };
    tagged a = { &r, 1 }, b = { &r, 2 }, c = { &r, 3 };
    uint64_t ia = ifm_timer_add(l, 10, record, &a);
    uint64_t ib = ifm_timer_add(l, 20, record, &b);
    uint64_t ic = ifm_timer_add(l, 0, record, &c);
    assert_int_equal(ifm_timer_count(l), 3);
    ifm_timer_cancel(l, ia);
    assert_int_equal(ifm_timer_count(l), 2);
    ifm_timer_cancel(l, ia); /* twice: no-op */
    ifm_timer_cancel(l, 0);
    ifm_timer_cancel(l, 987654321);
    assert_int_equal(ifm_timer_count(l), 2);
    bool done = false;
    ifm_timer_add(l, 40, set_flag, &done);
    run_until(l, &done);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.order[0], 3);
    assert_int_equal(r.order[1], 2);
    /* cancelling ids that already fired changes nothing for the timers still pending */
    tagged d = { &r, 4 };
    uint64_t id = ifm_timer_add(l, 0, record, &d);
    ifm_timer_cancel(l, ib);
    ifm_timer_cancel(l, ic);
    assert_int_equal(ifm_timer_count(l), 1);
    done = false;
    ifm_timer_add(l, 5, set_flag, &done);
    run_until(l, &done);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.order[2], 4);
    ifm_timer_cancel(l, id);
    assert_int_equal(ifm_timer_count(l), 0);
    ifm_loop_free(l);
}

static void count_run(ifm_loop *l, void *arg);

/* cancel from inside another timer's callback */
typedef struct {
    ifm_loop *loop;
    uint64_t victims[8];
    int nvictims;
    int fired_victims;
    int canceller_runs;
} cancel_ctx;

static void victim(ifm_loop *l, void *arg)
{
    ((cancel_ctx *)arg)->fired_victims++;
}

static void canceller(ifm_loop *l, void *arg)
{
    cancel_ctx *c = arg;
    c->canceller_runs++;
    for (int i = 0; i < c->nvictims; i++)
        ifm_timer_cancel(l, c->victims[i]);
}

static void test_timer_cancel_from_callback(void **state)
{
    ifm_loop *l = ifm_loop_new();
    cancel_ctx c = { .loop = l };
    /* the canceller is due first; its victims are due at the same time, later
     * and much later: when it runs they may already all be due in the same turn */
    ifm_timer_add(l, 10, canceller, &c);
    c.victims[c.nvictims++] = ifm_timer_add(l, 10, victim, &c);
    c.victims[c.nvictims++] = ifm_timer_add(l, 11, victim, &c);
    c.victims[c.nvictims++] = ifm_timer_add(l, 50, victim, &c);
    c.victims[c.nvictims++] = ifm_timer_add(l, 100000, victim, &c);
    /* bystanders in the heap survive */
    int bystanders = 0;
    for (int i = 0; i < 5; i++)
        ifm_timer_add(l, (uint64_t)(5 + i * 20), count_run, &bystanders);
    assert_int_equal(ifm_timer_count(l), 10);
    bool done = false;
    ifm_timer_add(l, 200, set_flag, &done);
    run_until(l, &done);
    assert_int_equal(c.canceller_runs, 1);
    assert_int_equal(c.fired_victims, 0);
    assert_int_equal(bystanders, 5);
    assert_int_equal(ifm_timer_count(l), 0);
    ifm_loop_free(l);
}

/* a timer that cancels itself (already fired: no-op) and one that cancels a
 * timer that fired earlier in the same turn */
typedef struct {
    uint64_t self, earlier;
    int runs;
} self_ctx;

static void self_cancel(ifm_loop *l, void *arg)
{
    self_ctx *s = arg;
    s->runs++;
    ifm_timer_cancel(l, s->self);
    ifm_timer_cancel(l, s->earlier);
}

static void count_run(ifm_loop *l, void *arg)
{
    (*(int *)arg)++;
}

static void test_timer_cancel_fired(void **state)
{
    ifm_loop *l = ifm_loop_new();
    int early_runs = 0, late_runs = 0;
    self_ctx s = { 0 };
    s.earlier = ifm_timer_add(l, 0, count_run, &early_runs);
    s.self = ifm_timer_add(l, 0, self_cancel, &s);
    ifm_timer_add(l, 0, count_run, &late_runs);
    bool done = false;
    ifm_timer_add(l, 10, set_flag, &done);
    run_until(l, &done);
    assert_int_equal(early_runs, 1);
    assert_int_equal(s.runs, 1);
    assert_int_equal(late_runs, 1);
    assert_int_equal(ifm_timer_count(l), 0);
    ifm_loop_free(l);
}

/* A callback that re-arms a 0 ms timer gets it on the next turn, so one
 * ifm_loop_once() never spins forever on a timer storm. */
typedef struct {
    int runs;
    int limit;
} storm_ctx;

static void storm(ifm_loop *l, void *arg)
{
    storm_ctx *s = arg;
    if (++s->runs < s->limit)
        ifm_timer_add(l, 0, storm, s);
}

static void test_timer_rearm_next_turn(void **state)
{
    ifm_loop *l = ifm_loop_new();
    storm_ctx s = { 0, 5 };
    ifm_timer_add(l, 0, storm, &s);
    for (int turn = 1; turn <= 5; turn++) {
        assert_int_equal(ifm_loop_once(l, 1000), 0);
        assert_int_equal(s.runs, turn);
    }
    assert_int_equal(ifm_timer_count(l), 0);
    ifm_loop_free(l);
}

static void test_timer_many(void **state)
{
    /* the heap under churn: 2000 timers, half cancelled, the rest fire in order */
    ifm_loop *l = ifm_loop_new();
    enum {
        N = 2000
    };
    static uint64_t ids[N];
    static int fired[N];
    memset(fired, 0, sizeof fired);
    for (int i = 0; i < N; i++) {
        ids[i] = ifm_timer_add(l, (uint64_t)((i * 7919) % 50), count_run, &fired[i]);
    }
    for (int i = 0; i < N; i += 2)
        ifm_timer_cancel(l, ids[i]);
    assert_int_equal(ifm_timer_count(l), N / 2);
    bool done = false;
    ifm_timer_add(l, 60, set_flag, &done);
    run_until(l, &done);
    for (int i = 0; i < N; i++)
        assert_int_equal(fired[i], i % 2);
    assert_int_equal(ifm_timer_count(l), 0);
    ifm_loop_free(l);
}

static void test_free_with_pending_timers(void **state)
{
    /* the loop owns pending timers: freeing it frees them (ASan checks) */
    ifm_loop *l = ifm_loop_new();
    for (int i = 0; i < 100; i++)
        ifm_timer_add(l, 100000, set_flag, NULL);
    assert_int_equal(ifm_timer_count(l), 100);
    ifm_loop_free(l);
    ifm_loop_free(NULL);
}

/* ---- fd watches ---- */

typedef struct {
    int calls;
    int last_events;
    int last_fd;
    char buf[16];
    ssize_t got;
    bool drain;
} fd_ctx;

static void on_fd(ifm_loop *l, int fd, int events, void *arg)
{
    fd_ctx *c = arg;
    c->calls++;
    c->last_events = events;
    c->last_fd = fd;
    if (c->drain && (events & IFM_READ))
        c->got = read(fd, c->buf, sizeof c->buf);
}

static bool called(const fd_ctx *c, int n)
{
    return c->calls >= n;
}

static void run_until_calls(ifm_loop *l, const fd_ctx *c, int n)
{
    uint64_t deadline = ifm_now_ms() + DEADLINE_MS;
    while (!called(c, n)) {
        if (ifm_now_ms() > deadline)
            fail_msg("fd callback not called %d times within %d ms", n, DEADLINE_MS);
        assert_int_equal(ifm_loop_once(l, 100), 0);
    }
}

static void test_fd_watch_pipe(void **state)
{
    ifm_loop *l = ifm_loop_new();
    int p[2];
    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    fd_ctx c = { .drain = true };
    assert_int_equal(ifm_loop_watch(l, p[0], IFM_READ, on_fd, &c), 0);
    /* nothing to read: a bounded wait returns with no callback */
    assert_int_equal(ifm_loop_once(l, 0), 0);
    assert_int_equal(c.calls, 0);
    assert_int_equal(write(p[1], "hi", 2), 2);
    run_until_calls(l, &c, 1);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.last_fd, p[0]);
    assert_true(c.last_events & IFM_READ);
    assert_false(c.last_events & IFM_WRITE);
    assert_int_equal(c.got, 2);
    assert_memory_equal(c.buf, "hi", 2);
    /* drained: no further calls */
    assert_int_equal(ifm_loop_once(l, 0), 0);
    assert_int_equal(c.calls, 1);

    /* events == 0: registered but idle */
    assert_int_equal(ifm_loop_watch(l, p[0], 0, on_fd, &c), 0);
    assert_int_equal(write(p[1], "x", 1), 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ifm_loop_once(l, 10), 0);
    assert_int_equal(c.calls, 1);
    /* re-watching replaces the callback's arg */
    fd_ctx c2 = { .drain = true };
    assert_int_equal(ifm_loop_watch(l, p[0], IFM_READ, on_fd, &c2), 0);
    run_until_calls(l, &c2, 1);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c2.got, 1);

    /* unwatch stops delivery */
    ifm_loop_unwatch(l, p[0]);
    ifm_loop_unwatch(l, p[0]); /* unknown fd: no-op */
    assert_int_equal(write(p[1], "y", 1), 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ifm_loop_once(l, 10), 0);
    assert_int_equal(c2.calls, 1);

    /* the write end is writable */
    fd_ctx w = { 0 };
    assert_int_equal(ifm_loop_watch(l, p[1], IFM_WRITE, on_fd, &w), 0);
    run_until_calls(l, &w, 1);
    assert_true(w.last_events & IFM_WRITE);
    ifm_loop_unwatch(l, p[1]);

    /* hang-up is reported as readable */
    fd_ctx h = { .drain = true };
    assert_int_equal(ifm_loop_watch(l, p[0], IFM_READ, on_fd, &h), 0);
    close(p[1]);
    run_until_calls(l, &h, 1);
    assert_true(h.last_events & IFM_READ);
    ifm_loop_unwatch(l, p[0]);
    close(p[0]);
    ifm_loop_free(l);
}

/* ifm_loop_modify changes a watched fd's events and keeps its callback and arg,
 * in ifm_loop_once's poll and in the embedded epoll fd alike. */
static void test_fd_modify(void **state)
{
    ifm_loop *l = ifm_loop_new();
    int p[2];
    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    fd_ctx c = { .drain = true };
    assert_int_equal(ifm_loop_watch(l, p[0], IFM_READ, on_fd, &c), 0);
    int epfd = ifm_loop_fd(l);
    assert_true(epfd >= 0);
    struct pollfd pe = { .fd = epfd, .events = POLLIN };

    ifm_loop_modify(l, p[0], 0); /* idle */
    assert_int_equal(write(p[1], "x", 1), 1);
    assert_int_equal(poll(&pe, 1, 20), 0); /* the epoll fd no longer says readable */
    for (int i = 0; i < 3; i++)
        assert_int_equal(ifm_loop_once(l, 10), 0);
    assert_int_equal(c.calls, 0);

    ifm_loop_modify(l, p[0], IFM_READ); /* back: the same callback and arg */
    assert_int_equal(poll(&pe, 1, DEADLINE_MS), 1);
    run_until_calls(l, &c, 1);
    assert_int_equal(c.last_fd, p[0]);
    assert_int_equal(c.got, 1);
    ifm_loop_unwatch(l, p[0]);
    close(p[0]);
    close(p[1]);
    ifm_loop_free(l);
}

/* A callback that unwatches another ready fd: the other one is not called. */
typedef struct {
    int fds[2];
    int calls[2];
} pair_ctx;

static void on_pair(ifm_loop *l, int fd, int events, void *arg)
{
    pair_ctx *c = arg;
    int me = fd == c->fds[0] ? 0 : 1;
    c->calls[me]++;
    char b[8];
    (void)!read(fd, b, sizeof b);
    ifm_loop_unwatch(l, c->fds[1 - me]);
}

static void test_fd_unwatch_other_in_callback(void **state)
{
    ifm_loop *l = ifm_loop_new();
    int a[2], b[2];
    assert_int_equal(pipe2(a, O_NONBLOCK | O_CLOEXEC), 0);
    assert_int_equal(pipe2(b, O_NONBLOCK | O_CLOEXEC), 0);
    pair_ctx c = { .fds = { a[0], b[0] } };
    assert_int_equal(ifm_loop_watch(l, a[0], IFM_READ, on_pair, &c), 0);
    assert_int_equal(ifm_loop_watch(l, b[0], IFM_READ, on_pair, &c), 0);
    assert_int_equal(write(a[1], "1", 1), 1);
    assert_int_equal(write(b[1], "1", 1), 1);
    uint64_t deadline = ifm_now_ms() + DEADLINE_MS;
    while (c.calls[0] + c.calls[1] == 0 && ifm_now_ms() < deadline)
        assert_int_equal(ifm_loop_once(l, 100), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ifm_loop_once(l, 10), 0);
    /* exactly one ran; it unwatched the other before its turn */
    assert_int_equal(c.calls[0] + c.calls[1], 1);
    ifm_loop_unwatch(l, a[0]);
    ifm_loop_unwatch(l, b[0]);
    close(a[0]);
    close(a[1]);
    close(b[0]);
    close(b[1]);
    ifm_loop_free(l);
}

static void test_many_fds(void **state)
{
    /* more watches than the initial capacity */
    ifm_loop *l = ifm_loop_new();
    enum {
        N = 20
    };
    int p[N][2];
    fd_ctx c[N];
    memset(c, 0, sizeof c);
    for (int i = 0; i < N; i++) {
        assert_int_equal(pipe2(p[i], O_NONBLOCK | O_CLOEXEC), 0);
        c[i].drain = true;
        assert_int_equal(ifm_loop_watch(l, p[i][0], IFM_READ, on_fd, &c[i]), 0);
    }
    for (int i = 0; i < N; i += 3)
        assert_int_equal(write(p[i][1], "z", 1), 1);
    for (int i = 0; i < N; i += 3)
        run_until_calls(l, &c[i], 1);
    for (int i = 0; i < N; i++) {
        assert_int_equal(c[i].calls, i % 3 == 0 ? 1 : 0);
        ifm_loop_unwatch(l, p[i][0]);
        close(p[i][0]);
        close(p[i][1]);
    }
    ifm_loop_free(l);
}

/* ---- signals ---- */

typedef struct {
    int signo;
    int calls;
} sig_ctx;

static void on_signal(ifm_loop *l, int signo, void *arg)
{
    sig_ctx *s = arg;
    s->signo = signo;
    s->calls++;
}

static void test_signals(void **state)
{
    ifm_loop *l = ifm_loop_new();
    sig_ctx s = { 0 };
    const int sigs[] = { SIGUSR1 };
    assert_int_equal(ifm_loop_signals(l, sigs, 1, on_signal, &s), 0);
    /* blocked now: raise() only makes it pending, the loop delivers it */
    assert_int_equal(raise(SIGUSR1), 0);
    assert_int_equal(s.calls, 0);
    uint64_t deadline = ifm_now_ms() + DEADLINE_MS;
    while (s.calls == 0) {
        if (ifm_now_ms() > deadline)
            fail_msg("SIGUSR1 not delivered through the loop");
        assert_int_equal(ifm_loop_once(l, 100), 0);
    }
    assert_int_equal(s.signo, SIGUSR1);
    assert_int_equal(s.calls, 1);
    /* and again */
    assert_int_equal(raise(SIGUSR1), 0);
    deadline = ifm_now_ms() + DEADLINE_MS;
    while (s.calls == 1 && ifm_now_ms() < deadline)
        assert_int_equal(ifm_loop_once(l, 100), 0);
    assert_int_equal(s.calls, 2);
    ifm_loop_free(l); /* closes the signalfd */
    /* drop anything left pending and unblock for the other tests */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
}

/* ---- stop ---- */

typedef struct {
    int runs;
} stop_ctx;

static void stop_now(ifm_loop *l, void *arg)
{
    ((stop_ctx *)arg)->runs++;
    ifm_loop_stop(l);
}

static void on_fd_stop(ifm_loop *l, int fd, int events, void *arg)
{
    char b[8];
    (void)!read(fd, b, sizeof b);
    ((stop_ctx *)arg)->runs++;
    ifm_loop_stop(l);
}

static void test_stop_from_callback(void **state)
{
    ifm_loop *l = ifm_loop_new();
    stop_ctx s = { 0 };
    int after = 0;
    ifm_timer_add(l, 5, stop_now, &s);
    /* due in the same turn: stopping ends ifm_loop_run after this turn, it does
     * not drop work that is already due (a shutdown still flushes through the loop) */
    ifm_timer_add(l, 5, count_run, &after);
    assert_false(ifm_loop_stopped(l));
    assert_int_equal(ifm_loop_run(l), 0);
    assert_true(ifm_loop_stopped(l));
    assert_int_equal(s.runs, 1);
    assert_int_equal(after, 1);
    assert_int_equal(ifm_timer_count(l), 0);
    /* a stopped loop still serves ifm_loop_once */
    ifm_timer_add(l, 0, count_run, &after);
    assert_int_equal(ifm_loop_once(l, 100), 0);
    assert_int_equal(after, 2);
    /* run again: it restarts and stops from the next callback */
    ifm_timer_add(l, 10, stop_now, &s);
    assert_int_equal(ifm_loop_run(l), 0);
    assert_int_equal(s.runs, 2);

    /* stop from an fd callback */
    int p[2];
    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    assert_int_equal(ifm_loop_watch(l, p[0], IFM_READ, on_fd_stop, &s), 0);
    assert_int_equal(write(p[1], "s", 1), 1);
    assert_int_equal(ifm_loop_run(l), 0);
    assert_int_equal(s.runs, 3);
    ifm_loop_unwatch(l, p[0]);
    close(p[0]);
    close(p[1]);
    ifm_loop_free(l);
}

static void test_clocks(void **state)
{
    uint64_t a = ifm_now_ms(), b = ifm_now_ms();
    assert_true(b >= a);
    /* wall clock: after 2020-01-01 */
    assert_true(ifm_wall_ms() > 1577836800000ull);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timers_fire_in_order),
        cmocka_unit_test(test_timer_not_early),
        cmocka_unit_test(test_timer_cancel),
        cmocka_unit_test(test_timer_cancel_from_callback),
        cmocka_unit_test(test_timer_cancel_fired),
        cmocka_unit_test(test_timer_rearm_next_turn),
        cmocka_unit_test(test_timer_many),
        cmocka_unit_test(test_free_with_pending_timers),
        cmocka_unit_test(test_fd_watch_pipe),
        cmocka_unit_test(test_fd_modify),
        cmocka_unit_test(test_fd_unwatch_other_in_callback),
        cmocka_unit_test(test_many_fds),
        cmocka_unit_test(test_signals),
        cmocka_unit_test(test_stop_from_callback),
        cmocka_unit_test(test_clocks),
    };
    return cmocka_run_group_tests_name("proto_loop", tests, NULL, NULL);
}
