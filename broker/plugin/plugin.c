/* icefarm_acl: the Mosquitto (plugin API v5) glue around acl.c.
 *
 *   plugin /usr/lib/icefarm/icefarm_acl.so
 *   plugin_opt_roles /etc/icefarm/roles          required: `user role` lines
 *   plugin_opt_lease_grace_s 30                   optional, see acl.h
 *
 * Events used:
 *   BASIC_AUTH  refuse users without a role, reserved client ids and client ids
 *               in use by another user, then defer to the password file for the
 *               password itself
 *   ACL_CHECK   every subscribe, publish, delivery and Will
 *   MESSAGE     learn leases and board ownership; on icefarm/ctl/req/+ replace
 *               the icefarm-client user property with the authenticated user
 *               (a gateway's named client or operator) and add icefarm-role; on
 *               icefarm/<serial>/cmd set icefarm-client to the sender (a
 *               gateway's: the lease holder it names, or the command is refused)
 *   DISCONNECT  a worker's boards may move once its connection is gone; what the
 *               connection publishes afterwards is its Will
 *   RELOAD      re-read the roles file on SIGHUP (the old roles stay on error)
 *
 * The plugin must not link libmosquitto: the mosquitto_* functions it calls are
 * the broker's own exports.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mqtt_protocol.h>
/* Built with hidden visibility: only the plugin entry points are exported. */
#pragma GCC visibility push(default)
#include <mosquitto_plugin.h>
#pragma GCC visibility pop

#include "acl.h"

typedef struct {
    mosquitto_plugin_id_t *id;
    acl_state *st;
    char *roles_path;
} plugin_ctx;

static void log_cb(int level, const char *msg)
{
    int l = level == ACL_LOG_ERR ? MOSQ_LOG_ERR : level == ACL_LOG_WARNING ? MOSQ_LOG_WARNING : MOSQ_LOG_NOTICE;
    mosquitto_log_printf(l, "%s", msg);
}

static const char *who(struct mosquitto *client)
{
    const char *u = mosquitto_client_username(client);
    return u ? u : "(anonymous)";
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
    plugin_ctx *ctx = userdata;
    struct mosquitto_evt_basic_auth *ed = event_data;
    char why[256];
    const char *id = mosquitto_client_id(ed->client);
    if (acl_check_connect(ctx->st, ed->username, id, why, sizeof why)) {
        const char *addr = mosquitto_client_address(ed->client);
        mosquitto_log_printf(MOSQ_LOG_NOTICE, "icefarm_acl: refused connection from %s (client id %s): %s",
                             addr ? addr : "?", id ? id : "?", why);
        return MOSQ_ERR_AUTH;
    }
    acl_connect(ctx->st, ed->client);
    /* The client id is this user's from the login on, not only from its first
     * subscribe or publish: nobody else can take the session over meanwhile.
     * A refused login ends the connection (DISCONNECT), which frees the id. */
    if (ed->username)
        acl_seen(ctx->st, ed->client, id, ed->username);
    return MOSQ_ERR_PLUGIN_DEFER; /* the password file checks the password */
}

static const char *access_name(int a)
{
    switch (a) {
    case MOSQ_ACL_READ:
        return "read";
    case MOSQ_ACL_WRITE:
        return "publish";
    case MOSQ_ACL_SUBSCRIBE:
        return "subscribe";
    default:
        return "access";
    }
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
    plugin_ctx *ctx = userdata;
    struct mosquitto_evt_acl_check *ed = event_data;
    const char *user = mosquitto_client_username(ed->client);
    const char *id = mosquitto_client_id(ed->client);
    if (ed->access != MOSQ_ACL_READ)
        acl_seen(ctx->st, ed->client, id, user);
    char pname[IFM_NAME_MAX], pconn[IFM_NAME_MAX];
    if (ed->access == MOSQ_ACL_WRITE && ed->topic &&
        acl_presence_topic(ed->topic, pname, sizeof pname, pconn, sizeof pconn) && (!id || strcmp(pconn, id) != 0)) {
        mosquitto_log_printf(MOSQ_LOG_NOTICE, "icefarm_acl: denied %s presence on \"%s\": not its connection",
                             who(ed->client), ed->topic);
        return MOSQ_ERR_ACL_DENIED;
    }
    if (acl_check(ctx->st, ed->client, user, ed->access, ed->topic, ed->payload, ed->payloadlen, ed->retain))
        return MOSQ_ERR_SUCCESS;
    /* Reads are refused per delivered message (e.g. a dashboard on '#'): only
     * worth a debug line. Publishes and subscriptions are worth a notice. */
    mosquitto_log_printf(ed->access == MOSQ_ACL_READ ? MOSQ_LOG_DEBUG : MOSQ_LOG_NOTICE,
                         "icefarm_acl: denied %s %s on \"%s\"%s", who(ed->client), access_name(ed->access),
                         ed->topic ? ed->topic : "", ed->retain ? " (retained)" : "");
    return MOSQ_ERR_ACL_DENIED;
}

