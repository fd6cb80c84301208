/* The libusb backend at the URB level (transport.h): what the USB/IP server
 * forwards. Descriptors come from libusb's cached copies (no I/O); URBs are
 * libusb asynchronous transfers with no timeout (the client owns a URB's life
 * through cancel); the control-plane calls are libusb's synchronous ones.
 *
 * Lifetime. A URB is a usb_urb holding its own libusb transfer and buffer (8
 * bytes of SETUP room, then the data), listed on its device. The device record
 * stays allocated while any URB of it exists, so a URB freed after its device
 * left is still safe. When a device goes (unplug, re-enumeration) the transport
 * cancels every URB in flight and reports `leave` only once libusb handed them
 * all back, each completed with -ENODEV; if libusb has not done so within
 * USB_URB_DRAIN_MS the remaining ones are completed by us with -ENODEV and
 * their transfers are freed silently whenever libusb returns them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "icefarm/log.h"
#include "icefarm/usbip.h"
#include "usb_internal.h"

struct usb_urb {
    wrk_urb u; /* first: a wrk_urb* is a usb_urb* */
    wrk_usbdev *dev;
    struct libusb_transfer *t;
    uint8_t *raw; /* 8 + size bytes; u.buf = raw + 8 */
    bool submitted;
    bool for_leave; /* cancelled because the device goes: completes -ENODEV */
    bool reported;  /* completed by us already (drain timeout): libusb's completion is silent */
    bool freed;     /* the owner freed it while libusb still had it */
    usb_urb *prev, *next;
};

static void urb_destroy(usb_urb *uu)
{
    wrk_usbdev *d = uu->dev;
    if (uu->prev)
        uu->prev->next = uu->next;
    else
        d->urbs = uu->next;
    if (uu->next)
        uu->next->prev = uu->prev;
    libusb_free_transfer(uu->t);
    free(uu->raw);
    free(uu);
    if (!d->urbs && d->left)
        usb_kick(d->ut); /* the record may go now */
}

static int status_of(const usb_urb *uu, const struct libusb_transfer *t)
{
    switch (t->status) {
    case LIBUSB_TRANSFER_COMPLETED:
        return 0;
    case LIBUSB_TRANSFER_ERROR:
        /* with SHORT_NOT_OK, libusb reports a short IN as an error */
        if ((uu->u.flags & WRK_URB_SHORT_NOT_OK) && (uu->u.ep & 0x80) && (uint32_t)t->actual_length < uu->u.len)
            return -EREMOTEIO;
        return -EPROTO;
    case LIBUSB_TRANSFER_TIMED_OUT:
        return -ETIMEDOUT;
    case LIBUSB_TRANSFER_CANCELLED:
        return uu->for_leave ? -ENODEV : -ECONNRESET;
    case LIBUSB_TRANSFER_STALL:
        return -EPIPE;
    case LIBUSB_TRANSFER_NO_DEVICE:
        return -ENODEV;
    case LIBUSB_TRANSFER_OVERFLOW:
        return -EOVERFLOW;
    default:
        return -EPROTO;
    }
}

static void LIBUSB_CALL urb_cb(struct libusb_transfer *t)
{
    usb_urb *uu = t->user_data;
    wrk_usbdev *d = uu->dev;
    bool nodev = t->status == LIBUSB_TRANSFER_NO_DEVICE;
    uu->submitted = false;
    d->inflight--;
    d->urbs_inflight--;
    if (uu->freed) {
        urb_destroy(uu);
    } else if (uu->reported) {
        uu->reported = false;
    } else {
        uu->u.status = status_of(uu, t);
        uu->u.actual = t->actual_length > 0 ? (uint32_t)t->actual_length : 0;
        if (uu->u.done)
            uu->u.done(&uu->u); /* may free or resubmit uu */
    }
    if (nodev)
        usb_dev_lost(d);
    if (d->urbs_inflight == 0 && (d->left || d->lost))
        usb_kick(d->ut);
}

/* ---- the device going away ---- */

bool usb_urb_drained(wrk_usbdev *d)
{
    if (d->urbs_inflight == 0)
        return true;
    if (!d->urbs_cancelled) {
        d->urbs_cancelled = true;
        d->urbs_deadline = ifm_now_ms() + USB_URB_DRAIN_MS;
        for (usb_urb *uu = d->urbs; uu; uu = uu->next)
            if (uu->submitted) {
                uu->for_leave = true;
                libusb_cancel_transfer(uu->t);
            }
        return false;
    }
    if (ifm_now_ms() < d->urbs_deadline)
        return false;
    /* libusb did not give them back in time: complete them ourselves. */
    IFM_WARN("serial=%s %u URBs not returned by libusb %u ms after the device went; completing them", d->info.serial,
             d->urbs_inflight, USB_URB_DRAIN_MS);
    for (usb_urb *uu = d->urbs, *next; uu; uu = next) {
        next = uu->next;
        if (uu->submitted && !uu->reported && !uu->freed) {
            uu->reported = true;
            uu->u.status = -ENODEV;
            uu->u.actual = 0;
            if (uu->u.done)
                uu->u.done(&uu->u);
        }
    }
    return true;
}

