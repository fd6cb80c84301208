/* libicefarm: the blocking conveniences over icefarm_call (reserve, end-all). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* A reserve that fails after the grant holds nothing: its leases end (the
 * answer is not waited for; a lost 'end' leaves them to expire). */
static void end_granted(icefarm *f, char (**serials)[ICEFARM_SERIAL_MAX], size_t *n)
{
    const char **list = calloc(*n, sizeof *list);
    for (size_t i = 0; list && i < *n; i++)
        list[i] = (*serials)[i];
    icefarm_req req = { .verb = "end", .serials = list, .nserials = *n };
    if (!list || icefarm_call_async(f, &req, 0, NULL, NULL, NULL, NULL, 0))
        lib_log(f, ICEFARM_LOG_WARN, "%zu lease(s) not ended; they expire by themselves", *n);
    free(list);
    free(*serials);
    *serials = NULL;
    *n = 0;
}

int icefarm_reserve(icefarm *f, uint32_t amount, const char *kind, const void *args, size_t args_len, uint64_t wait_ms,
                    char (**serials)[ICEFARM_SERIAL_MAX], size_t *n, char *reason, size_t reason_len)
{
    *serials = NULL;
    *n = 0;
    icefarm_req req = {
        .verb = "reserve", .amount = amount, .kind = kind, .args = args, .args_len = args_len, .wait_ms = wait_ms
    };
    icefarm_reply *r;
    int rc = icefarm_call(f, &req, &r, reason, reason_len);
    if (rc)
        return rc;
    if (!r->st.ok) {
        rc = ifm_failbuf(reason, reason_len, icefarm_reply_errno(r), "%s",
                         r->st.error[0] ? r->st.error : "reserve refused");
    } else if (r->nserials) {
        *serials = r->serials; /* the reply's array becomes the caller's */
        *n = r->nserials;
        r->serials = NULL;
        for (size_t i = 0; i < *n && rc == 0; i++) {
            int wrc = icefarm_watch(f, (*serials)[i]);
            if (wrc) /* granted, but its events would never arrive */
                rc = ifm_failbuf(reason, reason_len, wrc, "reserved, but cannot follow board %s: %s", (*serials)[i],
                                 icefarm_strerror(wrc));
        }
        if (rc)
            end_granted(f, serials, n);
    }
    icefarm_reply_free(r);
    return rc;
}

int icefarm_end_all(icefarm *f, size_t *n_ended, char *reason, size_t reason_len)
{
    icefarm_req req = { .verb = "end_all" };
    icefarm_reply *r;
    int rc = icefarm_call(f, &req, &r, reason, reason_len);
    if (rc)
        return rc;
    if (!r->st.ok)
        rc = ifm_failbuf(reason, reason_len, icefarm_reply_errno(r), "%s", r->st.error);
    else if (n_ended)
        *n_ended = r->nserials;
    icefarm_reply_free(r);
    return rc;
}

static int reserve_kind(icefarm *f, const char *kind, uint32_t amount, int send_waveform, uint32_t interval,
                        uint32_t flush_at, uint64_t wait_ms, char (**serials)[IFM_SERIAL_MAX], size_t *n, char *reason,
                        size_t reason_len)
{
    ifm_enc a;
    ifm_enc_init(&a);
    ifm_enc_map(&a, 2 + (send_waveform >= 0));
    ifm_enc_kuint(&a, "flush_interval_seconds", interval ? interval : 10);
    ifm_enc_kuint(&a, "flush_at_bitstreams_remaining", flush_at ? flush_at : 25);
    if (send_waveform >= 0)
        ifm_enc_kbool(&a, "send_waveform", send_waveform);
    int rc =
        icefarm_reserve(f, amount, kind, ifm_enc_data(&a), ifm_enc_size(&a), wait_ms, serials, n, reason, reason_len);
    ifm_enc_free(&a);
    return rc;
}

int icefarm_reserve_pulsecount(icefarm *f, uint32_t amount, uint32_t flush_interval_s, uint32_t flush_at,
                               uint64_t wait_ms, char (**serials)[ICEFARM_SERIAL_MAX], size_t *n, char *reason,
                               size_t reason_len)
{
    return reserve_kind(f, "pulsecount", amount, -1, flush_interval_s, flush_at, wait_ms, serials, n, reason,
                        reason_len);
}

int icefarm_reserve_variance(icefarm *f, uint32_t amount, bool send_waveform, uint32_t flush_interval_s,
                             uint32_t flush_at, uint64_t wait_ms, char (**serials)[ICEFARM_SERIAL_MAX], size_t *n,
                             char *reason, size_t reason_len)
{
    return reserve_kind(f, "variance", amount, send_waveform, flush_interval_s, flush_at, wait_ms, serials, n, reason,
                        reason_len);
}
