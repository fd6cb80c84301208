/* The commands that map onto control verbs: status, who, available, devices,
 * reserve, extend, end, end-all, reboot. Control answers with what it did;
 * where that is less than what was asked (extend, end), the command says why
 * for each serial left out and exits 1. */
#include <ctype.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* The reply as JSON, without the protocol's version field. */
static json_t *reply_json(const cli_reply *r)
{
    json_t *j = ifm_json_from_msgpack(r->doc.root);
    json_object_del(j, "v");
    return j;
}

static void on_signal(icefarm *f, int signo, void *arg)
{
    icefarm_stop(f); /* icefarm_call cancels the request, at control too (PROTOCOL.md 5.1) */
}

/* Runs `req`, prints the reply as JSON with --json, else calls `human`. */
static int simple(const cli_opts *o, ifm_ctl_req *req, const void *args, size_t args_len,
                  void (*human)(const cli_reply *r, const cli_opts *o, icefarm *f))
{
    int rc;
    icefarm *f = cli_connect(o, &rc);
    if (!f) {
        ifm_ctl_req_free(req);
        return rc;
    }
    cli_reply r = { 0 };
    rc = cli_call(f, o, req, args, args_len, &r);
    if (rc == CLI_OK) {
        if (o->json) {
            json_t *j = reply_json(&r);
            cli_print_json(j);
            json_decref(j);
        } else {
            human(&r, o, f);
        }
        cli_reply_free(&r);
    }
    ifm_ctl_req_free(req);
    icefarm_close(f);
    return rc;
}

static const char *str_of(const msgpack_object *m, const char *key, char *buf, size_t cap)
{
    buf[0] = '\0';
    ifm_get_str(m, key, false, buf, cap, NULL);
    return buf;
}

static uint64_t uint_of(const msgpack_object *m, const char *key)
{
    uint64_t v = 0;
    ifm_get_uint(m, key, false, 0, UINT64_MAX, &v, NULL);
    return v;
}

static uint32_t array_len(const msgpack_object *a)
{
    return a && a->type == MSGPACK_OBJECT_ARRAY ? a->via.array.size : 0;
}

/* ---- available, devices ---- */

static void human_available(const cli_reply *r, const cli_opts *o, icefarm *f)
{
    printf("%llu board(s) available%s%s\n", (unsigned long long)uint_of(r->doc.root, "amount"),
           o->kind ? " for kind " : "", o->kind ? o->kind : "");
}

int cmd_available(const cli_opts *o)
{
    ifm_ctl_req req = { .verb = IFM_VERB_AVAILABLE };
    if (o->kind)
        snprintf(req.kind, sizeof req.kind, "%s", o->kind);
    return simple(o, &req, NULL, 0, human_available);
}

static void human_devices(const cli_reply *r, const cli_opts *o, icefarm *f)
{
    char(*s)[IFM_SERIAL_MAX];
    size_t n = cli_reply_serials(r, &s);
    for (size_t i = 0; i < n; i++)
        printf("%s\n", s[i]);
    free(s);
}

int cmd_devices(const cli_opts *o)
{
    ifm_ctl_req req = { .verb = IFM_VERB_DEVICES };
    if (o->kind)
        snprintf(req.kind, sizeof req.kind, "%s", o->kind);
    return simple(o, &req, NULL, 0, human_devices);
}

/* ---- reserve ---- */

static void human_reserve(const cli_reply *r, const cli_opts *o, icefarm *f)
{
    const msgpack_object *arr = ifm_map_get(r->doc.root, "serials");
    printf("%-20s %-16s %s\n", "SERIAL", "WORKER", "LEASE ENDS");
    for (uint32_t i = 0; i < array_len(arr); i++) {
        const msgpack_object *m = &arr->via.array.ptr[i];
        char serial[IFM_SERIAL_MAX], worker[IFM_NAME_MAX], until[96];
        printf("%-20s %-16s %s\n", str_of(m, "serial", serial, sizeof serial),
               str_of(m, "worker", worker, sizeof worker), cli_fmt_until(uint_of(m, "until"), until, sizeof until));
    }
}

