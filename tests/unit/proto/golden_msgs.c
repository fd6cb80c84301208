/* The golden messages (golden_msgs.h), made by the C encoders. */
#include "golden_msgs.h"

#include <string.h>

/* A board's state as a worker publishes it. */
static void board(ifm_enc *e, const char *serial, ifm_board_state st, const char *kind, const char *reason,
                  bool exported, uint64_t since)
{
    ifm_board_status bs;
    memset(&bs, 0, sizeof bs);
    snprintf(bs.serial, sizeof bs.serial, "%s", serial);
    snprintf(bs.worker, sizeof bs.worker, "sim-worker");
    bs.epoch = 1795243649458;
    bs.state = st;
    snprintf(bs.kind, sizeof bs.kind, "%s", kind);
    snprintf(bs.reason, sizeof bs.reason, "%s", reason);
    bs.exported = exported;
    bs.since_ms = since;
    ifm_board_status_encode(e, &bs);
}

static void worker(ifm_enc *e, bool online)
{
    ifm_worker_state ws;
    ifm_board_brief b[2] = { { "2BCE0BDCF5320C42", IFM_BOARD_RESERVED, "pulsecount" },
                             { "4A699E11A74B462A", IFM_BOARD_READY, "" } };
    memset(&ws, 0, sizeof ws);
    snprintf(ws.worker, sizeof ws.worker, "sim-worker");
    ws.online = online;
    ws.epoch = 1795243649458;
    snprintf(ws.kinds[0], IFM_KIND_MAX, "pulsecount");
    snprintf(ws.kinds[1], IFM_KIND_MAX, "variance");
    ws.nkinds = 2;
    ws.boards = online ? b : NULL;
    ws.nboards = online ? 2 : 0;
    ifm_worker_state_encode(e, &ws);
}

static void farm_stats(ifm_enc *e, uint64_t failures)
{
    ifm_farm_stats s;
    memset(&s, 0, sizeof s);
    s.epoch = 1795243600000;
    s.time_ms = 1795243712345;
    s.evaluations = 10240;
    s.failures = failures;
    snprintf(s.kinds[0], IFM_KIND_MAX, "pulsecount");
    s.waiting[0] = 2;
    s.waiting_boards[0] = 5;
    s.nkinds = 1;
    s.history_start_ms = 1795243700000;
    s.bucket_ms = IFM_STATS_BUCKET_MS;
    uint32_t ev[3] = { 5000, 5000, 240 }, fa[3] = { 0, 3, 0 };
    memcpy(s.hist_evaluations, ev, sizeof ev);
    memcpy(s.hist_failures, fa, sizeof fa);
    s.nhistory = 3;
    ifm_farm_stats_encode(e, &s);
}

/* Control's verdict on sim-worker (icefarm/farm/worker/<id>). */
static void liveness(ifm_enc *e, ifm_live_state st, const char *reason, uint64_t until)
{
    ifm_worker_live l;
    memset(&l, 0, sizeof l);
    snprintf(l.worker, sizeof l.worker, "sim-worker");
    l.state = st;
    l.epoch = 1795243649458;
    l.ctl_epoch = 1795243600000;
    l.since_ms = 1795243712000;
    l.until_ms = until;
    snprintf(l.reason, sizeof l.reason, "%s", reason);
    ifm_worker_live_encode(e, &l);
}

/* Raw msgpack for the malformed ones the encoders cannot make. */
static void raw(ifm_enc *e, const char *bytes, size_t n)
{
    ifm_enc_raw(e, bytes, n);
}

