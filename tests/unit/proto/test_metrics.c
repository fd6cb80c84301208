/* The metrics registry against golden Prometheus text, its refusals, the HTTP
 * decoder's answers, and the responder over a real loopback socket.
 * `test_metrics --dump` prints the golden registry's text (for promtool). */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "icefarm/metrics.h"
#include "icefarm/metrics_http.h"
#include "icefarm/tcp.h"

static const char *const L_VERB[] = { "verb", NULL };
static const char *const L_STATE_KIND[] = { "state", "kind", NULL };

typedef struct {
    int calls;
    ifm_metric *boards;
} collect_arg;

static void collect(ifm_metrics *r, void *arg)
{
    collect_arg *c = arg;
    c->calls++;
    ifm_metric_reset(c->boards);
    ifm_series_set(ifm_metric_at(c->boards, "ready", "pulsecount"), 3);
    ifm_series_set(ifm_metric_at(c->boards, "flashing", "variance"), 1);
}

static ifm_metrics *golden_registry(collect_arg *ca)
{
    ifm_metrics *r = ifm_metrics_new();
    ifm_metric *grants = ifm_metrics_counter(r, "icefarm_grants_total", "Boards granted.", NULL);
    ifm_metric *req = ifm_metrics_counter(r, "icefarm_requests_total", "Requests by verb.", L_VERB);
    ifm_metric *temp = ifm_metrics_gauge(r, "icefarm_temp", "A gauge with \\ and\na newline.", NULL);
    ca->boards = ifm_metrics_gauge(r, "icefarm_boards", "Boards by state and kind.", L_STATE_KIND);
    const double b[] = { 0.001, 0.01, 0.1 };
    ifm_metric *lat = ifm_metrics_histogram(r, "icefarm_latency_seconds", "Latency.", L_VERB, b, 3);
    ifm_metric *empty = ifm_metrics_counter(r, "icefarm_never_total", "No series yet.", L_VERB);
    assert_non_null(grants);
    assert_non_null(req);
    assert_non_null(temp);
    assert_non_null(lat);
    assert_non_null(empty);
    ifm_series_add(ifm_metric_at(grants), 2);
    ifm_series_add(ifm_metric_at(grants), 1);
    ifm_series_add(ifm_metric_at(req, "reserve"), 5);
    ifm_series_add(ifm_metric_at(req, "a\"b\\c\nd"), 1);
    ifm_series_set(ifm_metric_at(temp), 0.1);
    ifm_series_set(ifm_metric_at(ca->boards, "broken", "pulsecount"), 7); /* reset by collect */
    ifm_series *rs = ifm_metric_at(lat, "reserve");
    ifm_series_observe(rs, 0.0005);
    ifm_series_observe(rs, 0.001); /* on a bound: counted in le="0.001" */
    ifm_series_observe(rs, 0.05);
    ifm_series_observe(rs, 2.5);
    ifm_series_observe(ifm_metric_at(lat, "end"), 0.002);
    assert_int_equal(ifm_metrics_on_collect(r, collect, ca), 0);
    return r;
}

static const char golden[] = "# HELP icefarm_grants_total Boards granted.\n"
                             "# TYPE icefarm_grants_total counter\n"
                             "icefarm_grants_total 3\n"
                             "# HELP icefarm_requests_total Requests by verb.\n"
                             "# TYPE icefarm_requests_total counter\n"
                             "icefarm_requests_total{verb=\"reserve\"} 5\n"
                             "icefarm_requests_total{verb=\"a\\\"b\\\\c\\nd\"} 1\n"
                             "# HELP icefarm_temp A gauge with \\\\ and\\na newline.\n"
                             "# TYPE icefarm_temp gauge\n"
                             "icefarm_temp 0.1\n"
                             "# HELP icefarm_boards Boards by state and kind.\n"
                             "# TYPE icefarm_boards gauge\n"
                             "icefarm_boards{state=\"broken\",kind=\"pulsecount\"} 0\n"
                             "icefarm_boards{state=\"ready\",kind=\"pulsecount\"} 3\n"
                             "icefarm_boards{state=\"flashing\",kind=\"variance\"} 1\n"
                             "# HELP icefarm_latency_seconds Latency.\n"
                             "# TYPE icefarm_latency_seconds histogram\n"
                             "icefarm_latency_seconds_bucket{verb=\"reserve\",le=\"0.001\"} 2\n"
                             "icefarm_latency_seconds_bucket{verb=\"reserve\",le=\"0.01\"} 2\n"
                             "icefarm_latency_seconds_bucket{verb=\"reserve\",le=\"0.1\"} 3\n"
                             "icefarm_latency_seconds_bucket{verb=\"reserve\",le=\"+Inf\"} 4\n"
                             "icefarm_latency_seconds_sum{verb=\"reserve\"} 2.5515\n"
                             "icefarm_latency_seconds_count{verb=\"reserve\"} 4\n"
                             "icefarm_latency_seconds_bucket{verb=\"end\",le=\"0.001\"} 0\n"
                             "icefarm_latency_seconds_bucket{verb=\"end\",le=\"0.01\"} 1\n"
                             "icefarm_latency_seconds_bucket{verb=\"end\",le=\"0.1\"} 1\n"
                             "icefarm_latency_seconds_bucket{verb=\"end\",le=\"+Inf\"} 1\n"
                             "icefarm_latency_seconds_sum{verb=\"end\"} 0.002\n"
                             "icefarm_latency_seconds_count{verb=\"end\"} 1\n"
                             "# HELP icefarm_never_total No series yet.\n"
                             "# TYPE icefarm_never_total counter\n";

