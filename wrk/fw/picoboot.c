/* The PICOBOOT wire format (picoboot.h): packing, unpacking and the bootrom's
 * acceptance rules for a command block. */
#include "picoboot.h"

#include "icefarm/err.h"

#include <errno.h>
#include <string.h>

uint32_t picoboot_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void picoboot_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

void picoboot_cmd_make(picoboot_cmd *c, uint32_t token, uint8_t id, const uint8_t *args, uint8_t nargs,
                       uint32_t xfer_len)
{
    memset(c, 0, sizeof *c);
    c->token = token;
    c->id = id;
    c->args_len = nargs > PICOBOOT_ARGS_MAX ? PICOBOOT_ARGS_MAX : nargs;
    c->xfer_len = xfer_len;
    if (args && c->args_len)
        memcpy(c->args, args, c->args_len);
}

void picoboot_cmd_pack(const picoboot_cmd *c, uint8_t out[PICOBOOT_CMD_SIZE])
{
    uint8_t n = c->args_len > PICOBOOT_ARGS_MAX ? PICOBOOT_ARGS_MAX : c->args_len;
    memset(out, 0, PICOBOOT_CMD_SIZE);
    picoboot_put32(out, PICOBOOT_MAGIC);
    picoboot_put32(out + 4, c->token);
    out[8] = c->id;
    out[9] = n;
    picoboot_put32(out + 12, c->xfer_len);
    memcpy(out + 16, c->args, n);
}

int picoboot_cmd_unpack(const uint8_t *buf, size_t len, picoboot_cmd *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    if (!buf || len != PICOBOOT_CMD_SIZE)
        return ifm_failbuf(why, whylen, -EBADMSG, "a PICOBOOT command is exactly %d bytes, this packet has %zu",
                           PICOBOOT_CMD_SIZE, len);
    uint32_t magic = picoboot_get32(buf);
    if (magic != PICOBOOT_MAGIC)
        return ifm_failbuf(why, whylen, -EBADMSG, "dMagic is 0x%08x, not 0x%08x", magic, PICOBOOT_MAGIC);
    out->token = picoboot_get32(buf + 4);
    out->id = buf[8];
    out->args_len = buf[9];
    out->xfer_len = picoboot_get32(buf + 12);
    memcpy(out->args, buf + 16, PICOBOOT_ARGS_MAX);
    return 0;
}

/* What each command carries, as the RP2350 bootrom checks it. */
typedef enum {
    XFER_NONE,  /* dTransferLength must be 0 */
    XFER_RANGE, /* dTransferLength must be dSize */
    XFER_UPTO,  /* at most 256 (GET_INFO's single buffer) */
    XFER_OTP,   /* wRowCount rows of 2 (ECC) or 4 (raw) bytes */
} xfer_rule;

typedef struct {
    uint8_t id;
    uint8_t args;
    xfer_rule rule;
    const char *name;
} cmd_info;

static const cmd_info cmds[] = {
    { PC_EXCLUSIVE_ACCESS, 1, XFER_NONE, "EXCLUSIVE_ACCESS" },
    { PC_REBOOT, 12, XFER_NONE, "REBOOT" },
    { PC_FLASH_ERASE, 8, XFER_NONE, "FLASH_ERASE" },
    { PC_READ, 8, XFER_RANGE, "READ" },
    { PC_WRITE, 8, XFER_RANGE, "WRITE" },
    { PC_EXIT_XIP, 0, XFER_NONE, "EXIT_XIP" },
    { PC_ENTER_CMD_XIP, 0, XFER_NONE, "ENTER_CMD_XIP" },
    { PC_EXEC, 4, XFER_NONE, "EXEC" },
    { PC_VECTORIZE_FLASH, 4, XFER_NONE, "VECTORIZE_FLASH" },
    { PC_REBOOT2, 16, XFER_NONE, "REBOOT2" },
    { PC_GET_INFO, 16, XFER_UPTO, "GET_INFO" },
    { PC_OTP_READ, 5, XFER_OTP, "OTP_READ" },
    { PC_OTP_WRITE, 5, XFER_OTP, "OTP_WRITE" },
};

