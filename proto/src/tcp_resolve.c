/* Name resolution off the loop: getaddrinfo() on a detached helper thread that
 * signals an eventfd the loop watches. The job is shared by the thread and the
 * loop with a reference count; whoever drops the last reference closes the
 * eventfd and frees the job, so a cancelled lookup needs no joining and the
 * thread never writes to a closed (or reused) descriptor. */
#include "tcp_int.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct tcp_resolve {
    atomic_int refs;
    int efd;
    ifm_loop *loop;
    tcp_resolve_cb cb;
    void *arg;
    int rc; /* written by the thread before it signals */
    struct addrinfo *res;
    char host[256];
    char port[32];
};

static void unref(tcp_resolve *r)
{
    if (atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    close(r->efd);
    if (r->res)
        freeaddrinfo(r->res);
    free(r);
}

static void *resolve_thread(void *arg)
{
    tcp_resolve *r = arg;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG };
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(r->host, r->port, &hints, &res);
    r->rc = tcp_gai_errno(gai);
    r->res = gai == 0 ? res : NULL;
    uint64_t one = 1;
    ssize_t n = write(r->efd, &one, sizeof one);
    (void)n; /* an eventfd write of 1 cannot fail short of a counter overflow */
    unref(r);
    return NULL;
}

static void on_ready(ifm_loop *loop, int fd, int events, void *arg)
{
    tcp_resolve *r = arg;
    uint64_t v;
    if (read(fd, &v, sizeof v) != (ssize_t)sizeof v)
        return; /* not yet */
    ifm_loop_unwatch(loop, fd);
    struct addrinfo *res = r->res;
    r->res = NULL;
    int rc = r->rc;
    tcp_resolve_cb cb = r->cb;
    void *cbarg = r->arg;
    unref(r);
    cb(cbarg, rc, res);
}

int tcp_resolve_start(ifm_loop *loop, const char *host, const char *port, tcp_resolve_cb cb, void *arg,
                      tcp_resolve **out)
{
    if (strlen(host) >= sizeof((tcp_resolve *)0)->host || strlen(port) >= sizeof((tcp_resolve *)0)->port)
        return -ENAMETOOLONG;
    tcp_resolve *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->efd < 0) {
        int err = -errno;
        free(r);
        return err;
    }
    strcpy(r->host, host);
    strcpy(r->port, port);
    r->loop = loop;
    r->cb = cb;
    r->arg = arg;
    atomic_init(&r->refs, 2); /* the loop's and the thread's */
    if (ifm_loop_watch(loop, r->efd, IFM_READ, on_ready, r) != 0) {
        close(r->efd);
        free(r);
        return -ENOMEM;
    }

    /* The thread blocks every signal: the process takes them through signalfd. */
    pthread_attr_t attr;
    sigset_t all, old;
    sigfillset(&all);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    int rc = pthread_create(&t, &attr, resolve_thread, r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        ifm_loop_unwatch(loop, r->efd);
        close(r->efd);
        free(r);
        return -rc;
    }
    *out = r;
    return 0;
}

void tcp_resolve_cancel(tcp_resolve *r)
{
    ifm_loop_unwatch(r->loop, r->efd);
    unref(r);
}