/* Copies one property (of the kinds a PUBLISH can carry) onto *out. */
static int copy_prop(mosquitto_property **out, const mosquitto_property *p)
{
    int id = mosquitto_property_identifier(p);
    int rc = MOSQ_ERR_NOT_SUPPORTED;
    switch (id) {
    case MQTT_PROP_PAYLOAD_FORMAT_INDICATOR: {
        uint8_t v;
        if (mosquitto_property_read_byte(p, id, &v, false))
            rc = mosquitto_property_add_byte(out, id, v);
        break;
    }
    case MQTT_PROP_MESSAGE_EXPIRY_INTERVAL: {
        uint32_t v;
        if (mosquitto_property_read_int32(p, id, &v, false))
            rc = mosquitto_property_add_int32(out, id, v);
        break;
    }
    case MQTT_PROP_TOPIC_ALIAS: {
        uint16_t v;
        if (mosquitto_property_read_int16(p, id, &v, false))
            rc = mosquitto_property_add_int16(out, id, v);
        break;
    }
    case MQTT_PROP_SUBSCRIPTION_IDENTIFIER: {
        uint32_t v;
        if (mosquitto_property_read_varint(p, id, &v, false))
            rc = mosquitto_property_add_varint(out, id, v);
        break;
    }
    case MQTT_PROP_CONTENT_TYPE:
    case MQTT_PROP_RESPONSE_TOPIC: {
        char *v = NULL;
        if (mosquitto_property_read_string(p, id, &v, false))
            rc = mosquitto_property_add_string(out, id, v);
        mosquitto_free(v);
        break;
    }
    case MQTT_PROP_CORRELATION_DATA: {
        void *v = NULL;
        uint16_t len = 0;
        if (mosquitto_property_read_binary(p, id, &v, &len, false))
            rc = mosquitto_property_add_binary(out, id, v, len);
        mosquitto_free(v);
        break;
    }
    case MQTT_PROP_USER_PROPERTY: {
        char *k = NULL, *v = NULL;
        if (mosquitto_property_read_string_pair(p, id, &k, &v, false))
            rc = mosquitto_property_add_string_pair(out, id, k, v);
        mosquitto_free(k);
        mosquitto_free(v);
        break;
    }
    default:
        break;
    }
    return rc;
}

/* Rebuilds the property list without any icefarm-client or icefarm-role user
 * property, then adds icefarm-client (and, on requests, icefarm-role):
 *   ACL_REQ_REPLACE  the authenticated username;
 *   ACL_REQ_GATEWAY  a gateway's request: its one valid icefarm-client if it gave
 *                    one, which must be a client or operator (people and
 *                    programs, never control, workers or dashboards), else its
 *                    own name;
 *   ACL_REQ_HOLDER   a gateway's board command: its one icefarm-client, which must
 *                    be the board's lease holder.
 * Returns 0, -1 (out of memory) or -2 (the gateway named someone it may not). */
static int set_identity(acl_state *st, mosquitto_property **props, const char *user, const char *conn_id,
                        acl_req_action act, const char *topic, bool request)
{
    mosquitto_property *out = NULL;
    char kept[IFM_NAME_MAX] = "";
    int named = 0;
    for (const mosquitto_property *p = *props; p; p = mosquitto_property_next(p)) {
        if (mosquitto_property_identifier(p) == MQTT_PROP_USER_PROPERTY) {
            char *k = NULL, *v = NULL;
            if (mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &k, &v, false) && k &&
                (strcmp(k, ACL_PROP_CLIENT) == 0 || strcmp(k, ACL_PROP_ROLE) == 0 || strcmp(k, ACL_PROP_CONN) == 0)) {
                if (strcmp(k, ACL_PROP_CLIENT) == 0) {
                    if (ifm_name_valid(v, IFM_NAME_MAX)) {
                        snprintf(kept, sizeof kept, "%s", v);
                        named++;
                    } else {
                        named = 2; /* an invalid name: ignore the gateway's choice */
                    }
                }
                mosquitto_free(k);
                mosquitto_free(v);
                continue;
            }
            mosquitto_free(k);
            mosquitto_free(v);
        }
        if (copy_prop(&out, p) != MOSQ_ERR_SUCCESS) {
            mosquitto_property_free_all(&out);
            return -1;
        }
    }
    const char *name = user;
    if (act == ACL_REQ_GATEWAY && named == 1) {
        if (!acl_may_act_for(st, kept)) {
            mosquitto_property_free_all(&out);
            return -2;
        }
        name = kept;
    } else if (act == ACL_REQ_HOLDER) {
        if (named != 1 || !acl_command_client_ok(st, topic, kept)) {
            mosquitto_property_free_all(&out);
            return -2;
        }
        name = kept;
    }
    if (mosquitto_property_add_string_pair(&out, MQTT_PROP_USER_PROPERTY, ACL_PROP_CLIENT, name) != MOSQ_ERR_SUCCESS ||
        (request &&
         mosquitto_property_add_string_pair(&out, MQTT_PROP_USER_PROPERTY, ACL_PROP_ROLE,
                                            acl_role_name(acl_role_of(st, name))) != MOSQ_ERR_SUCCESS) ||
        (request && conn_id && ifm_name_valid(conn_id, IFM_NAME_MAX) &&
         mosquitto_property_add_string_pair(&out, MQTT_PROP_USER_PROPERTY, ACL_PROP_CONN, conn_id) !=
             MOSQ_ERR_SUCCESS)) {
        mosquitto_property_free_all(&out);
        return -1;
    }
    mosquitto_property_free_all(props);
    *props = out;
    return 0;
}

