/* RqError helpers: see include/riffq/error.h. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "riffq/error.h"
#include "riffq/buf.h"

static char *vformat(const char *fmt, va_list ap)
{
    char *p;
    if (vasprintf(&p, fmt, ap) < 0) {
        fputs("riffq: out of memory\n", stderr);
        abort();
    }
    return p;
}

void rq_error_set(RqError *err, const char *sqlstate, const char *fmt, ...)
{
    va_list ap;
    rq_error_free(err);
    snprintf(err->sqlstate, sizeof err->sqlstate, "%s", sqlstate);
    va_start(ap, fmt);
    err->message = vformat(fmt, ap);
    va_end(ap);
}

void rq_error_detail(RqError *err, const char *fmt, ...)
{
    va_list ap;
    free(err->detail);
    va_start(ap, fmt);
    err->detail = vformat(fmt, ap);
    va_end(ap);
}

void rq_error_hint(RqError *err, const char *fmt, ...)
{
    va_list ap;
    free(err->hint);
    va_start(ap, fmt);
    err->hint = vformat(fmt, ap);
    va_end(ap);
}

void rq_error_fatal(RqError *err)
{
    free(err->severity);
    err->severity = xstrdup("FATAL");
}

int rq_error_is_set(const RqError *err)
{
    return err->message != NULL;
}

void rq_error_free(RqError *err)
{
    free(err->severity);
    free(err->message);
    free(err->detail);
    free(err->hint);
    memset(err, 0, sizeof *err);
}

void rq_error_move(RqError *dst, RqError *src)
{
    rq_error_free(dst);
    *dst = *src;
    memset(src, 0, sizeof *src);
}
