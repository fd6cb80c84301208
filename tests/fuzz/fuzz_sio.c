/* libFuzzer target: the socket.io face's decoder (ctl/http/sio_codec.h). The
 * input is a polling POST body, fed through one session's reassembly exactly
 * as icefarm-http does: Engine.IO packets split on 0x1e, 'b' packets base64,
 * '4' messages parsed as Socket.IO, binary events completed by attachments.
 * Every rejection carries a reason; every completed event converts to msgpack
 * that is one well-formed value (or is refused with a reason). The first byte
 * splits the body in two "POSTs", so reassembly across POSTs is exercised. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sio_codec.h"

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "fuzz_sio: check failed: %s (line %d)\n", #cond, __LINE__);                                \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void completed(sio_msg *m)
{
    CHECK(m->pkt.type >= SIO_CONNECT && m->pkt.type <= SIO_BINARY_ACK);
    CHECK(m->natt == m->pkt.attachments);
    if (m->pkt.data) {
        ifm_enc e;
        ifm_enc_init(&e);
        sio_err err = { "" };
        if (sio_json_to_msgpack(m->pkt.data, m, &e, &err) == 0) {
            ifm_err ierr = { "" };
            /* deeper than msgpack's limit is refused by the scan, with a reason */
            int rc = ifm_msgpack_scan(ifm_enc_data(&e), ifm_enc_size(&e), IFM_MAX_DEPTH, &ierr);
            CHECK(rc == 0 || ierr.msg[0]);
        } else {
            CHECK(err.msg[0]);
        }
        ifm_enc_free(&e);
    }
    if (m->pkt.type == SIO_EVENT || m->pkt.type == SIO_BINARY_EVENT)
        CHECK(json_is_string(json_array_get(m->pkt.data, 0)));
}

static void post(sio_asm *a, const char *body, size_t len)
{
    size_t off = 0;
    eio_packet p;
    sio_err err = { "" };
    int rc;
    while ((rc = eio_next(body, len, &off, &p, &err)) != 0) {
        CHECK(off <= len);
        if (rc < 0) {
            CHECK(err.msg[0]);
            err.msg[0] = '\0';
            continue;
        }
        sio_msg m;
        int got = 0;
        if (p.type == 'b') {
            got = sio_asm_binary(a, p.bin, p.binlen, &m, &err);
            p.bin = NULL;
        } else if (p.type == '4') {
            got = sio_asm_text(a, p.data, p.len, &m, &err);
        }
        eio_packet_free(&p);
        if (got < 0) {
            CHECK(err.msg[0]);
            err.msg[0] = '\0';
        } else if (got == 1) {
            completed(&m);
            sio_msg_free(&m);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t n = size - 1, cut = data[0] % size; /* 0..n */
    char *body = malloc(n + 1);
    CHECK(body);
    memcpy(body, data + 1, n);
    body[n] = '\0';
    sio_asm a;
    memset(&a, 0, sizeof a);
    post(&a, body, cut);
    post(&a, body + cut, n - cut);
    sio_asm_free(&a);
    free(body);
    /* the encoders never produce something the decoder refuses */
    char *pkt = sio_event_packet("event", "{\"serial\":\"S\"}");
    CHECK(pkt && pkt[0] == '4');
    sio_packet sp;
    sio_err err = { "" };
    CHECK(sio_parse(pkt + 1, strlen(pkt) - 1, &sp, &err) == 0 && sp.type == SIO_EVENT);
    sio_packet_free(&sp);
    free(pkt);
    return 0;
}
