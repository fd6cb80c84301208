/* The operation table (README.md has it as a table): each running handle is an
 * `op`, in d->ops until it completes. Exactly one htos_operation_completed per
 * handle: complete() takes the op out of the table first, and every later farm
 * reply, event, fetch or timer finds it gone or marked done.
 *
 * An op is freed when its last reference goes: the table holds one, and each
 * pending farm request holds one (its reply callback drops it). */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhs.h"
#include "icefarm/log.h"

typedef enum {
    OP_RESERVE,
    OP_RELEASE,
    OP_RENEW,
    OP_FLASH,
    OP_PULSE_COUNT,
    OP_VARIANCE,
    OP_LIST,
    OP_BOARD_INFO,
    OP_REBOOT
} op_kind;

typedef struct {
    const char *hw_name;
    op_kind kind;
    int min_args, max_args;
    const char *usage;
} op_def;

static const op_def defs[] = {
    { "farm_reserve", OP_RESERVE, 1, 4, "<board|any> [leaseSeconds] [tag] [kind]" },
    { "farm_release", OP_RELEASE, 2, 2, "<board> <lease>" },
    { "farm_renew", OP_RENEW, 2, 3, "<board> <lease> [leaseSeconds]" },
    { "farm_flash", OP_FLASH, 3, 3, "<board> <lease> <uf2Ref>" },
    { "farm_pulse_count", OP_PULSE_COUNT, 3, 3, "<board> <lease> <bitstreamRef>" },
    { "farm_variance", OP_VARIANCE, 3, 3, "<board> <lease> <bitstreamRef>" },
    { "farm_list", OP_LIST, 0, 1, "[kind]" },
    { "farm_board_info", OP_BOARD_INFO, 1, 1, "<board>" },
    { "farm_reboot", OP_REBOOT, 2, 2, "<board> <lease>" },
};

enum {
    MAX_ARGS = 4,
    ARG_MAX = 512
};

struct op {
    op *next;
    dhs *d;
    int refs;
    bool done;
    uint64_t id;
    const op_def *def;
    char name[XOS_NAME_MAX + 1];
    char handle[XOS_HANDLE_MAX + 1];
    char client[XOS_HANDLE_MAX + 1];
    int argc;
    char argv[MAX_ARGS][ARG_MAX];
    /* progress */
    int stage;
    uint64_t call_id;
    bool call_pending;
    uint64_t fetch_id;
    bool fetch_pending;
    uint64_t timer, poll_timer;
    char serial[ICEFARM_SERIAL_MAX];
    char kind[ICEFARM_KIND_MAX];
    uint64_t lease, until_ms, duration_s;
    char sha[65];
    size_t bytes;
    char batch[64];
    bool granted;        /* reserve: control granted a lease for this handle */
    double t0, fetch_t0; /* when it started, when its fetch did (dhs_metrics_clock) */
    bool sent_to_board;  /* flash/evaluate: the command went out */
};

enum {
    ST_START,
    ST_CHECK,   /* asking control for the lease */
    ST_FETCH,   /* fetching the file */
    ST_BOARD,   /* the command is on the board */
    ST_RESERVE, /* waiting for the grant */
    ST_PREPARE, /* waiting for the board to be reserved */
    ST_CALL,    /* a single request */
    ST_REBOOT   /* reboot sent: waiting for the lease's firmware to be back ('initialized') */
};

static op *op_ref(op *o)
{
    o->refs++;
    return o;
}

static void op_unref(op *o)
{
    if (--o->refs == 0)
        free(o);
}

size_t dhs_ops_count(const dhs *d)
{
    size_t n = 0;
    for (const op *o = d->ops; o; o = o->next)
        n++;
    return n;
}

/* Takes the op out of the table and stops what it waits for. The reserve request
 * of an op is left running: its reply releases what it granted. */
