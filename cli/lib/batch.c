/* libicefarm batch evaluation engine (see icefarm/batch.h for the contract). */
#include "icefarm/batch.h"
#include "icefarm/grow.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef enum {
    JOB_PENDING,
    JOB_INFLIGHT,
    JOB_DONE
} job_state;

typedef struct {
    uint8_t *data;
    size_t len;
    job_state state;
    char serial[IFM_SERIAL_MAX];    /* where it is in flight, or was measured */
    char failed_on[IFM_SERIAL_MAX]; /* the board that already failed it once */
} job;

typedef struct {
    char serial[IFM_SERIAL_MAX];
    bool ready, dead;
    bool away; /* its worker is reconnecting (PROTOCOL.md 14.1): no stall counts */
    uint32_t inflight;
    uint64_t last_progress_ms;
    int reboots;
} board;

struct icefarm_batch {
    icefarm *f;
    icefarm_batch_opts o;
    icefarm_result_cb on_result;
    icefarm_board_cb on_dropped;
    void *arg;
    job *jobs;
    size_t njobs, capjobs, ndone, nfailed;
    board *boards;
    size_t nboards;
    char batch_id[IFM_ID_MAX];
    bool cancelled;
    uint64_t tick; /* the 100 ms timer: stall checks and top-ups */
    /* After a reconnect of our own: nothing is sent until `leases` says every
     * board's worker is online; then what is in flight goes again (resend). */
    unsigned connects_seen;
    bool resync, asking;
    uint64_t resync_next, leases_call;
};

static board *find_board(icefarm_batch *b, const char *serial)
{
    for (size_t i = 0; i < b->nboards; i++)
        if (strcmp(b->boards[i].serial, serial) == 0)
            return &b->boards[i];
    return NULL;
}

static job *find_job(icefarm_batch *b, const char *id)
{
    char *end;
    unsigned long i = strtoul(id, &end, 10);
    return *id && !*end && i < b->njobs ? &b->jobs[i] : NULL;
}

static void finish(icefarm_batch *b, job *j, const icefarm_result *r, const char *serial)
{
    j->state = JOB_DONE;
    snprintf(j->serial, sizeof j->serial, "%s", serial);
    free(j->data); /* measured: the bytes are not needed any more */
    j->data = NULL;
    b->ndone++;
    b->nfailed += r->type == ICEFARM_VALUE_FAILED;
    if (b->on_result)
        b->on_result(b, (size_t)(j - b->jobs), serial, r, b->arg);
}

static void fail(icefarm_batch *b, job *j, const char *why)
{
    icefarm_result r;
    memset(&r, 0, sizeof r);
    snprintf(r.id, sizeof r.id, "%zu", (size_t)(j - b->jobs));
    r.type = ICEFARM_VALUE_FAILED;
    snprintf(r.error, sizeof r.error, "%s", why);
    finish(b, j, &r, j->serial);
}

/* Tops every ready board up to the window: one message per board per round,
 * spreading pending work one bitstream at a time so boards share it evenly. */
size_t icefarm_batch_boards_alive(const icefarm_batch *b);

static void dispatch(icefarm_batch *b)
{
    if (b->resync)
        return;
    size_t next = 0;
    bool others = icefarm_batch_boards_alive(b) > 1; /* else even a board that failed a job retries it */
    for (bool progress = true; progress;) {
        progress = false;
        for (size_t k = 0; k < b->nboards; k++) {
            board *bd = &b->boards[k];
            if (!bd->ready || bd->dead || bd->inflight >= b->o.window)
                continue;
            size_t pick = next;
            while (pick < b->njobs &&
                   (b->jobs[pick].state != JOB_PENDING || (others && strcmp(b->jobs[pick].failed_on, bd->serial) == 0)))
                pick++;
            while (next < b->njobs && b->jobs[next].state != JOB_PENDING)
                next++;
            if (pick >= b->njobs)
                continue;
            job *j = &b->jobs[pick];
            char id[24];
            snprintf(id, sizeof id, "%zu", pick);
            icefarm_file file = { id, j->data, j->len };
            if (icefarm_evaluate(b->f, bd->serial, b->batch_id, &file, 1))
                return; /* not connected: the next round retries */
            j->state = JOB_INFLIGHT;
            snprintf(j->serial, sizeof j->serial, "%s", bd->serial);
            if (!bd->inflight)
                bd->last_progress_ms = ifm_now_ms();
            bd->inflight++;
            progress = true;
        }
    }
}

