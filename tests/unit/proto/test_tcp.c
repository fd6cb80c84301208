/* The TCP helper over real loopback sockets: connect and accept, a large transfer
 * through a paused reader (back-pressure and drain), the peer closing mid-write,
 * connect refused (inline and through the resolver thread), reconnect back-off,
 * and closes from inside callbacks. Waits are "until X, within DEADLINE_MS"; the
 * only timing assertions are lower bounds a timer cannot break (it never fires
 * early), so a slow or sanitized machine only makes the test slower. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "icefarm/tcp.h"

#define DEADLINE_MS 30000

static void run_until(ifm_loop *l, const bool *flag)
{
    uint64_t deadline = ifm_now_ms() + DEADLINE_MS;
    while (!*flag) {
        if (ifm_now_ms() > deadline)
            fail_msg("condition not reached within %d ms", DEADLINE_MS);
        assert_int_equal(ifm_loop_once(l, 100), 0);
    }
}

/* A port nobody listens on (bound, then released). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static uint8_t pattern(uint64_t i)
{
    return (uint8_t)(i * 31u + (i >> 9));
}

/* ---- one side of a connection, recorded ---- */

typedef struct {
    ifm_loop *loop;
    ifm_tcp *s;
    bool connected, closed, eof;
    int connect_status, close_status, closes, drains;
    uint8_t buf[256];
    size_t n;          /* bytes kept in buf */
    uint64_t received; /* total bytes */
    bool bad_byte;     /* pattern mismatch */
    bool data_while_paused;
    bool paused;
    uint64_t pause_every; /* pause after this many bytes (0: never) */
    uint64_t next_pause;
    uint64_t resume_timer;
    bool close_on_data;
} side;

static void s_connect(ifm_tcp *s, int status, void *arg)
{
    side *d = arg;
    d->connected = true;
    d->connect_status = status;
    if (status != 0)
        d->s = NULL;
}

static void on_resume(ifm_loop *l, void *arg)
{
    side *d = arg;
    d->resume_timer = 0;
    d->paused = false;
    ifm_tcp_read_resume(d->s);
}

static void s_data(ifm_tcp *s, const uint8_t *p, size_t len, void *arg)
{
    side *d = arg;
    if (d->paused)
        d->data_while_paused = true;
    for (size_t i = 0; i < len; i++)
        if (p[i] != pattern(d->received + i))
            d->bad_byte = true;
    size_t keep = len < sizeof d->buf - d->n ? len : sizeof d->buf - d->n;
    memcpy(d->buf + d->n, p, keep);
    d->n += keep;
    d->received += len;
    if (d->close_on_data) {
        ifm_tcp_close(s);
        d->s = NULL;
        d->closed = true;
        return;
    }
    if (d->pause_every && d->received >= d->next_pause) {
        d->next_pause = d->received + d->pause_every;
        d->paused = true;
        ifm_tcp_read_pause(s);
        d->resume_timer = ifm_timer_add(d->loop, 2, on_resume, d);
    }
}

static void s_drain(ifm_tcp *s, void *arg)
{
    ((side *)arg)->drains++;
}

static void s_close(ifm_tcp *s, int status, void *arg)
{
    side *d = arg;
    d->closed = true;
    d->closes++;
    d->close_status = status;
    if (d->s == s)
        d->s = NULL;
    ifm_timer_cancel(d->loop, d->resume_timer);
}

static const ifm_tcp_cbs side_cbs = { s_connect, s_data, s_drain, NULL, s_close };

typedef struct {
    side *server;
    ifm_tcp_cbs cbs;
    int accepted;
    bool close_listener;
} acceptor;

static void on_accept(ifm_tcp_listener *l, ifm_tcp *s, void *arg)
{
    acceptor *a = arg;
    a->accepted++;
    a->server->s = s;
    a->server->connected = true;
    ifm_tcp_start(s, &a->cbs, a->server);
    if (a->close_listener)
        ifm_tcp_listener_close(l);
}

