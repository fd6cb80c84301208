/* The request verbs. Each request arrives on icefarm/ctl/req/<verb> with a
 * Response Topic and Correlation Data; each gets exactly one reply. The caller's
 * identity is the IFM_PROP_CLIENT user property (set by the broker plugin in a
 * secured farm), never a name inside the payload. */
#include <mqtt_protocol.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "icefarm/log.h"

static void reply(ctl *c, const ifm_mqtt_msg *msg, const ifm_enc *e)
{
    if (ifm_mqtt_reply(c->mqtt, msg, ifm_enc_data(e), ifm_enc_size(e)))
        IFM_WARN("request on %s had no response topic; reply dropped", msg->topic);
}

static void reply_error(ctl *c, const ifm_mqtt_msg *msg, uint32_t code, const char *why)
{
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_reply_begin(&e, code, why, 0);
    reply(c, msg, &e);
    ifm_enc_free(&e);
}

static uint64_t lease_duration(const ctl *c, uint64_t asked_s)
{
    uint64_t d = asked_s ? asked_s : c->cfg.lease_default_s;
    return d > c->cfg.lease_max_s ? c->cfg.lease_max_s : d;
}

/* The store takes serials as an array of pointers. */
static const char **serial_ptrs(const ifm_ctl_req *req)
{
    const char **s = calloc(req->nserials ? req->nserials : 1, sizeof *s);
    for (size_t i = 0; s && i < req->nserials; i++)
        s[i] = req->serials[i];
    return s;
}

static void encode_leases(ifm_enc *e, const char *key, const ctl_lease_list *l)
{
    ifm_enc_key(e, key);
    ifm_enc_array(e, (uint32_t)l->n);
    for (size_t i = 0; i < l->n; i++)
        ifm_enc_str(e, l->v[i].serial);
}

static void do_available(ctl *c, const ifm_mqtt_msg *msg, const ifm_ctl_req *req, bool list)
{
    uint32_t n = 0;
    for (size_t i = 0; i < c->nboards; i++)
        n += ctl_board_allocatable(c, c->boards[i], req->kind);
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_reply_begin(&e, 200, NULL, 1);
    if (!list) {
        ifm_enc_kuint(&e, "amount", n);
    } else {
        ifm_enc_key(&e, "serials");
        ifm_enc_array(&e, n);
        for (size_t i = 0; i < c->nboards; i++)
            if (ctl_board_allocatable(c, c->boards[i], req->kind))
                ifm_enc_str(&e, c->boards[i]->serial);
    }
    reply(c, msg, &e);
    ifm_enc_free(&e);
}

static void do_reserve(ctl *c, const ifm_mqtt_msg *msg, const char *client, const ifm_ctl_req *req)
{
    ifm_enc args;
    ifm_enc_init(&args);
    if (req->args)
        ifm_obj_pack(req->args, &args);
    if (ifm_enc_size(&args) > IFM_MAX_ARGS) {
        reply_error(c, msg, 400, "reserve args are larger than 4096 bytes");
        ifm_enc_free(&args);
        return;
    }
    uint64_t duration = lease_duration(c, req->duration_s);
    ifm_enc e;
    ifm_enc_init(&e);
    char why[200] = "";
    const ctl_grant_req g = { client,   req->kind, (const uint8_t *)ifm_enc_data(&args), ifm_enc_size(&args),
                              duration, req->tag };
    uint32_t code = ctl_grant_any(c, &g, req->amount, &e, why, sizeof why);
    if (code == 200) {
        reply(c, msg, &e);
    } else if (code == 409 && req->wait_ms > 0) {
        if (ctl_waiter_add(c, msg, client, req, (const uint8_t *)ifm_enc_data(&args), ifm_enc_size(&args), duration))
            reply_error(c, msg, 500, "cannot queue the request");
    } else {
        reply_error(c, msg, code, why);
    }
    ifm_enc_free(&e);
    ifm_enc_free(&args);
}

