/* Getting a firmware image onto a board, as a small state machine:
 *
 *   WAIT_DEVICE --arrive--> (BOOTSEL? WRITING : TOUCHING)
 *   TOUCHING    --1200-baud touch, board re-enumerates as BOOTSEL--> WRITING
 *   WRITING     --UF2 written and verified--> REBOOTING
 *   REBOOTING   --arrives in the new firmware--> done
 *
 * One timer (the board's state timer) bounds the whole procedure, including the
 * reservation flashes the old worker could hang in forever. */
#include <errno.h>
#include <stdlib.h>

#include "icefarm/log.h"
#include "worker.h"

static void step(wrk_board *b);

static bool is_bootsel(const wrk_board *b)
{
    return b->vid == WRK_VID_RPI && b->pid == WRK_PID_BOOTSEL;
}

static void finish(wrk_board *b, bool ok, const char *why)
{
    flash_done_fn done = b->flash_done;
    b->fstep = FL_IDLE;
    b->flash_done = NULL;
    ifm_timer_cancel(b->w->loop, b->state_timer);
    b->state_timer = 0;
    if (done)
        done(b, ok, why);
}

static void on_timeout(ifm_loop *loop, void *arg)
{
    wrk_board *b = arg;
    b->state_timer = 0;
    static const char *const step[] = { "idle",
                                        "waiting for the board",
                                        "waiting for BOOTSEL",
                                        "writing the image",
                                        "waiting for the new firmware",
                                        "waiting for an earlier write to finish" };
    char why[120];
    snprintf(why, sizeof why, "flashing %s timed out while %s",
             b->image == FW_CUSTOM ? "custom firmware" : wrk_kind_name(b->image), step[b->fstep]);
    finish(b, false, why);
}

static void on_written(void *arg, int status, const char *reason)
{
    wrk_board *b = arg;
    /* One write per board is in flight at most (FL_SETTLING waits for it), so
     * the generation it was issued in says whether it is still the current one. */
    bool current = b->write_gen == b->gen && b->fstep == FL_WRITING;
    if (!current) {
        /* An earlier write we superseded: if it failed the board stays in
         * BOOTSEL and will not re-enumerate, so continue with the new image now. */
        if (b->fstep == FL_SETTLING && status != 0)
            step(b);
        return;
    }
    if (status != 0) {
        char why[160];
        snprintf(why, sizeof why, "writing %s failed: %s", wrk_kind_name(b->image), reason ? reason : "error");
        finish(b, false, why);
        return;
    }
    b->fstep = FL_REBOOTING; /* the board re-enumerates in the new firmware */
}

static void step(wrk_board *b)
{
    wrk_transport *t = b->w->t;
    if (!b->dev) {
        b->fstep = FL_WAIT_DEVICE;
        return;
    }
    if (is_bootsel(b)) {
        const wrk_image custom = { b->custom, b->custom_len, "" };
        const wrk_image *img = b->image == FW_CUSTOM ? &custom : &b->w->fw[b->image];
        b->write_gen = b->gen;
        b->fstep = FL_WRITING;
        if (t->ops->flash_uf2(t, b->dev, img->data, img->len, on_written, b))
            finish(b, false, "the bootloader refused the image");
        return;
    }
    if (b->touches >= 3) {
        finish(b, false, "the board ignores the 1200-baud touch (firmware without the pico-sdk reset?)");
        return;
    }
    b->touches++;
    b->fstep = FL_TOUCHING;
    if (t->ops->touch_1200(t, b->dev))
        IFM_WARN("serial=%s 1200-baud touch failed; waiting for the board", b->serial);
}

void wrk_flash_start(wrk_board *b, int image, flash_done_fn done)
{
    bool writing = b->fstep == FL_WRITING || b->fstep == FL_SETTLING;
    b->image = image;
    b->touches = 0;
    b->flash_done = done;
    wrk_board_arm(b, b->w->to.flash_ms, on_timeout);
    if (writing) {
        /* The bootloader is busy with the previous image: a second write would
         * be refused. Let it finish and reboot, then flash this one. */
        b->fstep = FL_SETTLING;
        return;
    }
    step(b);
}

void wrk_flash_on_arrive(wrk_board *b)
{
    switch (b->fstep) {
    case FL_REBOOTING:
        if (is_bootsel(b)) {
            /* The bootrom came back instead of the image: write it again. */
            step(b);
            return;
        }
        finish(b, true, NULL);
        return;
    case FL_WAIT_DEVICE:
    case FL_TOUCHING:
    case FL_SETTLING:
        step(b);
        return;
    default:
        return;
    }
}
