/* Flashing a board in BOOTSEL over PICOBOOT, the RP2040/RP2350 bootrom's vendor
 * interface (class 0xff, one bulk OUT and one bulk IN endpoint). The wire
 * format (command block, status, ids, codes) is fw/picoboot.h, shared with the
 * simulated bootrom (sim/sim_picoboot.c).
 *
 * A command is a 32-byte packet on the OUT endpoint (magic 0x431fd10b, token,
 * id, argument size, transfer length, 16 argument bytes), then dTransferLength
 * bytes on the IN (id bit 7 set) or OUT endpoint, then an acknowledgement in
 * the opposite direction: a zero-length packet read from IN, or (after an IN
 * command) a 1-byte write to OUT, as picotool does. A failing command stalls the
 * endpoint; the vendor control request GET_CMD_STATUS (0x42) then tells why.
 *
 * The sequence: EXCLUSIVE_ACCESS(1), EXIT_XIP, FLASH_ERASE of the 4 KiB sectors
 * the image covers, WRITE of every 256-byte page, ENTER_CMD_XIP, READ back in
 * 4 KiB pieces and compare, REBOOT2 (normal boot after 500 ms). One transfer is
 * in flight at a time; done(status, reason) runs once, from a completion or a
 * 0 ms timer, never inside usb_flash_uf2.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "icefarm/log.h"
#include "picoboot.h"
#include "uf2.h"
#include "usb_internal.h"

#define FLASH_BASE PICOBOOT_FLASH_BASE
#define FLASH_WINDOW (16u << 20) /* the XIP window of the boot flash */
#define PAGE PICOBOOT_FLASH_PAGE
#define SECTOR PICOBOOT_FLASH_SECTOR
#define READ_CHUNK 4096u
#define REBOOT_DELAY_MS 500u
#define ERASE_MS_PER_SECTOR 100u /* added to the ack timeout of an erase */

typedef enum {
    ST_EXCLUSIVE,
    ST_EXIT_XIP,
    ST_ERASE,
    ST_WRITE,
    ST_ENTER_XIP,
    ST_READ,
    ST_REBOOT
} pb_step;
typedef enum {
    PH_CMD,
    PH_DATA,
    PH_ACK,
    PH_STATUS
} pb_phase;

struct usb_flash {
    wrk_usbdev *dev;
    wrk_done_cb done;
    void *arg;
    uint8_t *data; /* the assembled program (ours) */
    size_t len;
    uint32_t base, end; /* end: base + len rounded up to a page */
    uint8_t iface, ep_in, ep_out;
    pb_step step;
    pb_phase phase;
    uint32_t token;
    uint8_t cmd_id;
    uint32_t xfer_len;
    uint32_t addr, size; /* the range of the current command */
    usb_xfer *x;
    uint64_t t_fail;
    int status;
    char reason[200];
};

static void flash_free(usb_flash *f)
{
    if (f->t_fail)
        ifm_timer_cancel(f->dev->ut->base.loop, f->t_fail);
    free(f->data);
    free(f);
}

static void finish(usb_flash *f, int status, const char *reason)
{
    wrk_usbdev *dev = f->dev;
    if (dev->flash == f)
        dev->flash = NULL;
    wrk_done_cb done = f->done;
    void *arg = f->arg;
    char why[sizeof f->reason];
    snprintf(why, sizeof why, "%s", reason ? reason : "flashing failed");
    if (status)
        IFM_WARN("serial=%s PICOBOOT: %s", dev->info.serial, why);
    else
        IFM_INFO("serial=%s PICOBOOT: wrote and verified %zu bytes at 0x%08x, rebooting", dev->info.serial, f->len,
                 f->base);
    flash_free(f);
    done(arg, status, status ? why : NULL);
}

static void fail_timer(ifm_loop *loop, void *arg)
{
    usb_flash *f = arg;
    f->t_fail = 0;
    finish(f, f->status, f->reason);
}

/* A failure found inside usb_flash_uf2: reported from the next loop turn. */
static int defer_fail(usb_flash *f, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int defer_fail(usb_flash *f, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->reason, sizeof f->reason, fmt, ap);
    va_end(ap);
    f->status = status;
    f->t_fail = ifm_timer_add(f->dev->ut->base.loop, 0, fail_timer, f);
    return 0;
}

static void flash_xfer_done(usb_xfer *x);

static int submit(usb_flash *f, usb_xfer *x)
{
    int rc = usb_xfer_submit(x);
    if (rc) {
        usb_xfer_free(x);
        return rc;
    }
    f->x = x;
    return 0;
}

