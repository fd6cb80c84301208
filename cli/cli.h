/* icefarm-cli internals: one file per command, sharing these options and the
 * helpers of common.c (connecting, calling control, errors, waits).
 *
 * Threads: none. One cli_opts per run, filled by main.c and read-only after;
 * the only mutable process state is common.c's one context struct (the log
 * sink's and the wait announcer's). */
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
    CLI_FAILED = 1,      /* the farm refused, or an evaluation failed */
    CLI_USAGE = 2,       /* bad command line: option, value, name, broker URL, file */
    CLI_UNREACHABLE = 3, /* broker or control unreachable */
    CLI_NOT_ENOUGH = 4,  /* not enough boards (409) */
    CLI_INTERRUPTED = 130,
};

/* Every option of every command (main.c's table says which command takes which). */
enum {
    O_BROKER = 1,
    O_NAME,
    O_USER,
    O_PASSWORD,
    O_PASSWORD_FILE,
    O_CAFILE,
    O_TIMEOUT,
    O_JSON,
    O_HELP,
    O_AMOUNT,
    O_KIND,
    O_ARGS,
    O_WAIT,
    O_DURATION,
    O_SET,
    O_BOARDS,
    O_SERIALS,
    O_NOEXT,
    O_WINDOW,
    O_RTIMEOUT,
    O_NDJSON,
    O_NOCHECK,
    O_VERSION,
    O_FTIMEOUT,
    O_PTY,       /* serial */
    O_LINK,      /* serial --pty */
    O_INTERFACE, /* serial */
    O_TUNNEL,    /* serial, usbip */
    O_LISTEN,    /* usbip tunnel */
    O_COUNT
};

typedef struct {
    const char *cmd; /* the command's name */
    bool json, ndjson;
    icefarm_opts farm;
    uint32_t amount;
    const char *kind;
    const char *args_json;
    uint64_t wait_s;
    uint64_t duration_s;
    bool set; /* extend: exactly --duration from now, even if shorter */
    uint32_t boards;
    uint32_t window;
    uint64_t result_timeout_s;
    uint64_t flash_timeout_s; /* flash: the wait for each board's "flashed" */
    bool no_check;            /* evaluate: skip the iCE40 framing check */
    char **pos;               /* positional arguments after the command */
    int npos;
    char **serials; /* --serials a,b,c */
    int nserials;
    /* serial and usbip (cmd_serial.c, cmd_usbip.c) */
    bool pty;           /* serial: a pseudo-terminal instead of stdin/stdout */
    const char *link;   /* serial --pty: a symlink to it */
    int cdc_interface;  /* serial: the CDC function's communication interface; -1: the default */
    bool tunnel;        /* through the broker rather than TCP to the worker */
    const char *listen; /* usbip tunnel: HOST:PORT to listen on */
} cli_opts;

typedef int (*cli_cmd_fn)(const cli_opts *o);

int cmd_status(const cli_opts *o);
int cmd_who(const cli_opts *o);
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
int cmd_sub(const cli_opts *o);
int cmd_serial(const cli_opts *o);
int cmd_usbip(const cli_opts *o);
/* 0 if this client holds `serial` with kind usbip; else a CLI exit code, said
 * with how to reserve one (cmd_serial.c). */
int cli_usbip_check_lease(icefarm *f, const cli_opts *o, const char *serial);

/* A control reply as the commands read it: libicefarm's reply and its msgpack
 * document (for the fields the library has no accessor for). */
typedef struct {
    icefarm_reply *reply;
    ifm_doc doc;
} cli_reply;
void cli_reply_free(cli_reply *r);
/* The reply's serials, malloc'd (free() it); the count is returned. */
size_t cli_reply_serials(const cli_reply *r, char (**serials)[IFM_SERIAL_MAX]);

/* ---- files.c: the files evaluate and flash send ---- */

/* A download's default bound when --timeout is not given. */
#define CLI_FETCH_TIMEOUT_MS 30000u

typedef struct {
    const char *ref; /* as given: a path, a file: reference or an http(s) URL (borrowed) */
    uint8_t *data;   /* malloc'd by cli_files_read, freed by cli_files_free */
    size_t len;
    char sha256[65]; /* lower-case hex */
    bool remote;     /* an http:// or https:// URL */
} cli_file;

/* True for the references fetched over the network. */
bool cli_is_url(const char *ref);
/* Reads n files into files[n] (filled in, argument order kept): paths and
 * file: references from disk, URLs through icefarm/fetch.h (several at once,
 * each bounded by --timeout, default CLI_FETCH_TIMEOUT_MS), none larger than
 * max_bytes. 0, or the first failure's negative errno (-ENOENT, -EFBIG,
 * -EACCES, -EINVAL, -ETIMEDOUT, -EIO) with its index and reason, and then
 * nothing is left allocated. Says on a terminal what it waits for. */
int cli_files_read(const cli_opts *o, char *const *refs, size_t n, size_t max_bytes, cli_file *files, size_t *failed,
                   char *why, size_t whylen);
