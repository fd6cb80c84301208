/* evaluate: stream bitstreams to boards and collect one result per bitstream.
 *
 * Work is balanced by keeping at most --window bitstreams in flight per board and
 * topping a board up whenever one of its results comes back, so fast boards take
 * more. A board that goes quiet for --result-timeout is rebooted once (the worker
 * keeps its queue across a reboot); if it stalls again, or fails, its bitstreams
 * move to the other boards. Each bitstream is assigned to exactly one board at a
 * time and only that board's result is accepted, so nothing is lost or counted
 * twice. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

typedef enum { JOB_PENDING, JOB_INFLIGHT, JOB_DONE } job_state;

typedef struct {
    const char *path;
    uint8_t *data;
    size_t len;
    char id[IFM_ID_MAX];
    job_state state;
    char serial[IFM_SERIAL_MAX]; /* where it is in flight or was measured */
    ifm_result result;
    uint16_t *samples;
} job;

typedef struct {
    char serial[IFM_SERIAL_MAX];
    bool ready, dead;
    uint32_t inflight;
    uint64_t last_progress_ms;
    int reboots;
} board;

typedef struct {
    icefarm *f;
    const cli_opts *o;
    job *jobs;
    size_t njobs, ndone, nfailed;
    board *boards;
    size_t nboards;
    char batch_id[IFM_ID_MAX];
    bool interrupted;
    bool progress;
    uint64_t started_ms;
} run;

static board *find_board(run *r, const char *serial)
{
    for (size_t i = 0; i < r->nboards; i++)
        if (strcmp(r->boards[i].serial, serial) == 0)
            return &r->boards[i];
    return NULL;
}

static job *find_job(run *r, const char *id)
{
    /* ids are "<index>" so lookup is direct */
    char *end;
    unsigned long i = strtoul(id, &end, 10);
    return *id && !*end && i < r->njobs ? &r->jobs[i] : NULL;
}

static void draw_progress(run *r)
{
    if (!r->progress)
        return;
    const int width = 30;
    int filled = r->njobs ? (int)(r->ndone * (size_t)width / r->njobs) : width;
    double s = (double)(ifm_now_ms() - r->started_ms) / 1000.0;
    fprintf(stderr, "\revaluating [%.*s%*s] %zu/%zu  %zu board(s)  %.1f s ", filled,
            "##############################", width - filled, "", r->ndone, r->njobs, r->nboards, s);
    if (r->ndone == r->njobs)
        fputc('\n', stderr);
    fflush(stderr);
}

static void finish_job(run *r, job *j, const ifm_result *res, const char *serial)
{
    j->state = JOB_DONE;
    j->result = *res;
    snprintf(j->serial, sizeof j->serial, "%s", serial);
    if (res->type == IFM_VALUE_WAVEFORM && res->nsamples) {
        j->samples = malloc(res->nsamples * sizeof *j->samples);
        if (j->samples)
            memcpy(j->samples, res->samples, res->nsamples * sizeof *j->samples);
        j->result.samples = j->samples;
    }
    r->ndone++;
    r->nfailed += res->type == IFM_VALUE_FAILED;
    draw_progress(r);
}

static void fail_job(run *r, job *j, const char *why)
{
    ifm_result res;
    memset(&res, 0, sizeof res);
    snprintf(res.id, sizeof res.id, "%s", j->id);
    res.type = IFM_VALUE_FAILED;
    snprintf(res.error, sizeof res.error, "%s", why);
    finish_job(r, j, &res, j->serial);
}

/* Tops every ready board up to the window. One message per board per round. */
static void dispatch(run *r)
{
    for (size_t b = 0; b < r->nboards; b++) {
        board *bd = &r->boards[b];
        if (!bd->ready || bd->dead || bd->inflight >= r->o->window)
            continue;
        ifm_file files[64];
        job *picked[64];
        size_t n = 0;
        for (size_t i = 0; i < r->njobs && bd->inflight + n < r->o->window && n < 64; i++) {
            job *j = &r->jobs[i];
            if (j->state != JOB_PENDING)
                continue;
            files[n] = (ifm_file){ "", j->data, j->len };
            snprintf(files[n].id, sizeof files[n].id, "%s", j->id);
            picked[n++] = j;
        }
        if (!n)
            return;
        if (icefarm_evaluate(r->f, bd->serial, r->batch_id, files, n))
            continue; /* not connected; the next round retries */
        for (size_t i = 0; i < n; i++) {
            picked[i]->state = JOB_INFLIGHT;
            snprintf(picked[i]->serial, sizeof picked[i]->serial, "%s", bd->serial);
        }
        if (!bd->inflight)
            bd->last_progress_ms = ifm_now_ms();
        bd->inflight += (uint32_t)n;
    }
}

