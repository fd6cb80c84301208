/* libicefarm-proto message schemas: every encoder/decoder pair round-trips, and
 * every decoder rejects truncated payloads, missing and mistyped fields, bad
 * serials and too many items with a reason that names the field. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "icefarm/msg.h"

#define ERR_HAS(err, needle)                                                                                           \
    do {                                                                                                               \
        if (!strstr((err).msg, (needle)))                                                                              \
            fail_msg("line %d: expected \"%s\" in \"%s\"", __LINE__, (needle), (err).msg);                             \
    } while (0)

/* ---- generic decode harness ---- */

/* Decodes a whole payload with one schema and frees whatever it allocated. */
typedef int (*decoder)(const ifm_doc *doc, ifm_err *err);

static ifm_verb g_verb; /* the verb dec_ctl_req decodes for */

static int dec_ctl_req(const ifm_doc *doc, ifm_err *err)
{
    ifm_ctl_req r;
    int rc = ifm_ctl_req_decode(doc, g_verb, &r, err);
    ifm_ctl_req_free(&r);
    return rc;
}

static int dec_reply(const ifm_doc *doc, ifm_err *err)
{
    ifm_reply_status st;
    return ifm_reply_status_decode(doc, &st, err);
}

static int dec_worker_state(const ifm_doc *doc, ifm_err *err)
{
    ifm_worker_state ws;
    int rc = ifm_worker_state_decode(doc, &ws, err);
    ifm_worker_state_free(&ws);
    return rc;
}

static int dec_board_status(const ifm_doc *doc, ifm_err *err)
{
    ifm_board_status bs;
    return ifm_board_status_decode(doc, &bs, err);
}

static int dec_worker_cmd(const ifm_doc *doc, ifm_err *err)
{
    ifm_worker_cmd c;
    return ifm_worker_cmd_decode(doc, &c, err);
}

static int dec_board_cmd(const ifm_doc *doc, ifm_err *err)
{
    ifm_board_cmd c;
    int rc = ifm_board_cmd_decode(doc, &c, err);
    ifm_board_cmd_free(&c);
    return rc;
}

/* Events: the header, then every result. */
static int dec_event(const ifm_doc *doc, ifm_err *err)
{
    ifm_event ev;
    int rc = ifm_event_decode(doc, &ev, err);
    if (rc || !ev.results)
        return rc;
    for (size_t i = 0; i < ev.results->via.array.size; i++) {
        ifm_result r;
        uint16_t samples[8];
        if (ifm_event_result_at(&ev, i, &r, samples, 8, err))
            return -1;
    }
    return 0;
}

static int dec_lease(const ifm_doc *doc, ifm_err *err)
{
    ifm_lease_info l;
    return ifm_lease_info_decode(doc, &l, err);
}

static int dec_available(const ifm_doc *doc, ifm_err *err)
{
    ifm_available a;
    return ifm_available_decode(doc, &a, err);
}

/* Parses + decodes from an exact-size heap copy, so ASan sees any overread. */
static int decode_bytes(decoder dec, const void *p, size_t n, ifm_err *err)
{
    void *copy = malloc(n ? n : 1);
    memcpy(copy, p, n);
    ifm_doc doc;
    err->msg[0] = '\0';
    int rc = ifm_doc_parse(&doc, copy, n, err);
    if (rc == 0)
        rc = dec(&doc, err);
    ifm_doc_free(&doc);
    free(copy);
    if (rc && !err->msg[0])
        fail_msg("an error without a reason");
    return rc;
}

static int decode_enc(decoder dec, const ifm_enc *e, ifm_err *err)
{
    return decode_bytes(dec, ifm_enc_data(e), ifm_enc_size(e), err);
}

static void parse_ok(ifm_doc *doc, const ifm_enc *e)
{
    ifm_err err = { "" };
    if (ifm_doc_parse(doc, ifm_enc_data(e), ifm_enc_size(e), &err))
        fail_msg("parse: %s", err.msg);
}

/* Every strict prefix of a valid encoding is an error, never a crash. */
static void check_prefixes(decoder dec, const ifm_enc *e)
{
    ifm_err err;
    assert_int_equal(decode_enc(dec, e, &err), 0);
    for (size_t n = 0; n < ifm_enc_size(e); n++)
        if (decode_bytes(dec, ifm_enc_data(e), n, &err) != -1)
            fail_msg("prefix of %zu/%zu bytes accepted", n, ifm_enc_size(e));
}

static bool in_list(const char *key, size_t keylen, const char *const *list)
{
    for (; list && *list; list++)
        if (strlen(*list) == keylen && memcmp(*list, key, keylen) == 0)
            return true;
    return false;
}

enum edit {
    DROP,
    MISTYPE
};

/* Re-encodes the root map of `e` with key `skip` dropped or its value mistyped. */
static void edit_root(const ifm_enc *e, uint32_t idx, enum edit how, ifm_enc *out)
{
    ifm_doc doc;
    parse_ok(&doc, e);
    const msgpack_object *root = doc.root;
    ifm_enc_init(out);
    ifm_enc_map(out, root->via.map.size - (how == DROP));
    for (uint32_t i = 0; i < root->via.map.size; i++) {
        const msgpack_object_kv *kv = &root->via.map.ptr[i];
        if (i == idx && how == DROP)
            continue;
        ifm_obj_pack(&kv->key, out);
        if (i == idx) {
            /* strings become integers, everything else becomes a string */
            if (kv->val.type == MSGPACK_OBJECT_STR)
                ifm_enc_uint(out, 7);
            else
                ifm_enc_str(out, "x");
        } else {
            ifm_obj_pack(&kv->val, out);
        }
    }
    ifm_doc_free(&doc);
}

/* Dropping a required root field is an error naming it; dropping an optional one
 * is fine. Mistyping any field that is not in `unread` is an error naming it. */
static void check_fields(decoder dec, const ifm_enc *e, const char *const *required, const char *const *unread)
{
    ifm_doc doc;
    parse_ok(&doc, e);
    uint32_t n = doc.root->via.map.size;
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *k = &doc.root->via.map.ptr[i].key;
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)k->via.str.size, k->via.str.ptr);
        char quoted[70];
        snprintf(quoted, sizeof quoted, "\"%s\"", key);
        ifm_err err;
        ifm_enc ed;

        edit_root(e, i, DROP, &ed);
        int rc = decode_enc(dec, &ed, &err);
        if (strcmp(key, "v") == 0 || in_list(key, strlen(key), required)) {
            if (rc != -1)
                fail_msg("dropping required field %s was accepted", quoted);
            if (!strstr(err.msg, quoted))
                fail_msg("dropping %s: reason \"%s\" does not name it", quoted, err.msg);
        } else if (rc != 0) {
            fail_msg("dropping optional field %s failed: %s", quoted, err.msg);
        }
        ifm_enc_free(&ed);

        edit_root(e, i, MISTYPE, &ed);
        rc = decode_enc(dec, &ed, &err);
        if (!in_list(key, strlen(key), unread)) {
            if (rc != -1)
                fail_msg("mistyped field %s was accepted", quoted);
            if (!strstr(err.msg, quoted))
                fail_msg("mistyped %s: reason \"%s\" does not name it", quoted, err.msg);
        }
        ifm_enc_free(&ed);
    }
    ifm_doc_free(&doc);
}

/* The standard battery for one valid encoding. */
static void check_decoder(decoder dec, const ifm_enc *e, const char *const *required, const char *const *unread)
{
    check_prefixes(dec, e);
    check_fields(dec, e, required, unread);
}

/* ---- control requests ---- */

static const uint8_t ARGS[] = { 0x82, 0xa4, 'm', 'o', 'd', 'e', 0xa4, 'f',  'a',  's',
                                't',  0xa4, 'l', 'i', 's', 't', 0x93, 0x01, 0xc3, 0x80 };

static bool verb_needs_serials(ifm_verb v)
{
    return v == IFM_VERB_RESERVE_SERIALS || v == IFM_VERB_EXTEND || v == IFM_VERB_END || v == IFM_VERB_REBOOT ||
        v == IFM_VERB_DELETE;
}

static bool verb_reserving(ifm_verb v)
{
    return v == IFM_VERB_RESERVE || v == IFM_VERB_RESERVE_SERIALS;
}

static void test_verbs(void **state)
{
    for (int v = 0; v < IFM_VERB_COUNT; v++) {
        const char *name = ifm_verb_name((ifm_verb)v);
        assert_string_not_equal(name, "?");
        assert_int_equal(ifm_verb_parse(name), v);
        char topic[IFM_TOPIC_MAX];
        assert_int_equal(ifm_topic_ctl_req(topic, sizeof topic, name), 0);
    }
    assert_string_equal(ifm_verb_name(IFM_VERB_COUNT), "?");
    assert_string_equal(ifm_verb_name((ifm_verb)-1), "?");
    assert_int_equal(ifm_verb_parse("Reserve"), -1);
    assert_int_equal(ifm_verb_parse(""), -1);
    assert_int_equal(ifm_verb_parse("reserve "), -1);
    assert_string_equal(ifm_verb_name(IFM_VERB_RESERVE), "reserve");
    assert_string_equal(ifm_verb_name(IFM_VERB_RESERVE_SERIALS), "reserve_serials");
    assert_string_equal(ifm_verb_name(IFM_VERB_END_ALL), "end_all");
}

/* Builds the fullest (or the most minimal) valid request for a verb. */
static void make_req(ifm_verb v, bool full, ifm_ctl_req *req, char (*serials)[IFM_SERIAL_MAX])
{
    memset(req, 0, sizeof *req);
    req->verb = v;
    if (v == IFM_VERB_RESERVE)
        req->amount = full ? 3 : 1;
    if (verb_reserving(v) || full)
        snprintf(req->kind, sizeof req->kind, "%s", full ? "pulse_count" : "k");
    if (verb_needs_serials(v)) {
        strcpy(serials[0], "E6614C311B4B8F2C");
        strcpy(serials[1], "quote\"back\\slash");
        strcpy(serials[2], "board 3 \xc3\xa9");
        req->serials = serials;
        req->nserials = full ? 3 : 1;
    }
    if (full) {
        req->wait_ms = 1500;
        req->duration_s = 7200;
        req->set = v == IFM_VERB_EXTEND || v == IFM_VERB_EXTEND_ALL;
    }
    if (v == IFM_VERB_CANCEL) {
        static const uint8_t corr[16] = { 1, 2, 3, 0, 0xff, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 };
        req->corr = corr;
        req->corr_len = full ? 16 : 1;
    }
}

