/* The same run as bench_eval, driven by raw MQTT messages (proto's MQTT glue
 * only, no libicefarm), so the client library's own cost is visible. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "icefarm/mqtt.h"
#include "icefarm/msg.h"

typedef struct {
    ifm_mqtt *m;
    char (*serials)[IFM_SERIAL_MAX];
    uint32_t *inflight;
    bool *ready, reserved;
    size_t n, sent, done, total, window;
    uint8_t *bits;
} run;

static size_t index_of(run *r, const char *topic)
{
    char serial[IFM_SERIAL_MAX];
    if (ifm_topic_level(topic, 1, serial, sizeof serial))
        return SIZE_MAX;
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->serials[i], serial) == 0)
            return i;
    return SIZE_MAX;
}

static void top_up(run *r, size_t i)
{
    while (r->ready[i] && r->inflight[i] < r->window && r->sent < r->total) {
        char topic[IFM_TOPIC_MAX];
        ifm_topic_board(topic, sizeof topic, r->serials[i], "cmd");
        ifm_file f = { "", r->bits, IFM_BITSTREAM_SIZE };
        snprintf(f.id, sizeof f.id, "%zu", r->sent);
        ifm_enc e;
        ifm_enc_init(&e);
        ifm_board_cmd_encode(&e, "raw", &f, 1);
        ifm_mqtt_publish(r->m, topic, ifm_enc_data(&e), ifm_enc_size(&e), 1, false);
        ifm_enc_free(&e);
        r->sent++;
        r->inflight[i]++;
    }
}

static void on_board_msg(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    run *r = arg;
    size_t i = index_of(r, msg->topic);
    ifm_doc doc;
    ifm_err err;
    if (i == SIZE_MAX || !msg->len || ifm_doc_parse(&doc, msg->payload, msg->len, &err)) {
        if (msg->len)
            ifm_doc_free(&doc);
        return;
    }
    char state[16] = "", event[32] = "";
    ifm_get_str(doc.root, "state", false, state, sizeof state, NULL);
    ifm_get_str(doc.root, "event", false, event, sizeof event, NULL);
    if (strcmp(state, "reserved") == 0 || strcmp(event, "initialized") == 0)
        r->ready[i] = true;
    if (strcmp(event, "results") == 0) {
        const msgpack_object *res = ifm_map_get(doc.root, "results");
        size_t k = res && res->type == MSGPACK_OBJECT_ARRAY ? res->via.array.size : 0;
        r->done += k;
        r->inflight[i] -= k < r->inflight[i] ? (uint32_t)k : r->inflight[i];
    }
    ifm_doc_free(&doc);
    top_up(r, i);
}

static void on_reserved(ifm_mqtt *m, int status, const ifm_mqtt_msg *msg, void *arg)
{
    run *r = arg;
    ifm_doc doc;
    ifm_err err;
    if (status || ifm_doc_parse(&doc, msg->payload, msg->len, &err))
        return;
    const msgpack_object *arr = ifm_map_get(doc.root, "serials");
    r->n = arr && arr->type == MSGPACK_OBJECT_ARRAY ? arr->via.array.size : 0;
    r->serials = calloc(r->n ? r->n : 1, sizeof *r->serials);
    r->inflight = calloc(r->n ? r->n : 1, sizeof *r->inflight);
    r->ready = calloc(r->n ? r->n : 1, sizeof *r->ready);
    for (size_t i = 0; i < r->n; i++) {
        ifm_get_str(&arr->via.array.ptr[i], "serial", true, r->serials[i], IFM_SERIAL_MAX, NULL);
        char topic[IFM_TOPIC_MAX];
        if (ifm_topic_board(topic, sizeof topic, r->serials[i], "event") ||
            ifm_mqtt_subscribe(m, topic, 1, on_board_msg, r) ||
            ifm_topic_board(topic, sizeof topic, r->serials[i], "state") ||
            ifm_mqtt_subscribe(m, topic, 1, on_board_msg, r)) {
            fprintf(stderr, "bench_eval_raw: cannot subscribe to board %s\n", r->serials[i]);
            exit(1);
        }
    }
    r->reserved = true;
    ifm_doc_free(&doc);
}

static void request(ifm_mqtt *m, ifm_ctl_req *req, const void *args, size_t len, ifm_mqtt_reply_cb cb, void *arg)
{
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_ctl_req_encode(&e, req, args, len);
    char topic[IFM_TOPIC_MAX];
    ifm_topic_ctl_req(topic, sizeof topic, ifm_verb_name(req->verb));
    if (ifm_mqtt_request(m, topic, ifm_enc_data(&e), ifm_enc_size(&e), 30000, cb, arg)) {
        fprintf(stderr, "bench_eval_raw: cannot send the %s request\n", ifm_verb_name(req->verb));
        exit(1);
    }
    ifm_enc_free(&e);
}

static void ignore(ifm_mqtt *m, int status, const ifm_mqtt_msg *msg, void *arg)
{
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: bench_eval_raw BROKER BOARDS EVALS_PER_BOARD WINDOW COUNT_WINDOW_MS\n");
        return 2;
    }
    run r;
    memset(&r, 0, sizeof r);
    size_t boards = (size_t)atoi(argv[2]);
    r.total = boards * (size_t)atoi(argv[3]);
    r.window = (size_t)atoi(argv[4]);
    double window_ms = atof(argv[5]);
    ifm_loop *loop = ifm_loop_new();
    char host[256];
    ifm_mqtt_opts o = { .port = 1883, .name = "bench-raw", .client_id = "bench-raw" };
    if (ifm_mqtt_parse_url(argv[1], &o, host, sizeof host))
        return 2;
    r.m = ifm_mqtt_new(loop, &o, NULL, NULL);
    ifm_mqtt_start(r.m);
    if (ifm_mqtt_wait_connected(r.m, 10000))
        return 1;
    ifm_enc a;
    ifm_enc_init(&a);
    ifm_enc_map(&a, 2);
    ifm_enc_kuint(&a, "flush_interval_seconds", 1);
    ifm_enc_kuint(&a, "flush_at_bitstreams_remaining", r.window);
    ifm_ctl_req req = { .verb = IFM_VERB_RESERVE, .amount = (uint32_t)boards, .wait_ms = 30000 };
    snprintf(req.kind, sizeof req.kind, "pulsecount");
    request(r.m, &req, ifm_enc_data(&a), ifm_enc_size(&a), on_reserved, &r);
    ifm_enc_free(&a);
    r.bits = malloc(IFM_BITSTREAM_SIZE);
    for (size_t i = 0; i < IFM_BITSTREAM_SIZE; i++)
        r.bits[i] = (uint8_t)(i * 131u + 7u);
    uint64_t deadline = ifm_now_ms() + 60000;
    for (bool ready = false; !ready && ifm_now_ms() < deadline;) {
        ifm_loop_once(loop, 50);
        ready = r.reserved && r.n;
        for (size_t i = 0; ready && i < r.n; i++)
            ready = r.ready[i];
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (size_t i = 0; i < r.n; i++)
        top_up(&r, i);
    deadline = ifm_now_ms() + 600000;
    while (r.done < r.total && ifm_now_ms() < deadline)
        ifm_loop_once(loop, 50);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    double per_board_ms = secs * 1000.0 * (double)r.n / (double)(r.done ? r.done : 1);
    printf("boards=%zu evals=%zu seconds=%.2f evals_per_s=%.1f per_eval_per_board_ms=%.1f overhead_ms=%.1f\n", r.n,
           r.done, secs, (double)r.done / secs, per_board_ms, per_board_ms - window_ms);
    ifm_ctl_req end = { .verb = IFM_VERB_END_ALL };
    request(r.m, &end, NULL, 0, ignore, NULL);
    ifm_mqtt_flush(r.m, 2000);
    ifm_mqtt_disconnect(r.m);
    ifm_mqtt_free(r.m);
    ifm_loop_free(loop);
    free(r.serials);
    free(r.inflight);
    free(r.ready);
    free(r.bits);
    return r.done >= r.total ? 0 : 1;
}
