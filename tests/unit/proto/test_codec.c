/* libicefarm-proto codec: the non-allocating msgpack scanner, ifm_doc_parse and
 * every field accessor. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "icefarm/codec.h"

typedef struct {
    const char *name;
    const uint8_t *p;
    size_t n;
} sample;

#define S(name, ...)                                                                                                   \
    {                                                                                                                  \
        name, (const uint8_t[]){ __VA_ARGS__ }, sizeof((const uint8_t[]){ __VA_ARGS__ })                               \
    }

/* One valid encoding of every msgpack type (and each length variant). */
static const sample valid[] = {
    S("positive fixint 0", 0x00),
    S("positive fixint 127", 0x7f),
    S("negative fixint -32", 0xe0),
    S("negative fixint -1", 0xff),
    S("nil", 0xc0),
    S("false", 0xc2),
    S("true", 0xc3),
    S("empty fixmap", 0x80),
    S("fixmap 1", 0x81, 0xa1, 'k', 0x01),
    S("fixmap 15", 0x8f, 0x00, 0x00, 0x01, 0x00, 0x02, 0x00, 0x03, 0x00, 0x04, 0x00, 0x05, 0x00, 0x06, 0x00, 0x07, 0x00,
      0x08, 0x00, 0x09, 0x00, 0x0a, 0x00, 0x0b, 0x00, 0x0c, 0x00, 0x0d, 0x00, 0x0e, 0x00),
    S("empty fixarray", 0x90),
    S("fixarray 2", 0x92, 0x01, 0xc0),
    S("empty fixstr", 0xa0),
    S("fixstr 3", 0xa3, 'a', 'b', 'c'),
    S("fixstr 31", 0xbf, 'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a',
      'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a'),
    S("bin8", 0xc4, 0x02, 0xde, 0xad),
    S("bin8 empty", 0xc4, 0x00),
    S("bin16", 0xc5, 0x00, 0x02, 0xbe, 0xef),
    S("bin32", 0xc6, 0x00, 0x00, 0x00, 0x01, 0x42),
    S("ext8", 0xc7, 0x02, 0x05, 0x01, 0x02),
    S("ext8 empty", 0xc7, 0x00, 0x05),
    S("ext16", 0xc8, 0x00, 0x01, 0x05, 0x01),
    S("ext32", 0xc9, 0x00, 0x00, 0x00, 0x01, 0x05, 0x01),
    S("float32", 0xca, 0x3f, 0xc0, 0x00, 0x00),
    S("float64", 0xcb, 0x3f, 0xf8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00),
    S("uint8", 0xcc, 0xff),
    S("uint16", 0xcd, 0xff, 0xff),
    S("uint32", 0xce, 0xff, 0xff, 0xff, 0xff),
    S("uint64", 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
    S("int8", 0xd0, 0x80),
    S("int16", 0xd1, 0x80, 0x00),
    S("int32", 0xd2, 0x80, 0x00, 0x00, 0x00),
    S("int64", 0xd3, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00),
    S("fixext1", 0xd4, 0x01, 0xaa),
    S("fixext2", 0xd5, 0x01, 0xaa, 0xbb),
    S("fixext4", 0xd6, 0x01, 0xaa, 0xbb, 0xcc, 0xdd),
    S("fixext8", 0xd7, 0x01, 1, 2, 3, 4, 5, 6, 7, 8),
    S("fixext16", 0xd8, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16),
    S("str8", 0xd9, 0x02, 'h', 'i'),
    S("str8 empty", 0xd9, 0x00),
    S("str16", 0xda, 0x00, 0x02, 'h', 'i'),
    S("str32", 0xdb, 0x00, 0x00, 0x00, 0x02, 'h', 'i'),
    S("array16", 0xdc, 0x00, 0x02, 0x01, 0x02),
    S("array16 empty", 0xdc, 0x00, 0x00),
    S("array32", 0xdd, 0x00, 0x00, 0x00, 0x01, 0xc3),
    S("map16", 0xde, 0x00, 0x01, 0xa1, 'a', 0x01),
    S("map16 empty", 0xde, 0x00, 0x00),
    S("map32", 0xdf, 0x00, 0x00, 0x00, 0x01, 0xa1, 'a', 0xc0),
    S("nested", 0x82, 0xa1, 'a', 0x92, 0x01, 0x81, 0xa1, 'b', 0xc0, 0xa1, 'c', 0x90),
};

static void test_scan_valid_every_type(void **state)
{
    for (size_t i = 0; i < sizeof valid / sizeof *valid; i++) {
        ifm_err err = { "" };
        int rc = ifm_msgpack_scan(valid[i].p, valid[i].n, IFM_MAX_DEPTH, &err);
        if (rc != 0)
            fail_msg("%s: rejected: %s", valid[i].name, err.msg);
        /* msgpack-c agrees that it is exactly one object */
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        size_t off = 0;
        assert_int_equal(msgpack_unpack_next(&up, (const char *)valid[i].p, valid[i].n, &off), MSGPACK_UNPACK_SUCCESS);
        assert_int_equal(off, valid[i].n);
        msgpack_unpacked_destroy(&up);
    }
}

/* Every strict prefix of every valid value is truncated, and every value with a
 * byte appended has trailing garbage. */
static void test_scan_truncated_and_trailing(void **state)
{
    for (size_t i = 0; i < sizeof valid / sizeof *valid; i++) {
        const sample *s = &valid[i];
        for (size_t n = 0; n < s->n; n++) {
            ifm_err err = { "" };
            /* copy so ASan catches any read past the prefix */
            uint8_t *copy = malloc(n ? n : 1);
            memcpy(copy, s->p, n);
            int rc = ifm_msgpack_scan(copy, n, IFM_MAX_DEPTH, &err);
            free(copy);
            if (rc != -1)
                fail_msg("%s: prefix of %zu/%zu bytes accepted", s->name, n, s->n);
            if (n == 0)
                assert_non_null(strstr(err.msg, "empty"));
            else if (!strstr(err.msg, "truncated") && !strstr(err.msg, "remain"))
                fail_msg("%s: prefix %zu: unexpected reason \"%s\"", s->name, n, err.msg);
        }
        uint8_t *more = malloc(s->n + 1);
        memcpy(more, s->p, s->n);
        more[s->n] = 0xc0;
        ifm_err err = { "" };
        assert_int_equal(ifm_msgpack_scan(more, s->n + 1, IFM_MAX_DEPTH, &err), -1);
        assert_non_null(strstr(err.msg, "trailing"));
        free(more);
    }
}

static void expect_scan_error(const uint8_t *p, size_t n, int depth, const char *needle)
{
    ifm_err err = { "" };
    uint8_t *copy = malloc(n);
    memcpy(copy, p, n);
    int rc = ifm_msgpack_scan(copy, n, depth, &err);
    free(copy);
    assert_int_equal(rc, -1);
    if (needle && !strstr(err.msg, needle))
        fail_msg("expected \"%s\" in \"%s\"", needle, err.msg);
}

#define EXPECT_SCAN_ERROR(needle, ...)                                                                                 \
    expect_scan_error((const uint8_t[]){ __VA_ARGS__ }, sizeof((const uint8_t[]){ __VA_ARGS__ }), IFM_MAX_DEPTH, needle)

static void test_scan_malformed(void **state)
{
    ifm_err err = { "" };
    assert_int_equal(ifm_msgpack_scan("", 0, IFM_MAX_DEPTH, &err), -1);
    assert_non_null(strstr(err.msg, "empty"));
    assert_int_equal(ifm_msgpack_scan(NULL, 0, IFM_MAX_DEPTH, NULL), -1); /* err may be NULL */

    EXPECT_SCAN_ERROR("0xc1", 0xc1);
    EXPECT_SCAN_ERROR("0xc1", 0x91, 0xc1);
    EXPECT_SCAN_ERROR("0xc1", 0x81, 0xa1, 'k', 0xc1);
    EXPECT_SCAN_ERROR("trailing", 0xc0, 0xc0);
    EXPECT_SCAN_ERROR("trailing", 0x80, 0x00);
    EXPECT_SCAN_ERROR("trailing", 0x81, 0xa1, 'a', 0x01, 0xff);
    /* containers claiming far more entries than bytes remain: no allocation, clean error */
    EXPECT_SCAN_ERROR("declares", 0xdd, 0xff, 0xff, 0xff, 0xff);
    EXPECT_SCAN_ERROR("declares", 0xdd, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00);
    EXPECT_SCAN_ERROR("declares", 0xdf, 0xff, 0xff, 0xff, 0xff);
    EXPECT_SCAN_ERROR("declares", 0xdf, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00);
    EXPECT_SCAN_ERROR("declares", 0xdc, 0xff, 0xff, 0x00);
    EXPECT_SCAN_ERROR("declares", 0xde, 0xff, 0xff, 0x00, 0x00);
    EXPECT_SCAN_ERROR("declares", 0x9f, 0x00);
    EXPECT_SCAN_ERROR("declares", 0x81, 0x00);                               /* map of 1 needs 2 objects */
    EXPECT_SCAN_ERROR("declares", 0x92, 0xdd, 0x00, 0x01, 0x00, 0x00, 0x00); /* inner huge */
    /* strings, bins and exts claiming more bytes than remain */
    EXPECT_SCAN_ERROR("truncated", 0xdb, 0xff, 0xff, 0xff, 0xff, 'a');
    EXPECT_SCAN_ERROR("truncated", 0xc6, 0xff, 0xff, 0xff, 0xff, 'a');
    EXPECT_SCAN_ERROR("truncated", 0xc9, 0xff, 0xff, 0xff, 0xff, 0x01, 'a');
    EXPECT_SCAN_ERROR("truncated", 0xc7, 0x01, 0x01);
    EXPECT_SCAN_ERROR("truncated", 0xbf, 'a');
    /* a container whose entries are cut off */
    EXPECT_SCAN_ERROR("declares", 0x92, 0x01);
    EXPECT_SCAN_ERROR("truncated", 0x82, 0xa1, 'a', 0x01, 0xa1);
    /* siblings after a nested container */
    EXPECT_SCAN_ERROR(NULL, 0x92, 0x91, 0x01);
}

static void nested_arrays(uint8_t *buf, int levels)
{
    for (int i = 0; i < levels; i++)
        buf[i] = 0x91;
    buf[levels] = 0x00;
}

static void test_scan_depth(void **state)
{
    uint8_t buf[64];
    ifm_err err;
    /* IFM_MAX_DEPTH non-empty containers nest fine; one more does not */
    nested_arrays(buf, IFM_MAX_DEPTH);
    assert_int_equal(ifm_msgpack_scan(buf, IFM_MAX_DEPTH + 1, IFM_MAX_DEPTH, &err), 0);
    nested_arrays(buf, IFM_MAX_DEPTH + 1);
    assert_int_equal(ifm_msgpack_scan(buf, IFM_MAX_DEPTH + 2, IFM_MAX_DEPTH, &err), -1);
    assert_non_null(strstr(err.msg, "deeper"));
    /* far deeper, and maps */
    nested_arrays(buf, 60);
    assert_int_equal(ifm_msgpack_scan(buf, 61, IFM_MAX_DEPTH, &err), -1);
    uint8_t maps[64];
    size_t n = 0;
    for (int i = 0; i < IFM_MAX_DEPTH + 1; i++) {
        maps[n++] = 0x81;
        maps[n++] = 0xa0;
    }
    maps[n++] = 0xc0;
    assert_int_equal(ifm_msgpack_scan(maps, n, IFM_MAX_DEPTH, &err), -1);
    assert_non_null(strstr(err.msg, "deeper"));
    assert_int_equal(ifm_msgpack_scan(maps + 2, n - 2, IFM_MAX_DEPTH, &err), 0);
    /* a larger max_depth is clamped to IFM_MAX_DEPTH */
    nested_arrays(buf, IFM_MAX_DEPTH + 1);
    assert_int_equal(ifm_msgpack_scan(buf, IFM_MAX_DEPTH + 2, 1000, &err), -1);
    /* smaller limits */
    nested_arrays(buf, 2);
    assert_int_equal(ifm_msgpack_scan(buf, 3, 2, &err), 0);
    assert_int_equal(ifm_msgpack_scan(buf, 3, 1, &err), -1);
    assert_int_equal(ifm_msgpack_scan(buf + 2, 1, 0, &err), 0);  /* a scalar at depth 0 */
    assert_int_equal(ifm_msgpack_scan(buf + 1, 2, 0, &err), -1); /* a container at depth 0 */
    /* empty containers do not count as a level */
    uint8_t empty_inside[IFM_MAX_DEPTH + 1];
    memset(empty_inside, 0x91, IFM_MAX_DEPTH);
    empty_inside[IFM_MAX_DEPTH] = 0x90;
    assert_int_equal(ifm_msgpack_scan(empty_inside, sizeof empty_inside, IFM_MAX_DEPTH, &err), 0);
}

/* ---- ifm_doc_parse ---- */

static int parse_bytes(const uint8_t *p, size_t n, ifm_err *err)
{
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, p, n);
    ifm_doc doc;
    int rc = ifm_doc_parse(&doc, copy, n, err);
    if (rc == 0)
        assert_non_null(doc.root);
    else
        assert_null(doc.root);
    ifm_doc_free(&doc);
    free(copy);
    return rc;
}

