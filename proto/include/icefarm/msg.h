/* One schema per message: encoders and strict decoders. Field names, types and
 * limits are documented in proto/PROTOCOL.md; keep the two in step.
 *
 * Decoded structs that contain pointers (args, files, boards, serials) point into
 * the ifm_doc they were decoded from, or own malloc'd arrays released by the
 * matching *_free(); each struct says which.
 */
#ifndef ICEFARM_MSG_H
#define ICEFARM_MSG_H

#include "icefarm/codec.h"
#include "icefarm/topics.h"

/* ---- control requests: icefarm/ctl/req/<verb> ---- */

typedef enum {
    IFM_VERB_AVAILABLE,
    IFM_VERB_DEVICES,
    IFM_VERB_RESERVE,
    IFM_VERB_RESERVE_SERIALS,
    IFM_VERB_EXTEND,
    IFM_VERB_EXTEND_ALL,
    IFM_VERB_END,
    IFM_VERB_END_ALL,
    IFM_VERB_REBOOT,
    IFM_VERB_DELETE,
    IFM_VERB_STATUS,
    IFM_VERB_LEASES, /* "my leases": the caller's leases, and what ended them lately */
    IFM_VERB_CANCEL, /* a waiting reserve of the caller, by its correlation data */
    IFM_VERB_COUNT
} ifm_verb;

const char *ifm_verb_name(ifm_verb v);
/* -1 for an unknown verb name. */
int ifm_verb_parse(const char *name);

typedef struct {
    ifm_verb verb;
    uint32_t amount;                 /* reserve */
    char kind[IFM_KIND_MAX];         /* reserve, reserve_serials; optional filter for available/devices */
    const msgpack_object *args;      /* reserve*: a map, points into the doc; NULL when absent */
    char (*serials)[IFM_SERIAL_MAX]; /* malloc'd; reserve_serials, extend, end, reboot, delete */
    size_t nserials;
    uint64_t wait_ms;      /* reserve: wait this long for boards (0: fail at once) */
    uint64_t duration_s;   /* reserve*, extend*: requested lease length (0: default) */
    char tag[IFM_TAG_MAX]; /* reserve*: free text stored with the lease ("" none) */
    bool set;              /* extend*: until = now + duration even if that is earlier (else the later of the two) */
    const uint8_t *corr;   /* cancel: the waiting request's correlation data (1..64 bytes), points into the doc */
    size_t corr_len;
} ifm_ctl_req;

#define IFM_CORR_MAX 64 /* correlation data a `cancel` can name */

/* Decodes a request for `verb`, checking that the verb's required fields are there. */
int ifm_ctl_req_decode(const ifm_doc *doc, ifm_verb verb, ifm_ctl_req *req, ifm_err *err);
void ifm_ctl_req_free(ifm_ctl_req *req);
/* Encodes; `args` (may be NULL) is raw msgpack of a map. */
void ifm_ctl_req_encode(ifm_enc *e, const ifm_ctl_req *req, const void *args, size_t args_len);

/* Replies: {v, ok, code, error?, ...verb-specific fields}. `code` follows HTTP
 * (200, 400 bad request, 403 not yours, 404 unknown serial, 409 not enough boards,
 * 503 unavailable) so the HTTP shim can pass it straight through. */
typedef struct {
    bool ok;
    uint32_t code;
    char error[200];
} ifm_reply_status;
/* Starts a reply map; `extra` more entries follow. */
void ifm_reply_begin(ifm_enc *e, uint32_t code, const char *error, uint32_t extra);
int ifm_reply_status_decode(const ifm_doc *doc, ifm_reply_status *st, ifm_err *err);

/* ---- worker birth/death: icefarm/worker/<id>/state (retained) ---- */

typedef enum {
    IFM_BOARD_FLASHING, /* flashing the default firmware */
    IFM_BOARD_TESTING,
    IFM_BOARD_READY,
    IFM_BOARD_PREPARING, /* flashing the reserved kind's firmware */
    IFM_BOARD_RESERVED,  /* running the kind's firmware for the holder */
    IFM_BOARD_BROKEN,
    IFM_BOARD_GONE, /* unplugged */
    IFM_BOARD_STATE_COUNT
} ifm_board_state;

const char *ifm_board_state_name(ifm_board_state s);
int ifm_board_state_parse(const char *name);

typedef struct {
    char serial[IFM_SERIAL_MAX];
    ifm_board_state state;
    char kind[IFM_KIND_MAX]; /* "" unless preparing/reserved */
} ifm_board_brief;

