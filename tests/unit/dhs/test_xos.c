/* The xos codec (ctl/dhs/xos.h): golden vectors of both framings in every header
 * shape real peers send (DCSS, pydhsfw, MX; see xos.h),
 * segmentation, every malformed case, the word splitter, every message of the
 * catalogue, and the outbound formatter's refusals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "xos.h"

/* ---- helpers ---- */

typedef struct {
    int n;
    char text[8][512];
    xos_status st[8];
    char reason[8][192];
    size_t binary[8];
} events;

/* Feeds `len` bytes in chunks of `chunk` (0: all at once) and records every event. */
static void feed(xos_reader *r, const void *data, size_t len, size_t chunk, events *out)
{
    const uint8_t *p = data;
    size_t off = 0;
    if (!chunk)
        chunk = len ? len : 1;
    while (off < len) {
        size_t n = len - off < chunk ? len - off : chunk;
        size_t used = 0;
        while (used < n) {
            xos_status st;
            xos_event ev;
            size_t u = xos_read(r, p + off + used, n - used, &st, &ev);
            used += u;
            if (st != XOS_MORE) {
                assert_true(out->n < 8);
                out->st[out->n] = st;
                snprintf(out->text[out->n], sizeof out->text[0], "%s", st == XOS_MESSAGE ? ev.text : "");
                snprintf(out->reason[out->n], sizeof out->reason[0], "%s", ev.reason);
                out->binary[out->n] = ev.binary;
                if (st == XOS_MESSAGE)
                    assert_int_equal(strlen(ev.text), ev.len);
                else
                    assert_true(ev.reason[0] != '\0');
                out->n++;
                if (st == XOS_LOST)
                    return;
            } else {
                assert_int_equal(u, n - used + u); /* MORE means everything was taken */
            }
        }
        off += n;
    }
}

/* One protocol-2 message from a 26-byte header string and a text of `tlen` bytes. */
static size_t v2(uint8_t *buf, const char *hdr, const char *text, size_t tlen)
{
    assert_int_equal(strlen(hdr) <= 26, 1);
    memset(buf, 0, 26);
    memcpy(buf, hdr, strlen(hdr));
    memcpy(buf + 26, text, tlen);
    return 26 + tlen;
}

static void expect_one(xos_proto proto, const void *data, size_t len, xos_status st, const char *text)
{
    size_t chunks[] = { 0, 1, 7, 26, 200 };
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        xos_reader r;
        xos_reader_init(&r, proto);
        events ev = { 0 };
        feed(&r, data, len, chunks[c], &ev);
        assert_int_equal(ev.n, 1);
        assert_int_equal(ev.st[0], st);
        if (text)
            assert_string_equal(ev.text[0], text);
        assert_true(xos_reader_idle(&r) || st == XOS_LOST);
    }
}

/* ---- protocol 2: golden vectors and every header shape ---- */

static void test_v2_golden(void **state)
{
    /* Real DCSS traces (NSRRC comments): T counts the NUL, header ends in a space. */
    static const char reg[] = "          46            0 stoh_register_string tps_current tps_current\n";
    uint8_t buf[128];
    memcpy(buf, reg, sizeof reg);          /* with its NUL: 26 + 46 bytes */
    assert_int_equal(sizeof reg, 26 + 46); /* 45 characters and the NUL */
    expect_one(XOS_PROTO_2, buf, 26 + 46, XOS_MESSAGE, "stoh_register_string tps_current tps_current");
    static const char abort_[] = "          20            0 stoh_abort_all soft";
    memcpy(buf, abort_, sizeof abort_);
    expect_one(XOS_PROTO_2, buf, 26 + 20, XOS_MESSAGE, "stoh_abort_all soft");
}

