#include "sim_driver.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef ICEFARM_BITSTREAM_DIR
#define ICEFARM_BITSTREAM_DIR "tests/bitstreams"
#endif

void drv_test_options(sim_options *o, unsigned boards)
{
    sim_options_default(o);
    o->boards = boards;
    o->seed = "unit-test";
    o->count_window_ms = 20;
    o->flash_ms = 10;
    o->enum_ms = 5;
    o->replug_ms = 20;
    /* A full transfer must never be cut short by a slow machine. */
    o->watchdog_ms = 60000;
}

static void note(drv *d, bool bad)
{
    if (bad)
        d->violations++;
}

/* ---- callbacks ---- */

static bool on_line(void *arg, const char *line, size_t len, bool truncated)
{
    drv_board *b = arg;
    fw_line_info info;
    switch (fw_classify(line, len, truncated, b->samples, FW_SAMPLES_MAX, &info)) {
    case FW_LINE_DEFAULT_FW:
        b->n_default++;
        return true; /* not logged: a flood */
    case FW_LINE_READY:
        b->n_ready++;
        break;
    case FW_LINE_PULSES:
        b->n_pulses++;
        b->pulses = info.pulses;
        break;
    case FW_LINE_SAMPLES:
        b->n_samples++;
        b->nsamples = info.nsamples;
        break;
    case FW_LINE_WATCHDOG:
        b->n_watchdog++;
        b->wd_received = info.received;
        break;
    case FW_LINE_MALFORMED:
        b->n_malformed++;
        break;
    case FW_LINE_OTHER:
        break;
    }
    if (b->nlog < DRV_MAX_LOG)
        b->log[b->nlog++] = strndup(line, len);
    return true;
}

static void on_rx(void *arg, const uint8_t *data, size_t len)
{
    drv_board *b = arg;
    note(b->d, b->d->in_call || !b->open || !b->dev || len == 0);
    b->rx_calls++;
    b->rx_bytes += len;
    if (len > b->rx_max_chunk)
        b->rx_max_chunk = len;
    fw_lines_feed(b->lines, data, len, on_line, b);
}

static void on_err(void *arg, const char *reason)
{
    drv_board *b = arg;
    note(b->d, true); /* the sim never reports CDC errors */
}

static void on_write_done(void *arg, int status, const char *reason)
{
    drv_chan_ref *r = arg;
    drv_board *b = r->b;
    note(b->d, b->d->in_call || !b->open || r->channel != b->channel);
    b->writes_done++;
    b->write_status = status;
}

static void on_flash_done(void *arg, int status, const char *reason)
{
    drv_board *b = arg;
    note(b->d, b->d->in_call || (status != 0 && !reason));
    b->flashes_done++;
    b->flash_status = status;
    snprintf(b->flash_reason, sizeof b->flash_reason, "%s", reason ? reason : "");
}

static void on_arrive(void *arg, wrk_usbdev *dev, const wrk_usbinfo *info)
{
    drv *d = arg;
    note(d, d->in_call);
    drv_board *b = drv_board_by_serial(d, info->serial);
    if (!b) {
        assert_true(d->n < DRV_MAX_BOARDS);
        b = &d->b[d->n++];
        b->d = d;
        snprintf(b->serial, sizeof b->serial, "%s", info->serial);
        b->lines = malloc(sizeof *b->lines);
        fw_lines_init(b->lines);
    }
    note(d, b->dev != NULL); /* arrived twice without leaving */
    b->dev = dev;
    b->info = *info;
    b->arrivals++;
}

static void on_leave(void *arg, wrk_usbdev *dev)
{
    drv *d = arg;
    note(d, d->in_call);
    for (size_t i = 0; i < d->n; i++) {
        drv_board *b = &d->b[i];
        if (b->dev == dev) {
            b->dev = NULL;
            b->leaves++;
            if (b->open) { /* closed by the transport, silently */
                b->open = false;
                b->channel++;
            }
            return;
        }
    }
    note(d, true); /* unknown device */
}

