/* icefarm-cli internals: one file per command, sharing these options. */
#ifndef ICEFARM_CLI_H
#define ICEFARM_CLI_H

#include <jansson.h>
#include <stdbool.h>

#include "icefarm/client.h"
#include "icefarm/json.h"
#include "icefarm/loop.h"
#include "icefarm/msg.h"

/* Exit codes scripts can rely on. */
enum {
    CLI_OK = 0,
    CLI_FAILED = 1,      /* the farm refused or an evaluation failed */
    CLI_USAGE = 2,       /* bad command line */
    CLI_UNREACHABLE = 3, /* broker or control unreachable */
    CLI_NOT_ENOUGH = 4,  /* not enough boards (409) */
};

typedef struct {
    bool json;
    icefarm_opts farm;
    uint32_t amount;
    const char *kind;
    const char *args_json;
    uint64_t wait_s;
    uint64_t duration_s;
    uint32_t boards;
    uint32_t window;
    uint64_t result_timeout_s;
    char **pos; /* positional arguments after the command */
    int npos;
    char **serials; /* --serials a,b,c */
    int nserials;
} cli_opts;

typedef int (*cli_cmd_fn)(const cli_opts *o);

int cmd_status(const cli_opts *o);
int cmd_available(const cli_opts *o);
int cmd_devices(const cli_opts *o);
int cmd_reserve(const cli_opts *o);
int cmd_extend(const cli_opts *o);
int cmd_end(const cli_opts *o);
int cmd_end_all(const cli_opts *o);
int cmd_reboot(const cli_opts *o);
int cmd_evaluate(const cli_opts *o);
int cmd_watch(const cli_opts *o);
int cmd_flash(const cli_opts *o);

/* A control reply as the commands read it: libicefarm's reply and its msgpack
 * document (for the fields the library has no accessor for). */
typedef struct {
    icefarm_reply *reply;
    ifm_doc doc;
} cli_reply;
void cli_reply_free(cli_reply *r);
/* The reply's serials, malloc'd (free() it); the count is returned. */
size_t cli_reply_serials(const cli_reply *r, char (**serials)[IFM_SERIAL_MAX]);

/* Shared helpers (cli/common.c). */
icefarm *cli_connect(const cli_opts *o, int *exit_code);
/* Runs one control request and reports errors in the requested style; returns
 * an exit code, and leaves the reply in *r on CLI_OK. */
int cli_call(icefarm *f, const cli_opts *o, const ifm_ctl_req *req, const void *args, size_t args_len, cli_reply *r);
int cli_error(const cli_opts *o, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Converts a JSON text (reserve --args) to msgpack; -1 with a reason. */
int cli_json_to_msgpack(const char *text, ifm_enc *e, char *err, size_t errlen);
void cli_print_json(json_t *j);
/* Fills req->serials from the positional arguments. */
int cli_req_serials(const cli_opts *o, ifm_ctl_req *req);
const char *cli_fmt_until(uint64_t until_ms, char *buf, size_t cap);

#endif
