/* Lease store lifecycle and transactions: creating/opening the LMDB env, the
 * schema and the meta DB, the claim, and the transaction and record helpers
 * (begin/commit, read/write/delete one lease record) every operation in
 * store_ops.c is built from. The record's bytes are store_codec.c's. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store_codec.h"
#include "store_internal.h"
#include "icefarm/err.h"

int store_begin(ctl_store *s, bool write, MDB_txn **txn, char *err, size_t errlen)
{
    if (!s)
        return ifm_failbuf(err, errlen, CTL_STORE_EINVAL, "no store");
    if (s->busy)
        return ifm_failbuf(err, errlen, CTL_STORE_EBUSY, "store called from inside a foreach callback");
    int rc = mdb_txn_begin(s->env, NULL, write ? 0 : MDB_RDONLY, txn);
    if (rc == MDB_MAP_RESIZED) {
        /* Another process grew the map: adopt its size and try again. */
        rc = mdb_env_set_mapsize(s->env, 0);
        if (rc == 0)
            rc = mdb_txn_begin(s->env, NULL, write ? 0 : MDB_RDONLY, txn);
    }
    if (rc)
        return ifm_failbuf(err, errlen, CTL_STORE_EIO, "begin transaction: %s", mdb_strerror(rc));
    return 0;
}

int store_commit(MDB_txn *txn, char *err, size_t errlen)
{
    int rc = mdb_txn_commit(txn);
    if (rc == MDB_MAP_FULL)
        return ifm_failbuf(err, errlen, CTL_STORE_EIO, "commit: lease store is full (%s)", mdb_strerror(rc));
    if (rc)
        return ifm_failbuf(err, errlen, CTL_STORE_EIO, "commit: %s", mdb_strerror(rc));
    return 0;
}

static MDB_val text_val(const char *s)
{
    return (MDB_val){ .mv_size = strlen(s), .mv_data = (void *)s };
}

int store_read(ctl_store *s, MDB_txn *txn, const char *serial, ctl_lease *out, char *err, size_t errlen)
{
    MDB_val k = text_val(serial), v;
    memset(out, 0, sizeof *out);
    int rc = mdb_get(txn, s->leases, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return ifm_failbuf(err, errlen, CTL_STORE_EIO, "read lease %s: %s", serial, mdb_strerror(rc));
    char why[256];
    if (store_lease_decode(k.mv_data, k.mv_size, v.mv_data, v.mv_size, out, why, sizeof why))
        return ifm_failbuf(err, errlen, CTL_STORE_ECORRUPT, "lease %s is corrupt: %s", serial, why);
    return 1;
}

static int put_error(int rc, const char *what, const char *serial, char *err, size_t errlen)
{
    if (rc == MDB_KEYEXIST)
        return ifm_failbuf(err, errlen, CTL_STORE_ECONFLICT, "serial %s is already leased", serial);
    if (rc == MDB_MAP_FULL)
        return ifm_failbuf(err, errlen, CTL_STORE_EIO, "%s %s: lease store is full (%s)", what, serial,
                           mdb_strerror(rc));
    return ifm_failbuf(err, errlen, CTL_STORE_EIO, "%s %s: %s", what, serial, mdb_strerror(rc));
}

int store_write(ctl_store *s, MDB_txn *txn, const ctl_lease *l, bool new_record, char *err, size_t errlen)
{
    store_lease_buf buf;
    char why[256];
    if (store_lease_encode(l, &buf, why, sizeof why))
        return ifm_failbuf(err, errlen, CTL_STORE_EINVAL, "encode lease: %s", why);
    MDB_val k = text_val(l->serial), v = { .mv_size = buf.len, .mv_data = buf.buf };
    int rc = mdb_put(txn, s->leases, &k, &v, new_record ? MDB_NOOVERWRITE : 0);
    if (rc)
        return put_error(rc, "write lease", l->serial, err, errlen);
    if (new_record) {
        MDB_val c = text_val(l->client), sv = text_val(l->serial);
        rc = mdb_put(txn, s->by_client, &c, &sv, 0);
        if (rc)
            return put_error(rc, "index lease", l->serial, err, errlen);
    }
    return 0;
}

int store_unindex(ctl_store *s, MDB_txn *txn, const char *client, const char *serial, char *err, size_t errlen)
{
    MDB_val c = text_val(client), sv = text_val(serial);
    int rc = mdb_del(txn, s->by_client, &c, &sv);
    if (rc && rc != MDB_NOTFOUND)
        return ifm_failbuf(err, errlen, CTL_STORE_EIO, "unindex lease %s: %s", serial, mdb_strerror(rc));
    return 0;
}

int store_delete(ctl_store *s, MDB_txn *txn, const ctl_lease *l, char *err, size_t errlen)
{
    MDB_val k = text_val(l->serial);
    int rc = mdb_del(txn, s->leases, &k, NULL);
    if (rc)
        return ifm_failbuf(err, errlen, CTL_STORE_EIO, "delete lease %s: %s", l->serial, mdb_strerror(rc));
    return store_unindex(s, txn, l->client, l->serial, err, errlen);
}

void store_be64_put(uint8_t b[8], uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        b[i] = (uint8_t)v;
}

uint64_t store_be64_get(const uint8_t b[8])
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | b[i];
    return v;
}

