/* libFuzzer target: the one msgpack reader's typed calls (icefarm/mp.h), as the
 * lease store and the broker plugin use them, and the name rules (names.h).
 *
 * The first byte picks a reason-buffer size; then every byte of a script
 * (the first byte's low bits say how long) picks the next call, and the rest
 * is the input. Invariants: the cursor only moves forward and never past the
 * end; a failed call leaves it where it was and gives a reason; what a call
 * returns points inside the input; a successful skip covers exactly a slice
 * that ifm_mp_scan also accepts. For names: ifm_mqtt_utf8_valid agrees with
 * libmosquitto's mosquitto_validate_utf8 on every input, MQTT UTF-8 implies
 * plain UTF-8, and a valid name never contains '/', '+', '#'. */
#include <mosquitto.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "icefarm/mp.h"
#include "icefarm/names.h"

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "fuzz_mp: check failed: %s (line %d)\n", #cond, __LINE__);                                 \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool inside(const ifm_mp *r, const void *p, uint32_t n)
{
    const uint8_t *b = p;
    return b >= r->p && b <= r->p + r->n && n <= (size_t)(r->p + r->n - b);
}

static void names(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    int n = size > 65536 ? 65536 : (int)size;
    bool mine = ifm_mqtt_utf8_valid(s, (size_t)n);
    /* libmosquitto's check (Debian 12's 2.0.11) does not check that a multi-byte
     * sequence fits in its input: "ddd\xf0" with len 4 is accepted when the bytes
     * after it happen to be continuation bytes. Give it a copy followed by NULs,
     * which no sequence may continue with, so it judges the input alone. */
    char *padded = malloc((size_t)n + 4);
    CHECK(padded != NULL);
    memcpy(padded, s, (size_t)n);
    memset(padded + n, 0, 4);
    bool mosq = mosquitto_validate_utf8(padded, n) == MOSQ_ERR_SUCCESS;
    free(padded);
    CHECK(mine == mosq);
    CHECK(!mine || ifm_utf8_valid(s, (size_t)n));
    char name[IFM_NAME_MAX];
    size_t k = size < sizeof name - 1 ? size : sizeof name - 1;
    memcpy(name, data, k);
    name[k] = '\0';
    const char *why = ifm_name_problem(name, sizeof name);
    CHECK((why == NULL) == ifm_name_valid(name, sizeof name));
    if (!why) {
        CHECK(strpbrk(name, "/+#") == NULL && name[0] != '$' && name[0] != '\0');
        CHECK(mosquitto_validate_utf8(name, (int)strlen(name)) == MOSQ_ERR_SUCCESS);
    }
    CHECK(!ifm_serial_valid(name) || ifm_name_valid(name, IFM_SERIAL_MAX));
    CHECK(!ifm_kind_valid(name) || strlen(name) < IFM_KIND_MAX);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    names(data, size);
    if (size < 2)
        return 0;
    size_t whylen = data[0] % 64; /* 0: no reason buffer */
    size_t nscript = 1 + data[1] % 16;
    if (size < 2 + nscript)
        return 0;
    const uint8_t *script = data + 2;
    const uint8_t *in = data + 2 + nscript;
    size_t n = size - 2 - nscript;
    char why[64];
    ifm_mp r;
    ifm_mp_init(&r, in, n, whylen ? why : NULL, whylen);
    for (size_t i = 0; i < nscript; i++) {
        size_t before = r.off;
        uint32_t cnt = 0;
        const char *s = NULL;
        const uint8_t *b = NULL;
        uint64_t v;
        bool bv;
        char out[IFM_NAME_MAX];
        int rc;
        int op = script[i] % 9;
        switch (op) {
        case 0:
            rc = ifm_mp_map(&r, &cnt);
            CHECK(rc || (uint64_t)cnt * 2 <= ifm_mp_left(&r));
            break;
        case 1:
            rc = ifm_mp_array(&r, &cnt);
            CHECK(rc || cnt <= ifm_mp_left(&r));
            break;
        case 2:
            rc = ifm_mp_str(&r, &s, &cnt);
            CHECK(rc || (inside(&r, s, cnt) && r.off == (size_t)((const uint8_t *)s - r.p) + cnt));
            break;
        case 3:
            rc = ifm_mp_bin(&r, &b, &cnt);
            CHECK(rc || (inside(&r, b, cnt) && r.off == (size_t)(b - r.p) + cnt));
            break;
        case 4:
            rc = ifm_mp_uint(&r, &v);
            break;
        case 5:
            rc = ifm_mp_bool(&r, &bv);
            break;
        case 6:
            rc = ifm_mp_cstr(&r, out, 1 + script[i] % sizeof out);
            CHECK(rc || (out[0] && strlen(out) < sizeof out));
            break;
        default: {
            int depth = script[i] % (IFM_MAX_DEPTH + 2);
            rc = ifm_mp_skip(&r, depth);
            if (rc == 0)
                CHECK(ifm_mp_scan(r.p + before, r.off - before, depth, NULL, 0) == 0);
            break;
        }
        }
        CHECK(rc == 0 || rc == IFM_EBADMSG);
        CHECK(r.off <= r.n);
        if (rc) {
            CHECK(r.off == before);
            CHECK(whylen < 2 || why[0] != '\0');
            CHECK(!whylen || strlen(why) < whylen);
        } else {
            CHECK(r.off > before);
        }
    }
    return 0;
}
