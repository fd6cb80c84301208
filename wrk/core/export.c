/* Kind usbip: a reserved board's whole USB device, exported to its holder by the
 * worker's USB/IP server (wrk/usbip/usbip.h).
 *
 * reserve   -> preparing: flash the default firmware, or the farm image named by
 *              the reserve args' `image` ("pulsecount", "variance")
 * flashed   -> reserved ("exported"): a fresh per-lease busid token, the export
 *              up, event `usbip exported` {busid, host, port} to the holder
 * leave     -> event `usbip detached` (the import, if any, was closed after its
 *              URBs were answered -ENODEV); the board stays reserved
 * arrive    -> the export serves the new enumeration, `usbip exported` again
 *              with the same busid: the holder simply attaches again
 * announce  -> (board command) the current event again, for a late holder program
 * release   -> the export and any connection end at once, a last `usbip
 *              detached` ("the lease ended"); the board is flashed back to the
 *              default firmware like every other kind
 *
 * While exported the worker keeps its hands off the board: no reflash on
 * re-enumeration, no test, no health check, no state timer. */
#include <stdlib.h>
#include <string.h>

#include "icefarm/log.h"
#include "usbip.h"
#include "worker.h"

static void emit_usbip(wrk_board *b, const char *name, const char *reason)
{
    wrk_ctx *w = b->w;
    const wrk_event ev = { .name = name,
                           .reason = reason,
                           .client = b->holder,
                           .busid = usbip_export_token(b->export),
                           .host = w->usbip_host,
                           .port = (uint32_t)w->usbip_port };
    wrk_emit(b, &ev);
}

static void export_up(wrk_board *b)
{
    usbip_export_set_device(b->export, b->dev);
    b->exported = true;
    wrk_board_set_state(b, IFM_BOARD_RESERVED, "exported");
    wrk_emit_state(b); /* `exported` changed even if state and reason did not */
    IFM_INFO("serial=%s client=%s usbip exported (%04x:%04x) at %s:%d", b->serial, b->holder, b->vid, b->pid,
             b->w->usbip_host, b->w->usbip_port);
    emit_usbip(b, "usbip exported", NULL);
}

void wrk_export_set_device(wrk_board *b, wrk_usbdev *dev)
{
    if (b->export)
        usbip_export_set_device(b->export, dev);
}

void wrk_export_resume(wrk_board *b)
{
    if (b->export)
        export_up(b);
}

void wrk_export_flashed(wrk_board *b, bool ok, const char *why)
{
    if (!ok) {
        wrk_board_broken(b, why);
        return;
    }
    if (!b->export) {
        char token[IFM_USBIP_TOKEN_LEN + 1];
        if (usbip_token_new(token) != 0 || !(b->export = usbip_export_new(b->w->usbip, b->serial, token, b->holder))) {
            wrk_board_broken(b, "cannot create the USB/IP export");
            return;
        }
    }
    export_up(b);
}

int wrk_export_reserve(wrk_board *b, const ifm_worker_cmd *cmd, char *err, size_t errlen)
{
    wrk_ctx *w = b->w;
    if (!w->usbip) {
        snprintf(err, errlen, "this worker does not offer kind usbip");
        return -1;
    }
    if (b->state != IFM_BOARD_READY) {
        snprintf(err, errlen, "board is %s, not ready", ifm_board_state_name(b->state));
        return -1;
    }
    int image = FW_DEFAULT;
    char name[32] = "";
    if (cmd->args && ifm_get_str(cmd->args, "image", false, name, sizeof name, NULL) == 0 && name[0]) {
        image = strcmp(name, "default") == 0 ? FW_DEFAULT : wrk_kind_parse(name);
        if (image < 0 || !w->fw[image].data) {
            snprintf(err, errlen, "no farm image \"%s\" on this worker (default, pulsecount, variance)", name);
            return -1;
        }
    }
    b->usbip = true;
    b->kind = image;
    snprintf(b->holder, sizeof b->holder, "%s", cmd->client);
    b->lease = cmd->lease;
    wrk_board_set_state(b, IFM_BOARD_PREPARING, NULL);
    wrk_flash_start(b, image, wrk_export_flashed);
    return 0;
}

void wrk_export_arrive(wrk_board *b)
{
    IFM_INFO("serial=%s client=%s usbip: back as %04x:%04x", b->serial, b->holder, b->vid, b->pid);
    export_up(b);
}

void wrk_export_leave(wrk_board *b)
{
    /* The transport completed every URB before reporting the leave: the import
     * closes now with nothing left in flight. */
    usbip_export_set_device(b->export, NULL);
    IFM_INFO("serial=%s client=%s usbip detached: the board re-enumerates or was unplugged", b->serial, b->holder);
    emit_usbip(b, "usbip detached", "device re-enumerating or unplugged");
    wrk_board_set_state(b, IFM_BOARD_RESERVED, "exported, device away");
}

void wrk_export_end(wrk_board *b, const char *why)
{
    if (b->export) {
        IFM_INFO("serial=%s client=%s usbip export ends (%s)", b->serial, b->holder, why);
        emit_usbip(b, "usbip detached", why); /* needs the token: before the free */
        usbip_export_free(b->export);
    }
    b->export = NULL;
    b->exported = false;
    b->usbip = false;
}

int wrk_export_unbind(wrk_board *b, char *err, size_t errlen)
{
    if (!b->export) {
        snprintf(err, errlen, "board is not exported (unbind is for kind usbip)");
        return -1;
    }
    IFM_INFO("serial=%s client=%s usbip unbind", b->serial, b->holder);
    usbip_export_unbind(b->export);
    return 0;
}

int wrk_export_announce(wrk_board *b, char *err, size_t errlen)
{
    if (!b->usbip) {
        snprintf(err, errlen, "board is not exported (announce is for kind usbip)");
        return -1;
    }
    if (!b->export)
        return 0; /* still preparing: `usbip exported` comes when it is up */
    if (b->dev)
        emit_usbip(b, "usbip exported", NULL);
    else
        emit_usbip(b, "usbip detached", "device re-enumerating or unplugged");
    return 0;
}
