/* The golden messages (golden_msgs.h) through the C decoders: every good one
 * decodes and re-encodes to the same bytes (so the decoder read every value),
 * every malformed one is rejected with its reason. The dashboard's decoders
 * read the same messages in tests/e2e/dashboard/golden.mjs. Also the farm's
 * statistics messages' own limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "golden_msgs.h"

/* Decodes `p` as the message of `topic`; re-encodes into `re` where an encoder exists. */
static int decode_as(const char *topic, const void *p, size_t n, ifm_enc *re, ifm_err *err)
{
    ifm_doc doc;
    if (ifm_doc_parse(&doc, p, n, err)) {
        ifm_doc_free(&doc); /* a failed parse may hold a zone too */
        return -1;
    }
    int rc = -1;
    if (!strcmp(topic, "icefarm/ctl/state")) {
        char state[16];
        uint64_t epoch;
        if (!ifm_get_str(doc.root, "state", true, state, sizeof state, err) &&
            !ifm_get_uint(doc.root, "epoch", true, 0, UINT64_MAX, &epoch, err)) {
            ifm_ctl_state_encode(re, !strcmp(state, "online"), epoch);
            rc = 0;
        }
    } else if (!strcmp(topic, "icefarm/farm/available")) {
        ifm_available a;
        if (!(rc = ifm_available_decode(&doc, &a, err)))
            ifm_available_encode(re, &a);
    } else if (!strcmp(topic, "icefarm/farm/stats")) {
        ifm_farm_stats s;
        if (!(rc = ifm_farm_stats_decode(&doc, &s, err)))
            ifm_farm_stats_encode(re, &s);
    } else if (!strncmp(topic, "icefarm/farm/worker/", 20)) {
        ifm_worker_live l;
        if (!(rc = ifm_worker_live_decode(&doc, &l, err)))
            ifm_worker_live_encode(re, &l);
    } else if (!strncmp(topic, "icefarm/lease/", 14)) {
        ifm_lease_info l;
        if (!(rc = ifm_lease_info_decode(&doc, &l, err)))
            ifm_lease_info_encode(re, &l);
    } else if (!strncmp(topic, "icefarm/worker/", 15) && strstr(topic, "/stats")) {
        ifm_worker_stats s;
        if (!(rc = ifm_worker_stats_decode(&doc, &s, err)))
            ifm_worker_stats_encode(re, &s);
    } else if (!strncmp(topic, "icefarm/worker/", 15)) {
        ifm_worker_state ws;
        if (!(rc = ifm_worker_state_decode(&doc, &ws, err)))
            ifm_worker_state_encode(re, &ws);
        ifm_worker_state_free(&ws);
    } else if (!strncmp(topic, "icefarm/client/", 15)) {
        ifm_reply_status st;
        if (!(rc = ifm_reply_status_decode(&doc, &st, err)))
            ifm_reply_begin(re, st.code, st.ok ? NULL : st.error, 0);
    } else {
        ifm_board_status bs;
        if (!(rc = ifm_board_status_decode(&doc, &bs, err)))
            ifm_board_status_encode(re, &bs);
    }
    ifm_doc_free(&doc);
    return rc;
}

static void test_golden(void **state)
{
    for (size_t i = 0; i < golden_count; i++) {
        const golden_msg *g = &golden_msgs[i];
        ifm_enc e, re;
        ifm_enc_init(&e);
        ifm_enc_init(&re);
        golden_encode(i, &e);
        ifm_err err = { "" };
        if (g->expect && !strcmp(g->expect, "null")) {
            if (ifm_enc_size(&e) != 0)
                fail_msg("%s: a cleared topic is an empty payload, got %zu bytes", g->name, ifm_enc_size(&e));
        } else {
            /* an exact-size heap copy, so ASan sees any overread */
            size_t n = ifm_enc_size(&e);
            void *copy = malloc(n ? n : 1);
            memcpy(copy, ifm_enc_data(&e), n);
            int rc = decode_as(g->topic, copy, n, &re, &err);
            free(copy);
            if (g->expect) {
                if (rc)
                    fail_msg("%s: rejected: %s", g->name, err.msg);
                if (ifm_enc_size(&re) != n || memcmp(ifm_enc_data(&re), ifm_enc_data(&e), n) != 0)
                    fail_msg("%s: re-encodes to other bytes (%zu, not %zu)", g->name, ifm_enc_size(&re), n);
            } else {
                if (rc == 0)
                    fail_msg("%s: malformed, yet accepted", g->name);
                if (!*err.msg || !strstr(err.msg, g->reason))
                    fail_msg("%s: reason \"%s\" lacks \"%s\"", g->name, err.msg, g->reason);
            }
        }
        ifm_enc_free(&e);
        ifm_enc_free(&re);
    }
}

static int decode_stats(const ifm_enc *e, ifm_farm_stats *s, ifm_err *err)
{
    ifm_doc doc;
    if (ifm_doc_parse(&doc, ifm_enc_data(e), ifm_enc_size(e), err)) {
        ifm_doc_free(&doc);
        return -1;
    }
    int rc = ifm_farm_stats_decode(&doc, s, err);
    ifm_doc_free(&doc);
    return rc;
}

