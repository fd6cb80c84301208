/* watch: every event for this client (and for the boards named) as JSON lines,
 * until Ctrl-C. Dashboards and shell scripts follow the farm with this. */
#include <signal.h>
#include <stdio.h>

#include "cli.h"

static void print_event(icefarm *f, const ifm_event *ev, void *arg)
{
    json_t *j = json_pack("{s:s, s:s}", "event", ev->event, "serial", ev->serial);
    if (ev->batch_id[0])
        json_object_set_new(j, "batch_id", json_string(ev->batch_id));
    if (ev->reason[0])
        json_object_set_new(j, "reason", json_string(ev->reason));
    if (ev->results)
        json_object_set_new(j, "results", ifm_json_from_msgpack(ev->results));
    cli_print_json(j);
    json_decref(j);
}

static void on_signal(ifm_loop *loop, int signo, void *arg)
{
    ifm_loop_stop(loop);
}

static bool never(void *arg)
{
    return false;
}

int cmd_watch(const cli_opts *o)
{
    int rc;
    icefarm *f = cli_connect(o, &rc);
    if (!f)
        return rc;
    for (int i = 0; i < o->npos; i++)
        if (icefarm_watch(f, o->pos[i])) {
            icefarm_close(f);
            return cli_error(o, CLI_USAGE, "invalid serial \"%s\"", o->pos[i]);
        }
    icefarm_on(f, NULL, print_event, NULL);
    int sigs[] = { SIGINT, SIGTERM };
    ifm_loop_signals(icefarm_loop(f), sigs, 2, on_signal, NULL);
    fprintf(stderr, "watching events for %s (Ctrl-C to stop)\n", icefarm_name(f));
    icefarm_run_until(f, never, NULL, 0);
    icefarm_close(f);
    return CLI_OK;
}