const golden_msg golden_msgs[] = {
    { "ctl_online", "icefarm/ctl/state", "{\"online\":true,\"epoch\":1795243600000}", NULL },
    { "available", "icefarm/farm/available", "{\"amount\":4,\"kinds\":{\"pulsecount\":4,\"variance\":3}}", NULL },
    { "farm_stats", "icefarm/farm/stats",
      "{\"epoch\":1795243600000,\"time\":1795243712345,\"evaluations\":10240,\"failures\":3,"
      "\"waiting\":{\"pulsecount\":2},\"waitingBoards\":{\"pulsecount\":5},"
      "\"history\":{\"start\":1795243700000,\"step\":5000,\"evaluations\":[5000,5000,240],\"failures\":[0,3,0]}}",
      NULL },
    { "lease", "icefarm/lease/2BCE0BDCF5320C42",
      "{\"serial\":\"2BCE0BDCF5320C42\",\"client\":\"alice@lab-pc\",\"kind\":\"pulsecount\",\"worker\":\"sim-worker\","
      "\"lease\":17,\"until\":1795247287196,\"tag\":\"\"}",
      NULL },
    { "lease_cleared", "icefarm/lease/2BCE0BDCF5320C42", "null", NULL },
    { "worker_online", "icefarm/worker/sim-worker/state",
      "{\"worker\":\"sim-worker\",\"online\":true,\"epoch\":1795243649458,\"kinds\":[\"pulsecount\",\"variance\"],"
      "\"boards\":[{\"serial\":\"2BCE0BDCF5320C42\",\"state\":\"reserved\",\"kind\":\"pulsecount\"},"
      "{\"serial\":\"4A699E11A74B462A\",\"state\":\"ready\",\"kind\":\"\"}]}",
      NULL },
    { "worker_lost", "icefarm/worker/sim-worker/state",
      "{\"worker\":\"sim-worker\",\"online\":false,\"epoch\":1795243649458,\"kinds\":[\"pulsecount\",\"variance\"],"
      "\"boards\":[]}",
      NULL },
    { "worker_stats", "icefarm/worker/sim-worker/stats",
      "{\"worker\":\"sim-worker\",\"instance\":1795243649458,\"evaluations\":10240,\"failures\":3}", NULL },
    { "board_reserved", "icefarm/2BCE0BDCF5320C42/state",
      "{\"serial\":\"2BCE0BDCF5320C42\",\"worker\":\"sim-worker\",\"epoch\":1795243649458,\"state\":\"reserved\","
      "\"kind\":\"pulsecount\",\"reason\":\"\",\"exported\":false,\"since\":1795243650000}",
      NULL },
    { "board_exported", "icefarm/4A699E11A74B462A/state",
      "{\"serial\":\"4A699E11A74B462A\",\"worker\":\"sim-worker\",\"epoch\":1795243649458,\"state\":\"reserved\","
      "\"kind\":\"default\",\"reason\":\"exported\",\"exported\":true,\"since\":1795243651000}",
      NULL },
    { "board_broken", "icefarm/75438C8FDFC70C81/state",
      "{\"serial\":\"75438C8FDFC70C81\",\"worker\":\"sim-worker\",\"epoch\":1795243649458,\"state\":\"broken\","
      "\"kind\":\"\",\"reason\":\"firmware did not answer\",\"exported\":false,\"since\":0}",
      NULL },
    { "liveness_online", "icefarm/farm/worker/sim-worker",
      "{\"worker\":\"sim-worker\",\"state\":\"online\",\"epoch\":1795243649458,\"ctlEpoch\":1795243600000,"
      "\"since\":1795243712000,\"until\":0,\"reason\":\"\"}",
      NULL },
    { "liveness_hung", "icefarm/farm/worker/sim-worker",
      "{\"worker\":\"sim-worker\",\"state\":\"hung\",\"epoch\":1795243649458,\"ctlEpoch\":1795243600000,"
      "\"since\":1795243712000,\"until\":0,\"reason\":\"no heartbeat for 2080 ms (one is due every 1000 ms)\"}",
      NULL },
    { "liveness_reconnecting", "icefarm/farm/worker/sim-worker",
      "{\"worker\":\"sim-worker\",\"state\":\"reconnecting\",\"epoch\":1795243649458,\"ctlEpoch\":1795243600000,"
      "\"since\":1795243712000,\"until\":1795243742000,\"reason\":\"its connection died\"}",
      NULL },
    { "reply_403", "icefarm/client/alice/reply",
      "{\"ok\":false,\"code\":403,\"error\":\"serial 2BCE0BDCF5320C42 is reserved by another client\"}", NULL },
    /* malformed */
    { "bad_version", "icefarm/farm/available", NULL, "unsupported protocol version 2" },
    { "bad_truncated", "icefarm/farm/stats", NULL, "" },
    { "bad_not_map", "icefarm/ctl/state", NULL, "not a msgpack map" },
    { "bad_missing", "icefarm/worker/sim-worker/stats", NULL, "missing field \"instance\"" },
    { "bad_type", "icefarm/lease/2BCE0BDCF5320C42", NULL, "field \"until\" must be" },
    { "bad_failures", "icefarm/farm/stats", NULL, "failures out of" },
    { "bad_state", "icefarm/2BCE0BDCF5320C42/state", NULL, "unknown board state" },
    { "bad_trailing", "icefarm/ctl/state", NULL, "" },
    { "bad_liveness", "icefarm/farm/worker/sim-worker", NULL, "unknown worker liveness \"asleep\"" },
    { "bad_liveness_epoch", "icefarm/farm/worker/sim-worker", NULL, "missing field \"ctl_epoch\"" },
};
const size_t golden_count = sizeof golden_msgs / sizeof *golden_msgs;

