/* flash: put your own UF2 firmware on boards you hold (reserving them first
 * when no serials are given). The boards stay reserved and run your firmware
 * until you reboot them (back to the kind's firmware) or end the lease.
 *
 * The image is a path, a file: reference or an http(s) URL, read (and checked
 * to be whole UF2 blocks) before anything is sent. Three bounded waits, each
 * said on a terminal: the boards becoming ready (--timeout, default 60 s), then
 * each board's "flashed" event (--flash-timeout, default 60 s: the worker's own
 * flash bound is 30 s, so its failure event normally comes first). --json
 * prints the usual envelope: {"ok", "exit", "image", "results", "summary"}. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

typedef struct {
    char serial[IFM_SERIAL_MAX];
    int state; /* 0 waiting, 1 flashed, -1 failed */
    char why[200];
} target;

typedef struct {
    target *t;
    size_t n, pending;
} flash_run;

static target *find(flash_run *r, const char *serial)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->t[i].serial, serial) == 0)
            return &r->t[i];
    return NULL;
}

static void on_event(icefarm *f, const icefarm_event *ev, void *arg)
{
    flash_run *r = arg;
    target *t = find(r, icefarm_event_serial(ev));
    if (!t || t->state)
        return;
    const char *name = icefarm_event_name(ev), *reason = icefarm_event_reason(ev);
    if (strcmp(name, "flashed") == 0) {
        t->state = 1;
    } else if (!strcmp(name, "failure") || !strcmp(name, "error") || !strcmp(name, "reservation end")) {
        t->state = -1;
        snprintf(t->why, sizeof t->why, "%s", reason[0] ? reason : name);
    } else {
        return;
    }
    r->pending--;
}

static bool all_done(void *arg)
{
    return ((flash_run *)arg)->pending == 0;
}

static bool all_ready(void *arg)
{
    void **a = arg;
    flash_run *r = a[1];
    for (size_t i = 0; i < r->n; i++)
        if (icefarm_get_board_state(a[0], r->t[i].serial) != ICEFARM_BOARD_RESERVED)
            return false;
    return true;
}

/* "S1 preparing, S2 reserved" for the boards still waited for (all with `all`). */
static void states_of(icefarm *f, const flash_run *r, bool all, char *out, size_t cap)
{
    out[0] = '\0';
    for (size_t i = 0; i < r->n; i++) {
        if (!all && r->t[i].state)
            continue;
        size_t len = strlen(out);
        snprintf(out + len, cap - len, "%s%s %s", len ? ", " : "", r->t[i].serial,
                 icefarm_board_state_name(icefarm_get_board_state(f, r->t[i].serial)));
    }
}

static void print_result(const cli_opts *o, const cli_file *img, const flash_run *r, int code, uint64_t t0)
{
    size_t flashed = 0;
    for (size_t i = 0; i < r->n; i++)
        flashed += r->t[i].state > 0;
    if (!o->json) {
        for (size_t i = 0; i < r->n; i++) {
            const target *t = &r->t[i];
            printf("%-20s %s\n", t->serial, t->state > 0 ? "flashed" : t->state < 0 ? t->why : "timed out");
        }
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < r->n; i++) {
        const target *t = &r->t[i];
        json_t *e = json_pack("{s:s, s:b, s:s}", "serial", t->serial, "ok", t->state > 0, "result",
                              t->state > 0       ? "flashed"
                                  : t->state < 0 ? "failed"
                                                 : "timed out");
        if (t->state <= 0)
            json_object_set_new(e, "error", json_string(t->state < 0 ? t->why : "no flashed event in time"));
        json_array_append_new(arr, e);
    }
    json_t *doc = json_pack("{s:b, s:i, s:{s:s, s:I, s:s}, s:o, s:{s:I, s:I, s:I, s:f}}", "ok", code == CLI_OK, "exit",
                            code, "image", "file", img->ref, "bytes", (json_int_t)img->len, "sha256", img->sha256,
                            "results", arr, "summary", "total", (json_int_t)r->n, "flashed", (json_int_t)flashed,
                            "failed", (json_int_t)(r->n - flashed), "seconds", (double)(ifm_now_ms() - t0) / 1000.0);
    if (code != CLI_OK)
        json_object_set_new(doc, "error", json_sprintf("%zu of %zu board(s) not flashed", r->n - flashed, r->n));
    cli_print_json(doc);
    json_decref(doc);
}

