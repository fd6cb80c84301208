/* libicefarm's public API against a real Mosquitto (broker_fixture.h) and a real
 * peer playing control in a child process: blocking and asynchronous calls,
 * per-request timeouts, cancellation, calls from inside callbacks, closing with
 * requests pending, driving the handle from an outside poll loop, icefarm_stop,
 * the log callback, events through the accessors (and a request sent from
 * inside an event handler). Every wait has a deadline;
 * nothing asserts that something was fast.
 *
 * The peer answers icefarm/ctl/req/<verb>:
 *   status      ok, serials ["A", "B"]          available  ok, amount 3
 *   end         404 "unknown serial"            reboot     ok, after 700 ms
 *   devices     never answers                   delete     a reply that is not msgpack
 *   extend_all  ok, and first a "results" event to the caller with two results */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "broker_fixture.h"
#include "icefarm/icefarm.h"
#include "icefarm/mqtt.h"
#include "icefarm/msg.h"

#define DEADLINE_MS 30000

static ifm_test_broker g_broker;
static pid_t g_peer;
static char g_url[64];

/* ---- the peer (child process) ---- */

typedef struct {
    ifm_mqtt *m;
    ifm_loop *loop;
    ifm_reply_to *late;
} peer;

static void peer_late(ifm_loop *loop, void *arg)
{
    peer *p = arg;
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_reply_begin(&e, 200, NULL, 0);
    ifm_mqtt_reply_to(p->m, p->late, ifm_enc_data(&e), ifm_enc_size(&e));
    ifm_enc_free(&e);
    ifm_reply_to_free(p->late);
    p->late = NULL;
}

static void peer_req(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    peer *p = arg;
    char verb[32];
    if (ifm_topic_level(msg->topic, 3, verb, sizeof verb))
        return;
    ifm_enc e;
    ifm_enc_init(&e);
    if (!strcmp(verb, "status")) {
        ifm_reply_begin(&e, 200, NULL, 1);
        ifm_enc_key(&e, "serials");
        ifm_enc_array(&e, 2);
        ifm_enc_str(&e, "A");
        ifm_enc_str(&e, "B");
    } else if (!strcmp(verb, "available")) {
        ifm_reply_begin(&e, 200, NULL, 1);
        ifm_enc_kuint(&e, "amount", 3);
    } else if (!strcmp(verb, "end")) {
        ifm_reply_begin(&e, 404, "unknown serial", 0);
    } else if (!strcmp(verb, "reboot")) {
        p->late = ifm_reply_to_save(msg);
        ifm_timer_add(p->loop, 700, peer_late, p);
        ifm_enc_free(&e);
        return;
    } else if (!strcmp(verb, "delete")) {
        ifm_enc_str(&e, "not a map");
    } else if (!strcmp(verb, "extend_all")) {
        char client[IFM_NAME_MAX], topic[IFM_TOPIC_MAX];
        ifm_result r[2] = { { .id = "one", .type = IFM_VALUE_PULSES, .pulses = 1234 },
                            { .id = "two", .type = IFM_VALUE_FAILED, .error = "hung" } };
        ifm_enc ev;
        ifm_enc_init(&ev);
        ifm_event_results_encode(&ev, "BOARD1", "batch-7", r, 2);
        if (!ifm_mqtt_msg_client(msg, client, sizeof client) && !ifm_topic_client(topic, sizeof topic, client, "event"))
            ifm_mqtt_publish(m, topic, ifm_enc_data(&ev), ifm_enc_size(&ev), 1, false);
        ifm_enc_free(&ev);
        ifm_reply_begin(&e, 200, NULL, 0);
    } else {
        ifm_enc_free(&e); /* devices: silence */
        return;
    }
    ifm_mqtt_reply(m, msg, ifm_enc_data(&e), ifm_enc_size(&e));
    ifm_enc_free(&e);
}

