/* Contended reservations against a real farm: C clients in one event loop
 * reserve 1-3 boards each (all or nothing), hold them briefly, end them, and
 * repeat until `total` grants have happened. Every grant is checked against the
 * boards currently held by other clients: a board is marked free only when its
 * holder *sends* the end request, and control can only grant it again after
 * processing that request, so any overlap is a real double grant.
 * Exit 0 and "N passed, 0 failed" when no board was ever granted twice. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "icefarm/loop.h"
#include "icefarm/mqtt.h"
#include "icefarm/msg.h"

#define MAX_HELD 3

typedef struct race race;

typedef struct {
    race *r;
    ifm_mqtt *m;
    char name[32];
    char held[MAX_HELD][IFM_SERIAL_MAX];
    size_t nheld;
    unsigned seed;
    bool busy;
} client;

typedef struct {
    char serial[IFM_SERIAL_MAX];
    int holder; /* client index, -1 free */
} board;

struct race {
    ifm_loop *loop;
    client *c;
    int nc;
    board *boards;
    size_t nboards, capboards;
    size_t grants, refused, double_grants, errors, target;
};

static board *board_of(race *r, const char *serial)
{
    for (size_t i = 0; i < r->nboards; i++)
        if (strcmp(r->boards[i].serial, serial) == 0)
            return &r->boards[i];
    if (r->nboards == r->capboards) {
        r->capboards = r->capboards ? r->capboards * 2 : 64;
        r->boards = realloc(r->boards, r->capboards * sizeof *r->boards);
    }
    board *b = &r->boards[r->nboards++];
    snprintf(b->serial, sizeof b->serial, "%s", serial);
    b->holder = -1;
    return b;
}

static void send_req(client *c, ifm_ctl_req *req);

static void on_hold_done(ifm_loop *loop, void *arg)
{
    client *c = arg;
    ifm_ctl_req req = { .verb = IFM_VERB_END };
    req.serials = c->held;
    req.nserials = c->nheld;
    for (size_t i = 0; i < c->nheld; i++)
        board_of(c->r, c->held[i])->holder = -1; /* free from the moment we ask */
    c->nheld = 0;
    send_req(c, &req);
}

static void start_reserve(client *c)
{
    if (c->r->grants >= c->r->target) {
        c->busy = false;
        return;
    }
    ifm_ctl_req req = { .verb = IFM_VERB_RESERVE };
    req.amount = 1 + (uint32_t)(rand_r(&c->seed) % MAX_HELD);
    snprintf(req.kind, sizeof req.kind, "pulsecount");
    send_req(c, &req);
}

static void on_retry(ifm_loop *loop, void *arg)
{
    start_reserve(arg);
}

static void on_reply(ifm_mqtt *m, int status, const ifm_mqtt_msg *msg, void *arg)
{
    client *c = arg;
    race *r = c->r;
    ifm_doc doc;
    ifm_err err;
    ifm_reply_status st;
    if (status || ifm_doc_parse(&doc, msg->payload, msg->len, &err) || ifm_reply_status_decode(&doc, &st, &err)) {
        r->errors++;
        if (!status)
            ifm_doc_free(&doc);
        ifm_timer_add(r->loop, 10, on_retry, c);
        return;
    }
    const msgpack_object *arr = ifm_map_get(doc.root, "serials");
    bool was_reserve = c->nheld == 0 && arr && arr->via.array.size && arr->via.array.ptr[0].type == MSGPACK_OBJECT_MAP;
    if (!st.ok) {
        r->refused++;
        ifm_timer_add(r->loop, 1 + rand_r(&c->seed) % 5, on_retry, c);
    } else if (was_reserve) {
        for (uint32_t i = 0; i < arr->via.array.size && c->nheld < MAX_HELD; i++) {
            char serial[IFM_SERIAL_MAX];
            const msgpack_object *s = ifm_map_get(&arr->via.array.ptr[i], "serial");
            if (!s || ifm_obj_str(s, "serial", true, serial, sizeof serial, NULL))
                continue;
            board *b = board_of(r, serial);
            if (b->holder >= 0) {
                r->double_grants++;
                fprintf(stderr, "DOUBLE GRANT: %s to %s while held by %s\n", serial, c->name, r->c[b->holder].name);
            }
            b->holder = (int)(c - r->c);
            snprintf(c->held[c->nheld++], IFM_SERIAL_MAX, "%s", serial);
            r->grants++;
        }
        ifm_timer_add(r->loop, rand_r(&c->seed) % 20, on_hold_done, c);
    } else {
        start_reserve(c); /* an end finished */
    }
    ifm_doc_free(&doc);
}