static void compare_req(const ifm_ctl_req *a, const ifm_ctl_req *b)
{
    assert_int_equal(a->verb, b->verb);
    assert_int_equal(a->amount, b->amount);
    assert_string_equal(a->kind, b->kind);
    assert_int_equal(a->nserials, b->nserials);
    for (size_t i = 0; i < a->nserials; i++)
        assert_string_equal(a->serials[i], b->serials[i]);
    assert_int_equal(a->wait_ms, b->wait_ms);
    assert_int_equal(a->duration_s, b->duration_s);
    assert_int_equal(a->set, b->set);
    assert_int_equal(a->corr_len, b->corr_len);
    if (a->corr_len)
        assert_memory_equal(a->corr, b->corr, a->corr_len);
}

static void test_ctl_req_roundtrip(void **state)
{
    for (int v = 0; v < IFM_VERB_COUNT; v++) {
        for (int full = 0; full < 2; full++) {
            char serials[3][IFM_SERIAL_MAX];
            ifm_ctl_req req;
            make_req((ifm_verb)v, full, &req, serials);
            bool with_args = full && verb_reserving((ifm_verb)v);
            ifm_enc e;
            ifm_enc_init(&e);
            ifm_ctl_req_encode(&e, &req, with_args ? ARGS : NULL, sizeof ARGS);
            ifm_doc doc;
            parse_ok(&doc, &e);
            ifm_ctl_req out;
            ifm_err err = { "" };
            if (ifm_ctl_req_decode(&doc, (ifm_verb)v, &out, &err))
                fail_msg("%s (full=%d): %s", ifm_verb_name((ifm_verb)v), full, err.msg);
            compare_req(&req, &out);
            if (with_args) {
                /* the args map survives byte for byte */
                assert_non_null(out.args);
                assert_int_equal(out.args->type, MSGPACK_OBJECT_MAP);
                ifm_enc a;
                ifm_enc_init(&a);
                assert_int_equal(ifm_obj_pack(out.args, &a), 0);
                assert_int_equal(ifm_enc_size(&a), sizeof ARGS);
                assert_memory_equal(ifm_enc_data(&a), ARGS, sizeof ARGS);
                ifm_enc_free(&a);
            } else {
                assert_null(out.args);
            }
            ifm_ctl_req_free(&out);
            assert_null(out.serials);
            ifm_ctl_req_free(&out); /* twice is harmless */
            ifm_doc_free(&doc);

            /* truncation, dropped and mistyped fields */
            g_verb = (ifm_verb)v;
            const char *required[4] = { NULL };
            size_t nr = 0;
            if (v == IFM_VERB_RESERVE)
                required[nr++] = "amount";
            if (verb_reserving((ifm_verb)v))
                required[nr++] = "kind";
            if (verb_needs_serials((ifm_verb)v))
                required[nr++] = "serials";
            if (v == IFM_VERB_CANCEL)
                required[nr++] = "corr";
            check_decoder(dec_ctl_req, &e, required, NULL);
            ifm_enc_free(&e);
        }
    }
}

/* Encodes a request root with the given extra encoder callback. */
typedef void (*fill_fn)(ifm_enc *e, const void *arg);

static int decode_req(ifm_verb v, const ifm_enc *e, ifm_err *err)
{
    g_verb = v;
    return decode_enc(dec_ctl_req, e, err);
}

static void enc_serials(ifm_enc *e, uint32_t extra_fields)
{
    ifm_enc_root(e, 1 + extra_fields);
    ifm_enc_key(e, "serials");
}

static int decode_serial_list(const char *const *serials, size_t n, ifm_err *err)
{
    ifm_enc e;
    ifm_enc_init(&e);
    enc_serials(&e, 0);
    ifm_enc_array(&e, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        ifm_enc_str(&e, serials[i]);
    int rc = decode_req(IFM_VERB_END, &e, err);
    ifm_enc_free(&e);
    return rc;
}

static void test_ctl_req_bad(void **state)
{
    ifm_err err;
    ifm_enc e;

    /* amount as a string, zero, too big, negative */
    const struct {
        uint8_t bytes[9];
        size_t n;
        const char *why;
    } amounts[] = {
        { { 0xa1, '3' }, 2, "must be an integer" },
        { { 0x00 }, 1, "between 1 and" },
        { { 0xcd, 0x10, 0x01 }, 3, "between 1 and" }, /* 4097 */
        { { 0xff }, 1, "got -1" },
        { { 0xcb, 0x40, 0x08, 0, 0, 0, 0, 0, 0 }, 9, "got float" },
    };
    for (size_t i = 0; i < sizeof amounts / sizeof *amounts; i++) {
        ifm_enc_init(&e);
        ifm_enc_root(&e, 2);
        ifm_enc_kstr(&e, "kind", "k");
        ifm_enc_key(&e, "amount");
        ifm_enc_raw(&e, amounts[i].bytes, amounts[i].n);
        assert_int_equal(decode_req(IFM_VERB_RESERVE, &e, &err), -1);
        ERR_HAS(err, "\"amount\"");
        ERR_HAS(err, amounts[i].why);
        ifm_enc_free(&e);
    }
    /* IFM_MAX_SERIALS boards is the most one reserve may ask for */
    ifm_enc_init(&e);
    ifm_enc_root(&e, 2);
    ifm_enc_kstr(&e, "kind", "k");
    ifm_enc_kuint(&e, "amount", IFM_MAX_SERIALS);
    assert_int_equal(decode_req(IFM_VERB_RESERVE, &e, &err), 0);
    ifm_enc_free(&e);

    /* reserve: empty kind, kind too long, args not a map */
    ifm_enc_init(&e);
    ifm_enc_root(&e, 2);
    ifm_enc_kuint(&e, "amount", 1);
    ifm_enc_kstr(&e, "kind", "");
    assert_int_equal(decode_req(IFM_VERB_RESERVE, &e, &err), -1);
    ERR_HAS(err, "\"kind\" must not be empty");
    ifm_enc_free(&e);
    ifm_enc_init(&e);
    ifm_enc_root(&e, 2);
    ifm_enc_kuint(&e, "amount", 1);
    ifm_enc_kstr(&e, "kind", "0123456789abcdef0123456789abcdef"); /* 32 bytes */
    assert_int_equal(decode_req(IFM_VERB_RESERVE, &e, &err), -1);
    ERR_HAS(err, "\"kind\" is 32 bytes");
    ifm_enc_free(&e);
    /* a kind that is not UTF-8 is refused: control would echo it in its reply */
    static const char *const bad_kinds[] = { "pulse\xff", "\xc3\x28", "\xed\xa0\x80", "tab\tkind" };
    for (size_t i = 0; i < sizeof bad_kinds / sizeof *bad_kinds; i++) {
        ifm_enc_init(&e);
        ifm_enc_root(&e, 2);
        ifm_enc_kuint(&e, "amount", 1);
        ifm_enc_kstr(&e, "kind", bad_kinds[i]);
        assert_int_equal(decode_req(IFM_VERB_RESERVE, &e, &err), -1);
        ERR_HAS(err, "\"kind\" is not valid UTF-8");
        ifm_enc_free(&e);
    }
    ifm_enc_init(&e);
    ifm_enc_root(&e, 2);
    ifm_enc_kuint(&e, "amount", 1);
    ifm_enc_kstr(&e, "kind", "vari\xc3\xa1nce"); /* UTF-8 is fine */
    assert_int_equal(decode_req(IFM_VERB_RESERVE, &e, &err), 0);
    ifm_enc_free(&e);
    ifm_enc_init(&e);
    ifm_enc_root(&e, 3);
    ifm_enc_kuint(&e, "amount", 1);
    ifm_enc_kstr(&e, "kind", "k");
    ifm_enc_key(&e, "args");
    ifm_enc_array(&e, 0);
    assert_int_equal(decode_req(IFM_VERB_RESERVE, &e, &err), -1);
    ERR_HAS(err, "field \"args\" must be a map");
    ifm_enc_free(&e);
    /* nil args count as absent */
    ifm_enc_init(&e);
    ifm_enc_root(&e, 3);
    ifm_enc_kuint(&e, "amount", 1);
    ifm_enc_kstr(&e, "kind", "k");
    ifm_enc_key(&e, "args");
    ifm_enc_nil(&e);
    assert_int_equal(decode_req(IFM_VERB_RESERVE, &e, &err), 0);
    ifm_enc_free(&e);

    /* wait_ms and duration_s bounds */
    ifm_enc_init(&e);
    ifm_enc_root(&e, 1);
    ifm_enc_kuint(&e, "wait_ms", 3600u * 1000u + 1);
    assert_int_equal(decode_req(IFM_VERB_AVAILABLE, &e, &err), -1);
    ERR_HAS(err, "\"wait_ms\"");
    ifm_enc_free(&e);
    ifm_enc_init(&e);
    ifm_enc_root(&e, 1);
    ifm_enc_kuint(&e, "duration_s", 365u * 86400u + 1);
    assert_int_equal(decode_req(IFM_VERB_EXTEND_ALL, &e, &err), -1);
    ERR_HAS(err, "\"duration_s\"");
    ifm_enc_free(&e);
    ifm_enc_init(&e);
    ifm_enc_root(&e, 1);
    ifm_enc_kint(&e, "duration_s", -5);
    assert_int_equal(decode_req(IFM_VERB_EXTEND_ALL, &e, &err), -1);
    ERR_HAS(err, "\"duration_s\"");
    ifm_enc_free(&e);

    /* serials: not an array, an int inside, a map inside, NULs, bad names */
    ifm_enc_init(&e);
    enc_serials(&e, 0);
    ifm_enc_str(&e, "S1");
    assert_int_equal(decode_req(IFM_VERB_END, &e, &err), -1);
    ERR_HAS(err, "field \"serials\" must be an array");
    ifm_enc_free(&e);
    ifm_enc_init(&e);
    enc_serials(&e, 0);
    ifm_enc_array(&e, 2);
    ifm_enc_str(&e, "S1");
    ifm_enc_uint(&e, 12345);
    assert_int_equal(decode_req(IFM_VERB_REBOOT, &e, &err), -1);
    ERR_HAS(err, "serial must be a string, got unsigned integer");
    ifm_enc_free(&e);
    ifm_enc_init(&e);
    enc_serials(&e, 0);
    ifm_enc_array(&e, 1);
    ifm_enc_map(&e, 0);
    assert_int_equal(decode_req(IFM_VERB_DELETE, &e, &err), -1);
    ERR_HAS(err, "serial must be a string");
    ifm_enc_free(&e);
    ifm_enc_init(&e);
    enc_serials(&e, 0);
    ifm_enc_array(&e, 1);
    ifm_enc_strn(&e, "S\0X", 3);
    assert_int_equal(decode_req(IFM_VERB_EXTEND, &e, &err), -1);
    ERR_HAS(err, "NUL");
    ifm_enc_free(&e);

    char s63[64], s64[65];
    memset(s63, 'a', 63);
    s63[63] = '\0';
    memset(s64, 'a', 64);
    s64[64] = '\0';
    const char *bad[] = { "a/b", "a+b",    "a#b", "+",      "#",     "/",    "$SYS",
                          "",    "worker", "ctl", "client", "lease", "farm", s64 };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *list[] = { "OK1", bad[i] };
        if (decode_serial_list(list, 2, &err) != -1)
            fail_msg("serial \"%s\" accepted", bad[i]);
        assert_true(strstr(err.msg, "serial") != NULL);
    }
    const char *good[] = { "a\"b", "a\\b", "with space", "\xc3\xa9t\xc3\xa9", s63, "Worker", "farmer", "a$", "-", "." };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        const char *list[] = { good[i] };
        if (decode_serial_list(list, 1, &err) != 0)
            fail_msg("serial \"%s\" rejected: %s", good[i], err.msg);
    }
    /* an empty list decodes (nothing to do) */
    assert_int_equal(decode_serial_list(NULL, 0, &err), 0);

    /* too many serials */
    size_t many = IFM_MAX_SERIALS + 1;
    char(*names)[16] = calloc(many, sizeof *names);
    const char **list = calloc(many, sizeof *list);
    for (size_t i = 0; i < many; i++) {
        snprintf(names[i], sizeof names[i], "S%zu", i);
        list[i] = names[i];
    }
    assert_int_equal(decode_serial_list(list, IFM_MAX_SERIALS, &err), 0);
    assert_int_equal(decode_serial_list(list, many, &err), -1);
    ERR_HAS(err, "field \"serials\" has 4097 items, at most 4096");
    free(list);
    free(names);

    /* a decoder that fails half way leaves a struct that *_free() cleans up */
    ifm_enc_init(&e);
    enc_serials(&e, 0);
    ifm_enc_array(&e, 3);
    ifm_enc_str(&e, "S1");
    ifm_enc_str(&e, "S2");
    ifm_enc_str(&e, "bad/serial");
    ifm_doc doc;
    parse_ok(&doc, &e);
    ifm_ctl_req req;
    assert_int_equal(ifm_ctl_req_decode(&doc, IFM_VERB_END, &req, &err), -1);
    ifm_ctl_req_free(&req);
    ifm_doc_free(&doc);
    ifm_enc_free(&e);
}

