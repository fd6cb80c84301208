/* The metrics responder's HTTP decoder and answers, without sockets: a request
 * head in, a complete HTTP/1.1 response out. Strict on purpose: a request line of
 * METHOD SP TARGET SP HTTP/1.x, printable ASCII only, header lines with a colon;
 * anything else is a 400 that says why. */
#include "icefarm/metrics_http.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int respond(int code, const char *reason, const char *extra, const char *ctype, const char *body, size_t bodylen,
                   bool head_only, char **resp, size_t *resplen)
{
    char hdr[512];
    int n = snprintf(hdr, sizeof hdr,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n", code,
                     reason, ctype, bodylen, extra ? extra : "");
    size_t total = (size_t)n + (head_only ? 0 : bodylen);
    char *r = malloc(total + 1);
    if (!r) {
        *resp = NULL;
        *resplen = 0;
        return code;
    }
    memcpy(r, hdr, (size_t)n);
    if (!head_only && bodylen)
        memcpy(r + n, body, bodylen);
    r[total] = '\0';
    *resp = r;
    *resplen = total;
    return code;
}

static int text(int code, const char *reason, const char *msg, const char *extra, char **resp, size_t *resplen)
{
    return respond(code, reason, extra, "text/plain; charset=utf-8", msg, strlen(msg), false, resp, resplen);
}

int ifm_metrics_http_answer(ifm_metrics *reg, const char *head, size_t len, char **resp, size_t *resplen)
{
    /* The request line: METHOD SP TARGET SP HTTP/1.x CRLF (a bare LF is tolerated). */
    const char *end = memchr(head, '\n', len);
    if (!end)
        return text(400, "Bad Request", "bad request: no request line\n", NULL, resp, resplen);
    size_t linelen = (size_t)(end - head);
    if (linelen && head[linelen - 1] == '\r')
        linelen--;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)head[i];
        if ((c < 0x20 && c != '\r' && c != '\n' && c != '\t') || c >= 0x7f)
            return text(400, "Bad Request", "bad request: control or non-ASCII bytes in the head\n", NULL, resp,
                        resplen);
    }
    const char *sp1 = memchr(head, ' ', linelen);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', linelen - (size_t)(sp1 + 1 - head)) : NULL;
    if (!sp1 || !sp2 || sp1 == head || sp2 == sp1 + 1)
        return text(400, "Bad Request", "bad request: expected METHOD TARGET HTTP/1.x\n", NULL, resp, resplen);
    size_t vlen = linelen - (size_t)(sp2 + 1 - head);
    if (vlen != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 || (sp2[8] != '0' && sp2[8] != '1'))
        return text(400, "Bad Request", "bad request: expected HTTP/1.0 or HTTP/1.1\n", NULL, resp, resplen);
    /* Header lines: each needs a colon after a non-empty name. */
    for (const char *p = end + 1; p < head + len;) {
        const char *e = memchr(p, '\n', (size_t)(head + len - p));
        size_t l = e ? (size_t)(e - p) : (size_t)(head + len - p);
        if (l && p[l - 1] == '\r')
            l--;
        if (l == 0)
            break;
        const char *colon = memchr(p, ':', l);
        if (!colon || colon == p)
            return text(400, "Bad Request", "bad request: a header line without a name and a colon\n", NULL, resp,
                        resplen);
        p = e ? e + 1 : head + len;
    }

    size_t mlen = (size_t)(sp1 - head);
    const char *target = sp1 + 1;
    size_t tlen = (size_t)(sp2 - target);
    const char *q = memchr(target, '?', tlen);
    size_t plen = q ? (size_t)(q - target) : tlen;
    bool get = mlen == 3 && memcmp(head, "GET", 3) == 0;
    bool headm = mlen == 4 && memcmp(head, "HEAD", 4) == 0;
    if (!(plen == 8 && memcmp(target, "/metrics", 8) == 0))
        return text(404, "Not Found", "not found: this server has only /metrics\n", NULL, resp, resplen);
    if (!get && !headm)
        return text(405, "Method Not Allowed", "method not allowed: GET or HEAD\n", "Allow: GET, HEAD\r\n", resp,
                    resplen);
    size_t blen = 0;
    char *body = ifm_metrics_render(reg, &blen);
    if (!body)
        return text(500, "Internal Server Error", "out of memory\n", NULL, resp, resplen);
    int code = respond(200, "OK", NULL, IFM_METRICS_CONTENT_TYPE, body, blen, headm, resp, resplen);
    free(body);
    return code;
}