static int on_message(int event, void *event_data, void *userdata)
{
    plugin_ctx *ctx = userdata;
    struct mosquitto_evt_message *ed = event_data;
    const char *user = mosquitto_client_username(ed->client);
    char *rt = NULL;
    mosquitto_property_read_string(ed->properties, MQTT_PROP_RESPONSE_TOPIC, &rt, false);
    acl_req_action act = acl_request_action(ctx->st, user, ed->topic, rt);
    bool request = act != ACL_REQ_PASS;
    if (act == ACL_REQ_DENY) {
        mosquitto_log_printf(MOSQ_LOG_NOTICE, "icefarm_acl: denied %s request on \"%s\" with response topic \"%s\"",
                             who(ed->client), ed->topic, rt ? rt : "");
        mosquitto_free(rt);
        return MOSQ_ERR_ACL_DENIED;
    }
    mosquitto_free(rt);
    if (!request)
        act = acl_command_action(ctx->st, user, ed->topic);
    if (act == ACL_REQ_DENY) {
        mosquitto_log_printf(MOSQ_LOG_NOTICE, "icefarm_acl: denied %s command on \"%s\"", who(ed->client), ed->topic);
        return MOSQ_ERR_ACL_DENIED;
    }
    int idrc = act != ACL_REQ_PASS
        ? set_identity(ctx->st, &ed->properties, user, mosquitto_client_id(ed->client), act, ed->topic, request)
        : 0;
    if (idrc == -2) {
        mosquitto_log_printf(MOSQ_LOG_NOTICE,
                             request ? "icefarm_acl: denied %s request on \"%s\": it names a user who is not a client "
                                       "or operator"
                                     : "icefarm_acl: denied %s command on \"%s\": it does not name the board's holder",
                             who(ed->client), ed->topic);
        return MOSQ_ERR_ACL_DENIED;
    }
    if (idrc) {
        mosquitto_log_printf(MOSQ_LOG_WARNING,
                             "icefarm_acl: cannot set the identity on %s's message on \"%s\"; dropped", who(ed->client),
                             ed->topic);
        return MOSQ_ERR_ACL_DENIED;
    }
    acl_observe(ctx->st, user, ed->client, mosquitto_client_id(ed->client), ed->topic, ed->payload, ed->payloadlen,
                ed->retain);
    return MOSQ_ERR_SUCCESS;
}

static int on_disconnect(int event, void *event_data, void *userdata)
{
    plugin_ctx *ctx = userdata;
    struct mosquitto_evt_disconnect *ed = event_data;
    const char *id = mosquitto_client_id(ed->client), *user = mosquitto_client_username(ed->client);
    acl_disconnect(ctx->st, ed->client, id);
    /* The connection's presence ends with it, whether or not it set a Will:
     * control then cancels its waiting reserves (PROTOCOL.md 5.1). */
    char topic[2 * IFM_NAME_MAX + 32];
    if (user && id && acl_has_presence(ctx->st, user) && ifm_name_valid(user, IFM_NAME_MAX) &&
        ifm_name_valid(id, IFM_NAME_MAX)) {
        snprintf(topic, sizeof topic, "icefarm/client/%s/presence/%s", user, id);
        mosquitto_broker_publish_copy(NULL, topic, 0, NULL, 1, true, NULL);
    }
    return MOSQ_ERR_SUCCESS;
}

