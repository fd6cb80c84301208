/* Boards that are coming back, and reserving for a run.
 *
 * A released board is not free at once: the worker re-flashes the default
 * firmware and self-tests it (states flashing, testing) before control hands it
 * out again; a few seconds on the simulator, at most the worker's flash and
 * self-test bounds (30 s + 5 s by default) on real boards, after which a board
 * that did not come back is marked broken. Such a board is "returning", not
 * "unavailable":
 *   - reserve without --wait still answers at once (exit 4), but says how many
 *     boards are returning and how to wait for them (--wait);
 *   - evaluate and flash, which reserve for themselves, wait for returning
 *     boards within --timeout (default 60 s), saying so. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static uint32_t array_len(const msgpack_object *a)
{
    return a && a->type == MSGPACK_OBJECT_ARRAY ? a->via.array.size : 0;
}

static bool worker_offers(const msgpack_object *ws, const char *id, const char *kind)
{
    for (uint32_t i = 0; i < array_len(ws); i++) {
        const msgpack_object *w = &ws->via.array.ptr[i], *k = ifm_map_get(w, "kinds");
        char wid[IFM_NAME_MAX] = "";
        bool online = false;
        ifm_get_str(w, "id", false, wid, sizeof wid, NULL);
        ifm_get_bool(w, "online", false, &online, NULL);
        if (!online || strcmp(wid, id) != 0)
            continue;
        for (uint32_t j = 0; j < array_len(k); j++) {
            char one[IFM_KIND_MAX];
            if (!ifm_obj_str(&k->via.array.ptr[j], "kind", false, one, sizeof one, NULL) && strcmp(one, kind) == 0)
                return true;
        }
    }
    return false;
}

int cli_farm_returning(icefarm *f, const cli_opts *o, const char *kind, size_t *nfree, size_t *returning)
{
    *nfree = *returning = 0;
    ifm_ctl_req req = { .verb = IFM_VERB_STATUS };
    cli_reply r = { 0 };
    int rc = cli_call(f, o, &req, NULL, 0, &r);
    if (rc != CLI_OK)
        return rc;
    const msgpack_object *ws = ifm_map_get(r.doc.root, "workers"), *bs = ifm_map_get(r.doc.root, "boards"),
                         *ls = ifm_map_get(r.doc.root, "leases");
    for (uint32_t i = 0; i < array_len(bs); i++) {
        const msgpack_object *b = &bs->via.array.ptr[i];
        char serial[IFM_SERIAL_MAX] = "", worker[IFM_NAME_MAX] = "", state[16] = "";
        bool available = false, leased = false;
        ifm_get_str(b, "serial", false, serial, sizeof serial, NULL);
        ifm_get_str(b, "worker", false, worker, sizeof worker, NULL);
        ifm_get_str(b, "state", false, state, sizeof state, NULL);
        ifm_get_bool(b, "available", false, &available, NULL);
        for (uint32_t j = 0; j < array_len(ls); j++) {
            char s[IFM_SERIAL_MAX] = "";
            ifm_get_str(&ls->via.array.ptr[j], "serial", false, s, sizeof s, NULL);
            leased |= strcmp(s, serial) == 0;
        }
        if (leased || !worker_offers(ws, worker, kind))
            continue;
        if (available)
            ++*nfree;
        /* Unleased and on its way back to ready: re-flashing the default
         * firmware, self-testing, or still finishing a flash for a lease that
         * has just ended. */
        else if (!strcmp(state, "flashing") || !strcmp(state, "testing") || !strcmp(state, "preparing"))
            ++*returning;
    }
    cli_reply_free(&r);
    return CLI_OK;
}

