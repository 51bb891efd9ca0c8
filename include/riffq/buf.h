/*
 * Buf: a growable byte buffer.  Used for outgoing protocol messages and for
 * the incomplete tail of incoming ones.  Allocation failure aborts: a gateway
 * that cannot allocate a few bytes cannot do anything useful either, and
 * checking every append would hide the real logic.
 */
#ifndef RIFFQ_BUF_H
#define RIFFQ_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct Buf {
    char *data;     /* owned; NULL when cap == 0 */
    size_t len;
    size_t cap;
} Buf;

void buf_init(Buf *b);
void buf_free(Buf *b);              /* releases memory, leaves an empty buffer */
void buf_reset(Buf *b);             /* len = 0, keeps memory */
void buf_reserve(Buf *b, size_t extra);
void buf_append(Buf *b, const void *data, size_t n);
void buf_append_str(Buf *b, const char *s);     /* without the NUL */
void buf_append_cstr(Buf *b, const char *s);    /* with the NUL */
void buf_append_byte(Buf *b, uint8_t c);
void buf_append_u16(Buf *b, uint16_t v);        /* network byte order */
void buf_append_u32(Buf *b, uint32_t v);
void buf_append_u64(Buf *b, uint64_t v);
void buf_printf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_consume(Buf *b, size_t n);             /* drop n bytes from the front */
void buf_put_u32_at(Buf *b, size_t off, uint32_t v);

/* malloc wrappers that abort on failure */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t sz);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