static ifm_tcp_listener *listen_loopback(ifm_loop *l, acceptor *a, const ifm_tcp_opts *o)
{
    ifm_tcp_listener *lst = NULL;
    char why[128] = "";
    int rc = ifm_tcp_listen(l, "127.0.0.1", "0", o, on_accept, a, &lst, why, sizeof why);
    if (rc != 0)
        fail_msg("listen: %s", why);
    assert_true(ifm_tcp_listener_port(lst) > 0);
    return lst;
}

static void connect_port(ifm_loop *l, const char *host, int port, const ifm_tcp_opts *o, side *c)
{
    char p[16], why[128] = "";
    snprintf(p, sizeof p, "%d", port);
    int rc = ifm_tcp_connect(l, host, p, o, &side_cbs, c, &c->s, why, sizeof why);
    if (rc != 0)
        fail_msg("connect: %s", why);
}

/* ---- tests ---- */

static void test_connect_accept_exchange(void **state)
{
    ifm_loop *l = ifm_loop_new();
    side srv = { .loop = l }, cli = { .loop = l };
    acceptor a = { .server = &srv, .cbs = side_cbs };
    ifm_tcp_listener *lst = listen_loopback(l, &a, NULL);
    connect_port(l, "127.0.0.1", ifm_tcp_listener_port(lst), NULL, &cli);
    /* Queued before the connection exists: sent once it does. */
    assert_int_equal(ifm_tcp_write(cli.s, "\x00\x1f", 2), 0);
    run_until(l, &cli.connected);
    assert_int_equal(cli.connect_status, 0);
    run_until(l, &srv.connected);
    assert_int_equal(a.accepted, 1);
    assert_true(strncmp(ifm_tcp_peer(cli.s), "127.0.0.1:", 10) == 0);
    assert_true(strncmp(ifm_tcp_peer(srv.s), "127.0.0.1:", 10) == 0);

    int v = 0;
    socklen_t len = sizeof v;
    assert_int_equal(getsockopt(ifm_tcp_fd(cli.s), IPPROTO_TCP, TCP_NODELAY, &v, &len), 0);
    assert_int_equal(v, 1);
    assert_int_equal(getsockopt(ifm_tcp_fd(srv.s), IPPROTO_TCP, TCP_NODELAY, &v, &len), 0);
    assert_int_equal(v, 1);
    assert_int_equal(getsockopt(ifm_tcp_fd(srv.s), SOL_SOCKET, SO_KEEPALIVE, &v, &len), 0);
    assert_int_equal(v, 1);
    assert_int_equal(getsockopt(ifm_tcp_fd(cli.s), IPPROTO_TCP, TCP_KEEPIDLE, &v, &len), 0);
    assert_int_equal(v, 30);

    uint8_t msg[64];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = pattern(i + 2);
    assert_int_equal(ifm_tcp_write(cli.s, msg, sizeof msg), 0);
    uint64_t deadline = ifm_now_ms() + DEADLINE_MS;
    while (srv.received < 66 && ifm_now_ms() < deadline)
        ifm_loop_once(l, 100);
    assert_int_equal(srv.received, 66);
    assert_false(srv.bad_byte);

    /* The server answers and ends; the client sees the bytes, then on_close(0). */
    assert_int_equal(ifm_tcp_write(srv.s, msg, 10), 0);
    ifm_tcp_end(srv.s);
    assert_int_equal(ifm_tcp_write(srv.s, msg, 1), -EPIPE);
    run_until(l, &cli.closed);
    assert_int_equal(cli.close_status, 0);
    assert_int_equal(cli.received, 10);
    assert_memory_equal(cli.buf, msg, 10);
    run_until(l, &srv.closed);
    assert_int_equal(srv.close_status, 0);
    assert_int_equal(srv.closes, 1);
    assert_int_equal(cli.closes, 1);

    ifm_tcp_listener_close(lst);
    assert_int_equal(ifm_timer_count(l), 0);
    ifm_loop_free(l);
}

