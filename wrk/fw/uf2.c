#include "uf2.h"
#include "icefarm/err.h"

#include <stdlib.h>
#include <string.h>

/* Block layout (all little-endian words). */
enum {
    OFF_MAGIC0 = 0,
    OFF_MAGIC1 = 4,
    OFF_FLAGS = 8,
    OFF_ADDR = 12,
    OFF_SIZE = 16,
    OFF_BLOCKNO = 20,
    OFF_NBLOCKS = 24,
    OFF_FAMILY = 28,
    OFF_DATA = 32,
    OFF_MAGIC_END = 508,
};

/* The RP2040/RP2350 bootrom programs whole 256-byte pages, so builders use that size. */
#define PAGE 256u

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

const char *uf2_family_name(uint32_t family)
{
    switch (family) {
    case UF2_FAMILY_RP2040:
        return "RP2040";
    case UF2_FAMILY_ABSOLUTE:
        return "ABSOLUTE";
    case UF2_FAMILY_DATA:
        return "DATA";
    case UF2_FAMILY_RP2350_ARM_S:
        return "RP2350_ARM_S";
    case UF2_FAMILY_RP2350_RISCV:
        return "RP2350_RISCV";
    case UF2_FAMILY_RP2350_ARM_NS:
        return "RP2350_ARM_NS";
    default:
        return NULL;
    }
}

static void header(uint8_t *b, uint32_t flags, uint32_t addr, uint32_t size, uint32_t no, uint32_t n, uint32_t family)
{
    wr32(b + OFF_MAGIC0, UF2_MAGIC_START0);
    wr32(b + OFF_MAGIC1, UF2_MAGIC_START1);
    wr32(b + OFF_FLAGS, flags);
    wr32(b + OFF_ADDR, addr);
    wr32(b + OFF_SIZE, size);
    wr32(b + OFF_BLOCKNO, no);
    wr32(b + OFF_NBLOCKS, n);
    wr32(b + OFF_FAMILY, family);
    wr32(b + OFF_MAGIC_END, UF2_MAGIC_END);
}

uint8_t *uf2_build(const uint8_t *payload, size_t len, const uf2_build_opts *opts, size_t *out_len)
{
    if (!payload || len == 0 || !opts)
        return NULL;
    size_t nprog = (len + PAGE - 1) / PAGE;
    if ((uint64_t)opts->base + (uint64_t)nprog * PAGE > UINT64_C(0x100000000))
        return NULL;
    size_t nall = nprog + (opts->e10_block ? 1 : 0);
    uint8_t *img = calloc(nall, UF2_BLOCK_SIZE);
    if (!img)
        return NULL;
    uint8_t *b = img;
    if (opts->e10_block) {
        /* Exactly what picotool emits: 256 bytes of 0xef at 0x10ffff00, "block 0 of
         * 2" so the bootrom does not treat it as a complete download. */
        header(b, UF2_FLAG_FAMILY_ID_PRESENT | UF2_FLAG_EXTENSION_TAGS, UF2_RP2350_E10_ADDR, PAGE, 0, 2,
               UF2_FAMILY_ABSOLUTE);
        memset(b + OFF_DATA, 0xef, PAGE);
        wr32(b + OFF_DATA + PAGE, UF2_EXT_RP2_IGNORE_BLOCK);
        b += UF2_BLOCK_SIZE;
    }
    for (size_t i = 0; i < nprog; i++, b += UF2_BLOCK_SIZE) {
        size_t off = i * PAGE;
        size_t n = len - off < PAGE ? len - off : PAGE;
        header(b, UF2_FLAG_FAMILY_ID_PRESENT, opts->base + (uint32_t)off, PAGE, (uint32_t)i, (uint32_t)nprog,
               opts->family);
        memcpy(b + OFF_DATA, payload + off, n);
    }
    *out_len = nall * UF2_BLOCK_SIZE;
    return img;
}

/* picotool's RP2350-E10 block carries an extension tag saying "ignore this block". */
static bool is_ignore_block(const uint8_t *b, uint32_t flags, uint32_t size)
{
    if (!(flags & UF2_FLAG_EXTENSION_TAGS) || !(flags & UF2_FLAG_FAMILY_ID_PRESENT) ||
        rd32(b + OFF_FAMILY) != UF2_FAMILY_ABSOLUTE)
        return false;
    /* Tags follow the payload, 4-aligned: [size:8][type:24], a zero word ends them. */
    for (size_t pos = (size + 3u) & ~3u; pos + 4 <= UF2_MAX_PAYLOAD;) {
        uint32_t tag = rd32(b + OFF_DATA + pos);
        if (tag == UF2_EXT_RP2_IGNORE_BLOCK)
            return true;
        uint32_t tsize = tag & 0xff;
        if (tag == 0 || tsize < 4)
            return false;
        pos += (tsize + 3u) & ~3u;
    }
    return false;
}

static int check_family(uf2_target target, uint32_t family, char *why)
{
    if (target == UF2_TARGET_ANY)
        return 0;
    switch (family) {
    case UF2_FAMILY_RP2350_ARM_S:
    case UF2_FAMILY_RP2350_RISCV:
    case UF2_FAMILY_RP2350_ARM_NS:
    case UF2_FAMILY_ABSOLUTE:
        return 0;
    case UF2_FAMILY_RP2040:
        return ifm_failbuf(why, UF2_REASON_MAX, -1, "wrong family: RP2040 image (0x%08x) cannot run on an RP2350",
                           family);
    default: {
        const char *name = uf2_family_name(family);
        if (name)
            return ifm_failbuf(why, UF2_REASON_MAX, -1, "wrong family: %s (0x%08x) is not an RP2350 program", name,
                               family);
        return ifm_failbuf(why, UF2_REASON_MAX, -1, "wrong family: unknown family id 0x%08x", family);
    }
    }
}

