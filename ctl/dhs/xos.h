/* The DCSS "xos" protocol (DCS protocol 1.0 and 2.0): a pure codec, no I/O.
 *
 * What the wire looks like (as the SSRL DCSS server, dcss/src, speaks it):
 *  - protocol 1: every message is a 200-byte block, the text then a NUL then padding
 *    (NULs, spaces or garbage; some senders pad with spaces and no NUL at all);
 *  - protocol 2: a 26-byte ASCII header holding two decimal numbers, the text length T
 *    and the binary length B (separated and padded by spaces or NULs, in several
 *    shapes), then T bytes of text (with or without a trailing NUL), then B bytes of
 *    binary that a DHS reads and discards;
 *  - the handshake is always protocol 1, whatever the DHS's level.
 *
 * Text is a Tcl word list: words separated by white space, a word that starts with
 * '{' runs to its matching '}' (braces nest). DCSS itself parses nothing beyond the
 * first words, and blanks `[ ] $ ; "` and newlines in what a DHS sends before its
 * scripts evaluate it as Tcl, so what we send must never contain them.
 *
 * The reader never gives up on a stream for a bad message: an empty, non-ASCII,
 * truncated (protocol 1 without its NUL) or overlong message is reported as
 * XOS_SKIPPED with a reason and the next message is read as usual. Only a protocol-2
 * header that cannot be parsed, or that announces more than XOS2_LEN_MAX bytes, loses
 * the framing (XOS_LOST): the caller must close the connection.
 *
 * The formatter refuses (with a reason) rather than truncates: a message that would
 * be longer than its limit, or a word that is not Tcl-safe, fails the whole message.
 *
 * Ownership and re-entrancy: every function works only on the structures passed in;
 * there is no global state, so separate readers can be used from anywhere. Pointers
 * into a reader's text (xos_event.text, xos_msg words) stay valid until the next
 * xos_read() on that reader.
 */
#ifndef ICEFARM_XOS_H
#define ICEFARM_XOS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define XOS1_BLOCK 200
#define XOS1_TEXT_MAX 199 /* DCSS copies at most 200 bytes: longer text loses its NUL */
#define XOS2_HEADER 26
#define XOS2_LEN_MAX (1u << 20) /* a header announcing more text or binary: framing lost */
#define XOS_TEXT_MAX 16384      /* longest inbound text kept; longer messages are skipped */
#define XOS_OUT_MAX 1000        /* our budget for any outbound protocol-2 text */
#define XOS_FRAME_MAX (XOS2_HEADER + XOS_OUT_MAX + 1)
#define XOS_NAME_MAX 39     /* DHS, device and operation names (DEVICE_NAME_SIZE 40) */
#define XOS_HANDLE_MAX 80   /* operation handles */
#define XOS_STRING_MAX 1879 /* string contents DCSS stores (MAX_STRING_SIZE 1880) */
#define XOS_WORDS_MAX 64    /* words in one inbound message */

typedef enum {
    XOS_PROTO_1 = 1,
    XOS_PROTO_2 = 2
} xos_proto;

typedef struct {
    char msg[192];
} xos_err;

/* ---- reading a stream ---- */

typedef enum {
    XOS_MORE = 0, /* the bytes were consumed, no message is complete yet */
    XOS_MESSAGE,  /* ev->text is a message (NUL-terminated, trimmed, printable ASCII) */
    XOS_SKIPPED,  /* a message was read and dropped: ev->reason says why; go on */
    XOS_LOST      /* the framing is lost (ev->reason): close the connection */
} xos_status;

typedef struct {
    char *text;       /* XOS_MESSAGE: into the reader's buffer, writable (the tokenizer cuts it) */
    size_t len;       /* strlen(text) */
    size_t binary;    /* protocol 2: binary bytes that came with it and were discarded */
    char reason[192]; /* XOS_SKIPPED, XOS_LOST */
} xos_event;

typedef struct {
    xos_proto proto;
    int phase;
    bool lost;
    size_t have;               /* bytes collected in block[] (header / block) or text[] */
    size_t text_len, bin_len;  /* protocol 2: T and B of the current message */
    size_t skip;               /* bytes still to discard */
    bool skipping_text;        /* the text itself is being discarded (overlong) */
    uint8_t block[XOS1_BLOCK]; /* protocol-1 block or protocol-2 header */
    char text[XOS_TEXT_MAX + 1];
} xos_reader;

