/* The broker plugin's policy (broker/plugin/acl.c) driven directly, without a
 * broker, so that it runs under ASan/UBSan: roles, every role's rights, leases
 * and their revocation, board ownership, request identity, and decoders fed
 * with garbage. Prints "ok - ..." per check and "N passed, M failed". */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "acl.h"
#include "icefarm/mp.h"

static int passed, failed;

static void check(bool cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(bool cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf(cond ? "ok - " : "not ok - ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    cond ? passed++ : failed++;
}

/* ---- a minimal msgpack writer for building payloads ---- */

typedef struct {
    uint8_t b[8192];
    size_t n;
} buf;

static void put(buf *w, const void *p, size_t n)
{
    if (w->n + n <= sizeof w->b) {
        memcpy(w->b + w->n, p, n);
        w->n += n;
    }
}
static void put8(buf *w, uint8_t c)
{
    put(w, &c, 1);
}
static void pmap(buf *w, uint32_t n)
{
    put8(w, (uint8_t)(0x80 | n));
}
static void parr(buf *w, uint32_t n)
{
    put8(w, (uint8_t)(0x90 | n));
}
static void pstr(buf *w, const char *s)
{
    size_t n = strlen(s);
    if (n < 32) {
        put8(w, (uint8_t)(0xa0 | n));
    } else {
        put8(w, 0xd9);
        put8(w, (uint8_t)n);
    }
    put(w, s, n);
}
static void puint(buf *w, uint64_t v)
{
    if (v < 128) {
        put8(w, (uint8_t)v);
        return;
    }
    put8(w, 0xcf);
    for (int i = 7; i >= 0; i--)
        put8(w, (uint8_t)(v >> (8 * i)));
}
static void kstr(buf *w, const char *k, const char *v)
{
    pstr(w, k);
    pstr(w, v);
}
static void kuint(buf *w, const char *k, uint64_t v)
{
    pstr(w, k);
    puint(w, v);
}

static buf lease_msg_id(const char *serial, const char *client, uint64_t until, uint64_t id)
{
    buf w = { .n = 0 };
    pmap(&w, 7);
    kuint(&w, "v", 1);
    kstr(&w, "serial", serial);
    kstr(&w, "client", client);
    kstr(&w, "kind", "pulse_count");
    kstr(&w, "worker", "w1");
    kuint(&w, "lease", id);
    kuint(&w, "until", until);
    return w;
}

static buf lease_msg(const char *serial, const char *client, uint64_t until)
{
    return lease_msg_id(serial, client, until, 42);
}

/* A board event as the worker writes it: event, then the lease tag (0: none). */
static buf event_msg(const char *serial, const char *event, uint64_t lease)
{
    buf w = { .n = 0 };
    pmap(&w, lease ? 4 : 3);
    kuint(&w, "v", 1);
    kstr(&w, "event", event);
    if (lease)
        kuint(&w, "lease", lease);
    kstr(&w, "serial", serial);
    return w;
}

static buf board_msg(const char *serial, const char *worker, const char *state)
{
    buf w = { .n = 0 };
    pmap(&w, 7);
    kuint(&w, "v", 1);
    kstr(&w, "serial", serial);
    kstr(&w, "worker", worker);
    kuint(&w, "epoch", 7);
    kstr(&w, "state", state);
    kstr(&w, "kind", "");
    kstr(&w, "reason", "");
    return w;
}

static buf birth_msg(const char *worker, bool online, const char *const *serials, size_t n)
{
    buf w = { .n = 0 };
    pmap(&w, 5);
    kuint(&w, "v", 1);
    kstr(&w, "worker", worker);
    kstr(&w, "state", online ? "online" : "offline");
    kuint(&w, "epoch", 3);
    pstr(&w, "boards");
    parr(&w, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        pmap(&w, 2);
        kstr(&w, "serial", serials[i]);
        kstr(&w, "state", "ready");
    }
    return w;
}

/* ---- fixtures ---- */

static uint64_t fake_now = 1000000;
static uint64_t now_fn(void)
{
    return fake_now;
}

static char roles_path[256];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(2);
    }
    fputs(text, f);
    fclose(f);
}

static acl_state *new_state(void)
{
    acl_opts o = { .lease_grace_ms = 5000, .now_ms = now_fn, .max_boards = 64 };
    acl_state *st = acl_new(&o);
    char err[256];
    if (!st || acl_load_roles(st, roles_path, err, sizeof err)) {
        fprintf(stderr, "cannot set up: %s\n", err);
        exit(2);
    }
    return st;
}

#define CTL_CONN ((const void *)0x10)
#define W1_CONN ((const void *)0x20)
#define W2_CONN ((const void *)0x30)

static bool pub(acl_state *st, const char *user, const void *conn, const char *topic, const buf *m, bool retain)
{
    const void *p = m ? m->b : NULL;
    size_t n = m ? m->n : 0;
    if (!acl_check(st, conn, user, ACL_WRITE, topic, p, n, retain))
        return false;
    char id[160];
    snprintf(id, sizeof id, "%s-id", user);
    acl_observe(st, user, conn, id, topic, p, n, retain);
    return true;
}

static bool rd(acl_state *st, const char *user, const char *topic)
{
    return acl_check(st, NULL, user, ACL_READ, topic, NULL, 0, false);
}
static bool sub(acl_state *st, const char *user, const char *filter)
{
    return acl_check(st, NULL, user, ACL_SUBSCRIBE, filter, NULL, 0, false);
}
static bool wr(acl_state *st, const char *user, const char *topic)
{
    return acl_check(st, NULL, user, ACL_WRITE, topic, "x", 1, false);
}

static bool rd_msg(acl_state *st, const char *user, const char *topic, const buf *m)
{
    return acl_check(st, NULL, user, ACL_READ, topic, m->b, m->n, false);
}

/* ---- tests ---- */

/* PROTOCOL.md 15.2: results measured before the end of a lease reach its holder
 * until the worker says `released` (or 2 s pass); commands stop at once; the
 * next holder never sees the old lease's events, nor the old holder the new. */
