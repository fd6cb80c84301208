/* Fake pico2-ice USB devices in a umockdev testbed: sysfs, device nodes and a
 * usbfs (usbdevfs ioctl) emulation. See fake_usb.h. */
#include "fake_usb.h"

#include "picoboot.h"

#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <sys/ioctl.h>
#include <linux/usbdevice_fs.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <umockdev.h>

#define MAX_DEVS 64
#define PB_BUF 4096
#define PB_EP_OUT 0x02
#define PB_EP_IN 0x82
#define CDC_EP_OUT 0x02
#define CDC_EP_IN 0x82

typedef struct furb {
    struct furb *next;
    UMockdevIoctlData *urb; /* our reference */
    UMockdevIoctlData *buf; /* our reference, NULL for an empty buffer */
    uint8_t type, ep;
    int len;
    gulong addr; /* the client's address of the urb: DISCARDURB names it */
} furb;

typedef enum {
    PB_IDLE,
    PB_DATA_OUT,
    PB_DATA_IN,
    PB_ACK_IN,
    PB_ACK_OUT,
    PB_STALLED,
    PB_HUNG
} pb_state;

struct fake_dev {
    fake_bed *bed;
    GMutex m;
    fake_kind kind;
    char serial[64];
    int devnum;
    gchar *syspath;
    char devnode[64];
    char nodefile[512];
    UMockdevIoctlBase *handler;
    GByteArray *desc; /* device + configuration descriptors, for GET_DESCRIPTOR */
    bool dead, removed;
    bool echo, hold_out, stall_next_in;
    GByteArray *tx, *rx;
    furb *pending;
    furb *done, **done_tail;
    fake_stats st;
    /* PICOBOOT */
    uint8_t *flash;
    pb_state pb;
    uint32_t pb_token, pb_status;
    uint8_t pb_cmd;
    uint32_t pb_addr, pb_len, pb_off;
    uint8_t pb_buf[PB_BUF];
    bool fail_write, corrupt, hang_erase;
    uint32_t fail_write_at, corrupt_at;
};

struct fake_bed {
    UMockdevTestbed *tb;
    gchar *root;
    int next_devnum;
    fake_dev *devs[MAX_DEVS];
    int ndevs;
};

static bool has_cdc(const fake_dev *d)
{
    return d->kind == FAKE_PICO_STDIO || d->kind == FAKE_PICO_ICE || d->kind == FAKE_NOSERIAL;
}

/* ---- URB plumbing ---- */

static UMockdevIoctlData *resolve(UMockdevIoctlData *parent, size_t off, size_t len)
{
    GError *e = NULL;
    UMockdevIoctlData *r = umockdev_ioctl_data_resolve(parent, off, len, &e);
    if (e) {
        fprintf(stderr, "fake_usb: resolve failed: %s\n", e->message);
        g_error_free(e);
        return NULL;
    }
    return r;
}

static bool debug_on(void)
{
    static int on = -1;
    if (on < 0)
        on = getenv("FAKE_USB_DEBUG") != NULL;
    return on;
}

static void finish_urb(fake_dev *d, furb *f, int status, int actual)
{
    if (debug_on())
        fprintf(stderr, "fake_usb %s: urb %#lx ep %02x type %d len %d -> status %d actual %d\n", d->devnode, f->addr,
                f->ep, f->type, f->len, status, actual);
    int32_t s = status, a = actual;
    umockdev_ioctl_data_update(f->urb, offsetof(struct usbdevfs_urb, status), (guint8 *)&s, sizeof s);
    umockdev_ioctl_data_update(f->urb, offsetof(struct usbdevfs_urb, actual_length), (guint8 *)&a, sizeof a);
    f->next = NULL;
    *d->done_tail = f;
    d->done_tail = &f->next;
}

static void reply_in(furb *f, int off, const void *data, int n)
{
    if (n > 0 && f->buf)
        umockdev_ioctl_data_update(f->buf, (gsize)off, (guint8 *)data, n);
}

static void add_pending(fake_dev *d, furb *f)
{
    furb **pp = &d->pending;
    while (*pp)
        pp = &(*pp)->next;
    f->next = NULL;
    *pp = f;
}

static void free_furb(furb *f)
{
    if (f->buf)
        g_object_unref(f->buf);
    if (f->urb)
        g_object_unref(f->urb);
    free(f);
}

/* ---- CDC model ---- */

static void cdc_accept_out(fake_dev *d, furb *f)
{
    if (f->len > 0 && f->buf) {
        g_byte_array_append(d->rx, f->buf->data, (guint)f->len);
        if (d->echo)
            g_byte_array_append(d->tx, f->buf->data, (guint)f->len);
    }
    d->st.received += (size_t)f->len;
    finish_urb(d, f, 0, f->len);
}

