/* Lease record codec: round trips, and strict rejection of every malformed shape. */
#include <msgpack.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "store_codec.h"
#include "icefarm/mp.h"

static ctl_lease full_lease(uint8_t *args, size_t args_len)
{
    ctl_lease l;
    memset(&l, 0, sizeof l);
    strcpy(l.serial, "DE6612345678");
    strcpy(l.client, "al\"ice\\ \xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80");
    strcpy(l.kind, "variance");
    strcpy(l.worker, "wrk-1");
    for (size_t i = 0; i < args_len; i++)
        args[i] = (uint8_t)(i * 7);
    l.args = args;
    l.args_len = args_len;
    l.lease_id = UINT64_MAX;
    l.granted_ms = 1700000000123ull;
    l.until_ms = 1700003600123ull;
    l.warned = true;
    return l;
}

static void assert_same(const ctl_lease *a, const ctl_lease *b)
{
    assert_string_equal(a->serial, b->serial);
    assert_string_equal(a->client, b->client);
    assert_string_equal(a->kind, b->kind);
    assert_string_equal(a->worker, b->worker);
    assert_string_equal(a->tag, b->tag);
    assert_int_equal(a->args_len, b->args_len);
    if (a->args_len)
        assert_memory_equal(a->args, b->args, a->args_len);
    assert_true(a->lease_id == b->lease_id);
    assert_true(a->granted_ms == b->granted_ms);
    assert_true(a->until_ms == b->until_ms);
    assert_int_equal(a->warned, b->warned);
}

static void round_trip(void **state)
{
    (void)state;
    static uint8_t args[CTL_ARGS_MAX];
    size_t sizes[] = { 0, 1, 31, 32, 255, 256, 4095, CTL_ARGS_MAX };
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        ctl_lease l = full_lease(args, sizes[i]), d;
        store_lease_buf buf;
        char err[256];
        assert_int_equal(store_lease_encode(&l, &buf, err, sizeof err), 0);
        assert_int_equal(store_lease_decode(l.serial, strlen(l.serial), buf.buf, buf.len, &d, err, sizeof err), 0);
        assert_same(&l, &d);
    }
}

/* The optional tag: absent when empty (records written before tags read the same),
 * kept when set, checked like the other strings. */
static void tag_round_trip(void **state)
{
    (void)state;
    uint8_t args[8];
    ctl_lease l = full_lease(args, 8), d;
    store_lease_buf plain, tagged;
    char err[256];
    assert_int_equal(store_lease_encode(&l, &plain, err, sizeof err), 0);
    assert_int_equal(plain.buf[0], 0x8a); /* a map of 10: no "t" */
    strcpy(l.tag, "dcss client 7: run {12} \"q\"");
    assert_int_equal(store_lease_encode(&l, &tagged, err, sizeof err), 0);
    assert_int_equal(tagged.buf[0], 0x8b);
    assert_int_equal(store_lease_decode(l.serial, strlen(l.serial), tagged.buf, tagged.len, &d, err, sizeof err), 0);
    assert_same(&l, &d);
    memset(&d, 0, sizeof d);
    assert_int_equal(store_lease_decode(l.serial, strlen(l.serial), plain.buf, plain.len, &d, err, sizeof err), 0);
    assert_string_equal(d.tag, "");
    strcpy(l.tag, "bad \xc0\x80");
    l.tag[4] = (char)0xc0;
    l.tag[5] = (char)0x80;
    l.tag[6] = 0;
    assert_int_equal(store_lease_encode(&l, &tagged, err, sizeof err), -1);
    assert_non_null(strstr(err, "tag is not valid UTF-8"));
}

