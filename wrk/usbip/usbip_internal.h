/* Private to the USB/IP server:
 *   usbip_server.c  exports, tokens, the TCP listener (a carrier)
 *   usbip_conn.c    one connection: phases, the in-flight table, UNLINK, replies
 */
#ifndef ICEFARM_WRK_USBIP_INTERNAL_H
#define ICEFARM_WRK_USBIP_INTERNAL_H

#include "icefarm/tcp.h"
#include "icefarm/usbip.h"
#include "usbip.h"

struct usbip_export {
    usbip_server *s;
    usbip_export *next;
    char serial[WRK_SERIAL_MAX];
    char token[IFM_USBIP_TOKEN_LEN + 1];
    char holder[128];
    wrk_usbdev *dev;
    usbip_conn *conn; /* the connection that imported it, or NULL */
};

struct usbip_server {
    ifm_loop *loop;
    wrk_transport *t;
    ifm_tcp_listener *listener;
    usbip_export *exports;
    usbip_conn *conns;
};

/* usbip_server.c */
/* The export named by `token`, or NULL (constant time in the token's bytes). */
usbip_export *usbip_export_find(usbip_server *s, const char *token);

/* usbip_conn.c */
/* Close a connection from the server's side (export ended, device gone). */
void usbip_conn_close(usbip_conn *c, const char *why);
/* Close the carrier at once (io->abort) and free the connection. */
void usbip_conn_abort(usbip_conn *c);

#endif