int cmd_reserve(const cli_opts *o)
{
    if (!o->npos && !o->amount)
        return cli_error(o, CLI_USAGE,
                         "reserve needs --amount N (1..4096) or a list of serials (icefarm-cli reserve --help)");
    if (o->npos && o->amount)
        return cli_error(o, CLI_USAGE, "reserve takes --amount N or serials, not both");
    ifm_ctl_req req = { .verb = o->npos ? IFM_VERB_RESERVE_SERIALS : IFM_VERB_RESERVE };
    req.amount = o->amount;
    const char *kind = o->kind ? o->kind : "pulsecount";
    snprintf(req.kind, sizeof req.kind, "%s", kind);
    req.wait_ms = o->wait_s * 1000;
    req.duration_s = o->duration_s;
    ifm_enc args;
    ifm_enc_init(&args);
    char err[256];
    if (o->args_json && cli_json_to_msgpack(o->args_json, &args, err, sizeof err)) {
        ifm_enc_free(&args);
        return cli_error(o, CLI_USAGE, "%s", err);
    }
    int rc;
    icefarm *f = cli_connect(o, &rc);
    if (!f) {
        ifm_enc_free(&args);
        return rc;
    }
    /* What the farm has of this kind: an unknown kind is a mistake to say at
     * once; more boards than the farm has now is worth a warning before a wait. */
    size_t total = 0;
    char offered[256];
    if ((rc = cli_farm_kind(f, o, kind, &total, offered, sizeof offered)) != CLI_OK)
        goto out;
    char list[300], pat[IFM_KIND_MAX + 4];
    snprintf(list, sizeof list, ", %s,", offered);
    snprintf(pat, sizeof pat, " %s,", kind);
    if (offered[0] && !strstr(list, pat)) {
        rc = cli_error(o, CLI_FAILED, "unknown kind \"%s\"; the farm offers: %s", kind, offered);
        goto out;
    }
    if (o->npos) {
        if ((rc = cli_check_boards(f, o, o->pos, (size_t)o->npos, false)) != CLI_OK)
            goto out;
        if (cli_req_serials(o, &req)) {
            rc = cli_error(o, CLI_FAILED, "out of memory");
            goto out;
        }
    } else if (o->amount > total) {
        cli_warn("the farm has only %zu board(s) of kind %s now; %u asked%s", total, kind, o->amount,
                 o->wait_s ? ": waiting in case workers join" : "");
    }
    if (o->wait_s) {
        /* Ctrl-C of a waiting reserve: the wait ends at control too, so no board
         * is granted to nobody (PROTOCOL.md 5.1). */
        int sigs[] = { SIGINT, SIGTERM };
        int src = icefarm_on_signals(f, sigs, 2, on_signal, NULL);
        if (src) {
            rc = cli_error(o, CLI_FAILED, "cannot set up signal handling: %s", icefarm_strerror(src));
            goto out;
        }
        cli_wait_begin("%u board(s) of kind %s to come free (up to %llu s)", o->amount, kind,
                       (unsigned long long)o->wait_s);
    }
    cli_reply r = { 0 };
    rc = cli_call(f, o, &req, o->args_json ? ifm_enc_data(&args) : NULL, ifm_enc_size(&args), &r);
    cli_wait_end();
    /* A board re-flashing after a release is coming back, not unavailable: say
     * so, and how to wait for it. */
    if (rc == CLI_NOT_ENOUGH && !o->npos && !o->wait_s)
        cli_explain_busy(f, o, kind, o->amount);
    if (rc == CLI_OK) {
        if (o->json) {
            json_t *j = reply_json(&r);
            cli_print_json(j);
            json_decref(j);
        } else {
            human_reserve(&r, o, f);
        }
        cli_reply_free(&r);
    }
out:
    ifm_enc_free(&args);
    ifm_ctl_req_free(&req);
    icefarm_close(f);
    return rc;
}

/* ---- extend, end: what was left out, and why ---- */

/* Why control left `serial` out of an extend or end: from its status now. */
static void why_left_out(const cli_reply *status, const char *serial, const char *me, char *why, size_t cap)
{
    const msgpack_object *bs = ifm_map_get(status->doc.root, "boards"), *ls = ifm_map_get(status->doc.root, "leases");
    bool known = false;
    for (uint32_t i = 0; i < array_len(bs); i++) {
        char s[IFM_SERIAL_MAX];
        known |= strcmp(str_of(&bs->via.array.ptr[i], "serial", s, sizeof s), serial) == 0;
    }
    char holder[IFM_NAME_MAX] = "";
    for (uint32_t i = 0; i < array_len(ls); i++) {
        char s[IFM_SERIAL_MAX];
        if (strcmp(str_of(&ls->via.array.ptr[i], "serial", s, sizeof s), serial) == 0)
            str_of(&ls->via.array.ptr[i], "client", holder, sizeof holder);
    }
    if (!known)
        snprintf(why, cap, "unknown serial (no worker has reported it)");
    else if (holder[0] && strcmp(holder, me) != 0)
        snprintf(why, cap, "reserved by another client (%s), not by %s", holder, me);
    else if (holder[0])
        snprintf(why, cap, "still held by %s (it changed hands meanwhile?)", me);
    else
        snprintf(why, cap, "not reserved by %s (already ended, expired, or never reserved)", me);
}

