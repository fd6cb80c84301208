/* A test driver that uses a transport only through wrk_transport_ops on a real
 * ifm_loop, the way the worker will: it tracks boards by serial across
 * re-enumerations, splits and classifies what they print with fwproto, and
 * records every callback. It also checks the transport's contract on the way:
 * no callback may run inside the op that caused it, and none may run for a CDC
 * channel after it was closed or its device left.
 */
#ifndef ICEFARM_TESTS_SIM_DRIVER_H
#define ICEFARM_TESTS_SIM_DRIVER_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fwproto.h"
#include "sim.h"

#define DRV_MAX_BOARDS 8
#define DRV_MAX_LOG 256
/* Generous: only a wedged test ever waits this long. */
#define DRV_TIMEOUT_MS 30000

#define DRV_MAX_WRITES 64

typedef struct drv drv;
typedef struct drv_board drv_board;

/* Identifies the CDC channel a write was queued on. */
typedef struct {
    drv_board *b;
    unsigned channel;
} drv_chan_ref;

struct drv_board {
    drv *d;
    char serial[WRK_SERIAL_MAX];
    wrk_usbdev *dev; /* NULL while absent */
    wrk_usbinfo info;
    int arrivals, leaves;

    bool open;
    unsigned channel; /* bumps on open/close: stale callbacks are detected */
    fw_lines *lines;
    size_t rx_calls, rx_bytes, rx_max_chunk;
    char *log[DRV_MAX_LOG]; /* every line except the default firmware's flood */
    size_t nlog;
    int n_default, n_ready, n_pulses, n_samples, n_watchdog, n_malformed;
    uint32_t pulses;
    uint16_t samples[FW_SAMPLES_MAX];
    size_t nsamples;
    int64_t wd_received;

    int writes_done, write_status;
    int flashes_done, flash_status;
    char flash_reason[128];

    drv_chan_ref refs[DRV_MAX_WRITES];
    size_t nrefs;
};

struct drv {
    ifm_loop *loop;
    wrk_transport *t;
    drv_board b[DRV_MAX_BOARDS];
    size_t n;
    bool in_call;     /* inside a transport op right now */
    int violations;   /* contract breaches seen by callbacks; must stay 0 */
    uint8_t *bits[3]; /* BITSTREAM_SIZE-byte bitstreams: real files if present */
};

drv *drv_new(const sim_options *o);
void drv_free(drv *d); /* frees the transport first, mid-activity is fine */
drv_board *drv_board_by_serial(drv *d, const char *serial);
/* Let `ms` pass on the loop. Only used to show that something does NOT happen,
 * which a slow machine can only make easier to pass. */
void drv_idle(drv *d, int ms);
/* Run `n` loop turns: for "the next few ticks have happened", independent of speed. */
void drv_turns(drv *d, int n);
void drv_clear(drv_board *b); /* forget logged lines and counters */
/* Wait for the first `n` boards to arrive; returns board 0. */
drv_board *drv_wait_boards(drv *d, size_t n);
/* touch -> BOOTSEL -> flash `kind` -> re-enumerated in it (asserts each step). */
void drv_bring_up(drv_board *b, sim_fw_kind kind);
/* touch -> BOOTSEL (asserts). */
void drv_to_bootsel(drv_board *b);

/* The ops, wrapped so callbacks can tell whether they run inside one. */
int drv_touch(drv_board *b);
int drv_flash(drv_board *b, sim_fw_kind kind);
int drv_flash_raw(drv_board *b, const uint8_t *uf2, size_t len);
int drv_open(drv_board *b);
int drv_write(drv_board *b, const uint8_t *data, size_t len);
void drv_close(drv_board *b);

/* Index of the first logged line equal to `line` at or after `from`, or -1. */
int drv_find(const drv_board *b, const char *line, size_t from);

#define RUN_UNTIL(d, cond)                                                                                             \
    do {                                                                                                               \
        uint64_t dl_ = ifm_now_ms() + DRV_TIMEOUT_MS;                                                                  \
        while (!(cond) && ifm_now_ms() < dl_)                                                                          \
            ifm_loop_once((d)->loop, 10);                                                                              \
        if (!(cond))                                                                                                   \
            fail_msg("timed out waiting for %s", #cond);                                                               \
    } while (0)

/* Options for tests: quick but timing-tolerant (see each test for overrides). */
void drv_test_options(sim_options *o, unsigned boards);

#endif
