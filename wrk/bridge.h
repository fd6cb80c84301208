/* The worker on MQTT: the daemon's sink (core/sink.h) and its command topics.
 * It translates between MQTT and core calls and changes no board: commands go
 * to core/commands.c, the state machine's output comes back through the sink.
 *
 * Across reconnects (PROTOCOL.md section 14.1) it keeps, per leased board, the
 * results it measured for the current lease (a bounded cache), publishes again
 * those it could not publish while cut off, and answers a holder's `resend`
 * evaluate from the cache instead of measuring twice. Board events carry the
 * lease they belong to; when a board leaves a lease it says `released`.
 *
 * Threading: the worker's loop only. Lifetime: from wrk_bridge_start() to
 * wrk_bridge_stop(); w->mqtt belongs to main.c.
 */
#ifndef ICEFARM_WRK_BRIDGE_H
#define ICEFARM_WRK_BRIDGE_H

#include <stdbool.h>

#include "icefarm/mqtt.h"
#include "worker.h"

typedef struct wrk_bridge_board wrk_bridge_board;

typedef struct {
    wrk_ctx *w;
    uint64_t heartbeat_ms; /* 0: no heartbeat */
    uint64_t hb_timer, hb_seq;
    wrk_bridge_board **boards; /* per board, in the order they were added */
    size_t nboards, capboards;
} wrk_bridge;

/* Sets the Will, subscribes to the worker's command topics and installs the
 * bridge as w->sink. Call before the transport starts. 0, or -1. */
int wrk_bridge_start(wrk_bridge *br, wrk_ctx *w, uint64_t heartbeat_ms);
/* The MQTT connection callback: pass it to ifm_mqtt_new with the bridge. */
void wrk_bridge_on_conn(ifm_mqtt *m, bool connected, void *arg);
/* Cancels the heartbeat and frees the caches. */
void wrk_bridge_stop(wrk_bridge *br);

#endif
