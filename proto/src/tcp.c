/* TCP streams on the event loop: connect (all addresses of a name, one after the
 * other, under one timeout), a write queue with high/low water marks, paused
 * reading, graceful and immediate close. See icefarm/tcp.h for the contract.
 *
 * Lifetime inside callbacks: `depth` counts the stream's callbacks on the stack;
 * closing marks the stream dead and releases the socket at once, and the memory
 * goes when the outermost callback returns. */
#include "tcp_int.h"
#include "icefarm/err.h"
#include "icefarm/grow.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum {
    ST_RESOLVING,
    ST_CONNECTING,
    ST_OPEN
};

struct ifm_tcp {
    ifm_loop *loop;
    int fd;
    int state;
    bool started;  /* callbacks set (outgoing, or ifm_tcp_start on an accepted one) */
    bool paused;   /* ifm_tcp_read_pause */
    bool eof_seen; /* the peer half-closed */
    bool ending;   /* ifm_tcp_end (or EOF without on_eof): flush, shut down, wait */
    bool shut_wr;
    bool over_high; /* a write returned 1: on_drain owed */
    bool dead;
    int depth;
    int pending_err; /* a failure to report from the loop */
    uint64_t timer;  /* connect timeout, or the linger bound */
    uint64_t defer;  /* 0 ms timer reporting pending_err */
    ifm_tcp_cbs cbs;
    void *arg;
    ifm_tcp_opts o;
    uint8_t *wq;
    size_t woff, wend, wcap;
    uint8_t *rbuf;
    struct addrinfo *ai_list, *ai_cur;
    int last_err;
    tcp_resolve *res;
    void (*owner_lost)(void *owner);
    void *owner;
    char peer[64];
};

/* ---- helpers shared with the other tcp files ---- */

void tcp_opts_defaults(ifm_tcp_opts *o, const ifm_tcp_opts *given)
{
    *o = given ? *given : (ifm_tcp_opts){ 0 };
    if (!o->high_water)
        o->high_water = 256 * 1024;
    if (!o->low_water || o->low_water > o->high_water)
        o->low_water = o->high_water / 4;
    if (!o->max_queue)
        o->max_queue = 16u * 1024 * 1024;
    if (o->max_queue < o->high_water)
        o->max_queue = o->high_water;
    if (!o->read_chunk)
        o->read_chunk = 64 * 1024;
    if (!o->keepalive_s)
        o->keepalive_s = 30;
    if (!o->connect_timeout_ms)
        o->connect_timeout_ms = 10000;
    if (!o->linger_ms)
        o->linger_ms = 5000;
}

void tcp_tune(int fd, const ifm_tcp_opts *o)
{
    int one = 1, idle = (int)o->keepalive_s, intvl = 10, cnt = 3;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
}

int tcp_gai_errno(int gai_rc)
{
    switch (gai_rc) {
    case 0:
        return 0;
    case EAI_AGAIN:
        return -EAGAIN;
    case EAI_MEMORY:
        return -ENOMEM;
    case EAI_SYSTEM:
        return errno ? -errno : -EIO;
    case EAI_NONAME:
#ifdef EAI_NODATA
    case EAI_NODATA:
#endif
        return -ENOENT;
    default:
        return -EINVAL;
    }
}

static void fill_peer(ifm_tcp *s)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char ip[INET6_ADDRSTRLEN] = "";
    s->peer[0] = '\0';
    if (getpeername(s->fd, (struct sockaddr *)&ss, &len) != 0)
        return;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        snprintf(s->peer, sizeof s->peer, "%s:%u", ip, ntohs(in->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
        snprintf(s->peer, sizeof s->peer, "[%s]:%u", ip, ntohs(in6->sin6_port));
    }
}

/* ---- life cycle ---- */

static void on_fd(ifm_loop *loop, int fd, int events, void *arg);

static ifm_tcp *stream_new(ifm_loop *loop, const ifm_tcp_opts *o)
{
    ifm_tcp *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    tcp_opts_defaults(&s->o, o);
    s->rbuf = malloc(s->o.read_chunk);
    if (!s->rbuf) {
        free(s);
        return NULL;
    }
    s->loop = loop;
    s->fd = -1;
    return s;
}

/* Releases everything but the memory, and marks the stream dead. */
static void teardown(ifm_tcp *s)
{
    if (s->dead)
        return;
    s->dead = true;
    if (s->fd >= 0) {
        ifm_loop_unwatch(s->loop, s->fd);
        close(s->fd);
        s->fd = -1;
    }
    ifm_timer_cancel(s->loop, s->timer);
    ifm_timer_cancel(s->loop, s->defer);
    s->timer = s->defer = 0;
    if (s->res) {
        tcp_resolve_cancel(s->res);
        s->res = NULL;
    }
    if (s->ai_list) {
        freeaddrinfo(s->ai_list);
        s->ai_list = s->ai_cur = NULL;
    }
}

