/* xos framing: the stream reader for protocols 1 and 2, the protocol-2 header
 * parser and the outbound framer. See xos.h. */
#include <stdio.h>
#include <string.h>

#include "xos.h"

enum {
    P_START, /* collecting a protocol-1 block or a protocol-2 header */
    P_TEXT,  /* collecting protocol-2 text */
    P_SKIP   /* discarding an overlong text and/or the binary part */
};

static void err_set(xos_err *err, const char *what)
{
    if (err)
        snprintf(err->msg, sizeof err->msg, "%s", what);
}

void xos_reader_init(xos_reader *r, xos_proto proto)
{
    memset(r, 0, sizeof *r);
    r->proto = proto;
    r->phase = P_START;
}

void xos_reader_set_proto(xos_reader *r, xos_proto proto)
{
    r->proto = proto;
}

bool xos_reader_idle(const xos_reader *r)
{
    return r->phase == P_START && r->have == 0;
}

static bool is_pad(uint8_t c)
{
    return c == ' ' || c == '\0' || c == '\t';
}

int xos2_parse_header(const uint8_t hdr[XOS2_HEADER], size_t *text_len, size_t *bin_len, xos_err *err)
{
    size_t v[2] = { 0, 0 };
    size_t i = 0;
    for (int k = 0; k < 2; k++) {
        size_t start;
        while (i < XOS2_HEADER && is_pad(hdr[i]))
            i++;
        start = i;
        while (i < XOS2_HEADER && hdr[i] >= '0' && hdr[i] <= '9') {
            if (v[k] <= XOS2_LEN_MAX)
                v[k] = v[k] * 10 + (size_t)(hdr[i] - '0');
            i++;
        }
        if (i == start) {
            if (err)
                snprintf(err->msg, sizeof err->msg, "protocol-2 header: no %s length at byte %zu (0x%02x)",
                         k == 0 ? "text" : "binary", i, i < XOS2_HEADER ? hdr[i] : 0);
            return -1;
        }
        if (v[k] > XOS2_LEN_MAX) {
            if (err)
                snprintf(err->msg, sizeof err->msg, "protocol-2 header announces more than %u bytes of %s",
                         XOS2_LEN_MAX, k == 0 ? "text" : "binary");
            return -1;
        }
        if (k == 0 && (i == XOS2_HEADER || !is_pad(hdr[i]))) {
            if (err)
                snprintf(err->msg, sizeof err->msg, "protocol-2 header: byte %zu (0x%02x) after the text length", i,
                         i < XOS2_HEADER ? hdr[i] : 0);
            return -1;
        }
    }
    for (; i < XOS2_HEADER; i++) {
        if (!is_pad(hdr[i])) {
            if (err)
                snprintf(err->msg, sizeof err->msg, "protocol-2 header: byte %zu (0x%02x) after the binary length", i,
                         hdr[i]);
            return -1;
        }
    }
    *text_len = v[0];
    *bin_len = v[1];
    return 0;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The first `len` bytes of r->text as a message: cut at the first NUL, trimmed, and
 * checked to be ASCII text. */
static xos_status finish_text(xos_reader *r, size_t len, xos_event *ev)
{
    r->text[len] = '\0';
    len = strlen(r->text);
    size_t start = 0;
    while (start < len && is_space(r->text[start]))
        start++;
    while (len > start && is_space(r->text[len - 1]))
        len--;
    r->text[len] = '\0';
    if (len == start) {
        snprintf(ev->reason, sizeof ev->reason, "empty message");
        return XOS_SKIPPED;
    }
    for (size_t i = start; i < len; i++) {
        unsigned char c = (unsigned char)r->text[i];
        if ((c < 0x20 && !is_space((char)c)) || c > 0x7e) {
            snprintf(ev->reason, sizeof ev->reason, "byte 0x%02x at offset %zu is not printable ASCII", c, i);
            return XOS_SKIPPED;
        }
    }
    ev->text = r->text + start;
    ev->len = len - start;
    return XOS_MESSAGE;
}

static xos_status finish_block(xos_reader *r, xos_event *ev)
{
    const uint8_t *nul = memchr(r->block, '\0', XOS1_BLOCK);
    /* No NUL: either space padding (Tcl senders) or a message of 200 characters
     * or more that the sender cut (DCSS's strncpy): the latter cannot be trusted. */
    if (!nul && r->block[XOS1_BLOCK - 1] != ' ') {
        snprintf(ev->reason, sizeof ev->reason,
                 "protocol-1 block without a NUL: a message of %d or more characters, cut by the sender", XOS1_BLOCK);
        return XOS_SKIPPED;
    }
    size_t n = nul ? (size_t)(nul - r->block) : XOS1_BLOCK;
    memcpy(r->text, r->block, n);
    return finish_text(r, n, ev);
}

size_t xos_read(xos_reader *r, const uint8_t *data, size_t len, xos_status *st, xos_event *ev)
{
    size_t used = 0;
    *st = XOS_MORE;
    ev->text = NULL;
    ev->len = 0;
    ev->binary = 0;
    ev->reason[0] = '\0';
    if (r->lost) {
        *st = XOS_LOST;
        snprintf(ev->reason, sizeof ev->reason, "the framing was lost earlier");
        return 0;
    }
    while (used < len) {
        size_t avail = len - used, n;
        switch (r->phase) {
        case P_START: {
            size_t need = r->proto == XOS_PROTO_1 ? XOS1_BLOCK : XOS2_HEADER;
            n = need - r->have < avail ? need - r->have : avail;
            memcpy(r->block + r->have, data + used, n);
            r->have += n;
            used += n;
            if (r->have < need)
                return used;
            r->have = 0;
            if (r->proto == XOS_PROTO_1) {
                *st = finish_block(r, ev);
                return used;
            }
            xos_err err;
            if (xos2_parse_header(r->block, &r->text_len, &r->bin_len, &err)) {
                r->lost = true;
                *st = XOS_LOST;
                snprintf(ev->reason, sizeof ev->reason, "%s", err.msg);
                return used;
            }
            if (r->text_len > XOS_TEXT_MAX) {
                r->skipping_text = true;
                r->skip = r->text_len + r->bin_len;
                r->phase = P_SKIP;
            } else if (r->text_len == 0) {
                r->skipping_text = false;
                r->skip = r->bin_len;
                r->phase = P_SKIP;
            } else {
                r->phase = P_TEXT;
            }
            break;
        }
        case P_TEXT:
            n = r->text_len - r->have < avail ? r->text_len - r->have : avail;
            memcpy(r->text + r->have, data + used, n);
            r->have += n;
            used += n;
            if (r->have < r->text_len)
                return used;
            r->have = 0;
            r->skipping_text = false;
            r->skip = r->bin_len;
            r->phase = P_SKIP;
            break;
        case P_SKIP:
            n = r->skip < avail ? r->skip : avail;
            r->skip -= n;
            used += n;
            break;
        }
        if (r->phase == P_SKIP && r->skip == 0) {
            r->phase = P_START;
            ev->binary = r->bin_len;
            if (r->skipping_text) {
                snprintf(ev->reason, sizeof ev->reason, "message of %zu bytes is longer than %d", r->text_len,
                         XOS_TEXT_MAX);
                *st = XOS_SKIPPED;
            } else {
                *st = finish_text(r, r->text_len, ev);
            }
            return used;
        }
    }
    return used;
}

static int check_out_text(const char *text, size_t max, xos_err *err)
{
    size_t len = strlen(text);
    if (len == 0) {
        err_set(err, "empty message");
        return -1;
    }
    if (len > max) {
        if (err)
            snprintf(err->msg, sizeof err->msg, "message of %zu bytes is longer than %zu", len, max);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x20 || c > 0x7e) {
            if (err)
                snprintf(err->msg, sizeof err->msg, "byte 0x%02x at offset %zu is not printable ASCII", c, i);
            return -1;
        }
    }
    return 0;
}

