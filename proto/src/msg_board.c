/* Holder <-> board messages: evaluate commands and board events. */
#include <stdlib.h>
#include <string.h>

#include "icefarm/msg.h"

int ifm_board_cmd_decode(const ifm_doc *doc, ifm_board_cmd *c, ifm_err *err)
{
    memset(c, 0, sizeof *c);
    const msgpack_object *root = doc->root;
    if (ifm_get_str(root, "op", true, c->op, sizeof c->op, err))
        return -1;
    if (strcmp(c->op, "flash") == 0)
        return ifm_get_bin(root, "image", true, 512, IFM_MAX_IMAGE, &c->image, &c->image_len, err);
    if (strcmp(c->op, "unbind") == 0)
        return 0; /* kind usbip: end the current import (the export stays) */
    if (strcmp(c->op, "announce") == 0)
        return 0; /* kind usbip: send `usbip exported` again */
    if (strcmp(c->op, "evaluate") != 0) {
        ifm_err_set(err, "unknown board op \"%s\"", c->op);
        return -1;
    }
    const msgpack_object *files;
    if (ifm_get_str(root, "batch_id", true, c->batch_id, sizeof c->batch_id, err) ||
        ifm_get_map(root, "files", true, &files, err) || ifm_get_bool(root, "resend", false, &c->resend, err) < 0)
        return -1;
    size_t n = files->via.map.size;
    if (n == 0 || n > IFM_MAX_FILES) {
        ifm_err_set(err, "field \"files\" must hold 1..%d bitstreams, got %zu", IFM_MAX_FILES, n);
        return -1;
    }
    c->files = calloc(n, sizeof *c->files);
    if (!c->files) {
        ifm_err_set(err, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const msgpack_object_kv *kv = &files->via.map.ptr[i];
        ifm_file *f = &c->files[i];
        if (ifm_obj_str(&kv->key, "file id", true, f->id, sizeof f->id, err))
            return -1;
        if (kv->val.type != MSGPACK_OBJECT_BIN || kv->val.via.bin.size == 0) {
            ifm_err_set(err, "file \"%s\" must be non-empty bin", f->id);
            return -1;
        }
        f->data = (const uint8_t *)kv->val.via.bin.ptr;
        f->len = kv->val.via.bin.size;
        c->nfiles++;
    }
    return 0;
}

void ifm_board_cmd_free(ifm_board_cmd *c)
{
    free(c->files);
    c->files = NULL;
    c->nfiles = 0;
}

void ifm_board_cmd_encode(ifm_enc *e, const char *batch_id, const ifm_file *files, size_t n)
{
    ifm_board_cmd_encode_resend(e, batch_id, files, n, false);
}

void ifm_board_cmd_encode_resend(ifm_enc *e, const char *batch_id, const ifm_file *files, size_t n, bool resend)
{
    ifm_enc_root(e, 3 + resend);
    ifm_enc_kstr(e, "op", "evaluate");
    ifm_enc_kstr(e, "batch_id", batch_id);
    if (resend)
        ifm_enc_kbool(e, "resend", true);
    ifm_enc_key(e, "files");
    ifm_enc_map(e, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        ifm_enc_str(e, files[i].id);
        ifm_enc_bin(e, files[i].data, files[i].len);
    }
}

void ifm_board_flash_encode(ifm_enc *e, const uint8_t *image, size_t len)
{
    ifm_enc_root(e, 2);
    ifm_enc_kstr(e, "op", "flash");
    ifm_enc_kbin(e, "image", image, len);
}

void ifm_board_op_encode(ifm_enc *e, const char *op)
{
    ifm_enc_root(e, 1);
    ifm_enc_kstr(e, "op", op);
}

void ifm_event_encode(ifm_enc *e, const char *event, const char *serial, const char *reason, const char *batch_id)
{
    ifm_event_lease_encode(e, event, serial, reason, batch_id, 0);
}

void ifm_event_lease_encode(ifm_enc *e, const char *event, const char *serial, const char *reason, const char *batch_id,
                            uint64_t lease)
{
    bool has_batch = batch_id && *batch_id;
    ifm_enc_root(e, 2 + (reason != NULL) + has_batch + (lease != 0));
    ifm_enc_kstr(e, "event", event);
    if (lease)
        ifm_enc_kuint(e, "lease", lease);
    ifm_enc_kstr(e, "serial", serial);
    if (reason)
        ifm_enc_kstr(e, "reason", reason);
    if (has_batch)
        ifm_enc_kstr(e, "batch_id", batch_id);
}

void ifm_event_usbip_encode(ifm_enc *e, const char *event, const char *serial, const char *busid, const char *host,
                            uint32_t port, const char *reason, uint64_t lease)
{
    ifm_enc_root(e, 5 + (reason != NULL) + (lease != 0));
    ifm_enc_kstr(e, "event", event);
    if (lease)
        ifm_enc_kuint(e, "lease", lease);
    ifm_enc_kstr(e, "serial", serial);
    ifm_enc_kstr(e, "busid", busid);
    ifm_enc_kstr(e, "host", host);
    ifm_enc_kuint(e, "port", port);
    if (reason)
        ifm_enc_kstr(e, "reason", reason);
}

void ifm_event_simple_encode(ifm_enc *e, const char *event, const char *serial, const char *reason)
{
    ifm_event_encode(e, event, serial, reason, NULL);
}

static void encode_value(ifm_enc *e, const ifm_result *r)
{
    switch (r->type) {
    case IFM_VALUE_PULSES:
        ifm_enc_int(e, r->pulses);
        break;
    case IFM_VALUE_FITNESS:
        ifm_enc_double(e, r->fitness);
        break;
    case IFM_VALUE_WAVEFORM:
        ifm_enc_array(e, 2);
        ifm_enc_double(e, r->fitness);
        ifm_enc_array(e, (uint32_t)r->nsamples);
        for (size_t i = 0; i < r->nsamples; i++)
            ifm_enc_uint(e, r->samples[i]);
        break;
    case IFM_VALUE_FAILED:
        ifm_enc_map(e, 1);
        ifm_enc_kstr(e, "error", r->error);
        break;
    }
}

void ifm_event_error_encode(ifm_enc *e, const char *serial, const char *reason, const char *batch_id,
                            const char *client)
{
    if (!client || !*client) {
        ifm_event_encode(e, "error", serial, reason, batch_id);
        return;
    }
    bool has_batch = batch_id && *batch_id;
    ifm_enc_root(e, 3 + (reason != NULL) + has_batch);
    ifm_enc_kstr(e, "event", "error");
    ifm_enc_kstr(e, "serial", serial);
    if (reason)
        ifm_enc_kstr(e, "reason", reason);
    if (has_batch)
        ifm_enc_kstr(e, "batch_id", batch_id);
    ifm_enc_kstr(e, "client", client);
}

void ifm_event_results_encode(ifm_enc *e, const char *serial, const char *batch_id, const ifm_result *r, size_t n)
{
    ifm_event_results_lease_encode(e, serial, batch_id, 0, r, n);
}

void ifm_event_results_lease_encode(ifm_enc *e, const char *serial, const char *batch_id, uint64_t lease,
                                    const ifm_result *r, size_t n)
{
    ifm_enc_root(e, 4 + (lease != 0));
    ifm_enc_kstr(e, "event", "results");
    if (lease)
        ifm_enc_kuint(e, "lease", lease);
    ifm_enc_kstr(e, "serial", serial);
    ifm_enc_kstr(e, "batch_id", batch_id);
    ifm_enc_key(e, "results");
    ifm_enc_array(e, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        ifm_enc_array(e, 2);
        ifm_enc_str(e, r[i].id);
        encode_value(e, &r[i]);
    }
}

int ifm_event_decode(const ifm_doc *doc, ifm_event *ev, ifm_err *err)
{
    memset(ev, 0, sizeof *ev);
    const msgpack_object *root = doc->root;
    if (ifm_get_str(root, "event", true, ev->event, sizeof ev->event, err) ||
        ifm_get_str(root, "serial", false, ev->serial, sizeof ev->serial, err) < 0 ||
        ifm_get_str(root, "reason", false, ev->reason, sizeof ev->reason, err) < 0 ||
        ifm_get_uint(root, "lease", false, 0, UINT64_MAX, &ev->lease, err) < 0 ||
        ifm_get_uint(root, "until", false, 0, UINT64_MAX, &ev->until_ms, err) < 0)
        return -1;
    if (strcmp(ev->event, "results") == 0) {
        if (ifm_get_str(root, "batch_id", true, ev->batch_id, sizeof ev->batch_id, err) ||
            ifm_get_array(root, "results", true, 1u << 20, &ev->results, err))
            return -1;
    } else if (ifm_get_str(root, "batch_id", false, ev->batch_id, sizeof ev->batch_id, err) < 0) {
        return -1; /* `error` names the batch of the command it refused */
    }
    if (strncmp(ev->event, "usbip ", 6) == 0) {
        uint64_t port = 0;
        if (ifm_get_str(root, "busid", true, ev->busid, sizeof ev->busid, err) ||
            ifm_get_str(root, "host", true, ev->host, sizeof ev->host, err) ||
            ifm_get_uint(root, "port", true, 0, 65535, &port, err))
            return -1;
        ev->port = (uint32_t)port;
    }
    if (ifm_get_str(root, "client", false, ev->client, sizeof ev->client, err) < 0)
        return -1; /* `error`: whose command it refused */
    return 0;
}

static int as_double(const msgpack_object *o, double *d)
{
    switch (o->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        *d = o->via.f64;
        return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *d = (double)o->via.u64;
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *d = (double)o->via.i64;
        return 0;
    default:
        return -1;
    }
}

int ifm_event_result_at(const ifm_event *ev, size_t i, ifm_result *r, uint16_t *samples, size_t samples_cap,
                        ifm_err *err)
{
    memset(r, 0, sizeof *r);
    if (!ev->results || i >= ev->results->via.array.size) {
        ifm_err_set(err, "no result %zu", i);
        return -1;
    }
    const msgpack_object *pair = &ev->results->via.array.ptr[i];
    if (pair->type != MSGPACK_OBJECT_ARRAY || pair->via.array.size != 2) {
        ifm_err_set(err, "results[%zu] must be an [id, value] pair", i);
        return -1;
    }
    if (ifm_obj_str(&pair->via.array.ptr[0], "result id", true, r->id, sizeof r->id, err))
        return -1;
    const msgpack_object *v = &pair->via.array.ptr[1];
    switch (v->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (v->via.u64 > INT64_MAX) {
            ifm_err_set(err, "results[%zu] pulse count out of range", i);
            return -1;
        }
        r->type = IFM_VALUE_PULSES;
        r->pulses = (int64_t)v->via.u64;
        return 0;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        r->type = IFM_VALUE_FITNESS;
        r->fitness = v->via.f64;
        return 0;
    case MSGPACK_OBJECT_MAP:
        r->type = IFM_VALUE_FAILED;
        return ifm_get_str(v, "error", true, r->error, sizeof r->error, err);
    case MSGPACK_OBJECT_ARRAY: {
        if (v->via.array.size != 2 || as_double(&v->via.array.ptr[0], &r->fitness) ||
            v->via.array.ptr[1].type != MSGPACK_OBJECT_ARRAY) {
            ifm_err_set(err, "results[%zu] waveform must be [fitness, [samples]]", i);
            return -1;
        }
        const msgpack_object *s = &v->via.array.ptr[1];
        r->type = IFM_VALUE_WAVEFORM;
        r->nsamples = s->via.array.size;
        for (size_t k = 0; k < r->nsamples; k++) {
            const msgpack_object *x = &s->via.array.ptr[k];
            if (x->type != MSGPACK_OBJECT_POSITIVE_INTEGER || x->via.u64 > 65535) {
                ifm_err_set(err, "results[%zu] sample %zu is not a 16-bit unsigned integer", i, k);
                return -1;
            }
            if (samples && k < samples_cap)
                samples[k] = (uint16_t)x->via.u64;
        }
        r->samples = samples;
        if (r->nsamples > samples_cap)
            r->nsamples = samples ? samples_cap : 0;
        return 0;
    }
    default:
        ifm_err_set(err, "results[%zu] has an unsupported value type", i);
        return -1;
    }
}
