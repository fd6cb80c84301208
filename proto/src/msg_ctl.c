/* Control requests and replies. */
#include <stdlib.h>
#include <string.h>

#include "icefarm/msg.h"
#include "icefarm/names.h"

static const char *const verb_names[IFM_VERB_COUNT] = {
    "available", "devices", "reserve", "reserve_serials", "extend", "extend_all", "end",
    "end_all",   "reboot",  "delete",  "status",          "leases", "cancel",
};

const char *ifm_verb_name(ifm_verb v)
{
    return (unsigned)v < IFM_VERB_COUNT ? verb_names[v] : "?";
}

int ifm_verb_parse(const char *name)
{
    for (int i = 0; i < IFM_VERB_COUNT; i++)
        if (strcmp(name, verb_names[i]) == 0)
            return i;
    return -1;
}

static bool needs_serials(ifm_verb v)
{
    return v == IFM_VERB_RESERVE_SERIALS || v == IFM_VERB_EXTEND || v == IFM_VERB_END || v == IFM_VERB_REBOOT ||
        v == IFM_VERB_DELETE;
}

static int decode_serials(const msgpack_object *root, ifm_ctl_req *req, ifm_err *err)
{
    const msgpack_object *arr;
    if (ifm_get_array(root, "serials", true, IFM_MAX_SERIALS, &arr, err))
        return -1;
    req->nserials = arr->via.array.size;
    req->serials = calloc(req->nserials ? req->nserials : 1, sizeof *req->serials);
    if (!req->serials) {
        ifm_err_set(err, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < req->nserials; i++) {
        if (ifm_obj_str(&arr->via.array.ptr[i], "serial", true, req->serials[i], IFM_SERIAL_MAX, err))
            return -1;
        if (!ifm_serial_valid(req->serials[i])) {
            ifm_err_set(err, "invalid serial \"%s\"", req->serials[i]);
            return -1;
        }
    }
    return 0;
}

int ifm_ctl_req_decode(const ifm_doc *doc, ifm_verb verb, ifm_ctl_req *req, ifm_err *err)
{
    memset(req, 0, sizeof *req);
    req->verb = verb;
    const msgpack_object *root = doc->root;
    bool reserving = verb == IFM_VERB_RESERVE || verb == IFM_VERB_RESERVE_SERIALS;
    if (verb == IFM_VERB_RESERVE) {
        uint64_t amount = 0;
        if (ifm_get_uint(root, "amount", true, 1, IFM_MAX_SERIALS, &amount, err))
            return -1;
        req->amount = (uint32_t)amount;
    }
    if (ifm_get_str(root, "kind", reserving, req->kind, sizeof req->kind, err) < 0)
        return -1;
    /* Control echoes the kind in its replies ("not enough boards of kind K"): a
     * reply must stay valid UTF-8 for every client (issue 16). */
    if (!ifm_mqtt_utf8_valid(req->kind, strlen(req->kind))) {
        ifm_err_set(err, "field \"kind\" is not valid UTF-8 (or holds control characters)");
        return -1;
    }
    if (reserving && ifm_get_map(root, "args", false, &req->args, err) < 0)
        return -1;
    if (req->args) {
        ifm_enc e;
        ifm_enc_init(&e);
        int rc = ifm_obj_pack(req->args, &e);
        size_t n = ifm_enc_size(&e);
        ifm_enc_free(&e);
        if (rc || n > IFM_MAX_ARGS) {
            ifm_err_set(err, "field \"args\" is %zu bytes, at most %d allowed", n, IFM_MAX_ARGS);
            return -1;
        }
    }
    if (needs_serials(verb) && decode_serials(root, req, err))
        return -1;
    if (ifm_get_uint(root, "wait_ms", false, 0, 3600u * 1000u, &req->wait_ms, err) < 0)
        return -1;
    if (ifm_get_uint(root, "duration_s", false, 0, 365u * 86400u, &req->duration_s, err) < 0)
        return -1;
    if (reserving && ifm_get_str(root, "tag", false, req->tag, sizeof req->tag, err) < 0)
        return -1;
    if ((verb == IFM_VERB_EXTEND || verb == IFM_VERB_EXTEND_ALL) &&
        ifm_get_bool(root, "set", false, &req->set, err) < 0)
        return -1;
    if (verb == IFM_VERB_CANCEL && ifm_get_bin(root, "corr", true, 1, IFM_CORR_MAX, &req->corr, &req->corr_len, err))
        return -1;
    return 0;
}

void ifm_ctl_req_free(ifm_ctl_req *req)
{
    free(req->serials);
    req->serials = NULL;
    req->nserials = 0;
}

void ifm_ctl_req_encode(ifm_enc *e, const ifm_ctl_req *req, const void *args, size_t args_len)
{
    bool has_serials = needs_serials(req->verb);
    bool corr = req->verb == IFM_VERB_CANCEL && req->corr_len;
    uint32_t n = (req->verb == IFM_VERB_RESERVE) + (req->kind[0] != 0) + (args != NULL) + has_serials +
        (req->wait_ms != 0) + (req->duration_s != 0) + (req->tag[0] != 0) + req->set + corr;
    ifm_enc_root(e, n);
    if (req->verb == IFM_VERB_RESERVE)
        ifm_enc_kuint(e, "amount", req->amount);
    if (req->kind[0])
        ifm_enc_kstr(e, "kind", req->kind);
    if (args) {
        ifm_enc_key(e, "args");
        ifm_enc_raw(e, args, args_len);
    }
    if (has_serials) {
        ifm_enc_key(e, "serials");
        ifm_enc_array(e, (uint32_t)req->nserials);
        for (size_t i = 0; i < req->nserials; i++)
            ifm_enc_str(e, req->serials[i]);
    }
    if (req->wait_ms)
        ifm_enc_kuint(e, "wait_ms", req->wait_ms);
    if (req->duration_s)
        ifm_enc_kuint(e, "duration_s", req->duration_s);
    if (req->tag[0])
        ifm_enc_kstr(e, "tag", req->tag);
    if (req->set)
        ifm_enc_kbool(e, "set", true);
    if (corr)
        ifm_enc_kbin(e, "corr", req->corr, req->corr_len);
}

void ifm_reply_begin(ifm_enc *e, uint32_t code, const char *error, uint32_t extra)
{
    bool ok = code >= 200 && code < 300;
    ifm_enc_root(e, 2 + (error != NULL) + extra);
    ifm_enc_kbool(e, "ok", ok);
    ifm_enc_kuint(e, "code", code);
    if (error)
        ifm_enc_kstr(e, "error", error);
}

int ifm_reply_status_decode(const ifm_doc *doc, ifm_reply_status *st, ifm_err *err)
{
    memset(st, 0, sizeof *st);
    uint64_t code;
    if (ifm_get_bool(doc->root, "ok", true, &st->ok, err) ||
        ifm_get_uint(doc->root, "code", true, 100, 599, &code, err))
        return -1;
    st->code = (uint32_t)code;
    const char *msg;
    size_t len;
    if (ifm_get_strv(doc->root, "error", false, &msg, &len, 4096, err) < 0)
        return -1;
    if (ifm_map_get(doc->root, "error") && ifm_map_get(doc->root, "error")->type == MSGPACK_OBJECT_STR) {
        size_t n = len < sizeof st->error - 1 ? len : sizeof st->error - 1;
        memcpy(st->error, msg, n);
        st->error[n] = '\0';
    }
    return 0;
}