/* Every field at its limit still fits the fixed buffer. */
static void limits_fit(void **state)
{
    (void)state;
    static uint8_t args[CTL_ARGS_MAX];
    ctl_lease l = full_lease(args, CTL_ARGS_MAX), d;
    memset(l.serial, 'S', CTL_SERIAL_MAX);
    l.serial[CTL_SERIAL_MAX] = 0;
    memset(l.client, 'c', CTL_CLIENT_MAX);
    l.client[CTL_CLIENT_MAX] = 0;
    memset(l.kind, 'k', CTL_KIND_MAX);
    l.kind[CTL_KIND_MAX] = 0;
    memset(l.worker, 'w', CTL_WORKER_MAX);
    l.worker[CTL_WORKER_MAX] = 0;
    memset(l.tag, 't', CTL_TAG_MAX);
    l.tag[CTL_TAG_MAX] = 0;
    store_lease_buf buf;
    char err[256];
    assert_int_equal(store_lease_encode(&l, &buf, err, sizeof err), 0);
    assert_true(buf.len <= STORE_LEASE_ENC_MAX);
    assert_int_equal(store_lease_decode(l.serial, strlen(l.serial), buf.buf, buf.len, &d, err, sizeof err), 0);
    assert_same(&l, &d);
}

static void encode_rejects(void **state)
{
    (void)state;
    uint8_t args[8];
    char err[256];
    store_lease_buf buf;
    ctl_lease l = full_lease(args, 8);
    l.serial[0] = 0;
    assert_int_equal(store_lease_encode(&l, &buf, err, sizeof err), -1);
    assert_non_null(strstr(err, "serial is empty"));
    l = full_lease(args, 8);
    strcpy(l.client, "bad \xc0\x80 overlong");
    assert_int_equal(store_lease_encode(&l, &buf, err, sizeof err), -1);
    assert_non_null(strstr(err, "client is not valid UTF-8"));
    strcpy(l.client, "surrogate \xed\xa0\x80");
    assert_int_equal(store_lease_encode(&l, &buf, err, sizeof err), -1);
    strcpy(l.client, "cut \xe2\x82");
    assert_int_equal(store_lease_encode(&l, &buf, err, sizeof err), -1);
    strcpy(l.client, "beyond \xf4\x90\x80\x80");
    assert_int_equal(store_lease_encode(&l, &buf, err, sizeof err), -1);
    l = full_lease(args, 8);
    l.args_len = CTL_ARGS_MAX + 1;
    assert_int_equal(store_lease_encode(&l, &buf, err, sizeof err), -1);
    assert_non_null(strstr(err, "args are 4097 bytes"));
    l = full_lease(args, 8);
    l.args = NULL;
    assert_int_equal(store_lease_encode(&l, &buf, err, sizeof err), -1);
    /* An unterminated oversize array is caught without reading past it. */
    l = full_lease(args, 8);
    memset(l.worker, 'w', sizeof l.worker);
    assert_int_equal(store_lease_check(&l, err, sizeof err), -1);
    assert_non_null(strstr(err, "worker is"));
}

/* A hand-built record: each field as key + (type, value), for malformed shapes. */
typedef struct {
    const char *key;
    char type; /* u uint, s str, b bin, t bool, n nil, i negative int, a empty array */
    uint64_t u;
    const char *s;
    size_t len;
} fld;

static size_t build(uint8_t *out, size_t cap, const fld *f, size_t n, long map_count)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, map_count >= 0 ? (size_t)map_count : n);
    for (size_t i = 0; i < n; i++) {
        msgpack_pack_str(&pk, strlen(f[i].key));
        msgpack_pack_str_body(&pk, f[i].key, strlen(f[i].key));
        switch (f[i].type) {
        case 'u':
            msgpack_pack_uint64(&pk, f[i].u);
            break;
        case 's':
            msgpack_pack_str(&pk, f[i].len);
            msgpack_pack_str_body(&pk, f[i].s, f[i].len);
            break;
        case 'b':
            msgpack_pack_bin(&pk, f[i].len);
            msgpack_pack_bin_body(&pk, f[i].s, f[i].len);
            break;
        case 't':
            msgpack_pack_true(&pk);
            break;
        case 'i':
            msgpack_pack_int64(&pk, -5);
            break;
        case 'a':
            msgpack_pack_array(&pk, 0);
            break;
        default:
            msgpack_pack_nil(&pk);
            break;
        }
    }
    assert_true(sb.size <= cap);
    memcpy(out, sb.data, sb.size);
    size_t len = sb.size;
    msgpack_sbuffer_destroy(&sb);
    return len;
}

