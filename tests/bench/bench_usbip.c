/* USB/IP benchmark: the URB round trip (64-byte bulk OUT, then a bulk IN that
 * reads it back, on CDC1's loopback of a simulated pico-ice board) and CDC
 * throughput (64 KiB OUT URBs, 16 KiB IN URBs in flight), straight through the
 * transport and through the worker's USB/IP server on loopback TCP (a client
 * thread with blocking sockets, the server on the main loop). Prints key=value
 * lines and the goal: the server adds at most 50 us per URB.
 *
 *   bench_usbip [ROUND_TRIPS] [MEGABYTES] [BROKER_URL]      (2000, 8, none)
 * With a broker (a farm's Mosquitto), the same round trip through the broker
 * tunnel (PROTOCOL.md 19.3): the server's end on the loop as in the worker, the
 * client on its own thread, QoS 1 both ways: libmosquitto's network thread
 * (usbip_tunnel_rtt_us), and an ifm_mqtt on a loop like libicefarm's carrier
 * (usbip_tunnel_loop_rtt_us); beside each, mqtt_echo*: the same messages
 * through the broker and straight back, without USB/IP (the broker's floor).
 * Goal: the tunnel adds at most 0.5 ms per round trip. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "icefarm/usbip.h"
#include "sim.h"
#include "icefarm/mqtt.h"
#include "icefarm/topics.h"
#include "usbip.h"
#include "usbip_tunnel.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct {
    ifm_loop *loop;
    wrk_transport *t;
    wrk_usbdev *dev;
    int done;
    uint32_t actual;
} bench;

static void on_arrive(void *arg, wrk_usbdev *dev, const wrk_usbinfo *info)
{
    ((bench *)arg)->dev = dev;
}

static void on_leave(void *arg, wrk_usbdev *dev)
{
    ((bench *)arg)->dev = NULL;
}

static void on_done(wrk_urb *u)
{
    bench *b = u->arg;
    b->done++;
    b->actual = u->actual;
}

static void run_until(bench *b, int done)
{
    while (b->done < done)
        ifm_loop_once(b->loop, 10);
}

/* ---- straight through the transport ---- */

static double direct_rtt(bench *b, int n)
{
    wrk_urb *out = b->t->ops->urb_alloc(b->t, b->dev, 64), *in = b->t->ops->urb_alloc(b->t, b->dev, 64);
    wrk_urb *both[2] = { out, in };
    for (int i = 0; i < 2; i++) {
        both[i]->ep = i ? 0x84 : 0x04;
        both[i]->type = WRK_EP_BULK;
        both[i]->len = 64;
        both[i]->done = on_done;
        both[i]->arg = b;
    }
    memset(out->buf, 0x5a, 64);
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        b->done = 0;
        b->t->ops->urb_submit(b->t, out);
        b->t->ops->urb_submit(b->t, in);
        run_until(b, 2);
    }
    double us = (now_s() - t0) / n * 1e6;
    b->t->ops->urb_free(b->t, out);
    b->t->ops->urb_free(b->t, in);
    return us;
}

/* ---- through the server: a client thread ---- */

typedef struct {
    int port;
    char busid[IFM_USBIP_TOKEN_LEN + 1];
    int n;
    size_t mb;
    double rtt_us, mbps;
    int failed;
} client;

