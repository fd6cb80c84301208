/* The libusb backend's wrk_transport: the libusb context on the ifm_loop,
 * transfers, discovery (hotplug or rescan), device lifetime, the 1200-baud touch.
 * The CDC ops live in usb_cdc.c, flashing in usb_picoboot.c. */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "icefarm/log.h"
#include "icefarm/grow.h"
#include "usb_internal.h"

static const wrk_transport_ops usb_ops;

usb_transport *usb_of(const wrk_transport *t)
{
    return t && t->ops == &usb_ops ? (usb_transport *)t : NULL;
}

void usb_options_default(usb_options *o)
{
    *o = (usb_options){
        .rescan_ms = 1000,
        .force_rescan = false,
        .ctrl_timeout_ms = 1000,
        .write_timeout_ms = 5000,
        .write_chunk = 4096,
        .rx_size = 4096,
        .rx_transfers = 2,
        .picoboot_timeout_ms = 3000,
        .picoboot_ack_ms = 10000,
        .log_level = 0,
    };
}

bool usb_transport_uses_hotplug(const wrk_transport *t)
{
    const usb_transport *ut = usb_of(t);
    return ut && ut->hotplug;
}

/* ---- errors ---- */

int usb_errno(int e)
{
    switch (e) {
    case LIBUSB_SUCCESS:
        return 0;
    case LIBUSB_ERROR_INVALID_PARAM:
        return -EINVAL;
    case LIBUSB_ERROR_ACCESS:
        return -EACCES;
    case LIBUSB_ERROR_NO_DEVICE:
        return -ENODEV;
    case LIBUSB_ERROR_NOT_FOUND:
        return -ENOENT;
    case LIBUSB_ERROR_BUSY:
        return -EBUSY;
    case LIBUSB_ERROR_TIMEOUT:
        return -ETIMEDOUT;
    case LIBUSB_ERROR_OVERFLOW:
        return -EOVERFLOW;
    case LIBUSB_ERROR_PIPE:
        return -EPIPE;
    case LIBUSB_ERROR_INTERRUPTED:
        return -EINTR;
    case LIBUSB_ERROR_NO_MEM:
        return -ENOMEM;
    case LIBUSB_ERROR_NOT_SUPPORTED:
        return -EOPNOTSUPP;
    default:
        return -EIO;
    }
}

int usb_status_errno(enum libusb_transfer_status st)
{
    switch (st) {
    case LIBUSB_TRANSFER_COMPLETED:
        return 0;
    case LIBUSB_TRANSFER_TIMED_OUT:
        return -ETIMEDOUT;
    case LIBUSB_TRANSFER_CANCELLED:
        return -ECANCELED;
    case LIBUSB_TRANSFER_STALL:
        return -EPIPE;
    case LIBUSB_TRANSFER_NO_DEVICE:
        return -ENODEV;
    case LIBUSB_TRANSFER_OVERFLOW:
        return -EOVERFLOW;
    default:
        return -EIO;
    }
}

const char *usb_status_text(enum libusb_transfer_status st)
{
    switch (st) {
    case LIBUSB_TRANSFER_COMPLETED:
        return "completed";
    case LIBUSB_TRANSFER_TIMED_OUT:
        return "timed out";
    case LIBUSB_TRANSFER_CANCELLED:
        return "cancelled";
    case LIBUSB_TRANSFER_STALL:
        return "endpoint stalled";
    case LIBUSB_TRANSFER_NO_DEVICE:
        return "device gone";
    case LIBUSB_TRANSFER_OVERFLOW:
        return "overflow";
    default:
        return "I/O error";
    }
}

/* ---- the libusb context on the ifm_loop ---- */

static void pump(usb_transport *ut)
{
    struct timeval zero = { 0, 0 };
    libusb_handle_events_timeout_completed(ut->ctx, &zero, NULL);
    usb_arm_timeout(ut);
}

static void on_fd(ifm_loop *loop, int fd, int events, void *arg)
{
    pump(arg);
}

static void on_timeout(ifm_loop *loop, void *arg)
{
    usb_transport *ut = arg;
    ut->t_timeout = 0;
    pump(ut);
}

