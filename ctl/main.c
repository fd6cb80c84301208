/* icefarm-ctl: a foreground daemon (systemd- and docker-friendly). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "icefarm/conf.h"
#include "icefarm/log.h"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: icefarm-ctl [OPTIONS]\n"
            "The icefarm reservation service: leases in LMDB, worker liveness, events.\n\n"
            "  --broker URL        MQTT broker (mqtt://HOST:PORT)      [ICEFARM_BROKER, mqtt://127.0.0.1:1883]\n"
            "  --data DIR          LMDB directory for leases            [ICEFARM_DATA, ./icefarm-ctl-data]\n"
            "  --lease SECONDS     default reservation length           [ICEFARM_LEASE, 3600]\n"
            "  --lease-max SECONDS longest reservation a client may ask [ICEFARM_LEASE_MAX, 86400]\n"
            "  --warn-before SECONDS  'reservation ending soon' lead    [ICEFARM_WARN_BEFORE, 1200]\n"
            "  --keepalive SECONDS MQTT keep-alive                      [ICEFARM_KEEPALIVE, 5]\n"
            "  --metrics-listen HOST:PORT  serve Prometheus /metrics there (no login: loopback or a\n"
            "                      private network)                     [ICEFARM_METRICS_LISTEN, off]\n"
            "  --user NAME --password PW --cafile FILE   broker credentials and TLS CA\n"
            "  --config FILE       `name = value` file read after flags and environment\n"
            "  -h, --help          this help\n");
}

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
    if (c->metrics.connects++)
        ifm_series_add(c->metrics.reconnects, 1);
    ctl_publish_state(c, true);
    /* Leases are loaded (and their timers armed) once connected, so an expiry
     * that passed while control was down is announced, not silently applied. */
    if (!c->nboards)
        ctl_leases_load(c);
    for (size_t i = 0; i < c->nboards; i++)
        if (c->boards[i]->leased)
            ctl_publish_lease(c, c->boards[i]);
    ctl_publish_available(c, true);
}

static int configure(ctl *c, int argc, char **argv, ifm_conf **confp)
{
    enum {
        O_BROKER = 1,
        O_DATA,
        O_LEASE,
        O_LEASE_MAX,
        O_WARN,
        O_KEEPALIVE,
        O_USER,
        O_PASSWORD,
        O_CAFILE,
        O_METRICS,
        O_CONFIG
    };
    static const struct option opts[] = {
        { "broker", required_argument, 0, O_BROKER },
        { "data", required_argument, 0, O_DATA },
        { "lease", required_argument, 0, O_LEASE },
        { "lease-max", required_argument, 0, O_LEASE_MAX },
        { "warn-before", required_argument, 0, O_WARN },
        { "keepalive", required_argument, 0, O_KEEPALIVE },
        { "user", required_argument, 0, O_USER },
        { "password", required_argument, 0, O_PASSWORD },
        { "cafile", required_argument, 0, O_CAFILE },
        { "metrics-listen", required_argument, 0, O_METRICS },
        { "config", required_argument, 0, O_CONFIG },
        { "help", no_argument, 0, 'h' },
        { 0, 0, 0, 0 },
    };
    const char *flag[O_CONFIG + 1] = { 0 };
    ifm_conf *conf = ifm_conf_from_args(argc, argv, opts, flag, O_CONFIG + 1, O_CONFIG, "config", usage);
    if (!conf)
        return -1;
    char err[256] = "";
    *confp = conf;
    ifm_mqtt_opts mo = { 0 };
    const char *broker = ifm_conf_get(conf, "broker", flag[O_BROKER], "mqtt://127.0.0.1:1883");
    mo.port = 1883;
    if (ifm_mqtt_parse_url(broker, &mo, c->cfg.broker_host, sizeof c->cfg.broker_host)) {
        fprintf(stderr, "icefarm-ctl: bad broker address %s\n", broker);
        return -1;
    }
    c->cfg.broker_port = mo.port;
    c->cfg.broker_tls = mo.tls;
    c->cfg.data_dir = ifm_conf_get(conf, "data", flag[O_DATA], "./icefarm-ctl-data");
    c->cfg.user = ifm_conf_get(conf, "user", flag[O_USER], NULL);
    c->cfg.password = ifm_conf_get(conf, "password", flag[O_PASSWORD], NULL);
    c->cfg.cafile = ifm_conf_get(conf, "cafile", flag[O_CAFILE], NULL);
    c->cfg.metrics_listen = ifm_conf_get(conf, "metrics-listen", flag[O_METRICS], NULL);
    long lease, lease_max, warn, ka;
    if (ifm_conf_get_long(conf, "lease", flag[O_LEASE], 3600, 1, 365L * 86400, &lease, err, sizeof err) ||
        ifm_conf_get_long(conf, "lease-max", flag[O_LEASE_MAX], 86400, 1, 365L * 86400, &lease_max, err, sizeof err) ||
        ifm_conf_get_long(conf, "warn-before", flag[O_WARN], 1200, 0, 365L * 86400, &warn, err, sizeof err) ||
        ifm_conf_get_long(conf, "keepalive", flag[O_KEEPALIVE], 5, 5, 3600, &ka, err, sizeof err)) {
        fprintf(stderr, "icefarm-ctl: %s\n", err);
        return -1;
    }
    c->cfg.lease_default_s = (uint64_t)lease;
    c->cfg.lease_max_s = (uint64_t)(lease_max < lease ? lease : lease_max);
    c->cfg.warn_before_s = (uint64_t)warn;
    c->cfg.keepalive = (int)ka;
    return 0;
}

