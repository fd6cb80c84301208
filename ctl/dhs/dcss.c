/* The DCSS link: connect (and come back with back-off and jitter), answer the
 * protocol-1 handshake at once, read the registration burst and everything after
 * it in the configured protocol, dispatch, and send one write per message. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhs.h"
#include "icefarm/log.h"

/* DCSS sends stoc_send_client_type as soon as it accepts; one that does not
 * within this long is not a DCSS we can talk to. */
#define HANDSHAKE_WAIT_MS 10000

size_t dhs_out_limit(const dhs *d)
{
    return d->cfg.protocol == XOS_PROTO_1 ? XOS1_TEXT_MAX : XOS_OUT_MAX;
}

int dhs_send(dhs *d, xos_out *o)
{
    xos_err err;
    if (xos_out_end(o, &err)) {
        IFM_ERROR("client=dcss not sent (refused by the formatter): %s: %.80s", err.msg, o->text);
        return -1;
    }
    if (d->link != LINK_UP || !d->stream)
        return -1;
    uint8_t frame[XOS_FRAME_MAX];
    int n = xos_frame(d->cfg.protocol, o->text, frame, sizeof frame, &err);
    if (n < 0) {
        IFM_ERROR("client=dcss not sent: %s: %.80s", err.msg, o->text);
        return -1;
    }
    IFM_DEBUG("client=dcss -> %s", o->text);
    int rc = ifm_tcp_write(d->stream, frame, (size_t)n);
    return rc < 0 ? -1 : 0;
}

