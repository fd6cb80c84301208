/* icefarm-cli: the farm from the shell, for people (tables) and scripts (--json). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "icefarm/opts.h"

typedef struct {
    const char *name;
    cli_cmd_fn fn;
    const char *args;
    const char *help;
} command;

static const command commands[] = {
    { "status", cmd_status, "", "boards, workers and leases" },
    { "available", cmd_available, "[--kind K]", "how many boards can be reserved now" },
    { "devices", cmd_devices, "[--kind K]", "serials of the boards that can be reserved now" },
    { "reserve", cmd_reserve, "--amount N | SERIAL... [--kind K] [--args JSON] [--wait S] [--duration S]",
      "reserve boards (all or nothing)" },
    { "extend", cmd_extend, "SERIAL... [--duration S]", "extend your reservations (none: all of them)" },
    { "end", cmd_end, "SERIAL...", "end your reservations of these boards" },
    { "end-all", cmd_end_all, "", "end all your reservations" },
    { "reboot", cmd_reboot, "SERIAL...", "reflash your reserved boards, keeping queued work" },
    { "evaluate", cmd_evaluate, "FILE... [--kind K] [--boards N] [--serials S,...]",
      "evaluate bitstreams, reserving boards if needed" },
    { "watch", cmd_watch, "[SERIAL...]", "stream your events (and these boards') as JSON lines" },
    { "flash", cmd_flash, "FILE.uf2 [SERIAL...] [--boards N] [--kind K]",
      "put your own firmware on boards you hold (reserving them if no serials are given)" },
};

static void usage(FILE *f)
{
    fprintf(f, "Usage: icefarm-cli [OPTIONS] COMMAND [ARGS]\n\nCommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-10s %s\n  %-10s   %s\n", commands[i].name, commands[i].help, "", commands[i].args);
    fprintf(f,
            "\nOptions (flags, then ICEFARM_* environment):\n"
            "  --broker URL     mqtt://HOST:PORT of the farm's broker   [ICEFARM_BROKER]\n"
            "  --name NAME      client name leases are held under       [ICEFARM_NAME, user@host]\n"
            "  --user U         broker login                            [ICEFARM_USER]\n"
            "  --password-file FILE  broker password, the file's first line (mode 0600)\n"
            "                   [ICEFARM_PASSWORD_FILE; or the password itself in ICEFARM_PASSWORD]\n"
            "  --password P     the same, typed in: every local user sees it in the process list\n"
            "  --cafile FILE    CA certificate for TLS                  [ICEFARM_CAFILE]\n"
            "  --timeout S      seconds to wait for the broker and control (default 10)\n"
            "  --json           machine-readable output\n"
            "  --no-extend      do not auto-extend leases on 'reservation ending soon'\n"
            "  --window N       evaluate: bitstreams in flight per board (default 2)\n"
            "  --result-timeout S  evaluate: a board with no result this long is stalled (default 60)\n"
            "  -h, --help       this help (also: icefarm-cli COMMAND --help)\n"
            "  --version        the version, then exit\n"
            "\nExit codes: 0 ok, 1 refused or failed, 2 usage, 3 unreachable, 4 not enough boards.\n");
}

static int parse_u64(const char *s, const char *what, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || v > max || *s == '-') {
        fprintf(stderr, "icefarm-cli: %s must be a number from 0 to %llu, got \"%s\"\n", what, (unsigned long long)max,
                s);
        return -1;
    }
    *out = v;
    return 0;
}

/* Resolves the broker password into *out: from `file` (--password-file), else
 * ICEFARM_PASSWORD_FILE, else `arg` (--password: warned about, and blanked in
 * argv); with none of them *out stays as it is (the library then reads
 * ICEFARM_PASSWORD). Two sources at once are a usage error. */
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

