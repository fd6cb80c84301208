/* ctl_lease_list: the growable array every store operation reports into. */
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

void ctl_lease_clear(ctl_lease *lease)
{
    /* args is const for callers that pass borrowed bytes in; leases produced by
   * the store own a malloc'd copy, which is what gets freed here. */
    free((void *)lease->args);
    lease->args = NULL;
    lease->args_len = 0;
}

void store_list_truncate(ctl_lease_list *list, size_t n)
{
    while (list->n > n)
        ctl_lease_clear(&list->v[--list->n]);
}

void ctl_lease_list_free(ctl_lease_list *list)
{
    store_list_truncate(list, 0);
    free(list->v);
    list->v = NULL;
    list->cap = 0;
}

int store_list_push(ctl_lease_list *list, const ctl_lease *l)
{
    if (list->n == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 8;
        ctl_lease *v = realloc(list->v, cap * sizeof *v);
        if (!v)
            return CTL_STORE_ENOMEM;
        list->v = v;
        list->cap = cap;
    }
    ctl_lease copy = *l;
    copy.args = NULL;
    if (l->args_len) {
        uint8_t *a = malloc(l->args_len);
        if (!a)
            return CTL_STORE_ENOMEM;
        memcpy(a, l->args, l->args_len);
        copy.args = a;
    }
    list->v[list->n++] = copy;
    return 0;
}
