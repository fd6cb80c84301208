/* Lease record codec: a ctl_lease <-> the msgpack value stored under its serial.
 *
 * Value (schema in ctl/store/STORE.md): a msgpack map whose FIRST key is "v" (the
 * record version, so a newer record is reported as such instead of as an
 * unknown key), then s c k w a id g u wn, and t (the tag) only when the
 * lease has one. Decoding is strict: missing,
 * repeated or unknown keys, wrong types, oversize or non-UTF-8 strings, a
 * serial that differs from the key, and trailing bytes are all errors.
 */
#ifndef ICEFARM_CTL_STORE_CODEC_H
#define ICEFARM_CTL_STORE_CODEC_H

#include "store.h"

#define STORE_LEASE_VERSION 1
/* Upper bound of an encoded lease (all fields at their limits is ~4.6 KiB). */
#define STORE_LEASE_ENC_MAX 5120

typedef struct {
    uint8_t buf[STORE_LEASE_ENC_MAX];
    size_t len;
} store_lease_buf;

/* Checks a text field: non-empty, at most `max` bytes, valid UTF-8 (no
 * overlongs or surrogates). Anything else is the caller's policy: the store
 * keeps any name it is given. `what` names the field in the reason. */
int store_text_check(const char *what, const char *s, size_t max, char *err, size_t errlen);

/* Checks every field of a lease against the limits in store.h. */
int store_lease_check(const ctl_lease *l, char *err, size_t errlen);

/* Returns 0, or -1 with a reason (the lease fails store_lease_check). */
int store_lease_encode(const ctl_lease *l, store_lease_buf *out, char *err, size_t errlen);

/* Decodes the value stored under key `key`. On success out->args points INTO
 * `val` (borrowed); copy it if the lease must outlive the buffer. */
int store_lease_decode(const void *key, size_t keylen, const void *val, size_t vallen, ctl_lease *out, char *err,
                       size_t errlen);

#endif