void xos_reader_init(xos_reader *r, xos_proto proto);
/* Switches the framing for the bytes that follow (after the protocol-1 handshake).
 * Only between messages: the reader must not be in the middle of one. */
void xos_reader_set_proto(xos_reader *r, xos_proto proto);
/* True when no partial message is buffered. */
bool xos_reader_idle(const xos_reader *r);
/* Consumes bytes from data[0..len) until one event is complete or the bytes run out;
 * returns how many were consumed (call again with the rest). *ev is filled for
 * XOS_MESSAGE, XOS_SKIPPED and XOS_LOST. After XOS_LOST every call returns XOS_LOST. */
size_t xos_read(xos_reader *r, const uint8_t *data, size_t len, xos_status *st, xos_event *ev);

/* Parses a 26-byte protocol-2 header: two non-negative decimal numbers separated by
 * white space or NULs, padded with spaces or NULs, each at most XOS2_LEN_MAX.
 * Returns 0, or -1 with the reason. Exposed for tests and the fuzzer. */
int xos2_parse_header(const uint8_t hdr[XOS2_HEADER], size_t *text_len, size_t *bin_len, xos_err *err);

/* ---- framing outbound text ---- */

/* Frames `text` for `proto` into out (at least XOS_FRAME_MAX bytes): protocol 1 as a
 * NUL-padded 200-byte block (text at most 199 bytes), protocol 2 in DCSS's own shape
 * "%12d %12d " + text + NUL with T = strlen + 1 and B = 0 (text at most XOS_OUT_MAX).
 * The text must be printable ASCII (no control characters, no newline). Returns the
 * frame length, or -1 with the reason: nothing is ever cut short. */
int xos_frame(xos_proto proto, const char *text, uint8_t *out, size_t cap, xos_err *err);

/* The handshake answer, always a 200-byte protocol-1 block:
 * "htos_client_is_hardware <name>". Returns 200 or -1 (bad name). */
int xos_handshake_reply(const char *dhs_name, uint8_t out[XOS1_BLOCK], xos_err *err);

/* A DHS, device or operation name: 1..XOS_NAME_MAX Tcl-safe characters (see
 * xos_word_safe). */
bool xos_name_valid(const char *name);

/* ---- words ---- */

/* Splits `text` in place into words: white space separates words, a word that starts
 * with '{' ends at its matching '}' and must be followed by white space or the end
 * (the braces are removed; nested braces stay in the word). Other braces, quotes and
 * backslashes are ordinary characters (DCSS forwards text without Tcl substitution).
 * Errors: an unterminated brace group, characters right after a closing brace, more
 * than XOS_WORDS_MAX words. */
typedef struct {
    int n;
    char *w[XOS_WORDS_MAX];
    bool braced[XOS_WORDS_MAX];
} xos_words;
int xos_tokenize(char *text, xos_words *words, xos_err *err);

/* A word we may send bare: 1 or more printable ASCII characters, none of white space,
 * `[ ] $ ; " \ { }`, and not starting with PRIVATE (DCSS masks those: session ids
 * must never be echoed). */
bool xos_word_safe(const char *w);

/* ---- the message catalogue ---- */

