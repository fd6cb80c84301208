/* The simulated bootrom's PICOBOOT interface at the URB level (interface 1 of
 * the BOOTSEL identity, bulk OUT 0x03 and IN 0x84), and the board's flash it
 * reads and writes: what picotool, or the worker's own flasher
 * (usb/usb_picoboot.c), talks to on a real RP2350 in BOOTSEL. The wire format
 * is fw/picoboot.h; the behaviour follows the RP2350 datasheet (5.6) and the
 * bootrom:
 *
 *  - OUT is taken one packet (64 bytes, or the URB's short tail) at a time. In
 *    the idle phase a packet is a command: one that is not exactly 32 bytes with
 *    the magic halts both endpoints and leaves GET_CMD_STATUS as it was; one the
 *    bootrom does not accept (picoboot_cmd_check) or that fails as it runs halts
 *    both endpoints and GET_CMD_STATUS tells the code. The packet itself is
 *    acknowledged (its URB completes); the host meets the stall on its next
 *    transfer (the data or the acknowledgement).
 *  - WRITE takes dTransferLength bytes from OUT and programs them 256 bytes at a
 *    time; READ hands them to IN (a URB completes when full or on a short
 *    packet). Each 256-byte piece is checked as it is reached: inside the 4 MiB
 *    flash at 0x10000000 (else INVALID_ADDRESS) and, for WRITE, page aligned
 *    (else BAD_ALIGNMENT), so a bad range stalls the data phase, as on the chip.
 *  - The command ends with an empty packet on IN, or, after READ, with any one
 *    packet the host sends on OUT (picotool sends 1 byte, a ZLP does as well).
 *  - FLASH_ERASE wants a 4 KiB aligned address and size. WRITE programs like NOR
 *    flash: bits only go from 1 to 0, so writing unerased flash stores the AND of
 *    old and new ("results are undefined", says the datasheet; the bootrom does
 *    not refuse it) and READ shows it. A short last page is zero filled.
 *  - EXCLUSIVE_ACCESS is recorded (there is no mass storage to lock out);
 *    EXIT_XIP and ENTER_CMD_XIP are no-ops, as on the RP2350.
 *  - REBOOT2 is acknowledged, then the board leaves after dDelayMS: NORMAL and
 *    FLASH_UPDATE boot what the flash holds (sim_fw_identify decides the
 *    identity, as a flash through the worker does; blank flash comes back in
 *    BOOTSEL, as the bootrom finds nothing to boot), BOOTSEL comes back in
 *    BOOTSEL. RAM_IMAGE and PC_SP (there is no RAM in the model) and unknown
 *    types are NOT_PERMITTED.
 *  - REBOOT, EXEC and VECTORIZE_FLASH are RP2040 commands: UNKNOWN_CMD, as the
 *    RP2350 answers. GET_INFO and the OTP commands are not modelled: UNKNOWN_CMD.
 *  - INTERFACE_RESET (0x41) clears both halts, the status and the exclusive
 *    access, and abandons the command in progress; so do a bus reset and
 *    SET_CONFIGURATION.
 *
 * Everything runs from the USB tick (sim_urb.c); nothing here calls back.
 */
#include <stdlib.h>
#include <string.h>

#include "sim_internal.h"

#define SLOT_OUT (SIM_PB_EP_OUT & 0x0f)
#define SLOT_IN ((SIM_PB_EP_IN & 0x0f) | 16)
#define PAGE PICOBOOT_FLASH_PAGE
#define SECTOR PICOBOOT_FLASH_SECTOR

bool sim_pb_slot(int slot)
{
    return slot == SLOT_OUT || slot == SLOT_IN;
}

/* ---- flash ---- */

void sim_flash_free(sim_board *b)
{
    if (b->flash) {
        for (size_t i = 0; i < SIM_FLASH_SECTORS; i++)
            free(b->flash[i]);
        free(b->flash);
    }
    b->flash = NULL;
    b->flash_valid = false;
}

static bool in_flash(uint32_t addr, uint32_t len)
{
    return addr >= PICOBOOT_FLASH_BASE && addr - PICOBOOT_FLASH_BASE <= SIM_FLASH_SIZE &&
        len <= SIM_FLASH_SIZE - (addr - PICOBOOT_FLASH_BASE);
}