static int recv_all(int fd, uint8_t *p, size_t n)
{
    while (n) {
        ssize_t r = recv(fd, p, n, 0);
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int send_submit(int fd, uint32_t seq, uint32_t devid, bool in, uint32_t ep, const uint8_t *data, int32_t len)
{
    ifm_usbip_hdr h = { .command = IFM_USBIP_CMD_SUBMIT, .seqnum = seq, .devid = devid, .direction = in, .ep = ep };
    h.u.submit.transfer_buffer_length = len;
    static uint8_t pdu[48 + 65536];
    ssize_t n = ifm_usbip_urb_pack(&h, in ? NULL : data, in ? 0 : (size_t)len, NULL, 0, pdu, sizeof pdu);
    return n > 0 && send(fd, pdu, (size_t)n, 0) == n ? 0 : -1;
}

/* One RET_SUBMIT; IN data (if `in`) into buf. Returns actual or -1. */
static int read_ret(int fd, bool in, uint8_t *buf)
{
    uint8_t h[48];
    if (recv_all(fd, h, 48))
        return -1;
    ifm_usbip_hdr r;
    ifm_err err;
    if (ifm_usbip_hdr_unpack(h, 48, &r, &err) != 48 || r.command != IFM_USBIP_RET_SUBMIT || r.u.ret.status)
        return -1;
    if (in && r.u.ret.actual_length && recv_all(fd, buf, (size_t)r.u.ret.actual_length))
        return -1;
    return r.u.ret.actual_length;
}

static void *client_main(void *arg)
{
    client *c = arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)c->port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    uint8_t req[40], rep[320];
    ifm_usbip_import_req_pack(c->busid, req, sizeof req);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) || send(fd, req, 40, 0) != 40 || recv_all(fd, rep, 320)) {
        c->failed = 1;
        close(fd);
        return NULL;
    }
    uint32_t st;
    ifm_usbip_device d;
    ifm_err err;
    ifm_usbip_import_rep_unpack(rep, 320, &st, &d, &err);
    uint32_t devid = ifm_usbip_devid(&d), seq = 1;
    uint8_t data[65536], back[65536];
    memset(data, 0x5a, sizeof data);
    double t0 = now_s();
    for (int i = 0; i < c->n && !c->failed; i++) {
        if (send_submit(fd, seq++, devid, false, 4, data, 64) || read_ret(fd, false, NULL) != 64 ||
            send_submit(fd, seq++, devid, true, 4, NULL, 64) || read_ret(fd, true, back) != 64)
            c->failed = 1;
    }
    c->rtt_us = (now_s() - t0) / c->n * 1e6;
    /* throughput: the echo holds 512 bytes, so move 512-byte OUT/IN pairs, 8 in flight */
    size_t total = c->mb << 20, moved = 0;
    t0 = now_s();
    while (moved < total && !c->failed) {
        for (int k = 0; k < 8; k++)
            if (send_submit(fd, seq++, devid, false, 4, data, 512) || send_submit(fd, seq++, devid, true, 4, NULL, 512))
                c->failed = 1;
        for (int k = 0; k < 8 && !c->failed; k++) {
            int o = read_ret(fd, false, NULL), n = read_ret(fd, true, back);
            if (o != 512 || n < 0)
                c->failed = 1;
            moved += (size_t)n;
        }
    }
    c->mbps = (double)moved / (now_s() - t0) / 1e6;
    close(fd);
    return NULL;
}

/* ---- through the broker tunnel: a client thread ----
 * Two clients run the same script: `threaded` is libmosquitto's own network
 * thread (mosquitto_loop_start; every message crosses two threads in the
 * client), `loop` is an ifm_mqtt on an ifm_loop of the client thread, the way
 * libicefarm's tunnel carrier (cli/lib/usbip_tunnel.c) and the worker run. The
 * `echo` script is the floor: the same messages through the same broker to
 * the worker's loop and straight back, without USB/IP. */

enum {
    CLIENT_THREADED,
    CLIENT_LOOP
};

typedef struct {
    int kind;
    bool echo;
    const char *host;
    int port;
    char busid[IFM_USBIP_TOKEN_LEN + 1];
    char c2s[IFM_TOPIC_MAX], s2c[IFM_TOPIC_MAX];
    int n;
    double rtt_us;
    int failed;
    uint8_t rx[4096];
    size_t rxlen;
    /* threaded */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool subscribed;
    struct mosquitto *mq;
    /* loop: made by the main thread, run by the client thread */
    ifm_loop *loop;
    ifm_mqtt *m;
} tclient;

static void rx_add(tclient *c, const void *p, size_t n)
{
    if (n > 0 && c->rxlen + n <= sizeof c->rx) {
        memcpy(c->rx + c->rxlen, p, n);
        c->rxlen += n;
    }
}

