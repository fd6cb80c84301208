/* The TCP carrier of the USB/IP client (usbip_tcp.h). */
#include "usbip_tcp.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "icefarm/tcp.h"

struct usbc_tcp {
    ifm_tcp *s;
    usbc_conn *c;
    bool up;
};

static int t_write(void *ctx, const uint8_t *data, size_t len)
{
    usbc_tcp *t = ctx;
    if (!t->s)
        return -ENOTCONN;
    int rc = ifm_tcp_write(t->s, data, len);
    return rc < 0 ? rc : 0;
}

static void t_close(void *ctx)
{
    usbc_tcp *t = ctx;
    if (t->s)
        ifm_tcp_close(t->s);
    free(t);
}

static void on_connect(ifm_tcp *s, int status, void *arg)
{
    usbc_tcp *t = arg;
    if (status) {
        t->s = NULL; /* freed by the helper */
        char why[160];
        if (status == -ENOENT) /* what name resolution says for an unknown host (tcp_gai_errno) */
            snprintf(why, sizeof why, "cannot resolve the host name: unknown host");
        else
            snprintf(why, sizeof why, "cannot connect: %s", strerror(-status));
        usbc_conn *c = t->c;
        free(t);
        usbc_conn_carrier_end(c, status, why);
        return;
    }
    (void)s;
    t->up = true;
    usbc_conn_carrier_up(t->c);
}

static void on_data(ifm_tcp *s, const uint8_t *data, size_t len, void *arg)
{
    (void)s;
    usbc_tcp *t = arg;
    usbc_conn_feed(t->c, data, len);
}

static void on_close(ifm_tcp *s, int status, void *arg)
{
    (void)s;
    usbc_tcp *t = arg;
    usbc_conn *c = t->c;
    t->s = NULL;
    free(t);
    usbc_conn_carrier_end(c, status ? status : -ESHUTDOWN, status ? strerror(-status) : "");
}

int usbc_tcp_open(ifm_loop *loop, const char *host, const char *port, const usbc_conn_cbs *cbs, void *arg,
                  uint64_t timeout_ms, usbc_conn **out, usbc_tcp **carrier, char *why, size_t whylen)
{
    usbc_tcp *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    char peer[300];
    snprintf(peer, sizeof peer, "%s:%s", host, port);
    static const usbc_io io = { t_write, t_close };
    t->c = usbc_conn_new(loop, &io, t, cbs, arg, peer, timeout_ms);
    if (!t->c) {
        free(t);
        return -ENOMEM;
    }
    ifm_tcp_opts o = { .connect_timeout_ms = (unsigned)(timeout_ms ? timeout_ms : 10000), .keepalive_s = 10 };
    static const ifm_tcp_cbs tcbs = { .on_connect = on_connect, .on_data = on_data, .on_close = on_close };
    int rc = ifm_tcp_connect(loop, host, port, &o, &tcbs, t, &t->s, why, whylen);
    if (rc) {
        usbc_conn *c = t->c;
        t->s = NULL;
        usbc_conn_free(c); /* closes (frees) t */
        return rc;
    }
    *out = t->c;
    if (carrier)
        *carrier = t;
    return 0;
}

int usbc_tcp_dup_fd(const usbc_tcp *t)
{
    if (!t->s || !t->up)
        return -ENOTCONN;
    int fd = fcntl(ifm_tcp_fd(t->s), F_DUPFD_CLOEXEC, 3);
    if (fd < 0)
        return -errno;
    /* the kernel reads and writes it blocking */
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}
