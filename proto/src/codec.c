#include "icefarm/codec.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- encoding ---- */

void ifm_enc_init(ifm_enc *e)
{
    msgpack_sbuffer_init(&e->buf);
    msgpack_packer_init(&e->pk, &e->buf, msgpack_sbuffer_write);
}

void ifm_enc_free(ifm_enc *e)
{
    msgpack_sbuffer_destroy(&e->buf);
}

void ifm_enc_root(ifm_enc *e, uint32_t n)
{
    msgpack_pack_map(&e->pk, n + 1);
    ifm_enc_kuint(e, "v", IFM_PROTO_VERSION);
}

void ifm_enc_map(ifm_enc *e, uint32_t n)
{
    msgpack_pack_map(&e->pk, n);
}
void ifm_enc_array(ifm_enc *e, uint32_t n)
{
    msgpack_pack_array(&e->pk, n);
}
void ifm_enc_uint(ifm_enc *e, uint64_t v)
{
    msgpack_pack_uint64(&e->pk, v);
}
void ifm_enc_int(ifm_enc *e, int64_t v)
{
    msgpack_pack_int64(&e->pk, v);
}
void ifm_enc_double(ifm_enc *e, double v)
{
    msgpack_pack_double(&e->pk, v);
}
void ifm_enc_nil(ifm_enc *e)
{
    msgpack_pack_nil(&e->pk);
}
void ifm_enc_raw(ifm_enc *e, const void *p, size_t n)
{
    msgpack_sbuffer_write(&e->buf, p, n);
}

void ifm_enc_bool(ifm_enc *e, bool v)
{
    if (v)
        msgpack_pack_true(&e->pk);
    else
        msgpack_pack_false(&e->pk);
}

void ifm_enc_strn(ifm_enc *e, const char *s, size_t n)
{
    msgpack_pack_str(&e->pk, n);
    msgpack_pack_str_body(&e->pk, s, n);
}

void ifm_enc_str(ifm_enc *e, const char *s)
{
    ifm_enc_strn(e, s ? s : "", s ? strlen(s) : 0);
}

void ifm_enc_bin(ifm_enc *e, const void *p, size_t n)
{
    msgpack_pack_bin(&e->pk, n);
    msgpack_pack_bin_body(&e->pk, p, n);
}

void ifm_enc_key(ifm_enc *e, const char *k)
{
    ifm_enc_str(e, k);
}
void ifm_enc_kstr(ifm_enc *e, const char *k, const char *v)
{
    ifm_enc_str(e, k);
    ifm_enc_str(e, v);
}
void ifm_enc_kuint(ifm_enc *e, const char *k, uint64_t v)
{
    ifm_enc_str(e, k);
    ifm_enc_uint(e, v);
}
void ifm_enc_kint(ifm_enc *e, const char *k, int64_t v)
{
    ifm_enc_str(e, k);
    ifm_enc_int(e, v);
}
void ifm_enc_kbool(ifm_enc *e, const char *k, bool v)
{
    ifm_enc_str(e, k);
    ifm_enc_bool(e, v);
}
void ifm_enc_kdouble(ifm_enc *e, const char *k, double v)
{
    ifm_enc_str(e, k);
    ifm_enc_double(e, v);
}
void ifm_enc_kbin(ifm_enc *e, const char *k, const void *p, size_t n)
{
    ifm_enc_str(e, k);
    ifm_enc_bin(e, p, n);
}

int ifm_obj_pack(const msgpack_object *o, ifm_enc *e)
{
    return msgpack_pack_object(&e->pk, *o) == 0 ? 0 : -1;
}

/* ---- decoding ---- */

static bool key_is(const msgpack_object *k, const char *key, size_t keylen)
{
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == keylen &&
        (keylen == 0 || memcmp(k->via.str.ptr, key, keylen) == 0); /* empty str: ptr NULL */
}

static int key_cmp(const void *a, const void *b)
{
    const msgpack_object *x = *(const msgpack_object *const *)a;
    const msgpack_object *y = *(const msgpack_object *const *)b;
    if (x->via.str.size != y->via.str.size)
        return x->via.str.size < y->via.str.size ? -1 : 1;
    return x->via.str.size ? memcmp(x->via.str.ptr, y->via.str.ptr, x->via.str.size) : 0;
}

/* Duplicate keys: pairwise for small maps, sorted for big ones (a payload can
 * hold a million distinct keys; pairwise that is hours of CPU). */
