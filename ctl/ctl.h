/* icefarm-ctl: the reservation service.
 *
 * One process, one event loop, one context struct. LMDB (store.h) is the source
 * of truth for leases; everything else here is a cache rebuilt from the broker's
 * retained messages (worker births, board states) and from the store on start.
 *
 *   registry.c  workers and boards as the workers report them
 *   leases.c    lease timers: "ending soon" warnings and expiry
 *   service.c   the request verbs (icefarm/ctl/req/<verb>)
 *   grant.c     granting boards: the one path behind reserve, reserve_serials
 *               and waiting reserves (the policy itself is store/alloc.c)
 *   waiters.c   reserve requests waiting for boards, first come first served
 *   presence.c  clients' connections (retained presence): a waiting reserve dies
 *               with the connection that asked
 *   publish.c   what control tells others: worker commands, client events,
 *               retained lease and availability messages
 *   metrics.c   Prometheus metrics (--metrics-listen)
 *   stats.c     the farm's statistics for dashboards (icefarm/farm/stats)
 */
#ifndef ICEFARM_CTL_H
#define ICEFARM_CTL_H

#include <stdbool.h>
#include <stdint.h>

#include "icefarm/loop.h"
#include "icefarm/metrics.h"
#include "icefarm/metrics_http.h"
#include "icefarm/mqtt.h"
#include "icefarm/msg.h"
#include "store.h"

typedef struct {
    char broker_host[256];
    int broker_port;
    bool broker_tls;
    const char *user, *password, *cafile;
    const char *data_dir;
    const char *metrics_listen; /* HOST:PORT, or NULL */
    uint64_t lease_default_s;   /* a reservation's length unless the client asks */
    uint64_t lease_max_s;       /* the longest a client may ask for */
    uint64_t warn_before_s;     /* "reservation ending soon" lead time */
    uint64_t worker_grace_s;    /* a worker whose connection died keeps its leases this long */
    int keepalive;
} ctl_config;

/* A worker is `online` (its birth is the latest word), `reconnecting` (its
 * connection died, or control's own did, and it has worker_grace_s to come
 * back as the same process instance: leases kept, boards not granted), or
 * neither (offline: its leases ended). `hung`: online but a heartbeat is
 * overdue, so its boards are not granted; leases stay. */
typedef struct {
    char id[IFM_NAME_MAX];
    bool online;
    uint64_t epoch;
    uint64_t instance; /* 0: the worker does not say (older workers) */
    char kinds[IFM_MAX_KINDS][IFM_KIND_MAX];
    size_t nkinds;
    uint64_t online_since_ms;
    bool reconnecting;
    bool told_holders;       /* holders heard "worker reconnecting" */
    uint64_t grace_until_ms; /* wall clock */
    uint64_t heartbeat_ms;   /* 0: no heartbeats expected */
    uint64_t last_beat_ms;   /* monotonic */
    bool hung;
    /* control's verdict as published on icefarm/farm/worker/<id> (PROTOCOL.md 7.8) */
    char why[IFM_LIVE_REASON_MAX]; /* why it is not online ("" while online) */
    bool live_published;           /* a verdict was published (or tried: it is again on connect) */
    ifm_live_state live;           /* the verdict last published */
    uint64_t live_epoch;           /* ... and the worker epoch it named */
    uint64_t live_since_ms;        /* wall clock: when the verdict last changed */
} ctl_worker;

/* What ended a lease, for the holder's `leases` request after a reconnect. */
typedef struct {
    char client[IFM_NAME_MAX];
    char serial[IFM_SERIAL_MAX];
    char reason[96];
    uint64_t lease, at_ms;
    bool failed;
} ctl_ended;
#define CTL_ENDED_LOG 512

/* A board as its worker last reported it, plus the lease mirror. */
typedef struct ctl ctl;

typedef struct {
    ctl *owner; /* for timer callbacks */
    char serial[IFM_SERIAL_MAX];
    char worker[IFM_NAME_MAX];
    size_t worker_hint; /* index into ctl.workers where `worker` was last found */
    ifm_board_state state;
    char kind[IFM_KIND_MAX];
    char reason[160];
    bool known; /* reported by a worker (not only a lease from the store) */
    /* lease mirror: valid when leased; the store stays authoritative */
    bool leased;
    char client[CTL_CLIENT_MAX + 1];
    char lease_kind[CTL_KIND_MAX + 1];
    char lease_tag[CTL_TAG_MAX + 1];
    uint64_t lease_id, until_ms;
    uint64_t set_ms; /* when this process set until_ms (grant, extend); 0: before a restart */
    bool warned;
    uint64_t warn_timer, expire_timer;
} ctl_board;

