/* Where a USB/IP session's callbacks and waits run: on a farm handle's loop
 * (icefarm *), or on the session's own loop when there is no handle. Internal to
 * libicefarm; the one place the USB/IP files touch the handle's insides. */
#ifndef ICEFARM_LIB_USBIP_HOST_H
#define ICEFARM_LIB_USBIP_HOST_H

#include <stdbool.h>

#include "icefarm/client.h"
#include "icefarm/loop.h"

/* The handle's loop (f non-NULL). */
ifm_loop *usbc_host_loop(icefarm *f);
/* One loop iteration for a waiting call: the handle's, else `own`. 0 or a
 * negative errno (-ECANCELED: icefarm_stop). */
int usbc_host_wait(icefarm *f, ifm_loop *own, int max_ms);
/* Whether a waiting call must refuse (-EDEADLK): a user callback is running. */
bool usbc_host_in_callback(const icefarm *f, int own_depth);
/* Around user callbacks, so waiting calls inside them refuse. */
void usbc_host_cb_enter(icefarm *f);
void usbc_host_cb_leave(icefarm *f);

#endif
