/* libFuzzer target: ifm_doc_parse and every message decoder.
 *
 * Input: one selector byte, then the payload. The selector picks the decoder
 * (see fuzz_msg.h); SEL_ALL runs every decoder on the same doc. Whatever a
 * decoder accepts is encoded again with the matching encoder, decoded again,
 * and must come back equal: a decoder that accepts what its encoder cannot
 * reproduce (or the reverse) aborts, as does any crash, leak or UB. */
#include <math.h>
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_msg.h"
#include "icefarm/msg.h"

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "fuzz_msg: check failed: %s (line %d)\n", #cond, __LINE__);                                \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Parses an encoder's output, which must always parse. */
static void reparse(ifm_doc *doc, const ifm_enc *e)
{
    ifm_err err = { "" };
    if (ifm_doc_parse(doc, ifm_enc_data(e), ifm_enc_size(e), &err)) {
        fprintf(stderr, "fuzz_msg: re-encoding does not parse: %s\n", err.msg);
        abort();
    }
}

static void same_obj(const msgpack_object *a, const msgpack_object *b)
{
    CHECK((a == NULL) == (b == NULL));
    if (!a)
        return;
    ifm_enc ea, eb;
    ifm_enc_init(&ea);
    ifm_enc_init(&eb);
    CHECK(ifm_obj_pack(a, &ea) == 0);
    CHECK(ifm_obj_pack(b, &eb) == 0);
    CHECK(ifm_enc_size(&ea) == ifm_enc_size(&eb));
    CHECK(memcmp(ifm_enc_data(&ea), ifm_enc_data(&eb), ifm_enc_size(&ea)) == 0);
    ifm_enc_free(&ea);
    ifm_enc_free(&eb);
}

static void fuzz_ctl_req(const ifm_doc *doc, ifm_verb verb)
{
    ifm_ctl_req a;
    ifm_err err = { "" };
    if (ifm_ctl_req_decode(doc, verb, &a, &err)) {
        CHECK(err.msg[0]);
        ifm_ctl_req_free(&a);
        return;
    }
    ifm_enc args;
    ifm_enc_init(&args);
    if (a.args)
        CHECK(ifm_obj_pack(a.args, &args) == 0);
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_ctl_req_encode(&e, &a, a.args ? ifm_enc_data(&args) : NULL, ifm_enc_size(&args));
    ifm_doc d2;
    reparse(&d2, &e);
    ifm_ctl_req b;
    if (ifm_ctl_req_decode(&d2, verb, &b, &err)) {
        fprintf(stderr, "fuzz_msg: re-encoded %s request rejected: %s\n", ifm_verb_name(verb), err.msg);
        abort();
    }
    CHECK(a.verb == b.verb && a.amount == b.amount && a.wait_ms == b.wait_ms && a.duration_s == b.duration_s);
    CHECK(strcmp(a.kind, b.kind) == 0);
    CHECK(a.nserials == b.nserials);
    for (size_t i = 0; i < a.nserials; i++) {
        CHECK(strcmp(a.serials[i], b.serials[i]) == 0);
        CHECK(ifm_serial_valid(a.serials[i]));
    }
    same_obj(a.args, b.args);
    ifm_ctl_req_free(&b);
    ifm_doc_free(&d2);
    ifm_enc_free(&e);
    ifm_enc_free(&args);
    ifm_ctl_req_free(&a);
}

static void fuzz_reply(const ifm_doc *doc)
{
    ifm_reply_status a, b;
    ifm_err err = { "" };
    if (ifm_reply_status_decode(doc, &a, &err)) {
        CHECK(err.msg[0]);
        return;
    }
    CHECK(a.code >= 100 && a.code <= 599);
    CHECK(memchr(a.error, '\0', sizeof a.error) != NULL);
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_reply_begin(&e, a.code, a.error[0] ? a.error : NULL, 0);
    ifm_doc d2;
    reparse(&d2, &e);
    CHECK(ifm_reply_status_decode(&d2, &b, &err) == 0);
    CHECK(a.code == b.code && strcmp(a.error, b.error) == 0);
    CHECK(b.ok == (a.code >= 200 && a.code < 300));
    ifm_doc_free(&d2);
    ifm_enc_free(&e);
}