static void cdc_service(fake_dev *d)
{
    /* Host writes first (an echo feeds the reads), then host reads. */
    for (furb **pp = &d->pending, *f; (f = *pp) != NULL;) {
        if (!(f->ep & 0x80) && !d->hold_out) {
            *pp = f->next;
            cdc_accept_out(d, f);
            continue;
        }
        pp = &f->next;
    }
    for (furb **pp = &d->pending, *f; (f = *pp) != NULL;) {
        if (f->ep == CDC_EP_IN && d->stall_next_in) {
            d->stall_next_in = false;
            *pp = f->next;
            finish_urb(d, f, -EPIPE, 0);
            continue;
        }
        if (f->ep == CDC_EP_IN && d->tx->len > 0) {
            int n = (int)d->tx->len < f->len ? (int)d->tx->len : f->len;
            reply_in(f, 0, d->tx->data, n);
            g_byte_array_remove_range(d->tx, 0, (guint)n);
            *pp = f->next;
            finish_urb(d, f, 0, n);
            continue;
        }
        pp = &f->next;
    }
}

static void cdc_bulk(fake_dev *d, furb *f)
{
    if (f->ep == CDC_EP_OUT) {
        d->st.out_urbs++;
        if ((size_t)f->len > d->st.max_out_urb)
            d->st.max_out_urb = (size_t)f->len;
        add_pending(d, f); /* cdc_service accepts it unless held */
        return;
    }
    if (f->ep & 0x80) {
        add_pending(d, f);
        return;
    }
    finish_urb(d, f, -EPIPE, 0);
}

/* ---- PICOBOOT model ---- */

static bool pb_range_ok(uint32_t addr, uint32_t len)
{
    return addr >= FAKE_FLASH_BASE && len <= FAKE_FLASH_SIZE && addr - FAKE_FLASH_BASE <= FAKE_FLASH_SIZE - len;
}

static void pb_stall(fake_dev *d, uint32_t status)
{
    d->pb_status = status;
    d->pb = PB_STALLED;
}

static void pb_command(fake_dev *d, furb *f)
{
    picoboot_cmd c; /* the one PICOBOOT decoder (wrk/fw/picoboot.h) */
    if (!f->buf || picoboot_cmd_unpack(f->buf->data, (size_t)f->len, &c, NULL, 0) != 0) {
        finish_urb(d, f, -EPIPE, 0);
        pb_stall(d, PICOBOOT_INVALID_CMD_LENGTH);
        return;
    }
    uint8_t id = c.id;
    uint32_t xfer = c.xfer_len;
    const uint8_t *args = c.args;
    if (d->st.pb_cmds < 64)
        d->st.pb_ids[d->st.pb_cmds] = id;
    d->st.pb_cmds++;
    d->pb_token = c.token;
    d->pb_cmd = id;
    d->pb_status = 0;
    finish_urb(d, f, 0, 32);
    uint32_t addr, size;
    picoboot_cmd_range(&c, &addr, &size);
    switch (id) {
    case PC_EXCLUSIVE_ACCESS:
        d->st.pb_exclusive = args[0] != 0;
        d->pb = PB_ACK_IN;
        return;
    case PC_EXIT_XIP:
        d->st.pb_xip_exited = true;
        d->pb = PB_ACK_IN;
        return;
    case PC_ENTER_CMD_XIP:
        d->st.pb_xip_entered = true;
        d->pb = PB_ACK_IN;
        return;
    case PC_FLASH_ERASE:
        if (addr % 4096 || size % 4096 || !pb_range_ok(addr, size)) {
            pb_stall(d, addr % 4096 || size % 4096 ? PICOBOOT_BAD_ALIGNMENT : PICOBOOT_INVALID_ADDRESS);
            return;
        }
        memset(d->flash + (addr - FAKE_FLASH_BASE), 0xff, size);
        d->st.pb_erases++;
        d->pb = d->hang_erase ? PB_HUNG : PB_ACK_IN;
        return;
    case PC_WRITE:
        if (xfer != size || xfer == 0 || xfer > PB_BUF) {
            pb_stall(d, PICOBOOT_INVALID_TRANSFER_LENGTH);
            return;
        }
        if (addr % 256 || !pb_range_ok(addr, size)) {
            pb_stall(d, addr % 256 ? PICOBOOT_BAD_ALIGNMENT : PICOBOOT_INVALID_ADDRESS);
            return;
        }
        if (d->fail_write && addr <= d->fail_write_at && d->fail_write_at < addr + size) {
            pb_stall(d, PICOBOOT_INVALID_ADDRESS);
            return;
        }
        d->pb_addr = addr;
        d->pb_len = xfer;
        d->pb_off = 0;
        d->pb = PB_DATA_OUT;
        return;
    case PC_READ:
        if (xfer != size || xfer == 0 || xfer > PB_BUF) {
            pb_stall(d, PICOBOOT_INVALID_TRANSFER_LENGTH);
            return;
        }
        if (!pb_range_ok(addr, size)) {
            pb_stall(d, PICOBOOT_INVALID_ADDRESS);
            return;
        }
        memcpy(d->pb_buf, d->flash + (addr - FAKE_FLASH_BASE), size);
        if (d->corrupt && addr <= d->corrupt_at && d->corrupt_at < addr + size)
            d->pb_buf[d->corrupt_at - addr] ^= 0x01;
        d->st.pb_reads++;
        d->pb_addr = addr;
        d->pb_len = xfer;
        d->pb_off = 0;
        d->pb = PB_DATA_IN;
        return;
    case PC_REBOOT2:
        d->st.rebooted = true;
        d->st.reboot_flags = picoboot_get32(args);
        d->st.reboot_delay = picoboot_get32(args + 4);
        d->pb = PB_ACK_IN;
        return;
    default:
        pb_stall(d, PICOBOOT_UNKNOWN_CMD);
        return;
    }
}