static void run_peer(int port, int ready_fd)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    peer p = { 0 };
    p.loop = ifm_loop_new();
    ifm_mqtt_opts o = { .host = "127.0.0.1", .port = port, .name = "fake-ctl" };
    p.m = ifm_mqtt_new(p.loop, &o, NULL, NULL);
    if (!p.m || ifm_mqtt_subscribe(p.m, "icefarm/ctl/req/+", 1, peer_req, &p) || ifm_mqtt_start(p.m) ||
        ifm_mqtt_wait_connected(p.m, DEADLINE_MS))
        _exit(1);
    /* Subscribed once the SUBACK is in: a short settle, then say so. */
    uint64_t t = ifm_now_ms() + 300;
    while (ifm_now_ms() < t)
        ifm_loop_once(p.loop, 50);
    if (write(ready_fd, "r", 1) != 1)
        _exit(1);
    close(ready_fd);
    ifm_loop_run(p.loop);
    _exit(0);
}

static int group_setup(void **state)
{
    signal(SIGPIPE, SIG_IGN);
    if (ifm_test_broker_start(&g_broker, NULL))
        return -1;
    snprintf(g_url, sizeof g_url, "mqtt://127.0.0.1:%d", g_broker.port);
    int fds[2];
    if (pipe(fds))
        return -1;
    g_peer = fork();
    if (g_peer == 0) {
        close(fds[0]);
        run_peer(g_broker.port, fds[1]);
    }
    close(fds[1]);
    struct pollfd pf = { .fd = fds[0], .events = POLLIN };
    char c;
    int ok = poll(&pf, 1, DEADLINE_MS) == 1 && read(fds[0], &c, 1) == 1;
    close(fds[0]);
    return ok ? 0 : -1;
}

static int group_teardown(void **state)
{
    if (g_peer > 0) {
        kill(g_peer, SIGKILL);
        waitpid(g_peer, NULL, 0);
    }
    ifm_test_broker_stop(&g_broker);
    return 0;
}

/* ---- helpers ---- */

typedef struct {
    char lines[16][256];
    int n;
} logbook;

static void log_to_book(icefarm_log_level level, const char *msg, void *arg)
{
    logbook *b = arg;
    if (b->n < 16)
        snprintf(b->lines[b->n++], sizeof b->lines[0], "%d %s", (int)level, msg);
}

static bool logged(const logbook *b, const char *needle)
{
    for (int i = 0; i < b->n; i++)
        if (strstr(b->lines[i], needle))
            return true;
    return false;
}

static icefarm *connect_with(logbook *book)
{
    icefarm_opts o = { .broker = g_url, .name = "tester", .timeout_ms = 10000 };
    if (book) {
        o.log = log_to_book;
        o.log_arg = book;
    }
    icefarm *f = NULL;
    char why[256];
    int rc = icefarm_connect(&o, &f, why, sizeof why);
    if (rc)
        fail_msg("connect: %s (%s)", why, icefarm_strerror(rc));
    return f;
}

typedef struct {
    int calls;
    int status;
    bool ok;
    unsigned code;
    icefarm *f;
    int nested_call_rc, nested_run_rc, nested_async_rc;
    bool stop_from_cb;
} outcome;

static void record(icefarm *f, int status, const icefarm_reply *r, void *arg)
{
    outcome *o = arg;
    o->calls++;
    o->status = status;
    if (r) {
        o->ok = icefarm_reply_ok(r);
        o->code = icefarm_reply_code(r);
    }
    if (o->stop_from_cb)
        icefarm_stop(f);
}

static bool called(void *arg)
{
    return ((outcome *)arg)->calls > 0;
}

static void run_for(icefarm *f, uint64_t ms)
{
    assert_int_equal(icefarm_run_until(f, NULL, NULL, ms), -ETIMEDOUT);
}

/* ---- tests ---- */

