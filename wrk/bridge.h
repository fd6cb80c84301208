/* The worker on MQTT: the daemon's sink (core/sink.h) and its command topics.
 * It translates between MQTT and core calls and changes no board: commands go
 * to core/commands.c, the state machine's output comes back through the sink.
 *
 * Threading: the worker's loop only. Lifetime: from wrk_bridge_start() until
 * the process exits; w->mqtt belongs to main.c.
 */
#ifndef ICEFARM_WRK_BRIDGE_H
#define ICEFARM_WRK_BRIDGE_H

#include <stdbool.h>

#include "icefarm/mqtt.h"
#include "worker.h"

/* Sets the Will, subscribes to the worker's command topics and installs the
 * bridge as w->sink. Call before the transport starts. 0, or -1. */
int wrk_bridge_start(wrk_ctx *w);
/* The MQTT connection callback: pass it to ifm_mqtt_new with the context. */
void wrk_bridge_on_conn(ifm_mqtt *m, bool connected, void *arg);

#endif
