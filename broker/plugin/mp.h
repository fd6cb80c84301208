/* A small, bounded msgpack reader for the broker plugin.
 *
 * The plugin sees every message passing through the broker, so it must never
 * trust a payload: every read checks the bytes that remain, containers are
 * skipped with a depth limit, and nothing is allocated. It reads just enough of
 * icefarm's schemas (proto/PROTOCOL.md) to learn leases and board ownership;
 * it deliberately does not link libicefarm-proto (which pulls in libmosquitto,
 * something a broker plugin must not load) nor msgpack-c.
 */
#ifndef ICEFARM_ACL_MP_H
#define ICEFARM_ACL_MP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MP_MAX_DEPTH 8

typedef struct {
    const uint8_t *p, *end;
} mp_reader;

static inline void mp_init(mp_reader *r, const void *data, size_t len)
{
    r->p = data;
    r->end = r->p + (data ? len : 0);
}
static inline bool mp_done(const mp_reader *r)
{
    return r->p == r->end;
}

/* Each returns 0 and advances, or -1 (the reader is then in an undefined
 * position: stop reading). */
int mp_read_map(mp_reader *r, uint32_t *n);
int mp_read_array(mp_reader *r, uint32_t *n);
/* A string: *s points into the buffer (not NUL-terminated). */
int mp_read_str(mp_reader *r, const char **s, uint32_t *len);
/* A non-negative integer, whatever its encoding. */
int mp_read_uint(mp_reader *r, uint64_t *v);
/* Skips one whole object (containers included), at most `depth` levels deep. */
int mp_skip(mp_reader *r, int depth);

/* Copies a string object into out[cap] as a C string; -1 if it is not a
 * string, is empty, contains a NUL or does not fit. */
int mp_read_cstr(mp_reader *r, char *out, size_t cap);

#endif