static void test_drain(void)
{
    acl_state *st = new_state();
    const char *w1b[] = { "S1" };
    buf b1 = birth_msg("w1", true, w1b, 1);
    pub(st, "w1", W1_CONN, "icefarm/worker/w1/state", &b1, true);
    buf l = lease_msg_id("S1", "alice", fake_now + 60000, 7);
    pub(st, "ctl", CTL_CONN, "icefarm/lease/S1", &l, true);
    buf r7 = event_msg("S1", "results", 7), r8 = event_msg("S1", "results", 8),
        untagged = event_msg("S1", "results", 0);
    buf rel7 = event_msg("S1", "released", 7);
    check(rd_msg(st, "alice", "icefarm/S1/event", &r7) && rd_msg(st, "alice", "icefarm/S1/event", &untagged) &&
              !rd_msg(st, "alice", "icefarm/S1/event", &r8) && !rd_msg(st, "bob", "icefarm/S1/event", &r7),
          "drain: while leased, the holder reads its lease's events (and untagged ones), not another lease's");
    pub(st, "ctl", CTL_CONN, "icefarm/lease/S1", NULL, true);
    check(!wr(st, "alice", "icefarm/S1/cmd"), "drain: the end of the lease cuts commands at once");
    check(pub(st, "w1", W1_CONN, "icefarm/S1/event", &r7, false) && rd_msg(st, "alice", "icefarm/S1/event", &r7) &&
              rd_msg(st, "http", "icefarm/S1/event", &r7) && acl_draining(st, "S1", "alice", 7),
          "drain: results tagged with the ended lease still reach its holder (and the gateway)");
    check(!rd_msg(st, "alice", "icefarm/S1/event", &untagged) && !rd_msg(st, "bob", "icefarm/S1/event", &r7) &&
              !rd_msg(st, "alice", "icefarm/S1/event", &r8),
          "drain: nothing untagged, nobody else, no other lease");
    buf l2 = lease_msg_id("S1", "bob", fake_now + 60000, 8);
    pub(st, "ctl", CTL_CONN, "icefarm/lease/S1", &l2, true);
    check(rd_msg(st, "bob", "icefarm/S1/event", &r8) && !rd_msg(st, "bob", "icefarm/S1/event", &r7) &&
              rd_msg(st, "alice", "icefarm/S1/event", &r7) && !rd_msg(st, "alice", "icefarm/S1/event", &r8),
          "drain: a new lease at once: each holder reads only its own lease's events");
    check(pub(st, "w1", W1_CONN, "icefarm/S1/event", &rel7, false) && rd_msg(st, "alice", "icefarm/S1/event", &rel7),
          "drain: the worker's `released` is delivered to the old holder");
    check(!rd_msg(st, "alice", "icefarm/S1/event", &r7) && !acl_draining(st, "S1", "alice", 7),
          "drain: after `released`, nothing more of the old lease");
    /* without `released`: the drain runs out */
    pub(st, "ctl", CTL_CONN, "icefarm/lease/S1", NULL, true);
    check(rd_msg(st, "bob", "icefarm/S1/event", &r8), "drain: expiry: in the window, yes");
    fake_now += 2001;
    check(!rd_msg(st, "bob", "icefarm/S1/event", &r8) && !acl_draining(st, "S1", "bob", 8),
          "drain: expiry: 2 s later, no more");
    buf junk = { .n = 2, .b = { 0x81, 0xa5 } };
    check(!rd_msg(st, "bob", "icefarm/S1/event", &junk), "drain: an unreadable event goes to the holder only (none)");
    acl_free(st);
}

/* PROTOCOL.md 5.1: a connection's presence, and a worker's heartbeat. */
static void test_presence(void)
{
    acl_state *st = new_state();
    buf on = { .n = 0 };
    pmap(&on, 2);
    kuint(&on, "v", 1);
    kstr(&on, "state", "online");
    check(acl_check(st, NULL, "alice", ACL_WRITE, "icefarm/client/alice/presence/ifm-1", on.b, on.n, true),
          "presence: a client publishes its own presence, retained");
    check(!acl_check(st, NULL, "alice", ACL_WRITE, "icefarm/client/alice/presence/ifm-1", on.b, on.n, false) &&
              !acl_check(st, NULL, "alice", ACL_WRITE, "icefarm/client/bob/presence/ifm-1", on.b, on.n, true) &&
              !acl_check(st, NULL, "w1", ACL_WRITE, "icefarm/client/w1/presence/ifm-1", on.b, on.n, true) &&
              !acl_check(st, NULL, "alice", ACL_WRITE, "icefarm/client/alice/presence/a/b", on.b, on.n, true),
          "presence: not unretained, not someone else's, not a worker's, not a deeper topic");
    check(acl_check(st, NULL, "http", ACL_WRITE, "icefarm/client/http/presence/gw-1", on.b, on.n, true) &&
              acl_check(st, NULL, "oscar", ACL_WRITE, "icefarm/client/oscar/presence/x", on.b, on.n, true),
          "presence: gateways and operators have one too");
    check(rd(st, "ctl", "icefarm/client/alice/presence/ifm-1") && rd(st, "alice", "icefarm/client/alice/presence/x") &&
              !rd(st, "bob", "icefarm/client/alice/presence/ifm-1"),
          "presence: control reads it, and the client its own");
    char name[128], conn[128];
    check(acl_presence_topic("icefarm/client/alice/presence/ifm-1", name, sizeof name, conn, sizeof conn) &&
              strcmp(name, "alice") == 0 && strcmp(conn, "ifm-1") == 0 &&
              !acl_presence_topic("icefarm/client/alice/event", name, sizeof name, conn, sizeof conn),
          "presence: the topic's name and connection");
    check(acl_has_presence(st, "alice") && acl_has_presence(st, "http") && !acl_has_presence(st, "w1") &&
              !acl_has_presence(st, "ctl"),
          "presence: the broker clears it for clients, gateways and operators");
    const void *conn_a = (const void *)0x77;
    acl_disconnect(st, conn_a, "ifm-1");
    check(acl_check(st, conn_a, "alice", ACL_WRITE, "icefarm/client/alice/presence/ifm-1", NULL, 0, true) &&
              !acl_check(st, conn_a, "alice", ACL_WRITE, "icefarm/client/alice/presence/ifm-1", on.b, on.n, true) &&
              !acl_check(st, conn_a, "alice", ACL_WRITE, "icefarm/client/alice/event", NULL, 0, false),
          "presence: a client's Will may clear its presence, and do nothing else");
    check(acl_check(st, NULL, "w1", ACL_WRITE, "icefarm/worker/w1/heartbeat", "x", 1, false) &&
              !acl_check(st, NULL, "w1", ACL_WRITE, "icefarm/worker/w1/heartbeat", "x", 1, true) &&
              !acl_check(st, NULL, "w1", ACL_WRITE, "icefarm/worker/w2/heartbeat", "x", 1, false) &&
              !acl_check(st, NULL, "alice", ACL_WRITE, "icefarm/worker/w1/heartbeat", "x", 1, false) &&
              rd(st, "ctl", "icefarm/worker/w1/heartbeat"),
          "heartbeat: a worker's own, not retained; control reads it");
    acl_free(st);
}

