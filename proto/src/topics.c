#include "icefarm/topics.h"

#include <mosquitto.h>
#include <stdio.h>
#include <string.h>

static const char *const reserved[] = { "worker", "ctl", "client", "lease", "farm" };

bool ifm_name_valid(const char *s, size_t max)
{
    if (!s || !*s || *s == '$')
        return false;
    size_t n = strnlen(s, max);
    if (n >= max)
        return false;
    /* MQTT topics are UTF-8 without control characters (libmosquitto refuses others) */
    return strcspn(s, "/+#") == n && mosquitto_validate_utf8(s, (int)n) == MOSQ_ERR_SUCCESS;
}

bool ifm_serial_valid(const char *s)
{
    if (!ifm_name_valid(s, IFM_SERIAL_MAX))
        return false;
    for (size_t i = 0; i < sizeof reserved / sizeof *reserved; i++)
        if (strcmp(s, reserved[i]) == 0)
            return false;
    return true;
}

static int fmt(char *out, size_t cap, const char *a, const char *b, const char *c)
{
    int n = c ? snprintf(out, cap, "icefarm/%s/%s/%s", a, b, c) : snprintf(out, cap, "icefarm/%s/%s", a, b);
    return (n < 0 || (size_t)n >= cap) ? -1 : 0;
}

int ifm_topic_board(char *out, size_t cap, const char *serial, const char *leaf)
{
    return ifm_serial_valid(serial) ? fmt(out, cap, serial, leaf, NULL) : -1;
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
    return ifm_name_valid(verb, IFM_NAME_MAX) ? fmt(out, cap, "ctl", "req", verb) : -1;
}

int ifm_topic_lease(char *out, size_t cap, const char *serial)
{
    return ifm_serial_valid(serial) ? fmt(out, cap, "lease", serial, NULL) : -1;
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
