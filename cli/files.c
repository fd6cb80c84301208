/* Reading the files evaluate and flash send, before anything is sent: local
 * paths and file: references from disk, http:// and https:// URLs over the
 * network, all through the one fetcher icefarm-dhs uses too (icefarm/fetch.h:
 * libcurl's multi interface on an ifm_loop, redirects only to http and https,
 * the size cap checked before reading all of it, a timeout, the SHA-256). The
 * loop is this file's own and lives only while the files are read: the farm
 * connection comes after. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "icefarm/fetch.h"

/* At most this many transfers at once: a run of thousands of URLs must not
 * open thousands of connections. */
#define IN_FLIGHT 8

typedef struct {
    cli_file *files;
    size_t n, next, pending;
    int status; /* the first failure */
    size_t failed;
    char why[256];
    ifm_fetcher *fetcher;
} reading;

typedef struct {
    reading *r;
    size_t index;
} slot;

bool cli_is_url(const char *ref)
{
    return strncmp(ref, "http://", 7) == 0 || strncmp(ref, "https://", 8) == 0;
}

static void fail(reading *r, size_t index, int status, const char *why)
{
    if (r->status)
        return;
    r->status = status;
    r->failed = index;
    snprintf(r->why, sizeof r->why, "%s", why);
}

static void start_next(reading *r);

static void on_fetched(int status, const uint8_t *data, size_t len, const char *sha256, const char *reason, void *arg)
{
    slot *s = arg;
    reading *r = s->r;
    cli_file *f = &r->files[s->index];
    r->pending--;
    if (status) {
        fail(r, s->index, status, reason);
    } else if (!(f->data = malloc(len ? len : 1))) {
        fail(r, s->index, -ENOMEM, "out of memory");
    } else {
        memcpy(f->data, data, len);
        f->len = len;
        snprintf(f->sha256, sizeof f->sha256, "%s", sha256);
    }
    free(s);
    start_next(r);
}

static void start_next(reading *r)
{
    while (!r->status && r->next < r->n && r->pending < IN_FLIGHT) {
        size_t i = r->next++;
        cli_file *f = &r->files[i];
        char ref[PATH_MAX + 16], why[200];
        /* A plain path is the fetcher's file: reference to it. */
        if (f->remote || strncmp(f->ref, "file:", 5) == 0)
            snprintf(ref, sizeof ref, "%s", f->ref);
        else
            snprintf(ref, sizeof ref, "%s%s", f->ref[0] == '/' ? "file://" : "file:", f->ref);
        slot *s = malloc(sizeof *s);
        if (!s) {
            fail(r, i, -ENOMEM, "out of memory");
            return;
        }
        *s = (slot){ r, i };
        int rc = ifm_fetch(r->fetcher, ref, on_fetched, s, NULL, why, sizeof why);
        if (rc) {
            free(s);
            fail(r, i, rc, why);
            return;
        }
        r->pending++;
    }
}

int cli_files_read(const cli_opts *o, char *const *refs, size_t n, size_t max_bytes, cli_file *files, size_t *failed,
                   char *why, size_t whylen)
{
    memset(files, 0, n * sizeof *files);
    size_t nremote = 0;
    for (size_t i = 0; i < n; i++) {
        files[i].ref = refs[i];
        files[i].remote = cli_is_url(refs[i]);
        nremote += files[i].remote;
    }
    reading r = { .files = files, .n = n };
    ifm_fetch_opts fo = { .file_dir = ".",
                          .file_anywhere = true,
                          .max_bytes = max_bytes,
                          .timeout_ms = o->farm.timeout_ms ? (unsigned)o->farm.timeout_ms : CLI_FETCH_TIMEOUT_MS,
                          .user_agent = "icefarm-cli" };
    ifm_loop *loop = ifm_loop_new();
    r.fetcher = loop ? ifm_fetcher_new(loop, &fo) : NULL;
    if (!r.fetcher) {
        fail(&r, 0, -ENOMEM, "cannot set up fetching (libcurl)");
    } else {
        if (nremote)
            cli_wait_begin("the download of %zu file(s) (up to %u s each)", nremote, fo.timeout_ms / 1000);
        start_next(&r);
        /* Each transfer is bounded by its timeout; the loop ends with the last. */
        while (!r.status && (r.pending || r.next < r.n))
            ifm_loop_once(loop, 1000);
        cli_wait_end();
    }
    ifm_fetcher_free(r.fetcher); /* cancels what is left after a failure */
    ifm_loop_free(loop);
    if (r.status) {
        *failed = r.failed;
        snprintf(why, whylen, "%s", r.why);
        cli_files_free(files, n);
        return r.status;
    }
    return 0;
}

void cli_files_free(cli_file *files, size_t n)
{
    for (size_t i = 0; files && i < n; i++) {
        free(files[i].data);
        files[i].data = NULL;
    }
}

int cli_file_error(const cli_opts *o, const cli_file *f, int status, const char *why, const char *expect)
{
    const char *ref = f->ref;
    switch (status) {
    case -EFBIG:
        return cli_error(o, CLI_USAGE, "%s is %s; %s", ref, why, expect);
    case -ENOENT:
    case -EINVAL:
    case -EACCES:
        return cli_error(o, CLI_USAGE, "%s %s: %s", f->remote ? "cannot fetch" : "cannot read", ref, why);
    default: /* the network: a timeout, a refused connection, a server error */
        return cli_error(o, CLI_FAILED, "cannot fetch %s: %s", ref, why);
    }
}
