/* Engine.IO v4 polling payloads and Socket.IO v5 packets: see sio_codec.h. */
#include "sio_codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- base64 (standard alphabet, padding optional) ---- */

static int b64v(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

static int b64_decode(const char *in, size_t n, uint8_t **out, size_t *outlen, sio_err *err)
{
    size_t pad = 0;
    while (n && in[n - 1] == '=' && pad < 2) {
        n--;
        pad++;
    }
    if (n % 4 == 1)
        return ifm_fail(err, -1, "base64 of %zu characters is truncated", n);
    uint8_t *b = malloc(n / 4 * 3 + 3);
    if (!b)
        return ifm_fail(err, -1, "out of memory");
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64v((unsigned char)in[i]);
        if (v < 0) {
            free(b);
            return ifm_fail(err, -1, "invalid base64 character 0x%02x at %zu", (unsigned char)in[i], i);
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            b[o++] = (uint8_t)(acc >> bits);
        }
    }
    *out = b;
    *outlen = o;
    return 0;
}

/* ---- Engine.IO ---- */

int eio_next(const char *body, size_t len, size_t *off, eio_packet *p, sio_err *err)
{
    memset(p, 0, sizeof *p);
    if (*off >= len)
        return 0;
    const char *s = body + *off;
    const char *sep = memchr(s, 0x1e, len - *off);
    size_t n = sep ? (size_t)(sep - s) : len - *off;
    *off += n + (sep ? 1 : 0);
    if (n == 0)
        return ifm_fail(err, -1, "empty Engine.IO packet");
    p->type = s[0];
    if (p->type == 'b') {
        if (b64_decode(s + 1, n - 1, &p->bin, &p->binlen, err))
            return -1;
        return 1;
    }
    if (p->type < '0' || p->type > '6')
        return ifm_fail(err, -1, "unknown Engine.IO packet type 0x%02x", (unsigned char)p->type);
    p->data = s + 1;
    p->len = n - 1;
    return 1;
}

void eio_packet_free(eio_packet *p)
{
    free(p->bin);
    p->bin = NULL;
    p->binlen = 0;
}

static char *dump_packet(char prefix, const char *prefix2, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    if (!text)
        return NULL;
    size_t n = strlen(text), p2 = prefix2 ? strlen(prefix2) : 0;
    char *out = malloc(n + p2 + 2);
    if (out) {
        out[0] = prefix;
        if (p2)
            memcpy(out + 1, prefix2, p2);
        memcpy(out + 1 + p2, text, n + 1);
    }
    free(text);
    return out;
}

char *eio_open_packet(const char *sid, unsigned ping_interval_ms, unsigned ping_timeout_ms, size_t max_payload)
{
    return dump_packet('0', NULL,
                       json_pack("{s:s, s:[], s:I, s:I, s:I}", "sid", sid, "upgrades", "pingInterval",
                                 (json_int_t)ping_interval_ms, "pingTimeout", (json_int_t)ping_timeout_ms, "maxPayload",
                                 (json_int_t)max_payload));
}

/* ---- Socket.IO ---- */

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

