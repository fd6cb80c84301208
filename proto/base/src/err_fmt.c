/* The reason half of the error convention (icefarm/err.h): formatting a reason
 * into the caller's buffer. In icefarm-base, so the lease store and the broker
 * plugin use the same helpers as everyone else instead of their own copies. */
#include "icefarm/err.h"

#include <stdarg.h>
#include <stdio.h>

void ifm_err_set(ifm_err *err, const char *fmt, ...)
{
    if (!err)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
}

int ifm_fail(ifm_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

int ifm_failbuf(char *buf, size_t len, int code, const char *fmt, ...)
{
    if (buf && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, len, fmt, ap);
        va_end(ap);
    }
    return code;
}
