/* A timer the loop cannot store must not be lost quietly (issue 11 item 5: a
 * lost timer is a lease that never expires): ifm_timer_add aborts the process
 * with a message instead. realloc is wrapped (-Wl,--wrap=realloc) so the test
 * can make the timer heap's growth fail; the abort happens in a child. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "icefarm/loop.h"

void *__real_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n);

static int fail_reallocs; /* the test's switch: make realloc fail */

void *__wrap_realloc(void *p, size_t n)
{
    return fail_reallocs ? NULL : __real_realloc(p, n);
}

static void noop(ifm_loop *loop, void *arg)
{
    (void)loop;
    (void)arg;
}

static void timers_grow_normally(void **state)
{
    ifm_loop *l = ifm_loop_new();
    assert_non_null(l);
    for (int i = 0; i < 100; i++)
        assert_true(ifm_timer_add(l, 1000, noop, NULL) != 0);
    assert_int_equal(ifm_timer_count(l), 100);
    ifm_loop_free(l);
}

/* Runs body() in a child with stderr to a pipe; the child must die of SIGABRT
 * having said `said` and without getting past body() (which would print "returned"). */
static void aborts_saying(void (*body)(void), const char *said)
{
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(pipefd[1], STDERR_FILENO);
        body();
        fprintf(stderr, "returned\n");
        _exit(0);
    }
    close(pipefd[1]);
    char buf[256] = "";
    ssize_t n = read(pipefd[0], buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = '\0';
    close(pipefd[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    assert_non_null(strstr(buf, said));
    assert_null(strstr(buf, "returned"));
}

static void add_a_timer_without_memory(void)
{
    ifm_loop *l = ifm_loop_new();
    fail_reallocs = 1; /* the first timer needs the heap allocated */
    ifm_timer_add(l, 10, noop, NULL);
}

static void a_timer_that_cannot_be_stored_aborts(void **state)
{
    aborts_saying(add_a_timer_without_memory, "out of memory adding a timer");
}

static void on_fd(ifm_loop *loop, int fd, int events, void *arg)
{
    (void)loop;
    (void)fd;
    (void)events;
    (*(int *)arg)++;
}

/* A watch the loop cannot store says so (its callers must check: IFM_MUST_CHECK);
 * the fd is not half-registered, and the same watch works once memory is back. */
static void a_watch_that_cannot_be_stored_fails(void **state)
{
    ifm_loop *l = ifm_loop_new();
    int p[2], calls = 0;
    assert_int_equal(pipe(p), 0);
    fail_reallocs = 1; /* the first watch needs the table allocated */
    assert_int_equal(ifm_loop_watch(l, p[0], IFM_READ, on_fd, &calls), -1);
    fail_reallocs = 0;
    assert_int_equal(write(p[1], "x", 1), 1);
    assert_int_equal(ifm_loop_once(l, 10), 0);
    assert_int_equal(calls, 0);
    assert_int_equal(ifm_loop_watch(l, p[0], IFM_READ, on_fd, &calls), 0);
    assert_int_equal(ifm_loop_once(l, 1000), 0);
    assert_int_equal(calls, 1);
    ifm_loop_unwatch(l, p[0]);
    close(p[0]);
    close(p[1]);
    ifm_loop_free(l);
}

static void modify_an_unwatched_fd(void)
{
    ifm_loop *l = ifm_loop_new();
    ifm_loop_modify(l, STDIN_FILENO, IFM_READ);
}

/* ifm_loop_modify cannot fail, so an fd that was never watched is a bug it
 * reports loudly rather than quietly registering (the old re-watch idiom). */
static void modifying_an_unwatched_fd_aborts(void **state)
{
    aborts_saying(modify_an_unwatched_fd, "not watched");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(timers_grow_normally),
        cmocka_unit_test(a_timer_that_cannot_be_stored_aborts),
        cmocka_unit_test(a_watch_that_cannot_be_stored_fails),
        cmocka_unit_test(modifying_an_unwatched_fd_aborts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