static void test_blocking_call_and_accessors(void **state)
{
    icefarm *f = connect_with(NULL);
    char why[256];
    icefarm_reply *r = NULL;
    icefarm_req status = { .verb = "status" };
    assert_int_equal(icefarm_call(f, &status, &r, why, sizeof why), 0);
    assert_true(icefarm_reply_ok(r));
    assert_int_equal(icefarm_reply_code(r), 200);
    assert_int_equal(icefarm_reply_errno(r), 0);
    assert_string_equal(icefarm_reply_error(r), "");
    assert_int_equal(icefarm_reply_nserials(r), 2);
    assert_string_equal(icefarm_reply_serial(r, 0), "A");
    assert_string_equal(icefarm_reply_serial(r, 1), "B");
    assert_null(icefarm_reply_serial(r, 2));
    size_t len = 0;
    assert_non_null(icefarm_reply_data(r, &len));
    assert_true(len > 0);
    icefarm_reply *copy = icefarm_reply_dup(r);
    icefarm_reply_free(r);
    assert_string_equal(icefarm_reply_serial(copy, 1), "B"); /* the copy owns its data */
    icefarm_reply_free(copy);

    icefarm_req avail = { .verb = "available", .kind = "pulsecount" };
    assert_int_equal(icefarm_call(f, &avail, &r, why, sizeof why), 0);
    uint64_t amount = 0;
    assert_int_equal(icefarm_reply_uint(r, "amount", &amount), 0);
    assert_int_equal(amount, 3);
    assert_int_equal(icefarm_reply_uint(r, "nope", &amount), -ENOENT);
    icefarm_reply_free(r);

    const char *one[] = { "X" };
    icefarm_req end = { .verb = "end", .serials = one, .nserials = 1 };
    assert_int_equal(icefarm_call(f, &end, &r, why, sizeof why), 0);
    assert_false(icefarm_reply_ok(r));
    assert_int_equal(icefarm_reply_code(r), 404);
    assert_int_equal(icefarm_reply_errno(r), -ENOENT);
    assert_string_equal(icefarm_reply_error(r), "unknown serial");
    icefarm_reply_free(r);

    icefarm_req bad = { .verb = "frobnicate" };
    assert_int_equal(icefarm_call(f, &bad, &r, why, sizeof why), -EINVAL);
    assert_null(r);
    assert_non_null(strstr(why, "frobnicate"));
    icefarm_close(f);
}

static void test_async_reply_comes_from_the_loop(void **state)
{
    icefarm *f = connect_with(NULL);
    outcome o = { 0 };
    icefarm_req req = { .verb = "status" };
    uint64_t id = 0;
    assert_int_equal(icefarm_call_async(f, &req, 0, record, &o, &id, NULL, 0), 0);
    assert_true(id != 0);
    assert_int_equal(o.calls, 0); /* never from inside the call */
    assert_int_equal(icefarm_run_until(f, called, &o, DEADLINE_MS), 0);
    assert_int_equal(o.status, 0);
    assert_true(o.ok);
    run_for(f, 300);
    assert_int_equal(o.calls, 1);
    assert_int_equal(icefarm_cancel(f, id), -ENOENT); /* its callback already ran */
    icefarm_close(f);
}

static void test_async_timeout_is_reported(void **state)
{
    icefarm *f = connect_with(NULL);
    outcome o = { 0 };
    icefarm_req req = { .verb = "devices" }; /* the peer never answers */
    assert_int_equal(icefarm_call_async(f, &req, 300, record, &o, NULL, NULL, 0), 0);
    assert_int_equal(icefarm_run_until(f, called, &o, DEADLINE_MS), 0);
    assert_int_equal(o.status, -ETIMEDOUT);
    run_for(f, 200);
    assert_int_equal(o.calls, 1);
    icefarm_close(f);
}

static void test_cancel(void **state)
{
    icefarm *f = connect_with(NULL);
    outcome o = { 0 };
    icefarm_req req = { .verb = "reboot", .serials = (const char *const[]){ "A" }, .nserials = 1 };
    uint64_t id;
    assert_int_equal(icefarm_call_async(f, &req, 5000, record, &o, &id, NULL, 0), 0);
    assert_int_equal(icefarm_cancel(f, id), 0);
    assert_int_equal(o.calls, 1); /* before icefarm_cancel returned */
    assert_int_equal(o.status, -ECANCELED);
    assert_int_equal(icefarm_cancel(f, id), -ENOENT);
    run_for(f, 1500); /* the peer's late answer (700 ms) is dropped */
    assert_int_equal(o.calls, 1);
    icefarm_close(f);
}

static void nested(icefarm *f, int status, const icefarm_reply *r, void *arg)
{
    outcome *o = arg;
    icefarm_reply *rr = NULL;
    icefarm_req req = { .verb = "available" };
    o->nested_call_rc = icefarm_call(f, &req, &rr, NULL, 0);
    o->nested_run_rc = icefarm_run_until(f, NULL, NULL, 10);
    o->nested_async_rc = icefarm_call_async(f, &req, 0, record, o, NULL, NULL, 0);
}

