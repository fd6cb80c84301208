/* The fetcher (icefarm/fetch.h: icefarm-dhs's and icefarm-cli's) against a real local HTTP server
 * (libmicrohttpd, one thread per connection, on an ephemeral loopback port) and
 * real files: success with the SHA-256, 404, too large by Content-Length and by
 * streaming, slow (the timeout), redirects (followed to http, refused to other
 * protocols), file: inside and outside the directory (and anywhere, as the CLI
 * reads its user's files), cancel, and the loop never
 * blocked: a timer keeps ticking while a slow fetch runs. */
#include <errno.h>
#include <microhttpd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "icefarm/fetch.h"
#include "icefarm/loop.h"

#define CAP 4096

static struct MHD_Daemon *mhd;
static int port;
static char dir[300], outside[256];

typedef struct {
    bool done;
    int status;
    size_t len;
    char sha[65];
    char reason[200];
    uint8_t first;
} result;

static void on_done(int status, const uint8_t *data, size_t len, const char *sha, const char *reason, void *arg)
{
    result *r = arg;
    assert_false(r->done); /* exactly one callback */
    r->done = true;
    r->status = status;
    r->len = len;
    snprintf(r->sha, sizeof r->sha, "%s", sha);
    snprintf(r->reason, sizeof r->reason, "%s", reason);
    r->first = len ? data[0] : 0;
}

static ssize_t endless(void *cls, uint64_t pos, char *buf, size_t max)
{
    memset(buf, 'x', max);
    return (ssize_t)max;
}

static ssize_t slow(void *cls, uint64_t pos, char *buf, size_t max)
{
    if (pos >= 10)
        return MHD_CONTENT_READER_END_OF_STREAM;
    usleep(300 * 1000);
    buf[0] = 's';
    return 1;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *upload, size_t *upload_size, void **state)
{
    struct MHD_Response *resp;
    unsigned code = 200;
    char loc[128] = "";
    if (strcmp(url, "/ok") == 0) {
        resp = MHD_create_response_from_buffer(3, (void *)"abc", MHD_RESPMEM_PERSISTENT);
    } else if (strcmp(url, "/big") == 0) { /* a Content-Length over the cap */
        resp = MHD_create_response_from_callback(CAP + 1, 1024, endless, NULL, NULL);
    } else if (strcmp(url, "/stream") == 0) { /* no length, never ends */
        resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 1024, endless, NULL, NULL);
    } else if (strcmp(url, "/slow") == 0) {
        resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16, slow, NULL, NULL);
    } else if (strncmp(url, "/redirect", 9) == 0) {
        code = 302;
        if (strcmp(url, "/redirect") == 0)
            snprintf(loc, sizeof loc, "http://127.0.0.1:%d/ok", port);
        else if (strcmp(url, "/redirect-file") == 0)
            snprintf(loc, sizeof loc, "file:///etc/hostname");
        else
            snprintf(loc, sizeof loc, "ftp://127.0.0.1:%d/ok", port);
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(resp, "Location", loc);
    } else {
        code = 404;
        resp = MHD_create_response_from_buffer(9, (void *)"not found", MHD_RESPMEM_PERSISTENT);
    }
    enum MHD_Result rc = MHD_queue_response(c, code, resp);
    MHD_destroy_response(resp);
    return rc;
}

static int setup(void **state)
{
    mhd = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, handler,
                           NULL, MHD_OPTION_END);
    assert_non_null(mhd);
    port = MHD_get_daemon_info(mhd, MHD_DAEMON_INFO_BIND_PORT)->port;
    snprintf(outside, sizeof outside, "/tmp/icefarm-fetch-XXXXXX");
    assert_non_null(mkdtemp(outside));
    snprintf(dir, sizeof dir, "%s/in", outside);
    assert_int_equal(mkdir(dir, 0700), 0);
    char p[512];
    snprintf(p, sizeof p, "%s/bits.bin", dir);
    FILE *f = fopen(p, "w");
    fputs("abc", f);
    fclose(f);
    snprintf(p, sizeof p, "%s/huge.bin", dir);
    f = fopen(p, "w");
    for (int i = 0; i <= CAP; i++)
        fputc('h', f);
    fclose(f);
    snprintf(p, sizeof p, "%s/secret", outside);
    f = fopen(p, "w");
    fputs("secret", f);
    fclose(f);
    char link[512];
    snprintf(link, sizeof link, "%s/escape", dir);
    assert_int_equal(symlink(p, link), 0);
    return 0;
}