static void do_reserve_serials(ctl *c, const ifm_mqtt_msg *msg, const char *client, const ifm_ctl_req *req)
{
    if (req->nserials == 0) {
        reply_error(c, msg, 400, "field \"serials\" must name at least one board");
        return;
    }
    ifm_enc args, e;
    ifm_enc_init(&args);
    ifm_enc_init(&e);
    if (req->args)
        ifm_obj_pack(req->args, &args);
    char why[200] = "out of memory";
    const char **serials = serial_ptrs(req);
    const ctl_grant_req g = { client,
                              req->kind,
                              (const uint8_t *)ifm_enc_data(&args),
                              ifm_enc_size(&args),
                              lease_duration(c, req->duration_s),
                              req->tag };
    uint32_t code = 500;
    if (ifm_enc_size(&args) > IFM_MAX_ARGS) {
        code = 400;
        snprintf(why, sizeof why, "reserve args are larger than 4096 bytes");
    } else if (serials) {
        code = ctl_grant_serials(c, &g, serials, req->nserials, &e, why, sizeof why);
    }
    if (code == 200)
        reply(c, msg, &e);
    else
        reply_error(c, msg, code, why);
    free(serials);
    ifm_enc_free(&e);
    ifm_enc_free(&args);
}

/* extend moves each lease's end to the later of its end and now + duration
 * (never earlier), or exactly there with `set` (PROTOCOL.md 6.5). The reply
 * says each lease's new end and whether the duration was capped. */
static void do_extend(ctl *c, const ifm_mqtt_msg *msg, const char *client, const ifm_ctl_req *req, bool all)
{
    uint64_t duration = lease_duration(c, req->duration_s);
    bool capped = req->duration_s > c->cfg.lease_max_s;
    uint64_t until = ifm_wall_ms() + duration * 1000;
    ctl_lease_list out = CTL_LEASE_LIST_INIT;
    char err[200];
    int rc;
    if (all) {
        rc = ctl_store_extend_all(c->store, client, until, req->set, &out, err, sizeof err);
    } else {
        const char **s = serial_ptrs(req);
        rc = s ? ctl_store_extend(c->store, client, s, req->nserials, until, req->set, &out, err, sizeof err)
               : CTL_STORE_ENOMEM;
        free(s);
    }
    if (rc != CTL_STORE_OK) {
        reply_error(c, msg, 500, err);
        ctl_lease_list_free(&out);
        return;
    }
    for (size_t i = 0; i < out.n; i++) {
        ctl_board *b = ctl_board_find(c, out.v[i].serial);
        bool moved = b && b->leased && b->until_ms != out.v[i].until_ms;
        if (moved) {
            b->until_ms = out.v[i].until_ms;
            b->set_ms = ifm_wall_ms();
            b->warned = out.v[i].warned;
            ctl_lease_arm(c, b);
            ctl_publish_lease(c, b);
        }
        IFM_INFO("serial=%s client=%s %s until %llu", out.v[i].serial, client, moved ? "extended" : "kept",
                 (unsigned long long)out.v[i].until_ms);
    }
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_reply_begin(&e, 200, NULL, 5);
    encode_leases(&e, "serials", &out);
    ifm_enc_kuint(&e, "until", until);
    ifm_enc_key(&e, "leases");
    ifm_enc_array(&e, (uint32_t)out.n);
    for (size_t i = 0; i < out.n; i++) {
        ifm_enc_map(&e, 2);
        ifm_enc_kstr(&e, "serial", out.v[i].serial);
        ifm_enc_kuint(&e, "until", out.v[i].until_ms);
    }
    ifm_enc_kuint(&e, "duration_s", duration);
    ifm_enc_kbool(&e, "capped", capped);
    reply(c, msg, &e);
    ifm_enc_free(&e);
    ctl_lease_list_free(&out);
}

static void do_end(ctl *c, const ifm_mqtt_msg *msg, const char *client, const ifm_ctl_req *req, bool all)
{
    ctl_lease_list out = CTL_LEASE_LIST_INIT;
    char err[200];
    int rc;
    if (all) {
        rc = ctl_store_end_all(c->store, client, &out, err, sizeof err);
    } else {
        const char **s = serial_ptrs(req);
        rc = s ? ctl_store_end(c->store, client, s, req->nserials, &out, err, sizeof err) : CTL_STORE_ENOMEM;
        free(s);
    }
    if (rc != CTL_STORE_OK) {
        reply_error(c, msg, 500, err);
        ctl_lease_list_free(&out);
        return;
    }
    for (size_t i = 0; i < out.n; i++)
        ctl_lease_ended(c, &out.v[i], false, "ended by the holder");
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_reply_begin(&e, 200, NULL, 1);
    encode_leases(&e, "serials", &out);
    reply(c, msg, &e);
    ifm_enc_free(&e);
    ctl_lease_list_free(&out);
    ctl_publish_available(c, false);
    ctl_waiters_serve(c);
}

