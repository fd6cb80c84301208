/* The commands that map one-to-one onto control verbs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Runs `req`, prints the reply as JSON with --json, else calls `human`. */
static int simple(const cli_opts *o, ifm_ctl_req *req, const void *args, size_t args_len,
                  void (*human)(const cli_reply *r, const cli_opts *o))
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
            json_t *j = ifm_json_from_msgpack(r.doc.root);
            json_object_del(j, "v");
            cli_print_json(j);
            json_decref(j);
        } else {
            human(&r, o);
        }
        cli_reply_free(&r);
    }
    ifm_ctl_req_free(req);
    icefarm_close(f);
    return rc;
}

static void print_serials(const cli_reply *r, const char *verb)
{
    char(*s)[IFM_SERIAL_MAX];
    size_t n = cli_reply_serials(r, &s);
    if (!n)
        printf("no boards %s\n", verb);
    for (size_t i = 0; i < n; i++)
        printf("%s %s\n", s[i], verb);
    free(s);
}

static void human_available(const cli_reply *r, const cli_opts *o)
{
    const msgpack_object *a = ifm_map_get(r->doc.root, "amount");
    printf("%llu board(s) available%s%s\n",
           a && a->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (unsigned long long)a->via.u64 : 0ULL,
           o->kind ? " for kind " : "", o->kind ? o->kind : "");
}

int cmd_available(const cli_opts *o)
{
    ifm_ctl_req req = { .verb = IFM_VERB_AVAILABLE };
    if (o->kind)
        snprintf(req.kind, sizeof req.kind, "%s", o->kind);
    return simple(o, &req, NULL, 0, human_available);
}

static void human_devices(const cli_reply *r, const cli_opts *o)
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

static void human_reserve(const cli_reply *r, const cli_opts *o)
{
    const msgpack_object *arr = ifm_map_get(r->doc.root, "serials");
    printf("%-20s %-16s %s\n", "SERIAL", "WORKER", "UNTIL");
    for (uint32_t i = 0; arr && arr->type == MSGPACK_OBJECT_ARRAY && i < arr->via.array.size; i++) {
        const msgpack_object *m = &arr->via.array.ptr[i];
        char serial[IFM_SERIAL_MAX] = "", worker[IFM_NAME_MAX] = "", until[32] = "";
        uint64_t u = 0;
        ifm_get_str(m, "serial", false, serial, sizeof serial, NULL);
        ifm_get_str(m, "worker", false, worker, sizeof worker, NULL);
        ifm_get_uint(m, "until", false, 0, UINT64_MAX, &u, NULL);
        printf("%-20s %-16s %s\n", serial, worker, cli_fmt_until(u, until, sizeof until));
    }
}

int cmd_reserve(const cli_opts *o)
{
    ifm_ctl_req req = { .verb = o->npos ? IFM_VERB_RESERVE_SERIALS : IFM_VERB_RESERVE };
    if (!o->npos && !o->amount)
        return cli_error(o, CLI_USAGE, "reserve needs --amount N or a list of serials");
    req.amount = o->amount;
    snprintf(req.kind, sizeof req.kind, "%s", o->kind ? o->kind : "pulsecount");
    req.wait_ms = o->wait_s * 1000;
    req.duration_s = o->duration_s;
    if (o->npos && cli_req_serials(o, &req))
        return CLI_FAILED;
    ifm_enc args;
    ifm_enc_init(&args);
    char err[256];
    if (o->args_json && cli_json_to_msgpack(o->args_json, &args, err, sizeof err)) {
        ifm_enc_free(&args);
        ifm_ctl_req_free(&req);
        return cli_error(o, CLI_USAGE, "%s", err);
    }
    int rc = simple(o, &req, o->args_json ? ifm_enc_data(&args) : NULL, ifm_enc_size(&args), human_reserve);
    ifm_enc_free(&args);
    return rc;
}

static void human_extend(const cli_reply *r, const cli_opts *o)
{
    print_serials(r, "extended");
}
static void human_end(const cli_reply *r, const cli_opts *o)
{
    print_serials(r, "released");
}
static void human_reboot(const cli_reply *r, const cli_opts *o)
{
    print_serials(r, "rebooting");
}

int cmd_extend(const cli_opts *o)
{
    ifm_ctl_req req = { .verb = o->npos ? IFM_VERB_EXTEND : IFM_VERB_EXTEND_ALL };
    req.duration_s = o->duration_s;
    if (o->npos && cli_req_serials(o, &req))
        return CLI_FAILED;
    return simple(o, &req, NULL, 0, human_extend);
}

