/* Strict bounded msgpack reader; see store_mp.h for why it exists. */
#include "store_mp.h"

#include <stdarg.h>
#include <stdio.h>

static int fail(const store_mp *r, char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        if (k >= 0 && (size_t)k < errlen)
            snprintf(err + k, errlen - (size_t)k, " at byte %zu", r->off);
    }
    return -1;
}

/* Names the type a byte starts, for error messages. */
static const char *type_name(uint8_t b)
{
    if (b <= 0x7f || (b >= 0xcc && b <= 0xcf))
        return "uint";
    if (b >= 0xe0 || (b >= 0xd0 && b <= 0xd3))
        return "int";
    if (b <= 0x8f || b == 0xde || b == 0xdf)
        return "map";
    if (b <= 0x9f || b == 0xdc || b == 0xdd)
        return "array";
    if (b <= 0xbf || (b >= 0xd9 && b <= 0xdb))
        return "str";
    switch (b) {
    case 0xc0:
        return "nil";
    case 0xc2:
    case 0xc3:
        return "bool";
    case 0xc4:
    case 0xc5:
    case 0xc6:
        return "bin";
    case 0xca:
    case 0xcb:
        return "float";
    case 0xc1:
        return "reserved byte 0xc1";
    default:
        return "ext";
    }
}

void store_mp_init(store_mp *r, const void *buf, size_t len)
{
    r->p = buf;
    r->n = len;
    r->off = 0;
}

bool store_mp_done(const store_mp *r)
{
    return r->off == r->n;
}

static size_t left(const store_mp *r)
{
    return r->n - r->off;
}

/* Reads a big-endian integer of `w` bytes starting `at` bytes past the cursor. */
static uint64_t be(const store_mp *r, size_t at, size_t w)
{
    uint64_t v = 0;
    for (size_t i = 0; i < w; i++)
        v = (v << 8) | r->p[r->off + at + i];
    return v;
}

/* Peeks the type byte; fails on end of input. */
static int head(const store_mp *r, uint8_t *b, const char *want, char *err, size_t errlen)
{
    if (left(r) == 0)
        return fail(r, err, errlen, "truncated: expected %s, found end of data", want);
    *b = r->p[r->off];
    return 0;
}

/* Checks that a `w`-byte length field is present; returns its value. */
static int len_field(const store_mp *r, size_t w, uint64_t *len, const char *want, char *err, size_t errlen)
{
    if (left(r) < 1 + w)
        return fail(r, err, errlen, "truncated %s header", want);
    *len = be(r, 1, w);
    return 0;
}

int store_mp_map(store_mp *r, uint32_t *count, char *err, size_t errlen)
{
    uint8_t b = 0;
    uint64_t n = 0;
    size_t hl;
    if (head(r, &b, "map", err, errlen))
        return -1;
    if (b >= 0x80 && b <= 0x8f) {
        n = b & 0x0f;
        hl = 1;
    } else if (b == 0xde || b == 0xdf) {
        hl = b == 0xde ? 2 : 4;
        if (len_field(r, hl, &n, "map", err, errlen))
            return -1;
        hl += 1;
    } else {
        return fail(r, err, errlen, "expected map, found %s", type_name(b));
    }
    /* Every entry needs at least two bytes: a declared count beyond that is a lie. */
    if (n > (left(r) - hl) / 2)
        return fail(r, err, errlen, "map declares %llu entries but only %zu bytes follow", (unsigned long long)n,
                    left(r) - hl);
    r->off += hl;
    *count = (uint32_t)n;
    return 0;
}

/* Shared by str and bin: both are a length then raw bytes. */
static int blob(store_mp *r, bool is_str, const uint8_t **out, uint32_t *len, char *err, size_t errlen)
{
    const char *want = is_str ? "str" : "bin";
    uint8_t b = 0;
    uint64_t n = 0;
    size_t hl;
    if (head(r, &b, want, err, errlen))
        return -1;
    if (is_str && b >= 0xa0 && b <= 0xbf) {
        n = b & 0x1f;
        hl = 1;
    } else if (is_str && b >= 0xd9 && b <= 0xdb) {
        hl = (size_t)1 << (b - 0xd9);
        if (len_field(r, hl, &n, want, err, errlen))
            return -1;
        hl += 1;
    } else if (!is_str && b >= 0xc4 && b <= 0xc6) {
        hl = (size_t)1 << (b - 0xc4);
        if (len_field(r, hl, &n, want, err, errlen))
            return -1;
        hl += 1;
    } else {
        return fail(r, err, errlen, "expected %s, found %s", want, type_name(b));
    }
    if (n > left(r) - hl)
        return fail(r, err, errlen, "%s of %llu bytes but only %zu bytes follow", want, (unsigned long long)n,
                    left(r) - hl);
    *out = r->p + r->off + hl;
    *len = (uint32_t)n;
    r->off += hl + n;
    return 0;
}

int store_mp_str(store_mp *r, const char **s, uint32_t *len, char *err, size_t errlen)
{
    const uint8_t *p;
    if (blob(r, true, &p, len, err, errlen))
        return -1;
    *s = (const char *)p;
    return 0;
}

int store_mp_bin(store_mp *r, const uint8_t **b, uint32_t *len, char *err, size_t errlen)
{
    return blob(r, false, b, len, err, errlen);
}

int store_mp_uint(store_mp *r, uint64_t *v, char *err, size_t errlen)
{
    uint8_t b = 0;
    if (head(r, &b, "uint", err, errlen))
        return -1;
    if (b <= 0x7f) {
        *v = b;
        r->off += 1;
        return 0;
    }
    if (b < 0xcc || b > 0xcf)
        return fail(r, err, errlen, "expected uint, found %s", type_name(b));
    size_t w = (size_t)1 << (b - 0xcc);
    if (left(r) < 1 + w)
        return fail(r, err, errlen, "truncated uint");
    *v = be(r, 1, w);
    r->off += 1 + w;
    return 0;
}

int store_mp_bool(store_mp *r, bool *v, char *err, size_t errlen)
{
    uint8_t b = 0;
    if (head(r, &b, "bool", err, errlen))
        return -1;
    if (b != 0xc2 && b != 0xc3)
        return fail(r, err, errlen, "expected bool, found %s", type_name(b));
    *v = b == 0xc3;
    r->off += 1;
    return 0;
}
