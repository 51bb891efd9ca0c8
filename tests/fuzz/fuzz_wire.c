/*
 * libFuzzer target: arbitrary bytes as a client's stream after startup.
 *
 * Does with the input what the server does with a client's read buffer:
 * frame messages one after another until more bytes are needed or framing
 * fails, and decode each one by its type byte.  Every body is first copied
 * into an allocation of exactly its size, so ASan flags a read one byte past
 * the message, not only one past the whole input.
 *
 * Memory safety is not the only property checked.  A decoder that accepts a
 * body must have understood all of it, so each accepted message is encoded
 * again from the decoded fields and must reproduce the body byte for byte;
 * and every failure must come with a SQLSTATE, because the session turns it
 * into an ErrorResponse.  Violations trap, which libFuzzer reports as crashes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "riffq/wire.h"

#define MAX_MESSAGE (1u << 20)
#define SMALL_MAX   32

static void require(int ok)
{
    if (!ok) __builtin_trap();
}

static void require_outcome(int rc, RqError *err)
{
    if (rc == 0) {
        require(!rq_error_is_set(err));
    } else {
        require(rc == -1);
        require(rq_error_is_set(err));
        require(strlen(err->sqlstate) == 5);
    }
    rq_error_free(err);
}

static void require_same(const Buf *re, const uint8_t *body, size_t len)
{
    require(re->len == len);
    require(len == 0 || memcmp(re->data, body, len) == 0);
}

static void fuzz_parse(const uint8_t *body, size_t len)
{
    WireParse p;
    RqError err = {0};
    int rc = wire_decode_parse(body, len, &p, &err);
    require_outcome(rc, &err);
    if (rc) return;
    Buf re;
    buf_init(&re);
    buf_append_cstr(&re, p.name);
    buf_append_cstr(&re, p.query);
    buf_append_u16(&re, p.n_types);
    for (size_t i = 0; i < p.n_types; i++) buf_append_u32(&re, wire_oid_at(p.types, i));
    require_same(&re, body, len);
    buf_free(&re);
}

static void fuzz_bind(const uint8_t *body, size_t len)
{
    WireBind b;
    RqError err = {0};
    int rc = wire_decode_bind(body, len, &b, &err);
    require_outcome(rc, &err);
    if (rc) return;

    Buf re;
    buf_init(&re);
    buf_append_cstr(&re, b.portal);
    buf_append_cstr(&re, b.stmt);
    buf_append_u16(&re, b.n_formats);
    buf_append(&re, b.formats, 2 * (size_t)b.n_formats);
    buf_append_u16(&re, b.n_params);
    /* the values are rebuilt from the iterator, the way the session will
     * read them, not copied from params/params_len */
    WireParamIter it;
    wire_bind_params_begin(&b, &it);
    for (size_t i = 0; i < b.n_params; i++) {
        const uint8_t *v;
        int32_t vlen;
        require(wire_bind_param_next(&it, &v, &vlen) == 0);
        require(vlen >= -1);
        require(vlen <= 0 || v != NULL);
        int16_t f = wire_format_at(b.formats, b.n_formats, i);
        require(f == 0 || f == 1);
        buf_append_u32(&re, (uint32_t)vlen);
        if (vlen > 0) buf_append(&re, v, (size_t)vlen);
    }
    /* the walk must stop at the end of the values, not run into the result
     * format codes behind them */
    const uint8_t *v;
    int32_t vlen;
    require(wire_bind_param_next(&it, &v, &vlen) == -1);
    buf_append_u16(&re, b.n_result_formats);
    buf_append(&re, b.result_formats, 2 * (size_t)b.n_result_formats);
    for (size_t i = 0; i <= b.n_result_formats; i++) {
        int16_t f = wire_format_at(b.result_formats, b.n_result_formats, i);
        require(f == 0 || f == 1);
    }
    require_same(&re, body, len);
    buf_free(&re);
}

