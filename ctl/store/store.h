/* icefarm-ctl lease store: the durable record of who holds which board.
 *
 * LMDB is the single source of truth for reservations. Every operation that
 * writes is ONE write transaction with synchronous commit, so when a call
 * returns CTL_STORE_OK the change is on disk: control tells a client about a
 * lease only after ctl_store_grant() returned, and the lease survives kill -9.
 * Because LMDB serializes writers (also across processes), two grants can never
 * both win the same serial: no double booking.
 *
 * Control is single-threaded and one process owns the env (see ctl_store_claim).
 * The store never reads a clock: callers pass wall-clock milliseconds, which
 * keeps it deterministic under test. On-disk format: ctl/store/STORE.md.
 *
 * Ownership rules:
 *  - A ctl_lease passed INTO the store (grant) is only read during the call.
 *  - A ctl_lease produced BY the store (ctl_store_get, entries of a
 *    ctl_lease_list) owns its `args` buffer: release it with ctl_lease_clear()
 *    or ctl_lease_list_free(). Strings are inline arrays and need no freeing.
 *  - The lease handed to a ctl_store_foreach() callback is borrowed and valid
 *    only during that callback.
 *
 * Every function taking `err, errlen` writes a human-readable reason there on
 * failure (err may be NULL when errlen is 0).
 */
#ifndef ICEFARM_CTL_STORE_H
#define ICEFARM_CTL_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "icefarm/limits.h"

/* Limits in bytes, excluding the terminating NUL: the protocol's own limits
 * (icefarm/limits.h). They bound every record so a lease value always fits a
 * fixed buffer and a corrupt size is caught early. */
#define CTL_SERIAL_MAX (IFM_SERIAL_MAX - 1) /* the topic-level limit */
#define CTL_CLIENT_MAX (IFM_NAME_MAX - 1)   /* any UTF-8, quotes and backslashes welcome */
#define CTL_KIND_MAX (IFM_KIND_MAX - 1)
#define CTL_WORKER_MAX (IFM_NAME_MAX - 1)
#define CTL_ARGS_MAX IFM_MAX_ARGS     /* opaque msgpack blob, stored as-is */
#define CTL_TAG_MAX (IFM_TAG_MAX - 1) /* free text the client attached to the lease (may be empty) */

typedef enum {
    CTL_STORE_OK = 0,
    CTL_STORE_EINVAL = -1,    /* bad argument (empty/oversize/non-UTF-8 field...) */
    CTL_STORE_ECONFLICT = -2, /* grant: a serial is already leased or repeated */
    CTL_STORE_EIO = -3,       /* LMDB or filesystem failure; nothing was written */
    CTL_STORE_ECORRUPT = -4,  /* a stored record failed strict decoding */
    CTL_STORE_EBUSY = -5,     /* re-entered from a foreach callback, or claim lost */
    CTL_STORE_ENOMEM = -6,
} ctl_store_rc;

typedef struct ctl_lease {
    char serial[CTL_SERIAL_MAX + 1];
    char client[CTL_CLIENT_MAX + 1];
    char kind[CTL_KIND_MAX + 1];
    char worker[CTL_WORKER_MAX + 1];
    char tag[CTL_TAG_MAX + 1]; /* "" when the client gave none */
    const uint8_t *args;       /* may be NULL when args_len == 0; see ownership above */
    size_t args_len;
    uint64_t lease_id;   /* assigned by ctl_store_grant; unique, never reused */
    uint64_t granted_ms; /* wall clock, ms since the epoch */
    uint64_t until_ms;   /* deadline, wall clock ms */
    bool warned;         /* "ending soon" already sent for this deadline */
} ctl_lease;

/* Frees the args of a store-produced lease and resets args/args_len. */
void ctl_lease_clear(ctl_lease *lease);

/* Growable array of store-produced leases. Zero-initialise (or use
 * CTL_LEASE_LIST_INIT) before first use; operations APPEND to it, and on
 * failure leave it exactly as it was. */
typedef struct {
    ctl_lease *v;
    size_t n, cap;
} ctl_lease_list;
#define CTL_LEASE_LIST_INIT                                                                                            \
    {                                                                                                                  \
        NULL, 0, 0                                                                                                     \
    }

/* Clears every entry, frees the array, and leaves an empty usable list. */
void ctl_lease_list_free(ctl_lease_list *list);

typedef struct ctl_store ctl_store;

/* Creates `dir` (mode 0700) if missing and opens the env with synchronous
 * commits, runs mdb_reader_check (readers left by dead processes), and creates
 * or checks the schema. Returns NULL with a reason on failure. */
