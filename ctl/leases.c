/* Lease timers. Each leased board carries two loop timers: the "ending soon"
 * warning and the expiry. Deadlines are wall-clock (they are stored on disk and
 * must mean the same after a restart); the timers hold the remaining time. */
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "icefarm/log.h"

void ctl_lease_plan(uint64_t now_ms, uint64_t set_ms, uint64_t until_ms, bool warned, uint64_t warn_before_ms,
                    uint64_t *warn_in_ms, uint64_t *expire_in_ms)
{
    *expire_in_ms = until_ms > now_ms ? until_ms - now_ms : 0;
    *warn_in_ms = UINT64_MAX;
    if (warned || warn_before_ms == 0 || *expire_in_ms == 0)
        return;
    uint64_t lead = warn_before_ms;
    /* A deadline set less than twice the lead ahead (a short lease, or an extend
     * by less than that) is warned halfway to it: warned at once, a holder that
     * extends on every warning would extend, be warned, extend... in a loop. */
    if (set_ms && until_ms > set_ms && until_ms - set_ms < 2 * lead)
        lead = (until_ms - set_ms) / 2;
    uint64_t warn_at = until_ms > lead ? until_ms - lead : 0;
    /* Past the warning time already (control was down then): warn at once, the
     * holder still deserves to hear before the lease ends. */
    *warn_in_ms = warn_at > now_ms ? warn_at - now_ms : 0;
}

void ctl_lease_disarm(ctl *c, ctl_board *b)
{
    ifm_timer_cancel(c->loop, b->warn_timer);
    ifm_timer_cancel(c->loop, b->expire_timer);
    b->warn_timer = b->expire_timer = 0;
}

static void on_warn(ifm_loop *loop, void *arg)
{
    ctl_board *b = arg;
    ctl *c = b->owner;
    b->warn_timer = 0;
    if (!b->leased)
        return;
    char err[200];
    int rc = ctl_store_mark_warned(c->store, b->serial, b->lease_id, b->until_ms, err, sizeof err);
    if (rc < 0)
        IFM_ERROR("serial=%s client=%s cannot record the warning: %s", b->serial, b->client, err);
    b->warned = true;
    IFM_INFO("serial=%s client=%s reservation ending soon", b->serial, b->client);
    ctl_send_client_event(c, b->client, "reservation ending soon", b->serial, b->until_ms, NULL);
}

static void on_expire(ifm_loop *loop, void *arg)
{
    ctl_board *b = arg;
    ctl *c = b->owner;
    b->expire_timer = 0;
    if (!b->leased)
        return;
    const char *serial = b->serial;
    ctl_lease_list ended = CTL_LEASE_LIST_INIT;
    char err[200];
    if (ctl_store_end(c->store, NULL, &serial, 1, &ended, err, sizeof err) != CTL_STORE_OK) {
        IFM_ERROR("serial=%s client=%s expiry failed: %s; retrying in 1 s", b->serial, b->client, err);
        b->expire_timer = ifm_timer_add(c->loop, 1000, on_expire, b);
        ctl_lease_list_free(&ended);
        return;
    }
    for (size_t i = 0; i < ended.n; i++) {
        IFM_INFO("serial=%s client=%s reservation expired", ended.v[i].serial, ended.v[i].client);
        ctl_lease_ended(c, &ended.v[i], false, "expired");
    }
    ctl_lease_list_free(&ended);
    ctl_publish_available(c, false);
    ctl_waiters_serve(c);
}

void ctl_lease_arm(ctl *c, ctl_board *b)
{
    ctl_lease_disarm(c, b);
    uint64_t warn_in, expire_in;
    ctl_lease_plan(ifm_wall_ms(), b->set_ms, b->until_ms, b->warned, c->cfg.warn_before_s * 1000, &warn_in, &expire_in);
    b->expire_timer = ifm_timer_add(c->loop, expire_in, on_expire, b);
    if (warn_in != UINT64_MAX)
        b->warn_timer = ifm_timer_add(c->loop, warn_in, on_warn, b);
}

void ctl_lease_adopt(ctl *c, const ctl_lease *l, uint64_t set_ms)
{
    ctl_board *b = ctl_board_get(c, l->serial);
    if (!b)
        return;
    b->leased = true;
    snprintf(b->client, sizeof b->client, "%s", l->client);
    snprintf(b->lease_kind, sizeof b->lease_kind, "%s", l->kind);
    snprintf(b->lease_tag, sizeof b->lease_tag, "%s", l->tag);
    if (!b->known)
        snprintf(b->worker, sizeof b->worker, "%s", l->worker);
    b->lease_id = l->lease_id;
    b->until_ms = l->until_ms;
    b->set_ms = set_ms;
    b->warned = l->warned;
    ctl_lease_arm(c, b);
    ctl_publish_lease(c, b);
}

void ctl_lease_ended(ctl *c, const ctl_lease *l, bool failed, const char *why)
{
    ctl_board *b = ctl_board_find(c, l->serial);
    if (b && b->lease_id == l->lease_id) {
        ctl_lease_disarm(c, b);
        b->leased = false;
        b->client[0] = '\0';
        ctl_publish_lease(c, b);
    }
    ctl_ended *rec = &c->ended[c->nended++ % CTL_ENDED_LOG];
    snprintf(rec->client, sizeof rec->client, "%s", l->client);
    snprintf(rec->serial, sizeof rec->serial, "%s", l->serial);
    snprintf(rec->reason, sizeof rec->reason, "%s", why);
    rec->lease = l->lease_id;
    rec->at_ms = ifm_wall_ms();
    rec->failed = failed;
    if (failed)
        ctl_send_client_event(c, l->client, "failure", l->serial, 0, why);
    ctl_send_client_event(c, l->client, "reservation end", l->serial, 0, why);
    /* The worker puts the board back on the default firmware; if the worker is
     * gone the command simply finds nobody, and its next birth resets it anyway. */
    ctl_send_worker_cmd(c, l->worker, IFM_WOP_RELEASE, l->serial, NULL, NULL, 0, NULL, 0);
    IFM_INFO("serial=%s client=%s reservation end (%s)", l->serial, l->client, why);
    ctl_metrics_ended(c, failed, why);
}

void ctl_ended_each(ctl *c, const char *client, void (*fn)(const ctl_ended *e, void *arg), void *arg)
{
    size_t first = c->nended > CTL_ENDED_LOG ? c->nended - CTL_ENDED_LOG : 0;
    for (size_t i = first; i < c->nended; i++) {
        const ctl_ended *e = &c->ended[i % CTL_ENDED_LOG];
        if (strcmp(e->client, client) == 0)
            fn(e, arg);
    }
}

static int adopt_visit(const ctl_lease *l, void *arg)
{
    ctl_lease_adopt(arg, l, 0);
    return 0;
}

static void bad_record(const char *serial, const char *reason, void *arg)
{
    IFM_ERROR("serial=%s lease record is corrupt and was skipped: %s", serial, reason);
}

int ctl_leases_load(ctl *c)
{
    char err[200];
    int rc = ctl_store_foreach(c->store, adopt_visit, bad_record, c, err, sizeof err);
    if (rc < 0) {
        IFM_ERROR("cannot read leases: %s", err);
        return -1;
    }
    size_t n = 0;
    for (size_t i = 0; i < c->nboards; i++)
        n += c->boards[i]->leased;
    IFM_INFO("loaded %zu lease(s) from the store", n);
    return 0;
}
