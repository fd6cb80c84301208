/* Lease store operations: grant, extend and end (pick target serials, then
 * change them in ONE write txn), mark_warned and purge, the reads (get, foreach,
 * count), and ctl_lease_list, the growable array every operation reports into. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "icefarm/grow.h"
#include "store_codec.h"
#include "store_internal.h"
#include "icefarm/err.h"

/* ---- ctl_lease_list: what every operation reports into ---- */

void ctl_lease_clear(ctl_lease *lease)
{
    /* args is const for callers that pass borrowed bytes in; leases produced by
   * the store own a malloc'd copy, which is what gets freed here. */
    free((void *)lease->args);
    lease->args = NULL;
    lease->args_len = 0;
}

void store_list_truncate(ctl_lease_list *list, size_t n)
{
    while (list->n > n)
        ctl_lease_clear(&list->v[--list->n]);
}

void ctl_lease_list_free(ctl_lease_list *list)
{
    store_list_truncate(list, 0);
    free(list->v);
    list->v = NULL;
    list->cap = 0;
}

int store_list_push(ctl_lease_list *list, const ctl_lease *l)
{
    ctl_lease *v = ifm_grow(list->v, &list->cap, list->n, sizeof *v, 8);
    if (!v)
        return CTL_STORE_ENOMEM;
    list->v = v;
    ctl_lease copy = *l;
    copy.args = NULL;
    if (l->args_len) {
        uint8_t *a = malloc(l->args_len);
        if (!a)
            return CTL_STORE_ENOMEM;
        memcpy(a, l->args, l->args_len);
        copy.args = a;
    }
    list->v[list->n++] = copy;
    return 0;
}

/* ---- grant: N leases in one write transaction, all or nothing ---- */

/* Says why serial `l` could not be inserted: already leased by someone, or
 * repeated in this very request (its record then carries an id from this batch). */
static int conflict(ctl_store *s, MDB_txn *txn, const ctl_lease *l, uint64_t first_id, char *err, size_t errlen)
{
    ctl_lease cur;
    char why[256];
    int rc = store_read(s, txn, l->serial, &cur, why, sizeof why);
    if (rc == 1 && cur.lease_id >= first_id)
        return ifm_failbuf(err, errlen, CTL_STORE_ECONFLICT, "serial %s appears twice in the request", l->serial);
    if (rc == CTL_STORE_ECORRUPT)
        return ifm_failbuf(err, errlen, CTL_STORE_ECONFLICT, "serial %s has a corrupt lease record", l->serial);
    return ifm_failbuf(err, errlen, CTL_STORE_ECONFLICT, "serial %s is already leased", l->serial);
}

int ctl_store_grant(ctl_store *store, const ctl_lease *leases, size_t n, uint64_t *ids_out, char *err, size_t errlen)
{
    if (n == 0)
        return 0;
    if (!store || !leases)
        return ifm_failbuf(err, errlen, CTL_STORE_EINVAL, "no store or leases");
    /* Validate everything before touching the env: a bad request costs no txn. */
    for (size_t i = 0; i < n; i++) {
        char why[256];
        if (store_lease_check(&leases[i], why, sizeof why))
            return ifm_failbuf(err, errlen, CTL_STORE_EINVAL, "lease %zu: %s", i, why);
    }
    MDB_txn *txn;
    int rc = store_begin(store, true, &txn, err, errlen);
    if (rc)
        return rc;
    uint64_t first;
    rc = store_next_id(store, txn, &first, err, errlen);
    if (!rc && first > UINT64_MAX - n)
        rc = ifm_failbuf(err, errlen, CTL_STORE_EIO, "lease ids exhausted");
    for (size_t i = 0; !rc && i < n; i++) {
        ctl_lease l = leases[i];
        l.lease_id = first + i;
        l.warned = false;
        rc = store_write(store, txn, &l, true, err, errlen);
        if (rc == CTL_STORE_ECONFLICT)
            rc = conflict(store, txn, &l, first, err, errlen);
    }
    if (!rc)
        rc = store_meta_put(store, txn, "next_id", first + n, err, errlen);
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    rc = store_commit(txn, err, errlen);
    if (rc)
        return rc;
    /* Only now, with the commit on disk, do the ids exist. */
    for (size_t i = 0; ids_out && i < n; i++)
        ids_out[i] = first + i;
    return 0;
}