static void send_verb(icefarm_batch *b, const char *verb, const char *serial)
{
    const char *one[1] = { serial };
    icefarm_req req = { .verb = verb, .serials = one, .nserials = 1 };
    char why[160];
    /* No waiting inside the loop: a refusal is logged by the library. */
    if (icefarm_call_async(b->f, &req, 0, NULL, NULL, NULL, why, sizeof why))
        lib_log(b->f, ICEFARM_LOG_WARN, "serial=%s cannot send %s: %s", serial, verb, why);
}

/* A board is out: its in-flight bitstreams go back to the queue. */
static void drop_board(icefarm_batch *b, board *bd, const char *why)
{
    if (bd->dead)
        return;
    bd->dead = true;
    bd->inflight = 0;
    for (size_t i = 0; i < b->njobs; i++) {
        job *j = &b->jobs[i];
        if (j->state == JOB_INFLIGHT && strcmp(j->serial, bd->serial) == 0) {
            j->state = JOB_PENDING;
            j->serial[0] = '\0';
        }
    }
    if (b->on_dropped)
        b->on_dropped(b, bd->serial, why, b->arg);
    if (!b->o.keep_failed_boards)
        send_verb(b, "end", bd->serial); /* give it back to be repaired */
    if (!icefarm_batch_boards_alive(b))
        for (size_t i = 0; i < b->njobs; i++)
            if (b->jobs[i].state == JOB_PENDING)
                fail(b, &b->jobs[i], "no working board left");
}

static void on_results(icefarm *f, const icefarm_event *ev, void *arg)
{
    icefarm_batch *b = arg;
    const char *serial = icefarm_event_serial(ev);
    board *bd = find_board(b, serial);
    if (!bd || strcmp(icefarm_event_batch_id(ev), b->batch_id) != 0)
        return;
    size_t n = icefarm_event_nresults(ev);
    uint16_t samples[4096];
    for (size_t i = 0; i < n; i++) {
        icefarm_result r;
        if (icefarm_event_result(ev, i, &r, samples, 4096))
            continue;
        job *j = find_job(b, r.id);
        /* Only the board it is assigned to may answer for it: no duplicates. */
        if (!j || j->state != JOB_INFLIGHT || strcmp(j->serial, serial) != 0)
            continue;
        if (bd->inflight)
            bd->inflight--;
        if (r.type == ICEFARM_VALUE_FAILED && !j->failed_on[0] && icefarm_batch_boards_alive(b) > 1) {
            /* The worker already retried it on that board: one more try on
             * another board before reporting the failure. */
            snprintf(j->failed_on, sizeof j->failed_on, "%s", serial);
            j->state = JOB_PENDING;
            j->serial[0] = '\0';
            continue;
        }
        finish(b, j, &r, serial);
    }
    bd->last_progress_ms = ifm_now_ms();
    dispatch(b);
}

static void on_ready(icefarm *f, const icefarm_event *ev, void *arg)
{
    icefarm_batch *b = arg;
    board *bd = find_board(b, icefarm_event_serial(ev));
    if (bd && !bd->dead) {
        bd->ready = true;
        bd->last_progress_ms = ifm_now_ms();
        dispatch(b);
    }
}

