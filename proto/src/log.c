#include "icefarm/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *level_name(enum ifm_log_level l)
{
    switch (l) {
    case IFM_LOG_DEBUG:
        return "DEBUG";
    case IFM_LOG_INFO:
        return "INFO";
    case IFM_LOG_WARN:
        return "WARN";
    default:
        return "ERROR";
    }
}

void ifm_log(enum ifm_log_level level, const char *fmt, ...)
{
    /* ICEFARM_LOG_LEVEL (debug, info, warn, error; default info) is read each
     * time, so there is no logger state to initialise or share. */
    const char *want = getenv("ICEFARM_LOG_LEVEL");
    enum ifm_log_level min = IFM_LOG_INFO;
    if (want && strcmp(want, "debug") == 0)
        min = IFM_LOG_DEBUG;
    else if (want && strcmp(want, "warn") == 0)
        min = IFM_LOG_WARN;
    else if (want && strcmp(want, "error") == 0)
        min = IFM_LOG_ERROR;
    if (level < min)
        return;
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s ", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L, program_invocation_short_name,
                     level_name(level));
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof line)
        vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    /* One write per line so lines from several processes sharing a terminal never interleave. */
    size_t len = strnlen(line, sizeof line - 2);
    for (size_t i = 0; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    line[len++] = '\n';
    fwrite(line, 1, len, stderr);
}
