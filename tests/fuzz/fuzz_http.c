/* libFuzzer target: the metrics responder's HTTP request decoder. Whatever the
 * bytes, the answer is a complete response with one of the documented codes, its
 * status line matches the code, and its length is what it says. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "icefarm/metrics.h"
#include "icefarm/metrics_http.h"

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "fuzz_http: check failed: %s (line %d)\n", #cond, __LINE__);                               \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ifm_metrics *r = ifm_metrics_new();
    CHECK(r);
    ifm_series_add(ifm_metric_at(ifm_metrics_counter(r, "fuzz_total", "Inputs.", NULL)), 1);
    char *resp = NULL;
    size_t len = 0;
    int code = ifm_metrics_http_answer(r, (const char *)data, size, &resp, &len);
    CHECK(code == 200 || code == 400 || code == 404 || code == 405);
    CHECK(resp && strlen(resp) == len);
    char status[16];
    snprintf(status, sizeof status, "HTTP/1.1 %d ", code);
    CHECK(strncmp(resp, status, strlen(status)) == 0);
    CHECK(strstr(resp, "\r\n\r\n"));
    free(resp);
    ifm_metrics_free(r);
    return 0;
}
