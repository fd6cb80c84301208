/* The USB/IP client's entry points (icefarm/usbip_client.h): opening and
 * closing a session, listing a server's devices, and an import handed to the
 * kernel. The session itself is usbip_session.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "usbip_farm.h"
#include "usbip_host.h"
#include "usbip_session.h"

static bool open_settled(icefarm_usbip *u, void *arg)
{
    (void)arg;
    return u->st == ICEFARM_USBIP_UP || u->st == ICEFARM_USBIP_NO_CDC || u->st == ICEFARM_USBIP_CLOSED;
}

static int open_on(icefarm *f, ifm_loop *loop, const icefarm_usbip_opts *opts, bool wait, icefarm_usbip **out,
                   char *reason, size_t reason_len)
{
    if (reason && reason_len)
        reason[0] = '\0';
    if (!out || !opts)
        return ifm_failbuf(reason, reason_len, -EINVAL, "no options");
    *out = NULL;
    bool farm = opts->serial && *opts->serial;
    if (farm && !f)
        return ifm_failbuf(reason, reason_len, -EINVAL, "a farm board (serial %s) needs a farm handle", opts->serial);
    if (!farm && (!opts->host || !*opts->host || !opts->busid || !*opts->busid))
        return ifm_failbuf(reason, reason_len, -EINVAL, "give a farm board's serial, or host and busid");
    if (!farm && strlen(opts->busid) >= ICEFARM_USBIP_BUSID_MAX)
        return ifm_failbuf(reason, reason_len, -EINVAL, "busid \"%s\": at most %d characters", opts->busid,
                           ICEFARM_USBIP_BUSID_MAX - 1);
    if (opts->tunnel && !farm)
        return ifm_failbuf(reason, reason_len, -EINVAL, "the tunnel goes to a farm board: give its serial");
    if (wait && usbc_host_in_callback(f, 0))
        return -EDEADLK;
    icefarm_usbip *u;
    int rc = usbc_session_new(f, loop, opts, &u, reason, reason_len);
    if (rc)
        return rc;
    if (farm) {
        rc = usbc_farm_bind(u, reason, reason_len);
        if (rc) {
            usbc_session_free(u);
            return rc;
        }
    } else {
        usbc_session_start(u);
    }
    if (!wait) {
        *out = u;
        return 0;
    }
    uint64_t bound = 3 * u->timeout_ms + (farm ? u->timeout_ms : 0);
    rc = usbc_session_wait(u, open_settled, NULL, bound);
    if (rc == 0 && u->st == ICEFARM_USBIP_CLOSED) {
        rc = u->open_status ? u->open_status : -EIO;
        ifm_failbuf(reason, reason_len, rc, "%s", u->open_reason[0] ? u->open_reason : u->reason);
    } else if (rc == -ETIMEDOUT && farm && !u->busid[0]) {
        ifm_failbuf(reason, reason_len, rc,
                    "board %s announced no USB/IP export within %llu ms: is it reserved by you with kind usbip? "
                    "(icefarm-cli reserve --kind usbip %s)",
                    u->serial, (unsigned long long)bound, u->serial);
    } else if (rc == -ETIMEDOUT) {
        ifm_failbuf(reason, reason_len, rc, "not up within %llu ms (%s: %s)", (unsigned long long)bound,
                    icefarm_usbip_state_name(u->st), u->reason);
    } else if (rc) {
        ifm_failbuf(reason, reason_len, rc, "%s", ifm_strerror(rc));
    }
    if (rc) {
        usbc_session_free(u);
        return rc;
    }
    *out = u;
    return 0;
}

int icefarm_usbip_open(icefarm *f, const icefarm_usbip_opts *opts, bool wait, icefarm_usbip **out, char *reason,
                       size_t reason_len)
{
    return open_on(f, NULL, opts, wait, out, reason, reason_len);
}

int usbc_open_on_loop(ifm_loop *loop, const icefarm_usbip_opts *opts, bool wait, icefarm_usbip **out, char *reason,
                      size_t reason_len)
{
    return open_on(NULL, loop, opts, wait, out, reason, reason_len);
}

void icefarm_usbip_close(icefarm_usbip *u)
{
    usbc_session_free(u);
}

/* ---- one-shot connections: DEVLIST, and an import for the kernel ---- */

