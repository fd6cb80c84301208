/* Farm boards for the USB/IP session (usbip_farm.h). */
#include "usbip_farm.h"

int usbc_farm_bind(icefarm_usbip *u, char *reason, size_t reason_len)
{
    (void)u;
    return ifm_failbuf(reason, reason_len, -ENOTSUP, "farm boards are not supported by this build yet");
}
