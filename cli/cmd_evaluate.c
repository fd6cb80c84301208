/* evaluate: stream bitstreams to boards and collect one result per bitstream,
 * with libicefarm's batch engine (icefarm/batch.h: balancing, stall detection,
 * reboot once, move work off failed boards, never lose or duplicate a result).
 * The command adds checking the files (size and iCE40 framing), reserving
 * boards when none are given, and three outputs: rows as results arrive (with
 * a progress bar, ETA and failure count on a terminal), --json (one document:
 * every result with its reason, and a summary) and --ndjson (one line per
 * result as it arrives, then a summary line). Ctrl-C stops it: exit 130 with
 * an honest count of what was and was not evaluated. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "icefarm/batch.h"

typedef struct {
    const char *path; /* as given: a path or a URL */
    uint8_t *data;
    size_t len;
    char sha256[65];
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
    size_t nnever; /* of the failed, those that never reached a board (no working board left) */
    icefarm_batch *batch;
    bool progress, rows, interrupted, releasing;
    uint64_t started_ms, first_result_ms;
} run;

/* ---- the file check ---- */

/* An iCE40 bitstream starts with its preamble: ff 00, an optional comment,
 * 00 ff, then the sync word 7e aa 99 7e (Lattice TN1248, "Bitstream format"). */
static int check_ice40(const uint8_t *d, size_t len, char *why, size_t cap)
{
    if (len < 8 || d[0] != 0xff || d[1] != 0x00) {
        snprintf(why, cap, "does not start with the iCE40 preamble ff 00 (it starts %02x %02x)", len ? d[0] : 0,
                 len > 1 ? d[1] : 0);
        return -1;
    }
    size_t i = 2;
    while (i + 1 < len && i < 4096 && !(d[i] == 0x00 && d[i + 1] == 0xff))
        i++;
    if (i + 1 >= len || i >= 4096) {
        snprintf(why, cap, "the comment after ff 00 never ends with 00 ff (in the first 4096 bytes)");
        return -1;
    }
    i += 2;
    static const uint8_t sync[4] = { 0x7e, 0xaa, 0x99, 0x7e };
    if (i + 4 > len || memcmp(d + i, sync, 4) != 0) {
        snprintf(why, cap, "no sync word 7e aa 99 7e after the preamble (at byte %zu)", i);
        return -1;
    }
    return 0;
}

/* The size and the framing of a file that was read. */
static int check_bitstream(const cli_opts *o, const job *j, char *err, size_t errlen)
{
    if (j->len != IFM_BITSTREAM_SIZE) {
        snprintf(err, errlen, "%s is %zu bytes; an iCE40UP5K bitstream is exactly %u bytes", j->path, j->len,
                 IFM_BITSTREAM_SIZE);
        return -1;
    }
    char why[160];
    if (!o->no_check && check_ice40(j->data, j->len, why, sizeof why)) {
        snprintf(err, errlen, "%s %s: not an iCE40 bitstream? (--no-check sends it anyway)", j->path, why);
        return -1;
    }
    return 0;
}

/* ---- output ---- */

static json_t *result_json(const job *j, size_t index)
{
    json_t *o = json_pack("{s:s, s:I, s:s, s:s}", "file", j->path, "index", (json_int_t)index, "sha256", j->sha256,
                          "serial", j->serial);
    if (!j->done) {
        json_object_set_new(o, "ok", json_false());
        json_object_set_new(o, "error", json_string("not evaluated"));
        return o;
    }
    json_object_set_new(o, "ok", json_boolean(j->result.type != ICEFARM_VALUE_FAILED));
    switch (j->result.type) {
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
        json_object_set_new(o, "error", json_string(j->result.error));
    }
    return o;
}

static json_t *summary_json(const run *r)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:b}", "total", (json_int_t)r->njobs, "done",
                     (json_int_t)r->ndone, "failed", (json_int_t)r->nfailed, "never_reached_a_board",
                     (json_int_t)r->nnever, "not_evaluated", (json_int_t)(r->njobs - r->ndone), "boards",
                     (json_int_t)r->nboards, "seconds", (double)(ifm_now_ms() - r->started_ms) / 1000.0, "interrupted",
                     r->interrupted);
}

