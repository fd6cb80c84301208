/* Internals shared by the store_*.c files; not part of the ctl_store API. */
#ifndef ICEFARM_CTL_STORE_INTERNAL_H
#define ICEFARM_CTL_STORE_INTERNAL_H

#include <lmdb.h>

#include "store.h"

#define STORE_SCHEMA_VERSION 1

struct ctl_store {
    MDB_env *env;
    MDB_dbi leases;    /* serial -> lease record (msgpack) */
    MDB_dbi meta;      /* "schema", "next_id" -> u64 big-endian */
    MDB_dbi by_client; /* DUPSORT: client -> serial; an index, leases wins on disagreement */
    int lock_fd;       /* ctl_store_claim's flock, or -1 */
    bool busy;         /* inside a foreach callback: reject re-entry */
    char dir[4096];
};

/* Begins a transaction (EBUSY inside foreach, EIO from LMDB). */
int store_begin(ctl_store *s, bool write, MDB_txn **txn, char *err, size_t errlen);
/* Commits; on failure LMDB has already aborted the transaction. */
int store_commit(MDB_txn *txn, char *err, size_t errlen);

/* Reads and decodes the lease under `serial`. Returns 1 (found; out->args is
 * borrowed from the transaction), 0 (absent), ECORRUPT or EIO. */
int store_read(ctl_store *s, MDB_txn *txn, const char *serial, ctl_lease *out, char *err, size_t errlen);
/* Encodes and writes a lease record. new_record: fail with ECONFLICT if the
 * serial already has a record, and add the by_client entry; otherwise overwrite
 * (same client, so the index is already right). Reads l->args before writing,
 * so l may borrow from the transaction. */
int store_write(ctl_store *s, MDB_txn *txn, const ctl_lease *l, bool new_record, char *err, size_t errlen);
/* Deletes a lease record and its by_client entry. */
int store_delete(ctl_store *s, MDB_txn *txn, const ctl_lease *l, char *err, size_t errlen);
/* Deletes one by_client entry (absent is fine): how stale entries are dropped. */
int store_unindex(ctl_store *s, MDB_txn *txn, const char *client, const char *serial, char *err, size_t errlen);

/* Appends a deep copy (args duplicated) of `l`. Returns 0 or ENOMEM. */
int store_list_push(ctl_lease_list *list, const ctl_lease *l);
/* Clears and drops entries from index n on: how a failed operation undoes its appends. */
void store_list_truncate(ctl_lease_list *list, size_t n);

/* The meta DB: lease-id counter (ECORRUPT if missing or 0) and writes. */
int store_next_id(ctl_store *s, MDB_txn *txn, uint64_t *next, char *err, size_t errlen);
int store_meta_put(ctl_store *s, MDB_txn *txn, const char *key, uint64_t v, char *err, size_t errlen);

/* u64 <-> 8 bytes big-endian for the meta DB. */
void store_be64_put(uint8_t b[8], uint64_t v);
uint64_t store_be64_get(const uint8_t b[8]);

#endif
