/* Worker birth/death, board state and control -> worker commands. */
#include <stdlib.h>
#include <string.h>

#include "icefarm/msg.h"

static const char *const state_names[IFM_BOARD_STATE_COUNT] = {
    "flashing", "testing", "ready", "preparing", "reserved", "broken", "gone",
};

const char *ifm_board_state_name(ifm_board_state s)
{
    return (unsigned)s < IFM_BOARD_STATE_COUNT ? state_names[s] : "?";
}

int ifm_board_state_parse(const char *name)
{
    for (int i = 0; i < IFM_BOARD_STATE_COUNT; i++)
        if (strcmp(name, state_names[i]) == 0)
            return i;
    return -1;
}

static int get_state(const msgpack_object *map, const char *key, ifm_board_state *out, ifm_err *err)
{
    char name[16];
    if (ifm_get_str(map, key, true, name, sizeof name, err))
        return -1;
    int s = ifm_board_state_parse(name);
    if (s < 0) {
        ifm_err_set(err, "unknown board state \"%s\"", name);
        return -1;
    }
    *out = (ifm_board_state)s;
    return 0;
}

static int get_serial(const msgpack_object *map, char *out, ifm_err *err)
{
    if (ifm_get_str(map, "serial", true, out, IFM_SERIAL_MAX, err))
        return -1;
    if (!ifm_serial_valid(out)) {
        ifm_err_set(err, "invalid serial \"%s\"", out);
        return -1;
    }
    return 0;
}

void ifm_worker_state_encode(ifm_enc *e, const ifm_worker_state *ws)
{
    ifm_enc_root(e, 5 + (ws->instance != 0) + (ws->heartbeat_ms != 0) + (!ws->online && ws->clean));
    ifm_enc_kstr(e, "worker", ws->worker);
    ifm_enc_kstr(e, "state", ws->online ? "online" : "offline");
    ifm_enc_kuint(e, "epoch", ws->epoch);
    if (ws->instance)
        ifm_enc_kuint(e, "instance", ws->instance);
    if (ws->heartbeat_ms)
        ifm_enc_kuint(e, "heartbeat_ms", ws->heartbeat_ms);
    if (!ws->online && ws->clean)
        ifm_enc_kbool(e, "clean", true);
    ifm_enc_key(e, "kinds");
    ifm_enc_array(e, (uint32_t)ws->nkinds);
    for (size_t i = 0; i < ws->nkinds; i++)
        ifm_enc_str(e, ws->kinds[i]);
    ifm_enc_key(e, "boards");
    ifm_enc_array(e, (uint32_t)ws->nboards);
    for (size_t i = 0; i < ws->nboards; i++) {
        const ifm_board_brief *b = &ws->boards[i];
        ifm_enc_map(e, b->kind[0] ? 3 : 2);
        ifm_enc_kstr(e, "serial", b->serial);
        ifm_enc_kstr(e, "state", ifm_board_state_name(b->state));
        if (b->kind[0])
            ifm_enc_kstr(e, "kind", b->kind);
    }
}

int ifm_worker_state_decode(const ifm_doc *doc, ifm_worker_state *ws, ifm_err *err)
{
    memset(ws, 0, sizeof *ws);
    const msgpack_object *root = doc->root;
    char state[16];
    if (ifm_get_str(root, "worker", true, ws->worker, sizeof ws->worker, err) ||
        ifm_get_str(root, "state", true, state, sizeof state, err) ||
        ifm_get_uint(root, "epoch", true, 0, UINT64_MAX, &ws->epoch, err) ||
        ifm_get_uint(root, "instance", false, 0, UINT64_MAX, &ws->instance, err) < 0 ||
        ifm_get_uint(root, "heartbeat_ms", false, 0, 3600000, &ws->heartbeat_ms, err) < 0 ||
        ifm_get_bool(root, "clean", false, &ws->clean, err) < 0)
        return -1;
    if (!ifm_name_valid(ws->worker, IFM_NAME_MAX)) {
        ifm_err_set(err, "invalid worker name");
        return -1;
    }
    if (strcmp(state, "online") == 0)
        ws->online = true;
    else if (strcmp(state, "offline") != 0) {
        ifm_err_set(err, "worker state must be online or offline, got \"%s\"", state);
        return -1;
    }
    const msgpack_object *kinds = NULL, *boards = NULL;
    if (ifm_get_array(root, "kinds", ws->online, IFM_MAX_KINDS, &kinds, err) < 0 ||
        ifm_get_array(root, "boards", ws->online, IFM_MAX_SERIALS, &boards, err) < 0)
        return -1;
    if (kinds) {
        ws->nkinds = kinds->via.array.size;
        for (size_t i = 0; i < ws->nkinds; i++)
            if (ifm_obj_str(&kinds->via.array.ptr[i], "kind", true, ws->kinds[i], IFM_KIND_MAX, err))
                return -1;
    }
    if (boards && boards->via.array.size) {
        ws->boards = calloc(boards->via.array.size, sizeof *ws->boards);
        if (!ws->boards) {
            ifm_err_set(err, "out of memory");
            return -1;
        }
        for (size_t i = 0; i < boards->via.array.size; i++) {
            const msgpack_object *b = &boards->via.array.ptr[i];
            ifm_board_brief *out = &ws->boards[i];
            if (b->type != MSGPACK_OBJECT_MAP) {
                ifm_err_set(err, "boards[%zu] must be a map", i);
                return -1;
            }
            if (get_serial(b, out->serial, err) || get_state(b, "state", &out->state, err) ||
                ifm_get_str(b, "kind", false, out->kind, sizeof out->kind, err) < 0)
                return -1;
            ws->nboards++;
        }
    }
    return 0;
}

