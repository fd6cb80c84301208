/* The queue of reserve requests that asked to wait for boards (`wait_ms`);
 * grant.c grants them. The queue is served first come first served per
 * kind: a waiter that cannot be satisfied yet holds back later waiters of the
 * same kind, so a large request is not starved by a stream of small ones. */
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "icefarm/log.h"

struct ctl_waiter {
    ctl_waiter *next;
    ctl *c;
    char client[IFM_NAME_MAX];
    char kind[IFM_KIND_MAX];
    char tag[IFM_TAG_MAX];
    uint32_t amount;
    uint8_t *args;
    size_t args_len;
    uint64_t duration_s;
    ifm_reply_to *reply_to;
    uint64_t timer;
};

void ctl_waiters_each(ctl *c, void (*fn)(const char *kind, uint32_t amount, void *arg), void *arg)
{
    for (ctl_waiter *w = c->waiters; w; w = w->next)
        fn(w->kind, w->amount, arg);
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
    if (ifm_mqtt_reply_to(w->c->mqtt, w->reply_to, ifm_enc_data(e), ifm_enc_size(e)) != 0)
        IFM_WARN("not connected: the answer to a waiting reserve is lost (its caller times out)");
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
    snprintf(w->tag, sizeof w->tag, "%s", req->tag);
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
            const ctl_grant_req g = { w->client, w->kind, w->args, w->args_len, w->duration_s, w->tag };
            uint32_t code = ctl_grant_any(c, &g, w->amount, &e, why, sizeof why);
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
