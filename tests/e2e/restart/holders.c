/* Lease holders under load that live through broker restarts, written from
 * proto/PROTOCOL.md alone (libmosquitto + icefarm-proto, no libicefarm):
 *
 *   holders BROKER NAME[,NAME...] BOARDS EVALS WINDOW TIMEOUT_S PROGRESS_FILE [USER:PASSWORD:CAFILE]
 *
 * Each name is one MQTT connection (with its presence, section 5.1) holding
 * BOARDS boards and streaming EVALS evaluations over them, WINDOW in flight per
 * board. After a reconnect of its own it asks `leases` until every one of its
 * leases' workers is online again, then sends every evaluation still in flight
 * again with `resend` (section 14.1); on `worker reconnected` it does the same
 * for that board. PROGRESS_FILE gets the number of results received, rewritten
 * as they come, so the test script knows when to strike.
 *
 * At the end it checks, and prints one ok/not ok line each and "N passed, M
 * failed": every evaluation got exactly its right value (the sim's CRC-32 %
 * 100000), no lease ended or failed on the way, `leases` still lists them all.
 * Exit status 0 only if everything held. */
#include <errno.h>
#include <mqtt_protocol.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "icefarm/log.h"
#include "icefarm/mqtt.h"
#include "icefarm/msg.h"

#define SIZE IFM_BITSTREAM_SIZE
#define MAXB 16

typedef struct holder holder;

typedef struct {
    char serial[IFM_SERIAL_MAX];
    bool ready;
    uint32_t inflight;
} hboard;

typedef enum {
    J_PENDING,
    J_INFLIGHT,
    J_DONE
} jstate;

typedef struct {
    jstate st;
    int board;
    uint32_t expected;
    unsigned results; /* how many results arrived (duplicates counted) */
} job;

struct holder {
    struct run *run;
    char name[IFM_NAME_MAX];
    ifm_mqtt *m;
    hboard b[MAXB];
    int nb;
    job *jobs;
    size_t njobs, done, wrong, resent;
    unsigned connects;
    bool resync;        /* after our own reconnect: ask `leases` until the workers are back */
    uint64_t resync_at; /* monotonic ms of the next `leases` */
    bool reserved, asking;
    unsigned lease_ends, failures, reconnecting_events, reconnected_events;
    char batch[IFM_ID_MAX];
};

typedef struct run {
    ifm_loop *loop;
    holder *h;
    size_t nh;
    uint32_t window;
    const char *progress;
    size_t total_results;
    uint64_t last_progress;
    int pass, fail;
} run;

static uint32_t crc32_of(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

/* Bitstream `i` of holder `h`: deterministic bytes, so the expected count is known. */
static void bits(const holder *h, size_t i, uint8_t *out)
{
    uint32_t x = (uint32_t)(i * 2654435761u) ^ (uint32_t)(h - h->run->h) * 0x9E3779B9u ^ 0x1234567u;
    for (size_t k = 0; k < SIZE; k += 4) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        memcpy(out + k, &x, SIZE - k < 4 ? SIZE - k : 4);
    }
}

static void check(run *r, bool cond, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void check(run *r, bool cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s - ", cond ? "ok" : "not ok");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    cond ? r->pass++ : r->fail++;
}

static void send_jobs(holder *h, int bi, const size_t *idx, size_t n, bool resend)
{
    static uint8_t buf[64][SIZE];
    ifm_file files[64];
    for (size_t k = 0; k < n; k += 64) {
        size_t m = n - k < 64 ? n - k : 64;
        for (size_t i = 0; i < m; i++) {
            bits(h, idx[k + i], buf[i]);
            snprintf(files[i].id, sizeof files[i].id, "%zu", idx[k + i]);
            files[i].data = buf[i];
            files[i].len = SIZE;
        }
        ifm_enc e;
        ifm_enc_init(&e);
        ifm_board_cmd_encode_resend(&e, h->batch, files, m, resend);
        char topic[IFM_TOPIC_MAX];
        ifm_topic_board(topic, sizeof topic, h->b[bi].serial, "cmd");
        /* Board commands carry the holder's name (PROTOCOL.md 2); a secured
         * farm's plugin sets it itself. */
        mosquitto_property *props = NULL;
        mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, IFM_PROP_CLIENT, h->name);
        ifm_mqtt_publish_props(h->m, topic, ifm_enc_data(&e), ifm_enc_size(&e), 1, false, props);
        mosquitto_property_free_all(&props);
        ifm_enc_free(&e);
    }
}