static void pb_service(fake_dev *d)
{
    for (furb **pp = &d->pending, *f; (f = *pp) != NULL;) {
        if (d->pb == PB_DATA_IN) {
            uint32_t n = d->pb_len - d->pb_off;
            if (n > (uint32_t)f->len)
                n = (uint32_t)f->len;
            reply_in(f, 0, d->pb_buf + d->pb_off, (int)n);
            d->pb_off += n;
            if (d->pb_off >= d->pb_len)
                d->pb = PB_ACK_OUT;
            *pp = f->next;
            finish_urb(d, f, 0, (int)n);
        } else if (d->pb == PB_ACK_IN) {
            d->pb = PB_IDLE;
            *pp = f->next;
            finish_urb(d, f, 0, 0);
        } else if (d->pb == PB_STALLED) {
            *pp = f->next;
            finish_urb(d, f, -EPIPE, 0);
        } else {
            pp = &f->next;
        }
    }
}

static void pb_bulk(fake_dev *d, furb *f)
{
    if (f->ep == PB_EP_IN) {
        add_pending(d, f);
        return;
    }
    if (f->ep != PB_EP_OUT) {
        finish_urb(d, f, -EPIPE, 0);
        return;
    }
    switch (d->pb) {
    case PB_IDLE:
        pb_command(d, f);
        return;
    case PB_DATA_OUT: {
        uint32_t n = (uint32_t)f->len;
        if (n > d->pb_len - d->pb_off)
            n = d->pb_len - d->pb_off;
        if (n && f->buf)
            memcpy(d->pb_buf + d->pb_off, f->buf->data, n);
        d->pb_off += n;
        finish_urb(d, f, 0, f->len);
        if (d->pb_off >= d->pb_len) {
            uint8_t *dst = d->flash + (d->pb_addr - FAKE_FLASH_BASE);
            for (uint32_t i = 0; i < d->pb_len; i++)
                dst[i] &= d->pb_buf[i]; /* NOR: writing only clears bits */
            d->st.pb_writes++;
            d->pb = PB_ACK_IN;
        }
        return;
    }
    case PB_ACK_OUT:
        d->pb = PB_IDLE;
        finish_urb(d, f, 0, f->len);
        return;
    default:
        finish_urb(d, f, -EPIPE, 0);
        return;
    }
}

/* ---- control requests on endpoint 0 ---- */

static int utf16_string(uint8_t *out, const char *s)
{
    int n = 2;
    for (; *s && n + 2 <= 254; s++) {
        out[n++] = (uint8_t)*s;
        out[n++] = 0;
    }
    out[0] = (uint8_t)n;
    out[1] = 3;
    return n;
}

static const char *product(const fake_dev *d)
{
    switch (d->kind) {
    case FAKE_PICO_ICE:
        return "pico-ice";
    case FAKE_BOOTSEL:
        return "RP2350 Boot";
    case FAKE_OTHER:
        return "Receiver";
    default:
        return "Pico";
    }
}