static void erase_sectors(sim_board *b, uint32_t addr, uint32_t len)
{
    for (uint32_t off = addr - PICOBOOT_FLASH_BASE; off < addr - PICOBOOT_FLASH_BASE + len; off += SECTOR) {
        free(b->flash[off / SECTOR]);
        b->flash[off / SECTOR] = NULL;
    }
}

/* NOR programming: AND into what is there. -ENOMEM if a sector cannot be had. */
static int program(sim_board *b, uint32_t addr, const uint8_t *data, uint32_t len)
{
    uint32_t off = addr - PICOBOOT_FLASH_BASE;
    for (uint32_t i = 0; i < len;) {
        uint8_t **sec = &b->flash[(off + i) / SECTOR];
        uint32_t in_sec = (off + i) % SECTOR, n = SECTOR - in_sec;
        if (n > len - i)
            n = len - i;
        if (!*sec) {
            *sec = malloc(SECTOR);
            if (!*sec)
                return -ENOMEM;
            memset(*sec, 0xff, SECTOR);
        }
        for (uint32_t k = 0; k < n; k++)
            (*sec)[in_sec + k] &= data[i + k];
        i += n;
    }
    return 0;
}

static void flash_read(const sim_board *b, uint32_t addr, uint8_t *out, uint32_t len)
{
    uint32_t off = addr - PICOBOOT_FLASH_BASE;
    for (uint32_t i = 0; i < len;) {
        const uint8_t *sec = b->flash[(off + i) / SECTOR];
        uint32_t in_sec = (off + i) % SECTOR, n = SECTOR - in_sec;
        if (n > len - i)
            n = len - i;
        if (sec)
            memcpy(out + i, sec + in_sec, n);
        else
            memset(out + i, 0xff, n);
        i += n;
    }
}

static int flash_alloc(sim_board *b)
{
    if (!b->flash) {
        b->flash = calloc(SIM_FLASH_SECTORS, sizeof *b->flash);
        if (!b->flash)
            return -ENOMEM;
    }
    return 0;
}

static int store(sim_board *b, const uf2_image *img)
{
    if (!img->data || img->len == 0 || img->len > SIM_FLASH_SIZE || !in_flash(img->base, (uint32_t)img->len))
        return -EINVAL;
    int rc = flash_alloc(b);
    if (rc)
        return rc;
    uint32_t start = img->base & ~(SECTOR - 1);
    uint32_t end = (uint32_t)((img->base + img->len + SECTOR - 1) & ~(size_t)(SECTOR - 1));
    erase_sectors(b, start, end - start);
    return program(b, img->base, img->data, (uint32_t)img->len);
}

/* The program of sim_fw_build_uf2(kind), assembled. 0 or -ENOMEM/-EINVAL. */
static int canonical(sim_fw_kind kind, uf2_image *img)
{
    size_t len;
    uint8_t *uf2 = sim_fw_build_uf2(kind, &len);
    if (!uf2)
        return -ENOMEM;
    char why[UF2_REASON_MAX];
    int rc = uf2_parse(uf2, len, UF2_TARGET_RP2350, img, why) ? -EINVAL : 0;
    free(uf2);
    return rc;
}

int sim_flash_store(sim_board *b, const uf2_image *img)
{
    if (!b->flash_valid) {
        /* Nobody has looked at the flash since it held the image of `flashed`
         * alone: if that is what was written, it still does, for free. */
        uf2_image c;
        if (canonical(b->flashed, &c) == 0) {
            bool same = c.base == img->base && c.len == img->len && memcmp(c.data, img->data, c.len) == 0;
            uf2_image_free(&c);
            if (same) {
                sim_flash_free(b);
                return 0;
            }
        }
    }
    int rc = store(b, img);
    b->flash_valid = rc == 0;
    return rc;
}

/* The contents as the board started: the image of what `flashed` says. */
static int flash_ready(sim_board *b)
{
    if (b->flash_valid)
        return 0;
    int rc = flash_alloc(b);
    if (rc)
        return rc;
    uf2_image img;
    rc = canonical(b->flashed, &img);
    if (rc == 0) {
        rc = store(b, &img);
        uf2_image_free(&img);
    }
    b->flash_valid = rc == 0;
    return rc;
}

/* ---- the command state machine ---- */

