/* Granting boards: the one code path behind `reserve` (any N boards of a kind),
 * `reserve_serials` (these boards) and the waiting reserves of waiters.c.
 *
 * Control describes the farm as it sees it now (ctl_alloc_board), the pure policy
 * of store/alloc.c chooses, and commit() makes the choice durable with one LMDB
 * write transaction before anyone hears of it (guarantees 1 and 2), then tells
 * the workers and encodes the reply. */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "ctl.h"
#include "icefarm/log.h"

/* The farm as the allocation policy sees it. Strings are borrowed from `c`. */
typedef struct {
    ctl_alloc_board *boards;
    ctl_alloc_load *loads;
} farm_view;

static void view_free(farm_view *v)
{
    free(v->boards);
    free(v->loads);
}

static int view_build(ctl *c, const char *kind, farm_view *v)
{
    v->boards = calloc(c->nboards ? c->nboards : 1, sizeof *v->boards);
    v->loads = calloc(c->nworkers ? c->nworkers : 1, sizeof *v->loads);
    if (!v->boards || !v->loads) {
        view_free(v);
        return -1;
    }
    for (size_t i = 0; i < c->nworkers; i++)
        v->loads[i].worker = c->workers[i].id;
    for (size_t i = 0; i < c->nboards; i++) {
        ctl_board *b = c->boards[i];
        const ctl_worker *w = ctl_board_worker(c, b);
        v->boards[i] = (ctl_alloc_board){ .serial = b->known ? b->serial : NULL,
                                          .worker = b->worker,
                                          .ready = b->known && b->state == IFM_BOARD_READY,
                                          .worker_alive = w && w->online && !w->hung,
                                          .kind_offered = w && ctl_worker_offers(w, kind),
                                          .leased = b->leased };
        for (size_t k = 0; b->leased && k < c->nworkers; k++)
            if (strcmp(v->loads[k].worker, b->worker) == 0)
                v->loads[k].leases++;
    }
    return 0;
}

/* A failed grant's reply code: a conflict is the client's 409; a store that cannot
 * write (a full disk or LMDB map, an I/O error) is the farm's fault and says so,
 * so no client mistakes it for "not enough boards". */
static uint32_t store_refusal(int rc, char *why, size_t whylen)
{
    if (rc == CTL_STORE_ECONFLICT)
        return 409;
    if (rc == CTL_STORE_EINVAL)
        return 400;
    char detail[160];
    snprintf(detail, sizeof detail, "%s", why);
    snprintf(why, whylen, "the lease store cannot record the grant (%s%s); nothing was granted",
             strstr(detail, "MDB_MAP_FULL") || strstr(detail, "No space left") ? "store full: " : "", detail);
    return 500;
}

/* Leases the boards c->boards[picked[0..n)] to `client`, durably, then tells
 * their workers and encodes the reply into `enc`. Returns the reply code. */