int cmd_flash(const cli_opts *o)
{
    char err[512];
    cli_file img;
    size_t bad = 0;
    int rc = cli_files_read(o, o->pos, 1, IFM_MAX_IMAGE, &img, &bad, err, sizeof err);
    if (rc)
        return cli_file_error(o, &img, rc, err, "a UF2 image for the farm is at most 8 MiB");
    if (img.len == 0 || img.len % 512) {
        rc = cli_error(o, CLI_USAGE, "%s is not a UF2 image (%zu bytes; UF2 is 512-byte blocks, at most %u bytes)",
                       img.ref, img.len, IFM_MAX_IMAGE);
        cli_files_free(&img, 1);
        return rc;
    }
    if (img.remote && !o->json)
        fprintf(stderr, "icefarm-cli: fetched %s: %zu bytes, sha256 %s\n", img.ref, img.len, img.sha256);
    icefarm *f = cli_connect(o, &rc);
    if (!f) {
        cli_files_free(&img, 1);
        return rc;
    }
    flash_run r = { 0 };
    char(*serials)[IFM_SERIAL_MAX] = NULL;
    size_t n = (size_t)(o->npos - 1);
    if (n) {
        if ((rc = cli_check_boards(f, o, o->pos + 1, n, true)) != CLI_OK)
            goto out;
        serials = calloc(n, sizeof *serials);
        for (size_t i = 0; serials && i < n; i++)
            snprintf(serials[i], IFM_SERIAL_MAX, "%s", o->pos[i + 1]);
    } else if ((rc = cli_reserve_for_run(f, o, o->boards ? o->boards : 1, o->boards ? o->boards : 1, NULL, 0, &serials,
                                         &n)) != CLI_OK) {
        goto out;
    }
    r.t = calloc(n ? n : 1, sizeof *r.t);
    if (!serials || !r.t) {
        rc = cli_error(o, CLI_FAILED, "out of memory");
        goto out;
    }
    r.n = r.pending = n;
    int wrc = 0;
    for (size_t i = 0; i < n && !wrc; i++) {
        snprintf(r.t[i].serial, IFM_SERIAL_MAX, "%s", serials[i]);
        wrc = icefarm_watch(f, serials[i]);
    }
    if (wrc || (wrc = icefarm_on(f, NULL, on_event, &r))) {
        rc = cli_error(o, CLI_FAILED, "cannot follow the boards' events: %s", icefarm_strerror(wrc));
        goto out;
    }
    bool tty = !o->json && isatty(STDERR_FILENO);
    void *ra[2] = { f, &r };
    char states[512];
    uint64_t ready_bound = o->farm.timeout_ms ? o->farm.timeout_ms : 60000;
    cli_wait_begin("%zu board(s) to be ready for flashing (up to %llu s)", n, (unsigned long long)(ready_bound / 1000));
    rc = icefarm_run_until(f, all_ready, ra, ready_bound);
    cli_wait_end();
    if (rc) {
        states_of(f, &r, true, states, sizeof states);
        rc = rc == -ECANCELED ? cli_error(o, CLI_INTERRUPTED, "interrupted while waiting for the boards")
                              : cli_error(o, CLI_FAILED, "the boards did not become ready within %llu s (%s)",
                                          (unsigned long long)(ready_bound / 1000), states);
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        icefarm_flash(f, r.t[i].serial, img.data, img.len);
    uint64_t t0 = ifm_now_ms(), bound = o->flash_timeout_s * 1000;
    if (tty)
        fprintf(stderr, "flashing %zu board(s) with %s (%zu bytes): waiting up to %llu s for each to report flashed\n",
                n, img.ref, img.len, (unsigned long long)(bound / 1000));
    while (!all_done(&r) && ifm_now_ms() - t0 < bound) {
        if (tty)
            fprintf(stderr, "\r\033[Kflashing %zu board(s): %zu done, %.1f s of %llu ", n, n - r.pending,
                    (double)(ifm_now_ms() - t0) / 1000.0, (unsigned long long)(bound / 1000));
        if (icefarm_run_once(f, 200))
            break;
    }
    if (tty)
        fputs("\r\033[K", stderr);
    size_t failed = 0;
    for (size_t i = 0; i < n; i++)
        failed += r.t[i].state <= 0;
    if (r.pending) {
        states_of(f, &r, false, states, sizeof states);
        fprintf(stderr,
                "icefarm-cli: %zu board(s) did not report flashed within --flash-timeout %llu s (%s); they stay "
                "reserved: see icefarm-cli status\n",
                r.pending, (unsigned long long)(bound / 1000), states);
    }
    rc = failed ? CLI_FAILED : CLI_OK;
    print_result(o, &img, &r, rc, t0);
out:
    cli_files_free(&img, 1);
    free(serials);
    free(r.t);
    icefarm_close(f);
    return rc;
}
