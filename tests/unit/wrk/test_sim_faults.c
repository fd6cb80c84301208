/* Each injectable fault of the sim backend, observed through the transport ops
 * the way the worker would observe it, and the board behaving again after. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_driver.h"

/* A pulse-count board with its channel open and ready. */
static drv_board *ready_board(drv *d)
{
    drv_board *b = drv_wait_boards(d, 1);
    assert_int_equal(drv_open(b), 0);
    RUN_UNTIL(d, b->n_ready == 1);
    return b;
}

static void evaluate_ok(drv *d, drv_board *b, const uint8_t *bits)
{
    int pulses = b->n_pulses, ready = b->n_ready;
    assert_int_equal(drv_write(b, bits, BITSTREAM_SIZE), 0);
    RUN_UNTIL(d, b->n_pulses == pulses + 1 && b->n_ready == ready + 1);
    assert_int_equal(b->pulses, sim_expected_pulses(bits, BITSTREAM_SIZE));
}

static void test_fault_names(void **state)
{
    static const char *const names[] = { "hang",       "watchdog",    "disconnect",  "unplug",
                                         "slow_flash", "wrong_fw",    "flash_fail",  "no_completion",
                                         "stall",      "partial_pdu", "late_unlink", "busy_import" };
    assert_int_equal(sizeof names / sizeof names[0], SIM_FAULT_COUNT);
    for (int f = 0; f < SIM_FAULT_COUNT; f++) {
        sim_fault got;
        assert_int_equal(sim_fault_from_name(names[f], &got), 0);
        assert_int_equal(got, f);
        assert_string_equal(sim_fault_name(got), names[f]);
    }
    sim_fault got;
    assert_int_equal(sim_fault_from_name("Slow-Flash", &got), 0);
    assert_int_equal(got, SIM_FAULT_SLOW_FLASH);
    assert_int_equal(sim_fault_from_name("HANG", &got), 0);
    assert_int_equal(got, SIM_FAULT_HANG);
    static const char *const bad[] = { "", "han", "hangs", "slow flash", "plug", "slow_flash_" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(sim_fault_from_name(bad[i], &got), -1);
    assert_int_equal(sim_fault_from_name(NULL, &got), -1);
    assert_string_equal(sim_fault_name(SIM_FAULT_COUNT), "?");
}

static void test_inject_errors(void **state)
{
    sim_options o;
    drv_test_options(&o, 1);
    drv *d = drv_new(&o);
    drv_board *b = drv_wait_boards(d, 1);
    assert_int_equal(sim_inject(d->t, "0000000000000000", SIM_FAULT_HANG, 1), -ENODEV);
    assert_int_equal(sim_inject(d->t, NULL, SIM_FAULT_HANG, 1), -ENODEV);
    assert_int_equal(sim_inject(d->t, b->serial, SIM_FAULT_COUNT, 1), -EINVAL);
    assert_int_equal(sim_plug(d->t, "nope"), -ENODEV);
    assert_int_equal(sim_plug(d->t, b->serial), -EALREADY);
    /* Not a sim transport. */
    wrk_transport_ops other = { .name = "other" };
    wrk_transport fake = { .ops = &other, .loop = d->loop };
    assert_int_equal(sim_inject(&fake, b->serial, SIM_FAULT_HANG, 1), -EINVAL);
    assert_int_equal(sim_plug(&fake, b->serial), -EINVAL);
    assert_int_equal(sim_board_count(&fake), 0);
    drv_free(d);
}

/* A hung board swallows part of the bitstream and then goes quiet: the write
 * never completes and nothing is printed, not even the watchdog. A touch brings
 * it back, and the fault is spent. */
static void test_hang_mid_transfer(void **state)
{
    sim_options o;
    drv_test_options(&o, 1);
    o.initial_fw = SIM_FW_PULSECOUNT;
    drv *d = drv_new(&o);
    drv_board *b = ready_board(d);
    assert_int_equal(sim_inject(d->t, b->serial, SIM_FAULT_HANG, 1), 0);
    assert_int_equal(drv_write(b, d->bits[0], BITSTREAM_SIZE), 0);
    RUN_UNTIL(d, drv_find(b, "Receiving bitstream", 0) > 0);
    size_t lines = b->nlog;
    drv_idle(d, 300);
    assert_int_equal(b->nlog, lines);
    assert_int_equal(b->writes_done, 0);
    assert_int_equal(b->n_watchdog + b->n_pulses, 0);

    drv_bring_up(b, SIM_FW_PULSECOUNT);
    assert_int_equal(b->writes_done, 0); /* the stalled write died with the device */
    drv_clear(b);
    assert_int_equal(drv_open(b), 0);
    RUN_UNTIL(d, b->n_ready == 1);
    evaluate_ok(d, b, d->bits[1]);
    drv_free(d);
}

/* Hung firmware runs no watchdog either: with a short one, still silence. */
static void test_hang_silences_watchdog(void **state)
{
    sim_options o;
    drv_test_options(&o, 1);
    o.initial_fw = SIM_FW_PULSECOUNT;
    o.watchdog_ms = 30;
    drv *d = drv_new(&o);
    drv_board *b = ready_board(d);
    assert_int_equal(sim_inject(d->t, b->serial, SIM_FAULT_HANG, 1), 0);
    assert_int_equal(drv_write(b, d->bits[0], BITSTREAM_SIZE), 0);
    RUN_UNTIL(d, drv_find(b, "Receiving bitstream", 0) > 0);
    drv_idle(d, 200);
    /* Either it hung (no watchdog) or, on a machine too slow to move 4 KiB in
     * 30 ms, the watchdog beat it; never both, and never a result. */
    assert_int_equal(b->n_pulses, 0);
    if (b->n_watchdog == 0)
        assert_int_equal(b->writes_done, 0);
    drv_free(d);
}

static void test_hang_default_firmware(void **state)
{
    sim_options o;
    drv_test_options(&o, 1);
    drv *d = drv_new(&o);
    drv_board *b = drv_wait_boards(d, 1);
    assert_int_equal(drv_open(b), 0);
    RUN_UNTIL(d, b->n_default > 0);
    assert_int_equal(sim_inject(d->t, b->serial, SIM_FAULT_HANG, 1), 0);
    drv_turns(d, 20); /* the next print tick hangs it; queued bytes drain */
    int seen = b->n_default;
    drv_idle(d, 200);
    assert_int_equal(b->n_default, seen);
    /* Power cycle through the touch: prints again. */
    drv_to_bootsel(b);
    assert_int_equal(drv_flash(b, SIM_FW_DEFAULT), 0);
    RUN_UNTIL(d, b->dev && b->info.pid == WRK_PID_PICO_STDIO);
    assert_int_equal(drv_open(b), 0);
    RUN_UNTIL(d, b->n_default > seen);
    drv_free(d);
}

/* The second half of the bitstream is lost: all bytes leave the host, the
 * firmware's watchdog reports a short count, and the next transfer is fine. */
static void test_watchdog_fault(void **state)
{
    sim_options o;
    drv_test_options(&o, 1);
    o.initial_fw = SIM_FW_PULSECOUNT;
    o.watchdog_ms = 2000; /* the real firmware's; the good transfer needs far less */
    drv *d = drv_new(&o);
    drv_board *b = ready_board(d);
    assert_int_equal(sim_inject(d->t, b->serial, SIM_FAULT_WATCHDOG, 1), 0);
    assert_int_equal(drv_write(b, d->bits[0], BITSTREAM_SIZE), 0);
    RUN_UNTIL(d, b->writes_done == 1);
    RUN_UNTIL(d, b->n_watchdog == 1);
    assert_true(b->wd_received >= BITSTREAM_SIZE / 2);
    assert_true(b->wd_received < BITSTREAM_SIZE);
    RUN_UNTIL(d, b->n_ready == 2);
    assert_int_equal(b->n_pulses, 0);
    evaluate_ok(d, b, d->bits[1]);
    drv_free(d);
}

static void test_disconnect(void **state)
{
    sim_options o;
    drv_test_options(&o, 1);
    drv *d = drv_new(&o);
    drv_board *b = drv_wait_boards(d, 1);
    assert_int_equal(drv_open(b), 0);
    RUN_UNTIL(d, b->n_default > 0);
    assert_int_equal(sim_inject(d->t, b->serial, SIM_FAULT_DISCONNECT, 1), 0);
    assert_non_null(b->dev); /* leaves later, not inside the call */
    RUN_UNTIL(d, b->leaves == 1);
    assert_false(b->open); /* closed silently with the device */
    size_t calls = b->rx_calls;
    RUN_UNTIL(d, b->arrivals == 2);
    assert_int_equal(b->rx_calls, calls);
    assert_int_equal(b->info.pid, WRK_PID_PICO_STDIO);

    /* count 2: it flaps twice more, then stays. */
    assert_int_equal(sim_inject(d->t, b->serial, SIM_FAULT_DISCONNECT, 2), 0);
    RUN_UNTIL(d, b->leaves == 3 && b->arrivals == 4);
    drv_idle(d, 150);
    assert_int_equal(b->leaves, 3);
    assert_non_null(b->dev);
    assert_int_equal(drv_open(b), 0);
    RUN_UNTIL(d, b->n_default > 0);
    drv_free(d);
}

/* A power glitch while the board re-enumerates only delays it, and it comes
 * back running its flashed firmware. */
static void test_disconnect_while_absent(void **state)
{
    sim_options o;
    drv_test_options(&o, 1);
    o.enum_ms = 1000;
    drv *d = drv_new(&o);
    drv_board *b = drv_wait_boards(d, 1);
    assert_int_equal(drv_touch(b), 0);
    RUN_UNTIL(d, b->leaves == 1);
    assert_int_equal(sim_inject(d->t, b->serial, SIM_FAULT_DISCONNECT, 1), 0);
    RUN_UNTIL(d, b->arrivals == 2);
    assert_int_equal(b->info.pid, WRK_PID_PICO_STDIO);
    drv_free(d);
}

static void test_unplug_and_plug(void **state)
{
    sim_options o;
    drv_test_options(&o, 2);
    drv *d = drv_new(&o);
    drv_wait_boards(d, 2);
    drv_board *b = &d->b[0];
    assert_int_equal(sim_inject(d->t, b->serial, SIM_FAULT_UNPLUG, 1), 0);
    RUN_UNTIL(d, b->leaves == 1);
    assert_null(b->dev);
    assert_int_equal(sim_inject(d->t, b->serial, SIM_FAULT_UNPLUG, 1), -EALREADY);
    assert_int_equal(sim_inject(d->t, b->serial, SIM_FAULT_DISCONNECT, 1), -EALREADY);
    drv_idle(d, 100);
    assert_int_equal(b->arrivals, 1); /* stays away */
    assert_int_equal(sim_plug(d->t, b->serial), 0);
    assert_int_equal(sim_plug(d->t, b->serial), -EALREADY);
    RUN_UNTIL(d, b->arrivals == 2);
    assert_int_equal(b->info.pid, WRK_PID_PICO_STDIO);

    /* Unplugging everything leaves no timer behind. */
    assert_int_equal(sim_inject(d->t, d->b[0].serial, SIM_FAULT_UNPLUG, 1), 0);
    assert_int_equal(sim_inject(d->t, d->b[1].serial, SIM_FAULT_UNPLUG, 1), 0);
    RUN_UNTIL(d, !d->b[0].dev && !d->b[1].dev);
    assert_int_equal(ifm_timer_count(d->loop), 0);
    drv_free(d);
}

/* Unplugged mid-flash: the flash fails before the device leaves. */
static void test_unplug_during_flash(void **state)
{
    sim_options o;
    drv_test_options(&o, 1);
    o.flash_ms = 60000;
    drv *d = drv_new(&o);
    drv_board *b = drv_wait_boards(d, 1);
    drv_to_bootsel(b);
    assert_int_equal(drv_flash(b, SIM_FW_PULSECOUNT), 0);
    assert_int_equal(sim_inject(d->t, b->serial, SIM_FAULT_UNPLUG, 1), 0);
    RUN_UNTIL(d, b->leaves == 2);
    assert_int_equal(b->flashes_done, 1);
    assert_int_equal(b->flash_status, -ENODEV);
    /* Plugged back in, it boots what was in flash before. */
    assert_int_equal(sim_plug(d->t, b->serial), 0);
    RUN_UNTIL(d, b->arrivals == 3);
    assert_int_equal(b->info.pid, WRK_PID_PICO_STDIO);
    drv_free(d);
}

static void test_slow_flash(void **state)
{
    sim_options o;
    drv_test_options(&o, 1);
    o.flash_ms = 20;
    o.slow_flash_factor = 10;
    drv *d = drv_new(&o);
    drv_board *b = drv_wait_boards(d, 1);
    drv_to_bootsel(b);
    assert_int_equal(sim_inject(d->t, b->serial, SIM_FAULT_SLOW_FLASH, 1), 0);
    uint64_t t0 = ifm_now_ms();
    assert_int_equal(drv_flash(b, SIM_FW_PULSECOUNT), 0);
    RUN_UNTIL(d, b->flashes_done == 1);
    /* A lower bound only: a slow machine can only make it longer. */
    assert_true(ifm_now_ms() - t0 >= 200);
    assert_int_equal(b->flash_status, 0);
    RUN_UNTIL(d, b->dev && b->info.pid == WRK_PID_PICO_ICE);
    drv_free(d);
}

/* The next flash "succeeds" but boots silent firmware; the one after is fine. */
static void test_wrong_firmware(void **state)
{
    sim_options o;
    drv_test_options(&o, 1);
    drv *d = drv_new(&o);
    drv_board *b = drv_wait_boards(d, 1);
    drv_to_bootsel(b);
    assert_int_equal(sim_inject(d->t, b->serial, SIM_FAULT_WRONG_FW, 1), 0);
    assert_int_equal(drv_flash(b, SIM_FW_PULSECOUNT), 0);
    RUN_UNTIL(d, b->flashes_done == 1 && b->dev && b->info.pid != WRK_PID_BOOTSEL);
    assert_int_equal(b->flash_status, 0);
    assert_int_equal(b->info.vid, WRK_VID_RPI);
    assert_int_equal(b->info.pid, WRK_PID_PICO_STDIO);
    assert_int_equal(drv_open(b), 0);
    uint8_t junk[64] = { 0 };
    assert_int_equal(drv_write(b, junk, sizeof junk), 0);
    drv_idle(d, 150);
    assert_int_equal(b->rx_calls, 0);
    drv_bring_up(b, SIM_FW_PULSECOUNT); /* the touch still works */
    drv_free(d);
}

static void test_flash_fail(void **state)
{
    sim_options o;
    drv_test_options(&o, 1);
    drv *d = drv_new(&o);
    drv_board *b = drv_wait_boards(d, 1);
    drv_to_bootsel(b);
    assert_int_equal(sim_inject(d->t, b->serial, SIM_FAULT_FLASH_FAIL, 1), 0);
    assert_int_equal(drv_flash(b, SIM_FW_VARIANCE), 0);
    RUN_UNTIL(d, b->flashes_done == 1);
    assert_int_equal(b->flash_status, -EIO);
    assert_true(b->flash_reason[0] != '\0');
    drv_idle(d, 30);
    assert_int_equal(b->leaves, 1); /* still in BOOTSEL */
    assert_int_equal(drv_flash(b, SIM_FW_VARIANCE), 0);
    RUN_UNTIL(d, b->flashes_done == 2);
    assert_int_equal(b->flash_status, 0);
    RUN_UNTIL(d, b->dev && b->info.pid == WRK_PID_PICO_ICE);
    drv_free(d);
}

/* count 0 disarms an armed fault. */
static void test_disarm(void **state)
{
    sim_options o;
    drv_test_options(&o, 1);
    drv *d = drv_new(&o);
    drv_board *b = drv_wait_boards(d, 1);
    drv_to_bootsel(b);
    assert_int_equal(sim_inject(d->t, b->serial, SIM_FAULT_FLASH_FAIL, 3), 0);
    assert_int_equal(sim_inject(d->t, b->serial, SIM_FAULT_FLASH_FAIL, 0), 0);
    assert_int_equal(drv_flash(b, SIM_FW_DEFAULT), 0);
    RUN_UNTIL(d, b->flashes_done == 1);
    assert_int_equal(b->flash_status, 0);
    drv_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fault_names),
        cmocka_unit_test(test_inject_errors),
        cmocka_unit_test(test_hang_mid_transfer),
        cmocka_unit_test(test_hang_silences_watchdog),
        cmocka_unit_test(test_hang_default_firmware),
        cmocka_unit_test(test_watchdog_fault),
        cmocka_unit_test(test_disconnect),
        cmocka_unit_test(test_disconnect_while_absent),
        cmocka_unit_test(test_unplug_and_plug),
        cmocka_unit_test(test_unplug_during_flash),
        cmocka_unit_test(test_slow_flash),
        cmocka_unit_test(test_wrong_firmware),
        cmocka_unit_test(test_flash_fail),
        cmocka_unit_test(test_disarm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
