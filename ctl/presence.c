/* Client presence: icefarm/client/<name>/presence/<conn> is retained while the
 * connection <conn> lives and cleared (empty) when it ends, by its Will in the
 * anonymous farm and by the broker plugin in a secured one. A waiting reserve
 * dies with the connection that asked (PROTOCOL.md section 5.1). */
#include <string.h>

#include "ctl.h"
#include "icefarm/log.h"

void ctl_on_presence(ifm_mqtt *m, const ifm_mqtt_msg *msg, void *arg)
{
    ctl *c = arg;
    char name[IFM_NAME_MAX], conn[IFM_NAME_MAX], leaf[16];
    if (ifm_topic_level(msg->topic, 2, name, sizeof name) || ifm_topic_level(msg->topic, 3, leaf, sizeof leaf) ||
        strcmp(leaf, "presence") != 0 || ifm_topic_level(msg->topic, 4, conn, sizeof conn) ||
        !ifm_name_valid(name, sizeof name) || !ifm_name_valid(conn, sizeof conn))
        return;
    if (msg->len != 0)
        return; /* online: nothing to do until it ends */
    size_t n = ctl_waiters_gone(c, name, conn);
    if (n)
        IFM_INFO("client=%s conn=%s gone: %zu waiting reserve(s) cancelled", name, conn, n);
}
