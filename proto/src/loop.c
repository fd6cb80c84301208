/* A poll(2) loop with a binary min-heap of timers. Small on purpose: a worker
 * watches a handful of fds (MQTT, libusb, listeners) and a few thousand timers at
 * most, so poll and an O(log n) heap are plenty. */
#include "icefarm/loop.h"
#include "icefarm/grow.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fd;
    int events;
    ifm_fd_cb cb;
    void *arg;
} watch;

typedef struct {
    uint64_t due;
    uint64_t id;
    ifm_timer_cb cb;
    void *arg;
} timer;

struct ifm_loop {
    watch *watches;
    size_t nwatches, capwatches;
    timer *heap;
    size_t ntimers, captimers;
    uint64_t next_id;
    struct pollfd *pfds;
    size_t cappfds;
    bool stop;
    int sigfd;
    ifm_signal_cb sigcb;
    void *sigarg;
    int epfd; /* ifm_loop_fd(): an epoll set mirroring the watches, or -1 */
};

uint64_t ifm_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t ifm_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

ifm_loop *ifm_loop_new(void)
{
    ifm_loop *l = calloc(1, sizeof *l);
    if (l)
        l->sigfd = l->epfd = -1;
    return l;
}

void ifm_loop_free(ifm_loop *l)
{
    if (!l)
        return;
    if (l->sigfd >= 0)
        close(l->sigfd);
    if (l->epfd >= 0)
        close(l->epfd);
    free(l->watches);
    free(l->heap);
    free(l->pfds);
    free(l);
}

static watch *find_watch(ifm_loop *l, int fd)
{
    for (size_t i = 0; i < l->nwatches; i++)
        if (l->watches[i].fd == fd)
            return &l->watches[i];
    return NULL;
}

/* Keeps the epoll set (if there is one) in step with a watch. */
static int mirror(ifm_loop *l, int fd, int events)
{
    if (l->epfd < 0)
        return 0;
    struct epoll_event ev = { .events = ((events & IFM_READ) ? EPOLLIN : 0) | ((events & IFM_WRITE) ? EPOLLOUT : 0),
                              .data.fd = fd };
    if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev) == 0)
        return 0;
    return errno == ENOENT && epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) == 0 ? 0 : -1;
}

int ifm_loop_fd(ifm_loop *l)
{
    if (l->epfd >= 0)
        return l->epfd;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0)
        return -1;
    for (size_t i = 0; i < l->nwatches; i++)
        if (mirror(l, l->watches[i].fd, l->watches[i].events)) {
            close(l->epfd);
            l->epfd = -1;
            return -1;
        }
    return l->epfd;
}

int ifm_loop_timeout(const ifm_loop *l)
{
    if (!l->ntimers)
        return -1;
    uint64_t now = ifm_now_ms(), due = l->heap[0].due;
    return due <= now ? 0 : (int)((due - now) > 60000 ? 60000 : (due - now));
}

int ifm_loop_watch(ifm_loop *l, int fd, int events, ifm_fd_cb cb, void *arg)
{
    watch *w = find_watch(l, fd);
    if (!w) {
        watch *nw = ifm_grow(l->watches, &l->capwatches, l->nwatches, sizeof *nw, 8);
        if (!nw)
            return -1;
        l->watches = nw;
        w = &l->watches[l->nwatches++];
    }
    *w = (watch){ fd, events, cb, arg };
    return mirror(l, fd, events);
}

void ifm_loop_modify(ifm_loop *l, int fd, int events)
{
    watch *w = find_watch(l, fd);
    if (!w) {
        static const char msg[] = "icefarm: ifm_loop_modify of an fd that is not watched: aborting\n";
        if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) {
            /* nothing more to say */
        }
        abort();
    }
    w->events = events;
    /* EPOLL_CTL_MOD of a registered fd fails only if the fd was closed without
     * ifm_loop_unwatch, itself a bug the next poll reports (POLLNVAL). */
    (void)mirror(l, fd, events);
}

void ifm_loop_unwatch(ifm_loop *l, int fd)
{
    for (size_t i = 0; i < l->nwatches; i++) {
        if (l->watches[i].fd == fd) {
            l->watches[i] = l->watches[--l->nwatches];
            if (l->epfd >= 0)
                epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL); /* ENOENT/EBADF: closed first, already gone */
            return;
        }
    }
}

static void heap_swap(timer *h, size_t a, size_t b)
{
    timer t = h[a];
    h[a] = h[b];
    h[b] = t;
}

static bool heap_less(const timer *a, const timer *b)
{
    return a->due < b->due || (a->due == b->due && a->id < b->id);
}

static void sift_up(timer *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&h[i], &h[p]))
            break;
        heap_swap(h, i, p);
        i = p;
    }
}

static void sift_down(timer *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && heap_less(&h[l], &h[m]))
            m = l;
        if (r < n && heap_less(&h[r], &h[m]))
            m = r;
        if (m == i)
            return;
        heap_swap(h, i, m);
        i = m;
    }
}

static void heap_remove(ifm_loop *l, size_t i)
{
    l->heap[i] = l->heap[--l->ntimers];
    if (i < l->ntimers) {
        sift_down(l->heap, l->ntimers, i);
        sift_up(l->heap, i);
    }
}

