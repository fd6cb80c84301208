/* TCP on the event loop: non-blocking listen, accept and connect, and a buffered
 * byte stream with back-pressure, for the USB/IP server and client, the DCSS
 * connection and the metrics responder. Redis's anet.c (socket set-up) and libuv's
 * stream handles (read/write/drain/close life cycle) are the models.
 *
 * Every socket gets TCP_NODELAY (small request/response protocols) and TCP
 * keep-alive (a dead peer is noticed in keepalive_s + 3 x 10 s at most).
 *
 * Threads: every function here must be called from the loop's thread. Host names
 * are resolved by getaddrinfo() on a short-lived helper thread that reports back
 * through an eventfd on the loop, so a slow DNS server never blocks the loop;
 * numeric addresses are resolved inline. A stream closed while its name is being
 * resolved forgets the lookup; the helper thread finishes it (at most the
 * resolver's own timeout, see resolv.conf(5)) and frees it by itself.
 *
 * Errors: functions return 0 (or a count) on success and a negative errno value
 * on failure (-ECONNREFUSED, -ETIMEDOUT, -EPIPE...); strerror(-rc) names them.
 * Set-up functions also write a one-line reason into `why` when it is not NULL.
 *
 * Ownership and lifetime of a stream (ifm_tcp):
 *   - it is created by ifm_tcp_connect(), by a listener (handed to the accept
 *     callback) or by a redialer, and belongs to the caller from then on;
 *   - it ends exactly one way: ifm_tcp_close() by the caller (no callback follows),
 *     or on_close(s, status) from the loop (peer EOF, error, ifm_tcp_end()
 *     finished); the stream is freed when on_close returns;
 *   - a connect that fails calls on_connect(s, -err) and then frees the stream
 *     (no on_close): on_connect is always called from the loop, never from inside
 *     ifm_tcp_connect();
 *   - data passed to on_data is borrowed for the duration of the call.
 * Re-entrancy: inside any callback of a stream, every function may be called on
 * that stream (write, pause, resume, end, close) and on others; after
 * ifm_tcp_close() no further callback of that stream runs, even later in the same
 * loop turn.
 */
#ifndef ICEFARM_TCP_H
#define ICEFARM_TCP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "icefarm/loop.h"
#include "icefarm/err.h"

typedef struct ifm_tcp ifm_tcp;
typedef struct ifm_tcp_listener ifm_tcp_listener;
typedef struct ifm_tcp_redial ifm_tcp_redial;

/* Zero fields mean the default. */
typedef struct {
    size_t high_water;           /* write queue above this: ifm_tcp_write returns 1; default 256 KiB */
    size_t low_water;            /* on_drain when the queue falls to this; default high_water / 4 */
    size_t max_queue;            /* a write that would queue more fails with -ENOBUFS; default 16 MiB */
    size_t read_chunk;           /* bytes read per turn (fairness between streams); default 64 KiB */
    unsigned keepalive_s;        /* idle seconds before keep-alive probes; default 30 */
    unsigned connect_timeout_ms; /* per connect (all addresses of the name); default 10000 */
    unsigned linger_ms;          /* bound on ifm_tcp_end(): flush and wait for the peer; default 5000 */
} ifm_tcp_opts;

typedef struct {
    /* Outgoing streams only: status 0 connected, or -errno (the stream is then freed). */
    void (*on_connect)(ifm_tcp *s, int status, void *arg);
    /* Bytes received (also after ifm_tcp_end()); not called while reading is paused. */
    void (*on_data)(ifm_tcp *s, const uint8_t *data, size_t len, void *arg);
    /* The write queue fell to low_water after a write had returned 1. Optional. */
    void (*on_drain)(ifm_tcp *s, void *arg);
    /* The peer finished sending (half-close); the stream stays writable. Optional:
     * without it, EOF ends the stream with on_close(s, 0). */
    void (*on_eof)(ifm_tcp *s, void *arg);
    /* The stream ended: 0 (peer EOF, or ifm_tcp_end() completed), or -errno. */
    void (*on_close)(ifm_tcp *s, int status, void *arg);
} ifm_tcp_cbs;

/* ---- streams ---- */

/* Starts connecting to host:port (a name, an IPv4 or IPv6 address; port a number
 * or a service). *out is the stream at once; writes are queued until connected.
 * Returns 0 or a negative errno (bad arguments, out of memory, no thread). */
IFM_MUST_CHECK int ifm_tcp_connect(ifm_loop *loop, const char *host, const char *port, const ifm_tcp_opts *opts,
                                   const ifm_tcp_cbs *cbs, void *arg, ifm_tcp **out, char *why, size_t whylen);

/* For accepted streams: sets the callbacks and starts reading. Until then the
 * stream reads nothing (ifm_tcp_close() is the other choice). */
void ifm_tcp_start(ifm_tcp *s, const ifm_tcp_cbs *cbs, void *arg);

