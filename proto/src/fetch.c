/* Fetching by reference: libcurl's multi interface driven by the ifm_loop, and
 * file: references (confined to one directory unless told otherwise). See
 * icefarm/fetch.h. */
#include "icefarm/fetch.h"
#include "icefarm/grow.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct job {
    struct job *next;
    uint64_t id;
    ifm_fetch_cb cb;
    void *arg;
    CURL *easy;     /* http(s); NULL for file: */
    uint64_t timer; /* file: the delivery timer */
    uint8_t *buf;
    size_t len, cap;
    bool too_big;
    int status; /* file: the outcome to deliver */
    char reason[200];
    char errbuf[CURL_ERROR_SIZE];
    struct ifm_fetcher *f;
} job;

struct ifm_fetcher {
    ifm_loop *loop;
    CURLM *multi;
    uint64_t timer;
    uint64_t next_id;
    job *jobs;
    char dir[PATH_MAX]; /* resolved; "" = file: refused */
    bool anywhere;      /* file: not confined to dir */
    char agent[64];
    size_t max_bytes;
    unsigned timeout_ms;
};

void ifm_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int n = 0;
    if (!EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) || n != 32) {
        memset(out, '0', 64);
        out[64] = '\0';
        return;
    }
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void unlink_job(ifm_fetcher *f, job *j)
{
    for (job **pp = &f->jobs; *pp; pp = &(*pp)->next) {
        if (*pp == j) {
            *pp = j->next;
            return;
        }
    }
}

static void free_job(ifm_fetcher *f, job *j)
{
    if (j->easy) {
        curl_multi_remove_handle(f->multi, j->easy);
        curl_easy_cleanup(j->easy);
    }
    if (j->timer)
        ifm_timer_cancel(f->loop, j->timer);
    free(j->buf);
    free(j);
}

/* Ends a job: unlinked first, so the callback may start or cancel others. */
static void finish(ifm_fetcher *f, job *j)
{
    unlink_job(f, j);
    if (j->easy) {
        curl_multi_remove_handle(f->multi, j->easy);
        curl_easy_cleanup(j->easy);
        j->easy = NULL;
    }
    char sha[65] = "";
    if (j->status == 0)
        ifm_sha256_hex(j->buf ? j->buf : (const uint8_t *)"", j->len, sha);
    j->cb(j->status, j->status == 0 ? j->buf : NULL, j->status == 0 ? j->len : 0, sha, j->reason, j->arg);
    free_job(f, j);
}

/* ---- libcurl on the loop ---- */

static void check_done(ifm_fetcher *f)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(f->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        job *j = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&j);
        if (!j)
            continue;
        CURLcode rc = m->data.result;
        long code = 0;
        curl_easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &code);
        if (rc == CURLE_OK && code >= 200 && code <= 299) {
            j->status = 0;
        } else if (rc == CURLE_OK) {
            j->status = (code == 404 || code == 410) ? -ENOENT : -EIO;
            snprintf(j->reason, sizeof j->reason, "HTTP %ld", code);
        } else if (rc == CURLE_FILESIZE_EXCEEDED || (rc == CURLE_WRITE_ERROR && j->too_big)) {
            j->status = -EFBIG;
            snprintf(j->reason, sizeof j->reason, "larger than %zu bytes", f->max_bytes);
        } else if (rc == CURLE_OPERATION_TIMEDOUT) {
            j->status = -ETIMEDOUT;
            snprintf(j->reason, sizeof j->reason, "not fetched within %u ms", f->timeout_ms);
        } else if (rc == CURLE_UNSUPPORTED_PROTOCOL) {
            j->status = -EACCES;
            snprintf(j->reason, sizeof j->reason, "redirected to a protocol other than http or https");
        } else {
            j->status = -EIO;
            snprintf(j->reason, sizeof j->reason, "%.80s%s%.100s", curl_easy_strerror(rc), j->errbuf[0] ? ": " : "",
                     j->errbuf);
        }
        finish(f, j);
    }
}

