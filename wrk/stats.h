/* icefarm-wrk's statistics for dashboards: icefarm/worker/<id>/stats (retained,
 * PROTOCOL.md 7.6), the evaluations and failures this process answered. Like the
 * metrics it is a sink (core/sink.h) in front of the next one that counts what
 * passes and forwards every call unchanged.
 *
 * Cost: counting is two additions per batch of results; publishing happens at
 * most once a second and only when the counts changed (plus once on every
 * (re)connect, the retained republish of DESIGN decision 10), so a worker
 * answering 10,000 evaluations/s sends one small message a second.
 *
 * Threading: the worker's loop only. Lifetime: wrk_stats_start() after the
 * metrics sink is installed; wrk_stats_flush() before the MQTT disconnect;
 * wrk_stats_stop() before the boards are freed.
 */
#ifndef ICEFARM_WRK_STATS_H
#define ICEFARM_WRK_STATS_H

#include <stdbool.h>
#include <stdint.h>

#include "worker.h"

#define WRK_STATS_INTERVAL_MS 1000

typedef struct {
    wrk_ctx *w;
    wrk_sink inner; /* the sink it forwards to */
    uint64_t instance;
    uint64_t evaluations, failures;
    uint64_t sent_evaluations, sent_failures;
    bool sent; /* something was published on this connection */
    uint64_t timer;
} wrk_stats;

/* Wraps w->sink; 0 or -1. */
int wrk_stats_start(wrk_stats *s, wrk_ctx *w);
/* The MQTT connection callback's part: a (re)connect republishes at once. */
void wrk_stats_mqtt(wrk_stats *s, bool connected);
/* Publishes the counts now if they changed (before a clean disconnect). */
void wrk_stats_flush(wrk_stats *s);
void wrk_stats_stop(wrk_stats *s);

#endif
