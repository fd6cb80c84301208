/* The sim backend driven like the worker drives it: discovery, the default
 * firmware health text, touch -> BOOTSEL -> flash -> re-enumeration, and the
 * bitstream protocol byte for byte. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_driver.h"
#include "uf2.h"

static bool is_hex16(const char *s)
{
    if (strlen(s) != SIM_SERIAL_LEN)
        return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'A' && *s <= 'F')))
            return false;
    return true;
}

static void test_discovery(void **state)
{
    sim_options o;
    drv_test_options(&o, 3);
    drv *d = drv_new(&o);
    /* start() reports nothing synchronously. */
    assert_int_equal(d->n, 0);
    drv_wait_boards(d, 3);
    for (size_t i = 0; i < 3; i++) {
        drv_board *b = &d->b[i];
        assert_true(is_hex16(b->serial));
        assert_int_equal(b->info.vid, WRK_VID_RPI);
        assert_int_equal(b->info.pid, WRK_PID_PICO_STDIO);
        assert_int_equal(b->arrivals, 1);
        assert_non_null(drv_board_by_serial(d, sim_board_serial(d->t, i)));
    }
    assert_int_equal(sim_board_count(d->t), 3);
    assert_null(sim_board_serial(d->t, 3));
    assert_string_equal(d->t->ops->name, "sim");
    drv_free(d);
}

static void test_serials(void **state)
{
    char a[SIM_SERIAL_LEN + 1], b[SIM_SERIAL_LEN + 1];
    sim_serial_for("worker-a", 0, a);
    sim_serial_for("worker-a", 0, b);
    assert_string_equal(a, b);
    assert_true(is_hex16(a));
    /* No two boards of two workers share a serial. */
    char all[2 * 64][SIM_SERIAL_LEN + 1];
    for (unsigned i = 0; i < 64; i++) {
        sim_serial_for("worker-a", i, all[i]);
        sim_serial_for("worker-b", i, all[64 + i]);
    }
    for (size_t i = 0; i < 128; i++) {
        assert_true(is_hex16(all[i]));
        for (size_t j = i + 1; j < 128; j++)
            assert_string_not_equal(all[i], all[j]);
    }
    sim_serial_for(NULL, 0, a); /* tolerated */
    assert_true(is_hex16(a));
}

static void test_default_firmware(void **state)
{
    sim_options o;
    drv_test_options(&o, 1);
    drv *d = drv_new(&o);
    drv_board *b = drv_wait_boards(d, 1);
    drv_turns(d, 5);
    assert_int_equal(b->rx_calls, 0); /* prints only while CDC is open */
    assert_int_equal(drv_open(b), 0);
    assert_int_equal(drv_open(b), -EBUSY);
    RUN_UNTIL(d, b->n_default >= 3);
    assert_int_equal(b->nlog, 0); /* nothing but "default firmware" */
    assert_int_equal(b->n_malformed, 0);
    /* Closing is silent: no callback for the channel afterwards. */
    drv_close(b);
    size_t calls = b->rx_calls;
    drv_idle(d, 50);
    assert_int_equal(b->rx_calls, calls);
    /* And an idle board costs no timers. */
    assert_int_equal(ifm_timer_count(d->loop), 0);
    /* Reopen works and the flood resumes. */
    assert_int_equal(drv_open(b), 0);
    int seen = b->n_default;
    RUN_UNTIL(d, b->n_default > seen);
    drv_free(d);
}

/* "Received bitstream in N us :)" and the flash-times line have numbers in them. */
static void assert_timing_lines(const drv_board *b, size_t received_at, size_t times_at)
{
    unsigned long us;
    char tail[8];
    assert_int_equal(sscanf(b->log[received_at], "Received bitstream in %lu us %7s", &us, tail), 2);
    assert_string_equal(tail, ":)");
    long long v[5];
    assert_int_equal(sscanf(b->log[times_at],
                            "FPGA Flash times (us): init %lld, start %lld, open %lld, write %lld, "
                            "close %lld",
                            &v[0], &v[1], &v[2], &v[3], &v[4]),
                     5);
}

static void assert_lines(const drv_board *b, size_t from, const char *const *want, size_t n)
{
    assert_true(b->nlog >= from + n);
    for (size_t i = 0; i < n; i++)
        if (want[i] && strcmp(b->log[from + i], want[i]) != 0)
            fail_msg("line %zu: \"%s\", expected \"%s\"", from + i, b->log[from + i], want[i]);
}

