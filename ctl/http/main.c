/* icefarm-http: a foreground daemon (systemd- and docker-friendly). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "icefarm/opts.h"
#include "icefarm/log.h"

/* icefarm-http's own options; the broker, config and log-level ones are the
 * shared ones of icefarm/opts.h. */
static const ifm_opt http_opts[] = {
    { .name = "listen",
      .type = IFM_OPT_HOSTPORT,
      .arg = "HOST:PORT",
      .def = "127.0.0.1:8080",
      .help = "HTTP address (:PORT = all interfaces)" },
    { .name = "timeout-ms",
      .type = IFM_OPT_INT,
      .arg = "MS",
      .def = "5000",
      .help = "how long to wait for control",
      .min = 1,
      .max = 3600L * 1000 },
    { .name = "auth",
      .type = IFM_OPT_TEXT,
      .arg = "MODE",
      .help = "none: callers act under the \"name\" they give; broker: callers log in (Basic or Bearer), "
              "checked against the broker (default: broker with --user, else none)" },
    { .name = "token-ttl",
      .type = IFM_OPT_INT,
      .arg = "SECONDS",
      .def = "3600",
      .help = "how long a token from POST /token is valid",
      .min = 10,
      .max = 30L * 86400 },
    { .name = "auth-cache",
      .type = IFM_OPT_INT,
      .arg = "SECONDS",
      .def = "60",
      .help = "how long a checked password is trusted",
      .min = 0,
      .max = 3600 },
    { .name = "advertise",
      .type = IFM_OPT_HOSTPORT,
      .arg = "HOST:PORT",
      .help = "the address /reserve hands old socket.io clients for their worker socket (default: the "
              "request's Host header)" },
    { .name = "ping-interval-ms",
      .type = IFM_OPT_INT,
      .arg = "MS",
      .def = "25000",
      .help = "the socket.io face's PING period",
      .min = 100,
      .max = 600000 },
    { .name = "dashboard",
      .type = IFM_OPT_TEXT,
      .arg = "DIR",
      .help = "the dashboard's bundle, served at / (default: next to the program, then "
              "PREFIX/share/icefarm/dashboard)" },
    { .name = "ws-url",
      .type = IFM_OPT_TEXT,
      .arg = "URL",
      .help = "the broker's MQTT-over-WebSockets URL the dashboard connects to (ws://HOST:PORT or "
              "wss://HOST:PORT; default: the page asks)" },
    { 0 },
};

static const ifm_opts_spec http_spec = {
    .prog = "icefarm-http",
    .about = "The HTTP shim: the documented /reserve API, an event stream, the dashboard and a\n"
             "socket.io face for old client scripts, translated to MQTT requests to icefarm-ctl.",
    .shared = IFM_OPTS_MQTT,
    .own = http_opts,
};

typedef struct {
    const char *listen, *user, *password, *cafile;
    long keepalive;
} http_cfg;

static void on_signal(ifm_loop *loop, int signo, void *arg)
{
    IFM_INFO("signal %d: shutting down", signo);
    ifm_loop_stop(loop);
}

static int configure(http_srv *s, http_cfg *cfg, const ifm_opts *o)
{
    ifm_mqtt_opts mo = { 0 };
    ifm_opts_mqtt(o, &mo, s->broker_host, sizeof s->broker_host);
    s->broker_port = mo.port;
    s->broker_tls = mo.tls;
    cfg->listen = ifm_opts_get(o, "listen");
    cfg->user = mo.username;
    cfg->password = mo.password;
    cfg->cafile = mo.cafile;
    cfg->keepalive = mo.keepalive;
    long timeout = ifm_opts_long(o, "timeout-ms"), ttl = ifm_opts_long(o, "token-ttl"),
         cache = ifm_opts_long(o, "auth-cache");
    s->timeout_ms = (uint64_t)timeout;
    s->token_ttl_ms = (uint64_t)ttl * 1000;
    s->auth_cache_ms = (uint64_t)cache * 1000;
    s->ping_interval_ms = (unsigned)ifm_opts_long(o, "ping-interval-ms");
    s->ping_timeout_ms = 20000; /* python-socketio's default; the client gives up after interval + timeout */
    const char *adv = ifm_opts_isset(o, "advertise") ? ifm_opts_get(o, "advertise") : "";
    if (*adv && (strlen(adv) >= sizeof s->advertise || strpbrk(adv, "/@ \t?#") || adv[0] == ':')) {
        fprintf(stderr, "icefarm-http: --advertise wants HOST:PORT with a host, not \"%s\"\n", adv);
        return -1;
    }
    snprintf(s->advertise, sizeof s->advertise, "%s", adv);
    /* Without a broker login of its own the shim is on an anonymous broker,
     * which cannot check anybody's password: the demo's "name" rules there. */
    const char *auth = ifm_opts_isset(o, "auth") ? ifm_opts_get(o, "auth") : cfg->user ? "broker" : "none";
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
    s->ws_url = ifm_opts_isset(o, "ws-url") ? ifm_opts_get(o, "ws-url") : NULL;
    if (s->ws_url && strncmp(s->ws_url, "ws://", 5) != 0 && strncmp(s->ws_url, "wss://", 6) != 0) {
        fprintf(stderr, "icefarm-http: --ws-url must start with ws:// or wss://, not \"%s\"\n", s->ws_url);
        return -1;
    }
    page_init(s, ifm_opts_isset(o, "dashboard") ? ifm_opts_get(o, "dashboard") : NULL);
    return 0;
}

int main(int argc, char **argv)
{
    http_srv s;
    memset(&s, 0, sizeof s);
    s.epfd = -1;
    http_cfg cfg = { 0 };
    int rc = 1;
    ifm_opts *opts = ifm_opts_parse(&http_spec, argc, argv, &rc);
    if (!opts)
        return rc;
    rc = 1;
    if (configure(&s, &cfg, opts)) {
        ifm_opts_free(opts);
        return 2;
    }
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
        IFM_ERROR("cannot ignore SIGPIPE: %s", strerror(errno));
        goto out;
    }
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
        .presence = true, /* the waiting reserves it sends die with it (PROTOCOL.md 5.1) */
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
    if (sio_init(&s)) {
        IFM_ERROR("cannot set up the socket.io face");
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
    if (ifm_loop_signals(s.loop, sigs, 2, on_signal, &s)) {
        IFM_ERROR("cannot set up signal handling: %s", strerror(errno));
        goto out;
    }
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
    sio_free(&s);
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
    ifm_opts_free(opts);
    return rc;
}