/* The icefarm-role user property (secured farm only: the broker plugin sets it
 * on every request). 0 with the value in out, -1 if absent. */
static int request_role(const ifm_mqtt_msg *msg, char *out, size_t cap)
{
    char *name = NULL, *value = NULL;
    const mosquitto_property *p =
        mosquitto_property_read_string_pair(msg->props, MQTT_PROP_USER_PROPERTY, &name, &value, false);
    while (p) {
        bool hit = strcmp(name, IFM_PROP_ROLE) == 0;
        if (hit)
            snprintf(out, cap, "%s", value);
        free(name);
        free(value);
        name = value = NULL;
        if (hit)
            return 0;
        p = mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &name, &value, true);
    }
    return -1;
}

/* reboot and delete act on boards; who may (proto/PROTOCOL.md section 2):
 *   reboot  the holder; in a secured farm also an operator
 *   delete  anonymous farm: a free board or one the client holds;
 *           secured farm: an operator only
 * A request with an icefarm-role property comes through the secured farm's
 * plugin (which strips any a client sends). In the anonymous farm a client could
 * forge it, but there anyone may already claim any name, the holder's too. */
static void do_board_op(ctl *c, const ifm_mqtt_msg *msg, const char *client, const ifm_ctl_req *req, ifm_worker_op op)
{
    char why[240], role[32] = "";
    bool secured = request_role(msg, role, sizeof role) == 0;
    bool is_op = secured && strcmp(role, "operator") == 0;
    bool reboot = op == IFM_WOP_REBOOT;
    if (!reboot && secured && !is_op) {
        reply_error(c, msg, 403, "only an operator may delete boards in this farm");
        return;
    }
    for (size_t i = 0; i < req->nserials; i++) {
        const ctl_board *b = ctl_board_find(c, req->serials[i]);
        if (!b || !b->known) {
            snprintf(why, sizeof why, "unknown serial %s", req->serials[i]);
            reply_error(c, msg, 404, why);
            return;
        }
        if (b->leased && strcmp(b->client, client) != 0 && !is_op) {
            snprintf(why, sizeof why, "serial %s is reserved by another client", b->serial);
            reply_error(c, msg, 403, why);
            return;
        }
        if (reboot && !b->leased) {
            snprintf(why, sizeof why, "serial %s is not reserved %s(a reboot reflashes a lease's firmware)", b->serial,
                     is_op ? "" : "by you ");
            reply_error(c, msg, 403, why);
            return;
        }
    }
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_reply_begin(&e, 200, NULL, 1);
    ifm_enc_key(&e, "serials");
    ifm_enc_array(&e, (uint32_t)req->nserials);
    for (size_t i = 0; i < req->nserials; i++) {
        const ctl_board *b = ctl_board_find(c, req->serials[i]);
        bool others = b->leased && strcmp(b->client, client) != 0;
        if (others)
            IFM_INFO("serial=%s client=%s operator %s of a board held by %s", b->serial, client,
                     reboot ? "reboot" : "delete", b->client);
        if (!reboot && b->leased) {
            /* Deleting a leased board ends its lease first: the holder hears
             * "reservation end" (whoever deleted it). */
            const char *serial = b->serial;
            char holder[IFM_NAME_MAX];
            snprintf(holder, sizeof holder, "%s", b->client);
            ctl_lease_list ended = CTL_LEASE_LIST_INIT;
            char err[200];
            if (ctl_store_end(c->store, holder, &serial, 1, &ended, err, sizeof err) == CTL_STORE_OK)
                for (size_t k = 0; k < ended.n; k++)
                    ctl_lease_ended(c, &ended.v[k], false, others ? "deleted by an operator" : "deleted by the holder");
            ctl_lease_list_free(&ended);
        }
        ctl_send_worker_cmd(c, b->worker, op, b->serial, NULL, NULL, 0, NULL, 0);
        ifm_enc_str(&e, b->serial);
        IFM_INFO("serial=%s client=%s %s requested", b->serial, client, reboot ? "reboot" : "delete");
    }
    reply(c, msg, &e);
    ifm_enc_free(&e);
}

