/* icefarm-cli: the farm from the shell, for people (tables) and scripts (--json).
 *
 * One table of options (what each takes, its default and unit) and one table
 * of commands (which options each owns, its synopsis and an example): the
 * parser, per-command --help and the one-line errors all come from them, so
 * the help cannot disagree with what is accepted. Common options (the broker
 * connection, --timeout, --json) go before or after the command. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "icefarm/opts.h"

typedef struct {
    const char *name;
    bool arg;        /* takes a value */
    const char *val; /* the value's name in help: "N", "SECONDS" */
    const char *help;
} optdef;

static const optdef optdefs[O_COUNT] = {
    [O_BROKER] = { "broker", true, "URL",
                   "the farm's broker, mqtt://HOST:PORT or mqtts://HOST:PORT [ICEFARM_BROKER; else the farm "
                   "./icefarm up runs; else mqtt://127.0.0.1:1883]" },
    [O_NAME] = { "name", true, "NAME",
                 "the client name leases are held under, in the anonymous farm [ICEFARM_NAME; default USER@HOST]; "
                 "in a secured farm it is your --user (another name is a usage error)" },
    [O_USER] = { "user", true, "USER", "broker login of a secured farm [ICEFARM_USER]" },
    [O_PASSWORD_FILE] = { "password-file", true, "FILE",
                          "the broker password: the file's first line; mode 0600 [ICEFARM_PASSWORD_FILE, or the "
                          "password itself in ICEFARM_PASSWORD]" },
    [O_PASSWORD] = { "password", true, "PASSWORD",
                     "the same, typed in (every local user sees it in the process list: prefer --password-file)" },
    [O_CAFILE] = { "cafile", true, "FILE", "CA certificate to verify an mqtts:// broker [ICEFARM_CAFILE]" },
    [O_TIMEOUT] = { "timeout", true, "SECONDS",
                    "bounds each wait for an answer: the broker and control's reply (default 10), a board "
                    "becoming ready or coming back after a release (default 60), a file's download (default 30)" },
    [O_JSON] = { "json", false, NULL, "machine-readable output: one JSON document on stdout" },
    [O_HELP] = { "help", false, NULL, "this command's options, defaults and an example" },
    [O_AMOUNT] = { "amount", true, "N", "how many boards (1..4096)" },
    [O_KIND] = { "kind", true, "KIND",
                 "the boards' kind: pulsecount or variance (the firmware they run), or usbip with "
                 "reserve (the board's whole USB device: icefarm-cli serial, usbip; README.md) (default pulsecount)" },
    [O_ARGS] = { "args", true, "JSON",
                 "the kind's arguments, a JSON object, e.g. '{\"send_waveform\": true}' (PROTOCOL.md 6.3)" },
    [O_WAIT] = { "wait", true, "SECONDS", "wait this long for boards to come free (default 0: answer at once)" },
    [O_DURATION] = { "duration", true, "SECONDS", "lease length (default: the farm's, 3600; capped at its maximum)" },
    [O_SET] = { "set", false, NULL, "end the lease exactly --duration from now, even if that shortens it" },
    [O_BOARDS] = { "boards", true, "N",
                   "how many boards to reserve (evaluate: default up to 8, one per bitstream; flash: default 1)" },
    [O_SERIALS] = { "serials", true, "S1,S2", "use these boards you already hold instead of reserving" },
    [O_NOEXT] = { "no-extend", false, NULL, "do not extend the leases this run holds when they near their end" },
    [O_WINDOW] = { "window", true, "N", "bitstreams in flight per board (1..64, default 2)" },
    [O_RTIMEOUT] = { "result-timeout", true, "SECONDS",
                     "a board with work and no result this long is rebooted once, then dropped (default 60)" },
    [O_NDJSON] = { "ndjson", false, NULL, "one JSON line per result as it arrives, then a summary line" },
    [O_NOCHECK] = { "no-check", false, NULL,
                    "send files without checking their iCE40 framing (for mutated raw images)" },
    [O_VERSION] = { "version", false, NULL, "the version, then exit" },
    [O_PTY] = { "pty", false, NULL, "a pseudo-terminal (its path is printed) instead of stdin/stdout" },
    [O_LINK] = { "link", true, "PATH", "with --pty: a symlink to the pty at PATH (removed at exit)" },
    [O_INTERFACE] = { "interface", true, "N",
                      "the CDC function whose communication interface is N (default 0: the pico-ice "
                      "firmware's protocol console; 2 is its second CDC)" },
    [O_TUNNEL] = { "tunnel", false, NULL, "USB/IP through the broker instead of TCP to the worker" },
    [O_LISTEN] = { "listen", true, "HOST:PORT",
                   "usbip tunnel: where the local USB/IP endpoint listens (default 127.0.0.1:3240)" },
    [O_FTIMEOUT] = { "flash-timeout", true, "SECONDS",
                     "how long to wait for each board to report it is flashed (default 60; the worker's own "
                     "flash bound is 30 by default, its failure normally comes first)" },
};

