/* Every size limit of the protocol, in one place, with their relations checked
 * at compile time. Buffers are sized with these (the *_MAX of a string includes
 * its NUL); decoders, the lease store, the broker plugin and the worker all use
 * the same numbers, so a name one of them accepts fits everywhere else.
 *
 * Header only; no dependencies.
 */
#ifndef ICEFARM_LIMITS_H
#define ICEFARM_LIMITS_H

#define IFM_PROTO_VERSION 1

#define IFM_SERIAL_MAX 64 /* a board serial (a USB serial string), incl. NUL: 63 bytes */
#define IFM_NAME_MAX 128  /* client, user and worker names, incl. NUL: 127 bytes */
#define IFM_KIND_MAX 32   /* a board kind ("pulsecount"), incl. NUL: 31 bytes */
#define IFM_TAG_MAX 128   /* a lease's tag (free text, may be empty), incl. NUL: 127 bytes */
#define IFM_VERB_MAX 32   /* a control verb (icefarm/ctl/req/<verb>), incl. NUL */
#define IFM_ID_MAX 96     /* evaluation and batch ids, incl. NUL */
#define IFM_LEAF_MAX 32   /* the last level of a topic ("state", "event"), incl. NUL */
#define IFM_TOPIC_MAX 256 /* any topic icefarm builds, incl. NUL */

#define IFM_MAX_SERIALS 4096       /* serials in one request, boards in one worker birth */
#define IFM_MAX_KINDS 16           /* kinds one worker offers, kinds in the availability map */
#define IFM_MAX_ARGS 4096          /* bytes of a reservation's opaque msgpack `args`, stored with the lease */
#define IFM_MAX_FILES 256          /* bitstreams in one evaluate command */
#define IFM_BITSTREAM_SIZE 104090u /* one iCE40UP5K bitstream */

/* Large enough for 80 bitstreams (104,090 bytes each) in one command, or a UF2
 * image for the RP2350's whole flash. */
#define IFM_MAX_PAYLOAD (12u * 1024u * 1024u)
/* Nesting of msgpack containers in any payload (the root map is level 1). */
#define IFM_MAX_DEPTH 8
/* The most any caller of the msgpack reader may ask for (it bounds its stack). */
#define IFM_MP_DEPTH_LIMIT 32

/* A serial is a name (one topic level), so a name buffer holds any serial. */
_Static_assert(IFM_SERIAL_MAX <= IFM_NAME_MAX, "a serial must fit a name buffer");
_Static_assert(IFM_KIND_MAX <= IFM_NAME_MAX, "a kind must fit a name buffer");
_Static_assert(IFM_VERB_MAX <= IFM_NAME_MAX, "a verb must fit a name buffer");
/* The longest topics: icefarm/worker/<name>/<leaf>, icefarm/client/<name>/<leaf>,
 * icefarm/<serial>/<leaf>/<leaf>, icefarm/ctl/req/<verb>. */
_Static_assert(sizeof "icefarm/worker/" - 1 + IFM_NAME_MAX - 1 + 1 + IFM_LEAF_MAX - 1 < IFM_TOPIC_MAX,
               "a worker or client topic must fit IFM_TOPIC_MAX");
_Static_assert(sizeof "icefarm/" - 1 + IFM_SERIAL_MAX - 1 + 2 * IFM_LEAF_MAX < IFM_TOPIC_MAX,
               "a board topic must fit IFM_TOPIC_MAX");
_Static_assert(sizeof "icefarm/ctl/req/" - 1 + IFM_VERB_MAX - 1 < IFM_TOPIC_MAX, "a request topic must fit");
_Static_assert(IFM_TOPIC_MAX <= 65536, "MQTT topics are at most 65535 bytes");
/* MQTT's largest packet is 268,435,455 bytes; the payload limit stays far below. */
_Static_assert(IFM_MAX_PAYLOAD < 268435455u - IFM_TOPIC_MAX - 1024u, "a payload must fit one MQTT packet");
_Static_assert(IFM_MAX_PAYLOAD >= 80u * IFM_BITSTREAM_SIZE + 64u * 1024u, "80 bitstreams must fit one command");
/* A reserve_serials request naming IFM_MAX_SERIALS serials of the longest kind
 * (each a str8 of up to 63 bytes: 2 + 63) must fit one payload. */
_Static_assert((unsigned long)IFM_MAX_SERIALS *(2 + IFM_SERIAL_MAX - 1) + 1024u < IFM_MAX_PAYLOAD,
               "the largest serial list must fit one payload");
_Static_assert(IFM_MAX_ARGS < IFM_MAX_PAYLOAD, "reserve args must fit one payload");
_Static_assert(IFM_MAX_DEPTH >= 3 && IFM_MAX_DEPTH <= IFM_MP_DEPTH_LIMIT, "depth limit out of range");

#endif
