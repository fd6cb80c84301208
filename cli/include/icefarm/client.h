/* libicefarm: the C client library for an icefarm farm (see icefarm/icefarm.h
 * for the overview and the list of headers).
 *
 * Threads: there are none inside the library. A handle (icefarm *) is used from
 * one thread at a time; every callback runs on the thread that is driving the
 * handle's loop (icefarm_run_once, icefarm_run_until, icefarm_call, ...), never
 * concurrently with another callback of the same handle. Different handles are
 * independent and may live on different threads.
 *
 * Re-entrancy: inside any callback of a handle you may call every function of
 * that handle that does not wait (icefarm_call_async, icefarm_cancel,
 * icefarm_evaluate, icefarm_flash, icefarm_on/off, icefarm_watch, icefarm_stop,
 * the accessors). The waiting functions (icefarm_call, the reserve helpers,
 * icefarm_end_all, icefarm_run_until, icefarm_batch_run) return -EDEADLK there
 * instead of running the loop recursively. icefarm_close is never allowed inside
 * a callback of the handle it closes.
 *
 * Errors: functions that can fail return 0 or a negative errno value
 * (-ETIMEDOUT, -ENOTCONN, ...); icefarm_strerror() names it. Where a human
 * reason adds to the code (what control said, which broker refused us), the
 * function also takes a `reason` buffer of `reason_len` bytes, which may be NULL;
 * it is written only on failure, always NUL-terminated. (The same convention as
 * all of icefarm: the codes and their names are icefarm/err.h's inside the tree.)
 *
 * Strings the library returns (names, serials, reasons) are owned by the object
 * they come from and valid as long as it is, unless stated otherwise.
 */
#ifndef ICEFARM_CLIENT_H
#define ICEFARM_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Marks the exported functions; everything else in libicefarm.so is hidden. */
#define ICEFARM_API __attribute__((visibility("default")))

/* Sizes of the fixed string fields below, including the NUL (PROTOCOL.md). */
#define ICEFARM_SERIAL_MAX 64
#define ICEFARM_NAME_MAX 128
#define ICEFARM_KIND_MAX 32
#define ICEFARM_ID_MAX 96
/* An iCE40UP5K bitstream is exactly this long. */
#define ICEFARM_BITSTREAM_SIZE 104090u

typedef struct icefarm icefarm;

/* The library's version, "MAJOR.MINOR.PATCH". Static storage. */
ICEFARM_API const char *icefarm_version(void);
/* A static description of an error code (negative errno or 0). Never NULL. */
ICEFARM_API const char *icefarm_strerror(int err);

/* ---- connecting ---- */

typedef enum {
    ICEFARM_LOG_DEBUG,
    ICEFARM_LOG_INFO,
    ICEFARM_LOG_WARN,
    ICEFARM_LOG_ERROR
} icefarm_log_level;

/* Receives one log line per event (a connection lost and retried, a refusal
 * nobody waited for, a malformed message ignored). `msg` has no timestamp and
 * no newline and is valid only during the call. Called on the loop's thread,
 * like every callback; it must not call back into the handle. */
typedef void (*icefarm_log_cb)(icefarm_log_level level, const char *msg, void *arg);

/* Zero-initialize, then set what you need: every zero field has a default.
 * The library copies what it needs; the struct and its strings may be freed
 * after icefarm_connect returns. */
typedef struct {
    const char *broker; /* mqtt://HOST:PORT or mqtts://HOST:PORT; NULL: $ICEFARM_BROKER or mqtt://127.0.0.1:1883 */
    const char *name;   /* client name leases are held under; NULL: $ICEFARM_NAME, the user, or "<login>@<host>" */
    const char *user, *password, *cafile; /* NULL: $ICEFARM_USER, $ICEFARM_PASSWORD, $ICEFARM_CAFILE */
    uint64_t timeout_ms;                  /* for connecting, and the default for each call; 0: 10 s */
    bool no_auto_extend;                  /* by default "reservation ending soon" extends the lease */
    /* Log lines; NULL: stderr, one timestamped line each, at the level set by
     * $ICEFARM_LOG_LEVEL (debug, info, warn, error; default info), the format
     * every icefarm program uses. */
    icefarm_log_cb log;
    void *log_arg;
} icefarm_opts;