static void test_golden(void **state)
{
    collect_arg ca = { 0 };
    ifm_metrics *r = golden_registry(&ca);
    size_t len = 0;
    char *text = ifm_metrics_render(r, &len);
    assert_non_null(text);
    assert_int_equal(ca.calls, 1);
    assert_string_equal(text, golden);
    assert_int_equal(len, strlen(golden));
    free(text);
    /* Rendering again gives the same text (collect resets, then sets). */
    text = ifm_metrics_render(r, NULL);
    assert_string_equal(text, golden);
    assert_int_equal(ca.calls, 2);
    free(text);
    ifm_metrics_free(r);
}

static void test_numbers(void **state)
{
    ifm_metrics *r = ifm_metrics_new();
    ifm_metric *g = ifm_metrics_gauge(r, "g", "g", (const char *const[]){ "k", NULL });
    ifm_series_set(ifm_metric_at(g, "a"), 1e21);
    ifm_series_set(ifm_metric_at(g, "b"), -3);
    ifm_series_set(ifm_metric_at(g, "c"), INFINITY);
    ifm_series_set(ifm_metric_at(g, "d"), NAN);
    ifm_series_set(ifm_metric_at(g, "e"), 123456789.125);
    ifm_series_set(ifm_metric_at(g, "f"), 1.0 / 3);
    char *text = ifm_metrics_render(r, NULL);
    assert_non_null(strstr(text, "g{k=\"a\"} 1e+21\n"));
    assert_non_null(strstr(text, "g{k=\"b\"} -3\n"));
    assert_non_null(strstr(text, "g{k=\"c\"} +Inf\n"));
    assert_non_null(strstr(text, "g{k=\"d\"} NaN\n"));
    assert_non_null(strstr(text, "g{k=\"e\"} 123456789.125\n"));
    assert_non_null(strstr(text, "g{k=\"f\"} 0.3333333333333333\n"));
    free(text);
    ifm_metrics_free(r);
}

static void collect_nothing(ifm_metrics *r, void *arg)
{
}