void cli_files_free(cli_file *files, size_t n);
/* Prints a cli_files_read failure and returns its exit code: CLI_USAGE for a
 * file that is missing, too large (`expect` says what was expected) or not a
 * reference; CLI_FAILED for the network (timeout, refused, a server error). */
int cli_file_error(const cli_opts *o, const cli_file *f, int status, const char *why, const char *expect);

/* ---- acquire.c: boards coming back, reserving for a run ---- */

/* What reserve --wait suggests for boards that are returning (re-flashing
 * after a release): the workers' default flash and self-test bounds (30 s +
 * 5 s), rounded up, is the longest one takes before it is marked broken. */
#define CLI_RETURNING_WAIT_S 40u

/* From control's status: boards of `kind` free now, and those "returning"
 * (unleased, worker online, on their way back to ready: flashing, testing, or
 * still preparing for a lease that has ended). CLI_OK or the exit code printed. */
int cli_farm_returning(icefarm *f, const cli_opts *o, const char *kind, size_t *nfree, size_t *returning);
/* After a "not enough boards" refusal (already printed): if boards of `kind`
 * are returning, says so on stderr and how to wait for them. */
void cli_explain_busy(icefarm *f, const cli_opts *o, const char *kind, uint32_t want);
/* Reserves boards for a command that uses them itself (evaluate, flash): `want`
 * of kind --kind, waiting --wait for them; when not enough are free and boards
 * are returning (and --wait was not given), waits for them within --timeout
 * (default 60 s), saying so; then settles for what is free if that is at least
 * `min`. CLI_OK with *serials (malloc'd, watched) and *n, or the exit code of
 * the error it printed (CLI_NOT_ENOUGH, CLI_UNREACHABLE, CLI_INTERRUPTED...). */
int cli_reserve_for_run(icefarm *f, const cli_opts *o, uint32_t want, uint32_t min, const void *args, size_t args_len,
                        char (**serials)[IFM_SERIAL_MAX], size_t *n);

/* ---- common.c ---- */

/* Connects (saying after a second what it waits for, on a terminal); NULL with
 * *exit_code set and the reason printed: CLI_USAGE for a bad name, broker URL
 * or CA file, CLI_UNREACHABLE otherwise. Library log lines go to stderr as
 * "icefarm-cli: ..." (warnings and errors; all with ICEFARM_LOG_LEVEL=debug). */
icefarm *cli_connect(const cli_opts *o, int *exit_code);
/* Runs one control request and reports errors in the requested style; returns
 * an exit code, and leaves the reply in *r on CLI_OK. */
int cli_call(icefarm *f, const cli_opts *o, const ifm_ctl_req *req, const void *args, size_t args_len, cli_reply *r);
/* Prints "icefarm-cli: MSG" on stderr (and with --json the usual envelope
 * {"ok": false, "exit": code, "error": MSG} on stdout); returns code. */
int cli_error(const cli_opts *o, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A warning on stderr, "icefarm-cli: warning: MSG"; never on stdout. */
void cli_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Converts a JSON text (reserve --args) to msgpack; -1 with a reason. */
int cli_json_to_msgpack(const char *text, ifm_enc *e, char *err, size_t errlen);
void cli_print_json(json_t *j);
/* Fills req->serials from the positional arguments. */
int cli_req_serials(const cli_opts *o, ifm_ctl_req *req);
/* "2026-05-01 14:03:07 CEST (in 59 min)": local time with its zone, and relative. */
const char *cli_fmt_until(uint64_t until_ms, char *buf, size_t cap);
/* "59 min", "2 h 5 min", "12 s". */
const char *cli_fmt_duration(uint64_t ms, char *buf, size_t cap);

/* Checks the boards a command names, before anything is sent to them: each
 * must exist (else "unknown serial", 404) and, with `mine`, be reserved by
 * this client (else "reserved by another client" / "not reserved by you",
 * 403). Returns CLI_OK or the exit code of the error it printed. */
int cli_check_boards(icefarm *f, const cli_opts *o, char *const *serials, size_t n, bool mine);
/* In a status reply: whether a worker reports the board, and its lease's holder
 * and kind ("" when free; kind may be NULL). */
bool cli_status_board(const cli_reply *r, const char *serial, char *holder, size_t hcap, char *kind, size_t kcap);
/* What the farm offers for `kind`, from control's status: the number of boards
 * of that kind whose worker is online (*total) and the kinds offered (a
 * comma-separated list in offered[cap]). CLI_OK or an exit code (printed). */
int cli_farm_kind(icefarm *f, const cli_opts *o, const char *kind, size_t *total, char *offered, size_t cap);

/* The wait announcer: after `what` has been waited for a second, say so once
 * on stderr ("icefarm-cli: waiting for WHAT..."), on a terminal only. One wait
 * at a time; cli_wait_end() cancels it. */
void cli_wait_begin(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cli_wait_end(void);

/* The running embedded farm's env file (./icefarm up writes it; ./icefarm env
 * prints it): when neither --broker nor ICEFARM_BROKER is given and the farm
 * that wrote it is alive, its ICEFARM_* settings are put into the environment
 * (those already set win). */
void cli_use_farm_env(const char *broker_flag);

#endif
