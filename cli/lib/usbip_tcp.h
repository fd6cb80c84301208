/* The TCP carrier of a USB/IP client connection (usbip_conn.h): a connection to
 * HOST:PORT through the TCP helper on the loop (icefarm/tcp.h: TCP_NODELAY,
 * keep-alive, a connect timeout). Internal to libicefarm.
 *
 * Lifetime: the carrier belongs to its connection: usbc_conn_free() closes and
 * frees it; when the peer closes, the connection hears usbc_conn_carrier_end().
 */
#ifndef ICEFARM_LIB_USBIP_TCP_H
#define ICEFARM_LIB_USBIP_TCP_H

#include "usbip_conn.h"

typedef struct usbc_tcp usbc_tcp;

/* A connection whose carrier is being connected (a failure to connect ends it
 * through the callbacks, from the loop). 0 or a negative errno with `why`. */
int usbc_tcp_open(ifm_loop *loop, const char *host, const char *port, const usbc_conn_cbs *cbs, void *arg,
                  uint64_t timeout_ms, usbc_conn **out, usbc_tcp **carrier, char *why, size_t whylen);
/* A duplicate of the socket (for the kernel's vhci_hcd, which takes over an
 * imported connection): the caller owns it. -errno if not connected. */
int usbc_tcp_dup_fd(const usbc_tcp *t);

#endif
