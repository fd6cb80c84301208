/* icefarm's one msgpack reader: strict, bounded and allocation-free.
 *
 * Why not msgpack_unpack_next()? msgpack-c allocates room for a container's
 * DECLARED element count before reading any element, so a 6-byte payload
 * claiming 2^32 map entries asks for 64 GB. This reader checks every length
 * and count against the bytes actually left, bounds nesting, refuses the
 * reserved byte 0xc1, and allocates nothing. Three users share it:
 *
 *  - libicefarm-proto scans every payload with ifm_mp_scan() before handing it
 *    to msgpack-c (ifm_doc_parse), so msgpack-c only ever sees sane input;
 *  - the lease store reads its LMDB records with the typed calls;
 *  - the broker plugin reads leases, board states and births with them.
 *
 * It needs nothing but <string.h> and the compiler's headers (no msgpack-c, no
 * libmosquitto, no stdio): it is part of icefarm-base, which a broker plugin
 * may link. Encoding stays with msgpack-c's packer (icefarm/codec.h).
 *
 * Errors follow icefarm/err.h: every call returns 0, or IFM_EBADMSG with the
 * reason ("expected str, found array at byte 7") written to the reader's
 * optional reason buffer. On error the cursor stays where it was, at the
 * object that failed. Strings and bins point into the input, which the caller
 * owns and must keep while it uses them. A reader is a plain value: no
 * cleanup, re-entrant, one per thread at a time.
 */
#ifndef ICEFARM_MP_H
#define ICEFARM_MP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "icefarm/err.h"
#include "icefarm/limits.h"

typedef struct {
    const uint8_t *p; /* the input (borrowed) */
    size_t n;         /* its length */
    size_t off;       /* bytes consumed */
    char *why;        /* reason buffer (optional, borrowed) */
    size_t whylen;
} ifm_mp;

/* `why` may be NULL (whylen then ignored). data may be NULL when len is 0. */
void ifm_mp_init(ifm_mp *r, const void *data, size_t len, char *why, size_t whylen);
static inline bool ifm_mp_done(const ifm_mp *r)
{
    return r->off == r->n;
}
static inline size_t ifm_mp_left(const ifm_mp *r)
{
    return r->n - r->off;
}

/* A map or array header: *count entries follow (a map's are key/value pairs).
 * A count the remaining bytes cannot hold (each object takes at least one
 * byte) is refused here, before the caller loops over it. */
int ifm_mp_map(ifm_mp *r, uint32_t *count);
int ifm_mp_array(ifm_mp *r, uint32_t *count);
/* A str (not NUL-terminated, not checked for UTF-8: see names.h) or a bin. */
int ifm_mp_str(ifm_mp *r, const char **s, uint32_t *len);
int ifm_mp_bin(ifm_mp *r, const uint8_t **b, uint32_t *len);
/* A non-negative integer in any of msgpack's integer encodings. */
int ifm_mp_uint(ifm_mp *r, uint64_t *v);
int ifm_mp_bool(ifm_mp *r, bool *v);
/* true if the next object is nil (does not consume it). */
bool ifm_mp_is_nil(const ifm_mp *r);
/* A str copied into out[cap] as a C string: refused if empty, if it holds a
 * NUL, or if it does not fit (at most cap-1 bytes). */
int ifm_mp_cstr(ifm_mp *r, char *out, size_t cap);
/* Skips one whole object. A container counts as a level only when it is not
 * empty; max_depth 0 accepts only scalars and empty containers. max_depth is
 * clamped to IFM_MP_DEPTH_LIMIT. Iterative: stack use does not grow with the
 * input. */
int ifm_mp_skip(ifm_mp *r, int max_depth);

/* Checks that data[0..len) is exactly one well-formed object no deeper than
 * max_depth (as ifm_mp_skip) with no trailing bytes. An empty input is
 * refused. */
int ifm_mp_scan(const void *data, size_t len, int max_depth, char *why, size_t whylen);

#endif
