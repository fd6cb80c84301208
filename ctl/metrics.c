/* icefarm-ctl's Prometheus metrics (README "Metrics" lists them). Counters move
 * where things happen (grant.c, leases.c, service.c, main.c call in here); gauges
 * that mirror state are computed from the registry just before each scrape. */
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "icefarm/log.h"

static const char *const L_STATE_KIND[] = { "state", "kind", NULL };
static const char *const L_STATE[] = { "state", NULL };
static const char *const L_KIND[] = { "kind", NULL };
static const char *const L_VERB[] = { "verb", NULL };
static const char *const L_REASON[] = { "reason", NULL };

double ctl_metrics_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void count_waiter(const char *kind, uint32_t amount, void *arg)
{
    ctl_metrics *m = arg;
    ifm_series_add(ifm_metric_at(m->waiting, kind), 1);
}

static void collect(ifm_metrics *r, void *arg)
{
    ctl *c = arg;
    ctl_metrics *m = &c->metrics;
    ifm_metric_reset(m->boards);
    ifm_metric_reset(m->workers);
    ifm_metric_reset(m->waiting);
    double leases = 0;
    for (size_t i = 0; i < c->nboards; i++) {
        const ctl_board *b = c->boards[i];
        if (b->leased)
            leases++;
        if (b->known)
            ifm_series_add(ifm_metric_at(m->boards, ifm_board_state_name(b->state), b->kind[0] ? b->kind : "none"), 1);
    }
    ifm_series_set(ifm_metric_at(m->leases), leases);
    /* control's verdict (PROTOCOL.md 7.8); "lost" is its "offline" */
    static const char *const live[] = { [IFM_LIVE_ONLINE] = "online",
                                        [IFM_LIVE_HUNG] = "hung",
                                        [IFM_LIVE_RECONNECTING] = "reconnecting",
                                        [IFM_LIVE_OFFLINE] = "lost" };
    for (size_t i = 0; i < sizeof live / sizeof *live; i++)
        ifm_series_add(ifm_metric_at(m->workers, live[i]), 0);
    for (size_t i = 0; i < c->nworkers; i++)
        ifm_series_add(ifm_metric_at(m->workers, live[ctl_worker_live(&c->workers[i])]), 1);
    ctl_waiters_each(c, count_waiter, m);
    ifm_series_set(ifm_metric_at(m->mqtt_connected), ifm_mqtt_connected(c->mqtt) ? 1 : 0);
}

int ctl_metrics_init(ctl *c)
{
    ctl_metrics *m = &c->metrics;
    ifm_metrics *r = m->reg = ifm_metrics_new();
    if (!r)
        return -1;
    m->boards = ifm_metrics_gauge(r, "icefarm_ctl_boards", "Boards known to control, by state and firmware kind.",
                                  L_STATE_KIND);
    m->leases = ifm_metrics_gauge(r, "icefarm_ctl_leases", "Leases held now.", NULL);
    m->waiting =
        ifm_metrics_gauge(r, "icefarm_ctl_waiting_reserves", "Reserve requests waiting for boards, by kind.", L_KIND);
    m->workers = ifm_metrics_gauge(r, "icefarm_ctl_workers",
                                   "Workers by control's verdict (online, hung, reconnecting, lost).", L_STATE);
    m->grants =
        ifm_metric_at(ifm_metrics_counter(r, "icefarm_ctl_grants_total", "Boards granted (leases made).", NULL));
    m->ends = ifm_metrics_counter(r, "icefarm_ctl_lease_ends_total",
                                  "Leases ended before their time, by reason (holder, deleted, failed).", L_REASON);
    m->expiries =
        ifm_metric_at(ifm_metrics_counter(r, "icefarm_ctl_lease_expiries_total", "Leases that expired.", NULL));
    m->latency =
        ifm_metrics_histogram(r, "icefarm_ctl_request_duration_seconds",
                              "Time control spent on a request, by verb (a reserve that waits counts when queued).",
                              L_VERB, IFM_BUCKETS_LATENCY, IFM_BUCKETS_LATENCY_N);
    m->reconnects = ifm_metric_at(
        ifm_metrics_counter(r, "icefarm_mqtt_reconnects_total", "Connections to the broker after the first.", NULL));
    m->mqtt_connected = ifm_metrics_gauge(r, "icefarm_mqtt_connected", "1 while connected to the broker.", NULL);
    /* Every verb and reason listed from the start: a rate over a series that
     * appears later misses its first increments. */
    for (int v = 0; v < IFM_VERB_COUNT; v++)
        ifm_metric_at(m->latency, ifm_verb_name((ifm_verb)v));
    const char *reasons[] = { "holder", "deleted", "failed" };
    for (size_t i = 0; i < 3; i++)
        ifm_metric_at(m->ends, reasons[i]);
    return ifm_metrics_on_collect(r, collect, c);
}

int ctl_metrics_serve(ctl *c, const char *listen)
{
    char why[256] = "";
    if (!listen || !*listen)
        return 0;
    if (ifm_metrics_serve(c->loop, c->metrics.reg, listen, &c->metrics.srv, why, sizeof why) != 0) {
        IFM_ERROR("metrics: %s", why);
        return -1;
    }
    IFM_INFO("metrics on http://%s/metrics (port %d)", listen, ifm_metrics_server_port(c->metrics.srv));
    return 0;
}

void ctl_metrics_free(ctl *c)
{
    ifm_metrics_server_free(c->metrics.srv);
    ifm_metrics_free(c->metrics.reg);
    memset(&c->metrics, 0, sizeof c->metrics);
}

void ctl_metrics_request(ctl *c, const char *verb, double seconds)
{
    int v = ifm_verb_parse(verb);
    ifm_series_observe(ifm_metric_at(c->metrics.latency, v >= 0 ? verb : "invalid"), seconds);
}

void ctl_metrics_ended(ctl *c, bool failed, const char *why)
{
    if (failed)
        ifm_series_add(ifm_metric_at(c->metrics.ends, "failed"), 1);
    else if (strcmp(why, "expired") == 0)
        ifm_series_add(c->metrics.expiries, 1);
    else if (strncmp(why, "deleted", 7) == 0)
        ifm_series_add(ifm_metric_at(c->metrics.ends, "deleted"), 1);
    else
        ifm_series_add(ifm_metric_at(c->metrics.ends, "holder"), 1);
}
