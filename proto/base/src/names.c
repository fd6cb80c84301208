/* The name rules; see icefarm/names.h. */
#include "icefarm/names.h"

#include <stdint.h>
#include <string.h>

/* Decodes one UTF-8 sequence from s[0..n) (n >= 1) into *cp; returns its length,
 * or 0 if it is malformed: a stray continuation byte, a cut-off sequence, an
 * overlong form, a surrogate or a code point above U+10FFFF. */
static size_t utf8_next(const uint8_t *s, size_t n, uint32_t *cp)
{
    uint8_t c = s[0];
    size_t k;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xe0) == 0xc0) {
        k = 2, v = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        k = 3, v = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        k = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < k)
        return 0;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return k;
}

static bool is_control(uint32_t cp)
{
    return cp <= 0x1f || (cp >= 0x7f && cp <= 0x9f);
}

static bool is_noncharacter(uint32_t cp)
{
    return (cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) == 0xfffe;
}

/* 0: valid; 1: malformed (or NUL); 2: a control character or non-character. */
static int utf8_check(const char *s, size_t n, bool mqtt)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0;
    int rc = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = utf8_next(p + i, n - i, &cp);
        if (k == 0 || cp == 0)
            return 1;
        if (mqtt && (is_control(cp) || is_noncharacter(cp)))
            rc = 2; /* keep going: malformed UTF-8 later is the graver reason */
        i += k;
    }
    return rc;
}

bool ifm_utf8_valid(const char *s, size_t n)
{
    return s && utf8_check(s, n, false) == 0;
}

bool ifm_mqtt_utf8_valid(const char *s, size_t n)
{
    return s && utf8_check(s, n, true) == 0;
}

const char *ifm_name_problem(const char *s, size_t max)
{
    if (!s || !*s)
        return "is empty";
    size_t n = strnlen(s, max);
    if (n >= max)
        return "is too long";
    if (*s == '$')
        return "starts with '$'";
    if (strcspn(s, "/+#") != n)
        return "contains '/', '+' or '#'";
    switch (utf8_check(s, n, true)) {
    case 0:
        return NULL;
    case 1:
        return "is not valid UTF-8";
    default:
        return "contains a control character or a Unicode non-character";
    }
}

bool ifm_name_valid(const char *s, size_t max)
{
    return ifm_name_problem(s, max) == NULL;
}

static const char *const reserved[] = { "worker", "ctl", "client", "lease", "farm" };

const char *ifm_serial_problem(const char *s)
{
    const char *why = ifm_name_problem(s, IFM_SERIAL_MAX);
    if (why)
        return why;
    for (size_t i = 0; i < sizeof reserved / sizeof *reserved; i++)
        if (strcmp(s, reserved[i]) == 0)
            return "is a reserved topic level";
    return NULL;
}

bool ifm_serial_valid(const char *s)
{
    return ifm_serial_problem(s) == NULL;
}

bool ifm_kind_valid(const char *s)
{
    return ifm_name_valid(s, IFM_KIND_MAX);
}

bool ifm_verb_valid(const char *s)
{
    return ifm_name_valid(s, IFM_VERB_MAX);
}

bool ifm_usbip_session_valid(const char *s)
{
    size_t n = 0;
    for (; s && s[n]; n++) {
        char c = s[n];
        if (n >= 32 || !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return false;
    }
    return n >= 8;
}