static void test_roles_file(void)
{
    char path[300], err[256];
    snprintf(path, sizeof path, "%s.bad", roles_path);
    acl_state *st = new_state();
    check(acl_role_of(st, "alice") == ROLE_CLIENT && acl_role_of(st, "ctl") == ROLE_CONTROL &&
              acl_role_of(st, "w1") == ROLE_WORKER && acl_role_of(st, "dash") == ROLE_DASHBOARD &&
              acl_role_of(st, "http") == ROLE_GATEWAY && acl_role_of(st, "oscar") == ROLE_OPERATOR &&
              strcmp(acl_role_name(ROLE_OPERATOR), "operator") == 0,
          "roles file: every role parsed");
    check(acl_role_of(st, "mallory") == ROLE_NONE && acl_role_of(st, NULL) == ROLE_NONE,
          "roles file: unknown and anonymous users have no role");
    static const char *const bad[] = {
        "alice client\nbob superuser\n",
        "alice client\nalice dashboard\n",
        "al/ice client\n",
        "alice client extra\n",
        "alice\n",
        "$sys client\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        write_file(path, bad[i]);
        err[0] = '\0';
        int rc = acl_load_roles(st, path, err, sizeof err);
        check(rc == -1 && strstr(err, ":") && acl_role_of(st, "alice") == ROLE_CLIENT,
              "roles file: bad file %zu refused (%s), old roles kept", i, err);
    }
    check(acl_load_roles(st, "/nonexistent/roles", err, sizeof err) == -1, "roles file: missing file refused");
    unlink(path);
    acl_free(st);
}

static void test_connect(void)
{
    acl_state *st = new_state();
    char why[256];
    check(acl_check_connect(st, "alice", "mosq-123", why, sizeof why) == 0, "connect: client with any id");
    check(acl_check_connect(st, "mallory", "x", why, sizeof why) == -1, "connect: user without role refused");
    check(acl_check_connect(st, NULL, "x", why, sizeof why) == 0, "connect: anonymous left to allow_anonymous");
    check(acl_check_connect(st, "w1", "wrk-w1", why, sizeof why) == 0, "connect: worker as wrk-<id>");
    check(acl_check_connect(st, "w1", "other", why, sizeof why) == -1, "connect: worker with another id refused");
    check(acl_check_connect(st, "w1", "wrk-w2", why, sizeof why) == -1, "connect: worker as another worker refused");
    check(acl_check_connect(st, "alice", "wrk-w1", why, sizeof why) == -1,
          "connect: client cannot take a worker's client id");
    check(acl_check_connect(st, "alice", "icefarm-ctl", why, sizeof why) == -1,
          "connect: client cannot take control's client id");
    check(acl_check_connect(st, "ctl", "icefarm-ctl", why, sizeof why) == 0, "connect: control as icefarm-ctl");
    const void *bob1 = (const void *)0x50, *bob2 = (const void *)0x60;
    acl_seen(st, bob1, "bob-laptop", "bob");
    check(acl_check_connect(st, "alice", "bob-laptop", why, sizeof why) == -1,
          "connect: a client id in use by another user's connection is refused (%s)", why);
    check(acl_check_connect(st, "bob", "bob-laptop", why, sizeof why) == 0, "connect: ... but not to its user");
    acl_seen(st, bob2, "bob-laptop", "bob"); /* bob reconnected before the old one timed out */
    acl_disconnect(st, bob1, "bob-laptop");
    check(acl_check_connect(st, "alice", "bob-laptop", why, sizeof why) == -1,
          "connect: the old connection ending does not free an id the new one uses");
    acl_disconnect(st, bob2, NULL);
    acl_seen(st, bob2, "bob-laptop", "bob"); /* its Will check */
    check(acl_check_connect(st, "alice", "bob-laptop", why, sizeof why) == 0,
          "connect: once bob's connections ended the id is free again");
    acl_free(st);
}

