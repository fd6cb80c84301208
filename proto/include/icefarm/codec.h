/* msgpack helpers shared by every icefarm message.
 *
 * Every payload is one msgpack map with short string keys and a version field
 * `v`. Decoding is strict: the bytes are first scanned without allocating (so a
 * header that claims four billion elements is rejected before anything is
 * allocated), then unpacked; a wrong type, a missing required field, an oversize
 * value, a duplicate key or trailing bytes are errors with a human-readable
 * reason. Unknown keys are ignored so newer peers can add fields.
 */
#ifndef ICEFARM_CODEC_H
#define ICEFARM_CODEC_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "icefarm/err.h"    /* ifm_err, ifm_err_set */
#include "icefarm/limits.h" /* IFM_PROTO_VERSION, IFM_MAX_PAYLOAD, IFM_MAX_DEPTH */

/* ---- encoding ---- */
typedef struct {
    msgpack_sbuffer buf;
    msgpack_packer pk;
} ifm_enc;

void ifm_enc_init(ifm_enc *e);
void ifm_enc_free(ifm_enc *e);
/* Starts the root map with `n` entries after the version field (which is written
 * for you as the first entry: the map really has n + 1 entries). */
void ifm_enc_root(ifm_enc *e, uint32_t n);
void ifm_enc_map(ifm_enc *e, uint32_t n);
void ifm_enc_array(ifm_enc *e, uint32_t n);
void ifm_enc_str(ifm_enc *e, const char *s);
void ifm_enc_strn(ifm_enc *e, const char *s, size_t n);
void ifm_enc_uint(ifm_enc *e, uint64_t v);
void ifm_enc_int(ifm_enc *e, int64_t v);
void ifm_enc_double(ifm_enc *e, double v);
void ifm_enc_bool(ifm_enc *e, bool v);
void ifm_enc_nil(ifm_enc *e);
void ifm_enc_bin(ifm_enc *e, const void *p, size_t n);
/* Appends bytes that already are one msgpack object (e.g. stored reserve args). */
void ifm_enc_raw(ifm_enc *e, const void *p, size_t n);
/* key + value in one call, for map entries */
void ifm_enc_kstr(ifm_enc *e, const char *k, const char *v);
void ifm_enc_kuint(ifm_enc *e, const char *k, uint64_t v);
void ifm_enc_kint(ifm_enc *e, const char *k, int64_t v);
void ifm_enc_kbool(ifm_enc *e, const char *k, bool v);
void ifm_enc_kdouble(ifm_enc *e, const char *k, double v);
void ifm_enc_kbin(ifm_enc *e, const char *k, const void *p, size_t n);
void ifm_enc_key(ifm_enc *e, const char *k);
static inline const void *ifm_enc_data(const ifm_enc *e)
{
    return e->buf.data;
}
static inline size_t ifm_enc_size(const ifm_enc *e)
{
    return e->buf.size;
}

/* ---- decoding ---- */

/* Checks that `data` holds exactly one well-formed msgpack object no deeper than
 * `max_depth` (at most IFM_MAX_DEPTH), with every container count plausible for
 * the bytes that remain. Allocates nothing: it is ifm_mp_scan() of the one
 * msgpack reader (icefarm/mp.h). Returns 0, or -1 with err set. */
int ifm_msgpack_scan(const void *data, size_t len, int max_depth, ifm_err *err);

typedef struct {
    msgpack_unpacked up;
    const msgpack_object *root; /* the root map */
} ifm_doc;

/* Parses a whole payload: exactly one map, version `v` == IFM_PROTO_VERSION, no
 * duplicate keys in any map. Strings and bins in the doc point into `data`
 * (msgpack-c unpacks without copying), so `data` must outlive the doc.
 * Returns 0, or -1 with `err` set. Call ifm_doc_free() in both cases. */
int ifm_doc_parse(ifm_doc *doc, const void *data, size_t len, ifm_err *err);
void ifm_doc_free(ifm_doc *doc);

/* Field accessors on a map object. `required` false: a missing (or nil) field
 * leaves *out untouched and returns 1. Returns 0 when found and valid, -1 on
 * error (err set, naming the field). */
const msgpack_object *ifm_map_get(const msgpack_object *map, const char *key);
int ifm_get_str(const msgpack_object *map, const char *key, bool required, char *out, size_t cap, ifm_err *err);
/* Zero-copy string view; the pointer lives as long as the doc. */
int ifm_get_strv(const msgpack_object *map, const char *key, bool required, const char **out, size_t *len, size_t max,
                 ifm_err *err);
int ifm_get_uint(const msgpack_object *map, const char *key, bool required, uint64_t min, uint64_t max, uint64_t *out,
                 ifm_err *err);
int ifm_get_bool(const msgpack_object *map, const char *key, bool required, bool *out, ifm_err *err);
int ifm_get_double(const msgpack_object *map, const char *key, bool required, double *out, ifm_err *err);
int ifm_get_bin(const msgpack_object *map, const char *key, bool required, size_t min, size_t max, const uint8_t **out,
                size_t *len, ifm_err *err);
int ifm_get_map(const msgpack_object *map, const char *key, bool required, const msgpack_object **out, ifm_err *err);
int ifm_get_array(const msgpack_object *map, const char *key, bool required, size_t max_items,
                  const msgpack_object **out, ifm_err *err);
/* Copies a msgpack string object into out[cap], rejecting embedded NULs, empty
 * strings (when nonempty) and strings that do not fit. */
int ifm_obj_str(const msgpack_object *o, const char *what, bool nonempty, char *out, size_t cap, ifm_err *err);

/* Re-encodes a msgpack object (e.g. reserve `args`) so it can be stored or forwarded. */
int ifm_obj_pack(const msgpack_object *o, ifm_enc *e);

#endif