static void on_failure(icefarm *f, const icefarm_event *ev, void *arg)
{
    icefarm_batch *b = arg;
    board *bd = find_board(b, icefarm_event_serial(ev));
    if (bd && b->ndone < b->njobs) {
        const char *reason = icefarm_event_reason(ev);
        bool ended = !strcmp(icefarm_event_name(ev), "reservation end");
        char why[200];
        if (reason[0] && ended) /* control's words for a lease it ended (PROTOCOL.md 9) */
            snprintf(why, sizeof why, "the lease ended: %s", reason);
        else if (reason[0]) /* the worker's words, or control's while the worker was away */
            snprintf(why, sizeof why, "%s%s", reason, bd->away ? ": the lease ended" : "");
        else /* a control that gives no reason: say what the event means */
            snprintf(why, sizeof why, "%s",
                     strcmp(icefarm_event_name(ev), "failure") ? "the lease ended"
                         : bd->away ? "its worker did not come back within control's grace: the lease ended"
                                    : "the lease ended: its worker restarted or the board went away");
        drop_board(b, bd, why);
        dispatch(b);
    }
}

/* A refused command drops the board, unless it names another run's batch. */
static void on_refused(icefarm *f, const icefarm_event *ev, void *arg)
{
    icefarm_batch *b = arg;
    const char *batch_id = icefarm_event_batch_id(ev);
    if (batch_id[0] && strcmp(batch_id, b->batch_id) != 0)
        return;
    on_failure(f, ev, arg);
}

/* Everything in flight on a board, again with `resend`: the worker answers what
 * it measured from its cache, skips what it still has queued and evaluates the
 * rest; a second result for a job is ignored (on_results). */
static void resend_board(icefarm_batch *b, board *bd)
{
    for (size_t i = 0; i < b->njobs; i++) {
        job *j = &b->jobs[i];
        if (j->state != JOB_INFLIGHT || strcmp(j->serial, bd->serial) != 0)
            continue;
        char id[24];
        snprintf(id, sizeof id, "%zu", i);
        icefarm_file file = { id, j->data, j->len };
        lib_evaluate(b->f, bd->serial, b->batch_id, &file, 1, true);
    }
    bd->last_progress_ms = ifm_now_ms();
}

static void on_worker_away(icefarm *f, const icefarm_event *ev, void *arg)
{
    icefarm_batch *b = arg;
    board *bd = find_board(b, icefarm_event_serial(ev));
    if (bd)
        bd->away = true;
}

static void on_worker_back(icefarm *f, const icefarm_event *ev, void *arg)
{
    icefarm_batch *b = arg;
    board *bd = find_board(b, icefarm_event_serial(ev));
    if (!bd || bd->dead)
        return;
    bd->away = false;
    if (!b->resync)
        resend_board(b, bd);
}

/* The `leases` reply after our reconnect: boards whose lease is gone are
 * dropped; once every other board's worker is online, the resend. */
static void on_leases(icefarm *f, int status, const icefarm_reply *r, void *arg)
{
    icefarm_batch *b = arg;
    b->asking = false;
    if (status != 0 || !r || !r->st.ok || b->cancelled)
        return;
    const msgpack_object *leases = ifm_map_get(r->doc.root, "leases");
    if (!leases || leases->type != MSGPACK_OBJECT_ARRAY)
        return;
    bool all_online = true;
    for (size_t k = 0; k < b->nboards; k++) {
        board *bd = &b->boards[k];
        if (bd->dead)
            continue;
        bool listed = false;
        for (uint32_t i = 0; i < leases->via.array.size && !listed; i++) {
            char serial[IFM_SERIAL_MAX], ws[16] = "";
            const msgpack_object *l = &leases->via.array.ptr[i];
            if (ifm_get_str(l, "serial", true, serial, sizeof serial, NULL) || strcmp(serial, bd->serial) != 0)
                continue;
            listed = true;
            ifm_get_str(l, "worker_state", false, ws, sizeof ws, NULL);
            bd->away = strcmp(ws, "online") != 0 && strcmp(ws, "hung") != 0;
            all_online = all_online && !bd->away;
        }
        if (!listed)
            drop_board(b, bd, "the lease ended while we were disconnected");
    }
    if (!all_online)
        return; /* asked again on the next tick */
    b->resync = false;
    lib_log(f, ICEFARM_LOG_INFO, "reconnected: every board's worker is online; resending what is in flight");
    for (size_t k = 0; k < b->nboards; k++)
        if (!b->boards[k].dead)
            resend_board(b, &b->boards[k]);
}