/* Only needed where libusb has no timerfd: its transfer timeouts then fire from
 * libusb_handle_events, which we call when the next one is due. */
void usb_arm_timeout(usb_transport *ut)
{
    if (ut->timerfd || ut->freeing)
        return;
    ifm_timer_cancel(ut->base.loop, ut->t_timeout);
    ut->t_timeout = 0;
    struct timeval tv;
    if (libusb_get_next_timeout(ut->ctx, &tv) == 1) {
        uint64_t ms = (uint64_t)tv.tv_sec * 1000u + ((uint64_t)tv.tv_usec + 999u) / 1000u;
        ut->t_timeout = ifm_timer_add(ut->base.loop, ms, on_timeout, ut);
    }
}

static void LIBUSB_CALL fd_added(int fd, short events, void *arg)
{
    usb_transport *ut = arg;
    int ev = ((events & POLLIN) ? IFM_READ : 0) | ((events & POLLOUT) ? IFM_WRITE : 0);
    if (ifm_loop_watch(ut->base.loop, fd, ev, on_fd, ut) != 0) {
        IFM_ERROR("libusb: cannot watch fd %d (out of memory)", fd);
        return;
    }
    for (size_t i = 0; i < ut->nfds; i++)
        if (ut->fds[i] == fd)
            return;
    int *nf = ifm_grow(ut->fds, &ut->capfds, ut->nfds, sizeof *nf, 8);
    if (!nf)
        return; /* still watched; unwatched when libusb removes it */
    ut->fds = nf;
    ut->fds[ut->nfds++] = fd;
}

static void LIBUSB_CALL fd_removed(int fd, void *arg)
{
    usb_transport *ut = arg;
    ifm_loop_unwatch(ut->base.loop, fd);
    for (size_t i = 0; i < ut->nfds; i++)
        if (ut->fds[i] == fd) {
            ut->fds[i] = ut->fds[--ut->nfds];
            break;
        }
}

/* ---- transfers ---- */

static void LIBUSB_CALL xfer_cb(struct libusb_transfer *t)
{
    usb_xfer *x = t->user_data;
    wrk_usbdev *dev = x->dev;
    bool nodev = t->status == LIBUSB_TRANSFER_NO_DEVICE;
    x->submitted = false;
    dev->inflight--;
    if (x->fn)
        x->fn(x); /* frees or resubmits x */
    else
        usb_xfer_free(x);
    if (nodev)
        usb_dev_lost(dev);
    if (dev->inflight == 0 && dev->left)
        usb_kick(dev->ut);
}

static usb_xfer *xfer_alloc(wrk_usbdev *dev, int len, usb_xfer_fn fn, void *owner)
{
    usb_xfer *x = calloc(1, sizeof *x);
    struct libusb_transfer *t = libusb_alloc_transfer(0);
    uint8_t *buf = malloc(len > 0 ? (size_t)len : 1);
    if (!x || !t || !buf) {
        free(x);
        libusb_free_transfer(t);
        free(buf);
        return NULL;
    }
    t->dev_handle = dev->h;
    t->flags = LIBUSB_TRANSFER_FREE_BUFFER;
    t->buffer = buf;
    t->length = len;
    t->callback = xfer_cb;
    t->user_data = x;
    x->t = t;
    x->dev = dev;
    x->fn = fn;
    x->owner = owner;
    x->next = dev->xfers;
    if (dev->xfers)
        dev->xfers->prev = x;
    dev->xfers = x;
    return x;
}

usb_xfer *usb_xfer_new(wrk_usbdev *dev, int len, usb_xfer_fn fn, void *owner)
{
    return xfer_alloc(dev, len, fn, owner);
}

usb_xfer *usb_xfer_control(wrk_usbdev *dev, uint8_t type, uint8_t req, uint16_t value, uint16_t index, const void *data,
                           uint16_t len, usb_xfer_fn fn, void *owner)
{
    usb_xfer *x = xfer_alloc(dev, LIBUSB_CONTROL_SETUP_SIZE + len, fn, owner);
    if (!x)
        return NULL;
    uint8_t *buf = x->t->buffer;
    libusb_fill_control_setup(buf, type, req, value, index, len);
    if (!(type & LIBUSB_ENDPOINT_IN) && len)
        memcpy(buf + LIBUSB_CONTROL_SETUP_SIZE, data, len);
    libusb_fill_control_transfer(x->t, dev->h, buf, xfer_cb, x, dev->ut->opt.ctrl_timeout_ms);
    return x;
}

