/* What every icefarm-cli command shares: connecting, calling control, errors in
 * human or --json form, the wait announcer, and msgpack <-> JSON. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "icefarm/json.h"

/* The process's one context: the log sink's level and the wait announcer's
 * line (written by the SIGALRM handler, hence preformatted). */
static struct {
    int log_level;      /* lowest level printed */
    bool quiet_log;     /* while connecting: the connect error says it all */
    char wait_msg[256]; /* "icefarm-cli: waiting for ...\n" */
    size_t wait_len;
    bool wait_armed;
} cli_ctx = { ICEFARM_LOG_WARN, false, "", 0, false };

int cli_error(const cli_opts *o, int code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cli_wait_end();
    if (o->json || o->ndjson) {
        json_t *j = json_pack("{s:b, s:i, s:s}", "ok", 0, "exit", code, "error", msg);
        cli_print_json(j);
        json_decref(j);
    }
    fprintf(stderr, "icefarm-cli: %s\n", msg);
    return code;
}

void cli_warn(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "icefarm-cli: warning: %s\n", msg);
}

/* ---- the wait announcer ---- */

static void on_alarm(int sig)
{
    (void)sig;
    if (cli_ctx.wait_armed && write(STDERR_FILENO, cli_ctx.wait_msg, cli_ctx.wait_len) < 0) {
        /* nothing to do: stderr is gone */
    }
    cli_ctx.wait_armed = false;
}