static void test_v2_header_shapes(void **state)
{
    const char *t = "stoh_start_operation farm_list 1.7";
    size_t n = strlen(t);
    uint8_t buf[256];
    char hdr[64];
    /* DCSS / xos C: "%12ld %12ld ", T = strlen + 1, NUL sent */
    snprintf(hdr, sizeof hdr, "%12zu %12d ", n + 1, 0);
    memcpy(buf, hdr, 26);
    memcpy(buf + 26, t, n + 1);
    expect_one(XOS_PROTO_2, buf, 26 + n + 1, XOS_MESSAGE, t);
    /* C++ dcsmsg: "%12lu %12lu" + NUL in byte 26 */
    snprintf(hdr, sizeof hdr, "%12zu %12d", n + 1, 0);
    expect_one(XOS_PROTO_2, buf, v2(buf, hdr, t, n + 1), XOS_MESSAGE, t);
    /* MX: "%12lu%13lu" + NUL (no separator, right-justified) */
    snprintf(hdr, sizeof hdr, "%12zu%13d", n + 1, 0);
    expect_one(XOS_PROTO_2, buf, v2(buf, hdr, t, n + 1), XOS_MESSAGE, t);
    /* Tcl buildDcsMessage / pydcss send_xos3: T without the NUL, none sent */
    snprintf(hdr, sizeof hdr, "%12zu %12d ", n, 0);
    expect_one(XOS_PROTO_2, buf, v2(buf, hdr, t, n), XOS_MESSAGE, t);
    /* pydhsfw: text + " " + NUL counted */
    char t2[128];
    snprintf(t2, sizeof t2, "%s ", t);
    snprintf(hdr, sizeof hdr, "%12zu%13d ", n + 2, 0);
    expect_one(XOS_PROTO_2, buf, v2(buf, hdr, t2, n + 2), XOS_MESSAGE, t);
    /* java_dcss_sim: "<T> 0" left-aligned, NUL-padded; no NUL in the text */
    snprintf(hdr, sizeof hdr, "%zu 0", n);
    expect_one(XOS_PROTO_2, buf, v2(buf, hdr, t, n), XOS_MESSAGE, t);
}

static void test_v2_binary_discarded(void **state)
{
    uint8_t buf[256];
    const char *t = "stoh_abort_all hard";
    size_t n = strlen(t) + 1;
    char hdr[64];
    snprintf(hdr, sizeof hdr, "%12zu %12d ", n, 5);
    size_t len = v2(buf, hdr, t, n);
    memcpy(buf + len, "\x01\x02\x03\x04\x05", 5);
    len += 5;
    /* and a second message right behind it */
    snprintf(hdr, sizeof hdr, "%12d %12d ", 9, 0);
    len += v2(buf + len, hdr, "farm_x 1", 9);
    size_t chunks[] = { 0, 1, 3 };
    for (size_t c = 0; c < 3; c++) {
        xos_reader r;
        xos_reader_init(&r, XOS_PROTO_2);
        events ev = { 0 };
        feed(&r, buf, len, chunks[c], &ev);
        assert_int_equal(ev.n, 2);
        assert_int_equal(ev.st[0], XOS_MESSAGE);
        assert_string_equal(ev.text[0], "stoh_abort_all hard");
        assert_int_equal(ev.binary[0], 5);
        assert_string_equal(ev.text[1], "farm_x 1");
        assert_int_equal(ev.binary[1], 0);
    }
}

static void test_v2_bad_headers_lose_framing(void **state)
{
    const char *bad[] = {
        "                          ", /* no numbers */
        "         abc            0 ", /* letters */
        "         -12            0 ", /* a sign */
        "          12              ", /* one number */
        "          12            0x", /* junk after */
        "     1048577            0 ", /* over 1 MiB of text */
        "          12      1048577 ", /* over 1 MiB of binary */
        "99999999999999999999999999", /* no separator, enormous */
        "12,0                      ", /* wrong separator */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t buf[64];
        memcpy(buf, bad[i], 26);
        memcpy(buf + 26, "stoh_abort_all soft", 20);
        xos_reader r;
        xos_reader_init(&r, XOS_PROTO_2);
        events ev = { 0 };
        feed(&r, buf, 46, 0, &ev);
        assert_int_equal(ev.n, 1);
        assert_int_equal(ev.st[0], XOS_LOST);
        /* and it stays lost */
        xos_status st;
        xos_event e;
        assert_int_equal(xos_read(&r, buf, 10, &st, &e), 0);
        assert_int_equal(st, XOS_LOST);
        size_t t, b;
        xos_err err;
        assert_int_equal(xos2_parse_header(buf, &t, &b, &err), -1);
        assert_true(err.msg[0] != '\0');
    }
    /* the limits themselves are fine */
    size_t t, b;
    xos_err err;
    assert_int_equal(xos2_parse_header((const uint8_t *)"     1048576      1048576 ", &t, &b, &err), 0);
    assert_int_equal(t, 1048576);
    assert_int_equal(b, 1048576);
}