void ifm_worker_state_free(ifm_worker_state *ws)
{
    free(ws->boards);
    ws->boards = NULL;
    ws->nboards = 0;
}

void ifm_board_status_encode(ifm_enc *e, const ifm_board_status *bs)
{
    ifm_enc_root(e, 6 + bs->exported + (bs->since_ms != 0));
    ifm_enc_kstr(e, "serial", bs->serial);
    ifm_enc_kstr(e, "worker", bs->worker);
    ifm_enc_kuint(e, "epoch", bs->epoch);
    ifm_enc_kstr(e, "state", ifm_board_state_name(bs->state));
    ifm_enc_kstr(e, "kind", bs->kind);
    ifm_enc_kstr(e, "reason", bs->reason);
    if (bs->exported)
        ifm_enc_kbool(e, "exported", true);
    if (bs->since_ms)
        ifm_enc_kuint(e, "since", bs->since_ms);
}

int ifm_board_status_decode(const ifm_doc *doc, ifm_board_status *bs, ifm_err *err)
{
    memset(bs, 0, sizeof *bs);
    const msgpack_object *root = doc->root;
    if (get_serial(root, bs->serial, err) || ifm_get_str(root, "worker", true, bs->worker, sizeof bs->worker, err) ||
        ifm_get_uint(root, "epoch", true, 0, UINT64_MAX, &bs->epoch, err) ||
        get_state(root, "state", &bs->state, err) ||
        ifm_get_str(root, "kind", false, bs->kind, sizeof bs->kind, err) < 0 ||
        ifm_get_str(root, "reason", false, bs->reason, sizeof bs->reason, err) < 0 ||
        ifm_get_bool(root, "exported", false, &bs->exported, err) < 0 ||
        ifm_get_uint(root, "since", false, 0, UINT64_MAX, &bs->since_ms, err) < 0)
        return -1;
    return 0;
}

static const char *const wop_names[IFM_WOP_COUNT] = { "reserve", "release", "reboot", "delete" };

void ifm_worker_cmd_encode(ifm_enc *e, const ifm_worker_cmd *c, const void *args, size_t args_len)
{
    bool reserve = c->op == IFM_WOP_RESERVE;
    ifm_enc_root(e, 2 + (reserve ? 3 : 0) + (reserve && args ? 1 : 0));
    ifm_enc_kstr(e, "op", wop_names[c->op]);
    ifm_enc_kstr(e, "serial", c->serial);
    if (reserve) {
        ifm_enc_kstr(e, "kind", c->kind);
        ifm_enc_kstr(e, "client", c->client);
        ifm_enc_kuint(e, "lease", c->lease);
        if (args) {
            ifm_enc_key(e, "args");
            ifm_enc_raw(e, args, args_len);
        }
    }
}

int ifm_worker_cmd_decode(const ifm_doc *doc, ifm_worker_cmd *c, ifm_err *err)
{
    memset(c, 0, sizeof *c);
    const msgpack_object *root = doc->root;
    char op[16];
    if (ifm_get_str(root, "op", true, op, sizeof op, err) || get_serial(root, c->serial, err))
        return -1;
    int found = -1;
    for (int i = 0; i < IFM_WOP_COUNT; i++)
        if (strcmp(op, wop_names[i]) == 0)
            found = i;
    if (found < 0) {
        ifm_err_set(err, "unknown worker op \"%s\"", op);
        return -1;
    }
    c->op = (ifm_worker_op)found;
    if (c->op == IFM_WOP_RESERVE) {
        if (ifm_get_str(root, "kind", true, c->kind, sizeof c->kind, err) ||
            ifm_get_str(root, "client", true, c->client, sizeof c->client, err) ||
            ifm_get_uint(root, "lease", true, 0, UINT64_MAX, &c->lease, err) ||
            ifm_get_map(root, "args", false, &c->args, err) < 0)
            return -1;
    }
    return 0;
}

void ifm_heartbeat_encode(ifm_enc *e, const ifm_heartbeat *h)
{
    ifm_enc_root(e, 4);
    ifm_enc_kstr(e, "worker", h->worker);
    ifm_enc_kuint(e, "epoch", h->epoch);
    ifm_enc_kuint(e, "instance", h->instance);
    ifm_enc_kuint(e, "seq", h->seq);
}

int ifm_heartbeat_decode(const ifm_doc *doc, ifm_heartbeat *h, ifm_err *err)
{
    memset(h, 0, sizeof *h);
    const msgpack_object *root = doc->root;
    if (ifm_get_str(root, "worker", true, h->worker, sizeof h->worker, err) ||
        ifm_get_uint(root, "epoch", true, 0, UINT64_MAX, &h->epoch, err) ||
        ifm_get_uint(root, "instance", true, 0, UINT64_MAX, &h->instance, err) ||
        ifm_get_uint(root, "seq", true, 0, UINT64_MAX, &h->seq, err))
        return -1;
    if (!ifm_name_valid(h->worker, IFM_NAME_MAX)) {
        ifm_err_set(err, "invalid worker name");
        return -1;
    }
    return 0;
}