/* IFM_MAX_ARGS: "bytes of reserve args". A client must not be able to park
 * megabytes of args in every lease. */
static void test_ctl_req_args_limit(void **state)
{
    for (int big = 0; big < 2; big++) {
        /* {"blob": bin} whose encoding is IFM_MAX_ARGS bytes (+1 when big) */
        size_t hdr = 1 + 5 + 3; /* fixmap, "blob", bin16 header */
        size_t blen = IFM_MAX_ARGS - hdr + (size_t)big;
        ifm_enc a;
        ifm_enc_init(&a);
        ifm_enc_map(&a, 1);
        uint8_t *blob = calloc(1, blen);
        ifm_enc_kbin(&a, "blob", blob, blen);
        free(blob);
        assert_int_equal(ifm_enc_size(&a), IFM_MAX_ARGS + (size_t)big);
        ifm_ctl_req req = { .verb = IFM_VERB_RESERVE, .amount = 1, .kind = "k" };
        ifm_enc e;
        ifm_enc_init(&e);
        ifm_ctl_req_encode(&e, &req, ifm_enc_data(&a), ifm_enc_size(&a));
        ifm_err err = { "" };
        int rc = decode_req(IFM_VERB_RESERVE, &e, &err);
        ifm_enc_free(&e);
        ifm_enc_free(&a);
        if (!big)
            assert_int_equal(rc, 0);
        else if (rc != -1)
            fail_msg("reserve args of %d bytes (IFM_MAX_ARGS %d) accepted", IFM_MAX_ARGS + 1, IFM_MAX_ARGS);
        else
            ERR_HAS(err, "\"args\"");
    }
}

/* ---- replies ---- */

static void test_reply_status(void **state)
{
    ifm_err err;
    ifm_enc e;
    ifm_doc doc;
    ifm_reply_status st;

    ifm_enc_init(&e);
    ifm_reply_begin(&e, 200, NULL, 1);
    ifm_enc_kuint(&e, "amount", 4); /* verb-specific extra */
    parse_ok(&doc, &e);
    assert_int_equal(ifm_reply_status_decode(&doc, &st, &err), 0);
    assert_true(st.ok);
    assert_int_equal(st.code, 200);
    assert_string_equal(st.error, "");
    uint64_t amount = 0;
    assert_int_equal(ifm_get_uint(doc.root, "amount", true, 0, 10, &amount, &err), 0);
    assert_int_equal(amount, 4);
    ifm_doc_free(&doc);
    static const char *const required[] = { "ok", "code", NULL };
    static const char *const unread[] = { "amount", NULL };
    check_decoder(dec_reply, &e, required, unread);
    ifm_enc_free(&e);

    const uint32_t codes[] = { 400, 403, 404, 409, 503 };
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++) {
        ifm_enc_init(&e);
        ifm_reply_begin(&e, codes[i], "no such board \"x\"", 0);
        parse_ok(&doc, &e);
        assert_int_equal(ifm_reply_status_decode(&doc, &st, &err), 0);
        assert_false(st.ok);
        assert_int_equal(st.code, codes[i]);
        assert_string_equal(st.error, "no such board \"x\"");
        ifm_doc_free(&doc);
        check_decoder(dec_reply, &e, required, NULL);
        ifm_enc_free(&e);
    }
    /* 2xx are ok */
    ifm_enc_init(&e);
    ifm_reply_begin(&e, 202, NULL, 0);
    parse_ok(&doc, &e);
    assert_int_equal(ifm_reply_status_decode(&doc, &st, &err), 0);
    assert_true(st.ok);
    ifm_doc_free(&doc);
    ifm_enc_free(&e);

    /* a long error is truncated to fit, a huge one is refused */
    char longerr[1000];
    memset(longerr, 'e', sizeof longerr - 1);
    longerr[sizeof longerr - 1] = '\0';
    ifm_enc_init(&e);
    ifm_reply_begin(&e, 500, longerr, 0);
    parse_ok(&doc, &e);
    assert_int_equal(ifm_reply_status_decode(&doc, &st, &err), 0);
    assert_int_equal(strlen(st.error), sizeof st.error - 1);
    ifm_doc_free(&doc);
    ifm_enc_free(&e);
    char *huge = malloc(5000);
    memset(huge, 'h', 4999);
    huge[4999] = '\0';
    ifm_enc_init(&e);
    ifm_reply_begin(&e, 500, huge, 0);
    assert_int_equal(decode_enc(dec_reply, &e, &err), -1);
    ERR_HAS(err, "\"error\"");
    ifm_enc_free(&e);
    free(huge);

    /* codes outside 100..599 */
    const uint32_t badcodes[] = { 0, 99, 600, 1000 };
    for (size_t i = 0; i < sizeof badcodes / sizeof *badcodes; i++) {
        ifm_enc_init(&e);
        ifm_reply_begin(&e, badcodes[i], NULL, 0);
        assert_int_equal(decode_enc(dec_reply, &e, &err), -1);
        ERR_HAS(err, "\"code\"");
        ifm_enc_free(&e);
    }
    /* error of the wrong type */
    ifm_enc_init(&e);
    ifm_enc_root(&e, 3);
    ifm_enc_kbool(&e, "ok", false);
    ifm_enc_kuint(&e, "code", 400);
    ifm_enc_kuint(&e, "error", 1);
    assert_int_equal(decode_enc(dec_reply, &e, &err), -1);
    ERR_HAS(err, "\"error\"");
    ifm_enc_free(&e);
}

/* ---- worker state ---- */

static void test_board_states(void **state)
{
    for (int s = 0; s < IFM_BOARD_STATE_COUNT; s++)
        assert_int_equal(ifm_board_state_parse(ifm_board_state_name((ifm_board_state)s)), s);
    assert_string_equal(ifm_board_state_name(IFM_BOARD_STATE_COUNT), "?");
    assert_int_equal(ifm_board_state_parse("?"), -1);
    assert_int_equal(ifm_board_state_parse("READY"), -1);
    assert_int_equal(ifm_board_state_parse(""), -1);
}

static void test_worker_state_roundtrip(void **state)
{
    ifm_board_brief boards[IFM_BOARD_STATE_COUNT];
    memset(boards, 0, sizeof boards);
    for (int s = 0; s < IFM_BOARD_STATE_COUNT; s++) {
        snprintf(boards[s].serial, sizeof boards[s].serial, "SER-%d", s);
        boards[s].state = (ifm_board_state)s;
        if (s == IFM_BOARD_PREPARING || s == IFM_BOARD_RESERVED)
            snprintf(boards[s].kind, sizeof boards[s].kind, "pulse_count");
    }
    ifm_worker_state ws = { .worker = "host-1 \"lab\"",
                            .online = true,
                            .epoch = 1234567890123ull,
                            .kinds = { "pulse_count", "variance", "default" },
                            .nkinds = 3,
                            .boards = boards,
                            .nboards = IFM_BOARD_STATE_COUNT };
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_worker_state_encode(&e, &ws);
    ifm_doc doc;
    parse_ok(&doc, &e);
    ifm_worker_state out;
    ifm_err err = { "" };
    if (ifm_worker_state_decode(&doc, &out, &err))
        fail_msg("%s", err.msg);
    assert_string_equal(out.worker, ws.worker);
    assert_true(out.online);
    assert_true(out.epoch == ws.epoch);
    assert_int_equal(out.nkinds, 3);
    for (size_t i = 0; i < 3; i++)
        assert_string_equal(out.kinds[i], ws.kinds[i]);
    assert_int_equal(out.nboards, IFM_BOARD_STATE_COUNT);
    for (size_t i = 0; i < out.nboards; i++) {
        assert_string_equal(out.boards[i].serial, boards[i].serial);
        assert_int_equal(out.boards[i].state, boards[i].state);
        assert_string_equal(out.boards[i].kind, boards[i].kind);
    }
    ifm_worker_state_free(&out);
    assert_null(out.boards);
    ifm_doc_free(&doc);
    static const char *const required[] = { "worker", "state", "epoch", "kinds", "boards", NULL };
    check_decoder(dec_worker_state, &e, required, NULL);
    ifm_enc_free(&e);

    /* online with no boards and no kinds */
    ifm_worker_state empty = { .worker = "w", .online = true, .epoch = 1 };
    ifm_enc_init(&e);
    ifm_worker_state_encode(&e, &empty);
    parse_ok(&doc, &e);
    assert_int_equal(ifm_worker_state_decode(&doc, &out, &err), 0);
    assert_int_equal(out.nboards, 0);
    assert_int_equal(out.nkinds, 0);
    ifm_worker_state_free(&out);
    ifm_doc_free(&doc);
    ifm_enc_free(&e);

    /* offline (a Will): kinds and boards may be left out */
    ifm_worker_state off = { .worker = "w", .online = false, .epoch = 99 };
    ifm_enc_init(&e);
    ifm_worker_state_encode(&e, &off);
    parse_ok(&doc, &e);
    assert_int_equal(ifm_worker_state_decode(&doc, &out, &err), 0);
    assert_false(out.online);
    assert_int_equal(out.epoch, 99);
    ifm_worker_state_free(&out);
    ifm_doc_free(&doc);
    ifm_enc_free(&e);
    ifm_enc_init(&e);
    ifm_enc_root(&e, 3);
    ifm_enc_kstr(&e, "worker", "w");
    ifm_enc_kstr(&e, "state", "offline");
    ifm_enc_kuint(&e, "epoch", 7);
    parse_ok(&doc, &e);
    assert_int_equal(ifm_worker_state_decode(&doc, &out, &err), 0);
    assert_false(out.online);
    assert_int_equal(out.epoch, 7);
    assert_int_equal(out.nboards, 0);
    ifm_worker_state_free(&out);
    ifm_doc_free(&doc);
    static const char *const required_off[] = { "worker", "state", "epoch", NULL };
    check_decoder(dec_worker_state, &e, required_off, NULL);
    ifm_enc_free(&e);
}

