/* The topic tree (proto/PROTOCOL.md is the authoritative description).
 *
 *   icefarm/<serial>/cmd              holder -> worker   evaluate, ...
 *   icefarm/<serial>/event            worker -> holder   initialized, results, failure, error
 *   icefarm/<serial>/state            worker, retained   board state
 *   icefarm/worker/<id>/state         worker, retained   birth (online+epoch+boards); Will = offline+epoch
 *   icefarm/worker/<id>/cmd           ctl -> worker      reserve, release, reboot, delete
 *   icefarm/worker/<id>/sim           anyone -> worker   fault injection, sim workers only
 *   icefarm/ctl/req/<verb>            client -> ctl      MQTT 5 request (Response Topic + Correlation Data)
 *   icefarm/ctl/state                 ctl, retained      online/offline (Will)
 *   icefarm/client/<name>/reply       ctl -> client      responses
 *   icefarm/client/<name>/event       ctl -> client      reservation ending soon, reservation end, failure,
 *                                                        worker reconnecting, worker reconnected
 *   icefarm/client/<name>/presence/<conn>  client, retained  a live connection (<conn> = its MQTT client id);
 *                                                        cleared by its Will or the broker plugin when it ends
 *   icefarm/worker/<id>/heartbeat     worker -> ctl      every heartbeat_ms (the birth says how often)
 *   icefarm/lease/<serial>            ctl, retained      who holds a board until when (empty = free)
 *   icefarm/farm/available            ctl, retained      counts per kind
 *   icefarm/farm/stats                ctl, retained      evaluations, failures, waiting reserves, history
 *   icefarm/worker/<id>/stats         worker, retained   its evaluations and failures (for control)
 *   icefarm/farm/worker/<id>          ctl, retained      control's verdict on a worker: online, hung,
 *                                                        reconnecting, offline (for dashboards)
 *   icefarm/<serial>/usbip/<session>/c2s|s2c   holder <-> worker   the USB/IP tunnel (19.3)
 */
#ifndef ICEFARM_TOPICS_H
#define ICEFARM_TOPICS_H

#include <stdbool.h>
#include <stddef.h>

#include "icefarm/limits.h" /* IFM_SERIAL_MAX, IFM_NAME_MAX, IFM_TOPIC_MAX... */
#include "icefarm/names.h"  /* ifm_name_valid, ifm_serial_valid... */

#define IFM_TOPIC_CTL_STATE "icefarm/ctl/state"
#define IFM_TOPIC_AVAILABLE "icefarm/farm/available"
#define IFM_TOPIC_FARM_STATS "icefarm/farm/stats"
#define IFM_TOPIC_FARM_WORKER_ALL "icefarm/farm/worker/+"
#define IFM_TOPIC_WORKER_STATS_ALL "icefarm/worker/+/stats"
#define IFM_TOPIC_CTL_REQ_ALL "icefarm/ctl/req/+"
#define IFM_TOPIC_BOARD_STATE_ALL "icefarm/+/state"
#define IFM_TOPIC_WORKER_STATE_ALL "icefarm/worker/+/state"
#define IFM_TOPIC_WORKER_HEARTBEAT_ALL "icefarm/worker/+/heartbeat"
#define IFM_TOPIC_LEASE_ALL "icefarm/lease/+"
#define IFM_TOPIC_PRESENCE_ALL "icefarm/client/+/presence/+"

/* Each returns 0, or -1 if a part is invalid or the topic does not fit. */
int ifm_topic_board(char *out, size_t cap, const char *serial, const char *leaf);
int ifm_topic_worker(char *out, size_t cap, const char *worker, const char *leaf);
int ifm_topic_client(char *out, size_t cap, const char *name, const char *leaf);
int ifm_topic_ctl_req(char *out, size_t cap, const char *verb);
int ifm_topic_lease(char *out, size_t cap, const char *serial);
/* icefarm/farm/worker/<id>: control's verdict on worker <id> (PROTOCOL.md 7.8). */
int ifm_topic_farm_worker(char *out, size_t cap, const char *worker);
/* icefarm/<serial>/usbip/<session>/<dir>, dir "c2s" (holder -> worker) or "s2c". */
int ifm_topic_usbip(char *out, size_t cap, const char *serial, const char *session, const char *dir);
/* icefarm/client/<name>/presence/<conn>; <conn> (an MQTT client id) must be a valid name too. */
int ifm_topic_presence(char *out, size_t cap, const char *name, const char *conn);

/* Copies level `index` (0-based) of `topic` into out; -1 if absent or too long. */
int ifm_topic_level(const char *topic, int index, char *out, size_t cap);

#endif