static int check_dup_keys(const msgpack_object_kv *kv, uint32_t n, ifm_err *err)
{
    const msgpack_object *dup = NULL;
    if (n <= 16) {
        for (uint32_t i = 1; i < n && !dup; i++)
            for (uint32_t j = 0; j < i && !dup; j++)
                if (key_is(&kv[j].key, kv[i].key.via.str.ptr, kv[i].key.via.str.size))
                    dup = &kv[i].key;
    } else {
        const msgpack_object **keys = malloc(n * sizeof *keys);
        if (!keys) {
            ifm_err_set(err, "out of memory");
            return -1;
        }
        for (uint32_t i = 0; i < n; i++)
            keys[i] = &kv[i].key;
        qsort(keys, n, sizeof *keys, key_cmp);
        for (uint32_t i = 1; i < n && !dup; i++)
            if (key_cmp(&keys[i - 1], &keys[i]) == 0)
                dup = keys[i];
        free(keys);
    }
    if (dup) {
        ifm_err_set(err, "duplicate key \"%.*s\"", (int)dup->via.str.size, dup->via.str.ptr);
        return -1;
    }
    return 0;
}

static int check_maps(const msgpack_object *o, ifm_err *err)
{
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < o->via.array.size; i++)
            if (check_maps(&o->via.array.ptr[i], err))
                return -1;
    } else if (o->type == MSGPACK_OBJECT_MAP) {
        const msgpack_object_kv *kv = o->via.map.ptr;
        for (uint32_t i = 0; i < o->via.map.size; i++)
            if (kv[i].key.type != MSGPACK_OBJECT_STR) {
                ifm_err_set(err, "map key %u is not a string", i);
                return -1;
            }
        if (check_dup_keys(kv, o->via.map.size, err))
            return -1;
        for (uint32_t i = 0; i < o->via.map.size; i++)
            if (check_maps(&kv[i].val, err))
                return -1;
    }
    return 0;
}

int ifm_doc_parse(ifm_doc *doc, const void *data, size_t len, ifm_err *err)
{
    msgpack_unpacked_init(&doc->up);
    doc->root = NULL;
    if (len > IFM_MAX_PAYLOAD) {
        ifm_err_set(err, "payload of %zu bytes exceeds the %u byte limit", len, IFM_MAX_PAYLOAD);
        return -1;
    }
    if (ifm_msgpack_scan(data, len, IFM_MAX_DEPTH, err))
        return -1;
    size_t off = 0;
    if (msgpack_unpack_next(&doc->up, data, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len) {
        ifm_err_set(err, "malformed msgpack");
        return -1;
    }
    const msgpack_object *root = &doc->up.data;
    if (root->type != MSGPACK_OBJECT_MAP) {
        ifm_err_set(err, "payload is not a msgpack map");
        return -1;
    }
    if (check_maps(root, err))
        return -1;
    uint64_t v = 0;
    if (ifm_get_uint(root, "v", true, 0, UINT32_MAX, &v, err))
        return -1;
    if (v != IFM_PROTO_VERSION) {
        ifm_err_set(err, "unsupported protocol version %llu (this peer speaks %d)", (unsigned long long)v,
                    IFM_PROTO_VERSION);
        return -1;
    }
    doc->root = root;
    return 0;
}

void ifm_doc_free(ifm_doc *doc)
{
    msgpack_unpacked_destroy(&doc->up);
    doc->root = NULL;
}

const msgpack_object *ifm_map_get(const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t kl = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (key_is(&map->via.map.ptr[i].key, key, kl))
            return &map->via.map.ptr[i].val;
    return NULL;
}

static const char *type_name(msgpack_object_type t)
{
    switch (t) {
    case MSGPACK_OBJECT_NIL:
        return "nil";
    case MSGPACK_OBJECT_BOOLEAN:
        return "bool";
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return "unsigned integer";
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return "negative integer";
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return "float";
    case MSGPACK_OBJECT_STR:
        return "string";
    case MSGPACK_OBJECT_ARRAY:
        return "array";
    case MSGPACK_OBJECT_MAP:
        return "map";
    case MSGPACK_OBJECT_BIN:
        return "bin";
    default:
        return "ext";
    }
}

/* Looks a field up; 1 = absent (error if required), 0 = present with type `want`. */
static int field(const msgpack_object *map, const char *key, bool required, msgpack_object_type want,
                 const char *want_name, const msgpack_object **out, ifm_err *err)
{
    const msgpack_object *o = ifm_map_get(map, key);
    if (!o || o->type == MSGPACK_OBJECT_NIL) {
        if (required) {
            ifm_err_set(err, "missing field \"%s\"", key);
            return -1;
        }
        return 1;
    }
    if (o->type != want) {
        ifm_err_set(err, "field \"%s\" must be %s, got %s", key, want_name, type_name(o->type));
        return -1;
    }
    *out = o;
    return 0;
}

int ifm_obj_str(const msgpack_object *o, const char *what, bool nonempty, char *out, size_t cap, ifm_err *err)
{
    if (o->type != MSGPACK_OBJECT_STR) {
        ifm_err_set(err, "%s must be a string, got %s", what, type_name(o->type));
        return -1;
    }
    size_t n = o->via.str.size;
    if (n >= cap) {
        ifm_err_set(err, "%s is %zu bytes, at most %zu allowed", what, n, cap - 1);
        return -1;
    }
    if (nonempty && n == 0) {
        ifm_err_set(err, "%s must not be empty", what);
        return -1;
    }
    if (memchr(o->via.str.ptr, '\0', n)) {
        ifm_err_set(err, "%s contains a NUL byte", what);
        return -1;
    }
    memcpy(out, o->via.str.ptr, n);
    out[n] = '\0';
    return 0;
}

int ifm_get_str(const msgpack_object *map, const char *key, bool required, char *out, size_t cap, ifm_err *err)
{
    const msgpack_object *o;
    int rc = field(map, key, required, MSGPACK_OBJECT_STR, "a string", &o, err);
    if (rc)
        return rc;
    char what[64];
    snprintf(what, sizeof what, "field \"%s\"", key);
    return ifm_obj_str(o, what, required, out, cap, err);
}

int ifm_get_strv(const msgpack_object *map, const char *key, bool required, const char **out, size_t *len, size_t max,
                 ifm_err *err)
{
    const msgpack_object *o;
    int rc = field(map, key, required, MSGPACK_OBJECT_STR, "a string", &o, err);
    if (rc)
        return rc;
    if (o->via.str.size > max) {
        ifm_err_set(err, "field \"%s\" is %u bytes, at most %zu allowed", key, o->via.str.size, max);
        return -1;
    }
    *out = o->via.str.ptr;
    *len = o->via.str.size;
    return 0;
}

int ifm_get_uint(const msgpack_object *map, const char *key, bool required, uint64_t min, uint64_t max, uint64_t *out,
                 ifm_err *err)
{
    const msgpack_object *o = ifm_map_get(map, key);
    if (!o || o->type == MSGPACK_OBJECT_NIL) {
        if (required) {
            ifm_err_set(err, "missing field \"%s\"", key);
            return -1;
        }
        return 1;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        ifm_err_set(err, "field \"%s\" must be between %llu and %llu, got %lld", key, (unsigned long long)min,
                    (unsigned long long)max, (long long)o->via.i64);
        return -1;
    }
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        ifm_err_set(err, "field \"%s\" must be an integer, got %s", key, type_name(o->type));
        return -1;
    }
    if (o->via.u64 < min || o->via.u64 > max) {
        ifm_err_set(err, "field \"%s\" must be between %llu and %llu, got %llu", key, (unsigned long long)min,
                    (unsigned long long)max, (unsigned long long)o->via.u64);
        return -1;
    }
    *out = o->via.u64;
    return 0;
}