typedef struct {
    const char *worker, *state;
    int nkinds; /* -1: omit */
    const char *kind0;
    int nboards; /* -1: omit */
    bool board_not_map;
    const char *serial, *bstate, *bkind;
    bool bkind_int;
} ws_spec;

static int decode_ws_spec(const ws_spec *s, ifm_err *err)
{
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_enc_root(&e, 3 + (s->nkinds >= 0) + (s->nboards >= 0));
    ifm_enc_kstr(&e, "worker", s->worker ? s->worker : "w");
    ifm_enc_kstr(&e, "state", s->state ? s->state : "online");
    ifm_enc_kuint(&e, "epoch", 1);
    if (s->nkinds >= 0) {
        ifm_enc_key(&e, "kinds");
        ifm_enc_array(&e, (uint32_t)s->nkinds);
        for (int i = 0; i < s->nkinds; i++) {
            char k[16];
            snprintf(k, sizeof k, "k%d", i);
            ifm_enc_str(&e, i == 0 && s->kind0 ? s->kind0 : k);
        }
    }
    if (s->nboards >= 0) {
        ifm_enc_key(&e, "boards");
        ifm_enc_array(&e, (uint32_t)s->nboards);
        for (int i = 0; i < s->nboards; i++) {
            if (s->board_not_map) {
                ifm_enc_str(&e, "SER");
                continue;
            }
            ifm_enc_map(&e, 2 + (s->bkind || s->bkind_int));
            char ser[16];
            snprintf(ser, sizeof ser, "S%d", i);
            ifm_enc_kstr(&e, "serial", i == 0 && s->serial ? s->serial : ser);
            ifm_enc_kstr(&e, "state", s->bstate ? s->bstate : "ready");
            if (s->bkind)
                ifm_enc_kstr(&e, "kind", s->bkind);
            else if (s->bkind_int)
                ifm_enc_kuint(&e, "kind", 3);
        }
    }
    int rc = decode_enc(dec_worker_state, &e, err);
    ifm_enc_free(&e);
    return rc;
}

static void test_worker_state_bad(void **state)
{
    ifm_err err;
    assert_int_equal(decode_ws_spec(&(ws_spec){ .nkinds = 2, .nboards = 2 }, &err), 0);
    assert_int_equal(decode_ws_spec(&(ws_spec){ .state = "maybe", .nkinds = 0, .nboards = 0 }, &err), -1);
    ERR_HAS(err, "online or offline");
    assert_int_equal(decode_ws_spec(&(ws_spec){ .state = "online-ish-and-too-long", .nkinds = 0, .nboards = 0 }, &err),
                     -1);
    ERR_HAS(err, "\"state\"");
    assert_int_equal(decode_ws_spec(&(ws_spec){ .worker = "a/b", .nkinds = 0, .nboards = 0 }, &err), -1);
    ERR_HAS(err, "worker");
    assert_int_equal(decode_ws_spec(&(ws_spec){ .worker = "+", .nkinds = 0, .nboards = 0 }, &err), -1);
    assert_int_equal(decode_ws_spec(&(ws_spec){ .worker = "$w", .nkinds = 0, .nboards = 0 }, &err), -1);
    assert_int_equal(decode_ws_spec(&(ws_spec){ .worker = "", .nkinds = 0, .nboards = 0 }, &err), -1);
    /* online needs kinds and boards */
    assert_int_equal(decode_ws_spec(&(ws_spec){ .nkinds = -1, .nboards = 0 }, &err), -1);
    ERR_HAS(err, "missing field \"kinds\"");
    assert_int_equal(decode_ws_spec(&(ws_spec){ .nkinds = 0, .nboards = -1 }, &err), -1);
    ERR_HAS(err, "missing field \"boards\"");
    /* too many kinds */
    assert_int_equal(decode_ws_spec(&(ws_spec){ .nkinds = IFM_MAX_KINDS, .nboards = 0 }, &err), 0);
    assert_int_equal(decode_ws_spec(&(ws_spec){ .nkinds = IFM_MAX_KINDS + 1, .nboards = 0 }, &err), -1);
    ERR_HAS(err, "\"kinds\" has 17 items");
    /* bad kinds */
    assert_int_equal(decode_ws_spec(&(ws_spec){ .nkinds = 1, .kind0 = "", .nboards = 0 }, &err), -1);
    ERR_HAS(err, "kind must not be empty");
    assert_int_equal(
        decode_ws_spec(&(ws_spec){ .nkinds = 1, .kind0 = "0123456789abcdef0123456789abcdef", .nboards = 0 }, &err), -1);
    ERR_HAS(err, "kind is 32 bytes");
    /* boards */
    assert_int_equal(decode_ws_spec(&(ws_spec){ .nkinds = 0, .nboards = 2, .board_not_map = true }, &err), -1);
    ERR_HAS(err, "boards[0] must be a map");
    assert_int_equal(decode_ws_spec(&(ws_spec){ .nkinds = 0, .nboards = 2, .serial = "a+b" }, &err), -1);
    ERR_HAS(err, "invalid serial \"a+b\"");
    assert_int_equal(decode_ws_spec(&(ws_spec){ .nkinds = 0, .nboards = 2, .serial = "lease" }, &err), -1);
    ERR_HAS(err, "invalid serial");
    assert_int_equal(decode_ws_spec(&(ws_spec){ .nkinds = 0, .nboards = 2, .serial = "" }, &err), -1);
    ERR_HAS(err, "\"serial\"");
    assert_int_equal(decode_ws_spec(&(ws_spec){ .nkinds = 0, .nboards = 1, .bstate = "dancing" }, &err), -1);
    ERR_HAS(err, "unknown board state \"dancing\"");
    assert_int_equal(
        decode_ws_spec(&(ws_spec){ .nkinds = 0, .nboards = 1, .bstate = "reservedreservedreserved" }, &err), -1);
    ERR_HAS(err, "\"state\"");
    assert_int_equal(decode_ws_spec(&(ws_spec){ .nkinds = 0, .nboards = 1, .bkind_int = true }, &err), -1);
    ERR_HAS(err, "field \"kind\" must be a string");
    assert_int_equal(decode_ws_spec(&(ws_spec){ .nkinds = 0, .nboards = 1, .bkind = "k" }, &err), 0);
    /* too many boards */
    assert_int_equal(decode_ws_spec(&(ws_spec){ .nkinds = 0, .nboards = IFM_MAX_SERIALS + 1 }, &err), -1);
    ERR_HAS(err, "\"boards\" has 4097 items");
    assert_int_equal(decode_ws_spec(&(ws_spec){ .nkinds = 0, .nboards = IFM_MAX_SERIALS }, &err), 0);
}

/* ---- board status ---- */

static void test_board_status(void **state)
{
    for (int s = 0; s < IFM_BOARD_STATE_COUNT; s++) {
        ifm_board_status bs = {
            .serial = "E6614C311B4B8F2C", .worker = "wrk-a", .epoch = 42, .state = (ifm_board_state)s
        };
        if (s == IFM_BOARD_RESERVED)
            strcpy(bs.kind, "variance");
        if (s == IFM_BOARD_BROKEN)
            strcpy(bs.reason, "flash timed out after 3 tries");
        ifm_enc e;
        ifm_enc_init(&e);
        ifm_board_status_encode(&e, &bs);
        ifm_doc doc;
        parse_ok(&doc, &e);
        ifm_board_status out;
        ifm_err err = { "" };
        assert_int_equal(ifm_board_status_decode(&doc, &out, &err), 0);
        assert_string_equal(out.serial, bs.serial);
        assert_string_equal(out.worker, bs.worker);
        assert_int_equal(out.epoch, bs.epoch);
        assert_int_equal(out.state, bs.state);
        assert_string_equal(out.kind, bs.kind);
        assert_string_equal(out.reason, bs.reason);
        ifm_doc_free(&doc);
        static const char *const required[] = { "serial", "worker", "epoch", "state", NULL };
        check_decoder(dec_board_status, &e, required, NULL);
        ifm_enc_free(&e);
    }
    /* bad serials and states */
    const char *bad[] = { "a/b", "client", "#", "" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ifm_enc e;
        ifm_enc_init(&e);
        ifm_enc_root(&e, 4);
        ifm_enc_kstr(&e, "serial", bad[i]);
        ifm_enc_kstr(&e, "worker", "w");
        ifm_enc_kuint(&e, "epoch", 1);
        ifm_enc_kstr(&e, "state", "ready");
        ifm_err err;
        assert_int_equal(decode_enc(dec_board_status, &e, &err), -1);
        ERR_HAS(err, "serial");
        ifm_enc_free(&e);
    }
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_enc_root(&e, 4);
    ifm_enc_kstr(&e, "serial", "S");
    ifm_enc_kstr(&e, "worker", "w");
    ifm_enc_kuint(&e, "epoch", 1);
    ifm_enc_kstr(&e, "state", "asleep");
    ifm_err err;
    assert_int_equal(decode_enc(dec_board_status, &e, &err), -1);
    ERR_HAS(err, "unknown board state");
    ifm_enc_free(&e);
}

/* ---- control -> worker commands ---- */

