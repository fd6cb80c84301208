/* libicefarm's USB/IP client against other peers, for its negative paths:
 *   - the Linux usbipd (Debian's usbip package) on this host, which has no USB
 *     and so exports nothing: the list is empty, an import is refused with
 *     "Device not found" (skipped with a message when usbipd is not installed);
 *   - a test server speaking the wrong protocol version, one that closes in the
 *     middle of its reply, and a port nobody listens on: clear errors, at once.
 * Each answer is bounded by the client's own timeouts; nothing here waits on
 * luck. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "icefarm/usbip_client.h"

/* A port free right now on 127.0.0.1. */
static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &len), 0);
    close(s);
    return ntohs(a.sin_port);
}

/* ---- the Linux usbipd ---- */

static const char *usbipd_path(void)
{
    static const char *const cands[] = { "/usr/sbin/usbipd", "/sbin/usbipd", NULL };
    for (int i = 0; cands[i]; i++)
        if (access(cands[i], X_OK) == 0)
            return cands[i];
    return NULL;
}

static void test_linux_usbipd(void **state)
{
    (void)state;
    const char *usbipd = usbipd_path();
    if (!usbipd) {
        print_message("skip: usbipd is not installed (apt install usbip)\n");
        skip();
    }
    int port = free_port();
    char ports[16];
    snprintf(ports, sizeof ports, "%d", port);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execl(usbipd, "usbipd", "-4", "--tcp-port", ports, (char *)NULL);
        _exit(127);
    }
    /* usbipd listens a moment after it starts: the list retries for up to 5 s */
    icefarm_usbip_device *devs = NULL;
    size_t n = 99;
    char why[400] = "";
    int rc = -1;
    for (int i = 0; i < 50 && rc != 0; i++) {
        rc = icefarm_usbip_list(NULL, "127.0.0.1", ports, 2000, &devs, &n, why, sizeof why);
        if (rc)
            usleep(100000);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(n, 0);
    assert_null(devs);

    icefarm_usbip_opts o = { .host = "127.0.0.1", .port = ports, .busid = "1-1", .timeout_ms = 3000 };
    icefarm_usbip *u = NULL;
    rc = icefarm_usbip_open(NULL, &o, true, &u, why, sizeof why);
    assert_int_equal(rc, -ENOENT);
    assert_null(u);
    assert_non_null(strstr(why, "Device not found"));
    assert_non_null(strstr(why, "1-1"));

    /* SIGKILL, not SIGTERM: usbipd catches SIGTERM with a handler that only logs
     * and leaves its loop only when the signal interrupts its ppoll(); one that
     * lands while it forks for our connection is lost, and it then waits in
     * ppoll() forever (seen here in ~1 run of 10). It holds nothing to clean up. */
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* ---- scripted bad servers ---- */

typedef struct {
    int listen_fd;
    const uint8_t *reply;
    size_t reply_len;
    int requests; /* how many to answer */
} badsrv;

static void *badsrv_run(void *arg)
{
    badsrv *b = arg;
    for (int i = 0; i < b->requests; i++) {
        int c = accept(b->listen_fd, NULL, NULL);
        if (c < 0)
            break;
        uint8_t req[64];
        ssize_t n = read(c, req, sizeof req); /* the request, whatever it is */
        (void)n;
        if (b->reply_len && write(c, b->reply, b->reply_len) < 0)
            perror("badsrv write");
        close(c);
    }
    return NULL;
}

static int badsrv_start(badsrv *b, pthread_t *t)
{
    b->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    assert_int_equal(bind(b->listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(b->listen_fd, 4), 0);
    assert_int_equal(getsockname(b->listen_fd, (struct sockaddr *)&a, &len), 0);
    assert_int_equal(pthread_create(t, NULL, badsrv_run, b), 0);
    return ntohs(a.sin_port);
}

static void badsrv_stop(badsrv *b, pthread_t t)
{
    shutdown(b->listen_fd, SHUT_RDWR);
    close(b->listen_fd);
    pthread_join(t, NULL);
}

static void test_wrong_version(void **state)
{
    (void)state;
    /* an OP_REP_IMPORT of USB/IP 1.0.6, status 0 */
    static const uint8_t reply[8] = { 0x01, 0x06, 0x00, 0x03, 0, 0, 0, 0 };
    badsrv b = { .reply = reply, .reply_len = sizeof reply, .requests = 2 };
    pthread_t t;
    char ports[16];
    snprintf(ports, sizeof ports, "%d", badsrv_start(&b, &t));
    icefarm_usbip_opts o = { .host = "127.0.0.1", .port = ports, .busid = "1-1", .timeout_ms = 3000 };
    icefarm_usbip *u = NULL;
    char why[400];
    assert_int_equal(icefarm_usbip_open(NULL, &o, true, &u, why, sizeof why), -EPROTO);
    assert_non_null(strstr(why, "version 0x0106"));
    icefarm_usbip_device *devs = NULL;
    size_t n;
    assert_int_equal(icefarm_usbip_list(NULL, "127.0.0.1", ports, 3000, &devs, &n, why, sizeof why), -EPROTO);
    assert_non_null(strstr(why, "version"));
    badsrv_stop(&b, t);
}

static void test_truncated_reply(void **state)
{
    (void)state;
    /* half an op header, then the connection closes */
    static const uint8_t reply[4] = { 0x01, 0x11, 0x00, 0x03 };
    badsrv b = { .reply = reply, .reply_len = sizeof reply, .requests = 1 };
    pthread_t t;
    char ports[16];
    snprintf(ports, sizeof ports, "%d", badsrv_start(&b, &t));
    icefarm_usbip_opts o = { .host = "127.0.0.1", .port = ports, .busid = "1-1", .timeout_ms = 3000 };
    icefarm_usbip *u = NULL;
    char why[400];
    int rc = icefarm_usbip_open(NULL, &o, true, &u, why, sizeof why);
    assert_true(rc == -ESHUTDOWN || rc == -ECONNRESET);
    assert_non_null(strstr(why, "closed"));
    badsrv_stop(&b, t);
}

static void test_nobody_listens(void **state)
{
    (void)state;
    char ports[16];
    snprintf(ports, sizeof ports, "%d", free_port());
    icefarm_usbip_opts o = { .host = "127.0.0.1", .port = ports, .busid = "1-1", .timeout_ms = 3000 };
    icefarm_usbip *u = NULL;
    char why[400];
    assert_int_equal(icefarm_usbip_open(NULL, &o, true, &u, why, sizeof why), -ECONNREFUSED);
    assert_non_null(strstr(why, "refused"));
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linux_usbipd),
        cmocka_unit_test(test_wrong_version),
        cmocka_unit_test(test_truncated_reply),
        cmocka_unit_test(test_nobody_listens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
