/* Lease store across processes: kill -9 right after a grant, kill -9 in the
 * middle of a stream of grants, readers left by dead processes, several
 * processes racing for the same serials, and the single-owner claim. */
#include <errno.h>
#include <lmdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "store.h"
#include "store_test_util.h"

static int setup(void **state)
{
    *state = tdir_make();
    return 0;
}

static int teardown(void **state)
{
    tdir_remove(*state);
    return 0;
}

/* Children report through a pipe or log files and exit with a code; they never
 * run cmocka asserts (a failed assert would longjmp into the parent's runner). */
static void child_fail(const char *what, const char *err)
{
    fprintf(stderr, "child %d: %s: %s\n", (int)getpid(), what, err);
    _exit(2);
}

static void write_all(int fd, const void *p, size_t n)
{
    if (write(fd, p, n) != (ssize_t)n)
        _exit(3);
}

static int wait_child(pid_t pid)
{
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return st;
}

/* The child is told its lease ids only after ctl_store_grant returns (as a
 * client would be), then dies without closing anything. */
static void grant_then_die(const char *dir, bool sigkill)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        char err[256];
        ctl_store *s = ctl_store_open(dir, err, sizeof err);
        if (!s)
            child_fail("open", err);
        ctl_lease l[2] = { mk_lease(sigkill ? "K1" : "E1", "dying", "w1"),
                           mk_lease(sigkill ? "K2" : "E2", "dying", "w2") };
        uint64_t ids[2];
        if (ctl_store_grant(s, l, 2, ids, err, sizeof err))
            child_fail("grant", err);
        write_all(p[1], ids, sizeof ids);
        if (sigkill)
            raise(SIGKILL);
        _exit(0);
    }
    close(p[1]);
    uint64_t ids[2];
    assert_int_equal(read(p[0], ids, sizeof ids), (ssize_t)sizeof ids);
    close(p[0]);
    int st = wait_child(pid);
    if (sigkill)
        assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    else
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ctl_store *s = open_ok(dir);
    char err[256];
    ctl_lease l;
    assert_int_equal(ctl_store_get(s, sigkill ? "K1" : "E1", &l, err, sizeof err), 1);
    assert_true(l.lease_id == ids[0]);
    assert_string_equal(l.client, "dying");
    assert_int_equal(ctl_store_get(s, sigkill ? "K2" : "E2", &l, err, sizeof err), 1);
    assert_true(l.lease_id == ids[1]);
    ctl_store_close(s);
}

static void lease_survives_kill9(void **state)
{
    grant_then_die(*state, true);
    grant_then_die(*state, false);
}

/* kill -9 at an arbitrary point of a stream of 10-lease grants: every grant
 * the child acknowledged is complete on disk, and no grant is half there. */
static void kill9_mid_stream_is_atomic(void **state)
{
    const char *dir = *state;
    enum {
        B = 10
    };
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        char err[256];
        ctl_store *s = ctl_store_open(dir, err, sizeof err);
        if (!s)
            child_fail("open", err);
        static uint8_t args[3000];
        for (uint32_t b = 0;; b++) {
            ctl_lease l[B];
            for (int j = 0; j < B; j++) {
                char serial[32];
                snprintf(serial, sizeof serial, "b%05u-%d", b, j);
                l[j] = mk_lease(serial, "streamer", "w1");
                l[j].args = args; /* big records: more pages per commit */
                l[j].args_len = sizeof args;
            }
            if (ctl_store_grant(s, l, B, NULL, err, sizeof err))
                child_fail("grant", err);
            write_all(p[1], &b, sizeof b);
        }
    }
    close(p[1]);
    uint32_t acked = 0, b;
    while (acked < 40 && read(p[0], &b, sizeof b) == (ssize_t)sizeof b)
        acked = b + 1;
    kill(pid, SIGKILL);
    int st = wait_child(pid);
    assert_true(WIFSIGNALED(st));
    close(p[0]);
    ctl_store *s = open_ok(dir);
    char err[256];
    long long n = ctl_store_count(s, err, sizeof err);
    assert_true(n >= (long long)acked * B);
    assert_int_equal(n % B, 0);
    for (uint32_t i = 0; i < (uint32_t)(n / B); i++) {
        for (int j = 0; j < B; j++) {
            char serial[32];
            ctl_lease l;
            snprintf(serial, sizeof serial, "b%05u-%d", i, j);
            assert_int_equal(ctl_store_get(s, serial, &l, err, sizeof err), 1);
            assert_int_equal(l.args_len, 3000);
            ctl_lease_clear(&l);
        }
    }
    ctl_store_close(s);
}

