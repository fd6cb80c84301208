/* The icefarm access policy, free of any Mosquitto type so that it can be
 * driven directly by unit tests (tests/security/test_acl_core.c, under ASan).
 * plugin.c is the thin Mosquitto glue around it. SECURITY.md describes the
 * policy in prose; keep the two in step.
 *
 * Roles (one per user, from the roles file):
 *   control    icefarm-ctl: publishes leases, availability, its state, client
 *              events and replies, worker commands; reads everything.
 *   worker     icefarm-wrk, username = worker id: publishes its own birth, its
 *              stats (retained) and,
 *              for the boards it owns, their state and events; reads its own
 *              worker topics and the commands of the boards it owns.
 *   client     a person or program using boards: publishes requests to control
 *              and commands to the boards it holds a lease on; reads its own
 *              client topics and the events of the boards it holds.
 *   operator   a client that also looks after the farm: control lets it reboot
 *              any leased board and delete any board (icefarm-role = operator
 *              on its requests); otherwise exactly what a client may do.
 *   gateway    the HTTP shim: publishes requests naming the client or operator
 *              it acts for (icefarm-client is kept), and commands to a board
 *              naming the board's lease holder; reads every client's events and
 *              the events of every leased board (it streams them to its callers).
 *   dashboard  reads the farm's public state; publishes nothing.
 * Every role reads the public state: icefarm/ctl/state, icefarm/farm/#,
 * icefarm/lease/+, icefarm/<serial>/state, icefarm/worker/+/state and
 * icefarm/worker/+/stats (a worker's evaluation counts, retained).
 *
 * State learnt from messages passing through the broker (acl_observe):
 *   leases      control's retained icefarm/lease/<serial> (empty = released)
 *   ownership   a board belongs to the worker whose birth lists it or whose
 *               state message for it names it; a board owned by a worker whose
 *               connection is gone may be claimed by another worker.
 */
#ifndef ICEFARM_ACL_H
#define ICEFARM_ACL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "icefarm/limits.h" /* IFM_NAME_MAX, IFM_SERIAL_MAX, IFM_MAX_SERIALS: the protocol's own limits */
#include "icefarm/names.h"  /* ifm_name_valid, ifm_serial_valid: the protocol's own name rules */

/* Same values as Mosquitto's MOSQ_ACL_*. */
#define ACL_READ 0x01
#define ACL_WRITE 0x02
#define ACL_SUBSCRIBE 0x04
#define ACL_UNSUBSCRIBE 0x08

#define ACL_PROP_CLIENT "icefarm-client"
#define ACL_PROP_ROLE "icefarm-role"
#define ACL_PROP_CONN                                                                                                  \
    "icefarm-conn" /* set by the plugin on every request: the connection's client id */ /* set by the plugin on every request: the acting client's role */

typedef enum {
    ROLE_NONE = 0,
    ROLE_CONTROL,
    ROLE_WORKER,
    ROLE_CLIENT,
    ROLE_GATEWAY,
    ROLE_DASHBOARD,
    ROLE_OPERATOR,
} acl_role;

typedef struct acl_state acl_state;

typedef void (*acl_log_fn)(int level, const char *msg);
#define ACL_LOG_INFO 0
#define ACL_LOG_WARNING 1
#define ACL_LOG_ERR 2

typedef struct {
    /* A lease is honoured until `until` + grace, even if control never clears it
     * (control dead). 0: leases end only when control clears them. */
    uint64_t lease_grace_ms;
    /* After a lease ends, events tagged with it still reach its holder until the
     * worker says `released` or this long passes (PROTOCOL.md 15.2). 0: 2000. */
    uint64_t drain_ms;
    /* Caps on learnt state, so a misbehaving peer cannot grow the broker without bound. */
    size_t max_leases, max_boards;
    acl_log_fn log;           /* NULL: silent */
    uint64_t (*now_ms)(void); /* wall clock in ms; NULL: CLOCK_REALTIME */
} acl_opts;

acl_state *acl_new(const acl_opts *opts);
void acl_free(acl_state *st);

/* Reads a roles file: one `user role` per line, '#' comments, blank lines.
 * Replaces the current roles only if the whole file is valid. Returns 0, or -1
 * with a reason (naming the line) in err. */
int acl_load_roles(acl_state *st, const char *path, char *err, size_t errlen);
acl_role acl_role_of(const acl_state *st, const char *user);
const char *acl_role_name(acl_role r);
int acl_role_parse(const char *s);
size_t acl_user_count(const acl_state *st);

/* At CONNECT, before the password is checked: 0 to go on (the password file
 * decides), -1 to refuse (why says why). Refuses users without a role, and
 * client ids that would take over another identity's connection: "wrk-<id>" is
 * the worker <id>'s alone, and a worker must use it; "icefarm-ctl" is control's;
 * and a client id in use by a connection of another user (see acl_seen). */
int acl_check_connect(const acl_state *st, const char *user, const char *client_id, char *why, size_t whylen);

