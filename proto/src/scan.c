/* A non-allocating msgpack validator. msgpack-c allocates an array of objects as
 * soon as it reads a container header, so a 5-byte payload claiming 2^32 entries
 * would ask for 64 GB; scanning first turns that into a clean error. */
#include "icefarm/codec.h"

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

int ifm_msgpack_scan(const void *data, size_t len, int max_depth, ifm_err *err)
{
    const uint8_t *p = data;
    size_t pos = 0;
    uint64_t stack[IFM_MAX_DEPTH + 2];
    int depth = 0;
    if (max_depth > IFM_MAX_DEPTH)
        max_depth = IFM_MAX_DEPTH;
    if (len == 0) {
        ifm_err_set(err, "empty payload");
        return -1;
    }
    stack[0] = 1;
    while (depth >= 0) {
        if (stack[depth] == 0) {
            depth--;
            continue;
        }
        stack[depth]--;
        if (pos >= len) {
            ifm_err_set(err, "truncated msgpack: ends inside a value at byte %zu", pos);
            return -1;
        }
        uint8_t b = p[pos++];
        uint64_t skip = 0;  /* payload bytes that follow the header */
        int lenbytes = 0;   /* bytes holding a length or count */
        uint64_t items = 0; /* objects in a container */
        bool container = false, is_map = false;
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            /* fixint, nil, bool: no payload */
        } else if (b >= 0x80 && b <= 0x8f) {
            container = is_map = true;
            items = b & 0x0f;
        } else if (b >= 0x90 && b <= 0x9f) {
            container = true;
            items = b & 0x0f;
        } else if (b >= 0xa0 && b <= 0xbf) {
            skip = b & 0x1f;
        } else {
            switch (b) {
            case 0xc4:
            case 0xd9:
                lenbytes = 1;
                break;
            case 0xc5:
            case 0xda:
                lenbytes = 2;
                break;
            case 0xc6:
            case 0xdb:
                lenbytes = 4;
                break;
            case 0xc7:
                lenbytes = 1;
                skip = 1;
                break; /* ext8: len + type */
            case 0xc8:
                lenbytes = 2;
                skip = 1;
                break;
            case 0xc9:
                lenbytes = 4;
                skip = 1;
                break;
            case 0xca:
                skip = 4;
                break;
            case 0xcb:
                skip = 8;
                break;
            case 0xcc:
            case 0xd0:
                skip = 1;
                break;
            case 0xcd:
            case 0xd1:
                skip = 2;
                break;
            case 0xce:
            case 0xd2:
                skip = 4;
                break;
            case 0xcf:
            case 0xd3:
                skip = 8;
                break;
            case 0xd4:
                skip = 2;
                break;
            case 0xd5:
                skip = 3;
                break;
            case 0xd6:
                skip = 5;
                break;
            case 0xd7:
                skip = 9;
                break;
            case 0xd8:
                skip = 17;
                break;
            case 0xdc:
                container = true;
                lenbytes = 2;
                break;
            case 0xdd:
                container = true;
                lenbytes = 4;
                break;
            case 0xde:
                container = is_map = true;
                lenbytes = 2;
                break;
            case 0xdf:
                container = is_map = true;
                lenbytes = 4;
                break;
            default:
                ifm_err_set(err, "invalid msgpack type byte 0x%02x at byte %zu", b, pos - 1);
                return -1;
            }
        }
        if (lenbytes) {
            if (len - pos < (size_t)lenbytes) {
                ifm_err_set(err, "truncated msgpack: length field cut off at byte %zu", pos);
                return -1;
            }
            uint64_t n = be(p + pos, lenbytes);
            pos += (size_t)lenbytes;
            if (container)
                items = n;
            else
                skip += n;
        }
        if (container) {
            uint64_t objects = is_map ? items * 2 : items;
            if (objects > len - pos) {
                ifm_err_set(err, "msgpack container claims %llu entries but only %zu bytes remain",
                            (unsigned long long)items, len - pos);
                return -1;
            }
            if (objects) {
                if (depth + 1 > max_depth) {
                    ifm_err_set(err, "msgpack nested deeper than %d levels", max_depth);
                    return -1;
                }
                stack[++depth] = objects;
            }
        } else if (skip > len - pos) {
            ifm_err_set(err, "truncated msgpack: value needs %llu bytes, %zu remain", (unsigned long long)skip,
                        len - pos);
            return -1;
        } else {
            pos += (size_t)skip;
        }
    }
    if (pos != len) {
        ifm_err_set(err, "%zu trailing bytes after the msgpack value", len - pos);
        return -1;
    }
    return 0;
}
