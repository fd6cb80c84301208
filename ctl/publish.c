/* Everything control tells others. Retained messages (leases, availability,
 * control's own state) give dashboards and the broker's ACL plugin a complete
 * picture the moment they subscribe. */
#include <string.h>

#include "ctl.h"
#include "icefarm/log.h"

/* Every publish of control, checked: a message that could not be sent is
 * logged with its topic. Retained state (leases, availability, control's own
 * state) is published again on every (re)connect; events are not, so their
 * loss is a warning. */
static void pub(ctl *c, const char *topic, const void *p, size_t n, bool retain)
{
    if (ifm_mqtt_publish(c->mqtt, topic, p, n, 1, retain) == 0)
        return;
    if (retain)
        IFM_INFO("not connected: %s is published again on reconnect", topic);
    else
        IFM_WARN("not connected: message to %s dropped", topic);
}

void ctl_publish_lease(ctl *c, const ctl_board *b)
{
    char topic[IFM_TOPIC_MAX];
    if (ifm_topic_lease(topic, sizeof topic, b->serial))
        return;
    if (!b->leased) {
        pub(c, topic, NULL, 0, true); /* empty retained = cleared */
        return;
    }
    ifm_lease_info li;
    memset(&li, 0, sizeof li);
    snprintf(li.serial, sizeof li.serial, "%s", b->serial);
    snprintf(li.client, sizeof li.client, "%s", b->client);
    snprintf(li.kind, sizeof li.kind, "%s", b->lease_kind);
    snprintf(li.worker, sizeof li.worker, "%s", b->worker);
    snprintf(li.tag, sizeof li.tag, "%s", b->lease_tag);
    li.lease = b->lease_id;
    li.until_ms = b->until_ms;
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_lease_info_encode(&e, &li);
    pub(c, topic, ifm_enc_data(&e), ifm_enc_size(&e), true);
    ifm_enc_free(&e);
}

#define AVAIL_DEBOUNCE_MS 20

static void publish_available_now(ctl *c, bool force);

static void on_avail_timer(ifm_loop *loop, void *arg)
{
    ctl *c = arg;
    c->avail_timer = 0;
    publish_available_now(c, false);
}

void ctl_publish_available(ctl *c, bool force)
{
    if (force) {
        ifm_timer_cancel(c->loop, c->avail_timer);
        c->avail_timer = 0;
        publish_available_now(c, true);
    } else if (!c->avail_timer) {
        c->avail_timer = ifm_timer_add(c->loop, AVAIL_DEBOUNCE_MS, on_avail_timer, c);
    }
}

static void publish_available_now(ctl *c, bool force)
{
    ifm_available a;
    memset(&a, 0, sizeof a);
    for (size_t i = 0; i < c->nworkers; i++) {
        const ctl_worker *w = &c->workers[i];
        for (size_t k = 0; k < w->nkinds; k++) {
            bool seen = false;
            for (size_t j = 0; j < a.nkinds && !seen; j++)
                seen = strcmp(a.kinds[j], w->kinds[k]) == 0;
            if (!seen && a.nkinds < IFM_MAX_KINDS)
                snprintf(a.kinds[a.nkinds++], IFM_KIND_MAX, "%s", w->kinds[k]);
        }
    }
    for (size_t i = 0; i < c->nboards; i++) {
        ctl_board *b = c->boards[i];
        if (!ctl_board_allocatable(c, b, NULL))
            continue;
        a.amount++;
        const ctl_worker *w = ctl_board_worker(c, b);
        for (size_t j = 0; j < a.nkinds; j++)
            if (ctl_worker_offers(w, a.kinds[j]))
                a.counts[j]++;
    }
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_available_encode(&e, &a);
    /* Only on change: every board state change calls this. */
    if (force || ifm_enc_size(&e) != c->last_avail_len ||
        memcmp(ifm_enc_data(&e), c->last_avail, c->last_avail_len) != 0) {
        if (ifm_mqtt_publish(c->mqtt, IFM_TOPIC_AVAILABLE, ifm_enc_data(&e), ifm_enc_size(&e), 1, true) == 0 &&
            ifm_enc_size(&e) <= sizeof c->last_avail) {
            memcpy(c->last_avail, ifm_enc_data(&e), ifm_enc_size(&e));
            c->last_avail_len = ifm_enc_size(&e);
        }
    }
    ifm_enc_free(&e);
}

void ctl_publish_state(ctl *c, bool online)
{
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_ctl_state_encode(&e, online, c->epoch);
    pub(c, IFM_TOPIC_CTL_STATE, ifm_enc_data(&e), ifm_enc_size(&e), true);
    ifm_enc_free(&e);
}

void ctl_publish_liveness(ctl *c, ctl_worker *w, bool force)
{
    ifm_live_state st = ctl_worker_live(w);
    bool changed = !w->live_published || st != w->live || w->epoch != w->live_epoch;
    if (!changed && !force)
        return;
    if (!w->live_published || st != w->live)
        w->live_since_ms = ifm_wall_ms();
    w->live_published = true;
    w->live = st;
    w->live_epoch = w->epoch;
    char topic[IFM_TOPIC_MAX];
    if (ifm_topic_farm_worker(topic, sizeof topic, w->id))
        return;
    ifm_worker_live l;
    memset(&l, 0, sizeof l);
    snprintf(l.worker, sizeof l.worker, "%s", w->id);
    l.state = st;
    l.epoch = w->epoch;
    l.ctl_epoch = c->epoch;
    l.since_ms = w->live_since_ms;
    l.until_ms = st == IFM_LIVE_RECONNECTING ? w->grace_until_ms : 0;
    if (st != IFM_LIVE_ONLINE)
        snprintf(l.reason, sizeof l.reason, "%s", w->why);
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_worker_live_encode(&e, &l);
    pub(c, topic, ifm_enc_data(&e), ifm_enc_size(&e), true);
    ifm_enc_free(&e);
}

void ctl_send_worker_cmd(ctl *c, const char *worker, ifm_worker_op op, const char *serial, const char *kind,
                         const char *client, uint64_t lease, const uint8_t *args, size_t args_len)
{
    char topic[IFM_TOPIC_MAX];
    if (!worker || !*worker || ifm_topic_worker(topic, sizeof topic, worker, "cmd"))
        return;
    ifm_worker_cmd cmd;
    memset(&cmd, 0, sizeof cmd);
    cmd.op = op;
    snprintf(cmd.serial, sizeof cmd.serial, "%s", serial);
    if (kind)
        snprintf(cmd.kind, sizeof cmd.kind, "%s", kind);
    if (client)
        snprintf(cmd.client, sizeof cmd.client, "%s", client);
    cmd.lease = lease;
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_worker_cmd_encode(&e, &cmd, args_len ? args : NULL, args_len);
    pub(c, topic, ifm_enc_data(&e), ifm_enc_size(&e), false);
    ifm_enc_free(&e);
}

void ctl_send_client_event(ctl *c, const char *client, const char *event, const char *serial, uint64_t until_ms,
                           const char *reason)
{
    char topic[IFM_TOPIC_MAX];
    if (ifm_topic_client(topic, sizeof topic, client, "event"))
        return;
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_client_event_encode(&e, event, serial, until_ms, reason);
    pub(c, topic, ifm_enc_data(&e), ifm_enc_size(&e), false);
    ifm_enc_free(&e);
}