/* A board is out: its in-flight bitstreams go back to the queue. */
static void retire_board(run *r, board *bd, const char *why)
{
    if (bd->dead)
        return;
    bd->dead = true;
    bd->inflight = 0;
    for (size_t i = 0; i < r->njobs; i++) {
        job *j = &r->jobs[i];
        if (j->state == JOB_INFLIGHT && strcmp(j->serial, bd->serial) == 0) {
            j->state = JOB_PENDING;
            j->serial[0] = '\0';
        }
    }
    fprintf(stderr, "%sicefarm-cli: board %s dropped (%s); its bitstreams move to the other boards\n",
            r->progress ? "\n" : "", bd->serial, why);
    size_t alive = 0;
    for (size_t i = 0; i < r->nboards; i++)
        alive += !r->boards[i].dead;
    if (!alive)
        for (size_t i = 0; i < r->njobs; i++)
            if (r->jobs[i].state == JOB_PENDING)
                fail_job(r, &r->jobs[i], "no working board left");
    /* Give the board back so it can be repaired and reused. */
    ifm_ctl_req req = { .verb = IFM_VERB_END };
    char one[1][IFM_SERIAL_MAX];
    snprintf(one[0], IFM_SERIAL_MAX, "%s", bd->serial);
    req.serials = one;
    req.nserials = 1;
    icefarm_send(r->f, &req);
}

static void on_results(icefarm *f, const ifm_event *ev, void *arg)
{
    run *r = arg;
    board *bd = find_board(r, ev->serial);
    if (!bd || strcmp(ev->batch_id, r->batch_id) != 0)
        return;
    size_t n = ev->results ? ev->results->via.array.size : 0;
    uint16_t samples[4096];
    for (size_t i = 0; i < n; i++) {
        ifm_result res;
        ifm_err err;
        if (ifm_event_result_at(ev, i, &res, samples, 4096, &err))
            continue;
        job *j = find_job(r, res.id);
        /* Only the board it is assigned to may answer for it: no duplicates. */
        if (!j || j->state != JOB_INFLIGHT || strcmp(j->serial, ev->serial) != 0)
            continue;
        finish_job(r, j, &res, ev->serial);
        if (bd->inflight)
            bd->inflight--;
    }
    bd->last_progress_ms = ifm_now_ms();
    dispatch(r);
}

static void on_ready(icefarm *f, const ifm_event *ev, void *arg)
{
    run *r = arg;
    board *bd = find_board(r, ev->serial);
    if (bd && !bd->dead) {
        bd->ready = true;
        bd->last_progress_ms = ifm_now_ms();
        dispatch(r);
    }
}

static bool all_done(void *arg);

static void on_failure(icefarm *f, const ifm_event *ev, void *arg)
{
    run *r = arg;
    board *bd = find_board(r, ev->serial);
    if (bd && !all_done(r))
        retire_board(r, bd, ev->reason[0] ? ev->reason : ev->event);
    dispatch(r);
}

static void check_stalls(run *r)
{
    uint64_t now = ifm_now_ms(), limit = r->o->result_timeout_s * 1000;
    for (size_t i = 0; i < r->nboards; i++) {
        board *bd = &r->boards[i];
        if (bd->dead || !bd->inflight || now - bd->last_progress_ms < limit)
            continue;
        if (bd->reboots == 0) {
            bd->reboots++;
            bd->last_progress_ms = now;
            fprintf(stderr, "%sicefarm-cli: board %s stalled; rebooting it\n", r->progress ? "\n" : "", bd->serial);
            ifm_ctl_req req = { .verb = IFM_VERB_REBOOT };
            char one[1][IFM_SERIAL_MAX];
            snprintf(one[0], IFM_SERIAL_MAX, "%s", bd->serial);
            req.serials = one;
            req.nserials = 1;
            icefarm_send(r->f, &req);
        } else {
            retire_board(r, bd, "stalled again after a reboot");
            dispatch(r);
        }
    }
}

static bool all_done(void *arg)
{
    run *r = arg;
    return r->ndone == r->njobs || r->interrupted;
}