/* Connects to the broker, waiting at most opts->timeout_ms. On success *out is
 * a new handle owned by the caller (release it with icefarm_close) and 0 is
 * returned. Errors: -EINVAL (bad name or broker address), -EACCES (the broker
 * refused our credentials), -ENOTCONN (no broker answered in time), -ENOMEM.
 * In a secured farm the broker replaces `name` with the authenticated user. */
ICEFARM_API int icefarm_connect(const icefarm_opts *opts, icefarm **out, char *reason, size_t reason_len);
/* Disconnects cleanly and frees the handle; no event handler runs from inside it. Every request still pending has
 * its callback called with -ECANCELED first (from inside icefarm_close). Batches
 * made on the handle must be freed before. NULL is a no-op. */
ICEFARM_API void icefarm_close(icefarm *f);
/* The client name in use (after defaults). Valid until icefarm_close. */
ICEFARM_API const char *icefarm_name(const icefarm *f);
/* Whether the broker connection is up right now (it reconnects by itself). */
ICEFARM_API bool icefarm_connected(const icefarm *f);

/* ---- driving the loop ----
 *
 * A handle owns one event loop (its broker socket and timers). Either let the
 * library run it (icefarm_run_until and the calls that wait), or
 * embed it in your own loop, which is what a gateway that must never block does:
 *
 *   fd = icefarm_fd(f);                        // once; stable for the handle's life
 *   loop: poll fd for reading, at most icefarm_timeout(f) ms (-1: no limit),
 *         then icefarm_run_once(f, 0);         // handles what is ready, never waits
 *
 * Ask icefarm_timeout again after every call into the library: new requests
 * and timers change it. */

/* An fd (epoll) that is readable whenever the handle has something to do. Owned
 * by the handle; do not read or close it. -errno if it cannot be created. */
ICEFARM_API int icefarm_fd(icefarm *f);
/* Milliseconds until the handle's next timer (keep-alive, a request's timeout),
 * 0 if one is due now, -1 if none. */
ICEFARM_API int icefarm_timeout(const icefarm *f);
/* Handles whatever is ready, waiting at most timeout_ms for something to be
 * (0: do not wait, -1: until something happens). Returns 0 or -errno. */
ICEFARM_API int icefarm_run_once(icefarm *f, int timeout_ms);
/* Runs the loop until done(arg) is true (0), timeout_ms passes (-ETIMEDOUT;
 * 0: no timeout), or icefarm_stop is called (-ECANCELED). done may be NULL to
 * run until the timeout or icefarm_stop. -EDEADLK inside a callback. */
ICEFARM_API int icefarm_run_until(icefarm *f, bool (*done)(void *arg), void *arg, uint64_t timeout_ms);
/* Makes the innermost running wait (icefarm_run_until, icefarm_call, a reserve
 * helper, icefarm_batch_run) return -ECANCELED; a blocking call's request is
 * cancelled with it. When no wait is running, the next one returns -ECANCELED
 * at once. One stop ends one wait. Safe inside callbacks (not in a signal
 * handler: use icefarm_on_signals). */
ICEFARM_API void icefarm_stop(icefarm *f);
/* Delivers these signals (e.g. SIGINT, SIGTERM) through the handle's loop: they
 * are blocked in the calling thread and read from a signalfd, so cb is an
 * ordinary callback. For programs; a library embedding libicefarm leaves signals
 * to its application. Replaces any earlier set. */
typedef void (*icefarm_signal_cb)(icefarm *f, int signo, void *arg);
ICEFARM_API int icefarm_on_signals(icefarm *f, const int *signals, int n, icefarm_signal_cb cb, void *arg);

/* ---- requests to control (icefarm/ctl/req/<verb>, PROTOCOL.md section 3) ---- */

/* A request. Zero-initialize and set the verb and what it takes. The library
 * copies it when the call is made; nothing needs to outlive the call. */