int uf2_parse(const uint8_t *img, size_t len, uf2_target target, uf2_image *out, char why[UF2_REASON_MAX])
{
    memset(out, 0, sizeof *out);
    why[0] = '\0';
    if (!img || len == 0)
        return ifm_failbuf(why, UF2_REASON_MAX, -1, "empty image");
    if (len % UF2_BLOCK_SIZE)
        return ifm_failbuf(why, UF2_REASON_MAX, -1, "truncated: %zu bytes is not a whole number of 512-byte blocks",
                           len);
    size_t nblk = len / UF2_BLOCK_SIZE;

    /* Pass 1: validate every block and size the program. */
    size_t k = 0, total = 0;
    uint32_t family = 0, count = 0, base = 0, next = 0;
    for (size_t i = 0; i < nblk; i++) {
        const uint8_t *b = img + i * UF2_BLOCK_SIZE;
        if (rd32(b + OFF_MAGIC0) != UF2_MAGIC_START0 || rd32(b + OFF_MAGIC1) != UF2_MAGIC_START1 ||
            rd32(b + OFF_MAGIC_END) != UF2_MAGIC_END)
            return ifm_failbuf(why, UF2_REASON_MAX, -1, "block %zu: bad magic", i);
        uint32_t flags = rd32(b + OFF_FLAGS), addr = rd32(b + OFF_ADDR);
        uint32_t size = rd32(b + OFF_SIZE), no = rd32(b + OFF_BLOCKNO);
        uint32_t n = rd32(b + OFF_NBLOCKS), fam = rd32(b + OFF_FAMILY);
        if (flags & UF2_FLAG_FILE_CONTAINER)
            return ifm_failbuf(why, UF2_REASON_MAX, -1, "block %zu: file-container UF2 is not a firmware image", i);
        if (size > UF2_MAX_PAYLOAD)
            return ifm_failbuf(why, UF2_REASON_MAX, -1, "block %zu: oversize payload %u > %d", i, size,
                               UF2_MAX_PAYLOAD);
        if (size == 0)
            return ifm_failbuf(why, UF2_REASON_MAX, -1, "block %zu: empty payload", i);
        if ((flags & UF2_FLAG_NOT_MAIN_FLASH) || is_ignore_block(b, flags, size))
            continue;
        if (!(flags & UF2_FLAG_FAMILY_ID_PRESENT)) {
            if (target != UF2_TARGET_ANY)
                return ifm_failbuf(why, UF2_REASON_MAX, -1, "block %zu: no family id", i);
            fam = 0;
        }
        if (k == 0) {
            if (check_family(target, fam, why) != 0)
                return -1;
            if (n == 0)
                return ifm_failbuf(why, UF2_REASON_MAX, -1, "block %zu: inconsistent block count 0", i);
            family = fam;
            count = n;
            base = addr;
        } else {
            if (fam != family)
                return ifm_failbuf(why, UF2_REASON_MAX, -1, "block %zu: wrong family: 0x%08x in an image of 0x%08x", i,
                                   fam, family);
            if (n != count)
                return ifm_failbuf(why, UF2_REASON_MAX, -1,
                                   "block %zu: inconsistent block count %u, earlier blocks said %u", i, n, count);
        }
        if (no != k)
            return ifm_failbuf(why, UF2_REASON_MAX, -1,
                               "block %zu: numbered %u, expected %zu (out of order or missing)", i, no, k);
        if (no >= count)
            return ifm_failbuf(why, UF2_REASON_MAX, -1, "block %zu: inconsistent block count: number %u of %u", i, no,
                               count);
        if (k > 0 && addr != next)
            return ifm_failbuf(why, UF2_REASON_MAX, -1, "block %zu: non-contiguous: address 0x%08x, expected 0x%08x", i,
                               addr, next);
        if ((uint64_t)addr + size > UINT64_C(0x100000000))
            return ifm_failbuf(why, UF2_REASON_MAX, -1, "block %zu: payload runs past the 32-bit address space", i);
        next = addr + size;
        total += size;
        k++;
    }
    if (k == 0)
        return ifm_failbuf(why, UF2_REASON_MAX, -1, "no program blocks");
    if (k < count)
        return ifm_failbuf(why, UF2_REASON_MAX, -1, "truncated: %zu of %u blocks present", k, count);

    /* Pass 2: assemble. */
    uint8_t *data = malloc(total);
    if (!data)
        return ifm_failbuf(why, UF2_REASON_MAX, -1, "out of memory");
    size_t at = 0;
    for (size_t i = 0; i < nblk; i++) {
        const uint8_t *b = img + i * UF2_BLOCK_SIZE;
        uint32_t flags = rd32(b + OFF_FLAGS), size = rd32(b + OFF_SIZE);
        if ((flags & UF2_FLAG_NOT_MAIN_FLASH) || is_ignore_block(b, flags, size))
            continue;
        memcpy(data + at, b + OFF_DATA, size);
        at += size;
    }
    *out = (uf2_image){ .base = base, .family = family, .data = data, .len = total, .blocks = k };
    return 0;
}

void uf2_image_free(uf2_image *img)
{
    if (!img)
        return;
    free(img->data);
    img->data = NULL;
    img->len = 0;
}