void sim_pb_reset(sim_board *b)
{
    sim_pb *pb = &b->pb;
    pb->phase = SIM_PB_IDLE;
    pb->chunk_len = pb->chunk_off = 0;
    pb->left = 0;
    memset(&pb->status, 0, sizeof pb->status);
    pb->exclusive = 0;
    b->halted &= ~((1u << SLOT_OUT) | (1u << SLOT_IN));
}

void sim_pb_stop(sim_board *b)
{
    if (b->pb.t_reboot)
        ifm_timer_cancel(b->sim->base.loop, b->pb.t_reboot);
    b->pb.t_reboot = 0;
}

/* The bootrom halts both endpoints; the command is over. */
static void halt(sim_board *b)
{
    b->halted |= (1u << SLOT_OUT) | (1u << SLOT_IN);
    b->pb.phase = SIM_PB_IDLE;
    b->pb.status.in_progress = false;
}

static void refuse(sim_board *b, picoboot_status_code code)
{
    b->pb.status.code = code;
    halt(b);
}

/* Success: the acknowledgement goes opposite to the data phase (IN if none). */
static void ack(sim_board *b)
{
    b->pb.status.code = PICOBOOT_OK;
    b->pb.status.in_progress = false;
    b->pb.phase = (b->pb.cmd.id & 0x80) ? SIM_PB_ACK_OUT : SIM_PB_ACK_IN;
}

static void reboot_fire(ifm_loop *loop, void *arg)
{
    sim_board *b = arg;
    b->pb.t_reboot = 0;
    if (!b->dev || sim_rebooting(b))
        return;
    uint32_t type = b->pb.reboot_flags & PICOBOOT_REBOOT2_TYPE_MASK;
    sim_next next = NEXT_BOOTSEL;
    if (type != PICOBOOT_REBOOT2_BOOTSEL && flash_ready(b) == 0) {
        uint8_t head[PAGE];
        flash_read(b, PICOBOOT_FLASH_BASE, head, sizeof head);
        bool blank = true;
        for (size_t i = 0; i < sizeof head && blank; i++)
            blank = head[i] == 0xff;
        if (!blank) {
            b->flashed = sim_fw_identify(head, sizeof head);
            next = NEXT_APP;
        }
    }
    sim_schedule_leave(b, 0, next, b->sim->opt.enum_ms, false);
}

static void reboot2(sim_board *b)
{
    const uint8_t *a = b->pb.cmd.args;
    uint32_t flags = picoboot_get32(a) & ~PICOBOOT_REBOOT2_NO_RETURN;
    uint32_t delay = picoboot_get32(a + 4);
    uint32_t type = flags & PICOBOOT_REBOOT2_TYPE_MASK;
    if (type != PICOBOOT_REBOOT2_NORMAL && type != PICOBOOT_REBOOT2_BOOTSEL && type != PICOBOOT_REBOOT2_FLASH_UPDATE) {
        refuse(b, PICOBOOT_NOT_PERMITTED);
        return;
    }
    sim_pb_stop(b);
    b->pb.reboot_flags = flags;
    b->pb.t_reboot = ifm_timer_add(b->sim->base.loop, delay, reboot_fire, b);
    if (!b->pb.t_reboot) {
        refuse(b, PICOBOOT_UNKNOWN_ERROR);
        return;
    }
    ack(b);
}

static void erase(sim_board *b)
{
    uint32_t addr, size;
    picoboot_cmd_range(&b->pb.cmd, &addr, &size);
    if (addr % SECTOR || size % SECTOR) {
        refuse(b, PICOBOOT_BAD_ALIGNMENT);
        return;
    }
    if (!in_flash(addr, size)) {
        refuse(b, PICOBOOT_INVALID_ADDRESS);
        return;
    }
    if (flash_ready(b) != 0) {
        refuse(b, PICOBOOT_UNKNOWN_ERROR);
        return;
    }
    erase_sectors(b, addr, size);
    ack(b);
}