/* ---- extend and end: pick target serials, then change them in ONE write txn ---- */

typedef char store_serial[CTL_SERIAL_MAX + 1];

/* The serials an operation will look at, each once, in serial order. */
typedef struct {
    store_serial *v;
    size_t n, cap;
} targets;

static int targets_add(targets *t, const char *serial, size_t len)
{
    store_serial *v = ifm_grow(t->v, &t->cap, t->n, sizeof *v, 16);
    if (!v)
        return CTL_STORE_ENOMEM;
    t->v = v;
    memcpy(t->v[t->n], serial, len);
    t->v[t->n++][len] = '\0';
    return 0;
}

static int serial_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* Sorts and drops repeats, so "extend a, a" reports a once. */
static void targets_unique(targets *t)
{
    if (t->n < 2)
        return;
    qsort(t->v, t->n, sizeof *t->v, serial_cmp);
    size_t w = 1;
    for (size_t i = 1; i < t->n; i++)
        if (strcmp(t->v[i], t->v[w - 1]) != 0)
            memmove(t->v[w++], t->v[i], sizeof *t->v);
    t->n = w;
}

/* Serials the caller listed. Invalid ones cannot be leased, so they are
 * simply not found, like unknown ones. */
static int targets_listed(targets *t, const char *const *serials, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!serials || store_text_check("serial", serials[i], CTL_SERIAL_MAX, NULL, 0))
            continue;
        if (targets_add(t, serials[i], strlen(serials[i])))
            return CTL_STORE_ENOMEM;
    }
    targets_unique(t);
    return 0;
}

/* Serials the by_client index lists for `client`. */
static int targets_client(ctl_store *s, MDB_txn *txn, const char *client, targets *t, char *err, size_t errlen)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, s->by_client, &c);
    if (rc)
        return ifm_failbuf(err, errlen, CTL_STORE_EIO, "open index cursor: %s", mdb_strerror(rc));
    MDB_val k = { .mv_size = strlen(client), .mv_data = (void *)client }, d;
    for (rc = mdb_cursor_get(c, &k, &d, MDB_SET); rc == 0; rc = mdb_cursor_get(c, &k, &d, MDB_NEXT_DUP)) {
        /* An entry that cannot be a serial cannot point at a lease: ignore it. */
        if (d.mv_size == 0 || d.mv_size > CTL_SERIAL_MAX || memchr(d.mv_data, 0, d.mv_size))
            continue;
        if (targets_add(t, d.mv_data, d.mv_size)) {
            mdb_cursor_close(c);
            return ifm_failbuf(err, errlen, CTL_STORE_ENOMEM, "out of memory");
        }
    }
    mdb_cursor_close(c);
    if (rc != MDB_NOTFOUND)
        return ifm_failbuf(err, errlen, CTL_STORE_EIO, "read index: %s", mdb_strerror(rc));
    targets_unique(t);
    return 0;
}

/* Serials of every decodable lease on `worker` (a scan: workers die rarely). */
static int targets_worker(ctl_store *s, MDB_txn *txn, const char *worker, targets *t, char *err, size_t errlen)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, s->leases, &c);
    if (rc)
        return ifm_failbuf(err, errlen, CTL_STORE_EIO, "open cursor: %s", mdb_strerror(rc));
    MDB_val k, d;
    for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
        ctl_lease l;
        if (store_lease_decode(k.mv_data, k.mv_size, d.mv_data, d.mv_size, &l, NULL, 0))
            continue;
        if (strcmp(l.worker, worker) == 0 && targets_add(t, l.serial, strlen(l.serial))) {
            mdb_cursor_close(c);
            return ifm_failbuf(err, errlen, CTL_STORE_ENOMEM, "out of memory");
        }
    }
    mdb_cursor_close(c);
    if (rc != MDB_NOTFOUND)
        return ifm_failbuf(err, errlen, CTL_STORE_EIO, "scan leases: %s", mdb_strerror(rc));
    return 0;
}