void cli_wait_begin(const char *fmt, ...)
{
    cli_wait_end();
    if (!isatty(STDERR_FILENO))
        return;
    char what[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    int n = snprintf(cli_ctx.wait_msg, sizeof cli_ctx.wait_msg, "icefarm-cli: waiting for %s...\n", what);
    cli_ctx.wait_len = n < 0 ? 0 : (size_t)n < sizeof cli_ctx.wait_msg ? (size_t)n : sizeof cli_ctx.wait_msg - 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    cli_ctx.wait_armed = true;
    struct itimerval it = { .it_value = { .tv_sec = 1 } };
    setitimer(ITIMER_REAL, &it, NULL);
}

void cli_wait_end(void)
{
    if (!cli_ctx.wait_armed)
        return;
    struct itimerval off;
    memset(&off, 0, sizeof off);
    setitimer(ITIMER_REAL, &off, NULL);
    cli_ctx.wait_armed = false;
}

/* ---- connecting ---- */

/* Library log lines, one per event, without timestamps (a CLI's output is
 * read by people and scripts, not collected by a log system). */
static void on_log(icefarm_log_level level, const char *msg, void *arg)
{
    (void)arg;
    if ((int)level < cli_ctx.log_level || (cli_ctx.quiet_log && level < ICEFARM_LOG_ERROR))
        return;
    fprintf(stderr, "icefarm-cli: %s%s\n", level >= ICEFARM_LOG_WARN ? "" : "debug: ", msg);
}

icefarm *cli_connect(const cli_opts *o, int *exit_code)
{
    const char *lvl = getenv("ICEFARM_LOG_LEVEL");
    cli_ctx.log_level = lvl && strcmp(lvl, "debug") == 0 ? ICEFARM_LOG_DEBUG
        : lvl && strcmp(lvl, "info") == 0                ? ICEFARM_LOG_INFO
        : lvl && strcmp(lvl, "error") == 0               ? ICEFARM_LOG_ERROR
                                                         : ICEFARM_LOG_WARN;
    icefarm_opts fo = o->farm;
    fo.log = on_log;
    /* In a secured farm the broker knows you as your user name: it lets you read
     * only your own reply and event topics, so any other name would wait in
     * silence for answers it may not read. Say so at once instead. */
    const char *user = fo.user ? fo.user : getenv("ICEFARM_USER");
    const char *env_name = getenv("ICEFARM_NAME");
    const char *name = fo.name ? fo.name : env_name;
    if (user && *user && name && *name && strcmp(name, user) != 0) {
        *exit_code = cli_error(o, CLI_USAGE,
                               "%s %s is not your broker user %s: in a secured farm your client name is your user "
                               "name (%s)",
                               fo.name ? "--name" : "ICEFARM_NAME", name, user,
                               fo.name ? "drop --name, or log in as that user with --user" : "unset ICEFARM_NAME");
        return NULL;
    }
    const char *broker = fo.broker ? fo.broker : getenv("ICEFARM_BROKER");
    cli_wait_begin("the broker at %s", broker && *broker ? broker : "mqtt://127.0.0.1:1883");
    cli_ctx.quiet_log = true;
    char err[512];
    icefarm *f;
    int rc = icefarm_connect(&fo, &f, err, sizeof err);
    cli_ctx.quiet_log = false;
    cli_wait_end();
    if (rc)
        *exit_code = cli_error(o, rc == -EINVAL ? CLI_USAGE : CLI_UNREACHABLE, "%s", err);
    return rc ? NULL : f;
}

/* ---- control ---- */

void cli_reply_free(cli_reply *r)
{
    if (r->reply)
        ifm_doc_free(&r->doc);
    icefarm_reply_free(r->reply);
    r->reply = NULL;
}

size_t cli_reply_serials(const cli_reply *r, char (**serials)[IFM_SERIAL_MAX])
{
    size_t n = icefarm_reply_nserials(r->reply);
    *serials = calloc(n ? n : 1, sizeof **serials);
    if (!*serials)
        return 0;
    for (size_t i = 0; i < n; i++)
        snprintf((*serials)[i], IFM_SERIAL_MAX, "%s", icefarm_reply_serial(r->reply, i));
    return n;
}

int cli_call(icefarm *f, const cli_opts *o, const ifm_ctl_req *req, const void *args, size_t args_len, cli_reply *r)
{
    char err[512];
    const char **serials = calloc(req->nserials ? req->nserials : 1, sizeof *serials);
    if (!serials)
        return cli_error(o, CLI_FAILED, "out of memory");
    for (size_t i = 0; i < req->nserials; i++)
        serials[i] = req->serials[i];
    icefarm_req q = { .verb = ifm_verb_name(req->verb),
                      .amount = req->amount,
                      .kind = req->kind[0] ? req->kind : NULL,
                      .serials = serials,
                      .nserials = req->nserials,
                      .args = args,
                      .args_len = args_len,
                      .wait_ms = req->wait_ms,
                      .duration_s = req->duration_s,
                      .set = req->set };
    if (!req->wait_ms)
        cli_wait_begin("icefarm control's answer to %s", q.verb);
    int rc = icefarm_call(f, &q, &r->reply, err, sizeof err);
    cli_wait_end();
    free(serials);
    if (rc == -ECANCELED)
        return cli_error(o, CLI_INTERRUPTED, "interrupted while waiting for control's answer to %s", q.verb);
    if (rc)
        return cli_error(o, rc == -EINVAL ? CLI_USAGE : CLI_UNREACHABLE, "%s", err);
    if (!icefarm_reply_ok(r->reply)) {
        int code = icefarm_reply_errno(r->reply) == -EBUSY ? CLI_NOT_ENOUGH : CLI_FAILED;
        code = cli_error(o, code, "%s refused (%u): %s", ifm_verb_name(req->verb), icefarm_reply_code(r->reply),
                         icefarm_reply_error(r->reply));
        icefarm_reply_free(r->reply);
        r->reply = NULL;
        return code;
    }
    size_t len;
    const void *data = icefarm_reply_data(r->reply, &len);
    ifm_err perr;
    if (ifm_doc_parse(&r->doc, data, len, &perr)) { /* the library parsed it already: cannot happen */
        ifm_doc_free(&r->doc);
        icefarm_reply_free(r->reply);
        r->reply = NULL;
        return cli_error(o, CLI_FAILED, "malformed reply from control: %s", perr.msg);
    }
    return CLI_OK;
}

/* Finds serial's lease holder in a status reply's "leases"; "" when free. */
bool cli_status_board(const cli_reply *r, const char *serial, char *holder, size_t hcap, char *kind, size_t kcap)
{
    const msgpack_object *boards = ifm_map_get(r->doc.root, "boards"), *leases = ifm_map_get(r->doc.root, "leases");
    bool known = false;
    for (uint32_t j = 0; boards && boards->type == MSGPACK_OBJECT_ARRAY && j < boards->via.array.size; j++) {
        char s[IFM_SERIAL_MAX] = "";
        ifm_get_str(&boards->via.array.ptr[j], "serial", false, s, sizeof s, NULL);
        known |= strcmp(s, serial) == 0;
    }
    holder[0] = '\0';
    if (kind)
        kind[0] = '\0';
    for (uint32_t j = 0; leases && leases->type == MSGPACK_OBJECT_ARRAY && j < leases->via.array.size; j++) {
        char s[IFM_SERIAL_MAX] = "";
        ifm_get_str(&leases->via.array.ptr[j], "serial", false, s, sizeof s, NULL);
        if (strcmp(s, serial) != 0)
            continue;
        ifm_get_str(&leases->via.array.ptr[j], "client", false, holder, hcap, NULL);
        if (kind)
            ifm_get_str(&leases->via.array.ptr[j], "kind", false, kind, kcap, NULL);
    }
    return known;
}

int cli_check_boards(icefarm *f, const cli_opts *o, char *const *serials, size_t n, bool mine)
{
    if (!n)
        return CLI_OK;
    ifm_ctl_req req = { .verb = IFM_VERB_STATUS };
    cli_reply r = { 0 };
    int rc = cli_call(f, o, &req, NULL, 0, &r);
    if (rc != CLI_OK)
        return rc;
    for (size_t i = 0; i < n && rc == CLI_OK; i++) {
        char holder[IFM_NAME_MAX];
        bool known = cli_status_board(&r, serials[i], holder, sizeof holder, NULL, 0);
        if (!known)
            rc = cli_error(o, CLI_FAILED, "unknown serial %s (404: no worker has reported it; see icefarm-cli status)",
                           serials[i]);
        else if (mine && holder[0] && strcmp(holder, icefarm_name(f)) != 0)
            rc = cli_error(o, CLI_FAILED, "serial %s is reserved by another client (403: %s holds it, you are %s)",
                           serials[i], holder, icefarm_name(f));
        else if (mine && !holder[0])
            rc = cli_error(o, CLI_FAILED,
                           "serial %s is not reserved by you (403): reserve it first (icefarm-cli reserve %s)",
                           serials[i], serials[i]);
    }
    cli_reply_free(&r);
    return rc;
}

int cli_farm_kind(icefarm *f, const cli_opts *o, const char *kind, size_t *total, char *offered, size_t cap)
{
    *total = 0;
    offered[0] = '\0';
    ifm_ctl_req req = { .verb = IFM_VERB_STATUS };
    cli_reply r = { 0 };
    int rc = cli_call(f, o, &req, NULL, 0, &r);
    if (rc != CLI_OK)
        return rc;
    const msgpack_object *ws = ifm_map_get(r.doc.root, "workers"), *bs = ifm_map_get(r.doc.root, "boards");
    for (uint32_t i = 0; ws && ws->type == MSGPACK_OBJECT_ARRAY && i < ws->via.array.size; i++) {
        const msgpack_object *w = &ws->via.array.ptr[i], *k = ifm_map_get(w, "kinds");
        char id[IFM_NAME_MAX] = "";
        bool online = false, offers = false;
        ifm_get_str(w, "id", false, id, sizeof id, NULL);
        ifm_get_bool(w, "online", false, &online, NULL);
        for (uint32_t j = 0; k && k->type == MSGPACK_OBJECT_ARRAY && j < k->via.array.size; j++) {
            char one[IFM_KIND_MAX];
            if (ifm_obj_str(&k->via.array.ptr[j], "kind", false, one, sizeof one, NULL))
                continue;
            offers |= strcmp(one, kind) == 0;
            /* Each kind once, in the order first seen. */
            char pat[IFM_KIND_MAX + 2];
            snprintf(pat, sizeof pat, ",%s,", one);
            char have[1024];
            snprintf(have, sizeof have, ",%s,", offered);
            if (online && !strstr(have, pat) && strlen(offered) + strlen(one) + 3 < cap)
                snprintf(offered + strlen(offered), cap - strlen(offered), "%s%s", offered[0] ? ", " : "", one);
        }
        if (!online || !offers)
            continue;
        for (uint32_t j = 0; bs && bs->type == MSGPACK_OBJECT_ARRAY && j < bs->via.array.size; j++) {
            char bw[IFM_NAME_MAX] = "", st[16] = "";
            ifm_get_str(&bs->via.array.ptr[j], "worker", false, bw, sizeof bw, NULL);
            ifm_get_str(&bs->via.array.ptr[j], "state", false, st, sizeof st, NULL);
            *total += strcmp(bw, id) == 0 && strcmp(st, "gone") != 0;
        }
    }
    cli_reply_free(&r);
    return CLI_OK;
}

/* ---- JSON and small helpers ---- */

int cli_json_to_msgpack(const char *text, ifm_enc *e, char *err, size_t errlen)
{
    json_error_t je;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        snprintf(err, errlen, "--args is not valid JSON: %s (column %d)", je.text, je.column);
        return -1;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        snprintf(err, errlen, "--args must be a JSON object");
        return -1;
    }
    int rc = ifm_json_to_msgpack(j, e);
    json_decref(j);
    return rc;
}

