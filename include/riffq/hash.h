/*
 * FNV-1a, 64 bits: the one hash the gateway uses for statement texts
 * (classification cache, server-side statement names) and settings
 * fingerprints.  Fast, simple, and good enough for keys the gateway itself
 * compares for equality afterwards.
 */
#ifndef RIFFQ_HASH_H
#define RIFFQ_HASH_H

#include <stddef.h>
#include <stdint.h>

#define RQ_HASH_INIT 1469598103934665603ULL

static inline uint64_t rq_hash_bytes(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* Hash a NUL-terminated string; *len (if given) receives its length. */
static inline uint64_t rq_hash_str(uint64_t h, const char *s, size_t *len)
{
    const unsigned char *p = (const unsigned char *)s;
    for (; *p; p++) {
        h ^= *p;
        h *= 1099511628211ULL;
    }
    if (len) *len = (size_t)((const char *)p - s);
    return h;
}

#endif