static void test_v2_skipped_messages(void **state)
{
    /* overlong text, empty text, binary only, non-ASCII, control bytes: skipped,
     * and the message after each one is read. */
    size_t big = XOS_TEXT_MAX + 100;
    uint8_t *buf = calloc(1, big + 4096);
    size_t len = 0;
    char hdr[64];
    snprintf(hdr, sizeof hdr, "%12zu %12d ", big, 3);
    memcpy(buf, hdr, 26);
    memset(buf + 26, 'a', big);
    len = 26 + big + 3;
    snprintf(hdr, sizeof hdr, "%12d %12d ", 0, 0);
    len += v2(buf + len, hdr, "", 0);
    snprintf(hdr, sizeof hdr, "%12d %12d ", 0, 4);
    len += v2(buf + len, hdr, "bbbb", 4);
    snprintf(hdr, sizeof hdr, "%12d %12d ", 5, 0);
    len += v2(buf + len, hdr, "a\xc3\xa9 b", 5);
    snprintf(hdr, sizeof hdr, "%12d %12d ", 4, 0);
    len += v2(buf + len, hdr,
              "a\x01"
              "b\0",
              4);
    snprintf(hdr, sizeof hdr, "%12d %12d ", 5, 0);
    len += v2(buf + len, hdr, "  \n\0", 5);
    snprintf(hdr, sizeof hdr, "%12d %12d ", 15, 0);
    len += v2(buf + len, hdr, "stoh_abort_all\0", 15);
    size_t chunks[] = { 0, 1, 1000 };
    for (size_t c = 0; c < 3; c++) {
        xos_reader r;
        xos_reader_init(&r, XOS_PROTO_2);
        events ev = { 0 };
        feed(&r, buf, len, chunks[c], &ev);
        assert_int_equal(ev.n, 7);
        for (int i = 0; i < 6; i++)
            assert_int_equal(ev.st[i], XOS_SKIPPED);
        assert_non_null(strstr(ev.reason[0], "longer than"));
        assert_non_null(strstr(ev.reason[1], "empty"));
        assert_non_null(strstr(ev.reason[2], "empty"));
        assert_non_null(strstr(ev.reason[3], "0xc3"));
        assert_non_null(strstr(ev.reason[4], "0x01"));
        assert_non_null(strstr(ev.reason[5], "empty"));
        assert_int_equal(ev.st[6], XOS_MESSAGE);
        assert_string_equal(ev.text[6], "stoh_abort_all");
    }
    free(buf);
}

/* ---- protocol 1 ---- */

static void block(uint8_t out[200], const char *text, char pad, bool leading)
{
    memset(out, pad, 200);
    size_t n = strlen(text);
    if (leading) { /* pydcss: text + NUL right-justified with spaces */
        memset(out, ' ', 200);
        memcpy(out + 200 - n - 1, text, n);
        out[199] = '\0';
    } else {
        memcpy(out, text, n);
        if (pad != ' ')
            out[n] = '\0';
    }
}

static void test_v1_blocks(void **state)
{
    uint8_t b[200];
    const char *t = "htos_client_is_hardware boardfarm";
    block(b, t, '\0', false); /* C style */
    expect_one(XOS_PROTO_1, b, 200, XOS_MESSAGE, t);
    block(b, t, ' ', false); /* Tcl style: spaces, no NUL */
    expect_one(XOS_PROTO_1, b, 200, XOS_MESSAGE, t);
    block(b, t, ' ', true); /* pydcss style: leading spaces */
    expect_one(XOS_PROTO_1, b, 200, XOS_MESSAGE, t);
    block(b, t, 'Z', false); /* garbage after the NUL (SSRL C DHS) */
    expect_one(XOS_PROTO_1, b, 200, XOS_MESSAGE, t);
    block(b, "stoc_send_client_type", '\0', false);
    expect_one(XOS_PROTO_1, b, 200, XOS_MESSAGE, "stoc_send_client_type");
    /* a registration line as the real DCSS sends it, with its newline */
    block(b, "stoh_register_operation farm_list farm_list\n", '\0', false);
    expect_one(XOS_PROTO_1, b, 200, XOS_MESSAGE, "stoh_register_operation farm_list farm_list");
    /* 200 characters cut by the sender: no NUL, no space padding */
    memset(b, 'x', 200);
    expect_one(XOS_PROTO_1, b, 200, XOS_SKIPPED, NULL);
    /* all NULs: empty */
    memset(b, 0, 200);
    expect_one(XOS_PROTO_1, b, 200, XOS_SKIPPED, NULL);
    /* a DEL byte */
    block(b, "stoh_abort_all \x7f", '\0', false);
    expect_one(XOS_PROTO_1, b, 200, XOS_SKIPPED, NULL);
}

static void test_v1_then_v2(void **state)
{
    /* The handshake is protocol 1, what follows protocol 2, in one TCP segment. */
    uint8_t buf[400];
    block(buf, "stoc_send_client_type", '\0', false);
    char hdr[64];
    snprintf(hdr, sizeof hdr, "%12d %12d ", 46, 0);
    size_t len = 200 + v2(buf + 200, hdr, "stoh_register_string tps_current tps_current\n", 46);
    xos_reader r;
    xos_reader_init(&r, XOS_PROTO_1);
    xos_status st;
    xos_event ev;
    size_t used = xos_read(&r, buf, len, &st, &ev);
    assert_int_equal(used, 200);
    assert_int_equal(st, XOS_MESSAGE);
    assert_string_equal(ev.text, "stoc_send_client_type");
    assert_true(xos_reader_idle(&r));
    xos_reader_set_proto(&r, XOS_PROTO_2);
    used += xos_read(&r, buf + used, len - used, &st, &ev);
    assert_int_equal(used, len);
    assert_int_equal(st, XOS_MESSAGE);
    assert_string_equal(ev.text, "stoh_register_string tps_current tps_current");
}