static int teardown(void **state)
{
    MHD_stop_daemon(mhd);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", outside);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static void tick(ifm_loop *loop, void *arg)
{
    int *ticks = arg;
    (*ticks)++;
    ifm_timer_add(loop, 50, tick, arg);
}

/* Fetches ref and runs the loop until the callback (bounded: 20 s). */
static result fetch_with(const char *ref, unsigned timeout_ms, int *ticks_out, bool anywhere)
{
    ifm_loop *loop = ifm_loop_new();
    ifm_fetch_opts o = { .file_dir = dir, .file_anywhere = anywhere, .max_bytes = CAP, .timeout_ms = timeout_ms };
    ifm_fetcher *f = ifm_fetcher_new(loop, &o);
    assert_non_null(f);
    result r = { 0 };
    char why[200];
    int ticks = 0;
    ifm_timer_add(loop, 50, tick, &ticks);
    int rc = ifm_fetch(f, ref, on_done, &r, NULL, why, sizeof why);
    if (rc) {
        r.done = true;
        r.status = rc;
        snprintf(r.reason, sizeof r.reason, "%s", why);
    }
    assert_false(rc == 0 && r.done); /* never from inside ifm_fetch */
    uint64_t end = ifm_now_ms() + 20000;
    while (!r.done && ifm_now_ms() < end)
        ifm_loop_once(loop, 100);
    assert_true(r.done);
    assert_int_equal(ifm_fetch_pending(f), 0);
    ifm_fetcher_free(f);
    ifm_loop_free(loop);
    if (ticks_out)
        *ticks_out = ticks;
    return r;
}

static result fetch(const char *ref, unsigned timeout_ms, int *ticks_out)
{
    return fetch_with(ref, timeout_ms, ticks_out, false);
}

static void url(char *buf, size_t n, const char *path)
{
    snprintf(buf, n, "http://127.0.0.1:%d%s", port, path);
}

static void test_http_ok(void **state)
{
    char u[128];
    url(u, sizeof u, "/ok");
    result r = fetch(u, 5000, NULL);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.len, 3);
    assert_string_equal(r.sha, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"); /* sha256("abc") */
    url(u, sizeof u, "/redirect");
    r = fetch(u, 5000, NULL);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.first, 'a');
}

static void test_http_errors(void **state)
{
    char u[128];
    url(u, sizeof u, "/missing");
    result r = fetch(u, 5000, NULL);
    assert_int_equal(r.status, -ENOENT);
    assert_string_equal(r.reason, "HTTP 404");
    url(u, sizeof u, "/big");
    r = fetch(u, 5000, NULL);
    assert_int_equal(r.status, -EFBIG);
    url(u, sizeof u, "/stream");
    r = fetch(u, 5000, NULL);
    assert_int_equal(r.status, -EFBIG);
    url(u, sizeof u, "/redirect-ftp");
    r = fetch(u, 5000, NULL);
    assert_int_equal(r.status, -EACCES);
    url(u, sizeof u, "/redirect-file");
    r = fetch(u, 5000, NULL);
    assert_int_equal(r.status, -EACCES);
    r = fetch("http://127.0.0.1:1/x", 5000, NULL); /* refused */
    assert_int_equal(r.status, -EIO);
    r = fetch("ftp://127.0.0.1/x", 5000, NULL);
    assert_int_equal(r.status, -EINVAL);
    r = fetch("/etc/passwd", 5000, NULL);
    assert_int_equal(r.status, -EINVAL);
}

