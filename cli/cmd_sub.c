/* sub: any topics as JSON lines, for people used to `mosquitto_sub -v`: each
 * message is {"topic": T, "retained": bool, "payload": <msgpack as JSON>} on
 * one line ("payload": null for an empty one, a retained topic being cleared;
 * bin as "<N bytes>"; a payload that is not an icefarm msgpack map comes with
 * "undecodable": why and its size). A plain MQTT subscriber on the CLI's own
 * connection settings; it sends nothing and changes nothing. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "icefarm/mqtt.h"

static void on_message(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    json_t *line = json_pack("{s:s, s:b}", "topic", msg->topic, "retained", msg->retain);
    if (!msg->len) {
        json_object_set_new(line, "payload", json_null());
    } else {
        ifm_doc doc;
        ifm_err err = { "" };
        if (ifm_doc_parse(&doc, msg->payload, msg->len, &err) == 0) {
            json_object_set_new(line, "payload", ifm_json_from_msgpack(doc.root));
        } else {
            json_object_set_new(line, "undecodable", json_string(err.msg));
            json_object_set_new(line, "bytes", json_integer((json_int_t)msg->len));
        }
        ifm_doc_free(&doc);
    }
    cli_print_json(line);
    json_decref(line);
}

static void on_signal(ifm_loop *loop, int signo, void *arg)
{
    ifm_loop_stop(loop);
}

static void on_log(enum ifm_log_level level, const char *msg, void *arg)
{
    if (level >= IFM_LOG_WARN && !*(bool *)arg)
        fprintf(stderr, "icefarm-cli: %s\n", msg);
}

int cmd_sub(const cli_opts *o)
{
    const char *broker = o->farm.broker ? o->farm.broker : getenv("ICEFARM_BROKER");
    if (!broker || !*broker)
        broker = "mqtt://127.0.0.1:1883";
    char host[256];
    ifm_mqtt_opts mo = { 0 };
    mo.port = 1883;
    if (ifm_mqtt_parse_url(broker, &mo, host, sizeof host))
        return cli_error(o, CLI_USAGE, "bad broker address \"%s\" (want mqtt://HOST:PORT)", broker);
    for (int i = 0; i < o->npos; i++) {
        const char *t = o->pos[i], *hash = strchr(t, '#');
        if (!*t || (hash && hash[1]) || strlen(t) >= IFM_TOPIC_MAX)
            return cli_error(o, CLI_USAGE, "invalid topic filter \"%s\"", t);
    }
    const char *user = o->farm.user ? o->farm.user : getenv("ICEFARM_USER");
    mo.username = user && *user ? user : NULL;
    mo.password = o->farm.password ? o->farm.password : getenv("ICEFARM_PASSWORD");
    mo.cafile = o->farm.cafile ? o->farm.cafile : getenv("ICEFARM_CAFILE");
    if (mo.cafile && !*mo.cafile)
        mo.cafile = NULL;
    if (mo.cafile && access(mo.cafile, R_OK))
        return cli_error(o, CLI_USAGE, "cannot read the CA file %s: %s", mo.cafile, strerror(errno));
    bool connecting = true;
    mo.log = on_log;
    mo.log_arg = &connecting;
    ifm_loop *loop = ifm_loop_new();
    ifm_mqtt *m = loop ? ifm_mqtt_new(loop, &mo, NULL, NULL) : NULL;
    int rc = CLI_OK;
    if (!m) {
        rc = cli_error(o, CLI_FAILED, "cannot set up an MQTT client for %s", broker);
        goto out;
    }
    for (int i = 0; i < o->npos; i++) {
        if (ifm_mqtt_subscribe(m, o->pos[i], 1, on_message, NULL)) {
            rc = cli_error(o, CLI_FAILED, "cannot subscribe to \"%s\": out of memory", o->pos[i]);
            goto out;
        }
    }
    /* Without it Ctrl-C would kill the process in the middle of a line instead of ending the loop. */
    int sigs[] = { SIGINT, SIGTERM };
    if (ifm_loop_signals(loop, sigs, 2, on_signal, NULL)) {
        rc = cli_error(o, CLI_FAILED, "cannot set up signal handling: %s", strerror(errno));
        goto out;
    }
    ifm_mqtt_start(m);
    uint64_t deadline = ifm_now_ms() + (o->farm.timeout_ms ? o->farm.timeout_ms : 10000);
    cli_wait_begin("the broker at %s", broker);
    bool permanent = false;
    const char *why = NULL;
    while (!ifm_mqtt_connected(m) && !ifm_mqtt_refused(m) && ifm_now_ms() < deadline && !ifm_loop_stopped(loop)) {
        if ((why = ifm_mqtt_conn_error(m, &permanent)) && permanent)
            break;
        ifm_loop_once(loop, 50);
    }
    cli_wait_end();
    connecting = false;
    if (ifm_loop_stopped(loop)) {
        rc = CLI_INTERRUPTED;
    } else if (ifm_mqtt_refused(m)) {
        rc = cli_error(o, CLI_UNREACHABLE, "the broker at %s refused the connection: %s", broker, ifm_mqtt_refused(m));
    } else if (!ifm_mqtt_connected(m)) {
        why = ifm_mqtt_conn_error(m, &permanent);
        rc = cli_error(o, CLI_UNREACHABLE, "cannot connect to the broker at %s: %s", broker,
                       why ? why : "no answer within the timeout");
    } else {
        ifm_loop_run(loop);
    }
out:
    ifm_mqtt_free(m);
    ifm_loop_free(loop);
    return rc;
}