static bool listed(const cli_reply *r, const char *serial)
{
    for (size_t i = 0; i < icefarm_reply_nserials(r->reply); i++)
        if (strcmp(icefarm_reply_serial(r->reply, i), serial) == 0)
            return true;
    return false;
}

/* Compares what was asked with what control did; prints one line per serial
 * left out (and, with --json, adds "missing" to the document). Returns the
 * number left out. */
static size_t report_left_out(icefarm *f, const cli_opts *o, const cli_reply *r, const char *verb, json_t *doc)
{
    size_t missing = 0;
    cli_reply st = { 0 };
    bool have_status = false;
    json_t *arr = json_array();
    for (int i = 0; i < o->npos; i++) {
        bool dup = false;
        for (int k = 0; k < i; k++)
            dup |= strcmp(o->pos[k], o->pos[i]) == 0;
        if (dup || listed(r, o->pos[i]))
            continue;
        if (!have_status) {
            ifm_ctl_req req = { .verb = IFM_VERB_STATUS };
            have_status = cli_call(f, o, &req, NULL, 0, &st) == CLI_OK;
        }
        char why[300] = "unknown (control's status is not available)";
        if (have_status)
            why_left_out(&st, o->pos[i], icefarm_name(f), why, sizeof why);
        fprintf(stderr, "icefarm-cli: %s: not %s: %s\n", o->pos[i], verb, why);
        json_array_append_new(arr, json_pack("{s:s, s:s}", "serial", o->pos[i], "reason", why));
        missing++;
    }
    if (have_status)
        cli_reply_free(&st);
    if (doc && missing) {
        char msg[96];
        snprintf(msg, sizeof msg, "%zu of %d serial(s) not %s", missing, o->npos, verb);
        json_object_set_new(doc, "ok", json_false());
        json_object_set_new(doc, "exit", json_integer(CLI_FAILED));
        json_object_set_new(doc, "error", json_string(msg));
        json_object_set(doc, "missing", arr);
    }
    json_decref(arr);
    return missing;
}

/* extend and end share the shape: call, print what was done, compare. */
static int lease_verb(const cli_opts *o, ifm_ctl_req *req, const char *done_word)
{
    int rc;
    icefarm *f = cli_connect(o, &rc);
    if (!f) {
        ifm_ctl_req_free(req);
        return rc;
    }
    cli_reply r = { 0 };
    rc = cli_call(f, o, req, NULL, 0, &r);
    if (rc != CLI_OK)
        goto out;
    bool extend = req->verb == IFM_VERB_EXTEND || req->verb == IFM_VERB_EXTEND_ALL;
    json_t *doc = o->json ? reply_json(&r) : NULL;
    const msgpack_object *leases = ifm_map_get(r.doc.root, "leases");
    uint64_t asked_until = uint_of(r.doc.root, "until");
    size_t n = icefarm_reply_nserials(r.reply);
    for (size_t i = 0; !o->json && i < n; i++) {
        const char *serial = icefarm_reply_serial(r.reply, i);
        if (!extend) {
            printf("%s %s\n", serial, done_word);
            continue;
        }
        uint64_t until = asked_until;
        for (uint32_t k = 0; k < array_len(leases); k++) {
            char s[IFM_SERIAL_MAX];
            if (strcmp(str_of(&leases->via.array.ptr[k], "serial", s, sizeof s), serial) == 0)
                until = uint_of(&leases->via.array.ptr[k], "until");
        }
        char when[96];
        cli_fmt_until(until, when, sizeof when);
        if (until > asked_until + 1000)
            printf("%s kept: it already ends %s, later than asked (--set to shorten it)\n", serial, when);
        else
            printf("%s extended until %s\n", serial, when);
    }
    if (!o->json && !n && !o->npos)
        printf("you hold no boards (%s)\n", icefarm_name(f));
    bool capped = false;
    ifm_get_bool(r.doc.root, "capped", false, &capped, NULL);
    if (extend && capped) {
        char d[32];
        cli_warn("--duration %llu s is more than the farm allows: capped at %llu s (%s)",
                 (unsigned long long)o->duration_s, (unsigned long long)uint_of(r.doc.root, "duration_s"),
                 cli_fmt_duration(uint_of(r.doc.root, "duration_s") * 1000, d, sizeof d));
    }
    if (report_left_out(f, o, &r, extend ? "extended" : "ended", doc))
        rc = CLI_FAILED;
    if (doc) {
        cli_print_json(doc);
        json_decref(doc);
    }
    cli_reply_free(&r);
out:
    ifm_ctl_req_free(req);
    icefarm_close(f);
    return rc;
}

