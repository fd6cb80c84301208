/* Granting N boards of a kind, and the queue of reserve requests that asked to
 * wait for boards (`wait_ms`). The queue is served first come first served per
 * kind: a waiter that cannot be satisfied yet holds back later waiters of the
 * same kind, so a large request is not starved by a stream of small ones. */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "ctl.h"
#include "icefarm/log.h"

struct ctl_waiter {
    ctl_waiter *next;
    ctl *c;
    char client[IFM_NAME_MAX];
    char kind[IFM_KIND_MAX];
    uint32_t amount;
    uint8_t *args;
    size_t args_len;
    uint64_t duration_s;
    ifm_reply_to *reply_to;
    uint64_t timer;
};

uint32_t ctl_grant_any(ctl *c, const char *client, uint32_t amount, const char *kind, const uint8_t *args,
                       size_t args_len, uint64_t duration_s, ifm_enc *enc, char *why, size_t whylen)
{
    size_t n = c->nboards;
    ctl_alloc_board *cand = calloc(n ? n : 1, sizeof *cand);
    ctl_alloc_load *loads = calloc(c->nworkers ? c->nworkers : 1, sizeof *loads);
    size_t *picked = calloc(amount, sizeof *picked);
    ctl_lease *leases = calloc(amount, sizeof *leases);
    uint64_t *ids = calloc(amount, sizeof *ids);
    uint32_t code = 500;
    if (!cand || !loads || !picked || !leases || !ids) {
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < c->nworkers; i++)
        loads[i].worker = c->workers[i].id;
    for (size_t i = 0; i < n; i++) {
        ctl_board *b = c->boards[i];
        const ctl_worker *w = ctl_board_worker(c, b);
        cand[i] = (ctl_alloc_board){ b->serial,
                                     b->worker,
                                     b->known && b->state == IFM_BOARD_READY,
                                     w && w->online,
                                     w && ctl_worker_offers(w, kind),
                                     b->leased };
        for (size_t k = 0; b->leased && k < c->nworkers; k++)
            if (strcmp(loads[k].worker, b->worker) == 0)
                loads[k].leases++;
    }
    size_t eligible = 0;
    int rc = ctl_alloc_pick(cand, n, loads, c->nworkers, amount, picked, &eligible, why, whylen);
    if (rc == CTL_ALLOC_REFUSED) {
        snprintf(why, whylen, "not enough boards: %u of kind %s requested, %zu available", amount, kind, eligible);
        code = 409;
        goto out;
    }
    if (rc != CTL_ALLOC_DONE)
        goto out;
    uint64_t now = ifm_wall_ms(), until = now + duration_s * 1000;
    for (uint32_t i = 0; i < amount; i++) {
        const ctl_board *b = c->boards[picked[i]];
        ctl_lease *l = &leases[i];
        snprintf(l->serial, sizeof l->serial, "%s", b->serial);
        snprintf(l->client, sizeof l->client, "%s", client);
        snprintf(l->kind, sizeof l->kind, "%s", kind);
        snprintf(l->worker, sizeof l->worker, "%s", b->worker);
        l->args = args;
        l->args_len = args_len;
        l->granted_ms = now;
        l->until_ms = until;
    }
    /* The grant is durable before anyone hears of it (guarantee 2). */
    if (ctl_store_grant(c->store, leases, amount, ids, why, whylen) != CTL_STORE_OK) {
        code = 409;
        goto out;
    }
    ifm_reply_begin(enc, 200, NULL, 1);
    ifm_enc_key(enc, "serials");
    ifm_enc_array(enc, amount);
    for (uint32_t i = 0; i < amount; i++) {
        leases[i].lease_id = ids[i];
        ctl_lease_adopt(c, &leases[i]);
        ctl_send_worker_cmd(c, leases[i].worker, IFM_WOP_RESERVE, leases[i].serial, kind, client, ids[i], args,
                            args_len);
        ifm_enc_map(enc, 3);
        ifm_enc_kstr(enc, "serial", leases[i].serial);
        ifm_enc_kstr(enc, "worker", leases[i].worker);
        ifm_enc_kuint(enc, "until", until);
        IFM_INFO("serial=%s client=%s reserved kind=%s worker=%s", leases[i].serial, client, kind, leases[i].worker);
    }
    ctl_publish_available(c, false);
    code = 200;
out:
    free(cand);
    free(loads);
    free(picked);
    free(leases);
    free(ids);
    return code;
}