static void command(sim_board *b, const uint8_t *p, uint32_t n)
{
    sim_pb *pb = &b->pb;
    picoboot_cmd c;
    if (picoboot_cmd_unpack(p, n, &c, NULL, 0) != 0) {
        halt(b); /* not a command: the status stays the previous command's */
        return;
    }
    pb->cmd = c;
    pb->status = (picoboot_status){ .token = c.token, .code = PICOBOOT_UNKNOWN_CMD, .cmd_id = c.id };
    picoboot_status_code code = picoboot_cmd_check(&c, NULL, 0);
    if (code != PICOBOOT_OK) {
        refuse(b, code);
        return;
    }
    pb->status.in_progress = true;
    uint32_t addr, size;
    picoboot_cmd_range(&c, &addr, &size);
    switch (c.id) {
    case PC_EXCLUSIVE_ACCESS:
        pb->exclusive = c.args[0];
        ack(b);
        return;
    case PC_EXIT_XIP:
    case PC_ENTER_CMD_XIP:
        ack(b);
        return;
    case PC_FLASH_ERASE:
        erase(b);
        return;
    case PC_WRITE:
    case PC_READ:
        if (size == 0) {
            ack(b);
            return;
        }
        pb->addr = addr;
        pb->left = size;
        pb->chunk_len = pb->chunk_off = 0;
        pb->phase = c.id == PC_WRITE ? SIM_PB_DATA_OUT : SIM_PB_DATA_IN;
        return;
    case PC_REBOOT2:
        reboot2(b);
        return;
    default: /* REBOOT, EXEC, VECTORIZE_FLASH (RP2040 only), GET_INFO, OTP_*: not here */
        refuse(b, PICOBOOT_UNKNOWN_CMD);
        return;
    }
}

/* One 256-byte piece (or the short last one) of a WRITE. */
static bool write_chunk(sim_board *b)
{
    sim_pb *pb = &b->pb;
    if (!in_flash(pb->addr, pb->chunk_len)) {
        refuse(b, PICOBOOT_INVALID_ADDRESS);
        return false;
    }
    if (pb->addr % PAGE) {
        refuse(b, PICOBOOT_BAD_ALIGNMENT);
        return false;
    }
    memset(pb->chunk + pb->chunk_len, 0, PAGE - pb->chunk_len); /* the last page is zero filled */
    uint32_t len = in_flash(pb->addr, PAGE) ? PAGE : pb->chunk_len;
    if (flash_ready(b) != 0 || program(b, pb->addr, pb->chunk, len) != 0) {
        refuse(b, PICOBOOT_UNKNOWN_ERROR);
        return false;
    }
    pb->addr += pb->chunk_len;
    pb->chunk_len = 0;
    return true;
}

/* One packet from the host on OUT, in whatever phase. */
static void packet_out(sim_board *b, const uint8_t *p, uint32_t n)
{
    sim_pb *pb = &b->pb;
    switch (pb->phase) {
    case SIM_PB_IDLE:
        command(b, p, n);
        return;
    case SIM_PB_ACK_OUT:
        pb->phase = SIM_PB_IDLE;
        return;
    case SIM_PB_DATA_OUT:
        if (n > pb->left) {
            refuse(b, PICOBOOT_INVALID_TRANSFER_LENGTH); /* more than the command announced */
            return;
        }
        while (n > 0) {
            uint32_t k = PAGE - pb->chunk_len;
            if (k > n)
                k = n;
            memcpy(pb->chunk + pb->chunk_len, p, k);
            pb->chunk_len += k;
            pb->left -= k;
            p += k;
            n -= k;
            if ((pb->chunk_len == PAGE || pb->left == 0) && !write_chunk(b))
                return;
        }
        if (pb->left == 0)
            ack(b);
        return;
    default:
        return; /* not reached: OUT is not taken during IN phases */
    }
}

/* Fills pb->chunk with the next piece of a READ. False if it failed (halted). */
static bool read_chunk(sim_board *b)
{
    sim_pb *pb = &b->pb;
    uint32_t n = pb->left < PAGE ? pb->left : PAGE;
    if (!in_flash(pb->addr, n)) {
        refuse(b, PICOBOOT_INVALID_ADDRESS);
        return false;
    }
    if (flash_ready(b) != 0) {
        refuse(b, PICOBOOT_UNKNOWN_ERROR);
        return false;
    }
    flash_read(b, pb->addr, pb->chunk, n);
    pb->addr += n;
    pb->chunk_len = n;
    pb->chunk_off = 0;
    return true;
}

static bool out_ready(const sim_board *b)
{
    sim_pb_phase ph = b->pb.phase;
    return ph == SIM_PB_IDLE || ph == SIM_PB_DATA_OUT || ph == SIM_PB_ACK_OUT;
}

static bool in_ready(const sim_board *b)
{
    return b->pb.phase == SIM_PB_DATA_IN || b->pb.phase == SIM_PB_ACK_IN;
}