void dhs_log_dcss(dhs *d, const char *level, const char *fmt, ...)
{
    char raw[512], safe[DHS_DETAIL_MAX * 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    IFM_INFO("%s", raw);
    if (d->link != LINK_UP)
        return;
    xos_safe_text(safe, sizeof safe, raw);
    xos_out o;
    xos_out_begin(&o, "htos_log", dhs_out_limit(d));
    xos_out_word(&o, level);
    xos_out_word(&o, d->cfg.name);
    xos_out_group(&o, safe);
    dhs_send(d, &o);
}

const dhs_reg *dhs_reg_find(const dhs *d, const char *dcss_name)
{
    for (int i = 0; i < d->nregs; i++)
        if (strcmp(d->regs[i].dcss_name, dcss_name) == 0)
            return &d->regs[i];
    return NULL;
}

static void send_string(dhs *d, const char *name, const char *status, const char *contents)
{
    xos_out o;
    xos_out_begin(&o, "htos_set_string_completed", dhs_out_limit(d));
    xos_out_word(&o, name);
    xos_out_word(&o, status);
    xos_out_list(&o, contents);
    dhs_send(d, &o);
}

void dhs_push_status(dhs *d, bool force)
{
    for (int i = 0; i < d->nregs; i++)
        if (d->regs[i].string && strcmp(d->regs[i].hw_name, DHS_STATUS_STRING) == 0)
            send_string(d, d->regs[i].dcss_name, "normal", d->status_text);
}

static void add_reg(dhs *d, const char *name, const char *hw, bool string)
{
    for (int i = 0; i < d->nregs; i++) {
        if (strcmp(d->regs[i].dcss_name, name) == 0) {
            snprintf(d->regs[i].hw_name, sizeof d->regs[i].hw_name, "%s", hw);
            d->regs[i].string = string;
            return;
        }
    }
    if (d->nregs == DHS_MAX_REGS) {
        IFM_WARN("client=dcss more than %d devices registered; %s ignored", DHS_MAX_REGS, name);
        return;
    }
    dhs_reg *r = &d->regs[d->nregs++];
    snprintf(r->dcss_name, sizeof r->dcss_name, "%s", name);
    snprintf(r->hw_name, sizeof r->hw_name, "%s", hw);
    r->string = string;
}

/* ---- dispatch ---- */

static void on_message(dhs *d, char *text)
{
    xos_msg m;
    xos_err err = { "" };
    IFM_DEBUG("client=dcss <- %.200s", text);
    if (xos_parse(text, &m, &err)) {
        IFM_WARN("client=dcss message skipped: %s", err.msg);
        return;
    }
    switch (m.type) {
    case XOS_STOH_REGISTER_OPERATION:
        add_reg(d, m.argv[0], m.argv[1], false);
        IFM_INFO("client=dcss operation %s registered (hwName %s)", m.argv[0], m.argv[1]);
        break;
    case XOS_STOH_REGISTER_STRING:
        add_reg(d, m.argv[0], m.argv[1], true);
        if (strcmp(m.argv[1], DHS_STATUS_STRING) == 0)
            send_string(d, m.argv[0], "normal", d->status_text);
        else
            IFM_WARN("client=dcss string %s has hwName %s, which this DHS does not serve", m.argv[0], m.argv[1]);
        break;
    case XOS_STOH_REGISTER_REAL_MOTOR:
    case XOS_STOH_REGISTER_PSEUDO_MOTOR:
    case XOS_STOH_REGISTER_ION_CHAMBER:
    case XOS_STOH_REGISTER_SHUTTER:
    case XOS_STOH_REGISTER_ENCODER:
    case XOS_STOH_REGISTER_OBJECT:
        IFM_WARN("client=dcss %s %s: not a farm device; ignored (check database.dat)", m.name, m.argv[0]);
        break;
    case XOS_STOH_START_OPERATION:
        dhs_ops_start(d, m.argv[0], m.argv[1], m.argc - 2, m.argv + 2);
        break;
    case XOS_STOH_STOP_OPERATION:
        dhs_ops_abort(d, m.argv[0]);
        break;
    case XOS_STOH_ABORT_ALL:
        dhs_ops_abort(d, NULL);
        break;
    case XOS_STOH_SET_STRING: {
        const dhs_reg *r = dhs_reg_find(d, m.argv[0]);
        if (r && r->string && strcmp(r->hw_name, DHS_STATUS_STRING) == 0)
            send_string(d, m.argv[0], "read_only", d->status_text);
        else
            send_string(d, m.argv[0], "unknown_string", "");
        break;
    }
    case XOS_STOH_READ_ION_CHAMBERS: {
        /* the error form, so a caller is not left waiting */
        xos_out o;
        xos_out_begin(&o, "htos_report_ion_chambers", dhs_out_limit(d));
        xos_out_word(&o, "0");
        for (int i = 0; i < m.argc; i++)
            xos_out_word(&o, m.argv[i]);
        xos_out_group(&o, "the farm DHS has no ion chambers");
        dhs_send(d, &o);
        break;
    }
    case XOS_STOH_CONFIGURE_STRING:
    case XOS_STOH_CONFIGURE_OPERATION:
    case XOS_STOC_SEND_CLIENT_TYPE:
        break;
    default:
        IFM_WARN("client=dcss %s: not handled by the farm DHS; ignored", m.name);
        break;
    }
}

/* ---- the stream ---- */

static void link_down(dhs *d, const char *why)
{
    if (d->link == LINK_DOWN)
        return;
    bool was_up = d->link == LINK_UP;
    d->link = LINK_DOWN;
    d->stream = NULL;
    ifm_timer_cancel(d->loop, d->handshake_timer);
    d->handshake_timer = 0;
    d->nregs = 0;
    IFM_WARN("client=dcss connection to %s:%s lost: %s; reconnecting in %llu ms", d->cfg.dcss_host, d->cfg.dcss_port,
             why, (unsigned long long)ifm_tcp_redial_delay(d->redial));
    if (was_up)
        dhs_ops_forget(d);
    dhs_farm_kick(d);
}

static void close_link(dhs *d, const char *why)
{
    ifm_tcp *s = d->stream;
    d->stream = NULL;
    /* Closed first: the redialer schedules its next attempt in ifm_tcp_close, so
     * link_down logs the delay that will really pass, not the previous one. */
    if (s)
        ifm_tcp_close(s);
    link_down(d, why);
}

static void on_handshake_timeout(ifm_loop *loop, void *arg)
{
    dhs *d = arg;
    d->handshake_timer = 0;
    close_link(d, "no stoc_send_client_type from DCSS");
}

static void handshake(dhs *d, const char *text)
{
    if (strncmp(text, "stoc_send_client_type", 21) != 0) {
        IFM_WARN("client=dcss expected stoc_send_client_type, got \"%.60s\"; ignored", text);
        return;
    }
    uint8_t block[XOS1_BLOCK];
    xos_err err;
    if (xos_handshake_reply(d->cfg.name, block, &err) < 0 || ifm_tcp_write(d->stream, block, sizeof block) < 0) {
        close_link(d, "cannot answer the handshake");
        return;
    }
    ifm_timer_cancel(d->loop, d->handshake_timer);
    d->handshake_timer = 0;
    xos_reader_set_proto(d->reader, d->cfg.protocol);
    d->link = LINK_UP;
    d->link_gen++;
    dhs_metrics_dcss_session(d);
    IFM_INFO("client=dcss connected to DCSS at %s as %s (protocol %d)", ifm_tcp_peer(d->stream), d->cfg.name,
             (int)d->cfg.protocol);
    dhs_log_dcss(d, "note", "icefarm-dhs %s online, farm %s", d->cfg.name, dhs_farm_online(d) ? "online" : "offline");
}

static void on_data(ifm_tcp *s, const uint8_t *data, size_t len, void *arg)
{
    dhs *d = arg;
    size_t off = 0;
    while (off < len && d->stream == s) {
        xos_status st;
        xos_event ev;
        off += xos_read(d->reader, data + off, len - off, &st, &ev);
        if (st == XOS_MESSAGE) {
            if (d->link == LINK_HANDSHAKE)
                handshake(d, ev.text);
            else
                on_message(d, ev.text);
        } else if (st == XOS_SKIPPED) {
            IFM_WARN("client=dcss message skipped: %s", ev.reason);
        } else if (st == XOS_LOST) {
            IFM_ERROR("client=dcss framing lost: %s", ev.reason);
            close_link(d, "framing lost");
            break;
        }
    }
    dhs_farm_kick(d);
}

static void on_connect(ifm_tcp *s, int status, void *arg)
{
    dhs *d = arg;
    if (status) {
        IFM_WARN("client=dcss cannot connect to %s:%s: %s; retrying in %llu ms", d->cfg.dcss_host, d->cfg.dcss_port,
                 strerror(-status), (unsigned long long)ifm_tcp_redial_delay(d->redial));
        return;
    }
    d->stream = s;
    d->link = LINK_HANDSHAKE;
    d->nregs = 0;
    xos_reader_init(d->reader, XOS_PROTO_1); /* the handshake is always protocol 1 */
    d->handshake_timer = ifm_timer_add(d->loop, HANDSHAKE_WAIT_MS, on_handshake_timeout, d);
}

static void on_close(ifm_tcp *s, int status, void *arg)
{
    dhs *d = arg;
    if (d->stream != s)
        return;
    link_down(d, status ? strerror(-status) : "closed by DCSS");
}

int dhs_dcss_start(dhs *d, char *why, size_t whylen)
{
    d->reader = malloc(sizeof *d->reader);
    if (!d->reader) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    static const ifm_tcp_cbs cbs = { .on_connect = on_connect, .on_data = on_data, .on_close = on_close };
    ifm_tcp_opts to = { .keepalive_s = 30, .connect_timeout_ms = 5000, .linger_ms = 1000 };
    ifm_backoff_opts bo = { .base_ms = 1000, .max_ms = 10000 };
    int rc =
        ifm_tcp_redial_start(d->loop, d->cfg.dcss_host, d->cfg.dcss_port, &to, &bo, &cbs, d, &d->redial, why, whylen);
    return rc ? -1 : 0;
}

void dhs_dcss_stop(dhs *d)
{
    if (d->redial) {
        ifm_tcp_redial_stop(d->redial);
        d->redial = NULL;
    }
    d->stream = NULL;
    if (d->link == LINK_UP)
        dhs_ops_forget(d);
    d->link = LINK_DOWN;
    ifm_timer_cancel(d->loop, d->handshake_timer);
    free(d->reader);
    d->reader = NULL;
}