static void test_refusals(void **state)
{
    ifm_metrics *r = ifm_metrics_new();
    const double b[] = { 1, 2 }, unsorted[] = { 2, 1 }, inf[] = { 1, INFINITY };
    assert_non_null(ifm_metrics_counter(r, "ok_total", "x", NULL));
    assert_null(ifm_metrics_counter(r, "ok_total", "duplicate", NULL));
    assert_null(ifm_metrics_gauge(r, "", "x", NULL));
    assert_null(ifm_metrics_gauge(r, "9lives", "x", NULL));
    assert_null(ifm_metrics_gauge(r, "has-dash", "x", NULL));
    assert_null(ifm_metrics_gauge(r, "x", NULL, NULL));
    assert_null(ifm_metrics_gauge(r, "l1", "x", (const char *const[]){ "a:b", NULL }));
    assert_null(ifm_metrics_gauge(r, "l2", "x", (const char *const[]){ "__name", NULL }));
    assert_null(ifm_metrics_gauge(r, "l3", "x", (const char *const[]){ "a", "a", NULL }));
    assert_null(ifm_metrics_gauge(r, "l4", "x", (const char *const[]){ "a", "b", "c", "d", "e", NULL }));
    assert_non_null(ifm_metrics_gauge(r, "l5", "x", (const char *const[]){ "a", "b", "c", "d", NULL }));
    assert_non_null(ifm_metrics_gauge(r, "ns:sub", "colons are fine in names", NULL));
    assert_null(ifm_metrics_histogram(r, "h1", "x", (const char *const[]){ "le", NULL }, b, 2));
    assert_null(ifm_metrics_histogram(r, "h2", "x", NULL, unsorted, 2));
    assert_null(ifm_metrics_histogram(r, "h3", "x", NULL, inf, 2));
    assert_null(ifm_metrics_histogram(r, "h4", "x", NULL, b, 0));
    ifm_metric *h = ifm_metrics_histogram(r, "h5", "x", NULL, b, 2);
    assert_non_null(h);

    /* Kind-mismatched calls and negative counter increments change nothing. */
    ifm_metric *c = ifm_metrics_counter(r, "c_total", "x", L_VERB);
    ifm_series *cs = ifm_metric_at(c, "v");
    ifm_series_add(cs, -1);
    ifm_series_set(cs, 9);
    ifm_series_observe(cs, 1);
    ifm_series_add(cs, 2);
    assert_true(ifm_series_value(cs) == 2);
    ifm_series *hs = ifm_metric_at(h);
    ifm_series_add(hs, 5);
    ifm_series_observe(hs, NAN);
    ifm_series_observe(hs, 1.5);
    assert_true(ifm_series_value(hs) == 1 && ifm_series_sum(hs) == 1.5);

    /* The series limit: label values must come from a small set. */
    char v[16];
    for (int i = 1; i < IFM_METRIC_MAX_SERIES; i++) { /* "v" is the first */
        snprintf(v, sizeof v, "v%d", i);
        assert_non_null(ifm_metric_at(c, v));
    }
    assert_null(ifm_metric_at(c, "one-too-many"));
    assert_non_null(ifm_metric_at(c, "v7")); /* existing ones still resolve */

    /* NULL families and series are no-ops. */
    ifm_series_add(ifm_metric_at(NULL), 1);
    ifm_metric_reset(NULL);
    for (int i = 0; i < 8; i++)
        assert_int_equal(ifm_metrics_on_collect(r, collect_nothing, NULL), 0);
    assert_int_equal(ifm_metrics_on_collect(r, collect_nothing, NULL), -ENOSPC);
    ifm_metrics_free(r);
}

/* ---- the HTTP decoder ---- */

static int ask(ifm_metrics *r, const char *head, char **resp)
{
    size_t len = 0;
    int code = ifm_metrics_http_answer(r, head, strlen(head), resp, &len);
    assert_non_null(*resp);
    assert_int_equal(strlen(*resp), len);
    return code;
}