static int send_cmd(usb_flash *f, uint8_t id, const uint8_t *args, uint8_t nargs, uint32_t xfer_len)
{
    usb_xfer *x = usb_xfer_new(f->dev, PICOBOOT_CMD_SIZE, flash_xfer_done, f);
    if (!x)
        return LIBUSB_ERROR_NO_MEM;
    picoboot_cmd c;
    picoboot_cmd_make(&c, ++f->token, id, args, nargs, xfer_len);
    picoboot_cmd_pack(&c, x->t->buffer);
    f->cmd_id = id;
    f->xfer_len = xfer_len;
    f->phase = PH_CMD;
    usb_xfer_bulk(x, f->ep_out, PICOBOOT_CMD_SIZE, f->dev->ut->opt.picoboot_timeout_ms);
    return submit(f, x);
}

static int range_cmd(usb_flash *f, uint8_t id, uint32_t addr, uint32_t size, uint32_t xfer_len)
{
    uint8_t args[8];
    picoboot_put32(args, addr);
    picoboot_put32(args + 4, size);
    f->addr = addr;
    f->size = size;
    return send_cmd(f, id, args, sizeof args, xfer_len);
}

static int step_start(usb_flash *f)
{
    switch (f->step) {
    case ST_EXCLUSIVE: {
        const uint8_t excl = 1; /* EXCLUSIVE: mass-storage writes are refused meanwhile */
        return send_cmd(f, PC_EXCLUSIVE_ACCESS, &excl, 1, 0);
    }
    case ST_EXIT_XIP:
        return send_cmd(f, PC_EXIT_XIP, NULL, 0, 0);
    case ST_ERASE: {
        uint32_t start = f->base & ~(SECTOR - 1);
        uint32_t end = (f->end + SECTOR - 1) & ~(SECTOR - 1);
        return range_cmd(f, PC_FLASH_ERASE, start, end - start, 0);
    }
    case ST_WRITE:
        return range_cmd(f, PC_WRITE, f->addr, PAGE, PAGE);
    case ST_ENTER_XIP:
        return send_cmd(f, PC_ENTER_CMD_XIP, NULL, 0, 0);
    case ST_READ: {
        uint32_t left = f->base + (uint32_t)f->len - f->addr;
        uint32_t n = left < READ_CHUNK ? left : READ_CHUNK;
        return range_cmd(f, PC_READ, f->addr, n, n);
    }
    case ST_REBOOT: {
        uint8_t args[16] = { 0 };
        picoboot_put32(args, 0); /* REBOOT2_FLAG_REBOOT_TYPE_NORMAL: boot the image in flash */
        picoboot_put32(args + 4, REBOOT_DELAY_MS);
        return send_cmd(f, PC_REBOOT2, args, sizeof args, 0);
    }
    }
    return LIBUSB_ERROR_INVALID_PARAM;
}

static int start_data(usb_flash *f)
{
    usb_xfer *x = usb_xfer_new(f->dev, (int)f->xfer_len, flash_xfer_done, f);
    if (!x)
        return LIBUSB_ERROR_NO_MEM;
    if (f->cmd_id & 0x80) {
        usb_xfer_bulk(x, f->ep_in, (int)f->xfer_len, f->dev->ut->opt.picoboot_timeout_ms);
    } else {
        /* WRITE: the page at f->addr, 0xff past the end of the image (a no-op
         * on erased flash). */
        uint8_t *p = x->t->buffer;
        size_t off = f->addr - f->base;
        size_t n = off < f->len ? f->len - off : 0;
        if (n > f->xfer_len)
            n = f->xfer_len;
        memcpy(p, f->data + off, n);
        memset(p + n, 0xff, f->xfer_len - n);
        usb_xfer_bulk(x, f->ep_out, (int)f->xfer_len, f->dev->ut->opt.picoboot_timeout_ms);
    }
    f->phase = PH_DATA;
    return submit(f, x);
}

static int start_ack(usb_flash *f)
{
    const usb_options *o = &f->dev->ut->opt;
    unsigned timeout = f->xfer_len ? o->picoboot_timeout_ms : o->picoboot_ack_ms;
    if (f->cmd_id == PC_FLASH_ERASE)
        timeout += f->size / SECTOR * ERASE_MS_PER_SECTOR;
    usb_xfer *x = usb_xfer_new(f->dev, 1, flash_xfer_done, f);
    if (!x)
        return LIBUSB_ERROR_NO_MEM;
    if (f->cmd_id & 0x80) {
        x->t->buffer[0] = 0;
        usb_xfer_bulk(x, f->ep_out, 1, timeout);
    } else {
        usb_xfer_bulk(x, f->ep_in, 1, timeout);
    }
    f->phase = PH_ACK;
    return submit(f, x);
}

