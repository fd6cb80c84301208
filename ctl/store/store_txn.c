/* Transaction and record helpers shared by the store operations. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "store_codec.h"
#include "store_internal.h"

int store_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

int store_begin(ctl_store *s, bool write, MDB_txn **txn, char *err, size_t errlen)
{
    if (!s)
        return store_fail(err, errlen, CTL_STORE_EINVAL, "no store");
    if (s->busy)
        return store_fail(err, errlen, CTL_STORE_EBUSY, "store called from inside a foreach callback");
    int rc = mdb_txn_begin(s->env, NULL, write ? 0 : MDB_RDONLY, txn);
    if (rc == MDB_MAP_RESIZED) {
        /* Another process grew the map: adopt its size and try again. */
        rc = mdb_env_set_mapsize(s->env, 0);
        if (rc == 0)
            rc = mdb_txn_begin(s->env, NULL, write ? 0 : MDB_RDONLY, txn);
    }
    if (rc)
        return store_fail(err, errlen, CTL_STORE_EIO, "begin transaction: %s", mdb_strerror(rc));
    return 0;
}

int store_commit(MDB_txn *txn, char *err, size_t errlen)
{
    int rc = mdb_txn_commit(txn);
    if (rc == MDB_MAP_FULL)
        return store_fail(err, errlen, CTL_STORE_EIO, "commit: lease store is full (%s)", mdb_strerror(rc));
    if (rc)
        return store_fail(err, errlen, CTL_STORE_EIO, "commit: %s", mdb_strerror(rc));
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
        return store_fail(err, errlen, CTL_STORE_EIO, "read lease %s: %s", serial, mdb_strerror(rc));
    char why[256];
    if (store_lease_decode(k.mv_data, k.mv_size, v.mv_data, v.mv_size, out, why, sizeof why))
        return store_fail(err, errlen, CTL_STORE_ECORRUPT, "lease %s is corrupt: %s", serial, why);
    return 1;
}

static int put_error(int rc, const char *what, const char *serial, char *err, size_t errlen)
{
    if (rc == MDB_KEYEXIST)
        return store_fail(err, errlen, CTL_STORE_ECONFLICT, "serial %s is already leased", serial);
    if (rc == MDB_MAP_FULL)
        return store_fail(err, errlen, CTL_STORE_EIO, "%s %s: lease store is full (%s)", what, serial,
                          mdb_strerror(rc));
    return store_fail(err, errlen, CTL_STORE_EIO, "%s %s: %s", what, serial, mdb_strerror(rc));
}

int store_write(ctl_store *s, MDB_txn *txn, const ctl_lease *l, bool new_record, char *err, size_t errlen)
{
    store_lease_buf buf;
    char why[256];
    if (store_lease_encode(l, &buf, why, sizeof why))
        return store_fail(err, errlen, CTL_STORE_EINVAL, "encode lease: %s", why);
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
        return store_fail(err, errlen, CTL_STORE_EIO, "unindex lease %s: %s", serial, mdb_strerror(rc));
    return 0;
}

int store_delete(ctl_store *s, MDB_txn *txn, const ctl_lease *l, char *err, size_t errlen)
{
    MDB_val k = text_val(l->serial);
    int rc = mdb_del(txn, s->leases, &k, NULL);
    if (rc)
        return store_fail(err, errlen, CTL_STORE_EIO, "delete lease %s: %s", l->serial, mdb_strerror(rc));
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
