/* The USB/IP session's view of a farm handle (usbip_host.h). */
#include "usbip_host.h"

#include <errno.h>

ifm_loop *usbc_host_loop(icefarm *f)
{
    (void)f;
    return NULL;
}

int usbc_host_wait(icefarm *f, ifm_loop *own, int max_ms)
{
    if (f)
        return -ENOTSUP;
    return ifm_loop_once(own, max_ms) < 0 ? -EIO : 0;
}

bool usbc_host_in_callback(const icefarm *f, int own_depth)
{
    (void)f;
    return own_depth > 0;
}

void usbc_host_cb_enter(icefarm *f)
{
    (void)f;
}

void usbc_host_cb_leave(icefarm *f)
{
    (void)f;
}
