/* Allocation policy: least-loaded-worker round robin, and explicit serials. */
#include "alloc.h"
#include "icefarm/err.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

const char *ctl_alloc_reason_str(ctl_alloc_reason r)
{
    switch (r) {
    case CTL_ALLOC_OK:
        return "ok";
    case CTL_ALLOC_UNKNOWN:
        return "unknown serial";
    case CTL_ALLOC_AMBIGUOUS:
        return "serial on several workers";
    case CTL_ALLOC_DUPLICATE:
        return "duplicate serial in request";
    case CTL_ALLOC_RESERVED:
        return "already reserved";
    case CTL_ALLOC_OFFLINE:
        return "worker offline";
    case CTL_ALLOC_KIND:
        return "kind not offered";
    case CTL_ALLOC_NOT_READY:
        return "not ready";
    }
    return "invalid reason";
}

/* A board with its index, sortable without a context pointer. */
typedef struct {
    const ctl_alloc_board *b;
    size_t idx;
    bool ambiguous;
} entry;

static int by_serial(const void *x, const void *y)
{
    const entry *a = x, *b = y;
    int c = strcmp(a->b->serial, b->b->serial);
    return c ? c : (a->idx > b->idx) - (a->idx < b->idx);
}

static int by_worker_serial(const void *x, const void *y)
{
    const entry *a = x, *b = y;
    int c = strcmp(a->b->worker, b->b->worker);
    return c ? c : by_serial(x, y);
}

/* Entries for every usable board, sorted by serial, with serials that appear on
 * more than one board marked ambiguous (a board moved between hosts, or a stale
 * report: handing it out could give the client the wrong board). */
static entry *entries_by_serial(const ctl_alloc_board *boards, size_t nboards, size_t *n)
{
    entry *e = malloc((nboards ? nboards : 1) * sizeof *e);
    if (!e)
        return NULL;
    *n = 0;
    for (size_t i = 0; i < nboards; i++)
        if (boards[i].serial && boards[i].serial[0] && boards[i].worker)
            e[(*n)++] = (entry){ .b = &boards[i], .idx = i };
    qsort(e, *n, sizeof *e, by_serial);
    for (size_t i = 1; i < *n; i++)
        if (strcmp(e[i].b->serial, e[i - 1].b->serial) == 0)
            e[i].ambiguous = e[i - 1].ambiguous = true;
    return e;
}

static bool eligible(const entry *e)
{
    const ctl_alloc_board *b = e->b;
    return !e->ambiguous && b->ready && b->worker_alive && b->kind_offered && !b->leased;
}

static size_t load_of(const char *worker, const ctl_alloc_load *loads, size_t nloads)
{
    size_t sum = 0;
    for (size_t i = 0; i < nloads; i++)
        if (loads[i].worker && strcmp(loads[i].worker, worker) == 0)
            sum += loads[i].leases;
    return sum;
}

/* One worker's eligible boards: e[start .. start+len), `taken` of them picked. */
typedef struct {
    size_t start, len, taken, load;
} group;

