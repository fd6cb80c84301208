/* UF2: the firmware container the RP2350 bootrom accepts over USB mass storage.
 *
 * An image is a sequence of 512-byte blocks, each carrying up to 476 payload bytes
 * for one target address (https://github.com/microsoft/uf2). The worker builds
 * images for the simulated boards and validates every image before it reaches a
 * board, so a corrupt upload fails with a reason instead of bricking a board.
 */
#ifndef ICEFARM_WRK_UF2_H
#define ICEFARM_WRK_UF2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UF2_BLOCK_SIZE 512
#define UF2_MAX_PAYLOAD 476
#define UF2_MAGIC_START0 0x0A324655u
#define UF2_MAGIC_START1 0x9E5D5157u
#define UF2_MAGIC_END 0x0AB16F30u

#define UF2_FLAG_NOT_MAIN_FLASH 0x00000001u
#define UF2_FLAG_FILE_CONTAINER 0x00001000u
#define UF2_FLAG_FAMILY_ID_PRESENT 0x00002000u
#define UF2_FLAG_MD5_PRESENT 0x00004000u
#define UF2_FLAG_EXTENSION_TAGS 0x00008000u

#define UF2_FAMILY_RP2040 0xe48bff56u
#define UF2_FAMILY_ABSOLUTE 0xe48bff57u
#define UF2_FAMILY_DATA 0xe48bff58u
#define UF2_FAMILY_RP2350_ARM_S 0xe48bff59u
#define UF2_FAMILY_RP2350_RISCV 0xe48bff5au
#define UF2_FAMILY_RP2350_ARM_NS 0xe48bff5bu

/* Extension tag picotool puts on the RP2350-E10 workaround block: "ignore me". */
#define UF2_EXT_RP2_IGNORE_BLOCK 0x9957e304u
#define UF2_RP2350_E10_ADDR 0x10ffff00u

#define UF2_REASON_MAX 128

typedef enum {
    UF2_TARGET_ANY,    /* accept any family id (tools, tests) */
    UF2_TARGET_RP2350, /* what the pico2-ice bootrom would accept */
} uf2_target;

typedef struct {
    uint32_t base;   /* target address of the first payload byte */
    uint32_t family; /* family id of the program blocks */
    /* Prepend picotool's RP2350-E10 workaround block (an ABSOLUTE-family block
     * tagged "ignore"), as every pico-sdk 2.x RP2350 UF2 has. */
    bool e10_block;
} uf2_build_opts;

/* The assembled program of a valid image. */
typedef struct {
    uint32_t base;
    uint32_t family;
    uint8_t *data; /* malloc'd; uf2_image_free() */
    size_t len;
    size_t blocks; /* program blocks (the skipped E10/not-main-flash blocks excluded) */
} uf2_image;

/* Payload -> UF2 image (malloc'd, *out_len bytes). Payload is cut into 256-byte
 * blocks, the last one zero-padded, because the RP2040/RP2350 bootrom writes whole
 * 256-byte flash pages. Returns NULL for an empty payload, a payload that would
 * wrap the 32-bit address space, or out of memory. */
uint8_t *uf2_build(const uint8_t *payload, size_t len, const uf2_build_opts *opts, size_t *out_len);

/* Strict validation + assembly. Returns 0 and fills *out, or -1 with a reason in
 * `why` (bad magic, truncated, inconsistent block count, block out of order,
 * non-contiguous, oversize payload, missing/wrong family). Skips blocks flagged
 * not-main-flash and picotool's E10 "ignore" block; every other block must belong
 * to one contiguous, complete, in-order run with a single family. */
int uf2_parse(const uint8_t *img, size_t len, uf2_target target, uf2_image *out, char why[UF2_REASON_MAX]);

void uf2_image_free(uf2_image *img);

/* "RP2350_ARM_S" etc., or NULL for an unknown id. */
const char *uf2_family_name(uint32_t family);

#endif