static void test_static_rights(void)
{
    acl_state *st = new_state();
    /* control */
    check(wr(st, "ctl", "icefarm/farm/available") && wr(st, "ctl", "icefarm/ctl/state") &&
              wr(st, "ctl", "icefarm/client/alice/event") && wr(st, "ctl", "icefarm/client/alice/reply") &&
              wr(st, "ctl", "icefarm/worker/w1/cmd"),
          "control publishes farm, ctl/state, client events/replies, worker commands");
    check(!wr(st, "ctl", "icefarm/S1/cmd") && !wr(st, "ctl", "icefarm/S1/event") &&
              !wr(st, "ctl", "icefarm/ctl/req/reserve") && !wr(st, "ctl", "elsewhere"),
          "control does not publish board commands/events, requests or foreign topics");
    check(!acl_check(st, NULL, "ctl", ACL_WRITE, "icefarm/lease/S1", "x", 1, false),
          "control: a non-retained lease message is refused");
    check(rd(st, "ctl", "icefarm/S1/event") && rd(st, "ctl", "icefarm/ctl/req/reserve") && sub(st, "ctl", "#"),
          "control reads everything");
    /* only control publishes control's topics */
    const char *others[] = { "alice", "w1", "dash", "http" };
    bool none = true;
    for (size_t i = 0; i < 4; i++)
        none = none && !acl_check(st, NULL, others[i], ACL_WRITE, "icefarm/lease/S1", "", 0, true) &&
            !wr(st, others[i], "icefarm/farm/available") && !wr(st, others[i], "icefarm/ctl/state") &&
            !wr(st, others[i], "icefarm/client/alice/event") && !wr(st, others[i], "icefarm/worker/w1/cmd") &&
            !wr(st, others[i], "icefarm/worker/w1/sim");
    check(none, "nobody but control publishes leases, farm, ctl/state, client events, worker commands");
    /* clients */
    check(wr(st, "alice", "icefarm/ctl/req/reserve") &&
              !acl_check(st, NULL, "alice", ACL_WRITE, "icefarm/ctl/req/reserve", "x", 1, true),
          "client publishes requests (not retained)");
    check(!wr(st, "alice", "icefarm/S1/state") && !wr(st, "alice", "icefarm/S1/event") &&
              !wr(st, "alice", "icefarm/worker/alice/state") && !wr(st, "alice", "icefarm/S1/cmd"),
          "client publishes nothing else (no lease: not even the board's cmd)");
    check(rd(st, "alice", "icefarm/client/alice/reply") && rd(st, "alice", "icefarm/client/alice/event") &&
              !rd(st, "alice", "icefarm/client/bob/event") && !rd(st, "alice", "icefarm/client/bob/reply"),
          "client reads its own client topics only");
    check(!sub(st, "bob", "icefarm/client/alice/#") && !sub(st, "bob", "icefarm/client/alice/event") &&
              sub(st, "bob", "icefarm/client/bob/#") && sub(st, "bob", "icefarm/client/+/event"),
          "client cannot subscribe to another client's topics (wildcards left to per-message reads)");
    check(rd(st, "alice", "icefarm/S1/state") && rd(st, "alice", "icefarm/lease/S1") &&
              rd(st, "alice", "icefarm/farm/available") && rd(st, "alice", "icefarm/worker/w1/state") &&
              rd(st, "alice", "icefarm/ctl/state"),
          "client reads the public state");
    check(!rd(st, "alice", "icefarm/S1/event") && !rd(st, "alice", "icefarm/S1/cmd") &&
              !rd(st, "alice", "icefarm/ctl/req/reserve") && !rd(st, "alice", "icefarm/worker/w1/cmd") &&
              !rd(st, "alice", "$SYS/broker/uptime"),
          "client reads no board events without a lease, no commands, requests or worker commands");
    /* dashboards */
    check(sub(st, "dash", "#") && sub(st, "dash", "icefarm/#") && rd(st, "dash", "icefarm/S1/state") &&
              rd(st, "dash", "icefarm/lease/S1") && rd(st, "dash", "$SYS/broker/uptime"),
          "dashboard subscribes to # and reads the public state");
    check(!rd(st, "dash", "icefarm/S1/event") && !rd(st, "dash", "icefarm/S1/cmd") &&
              !rd(st, "dash", "icefarm/client/alice/event") && !rd(st, "dash", "icefarm/ctl/req/reserve") &&
              !rd(st, "dash", "icefarm/worker/w1/cmd"),
          "dashboard reads no board events/commands, client topics, requests");
    check(!wr(st, "dash", "icefarm/ctl/req/reserve") && !wr(st, "dash", "icefarm/S1/cmd") &&
              !wr(st, "dash", "anything"),
          "dashboard publishes nothing");
    /* workers */
    check(rd(st, "w1", "icefarm/worker/w1/cmd") && rd(st, "w1", "icefarm/worker/w1/sim") &&
              !rd(st, "w1", "icefarm/worker/w2/cmd") && !rd(st, "w1", "icefarm/ctl/req/reserve"),
          "worker reads its own worker topics only");
    check(!wr(st, "w1", "icefarm/worker/w2/state") && !wr(st, "w1", "icefarm/worker/w1/cmd") &&
              !wr(st, "w1", "icefarm/ctl/req/reserve"),
          "worker publishes no other worker's topics, no commands, no requests");
    /* statistics for dashboards (PROTOCOL.md 7.6): a worker's own, retained; public */
    check(acl_check(st, NULL, "w1", ACL_WRITE, "icefarm/worker/w1/stats", "x", 1, true) &&
              !acl_check(st, NULL, "w1", ACL_WRITE, "icefarm/worker/w1/stats", "x", 1, false) &&
              !acl_check(st, NULL, "w1", ACL_WRITE, "icefarm/worker/w2/stats", "x", 1, true) &&
              !acl_check(st, NULL, "alice", ACL_WRITE, "icefarm/worker/w1/stats", "x", 1, true) &&
              !acl_check(st, NULL, "dash", ACL_WRITE, "icefarm/worker/w1/stats", "x", 1, true),
          "a worker publishes its own stats (retained), nobody else's; nobody else publishes them");
    check(rd(st, "dash", "icefarm/worker/w1/stats") && rd(st, "alice", "icefarm/worker/w1/stats") &&
              sub(st, "dash", "icefarm/worker/+/stats") && rd(st, "dash", "icefarm/farm/stats") &&
              rd(st, "ctl", "icefarm/worker/w1/stats") && wr(st, "ctl", "icefarm/farm/stats") &&
              !wr(st, "w1", "icefarm/farm/stats"),
          "worker stats and farm stats are public state; only control publishes farm stats");
    /* unknown users and odd topics */
    check(!rd(st, "mallory", "icefarm/S1/state") && !sub(st, "mallory", "#") && !rd(st, NULL, "icefarm/S1/state"),
          "users without a role get nothing");
    check(!wr(st, "alice", "icefarm/worker/cmd") && !wr(st, "alice", "icefarm//cmd") &&
              !wr(st, "alice", "icefarm/lease/cmd/x") && !rd(st, "alice", "icefarm/a/b/c/d/e/f/g/h/i/j") &&
              !rd(st, "alice", ""),
          "malformed icefarm topics are refused");
    check(sub(st, "alice", "$share/g/icefarm/+/state") && !sub(st, "alice", "$share/g/icefarm/client/bob/#") &&
              !sub(st, "alice", "$share/") && !sub(st, "alice", "$share/g"),
          "shared subscriptions are judged by their filter");
    acl_free(st);
}