static void control(fake_dev *d, furb *f)
{
    if (f->len < 8 || !f->buf) {
        finish_urb(d, f, -EPIPE, 0);
        return;
    }
    const uint8_t *b = f->buf->data;
    uint8_t type = b[0], req = b[1];
    uint16_t value = (uint16_t)(b[2] | b[3] << 8), index = (uint16_t)(b[4] | b[5] << 8);
    int wlen = b[6] | b[7] << 8;
    uint8_t reply[256];
    int n = -1;
    (void)index;
    if (type == 0x80 && req == 6 && ((value >> 8) == 1 || (value >> 8) == 2) && (value & 0xff) == 0) {
        /* the device descriptor (18 bytes), or the configuration after it */
        size_t off = (value >> 8) == 1 ? 0 : 18, len = (value >> 8) == 1 ? 18 : d->desc->len - 18;
        memcpy(reply, d->desc->data + off, len < sizeof reply ? len : sizeof reply);
        n = (int)(len < sizeof reply ? len : sizeof reply);
    } else if (type == 0x80 && req == 6 && (value >> 8) == 3) {
        int idx = value & 0xff;
        if (idx == 0) {
            d->st.langid_requests++;
            reply[0] = 4;
            reply[1] = 3;
            reply[2] = 0x09;
            reply[3] = 0x04;
            n = 4;
        } else if (idx == 1) {
            n = utf16_string(reply, "Raspberry Pi");
        } else if (idx == 2) {
            n = utf16_string(reply, product(d));
        } else if (idx == 3 && d->kind != FAKE_NOSERIAL) {
            d->st.string_requests++;
            n = utf16_string(reply, d->serial);
        }
    } else if (type == 0x21 && req == 0x20 && wlen == 7 && has_cdc(d) && f->len >= 15) {
        d->st.baud = (uint32_t)b[8] | (uint32_t)b[9] << 8 | (uint32_t)b[10] << 16 | (uint32_t)b[11] << 24;
        d->st.line_codings++;
        if (d->st.baud == 1200)
            d->st.touched = true;
        n = 0;
    } else if (type == 0x21 && req == 0x22 && has_cdc(d)) {
        d->st.lines = value;
        if (d->st.line_states < 16)
            d->st.line_history[d->st.line_states] = value;
        d->st.line_states++;
        n = 0;
    } else if (type == 0xc1 && req == PICOBOOT_IF_CMD_STATUS && d->kind == FAKE_BOOTSEL) {
        picoboot_status st = { .token = d->pb_token, .code = d->pb_status, .cmd_id = d->pb_cmd };
        picoboot_status_pack(&st, reply);
        n = PICOBOOT_STATUS_SIZE;
    } else if (type == 0x41 && req == PICOBOOT_IF_RESET && d->kind == FAKE_BOOTSEL) {
        d->pb = PB_IDLE;
        d->pb_status = 0;
        n = 0;
    }
    if (n < 0) {
        finish_urb(d, f, -EPIPE, 0);
    } else if (type & 0x80) {
        if (n > wlen)
            n = wlen;
        reply_in(f, 8, reply, n);
        finish_urb(d, f, 0, n);
    } else {
        finish_urb(d, f, 0, wlen);
    }
}

static void service(fake_dev *d)
{
    if (d->kind == FAKE_BOOTSEL)
        pb_service(d);
    else
        cdc_service(d);
}

/* ---- the usbdevfs ioctls ---- */

static long do_submit(fake_dev *d, UMockdevIoctlData *arg, int *err)
{
    UMockdevIoctlData *u = resolve(arg, 0, sizeof(struct usbdevfs_urb));
    if (!u) {
        *err = EFAULT;
        return -1;
    }
    struct usbdevfs_urb urb;
    memcpy(&urb, u->data, sizeof urb);
    if (d->dead) {
        g_object_unref(u);
        *err = ENODEV;
        return -1;
    }
    if (urb.type != USBDEVFS_URB_TYPE_CONTROL && urb.type != USBDEVFS_URB_TYPE_BULK &&
        urb.type != USBDEVFS_URB_TYPE_INTERRUPT) {
        g_object_unref(u);
        *err = EINVAL;
        return -1;
    }
    furb *f = calloc(1, sizeof *f);
    f->urb = u;
    f->type = urb.type;
    f->ep = urb.endpoint;
    f->len = urb.buffer_length;
    f->addr = u->client_addr;
    if (urb.buffer_length > 0) {
        f->buf = resolve(u, offsetof(struct usbdevfs_urb, buffer), (size_t)urb.buffer_length);
        if (!f->buf) {
            free_furb(f);
            *err = EFAULT;
            return -1;
        }
    }
    d->st.outstanding++;
    if (debug_on())
        fprintf(stderr, "fake_usb %s: submit %#lx ep %02x type %d len %d\n", d->devnode, f->addr, f->ep, f->type,
                f->len);
    if (urb.type == USBDEVFS_URB_TYPE_CONTROL)
        control(d, f);
    else if (urb.type == USBDEVFS_URB_TYPE_INTERRUPT)
        add_pending(d, f); /* a notification endpoint: nothing is ever sent */
    else if (d->kind == FAKE_BOOTSEL)
        pb_bulk(d, f);
    else
        cdc_bulk(d, f);
    service(d);
    return 0;
}

