/* Lease record codec: msgpack-c packer out, the strict icefarm-base reader in. */
#include "store_codec.h"

#include "icefarm/mp.h"
#include "icefarm/names.h"
#include "icefarm/err.h"

#include <msgpack.h>
#include <string.h>

/* Length-based check shared by the encoder (C strings) and decoder (msgpack str). */
static int text_check_n(const char *what, const char *s, size_t n, size_t max, char *err, size_t errlen)
{
    if (n == 0)
        return ifm_failbuf(err, errlen, -1, "%s is empty", what);
    if (n > max)
        return ifm_failbuf(err, errlen, -1, "%s is %zu bytes (max %zu)", what, n, max);
    if (!ifm_utf8_valid(s, n))
        return ifm_failbuf(err, errlen, -1, "%s is not valid UTF-8", what);
    return 0;
}

int store_text_check(const char *what, const char *s, size_t max, char *err, size_t errlen)
{
    if (!s)
        return ifm_failbuf(err, errlen, -1, "%s is missing", what);
    /* strnlen: never read past max+1 bytes of a caller's unterminated array. */
    return text_check_n(what, s, strnlen(s, max + 1), max, err, errlen);
}

int store_lease_check(const ctl_lease *l, char *err, size_t errlen)
{
    if (store_text_check("serial", l->serial, CTL_SERIAL_MAX, err, errlen) ||
        store_text_check("client", l->client, CTL_CLIENT_MAX, err, errlen) ||
        store_text_check("kind", l->kind, CTL_KIND_MAX, err, errlen) ||
        store_text_check("worker", l->worker, CTL_WORKER_MAX, err, errlen) ||
        (l->tag[0] && store_text_check("tag", l->tag, CTL_TAG_MAX, err, errlen)))
        return -1;
    if (l->args_len > CTL_ARGS_MAX)
        return ifm_failbuf(err, errlen, -1, "args are %zu bytes (max %d)", l->args_len, CTL_ARGS_MAX);
    if (l->args_len && !l->args)
        return ifm_failbuf(err, errlen, -1, "args_len without args");
    return 0;
}

/* msgpack-c write callback into the fixed buffer; fails rather than overflow. */
static int buf_write(void *data, const char *p, size_t n)
{
    store_lease_buf *b = data;
    if (n > sizeof b->buf - b->len)
        return -1;
    memcpy(b->buf + b->len, p, n);
    b->len += n;
    return 0;
}

static int pack_key(msgpack_packer *pk, const char *k)
{
    size_t n = strlen(k);
    return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, k, n);
}

static int pack_text(msgpack_packer *pk, const char *k, const char *v)
{
    size_t n = strlen(v);
    return pack_key(pk, k) || msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, v, n);
}

int store_lease_encode(const ctl_lease *l, store_lease_buf *out, char *err, size_t errlen)
{
    if (store_lease_check(l, err, errlen))
        return -1;
    out->len = 0;
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, buf_write);
    int bad = msgpack_pack_map(&pk, l->tag[0] ? 11 : 10) || pack_key(&pk, "v") ||
        msgpack_pack_uint32(&pk, STORE_LEASE_VERSION) || pack_text(&pk, "s", l->serial) ||
        pack_text(&pk, "c", l->client) || pack_text(&pk, "k", l->kind) || pack_text(&pk, "w", l->worker) ||
        pack_key(&pk, "a") || msgpack_pack_bin(&pk, l->args_len) ||
        (l->args_len && msgpack_pack_bin_body(&pk, l->args, l->args_len)) || pack_key(&pk, "id") ||
        msgpack_pack_uint64(&pk, l->lease_id) || pack_key(&pk, "g") || msgpack_pack_uint64(&pk, l->granted_ms) ||
        pack_key(&pk, "u") || msgpack_pack_uint64(&pk, l->until_ms) || pack_key(&pk, "wn") ||
        (l->warned ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk)) || (l->tag[0] && pack_text(&pk, "t", l->tag));
    if (bad)
        return ifm_failbuf(err, errlen, -1, "lease for %s does not fit %d bytes", l->serial, STORE_LEASE_ENC_MAX);
    return 0;
}