typedef struct {
    const char *verb;           /* "available", "devices", "reserve", "reserve_serials", "extend", "extend_all",
                            "end", "end_all", "reboot", "delete", "status", "leases" (the caller's leases and
                            what ended them lately: read the reply with icefarm_reply_data, PROTOCOL.md 6.10) */
    uint32_t amount;            /* reserve */
    const char *kind;           /* reserve, reserve_serials; a filter for available/devices; NULL: none */
    const char *const *serials; /* reserve_serials, extend, end, reboot, delete */
    size_t nserials;
    const void *args; /* reserve*: the kind's arguments as one msgpack map (PROTOCOL.md); NULL: none */
    size_t args_len;
    uint64_t wait_ms;    /* reserve: wait this long for boards to come free (0: answer at once) */
    uint64_t duration_s; /* reserve*, extend*: lease length (0: control's default) */
    const char *tag;     /* reserve*: free text stored with the lease, shown by status (<= 127 bytes); NULL: none */
    bool set;            /* extend*: end the lease exactly duration_s from now, even if that is
                            earlier (without it an extension never shortens a lease) */
} icefarm_req;

/* Control's answer. Opaque; read it with the accessors below. */
typedef struct icefarm_reply icefarm_reply;

/* status 0: `reply` is control's answer (which may be a refusal: see
 * icefarm_reply_ok). Otherwise reply is NULL and status is -ETIMEDOUT (no
 * answer within the timeout), -ENOTCONN (the broker connection was lost),
 * -ECANCELED (icefarm_cancel or icefarm_close) or -EBADMSG (a malformed answer).
 * `reply` is borrowed: valid only during the call (icefarm_reply_dup keeps it). */
typedef void (*icefarm_reply_cb)(icefarm *f, int status, const icefarm_reply *reply, void *arg);

/* Sends a request and returns at once. On 0, cb is called exactly once, from
 * the loop (never from inside this call), with the answer or an error; *id
 * (when id is not NULL) names the request for icefarm_cancel. On an error
 * (-EINVAL: a bad request, with reason; -ENOTCONN: not connected right now;
 * -ENOMEM; -ESHUTDOWN: the handle is closing) cb is never called.
 * timeout_ms 0 means the handle's timeout, plus req->wait_ms for a waiting
 * reserve. cb may be NULL: the answer is dropped, and a refusal is logged.
 * Safe inside callbacks. */
ICEFARM_API int icefarm_call_async(icefarm *f, const icefarm_req *req, uint64_t timeout_ms, icefarm_reply_cb cb,
                                   void *arg, uint64_t *id, char *reason, size_t reason_len);
/* Cancels a pending request: its callback runs with -ECANCELED before this
 * returns, and a late answer is ignored. A reserve still waiting for boards
 * (wait_ms) is cancelled at control too (`cancel`, PROTOCOL.md 5.1), so it is
 * never granted afterwards. Control may still have acted on the request (a
 * cancelled reserve can already have reserved boards: they show up in "status"
 * and "leases" and expire with their lease). -ENOENT if the id is not pending (its
 * callback already ran). Safe inside callbacks, including the request's own. */
ICEFARM_API int icefarm_cancel(icefarm *f, uint64_t id);
/* The blocking form: sends the request and runs the loop until the answer,
 * which is returned in *reply (owned by the caller: icefarm_reply_free). 0 when
 * control answered (check icefarm_reply_ok), or the error as for the callback's
 * status, with a human reason. -EDEADLK inside a callback. */
ICEFARM_API int icefarm_call(icefarm *f, const icefarm_req *req, icefarm_reply **reply, char *reason,
                             size_t reason_len);

/* A copy of a borrowed reply, owned by the caller. NULL when out of memory. */
ICEFARM_API icefarm_reply *icefarm_reply_dup(const icefarm_reply *r);
/* Frees a reply from icefarm_call or icefarm_reply_dup; NULL is a no-op. */
ICEFARM_API void icefarm_reply_free(icefarm_reply *r);
/* Whether control did what was asked. */
ICEFARM_API bool icefarm_reply_ok(const icefarm_reply *r);
/* Control's code, HTTP style: 200 ok, 400 bad request, 403 not yours, 404 unknown
 * serial, 409 not enough boards, 503 unavailable. */
ICEFARM_API unsigned icefarm_reply_code(const icefarm_reply *r);
/* The same as a negative errno (icefarm's one mapping of HTTP-style codes):
 * 0, -EINVAL (400 and other 4xx), -EACCES (401), -EPERM (403), -ENOENT (404),
 * -EBUSY (409), -ETIMEDOUT (408, 504), -EMSGSIZE (413), -EAGAIN (429),
 * -ENOTSUP (501), -ENOTCONN (503: control unavailable), -ENOSPC (507), -EIO
 * (other 5xx). */