static void fuzz_worker_state(const ifm_doc *doc)
{
    ifm_worker_state a, b;
    ifm_err err = { "" };
    if (ifm_worker_state_decode(doc, &a, &err)) {
        CHECK(err.msg[0]);
        ifm_worker_state_free(&a);
        return;
    }
    CHECK(ifm_name_valid(a.worker, IFM_NAME_MAX));
    CHECK(a.nkinds <= IFM_MAX_KINDS && a.nboards <= IFM_MAX_SERIALS);
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_worker_state_encode(&e, &a);
    ifm_doc d2;
    reparse(&d2, &e);
    if (ifm_worker_state_decode(&d2, &b, &err)) {
        fprintf(stderr, "fuzz_msg: re-encoded worker state rejected: %s\n", err.msg);
        abort();
    }
    CHECK(strcmp(a.worker, b.worker) == 0 && a.online == b.online && a.epoch == b.epoch);
    CHECK(a.instance == b.instance && a.heartbeat_ms == b.heartbeat_ms && (a.online || a.clean == b.clean));
    CHECK(a.nkinds == b.nkinds && a.nboards == b.nboards);
    for (size_t i = 0; i < a.nkinds; i++)
        CHECK(strcmp(a.kinds[i], b.kinds[i]) == 0);
    for (size_t i = 0; i < a.nboards; i++) {
        CHECK(strcmp(a.boards[i].serial, b.boards[i].serial) == 0);
        CHECK(ifm_serial_valid(a.boards[i].serial));
        CHECK(a.boards[i].state == b.boards[i].state && a.boards[i].state < IFM_BOARD_STATE_COUNT);
        CHECK(strcmp(a.boards[i].kind, b.boards[i].kind) == 0);
    }
    ifm_worker_state_free(&b);
    ifm_doc_free(&d2);
    ifm_enc_free(&e);
    ifm_worker_state_free(&a);
}

static void fuzz_board_status(const ifm_doc *doc)
{
    ifm_board_status a, b;
    ifm_err err = { "" };
    if (ifm_board_status_decode(doc, &a, &err)) {
        CHECK(err.msg[0]);
        return;
    }
    CHECK(ifm_serial_valid(a.serial));
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_board_status_encode(&e, &a);
    ifm_doc d2;
    reparse(&d2, &e);
    CHECK(ifm_board_status_decode(&d2, &b, &err) == 0);
    CHECK(memcmp(&a, &b, sizeof a) == 0); /* both memset before decoding */
    ifm_doc_free(&d2);
    ifm_enc_free(&e);
}

static void fuzz_worker_cmd(const ifm_doc *doc)
{
    ifm_worker_cmd a, b;
    ifm_err err = { "" };
    if (ifm_worker_cmd_decode(doc, &a, &err)) {
        CHECK(err.msg[0]);
        return;
    }
    CHECK(a.op < IFM_WOP_COUNT && ifm_serial_valid(a.serial));
    ifm_enc args;
    ifm_enc_init(&args);
    if (a.args)
        CHECK(ifm_obj_pack(a.args, &args) == 0);
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_worker_cmd_encode(&e, &a, a.args ? ifm_enc_data(&args) : NULL, ifm_enc_size(&args));
    ifm_doc d2;
    reparse(&d2, &e);
    CHECK(ifm_worker_cmd_decode(&d2, &b, &err) == 0);
    CHECK(a.op == b.op && a.lease == b.lease);
    CHECK(strcmp(a.serial, b.serial) == 0 && strcmp(a.kind, b.kind) == 0 && strcmp(a.client, b.client) == 0);
    same_obj(a.args, b.args);
    ifm_doc_free(&d2);
    ifm_enc_free(&e);
    ifm_enc_free(&args);
}