static void test_pulsecount_path(void **state)
{
    sim_options o;
    drv_test_options(&o, 2);
    drv *d = drv_new(&o);
    drv_wait_boards(d, 2);
    drv_board *b = &d->b[1];
    const char *serial_before = b->serial;
    drv_bring_up(b, SIM_FW_PULSECOUNT);
    assert_string_equal(b->serial, serial_before); /* same board, new enumeration */
    assert_int_equal(d->b[0].arrivals, 1);         /* the other board is untouched */

    assert_int_equal(drv_open(b), 0);
    RUN_UNTIL(d, b->n_ready == 1);
    for (size_t k = 0; k < 3; k++) {
        size_t from = b->nlog, ready = (size_t)b->n_ready;
        assert_int_equal(drv_write(b, d->bits[k], BITSTREAM_SIZE), 0);
        assert_int_equal(b->writes_done, (int)k); /* never inside the call */
        RUN_UNTIL(d, b->n_ready == (int)ready + 1);
        assert_int_equal(b->n_pulses, (int)k + 1);
        assert_int_equal(b->pulses, sim_expected_pulses(d->bits[k], BITSTREAM_SIZE));
        assert_int_equal(b->writes_done, (int)k + 1);
        assert_int_equal(b->write_status, 0);
        char pulses[32];
        snprintf(pulses, sizeof pulses, ", pulses: %u", b->pulses);
        static const char *const first[] = { "USB Connected :)", "Waiting for bitstream transfer" };
        if (k == 0) {
            assert_lines(b, 0, first, 2);
            assert_int_equal(from, 2);
        }
        const char *const want[] = {
            "Bitstream transfer started",
            "Receiving bitstream",
            NULL,
            "Flashing FPGA",
            NULL,
            pulses,
            "IDLE",
            "USB Connected :)",
            "USB Reconnected :)",
            "Waiting for bitstream transfer",
        };
        assert_int_equal(b->nlog, from + 10);
        assert_lines(b, from, want, 10);
        assert_timing_lines(b, from + 2, from + 4);
    }
    assert_int_equal(b->n_malformed + b->n_watchdog, 0);
    assert_true(b->rx_max_chunk <= o.usb_packet); /* USB-sized chunks */
    drv_free(d);
}

static void test_variance_path(void **state)
{
    sim_options o;
    drv_test_options(&o, 1);
    drv *d = drv_new(&o);
    drv_board *b = drv_wait_boards(d, 1);
    drv_bring_up(b, SIM_FW_VARIANCE);
    assert_int_equal(drv_open(b), 0);
    RUN_UNTIL(d, b->n_ready == 1);
    assert_int_equal(drv_write(b, d->bits[0], BITSTREAM_SIZE), 0);
    RUN_UNTIL(d, b->n_ready == 2);
    assert_int_equal(b->n_samples, 1);
    assert_int_equal(b->nsamples, SIM_SAMPLES);
    uint16_t want[SIM_SAMPLES];
    sim_expected_samples(d->bits[0], BITSTREAM_SIZE, want);
    assert_memory_equal(b->samples, want, sizeof want);
    assert_true(fw_variance_fitness(b->samples, b->nsamples) > 0.0);
    const char *const lines[] = {
        "USB Connected :)",
        "Waiting for bitstream transfer",
        "Bitstream transfer started",
        "Receiving bitstream",
        NULL,
        "Flashing FPGA",
        NULL,
        "Sampling ADC",
        NULL,
        "IDLE",
        "USB Connected :)",
        "USB Reconnected :)",
        "Waiting for bitstream transfer",
    };
    assert_int_equal(b->nlog, 13);
    assert_lines(b, 0, lines, 13);
    assert_timing_lines(b, 4, 6);
    assert_int_equal(strncmp(b->log[8], "samples: ", 9), 0);
    assert_int_equal(b->n_pulses, 0);
    drv_free(d);
}

/* Bytes past 104090 stay in the firmware's buffer and start the next transfer,
 * as on the real board: a result then covers the tail of one write and the head
 * of the next. */
static void test_extra_bytes_carry_over(void **state)
{
    sim_options o;
    drv_test_options(&o, 1);
    o.initial_fw = SIM_FW_PULSECOUNT;
    drv *d = drv_new(&o);
    drv_board *b = drv_wait_boards(d, 1);
    assert_int_equal(b->info.pid, WRK_PID_PICO_ICE);
    assert_int_equal(drv_open(b), 0);
    RUN_UNTIL(d, b->n_ready == 1);

    enum {
        EXTRA = 10
    };
    uint8_t *first = malloc(BITSTREAM_SIZE + EXTRA);
    memcpy(first, d->bits[0], BITSTREAM_SIZE);
    memcpy(first + BITSTREAM_SIZE, d->bits[1], EXTRA);
    assert_int_equal(drv_write(b, first, BITSTREAM_SIZE + EXTRA), 0);
    RUN_UNTIL(d, b->n_pulses == 1);
    assert_int_equal(b->pulses, sim_expected_pulses(d->bits[0], BITSTREAM_SIZE));
    /* The leftover starts a transfer right after "Waiting for bitstream transfer". */
    RUN_UNTIL(d, b->n_ready == 2 && drv_find(b, "Bitstream transfer started", 3) > 0);
    assert_int_equal(drv_write(b, d->bits[1] + EXTRA, BITSTREAM_SIZE - EXTRA), 0);
    RUN_UNTIL(d, b->n_pulses == 2);
    assert_int_equal(b->pulses, sim_expected_pulses(d->bits[1], BITSTREAM_SIZE));
    RUN_UNTIL(d, b->writes_done == 2);
    free(first);
    drv_free(d);
}

