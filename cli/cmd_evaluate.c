/* evaluate: stream bitstreams to boards and collect one result per bitstream,
 * with libicefarm's batch engine (icefarm/batch.h: balancing, stall detection,
 * reboot once, move work off failed boards, never lose or duplicate a result).
 * The command adds reserving boards when none are given, a progress bar on a
 * terminal, and human or --json output. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "icefarm/batch.h"

typedef struct {
    const char *path;
    uint8_t *data;
    size_t len;
    bool done;
    char serial[IFM_SERIAL_MAX];
    icefarm_result result;
    uint16_t *samples;
} job;

typedef struct {
    icefarm *f;
    const cli_opts *o;
    job *jobs;
    size_t njobs, ndone, nfailed, nboards;
    icefarm_batch *batch;
    bool progress;
    uint64_t started_ms;
} run;

static void draw_progress(run *r)
{
    if (!r->progress)
        return;
    const int width = 30;
    int filled = r->njobs ? (int)(r->ndone * (size_t)width / r->njobs) : width;
    double s = (double)(ifm_now_ms() - r->started_ms) / 1000.0;
    fprintf(stderr, "\revaluating [%.*s%*s] %zu/%zu  %zu board(s)  %.1f s ", filled, "##############################",
            width - filled, "", r->ndone, r->njobs, r->batch ? icefarm_batch_boards_alive(r->batch) : r->nboards, s);
    if (r->ndone == r->njobs)
        fputc('\n', stderr);
    fflush(stderr);
}

static void on_result(icefarm_batch *b, size_t index, const char *serial, const icefarm_result *res, void *arg)
{
    run *r = arg;
    job *j = &r->jobs[index];
    j->done = true;
    j->result = *res;
    snprintf(j->serial, sizeof j->serial, "%s", serial);
    if (res->type == ICEFARM_VALUE_WAVEFORM && res->nsamples) {
        j->samples = malloc(res->nsamples * sizeof *j->samples);
        if (j->samples)
            memcpy(j->samples, res->samples, res->nsamples * sizeof *j->samples);
        j->result.samples = j->samples;
        j->result.nsamples = j->samples ? res->nsamples : 0;
    }
    r->ndone++;
    r->nfailed += res->type == ICEFARM_VALUE_FAILED;
    draw_progress(r);
}

static void on_dropped(icefarm_batch *b, const char *serial, const char *why, void *arg)
{
    run *r = arg;
    fprintf(stderr, "%sicefarm-cli: board %s: %s\n", r->progress ? "\n" : "", serial, why);
}

static void on_signal(icefarm *f, int signo, void *arg)
{
    run *r = arg;
    if (r->batch)
        icefarm_batch_cancel(r->batch);
}

static int read_file(const char *path, uint8_t **data, size_t *len, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    *data = malloc(IFM_BITSTREAM_SIZE + 1);
    *len = *data ? fread(*data, 1, IFM_BITSTREAM_SIZE + 1, fp) : 0;
    fclose(fp);
    if (*len != IFM_BITSTREAM_SIZE) {
        snprintf(err, errlen, "%s is %s%zu bytes; an iCE40UP5K bitstream is exactly %u bytes", path,
                 *len > IFM_BITSTREAM_SIZE ? "more than " : "", *len, IFM_BITSTREAM_SIZE);
        return -1;
    }
    return 0;
}

static int acquire_boards(run *r, char (**serials)[IFM_SERIAL_MAX], size_t *n, bool *reserved)
{
    const cli_opts *o = r->o;
    char err[512];
    *reserved = false;
    if (o->nserials) {
        *serials = calloc((size_t)o->nserials, sizeof **serials);
        for (int i = 0; *serials && i < o->nserials; i++)
            snprintf((*serials)[i], IFM_SERIAL_MAX, "%s", o->serials[i]);
        *n = (size_t)o->nserials;
        return CLI_OK;
    }
    uint32_t want = o->boards ? o->boards : (uint32_t)(r->njobs < 8 ? r->njobs : 8);
    char args[160];
    /* Results come back as soon as each bitstream is measured: the window keeps
     * the queue short, so a flush threshold of the window means "every result". */
    snprintf(args, sizeof args, "{\"flush_interval_seconds\": 1, \"flush_at_bitstreams_remaining\": %u}", o->window);
    ifm_enc a;
    ifm_enc_init(&a);
    cli_json_to_msgpack(args, &a, err, sizeof err);
    const char *kind = o->kind ? o->kind : "pulsecount";
    int rc = icefarm_reserve(r->f, want, kind, ifm_enc_data(&a), ifm_enc_size(&a), o->wait_s * 1000, serials, n, err,
                             sizeof err);
    if (rc && !o->boards) {
        /* No explicit --boards: settle for whatever is free right now. */
        icefarm_req req = { .verb = "available", .kind = kind };
        icefarm_reply *rep = NULL;
        char e2[256];
        uint64_t avail = 0;
        if (!icefarm_call(r->f, &req, &rep, e2, sizeof e2) && icefarm_reply_ok(rep) &&
            icefarm_reply_uint(rep, "amount", &avail))
            avail = 0;
        icefarm_reply_free(rep);
        if (avail > 0 && avail < want)
            rc = icefarm_reserve(r->f, (uint32_t)avail, kind, ifm_enc_data(&a), ifm_enc_size(&a), 0, serials, n, err,
                                 sizeof err);
    }
    ifm_enc_free(&a);
    if (rc)
        return cli_error(o, rc == -EBUSY ? CLI_NOT_ENOUGH : CLI_FAILED, "%s", err);
    *reserved = true;
    return CLI_OK;
}