static void fuzz_board_cmd(const ifm_doc *doc)
{
    ifm_board_cmd a, b;
    ifm_err err = { "" };
    if (ifm_board_cmd_decode(doc, &a, &err)) {
        CHECK(err.msg[0]);
        ifm_board_cmd_free(&a);
        return;
    }
    bool evaluate = strcmp(a.op, "evaluate") == 0, flash = strcmp(a.op, "flash") == 0;
    CHECK(evaluate || flash || strcmp(a.op, "unbind") == 0 || strcmp(a.op, "announce") == 0);
    CHECK(evaluate ? a.nfiles >= 1 && a.nfiles <= IFM_MAX_FILES : a.nfiles == 0 && !a.files);
    CHECK(flash ? a.image && a.image_len >= 512 && a.image_len <= IFM_MAX_IMAGE : !a.image);
    ifm_enc e;
    ifm_enc_init(&e);
    if (evaluate)
        ifm_board_cmd_encode_resend(&e, a.batch_id, a.files, a.nfiles, a.resend);
    else if (flash)
        ifm_board_flash_encode(&e, a.image, a.image_len);
    else
        ifm_board_op_encode(&e, a.op);
    ifm_doc d2;
    reparse(&d2, &e);
    CHECK(ifm_board_cmd_decode(&d2, &b, &err) == 0);
    CHECK(strcmp(a.op, b.op) == 0 && strcmp(a.batch_id, b.batch_id) == 0 && a.resend == b.resend);
    CHECK(a.image_len == b.image_len && (!flash || memcmp(a.image, b.image, a.image_len) == 0));
    CHECK(a.nfiles == b.nfiles);
    for (size_t i = 0; i < a.nfiles; i++) {
        CHECK(strcmp(a.files[i].id, b.files[i].id) == 0);
        CHECK(a.files[i].len == b.files[i].len && a.files[i].len > 0);
        CHECK(memcmp(a.files[i].data, b.files[i].data, a.files[i].len) == 0);
    }
    ifm_board_cmd_free(&b);
    ifm_doc_free(&d2);
    ifm_enc_free(&e);
    ifm_board_cmd_free(&a);
}

static void same_result(const ifm_result *a, const ifm_result *b)
{
    CHECK(strcmp(a->id, b->id) == 0 && a->type == b->type);
    switch (a->type) {
    case IFM_VALUE_PULSES:
        CHECK(a->pulses == b->pulses && a->pulses >= 0);
        break;
    case IFM_VALUE_FITNESS:
    case IFM_VALUE_WAVEFORM:
        CHECK(memcmp(&a->fitness, &b->fitness, sizeof a->fitness) == 0 || (isnan(a->fitness) && isnan(b->fitness)));
        if (a->type == IFM_VALUE_WAVEFORM) {
            CHECK(a->nsamples == b->nsamples);
            CHECK(a->nsamples == 0 || memcmp(a->samples, b->samples, a->nsamples * 2) == 0);
        }
        break;
    case IFM_VALUE_FAILED:
        CHECK(strcmp(a->error, b->error) == 0);
        break;
    }
}

static uint16_t g_samples[2][70000];

