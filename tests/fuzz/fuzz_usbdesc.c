/* libFuzzer target: the USB/IP client's descriptor parsers (cli/lib/
 * usbip_desc.h): the device, configuration and string descriptors a server
 * (or a device behind it) hands the client.
 *
 * Input: a byte stream read as a configuration descriptor (and, from its start,
 * as a device and a string descriptor). Invariants: a parser accepts or rejects
 * with -EBADMSG and a reason; what it accepts is consistent (every CDC function
 * has a bulk IN and a bulk OUT endpoint with the right direction bits, distinct
 * interfaces, at most USBC_MAX_CDC of them); nothing reads outside the input
 * (ASan). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "usbip_desc.h"

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "fuzz_usbdesc: check failed: %s (line %d)\n", #cond, __LINE__);                            \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy, so ASan sees any read past the end */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    ifm_err err;
    usbc_config c;
    err.msg[0] = '\0';
    int rc = usbc_parse_config(buf, size, &c, &err);
    if (rc) {
        CHECK(rc == -EBADMSG);
        CHECK(err.msg[0] != '\0');
    } else {
        CHECK(c.ncdc <= USBC_MAX_CDC);
        CHECK(c.total <= size);
        for (size_t i = 0; i < c.ncdc; i++) {
            CHECK(c.cdc[i].in.addr & 0x80);
            CHECK(!(c.cdc[i].out.addr & 0x80));
            CHECK(c.cdc[i].in.type == 2 && c.cdc[i].out.type == 2);
            CHECK(c.cdc[i].comm_iface != c.cdc[i].data_iface);
            CHECK(usbc_cdc_by_comm(&c, c.cdc[i].comm_iface) != NULL);
        }
    }
    usbc_device_desc d;
    rc = usbc_parse_device(buf, size, &d, &err);
    CHECK(rc == 0 || rc == -EBADMSG);
    char s[64];
    rc = usbc_parse_string(buf, size, s, sizeof s, &err);
    CHECK(rc == 0 || rc == -EBADMSG);
    CHECK(strlen(s) < sizeof s);
    free(buf);
    return 0;
}
