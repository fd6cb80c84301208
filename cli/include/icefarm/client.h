/* libicefarm: the C client library for an icefarm farm.
 *
 * A handle owns one MQTT connection and one event loop. Calls that wait for an
 * answer (icefarm_call, icefarm_run_until) run that loop, so event handlers fire
 * from inside them, always on the caller's thread: there are no library threads.
 *
 *   icefarm *f = icefarm_connect(&opts, err, sizeof err);
 *   icefarm_on(f, "results", on_results, ctx);
 *   ... icefarm_call(f, &req, ...) / icefarm_evaluate(...) / icefarm_run_until(...)
 *   icefarm_close(f);
 *
 * Identity: `name` is the client name leases are held under. In a secured farm the
 * broker replaces it with the authenticated username.
 */
#ifndef ICEFARM_CLIENT_H
#define ICEFARM_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "icefarm/loop.h"
#include "icefarm/msg.h"
#include "icefarm/mqtt.h"

typedef struct icefarm icefarm;

typedef struct {
    const char *broker; /* mqtt://HOST:PORT; NULL: $ICEFARM_BROKER or mqtt://127.0.0.1:1883 */
    const char *name;   /* client name; NULL: $ICEFARM_NAME or "<user>@<host>" */
    const char *user, *password, *cafile;
    uint64_t timeout_ms; /* for connecting and for each call; 0: 10 s */
    bool no_auto_extend; /* by default "reservation ending soon" extends the lease */
} icefarm_opts;

/* Connects (blocking, up to timeout_ms). NULL with a one-line reason on failure. */
icefarm *icefarm_connect(const icefarm_opts *opts, char *err, size_t errlen);
void icefarm_close(icefarm *f);
const char *icefarm_name(const icefarm *f);
ifm_loop *icefarm_loop(icefarm *f);
ifm_mqtt *icefarm_mqtt(icefarm *f);

/* A control reply: `st` is the outcome; `doc.root` the whole reply map. */
typedef struct {
    uint8_t *buf;
    size_t len;
    ifm_doc doc;
    ifm_reply_status st;
} icefarm_reply;

/* Sends a control request and waits for its reply. Returns 0 when a reply
 * arrived (check reply->st.ok / st.code), -1 when none did (err says why:
 * control unreachable, timed out, or a malformed reply). */
int icefarm_call(icefarm *f, const ifm_ctl_req *req, const void *args, size_t args_len, icefarm_reply *reply, char *err,
                 size_t errlen);
void icefarm_reply_free(icefarm_reply *reply);
/* Sends a control request without waiting (safe inside event handlers); the
 * reply is logged if it is a refusal. */
int icefarm_send(icefarm *f, const ifm_ctl_req *req);
/* Reads reply->doc's "serials" (strings or {serial,...} maps) into a malloc'd array. */
size_t icefarm_reply_serials(const icefarm_reply *reply, char (**serials)[IFM_SERIAL_MAX]);

/* Event handlers, per event name ("initialized", "results", "failure",
 * "reservation end", "reservation ending soon", "error", ...), or NULL for all.
 * Handlers run in registration order. `ev` and its results are valid only
 * during the call. */
typedef void (*icefarm_event_cb)(icefarm *f, const ifm_event *ev, void *arg);
int icefarm_on(icefarm *f, const char *event, icefarm_event_cb cb, void *arg);
/* Removes every handler registered with this callback and arg. */
void icefarm_off(icefarm *f, icefarm_event_cb cb, void *arg);

/* Subscribes to a board's events (and retained state). Boards that were reserved
 * through this handle are watched automatically. */
int icefarm_watch(icefarm *f, const char *serial);
/* The last board state seen for a watched serial (IFM_BOARD_GONE if none). */
ifm_board_state icefarm_board_state(icefarm *f, const char *serial);

/* Queues bitstreams on a reserved board (one MQTT message). */
int icefarm_evaluate(icefarm *f, const char *serial, const char *batch_id, const ifm_file *files, size_t n);

/* Runs the loop until done(arg) is true, timeout_ms passes (returns -1), or the
 * connection is lost for good. timeout_ms 0: no timeout. */
int icefarm_run_until(icefarm *f, bool (*done)(void *arg), void *arg, uint64_t timeout_ms);

/* Convenience wrappers over icefarm_call. They return 0 on success, or -1 with a
 * reason (control's refusal or the transport error) in err. */
int icefarm_reserve(icefarm *f, uint32_t amount, const char *kind, const void *args, size_t args_len, uint64_t wait_ms,
                    char (**serials)[IFM_SERIAL_MAX], size_t *n, char *err, size_t errlen);
int icefarm_end_all(icefarm *f, size_t *n_ended, char *err, size_t errlen);

/* Per-kind reservations with the original clients' arguments.
 * pulsecount: results are pulse counts (IFM_VALUE_PULSES).
 * variance:   results are the VarMax fitness (IFM_VALUE_FITNESS), or with
 *             send_waveform the fitness and the 500 ADC samples (IFM_VALUE_WAVEFORM).
 * flush_interval_s / flush_at: when the worker sends batched results (every N s,
 * and when the queue is down to `flush_at` bitstreams); 0 keeps the defaults (10, 25). */
int icefarm_reserve_pulsecount(icefarm *f, uint32_t amount, uint32_t flush_interval_s, uint32_t flush_at,
                               uint64_t wait_ms, char (**serials)[IFM_SERIAL_MAX], size_t *n, char *err, size_t errlen);
int icefarm_reserve_variance(icefarm *f, uint32_t amount, bool send_waveform, uint32_t flush_interval_s,
                             uint32_t flush_at, uint64_t wait_ms, char (**serials)[IFM_SERIAL_MAX], size_t *n,
                             char *err, size_t errlen);

#endif
