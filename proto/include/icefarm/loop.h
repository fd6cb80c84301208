/* icefarm event loop: one per process.
 *
 * Every icefarm process runs a single thread around this loop: the MQTT socket,
 * libusb's file descriptors, TCP listeners and all timers are serviced here. The
 * old Python system ran a thread per board and most of its races came from that;
 * with one loop, a callback runs to completion before the next one starts.
 *
 * Ownership: the loop owns its timer and watch records; callers own whatever
 * their `arg` pointers point to. Timers are one-shot; re-arm from the callback.
 * Cancelling a timer that already fired or was cancelled is a harmless no-op,
 * so a state can always cancel "its" timer on exit without bookkeeping.
 */
#ifndef ICEFARM_LOOP_H
#define ICEFARM_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "icefarm/err.h"

typedef struct ifm_loop ifm_loop;

enum {
    IFM_READ = 1,
    IFM_WRITE = 2
};

typedef void (*ifm_fd_cb)(ifm_loop *loop, int fd, int events, void *arg);
typedef void (*ifm_timer_cb)(ifm_loop *loop, void *arg);
typedef void (*ifm_signal_cb)(ifm_loop *loop, int signo, void *arg);

ifm_loop *ifm_loop_new(void);
/* Frees the loop and every pending timer; does not close watched fds. */
void ifm_loop_free(ifm_loop *loop);

/* Watch `fd` for `events` (IFM_READ|IFM_WRITE). Calling again for the same fd
 * replaces the events, callback and arg. events == 0 keeps the fd registered
 * but idle. Returns 0 or -1 (out of memory). */
IFM_MUST_CHECK int ifm_loop_watch(ifm_loop *loop, int fd, int events, ifm_fd_cb cb, void *arg);
/* Changes the events of an fd already watched (keeping its callback and arg):
 * the record exists, so nothing is allocated and nothing can fail. An fd that is
 * not watched is a bug: the process aborts with a message. */
void ifm_loop_modify(ifm_loop *loop, int fd, int events);
void ifm_loop_unwatch(ifm_loop *loop, int fd);

/* One-shot timer after `ms` milliseconds. Returns a nonzero id; never fails:
 * if the timer cannot be stored (out of memory) the process aborts with a
 * message, because a timer that silently never fires would be a lease that
 * never expires. Callers need not check. */
uint64_t ifm_timer_add(ifm_loop *loop, uint64_t ms, ifm_timer_cb cb, void *arg);
/* Cancels a pending timer; unknown or fired ids (and 0) are ignored. */
void ifm_timer_cancel(ifm_loop *loop, uint64_t id);
/* Number of pending timers (for tests and leak checks). */
size_t ifm_timer_count(const ifm_loop *loop);

/* Deliver SIGINT/SIGTERM/SIGHUP (whichever are listed) through the loop instead of
 * asynchronously; uses signalfd, so handlers run as ordinary callbacks. */
IFM_MUST_CHECK int ifm_loop_signals(ifm_loop *loop, const int *signals, int n, ifm_signal_cb cb, void *arg);

/* Run until ifm_loop_stop(). Returns 0, or -1 if poll() failed. The stop flag
 * only ends ifm_loop_run: ifm_loop_once keeps serving fds and timers, so a
 * shutdown can still flush its last messages through the same loop. */
int ifm_loop_run(ifm_loop *loop);
/* Run one iteration, waiting at most `max_wait_ms` (-1: until something happens). */
int ifm_loop_once(ifm_loop *loop, int max_wait_ms);
void ifm_loop_stop(ifm_loop *loop);

/* Embedding this loop in another one (libuv's uv_backend_fd/uv_backend_timeout):
 * ifm_loop_fd returns an epoll fd, owned by the loop and stable for its life, that
 * polls readable whenever one of the watched fds is ready; ifm_loop_timeout says
 * in how many ms the next timer is due (-1: no timer). The outer loop waits on
 * the fd for at most that long, then calls ifm_loop_once(loop, 0). Both answers
 * change after any callback or call that adds watches or timers: ask again each
 * time round. ifm_loop_fd returns -1 if epoll is unavailable. */
int ifm_loop_fd(ifm_loop *loop);
int ifm_loop_timeout(const ifm_loop *loop);
bool ifm_loop_stopped(const ifm_loop *loop);

/* Monotonic milliseconds: for timeouts and durations. */
uint64_t ifm_now_ms(void);
/* Wall-clock milliseconds since the epoch: for lease deadlines stored on disk. */
uint64_t ifm_wall_ms(void);

#endif
