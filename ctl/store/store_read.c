/* Read-only operations: one lease, and iteration over all of them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_codec.h"
#include "store_internal.h"

int ctl_store_get(ctl_store *store, const char *serial, ctl_lease *out, char *err, size_t errlen)
{
    if (!out)
        return store_fail(err, errlen, CTL_STORE_EINVAL, "no output lease");
    memset(out, 0, sizeof *out);
    char why[200];
    if (store_text_check("serial", serial, CTL_SERIAL_MAX, why, sizeof why))
        return store_fail(err, errlen, CTL_STORE_EINVAL, "%s", why);
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
                rc = store_fail(err, errlen, CTL_STORE_ENOMEM, "out of memory");
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
        return store_fail(err, errlen, CTL_STORE_EINVAL, "no visit callback");
    MDB_txn *txn;
    int rc = store_begin(store, false, &txn, err, errlen);
    if (rc)
        return rc;
    MDB_cursor *c;
    rc = mdb_cursor_open(txn, store->leases, &c);
    if (rc) {
        mdb_txn_abort(txn);
        return store_fail(err, errlen, CTL_STORE_EIO, "open cursor: %s", mdb_strerror(rc));
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
        return store_fail(err, errlen, CTL_STORE_EIO, "scan leases: %s", mdb_strerror(rc));
    return corrupt;
}