static void resync(icefarm_batch *b)
{
    if (b->connects_seen != b->f->connects) {
        if (b->connects_seen)
            b->resync = true;
        b->connects_seen = b->f->connects;
    }
    uint64_t now = ifm_now_ms();
    if (!b->resync || b->asking || now < b->resync_next || !icefarm_connected(b->f))
        return;
    b->resync_next = now + 500;
    icefarm_req req = { .verb = "leases" };
    char why[160];
    if (icefarm_call_async(b->f, &req, 2000, on_leases, b, &b->leases_call, why, sizeof why) == 0)
        b->asking = true;
}

static void check_stalls(icefarm_batch *b)
{
    uint64_t now = ifm_now_ms();
    for (size_t i = 0; i < b->nboards; i++) {
        board *bd = &b->boards[i];
        /* A board reserved before we subscribed may have said "initialized"
         * already; its retained state says the same. */
        if (!bd->ready && !bd->dead && icefarm_get_board_state(b->f, bd->serial) == ICEFARM_BOARD_RESERVED) {
            bd->ready = true;
            bd->last_progress_ms = now;
        }
        if (bd->away || b->resync)
            bd->last_progress_ms = now; /* nobody can answer meanwhile */
        if (bd->dead || !bd->inflight || now - bd->last_progress_ms < b->o.result_timeout_ms)
            continue;
        if (bd->reboots == 0 && !b->o.no_reboot) {
            bd->reboots++;
            bd->last_progress_ms = now;
            if (b->on_dropped)
                b->on_dropped(b, bd->serial, "stalled; rebooting it once", b->arg);
            send_verb(b, "reboot", bd->serial);
        } else {
            drop_board(b, bd, bd->reboots ? "stalled again after a reboot" : "stalled");
        }
    }
}

static void on_tick(ifm_loop *loop, void *arg)
{
    icefarm_batch *b = arg;
    b->tick = ifm_timer_add(loop, 100, on_tick, b);
    if (b->cancelled)
        return;
    b->f->in_cb++; /* the batch's callbacks run from here */
    resync(b);
    check_stalls(b);
    dispatch(b);
    b->f->in_cb--;
}

icefarm_batch *icefarm_batch_new(icefarm *f, char (*serials)[ICEFARM_SERIAL_MAX], size_t nserials,
                                 const icefarm_batch_opts *opts, icefarm_result_cb on_result, void *arg)
{
    icefarm_batch *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->f = f;
    if (opts)
        b->o = *opts;
    if (!b->o.window)
        b->o.window = 2;
    if (!b->o.result_timeout_ms)
        b->o.result_timeout_ms = 60000;
    b->on_result = on_result;
    b->arg = arg;
    b->boards = calloc(nserials ? nserials : 1, sizeof *b->boards);
    if (!b->boards) {
        free(b);
        return NULL;
    }
    b->nboards = nserials;
    bool ok = true; /* a board or a handler missing would stall the batch, not fail it */
    for (size_t i = 0; i < nserials; i++) {
        snprintf(b->boards[i].serial, IFM_SERIAL_MAX, "%s", serials[i]);
        ok = ok && icefarm_watch(f, serials[i]) == 0;
    }
    /* Unique per run, so results of an earlier run on the same boards are ignored. */
    static const char hex[] = "0123456789abcdef";
    uint64_t t = ifm_wall_ms() ^ ((uint64_t)(uintptr_t)b << 16);
    char tag[17];
    for (int i = 0; i < 16; i++)
        tag[i] = hex[(t >> (i * 4)) & 15];
    tag[16] = '\0';
    snprintf(b->batch_id, sizeof b->batch_id, "%.64s-%s", icefarm_name(f), tag);
    ok = ok && !icefarm_on(f, "results", on_results, b) && !icefarm_on(f, "initialized", on_ready, b) &&
        !icefarm_on(f, "failure", on_failure, b) && !icefarm_on(f, "reservation end", on_failure, b) &&
        !icefarm_on(f, "error", on_refused, b) /* the board refused our command */
        && !icefarm_on(f, "worker reconnecting", on_worker_away, b) &&
        !icefarm_on(f, "worker reconnected", on_worker_back, b);
    if (!ok) {
        icefarm_batch_free(b); /* takes off the handlers that were set */
        return NULL;
    }
    b->connects_seen = f->connects;
    b->tick = ifm_timer_add(f->loop, 100, on_tick, b);
    return b;
}

