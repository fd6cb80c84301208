/* libicefarm's insides, shared by the files of cli/lib only (never installed).
 * The public contract is in cli/include/icefarm/client.h. */
#ifndef ICEFARM_LIB_INTERNAL_H
#define ICEFARM_LIB_INTERNAL_H

#include "icefarm/client.h"
#include "icefarm/err.h"
#include "icefarm/log.h"
#include "icefarm/loop.h"
#include "icefarm/mqtt.h"
#include "icefarm/msg.h"

/* The public sizes are the protocol's: checked here, at compile time. */
_Static_assert(ICEFARM_SERIAL_MAX == IFM_SERIAL_MAX, "serial size");
_Static_assert(ICEFARM_NAME_MAX == IFM_NAME_MAX, "name size");
_Static_assert(ICEFARM_KIND_MAX == IFM_KIND_MAX, "kind size");
_Static_assert(ICEFARM_ID_MAX == IFM_ID_MAX, "id size");
_Static_assert(ICEFARM_BITSTREAM_SIZE == IFM_BITSTREAM_SIZE, "bitstream size");
_Static_assert(sizeof(((icefarm_result *)0)->error) == sizeof(((ifm_result *)0)->error), "result error size");
_Static_assert((int)ICEFARM_LOG_ERROR == (int)IFM_LOG_ERROR && (int)ICEFARM_LOG_DEBUG == (int)IFM_LOG_DEBUG,
               "log levels");
_Static_assert((int)ICEFARM_BOARD_GONE == (int)IFM_BOARD_GONE && (int)ICEFARM_BOARD_RESERVED == (int)IFM_BOARD_RESERVED,
               "board states");
_Static_assert((int)ICEFARM_VALUE_FAILED == (int)IFM_VALUE_FAILED && (int)ICEFARM_VALUE_PULSES == (int)IFM_VALUE_PULSES,
               "value types");

typedef struct handler {
    struct handler *next;
    char event[32]; /* "" = all */
    icefarm_event_cb cb;
    void *arg;
    bool dead; /* removed during dispatch; freed right after it */
} handler;

typedef struct watched {
    struct watched *next;
    char serial[IFM_SERIAL_MAX];
    ifm_board_state state;
} watched;

/* One request sent with icefarm_call_async. It lives until ifm_mqtt's reply
 * callback (answer, timeout or lost connection) or icefarm_close frees it; a
 * cancelled call stays in the list with no callback until then. */
typedef struct call {
    struct call *next;
    icefarm *f;
    uint64_t id;
    icefarm_reply_cb cb;
    void *arg;
    bool cancelled;
    char verb[24];
    bool waits;       /* a reserve with wait_ms: icefarm_cancel tells control (PROTOCOL.md 5.1) */
    uint8_t corr[16]; /* its correlation data */
} call;

struct icefarm {
    ifm_loop *loop;
    ifm_mqtt *mqtt;
    char name[IFM_NAME_MAX];
    char host[256];
    int port;
    /* How to make another connection as the same client (the USB/IP tunnel's,
     * which needs a Will of its own): malloc'd copies, NULL when unset. */
    char *user, *password, *cafile;
    bool tls;
    uint64_t timeout_ms;
    bool auto_extend;
    icefarm_log_cb log;
    void *log_arg;
    handler *handlers;
    int dispatching; /* event dispatch depth: handlers removed meanwhile are swept after */
    int in_cb;       /* user callbacks running: the waiting calls refuse (-EDEADLK) */
    bool stop;       /* icefarm_stop: the next wait returns -ECANCELED */
    bool closing;
    watched *watched;
    call *calls;
    uint64_t next_call_id;
    char bad_reply[200]; /* why the last malformed reply was rejected */
    icefarm_signal_cb sigcb;
    void *sigarg;
    /* What icefarm/ctl/state (retained) said: nothing yet (a broker that is
     * not an icefarm farm never says anything), online, offline. */
    enum {
        LIB_CTL_UNKNOWN,
        LIB_CTL_ONLINE,
        LIB_CTL_OFFLINE
    } ctl_state;
    unsigned connects; /* connections so far: the batch engine resends after a reconnect */
};

struct icefarm_reply {
    uint8_t *buf;
    size_t len;
    ifm_doc doc;
    ifm_reply_status st;
    char (*serials)[IFM_SERIAL_MAX];
    size_t nserials;
};

struct icefarm_event {
    ifm_event ev;
    const void *data;
    size_t len;
};

/* Logs through the handle's sink (opts.log, else ifm_log; f may be NULL: ifm_log).
 * Everything the library says goes this way, so an embedding program (the CLI,
 * the DHS) decides what reaches its user. */
void lib_log(const icefarm *f, icefarm_log_level level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define LIB_DEBUG(f, ...) lib_log((f), ICEFARM_LOG_DEBUG, __VA_ARGS__)
#define LIB_INFO(f, ...) lib_log((f), ICEFARM_LOG_INFO, __VA_ARGS__)
#define LIB_WARN(f, ...) lib_log((f), ICEFARM_LOG_WARN, __VA_ARGS__)
/* ifm_mqtt's log hook for connections the library opens (arg: the icefarm). */
void lib_mqtt_log(enum ifm_log_level level, const char *msg, void *arg);
/* A reply made from a copy of msgpack bytes; NULL (with why) when malformed. */
icefarm_reply *lib_reply_parse(const void *data, size_t len, char *why, size_t whylen);
/* The IFM_* reading of a public request (serials copied); -EINVAL with a reason. */
int lib_req_convert(const icefarm_req *in, ifm_ctl_req *out, char *reason, size_t reason_len);
/* Publishes a board command (icefarm/<serial>/cmd, QoS 1) carrying our client
 * name (the icefarm-client user property workers require); frees e. 0, -EINVAL,
 * -ENOTCONN, -ENOMEM. */
int lib_publish_cmd(icefarm *f, const char *serial, ifm_enc *e);
/* Runs one loop iteration as the waiting calls do. */
int lib_wait_once(icefarm *f, int max_ms);
/* icefarm_evaluate with `resend` (PROTOCOL.md 8.1, 14.1). */
int lib_evaluate(icefarm *f, const char *serial, const char *batch_id, const icefarm_file *files, size_t n,
                 bool resend);

#endif
