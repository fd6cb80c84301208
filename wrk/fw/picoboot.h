/* PICOBOOT: the RP2040/RP2350 bootrom's vendor USB interface (class 0xff, one bulk OUT
 * and one bulk IN endpoint), as the RP2350 datasheet (section 5.6) and
 * picotool's boot/picoboot.h define it. One definition of the wire format for
 * both ends the worker has: the libusb backend's flasher (usb/usb_picoboot.c)
 * encodes commands and decodes the status; the simulated bootrom
 * (sim/sim_picoboot.c) decodes commands and encodes the status.
 *
 * A command is a 32-byte packet on the OUT endpoint (little endian):
 *   0x00 dMagic 0x431fd10b   0x04 dToken   0x08 bCmdId (bit 7: data phase IN)
 *   0x09 bCmdSize (valid argument bytes)   0x0a reserved (2)
 *   0x0c dTransferLength     0x10 args (16, zero padded)
 * then dTransferLength bytes on IN (READ) or OUT (WRITE), then an empty packet
 * in the opposite direction of the data phase (IN when there is none). A refused
 * command halts both endpoints; the interface request GET_CMD_STATUS (0x42)
 * answers 16 bytes: dToken, dStatusCode, bCmdId, bInProgress, 6 reserved.
 *
 * Pure functions on caller buffers: no allocation, no state, re-entrant. They
 * follow icefarm/err.h where they can fail: 0 or -EBADMSG with one sentence in
 * `why` (always NUL-terminated when whylen > 0).
 */
#ifndef ICEFARM_WRK_PICOBOOT_H
#define ICEFARM_WRK_PICOBOOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PICOBOOT_MAGIC 0x431fd10bu
#define PICOBOOT_CMD_SIZE 32
#define PICOBOOT_ARGS_MAX 16
#define PICOBOOT_STATUS_SIZE 16

/* Interface control requests (vendor, recipient interface, wIndex = interface). */
#define PICOBOOT_IF_RESET 0x41      /* bmRequestType 0x41, no data */
#define PICOBOOT_IF_CMD_STATUS 0x42 /* bmRequestType 0xc1, wLength 16 */

#define PICOBOOT_FLASH_PAGE 256u    /* WRITE to flash: page aligned */
#define PICOBOOT_FLASH_SECTOR 4096u /* FLASH_ERASE: sector aligned and sized */
#define PICOBOOT_FLASH_BASE 0x10000000u

typedef enum {
    PC_EXCLUSIVE_ACCESS = 0x01, /* args: bExclusive (1 byte) */
    PC_REBOOT = 0x02,           /* RP2040: dPC, dSP, dDelayMS (12); RP2350 refuses it */
    PC_FLASH_ERASE = 0x03,      /* args: dAddr, dSize (8) */
    PC_READ = 0x84,             /* args: dAddr, dSize (8); dTransferLength = dSize */
    PC_WRITE = 0x05,            /* args: dAddr, dSize (8); dTransferLength = dSize */
    PC_EXIT_XIP = 0x06,
    PC_ENTER_CMD_XIP = 0x07,
    PC_EXEC = 0x08,            /* RP2040 only: dAddr (4) */
    PC_VECTORIZE_FLASH = 0x09, /* RP2040 only: dAddr (4) */
    PC_REBOOT2 = 0x0a,         /* RP2350: dFlags, dDelayMS, dParam0, dParam1 (16) */
    PC_GET_INFO = 0x8b,        /* RP2350: bType, bParam, wParam, dParams[3] (16) */
    PC_OTP_READ = 0x8c,        /* RP2350: wRow, wRowCount, bEcc (5) */
    PC_OTP_WRITE = 0x0d,       /* RP2350: wRow, wRowCount, bEcc (5) */
} picoboot_cmd_id;

typedef enum {
    PICOBOOT_OK = 0,
    PICOBOOT_UNKNOWN_CMD = 1,
    PICOBOOT_INVALID_CMD_LENGTH = 2,
    PICOBOOT_INVALID_TRANSFER_LENGTH = 3,
    PICOBOOT_INVALID_ADDRESS = 4,
    PICOBOOT_BAD_ALIGNMENT = 5,
    PICOBOOT_INTERLEAVED_WRITE = 6,
    PICOBOOT_REBOOTING = 7,
    PICOBOOT_UNKNOWN_ERROR = 8,
    PICOBOOT_INVALID_STATE = 9,
    PICOBOOT_NOT_PERMITTED = 10,
    PICOBOOT_INVALID_ARG = 11,
    PICOBOOT_BUFFER_TOO_SMALL = 12,
    PICOBOOT_PRECONDITION_NOT_MET = 13,
    PICOBOOT_MODIFIED_DATA = 14,
    PICOBOOT_INVALID_DATA = 15,
    PICOBOOT_NOT_FOUND = 16,
    PICOBOOT_UNSUPPORTED_MODIFICATION = 17,
} picoboot_status_code;