static int die_in_visit(const ctl_lease *l, void *arg)
{
    (void)l, (void)arg;
    raise(SIGKILL);
    return 0;
}

static void child_dies_reading(const char *dir)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char err[256];
        ctl_store *s = ctl_store_open(dir, err, sizeof err);
        if (!s)
            child_fail("open", err);
        ctl_store_foreach(s, die_in_visit, NULL, NULL, err, sizeof err);
        _exit(4);
    }
    int st = wait_child(pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
}

static int raw_dead_readers(const char *dir)
{
    MDB_env *env;
    int dead = -1;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
    assert_int_equal(mdb_reader_check(env, &dead), 0);
    mdb_env_close(env);
    return dead;
}

/* A process killed inside a read txn leaves its reader slot behind; open
 * clears it (otherwise it pins old pages and the file only grows). LMDB resets
 * the reader table when the first process opens the env, so a slot only
 * lingers while another process keeps the env open: `holder` does that. */
static void open_clears_dead_readers(void **state)
{
    const char *dir = *state;
    ctl_store *s = open_ok(dir);
    ctl_lease l = mk_lease("r1", "reader", "w1");
    char err[256];
    assert_int_equal(ctl_store_grant(s, &l, 1, NULL, err, sizeof err), 0);
    ctl_store_close(s);
    int up[2], down[2];
    assert_int_equal(pipe(up), 0);
    assert_int_equal(pipe(down), 0);
    pid_t holder = fork();
    assert_true(holder >= 0);
    if (holder == 0) {
        close(up[0]);
        close(down[1]);
        char c;
        ctl_store *h = ctl_store_open(dir, err, sizeof err);
        if (!h)
            child_fail("open", err);
        write_all(up[1], "k", 1);
        if (read(down[0], &c, 1) < 0)
            _exit(5);
        ctl_store_close(h);
        _exit(0);
    }
    close(up[1]);
    close(down[0]);
    char c;
    assert_int_equal(read(up[0], &c, 1), 1);
    child_dies_reading(dir);
    assert_int_equal(raw_dead_readers(dir), 1); /* the slot really is left behind */
    child_dies_reading(dir);
    s = open_ok(dir);
    ctl_store_close(s);
    assert_int_equal(raw_dead_readers(dir), 0); /* ctl_store_open cleared it */
    write_all(down[1], "x", 1);
    int st = wait_child(holder);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(up[0]);
    close(down[1]);
}

/* Children wait on `gate` so they start racing at once. */
static void wait_gate(int gate)
{
    char c;
    while (read(gate, &c, 1) < 0 && errno == EINTR) {
    }
}

#define KIDS 6
#define POOL 8

/* Each child grants random subsets of the same POOL serials until it has tried
 * every serial alone; no ends. Logs "G serial id" per lease it got. */
static void race_child(const char *dir, int k, int gate)
{
    wait_gate(gate);
    char err[256], path[4200];
    snprintf(path, sizeof path, "%s/log.%d", dir, k);
    FILE *log = fopen(path, "w");
    ctl_store *s = ctl_store_open(dir, err, sizeof err);
    if (!s || !log)
        child_fail("open", err);
    char client[16];
    snprintf(client, sizeof client, "kid%d", k);
    srand((unsigned)(k * 7919 + 1));
    for (int it = 0; it < 60 + POOL; it++) {
        int n = it < 60 ? 1 + rand() % 3 : 1, pick[3];
        ctl_lease req[3];
        for (int j = 0; j < n; j++) {
            pick[j] = it < 60 ? rand() % POOL : it - 60;
            char serial[16];
            snprintf(serial, sizeof serial, "P%d", pick[j]);
            req[j] = mk_lease(serial, client, "w1");
        }
        uint64_t ids[3];
        int rc = ctl_store_grant(s, req, (size_t)n, ids, err, sizeof err);
        if (rc == 0) {
            for (int j = 0; j < n; j++)
                fprintf(log, "G %s %llu\n", req[j].serial, (unsigned long long)ids[j]);
        } else if (rc != CTL_STORE_ECONFLICT) {
            child_fail("grant", err);
        }
    }
    fclose(log);
    ctl_store_close(s);
    _exit(0);
}

