/* xos text: the word splitter (Tcl brace groups) and the outbound formatter that
 * keeps what we send Tcl-safe and within its budget. See xos.h. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "xos.h"

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Characters DCSS blanks before its Tcl scripts see our text, plus the ones Tcl
 * would substitute or group by. */
static bool is_unsafe(char c)
{
    return c == '[' || c == ']' || c == '$' || c == ';' || c == '"' || c == '\\';
}

static bool starts_private(const char *w, size_t n)
{
    return n >= 7 && memcmp(w, "PRIVATE", 7) == 0;
}

int xos_tokenize(char *text, xos_words *words, xos_err *err)
{
    words->n = 0;
    char *p = text;
    for (;;) {
        while (*p && is_space(*p))
            p++;
        if (!*p)
            return 0;
        if (words->n == XOS_WORDS_MAX) {
            snprintf(err->msg, sizeof err->msg, "more than %d words", XOS_WORDS_MAX);
            return -1;
        }
        if (*p == '{') {
            char *open = p;
            int depth = 1;
            char *q = p + 1;
            for (; *q && depth; q++) {
                if (*q == '{')
                    depth++;
                else if (*q == '}')
                    depth--;
            }
            if (depth) {
                snprintf(err->msg, sizeof err->msg, "unterminated brace group at offset %zu", (size_t)(open - text));
                return -1;
            }
            /* q is just past the closing brace */
            if (*q && !is_space(*q)) {
                snprintf(err->msg, sizeof err->msg, "extra characters after the closing brace at offset %zu",
                         (size_t)(q - 1 - text));
                return -1;
            }
            q[-1] = '\0';
            words->w[words->n] = open + 1;
            words->braced[words->n] = true;
            words->n++;
            if (!*q)
                return 0;
            *q = '\0';
            p = q + 1;
        } else {
            char *start = p;
            while (*p && !is_space(*p))
                p++;
            words->w[words->n] = start;
            words->braced[words->n] = false;
            words->n++;
            if (!*p)
                return 0;
            *p++ = '\0';
        }
    }
}

bool xos_word_safe(const char *w)
{
    if (!w || !*w)
        return false;
    size_t n = strlen(w);
    if (starts_private(w, n))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)w[i];
        if (c <= 0x20 || c > 0x7e || is_unsafe((char)c) || c == '{' || c == '}')
            return false;
    }
    return true;
}

bool xos_name_valid(const char *name)
{
    return xos_word_safe(name) && strlen(name) <= XOS_NAME_MAX;
}

static void fail(xos_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(xos_out *o, const char *fmt, ...)
{
    if (o->failed)
        return;
    o->failed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->err.msg, sizeof o->err.msg, fmt, ap);
    va_end(ap);
}

static void append(xos_out *o, const char *s, size_t n)
{
    if (o->failed)
        return;
    size_t need = o->len + (o->len ? 1 : 0) + n;
    if (need > o->limit) {
        fail(o, "message would be longer than %zu bytes", o->limit);
        return;
    }
    if (o->len)
        o->text[o->len++] = ' ';
    memcpy(o->text + o->len, s, n);
    o->len += n;
    o->text[o->len] = '\0';
}

void xos_out_begin(xos_out *o, const char *name, size_t limit)
{
    o->len = 0;
    o->text[0] = '\0';
    o->failed = false;
    o->err.msg[0] = '\0';
    o->limit = limit < XOS_OUT_MAX ? limit : XOS_OUT_MAX;
    xos_out_word(o, name);
}

void xos_out_word(xos_out *o, const char *w)
{
    if (!xos_word_safe(w)) {
        fail(o, "word \"%.40s\" is not Tcl-safe (empty, white space, [ ] $ ; \" \\ { }, PRIVATE or not ASCII)",
             w ? w : "(null)");
        return;
    }
    append(o, w, strlen(w));
}

void xos_out_wordf(xos_out *o, const char *fmt, ...)
{
    char w[XOS_OUT_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(w, sizeof w, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof w) {
        fail(o, "word longer than %d bytes", XOS_OUT_MAX);
        return;
    }
    xos_out_word(o, w);
}

void xos_out_uint(xos_out *o, uint64_t v)
{
    xos_out_wordf(o, "%llu", (unsigned long long)v);
}

/* Checks text for a group or a list: printable ASCII, no unsafe characters, no
 * PRIVATE word; braces allowed (balanced) only when `braces`. */
static bool text_ok(xos_out *o, const char *t, bool braces)
{
    int depth = 0;
    size_t n = strlen(t);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c < 0x20 || c > 0x7e || is_unsafe((char)c)) {
            fail(o, "byte 0x%02x at offset %zu is not Tcl-safe", c, i);
            return false;
        }
        if (c == '{' || c == '}') {
            if (!braces) {
                fail(o, "a brace at offset %zu inside a group", i);
                return false;
            }
            depth += c == '{' ? 1 : -1;
            if (depth < 0) {
                fail(o, "unbalanced '}' at offset %zu", i);
                return false;
            }
        }
        bool word_start = i == 0 || t[i - 1] == ' ' || t[i - 1] == '{' || t[i - 1] == '}';
        if (word_start && starts_private(t + i, n - i)) {
            fail(o, "a PRIVATE word at offset %zu (session ids are never echoed)", i);
            return false;
        }
    }
    if (depth) {
        fail(o, "unbalanced '{'");
        return false;
    }
    return true;
}

void xos_out_group(xos_out *o, const char *text)
{
    if (o->failed || !text_ok(o, text, false))
        return;
    size_t n = strlen(text);
    if (n + 2 > XOS_OUT_MAX) {
        fail(o, "message would be longer than %zu bytes", o->limit);
        return;
    }
    char g[XOS_OUT_MAX + 1];
    g[0] = '{';
    memcpy(g + 1, text, n);
    g[n + 1] = '}';
    append(o, g, n + 2);
}

void xos_out_list(xos_out *o, const char *list)
{
    if (o->failed || !text_ok(o, list, true))
        return;
    if (!*list) {
        append(o, "{}", 2);
        return;
    }
    append(o, list, strlen(list));
}

int xos_out_end(xos_out *o, xos_err *err)
{
    if (o->failed) {
        if (err)
            *err = o->err;
        return -1;
    }
    return 0;
}

void xos_safe_text(char *dst, size_t cap, const char *src)
{
    if (cap == 0)
        return;
    size_t n = 0, i = 0;
    bool cut = false;
    for (; src[i]; i++) {
        if (n + 1 >= cap) {
            cut = true;
            break;
        }
        unsigned char c = (unsigned char)src[i];
        char o;
        switch (c) {
        case '"':
            o = '\'';
            break;
        case '[':
        case '{':
            o = '(';
            break;
        case ']':
        case '}':
            o = ')';
            break;
        case '$':
            o = 'S';
            break;
        case ';':
            o = ',';
            break;
        case '\\':
            o = '/';
            break;
        default:
            o = (c < 0x20 || c > 0x7e) ? (c == '\t' || c == '\n' || c == '\r' ? ' ' : '?') : (char)c;
        }
        dst[n++] = o;
    }
    dst[n] = '\0';
    if (cut && cap >= 4)
        memcpy(dst + cap - 4, "...", 4);
    /* Mask PRIVATE words as DCSS would. */
    for (size_t k = 0; dst[k]; k++) {
        bool word_start = k == 0 || dst[k - 1] == ' ';
        if (word_start && strncmp(dst + k, "PRIVATE", 7) == 0)
            for (size_t m = k; dst[m] && dst[m] != ' '; m++)
                dst[m] = 'X';
    }
}
