/* The simulated backend: pico2-ice boards that live in the worker's ifm_loop.
 *
 * Each board behaves like a real one at the transport boundary: it enumerates
 * with the VID:PID of the firmware it runs, reboots into BOOTSEL on the 1200-baud
 * touch, validates and "flashes" UF2 images (sim_firmware.h decides what boots),
 * and speaks the firmware's serial protocol byte for byte (wrk/README.md). At
 * the URB level it is a whole USB device in each of its identities; in BOOTSEL
 * its PICOBOOT interface erases, writes and reads a flash memory and reboots
 * into what was written (sim_picoboot.c).
 * Only timers are used: no threads, no fds. See wrk/README.md for the full model.
 *
 * Measurements are deterministic functions of the bitstream so tests can prove
 * every byte arrived:
 *   crc    = CRC-32/IEEE 802.3 (zlib's crc32: reflected poly 0xEDB88320, init
 *            0xFFFFFFFF, final xor 0xFFFFFFFF) of the 104090 received bytes;
 *   pulses = crc % 100000;
 *   samples: x = crc (or 0x9E3779B9 if crc == 0); 500 times:
 *            x ^= x << 13; x ^= x >> 17; x ^= x << 5 (xorshift32, 32-bit);
 *            sample = x >> 20 (the top 12 bits, 0..4095).
 */
#ifndef ICEFARM_WRK_SIM_H
#define ICEFARM_WRK_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sim_firmware.h"
#include "transport.h"

#define SIM_SERIAL_LEN 16 /* like a real RP2350 board id: 16 uppercase hex digits */
#define SIM_SAMPLES 500   /* what the variance firmware prints */
/* The board's QSPI flash as PICOBOOT sees it, at 0x10000000. */
#define SIM_FLASH_SIZE (4u << 20)

typedef struct {
    unsigned boards;            /* how many boards are plugged in at start */
    const char *seed;           /* serials derive from seed + index (copied) */
    sim_fw_kind initial_fw;     /* what the boards run at start (default firmware) */
    uint32_t count_window_ms;   /* pulse count / ADC sampling time (1000) */
    uint32_t flash_ms;          /* time to write a UF2 in BOOTSEL (300) */
    uint32_t enum_ms;           /* reboot to re-enumeration (150) */
    uint32_t default_print_ms;  /* "default firmware" line interval while open (5) */
    uint32_t watchdog_ms;       /* firmware receive watchdog (2000, as the real one) */
    uint32_t replug_ms;         /* DISCONNECT: away this long before re-arriving (1000) */
    uint32_t slow_flash_factor; /* SLOW_FLASH multiplies flash_ms by this (10) */
    uint32_t usb_packet;        /* bytes moved per direction per USB tick (512) */
    uint32_t usb_tick_ms;       /* USB tick period; 0 = every loop turn (0) */
} sim_options;

typedef enum {
    SIM_FAULT_HANG,       /* firmware freezes (mid-transfer / next print) until touch or re-flash */
    SIM_FAULT_WATCHDOG,   /* second half of the next transfer is lost: the watchdog fires */
    SIM_FAULT_DISCONNECT, /* leaves now, re-arrives after replug_ms; count > 1 keeps flapping */
    SIM_FAULT_UNPLUG,     /* leaves now and stays away until sim_plug() */
    SIM_FAULT_SLOW_FLASH, /* the next flash takes slow_flash_factor x flash_ms */
    SIM_FAULT_WRONG_FW,   /* the next flash boots silent unknown firmware */
    SIM_FAULT_FLASH_FAIL, /* the next flash_uf2 reports an error, board stays in BOOTSEL */
    /* The URB level (an exported board): */
    SIM_FAULT_NO_COMPLETION, /* the next bulk or interrupt URB never completes (until cancelled) */
    SIM_FAULT_STALL,         /* the next bulk URB stalls (-EPIPE) and halts its endpoint until CLEAR_FEATURE */
    /* Hooks for the USB/IP server on top (wrk_hook, transport.h): */
    SIM_FAULT_PARTIAL_PDU, /* the next RET_SUBMIT goes out half written, then the connection closes */
    SIM_FAULT_LATE_UNLINK, /* the next RET_UNLINK waits until after the next RET_SUBMIT */
    SIM_FAULT_BUSY_IMPORT, /* the next import is answered ST_DEV_BUSY */
    SIM_FAULT_COUNT
} sim_fault;

void sim_options_default(sim_options *o);

/* NULL if out of memory or the options are unusable (0 boards is allowed). */
wrk_transport *sim_transport_new(ifm_loop *loop, const sim_options *opts);

/* Arm `fault` on the board with `serial` for the next `count` occasions (count 0
 * disarms it). DISCONNECT and UNPLUG act at once (from a later loop turn).
 * Returns 0, -ENODEV (no such serial), -EINVAL (not a sim transport / bad fault),
 * or -EALREADY (UNPLUG/DISCONNECT of a board that is unplugged). */
int sim_inject(wrk_transport *t, const char *serial, sim_fault fault, unsigned count);
/* Plug an unplugged board back in: it boots its flashed firmware and arrives
 * after enum_ms. -EALREADY if it is plugged in, -ENODEV for an unknown serial. */
int sim_plug(wrk_transport *t, const char *serial);

/* "hang", "watchdog", "disconnect", "unplug", "slow_flash", "wrong_fw",
 * "flash_fail", "no_completion", "stall", "partial_pdu", "late_unlink",
 * "busy_import" (case-insensitive, '-' accepted for '_'). Returns 0 or -1. */
int sim_fault_from_name(const char *name, sim_fault *out);
const char *sim_fault_name(sim_fault fault);

size_t sim_board_count(const wrk_transport *t);
/* Serial of board `i` (0..count-1), or NULL. */
const char *sim_board_serial(const wrk_transport *t, size_t i);
/* The serial of board `index` of a sim seeded with `seed`: 16 uppercase hex digits
 * of a 64-bit FNV-1a hash of "<seed>/<index>", finalised with splitmix64. */
void sim_serial_for(const char *seed, unsigned index, char out[SIM_SERIAL_LEN + 1]);

/* The definitions in the header comment, for tests and end-to-end checks. */
uint32_t sim_crc32(uint32_t crc, const uint8_t *data, size_t len); /* start with crc = 0 */
uint32_t sim_expected_pulses(const uint8_t *bitstream, size_t len);
void sim_expected_samples(const uint8_t *bitstream, size_t len, uint16_t out[SIM_SAMPLES]);
/* The same from a finished CRC (the sim computes it while bytes stream in). */
uint32_t sim_pulses_from_crc(uint32_t crc);
void sim_samples_from_crc(uint32_t crc, uint16_t out[SIM_SAMPLES]);

#endif