/* The command finished: on to the next one. */
static int advance(usb_flash *f)
{
    switch (f->step) {
    case ST_EXCLUSIVE:
        f->step = ST_EXIT_XIP;
        break;
    case ST_EXIT_XIP:
        f->step = ST_ERASE;
        break;
    case ST_ERASE:
        f->step = ST_WRITE;
        f->addr = f->base;
        break;
    case ST_WRITE:
        f->addr += PAGE;
        if (f->addr >= f->end)
            f->step = ST_ENTER_XIP;
        break;
    case ST_ENTER_XIP:
        f->step = ST_READ;
        f->addr = f->base;
        break;
    case ST_READ:
        f->addr += f->size;
        if (f->addr >= f->base + f->len)
            f->step = ST_REBOOT;
        break;
    case ST_REBOOT:
        return 1;
    }
    return step_start(f);
}

static void describe(usb_flash *f, char *buf, size_t len)
{
    if (f->cmd_id == PC_WRITE || f->cmd_id == PC_READ || f->cmd_id == PC_FLASH_ERASE)
        snprintf(buf, len, "%s 0x%08x+%u", picoboot_cmd_name(f->cmd_id), f->addr, f->size);
    else
        snprintf(buf, len, "%s", picoboot_cmd_name(f->cmd_id));
}

static void phase_failed(usb_flash *f, enum libusb_transfer_status st, int actual)
{
    static const char *const phase[] = { "command", "data", "status", "status" };
    char what[64];
    describe(f, what, sizeof what);
    if (st == LIBUSB_TRANSFER_COMPLETED)
        snprintf(f->reason, sizeof f->reason, "PICOBOOT %s: short %s transfer (%d bytes)", what, phase[f->phase],
                 actual);
    else
        snprintf(f->reason, sizeof f->reason, "PICOBOOT %s: %s phase %s", what, phase[f->phase], usb_status_text(st));
    f->status = st == LIBUSB_TRANSFER_TIMED_OUT ? -ETIMEDOUT : -EIO;
    if (st == LIBUSB_TRANSFER_STALL) {
        /* The bootrom stalls on a refused command: ask it why. */
        usb_xfer *x =
            usb_xfer_control(f->dev, LIBUSB_ENDPOINT_IN | LIBUSB_REQUEST_TYPE_VENDOR | LIBUSB_RECIPIENT_INTERFACE,
                             PICOBOOT_IF_CMD_STATUS, 0, f->iface, NULL, PICOBOOT_STATUS_SIZE, flash_xfer_done, f);
        if (x) {
            f->phase = PH_STATUS;
            if (submit(f, x) == 0)
                return;
        }
    }
    finish(f, f->status, f->reason);
}

static void flash_xfer_done(usb_xfer *x)
{
    usb_flash *f = x->owner;
    struct libusb_transfer *t = x->t;
    enum libusb_transfer_status st = t->status;
    int actual = t->actual_length;
    char mismatch[120] = "";
    uint32_t code = 0;
    bool have_code = false;
    f->x = NULL;
    if (st == LIBUSB_TRANSFER_COMPLETED && f->phase == PH_DATA && f->cmd_id == PC_READ && actual == (int)f->xfer_len) {
        const uint8_t *got = t->buffer, *want = f->data + (f->addr - f->base);
        for (uint32_t i = 0; i < f->xfer_len; i++)
            if (got[i] != want[i]) {
                snprintf(mismatch, sizeof mismatch, "verify failed at 0x%08x: wrote 0x%02x, read back 0x%02x",
                         f->addr + i, want[i], got[i]);
                break;
            }
    }
    picoboot_status cs;
    if (f->phase == PH_STATUS && st == LIBUSB_TRANSFER_COMPLETED &&
        picoboot_status_unpack(libusb_control_transfer_get_data(t), (size_t)actual, &cs, NULL, 0) == 0) {
        code = cs.code;
        have_code = true;
    }
    usb_xfer_free(x);

    if (st == LIBUSB_TRANSFER_NO_DEVICE) {
        /* The bootrom reboots REBOOT_DELAY_MS after acknowledging; a board that
         * went even sooner still got the command. Otherwise the leave reports
         * done(-ENODEV). */
        if (f->step == ST_REBOOT && f->phase == PH_ACK)
            finish(f, 0, NULL);
        return;
    }
    if (usb_dev_usable(f->dev) != 0)
        return; /* leaving: the leave reports it */
    if (f->phase == PH_STATUS) {
        if (have_code) {
            size_t n = strlen(f->reason);
            snprintf(f->reason + n, sizeof f->reason - n, " (bootrom status %u: %s)", code, picoboot_status_name(code));
        }
        finish(f, f->status, f->reason);
        return;
    }
    bool short_data = f->phase == PH_CMD ? actual != PICOBOOT_CMD_SIZE
        : f->phase == PH_DATA            ? actual != (int)f->xfer_len
                                         : false;
    if (st != LIBUSB_TRANSFER_COMPLETED || short_data) {
        phase_failed(f, st, actual);
        return;
    }
    if (mismatch[0]) {
        finish(f, -EIO, mismatch);
        return;
    }
    int rc;
    if (f->phase == PH_CMD && f->xfer_len)
        rc = start_data(f);
    else if (f->phase == PH_CMD || f->phase == PH_DATA)
        rc = start_ack(f);
    else {
        rc = advance(f);
        if (rc == 1) {
            finish(f, 0, NULL);
            return;
        }
    }
    if (rc == LIBUSB_ERROR_NO_DEVICE)
        return;
    if (rc) {
        char what[64];
        describe(f, what, sizeof what);
        snprintf(f->reason, sizeof f->reason, "PICOBOOT %s: cannot submit: %s", what, libusb_strerror(rc));
        finish(f, usb_errno(rc), f->reason);
    }
}