typedef struct ctl_waiter ctl_waiter;

/* metrics.c: the registry, the /metrics responder, and the series kept for hot paths. */
typedef struct {
    ifm_metrics *reg;
    ifm_metrics_server *srv; /* NULL without --metrics-listen */
    ifm_metric *boards, *leases, *waiting, *workers, *ends, *latency, *mqtt_connected;
    ifm_series *grants, *expiries, *reconnects;
    unsigned connects;
} ctl_metrics;

/* stats.c: each worker's counters as last seen, the farm's totals since
 * control started, and the history of the last IFM_STATS_BUCKETS buckets. */
typedef struct {
    char worker[IFM_NAME_MAX];
    uint64_t instance, evaluations, failures;
} ctl_wstats;

typedef struct {
    ctl_wstats *workers;
    size_t nworkers, capworkers;
    uint64_t evaluations, failures;
    uint64_t history_start_ms;
    uint32_t hist_evaluations[IFM_STATS_BUCKETS], hist_failures[IFM_STATS_BUCKETS];
    size_t nhistory;
    bool dirty;          /* counts changed since the last publish */
    ifm_farm_stats last; /* as last published (its waiting reserves) */
    uint64_t timer;      /* the once-a-second publisher */
} ctl_stats;

struct ctl {
    ctl_config cfg;
    ifm_loop *loop;
    ifm_mqtt *mqtt;
    ctl_store *store;
    uint64_t epoch;
    ctl_worker *workers;
    size_t nworkers, capworkers;
    ctl_board **boards; /* each board allocated once and kept: timers point at them */
    size_t nboards, capboards;
    ctl_waiter *waiters; /* FIFO */
    uint8_t last_avail[512];
    size_t last_avail_len;
    uint64_t avail_timer;           /* availability is recomputed at most every AVAIL_DEBOUNCE_MS */
    uint64_t watch_timer;           /* worker graces and heartbeats (registry.c) */
    ctl_ended ended[CTL_ENDED_LOG]; /* a ring of the latest lease ends */
    size_t nended;                  /* ends recorded so far (the ring holds the last CTL_ENDED_LOG) */
    bool shutting_down;
    ctl_metrics metrics;
    ctl_stats stats;
};

/* registry.c */
ctl_worker *ctl_worker_find(ctl *c, const char *id);
ctl_board *ctl_board_find(ctl *c, const char *serial);
ctl_board *ctl_board_get(ctl *c, const char *serial); /* find or create */
/* The board's worker, or NULL; O(1) in the common case. */
ctl_worker *ctl_board_worker(ctl *c, ctl_board *b);
bool ctl_worker_offers(const ctl_worker *w, const char *kind);
bool ctl_board_allocatable(ctl *c, ctl_board *b, const char *kind);
/* Ends the lease on `b` (if any) with a failure: the holder hears why. */
void ctl_board_end(ctl *c, ctl_board *b, const char *why);
void ctl_on_worker_state(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg);
void ctl_on_board_state(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg);
void ctl_on_heartbeat(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg);
/* Control (re)connected: workers it believed online must be heard from again
 * (a broker restart loses their retained births) within the grace. */
void ctl_workers_unconfirmed(ctl *c);
/* The watch over graces and heartbeats; started once, stopped at exit. */
void ctl_watch_start(ctl *c);
void ctl_watch_stop(ctl *c);
/* "online", "hung", "reconnecting" or "offline". */
const char *ctl_worker_state_name(const ctl_worker *w);
ifm_live_state ctl_worker_live(const ctl_worker *w);

/* leases.c */
int ctl_leases_load(ctl *c);
void ctl_lease_arm(ctl *c, ctl_board *b);
void ctl_lease_disarm(ctl *c, ctl_board *b);
/* Mirrors a store lease into the board and arms its timers; `set_ms`: when its
 * deadline was set (now, for a grant), or 0 for a lease loaded after a restart. */
void ctl_lease_adopt(ctl *c, const ctl_lease *l, uint64_t set_ms);
/* After the store ended `l`: clear the mirror, tell the holder (with `failure`
 * first when failed), release the board on its worker, republish. */
void ctl_lease_ended(ctl *c, const ctl_lease *l, bool failed, const char *why);
/* The ends recorded for `client`, newest last; `fn` per end. */
void ctl_ended_each(ctl *c, const char *client, void (*fn)(const ctl_ended *e, void *arg), void *arg);
/* Pure planning, unit-tested with a fake clock: when the warn and expire timers
 * should fire, as delays from `now_ms` (UINT64_MAX: not at all). `set_ms` is when
 * the deadline was set (0: unknown): a deadline set less than twice the lead ahead
 * is warned halfway to it, so a holder that extends on every warning does so once
 * per half lease instead of in a loop. */
