/* icefarm-wrk: a foreground daemon that owns the boards of one host. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bridge.h"
#include "icefarm/opts.h"
#include "icefarm/log.h"
#include "icefarm/tcp.h"
#include "metrics.h"
#include "stats.h"
#include "sim.h"
#include "usb_transport.h"
#include "usbip.h"
#include "usbip_tunnel.h"
#include "worker.h"

#define MS(n, d, lo, hi, h)                                                                                            \
    {                                                                                                                  \
        .name = n, .type = IFM_OPT_INT, .arg = "MS", .def = d, .help = h, .min = lo, .max = hi                         \
    }

/* icefarm-wrk's own options; the broker, metrics, config and log-level ones are
 * the shared ones of icefarm/opts.h. */
static const ifm_opt wrk_opts[] = {
    { .name = "name",
      .type = IFM_OPT_TEXT,
      .arg = "ID",
      .help = "worker name, unique in the farm (default: the host name)",
      .env = "ICEFARM_WORKER_NAME" },
    { .name = "kinds",
      .type = IFM_OPT_TEXT,
      .arg = "LIST",
      .def = "pulsecount,variance",
      .help = "kinds offered: pulsecount, variance, usbip" },
    { .name = "default", .type = IFM_OPT_TEXT, .arg = "UF2", .help = "default firmware image" },
    { .name = "pulse-count", .type = IFM_OPT_TEXT, .arg = "UF2", .help = "pulse-count firmware image" },
    { .name = "variance", .type = IFM_OPT_TEXT, .arg = "UF2", .help = "variance firmware image" },
    { .name = "sim",
      .type = IFM_OPT_INT,
      .arg = "N",
      .help = "N simulated boards instead of USB",
      .min = 0,
      .max = 100000 },
    { .name = "sim-seed",
      .type = IFM_OPT_TEXT,
      .arg = "S",
      .help = "serials of simulated boards derive from S (default: the name)" },
    MS("sim-window-ms", "1000", 1, 600000, "simulated pulse-count window"),
    MS("sim-flash-ms", "300", 0, 600000, "simulated flashing time"),
    MS("flash-timeout-ms", "30000", 100, 3600000, "longest flash of a board"),
    MS("test-timeout-ms", "5000", 100, 600000, "longest self-test after a flash"),
    MS("ready-timeout-ms", "10000", 100, 600000, "longest wait for a flashed board to come back"),
    MS("eval-timeout-ms", "15000", 100, 3600000, "longest evaluation of one bitstream"),
    { .name = "usbip-host",
      .type = IFM_OPT_TEXT,
      .arg = "HOST",
      .help = "the host name USB/IP clients are told to attach to (default: the --usbip-listen host, else this "
              "host's name)" },
    { .name = "attempts",
      .type = IFM_OPT_INT,
      .arg = "N",
      .def = "3",
      .help = "tries per bitstream before it fails",
      .min = 1,
      .max = 100 },
    MS("heartbeat-ms", "1000", 0, 600000,
       "heartbeat to control: a hung worker's boards stop being granted after two "
       "missed beats (0: none)"),
    { 0 },
};

static const ifm_opts_spec wrk_spec = {
    .prog = "icefarm-wrk",
    .about = "Owns the pico2-ice boards of this host and serves them over MQTT.",
    .notes = "Without --sim the worker drives real boards over libusb and needs the firmware images.",
    .shared = IFM_OPTS_MQTT | IFM_OPTS_METRICS | IFM_OPTS_USBIP,
    .own = wrk_opts,
};

typedef struct {
    wrk_ctx w;
    ifm_opts *opts;
    ifm_mqtt_opts mo;
    char host[256];
    sim_options sim;
    long nsim;
    const char *sim_seed;
    const char *metrics_listen;
    wrk_metrics metrics;
    wrk_stats stats;
    wrk_bridge bridge;
    bool usbip;
    char usbip_lhost[256], usbip_lport[16];
} wrk_main;

/* The bridge's connection callback, with the metrics' count of reconnects. */
static void on_conn(ifm_mqtt *mq, bool connected, void *arg)
{
    wrk_main *m = arg;
    wrk_metrics_mqtt(&m->metrics, connected);
    wrk_bridge_on_conn(mq, connected, &m->bridge);
    wrk_stats_mqtt(&m->stats, connected);
}

static void on_signal(ifm_loop *loop, int signo, void *arg)
{
    IFM_INFO("signal %d: shutting down", signo);
    ifm_loop_stop(loop);
}

/* This process's instance id: random, never 0 (PROTOCOL.md section 14.1). */
static uint64_t new_instance(void)
{
    uint64_t v = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(&v, 1, sizeof v, f) != sizeof v)
        v = ifm_wall_ms() ^ ((uint64_t)getpid() << 40);
    if (f)
        fclose(f);
    v &= (1ull << 53) - 1; /* exact in a JSON number too */
    return v ? v : 1;
}

