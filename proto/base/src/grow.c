/* The doubling steps (icefarm/grow.h), written once: one more element of an
 * array, room for N bytes in a byte buffer. */
#include "icefarm/grow.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

void *ifm_grow(void *v, size_t *cap, size_t n, size_t elem, size_t first)
{
    if (n < *cap)
        return v;
    size_t want = first ? first : 1;
    if (*cap > SIZE_MAX / 2) {
        errno = ENOMEM;
        return NULL;
    }
    if (*cap * 2 > want)
        want = *cap * 2;
    if (!elem) {
        errno = EINVAL;
        return NULL;
    }
    if (want > SIZE_MAX / elem) {
        errno = ENOMEM;
        return NULL;
    }
    void *nv = realloc(v, want * elem);
    if (!nv)
        return NULL;
    *cap = want;
    return nv;
}

void *ifm_grow_bytes(void *buf, size_t *cap, size_t need, size_t first, size_t max)
{
    if (need <= *cap)
        return buf;
    size_t limit = max ? max : SIZE_MAX;
    if (need > limit) {
        errno = EMSGSIZE;
        return NULL;
    }
    size_t want = *cap ? *cap : first ? first : 1;
    while (want < need) {
        if (want > limit / 2) { /* doubling would pass the limit */
            if (!max) {         /* ... or wrap */
                errno = ENOMEM;
                return NULL;
            }
            want = max;
            break;
        }
        want *= 2;
    }
    if (want > limit) /* a first size above max */
        want = limit;
    void *nb = realloc(buf, want);
    if (!nb)
        return NULL;
    *cap = want;
    return nb;
}
