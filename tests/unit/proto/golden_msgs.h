/* Golden messages: what control and the workers publish on the topics a
 * dashboard reads, each made by the real C encoder from fixed values, with what
 * a reader must make of it (`expect`: JSON in the dashboard's shape, see
 * ctl/http/dashboard/src/decode.js), and malformed ones with the reason a
 * reader must give. Used by test_golden (the C decoders) and by
 * golden_write, which writes them to files for the dashboard's decoders in
 * node (tests/e2e/dashboard/golden.mjs): one set of messages for both.
 *
 * Lifetime: golden_encode fills a caller-initialised ifm_enc; the table is static. */
#ifndef ICEFARM_GOLDEN_MSGS_H
#define ICEFARM_GOLDEN_MSGS_H

#include <stddef.h>

#include "icefarm/msg.h"

typedef struct {
    const char *name;   /* file name stem */
    const char *topic;  /* where it is published */
    const char *expect; /* good: the decoded value as JSON ("null": a cleared retained topic); bad: NULL */
    const char *reason; /* bad: a substring of the reason a decoder gives; good: NULL */
} golden_msg;

extern const golden_msg golden_msgs[];
extern const size_t golden_count;
/* Appends message i's bytes to e. */
void golden_encode(size_t i, ifm_enc *e);

#endif
