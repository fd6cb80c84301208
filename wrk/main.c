/* icefarm-wrk: a foreground daemon that owns the boards of one host. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bridge.h"
#include "icefarm/conf.h"
#include "icefarm/log.h"
#include "icefarm/tcp.h"
#include "metrics.h"
#include "sim.h"
#include "usb_transport.h"
#include "usbip.h"
#include "worker.h"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: icefarm-wrk [OPTIONS]\n"
            "Owns the pico2-ice boards of this host and serves them over MQTT.\n\n"
            "  --broker URL       MQTT broker                         [ICEFARM_BROKER, mqtt://127.0.0.1:1883]\n"
            "  --name ID          worker name, unique in the farm     [ICEFARM_WORKER_NAME, hostname]\n"
            "  --kinds LIST       kinds offered: pulsecount, variance, usbip [ICEFARM_KINDS, pulsecount,variance]\n"
            "  --default UF2      default firmware image              [ICEFARM_DEFAULT]\n"
            "  --pulse-count UF2  pulse-count firmware image          [ICEFARM_PULSE_COUNT]\n"
            "  --variance UF2     variance firmware image             [ICEFARM_VARIANCE]\n"
            "  --sim N            N simulated boards instead of USB   [ICEFARM_SIM]\n"
            "  --sim-seed S       serials of simulated boards derive from S (default: the name)\n"
            "  --sim-window-ms MS simulated pulse-count window        [1000]\n"
            "  --sim-flash-ms MS  simulated flashing time             [300]\n"
            "  --flash-timeout-ms, --test-timeout-ms, --ready-timeout-ms, --eval-timeout-ms MS\n"
            "                     per-state timeouts                  [30000, 5000, 10000, 15000]\n"
            "  --attempts N       tries per bitstream before it fails [3]\n"
            "  --keepalive S      MQTT keep-alive; death is noticed within 1.5x [5]\n"
            "  --metrics-listen HOST:PORT  serve Prometheus /metrics there (no login: loopback or a\n"
            "                      private network)                       [ICEFARM_METRICS_LISTEN, off]\n"
            "  --usbip-listen [HOST][:PORT]  serve kind usbip's USB/IP exports there (port 3240 by default;\n"
            "                     the busid token travels in clear: trusted networks only, else the\n"
            "                     broker tunnel)                          [ICEFARM_USBIP_LISTEN, off]\n"
            "  --usbip-host HOST  the host name clients are told to attach to [ICEFARM_USBIP_HOST, this host]\n"
            "  --user U --password P --cafile FILE   broker credentials and TLS CA\n"
            "  --config FILE      `name = value` file read after flags and environment\n"
            "  -h, --help\n"
            "Without --sim the worker drives real boards over libusb and needs the firmware images.\n");
}

typedef struct {
    wrk_ctx w;
    ifm_conf *conf;
    char host[256];
    int port;
    bool tls;
    long keepalive;
    const char *user, *password, *cafile;
    sim_options sim;
    long nsim;
    const char *sim_seed;
    const char *metrics_listen;
    wrk_metrics metrics;
    bool usbip;
    char usbip_lhost[256], usbip_lport[16];
} wrk_main;

/* The bridge's connection callback, with the metrics' count of reconnects. */
static void on_conn(ifm_mqtt *mq, bool connected, void *arg)
{
    wrk_main *m = arg;
    wrk_metrics_mqtt(&m->metrics, connected);
    wrk_bridge_on_conn(mq, connected, &m->w);
}

