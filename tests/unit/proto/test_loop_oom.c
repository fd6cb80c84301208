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

static void a_timer_that_cannot_be_stored_aborts(void **state)
{
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(pipefd[1], STDERR_FILENO);
        ifm_loop *l = ifm_loop_new();
        fail_reallocs = 1; /* the first timer needs the heap allocated */
        uint64_t id = ifm_timer_add(l, 10, noop, NULL);
        fprintf(stderr, "returned %llu\n", (unsigned long long)id);
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
    assert_non_null(strstr(buf, "out of memory adding a timer"));
    assert_null(strstr(buf, "returned"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(timers_grow_normally),
        cmocka_unit_test(a_timer_that_cannot_be_stored_aborts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
