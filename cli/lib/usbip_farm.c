/* Farm boards for the USB/IP session (usbip_farm.h).
 *
 * A board held with kind usbip is exported by its worker, which announces where
 * on the board's event topic (PROTOCOL.md section 19): `usbip exported` {busid,
 * host, port} when the export is up and again after every re-enumeration (same
 * busid for the whole lease), `usbip detached` while the device is away. The
 * session watches the board, imports at once on every `usbip exported` (unless
 * it is already up on that very export), and ends when control says the lease
 * ended. A session opened after the export asks the worker to announce it again
 * (board command `announce`). */
#include "usbip_farm.h"

#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "usbip_host.h"
#include "usbip_tunnel.h"

static bool same_export(const icefarm_usbip *u, const ifm_event *ev, const char *port)
{
    return strcmp(u->busid, ev->busid) == 0 && strcmp(u->host, ev->host) == 0 && strcmp(u->port, port) == 0;
}

static void on_exported(icefarm *f, const icefarm_event *e, void *arg)
{
    (void)f;
    icefarm_usbip *u = arg;
    const ifm_event *ev = &e->ev;
    if (strcmp(ev->serial, u->serial) != 0 || !ev->busid[0])
        return;
    char port[16];
    snprintf(port, sizeof port, "%u", ev->port ? ev->port : ICEFARM_USBIP_PORT);
    bool live =
        u->c && (u->st == ICEFARM_USBIP_UP || u->st == ICEFARM_USBIP_NO_CDC || u->st == ICEFARM_USBIP_CONNECTING);
    if (live && same_export(u, ev, port))
        return; /* a repeat of the export we are on (an announce) */
    snprintf(u->busid, sizeof u->busid, "%s", ev->busid);
    /* a worker that advertises no host is reached where the broker is */
    snprintf(u->host, sizeof u->host, "%s", ev->host[0] ? ev->host : u->f->host);
    snprintf(u->port, sizeof u->port, "%s", port);
    LIB_DEBUG(u->f, "usbip serial=%s exported at %s:%s: importing", u->serial, u->host, u->port);
    ifm_backoff_reset(&u->bo);
    usbc_session_connect(u);
}

static void on_detached(icefarm *f, const icefarm_event *e, void *arg)
{
    (void)f;
    icefarm_usbip *u = arg;
    if (strcmp(e->ev.serial, u->serial) != 0)
        return;
    /* the connection ends by itself (the server closes it once the device's URBs
     * are answered); this says why, before it happens */
    LIB_DEBUG(u->f, "usbip serial=%s detached: %s", u->serial, e->ev.reason);
}

static void on_lease_end(icefarm *f, const icefarm_event *e, void *arg)
{
    (void)f;
    icefarm_usbip *u = arg;
    if (strcmp(e->ev.serial, u->serial) != 0)
        return;
    char why[200];
    snprintf(why, sizeof why, "the lease ended%s%s", e->ev.reason[0] ? ": " : "", e->ev.reason);
    usbc_session_closed(u, -ESHUTDOWN, why);
}

static void on_error(icefarm *f, const icefarm_event *e, void *arg)
{
    (void)f;
    icefarm_usbip *u = arg;
    if (strcmp(e->ev.serial, u->serial) != 0 || u->info.imports)
        return;
    /* a refused command before we ever imported: most likely not our board, or
     * not of kind usbip */
    if (strstr(e->ev.reason, "announce") || strstr(e->ev.reason, "not exported") ||
        strstr(e->ev.reason, "not the holder") || strstr(e->ev.reason, "not yours")) {
        char why[300];
        snprintf(why, sizeof why, "board %s refused: %s", u->serial, e->ev.reason);
        if (strstr(e->ev.reason, "not exported"))
            usbc_session_closed(u, -EPERM, why);
        else
            LIB_DEBUG(u->f, "usbip serial=%s %s", u->serial, why);
    }
}

static void unbind(icefarm_usbip *u)
{
    icefarm_off(u->f, on_exported, u);
    icefarm_off(u->f, on_detached, u);
    icefarm_off(u->f, on_lease_end, u);
    icefarm_off(u->f, on_error, u);
}

static int tunnel_carrier(icefarm_usbip *u, const usbc_conn_cbs *cbs, usbc_conn **out, char *why, size_t whylen)
{
    return usbc_tunnel_open(u->f, u->serial, cbs, u, u->timeout_ms, out, why, whylen);
}

int icefarm_usbip_announce(icefarm *f, const char *serial)
{
    if (!f || !serial)
        return -EINVAL;
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_board_op_encode(&e, "announce");
    return lib_publish_cmd(f, serial, &e);
}

int usbc_farm_bind(icefarm_usbip *u, char *reason, size_t reason_len)
{
    if (u->o.tunnel)
        u->carrier_open = tunnel_carrier;
    int rc = icefarm_watch(u->f, u->serial);
    if (rc)
        return ifm_failbuf(reason, reason_len, rc, "cannot watch board %s: %s", u->serial, icefarm_strerror(rc));
    u->farm_bound = true;
    u->busid[0] = '\0';
    if (icefarm_on(u->f, "usbip exported", on_exported, u) || icefarm_on(u->f, "usbip detached", on_detached, u) ||
        icefarm_on(u->f, "reservation end", on_lease_end, u) || icefarm_on(u->f, "error", on_error, u)) {
        unbind(u);
        return ifm_failbuf(reason, reason_len, -ENOMEM, "out of memory");
    }
    u->farm_unbind = unbind;
    rc = icefarm_usbip_announce(u->f, u->serial);
    if (rc) {
        unbind(u);
        return ifm_failbuf(reason, reason_len, rc, "cannot ask board %s for its export: %s", u->serial,
                           icefarm_strerror(rc));
    }
    snprintf(u->reason, sizeof u->reason, "waiting for board %s's `usbip exported`", u->serial);
    return 0;
}