typedef struct {
    icefarm *f;
    ifm_loop *own;
    usbc_conn *c;
    usbc_tcp *t;
    bool finished;
    int status;
    char why[300];
    icefarm_usbip_device *devs;
    size_t n;
    icefarm_usbip_import_cb cb;
    void *arg;
    char busid[IFM_USBIP_BUSID_SIZE];
} oneshot;

static void to_public(const ifm_usbip_device *d, icefarm_usbip_device *p)
{
    memset(p, 0, sizeof *p);
    snprintf(p->busid, sizeof p->busid, "%s", d->busid);
    snprintf(p->path, sizeof p->path, "%s", d->path);
    p->busnum = d->busnum;
    p->devnum = d->devnum;
    p->speed = d->speed;
    p->vid = d->idVendor;
    p->pid = d->idProduct;
    p->bcd_device = d->bcdDevice;
    p->device_class = d->bDeviceClass;
    p->device_subclass = d->bDeviceSubClass;
    p->device_protocol = d->bDeviceProtocol;
    p->config_value = d->bConfigurationValue;
    p->nconfigs = d->bNumConfigurations;
    p->ninterfaces = d->bNumInterfaces;
}

static void os_devlist(usbc_conn *c, int status, const ifm_usbip_devlist_entry *devs, size_t n, const char *why,
                       void *arg)
{
    (void)c;
    oneshot *o = arg;
    o->status = status;
    snprintf(o->why, sizeof o->why, "%s", why);
    if (status == 0 && n) {
        o->devs = calloc(n, sizeof *o->devs);
        if (!o->devs) {
            o->status = -ENOMEM;
            return;
        }
        for (size_t i = 0; i < n; i++)
            to_public(&devs[i].dev, &o->devs[i]);
        o->n = n;
    }
}

static void os_end(usbc_conn *c, int status, const char *why, void *arg)
{
    oneshot *o = arg;
    if (!o->finished) {
        o->finished = true;
        if (!o->status)
            o->status = status;
        if (!o->why[0])
            snprintf(o->why, sizeof o->why, "%s", why);
        if (o->cb) {
            o->cb(o->status ? o->status : -EIO, -1, NULL, o->why, o->arg);
            usbc_conn_free(c);
            free(o);
            return;
        }
    }
    usbc_conn_free(c);
    o->c = NULL;
}

static int os_wait(oneshot *o, uint64_t timeout_ms)
{
    uint64_t deadline = ifm_now_ms() + timeout_ms + 1000; /* the connection's own timeouts come first */
    while (!o->finished) {
        uint64_t now = ifm_now_ms();
        if (now >= deadline)
            return -ETIMEDOUT;
        int rc = usbc_host_wait(o->f, o->own, (int)(deadline - now < 200 ? deadline - now : 200));
        if (rc)
            return rc;
    }
    return 0;
}

int icefarm_usbip_list(icefarm *f, const char *host, const char *port, uint64_t timeout_ms, icefarm_usbip_device **devs,
                       size_t *n, char *reason, size_t reason_len)
{
    if (reason && reason_len)
        reason[0] = '\0';
    if (!host || !devs || !n)
        return ifm_failbuf(reason, reason_len, -EINVAL, "no host");
    *devs = NULL;
    *n = 0;
    if (usbc_host_in_callback(f, 0))
        return -EDEADLK;
    if (!timeout_ms)
        timeout_ms = 5000;
    oneshot o = { .f = f };
    if (!f && !(o.own = ifm_loop_new()))
        return -ENOMEM;
    ifm_loop *loop = f ? usbc_host_loop(f) : o.own;
    static const usbc_conn_cbs cbs = { .on_devlist = os_devlist, .on_end = os_end };
    char why[200] = "";
    const char *p = port && *port ? port : "3240";
    int rc = usbc_tcp_open(loop, host, p, &cbs, &o, timeout_ms, &o.c, &o.t, why, sizeof why);
    if (rc == 0)
        rc = usbc_conn_devlist(o.c);
    if (rc == 0)
        rc = os_wait(&o, timeout_ms);
    if (o.c)
        usbc_conn_free(o.c);
    if (rc == 0)
        rc = o.status;
    if (rc) {
        ifm_failbuf(reason, reason_len, rc, "%s:%s: %s", host, p, why[0] ? why : o.why[0] ? o.why : ifm_strerror(rc));
        free(o.devs);
    } else {
        *devs = o.devs;
        *n = o.n;
    }
    if (o.own)
        ifm_loop_free(o.own);
    return rc;
}