typedef struct {
    char worker[IFM_NAME_MAX];
    bool online;
    uint64_t epoch;        /* grows on every connect; a death names the epoch it ends */
    uint64_t instance;     /* the worker process: the same across its reconnects; 0 = not given (older workers) */
    uint64_t heartbeat_ms; /* the worker publishes icefarm/worker/<id>/heartbeat this often; 0 = never */
    bool clean;            /* offline: the worker shut down itself (not its Will) */
    char kinds[IFM_MAX_KINDS][IFM_KIND_MAX];
    size_t nkinds;
    ifm_board_brief *boards; /* malloc'd */
    size_t nboards;
} ifm_worker_state;

void ifm_worker_state_encode(ifm_enc *e, const ifm_worker_state *ws);
int ifm_worker_state_decode(const ifm_doc *doc, ifm_worker_state *ws, ifm_err *err);
void ifm_worker_state_free(ifm_worker_state *ws);

/* ---- board state: icefarm/<serial>/state (retained, from the worker) ---- */

typedef struct {
    char serial[IFM_SERIAL_MAX];
    char worker[IFM_NAME_MAX];
    uint64_t epoch;
    ifm_board_state state;
    char kind[IFM_KIND_MAX];
    char reason[160];  /* why broken, "" otherwise */
    bool exported;     /* kind usbip: its USB device is exported (section 19); the busid never appears here */
    uint64_t since_ms; /* when the board entered `state` (ms timestamp, the worker's clock); 0 = not given */
} ifm_board_status;

void ifm_board_status_encode(ifm_enc *e, const ifm_board_status *bs);
int ifm_board_status_decode(const ifm_doc *doc, ifm_board_status *bs, ifm_err *err);

/* ---- control -> worker: icefarm/worker/<id>/cmd ---- */

typedef enum {
    IFM_WOP_RESERVE,
    IFM_WOP_RELEASE,
    IFM_WOP_REBOOT,
    IFM_WOP_DELETE,
    IFM_WOP_COUNT
} ifm_worker_op;

typedef struct {
    ifm_worker_op op;
    char serial[IFM_SERIAL_MAX];
    char kind[IFM_KIND_MAX];    /* reserve */
    char client[IFM_NAME_MAX];  /* reserve: the holder, for logs */
    uint64_t lease;             /* reserve: lease id */
    const msgpack_object *args; /* reserve: map or NULL; points into the doc */
} ifm_worker_cmd;

void ifm_worker_cmd_encode(ifm_enc *e, const ifm_worker_cmd *c, const void *args, size_t args_len);
int ifm_worker_cmd_decode(const ifm_doc *doc, ifm_worker_cmd *c, ifm_err *err);

/* ---- holder -> board: icefarm/<serial>/cmd ---- */

typedef struct {
    char id[IFM_ID_MAX];
    const uint8_t *data; /* points into the doc */
    size_t len;
} ifm_file;

#define IFM_MAX_IMAGE (8u * 1024u * 1024u) /* a UF2 image of a 4 MB flash is 8 MB */

typedef struct {
    char op[16];               /* "evaluate", "flash", "unbind" or "announce" (kind usbip) */
    char batch_id[IFM_ID_MAX]; /* evaluate */
    ifm_file *files;           /* evaluate; malloc'd */
    size_t nfiles;
    const uint8_t *image; /* flash: a UF2 image, points into the doc */
    size_t image_len;
    /* Who sent it: the message's IFM_PROP_CLIENT user property, filled in by the
     * receiver (never from the payload); "" when the message had none. */
    char client[IFM_NAME_MAX];
    bool resend; /* evaluate: the holder may have sent these files before (after a reconnect): the
                    worker skips the ones it has queued and answers the measured ones again */
} ifm_board_cmd;

/* Files are checked for their ids and for being non-empty; the exact size is the
 * worker's business (it answers with an `error` event naming the bad ids). */
int ifm_board_cmd_decode(const ifm_doc *doc, ifm_board_cmd *c, ifm_err *err);
void ifm_board_cmd_free(ifm_board_cmd *c);
void ifm_board_cmd_encode(ifm_enc *e, const char *batch_id, const ifm_file *files, size_t n);
/* The same with `resend: true` when `resend`. */
void ifm_board_cmd_encode_resend(ifm_enc *e, const char *batch_id, const ifm_file *files, size_t n, bool resend);
void ifm_board_flash_encode(ifm_enc *e, const uint8_t *image, size_t len);
/* A board command without arguments: "unbind" or "announce" (kind usbip). */
void ifm_board_op_encode(ifm_enc *e, const char *op);

/* ---- board events: icefarm/<serial>/event ---- */