#define S(k, v)                                                                                                        \
    {                                                                                                                  \
        k, 's', 0, v, sizeof v - 1                                                                                     \
    }
static const fld good[] = {
    { "v", 'u', 1, NULL, 0 },
    S("s", "SER1"),
    S("c", "bob"),
    S("k", "pulsecount"),
    S("w", "w1"),
    { "a", 'b', 0, "\x80", 1 },
    { "id", 'u', 7, NULL, 0 },
    { "g", 'u', 100, NULL, 0 },
    { "u", 'u', 200, NULL, 0 },
    { "wn", 't', 0, NULL, 0 },
};
#define NGOOD (sizeof good / sizeof *good)

/* Decodes fields under key SER1; returns the rc and leaves the reason in err. */
static int dec(const fld *f, size_t n, long count, char *err, size_t errlen)
{
    uint8_t buf[8192];
    size_t len = build(buf, sizeof buf, f, n, count);
    ctl_lease l;
    int rc = store_lease_decode("SER1", 4, buf, len, &l, err, errlen);
    if (rc)
        assert_string_equal(l.serial, ""); /* a failed decode leaves nothing half-filled */
    return rc;
}

static void expect_reject(const fld *f, size_t n, long count, const char *why)
{
    char err[256] = "";
    assert_int_equal(dec(f, n, count, err, sizeof err), -1);
    if (!strstr(err, why))
        fail_msg("expected \"%s\" in \"%s\"", why, err);
}

static void decode_good(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(dec(good, NGOOD, -1, err, sizeof err), 0);
}

static void decode_missing_each(void **state)
{
    (void)state;
    for (size_t skip = 1; skip < NGOOD; skip++) {
        fld f[NGOOD];
        size_t n = 0;
        for (size_t i = 0; i < NGOOD; i++)
            if (i != skip)
                f[n++] = good[i];
        char want[64];
        snprintf(want, sizeof want, "missing key \"%s\"", good[skip].key);
        expect_reject(f, n, -1, want);
    }
}

static void decode_wrong_type_each(void **state)
{
    (void)state;
    const char wrong[] = { 'n', 'i', 'a', 'b', 's', 't' };
    for (size_t at = 0; at < NGOOD; at++) {
        for (size_t w = 0; w < sizeof wrong; w++) {
            fld f[NGOOD];
            memcpy(f, good, sizeof f);
            if (f[at].type == wrong[w])
                continue;
            f[at].type = wrong[w];
            f[at].s = "x";
            f[at].len = 1;
            char err[256];
            assert_int_equal(dec(f, NGOOD, -1, err, sizeof err), -1);
        }
    }
    fld f[NGOOD];
    memcpy(f, good, sizeof f);
    f[6].type = 's';
    f[6].s = "7";
    f[6].len = 1;
    expect_reject(f, NGOOD, -1, "field id: expected uint, found str");
}

