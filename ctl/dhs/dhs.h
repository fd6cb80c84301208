/* icefarm-dhs: the farm as a DCSS hardware server (README.md).
 *
 * One process, one thread, one ifm_loop: the DCSS connection (icefarm/tcp.h,
 * redialled with back-off and jitter), the farm handle (libicefarm, embedded in the
 * loop through icefarm_fd/icefarm_run_once; connected by a short-lived helper
 * thread so a slow broker never stalls the loop), libcurl fetches and timers. No
 * callback ever waits: farm requests are icefarm_call_async, fetches are libcurl
 * multi, so the DCSS socket is always read.
 *
 * The one context struct of the process is `dhs`; modules:
 *   dcss.c  the DCSS link: handshake, framing, registrations, dispatch, sending
 *   ops.c   the operation table: one completion per handle, abort, stop, forget
 *   farm.c  the farm handle: connecting, events, the status reply, the status string
 *   metrics.c  Prometheus metrics (--metrics-listen)
 *   main.c  options and start-up
 * The DHS holds no farm state of its own: leases live in control (their `tag` says
 * which DCSS client asked), and every operation asks control what it needs.
 */
#ifndef ICEFARM_DHS_H
#define ICEFARM_DHS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "icefarm/fetch.h"
#include "icefarm/client.h"
#include "icefarm/loop.h"
#include "icefarm/metrics.h"
#include "icefarm/metrics_http.h"
#include "icefarm/tcp.h"
#include "xos.h"

#define DHS_STATUS_STRING "farm_status" /* the hwName of the status string */
#define DHS_MAX_REGS 64
#define DHS_DETAIL_MAX 120 /* human detail in a completion or a log line */

typedef struct {
    char dcss_host[256], dcss_port[16];
    char name[XOS_NAME_MAX + 1];
    xos_proto protocol;
    /* the farm */
    const char *broker, *user, *cafile;
    char *password; /* read from the password file; freed at exit */
    long keepalive;
    /* fetching */
    ifm_fetch_opts fetch;
    /* operations */
    uint64_t reserve_wait_ms, prepare_timeout_ms, op_timeout_ms;
} dhs_cfg;

typedef struct {
    char dcss_name[XOS_NAME_MAX + 1];
    char hw_name[XOS_NAME_MAX + 1];
    bool string; /* else an operation */
} dhs_reg;

typedef struct op op;

/* metrics.c: the registry, the /metrics responder, the series of hot paths. */
typedef struct {
    ifm_metrics *reg;
    ifm_metrics_server *srv; /* NULL without --metrics-listen */
    ifm_metric *started, *completed, *op_duration, *fetch_duration;
    ifm_metric *running, *dcss_connected, *mqtt_connected;
    ifm_series *fetch_bytes, *dcss_sessions, *mqtt_reconnects;
    unsigned farm_ups; /* farm connections seen up, the first included */
} dhs_metrics;

typedef struct dhs {
    ifm_loop *loop;
    dhs_cfg cfg;
    /* the DCSS link */
    ifm_tcp_redial *redial;
    ifm_tcp *stream;
    enum {
        LINK_DOWN,
        LINK_HANDSHAKE,
        LINK_UP
    } link;
    uint64_t link_gen; /* one per DCSS session; handles belong to one */
    uint64_t handshake_timer;
    xos_reader *reader;
    dhs_reg regs[DHS_MAX_REGS];
    int nregs;
    /* the farm */
    icefarm *farm;
    bool farm_up;
    pthread_t connect_thread;
    bool connecting;
    int connect_efd;
    int connect_rc;
    icefarm *connect_result;
    char connect_reason[256];
    ifm_backoff farm_backoff;
    uint64_t farm_timer, farm_retry_timer, status_timer;
    bool status_pending;
    char status_text[XOS_STRING_MAX + 1]; /* the last status string sent */
    /* operations */
    op *ops;
    uint64_t next_op_id;
    ifm_fetcher *fetcher;
    dhs_metrics metrics;
} dhs;

