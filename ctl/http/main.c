/* icefarm-http: a foreground daemon (systemd- and docker-friendly). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "icefarm/conf.h"
#include "icefarm/log.h"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: icefarm-http [OPTIONS]\n"
            "The HTTP shim: the documented /reserve API, an event stream and a status page,\n"
            "translated to MQTT requests to icefarm-ctl.\n\n"
            "  --broker URL        MQTT broker (mqtt://HOST:PORT)      [ICEFARM_BROKER, mqtt://127.0.0.1:1883]\n"
            "  --listen HOST:PORT  HTTP address (:PORT = all interfaces) [ICEFARM_LISTEN, 127.0.0.1:8080]\n"
            "  --timeout-ms MS     how long to wait for control          [ICEFARM_TIMEOUT_MS, 5000]\n"
            "  --keepalive SECONDS MQTT keep-alive                       [ICEFARM_KEEPALIVE, 5]\n"
            "  --user NAME --password PW --cafile FILE   broker credentials and TLS CA\n"
            "  --auth MODE         none: callers act under the \"name\" they give; broker: callers\n"
            "                      log in (Basic or Bearer), checked against the broker\n"
            "                                              [ICEFARM_AUTH, broker with --user, else none]\n"
            "  --token-ttl SECONDS how long a token from POST /token is valid [ICEFARM_TOKEN_TTL, 3600]\n"
            "  --auth-cache SECONDS how long a checked password is trusted  [ICEFARM_AUTH_CACHE, 60]\n"
            "  --config FILE       `name = value` file read after flags and environment\n"
            "  -h, --help          this help\n");
}

typedef struct {
    const char *listen, *user, *password, *cafile;
    long keepalive;
} http_cfg;

static void on_signal(ifm_loop *loop, int signo, void *arg)
{
    IFM_INFO("signal %d: shutting down", signo);
    ifm_loop_stop(loop);
}

static int configure(http_srv *s, http_cfg *cfg, int argc, char **argv, ifm_conf **confp)
{
    enum {
        O_BROKER = 1,
        O_LISTEN,
        O_TIMEOUT,
        O_KEEPALIVE,
        O_USER,
        O_PASSWORD,
        O_CAFILE,
        O_AUTH,
        O_TOKEN_TTL,
        O_AUTH_CACHE,
        O_CONFIG
    };
    static const struct option opts[] = {
        { "broker", required_argument, 0, O_BROKER },
        { "listen", required_argument, 0, O_LISTEN },
        { "timeout-ms", required_argument, 0, O_TIMEOUT },
        { "keepalive", required_argument, 0, O_KEEPALIVE },
        { "user", required_argument, 0, O_USER },
        { "password", required_argument, 0, O_PASSWORD },
        { "cafile", required_argument, 0, O_CAFILE },
        { "auth", required_argument, 0, O_AUTH },
        { "token-ttl", required_argument, 0, O_TOKEN_TTL },
        { "auth-cache", required_argument, 0, O_AUTH_CACHE },
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
    mo.port = 1883;
    const char *broker = ifm_conf_get(conf, "broker", flag[O_BROKER], "mqtt://127.0.0.1:1883");
    if (ifm_mqtt_parse_url(broker, &mo, s->broker_host, sizeof s->broker_host)) {
        fprintf(stderr, "icefarm-http: bad broker address %s\n", broker);
        return -1;
    }
    s->broker_port = mo.port;
    s->broker_tls = mo.tls;
    cfg->listen = ifm_conf_get(conf, "listen", flag[O_LISTEN], "127.0.0.1:8080");
    cfg->user = ifm_conf_get(conf, "user", flag[O_USER], NULL);
    cfg->password = ifm_conf_get(conf, "password", flag[O_PASSWORD], NULL);
    cfg->cafile = ifm_conf_get(conf, "cafile", flag[O_CAFILE], NULL);
    long timeout, ttl, cache;
    if (ifm_conf_get_long(conf, "timeout-ms", flag[O_TIMEOUT], 5000, 1, 3600L * 1000, &timeout, err, sizeof err) ||
        ifm_conf_get_long(conf, "keepalive", flag[O_KEEPALIVE], 5, 5, 3600, &cfg->keepalive, err, sizeof err) ||
        ifm_conf_get_long(conf, "token-ttl", flag[O_TOKEN_TTL], 3600, 10, 30L * 86400, &ttl, err, sizeof err) ||
        ifm_conf_get_long(conf, "auth-cache", flag[O_AUTH_CACHE], 60, 0, 3600, &cache, err, sizeof err)) {
        fprintf(stderr, "icefarm-http: %s\n", err);
        return -1;
    }
    s->timeout_ms = (uint64_t)timeout;
    s->token_ttl_ms = (uint64_t)ttl * 1000;
    s->auth_cache_ms = (uint64_t)cache * 1000;
    /* Without a broker login of its own the shim is on an anonymous broker,
     * which cannot check anybody's password: the demo's "name" rules there. */
    const char *auth = ifm_conf_get(conf, "auth", flag[O_AUTH], cfg->user ? "broker" : "none");
    if (strcmp(auth, "none") == 0) {
        s->auth_mode = AUTH_NONE;
    } else if (strcmp(auth, "broker") == 0) {
        s->auth_mode = AUTH_BROKER;
    } else {
        fprintf(stderr, "icefarm-http: --auth must be none or broker, not \"%s\"\n", auth);
        return -1;
    }
    s->cafile = cfg->cafile;
    s->keepalive = (int)cfg->keepalive;
    return 0;
}