static void do_status(ctl *c, const ifm_mqtt_msg *msg)
{
    size_t nleases = 0;
    for (size_t i = 0; i < c->nboards; i++)
        nleases += c->boards[i]->leased;
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_reply_begin(&e, 200, NULL, 3);
    ifm_enc_key(&e, "workers");
    ifm_enc_array(&e, (uint32_t)c->nworkers);
    for (size_t i = 0; i < c->nworkers; i++) {
        const ctl_worker *w = &c->workers[i];
        ifm_enc_map(&e, 6);
        ifm_enc_kstr(&e, "id", w->id);
        ifm_enc_kbool(&e, "online", w->online);
        ifm_enc_kstr(&e, "state", ctl_worker_state_name(w));
        ifm_enc_kuint(&e, "instance", w->instance);
        ifm_enc_kuint(&e, "epoch", w->epoch);
        ifm_enc_key(&e, "kinds");
        ifm_enc_array(&e, (uint32_t)w->nkinds);
        for (size_t k = 0; k < w->nkinds; k++)
            ifm_enc_str(&e, w->kinds[k]);
    }
    ifm_enc_key(&e, "boards");
    ifm_enc_array(&e, (uint32_t)c->nboards);
    for (size_t i = 0; i < c->nboards; i++) {
        ctl_board *b = c->boards[i];
        ifm_enc_map(&e, 6);
        ifm_enc_kstr(&e, "serial", b->serial);
        ifm_enc_kstr(&e, "worker", b->worker);
        ifm_enc_kstr(&e, "state", ifm_board_state_name(b->state));
        ifm_enc_kstr(&e, "kind", b->kind);
        ifm_enc_kstr(&e, "reason", b->reason);
        ifm_enc_kbool(&e, "available", ctl_board_allocatable(c, b, NULL));
    }
    ifm_enc_key(&e, "leases");
    ifm_enc_array(&e, (uint32_t)nleases);
    for (size_t i = 0; i < c->nboards; i++) {
        const ctl_board *b = c->boards[i];
        if (!b->leased)
            continue;
        ifm_enc_map(&e, 6);
        ifm_enc_kstr(&e, "serial", b->serial);
        ifm_enc_kstr(&e, "client", b->client);
        ifm_enc_kstr(&e, "kind", b->lease_kind);
        ifm_enc_kuint(&e, "lease", b->lease_id);
        ifm_enc_kuint(&e, "until", b->until_ms);
        ifm_enc_kstr(&e, "tag", b->lease_tag);
    }
    reply(c, msg, &e);
    ifm_enc_free(&e);
}

static void count_ended(const ctl_ended *e, void *arg)
{
    (*(size_t *)arg)++;
}

static void encode_ended(const ctl_ended *x, void *arg)
{
    ifm_enc *e = arg;
    ifm_enc_map(e, 5);
    ifm_enc_kstr(e, "serial", x->serial);
    ifm_enc_kuint(e, "lease", x->lease);
    ifm_enc_kstr(e, "reason", x->reason);
    ifm_enc_kbool(e, "failed", x->failed);
    ifm_enc_kuint(e, "at", x->at_ms);
}

/* "My leases": what a holder asks after a reconnect (PROTOCOL.md 6.10). */
static void do_leases(ctl *c, const ifm_mqtt_msg *msg, const char *client)
{
    size_t n = 0, nended = 0;
    for (size_t i = 0; i < c->nboards; i++)
        n += c->boards[i]->leased && strcmp(c->boards[i]->client, client) == 0;
    ctl_ended_each(c, client, count_ended, &nended);
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_reply_begin(&e, 200, NULL, 2);
    ifm_enc_key(&e, "leases");
    ifm_enc_array(&e, (uint32_t)n);
    for (size_t i = 0; i < c->nboards; i++) {
        ctl_board *b = c->boards[i];
        if (!b->leased || strcmp(b->client, client) != 0)
            continue;
        const ctl_worker *w = ctl_board_worker(c, b);
        ifm_enc_map(&e, 7);
        ifm_enc_kstr(&e, "serial", b->serial);
        ifm_enc_kstr(&e, "worker", b->worker);
        ifm_enc_kstr(&e, "kind", b->lease_kind);
        ifm_enc_kuint(&e, "lease", b->lease_id);
        ifm_enc_kuint(&e, "until", b->until_ms);
        ifm_enc_kstr(&e, "state", b->known ? ifm_board_state_name(b->state) : "unknown");
        ifm_enc_kstr(&e, "worker_state", w ? ctl_worker_state_name(w) : "offline");
    }
    ifm_enc_key(&e, "ended");
    ifm_enc_array(&e, (uint32_t)nended);
    ctl_ended_each(c, client, encode_ended, &e);
    reply(c, msg, &e);
    ifm_enc_free(&e);
}