static void test_calls_inside_callbacks(void **state)
{
    icefarm *f = connect_with(NULL);
    outcome o = { 0 };
    icefarm_req req = { .verb = "status" };
    assert_int_equal(icefarm_call_async(f, &req, 0, nested, &o, NULL, NULL, 0), 0);
    assert_int_equal(icefarm_run_until(f, called, &o, DEADLINE_MS), 0); /* record() ran for the nested call */
    assert_int_equal(o.nested_call_rc, -EDEADLK);
    assert_int_equal(o.nested_run_rc, -EDEADLK);
    assert_int_equal(o.nested_async_rc, 0);
    assert_int_equal(o.status, 0);
    assert_true(o.ok);
    icefarm_close(f);
}

static void test_close_cancels_pending(void **state)
{
    icefarm *f = connect_with(NULL);
    outcome a = { 0 }, b = { 0 };
    icefarm_req slow = { .verb = "reboot", .serials = (const char *const[]){ "A" }, .nserials = 1 };
    icefarm_req never = { .verb = "devices" };
    assert_int_equal(icefarm_call_async(f, &slow, 5000, record, &a, NULL, NULL, 0), 0);
    assert_int_equal(icefarm_call_async(f, &never, 5000, record, &b, NULL, NULL, 0), 0);
    icefarm_close(f);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.status, -ECANCELED);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.status, -ECANCELED);
}

static void test_external_poll_loop(void **state)
{
    icefarm *f = connect_with(NULL);
    int fd = icefarm_fd(f);
    assert_true(fd >= 0);
    assert_int_equal(icefarm_fd(f), fd); /* stable */
    outcome o = { 0 };
    icefarm_req req = { .verb = "status" };
    assert_int_equal(icefarm_call_async(f, &req, 0, record, &o, NULL, NULL, 0), 0);
    uint64_t deadline = ifm_now_ms() + DEADLINE_MS;
    int rounds = 0;
    while (!o.calls && ifm_now_ms() < deadline) {
        int t = icefarm_timeout(f);
        assert_true(t >= -1);
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        poll(&pf, 1, t < 0 || t > 1000 ? 1000 : t); /* the outer loop's own wait */
        assert_int_equal(icefarm_run_once(f, 0), 0);
        rounds++;
    }
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.status, 0);
    assert_true(rounds >= 1);
    icefarm_close(f);
}

static void test_stop_ends_a_blocking_call(void **state)
{
    icefarm *f = connect_with(NULL);
    outcome o = { .stop_from_cb = true };
    icefarm_req status = { .verb = "status" }, never = { .verb = "devices" };
    assert_int_equal(icefarm_call_async(f, &status, 0, record, &o, NULL, NULL, 0), 0);
    icefarm_reply *r = NULL;
    char why[256];
    /* status's callback stops the loop while this call waits for an answer
     * that never comes (its timeout is the handle's 10 s). */
    assert_int_equal(icefarm_call(f, &never, &r, why, sizeof why), -ECANCELED);
    assert_null(r);
    assert_int_equal(o.calls, 1);
    /* One stop ends one wait: the next call works. */
    assert_int_equal(icefarm_call(f, &status, &r, why, sizeof why), 0);
    icefarm_reply_free(r);
    icefarm_close(f);
}

static void test_log_callback_and_malformed_reply(void **state)
{
    logbook book = { 0 };
    icefarm *f = connect_with(&book);
    assert_true(logged(&book, "connected to broker")); /* through the callback, not stderr */
    outcome o = { 0 };
    icefarm_req req = { .verb = "delete", .serials = (const char *const[]){ "A" }, .nserials = 1 };
    assert_int_equal(icefarm_call_async(f, &req, 0, record, &o, NULL, NULL, 0), 0);
    assert_int_equal(icefarm_run_until(f, called, &o, DEADLINE_MS), 0);
    assert_int_equal(o.status, -EBADMSG);
    assert_true(logged(&book, "malformed reply from control"));
    icefarm_close(f);
}

typedef struct {
    int n;
    char name[32], serial[64], batch[64];
    size_t nresults;
    icefarm_result r[2];
    int rc[3];
    outcome from_handler; /* a request sent from inside the event handler */
    int async_rc;
} seen_event;