int cmd_end(const cli_opts *o)
{
    if (!o->npos)
        return cli_error(o, CLI_USAGE, "end needs at least one serial (or use end-all)");
    ifm_ctl_req req = { .verb = IFM_VERB_END };
    if (cli_req_serials(o, &req))
        return CLI_FAILED;
    return simple(o, &req, NULL, 0, human_end);
}

int cmd_end_all(const cli_opts *o)
{
    ifm_ctl_req req = { .verb = IFM_VERB_END_ALL };
    return simple(o, &req, NULL, 0, human_end);
}

int cmd_reboot(const cli_opts *o)
{
    if (!o->npos)
        return cli_error(o, CLI_USAGE, "reboot needs at least one serial");
    ifm_ctl_req req = { .verb = IFM_VERB_REBOOT };
    if (cli_req_serials(o, &req))
        return CLI_FAILED;
    return simple(o, &req, NULL, 0, human_reboot);
}

static void human_status(const cli_reply *r, const cli_opts *o)
{
    const msgpack_object *root = r->doc.root, *ws = ifm_map_get(root, "workers"), *bs = ifm_map_get(root, "boards"),
                         *ls = ifm_map_get(root, "leases");
    printf("WORKERS\n%-24s %-8s %s\n", "ID", "STATE", "KINDS");
    for (uint32_t i = 0; ws && ws->type == MSGPACK_OBJECT_ARRAY && i < ws->via.array.size; i++) {
        const msgpack_object *w = &ws->via.array.ptr[i];
        char id[IFM_NAME_MAX] = "", kinds[256] = "";
        bool online = false;
        ifm_get_str(w, "id", false, id, sizeof id, NULL);
        ifm_get_bool(w, "online", false, &online, NULL);
        const msgpack_object *k = ifm_map_get(w, "kinds");
        for (uint32_t j = 0; k && k->type == MSGPACK_OBJECT_ARRAY && j < k->via.array.size; j++) {
            char one[IFM_KIND_MAX];
            if (!ifm_obj_str(&k->via.array.ptr[j], "kind", false, one, sizeof one, NULL))
                snprintf(kinds + strlen(kinds), sizeof kinds - strlen(kinds), "%s%s", j ? "," : "", one);
        }
        printf("%-24s %-8s %s\n", id, online ? "online" : "OFFLINE", kinds);
    }
    printf("\nBOARDS\n%-20s %-16s %-10s %-12s %-20s %s\n", "SERIAL", "WORKER", "STATE", "KIND", "HOLDER", "TAG");
    for (uint32_t i = 0; bs && bs->type == MSGPACK_OBJECT_ARRAY && i < bs->via.array.size; i++) {
        const msgpack_object *b = &bs->via.array.ptr[i];
        char serial[IFM_SERIAL_MAX] = "", worker[IFM_NAME_MAX] = "", state[16] = "", kind[IFM_KIND_MAX] = "",
             holder[IFM_NAME_MAX] = "-", tag[IFM_TAG_MAX] = "";
        ifm_get_str(b, "serial", false, serial, sizeof serial, NULL);
        ifm_get_str(b, "worker", false, worker, sizeof worker, NULL);
        ifm_get_str(b, "state", false, state, sizeof state, NULL);
        ifm_get_str(b, "kind", false, kind, sizeof kind, NULL);
        for (uint32_t j = 0; ls && ls->type == MSGPACK_OBJECT_ARRAY && j < ls->via.array.size; j++) {
            char ls_serial[IFM_SERIAL_MAX] = "";
            ifm_get_str(&ls->via.array.ptr[j], "serial", false, ls_serial, sizeof ls_serial, NULL);
            if (strcmp(ls_serial, serial) == 0) {
                ifm_get_str(&ls->via.array.ptr[j], "client", false, holder, sizeof holder, NULL);
                ifm_get_str(&ls->via.array.ptr[j], "tag", false, tag, sizeof tag, NULL);
            }
        }
        printf("%-20s %-16s %-10s %-12s %-20s %s\n", serial, worker, state, kind[0] ? kind : "-", holder, tag);
    }
}

int cmd_status(const cli_opts *o)
{
    ifm_ctl_req req = { .verb = IFM_VERB_STATUS };
    return simple(o, &req, NULL, 0, human_status);
}