/* Every field at its limit fits the record buffer: the map header, eleven keys
 * (24 bytes, with the tag's), the version (uint32), five str8 texts, a bin16 of
 * args, three uint64 and a bool: 4642 bytes today. */
_Static_assert(1 + 24 + 5 + 5 * 2 + CTL_SERIAL_MAX + CTL_CLIENT_MAX + CTL_KIND_MAX + CTL_WORKER_MAX + CTL_TAG_MAX + 3 +
                       CTL_ARGS_MAX + 3 * 9 + 1 <=
                   STORE_LEASE_ENC_MAX,
               "STORE_LEASE_ENC_MAX must hold a lease with every field at its limit");
_Static_assert(CTL_ARGS_MAX <= 0xffff && CTL_SERIAL_MAX <= 0xff && CTL_CLIENT_MAX <= 0xff && CTL_KIND_MAX <= 0xff &&
                   CTL_WORKER_MAX <= 0xff && CTL_TAG_MAX <= 0xff,
               "the size above assumes a bin16 and str8 headers");

/* Field bits, to catch missing and repeated keys. */
enum {
    F_S = 1,
    F_C = 2,
    F_K = 4,
    F_W = 8,
    F_A = 16,
    F_ID = 32,
    F_G = 64,
    F_U = 128,
    F_WN = 256,
    F_ALL = 511, /* required */
    F_T = 512    /* optional: the lease's tag */
};

static const char *const field_names[] = { "s", "c", "k", "w", "a", "id", "g", "u", "wn", "t" };

/* Reads a str value into a fixed array after checking it like the encoder does. */
static int read_text(ifm_mp *r, const char *what, char *dst, size_t max, char *err, size_t errlen)
{
    const char *s;
    uint32_t n;
    if (ifm_mp_str(r, &s, &n))
        return ifm_failbuf(err, errlen, -1, "field %s: %s", what, r->why);
    if (text_check_n(what, s, n, max, err, errlen))
        return -1;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return 0;
}

static int read_u64(ifm_mp *r, const char *what, uint64_t *v, char *err, size_t errlen)
{
    if (ifm_mp_uint(r, v))
        return ifm_failbuf(err, errlen, -1, "field %s: %s", what, r->why);
    return 0;
}

/* Decodes one key/value pair into `out`, marking its bit in *seen. */
static int read_field(ifm_mp *r, ctl_lease *out, unsigned *seen, char *err, size_t errlen)
{
    const char *k;
    uint32_t kn;
    if (ifm_mp_str(r, &k, &kn))
        return ifm_failbuf(err, errlen, -1, "key: %s", r->why);
    unsigned bit = 0;
    for (unsigned i = 0; i < sizeof field_names / sizeof *field_names; i++)
        if (strlen(field_names[i]) == kn && memcmp(field_names[i], k, kn) == 0)
            bit = 1u << i;
    if (!bit) {
        /* The key came from disk: show it only if it is short printable ASCII. */
        bool show = kn <= 16;
        for (uint32_t i = 0; show && i < kn; i++)
            show = k[i] >= 0x20 && k[i] < 0x7f;
        return show ? ifm_failbuf(err, errlen, -1, "unknown key \"%.*s\"", (int)kn, k)
                    : ifm_failbuf(err, errlen, -1, "unknown key of %u bytes", kn);
    }
    if (*seen & bit)
        return ifm_failbuf(err, errlen, -1, "repeated key \"%.*s\"", (int)kn, k);
    *seen |= bit;
    switch (bit) {
    case F_S:
        return read_text(r, "serial", out->serial, CTL_SERIAL_MAX, err, errlen);
    case F_C:
        return read_text(r, "client", out->client, CTL_CLIENT_MAX, err, errlen);
    case F_K:
        return read_text(r, "kind", out->kind, CTL_KIND_MAX, err, errlen);
    case F_W:
        return read_text(r, "worker", out->worker, CTL_WORKER_MAX, err, errlen);
    case F_A: {
        uint32_t n;
        if (ifm_mp_bin(r, &out->args, &n))
            return ifm_failbuf(err, errlen, -1, "field args: %s", r->why);
        if (n > CTL_ARGS_MAX)
            return ifm_failbuf(err, errlen, -1, "args are %u bytes (max %d)", n, CTL_ARGS_MAX);
        out->args_len = n;
        if (n == 0)
            out->args = NULL;
        return 0;
    }
    case F_ID:
        return read_u64(r, "id", &out->lease_id, err, errlen);
    case F_G:
        return read_u64(r, "g", &out->granted_ms, err, errlen);
    case F_U:
        return read_u64(r, "u", &out->until_ms, err, errlen);
    case F_T:
        return read_text(r, "tag", out->tag, CTL_TAG_MAX, err, errlen);
    default:
        if (ifm_mp_bool(r, &out->warned))
            return ifm_failbuf(err, errlen, -1, "field wn: %s", r->why);
        return 0;
    }
}

