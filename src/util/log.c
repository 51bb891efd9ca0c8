/* stderr logging with a timestamp and level; see include/riffq/log.h. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/time.h>
#include "riffq/log.h"

static LogLevel threshold = LOG_INFO;
static const char *names[] = { "debug", "info", "warning", "error" };

void log_set_level(LogLevel lvl) { threshold = lvl; }

int log_parse_level(const char *name, LogLevel *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, names[i]) == 0) {
            *out = (LogLevel)i;
            return 0;
        }
    }
    return -1;
}

void log_msg(LogLevel lvl, const char *fmt, ...)
{
    if (lvl < threshold) return;
    struct timeval tv;
    struct tm tm;
    char ts[32];
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", &tm);
    /* one fprintf per line so lines from worker threads don't interleave */
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s.%03d UTC riffq %s: %s\n", ts, (int)(tv.tv_usec / 1000), names[lvl], line);
}