static void test_worker_cmd(void **state)
{
    for (int op = 0; op < IFM_WOP_COUNT; op++) {
        for (int with_args = 0; with_args < 2; with_args++) {
            if (with_args && op != IFM_WOP_RESERVE)
                continue;
            ifm_worker_cmd c = { .op = (ifm_worker_op)op, .serial = "SER\\1" };
            if (op == IFM_WOP_RESERVE) {
                strcpy(c.kind, "pulse_count");
                strcpy(c.client, "alice@lab");
                c.lease = 0xfedcba9876543210ull;
            }
            ifm_enc e;
            ifm_enc_init(&e);
            ifm_worker_cmd_encode(&e, &c, with_args ? ARGS : NULL, sizeof ARGS);
            ifm_doc doc;
            parse_ok(&doc, &e);
            ifm_worker_cmd out;
            ifm_err err = { "" };
            if (ifm_worker_cmd_decode(&doc, &out, &err))
                fail_msg("op %d: %s", op, err.msg);
            assert_int_equal(out.op, c.op);
            assert_string_equal(out.serial, c.serial);
            assert_string_equal(out.kind, c.kind);
            assert_string_equal(out.client, c.client);
            assert_true(out.lease == c.lease);
            if (with_args) {
                ifm_enc a;
                ifm_enc_init(&a);
                assert_non_null(out.args);
                assert_int_equal(ifm_obj_pack(out.args, &a), 0);
                assert_int_equal(ifm_enc_size(&a), sizeof ARGS);
                assert_memory_equal(ifm_enc_data(&a), ARGS, sizeof ARGS);
                ifm_enc_free(&a);
            } else {
                assert_null(out.args);
            }
            ifm_doc_free(&doc);
            static const char *const req_reserve[] = { "op", "serial", "kind", "client", "lease", NULL };
            static const char *const req_other[] = { "op", "serial", NULL };
            check_decoder(dec_worker_cmd, &e, op == IFM_WOP_RESERVE ? req_reserve : req_other, NULL);
            ifm_enc_free(&e);
        }
    }
    /* unknown op, bad serial, args not a map */
    ifm_enc e;
    ifm_err err;
    ifm_enc_init(&e);
    ifm_enc_root(&e, 2);
    ifm_enc_kstr(&e, "op", "explode");
    ifm_enc_kstr(&e, "serial", "S");
    assert_int_equal(decode_enc(dec_worker_cmd, &e, &err), -1);
    ERR_HAS(err, "unknown worker op \"explode\"");
    ifm_enc_free(&e);
    ifm_enc_init(&e);
    ifm_enc_root(&e, 2);
    ifm_enc_kstr(&e, "op", "release");
    ifm_enc_kstr(&e, "serial", "farm");
    assert_int_equal(decode_enc(dec_worker_cmd, &e, &err), -1);
    ERR_HAS(err, "invalid serial \"farm\"");
    ifm_enc_free(&e);
    ifm_enc_init(&e);
    ifm_enc_root(&e, 6);
    ifm_enc_kstr(&e, "op", "reserve");
    ifm_enc_kstr(&e, "serial", "S");
    ifm_enc_kstr(&e, "kind", "k");
    ifm_enc_kstr(&e, "client", "c");
    ifm_enc_kuint(&e, "lease", 1);
    ifm_enc_kstr(&e, "args", "not a map");
    assert_int_equal(decode_enc(dec_worker_cmd, &e, &err), -1);
    ERR_HAS(err, "field \"args\" must be a map");
    ifm_enc_free(&e);
}

/* ---- holder -> board commands ---- */

static void test_board_cmd(void **state)
{
    uint8_t *bits[3];
    ifm_file files[3];
    const size_t sizes[3] = { IFM_BITSTREAM_SIZE, 1, 300 };
    for (int i = 0; i < 3; i++) {
        bits[i] = malloc(sizes[i]);
        for (size_t k = 0; k < sizes[i]; k++)
            bits[i][k] = (uint8_t)(k * 7 + (size_t)i);
        snprintf(files[i].id, sizeof files[i].id, "gen-0/ind-%d \"x\"", i);
        files[i].data = bits[i];
        files[i].len = sizes[i];
    }
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_board_cmd_encode(&e, "batch-7", files, 3);
    ifm_doc doc;
    parse_ok(&doc, &e);
    ifm_board_cmd out;
    ifm_err err = { "" };
    if (ifm_board_cmd_decode(&doc, &out, &err))
        fail_msg("%s", err.msg);
    assert_string_equal(out.op, "evaluate");
    assert_string_equal(out.batch_id, "batch-7");
    assert_int_equal(out.nfiles, 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(out.files[i].id, files[i].id);
        assert_int_equal(out.files[i].len, sizes[i]);
        assert_memory_equal(out.files[i].data, bits[i], sizes[i]);
        /* zero copy: the data points into the payload */
        assert_true(out.files[i].data > (const uint8_t *)ifm_enc_data(&e) &&
                    out.files[i].data < (const uint8_t *)ifm_enc_data(&e) + ifm_enc_size(&e));
    }
    ifm_board_cmd_free(&out);
    assert_null(out.files);
    ifm_board_cmd_free(&out);
    ifm_doc_free(&doc);
    ifm_enc_free(&e);

    /* the battery on a small command (prefixes of 100 KB would take a while) */
    ifm_enc_init(&e);
    ifm_board_cmd_encode(&e, "b", files + 1, 2);
    static const char *const required[] = { "op", "batch_id", "files", NULL };
    check_decoder(dec_board_cmd, &e, required, NULL);
    ifm_enc_free(&e);

    /* no files, too many files, empty file, non-bin file, duplicate ids, bad ids */
    ifm_enc_init(&e);
    ifm_board_cmd_encode(&e, "b", NULL, 0);
    assert_int_equal(decode_enc(dec_board_cmd, &e, &err), -1);
    ERR_HAS(err, "\"files\" must hold 1..256");
    ifm_enc_free(&e);
    ifm_file *many = calloc(IFM_MAX_FILES + 1, sizeof *many);
    for (int i = 0; i < IFM_MAX_FILES + 1; i++) {
        snprintf(many[i].id, sizeof many[i].id, "f%d", i);
        many[i].data = bits[1];
        many[i].len = 1;
    }
    ifm_enc_init(&e);
    ifm_board_cmd_encode(&e, "b", many, IFM_MAX_FILES);
    assert_int_equal(decode_enc(dec_board_cmd, &e, &err), 0);
    ifm_enc_free(&e);
    ifm_enc_init(&e);
    ifm_board_cmd_encode(&e, "b", many, IFM_MAX_FILES + 1);
    assert_int_equal(decode_enc(dec_board_cmd, &e, &err), -1);
    ERR_HAS(err, "got 257");
    ifm_enc_free(&e);
    many[1].len = 0;
    ifm_enc_init(&e);
    ifm_board_cmd_encode(&e, "b", many, 3);
    assert_int_equal(decode_enc(dec_board_cmd, &e, &err), -1);
    ERR_HAS(err, "file \"f1\" must be non-empty bin");
    ifm_enc_free(&e);
    many[1].len = 1;
    strcpy(many[2].id, "f0");
    ifm_enc_init(&e);
    ifm_board_cmd_encode(&e, "b", many, 3);
    assert_int_equal(decode_enc(dec_board_cmd, &e, &err), -1);
    ERR_HAS(err, "duplicate key \"f0\"");
    ifm_enc_free(&e);
    strcpy(many[2].id, "");
    ifm_enc_init(&e);
    ifm_board_cmd_encode(&e, "b", many, 3);
    assert_int_equal(decode_enc(dec_board_cmd, &e, &err), -1);
    ERR_HAS(err, "file id must not be empty");
    ifm_enc_free(&e);
    memset(many[2].id, 'i', IFM_ID_MAX - 1);
    many[2].id[IFM_ID_MAX - 1] = '\0';
    ifm_enc_init(&e);
    ifm_board_cmd_encode(&e, "b", many, 3);
    /* IFM_ID_MAX - 1 bytes need IFM_ID_MAX with the NUL: the field holds them */
    assert_int_equal(decode_enc(dec_board_cmd, &e, &err), 0);
    ifm_enc_free(&e);
    free(many);

    ifm_enc_init(&e);
    ifm_enc_root(&e, 3);
    ifm_enc_kstr(&e, "op", "evaluate");
    ifm_enc_kstr(&e, "batch_id", "b");
    ifm_enc_key(&e, "files");
    ifm_enc_map(&e, 1);
    ifm_enc_kstr(&e, "f", "not bin");
    assert_int_equal(decode_enc(dec_board_cmd, &e, &err), -1);
    ERR_HAS(err, "file \"f\" must be non-empty bin");
    ifm_enc_free(&e);
    ifm_enc_init(&e);
    ifm_enc_root(&e, 3);
    ifm_enc_kstr(&e, "op", "program");
    ifm_enc_kstr(&e, "batch_id", "b");
    ifm_enc_key(&e, "files");
    ifm_enc_map(&e, 0);
    assert_int_equal(decode_enc(dec_board_cmd, &e, &err), -1);
    ERR_HAS(err, "unknown board op \"program\"");
    ifm_enc_free(&e);
    /* files as an array instead of a map */
    ifm_enc_init(&e);
    ifm_enc_root(&e, 3);
    ifm_enc_kstr(&e, "op", "evaluate");
    ifm_enc_kstr(&e, "batch_id", "b");
    ifm_enc_key(&e, "files");
    ifm_enc_array(&e, 1);
    ifm_enc_bin(&e, "x", 1);
    assert_int_equal(decode_enc(dec_board_cmd, &e, &err), -1);
    ERR_HAS(err, "field \"files\" must be a map");
    ifm_enc_free(&e);
    for (int i = 0; i < 3; i++)
        free(bits[i]);
}

/* ---- board events ---- */

static void test_event_simple(void **state)
{
    const char *events[] = { "initialized", "failure", "error", "export" };
    for (size_t i = 0; i < sizeof events / sizeof *events; i++) {
        for (int with_reason = 0; with_reason < 2; with_reason++) {
            ifm_enc e;
            ifm_enc_init(&e);
            ifm_event_simple_encode(&e, events[i], "SER1", with_reason ? "usb reset \"failed\"" : NULL);
            ifm_doc doc;
            parse_ok(&doc, &e);
            ifm_event ev;
            ifm_err err = { "" };
            assert_int_equal(ifm_event_decode(&doc, &ev, &err), 0);
            assert_string_equal(ev.event, events[i]);
            assert_string_equal(ev.serial, "SER1");
            assert_string_equal(ev.reason, with_reason ? "usb reset \"failed\"" : "");
            assert_string_equal(ev.batch_id, "");
            assert_null(ev.results);
            ifm_result r;
            assert_int_equal(ifm_event_result_at(&ev, 0, &r, NULL, 0, &err), -1);
            ERR_HAS(err, "no result 0");
            ifm_doc_free(&doc);
            static const char *const required[] = { "event", NULL };
            check_decoder(dec_event, &e, required, NULL);
            ifm_enc_free(&e);
        }
    }
    /* an event name too long for the struct */
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_event_simple_encode(&e, "0123456789abcdef0123456789abcdef", "S", NULL);
    ifm_err err;
    assert_int_equal(decode_enc(dec_event, &e, &err), -1);
    ERR_HAS(err, "\"event\"");
    ifm_enc_free(&e);
    ifm_enc_init(&e);
    ifm_event_simple_encode(&e, "", "S", NULL);
    assert_int_equal(decode_enc(dec_event, &e, &err), -1);
    ERR_HAS(err, "\"event\" must not be empty");
    ifm_enc_free(&e);
}

