/* The farm side of icefarm-dhs: the libicefarm handle embedded in our loop, a
 * connect that never blocks the loop (a helper thread runs icefarm_connect and
 * hands the handle over through an eventfd), farm events, control's status reply,
 * and the status string kept current from it. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "dhs.h"
#include "icefarm/codec.h"
#include "icefarm/log.h"

#define STATUS_EVERY_MS 5000
#define CONNECT_TIMEOUT_MS 5000

/* ---- control's replies ---- */

int dhs_farm_status_decode(const icefarm_reply *r, dhs_farm_status *st, char *why, size_t whylen)
{
    memset(st, 0, sizeof *st);
    size_t len;
    const void *data = icefarm_reply_data(r, &len);
    ifm_doc doc;
    ifm_err err = { "" };
    const msgpack_object *boards = NULL, *leases = NULL;
    int rc = -1;
    if (ifm_doc_parse(&doc, data, len, &err) || ifm_get_array(doc.root, "boards", false, 65536, &boards, &err) < 0 ||
        ifm_get_array(doc.root, "leases", false, 65536, &leases, &err) < 0)
        goto out;
    size_t nb = boards ? boards->via.array.size : 0;
    st->boards = calloc(nb ? nb : 1, sizeof *st->boards);
    if (!st->boards) {
        snprintf(err.msg, sizeof err.msg, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < nb; i++) {
        const msgpack_object *m = &boards->via.array.ptr[i];
        dhs_board *b = &st->boards[st->n];
        if (m->type != MSGPACK_OBJECT_MAP || ifm_get_str(m, "serial", true, b->serial, sizeof b->serial, &err) < 0 ||
            ifm_get_str(m, "worker", false, b->worker, sizeof b->worker, &err) < 0 ||
            ifm_get_str(m, "state", false, b->state, sizeof b->state, &err) < 0 ||
            ifm_get_str(m, "kind", false, b->kind, sizeof b->kind, &err) < 0 ||
            ifm_get_bool(m, "available", false, &b->available, &err) < 0)
            goto out;
        st->n++;
    }
    for (size_t i = 0; leases && i < leases->via.array.size; i++) {
        const msgpack_object *m = &leases->via.array.ptr[i];
        char serial[ICEFARM_SERIAL_MAX];
        if (m->type != MSGPACK_OBJECT_MAP || ifm_get_str(m, "serial", true, serial, sizeof serial, &err) < 0)
            goto out;
        dhs_board *b = (dhs_board *)dhs_farm_status_find(st, serial);
        if (!b)
            continue;
        if (ifm_get_str(m, "client", true, b->client, sizeof b->client, &err) < 0 ||
            ifm_get_str(m, "kind", false, b->kind, sizeof b->kind, &err) < 0 ||
            ifm_get_str(m, "tag", false, b->tag, sizeof b->tag, &err) < 0 ||
            ifm_get_uint(m, "lease", true, 0, UINT64_MAX, &b->lease, &err) < 0 ||
            ifm_get_uint(m, "until", true, 0, UINT64_MAX, &b->until_ms, &err) < 0)
            goto out;
        b->leased = true;
        st->nleases++;
    }
    rc = 0;
out:
    if (rc) {
        snprintf(why, whylen, "control's status reply: %s", err.msg);
        dhs_farm_status_free(st);
    }
    ifm_doc_free(&doc);
    return rc;
}

void dhs_farm_status_free(dhs_farm_status *st)
{
    free(st->boards);
    st->boards = NULL;
    st->n = 0;
}

const dhs_board *dhs_farm_status_find(const dhs_farm_status *st, const char *serial)
{
    for (size_t i = 0; i < st->n; i++)
        if (strcmp(st->boards[i].serial, serial) == 0)
            return &st->boards[i];
    return NULL;
}

int dhs_reply_grant(const icefarm_reply *r, char *serial, size_t cap, uint64_t *lease, uint64_t *until_ms)
{
    size_t len;
    const void *data = icefarm_reply_data(r, &len);
    ifm_doc doc;
    ifm_err err = { "" };
    const msgpack_object *arr = NULL;
    int rc = -1;
    if (!ifm_doc_parse(&doc, data, len, &err) && ifm_get_array(doc.root, "serials", true, 4096, &arr, &err) == 0 &&
        arr->via.array.size >= 1) {
        const msgpack_object *m = &arr->via.array.ptr[0];
        if (m->type == MSGPACK_OBJECT_MAP && ifm_get_str(m, "serial", true, serial, cap, &err) == 0 &&
            ifm_get_uint(m, "lease", true, 0, UINT64_MAX, lease, &err) == 0 &&
            ifm_get_uint(m, "until", true, 0, UINT64_MAX, until_ms, &err) == 0)
            rc = 0;
    }
    if (rc)
        IFM_WARN("reserve reply without a usable grant: %s", err.msg);
    ifm_doc_free(&doc);
    return rc;
}

/* ---- the status string ---- */

static void on_status(icefarm *f, int status, const icefarm_reply *r, void *arg)
{
    dhs *d = arg;
    d->status_pending = false;
    if (status || !icefarm_reply_ok(r))
        return;
    dhs_farm_status st;
    char why[200];
    if (dhs_farm_status_decode(r, &st, why, sizeof why)) {
        IFM_WARN("%s", why);
        return;
    }
    size_t available = 0, mine = 0;
    for (size_t i = 0; i < st.n; i++) {
        available += st.boards[i].available;
        mine += st.boards[i].leased && strcmp(st.boards[i].client, icefarm_name(d->farm)) == 0;
    }
    char text[sizeof d->status_text];
    snprintf(text, sizeof text, "{farm online} {boards %zu} {available %zu} {leases %zu} {dhs_leases %zu}", st.n,
             available, st.nleases, mine);
    dhs_farm_status_free(&st);
    if (strcmp(text, d->status_text) != 0) {
        snprintf(d->status_text, sizeof d->status_text, "%s", text);
        dhs_push_status(d, false);
    }
}

static void refresh_status(dhs *d)
{
    if (!dhs_farm_online(d) || d->status_pending)
        return;
    icefarm_req req = { .verb = "status" };
    if (icefarm_call_async(d->farm, &req, 0, on_status, d, NULL, NULL, 0) == 0)
        d->status_pending = true;
}

static void on_status_timer(ifm_loop *loop, void *arg)
{
    dhs *d = arg;
    refresh_status(d);
    d->status_timer = ifm_timer_add(loop, STATUS_EVERY_MS, on_status_timer, d);
    dhs_farm_kick(d);
}

static void set_offline_status(dhs *d)
{
    snprintf(d->status_text, sizeof d->status_text, "{farm offline}");
    dhs_push_status(d, false);
}

/* ---- events ---- */

static void on_event(icefarm *f, const icefarm_event *ev, void *arg)
{
    dhs *d = arg;
    const char *name = icefarm_event_name(ev), *serial = icefarm_event_serial(ev), *reason = icefarm_event_reason(ev);
    if (strcmp(name, "failure") == 0)
        dhs_log_dcss(d, "warning", "board %s failed: %s", serial, reason[0] ? reason : "no reason given");
    else if (strcmp(name, "reservation end") == 0)
        dhs_log_dcss(d, "note", "the lease of board %s ended", serial);
    else if (strcmp(name, "reservation ending soon") == 0)
        dhs_log_dcss(d, "note", "the lease of board %s ends soon (farm_renew extends it)", serial);
    dhs_ops_event(d, ev);
    if (strcmp(name, "reservation end") == 0 || strcmp(name, "initialized") == 0)
        refresh_status(d);
}

/* ---- the handle on our loop ---- */

bool dhs_farm_online(const dhs *d)
{
    return d->farm && icefarm_connected(d->farm);
}

static void on_farm_timer(ifm_loop *loop, void *arg);

void dhs_farm_kick(dhs *d)
{
    if (!d->farm)
        return;
    bool up = icefarm_connected(d->farm);
    if (up != d->farm_up) {
        d->farm_up = up;
        if (up) {
            dhs_metrics_farm_up(d);
            dhs_log_dcss(d, "note", "the farm is online (broker %s)", d->cfg.broker);
            refresh_status(d);
        } else {
            dhs_log_dcss(d, "warning", "the farm is offline: operations complete with farm_offline until it returns");
            set_offline_status(d);
        }
    }
    ifm_timer_cancel(d->loop, d->farm_timer);
    int t = icefarm_timeout(d->farm);
    if (t < 0 || t > 250)
        t = 250;
    d->farm_timer = ifm_timer_add(d->loop, (uint64_t)t, on_farm_timer, d);
}

static void on_farm_timer(ifm_loop *loop, void *arg)
{
    dhs *d = arg;
    d->farm_timer = 0;
    icefarm_run_once(d->farm, 0);
    dhs_farm_kick(d);
}

static void on_farm_fd(ifm_loop *loop, int fd, int events, void *arg)
{
    dhs *d = arg;
    icefarm_run_once(d->farm, 0);
    dhs_farm_kick(d);
}

void dhs_farm_release(dhs *d, const char *serial, const char *why)
{
    if (!dhs_farm_online(d)) {
        IFM_WARN("serial=%s not released (%s): the farm is offline; the lease expires by itself", serial, why);
        return;
    }
    const char *serials[1] = { serial };
    icefarm_req req = { .verb = "end", .serials = serials, .nserials = 1 };
    IFM_INFO("serial=%s releasing: %s", serial, why);
    int rc = icefarm_call_async(d->farm, &req, 0, NULL, NULL, NULL, NULL, 0);
    if (rc)
        IFM_WARN("serial=%s not released (%s): %s; the lease expires by itself", serial, why, icefarm_strerror(rc));
    dhs_farm_kick(d);
}

/* ---- connecting without blocking the loop ---- */

static void *connect_main(void *arg)
{
    dhs *d = arg;
    char name[ICEFARM_NAME_MAX];
    snprintf(name, sizeof name, "dhs-%s", d->cfg.name);
    icefarm_opts o = {
        .broker = d->cfg.broker,
        /* explicit: the library would otherwise take $ICEFARM_NAME, the CLI user's name */
        .name = d->cfg.user ? d->cfg.user : name,
        .user = d->cfg.user,
        .password = d->cfg.password,
        .cafile = d->cfg.cafile,
        .timeout_ms = CONNECT_TIMEOUT_MS,
        .no_auto_extend = true, /* a lease lasts what farm_reserve asked; farm_renew extends it */
    };
    d->connect_rc = icefarm_connect(&o, &d->connect_result, d->connect_reason, sizeof d->connect_reason);
    uint64_t one = 1;
    ssize_t n = write(d->connect_efd, &one, sizeof one);
    (void)n;
    return NULL;
}

static void start_connect(dhs *d);

static void on_retry(ifm_loop *loop, void *arg)
{
    dhs *d = arg;
    d->farm_retry_timer = 0;
    start_connect(d);
}

static void on_connected(ifm_loop *loop, int fd, int events, void *arg)
{
    dhs *d = arg;
    uint64_t v;
    if (read(fd, &v, sizeof v) != sizeof v)
        return;
    pthread_join(d->connect_thread, NULL);
    d->connecting = false;
    if (d->connect_rc) {
        uint64_t delay = ifm_backoff_next(&d->farm_backoff);
        IFM_WARN("cannot reach the farm: %s; retrying in %llu ms", d->connect_reason, (unsigned long long)delay);
        d->farm_retry_timer = ifm_timer_add(loop, delay, on_retry, d);
        return;
    }
    ifm_backoff_reset(&d->farm_backoff);
    d->farm = d->connect_result;
    d->connect_result = NULL;
    int ffd = icefarm_fd(d->farm);
    if (ffd < 0 || icefarm_on(d->farm, NULL, on_event, d) || ifm_loop_watch(loop, ffd, IFM_READ, on_farm_fd, d)) {
        IFM_ERROR("cannot embed the farm handle in the loop");
        icefarm_close(d->farm);
        d->farm = NULL;
        d->farm_retry_timer = ifm_timer_add(loop, ifm_backoff_next(&d->farm_backoff), on_retry, d);
        return;
    }
    IFM_INFO("connected to the farm at %s as %s", d->cfg.broker, icefarm_name(d->farm));
    d->farm_up = false; /* the kick below logs it online */
    dhs_farm_kick(d);
    d->status_timer = ifm_timer_add(loop, STATUS_EVERY_MS, on_status_timer, d);
}

static void start_connect(dhs *d)
{
    if (d->connecting || d->farm)
        return;
    if (pthread_create(&d->connect_thread, NULL, connect_main, d)) {
        d->farm_retry_timer = ifm_timer_add(d->loop, ifm_backoff_next(&d->farm_backoff), on_retry, d);
        return;
    }
    d->connecting = true;
}

int dhs_farm_start(dhs *d)
{
    snprintf(d->status_text, sizeof d->status_text, "{farm offline}");
    ifm_backoff_opts bo = { .base_ms = 1000, .max_ms = 10000 };
    ifm_backoff_init(&d->farm_backoff, &bo);
    d->connect_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (d->connect_efd < 0 || ifm_loop_watch(d->loop, d->connect_efd, IFM_READ, on_connected, d))
        return -1;
    start_connect(d);
    return 0;
}

void dhs_farm_stop(dhs *d)
{
    if (d->connecting) {
        pthread_join(d->connect_thread, NULL); /* at most CONNECT_TIMEOUT_MS */
        d->connecting = false;
        if (d->connect_rc == 0 && d->connect_result)
            icefarm_close(d->connect_result);
        d->connect_result = NULL;
    }
    ifm_timer_cancel(d->loop, d->farm_timer);
    ifm_timer_cancel(d->loop, d->farm_retry_timer);
    ifm_timer_cancel(d->loop, d->status_timer);
    if (d->connect_efd >= 0) {
        ifm_loop_unwatch(d->loop, d->connect_efd);
        close(d->connect_efd);
        d->connect_efd = -1;
    }
    if (d->farm) {
        ifm_loop_unwatch(d->loop, icefarm_fd(d->farm));
        icefarm_close(d->farm); /* pending requests' callbacks run with -ECANCELED */
        d->farm = NULL;
    }
}
