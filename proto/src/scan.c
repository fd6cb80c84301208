/* ifm_msgpack_scan: proto's name for the one reader's validator (icefarm/mp.h),
 * with proto's conventions (depth at most IFM_MAX_DEPTH, -1 and an ifm_err). */
#include "icefarm/codec.h"
#include "icefarm/mp.h"

int ifm_msgpack_scan(const void *data, size_t len, int max_depth, ifm_err *err)
{
    if (max_depth > IFM_MAX_DEPTH)
        max_depth = IFM_MAX_DEPTH;
    return ifm_mp_scan(data, len, max_depth, err ? err->msg : NULL, err ? sizeof err->msg : 0) ? -1 : 0;
}