void usb_xfer_bulk(usb_xfer *x, uint8_t ep, int len, unsigned timeout_ms)
{
    libusb_fill_bulk_transfer(x->t, x->dev->h, ep, x->t->buffer, len, xfer_cb, x, timeout_ms);
}

int usb_xfer_submit(usb_xfer *x)
{
    int rc = libusb_submit_transfer(x->t);
    if (rc == 0) {
        x->submitted = true;
        x->dev->inflight++;
        usb_arm_timeout(x->dev->ut);
    } else if (rc == LIBUSB_ERROR_NO_DEVICE) {
        usb_dev_lost(x->dev);
    }
    return rc;
}

void usb_xfer_free(usb_xfer *x)
{
    if (!x)
        return;
    wrk_usbdev *dev = x->dev;
    if (x->prev)
        x->prev->next = x->next;
    else
        dev->xfers = x->next;
    if (x->next)
        x->next->prev = x->prev;
    libusb_free_transfer(x->t);
    free(x);
}

void usb_xfer_abandon(usb_xfer *x)
{
    if (!x)
        return;
    if (!x->submitted) {
        usb_xfer_free(x);
        return;
    }
    x->fn = NULL;
    x->owner = NULL;
    /* NOT_FOUND: already completed, its callback is pending. NO_DEVICE: libusb
     * completes it when it handles the disconnect. Either way xfer_cb frees it. */
    libusb_cancel_transfer(x->t);
}

static void abandon_all(wrk_usbdev *d)
{
    for (usb_xfer *x = d->xfers, *next; x; x = next) {
        next = x->next;
        usb_xfer_abandon(x);
    }
}

/* ---- device lifetime ---- */

static void work(ifm_loop *loop, void *arg);

void usb_kick(usb_transport *ut)
{
    if (!ut->freeing && !ut->t_work)
        ut->t_work = ifm_timer_add(ut->base.loop, 0, work, ut);
}

void usb_dev_lost(wrk_usbdev *dev)
{
    if (dev->ut->freeing || dev->lost)
        return;
    dev->lost = true;
    usb_kick(dev->ut);
}

int usb_dev_usable(const wrk_usbdev *dev)
{
    if (!dev || dev->state != USBDEV_PRESENT || dev->lost || dev->left)
        return -ENODEV;
    return 0;
}

bool usb_is_bootsel(const wrk_usbdev *dev)
{
    return dev->info.vid == WRK_VID_RPI && dev->info.pid == WRK_PID_BOOTSEL;
}

int usb_claim(wrk_usbdev *dev, int iface, char *why, size_t whylen)
{
    if (iface < 0 || iface > 31) {
        snprintf(why, whylen, "bad interface number %d", iface);
        return -EINVAL;
    }
    if (dev->claimed & (1u << iface))
        return 0;
    /* Where libusb cannot detach on claim, detach by hand (cdc_acm holds the
     * CDC interfaces; the bootrom's PICOBOOT interface has no driver). */
    if (!dev->autodetach && libusb_kernel_driver_active(dev->h, iface) == 1) {
        int rc = libusb_detach_kernel_driver(dev->h, iface);
        if (rc != 0 && rc != LIBUSB_ERROR_NOT_FOUND) {
            if (rc == LIBUSB_ERROR_NO_DEVICE)
                usb_dev_lost(dev);
            snprintf(why, whylen, "cannot detach the kernel driver from interface %d: %s", iface, libusb_strerror(rc));
            return usb_errno(rc);
        }
    }
    int rc = libusb_claim_interface(dev->h, iface);
    if (rc != 0) {
        if (rc == LIBUSB_ERROR_NO_DEVICE)
            usb_dev_lost(dev);
        snprintf(why, whylen, "cannot claim interface %d: %s", iface, libusb_strerror(rc));
        return usb_errno(rc);
    }
    dev->claimed |= 1u << iface;
    return 0;
}