static const wrk_transport_events events = { .arrive = on_arrive, .leave = on_leave };

/* ---- lifecycle ---- */

static uint8_t *load_bitstream(const char *dir, size_t want_index)
{
    DIR *dh = opendir(dir);
    if (!dh)
        return NULL;
    /* Names sorted so the choice is stable. */
    char *names[64];
    size_t n = 0;
    for (struct dirent *e; (e = readdir(dh)) && n < 64;) {
        size_t l = strlen(e->d_name);
        if (l > 4 && strcmp(e->d_name + l - 4, ".bin") == 0)
            names[n++] = strdup(e->d_name);
    }
    closedir(dh);
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char *t = names[j];
            names[j] = names[j - 1];
            names[j - 1] = t;
        }
    uint8_t *out = NULL;
    size_t seen = 0;
    for (size_t i = 0; i < n && !out; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "rb");
        if (!f)
            continue;
        uint8_t *buf = malloc(BITSTREAM_SIZE + 1);
        size_t got = fread(buf, 1, BITSTREAM_SIZE + 1, f);
        fclose(f);
        if (got == BITSTREAM_SIZE && seen++ == want_index)
            out = buf;
        else
            free(buf);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    return out;
}

static uint8_t *generated_bitstream(uint32_t seed)
{
    uint8_t *buf = malloc(BITSTREAM_SIZE);
    uint32_t x = seed;
    for (size_t i = 0; i < BITSTREAM_SIZE; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (uint8_t)(x >> 24);
    }
    return buf;
}

drv *drv_new(const sim_options *o)
{
    drv *d = calloc(1, sizeof *d);
    d->loop = ifm_loop_new();
    assert_non_null(d->loop);
    d->t = sim_transport_new(d->loop, o);
    assert_non_null(d->t);
    for (size_t i = 0; i < 3; i++) {
        d->bits[i] = load_bitstream(ICEFARM_BITSTREAM_DIR, i);
        if (!d->bits[i])
            d->bits[i] = generated_bitstream(0xb175u + (uint32_t)i);
    }
    d->in_call = true;
    assert_int_equal(d->t->ops->start(d->t, &events, d), 0);
    d->in_call = false;
    return d;
}

void drv_clear(drv_board *b)
{
    for (size_t i = 0; i < b->nlog; i++)
        free(b->log[i]);
    b->nlog = 0;
    b->n_default = b->n_ready = b->n_pulses = b->n_samples = b->n_watchdog = b->n_malformed = 0;
    b->rx_calls = b->rx_bytes = 0;
    b->writes_done = b->flashes_done = 0;
}

void drv_free(drv *d)
{
    assert_int_equal(d->violations, 0);
    d->t->ops->free(d->t);
    /* Freeing the transport must not leave a single timer behind. */
    assert_int_equal(ifm_timer_count(d->loop), 0);
    ifm_loop_free(d->loop);
    for (size_t i = 0; i < d->n; i++) {
        drv_clear(&d->b[i]);
        free(d->b[i].lines);
    }
    for (size_t i = 0; i < 3; i++)
        free(d->bits[i]);
    free(d);
}

drv_board *drv_board_by_serial(drv *d, const char *serial)
{
    for (size_t i = 0; i < d->n; i++)
        if (strcmp(d->b[i].serial, serial) == 0)
            return &d->b[i];
    return NULL;
}

void drv_idle(drv *d, int ms)
{
    uint64_t until = ifm_now_ms() + (uint64_t)ms;
    while (ifm_now_ms() < until)
        ifm_loop_once(d->loop, 5);
}

int drv_find(const drv_board *b, const char *line, size_t from)
{
    for (size_t i = from; i < b->nlog; i++)
        if (strcmp(b->log[i], line) == 0)
            return (int)i;
    return -1;
}

/* ---- ops ---- */