static void clear_progress(const run *r)
{
    if (r->progress)
        fputs("\r\033[K", stderr);
}

static void draw_progress(run *r)
{
    if (!r->progress)
        return;
    const int width = 24;
    int filled = r->njobs ? (int)(r->ndone * (size_t)width / r->njobs) : width;
    uint64_t now = ifm_now_ms();
    char eta[48] = "";
    if (r->ndone && r->ndone < r->njobs && now > r->first_result_ms) {
        /* From the rate since the first result: the boards' preparation is not
         * part of the per-bitstream cost. */
        double per = (double)(now - r->first_result_ms) / (double)(r->ndone > 1 ? r->ndone - 1 : 1);
        char d[32];
        snprintf(eta, sizeof eta, "  ETA %s",
                 cli_fmt_duration((uint64_t)(per * (double)(r->njobs - r->ndone)), d, sizeof d));
    }
    fprintf(stderr, "\r\033[Kevaluating [%.*s%*s] %zu/%zu  %zu failed  %zu board(s)  %.1f s%s", filled,
            "########################", width - filled, "", r->ndone, r->njobs, r->nfailed,
            r->batch ? icefarm_batch_boards_alive(r->batch) : r->nboards, (double)(now - r->started_ms) / 1000.0, eta);
    fflush(stderr);
}

static void print_row(const run *r, const job *j)
{
    char value[200];
    if (!j->done)
        snprintf(value, sizeof value, "not evaluated");
    else if (j->result.type == ICEFARM_VALUE_PULSES)
        snprintf(value, sizeof value, "%lld pulses", (long long)j->result.pulses);
    else if (j->result.type == ICEFARM_VALUE_FAILED)
        snprintf(value, sizeof value, "FAILED: %s", j->result.error);
    else
        snprintf(value, sizeof value, "fitness %.4f", j->result.fitness);
    printf("%-40s %-20s %s\n", j->path, j->serial[0] ? j->serial : "-", value);
    fflush(stdout);
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
    if (!r->ndone++)
        r->first_result_ms = ifm_now_ms();
    r->nfailed += res->type == ICEFARM_VALUE_FAILED;
    r->nnever += res->type == ICEFARM_VALUE_FAILED && !serial[0];
    if (r->o->ndjson) {
        json_t *line = result_json(j, index);
        cli_print_json(line);
        json_decref(line);
    } else if (r->rows) {
        clear_progress(r);
        print_row(r, j);
    }
    draw_progress(r);
}

static void on_dropped(icefarm_batch *b, const char *serial, const char *why, void *arg)
{
    run *r = arg;
    clear_progress(r);
    fprintf(stderr, "icefarm-cli: board %s: %s\n", serial, why);
    draw_progress(r);
}

/* Control's word that a board's worker lost its connection, or is back (PROTOCOL.md
 * 9): the batch waits through it by itself; the user hears why nothing moves. */
static void on_worker_news(icefarm *f, const icefarm_event *ev, void *arg)
{
    run *r = arg;
    bool away = !strcmp(icefarm_event_name(ev), "worker reconnecting");
    clear_progress(r);
    fprintf(stderr, "icefarm-cli: board %s: %s\n", icefarm_event_serial(ev),
            away ? "its worker lost its connection; control keeps the lease while it reconnects (results wait)"
                 : "its worker is back; evaluating on");
    if (!r->releasing)
        draw_progress(r);
}

static void on_signal(icefarm *f, int signo, void *arg)
{
    run *r = arg;
    r->interrupted = true;
    if (r->batch)
        icefarm_batch_cancel(r->batch);
    else if (!r->releasing) /* giving the boards back is bounded by --timeout: let it finish */
        icefarm_stop(f);
}

/* ---- boards ---- */

static bool kind_offered(const char *offered, const char *kind)
{
    char list[300], pat[IFM_KIND_MAX + 4];
    snprintf(list, sizeof list, ", %s,", offered);
    snprintf(pat, sizeof pat, " %s,", kind);
    return strstr(list, pat) != NULL;
}