static void on_signal(ifm_loop *loop, int signo, void *arg)
{
    IFM_INFO("signal %d: shutting down", signo);
    ifm_loop_stop(loop);
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

static int configure(wrk_main *m, int argc, char **argv)
{
    enum {
        O_BROKER = 1,
        O_NAME,
        O_KINDS,
        O_DEFAULT,
        O_PULSE,
        O_VARIANCE,
        O_SIM,
        O_SEED,
        O_WINDOW,
        O_SIMFLASH,
        O_FLASH_TO,
        O_TEST_TO,
        O_READY_TO,
        O_EVAL_TO,
        O_ATTEMPTS,
        O_KEEPALIVE,
        O_USER,
        O_PASSWORD,
        O_CAFILE,
        O_METRICS,
        O_USBIP_LISTEN,
        O_USBIP_HOST,
        O_CONFIG,
        O_N
    };
    static const struct option opts[] = {
        { "broker", 1, 0, O_BROKER },
        { "name", 1, 0, O_NAME },
        { "kinds", 1, 0, O_KINDS },
        { "default", 1, 0, O_DEFAULT },
        { "pulse-count", 1, 0, O_PULSE },
        { "variance", 1, 0, O_VARIANCE },
        { "sim", 1, 0, O_SIM },
        { "sim-seed", 1, 0, O_SEED },
        { "sim-window-ms", 1, 0, O_WINDOW },
        { "sim-flash-ms", 1, 0, O_SIMFLASH },
        { "flash-timeout-ms", 1, 0, O_FLASH_TO },
        { "test-timeout-ms", 1, 0, O_TEST_TO },
        { "ready-timeout-ms", 1, 0, O_READY_TO },
        { "eval-timeout-ms", 1, 0, O_EVAL_TO },
        { "attempts", 1, 0, O_ATTEMPTS },
        { "keepalive", 1, 0, O_KEEPALIVE },
        { "user", 1, 0, O_USER },
        { "password", 1, 0, O_PASSWORD },
        { "cafile", 1, 0, O_CAFILE },
        { "metrics-listen", 1, 0, O_METRICS },
        { "usbip-listen", 1, 0, O_USBIP_LISTEN },
        { "usbip-host", 1, 0, O_USBIP_HOST },
        { "config", 1, 0, O_CONFIG },
        { "help", 0, 0, 'h' },
        { 0, 0, 0, 0 },
    };
    const char *flag[O_N] = { 0 };
    m->conf = ifm_conf_from_args(argc, argv, opts, flag, O_N, O_CONFIG, "worker-config", usage);
    if (!m->conf)
        return -1;
    char err[256] = "";
    ifm_conf *c = m->conf;
    ifm_mqtt_opts mo = { .port = 1883 };
    const char *broker = ifm_conf_get(c, "broker", flag[O_BROKER], "mqtt://127.0.0.1:1883");
    if (ifm_mqtt_parse_url(broker, &mo, m->host, sizeof m->host)) {
        fprintf(stderr, "icefarm-wrk: bad broker address %s\n", broker);
        return -1;
    }
    m->port = mo.port;
    m->tls = mo.tls;
    char hostname[64] = "worker";
    gethostname(hostname, sizeof hostname - 1);
    const char *name = ifm_conf_get(c, "worker-name", flag[O_NAME], hostname);
    if (!ifm_name_valid(name, IFM_NAME_MAX)) {
        fprintf(stderr, "icefarm-wrk: invalid worker name \"%s\"\n", name);
        return -1;
    }
    snprintf(m->w.id, sizeof m->w.id, "%s", name);
    const char *kinds = ifm_conf_get(c, "kinds", flag[O_KINDS], "pulsecount,variance");
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
    const char *ul = ifm_conf_get(c, "usbip-listen", flag[O_USBIP_LISTEN], NULL);
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
        snprintf(m->w.usbip_host, sizeof m->w.usbip_host, "%s", ifm_conf_get(c, "usbip-host", flag[O_USBIP_HOST], adv));
    }
    long v;
    wrk_timeouts *to = &m->w.to;
    struct {
        const char *name;
        int flag;
        long def, min, max;
        uint64_t *out;
    } ms[] = {
        { "flash-timeout-ms", O_FLASH_TO, 30000, 100, 3600000, &to->flash_ms },
        { "test-timeout-ms", O_TEST_TO, 5000, 100, 600000, &to->test_ms },
        { "ready-timeout-ms", O_READY_TO, 10000, 100, 600000, &to->ready_ms },
        { "eval-timeout-ms", O_EVAL_TO, 15000, 100, 3600000, &to->eval_ms },
    };
    for (size_t i = 0; i < sizeof ms / sizeof *ms; i++) {
        if (ifm_conf_get_long(c, ms[i].name, flag[ms[i].flag], ms[i].def, ms[i].min, ms[i].max, &v, err, sizeof err))
            goto bad;
        *ms[i].out = (uint64_t)v;
    }
    to->retry_min_ms = 5000;
    to->retry_max_ms = 300000;
    if (ifm_conf_get_long(c, "attempts", flag[O_ATTEMPTS], 3, 1, 100, &v, err, sizeof err))
        goto bad;
    to->max_attempts = (int)v;
    if (ifm_conf_get_long(c, "keepalive", flag[O_KEEPALIVE], 5, 5, 3600, &m->keepalive, err, sizeof err) ||
        ifm_conf_get_long(c, "sim", flag[O_SIM], 0, 0, 100000, &m->nsim, err, sizeof err))
        goto bad;
    m->w.sim = m->nsim > 0 || (flag[O_SIM] && strcmp(flag[O_SIM], "0") == 0);
    sim_options_default(&m->sim);
    m->sim.boards = (unsigned)m->nsim;
    if (ifm_conf_get_long(c, "sim-window-ms", flag[O_WINDOW], m->sim.count_window_ms, 1, 600000, &v, err, sizeof err))
        goto bad;
    m->sim.count_window_ms = (uint32_t)v;
    if (ifm_conf_get_long(c, "sim-flash-ms", flag[O_SIMFLASH], m->sim.flash_ms, 0, 600000, &v, err, sizeof err))
        goto bad;
    m->sim.flash_ms = (uint32_t)v;
    m->sim_seed = ifm_conf_get(c, "sim-seed", flag[O_SEED], m->w.id);
    m->sim.seed = m->sim_seed;
    m->user = ifm_conf_get(c, "user", flag[O_USER], NULL);
    m->password = ifm_conf_get(c, "password", flag[O_PASSWORD], NULL);
    m->cafile = ifm_conf_get(c, "cafile", flag[O_CAFILE], NULL);
    m->metrics_listen = ifm_conf_get(c, "metrics-listen", flag[O_METRICS], NULL);
    const char *paths[FW_COUNT] = {
        ifm_conf_get(c, "default", flag[O_DEFAULT], NULL),
        ifm_conf_get(c, "pulse-count", flag[O_PULSE], NULL),
        ifm_conf_get(c, "variance", flag[O_VARIANCE], NULL),
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
bad:
    fprintf(stderr, "icefarm-wrk: %s\n", err);
    return -1;
}

int main(int argc, char **argv)
{
    wrk_main m;
    memset(&m, 0, sizeof m);
    wrk_ctx *w = &m.w;
    int rc = 1;
    if (configure(&m, argc, argv))
        goto out;
    w->loop = ifm_loop_new();
    w->epoch = ifm_wall_ms();
    ifm_mqtt_opts mo = {
        .host = m.host,
        .port = m.port,
        .tls = m.tls,
        .client_id = NULL,
        .name = NULL,
        .username = m.user,
        .password = m.password,
        .cafile = m.cafile,
        .keepalive = (int)m.keepalive,
    };
    char client_id[IFM_NAME_MAX + 8];
    snprintf(client_id, sizeof client_id, "wrk-%s", w->id);
    mo.client_id = client_id;
    w->mqtt = ifm_mqtt_new(w->loop, &mo, on_conn, &m);
    if (!w->mqtt || wrk_bridge_start(w) || wrk_metrics_start(&m.metrics, w, m.metrics_listen))
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
        w->usbip_port = usbip_server_port(w->usbip);
        IFM_INFO("usbip: exports served on %s:%d, advertised as %s:%d", m.usbip_lhost[0] ? m.usbip_lhost : "*",
                 w->usbip_port, w->usbip_host, w->usbip_port);
    }
    int sigs[] = { SIGINT, SIGTERM };
    ifm_loop_signals(w->loop, sigs, 2, on_signal, w);
    signal(SIGPIPE, SIG_IGN);
    IFM_INFO("icefarm-wrk %s starting: broker %s:%d, backend %s%s, epoch %llu", w->id, m.host, m.port, w->t->ops->name,
             w->sim ? " (simulated boards)" : " (USB: 2e8a:000f/0009, 1209:b1c0/b1c1)", (unsigned long long)w->epoch);
    ifm_mqtt_start(w->mqtt);
    if (wrk_start(w)) {
        IFM_ERROR("cannot start the %s backend", w->t->ops->name);
        goto out;
    }
    ifm_loop_run(w->loop);
    wrk_stop(w);
    ifm_mqtt_disconnect(w->mqtt);
    rc = 0;
out:
    if (w->usbip) {
        usbip_server_free(w->usbip); /* cancels its URBs: let them come back */
        for (int i = 0; i < 20 && w->loop; i++)
            ifm_loop_once(w->loop, 0);
    }
    if (w->t)
        w->t->ops->free(w->t);
    wrk_metrics_stop(&m.metrics);
    wrk_boards_free(w);
    ifm_mqtt_free(w->mqtt);
    for (int k = 0; k < FW_COUNT; k++)
        free(w->fw[k].data);
    ifm_loop_free(w->loop);
    ifm_conf_free(m.conf);
    return rc;
}