static long do_reap(fake_dev *d, UMockdevIoctlData *arg, int *err)
{
    furb *f = d->done;
    if (!f) {
        *err = d->dead ? ENODEV : EAGAIN;
        return -1;
    }
    UMockdevIoctlData *slot = resolve(arg, 0, sizeof(void *));
    if (!slot) {
        *err = EFAULT;
        return -1;
    }
    d->done = f->next;
    if (!d->done)
        d->done_tail = &d->done;
    /* *arg = the client's urb, and the urb (with its buffer, for IN) is written
     * back when the ioctl completes. */
    umockdev_ioctl_data_set_ptr(slot, 0, f->urb);
    g_object_unref(slot);
    d->st.outstanding--;
    free_furb(f);
    return 0;
}

static long do_discard(fake_dev *d, UMockdevIoctlData *arg, int *err)
{
    gulong addr = 0;
    memcpy(&addr, arg->data, sizeof addr);
    for (furb **pp = &d->pending, *f; (f = *pp) != NULL; pp = &f->next) {
        if (f->addr == addr) {
            *pp = f->next;
            finish_urb(d, f, -ENOENT, 0);
            d->st.discards++;
            return 0;
        }
    }
    *err = EINVAL;
    return -1;
}

static const char *driver_name(const fake_dev *d)
{
    return d->kind == FAKE_BOOTSEL ? "usb-storage" : d->kind == FAKE_OTHER ? "usbhid" : "cdc_acm";
}

static gboolean on_ioctl(UMockdevIoctlBase *base, UMockdevIoctlClient *client, gpointer user)
{
    fake_dev *d = user;
    gulong req = umockdev_ioctl_client_get_request(client);
    UMockdevIoctlData *arg = umockdev_ioctl_client_get_arg(client);
    long ret = 0;
    int err = 0;
    g_mutex_lock(&d->m);
    if (d->dead && req != USBDEVFS_REAPURBNDELAY && req != USBDEVFS_REAPURB && req != USBDEVFS_DISCARDURB) {
        ret = -1;
        err = ENODEV;
        goto out;
    }
    switch (req) {
    case USBDEVFS_GET_CAPABILITIES: {
        UMockdevIoctlData *v = resolve(arg, 0, sizeof(uint32_t));
        uint32_t caps = USBDEVFS_CAP_ZERO_PACKET | USBDEVFS_CAP_BULK_CONTINUATION | USBDEVFS_CAP_NO_PACKET_SIZE_LIM |
            USBDEVFS_CAP_REAP_AFTER_DISCONNECT;
        if (v) {
            umockdev_ioctl_data_update(v, 0, (guint8 *)&caps, sizeof caps);
            g_object_unref(v);
        }
        break;
    }
    case USBDEVFS_CLAIMINTERFACE:
    case USBDEVFS_RELEASEINTERFACE: {
        UMockdevIoctlData *v = resolve(arg, 0, sizeof(unsigned));
        unsigned i = 0;
        if (v) {
            memcpy(&i, v->data, sizeof i);
            g_object_unref(v);
        }
        if (i >= 32) {
            ret = -1;
            err = EINVAL;
        } else if (req == USBDEVFS_CLAIMINTERFACE) {
            if (d->st.driver_bound & (1u << i)) {
                ret = -1;
                err = EBUSY;
            } else {
                d->st.claimed |= 1u << i;
            }
        } else if (!(d->st.claimed & (1u << i))) {
            ret = -1;
            err = EINVAL;
        } else {
            d->st.claimed &= ~(1u << i);
        }
        break;
    }
    case USBDEVFS_DISCONNECT_CLAIM: {
        UMockdevIoctlData *v = resolve(arg, 0, sizeof(struct usbdevfs_disconnect_claim));
        struct usbdevfs_disconnect_claim dc = { 0 };
        if (v) {
            memcpy(&dc, v->data, sizeof dc);
            g_object_unref(v);
        }
        if (dc.interface >= 32) {
            ret = -1;
            err = EINVAL;
            break;
        }
        if (d->st.driver_bound & (1u << dc.interface)) {
            d->st.driver_bound &= ~(1u << dc.interface);
            d->st.disconnect_claims++;
        }
        d->st.claimed |= 1u << dc.interface;
        break;
    }
    case USBDEVFS_GETDRIVER: {
        UMockdevIoctlData *v = resolve(arg, 0, sizeof(struct usbdevfs_getdriver));
        struct usbdevfs_getdriver gd;
        memset(&gd, 0, sizeof gd);
        if (v)
            memcpy(&gd, v->data, sizeof gd);
        if (gd.interface < 32 && (d->st.driver_bound & (1u << gd.interface))) {
            snprintf(gd.driver, sizeof gd.driver, "%s", driver_name(d));
            if (v)
                umockdev_ioctl_data_update(v, 0, (guint8 *)&gd, sizeof gd);
        } else {
            ret = -1;
            err = ENODATA;
        }
        if (v)
            g_object_unref(v);
        break;
    }
    case USBDEVFS_IOCTL: {
        UMockdevIoctlData *v = resolve(arg, 0, sizeof(struct usbdevfs_ioctl));
        struct usbdevfs_ioctl io = { 0 };
        if (v) {
            memcpy(&io, v->data, sizeof io);
            g_object_unref(v);
        }
        if (io.ifno < 0 || io.ifno >= 32) {
            ret = -1;
            err = EINVAL;
        } else if ((unsigned long)io.ioctl_code == USBDEVFS_DISCONNECT) {
            if (d->st.driver_bound & (1u << io.ifno)) {
                d->st.driver_bound &= ~(1u << io.ifno);
                d->st.disconnect_claims++;
            } else {
                ret = -1;
                err = ENODATA;
            }
        } else if ((unsigned long)io.ioctl_code == USBDEVFS_CONNECT) {
            if (!(d->st.claimed & (1u << io.ifno)))
                d->st.driver_bound |= 1u << io.ifno;
        } else {
            ret = -1;
            err = ENOTTY;
        }
        break;
    }
    case USBDEVFS_SUBMITURB:
        ret = do_submit(d, arg, &err);
        break;
    case USBDEVFS_REAPURB:
    case USBDEVFS_REAPURBNDELAY:
        ret = do_reap(d, arg, &err);
        break;
    case USBDEVFS_DISCARDURB:
        ret = do_discard(d, arg, &err);
        break;
    case USBDEVFS_CLEAR_HALT:
    case USBDEVFS_RESETEP:
    case USBDEVFS_SETINTERFACE:
    case USBDEVFS_SETCONFIGURATION:
    case USBDEVFS_RESET:
        break;
    default:
        d->st.unknown_ioctls++;
        fprintf(stderr, "fake_usb: %s: unhandled ioctl 0x%lx\n", d->devnode, req);
        ret = -1;
        err = ENOTTY;
        break;
    }
out:
    g_mutex_unlock(&d->m);
    umockdev_ioctl_client_complete(client, ret, err);
    return TRUE;
}

