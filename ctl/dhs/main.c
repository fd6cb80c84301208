/* icefarm-dhs: a foreground daemon (systemd- and docker-friendly). See README.md. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhs.h"
#include "icefarm/opts.h"
#include "icefarm/log.h"

static const ifm_opt dhs_opts[] = {
    { .name = "name",
      .type = IFM_OPT_TEXT,
      .arg = "NAME",
      .def = "icefarm",
      .help = "the DHS name in DCSS's database.dat (<= 39 characters, no spaces)",
      /* not ICEFARM_NAME: that is icefarm-cli's client name, set in shells made for the CLI */
      .env = "ICEFARM_DHS_NAME" },
    { .name = "protocol",
      .type = IFM_OPT_INT,
      .arg = "1|2",
      .def = "2",
      .help = "the DCSS protocol level of that database entry",
      .min = 1,
      .max = 2,
      .env = "ICEFARM_DHS_PROTOCOL" },
    { .name = "fetch-dir",
      .type = IFM_OPT_TEXT,
      .arg = "DIR",
      .def = NULL,
      .help = "file: references are read from here only (unset: refused)" },
    { .name = "fetch-max-bytes",
      .type = IFM_OPT_INT,
      .arg = "N",
      .def = "16777216",
      .help = "the largest bitstream or UF2 image fetched",
      .min = 1,
      .max = 64L * 1024 * 1024 },
    { .name = "fetch-timeout-s",
      .type = IFM_OPT_INT,
      .arg = "SECONDS",
      .def = "30",
      .help = "time allowed for one fetch",
      .min = 1,
      .max = 3600 },
    { 0 },
};

static const ifm_opts_spec dhs_spec = {
    .prog = "icefarm-dhs",
    .about = "The farm as a DCSS hardware server (DHS): DCSS operations reserve boards, flash\n"
             "them and measure bitstreams, through the farm's broker like any client.",
    .notes = "--dcss defaults to 127.0.0.1:14242 (DCSS's hardware port). See ctl/dhs/README.md.",
    .shared = IFM_OPTS_MQTT | IFM_OPTS_DCSS | IFM_OPTS_METRICS,
    .own = dhs_opts,
};

static void on_signal(ifm_loop *loop, int signo, void *arg)
{
    IFM_INFO("signal %d: shutting down", signo);
    ifm_loop_stop(loop);
}

static int configure(dhs_cfg *c, const ifm_opts *o)
{
    const char *dcss = ifm_opts_get(o, "dcss");
    if (!dcss)
        dcss = "127.0.0.1:14242";
    if (ifm_tcp_split_hostport(dcss, c->dcss_host, sizeof c->dcss_host, c->dcss_port, sizeof c->dcss_port) != 0) {
        fprintf(stderr, "icefarm-dhs: --dcss wants HOST:PORT, not \"%s\"\n", dcss);
        return -1;
    }
    if (!c->dcss_host[0])
        snprintf(c->dcss_host, sizeof c->dcss_host, "127.0.0.1");
    const char *name = ifm_opts_get(o, "name");
    if (!xos_name_valid(name)) {
        fprintf(stderr,
                "icefarm-dhs: --name \"%s\": 1..%d characters, no spaces and none of [ ] $ ; \" \\ { } (DCSS's "
                "limit)\n",
                name, XOS_NAME_MAX);
        return -1;
    }
    snprintf(c->name, sizeof c->name, "%s", name);
    c->protocol = ifm_opts_long(o, "protocol") == 1 ? XOS_PROTO_1 : XOS_PROTO_2;
    c->broker = ifm_opts_get(o, "broker");
    c->user = ifm_opts_get(o, "user");
    c->cafile = ifm_opts_get(o, "cafile");
    const char *pw = ifm_opts_get(o, "password");
    if (pw && !(c->password = strdup(pw)))
        return -1;
    c->fetch.file_dir = ifm_opts_get(o, "fetch-dir");
    c->fetch.max_bytes = (size_t)ifm_opts_long(o, "fetch-max-bytes");
    c->fetch.timeout_ms = (unsigned)ifm_opts_long(o, "fetch-timeout-s") * 1000;
    c->fetch.user_agent = "icefarm-dhs";
    c->reserve_wait_ms = 30000;
    c->prepare_timeout_ms = 120000;
    c->op_timeout_ms = 120000;
    return 0;
}

int main(int argc, char **argv)
{
    dhs d;
    memset(&d, 0, sizeof d);
    d.connect_efd = -1;
    int rc = 1;
    char why[256] = "";
    ifm_opts *opts = ifm_opts_parse(&dhs_spec, argc, argv, &rc);
    if (!opts)
        return rc;
    rc = 1;
    if (configure(&d.cfg, opts)) {
        rc = 2;
        goto out;
    }
    signal(SIGPIPE, SIG_IGN);
    d.loop = ifm_loop_new();
    if (!d.loop)
        goto out;
    d.fetcher = ifm_fetcher_new(d.loop, &d.cfg.fetch);
    if (!d.fetcher) {
        IFM_ERROR("cannot set up fetching (libcurl, or --fetch-dir %s: %s)", d.cfg.fetch.file_dir ?: "-",
                  strerror(errno));
        goto out;
    }
    int sigs[] = { SIGINT, SIGTERM };
    if (dhs_metrics_start(&d, ifm_opts_get(opts, "metrics-listen")))
        goto out;
    if (ifm_loop_signals(d.loop, sigs, 2, on_signal, &d) || dhs_farm_start(&d)) {
        IFM_ERROR("cannot set up the loop");
        goto out;
    }
    if (dhs_dcss_start(&d, why, sizeof why)) {
        IFM_ERROR("cannot start the DCSS connection: %s", why);
        goto out;
    }
    IFM_INFO("icefarm-dhs %s: DCSS %s:%s protocol %d, farm %s, file: %s", d.cfg.name, d.cfg.dcss_host, d.cfg.dcss_port,
             (int)d.cfg.protocol, d.cfg.broker,
             d.cfg.fetch.file_dir && *d.cfg.fetch.file_dir ? d.cfg.fetch.file_dir : "(refused)");
    rc = ifm_loop_run(d.loop) ? 1 : 0;
out:
    dhs_dcss_stop(&d);
    dhs_ops_free(&d);
    if (d.loop)
        dhs_farm_stop(&d);
    ifm_fetcher_free(d.fetcher);
    dhs_metrics_stop(&d);
    ifm_loop_free(d.loop);
    free(d.cfg.password);
    ifm_opts_free(opts);
    return rc;
}
