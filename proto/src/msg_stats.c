/* What dashboards read about the farm as a whole: a worker's counters
 * (icefarm/worker/<id>/stats), the farm's aggregate that control publishes
 * (icefarm/farm/stats), and control's verdict on each worker
 * (icefarm/farm/worker/<id>). */
#include <string.h>

#include "icefarm/msg.h"

void ifm_worker_stats_encode(ifm_enc *e, const ifm_worker_stats *s)
{
    ifm_enc_root(e, 4);
    ifm_enc_kstr(e, "worker", s->worker);
    ifm_enc_kuint(e, "instance", s->instance);
    ifm_enc_kuint(e, "evaluations", s->evaluations);
    ifm_enc_kuint(e, "failures", s->failures);
}

int ifm_worker_stats_decode(const ifm_doc *doc, ifm_worker_stats *s, ifm_err *err)
{
    memset(s, 0, sizeof *s);
    const msgpack_object *r = doc->root;
    if (ifm_get_str(r, "worker", true, s->worker, sizeof s->worker, err) ||
        ifm_get_uint(r, "instance", true, 1, UINT64_MAX, &s->instance, err) ||
        ifm_get_uint(r, "evaluations", true, 0, UINT64_MAX, &s->evaluations, err) ||
        ifm_get_uint(r, "failures", true, 0, UINT64_MAX, &s->failures, err))
        return -1;
    if (!ifm_name_valid(s->worker, IFM_NAME_MAX)) {
        ifm_err_set(err, "field \"worker\" is not a valid worker name");
        return -1;
    }
    if (s->failures > s->evaluations) {
        ifm_err_set(err, "%llu failures out of %llu evaluations", (unsigned long long)s->failures,
                    (unsigned long long)s->evaluations);
        return -1;
    }
    return 0;
}

static void enc_counts(ifm_enc *e, const char *key, const ifm_farm_stats *s, const uint32_t *v)
{
    ifm_enc_key(e, key);
    ifm_enc_map(e, (uint32_t)s->nkinds);
    for (size_t i = 0; i < s->nkinds; i++) {
        ifm_enc_str(e, s->kinds[i]);
        ifm_enc_uint(e, v[i]);
    }
}

static void enc_series(ifm_enc *e, const char *key, const uint32_t *v, size_t n)
{
    ifm_enc_key(e, key);
    ifm_enc_array(e, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        ifm_enc_uint(e, v[i]);
}

void ifm_farm_stats_encode(ifm_enc *e, const ifm_farm_stats *s)
{
    ifm_enc_root(e, 7);
    ifm_enc_kuint(e, "epoch", s->epoch);
    ifm_enc_kuint(e, "time", s->time_ms);
    ifm_enc_kuint(e, "evaluations", s->evaluations);
    ifm_enc_kuint(e, "failures", s->failures);
    enc_counts(e, "waiting", s, s->waiting);
    enc_counts(e, "waiting_boards", s, s->waiting_boards);
    ifm_enc_key(e, "history");
    ifm_enc_map(e, 4);
    ifm_enc_kuint(e, "start", s->history_start_ms);
    ifm_enc_kuint(e, "step", s->bucket_ms);
    enc_series(e, "evaluations", s->hist_evaluations, s->nhistory);
    enc_series(e, "failures", s->hist_failures, s->nhistory);
}

/* A map kind -> uint32 into s->kinds (the first map fixes the kinds' order; the
 * second must name the same kinds). */
static int dec_counts(const msgpack_object *root, const char *key, ifm_farm_stats *s, uint32_t *v, bool first,
                      ifm_err *err)
{
    const msgpack_object *m;
    if (ifm_get_map(root, key, true, &m, err))
        return -1;
    if (m->via.map.size > IFM_MAX_KINDS) {
        ifm_err_set(err, "field \"%s\" has %u kinds, at most %d allowed", key, m->via.map.size, IFM_MAX_KINDS);
        return -1;
    }
    if (!first && m->via.map.size != s->nkinds) {
        ifm_err_set(err, "field \"%s\" names %u kinds, \"waiting\" %zu", key, m->via.map.size, s->nkinds);
        return -1;
    }
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object_kv *kv = &m->via.map.ptr[i];
        char kind[IFM_KIND_MAX];
        if (ifm_obj_str(&kv->key, "kind", true, kind, sizeof kind, err))
            return -1;
        if (kv->val.type != MSGPACK_OBJECT_POSITIVE_INTEGER || kv->val.via.u64 > UINT32_MAX) {
            ifm_err_set(err, "field \"%s\": the count for kind \"%s\" must be an unsigned 32-bit integer", key, kind);
            return -1;
        }
        size_t at = i;
        if (first) {
            snprintf(s->kinds[i], IFM_KIND_MAX, "%s", kind);
            s->nkinds++;
        } else {
            for (at = 0; at < s->nkinds && strcmp(s->kinds[at], kind) != 0; at++)
                ;
            if (at == s->nkinds) {
                ifm_err_set(err, "field \"%s\" names kind \"%s\", which \"waiting\" does not", key, kind);
                return -1;
            }
        }
        v[at] = (uint32_t)kv->val.via.u64;
    }
    return 0;
}

