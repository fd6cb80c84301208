/* icefarm-ctl: a foreground daemon (systemd- and docker-friendly). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "icefarm/opts.h"
#include "icefarm/log.h"

/* icefarm-ctl's own options; the broker, metrics, config and log-level ones
 * are the shared ones of icefarm/opts.h. */
static const ifm_opt ctl_opts[] = {
    { .name = "data",
      .type = IFM_OPT_TEXT,
      .arg = "DIR",
      .def = "./icefarm-ctl-data",
      .help = "LMDB directory for leases" },
    { .name = "lease",
      .type = IFM_OPT_INT,
      .arg = "SECONDS",
      .def = "3600",
      .help = "default reservation length",
      .min = 1,
      .max = 365L * 86400 },
    { .name = "lease-max",
      .type = IFM_OPT_INT,
      .arg = "SECONDS",
      .def = "86400",
      .help = "longest reservation a client may ask",
      .min = 1,
      .max = 365L * 86400 },
    { .name = "warn-before",
      .type = IFM_OPT_INT,
      .arg = "SECONDS",
      .def = "1200",
      .help = "'reservation ending soon' lead",
      .min = 0,
      .max = 365L * 86400 },
    { .name = "worker-grace",
      .type = IFM_OPT_INT,
      .arg = "SECONDS",
      .def = "30",
      .help = "a worker whose connection died keeps its leases this long (0: they end at once)",
      .min = 0,
      .max = 86400 },
    { 0 },
};

static const ifm_opts_spec ctl_spec = {
    .prog = "icefarm-ctl",
    .about = "The icefarm reservation service: leases in LMDB, worker liveness, events.",
    .shared = IFM_OPTS_MQTT | IFM_OPTS_METRICS,
    .own = ctl_opts,
};

static void on_signal(ifm_loop *loop, int signo, void *arg)
{
    ctl *c = arg;
    IFM_INFO("signal %d: shutting down", signo);
    c->shutting_down = true;
    ifm_loop_stop(loop);
}

static void on_connect(ifm_mqtt *m, bool connected, void *arg)
{
    ctl *c = arg;
    if (!connected)
        return;
    if (c->metrics.connects++) {
        ifm_series_add(c->metrics.reconnects, 1);
        /* The broker may have restarted: nothing it held (retained births,
         * pending replies, the requesters' connections) can be trusted. */
        ctl_workers_unconfirmed(c);
        ctl_waiters_drop_all(c, "dropped: control lost its broker connection; ask again");
    }
    ctl_publish_state(c, true);
    /* Leases are loaded (and their timers armed) once connected, so an expiry
     * that passed while control was down is announced, not silently applied. */
    if (!c->nboards)
        ctl_leases_load(c);
    for (size_t i = 0; i < c->nboards; i++)
        if (c->boards[i]->leased)
            ctl_publish_lease(c, c->boards[i]);
    ctl_publish_available(c, true);
    ctl_stats_publish(c, true);
    for (size_t i = 0; i < c->nworkers; i++)
        ctl_publish_liveness(c, &c->workers[i], true);
}

static void configure(ctl *c, const ifm_opts *o)
{
    ifm_mqtt_opts mo = { 0 };
    ifm_opts_mqtt(o, &mo, c->cfg.broker_host, sizeof c->cfg.broker_host);
    c->cfg.broker_port = mo.port;
    c->cfg.broker_tls = mo.tls;
    c->cfg.user = mo.username;
    c->cfg.password = mo.password;
    c->cfg.cafile = mo.cafile;
    c->cfg.keepalive = mo.keepalive;
    c->cfg.data_dir = ifm_opts_get(o, "data");
    c->cfg.metrics_listen = ifm_opts_get(o, "metrics-listen");
    long lease = ifm_opts_long(o, "lease"), lease_max = ifm_opts_long(o, "lease-max");
    c->cfg.lease_default_s = (uint64_t)lease;
    c->cfg.lease_max_s = (uint64_t)(lease_max < lease ? lease : lease_max);
    c->cfg.warn_before_s = (uint64_t)ifm_opts_long(o, "warn-before");
    c->cfg.worker_grace_s = (uint64_t)ifm_opts_long(o, "worker-grace");
}