typedef struct {
    const char *client; /* only this holder's leases; NULL: any holder */
    const char *worker; /* only leases on this worker; NULL: any */
    bool end;           /* end, else extend to until_ms */
    uint64_t until_ms;
    bool set;            /* extend: to until_ms even if earlier than the lease's end */
    bool strict_corrupt; /* a corrupt target fails the call instead of being skipped */
    bool from_index;     /* targets came from by_client: drop entries that are stale */
} action;

static int apply_one(ctl_store *s, MDB_txn *txn, const char *serial, const action *a, ctl_lease_list *out, char *err,
                     size_t errlen)
{
    ctl_lease l;
    int rc = store_read(s, txn, serial, &l, err, errlen);
    if (rc == CTL_STORE_ECORRUPT && !a->strict_corrupt)
        return 0;
    if (rc < 0)
        return rc;
    if (rc == 0 || (a->client && strcmp(l.client, a->client) != 0) || (a->worker && strcmp(l.worker, a->worker) != 0))
        return a->from_index ? store_unindex(s, txn, a->client, serial, err, errlen) : 0;
    if (!a->end && (a->set || a->until_ms > l.until_ms)) {
        l.until_ms = a->until_ms;
        l.warned = false;
    }
    /* Copy into `out` BEFORE writing: l.args points into a page this txn may
   * rewrite; the list's copy owns its args. */
    if (store_list_push(out, &l))
        return ifm_failbuf(err, errlen, CTL_STORE_ENOMEM, "out of memory");
    const ctl_lease *kept = &out->v[out->n - 1];
    return a->end ? store_delete(s, txn, kept, err, errlen) : store_write(s, txn, kept, false, err, errlen);
}

/* Collects targets with `pick` (if given) inside the txn, applies the action to
 * each, commits. On any failure nothing is written and `out` is as it was. */
typedef int (*pick_fn)(ctl_store *s, MDB_txn *txn, const char *key, targets *t, char *err, size_t errlen);

static int run(ctl_store *s, pick_fn pick, const char *key, targets *t, const action *a, ctl_lease_list *out, char *err,
               size_t errlen)
{
    if (!out)
        return ifm_failbuf(err, errlen, CTL_STORE_EINVAL, "no output list");
    MDB_txn *txn;
    int rc = store_begin(s, true, &txn, err, errlen);
    if (rc)
        return rc;
    size_t mark = out->n;
    if (pick)
        rc = pick(s, txn, key, t, err, errlen);
    for (size_t i = 0; !rc && i < t->n; i++)
        rc = apply_one(s, txn, t->v[i], a, out, err, errlen);
    if (rc)
        mdb_txn_abort(txn);
    else
        rc = store_commit(txn, err, errlen);
    if (rc)
        store_list_truncate(out, mark);
    return rc;
}

static int check_name(const char *what, const char *name, size_t max, char *err, size_t errlen)
{
    char why[200];
    if (store_text_check(what, name, max, why, sizeof why))
        return ifm_failbuf(err, errlen, CTL_STORE_EINVAL, "%s", why);
    return 0;
}

static int run_listed(ctl_store *s, const char *const *serials, size_t n, const action *a, ctl_lease_list *out,
                      char *err, size_t errlen)
{
    targets t = { 0 };
    int rc = targets_listed(&t, serials, n);
    if (rc)
        rc = ifm_failbuf(err, errlen, rc, "out of memory");
    else
        rc = run(s, NULL, NULL, &t, a, out, err, errlen);
    free(t.v);
    return rc;
}

static int run_picked(ctl_store *s, pick_fn pick, const char *key, const action *a, ctl_lease_list *out, char *err,
                      size_t errlen)
{
    targets t = { 0 };
    int rc = run(s, pick, key, &t, a, out, err, errlen);
    free(t.v);
    return rc;
}

int ctl_store_extend(ctl_store *store, const char *client, const char *const *serials, size_t n, uint64_t until_ms,
                     bool set, ctl_lease_list *out, char *err, size_t errlen)
{
    int rc = check_name("client", client, CTL_CLIENT_MAX, err, errlen);
    if (rc)
        return rc;
    action a = { .client = client, .until_ms = until_ms, .set = set };
    return run_listed(store, serials, n, &a, out, err, errlen);
}

