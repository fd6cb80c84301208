/* The USB/IP server's second carrier: the broker tunnel (PROTOCOL.md 19.3).
 *
 * A client that holds a board of kind usbip opens a session by publishing USB/IP
 * bytes on icefarm/<serial>/usbip/<session>/c2s; the worker answers on .../s2c.
 * Each session is one usbip_conn of the server, exactly like a TCP connection:
 * OP_REQ_IMPORT with the busid token, then URB PDUs. The broker gives the stream
 * TLS, passwords and the holder-only ACL, so a secured farm needs no open port.
 *
 * Framing: the server writes whole PDUs (usbip_conn never writes part of one),
 * and the tunnel batches what one turn of the loop wrote into one QoS 1 message
 * of at most IFM_USBIP_TUNNEL_BATCH bytes (a larger PDU goes alone), so no PDU is
 * ever split across messages. An empty message ends the session either way.
 *
 * Threading: the worker's loop only. Lifetime: usbip_tunnel_free() aborts every
 * session (their connections are freed without calling back); free the tunnel
 * before the server. Nothing here calls back into the caller.
 */
#ifndef ICEFARM_WRK_USBIP_TUNNEL_H
#define ICEFARM_WRK_USBIP_TUNNEL_H

#include <stddef.h>
#include <stdint.h>

#include "icefarm/loop.h"
#include "icefarm/mqtt.h"
#include "usbip.h"

#define IFM_USBIP_TUNNEL_BATCH (64u * 1024u)                   /* small PDUs are batched up to this */
#define IFM_USBIP_TUNNEL_MSG_MAX (1024u * 1024u + 64u * 1024u) /* one largest URB with its header */

typedef struct usbip_tunnel usbip_tunnel;

/* `m` publishes the s2c messages; both borrowed for the tunnel's life. */
usbip_tunnel *usbip_tunnel_new(usbip_server *s, ifm_loop *loop, ifm_mqtt *m);
void usbip_tunnel_free(usbip_tunnel *t);

/* A message on icefarm/<serial>/usbip/<session>/c2s (the caller has checked
 * nothing but the topic's shape). Opens the session on its first non-empty
 * message, feeds it, or ends it on an empty one. 0, or a negative errno for a
 * message refused (bad session name, oversized: the session, if any, ends). */
int usbip_tunnel_c2s(usbip_tunnel *t, const char *serial, const char *session, const uint8_t *payload, size_t len);

/* The same for a message as it came: `topic` is icefarm/<serial>/usbip/<session>/c2s. */
int usbip_tunnel_c2s_msg(usbip_tunnel *t, const char *topic, const uint8_t *payload, size_t len);

/* The worker's MQTT connection dropped: every session is over (their clients
 * learn it from the worker's birth). */
void usbip_tunnel_reset(usbip_tunnel *t);

#endif