static void destroy(ifm_tcp *s)
{
    free(s->wq);
    free(s->rbuf);
    free(s);
}

static void enter(ifm_tcp *s)
{
    s->depth++;
}

/* Returns true if the stream is still alive. */
static bool leave(ifm_tcp *s)
{
    if (--s->depth == 0 && s->dead) {
        destroy(s);
        return false;
    }
    return !s->dead;
}

/* The stream ends from the loop: on_close(status), then freed. */
static void finish(ifm_tcp *s, int status)
{
    teardown(s);
    if (s->cbs.on_close)
        s->cbs.on_close(s, status, s->arg);
}

/* A connect that failed: on_connect(status), then freed. */
static void fail_connect(ifm_tcp *s, int status)
{
    teardown(s);
    if (s->cbs.on_connect)
        s->cbs.on_connect(s, status, s->arg);
}

static bool reading_wanted(const ifm_tcp *s)
{
    if (s->state != ST_OPEN || s->eof_seen)
        return false;
    return s->started ? !s->paused : s->ending; /* an unstarted stream that ends reads to find EOF */
}

static void update_watch(ifm_tcp *s)
{
    if (s->dead || s->fd < 0 || s->pending_err) /* fail_later took the fd off the loop */
        return;
    int ev = 0;
    if (s->state == ST_CONNECTING)
        ev = IFM_WRITE;
    else if (s->state == ST_OPEN) {
        if (reading_wanted(s))
            ev |= IFM_READ;
        if (s->wend > s->woff)
            ev |= IFM_WRITE;
    }
    ifm_loop_modify(s->loop, s->fd, ev); /* registered in tcp_adopt or on connect */
}

static void on_defer(ifm_loop *loop, void *arg)
{
    ifm_tcp *s = arg;
    s->defer = 0;
    enter(s);
    if (s->state == ST_OPEN)
        finish(s, s->pending_err);
    else
        fail_connect(s, s->pending_err);
    leave(s);
}

/* Reports `err` from the loop (never from inside the caller's call). */
static void fail_later(ifm_tcp *s, int err)
{
    if (s->pending_err)
        return;
    s->pending_err = err;
    if (s->fd >= 0)
        ifm_loop_unwatch(s->loop, s->fd);
    s->defer = ifm_timer_add(s->loop, 0, on_defer, s);
}

/* ---- connect ---- */

static void on_linger(ifm_loop *loop, void *arg);
static bool end_progress(ifm_tcp *s);

static void connected(ifm_tcp *s)
{
    ifm_timer_cancel(s->loop, s->timer);
    s->timer = 0;
    freeaddrinfo(s->ai_list);
    s->ai_list = s->ai_cur = NULL;
    tcp_tune(s->fd, &s->o);
    fill_peer(s);
    s->state = ST_OPEN;
    update_watch(s);
    if (s->cbs.on_connect) {
        s->cbs.on_connect(s, 0, s->arg);
        if (s->dead)
            return;
    }
    if (s->ending) { /* ifm_tcp_end() while connecting */
        s->timer = ifm_timer_add(s->loop, s->o.linger_ms, on_linger, s);
        if (end_progress(s))
            update_watch(s);
    }
}

/* Tries the next address; on the last failure reports it from the loop. */
static void try_next(ifm_tcp *s)
{
    for (; s->ai_cur; s->ai_cur = s->ai_cur->ai_next) {
        struct addrinfo *a = s->ai_cur;
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            s->last_err = -errno;
            continue;
        }
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0 || errno == EINPROGRESS) {
            if (ifm_loop_watch(s->loop, fd, IFM_WRITE, on_fd, s) != 0) {
                close(fd);
                s->last_err = -ENOMEM;
                continue;
            }
            s->fd = fd;
            s->state = ST_CONNECTING;
            s->ai_cur = a->ai_next;
            return;
        }
        s->last_err = -errno;
        close(fd);
    }
    s->state = ST_CONNECTING;
    fail_later(s, s->last_err ? s->last_err : -ECONNREFUSED);
}

static void on_connect_event(ifm_tcp *s)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (!err) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        if (getpeername(s->fd, (struct sockaddr *)&ss, &sl) != 0) {
            if (errno == ENOTCONN)
                return; /* a stale readiness report: still connecting */
            err = errno;
        }
    }
    if (!err) {
        connected(s);
        return;
    }
    s->last_err = -err;
    ifm_loop_unwatch(s->loop, s->fd);
    close(s->fd);
    s->fd = -1;
    try_next(s);
}

