/* GET /: the farm's dashboard (ctl/http/dashboard/, bundled by the build into
 * a directory of static files), and the files next to it; GET /config.json
 * tells the page where the broker's MQTT-over-WebSockets listener is.
 *
 * The page needs no credentials here: it logs in to the broker itself (the
 * dashboard role, or an operator for reboot and delete), so it reads exactly
 * what the broker's ACL lets that account read. Files are served only from
 * the bundle directory, by one safe name each (no '/', no leading dot) with a
 * known extension, so nothing else on the disk can be reached. Without a
 * bundle, `/` is a small page that says how to build it. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http.h"
#include "icefarm/log.h"

static const char no_bundle_page[] =
    "<!DOCTYPE html>\n"
    "<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    "<title>icefarm</title>\n"
    "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:46em;color:#222}"
    "code,pre{background:#eee;padding:.1em .3em}pre{padding:.6em}</style></head><body>\n"
    "<h1>icefarm</h1>\n"
    "<p>The dashboard is not built. It is an npm project (<code>ctl/http/dashboard/</code>) that the build "
    "bundles when <code>npm</code> is installed:</p>\n"
    "<pre>cmake -S . -B build &amp;&amp; cmake --build build --target icefarm-dashboard</pre>\n"
    "<p>then restart icefarm-http, or give it the bundle with <code>--dashboard DIR</code>. "
    "(<code>./icefarm test</code> and the docker image build do this.)</p>\n"
    "<p>Meanwhile the farm's state is at <a href=\"status\">/status</a> (JSON).</p>\n"
    "</body></html>\n";

static const struct {
    const char *ext, *type;
} types[] = {
    { ".html", "text/html; charset=utf-8" },
    { ".js", "text/javascript; charset=utf-8" },
    { ".css", "text/css; charset=utf-8" },
    { ".txt", "text/plain; charset=utf-8" },
    { ".json", "application/json" },
    { ".map", "application/json" },
    { ".svg", "image/svg+xml" },
    { ".png", "image/png" },
};

static const char *type_of(const char *name)
{
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof *types; i++)
        if (strcmp(dot, types[i].ext) == 0)
            return types[i].type;
    return NULL;
}

/* "/name.ext": letters, digits, '.', '_' and '-', not starting with '.'. */
static bool safe_name(const char *path)
{
    if (path[0] != '/' || !path[1] || path[1] == '.')
        return false;
    size_t n = 0;
    for (const char *p = path + 1; *p; p++, n++) {
        char ch = *p;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '_' || ch == '-'))
            return false;
    }
    return n <= 128 && type_of(path) != NULL;
}

bool page_match(const char *path)
{
    return strcmp(path, "/") == 0 || safe_name(path);
}

static int has_index(const char *dir)
{
    char p[PATH_MAX];
    struct stat st;
    return snprintf(p, sizeof p, "%s/index.html", dir) < (int)sizeof p && stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

void page_init(http_srv *s, const char *dir)
{
    s->dashboard[0] = '\0';
    if (dir && *dir) {
        if (!has_index(dir))
            IFM_WARN("--dashboard %s has no index.html: / says how to build the dashboard", dir);
        else
            snprintf(s->dashboard, sizeof s->dashboard, "%s", dir);
        return;
    }
    /* Next to the program (the build tree: build/ctl/http/dashboard), then where
     * cmake --install puts it (PREFIX/share/icefarm/dashboard). */
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return;
    *slash = '\0';
    const char *rel[] = { "/dashboard", "/../share/icefarm/dashboard" };
    for (size_t i = 0; i < 2; i++) {
        char cand[PATH_MAX], real[PATH_MAX];
        if (snprintf(cand, sizeof cand, "%s%s", exe, rel[i]) < (int)sizeof cand && has_index(cand) &&
            realpath(cand, real)) {
            snprintf(s->dashboard, sizeof s->dashboard, "%s", real);
            return;
        }
    }
}

static enum MHD_Result queue(http_req *r, unsigned status, struct MHD_Response *resp, const char *type)
{
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    /* Everything comes from here; the page talks only to the broker's websocket. */
    MHD_add_response_header(
        resp, "Content-Security-Policy",
        "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; worker-src 'self' blob:; "
        "style-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'");
    enum MHD_Result rc = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    r->status = status;
    r->state = REQ_DONE;
    return rc;
}

static enum MHD_Result serve_config(http_req *r)
{
    const http_srv *s = r->srv;
    json_t *j = json_pack("{s:o, s:b, s:b}", "broker", s->ws_url ? json_string(s->ws_url) : json_null(), "secured",
                          s->auth_mode == AUTH_BROKER, "bundled", s->dashboard[0] != '\0');
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return MHD_NO;
    return queue(r, MHD_HTTP_OK, MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE),
                 "application/json");
}

static enum MHD_Result not_found(http_req *r)
{
    return http_reply_error(r, 404, "unknown path %s", r->path);
}

enum MHD_Result page_serve(http_req *r)
{
    const http_srv *s = r->srv;
    const char *name = strcmp(r->path, "/") == 0 ? "/index.html" : r->path;
    if (strcmp(name, "/config.json") == 0)
        return serve_config(r);
    if (!s->dashboard[0]) {
        if (strcmp(name, "/index.html") != 0)
            return not_found(r);
        return queue(
            r, MHD_HTTP_OK,
            MHD_create_response_from_buffer(sizeof no_bundle_page - 1, (void *)no_bundle_page, MHD_RESPMEM_PERSISTENT),
            "text/html; charset=utf-8");
    }
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s%s", s->dashboard, name) >= (int)sizeof path)
        return not_found(r);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        return not_found(r);
    }
    /* MHD owns fd from here (closed with the response, or now if it fails). */
    struct MHD_Response *resp = MHD_create_response_from_fd((uint64_t)st.st_size, fd);
    if (!resp) {
        close(fd);
        return MHD_NO;
    }
    return queue(r, MHD_HTTP_OK, resp, type_of(name));
}
