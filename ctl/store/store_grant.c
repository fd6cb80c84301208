/* ctl_store_grant: N leases in one write transaction, all or nothing. */
#include <stdio.h>
#include <string.h>

#include "store_codec.h"
#include "store_internal.h"

/* Says why serial `l` could not be inserted: already leased by someone, or
 * repeated in this very request (its record then carries an id from this batch). */
static int conflict(ctl_store *s, MDB_txn *txn, const ctl_lease *l, uint64_t first_id, char *err, size_t errlen)
{
    ctl_lease cur;
    char why[256];
    int rc = store_read(s, txn, l->serial, &cur, why, sizeof why);
    if (rc == 1 && cur.lease_id >= first_id)
        return store_fail(err, errlen, CTL_STORE_ECONFLICT, "serial %s appears twice in the request", l->serial);
    if (rc == CTL_STORE_ECORRUPT)
        return store_fail(err, errlen, CTL_STORE_ECONFLICT, "serial %s has a corrupt lease record", l->serial);
    return store_fail(err, errlen, CTL_STORE_ECONFLICT, "serial %s is already leased", l->serial);
}

int ctl_store_grant(ctl_store *store, const ctl_lease *leases, size_t n, uint64_t *ids_out, char *err, size_t errlen)
{
    if (n == 0)
        return 0;
    if (!store || !leases)
        return store_fail(err, errlen, CTL_STORE_EINVAL, "no store or leases");
    /* Validate everything before touching the env: a bad request costs no txn. */
    for (size_t i = 0; i < n; i++) {
        char why[256];
        if (store_lease_check(&leases[i], why, sizeof why))
            return store_fail(err, errlen, CTL_STORE_EINVAL, "lease %zu: %s", i, why);
    }
    MDB_txn *txn;
    int rc = store_begin(store, true, &txn, err, errlen);
    if (rc)
        return rc;
    uint64_t first;
    rc = store_next_id(store, txn, &first, err, errlen);
    if (!rc && first > UINT64_MAX - n)
        rc = store_fail(err, errlen, CTL_STORE_EIO, "lease ids exhausted");
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