int xos_frame(xos_proto proto, const char *text, uint8_t *out, size_t cap, xos_err *err)
{
    if (proto == XOS_PROTO_1) {
        if (check_out_text(text, XOS1_TEXT_MAX, err))
            return -1;
        if (cap < XOS1_BLOCK) {
            err_set(err, "output buffer too small");
            return -1;
        }
        memset(out, 0, XOS1_BLOCK);
        memcpy(out, text, strlen(text));
        return XOS1_BLOCK;
    }
    if (check_out_text(text, XOS_OUT_MAX, err))
        return -1;
    size_t len = strlen(text);
    if (cap < XOS2_HEADER + len + 1) {
        err_set(err, "output buffer too small");
        return -1;
    }
    char hdr[64];
    snprintf(hdr, sizeof hdr, "%12zu %12d ", len + 1, 0); /* 26 bytes: len + 1 <= XOS_OUT_MAX + 1 */
    memcpy(out, hdr, XOS2_HEADER);
    memcpy(out + XOS2_HEADER, text, len + 1);
    return (int)(XOS2_HEADER + len + 1);
}

int xos_handshake_reply(const char *dhs_name, uint8_t out[XOS1_BLOCK], xos_err *err)
{
    if (!xos_name_valid(dhs_name)) {
        err_set(err, "the DHS name must be 1..39 characters without spaces or [ ] $ ; \" \\ { }");
        return -1;
    }
    char text[XOS1_BLOCK];
    snprintf(text, sizeof text, "htos_client_is_hardware %s", dhs_name);
    return xos_frame(XOS_PROTO_1, text, out, XOS1_BLOCK, err);
}
