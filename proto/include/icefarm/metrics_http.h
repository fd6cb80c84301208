/* A tiny HTTP/1.x responder on the event loop that serves a metrics registry:
 * `GET /metrics` (or HEAD) answers 200 with the Prometheus text format, any other
 * path 404, any other method 405, a malformed request 400, a request head over
 * 8 KiB 431, and a request not complete within 10 s is dropped. One request per
 * connection (`Connection: close`), at most 32 connections at a time. It has no
 * login: bind it to loopback or a private network (--metrics-listen).
 *
 * Built on icefarm/tcp.h; same threading rule (the loop's thread only).
 * Ownership: the server borrows the registry (which must outlive it) and owns its
 * listener and connections; ifm_metrics_server_free closes them all.
 */
#ifndef ICEFARM_METRICS_HTTP_H
#define ICEFARM_METRICS_HTTP_H

#include <stddef.h>

#include "icefarm/loop.h"
#include "icefarm/metrics.h"
#include "icefarm/err.h"

typedef struct ifm_metrics_server ifm_metrics_server;

/* Listens on `hostport` ("HOST:PORT", "[v6]:PORT", ":PORT" for every address;
 * port 0 picks a free one). Returns 0 or -errno with the reason in `why`. */
IFM_MUST_CHECK int ifm_metrics_serve(ifm_loop *loop, ifm_metrics *reg, const char *hostport, ifm_metrics_server **out,
                                     char *why, size_t whylen);
int ifm_metrics_server_port(const ifm_metrics_server *s);
void ifm_metrics_server_free(ifm_metrics_server *s);

/* The answer to one request head (request line and headers, up to the blank
 * line): the status code, and the full response in *resp (malloc'd, free() it).
 * Pure: the unit tests and the fuzz target call it directly. */
int ifm_metrics_http_answer(ifm_metrics *reg, const char *head, size_t len, char **resp, size_t *resplen);

#endif
