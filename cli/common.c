/* What every icefarm-cli command shares: connecting, calling control, errors in
 * human or --json form, and msgpack <-> JSON. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "icefarm/json.h"

int cli_error(const cli_opts *o, int code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (o->json) {
        json_t *j = json_pack("{s:b, s:i, s:s}", "ok", 0, "exit", code, "error", msg);
        cli_print_json(j);
        json_decref(j);
    }
    fprintf(stderr, "icefarm-cli: %s\n", msg);
    return code;
}

icefarm *cli_connect(const cli_opts *o, int *exit_code)
{
    char err[512];
    icefarm *f;
    int rc = icefarm_connect(&o->farm, &f, err, sizeof err);
    if (rc)
        *exit_code = cli_error(o, CLI_UNREACHABLE, "%s", err);
    return rc ? NULL : f;
}

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
                      .duration_s = req->duration_s };
    int rc = icefarm_call(f, &q, &r->reply, err, sizeof err);
    free(serials);
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
    char *s = json_dumps(j, JSON_COMPACT);
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

const char *cli_fmt_until(uint64_t until_ms, char *buf, size_t cap)
{
    time_t t = (time_t)(until_ms / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%d %H:%M:%S", &tm);
    return buf;
}