static void decode_versions_and_keys(void **state)
{
    (void)state;
    fld f[NGOOD + 1];
    memcpy(f, good, sizeof good);
    f[0].u = 2;
    expect_reject(f, NGOOD, -1, "unsupported version 2");
    /* Version must come first: readers must know it before the rest. */
    memcpy(f, good, sizeof good);
    f[0] = good[1];
    f[1] = good[0];
    expect_reject(f, NGOOD, -1, "first key is not \"v\"");
    memcpy(f, good, sizeof good);
    f[NGOOD] = (fld){ "zz", 'u', 1, NULL, 0 };
    expect_reject(f, NGOOD + 1, -1, "unknown key \"zz\"");
    f[NGOOD] = (fld){ "\x01\x02", 'u', 1, NULL, 0 };
    expect_reject(f, NGOOD + 1, -1, "unknown key of 2 bytes");
    f[NGOOD] = good[2];
    expect_reject(f, NGOOD + 1, -1, "repeated key \"c\"");
    expect_reject(good, 0, -1, "empty map");
    /* The value's serial must be the key it is stored under. */
    uint8_t buf[512];
    size_t len = build(buf, sizeof buf, good, NGOOD, -1);
    ctl_lease l;
    char err[256];
    assert_int_equal(store_lease_decode("SER2", 4, buf, len, &l, err, sizeof err), -1);
    assert_non_null(strstr(err, "does not match its key"));
}

static void decode_sizes(void **state)
{
    (void)state;
    static char big[CTL_ARGS_MAX + 2];
    memset(big, 'x', sizeof big);
    fld f[NGOOD];
    memcpy(f, good, sizeof f);
    f[2].s = big;
    f[2].len = CTL_CLIENT_MAX + 1;
    char want[64];
    snprintf(want, sizeof want, "client is %d bytes (max %d)", CTL_CLIENT_MAX + 1, CTL_CLIENT_MAX);
    expect_reject(f, NGOOD, -1, want);
    memcpy(f, good, sizeof f);
    f[1].len = 0;
    expect_reject(f, NGOOD, -1, "serial is empty");
    memcpy(f, good, sizeof f);
    f[5].s = big;
    f[5].len = CTL_ARGS_MAX + 1;
    expect_reject(f, NGOOD, -1, "args are 4097 bytes");
    memcpy(f, good, sizeof f);
    f[2].s = "a\0b";
    f[2].len = 3;
    expect_reject(f, NGOOD, -1, "client is not valid UTF-8");
}

static void decode_trailing_and_lies(void **state)
{
    (void)state;
    uint8_t buf[600];
    size_t len = build(buf, sizeof buf, good, NGOOD, -1);
    buf[len] = 0xc0;
    ctl_lease l;
    char err[256];
    assert_int_equal(store_lease_decode("SER1", 4, buf, len + 1, &l, err, sizeof err), -1);
    assert_non_null(strstr(err, "1 trailing bytes"));
    /* A map declaring more entries than exist. */
    expect_reject(good, NGOOD, NGOOD + 1, "truncated");
    /* Fewer entries than present: the rest is trailing garbage or missing keys. */
    expect_reject(good, NGOOD, NGOOD - 1, "missing key");
    /* Count bombs: msgpack-c would allocate these; we refuse from the header. */
    const uint8_t map_bomb[] = { 0xdf, 0x7f, 0xff, 0xff, 0xff, 0x01 };
    assert_int_equal(store_lease_decode("SER1", 4, map_bomb, sizeof map_bomb, &l, err, sizeof err), -1);
    assert_non_null(strstr(err, "map declares 2147483647 entries"));
    const uint8_t str_bomb[] = { 0x81, 0xdb, 0xff, 0xff, 0xff, 0xff, 'v' };
    assert_int_equal(store_lease_decode("SER1", 4, str_bomb, sizeof str_bomb, &l, err, sizeof err), -1);
    assert_non_null(strstr(err, "str of 4294967295 bytes"));
    const uint8_t not_map[] = { 0x93, 1, 2, 3 };
    assert_int_equal(store_lease_decode("SER1", 4, not_map, sizeof not_map, &l, err, sizeof err), -1);
    assert_non_null(strstr(err, "expected map, found array"));
    assert_int_equal(store_lease_decode("SER1", 4, "", 0, &l, err, sizeof err), -1);
    assert_non_null(strstr(err, "found end of data"));
    static uint8_t huge[STORE_LEASE_ENC_MAX + 1];
    assert_int_equal(store_lease_decode("SER1", 4, huge, sizeof huge, &l, err, sizeof err), -1);
    assert_non_null(strstr(err, "record is 5121 bytes"));
}

