/* libFuzzer target: the non-allocating msgpack scanner, differentially against
 * msgpack-c. Whatever ifm_msgpack_scan accepts, msgpack-c must unpack as exactly
 * one object using every byte, and the re-packed object must scan clean too.
 * (The reverse need not hold: the scanner also enforces depth and plausible
 * container counts.) */
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "icefarm/codec.h"

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "fuzz_scan: check failed: %s (line %d)\n", #cond, __LINE__);                               \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ifm_err err = { "" };
    /* every depth limit, from the first byte; then the real one */
    if (size > 0) {
        int depth = data[0] % (IFM_MAX_DEPTH + 2);
        int rc = ifm_msgpack_scan(data + 1, size - 1, depth, &err);
        CHECK(rc == 0 || (rc == -1 && err.msg[0]));
    }
    int rc = ifm_msgpack_scan(data, size, IFM_MAX_DEPTH, &err);
    CHECK(rc == 0 || rc == -1);
    if (rc != 0) {
        CHECK(err.msg[0] != '\0');
        return 0;
    }
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(&up, (const char *)data, size, &off);
    CHECK(ur == MSGPACK_UNPACK_SUCCESS);
    CHECK(off == size);
    /* re-pack: still one well-formed object */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    CHECK(msgpack_pack_object(&pk, up.data) == 0);
    CHECK(ifm_msgpack_scan(sb.data, sb.size, IFM_MAX_DEPTH, &err) == 0);
    msgpack_sbuffer_destroy(&sb);
    msgpack_unpacked_destroy(&up);
    return 0;
}