int sio_parse(const char *text, size_t len, sio_packet *p, sio_err *err)
{
    memset(p, 0, sizeof *p);
    p->ack_id = -1;
    snprintf(p->nsp, sizeof p->nsp, "/");
    if (len == 0)
        return ifm_fail(err, -1, "empty Socket.IO packet");
    if (text[0] < '0' || text[0] > '6')
        return ifm_fail(err, -1, "unknown Socket.IO packet type 0x%02x", (unsigned char)text[0]);
    p->type = text[0] - '0';
    size_t i = 1;
    if (p->type == SIO_BINARY_EVENT || p->type == SIO_BINARY_ACK) {
        unsigned long n = 0;
        size_t start = i;
        while (i < len && is_digit(text[i]) && i - start < 6)
            n = n * 10 + (unsigned long)(text[i++] - '0');
        if (i == start || i >= len || text[i] != '-')
            return ifm_fail(err, -1, "binary packet without \"<attachments>-\"");
        i++;
        if (n == 0 || n > SIO_MAX_ATTACHMENTS)
            return ifm_fail(err, -1, "binary packet announces %lu attachments (1 to %d allowed)", n,
                            SIO_MAX_ATTACHMENTS);
        p->attachments = (unsigned)n;
    }
    if (i < len && text[i] == '/') {
        size_t start = i;
        while (i < len && text[i] != ',')
            i++;
        size_t n = i - start;
        if (n >= sizeof p->nsp)
            return ifm_fail(err, -1, "namespace longer than %zu bytes", sizeof p->nsp - 1);
        memcpy(p->nsp, text + start, n);
        p->nsp[n] = '\0';
        if (memchr(p->nsp, '\0', n))
            return ifm_fail(err, -1, "namespace contains NUL");
        char *q = strchr(p->nsp, '?'); /* a query string on the namespace is not part of it */
        if (q)
            *q = '\0';
        if (i < len)
            i++; /* the ',' */
    }
    if (i < len && is_digit(text[i])) {
        long long id = 0;
        size_t start = i;
        while (i < len && is_digit(text[i])) {
            if (i - start >= 15)
                return ifm_fail(err, -1, "ack id longer than 15 digits");
            id = id * 10 + (text[i++] - '0');
        }
        p->ack_id = id;
    }
    if (i < len) {
        json_error_t je;
        p->data = json_loadb(text + i, len - i, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
        if (!p->data)
            return ifm_fail(err, -1, "malformed JSON in a Socket.IO packet: %s (column %d)", je.text, je.column);
    }
    switch (p->type) {
    case SIO_EVENT:
    case SIO_BINARY_EVENT:
        if (!json_is_array(p->data) || json_array_size(p->data) == 0 || !json_is_string(json_array_get(p->data, 0))) {
            sio_packet_free(p);
            return ifm_fail(err, -1, "an event's data must be a list starting with the event name");
        }
        break;
    case SIO_ACK:
    case SIO_BINARY_ACK:
        if (p->ack_id < 0 || !json_is_array(p->data)) {
            sio_packet_free(p);
            return ifm_fail(err, -1, "an ack needs an id and a list");
        }
        break;
    case SIO_CONNECT:
        if (p->data && !json_is_object(p->data)) {
            sio_packet_free(p);
            return ifm_fail(err, -1, "CONNECT's data must be an object (the auth)");
        }
        break;
    default:
        break;
    }
    return 0;
}

void sio_packet_free(sio_packet *p)
{
    json_decref(p->data);
    p->data = NULL;
}

void sio_msg_free(sio_msg *m)
{
    sio_packet_free(&m->pkt);
    for (unsigned i = 0; i < m->natt; i++)
        free(m->att[i]);
    memset(m, 0, sizeof *m);
}

static void asm_drop(sio_asm *a)
{
    sio_msg_free(&a->cur);
    a->waiting = false;
    a->bytes = 0;
}

int sio_asm_text(sio_asm *a, const char *text, size_t len, sio_msg *out, sio_err *err)
{
    memset(out, 0, sizeof *out);
    if (a->waiting) {
        unsigned want = a->cur.pkt.attachments, got = a->cur.natt;
        asm_drop(a);
        return ifm_fail(err, -1, "a text packet arrived while %u of %u attachments were still expected", want - got,
                        want);
    }
    sio_packet p;
    if (sio_parse(text, len, &p, err))
        return -1;
    if (p.attachments) {
        a->cur.pkt = p;
        a->waiting = true;
        a->bytes = 0;
        return 0;
    }
    out->pkt = p;
    return 1;
}

int sio_asm_binary(sio_asm *a, uint8_t *bytes, size_t len, sio_msg *out, sio_err *err)
{
    memset(out, 0, sizeof *out);
    if (!a->waiting) {
        free(bytes);
        return ifm_fail(err, -1, "a binary attachment arrived without a binary packet announcing it");
    }
    if (a->bytes + len > SIO_MAX_ATTACHED) {
        free(bytes);
        asm_drop(a);
        return ifm_fail(err, -1, "attachments of one event exceed %u bytes", SIO_MAX_ATTACHED);
    }
    a->cur.att[a->cur.natt] = bytes;
    a->cur.attlen[a->cur.natt] = len;
    a->cur.natt++;
    a->bytes += len;
    if (a->cur.natt < a->cur.pkt.attachments)
        return 0;
    *out = a->cur;
    memset(&a->cur, 0, sizeof a->cur);
    a->waiting = false;
    a->bytes = 0;
    return 1;
}

void sio_asm_free(sio_asm *a)
{
    asm_drop(a);
}

static int to_mp(const json_t *j, const sio_msg *m, ifm_enc *e, int depth, sio_err *err)
{
    if (depth > SIO_MAX_JSON_DEPTH)
        return ifm_fail(err, -1, "JSON nested deeper than %d levels", SIO_MAX_JSON_DEPTH);
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        json_t *ph = json_object_get(j, "_placeholder");
        if (ph && json_is_true(ph)) {
            json_t *num = json_object_get(j, "num");
            if (!json_is_integer(num) || json_integer_value(num) < 0 || json_integer_value(num) >= (json_int_t)m->natt)
                return ifm_fail(err, -1, "placeholder without a valid \"num\" (the message has %u attachments)",
                                m->natt);
            size_t k = (size_t)json_integer_value(num);
            ifm_enc_bin(e, m->att[k], m->attlen[k]);
            return 0;
        }
        ifm_enc_map(e, (uint32_t)json_object_size(j));
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)j, key, v)
        {
            ifm_enc_str(e, key);
            if (to_mp(v, m, e, depth + 1, err))
                return -1;
        }
        return 0;
    }
    case JSON_ARRAY: {
        ifm_enc_array(e, (uint32_t)json_array_size(j));
        for (size_t i = 0; i < json_array_size(j); i++)
            if (to_mp(json_array_get(j, i), m, e, depth + 1, err))
                return -1;
        return 0;
    }
    case JSON_STRING:
        ifm_enc_strn(e, json_string_value(j), json_string_length(j));
        return 0;
    case JSON_INTEGER:
        ifm_enc_int(e, json_integer_value(j));
        return 0;
    case JSON_REAL:
        ifm_enc_double(e, json_real_value(j));
        return 0;
    case JSON_TRUE:
    case JSON_FALSE:
        ifm_enc_bool(e, json_is_true(j));
        return 0;
    case JSON_NULL:
        ifm_enc_nil(e);
        return 0;
    }
    return ifm_fail(err, -1, "unknown JSON type");
}

int sio_json_to_msgpack(const json_t *j, const sio_msg *m, ifm_enc *e, sio_err *err)
{
    if (!j)
        return ifm_fail(err, -1, "no value");
    return to_mp(j, m, e, 0, err);
}

char *sio_connect_packet(const char *sid)
{
    return dump_packet('4', "0", json_pack("{s:s}", "sid", sid));
}

char *sio_connect_error_packet(const char *message)
{
    json_t *msg = json_string(message);
    if (!msg)
        msg = json_string("refused");
    return dump_packet('4', "4", json_pack("{s:o}", "message", msg));
}

char *sio_event_packet(const char *name, const char *arg)
{
    json_t *a = json_string(arg);
    if (!a)
        return NULL;
    return dump_packet('4', "2", json_pack("[s, o]", name, a));
}

char *sio_ack_packet(long long id)
{
    char num[24];
    snprintf(num, sizeof num, "3%lld", id);
    return dump_packet('4', num, json_array());
}