static void do_cancel(ctl *c, const ifm_mqtt_msg *msg, const char *client, const ifm_ctl_req *req)
{
    size_t n = ctl_waiter_cancel(c, client, req->corr, req->corr_len);
    if (!n) {
        reply_error(c, msg, 404, "no waiting reserve of yours carries this correlation data");
        return;
    }
    ifm_enc e;
    ifm_enc_init(&e);
    ifm_reply_begin(&e, 200, NULL, 1);
    ifm_enc_kuint(&e, "cancelled", n);
    reply(c, msg, &e);
    ifm_enc_free(&e);
}

static void on_request(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    ctl *c = arg;
    char verb_name[32];
    if (ifm_topic_level(msg->topic, 3, verb_name, sizeof verb_name)) {
        reply_error(c, msg, 400, "malformed request topic");
        return;
    }
    int verb = ifm_verb_parse(verb_name);
    if (verb < 0) {
        char why[96];
        snprintf(why, sizeof why, "unknown verb \"%s\"", verb_name);
        reply_error(c, msg, 400, why);
        return;
    }
    char client[IFM_NAME_MAX];
    if (ifm_mqtt_msg_client(msg, client, sizeof client)) {
        reply_error(c, msg, 400, "request carries no valid icefarm-client user property");
        return;
    }
    ifm_doc doc;
    ifm_err err = { "" };
    ifm_ctl_req req;
    memset(&req, 0, sizeof req);
    if (ifm_doc_parse(&doc, msg->payload, msg->len, &err) || ifm_ctl_req_decode(&doc, (ifm_verb)verb, &req, &err)) {
        IFM_WARN("client=%s bad %s request: %s", client, verb_name, err.msg);
        reply_error(c, msg, 400, err.msg);
        goto out;
    }
    switch ((ifm_verb)verb) {
    case IFM_VERB_AVAILABLE:
        do_available(c, msg, &req, false);
        break;
    case IFM_VERB_DEVICES:
        do_available(c, msg, &req, true);
        break;
    case IFM_VERB_RESERVE:
        do_reserve(c, msg, client, &req);
        break;
    case IFM_VERB_RESERVE_SERIALS:
        do_reserve_serials(c, msg, client, &req);
        break;
    case IFM_VERB_EXTEND:
        do_extend(c, msg, client, &req, false);
        break;
    case IFM_VERB_EXTEND_ALL:
        do_extend(c, msg, client, &req, true);
        break;
    case IFM_VERB_END:
        do_end(c, msg, client, &req, false);
        break;
    case IFM_VERB_END_ALL:
        do_end(c, msg, client, &req, true);
        break;
    case IFM_VERB_REBOOT:
        do_board_op(c, msg, client, &req, IFM_WOP_REBOOT);
        break;
    case IFM_VERB_DELETE:
        do_board_op(c, msg, client, &req, IFM_WOP_DELETE);
        break;
    case IFM_VERB_STATUS:
        do_status(c, msg);
        break;
    case IFM_VERB_LEASES:
        do_leases(c, msg, client);
        break;
    case IFM_VERB_CANCEL:
        do_cancel(c, msg, client, &req);
        break;
    default:
        reply_error(c, msg, 400, "unsupported verb");
        break;
    }
out:
    ifm_ctl_req_free(&req);
    ifm_doc_free(&doc);
}

void ctl_on_request(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    double t0 = ctl_metrics_clock();
    on_request(m, msg, arg);
    char verb[32];
    if (ifm_topic_level(msg->topic, 3, verb, sizeof verb))
        verb[0] = '\0';
    ctl_metrics_request(arg, verb, ctl_metrics_clock() - t0);
}
