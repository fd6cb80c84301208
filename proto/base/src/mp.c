/* The msgpack reader; see icefarm/mp.h. Only <string.h> from libc: the reasons
 * are formatted by the small why() below, not by stdio. */
#include "icefarm/mp.h"

#include <stdarg.h>
#include <string.h>

/* ---- reasons ---- */

typedef struct {
    char *b;
    size_t cap, len;
} text;

static void put(text *t, const char *s, size_t n)
{
    if (t->len + 1 >= t->cap)
        return;
    size_t room = t->cap - 1 - t->len;
    if (n > room)
        n = room;
    memcpy(t->b + t->len, s, n);
    t->len += n;
    t->b[t->len] = '\0';
}

static void put_u(text *t, unsigned long long v)
{
    char d[24];
    size_t i = sizeof d;
    do {
        d[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(t, d + i, sizeof d - i);
}

/* Formats `fmt` with %s (const char *), %u (unsigned long long) and %x (an
 * unsigned byte, as 0xNN) into r->why, then " at byte <at>". */
static int fail(const ifm_mp *r, size_t at, const char *fmt, ...)
{
    if (!r->why || !r->whylen)
        return IFM_EBADMSG;
    text t = { r->why, r->whylen, 0 };
    t.b[0] = '\0';
    va_list ap;
    va_start(ap, fmt);
    for (const char *f = fmt; *f; f++) {
        if (*f != '%' || !f[1]) {
            put(&t, f, 1);
            continue;
        }
        f++;
        if (*f == 's') {
            const char *s = va_arg(ap, const char *);
            put(&t, s, strlen(s));
        } else if (*f == 'u') {
            put_u(&t, va_arg(ap, unsigned long long));
        } else if (*f == 'x') {
            static const char hex[] = "0123456789abcdef";
            unsigned v = va_arg(ap, unsigned) & 0xff;
            char h[4] = { '0', 'x', hex[v >> 4], hex[v & 15] };
            put(&t, h, 4);
        }
    }
    va_end(ap);
    put(&t, " at byte ", 9);
    put_u(&t, at);
    return IFM_EBADMSG;
}

/* ---- headers ---- */

typedef enum {
    K_NIL,
    K_BOOL,
    K_UINT,
    K_INT,
    K_FLOAT,
    K_STR,
    K_BIN,
    K_EXT,
    K_ARRAY,
    K_MAP
} kind;

static const char *const kind_names[] = { "nil", "bool", "uint", "int", "float", "str", "bin", "ext", "array", "map" };

typedef struct {
    kind k;
    uint8_t b;      /* the type byte */
    size_t hl;      /* header bytes: type byte and length field (and an ext's type) */
    uint64_t len;   /* payload bytes after the header (0 for containers) */
    uint64_t count; /* a container's entries (a map's pairs) */
} head;

void ifm_mp_init(ifm_mp *r, const void *data, size_t len, char *why, size_t whylen)
{
    r->p = data;
    r->n = data ? len : 0;
    r->off = 0;
    r->why = why;
    r->whylen = why ? whylen : 0;
    if (r->why && r->whylen)
        r->why[0] = '\0';
}

static uint64_t be(const uint8_t *p, size_t w)
{
    uint64_t v = 0;
    for (size_t i = 0; i < w; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Classifies a type byte: its kind, the width of its length field (lw), and a
 * fixed payload size (fixed) or an inline count/length (in). -1 for 0xc1. */
static int classify(uint8_t b, kind *k, size_t *lw, uint64_t *fixed)
{
    *lw = 0;
    *fixed = 0;
    if (b <= 0x7f) {
        *k = K_UINT;
    } else if (b <= 0x8f) {
        *k = K_MAP;
    } else if (b <= 0x9f) {
        *k = K_ARRAY;
    } else if (b <= 0xbf) {
        *k = K_STR;
        *fixed = b & 0x1f;
    } else if (b >= 0xe0) {
        *k = K_INT;
    } else {
        switch (b) {
        case 0xc0:
            *k = K_NIL;
            break;
        case 0xc2:
        case 0xc3:
            *k = K_BOOL;
            break;
        case 0xc4:
        case 0xc5:
        case 0xc6:
            *k = K_BIN, *lw = (size_t)1 << (b - 0xc4);
            break;
        case 0xc7:
        case 0xc8:
        case 0xc9:
            *k = K_EXT, *lw = (size_t)1 << (b - 0xc7), *fixed = 1; /* + the ext type byte */
            break;
        case 0xca:
        case 0xcb:
            *k = K_FLOAT, *fixed = b == 0xca ? 4 : 8;
            break;
        case 0xcc:
        case 0xcd:
        case 0xce:
        case 0xcf:
            *k = K_UINT, *fixed = (uint64_t)1 << (b - 0xcc);
            break;
        case 0xd0:
        case 0xd1:
        case 0xd2:
        case 0xd3:
            *k = K_INT, *fixed = (uint64_t)1 << (b - 0xd0);
            break;
        case 0xd4:
        case 0xd5:
        case 0xd6:
        case 0xd7:
        case 0xd8:
            *k = K_EXT, *fixed = 1 + ((uint64_t)1 << (b - 0xd4));
            break;
        case 0xd9:
        case 0xda:
        case 0xdb:
            *k = K_STR, *lw = (size_t)1 << (b - 0xd9);
            break;
        case 0xdc:
        case 0xdd:
            *k = K_ARRAY, *lw = b == 0xdc ? 2 : 4;
            break;
        case 0xde:
        case 0xdf:
            *k = K_MAP, *lw = b == 0xde ? 2 : 4;
            break;
        default:
            return -1; /* 0xc1: never used */
        }
    }
    return 0;
}

/* Reads the header at the cursor without consuming it and checks that what it
 * announces fits the bytes left: a str/bin/ext/number its payload, a container
 * one byte per object. `want` names what the caller expects, for the reason. */
static int peek(const ifm_mp *r, head *h, const char *want)
{
    size_t left = ifm_mp_left(r);
    if (left == 0)
        return fail(r, r->off, "truncated: expected %s, found end of data", want);
    const uint8_t *p = r->p + r->off;
    size_t lw;
    uint64_t fixed;
    h->b = p[0];
    if (classify(p[0], &h->k, &lw, &fixed))
        return fail(r, r->off, "reserved byte %x is not a msgpack type (expected %s)", p[0], want);
    h->hl = 1 + lw;
    if (left < h->hl)
        return fail(r, r->off, "truncated %s header", kind_names[h->k]);
    uint64_t n = lw ? be(p + 1, lw) : 0;
    h->count = 0;
    h->len = 0;
    if (h->k == K_MAP || h->k == K_ARRAY) {
        h->count = lw ? n : (uint64_t)(p[0] & 0x0f);
        uint64_t objects = h->k == K_MAP ? h->count * 2 : h->count;
        if (objects > left - h->hl)
            return fail(r, r->off, "%s declares %u entries but only %u bytes remain", kind_names[h->k],
                        (unsigned long long)h->count, (unsigned long long)(left - h->hl));
        return 0;
    }
    h->len = n + fixed;
    if (h->len > left - h->hl)
        return fail(r, r->off, "truncated: %s of %u bytes but only %u bytes remain", kind_names[h->k],
                    (unsigned long long)h->len, (unsigned long long)(left - h->hl));
    return 0;
}

static int expect(const ifm_mp *r, head *h, kind k)
{
    int rc = peek(r, h, kind_names[k]);
    if (rc)
        return rc;
    if (h->k != k)
        return fail(r, r->off, "expected %s, found %s", kind_names[k], kind_names[h->k]);
    return 0;
}

/* ---- typed reads ---- */

static int container(ifm_mp *r, kind k, uint32_t *count)
{
    head h;
    int rc = expect(r, &h, k);
    if (rc)
        return rc;
    r->off += h.hl;
    *count = (uint32_t)h.count;
    return 0;
}

int ifm_mp_map(ifm_mp *r, uint32_t *count)
{
    return container(r, K_MAP, count);
}

int ifm_mp_array(ifm_mp *r, uint32_t *count)
{
    return container(r, K_ARRAY, count);
}

static int blob(ifm_mp *r, kind k, const uint8_t **out, uint32_t *len)
{
    head h;
    int rc = expect(r, &h, k);
    if (rc)
        return rc;
    *out = r->p + r->off + h.hl;
    *len = (uint32_t)h.len;
    r->off += h.hl + (size_t)h.len;
    return 0;
}

int ifm_mp_str(ifm_mp *r, const char **s, uint32_t *len)
{
    const uint8_t *p;
    int rc = blob(r, K_STR, &p, len);
    if (rc == 0)
        *s = (const char *)p;
    return rc;
}

int ifm_mp_bin(ifm_mp *r, const uint8_t **b, uint32_t *len)
{
    return blob(r, K_BIN, b, len);
}

int ifm_mp_uint(ifm_mp *r, uint64_t *v)
{
    head h;
    int rc = peek(r, &h, "uint");
    if (rc)
        return rc;
    const uint8_t *p = r->p + r->off;
    uint64_t x;
    if (h.k == K_UINT) {
        x = h.b <= 0x7f ? h.b : be(p + 1, (size_t)h.len);
    } else if (h.k == K_INT && h.b >= 0xd0 && h.b <= 0xd3 && !(p[1] & 0x80)) {
        x = be(p + 1, (size_t)h.len); /* a non-negative number in a signed encoding */
    } else {
        return fail(r, r->off, "expected uint, found %s", h.k == K_INT ? "negative int" : kind_names[h.k]);
    }
    *v = x;
    r->off += h.hl + (size_t)h.len;
    return 0;
}

int ifm_mp_bool(ifm_mp *r, bool *v)
{
    head h;
    int rc = expect(r, &h, K_BOOL);
    if (rc)
        return rc;
    *v = h.b == 0xc3;
    r->off += 1;
    return 0;
}

bool ifm_mp_is_nil(const ifm_mp *r)
{
    return ifm_mp_left(r) > 0 && r->p[r->off] == 0xc0;
}

int ifm_mp_cstr(ifm_mp *r, char *out, size_t cap)
{
    size_t at = r->off;
    const char *s;
    uint32_t n;
    int rc = ifm_mp_str(r, &s, &n);
    if (rc)
        return rc;
    if (n == 0 || n >= cap || memchr(s, '\0', n)) {
        r->off = at;
        if (n == 0)
            return fail(r, at, "empty string");
        if (n >= cap)
            return fail(r, at, "string of %u bytes, at most %u", (unsigned long long)n,
                        (unsigned long long)(cap ? cap - 1 : 0));
        return fail(r, at, "string contains a NUL byte");
    }
    memcpy(out, s, n);
    out[n] = '\0';
    return 0;
}

int ifm_mp_skip(ifm_mp *r, int max_depth)
{
    if (max_depth < 0)
        max_depth = 0;
    if (max_depth > IFM_MP_DEPTH_LIMIT)
        max_depth = IFM_MP_DEPTH_LIMIT;
    size_t start = r->off;
    uint64_t todo[IFM_MP_DEPTH_LIMIT + 1]; /* objects left at each level; level 0 is the one we skip */
    int depth = 0;
    todo[0] = 1;
    while (depth >= 0) {
        if (todo[depth] == 0) {
            depth--;
            continue;
        }
        todo[depth]--;
        head h;
        int rc = peek(r, &h, "a value");
        if (rc) {
            r->off = start;
            return rc;
        }
        if (h.k == K_MAP || h.k == K_ARRAY) {
            uint64_t objects = h.k == K_MAP ? h.count * 2 : h.count;
            if (objects) {
                if (depth + 1 > max_depth) {
                    rc = fail(r, r->off, "msgpack nested deeper than %u levels", (unsigned long long)max_depth);
                    r->off = start;
                    return rc;
                }
                todo[++depth] = objects;
            }
            r->off += h.hl;
        } else {
            r->off += h.hl + (size_t)h.len;
        }
    }
    return 0;
}

int ifm_mp_scan(const void *data, size_t len, int max_depth, char *why, size_t whylen)
{
    ifm_mp r;
    ifm_mp_init(&r, data, len, why, whylen);
    if (r.n == 0)
        return fail(&r, 0, "empty payload");
    int rc = ifm_mp_skip(&r, max_depth);
    if (rc)
        return rc;
    if (!ifm_mp_done(&r))
        return fail(&r, r.off, "%u trailing bytes after the msgpack value", (unsigned long long)ifm_mp_left(&r));
    return 0;
}