int ifm_get_bool(const msgpack_object *map, const char *key, bool required, bool *out, ifm_err *err)
{
    const msgpack_object *o;
    int rc = field(map, key, required, MSGPACK_OBJECT_BOOLEAN, "a bool", &o, err);
    if (rc)
        return rc;
    *out = o->via.boolean;
    return 0;
}

int ifm_get_double(const msgpack_object *map, const char *key, bool required, double *out, ifm_err *err)
{
    const msgpack_object *o = ifm_map_get(map, key);
    if (!o || o->type == MSGPACK_OBJECT_NIL) {
        if (required) {
            ifm_err_set(err, "missing field \"%s\"", key);
            return -1;
        }
        return 1;
    }
    double d;
    switch (o->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        d = o->via.f64;
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        d = (double)o->via.u64;
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        d = (double)o->via.i64;
        break;
    default:
        ifm_err_set(err, "field \"%s\" must be a number, got %s", key, type_name(o->type));
        return -1;
    }
    if (!isfinite(d)) {
        ifm_err_set(err, "field \"%s\" must be finite", key);
        return -1;
    }
    *out = d;
    return 0;
}

int ifm_get_bin(const msgpack_object *map, const char *key, bool required, size_t min, size_t max, const uint8_t **out,
                size_t *len, ifm_err *err)
{
    const msgpack_object *o;
    int rc = field(map, key, required, MSGPACK_OBJECT_BIN, "bin", &o, err);
    if (rc)
        return rc;
    if (o->via.bin.size < min || o->via.bin.size > max) {
        ifm_err_set(err, "field \"%s\" is %u bytes, must be %zu..%zu", key, o->via.bin.size, min, max);
        return -1;
    }
    *out = (const uint8_t *)o->via.bin.ptr;
    *len = o->via.bin.size;
    return 0;
}

int ifm_get_map(const msgpack_object *map, const char *key, bool required, const msgpack_object **out, ifm_err *err)
{
    return field(map, key, required, MSGPACK_OBJECT_MAP, "a map", out, err);
}

int ifm_get_array(const msgpack_object *map, const char *key, bool required, size_t max_items,
                  const msgpack_object **out, ifm_err *err)
{
    int rc = field(map, key, required, MSGPACK_OBJECT_ARRAY, "an array", out, err);
    if (rc)
        return rc;
    if ((*out)->via.array.size > max_items) {
        ifm_err_set(err, "field \"%s\" has %u items, at most %zu allowed", key, (*out)->via.array.size, max_items);
        return -1;
    }
    return 0;
}
