/* What control publishes for clients and dashboards: client events, leases,
 * its own state and the availability counts. */
#include <stdbool.h>
#include <string.h>

#include "icefarm/msg.h"

void ifm_client_event_encode(ifm_enc *e, const char *event, const char *serial, uint64_t until_ms, const char *reason)
{
    bool has_reason = reason && reason[0];
    ifm_enc_root(e, 2 + (until_ms != 0) + has_reason);
    ifm_enc_kstr(e, "event", event);
    ifm_enc_kstr(e, "serial", serial);
    if (until_ms)
        ifm_enc_kuint(e, "until", until_ms);
    if (has_reason)
        ifm_enc_kstr(e, "reason", reason);
}

void ifm_presence_encode(ifm_enc *e)
{
    ifm_enc_root(e, 1);
    ifm_enc_kstr(e, "state", "online");
}

int ifm_presence_decode(const ifm_doc *doc, ifm_err *err)
{
    char state[16];
    if (ifm_get_str(doc->root, "state", true, state, sizeof state, err))
        return -1;
    if (strcmp(state, "online") != 0) {
        ifm_err_set(err, "presence state must be \"online\", got \"%s\"", state);
        return -1;
    }
    return 0;
}

void ifm_lease_info_encode(ifm_enc *e, const ifm_lease_info *l)
{
    ifm_enc_root(e, l->tag[0] ? 7 : 6);
    ifm_enc_kstr(e, "serial", l->serial);
    ifm_enc_kstr(e, "client", l->client);
    ifm_enc_kstr(e, "kind", l->kind);
    ifm_enc_kstr(e, "worker", l->worker);
    ifm_enc_kuint(e, "lease", l->lease);
    ifm_enc_kuint(e, "until", l->until_ms);
    if (l->tag[0])
        ifm_enc_kstr(e, "tag", l->tag);
}

int ifm_lease_info_decode(const ifm_doc *doc, ifm_lease_info *l, ifm_err *err)
{
    memset(l, 0, sizeof *l);
    const msgpack_object *r = doc->root;
    if (ifm_get_str(r, "serial", true, l->serial, sizeof l->serial, err) ||
        ifm_get_str(r, "client", true, l->client, sizeof l->client, err) ||
        ifm_get_str(r, "kind", true, l->kind, sizeof l->kind, err) ||
        ifm_get_str(r, "worker", true, l->worker, sizeof l->worker, err) ||
        ifm_get_uint(r, "lease", true, 0, UINT64_MAX, &l->lease, err) ||
        ifm_get_uint(r, "until", true, 0, UINT64_MAX, &l->until_ms, err) ||
        ifm_get_str(r, "tag", false, l->tag, sizeof l->tag, err) < 0)
        return -1;
    return 0;
}

void ifm_ctl_state_encode(ifm_enc *e, bool online, uint64_t epoch)
{
    ifm_enc_root(e, 2);
    ifm_enc_kstr(e, "state", online ? "online" : "offline");
    ifm_enc_kuint(e, "epoch", epoch);
}

void ifm_available_encode(ifm_enc *e, const ifm_available *a)
{
    ifm_enc_root(e, 2);
    ifm_enc_kuint(e, "amount", a->amount);
    ifm_enc_key(e, "kinds");
    ifm_enc_map(e, (uint32_t)a->nkinds);
    for (size_t i = 0; i < a->nkinds; i++) {
        ifm_enc_str(e, a->kinds[i]);
        ifm_enc_uint(e, a->counts[i]);
    }
}

int ifm_available_decode(const ifm_doc *doc, ifm_available *a, ifm_err *err)
{
    memset(a, 0, sizeof *a);
    uint64_t amount;
    const msgpack_object *kinds;
    if (ifm_get_uint(doc->root, "amount", true, 0, UINT32_MAX, &amount, err) ||
        ifm_get_map(doc->root, "kinds", true, &kinds, err))
        return -1;
    a->amount = (uint32_t)amount;
    if (kinds->via.map.size > IFM_MAX_KINDS) {
        ifm_err_set(err, "too many kinds");
        return -1;
    }
    for (uint32_t i = 0; i < kinds->via.map.size; i++) {
        const msgpack_object_kv *kv = &kinds->via.map.ptr[i];
        if (ifm_obj_str(&kv->key, "kind", true, a->kinds[i], IFM_KIND_MAX, err))
            return -1;
        if (kv->val.type != MSGPACK_OBJECT_POSITIVE_INTEGER || kv->val.via.u64 > UINT32_MAX) {
            ifm_err_set(err, "count for kind \"%s\" must be an unsigned integer", a->kinds[i]);
            return -1;
        }
        a->counts[i] = (uint32_t)kv->val.via.u64;
        a->nkinds++;
    }
    return 0;
}