/* 24 MiB through a reader that pauses every 256 KiB: the writer must see
 * ifm_tcp_write return 1, stop, and continue on on_drain; the queue never grows
 * past high_water + one chunk; every byte arrives in order; ifm_tcp_end delivers
 * the tail before EOF. */
typedef struct {
    side *c;
    uint64_t sent, total;
    size_t max_queued;
    int full;
    bool done;
} producer;

static void produce(producer *p)
{
    uint8_t chunk[16384];
    while (p->sent < p->total) {
        size_t n = sizeof chunk;
        if (p->total - p->sent < n)
            n = (size_t)(p->total - p->sent);
        for (size_t i = 0; i < n; i++)
            chunk[i] = pattern(p->sent + i);
        int rc = ifm_tcp_write(p->c->s, chunk, n);
        assert_true(rc == 0 || rc == 1);
        p->sent += n;
        if (ifm_tcp_queued(p->c->s) > p->max_queued)
            p->max_queued = ifm_tcp_queued(p->c->s);
        if (rc == 1) {
            p->full++;
            return; /* wait for on_drain */
        }
    }
    ifm_tcp_end(p->c->s);
    p->done = true;
}

static producer *the_producer;

static void p_drain(ifm_tcp *s, void *arg)
{
    s_drain(s, arg);
    produce(the_producer);
}

static void test_large_transfer_backpressure(void **state)
{
    ifm_loop *l = ifm_loop_new();
    ifm_tcp_opts o = { .high_water = 128 * 1024, .low_water = 32 * 1024 };
    side srv = { .loop = l, .pause_every = 256 * 1024, .next_pause = 256 * 1024 }, cli = { .loop = l };
    acceptor a = { .server = &srv, .cbs = side_cbs };
    ifm_tcp_listener *lst = listen_loopback(l, &a, NULL);
    char port[16];
    snprintf(port, sizeof port, "%d", ifm_tcp_listener_port(lst));
    ifm_tcp_cbs cbs = side_cbs;
    cbs.on_drain = p_drain;
    assert_int_equal(ifm_tcp_connect(l, "127.0.0.1", port, &o, &cbs, &cli, &cli.s, NULL, 0), 0);
    run_until(l, &cli.connected);
    assert_int_equal(cli.connect_status, 0);

    producer p = { .c = &cli, .total = 24u * 1024 * 1024 };
    the_producer = &p;
    produce(&p);
    run_until(l, &p.done);
    run_until(l, &srv.closed);
    assert_int_equal(srv.close_status, 0); /* EOF after the last byte */
    assert_int_equal(srv.received, p.total);
    assert_false(srv.bad_byte);
    assert_false(srv.data_while_paused);
    run_until(l, &cli.closed);
    assert_int_equal(cli.close_status, 0);
    assert_true(p.full > 0);
    assert_int_equal(cli.drains, p.full);
    assert_true(p.max_queued <= o.high_water + 16384);
    print_message("24 MiB: write returned 1 %d times, max queued %zu bytes\n", p.full, p.max_queued);

    ifm_tcp_listener_close(lst);
    ifm_loop_free(l);
}

/* The server closes (with unread data: an RST) while the client writes 8 MiB
 * as fast as it can: one on_close with an error, then writes fail. */
typedef struct {
    side *c;
    bool stop;
} flood;

static void flood_more(ifm_loop *l, void *arg)
{
    flood *f = arg;
    if (f->stop || !f->c->s)
        return;
    static uint8_t chunk[65536];
    while (f->c->s) {
        int rc = ifm_tcp_write(f->c->s, chunk, sizeof chunk);
        if (rc < 0) {
            assert_true(rc == -EPIPE || rc == -ECONNRESET || rc == -ENOBUFS);
            break;
        }
        if (rc == 1)
            break;
    }
    ifm_timer_add(l, 1, flood_more, f);
}