static int load_image(wrk_main *m, int kind, const char *path)
{
    wrk_image *img = &m->w.fw[kind];
    if (!path) {
        if (!m->w.sim)
            return kind == FW_DEFAULT || m->w.offers[kind] ? -1 : 0;
        static const sim_fw_kind sk[FW_COUNT] = { SIM_FW_DEFAULT, SIM_FW_PULSECOUNT, SIM_FW_VARIANCE };
        img->data = sim_fw_build_uf2(sk[kind], &img->len);
        return img->data ? 0 : -1;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        IFM_ERROR("cannot open firmware image %s: %s", path, strerror(errno));
        return -1;
    }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    img->data = len > 0 ? malloc((size_t)len) : NULL;
    img->len = img->data ? fread(img->data, 1, (size_t)len, f) : 0;
    fclose(f);
    snprintf(img->path, sizeof img->path, "%s", path);
    if (!img->data || img->len != (size_t)len) {
        IFM_ERROR("cannot read firmware image %s", path);
        return -1;
    }
    return 0;
}

static int configure(wrk_main *m)
{
    const ifm_opts *o = m->opts;
    ifm_opts_mqtt(o, &m->mo, m->host, sizeof m->host);
    char hostname[64] = "worker";
    gethostname(hostname, sizeof hostname - 1);
    const char *name = ifm_opts_isset(o, "name") ? ifm_opts_get(o, "name") : hostname;
    const char *bad = ifm_name_problem(name, IFM_NAME_MAX);
    if (bad) {
        fprintf(stderr, "icefarm-wrk: invalid worker name \"%s\": it %s\n", name, bad);
        return -1;
    }
    snprintf(m->w.id, sizeof m->w.id, "%s", name);
    const char *kinds = ifm_opts_get(o, "kinds");
    char kbuf[256];
    snprintf(kbuf, sizeof kbuf, "%s", kinds);
    for (char *save, *t = strtok_r(kbuf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (strcmp(t, "usbip") == 0) {
            m->usbip = true;
            continue;
        }
        int k = wrk_kind_parse(t);
        if (k < 0) {
            fprintf(stderr, "icefarm-wrk: unknown kind \"%s\" (pulsecount, variance, usbip)\n", t);
            return -1;
        }
        m->w.offers[k] = true;
    }
    /* kind usbip: on with --usbip-listen (or "usbip" in --kinds: every address, port 3240) */
    const char *ul = ifm_opts_get(o, "usbip-listen");
    if (ul || m->usbip) {
        m->usbip = true;
        snprintf(m->usbip_lport, sizeof m->usbip_lport, "3240");
        if (ul && strchr(ul, ':')) {
            if (ifm_tcp_split_hostport(ul, m->usbip_lhost, sizeof m->usbip_lhost, m->usbip_lport,
                                       sizeof m->usbip_lport)) {
                fprintf(stderr, "icefarm-wrk: bad --usbip-listen \"%s\" (HOST:PORT, :PORT or HOST)\n", ul);
                return -1;
            }
            if (!m->usbip_lport[0])
                snprintf(m->usbip_lport, sizeof m->usbip_lport, "3240");
        } else if (ul) {
            snprintf(m->usbip_lhost, sizeof m->usbip_lhost, "%s", ul);
        }
        const char *adv = m->usbip_lhost[0] && strcmp(m->usbip_lhost, "0.0.0.0") && strcmp(m->usbip_lhost, "::") &&
                strcmp(m->usbip_lhost, "*")
            ? m->usbip_lhost
            : hostname;
        snprintf(m->w.usbip_host, sizeof m->w.usbip_host, "%s",
                 ifm_opts_isset(o, "usbip-host") ? ifm_opts_get(o, "usbip-host") : adv);
    }
    wrk_timeouts *to = &m->w.to;
    to->flash_ms = (uint64_t)ifm_opts_long(o, "flash-timeout-ms");
    to->test_ms = (uint64_t)ifm_opts_long(o, "test-timeout-ms");
    to->ready_ms = (uint64_t)ifm_opts_long(o, "ready-timeout-ms");
    to->eval_ms = (uint64_t)ifm_opts_long(o, "eval-timeout-ms");
    to->retry_min_ms = 5000;
    to->retry_max_ms = 300000;
    to->max_attempts = (int)ifm_opts_long(o, "attempts");
    m->nsim = ifm_opts_long(o, "sim");
    m->w.sim = ifm_opts_isset(o, "sim");
    sim_options_default(&m->sim);
    m->sim.boards = (unsigned)m->nsim;
    m->sim.count_window_ms = (uint32_t)ifm_opts_long(o, "sim-window-ms");
    m->sim.flash_ms = (uint32_t)ifm_opts_long(o, "sim-flash-ms");
    m->sim_seed = ifm_opts_isset(o, "sim-seed") ? ifm_opts_get(o, "sim-seed") : m->w.id;
    m->sim.seed = m->sim_seed;
    m->metrics_listen = ifm_opts_get(o, "metrics-listen");
    const char *paths[FW_COUNT] = {
        ifm_opts_get(o, "default"),
        ifm_opts_get(o, "pulse-count"),
        ifm_opts_get(o, "variance"),
    };
    static const char *const env[FW_COUNT] = { "ICEFARM_DEFAULT", "ICEFARM_PULSE_COUNT", "ICEFARM_VARIANCE" };
    for (int k = 0; k < FW_COUNT; k++) {
        if (k != FW_DEFAULT && !m->w.offers[k])
            continue;
        if (load_image(m, k, paths[k])) {
            fprintf(stderr, "icefarm-wrk: no usable %s firmware image: set %s (or --%s), or run with --sim N\n",
                    wrk_kind_name(k), env[k],
                    k == FW_DEFAULT          ? "default"
                        : k == FW_PULSECOUNT ? "pulse-count"
                                             : "variance");
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    wrk_main m;
    memset(&m, 0, sizeof m);
    wrk_ctx *w = &m.w;
    int rc = 1;
    m.opts = ifm_opts_parse(&wrk_spec, argc, argv, &rc);
    if (!m.opts)
        return rc;
    rc = 1;
    if (configure(&m))
        goto out;
    w->loop = ifm_loop_new();
    w->epoch = ifm_wall_ms();
    w->instance = new_instance();
    ifm_mqtt_opts mo = m.mo;
    char client_id[IFM_NAME_MAX + 8];
    snprintf(client_id, sizeof client_id, "wrk-%s", w->id);
    mo.client_id = client_id;
    w->mqtt = ifm_mqtt_new(w->loop, &mo, on_conn, &m);
    if (!w->mqtt || wrk_bridge_start(&m.bridge, w, (uint64_t)ifm_opts_long(m.opts, "heartbeat-ms")) ||
        wrk_metrics_start(&m.metrics, w, m.metrics_listen) || wrk_stats_start(&m.stats, w))
        goto out;
    if (w->sim) {
        w->t = sim_transport_new(w->loop, &m.sim);
    } else {
        usb_options uo;
        usb_options_default(&uo);
        w->t = usb_transport_new(w->loop, &uo);
    }
    if (!w->t) {
        IFM_ERROR(w->sim ? "cannot create the simulated boards" : "cannot initialise libusb");
        goto out;
    }
    if (m.usbip) {
        char why[256];
        usbip_server_opts uo = { .listen_host = m.usbip_lhost, .listen_port = m.usbip_lport };
        w->usbip = usbip_server_new(w->loop, w->t, &uo, why, sizeof why);
        if (!w->usbip) {
            IFM_ERROR("cannot serve USB/IP on %s:%s: %s", m.usbip_lhost, m.usbip_lport, why);
            goto out;
        }
        if (usbip_server_metrics(w->usbip, m.metrics.reg))
            IFM_WARN("usbip: its metrics could not be registered; USB/IP is not counted");
        w->usbip_port = usbip_server_port(w->usbip);
        IFM_INFO("usbip: exports served on %s:%d, advertised as %s:%d", m.usbip_lhost[0] ? m.usbip_lhost : "*",
                 w->usbip_port, w->usbip_host, w->usbip_port);
    }
    int sigs[] = { SIGINT, SIGTERM };
    if (ifm_loop_signals(w->loop, sigs, 2, on_signal, w) || signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
        IFM_ERROR("cannot set up signal handling: %s", strerror(errno));
        goto out;
    }
    IFM_INFO("icefarm-wrk %s starting: broker %s:%d, backend %s%s, epoch %llu, instance %llu", w->id, m.host, m.mo.port,
             w->t->ops->name, w->sim ? " (simulated boards)" : " (USB: 2e8a:000f/0009, 1209:b1c0/b1c1)",
             (unsigned long long)w->epoch, (unsigned long long)w->instance);
    ifm_mqtt_start(w->mqtt);
    if (wrk_start(w)) {
        IFM_ERROR("cannot start the %s backend", w->t->ops->name);
        goto out;
    }
    ifm_loop_run(w->loop);
    wrk_stop(w);
    wrk_stats_flush(&m.stats);
    ifm_mqtt_disconnect(w->mqtt);
    rc = 0;
out:
    usbip_tunnel_free(w->usbip_tunnel);
    if (w->usbip) {
        usbip_server_free(w->usbip); /* cancels its URBs: let them come back */
        for (int i = 0; i < 20 && w->loop; i++)
            ifm_loop_once(w->loop, 0);
    }
    if (w->t)
        w->t->ops->free(w->t);
    wrk_stats_stop(&m.stats);
    wrk_metrics_stop(&m.metrics);
    wrk_bridge_stop(&m.bridge);
    wrk_boards_free(w);
    ifm_mqtt_free(w->mqtt);
    for (int k = 0; k < FW_COUNT; k++)
        free(w->fw[k].data);
    ifm_loop_free(w->loop);
    ifm_opts_free(m.opts);
    return rc;
}