void cli_explain_busy(icefarm *f, const cli_opts *o, const char *kind, uint32_t want)
{
    size_t nfree = 0, returning = 0;
    cli_opts quiet = *o;
    quiet.json = quiet.ndjson = false; /* the refusal has been printed: this only adds a hint */
    if (cli_farm_returning(f, &quiet, kind, &nfree, &returning) != CLI_OK || !returning)
        return;
    fprintf(stderr,
            "icefarm-cli: %zu board(s) of kind %s %s returning to the farm (re-flashing after a release, usually "
            "back within seconds)%s: reserve --wait %u waits for %s\n",
            returning, kind, returning == 1 ? "is" : "are",
            nfree + returning >= want ? "" : ", but even with them there are not enough", CLI_RETURNING_WAIT_S,
            returning == 1 ? "it" : "them");
}

static int reserve_error(const cli_opts *o, int rc, const char *err)
{
    if (rc == -ECANCELED)
        return cli_error(o, CLI_INTERRUPTED, "interrupted while reserving boards; nothing was sent to them");
    return cli_error(o,
                     rc == -EBUSY                              ? CLI_NOT_ENOUGH
                         : rc == -ETIMEDOUT || rc == -ENOTCONN ? CLI_UNREACHABLE
                                                               : CLI_FAILED,
                     "%s", err);
}

int cli_reserve_for_run(icefarm *f, const cli_opts *o, uint32_t want, uint32_t min, const void *args, size_t args_len,
                        char (**serials)[IFM_SERIAL_MAX], size_t *n)
{
    const char *kind = o->kind ? o->kind : "pulsecount";
    char err[512];
    cli_wait_begin("%u board(s) of kind %s from icefarm control", want, kind);
    int rc = icefarm_reserve(f, want, kind, args, args_len, o->wait_s * 1000, serials, n, err, sizeof err);
    cli_wait_end();
    if (rc != -EBUSY)
        return rc ? reserve_error(o, rc, err) : CLI_OK;
    /* Not enough free now. Boards coming back are worth waiting for (unless
     * --wait has just done that): within --timeout, for as many as will be
     * there, at least `min`. */
    size_t nfree = 0, returning = 0;
    int src = cli_farm_returning(f, o, kind, &nfree, &returning);
    if (src != CLI_OK)
        return src;
    uint32_t target = (uint32_t)(nfree + returning < want ? nfree + returning : want);
    if (!o->wait_s && returning && target >= min) {
        uint64_t bound = o->farm.timeout_ms ? o->farm.timeout_ms : 60000;
        if (!o->json && !o->ndjson)
            fprintf(stderr,
                    "icefarm-cli: %zu board(s) of kind %s %s returning to the farm (re-flashing after a release): "
                    "waiting up to %llu s for %u board(s) (--timeout)\n",
                    returning, kind, returning == 1 ? "is" : "are", (unsigned long long)(bound / 1000), target);
        cli_wait_begin("%u returning board(s) of kind %s (up to %llu s)", target, kind,
                       (unsigned long long)(bound / 1000));
        rc = icefarm_reserve(f, target, kind, args, args_len, bound, serials, n, err, sizeof err);
        cli_wait_end();
        if (rc != -EBUSY)
            return rc ? reserve_error(o, rc, err) : CLI_OK;
        snprintf(err + strlen(err), sizeof err - strlen(err), " (the returning boards did not come back within %llu s)",
                 (unsigned long long)(bound / 1000));
    }
    /* Settle for what is free now, if that is enough. */
    if (min < want) {
        icefarm_req req = { .verb = "available", .kind = kind };
        icefarm_reply *rep = NULL;
        char e2[256];
        uint64_t avail = 0;
        if (icefarm_call(f, &req, &rep, e2, sizeof e2) || !icefarm_reply_ok(rep) ||
            icefarm_reply_uint(rep, "amount", &avail))
            avail = 0;
        icefarm_reply_free(rep);
        if (avail >= min && avail > 0) {
            char e3[512];
            rc = icefarm_reserve(f, (uint32_t)(avail < want ? avail : want), kind, args, args_len, 0, serials, n, e3,
                                 sizeof e3);
            if (rc != -EBUSY)
                return rc ? reserve_error(o, rc, e3) : CLI_OK;
        }
    }
    return reserve_error(o, -EBUSY, err);
}
