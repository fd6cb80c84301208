/* A recording sink (wrk/core/sink.h) for unit tests of the worker's state
 * machine: every call becomes one line of text in the log of its board (or in
 * the worker's log for births), with the loop time it happened at, so a test can
 * assert on the exact sequence a board went through:
 *
 *   added                                   a board was seen for the first time
 *   state <state>[ <kind>][: <reason>]      board_state
 *   event <name> to=<client>[ batch=<id>][: <reason>]
 *   results <batch> n=<n>                   (the results themselves are kept too)
 *   birth online boards=<present>  /  birth offline      (the worker's log)
 *
 * Ownership: the recorder owns copies of everything it logs; rec_free() releases
 * them. It never calls back into the state machine (the sink's rule).
 */
#ifndef ICEFARM_TESTS_REC_SINK_H
#define ICEFARM_TESTS_REC_SINK_H

#include <stddef.h>
#include <stdint.h>

#include "worker.h"

#define REC_MAX_BOARDS 8
#define REC_MAX_LINES 512
#define REC_MAX_RESULTS 256

typedef struct {
    char *line[REC_MAX_LINES];
    uint64_t at[REC_MAX_LINES]; /* ifm_now_ms() when it was emitted */
    size_t n;
    size_t seen; /* rec_expect's cursor */
} rec_log;

typedef struct {
    char batch[IFM_ID_MAX];
    char id[IFM_ID_MAX];
    ifm_value_type type;
    int64_t pulses;
    double fitness;
    uint16_t samples[FW_SAMPLES_MAX];
    size_t nsamples;
    char error[120];
} rec_result;

typedef struct {
    char serial[REC_MAX_BOARDS][IFM_SERIAL_MAX];
    rec_log board[REC_MAX_BOARDS];
    size_t nboards;
    rec_log worker;
    rec_result *results; /* every result of every board, in order: REC_MAX_RESULTS */
    size_t nresults;
    int contract_violations; /* e.g. an event for a board never added: must stay 0 */
} rec_sink;

rec_sink *rec_new(void);
void rec_free(rec_sink *r);
/* The ops table; install with w->sink = (wrk_sink){ &rec_sink_ops, r }. */
extern const wrk_sink_ops rec_sink_ops;

/* The board's log, or NULL if it was never added. */
rec_log *rec_board(rec_sink *r, const char *serial);
/* Asserts that the lines logged since the last rec_expect on this log are
 * exactly the NULL-terminated list (no more, no fewer), then moves past them. */
void rec_expect_at(const char *file, int line, rec_log *l, ...);
#define rec_expect(l, ...) rec_expect_at(__FILE__, __LINE__, l, __VA_ARGS__)
/* The index of the last line logged so far (for timing between two lines). */
size_t rec_last(const rec_log *l);

#endif