static void retire(op *o)
{
    dhs *d = o->d;
    o->done = true;
    for (op **pp = &d->ops; *pp; pp = &(*pp)->next) {
        if (*pp == o) {
            *pp = o->next;
            break;
        }
    }
    ifm_timer_cancel(d->loop, o->timer);
    ifm_timer_cancel(d->loop, o->poll_timer);
    o->timer = o->poll_timer = 0;
    if (o->fetch_pending) {
        ifm_fetch_cancel(d->fetcher, o->fetch_id);
        o->fetch_pending = false;
    }
    if (o->call_pending && o->def->kind != OP_RESERVE && d->farm)
        icefarm_cancel(d->farm, o->call_id);  /* its callback runs now and drops its reference */
    if (o->granted && o->stage == ST_PREPARE) /* granted, never told to DCSS */
        dhs_farm_release(d, o->serial, "its handle ended before the board was ready");
    op_unref(o);
}

/* Sends the completion: status, then words, then an optional detail group. */
static void complete(op *o, const char *status, const char *detail, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void complete(op *o, const char *status, const char *detail, const char *fmt, ...)
{
    if (o->done)
        return;
    dhs *d = o->d;
    char words[512] = "";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(words, sizeof words, fmt, ap);
        va_end(ap);
    }
    xos_out out;
    xos_out_begin(&out, "htos_operation_completed", dhs_out_limit(d));
    xos_out_word(&out, o->name);
    xos_out_word(&out, o->handle);
    xos_out_word(&out, status);
    char *save = NULL;
    for (char *w = strtok_r(words, " ", &save); w; w = strtok_r(NULL, " ", &save))
        xos_out_word(&out, w);
    if (detail) {
        char safe[DHS_DETAIL_MAX];
        xos_safe_text(safe, sizeof safe, detail);
        xos_out_group(&out, safe);
    }
    IFM_INFO("client=dcss:%s op=%s handle=%s completed %s%s%s", o->client, o->name, o->handle, status,
             detail ? ": " : "", detail ? detail : "");
    if (dhs_send(d, &out)) {
        /* refused (too long for protocol 1, say): the bare status still completes it */
        xos_out_begin(&out, "htos_operation_completed", dhs_out_limit(d));
        xos_out_word(&out, o->name);
        xos_out_word(&out, o->handle);
        xos_out_word(&out, strcmp(status, "normal") == 0 ? "error" : status);
        dhs_send(d, &out);
    }
    dhs_metrics_op_ended(d, o->def->hw_name, status, dhs_metrics_clock() - o->t0);
    retire(o);
}