ctl_store *ctl_store_open(const char *dir, char *err, size_t errlen);
/* Closes the env and releases the claim. NULL is a no-op. */
void ctl_store_close(ctl_store *store);

/* Takes a non-blocking exclusive flock on <dir>/ctl.lock, held until close, so
 * that two controls never run on one env. EBUSY if another process holds it.
 * Optional: tests open one env from several processes on purpose. */
int ctl_store_claim(ctl_store *store, char *err, size_t errlen);

/* Grants all `n` leases in one transaction, or none. ECONFLICT (nothing
 * written) if any serial already has a lease or appears twice in `leases`.
 * Fields used: serial, client, kind, worker, tag, args, granted_ms, until_ms;
 * the warned flag starts false. Assigned lease ids go to ids_out[i] if not NULL. */
int ctl_store_grant(ctl_store *store, const ctl_lease *leases, size_t n, uint64_t *ids_out, char *err, size_t errlen);

/* Looks up one serial. Returns 1 and fills *out (clear it afterwards), 0 if
 * there is no lease, or a negative ctl_store_rc (ECORRUPT for a bad record). */
int ctl_store_get(ctl_store *store, const char *serial, ctl_lease *out, char *err, size_t errlen);

/* Moves the end of each listed serial leased by `client` to until_ms (and
 * clears warned): with `set`, whatever the old end was; without it, only when
 * until_ms is later (an earlier one leaves the lease, and its warned flag, as
 * they are: extending never shortens a lease unless asked to). Serials held by
 * others, unknown or corrupt are skipped; a repeated serial counts once.
 * Appends every lease of `client` among them to `out` in serial order, with
 * its end as it now is. */
int ctl_store_extend(ctl_store *store, const char *client, const char *const *serials, size_t n, uint64_t until_ms,
                     bool set, ctl_lease_list *out, char *err, size_t errlen);
/* The same for every lease `client` holds. */
int ctl_store_extend_all(ctl_store *store, const char *client, uint64_t until_ms, bool set, ctl_lease_list *out,
                         char *err, size_t errlen);

/* Deletes the listed leases and appends them (as they were) to `out`, in
 * serial order, each once.
 * client != NULL: only that client's leases; others are skipped.
 * client == NULL: administrative/expiry end of any holder; a listed serial
 * whose record is corrupt then fails the whole call (ECORRUPT, nothing
 * written) because we cannot say whose lease ends: use ctl_store_purge. */
int ctl_store_end(ctl_store *store, const char *client, const char *const *serials, size_t n, ctl_lease_list *out,
                  char *err, size_t errlen);
/* Ends every lease `client` holds. */
int ctl_store_end_all(ctl_store *store, const char *client, ctl_lease_list *out, char *err, size_t errlen);
/* A worker died: ends every lease on its boards. */
int ctl_store_end_worker(ctl_store *store, const char *worker, ctl_lease_list *out, char *err, size_t errlen);

/* Records that "ending soon" was sent, only if the serial still carries the
 * same lease_id AND deadline: a warning timer that fired for an older lease or
 * an already-extended deadline must not mark the new one. Returns 1 if marked
 * (or already marked: nothing is written then), 0 if it no longer matches, or a negative ctl_store_rc. */
int ctl_store_mark_warned(ctl_store *store, const char *serial, uint64_t lease_id, uint64_t until_ms, char *err,
                          size_t errlen);

/* Deletes a serial's record whatever it contains: the repair path for a record
 * that fails decoding. Returns 1 if deleted, 0 if absent, or negative. */
int ctl_store_purge(ctl_store *store, const char *serial, char *err, size_t errlen);

/* Visits every lease in serial order inside one read transaction (to rebuild
 * timers on restart). `visit` returns nonzero to stop early. Corrupt records
 * are skipped and reported to `bad` (may be NULL) with the key and reason.
 * The callbacks must not call into the store (EBUSY if they do).
 * Returns the number of corrupt records skipped, or a negative ctl_store_rc. */
typedef int (*ctl_store_visit_fn)(const ctl_lease *lease, void *arg);
typedef void (*ctl_store_bad_fn)(const char *serial, const char *reason, void *arg);
int ctl_store_foreach(ctl_store *store, ctl_store_visit_fn visit, ctl_store_bad_fn bad, void *arg, char *err,
                      size_t errlen);

/* Number of lease records (including corrupt ones), or a negative rc. */
long long ctl_store_count(ctl_store *store, char *err, size_t errlen);

#endif