static void on_connect_timeout(ifm_loop *loop, void *arg)
{
    ifm_tcp *s = arg;
    s->timer = 0;
    enter(s);
    fail_connect(s, -ETIMEDOUT);
    leave(s);
}

static void on_resolved(void *arg, int rc, struct addrinfo *res)
{
    ifm_tcp *s = arg;
    s->res = NULL;
    enter(s);
    if (rc != 0) {
        fail_connect(s, rc);
    } else {
        s->ai_list = s->ai_cur = res;
        try_next(s);
    }
    leave(s);
}

static bool is_number(const char *p)
{
    if (!*p)
        return false;
    for (; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    return true;
}

int ifm_tcp_connect(ifm_loop *loop, const char *host, const char *port, const ifm_tcp_opts *opts,
                    const ifm_tcp_cbs *cbs, void *arg, ifm_tcp **out, char *why, size_t whylen)
{
    *out = NULL;
    if (!loop || !host || !*host || !port || !*port || !cbs)
        return ifm_failbuf(why, whylen, -EINVAL, "connect: host and port are required");
    ifm_tcp *s = stream_new(loop, opts);
    if (!s)
        return ifm_failbuf(why, whylen, -ENOMEM, "connect %s:%s: out of memory", host, port);
    s->cbs = *cbs;
    s->arg = arg;
    s->started = true;
    s->state = ST_RESOLVING;

    /* Numeric addresses need no DNS: resolve inline. */
    struct addrinfo hints = { .ai_family = AF_UNSPEC,
                              .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICHOST | (is_number(port) ? AI_NUMERICSERV : 0) };
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai == 0) {
        s->ai_list = s->ai_cur = res;
        try_next(s);
    } else {
        int rc = tcp_resolve_start(loop, host, port, on_resolved, s, &s->res);
        if (rc != 0) {
            destroy(s);
            return ifm_failbuf(why, whylen, rc, "connect %s:%s: cannot start the resolver: %s", host, port,
                               strerror(-rc));
        }
    }
    s->timer = ifm_timer_add(loop, s->o.connect_timeout_ms, on_connect_timeout, s);
    if (!s->timer) {
        teardown(s);
        destroy(s);
        return ifm_failbuf(why, whylen, -ENOMEM, "connect %s:%s: out of memory", host, port);
    }
    *out = s;
    return 0;
}

ifm_tcp *tcp_adopt(ifm_loop *loop, int fd, const ifm_tcp_opts *o)
{
    ifm_tcp *s = stream_new(loop, o);
    if (!s || ifm_loop_watch(loop, fd, 0, on_fd, s) != 0) {
        if (s)
            destroy(s);
        close(fd);
        return NULL;
    }
    s->fd = fd;
    s->state = ST_OPEN;
    tcp_tune(fd, &s->o);
    fill_peer(s);
    return s;
}

void tcp_set_owner(ifm_tcp *s, void (*lost)(void *owner), void *owner)
{
    s->owner_lost = lost;
    s->owner = owner;
}

void ifm_tcp_start(ifm_tcp *s, const ifm_tcp_cbs *cbs, void *arg)
{
    if (s->dead)
        return;
    s->cbs = *cbs;
    s->arg = arg;
    s->started = true;
    update_watch(s);
}

/* ---- reading and writing ---- */

/* Sends what the socket takes. Returns 0 or -errno. */
static int flush(ifm_tcp *s)
{
    while (s->wend > s->woff) {
        ssize_t n = send(s->fd, s->wq + s->woff, s->wend - s->woff, MSG_NOSIGNAL);
        if (n > 0) {
            s->woff += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            return n < 0 ? -errno : -EPIPE;
        }
    }
    if (s->woff == s->wend)
        s->woff = s->wend = 0;
    return 0;
}

static bool queue_append(ifm_tcp *s, const uint8_t *p, size_t len)
{
    if (s->woff && s->wend + len > s->wcap) {
        memmove(s->wq, s->wq + s->woff, s->wend - s->woff);
        s->wend -= s->woff;
        s->woff = 0;
    }
    if (s->wend + len > s->wcap) {
        uint8_t *nq = ifm_grow_bytes(s->wq, &s->wcap, s->wend + len, 4096, 0);
        if (!nq)
            return false;
        s->wq = nq;
    }
    memcpy(s->wq + s->wend, p, len);
    s->wend += len;
    return true;
}

