/* Host side of the pico2-ice firmware serial protocol (wrk/README.md),
 * shared by the libusb and sim backends.
 *
 * The firmware prints CRLF-terminated text lines on CDC interface 0. USB delivers
 * them in arbitrary chunks, so fw_lines reassembles lines, and fw_classify turns
 * a line into what the worker cares about: ready for a bitstream, a result, a
 * watchdog failure, or the default firmware's health text. Everything else the
 * firmware says ("USB Connected :)", flash times, ...) is FW_LINE_OTHER.
 */
#ifndef ICEFARM_WRK_FWPROTO_H
#define ICEFARM_WRK_FWPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An iCE40UP5K CRAM image; the firmware reads exactly this many bytes. */
#define BITSTREAM_SIZE 104090

/* The variance firmware prints 500 samples; accept up to 4096 12-bit values. */
#define FW_SAMPLES_MAX 4096
#define FW_SAMPLE_MAX_VALUE 4095
/* Longest line kept: a full 4096-sample line ("samples: " + 4096 x "4095,") fits. */
#define FW_LINE_MAX 24576

/* Called once per complete line: `line` is NUL-terminated, without its "\r\n"
 * (or lone "\n"). `truncated` means the line was longer than FW_LINE_MAX; only
 * its first FW_LINE_MAX bytes are passed and the rest was discarded. Return false
 * to stop: the rest of the chunk being fed is dropped (e.g. the caller closed
 * the channel from inside the callback). */
typedef bool (*fw_line_cb)(void *arg, const char *line, size_t len, bool truncated);

typedef struct {
    size_t len;
    bool overflow;             /* the current line passed FW_LINE_MAX; discarding to its end */
    char buf[FW_LINE_MAX + 2]; /* the line, its '\r', a NUL */
} fw_lines;

void fw_lines_init(fw_lines *s);
/* Feed any chunk of received bytes; calls `cb` for each line completed by it. */
void fw_lines_feed(fw_lines *s, const uint8_t *data, size_t len, fw_line_cb cb, void *arg);

typedef enum {
    FW_LINE_OTHER,      /* anything else: ignored */
    FW_LINE_READY,      /* "Waiting for bitstream transfer": the host may send */
    FW_LINE_PULSES,     /* "..., pulses: N" (pulse-count result) */
    FW_LINE_SAMPLES,    /* "samples: v1,...,vN" (variance result) */
    FW_LINE_WATCHDOG,   /* "Watchdog timeout, n bytes received of 104090": failure */
    FW_LINE_DEFAULT_FW, /* "default firmware": the health-probe text */
    FW_LINE_MALFORMED,  /* looked like a result but did not parse; see reason */
} fw_line_kind;

typedef struct {
    fw_line_kind kind;
    uint32_t pulses;    /* FW_LINE_PULSES */
    size_t nsamples;    /* FW_LINE_SAMPLES: values stored in the caller's buffer */
    int64_t received;   /* FW_LINE_WATCHDOG: bytes the firmware got, -1 if unstated */
    const char *reason; /* FW_LINE_MALFORMED: static text */
} fw_line_info;

/* Classify one line (as delivered by fw_lines). Samples go to samples[0..cap),
 * cap at most FW_SAMPLES_MAX is used; a samples line with more values than cap is
 * malformed. A truncated line is malformed: it can never be a trustworthy result.
 * Returns out->kind. */
fw_line_kind fw_classify(const char *line, size_t len, bool truncated, uint16_t *samples, size_t cap,
                         fw_line_info *out);

const char *fw_line_kind_name(fw_line_kind kind);

/* The variance fitness of BitstreamEvolution's VarMaxFitnessFunction:
 * sum |s[i+1] - s[i]| for i in 0..n-2, divided by n (not n-1); 0.0 if n < 2. */
double fw_variance_fitness(const uint16_t *s, size_t n);

#endif
