/* The one set of name rules: what a board serial, a client, user or worker
 * name, a kind and a verb may be. Used by proto's decoders and topic builders,
 * the lease store, the HTTP shim and the broker plugin alike, so a name one
 * part accepts is never refused (or read differently) by another.
 *
 * A *name* is one MQTT topic level:
 *   - 1 to max-1 bytes (max includes the NUL, as the IFM_*_MAX in limits.h);
 *   - valid UTF-8 as MQTT requires it (RFC 3629: no overlong forms, no
 *     surrogates, nothing above U+10FFFF) and without what MQTT forbids in
 *     strings: U+0000, the control characters U+0001-U+001F and U+007F-U+009F,
 *     and the Unicode non-characters (U+FDD0-U+FDEF, U+xFFFE, U+xFFFF) -- the
 *     same rule as libmosquitto's mosquitto_validate_utf8(), checked against it
 *     by the fuzz target fuzz_names;
 *   - no '/', '+' or '#', and no leading '$'.
 * Spaces, quotes, backslashes and any other UTF-8 are fine.
 * A *serial* is a name of at most IFM_SERIAL_MAX-1 bytes that is not one of the
 * reserved first levels of the topic tree (worker, ctl, client, lease, farm).
 * A *kind* is a name of at most IFM_KIND_MAX-1 bytes; a *verb* one of at most
 * IFM_VERB_MAX-1 bytes.
 *
 * All functions are pure (no state, no allocation; safe from any thread) and
 * need nothing but <string.h>: this is part of icefarm-base, which the broker
 * plugin links.
 */
#ifndef ICEFARM_NAMES_H
#define ICEFARM_NAMES_H

#include <stdbool.h>
#include <stddef.h>

#include "icefarm/limits.h"

/* s[0..n) is well-formed UTF-8 (RFC 3629) without NUL. Control characters are
 * allowed: this is the rule for stored free text, not for names. */
bool ifm_utf8_valid(const char *s, size_t n);
/* s[0..n) is an MQTT UTF-8 string: ifm_utf8_valid, and no control characters
 * or non-characters (see above). */
bool ifm_mqtt_utf8_valid(const char *s, size_t n);

/* NULL if `s` is a valid name of at most max-1 bytes, else why not, as a
 * phrase that completes "name ...": "is empty", "is too long", "starts with
 * '$'", "contains '/', '+' or '#'", "is not valid UTF-8", "contains a control
 * character or a Unicode non-character". The string is static (the caller
 * names the limit). */
const char *ifm_name_problem(const char *s, size_t max);
bool ifm_name_valid(const char *s, size_t max);

/* The same for the other kinds of name; ifm_serial_problem also says
 * "is a reserved topic level". */
const char *ifm_serial_problem(const char *s);
bool ifm_serial_valid(const char *s);
bool ifm_kind_valid(const char *s);
bool ifm_verb_valid(const char *s);
/* A USB/IP tunnel session (PROTOCOL.md 19.3): 8..32 characters [A-Za-z0-9]. */
bool ifm_usbip_session_valid(const char *s);

#endif
