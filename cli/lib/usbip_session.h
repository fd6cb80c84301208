/* The USB/IP session's insides, shared by usbip_session.c (the CDC ACM logic),
 * usbip_open.c (the public open/close/list/import) and usbip_farm.c (farm
 * boards: their export events, the tunnel). Internal to libicefarm. */
#ifndef ICEFARM_LIB_USBIP_SESSION_H
#define ICEFARM_LIB_USBIP_SESSION_H

#include "icefarm/tcp.h"
#include "icefarm/usbip_client.h"
#include "usbip_conn.h"
#include "usbip_desc.h"
#include "usbip_tcp.h"

struct ctl_op;
struct wr;

typedef struct {
    usbc_urb urb; /* first: a usbc_urb * is one of these */
    icefarm_usbip *u;
    struct wr *w;
} usbc_urb_slot;

struct icefarm_usbip {
    icefarm *f;     /* NULL: a direct server on our own loop */
    ifm_loop *loop; /* f's, or own_loop */
    ifm_loop *own_loop;
    icefarm_usbip_opts o; /* its strings are not kept: see below */
    char host[256], port[16], busid[IFM_USBIP_BUSID_SIZE], serial[64];
    uint64_t timeout_ms, write_timeout_ms;
    icefarm_usbip_state st;
    char reason[300];
    int depth; /* user callbacks running */
    bool closing;

    usbc_conn *c;
    bool imported;
    int import_status;
    char import_why[256];
    unsigned gone_seq; /* bumped whenever the device or connection goes away */
    int open_status;
    char open_reason[400];

    /* what the descriptors said */
    usbc_device_desc ddesc;
    usbc_config cfg;
    uint8_t cfg_index;
    usbc_cdc_fn fn;

    /* control requests, one at a time */
    struct ctl_op *ctl_head, *ctl_tail;
    bool ctl_busy;
    usbc_urb_slot ctl;

    /* bulk IN */
    usbc_urb_slot *in;
    uint8_t *in_bufs;
    unsigned nin;
    uint32_t in_size;
    bool paused;
    uint8_t *rx;
    size_t rx_off, rx_len, rx_cap;

    /* bulk OUT */
    struct wr *wq;
    usbc_urb_slot out[2];

    icefarm_usbip_line_coding line, initial_line;
    bool dtr, rts;

    ifm_backoff bo;
    uint64_t retry_timer;
    icefarm_usbip_info info;
    icefarm_usbip_stats acc; /* of connections already gone */

    /* farm boards (usbip_farm.c) */
    bool farm_bound;
    int (*carrier_open)(icefarm_usbip *u, const usbc_conn_cbs *cbs, usbc_conn **out, char *why, size_t whylen);
    void (*farm_unbind)(icefarm_usbip *u);
    void *farm;
};

/* usbip_session.c */
/* On f's loop, else on `loop` (tests: a server on the same loop), else on a loop
 * of its own. */
int usbc_session_new(icefarm *f, ifm_loop *loop, const icefarm_usbip_opts *o, icefarm_usbip **out, char *reason,
                     size_t reason_len);
/* icefarm_usbip_open for a direct server, on the caller's loop (tests). */
int usbc_open_on_loop(ifm_loop *loop, const icefarm_usbip_opts *opts, bool wait, icefarm_usbip **out, char *reason,
                      size_t reason_len);
void usbc_session_free(icefarm_usbip *u);
/* Connects and imports from the loop (a 0 ms timer). */
void usbc_session_start(icefarm_usbip *u);
/* (Re)connects and imports now, to host/port/busid as they are. */
void usbc_session_connect(icefarm_usbip *u);
/* Over for good (CLOSED), with the status and reason a waiting open returns. */
void usbc_session_closed(icefarm_usbip *u, int status, const char *why);
void usbc_session_import_failed(icefarm_usbip *u, int st, const char *why);
/* Runs the loop until done(u, arg) or the timeout (0: none): 0, -ETIMEDOUT,
 * -EDEADLK inside callbacks, -ECANCELED (icefarm_stop). */
int usbc_session_wait(icefarm_usbip *u, bool (*done)(icefarm_usbip *u, void *arg), void *arg, uint64_t timeout_ms);

#endif