static int find_picoboot(usb_flash *f)
{
    struct libusb_config_descriptor *cfg;
    if (libusb_get_active_config_descriptor(f->dev->ldev, &cfg) != 0)
        return -1;
    int found = -1;
    for (int i = 0; i < cfg->bNumInterfaces && found < 0; i++) {
        if (cfg->interface[i].num_altsetting < 1)
            continue;
        const struct libusb_interface_descriptor *a = &cfg->interface[i].altsetting[0];
        if (a->bInterfaceClass != LIBUSB_CLASS_VENDOR_SPEC || a->bInterfaceSubClass != 0 || a->bInterfaceProtocol != 0)
            continue;
        uint8_t in = 0, out = 0;
        for (int e = 0; e < a->bNumEndpoints; e++) {
            const struct libusb_endpoint_descriptor *ep = &a->endpoint[e];
            if ((ep->bmAttributes & 3) != LIBUSB_TRANSFER_TYPE_BULK)
                continue;
            if (ep->bEndpointAddress & LIBUSB_ENDPOINT_IN)
                in = ep->bEndpointAddress;
            else
                out = ep->bEndpointAddress;
        }
        if (in && out) {
            f->iface = a->bInterfaceNumber;
            f->ep_in = in;
            f->ep_out = out;
            found = 0;
        }
    }
    libusb_free_config_descriptor(cfg);
    return found;
}

int usb_flash_uf2(wrk_transport *t, wrk_usbdev *dev, const uint8_t *uf2, size_t len, wrk_done_cb done, void *arg)
{
    if (!usb_of(t))
        return -EINVAL;
    int rc = usb_dev_usable(dev);
    if (rc)
        return rc;
    if (!done)
        return -EINVAL;
    if (!usb_is_bootsel(dev))
        return -EOPNOTSUPP;
    if (dev->flash)
        return -EBUSY;
    usb_flash *f = calloc(1, sizeof *f);
    if (!f)
        return -ENOMEM;
    f->dev = dev;
    f->done = done;
    f->arg = arg;
    dev->flash = f;
    /* Parse now: the caller may free its buffer when this returns. */
    uf2_image img;
    char why[UF2_REASON_MAX];
    if (uf2_parse(uf2, len, UF2_TARGET_RP2350, &img, why) != 0)
        return defer_fail(f, -EINVAL, "invalid UF2 image: %s", why);
    f->data = img.data;
    f->len = img.len;
    f->base = img.base;
    if (f->base < FLASH_BASE || f->base % PAGE || f->len > FLASH_WINDOW || f->base - FLASH_BASE > FLASH_WINDOW - f->len)
        return defer_fail(f, -EINVAL, "the image (0x%08x, %zu bytes) is not a page-aligned flash image", f->base,
                          f->len);
    f->end = f->base + (uint32_t)((f->len + PAGE - 1) / PAGE * PAGE);
    if (find_picoboot(f) != 0)
        return defer_fail(f, -EOPNOTSUPP, "the bootloader has no PICOBOOT interface");
    char cwhy[160];
    rc = usb_claim(dev, f->iface, cwhy, sizeof cwhy);
    if (rc)
        return defer_fail(f, rc, "PICOBOOT: %s", cwhy);
    f->step = ST_EXCLUSIVE;
    rc = step_start(f);
    if (rc == LIBUSB_ERROR_NO_DEVICE)
        return 0; /* the leave reports done(-ENODEV) */
    if (rc)
        return defer_fail(f, usb_errno(rc), "PICOBOOT: cannot submit: %s", libusb_strerror(rc));
    return 0;
}

void usb_flash_abort(wrk_usbdev *dev, bool report, int status, const char *reason)
{
    usb_flash *f = dev->flash;
    if (!f)
        return;
    dev->flash = NULL;
    if (f->x)
        usb_xfer_abandon(f->x);
    wrk_done_cb done = f->done;
    void *arg = f->arg;
    flash_free(f);
    if (report)
        done(arg, status, reason);
}