ICEFARM_API int icefarm_reply_errno(const icefarm_reply *r);
/* Control's reason for a refusal; "" when ok. */
ICEFARM_API const char *icefarm_reply_error(const icefarm_reply *r);
/* The serials the reply names ("serials": reserved, extended, ended...), in order. */
ICEFARM_API size_t icefarm_reply_nserials(const icefarm_reply *r);
/* The i-th of them, or NULL past the end. */
ICEFARM_API const char *icefarm_reply_serial(const icefarm_reply *r, size_t i);
/* A top-level unsigned integer field of the reply (e.g. "amount" of available).
 * 0, or -ENOENT when absent or not an unsigned integer. */
ICEFARM_API int icefarm_reply_uint(const icefarm_reply *r, const char *key, uint64_t *value);
/* The whole reply as control sent it: one msgpack map (PROTOCOL.md), for fields
 * the accessors do not cover. Owned by the reply. */
ICEFARM_API const void *icefarm_reply_data(const icefarm_reply *r, size_t *len);

/* ---- events (icefarm/client/<name>/event and watched boards' events) ---- */

/* An event. Opaque and borrowed: valid only during the handler's call. */
typedef struct icefarm_event icefarm_event;

/* Handlers per event name ("initialized", "results", "failure", "flashed",
 * "reservation end", "reservation ending soon", "error", ...), or NULL for all,
 * run in registration order. "error" also reports a board command the broker
 * refused (in a secured farm: a board we do not hold). */
typedef void (*icefarm_event_cb)(icefarm *f, const icefarm_event *ev, void *arg);
/* 0, -ENOMEM or -EINVAL (an event name longer than 31 bytes). */
ICEFARM_API int icefarm_on(icefarm *f, const char *event, icefarm_event_cb cb, void *arg);
/* Removes every handler registered with this callback and arg; a removed
 * handler is not called again, even later in the same dispatch. */
ICEFARM_API void icefarm_off(icefarm *f, icefarm_event_cb cb, void *arg);

ICEFARM_API const char *icefarm_event_name(const icefarm_event *ev);
ICEFARM_API const char *icefarm_event_serial(const icefarm_event *ev);   /* "" for client events without one */
ICEFARM_API const char *icefarm_event_batch_id(const icefarm_event *ev); /* "" unless results or a refused evaluate */
ICEFARM_API const char *icefarm_event_reason(const icefarm_event *ev);   /* "" when none */
/* The event's payload as sent (one msgpack map); NULL with *len 0 for the
 * "error" events the library makes from a broker's refusal. */
ICEFARM_API const void *icefarm_event_data(const icefarm_event *ev, size_t *len);

typedef enum {
    ICEFARM_VALUE_PULSES,   /* pulsecount: pulses in 1 s */
    ICEFARM_VALUE_FITNESS,  /* variance: the VarMax fitness */
    ICEFARM_VALUE_WAVEFORM, /* variance with send_waveform: fitness and the ADC samples */
    ICEFARM_VALUE_FAILED    /* not measured: see error */
} icefarm_value_type;

/* One bitstream's result. */
typedef struct {
    char id[ICEFARM_ID_MAX]; /* the file id given to icefarm_evaluate */
    icefarm_value_type type;
    int64_t pulses;
    double fitness;
    const uint16_t *samples; /* waveform: points into the caller's buffer (see below) */
    size_t nsamples;
    char error[120]; /* failed: why */
} icefarm_result;

/* Results carried by a "results" event (0 for other events). */
ICEFARM_API size_t icefarm_event_nresults(const icefarm_event *ev);
/* Decodes result i into *r. Waveform samples are copied into `samples` (up to
 * `cap`; r->nsamples says how many; NULL/0 to skip them). 0, -ERANGE past the
 * end, or -EBADMSG for a malformed entry. */
ICEFARM_API int icefarm_event_result(const icefarm_event *ev, size_t i, icefarm_result *r, uint16_t *samples,
                                     size_t cap);

/* ---- boards ---- */