/* ---- descriptors ---- */

static void put(GByteArray *a, int n, ...)
{
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        uint8_t b = (uint8_t)va_arg(ap, int);
        g_byte_array_append(a, &b, 1);
    }
    va_end(ap);
}

static void iface(GByteArray *a, int num, int neps, int cls, int sub, int proto)
{
    put(a, 9, 9, 4, num, 0, neps, cls, sub, proto, 0);
}

static void ep(GByteArray *a, int addr, int attr, int mps)
{
    put(a, 7, 7, 5, addr, attr, mps & 0xff, mps >> 8, attr == 3 ? 16 : 0);
}

static void cdc_function(GByteArray *a, int ctrl, int data, int notify_ep, int out_ep, int in_ep)
{
    put(a, 8, 8, 0x0b, ctrl, 2, 2, 2, 0, 0); /* IAD */
    iface(a, ctrl, 1, 2, 2, 0);
    put(a, 5, 5, 0x24, 0x00, 0x20, 0x01); /* header */
    put(a, 5, 5, 0x24, 0x01, 0x00, data); /* call management */
    put(a, 4, 4, 0x24, 0x02, 0x02);       /* ACM */
    put(a, 5, 5, 0x24, 0x06, ctrl, data); /* union */
    ep(a, notify_ep, 3, 8);
    iface(a, data, 2, 0x0a, 0, 0);
    ep(a, out_ep, 2, 64);
    ep(a, in_ep, 2, 64);
}

static GByteArray *descriptors(fake_kind kind, uint16_t *vid, uint16_t *pid, uint32_t *bound)
{
    GByteArray *cfg = g_byte_array_new();
    int nif = 0;
    *bound = 0;
    switch (kind) {
    case FAKE_PICO_STDIO:
    case FAKE_NOSERIAL:
        *vid = 0x2e8a;
        *pid = 0x0009;
        cdc_function(cfg, 0, 1, 0x81, CDC_EP_OUT, CDC_EP_IN);
        iface(cfg, 2, 0, 0xff, 0, 1); /* pico-sdk's reset interface */
        nif = 3;
        *bound = 0x3;
        break;
    case FAKE_PICO_ICE:
        *vid = 0x1209;
        *pid = 0xb1c0;
        cdc_function(cfg, 0, 1, 0x81, CDC_EP_OUT, CDC_EP_IN);
        cdc_function(cfg, 2, 3, 0x83, 0x04, 0x84);
        iface(cfg, 4, 0, 0xfe, 1, 2); /* DFU */
        nif = 5;
        *bound = 0xf;
        break;
    case FAKE_BOOTSEL:
        *vid = 0x2e8a;
        *pid = 0x000f;
        iface(cfg, 0, 2, 8, 6, 0x50); /* mass storage */
        ep(cfg, 0x01, 2, 64);
        ep(cfg, 0x81, 2, 64);
        iface(cfg, 1, 2, 0xff, 0, 0); /* PICOBOOT */
        ep(cfg, PB_EP_OUT, 2, 64);
        ep(cfg, PB_EP_IN, 2, 64);
        nif = 2;
        *bound = 0x1;
        break;
    case FAKE_OTHER:
        *vid = 0x046d;
        *pid = 0xc52b;
        iface(cfg, 0, 1, 3, 1, 2);
        ep(cfg, 0x81, 3, 8);
        nif = 1;
        *bound = 0x1;
        break;
    }
    GByteArray *all = g_byte_array_new();
    int total = 9 + (int)cfg->len;
    bool composite = kind != FAKE_BOOTSEL && kind != FAKE_OTHER;
    put(all, 18, 18, 1, 0x00, 0x02, composite ? 0xef : 0, composite ? 2 : 0, composite ? 1 : 0, 64, *vid & 0xff,
        *vid >> 8, *pid & 0xff, *pid >> 8, 0x00, 0x01, 1, 2, kind == FAKE_NOSERIAL ? 0 : 3, 1);
    put(all, 9, 9, 2, total & 0xff, total >> 8, nif, 1, 0, 0x80, 50);
    g_byte_array_append(all, cfg->data, cfg->len);
    g_byte_array_free(cfg, TRUE);
    return all;
}

