/* Farm boards for the USB/IP session: where a board's export is (its `usbip
 * exported` events), re-imports on every re-export, the lease's end, and the
 * broker tunnel as a carrier. Internal to libicefarm. */
#ifndef ICEFARM_LIB_USBIP_FARM_H
#define ICEFARM_LIB_USBIP_FARM_H

#include "usbip_session.h"

/* Binds a new session to the farm board u->serial (u->f set): learns the
 * export and starts importing. 0 or a negative errno with a reason. */
int usbc_farm_bind(icefarm_usbip *u, char *reason, size_t reason_len);

#endif
