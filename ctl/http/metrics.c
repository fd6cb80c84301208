/* icefarm-http's Prometheus metrics, served at /metrics by the shim's own
 * server (same registry and formatter as the ctl/wrk responder). With --auth
 * broker, /metrics needs a login like every API endpoint (Prometheus:
 * basic_auth in the scrape config); with --auth none it is as open as the rest
 * of the shim, which then listens on loopback. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "icefarm/log.h"

static const char *const L_EP_CODE[] = { "endpoint", "code", NULL };
static const char *const L_EP[] = { "endpoint", NULL };

static void collect(ifm_metrics *reg, void *arg)
{
    http_srv *s = arg;
    ifm_series_set(ifm_metric_at(s->metrics.connected), ifm_mqtt_connected(s->mqtt) ? 1 : 0);
}

int http_metrics_init(http_srv *s)
{
    http_metrics *m = &s->metrics;
    ifm_metrics *r = m->reg = ifm_metrics_new();
    if (!r)
        return -1;
    m->requests = ifm_metrics_counter(r, "icefarm_http_requests_total",
                                      "HTTP requests answered, by endpoint and status code (0: none sent).", L_EP_CODE);
    m->latency = ifm_metrics_histogram(r, "icefarm_http_request_duration_seconds",
                                       "Time from request to response, by endpoint (event streams not included).", L_EP,
                                       IFM_BUCKETS_LATENCY, IFM_BUCKETS_LATENCY_N);
    m->reconnects = ifm_metric_at(
        ifm_metrics_counter(r, "icefarm_mqtt_reconnects_total", "Connections to the broker after the first.", NULL));
    m->connected = ifm_metrics_gauge(r, "icefarm_mqtt_connected", "1 while connected to the broker.", NULL);
    return ifm_metrics_on_collect(r, collect, s);
}

void http_metrics_free(http_srv *s)
{
    ifm_metrics_free(s->metrics.reg);
    memset(&s->metrics, 0, sizeof s->metrics);
}

void http_metrics_mqtt(ifm_mqtt *mq, bool connected, void *arg)
{
    http_srv *s = arg;
    if (connected && s->metrics.connects++)
        ifm_series_add(s->metrics.reconnects, 1);
}

/* A bounded label: the known paths, or "other". */
static const char *endpoint(const http_req *r)
{
    if (r->route == ROUTE_PAGE || strcmp(r->path, "/") == 0)
        return "/"; /* the dashboard and its files */
    if (r->ep || r->route != ROUTE_NONE)
        return r->path;
    return "other";
}

void http_metrics_request(http_srv *s, const http_req *r, double seconds)
{
    char code[12];
    snprintf(code, sizeof code, "%u", r->status);
    const char *ep = endpoint(r);
    ifm_series_add(ifm_metric_at(s->metrics.requests, ep, code), 1);
    if (r->route != ROUTE_EVENTS)
        ifm_series_observe(ifm_metric_at(s->metrics.latency, ep), seconds);
}

enum MHD_Result http_metrics_serve(http_req *r)
{
    size_t len = 0;
    char *text = ifm_metrics_render(r->srv->metrics.reg, &len);
    if (!text)
        return http_reply_error(r, 500, "out of memory");
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, IFM_METRICS_CONTENT_TYPE);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result rc = MHD_queue_response(r->conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    r->status = MHD_HTTP_OK;
    r->state = REQ_DONE;
    return rc;
}
