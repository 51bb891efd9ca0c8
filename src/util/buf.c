/*
 * Growable byte buffers and allocation wrappers.  Out-of-memory aborts (see
 * buf.h for why).  Integers are appended in network byte order because every
 * caller is building Postgres protocol messages.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "riffq/buf.h"

static void oom(void)
{
    fputs("riffq: out of memory\n", stderr);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) oom();
    return p;
}

void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) oom();
    return p;
}

void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) oom();
    return p;
}

char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (!p) oom();
    return p;
}

char *xstrndup(const char *s, size_t n)
{
    char *p = strndup(s, n);
    if (!p) oom();
    return p;
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *p;
    va_start(ap, fmt);
    if (vasprintf(&p, fmt, ap) < 0) oom();
    va_end(ap);
    return p;
}

void buf_init(Buf *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
}

void buf_free(Buf *b)
{
    free(b->data);
    buf_init(b);
}

void buf_reset(Buf *b)
{
    b->len = 0;
}

void buf_reserve(Buf *b, size_t extra)
{
    if (b->len + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra) cap *= 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

void buf_append(Buf *b, const void *data, size_t n)
{
    if (n == 0) return;
    buf_reserve(b, n);
    memcpy(b->data + b->len, data, n);
    b->len += n;
}

void buf_append_str(Buf *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

void buf_append_cstr(Buf *b, const char *s)
{
    buf_append(b, s, strlen(s) + 1);
}

void buf_append_byte(Buf *b, uint8_t c)
{
    buf_reserve(b, 1);
    b->data[b->len++] = (char)c;
}

void buf_append_u16(Buf *b, uint16_t v)
{
    uint8_t t[2] = { (uint8_t)(v >> 8), (uint8_t)v };
    buf_append(b, t, 2);
}

void buf_append_u32(Buf *b, uint32_t v)
{
    uint8_t t[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
    buf_append(b, t, 4);
}

void buf_append_u64(Buf *b, uint64_t v)
{
    buf_append_u32(b, (uint32_t)(v >> 32));
    buf_append_u32(b, (uint32_t)v);
}

void buf_put_u32_at(Buf *b, size_t off, uint32_t v)
{
    uint8_t *p = (uint8_t *)b->data + off;
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);  p[3] = (uint8_t)v;
}

void buf_printf(Buf *b, const char *fmt, ...)
{
    /* format into the spare capacity first; only a long result needs a
     * second pass after growing */
    va_list ap;
    buf_reserve(b, 64);
    size_t room = b->cap - b->len;
    va_start(ap, fmt);
    int n = vsnprintf(b->data + b->len, room, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= room) {
        buf_reserve(b, (size_t)n + 1);
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

void buf_consume(Buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}
