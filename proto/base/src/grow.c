/* The array-doubling step (icefarm/grow.h), written once. */
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
