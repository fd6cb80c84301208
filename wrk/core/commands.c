/* The state machine's way in: control's commands (reserve, release, reboot,
 * delete) and the holder's (evaluate, flash), each applied to its board, and
 * every refusal said to the client that has to hear it. The MQTT bridge only
 * decodes and calls these. */
#include <string.h>

#include "icefarm/log.h"
#include "worker.h"

static void refuse_reserve(wrk_board *b, const ifm_worker_cmd *cmd, const char *why)
{
    IFM_WARN("serial=%s client=%s cannot reserve: %s", b->serial, cmd->client, why);
    /* The client must hear, or it would wait for "initialized" forever; the
     * board and its holder (if any) stay as they are. */
    const wrk_event ev = { .name = "failure", .reason = why, .batch_id = NULL, .client = cmd->client };
    wrk_emit(b, &ev);
    wrk_emit_state(b); /* lets control see the lease is not being served */
}

void wrk_cmd_worker(wrk_ctx *w, const ifm_worker_cmd *cmd)
{
    wrk_board *b = wrk_board_get(w, cmd->serial, false);
    if (!b) {
        IFM_WARN("serial=%s control command for a board this worker does not have", cmd->serial);
        return;
    }
    char why[200] = "";
    switch (cmd->op) {
    case IFM_WOP_RESERVE:
        if (wrk_board_reserve(b, cmd, why, sizeof why))
            refuse_reserve(b, cmd, why);
        else
            IFM_INFO("serial=%s client=%s reserved as %s (lease %llu)", b->serial, cmd->client, cmd->kind,
                     (unsigned long long)cmd->lease);
        break;
    case IFM_WOP_RELEASE:
        wrk_board_release(b);
        break;
    case IFM_WOP_REBOOT:
        wrk_board_reboot(b);
        break;
    case IFM_WOP_DELETE:
        wrk_board_delete(b);
        break;
    default:
        break;
    }
}

static void refuse_for(wrk_board *b, const char *client, const char *why, const char *batch_id)
{
    IFM_WARN("serial=%s client=%s rejected command: %s", b->serial, client[0] ? client : "-", why);
    const wrk_event ev = { .name = "error", .reason = why, .batch_id = batch_id, .client = client };
    wrk_emit(b, &ev);
}

void wrk_cmd_refuse(wrk_board *b, const char *why, const char *batch_id)
{
    refuse_for(b, b->holder, why, batch_id);
}

void wrk_cmd_board(wrk_board *b, const ifm_board_cmd *cmd)
{
    char why[WRK_REASON_MAX] = "";
    /* Only the holder's commands run (PROTOCOL.md section 2): in the anonymous
     * farm an honest mistake (a wrong --serials, another --name) must not
     * corrupt someone else's run. The refusal names whose command it was, so
     * the holder's client can tell it is not about its own. */
    if (!cmd->client[0]) {
        refuse_for(b, "", "refused: the command carries no icefarm-client user property", cmd->batch_id);
        return;
    }
    if (b->holder[0] && strcmp(cmd->client, b->holder) != 0) {
        snprintf(why, sizeof why, "refused: the board is reserved by another client, not by %.90s", cmd->client);
        refuse_for(b, cmd->client, why, cmd->batch_id);
        return;
    }
    if (strcmp(cmd->op, "flash") == 0)
        wrk_board_flash_custom(b, cmd->image, cmd->image_len, why, sizeof why);
    else if (strcmp(cmd->op, "unbind") == 0)
        wrk_export_unbind(b, why, sizeof why);
    else if (strcmp(cmd->op, "announce") == 0)
        wrk_export_announce(b, why, sizeof why);
    else if (b->usbip)
        snprintf(why, sizeof why, "board is exported (kind usbip): evaluate needs kind pulsecount or variance");
    else
        wrk_upload_evaluate(b, cmd, why, sizeof why);
    if (why[0])
        wrk_cmd_refuse(b, why, cmd->batch_id);
}