/* Forks KIDS children running `body`, opens the gate, waits for all. */
static void run_kids(const char *dir, void (*body)(const char *, int, int))
{
    int gate[2];
    assert_int_equal(pipe(gate), 0);
    pid_t pids[KIDS];
    for (int k = 0; k < KIDS; k++) {
        pids[k] = fork();
        assert_true(pids[k] >= 0);
        if (pids[k] == 0) {
            close(gate[1]);
            body(dir, k, gate[0]);
        }
    }
    close(gate[0]);
    close(gate[1]); /* EOF on the gate: everyone starts */
    for (int k = 0; k < KIDS; k++) {
        int st = wait_child(pids[k]);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            fail_msg("child %d failed (status 0x%x)", k, st);
    }
}

typedef struct {
    char op;
    char serial[16];
    unsigned long long id;
    int kid;
} event;

static size_t read_logs(const char *dir, event *ev, size_t cap)
{
    size_t n = 0;
    for (int k = 0; k < KIDS; k++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/log.%d", dir, k);
        FILE *f = fopen(path, "r");
        assert_non_null(f);
        event e = { .kid = k };
        while (n < cap && fscanf(f, " %c %15s %llu", &e.op, e.serial, &e.id) == 3)
            ev[n++] = e;
        fclose(f);
    }
    return n;
}

static void processes_never_double_book(void **state)
{
    const char *dir = *state;
    ctl_store_close(open_ok(dir)); /* create the schema before the race */
    run_kids(dir, race_child);
    static event ev[10000];
    size_t n = read_logs(dir, ev, 10000);
    /* Every serial was granted exactly once, whoever won it. */
    int won_by[POOL];
    for (int i = 0; i < POOL; i++)
        won_by[i] = -1;
    for (size_t i = 0; i < n; i++) {
        int sn = atoi(ev[i].serial + 1);
        if (won_by[sn] >= 0)
            fail_msg("%s granted twice (kid%d and kid%d)", ev[i].serial, won_by[sn], ev[i].kid);
        won_by[sn] = ev[i].kid;
    }
    assert_int_equal(n, POOL);
    ctl_store *s = open_ok(dir);
    char err[256];
    for (size_t i = 0; i < n; i++) {
        ctl_lease l;
        assert_int_equal(ctl_store_get(s, ev[i].serial, &l, err, sizeof err), 1);
        assert_true(l.lease_id == ev[i].id);
        char client[16];
        snprintf(client, sizeof client, "kid%d", ev[i].kid);
        assert_string_equal(l.client, client);
    }
    ctl_store_close(s);
}

/* With churn: children grant, and end what they hold. A grant that overwrote
 * someone's live lease would leave that lease neither ended by its holder nor
 * on disk, so: every granted id is ended exactly once by its holder or is
 * still stored. Children also check that ending their serials returns exactly
 * the leases they were granted. */