static uint32_t commit(ctl *c, const ctl_grant_req *g, const size_t *picked, size_t n, ifm_enc *enc, char *why,
                       size_t whylen)
{
    ctl_lease *leases = calloc(n, sizeof *leases);
    uint64_t *ids = calloc(n, sizeof *ids);
    uint32_t code = 500;
    if (!leases || !ids) {
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    uint64_t now = ifm_wall_ms(), until = now + g->duration_s * 1000;
    for (size_t i = 0; i < n; i++) {
        const ctl_board *b = c->boards[picked[i]];
        ctl_lease *l = &leases[i];
        snprintf(l->serial, sizeof l->serial, "%s", b->serial);
        snprintf(l->client, sizeof l->client, "%s", g->client);
        snprintf(l->kind, sizeof l->kind, "%s", g->kind);
        snprintf(l->worker, sizeof l->worker, "%s", b->worker);
        snprintf(l->tag, sizeof l->tag, "%s", g->tag ? g->tag : "");
        l->args = g->args;
        l->args_len = g->args_len;
        l->granted_ms = now;
        l->until_ms = until;
    }
    int rc = ctl_store_grant(c->store, leases, n, ids, why, whylen);
    if (rc != CTL_STORE_OK) {
        code = store_refusal(rc, why, whylen);
        goto out;
    }
    ifm_reply_begin(enc, 200, NULL, 1);
    ifm_enc_key(enc, "serials");
    ifm_enc_array(enc, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        leases[i].lease_id = ids[i];
        ctl_lease_adopt(c, &leases[i], now);
        ctl_send_worker_cmd(c, leases[i].worker, IFM_WOP_RESERVE, leases[i].serial, g->kind, g->client, ids[i], g->args,
                            g->args_len);
        ifm_enc_map(enc, 4);
        ifm_enc_kstr(enc, "serial", leases[i].serial);
        ifm_enc_kstr(enc, "worker", leases[i].worker);
        ifm_enc_kuint(enc, "until", until);
        ifm_enc_kuint(enc, "lease", ids[i]);
        IFM_INFO("serial=%s client=%s reserved kind=%s worker=%s", leases[i].serial, g->client, g->kind,
                 leases[i].worker);
    }
    ifm_series_add(c->metrics.grants, (double)n);
    ctl_publish_available(c, false);
    code = 200;
out:
    free(leases);
    free(ids);
    return code;
}

uint32_t ctl_grant_any(ctl *c, const ctl_grant_req *g, uint32_t amount, ifm_enc *enc, char *why, size_t whylen)
{
    farm_view v;
    size_t *picked = calloc(amount ? amount : 1, sizeof *picked);
    if (!picked || view_build(c, g->kind, &v) != 0) {
        free(picked);
        snprintf(why, whylen, "out of memory");
        return 500;
    }
    size_t eligible = 0;
    uint32_t code = 500;
    int rc = ctl_alloc_pick(v.boards, c->nboards, v.loads, c->nworkers, amount, picked, &eligible, why, whylen);
    if (rc == CTL_ALLOC_REFUSED) {
        snprintf(why, whylen, "not enough boards: %u of kind %s requested, %zu available", amount, g->kind, eligible);
        code = 409;
    } else if (rc == CTL_ALLOC_DONE) {
        code = commit(c, g, picked, amount, enc, why, whylen);
    }
    view_free(&v);
    free(picked);
    return code;
}

/* The reply code and text for a serial the policy refused (PROTOCOL.md 6.4). */
static uint32_t refusal(ctl *c, const char *serial, ctl_alloc_reason why_not, const char *kind, char *why,
                        size_t whylen)
{
    switch (why_not) {
    case CTL_ALLOC_DUPLICATE:
        snprintf(why, whylen, "serial %s is listed twice", serial);
        return 400;
    case CTL_ALLOC_UNKNOWN:
        snprintf(why, whylen, "unknown serial %s", serial);
        return 404;
    default: {
        ctl_board *b = ctl_board_find(c, serial);
        const ctl_worker *w = b ? ctl_board_worker(c, b) : NULL;
        snprintf(why, whylen, "serial %s is not available for kind %s (%s%s)", serial, kind,
                 !b || b->leased                 ? "reserved"
                     : why_not == CTL_ALLOC_KIND ? "kind not offered"
                                                 : ifm_board_state_name(b->state),
                 !w || !w->online ? ", worker offline"
                     : w->hung    ? ", worker hung"
                                  : "");
        return 409;
    }
    }
}

uint32_t ctl_grant_serials(ctl *c, const ctl_grant_req *g, const char *const *serials, size_t n, ifm_enc *enc,
                           char *why, size_t whylen)
{
    farm_view v;
    size_t *picked = calloc(n ? n : 1, sizeof *picked);
    if (!picked || view_build(c, g->kind, &v) != 0) {
        free(picked);
        snprintf(why, whylen, "out of memory");
        return 500;
    }
    size_t bad = 0;
    ctl_alloc_reason why_not = CTL_ALLOC_OK;
    uint32_t code = 500;
    int rc = ctl_alloc_serials(v.boards, c->nboards, serials, n, picked, &bad, &why_not, why, whylen);
    if (rc == CTL_ALLOC_REFUSED)
        code = refusal(c, serials[bad], why_not, g->kind, why, whylen);
    else if (rc == CTL_ALLOC_DONE)
        code = commit(c, g, picked, n, enc, why, whylen);
    view_free(&v);
    free(picked);
    return code;
}