static void test_leases(void)
{
    acl_state *st = new_state();
    buf l = lease_msg("S1", "alice", fake_now + 60000);
    check(sub(st, "alice", "icefarm/S1/event") && !rd(st, "alice", "icefarm/S1/event"),
          "lease: before: alice may subscribe to S1 events (as to icefarm/+/event) but reads none");
    check(pub(st, "ctl", CTL_CONN, "icefarm/lease/S1", &l, true), "lease: control publishes a retained lease");
    check(wr(st, "alice", "icefarm/S1/cmd") && rd(st, "alice", "icefarm/S1/event") &&
              sub(st, "alice", "icefarm/S1/event"),
          "lease: the holder commands the board and reads its events");
    check(!wr(st, "oscar", "icefarm/S1/cmd") && !rd(st, "oscar", "icefarm/S1/event") &&
              rd(st, "oscar", "icefarm/S1/state") && sub(st, "oscar", "icefarm/+/event"),
          "lease: an operator neither commands nor watches others' boards (it reboots and deletes through control)");
    check(!wr(st, "bob", "icefarm/S1/cmd") && !rd(st, "bob", "icefarm/S1/event"), "lease: another client does not");
    check(!acl_check(st, NULL, "alice", ACL_WRITE, "icefarm/S1/cmd", "x", 1, true), "lease: no retained commands");
    check(!wr(st, "alice", "icefarm/S2/cmd"), "lease: only for the leased board");
    check(!rd(st, "dash", "icefarm/S1/event"), "lease: dashboards still do not read board events");
    check(rd(st, "http", "icefarm/S1/event") && !rd(st, "http", "icefarm/S2/event") &&
              rd(st, "http", "icefarm/client/alice/event") && !rd(st, "http", "icefarm/client/alice/reply") &&
              sub(st, "http", "icefarm/client/+/event") && wr(st, "http", "icefarm/S1/cmd") &&
              !wr(st, "http", "icefarm/S2/cmd") &&
              !acl_check(st, NULL, "http", ACL_WRITE, "icefarm/S1/cmd", "x", 1, true),
          "lease: a gateway reads leased boards' and clients' events, may publish a leased board's command");
    check(acl_command_action(st, "http", "icefarm/S1/cmd") == ACL_REQ_HOLDER &&
              acl_command_client_ok(st, "icefarm/S1/cmd", "alice") &&
              !acl_command_client_ok(st, "icefarm/S1/cmd", "bob") &&
              !acl_command_client_ok(st, "icefarm/S2/cmd", "alice") &&
              !acl_command_client_ok(st, "icefarm/S1/event", "alice") &&
              !acl_command_client_ok(st, "icefarm/S1/cmd", "a/b"),
          "lease: ... but only naming the board's holder");
    check(acl_command_action(st, "alice", "icefarm/S1/cmd") == ACL_REQ_REPLACE &&
              acl_command_action(st, "dash", "icefarm/S1/cmd") == ACL_REQ_DENY &&
              acl_command_action(st, "alice", "icefarm/S1/event") == ACL_REQ_PASS &&
              acl_command_action(st, "alice", "icefarm/ctl/req/reserve") == ACL_REQ_PASS,
          "lease: a client's command carries its own name; other topics are not commands");
    pub(st, "ctl", CTL_CONN, "icefarm/lease/S1", NULL, true);
    check(!wr(st, "alice", "icefarm/S1/cmd") && !rd(st, "alice", "icefarm/S1/event"),
          "lease: an empty retained lease revokes at once");
    pub(st, "ctl", CTL_CONN, "icefarm/lease/S1", &l, true);
    buf g = { .n = 3, .b = { 0x81, 0xa1, 'v' } };
    pub(st, "ctl", CTL_CONN, "icefarm/lease/S1", &g, true);
    check(!wr(st, "alice", "icefarm/S1/cmd"), "lease: a garbage lease closes the board (fail closed)");
    pub(st, "ctl", CTL_CONN, "icefarm/lease/S1", &l, true);
    buf other = lease_msg("S2", "alice", fake_now + 60000);
    pub(st, "ctl", CTL_CONN, "icefarm/lease/S1", &other, true);
    check(!wr(st, "alice", "icefarm/S1/cmd") && !wr(st, "alice", "icefarm/S2/cmd"),
          "lease: a lease naming another serial than its topic counts for neither");
    pub(st, "ctl", CTL_CONN, "icefarm/lease/S1", &l, true);
    acl_observe(st, "alice", NULL, "x", "icefarm/lease/S1", NULL, 0, true);
    acl_observe(st, "bob", NULL, "x", "icefarm/lease/S1", other.b, other.n, true);
    check(wr(st, "alice", "icefarm/S1/cmd"), "lease: only control's lease messages are learnt");
    /* expiry without control */
    fake_now += 60000 + 4000;
    check(wr(st, "alice", "icefarm/S1/cmd"), "lease: honoured within the grace period after `until`");
    fake_now += 2000;
    check(!wr(st, "alice", "icefarm/S1/cmd") && !rd(st, "alice", "icefarm/S1/event"),
          "lease: refused after until + grace even if control never clears it");
    buf ext = lease_msg("S1", "alice", fake_now + 60000);
    pub(st, "ctl", CTL_CONN, "icefarm/lease/S1", &ext, true);
    check(wr(st, "alice", "icefarm/S1/cmd"), "lease: an extended lease counts again");
    buf huge = lease_msg("S1", "alice", UINT64_MAX);
    pub(st, "ctl", CTL_CONN, "icefarm/lease/S1", &huge, true);
    check(wr(st, "alice", "icefarm/S1/cmd"), "lease: until = UINT64_MAX does not overflow");
    acl_free(st);
}