static void on_tmsg(struct mosquitto *mq, void *arg, const struct mosquitto_message *m)
{
    tclient *c = arg;
    pthread_mutex_lock(&c->mu);
    rx_add(c, m->payload, (size_t)(m->payloadlen > 0 ? m->payloadlen : 0));
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void on_tsub(struct mosquitto *mq, void *arg, int mid, int n, const int *q)
{
    tclient *c = arg;
    pthread_mutex_lock(&c->mu);
    c->subscribed = true;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void on_lmsg(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    rx_add(arg, msg->payload, msg->len);
}

static void rx_take(tclient *c, uint8_t *out, size_t n)
{
    if (out)
        memcpy(out, c->rx, n);
    memmove(c->rx, c->rx + n, c->rxlen - n);
    c->rxlen -= n;
}

/* Takes exactly n received bytes, waiting at most 5 s for them. */
static int take(tclient *c, uint8_t *out, size_t n)
{
    if (c->kind == CLIENT_LOOP) {
        uint64_t deadline = ifm_now_ms() + 5000;
        while (c->rxlen < n && ifm_now_ms() < deadline)
            ifm_loop_once(c->loop, 5);
        if (c->rxlen < n)
            return -1;
        rx_take(c, out, n);
        return 0;
    }
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 5;
    pthread_mutex_lock(&c->mu);
    while (c->rxlen < n && pthread_cond_timedwait(&c->cv, &c->mu, &dl) == 0)
        ;
    int rc = c->rxlen >= n ? 0 : -1;
    if (!rc)
        rx_take(c, out, n);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static int tsend(tclient *c, const void *p, size_t n)
{
    if (c->kind == CLIENT_LOOP)
        return ifm_mqtt_publish(c->m, c->c2s, p, n, 1, false);
    return mosquitto_publish(c->mq, NULL, c->c2s, (int)n, p, 1, false) ? -1 : 0;
}

/* Connects (threaded: here; loop: the main thread made the client, its
 * SUBSCRIBE goes before our first PUBLISH on the same connection). */
static int tconnect(tclient *c)
{
    if (c->kind == CLIENT_LOOP)
        return ifm_mqtt_wait_connected(c->m, 5000);
    c->mq = mosquitto_new(c->echo ? "bench-echo-threaded" : "bench-usbip-tunnel", true, c);
    mosquitto_int_option(c->mq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_int_option(c->mq, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_message_callback_set(c->mq, on_tmsg);
    mosquitto_subscribe_callback_set(c->mq, on_tsub);
    if (mosquitto_connect(c->mq, c->host, c->port, 30) || mosquitto_loop_start(c->mq) ||
        mosquitto_subscribe(c->mq, NULL, c->s2c, 1))
        return -1;
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 5;
    pthread_mutex_lock(&c->mu);
    while (!c->subscribed && pthread_cond_timedwait(&c->cv, &c->mu, &dl) == 0)
        ;
    pthread_mutex_unlock(&c->mu);
    return c->subscribed ? 0 : -1;
}

static void tdisconnect(tclient *c)
{
    if (c->kind == CLIENT_LOOP) {
        ifm_mqtt_disconnect(c->m);
        return;
    }
    if (c->mq) {
        mosquitto_disconnect(c->mq);
        mosquitto_loop_stop(c->mq, false);
        mosquitto_destroy(c->mq);
    }
}

static void *tclient_main(void *arg)
{
    tclient *c = arg;
    if (tconnect(c)) {
        c->failed = 1;
        tdisconnect(c);
        return NULL;
    }
    uint8_t req[40], rep[320], pdu[48 + 64], back[64];
    uint32_t st = 1, devid = 0, seq = 1;
    if (!c->echo) {
        ifm_usbip_import_req_pack(c->busid, req, sizeof req);
        ifm_usbip_device d;
        ifm_err err;
        if (tsend(c, req, 40) == 0 && take(c, rep, 320) == 0 &&
            ifm_usbip_import_rep_unpack(rep, 320, &st, &d, &err) > 0 && st == 0)
            devid = ifm_usbip_devid(&d);
        else
            c->failed = 1;
    }
    memset(back, 0x5a, sizeof back);
    double t0 = now_s();
    for (int i = 0; i < c->n && !c->failed; i++)
        for (int in = 0; in < 2 && !c->failed; in++) {
            ifm_usbip_hdr h = {
                .command = IFM_USBIP_CMD_SUBMIT, .seqnum = seq++, .devid = devid, .direction = in, .ep = 4
            };
            h.u.submit.transfer_buffer_length = 64;
            ssize_t n = ifm_usbip_urb_pack(&h, in ? NULL : back, in ? 0 : 64, NULL, 0, pdu, sizeof pdu);
            /* the echo sends back what it got: the reply's size is the request's */
            size_t want = c->echo ? (size_t)n : 48;
            if (n <= 0 || tsend(c, pdu, (size_t)n) || take(c, pdu, want) || (!c->echo && in && take(c, back, 64)))
                c->failed = 1;
        }
    c->rtt_us = (now_s() - t0) / c->n * 1e6;
    if (!c->echo)
        tsend(c, NULL, 0); /* ends the session */
    tdisconnect(c);
    return NULL;
}

static void on_c2s(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    usbip_tunnel_c2s_msg(arg, msg->topic, msg->payload, msg->len);
}

static void on_echo(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    ifm_mqtt_publish(m, arg, msg->payload, msg->len, 1, false);
}

/* One client of `kind` through the broker; the round trip in us, or -1. */
static double tunnel_client(bench *b, const char *host, int port, int kind, bool echo, const char *busid, int n)
{
    static const char *const names[] = { "bench-usbip-threaded", "bench-usbip-loop" };
    tclient *c = calloc(1, sizeof *c);
    c->kind = kind;
    c->echo = echo;
    c->host = host;
    c->port = port;
    c->n = n;
    snprintf(c->busid, sizeof c->busid, "%s", busid);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    char session[24];
    snprintf(session, sizeof session, "benchsession%d", kind); /* 8..32 characters */
    ifm_topic_usbip(c->c2s, sizeof c->c2s, "BENCH0001", session, "c2s");
    ifm_topic_usbip(c->s2c, sizeof c->s2c, "BENCH0001", session, "s2c");
    if (echo) {
        snprintf(c->c2s, sizeof c->c2s, "bench/echo/%d/c2s", kind);
        snprintf(c->s2c, sizeof c->s2c, "bench/echo/%d/s2c", kind);
    }
    if (kind == CLIENT_LOOP) { /* made here: libmosquitto's init is not thread-safe */
        c->loop = ifm_loop_new();
        ifm_mqtt_opts mo = { .host = host, .port = port, .client_id = names[kind] };
        c->m = ifm_mqtt_new(c->loop, &mo, NULL, NULL);
        if (!c->m || ifm_mqtt_subscribe(c->m, c->s2c, 1, on_lmsg, c) || ifm_mqtt_start(c->m))
            c->failed = 1;
    }
    if (!c->failed) {
        pthread_t th;
        pthread_create(&th, NULL, tclient_main, c);
        while (pthread_tryjoin_np(th, NULL) != 0)
            ifm_loop_once(b->loop, 5);
    }
    double us = c->failed ? -1 : c->rtt_us;
    ifm_mqtt_free(c->m);
    ifm_loop_free(c->loop);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
    return us;
}

/* The tunnel's server end as the worker runs it; the round trips from clients. */
static void tunnel_rtt(bench *b, usbip_server *s, const char *url, int n, double server_rtt)
{
    ifm_mqtt_opts mo = { 0 };
    char host[256];
    if (ifm_mqtt_parse_url(url, &mo, host, sizeof host)) {
        fprintf(stderr, "bench_usbip: bad broker URL %s\n", url);
        return;
    }
    mo.client_id = "bench-usbip-worker";
    ifm_mqtt *m = ifm_mqtt_new(b->loop, &mo, NULL, NULL);
    usbip_tunnel *t = usbip_tunnel_new(s, b->loop, m);
    char busid[IFM_USBIP_TOKEN_LEN + 1];
    usbip_token_new(busid);
    usbip_export *e = usbip_export_new(s, "BENCH0001", busid, "bench");
    usbip_export_set_device(e, b->dev);
    if (ifm_mqtt_start(m) || ifm_mqtt_wait_connected(m, 5000) ||
        ifm_mqtt_subscribe(m, "icefarm/BENCH0001/usbip/+/c2s", 1, on_c2s, t) ||
        ifm_mqtt_subscribe(m, "bench/echo/0/c2s", 1, on_echo, "bench/echo/0/s2c") ||
        ifm_mqtt_subscribe(m, "bench/echo/1/c2s", 1, on_echo, "bench/echo/1/s2c")) {
        fprintf(stderr, "bench_usbip: cannot reach the broker at %s\n", url);
    } else {
        static const char *const kinds[] = { "threaded", "loop" };
        for (int k = CLIENT_THREADED; k <= CLIENT_LOOP; k++) {
            double tun = tunnel_client(b, host, mo.port, k, false, busid, n);
            double echo = tunnel_client(b, host, mo.port, k, true, busid, n);
            if (tun < 0 || echo < 0) {
                fprintf(stderr, "bench_usbip: the %s tunnel client failed\n", kinds[k]);
                continue;
            }
            /* usbip_tunnel_rtt_us is the threaded client's, as before */
            printf("usbip_tunnel%s_rtt_us=%.1f added_ms=%.3f (goal <= 0.5) mqtt_echo%s_rtt_us=%.1f\n", k ? "_loop" : "",
                   tun, (tun - server_rtt) / 1000, k ? "_loop" : "", echo);
        }
    }
    usbip_tunnel_free(t);
    usbip_export_free(e);
    ifm_mqtt_free(m);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 2000;
    size_t mb = argc > 2 ? (size_t)atoi(argv[2]) : 8;
    bench b = { .loop = ifm_loop_new() };
    sim_options o;
    sim_options_default(&o);
    o.boards = 1;
    o.initial_fw = SIM_FW_PULSECOUNT;
    o.usb_packet = 65536; /* no artificial USB clock: measure the software */
    b.t = sim_transport_new(b.loop, &o);
    static const wrk_transport_events ev = { on_arrive, on_leave };
    b.t->ops->start(b.t, &ev, &b);
    while (!b.dev)
        ifm_loop_once(b.loop, 10);
    double direct = direct_rtt(&b, n);
    printf("usbip_direct_rtt_us=%.1f\n", direct);

    char why[128];
    usbip_server_opts so = { .listen_host = "127.0.0.1", .listen_port = "0" };
    usbip_server *s = usbip_server_new(b.loop, b.t, &so, why, sizeof why);
    client c = { .port = usbip_server_port(s), .n = n, .mb = mb };
    usbip_token_new(c.busid);
    usbip_export *e = usbip_export_new(s, "bench", c.busid, "bench");
    usbip_export_set_device(e, b.dev);
    pthread_t th;
    pthread_create(&th, NULL, client_main, &c);
    while (pthread_tryjoin_np(th, NULL) != 0) /* the client ends by itself (or fails) */
        ifm_loop_once(b.loop, 5);
    if (c.failed) {
        fprintf(stderr, "bench_usbip: the client failed\n");
        return 1;
    }
    printf("usbip_server_rtt_us=%.1f\n", c.rtt_us);
    printf("usbip_server_added_us_per_urb=%.1f (goal <= 50)\n", (c.rtt_us - direct) / 2);
    printf("usbip_server_cdc_mbytes_s=%.1f\n", c.mbps);
    if (argc > 3)
        tunnel_rtt(&b, s, argv[3], n, c.rtt_us);
    else
        printf("usbip_tunnel_rtt_us=- (give a broker URL)\n");
    usbip_server_free(s);
    for (int i = 0; i < 10; i++)
        ifm_loop_once(b.loop, 0);
    b.t->ops->free(b.t);
    ifm_loop_free(b.loop);
    return 0;
}