/* ---- outbound framing ---- */

static void test_frame_out(void **state)
{
    uint8_t out[XOS_FRAME_MAX];
    xos_err err;
    int n = xos_frame(XOS_PROTO_2, "stoh_abort_all soft", out, sizeof out, &err);
    assert_int_equal(n, 46);
    assert_memory_equal(out, "          20            0 stoh_abort_all soft", 46);
    n = xos_frame(XOS_PROTO_1, "htos_log note boardfarm {up}", out, sizeof out, &err);
    assert_int_equal(n, 200);
    assert_string_equal((char *)out, "htos_log note boardfarm {up}");
    for (int i = 28; i < 200; i++)
        assert_int_equal(out[i], 0);
    /* handshake: always 200 bytes, protocol 1 */
    assert_int_equal(xos_handshake_reply("boardfarm", out, &err), 200);
    assert_string_equal((char *)out, "htos_client_is_hardware boardfarm");
    assert_int_equal(xos_handshake_reply("has space", out, &err), -1);
    assert_int_equal(xos_handshake_reply("a234567890123456789012345678901234567890", out, &err), -1); /* 40 */
    assert_int_equal(xos_handshake_reply("a23456789012345678901234567890123456789", out, &err), 200); /* 39 */
    /* limits: refused, never cut */
    char big[1100];
    memset(big, 'a', sizeof big);
    big[199] = '\0';
    assert_int_equal(xos_frame(XOS_PROTO_1, big, out, sizeof out, &err), 200);
    big[199] = 'a';
    big[200] = '\0';
    assert_int_equal(xos_frame(XOS_PROTO_1, big, out, sizeof out, &err), -1);
    assert_non_null(strstr(err.msg, "longer than 199"));
    big[200] = 'a';
    big[XOS_OUT_MAX] = '\0';
    assert_int_equal(xos_frame(XOS_PROTO_2, big, out, sizeof out, &err), XOS_FRAME_MAX);
    big[XOS_OUT_MAX] = 'a';
    big[XOS_OUT_MAX + 1] = '\0';
    assert_int_equal(xos_frame(XOS_PROTO_2, big, out, sizeof out, &err), -1);
    assert_int_equal(xos_frame(XOS_PROTO_2, "a\nb", out, sizeof out, &err), -1);
    assert_int_equal(xos_frame(XOS_PROTO_2, "a\xc3\xa9", out, sizeof out, &err), -1);
    assert_int_equal(xos_frame(XOS_PROTO_2, "", out, sizeof out, &err), -1);
    assert_int_equal(xos_frame(XOS_PROTO_2, "abc", out, 20, &err), -1);
    /* what we frame, we read back */
    n = xos_frame(XOS_PROTO_2, "htos_operation_completed farm_list 1.2 normal 4", out, sizeof out, &err);
    expect_one(XOS_PROTO_2, out, (size_t)n, XOS_MESSAGE, "htos_operation_completed farm_list 1.2 normal 4");
}

/* ---- words ---- */

static void test_tokenize(void **state)
{
    xos_words w;
    xos_err err;
    char t1[] = "  a  {b c}\t{}  {x {y z} w} d{e} f}  ";
    assert_int_equal(xos_tokenize(t1, &w, &err), 0);
    assert_int_equal(w.n, 6);
    assert_string_equal(w.w[0], "a");
    assert_false(w.braced[0]);
    assert_string_equal(w.w[1], "b c");
    assert_true(w.braced[1]);
    assert_string_equal(w.w[2], "");
    assert_true(w.braced[2]);
    assert_string_equal(w.w[3], "x {y z} w");
    assert_string_equal(w.w[4], "d{e}"); /* braces inside a word are plain characters */
    assert_string_equal(w.w[5], "f}");
    char t2[] = "a {b c";
    assert_int_equal(xos_tokenize(t2, &w, &err), -1);
    assert_non_null(strstr(err.msg, "unterminated"));
    char t3[] = "a {b {c}";
    assert_int_equal(xos_tokenize(t3, &w, &err), -1);
    char t4[] = "a {b}c";
    assert_int_equal(xos_tokenize(t4, &w, &err), -1);
    assert_non_null(strstr(err.msg, "after the closing brace"));
    char t5[] = "";
    assert_int_equal(xos_tokenize(t5, &w, &err), 0);
    assert_int_equal(w.n, 0);
    char many[XOS_WORDS_MAX * 2 + 8];
    size_t k = 0;
    for (int i = 0; i < XOS_WORDS_MAX; i++) {
        many[k++] = 'w';
        many[k++] = ' ';
    }
    many[k] = '\0';
    assert_int_equal(xos_tokenize(many, &w, &err), 0);
    assert_int_equal(w.n, XOS_WORDS_MAX);
    many[k++] = 'x';
    many[k] = '\0';
    for (size_t i = 0; i < k; i++)
        if (many[i] == '\0')
            many[i] = ' ';
    assert_int_equal(xos_tokenize(many, &w, &err), -1);
    /* a 2 KB brace group (fake DCSS's long argument) */
    char *longarg = malloc(2100);
    strcpy(longarg, "stoh_start_operation farm_list 3.1 {");
    size_t off = strlen(longarg);
    for (int i = 0; i < 2000; i++)
        longarg[off++] = (char)('0' + i % 10);
    longarg[off++] = '}';
    longarg[off] = '\0';
    assert_int_equal(xos_tokenize(longarg, &w, &err), 0);
    assert_int_equal(w.n, 4);
    assert_int_equal(strlen(w.w[3]), 2000);
    free(longarg);
}