static void check_parse(int line, int want, const char *needle, const uint8_t *p, size_t n)
{
    ifm_err err = { "" };
    int rc = parse_bytes(p, n, &err);
    if (rc != want)
        fail_msg("line %d: ifm_doc_parse returned %d (%s)", line, rc, err.msg);
    if (needle && !strstr(err.msg, needle))
        fail_msg("line %d: expected \"%s\" in \"%s\"", line, needle, err.msg);
}

#define EXPECT_PARSE(rc, needle, ...)                                                                                  \
    check_parse(__LINE__, rc, needle, (const uint8_t[]){ __VA_ARGS__ }, sizeof((const uint8_t[]){ __VA_ARGS__ }))

static void test_doc_parse(void **state)
{
    EXPECT_PARSE(0, NULL, 0x81, 0xa1, 'v', 0x01);
    EXPECT_PARSE(0, NULL, 0x82, 0xa1, 'v', 0x01, 0xa1, 'x', 0xc0);
    /* non-map roots */
    EXPECT_PARSE(-1, "not a msgpack map", 0x91, 0x01);
    EXPECT_PARSE(-1, "not a msgpack map", 0x01);
    EXPECT_PARSE(-1, "not a msgpack map", 0xa1, 'v');
    EXPECT_PARSE(-1, "not a msgpack map", 0xc0);
    /* malformed */
    {
        ifm_err err = { "" };
        assert_int_equal(parse_bytes((const uint8_t *)"", 0, &err), -1);
        assert_non_null(strstr(err.msg, "empty"));
    }
    EXPECT_PARSE(-1, "trailing", 0x81, 0xa1, 'v', 0x01, 0x00);
    EXPECT_PARSE(-1, "truncated", 0x81, 0xa1, 'v');
    EXPECT_PARSE(-1, "0xc1", 0x81, 0xa1, 'v', 0xc1);
    /* version */
    EXPECT_PARSE(-1, "missing field \"v\"", 0x80);
    EXPECT_PARSE(-1, "missing field \"v\"", 0x81, 0xa1, 'x', 0x01);
    EXPECT_PARSE(-1, "missing field \"v\"", 0x81, 0xa1, 'v', 0xc0);
    EXPECT_PARSE(-1, "version 2", 0x81, 0xa1, 'v', 0x02);
    EXPECT_PARSE(-1, "version 0", 0x81, 0xa1, 'v', 0x00);
    EXPECT_PARSE(-1, "\"v\"", 0x81, 0xa1, 'v', 0xff);                               /* -1 */
    EXPECT_PARSE(-1, "\"v\"", 0x81, 0xa1, 'v', 0xa1, '1');                          /* "1" */
    EXPECT_PARSE(-1, "\"v\"", 0x81, 0xa1, 'v', 0xc3);                               /* true */
    EXPECT_PARSE(-1, "\"v\"", 0x81, 0xa1, 'v', 0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0); /* 1.0 */
    EXPECT_PARSE(-1, "\"v\"", 0x81, 0xa1, 'v', 0xcf, 0, 0, 0, 1, 0, 0, 0, 1);       /* > UINT32_MAX */
    /* duplicate keys, at the root and nested */
    EXPECT_PARSE(-1, "duplicate key \"v\"", 0x82, 0xa1, 'v', 0x01, 0xa1, 'v', 0x01);
    EXPECT_PARSE(-1, "duplicate key \"a\"", 0x83, 0xa1, 'v', 0x01, 0xa1, 'a', 0x01, 0xa1, 'a', 0x02);
    EXPECT_PARSE(-1, "duplicate key \"b\"", 0x82, 0xa1, 'v', 0x01, 0xa1, 'm', 0x82, 0xa1, 'b', 0x01, 0xa1, 'b', 0xc0);
    EXPECT_PARSE(-1, "duplicate key \"c\"", 0x82, 0xa1, 'v', 0x01, 0xa1, 'x', 0x92, 0x80, 0x82, 0xa1, 'c', 0x01, 0xa1,
                 'c', 0x02);
    /* same key text in different maps is fine; keys differing only in length too */
    EXPECT_PARSE(0, NULL, 0x83, 0xa1, 'v', 0x01, 0xa1, 'a', 0x81, 0xa1, 'a', 0x01, 0xa2, 'a', 'a', 0x00);
    /* key equality is byte equality: str8 "a" duplicates fixstr "a" */
    EXPECT_PARSE(-1, "duplicate", 0x83, 0xa1, 'v', 0x01, 0xa1, 'a', 0x01, 0xd9, 0x01, 'a', 0x02);
    /* non-string keys, at the root and nested */
    EXPECT_PARSE(-1, "not a string", 0x82, 0x01, 0x02, 0xa1, 'v', 0x01);
    EXPECT_PARSE(-1, "not a string", 0x82, 0xa1, 'v', 0x01, 0xc4, 0x01, 'k', 0x01);
    EXPECT_PARSE(-1, "not a string", 0x82, 0xa1, 'v', 0x01, 0xa1, 'm', 0x81, 0xc0, 0x01);
    EXPECT_PARSE(-1, "not a string", 0x82, 0xa1, 'v', 0x01, 0xa1, 'm', 0x91, 0x81, 0x80, 0x01);
    /* huge claims never reach the allocator */
    EXPECT_PARSE(-1, "declares", 0x82, 0xa1, 'v', 0x01, 0xa1, 'x', 0xdd, 0xff, 0xff, 0xff, 0xff);
    EXPECT_PARSE(-1, "declares", 0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'v', 0x01);
}

