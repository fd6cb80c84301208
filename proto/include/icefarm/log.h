/* One line per event on stderr: `2026-11-21T06:30:00.123Z icefarm-ctl INFO serial=… client=… msg`.
 * Lines go to stderr unbuffered so systemd/journald and docker logs see them at once.
 * The program name comes from glibc's program_invocation_short_name, so there is no
 * logger state to set up or share. */
#ifndef ICEFARM_LOG_H
#define ICEFARM_LOG_H

enum ifm_log_level {
    IFM_LOG_DEBUG,
    IFM_LOG_INFO,
    IFM_LOG_WARN,
    IFM_LOG_ERROR
};

void ifm_log(enum ifm_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define IFM_DEBUG(...) ifm_log(IFM_LOG_DEBUG, __VA_ARGS__)
#define IFM_INFO(...) ifm_log(IFM_LOG_INFO, __VA_ARGS__)
#define IFM_WARN(...) ifm_log(IFM_LOG_WARN, __VA_ARGS__)
#define IFM_ERROR(...) ifm_log(IFM_LOG_ERROR, __VA_ARGS__)

#endif
