/* Lease store lifecycle: creating/opening the LMDB env, the schema, the claim. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store_internal.h"

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
        return store_fail(err, errlen, CTL_STORE_EINVAL, "bad store directory");
    memcpy(path, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        char c = path[i];
        path[i] = '\0';
        if (mkdir(path, 0700) && errno != EEXIST)
            return store_fail(err, errlen, CTL_STORE_EIO, "mkdir %s: %s", path, strerror(errno));
        path[i] = c;
    }
    struct stat st;
    if (stat(dir, &st) || !S_ISDIR(st.st_mode))
        return store_fail(err, errlen, CTL_STORE_EIO, "%s is not a directory", dir);
    return 0;
}

static int meta_get(ctl_store *s, MDB_txn *txn, const char *key, uint64_t *v, char *err, size_t errlen)
{
    MDB_val k = { .mv_size = strlen(key), .mv_data = (void *)key }, d;
    int rc = mdb_get(txn, s->meta, &k, &d);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return store_fail(err, errlen, CTL_STORE_EIO, "read meta %s: %s", key, mdb_strerror(rc));
    if (d.mv_size != 8)
        return store_fail(err, errlen, CTL_STORE_ECORRUPT, "meta %s is %zu bytes, expected 8", key, d.mv_size);
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
        return store_fail(err, errlen, CTL_STORE_EIO, "write meta %s: %s", key, mdb_strerror(rc));
    return 0;
}

int store_next_id(ctl_store *s, MDB_txn *txn, uint64_t *next, char *err, size_t errlen)
{
    int rc = meta_get(s, txn, "next_id", next, err, errlen);
    if (rc == 0)
        return store_fail(err, errlen, CTL_STORE_ECORRUPT, "meta next_id is missing");
    if (rc < 0)
        return rc;
    if (*next == 0)
        return store_fail(err, errlen, CTL_STORE_ECORRUPT, "meta next_id is 0");
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
        return store_fail(err, errlen, CTL_STORE_EIO, "open db %s: %s", what, mdb_strerror(rc));
    }
    uint64_t version, next;
    rc = meta_get(s, txn, "schema", &version, err, errlen);
    if (rc == 0) {
        /* A fresh store; leases without a schema would be someone else's data. */
        MDB_stat st;
        rc = mdb_stat(txn, s->leases, &st);
        if (rc == 0 && st.ms_entries)
            rc = store_fail(err, errlen, CTL_STORE_ECORRUPT, "store has leases but no schema version");
        else if (rc)
            rc = store_fail(err, errlen, CTL_STORE_EIO, "stat leases: %s", mdb_strerror(rc));
        else if (!(rc = store_meta_put(s, txn, "schema", STORE_SCHEMA_VERSION, err, errlen)))
            rc = store_meta_put(s, txn, "next_id", 1, err, errlen);
    } else if (rc == 1) {
        rc = version == STORE_SCHEMA_VERSION
            ? store_next_id(s, txn, &next, err, errlen)
            : store_fail(err, errlen, CTL_STORE_ECORRUPT, "unsupported store schema %llu (this build knows %d)",
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
            store_fail(err, errlen, CTL_STORE_EINVAL, "no store directory");
        return NULL;
    }
    ctl_store *s = calloc(1, sizeof *s);
    if (!s) {
        store_fail(err, errlen, CTL_STORE_ENOMEM, "out of memory");
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
        store_fail(err, errlen, CTL_STORE_EIO, "%s %s: %s", what, dir, mdb_strerror(rc));
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
        return store_fail(err, errlen, CTL_STORE_EINVAL, "no store");
    if (store->lock_fd >= 0)
        return 0;
    char path[4200];
    snprintf(path, sizeof path, "%s/ctl.lock", store->dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return store_fail(err, errlen, CTL_STORE_EIO, "open %s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB)) {
        int e = errno;
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        close(fd);
        if (e == EWOULDBLOCK)
            return store_fail(err, errlen, CTL_STORE_EBUSY, "%s is in use by another icefarm-ctl (pid %s)", store->dir,
                              pid[0] ? pid : "unknown");
        return store_fail(err, errlen, CTL_STORE_EIO, "lock %s: %s", path, strerror(e));
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
        return store_fail(err, errlen, CTL_STORE_EIO, "stat leases: %s", mdb_strerror(rc));
    return (long long)st.ms_entries;
}