/* ---- dcss.c ---- */
int dhs_dcss_start(dhs *d, char *why, size_t whylen);
void dhs_dcss_stop(dhs *d);
/* Sends a finished message (xos_out_end checked here); -1 if the link is down or
 * the formatter refused (logged). */
int dhs_send(dhs *d, xos_out *o);
/* The outbound budget of the configured protocol. */
size_t dhs_out_limit(const dhs *d);
/* htos_log <level> <name> {text} (text made safe). */
void dhs_log_dcss(dhs *d, const char *level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Pushes the status string to every registered status string (if changed or force). */
void dhs_push_status(dhs *d, bool force);
const dhs_reg *dhs_reg_find(const dhs *d, const char *dcss_name);

/* ---- ops.c ---- */
void dhs_ops_start(dhs *d, const char *name, const char *handle, int argc, char **argv);
/* Completes running handles with `aborted` (name NULL: all). */
void dhs_ops_abort(dhs *d, const char *name);
/* The DCSS session ended: handles are dead, no completions; grants are released. */
void dhs_ops_forget(dhs *d);
void dhs_ops_free(dhs *d);
/* Farm events for the operations waiting on them. */
void dhs_ops_event(dhs *d, const icefarm_event *ev);
size_t dhs_ops_count(const dhs *d);

/* ---- farm.c ---- */
int dhs_farm_start(dhs *d);
void dhs_farm_stop(dhs *d);
/* Call after anything that may have used the farm handle: re-arms its timer. */
void dhs_farm_kick(dhs *d);
bool dhs_farm_online(const dhs *d);
/* Fire-and-forget end of a lease (grants of dead handles). */
void dhs_farm_release(dhs *d, const char *serial, const char *why);

/* ---- metrics.c ----
 * The registry always exists (the counters below are cheap); it is served on
 * `listen` ("HOST:PORT") when that is set. Operation and status labels are the
 * fixed hwNames and completion tokens of ops.c. Loop thread only. */
int dhs_metrics_start(dhs *d, const char *listen);
void dhs_metrics_stop(dhs *d);
/* An operation handle started (hw: its hwName, or "unknown"). */
void dhs_metrics_op_started(dhs *d, const char *hw);
/* It ended: completed with `status`, or "forgotten" with its DCSS session;
 * `seconds` since it started. */
void dhs_metrics_op_ended(dhs *d, const char *hw, const char *status, double seconds);
/* A fetch finished: status 0 with `bytes`, or -errno; `seconds` since it started. */
void dhs_metrics_fetched(dhs *d, int status, size_t bytes, double seconds);
/* The DCSS handshake succeeded: a new session. */
void dhs_metrics_dcss_session(dhs *d);
/* The farm connection came up (farm.c sees it in dhs_farm_kick). */
void dhs_metrics_farm_up(dhs *d);
/* Monotonic seconds, for the durations above. */
double dhs_metrics_clock(void);

/* control's `status` reply, decoded */
typedef struct {
    char serial[ICEFARM_SERIAL_MAX];
    char worker[ICEFARM_NAME_MAX];
    char state[16];
    char kind[ICEFARM_KIND_MAX];
    bool available;
    /* its lease, if any */
    bool leased;
    char client[ICEFARM_NAME_MAX];
    char tag[128];
    uint64_t lease, until_ms;
} dhs_board;

typedef struct {
    dhs_board *boards;
    size_t n;
    size_t nleases;
} dhs_farm_status;

/* Decodes a status reply; 0 or -1 with why. Free with dhs_farm_status_free. */
int dhs_farm_status_decode(const icefarm_reply *r, dhs_farm_status *st, char *why, size_t whylen);
void dhs_farm_status_free(dhs_farm_status *st);
const dhs_board *dhs_farm_status_find(const dhs_farm_status *st, const char *serial);
/* The first lease of a reserve/reserve_serials reply: serial, lease id, until. */
int dhs_reply_grant(const icefarm_reply *r, char *serial, size_t cap, uint64_t *lease, uint64_t *until_ms);

#endif