uint64_t ifm_timer_add(ifm_loop *l, uint64_t ms, ifm_timer_cb cb, void *arg)
{
    timer *nh = ifm_grow(l->heap, &l->captimers, l->ntimers, sizeof *nh, 16);
    if (!nh) {
        /* A timer that silently never fires is a lease that never expires or a
         * wait that never ends: stop loudly instead (supervisors restart us, and
         * control reloads its leases from LMDB). */
        static const char msg[] = "icefarm: out of memory adding a timer: aborting\n";
        if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) {
            /* nothing more to say */
        }
        abort();
    }
    l->heap = nh;
    uint64_t id = ++l->next_id;
    l->heap[l->ntimers] = (timer){ ifm_now_ms() + ms, id, cb, arg };
    sift_up(l->heap, l->ntimers++);
    return id;
}

void ifm_timer_cancel(ifm_loop *l, uint64_t id)
{
    if (!id)
        return;
    for (size_t i = 0; i < l->ntimers; i++) {
        if (l->heap[i].id == id) {
            heap_remove(l, i);
            return;
        }
    }
}

size_t ifm_timer_count(const ifm_loop *l)
{
    return l->ntimers;
}

static void on_signalfd(ifm_loop *l, int fd, int events, void *arg)
{
    struct signalfd_siginfo si;
    while (read(fd, &si, sizeof si) == (ssize_t)sizeof si)
        if (l->sigcb)
            l->sigcb(l, (int)si.ssi_signo, l->sigarg);
}

int ifm_loop_signals(ifm_loop *l, const int *signals, int n, ifm_signal_cb cb, void *arg)
{
    sigset_t set;
    sigemptyset(&set);
    for (int i = 0; i < n; i++)
        sigaddset(&set, signals[i]);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
        return -1;
    int fd = signalfd(l->sigfd, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        return -1;
    l->sigfd = fd;
    l->sigcb = cb;
    l->sigarg = arg;
    return ifm_loop_watch(l, fd, IFM_READ, on_signalfd, NULL);
}

static void run_due_timers(ifm_loop *l)
{
    uint64_t now = ifm_now_ms();
    /* Only timers due now run; a callback that adds a 0 ms timer gets it next turn,
     * so a timer storm cannot starve the fds. */
    uint64_t last_id = l->next_id;
    while (l->ntimers && l->heap[0].due <= now) {
        timer t = l->heap[0];
        if (t.id > last_id)
            break;
        heap_remove(l, 0);
        t.cb(l, t.arg);
    }
}

int ifm_loop_once(ifm_loop *l, int max_wait_ms)
{
    int wait = max_wait_ms;
    if (l->ntimers) {
        uint64_t now = ifm_now_ms();
        uint64_t due = l->heap[0].due;
        int until = due <= now ? 0 : (int)((due - now) > 60000 ? 60000 : (due - now));
        if (wait < 0 || until < wait)
            wait = until;
    }
    if (l->cappfds < l->nwatches) {
        struct pollfd *np = realloc(l->pfds, l->nwatches * sizeof *np);
        if (!np)
            return -1;
        l->pfds = np;
        l->cappfds = l->nwatches;
    }
    size_t n = l->nwatches;
    for (size_t i = 0; i < n; i++) {
        /* An idle watch is not polled at all: poll reports POLLHUP/POLLERR even for
         * events == 0, and a paused stream whose peer hung up would spin the loop. */
        l->pfds[i].fd = l->watches[i].events ? l->watches[i].fd : -1;
        l->pfds[i].events = (short)(((l->watches[i].events & IFM_READ) ? POLLIN : 0) |
                                    ((l->watches[i].events & IFM_WRITE) ? POLLOUT : 0));
        l->pfds[i].revents = 0;
    }
    int rc = poll(l->pfds, (nfds_t)n, wait);
    if (rc < 0 && errno != EINTR)
        return -1;
    for (size_t i = 0; rc > 0 && i < n; i++) {
        short re = l->pfds[i].revents;
        if (!re)
            continue;
        /* Callbacks may unwatch or add fds, so look the watch up again by fd. */
        watch *w = find_watch(l, l->pfds[i].fd);
        if (!w || !w->events)
            continue;
        int ev = 0;
        if (re & (POLLIN | POLLHUP | POLLERR | POLLNVAL))
            ev |= IFM_READ;
        if (re & (POLLOUT | POLLERR))
            ev |= IFM_WRITE;
        ev &= w->events | ((re & (POLLHUP | POLLERR | POLLNVAL)) ? IFM_READ : 0);
        if (ev)
            w->cb(l, w->fd, ev, w->arg);
    }
    run_due_timers(l);
    return 0;
}

int ifm_loop_run(ifm_loop *l)
{
    l->stop = false;
    while (!l->stop)
        if (ifm_loop_once(l, -1) != 0)
            return -1;
    return 0;
}

void ifm_loop_stop(ifm_loop *l)
{
    l->stop = true;
}

bool ifm_loop_stopped(const ifm_loop *l)
{
    return l->stop;
}