/* `usbip exported`/`usbip detached` (PROTOCOL.md 19.2): busid, host and port
 * are required; the lease tag and the reason are optional. */
static void test_event_usbip(void **state)
{
    for (int variant = 0; variant < 2; variant++) {
        uint64_t lease = variant ? 1795243600001ull : 0;
        const char *reason = variant ? "the lease ended" : NULL;
        ifm_enc e;
        ifm_enc_init(&e);
        ifm_event_usbip_encode(&e, variant ? "usbip detached" : "usbip exported", "SER1", "Zq3vK8pW1mXc7RtY2nLdA9bQ",
                               "worker1.lab", 3240, reason, lease);
        ifm_doc doc;
        parse_ok(&doc, &e);
        ifm_event ev;
        ifm_err err = { "" };
        assert_int_equal(ifm_event_decode(&doc, &ev, &err), 0);
        assert_string_equal(ev.event, variant ? "usbip detached" : "usbip exported");
        assert_string_equal(ev.busid, "Zq3vK8pW1mXc7RtY2nLdA9bQ");
        assert_string_equal(ev.host, "worker1.lab");
        assert_int_equal(ev.port, 3240);
        assert_true(ev.lease == lease);
        assert_string_equal(ev.reason, reason ? reason : "");
        /* the tag comes right after `event` (8.2), after the version: the third key */
        assert_true(doc.root->via.map.size >= 3);
        const msgpack_object_kv *kv = &doc.root->via.map.ptr[2];
        assert_true(kv->key.type == MSGPACK_OBJECT_STR);
        assert_int_equal(kv->key.via.str.size == 5 && !memcmp(kv->key.via.str.ptr, "lease", 5), variant);
        ifm_doc_free(&doc);
        static const char *const required[] = { "event", "busid", "host", "port", NULL };
        check_decoder(dec_event, &e, required, NULL);
        ifm_enc_free(&e);
    }
}

static void test_event_results(void **state)
{
    uint16_t wave[5] = { 0, 1, 65535, 1000, 42 };
    ifm_result rs[6] = {
        { .id = "p", .type = IFM_VALUE_PULSES, .pulses = 123456 },
        { .id = "p0", .type = IFM_VALUE_PULSES, .pulses = 0 },
        { .id = "f", .type = IFM_VALUE_FITNESS, .fitness = 0.125 },
        { .id = "fi", .type = IFM_VALUE_FITNESS, .fitness = 3.0 }, /* integral stays a float */
        { .id = "w", .type = IFM_VALUE_WAVEFORM, .fitness = -2.5, .samples = wave, .nsamples = 5 },
        { .id = "x", .type = IFM_VALUE_FAILED, .error = "bitstream is 12 bytes" },
    };
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_event_results_encode(&e, "SER1", "batch-9", rs, 6);
    ifm_doc doc;
    parse_ok(&doc, &e);
    ifm_event ev;
    ifm_err err = { "" };
    assert_int_equal(ifm_event_decode(&doc, &ev, &err), 0);
    assert_string_equal(ev.event, "results");
    assert_string_equal(ev.serial, "SER1");
    assert_string_equal(ev.batch_id, "batch-9");
    assert_non_null(ev.results);
    assert_int_equal(ev.results->via.array.size, 6);
    for (size_t i = 0; i < 6; i++) {
        ifm_result r;
        uint16_t samples[8];
        if (ifm_event_result_at(&ev, i, &r, samples, 8, &err))
            fail_msg("result %zu: %s", i, err.msg);
        assert_string_equal(r.id, rs[i].id);
        assert_int_equal(r.type, rs[i].type);
        switch (r.type) {
        case IFM_VALUE_PULSES:
            assert_int_equal(r.pulses, rs[i].pulses);
            break;
        case IFM_VALUE_FITNESS:
            assert_true(r.fitness == rs[i].fitness);
            break;
        case IFM_VALUE_WAVEFORM:
            assert_true(r.fitness == rs[i].fitness);
            assert_int_equal(r.nsamples, 5);
            assert_ptr_equal(r.samples, samples);
            assert_memory_equal(r.samples, wave, sizeof wave);
            break;
        case IFM_VALUE_FAILED:
            assert_string_equal(r.error, rs[i].error);
            break;
        }
    }
    /* samples: a short buffer truncates, no buffer gives none */
    ifm_result r;
    uint16_t two[2] = { 9, 9 };
    assert_int_equal(ifm_event_result_at(&ev, 4, &r, two, 2, &err), 0);
    assert_int_equal(r.nsamples, 2);
    assert_int_equal(two[0], 0);
    assert_int_equal(two[1], 1);
    assert_int_equal(ifm_event_result_at(&ev, 4, &r, NULL, 0, &err), 0);
    assert_int_equal(r.nsamples, 0);
    assert_true(r.fitness == -2.5);
    /* out of range */
    assert_int_equal(ifm_event_result_at(&ev, 6, &r, NULL, 0, &err), -1);
    ERR_HAS(err, "no result 6");
    assert_int_equal(ifm_event_result_at(&ev, SIZE_MAX, &r, NULL, 0, &err), -1);
    ifm_doc_free(&doc);
    static const char *const required[] = { "event", "batch_id", "results", NULL };
    check_decoder(dec_event, &e, required, NULL);
    ifm_enc_free(&e);

    /* an empty result list */
    ifm_enc_init(&e);
    ifm_event_results_encode(&e, "SER1", "b", NULL, 0);
    assert_int_equal(decode_enc(dec_event, &e, &err), 0);
    ifm_enc_free(&e);
}

/* One result value given as raw msgpack, decoded with ifm_event_result_at. */
static int decode_one_result(const uint8_t *pair, size_t n, ifm_result *r, ifm_err *err)
{
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_enc_root(&e, 3);
    ifm_enc_kstr(&e, "event", "results");
    ifm_enc_kstr(&e, "batch_id", "b");
    ifm_enc_key(&e, "results");
    ifm_enc_array(&e, 1);
    ifm_enc_raw(&e, pair, n);
    ifm_doc doc;
    parse_ok(&doc, &e);
    ifm_event ev;
    assert_int_equal(ifm_event_decode(&doc, &ev, err), 0);
    uint16_t samples[4];
    int rc = ifm_event_result_at(&ev, 0, r, samples, 4, err);
    ifm_doc_free(&doc);
    ifm_enc_free(&e);
    return rc;
}

#define RESULT(rc, needle, ...)                                                                                        \
    do {                                                                                                               \
        const uint8_t b_[] = { __VA_ARGS__ };                                                                          \
        ifm_result r_;                                                                                                 \
        ifm_err err_ = { "" };                                                                                         \
        int got_ = decode_one_result(b_, sizeof b_, &r_, &err_);                                                       \
        if (got_ != (rc))                                                                                              \
            fail_msg("line %d: got %d (%s)", __LINE__, got_, err_.msg);                                                \
        if ((rc) && !strstr(err_.msg, needle))                                                                         \
            fail_msg("line %d: expected \"%s\" in \"%s\"", __LINE__, (const char *)needle, err_.msg);                  \
    } while (0)

