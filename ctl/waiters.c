/* The queue of reserve requests that asked to wait for boards (`wait_ms`);
 * grant.c grants them. The queue is served first come first served per
 * kind: a waiter that cannot be satisfied yet holds back later waiters of the
 * same kind, so a large request is not starved by a stream of small ones. */
#include <mqtt_protocol.h>
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
    uint8_t corr[IFM_CORR_MAX]; /* the request's correlation data, for `cancel` */
    size_t corr_len;
    char conn[IFM_NAME_MAX]; /* the requester's MQTT client id ("" if it did not say) */
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
    void *corr = NULL;
    uint16_t corr_len = 0;
    if (mosquitto_property_read_binary(msg->props, MQTT_PROP_CORRELATION_DATA, &corr, &corr_len, false) && corr &&
        corr_len <= IFM_CORR_MAX) {
        memcpy(w->corr, corr, corr_len);
        w->corr_len = corr_len;
    }
    free(corr);
    if (ifm_mqtt_msg_user_prop(msg, IFM_PROP_CONN, w->conn, sizeof w->conn))
        w->conn[0] = '\0';
    w->timer = ifm_timer_add(c->loop, req->wait_ms, on_waiter_timeout, w);
    ctl_waiter **pp = &c->waiters;
    while (*pp)
        pp = &(*pp)->next;
    *pp = w;
    IFM_INFO("client=%s conn=%s waiting up to %llu ms for %u board(s) of kind %s", client, w->conn[0] ? w->conn : "-",
             (unsigned long long)req->wait_ms, req->amount, req->kind);
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

/* Ends a waiter without a grant: its requester (if anyone still listens) hears
 * 409 with `why`. */
static void waiter_drop(ctl *c, ctl_waiter *w, uint32_t code, const char *why)
{
    ifm_timer_cancel(c->loop, w->timer);
    unlink_waiter(c, w);
    char text[200];
    snprintf(text, sizeof text, "reserve of %u board(s) of kind %s %s", w->amount, w->kind, why);
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_reply_begin(&e, code, text, 0);
    waiter_reply(w, &e);
    ifm_enc_free(&e);
    IFM_INFO("client=%s conn=%s %s", w->client, w->conn[0] ? w->conn : "-", text);
    waiter_free(w);
}

size_t ctl_waiter_cancel(ctl *c, const char *client, const uint8_t *corr, size_t len)
{
    for (ctl_waiter *w = c->waiters; w; w = w->next)
        if (strcmp(w->client, client) == 0 && w->corr_len == len && memcmp(w->corr, corr, len) == 0) {
            waiter_drop(c, w, 409, "cancelled by its requester");
            ctl_waiters_serve(c);
            return 1;
        }
    return 0;
}

size_t ctl_waiters_gone(ctl *c, const char *client, const char *conn)
{
    size_t n = 0;
    for (ctl_waiter *w = c->waiters, *next; w; w = next) {
        next = w->next;
        if (w->conn[0] && strcmp(w->conn, conn) == 0 && strcmp(w->client, client) == 0) {
            waiter_drop(c, w, 409, "cancelled: its requester's connection ended");
            n++;
        }
    }
    if (n)
        ctl_waiters_serve(c);
    return n;
}

void ctl_waiters_drop_all(ctl *c, const char *why)
{
    while (c->waiters)
        waiter_drop(c, c->waiters, 503, why);
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