/* Virtual size of the map, not disk: the file grows only as pages are used.
 * 100k leases at the 4 KiB args limit take ~0.8 GiB (a record that large
 * lives on two overflow pages), plus indexes and copy-on-write headroom. */
#define STORE_MAPSIZE ((size_t)4 << 30)

/* mkdir -p with mode 0700: leases name clients, so the store is private. */
static int make_dirs(const char *dir, char *err, size_t errlen)
{
    char path[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof path)
        return ifm_failbuf(err, errlen, CTL_STORE_EINVAL, "bad store directory");
    memcpy(path, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        char c = path[i];
        path[i] = '\0';
        if (mkdir(path, 0700) && errno != EEXIST)
            return ifm_failbuf(err, errlen, CTL_STORE_EIO, "mkdir %s: %s", path, strerror(errno));
        path[i] = c;
    }
    struct stat st;
    if (stat(dir, &st) || !S_ISDIR(st.st_mode))
        return ifm_failbuf(err, errlen, CTL_STORE_EIO, "%s is not a directory", dir);
    return 0;
}

static int meta_get(ctl_store *s, MDB_txn *txn, const char *key, uint64_t *v, char *err, size_t errlen)
{
    MDB_val k = { .mv_size = strlen(key), .mv_data = (void *)key }, d;
    int rc = mdb_get(txn, s->meta, &k, &d);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return ifm_failbuf(err, errlen, CTL_STORE_EIO, "read meta %s: %s", key, mdb_strerror(rc));
    if (d.mv_size != 8)
        return ifm_failbuf(err, errlen, CTL_STORE_ECORRUPT, "meta %s is %zu bytes, expected 8", key, d.mv_size);
    *v = store_be64_get(d.mv_data);
    return 1;
}

int store_meta_put(ctl_store *s, MDB_txn *txn, const char *key, uint64_t v, char *err, size_t errlen)
{
    uint8_t b[8];
    store_be64_put(b, v);
    MDB_val k = { .mv_size = strlen(key), .mv_data = (void *)key }, d = { .mv_size = 8, .mv_data = b };
    int rc = mdb_put(txn, s->meta, &k, &d, 0);
    if (rc)
        return ifm_failbuf(err, errlen, CTL_STORE_EIO, "write meta %s: %s", key, mdb_strerror(rc));
    return 0;
}

int store_next_id(ctl_store *s, MDB_txn *txn, uint64_t *next, char *err, size_t errlen)
{
    int rc = meta_get(s, txn, "next_id", next, err, errlen);
    if (rc == 0)
        return ifm_failbuf(err, errlen, CTL_STORE_ECORRUPT, "meta next_id is missing");
    if (rc < 0)
        return rc;
    if (*next == 0)
        return ifm_failbuf(err, errlen, CTL_STORE_ECORRUPT, "meta next_id is 0");
    return 0;
}