static void fuzz_event(const ifm_doc *doc)
{
    ifm_event a, b;
    ifm_err err = { "" };
    if (ifm_event_decode(doc, &a, &err)) {
        CHECK(err.msg[0]);
        return;
    }
    bool results = strcmp(a.event, "results") == 0;
    bool usbip = strncmp(a.event, "usbip ", 6) == 0; /* busid, host and port are required there */
    CHECK(results == (a.results != NULL));
    ifm_enc e;
    ifm_enc_init(&e);
    if (results)
        ifm_event_results_lease_encode(&e, a.serial, a.batch_id, a.lease, NULL, 0);
    else if (usbip)
        ifm_event_usbip_encode(&e, a.event, a.serial, a.busid, a.host, a.port, a.reason[0] ? a.reason : NULL, a.lease);
    else
        ifm_event_lease_encode(&e, a.event, a.serial, a.reason[0] ? a.reason : NULL, a.batch_id, a.lease);
    ifm_doc d2;
    reparse(&d2, &e);
    CHECK(ifm_event_decode(&d2, &b, &err) == 0);
    CHECK(strcmp(a.event, b.event) == 0 && strcmp(a.serial, b.serial) == 0);
    CHECK(usbip || strcmp(a.batch_id, b.batch_id) == 0); /* a usbip event has no batch: not written again */
    CHECK(a.lease == b.lease);
    if (!results)
        CHECK(strcmp(a.reason, b.reason) == 0);
    if (usbip)
        CHECK(strcmp(a.busid, b.busid) == 0 && strcmp(a.host, b.host) == 0 && a.port == b.port);
    ifm_doc_free(&d2);
    ifm_enc_free(&e);
    if (!results)
        return;
    /* each result alone: decode, re-encode, decode, compare */
    size_t n = a.results->via.array.size;
    for (size_t i = 0; i < n; i++) {
        ifm_result r, r2;
        if (ifm_event_result_at(&a, i, &r, g_samples[0], 70000, &err)) {
            CHECK(err.msg[0]);
            continue;
        }
        /* no buffer: no samples (and never a count that points nowhere) */
        ifm_result bare;
        CHECK(ifm_event_result_at(&a, i, &bare, NULL, 0, &err) == 0);
        CHECK(bare.nsamples == 0 || bare.samples != NULL);
        ifm_enc e1;
        ifm_enc_init(&e1);
        ifm_event_results_encode(&e1, a.serial, a.batch_id, &r, 1);
        ifm_doc d1;
        reparse(&d1, &e1);
        ifm_event ev1;
        CHECK(ifm_event_decode(&d1, &ev1, &err) == 0);
        CHECK(ifm_event_result_at(&ev1, 0, &r2, g_samples[1], 70000, &err) == 0);
        same_result(&r, &r2);
        ifm_doc_free(&d1);
        ifm_enc_free(&e1);
    }
    ifm_result r;
    CHECK(ifm_event_result_at(&a, n, &r, NULL, 0, &err) == -1);
}

static void fuzz_lease(const ifm_doc *doc)
{
    ifm_lease_info a, b;
    ifm_err err = { "" };
    if (ifm_lease_info_decode(doc, &a, &err)) {
        CHECK(err.msg[0]);
        return;
    }
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_lease_info_encode(&e, &a);
    ifm_doc d2;
    reparse(&d2, &e);
    CHECK(ifm_lease_info_decode(&d2, &b, &err) == 0);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
    ifm_doc_free(&d2);
    ifm_enc_free(&e);
}

static void fuzz_available(const ifm_doc *doc)
{
    ifm_available a, b;
    ifm_err err = { "" };
    if (ifm_available_decode(doc, &a, &err)) {
        CHECK(err.msg[0]);
        return;
    }
    CHECK(a.nkinds <= IFM_MAX_KINDS);
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_available_encode(&e, &a);
    ifm_doc d2;
    reparse(&d2, &e);
    CHECK(ifm_available_decode(&d2, &b, &err) == 0);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
    ifm_doc_free(&d2);
    ifm_enc_free(&e);
}

static void fuzz_worker_stats(const ifm_doc *doc)
{
    ifm_worker_stats a, b;
    ifm_err err = { "" };
    if (ifm_worker_stats_decode(doc, &a, &err)) {
        CHECK(err.msg[0]);
        return;
    }
    CHECK(a.failures <= a.evaluations && a.instance > 0);
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_worker_stats_encode(&e, &a);
    ifm_doc d2;
    reparse(&d2, &e);
    CHECK(ifm_worker_stats_decode(&d2, &b, &err) == 0);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
    ifm_doc_free(&d2);
    ifm_enc_free(&e);
}

static void fuzz_heartbeat(const ifm_doc *doc)
{
    ifm_heartbeat a, b;
    ifm_err err = { "" };
    if (ifm_heartbeat_decode(doc, &a, &err)) {
        CHECK(err.msg[0]);
        return;
    }
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_heartbeat_encode(&e, &a);
    ifm_doc d2;
    reparse(&d2, &e);
    CHECK(ifm_heartbeat_decode(&d2, &b, &err) == 0);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
    ifm_doc_free(&d2);
    ifm_enc_free(&e);
}