/* REBOOT2 dFlags (pico-sdk's boot/picoboot_constants.h). */
#define PICOBOOT_REBOOT2_TYPE_MASK 0x0fu
#define PICOBOOT_REBOOT2_NORMAL 0x0u       /* boot the image in flash */
#define PICOBOOT_REBOOT2_BOOTSEL 0x2u      /* back into BOOTSEL */
#define PICOBOOT_REBOOT2_RAM_IMAGE 0x3u    /* param0/1: the RAM image region */
#define PICOBOOT_REBOOT2_FLASH_UPDATE 0x4u /* param0: the updated region's base */
#define PICOBOOT_REBOOT2_PC_SP 0xdu        /* param0: PC, param1: SP */
#define PICOBOOT_REBOOT2_TO_ARM 0x10u
#define PICOBOOT_REBOOT2_TO_RISCV 0x20u
#define PICOBOOT_REBOOT2_NO_RETURN 0x100u

/* A command, decoded. args holds bCmdSize bytes (at most 16 are carried). */
typedef struct {
    uint32_t token;
    uint8_t id;
    uint8_t args_len; /* bCmdSize as sent: may exceed 16 in a malformed command */
    uint32_t xfer_len;
    uint8_t args[PICOBOOT_ARGS_MAX];
} picoboot_cmd;

/* GET_CMD_STATUS's answer. */
typedef struct {
    uint32_t token;
    uint32_t code; /* picoboot_status_code */
    uint8_t cmd_id;
    bool in_progress;
} picoboot_status;

uint32_t picoboot_get32(const uint8_t *p);
void picoboot_put32(uint8_t *p, uint32_t v);

/* The 32-byte packet of `c` (args_len clamped to 16; the padding zeroed). */
void picoboot_cmd_pack(const picoboot_cmd *c, uint8_t out[PICOBOOT_CMD_SIZE]);
/* A command of `id` with args[0..nargs) (nargs <= 16), token and transfer length. */
void picoboot_cmd_make(picoboot_cmd *c, uint32_t token, uint8_t id, const uint8_t *args, uint8_t nargs,
                       uint32_t xfer_len);
/* Decodes one OUT packet as a command: 0, or -EBADMSG when it is not one (not
 * exactly 32 bytes, wrong magic). The bootrom ignores such a packet except for
 * halting its endpoints; GET_CMD_STATUS still reports the previous command. */
int picoboot_cmd_unpack(const uint8_t *buf, size_t len, picoboot_cmd *out, char *why, size_t whylen);
/* The RP2350 bootrom's acceptance of a decoded command before it runs it: the
 * command id is one it knows, bCmdSize is that command's exact argument size,
 * and dTransferLength is what the command moves (dSize for READ and WRITE, at
 * most 256 for GET_INFO, 0 otherwise). PICOBOOT_OK, or UNKNOWN_CMD,
 * INVALID_CMD_LENGTH or INVALID_TRANSFER_LENGTH with the reason in `why`. A
 * command this accepts may still fail as it runs (address, alignment). */
picoboot_status_code picoboot_cmd_check(const picoboot_cmd *c, char *why, size_t whylen);
/* The range of READ, WRITE and FLASH_ERASE (args dAddr, dSize). */
void picoboot_cmd_range(const picoboot_cmd *c, uint32_t *addr, uint32_t *size);

void picoboot_status_pack(const picoboot_status *s, uint8_t out[PICOBOOT_STATUS_SIZE]);
/* 0, or -EBADMSG for fewer than 16 bytes. */
int picoboot_status_unpack(const uint8_t *buf, size_t len, picoboot_status *out, char *why, size_t whylen);

/* "EXCLUSIVE_ACCESS", ..., or "?" for an unknown id. */
const char *picoboot_cmd_name(uint8_t id);
/* "ok", "unknown command", ..., or "unknown status". */
const char *picoboot_status_name(uint32_t code);

#endif