int cmd_extend(const cli_opts *o)
{
    if (o->set && !o->duration_s)
        return cli_error(o, CLI_USAGE, "--set needs --duration SECONDS (the lease's new length from now)");
    ifm_ctl_req req = { .verb = o->npos ? IFM_VERB_EXTEND : IFM_VERB_EXTEND_ALL };
    req.duration_s = o->duration_s;
    req.set = o->set;
    if (o->npos && cli_req_serials(o, &req))
        return CLI_FAILED;
    return lease_verb(o, &req, "extended");
}

int cmd_end(const cli_opts *o)
{
    ifm_ctl_req req = { .verb = IFM_VERB_END };
    if (cli_req_serials(o, &req))
        return CLI_FAILED;
    return lease_verb(o, &req, "released");
}

int cmd_end_all(const cli_opts *o)
{
    ifm_ctl_req req = { .verb = IFM_VERB_END_ALL };
    return lease_verb(o, &req, "released");
}

static void human_reboot(const cli_reply *r, const cli_opts *o, icefarm *f)
{
    char(*s)[IFM_SERIAL_MAX];
    size_t n = cli_reply_serials(r, &s);
    for (size_t i = 0; i < n; i++)
        printf("%s rebooting\n", s[i]);
    free(s);
}

int cmd_reboot(const cli_opts *o)
{
    ifm_ctl_req req = { .verb = IFM_VERB_REBOOT };
    if (cli_req_serials(o, &req))
        return CLI_FAILED;
    return simple(o, &req, NULL, 0, human_reboot);
}

/* ---- status, who ---- */

static const msgpack_object *lease_of(const msgpack_object *ls, const char *serial)
{
    for (uint32_t j = 0; j < array_len(ls); j++) {
        char s[IFM_SERIAL_MAX];
        if (strcmp(str_of(&ls->via.array.ptr[j], "serial", s, sizeof s), serial) == 0)
            return &ls->via.array.ptr[j];
    }
    return NULL;
}

static void human_status(const cli_reply *r, const cli_opts *o, icefarm *f)
{
    const msgpack_object *root = r->doc.root, *ws = ifm_map_get(root, "workers"), *bs = ifm_map_get(root, "boards"),
                         *ls = ifm_map_get(root, "leases");
    const char *me = icefarm_name(f);
    printf("WORKERS\n%-24s %-12s %s\n", "ID", "STATE", "KINDS");
    for (uint32_t i = 0; i < array_len(ws); i++) {
        const msgpack_object *w = &ws->via.array.ptr[i];
        char id[IFM_NAME_MAX], kinds[256] = "", state[16] = "";
        bool online = false;
        ifm_get_bool(w, "online", false, &online, NULL);
        /* control's liveness (PROTOCOL.md 14.2): online, hung (connected but its
         * heartbeats stopped: its boards are not granted), reconnecting (the
         * grace after its Will), offline. Anything but online stands out. */
        if (!str_of(w, "state", state, sizeof state)[0])
            snprintf(state, sizeof state, "%s", online ? "online" : "offline");
        if (strcmp(state, "online") != 0)
            for (char *c = state; *c; c++)
                *c = (char)toupper((unsigned char)*c);
        const msgpack_object *k = ifm_map_get(w, "kinds");
        for (uint32_t j = 0; j < array_len(k); j++) {
            char one[IFM_KIND_MAX];
            if (!ifm_obj_str(&k->via.array.ptr[j], "kind", false, one, sizeof one, NULL))
                snprintf(kinds + strlen(kinds), sizeof kinds - strlen(kinds), "%s%s", j ? "," : "", one);
        }
        printf("%-24s %-12s %s\n", str_of(w, "id", id, sizeof id), state, kinds);
    }
    size_t mine = 0;
    printf("\nBOARDS (* = yours, %s)\n  %-20s %-16s %-10s %-11s %-20s %s\n", me, "SERIAL", "WORKER", "STATE", "KIND",
           "HOLDER", "LEASE ENDS");
    for (uint32_t i = 0; i < array_len(bs); i++) {
        const msgpack_object *b = &bs->via.array.ptr[i];
        char serial[IFM_SERIAL_MAX], worker[IFM_NAME_MAX], state[16], kind[IFM_KIND_MAX],
            holder[IFM_NAME_MAX] = "-", tag[IFM_TAG_MAX] = "", until[96] = "-";
        str_of(b, "serial", serial, sizeof serial);
        const msgpack_object *l = lease_of(ls, serial);
        if (l) {
            str_of(l, "client", holder, sizeof holder);
            cli_fmt_until(uint_of(l, "until"), until, sizeof until);
            str_of(l, "tag", tag, sizeof tag);
        }
        bool yours = l && strcmp(holder, me) == 0;
        mine += yours;
        str_of(b, "kind", kind, sizeof kind);
        printf("%c %-20s %-16s %-10s %-11s %-20s %s%s%s%s\n", yours ? '*' : ' ', serial,
               str_of(b, "worker", worker, sizeof worker), str_of(b, "state", state, sizeof state),
               kind[0] ? kind : "-", holder, until, tag[0] ? "  tag: \"" : "", tag, tag[0] ? "\"" : "");
    }
    printf("\n%u board(s), %u leased, %zu yours\n", array_len(bs), array_len(ls), mine);
}

