/* libFuzzer target: the PICOBOOT command block and status decoders
 * (wrk/fw/picoboot.h), which the simulated bootrom runs on every packet a USB/IP
 * client sends to a board in BOOTSEL.
 *
 * Input: one packet. Invariants: unpack accepts exactly the 32-byte packets with
 * the magic, and rejects everything else with -EBADMSG and a reason; what it
 * accepts packs back to the same bytes apart from the reserved field and the
 * argument bytes past bCmdSize; check() returns one of the three acceptance codes
 * (with a reason) or OK; the status decoder accepts any 16 bytes and repacks
 * them with the reserved bytes zeroed; nothing reads outside the input (ASan). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "picoboot.h"

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "fuzz_picoboot: check failed: %s (line %d)\n", #cond, __LINE__);                           \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1); /* exact size: ASan sees overreads */
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    picoboot_cmd c;
    char why[160] = "";
    int rc = picoboot_cmd_unpack(buf, size, &c, why, sizeof why);
    if (rc) {
        CHECK(rc == -EBADMSG);
        CHECK(why[0] != '\0');
        CHECK(size != PICOBOOT_CMD_SIZE || picoboot_get32(buf) != PICOBOOT_MAGIC);
    } else {
        CHECK(size == PICOBOOT_CMD_SIZE);
        uint8_t again[PICOBOOT_CMD_SIZE];
        picoboot_cmd_pack(&c, again);
        CHECK(memcmp(again, buf, 10) == 0 || c.args_len > PICOBOOT_ARGS_MAX);
        CHECK(memcmp(again + 12, buf + 12, 4) == 0);
        size_t n = c.args_len < PICOBOOT_ARGS_MAX ? c.args_len : PICOBOOT_ARGS_MAX;
        CHECK(memcmp(again + 16, buf + 16, n) == 0);
        why[0] = '\0';
        picoboot_status_code code = picoboot_cmd_check(&c, why, sizeof why);
        CHECK(code == PICOBOOT_OK || code == PICOBOOT_UNKNOWN_CMD || code == PICOBOOT_INVALID_CMD_LENGTH ||
              code == PICOBOOT_INVALID_TRANSFER_LENGTH);
        CHECK(code == PICOBOOT_OK || why[0] != '\0');
        CHECK(strcmp(picoboot_cmd_name(c.id), "?") != 0 || code == PICOBOOT_UNKNOWN_CMD);
        uint32_t addr, len;
        picoboot_cmd_range(&c, &addr, &len);
        if (code == PICOBOOT_OK && (c.id == PC_READ || c.id == PC_WRITE))
            CHECK(len == c.xfer_len);
    }
    picoboot_status st;
    rc = picoboot_status_unpack(buf, size, &st, why, sizeof why);
    if (rc == 0) {
        CHECK(size >= PICOBOOT_STATUS_SIZE);
        uint8_t again[PICOBOOT_STATUS_SIZE];
        picoboot_status_pack(&st, again);
        CHECK(memcmp(again, buf, 9) == 0);
        CHECK(strlen(picoboot_status_name(st.code)) > 0);
    } else {
        CHECK(rc == -EBADMSG && size < PICOBOOT_STATUS_SIZE);
    }
    free(buf);
    return 0;
}