/* The head OUT URB: one packet. True if anything happened. */
static bool serve_out(sim_board *b, uint32_t *budget)
{
    sim_urb *su = b->q[SLOT_OUT];
    if (!su || su->lost)
        return false;
    if (b->halted & (1u << SLOT_OUT)) {
        su->u.actual = su->off;
        sim_urb_complete_head(b, SLOT_OUT, -EPIPE);
        return true;
    }
    if (!out_ready(b) || (*budget == 0 && su->u.len > 0))
        return false;
    uint32_t n = su->u.len - su->off;
    if (n > SIM_PB_PACKET)
        n = SIM_PB_PACKET;
    packet_out(b, su->u.buf + su->off, n);
    su->off += n;
    *budget = *budget > n ? *budget - n : 0;
    su->u.actual = su->off;
    if (su->off == su->u.len)
        sim_urb_complete_head(b, SLOT_OUT, 0); /* the last packet was taken before any halt */
    return true;
}

/* The head IN URB: one packet. True if anything happened. */
static bool serve_in(sim_board *b, uint32_t *budget)
{
    sim_urb *su = b->q[SLOT_IN];
    sim_pb *pb = &b->pb;
    if (!su || su->lost)
        return false;
    if (b->halted & (1u << SLOT_IN)) {
        sim_urb_complete_head(b, SLOT_IN, -EPIPE);
        return true;
    }
    if (!in_ready(b))
        return false;
    if (pb->phase == SIM_PB_ACK_IN) {
        pb->phase = SIM_PB_IDLE;
        sim_urb_complete_head(b, SLOT_IN, 0); /* the empty packet ends the URB */
        return true;
    }
    if (*budget == 0)
        return false;
    if (pb->chunk_off == pb->chunk_len && !read_chunk(b))
        return true; /* halted: the URB stalls on the next turn */
    uint32_t n = pb->chunk_len - pb->chunk_off;
    if (n > SIM_PB_PACKET)
        n = SIM_PB_PACKET;
    uint32_t room = su->u.len - su->u.actual;
    pb->chunk_off += n;
    pb->left -= n;
    *budget = *budget > n ? *budget - n : 0;
    if (pb->left == 0)
        ack(b);
    if (n > room) {
        sim_urb_complete_head(b, SLOT_IN, -EOVERFLOW); /* babble: the packet does not fit the URB */
        return true;
    }
    memcpy(su->u.buf + su->u.actual, pb->chunk + pb->chunk_off - n, n);
    su->u.actual += n;
    if (su->u.actual == su->u.len || n < SIM_PB_PACKET) {
        int st = su->u.actual < su->u.len && (su->u.flags & WRK_URB_SHORT_NOT_OK) ? -EREMOTEIO : 0;
        sim_urb_complete_head(b, SLOT_IN, st);
    }
    return true;
}

void sim_pb_serve(sim_board *b, uint32_t *out_budget, uint32_t *in_budget)
{
    for (int guard = 0; guard < 4096; guard++) {
        bool moved = serve_out(b, out_budget);
        moved |= serve_in(b, in_budget);
        if (!moved)
            return;
    }
}

bool sim_pb_more_work(const sim_board *b)
{
    const sim_urb *o = b->q[SLOT_OUT], *i = b->q[SLOT_IN];
    if (o && !o->lost && ((b->halted & (1u << SLOT_OUT)) || out_ready(b)))
        return true;
    return i && !i->lost && ((b->halted & (1u << SLOT_IN)) || in_ready(b));
}

int sim_pb_control(sim_board *b, wrk_urb *u, const ifm_usb_setup *s)
{
    if (s->bmRequestType == 0xc1 && s->bRequest == PICOBOOT_IF_CMD_STATUS && s->wLength == PICOBOOT_STATUS_SIZE) {
        uint8_t st[PICOBOOT_STATUS_SIZE];
        picoboot_status_pack(&b->pb.status, st);
        size_t n = u->size < sizeof st ? u->size : sizeof st;
        memcpy(u->buf, st, n);
        u->actual = (uint32_t)n;
        return 0;
    }
    if (s->bmRequestType == 0x41 && s->bRequest == PICOBOOT_IF_RESET) {
        sim_pb_reset(b);
        return 0;
    }
    return -EPIPE;
}
