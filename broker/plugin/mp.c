#include "mp.h"

#include <string.h>

static size_t left(const mp_reader *r)
{
    return (size_t)(r->end - r->p);
}

static int take(mp_reader *r, size_t n, const uint8_t **out)
{
    if (left(r) < n)
        return -1;
    *out = r->p;
    r->p += n;
    return 0;
}

static uint64_t be(const uint8_t *b, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | b[i];
    return v;
}

/* Reads a big-endian length/count of n bytes. */
static int read_be(mp_reader *r, size_t n, uint64_t *v)
{
    const uint8_t *b;
    if (take(r, n, &b))
        return -1;
    *v = be(b, n);
    return 0;
}

static int read_container(mp_reader *r, bool map, uint32_t *n)
{
    const uint8_t *t;
    if (take(r, 1, &t))
        return -1;
    uint64_t count;
    if (map && (*t & 0xf0) == 0x80)
        count = *t & 0x0f;
    else if (!map && (*t & 0xf0) == 0x90)
        count = *t & 0x0f;
    else if (*t == (map ? 0xde : 0xdc)) {
        if (read_be(r, 2, &count))
            return -1;
    } else if (*t == (map ? 0xdf : 0xdd)) {
        if (read_be(r, 4, &count))
            return -1;
    } else
        return -1;
    /* Every element takes at least one byte: a count larger than what is left
     * is a lie, whatever the caller does next. */
    if (count > left(r) / (map ? 2 : 1))
        return -1;
    *n = (uint32_t)count;
    return 0;
}

int mp_read_map(mp_reader *r, uint32_t *n)
{
    return read_container(r, true, n);
}
int mp_read_array(mp_reader *r, uint32_t *n)
{
    return read_container(r, false, n);
}

int mp_read_str(mp_reader *r, const char **s, uint32_t *len)
{
    const uint8_t *t, *b;
    if (take(r, 1, &t))
        return -1;
    uint64_t n;
    if ((*t & 0xe0) == 0xa0)
        n = *t & 0x1f;
    else if (*t == 0xd9 || *t == 0xda || *t == 0xdb) {
        if (read_be(r, (size_t)1 << (*t - 0xd9), &n))
            return -1;
    } else
        return -1;
    if (n > left(r) || take(r, (size_t)n, &b))
        return -1;
    *s = (const char *)b;
    *len = (uint32_t)n;
    return 0;
}

int mp_read_cstr(mp_reader *r, char *out, size_t cap)
{
    const char *s;
    uint32_t n;
    if (mp_read_str(r, &s, &n) || n == 0 || n >= cap || memchr(s, '\0', n))
        return -1;
    memcpy(out, s, n);
    out[n] = '\0';
    return 0;
}

int mp_read_uint(mp_reader *r, uint64_t *v)
{
    const uint8_t *t;
    if (take(r, 1, &t))
        return -1;
    if (*t <= 0x7f) {
        *v = *t;
        return 0;
    }
    if (*t >= 0xcc && *t <= 0xcf)
        return read_be(r, (size_t)1 << (*t - 0xcc), v);
    if (*t >= 0xd0 && *t <= 0xd3) {
        size_t n = (size_t)1 << (*t - 0xd0);
        uint64_t u;
        if (read_be(r, n, &u))
            return -1;
        if (u >> (8 * n - 1)) /* negative */
            return -1;
        *v = u;
        return 0;
    }
    return -1;
}

int mp_skip(mp_reader *r, int depth)
{
    if (depth <= 0)
        return -1;
    const uint8_t *t, *b;
    if (take(r, 1, &t))
        return -1;
    uint8_t c = *t;
    uint64_t n = 0;
    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3)
        return 0; /* fixints, nil, bools */
    if ((c & 0xe0) == 0xa0)
        return take(r, c & 0x1f, &b);
    if ((c & 0xf0) == 0x80 || (c & 0xf0) == 0x90 || c == 0xdc || c == 0xdd || c == 0xde || c == 0xdf) {
        r->p--;
        bool map = (c & 0xf0) == 0x80 || c == 0xde || c == 0xdf;
        uint32_t count;
        if (read_container(r, map, &count))
            return -1;
        uint64_t items = (uint64_t)count * (map ? 2 : 1);
        for (uint64_t i = 0; i < items; i++)
            if (mp_skip(r, depth - 1))
                return -1;
        return 0;
    }
    switch (c) {
    case 0xc4:
    case 0xc5:
    case 0xc6: /* bin 8/16/32 */
    case 0xd9:
    case 0xda:
    case 0xdb: /* str 8/16/32 */
        if (read_be(r, (size_t)1 << ((c >= 0xd9 ? c - 0xd9 : c - 0xc4)), &n))
            return -1;
        return n > left(r) ? -1 : take(r, (size_t)n, &b);
    case 0xc7:
    case 0xc8:
    case 0xc9: /* ext 8/16/32: length, type, data */
        if (read_be(r, (size_t)1 << (c - 0xc7), &n) || n + 1 > left(r))
            return -1;
        return take(r, (size_t)n + 1, &b);
    case 0xca:
        return take(r, 4, &b); /* float 32 */
    case 0xcb:
        return take(r, 8, &b); /* float 64 */
    case 0xcc:
    case 0xd0:
        return take(r, 1, &b);
    case 0xcd:
    case 0xd1:
        return take(r, 2, &b);
    case 0xce:
    case 0xd2:
        return take(r, 4, &b);
    case 0xcf:
    case 0xd3:
        return take(r, 8, &b);
    case 0xd4:
        return take(r, 2, &b); /* fixext 1 */
    case 0xd5:
        return take(r, 3, &b);
    case 0xd6:
        return take(r, 5, &b);
    case 0xd7:
        return take(r, 9, &b);
    case 0xd8:
        return take(r, 17, &b); /* fixext 16 */
    default:
        return -1; /* 0xc1: never used */
    }
}