typedef enum {
    IFM_VALUE_PULSES,
    IFM_VALUE_FITNESS,
    IFM_VALUE_WAVEFORM,
    IFM_VALUE_FAILED
} ifm_value_type;

typedef struct {
    char id[IFM_ID_MAX];
    ifm_value_type type;
    int64_t pulses;
    double fitness;
    const uint16_t *samples; /* waveform */
    size_t nsamples;
    char error[120]; /* failed */
} ifm_result;

/* `usbip exported` / `usbip detached` (PROTOCOL.md 19.2): the board's USB device
 * is (or, until the next `usbip exported`, is no longer) served at host:port
 * under `busid`, the lease's token. reason may be NULL; lease 0 leaves the tag out. */
#define IFM_HOST_MAX 256
void ifm_event_usbip_encode(ifm_enc *e, const char *event, const char *serial, const char *busid, const char *host,
                            uint32_t port, const char *reason, uint64_t lease);

/* Any non-results board event; reason and batch_id may be NULL. */
void ifm_event_encode(ifm_enc *e, const char *event, const char *serial, const char *reason, const char *batch_id);
/* The same, tagged with the lease it belongs to (`lease` 0: untagged). The tag is
 * written right after `event`, so a reader (the broker's ACL plugin) finds it
 * without walking the results. */
void ifm_event_lease_encode(ifm_enc *e, const char *event, const char *serial, const char *reason, const char *batch_id,
                            uint64_t lease);
void ifm_event_results_lease_encode(ifm_enc *e, const char *serial, const char *batch_id, uint64_t lease,
                                    const ifm_result *r, size_t n);
void ifm_event_simple_encode(ifm_enc *e, const char *event, const char *serial, const char *reason);
/* `error`: the board refused a command; batch_id names it when it was an evaluate ("" or NULL: unknown),
 * client whose command it was (NULL or "": unknown). */
void ifm_event_error_encode(ifm_enc *e, const char *serial, const char *reason, const char *batch_id,
                            const char *client);
void ifm_event_results_encode(ifm_enc *e, const char *serial, const char *batch_id, const ifm_result *r, size_t n);

/* Decoded board or client event: the common header only; results stay in the doc. */
typedef struct {
    char event[32];
    char serial[IFM_SERIAL_MAX];
    char batch_id[IFM_ID_MAX];
    char reason[160];
    char client[IFM_NAME_MAX];     /* `error`: whose command was refused; "" when not said */
    uint64_t lease;                /* the lease the event belongs to; 0 when untagged */
    uint64_t until_ms;             /* client events: `until` when given, else 0 */
    const msgpack_object *results; /* array of [id, value] pairs, or NULL */
    char busid[32];                /* usbip events: the export's busid (required), host and port */
    char host[IFM_HOST_MAX];
    uint32_t port;
} ifm_event;

int ifm_event_decode(const ifm_doc *doc, ifm_event *ev, ifm_err *err);
/* Decodes results[i] into r (samples are copied into r_samples when given). */
int ifm_event_result_at(const ifm_event *ev, size_t i, ifm_result *r, uint16_t *samples, size_t samples_cap,
                        ifm_err *err);

/* ---- control -> client: icefarm/client/<name>/event ---- */
/* `until_ms` 0 and `reason` NULL or "" are left out of the message. */
void ifm_client_event_encode(ifm_enc *e, const char *event, const char *serial, uint64_t until_ms, const char *reason);

/* ---- icefarm/client/<name>/presence/<conn> (retained; empty = that connection ended) ---- */
void ifm_presence_encode(ifm_enc *e);
/* 0 for a presence message ({v, state: "online"}), -1 with the reason. */
int ifm_presence_decode(const ifm_doc *doc, ifm_err *err);

/* ---- icefarm/worker/<id>/heartbeat (not retained) ---- */
typedef struct {
    char worker[IFM_NAME_MAX];
    uint64_t epoch, instance, seq;
} ifm_heartbeat;
void ifm_heartbeat_encode(ifm_enc *e, const ifm_heartbeat *h);
int ifm_heartbeat_decode(const ifm_doc *doc, ifm_heartbeat *h, ifm_err *err);

/* ---- icefarm/lease/<serial> (retained) ---- */
typedef struct {
    char serial[IFM_SERIAL_MAX];
    char client[IFM_NAME_MAX];
    char kind[IFM_KIND_MAX];
    char worker[IFM_NAME_MAX];
    uint64_t lease;
    uint64_t until_ms;
    char tag[IFM_TAG_MAX]; /* "" when the holder gave none (then not sent) */
} ifm_lease_info;
void ifm_lease_info_encode(ifm_enc *e, const ifm_lease_info *l);
int ifm_lease_info_decode(const ifm_doc *doc, ifm_lease_info *l, ifm_err *err);