/* One access decision for connection `conn` (may be NULL). SUBSCRIBE of a
 * filter with wildcards is allowed when the filter can match something the user
 * may read; what is actually delivered is then decided per message by READ.
 * SUBSCRIBE of an exact topic is decided as READ now. "$share/<group>/"
 * prefixes are looked through.
 *
 * Wills: Mosquitto 2.0 checks a Will only when it is about to publish it, with
 * the same WRITE check as a publish, and a Will skips MOSQ_EVT_MESSAGE (so the
 * identity on a request could not be rewritten). A WRITE from a connection that
 * has ended (acl_disconnect) is therefore a Will, and the only Wills allowed are
 * a worker's death notice on its own icefarm/worker/<id>/state, control's on
 * icefarm/ctl/state, a client's empty presence, and a lease holder's empty
 * icefarm/<serial>/usbip/<session>/c2s (the end of its tunnel session,
 * PROTOCOL.md 19.3). */
bool acl_check(acl_state *st, const void *conn, const char *user, int access, const char *topic, const void *payload,
               size_t len, bool retain);

/* A message accepted by the broker: learn leases and ownership from it.
 * `conn` and `conn_id` identify the publishing connection (pointer and client id). */
void acl_observe(acl_state *st, const char *user, const void *conn, const char *conn_id, const char *topic,
                 const void *payload, size_t len, bool retain);
/* A connection ended: a worker whose live connection this was no longer holds
 * its boards against other workers, and what the connection still "publishes"
 * is its Will. */
void acl_disconnect(acl_state *st, const void *conn, const char *conn_id);
/* An authenticated connection acted (subscribed, published): its client id is
 * now its user's until it ends, so nobody else can take its session over. */
void acl_seen(acl_state *st, const void *conn, const char *conn_id, const char *user);
/* A new connection authenticates (BASIC_AUTH): `conn` is a fresh connection,
 * even if the broker reuses the memory of one that ended. */
void acl_connect(acl_state *st, const void *conn);

/* What to do with the icefarm-client property of a message to icefarm/ctl/req/+
 * or icefarm/<serial>/cmd. */
typedef enum {
    ACL_REQ_PASS,    /* neither a request nor a board command: leave it alone */
    ACL_REQ_REPLACE, /* drop every icefarm-client property, add one = username */
    ACL_REQ_GATEWAY, /* keep one valid icefarm-client if present, else as REPLACE */
    ACL_REQ_HOLDER,  /* a gateway's board command: keep the one icefarm-client, which
                        must name the board's lease holder (acl_command_client_ok) */
    ACL_REQ_DENY,    /* refuse the message */
} acl_req_action;
/* `response_topic` may be NULL. A request's Response Topic must be under the
 * sender's own icefarm/client/<username>/, so nobody can make control publish
 * its reply on someone else's topic (a lease, a worker's commands...). */
acl_req_action acl_request_action(const acl_state *st, const char *user, const char *topic, const char *response_topic);
/* For icefarm/<serial>/cmd (PASS for anything else): a client's or operator's
 * command gets its own name (REPLACE; the write check already made sure it holds
 * the lease); a gateway's must name the holder (HOLDER). */
acl_req_action acl_command_action(const acl_state *st, const char *user, const char *topic);
/* May a gateway's command on `topic` act for `client`? Only for the lease holder. */
bool acl_command_client_ok(acl_state *st, const char *topic, const char *client);
/* May `user` name `client` on a request (gateway), i.e. is `client` a client or
 * an operator? */
bool acl_may_act_for(const acl_state *st, const char *client);

/* A client's presence topic icefarm/client/<name>/presence/<conn>: true, with
 * the two levels copied out. The plugin lets a connection write only its own
 * (<name> = its user, <conn> = its client id), and clears it when the
 * connection ends. */
bool acl_presence_topic(const char *topic, char *name, size_t namecap, char *conn, size_t conncap);
/* Whether a role's connections get a presence cleared by the broker when they end. */
bool acl_has_presence(const acl_state *st, const char *user);

/* The `event` name and `lease` tag of a board event (0 when untagged); the scan
 * stops as soon as both are found (encoders write them first). 0, or -1 if the
 * payload is not a readable map. */
int acl_decode_event_tag(const void *p, size_t len, char *event, size_t cap, uint64_t *lease);

/* For tests and logs. */
bool acl_lease_holder(acl_state *st, const char *serial, const char *client);
/* Whether events of `lease` on `serial` are still delivered to `client` after
 * the lease ended (the drain of PROTOCOL.md 15.2). */
bool acl_draining(acl_state *st, const char *serial, const char *client, uint64_t lease);
const char *acl_board_owner(const acl_state *st, const char *serial);

/* Decoders (strict, bounded), exposed for tests. Return 0 or -1. */
typedef struct {
    char serial[IFM_SERIAL_MAX];
    char client[IFM_NAME_MAX];
    char worker[IFM_NAME_MAX];
    uint64_t lease, until_ms;
} acl_lease;
int acl_decode_lease(const void *p, size_t len, acl_lease *out);

typedef struct {
    char serial[IFM_SERIAL_MAX];
    char worker[IFM_NAME_MAX];
    char state[16];
} acl_board_state;
int acl_decode_board_state(const void *p, size_t len, acl_board_state *out);

typedef struct {
    char worker[IFM_NAME_MAX];
    bool online;
    char (*serials)[IFM_SERIAL_MAX]; /* malloc'd; acl_worker_birth_free() */
    size_t nserials;
} acl_worker_birth;
int acl_decode_worker_birth(const void *p, size_t len, acl_worker_birth *out);
void acl_worker_birth_free(acl_worker_birth *b);

/* MQTT filter/filter overlap: can some topic match both? */
bool acl_filters_intersect(const char *a, const char *b);

#endif
