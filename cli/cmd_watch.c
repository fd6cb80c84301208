/* watch: every event for this client (and for the boards named) as JSON lines,
 * until Ctrl-C. Dashboards and shell scripts follow the farm with this. */
#include <signal.h>
#include <stdio.h>

#include "cli.h"

static void print_event(icefarm *f, const icefarm_event *ev, void *arg)
{
    json_t *j = json_pack("{s:s, s:s}", "event", icefarm_event_name(ev), "serial", icefarm_event_serial(ev));
    if (icefarm_event_batch_id(ev)[0])
        json_object_set_new(j, "batch_id", json_string(icefarm_event_batch_id(ev)));
    if (icefarm_event_reason(ev)[0])
        json_object_set_new(j, "reason", json_string(icefarm_event_reason(ev)));
    size_t len;
    const void *data = icefarm_event_data(ev, &len);
    ifm_doc doc;
    ifm_err err;
    if (icefarm_event_nresults(ev) && data) {
        const msgpack_object *results = NULL;
        if (!ifm_doc_parse(&doc, data, len, &err))
            results = ifm_map_get(doc.root, "results");
        if (results)
            json_object_set_new(j, "results", ifm_json_from_msgpack(results));
        ifm_doc_free(&doc); /* also after a failed parse */
    }
    cli_print_json(j);
    json_decref(j);
}

static void on_signal(icefarm *f, int signo, void *arg)
{
    *(bool *)arg = true; /* the check below may be what it stops */
    icefarm_stop(f);
}

int cmd_watch(const cli_opts *o)
{
    int rc;
    /* A viewer never changes state: the lease holder's own client extends its
     * leases (libicefarm's default there), not a watch of its events. */
    cli_opts view = *o;
    view.farm.no_auto_extend = true;
    o = &view;
    icefarm *f = cli_connect(o, &rc);
    if (!f)
        return rc;
    for (int i = 0; i < o->npos; i++)
        if (icefarm_watch(f, o->pos[i])) {
            icefarm_close(f);
            return cli_error(o, CLI_USAGE, "invalid serial \"%s\"", o->pos[i]);
        }
    if ((rc = cli_check_boards(f, o, o->pos, (size_t)o->npos, false)) != CLI_OK) {
        icefarm_close(f);
        return rc;
    }
    int sigs[] = { SIGINT, SIGTERM };
    bool stopped = false;
    if ((rc = icefarm_on(f, NULL, print_event, NULL)) || (rc = icefarm_on_signals(f, sigs, 2, on_signal, &stopped))) {
        icefarm_close(f);
        return cli_error(o, CLI_FAILED, "cannot set up event and signal handling: %s", icefarm_strerror(rc));
    }
    /* With no serials nothing above asked control anything: ask once, so a broker
     * that is not an icefarm farm (Debian's mosquitto on 1883) or a farm whose
     * control is down is named, within --timeout, instead of a silent watch. The
     * watch goes on either way: control may come (back) later. */
    if (!o->npos) {
        ifm_ctl_req req = { .verb = IFM_VERB_STATUS };
        cli_reply r = { 0 };
        if (cli_call(f, o, &req, NULL, 0, &r) == CLI_OK)
            cli_reply_free(&r);
        else if (!stopped)
            fprintf(stderr, "icefarm-cli: watching anyway\n");
    }
    if (stopped) { /* Ctrl-C during the check: a watch ends there, as always */
        icefarm_close(f);
        return CLI_OK;
    }
    fprintf(stderr, "watching events for %s (Ctrl-C to stop)\n", icefarm_name(f));
    icefarm_run_until(f, NULL, NULL, 0);
    icefarm_close(f);
    return CLI_OK;
}