typedef enum {
    ICEFARM_BOARD_FLASHING,  /* flashing the default firmware */
    ICEFARM_BOARD_TESTING,   /* self-test */
    ICEFARM_BOARD_READY,     /* free */
    ICEFARM_BOARD_PREPARING, /* loading the reserved kind's firmware */
    ICEFARM_BOARD_RESERVED,  /* ready for its holder's commands */
    ICEFARM_BOARD_BROKEN,
    ICEFARM_BOARD_GONE /* unplugged, or never seen */
} icefarm_board_state;

/* "flashing", "testing", ...; static storage. */
ICEFARM_API const char *icefarm_board_state_name(icefarm_board_state s);
/* Subscribes to a board's events and retained state. Boards reserved through
 * this handle are watched automatically. 0, -EINVAL (bad serial), -ENOMEM. */
ICEFARM_API int icefarm_watch(icefarm *f, const char *serial);
/* The last state seen for a watched board (ICEFARM_BOARD_GONE if none yet). */
ICEFARM_API icefarm_board_state icefarm_get_board_state(const icefarm *f, const char *serial);

/* A bitstream to evaluate; the library copies the bytes before returning. */
typedef struct {
    const char *id; /* names its result (unique within the batch), at most ICEFARM_ID_MAX - 1 bytes */
    const void *data;
    size_t len; /* ICEFARM_BITSTREAM_SIZE for an iCE40UP5K */
} icefarm_file;

/* Queues bitstreams on a reserved board (one message); results arrive as
 * "results" events carrying batch_id. 0, -EINVAL, -ENOTCONN, -ENOMEM. */
ICEFARM_API int icefarm_evaluate(icefarm *f, const char *serial, const char *batch_id, const icefarm_file *files,
                                 size_t n);
/* Flashes a UF2 image (at most 8 MiB) onto a reserved board; a "flashed" or an
 * "error" event follows. The board keeps the image until a reboot or the
 * lease's end. 0, -EINVAL, -ENOTCONN, -ENOMEM. */
ICEFARM_API int icefarm_flash(icefarm *f, const char *serial, const void *image, size_t len);

/* ---- conveniences over icefarm_call (they wait: -EDEADLK inside callbacks) ---- */

/* Reserves `amount` boards of `kind` (args: msgpack map or NULL), waiting up to
 * wait_ms for them to come free. On 0, *serials is a malloc'd array of *n
 * serials (free() it) and the boards are watched. On a refusal, control's code
 * as icefarm_reply_errno gives it (-EBUSY: not enough boards) and its reason. */
ICEFARM_API int icefarm_reserve(icefarm *f, uint32_t amount, const char *kind, const void *args, size_t args_len,
                                uint64_t wait_ms, char (**serials)[ICEFARM_SERIAL_MAX], size_t *n, char *reason,
                                size_t reason_len);
/* Per-kind reservations with the original clients' arguments.
 * pulsecount: results are pulse counts (ICEFARM_VALUE_PULSES).
 * variance:   results are the VarMax fitness (ICEFARM_VALUE_FITNESS), or with
 *             send_waveform the fitness and the 500 ADC samples (ICEFARM_VALUE_WAVEFORM).
 * flush_interval_s / flush_at: when the worker sends batched results (every N s,
 * and when the queue is down to `flush_at` bitstreams); 0 keeps the defaults (10, 25). */
ICEFARM_API int icefarm_reserve_pulsecount(icefarm *f, uint32_t amount, uint32_t flush_interval_s, uint32_t flush_at,
                                           uint64_t wait_ms, char (**serials)[ICEFARM_SERIAL_MAX], size_t *n,
                                           char *reason, size_t reason_len);
ICEFARM_API int icefarm_reserve_variance(icefarm *f, uint32_t amount, bool send_waveform, uint32_t flush_interval_s,
                                         uint32_t flush_at, uint64_t wait_ms, char (**serials)[ICEFARM_SERIAL_MAX],
                                         size_t *n, char *reason, size_t reason_len);
/* Ends every lease this client holds; *n_ended (may be NULL) says how many. */
ICEFARM_API int icefarm_end_all(icefarm *f, size_t *n_ended, char *reason, size_t reason_len);

#ifdef __cplusplus
}
#endif

#endif