/* ---- the catalogue: one golden line per message ---- */

typedef struct {
    const char *line;
    xos_type type;
    int argc;
    const char *rest;
} golden;

static const golden catalogue_lines[] = {
    { "stoc_send_client_type", XOS_STOC_SEND_CLIENT_TYPE, 0, NULL },
    { "stoh_register_real_motor gonio_phi phi", XOS_STOH_REGISTER_REAL_MOTOR, 2, NULL },
    { "stoh_register_pseudo_motor energy standardVirtualMotor", XOS_STOH_REGISTER_PSEUDO_MOTOR, 2, NULL },
    { "stoh_register_ion_chamber i0 c1 0 t1 clock\n", XOS_STOH_REGISTER_ION_CHAMBER, 5, NULL },
    { "stoh_register_shutter shutter closed\n", XOS_STOH_REGISTER_SHUTTER, 2, NULL },
    { "stoh_register_shutter shutter open sh_hw\n", XOS_STOH_REGISTER_SHUTTER, 3, NULL },
    { "stoh_register_operation farm_reserve farm_reserve\n", XOS_STOH_REGISTER_OPERATION, 2, NULL },
    { "stoh_register_encoder enc1 enc1\n", XOS_STOH_REGISTER_ENCODER, 2, NULL },
    { "stoh_register_string farm_status farm_status\n", XOS_STOH_REGISTER_STRING, 2, NULL },
    { "stoh_register_object obj standardObject\n", XOS_STOH_REGISTER_OBJECT, 2, NULL },
    { "stoh_set_motor_dependency energy gap mono", XOS_STOH_SET_MOTOR_DEPENDENCY, 3, NULL },
    { "stoh_set_motor_children energy mono_theta", XOS_STOH_SET_MOTOR_CHILDREN, 2, NULL },
    { "stoh_start_operation farm_reserve 12.3 any 600 {run 7}", XOS_STOH_START_OPERATION, 5, NULL },
    { "stoh_start_operation farm_list 1.1", XOS_STOH_START_OPERATION, 2, NULL },
    { "stoh_stop_operation farm_pulse_count", XOS_STOH_STOP_OPERATION, 1, NULL },
    { "stoh_abort_all soft", XOS_STOH_ABORT_ALL, 1, NULL },
    { "stoh_abort_all", XOS_STOH_ABORT_ALL, 0, NULL },
    { "stoh_set_string farm_config {lease 600} {kind pulsecount}", XOS_STOH_SET_STRING, 1,
      "{lease 600} {kind pulsecount}" },
    { "stoh_set_string farm_config", XOS_STOH_SET_STRING, 1, "" },
    { "stoh_configure_string farm_status boardfarm {b01 free}  x", XOS_STOH_CONFIGURE_STRING, 2, "{b01 free}  x" },
    { "stoh_configure_operation farm_list boardfarm", XOS_STOH_CONFIGURE_OPERATION, 2, NULL },
    { "stoh_start_motor_move gonio_phi 45.0", XOS_STOH_START_MOTOR_MOVE, 2, NULL },
    { "stoh_abort_motor_move gonio_phi soft", XOS_STOH_ABORT_MOTOR_MOVE, 2, NULL },
    { "stoh_set_motor_position gonio_phi 0", XOS_STOH_SET_MOTOR_POSITION, 2, NULL },
    { "stoh_correct_motor_position gonio_phi 360", XOS_STOH_CORRECT_MOTOR_POSITION, 2, NULL },
    { "stoh_configure_real_motor phi dhs1 phi 0 360 -360 1000 10 1 0 1 1 0 0 0 normal", XOS_STOH_CONFIGURE_REAL_MOTOR,
      16, NULL },
    { "stoh_configure_pseudo_motor energy dhs1 energy 12000 20000 5000 1 1 0 normal", XOS_STOH_CONFIGURE_PSEUDO_MOTOR,
      10, NULL },
    { "stoh_start_oscillation gonio_phi shutter 1.0 2.0", XOS_STOH_START_OSCILLATION, 4, NULL },
    { "stoh_start_vector_move m1 m2 1 2", XOS_STOH_START_VECTOR_MOVE, 4, NULL },
    { "stoh_stop_vector_move m1 m2", XOS_STOH_STOP_VECTOR_MOVE, 2, NULL },
    { "stoh_change_vector_speed m1 m2 5", XOS_STOH_CHANGE_VECTOR_SPEED, 3, NULL },
    { "stoh_set_shutter_state shutter open", XOS_STOH_SET_SHUTTER_STATE, 2, NULL },
    { "stoh_read_ion_chambers 1.0 0 farm_b03_in0", XOS_STOH_READ_ION_CHAMBERS, 3, NULL },
    { "stoh_get_encoder enc1", XOS_STOH_GET_ENCODER, 1, NULL },
    { "stoh_set_encoder enc1 10", XOS_STOH_SET_ENCODER, 2, NULL },
    { "stoh_configure_encoder enc1 dhs1 enc1 0", XOS_STOH_CONFIGURE_ENCODER, 4, NULL },
    { "stoh_configure_ion_chamber i0 dhs1 c1 0 t1 clock", XOS_STOH_CONFIGURE_ION_CHAMBER, 6, NULL },
    { "stoh_configure_shutter shutter dhs1 closed", XOS_STOH_CONFIGURE_SHUTTER, 3, NULL },
    { "stoh_configure_object obj dhs1", XOS_STOH_CONFIGURE_OBJECT, 2, NULL },
    { "htos_client_is_hardware boardfarm", XOS_HTOS_CLIENT_IS_HARDWARE, 1, NULL },
    { "htos_client_type_is_hardware boardfarm dcsProtocol_2.0", XOS_HTOS_CLIENT_IS_HARDWARE, 2, NULL },
    { "htos_operation_update farm_flash 2.5 progress upload 50", XOS_HTOS_OPERATION_UPDATE, 5, NULL },
    { "htos_operation_completed farm_list 2.6 normal 4", XOS_HTOS_OPERATION_COMPLETED, 4, NULL },
    { "htos_start_operation farm_list 2.7", XOS_HTOS_START_OPERATION, 2, NULL },
    { "htos_set_string_completed farm_status normal {b01 free} {b02 reserved 7}", XOS_HTOS_SET_STRING_COMPLETED, 2,
      "{b01 free} {b02 reserved 7}" },
    { "htos_send_configuration farm_status", XOS_HTOS_SEND_CONFIGURATION, 1, NULL },
    { "htos_configure_device energy 12000 20000 5000 1 1 0", XOS_HTOS_CONFIGURE_DEVICE, 7, NULL },
    { "htos_motor_move_started phi 10", XOS_HTOS_MOTOR_MOVE_STARTED, 2, NULL },
    { "htos_update_motor_position phi 5 moving", XOS_HTOS_UPDATE_MOTOR_POSITION, 3, NULL },
    { "htos_motor_move_completed phi 10 normal", XOS_HTOS_MOTOR_MOVE_COMPLETED, 3, NULL },
    { "htos_report_shutter_state shutter open normal", XOS_HTOS_REPORT_SHUTTER_STATE, 3, NULL },
    { "htos_report_ion_chambers 1.0 farm_b03_in0 1234", XOS_HTOS_REPORT_ION_CHAMBERS, 3, NULL },
    { "htos_get_encoder_completed enc1 10 normal", XOS_HTOS_GET_ENCODER_COMPLETED, 3, NULL },
    { "htos_set_encoder_completed enc1 10 normal", XOS_HTOS_SET_ENCODER_COMPLETED, 3, NULL },
    { "htos_note hello world", XOS_HTOS_NOTE, 2, NULL },
    { "htos_log note boardfarm {farm online}", XOS_HTOS_LOG, 3, NULL },
};