/* Every command takes these. */
static const int common_opts[] = { O_BROKER, O_NAME,    O_USER, O_PASSWORD_FILE, O_PASSWORD,
                                   O_CAFILE, O_TIMEOUT, O_JSON, O_HELP,          0 };

typedef struct {
    const char *name;
    cli_cmd_fn fn;
    const char *synopsis;
    const char *about;
    int opts[10];         /* its own options, 0-terminated */
    int min_pos, max_pos; /* positional arguments (-1: any number) */
    const char *example;
} command;

static const command commands[] = {
    { "status",
      cmd_status,
      "",
      "Workers, boards and leases: who holds what, until when (yours marked *).",
      { 0 },
      0,
      0,
      "icefarm-cli status" },
    { "who",
      cmd_who,
      "",
      "Who holds boards: one line per client, its boards, kinds and the earliest end.",
      { 0 },
      0,
      0,
      "icefarm-cli who" },
    { "available",
      cmd_available,
      "",
      "How many boards can be reserved now.",
      { O_KIND, 0 },
      0,
      0,
      "icefarm-cli available --kind variance" },
    { "devices",
      cmd_devices,
      "",
      "The serials of the boards that can be reserved now.",
      { O_KIND, 0 },
      0,
      0,
      "icefarm-cli devices" },
    { "reserve",
      cmd_reserve,
      "(--amount N | SERIAL...)",
      "Reserves boards, all or nothing, and prints each with the end of its lease. Without --wait it answers at "
      "once: not enough free boards exits 4, saying how many are returning (re-flashing after a release, back "
      "within seconds) and how to wait for them. With --wait it waits for boards to come free (and says at once "
      "when the farm has fewer boards of the kind than asked).",
      { O_AMOUNT, O_KIND, O_ARGS, O_WAIT, O_DURATION, O_NOEXT, 0 },
      0,
      -1,
      "icefarm-cli reserve --amount 2 --duration 7200" },
    { "extend",
      cmd_extend,
      "[SERIAL...]",
      "Extends your leases (all of them without serials) to at least --duration from now; an extension never "
      "shortens a lease unless --set. Prints each new end, says when the farm capped the duration, and names "
      "each serial it could not extend (exit 1).",
      { O_DURATION, O_SET, 0 },
      0,
      -1,
      "icefarm-cli extend --duration 7200" },
    { "end",
      cmd_end,
      "SERIAL...",
      "Ends your leases of these boards; names each serial that was not yours or already ended (exit 1).",
      { 0 },
      1,
      -1,
      "icefarm-cli end 2BCE0BDCF5320C42" },
    { "end-all", cmd_end_all, "", "Ends every lease you hold.", { 0 }, 0, 0, "icefarm-cli end-all" },
    { "reboot",
      cmd_reboot,
      "SERIAL...",
      "Reflashes your boards' firmware, keeping their queued work.",
      { 0 },
      1,
      -1,
      "icefarm-cli reboot 2BCE0BDCF5320C42" },
    { "evaluate",
      cmd_evaluate,
      "FILE|URL...",
      "Evaluates iCE40UP5K bitstreams (104,090 bytes each, checked for the iCE40 framing): files, file: "
      "references or http:// and https:// URLs (downloaded first, each within --timeout, its SHA-256 reported; "
      "exit 2 for a missing or oversized one, 1 for a network failure). Reserves boards unless --serials names "
      "yours, waiting within --timeout for boards returning from a release, and releases what it reserved. "
      "Prints each result as it arrives; exit 1 if any failed, 130 on Ctrl-C.",
      { O_KIND, O_BOARDS, O_SERIALS, O_WAIT, O_WINDOW, O_RTIMEOUT, O_NDJSON, O_NOCHECK, O_NOEXT, 0 },
      1,
      -1,
      "icefarm-cli evaluate --boards 4 tests/bitstreams/*.bin" },
    { "flash",
      cmd_flash,
      "FILE.uf2|URL [SERIAL...]",
      "Puts your own UF2 firmware (a file or an http:// or https:// URL, its SHA-256 reported) on boards you "
      "hold, reserving --boards first when no serials are given (waiting within --timeout for boards returning "
      "from a release); they keep it until a reboot or the lease's end. Waits --timeout for the boards to be "
      "ready, then --flash-timeout for each to report it is flashed.",
      { O_BOARDS, O_KIND, O_WAIT, O_NOEXT, O_FTIMEOUT, 0 },
      1,
      -1,
      "icefarm-cli flash my.uf2 2BCE0BDCF5320C42" },
    { "watch",
      cmd_watch,
      "[SERIAL...]",
      "Your events (and these boards') as JSON lines, until Ctrl-C. A viewer: it never extends leases.",
      { 0 },
      0,
      -1,
      "icefarm-cli watch 2BCE0BDCF5320C42" },
    { "serial",
      cmd_serial,
      "SERIAL",
      "The serial console of a board you hold with kind usbip, through the userspace USB/IP client: no root, "
      "no kernel module. stdin/stdout, or --pty for picocom, screen or pyserial (DTR follows the pty's openers; "
      "setting 1200 baud on it is the 1200-baud touch). It follows the board through re-enumerations.",
      { O_PTY, O_LINK, O_INTERFACE, O_TUNNEL, 0 },
      1,
      1,
      "icefarm-cli serial 2BCE0BDCF5320C42 --pty --link /tmp/board.tty" },
    { "usbip",
      cmd_usbip,
      "attach (SERIAL...|--amount N) | tunnel SERIAL | list HOST[:PORT]",
      "A board of kind usbip: attach it to this machine's kernel, tunnel it through the broker, or list a USB/IP "
      "server. attach: boards of kind usbip to this machine's kernel (root and vhci_hcd), following every re-export "
      "by itself and printing each board's tty; Ctrl-C detaches and ends the leases it reserved (exit 0); a lease "
      "ended otherwise detaches that board, and when none is left it exits 1. tunnel: a "
      "local USB/IP endpoint through the broker for the kernel's own usbip attach. list: what a USB/IP "
      "server lists.",
      { O_AMOUNT, O_WAIT, O_DURATION, O_TUNNEL, O_LISTEN, 0 },
      1,
      -1,
      "sudo icefarm-cli usbip attach --amount 2" },
    { "sub",
      cmd_sub,
      "TOPIC...",
      "Any topics, printed as JSON lines {\"topic\", \"retained\", \"payload\"} with msgpack decoded (like "
      "mosquitto_sub -v), until Ctrl-C.",
      { 0 },
      1,
      -1,
      "icefarm-cli sub 'icefarm/+/state' icefarm/farm/available" },
};
#define NCOMMANDS (sizeof commands / sizeof *commands)

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static void print_opt(FILE *f, int id)
{
    const optdef *d = &optdefs[id];
    char left[64];
    snprintf(left, sizeof left, "--%s%s%s", d->name, d->arg ? " " : "", d->arg ? d->val : "");
    fprintf(f, "  %-24s %s\n", left, d->help);
}

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: icefarm-cli [OPTIONS] COMMAND [ARGS] [OPTIONS]\n\nCommands (icefarm-cli COMMAND --help for "
            "each one's options and an example):\n");
    for (size_t i = 0; i < NCOMMANDS; i++) {
        const char *dot = strchr(commands[i].about, '.');
        int n = dot ? (int)(dot - commands[i].about) : (int)strlen(commands[i].about);
        fprintf(f, "  %-10s %.*s\n", commands[i].name, n, commands[i].about);
    }
    fprintf(f, "\nOptions every command takes:\n");
    for (const int *p = common_opts; *p; p++)
        print_opt(f, *p);
    print_opt(f, O_VERSION);
    fprintf(f,
            "\nExit codes: 0 ok, 1 refused or failed, 2 usage, 3 broker or control unreachable, 4 not enough "
            "boards, 130 interrupted.\n");
}