/* Opens the named DBs and creates or checks the schema, in one write txn. */
static int init_schema(ctl_store *s, char *err, size_t errlen)
{
    MDB_txn *txn;
    int rc = store_begin(s, true, &txn, err, errlen);
    if (rc)
        return rc;
    const char *what = "leases";
    rc = mdb_dbi_open(txn, "leases", MDB_CREATE, &s->leases);
    if (!rc)
        rc = mdb_dbi_open(txn, what = "meta", MDB_CREATE, &s->meta);
    if (!rc)
        rc = mdb_dbi_open(txn, what = "by_client", MDB_CREATE | MDB_DUPSORT, &s->by_client);
    if (rc) {
        mdb_txn_abort(txn);
        return ifm_failbuf(err, errlen, CTL_STORE_EIO, "open db %s: %s", what, mdb_strerror(rc));
    }
    uint64_t version, next;
    rc = meta_get(s, txn, "schema", &version, err, errlen);
    if (rc == 0) {
        /* A fresh store; leases without a schema would be someone else's data. */
        MDB_stat st;
        rc = mdb_stat(txn, s->leases, &st);
        if (rc == 0 && st.ms_entries)
            rc = ifm_failbuf(err, errlen, CTL_STORE_ECORRUPT, "store has leases but no schema version");
        else if (rc)
            rc = ifm_failbuf(err, errlen, CTL_STORE_EIO, "stat leases: %s", mdb_strerror(rc));
        else if (!(rc = store_meta_put(s, txn, "schema", STORE_SCHEMA_VERSION, err, errlen)))
            rc = store_meta_put(s, txn, "next_id", 1, err, errlen);
    } else if (rc == 1) {
        rc = version == STORE_SCHEMA_VERSION
            ? store_next_id(s, txn, &next, err, errlen)
            : ifm_failbuf(err, errlen, CTL_STORE_ECORRUPT, "unsupported store schema %llu (this build knows %d)",
                          (unsigned long long)version, STORE_SCHEMA_VERSION);
    }
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    return store_commit(txn, err, errlen);
}

ctl_store *ctl_store_open(const char *dir, char *err, size_t errlen)
{
    if (!dir || make_dirs(dir, err, errlen)) {
        if (!dir)
            ifm_failbuf(err, errlen, CTL_STORE_EINVAL, "no store directory");
        return NULL;
    }
    ctl_store *s = calloc(1, sizeof *s);
    if (!s) {
        ifm_failbuf(err, errlen, CTL_STORE_ENOMEM, "out of memory");
        return NULL;
    }
    s->lock_fd = -1;
    snprintf(s->dir, sizeof s->dir, "%s", dir);
    int rc = mdb_env_create(&s->env);
    const char *what = "create env";
    if (!rc)
        rc = mdb_env_set_maxdbs(s->env, 4), what = "set maxdbs";
    if (!rc)
        rc = mdb_env_set_mapsize(s->env, STORE_MAPSIZE), what = "set map size";
    /* Flags 0: every commit is fsync'ed (no MDB_NOSYNC/NOMETASYNC), because a
   * lease must be on disk before the client hears about it. */
    if (!rc)
        rc = mdb_env_open(s->env, dir, 0, 0600), what = "open env";
    int dead = 0;
    /* Readers left by a process that died mid-transaction pin old pages; free them. */
    if (!rc)
        rc = mdb_reader_check(s->env, &dead), what = "reader check";
    if (rc) {
        ifm_failbuf(err, errlen, CTL_STORE_EIO, "%s %s: %s", what, dir, mdb_strerror(rc));
        ctl_store_close(s);
        return NULL;
    }
    if (init_schema(s, err, errlen)) {
        ctl_store_close(s);
        return NULL;
    }
    return s;
}

void ctl_store_close(ctl_store *store)
{
    if (!store)
        return;
    if (store->env)
        mdb_env_close(store->env);
    if (store->lock_fd >= 0)
        close(store->lock_fd);
    free(store);
}

int ctl_store_claim(ctl_store *store, char *err, size_t errlen)
{
    if (!store)
        return ifm_failbuf(err, errlen, CTL_STORE_EINVAL, "no store");
    if (store->lock_fd >= 0)
        return 0;
    char path[4200];
    snprintf(path, sizeof path, "%s/ctl.lock", store->dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return ifm_failbuf(err, errlen, CTL_STORE_EIO, "open %s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB)) {
        int e = errno;
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        close(fd);
        if (e == EWOULDBLOCK)
            return ifm_failbuf(err, errlen, CTL_STORE_EBUSY, "%s is in use by another icefarm-ctl (pid %s)", store->dir,
                               pid[0] ? pid : "unknown");
        return ifm_failbuf(err, errlen, CTL_STORE_EIO, "lock %s: %s", path, strerror(e));
    }
    /* The pid is only for the message above; the flock is what excludes. */
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) || pwrite(fd, pid, (size_t)n, 0) != n) {
        /* Not fatal: we hold the lock, the message would just lack the pid. */
    }
    store->lock_fd = fd;
    return 0;
}
