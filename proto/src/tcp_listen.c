/* Listening sockets on the event loop: bind the first address of the name that
 * works, accept in batches (fairness with the other fds), and back off for a
 * moment when the process runs out of descriptors instead of spinning. */
#include "tcp_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "icefarm/log.h"
#include "icefarm/err.h"

enum {
    ACCEPT_BATCH = 16,  /* connections accepted per loop turn */
    FULL_PAUSE_MS = 100 /* pause after EMFILE and friends */
};

struct ifm_tcp_listener {
    ifm_loop *loop;
    int fd;
    int port;
    ifm_tcp_opts o;
    ifm_tcp_accept_cb cb;
    void *arg;
    uint64_t pause_timer;
    int depth;
    bool dead;
};

static void on_accept(ifm_loop *loop, int fd, int events, void *arg);

static void on_resume(ifm_loop *loop, void *arg)
{
    ifm_tcp_listener *l = arg;
    l->pause_timer = 0;
    ifm_loop_modify(loop, l->fd, IFM_READ);
}

static void on_accept(ifm_loop *loop, int fd, int events, void *arg)
{
    ifm_tcp_listener *l = arg;
    l->depth++;
    for (int i = 0; i < ACCEPT_BATCH && !l->dead; i++) {
        int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                IFM_WARN("tcp: accept on port %d: %s; pausing %d ms", l->port, strerror(errno), FULL_PAUSE_MS);
                ifm_loop_modify(loop, fd, 0);
                l->pause_timer = ifm_timer_add(loop, FULL_PAUSE_MS, on_resume, l);
            }
            break; /* EAGAIN, or an aborted connection: next turn */
        }
        ifm_tcp *s = tcp_adopt(loop, c, &l->o);
        if (!s) {
            IFM_WARN("tcp: accept on port %d: out of memory; connection dropped", l->port);
            continue;
        }
        l->cb(l, s, l->arg);
    }
    if (--l->depth == 0 && l->dead)
        free(l);
}

int ifm_tcp_listen(ifm_loop *loop, const char *host, const char *port, const ifm_tcp_opts *opts, ifm_tcp_accept_cb cb,
                   void *arg, ifm_tcp_listener **out, char *why, size_t whylen)
{
    *out = NULL;
    if (!loop || !port || !*port || !cb)
        return ifm_failbuf(why, whylen, -EINVAL, "listen: a port and a callback are required");
    if (host && (!*host || strcmp(host, "*") == 0))
        host = NULL;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0)
        return ifm_failbuf(why, whylen, tcp_gai_errno(gai), "listen %s:%s: %s", host ? host : "*", port,
                           gai_strerror(gai));
    int fd = -1, err = -EADDRNOTAVAIL;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            err = -errno;
            continue;
        }
        int one = 1;
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 128) == 0)
            break;
        err = -errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return ifm_failbuf(why, whylen, err, "listen %s:%s: %s", host ? host : "*", port, strerror(-err));

    ifm_tcp_listener *l = calloc(1, sizeof *l);
    if (!l || ifm_loop_watch(loop, fd, IFM_READ, on_accept, l) != 0) {
        free(l);
        close(fd);
        return ifm_failbuf(why, whylen, -ENOMEM, "listen %s:%s: out of memory", host ? host : "*", port);
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        l->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    l->loop = loop;
    l->fd = fd;
    l->cb = cb;
    l->arg = arg;
    tcp_opts_defaults(&l->o, opts);
    *out = l;
    return 0;
}

int ifm_tcp_listener_port(const ifm_tcp_listener *l)
{
    return l->port;
}

void ifm_tcp_listener_close(ifm_tcp_listener *l)
{
    if (!l || l->dead)
        return;
    l->dead = true;
    ifm_loop_unwatch(l->loop, l->fd);
    close(l->fd);
    ifm_timer_cancel(l->loop, l->pause_timer);
    if (l->depth == 0)
        free(l);
}

int ifm_tcp_split_hostport(const char *in, char *host, size_t hostcap, char *port, size_t portcap)
{
    if (!in || !hostcap || !portcap)
        return -EINVAL;
    const char *h = in, *hend, *p;
    if (*in == '[') {
        h = in + 1;
        hend = strchr(h, ']');
        if (!hend || hend[1] != ':')
            return -EINVAL;
        p = hend + 2;
    } else {
        hend = strrchr(in, ':');
        if (!hend || memchr(in, ':', (size_t)(hend - in)))
            return -EINVAL; /* no port, or an IPv6 address without brackets */
        p = hend + 1;
    }
    size_t hl = (size_t)(hend - h), pl = strlen(p);
    if (hl >= hostcap || pl == 0 || pl >= portcap)
        return -EINVAL;
    long num = 0;
    for (const char *c = p; *c; c++) {
        if (*c < '0' || *c > '9')
            return -EINVAL;
        num = num * 10 + (*c - '0');
        if (num > 65535)
            return -EINVAL;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    memcpy(port, p, pl + 1);
    return 0;
}