void cli_print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(15));
    if (s) {
        puts(s);
        free(s);
    }
    fflush(stdout);
}

int cli_req_serials(const cli_opts *o, ifm_ctl_req *req)
{
    req->nserials = (size_t)o->npos;
    req->serials = calloc(req->nserials ? req->nserials : 1, sizeof *req->serials);
    if (!req->serials)
        return -1;
    for (int i = 0; i < o->npos; i++)
        snprintf(req->serials[i], IFM_SERIAL_MAX, "%s", o->pos[i]);
    return 0;
}

const char *cli_fmt_duration(uint64_t ms, char *buf, size_t cap)
{
    uint64_t s = (ms + 500) / 1000;
    if (s < 120)
        snprintf(buf, cap, "%llu s", (unsigned long long)s);
    else if (s < 7200)
        snprintf(buf, cap, "%llu min", (unsigned long long)((s + 30) / 60));
    else if (s < 3 * 86400)
        snprintf(buf, cap, "%llu h %llu min", (unsigned long long)(s / 3600), (unsigned long long)(s % 3600 / 60));
    else
        snprintf(buf, cap, "%llu days", (unsigned long long)(s / 86400));
    return buf;
}

const char *cli_fmt_until(uint64_t until_ms, char *buf, size_t cap)
{
    time_t t = (time_t)(until_ms / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    char when[64], rel[32];
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S %Z", &tm);
    uint64_t now = ifm_wall_ms();
    if (until_ms >= now)
        snprintf(buf, cap, "%s (in %s)", when, cli_fmt_duration(until_ms - now, rel, sizeof rel));
    else
        snprintf(buf, cap, "%s (%s ago)", when, cli_fmt_duration(now - until_ms, rel, sizeof rel));
    return buf;
}

/* ---- the embedded farm's env file ---- */

/* Undoes bash's printf %q for the plain cases ./icefarm writes (backslash
 * escapes, '...'); -1 for forms it does not handle ($'...'). */
static int unquote(const char *in, char *out, size_t cap)
{
    size_t n = 0;
    if (in[0] == '$' && in[1] == '\'')
        return -1;
    for (const char *p = in; *p; p++) {
        if (*p == '\\' && p[1]) {
            p++;
        } else if (*p == '\'') {
            const char *q = strchr(p + 1, '\'');
            if (!q)
                return -1;
            for (p++; p < q && n + 1 < cap; p++)
                out[n++] = *p;
            continue;
        }
        if (n + 1 >= cap)
            return -1;
        out[n++] = *p;
    }
    out[n] = '\0';
    return 0;
}

void cli_use_farm_env(const char *broker_flag)
{
    /* Only when no broker was named at all: a broker given on the command line or
     * in the environment comes with its own credentials (or none), never the
     * embedded farm's demo user's. */
    const char *b = getenv("ICEFARM_BROKER");
    if ((b && *b) || (broker_flag && *broker_flag))
        return;
    char path[512];
    const char *explicit = getenv("ICEFARM_ENV_FILE"), *xdg = getenv("XDG_RUNTIME_DIR"), *tmp = getenv("TMPDIR");
    if (explicit && *explicit)
        snprintf(path, sizeof path, "%s", explicit);
    else if (xdg && *xdg)
        snprintf(path, sizeof path, "%s/icefarm/farm.env", xdg);
    else
        snprintf(path, sizeof path, "%s/icefarm-%u/farm.env", tmp && *tmp ? tmp : "/tmp", (unsigned)getuid());
    FILE *fp = fopen(path, "r");
    if (!fp)
        return;
    struct stat st;
    /* Ours, and private: it may hold a password. */
    if (fstat(fileno(fp), &st) || st.st_uid != getuid() || (st.st_mode & 077) || !S_ISREG(st.st_mode)) {
        fclose(fp);
        return;
    }
    char line[1024];
    long pid = 0;
    static const char *const keys[] = { "ICEFARM_BROKER", "ICEFARM_CAFILE", "ICEFARM_USER", "ICEFARM_PASSWORD" };
    char vals[4][512] = { "", "", "", "" };
    while (fgets(line, sizeof line, fp)) {
        line[strcspn(line, "\n")] = '\0';
        if (sscanf(line, "# icefarm-up-pid=%ld", &pid) == 1)
            continue;
        if (strncmp(line, "export ", 7) != 0)
            continue;
        char *eq = strchr(line + 7, '=');
        if (!eq)
            continue;
        *eq = '\0';
        for (size_t k = 0; k < 4; k++)
            if (strcmp(line + 7, keys[k]) == 0 && unquote(eq + 1, vals[k], sizeof vals[k]))
                vals[k][0] = '\0';
    }
    fclose(fp);
    /* Only a live farm's file counts: a crashed `up` may have left it behind. */
    if (pid <= 0 || (kill((pid_t)pid, 0) && errno != EPERM) || !vals[0][0])
        return;
    for (size_t k = 0; k < 4; k++)
        if (vals[k][0])
            setenv(keys[k], vals[k], 0);
}