static bool wanted(uint16_t vid, uint16_t pid)
{
    if (vid == WRK_VID_RPI)
        return pid == WRK_PID_BOOTSEL || pid == WRK_PID_PICO_STDIO;
    if (vid == WRK_VID_PIDCODES)
        return pid == WRK_PID_PICO_ICE || pid == WRK_PID_PICO2_ICE;
    return false;
}

static wrk_usbdev *find_dev(usb_transport *ut, libusb_device *ldev)
{
    for (wrk_usbdev *d = ut->devs; d; d = d->next)
        if (d->ldev == ldev && !d->left)
            return d;
    return NULL;
}

static void add_device(usb_transport *ut, libusb_device *ldev)
{
    struct libusb_device_descriptor dd;
    if (libusb_get_device_descriptor(ldev, &dd) != 0 || !wanted(dd.idVendor, dd.idProduct))
        return;
    if (find_dev(ut, ldev))
        return;
    wrk_usbdev *d = calloc(1, sizeof *d);
    if (!d) {
        IFM_ERROR("libusb: out of memory for a new device");
        return;
    }
    d->ut = ut;
    d->ldev = libusb_ref_device(ldev);
    d->state = USBDEV_PROBING;
    d->info.vid = dd.idVendor;
    d->info.pid = dd.idProduct;
    d->iserial = dd.iSerialNumber;
    /* Keep discovery order: enumeration at start reports boards bus order. */
    wrk_usbdev **pp = &ut->devs;
    while (*pp)
        pp = &(*pp)->next;
    *pp = d;
    usb_kick(ut);
}

static void device_left(usb_transport *ut, libusb_device *ldev)
{
    wrk_usbdev *d = find_dev(ut, ldev);
    if (d) {
        d->left = true;
        usb_kick(ut);
    }
}

static int LIBUSB_CALL hotplug_cb(libusb_context *ctx, libusb_device *ldev, libusb_hotplug_event ev, void *arg)
{
    usb_transport *ut = arg;
    if (ut->freeing)
        return 0;
    /* Only note it: the work turn opens and identifies it, outside libusb's
     * event handling, where synchronous requests are allowed. */
    if (ev == LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED)
        add_device(ut, ldev);
    else
        device_left(ut, ldev);
    return 0;
}

static void rescan(ifm_loop *loop, void *arg)
{
    usb_transport *ut = arg;
    ut->t_rescan = 0;
    libusb_device **list;
    ssize_t n = libusb_get_device_list(ut->ctx, &list);
    if (n >= 0) {
        for (wrk_usbdev *d = ut->devs; d; d = d->next) {
            bool present = false;
            for (ssize_t i = 0; i < n && !present; i++)
                present = list[i] == d->ldev;
            if (!present && !d->left) {
                d->left = true;
                usb_kick(ut);
            }
        }
        for (ssize_t i = 0; i < n; i++)
            add_device(ut, list[i]);
        libusb_free_device_list(list, 1);
    } else {
        IFM_WARN("libusb: cannot list devices: %s", libusb_strerror((int)n));
    }
    ut->t_rescan = ifm_timer_add(ut->base.loop, ut->opt.rescan_ms, rescan, ut);
}

/* ---- identifying a device: its serial string ---- */