static void on_signal(ifm_loop *loop, int signo, void *arg)
{
    ((run *)arg)->interrupted = true;
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
    int rc = icefarm_reserve(r->f, want, kind, ifm_enc_data(&a), ifm_enc_size(&a), o->wait_s * 1000,
                             serials, n, err, sizeof err);
    if (rc && !o->boards) {
        /* No explicit --boards: settle for whatever is free right now. */
        ifm_ctl_req req = { .verb = IFM_VERB_AVAILABLE };
        snprintf(req.kind, sizeof req.kind, "%s", kind);
        icefarm_reply rep;
        char e2[256];
        uint64_t avail = 0;
        if (!icefarm_call(r->f, &req, NULL, 0, &rep, e2, sizeof e2) && rep.st.ok)
            ifm_get_uint(rep.doc.root, "amount", false, 0, UINT32_MAX, &avail, NULL);
        icefarm_reply_free(&rep);
        if (avail > 0 && avail < want)
            rc = icefarm_reserve(r->f, (uint32_t)avail, kind, ifm_enc_data(&a), ifm_enc_size(&a), 0,
                                 serials, n, err, sizeof err);
    }
    ifm_enc_free(&a);
    if (rc)
        return cli_error(o, strstr(err, "not enough") ? CLI_NOT_ENOUGH : CLI_FAILED, "%s", err);
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
            switch (j->state == JOB_DONE ? j->result.type : IFM_VALUE_FAILED) {
            case IFM_VALUE_PULSES: json_object_set_new(o, "pulses", json_integer(j->result.pulses)); break;
            case IFM_VALUE_FITNESS: json_object_set_new(o, "fitness", json_real(j->result.fitness)); break;
            case IFM_VALUE_WAVEFORM: {
                json_object_set_new(o, "fitness", json_real(j->result.fitness));
                json_t *w = json_array();
                for (size_t k = 0; k < j->result.nsamples; k++)
                    json_array_append_new(w, json_integer(j->result.samples[k]));
                json_object_set_new(o, "waveform", w);
                break;
            }
            default:
                json_object_set_new(o, "error", json_string(j->state == JOB_DONE ? j->result.error : "not evaluated"));
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
        if (j->state != JOB_DONE)
            snprintf(value, sizeof value, "not evaluated");
        else if (j->result.type == IFM_VALUE_PULSES)
            snprintf(value, sizeof value, "%lld pulses", (long long)j->result.pulses);
        else if (j->result.type == IFM_VALUE_FAILED)
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
    char (*serials)[IFM_SERIAL_MAX] = NULL;
    size_t nserials = 0;
    bool reserved = false;
    if (!r.jobs)
        return CLI_FAILED;
    for (size_t i = 0; i < r.njobs; i++) {
        r.jobs[i].path = o->pos[i];
        snprintf(r.jobs[i].id, sizeof r.jobs[i].id, "%zu", i);
        if (read_file(o->pos[i], &r.jobs[i].data, &r.jobs[i].len, err, sizeof err)) {
            rc = cli_error(o, CLI_USAGE, "%s", err);
            goto out;
        }
    }
    r.f = cli_connect(o, &rc);
    if (!r.f)
        goto out;
    snprintf(r.batch_id, sizeof r.batch_id, "%s-%llx-%d", icefarm_name(r.f),
             (unsigned long long)ifm_wall_ms(), (int)getpid());
    icefarm_on(r.f, "results", on_results, &r);
    icefarm_on(r.f, "initialized", on_ready, &r);
    icefarm_on(r.f, "failure", on_failure, &r);
    icefarm_on(r.f, "reservation end", on_failure, &r);
    int sigs[] = { SIGINT, SIGTERM };
    ifm_loop_signals(icefarm_loop(r.f), sigs, 2, on_signal, &r);
    r.started_ms = ifm_now_ms();
    rc = acquire_boards(&r, &serials, &nserials, &reserved);
    if (rc != CLI_OK)
        goto out;
    r.nboards = nserials;
    r.boards = calloc(nserials ? nserials : 1, sizeof *r.boards);
    for (size_t i = 0; r.boards && i < nserials; i++) {
        snprintf(r.boards[i].serial, IFM_SERIAL_MAX, "%s", serials[i]);
        icefarm_watch(r.f, serials[i]);
    }
    r.progress = !o->json && isatty(STDERR_FILENO);
    if (r.progress)
        fprintf(stderr, "waiting for %zu board(s) to load the %s firmware...\n", r.nboards,
                o->kind ? o->kind : "pulsecount");
    while (!all_done(&r)) {
        /* A board reserved before we subscribed may have said "initialized"
         * already; its retained state says the same. */
        for (size_t i = 0; i < r.nboards; i++)
            if (!r.boards[i].ready && !r.boards[i].dead &&
                icefarm_board_state(r.f, r.boards[i].serial) == IFM_BOARD_RESERVED) {
                r.boards[i].ready = true;
                r.boards[i].last_progress_ms = ifm_now_ms();
            }
        dispatch(&r);
        check_stalls(&r);
        if (!ifm_mqtt_connected(icefarm_mqtt(r.f)) && ifm_loop_stopped(icefarm_loop(r.f)))
            break;
        ifm_loop_once(icefarm_loop(r.f), 200);
    }
    if (r.interrupted)
        fprintf(stderr, "\nicefarm-cli: interrupted; %zu of %zu done\n", r.ndone, r.njobs);
    print_results(&r);
    rc = r.interrupted || r.nfailed ? CLI_FAILED : CLI_OK;
out:
    if (r.f && reserved) {
        ifm_ctl_req req = { .verb = IFM_VERB_END, .serials = serials, .nserials = nserials };
        icefarm_reply rep;
        if (icefarm_call(r.f, &req, NULL, 0, &rep, err, sizeof err) == 0 && rep.st.ok && r.progress)
            fprintf(stderr, "released %zu board(s)\n", nserials);
        icefarm_reply_free(&rep);
    }
    for (size_t i = 0; i < r.njobs; i++) {
        free(r.jobs[i].data);
        free(r.jobs[i].samples);
    }
    free(r.jobs);
    free(r.boards);
    free(serials);
    icefarm_close(r.f);
    return rc;
}