/* Tops every ready board up to the window. */
static void dispatch(holder *h)
{
    if (!ifm_mqtt_connected(h->m) || h->resync)
        return;
    size_t next = 0;
    for (int bi = 0; bi < h->nb; bi++) {
        hboard *b = &h->b[bi];
        while (b->ready && b->inflight < h->run->window) {
            while (next < h->njobs && h->jobs[next].st != J_PENDING)
                next++;
            if (next == h->njobs)
                return;
            h->jobs[next].st = J_INFLIGHT;
            h->jobs[next].board = bi;
            b->inflight++;
            send_jobs(h, bi, &next, 1, false);
        }
    }
}

/* Everything in flight on board bi, again (the worker answers what it measured
 * from its cache and skips what it still has queued). */
static void resend_board(holder *h, int bi)
{
    size_t *idx = malloc(h->njobs * sizeof *idx), n = 0;
    for (size_t i = 0; idx && i < h->njobs; i++)
        if (h->jobs[i].st == J_INFLIGHT && h->jobs[i].board == bi)
            idx[n++] = i;
    if (n) {
        send_jobs(h, bi, idx, n, true);
        h->resent += n;
    }
    free(idx);
}

static int board_of(const holder *h, const char *serial)
{
    for (int i = 0; i < h->nb; i++)
        if (strcmp(h->b[i].serial, serial) == 0)
            return i;
    return -1;
}

static void progress(run *r)
{
    uint64_t now = ifm_now_ms();
    if (now - r->last_progress < 100)
        return;
    r->last_progress = now;
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s.tmp", r->progress);
    FILE *f = fopen(tmp, "w");
    if (f) {
        fprintf(f, "%zu\n", r->total_results);
        fclose(f);
        rename(tmp, r->progress);
    }
}

static void on_board_event(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    holder *h = arg;
    ifm_doc doc;
    ifm_err err = { "" };
    ifm_event ev;
    if (ifm_doc_parse(&doc, msg->payload, msg->len, &err) || ifm_event_decode(&doc, &ev, &err)) {
        ifm_doc_free(&doc);
        return;
    }
    int bi = board_of(h, ev.serial);
    if (bi >= 0 && strcmp(ev.event, "initialized") == 0) {
        h->b[bi].ready = true;
    } else if (bi >= 0 && strcmp(ev.event, "failure") == 0) {
        h->failures++;
        fprintf(stderr, "%s: failure on %s: %s\n", h->name, ev.serial, ev.reason);
    } else if (bi >= 0 && strcmp(ev.event, "results") == 0 && strcmp(ev.batch_id, h->batch) == 0) {
        for (size_t i = 0; ev.results && i < ev.results->via.array.size; i++) {
            ifm_result res;
            if (ifm_event_result_at(&ev, i, &res, NULL, 0, &err))
                continue;
            char *end;
            unsigned long k = strtoul(res.id, &end, 10);
            if (*end || k >= h->njobs)
                continue;
            job *j = &h->jobs[k];
            j->results++;
            if (j->st != J_INFLIGHT || j->board != bi)
                continue; /* a duplicate after a resend: the first one counted */
            if (res.type != IFM_VALUE_PULSES || (uint32_t)res.pulses != j->expected) {
                h->wrong++;
                fprintf(stderr, "%s: job %lu on %s: got %s %lld, want %u\n", h->name, k, ev.serial,
                        res.type == IFM_VALUE_FAILED ? res.error : "", (long long)res.pulses, j->expected);
            }
            j->st = J_DONE;
            h->done++;
            h->run->total_results++;
            if (h->b[bi].inflight)
                h->b[bi].inflight--;
        }
        progress(h->run);
    }
    ifm_doc_free(&doc);
    dispatch(h);
}

static void on_board_state(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    holder *h = arg;
    ifm_doc doc;
    ifm_err err = { "" };
    ifm_board_status bs;
    if (msg->len && ifm_doc_parse(&doc, msg->payload, msg->len, &err) == 0) {
        int bi = ifm_board_status_decode(&doc, &bs, &err) == 0 ? board_of(h, bs.serial) : -1;
        if (bi >= 0 && bs.state == IFM_BOARD_RESERVED)
            h->b[bi].ready = true;
        ifm_doc_free(&doc);
    }
    dispatch(h);
}

