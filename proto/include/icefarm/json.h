/* msgpack <-> JSON, one mapping for every JSON face of icefarm (the CLI's --json,
 * the HTTP shim). Separate from libicefarm-proto so that only programs that speak
 * JSON link Jansson. */
#ifndef ICEFARM_JSON_H
#define ICEFARM_JSON_H

#include <jansson.h>

#include "icefarm/codec.h"

/* A new JSON value. Bin becomes "<N bytes>", a string that is not UTF-8 becomes
 * "<invalid UTF-8>", non-finite floats become null, unsigned integers beyond
 * int64 are clamped, and map entries with non-string keys are skipped. */
json_t *ifm_json_from_msgpack(const msgpack_object *o);
/* Appends the msgpack encoding of a JSON value. Returns 0 or -1. */
int ifm_json_to_msgpack(const json_t *j, ifm_enc *e);
/* "an object", "a list", "a string", "an integer", ... for error messages. */
const char *ifm_json_type_name(const json_t *j);

#endif