static void test_ownership(void)
{
    acl_state *st = new_state();
    const char *w1b[] = { "S1", "S2" };
    buf b1 = birth_msg("w1", true, w1b, 2);
    check(pub(st, "w1", W1_CONN, "icefarm/worker/w1/state", &b1, true), "owner: worker publishes its birth");
    check(acl_board_owner(st, "S1") && strcmp(acl_board_owner(st, "S1"), "w1") == 0, "owner: birth claims its boards");
    buf s1 = board_msg("S1", "w1", "ready");
    check(pub(st, "w1", W1_CONN, "icefarm/S1/state", &s1, true) &&
              pub(st, "w1", W1_CONN, "icefarm/S1/event", &s1, false),
          "owner: owner publishes state and events of its board");
    check(!acl_check(st, NULL, "w1", ACL_WRITE, "icefarm/S1/event", "x", 1, true), "owner: events are never retained");
    check(rd(st, "w1", "icefarm/S1/cmd") && sub(st, "w1", "icefarm/S1/cmd"), "owner: owner reads its boards' commands");
    buf b2 = birth_msg("w2", true, w1b, 2);
    pub(st, "w2", W2_CONN, "icefarm/worker/w2/state", &b2, true);
    check(strcmp(acl_board_owner(st, "S1"), "w1") == 0, "owner: another worker's birth does not steal boards");
    buf s1w2 = board_msg("S1", "w2", "ready");
    check(!pub(st, "w2", W2_CONN, "icefarm/S1/state", &s1w2, true) && !wr(st, "w2", "icefarm/S1/event") &&
              !rd(st, "w2", "icefarm/S1/cmd") && !sub(st, "w2", "icefarm/S1/cmd"),
          "owner: another worker cannot publish for, or read commands of, a connected worker's board");
    check(!pub(st, "w1", W1_CONN, "icefarm/S3/state", &s1, true),
          "owner: a state whose serial is not its topic's is refused");
    buf lie = board_msg("S3", "w2", "ready");
    check(!pub(st, "w1", W1_CONN, "icefarm/S3/state", &lie, true), "owner: a state naming another worker is refused");
    buf garbage = { .n = 4, .b = { 0xde, 0xad, 0xbe, 0xef } };
    check(!pub(st, "w1", W1_CONN, "icefarm/S3/state", &garbage, true) &&
              !pub(st, "w1", W1_CONN, "icefarm/worker/w1/state", &garbage, true),
          "owner: garbage states and births are refused");
    buf s3 = board_msg("S3", "w1", "ready");
    check(pub(st, "w1", W1_CONN, "icefarm/S3/state", &s3, true) && strcmp(acl_board_owner(st, "S3"), "w1") == 0,
          "owner: a state message claims a free board (hotplug)");
    buf g3 = board_msg("S3", "w1", "gone");
    check(pub(st, "w1", W1_CONN, "icefarm/S3/state", &g3, true) && !acl_board_owner(st, "S3"),
          "owner: a gone state releases the board");
    const char *only1[] = { "S1" };
    buf b1b = birth_msg("w1", true, only1, 1);
    pub(st, "w1", W1_CONN, "icefarm/worker/w1/state", &b1b, true);
    check(!acl_board_owner(st, "S2"), "owner: a birth without a board releases it");
    /* the owner's connection dies: its boards may move */
    acl_disconnect(st, (const void *)0x99, "w1-id"); /* not w1's connection: nothing happens */
    check(!pub(st, "w2", W2_CONN, "icefarm/S1/state", &s1w2, true), "owner: an unrelated disconnect changes nothing");
    acl_disconnect(st, W1_CONN, "w1-id");
    check(pub(st, "w2", W2_CONN, "icefarm/S1/state", &s1w2, true) && strcmp(acl_board_owner(st, "S1"), "w2") == 0,
          "owner: once the owner's connection is gone, another worker may take the board");
    check(!wr(st, "w1", "icefarm/S1/event"), "owner: the old owner lost it");
    /* offline birth releases everything */
    buf off = birth_msg("w2", false, NULL, 0);
    pub(st, "w2", W2_CONN, "icefarm/worker/w2/state", &off, true);
    check(!acl_board_owner(st, "S1"), "owner: an offline birth releases the worker's boards");
    /* a worker cannot flood the board table */
    char serials[100][16];
    const char *many[100];
    for (int i = 0; i < 100; i++) {
        snprintf(serials[i], sizeof serials[i], "M%d", i);
        many[i] = serials[i];
    }
    acl_state *st2 = new_state();
    buf bm = { .n = 0 };
    pmap(&bm, 4);
    kuint(&bm, "v", 1);
    kstr(&bm, "worker", "w1");
    kstr(&bm, "state", "online");
    pstr(&bm, "boards");
    put8(&bm, 0xdc);
    put8(&bm, 0);
    put8(&bm, 100);
    for (int i = 0; i < 100; i++) {
        pmap(&bm, 1);
        kstr(&bm, "serial", many[i]);
    }
    pub(st2, "w1", W1_CONN, "icefarm/worker/w1/state", &bm, true);
    int owned = 0;
    for (int i = 0; i < 100; i++)
        owned += acl_board_owner(st2, many[i]) != NULL;
    check(owned == 64, "owner: the board table is capped (%d of 100 recorded, cap 64)", owned);
    acl_free(st2);
    acl_free(st);
}

/* Mosquitto checks a Will as a WRITE after the connection's DISCONNECT event. */
static void test_wills(void)
{
    acl_state *st = new_state();
    const void *alice = (const void *)0x40;
    buf off = birth_msg("w1", false, NULL, 0);
    buf l = lease_msg("S1", "alice", fake_now + 60000);
    pub(st, "ctl", CTL_CONN, "icefarm/lease/S1", &l, true);
    check(acl_check(st, alice, "alice", ACL_WRITE, "icefarm/ctl/req/end_all", "x", 1, false) &&
              acl_check(st, alice, "alice", ACL_WRITE, "icefarm/S1/cmd", "x", 1, false),
          "will: a live client publishes requests and commands");
    acl_disconnect(st, alice, "a");
    check(!acl_check(st, alice, "alice", ACL_WRITE, "icefarm/ctl/req/end_all", "x", 1, false) &&
              !acl_check(st, alice, "alice", ACL_WRITE, "icefarm/S1/cmd", "x", 1, false),
          "will: a client's Will is refused (it would skip the identity rewrite)");
    check(acl_check(st, alice, "alice", ACL_READ, "icefarm/client/alice/event", NULL, 0, false),
          "will: reads are not affected");
    check(acl_check(st, alice, "alice", ACL_WRITE, "icefarm/S1/usbip/AbCdEfGh12345678/c2s", "", 0, false),
          "will: the holder's empty c2s Will ends her USB/IP tunnel session");
    check(!acl_check(st, alice, "alice", ACL_WRITE, "icefarm/S1/usbip/AbCdEfGh12345678/c2s", "x", 1, false) &&
              !acl_check(st, alice, "alice", ACL_WRITE, "icefarm/S1/usbip/AbCdEfGh12345678/s2c", "", 0, false),
          "will: ... and only an empty one, on c2s");
    acl_disconnect(st, (const void *)0x48, "b");
    check(!acl_check(st, (const void *)0x48, "bob", ACL_WRITE, "icefarm/S1/usbip/AbCdEfGh12345678/c2s", "", 0, false),
          "will: ... of the holder only");
    acl_connect(st, alice);
    check(acl_check(st, alice, "alice", ACL_WRITE, "icefarm/ctl/req/end_all", "x", 1, false),
          "will: a new connection at the same address publishes normally");
    acl_disconnect(st, W1_CONN, "wrk-w1");
    check(acl_check(st, W1_CONN, "w1", ACL_WRITE, "icefarm/worker/w1/state", off.b, off.n, true),
          "will: a worker's death notice on its own state is allowed");
    check(!acl_check(st, W1_CONN, "w1", ACL_WRITE, "icefarm/worker/w2/state", off.b, off.n, true),
          "will: ... not on another worker's");
    acl_disconnect(st, CTL_CONN, "icefarm-ctl");
    check(acl_check(st, CTL_CONN, "ctl", ACL_WRITE, "icefarm/ctl/state", "x", 1, true) &&
              !acl_check(st, CTL_CONN, "ctl", ACL_WRITE, "icefarm/lease/S1", "", 0, true),
          "will: control's Will only on icefarm/ctl/state");
    acl_free(st);
}