/* An update of plain words (no groups). */
static void update(op *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void update(op *o, const char *fmt, ...)
{
    if (o->done)
        return;
    char words[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(words, sizeof words, fmt, ap);
    va_end(ap);
    xos_out out;
    xos_out_begin(&out, "htos_operation_update", dhs_out_limit(o->d));
    xos_out_word(&out, o->name);
    xos_out_word(&out, o->handle);
    char *save = NULL;
    for (char *w = strtok_r(words, " ", &save); w; w = strtok_r(NULL, " ", &save))
        xos_out_word(&out, w);
    dhs_send(o->d, &out);
}

/* <serial> <state> <kind|-> {<holder>} {<tag>} <leaseEndsUnix|0> after what `out` holds. */
static void board_words(xos_out *out, const dhs_board *b)
{
    char holder[80], tag[DHS_DETAIL_MAX];
    xos_safe_text(holder, sizeof holder, b->leased ? b->client : "");
    xos_safe_text(tag, sizeof tag, b->leased ? b->tag : "");
    xos_out_word(out, b->serial);
    xos_out_word(out, b->state[0] ? b->state : "unknown");
    xos_out_word(out, b->kind[0] ? b->kind : "-");
    xos_out_group(out, holder);
    xos_out_group(out, tag);
    xos_out_uint(out, b->leased ? b->until_ms / 1000 : 0);
}

/* A failed farm request as a completion. */
static void complete_farm_error(op *o, int status, const icefarm_reply *r, const char *what)
{
    if (status == -ENOTCONN || status == -ESHUTDOWN) {
        complete(o, "farm_offline", NULL, NULL);
    } else if (status == -ETIMEDOUT) {
        complete(o, "timeout", "control did not answer", NULL);
    } else if (status) {
        complete(o, "error", icefarm_strerror(status), NULL);
    } else {
        const char *token = "error";
        switch (icefarm_reply_code(r)) {
        case 400:
            token = "bad_args";
            break;
        case 403:
            token = "bad_lease";
            break;
        case 404:
            token = "no_such_board";
            break;
        case 409:
            token = "busy";
            break;
        }
        char detail[256];
        snprintf(detail, sizeof detail, "%s: %s", what, icefarm_reply_error(r));
        complete(o, token, detail, NULL);
    }
}

/* ---- arguments ---- */

static bool serial_ok(const char *s)
{
    return xos_word_safe(s) && strlen(s) < ICEFARM_SERIAL_MAX;
}

static bool parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!*s || *s == '-' || *s == '+')
        return false;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* ---- farm requests ---- */

static void on_reply(icefarm *f, int status, const icefarm_reply *r, void *arg);

static int call(op *o, const icefarm_req *req, uint64_t timeout_ms)
{
    dhs *d = o->d;
    char why[200] = "";
    if (!dhs_farm_online(d)) {
        complete(o, "farm_offline", NULL, NULL);
        return -1;
    }
    op_ref(o);
    o->call_pending = true;
    int rc = icefarm_call_async(d->farm, req, timeout_ms, on_reply, o, &o->call_id, why, sizeof why);
    if (rc) {
        o->call_pending = false;
        op_unref(o);
        if (rc == -ENOTCONN || rc == -ESHUTDOWN)
            complete(o, "farm_offline", NULL, NULL);
        else
            complete(o, "error", why[0] ? why : icefarm_strerror(rc), NULL);
        return -1;
    }
    dhs_farm_kick(d);
    return 0;
}

static void status_call(op *o)
{
    icefarm_req req = { .verb = "status" };
    o->stage = ST_CHECK;
    call(o, &req, 0);
}

/* ---- reserve ---- */

static void on_prepare_timeout(ifm_loop *loop, void *arg)
{
    op *o = arg;
    o->timer = 0;
    complete(o, "timeout", "the board did not become ready", NULL);
}

static void reserved(op *o)
{
    o->stage = ST_CHECK; /* told: the lease is the caller's now */
    o->granted = false;
    complete(o, "normal", NULL, "%s %" PRIu64 " %" PRIu64, o->serial, o->lease, o->until_ms / 1000);
}

static void on_prepare_poll(ifm_loop *loop, void *arg)
{
    op *o = arg;
    o->poll_timer = 0;
    if (o->d->farm && icefarm_get_board_state(o->d->farm, o->serial) == ICEFARM_BOARD_RESERVED) {
        reserved(o);
        return;
    }
    o->poll_timer = ifm_timer_add(loop, 200, on_prepare_poll, o);
}

static void reserve_reply(op *o, int status, const icefarm_reply *r)
{
    dhs *d = o->d;
    char serial[ICEFARM_SERIAL_MAX] = "";
    uint64_t lease = 0, until = 0;
    bool granted = status == 0 && icefarm_reply_ok(r) && dhs_reply_grant(r, serial, sizeof serial, &lease, &until) == 0;
    if (o->done) {
        if (granted)
            dhs_farm_release(d, serial, "granted for a handle that already ended");
        return;
    }
    if (!granted) {
        if (status == 0 && icefarm_reply_ok(r))
            complete(o, "error", "control granted nothing", NULL);
        else
            complete_farm_error(o, status, r, "reserve");
        return;
    }
    /* Without the board's events the handle would wait for 'ready' until its timeout. */
    int wrc = icefarm_watch(d->farm, serial);
    if (wrc) {
        dhs_farm_release(d, serial, "the DHS cannot follow the board's events");
        char why[128];
        snprintf(why, sizeof why, "cannot follow board %s: %s", serial, icefarm_strerror(wrc));
        complete(o, "error", why, NULL);
        return;
    }
    snprintf(o->serial, sizeof o->serial, "%s", serial);
    o->lease = lease;
    o->until_ms = until;
    o->granted = true;
    o->stage = ST_PREPARE;
    update(o, "preparing %s %" PRIu64, serial, lease);
    o->timer = ifm_timer_add(d->loop, d->cfg.prepare_timeout_ms, on_prepare_timeout, o);
    o->poll_timer = ifm_timer_add(d->loop, 200, on_prepare_poll, o);
}

static void start_reserve(op *o)
{
    dhs *d = o->d;
    const char *board = o->argv[0];
    o->duration_s = 0;
    if (o->argc > 1 && !parse_u64(o->argv[1], 1, 86400, &o->duration_s)) {
        complete(o, "bad_args", "leaseSeconds must be 1..86400", NULL);
        return;
    }
    const char *kind = o->argc > 3 ? o->argv[3] : "pulsecount";
    if (strcmp(kind, "pulsecount") != 0 && strcmp(kind, "variance") != 0) {
        complete(o, "bad_args", "kind must be pulsecount or variance", NULL);
        return;
    }
    snprintf(o->kind, sizeof o->kind, "%s", strcmp(kind, "variance") == 0 ? "variance" : "pulsecount");
    /* the lease's tag (<= 127 bytes): which DCSS client asked, and its own words */
    char tag[ICEFARM_NAME_MAX], user[ICEFARM_NAME_MAX];
    int prefix = snprintf(tag, sizeof tag, "dcss client %s", o->client);
    size_t room = prefix + 3 < 128 ? (size_t)(128 - prefix - 2) : 1;
    xos_safe_text(user, room < sizeof user ? room : sizeof user, o->argc > 2 ? o->argv[2] : "");
    if (user[0])
        snprintf(tag + prefix, sizeof tag - (size_t)prefix, ": %s", user);
    bool any = strcmp(board, "any") == 0;
    if (!any && !serial_ok(board)) {
        complete(o, "bad_args", "board must be a serial or any", NULL);
        return;
    }
    const char *serials[1] = { board };
    icefarm_req req = {
        .verb = any ? "reserve" : "reserve_serials",
        .amount = 1,
        .kind = o->kind,
        .serials = any ? NULL : serials,
        .nserials = any ? 0 : 1,
        .wait_ms = any ? d->cfg.reserve_wait_ms : 0,
        .duration_s = o->duration_s,
        .tag = tag,
    };
    o->stage = ST_RESERVE;
    if (call(o, &req, 0) == 0 && any)
        update(o, "waiting any");
}

/* ---- operations on a held board: the lease is checked with control first ---- */

static void fetched(int status, const uint8_t *data, size_t len, const char *sha, const char *reason, void *arg);

/* Board events for the operation's board (its 'initialized', its results); false
 * (the operation completed with error) when the library cannot follow it. */
static bool follow_board(op *o)
{
    int rc = icefarm_watch(o->d->farm, o->serial);
    if (rc) {
        char why[128];
        snprintf(why, sizeof why, "cannot follow board %s: %s", o->serial, icefarm_strerror(rc));
        complete(o, "error", why, NULL);
        return false;
    }
    return true;
}

static void on_board_timeout(ifm_loop *loop, void *arg)
{
    op *o = arg;
    o->timer = 0;
    complete(o, "timeout", "the board did not answer", NULL);
}

static void after_check(op *o, const dhs_board *b)
{
    dhs *d = o->d;
    if (!b) {
        complete(o, "no_such_board", NULL, NULL);
        return;
    }
    uint64_t token = 0;
    parse_u64(o->argv[1], 0, UINT64_MAX, &token);
    if (!b->leased) {
        complete(o, o->def->kind == OP_RENEW ? "lease_expired" : "not_reserved", NULL, NULL);
        return;
    }
    if (strcmp(b->client, icefarm_name(d->farm)) != 0 || b->lease != token) {
        complete(o, "bad_lease", NULL, NULL);
        return;
    }
    snprintf(o->kind, sizeof o->kind, "%s", b->kind);
    o->lease = b->lease;
    const char *serials[1] = { o->serial };
    switch (o->def->kind) {
    case OP_RELEASE: {
        icefarm_req req = { .verb = "end", .serials = serials, .nserials = 1 };
        o->stage = ST_CALL;
        call(o, &req, 0);
        return;
    }
    case OP_RENEW: {
        icefarm_req req = { .verb = "extend", .serials = serials, .nserials = 1, .duration_s = o->duration_s };
        o->stage = ST_CALL;
        call(o, &req, 0);
        return;
    }
    case OP_REBOOT: {
        /* control's reboot verb, as icefarm-cli reboot sends it (the holder's, checked there
         * too); the board's 'initialized' says the lease's firmware is back */
        if (!follow_board(o))
            return;
        icefarm_req req = { .verb = "reboot", .serials = serials, .nserials = 1 };
        o->stage = ST_CALL;
        call(o, &req, 0);
        return;
    }
    case OP_PULSE_COUNT:
    case OP_VARIANCE: {
        const char *want = o->def->kind == OP_PULSE_COUNT ? "pulsecount" : "variance";
        if (strcmp(b->kind, want) != 0) {
            char why[96];
            snprintf(why, sizeof why, "the lease is for %s", b->kind);
            complete(o, "wrong_kind", why, NULL);
            return;
        }
        break;
    }
    default:
        break;
    }
    /* flash, pulse count, variance: fetch the file */
    char why[200];
    o->stage = ST_FETCH;
    update(o, "progress fetch");
    o->fetch_t0 = dhs_metrics_clock();
    int rc = ifm_fetch(d->fetcher, o->argv[2], fetched, o, &o->fetch_id, why, sizeof why);
    if (rc) {
        complete(o, "bad_ref", why, NULL);
        return;
    }
    o->fetch_pending = true;
}

static void fetched(int status, const uint8_t *data, size_t len, const char *sha, const char *reason, void *arg)
{
    op *o = arg;
    dhs *d = o->d;
    o->fetch_pending = false;
    dhs_metrics_fetched(d, status, len, dhs_metrics_clock() - o->fetch_t0);
    if (o->done)
        return;
    if (status) {
        const char *token = status == -ENOENT ? "not_found"
            : status == -EFBIG                ? "too_large"
            : status == -EACCES               ? "bad_ref"
            : status == -ETIMEDOUT            ? "timeout"
                                              : "fetch_failed";
        complete(o, token, reason, NULL);
        dhs_farm_kick(d);
        return;
    }
    snprintf(o->sha, sizeof o->sha, "%s", sha);
    o->bytes = len;
    if (!dhs_farm_online(d)) {
        complete(o, "farm_offline", NULL, NULL);
        return;
    }
    if (!follow_board(o))
        return;
    int rc;
    if (o->def->kind == OP_FLASH) {
        rc = icefarm_flash(d->farm, o->serial, data, len);
        if (rc == 0)
            update(o, "progress flash %zu", len);
    } else {
        snprintf(o->batch, sizeof o->batch, "dhs-%" PRIu64 "-%" PRIu64, d->link_gen, o->id);
        icefarm_file file = { .id = "0", .data = data, .len = len };
        rc = icefarm_evaluate(d->farm, o->serial, o->batch, &file, 1);
        if (rc == 0)
            update(o, "progress evaluate");
    }
    if (rc) {
        complete(o, rc == -ENOTCONN ? "farm_offline" : "error", icefarm_strerror(rc), NULL);
        dhs_farm_kick(d);
        return;
    }
    o->sent_to_board = true;
    o->stage = ST_BOARD;
    o->timer = ifm_timer_add(d->loop, d->cfg.op_timeout_ms, on_board_timeout, o);
    dhs_farm_kick(d);
}

/* ---- list and info ---- */

static void status_reply(op *o, const icefarm_reply *r)
{
    dhs_farm_status st;
    char why[200];
    if (dhs_farm_status_decode(r, &st, why, sizeof why)) {
        complete(o, "error", why, NULL);
        return;
    }
    const dhs_board *b = NULL;
    switch (o->def->kind) {
    case OP_LIST: {
        size_t n = 0;
        for (size_t i = 0; i < st.n && !o->done; i++) {
            if (o->argc > 0 && strcmp(st.boards[i].kind, o->argv[0]) != 0 && strcmp(o->argv[0], "all") != 0)
                continue;
            xos_out out;
            xos_out_begin(&out, "htos_operation_update", dhs_out_limit(o->d));
            xos_out_word(&out, o->name);
            xos_out_word(&out, o->handle);
            xos_out_word(&out, "board");
            board_words(&out, &st.boards[i]);
            dhs_send(o->d, &out);
            n++;
        }
        complete(o, "normal", NULL, "%zu", n);
        break;
    }
    case OP_BOARD_INFO:
        b = dhs_farm_status_find(&st, o->argv[0]);
        if (!b) {
            complete(o, "no_such_board", NULL, NULL);
        } else {
            xos_out out;
            xos_out_begin(&out, "htos_operation_completed", dhs_out_limit(o->d));
            xos_out_word(&out, o->name);
            xos_out_word(&out, o->handle);
            xos_out_word(&out, "normal");
            board_words(&out, b);
            if (dhs_send(o->d, &out)) {
                complete(o, "error", "the answer does not fit the protocol", NULL);
            } else {
                IFM_INFO("client=dcss:%s op=%s handle=%s completed normal", o->client, o->name, o->handle);
                retire(o);
            }
        }
        break;
    default:
        b = dhs_farm_status_find(&st, o->serial);
        after_check(o, b);
        break;
    }
    dhs_farm_status_free(&st);
}

static void on_reboot_timeout(ifm_loop *loop, void *arg)
{
    op *o = arg;
    o->timer = 0;
    complete(o, "timeout", "the board did not come back with the lease's firmware", NULL);
}

static void on_reply(icefarm *f, int status, const icefarm_reply *r, void *arg)
{
    op *o = arg;
    o->call_pending = false;
    if (o->def->kind == OP_RESERVE && o->stage == ST_RESERVE) {
        reserve_reply(o, status, r);
    } else if (!o->done) {
        if (status || !icefarm_reply_ok(r)) {
            complete_farm_error(o, status, r, o->stage == ST_CHECK ? "status" : o->def->hw_name + 5);
        } else if (o->stage == ST_CHECK) {
            status_reply(o, r);
        } else if (o->def->kind == OP_RELEASE) {
            if (icefarm_reply_nserials(r) == 1)
                complete(o, "normal", NULL, "%s", o->serial);
            else
                complete(o, "not_reserved", NULL, NULL);
        } else if (o->def->kind == OP_RENEW) {
            uint64_t until = 0;
            if (icefarm_reply_nserials(r) == 1 && icefarm_reply_uint(r, "until", &until) == 0)
                complete(o, "normal", NULL, "%s %" PRIu64, o->serial, until / 1000);
            else
                complete(o, "lease_expired", NULL, NULL);
        } else if (o->def->kind == OP_REBOOT) {
            if (icefarm_reply_nserials(r) != 1) {
                complete(o, "not_reserved", NULL, NULL);
            } else {
                o->stage = ST_REBOOT;
                update(o, "rebooting %s", o->serial);
                o->timer = ifm_timer_add(o->d->loop, o->d->cfg.prepare_timeout_ms, on_reboot_timeout, o);
            }
        }
    }
    op_unref(o);
}

/* ---- events from the farm ---- */

/* The worker's reason, in the words of what a DCSS user can do: the worker's
 * "reboot it" is farm_reboot here. Returns `reason` or `buf`. */
static const char *eval_error_detail(const op *o, const char *reason, char *buf, size_t cap)
{
    if (!strstr(reason, "custom firmware"))
        return reason;
    snprintf(buf, cap, "board runs custom firmware (farm_flash): farm_reboot %s %" PRIu64 ", then measure again",
             o->serial, o->lease);
    return buf;
}

void dhs_ops_event(dhs *d, const icefarm_event *ev)
{
    const char *name = icefarm_event_name(ev), *serial = icefarm_event_serial(ev);
    const char *batch = icefarm_event_batch_id(ev);
    for (op *o = d->ops, *next; o; o = next) {
        next = o->next;
        if (!o->serial[0] || strcmp(o->serial, serial) != 0)
            continue;
        if (o->stage == ST_PREPARE) {
            if (strcmp(name, "initialized") == 0)
                reserved(o);
            else if (strcmp(name, "failure") == 0 || strcmp(name, "reservation end") == 0)
                complete(o, "board_failed", icefarm_event_reason(ev), NULL);
        } else if (o->stage == ST_REBOOT) {
            if (strcmp(name, "initialized") == 0)
                complete(o, "normal", NULL, "%s", o->serial);
            else if (strcmp(name, "failure") == 0 || strcmp(name, "reservation end") == 0)
                complete(o, "board_failed", icefarm_event_reason(ev)[0] ? icefarm_event_reason(ev) : name, NULL);
        } else if (o->stage == ST_BOARD && o->def->kind == OP_FLASH) {
            if (strcmp(name, "flashed") == 0)
                complete(o, "normal", NULL, "%s %s %zu", o->serial, o->sha, o->bytes);
            else if (strcmp(name, "error") == 0 || strcmp(name, "failure") == 0)
                complete(o, "flash_failed", icefarm_event_reason(ev), NULL);
        } else if (o->stage == ST_BOARD) {
            if (strcmp(name, "results") == 0 && strcmp(batch, o->batch) == 0) {
                icefarm_result res;
                if (icefarm_event_nresults(ev) < 1 || icefarm_event_result(ev, 0, &res, NULL, 0)) {
                    complete(o, "error", "malformed result", NULL);
                } else if (res.type == ICEFARM_VALUE_FAILED) {
                    complete(o, "eval_failed", res.error, NULL);
                } else if (res.type == ICEFARM_VALUE_PULSES) {
                    complete(o, "normal", NULL, "%s %" PRId64 " %s", o->serial, res.pulses, o->sha);
                } else {
                    complete(o, "normal", NULL, "%s %.9g %s", o->serial, res.fitness, o->sha);
                }
            } else if (strcmp(name, "error") == 0 && (!batch[0] || strcmp(batch, o->batch) == 0)) {
                char detail[DHS_DETAIL_MAX + ICEFARM_SERIAL_MAX + 24];
                complete(o, "eval_failed", eval_error_detail(o, icefarm_event_reason(ev), detail, sizeof detail), NULL);
            } else if (strcmp(name, "failure") == 0 || strcmp(name, "reservation end") == 0) {
                complete(o, "board_failed", icefarm_event_reason(ev)[0] ? icefarm_event_reason(ev) : name, NULL);
            }
        }
    }
}

/* ---- the table ---- */

static const op_def *def_for(const char *hw)
{
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++)
        if (strcmp(defs[i].hw_name, hw) == 0)
            return &defs[i];
    return NULL;
}