void golden_encode(size_t i, ifm_enc *e)
{
    const char *n = golden_msgs[i].name;
    if (!strcmp(n, "ctl_online")) {
        ifm_ctl_state_encode(e, true, 1795243600000);
    } else if (!strcmp(n, "available")) {
        ifm_available a = { .amount = 4, .kinds = { "pulsecount", "variance" }, .counts = { 4, 3 }, .nkinds = 2 };
        ifm_available_encode(e, &a);
    } else if (!strcmp(n, "farm_stats")) {
        farm_stats(e, 3);
    } else if (!strcmp(n, "lease")) {
        ifm_lease_info l = { .serial = "2BCE0BDCF5320C42",
                             .client = "alice@lab-pc",
                             .kind = "pulsecount",
                             .worker = "sim-worker",
                             .lease = 17,
                             .until_ms = 1795247287196 };
        ifm_lease_info_encode(e, &l);
    } else if (!strcmp(n, "lease_cleared")) {
        /* empty: the retained lease cleared */
    } else if (!strcmp(n, "worker_online")) {
        worker(e, true);
    } else if (!strcmp(n, "worker_lost")) {
        worker(e, false);
    } else if (!strcmp(n, "worker_stats")) {
        ifm_worker_stats s = { .worker = "sim-worker", .instance = 1795243649458, .evaluations = 10240, .failures = 3 };
        ifm_worker_stats_encode(e, &s);
    } else if (!strcmp(n, "board_reserved")) {
        board(e, "2BCE0BDCF5320C42", IFM_BOARD_RESERVED, "pulsecount", "", false, 1795243650000);
    } else if (!strcmp(n, "board_exported")) {
        board(e, "4A699E11A74B462A", IFM_BOARD_RESERVED, "default", "exported", true, 1795243651000);
    } else if (!strcmp(n, "board_broken")) {
        board(e, "75438C8FDFC70C81", IFM_BOARD_BROKEN, "", "firmware did not answer", false, 0);
    } else if (!strcmp(n, "liveness_online")) {
        liveness(e, IFM_LIVE_ONLINE, "", 0);
    } else if (!strcmp(n, "liveness_hung")) {
        liveness(e, IFM_LIVE_HUNG, "no heartbeat for 2080 ms (one is due every 1000 ms)", 0);
    } else if (!strcmp(n, "liveness_reconnecting")) {
        liveness(e, IFM_LIVE_RECONNECTING, "its connection died", 1795243742000);
    } else if (!strcmp(n, "reply_403")) {
        ifm_reply_begin(e, 403, "serial 2BCE0BDCF5320C42 is reserved by another client", 0);
    } else if (!strcmp(n, "bad_version")) {
        raw(e,
            "\x83\xa1v\x02\xa6"
            "amount\x04\xa5kinds\x80",
            19); /* {v: 2, amount: 4, kinds: {}} */
    } else if (!strcmp(n, "bad_truncated")) {
        ifm_enc t;
        ifm_enc_init(&t);
        farm_stats(&t, 3);
        raw(e, ifm_enc_data(&t), ifm_enc_size(&t) / 2);
        ifm_enc_free(&t);
    } else if (!strcmp(n, "bad_not_map")) {
        raw(e, "\x92\x01\x02", 3); /* [1, 2] */
    } else if (!strcmp(n, "bad_missing")) {
        ifm_enc_root(e, 3);
        ifm_enc_kstr(e, "worker", "sim-worker");
        ifm_enc_kuint(e, "evaluations", 1);
        ifm_enc_kuint(e, "failures", 0);
    } else if (!strcmp(n, "bad_type")) {
        ifm_enc_root(e, 6);
        ifm_enc_kstr(e, "serial", "2BCE0BDCF5320C42");
        ifm_enc_kstr(e, "client", "alice");
        ifm_enc_kstr(e, "kind", "pulsecount");
        ifm_enc_kstr(e, "worker", "sim-worker");
        ifm_enc_kuint(e, "lease", 1);
        ifm_enc_kstr(e, "until", "tomorrow");
    } else if (!strcmp(n, "bad_failures")) {
        farm_stats(e, 10241);
    } else if (!strcmp(n, "bad_state")) {
        ifm_enc_root(e, 4);
        ifm_enc_kstr(e, "serial", "2BCE0BDCF5320C42");
        ifm_enc_kstr(e, "worker", "sim-worker");
        ifm_enc_kuint(e, "epoch", 1);
        ifm_enc_kstr(e, "state", "melting");
    } else if (!strcmp(n, "bad_liveness")) {
        ifm_enc_root(e, 6);
        ifm_enc_kstr(e, "worker", "sim-worker");
        ifm_enc_kstr(e, "state", "asleep");
        ifm_enc_kuint(e, "epoch", 1);
        ifm_enc_kuint(e, "ctl_epoch", 1);
        ifm_enc_kuint(e, "since", 1);
        ifm_enc_kstr(e, "reason", "");
    } else if (!strcmp(n, "bad_liveness_epoch")) {
        ifm_enc_root(e, 5);
        ifm_enc_kstr(e, "worker", "sim-worker");
        ifm_enc_kstr(e, "state", "hung");
        ifm_enc_kuint(e, "epoch", 1);
        ifm_enc_kuint(e, "since", 1);
        ifm_enc_kstr(e, "reason", "");
    } else if (!strcmp(n, "bad_trailing")) {
        ifm_ctl_state_encode(e, true, 1);
        raw(e, "\xc0", 1);
    }
}