int main(int argc, char **argv)
{
    enum {
        O_BROKER = 1,
        O_NAME,
        O_USER,
        O_PASSWORD,
        O_CAFILE,
        O_TIMEOUT,
        O_JSON,
        O_AMOUNT,
        O_KIND,
        O_ARGS,
        O_WAIT,
        O_DURATION,
        O_BOARDS,
        O_SERIALS,
        O_NOEXT,
        O_WINDOW,
        O_RTIMEOUT,
        O_PASSWORD_FILE,
        O_VERSION
    };
    static const struct option opts[] = {
        { "broker", required_argument, 0, O_BROKER },
        { "name", required_argument, 0, O_NAME },
        { "user", required_argument, 0, O_USER },
        { "password", required_argument, 0, O_PASSWORD },
        { "cafile", required_argument, 0, O_CAFILE },
        { "timeout", required_argument, 0, O_TIMEOUT },
        { "json", no_argument, 0, O_JSON },
        { "amount", required_argument, 0, O_AMOUNT },
        { "kind", required_argument, 0, O_KIND },
        { "args", required_argument, 0, O_ARGS },
        { "wait", required_argument, 0, O_WAIT },
        { "duration", required_argument, 0, O_DURATION },
        { "boards", required_argument, 0, O_BOARDS },
        { "serials", required_argument, 0, O_SERIALS },
        { "no-extend", no_argument, 0, O_NOEXT },
        { "window", required_argument, 0, O_WINDOW },
        { "result-timeout", required_argument, 0, O_RTIMEOUT },
        { "password-file", required_argument, 0, O_PASSWORD_FILE },
        { "version", no_argument, 0, O_VERSION },
        { "help", no_argument, 0, 'h' },
        { 0, 0, 0, 0 },
    };
    cli_opts o;
    memset(&o, 0, sizeof o);
    o.window = 2;
    o.result_timeout_s = 60;
    bool help = false;
    const char *serials_csv = NULL, *password_file = NULL;
    char *password_arg = NULL;
    uint64_t v;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_BROKER:
            o.farm.broker = optarg;
            break;
        case O_NAME:
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
        case O_VERSION:
            printf("icefarm-cli %s\n", ifm_version());
            return CLI_OK;
        case O_CAFILE:
            o.farm.cafile = optarg;
            break;
        case O_JSON:
            o.json = true;
            break;
        case O_NOEXT:
            o.farm.no_auto_extend = true;
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
            if (parse_u64(optarg, "--timeout", 3600, &v))
                return CLI_USAGE;
            o.farm.timeout_ms = v * 1000;
            break;
        case O_AMOUNT:
            if (parse_u64(optarg, "--amount", IFM_MAX_SERIALS, &v) || v == 0)
                return CLI_USAGE;
            o.amount = (uint32_t)v;
            break;
        case O_WAIT:
            if (parse_u64(optarg, "--wait", 3600, &o.wait_s))
                return CLI_USAGE;
            break;
        case O_DURATION:
            if (parse_u64(optarg, "--duration", 365u * 86400u, &o.duration_s))
                return CLI_USAGE;
            break;
        case O_BOARDS:
            if (parse_u64(optarg, "--boards", IFM_MAX_SERIALS, &v) || v == 0)
                return CLI_USAGE;
            o.boards = (uint32_t)v;
            break;
        case O_WINDOW:
            if (parse_u64(optarg, "--window", 64, &v) || v == 0)
                return CLI_USAGE;
            o.window = (uint32_t)v;
            break;
        case O_RTIMEOUT:
            if (parse_u64(optarg, "--result-timeout", 86400, &o.result_timeout_s) || !o.result_timeout_s)
                return CLI_USAGE;
            break;
        case 'h':
            help = true;
            break;
        default:
            usage(stderr);
            return CLI_USAGE;
        }
    }
    if (optind >= argc) {
        usage(help ? stdout : stderr);
        return help ? CLI_OK : CLI_USAGE;
    }
    const char *name = argv[optind];
    const command *cmd = NULL;
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (strcmp(commands[i].name, name) == 0)
            cmd = &commands[i];
    if (!cmd) {
        fprintf(stderr, "icefarm-cli: unknown command \"%s\" (try --help)\n", name);
        return CLI_USAGE;
    }
    if (help) {
        printf("Usage: icefarm-cli %s %s\n%s\n(see icefarm-cli --help for the common options)\n", cmd->name, cmd->args,
               cmd->help);
        return CLI_OK;
    }
    /* The password: --password-file, ICEFARM_PASSWORD_FILE, --password (warned
     * about), or ICEFARM_PASSWORD (which the library reads itself). */
    char password[4096];
    if (cli_password(password_file, password_arg, password, sizeof password, &o.farm.password))
        return CLI_USAGE;
    o.pos = argv + optind + 1;
    o.npos = argc - optind - 1;
    /* --serials a,b,c is the same as listing them (evaluate takes files positionally). */
    char *serial_list[IFM_MAX_SERIALS];
    char *csv_copy = NULL;
    if (serials_csv) {
        csv_copy = strdup(serials_csv);
        int n = 0;
        for (char *save, *t = strtok_r(csv_copy, ",", &save); t && n < IFM_MAX_SERIALS; t = strtok_r(NULL, ",", &save))
            serial_list[n++] = t;
        o.serials = serial_list;
        o.nserials = n;
        if (strcmp(name, "evaluate") != 0) {
            o.pos = serial_list;
            o.npos = n;
        }
    }
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
        perror("icefarm-cli: cannot ignore SIGPIPE");
        free(csv_copy);
        return CLI_FAILED;
    }
    /* A CLI speaks through its output; library chatter only when asked for. */
    setenv("ICEFARM_LOG_LEVEL", "warn", 0);
    int rc = cmd->fn(&o);
    free(csv_copy);
    explicit_bzero(password, sizeof password);
    return rc;
}
