/* A board's lifecycle. The same code drives real and simulated boards: it only
 * sees the transport interface and the firmware's serial protocol.
 *
 * Each state arms at most one timer (wrk_board_arm); changing state cancels it,
 * so a stale timeout can never act on a later state (the old worker's bug). */
#include <stdlib.h>
#include <string.h>

#include "icefarm/log.h"
#include "uf2.h"
#include "worker.h"

static const char *const kind_names[FW_COUNT] = { "default", "pulsecount", "variance" };

int wrk_kind_parse(const char *name)
{
    for (int i = FW_PULSECOUNT; i < FW_COUNT; i++)
        if (strcmp(name, kind_names[i]) == 0)
            return i;
    return -1;
}

const char *wrk_kind_name(int kind)
{
    return kind >= 0 && kind < FW_COUNT ? kind_names[kind] : "?";
}

const char *wrk_board_kind(const wrk_board *b)
{
    if (b->usbip)
        return "usbip";
    return b->kind >= 0 ? wrk_kind_name(b->kind) : "";
}

void wrk_board_arm(wrk_board *b, uint64_t ms, ifm_timer_cb cb)
{
    ifm_timer_cancel(b->w->loop, b->state_timer);
    b->state_timer = ifm_timer_add(b->w->loop, ms, cb, b);
}

void wrk_board_set_state(wrk_board *b, ifm_board_state s, const char *reason)
{
    ifm_timer_cancel(b->w->loop, b->state_timer);
    b->state_timer = 0;
    b->gen++;
    bool changed = b->state != s || strcmp(b->reason, reason ? reason : "") != 0;
    ifm_board_state old = b->state;
    if (old != s || !b->state_since_ms)
        b->state_since_ms = ifm_wall_ms();
    b->state = s;
    snprintf(b->reason, sizeof b->reason, "%s", reason ? reason : "");
    if (!changed)
        return;
    if (s == IFM_BOARD_BROKEN)
        IFM_WARN("serial=%s client=%s %s -> broken: %s", b->serial, b->holder[0] ? b->holder : "-",
                 ifm_board_state_name(old), b->reason);
    else
        IFM_INFO("serial=%s client=%s %s -> %s%s%s", b->serial, b->holder[0] ? b->holder : "-",
                 ifm_board_state_name(old), ifm_board_state_name(s), reason ? ": " : "", reason ? reason : "");
    wrk_emit_state(b);
    if (old == IFM_BOARD_GONE || s == IFM_BOARD_GONE)
        wrk_emit_worker(b->w, true);
}

void wrk_board_close_cdc(wrk_board *b)
{
    if (b->cdc && b->dev)
        b->w->t->ops->cdc_close(b->w->t, b->dev);
    b->cdc = false;
    b->writing = false;
}

/* ---- testing: the default firmware must say so ---- */

static void on_test_timeout(ifm_loop *loop, void *arg)
{
    wrk_board *b = arg;
    b->state_timer = 0;
    wrk_board_close_cdc(b);
    wrk_board_broken(b, "default firmware did not answer");
}

static bool on_test_line(void *arg, const char *line, size_t len, bool truncated)
{
    wrk_board *b = arg;
    fw_line_info info;
    if (b->state != IFM_BOARD_TESTING || fw_classify(line, len, truncated, NULL, 0, &info) != FW_LINE_DEFAULT_FW)
        return true;
    wrk_board_close_cdc(b);
    b->failures = 0;
    wrk_board_set_state(b, IFM_BOARD_READY, NULL);
    return false;
}

static void on_test_rx(void *arg, const uint8_t *data, size_t len)
{
    wrk_board *b = arg;
    fw_lines_feed(&b->lines, data, len, on_test_line, b);
}

static void on_cdc_error(void *arg, const char *reason)
{
    wrk_board *b = arg;
    IFM_WARN("serial=%s serial channel error: %s", b->serial, reason);
    wrk_board_close_cdc(b);
    if (b->state == IFM_BOARD_TESTING)
        wrk_board_broken(b, reason);
    else if (b->state == IFM_BOARD_RESERVED || b->state == IFM_BOARD_PREPARING)
        wrk_board_reboot(b);
}

static void start_test(wrk_board *b)
{
    wrk_board_set_state(b, IFM_BOARD_TESTING, NULL);
    wrk_board_arm(b, b->w->to.test_ms, on_test_timeout);
    if (!b->dev)
        return; /* the arrival starts the probe */
    fw_lines_init(&b->lines);
    if (b->w->t->ops->cdc_open(b->w->t, b->dev, on_test_rx, on_cdc_error, b) == 0)
        b->cdc = true;
}

/* ---- flashing the default firmware ---- */

static void on_default_flashed(wrk_board *b, bool ok, const char *why)
{
    if (!ok) {
        wrk_board_broken(b, why);
        return;
    }
    start_test(b);
}

