/* What the firmware in a simulated board's flash does with its CDC pipe.
 *
 * The bitstream firmware mirrors the state machine of the real pulse-count and
 * variance firmware (firmware/pulse_count and firmware/variance main.cpp): the
 * same lines in the same order, a 2 s receive watchdog measured from the first
 * byte, exactly 104090 bytes read per transfer with any excess left in the FIFO
 * for the next one. The measurement is the documented function of the bytes'
 * CRC-32 (sim.h), computed as they stream in.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "fwproto.h"
#include "sim_internal.h"

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static ifm_loop *loop_of(sim_board *b)
{
    return b->sim->base.loop;
}

static void fw_cancel(sim_board *b)
{
    ifm_timer_cancel(loop_of(b), b->t_fw);
    b->t_fw = 0;
}

static void fw_after(sim_board *b, uint32_t ms, ifm_timer_cb cb)
{
    fw_cancel(b);
    b->t_fw = ifm_timer_add(loop_of(b), ms, cb, b);
}

static void hang(sim_board *b)
{
    b->faults[SIM_FAULT_HANG]--;
    fw_cancel(b);
    b->fw = FWS_HUNG;
    b->dropping = false;
}

void sim_fw_stop(sim_board *b)
{
    fw_cancel(b);
    b->fw = FWS_OFF;
    b->dtr = false;
    b->fifo_len = 0; /* a reset empties TinyUSB's buffers */
    b->received = 0;
    b->dropping = false;
}

void sim_fw_boot(sim_board *b)
{
    sim_fw_stop(b);
    if (b->bootsel)
        return;
    switch (b->flashed) {
    case SIM_FW_DEFAULT:
        b->fw = FWS_DEFAULT;
        break;
    case SIM_FW_PULSECOUNT:
    case SIM_FW_VARIANCE:
        b->fw = FWS_WAIT_DTR;
        break;
    case SIM_FW_UNKNOWN:
        b->fw = FWS_SILENT;
        break;
    }
}

/* ---- default firmware: `printf("default firmware\r\n")` in a loop ---- */

static void default_print(ifm_loop *loop, void *arg)
{
    sim_board *b = arg;
    b->t_fw = 0;
    if (b->fw != FWS_DEFAULT || !b->dtr)
        return;
    if (b->faults[SIM_FAULT_HANG]) {
        hang(b);
        return;
    }
    /* The real board floods; a few KiB queued is plenty to model that cheaply. */
    if (b->tx_len - b->tx_off < 4096)
        sim_usb_print(b, "default firmware\r\n");
    fw_after(b, b->sim->opt.default_print_ms, default_print);
}

/* ---- bitstream firmware ---- */

static void wait_for_bitstream(sim_board *b)
{
    b->fw = FWS_WAITING;
    b->received = 0;
    b->dropping = false;
    sim_usb_print(b, "Waiting for bitstream transfer\r\n");
    sim_usb_kick(b); /* leftover FIFO bytes start the next transfer at once */
}

static void watchdog(ifm_loop *loop, void *arg)
{
    sim_board *b = arg;
    b->t_fw = 0;
    char buf[64];
    snprintf(buf, sizeof buf, "Watchdog timeout, %lu bytes received of %lu\r\n", (unsigned long)b->received,
             (unsigned long)BITSTREAM_SIZE);
    sim_usb_print(b, buf);
    wait_for_bitstream(b);
}

static void print_flash_times(sim_board *b, char *buf, size_t size, const char *tail)
{
    /* Plausible CRAM load times (us) for a 104090-byte image; jitter from the CRC
     * so the lines are not all identical, deterministic so tests stay exact. */
    uint32_t c = b->crc;
    snprintf(buf, size, "FPGA Flash times (us): init %lld, start %lld, open %lld, write %lld, close %lld\r\n%s",
             1021LL + c % 7, 2LL, 5LL + (c >> 3) % 3, 7344LL + (c >> 5) % 41, 118LL, tail);
    sim_usb_print(b, buf);
}