/* ---- testbed ---- */

fake_bed *fake_bed_new(void)
{
    fake_bed *bed = calloc(1, sizeof *bed);
    bed->tb = umockdev_testbed_new();
    bed->root = umockdev_testbed_get_root_dir(bed->tb);
    gchar *usbdir = g_build_filename(bed->root, "dev", "bus", "usb", "001", NULL);
    g_mkdir_with_parents(usbdir, 0755);
    g_free(usbdir);
    bed->next_devnum = 2;
    return bed;
}

fake_dev *fake_plug(fake_bed *bed, fake_kind kind, const char *serial, bool uevent)
{
    if (bed->ndevs == MAX_DEVS)
        return NULL;
    fake_dev *d = calloc(1, sizeof *d);
    g_mutex_init(&d->m);
    d->bed = bed;
    d->kind = kind;
    snprintf(d->serial, sizeof d->serial, "%s", serial ? serial : "");
    d->devnum = bed->next_devnum++;
    d->echo = true;
    d->tx = g_byte_array_new();
    d->rx = g_byte_array_new();
    d->done_tail = &d->done;
    d->st.lines = -1;
    if (kind == FAKE_BOOTSEL) {
        d->flash = malloc(FAKE_FLASH_SIZE);
        memset(d->flash, 0x5a, FAKE_FLASH_SIZE); /* an old image */
    }
    uint16_t vid, pid;
    GByteArray *desc = descriptors(kind, &vid, &pid, &d->st.driver_bound);
    char name[32], vids[8], pids[8], ser[80], devnum[8], devnum3[8], product_attr[32];
    snprintf(name, sizeof name, "1-%d", d->devnum);
    snprintf(vids, sizeof vids, "%04x\n", vid);
    snprintf(pids, sizeof pids, "%04x\n", pid);
    snprintf(ser, sizeof ser, "%s\n", d->serial);
    snprintf(devnum, sizeof devnum, "%d\n", d->devnum);
    snprintf(devnum3, sizeof devnum3, "%03d", d->devnum);
    snprintf(product_attr, sizeof product_attr, "%s\n", product(d));
    snprintf(d->devnode, sizeof d->devnode, "/dev/bus/usb/001/%03d", d->devnum);
    if (kind == FAKE_NOSERIAL)
        d->syspath = umockdev_testbed_add_device(bed->tb, "usb", name, NULL, "idVendor", vids, "idProduct", pids,
                                                 "busnum", "1\n", "devnum", devnum, "bConfigurationValue", "1\n",
                                                 "speed", "12\n", "product", product_attr, NULL, "DEVNAME", d->devnode,
                                                 "DEVTYPE", "usb_device", "BUSNUM", "001", "DEVNUM", devnum3, NULL);
    else
        d->syspath = umockdev_testbed_add_device(
            bed->tb, "usb", name, NULL, "idVendor", vids, "idProduct", pids, "serial", ser, "busnum", "1\n", "devnum",
            devnum, "bConfigurationValue", "1\n", "speed", "12\n", "product", product_attr, NULL, "DEVNAME", d->devnode,
            "DEVTYPE", "usb_device", "BUSNUM", "001", "DEVNUM", devnum3, NULL);
    umockdev_testbed_set_attribute_binary(bed->tb, d->syspath, "descriptors", desc->data, (gint)desc->len);
    d->desc = desc;
    snprintf(d->nodefile, sizeof d->nodefile, "%s%s", bed->root, d->devnode);
    g_file_set_contents(d->nodefile, "", 0, NULL);
    d->handler = umockdev_ioctl_base_new();
    g_signal_connect(d->handler, "handle-ioctl", G_CALLBACK(on_ioctl), d);
    GError *e = NULL;
    if (!umockdev_testbed_attach_ioctl(bed->tb, d->devnode, d->handler, &e)) {
        fprintf(stderr, "fake_usb: attach_ioctl %s: %s\n", d->devnode, e ? e->message : "?");
        g_clear_error(&e);
    }
    bed->devs[bed->ndevs++] = d;
    if (uevent)
        umockdev_testbed_uevent(bed->tb, d->syspath, "add");
    return d;
}

