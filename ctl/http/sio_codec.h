/* The Engine.IO v4 (long-polling) and Socket.IO v5 wire formats, the subset the
 * HTTP shim's compatibility face speaks to the old iCEFARM Python clients
 * (python-socketio 5 / python-engineio 4). Pure: no I/O, no MHD, no MQTT, no
 * globals; every function is re-entrant. Every decoder rejects malformed input
 * with a reason in sio_err and never aborts; tests/fuzz/fuzz_sio.c drives them.
 *
 * Engine.IO polling payload: packets separated by 0x1e. A text packet is one
 * type digit ('0' open .. '6' noop) and its data; a binary packet is 'b' and
 * the base64 of its bytes.
 * Socket.IO packet (inside an Engine.IO '4' message): type digit, for binary
 * types "<attachments>-", an optional namespace "/nsp," , an optional ack id,
 * then JSON. A binary event's JSON holds {"_placeholder": true, "num": k} where
 * its k-th attachment goes; the attachments follow as binary Engine.IO packets,
 * possibly in later POSTs (sio_asm keeps a session's half-received event).
 *
 * Ownership: eio_packet.bin, sio_packet.data and sio_msg's attachments are the
 * caller's once returned (free with the matching *_free); strings returned by
 * the encoders are malloc'd. */
#ifndef ICEFARM_SIO_CODEC_H
#define ICEFARM_SIO_CODEC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "icefarm/codec.h"
#include "icefarm/err.h"

#define SIO_MAX_ATTACHMENTS 16                 /* binary attachments of one event */
#define SIO_MAX_ATTACHED (12u * 1024u * 1024u) /* bytes of attachments of one event */
#define SIO_MAX_JSON_DEPTH 16                  /* nesting of an event's JSON (msgpack allows 8 below) */
#define SIO_NSP_MAX 64

/* A decoder's reason: the error convention's fixed buffer (icefarm/err.h). */
typedef ifm_err sio_err;

/* ---- Engine.IO ---- */

typedef struct {
    char type;        /* '0'..'6', or 'b' for a binary message */
    const char *data; /* text packets: the bytes after the type (points into the body) */
    size_t len;
    uint8_t *bin; /* 'b': the decoded bytes, malloc'd (eio_packet_free) */
    size_t binlen;
} eio_packet;

/* The next packet of a polling payload, from *off. Returns 1 (a packet), 0 (the
 * end), -1 (a malformed packet: empty, unknown type, bad base64; err says why and
 * *off is past it). */
int eio_next(const char *body, size_t len, size_t *off, eio_packet *p, sio_err *err);
void eio_packet_free(eio_packet *p);

/* The handshake: 0{"sid":...,"upgrades":[],"pingInterval":...,"pingTimeout":...,"maxPayload":...} */
char *eio_open_packet(const char *sid, unsigned ping_interval_ms, unsigned ping_timeout_ms, size_t max_payload);

/* ---- Socket.IO ---- */

enum {
    SIO_CONNECT = 0,
    SIO_DISCONNECT = 1,
    SIO_EVENT = 2,
    SIO_ACK = 3,
    SIO_CONNECT_ERROR = 4,
    SIO_BINARY_EVENT = 5,
    SIO_BINARY_ACK = 6,
};

typedef struct {
    int type;
    unsigned attachments;
    char nsp[SIO_NSP_MAX]; /* "/" when the packet names none */
    long long ack_id;      /* -1: none */
    json_t *data;          /* NULL when absent */
} sio_packet;

/* Parses one Socket.IO packet (the data of an Engine.IO '4' message). */
int sio_parse(const char *text, size_t len, sio_packet *p, sio_err *err);
void sio_packet_free(sio_packet *p);

/* A complete message: a packet and, for binary types, all its attachments. */
typedef struct {
    sio_packet pkt;
    uint8_t *att[SIO_MAX_ATTACHMENTS];
    size_t attlen[SIO_MAX_ATTACHMENTS];
    unsigned natt;
} sio_msg;
void sio_msg_free(sio_msg *m);

/* One session's reassembly: feed its Engine.IO messages in order. */
typedef struct {
    sio_msg cur;
    bool waiting; /* a binary packet waits for attachments */
    size_t bytes;
} sio_asm;

/* A text message: 1 = *out is a complete message (the caller frees it), 0 = a
 * binary packet now waits for its attachments, -1 = malformed (also when an
 * attachment was still expected: the half message is dropped). */
int sio_asm_text(sio_asm *a, const char *text, size_t len, sio_msg *out, sio_err *err);
/* A binary message (takes `bytes`): 1 = complete, 0 = more needed, -1 = not
 * expected or too large. */
int sio_asm_binary(sio_asm *a, uint8_t *bytes, size_t len, sio_msg *out, sio_err *err);
void sio_asm_free(sio_asm *a);

/* msgpack of a JSON value of message m (e.g. an event argument); placeholders
 * become bin with the attachment's bytes. Returns 0 or -1. */
int sio_json_to_msgpack(const json_t *j, const sio_msg *m, ifm_enc *e, sio_err *err);

/* 40{"sid":"..."} */
char *sio_connect_packet(const char *sid);
/* 44{"message":"..."} */
char *sio_connect_error_packet(const char *message);
/* 42["name","arg"]: an event with one string argument. */
char *sio_event_packet(const char *name, const char *arg);
/* 43<id>[] */
char *sio_ack_packet(long long id);

#endif
