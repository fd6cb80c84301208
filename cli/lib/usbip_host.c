/* The USB/IP session's view of a farm handle (usbip_host.h): the one place the
 * USB/IP files reach into the handle (internal.h). */
#include "usbip_host.h"

#include <errno.h>

#include "internal.h"

ifm_loop *usbc_host_loop(icefarm *f)
{
    return f->loop;
}

int usbc_host_wait(icefarm *f, ifm_loop *own, int max_ms)
{
    if (!f)
        return ifm_loop_once(own, max_ms) < 0 ? -EIO : 0;
    if (f->stop) {
        f->stop = false;
        return -ECANCELED;
    }
    return lib_wait_once(f, max_ms);
}

bool usbc_host_in_callback(const icefarm *f, int own_depth)
{
    return own_depth > 0 || (f && f->in_cb > 0);
}

void usbc_host_cb_enter(icefarm *f)
{
    if (f)
        f->in_cb++;
}

void usbc_host_cb_leave(icefarm *f)
{
    if (f)
        f->in_cb--;
}
