#include "sim_firmware.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "uf2.h"

/* Big enough to take a few dozen UF2 blocks like a real (small) firmware, small
 * enough to flash thousands of times in tests. */
#define SIM_FW_PAYLOAD 16384u

static const char *const names[] = {
    [SIM_FW_UNKNOWN] = "unknown",
    [SIM_FW_DEFAULT] = "default",
    [SIM_FW_PULSECOUNT] = "pulsecount",
    [SIM_FW_VARIANCE] = "variance",
};

const char *sim_fw_kind_name(sim_fw_kind kind)
{
    if ((unsigned)kind < sizeof names / sizeof names[0])
        return names[kind];
    return "unknown";
}

int sim_fw_kind_from_name(const char *name, sim_fw_kind *out)
{
    for (size_t i = 0; name && i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(name, names[i]) == 0) {
            *out = (sim_fw_kind)i;
            return 0;
        }
    }
    return -1;
}

uint8_t *sim_fw_build_uf2(sim_fw_kind kind, size_t *len)
{
    uint8_t *payload = malloc(SIM_FW_PAYLOAD);
    if (!payload)
        return NULL;
    int n = snprintf((char *)payload, SIM_FW_PAYLOAD, SIM_FW_MARKER "%s\n", sim_fw_kind_name(kind));
    /* Deterministic filler (xorshift32 seeded per kind) so each kind's image is
     * stable across builds and different from the others. */
    uint32_t x = 0x1cefa5u + (uint32_t)kind;
    for (size_t i = (size_t)n; i < SIM_FW_PAYLOAD; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        payload[i] = (uint8_t)x;
    }
    uf2_build_opts opts = { .base = SIM_FW_BASE, .family = UF2_FAMILY_RP2350_ARM_S, .e10_block = true };
    uint8_t *img = uf2_build(payload, SIM_FW_PAYLOAD, &opts, len);
    free(payload);
    return img;
}

sim_fw_kind sim_fw_identify(const uint8_t *payload, size_t len)
{
    size_t mlen = sizeof SIM_FW_MARKER - 1;
    if (!payload || len <= mlen || memcmp(payload, SIM_FW_MARKER, mlen) != 0)
        return SIM_FW_UNKNOWN;
    const char *kind = (const char *)payload + mlen;
    size_t rest = len - mlen;
    const char *nl = memchr(kind, '\n', rest < 32 ? rest : 32);
    if (!nl)
        return SIM_FW_UNKNOWN;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        size_t l = strlen(names[i]);
        if ((size_t)(nl - kind) == l && memcmp(kind, names[i], l) == 0)
            return (sim_fw_kind)i;
    }
    return SIM_FW_UNKNOWN;
}