static void measured(ifm_loop *loop, void *arg)
{
    sim_board *b = arg;
    b->t_fw = 0;
    if (b->flashed == SIM_FW_PULSECOUNT) {
        /* One snprintf in the real firmware, hence the ", pulses" line. */
        char buf[192], tail[32];
        snprintf(tail, sizeof tail, ", pulses: %d\r\n", (int)sim_pulses_from_crc(b->crc));
        print_flash_times(b, buf, sizeof buf, tail);
    } else {
        uint16_t s[SIM_SAMPLES];
        sim_samples_from_crc(b->crc, s);
        char buf[16 + SIM_SAMPLES * 5];
        size_t n = (size_t)snprintf(buf, sizeof buf, "samples:");
        for (int i = 0; i < SIM_SAMPLES; i++)
            n += (size_t)snprintf(buf + n, sizeof buf - n, i ? ",%u" : " %u", (unsigned)s[i]);
        snprintf(buf + n, sizeof buf - n, "\r\n");
        sim_usb_print(b, buf);
    }
    sim_usb_print(b, "IDLE\r\n");
    /* The firmware's outer loop: connected again, "re-entered" connected state. */
    sim_usb_print(b, "USB Connected :)\r\n");
    sim_usb_print(b, "USB Reconnected :)\r\n");
    wait_for_bitstream(b);
}

static void received_all(sim_board *b)
{
    fw_cancel(b); /* the watchdog */
    char buf[192];
    snprintf(buf, sizeof buf, "Received bitstream in %lu us :)\r\n", (unsigned long)(now_us() - b->xfer_start_us));
    sim_usb_print(b, buf);
    sim_usb_print(b, "Flashing FPGA\r\n");
    if (b->flashed == SIM_FW_VARIANCE) {
        /* Variance prints the flash times right away, then samples. */
        print_flash_times(b, buf, sizeof buf, "Sampling ADC\r\n");
    }
    b->fw = FWS_MEASURING;
    fw_after(b, b->sim->opt.count_window_ms, measured);
}

static void start_transfer(sim_board *b)
{
    sim_usb_print(b, "Bitstream transfer started\r\n");
    sim_usb_print(b, "Receiving bitstream\r\n");
    b->fw = FWS_RECEIVING;
    b->received = 0;
    b->crc = 0;
    b->xfer_start_us = now_us();
    b->dropping = false;
    if (b->faults[SIM_FAULT_WATCHDOG]) {
        b->faults[SIM_FAULT_WATCHDOG]--;
        b->dropping = true;
    }
    fw_after(b, b->sim->opt.watchdog_ms, watchdog);
}

static void receive(sim_board *b)
{
    if (b->faults[SIM_FAULT_HANG] && b->received >= SIM_HANG_AFTER) {
        hang(b);
        return;
    }
    size_t n = b->fifo_len;
    if (n > BITSTREAM_SIZE - b->received)
        n = BITSTREAM_SIZE - b->received;
    b->crc = sim_crc32(b->crc, b->fifo, n);
    memmove(b->fifo, b->fifo + n, b->fifo_len - n);
    b->fifo_len -= n;
    b->received += (uint32_t)n;
    if (b->received == BITSTREAM_SIZE)
        received_all(b);
}

void sim_fw_consume(sim_board *b)
{
    switch (b->fw) {
    case FWS_DEFAULT:
        b->fifo_len = 0; /* getchar_timeout_us(1000) reads and discards */
        return;
    case FWS_WAITING:
        if (!b->fifo_len)
            return;
        start_transfer(b);
        receive(b);
        return;
    case FWS_RECEIVING:
        if (b->fifo_len)
            receive(b);
        return;
    default:
        return;
    }
}

bool sim_fw_reads(const sim_board *b)
{
    return b->fw == FWS_DEFAULT || b->fw == FWS_WAITING || b->fw == FWS_RECEIVING;
}

bool sim_fw_dropping(const sim_board *b)
{
    return b->fw == FWS_RECEIVING && b->dropping && b->received >= BITSTREAM_SIZE / 2;
}

void sim_fw_dtr(sim_board *b, bool up)
{
    b->dtr = up;
    switch (b->fw) {
    case FWS_DEFAULT:
        if (up)
            fw_after(b, 0, default_print);
        else
            fw_cancel(b);
        return;
    case FWS_WAIT_DTR:
        if (up) {
            sim_usb_print(b, "USB Connected :)\r\n");
            wait_for_bitstream(b);
        }
        return;
    case FWS_DISCONNECTED:
        if (up) {
            sim_usb_print(b, "USB Reconnected :)\r\n");
            wait_for_bitstream(b);
        }
        return;
    case FWS_WAITING:
    case FWS_RECEIVING:
    case FWS_MEASURING:
        if (!up) {
            /* "USB Disconnected :(" goes to a closed pipe; a partial transfer or a
             * measurement in progress is abandoned. */
            fw_cancel(b);
            b->fw = FWS_DISCONNECTED;
            b->received = 0;
            b->dropping = false;
        }
        return;
    default:
        return;
    }
}