static void churn_child(const char *dir, int k, int gate)
{
    wait_gate(gate);
    char err[256], path[4200];
    snprintf(path, sizeof path, "%s/log.%d", dir, k);
    FILE *log = fopen(path, "w");
    ctl_store *s = ctl_store_open(dir, err, sizeof err);
    if (!s || !log)
        child_fail("open", err);
    char client[16];
    snprintf(client, sizeof client, "kid%d", k);
    srand((unsigned)(k * 104729 + 3));
    uint64_t held[POOL] = { 0 }; /* lease id per serial I hold, 0 if none */
    for (int it = 0; it < 250; it++) {
        if (rand() % 3 == 0) {
            const char *mine[POOL];
            char names[POOL][16];
            size_t nm = 0;
            for (int i = 0; i < POOL; i++)
                if (held[i]) {
                    snprintf(names[nm], sizeof names[nm], "P%d", i);
                    mine[nm] = names[nm];
                    nm++;
                }
            ctl_lease_list out = CTL_LEASE_LIST_INIT;
            if (ctl_store_end(s, client, mine, nm, &out, err, sizeof err))
                child_fail("end", err);
            if (out.n != nm)
                child_fail("end", "did not end all my leases");
            for (size_t i = 0; i < out.n; i++) {
                int sn = atoi(out.v[i].serial + 1);
                if (out.v[i].lease_id != held[sn])
                    child_fail("end", "ended a lease id I was not granted");
                fprintf(log, "E %s %llu\n", out.v[i].serial, (unsigned long long)out.v[i].lease_id);
                held[sn] = 0;
            }
            ctl_lease_list_free(&out);
            continue;
        }
        int n = 1 + rand() % 2, pick[2];
        ctl_lease req[2];
        for (int j = 0; j < n; j++) {
            pick[j] = rand() % POOL;
            char serial[16];
            snprintf(serial, sizeof serial, "P%d", pick[j]);
            req[j] = mk_lease(serial, client, k % 2 ? "w1" : "w2");
        }
        uint64_t ids[2];
        int rc = ctl_store_grant(s, req, (size_t)n, ids, err, sizeof err);
        if (rc == 0) {
            for (int j = 0; j < n; j++) {
                if (held[pick[j]])
                    child_fail("grant", "granted a serial I already hold");
                held[pick[j]] = ids[j];
                fprintf(log, "G %s %llu\n", req[j].serial, (unsigned long long)ids[j]);
            }
        } else if (rc != CTL_STORE_ECONFLICT) {
            child_fail("grant", err);
        }
    }
    fclose(log);
    ctl_store_close(s);
    _exit(0);
}

static void processes_churn_without_loss(void **state)
{
    const char *dir = *state;
    ctl_store_close(open_ok(dir));
    run_kids(dir, churn_child);
    static event ev[20000];
    size_t n = read_logs(dir, ev, 20000);
    ctl_store *s = open_ok(dir);
    char err[256];
    size_t grants = 0, live = 0;
    for (size_t i = 0; i < n; i++) {
        if (ev[i].op != 'G')
            continue;
        grants++;
        int ends = 0;
        for (size_t j = 0; j < n; j++) {
            if (ev[j].op == 'G' && j != i)
                assert_true(ev[j].id != ev[i].id); /* ids unique */
            if (ev[j].op == 'E' && ev[j].id == ev[i].id) {
                assert_int_equal(ev[j].kid, ev[i].kid);
                ends++;
            }
        }
        ctl_lease l;
        int rc = ctl_store_get(s, ev[i].serial, &l, err, sizeof err);
        bool stored = rc == 1 && l.lease_id == ev[i].id;
        if (ends + (int)stored != 1)
            fail_msg("lease %llu on %s: ended %d times, stored %d", ev[i].id, ev[i].serial, ends, stored);
        live += stored;
    }
    assert_int_equal(ctl_store_count(s, err, sizeof err), (long long)live);
    assert_true(grants > 100);
    ctl_store_close(s);
}

static void claim_is_exclusive(void **state)
{
    const char *dir = *state;
    ctl_store_close(open_ok(dir));
    int up[2], down[2];
    assert_int_equal(pipe(up), 0);
    assert_int_equal(pipe(down), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(up[0]);
        close(down[1]);
        char err[256], c;
        ctl_store *s = ctl_store_open(dir, err, sizeof err);
        if (!s || ctl_store_claim(s, err, sizeof err))
            child_fail("claim", err);
        write_all(up[1], "k", 1);
        if (read(down[0], &c, 1) < 0)
            _exit(5);
        ctl_store_close(s);
        _exit(0);
    }
    close(up[1]);
    close(down[0]);
    char c, err[256];
    assert_int_equal(read(up[0], &c, 1), 1);
    ctl_store *s = open_ok(dir);
    assert_int_equal(ctl_store_claim(s, err, sizeof err), CTL_STORE_EBUSY);
    char want[128];
    snprintf(want, sizeof want, "(pid %d)", (int)pid);
    assert_non_null(strstr(err, want));
    write_all(down[1], "x", 1);
    int st = wait_child(pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_int_equal(ctl_store_claim(s, err, sizeof err), 0);
    assert_int_equal(ctl_store_claim(s, err, sizeof err), 0); /* idempotent */
    ctl_store_close(s);
    close(up[0]);
    close(down[1]);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(lease_survives_kill9),        T(kill9_mid_stream_is_atomic),   T(open_clears_dead_readers),
        T(processes_never_double_book), T(processes_churn_without_loss), T(claim_is_exclusive),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