int cmd_status(const cli_opts *o)
{
    ifm_ctl_req req = { .verb = IFM_VERB_STATUS };
    return simple(o, &req, NULL, 0, human_status);
}

/* who: one entry per holder, like who(1) lists sessions. */
static json_t *who_table(const cli_reply *r)
{
    const msgpack_object *ls = ifm_map_get(r->doc.root, "leases");
    json_t *holders = json_object(); /* client -> {boards, kinds, first_end} */
    for (uint32_t i = 0; i < array_len(ls); i++) {
        const msgpack_object *l = &ls->via.array.ptr[i];
        char client[IFM_NAME_MAX], serial[IFM_SERIAL_MAX], kind[IFM_KIND_MAX];
        str_of(l, "client", client, sizeof client);
        json_t *h = json_object_get(holders, client);
        if (!h) {
            h = json_pack("{s:s, s:[], s:[], s:I}", "client", client, "serials", "kinds", "first_end",
                          (json_int_t)uint_of(l, "until"));
            json_object_set_new(holders, client, h);
        }
        json_array_append_new(json_object_get(h, "serials"), json_string(str_of(l, "serial", serial, sizeof serial)));
        json_t *kinds = json_object_get(h, "kinds");
        bool seen = false;
        str_of(l, "kind", kind, sizeof kind);
        for (size_t k = 0; k < json_array_size(kinds); k++)
            seen |= strcmp(json_string_value(json_array_get(kinds, k)), kind) == 0;
        if (!seen)
            json_array_append_new(kinds, json_string(kind));
        if ((json_int_t)uint_of(l, "until") < json_integer_value(json_object_get(h, "first_end")))
            json_object_set_new(h, "first_end", json_integer((json_int_t)uint_of(l, "until")));
    }
    json_t *arr = json_array();
    const char *key;
    json_t *h;
    json_object_foreach(holders, key, h) json_array_append(arr, h);
    json_decref(holders);
    return arr;
}

int cmd_who(const cli_opts *o)
{
    int rc;
    icefarm *f = cli_connect(o, &rc);
    if (!f)
        return rc;
    ifm_ctl_req req = { .verb = IFM_VERB_STATUS };
    cli_reply r = { 0 };
    rc = cli_call(f, o, &req, NULL, 0, &r);
    if (rc == CLI_OK) {
        json_t *arr = who_table(&r);
        if (o->json) {
            json_t *doc = json_pack("{s:b, s:O}", "ok", 1, "holders", arr);
            cli_print_json(doc);
            json_decref(doc);
        } else {
            printf("  %-24s %-6s %-20s %s\n", "CLIENT", "BOARDS", "KINDS", "FIRST LEASE ENDS");
            size_t i;
            json_t *h;
            json_array_foreach(arr, i, h)
            {
                const char *client = json_string_value(json_object_get(h, "client"));
                char kinds[128] = "", until[96];
                size_t k;
                json_t *kv;
                json_array_foreach(json_object_get(h, "kinds"), k, kv) snprintf(
                    kinds + strlen(kinds), sizeof kinds - strlen(kinds), "%s%s", k ? "," : "", json_string_value(kv));
                printf(
                    "%c %-24s %-6zu %-20s %s\n", strcmp(client, icefarm_name(f)) == 0 ? '*' : ' ', client,
                    json_array_size(json_object_get(h, "serials")), kinds,
                    cli_fmt_until((uint64_t)json_integer_value(json_object_get(h, "first_end")), until, sizeof until));
            }
            if (!json_array_size(arr))
                printf("nobody holds a board\n");
        }
        json_decref(arr);
        cli_reply_free(&r);
    }
    icefarm_close(f);
    return rc;
}