static void test_http_slow(void **state)
{
    char u[128];
    url(u, sizeof u, "/slow");
    int ticks = 0;
    result r = fetch(u, 700, &ticks);
    assert_int_equal(r.status, -ETIMEDOUT);
    /* the loop kept running its timers meanwhile (50 ms each, 700 ms) */
    assert_true(ticks >= 5);
}

static void test_file(void **state)
{
    result r = fetch("file:bits.bin", 5000, NULL);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.len, 3);
    assert_string_equal(r.sha, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    char ref[600];
    snprintf(ref, sizeof ref, "file://%s/bits.bin", dir);
    assert_int_equal(fetch(ref, 5000, NULL).status, 0);
    snprintf(ref, sizeof ref, "file:%s/bits.bin", dir);
    assert_int_equal(fetch(ref, 5000, NULL).status, 0);
    assert_int_equal(fetch("file:huge.bin", 5000, NULL).status, -EFBIG);
    assert_int_equal(fetch("file:nothere", 5000, NULL).status, -ENOENT);
    assert_int_equal(fetch("file:../secret", 5000, NULL).status, -EACCES);
    assert_int_equal(fetch("file:escape", 5000, NULL).status, -EACCES); /* a symlink out */
    assert_int_equal(fetch("file:///etc/passwd", 5000, NULL).status, -EACCES);
    assert_int_equal(fetch("file://otherhost/x", 5000, NULL).status, -EACCES);
    assert_int_equal(fetch("file:.", 5000, NULL).status, -EACCES); /* the directory itself */
}

/* file_anywhere: any readable file, relative names from the directory; the
 * size cap and the other checks stay. */
static void test_file_anywhere(void **state)
{
    result r = fetch_with("file:../secret", 5000, NULL, true);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.len, 6);
    assert_int_equal(fetch_with("file:escape", 5000, NULL, true).status, 0);
    char ref[600];
    snprintf(ref, sizeof ref, "file://%s/secret", outside);
    assert_int_equal(fetch_with(ref, 5000, NULL, true).status, 0);
    r = fetch_with("file:bits.bin", 5000, NULL, true);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.sha, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_int_equal(fetch_with("file:huge.bin", 5000, NULL, true).status, -EFBIG);
    assert_int_equal(fetch_with("file:nothere", 5000, NULL, true).status, -ENOENT);
    assert_int_equal(fetch_with("file:.", 5000, NULL, true).status, -EACCES); /* not a regular file */
    assert_int_equal(fetch_with("file://otherhost/x", 5000, NULL, true).status, -EACCES);
}

static void test_file_disabled_and_cancel(void **state)
{
    ifm_loop *loop = ifm_loop_new();
    ifm_fetch_opts o = { .max_bytes = CAP, .timeout_ms = 5000 };
    ifm_fetcher *f = ifm_fetcher_new(loop, &o);
    char why[200];
    result r = { 0 };
    assert_int_equal(ifm_fetch(f, "file:bits.bin", on_done, &r, NULL, why, sizeof why), -EACCES);
    /* cancel: no callback, nothing left behind */
    char u[128];
    url(u, sizeof u, "/slow");
    uint64_t id = 0;
    assert_int_equal(ifm_fetch(f, u, on_done, &r, &id, why, sizeof why), 0);
    for (int i = 0; i < 3; i++)
        ifm_loop_once(loop, 50);
    ifm_fetch_cancel(f, id);
    assert_int_equal(ifm_fetch_pending(f), 0);
    for (int i = 0; i < 3; i++)
        ifm_loop_once(loop, 50);
    assert_false(r.done);
    /* freeing with fetches pending */
    assert_int_equal(ifm_fetch(f, u, on_done, &r, &id, why, sizeof why), 0);
    ifm_fetcher_free(f);
    assert_false(r.done);
    ifm_loop_free(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_ok),       cmocka_unit_test(test_http_errors),
        cmocka_unit_test(test_http_slow),     cmocka_unit_test(test_file),
        cmocka_unit_test(test_file_anywhere), cmocka_unit_test(test_file_disabled_and_cancel),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