static int acquire_boards(run *r, char (**serials)[IFM_SERIAL_MAX], size_t *n, bool *reserved)
{
    const cli_opts *o = r->o;
    char err[512];
    *reserved = false;
    if (o->nserials) {
        int rc = cli_check_boards(r->f, o, o->serials, (size_t)o->nserials, true);
        if (rc != CLI_OK)
            return rc;
        *serials = calloc((size_t)o->nserials, sizeof **serials);
        for (int i = 0; *serials && i < o->nserials; i++)
            snprintf((*serials)[i], IFM_SERIAL_MAX, "%s", o->serials[i]);
        *n = (size_t)o->nserials;
        return CLI_OK;
    }
    const char *kind = o->kind ? o->kind : "pulsecount";
    size_t total = 0;
    char offered[256];
    int rc = cli_farm_kind(r->f, o, kind, &total, offered, sizeof offered);
    if (rc != CLI_OK)
        return rc;
    if (offered[0] && !kind_offered(offered, kind))
        return cli_error(o, CLI_FAILED, "unknown kind \"%s\"; the farm offers: %s", kind, offered);
    uint32_t want = o->boards ? o->boards : (uint32_t)(r->njobs < 8 ? r->njobs : 8);
    if (o->boards && o->boards > total)
        cli_warn("the farm has only %zu board(s) of kind %s now; %u asked%s", total, kind, o->boards,
                 o->wait_s ? ": waiting in case workers join" : "");
    char args[160];
    /* Results come back as soon as each bitstream is measured: the window keeps
     * the queue short, so a flush threshold of the window means "every result". */
    snprintf(args, sizeof args, "{\"flush_interval_seconds\": 1, \"flush_at_bitstreams_remaining\": %u}", o->window);
    ifm_enc a;
    ifm_enc_init(&a);
    cli_json_to_msgpack(args, &a, err, sizeof err);
    /* Without --boards, fewer than asked will do (at least one). */
    rc = cli_reserve_for_run(r->f, o, want, o->boards ? o->boards : 1, ifm_enc_data(&a), ifm_enc_size(&a), serials, n);
    ifm_enc_free(&a);
    if (rc != CLI_OK)
        return rc;
    *reserved = true;
    return CLI_OK;
}

/* No board of the run became usable within the bound: say what they are doing. */
static bool any_ready(const run *r, char (*serials)[IFM_SERIAL_MAX], size_t n, char *states, size_t cap)
{
    states[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        icefarm_board_state s = icefarm_get_board_state(r->f, serials[i]);
        if (s == ICEFARM_BOARD_RESERVED)
            return true;
        size_t len = strlen(states);
        snprintf(states + len, cap - len, "%s%s %s", len ? ", " : "", serials[i], icefarm_board_state_name(s));
    }
    return false;
}

static void print_end(run *r, bool complete)
{
    const cli_opts *o = r->o;
    clear_progress(r);
    size_t missing = r->njobs - r->ndone;
    if (o->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < r->njobs; i++)
            json_array_append_new(arr, result_json(&r->jobs[i], i));
        int code = r->interrupted ? CLI_INTERRUPTED : (!complete || r->nfailed) ? CLI_FAILED : CLI_OK;
        json_t *doc = json_pack("{s:b, s:i, s:o, s:o}", "ok", code == CLI_OK, "exit", code, "results", arr, "summary",
                                summary_json(r));
        cli_print_json(doc);
        json_decref(doc);
    } else if (o->ndjson) {
        for (size_t i = 0; i < r->njobs; i++)
            if (!r->jobs[i].done) {
                json_t *line = result_json(&r->jobs[i], i);
                cli_print_json(line);
                json_decref(line);
            }
        json_t *line = json_pack("{s:o}", "summary", summary_json(r));
        cli_print_json(line);
        json_decref(line);
    } else {
        for (size_t i = 0; i < r->njobs; i++)
            if (!r->jobs[i].done)
                print_row(r, &r->jobs[i]);
        char never[64] = "";
        if (r->nnever)
            snprintf(never, sizeof never, " (%zu of them never reached a board)", r->nnever);
        printf("%zu of %zu bitstream(s) evaluated on %zu board(s) in %.1f s: %zu ok, %zu failed%s%s", r->ndone,
               r->njobs, r->nboards, (double)(ifm_now_ms() - r->started_ms) / 1000.0, r->ndone - r->nfailed, r->nfailed,
               never, missing ? ", " : "\n");
        if (missing)
            printf("%zu not evaluated%s\n", missing, r->interrupted ? " (interrupted)" : "");
    }
}