static void command_help(const command *c)
{
    printf("Usage: icefarm-cli %s%s%s [OPTIONS]\n\n%s\n", c->name, c->synopsis[0] ? " " : "", c->synopsis, c->about);
    if (c->opts[0]) {
        printf("\nOptions:\n");
        for (const int *p = c->opts; *p; p++)
            print_opt(stdout, *p);
    }
    printf("\nCommon options:\n");
    for (const int *p = common_opts; *p; p++)
        print_opt(stdout, *p);
    printf("\nExample:\n  %s\n", c->example);
}

static bool takes(const command *c, int id)
{
    for (const int *p = common_opts; *p; p++)
        if (*p == id)
            return true;
    for (const int *p = c ? c->opts : NULL; p && *p; p++)
        if (*p == id)
            return true;
    return false;
}

static int parse_u64(const char *s, const char *what, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || errno || v < min || v > max || *s == '-' || *s == '+') {
        fprintf(stderr, "icefarm-cli: --%s must be a whole number from %llu to %llu, got \"%s\"\n", what,
                (unsigned long long)min, (unsigned long long)max, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* Resolves the broker password into *out: from `file` (--password-file), else
 * ICEFARM_PASSWORD_FILE, else `arg` (--password: warned about, and blanked in
 * argv); with none of them *out stays as it is (the library then reads
 * ICEFARM_PASSWORD). Two sources at once are a usage error. The file is read
 * with the daemons' own rules (ifm_secret_read: mode 0600 or stricter). */
static int cli_password(const char *file, char *arg, char *buf, size_t cap, const char **out)
{
    const char *env_file = getenv("ICEFARM_PASSWORD_FILE");
    if (file && arg) {
        fprintf(stderr, "icefarm-cli: give --password-file or --password, not both\n");
        return -1;
    }
    if (!file && !arg && env_file && *env_file) {
        const char *env_pw = getenv("ICEFARM_PASSWORD");
        if (env_pw && *env_pw) {
            fprintf(stderr, "icefarm-cli: ICEFARM_PASSWORD_FILE and ICEFARM_PASSWORD are both set: keep one\n");
            return -1;
        }
        file = env_file;
    }
    if (file) {
        char err[512];
        if (ifm_secret_read(file, buf, cap, err, sizeof err) < 0) {
            fprintf(stderr, "icefarm-cli: %s\n", err);
            return -1;
        }
        *out = buf;
    } else if (arg) {
        fprintf(stderr,
                "icefarm-cli: warning: --password is visible to every local user in the process list; use "
                "--password-file FILE (mode 0600) or ICEFARM_PASSWORD instead\n");
        snprintf(buf, cap, "%s", arg);
        memset(arg, '*', strlen(arg));
        *out = buf;
    }
    return 0;
}

/* The command is the first argument that is not an option or an option's value. */
static const char *find_command_word(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0)
            return i + 1 < argc ? argv[i + 1] : NULL;
        if (a[0] != '-' || !a[1])
            return a;
        if (a[1] != '-' || strchr(a, '='))
            continue;
        for (int id = 1; id < O_COUNT; id++)
            if (optdefs[id].arg && strcmp(a + 2, optdefs[id].name) == 0) {
                i++;
                break;
            }
    }
    return NULL;
}