static const cmd_info *info_of(uint8_t id)
{
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (cmds[i].id == id)
            return &cmds[i];
    return NULL;
}

const char *picoboot_cmd_name(uint8_t id)
{
    const cmd_info *ci = info_of(id);
    return ci ? ci->name : "?";
}

void picoboot_cmd_range(const picoboot_cmd *c, uint32_t *addr, uint32_t *size)
{
    *addr = picoboot_get32(c->args);
    *size = picoboot_get32(c->args + 4);
}

/* The bootrom looks the id up with the direction bit masked off (so 0x04 runs
 * as READ with an OUT data phase); this takes only the ids the interface
 * defines, with their direction bit, and calls the rest unknown. */
picoboot_status_code picoboot_cmd_check(const picoboot_cmd *c, char *why, size_t whylen)
{
    const cmd_info *ci = info_of(c->id);
    if (!ci)
        return ifm_failbuf(why, whylen, PICOBOOT_UNKNOWN_CMD, "bCmdId 0x%02x is not a PICOBOOT command", c->id);
    if (c->args_len != ci->args) {
        return ifm_failbuf(why, whylen, PICOBOOT_INVALID_CMD_LENGTH, "%s takes %u argument bytes, bCmdSize is %u",
                           ci->name, ci->args, c->args_len);
    }
    uint32_t want = 0;
    switch (ci->rule) {
    case XFER_NONE:
        break;
    case XFER_RANGE:
        want = picoboot_get32(c->args + 4);
        break;
    case XFER_UPTO:
        if (c->xfer_len <= 256)
            return PICOBOOT_OK;
        return ifm_failbuf(why, whylen, PICOBOOT_INVALID_TRANSFER_LENGTH,
                           "%s moves at most 256 bytes, dTransferLength is %u", ci->name, c->xfer_len);
    case XFER_OTP: {
        uint32_t rows = (uint32_t)c->args[2] | (uint32_t)c->args[3] << 8;
        want = rows * (c->args[4] ? 2u : 4u);
        break;
    }
    }
    if (c->xfer_len != want)
        return ifm_failbuf(why, whylen, PICOBOOT_INVALID_TRANSFER_LENGTH, "%s moves %u bytes, dTransferLength is %u",
                           ci->name, want, c->xfer_len);
    return PICOBOOT_OK;
}

void picoboot_status_pack(const picoboot_status *s, uint8_t out[PICOBOOT_STATUS_SIZE])
{
    memset(out, 0, PICOBOOT_STATUS_SIZE);
    picoboot_put32(out, s->token);
    picoboot_put32(out + 4, s->code);
    out[8] = s->cmd_id;
    out[9] = s->in_progress ? 1 : 0;
}

int picoboot_status_unpack(const uint8_t *buf, size_t len, picoboot_status *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    if (!buf || len < PICOBOOT_STATUS_SIZE)
        return ifm_failbuf(why, whylen, -EBADMSG, "a PICOBOOT command status is %d bytes, got %zu",
                           PICOBOOT_STATUS_SIZE, len);
    out->token = picoboot_get32(buf);
    out->code = picoboot_get32(buf + 4);
    out->cmd_id = buf[8];
    out->in_progress = buf[9] != 0;
    return 0;
}

const char *picoboot_status_name(uint32_t code)
{
    static const char *const names[] = {
        "ok",
        "unknown command",
        "invalid command length",
        "invalid transfer length",
        "invalid address",
        "bad alignment",
        "interleaved write",
        "rebooting",
        "unknown error",
        "invalid state",
        "not permitted",
        "invalid argument",
        "buffer too small",
        "precondition not met",
        "modified data",
        "invalid data",
        "not found",
        "unsupported modification",
    };
    return code < sizeof names / sizeof names[0] ? names[code] : "unknown status";
}