typedef enum {
    XOS_UNKNOWN = 0,
    /* DCSS -> DHS */
    XOS_STOC_SEND_CLIENT_TYPE,
    XOS_STOH_REGISTER_REAL_MOTOR,
    XOS_STOH_REGISTER_PSEUDO_MOTOR,
    XOS_STOH_REGISTER_ION_CHAMBER,
    XOS_STOH_REGISTER_SHUTTER,
    XOS_STOH_REGISTER_OPERATION,
    XOS_STOH_REGISTER_ENCODER,
    XOS_STOH_REGISTER_STRING,
    XOS_STOH_REGISTER_OBJECT,
    XOS_STOH_SET_MOTOR_DEPENDENCY,
    XOS_STOH_SET_MOTOR_CHILDREN,
    XOS_STOH_START_OPERATION,
    XOS_STOH_STOP_OPERATION,
    XOS_STOH_ABORT_ALL,
    XOS_STOH_SET_STRING,
    XOS_STOH_CONFIGURE_STRING,
    XOS_STOH_CONFIGURE_OPERATION,
    XOS_STOH_START_MOTOR_MOVE,
    XOS_STOH_ABORT_MOTOR_MOVE,
    XOS_STOH_SET_MOTOR_POSITION,
    XOS_STOH_CORRECT_MOTOR_POSITION,
    XOS_STOH_CONFIGURE_REAL_MOTOR,
    XOS_STOH_CONFIGURE_PSEUDO_MOTOR,
    XOS_STOH_START_OSCILLATION,
    XOS_STOH_START_VECTOR_MOVE,
    XOS_STOH_STOP_VECTOR_MOVE,
    XOS_STOH_CHANGE_VECTOR_SPEED,
    XOS_STOH_SET_SHUTTER_STATE,
    XOS_STOH_READ_ION_CHAMBERS,
    XOS_STOH_GET_ENCODER,
    XOS_STOH_SET_ENCODER,
    XOS_STOH_CONFIGURE_ENCODER,
    XOS_STOH_CONFIGURE_ION_CHAMBER,
    XOS_STOH_CONFIGURE_SHUTTER,
    XOS_STOH_CONFIGURE_OBJECT,
    /* DHS -> DCSS (what DCSS's dispatch table knows) */
    XOS_HTOS_CLIENT_IS_HARDWARE,
    XOS_HTOS_OPERATION_UPDATE,
    XOS_HTOS_OPERATION_COMPLETED,
    XOS_HTOS_START_OPERATION,
    XOS_HTOS_SET_STRING_COMPLETED,
    XOS_HTOS_SEND_CONFIGURATION,
    XOS_HTOS_CONFIGURE_DEVICE,
    XOS_HTOS_MOTOR_MOVE_STARTED,
    XOS_HTOS_UPDATE_MOTOR_POSITION,
    XOS_HTOS_MOTOR_MOVE_COMPLETED,
    XOS_HTOS_REPORT_SHUTTER_STATE,
    XOS_HTOS_REPORT_ION_CHAMBERS,
    XOS_HTOS_GET_ENCODER_COMPLETED,
    XOS_HTOS_SET_ENCODER_COMPLETED,
    XOS_HTOS_NOTE,
    XOS_HTOS_LOG,
    XOS_MSG_COUNT
} xos_type;

/* A parsed message: its type, name and arguments (words after the name). For
 * stoh_set_string, stoh_configure_string and htos_set_string_completed, `rest` is the
 * contents exactly as sent (the text after the fixed words, DCSS's own rule), else NULL. */
typedef struct {
    xos_type type;
    const char *name;
    int argc;
    char **argv;
    const char *rest;
    xos_words words;
} xos_msg;

/* The message name of a type ("stoh_start_operation"), or NULL. */
const char *xos_type_name(xos_type t);
/* Parses a message text (from xos_read) in place. Returns 0, or -1 with the reason:
 * an unknown message (m->type is XOS_UNKNOWN and m->name is its first word), too
 * few or too many arguments, a name or handle over its limit or not Tcl-safe, bad
 * words. */
int xos_parse(char *text, xos_msg *m, xos_err *err);

/* ---- formatting outbound text ---- */

typedef struct {
    char text[XOS_OUT_MAX + 1];
    size_t len, limit;
    bool failed;
    xos_err err;
} xos_out;

/* Starts a message named `name` (a Tcl-safe word) that may be at most `limit` bytes
 * (XOS1_TEXT_MAX for protocol 1, XOS_OUT_MAX for protocol 2). */
void xos_out_begin(xos_out *o, const char *name, size_t limit);
/* Appends a bare word (xos_word_safe). */
void xos_out_word(xos_out *o, const char *w);
void xos_out_wordf(xos_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void xos_out_uint(xos_out *o, uint64_t v);
/* Appends {text}: printable ASCII and spaces, none of `[ ] $ ; " \ { }`, no word
 * starting with PRIVATE; may be empty ({}). */
void xos_out_group(xos_out *o, const char *text);
/* Appends a Tcl list as it is (string contents): printable ASCII, none of
 * `[ ] $ ; " \`, braces balanced, no PRIVATE word. */
void xos_out_list(xos_out *o, const char *list);
/* Ends the message: 0 and o->text, or -1 and the first reason something was refused. */
int xos_out_end(xos_out *o, xos_err *err);

/* Makes free human text (an error from the farm, say) safe for xos_out_group: unsafe
 * characters become look-alikes (`"`->`'`, `[`->`(`, `]`->`)`, `{`->`(`, `}`->`)`,
 * `$`->`S`, `;`->`,`, `\`->`/`, control and non-ASCII bytes -> `?`), PRIVATE words
 * are masked, and text longer than cap - 1 ends in "..." (this is a detail's own
 * budget, chosen by the caller; messages themselves are never cut). */
void xos_safe_text(char *dst, size_t cap, const char *src);

#endif
