/* The broker-tunnel carrier of a USB/IP client connection (usbip_conn.h): the
 * same byte stream as TCP, carried on icefarm/<serial>/usbip/<session>/c2s and
 * s2c (PROTOCOL.md 19.3). Internal to libicefarm.
 *
 * Each carrier is one MQTT connection of its own, as the same client as the
 * handle, with a Will of an empty message on its c2s topic: when this process
 * dies or the carrier closes (the connection is dropped without DISCONNECT) the
 * broker ends the session for the worker. Whole PDUs per message, small ones
 * batched per loop turn up to 64 KiB, QoS 1 both ways. An empty s2c message ends
 * the connection (-ESHUTDOWN); so does losing the broker.
 *
 * Lifetime: the carrier belongs to its connection (usbc_conn_free closes it; the
 * MQTT connection is freed from the loop right after). Runs on the handle's loop. */
#ifndef ICEFARM_LIB_USBIP_TUNNEL_H
#define ICEFARM_LIB_USBIP_TUNNEL_H

#include "icefarm/client.h"
#include "usbip_conn.h"

#define USBC_TUNNEL_BATCH (64u * 1024u)

/* The stream itself, for a connection (below) or a relay (usbip_relay.c). */
typedef struct usbc_tstream usbc_tstream;
typedef struct {
    void (*on_up)(void *arg);                                    /* connected: writes go out from now */
    void (*on_data)(const uint8_t *data, size_t len, void *arg); /* whole PDUs from the worker */
    void (*on_end)(int status, const char *why, void *arg);      /* over; the stream is freed after */
} usbc_tstream_cbs;
/* NULL on failure, with why. Callbacks run from the loop, never inside a call. */
usbc_tstream *usbc_tstream_open(icefarm *f, const char *serial, const usbc_tstream_cbs *cbs, void *arg,
                                uint64_t timeout_ms, char *why, size_t whylen);
/* Queues one or more whole PDUs (sent from the loop, batched). 0 or -EPIPE/-ENOMEM. */
int usbc_tstream_write(usbc_tstream *t, const uint8_t *data, size_t len);
/* Ends the session (the Will: an empty c2s) and frees it; no callback after. */
void usbc_tstream_close(usbc_tstream *t);
const char *usbc_tstream_session(const usbc_tstream *t);

/* A connection to board `serial`'s USB/IP server through the broker. 0 or a
 * negative errno with `why`; a failure to connect ends it through the callbacks. */
int usbc_tunnel_open(icefarm *f, const char *serial, const usbc_conn_cbs *cbs, void *arg, uint64_t timeout_ms,
                     usbc_conn **out, char *why, size_t whylen);

#endif