int main(int argc, char **argv)
{
    ctl c;
    memset(&c, 0, sizeof c);
    int rc = 1;
    ifm_opts *opts = ifm_opts_parse(&ctl_spec, argc, argv, &rc);
    if (!opts)
        return rc;
    rc = 1;
    configure(&c, opts);
    char err[256];
    c.store = ctl_store_open(c.cfg.data_dir, err, sizeof err);
    if (!c.store) {
        IFM_ERROR("cannot open the lease store in %s: %s", c.cfg.data_dir, err);
        goto out;
    }
    if (ctl_store_claim(c.store, err, sizeof err) != CTL_STORE_OK) {
        IFM_ERROR("%s", err);
        goto out;
    }
    c.loop = ifm_loop_new();
    c.epoch = ifm_wall_ms();
    if (ctl_metrics_init(&c) != 0 || ctl_metrics_serve(&c, c.cfg.metrics_listen) != 0 || ctl_stats_init(&c) != 0)
        goto out;
    ifm_enc will;
    ifm_enc_init(&will);
    ifm_ctl_state_encode(&will, false, c.epoch);
    ifm_mqtt_opts mo = {
        .host = c.cfg.broker_host,
        .port = c.cfg.broker_port,
        .tls = c.cfg.broker_tls,
        .client_id = "icefarm-ctl",
        .name = "icefarm-ctl",
        .username = c.cfg.user,
        .password = c.cfg.password,
        .cafile = c.cfg.cafile,
        .keepalive = c.cfg.keepalive,
        .will_topic = IFM_TOPIC_CTL_STATE,
        .will_payload = ifm_enc_data(&will),
        .will_len = ifm_enc_size(&will),
        .will_retain = true,
    };
    c.mqtt = ifm_mqtt_new(c.loop, &mo, on_connect, &c);
    ifm_enc_free(&will); /* libmosquitto copied the Will */
    if (!c.mqtt) {
        IFM_ERROR("cannot set up the MQTT client");
        goto out;
    }
    if (ifm_mqtt_subscribe(c.mqtt, IFM_TOPIC_WORKER_STATE_ALL, 1, ctl_on_worker_state, &c) ||
        ifm_mqtt_subscribe(c.mqtt, IFM_TOPIC_BOARD_STATE_ALL, 1, ctl_on_board_state, &c) ||
        ifm_mqtt_subscribe(c.mqtt, IFM_TOPIC_WORKER_HEARTBEAT_ALL, 0, ctl_on_heartbeat, &c) ||
        ifm_mqtt_subscribe(c.mqtt, IFM_TOPIC_PRESENCE_ALL, 1, ctl_on_presence, &c) ||
        ifm_mqtt_subscribe(c.mqtt, IFM_TOPIC_CTL_REQ_ALL, 1, ctl_on_request, &c) ||
        ifm_mqtt_subscribe(c.mqtt, IFM_TOPIC_WORKER_STATS_ALL, 1, ctl_on_worker_stats, &c)) {
        IFM_ERROR("cannot subscribe to the worker, board, presence, request and stats topics (out of memory)");
        goto out;
    }
    ctl_watch_start(&c);
    int sigs[] = { SIGINT, SIGTERM };
    if (ifm_loop_signals(c.loop, sigs, 2, on_signal, &c) || signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
        IFM_ERROR("cannot set up signal handling: %s", strerror(errno));
        goto out;
    }
    IFM_INFO("icefarm-ctl starting: broker %s:%d, data %s, lease %llus (max %llus), warn %llus before, worker grace "
             "%llus",
             c.cfg.broker_host, c.cfg.broker_port, c.cfg.data_dir, (unsigned long long)c.cfg.lease_default_s,
             (unsigned long long)c.cfg.lease_max_s, (unsigned long long)c.cfg.warn_before_s,
             (unsigned long long)c.cfg.worker_grace_s);
    ifm_mqtt_start(c.mqtt);
    ifm_loop_run(c.loop);
    if (ifm_mqtt_connected(c.mqtt))
        ctl_publish_state(&c, false);
    ifm_mqtt_disconnect(c.mqtt);
    rc = 0;
out:
    ctl_waiters_free(&c);
    if (c.loop) {
        ifm_timer_cancel(c.loop, c.avail_timer);
        ctl_watch_stop(&c);
    }
    ifm_mqtt_free(c.mqtt);
    ctl_metrics_free(&c);
    ctl_stats_free(&c);
    for (size_t i = 0; i < c.nboards; i++)
        free(c.boards[i]);
    free(c.boards);
    free(c.workers);
    ctl_store_close(c.store);
    ifm_loop_free(c.loop);
    ifm_opts_free(opts);
    return rc;
}