static void on_fd(ifm_loop *loop, int fd, int events, void *arg)
{
    ifm_fetcher *f = arg;
    int flags = ((events & IFM_READ) ? CURL_CSELECT_IN : 0) | ((events & IFM_WRITE) ? CURL_CSELECT_OUT : 0);
    int running;
    curl_multi_socket_action(f->multi, fd, flags, &running);
    check_done(f);
}

static void on_curl_timer(ifm_loop *loop, void *arg)
{
    ifm_fetcher *f = arg;
    f->timer = 0;
    int running;
    curl_multi_socket_action(f->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(f);
}

static int socket_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    ifm_fetcher *f = userp;
    if (what == CURL_POLL_REMOVE) {
        ifm_loop_unwatch(f->loop, s);
        return 0;
    }
    int ev = ((what & CURL_POLL_IN) ? IFM_READ : 0) | ((what & CURL_POLL_OUT) ? IFM_WRITE : 0);
    return ifm_loop_watch(f->loop, s, ev, on_fd, f) ? -1 : 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    ifm_fetcher *f = userp;
    if (f->timer) {
        ifm_timer_cancel(f->loop, f->timer);
        f->timer = 0;
    }
    if (timeout_ms >= 0) {
        f->timer = ifm_timer_add(f->loop, (uint64_t)timeout_ms, on_curl_timer, f);
        if (!f->timer)
            return -1;
    }
    return 0;
}

static size_t write_cb(char *p, size_t size, size_t n, void *userp)
{
    job *j = userp;
    size_t add = size * n;
    if (j->len + add > j->f->max_bytes) {
        j->too_big = true;
        return 0;
    }
    if (j->len + add > j->cap) {
        uint8_t *nb = ifm_grow_bytes(j->buf, &j->cap, j->len + add, 64 * 1024, j->f->max_bytes);
        if (!nb)
            return 0;
        j->buf = nb;
    }
    memcpy(j->buf + j->len, p, add);
    j->len += add;
    return add;
}

/* ---- file: ---- */

static void deliver_file(ifm_loop *loop, void *arg)
{
    job *j = arg;
    j->timer = 0;
    finish(j->f, j);
}

