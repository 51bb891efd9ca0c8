/*
 * Logging to stderr with a level threshold.  Secrets (passwords, verifiers,
 * conninfo passwords) must never be passed here.
 */
#ifndef RIFFQ_LOG_H
#define RIFFQ_LOG_H

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARNING, LOG_ERROR } LogLevel;

void log_set_level(LogLevel lvl);
int  log_parse_level(const char *name, LogLevel *out); /* 0 ok, -1 unknown */
void log_msg(LogLevel lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARNING, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