/* ---- ctl state and availability (retained) ---- */
void ifm_ctl_state_encode(ifm_enc *e, bool online, uint64_t epoch);

typedef struct {
    uint32_t amount;
    char kinds[IFM_MAX_KINDS][IFM_KIND_MAX];
    uint32_t counts[IFM_MAX_KINDS];
    size_t nkinds;
} ifm_available;
void ifm_available_encode(ifm_enc *e, const ifm_available *a);
int ifm_available_decode(const ifm_doc *doc, ifm_available *a, ifm_err *err);

/* ---- statistics for dashboards (PROTOCOL.md 7.6, 7.7) ---- */

/* icefarm/worker/<id>/stats (retained, from the worker): its counters since the
 * process started. Published at most once a second, only when they changed, and
 * on every (re)connect; so it costs the same at 1 or 10,000 evaluations/s. */
typedef struct {
    char worker[IFM_NAME_MAX];
    uint64_t instance;    /* the worker process (its start, ms): the counters restart with a new one */
    uint64_t evaluations; /* evaluations answered (a result or an explicit failure) */
    uint64_t failures;    /* of those, answered with a failure */
} ifm_worker_stats;
void ifm_worker_stats_encode(ifm_enc *e, const ifm_worker_stats *s);
int ifm_worker_stats_decode(const ifm_doc *doc, ifm_worker_stats *s, ifm_err *err);

/* icefarm/farm/stats (retained, from control): the farm's evaluations and
 * failures (summed from every worker's stats since control started), the
 * reserve requests waiting per kind, and the last IFM_STATS_BUCKETS buckets of
 * IFM_STATS_BUCKET_MS of evaluations and failures. */
#define IFM_STATS_BUCKETS 120    /* 10 minutes */
#define IFM_STATS_BUCKET_MS 5000 /* per bucket */
typedef struct {
    uint64_t epoch;   /* control's (its start): the totals count from there */
    uint64_t time_ms; /* when it was published */
    uint64_t evaluations, failures;
    char kinds[IFM_MAX_KINDS][IFM_KIND_MAX]; /* kinds with waiting reserve requests */
    uint32_t waiting[IFM_MAX_KINDS];         /* requests waiting, per kind */
    uint32_t waiting_boards[IFM_MAX_KINDS];  /* boards those requests ask for */
    size_t nkinds;
    uint64_t history_start_ms; /* start of bucket 0 (a multiple of bucket_ms) */
    uint64_t bucket_ms;
    uint32_t hist_evaluations[IFM_STATS_BUCKETS], hist_failures[IFM_STATS_BUCKETS];
    size_t nhistory; /* buckets, oldest first; the last one is still filling */
} ifm_farm_stats;
void ifm_farm_stats_encode(ifm_enc *e, const ifm_farm_stats *s);
int ifm_farm_stats_decode(const ifm_doc *doc, ifm_farm_stats *s, ifm_err *err);

/* icefarm/farm/worker/<id> (retained, from control; PROTOCOL.md 7.8): control's
 * verdict on a worker, the one that decides whether its boards are granted.
 * A worker's own state (7.4) says only whether its connection lives; a hung
 * worker (14.2) keeps its connection for up to 1.5 x keep-alive, and a worker
 * whose connection died may be in its grace (14.1). Published when the verdict
 * changes and for every known worker on control's connect. */
typedef enum {
    IFM_LIVE_ONLINE,
    IFM_LIVE_HUNG,
    IFM_LIVE_RECONNECTING,
    IFM_LIVE_OFFLINE
} ifm_live_state;
/* "online", "hung", "reconnecting", "offline". */
const char *ifm_live_state_name(ifm_live_state s);
#define IFM_LIVE_REASON_MAX 160
typedef struct {
    char worker[IFM_NAME_MAX];
    ifm_live_state state;
    uint64_t epoch;                   /* the worker's latest epoch control knows */
    uint64_t ctl_epoch;               /* control's (7.1): a verdict from an older control process is stale */
    uint64_t since_ms;                /* when control reached this verdict (its wall clock) */
    uint64_t until_ms;                /* reconnecting: the end of the grace (ms timestamp); else 0, not sent */
    char reason[IFM_LIVE_REASON_MAX]; /* why, in words; "" when online */
} ifm_worker_live;
void ifm_worker_live_encode(ifm_enc *e, const ifm_worker_live *l);
int ifm_worker_live_decode(const ifm_doc *doc, ifm_worker_live *l, ifm_err *err);

#endif