/* Every prefix and thousands of random mutations of a valid record: each is
 * either decoded (and then valid) or rejected, never a crash (ASan watches). */
static void decode_never_crashes(void **state)
{
    (void)state;
    uint8_t args[40];
    ctl_lease l = full_lease(args, sizeof args), d;
    store_lease_buf buf;
    char err[256];
    assert_int_equal(store_lease_encode(&l, &buf, err, sizeof err), 0);
    for (size_t n = 0; n < buf.len; n++)
        assert_int_equal(store_lease_decode(l.serial, strlen(l.serial), buf.buf, n, &d, err, sizeof err), -1);
    uint32_t x = 12345;
    uint8_t m[STORE_LEASE_ENC_MAX];
    for (int round = 0; round < 20000; round++) {
        memcpy(m, buf.buf, buf.len);
        int flips = 1 + round % 4;
        for (int k = 0; k < flips; k++) {
            x = x * 1103515245u + 12345u;
            m[(x >> 8) % buf.len] = (uint8_t)(x >> 20);
        }
        if (store_lease_decode(l.serial, strlen(l.serial), m, buf.len, &d, err, sizeof err) == 0) {
            assert_true(store_lease_check(&d, err, sizeof err) == 0);
            assert_true(d.args_len <= CTL_ARGS_MAX);
        } else {
            assert_true(err[0] != '\0');
        }
    }
}

static void mp_reader_messages(void **state)
{
    (void)state;
    ifm_mp r;
    char err[128];
    const uint8_t b[] = { 0xcb, 0, 0, 0, 0, 0, 0, 0, 0 };
    ifm_mp_init(&r, b, sizeof b, err, sizeof err);
    uint64_t v;
    assert_int_equal(ifm_mp_uint(&r, &v), IFM_EBADMSG);
    assert_string_equal(err, "expected uint, found float at byte 0");
    assert_int_equal(r.off, 0);
    const uint8_t t[] = { 0xcf, 1, 2 };
    ifm_mp_init(&r, t, sizeof t, err, sizeof err);
    assert_int_equal(ifm_mp_uint(&r, &v), IFM_EBADMSG);
    assert_string_equal(err, "truncated: uint of 8 bytes but only 2 bytes remain at byte 0");
    const uint8_t ok[] = { 0xcd, 0x12, 0x34, 0xc3, 0xc4, 0x01, 0xaa };
    ifm_mp_init(&r, ok, sizeof ok, err, sizeof err);
    bool bv;
    const uint8_t *bin;
    uint32_t bl;
    assert_int_equal(ifm_mp_uint(&r, &v), 0);
    assert_int_equal(v, 0x1234);
    assert_int_equal(ifm_mp_bool(&r, &bv), 0);
    assert_true(bv);
    assert_int_equal(ifm_mp_bin(&r, &bin, &bl), 0);
    assert_int_equal(bl, 1);
    assert_int_equal(bin[0], 0xaa);
    assert_true(ifm_mp_done(&r));
    const uint8_t reserved[] = { 0xc1 };
    ifm_mp_init(&r, reserved, 1, err, sizeof err);
    assert_int_equal(ifm_mp_bool(&r, &bv), IFM_EBADMSG);
    assert_non_null(strstr(err, "reserved byte 0xc1"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip),
        cmocka_unit_test(tag_round_trip),
        cmocka_unit_test(limits_fit),
        cmocka_unit_test(encode_rejects),
        cmocka_unit_test(decode_good),
        cmocka_unit_test(decode_missing_each),
        cmocka_unit_test(decode_wrong_type_each),
        cmocka_unit_test(decode_versions_and_keys),
        cmocka_unit_test(decode_sizes),
        cmocka_unit_test(decode_trailing_and_lies),
        cmocka_unit_test(decode_never_crashes),
        cmocka_unit_test(mp_reader_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