void usb_urb_free_all(wrk_usbdev *d)
{
    while (d->urbs)
        urb_destroy(d->urbs); /* none is in flight here */
}

void usb_urb_silence_all(wrk_usbdev *d)
{
    for (usb_urb *uu = d->urbs; uu; uu = uu->next)
        if (uu->submitted) {
            uu->reported = true; /* no callback any more: the transport is going */
            libusb_cancel_transfer(uu->t);
        }
}

/* ---- descriptors ---- */

static int usable(wrk_transport *t, wrk_usbdev *dev)
{
    if (!usb_of(t))
        return -EINVAL;
    if (usb_dev_usable(dev) != 0 || dev->urbs_cancelled)
        return -ENODEV;
    return 0;
}

static uint8_t speed_of(int s)
{
    switch (s) {
    case LIBUSB_SPEED_LOW:
        return IFM_USBIP_SPEED_LOW;
    case LIBUSB_SPEED_FULL:
        return IFM_USBIP_SPEED_FULL;
    case LIBUSB_SPEED_HIGH:
        return IFM_USBIP_SPEED_HIGH;
    case LIBUSB_SPEED_SUPER:
        return IFM_USBIP_SPEED_SUPER; /* libusb's 4 is the kernel's 5 */
    case 5:                           /* LIBUSB_SPEED_SUPER_PLUS (1.0.22+) */
    case 6:                           /* LIBUSB_SPEED_SUPER_PLUS_X2 (1.0.27+) */
        return IFM_USBIP_SPEED_SUPER_PLUS;
    default:
        return IFM_USBIP_SPEED_UNKNOWN;
    }
}

int usb_usb_desc(wrk_transport *t, wrk_usbdev *dev, wrk_usb_desc *out)
{
    int rc = usable(t, dev);
    if (rc)
        return rc;
    memset(out, 0, sizeof *out);
    struct libusb_device_descriptor dd;
    rc = libusb_get_device_descriptor(dev->ldev, &dd);
    if (rc)
        return usb_errno(rc);
    const uint8_t b[18] = { dd.bLength,
                            dd.bDescriptorType,
                            (uint8_t)dd.bcdUSB,
                            (uint8_t)(dd.bcdUSB >> 8),
                            dd.bDeviceClass,
                            dd.bDeviceSubClass,
                            dd.bDeviceProtocol,
                            dd.bMaxPacketSize0,
                            (uint8_t)dd.idVendor,
                            (uint8_t)(dd.idVendor >> 8),
                            (uint8_t)dd.idProduct,
                            (uint8_t)(dd.idProduct >> 8),
                            (uint8_t)dd.bcdDevice,
                            (uint8_t)(dd.bcdDevice >> 8),
                            dd.iManufacturer,
                            dd.iProduct,
                            dd.iSerialNumber,
                            dd.bNumConfigurations };
    memcpy(out->device, b, sizeof b);
    out->busnum = libusb_get_bus_number(dev->ldev);
    out->devnum = libusb_get_device_address(dev->ldev);
    out->speed = speed_of(libusb_get_device_speed(dev->ldev));
    uint8_t ports[8];
    int np = libusb_get_port_numbers(dev->ldev, ports, sizeof ports);
    int n = snprintf(out->path, sizeof out->path, "usb%u/%u", out->busnum, out->busnum);
    for (int i = 0; i < np && n > 0 && (size_t)n < sizeof out->path; i++)
        n += snprintf(out->path + n, sizeof out->path - (size_t)n, "%c%u", i ? '.' : '-', ports[i]);
    struct libusb_config_descriptor *cfg;
    rc = libusb_get_active_config_descriptor(dev->ldev, &cfg);
    if (rc == LIBUSB_ERROR_NOT_FOUND)
        return 0; /* unconfigured */
    if (rc)
        return usb_errno(rc);
    out->config_value = cfg->bConfigurationValue;
    for (int i = 0; i < cfg->bNumInterfaces && i < WRK_USB_MAX_IFACES; i++) {
        const struct libusb_interface *it = &cfg->interface[i];
        if (it->num_altsetting < 1)
            continue;
        uint8_t num = it->altsetting[0].bInterfaceNumber;
        if (num >= WRK_USB_MAX_IFACES)
            continue;
        out->iface[num].cls = it->altsetting[0].bInterfaceClass;
        out->iface[num].subclass = it->altsetting[0].bInterfaceSubClass;
        out->iface[num].protocol = it->altsetting[0].bInterfaceProtocol;
        out->iface[num].nalts = (uint8_t)it->num_altsetting;
        if (num + 1 > out->nifaces)
            out->nifaces = (uint8_t)(num + 1);
    }
    libusb_free_config_descriptor(cfg);
    return 0;
}