static void fuzz_kind_name(const uint8_t *body, size_t len, int is_close)
{
    WireDescribe d;
    RqError err = {0};
    int rc = is_close ? wire_decode_close(body, len, &d, &err)
                      : wire_decode_describe(body, len, &d, &err);
    require_outcome(rc, &err);
    if (rc) return;
    require(d.kind == 'S' || d.kind == 'P');
    Buf re;
    buf_init(&re);
    buf_append_byte(&re, d.kind);
    buf_append_cstr(&re, d.name);
    require_same(&re, body, len);
    buf_free(&re);
}

static void fuzz_execute(const uint8_t *body, size_t len)
{
    WireExecute x;
    RqError err = {0};
    int rc = wire_decode_execute(body, len, &x, &err);
    require_outcome(rc, &err);
    if (rc) return;
    Buf re;
    buf_init(&re);
    buf_append_cstr(&re, x.portal);
    buf_append_u32(&re, (uint32_t)x.max_rows);
    require_same(&re, body, len);
    buf_free(&re);
}

static void fuzz_query(const uint8_t *body, size_t len)
{
    const char *sql;
    RqError err = {0};
    int rc = wire_decode_query(body, len, &sql, &err);
    require_outcome(rc, &err);
    if (rc) return;
    Buf re;
    buf_init(&re);
    buf_append_cstr(&re, sql);
    require_same(&re, body, len);
    buf_free(&re);
}

/* 'p' is SASLInitialResponse, SASLResponse or PasswordMessage depending on
 * the authentication state; only the first has a structure to check. */
static void fuzz_sasl_initial(const uint8_t *body, size_t len)
{
    const char *mech;
    const uint8_t *data;
    size_t dlen;
    RqError err = {0};
    int rc = wire_decode_sasl_initial(body, len, &mech, &data, &dlen, &err);
    require_outcome(rc, &err);
    if (rc) return;
    Buf re;
    buf_init(&re);
    buf_append_cstr(&re, mech);
    if (data) {
        require(dlen <= INT32_MAX);
        buf_append_u32(&re, (uint32_t)dlen);
        buf_append(&re, data, dlen);
    } else {
        require(dlen == 0);
        buf_append_u32(&re, 0xffffffffu);
    }
    require_same(&re, body, len);
    buf_free(&re);
}

static void decode_message(uint8_t type, const uint8_t *body, size_t len)
{
    switch (type) {
    case 'P': fuzz_parse(body, len); break;
    case 'B': fuzz_bind(body, len); break;
    case 'D': fuzz_kind_name(body, len, 0); break;
    case 'C': fuzz_kind_name(body, len, 1); break;
    case 'E': fuzz_execute(body, len); break;
    case 'Q': fuzz_query(body, len); break;
    case 'p': fuzz_sasl_initial(body, len); break;
    default: break;     /* Sync, Flush, Terminate and unknown types carry no body to decode */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    for (;;) {
        uint8_t type = 0;
        const uint8_t *body = NULL;
        size_t blen = 0, total = 0;
        RqError err = {0};
        const uint8_t *p = data + off;
        size_t left = size - off;

        /* a tighter limit may only turn "message" into "too big", never
         * change where a message ends */
        uint8_t st = 0;
        const uint8_t *sb = NULL;
        size_t sbl = 0, stotal = 0;
        RqError serr = {0};
        int src = wire_frame(p, left, SMALL_MAX, &st, &sb, &sbl, &stotal, &serr);
        if (src == -1) require(serr.sqlstate[0] != '\0');
        rq_error_free(&serr);

        int rc = wire_frame(p, left, MAX_MESSAGE, &type, &body, &blen, &total, &err);
        if (rc == -1) {
            require_outcome(rc, &err);
            break;      /* the server answers with an error and closes */
        }
        require(!rq_error_is_set(&err));
        if (rc == 0) {
            require(src != 1);
            break;      /* the server waits for more bytes */
        }
        require(rc == 1);
        require(total == blen + 5 && total <= left && body == p + 5 && type == p[0]);
        if (src == 1) require(stotal == total && sbl == blen);

        uint8_t *copy = malloc(blen);
        if (blen) memcpy(copy, body, blen);
        decode_message(type, copy, blen);
        free(copy);
        off += total;
    }
    return 0;
}