static int on_reload(int event, void *event_data, void *userdata)
{
    plugin_ctx *ctx = userdata;
    char err[512];
    if (acl_load_roles(ctx->st, ctx->roles_path, err, sizeof err))
        mosquitto_log_printf(MOSQ_LOG_ERR, "icefarm_acl: %s; keeping the previous roles", err);
    else
        mosquitto_log_printf(MOSQ_LOG_NOTICE, "icefarm_acl: reloaded %zu roles from %s", acl_user_count(ctx->st),
                             ctx->roles_path);
    return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
    for (int i = 0; i < supported_version_count; i++)
        if (supported_versions[i] == 5)
            return 5;
    return -1;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (!s || !*s || *s == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end)
        return -1;
    *out = v;
    return 0;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *opts, int opt_count)
{
    const char *roles = NULL;
    acl_opts ao = { .lease_grace_ms = 30000, .log = log_cb };
    for (int i = 0; i < opt_count; i++) {
        uint64_t v;
        if (strcmp(opts[i].key, "roles") == 0) {
            roles = opts[i].value;
        } else if (strcmp(opts[i].key, "lease_grace_s") == 0 && parse_u64(opts[i].value, &v) == 0 &&
                   v < UINT64_MAX / 1000) {
            ao.lease_grace_ms = v * 1000;
        } else if (strcmp(opts[i].key, "drain_ms") == 0 && parse_u64(opts[i].value, &v) == 0 && v > 0 && v <= 600000) {
            ao.drain_ms = v;
        } else if (strcmp(opts[i].key, "max_leases") == 0 && parse_u64(opts[i].value, &v) == 0 && v > 0) {
            ao.max_leases = (size_t)v;
        } else if (strcmp(opts[i].key, "max_boards") == 0 && parse_u64(opts[i].value, &v) == 0 && v > 0) {
            ao.max_boards = (size_t)v;
        } else {
            mosquitto_log_printf(MOSQ_LOG_ERR, "icefarm_acl: bad option plugin_opt_%s %s", opts[i].key,
                                 opts[i].value ? opts[i].value : "");
            return MOSQ_ERR_INVAL;
        }
    }
    if (!roles) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "icefarm_acl: plugin_opt_roles (the roles file) is required");
        return MOSQ_ERR_INVAL;
    }
    plugin_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return MOSQ_ERR_NOMEM;
    ctx->id = identifier;
    ctx->roles_path = strdup(roles);
    ctx->st = acl_new(&ao);
    char err[512];
    if (!ctx->roles_path || !ctx->st) {
        snprintf(err, sizeof err, "out of memory");
        goto fail;
    }
    if (acl_load_roles(ctx->st, ctx->roles_path, err, sizeof err))
        goto fail;
    if (mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, ctx) ||
        mosquitto_callback_register(identifier, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, ctx) ||
        mosquitto_callback_register(identifier, MOSQ_EVT_MESSAGE, on_message, NULL, ctx) ||
        mosquitto_callback_register(identifier, MOSQ_EVT_DISCONNECT, on_disconnect, NULL, ctx) ||
        mosquitto_callback_register(identifier, MOSQ_EVT_RELOAD, on_reload, NULL, ctx)) {
        snprintf(err, sizeof err, "cannot register callbacks");
        goto fail;
    }
    mosquitto_log_printf(MOSQ_LOG_NOTICE, "icefarm_acl: %zu users with roles from %s; lease grace %llu s",
                         acl_user_count(ctx->st), ctx->roles_path, (unsigned long long)(ao.lease_grace_ms / 1000));
    *userdata = ctx;
    return MOSQ_ERR_SUCCESS;
fail:
    mosquitto_log_printf(MOSQ_LOG_ERR, "icefarm_acl: %s", err);
    mosquitto_callback_unregister(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
    mosquitto_callback_unregister(identifier, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
    mosquitto_callback_unregister(identifier, MOSQ_EVT_MESSAGE, on_message, NULL);
    mosquitto_callback_unregister(identifier, MOSQ_EVT_DISCONNECT, on_disconnect, NULL);
    mosquitto_callback_unregister(identifier, MOSQ_EVT_RELOAD, on_reload, NULL);
    acl_free(ctx->st);
    free(ctx->roles_path);
    free(ctx);
    return MOSQ_ERR_INVAL;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *opts, int opt_count)
{
    plugin_ctx *ctx = userdata;
    if (!ctx)
        return MOSQ_ERR_SUCCESS;
    mosquitto_callback_unregister(ctx->id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
    mosquitto_callback_unregister(ctx->id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
    mosquitto_callback_unregister(ctx->id, MOSQ_EVT_MESSAGE, on_message, NULL);
    mosquitto_callback_unregister(ctx->id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL);
    mosquitto_callback_unregister(ctx->id, MOSQ_EVT_RELOAD, on_reload, NULL);
    acl_free(ctx->st);
    free(ctx->roles_path);
    free(ctx);
    return MOSQ_ERR_SUCCESS;
}