/* Reads a file: reference into j (status and reason set either way). */
static void read_file(ifm_fetcher *f, job *j, const char *ref)
{
    const char *p = ref + 5; /* after "file:" */
    if (strncmp(p, "//localhost/", 12) == 0)
        p += 11;
    else if (strncmp(p, "///", 3) == 0)
        p += 2;
    else if (strncmp(p, "//", 2) == 0) {
        j->status = -EACCES;
        snprintf(j->reason, sizeof j->reason, "file: references name no host");
        return;
    }
    char path[PATH_MAX], real[PATH_MAX];
    if (*p == '/')
        snprintf(path, sizeof path, "%s", p);
    else if ((size_t)snprintf(path, sizeof path, "%s/%s", f->dir, p) >= sizeof path) {
        j->status = -EINVAL;
        snprintf(j->reason, sizeof j->reason, "path too long");
        return;
    }
    if (!realpath(path, real)) {
        j->status = errno == ENOENT ? -ENOENT : -EACCES;
        snprintf(j->reason, sizeof j->reason, "%s", strerror(errno));
        return;
    }
    size_t dl = strlen(f->dir);
    if (!f->anywhere && (strncmp(real, f->dir, dl) != 0 || (real[dl] != '/' && !(dl == 1 && f->dir[0] == '/')))) {
        j->status = -EACCES;
        snprintf(j->reason, sizeof j->reason, "outside the fetch directory");
        return;
    }
    int fd = open(real, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        j->status = fd < 0 && errno == ENOENT ? -ENOENT : -EACCES;
        snprintf(j->reason, sizeof j->reason, "%s", fd < 0 ? strerror(errno) : "not a regular file");
        if (fd >= 0)
            close(fd);
        return;
    }
    if ((uint64_t)st.st_size > f->max_bytes) {
        j->status = -EFBIG;
        snprintf(j->reason, sizeof j->reason, "larger than %zu bytes", f->max_bytes);
        close(fd);
        return;
    }
    j->buf = malloc(st.st_size ? (size_t)st.st_size : 1);
    size_t want = (size_t)st.st_size;
    while (j->buf && j->len < want) {
        ssize_t r = read(fd, j->buf + j->len, want - j->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        j->len += (size_t)r;
    }
    close(fd);
    if (!j->buf || j->len != want) {
        j->status = -EIO;
        snprintf(j->reason, sizeof j->reason, "%s", j->buf ? "short read" : "out of memory");
        return;
    }
    j->status = 0;
}

/* ---- the API ---- */

ifm_fetcher *ifm_fetcher_new(ifm_loop *loop, const ifm_fetch_opts *o)
{
    ifm_fetcher *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->loop = loop;
    f->max_bytes = o && o->max_bytes ? o->max_bytes : 16u * 1024 * 1024;
    f->timeout_ms = o && o->timeout_ms ? o->timeout_ms : 30000;
    f->anywhere = o && o->file_anywhere;
    snprintf(f->agent, sizeof f->agent, "%s", o && o->user_agent ? o->user_agent : "icefarm");
    if (o && o->file_dir && *o->file_dir && !realpath(o->file_dir, f->dir)) {
        free(f);
        return NULL;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(f->multi = curl_multi_init())) {
        free(f);
        return NULL;
    }
    curl_multi_setopt(f->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(f->multi, CURLMOPT_SOCKETDATA, f);
    curl_multi_setopt(f->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(f->multi, CURLMOPT_TIMERDATA, f);
    return f;
}

void ifm_fetcher_free(ifm_fetcher *f)
{
    if (!f)
        return;
    while (f->jobs) {
        job *j = f->jobs;
        f->jobs = j->next;
        free_job(f, j);
    }
    if (f->timer)
        ifm_timer_cancel(f->loop, f->timer);
    curl_multi_cleanup(f->multi);
    curl_global_cleanup();
    free(f);
}

size_t ifm_fetch_pending(const ifm_fetcher *f)
{
    size_t n = 0;
    for (const job *j = f->jobs; j; j = j->next)
        n++;
    return n;
}

int ifm_fetch(ifm_fetcher *f, const char *ref, ifm_fetch_cb cb, void *arg, uint64_t *id, char *why, size_t whylen)
{
    bool http = strncmp(ref, "http://", 7) == 0 || strncmp(ref, "https://", 8) == 0;
    bool file = strncmp(ref, "file:", 5) == 0;
    if (!http && !file) {
        snprintf(why, whylen, "not an http:, https: or file: reference");
        return -EINVAL;
    }
    if (file && !f->dir[0]) {
        snprintf(why, whylen, "file: references are disabled here (no fetch directory)");
        return -EACCES;
    }
    job *j = calloc(1, sizeof *j);
    if (!j) {
        snprintf(why, whylen, "out of memory");
        return -ENOMEM;
    }
    j->f = f;
    j->cb = cb;
    j->arg = arg;
    j->id = ++f->next_id;
    if (file) {
        read_file(f, j, ref);
        j->timer = ifm_timer_add(f->loop, 0, deliver_file, j);
        if (!j->timer) {
            free_job(f, j);
            snprintf(why, whylen, "out of memory");
            return -ENOMEM;
        }
    } else {
        CURL *e = curl_easy_init();
        if (!e) {
            free(j);
            snprintf(why, whylen, "cannot set up libcurl");
            return -ENOMEM;
        }
        j->easy = e;
        curl_easy_setopt(e, CURLOPT_URL, ref);
        curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)j);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(e, CURLOPT_MAXREDIRS, 5L);
        curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)f->max_bytes);
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)f->timeout_ms);
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(f->timeout_ms < 10000 ? f->timeout_ms : 10000));
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, j);
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, j->errbuf);
        curl_easy_setopt(e, CURLOPT_USERAGENT, f->agent);
        if (curl_multi_add_handle(f->multi, e) != CURLM_OK) {
            curl_easy_cleanup(e);
            free(j);
            snprintf(why, whylen, "cannot start the transfer");
            return -EIO;
        }
    }
    j->next = f->jobs;
    f->jobs = j;
    if (id)
        *id = j->id;
    return 0;
}

void ifm_fetch_cancel(ifm_fetcher *f, uint64_t id)
{
    for (job *j = f->jobs; j; j = j->next) {
        if (j->id == id) {
            unlink_job(f, j);
            free_job(f, j);
            return;
        }
    }
}
