/* Exponential back-off with jitter, and a connection that comes back: the
 * redialer owns one stream at a time and sits between it and the caller's
 * callbacks, so it sees every failure and close and schedules the next attempt. */
#include "tcp_int.h"
#include "icefarm/err.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- back-off ---- */

void ifm_backoff_init(ifm_backoff *b, const ifm_backoff_opts *opts)
{
    ifm_backoff_opts o = opts ? *opts : (ifm_backoff_opts){ 0 };
    b->base_ms = o.base_ms ? o.base_ms : 100;
    b->max_ms = o.max_ms ? o.max_ms : 30000;
    if (b->max_ms < b->base_ms)
        b->max_ms = b->base_ms;
    b->attempt = 0;
    b->rng = o.seed ? o.seed : (uint32_t)(ifm_now_ms() ^ (uintptr_t)b ^ ((uint32_t)getpid() << 16));
    if (!b->rng)
        b->rng = 1;
}

static uint32_t xorshift32(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

uint64_t ifm_backoff_next(ifm_backoff *b)
{
    uint64_t d = b->base_ms;
    for (uint32_t i = 0; i < b->attempt && d < b->max_ms; i++)
        d *= 2;
    if (d > b->max_ms)
        d = b->max_ms;
    if (b->attempt < 64)
        b->attempt++;
    uint64_t half = d / 2;
    return half + xorshift32(&b->rng) % (d - half + 1);
}

void ifm_backoff_reset(ifm_backoff *b)
{
    b->attempt = 0;
}

/* ---- redialer ---- */

struct ifm_tcp_redial {
    ifm_loop *loop;
    char host[256];
    char port[32];
    ifm_tcp_opts o;
    ifm_backoff backoff;
    ifm_tcp_cbs user;
    void *arg;
    ifm_tcp *s; /* the attempt in progress or the connected stream */
    bool connected;
    uint64_t timer, delay;
    uint32_t failures;
    int depth;
    bool dead;
};

static void attempt(ifm_loop *loop, void *arg);

/* The next attempt's delay, known to the user's callback (ifm_tcp_redial_delay)... */
static void prepare(ifm_tcp_redial *r)
{
    r->s = NULL;
    r->connected = false;
    r->delay = ifm_backoff_next(&r->backoff);
}

/* ... and counted from after that callback, so the user never sees an attempt
 * sooner than the delay it was told (and a stop inside the callback arms nothing). */
static void arm(ifm_tcp_redial *r)
{
    if (!r->dead)
        r->timer = ifm_timer_add(r->loop, r->delay, attempt, r);
}

static void schedule(ifm_tcp_redial *r)
{
    prepare(r);
    arm(r);
}

static void enter(ifm_tcp_redial *r)
{
    r->depth++;
}

static void leave(ifm_tcp_redial *r)
{
    if (--r->depth == 0 && r->dead)
        free(r);
}

static void t_connect(ifm_tcp *s, int status, void *arg)
{
    ifm_tcp_redial *r = arg;
    enter(r);
    if (status == 0) {
        r->connected = true;
        r->failures = 0;
        ifm_backoff_reset(&r->backoff);
    } else {
        r->failures++;
        prepare(r);
    }
    if (r->user.on_connect)
        r->user.on_connect(s, status, r->arg);
    if (status != 0)
        arm(r);
    leave(r);
}

static void t_data(ifm_tcp *s, const uint8_t *data, size_t len, void *arg)
{
    ifm_tcp_redial *r = arg;
    if (r->user.on_data)
        r->user.on_data(s, data, len, r->arg);
}

static void t_drain(ifm_tcp *s, void *arg)
{
    ifm_tcp_redial *r = arg;
    if (r->user.on_drain)
        r->user.on_drain(s, r->arg);
}

static void t_eof(ifm_tcp *s, void *arg)
{
    ifm_tcp_redial *r = arg;
    r->user.on_eof(s, r->arg);
}

static void t_close(ifm_tcp *s, int status, void *arg)
{
    ifm_tcp_redial *r = arg;
    enter(r);
    prepare(r);
    if (r->user.on_close)
        r->user.on_close(s, status, r->arg);
    arm(r);
    leave(r);
}

/* The caller closed the stream itself (ifm_tcp_close): dial again. */
static void lost(void *owner)
{
    ifm_tcp_redial *r = owner;
    if (!r->dead)
        schedule(r);
}

static void attempt(ifm_loop *loop, void *arg)
{
    ifm_tcp_redial *r = arg;
    r->timer = 0;
    ifm_tcp_cbs cbs = { t_connect, t_data, t_drain, r->user.on_eof ? t_eof : NULL, t_close };
    ifm_tcp *s = NULL;
    if (ifm_tcp_connect(loop, r->host, r->port, &r->o, &cbs, r, &s, NULL, 0) != 0) {
        r->failures++;
        schedule(r);
        return;
    }
    tcp_set_owner(s, lost, r);
    r->s = s;
}

int ifm_tcp_redial_start(ifm_loop *loop, const char *host, const char *port, const ifm_tcp_opts *opts,
                         const ifm_backoff_opts *backoff, const ifm_tcp_cbs *cbs, void *arg, ifm_tcp_redial **out,
                         char *why, size_t whylen)
{
    *out = NULL;
    if (!loop || !host || !*host || !port || !*port || !cbs)
        return ifm_failbuf(why, whylen, -EINVAL, "redial: host and port are required");
    ifm_tcp_redial *r = calloc(1, sizeof *r);
    if (!r)
        return ifm_failbuf(why, whylen, -ENOMEM, "redial %s:%s: out of memory", host, port);
    if (strlen(host) >= sizeof r->host || strlen(port) >= sizeof r->port) {
        free(r);
        return ifm_failbuf(why, whylen, -ENAMETOOLONG, "redial: host or port too long");
    }
    strcpy(r->host, host);
    strcpy(r->port, port);
    r->loop = loop;
    r->user = *cbs;
    r->arg = arg;
    tcp_opts_defaults(&r->o, opts);
    ifm_backoff_init(&r->backoff, backoff);
    r->timer = ifm_timer_add(loop, 0, attempt, r);
    if (!r->timer) {
        free(r);
        return ifm_failbuf(why, whylen, -ENOMEM, "redial %s:%s: out of memory", host, port);
    }
    *out = r;
    return 0;
}

ifm_tcp *ifm_tcp_redial_stream(const ifm_tcp_redial *r)
{
    return r->connected ? r->s : NULL;
}

uint64_t ifm_tcp_redial_delay(const ifm_tcp_redial *r)
{
    return r->delay;
}

uint32_t ifm_tcp_redial_failures(const ifm_tcp_redial *r)
{
    return r->failures;
}

void ifm_tcp_redial_stop(ifm_tcp_redial *r)
{
    if (!r || r->dead)
        return;
    r->dead = true;
    ifm_timer_cancel(r->loop, r->timer);
    r->timer = 0;
    if (r->s) {
        tcp_set_owner(r->s, NULL, NULL);
        ifm_tcp_close(r->s);
        r->s = NULL;
    }
    if (r->depth == 0)
        free(r);
}