static void fuzz_farm_stats(const ifm_doc *doc)
{
    static ifm_farm_stats a, b; /* large: not on the fuzzer's stack */
    ifm_err err = { "" };
    if (ifm_farm_stats_decode(doc, &a, &err)) {
        CHECK(err.msg[0]);
        return;
    }
    CHECK(a.nkinds <= IFM_MAX_KINDS && a.nhistory <= IFM_STATS_BUCKETS && a.failures <= a.evaluations);
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_farm_stats_encode(&e, &a);
    ifm_doc d2;
    reparse(&d2, &e);
    CHECK(ifm_farm_stats_decode(&d2, &b, &err) == 0);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
    ifm_doc_free(&d2);
    ifm_enc_free(&e);
}

static void fuzz_worker_live(const ifm_doc *doc)
{
    ifm_worker_live a, b;
    ifm_err err = { "" };
    if (ifm_worker_live_decode(doc, &a, &err)) {
        CHECK(err.msg[0]);
        return;
    }
    CHECK((unsigned)a.state <= IFM_LIVE_OFFLINE && a.worker[0] && strlen(a.reason) < sizeof a.reason);
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_worker_live_encode(&e, &a);
    ifm_doc d2;
    reparse(&d2, &e);
    CHECK(ifm_worker_live_decode(&d2, &b, &err) == 0);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
    ifm_doc_free(&d2);
    ifm_enc_free(&e);
}

static void fuzz_presence(const ifm_doc *doc)
{
    ifm_err err = { "" };
    if (ifm_presence_decode(doc, &err)) {
        CHECK(err.msg[0]);
        return;
    }
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_presence_encode(&e);
    ifm_doc d2;
    reparse(&d2, &e);
    CHECK(ifm_presence_decode(&d2, &err) == 0);
    ifm_doc_free(&d2);
    ifm_enc_free(&e);
}

static void run(int sel, const ifm_doc *doc)
{
    if (sel < IFM_VERB_COUNT) {
        fuzz_ctl_req(doc, (ifm_verb)sel);
        return;
    }
    switch (sel) {
    case SEL_REPLY:
        fuzz_reply(doc);
        break;
    case SEL_WORKER_STATE:
        fuzz_worker_state(doc);
        break;
    case SEL_BOARD_STATUS:
        fuzz_board_status(doc);
        break;
    case SEL_WORKER_CMD:
        fuzz_worker_cmd(doc);
        break;
    case SEL_BOARD_CMD:
        fuzz_board_cmd(doc);
        break;
    case SEL_EVENT:
        fuzz_event(doc);
        break;
    case SEL_LEASE:
        fuzz_lease(doc);
        break;
    case SEL_AVAILABLE:
        fuzz_available(doc);
        break;
    case SEL_WORKER_STATS:
        fuzz_worker_stats(doc);
        break;
    case SEL_FARM_STATS:
        fuzz_farm_stats(doc);
        break;
    case SEL_HEARTBEAT:
        fuzz_heartbeat(doc);
        break;
    case SEL_PRESENCE:
        fuzz_presence(doc);
        break;
    case SEL_WORKER_LIVE:
        fuzz_worker_live(doc);
        break;
    default:
        for (int s = 0; s < SEL_ALL; s++)
            run(s, doc);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int sel = data[0] % SEL_COUNT;
    ifm_doc doc;
    ifm_err err = { "" };
    int rc = ifm_doc_parse(&doc, data + 1, size - 1, &err);
    if (rc == 0) {
        CHECK(doc.root && doc.root->type == MSGPACK_OBJECT_MAP);
        run(sel, &doc);
    } else {
        CHECK(rc == -1 && err.msg[0] && doc.root == NULL);
    }
    ifm_doc_free(&doc);
    return 0;
}
