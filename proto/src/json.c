/* msgpack <-> JSON (icefarm/json.h). */
#include <math.h>
#include <string.h>

#include "icefarm/json.h"

json_t *ifm_json_from_msgpack(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        /* JSON integers here are int64; larger values are clamped. */
        return json_integer(o->via.u64 > INT64_MAX ? INT64_MAX : (json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer(o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return isfinite(o->via.f64) ? json_real(o->via.f64) : json_null();
    case MSGPACK_OBJECT_STR: {
        /* Invalid UTF-8 cannot be JSON: a placeholder stands in for it. */
        json_t *s = json_stringn(o->via.str.ptr, o->via.str.size);
        return s ? s : json_string("<invalid UTF-8>");
    }
    case MSGPACK_OBJECT_BIN:
        return json_sprintf("<%u bytes>", o->via.bin.size);
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; a && i < o->via.array.size; i++)
            json_array_append_new(a, ifm_json_from_msgpack(&o->via.array.ptr[i]));
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t i = 0; m && i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR)
                continue;
            json_t *v = ifm_json_from_msgpack(&kv->val);
            json_object_setn_new(m, kv->key.via.str.ptr, kv->key.via.str.size, v);
        }
        return m;
    }
    default:
        return json_null();
    }
}

int ifm_json_to_msgpack(const json_t *j, ifm_enc *e)
{
    switch (json_typeof(j)) {
    case JSON_NULL:
        ifm_enc_nil(e);
        return 0;
    case JSON_TRUE:
        ifm_enc_bool(e, true);
        return 0;
    case JSON_FALSE:
        ifm_enc_bool(e, false);
        return 0;
    case JSON_INTEGER: {
        json_int_t v = json_integer_value(j);
        if (v >= 0)
            ifm_enc_uint(e, (uint64_t)v);
        else
            ifm_enc_int(e, v);
        return 0;
    }
    case JSON_REAL:
        ifm_enc_double(e, json_real_value(j));
        return 0;
    case JSON_STRING:
        ifm_enc_strn(e, json_string_value(j), json_string_length(j));
        return 0;
    case JSON_ARRAY: {
        ifm_enc_array(e, (uint32_t)json_array_size(j));
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v)
        {
            if (ifm_json_to_msgpack(v, e))
                return -1;
        }
        return 0;
    }
    case JSON_OBJECT: {
        ifm_enc_map(e, (uint32_t)json_object_size(j));
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v)
        {
            ifm_enc_str(e, k);
            if (ifm_json_to_msgpack(v, e))
                return -1;
        }
        return 0;
    }
    }
    return -1;
}

const char *ifm_json_type_name(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "a list";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number with a fraction";
    case JSON_TRUE:
        return "true";
    case JSON_FALSE:
        return "false";
    case JSON_NULL:
        return "null";
    }
    return "?";
}
