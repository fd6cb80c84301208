/* Growing an array by doubling: the one helper for "append one more element".
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
 * Ownership: `v` and the returned array belong to the caller, who frees them
 * with free(). On success the returned pointer replaces `v` (which may then be
 * stale, as after realloc). On failure (NULL) nothing has changed: `v` is still
 * valid and still the caller's, and *cap is untouched.
 *
 * Re-entrancy: pure apart from realloc; no state; safe from any thread on
 * distinct arrays.
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

#endif
