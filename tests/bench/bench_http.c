/* Reserve-and-end round trips through the HTTP shim (the documented /reserve and
 * /end API), C concurrent clients on one libcurl multi handle with keep-alive
 * connections. Prints pairs per second and latency percentiles. Asserts nothing. */
#include <curl/curl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    CURL *h;
    char name[32];
    char body[512];
    char resp[4096];
    size_t resp_len;
    char serial[64];
    bool ending;
    double t0;
} client;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    client *c = arg;
    size_t len = size * n;
    if (c->resp_len + len < sizeof c->resp) {
        memcpy(c->resp + c->resp_len, p, len);
        c->resp_len += len;
        c->resp[c->resp_len] = '\0';
    }
    return len;
}

static void start(client *c, const char *base)
{
    char url[256];
    if (c->ending) {
        snprintf(url, sizeof url, "%s/end", base);
        snprintf(c->body, sizeof c->body, "{\"name\": \"%s\", \"serials\": [\"%s\"]}", c->name, c->serial);
    } else {
        snprintf(url, sizeof url, "%s/reserve", base);
        snprintf(c->body, sizeof c->body, "{\"name\": \"%s\", \"amount\": 1, \"kind\": \"pulsecount\", \"args\": {}}",
                 c->name);
    }
    c->resp_len = 0;
    c->resp[0] = '\0';
    curl_easy_setopt(c->h, CURLOPT_URL, url);
    curl_easy_setopt(c->h, CURLOPT_POSTFIELDS, c->body);
    c->t0 = now_ms();
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p)
{
    if (!n)
        return 0;
    qsort(v, n, sizeof *v, cmp);
    return v[(size_t)(p * (double)(n - 1) + 0.5)];
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: bench_http BASE_URL CLIENTS SECONDS\n");
        return 2;
    }
    const char *base = argv[1];
    int nc = atoi(argv[2]);
    double secs = atof(argv[3]);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *multi = curl_multi_init();
    client *cs = calloc((size_t)nc, sizeof *cs);
    size_t cap = 1u << 20, nres = 0, nend = 0, refused = 0, errors = 0;
    double *res = malloc(cap * sizeof *res), *end = malloc(cap * sizeof *end);
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    for (int i = 0; i < nc; i++) {
        client *c = &cs[i];
        snprintf(c->name, sizeof c->name, "http-bench-%d", i);
        c->h = curl_easy_init();
        curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(c->h, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(c->h, CURLOPT_WRITEDATA, c);
        curl_easy_setopt(c->h, CURLOPT_PRIVATE, c);
        curl_easy_setopt(c->h, CURLOPT_TCP_NODELAY, 1L);
        start(c, base);
        curl_multi_add_handle(multi, c->h);
    }
    double t_start = now_ms(), deadline = t_start + secs * 1000.0;
    int active = nc, running = 0;
    while (active) {
        curl_multi_perform(multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            client *c;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&c);
            long code = 0;
            curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &code);
            double ms = now_ms() - c->t0;
            curl_multi_remove_handle(multi, c->h);
            active--;
            if (m->data.result != CURLE_OK) {
                errors++;
            } else if (c->ending) {
                if (nend < cap)
                    end[nend++] = ms;
                c->ending = false;
            } else if (code == 200) {
                const char *s = strstr(c->resp, "\"serial\"");
                const char *q = s ? strchr(s + 8, '"') : NULL;
                const char *e = q ? strchr(q + 1, '"') : NULL;
                if (q && e && (size_t)(e - q - 1) < sizeof c->serial) {
                    memcpy(c->serial, q + 1, (size_t)(e - q - 1));
                    c->serial[e - q - 1] = '\0';
                    c->ending = true;
                    if (nres < cap)
                        res[nres++] = ms;
                }
            } else {
                refused++;
            }
            if (now_ms() < deadline || c->ending) {
                start(c, base);
                curl_multi_add_handle(multi, c->h);
                active++;
            }
        }
        if (active)
            curl_multi_poll(multi, NULL, 0, 100, NULL);
    }
    double total = (now_ms() - t_start) / 1000.0;
    printf("clients=%d pairs=%zu seconds=%.1f pairs_per_s=%.0f reserve_p50_ms=%.2f reserve_p99_ms=%.2f "
           "end_p50_ms=%.2f end_p99_ms=%.2f refused=%zu errors=%zu\n",
           nc, nend, total, (double)nend / total, pct(res, nres, 0.5), pct(res, nres, 0.99), pct(end, nend, 0.5),
           pct(end, nend, 0.99), refused, errors);
    for (int i = 0; i < nc; i++)
        curl_easy_cleanup(cs[i].h);
    curl_slist_free_all(hdr);
    curl_multi_cleanup(multi);
    curl_global_cleanup();
    free(cs);
    free(res);
    free(end);
    return 0;
}