static void test_requests(void)
{
    acl_state *st = new_state();
    check(acl_request_action(st, "alice", "icefarm/ctl/req/reserve", "icefarm/client/alice/reply") == ACL_REQ_REPLACE,
          "request: client's identity is replaced");
    check(acl_request_action(st, "alice", "icefarm/ctl/req/reserve", NULL) == ACL_REQ_REPLACE,
          "request: without a response topic too");
    check(acl_request_action(st, "http", "icefarm/ctl/req/reserve", "icefarm/client/http/reply") == ACL_REQ_GATEWAY,
          "request: a gateway names its callers");
    check(acl_request_action(st, "alice", "icefarm/ctl/req/reserve", "icefarm/client/bob/reply") == ACL_REQ_DENY &&
              acl_request_action(st, "alice", "icefarm/ctl/req/reserve", "icefarm/lease/S1") == ACL_REQ_DENY &&
              acl_request_action(st, "alice", "icefarm/ctl/req/reserve", "icefarm/client/alice/") == ACL_REQ_DENY &&
              acl_request_action(st, "alice", "icefarm/ctl/req/reserve", "icefarm/client/alice2/reply") == ACL_REQ_DENY,
          "request: a response topic outside the sender's own client topics is refused");
    check(acl_request_action(st, "alice", "icefarm/S1/cmd", "anything") == ACL_REQ_PASS,
          "request: other topics pass untouched");
    check(acl_request_action(st, "dash", "icefarm/ctl/req/reserve", NULL) == ACL_REQ_DENY,
          "request: roles that may not request are refused");
    check(acl_request_action(st, "oscar", "icefarm/ctl/req/delete", "icefarm/client/oscar/reply") == ACL_REQ_REPLACE,
          "request: an operator's identity is replaced like a client's");
    check(acl_may_act_for(st, "alice") && acl_may_act_for(st, "oscar") && !acl_may_act_for(st, "ctl") &&
              !acl_may_act_for(st, "http") && !acl_may_act_for(st, "dash") && !acl_may_act_for(st, "nobody"),
          "request: a gateway may act for clients and operators only");
    acl_free(st);
}