static void test_doc_parse_limits(void **state)
{
    /* deeper than IFM_MAX_DEPTH */
    uint8_t deep[64];
    size_t n = 0;
    deep[n++] = 0x82;
    deep[n++] = 0xa1;
    deep[n++] = 'v';
    deep[n++] = 0x01;
    deep[n++] = 0xa1;
    deep[n++] = 'd';
    for (int i = 0; i < IFM_MAX_DEPTH; i++)
        deep[n++] = 0x91;
    deep[n++] = 0x00;
    ifm_err err;
    assert_int_equal(parse_bytes(deep, n, &err), -1);
    assert_non_null(strstr(err.msg, "deeper"));
    assert_int_equal(parse_bytes(deep, n - 1, &err), -1); /* truncated too */
    /* one level less (the root map counts as a level): fine */
    memmove(deep + 6, deep + 7, n - 7);
    assert_int_equal(parse_bytes(deep, n - 1, &err), 0);
    /* payload size limit: a valid map that is one byte too big */
    size_t big = IFM_MAX_PAYLOAD + 1;
    uint8_t *p = malloc(big);
    size_t hdr = 0;
    p[hdr++] = 0x82;
    p[hdr++] = 0xa1;
    p[hdr++] = 'v';
    p[hdr++] = 0x01;
    p[hdr++] = 0xa1;
    p[hdr++] = 'b';
    p[hdr++] = 0xc6;
    uint32_t blen = (uint32_t)(big - hdr - 4);
    p[hdr++] = (uint8_t)(blen >> 24);
    p[hdr++] = (uint8_t)(blen >> 16);
    p[hdr++] = (uint8_t)(blen >> 8);
    p[hdr++] = (uint8_t)blen;
    memset(p + hdr, 0xab, blen);
    ifm_doc doc;
    assert_int_equal(ifm_doc_parse(&doc, p, big, &err), -1);
    assert_non_null(strstr(err.msg, "limit"));
    ifm_doc_free(&doc);
    /* exactly at the limit is fine */
    blen--;
    p[7] = (uint8_t)(blen >> 24);
    p[8] = (uint8_t)(blen >> 16);
    p[9] = (uint8_t)(blen >> 8);
    p[10] = (uint8_t)blen;
    assert_int_equal(ifm_doc_parse(&doc, p, big - 1, &err), 0);
    const uint8_t *bin;
    size_t blen_out;
    assert_int_equal(ifm_get_bin(doc.root, "b", true, 0, SIZE_MAX, &bin, &blen_out, &err), 0);
    assert_int_equal(blen_out, blen);
    assert_ptr_equal(bin, p + 11); /* zero-copy */
    ifm_doc_free(&doc);
    free(p);
}