int ctl_alloc_pick(const ctl_alloc_board *boards, size_t nboards, const ctl_alloc_load *loads, size_t nloads,
                   size_t want, size_t *out, size_t *n_eligible, char *err, size_t errlen)
{
    if (n_eligible)
        *n_eligible = 0;
    if (want == 0)
        return ifm_failbuf(err, errlen, CTL_ALLOC_ERROR, "amount must be at least 1");
    if (!out || (nboards && !boards) || (nloads && !loads))
        return ifm_failbuf(err, errlen, CTL_ALLOC_ERROR, "missing argument");
    size_t n;
    entry *e = entries_by_serial(boards, nboards, &n);
    if (!e)
        return ifm_failbuf(err, errlen, CTL_ALLOC_ERROR, "out of memory");
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (eligible(&e[i]))
            e[m++] = e[i];
    if (n_eligible)
        *n_eligible = m;
    if (m < want) {
        free(e);
        return ifm_failbuf(err, errlen, CTL_ALLOC_REFUSED, "%zu boards requested, %zu eligible", want, m);
    }
    qsort(e, m, sizeof *e, by_worker_serial);
    group *g = malloc(m * sizeof *g);
    if (!g) {
        free(e);
        return ifm_failbuf(err, errlen, CTL_ALLOC_ERROR, "out of memory");
    }
    size_t ng = 0;
    for (size_t i = 0; i < m; i++) {
        if (i == 0 || strcmp(e[i].b->worker, e[i - 1].b->worker) != 0)
            g[ng++] = (group){ .start = i, .load = load_of(e[i].b->worker, loads, nloads) };
        g[ng - 1].len++;
    }
    /* Groups are in worker-id order, so the first minimum is the tie-break. */
    for (size_t k = 0; k < want; k++) {
        group *best = NULL;
        for (size_t i = 0; i < ng; i++)
            if (g[i].taken < g[i].len && (!best || g[i].load < best->load))
                best = &g[i];
        out[k] = e[best->start + best->taken++].idx;
        best->load++;
    }
    free(g);
    free(e);
    return CTL_ALLOC_DONE;
}

static int find_cmp(const void *key, const void *x)
{
    const entry *b = x;
    return strcmp(key, b->b->serial);
}

static ctl_alloc_reason check_one(const char *serial, entry *e, size_t n, bool *used, size_t *idx)
{
    if (!serial || !serial[0])
        return CTL_ALLOC_UNKNOWN;
    entry *hit = bsearch(serial, e, n, sizeof *e, find_cmp);
    if (!hit)
        return CTL_ALLOC_UNKNOWN;
    if (hit->ambiguous)
        return CTL_ALLOC_AMBIGUOUS;
    const ctl_alloc_board *b = hit->b;
    if (used[hit->idx])
        return CTL_ALLOC_DUPLICATE;
    if (b->leased)
        return CTL_ALLOC_RESERVED;
    if (!b->worker_alive)
        return CTL_ALLOC_OFFLINE;
    if (!b->kind_offered)
        return CTL_ALLOC_KIND;
    if (!b->ready)
        return CTL_ALLOC_NOT_READY;
    used[hit->idx] = true;
    *idx = hit->idx;
    return CTL_ALLOC_OK;
}

int ctl_alloc_serials(const ctl_alloc_board *boards, size_t nboards, const char *const *serials, size_t n, size_t *out,
                      size_t *bad, ctl_alloc_reason *why, char *err, size_t errlen)
{
    if (bad)
        *bad = 0;
    if (why)
        *why = CTL_ALLOC_OK;
    if (n == 0)
        return ifm_failbuf(err, errlen, CTL_ALLOC_ERROR, "no serials requested");
    if (!serials || !out || (nboards && !boards))
        return ifm_failbuf(err, errlen, CTL_ALLOC_ERROR, "missing argument");
    size_t ne;
    entry *e = entries_by_serial(boards, nboards, &ne);
    bool *used = calloc(nboards ? nboards : 1, sizeof *used);
    if (!e || !used) {
        free(e);
        free(used);
        return ifm_failbuf(err, errlen, CTL_ALLOC_ERROR, "out of memory");
    }
    int rc = CTL_ALLOC_DONE;
    for (size_t i = 0; i < n; i++) {
        ctl_alloc_reason r = check_one(serials[i], e, ne, used, &out[i]);
        if (r != CTL_ALLOC_OK) {
            if (bad)
                *bad = i;
            if (why)
                *why = r;
            /* The serial is the client's own text; bound it in the message. */
            rc = ifm_failbuf(err, errlen, CTL_ALLOC_REFUSED, "serial %.64s: %s", serials[i] ? serials[i] : "(null)",
                             ctl_alloc_reason_str(r));
            break;
        }
    }
    free(used);
    free(e);
    return rc;
}