/* A full history and every waiting kind fit; one bucket or kind more does not. */
static void test_farm_stats_limits(void **state)
{
    ifm_farm_stats *s = calloc(1, sizeof *s), *d = calloc(1, sizeof *d);
    s->bucket_ms = IFM_STATS_BUCKET_MS;
    s->nhistory = IFM_STATS_BUCKETS;
    for (size_t i = 0; i < IFM_STATS_BUCKETS; i++)
        s->hist_evaluations[i] = (uint32_t)i * 1000u;
    s->nkinds = IFM_MAX_KINDS;
    for (size_t i = 0; i < IFM_MAX_KINDS; i++) {
        snprintf(s->kinds[i], IFM_KIND_MAX, "kind%zu", i);
        s->waiting[i] = 1;
        s->waiting_boards[i] = (uint32_t)i + 1;
    }
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_farm_stats_encode(&e, s);
    ifm_err err = { "" };
    assert_int_equal(decode_stats(&e, d, &err), 0);
    assert_int_equal(d->nhistory, IFM_STATS_BUCKETS);
    assert_int_equal(d->hist_evaluations[IFM_STATS_BUCKETS - 1], (IFM_STATS_BUCKETS - 1) * 1000);
    assert_int_equal(d->nkinds, IFM_MAX_KINDS);
    assert_int_equal(d->waiting_boards[IFM_MAX_KINDS - 1], IFM_MAX_KINDS);
    ifm_enc_free(&e);

    /* 121 buckets */
    ifm_enc_init(&e);
    ifm_enc_root(&e, 7);
    ifm_enc_kuint(&e, "epoch", 1);
    ifm_enc_kuint(&e, "time", 2);
    ifm_enc_kuint(&e, "evaluations", 0);
    ifm_enc_kuint(&e, "failures", 0);
    ifm_enc_key(&e, "waiting");
    ifm_enc_map(&e, 0);
    ifm_enc_key(&e, "waiting_boards");
    ifm_enc_map(&e, 0);
    ifm_enc_key(&e, "history");
    ifm_enc_map(&e, 4);
    ifm_enc_kuint(&e, "start", 0);
    ifm_enc_kuint(&e, "step", 5000);
    ifm_enc_key(&e, "evaluations");
    ifm_enc_array(&e, IFM_STATS_BUCKETS + 1);
    for (int i = 0; i <= IFM_STATS_BUCKETS; i++)
        ifm_enc_uint(&e, 0);
    ifm_enc_key(&e, "failures");
    ifm_enc_array(&e, 0);
    assert_int_equal(decode_stats(&e, d, &err), -1);
    if (!strstr(err.msg, "at most 120"))
        fail_msg("121 buckets: %s", err.msg);
    ifm_enc_free(&e);

    /* series of different lengths; waiting_boards naming a kind waiting does not */
    s->nkinds = 1;
    s->nhistory = 2;
    ifm_enc_init(&e);
    ifm_farm_stats_encode(&e, s);
    assert_int_equal(decode_stats(&e, d, &err), 0);
    ifm_enc_free(&e);
    ifm_enc_init(&e);
    ifm_enc_root(&e, 7);
    ifm_enc_kuint(&e, "epoch", 1);
    ifm_enc_kuint(&e, "time", 2);
    ifm_enc_kuint(&e, "evaluations", 0);
    ifm_enc_kuint(&e, "failures", 0);
    ifm_enc_key(&e, "waiting");
    ifm_enc_map(&e, 1);
    ifm_enc_str(&e, "pulsecount");
    ifm_enc_uint(&e, 1);
    ifm_enc_key(&e, "waiting_boards");
    ifm_enc_map(&e, 1);
    ifm_enc_str(&e, "variance");
    ifm_enc_uint(&e, 1);
    ifm_enc_key(&e, "history");
    ifm_enc_map(&e, 4);
    ifm_enc_kuint(&e, "start", 0);
    ifm_enc_kuint(&e, "step", 5000);
    ifm_enc_key(&e, "evaluations");
    ifm_enc_array(&e, 1);
    ifm_enc_uint(&e, 0);
    ifm_enc_key(&e, "failures");
    ifm_enc_array(&e, 0);
    assert_int_equal(decode_stats(&e, d, &err), -1);
    if (!strstr(err.msg, "\"variance\""))
        fail_msg("unknown waiting kind: %s", err.msg);
    ifm_enc_free(&e);
    free(s);
    free(d);
}

/* Every prefix of a stats or liveness message is rejected (nothing read past the end). */
static void test_stats_prefixes(void **state)
{
    for (size_t i = 0; i < golden_count; i++) {
        if (!golden_msgs[i].expect ||
            (!strstr(golden_msgs[i].topic, "stats") && !strstr(golden_msgs[i].topic, "farm/worker/")))
            continue;
        ifm_enc e;
        ifm_enc_init(&e);
        golden_encode(i, &e);
        for (size_t n = 0; n < ifm_enc_size(&e); n++) {
            void *copy = malloc(n ? n : 1);
            memcpy(copy, ifm_enc_data(&e), n);
            ifm_enc re;
            ifm_enc_init(&re);
            ifm_err err = { "" };
            if (decode_as(golden_msgs[i].topic, copy, n, &re, &err) != -1)
                fail_msg("%s: a prefix of %zu bytes accepted", golden_msgs[i].name, n);
            ifm_enc_free(&re);
            free(copy);
        }
        ifm_enc_free(&e);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_farm_stats_limits),
        cmocka_unit_test(test_stats_prefixes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
