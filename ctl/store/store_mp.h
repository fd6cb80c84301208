/* A strict, allocation-free msgpack reader for the lease store's own records.
 *
 * Why not msgpack_unpack_next()? msgpack-c allocates room for a container's
 * DECLARED element count before reading any element, so a 5-byte corrupt
 * record declaring 2^31 map entries makes it try a 128 GiB allocation (ASan
 * aborts; a plain build may be OOM-killed). Records are read from disk, where
 * anything can happen, and a corrupt record must never crash control. This
 * reader checks every length against the bytes actually left and knows only
 * the five types a lease uses; anything else is an error with a reason.
 * Encoding still uses msgpack-c's packer.
 */
#ifndef ICEFARM_CTL_STORE_MP_H
#define ICEFARM_CTL_STORE_MP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const uint8_t *p;
    size_t n;   /* total bytes */
    size_t off; /* bytes consumed */
} store_mp;

void store_mp_init(store_mp *r, const void *buf, size_t len);
bool store_mp_done(const store_mp *r);

/* Each returns 0, or -1 with a reason ("expected str, found array at byte 7");
 * on error the cursor does not advance. Strings and bins point into the input. */
int store_mp_map(store_mp *r, uint32_t *count, char *err, size_t errlen);
int store_mp_str(store_mp *r, const char **s, uint32_t *len, char *err, size_t errlen);
int store_mp_bin(store_mp *r, const uint8_t **b, uint32_t *len, char *err, size_t errlen);
int store_mp_uint(store_mp *r, uint64_t *v, char *err, size_t errlen);
int store_mp_bool(store_mp *r, bool *v, char *err, size_t errlen);

#endif