/* ---- accessors ---- */

typedef struct {
    ifm_enc enc;
    ifm_doc doc;
    const msgpack_object *root;
} fixture;

static const uint8_t BIN[] = { 1, 2, 3, 4, 5 };

static int setup_doc(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    ifm_enc_init(&f->enc);
    ifm_enc *e = &f->enc;
    ifm_enc_root(e, 22);
    ifm_enc_kstr(e, "s", "hello");
    ifm_enc_kstr(e, "empty", "");
    ifm_enc_key(e, "nil");
    ifm_enc_nil(e);
    ifm_enc_kuint(e, "u", 5);
    ifm_enc_kint(e, "neg", -3);
    ifm_enc_kuint(e, "max", UINT64_MAX);
    ifm_enc_kbool(e, "t", true);
    ifm_enc_kbool(e, "f", false);
    ifm_enc_kdouble(e, "d", 1.5);
    ifm_enc_key(e, "f32");
    msgpack_pack_float(&e->pk, 0.25f);
    ifm_enc_kdouble(e, "nan", NAN);
    ifm_enc_kdouble(e, "inf", -INFINITY);
    ifm_enc_kbin(e, "bin", BIN, sizeof BIN);
    ifm_enc_kbin(e, "bin0", NULL, 0);
    ifm_enc_key(e, "m");
    ifm_enc_map(e, 1);
    ifm_enc_kuint(e, "inner", 7);
    ifm_enc_key(e, "a");
    ifm_enc_array(e, 3);
    ifm_enc_uint(e, 1);
    ifm_enc_uint(e, 2);
    ifm_enc_uint(e, 3);
    ifm_enc_key(e, "nul");
    ifm_enc_strn(e, "a\0b", 3);
    ifm_enc_key(e, "long");
    char longs[300];
    memset(longs, 'x', sizeof longs - 1);
    longs[sizeof longs - 1] = '\0';
    ifm_enc_str(e, longs);
    ifm_enc_key(e, "ext");
    msgpack_pack_ext(&e->pk, 1, 1);
    msgpack_pack_ext_body(&e->pk, "x", 1);
    ifm_enc_key(e, "nulls");
    ifm_enc_str(e, NULL);        /* NULL encodes as "" */
    ifm_enc_kint(e, "small", 9); /* non-negative int64 packs as an unsigned integer */
    ifm_enc_key(e, "raw");
    ifm_enc_raw(e, (const uint8_t[]){ 0x92, 0xc3, 0xc2 }, 3);
    ifm_err err = { "" };
    if (ifm_doc_parse(&f->doc, ifm_enc_data(e), ifm_enc_size(e), &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    f->root = f->doc.root;
    *state = f;
    return 0;
}

static int teardown_doc(void **state)
{
    fixture *f = *state;
    ifm_doc_free(&f->doc);
    ifm_enc_free(&f->enc);
    free(f);
    return 0;
}

#define ERR_HAS(err, needle)                                                                                           \
    do {                                                                                                               \
        if (!strstr((err).msg, (needle)))                                                                              \
            fail_msg("expected \"%s\" in \"%s\"", (needle), (err).msg);                                                \
    } while (0)

static void test_map_get(void **state)
{
    fixture *f = *state;
    assert_non_null(ifm_map_get(f->root, "s"));
    assert_null(ifm_map_get(f->root, "zz"));
    assert_null(ifm_map_get(f->root, "")); /* no empty key */
    assert_null(ifm_map_get(f->root, "hello"));
    assert_null(ifm_map_get(NULL, "s"));
    assert_null(ifm_map_get(ifm_map_get(f->root, "a"), "s")); /* not a map */
    assert_null(ifm_map_get(f->root, "sx"));                  /* prefix match is no match */
    assert_null(ifm_map_get(f->root, "S"));                   /* case sensitive */
    const msgpack_object *m = ifm_map_get(f->root, "m");
    assert_non_null(ifm_map_get(m, "inner"));
    const msgpack_object *raw = ifm_map_get(f->root, "raw");
    assert_int_equal(raw->type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(raw->via.array.size, 2);
    assert_true(raw->via.array.ptr[0].via.boolean);
}

static void test_get_str(void **state)
{
    fixture *f = *state;
    ifm_err err = { "" };
    char out[64];
    assert_int_equal(ifm_get_str(f->root, "s", true, out, sizeof out, &err), 0);
    assert_string_equal(out, "hello");
    /* exact fit: 5 bytes + NUL */
    assert_int_equal(ifm_get_str(f->root, "s", true, out, 6, &err), 0);
    assert_string_equal(out, "hello");
    /* oversize */
    strcpy(out, "keep");
    assert_int_equal(ifm_get_str(f->root, "s", true, out, 5, &err), -1);
    ERR_HAS(err, "\"s\"");
    ERR_HAS(err, "5 bytes");
    assert_int_equal(ifm_get_str(f->root, "long", false, out, sizeof out, &err), -1);
    ERR_HAS(err, "\"long\"");
    /* missing */
    strcpy(out, "keep");
    assert_int_equal(ifm_get_str(f->root, "zz", true, out, sizeof out, &err), -1);
    ERR_HAS(err, "missing field \"zz\"");
    assert_int_equal(ifm_get_str(f->root, "zz", false, out, sizeof out, &err), 1);
    assert_string_equal(out, "keep");
    /* nil counts as missing */
    assert_int_equal(ifm_get_str(f->root, "nil", true, out, sizeof out, &err), -1);
    ERR_HAS(err, "missing field \"nil\"");
    assert_int_equal(ifm_get_str(f->root, "nil", false, out, sizeof out, &err), 1);
    assert_string_equal(out, "keep");
    /* wrong types */
    assert_int_equal(ifm_get_str(f->root, "u", true, out, sizeof out, &err), -1);
    ERR_HAS(err, "field \"u\" must be a string, got unsigned integer");
    assert_int_equal(ifm_get_str(f->root, "u", false, out, sizeof out, &err), -1);
    assert_int_equal(ifm_get_str(f->root, "bin", true, out, sizeof out, &err), -1);
    ERR_HAS(err, "got bin");
    assert_int_equal(ifm_get_str(f->root, "neg", true, out, sizeof out, &err), -1);
    ERR_HAS(err, "negative integer");
    assert_int_equal(ifm_get_str(f->root, "t", true, out, sizeof out, &err), -1);
    ERR_HAS(err, "got bool");
    assert_int_equal(ifm_get_str(f->root, "d", true, out, sizeof out, &err), -1);
    ERR_HAS(err, "got float");
    assert_int_equal(ifm_get_str(f->root, "m", true, out, sizeof out, &err), -1);
    ERR_HAS(err, "got map");
    assert_int_equal(ifm_get_str(f->root, "a", true, out, sizeof out, &err), -1);
    ERR_HAS(err, "got array");
    assert_int_equal(ifm_get_str(f->root, "ext", true, out, sizeof out, &err), -1);
    ERR_HAS(err, "got ext");
    /* embedded NUL */
    assert_int_equal(ifm_get_str(f->root, "nul", true, out, sizeof out, &err), -1);
    ERR_HAS(err, "\"nul\"");
    ERR_HAS(err, "NUL");
    assert_int_equal(ifm_get_str(f->root, "nul", false, out, sizeof out, &err), -1);
    /* empty: an error when required, fine when optional */
    assert_int_equal(ifm_get_str(f->root, "empty", true, out, sizeof out, &err), -1);
    ERR_HAS(err, "\"empty\" must not be empty");
    assert_int_equal(ifm_get_str(f->root, "empty", false, out, sizeof out, &err), 0);
    assert_string_equal(out, "");
    assert_int_equal(ifm_get_str(f->root, "nulls", false, out, sizeof out, &err), 0);
    assert_string_equal(out, "");
    /* a NULL err is allowed */
    assert_int_equal(ifm_get_str(f->root, "zz", true, out, sizeof out, NULL), -1);
    /* cap 1 only fits the empty string */
    assert_int_equal(ifm_get_str(f->root, "empty", false, out, 1, &err), 0);
    assert_int_equal(ifm_get_str(f->root, "s", false, out, 1, &err), -1);
}

static void test_get_strv(void **state)
{
    fixture *f = *state;
    ifm_err err = { "" };
    const char *p = NULL;
    size_t n = 99;
    assert_int_equal(ifm_get_strv(f->root, "s", true, &p, &n, 5, &err), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(p, "hello", 5);
    assert_true(p >= (const char *)ifm_enc_data(&f->enc) &&
                p < (const char *)ifm_enc_data(&f->enc) + ifm_enc_size(&f->enc));
    assert_int_equal(ifm_get_strv(f->root, "s", true, &p, &n, 4, &err), -1);
    ERR_HAS(err, "\"s\" is 5 bytes, at most 4");
    assert_int_equal(ifm_get_strv(f->root, "zz", true, &p, &n, 4, &err), -1);
    ERR_HAS(err, "missing field \"zz\"");
    p = NULL;
    assert_int_equal(ifm_get_strv(f->root, "zz", false, &p, &n, 4, &err), 1);
    assert_null(p);
    assert_int_equal(ifm_get_strv(f->root, "nil", false, &p, &n, 4, &err), 1);
    assert_int_equal(ifm_get_strv(f->root, "u", true, &p, &n, 4, &err), -1);
    ERR_HAS(err, "field \"u\" must be a string");
    assert_int_equal(ifm_get_strv(f->root, "empty", true, &p, &n, 4, &err), 0);
    assert_int_equal(n, 0);
    /* views are raw: NULs are the caller's business */
    assert_int_equal(ifm_get_strv(f->root, "nul", true, &p, &n, 4, &err), 0);
    assert_int_equal(n, 3);
}

static void test_get_uint(void **state)
{
    fixture *f = *state;
    ifm_err err = { "" };
    uint64_t v = 42;
    assert_int_equal(ifm_get_uint(f->root, "u", true, 0, 10, &v, &err), 0);
    assert_int_equal(v, 5);
    assert_int_equal(ifm_get_uint(f->root, "u", true, 5, 5, &v, &err), 0); /* bounds inclusive */
    v = 42;
    assert_int_equal(ifm_get_uint(f->root, "u", true, 6, 10, &v, &err), -1);
    ERR_HAS(err, "field \"u\" must be between 6 and 10, got 5");
    assert_int_equal(ifm_get_uint(f->root, "u", true, 0, 4, &v, &err), -1);
    ERR_HAS(err, "\"u\"");
    assert_int_equal(v, 42);
    assert_int_equal(ifm_get_uint(f->root, "max", true, 0, UINT64_MAX, &v, &err), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(ifm_get_uint(f->root, "max", true, 0, UINT32_MAX, &v, &err), -1);
    ERR_HAS(err, "\"max\"");
    assert_int_equal(ifm_get_uint(f->root, "small", true, 0, 10, &v, &err), 0);
    assert_int_equal(v, 9);
    /* negative */
    assert_int_equal(ifm_get_uint(f->root, "neg", true, 0, 10, &v, &err), -1);
    ERR_HAS(err, "field \"neg\" must be between 0 and 10, got -3");
    assert_int_equal(ifm_get_uint(f->root, "neg", false, 0, 10, &v, &err), -1);
    /* wrong types: strings, floats (even integral ones), bools */
    assert_int_equal(ifm_get_uint(f->root, "s", true, 0, 10, &v, &err), -1);
    ERR_HAS(err, "field \"s\" must be an integer, got string");
    assert_int_equal(ifm_get_uint(f->root, "d", true, 0, 10, &v, &err), -1);
    ERR_HAS(err, "got float");
    assert_int_equal(ifm_get_uint(f->root, "t", true, 0, 10, &v, &err), -1);
    ERR_HAS(err, "got bool");
    /* missing / nil */
    assert_int_equal(ifm_get_uint(f->root, "zz", true, 0, 10, &v, &err), -1);
    ERR_HAS(err, "missing field \"zz\"");
    v = 42;
    assert_int_equal(ifm_get_uint(f->root, "zz", false, 0, 10, &v, &err), 1);
    assert_int_equal(ifm_get_uint(f->root, "nil", false, 0, 10, &v, &err), 1);
    assert_int_equal(v, 42);
    assert_int_equal(ifm_get_uint(f->root, "nil", true, 0, 10, &v, &err), -1);
    ERR_HAS(err, "missing field \"nil\"");
}

static void test_get_bool(void **state)
{
    fixture *f = *state;
    ifm_err err = { "" };
    bool b = false;
    assert_int_equal(ifm_get_bool(f->root, "t", true, &b, &err), 0);
    assert_true(b);
    assert_int_equal(ifm_get_bool(f->root, "f", true, &b, &err), 0);
    assert_false(b);
    assert_int_equal(ifm_get_bool(f->root, "u", true, &b, &err), -1);
    ERR_HAS(err, "field \"u\" must be a bool, got unsigned integer");
    assert_int_equal(ifm_get_bool(f->root, "s", false, &b, &err), -1);
    ERR_HAS(err, "\"s\"");
    assert_int_equal(ifm_get_bool(f->root, "zz", true, &b, &err), -1);
    ERR_HAS(err, "missing field \"zz\"");
    b = true;
    assert_int_equal(ifm_get_bool(f->root, "zz", false, &b, &err), 1);
    assert_int_equal(ifm_get_bool(f->root, "nil", false, &b, &err), 1);
    assert_true(b);
}

static void test_get_double(void **state)
{
    fixture *f = *state;
    ifm_err err = { "" };
    double d = 0;
    assert_int_equal(ifm_get_double(f->root, "d", true, &d, &err), 0);
    assert_true(d == 1.5);
    assert_int_equal(ifm_get_double(f->root, "f32", true, &d, &err), 0);
    assert_true(d == 0.25);
    assert_int_equal(ifm_get_double(f->root, "u", true, &d, &err), 0); /* integers are numbers */
    assert_true(d == 5.0);
    assert_int_equal(ifm_get_double(f->root, "neg", true, &d, &err), 0);
    assert_true(d == -3.0);
    d = 7;
    assert_int_equal(ifm_get_double(f->root, "nan", true, &d, &err), -1);
    ERR_HAS(err, "field \"nan\" must be finite");
    assert_int_equal(ifm_get_double(f->root, "inf", false, &d, &err), -1);
    ERR_HAS(err, "field \"inf\" must be finite");
    assert_true(d == 7);
    assert_int_equal(ifm_get_double(f->root, "s", true, &d, &err), -1);
    ERR_HAS(err, "field \"s\" must be a number, got string");
    assert_int_equal(ifm_get_double(f->root, "t", true, &d, &err), -1);
    assert_int_equal(ifm_get_double(f->root, "zz", true, &d, &err), -1);
    ERR_HAS(err, "missing field \"zz\"");
    assert_int_equal(ifm_get_double(f->root, "zz", false, &d, &err), 1);
    assert_int_equal(ifm_get_double(f->root, "nil", false, &d, &err), 1);
    assert_true(d == 7);
}

static void test_get_bin(void **state)
{
    fixture *f = *state;
    ifm_err err = { "" };
    const uint8_t *p = NULL;
    size_t n = 0;
    assert_int_equal(ifm_get_bin(f->root, "bin", true, 1, 5, &p, &n, &err), 0);
    assert_int_equal(n, sizeof BIN);
    assert_memory_equal(p, BIN, sizeof BIN);
    assert_int_equal(ifm_get_bin(f->root, "bin", true, 6, 10, &p, &n, &err), -1);
    ERR_HAS(err, "field \"bin\" is 5 bytes, must be 6..10");
    assert_int_equal(ifm_get_bin(f->root, "bin", true, 0, 4, &p, &n, &err), -1);
    ERR_HAS(err, "\"bin\"");
    assert_int_equal(ifm_get_bin(f->root, "bin0", true, 0, 4, &p, &n, &err), 0);
    assert_int_equal(n, 0);
    assert_int_equal(ifm_get_bin(f->root, "bin0", true, 1, 4, &p, &n, &err), -1);
    ERR_HAS(err, "\"bin0\"");
    assert_int_equal(ifm_get_bin(f->root, "s", true, 0, 100, &p, &n, &err), -1);
    ERR_HAS(err, "field \"s\" must be bin, got string");
    assert_int_equal(ifm_get_bin(f->root, "zz", true, 0, 100, &p, &n, &err), -1);
    ERR_HAS(err, "missing field \"zz\"");
    p = NULL;
    assert_int_equal(ifm_get_bin(f->root, "zz", false, 0, 100, &p, &n, &err), 1);
    assert_int_equal(ifm_get_bin(f->root, "nil", false, 0, 100, &p, &n, &err), 1);
    assert_null(p);
}

static void test_get_map_array(void **state)
{
    fixture *f = *state;
    ifm_err err = { "" };
    const msgpack_object *o = NULL;
    assert_int_equal(ifm_get_map(f->root, "m", true, &o, &err), 0);
    assert_int_equal(o->type, MSGPACK_OBJECT_MAP);
    assert_int_equal(ifm_get_map(f->root, "a", true, &o, &err), -1);
    ERR_HAS(err, "field \"a\" must be a map, got array");
    assert_int_equal(ifm_get_map(f->root, "zz", true, &o, &err), -1);
    ERR_HAS(err, "missing field \"zz\"");
    o = NULL;
    assert_int_equal(ifm_get_map(f->root, "zz", false, &o, &err), 1);
    assert_int_equal(ifm_get_map(f->root, "nil", false, &o, &err), 1);
    assert_null(o);

    assert_int_equal(ifm_get_array(f->root, "a", true, 3, &o, &err), 0);
    assert_int_equal(o->via.array.size, 3);
    assert_int_equal(ifm_get_array(f->root, "a", true, 2, &o, &err), -1);
    ERR_HAS(err, "field \"a\" has 3 items, at most 2");
    assert_int_equal(ifm_get_array(f->root, "m", true, 10, &o, &err), -1);
    ERR_HAS(err, "field \"m\" must be an array, got map");
    assert_int_equal(ifm_get_array(f->root, "zz", true, 10, &o, &err), -1);
    ERR_HAS(err, "missing field \"zz\"");
    o = NULL;
    assert_int_equal(ifm_get_array(f->root, "zz", false, 10, &o, &err), 1);
    assert_int_equal(ifm_get_array(f->root, "nil", false, 10, &o, &err), 1);
    assert_null(o);
}

static void test_obj_str(void **state)
{
    fixture *f = *state;
    ifm_err err = { "" };
    char out[8];
    assert_int_equal(ifm_obj_str(ifm_map_get(f->root, "s"), "greeting", true, out, sizeof out, &err), 0);
    assert_string_equal(out, "hello");
    assert_int_equal(ifm_obj_str(ifm_map_get(f->root, "u"), "greeting", true, out, sizeof out, &err), -1);
    ERR_HAS(err, "greeting must be a string, got unsigned integer");
    assert_int_equal(ifm_obj_str(ifm_map_get(f->root, "long"), "greeting", false, out, sizeof out, &err), -1);
    ERR_HAS(err, "greeting is 299 bytes, at most 7 allowed");
    assert_int_equal(ifm_obj_str(ifm_map_get(f->root, "empty"), "greeting", true, out, sizeof out, &err), -1);
    ERR_HAS(err, "greeting must not be empty");
    assert_int_equal(ifm_obj_str(ifm_map_get(f->root, "empty"), "greeting", false, out, sizeof out, &err), 0);
    assert_string_equal(out, "");
    assert_int_equal(ifm_obj_str(ifm_map_get(f->root, "nul"), "greeting", false, out, sizeof out, &err), -1);
    ERR_HAS(err, "greeting contains a NUL byte");
    assert_int_equal(ifm_obj_str(ifm_map_get(f->root, "nil"), "greeting", false, out, sizeof out, &err), -1);
    ERR_HAS(err, "got nil");
}

static void test_obj_pack_roundtrip(void **state)
{
    fixture *f = *state;
    /* re-encoding the whole root gives back the same bytes */
    ifm_enc e;
    ifm_enc_init(&e);
    assert_int_equal(ifm_obj_pack(f->root, &e), 0);
    assert_int_equal(ifm_enc_size(&e), ifm_enc_size(&f->enc));
    assert_memory_equal(ifm_enc_data(&e), ifm_enc_data(&f->enc), ifm_enc_size(&e));
    ifm_enc_free(&e);
}

static void test_encoders(void **state)
{
    /* every encoder, decoded by msgpack-c */
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_enc_array(&e, 9);
    ifm_enc_uint(&e, 300);
    ifm_enc_int(&e, -300);
    ifm_enc_double(&e, 2.5);
    ifm_enc_bool(&e, true);
    ifm_enc_bool(&e, false);
    ifm_enc_nil(&e);
    ifm_enc_bin(&e, "\x00\x01", 2);
    ifm_enc_strn(&e, "abc", 2);
    ifm_enc_map(&e, 0);
    ifm_err err;
    assert_int_equal(ifm_msgpack_scan(ifm_enc_data(&e), ifm_enc_size(&e), IFM_MAX_DEPTH, &err), 0);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&up, ifm_enc_data(&e), ifm_enc_size(&e), &off), MSGPACK_UNPACK_SUCCESS);
    const msgpack_object *a = up.data.via.array.ptr;
    assert_int_equal(up.data.via.array.size, 9);
    assert_int_equal(a[0].type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    assert_int_equal(a[0].via.u64, 300);
    assert_int_equal(a[1].type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
    assert_int_equal(a[1].via.i64, -300);
    assert_int_equal(a[2].type, MSGPACK_OBJECT_FLOAT64);
    assert_true(a[2].via.f64 == 2.5);
    assert_true(a[3].via.boolean);
    assert_int_equal(a[4].type, MSGPACK_OBJECT_BOOLEAN);
    assert_false(a[4].via.boolean);
    assert_int_equal(a[5].type, MSGPACK_OBJECT_NIL);
    assert_int_equal(a[6].type, MSGPACK_OBJECT_BIN);
    assert_int_equal(a[6].via.bin.size, 2);
    assert_int_equal(a[7].type, MSGPACK_OBJECT_STR);
    assert_int_equal(a[7].via.str.size, 2);
    assert_int_equal(a[8].type, MSGPACK_OBJECT_MAP);
    msgpack_unpacked_destroy(&up);
    ifm_enc_free(&e);

    /* ifm_enc_root writes v first and counts it */
    ifm_enc_init(&e);
    ifm_enc_root(&e, 0);
    ifm_doc doc;
    assert_int_equal(ifm_doc_parse(&doc, ifm_enc_data(&e), ifm_enc_size(&e), &err), 0);
    assert_int_equal(doc.root->via.map.size, 1);
    assert_int_equal(doc.root->via.map.ptr[0].key.via.str.size, 1);
    assert_memory_equal(doc.root->via.map.ptr[0].key.via.str.ptr, "v", 1);
    ifm_doc_free(&doc);
    ifm_enc_free(&e);
}

static void test_err_set(void **state)
{
    ifm_err err;
    ifm_err_set(&err, "x=%d", 5);
    assert_string_equal(err.msg, "x=5");
    ifm_err_set(NULL, "ignored %s", "fine");
    char longs[500];
    memset(longs, 'y', sizeof longs - 1);
    longs[sizeof longs - 1] = '\0';
    ifm_err_set(&err, "%s", longs);
    assert_int_equal(strlen(err.msg), sizeof err.msg - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan_valid_every_type),
        cmocka_unit_test(test_scan_truncated_and_trailing),
        cmocka_unit_test(test_scan_malformed),
        cmocka_unit_test(test_scan_depth),
        cmocka_unit_test(test_doc_parse),
        cmocka_unit_test(test_doc_parse_limits),
        cmocka_unit_test_setup_teardown(test_map_get, setup_doc, teardown_doc),
        cmocka_unit_test_setup_teardown(test_get_str, setup_doc, teardown_doc),
        cmocka_unit_test_setup_teardown(test_get_strv, setup_doc, teardown_doc),
        cmocka_unit_test_setup_teardown(test_get_uint, setup_doc, teardown_doc),
        cmocka_unit_test_setup_teardown(test_get_bool, setup_doc, teardown_doc),
        cmocka_unit_test_setup_teardown(test_get_double, setup_doc, teardown_doc),
        cmocka_unit_test_setup_teardown(test_get_bin, setup_doc, teardown_doc),
        cmocka_unit_test_setup_teardown(test_get_map_array, setup_doc, teardown_doc),
        cmocka_unit_test_setup_teardown(test_obj_str, setup_doc, teardown_doc),
        cmocka_unit_test_setup_teardown(test_obj_pack_roundtrip, setup_doc, teardown_doc),
        cmocka_unit_test(test_encoders),
        cmocka_unit_test(test_err_set),
    };
    return cmocka_run_group_tests_name("proto_codec", tests, NULL, NULL);
}
