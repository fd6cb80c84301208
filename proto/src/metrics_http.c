/* The metrics responder's sockets: a listener from icefarm/tcp.h, one request per
 * connection, a bounded head and a bounded wait. */
#include "icefarm/metrics_http.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "icefarm/log.h"
#include "icefarm/tcp.h"

enum {
    MAX_HEAD = 8192,
    MAX_CONNS = 32,
    HEAD_TIMEOUT_MS = 10000,
};

typedef struct conn conn;

struct ifm_metrics_server {
    ifm_loop *loop;
    ifm_metrics *reg;
    ifm_tcp_listener *l;
    conn *conns; /* doubly linked */
    int nconns;
};

struct conn {
    ifm_metrics_server *srv;
    ifm_tcp *s;
    conn *prev, *next;
    uint64_t timer;
    size_t n;
    bool answered;
    char head[MAX_HEAD];
};

static void conn_free(conn *c)
{
    ifm_metrics_server *srv = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->nconns--;
    ifm_timer_cancel(srv->loop, c->timer);
    free(c);
}

static const char too_large[] = "HTTP/1.1 431 Request Header Fields Too Large\r\n"
                                "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 29\r\n"
                                "Connection: close\r\n\r\nrequest head over 8192 bytes\n";

/* Answers the head received so far, or with 431 when it is too long. */
static void answer(conn *c, bool overflow)
{
    char *resp = NULL;
    size_t len = 0;
    int code = 431;
    if (overflow) {
        resp = strdup(too_large);
        len = resp ? strlen(resp) : 0;
    } else {
        code = ifm_metrics_http_answer(c->srv->reg, c->head, c->n, &resp, &len);
    }
    c->answered = true;
    ifm_timer_cancel(c->srv->loop, c->timer);
    c->timer = 0;
    if (code != 200)
        IFM_INFO("metrics: client=%s status=%d", ifm_tcp_peer(c->s), code);
    if (resp)
        (void)ifm_tcp_write(c->s, resp, len); /* a failure ends in on_close */
    free(resp);
    ifm_tcp_end(c->s);
}

/* The end of the head: an empty line. */
static bool head_complete(const conn *c)
{
    for (size_t i = 1; i < c->n; i++) {
        if (c->head[i] != '\n')
            continue;
        if (c->head[i - 1] == '\n' || (i >= 2 && c->head[i - 1] == '\r' && c->head[i - 2] == '\n'))
            return true;
    }
    return false;
}

static void on_data(ifm_tcp *s, const uint8_t *data, size_t len, void *arg)
{
    conn *c = arg;
    if (c->answered)
        return;
    if (len > MAX_HEAD - c->n) {
        answer(c, true);
        return;
    }
    memcpy(c->head + c->n, data, len);
    c->n += len;
    if (head_complete(c))
        answer(c, false);
}

static void on_eof(ifm_tcp *s, void *arg)
{
    conn *c = arg;
    if (!c->answered)
        answer(c, false); /* the head ended with the connection: answer what came */
}

static void on_close(ifm_tcp *s, int status, void *arg)
{
    conn_free(arg);
}

static void on_head_timeout(ifm_loop *loop, void *arg)
{
    conn *c = arg;
    c->timer = 0;
    IFM_INFO("metrics: client=%s sent no complete request within %d ms; closed", ifm_tcp_peer(c->s), HEAD_TIMEOUT_MS);
    ifm_tcp_close(c->s);
    conn_free(c);
}

static void on_accept(ifm_tcp_listener *l, ifm_tcp *s, void *arg)
{
    ifm_metrics_server *srv = arg;
    conn *c = srv->nconns < MAX_CONNS ? calloc(1, sizeof *c) : NULL;
    if (!c) {
        IFM_WARN("metrics: client=%s refused: %d connections open", ifm_tcp_peer(s), srv->nconns);
        ifm_tcp_close(s);
        return;
    }
    c->srv = srv;
    c->s = s;
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    c->timer = ifm_timer_add(srv->loop, HEAD_TIMEOUT_MS, on_head_timeout, c);
    static const ifm_tcp_cbs cbs = { .on_data = on_data, .on_eof = on_eof, .on_close = on_close };
    ifm_tcp_start(s, &cbs, c);
}

int ifm_metrics_serve(ifm_loop *loop, ifm_metrics *reg, const char *hostport, ifm_metrics_server **out, char *why,
                      size_t whylen)
{
    *out = NULL;
    char host[256], port[8];
    if (ifm_tcp_split_hostport(hostport, host, sizeof host, port, sizeof port) != 0) {
        if (why && whylen)
            snprintf(why, whylen, "metrics listen address '%s': expected HOST:PORT", hostport ? hostport : "");
        return -EINVAL;
    }
    ifm_metrics_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return -ENOMEM;
    srv->loop = loop;
    srv->reg = reg;
    ifm_tcp_opts o = { .linger_ms = 5000 };
    int rc = ifm_tcp_listen(loop, host, port, &o, on_accept, srv, &srv->l, why, whylen);
    if (rc != 0) {
        free(srv);
        return rc;
    }
    *out = srv;
    return 0;
}

int ifm_metrics_server_port(const ifm_metrics_server *srv)
{
    return ifm_tcp_listener_port(srv->l);
}

void ifm_metrics_server_free(ifm_metrics_server *srv)
{
    if (!srv)
        return;
    ifm_tcp_listener_close(srv->l);
    while (srv->conns) {
        conn *c = srv->conns;
        ifm_tcp_close(c->s);
        conn_free(c);
    }
    free(srv);
}