static void print_results(run *r)
{
    if (r->o->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < r->njobs; i++) {
            job *j = &r->jobs[i];
            json_t *o = json_pack("{s:s, s:s}", "file", j->path, "serial", j->serial);
            switch (j->done ? j->result.type : ICEFARM_VALUE_FAILED) {
            case ICEFARM_VALUE_PULSES:
                json_object_set_new(o, "pulses", json_integer(j->result.pulses));
                break;
            case ICEFARM_VALUE_FITNESS:
                json_object_set_new(o, "fitness", json_real(j->result.fitness));
                break;
            case ICEFARM_VALUE_WAVEFORM: {
                json_object_set_new(o, "fitness", json_real(j->result.fitness));
                json_t *w = json_array();
                for (size_t k = 0; k < j->result.nsamples; k++)
                    json_array_append_new(w, json_integer(j->result.samples[k]));
                json_object_set_new(o, "waveform", w);
                break;
            }
            default:
                json_object_set_new(o, "error", json_string(j->done ? j->result.error : "not evaluated"));
            }
            json_array_append_new(arr, o);
        }
        cli_print_json(arr);
        json_decref(arr);
        return;
    }
    printf("%-40s %-20s %s\n", "FILE", "SERIAL", "RESULT");
    for (size_t i = 0; i < r->njobs; i++) {
        job *j = &r->jobs[i];
        char value[160];
        if (!j->done)
            snprintf(value, sizeof value, "not evaluated");
        else if (j->result.type == ICEFARM_VALUE_PULSES)
            snprintf(value, sizeof value, "%lld pulses", (long long)j->result.pulses);
        else if (j->result.type == ICEFARM_VALUE_FAILED)
            snprintf(value, sizeof value, "FAILED: %s", j->result.error);
        else
            snprintf(value, sizeof value, "fitness %.4f", j->result.fitness);
        printf("%-40s %-20s %s\n", j->path, j->serial[0] ? j->serial : "-", value);
    }
    double s = (double)(ifm_now_ms() - r->started_ms) / 1000.0;
    printf("%zu bitstream(s) on %zu board(s) in %.1f s, %zu failed\n", r->njobs, r->nboards, s, r->nfailed);
}

int cmd_evaluate(const cli_opts *o)
{
    if (!o->npos)
        return cli_error(o, CLI_USAGE, "evaluate needs at least one bitstream file");
    run r;
    memset(&r, 0, sizeof r);
    r.o = o;
    r.njobs = (size_t)o->npos;
    r.jobs = calloc(r.njobs, sizeof *r.jobs);
    int rc = CLI_FAILED;
    char err[512];
    char(*serials)[IFM_SERIAL_MAX] = NULL;
    size_t nserials = 0;
    bool reserved = false;
    if (!r.jobs)
        return CLI_FAILED;
    for (size_t i = 0; i < r.njobs; i++) {
        r.jobs[i].path = o->pos[i];
        if (read_file(o->pos[i], &r.jobs[i].data, &r.jobs[i].len, err, sizeof err)) {
            rc = cli_error(o, CLI_USAGE, "%s", err);
            goto out;
        }
    }
    r.f = cli_connect(o, &rc);
    if (!r.f)
        goto out;
    int sigs[] = { SIGINT, SIGTERM };
    icefarm_on_signals(r.f, sigs, 2, on_signal, &r);
    r.started_ms = ifm_now_ms();
    rc = acquire_boards(&r, &serials, &nserials, &reserved);
    if (rc != CLI_OK)
        goto out;
    r.nboards = nserials;
    /* Boards the user reserved stay theirs even when they fail; boards we
     * reserved ourselves go back to the farm to be repaired. */
    icefarm_batch_opts bo = { .window = o->window,
                              .result_timeout_ms = o->result_timeout_s * 1000,
                              .keep_failed_boards = !reserved };
    r.batch = icefarm_batch_new(r.f, serials, nserials, &bo, on_result, &r);
    if (!r.batch) {
        rc = cli_error(o, CLI_FAILED, "out of memory");
        goto out;
    }
    icefarm_batch_on_board_dropped(r.batch, on_dropped);
    for (size_t i = 0; i < r.njobs; i++) {
        icefarm_batch_add(r.batch, r.jobs[i].data, r.jobs[i].len, NULL);
        free(r.jobs[i].data);
        r.jobs[i].data = NULL;
    }
    r.progress = !o->json && isatty(STDERR_FILENO);
    if (r.progress)
        fprintf(stderr, "waiting for %zu board(s) to load the %s firmware...\n", r.nboards,
                o->kind ? o->kind : "pulsecount");
    bool complete = icefarm_batch_run(r.batch, 0) == 0;
    if (!complete)
        fprintf(stderr, "\nicefarm-cli: interrupted; %zu of %zu done\n", r.ndone, r.njobs);
    print_results(&r);
    rc = !complete || r.nfailed ? CLI_FAILED : CLI_OK;
out:
    icefarm_batch_free(r.batch);
    if (r.f && reserved) {
        const char **list = calloc(nserials ? nserials : 1, sizeof *list);
        for (size_t i = 0; list && i < nserials; i++)
            list[i] = serials[i];
        icefarm_req req = { .verb = "end", .serials = list, .nserials = list ? nserials : 0 };
        icefarm_reply *rep = NULL;
        if (icefarm_call(r.f, &req, &rep, err, sizeof err) == 0 && icefarm_reply_ok(rep) && r.progress)
            fprintf(stderr, "released %zu board(s)\n", nserials);
        icefarm_reply_free(rep);
        free(list);
    }
    for (size_t i = 0; i < r.njobs; i++) {
        free(r.jobs[i].data);
        free(r.jobs[i].samples);
    }
    free(r.jobs);
    free(serials);
    icefarm_close(r.f);
    return rc;
}