static void test_peer_close_mid_write(void **state)
{
    ifm_loop *l = ifm_loop_new();
    side srv = { .loop = l, .close_on_data = true }, cli = { .loop = l };
    acceptor a = { .server = &srv, .cbs = side_cbs };
    ifm_tcp_listener *lst = listen_loopback(l, &a, NULL);
    connect_port(l, "127.0.0.1", ifm_tcp_listener_port(lst), NULL, &cli);
    run_until(l, &cli.connected);
    flood f = { .c = &cli };
    flood_more(l, &f);
    run_until(l, &srv.closed); /* closed inside its own on_data */
    run_until(l, &cli.closed);
    f.stop = true;
    assert_int_equal(cli.closes, 1);
    assert_true(cli.close_status == -ECONNRESET || cli.close_status == -EPIPE);
    assert_int_equal(srv.closes, 0); /* ifm_tcp_close: no callback */
    while (ifm_timer_count(l))
        ifm_loop_once(l, 100);
    ifm_tcp_listener_close(lst);
    ifm_loop_free(l);
}

static void test_connect_refused(void **state)
{
    ifm_loop *l = ifm_loop_new();
    int port = free_port();
    side c1 = { .loop = l }, c2 = { .loop = l };
    connect_port(l, "127.0.0.1", port, NULL, &c1);
    /* A name, not a number: resolved on the helper thread. */
    connect_port(l, "localhost", port, NULL, &c2);
    assert_int_equal(ifm_tcp_write(c1.s, "x", 1), 0); /* queued: not yet known to fail */
    run_until(l, &c1.connected);
    run_until(l, &c2.connected);
    assert_int_equal(c1.connect_status, -ECONNREFUSED);
    assert_int_equal(c2.connect_status, -ECONNREFUSED);
    assert_false(c1.closed);
    assert_int_equal(ifm_timer_count(l), 0);

    /* Closing a stream while its name is being resolved forgets the lookup. */
    side c3 = { .loop = l };
    connect_port(l, "localhost", port, NULL, &c3);
    ifm_tcp_close(c3.s);
    for (int i = 0; i < 5; i++)
        ifm_loop_once(l, 20);
    assert_false(c3.connected);

    char why[128] = "";
    ifm_tcp *s = NULL;
    assert_int_equal(ifm_tcp_connect(l, "", "1", NULL, &side_cbs, &c3, &s, why, sizeof why), -EINVAL);
    assert_non_null(strstr(why, "host"));
    ifm_tcp_listener *lst = NULL;
    acceptor a = { .server = &c3, .cbs = side_cbs };
    assert_int_equal(ifm_tcp_listen(l, "127.0.0.1", "0", NULL, on_accept, &a, &lst, NULL, 0), 0);
    char p[16];
    snprintf(p, sizeof p, "%d", ifm_tcp_listener_port(lst));
    ifm_tcp_listener *again = NULL;
    assert_int_equal(ifm_tcp_listen(l, "127.0.0.1", p, NULL, on_accept, &a, &again, why, sizeof why), -EADDRINUSE);
    assert_non_null(strstr(why, "in use"));
    ifm_tcp_listener_close(lst);
    ifm_loop_free(l);
}

/* Closing the listener inside its accept callback: the accepted stream lives on,
 * later connects are refused. */
static void test_listener_close_in_callback(void **state)
{
    ifm_loop *l = ifm_loop_new();
    side srv = { .loop = l }, cli = { .loop = l }, late = { .loop = l };
    acceptor a = { .server = &srv, .cbs = side_cbs, .close_listener = true };
    ifm_tcp_listener *lst = listen_loopback(l, &a, NULL);
    int port = ifm_tcp_listener_port(lst);
    connect_port(l, "127.0.0.1", port, NULL, &cli);
    run_until(l, &srv.connected);
    run_until(l, &cli.connected);
    assert_int_equal(ifm_tcp_write(srv.s, "hi", 2), 0);
    uint64_t deadline = ifm_now_ms() + DEADLINE_MS;
    while (cli.received < 2 && ifm_now_ms() < deadline)
        ifm_loop_once(l, 100);
    assert_int_equal(cli.received, 2);
    connect_port(l, "127.0.0.1", port, NULL, &late);
    run_until(l, &late.connected);
    assert_int_equal(late.connect_status, -ECONNREFUSED);
    ifm_tcp_close(cli.s);
    run_until(l, &srv.closed);
    assert_int_equal(srv.close_status, 0);
    ifm_loop_free(l);
}

