/* Error codes: names and the HTTP edge; see icefarm/err.h. */
#include "icefarm/err.h"

#include <string.h>

const char *ifm_strerror(int code)
{
    switch (code) {
    case IFM_OK:
        return "success";
    case IFM_EINVAL:
        return "invalid argument";
    case IFM_EBADMSG:
        return "malformed message";
    case IFM_EPROTO:
        return "protocol error";
    case IFM_EMSGSIZE:
        return "too large";
    case IFM_ENAMETOOLONG:
        return "name too long";
    case IFM_EILSEQ:
        return "invalid UTF-8";
    case IFM_ENOMEM:
        return "out of memory";
    case IFM_ENOENT:
        return "not found";
    case IFM_EEXIST:
        return "already exists";
    case IFM_EBUSY:
        return "busy or held by another client";
    case IFM_EPERM:
        return "not allowed";
    case IFM_EACCES:
        return "access denied";
    case IFM_EAGAIN:
        return "try again";
    case IFM_ETIMEDOUT:
        return "timed out";
    case IFM_ENOTCONN:
        return "not connected to the broker";
    case IFM_ECONNREFUSED:
        return "connection refused";
    case IFM_ECANCELED:
        return "cancelled";
    case IFM_ENOSPC:
        return "store full";
    case IFM_EIO:
        return "input/output error";
    case IFM_ENOTSUP:
        return "not supported";
    default:
        break;
    }
    /* Any other -errno passed through from the system. */
    const char *s = code < 0 ? strerrordesc_np(-code) : NULL;
    return s ? s : "unknown error";
}

int ifm_err_to_http(int code)
{
    switch (code) {
    case IFM_OK:
        return 200;
    case IFM_EINVAL:
    case IFM_EBADMSG:
    case IFM_EPROTO:
    case IFM_ENAMETOOLONG:
    case IFM_EILSEQ:
        return 400;
    case IFM_EACCES:
        return 401;
    case IFM_EPERM:
        return 403;
    case IFM_ENOENT:
        return 404;
    case IFM_EBUSY:
    case IFM_EEXIST:
        return 409;
    case IFM_EMSGSIZE:
        return 413;
    case IFM_EAGAIN:
        return 429;
    case IFM_ENOTCONN:
    case IFM_ECONNREFUSED:
    case IFM_ECANCELED:
        return 503;
    case IFM_ETIMEDOUT:
        return 504;
    case IFM_ENOSPC:
        return 507;
    case IFM_ENOTSUP:
        return 501;
    default:
        return 500;
    }
}

int ifm_err_from_http(int status)
{
    if (status >= 200 && status < 300)
        return IFM_OK;
    switch (status) {
    case 400:
        return IFM_EINVAL;
    case 401:
        return IFM_EACCES;
    case 403:
        return IFM_EPERM;
    case 404:
        return IFM_ENOENT;
    case 408:
    case 504:
        return IFM_ETIMEDOUT;
    case 409:
        return IFM_EBUSY;
    case 413:
        return IFM_EMSGSIZE;
    case 429:
        return IFM_EAGAIN;
    case 501:
        return IFM_ENOTSUP;
    case 503:
        return IFM_ENOTCONN;
    case 507:
        return IFM_ENOSPC;
    default:
        return status >= 400 && status < 500 ? IFM_EINVAL : IFM_EIO;
    }
}