void dhs_ops_start(dhs *d, const char *name, const char *handle, int argc, char **argv)
{
    op *o = calloc(1, sizeof *o);
    if (!o) {
        IFM_ERROR("out of memory: op=%s handle=%s not started", name, handle);
        return;
    }
    o->d = d;
    o->refs = 1;
    o->id = ++d->next_op_id;
    snprintf(o->name, sizeof o->name, "%s", name);
    snprintf(o->handle, sizeof o->handle, "%s", handle);
    snprintf(o->client, sizeof o->client, "%.*s", (int)strcspn(handle, "."), handle);
    const dhs_reg *reg = dhs_reg_find(d, name);
    o->def = reg && !reg->string ? def_for(reg->hw_name) : NULL;
    static const op_def unknown = { "unknown", OP_LIST, 0, 0, "" };
    /* the table first: complete() takes it out again */
    o->next = d->ops;
    d->ops = o;
    for (op *p = o->next; p; p = p->next) {
        if (strcmp(p->name, name) == 0 && strcmp(p->handle, handle) == 0) {
            o->def = &unknown;
            IFM_WARN("client=dcss:%s op=%s handle=%s started twice; the second is ignored", o->client, name, handle);
            d->ops = o->next;
            free(o);
            return;
        }
    }
    IFM_INFO("client=dcss:%s op=%s handle=%s started (%d arguments)", o->client, name, handle, argc);
    o->t0 = dhs_metrics_clock();
    dhs_metrics_op_started(d, o->def ? o->def->hw_name : "unknown");
    if (!o->def) {
        o->def = &unknown;
        complete(o, "unknown_operation", reg ? "registered with a hwName this DHS does not serve" : "not registered",
                 NULL);
        return;
    }
    if (argc < o->def->min_args || argc > o->def->max_args) {
        char why[160];
        snprintf(why, sizeof why, "usage: %s %s", name, o->def->usage);
        complete(o, "bad_args", why, NULL);
        return;
    }
    o->argc = argc;
    for (int i = 0; i < argc; i++) {
        if (strlen(argv[i]) >= ARG_MAX) {
            complete(o, "bad_args", "an argument is too long", NULL);
            return;
        }
        snprintf(o->argv[i], ARG_MAX, "%s", argv[i]);
    }
    switch (o->def->kind) {
    case OP_RESERVE:
        start_reserve(o);
        return;
    case OP_LIST:
        status_call(o);
        return;
    case OP_BOARD_INFO:
        if (!serial_ok(o->argv[0])) {
            complete(o, "bad_args", "not a serial", NULL);
            return;
        }
        status_call(o);
        return;
    default:
        break;
    }
    /* release, renew, flash, pulse count, variance: <board> <lease> ... */
    uint64_t token;
    if (!serial_ok(o->argv[0]) || !parse_u64(o->argv[1], 1, UINT64_MAX, &token)) {
        complete(o, "bad_args", "<board> must be a serial and <lease> the number farm_reserve gave", NULL);
        return;
    }
    if (o->def->kind == OP_RENEW && argc > 2 && !parse_u64(o->argv[2], 1, 86400, &o->duration_s)) {
        complete(o, "bad_args", "leaseSeconds must be 1..86400", NULL);
        return;
    }
    snprintf(o->serial, sizeof o->serial, "%.63s", o->argv[0]); /* serial_ok: < 64 */
    status_call(o);
}

void dhs_ops_abort(dhs *d, const char *name)
{
    for (op *o = d->ops, *next; o; o = next) {
        next = o->next;
        if (name && strcmp(o->name, name) != 0)
            continue;
        if (o->sent_to_board && o->def->kind == OP_FLASH)
            dhs_log_dcss(d, "note", "board %s: the flash in flight for %s finishes on the board", o->serial, o->handle);
        complete(o, "aborted", NULL, NULL);
        next = d->ops; /* completion may have changed the list */
    }
}

void dhs_ops_forget(dhs *d)
{
    size_t n = 0;
    while (d->ops) {
        op *o = d->ops;
        IFM_INFO("client=dcss:%s op=%s handle=%s forgotten: its DCSS session ended", o->client, o->name, o->handle);
        dhs_metrics_op_ended(d, o->def->hw_name, "forgotten", dhs_metrics_clock() - o->t0);
        retire(o);
        n++;
    }
    if (n)
        IFM_WARN("client=dcss %zu operations forgotten with their DCSS session", n);
}

void dhs_ops_free(dhs *d)
{
    dhs_ops_forget(d);
}
