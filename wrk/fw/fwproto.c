#include "fwproto.h"

#include <string.h>

void fw_lines_init(fw_lines *s)
{
    s->len = 0;
    s->overflow = false;
    s->buf[0] = '\0';
}

void fw_lines_feed(fw_lines *s, const uint8_t *data, size_t len, fw_line_cb cb, void *arg)
{
    size_t i = 0;
    while (i < len) {
        /* Copy up to the next '\n' in one go. Room for FW_LINE_MAX bytes plus the
         * '\r' of the terminator; anything beyond is dropped, the line flagged. */
        const uint8_t *nl = memchr(data + i, '\n', len - i);
        size_t seg = nl ? (size_t)(nl - (data + i)) : len - i;
        size_t room = FW_LINE_MAX + 1 - s->len;
        size_t take = seg < room ? seg : room;
        memcpy(s->buf + s->len, data + i, take);
        s->len += take;
        if (take < seg)
            s->overflow = true;
        i += seg;
        if (!nl)
            return;
        i++; /* the '\n' */
        size_t l = s->len;
        /* "\r\n" is the protocol; a lone "\n" is tolerated. */
        if (l > 0 && s->buf[l - 1] == '\r' && !s->overflow)
            l--;
        bool truncated = s->overflow || l > FW_LINE_MAX;
        if (l > FW_LINE_MAX)
            l = FW_LINE_MAX;
        s->buf[l] = '\0';
        s->len = 0;
        s->overflow = false;
        if (!cb(arg, s->buf, l, truncated))
            return;
    }
}

static bool contains(const char *hay, size_t len, const char *needle, const char **at)
{
    const char *p = memmem(hay, len, needle, strlen(needle));
    if (at)
        *at = p;
    return p != NULL;
}

static bool only_space(const char *p, const char *end)
{
    for (; p < end; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r')
            return false;
    return true;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static fw_line_kind malformed(fw_line_info *out, const char *reason)
{
    out->kind = FW_LINE_MALFORMED;
    out->reason = reason;
    return out->kind;
}

static fw_line_kind parse_pulses(const char *p, const char *end, fw_line_info *out)
{
    if (p == end || !is_digit(*p))
        return malformed(out, "pulse count is not a number");
    uint64_t v = 0;
    for (; p < end && is_digit(*p); p++) {
        v = v * 10 + (uint64_t)(*p - '0');
        if (v > UINT32_MAX)
            return malformed(out, "pulse count overflows 32 bits");
    }
    if (!only_space(p, end))
        return malformed(out, "garbage after pulse count");
    out->kind = FW_LINE_PULSES;
    out->pulses = (uint32_t)v;
    return out->kind;
}

static fw_line_kind parse_samples(const char *p, const char *end, uint16_t *samples, size_t cap, fw_line_info *out)
{
    if (cap > FW_SAMPLES_MAX)
        cap = FW_SAMPLES_MAX;
    /* The firmware prints "samples:" then " %u" then ",%u"... */
    if (p == end || *p != ' ')
        return malformed(out, "samples: no space after colon");
    while (p < end && *p == ' ')
        p++;
    size_t n = 0;
    for (;;) {
        if (p == end || !is_digit(*p))
            return malformed(out, "sample is not a number");
        unsigned v = 0;
        for (; p < end && is_digit(*p); p++) {
            v = v * 10 + (unsigned)(*p - '0');
            if (v > FW_SAMPLE_MAX_VALUE)
                return malformed(out, "sample outside the 12-bit range");
        }
        if (n == cap)
            return malformed(out, "too many samples");
        if (samples)
            samples[n] = (uint16_t)v;
        n++;
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        break;
    }
    if (!only_space(p, end))
        return malformed(out, "garbage in samples");
    out->kind = FW_LINE_SAMPLES;
    out->nsamples = n;
    return out->kind;
}

/* "Watchdog timeout, <n> bytes received of 104090": n is informative only. */
static int64_t watchdog_received(const char *p, const char *end)
{
    static const char pre[] = "Watchdog timeout, ";
    size_t plen = sizeof pre - 1;
    if ((size_t)(end - p) <= plen || memcmp(p, pre, plen) != 0)
        return -1;
    p += plen;
    int64_t v = 0;
    const char *start = p;
    for (; p < end && is_digit(*p) && v <= INT32_MAX; p++)
        v = v * 10 + (*p - '0');
    if (p == start || v > INT32_MAX || (size_t)(end - p) < 15 || memcmp(p, " bytes received", 15) != 0)
        return -1;
    return v;
}

fw_line_kind fw_classify(const char *line, size_t len, bool truncated, uint16_t *samples, size_t cap, fw_line_info *out)
{
    memset(out, 0, sizeof *out);
    out->received = -1;
    const char *end = line + len, *at;
    if (truncated)
        return malformed(out, "line too long");
    if (contains(line, len, "Watchdog timeout", &at)) {
        out->kind = FW_LINE_WATCHDOG;
        out->received = watchdog_received(at, end);
        return out->kind;
    }
    if (contains(line, len, "pulses: ", &at))
        return parse_pulses(at + 8, end, out);
    if (contains(line, len, "samples:", &at))
        return parse_samples(at + 8, end, samples, cap, out);
    if (contains(line, len, "Waiting for bitstream transfer", NULL))
        return out->kind = FW_LINE_READY;
    if (contains(line, len, "default firmware", NULL))
        return out->kind = FW_LINE_DEFAULT_FW;
    return out->kind = FW_LINE_OTHER;
}

const char *fw_line_kind_name(fw_line_kind kind)
{
    switch (kind) {
    case FW_LINE_OTHER:
        return "other";
    case FW_LINE_READY:
        return "ready";
    case FW_LINE_PULSES:
        return "pulses";
    case FW_LINE_SAMPLES:
        return "samples";
    case FW_LINE_WATCHDOG:
        return "watchdog";
    case FW_LINE_DEFAULT_FW:
        return "default-firmware";
    case FW_LINE_MALFORMED:
        return "malformed";
    }
    return "?";
}

double fw_variance_fitness(const uint16_t *s, size_t n)
{
    if (n < 2)
        return 0.0;
    uint64_t sum = 0;
    for (size_t i = 0; i + 1 < n; i++)
        sum += s[i + 1] > s[i] ? (uint64_t)(s[i + 1] - s[i]) : (uint64_t)(s[i] - s[i + 1]);
    return (double)sum / (double)n;
}
