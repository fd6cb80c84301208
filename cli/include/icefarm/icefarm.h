/* libicefarm: reserve pico2-ice boards in an icefarm farm, stream bitstreams to
 * them, get one result per bitstream. Include this one header; link with
 * `pkg-config --cflags --libs icefarm`.
 *
 * The headers (all installed under <icefarm/>):
 *   icefarm.h  this overview; includes the others
 *   client.h   the handle: connect, the loop, requests to control (blocking and
 *              asynchronous), events, board commands, errors, logging
 *   batch.h    the batch engine: N bitstreams over reserved boards, balanced,
 *              with stall detection and retries
 *   usbip_client.h  the USB/IP client: a board's CDC ACM console over the
 *              network in userspace (icefarm_usbip_*), and imports handed to
 *              the kernel; on the same handle and loop, with the same
 *              conventions (async with a callback, -errno, accessors).
 *              Not "usbip.h": that name is the protocol library's wire codec,
 *              which is internal and never installed.
 *
 * Conventions, all headers alike (client.h spells them out):
 *   - every exported name starts with icefarm_ (types too) or ICEFARM_ (macros);
 *     nothing else is exported from libicefarm.so, and no msgpack-c or
 *     libmosquitto type appears in these headers;
 *   - fallible functions return 0 or a negative errno; icefarm_strerror names
 *     it; an optional `reason` buffer carries the human detail;
 *   - no threads inside; callbacks run from the handle's loop, on the thread
 *     driving it, and may call everything that does not wait;
 *   - objects (handle, reply, batch) are opaque and freed by their *_close or
 *     *_free; borrowed pointers (a reply or event inside its callback) are
 *     valid only during the call.
 *
 * A session:
 *
 *   icefarm *f;
 *   char why[256];
 *   icefarm_opts o = { .name = "me" };            // zero fields: defaults/env
 *   if (icefarm_connect(&o, &f, why, sizeof why)) { puts(why); exit(1); }
 *   char (*serials)[ICEFARM_SERIAL_MAX]; size_t n;
 *   icefarm_reserve_pulsecount(f, 2, 0, 0, 30000, &serials, &n, why, sizeof why);
 *   icefarm_batch *b = icefarm_batch_new(f, serials, n, NULL, on_result, ctx);
 *   icefarm_batch_add(b, bits, ICEFARM_BITSTREAM_SIZE, NULL);  ...
 *   icefarm_batch_run(b, 0);
 *   icefarm_batch_free(b);
 *   icefarm_end_all(f, NULL, why, sizeof why);
 *   icefarm_close(f);
 *
 * A gateway (one loop serving many callers) never waits: it sends requests
 * with icefarm_call_async (a reply callback, a per-request timeout, cancel),
 * and embeds the handle in its own loop with icefarm_fd / icefarm_timeout /
 * icefarm_run_once (client.h, "driving the loop").
 *
 * Versioning: structs you fill in (icefarm_opts, icefarm_req, icefarm_file,
 * icefarm_batch_opts) may grow at the end in a later version, zero keeping the
 * old behaviour, so zero-initialize them; any change to a public struct or
 * signature comes with a new soname major (libicefarm.so.N), so a program
 * built against one version never runs against an incompatible one.
 */
#ifndef ICEFARM_ICEFARM_H
#define ICEFARM_ICEFARM_H

#include "icefarm/batch.h"
#include "icefarm/client.h"
#include "icefarm/usbip_client.h"

#endif
