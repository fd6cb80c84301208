/* libFuzzer target: the xos codec of icefarm-dhs (ctl/dhs/xos.h).
 *
 * The input is a byte stream from "DCSS". The first byte picks the framing and a
 * chunk size; the stream is read whole and in chunks, and both readings must give
 * the same events. Every message must be trimmed printable ASCII; every skip and
 * loss must carry a reason; a lost stream stays lost; the reader always makes
 * progress. Each message is parsed, and its words are sent back through the
 * formatter and the framer: whatever the formatter accepts must read back as the
 * same words. Free text made safe by xos_safe_text must always be accepted. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xos.h"

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "fuzz_xos: check failed: %s (line %d)\n", #cond, __LINE__);                                \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    xos_status st;
    uint32_t hash; /* of the text or the reason */
} ev_rec;

static uint32_t fnv(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* Sends the parsed words back out and reads them in again. */
static void round_trip(const xos_msg *m)
{
    xos_out o;
    xos_out_begin(&o, m->name, XOS_OUT_MAX);
    for (int i = 0; i < m->argc; i++) {
        if (m->words.braced[i + 1])
            xos_out_group(&o, m->argv[i]);
        else
            xos_out_word(&o, m->argv[i]);
    }
    xos_err err;
    if (xos_out_end(&o, &err)) {
        CHECK(err.msg[0]);
        return;
    }
    uint8_t frame[XOS_FRAME_MAX];
    int n = xos_frame(XOS_PROTO_2, o.text, frame, sizeof frame, &err);
    CHECK(n > 0);
    xos_reader *r = malloc(sizeof *r);
    CHECK(r);
    xos_reader_init(r, XOS_PROTO_2);
    xos_status st;
    xos_event ev;
    CHECK(xos_read(r, frame, (size_t)n, &st, &ev) == (size_t)n);
    CHECK(st == XOS_MESSAGE);
    xos_words w;
    CHECK(xos_tokenize(ev.text, &w, &err) == 0);
    CHECK(w.n == m->argc + 1);
    CHECK(strcmp(w.w[0], m->name) == 0);
    for (int i = 0; i < m->argc; i++)
        CHECK(strcmp(w.w[i + 1], m->argv[i]) == 0);
    free(r);
}

static void check_message(const xos_event *ev)
{
    CHECK(ev->text && ev->len == strlen(ev->text) && ev->len > 0);
    CHECK(ev->text[0] != ' ' && ev->text[ev->len - 1] != ' ' && ev->text[ev->len - 1] != '\n');
    for (size_t i = 0; i < ev->len; i++) {
        unsigned char c = (unsigned char)ev->text[i];
        CHECK((c >= 0x20 && c <= 0x7e) || c == '\t' || c == '\n' || c == '\r');
    }
    char *copy = strdup(ev->text);
    CHECK(copy);
    xos_msg *m = malloc(sizeof *m);
    CHECK(m);
    xos_err err = { "" };
    if (xos_parse(copy, m, &err) == 0) {
        CHECK(m->type != XOS_UNKNOWN && m->name && m->argc >= 0);
        CHECK(strcmp(xos_type_name(m->type), m->name) == 0 || m->type == XOS_HTOS_CLIENT_IS_HARDWARE);
        round_trip(m);
    } else {
        CHECK(err.msg[0]);
    }
    free(m);
    free(copy);
}

/* Reads the stream in chunks of `chunk` bytes; records up to `max` events. */
static size_t run(xos_proto proto, const uint8_t *data, size_t size, size_t chunk, ev_rec *recs, size_t max, bool check)
{
    xos_reader *r = malloc(sizeof *r);
    CHECK(r);
    xos_reader_init(r, proto);
    size_t nrec = 0, off = 0;
    bool lost = false;
    while (off < size && !lost) {
        size_t n = size - off < chunk ? size - off : chunk;
        size_t used = 0;
        while (used < n) {
            xos_status st;
            xos_event ev;
            size_t u = xos_read(r, data + off + used, n - used, &st, &ev);
            CHECK(u <= n - used);
            if (st == XOS_LOST) {
                CHECK(ev.reason[0]);
                lost = true;
                /* it stays lost */
                xos_status st2;
                xos_event ev2;
                CHECK(xos_read(r, data, size, &st2, &ev2) == 0 && st2 == XOS_LOST);
            } else if (st == XOS_MORE) {
                CHECK(u == n - used); /* progress: MORE takes everything */
            } else if (st == XOS_SKIPPED) {
                CHECK(ev.reason[0]);
                CHECK(u > 0);
            } else {
                CHECK(u > 0);
                if (check)
                    check_message(&ev);
            }
            if (st != XOS_MORE && nrec < max) {
                recs[nrec].st = st;
                recs[nrec].hash = fnv(st == XOS_MESSAGE ? ev.text : ev.reason);
                nrec++;
            }
            used += u;
            if (lost)
                break;
        }
        off += n;
    }
    free(r);
    return nrec;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    xos_proto proto = (data[0] & 1) ? XOS_PROTO_1 : XOS_PROTO_2;
    size_t chunk = (size_t)(data[0] >> 1) + 1;
    data++;
    size--;
    enum {
        MAXREC = 256
    };
    ev_rec *a = calloc(MAXREC, sizeof *a), *b = calloc(MAXREC, sizeof *b);
    CHECK(a && b);
    size_t na = run(proto, data, size, size ? size : 1, a, MAXREC, true);
    size_t nb = run(proto, data, size, chunk, b, MAXREC, false);
    CHECK(na == nb);
    for (size_t i = 0; i < na; i++)
        CHECK(a[i].st == b[i].st && a[i].hash == b[i].hash);
    free(a);
    free(b);

    /* the header parser on the first 26 bytes */
    if (size >= XOS2_HEADER) {
        size_t t, bl;
        xos_err err = { "" };
        if (xos2_parse_header(data, &t, &bl, &err) == 0)
            CHECK(t <= XOS2_LEN_MAX && bl <= XOS2_LEN_MAX);
        else
            CHECK(err.msg[0]);
    }
    /* free text made safe is always a valid group */
    char *text = malloc(size + 1);
    CHECK(text);
    memcpy(text, data, size);
    text[size] = '\0';
    char safe[600];
    xos_safe_text(safe, sizeof safe, text);
    xos_out *o = malloc(sizeof *o);
    CHECK(o);
    xos_out_begin(o, "htos_log", XOS_OUT_MAX);
    xos_out_word(o, "note");
    xos_out_group(o, safe);
    xos_err err;
    CHECK(xos_out_end(o, &err) == 0);
    /* the splitter on raw text */
    xos_words w;
    if (xos_tokenize(text, &w, &err) == 0)
        CHECK(w.n >= 0 && w.n <= XOS_WORDS_MAX);
    else
        CHECK(err.msg[0]);
    free(o);
    free(text);
    return 0;
}