int usb_usb_endpoints(wrk_transport *t, wrk_usbdev *dev, uint8_t iface, uint8_t alt, wrk_usb_ep *eps, size_t max)
{
    int rc = usable(t, dev);
    if (rc)
        return rc;
    struct libusb_config_descriptor *cfg;
    rc = libusb_get_active_config_descriptor(dev->ldev, &cfg);
    if (rc)
        return rc == LIBUSB_ERROR_NOT_FOUND ? -ENOENT : usb_errno(rc);
    int found = -ENOENT;
    for (int i = 0; i < cfg->bNumInterfaces && found < 0; i++) {
        const struct libusb_interface *it = &cfg->interface[i];
        for (int a = 0; a < it->num_altsetting; a++) {
            const struct libusb_interface_descriptor *as = &it->altsetting[a];
            if (as->bInterfaceNumber != iface || as->bAlternateSetting != alt)
                continue;
            size_t n = 0;
            for (int e = 0; e < as->bNumEndpoints && n < max; e++, n++)
                eps[n] = (wrk_usb_ep){ .addr = as->endpoint[e].bEndpointAddress,
                                       .type = (uint8_t)(as->endpoint[e].bmAttributes & 3),
                                       .interval = as->endpoint[e].bInterval,
                                       .max_packet = as->endpoint[e].wMaxPacketSize };
            found = (int)n;
            break;
        }
    }
    libusb_free_config_descriptor(cfg);
    return found;
}

/* ---- control plane ---- */

int usb_usb_claim(wrk_transport *t, wrk_usbdev *dev, uint8_t iface)
{
    int rc = usable(t, dev);
    if (rc)
        return rc;
    char why[160];
    rc = usb_claim(dev, iface, why, sizeof why);
    if (rc)
        IFM_WARN("serial=%s %s", dev->info.serial, why);
    return rc;
}

int usb_usb_release(wrk_transport *t, wrk_usbdev *dev, uint8_t iface)
{
    int rc = usable(t, dev);
    if (rc)
        return rc;
    if (iface >= 32 || !(dev->claimed & (1u << iface)))
        return -ENOENT;
    /* An exported device keeps its kernel drivers away: no reattach on release. */
    if (dev->autodetach)
        libusb_set_auto_detach_kernel_driver(dev->h, 0);
    rc = libusb_release_interface(dev->h, iface);
    if (dev->autodetach)
        libusb_set_auto_detach_kernel_driver(dev->h, 1);
    dev->claimed &= ~(1u << iface);
    if (rc == LIBUSB_ERROR_NO_DEVICE)
        usb_dev_lost(dev);
    return usb_errno(rc);
}

static int result(wrk_usbdev *dev, int rc)
{
    if (rc == LIBUSB_ERROR_NO_DEVICE || rc == LIBUSB_ERROR_NOT_FOUND)
        usb_dev_lost(dev);
    return usb_errno(rc);
}

int usb_usb_set_config(wrk_transport *t, wrk_usbdev *dev, uint8_t value)
{
    int rc = usable(t, dev);
    if (rc)
        return rc;
    int cur = -1;
    if (libusb_get_configuration(dev->h, &cur) == 0 && cur == value)
        return 0; /* setting it again would be a lightweight reset */
    if (dev->claimed)
        return -EBUSY;
    rc = libusb_set_configuration(dev->h, value ? value : -1);
    return rc == LIBUSB_ERROR_NOT_FOUND ? -EINVAL : result(dev, rc);
}

int usb_usb_set_altsetting(wrk_transport *t, wrk_usbdev *dev, uint8_t iface, uint8_t alt)
{
    int rc = usable(t, dev);
    if (rc)
        return rc;
    rc = libusb_set_interface_alt_setting(dev->h, iface, alt);
    return rc == LIBUSB_ERROR_NOT_FOUND ? -EINVAL : result(dev, rc);
}