static void test_backoff(void **state)
{
    ifm_backoff b;
    ifm_backoff_opts o = { .base_ms = 100, .max_ms = 1000, .seed = 42 };
    ifm_backoff_init(&b, &o);
    uint64_t caps[] = { 100, 200, 400, 800, 1000, 1000, 1000 };
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
        uint64_t d = ifm_backoff_next(&b);
        assert_true(d >= caps[i] / 2 && d <= caps[i]);
    }
    ifm_backoff_reset(&b);
    uint64_t d = ifm_backoff_next(&b);
    assert_true(d >= 50 && d <= 100);

    /* Jitter: two peers with different seeds do not retry in lock-step. */
    ifm_backoff x, y;
    ifm_backoff_init(&x, &(ifm_backoff_opts){ .base_ms = 1000, .max_ms = 100000, .seed = 1 });
    ifm_backoff_init(&y, &(ifm_backoff_opts){ .base_ms = 1000, .max_ms = 100000, .seed = 2 });
    int same = 0;
    for (int i = 0; i < 6; i++)
        same += ifm_backoff_next(&x) == ifm_backoff_next(&y);
    assert_true(same < 6);
    /* Many attempts never overflow past the cap. */
    for (int i = 0; i < 200; i++)
        assert_true(ifm_backoff_next(&x) <= 100000);
}

/* ---- redial ---- */

typedef struct {
    ifm_loop *loop;
    ifm_tcp_redial *r;
    int fails, connects, closes;
    uint64_t fail_at[16], delay[16], connect_at[16];
    int last_status;
} dialer;

static void d_connect(ifm_tcp *s, int status, void *arg)
{
    dialer *d = arg;
    if (status == 0) {
        d->connect_at[d->connects < 16 ? d->connects : 15] = ifm_now_ms();
        d->connects++;
        return;
    }
    d->last_status = status;
    assert_int_equal(ifm_tcp_redial_failures(d->r), d->fails + 1);
    if (d->fails < 16) {
        d->fail_at[d->fails] = ifm_now_ms();
        d->delay[d->fails] = ifm_tcp_redial_delay(d->r);
    }
    d->fails++;
}

static void d_close(ifm_tcp *s, int status, void *arg)
{
    dialer *d = arg;
    d->closes++;
    d->delay[15] = ifm_tcp_redial_delay(d->r);
}