void icefarm_batch_on_board_dropped(icefarm_batch *b, icefarm_board_cb cb)
{
    b->on_dropped = cb;
}

int icefarm_batch_add(icefarm_batch *b, const uint8_t *data, size_t len, size_t *index)
{
    job *nj = ifm_grow(b->jobs, &b->capjobs, b->njobs, sizeof *nj, 64);
    if (!nj)
        return -1;
    b->jobs = nj;
    job *j = &b->jobs[b->njobs];
    memset(j, 0, sizeof *j);
    j->data = malloc(len ? len : 1);
    if (!j->data)
        return -1;
    memcpy(j->data, data, len);
    j->len = len;
    if (index)
        *index = b->njobs;
    b->njobs++;
    return 0;
}

static bool batch_over(void *arg)
{
    icefarm_batch *b = arg;
    return b->ndone == b->njobs || b->cancelled;
}

int icefarm_batch_run(icefarm_batch *b, uint64_t timeout_ms)
{
    if (b->f->in_cb)
        return -EDEADLK;
    if (!icefarm_batch_boards_alive(b))
        for (size_t i = 0; i < b->njobs; i++)
            if (b->jobs[i].state == JOB_PENDING)
                fail(b, &b->jobs[i], "no boards to evaluate on");
    b->f->in_cb++;
    check_stalls(b);
    dispatch(b);
    b->f->in_cb--;
    int rc = icefarm_run_until(b->f, batch_over, b, timeout_ms);
    if (rc)
        return rc;
    return b->ndone == b->njobs ? 0 : -ECANCELED;
}

void icefarm_batch_cancel(icefarm_batch *b)
{
    b->cancelled = true;
}
size_t icefarm_batch_count(const icefarm_batch *b)
{
    return b->njobs;
}
size_t icefarm_batch_done(const icefarm_batch *b)
{
    return b->ndone;
}
size_t icefarm_batch_failed(const icefarm_batch *b)
{
    return b->nfailed;
}

size_t icefarm_batch_boards_alive(const icefarm_batch *b)
{
    size_t n = 0;
    for (size_t i = 0; i < b->nboards; i++)
        n += !b->boards[i].dead;
    return n;
}

void icefarm_batch_free(icefarm_batch *b)
{
    if (!b)
        return;
    icefarm_off(b->f, on_results, b);
    icefarm_off(b->f, on_ready, b);
    icefarm_off(b->f, on_failure, b);
    icefarm_off(b->f, on_refused, b);
    icefarm_off(b->f, on_worker_away, b);
    icefarm_off(b->f, on_worker_back, b);
    if (b->asking)
        icefarm_cancel(b->f, b->leases_call); /* its callback runs now, not after the free */
    ifm_timer_cancel(b->f->loop, b->tick);
    for (size_t i = 0; i < b->njobs; i++)
        free(b->jobs[i].data);
    free(b->jobs);
    free(b->boards);
    free(b);
}