static void send_req(client *c, ifm_ctl_req *req)
{
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_ctl_req_encode(&e, req, NULL, 0);
    char topic[IFM_TOPIC_MAX];
    ifm_topic_ctl_req(topic, sizeof topic, ifm_verb_name(req->verb));
    if (ifm_mqtt_request(c->m, topic, ifm_enc_data(&e), ifm_enc_size(&e), 20000, on_reply, c))
        c->r->errors++;
    ifm_enc_free(&e);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: race BROKER CLIENTS GRANTS\n");
        return 2;
    }
    race r;
    memset(&r, 0, sizeof r);
    r.loop = ifm_loop_new();
    r.nc = atoi(argv[2]);
    r.target = (size_t)atol(argv[3]);
    r.c = calloc((size_t)r.nc, sizeof *r.c);
    char host[256];
    ifm_mqtt_opts o = { .port = 1883 };
    if (ifm_mqtt_parse_url(argv[1], &o, host, sizeof host))
        return 2;
    for (int i = 0; i < r.nc; i++) {
        client *c = &r.c[i];
        c->r = &r;
        c->seed = (unsigned)i * 2654435761u;
        snprintf(c->name, sizeof c->name, "racer-%d", i);
        o.name = o.client_id = c->name;
        c->m = ifm_mqtt_new(r.loop, &o, NULL, NULL);
        ifm_mqtt_start(c->m);
        if (ifm_mqtt_wait_connected(c->m, 20000)) {
            fprintf(stderr, "cannot connect\n");
            return 1;
        }
    }
    uint64_t settle = ifm_now_ms() + 300;
    while (ifm_now_ms() < settle)
        ifm_loop_once(r.loop, 20);
    for (int i = 0; i < r.nc; i++) {
        r.c[i].busy = true;
        start_reserve(&r.c[i]);
    }
    /* Generous: a slow machine only makes this take longer. */
    uint64_t deadline = ifm_now_ms() + 600000;
    for (;;) {
        bool busy = false;
        for (int i = 0; i < r.nc; i++)
            busy |= r.c[i].busy || r.c[i].nheld;
        if (!busy || ifm_now_ms() > deadline)
            break;
        ifm_loop_once(r.loop, 50);
    }
    printf("%zu grants (%zu refused while contended) over %zu boards by %d clients, %zu errors\n", r.grants, r.refused,
           r.nboards, r.nc, r.errors);
    bool ok_grants = r.grants >= r.target, ok_double = r.double_grants == 0;
    printf("%s - reached %zu contended grants\n", ok_grants ? "ok" : "not ok", r.target);
    printf("%s - no board granted twice (%zu double grants)\n", ok_double ? "ok" : "not ok", r.double_grants);
    printf("%d passed, %d failed\n", ok_grants + ok_double, !ok_grants + !ok_double);
    for (int i = 0; i < r.nc; i++) {
        ifm_mqtt_disconnect(r.c[i].m);
        ifm_mqtt_free(r.c[i].m);
    }
    free(r.c);
    free(r.boards);
    ifm_loop_free(r.loop);
    return ok_grants && ok_double ? 0 : 1;
}