static void test_catalogue(void **state)
{
    bool seen[XOS_MSG_COUNT] = { false };
    for (size_t i = 0; i < sizeof catalogue_lines / sizeof catalogue_lines[0]; i++) {
        const golden *g = &catalogue_lines[i];
        /* through both framings, then parsed */
        for (int proto = 1; proto <= 2; proto++) {
            char line[512];
            snprintf(line, sizeof line, "%s", g->line);
            uint8_t buf[XOS_FRAME_MAX];
            size_t len;
            if (proto == 1) {
                memset(buf, 0, 200);
                memcpy(buf, line, strlen(line));
                len = 200;
            } else {
                char hdr[64];
                snprintf(hdr, sizeof hdr, "%12zu %12d ", strlen(line) + 1, 0);
                memcpy(buf, hdr, 26);
                memcpy(buf + 26, line, strlen(line) + 1);
                len = 26 + strlen(line) + 1;
            }
            xos_reader r;
            xos_reader_init(&r, (xos_proto)proto);
            xos_status st;
            xos_event ev;
            assert_int_equal(xos_read(&r, buf, len, &st, &ev), len);
            assert_int_equal(st, XOS_MESSAGE);
            xos_msg m;
            xos_err err = { "" };
            int rc = xos_parse(ev.text, &m, &err);
            if (rc)
                fail_msg("%s: %s", g->line, err.msg);
            assert_int_equal(m.type, g->type);
            assert_int_equal(m.argc, g->argc);
            assert_non_null(xos_type_name(m.type));
            if (g->rest)
                assert_string_equal(m.rest, g->rest);
            else
                assert_null(m.rest);
            seen[m.type] = true;
        }
    }
    for (int t = 1; t < XOS_MSG_COUNT; t++)
        if (!seen[t])
            fail_msg("no golden line for %s", xos_type_name((xos_type)t));
    assert_null(xos_type_name(XOS_UNKNOWN));
}