int ctl_store_extend_all(ctl_store *store, const char *client, uint64_t until_ms, bool set, ctl_lease_list *out,
                         char *err, size_t errlen)
{
    int rc = check_name("client", client, CTL_CLIENT_MAX, err, errlen);
    if (rc)
        return rc;
    action a = { .client = client, .until_ms = until_ms, .set = set, .from_index = true };
    return run_picked(store, targets_client, client, &a, out, err, errlen);
}

int ctl_store_end(ctl_store *store, const char *client, const char *const *serials, size_t n, ctl_lease_list *out,
                  char *err, size_t errlen)
{
    int rc = client ? check_name("client", client, CTL_CLIENT_MAX, err, errlen) : 0;
    if (rc)
        return rc;
    action a = { .client = client, .end = true, .strict_corrupt = client == NULL };
    return run_listed(store, serials, n, &a, out, err, errlen);
}

int ctl_store_end_all(ctl_store *store, const char *client, ctl_lease_list *out, char *err, size_t errlen)
{
    int rc = check_name("client", client, CTL_CLIENT_MAX, err, errlen);
    if (rc)
        return rc;
    action a = { .client = client, .end = true, .from_index = true };
    return run_picked(store, targets_client, client, &a, out, err, errlen);
}

int ctl_store_end_worker(ctl_store *store, const char *worker, ctl_lease_list *out, char *err, size_t errlen)
{
    int rc = check_name("worker", worker, CTL_WORKER_MAX, err, errlen);
    if (rc)
        return rc;
    action a = { .worker = worker, .end = true };
    return run_picked(store, targets_worker, worker, &a, out, err, errlen);
}

/* ---- single-record writes: the warning mark, the repair path ---- */

int ctl_store_mark_warned(ctl_store *store, const char *serial, uint64_t lease_id, uint64_t until_ms, char *err,
                          size_t errlen)
{
    int rc = check_name("serial", serial, CTL_SERIAL_MAX, err, errlen);
    if (rc)
        return rc;
    MDB_txn *txn;
    if ((rc = store_begin(store, true, &txn, err, errlen)))
        return rc;
    ctl_lease l;
    rc = store_read(store, txn, serial, &l, err, errlen);
    if (rc == 1 && (l.lease_id != lease_id || l.until_ms != until_ms))
        rc = 0;
    if (rc != 1 || l.warned) {
        mdb_txn_abort(txn);
        return rc;
    }
    l.warned = true;
    rc = store_write(store, txn, &l, false, err, errlen);
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    rc = store_commit(txn, err, errlen);
    return rc ? rc : 1;
}

int ctl_store_purge(ctl_store *store, const char *serial, char *err, size_t errlen)
{
    if (!serial || !*serial || strlen(serial) > CTL_SERIAL_MAX)
        return ifm_failbuf(err, errlen, CTL_STORE_EINVAL, "bad serial");
    MDB_txn *txn;
    int rc = store_begin(store, true, &txn, err, errlen);
    if (rc)
        return rc;
    ctl_lease l;
    char why[256];
    int found = store_read(store, txn, serial, &l, why, sizeof why);
    if (found == 1) {
        rc = store_delete(store, txn, &l, err, errlen);
    } else if (found == CTL_STORE_ECORRUPT) {
        /* Its by_client entry, if any, is dropped later as stale (see apply_one). */
        MDB_val k = { .mv_size = strlen(serial), .mv_data = (void *)serial };
        int mrc = mdb_del(txn, store->leases, &k, NULL);
        if (mrc)
            rc = ifm_failbuf(err, errlen, CTL_STORE_EIO, "delete %s: %s", serial, mdb_strerror(mrc));
    } else {
        rc = found ? ifm_failbuf(err, errlen, found, "%s", why) : 0;
        mdb_txn_abort(txn);
        return rc;
    }
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    rc = store_commit(txn, err, errlen);
    return rc ? rc : 1;
}