static void test_redial_backoff(void **state)
{
    ifm_loop *l = ifm_loop_new();
    int port = free_port();
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    dialer d = { .loop = l };
    ifm_tcp_cbs cbs = { .on_connect = d_connect, .on_close = d_close };
    ifm_backoff_opts bo = { .base_ms = 20, .max_ms = 160, .seed = 7 };
    assert_int_equal(ifm_tcp_redial_start(l, "127.0.0.1", p, NULL, &bo, &cbs, &d, &d.r, NULL, 0), 0);
    uint64_t deadline = ifm_now_ms() + DEADLINE_MS;
    while (d.fails < 6 && ifm_now_ms() < deadline)
        ifm_loop_once(l, 100);
    assert_int_equal(d.fails, 6);
    assert_int_equal(d.last_status, -ECONNREFUSED);
    assert_null(ifm_tcp_redial_stream(d.r));
    uint64_t caps[] = { 20, 40, 80, 160, 160, 160 };
    for (int i = 0; i < 6; i++) {
        assert_true(d.delay[i] >= caps[i] / 2 && d.delay[i] <= caps[i]);
        if (i > 0) /* the next attempt came no sooner than the delay said */
            assert_true(d.fail_at[i] - d.fail_at[i - 1] >= d.delay[i - 1]);
    }

    /* Something listens now: the next attempt connects and the back-off resets. */
    side srv = { .loop = l };
    acceptor a = { .server = &srv, .cbs = side_cbs };
    ifm_tcp_listener *lst = NULL;
    char why[128] = "";
    if (ifm_tcp_listen(l, "127.0.0.1", p, NULL, on_accept, &a, &lst, why, sizeof why) != 0)
        skip(); /* another process took the port in between: nothing to learn */
    deadline = ifm_now_ms() + DEADLINE_MS;
    while ((d.connects < 1 || a.accepted < 1) && ifm_now_ms() < deadline)
        ifm_loop_once(l, 100);
    assert_int_equal(d.connects, 1);
    assert_non_null(ifm_tcp_redial_stream(d.r));
    assert_int_equal(ifm_tcp_redial_failures(d.r), 0);

    /* The server drops it: on_close, then a quick redial (the back-off starts over). */
    ifm_tcp_close(srv.s);
    deadline = ifm_now_ms() + DEADLINE_MS;
    while ((d.connects < 2 || a.accepted < 2) && ifm_now_ms() < deadline)
        ifm_loop_once(l, 100);
    assert_int_equal(d.closes, 1);
    assert_true(d.delay[15] >= 10 && d.delay[15] <= 20);
    assert_int_equal(d.connects, 2);
    assert_true(d.connect_at[1] - d.connect_at[0] >= d.delay[15]);

    /* The caller drops the stream itself: the redialer dials again. */
    ifm_tcp_close(ifm_tcp_redial_stream(d.r));
    deadline = ifm_now_ms() + DEADLINE_MS;
    while ((d.connects < 3 || a.accepted < 3) && ifm_now_ms() < deadline)
        ifm_loop_once(l, 100);
    assert_int_equal(d.connects, 3);
    assert_int_equal(d.closes, 1);

    /* Stopping closes the third connection; the server's streams 2 and 3 end by EOF. */
    ifm_tcp_redial_stop(d.r);
    deadline = ifm_now_ms() + DEADLINE_MS;
    while (srv.closes < 2 && ifm_now_ms() < deadline)
        ifm_loop_once(l, 100);
    assert_int_equal(srv.closes, 2);
    ifm_tcp_listener_close(lst);
    assert_int_equal(ifm_timer_count(l), 0);
    ifm_loop_free(l);
}

static void test_split_hostport(void **state)
{
    char h[64], p[8];
    assert_int_equal(ifm_tcp_split_hostport("127.0.0.1:9100", h, sizeof h, p, sizeof p), 0);
    assert_string_equal(h, "127.0.0.1");
    assert_string_equal(p, "9100");
    assert_int_equal(ifm_tcp_split_hostport("[::1]:80", h, sizeof h, p, sizeof p), 0);
    assert_string_equal(h, "::1");
    assert_string_equal(p, "80");
    assert_int_equal(ifm_tcp_split_hostport(":0", h, sizeof h, p, sizeof p), 0);
    assert_string_equal(h, "");
    assert_string_equal(p, "0");
    assert_int_equal(ifm_tcp_split_hostport("host.example:65535", h, sizeof h, p, sizeof p), 0);
    const char *bad[] = { "", "host", "host:", "::1:80", "[::1]80", "h:65536", "h:12a", "h:-1" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(ifm_tcp_split_hostport(bad[i], h, sizeof h, p, sizeof p), -EINVAL);
    char tiny[4];
    assert_int_equal(ifm_tcp_split_hostport("longhost:1", tiny, sizeof tiny, p, sizeof p), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_accept_exchange),
        cmocka_unit_test(test_large_transfer_backpressure),
        cmocka_unit_test(test_peer_close_mid_write),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_listener_close_in_callback),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_redial_backoff),
        cmocka_unit_test(test_split_hostport),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