int usb_usb_clear_halt(wrk_transport *t, wrk_usbdev *dev, uint8_t ep)
{
    int rc = usable(t, dev);
    if (rc)
        return rc;
    rc = libusb_clear_halt(dev->h, ep);
    return rc == LIBUSB_ERROR_NOT_FOUND ? -EINVAL : result(dev, rc);
}

int usb_usb_reset(wrk_transport *t, wrk_usbdev *dev)
{
    int rc = usable(t, dev);
    if (rc)
        return rc;
    /* NOT_FOUND: the device re-enumerated as something else; it will leave. */
    return result(dev, libusb_reset_device(dev->h));
}

/* ---- URBs ---- */

wrk_urb *usb_urb_alloc(wrk_transport *t, wrk_usbdev *dev, size_t size)
{
    if (!usb_of(t) || !dev || size > (1u << 20))
        return NULL;
    usb_urb *uu = calloc(1, sizeof *uu);
    uint8_t *raw = malloc(LIBUSB_CONTROL_SETUP_SIZE + (size ? size : 1));
    struct libusb_transfer *xt = libusb_alloc_transfer(0);
    if (!uu || !raw || !xt) {
        free(uu);
        free(raw);
        libusb_free_transfer(xt);
        return NULL;
    }
    uu->dev = dev;
    uu->t = xt;
    uu->raw = raw;
    uu->u.buf = raw + LIBUSB_CONTROL_SETUP_SIZE;
    uu->u.size = size;
    uu->next = dev->urbs;
    if (dev->urbs)
        dev->urbs->prev = uu;
    dev->urbs = uu;
    return &uu->u;
}

void usb_urb_free(wrk_transport *t, wrk_urb *urb)
{
    usb_urb *uu = (usb_urb *)urb;
    if (!uu)
        return;
    if (uu->submitted) {
        uu->freed = true; /* libusb still has it: freed when it comes back */
        return;
    }
    urb_destroy(uu);
}

int usb_urb_submit(wrk_transport *t, wrk_urb *urb)
{
    usb_urb *uu = (usb_urb *)urb;
    if (!uu || uu->submitted || uu->freed)
        return -EINVAL;
    wrk_usbdev *d = uu->dev;
    int rc = usable(t, d);
    if (rc)
        return rc;
    wrk_urb *u = &uu->u;
    struct libusb_transfer *xt = uu->t;
    switch (u->type) {
    case WRK_EP_CONTROL: {
        ifm_usb_setup s;
        ifm_usb_setup_get(u->setup, &s);
        if (s.wLength > u->size)
            return -EINVAL;
        u->len = s.wLength;
        memcpy(uu->raw, u->setup, LIBUSB_CONTROL_SETUP_SIZE);
        libusb_fill_control_transfer(xt, d->h, uu->raw, urb_cb, uu, 0);
        break;
    }
    case WRK_EP_BULK:
    case WRK_EP_INTERRUPT:
        if (u->len > u->size)
            return -EINVAL;
        if (u->type == WRK_EP_BULK)
            libusb_fill_bulk_transfer(xt, d->h, u->ep, u->buf, (int)u->len, urb_cb, uu, 0);
        else
            libusb_fill_interrupt_transfer(xt, d->h, u->ep, u->buf, (int)u->len, urb_cb, uu, 0);
        break;
    default:
        return -EOPNOTSUPP; /* isochronous: not forwarded by this backend */
    }
    xt->flags = 0;
    if ((u->flags & WRK_URB_SHORT_NOT_OK) && (u->ep & 0x80))
        xt->flags |= LIBUSB_TRANSFER_SHORT_NOT_OK;
    if ((u->flags & WRK_URB_ZERO_PACKET) && !(u->ep & 0x80))
        xt->flags |= LIBUSB_TRANSFER_ADD_ZERO_PACKET;
    u->status = 0;
    u->actual = 0;
    uu->for_leave = uu->reported = false;
    rc = libusb_submit_transfer(xt);
    if (rc) {
        if (rc == LIBUSB_ERROR_NO_DEVICE)
            usb_dev_lost(d);
        return rc == LIBUSB_ERROR_NOT_FOUND ? -ENOENT : usb_errno(rc);
    }
    uu->submitted = true;
    d->inflight++;
    d->urbs_inflight++;
    usb_arm_timeout(d->ut);
    return 0;
}

int usb_urb_cancel(wrk_transport *t, wrk_urb *urb)
{
    usb_urb *uu = (usb_urb *)urb;
    if (!uu || !uu->submitted || uu->reported)
        return -ENOENT;
    int rc = libusb_cancel_transfer(uu->t);
    if (rc == LIBUSB_ERROR_NOT_FOUND)
        return -ENOENT; /* completing already: its callback is on the way */
    return usb_errno(rc);
}