int ifm_tcp_write(ifm_tcp *s, const void *data, size_t len)
{
    if (s->dead || s->ending)
        return -EPIPE;
    if (s->pending_err)
        return s->pending_err;
    size_t queued = s->wend - s->woff;
    if (queued + len > s->o.max_queue)
        return -ENOBUFS;
    const uint8_t *p = data;
    if (s->state == ST_OPEN && queued == 0 && len) {
        ssize_t n;
        do
            n = send(s->fd, p, len, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            int err = -errno;
            fail_later(s, err);
            return err;
        }
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        }
    }
    if (len && !queue_append(s, p, len))
        return -ENOMEM;
    update_watch(s);
    if (s->wend - s->woff > s->o.high_water) {
        s->over_high = true;
        return 1;
    }
    return 0;
}

size_t ifm_tcp_queued(const ifm_tcp *s)
{
    return s->wend - s->woff;
}

void ifm_tcp_read_pause(ifm_tcp *s)
{
    s->paused = true;
    update_watch(s);
}

void ifm_tcp_read_resume(ifm_tcp *s)
{
    s->paused = false;
    update_watch(s);
}

static void on_linger(ifm_loop *loop, void *arg)
{
    ifm_tcp *s = arg;
    s->timer = 0;
    enter(s);
    finish(s, -ETIMEDOUT);
    leave(s);
}

/* Starts the graceful end (also what EOF means without on_eof). */
static void begin_end(ifm_tcp *s)
{
    if (s->ending)
        return;
    s->ending = true;
    if (s->state == ST_OPEN) {
        ifm_timer_cancel(s->loop, s->timer);
        s->timer = ifm_timer_add(s->loop, s->o.linger_ms, on_linger, s);
    }
    update_watch(s);
}

/* After a flush while ending: shut the write side down, or finish. Returns false
 * if the stream ended. */
static bool end_progress(ifm_tcp *s)
{
    if (!s->ending || s->wend > s->woff)
        return true;
    if (s->eof_seen) {
        finish(s, 0);
        return false;
    }
    if (!s->shut_wr) {
        s->shut_wr = true;
        if (shutdown(s->fd, SHUT_WR) != 0) {
            finish(s, -errno);
            return false;
        }
    }
    return true;
}

void ifm_tcp_end(ifm_tcp *s)
{
    if (s->dead || s->ending || s->pending_err)
        return;
    begin_end(s);
    if (s->state == ST_OPEN) {
        /* The socket takes the rest now, or on_fd finishes the job. */
        int rc = flush(s);
        if (rc != 0) {
            fail_later(s, rc);
            return;
        }
        if (s->wend == s->woff && !s->shut_wr) {
            s->shut_wr = true;
            if (shutdown(s->fd, SHUT_WR) != 0)
                fail_later(s, -errno);
        }
        update_watch(s);
    }
}

void ifm_tcp_close(ifm_tcp *s)
{
    if (!s || s->dead)
        return;
    void (*lost)(void *) = s->owner_lost;
    void *owner = s->owner;
    teardown(s);
    if (s->depth == 0)
        destroy(s);
    if (lost)
        lost(owner);
}

const char *ifm_tcp_peer(const ifm_tcp *s)
{
    return s->peer;
}

int ifm_tcp_fd(const ifm_tcp *s)
{
    return s->fd;
}

/* Returns false if the stream ended. */
static bool handle_read(ifm_tcp *s)
{
    ssize_t n = recv(s->fd, s->rbuf, s->o.read_chunk, 0);
    if (n > 0) {
        if (s->cbs.on_data)
            s->cbs.on_data(s, s->rbuf, (size_t)n, s->arg);
        return !s->dead;
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return true;
        finish(s, -errno);
        return false;
    }
    s->eof_seen = true;
    if (s->ending)
        return end_progress(s);
    if (s->cbs.on_eof) {
        update_watch(s);
        s->cbs.on_eof(s, s->arg);
        return !s->dead;
    }
    begin_end(s);
    return end_progress(s);
}

static void handle_write(ifm_tcp *s)
{
    int rc = flush(s);
    if (rc != 0) {
        finish(s, rc);
        return;
    }
    if (s->over_high && s->wend - s->woff <= s->o.low_water) {
        s->over_high = false;
        if (s->cbs.on_drain && !s->ending) {
            s->cbs.on_drain(s, s->arg);
            if (s->dead)
                return;
        }
    }
    if (end_progress(s))
        update_watch(s);
}

static void on_fd(ifm_loop *loop, int fd, int events, void *arg)
{
    ifm_tcp *s = arg;
    if (s->dead || s->fd != fd || s->pending_err)
        return;
    enter(s);
    if (s->state == ST_CONNECTING) {
        on_connect_event(s);
    } else {
        if ((events & IFM_READ) && reading_wanted(s) && !handle_read(s))
            goto out;
        if ((events & IFM_WRITE) && !s->dead && s->wend > s->woff)
            handle_write(s);
        update_watch(s);
    }
out:
    leave(s);
}
