/* icefarm's one error convention, for new and public code.
 *
 * Codes are for programs, reasons are for people:
 *
 *  - A function that can fail returns an int: 0 (or a non-negative count) on
 *    success, a negative errno-style code on failure. The codes are the IFM_E*
 *    below; each is -errno, so a failure from the kernel passes through as
 *    -errno unchanged. ifm_strerror() names any code (never NULL, never
 *    allocates, safe from any thread).
 *  - The reason (which field, which limit, which file:line) goes into a buffer
 *    the caller owns: an `ifm_err` (fixed size, the decoders' style) or a
 *    `char *err, size_t errlen` pair (the store's and the daemons' style). The
 *    buffer is optional (NULL = the caller does not care), written only on
 *    failure, always NUL-terminated, and says what was wrong with the input in
 *    words a user can act on: "field \"serial\": 80 bytes, at most 63".
 *  - HTTP status codes exist only at the edges (the HTTP shim, a wire reply's
 *    numeric `code`): ifm_err_to_http() and ifm_err_from_http() translate.
 *  - Older internal code returns plain -1 with a reason; a function does one or
 *    the other, and says which in its header. New public functions use codes.
 *
 * Example:
 *
 *     int rc = ifm_thing_parse(buf, len, &thing, &err);
 *     if (rc < 0)
 *         IFM_WARN("serial=%s bad thing (%s): %s", serial, ifm_strerror(rc), err.msg);
 *
 * This header has no link dependency of its own: everything it declares lives
 * in icefarm-base (which libicefarm-proto, the lease store and the broker plugin
 * link); ifm_err_set(), ifm_fail() and ifm_failbuf() format with vsnprintf.
 * Use them rather than a private vsnprintf wrapper.
 */
#ifndef ICEFARM_ERR_H
#define ICEFARM_ERR_H

#include <errno.h>
#include <stddef.h>

#define IFM_OK 0
#define IFM_EINVAL (-EINVAL)             /* a bad argument, option or request field */
#define IFM_EBADMSG (-EBADMSG)           /* malformed input: bytes that do not decode */
#define IFM_EPROTO (-EPROTO)             /* well-formed, but not our protocol (version, type) */
#define IFM_EMSGSIZE (-EMSGSIZE)         /* input or output beyond a limit */
#define IFM_ENAMETOOLONG (-ENAMETOOLONG) /* a name, serial or kind beyond its limit */
#define IFM_EILSEQ (-EILSEQ)             /* a string that is not valid UTF-8 */
#define IFM_ENOMEM (-ENOMEM)             /* an allocation failed */
#define IFM_ENOENT (-ENOENT)             /* no such lease, board, client, file */
#define IFM_EEXIST (-EEXIST)             /* already there */
#define IFM_EBUSY (-EBUSY)               /* held by someone else; not enough free boards */
#define IFM_EPERM (-EPERM)               /* not allowed for this client (not the holder) */
#define IFM_EACCES (-EACCES)             /* authentication failed; a file's mode refused */
#define IFM_EAGAIN (-EAGAIN)             /* try again later */
#define IFM_ETIMEDOUT (-ETIMEDOUT)       /* no answer in time */
#define IFM_ENOTCONN (-ENOTCONN)         /* not connected to the broker */
#define IFM_ECONNREFUSED (-ECONNREFUSED) /* the broker (or a peer) refused us */
#define IFM_ECANCELED (-ECANCELED)       /* the caller or a shutdown cancelled it */
#define IFM_ENOSPC (-ENOSPC)             /* the store (disk or LMDB map) is full */
#define IFM_EIO (-EIO)                   /* an I/O error (USB, disk) */
#define IFM_ENOTSUP (-ENOTSUP)           /* not supported by this build or peer */

/* On an internal function whose failure must not pass unnoticed (a watch, a
 * subscription, a Will, a signal handler: set-up the process silently lacks if it
 * failed): the compiler warns, and with -Werror refuses, a call that drops the
 * result. A cast to void does not silence it (GCC); handle the failure instead.
 * Not used on the public API of libicefarm (icefarm_* keep their own headers). */
#if defined(__GNUC__) || defined(__clang__)
#define IFM_MUST_CHECK __attribute__((warn_unused_result))
#else
#define IFM_MUST_CHECK
#endif

/* The human reason for a failure; see the convention above. */
typedef struct {
    char msg[200];
} ifm_err;

/* A short description of `code` (0, an IFM_E* or any -errno): "malformed
 * message", "timed out". Unknown codes give "unknown error". */
const char *ifm_strerror(int code);

/* The HTTP status an edge answers for `code`: 0 -> 200; IFM_EINVAL,
 * IFM_EBADMSG, IFM_EPROTO, IFM_ENAMETOOLONG, IFM_EILSEQ -> 400; IFM_EACCES ->
 * 401; IFM_EPERM -> 403; IFM_ENOENT -> 404; IFM_EBUSY/IFM_EEXIST -> 409;
 * IFM_EMSGSIZE -> 413; IFM_EAGAIN -> 429; IFM_ENOTSUP -> 501; IFM_ENOTCONN,
 * IFM_ECONNREFUSED, IFM_ECANCELED -> 503; IFM_ETIMEDOUT -> 504; IFM_ENOSPC ->
 * 507; anything else -> 500. */
int ifm_err_to_http(int code);
/* The reverse, for a client reading a wire reply's status: 2xx -> 0, 408 and
 * 504 -> IFM_ETIMEDOUT, 503 -> IFM_ENOTCONN, the other statuses above back to
 * their first code, any other 4xx -> IFM_EINVAL, anything else -> IFM_EIO. */
int ifm_err_from_http(int status);

/* Formats the reason into err (NULL: nothing). Re-entrant: writes only *err. */
void ifm_err_set(ifm_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Sets the reason and returns `code`, so a failure is one statement:
 *     return ifm_fail(err, IFM_EMSGSIZE, "field \"%s\": %zu bytes, at most %zu", k, n, max);
 */
int ifm_fail(ifm_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The same for a `char *buf, size_t len` reason buffer (buf NULL or len 0:
 * nothing is written). Returns `code`, whatever it is (-1 for the older
 * internal convention). */
int ifm_failbuf(char *buf, size_t len, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