static void test_event_results_bad(void **state)
{
    RESULT(0, "", 0x92, 0xa1, 'a', 0x05);
    /* pulses beyond INT64_MAX */
    RESULT(-1, "out of range", 0x92, 0xa1, 'a', 0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0);
    RESULT(0, "", 0x92, 0xa1, 'a', 0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
    /* float32 fitness */
    RESULT(0, "", 0x92, 0xa1, 'a', 0xca, 0x3f, 0x80, 0x00, 0x00);
    /* pairs that are not pairs */
    RESULT(-1, "must be an [id, value] pair", 0xa1, 'a');
    RESULT(-1, "must be an [id, value] pair", 0x91, 0xa1, 'a');
    RESULT(-1, "must be an [id, value] pair", 0x93, 0xa1, 'a', 0x01, 0x02);
    RESULT(-1, "must be an [id, value] pair", 0x81, 0xa1, 'a', 0x01);
    /* bad ids */
    RESULT(-1, "result id must be a string", 0x92, 0x01, 0x01);
    RESULT(-1, "result id must not be empty", 0x92, 0xa0, 0x01);
    RESULT(-1, "result id contains a NUL", 0x92, 0xa2, 'a', 0x00, 0x01);
    /* unsupported value types */
    RESULT(-1, "unsupported value type", 0x92, 0xa1, 'a', 0xa2, 'o', 'k');
    RESULT(-1, "unsupported value type", 0x92, 0xa1, 'a', 0xc3);
    RESULT(-1, "unsupported value type", 0x92, 0xa1, 'a', 0xc0);
    RESULT(-1, "unsupported value type", 0x92, 0xa1, 'a', 0xc4, 0x01, 0x00);
    /* waveforms */
    RESULT(0, "", 0x92, 0xa1, 'a', 0x92, 0x01, 0x92, 0x00, 0xcd, 0xff, 0xff); /* int fitness ok */
    RESULT(0, "", 0x92, 0xa1, 'a', 0x92, 0xff, 0x90);                         /* no samples */
    RESULT(-1, "sample 1 is not a 16-bit", 0x92, 0xa1, 'a', 0x92, 0x01, 0x92, 0x00, 0xce, 0x00, 0x01, 0x00, 0x00);
    RESULT(-1, "sample 0 is not a 16-bit", 0x92, 0xa1, 'a', 0x92, 0x01, 0x91, 0xff);
    RESULT(-1, "sample 0 is not a 16-bit", 0x92, 0xa1, 'a', 0x92, 0x01, 0x91, 0xa1, '1');
    RESULT(-1, "waveform must be", 0x92, 0xa1, 'a', 0x91, 0x01);
    RESULT(-1, "waveform must be", 0x92, 0xa1, 'a', 0x93, 0x01, 0x90, 0x90);
    RESULT(-1, "waveform must be", 0x92, 0xa1, 'a', 0x92, 0xa1, 'x', 0x90);
    RESULT(-1, "waveform must be", 0x92, 0xa1, 'a', 0x92, 0x01, 0x01);
    RESULT(-1, "waveform must be", 0x92, 0xa1, 'a', 0x92, 0x01, 0x80);
    /* failures */
    RESULT(0, "", 0x92, 0xa1, 'a', 0x81, 0xa5, 'e', 'r', 'r', 'o', 'r', 0xa1, 'x');
    RESULT(-1, "missing field \"error\"", 0x92, 0xa1, 'a', 0x80);
    RESULT(-1, "field \"error\" must be a string", 0x92, 0xa1, 'a', 0x81, 0xa5, 'e', 'r', 'r', 'o', 'r', 0x01);

    /* results event: results not an array, missing batch_id */
    ifm_enc e;
    ifm_err err;
    ifm_enc_init(&e);
    ifm_enc_root(&e, 3);
    ifm_enc_kstr(&e, "event", "results");
    ifm_enc_kstr(&e, "batch_id", "b");
    ifm_enc_key(&e, "results");
    ifm_enc_map(&e, 0);
    assert_int_equal(decode_enc(dec_event, &e, &err), -1);
    ERR_HAS(err, "field \"results\" must be an array");
    ifm_enc_free(&e);
    /* too many results (IFM event decoder allows 2^20) */
    uint32_t many = (1u << 20) + 1;
    ifm_enc_init(&e);
    ifm_enc_root(&e, 3);
    ifm_enc_kstr(&e, "event", "results");
    ifm_enc_kstr(&e, "batch_id", "b");
    ifm_enc_key(&e, "results");
    ifm_enc_array(&e, many);
    for (uint32_t i = 0; i < many; i++)
        ifm_enc_nil(&e);
    ifm_doc doc;
    parse_ok(&doc, &e);
    ifm_event ev;
    assert_int_equal(ifm_event_decode(&doc, &ev, &err), -1);
    ERR_HAS(err, "\"results\" has 1048577 items");
    ifm_doc_free(&doc);
    ifm_enc_free(&e);
}

/* ---- control -> client events ---- */

static void test_client_event(void **state)
{
    const char *events[] = { "reservation_ending_soon", "reservation_end", "failure" };
    for (size_t i = 0; i < sizeof events / sizeof *events; i++) {
        for (int variant = 0; variant < 3; variant++) {
            int with_until = variant == 1;
            uint64_t until = with_until ? 1795243030123ull : 0;
            const char *reason = variant == 2 ? "expired" : variant == 1 ? "" : NULL;
            ifm_enc e;
            ifm_enc_init(&e);
            ifm_client_event_encode(&e, events[i], "SER-9", until, reason);
            ifm_doc doc;
            parse_ok(&doc, &e);
            ifm_event ev;
            ifm_err err = { "" };
            assert_int_equal(ifm_event_decode(&doc, &ev, &err), 0);
            assert_string_equal(ev.event, events[i]);
            assert_string_equal(ev.serial, "SER-9");
            assert_string_equal(ev.reason, variant == 2 ? "expired" : ""); /* "" is left out */
            assert_null(ev.results);
            uint64_t got = 0;
            assert_int_equal(ifm_get_uint(doc.root, "until", false, 0, UINT64_MAX, &got, &err), with_until ? 0 : 1);
            assert_true(got == until);
            ifm_doc_free(&doc);
            static const char *const required[] = { "event", NULL };
            /* "until" is not part of ifm_event: readers fetch it with ifm_get_uint */
            static const char *const unread[] = { "until", NULL };
            check_decoder(dec_event, &e, required, unread);
            ifm_enc_free(&e);
        }
    }
}

/* ---- lease info, ctl state, availability ---- */

static void test_lease_info(void **state)
{
    ifm_lease_info l = { .serial = "SER",
                         .client = "bob \"the builder\"",
                         .kind = "pulse_count",
                         .worker = "w1",
                         .lease = 77,
                         .until_ms = UINT64_MAX };
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_lease_info_encode(&e, &l);
    ifm_doc doc;
    parse_ok(&doc, &e);
    ifm_lease_info out;
    ifm_err err = { "" };
    assert_int_equal(ifm_lease_info_decode(&doc, &out, &err), 0);
    assert_string_equal(out.serial, l.serial);
    assert_string_equal(out.client, l.client);
    assert_string_equal(out.kind, l.kind);
    assert_string_equal(out.worker, l.worker);
    assert_true(out.lease == l.lease);
    assert_true(out.until_ms == l.until_ms);
    ifm_doc_free(&doc);
    static const char *const required[] = { "serial", "client", "kind", "worker", "lease", "until", NULL };
    check_decoder(dec_lease, &e, required, NULL);
    ifm_enc_free(&e);
    /* a client name that does not fit */
    char longname[IFM_NAME_MAX + 1];
    memset(longname, 'c', IFM_NAME_MAX);
    longname[IFM_NAME_MAX] = '\0';
    ifm_enc_init(&e);
    ifm_enc_root(&e, 6);
    ifm_enc_kstr(&e, "serial", "S");
    ifm_enc_kstr(&e, "client", longname);
    ifm_enc_kstr(&e, "kind", "k");
    ifm_enc_kstr(&e, "worker", "w");
    ifm_enc_kuint(&e, "lease", 1);
    ifm_enc_kuint(&e, "until", 1);
    assert_int_equal(decode_enc(dec_lease, &e, &err), -1);
    ERR_HAS(err, "\"client\" is 128 bytes");
    ifm_enc_free(&e);
}

static void test_ctl_state(void **state)
{
    for (int online = 0; online < 2; online++) {
        ifm_enc e;
        ifm_enc_init(&e);
        ifm_ctl_state_encode(&e, online, 5);
        ifm_doc doc;
        parse_ok(&doc, &e);
        char st[16];
        uint64_t epoch;
        ifm_err err;
        assert_int_equal(ifm_get_str(doc.root, "state", true, st, sizeof st, &err), 0);
        assert_string_equal(st, online ? "online" : "offline");
        assert_int_equal(ifm_get_uint(doc.root, "epoch", true, 0, UINT64_MAX, &epoch, &err), 0);
        assert_int_equal(epoch, 5);
        ifm_doc_free(&doc);
        ifm_enc_free(&e);
    }
}

static void test_available(void **state)
{
    ifm_available a = {
        .amount = 12, .nkinds = 3, .kinds = { "pulse_count", "variance", "default" }, .counts = { 5, 0, UINT32_MAX }
    };
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_available_encode(&e, &a);
    ifm_doc doc;
    parse_ok(&doc, &e);
    ifm_available out;
    ifm_err err = { "" };
    assert_int_equal(ifm_available_decode(&doc, &out, &err), 0);
    assert_int_equal(out.amount, 12);
    assert_int_equal(out.nkinds, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(out.kinds[i], a.kinds[i]);
        assert_int_equal(out.counts[i], a.counts[i]);
    }
    ifm_doc_free(&doc);
    static const char *const required[] = { "amount", "kinds", NULL };
    check_decoder(dec_available, &e, required, NULL);
    ifm_enc_free(&e);

    /* empty */
    ifm_available none = { 0 };
    ifm_enc_init(&e);
    ifm_available_encode(&e, &none);
    assert_int_equal(decode_enc(dec_available, &e, &err), 0);
    ifm_enc_free(&e);

    /* too many kinds */
    ifm_available full = { .amount = 1, .nkinds = IFM_MAX_KINDS };
    for (int i = 0; i < IFM_MAX_KINDS; i++)
        snprintf(full.kinds[i], sizeof full.kinds[i], "k%d", i);
    ifm_enc_init(&e);
    ifm_available_encode(&e, &full);
    assert_int_equal(decode_enc(dec_available, &e, &err), 0);
    ifm_enc_free(&e);
    ifm_enc_init(&e);
    ifm_enc_root(&e, 2);
    ifm_enc_kuint(&e, "amount", 1);
    ifm_enc_key(&e, "kinds");
    ifm_enc_map(&e, IFM_MAX_KINDS + 1);
    for (int i = 0; i < IFM_MAX_KINDS + 1; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        ifm_enc_kuint(&e, k, 1);
    }
    assert_int_equal(decode_enc(dec_available, &e, &err), -1);
    ERR_HAS(err, "too many kinds");
    ifm_enc_free(&e);

    /* bad counts and kinds */
    const struct {
        const char *kind;
        uint8_t val[9];
        size_t n;
        const char *why;
    } bad[] = {
        { "k", { 0xff }, 1, "count for kind \"k\"" },
        { "k", { 0xa1, '1' }, 2, "count for kind \"k\"" },
        { "k", { 0xcf, 0, 0, 0, 1, 0, 0, 0, 0 }, 9, "count for kind \"k\"" },
        { "k", { 0xc0 }, 1, "count for kind \"k\"" },
        { "", { 0x01 }, 1, "kind must not be empty" },
        { "0123456789abcdef0123456789abcdef", { 0x01 }, 1, "kind is 32 bytes" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ifm_enc_init(&e);
        ifm_enc_root(&e, 2);
        ifm_enc_kuint(&e, "amount", 1);
        ifm_enc_key(&e, "kinds");
        ifm_enc_map(&e, 1);
        ifm_enc_str(&e, bad[i].kind);
        ifm_enc_raw(&e, bad[i].val, bad[i].n);
        assert_int_equal(decode_enc(dec_available, &e, &err), -1);
        ERR_HAS(err, bad[i].why);
        ifm_enc_free(&e);
    }
    /* amount beyond 32 bits */
    ifm_enc_init(&e);
    ifm_enc_root(&e, 2);
    ifm_enc_kuint(&e, "amount", (uint64_t)UINT32_MAX + 1);
    ifm_enc_key(&e, "kinds");
    ifm_enc_map(&e, 0);
    assert_int_equal(decode_enc(dec_available, &e, &err), -1);
    ERR_HAS(err, "\"amount\"");
    ifm_enc_free(&e);
}

/* Unknown keys are ignored (newer peers may add fields); a newer version is not. */
/* The fields of PROTOCOL.md 14.1, 8.2 and 5.1: instance and heartbeat in a
 * birth, `clean` in a goodbye, lease tags on board events, `resend`, presence,
 * heartbeats. */
static void test_reliability_fields(void **state)
{
    ifm_err err = { "" };
    ifm_doc doc;
    ifm_enc e;
    /* birth with instance and heartbeat; a clean goodbye; an old worker's birth */
    ifm_worker_state ws = { .worker = "w1", .online = true, .epoch = 7, .instance = 1ull << 52, .heartbeat_ms = 1000 };
    ifm_enc_init(&e);
    ifm_worker_state_encode(&e, &ws);
    parse_ok(&doc, &e);
    ifm_worker_state out;
    assert_int_equal(ifm_worker_state_decode(&doc, &out, &err), 0);
    assert_int_equal(out.instance, 1ull << 52);
    assert_int_equal(out.heartbeat_ms, 1000);
    assert_false(out.clean);
    ifm_worker_state_free(&out);
    ifm_doc_free(&doc);
    ifm_enc_free(&e);
    ifm_worker_state bye = { .worker = "w1", .online = false, .epoch = 7, .instance = 9, .clean = true };
    ifm_enc_init(&e);
    ifm_worker_state_encode(&e, &bye);
    parse_ok(&doc, &e);
    assert_int_equal(ifm_worker_state_decode(&doc, &out, &err), 0);
    assert_true(out.clean);
    assert_false(out.online);
    assert_int_equal(out.instance, 9);
    ifm_worker_state_free(&out);
    ifm_doc_free(&doc);
    ifm_enc_free(&e);
    /* heartbeat_ms beyond an hour, a string instance: rejected with a reason */
    static const uint8_t bad_hb[] = { 0x85, 0xa1, 'v', 0x01, 0xa6, 'w', 'o',  'r',  'k',  'e',  'r',  0xa1, 'w',
                                      0xa5, 's',  't', 'a',  't',  'e', 0xa7, 'o',  'f',  'f',  'l',  'i',  'n',
                                      'e',  0xa5, 'e', 'p',  'o',  'c', 'h',  0x01, 0xac, 'h',  'e',  'a',  'r',
                                      't',  'b',  'e', 'a',  't',  '_', 'm',  's',  0xce, 0x10, 0x00, 0x00, 0x00 };
    assert_int_equal(ifm_doc_parse(&doc, bad_hb, sizeof bad_hb, &err), 0);
    assert_int_not_equal(ifm_worker_state_decode(&doc, &out, &err), 0);
    assert_non_null(strstr(err.msg, "heartbeat_ms"));
    ifm_worker_state_free(&out);
    ifm_doc_free(&doc);

    /* lease-tagged events: the tag comes right after the event name */
    ifm_enc_init(&e);
    ifm_event_lease_encode(&e, "released", "S1", NULL, NULL, 42);
    static const uint8_t released[] = { 0x84, 0xa1, 'v',  0x01, 0xa5, 'e', 'v', 'e',  'n', 't',  0xa8, 'r',
                                        'e',  'l',  'e',  'a',  's',  'e', 'd', 0xa5, 'l', 'e',  'a',  's',
                                        'e',  0x2a, 0xa6, 's',  'e',  'r', 'i', 'a',  'l', 0xa2, 'S',  '1' };
    assert_int_equal(ifm_enc_size(&e), sizeof released);
    assert_memory_equal(ifm_enc_data(&e), released, sizeof released);
    parse_ok(&doc, &e);
    ifm_event ev;
    assert_int_equal(ifm_event_decode(&doc, &ev, &err), 0);
    assert_int_equal(ev.lease, 42);
    assert_string_equal(ev.event, "released");
    ifm_doc_free(&doc);
    ifm_enc_free(&e);
    ifm_result r = { .id = "f1", .type = IFM_VALUE_PULSES, .pulses = 5 };
    ifm_enc_init(&e);
    ifm_event_results_lease_encode(&e, "S1", "b1", 77, &r, 1);
    parse_ok(&doc, &e);
    assert_int_equal(ifm_event_decode(&doc, &ev, &err), 0);
    assert_int_equal(ev.lease, 77);
    assert_non_null(ev.results);
    ifm_doc_free(&doc);
    ifm_enc_free(&e);
    ifm_enc_init(&e);
    ifm_event_results_encode(&e, "S1", "b1", &r, 1); /* untagged */
    parse_ok(&doc, &e);
    assert_int_equal(ifm_event_decode(&doc, &ev, &err), 0);
    assert_int_equal(ev.lease, 0);
    ifm_doc_free(&doc);
    ifm_enc_free(&e);
    /* a client event's until */
    ifm_enc_init(&e);
    ifm_client_event_encode(&e, "worker reconnecting", "S1", 1795243030123ull, NULL);
    parse_ok(&doc, &e);
    assert_int_equal(ifm_event_decode(&doc, &ev, &err), 0);
    assert_int_equal(ev.until_ms, 1795243030123ull);
    ifm_doc_free(&doc);
    ifm_enc_free(&e);

    /* resend */
    uint8_t bits[3] = { 1, 2, 3 };
    ifm_file f = { "0", bits, sizeof bits };
    for (int rs = 0; rs < 2; rs++) {
        ifm_enc_init(&e);
        ifm_board_cmd_encode_resend(&e, "b", &f, 1, rs);
        parse_ok(&doc, &e);
        ifm_board_cmd c;
        assert_int_equal(ifm_board_cmd_decode(&doc, &c, &err), 0);
        assert_int_equal(c.resend, rs);
        ifm_board_cmd_free(&c);
        ifm_doc_free(&doc);
        ifm_enc_free(&e);
    }

    /* presence */
    ifm_enc_init(&e);
    ifm_presence_encode(&e);
    parse_ok(&doc, &e);
    assert_int_equal(ifm_presence_decode(&doc, &err), 0);
    ifm_doc_free(&doc);
    ifm_enc_free(&e);
    static const uint8_t away[] = { 0x82, 0xa1, 'v', 0x01, 0xa5, 's', 't', 'a', 't', 'e', 0xa4, 'g', 'o', 'n', 'e' };
    assert_int_equal(ifm_doc_parse(&doc, away, sizeof away, &err), 0);
    assert_int_not_equal(ifm_presence_decode(&doc, &err), 0);
    assert_non_null(strstr(err.msg, "online"));
    ifm_doc_free(&doc);
    char topic[IFM_TOPIC_MAX];
    assert_int_equal(ifm_topic_presence(topic, sizeof topic, "alice", "ifm-00ff"), 0);
    assert_string_equal(topic, "icefarm/client/alice/presence/ifm-00ff");
    assert_int_equal(ifm_topic_presence(topic, sizeof topic, "alice", "a/b"), -1);
    assert_int_equal(ifm_topic_presence(topic, sizeof topic, "", "x"), -1);

    /* heartbeat */
    ifm_heartbeat h = { .worker = "w1", .epoch = 3, .instance = 4, .seq = 5 }, h2;
    ifm_enc_init(&e);
    ifm_heartbeat_encode(&e, &h);
    parse_ok(&doc, &e);
    assert_int_equal(ifm_heartbeat_decode(&doc, &h2, &err), 0);
    assert_memory_equal(&h, &h2, sizeof h);
    ifm_doc_free(&doc);
    ifm_enc_free(&e);
    static const uint8_t no_seq[] = {
        0x84, 0xa1, 'v', 0x01, 0xa6, 'w',  'o', 'r', 'k', 'e', 'r', 0xa1, 'w', 0xa5, 'e',
        'p',  'o',  'c', 'h',  0x01, 0xa8, 'i', 'n', 's', 't', 'a', 'n',  'c', 'e',  0x02
    };
    assert_int_equal(ifm_doc_parse(&doc, no_seq, sizeof no_seq, &err), 0);
    assert_int_not_equal(ifm_heartbeat_decode(&doc, &h2, &err), 0);
    assert_string_equal(err.msg, "missing field \"seq\"");
    ifm_doc_free(&doc);
}

static void test_forward_compat(void **state)
{
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_enc_root(&e, 5);
    ifm_enc_kstr(&e, "serial", "S");
    ifm_enc_kstr(&e, "worker", "w");
    ifm_enc_kuint(&e, "epoch", 1);
    ifm_enc_kstr(&e, "state", "ready");
    ifm_enc_key(&e, "future");
    ifm_enc_map(&e, 1);
    ifm_enc_kdouble(&e, "x", 1.0);
    ifm_err err;
    assert_int_equal(decode_enc(dec_board_status, &e, &err), 0);
    ifm_enc_free(&e);

    ifm_enc_init(&e);
    ifm_enc_map(&e, 5);
    ifm_enc_kuint(&e, "v", IFM_PROTO_VERSION + 1);
    ifm_enc_kstr(&e, "serial", "S");
    ifm_enc_kstr(&e, "worker", "w");
    ifm_enc_kuint(&e, "epoch", 1);
    ifm_enc_kstr(&e, "state", "ready");
    assert_int_equal(decode_enc(dec_board_status, &e, &err), -1);
    ERR_HAS(err, "version");
    ifm_enc_free(&e);
}

/* `error` names whose command it refused; a `set` that is not a bool is refused. */
static void test_error_event_client_and_extend_set(void **state)
{
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_event_error_encode(&e, "SER1", "refused: not yours", "b-1", "bob");
    ifm_doc doc;
    parse_ok(&doc, &e);
    ifm_event ev;
    ifm_err err = { "" };
    assert_int_equal(ifm_event_decode(&doc, &ev, &err), 0);
    assert_string_equal(ev.event, "error");
    assert_string_equal(ev.client, "bob");
    assert_string_equal(ev.batch_id, "b-1");
    ifm_doc_free(&doc);
    ifm_enc_free(&e);
    ifm_enc_init(&e);
    ifm_event_error_encode(&e, "SER1", "bad", NULL, NULL);
    parse_ok(&doc, &e);
    assert_int_equal(ifm_event_decode(&doc, &ev, &err), 0);
    assert_string_equal(ev.client, "");
    ifm_doc_free(&doc);
    ifm_enc_free(&e);

    ifm_enc_init(&e);
    ifm_enc_root(&e, 1);
    ifm_enc_kuint(&e, "set", 1);
    parse_ok(&doc, &e);
    ifm_ctl_req req;
    assert_int_equal(ifm_ctl_req_decode(&doc, IFM_VERB_EXTEND_ALL, &req, &err), -1);
    assert_non_null(strstr(err.msg, "\"set\""));
    ifm_ctl_req_free(&req);
    ifm_doc_free(&doc);
    ifm_enc_free(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verbs),
        cmocka_unit_test(test_ctl_req_roundtrip),
        cmocka_unit_test(test_error_event_client_and_extend_set),
        cmocka_unit_test(test_ctl_req_bad),
        cmocka_unit_test(test_ctl_req_args_limit),
        cmocka_unit_test(test_reply_status),
        cmocka_unit_test(test_board_states),
        cmocka_unit_test(test_worker_state_roundtrip),
        cmocka_unit_test(test_reliability_fields),
        cmocka_unit_test(test_worker_state_bad),
        cmocka_unit_test(test_board_status),
        cmocka_unit_test(test_worker_cmd),
        cmocka_unit_test(test_board_cmd),
        cmocka_unit_test(test_event_simple),
        cmocka_unit_test(test_event_usbip),
        cmocka_unit_test(test_event_results),
        cmocka_unit_test(test_event_results_bad),
        cmocka_unit_test(test_client_event),
        cmocka_unit_test(test_lease_info),
        cmocka_unit_test(test_ctl_state),
        cmocka_unit_test(test_available),
        cmocka_unit_test(test_forward_compat),
    };
    return cmocka_run_group_tests_name("proto_msg", tests, NULL, NULL);
}