int drv_touch(drv_board *b)
{
    b->d->in_call = true;
    int rc = b->d->t->ops->touch_1200(b->d->t, b->dev);
    b->d->in_call = false;
    return rc;
}

int drv_flash_raw(drv_board *b, const uint8_t *uf2, size_t len)
{
    b->d->in_call = true;
    int rc = b->d->t->ops->flash_uf2(b->d->t, b->dev, uf2, len, on_flash_done, b);
    b->d->in_call = false;
    return rc;
}

int drv_flash(drv_board *b, sim_fw_kind kind)
{
    size_t len;
    uint8_t *img = sim_fw_build_uf2(kind, &len);
    assert_non_null(img);
    int rc = drv_flash_raw(b, img, len);
    /* The image is freed at once: flash_uf2 must not keep pointing at it. */
    memset(img, 0, len);
    free(img);
    return rc;
}

int drv_open(drv_board *b)
{
    b->d->in_call = true;
    int rc = b->d->t->ops->cdc_open(b->d->t, b->dev, on_rx, on_err, b);
    b->d->in_call = false;
    if (rc == 0) {
        b->open = true;
        b->channel++;
        fw_lines_init(b->lines);
    }
    return rc;
}

int drv_write(drv_board *b, const uint8_t *data, size_t len)
{
    /* A ring, not malloc: writes cancelled by close never call back to free it. */
    drv_chan_ref *r = &b->refs[b->nrefs++ % DRV_MAX_WRITES];
    *r = (drv_chan_ref){ b, b->channel };
    b->d->in_call = true;
    int rc = b->d->t->ops->cdc_write(b->d->t, b->dev, data, len, on_write_done, r);
    b->d->in_call = false;
    return rc;
}

void drv_close(drv_board *b)
{
    b->d->in_call = true;
    b->d->t->ops->cdc_close(b->d->t, b->dev);
    b->d->in_call = false;
    b->open = false;
    b->channel++;
}

void drv_turns(drv *d, int n)
{
    for (int i = 0; i < n; i++)
        ifm_loop_once(d->loop, 10);
}

drv_board *drv_wait_boards(drv *d, size_t n)
{
    RUN_UNTIL(d, d->n >= n);
    for (size_t i = 0; i < n; i++)
        RUN_UNTIL(d, d->b[i].dev != NULL);
    return &d->b[0];
}

void drv_to_bootsel(drv_board *b)
{
    drv *d = b->d;
    int arrivals = b->arrivals, leaves = b->leaves;
    assert_int_equal(drv_touch(b), 0);
    assert_non_null(b->dev); /* leaving happens later, not inside the call */
    RUN_UNTIL(d, b->leaves == leaves + 1);
    RUN_UNTIL(d, b->arrivals == arrivals + 1);
    assert_int_equal(b->info.vid, WRK_VID_RPI);
    assert_int_equal(b->info.pid, WRK_PID_BOOTSEL);
}

void drv_bring_up(drv_board *b, sim_fw_kind kind)
{
    drv *d = b->d;
    drv_to_bootsel(b);
    int arrivals = b->arrivals, leaves = b->leaves, flashes = b->flashes_done;
    assert_int_equal(drv_flash(b, kind), 0);
    assert_int_equal(b->flashes_done, flashes);
    RUN_UNTIL(d, b->flashes_done == flashes + 1);
    assert_int_equal(b->flash_status, 0);
    RUN_UNTIL(d, b->leaves == leaves + 1);
    RUN_UNTIL(d, b->arrivals == arrivals + 1);
    bool ice = kind == SIM_FW_PULSECOUNT || kind == SIM_FW_VARIANCE;
    assert_int_equal(b->info.vid, ice ? WRK_VID_PIDCODES : WRK_VID_RPI);
    assert_int_equal(b->info.pid, ice ? WRK_PID_PICO_ICE : WRK_PID_PICO_STDIO);
}