void wrk_board_flash_default(wrk_board *b)
{
    wrk_export_end(b, "the lease ended");
    wrk_upload_free(b);
    free(b->custom);
    b->custom = NULL;
    b->custom_len = 0;
    b->custom_running = false;
    b->kind = -1;
    b->holder[0] = '\0';
    b->lease = 0;
    wrk_board_close_cdc(b);
    wrk_board_set_state(b, IFM_BOARD_FLASHING, NULL);
    wrk_flash_start(b, FW_DEFAULT, on_default_flashed);
}

/* ---- broken: quarantine with back-off ---- */

static void on_retry(ifm_loop *loop, void *arg)
{
    wrk_board *b = arg;
    b->state_timer = 0;
    if (b->state != IFM_BOARD_BROKEN)
        return;
    if (b->kind >= 0) {
        /* Still leased: try to bring the kind back for the holder. */
        wrk_board_reboot(b);
        return;
    }
    IFM_INFO("serial=%s retrying a broken board (attempt %d)", b->serial, b->failures + 1);
    wrk_board_flash_default(b);
}

void wrk_board_broken(wrk_board *b, const char *why)
{
    b->failures++;
    wrk_board_close_cdc(b);
    bool held = b->kind >= 0 && b->holder[0];
    if (held) {
        /* The holder hears at once; every evaluation it queued gets an explicit
         * failure so nothing is silently lost. */
        wrk_upload_fail_all(b, why);
        wrk_emit_event(b, "failure", why);
    }
    wrk_board_set_state(b, IFM_BOARD_BROKEN, why);
    uint64_t delay = b->w->to.retry_min_ms;
    for (int i = 1; i < b->failures && delay < b->w->to.retry_max_ms; i++)
        delay *= 2;
    if (delay > b->w->to.retry_max_ms)
        delay = b->w->to.retry_max_ms;
    if (b->dev)
        wrk_board_arm(b, delay, on_retry);
}

/* ---- reservation ---- */

static void on_kind_flashed(wrk_board *b, bool ok, const char *why)
{
    if (!ok) {
        wrk_board_broken(b, why);
        return;
    }
    wrk_upload_start(b);
}

static uint64_t arg_uint(const msgpack_object *args, const char *key, uint64_t def)
{
    uint64_t v = def;
    double d;
    if (!args)
        return def;
    if (ifm_get_uint(args, key, false, 0, UINT32_MAX, &v, NULL) < 0 &&
        ifm_get_double(args, key, false, &d, NULL) == 0 && d >= 0 && d < 4e9)
        v = (uint64_t)d;
    return v;
}

int wrk_board_reserve(wrk_board *b, const ifm_worker_cmd *cmd, char *err, size_t errlen)
{
    if (strcmp(cmd->kind, "usbip") == 0)
        return wrk_export_reserve(b, cmd, err, errlen);
    int kind = wrk_kind_parse(cmd->kind);
    if (kind < 0 || !b->w->offers[kind]) {
        snprintf(err, errlen, "this worker does not offer kind %s", cmd->kind);
        return -1;
    }
    if (b->state != IFM_BOARD_READY) {
        snprintf(err, errlen, "board is %s, not ready", ifm_board_state_name(b->state));
        return -1;
    }
    /* The original firmware clients' defaults: flush every 10 s or at 25 left. */
    b->flush_interval_ms = arg_uint(cmd->args, "flush_interval_seconds", 10) * 1000;
    b->flush_at = (uint32_t)arg_uint(cmd->args, "flush_at_bitstreams_remaining", 25);
    bool wave = false;
    b->send_waveform = cmd->args && ifm_get_bool(cmd->args, "send_waveform", false, &wave, NULL) == 0 && wave;
    b->kind = kind;
    snprintf(b->holder, sizeof b->holder, "%s", cmd->client);
    b->lease = cmd->lease;
    b->reboots = 0;
    wrk_board_set_state(b, IFM_BOARD_PREPARING, NULL);
    wrk_flash_start(b, kind, on_kind_flashed);
    return 0;
}

void wrk_board_release(wrk_board *b)
{
    if (b->kind < 0 && b->state != IFM_BOARD_BROKEN)
        return;
    IFM_INFO("serial=%s client=%s released", b->serial, b->holder[0] ? b->holder : "-");
    wrk_upload_flush(b); /* results measured before the end still belong to the holder */
    wrk_upload_stop(b, false);
    b->failures = 0;
    if (b->state == IFM_BOARD_GONE) {
        /* Unplugged: nothing to flash; it starts over when it is plugged back in. */
        wrk_export_end(b, "the lease ended");
        b->kind = -1;
        b->holder[0] = '\0';
        return;
    }
    /* Also when a flash is in flight (released while preparing): starting the
     * default flash supersedes it. */
    wrk_board_flash_default(b);
}

/* Control deleted the board (an operator, or a free board's owner): whatever it
 * was doing, it starts over as a fresh board. */
void wrk_board_delete(wrk_board *b)
{
    IFM_INFO("serial=%s deleted by control: starting over", b->serial);
    wrk_export_end(b, "the board was deleted");
    wrk_upload_free(b);
    b->kind = -1;
    b->holder[0] = '\0';
    b->failures = 0;
    if (b->dev)
        wrk_board_flash_default(b);
    else
        wrk_board_set_state(b, IFM_BOARD_GONE, "deleted");
}

