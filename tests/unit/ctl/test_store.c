/* Lease store, one process: round trips, all-or-nothing grants, holder checks,
 * persistence across reopen, corrupt records, and a model-checked random run. */
#include <lmdb.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "store.h"
#include "store_test_util.h"

typedef struct {
    char *dir;
    ctl_store *s;
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    f->dir = tdir_make();
    f->s = open_ok(f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    ctl_store_close(f->s);
    tdir_remove(f->dir);
    free(f);
    return 0;
}

static void reopen(fx *f)
{
    ctl_store_close(f->s);
    f->s = open_ok(f->dir);
}

static long long count(fx *f)
{
    char err[256];
    long long n = ctl_store_count(f->s, err, sizeof err);
    assert_true(n >= 0);
    return n;
}

static void grant_ok(fx *f, const ctl_lease *l, size_t n, uint64_t *ids)
{
    char err[256] = "";
    int rc = ctl_store_grant(f->s, l, n, ids, err, sizeof err);
    if (rc)
        fail_msg("grant: %d %s", rc, err);
}

static void grant1(fx *f, const char *serial, const char *client, const char *worker)
{
    ctl_lease l = mk_lease(serial, client, worker);
    grant_ok(f, &l, 1, NULL);
}

/* 1 if `serial` is leased to `client`, 0 if free; fails on anything else. */
static int held_by(fx *f, const char *serial, const char *client)
{
    ctl_lease l;
    char err[256];
    int rc = ctl_store_get(f->s, serial, &l, err, sizeof err);
    assert_true(rc == 0 || rc == 1);
    if (rc == 1) {
        assert_string_equal(l.client, client);
        ctl_lease_clear(&l);
    }
    return rc;
}

static const char *serials_of(const ctl_lease_list *ls)
{
    static char s[1024];
    s[0] = 0;
    for (size_t i = 0; i < ls->n; i++) {
        strcat(s, i ? " " : "");
        strcat(s, ls->v[i].serial);
    }
    return s;
}

static void open_creates_nested_dir(void **state)
{
    fx *f = *state;
    char path[4200], err[256];
    snprintf(path, sizeof path, "%s/a/b/c", f->dir);
    ctl_store *s = ctl_store_open(path, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(ctl_store_count(s, err, sizeof err), 0);
    ctl_store_close(s);
    snprintf(path, sizeof path, "%s/data.mdb", f->dir);
    assert_null(ctl_store_open(path, err, sizeof err)); /* a file, not a dir */
    assert_non_null(strstr(err, "not a directory"));
    assert_null(ctl_store_open(NULL, err, sizeof err));
}

static void round_trip_all_fields(void **state)
{
    fx *f = *state;
    static const uint8_t args[] = { 0x82, 0xa1, 'n', 0x05, 0xa1, 'x', 0xc0 };
    ctl_lease in[2] = { mk_lease("S1", "quo\"te\\back \xe2\x9c\x93", "w1"), mk_lease("S2", "bob", "w2") };
    in[0].args = args;
    in[0].args_len = sizeof args;
    in[0].warned = true; /* ignored: a new lease has not been warned */
    uint64_t ids[2];
    grant_ok(f, in, 2, ids);
    assert_true(ids[0] >= 1 && ids[1] == ids[0] + 1);
    ctl_lease l;
    char err[256];
    assert_int_equal(ctl_store_get(f->s, "S1", &l, err, sizeof err), 1);
    assert_string_equal(l.client, in[0].client);
    assert_string_equal(l.kind, "pulsecount");
    assert_string_equal(l.worker, "w1");
    assert_int_equal(l.args_len, sizeof args);
    assert_memory_equal(l.args, args, sizeof args);
    assert_true(l.lease_id == ids[0]);
    assert_true(l.granted_ms == in[0].granted_ms && l.until_ms == in[0].until_ms);
    assert_false(l.warned);
    ctl_lease_clear(&l);
    assert_null(l.args);
    assert_int_equal(ctl_store_get(f->s, "S2", &l, err, sizeof err), 1);
    assert_null(l.args);
    assert_int_equal(ctl_store_get(f->s, "S3", &l, err, sizeof err), 0);
    assert_int_equal(ctl_store_get(f->s, "", &l, err, sizeof err), CTL_STORE_EINVAL);
    assert_int_equal(count(f), 2);
    /* 255-byte client names are fine; 256 are not. */
    ctl_lease big = mk_lease("S4", "", "w1");
    memset(big.client, 'n', CTL_CLIENT_MAX);
    big.client[CTL_CLIENT_MAX] = 0;
    grant_ok(f, &big, 1, NULL);
    assert_int_equal(held_by(f, "S4", big.client), 1);
}

static void grant_all_or_nothing(void **state)
{
    fx *f = *state;
    grant1(f, "B", "alice", "w1");
    ctl_lease req[3] = { mk_lease("A", "bob", "w1"), mk_lease("B", "bob", "w1"), mk_lease("C", "bob", "w2") };
    char err[256];
    uint64_t ids[3] = { 0 };
    assert_int_equal(ctl_store_grant(f->s, req, 3, ids, err, sizeof err), CTL_STORE_ECONFLICT);
    assert_string_equal(err, "serial B is already leased");
    assert_true(ids[0] == 0); /* no ids for a failed grant */
    assert_int_equal(held_by(f, "A", "bob"), 0);
    assert_int_equal(held_by(f, "C", "bob"), 0);
    assert_int_equal(held_by(f, "B", "alice"), 1);
    assert_int_equal(count(f), 1);
    /* A serial twice in one request. */
    ctl_lease dup[3] = { mk_lease("X", "bob", "w1"), mk_lease("Y", "bob", "w1"), mk_lease("X", "bob", "w2") };
    assert_int_equal(ctl_store_grant(f->s, dup, 3, NULL, err, sizeof err), CTL_STORE_ECONFLICT);
    assert_string_equal(err, "serial X appears twice in the request");
    assert_int_equal(count(f), 1);
    /* An invalid lease anywhere: nothing written either. */
    ctl_lease bad[2] = { mk_lease("P", "bob", "w1"), mk_lease("Q", "", "w1") };
    assert_int_equal(ctl_store_grant(f->s, bad, 2, NULL, err, sizeof err), CTL_STORE_EINVAL);
    assert_string_equal(err, "lease 1: client is empty");
    assert_int_equal(count(f), 1);
    /* Failed grants burn no ids: the next id follows the first grant's. */
    ctl_lease b;
    assert_int_equal(ctl_store_get(f->s, "B", &b, err, sizeof err), 1);
    uint64_t id;
    ctl_lease ok = mk_lease("A", "bob", "w1");
    grant_ok(f, &ok, 1, &id);
    assert_true(id == b.lease_id + 1);
    assert_int_equal(ctl_store_grant(f->s, NULL, 0, NULL, err, sizeof err), 0);
}

static void extend_only_by_holder(void **state)
{
    fx *f = *state;
    grant1(f, "s1", "alice", "w1");
    grant1(f, "s2", "alice", "w2");
    grant1(f, "s3", "bob", "w1");
    char err[256];
    assert_int_equal(ctl_store_mark_warned(f->s, "s1", 1, 1700000000000ull + 3600000, err, sizeof err), 1);
    const char *want[] = { "s3", "s1", "nope", "s1", "", NULL };
    ctl_lease_list out = CTL_LEASE_LIST_INIT;
    assert_int_equal(ctl_store_extend(f->s, "alice", want, 5, 42, true, &out, err, sizeof err), 0);
    assert_string_equal(serials_of(&out), "s1");
    assert_true(out.v[0].until_ms == 42);
    assert_false(out.v[0].warned); /* a new deadline gets its own warning */
    ctl_lease l;
    assert_int_equal(ctl_store_get(f->s, "s1", &l, err, sizeof err), 1);
    assert_true(l.until_ms == 42 && !l.warned);
    assert_int_equal(ctl_store_get(f->s, "s3", &l, err, sizeof err), 1);
    assert_true(l.until_ms != 42); /* bob's lease untouched */
    ctl_lease_list_free(&out);
    assert_int_equal(ctl_store_extend_all(f->s, "alice", 77, true, &out, err, sizeof err), 0);
    assert_string_equal(serials_of(&out), "s1 s2");
    ctl_lease_list_free(&out);
    assert_int_equal(ctl_store_extend_all(f->s, "carol", 77, true, &out, err, sizeof err), 0);
    assert_int_equal(out.n, 0);
    assert_int_equal(ctl_store_extend(f->s, "", want, 1, 1, true, &out, err, sizeof err), CTL_STORE_EINVAL);
    ctl_lease_list_free(&out);
}

/* Without `set`, extend moves a deadline only later: a short extension of a
 * long lease keeps it (and its warned flag); with `set` it replaces it. */
static void extend_never_shortens_unless_set(void **state)
{
    fx *f = *state;
    grant1(f, "s1", "alice", "w1");
    char err[256];
    ctl_lease l;
    assert_int_equal(ctl_store_get(f->s, "s1", &l, err, sizeof err), 1);
    uint64_t end = l.until_ms;
    ctl_lease_clear(&l);
    assert_int_equal(ctl_store_mark_warned(f->s, "s1", 1, end, err, sizeof err), 1);
    const char *one[] = { "s1" };
    ctl_lease_list out = CTL_LEASE_LIST_INIT;
    assert_int_equal(ctl_store_extend(f->s, "alice", one, 1, end - 1000, false, &out, err, sizeof err), 0);
    assert_int_equal(out.n, 1); /* still reported: alice holds it */
    assert_true(out.v[0].until_ms == end && out.v[0].warned);
    ctl_lease_list_free(&out);
    assert_int_equal(ctl_store_get(f->s, "s1", &l, err, sizeof err), 1);
    assert_true(l.until_ms == end && l.warned);
    ctl_lease_clear(&l);
    assert_int_equal(ctl_store_extend_all(f->s, "alice", end + 5000, false, &out, err, sizeof err), 0);
    assert_true(out.n == 1 && out.v[0].until_ms == end + 5000 && !out.v[0].warned);
    ctl_lease_list_free(&out);
    assert_int_equal(ctl_store_extend(f->s, "alice", one, 1, 42, true, &out, err, sizeof err), 0);
    assert_true(out.n == 1 && out.v[0].until_ms == 42);
    ctl_lease_list_free(&out);
    assert_int_equal(ctl_store_get(f->s, "s1", &l, err, sizeof err), 1);
    assert_true(l.until_ms == 42);
    ctl_lease_clear(&l);
}

static void end_only_by_holder(void **state)
{
    fx *f = *state;
    grant1(f, "s1", "alice", "w1");
    grant1(f, "s2", "alice", "w2");
    grant1(f, "s3", "bob", "w1");
    grant1(f, "s4", "bob", "w2");
    const char *want[] = { "s3", "s1", "s1", "zz" };
    ctl_lease_list out = CTL_LEASE_LIST_INIT;
    char err[256];
    assert_int_equal(ctl_store_end(f->s, "alice", want, 4, &out, err, sizeof err), 0);
    assert_string_equal(serials_of(&out), "s1");
    assert_string_equal(out.v[0].client, "alice");
    assert_int_equal(held_by(f, "s1", ""), 0);
    assert_int_equal(held_by(f, "s3", "bob"), 1);
    /* Administrative end (NULL client) ends anyone's, appending to the list. */
    assert_int_equal(ctl_store_end(f->s, NULL, want, 4, &out, err, sizeof err), 0);
    assert_string_equal(serials_of(&out), "s1 s3");
    assert_string_equal(out.v[1].client, "bob");
    ctl_lease_list_free(&out);
    assert_int_equal(ctl_store_end_all(f->s, "alice", &out, err, sizeof err), 0);
    assert_string_equal(serials_of(&out), "s2");
    ctl_lease_list_free(&out);
    assert_int_equal(ctl_store_end_all(f->s, "alice", &out, err, sizeof err), 0);
    assert_int_equal(out.n, 0);
    assert_int_equal(count(f), 1);
    /* The serial is free again, and a re-grant gets a fresh id. */
    grant1(f, "s1", "carol", "w1");
    assert_int_equal(held_by(f, "s1", "carol"), 1);
}

static void end_worker_ends_its_boards(void **state)
{
    fx *f = *state;
    grant1(f, "a", "alice", "w1");
    grant1(f, "b", "bob", "w1");
    grant1(f, "c", "bob", "w2");
    ctl_lease_list out = CTL_LEASE_LIST_INIT;
    char err[256];
    assert_int_equal(ctl_store_end_worker(f->s, "w1", &out, err, sizeof err), 0);
    assert_string_equal(serials_of(&out), "a b");
    assert_int_equal(count(f), 1);
    /* The index followed the ends: bob's end_all now finds only c. */
    ctl_lease_list_free(&out);
    assert_int_equal(ctl_store_end_all(f->s, "bob", &out, err, sizeof err), 0);
    assert_string_equal(serials_of(&out), "c");
    ctl_lease_list_free(&out);
    assert_int_equal(ctl_store_end_worker(f->s, "w9", &out, err, sizeof err), 0);
    assert_int_equal(out.n, 0);
}

static void mark_warned_matches_lease_and_deadline(void **state)
{
    fx *f = *state;
    ctl_lease l = mk_lease("s1", "alice", "w1");
    uint64_t id;
    grant_ok(f, &l, 1, &id);
    char err[256];
    assert_int_equal(ctl_store_mark_warned(f->s, "s1", id + 1, l.until_ms, err, sizeof err), 0);
    assert_int_equal(ctl_store_mark_warned(f->s, "s1", id, l.until_ms + 1, err, sizeof err), 0);
    assert_int_equal(ctl_store_mark_warned(f->s, "nope", id, l.until_ms, err, sizeof err), 0);
    assert_int_equal(ctl_store_mark_warned(f->s, "s1", id, l.until_ms, err, sizeof err), 1);
    assert_int_equal(ctl_store_mark_warned(f->s, "s1", id, l.until_ms, err, sizeof err), 1);
    ctl_lease g;
    assert_int_equal(ctl_store_get(f->s, "s1", &g, err, sizeof err), 1);
    assert_true(g.warned);
    reopen(f);
    assert_int_equal(ctl_store_get(f->s, "s1", &g, err, sizeof err), 1);
    assert_true(g.warned);
}

typedef struct {
    char seen[64][CTL_SERIAL_MAX + 1];
    int n, stop_after;
    char bad[8][300];
    int nbad;
    ctl_store *s;
    int reentry_rc;
} visit_log;

static int visit(const ctl_lease *l, void *arg)
{
    visit_log *v = arg;
    snprintf(v->seen[v->n++], sizeof v->seen[0], "%s", l->serial);
    if (v->s) {
        char err[128];
        v->reentry_rc = (int)ctl_store_count(v->s, err, sizeof err);
    }
    return v->stop_after && v->n >= v->stop_after;
}

static void bad_record(const char *serial, const char *reason, void *arg)
{
    visit_log *v = arg;
    snprintf(v->bad[v->nbad++], sizeof v->bad[0], "%s: %s", serial, reason);
}

static void persists_across_reopen(void **state)
{
    fx *f = *state;
    ctl_lease in[3] = { mk_lease("z", "alice", "w1"), mk_lease("x", "bob", "w1"), mk_lease("y", "bob", "w2") };
    uint64_t ids[3];
    grant_ok(f, in, 3, ids);
    reopen(f);
    assert_int_equal(count(f), 3);
    visit_log v = { 0 };
    char err[256];
    assert_int_equal(ctl_store_foreach(f->s, visit, bad_record, &v, err, sizeof err), 0);
    assert_int_equal(v.n, 3);
    assert_string_equal(v.seen[0], "x");
    assert_string_equal(v.seen[2], "z");
    ctl_lease l;
    assert_int_equal(ctl_store_get(f->s, "y", &l, err, sizeof err), 1);
    assert_true(l.lease_id == ids[2]);
    /* The id counter persisted too: ids are never reused. */
    uint64_t id;
    ctl_lease more = mk_lease("w", "carol", "w1");
    grant_ok(f, &more, 1, &id);
    assert_true(id == ids[2] + 1);
    /* The by_client index persisted. */
    ctl_lease_list out = CTL_LEASE_LIST_INIT;
    assert_int_equal(ctl_store_end_all(f->s, "bob", &out, err, sizeof err), 0);
    assert_string_equal(serials_of(&out), "x y");
    ctl_lease_list_free(&out);
}

static void foreach_stops_and_refuses_reentry(void **state)
{
    fx *f = *state;
    grant1(f, "a", "alice", "w1");
    grant1(f, "b", "alice", "w1");
    grant1(f, "c", "alice", "w1");
    visit_log v = { .stop_after = 2, .s = f->s };
    char err[256];
    assert_int_equal(ctl_store_foreach(f->s, visit, NULL, &v, err, sizeof err), 0);
    assert_int_equal(v.n, 2);
    assert_int_equal(v.reentry_rc, CTL_STORE_EBUSY);
    assert_int_equal(count(f), 3); /* and usable again afterwards */
    assert_int_equal(ctl_store_foreach(f->s, NULL, NULL, NULL, err, sizeof err), CTL_STORE_EINVAL);
}

/* Corrupt records are reported with a reason; nothing crashes; purge repairs. */
static void corrupt_records(void **state)
{
    fx *f = *state;
    grant1(f, "good", "alice", "w1");
    grant1(f, "junk", "alice", "w1");
    ctl_store_close(f->s);
    f->s = NULL;
    raw_put(f->dir, "leases", "junk", "\xff\xad\xbe\xef", 4);
    const uint8_t bomb[] = { 0xdf, 0x7f, 0xff, 0xff, 0xff, 0x01 };
    raw_put(f->dir, "leases", "bomb", bomb, sizeof bomb);
    const uint8_t future[] = { 0x81, 0xa1, 'v', 0x02 };
    raw_put(f->dir, "leases", "futur\x01", future, sizeof future);
    f->s = open_ok(f->dir);
    assert_int_equal(count(f), 4);
    char err[256];
    ctl_lease l;
    assert_int_equal(ctl_store_get(f->s, "junk", &l, err, sizeof err), CTL_STORE_ECORRUPT);
    assert_string_equal(err, "lease junk is corrupt: record: expected map, found int at byte 0");
    assert_int_equal(ctl_store_get(f->s, "bomb", &l, err, sizeof err), CTL_STORE_ECORRUPT);
    assert_non_null(strstr(err, "map declares 2147483647 entries"));
    visit_log v = { 0 };
    assert_int_equal(ctl_store_foreach(f->s, visit, bad_record, &v, err, sizeof err), 3);
    assert_int_equal(v.n, 1);
    assert_string_equal(v.seen[0], "good");
    assert_string_equal(v.bad[0], "bomb: record: map declares 2147483647 entries but only 1 bytes remain at byte 0");
    assert_string_equal(v.bad[1], "futur\\x01: record: unsupported version 2 (this build reads 1)");
    assert_non_null(strstr(v.bad[2], "junk: record: expected map"));
    /* A corrupt record still blocks its serial: we cannot tell whose it is. */
    ctl_lease g = mk_lease("junk", "bob", "w1");
    assert_int_equal(ctl_store_grant(f->s, &g, 1, NULL, err, sizeof err), CTL_STORE_ECONFLICT);
    assert_string_equal(err, "serial junk has a corrupt lease record");
    /* Client operations skip it (alice's index entry points at it). */
    ctl_lease_list out = CTL_LEASE_LIST_INIT;
    assert_int_equal(ctl_store_extend_all(f->s, "alice", 5, true, &out, err, sizeof err), 0);
    assert_string_equal(serials_of(&out), "good");
    const char *js[] = { "good", "junk" };
    assert_int_equal(ctl_store_end(f->s, "alice", js, 2, &out, err, sizeof err), 0);
    assert_string_equal(serials_of(&out), "good good");
    ctl_lease_list_free(&out);
    assert_int_equal(ctl_store_end_worker(f->s, "w1", &out, err, sizeof err), 0);
    assert_int_equal(out.n, 0);
    /* An administrative end of it fails whole, and says why. */
    grant1(f, "good", "alice", "w1");
    assert_int_equal(ctl_store_end(f->s, NULL, js, 2, &out, err, sizeof err), CTL_STORE_ECORRUPT);
    assert_non_null(strstr(err, "lease junk is corrupt"));
    assert_int_equal(out.n, 0);
    assert_int_equal(held_by(f, "good", "alice"), 1);
    /* Purge is the repair; the stale index entry is dropped on the next walk. */
    assert_int_equal(ctl_store_purge(f->s, "junk", err, sizeof err), 1);
    assert_int_equal(ctl_store_purge(f->s, "junk", err, sizeof err), 0);
    assert_int_equal(ctl_store_purge(f->s, "good", err, sizeof err), 1);
    assert_int_equal(ctl_store_purge(f->s, "bomb", err, sizeof err), 1);
    assert_int_equal(ctl_store_end_all(f->s, "alice", &out, err, sizeof err), 0);
    assert_int_equal(out.n, 0);
    grant1(f, "junk", "bob", "w1");
    assert_int_equal(count(f), 2);
    ctl_lease_list_free(&out);
}

static void schema_checked(void **state)
{
    fx *f = *state;
    ctl_store_close(f->s);
    f->s = NULL;
    raw_put(f->dir, "meta", "schema", "\0\0\0\0\0\0\0\x02", 8);
    char err[256];
    assert_null(ctl_store_open(f->dir, err, sizeof err));
    assert_string_equal(err, "unsupported store schema 2 (this build knows 1)");
    raw_put(f->dir, "meta", "schema", "\x01", 1);
    assert_null(ctl_store_open(f->dir, err, sizeof err));
    assert_string_equal(err, "meta schema is 1 bytes, expected 8");
    raw_put(f->dir, "meta", "schema", "\0\0\0\0\0\0\0\x01", 8);
    raw_put(f->dir, "meta", "next_id", "\0\0\0\0\0\0\0\0", 8);
    assert_null(ctl_store_open(f->dir, err, sizeof err));
    assert_string_equal(err, "meta next_id is 0");
    raw_put(f->dir, "meta", "next_id", "\0\0\0\0\0\0\0\x09", 8);
    f->s = open_ok(f->dir);
    uint64_t id;
    ctl_lease l = mk_lease("s", "c", "w");
    grant_ok(f, &l, 1, &id);
    assert_true(id == 9);
}

/* Random grants/extends/ends from several clients, checked against a model
 * after every step: the store must agree on every serial's holder. */
#define NS 12
#define NC 4
static void model_checked_contention(void **state)
{
    fx *f = *state;
    const char *clients[NC] = { "c0", "c\"1", "c\\2", "c3 \xc3\xa9" };
    char serials[NS][16];
    int holder[NS];
    for (int i = 0; i < NS; i++) {
        snprintf(serials[i], sizeof serials[i], "s%02d", i);
        holder[i] = -1;
    }
    srand(4242);
    int grants = 0, conflicts = 0;
    for (int step = 0; step < 3000; step++) {
        int c = rand() % NC, op = rand() % 10;
        char err[256];
        ctl_lease_list out = CTL_LEASE_LIST_INIT;
        if (op < 5) {
            int n = 1 + rand() % 3, pick[3];
            ctl_lease req[3];
            bool free_all = true, distinct = true;
            for (int k = 0; k < n; k++) {
                pick[k] = rand() % NS;
                req[k] = mk_lease(serials[pick[k]], clients[c], pick[k] % 2 ? "w1" : "w2");
                free_all &= holder[pick[k]] < 0;
                for (int j = 0; j < k; j++)
                    distinct &= pick[j] != pick[k];
            }
            int rc = ctl_store_grant(f->s, req, (size_t)n, NULL, err, sizeof err);
            if (free_all && distinct) {
                assert_int_equal(rc, 0);
                for (int k = 0; k < n; k++)
                    holder[pick[k]] = c;
                grants++;
            } else {
                assert_int_equal(rc, CTL_STORE_ECONFLICT);
                conflicts++;
            }
        } else if (op < 7) {
            const char *want[2] = { serials[rand() % NS], serials[rand() % NS] };
            assert_int_equal(ctl_store_end(f->s, clients[c], want, 2, &out, err, sizeof err), 0);
            for (size_t k = 0; k < out.n; k++) {
                int i = atoi(out.v[k].serial + 1);
                assert_int_equal(holder[i], c);
                holder[i] = -1;
            }
            for (int k = 0; k < 2; k++)
                assert_true(holder[atoi(want[k] + 1)] != c);
        } else if (op < 8) {
            assert_int_equal(ctl_store_end_all(f->s, clients[c], &out, err, sizeof err), 0);
            for (int i = 0; i < NS; i++) {
                if (holder[i] == c)
                    holder[i] = -1;
            }
        } else if (op < 9) {
            assert_int_equal(ctl_store_extend_all(f->s, clients[c], (uint64_t)step, true, &out, err, sizeof err), 0);
            size_t mine = 0;
            for (int i = 0; i < NS; i++)
                mine += holder[i] == c;
            assert_int_equal(out.n, mine);
        } else {
            assert_int_equal(ctl_store_end_worker(f->s, "w1", &out, err, sizeof err), 0);
            for (int i = 1; i < NS; i += 2)
                holder[i] = -1;
        }
        ctl_lease_list_free(&out);
        if (step % 100 == 99)
            reopen(f);
        long long n = 0;
        for (int i = 0; i < NS; i++) {
            assert_int_equal(held_by(f, serials[i], holder[i] >= 0 ? clients[holder[i]] : ""), holder[i] >= 0);
            n += holder[i] >= 0;
        }
        assert_int_equal(count(f), n);
    }
    assert_true(grants > 100 && conflicts > 100);
}

/* 100k leases: the map is big enough, and per-client operations stay cheap. */
static void hundred_thousand_leases(void **state)
{
    fx *f = *state;
    enum {
        N = 100000,
        BATCH = 10000
    };
    static ctl_lease batch[BATCH];
    static const uint8_t args[256] = { 0x90 };
    char name[64];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int b = 0; b < N / BATCH; b++) {
        for (int i = 0; i < BATCH; i++) {
            int k = b * BATCH + i;
            snprintf(name, sizeof name, "SER%06d", k);
            char client[16], worker[16];
            snprintf(client, sizeof client, "client%d", k % 1000);
            snprintf(worker, sizeof worker, "w%d", k % 50);
            batch[i] = mk_lease(name, client, worker);
            batch[i].args = args;
            batch[i].args_len = sizeof args;
        }
        grant_ok(f, batch, BATCH, NULL);
    }
    assert_int_equal(count(f), N);
    char err[256];
    ctl_lease_list out = CTL_LEASE_LIST_INIT;
    assert_int_equal(ctl_store_extend_all(f->s, "client7", 1, true, &out, err, sizeof err), 0);
    assert_int_equal(out.n, N / 1000);
    ctl_lease_list_free(&out);
    assert_int_equal(ctl_store_end_worker(f->s, "w3", &out, err, sizeof err), 0);
    assert_int_equal(out.n, N / 50);
    ctl_lease_list_free(&out);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    print_message("100k leases granted in %d txns + extend_all + end_worker: %.2f s\n", N / BATCH,
                  (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(open_creates_nested_dir),
        T(round_trip_all_fields),
        T(grant_all_or_nothing),
        T(extend_only_by_holder),
        T(extend_never_shortens_unless_set),
        T(end_only_by_holder),
        T(end_worker_ends_its_boards),
        T(mark_warned_matches_lease_and_deadline),
        T(persists_across_reopen),
        T(foreach_stops_and_refuses_reentry),
        T(corrupt_records),
        T(schema_checked),
        T(model_checked_contention),
        T(hundred_thousand_leases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