static void test_watchdog_short_write(void **state)
{
    sim_options o;
    drv_test_options(&o, 1);
    o.initial_fw = SIM_FW_PULSECOUNT;
    o.watchdog_ms = 100; /* expected to fire: its length only sets when */
    drv *d = drv_new(&o);
    drv_board *b = drv_wait_boards(d, 1);
    assert_int_equal(drv_open(b), 0);
    RUN_UNTIL(d, b->n_ready == 1);
    assert_int_equal(drv_write(b, d->bits[0], 1000), 0);
    RUN_UNTIL(d, b->n_watchdog == 1);
    assert_int_equal(b->wd_received, 1000);
    int at = drv_find(b, "Watchdog timeout, 1000 bytes received of 104090", 0);
    assert_true(at > 0);
    RUN_UNTIL(d, b->n_ready == 2);
    assert_string_equal(b->log[at + 1], "Waiting for bitstream transfer");
    assert_int_equal(b->n_pulses, 0);
    assert_int_equal(b->writes_done, 1);
    drv_free(d);
}

/* cdc_close mid-transfer: no callbacks afterwards, the firmware sees DTR drop,
 * and a reopen gets the reconnect banner. */
static void test_close_mid_transfer(void **state)
{
    sim_options o;
    drv_test_options(&o, 1);
    o.initial_fw = SIM_FW_PULSECOUNT;
    drv *d = drv_new(&o);
    drv_board *b = drv_wait_boards(d, 1);
    assert_int_equal(drv_open(b), 0);
    RUN_UNTIL(d, b->n_ready == 1);
    assert_int_equal(drv_write(b, d->bits[0], BITSTREAM_SIZE), 0);
    RUN_UNTIL(d, drv_find(b, "Receiving bitstream", 0) > 0);
    drv_close(b);
    size_t calls = b->rx_calls;
    drv_idle(d, 100);
    assert_int_equal(b->rx_calls, calls);
    assert_int_equal(b->writes_done + b->n_pulses, 0);
    assert_int_equal(ifm_timer_count(d->loop), 0); /* watchdog cancelled with the transfer */
    drv_clear(b);
    assert_int_equal(drv_open(b), 0);
    RUN_UNTIL(d, b->n_ready == 1);
    assert_string_equal(b->log[0], "USB Reconnected :)");
    assert_string_equal(b->log[1], "Waiting for bitstream transfer");
    /* The write queued on the old channel is gone for good. */
    drv_idle(d, 100);
    assert_int_equal(b->writes_done, 0);
    assert_int_equal(d->violations, 0);
    drv_free(d);
}

static void test_op_errors(void **state)
{
    sim_options o;
    drv_test_options(&o, 1);
    drv *d = drv_new(&o);
    drv_board *b = drv_wait_boards(d, 1);
    const wrk_transport_ops *ops = d->t->ops;
    uint8_t byte = 0;
    assert_int_equal(drv_write(b, &byte, 1), -ENOTCONN);
    assert_int_equal(drv_flash(b, SIM_FW_DEFAULT), -EOPNOTSUPP); /* not in BOOTSEL */
    assert_int_equal(ops->cdc_open(d->t, b->dev, NULL, NULL, NULL), -EINVAL);
    assert_int_equal(ops->touch_1200(d->t, NULL), -ENODEV);

    /* Between a touch and the leave, the device refuses work. */
    assert_int_equal(drv_touch(b), 0);
    assert_int_equal(drv_touch(b), -EBUSY);
    assert_int_equal(drv_open(b), -EBUSY);
    RUN_UNTIL(d, b->info.pid == WRK_PID_BOOTSEL && b->dev);
    assert_int_equal(drv_open(b), -EOPNOTSUPP); /* the bootrom has no CDC */
    assert_int_equal(drv_touch(b), -EOPNOTSUPP);
    assert_int_equal(ops->flash_uf2(d->t, b->dev, &byte, 1, NULL, NULL), -EINVAL);
    assert_int_equal(drv_flash(b, SIM_FW_DEFAULT), 0);
    assert_int_equal(drv_flash(b, SIM_FW_DEFAULT), -EBUSY); /* one at a time */
    RUN_UNTIL(d, b->flashes_done == 1);
    assert_int_equal(drv_flash(b, SIM_FW_DEFAULT), -EBUSY); /* rebooting now */
    RUN_UNTIL(d, b->info.pid == WRK_PID_PICO_STDIO && b->dev);
    assert_int_equal(d->violations, 0);
    drv_free(d);
}