void ctl_lease_plan(uint64_t now_ms, uint64_t set_ms, uint64_t until_ms, bool warned, uint64_t warn_before_ms,
                    uint64_t *warn_in_ms, uint64_t *expire_in_ms);

/* service.c */
void ctl_on_request(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg);

/* waiters.c */
int ctl_waiter_add(ctl *c, const ifm_mqtt_msg *msg, const char *client, const ifm_ctl_req *req, const uint8_t *args,
                   size_t args_len, uint64_t duration_s);
void ctl_waiters_serve(ctl *c);
void ctl_waiters_free(ctl *c);
/* `cancel`: the waiting reserve of `client` whose request carried this
 * correlation data ends (409 to it). Returns how many ended (0 or 1). */
size_t ctl_waiter_cancel(ctl *c, const char *client, const uint8_t *corr, size_t len);
/* A connection ended (its presence was cleared): its waiting reserves end. */
size_t ctl_waiters_gone(ctl *c, const char *client, const char *conn);
/* Control lost the broker: nobody may be listening for these replies any more;
 * each waiter hears 503 `why` in case it is, and asks again. */
void ctl_waiters_drop_all(ctl *c, const char *why);
/* presence.c: icefarm/client/<name>/presence/<conn>. */
void ctl_on_presence(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg);
/* Visits the waiting reserves, oldest first. */
void ctl_waiters_each(ctl *c, void (*fn)(const char *kind, uint32_t amount, void *arg), void *arg);

/* grant.c: what a grant is for; all borrowed for the call. */
typedef struct {
    const char *client, *kind;
    const uint8_t *args; /* msgpack map, stored with each lease */
    size_t args_len;
    uint64_t duration_s;
    const char *tag; /* stored with each lease; NULL or "" for none */
} ctl_grant_req;
/* Grants `amount` boards of g->kind chosen by the allocation policy. On 200 `enc`
 * holds the reply and the leases are on disk and adopted; otherwise the reply
 * code (409 not enough boards, 500...) with the reason in `why`. */
uint32_t ctl_grant_any(ctl *c, const ctl_grant_req *g, uint32_t amount, ifm_enc *enc, char *why, size_t whylen);
/* Grants exactly serials[0..n) (n >= 1), all or nothing: 400 a serial listed
 * twice, 404 an unknown serial, 409 one not available (PROTOCOL.md 6.4). */
uint32_t ctl_grant_serials(ctl *c, const ctl_grant_req *g, const char *const *serials, size_t n, ifm_enc *enc,
                           char *why, size_t whylen);

/* publish.c */
void ctl_publish_lease(ctl *c, const ctl_board *b);
/* Availability changes with every board state; publishing is debounced so a
 * burst of changes (a worker's birth, 1,000 retained states at start) costs one
 * recount. `force` publishes now. */
void ctl_publish_available(ctl *c, bool force);
void ctl_publish_state(ctl *c, bool online);
/* icefarm/farm/worker/<id>: w's verdict (online, hung, reconnecting, offline)
 * if it changed since last published; `force`: anyway (control's connect). */
void ctl_publish_liveness(ctl *c, ctl_worker *w, bool force);
void ctl_send_worker_cmd(ctl *c, const char *worker, ifm_worker_op op, const char *serial, const char *kind,
                         const char *client, uint64_t lease, const uint8_t *args, size_t args_len);
void ctl_send_client_event(ctl *c, const char *client, const char *event, const char *serial, uint64_t until_ms,
                           const char *reason);
uint64_t ctl_now_ms(const ctl *c);

/* stats.c */
int ctl_stats_init(ctl *c);
void ctl_stats_free(ctl *c);
void ctl_on_worker_stats(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg);
/* Publishes icefarm/farm/stats if it changed (`force`: anyway, e.g. on connect). */
void ctl_stats_publish(ctl *c, bool force);

/* metrics.c */
int ctl_metrics_init(ctl *c);
int ctl_metrics_serve(ctl *c, const char *listen); /* NULL or "": not served */
void ctl_metrics_free(ctl *c);
double ctl_metrics_clock(void); /* monotonic seconds */
void ctl_metrics_request(ctl *c, const char *verb, double seconds);
void ctl_metrics_ended(ctl *c, bool failed, const char *why);

#endif