static void on_client_event(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    holder *h = arg;
    ifm_doc doc;
    ifm_err err = { "" };
    ifm_event ev;
    if (ifm_doc_parse(&doc, msg->payload, msg->len, &err) || ifm_event_decode(&doc, &ev, &err)) {
        ifm_doc_free(&doc);
        return;
    }
    int bi = board_of(h, ev.serial);
    if (strcmp(ev.event, "reservation end") == 0) {
        h->lease_ends++;
        fprintf(stderr, "%s: reservation end for %s\n", h->name, ev.serial);
    } else if (strcmp(ev.event, "failure") == 0) {
        h->failures++;
        fprintf(stderr, "%s: lease failure for %s\n", h->name, ev.serial);
    } else if (strcmp(ev.event, "worker reconnecting") == 0) {
        h->reconnecting_events++;
    } else if (strcmp(ev.event, "worker reconnected") == 0 && bi >= 0) {
        h->reconnected_events++;
        resend_board(h, bi);
    }
    ifm_doc_free(&doc);
}

static void on_leases(ifm_mqtt *m, int status, const ifm_mqtt_msg *reply, void *arg)
{
    holder *h = arg;
    h->asking = false;
    if (status != 0)
        return; /* asked again on the next turn */
    ifm_doc doc;
    ifm_err err = { "" };
    if (ifm_doc_parse(&doc, reply->payload, reply->len, &err))
        return;
    const msgpack_object *leases = NULL;
    int online = 0, listed = 0;
    if (ifm_get_array(doc.root, "leases", true, 4096, &leases, &err) == 0) {
        for (uint32_t i = 0; i < leases->via.array.size; i++) {
            char serial[IFM_SERIAL_MAX], ws[16];
            const msgpack_object *l = &leases->via.array.ptr[i];
            if (ifm_get_str(l, "serial", true, serial, sizeof serial, &err) ||
                ifm_get_str(l, "worker_state", true, ws, sizeof ws, &err) || board_of(h, serial) < 0)
                continue;
            listed++;
            online += strcmp(ws, "online") == 0;
        }
    }
    ifm_doc_free(&doc);
    if (listed < h->nb) {
        fprintf(stderr, "%s: `leases` lists %d of my %d leases\n", h->name, listed, h->nb);
        h->lease_ends += (unsigned)(h->nb - listed);
    }
    if (online == listed) {
        h->resync = false;
        for (int bi = 0; bi < h->nb; bi++)
            resend_board(h, bi);
        fprintf(stderr, "%s: back: %d lease(s), every worker online; resent %zu in flight\n", h->name, listed,
                h->resent);
        dispatch(h);
    }
}

static void ask_leases(holder *h)
{
    if (h->asking || !ifm_mqtt_connected(h->m) || ifm_now_ms() < h->resync_at)
        return;
    h->resync_at = ifm_now_ms() + 500;
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_enc_root(&e, 0);
    char topic[IFM_TOPIC_MAX];
    ifm_topic_ctl_req(topic, sizeof topic, "leases");
    if (ifm_mqtt_request(h->m, topic, ifm_enc_data(&e), ifm_enc_size(&e), 2000, on_leases, h) == 0)
        h->asking = true;
    ifm_enc_free(&e);
}

static void on_conn(ifm_mqtt *m, bool connected, void *arg)
{
    holder *h = arg;
    if (!connected)
        return;
    if (h->connects++ && h->reserved) {
        h->resync = true; /* no evaluations until control and the workers are back */
        h->resync_at = 0;
    }
}

typedef struct {
    int status;
    bool done;
    uint8_t *buf;
    size_t len;
} waitreply;

static void on_reply(ifm_mqtt *m, int status, const ifm_mqtt_msg *reply, void *arg)
{
    waitreply *w = arg;
    w->status = status;
    w->done = true;
    if (status == 0 && (w->buf = malloc(reply->len ? reply->len : 1))) {
        memcpy(w->buf, reply->payload, reply->len);
        w->len = reply->len;
    }
}

/* A blocking request (setup and teardown only). The doc points into *buf:
 * free both. */
