/* What every icefarm-cli command shares: connecting, calling control, errors in
 * human or --json form, and msgpack <-> JSON. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

int cli_error(const cli_opts *o, int code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (o->json) {
        json_t *j = json_pack("{s:b, s:i, s:s}", "ok", 0, "exit", code, "error", msg);
        cli_print_json(j);
        json_decref(j);
    }
    fprintf(stderr, "icefarm-cli: %s\n", msg);
    return code;
}

icefarm *cli_connect(const cli_opts *o, int *exit_code)
{
    char err[512];
    icefarm *f = icefarm_connect(&o->farm, err, sizeof err);
    if (!f)
        *exit_code = cli_error(o, CLI_UNREACHABLE, "%s", err);
    return f;
}

int cli_call(icefarm *f, const cli_opts *o, const ifm_ctl_req *req, const void *args, size_t args_len,
             icefarm_reply *r)
{
    char err[512];
    if (icefarm_call(f, req, args, args_len, r, err, sizeof err)) {
        icefarm_reply_free(r);
        return cli_error(o, CLI_UNREACHABLE, "%s", err);
    }
    if (!r->st.ok) {
        int code = r->st.code == 409 ? CLI_NOT_ENOUGH : CLI_FAILED;
        code = cli_error(o, code, "%s refused (%u): %s", ifm_verb_name(req->verb), r->st.code, r->st.error);
        icefarm_reply_free(r);
        return code;
    }
    return CLI_OK;
}

json_t *cli_msgpack_to_json(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return json_null();
    case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer(o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR: return json_stringn(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN: return json_sprintf("<%u bytes>", o->via.bin.size);
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; i < o->via.array.size; i++)
            json_array_append_new(a, cli_msgpack_to_json(&o->via.array.ptr[i]));
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR)
                continue;
            char key[256];
            size_t n = kv->key.via.str.size < sizeof key - 1 ? kv->key.via.str.size : sizeof key - 1;
            memcpy(key, kv->key.via.str.ptr, n);
            key[n] = '\0';
            json_object_set_new(m, key, cli_msgpack_to_json(&kv->val));
        }
        return m;
    }
    default: return json_null();
    }
}

static int pack_json(const json_t *j, ifm_enc *e)
{
    switch (json_typeof(j)) {
    case JSON_NULL: ifm_enc_nil(e); return 0;
    case JSON_TRUE: ifm_enc_bool(e, true); return 0;
    case JSON_FALSE: ifm_enc_bool(e, false); return 0;
    case JSON_INTEGER: {
        json_int_t v = json_integer_value(j);
        if (v >= 0)
            ifm_enc_uint(e, (uint64_t)v);
        else
            ifm_enc_int(e, v);
        return 0;
    }
    case JSON_REAL: ifm_enc_double(e, json_real_value(j)); return 0;
    case JSON_STRING: ifm_enc_strn(e, json_string_value(j), json_string_length(j)); return 0;
    case JSON_ARRAY: {
        ifm_enc_array(e, (uint32_t)json_array_size(j));
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) if (pack_json(v, e)) return -1;
        return 0;
    }
    case JSON_OBJECT: {
        ifm_enc_map(e, (uint32_t)json_object_size(j));
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v)
        {
            ifm_enc_str(e, k);
            if (pack_json(v, e))
                return -1;
        }
        return 0;
    }
    }
    return -1;
}

int cli_json_to_msgpack(const char *text, ifm_enc *e, char *err, size_t errlen)
{
    json_error_t je;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        snprintf(err, errlen, "--args is not valid JSON: %s (column %d)", je.text, je.column);
        return -1;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        snprintf(err, errlen, "--args must be a JSON object");
        return -1;
    }
    int rc = pack_json(j, e);
    json_decref(j);
    return rc;
}

void cli_print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    if (s) {
        puts(s);
        free(s);
    }
    fflush(stdout);
}

int cli_req_serials(const cli_opts *o, ifm_ctl_req *req)
{
    req->nserials = (size_t)o->npos;
    req->serials = calloc(req->nserials ? req->nserials : 1, sizeof *req->serials);
    if (!req->serials)
        return -1;
    for (int i = 0; i < o->npos; i++)
        snprintf(req->serials[i], IFM_SERIAL_MAX, "%s", o->pos[i]);
    return 0;
}

const char *cli_fmt_until(uint64_t until_ms, char *buf, size_t cap)
{
    time_t t = (time_t)(until_ms / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%d %H:%M:%S", &tm);
    return buf;
}
