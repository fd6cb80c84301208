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

/* Why an import was refused (icefarm_wrk_usbip_imports_refused_total{reason}). */
typedef enum {
    USBIP_REFUSED_UNKNOWN_BUSID, /* ST_NODEV: a wrong or stale token */
    USBIP_REFUSED_BUSY,          /* ST_DEV_BUSY: another connection holds the import */
    USBIP_REFUSED_NOT_PRESENT,   /* ST_DEV_ERR: the board is re-enumerating */
    USBIP_REFUSED_ERROR,         /* ST_ERROR: the reply could not be made */
    USBIP_REFUSED_COUNT
} usbip_refusal;

/* The server's series (usbip_server_metrics); all NULL without a registry, and
 * NULL series are no-ops. Index [path]: 0 direct, 1 tunnel; [dir]: 0 out, 1 in. */
typedef struct {
    ifm_series *sessions[2], *sessions_total[2], *urbs[2], *bytes[2][2];
    ifm_series *refused[USBIP_REFUSED_COUNT];
    ifm_series *unlinks[2]; /* 0: cancelled (RET_UNLINK -ECONNRESET), 1: had completed (RET_UNLINK 0) */
} usbip_stats;

struct usbip_server {
    ifm_loop *loop;
    wrk_transport *t;
    ifm_tcp_listener *listener;
    usbip_export *exports;
    usbip_conn *conns;
    usbip_stats stats;
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
