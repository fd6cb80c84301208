/* USB/IP benchmark, the user's side: `icefarm-cli serial` end to end, through
 * its stdin and stdout, on a board whose CDC function loops back what it is
 * sent (a simulated pico-ice board's CDC1, `--interface 2`). The path measured
 * is the one a person or a script uses: a pipe into icefarm-cli, libicefarm's
 * USB/IP client, TCP to the worker's USB/IP server (or the broker tunnel with
 * --tunnel), the board, and back out of icefarm-cli's stdout.
 *
 *   bench_usbip_serial ROUND_TRIPS KILOBYTES CMD [ARG...]
 *
 * CMD is the icefarm-cli command line (run.sh: icefarm-cli --broker URL --name
 * NAME serial SERIAL --interface 2 [--tunnel]). Waits (at most 60 s) until a
 * marker written to its stdin comes back, then:
 *   - round trip: ROUND_TRIPS times 64 bytes written, the same 64 bytes read back;
 *   - throughput: KILOBYTES written while reading them back, checked byte for byte.
 * Then SIGINT (the way a person ends it), at most 10 s to exit, else SIGKILL.
 * Prints one line: serial_rtt_p50_us= serial_rtt_p99_us= serial_rtt_mean_us=
 * serial_bytes_s= (or serial_failed=WHAT) and exits 0 (1 on a failure). No goal
 * is asserted here: run.sh prints them beside the figures. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct {
    pid_t pid;
    int to, from; /* its stdin (we write), its stdout (we read) */
} child;

static int spawn(child *c, char **argv)
{
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC))
        return -1;
    c->pid = fork();
    if (c->pid < 0)
        return -1;
    if (c->pid == 0) {
        dup2(in[0], STDIN_FILENO);
        dup2(out[1], STDOUT_FILENO);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    c->to = in[1];
    c->from = out[0];
    fcntl(c->to, F_SETFL, O_NONBLOCK);
    fcntl(c->from, F_SETFL, O_NONBLOCK);
    return 0;
}

/* Moves bytes both ways until `want` bytes came back or the deadline: writes
 * out[0..outlen) as the pipe takes them, appends what comes back to back. */
static int pump(child *c, const uint8_t *out, size_t outlen, uint8_t *back, size_t want, double deadline)
{
    size_t sent = 0, got = 0;
    while (got < want) {
        double left = deadline - now_s();
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd p[2] = { { .fd = c->from, .events = POLLIN }, { .fd = c->to, .events = POLLOUT } };
        int rc = poll(p, sent < outlen ? 2 : 1, (int)(left * 1000) + 1);
        if (rc < 0 && errno != EINTR)
            return -errno;
        if (sent < outlen && (p[1].revents & (POLLOUT | POLLERR))) {
            ssize_t n = write(c->to, out + sent, outlen - sent);
            if (n < 0 && errno != EAGAIN)
                return -EPIPE;
            if (n > 0)
                sent += (size_t)n;
        }
        if (p[0].revents & (POLLIN | POLLHUP)) {
            ssize_t n = read(c->from, back + got, want - got);
            if (n == 0)
                return -ESHUTDOWN; /* icefarm-cli ended */
            if (n < 0 && errno != EAGAIN)
                return -errno;
            if (n > 0)
                got += (size_t)n;
        }
    }
    return 0;
}

static void stop(child *c)
{
    close(c->to);
    kill(c->pid, SIGINT);
    for (int i = 0; i < 1000; i++) { /* 10 s */
        if (waitpid(c->pid, NULL, WNOHANG) == c->pid)
            return;
        usleep(10000);
    }
    kill(c->pid, SIGKILL);
    waitpid(c->pid, NULL, 0);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: bench_usbip_serial ROUND_TRIPS KILOBYTES CMD [ARG...]\n");
        return 2;
    }
    int n = atoi(argv[1]);
    size_t total = (size_t)atol(argv[2]) * 1024;
    if (n < 1 || total < 1) {
        fprintf(stderr, "bench_usbip_serial: ROUND_TRIPS and KILOBYTES must be positive\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    child c;
    if (spawn(&c, argv + 3)) {
        perror("bench_usbip_serial: spawn");
        return 1;
    }
    const char *failed = NULL;
    uint8_t *data = malloc(total), *back = malloc(total);
    double *rtt = calloc((size_t)n, sizeof *rtt);
    if (!data || !back || !rtt) {
        failed = "out-of-memory";
        goto out;
    }

    /* the session is up once a marker comes back (stdin is read only then) */
    static const char marker[] = "icefarm-bench-sync\n";
    uint8_t mb[sizeof marker - 1];
    int rc = pump(&c, (const uint8_t *)marker, sizeof mb, mb, sizeof mb, now_s() + 60);
    if (rc || memcmp(mb, marker, sizeof mb)) {
        failed = rc == -ESHUTDOWN ? "icefarm-cli-ended-before-the-echo" : "no-echo-of-the-marker-within-60s";
        goto out;
    }

    /* round trips: 64 bytes out, the same 64 back */
    uint8_t msg[64], echo[64];
    for (int i = 0; i < n; i++) {
        memset(msg, 'a' + i % 26, sizeof msg);
        double t0 = now_s();
        if (pump(&c, msg, sizeof msg, echo, sizeof echo, t0 + 5) || memcmp(msg, echo, sizeof msg)) {
            failed = "round-trip-lost-or-garbled";
            goto out;
        }
        rtt[i] = (now_s() - t0) * 1e6;
    }
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += rtt[i];
    qsort(rtt, (size_t)n, sizeof *rtt, cmp_double);

    /* throughput: everything written while it comes back, checked */
    for (size_t i = 0; i < total; i++)
        data[i] = (uint8_t)(i % 251);
    double t0 = now_s();
    if (pump(&c, data, total, back, total, t0 + 300)) {
        failed = "throughput-transfer-incomplete-within-300s";
        goto out;
    }
    double secs = now_s() - t0;
    if (memcmp(data, back, total)) {
        failed = "throughput-data-garbled";
        goto out;
    }
    printf("serial_rtt_p50_us=%.0f serial_rtt_p99_us=%.0f serial_rtt_mean_us=%.0f serial_bytes_s=%.0f\n", rtt[n / 2],
           rtt[(size_t)n * 99 / 100], sum / n, (double)total / secs);
out:
    stop(&c);
    if (failed)
        printf("serial_failed=%s\n", failed);
    free(data);
    free(back);
    free(rtt);
    return failed ? 1 : 0;
}