/* A bad flag: one line that says what is wrong, never the whole help. */
static int bad_flag(const command *c, const char *arg, bool missing)
{
    const char *where = c ? c->name : "icefarm-cli";
    char flag[64];
    snprintf(flag, sizeof flag, "%.*s", (int)strcspn(arg, "="), arg);
    if (missing) {
        fprintf(stderr, "icefarm-cli: %s needs a value (icefarm-cli %s --help)\n", flag, c ? c->name : "");
        return CLI_USAGE;
    }
    for (int id = 1; id < O_COUNT; id++)
        if (flag[0] == '-' && flag[1] == '-' && strcmp(flag + 2, optdefs[id].name) == 0) {
            fprintf(stderr, "icefarm-cli: %s has no option %s (icefarm-cli %s --help lists its options)\n", where, flag,
                    c ? c->name : "");
            return CLI_USAGE;
        }
    fprintf(stderr, "icefarm-cli: unknown option %s (icefarm-cli %s%s--help)\n", flag, c ? c->name : "", c ? " " : "");
    return CLI_USAGE;
}

int main(int argc, char **argv)
{
    const char *word = find_command_word(argc, argv);
    const command *cmd = word ? find_command(word) : NULL;
    if (word && !cmd) {
        fprintf(stderr, "icefarm-cli: unknown command \"%s\" (icefarm-cli --help lists them)\n", word);
        return CLI_USAGE;
    }
    struct option longopts[O_COUNT + 1];
    size_t n = 0;
    for (int id = 1; id < O_COUNT; id++)
        if (takes(cmd, id) || (id == O_VERSION && !cmd))
            longopts[n++] =
                (struct option){ optdefs[id].name, optdefs[id].arg ? required_argument : no_argument, 0, id };
    longopts[n] = (struct option){ 0, 0, 0, 0 };

    cli_opts o;
    memset(&o, 0, sizeof o);
    o.window = 2;
    o.result_timeout_s = 60;
    o.cdc_interface = -1;
    o.flash_timeout_s = 60;
    bool help = false;
    const char *serials_csv = NULL, *password_file = NULL;
    char *password_arg = NULL;
    uint64_t v;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case O_BROKER:
            o.farm.broker = optarg;
            break;
        case O_NAME:
            if (!*optarg) { /* "--name $UNSET": not the default name in silence */
                fprintf(stderr, "icefarm-cli: --name needs a non-empty name (leave it out for USER@HOST)\n");
                return CLI_USAGE;
            }
            o.farm.name = optarg;
            break;
        case O_USER:
            o.farm.user = optarg;
            break;
        case O_PASSWORD:
            password_arg = optarg;
            break;
        case O_PASSWORD_FILE:
            password_file = optarg;
            break;
        case O_CAFILE:
            o.farm.cafile = optarg;
            break;
        case O_JSON:
            o.json = true;
            break;
        case O_NDJSON:
            o.ndjson = true;
            break;
        case O_NOEXT:
            o.farm.no_auto_extend = true;
            break;
        case O_SET:
            o.set = true;
            break;
        case O_NOCHECK:
            o.no_check = true;
            break;
        case O_KIND:
            o.kind = optarg;
            break;
        case O_ARGS:
            o.args_json = optarg;
            break;
        case O_SERIALS:
            serials_csv = optarg;
            break;
        case O_TIMEOUT:
            if (parse_u64(optarg, "timeout", 1, 3600, &v))
                return CLI_USAGE;
            o.farm.timeout_ms = v * 1000;
            break;
        case O_AMOUNT:
            if (parse_u64(optarg, "amount", 1, IFM_MAX_SERIALS, &v))
                return CLI_USAGE;
            o.amount = (uint32_t)v;
            break;
        case O_WAIT:
            if (parse_u64(optarg, "wait", 0, 3600, &o.wait_s))
                return CLI_USAGE;
            break;
        case O_DURATION:
            if (parse_u64(optarg, "duration", 1, 365u * 86400u, &o.duration_s))
                return CLI_USAGE;
            break;
        case O_BOARDS:
            if (parse_u64(optarg, "boards", 1, IFM_MAX_SERIALS, &v))
                return CLI_USAGE;
            o.boards = (uint32_t)v;
            break;
        case O_WINDOW:
            if (parse_u64(optarg, "window", 1, 64, &v))
                return CLI_USAGE;
            o.window = (uint32_t)v;
            break;
        case O_RTIMEOUT:
            if (parse_u64(optarg, "result-timeout", 1, 86400, &o.result_timeout_s))
                return CLI_USAGE;
            break;
        case O_FTIMEOUT:
            if (parse_u64(optarg, "flash-timeout", 1, 3600, &o.flash_timeout_s))
                return CLI_USAGE;
            break;
        case O_VERSION:
            printf("icefarm-cli %s\n", ifm_version());
            return CLI_OK;
        case O_PTY:
            o.pty = true;
            break;
        case O_LINK:
            o.link = optarg;
            break;
        case O_TUNNEL:
            o.tunnel = true;
            break;
        case O_LISTEN:
            o.listen = optarg;
            break;
        case O_INTERFACE:
            if (parse_u64(optarg, "interface", 0, 31, &v))
                return CLI_USAGE;
            o.cdc_interface = (int)v;
            break;
        case 'h':
        case O_HELP:
            help = true;
            break;
        case ':':
            return bad_flag(cmd, argv[optind - 1], true);
        default:
            return bad_flag(cmd, argv[optind - 1], false);
        }
    }
    if (!cmd) {
        usage(help ? stdout : stderr);
        return help ? CLI_OK : CLI_USAGE;
    }
    if (help) {
        command_help(cmd);
        return CLI_OK;
    }
    /* Non-options were moved after optind: the command word, then its arguments. */
    o.cmd = cmd->name;
    o.pos = argv + optind + 1;
    o.npos = argc - optind - 1;
    if (o.npos < cmd->min_pos || (cmd->max_pos >= 0 && o.npos > cmd->max_pos)) {
        if (cmd->max_pos == 0)
            fprintf(stderr, "icefarm-cli: %s takes no arguments, got \"%s\" (icefarm-cli %s --help)\n", cmd->name,
                    o.pos[0], cmd->name);
        else
            fprintf(stderr, "icefarm-cli: usage: icefarm-cli %s %s (icefarm-cli %s --help)\n", cmd->name, cmd->synopsis,
                    cmd->name);
        return CLI_USAGE;
    }
    if (o.json && o.ndjson) {
        fprintf(stderr, "icefarm-cli: give --json or --ndjson, not both\n");
        return CLI_USAGE;
    }
    /* The password: --password-file, ICEFARM_PASSWORD_FILE, --password (warned
     * about), or ICEFARM_PASSWORD (which the library reads itself). */
    char password[4096];
    if (cli_password(password_file, password_arg, password, sizeof password, &o.farm.password))
        return CLI_USAGE;
    /* --serials a,b,c is the same as listing them (evaluate takes files positionally). */
    char *serial_list[IFM_MAX_SERIALS];
    char *csv_copy = NULL;
    if (serials_csv) {
        csv_copy = strdup(serials_csv);
        int k = 0;
        for (char *save, *t = strtok_r(csv_copy, ",", &save); t && k < IFM_MAX_SERIALS; t = strtok_r(NULL, ",", &save))
            serial_list[k++] = t;
        o.serials = serial_list;
        o.nserials = k;
    }
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
        perror("icefarm-cli: cannot ignore SIGPIPE");
        free(csv_copy);
        return CLI_FAILED;
    }
    cli_use_farm_env(o.farm.broker);
    int rc = cmd->fn(&o);
    free(csv_copy);
    explicit_bzero(password, sizeof password);
    return rc;
}
