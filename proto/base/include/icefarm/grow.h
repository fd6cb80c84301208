/* Growing by doubling: the one helper for "append one more element" to an
 * array (ifm_grow) and the one for "make room for N more bytes" in a byte
 * buffer (ifm_grow_bytes).
 *
 * Most of icefarm's arrays are a pointer, a count and a capacity; appending
 * doubles the capacity when the array is full. ifm_grow() is that step, so a
 * call site reads
 *
 *     T *v = ifm_grow(x->v, &x->cap, x->n, sizeof *v, 16);
 *     if (!v)
 *         return ...;             // the site's own failure
 *     x->v = v;
 *     x->v[x->n++] = item;
 *
 * and stays type-safe without casting T ** to void ** (which strict aliasing
 * forbids): the array goes in and comes out as a plain void *.
 *
 * Ownership (both helpers): `v` (`buf`) and the returned memory belong to the
 * caller, who frees them with free(). On success the returned pointer replaces
 * `v` (which may then be stale, as after realloc). On failure (NULL) nothing
 * has changed: `v` is still valid and still the caller's, and *cap is
 * untouched.
 *
 * Re-entrancy (both helpers): pure apart from realloc (and errno); no state;
 * safe from any thread on distinct arrays.
 *
 * Part of icefarm-base (no dependency beyond libc).
 */
#ifndef ICEFARM_GROW_H
#define ICEFARM_GROW_H

#include <stddef.h>

/* Makes room for element index `n` (the count in use) of an array of `*cap`
 * elements of `elem` bytes each:
 *   - n < *cap: returns `v` unchanged (no allocation);
 *   - otherwise: reallocates `v` to max(first, 2 * *cap) elements (the new
 *     elements are not initialised), sets *cap to that and returns the new array.
 * `first` is the capacity of the first allocation (0 counts as 1).
 * Errors: NULL with errno ENOMEM when realloc fails or the new size in bytes
 * would not fit a size_t, EINVAL when `elem` is 0; then `v` and *cap are left
 * as they were. */
void *ifm_grow(void *v, size_t *cap, size_t n, size_t elem, size_t first);

/* Makes room for `need` bytes in the byte buffer `buf` of `*cap` bytes (a
 * queue, an input or output buffer: `need` is what is kept plus what comes):
 *   - need <= *cap: returns `buf` unchanged (no allocation);
 *   - otherwise: reallocates `buf` to the smallest c * 2^k (k >= 0) that holds
 *     `need`, where c is *cap, or `first` while *cap is 0 (0 counts as 1);
 *     then to `max` if that is smaller. Sets *cap to it and returns the new
 *     buffer: the old *cap bytes are kept, the new ones are not initialised.
 * `max` is the most the buffer may hold (0: no limit).
 * A site reads
 *
 *     if (x->len + n > x->cap) {
 *         uint8_t *b = ifm_grow_bytes(x->buf, &x->cap, x->len + n, 4096, 0);
 *         if (!b)
 *             return ...;         // the site's own failure
 *         x->buf = b;
 *     }
 *     memcpy(x->buf + x->len, data, n);
 *
 * The guard keeps "no room needed" apart from a failure: an empty buffer
 * (NULL, *cap 0) asked for 0 bytes comes back as NULL.
 * Errors: NULL and `buf` and *cap left as they were (buf still valid, still
 * the caller's), with errno EMSGSIZE when `need` > `max`, or ENOMEM when
 * realloc fails or doubling would not fit a size_t (only without a max). */
void *ifm_grow_bytes(void *buf, size_t *cap, size_t need, size_t first, size_t max);

#endif