static void on_any(icefarm *f, const icefarm_event *ev, void *arg)
{
    seen_event *s = arg;
    s->n++;
    snprintf(s->name, sizeof s->name, "%s", icefarm_event_name(ev));
    snprintf(s->serial, sizeof s->serial, "%s", icefarm_event_serial(ev));
    snprintf(s->batch, sizeof s->batch, "%s", icefarm_event_batch_id(ev));
    s->nresults = icefarm_event_nresults(ev);
    for (size_t i = 0; i < 3; i++)
        s->rc[i] = icefarm_event_result(ev, i, &s->r[i < 2 ? i : 1], NULL, 0);
    icefarm_req req = { .verb = "status" };
    s->async_rc = icefarm_call_async(f, &req, 0, record, &s->from_handler, NULL, NULL, 0);
}

static bool saw(void *arg)
{
    seen_event *s = arg;
    return s->n > 0 && s->from_handler.calls > 0;
}

static void test_events_through_accessors(void **state)
{
    icefarm *f = connect_with(NULL);
    seen_event s = { 0 };
    assert_int_equal(icefarm_on(f, "results", on_any, &s), 0);
    icefarm_req req = { .verb = "extend_all" };
    icefarm_reply *r = NULL;
    assert_int_equal(icefarm_call(f, &req, &r, NULL, 0), 0);
    icefarm_reply_free(r);
    assert_int_equal(icefarm_run_until(f, saw, &s, DEADLINE_MS), 0);
    assert_string_equal(s.name, "results");
    assert_string_equal(s.serial, "BOARD1");
    assert_string_equal(s.batch, "batch-7");
    assert_int_equal(s.nresults, 2);
    assert_int_equal(s.rc[0], 0);
    assert_int_equal(s.rc[1], 0);
    assert_int_equal(s.rc[2], -ERANGE);
    assert_string_equal(s.r[0].id, "one");
    assert_int_equal(s.r[0].type, ICEFARM_VALUE_PULSES);
    assert_int_equal(s.r[0].pulses, 1234);
    assert_string_equal(s.r[1].id, "two");
    assert_int_equal(s.r[1].type, ICEFARM_VALUE_FAILED);
    assert_string_equal(s.r[1].error, "hung");
    assert_int_equal(s.async_rc, 0); /* icefarm_call_async inside an event handler */
    assert_int_equal(s.from_handler.status, 0);
    assert_true(s.from_handler.ok);
    icefarm_off(f, on_any, &s);
    icefarm_close(f);
}

static void test_unreachable_broker(void **state)
{
    int port = ifm_test_free_port();
    char url[64], why[256];
    snprintf(url, sizeof url, "mqtt://127.0.0.1:%d", port);
    logbook book = { 0 };
    icefarm_opts o = { .broker = url, .name = "tester", .timeout_ms = 500, .log = log_to_book, .log_arg = &book };
    icefarm *f = (icefarm *)1;
    assert_int_equal(icefarm_connect(&o, &f, why, sizeof why), -ENOTCONN);
    assert_null(f);
    /* Nobody listens: refused, said at once with the cause (not "no answer"). */
    assert_non_null(strstr(why, "Connection refused"));
    o.cafile = "/nonexistent/ca.crt";
    assert_int_equal(icefarm_connect(&o, &f, why, sizeof why), -EINVAL);
    assert_non_null(strstr(why, "cannot read the CA file /nonexistent/ca.crt"));
    o.cafile = NULL;
    o.name = "bad/name";
    assert_int_equal(icefarm_connect(&o, &f, why, sizeof why), -EINVAL);
    assert_string_equal(icefarm_strerror(-ETIMEDOUT), "timed out");
    assert_non_null(icefarm_version());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blocking_call_and_accessors),
        cmocka_unit_test(test_async_reply_comes_from_the_loop),
        cmocka_unit_test(test_async_timeout_is_reported),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_calls_inside_callbacks),
        cmocka_unit_test(test_close_cancels_pending),
        cmocka_unit_test(test_external_poll_loop),
        cmocka_unit_test(test_stop_ends_a_blocking_call),
        cmocka_unit_test(test_log_callback_and_malformed_reply),
        cmocka_unit_test(test_events_through_accessors),
        cmocka_unit_test(test_unreachable_broker),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
