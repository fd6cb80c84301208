/* Writes the seed corpus from real encodings:
 *     fuzz_gen_corpus tests/fuzz/corpus
 * creates corpus/msg/<name> (selector byte + payload, see fuzz_msg.h) and
 * corpus/scan/<name> (bare msgpack). Deterministic: rerunning rewrites the same
 * files. Bitstreams are kept small so the seeds stay small. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_msg.h"
#include "icefarm/msg.h"

static const char *g_dir;
static int g_count;

static void write_file(const char *sub, const char *name, int sel, const void *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", g_dir, sub);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        perror(path);
        exit(1);
    }
    snprintf(path, sizeof path, "%s/%s/%s", g_dir, sub, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    if (sel >= 0)
        fputc(sel, f);
    fwrite(p, 1, n, f);
    if (fclose(f) != 0) {
        perror(path);
        exit(1);
    }
    g_count++;
}

/* One encoding: into msg/ with its selector and, bare, into scan/. */
static void seed(const char *name, int sel, ifm_enc *e)
{
    write_file("msg", name, sel, ifm_enc_data(e), ifm_enc_size(e));
    write_file("scan", name, -1, ifm_enc_data(e), ifm_enc_size(e));
    ifm_enc_free(e);
    ifm_enc_init(e);
}

static const uint8_t ARGS[] = { 0x82, 0xa4, 'm', 'o', 'd', 'e', 0xa4, 'f',  'a',  's',
                                't',  0xa4, 'l', 'i', 's', 't', 0x93, 0x01, 0xc3, 0x80 };

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    g_dir = argv[1];
    mkdir(g_dir, 0755);
    ifm_enc e;
    ifm_enc_init(&e);
    char name[128];

    /* control requests, every verb, minimal and full */
    char serials[3][IFM_SERIAL_MAX] = { "E6614C311B4B8F2C", "quote\"back\\slash", "S3" };
    for (int v = 0; v < IFM_VERB_COUNT; v++) {
        for (int full = 0; full < 2; full++) {
            ifm_ctl_req r = { .verb = (ifm_verb)v };
            bool reserving = v == IFM_VERB_RESERVE || v == IFM_VERB_RESERVE_SERIALS;
            r.amount = v == IFM_VERB_RESERVE ? 2 : 0;
            if (reserving || full)
                strcpy(r.kind, "pulse_count");
            r.serials = serials;
            r.nserials = full ? 3 : 1;
            if (full) {
                r.wait_ms = 2500;
                r.duration_s = 600;
            }
            ifm_ctl_req_encode(&e, &r, full && reserving ? ARGS : NULL, sizeof ARGS);
            snprintf(name, sizeof name, "ctl_%s_%s", ifm_verb_name((ifm_verb)v), full ? "full" : "min");
            seed(name, SEL_CTL_REQ + v, &e);
        }
    }

    /* replies */
    ifm_reply_begin(&e, 200, NULL, 1);
    ifm_enc_kuint(&e, "amount", 3);
    seed("reply_ok", SEL_REPLY, &e);
    ifm_reply_begin(&e, 409, "not enough boards of kind \"pulse_count\"", 0);
    seed("reply_409", SEL_REPLY, &e);

    /* worker state */
    ifm_board_brief boards[3] = {
        { .serial = "S1", .state = IFM_BOARD_READY },
        { .serial = "S2", .state = IFM_BOARD_RESERVED, .kind = "pulse_count" },
        { .serial = "S3", .state = IFM_BOARD_BROKEN },
    };
    ifm_worker_state ws = { .worker = "wrk-1",
                            .online = true,
                            .epoch = 17,
                            .kinds = { "pulse_count", "variance" },
                            .nkinds = 2,
                            .boards = boards,
                            .nboards = 3 };
    ifm_worker_state_encode(&e, &ws);
    seed("worker_state_online", SEL_WORKER_STATE, &e);
    ifm_worker_state off = { .worker = "wrk-1", .online = false, .epoch = 17 };
    ifm_worker_state_encode(&e, &off);
    seed("worker_state_offline", SEL_WORKER_STATE, &e);

    /* board status */
    ifm_board_status bs = {
        .serial = "S3", .worker = "wrk-1", .epoch = 17, .state = IFM_BOARD_BROKEN, .reason = "flash timed out"
    };
    ifm_board_status_encode(&e, &bs);
    seed("board_status_broken", SEL_BOARD_STATUS, &e);
    ifm_board_status bs2 = {
        .serial = "S2", .worker = "wrk-1", .epoch = 17, .state = IFM_BOARD_RESERVED, .kind = "variance"
    };
    ifm_board_status_encode(&e, &bs2);
    seed("board_status_reserved", SEL_BOARD_STATUS, &e);

    /* worker commands */
    for (int op = 0; op < IFM_WOP_COUNT; op++) {
        ifm_worker_cmd c = {
            .op = (ifm_worker_op)op, .serial = "S1", .kind = "pulse_count", .client = "alice", .lease = 99
        };
        ifm_worker_cmd_encode(&e, &c, op == IFM_WOP_RESERVE ? ARGS : NULL, sizeof ARGS);
        snprintf(name, sizeof name, "worker_cmd_%d", op);
        seed(name, SEL_WORKER_CMD, &e);
    }

    /* board command with a few (short) bitstreams */
    uint8_t bits[3][40];
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 40; k++)
            bits[i][k] = (uint8_t)(i * 40 + k);
    ifm_file files[3] = {
        { .id = "ind-0", .data = bits[0], .len = 40 },
        { .id = "ind-1", .data = bits[1], .len = 17 },
        { .id = "ind \"2\"", .data = bits[2], .len = 1 },
    };
    ifm_board_cmd_encode(&e, "batch-1", files, 3);
    seed("board_cmd_3", SEL_BOARD_CMD, &e);
    ifm_board_cmd_encode(&e, "b", files, 1);
    seed("board_cmd_1", SEL_BOARD_CMD, &e);

    /* events */
    ifm_event_simple_encode(&e, "initialized", "S1", NULL);
    seed("event_initialized", SEL_EVENT, &e);
    ifm_event_simple_encode(&e, "failure", "S1", "usb reset failed");
    seed("event_failure", SEL_EVENT, &e);
    uint16_t wave[6] = { 0, 1, 2, 65535, 300, 7 };
    ifm_result rs[5] = {
        { .id = "p", .type = IFM_VALUE_PULSES, .pulses = 123456 },
        { .id = "f", .type = IFM_VALUE_FITNESS, .fitness = 0.5 },
        { .id = "w", .type = IFM_VALUE_WAVEFORM, .fitness = 2.25, .samples = wave, .nsamples = 6 },
        { .id = "x", .type = IFM_VALUE_FAILED, .error = "bitstream is 12 bytes" },
        { .id = "n", .type = IFM_VALUE_FITNESS, .fitness = NAN },
    };
    ifm_event_results_encode(&e, "S1", "batch-1", rs, 5);
    seed("event_results", SEL_EVENT, &e);
    ifm_client_event_encode(&e, "reservation_ending_soon", "S1", 1795243030123ull, NULL);
    seed("client_event", SEL_EVENT, &e);
    ifm_client_event_encode(&e, "reservation end", "S1", 0, "worker did not come back within 30 s");
    seed("client_event_reason", SEL_EVENT, &e);
    ifm_event_usbip_encode(&e, "usbip detached", "S1", "Zq3vK8pW1mXc7RtY2nLdA9bQ", "worker1.lab", 3240,
                           "the lease ended", 1795243600001ull);
    seed("event_usbip_detached", SEL_EVENT, &e);

    /* lease, ctl state, availability */
    ifm_lease_info li = { .serial = "S1",
                          .client = "alice",
                          .kind = "pulse_count",
                          .worker = "wrk-1",
                          .lease = 5,
                          .until_ms = 1795243030123ull };
    ifm_lease_info_encode(&e, &li);
    seed("lease", SEL_LEASE, &e);
    ifm_ctl_state_encode(&e, true, 3);
    seed("ctl_state", SEL_ALL, &e);
    ifm_available av = { .amount = 5, .nkinds = 2, .kinds = { "pulse_count", "variance" }, .counts = { 3, 2 } };
    ifm_available_encode(&e, &av);
    seed("available", SEL_AVAILABLE, &e);
    ifm_worker_stats wst = { .worker = "wrk-1", .instance = 1795243030123ull, .evaluations = 7, .failures = 1 };
    ifm_worker_stats_encode(&e, &wst);
    seed("worker_stats", SEL_WORKER_STATS, &e);
    static ifm_farm_stats fs = { .epoch = 1,
                                 .time_ms = 2,
                                 .evaluations = 9,
                                 .failures = 1,
                                 .nkinds = 1,
                                 .kinds = { "pulse_count" },
                                 .waiting = { 2 },
                                 .waiting_boards = { 3 },
                                 .history_start_ms = 5000,
                                 .bucket_ms = 5000,
                                 .nhistory = 2,
                                 .hist_evaluations = { 4, 5 },
                                 .hist_failures = { 0, 1 } };
    ifm_farm_stats_encode(&e, &fs);
    seed("farm_stats", SEL_FARM_STATS, &e);
    ifm_worker_live wl = { .worker = "wrk-1",
                           .state = IFM_LIVE_RECONNECTING,
                           .epoch = 7,
                           .ctl_epoch = 1795243030123ull,
                           .since_ms = 1795243031000ull,
                           .until_ms = 1795243061000ull,
                           .reason = "its connection died" };
    ifm_worker_live_encode(&e, &wl);
    seed("worker_live", SEL_WORKER_LIVE, &e);

    /* a kitchen-sink map for SEL_ALL: many schemas' fields at once */
    ifm_enc_root(&e, 8);
    ifm_enc_kstr(&e, "event", "results");
    ifm_enc_kstr(&e, "serial", "S1");
    ifm_enc_kstr(&e, "worker", "w");
    ifm_enc_kuint(&e, "epoch", 1);
    ifm_enc_kstr(&e, "state", "ready");
    ifm_enc_kstr(&e, "batch_id", "b");
    ifm_enc_key(&e, "results");
    ifm_enc_array(&e, 1);
    ifm_enc_array(&e, 2);
    ifm_enc_str(&e, "r");
    ifm_enc_uint(&e, 1);
    ifm_enc_key(&e, "serials");
    ifm_enc_array(&e, 1);
    ifm_enc_str(&e, "S1");
    seed("all_fields", SEL_ALL, &e);

    /* scan only: every msgpack type, and a few classic malformations */
    ifm_enc_array(&e, 22);
    ifm_enc_uint(&e, 1);
    ifm_enc_uint(&e, 200);
    ifm_enc_uint(&e, 70000);
    ifm_enc_uint(&e, 1ull << 40);
    ifm_enc_int(&e, -1);
    ifm_enc_int(&e, -200);
    ifm_enc_int(&e, -70000);
    ifm_enc_int(&e, -(1ll << 40));
    msgpack_pack_float(&e.pk, 1.5f);
    ifm_enc_double(&e, -0.25);
    ifm_enc_nil(&e);
    ifm_enc_bool(&e, true);
    ifm_enc_bool(&e, false);
    ifm_enc_str(&e, "fixstr");
    char longstr[300];
    memset(longstr, 'l', sizeof longstr - 1);
    longstr[sizeof longstr - 1] = '\0';
    ifm_enc_str(&e, longstr);
    ifm_enc_bin(&e, "bin", 3);
    msgpack_pack_ext(&e.pk, 1, 5);
    msgpack_pack_ext_body(&e.pk, "fixed", 5);
    msgpack_pack_ext(&e.pk, 2, 3);
    msgpack_pack_ext_body(&e.pk, "ext", 3);
    ifm_enc_map(&e, 1);
    ifm_enc_kuint(&e, "k", 1);
    ifm_enc_array(&e, 0);
    ifm_enc_map(&e, 0);
    ifm_enc_array(&e, 1);
    ifm_enc_array(&e, 1);
    ifm_enc_array(&e, 1);
    ifm_enc_nil(&e);
    write_file("scan", "all_types", -1, ifm_enc_data(&e), ifm_enc_size(&e));
    const struct {
        const char *name;
        uint8_t b[8];
        size_t n;
    } raw[] = {
        { "bad_c1", { 0xc1 }, 1 },
        { "huge_array32", { 0xdd, 0xff, 0xff, 0xff, 0xff }, 5 },
        { "huge_map32", { 0xdf, 0xff, 0xff, 0xff, 0xff }, 5 },
        { "huge_str32", { 0xdb, 0xff, 0xff, 0xff, 0xff, 'a' }, 6 },
        { "deep", { 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91 }, 8 },
        { "trailing", { 0xc0, 0xc0 }, 2 },
    };
    for (size_t i = 0; i < sizeof raw / sizeof *raw; i++)
        write_file("scan", raw[i].name, -1, raw[i].b, raw[i].n);

    ifm_enc_free(&e);
    printf("wrote %d files under %s\n", g_count, g_dir);
    return 0;
}