static void test_intersect(void)
{
    struct {
        const char *a, *b;
        bool want;
    } cases[] = {
        { "#", "icefarm/x", true },
        { "icefarm/#", "icefarm", true },
        { "icefarm/+/event", "icefarm/+/state", false },
        { "icefarm/+", "icefarm/a/b", false },
        { "icefarm/client/bob/#", "icefarm/client/alice/#", false },
        { "icefarm/client/+/event", "icefarm/client/alice/#", true },
        { "a/b", "a/b", true },
        { "a/b", "a/c", false },
        { "a", "a/#", true },
        { "+/+", "a", false },
        { "", "", true },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        check(acl_filters_intersect(cases[i].a, cases[i].b) == cases[i].want &&
                  acl_filters_intersect(cases[i].b, cases[i].a) == cases[i].want,
              "filters: \"%s\" and \"%s\" %s", cases[i].a, cases[i].b, cases[i].want ? "overlap" : "do not overlap");
}

static void test_mp(void)
{
    /* The plugin's reader is icefarm-base's, the one proto and the store use:
     * these check it as the plugin calls it (no reason buffer). */
    ifm_mp r;
    uint32_t n;
    const uint8_t big_map[] = { 0xdf, 0xff, 0xff, 0xff, 0xff, 0x01 };
    ifm_mp_init(&r, big_map, sizeof big_map, NULL, 0);
    check(ifm_mp_map(&r, &n) < 0, "mp: a map claiming 4 billion entries in 6 bytes is refused");
    uint8_t deep[64];
    memset(deep, 0x91, sizeof deep);
    deep[63] = 0xc0;
    ifm_mp_init(&r, deep, sizeof deep, NULL, 0);
    check(ifm_mp_skip(&r, IFM_MAX_DEPTH) < 0 && r.off == 0, "mp: nesting deeper than the limit is refused");
    const uint8_t str_short[] = { 0xdb, 0x00, 0x00, 0x10, 0x00, 'a' };
    const char *s;
    ifm_mp_init(&r, str_short, sizeof str_short, NULL, 0);
    check(ifm_mp_str(&r, &s, &n) < 0, "mp: a string longer than the buffer is refused");
    const uint8_t neg[] = { 0xd3, 0xff, 0, 0, 0, 0, 0, 0, 1 };
    uint64_t v;
    ifm_mp_init(&r, neg, sizeof neg, NULL, 0);
    check(ifm_mp_uint(&r, &v) < 0, "mp: a negative int64 is not an unsigned");
    const uint8_t all[] = { 0xc0, 0xc2, 0xc3, 0xca, 0, 0,    0, 0, 0xcb, 0,    0, 0, 0, 0,    0,
                            0,    0,    0xd4, 1,    2, 0xc7, 1, 5, 9,    0xc4, 2, 1, 2, 0xe0, 0x7f };
    ifm_mp_init(&r, all, sizeof all, NULL, 0);
    int k = 0;
    while (!ifm_mp_done(&r) && ifm_mp_skip(&r, 0) == 0)
        k++;
    check(ifm_mp_done(&r) && k == 10, "mp: skips every scalar type (%d)", k);
    const uint8_t c1[] = { 0xc1 };
    ifm_mp_init(&r, c1, 1, NULL, 0);
    check(ifm_mp_skip(&r, 1) < 0, "mp: 0xc1 is refused");
    /* The name rules are proto's: invalid UTF-8 and control characters are not names. */
    check(!ifm_name_valid("bad\xff", IFM_NAME_MAX) && !ifm_name_valid("tab\there", IFM_NAME_MAX) &&
              ifm_name_valid("caf\xc3\xa9 o'k", IFM_NAME_MAX),
          "names: the plugin applies proto's UTF-8 rule");
    check(!ifm_serial_valid("lease") && ifm_serial_valid("S1"), "names: reserved levels are not serials");
    buf bad_client = lease_msg("S1", "al\xffice", 5);
    acl_lease bad_lease;
    check(acl_decode_lease(bad_client.b, bad_client.n, &bad_lease) == -1,
          "decode: a lease naming a non-UTF-8 client is refused, as proto refuses it");
    buf l = lease_msg("S1", "alice", 5);
    l.b[l.n++] = 0xc0;
    acl_lease lease;
    check(acl_decode_lease(l.b, l.n, &lease) == -1, "decode: trailing bytes refused");
    buf d = { .n = 0 };
    pmap(&d, 5);
    kuint(&d, "v", 1);
    kstr(&d, "serial", "S1");
    kstr(&d, "client", "a");
    kstr(&d, "client", "b");
    kuint(&d, "until", 5);
    check(acl_decode_lease(d.b, d.n, &lease) == -1, "decode: duplicate keys refused");
    buf v2 = { .n = 0 };
    pmap(&v2, 4);
    kuint(&v2, "v", 2);
    kstr(&v2, "serial", "S1");
    kstr(&v2, "client", "a");
    kuint(&v2, "until", 5);
    check(acl_decode_lease(v2.b, v2.n, &lease) == -1, "decode: another protocol version refused");
    l = lease_msg("S1", "alice", 5);
    check(acl_decode_lease(l.b, l.n, &lease) == 0 && strcmp(lease.client, "alice") == 0 && lease.until_ms == 5,
          "decode: a good lease");
}

/* Every prefix and many random mutations of valid payloads, each in an
 * exactly-sized heap buffer so ASan sees any overread; nothing may crash, and
 * the state must still decide correctly afterwards. */
static void test_garbage(void)
{
    acl_state *st = new_state();
    buf l = lease_msg("S1", "alice", fake_now + 600000);
    const char *ser[] = { "S1", "S2", "S3" };
    buf samples[3] = { lease_msg("S1", "alice", fake_now + 600000), board_msg("S1", "w1", "ready"),
                       birth_msg("w1", true, ser, 3) };
    const char *topics[] = { "icefarm/lease/S1", "icefarm/S1/state", "icefarm/worker/w1/state",
                             "icefarm/ctl/req/reserve", "icefarm/S1/cmd" };
    const char *users[] = { "ctl", "w1", "alice" };
    uint32_t seed = 12345;
    long runs = 0;
    for (int s = 0; s < 3; s++) {
        for (size_t cut = 0; cut <= samples[s].n; cut++) {
            uint8_t *p = malloc(cut ? cut : 1);
            memcpy(p, samples[s].b, cut);
            for (int t = 0; t < 5; t++)
                for (int u = 0; u < 3; u++) {
                    if (acl_check(st, NULL, users[u], ACL_WRITE, topics[t], p, cut, true))
                        acl_observe(st, users[u], W1_CONN, "id", topics[t], p, cut, true);
                    runs++;
                }
            free(p);
        }
        for (int i = 0; i < 20000; i++) {
            size_t n = samples[s].n;
            uint8_t *p = malloc(n);
            memcpy(p, samples[s].b, n);
            int flips = 1 + (int)((seed >> 8) % 4);
            for (int f = 0; f < flips; f++) {
                seed = seed * 1103515245u + 12345u;
                p[(seed >> 8) % n] = (uint8_t)(seed >> 20);
            }
            seed = seed * 1103515245u + 12345u;
            size_t cut = (seed >> 8) % (n + 1);
            acl_lease lz;
            acl_board_state bz;
            acl_worker_birth wz;
            acl_decode_lease(p, cut, &lz);
            acl_decode_board_state(p, cut, &bz);
            if (acl_decode_worker_birth(p, cut, &wz) == 0)
                acl_worker_birth_free(&wz);
            const char *topic = topics[(seed >> 12) % 5];
            const char *user = users[(seed >> 16) % 3];
            if (acl_check(st, NULL, user, ACL_WRITE, topic, p, cut, true))
                acl_observe(st, user, W1_CONN, "id", topic, p, cut, true);
            free(p);
            runs++;
        }
    }
    /* random bytes */
    for (int i = 0; i < 20000; i++) {
        seed = seed * 1103515245u + 12345u;
        size_t n = (seed >> 8) % 64;
        uint8_t *p = malloc(n ? n : 1);
        for (size_t j = 0; j < n; j++) {
            seed = seed * 1103515245u + 12345u;
            p[j] = (uint8_t)(seed >> 16);
        }
        acl_observe(st, "ctl", CTL_CONN, "c", "icefarm/lease/S9", p, n, true);
        acl_observe(st, "w1", W1_CONN, "id", "icefarm/worker/w1/state", p, n, true);
        free(p);
        runs++;
    }
    check(true, "garbage: %ld decodes of truncated, mutated and random payloads survived", runs);
    /* garbage topics */
    char topic[600];
    for (int i = 0; i < 5000; i++) {
        seed = seed * 1103515245u + 12345u;
        size_t n = (seed >> 8) % sizeof topic;
        for (size_t j = 0; j < n; j++) {
            seed = seed * 1103515245u + 12345u;
            static const char alpha[] = "icefarm/+#$leasctrwokSYS";
            topic[j] = alpha[(seed >> 16) % (sizeof alpha - 1)];
        }
        topic[n] = '\0';
        for (int a = 1; a <= 8; a <<= 1)
            acl_check(st, NULL, users[i % 3], a, topic, "x", 1, false);
        acl_filters_intersect(topic, "icefarm/+/state");
        acl_request_action(st, "alice", topic, topic);
    }
    check(true, "garbage: 5000 random topics survived");
    pub(st, "ctl", CTL_CONN, "icefarm/lease/S1", &l, true);
    check(wr(st, "alice", "icefarm/S1/cmd") && !wr(st, "bob", "icefarm/S1/cmd"),
          "garbage: afterwards leases still decide correctly");
    pub(st, "ctl", CTL_CONN, "icefarm/lease/S1", NULL, true);
    check(!wr(st, "alice", "icefarm/S1/cmd"), "garbage: and revoke");
    acl_free(st);
}

int main(void)
{
    snprintf(roles_path, sizeof roles_path, "%s/icefarm-acl-roles.%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
             (int)getpid());
    write_file(roles_path,
               "# test roles\nctl control\n\nw1 worker\nw2   worker  # comment\nalice client\n"
               "bob client\ndash dashboard\nhttp gateway\noscar operator\n");
    test_roles_file();
    test_connect();
    test_static_rights();
    test_leases();
    test_ownership();
    test_drain();
    test_presence();
    test_wills();
    test_requests();
    test_intersect();
    test_mp();
    test_garbage();
    unlink(roles_path);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