static void on_custom_flashed(wrk_board *b, bool ok, const char *why)
{
    if (!ok) {
        wrk_board_broken(b, why);
        return;
    }
    /* The board now runs the holder's firmware: the farm stays out of its way
     * (no serial protocol) until a reboot brings the kind back or the lease ends. */
    b->custom_running = true;
    if (b->usbip) {
        wrk_emit_event(b, "flashed", NULL);
        wrk_export_resume(b); /* exported again, now running the holder's image */
        return;
    }
    wrk_board_set_state(b, IFM_BOARD_RESERVED, "custom firmware");
    wrk_emit_event(b, "flashed", NULL);
}

int wrk_board_flash_custom(wrk_board *b, const uint8_t *image, size_t len, char *err, size_t errlen)
{
    if (b->kind < 0 || b->state != IFM_BOARD_RESERVED) {
        snprintf(err, errlen, "board is %s; flash needs a reserved, initialized board", ifm_board_state_name(b->state));
        return -1;
    }
    uf2_image parsed;
    char why[UF2_REASON_MAX];
    if (uf2_parse(image, len, UF2_TARGET_RP2350, &parsed, why)) {
        snprintf(err, errlen, "not a UF2 image for the RP2350: %s", why);
        return -1;
    }
    uf2_image_free(&parsed);
    uint8_t *copy = malloc(len);
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(copy, image, len);
    free(b->custom);
    b->custom = copy;
    b->custom_len = len;
    IFM_INFO("serial=%s client=%s flashing custom firmware (%zu bytes)", b->serial, b->holder, len);
    wrk_upload_stop(b, true);
    wrk_board_set_state(b, IFM_BOARD_PREPARING, "flashing custom firmware");
    wrk_flash_start(b, FW_CUSTOM, on_custom_flashed);
    return 0;
}

/* Reflash the kind's firmware, keeping the queue and the unsent results (as the
 * original did), then say "initialized" again. */
void wrk_board_reboot(wrk_board *b)
{
    if (b->kind < 0)
        return;
    b->reboots++;
    b->custom_running = false;
    IFM_INFO("serial=%s client=%s rebooting (reflash %s, %zu queued)", b->serial, b->holder, wrk_kind_name(b->kind),
             b->queued + (b->current != NULL));
    wrk_upload_stop(b, true);
    wrk_board_set_state(b, IFM_BOARD_PREPARING, "rebooting");
    wrk_flash_start(b, b->kind, b->usbip ? wrk_export_flashed : on_kind_flashed);
}

/* ---- hotplug ---- */

void wrk_board_arrive(wrk_board *b, wrk_usbdev *dev, const wrk_usbinfo *info)
{
    b->dev = dev;
    b->vid = info->vid;
    b->pid = info->pid;
    if (b->fstep != FL_IDLE) {
        wrk_flash_on_arrive(b);
        return;
    }
    if (b->export && b->state == IFM_BOARD_RESERVED) {
        wrk_export_arrive(b); /* the holder's doing: the export follows, hands off */
        return;
    }
    switch (b->state) {
    case IFM_BOARD_GONE:
        IFM_INFO("serial=%s arrived (%04x:%04x)", b->serial, info->vid, info->pid);
        if (b->kind >= 0)
            wrk_board_reboot(b); /* replugged while still leased: bring the kind back */
        else
            wrk_board_flash_default(b);
        break;
    case IFM_BOARD_TESTING:
        start_test(b);
        break;
    case IFM_BOARD_BROKEN:
        if (!b->state_timer)
            wrk_board_arm(b, b->w->to.retry_min_ms, on_retry);
        break;
    default:
        /* An arrival we did not cause (a board that reset itself): start over. */
        if (b->kind >= 0)
            wrk_board_reboot(b);
        else
            wrk_board_flash_default(b);
        break;
    }
}

void wrk_board_leave(wrk_board *b)
{
    b->dev = NULL;
    b->cdc = false; /* the transport closed it silently */
    b->writing = false;
    if (b->fstep != FL_IDLE) {
        if (b->export)
            wrk_export_set_device(b, NULL); /* that enumeration is over */
        return;                             /* re-enumeration is part of flashing */
    }
    if (b->export && b->state == IFM_BOARD_RESERVED) {
        wrk_export_leave(b);
        return;
    }
    /* Unplugged: out of the farm at once, and the holder is told. */
    IFM_WARN("serial=%s client=%s disappeared while %s", b->serial, b->holder[0] ? b->holder : "-",
             ifm_board_state_name(b->state));
    if (b->kind >= 0 && b->holder[0]) {
        wrk_upload_stop(b, true);
        wrk_upload_fail_all(b, "board disconnected");
        wrk_emit_event(b, "failure", "board disconnected");
    }
    wrk_board_set_state(b, IFM_BOARD_GONE, "disconnected");
}