static void test_bad_images_rejected(void **state)
{
    sim_options o;
    drv_test_options(&o, 1);
    drv *d = drv_new(&o);
    drv_board *b = drv_wait_boards(d, 1);
    drv_to_bootsel(b);

    size_t len;
    uint8_t *img = sim_fw_build_uf2(SIM_FW_PULSECOUNT, &len);
    img[512 * 3 + 508] ^= 1;
    assert_int_equal(drv_flash_raw(b, img, len), 0);
    RUN_UNTIL(d, b->flashes_done == 1);
    assert_int_equal(b->flash_status, -EINVAL);
    assert_non_null(strstr(b->flash_reason, "bad magic"));
    img[512 * 3 + 508] ^= 1;
    assert_int_equal(drv_flash_raw(b, img, len - 512), 0);
    RUN_UNTIL(d, b->flashes_done == 2);
    assert_non_null(strstr(b->flash_reason, "truncated"));
    free(img);

    uint8_t payload[600] = "ICEFARM-SIM-FIRMWARE v1 kind=default\n";
    uf2_build_opts bo = { .base = 0x10000000, .family = UF2_FAMILY_RP2040 };
    img = uf2_build(payload, sizeof payload, &bo, &len);
    assert_int_equal(drv_flash_raw(b, img, len), 0);
    RUN_UNTIL(d, b->flashes_done == 3);
    assert_int_equal(b->flash_status, -EINVAL);
    assert_non_null(strstr(b->flash_reason, "RP2040"));
    free(img);

    /* Still in BOOTSEL, and a good image still works. */
    drv_idle(d, 30);
    assert_int_equal(b->info.pid, WRK_PID_BOOTSEL);
    assert_int_equal(b->leaves, 1);
    /* A valid foreign image (no sim marker) boots into silent firmware. */
    bo.family = UF2_FAMILY_RP2350_ARM_S;
    payload[0] = 'X';
    img = uf2_build(payload, sizeof payload, &bo, &len);
    assert_int_equal(drv_flash_raw(b, img, len), 0);
    free(img);
    RUN_UNTIL(d, b->flashes_done == 4 && b->dev && b->info.pid == WRK_PID_PICO_STDIO);
    assert_int_equal(b->flash_status, 0);
    assert_int_equal(drv_open(b), 0);
    drv_idle(d, 100);
    assert_int_equal(b->rx_calls, 0);
    drv_free(d);
}

/* Freeing the transport mid-flash, mid-write and mid-reboot leaves nothing
 * behind (ASan checks) and no timer on the loop (drv_free checks). */
static void test_free_mid_activity(void **state)
{
    sim_options o;
    drv_test_options(&o, 3);
    o.flash_ms = 60000;
    drv *d = drv_new(&o);
    drv_wait_boards(d, 3);
    drv_to_bootsel(&d->b[0]);
    assert_int_equal(drv_flash(&d->b[0], SIM_FW_PULSECOUNT), 0);
    assert_int_equal(drv_open(&d->b[1]), 0);
    assert_int_equal(drv_write(&d->b[1], d->bits[0], BITSTREAM_SIZE), 0);
    assert_int_equal(drv_write(&d->b[1], d->bits[1], BITSTREAM_SIZE), 0);
    assert_int_equal(drv_touch(&d->b[2]), 0);
    drv_turns(d, 3);
    drv_free(d);
}

static void no_arrive(void *arg, wrk_usbdev *dev, const wrk_usbinfo *info)
{
}
static void no_leave(void *arg, wrk_usbdev *dev)
{
}

static void test_start_twice(void **state)
{
    sim_options o;
    drv_test_options(&o, 1);
    drv *d = drv_new(&o);
    wrk_transport_events ev = { no_arrive, no_leave };
    assert_int_equal(d->t->ops->start(d->t, &ev, NULL), -EALREADY);
    ev.leave = NULL;
    assert_int_equal(d->t->ops->start(d->t, &ev, NULL), -EINVAL);
    drv_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_discovery),
        cmocka_unit_test(test_serials),
        cmocka_unit_test(test_default_firmware),
        cmocka_unit_test(test_pulsecount_path),
        cmocka_unit_test(test_variance_path),
        cmocka_unit_test(test_extra_bytes_carry_over),
        cmocka_unit_test(test_watchdog_short_write),
        cmocka_unit_test(test_close_mid_transfer),
        cmocka_unit_test(test_op_errors),
        cmocka_unit_test(test_bad_images_rejected),
        cmocka_unit_test(test_free_mid_activity),
        cmocka_unit_test(test_start_twice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
