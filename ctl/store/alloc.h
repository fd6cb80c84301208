/* icefarm-ctl allocation policy: which boards a reservation gets.
 *
 * Pure functions, no I/O and no clock: control describes the farm as it sees
 * it right now, the policy answers with indices into that description, and
 * control then grants exactly those serials with ctl_store_grant (which is what
 * actually rules out double booking; the policy only chooses).
 *
 * The old system took the first N rows Postgres returned (no ORDER BY, no
 * balancing). Here: all or nothing, spread across workers (least-loaded worker
 * first, round robin), deterministic tie-break by worker id then serial, so
 * the same farm state always yields the same choice.
 */
#ifndef ICEFARM_CTL_ALLOC_H
#define ICEFARM_CTL_ALLOC_H

#include <stdbool.h>
#include <stddef.h>

/* One board as control sees it. Strings are borrowed for the call. */
typedef struct {
    const char *serial;
    const char *worker;
    bool ready;        /* idle on its default firmware, able to take a lease */
    bool worker_alive; /* its worker is online (current epoch, not shutting down) */
    bool kind_offered; /* its worker offers the requested kind */
    bool leased;       /* already has a lease */
} ctl_alloc_board;

/* Leases a worker currently carries (across all kinds). Workers not listed
 * count as 0; a worker listed twice counts the sum. */
typedef struct {
    const char *worker;
    size_t leases;
} ctl_alloc_load;

enum {
    CTL_ALLOC_DONE = 0,    /* out[] is filled */
    CTL_ALLOC_REFUSED = 1, /* not all can be had; nothing chosen, reason in err */
    CTL_ALLOC_ERROR = -1,  /* bad arguments or out of memory */
};

/* Why a requested serial cannot be reserved, in the order they are checked. */
typedef enum {
    CTL_ALLOC_OK = 0,
    CTL_ALLOC_UNKNOWN,   /* "unknown serial" */
    CTL_ALLOC_AMBIGUOUS, /* "serial on several workers": whose board is it? */
    CTL_ALLOC_DUPLICATE, /* "duplicate serial in request" */
    CTL_ALLOC_RESERVED,  /* "already reserved" */
    CTL_ALLOC_OFFLINE,   /* "worker offline" */
    CTL_ALLOC_KIND,      /* "kind not offered" */
    CTL_ALLOC_NOT_READY, /* "not ready" */
} ctl_alloc_reason;

const char *ctl_alloc_reason_str(ctl_alloc_reason r);

/* /reserve: picks `want` (>= 1) eligible boards — ready, worker alive, kind
 * offered, not leased, serial on one worker only — and writes their indices
 * into out[0..want) in pick order. Each pick goes to the worker with the
 * fewest leases (its current load plus picks so far), ties to the smaller
 * worker id; within a worker, smallest serial first.
 * Returns DONE; REFUSED if fewer than `want` are eligible (*n_eligible, if not
 * NULL, says how many are); or ERROR. */
int ctl_alloc_pick(const ctl_alloc_board *boards, size_t nboards, const ctl_alloc_load *loads, size_t nloads,
                   size_t want, size_t *out, size_t *n_eligible, char *err, size_t errlen);

/* /reserveserials: every one of serials[0..n) must be eligible. On DONE,
 * out[i] is the board index for serials[i]. On REFUSED (out[] then means
 * nothing), *bad is the index of the first serial (in request order) that
 * fails and *why its reason; err reads "serial X: reason". */
int ctl_alloc_serials(const ctl_alloc_board *boards, size_t nboards, const char *const *serials, size_t n, size_t *out,
                      size_t *bad, ctl_alloc_reason *why, char *err, size_t errlen);

#endif