void fake_kill(fake_dev *d)
{
    g_mutex_lock(&d->m);
    d->dead = true;
    for (furb *f = d->pending, *next; f; f = next) {
        next = f->next;
        finish_urb(d, f, -ESHUTDOWN, 0);
    }
    d->pending = NULL;
    g_mutex_unlock(&d->m);
}

void fake_remove(fake_dev *d)
{
    if (d->removed)
        return;
    d->removed = true;
    umockdev_testbed_uevent(d->bed->tb, d->syspath, "remove");
    umockdev_testbed_remove_device(d->bed->tb, d->syspath);
    g_unlink(d->nodefile);
}

void fake_unplug(fake_dev *d)
{
    fake_kill(d);
    fake_remove(d);
}

static void free_dev(fake_dev *d)
{
    for (furb *f = d->pending, *next; f; f = next) {
        next = f->next;
        free_furb(f);
    }
    for (furb *f = d->done, *next; f; f = next) {
        next = f->next;
        free_furb(f);
    }
    g_object_unref(d->handler);
    g_byte_array_free(d->tx, TRUE);
    g_byte_array_free(d->rx, TRUE);
    g_byte_array_free(d->desc, TRUE);
    g_free(d->syspath);
    free(d->flash);
    g_mutex_clear(&d->m);
    free(d);
}

void fake_bed_free(fake_bed *bed)
{
    if (!bed)
        return;
    g_object_unref(bed->tb);
    for (int i = 0; i < bed->ndevs; i++)
        free_dev(bed->devs[i]);
    g_free(bed->root);
    free(bed);
}

/* ---- knobs and observations ---- */

void fake_set_echo(fake_dev *d, bool on)
{
    g_mutex_lock(&d->m);
    d->echo = on;
    g_mutex_unlock(&d->m);
}

void fake_set_hold_out(fake_dev *d, bool on)
{
    g_mutex_lock(&d->m);
    d->hold_out = on;
    if (!on)
        service(d);
    g_mutex_unlock(&d->m);
}

void fake_stall_in(fake_dev *d)
{
    g_mutex_lock(&d->m);
    d->stall_next_in = true;
    service(d);
    g_mutex_unlock(&d->m);
}

void fake_print(fake_dev *d, const void *data, size_t len)
{
    g_mutex_lock(&d->m);
    g_byte_array_append(d->tx, data, (guint)len);
    service(d);
    g_mutex_unlock(&d->m);
}

void fake_pb_fail_write_at(fake_dev *d, uint32_t addr)
{
    g_mutex_lock(&d->m);
    d->fail_write = true;
    d->fail_write_at = addr;
    g_mutex_unlock(&d->m);
}

void fake_pb_corrupt_read_at(fake_dev *d, uint32_t addr)
{
    g_mutex_lock(&d->m);
    d->corrupt = true;
    d->corrupt_at = addr;
    g_mutex_unlock(&d->m);
}

void fake_pb_hang_erase(fake_dev *d, bool on)
{
    g_mutex_lock(&d->m);
    d->hang_erase = on;
    g_mutex_unlock(&d->m);
}

void fake_get_stats(fake_dev *d, fake_stats *out)
{
    g_mutex_lock(&d->m);
    *out = d->st;
    g_mutex_unlock(&d->m);
}

size_t fake_received(fake_dev *d, uint8_t *out, size_t cap)
{
    g_mutex_lock(&d->m);
    size_t n = d->rx->len < cap ? d->rx->len : cap;
    memcpy(out, d->rx->data, n);
    g_mutex_unlock(&d->m);
    return n;
}

void fake_flash_read(fake_dev *d, uint32_t addr, uint8_t *out, size_t len)
{
    g_mutex_lock(&d->m);
    if (d->flash && addr >= FAKE_FLASH_BASE && len <= FAKE_FLASH_SIZE &&
        addr - FAKE_FLASH_BASE <= FAKE_FLASH_SIZE - len)
        memcpy(out, d->flash + (addr - FAKE_FLASH_BASE), len);
    else
        memset(out, 0, len);
    g_mutex_unlock(&d->m);
}

const char *fake_serial(const fake_dev *d)
{
    return d->serial;
}