int cmd_evaluate(const cli_opts *o)
{
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
    cli_file *files = calloc(r.njobs, sizeof *files);
    if (!r.jobs || !files) {
        free(r.jobs);
        free(files);
        return cli_error(o, CLI_FAILED, "out of memory");
    }
    /* Every file is read (or downloaded) and checked before anything is sent. */
    size_t bad = 0;
    int frc = cli_files_read(o, o->pos, r.njobs, IFM_BITSTREAM_SIZE, files, &bad, err, sizeof err);
    if (frc)
        rc = cli_file_error(o, &files[bad], frc, err, "an iCE40UP5K bitstream is exactly that");
    for (size_t i = 0; i < r.njobs; i++) {
        job *j = &r.jobs[i];
        j->path = o->pos[i];
        j->data = files[i].data;
        j->len = files[i].len;
        snprintf(j->sha256, sizeof j->sha256, "%s", files[i].sha256);
        if (!frc && files[i].remote && !o->json && !o->ndjson)
            fprintf(stderr, "icefarm-cli: fetched %s: %zu bytes, sha256 %s\n", j->path, j->len, j->sha256);
    }
    free(files);
    if (frc)
        goto out;
    for (size_t i = 0; i < r.njobs; i++)
        if (check_bitstream(o, &r.jobs[i], err, sizeof err)) {
            rc = cli_error(o, CLI_USAGE, "%s", err);
            goto out;
        }
    r.f = cli_connect(o, &rc);
    if (!r.f)
        goto out;
    int sigs[] = { SIGINT, SIGTERM };
    int src = icefarm_on_signals(r.f, sigs, 2, on_signal, &r);
    if (src) {
        rc = cli_error(o, CLI_FAILED, "cannot set up signal handling: %s", icefarm_strerror(src));
        goto out;
    }
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
    if (icefarm_on(r.f, "worker reconnecting", on_worker_news, &r) ||
        icefarm_on(r.f, "worker reconnected", on_worker_news, &r)) {
        rc = cli_error(o, CLI_FAILED, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < r.njobs; i++) {
        icefarm_batch_add(r.batch, r.jobs[i].data, r.jobs[i].len, NULL);
        free(r.jobs[i].data);
        r.jobs[i].data = NULL;
    }
    r.rows = !o->json && !o->ndjson;
    r.progress = !o->json && !o->ndjson && isatty(STDERR_FILENO);
    if (r.rows)
        printf("%-40s %-20s %s\n", "FILE", "SERIAL", "RESULT");
    if (r.progress)
        fprintf(stderr, "waiting for %zu board(s) to load the %s firmware...", r.nboards,
                o->kind ? o->kind : "pulsecount");
    /* --timeout bounds the wait for the first board to become usable; after
     * that, --result-timeout bounds each result (the batch's stall detection). */
    uint64_t ready_bound = o->farm.timeout_ms ? o->farm.timeout_ms : 60000, wait_from = ifm_now_ms();
    bool complete = false, ready = false;
    for (;;) {
        int brc = icefarm_batch_run(r.batch, 250);
        if (brc == 0) {
            complete = true;
            break;
        }
        if (brc != -ETIMEDOUT)
            break;
        draw_progress(&r);
        char states[512];
        if (!ready && !r.ndone && !(ready = any_ready(&r, serials, nserials, states, sizeof states)) &&
            ifm_now_ms() - wait_from > ready_bound) {
            clear_progress(&r);
            fprintf(stderr, "icefarm-cli: no board became ready within %llu s (%s)\n",
                    (unsigned long long)(ready_bound / 1000), states);
            break;
        }
    }
    if (r.interrupted) {
        clear_progress(&r);
        fprintf(stderr, "icefarm-cli: interrupted: %zu of %zu evaluated (%zu failed), %zu not evaluated\n", r.ndone,
                r.njobs, r.nfailed, r.njobs - r.ndone);
    }
    print_end(&r, complete);
    rc = r.interrupted ? CLI_INTERRUPTED : (!complete || r.nfailed) ? CLI_FAILED : CLI_OK;
out:
    icefarm_batch_free(r.batch);
    r.batch = NULL;
    r.releasing = true;
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
