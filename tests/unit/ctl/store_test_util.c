#include "store_test_util.h"

#include <ftw.h>
#include <lmdb.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

char *tdir_make(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/icefarm-store-XXXXXX", base && *base ? base : "/tmp");
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return strdup(d);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

void tdir_remove(char *dir)
{
    if (!dir)
        return;
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

ctl_lease mk_lease(const char *serial, const char *client, const char *worker)
{
    ctl_lease l;
    memset(&l, 0, sizeof l);
    snprintf(l.serial, sizeof l.serial, "%s", serial);
    snprintf(l.client, sizeof l.client, "%s", client);
    snprintf(l.worker, sizeof l.worker, "%s", worker);
    snprintf(l.kind, sizeof l.kind, "pulsecount");
    l.granted_ms = 1700000000000ull;
    l.until_ms = l.granted_ms + 3600 * 1000;
    return l;
}

void raw_put(const char *dir, const char *db, const char *key, const void *val, size_t len)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
    MDB_val k = { strlen(key), (void *)key }, v = { len, (void *)val };
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

ctl_store *open_ok(const char *dir)
{
    char err[256] = "";
    ctl_store *s = ctl_store_open(dir, err, sizeof err);
    if (!s)
        fail_msg("ctl_store_open(%s): %s", dir, err);
    return s;
}
