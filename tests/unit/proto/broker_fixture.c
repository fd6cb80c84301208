#include "broker_fixture.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define START_TIMEOUT_MS 30000
#define STOP_TIMEOUT_MS 10000
#define MAX_LIVE 32

/* Every broker this process started and has not reaped: killed at exit, so a
 * test that fails (cmocka longjmps out of it) before its stop() leaks nothing. */
static pid_t g_live[MAX_LIVE];
static bool g_atexit;

static void kill_live_at_exit(void)
{
    for (int i = 0; i < MAX_LIVE; i++)
        if (g_live[i] > 0) {
            kill(g_live[i], SIGKILL);
            waitpid(g_live[i], NULL, 0);
            g_live[i] = 0;
        }
}

static void live_add(pid_t pid)
{
    if (!g_atexit) {
        atexit(kill_live_at_exit);
        g_atexit = true;
    }
    for (int i = 0; i < MAX_LIVE; i++)
        if (g_live[i] == 0) {
            g_live[i] = pid;
            return;
        }
}

static void live_del(pid_t pid)
{
    for (int i = 0; i < MAX_LIVE; i++)
        if (g_live[i] == pid)
            g_live[i] = 0;
}

static unsigned long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000u + (unsigned long long)ts.tv_nsec / 1000000u;
}

static void nap_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

int ifm_test_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = 0 };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

bool ifm_test_port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

static const char *broker_bin(void)
{
    const char *b = getenv("ICEFARM_MOSQUITTO");
    return b && *b ? b : "/usr/sbin/mosquitto";
}

static int write_conf(const ifm_test_broker *b, const char *extra)
{
    FILE *f = fopen(b->conf, "w");
    if (!f)
        return -1;
    fprintf(f,
            "listener %d 127.0.0.1\n"
            "allow_anonymous true\n"
            "set_tcp_nodelay true\n"
            "persistence false\n"
            "log_dest stderr\n"
            "log_timestamp_format %%H:%%M:%%S\n",
            b->port);
    /* As root, mosquitto switches to the "mosquitto" user, and a credential change
     * clears PR_SET_PDEATHSIG: a crashed test would leave its broker running. */
    if (geteuid() == 0)
        fprintf(f, "user root\n");
    if (getenv("ICEFARM_BROKER_DEBUG"))
        fprintf(f, "log_type all\n");
    if (extra)
        fprintf(f, "%s\n", extra);
    return fclose(f) == 0 ? 0 : -1;
}

/* Launches mosquitto on the written config; 0 when it accepts connections,
 * 1 if it exited (e.g. port taken), -1 on other errors. */
static int launch(ifm_test_broker *b)
{
    int logfd = open(b->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0) {
        fprintf(stderr, "broker_fixture: cannot open %s: %s\n", b->log, strerror(errno));
        return -1;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(logfd);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(126);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        /* Signals blocked or ignored by the test (e.g. a signalfd test) are
         * inherited across exec; give the broker a clean slate. */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        execl(broker_bin(), "mosquitto", "-c", b->conf, (char *)NULL);
        _exit(127);
    }
    close(logfd);
    b->pid = pid;
    live_add(pid);
    unsigned long long deadline = mono_ms() + START_TIMEOUT_MS;
    while (mono_ms() < deadline) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            live_del(pid);
            b->pid = 0;
            return 1;
        }
        if (ifm_test_port_open(b->port)) {
            /* Still ours? (another process could own the port if mosquitto lost the race) */
            nap_ms(20);
            if (waitpid(pid, &status, WNOHANG) == pid) {
                live_del(pid);
                b->pid = 0;
                return 1;
            }
            return 0;
        }
        nap_ms(20);
    }
    fprintf(stderr, "broker_fixture: mosquitto did not accept connections on port %d within %d ms\n", b->port,
            START_TIMEOUT_MS);
    ifm_test_broker_kill(b);
    return -1;
}

int ifm_test_broker_start_port(ifm_test_broker *b, int port, const char *extra_conf)
{
    memset(b, 0, sizeof *b);
    snprintf(b->dir, sizeof b->dir, "%s/icefarm-broker-XXXXXX",
             getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(b->dir)) {
        fprintf(stderr, "broker_fixture: mkdtemp: %s\n", strerror(errno));
        return -1;
    }
    snprintf(b->conf, sizeof b->conf, "%s/mosquitto.conf", b->dir);
    snprintf(b->log, sizeof b->log, "%s/mosquitto.log", b->dir);
    for (int attempt = 0; attempt < 8; attempt++) {
        b->port = port ? port : ifm_test_free_port();
        if (b->port <= 0 || write_conf(b, extra_conf)) {
            fprintf(stderr, "broker_fixture: cannot prepare a config in %s\n", b->dir);
            break;
        }
        int rc = launch(b);
        if (rc == 0)
            return 0;
        if (rc < 0 || port)
            break;
        /* exited at once: most likely the port was taken meanwhile; try another */
    }
    fprintf(stderr, "broker_fixture: could not start %s\n", broker_bin());
    ifm_test_broker_dump_log(b);
    ifm_test_broker_stop(b);
    return -1;
}

int ifm_test_broker_start(ifm_test_broker *b, const char *extra_conf)
{
    return ifm_test_broker_start_port(b, 0, extra_conf);
}

void ifm_test_broker_kill(ifm_test_broker *b)
{
    if (b->pid <= 0)
        return;
    kill(b->pid, SIGKILL);
    while (waitpid(b->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    live_del(b->pid);
    b->pid = 0;
}

int ifm_test_broker_restart(ifm_test_broker *b)
{
    ifm_test_broker_kill(b);
    /* mosquitto sets SO_REUSEADDR, but retry a little in case the port is slow to free. */
    for (int attempt = 0; attempt < 20; attempt++) {
        int rc = launch(b);
        if (rc == 0)
            return 0;
        if (rc < 0)
            break;
        nap_ms(250);
    }
    fprintf(stderr, "broker_fixture: could not restart mosquitto on port %d\n", b->port);
    ifm_test_broker_dump_log(b);
    return -1;
}

void ifm_test_broker_stop(ifm_test_broker *b)
{
    if (b->pid > 0) {
        kill(b->pid, SIGTERM);
        unsigned long long deadline = mono_ms() + STOP_TIMEOUT_MS;
        while (mono_ms() < deadline) {
            pid_t r = waitpid(b->pid, NULL, WNOHANG);
            if (r == b->pid || (r < 0 && errno != EINTR)) {
                live_del(b->pid);
                b->pid = 0;
                break;
            }
            nap_ms(10);
        }
        ifm_test_broker_kill(b);
    }
    if (b->dir[0]) {
        unlink(b->conf);
        unlink(b->log);
        rmdir(b->dir);
        b->dir[0] = '\0';
    }
}

void ifm_test_broker_dump_log(const ifm_test_broker *b)
{
    if (!b->log[0])
        return;
    FILE *f = fopen(b->log, "r");
    if (!f)
        return;
    fprintf(stderr, "---- mosquitto log (port %d) ----\n", b->port);
    char line[512];
    while (fgets(line, sizeof line, f))
        fputs(line, stderr);
    fprintf(stderr, "---- end of mosquitto log ----\n");
    fclose(f);
}
