/* Simulated firmware images: real, valid UF2 files that a simulated board
 * recognises by a marker line at the start of the payload, so the worker can run
 * its normal flash path without the real pico2-ice firmware builds.
 *
 * Payload: "ICEFARM-SIM-FIRMWARE v1 kind=<kind>\n" followed by filler, packed as
 * family RP2350_ARM_S at 0x10000000 with picotool's RP2350-E10 block in front.
 * Any other payload (including real firmware) boots a simulated board into
 * "unknown firmware": it enumerates as 2e8a:0009 and never prints.
 */
#ifndef ICEFARM_WRK_SIM_FIRMWARE_H
#define ICEFARM_WRK_SIM_FIRMWARE_H

#include <stddef.h>
#include <stdint.h>

#define SIM_FW_MARKER "ICEFARM-SIM-FIRMWARE v1 kind="
#define SIM_FW_BASE 0x10000000u

typedef enum {
    SIM_FW_UNKNOWN,    /* valid UF2, not ours: the "wrong firmware" board */
    SIM_FW_DEFAULT,    /* prints "default firmware" (section 5.1) */
    SIM_FW_PULSECOUNT, /* bitstream in, "pulses: N" out (section 5.2) */
    SIM_FW_VARIANCE,   /* bitstream in, "samples: ..." out (section 5.3) */
} sim_fw_kind;

/* "default", "pulsecount", "variance", "unknown". */
const char *sim_fw_kind_name(sim_fw_kind kind);
/* Inverse of sim_fw_kind_name; returns 0, or -1 for an unknown name. */
int sim_fw_kind_from_name(const char *name, sim_fw_kind *out);

/* A complete UF2 image for `kind` (malloc'd, *len bytes). SIM_FW_UNKNOWN builds
 * an image with marker "kind=unknown", which identifies as unknown: handy to
 * provoke the wrong-firmware path with a well-formed file. NULL if out of memory. */
uint8_t *sim_fw_build_uf2(sim_fw_kind kind, size_t *len);

/* Which simulated firmware an assembled UF2 payload is. */
sim_fw_kind sim_fw_identify(const uint8_t *payload, size_t len);

#endif