static int call(holder *h, const char *verb, const ifm_ctl_req *req, const void *args, size_t args_len, ifm_doc *doc,
                uint8_t **buf)
{
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_ctl_req_encode(&e, req, args, args_len);
    char topic[IFM_TOPIC_MAX];
    ifm_topic_ctl_req(topic, sizeof topic, verb);
    waitreply w = { 0 };
    int rc = ifm_mqtt_request(h->m, topic, ifm_enc_data(&e), ifm_enc_size(&e), 10000, on_reply, &w);
    ifm_enc_free(&e);
    while (rc == 0 && !w.done)
        ifm_loop_once(h->run->loop, 100);
    ifm_err err = { "" };
    *buf = w.buf;
    if (rc || w.status || ifm_doc_parse(doc, w.buf, w.len, &err)) {
        free(w.buf);
        *buf = NULL;
        return -1;
    }
    return 0;
}

static int reserve(holder *h)
{
    static const uint8_t args[] = { 0x82, 0xb6, 'f', 'l', 'u', 's', 'h', '_', 'i', 'n',  't',  'e',  'r', 'v', 'a',
                                    'l',  '_',  's', 'e', 'c', 'o', 'n', 'd', 's', 0x01, 0xbd, 'f',  'l', 'u', 's',
                                    'h',  '_',  'a', 't', '_', 'b', 'i', 't', 's', 't',  'r',  'e',  'a', 'm', 's',
                                    '_',  'r',  'e', 'm', 'a', 'i', 'n', 'i', 'n', 'g',  0xcd, 0x10, 0x00 };
    ifm_ctl_req req = { .verb = IFM_VERB_RESERVE, .amount = (uint32_t)h->nb, .wait_ms = 30000 };
    snprintf(req.kind, sizeof req.kind, "pulsecount");
    ifm_doc doc;
    uint8_t *buf;
    if (call(h, "reserve", &req, args, sizeof args, &doc, &buf))
        return -1;
    ifm_reply_status st;
    ifm_err err = { "" };
    const msgpack_object *serials = NULL;
    int rc = -1;
    if (ifm_reply_status_decode(&doc, &st, &err) == 0 && st.ok &&
        ifm_get_array(doc.root, "serials", true, MAXB, &serials, &err) == 0 &&
        serials->via.array.size == (uint32_t)h->nb) {
        rc = 0;
        for (int i = 0; i < h->nb; i++)
            if (ifm_get_str(&serials->via.array.ptr[i], "serial", true, h->b[i].serial, IFM_SERIAL_MAX, &err))
                rc = -1;
    } else {
        fprintf(stderr, "%s: reserve refused: %s\n", h->name, st.error[0] ? st.error : err.msg);
    }
    ifm_doc_free(&doc);
    free(buf);
    for (int i = 0; rc == 0 && i < h->nb; i++) {
        char topic[IFM_TOPIC_MAX];
        if (ifm_topic_board(topic, sizeof topic, h->b[i].serial, "event") ||
            ifm_mqtt_subscribe(h->m, topic, 1, on_board_event, h) ||
            ifm_topic_board(topic, sizeof topic, h->b[i].serial, "state") ||
            ifm_mqtt_subscribe(h->m, topic, 1, on_board_state, h)) {
            fprintf(stderr, "%s: cannot subscribe to board %s\n", h->name, h->b[i].serial);
            rc = -1;
        }
    }
    h->reserved = rc == 0;
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 8) {
        fprintf(stderr, "usage: holders BROKER NAMES BOARDS EVALS WINDOW TIMEOUT_S PROGRESS [USER:PW:CAFILE]\n");
        return 2;
    }
    run r = { .loop = ifm_loop_new(), .window = (uint32_t)atoi(argv[5]), .progress = argv[7] };
    int nb = atoi(argv[3]);
    size_t evals = strtoul(argv[4], NULL, 10);
    uint64_t deadline = ifm_now_ms() + strtoull(argv[6], NULL, 10) * 1000;
    char names[1024];
    snprintf(names, sizeof names, "%s", argv[2]);
    char *save = NULL;
    r.h = calloc(64, sizeof *r.h);
    for (char *t = strtok_r(names, ",", &save); t && r.nh < 64; t = strtok_r(NULL, ",", &save)) {
        holder *h = &r.h[r.nh++];
        h->run = &r;
        snprintf(h->name, sizeof h->name, "%s", t);
    }
    char host[256], user[128] = "", pw[256] = "", cafile[512] = "";
    if (argc > 8 && sscanf(argv[8], "%127[^:]:%255[^:]:%511s", user, pw, cafile) < 2)
        return 2;
    uint8_t *tmp = malloc(SIZE);
    for (size_t i = 0; i < r.nh; i++) {
        holder *h = &r.h[i];
        ifm_mqtt_opts mo = { .port = 1883 };
        if (ifm_mqtt_parse_url(argv[1], &mo, host, sizeof host))
            return 2;
        mo.name = h->name;
        mo.presence = true;
        mo.username = user[0] ? user : NULL;
        mo.password = pw[0] ? pw : NULL;
        mo.cafile = cafile[0] ? cafile : NULL;
        h->m = ifm_mqtt_new(r.loop, &mo, on_conn, h);
        char topic[IFM_TOPIC_MAX];
        if (!h->m || ifm_topic_client(topic, sizeof topic, h->name, "event") ||
            ifm_mqtt_subscribe(h->m, topic, 1, on_client_event, h)) {
            fprintf(stderr, "%s: cannot subscribe to its event topic\n", h->name);
            return 1;
        }
        ifm_mqtt_start(h->m);
        if (ifm_mqtt_wait_connected(h->m, 10000)) {
            fprintf(stderr, "%s: cannot connect\n", h->name);
            return 1;
        }
        h->nb = nb;
        h->njobs = evals;
        h->jobs = calloc(evals, sizeof *h->jobs);
        for (size_t k = 0; k < evals; k++) {
            bits(h, k, tmp);
            h->jobs[k].expected = crc32_of(tmp, SIZE) % 100000u;
        }
        snprintf(h->batch, sizeof h->batch, "%.64s-run", h->name);
        if (reserve(h)) {
            fprintf(stderr, "%s: cannot reserve %d boards\n", h->name, nb);
            return 1;
        }
    }
    free(tmp);
    bool all = false;
    while (!all && ifm_now_ms() < deadline) {
        all = true;
        for (size_t i = 0; i < r.nh; i++) {
            holder *h = &r.h[i];
            if (h->resync)
                ask_leases(h);
            dispatch(h);
            all = all && h->done == h->njobs;
        }
        ifm_loop_once(r.loop, 50);
    }
    r.last_progress = 0;
    progress(&r);
    for (size_t i = 0; i < r.nh; i++) {
        holder *h = &r.h[i];
        size_t dup = 0, missing = 0;
        for (size_t k = 0; k < h->njobs; k++) {
            dup += h->jobs[k].results > 1;
            missing += h->jobs[k].st != J_DONE;
        }
        check(&r, missing == 0, "%s: all %zu evaluations answered (%zu missing)", h->name, h->njobs, missing);
        check(&r, h->wrong == 0, "%s: every value is right (%zu wrong)", h->name, h->wrong);
        check(&r, h->lease_ends == 0 && h->failures == 0, "%s: no lease ended or failed (%u ends, %u failures)",
              h->name, h->lease_ends, h->failures);
        printf("# %s: %u connection(s), %zu resent, %zu answered twice, worker reconnecting/reconnected events "
               "%u/%u\n",
               h->name, h->connects, h->resent, dup, h->reconnecting_events, h->reconnected_events);
        ifm_ctl_req req = { .verb = IFM_VERB_LEASES };
        ifm_doc doc;
        uint8_t *buf = NULL;
        const msgpack_object *leases = NULL;
        ifm_err err = { "" };
        bool got = call(h, "leases", &req, NULL, 0, &doc, &buf) == 0;
        bool listed = got && ifm_get_array(doc.root, "leases", true, 4096, &leases, &err) == 0 &&
            leases->via.array.size == (uint32_t)h->nb;
        if (got) {
            ifm_doc_free(&doc);
            free(buf);
        }
        check(&r, listed, "%s: `leases` still lists its %d leases", h->name, h->nb);
        ifm_ctl_req end = { .verb = IFM_VERB_END_ALL };
        if (call(h, "end_all", &end, NULL, 0, &doc, &buf) == 0) {
            ifm_doc_free(&doc);
            free(buf);
        }
    }
    for (size_t i = 0; i < r.nh; i++) {
        ifm_mqtt_disconnect(r.h[i].m);
        ifm_mqtt_free(r.h[i].m);
        free(r.h[i].jobs);
    }
    free(r.h);
    ifm_loop_free(r.loop);
    printf("%d passed, %d failed\n", r.pass, r.fail);
    return r.fail ? 1 : 0;
}