int main(int argc, char **argv)
{
    http_srv s;
    memset(&s, 0, sizeof s);
    s.epfd = -1;
    http_cfg cfg = { 0 };
    ifm_conf *conf = NULL;
    int rc = 1;
    if (configure(&s, &cfg, argc, argv, &conf))
        goto out;
    signal(SIGPIPE, SIG_IGN);
    s.loop = ifm_loop_new();
    if (!s.loop)
        goto out;
    /* Replies come to icefarm/client/<name>/reply; in a secured farm only the
     * authenticated user may read its own client topics, so name = user there. */
    ifm_mqtt_opts mo = {
        .host = s.broker_host,
        .port = s.broker_port,
        .tls = s.broker_tls,
        .client_id = NULL,
        .name = cfg.user ? cfg.user : "icefarm-http",
        .username = cfg.user,
        .password = cfg.password,
        .cafile = cfg.cafile,
        .keepalive = (int)cfg.keepalive,
    };
    if (http_metrics_init(&s)) {
        IFM_ERROR("cannot set up the metrics registry");
        goto out;
    }
    s.mqtt = ifm_mqtt_new(s.loop, &mo, http_metrics_mqtt, &s);
    if (!s.mqtt) {
        IFM_ERROR("cannot set up the MQTT client");
        goto out;
    }
    if (events_init(&s)) {
        IFM_ERROR("cannot subscribe to the lease topic");
        goto out;
    }
    if (s.auth_mode == AUTH_BROKER && auth_init(&s)) {
        IFM_ERROR("cannot set up authentication");
        goto out;
    }
    char err[256] = "";
    if (http_server_start(&s, cfg.listen, err, sizeof err)) {
        IFM_ERROR("%s", err);
        goto out;
    }
    int sigs[] = { SIGINT, SIGTERM };
    ifm_loop_signals(s.loop, sigs, 2, on_signal, &s);
    IFM_INFO("icefarm-http listening on %s: broker %s:%d, control timeout %llu ms, auth %s", s.listen_url,
             s.broker_host, s.broker_port, (unsigned long long)s.timeout_ms,
             s.auth_mode == AUTH_BROKER ? "broker (Basic or Bearer, checked against the broker)"
                                        : "none (callers act under any name they give)");
    if (s.auth_mode == AUTH_NONE && cfg.user)
        IFM_WARN("--auth none with a gateway login: anyone who reaches %s can act as any client", s.listen_url);
    if (s.auth_mode == AUTH_BROKER && strncmp(s.listen_url, "http://127.", 11) != 0 &&
        strncmp(s.listen_url, "http://[::1]", 12) != 0)
        IFM_WARN("--auth broker on %s: passwords and tokens cross the network in clear text unless a TLS proxy "
                 "fronts it",
                 s.listen_url);
    ifm_mqtt_start(s.mqtt);
    ifm_loop_run(s.loop);
    rc = auth_failed(&s) ? 1 : 0;
out:
    http_server_stop(&s);
    auth_free(&s);
    if (s.mqtt) {
        ifm_mqtt_disconnect(s.mqtt);
        ifm_mqtt_free(s.mqtt);
        s.mqtt = NULL;
    }
    /* Requests still in flight when MQTT went away: their callbacks never run. */
    while (s.calls) {
        http_call *c = s.calls;
        s.calls = c->next;
        free(c);
    }
    events_free(&s);
    http_metrics_free(&s);
    ifm_loop_free(s.loop);
    ifm_conf_free(conf);
    return rc;
}