static void test_catalogue_malformed(void **state)
{
    const char *bad[] = {
        "stoh_frobnicate a b",                                               /* unknown */
        "htos_bogus",                                                        /* unknown */
        "stoh_start_operation farm_list",                                    /* no handle */
        "stoh_start_operation",                                              /* nothing */
        "stoh_register_operation farm_list",                                 /* no hwName */
        "stoh_register_operation a b c",                                     /* too many */
        "stoh_register_ion_chamber i0 c1 0 t1",                              /* 4 of 5 */
        "stoh_abort_all soft hard",                                          /* too many */
        "stoh_start_operation a234567890123456789012345678901234567890 1.1", /* 40-char name */
        "stoh_start_operation farm_list 1234567890123456789012345678901234567890123456789012345678901234567890"
        "12345678901",                               /* 81-char handle */
        "stoh_start_operation farm_list {1.1}x",     /* extra after brace */
        "stoh_start_operation farm_list {1.1",       /* unterminated */
        "stoh_start_operation farm_list 1$1",        /* handle we could not echo */
        "stoh_start_operation farm_list PRIVATE123", /* a session id as handle */
        "stoh_start_operation {farm list} 1.1",      /* name with a space */
        "stoh_set_string",                           /* no name */
        "stoh_configure_real_motor phi dhs1 phi 0",  /* 4 of 16 */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char line[256];
        snprintf(line, sizeof line, "%s", bad[i]);
        xos_msg m;
        xos_err err = { "" };
        if (xos_parse(line, &m, &err) != -1)
            fail_msg("accepted: %s", bad[i]);
        assert_true(err.msg[0] != '\0');
    }
    char unk[] = "stoh_frobnicate a b";
    xos_msg m;
    xos_err err;
    assert_int_equal(xos_parse(unk, &m, &err), -1);
    assert_int_equal(m.type, XOS_UNKNOWN);
    assert_string_equal(m.name, "stoh_frobnicate");
    assert_non_null(strstr(err.msg, "unknown message"));
}

/* ---- the formatter ---- */

