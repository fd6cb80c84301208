/* flash: put your own UF2 firmware on boards you hold (reserving them first
 * when no serials are given). The boards stay reserved and run your firmware
 * until you reboot them (back to the kind's firmware) or end the lease. */
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

static int read_image(const char *path, uint8_t **data, size_t *len, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    *data = malloc(IFM_MAX_IMAGE + 1);
    *len = *data ? fread(*data, 1, IFM_MAX_IMAGE + 1, fp) : 0;
    fclose(fp);
    if (*len == 0 || *len > IFM_MAX_IMAGE || *len % 512) {
        snprintf(err, errlen, "%s is not a UF2 image (%zu bytes; UF2 is 512-byte blocks, at most %u bytes)", path, *len,
                 IFM_MAX_IMAGE);
        return -1;
    }
    return 0;
}

int cmd_flash(const cli_opts *o)
{
    char err[512];
    uint8_t *image = NULL;
    size_t len = 0;
    if (read_image(o->pos[0], &image, &len, err, sizeof err)) {
        free(image);
        return cli_error(o, CLI_USAGE, "%s", err);
    }
    int rc;
    icefarm *f = cli_connect(o, &rc);
    if (!f) {
        free(image);
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
    } else {
        cli_wait_begin("board(s) from icefarm control");
        rc = icefarm_reserve(f, o->boards ? o->boards : 1, o->kind ? o->kind : "pulsecount", NULL, 0, o->wait_s * 1000,
                             &serials, &n, err, sizeof err);
        cli_wait_end();
        if (rc) {
            rc = cli_error(o,
                           rc == -EBUSY           ? CLI_NOT_ENOUGH
                               : rc == -ETIMEDOUT ? CLI_UNREACHABLE
                                                  : CLI_FAILED,
                           "%s", err);
            goto out;
        }
    }
    r.t = calloc(n ? n : 1, sizeof *r.t);
    r.n = r.pending = n;
    for (size_t i = 0; i < n; i++) {
        snprintf(r.t[i].serial, IFM_SERIAL_MAX, "%s", serials[i]);
        icefarm_watch(f, serials[i]);
    }
    icefarm_on(f, NULL, on_event, &r);
    bool tty = !o->json && isatty(STDERR_FILENO);
    void *ra[2] = { f, &r };
    if (tty)
        fprintf(stderr, "waiting for %zu board(s) to be ready...\n", n);
    uint64_t ready_bound = o->farm.timeout_ms ? o->farm.timeout_ms : 60000;
    if ((rc = icefarm_run_until(f, all_ready, ra, ready_bound)) != 0) {
        char states[512] = "";
        for (size_t i = 0; i < n; i++)
            snprintf(states + strlen(states), sizeof states - strlen(states), "%s%s %s", i ? ", " : "", r.t[i].serial,
                     icefarm_board_state_name(icefarm_get_board_state(f, r.t[i].serial)));
        rc = rc == -ECANCELED ? cli_error(o, CLI_INTERRUPTED, "interrupted while waiting for the boards")
                              : cli_error(o, CLI_FAILED, "the boards did not become ready within %llu s (%s)",
                                          (unsigned long long)(ready_bound / 1000), states);
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        icefarm_flash(f, r.t[i].serial, image, len);
    uint64_t t0 = ifm_now_ms();
    while (!all_done(&r) && ifm_now_ms() - t0 < 300000) {
        if (tty)
            fprintf(stderr, "\rflashing %zu board(s): %zu done, %.1f s ", n, n - r.pending,
                    (double)(ifm_now_ms() - t0) / 1000.0);
        if (icefarm_run_once(f, 200))
            break;
    }
    if (tty)
        fputc('\n', stderr);
    size_t failed = 0;
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        target *t = &r.t[i];
        const char *res = t->state > 0 ? "flashed" : t->state < 0 ? t->why : "timed out";
        failed += t->state <= 0;
        if (o->json)
            json_array_append_new(arr,
                                  json_pack("{s:s, s:b, s:s}", "serial", t->serial, "ok", t->state > 0, "result", res));
        else
            printf("%-20s %s\n", t->serial, res);
    }
    if (o->json)
        cli_print_json(arr);
    json_decref(arr);
    rc = failed ? CLI_FAILED : CLI_OK;
out:
    free(image);
    free(serials);
    free(r.t);
    icefarm_close(f);
    return rc;
}