static void test_answers(void **state)
{
    collect_arg ca = { 0 };
    ifm_metrics *r = golden_registry(&ca);
    char *resp;
    assert_int_equal(ask(r, "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n", &resp), 200);
    assert_non_null(strstr(resp, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
    assert_non_null(strstr(resp, "Connection: close\r\n"));
    char cl[64];
    snprintf(cl, sizeof cl, "Content-Length: %zu\r\n", strlen(golden));
    assert_non_null(strstr(resp, cl));
    assert_string_equal(strstr(resp, "\r\n\r\n") + 4, golden);
    free(resp);
    assert_int_equal(ask(r, "HEAD /metrics?x=1 HTTP/1.0\n\n", &resp), 200);
    assert_string_equal(strstr(resp, "\r\n\r\n") + 4, ""); /* HEAD: no body */
    assert_non_null(strstr(resp, cl));
    free(resp);
    assert_int_equal(ask(r, "GET / HTTP/1.1\r\n\r\n", &resp), 404);
    free(resp);
    assert_int_equal(ask(r, "GET /metricsx HTTP/1.1\r\n\r\n", &resp), 404);
    free(resp);
    assert_int_equal(ask(r, "POST /metrics HTTP/1.1\r\n\r\n", &resp), 405);
    assert_non_null(strstr(resp, "Allow: GET, HEAD\r\n"));
    free(resp);
    const char *bad[] = {
        "",
        "GET /metrics\r\n\r\n",
        "GET  HTTP/1.1\r\n\r\n",
        " /metrics HTTP/1.1\r\n\r\n",
        "GET /metrics HTTP/2.0\r\n\r\n",
        "GET /metrics HTTP/1.1x\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
        "GET /metrics HTTP/1.1\r\n: empty name\r\n\r\n",
        "GET /m\x01trics HTTP/1.1\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nX: \xc3\xa9\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(ask(r, bad[i], &resp), 400);
        assert_non_null(strstr(resp, "bad request: "));
        free(resp);
    }
    ifm_metrics_free(r);
}

/* ---- the responder over loopback ---- */

typedef struct {
    ifm_loop *loop;
    ifm_tcp *s;
    char buf[65536];
    size_t n;
    int status;
    bool closed;
} client;

static void c_data(ifm_tcp *s, const uint8_t *p, size_t len, void *arg)
{
    client *c = arg;
    size_t keep = len < sizeof c->buf - 1 - c->n ? len : sizeof c->buf - 1 - c->n;
    memcpy(c->buf + c->n, p, keep);
    c->n += keep;
    c->buf[c->n] = '\0';
}

static void c_close(ifm_tcp *s, int status, void *arg)
{
    client *c = arg;
    c->closed = true;
    c->status = status;
}

static void c_connect(ifm_tcp *s, int status, void *arg)
{
    if (status != 0)
        c_close(s, status, arg);
}

static void request(ifm_loop *l, int port, const void *req, size_t len, client *c)
{
    static const ifm_tcp_cbs cbs = { .on_connect = c_connect, .on_data = c_data, .on_close = c_close };
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    memset(c, 0, sizeof *c);
    assert_int_equal(ifm_tcp_connect(l, "127.0.0.1", p, NULL, &cbs, c, &c->s, NULL, 0), 0);
    assert_true(ifm_tcp_write(c->s, req, len) >= 0);
    ifm_tcp_end(c->s); /* one request: the server sees EOF after it */
    uint64_t deadline = ifm_now_ms() + 30000;
    while (!c->closed) {
        if (ifm_now_ms() > deadline)
            fail_msg("no complete answer within 30 s");
        ifm_loop_once(l, 100);
    }
}

static void test_server(void **state)
{
    collect_arg ca = { 0 };
    ifm_metrics *r = golden_registry(&ca);
    ifm_loop *l = ifm_loop_new();
    ifm_metrics_server *srv = NULL;
    char why[128] = "";
    assert_int_equal(ifm_metrics_serve(l, r, "nonsense", &srv, why, sizeof why), -EINVAL);
    assert_non_null(strstr(why, "HOST:PORT"));
    assert_int_equal(ifm_metrics_serve(l, r, "127.0.0.1:0", &srv, why, sizeof why), 0);
    int port = ifm_metrics_server_port(srv);
    client c;

    const char get[] = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    request(l, port, get, sizeof get - 1, &c);
    assert_int_equal(c.status, 0);
    assert_true(strncmp(c.buf, "HTTP/1.1 200 OK\r\n", 17) == 0);
    assert_string_equal(strstr(c.buf, "\r\n\r\n") + 4, golden);

    const char nf[] = "GET /favicon.ico HTTP/1.1\r\n\r\n";
    request(l, port, nf, sizeof nf - 1, &c);
    assert_true(strncmp(c.buf, "HTTP/1.1 404 ", 13) == 0);

    /* A head sent in pieces, and with bare LFs. */
    const char piece[] = "GET /metrics HTTP/1.0\nUser-Agent: t\n\n";
    request(l, port, piece, 5, &c); /* 5 bytes, then EOF: answered as it stands (400) */
    assert_true(strncmp(c.buf, "HTTP/1.1 400 ", 13) == 0);
    request(l, port, piece, sizeof piece - 1, &c);
    assert_true(strncmp(c.buf, "HTTP/1.1 200 ", 13) == 0);

    /* An endless head: 431, and the connection ends. */
    char *big = malloc(20000);
    memcpy(big, "GET /metrics HTTP/1.1\r\nX: ", 26);
    memset(big + 26, 'a', 20000 - 26);
    request(l, port, big, 20000, &c);
    free(big);
    assert_true(strncmp(c.buf, "HTTP/1.1 431 ", 13) == 0);

    ifm_metrics_server_free(srv);
    while (ifm_timer_count(l))
        ifm_loop_once(l, 100);
    ifm_loop_free(l);
    ifm_metrics_free(r);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--dump") == 0) {
        fputs(golden, stdout);
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),  cmocka_unit_test(test_numbers), cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_answers), cmocka_unit_test(test_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