static void test_out(void **state)
{
    xos_out o;
    xos_err err;
    xos_out_begin(&o, "htos_operation_completed", XOS_OUT_MAX);
    xos_out_word(&o, "farm_pulse_count");
    xos_out_word(&o, "12.3");
    xos_out_word(&o, "normal");
    xos_out_word(&o, "SIM0001");
    xos_out_uint(&o, 37823);
    xos_out_wordf(&o, "%s", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
    assert_int_equal(xos_out_end(&o, &err), 0);
    assert_string_equal(o.text,
                        "htos_operation_completed farm_pulse_count 12.3 normal SIM0001 37823 "
                        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");

    xos_out_begin(&o, "htos_set_string_completed", XOS_OUT_MAX);
    xos_out_word(&o, "farm_status");
    xos_out_word(&o, "normal");
    xos_out_list(&o, "{online 1} {SIM0001 ready {}} {SIM0002 reserved 7}");
    assert_int_equal(xos_out_end(&o, &err), 0);
    /* DCSS finds the contents 34 + strlen(name) characters in: single spaces */
    assert_string_equal(o.text + 34 + strlen("farm_status"), "{online 1} {SIM0001 ready {}} {SIM0002 reserved 7}");

    xos_out_begin(&o, "htos_log", XOS_OUT_MAX);
    xos_out_word(&o, "warning");
    xos_out_word(&o, "boardfarm");
    xos_out_group(&o, "board SIM0001 broke: flash failed");
    xos_out_group(&o, "");
    assert_int_equal(xos_out_end(&o, &err), 0);
    assert_string_equal(o.text, "htos_log warning boardfarm {board SIM0001 broke: flash failed} {}");

    /* refusals */
    const char *bad_words[] = { "",     "a b", "a[1]",        "$x",       "a;b",      "\"q\"",
                                "a\\b", "{x}", "PRIVATE1234", "\xc3\xa9", "tab\there" };
    for (size_t i = 0; i < sizeof bad_words / sizeof bad_words[0]; i++) {
        xos_out_begin(&o, "htos_note", XOS_OUT_MAX);
        xos_out_word(&o, bad_words[i]);
        xos_out_word(&o, "fine");
        assert_int_equal(xos_out_end(&o, &err), -1);
        assert_true(err.msg[0] != '\0');
    }
    const char *bad_groups[] = {
        "a {b}", "x]", "a$b", "semi;colon", "q\"", "back\\", "nl\n", "PRIVATEabc", "a PRIVATEx"
    };
    for (size_t i = 0; i < sizeof bad_groups / sizeof bad_groups[0]; i++) {
        xos_out_begin(&o, "htos_note", XOS_OUT_MAX);
        xos_out_group(&o, bad_groups[i]);
        assert_int_equal(xos_out_end(&o, &err), -1);
    }
    const char *bad_lists[] = { "{a", "a}", "}{", "{a} $b", "{PRIVATEx}" };
    for (size_t i = 0; i < sizeof bad_lists / sizeof bad_lists[0]; i++) {
        xos_out_begin(&o, "htos_note", XOS_OUT_MAX);
        xos_out_list(&o, bad_lists[i]);
        assert_int_equal(xos_out_end(&o, &err), -1);
    }
    xos_out_begin(&o, "htos_note", XOS_OUT_MAX);
    xos_out_list(&o, "");
    assert_int_equal(xos_out_end(&o, &err), 0);
    assert_string_equal(o.text, "htos_note {}");
    /* budget: refused as a whole, protocol 1's 199 and protocol 2's 1000 */
    char w[300];
    memset(w, 'a', 180);
    w[180] = '\0';
    xos_out_begin(&o, "htos_note", XOS1_TEXT_MAX);
    xos_out_word(&o, w);
    assert_int_equal(xos_out_end(&o, &err), 0);
    assert_int_equal(o.len, 190);
    xos_out_word(&o, "123456789");
    assert_int_equal(xos_out_end(&o, &err), -1);
    assert_non_null(strstr(err.msg, "longer than 199"));
    xos_out_begin(&o, "htos_note", XOS_OUT_MAX);
    for (int i = 0; i < 6; i++)
        xos_out_word(&o, w);
    assert_int_equal(xos_out_end(&o, &err), -1);
    /* the first refusal is the one reported */
    xos_out_begin(&o, "htos_note", XOS_OUT_MAX);
    xos_out_word(&o, "a b");
    xos_out_group(&o, "x]");
    assert_int_equal(xos_out_end(&o, &err), -1);
    assert_non_null(strstr(err.msg, "a b"));
}

static void test_safe_text(void **state)
{
    char d[64];
    xos_safe_text(d, sizeof d, "crc \"mismatch\" [x] {y} $z; a\\b\n\xc3\xa9");
    assert_string_equal(d, "crc 'mismatch' (x) (y) Sz, a/b ??");
    xos_out o;
    xos_err err;
    xos_out_begin(&o, "htos_note", XOS_OUT_MAX);
    xos_out_group(&o, d);
    assert_int_equal(xos_out_end(&o, &err), 0);
    xos_safe_text(d, 10, "abcdefghijklmnop");
    assert_string_equal(d, "abcdef...");
    xos_safe_text(d, sizeof d, "session PRIVATE12345 here");
    assert_string_equal(d, "session XXXXXXXXXXXX here");
    xos_safe_text(d, sizeof d, "");
    assert_string_equal(d, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v2_golden),
        cmocka_unit_test(test_v2_header_shapes),
        cmocka_unit_test(test_v2_binary_discarded),
        cmocka_unit_test(test_v2_bad_headers_lose_framing),
        cmocka_unit_test(test_v2_skipped_messages),
        cmocka_unit_test(test_v1_blocks),
        cmocka_unit_test(test_v1_then_v2),
        cmocka_unit_test(test_frame_out),
        cmocka_unit_test(test_tokenize),
        cmocka_unit_test(test_catalogue),
        cmocka_unit_test(test_catalogue_malformed),
        cmocka_unit_test(test_out),
        cmocka_unit_test(test_safe_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