static void ignore_dev(wrk_usbdev *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void ignore_dev(wrk_usbdev *d, const char *fmt, ...)
{
    char why[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    d->ignored = true;
    d->probing = false;
    IFM_WARN("ignoring USB device %04x:%04x (bus %u, address %u): %s", d->info.vid, d->info.pid,
             libusb_get_bus_number(d->ldev), libusb_get_device_address(d->ldev), why);
}

static void probe_serial_done(usb_xfer *x)
{
    wrk_usbdev *d = x->dev;
    struct libusb_transfer *t = x->t;
    enum libusb_transfer_status st = t->status;
    char serial[WRK_SERIAL_MAX];
    size_t n = 0;
    if (st == LIBUSB_TRANSFER_COMPLETED && t->actual_length >= 2) {
        const uint8_t *p = libusb_control_transfer_get_data(t);
        size_t len = p[0] < (size_t)t->actual_length ? p[0] : (size_t)t->actual_length;
        if (p[1] == LIBUSB_DT_STRING) {
            /* UTF-16LE; a board id is ASCII, anything else becomes '?'. */
            for (size_t i = 2; i + 1 < len && n + 1 < sizeof serial; i += 2) {
                unsigned c = p[i] | (unsigned)p[i + 1] << 8;
                serial[n++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
            }
        }
    }
    serial[n] = '\0';
    usb_xfer_free(x);
    d->probing = false;
    if (d->left || d->lost || st == LIBUSB_TRANSFER_NO_DEVICE)
        return;
    if (st != LIBUSB_TRANSFER_COMPLETED) {
        ignore_dev(d, "reading its serial number failed: %s", usb_status_text(st));
        return;
    }
    if (n == 0) {
        ignore_dev(d, "its serial number is empty");
        return;
    }
    memcpy(d->info.serial, serial, n + 1);
    d->state = USBDEV_READY;
    usb_kick(d->ut);
}

static void probe_langid_done(usb_xfer *x)
{
    wrk_usbdev *d = x->dev;
    struct libusb_transfer *t = x->t;
    enum libusb_transfer_status st = t->status;
    uint16_t lang = 0x0409; /* what every RP2040/RP2350 and TinyUSB device answers with */
    if (st == LIBUSB_TRANSFER_COMPLETED && t->actual_length >= 4) {
        const uint8_t *p = libusb_control_transfer_get_data(t);
        if (p[1] == LIBUSB_DT_STRING && p[0] >= 4)
            lang = p[2] | (uint16_t)(p[3] << 8);
    }
    usb_xfer_free(x);
    d->probing = false;
    if (d->left || d->lost || st == LIBUSB_TRANSFER_NO_DEVICE)
        return;
    d->langid = lang;
    usb_xfer *s =
        usb_xfer_control(d, LIBUSB_ENDPOINT_IN, LIBUSB_REQUEST_GET_DESCRIPTOR,
                         (uint16_t)(LIBUSB_DT_STRING << 8 | d->iserial), lang, NULL, 255, probe_serial_done, d);
    if (!s) {
        ignore_dev(d, "out of memory");
        return;
    }
    int rc = usb_xfer_submit(s);
    if (rc) {
        usb_xfer_free(s);
        if (rc != LIBUSB_ERROR_NO_DEVICE)
            ignore_dev(d, "cannot ask for its serial number: %s", libusb_strerror(rc));
        return;
    }
    d->probing = true;
}

static void probe_start(wrk_usbdev *d)
{
    int rc = libusb_open(d->ldev, &d->h);
    if (rc) {
        d->h = NULL;
        if (rc == LIBUSB_ERROR_NO_DEVICE) {
            d->lost = true;
            return;
        }
        ignore_dev(d, "cannot open it: %s%s", libusb_strerror(rc),
                   rc == LIBUSB_ERROR_ACCESS ? " (the worker needs read/write access to its "
                                               "/dev/bus/usb node: install a udev rule)"
                                             : "");
        return;
    }
    d->autodetach = libusb_set_auto_detach_kernel_driver(d->h, 1) == 0;
    if (!d->iserial) {
        ignore_dev(d, "it has no serial number");
        return;
    }
    usb_xfer *x = usb_xfer_control(d, LIBUSB_ENDPOINT_IN, LIBUSB_REQUEST_GET_DESCRIPTOR, LIBUSB_DT_STRING << 8, 0, NULL,
                                   255, probe_langid_done, d);
    if (!x) {
        ignore_dev(d, "out of memory");
        return;
    }
    rc = usb_xfer_submit(x);
    if (rc) {
        usb_xfer_free(x);
        if (rc != LIBUSB_ERROR_NO_DEVICE)
            ignore_dev(d, "cannot ask for its string descriptors: %s", libusb_strerror(rc));
        return;
    }
    d->probing = true;
}

static void release_claims(wrk_usbdev *d)
{
    for (int i = 0; i < 32; i++)
        if (d->claimed & (1u << i))
            libusb_release_interface(d->h, i); /* reattaches the kernel driver */
    d->claimed = 0;
}

static void dev_free(wrk_usbdev *d)
{
    ifm_timer_cancel(d->ut->base.loop, d->t_drain);
    usb_urb_free_all(d);
    while (d->xfers)
        usb_xfer_free(d->xfers); /* none is in flight here */
    if (d->h)
        libusb_close(d->h);
    libusb_unref_device(d->ldev);
    free(d);
}

static void report_leave(usb_transport *ut, wrk_usbdev *d)
{
    d->state = USBDEV_GONE;
    /* As the sim: the channel goes silently, a running flash fails, then leave. */
    usb_cdc_drop(d);
    usb_flash_abort(d, true, -ENODEV, "device left during flash");
    IFM_DEBUG("serial=%s left (%04x:%04x)", d->info.serial, d->info.vid, d->info.pid);
    ut->ev.leave(ut->ev_arg, d);
    abandon_all(d);
}

static void drain_timeout(ifm_loop *loop, void *arg)
{
    wrk_usbdev *d = arg;
    d->t_drain = 0;
    usb_kick(d->ut);
}

static void work(ifm_loop *loop, void *arg)
{
    usb_transport *ut = arg;
    ut->t_work = 0;
restart:
    for (wrk_usbdev **pp = &ut->devs, *d; (d = *pp) != NULL;) {
        bool gone = d->left || d->lost;
        if (d->state == USBDEV_PRESENT && gone) {
            /* Its URBs complete (with -ENODEV) before the leave is reported. */
            if (!usb_urb_drained(d)) {
                if (!d->t_drain)
                    d->t_drain = ifm_timer_add(loop, USB_URB_DRAIN_MS + 1, drain_timeout, d);
                pp = &d->next;
                continue;
            }
            ifm_timer_cancel(loop, d->t_drain);
            d->t_drain = 0;
            report_leave(ut, d);
            goto restart; /* the callback may have changed anything */
        }
        if (gone && d->state != USBDEV_GONE) {
            abandon_all(d); /* a probe in flight */
            d->state = USBDEV_GONE;
        }
        if (d->state == USBDEV_PROBING && !d->ignored && !d->probing && !d->h)
            probe_start(d);
        if (d->state == USBDEV_READY) {
            d->state = USBDEV_PRESENT;
            IFM_DEBUG("serial=%s arrived (%04x:%04x)", d->info.serial, d->info.vid, d->info.pid);
            ut->ev.arrive(ut->ev_arg, d, &d->info);
            goto restart;
        }
        if (d->left && d->state == USBDEV_GONE && d->inflight == 0 && !d->urbs) {
            *pp = d->next;
            dev_free(d);
            continue;
        }
        pp = &d->next;
    }
}

/* ---- ops ---- */

static int usb_start(wrk_transport *t, const wrk_transport_events *ev, void *arg)
{
    usb_transport *ut = usb_of(t);
    if (!ut || !ev || !ev->arrive || !ev->leave)
        return -EINVAL;
    if (ut->started)
        return -EALREADY;
    ut->started = true;
    ut->ev = *ev;
    ut->ev_arg = arg;
    if (!ut->opt.force_rescan && libusb_has_capability(LIBUSB_CAP_HAS_HOTPLUG)) {
        static const uint16_t vids[2] = { WRK_VID_RPI, WRK_VID_PIDCODES };
        int rc = 0;
        for (int i = 0; i < 2 && rc == 0; i++) {
            /* ENUMERATE reports the present devices from inside this call; they
             * are only queued, so arrive still comes from a later loop turn. */
            rc = libusb_hotplug_register_callback(
                ut->ctx, LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED | LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT,
                LIBUSB_HOTPLUG_ENUMERATE, vids[i], LIBUSB_HOTPLUG_MATCH_ANY, LIBUSB_HOTPLUG_MATCH_ANY, hotplug_cb, ut,
                &ut->hp[i]);
            if (rc == 0)
                ut->nhp++;
        }
        if (rc == 0) {
            ut->hotplug = true;
        } else {
            IFM_WARN("libusb hotplug registration failed (%s): rescanning instead", libusb_strerror(rc));
            for (int i = 0; i < ut->nhp; i++)
                libusb_hotplug_deregister_callback(ut->ctx, ut->hp[i]);
            ut->nhp = 0;
        }
    }
    if (!ut->hotplug) {
        IFM_INFO("libusb: discovering boards by rescanning every %u ms", ut->opt.rescan_ms);
        ut->t_rescan = ifm_timer_add(ut->base.loop, 0, rescan, ut);
    }
    return 0;
}

/* The 1200-baud touch: what `picocom --baud 1200` did, as control requests. */
static void touch_done(usb_xfer *x)
{
    wrk_usbdev *d = x->dev;
    int step = x->tag & 0xff, iface = x->tag >> 8;
    enum libusb_transfer_status st = x->t->status;
    usb_xfer_free(x);
    /* A board that took the hint is gone (NO_DEVICE, or an error mid-reset). */
    if (usb_dev_usable(d) != 0 || st == LIBUSB_TRANSFER_NO_DEVICE || step >= 2)
        return;
    uint16_t lines = step == 0 ? 0x0003 : 0x0000; /* DTR|RTS up, then down */
    usb_xfer *n = usb_xfer_control(d, LIBUSB_REQUEST_TYPE_CLASS | LIBUSB_RECIPIENT_INTERFACE, 0x22, lines,
                                   (uint16_t)iface, NULL, 0, touch_done, NULL);
    if (!n)
        return;
    n->tag = (step + 1) | iface << 8;
    if (usb_xfer_submit(n) != 0)
        usb_xfer_free(n);
}

static int usb_touch_1200(wrk_transport *t, wrk_usbdev *dev)
{
    if (!usb_of(t))
        return -EINVAL;
    int rc = usb_dev_usable(dev);
    if (rc)
        return rc;
    if (usb_is_bootsel(dev))
        return -EOPNOTSUPP; /* the bootrom has no CDC to touch */
    uint8_t ctrl_if, data_if, ep_in, ep_out;
    uint16_t mps_in, mps_out;
    rc = usb_cdc_find(dev, &ctrl_if, &data_if, &ep_in, &ep_out, &mps_in, &mps_out);
    if (rc)
        return rc;
    char why[128];
    rc = usb_claim(dev, ctrl_if, why, sizeof why);
    if (rc) {
        IFM_WARN("serial=%s 1200-baud touch: %s", dev->info.serial, why);
        return rc;
    }
    /* dwDTERate 1200 (LE), 1 stop bit, no parity, 8 data bits. */
    static const uint8_t lc1200[7] = { 0xb0, 0x04, 0x00, 0x00, 0, 0, 8 };
    usb_xfer *x = usb_xfer_control(dev, LIBUSB_REQUEST_TYPE_CLASS | LIBUSB_RECIPIENT_INTERFACE, 0x20, 0, ctrl_if,
                                   lc1200, sizeof lc1200, touch_done, NULL);
    if (!x)
        return -ENOMEM;
    x->tag = 0 | ctrl_if << 8;
    rc = usb_xfer_submit(x);
    if (rc) {
        usb_xfer_free(x);
        return usb_errno(rc);
    }
    return 0;
}

static size_t inflight_total(const usb_transport *ut)
{
    size_t n = 0;
    for (const wrk_usbdev *d = ut->devs; d; d = d->next)
        n += d->inflight;
    return n;
}

static void usb_free(wrk_transport *t)
{
    usb_transport *ut = usb_of(t);
    if (!ut)
        return;
    ut->freeing = true;
    ifm_loop *loop = ut->base.loop;
    ifm_timer_cancel(loop, ut->t_work);
    ifm_timer_cancel(loop, ut->t_rescan);
    ifm_timer_cancel(loop, ut->t_timeout);
    ut->t_work = ut->t_rescan = ut->t_timeout = 0;
    for (int i = 0; i < ut->nhp; i++)
        libusb_hotplug_deregister_callback(ut->ctx, ut->hp[i]);
    ut->nhp = 0;
    for (wrk_usbdev *d = ut->devs; d; d = d->next) {
        usb_cdc_drop(d);
        usb_flash_abort(d, false, 0, NULL);
        abandon_all(d);
        usb_urb_silence_all(d);
    }
    /* Cancellation completes asynchronously: let libusb hand every transfer
     * back before the handles close (bounded: 5 s). */
    for (int i = 0; i < 500 && inflight_total(ut) > 0; i++) {
        struct timeval tv = { 0, 10000 };
        libusb_handle_events_timeout_completed(ut->ctx, &tv, NULL);
    }
    bool stuck = false;
    for (wrk_usbdev *d = ut->devs, *next; d; d = next) {
        next = d->next;
        if (d->inflight) {
            IFM_WARN("serial=%s %u USB transfers did not complete; leaking them", d->info.serial, d->inflight);
            stuck = true;
            continue;
        }
        if (d->h && !d->lost && !d->left)
            release_claims(d);
        dev_free(d);
    }
    ut->devs = NULL;
    libusb_set_pollfd_notifiers(ut->ctx, NULL, NULL, NULL);
    for (size_t i = 0; i < ut->nfds; i++)
        ifm_loop_unwatch(loop, ut->fds[i]);
    if (!stuck)
        libusb_exit(ut->ctx);
    free(ut->fds);
    free(ut);
}

static const wrk_transport_ops usb_ops = {
    .name = "libusb",
    .start = usb_start,
    .touch_1200 = usb_touch_1200,
    .flash_uf2 = usb_flash_uf2,
    .cdc_open = usb_cdc_open,
    .cdc_write = usb_cdc_write,
    .cdc_close = usb_cdc_close,
    .usb_desc = usb_usb_desc,
    .usb_endpoints = usb_usb_endpoints,
    .usb_claim = usb_usb_claim,
    .usb_release = usb_usb_release,
    .usb_set_config = usb_usb_set_config,
    .usb_set_altsetting = usb_usb_set_altsetting,
    .usb_clear_halt = usb_usb_clear_halt,
    .usb_reset = usb_usb_reset,
    .urb_alloc = usb_urb_alloc,
    .urb_free = usb_urb_free,
    .urb_submit = usb_urb_submit,
    .urb_cancel = usb_urb_cancel,
    .take_hook = NULL,
    .free = usb_free,
};

wrk_transport *usb_transport_new(ifm_loop *loop, const usb_options *opts)
{
    usb_options o;
    if (opts)
        o = *opts;
    else
        usb_options_default(&o);
    if (!loop || o.rescan_ms == 0 || o.ctrl_timeout_ms == 0 || o.write_chunk == 0 || o.rx_size == 0 ||
        o.rx_transfers == 0 || o.rx_transfers > 8 || o.rx_size > 1u << 20 || o.write_chunk > 1u << 20 ||
        o.picoboot_timeout_ms == 0 || o.picoboot_ack_ms == 0)
        return NULL;
    usb_transport *ut = calloc(1, sizeof *ut);
    if (!ut)
        return NULL;
    ut->base = (wrk_transport){ .ops = &usb_ops, .loop = loop };
    ut->opt = o;
    int rc = libusb_init(&ut->ctx);
    if (rc != 0) {
        IFM_ERROR("libusb_init failed: %s", libusb_strerror(rc));
        free(ut);
        return NULL;
    }
    if (o.log_level > 0)
        libusb_set_option(ut->ctx, LIBUSB_OPTION_LOG_LEVEL, o.log_level);
    ut->timerfd = libusb_pollfds_handle_timeouts(ut->ctx) != 0;
    libusb_set_pollfd_notifiers(ut->ctx, fd_added, fd_removed, ut);
    const struct libusb_pollfd **pfds = libusb_get_pollfds(ut->ctx);
    if (!pfds) {
        IFM_ERROR("libusb cannot hand over its file descriptors on this platform");
        libusb_set_pollfd_notifiers(ut->ctx, NULL, NULL, NULL);
        for (size_t i = 0; i < ut->nfds; i++)
            ifm_loop_unwatch(loop, ut->fds[i]);
        libusb_exit(ut->ctx);
        free(ut->fds);
        free(ut);
        return NULL;
    }
    for (size_t i = 0; pfds[i]; i++)
        fd_added(pfds[i]->fd, pfds[i]->events, ut);
    libusb_free_pollfds(pfds);
    return &ut->base;
}