static void waiter_free(ctl_waiter *w)
{
    free(w->args);
    ifm_reply_to_free(w->reply_to);
    free(w);
}

static void unlink_waiter(ctl *c, ctl_waiter *w)
{
    for (ctl_waiter **pp = &c->waiters; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            return;
        }
}

static void waiter_reply(ctl_waiter *w, const ifm_enc *e)
{
    ifm_mqtt_reply_to(w->c->mqtt, w->reply_to, ifm_enc_data(e), ifm_enc_size(e));
}

static void on_waiter_timeout(ifm_loop *loop, void *arg)
{
    ctl_waiter *w = arg;
    ctl *c = w->c;
    w->timer = 0;
    unlink_waiter(c, w);
    char why[200];
    snprintf(why, sizeof why, "not enough boards: waited for %u of kind %s, timed out", w->amount, w->kind);
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_reply_begin(&e, 409, why, 0);
    waiter_reply(w, &e);
    ifm_enc_free(&e);
    IFM_INFO("client=%s reserve wait timed out", w->client);
    waiter_free(w);
    /* A large head-of-line waiter giving up may let smaller ones through. */
    ctl_waiters_serve(c);
}

int ctl_waiter_add(ctl *c, const ifm_mqtt_msg *msg, const char *client, const ifm_ctl_req *req, const uint8_t *args,
                   size_t args_len, uint64_t duration_s)
{
    ctl_waiter *w = calloc(1, sizeof *w);
    if (!w)
        return -1;
    w->c = c;
    snprintf(w->client, sizeof w->client, "%s", client);
    snprintf(w->kind, sizeof w->kind, "%s", req->kind);
    w->amount = req->amount;
    w->duration_s = duration_s;
    if (args_len && !(w->args = malloc(args_len)))
        goto fail;
    if (args_len)
        memcpy(w->args, args, args_len);
    w->args_len = args_len;
    if (!(w->reply_to = ifm_reply_to_save(msg)))
        goto fail;
    w->timer = ifm_timer_add(c->loop, req->wait_ms, on_waiter_timeout, w);
    ctl_waiter **pp = &c->waiters;
    while (*pp)
        pp = &(*pp)->next;
    *pp = w;
    IFM_INFO("client=%s waiting up to %llu ms for %u board(s) of kind %s", client, (unsigned long long)req->wait_ms,
             req->amount, req->kind);
    return 0;
fail:
    waiter_free(w);
    return -1;
}

void ctl_waiters_serve(ctl *c)
{
    char blocked[IFM_MAX_KINDS][IFM_KIND_MAX];
    size_t nblocked = 0;
    ctl_waiter *w = c->waiters;
    while (w) {
        ctl_waiter *next = w->next;
        bool is_blocked = false;
        for (size_t i = 0; i < nblocked && !is_blocked; i++)
            is_blocked = strcmp(blocked[i], w->kind) == 0;
        if (!is_blocked) {
            ifm_enc e;
            ifm_enc_init(&e);
            char why[200];
            uint32_t code = ctl_grant_any(c, w->client, w->amount, w->kind, w->args, w->args_len, w->duration_s, &e,
                                          why, sizeof why);
            if (code == 200) {
                waiter_reply(w, &e);
                ifm_timer_cancel(c->loop, w->timer);
                unlink_waiter(c, w);
                waiter_free(w);
            } else if (nblocked < IFM_MAX_KINDS) {
                snprintf(blocked[nblocked++], IFM_KIND_MAX, "%s", w->kind);
            }
            ifm_enc_free(&e);
        }
        w = next;
    }
}

void ctl_waiters_free(ctl *c)
{
    while (c->waiters) {
        ctl_waiter *w = c->waiters;
        c->waiters = w->next;
        ifm_timer_cancel(c->loop, w->timer);
        waiter_free(w);
    }
}