static void os_import(usbc_conn *c, int status, const ifm_usbip_device *dev, const char *why, void *arg)
{
    oneshot *o = arg;
    if (status) {
        o->status = status;
        snprintf(o->why, sizeof o->why, "%s", why);
        return; /* os_end follows */
    }
    o->finished = true;
    int fd = usbc_tcp_dup_fd(o->t);
    icefarm_usbip_device d;
    to_public(dev, &d);
    if (fd < 0) {
        o->status = fd;
        snprintf(o->why, sizeof o->why, "cannot take the socket over: %s", ifm_strerror(fd));
    } else if (strcmp(dev->busid, o->busid) != 0) {
        /* the Linux tool's own check ("recv different busid") */
        close(fd);
        fd = -1;
        o->status = -EPROTO;
        snprintf(o->why, sizeof o->why, "the server answered for busid \"%s\", not \"%s\"", dev->busid, o->busid);
    }
    icefarm_usbip_import_cb cb = o->cb;
    void *cbarg = o->arg;
    int st = o->status;
    char w[300];
    snprintf(w, sizeof w, "%s", o->why);
    o->cb = NULL;
    usbc_conn_free(c); /* the kernel owns the connection now: close our copy without a word */
    o->c = NULL;
    if (cb) {
        cb(st, fd, st ? NULL : &d, w, cbarg);
        free(o);
    } else {
        o->status = st;
        o->devs = calloc(1, sizeof *o->devs);
        if (o->devs)
            *o->devs = d;
        o->n = (size_t)fd; /* the blocking form picks it up */
    }
}

int icefarm_usbip_import_fd(icefarm *f, const char *host, const char *port, const char *busid, uint64_t timeout_ms,
                            icefarm_usbip_import_cb cb, void *arg)
{
    if (!host || !busid || !*busid || strlen(busid) >= IFM_USBIP_BUSID_SIZE || !cb)
        return -EINVAL;
    if (!timeout_ms)
        timeout_ms = 5000;
    oneshot *o = calloc(1, sizeof *o);
    if (!o)
        return -ENOMEM;
    o->f = f;
    snprintf(o->busid, sizeof o->busid, "%s", busid);
    bool blocking = !f;
    if (blocking) {
        o->own = ifm_loop_new();
        if (!o->own) {
            free(o);
            return -ENOMEM;
        }
    } else {
        o->cb = cb;
        o->arg = arg;
    }
    ifm_loop *loop = f ? usbc_host_loop(f) : o->own;
    static const usbc_conn_cbs cbs = { .on_import = os_import, .on_end = os_end };
    char why[200] = "";
    int rc =
        usbc_tcp_open(loop, host, port && *port ? port : "3240", &cbs, o, timeout_ms, &o->c, &o->t, why, sizeof why);
    if (rc == 0)
        rc = usbc_conn_import(o->c, busid);
    if (rc) {
        if (o->c)
            usbc_conn_free(o->c);
        if (o->own)
            ifm_loop_free(o->own);
        free(o);
        return rc;
    }
    if (!blocking)
        return 0;
    rc = os_wait(o, timeout_ms);
    if (o->c)
        usbc_conn_free(o->c);
    if (rc == 0 && o->status == 0 && o->devs)
        cb(0, (int)o->n, o->devs, "", arg);
    else
        cb(rc ? rc : o->status ? o->status : -EIO, -1, NULL, o->why[0] ? o->why : ifm_strerror(rc), arg);
    free(o->devs);
    ifm_loop_free(o->own);
    free(o);
    return 0;
}
