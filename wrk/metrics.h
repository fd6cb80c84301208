/* icefarm-wrk's Prometheus metrics (README "Metrics" lists them). The metrics sit
 * between the state machine and the MQTT bridge as a sink (core/sink.h) that
 * records what passes and forwards every call unchanged, so the core needs no
 * metrics calls of its own. Gauges (boards by state) are read from the worker
 * just before each scrape.
 *
 * Threading: the worker's loop only. Lifetime: wrk_metrics_start() after the
 * bridge has installed its sink; wrk_metrics_stop() before the boards are freed.
 */
#ifndef ICEFARM_WRK_METRICS_H
#define ICEFARM_WRK_METRICS_H

#include "icefarm/metrics.h"
#include "icefarm/metrics_http.h"
#include "worker.h"

typedef struct {
    const wrk_board *b;
    ifm_board_state state; /* as last seen */
    double since;          /* monotonic seconds */
} wrk_metrics_board;

typedef struct {
    wrk_ctx *w;
    wrk_sink inner; /* the bridge */
    ifm_metrics *reg;
    ifm_metrics_server *srv; /* NULL without --metrics-listen */
    ifm_metric *boards, *evals, *eval_failures, *flash, *broken, *mqtt_connected;
    ifm_series *retries, *reconnects;
    unsigned connects;
    wrk_metrics_board *seen;
    size_t nseen, capseen;
    /* USB/IP counts itself: main.c hands `reg` to usbip_server_metrics(). */
} wrk_metrics;

/* Wraps w->sink and serves /metrics on `listen` (NULL: registry only). 0 or -1. */
int wrk_metrics_start(wrk_metrics *m, wrk_ctx *w, const char *listen);
/* The MQTT connection callback's part: counts reconnects. */
void wrk_metrics_mqtt(wrk_metrics *m, bool connected);
void wrk_metrics_stop(wrk_metrics *m);

#endif