static int dec_series(const msgpack_object *h, const char *key, uint32_t *v, size_t *n, ifm_err *err)
{
    const msgpack_object *a;
    if (ifm_get_array(h, key, true, IFM_STATS_BUCKETS, &a, err))
        return -1;
    for (uint32_t i = 0; i < a->via.array.size; i++) {
        const msgpack_object *o = &a->via.array.ptr[i];
        if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > UINT32_MAX) {
            ifm_err_set(err, "history \"%s\"[%u] must be an unsigned 32-bit integer", key, i);
            return -1;
        }
        v[i] = (uint32_t)o->via.u64;
    }
    *n = a->via.array.size;
    return 0;
}

int ifm_farm_stats_decode(const ifm_doc *doc, ifm_farm_stats *s, ifm_err *err)
{
    memset(s, 0, sizeof *s);
    const msgpack_object *r = doc->root, *h;
    size_t nf = 0;
    if (ifm_get_uint(r, "epoch", true, 0, UINT64_MAX, &s->epoch, err) ||
        ifm_get_uint(r, "time", true, 0, UINT64_MAX, &s->time_ms, err) ||
        ifm_get_uint(r, "evaluations", true, 0, UINT64_MAX, &s->evaluations, err) ||
        ifm_get_uint(r, "failures", true, 0, UINT64_MAX, &s->failures, err) ||
        dec_counts(r, "waiting", s, s->waiting, true, err) ||
        dec_counts(r, "waiting_boards", s, s->waiting_boards, false, err) || ifm_get_map(r, "history", true, &h, err) ||
        ifm_get_uint(h, "start", true, 0, UINT64_MAX, &s->history_start_ms, err) ||
        ifm_get_uint(h, "step", true, 1, 3600000, &s->bucket_ms, err) ||
        dec_series(h, "evaluations", s->hist_evaluations, &s->nhistory, err) ||
        dec_series(h, "failures", s->hist_failures, &nf, err))
        return -1;
    if (nf != s->nhistory) {
        ifm_err_set(err, "history has %zu evaluation buckets but %zu failure buckets", s->nhistory, nf);
        return -1;
    }
    if (s->failures > s->evaluations) {
        ifm_err_set(err, "%llu failures out of %llu evaluations", (unsigned long long)s->failures,
                    (unsigned long long)s->evaluations);
        return -1;
    }
    return 0;
}

static const char *const live_names[] = { "online", "hung", "reconnecting", "offline" };

const char *ifm_live_state_name(ifm_live_state s)
{
    return (unsigned)s < sizeof live_names / sizeof *live_names ? live_names[s] : "offline";
}

void ifm_worker_live_encode(ifm_enc *e, const ifm_worker_live *l)
{
    ifm_enc_root(e, l->until_ms ? 7 : 6);
    ifm_enc_kstr(e, "worker", l->worker);
    ifm_enc_kstr(e, "state", ifm_live_state_name(l->state));
    ifm_enc_kuint(e, "epoch", l->epoch);
    ifm_enc_kuint(e, "ctl_epoch", l->ctl_epoch);
    ifm_enc_kuint(e, "since", l->since_ms);
    ifm_enc_kstr(e, "reason", l->reason);
    if (l->until_ms)
        ifm_enc_kuint(e, "until", l->until_ms);
}

int ifm_worker_live_decode(const ifm_doc *doc, ifm_worker_live *l, ifm_err *err)
{
    memset(l, 0, sizeof *l);
    const msgpack_object *r = doc->root;
    char state[16];
    if (ifm_get_str(r, "worker", true, l->worker, sizeof l->worker, err) ||
        ifm_get_str(r, "state", true, state, sizeof state, err) ||
        ifm_get_uint(r, "epoch", true, 0, UINT64_MAX, &l->epoch, err) ||
        ifm_get_uint(r, "ctl_epoch", true, 0, UINT64_MAX, &l->ctl_epoch, err) ||
        ifm_get_uint(r, "since", true, 0, UINT64_MAX, &l->since_ms, err) ||
        ifm_get_str(r, "reason", false, l->reason, sizeof l->reason, err) < 0 ||
        ifm_get_uint(r, "until", false, 0, UINT64_MAX, &l->until_ms, err) < 0)
        return -1;
    if (!ifm_name_valid(l->worker, IFM_NAME_MAX)) {
        ifm_err_set(err, "field \"worker\" is not a valid worker name");
        return -1;
    }
    size_t i = 0;
    while (i < sizeof live_names / sizeof *live_names && strcmp(state, live_names[i]) != 0)
        i++;
    if (i == sizeof live_names / sizeof *live_names) {
        ifm_err_set(err, "unknown worker liveness \"%s\"", state);
        return -1;
    }
    l->state = (ifm_live_state)i;
    return 0;
}
