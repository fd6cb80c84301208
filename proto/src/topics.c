#include "icefarm/topics.h"

#include <stdio.h>
#include <string.h>

static int fmt(char *out, size_t cap, const char *a, const char *b, const char *c)
{
    int n = c ? snprintf(out, cap, "icefarm/%s/%s/%s", a, b, c) : snprintf(out, cap, "icefarm/%s/%s", a, b);
    return (n < 0 || (size_t)n >= cap) ? -1 : 0;
}

int ifm_topic_board(char *out, size_t cap, const char *serial, const char *leaf)
{
    return ifm_serial_valid(serial) ? fmt(out, cap, serial, leaf, NULL) : -1;
}

int ifm_topic_usbip(char *out, size_t cap, const char *serial, const char *session, const char *dir)
{
    if (!ifm_serial_valid(serial) || !ifm_usbip_session_valid(session) || !dir ||
        (strcmp(dir, "c2s") != 0 && strcmp(dir, "s2c") != 0))
        return -1;
    int n = snprintf(out, cap, "icefarm/%s/usbip/%s/%s", serial, session, dir);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

int ifm_topic_worker(char *out, size_t cap, const char *worker, const char *leaf)
{
    return ifm_name_valid(worker, IFM_NAME_MAX) ? fmt(out, cap, "worker", worker, leaf) : -1;
}

int ifm_topic_client(char *out, size_t cap, const char *name, const char *leaf)
{
    return ifm_name_valid(name, IFM_NAME_MAX) ? fmt(out, cap, "client", name, leaf) : -1;
}

int ifm_topic_ctl_req(char *out, size_t cap, const char *verb)
{
    return ifm_verb_valid(verb) ? fmt(out, cap, "ctl", "req", verb) : -1;
}

int ifm_topic_lease(char *out, size_t cap, const char *serial)
{
    return ifm_serial_valid(serial) ? fmt(out, cap, "lease", serial, NULL) : -1;
}

int ifm_topic_farm_worker(char *out, size_t cap, const char *worker)
{
    return ifm_name_valid(worker, IFM_NAME_MAX) ? fmt(out, cap, "farm", "worker", worker) : -1;
}

int ifm_topic_presence(char *out, size_t cap, const char *name, const char *conn)
{
    if (!ifm_name_valid(name, IFM_NAME_MAX) || !ifm_name_valid(conn, IFM_NAME_MAX))
        return -1;
    int n = snprintf(out, cap, "icefarm/client/%s/presence/%s", name, conn);
    return (n < 0 || (size_t)n >= cap) ? -1 : 0;
}

int ifm_topic_level(const char *topic, int index, char *out, size_t cap)
{
    const char *p = topic;
    for (int i = 0; i < index; i++) {
        p = strchr(p, '/');
        if (!p)
            return -1;
        p++;
    }
    size_t n = strcspn(p, "/");
    if (n >= cap)
        return -1;
    memcpy(out, p, n);
    out[n] = '\0';
    return 0;
}