/* ---- reads: one lease, every lease, the count ---- */

int ctl_store_get(ctl_store *store, const char *serial, ctl_lease *out, char *err, size_t errlen)
{
    if (!out)
        return ifm_failbuf(err, errlen, CTL_STORE_EINVAL, "no output lease");
    memset(out, 0, sizeof *out);
    char why[200];
    if (store_text_check("serial", serial, CTL_SERIAL_MAX, why, sizeof why))
        return ifm_failbuf(err, errlen, CTL_STORE_EINVAL, "%s", why);
    MDB_txn *txn;
    int rc = store_begin(store, false, &txn, err, errlen);
    if (rc)
        return rc;
    ctl_lease l;
    rc = store_read(store, txn, serial, &l, err, errlen);
    if (rc == 1) {
        /* l.args lives in the map only while txn is open: give the caller a copy. */
        *out = l;
        out->args = NULL;
        if (l.args_len) {
            uint8_t *a = malloc(l.args_len);
            if (a) {
                memcpy(a, l.args, l.args_len);
                out->args = a;
            } else {
                memset(out, 0, sizeof *out);
                rc = ifm_failbuf(err, errlen, CTL_STORE_ENOMEM, "out of memory");
            }
        }
    }
    mdb_txn_abort(txn);
    return rc;
}

/* Renders a key from disk for a message: printable ASCII as is, the rest as \xHH. */
static void show_key(const MDB_val *k, char *dst, size_t cap)
{
    size_t o = 0, i = 0;
    const unsigned char *p = k->mv_data;
    for (; i < k->mv_size && o + 8 < cap; i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\')
            dst[o++] = (char)p[i];
        else
            o += (size_t)snprintf(dst + o, cap - o, "\\x%02x", p[i]);
    }
    if (i < k->mv_size)
        o += (size_t)snprintf(dst + o, cap - o, "...");
    dst[o] = '\0';
}

int ctl_store_foreach(ctl_store *store, ctl_store_visit_fn visit, ctl_store_bad_fn bad, void *arg, char *err,
                      size_t errlen)
{
    if (!visit)
        return ifm_failbuf(err, errlen, CTL_STORE_EINVAL, "no visit callback");
    MDB_txn *txn;
    int rc = store_begin(store, false, &txn, err, errlen);
    if (rc)
        return rc;
    MDB_cursor *c;
    rc = mdb_cursor_open(txn, store->leases, &c);
    if (rc) {
        mdb_txn_abort(txn);
        return ifm_failbuf(err, errlen, CTL_STORE_EIO, "open cursor: %s", mdb_strerror(rc));
    }
    /* The callbacks see leases that borrow from this read txn; a store call from
   * inside them would need a second txn in this thread, so it is refused. */
    store->busy = true;
    int corrupt = 0;
    MDB_val k, d;
    for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
        ctl_lease l;
        char why[256];
        if (store_lease_decode(k.mv_data, k.mv_size, d.mv_data, d.mv_size, &l, why, sizeof why)) {
            corrupt++;
            if (bad) {
                char key[CTL_SERIAL_MAX * 4 + 16];
                show_key(&k, key, sizeof key);
                bad(key, why, arg);
            }
            continue;
        }
        if (visit(&l, arg)) {
            rc = MDB_NOTFOUND; /* stopped on request: a normal end */
            break;
        }
    }
    store->busy = false;
    mdb_cursor_close(c);
    mdb_txn_abort(txn);
    if (rc != MDB_NOTFOUND)
        return ifm_failbuf(err, errlen, CTL_STORE_EIO, "scan leases: %s", mdb_strerror(rc));
    return corrupt;
}

long long ctl_store_count(ctl_store *store, char *err, size_t errlen)
{
    MDB_txn *txn;
    int rc = store_begin(store, false, &txn, err, errlen);
    if (rc)
        return rc;
    MDB_stat st;
    rc = mdb_stat(txn, store->leases, &st);
    mdb_txn_abort(txn);
    if (rc)
        return ifm_failbuf(err, errlen, CTL_STORE_EIO, "stat leases: %s", mdb_strerror(rc));
    return (long long)st.ms_entries;
}
