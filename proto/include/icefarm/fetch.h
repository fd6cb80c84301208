/* Fetching bitstreams and UF2 images by reference, on the event loop: one
 * fetcher for every program that takes a file by reference (icefarm-dhs's
 * farm_flash and farm_pulse_count, icefarm-cli's evaluate and flash).
 *
 *   http://... https://...   fetched with libcurl's multi interface on the loop (never
 *                            blocks it); redirects are followed (at most 5) only to
 *                            http and https;
 *   file:NAME, file:/PATH, file:///PATH
 *                            read from the configured directory only: the resolved
 *                            path (symlinks and .. included) must lie inside it
 *                            (icefarm-dhs: a DCSS script must not read arbitrary files);
 *                            with file_anywhere, any file the process may read, NAME
 *                            relative to the directory (icefarm-cli: the user's own files).
 * Every fetch has a size cap, checked before reading where the size is known (a
 * Content-Length, a file's size) and while reading otherwise, and a timeout.
 * The completion carries the bytes and their SHA-256.
 *
 * Ownership: the fetcher belongs to its creator; the bytes passed to a callback are
 * borrowed for the call. Each started fetch ends in exactly one callback, from the
 * loop (never from inside ifm_fetch), unless cancelled first (then none).
 * Threads: the loop's thread only.
 */
#ifndef ICEFARM_FETCH_H
#define ICEFARM_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "icefarm/loop.h"

typedef struct ifm_fetcher ifm_fetcher;

typedef struct {
    const char *file_dir;   /* NULL or "": file: references are refused */
    bool file_anywhere;     /* file: not confined to file_dir (relative names still start there) */
    size_t max_bytes;       /* 0: 16 MiB */
    unsigned timeout_ms;    /* whole transfer; 0: 30 s */
    const char *user_agent; /* NULL: "icefarm" */
} ifm_fetch_opts;

/* status 0: data/len are the file, sha256 its lower-case hex digest. Otherwise a
 * negative errno (-ENOENT not found / 404, -EFBIG over the cap, -ETIMEDOUT,
 * -EACCES outside the directory or a refused protocol, -EIO other failures) and a
 * one-line reason. */
typedef void (*ifm_fetch_cb)(int status, const uint8_t *data, size_t len, const char *sha256, const char *reason,
                             void *arg);

/* NULL when libcurl cannot be set up. */
ifm_fetcher *ifm_fetcher_new(ifm_loop *loop, const ifm_fetch_opts *opts);
/* Cancels every fetch (no callbacks) and frees the fetcher. */
void ifm_fetcher_free(ifm_fetcher *f);

/* Starts fetching `ref`. 0 and *id (may be NULL), or a negative errno with `why`
 * (-EINVAL: not a reference we take) and then no callback. */
int ifm_fetch(ifm_fetcher *f, const char *ref, ifm_fetch_cb cb, void *arg, uint64_t *id, char *why, size_t whylen);
/* Cancels a fetch: no callback follows. Unknown ids are ignored. */
void ifm_fetch_cancel(ifm_fetcher *f, uint64_t id);
/* Fetches in progress. */
size_t ifm_fetch_pending(const ifm_fetcher *f);

/* SHA-256 of a buffer as 64 lower-case hex digits plus NUL. */
void ifm_sha256_hex(const void *data, size_t len, char out[65]);

#endif
