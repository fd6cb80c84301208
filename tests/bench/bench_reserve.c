/* Reserve-and-end round trips through MQTT: C concurrent clients, each reserving
 * one board and ending it again as fast as control answers. Prints pairs per
 * second and reserve/end latency percentiles. A benchmark, not a test: it
 * asserts nothing about speed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "icefarm/loop.h"
#include "icefarm/mqtt.h"
#include "icefarm/msg.h"

typedef struct bench bench;

typedef struct {
    bench *b;
    ifm_mqtt *m;
    char name[64];
    char serial[IFM_SERIAL_MAX];
    uint64_t t0;
    bool in_end;
} client;

struct bench {
    ifm_loop *loop;
    client *clients;
    int nclients;
    uint64_t deadline;
    double *res_lat, *end_lat;
    size_t nres, nend, cap;
    size_t refused, errors;
    bool stopping;
};

static void next(client *c);

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void record(double **arr, size_t *n, size_t cap, double v)
{
    if (*n < cap)
        (*arr)[(*n)++] = v;
}

static void on_reply(ifm_mqtt *m, int status, const ifm_mqtt_msg *msg, void *arg)
{
    client *c = arg;
    bench *b = c->b;
    double ms = (double)(now_us() - c->t0) / 1000.0;
    ifm_doc doc;
    ifm_err err;
    ifm_reply_status st;
    if (status != 0 || ifm_doc_parse(&doc, msg->payload, msg->len, &err) || ifm_reply_status_decode(&doc, &st, &err)) {
        b->errors++;
        if (status == 0)
            ifm_doc_free(&doc);
        c->in_end = false;
        next(c);
        return;
    }
    if (c->in_end) {
        record(&b->end_lat, &b->nend, b->cap, ms);
        c->in_end = false;
    } else if (st.ok) {
        record(&b->res_lat, &b->nres, b->cap, ms);
        const msgpack_object *arr = ifm_map_get(doc.root, "serials");
        const msgpack_object *first = arr && arr->via.array.size ? ifm_map_get(&arr->via.array.ptr[0], "serial") : NULL;
        if (first && !ifm_obj_str(first, "serial", true, c->serial, sizeof c->serial, NULL))
            c->in_end = true;
    } else {
        b->refused++;
    }
    ifm_doc_free(&doc);
    next(c);
}

static void next(client *c)
{
    bench *b = c->b;
    if (ifm_now_ms() >= b->deadline && !c->in_end) {
        b->stopping = true;
        return;
    }
    ifm_ctl_req req;
    memset(&req, 0, sizeof req);
    char one[1][IFM_SERIAL_MAX];
    if (c->in_end) {
        req.verb = IFM_VERB_END;
        snprintf(one[0], IFM_SERIAL_MAX, "%s", c->serial);
        req.serials = one;
        req.nserials = 1;
    } else {
        req.verb = IFM_VERB_RESERVE;
        req.amount = 1;
        snprintf(req.kind, sizeof req.kind, "pulsecount");
    }
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_ctl_req_encode(&e, &req, NULL, 0);
    char topic[IFM_TOPIC_MAX];
    ifm_topic_ctl_req(topic, sizeof topic, ifm_verb_name(req.verb));
    c->t0 = now_us();
    if (ifm_mqtt_request(c->m, topic, ifm_enc_data(&e), ifm_enc_size(&e), 10000, on_reply, c))
        b->errors++;
    ifm_enc_free(&e);
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p)
{
    if (!n)
        return 0;
    qsort(v, n, sizeof *v, cmp);
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i];
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: bench_reserve BROKER_URL CLIENTS SECONDS\n");
        return 2;
    }
    bench b;
    memset(&b, 0, sizeof b);
    b.loop = ifm_loop_new();
    b.nclients = atoi(argv[2]);
    int seconds = atoi(argv[3]);
    b.cap = 1u << 22;
    b.res_lat = malloc(b.cap * sizeof(double));
    b.end_lat = malloc(b.cap * sizeof(double));
    b.clients = calloc((size_t)b.nclients, sizeof *b.clients);
    char host[256];
    ifm_mqtt_opts o = { .port = 1883 };
    if (ifm_mqtt_parse_url(argv[1], &o, host, sizeof host))
        return 2;
    for (int i = 0; i < b.nclients; i++) {
        client *c = &b.clients[i];
        c->b = &b;
        snprintf(c->name, sizeof c->name, "bench-%d", i);
        o.name = c->name;
        o.client_id = c->name;
        c->m = ifm_mqtt_new(b.loop, &o, NULL, NULL);
        ifm_mqtt_start(c->m);
        if (ifm_mqtt_wait_connected(c->m, 10000)) {
            fprintf(stderr, "cannot connect to %s\n", argv[1]);
            return 1;
        }
    }
    /* Let the reply subscriptions settle before timing. */
    uint64_t settle = ifm_now_ms() + 300;
    while (ifm_now_ms() < settle)
        ifm_loop_once(b.loop, 20);
    uint64_t start = ifm_now_ms();
    b.deadline = start + (uint64_t)seconds * 1000;
    for (int i = 0; i < b.nclients; i++)
        next(&b.clients[i]);
    while (ifm_now_ms() < b.deadline + 10000) {
        ifm_loop_once(b.loop, 50);
        bool busy = false;
        for (int i = 0; i < b.nclients; i++)
            busy |= b.clients[i].in_end;
        if (ifm_now_ms() >= b.deadline && !busy)
            break;
    }
    double secs = (double)(ifm_now_ms() - start) / 1000.0;
    printf("clients=%d pairs=%zu seconds=%.1f pairs_per_s=%.0f reserve_p50_ms=%.2f reserve_p99_ms=%.2f "
           "end_p50_ms=%.2f end_p99_ms=%.2f refused=%zu errors=%zu\n",
           b.nclients, b.nend, secs, (double)b.nend / secs, pct(b.res_lat, b.nres, 0.5), pct(b.res_lat, b.nres, 0.99),
           pct(b.end_lat, b.nend, 0.5), pct(b.end_lat, b.nend, 0.99), b.refused, b.errors);
    for (int i = 0; i < b.nclients; i++) {
        ifm_mqtt_disconnect(b.clients[i].m);
        ifm_mqtt_free(b.clients[i].m);
    }
    free(b.clients);
    free(b.res_lat);
    free(b.end_lat);
    ifm_loop_free(b.loop);
    return 0;
}