static int decode(const void *key, size_t keylen, const void *val, size_t vallen, ctl_lease *out, char *err,
                  size_t errlen)
{
    char why[160], fwhy[200];
    if (vallen > STORE_LEASE_ENC_MAX)
        return ifm_failbuf(err, errlen, -1, "record is %zu bytes (max %d)", vallen, STORE_LEASE_ENC_MAX);
    ifm_mp r;
    ifm_mp_init(&r, val, vallen, why, sizeof why);
    uint32_t count;
    if (ifm_mp_map(&r, &count))
        return ifm_failbuf(err, errlen, -1, "record: %s", why);
    if (count == 0)
        return ifm_failbuf(err, errlen, -1, "record: empty map");
    /* The version comes first so that everything after it is read knowing it. */
    const char *k;
    uint32_t kn;
    uint64_t version;
    if (ifm_mp_str(&r, &k, &kn))
        return ifm_failbuf(err, errlen, -1, "record: first key: %s", why);
    if (kn != 1 || k[0] != 'v')
        return ifm_failbuf(err, errlen, -1, "record: first key is not \"v\" (version)");
    if (ifm_mp_uint(&r, &version))
        return ifm_failbuf(err, errlen, -1, "record: version: %s", why);
    if (version != STORE_LEASE_VERSION)
        return ifm_failbuf(err, errlen, -1, "record: unsupported version %llu (this build reads %d)",
                           (unsigned long long)version, STORE_LEASE_VERSION);
    unsigned seen = 0;
    for (uint32_t i = 1; i < count; i++)
        if (read_field(&r, out, &seen, fwhy, sizeof fwhy))
            return ifm_failbuf(err, errlen, -1, "record: %s", fwhy);
    if ((seen & F_ALL) != F_ALL) {
        for (unsigned i = 0; i < sizeof field_names / sizeof *field_names; i++)
            if (!(seen & (1u << i)))
                return ifm_failbuf(err, errlen, -1, "record: missing key \"%s\"", field_names[i]);
    }
    if (!ifm_mp_done(&r))
        return ifm_failbuf(err, errlen, -1, "record: %zu trailing bytes", r.n - r.off);
    if (keylen != strlen(out->serial) || memcmp(key, out->serial, keylen) != 0)
        return ifm_failbuf(err, errlen, -1, "record: serial \"%s\" does not match its key", out->serial);
    return 0;
}

int store_lease_decode(const void *key, size_t keylen, const void *val, size_t vallen, ctl_lease *out, char *err,
                       size_t errlen)
{
    memset(out, 0, sizeof *out);
    /* A half-decoded lease must never be mistaken for a real one. */
    if (decode(key, keylen, val, vallen, out, err, errlen)) {
        memset(out, 0, sizeof *out);
        return -1;
    }
    return 0;
}