int main(int argc, char **argv)
{
    ctl c;
    memset(&c, 0, sizeof c);
    ifm_conf *conf = NULL;
    int rc = 1;
    if (configure(&c, argc, argv, &conf))
        goto out;
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
    if (ctl_metrics_init(&c) != 0 || ctl_metrics_serve(&c, c.cfg.metrics_listen) != 0)
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
    ifm_mqtt_subscribe(c.mqtt, IFM_TOPIC_WORKER_STATE_ALL, 1, ctl_on_worker_state, &c);
    ifm_mqtt_subscribe(c.mqtt, IFM_TOPIC_BOARD_STATE_ALL, 1, ctl_on_board_state, &c);
    ifm_mqtt_subscribe(c.mqtt, IFM_TOPIC_CTL_REQ_ALL, 1, ctl_on_request, &c);
    int sigs[] = { SIGINT, SIGTERM };
    ifm_loop_signals(c.loop, sigs, 2, on_signal, &c);
    signal(SIGPIPE, SIG_IGN);
    IFM_INFO("icefarm-ctl starting: broker %s:%d, data %s, lease %llus (max %llus), warn %llus before",
             c.cfg.broker_host, c.cfg.broker_port, c.cfg.data_dir, (unsigned long long)c.cfg.lease_default_s,
             (unsigned long long)c.cfg.lease_max_s, (unsigned long long)c.cfg.warn_before_s);
    ifm_mqtt_start(c.mqtt);
    ifm_loop_run(c.loop);
    if (ifm_mqtt_connected(c.mqtt))
        ctl_publish_state(&c, false);
    ifm_mqtt_disconnect(c.mqtt);
    rc = 0;
out:
    ctl_waiters_free(&c);
    if (c.loop)
        ifm_timer_cancel(c.loop, c.avail_timer);
    ifm_mqtt_free(c.mqtt);
    ctl_metrics_free(&c);
    for (size_t i = 0; i < c.nboards; i++)
        free(c.boards[i]);
    free(c.boards);
    free(c.workers);
    ctl_store_close(c.store);
    ifm_loop_free(c.loop);
    ifm_conf_free(conf);
    return rc;
}