/* Queues `len` bytes (copied) and sends what the socket takes now.
 * Returns 0 (queue at or below high_water), 1 (accepted, but the queue is above
 * high_water: stop producing until on_drain), -ENOBUFS (over max_queue: nothing
 * queued, the stream is still usable), or -EPIPE/-ECONNRESET/... (the stream is
 * broken: on_close follows from the loop unless you close it first). */
int ifm_tcp_write(ifm_tcp *s, const void *data, size_t len);
/* Bytes queued and not yet taken by the kernel. */
size_t ifm_tcp_queued(const ifm_tcp *s);

/* Back-pressure from the consumer: no on_data until resumed. */
void ifm_tcp_read_pause(ifm_tcp *s);
void ifm_tcp_read_resume(ifm_tcp *s);

/* Graceful close: no more writes; sends what is queued, then shuts down the write
 * side (the peer sees EOF) and keeps reading until the peer's EOF; on_close(s, 0)
 * when done, or on_close(s, -ETIMEDOUT) if that took more than linger_ms (also when
 * reading stays paused). Like libuv's uv_shutdown followed by reading to EOF. */
void ifm_tcp_end(ifm_tcp *s);
/* Immediate close: queued data is dropped, no callback follows. Safe on any
 * stream state, also inside its own callbacks. */
void ifm_tcp_close(ifm_tcp *s);

/* "ip:port" of the peer ("" before connected), for log lines (client=...). */
const char *ifm_tcp_peer(const ifm_tcp *s);
int ifm_tcp_fd(const ifm_tcp *s);

/* ---- listeners ---- */

/* Called with each accepted stream, which belongs to the callee: ifm_tcp_start()
 * or ifm_tcp_close() it (now or later). */
typedef void (*ifm_tcp_accept_cb)(ifm_tcp_listener *l, ifm_tcp *s, void *arg);

/* Listens on host:port (host NULL, "" or "*": every address; port "0": an
 * ephemeral port, see ifm_tcp_listener_port). The name is resolved inline (this
 * is start-up). `opts` applies to the accepted streams. Returns 0 or -errno. */
IFM_MUST_CHECK int ifm_tcp_listen(ifm_loop *loop, const char *host, const char *port, const ifm_tcp_opts *opts,
                                  ifm_tcp_accept_cb cb, void *arg, ifm_tcp_listener **out, char *why, size_t whylen);
int ifm_tcp_listener_port(const ifm_tcp_listener *l);
/* Stops listening; accepted streams live on. Safe inside the accept callback. */
void ifm_tcp_listener_close(ifm_tcp_listener *l);

/* "HOST:PORT", "[v6]:PORT" or ":PORT" (host "") into its parts. 0 or -EINVAL. */
int ifm_tcp_split_hostport(const char *in, char *host, size_t hostcap, char *port, size_t portcap);

/* ---- exponential back-off with jitter ---- */

typedef struct {
    uint32_t base_ms; /* first delay; default 100 */
    uint32_t max_ms;  /* cap; default 30000 */
    uint32_t seed;    /* jitter PRNG seed; 0: from the clock and the address */
} ifm_backoff_opts;

typedef struct {
    uint32_t base_ms, max_ms, attempt, rng;
} ifm_backoff;

void ifm_backoff_init(ifm_backoff *b, const ifm_backoff_opts *opts);
/* The delay before the next attempt: d = min(max, base * 2^attempt), returned as
 * a uniform value in [d/2, d] ("equal jitter": peers that failed together do not
 * retry together, and the delay still grows). */
uint64_t ifm_backoff_next(ifm_backoff *b);
void ifm_backoff_reset(ifm_backoff *b);

/* ---- a connection that comes back ---- */

/* Keeps one outgoing connection up: connects; when an attempt fails or the
 * connected stream closes (on_close, or ifm_tcp_close() by the caller), it waits
 * ifm_backoff_next() and connects again; a successful connect resets the back-off.
 * `cbs` are the stream callbacks (called for each attempt's stream; on_connect
 * with a failure is followed by the next attempt, not by on_close). */
IFM_MUST_CHECK int ifm_tcp_redial_start(ifm_loop *loop, const char *host, const char *port, const ifm_tcp_opts *opts,
                                        const ifm_backoff_opts *backoff, const ifm_tcp_cbs *cbs, void *arg,
                                        ifm_tcp_redial **out, char *why, size_t whylen);
/* The connected stream, or NULL while connecting or waiting. */
ifm_tcp *ifm_tcp_redial_stream(const ifm_tcp_redial *r);
/* Milliseconds until the next attempt (valid in on_connect failures and on_close),
 * counted from when that callback returns. */
uint64_t ifm_tcp_redial_delay(const ifm_tcp_redial *r);
/* Number of attempts since the last successful connect. */
uint32_t ifm_tcp_redial_failures(const ifm_tcp_redial *r);
/* Stops for good: closes the stream (no on_close) and frees the redialer. Safe
 * inside its callbacks. */
void ifm_tcp_redial_stop(ifm_tcp_redial *r);

#endif
