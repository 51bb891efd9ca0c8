/*
 * Unit tests for the protocol codec (src/wire/).
 *
 * Decoders are always fed exact-size heap copies of the bytes under test, so
 * that a read one byte past a message is caught by valgrind or ASan instead of
 * silently landing in the next field of a test fixture.  Client messages are
 * built here by hand (not with the server's encoders) so the tests spell out
 * the layout the protocol documentation gives, independently of the code.
 * Server messages are checked against literal byte strings for the same
 * reason: a round trip through our own encoder and decoder would accept a
 * symmetric mistake.
 */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "riffq/wire.h"

/* ---- helpers ---- */

#define ck_assert_error(err, state) do {                \
        ck_assert(rq_error_is_set(err));                \
        ck_assert_str_eq((err)->sqlstate, (state));     \
        rq_error_free(err);                             \
    } while (0)

#define ck_assert_no_error(err) ck_assert(!rq_error_is_set(err))

/* A string literal with embedded NULs, without the literal's own NUL. */
#define LIT(s) (const uint8_t *)(s), (sizeof(s) - 1)

static uint8_t *dup_exact(const void *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(c);
    if (n) memcpy(c, p, n);
    return c;
}

static void put_i16(Buf *b, int16_t v) { buf_append_u16(b, (uint16_t)v); }
static void put_i32(Buf *b, int32_t v) { buf_append_u32(b, (uint32_t)v); }

/* A decoder with its output struct hidden, so the truncation sweep below can
 * run over every message type with one loop. */
typedef int (*Decoder)(const uint8_t *body, size_t len, RqError *err);

static int dec_startup(const uint8_t *b, size_t n, RqError *e)
{ WireStartup s; return wire_decode_startup(b, n, &s, e); }
static int dec_parse(const uint8_t *b, size_t n, RqError *e)
{ WireParse p; return wire_decode_parse(b, n, &p, e); }
static int dec_bind(const uint8_t *b, size_t n, RqError *e)
{ WireBind x; return wire_decode_bind(b, n, &x, e); }
static int dec_describe(const uint8_t *b, size_t n, RqError *e)
{ WireDescribe d; return wire_decode_describe(b, n, &d, e); }
static int dec_close(const uint8_t *b, size_t n, RqError *e)
{ WireClose c; return wire_decode_close(b, n, &c, e); }
static int dec_execute(const uint8_t *b, size_t n, RqError *e)
{ WireExecute x; return wire_decode_execute(b, n, &x, e); }
static int dec_query(const uint8_t *b, size_t n, RqError *e)
{ const char *q; return wire_decode_query(b, n, &q, e); }
static int dec_sasl(const uint8_t *b, size_t n, RqError *e)
{
    const char *m; const uint8_t *d; size_t dl;
    return wire_decode_sasl_initial(b, n, &m, &d, &dl, e);
}

/* Every field of these messages is mandatory, so every proper prefix of a
 * valid body must be rejected as a protocol violation, and one extra byte
 * after it too. */
static void assert_truncations_fail(Decoder dec, const Buf *body)
{
    RqError err = {0};
    for (size_t n = 0; n < body->len; n++) {
        uint8_t *c = dup_exact(body->data, n);
        ck_assert_msg(dec(c, n, &err) == -1, "prefix of %zu/%zu bytes accepted", n, body->len);
        ck_assert_error(&err, "08P01");
        free(c);
    }
    uint8_t *c = dup_exact(body->data, body->len + 1);
    c[body->len] = 0;
    ck_assert(dec(c, body->len, &err) == 0);
    ck_assert_no_error(&err);
    ck_assert_int_eq(dec(c, body->len + 1, &err), -1);
    ck_assert_error(&err, "08P01");
    free(c);
}

/* Checks that the next message in an encoded buffer is `type` with exactly
 * `body` as its body, using the codec's own framing to read the header, and
 * returns the offset of the message after it. */
static size_t expect_msg(const Buf *b, size_t off, uint8_t type, const uint8_t *body, size_t n)
{
    uint8_t t = 0;
    const uint8_t *mb = NULL;
    size_t ml = 0, total = 0;
    RqError err = {0};
    ck_assert_uint_le(off, b->len);
    int rc = wire_frame((const uint8_t *)b->data + off, b->len - off, 1 << 20,
                        &t, &mb, &ml, &total, &err);
    ck_assert_int_eq(rc, 1);
    ck_assert_int_eq(t, type);
    ck_assert_uint_eq(ml, n);
    ck_assert_uint_eq(total, n + 5);
    /* the header is big-endian length including itself */
    const uint8_t *h = (const uint8_t *)b->data + off + 1;
    ck_assert_uint_eq(((uint32_t)h[0] << 24) | ((uint32_t)h[1] << 16) | ((uint32_t)h[2] << 8) | h[3],
                      n + 4);
    if (n) ck_assert_mem_eq(mb, body, n);
    return off + total;
}

/* ---- WireReader ---- */

START_TEST(reader_reads_each_width)
{
    static const uint8_t d[] = { 0x01, 0x80, 0x00, 0xff, 0xff, 0xff, 0xfe,
                                 'a', 'b', 0, 0, 0x10, 0x20 };
    uint8_t *c = dup_exact(d, sizeof d);
    WireReader r;
    wire_reader_init(&r, c, sizeof d);
    ck_assert_uint_eq(wire_get_u8(&r), 1);
    ck_assert_int_eq(wire_get_i16(&r), -32768);
    ck_assert_int_eq(wire_get_i32(&r), -2);
    ck_assert_str_eq(wire_get_str(&r), "ab");
    ck_assert_str_eq(wire_get_str(&r), "");
    ck_assert_ptr_eq(wire_get_bytes(&r, 2), c + 11);
    ck_assert_int_eq(r.err, 0);
    ck_assert_uint_eq(r.pos, sizeof d);
    ck_assert_int_eq(wire_reader_end(&r), 0);
    /* asking for nothing at the very end is fine */
    ck_assert_ptr_nonnull(wire_get_bytes(&r, 0));
    ck_assert_int_eq(wire_reader_end(&r), 0);
    free(c);
}
END_TEST

START_TEST(reader_past_end_latches)
{
    static const uint8_t d[] = { 1, 2, 3 };
    uint8_t *c = dup_exact(d, sizeof d);
    WireReader r;
    wire_reader_init(&r, c, sizeof d);
    ck_assert_int_eq(wire_get_i32(&r), 0);
    ck_assert_int_eq(r.err, 1);
    ck_assert_uint_eq(r.pos, 0);
    /* once latched, even reads that would fit fail, so a decoder can check
     * r.err once at the end instead of after every field */
    ck_assert_uint_eq(wire_get_u8(&r), 0);
    ck_assert_int_eq(wire_get_i16(&r), 0);
    ck_assert_ptr_null(wire_get_bytes(&r, 1));
    ck_assert_str_eq(wire_get_str(&r), "");
    ck_assert_uint_eq(r.pos, 0);
    ck_assert_int_eq(wire_reader_end(&r), -1);
    free(c);
}
END_TEST

START_TEST(reader_each_width_one_short)
{
    static const uint8_t d[] = { 0xaa, 0xbb, 0xcc };
    for (size_t have = 0; have < 4; have++) {
        uint8_t *c = dup_exact(d, have);
        WireReader r;
        if (have < 1) {
            wire_reader_init(&r, c, have);
            wire_get_u8(&r);
            ck_assert_int_eq(r.err, 1);
        }
        if (have < 2) {
            wire_reader_init(&r, c, have);
            wire_get_i16(&r);
            ck_assert_int_eq(r.err, 1);
        }
        wire_reader_init(&r, c, have);
        wire_get_i32(&r);
        ck_assert_int_eq(r.err, 1);
        wire_reader_init(&r, c, have);
        ck_assert_ptr_null(wire_get_bytes(&r, have + 1));
        ck_assert_int_eq(r.err, 1);
        free(c);
    }
}
END_TEST

START_TEST(reader_huge_byte_count_fails)
{
    static const uint8_t d[] = { 1, 2, 3, 4 };
    WireReader r;
    wire_reader_init(&r, d, sizeof d);
    wire_get_u8(&r);
    /* a length taken from the wire must not wrap pos + n around */
    ck_assert_ptr_null(wire_get_bytes(&r, SIZE_MAX));
    ck_assert_int_eq(r.err, 1);
    wire_reader_init(&r, d, sizeof d);
    ck_assert_ptr_null(wire_get_bytes(&r, (size_t)-1 - 1));
    ck_assert_int_eq(r.err, 1);
}
END_TEST

START_TEST(reader_string_without_nul_fails)
{
    static const char d[] = { 'a', 'b', 'c' };
    uint8_t *c = dup_exact(d, sizeof d);
    WireReader r;
    wire_reader_init(&r, c, sizeof d);
    ck_assert_str_eq(wire_get_str(&r), "");
    ck_assert_int_eq(r.err, 1);
    ck_assert_int_eq(wire_reader_end(&r), -1);
    /* a NUL just past the end of the reader's window does not count */
    wire_reader_init(&r, (const uint8_t *)"abc", 3);
    wire_get_str(&r);
    ck_assert_int_eq(r.err, 1);
    free(c);
}
END_TEST

START_TEST(reader_string_at_end_fails)
{
    static const uint8_t d[] = { 'x', 0 };
    uint8_t *c = dup_exact(d, sizeof d);
    WireReader r;
    wire_reader_init(&r, c, sizeof d);
    ck_assert_str_eq(wire_get_str(&r), "x");
    ck_assert_int_eq(wire_reader_end(&r), 0);
    wire_get_str(&r);
    ck_assert_int_eq(r.err, 1);
    free(c);
}
END_TEST

START_TEST(reader_empty_null_buffer)
{
    /* Regression: an empty body may arrive as (NULL, 0), and wire_get_str
     * used to form NULL + 0 and call memchr(NULL, 0, 0), both undefined
     * (caught by UBSan). */
    WireReader r;
    wire_reader_init(&r, NULL, 0);
    ck_assert_int_eq(wire_reader_end(&r), 0);
    ck_assert_str_eq(wire_get_str(&r), "");
    ck_assert_int_eq(r.err, 1);
    wire_reader_init(&r, NULL, 0);
    ck_assert_uint_eq(wire_get_u8(&r), 0);
    ck_assert_int_eq(r.err, 1);

    RqError err = {0};
    const char *sql;
    ck_assert_int_eq(wire_decode_query(NULL, 0, &sql, &err), -1);
    ck_assert_error(&err, "08P01");
    WireExecute ex;
    ck_assert_int_eq(wire_decode_execute(NULL, 0, &ex, &err), -1);
    ck_assert_error(&err, "08P01");
}
END_TEST

START_TEST(reader_end_fails_on_leftover)
{
    static const uint8_t d[] = { 7, 8 };
    WireReader r;
    wire_reader_init(&r, d, sizeof d);
    wire_get_u8(&r);
    ck_assert_int_eq(r.err, 0);
    ck_assert_int_eq(wire_reader_end(&r), -1);
    wire_get_u8(&r);
    ck_assert_int_eq(wire_reader_end(&r), 0);
}
END_TEST

/* ---- wire_frame ---- */

static const uint8_t query_msg[] = { 'Q', 0, 0, 0, 13, 'S', 'E', 'L', 'E', 'C', 'T', ' ', '1', 0 };

START_TEST(frame_needs_more_at_every_truncation)
{
    RqError err = {0};
    for (size_t n = 0; n < sizeof query_msg; n++) {
        uint8_t *c = dup_exact(query_msg, n);
        uint8_t t = 0xee;
        const uint8_t *body = NULL;
        size_t bl = 77, total = 77;
        ck_assert_int_eq(wire_frame(c, n, 1024, &t, &body, &bl, &total, &err), 0);
        ck_assert_no_error(&err);
        /* outputs stay untouched until a whole message is there */
        ck_assert_int_eq(t, 0xee);
        ck_assert_uint_eq(total, 77);
        free(c);
    }
}
END_TEST

START_TEST(frame_exact_message)
{
    RqError err = {0};
    uint8_t *c = dup_exact(query_msg, sizeof query_msg);
    uint8_t t;
    const uint8_t *body;
    size_t bl, total;
    ck_assert_int_eq(wire_frame(c, sizeof query_msg, 1024, &t, &body, &bl, &total, &err), 1);
    ck_assert_no_error(&err);
    ck_assert_int_eq(t, 'Q');
    ck_assert_ptr_eq(body, c + 5);
    ck_assert_uint_eq(bl, 9);
    ck_assert_uint_eq(total, sizeof query_msg);
    ck_assert_str_eq((const char *)body, "SELECT 1");
    /* a body exactly at the limit is allowed */
    ck_assert_int_eq(wire_frame(c, sizeof query_msg, 9, &t, &body, &bl, &total, &err), 1);
    free(c);
}
END_TEST

START_TEST(frame_empty_body)
{
    static const uint8_t sync[] = { 'S', 0, 0, 0, 4 };
    RqError err = {0};
    uint8_t *c = dup_exact(sync, sizeof sync);
    uint8_t t;
    const uint8_t *body;
    size_t bl, total;
    ck_assert_int_eq(wire_frame(c, sizeof sync, 0, &t, &body, &bl, &total, &err), 1);
    ck_assert_int_eq(t, 'S');
    ck_assert_uint_eq(bl, 0);
    ck_assert_uint_eq(total, 5);
    free(c);
}
END_TEST

START_TEST(frame_back_to_back)
{
    /* Sync, then Query, then the first 3 bytes of a third message */
    Buf b;
    buf_init(&b);
    buf_append(&b, "S\0\0\0\4", 5);
    buf_append(&b, query_msg, sizeof query_msg);
    buf_append(&b, "X\0\0", 3);
    RqError err = {0};
    uint8_t t;
    const uint8_t *body;
    size_t bl, total, off = 0;
    const uint8_t *d = (const uint8_t *)b.data;

    ck_assert_int_eq(wire_frame(d + off, b.len - off, 1024, &t, &body, &bl, &total, &err), 1);
    ck_assert_int_eq(t, 'S');
    ck_assert_uint_eq(bl, 0);
    ck_assert_uint_eq(total, 5);
    off += total;
    ck_assert_int_eq(wire_frame(d + off, b.len - off, 1024, &t, &body, &bl, &total, &err), 1);
    ck_assert_int_eq(t, 'Q');
    ck_assert_ptr_eq(body, d + 10);
    ck_assert_uint_eq(bl, 9);
    ck_assert_uint_eq(total, 14);
    off += total;
    ck_assert_int_eq(wire_frame(d + off, b.len - off, 1024, &t, &body, &bl, &total, &err), 0);
    ck_assert_uint_eq(off, b.len - 3);
    ck_assert_no_error(&err);
    buf_free(&b);
}
END_TEST

START_TEST(frame_length_below_four)
{
    RqError err = {0};
    uint8_t t;
    const uint8_t *body;
    size_t bl, total;
    for (uint8_t l = 0; l < 4; l++) {
        uint8_t m[5] = { 'Q', 0, 0, 0, l };
        uint8_t *c = dup_exact(m, sizeof m);
        ck_assert_int_eq(wire_frame(c, sizeof m, 1024, &t, &body, &bl, &total, &err), -1);
        ck_assert_ptr_nonnull(strstr(err.message, "invalid message length"));
        ck_assert_error(&err, "08P01");
        free(c);
    }
}
END_TEST

START_TEST(frame_length_over_max)
{
    RqError err = {0};
    uint8_t t;
    const uint8_t *body;
    size_t bl, total;
    /* only the header has arrived: the limit must be enforced before waiting
     * for (and buffering) a body the client claims is huge */
    static const uint8_t big[] = { 'Q', 0, 0, 1, 5 };      /* body 257 */
    uint8_t *c = dup_exact(big, sizeof big);
    ck_assert_int_eq(wire_frame(c, sizeof big, 256, &t, &body, &bl, &total, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.message, "exceeds the limit of 256 bytes"));
    ck_assert_ptr_nonnull(err.hint);
    ck_assert_ptr_nonnull(strstr(err.hint, "max_message_size"));
    ck_assert_error(&err, "08P01");
    /* one byte less is within the limit and merely incomplete */
    ck_assert_int_eq(wire_frame(c, sizeof big, 257, &t, &body, &bl, &total, &err), 0);
    ck_assert_no_error(&err);
    free(c);

    static const uint8_t huge[] = { 'Q', 0xff, 0xff, 0xff, 0xff };
    c = dup_exact(huge, sizeof huge);
    ck_assert_int_eq(wire_frame(c, sizeof huge, 1 << 30, &t, &body, &bl, &total, &err), -1);
    ck_assert_ptr_nonnull(err.hint);
    ck_assert_error(&err, "08P01");
    free(c);
}
END_TEST

START_TEST(frame_replaces_previous_error)
{
    RqError err = {0};
    rq_error_set(&err, "XX000", "stale");
    rq_error_hint(&err, "stale hint");
    uint8_t m[5] = { 'Q', 0, 0, 0, 1 };
    uint8_t t;
    const uint8_t *body;
    size_t bl, total;
    ck_assert_int_eq(wire_frame(m, sizeof m, 1024, &t, &body, &bl, &total, &err), -1);
    ck_assert_ptr_null(err.hint);
    ck_assert_error(&err, "08P01");
}
END_TEST

/* ---- wire_frame_startup ---- */

static int frame_startup_bytes(const uint8_t *d, size_t n, size_t *bl, size_t *total, RqError *err)
{
    uint8_t *c = dup_exact(d, n);
    const uint8_t *body = NULL;
    int rc = wire_frame_startup(c, n, &body, bl, total, err);
    if (rc == 1) ck_assert_ptr_eq(body, c + 4);
    free(c);
    return rc;
}

START_TEST(frame_startup_too_short)
{
    RqError err = {0};
    size_t bl, total;
    for (uint8_t l = 0; l < 8; l++) {
        uint8_t m[8] = { 0, 0, 0, l, 0x04, 0xd2, 0x16, 0x2f };
        ck_assert_int_eq(frame_startup_bytes(m, sizeof m, &bl, &total, &err), -1);
        ck_assert_error(&err, "08P01");
    }
}
END_TEST

START_TEST(frame_startup_too_long)
{
    RqError err = {0};
    size_t bl, total;
    static const uint8_t m1[] = { 0, 0, 0x27, 0x11 };      /* 10001 */
    ck_assert_int_eq(frame_startup_bytes(m1, sizeof m1, &bl, &total, &err), -1);
    ck_assert_error(&err, "08P01");
    static const uint8_t m2[] = { 0xff, 0xff, 0xff, 0xff };
    ck_assert_int_eq(frame_startup_bytes(m2, sizeof m2, &bl, &total, &err), -1);
    ck_assert_error(&err, "08P01");
    static const uint8_t m3[] = { 0x80, 0, 0, 8 };         /* negative as int32 */
    ck_assert_int_eq(frame_startup_bytes(m3, sizeof m3, &bl, &total, &err), -1);
    ck_assert_error(&err, "08P01");
}
END_TEST

START_TEST(frame_startup_max_is_allowed)
{
    RqError err = {0};
    size_t bl, total;
    uint8_t *m = calloc(1, WIRE_MAX_STARTUP);
    ck_assert_ptr_nonnull(m);
    m[2] = 0x27;
    m[3] = 0x10;                                           /* 10000 */
    ck_assert_int_eq(frame_startup_bytes(m, WIRE_MAX_STARTUP - 1, &bl, &total, &err), 0);
    ck_assert_int_eq(frame_startup_bytes(m, WIRE_MAX_STARTUP, &bl, &total, &err), 1);
    ck_assert_uint_eq(bl, WIRE_MAX_STARTUP - 4);
    ck_assert_uint_eq(total, WIRE_MAX_STARTUP);
    ck_assert_no_error(&err);
    free(m);
}
END_TEST

START_TEST(frame_startup_exact)
{
    RqError err = {0};
    size_t bl = 99, total = 99;
    static const uint8_t ssl[] = { 0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f, 'X' };
    for (size_t n = 0; n < 8; n++) {
        ck_assert_int_eq(frame_startup_bytes(ssl, n, &bl, &total, &err), 0);
        ck_assert_no_error(&err);
        ck_assert_uint_eq(total, 99);
    }
    ck_assert_int_eq(frame_startup_bytes(ssl, 8, &bl, &total, &err), 1);
    ck_assert_uint_eq(bl, 4);
    ck_assert_uint_eq(total, 8);
    /* bytes after the packet (a pipelined TLS hello, say) are not consumed */
    ck_assert_int_eq(frame_startup_bytes(ssl, sizeof ssl, &bl, &total, &err), 1);
    ck_assert_uint_eq(total, 8);
    ck_assert_no_error(&err);
}
END_TEST

/* ---- wire_decode_startup ---- */

static void startup_params(Buf *b, int32_t code, size_t npairs)
{
    buf_init(b);
    put_i32(b, code);
    for (size_t i = 0; i < npairs; i++) {
        buf_printf(b, "k%zu", i);
        buf_append_byte(b, 0);
        buf_printf(b, "v%zu", i);
        buf_append_byte(b, 0);
    }
    buf_append_byte(b, 0);
}

START_TEST(startup_message)
{
    Buf b;
    buf_init(&b);
    put_i32(&b, WIRE_PROTO_30);
    buf_append(&b, LIT("user\0alice\0database\0db1\0options\0-c search_path=x\0"
                       "application_name\0\0\0"));
    uint8_t *c = dup_exact(b.data, b.len);
    WireStartup s;
    RqError err = {0};
    ck_assert_int_eq(wire_decode_startup(c, b.len, &s, &err), 0);
    ck_assert_no_error(&err);
    ck_assert_int_eq(s.code, WIRE_PROTO_30);
    ck_assert_uint_eq(s.n_params, 4);
    ck_assert_str_eq(s.keys[0], "user");
    ck_assert_str_eq(s.vals[0], "alice");
    ck_assert_str_eq(s.keys[1], "database");
    ck_assert_str_eq(s.vals[1], "db1");
    ck_assert_str_eq(s.keys[2], "options");
    ck_assert_str_eq(s.vals[2], "-c search_path=x");
    ck_assert_str_eq(s.keys[3], "application_name");
    ck_assert_str_eq(s.vals[3], "");
    /* decoded strings point into the caller's buffer */
    ck_assert_ptr_eq(s.keys[0], (const char *)c + 4);
    ck_assert_int_eq(s.cancel_pid, 0);
    free(c);
    assert_truncations_fail(dec_startup, &b);
    buf_free(&b);
}
END_TEST

START_TEST(startup_minor_version_and_no_params)
{
    Buf b;
    startup_params(&b, WIRE_PROTO_30 | 2, 0);
    WireStartup s;
    RqError err = {0};
    ck_assert_int_eq(wire_decode_startup((uint8_t *)b.data, b.len, &s, &err), 0);
    ck_assert_int_eq(s.code, WIRE_PROTO_30 | 2);
    ck_assert_uint_eq(s.n_params, 0);
    buf_free(&b);
}
END_TEST

START_TEST(startup_old_protocol_left_to_caller)
{
    /* the caller names the version in its error, so the codec only reports it */
    static const uint8_t v2[] = { 0, 2, 0, 0, 'u', 's', 'e', 'r' };
    WireStartup s;
    RqError err = {0};
    ck_assert_int_eq(wire_decode_startup(v2, sizeof v2, &s, &err), 0);
    ck_assert_no_error(&err);
    ck_assert_int_eq(s.code, 2 << 16);
    ck_assert_uint_eq(s.n_params, 0);
}
END_TEST

START_TEST(startup_ssl_gss_requests)
{
    static const uint8_t ssl[] = { 0x04, 0xd2, 0x16, 0x2f, 0 };
    static const uint8_t gss[] = { 0x04, 0xd2, 0x16, 0x30, 0 };
    WireStartup s;
    RqError err = {0};
    uint8_t *c = dup_exact(ssl, 4);
    ck_assert_int_eq(wire_decode_startup(c, 4, &s, &err), 0);
    ck_assert_int_eq(s.code, WIRE_SSL_CODE);
    ck_assert_uint_eq(s.n_params, 0);
    free(c);
    c = dup_exact(gss, 4);
    ck_assert_int_eq(wire_decode_startup(c, 4, &s, &err), 0);
    ck_assert_int_eq(s.code, WIRE_GSSENC_CODE);
    free(c);
    ck_assert_no_error(&err);
    ck_assert_int_eq(wire_decode_startup(ssl, sizeof ssl, &s, &err), -1);
    ck_assert_error(&err, "08P01");
    ck_assert_int_eq(wire_decode_startup(gss, sizeof gss, &s, &err), -1);
    ck_assert_error(&err, "08P01");
}
END_TEST

START_TEST(startup_cancel_request)
{
    Buf b;
    buf_init(&b);
    put_i32(&b, WIRE_CANCEL_CODE);
    put_i32(&b, 1234);
    put_i32(&b, (int32_t)0xdeadbeef);
    uint8_t *c = dup_exact(b.data, b.len);
    WireStartup s;
    RqError err = {0};
    ck_assert_int_eq(wire_decode_startup(c, b.len, &s, &err), 0);
    ck_assert_no_error(&err);
    ck_assert_int_eq(s.code, WIRE_CANCEL_CODE);
    ck_assert_int_eq(s.cancel_pid, 1234);
    ck_assert_int_eq(s.cancel_key, (int32_t)0xdeadbeef);
    ck_assert_uint_eq(s.n_params, 0);
    free(c);
    assert_truncations_fail(dec_startup, &b);
    buf_free(&b);
}
END_TEST

START_TEST(startup_missing_terminator)
{
    Buf b;
    buf_init(&b);
    put_i32(&b, WIRE_PROTO_30);
    buf_append(&b, LIT("user\0alice\0"));
    uint8_t *c = dup_exact(b.data, b.len);
    WireStartup s;
    RqError err = {0};
    ck_assert_int_eq(wire_decode_startup(c, b.len, &s, &err), -1);
    ck_assert_error(&err, "08P01");
    free(c);
    /* a key without its value */
    buf_append(&b, LIT("database\0"));
    c = dup_exact(b.data, b.len);
    ck_assert_int_eq(wire_decode_startup(c, b.len, &s, &err), -1);
    ck_assert_error(&err, "08P01");
    free(c);
    buf_free(&b);
}
END_TEST

START_TEST(startup_param_limit)
{
    WireStartup s;
    RqError err = {0};
    Buf b;
    startup_params(&b, WIRE_PROTO_30, 64);
    uint8_t *c = dup_exact(b.data, b.len);
    ck_assert_int_eq(wire_decode_startup(c, b.len, &s, &err), 0);
    ck_assert_uint_eq(s.n_params, 64);
    ck_assert_str_eq(s.keys[63], "k63");
    ck_assert_str_eq(s.vals[63], "v63");
    free(c);
    buf_free(&b);

    startup_params(&b, WIRE_PROTO_30, 65);
    c = dup_exact(b.data, b.len);
    ck_assert_int_eq(wire_decode_startup(c, b.len, &s, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.message, "too many parameters"));
    ck_assert_error(&err, "08P01");
    free(c);
    buf_free(&b);
}
END_TEST

START_TEST(startup_trailing_bytes)
{
    WireStartup s;
    RqError err = {0};
    Buf b;
    startup_params(&b, WIRE_PROTO_30, 1);
    buf_append_byte(&b, 'x');
    uint8_t *c = dup_exact(b.data, b.len);
    ck_assert_int_eq(wire_decode_startup(c, b.len, &s, &err), -1);
    ck_assert_error(&err, "08P01");
    free(c);
    buf_free(&b);
}
END_TEST

/* ---- Parse ---- */

START_TEST(parse_with_types)
{
    Buf b;
    buf_init(&b);
    buf_append(&b, LIT("s1\0SELECT $1, $2, $3\0"));
    put_i16(&b, 3);
    put_i32(&b, 23);
    put_i32(&b, 0);
    put_i32(&b, (int32_t)0xfffffffe);
    uint8_t *c = dup_exact(b.data, b.len);
    WireParse p;
    RqError err = {0};
    ck_assert_int_eq(wire_decode_parse(c, b.len, &p, &err), 0);
    ck_assert_no_error(&err);
    ck_assert_str_eq(p.name, "s1");
    ck_assert_str_eq(p.query, "SELECT $1, $2, $3");
    ck_assert_uint_eq(p.n_types, 3);
    ck_assert_uint_eq(wire_oid_at(p.types, 0), 23);
    ck_assert_uint_eq(wire_oid_at(p.types, 1), 0);
    ck_assert_uint_eq(wire_oid_at(p.types, 2), 0xfffffffeu);
    free(c);
    assert_truncations_fail(dec_parse, &b);
    buf_free(&b);
}
END_TEST

START_TEST(parse_unnamed_no_types)
{
    static const uint8_t m[] = { 0, 'S', 'E', 'L', 'E', 'C', 'T', ' ', '1', 0, 0, 0 };
    uint8_t *c = dup_exact(m, sizeof m);
    WireParse p;
    RqError err = {0};
    ck_assert_int_eq(wire_decode_parse(c, sizeof m, &p, &err), 0);
    ck_assert_str_eq(p.name, "");
    ck_assert_str_eq(p.query, "SELECT 1");
    ck_assert_uint_eq(p.n_types, 0);
    free(c);
}
END_TEST

START_TEST(parse_negative_count)
{
    /* -1 reads as 65535 (see parse_count_above_int16): with no OIDs behind
     * it the message is truncated, never a huge allocation or a wild read */
    Buf b;
    buf_init(&b);
    buf_append(&b, LIT("\0SELECT 1\0"));
    put_i16(&b, -1);
    put_i32(&b, 23);
    uint8_t *c = dup_exact(b.data, b.len);
    WireParse p;
    RqError err = {0};
    ck_assert_int_eq(wire_decode_parse(c, b.len, &p, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.message, "Parse"));
    ck_assert_error(&err, "08P01");
    free(c);
    buf_free(&b);
}
END_TEST

START_TEST(parse_count_above_int16)
{
    /* Regression: counts were read as signed int16, so a Parse with more than
     * 32767 parameter types was rejected, though libpq sends up to 65535 and
     * Postgres reads the count unsigned. */
    Buf b;
    buf_init(&b);
    buf_append(&b, LIT("big\0INSERT ...\0"));
    put_i16(&b, (int16_t)0xffff);
    for (uint32_t i = 0; i < 65535; i++) put_i32(&b, (int32_t)i);
    uint8_t *c = dup_exact(b.data, b.len);
    WireParse p;
    RqError err = {0};
    ck_assert_int_eq(wire_decode_parse(c, b.len, &p, &err), 0);
    ck_assert_no_error(&err);
    ck_assert_uint_eq(p.n_types, 65535);
    ck_assert_uint_eq(wire_oid_at(p.types, 0), 0);
    ck_assert_uint_eq(wire_oid_at(p.types, 40000), 40000);
    ck_assert_uint_eq(wire_oid_at(p.types, 65534), 65534);
    /* one OID short */
    ck_assert_int_eq(wire_decode_parse(c, b.len - 4, &p, &err), -1);
    ck_assert_error(&err, "08P01");
    free(c);
    buf_free(&b);
}
END_TEST

START_TEST(parse_count_exceeds_body)
{
    Buf b;
    buf_init(&b);
    buf_append(&b, LIT("\0SELECT $1\0"));
    put_i16(&b, 2);
    put_i32(&b, 23);
    uint8_t *c = dup_exact(b.data, b.len);
    WireParse p;
    RqError err = {0};
    ck_assert_int_eq(wire_decode_parse(c, b.len, &p, &err), -1);
    ck_assert_error(&err, "08P01");
    free(c);
    buf_free(&b);
}
END_TEST

/* ---- Bind ---- */

/* portal, statement, parameter formats, values (NULL data = SQL NULL),
 * result formats */
static void bind_body(Buf *b, const char *portal, const char *stmt,
                      int16_t nf, const int16_t *fmts,
                      int16_t np, const char *const *vals, const int32_t *lens,
                      int16_t nr, const int16_t *rfmts)
{
    buf_init(b);
    buf_append_cstr(b, portal);
    buf_append_cstr(b, stmt);
    put_i16(b, nf);
    for (int i = 0; i < nf; i++) put_i16(b, fmts[i]);
    put_i16(b, np);
    for (int i = 0; i < np; i++) {
        put_i32(b, lens[i]);
        if (lens[i] > 0) buf_append(b, vals[i], (size_t)lens[i]);
    }
    put_i16(b, nr);
    for (int i = 0; i < nr; i++) put_i16(b, rfmts[i]);
}

START_TEST(bind_full)
{
    static const int16_t fmts[] = { 0, 1, 0 };
    static const char *const vals[] = { "42", NULL, "" };
    static const int32_t lens[] = { 2, -1, 0 };
    static const int16_t rfmts[] = { 1, 0 };
    Buf b;
    bind_body(&b, "p1", "s1", 3, fmts, 3, vals, lens, 2, rfmts);
    uint8_t *c = dup_exact(b.data, b.len);
    WireBind x;
    RqError err = {0};
    ck_assert_int_eq(wire_decode_bind(c, b.len, &x, &err), 0);
    ck_assert_no_error(&err);
    ck_assert_str_eq(x.portal, "p1");
    ck_assert_str_eq(x.stmt, "s1");
    ck_assert_uint_eq(x.n_formats, 3);
    ck_assert_int_eq(wire_format_at(x.formats, x.n_formats, 0), 0);
    ck_assert_int_eq(wire_format_at(x.formats, x.n_formats, 1), 1);
    ck_assert_int_eq(wire_format_at(x.formats, x.n_formats, 2), 0);
    ck_assert_uint_eq(x.n_params, 3);
    ck_assert_uint_eq(x.params_len, (4 + 2) + 4 + 4);
    ck_assert_ptr_eq(x.params, c + 3 + 3 + 2 + 6 + 2);
    ck_assert_uint_eq(x.n_result_formats, 2);
    ck_assert_int_eq(wire_format_at(x.result_formats, x.n_result_formats, 0), 1);
    ck_assert_int_eq(wire_format_at(x.result_formats, x.n_result_formats, 1), 0);

    WireParamIter it;
    const uint8_t *v = (const uint8_t *)"junk";
    int32_t len = 99;
    wire_bind_params_begin(&x, &it);
    ck_assert_int_eq(wire_bind_param_next(&it, &v, &len), 0);
    ck_assert_int_eq(len, 2);
    ck_assert_mem_eq(v, "42", 2);
    ck_assert_int_eq(wire_bind_param_next(&it, &v, &len), 0);
    ck_assert_int_eq(len, -1);
    ck_assert_ptr_null(v);
    ck_assert_int_eq(wire_bind_param_next(&it, &v, &len), 0);
    ck_assert_int_eq(len, 0);
    /* walking past the last value fails instead of reading result formats */
    ck_assert_int_eq(wire_bind_param_next(&it, &v, &len), -1);
    ck_assert_ptr_null(v);
    free(c);
    assert_truncations_fail(dec_bind, &b);
    buf_free(&b);
}
END_TEST

START_TEST(bind_single_format_applies_to_all)
{
    static const int16_t fmts[] = { 1 };
    static const char *const vals[] = { "\0\0\0\1", "\0\0\0\2" };
    static const int32_t lens[] = { 4, 4 };
    Buf b;
    bind_body(&b, "", "", 1, fmts, 2, vals, lens, 0, NULL);
    uint8_t *c = dup_exact(b.data, b.len);
    WireBind x;
    RqError err = {0};
    ck_assert_int_eq(wire_decode_bind(c, b.len, &x, &err), 0);
    ck_assert_str_eq(x.portal, "");
    ck_assert_str_eq(x.stmt, "");
    ck_assert_uint_eq(x.n_formats, 1);
    for (size_t i = 0; i < 5; i++)
        ck_assert_int_eq(wire_format_at(x.formats, x.n_formats, i), 1);
    ck_assert_uint_eq(x.n_result_formats, 0);
    /* no result formats means text for every column */
    ck_assert_int_eq(wire_format_at(x.result_formats, 0, 7), 0);

    WireParamIter it;
    const uint8_t *v;
    int32_t len;
    wire_bind_params_begin(&x, &it);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(wire_bind_param_next(&it, &v, &len), 0);
        ck_assert_int_eq(len, 4);
        ck_assert_uint_eq(wire_oid_at(v, 0), (uint32_t)i + 1);
    }
    ck_assert_int_eq(wire_bind_param_next(&it, &v, &len), -1);
    free(c);
    buf_free(&b);
}
END_TEST

START_TEST(bind_no_params)
{
    static const int16_t rfmts[] = { 1 };
    Buf b;
    bind_body(&b, "", "stmt", 0, NULL, 0, NULL, NULL, 1, rfmts);
    uint8_t *c = dup_exact(b.data, b.len);
    WireBind x;
    RqError err = {0};
    ck_assert_int_eq(wire_decode_bind(c, b.len, &x, &err), 0);
    ck_assert_uint_eq(x.n_params, 0);
    ck_assert_uint_eq(x.params_len, 0);
    ck_assert_int_eq(wire_format_at(x.formats, x.n_formats, 0), 0);
    ck_assert_int_eq(wire_format_at(x.result_formats, x.n_result_formats, 3), 1);
    WireParamIter it;
    const uint8_t *v;
    int32_t len;
    wire_bind_params_begin(&x, &it);
    ck_assert_int_eq(wire_bind_param_next(&it, &v, &len), -1);
    free(c);
    buf_free(&b);
}
END_TEST

START_TEST(format_at_rule)
{
    static const uint8_t three[] = { 0, 1, 0, 0, 0, 1 };
    static const uint8_t one[] = { 0, 1 };
    ck_assert_int_eq(wire_format_at(NULL, 0, 0), 0);
    ck_assert_int_eq(wire_format_at(NULL, 0, 100), 0);
    ck_assert_int_eq(wire_format_at(one, 1, 0), 1);
    ck_assert_int_eq(wire_format_at(one, 1, 65535), 1);
    ck_assert_int_eq(wire_format_at(three, 3, 0), 1);
    ck_assert_int_eq(wire_format_at(three, 3, 1), 0);
    ck_assert_int_eq(wire_format_at(three, 3, 2), 1);
    /* out of range of an n-list: text, and no read past the list */
    ck_assert_int_eq(wire_format_at(three, 3, 3), 0);
}
END_TEST

START_TEST(bind_format_count_mismatch)
{
    static const int16_t fmts[] = { 0, 1 };
    static const char *const vals[] = { "a", "b", "c" };
    static const int32_t lens[] = { 1, 1, 1 };
    Buf b;
    bind_body(&b, "", "", 2, fmts, 3, vals, lens, 0, NULL);
    uint8_t *c = dup_exact(b.data, b.len);
    WireBind x;
    RqError err = {0};
    ck_assert_int_eq(wire_decode_bind(c, b.len, &x, &err), -1);
    ck_assert_str_eq(err.message, "bind message has 2 parameter formats but 3 parameters");
    ck_assert_error(&err, "08P01");
    free(c);
    buf_free(&b);
    /* formats for parameters that do not exist */
    bind_body(&b, "", "", 2, fmts, 0, NULL, NULL, 0, NULL);
    c = dup_exact(b.data, b.len);
    ck_assert_int_eq(wire_decode_bind(c, b.len, &x, &err), -1);
    ck_assert_error(&err, "08P01");
    free(c);
    buf_free(&b);
}
END_TEST

START_TEST(bind_bad_format_code)
{
    static const int16_t bad[] = { 0, 2 };
    static const int16_t neg[] = { -1 };
    static const int16_t ok[] = { 1 };
    static const char *const vals[] = { "a", "b" };
    static const int32_t lens[] = { 1, 1 };
    WireBind x;
    RqError err = {0};
    Buf b;
    uint8_t *c;

    bind_body(&b, "", "", 2, bad, 2, vals, lens, 0, NULL);
    c = dup_exact(b.data, b.len);
    ck_assert_int_eq(wire_decode_bind(c, b.len, &x, &err), -1);
    ck_assert_str_eq(err.message, "unsupported format code: 2");
    ck_assert_error(&err, "22023");
    free(c);
    buf_free(&b);

    bind_body(&b, "", "", 1, ok, 2, vals, lens, 2, bad);
    c = dup_exact(b.data, b.len);
    ck_assert_int_eq(wire_decode_bind(c, b.len, &x, &err), -1);
    ck_assert_error(&err, "22023");
    free(c);
    buf_free(&b);

    bind_body(&b, "", "", 0, NULL, 0, NULL, NULL, 1, neg);
    c = dup_exact(b.data, b.len);
    ck_assert_int_eq(wire_decode_bind(c, b.len, &x, &err), -1);
    ck_assert_str_eq(err.message, "unsupported format code: -1");
    ck_assert_error(&err, "22023");
    free(c);
    buf_free(&b);
}
END_TEST

START_TEST(bind_negative_value_length)
{
    static const char *const vals[] = { NULL };
    WireBind x;
    RqError err = {0};
    Buf b;
    for (int32_t l = -2; l >= -3; l--) {
        int32_t lens[] = { l };
        bind_body(&b, "", "", 0, NULL, 1, vals, lens, 0, NULL);
        uint8_t *c = dup_exact(b.data, b.len);
        ck_assert_int_eq(wire_decode_bind(c, b.len, &x, &err), -1);
        ck_assert_error(&err, "08P01");
        free(c);
        buf_free(&b);
    }
    int32_t lens[] = { INT32_MIN };
    bind_body(&b, "", "", 0, NULL, 1, vals, lens, 0, NULL);
    uint8_t *c = dup_exact(b.data, b.len);
    ck_assert_int_eq(wire_decode_bind(c, b.len, &x, &err), -1);
    ck_assert_error(&err, "08P01");
    free(c);
    buf_free(&b);
}
END_TEST

START_TEST(bind_value_longer_than_body)
{
    WireBind x;
    RqError err = {0};
    Buf b;
    buf_init(&b);
    buf_append(&b, LIT("\0\0"));
    put_i16(&b, 0);
    put_i16(&b, 1);
    put_i32(&b, 0x7fffffff);
    buf_append(&b, LIT("abc"));
    put_i16(&b, 0);
    uint8_t *c = dup_exact(b.data, b.len);
    ck_assert_int_eq(wire_decode_bind(c, b.len, &x, &err), -1);
    ck_assert_error(&err, "08P01");
    free(c);
    buf_free(&b);
}
END_TEST

START_TEST(bind_negative_counts)
{
    /* -1 reads as 65535, and the body holds none of those entries */
    WireBind x;
    RqError err = {0};
    for (int which = 0; which < 3; which++) {
        Buf b;
        buf_init(&b);
        buf_append(&b, LIT("\0\0"));
        put_i16(&b, which == 0 ? -1 : 0);
        put_i16(&b, which == 1 ? -1 : 0);
        put_i16(&b, which == 2 ? -1 : 0);
        uint8_t *c = dup_exact(b.data, b.len);
        ck_assert_int_eq(wire_decode_bind(c, b.len, &x, &err), -1);
        ck_assert_error(&err, "08P01");
        free(c);
        buf_free(&b);
    }
}
END_TEST

START_TEST(bind_count_above_int16)
{
    /* Regression: see parse_count_above_int16.  65535 parameters, one binary
     * format for all of them, 40000 result formats. */
    static const int16_t one[] = { 1 };
    Buf b;
    buf_init(&b);
    buf_append(&b, LIT("\0big\0"));
    put_i16(&b, 1);
    put_i16(&b, one[0]);
    put_i16(&b, (int16_t)65535);
    for (uint32_t i = 0; i < 65535; i++) {
        if (i % 2) {
            put_i32(&b, -1);
        } else {
            put_i32(&b, 4);
            put_i32(&b, (int32_t)i);
        }
    }
    put_i16(&b, (int16_t)40000);
    for (int i = 0; i < 40000; i++) put_i16(&b, (int16_t)(i % 2));
    uint8_t *c = dup_exact(b.data, b.len);
    WireBind x;
    RqError err = {0};
    ck_assert_int_eq(wire_decode_bind(c, b.len, &x, &err), 0);
    ck_assert_no_error(&err);
    ck_assert_uint_eq(x.n_params, 65535);
    ck_assert_uint_eq(x.n_result_formats, 40000);
    ck_assert_int_eq(wire_format_at(x.formats, x.n_formats, 65534), 1);
    ck_assert_int_eq(wire_format_at(x.result_formats, x.n_result_formats, 39999), 1);

    WireParamIter it;
    const uint8_t *v;
    int32_t len;
    wire_bind_params_begin(&x, &it);
    for (uint32_t i = 0; i < 65535; i++) {
        ck_assert_int_eq(wire_bind_param_next(&it, &v, &len), 0);
        if (i % 2) {
            ck_assert_int_eq(len, -1);
        } else {
            ck_assert_int_eq(len, 4);
            ck_assert_uint_eq(wire_oid_at(v, 0), i);
        }
    }
    ck_assert_int_eq(wire_bind_param_next(&it, &v, &len), -1);
    free(c);
    buf_free(&b);
}
END_TEST

/* ---- Describe / Close / Execute / Query / SASLInitialResponse ---- */

START_TEST(describe_and_close)
{
    WireDescribe d;
    RqError err = {0};
    uint8_t *c = dup_exact("Ss1", 4);
    ck_assert_int_eq(wire_decode_describe(c, 4, &d, &err), 0);
    ck_assert_int_eq(d.kind, 'S');
    ck_assert_str_eq(d.name, "s1");
    ck_assert_int_eq(wire_decode_close(c, 4, &d, &err), 0);
    ck_assert_int_eq(d.kind, 'S');
    free(c);
    c = dup_exact("P", 2);
    ck_assert_int_eq(wire_decode_describe(c, 2, &d, &err), 0);
    ck_assert_int_eq(d.kind, 'P');
    ck_assert_str_eq(d.name, "");
    ck_assert_int_eq(wire_decode_close(c, 2, &d, &err), 0);
    ck_assert_int_eq(d.kind, 'P');
    free(c);
    ck_assert_no_error(&err);

    Buf b;
    buf_init(&b);
    buf_append(&b, LIT("Pportal\0"));
    assert_truncations_fail(dec_describe, &b);
    assert_truncations_fail(dec_close, &b);
    buf_free(&b);
}
END_TEST

START_TEST(describe_bad_subtype)
{
    WireDescribe d;
    RqError err = {0};
    uint8_t *c = dup_exact("Xname", 6);
    ck_assert_int_eq(wire_decode_describe(c, 6, &d, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.message, "Describe"));
    ck_assert_ptr_nonnull(strstr(err.message, "subtype"));
    ck_assert_error(&err, "08P01");
    ck_assert_int_eq(wire_decode_close(c, 6, &d, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.message, "Close"));
    ck_assert_error(&err, "08P01");
    c[0] = 's';
    ck_assert_int_eq(wire_decode_close(c, 6, &d, &err), -1);
    ck_assert_error(&err, "08P01");
    free(c);
}
END_TEST

START_TEST(execute)
{
    Buf b;
    buf_init(&b);
    buf_append(&b, LIT("p1\0"));
    put_i32(&b, 100);
    uint8_t *c = dup_exact(b.data, b.len);
    WireExecute x;
    RqError err = {0};
    ck_assert_int_eq(wire_decode_execute(c, b.len, &x, &err), 0);
    ck_assert_str_eq(x.portal, "p1");
    ck_assert_int_eq(x.max_rows, 100);
    free(c);
    assert_truncations_fail(dec_execute, &b);
    buf_free(&b);

    static const uint8_t all[] = { 0, 0, 0, 0, 0 };
    ck_assert_int_eq(wire_decode_execute(all, sizeof all, &x, &err), 0);
    ck_assert_str_eq(x.portal, "");
    ck_assert_int_eq(x.max_rows, 0);
    ck_assert_no_error(&err);
}
END_TEST

START_TEST(query)
{
    Buf b;
    buf_init(&b);
    buf_append(&b, LIT("SELECT 'a;b'; SELECT 2\0"));
    uint8_t *c = dup_exact(b.data, b.len);
    const char *sql;
    RqError err = {0};
    ck_assert_int_eq(wire_decode_query(c, b.len, &sql, &err), 0);
    ck_assert_str_eq(sql, "SELECT 'a;b'; SELECT 2");
    free(c);
    assert_truncations_fail(dec_query, &b);
    buf_free(&b);

    /* an empty query string is valid (EmptyQueryResponse is the session's job) */
    c = dup_exact("", 1);
    ck_assert_int_eq(wire_decode_query(c, 1, &sql, &err), 0);
    ck_assert_str_eq(sql, "");
    free(c);
    /* an embedded NUL would hide the rest of the statement from the router */
    c = dup_exact("SELECT 1\0DROP TABLE t", 22);
    ck_assert_int_eq(wire_decode_query(c, 22, &sql, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.message, "Query"));
    ck_assert_error(&err, "08P01");
    free(c);
}
END_TEST

START_TEST(sasl_initial)
{
    Buf b;
    buf_init(&b);
    buf_append(&b, LIT("SCRAM-SHA-256\0"));
    put_i32(&b, 5);
    buf_append(&b, LIT("n,,n="));
    uint8_t *c = dup_exact(b.data, b.len);
    const char *mech;
    const uint8_t *data;
    size_t dl;
    RqError err = {0};
    ck_assert_int_eq(wire_decode_sasl_initial(c, b.len, &mech, &data, &dl, &err), 0);
    ck_assert_str_eq(mech, "SCRAM-SHA-256");
    ck_assert_uint_eq(dl, 5);
    ck_assert_ptr_eq(data, c + 18);
    ck_assert_mem_eq(data, "n,,n=", 5);
    free(c);
    assert_truncations_fail(dec_sasl, &b);
    buf_free(&b);
}
END_TEST

START_TEST(sasl_initial_no_data)
{
    Buf b;
    buf_init(&b);
    buf_append(&b, LIT("SCRAM-SHA-256\0"));
    put_i32(&b, -1);
    uint8_t *c = dup_exact(b.data, b.len);
    const char *mech;
    const uint8_t *data = (const uint8_t *)"junk";
    size_t dl = 99;
    RqError err = {0};
    ck_assert_int_eq(wire_decode_sasl_initial(c, b.len, &mech, &data, &dl, &err), 0);
    ck_assert_str_eq(mech, "SCRAM-SHA-256");
    ck_assert_ptr_null(data);
    ck_assert_uint_eq(dl, 0);
    free(c);
    buf_free(&b);

    /* zero-length data is present-but-empty, unlike -1 */
    buf_init(&b);
    buf_append(&b, LIT("X\0"));
    put_i32(&b, 0);
    c = dup_exact(b.data, b.len);
    ck_assert_int_eq(wire_decode_sasl_initial(c, b.len, &mech, &data, &dl, &err), 0);
    ck_assert_ptr_nonnull(data);
    ck_assert_uint_eq(dl, 0);
    free(c);
    buf_free(&b);
    ck_assert_no_error(&err);
}
END_TEST

START_TEST(sasl_initial_bad_length)
{
    const char *mech;
    const uint8_t *data;
    size_t dl;
    RqError err = {0};
    static const int32_t bad[] = { -2, INT32_MIN, 4, 0x7fffffff };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        Buf b;
        buf_init(&b);
        buf_append(&b, LIT("M\0"));
        put_i32(&b, bad[i]);
        buf_append(&b, LIT("abc"));
        uint8_t *c = dup_exact(b.data, b.len);
        ck_assert_int_eq(wire_decode_sasl_initial(c, b.len, &mech, &data, &dl, &err), -1);
        ck_assert_error(&err, "08P01");
        free(c);
        buf_free(&b);
    }
}
END_TEST

/* ---- encoding ---- */

START_TEST(encode_auth)
{
    Buf b;
    buf_init(&b);
    wire_auth(&b, 0, NULL, 0);
    wire_auth(&b, 5, "\x01\x02\x03\x04", 4);
    wire_auth(&b, 10, "SCRAM-SHA-256\0\0", 15);
    size_t off = expect_msg(&b, 0, 'R', LIT("\0\0\0\0"));
    off = expect_msg(&b, off, 'R', LIT("\0\0\0\5\x01\x02\x03\x04"));
    off = expect_msg(&b, off, 'R', LIT("\0\0\0\x0a" "SCRAM-SHA-256\0\0"));
    ck_assert_uint_eq(off, b.len);
    ck_assert_uint_eq(b.len, 9 + 13 + 24);
    ck_assert_mem_eq(b.data, "R\0\0\0\x08\0\0\0\0", 9);
    buf_free(&b);
}
END_TEST

START_TEST(encode_parameter_status_backend_key_ready)
{
    Buf b;
    buf_init(&b);
    wire_parameter_status(&b, "client_encoding", "UTF8");
    wire_parameter_status(&b, "application_name", "");
    wire_backend_key(&b, 1234, -2);
    wire_ready(&b, 'I');
    wire_ready(&b, 'T');
    wire_ready(&b, 'E');
    size_t off = expect_msg(&b, 0, 'S', LIT("client_encoding\0UTF8\0"));
    off = expect_msg(&b, off, 'S', LIT("application_name\0\0"));
    off = expect_msg(&b, off, 'K', LIT("\0\0\x04\xd2\xff\xff\xff\xfe"));
    off = expect_msg(&b, off, 'Z', LIT("I"));
    off = expect_msg(&b, off, 'Z', LIT("T"));
    off = expect_msg(&b, off, 'Z', LIT("E"));
    ck_assert_uint_eq(off, b.len);
    ck_assert_mem_eq(b.data, "S\0\0\0\x19" "client_encoding", 20);
    buf_free(&b);
}
END_TEST

START_TEST(encode_error_all_fields)
{
    RqError e = {0};
    rq_error_set(&e, "42601", "syntax error at or near \"%s\"", "FROM");
    rq_error_detail(&e, "some detail");
    rq_error_hint(&e, "some hint");
    e.position = 123;
    Buf b;
    buf_init(&b);
    wire_error(&b, &e);
    size_t off = expect_msg(&b, 0, 'E', LIT(
        "SERROR\0" "VERROR\0" "C42601\0" "Msyntax error at or near \"FROM\"\0"
        "Dsome detail\0" "Hsome hint\0" "P123\0" "\0"));
    ck_assert_uint_eq(off, b.len);

    /* a FATAL error keeps its severity in both the localized and raw field */
    buf_reset(&b);
    rq_error_fatal(&e);
    e.position = 0;
    free(e.detail);
    e.detail = NULL;
    wire_error(&b, &e);
    off = expect_msg(&b, 0, 'E', LIT(
        "SFATAL\0" "VFATAL\0" "C42601\0" "Msyntax error at or near \"FROM\"\0"
        "Hsome hint\0" "\0"));
    ck_assert_uint_eq(off, b.len);
    rq_error_free(&e);
    buf_free(&b);
}
END_TEST

START_TEST(encode_error_defaults)
{
    /* an error someone forgot to fill must still be a valid ErrorResponse */
    RqError e = {0};
    Buf b;
    buf_init(&b);
    wire_error(&b, &e);
    size_t off = expect_msg(&b, 0, 'E', LIT(
        "SERROR\0" "VERROR\0" "CXX000\0" "Munknown error\0" "\0"));
    ck_assert_uint_eq(off, b.len);
    buf_free(&b);
}
END_TEST

START_TEST(encode_notice)
{
    RqError e = {0};
    rq_error_set(&e, "00000", "there is no transaction in progress");
    Buf b;
    buf_init(&b);
    wire_notice(&b, &e);
    rq_error_set(&e, "25P01", "there is no transaction in progress");
    e.severity = strdup("WARNING");
    wire_notice(&b, &e);
    size_t off = expect_msg(&b, 0, 'N', LIT(
        "SNOTICE\0" "VNOTICE\0" "C00000\0" "Mthere is no transaction in progress\0" "\0"));
    off = expect_msg(&b, off, 'N', LIT(
        "SWARNING\0" "VWARNING\0" "C25P01\0" "Mthere is no transaction in progress\0" "\0"));
    ck_assert_uint_eq(off, b.len);
    rq_error_free(&e);
    buf_free(&b);
}
END_TEST

START_TEST(encode_command_complete_and_simple)
{
    static const uint8_t types[] = { '1', '2', '3', 'n', 's', 'I' };
    Buf b;
    buf_init(&b);
    wire_command_complete(&b, "SELECT 1");
    wire_command_complete(&b, "INSERT 0 5");
    for (size_t i = 0; i < sizeof types; i++) wire_simple(&b, types[i]);
    size_t off = expect_msg(&b, 0, 'C', LIT("SELECT 1\0"));
    off = expect_msg(&b, off, 'C', LIT("INSERT 0 5\0"));
    for (size_t i = 0; i < sizeof types; i++) {
        ck_assert_int_eq((uint8_t)b.data[off], types[i]);
        ck_assert_mem_eq(b.data + off + 1, "\0\0\0\4", 4);
        off = expect_msg(&b, off, types[i], NULL, 0);
    }
    ck_assert_uint_eq(off, b.len);
    ck_assert_uint_eq(b.len, 14 + 16 + 5 * sizeof types);
    buf_free(&b);
}
END_TEST

START_TEST(encode_parameter_description)
{
    static const uint32_t oids[] = { 23, 25, 0xfffffffe };
    Buf b;
    buf_init(&b);
    wire_parameter_description(&b, oids, 3);
    wire_parameter_description(&b, NULL, 0);
    size_t off = expect_msg(&b, 0, 't', LIT(
        "\0\3" "\0\0\0\x17" "\0\0\0\x19" "\xff\xff\xff\xfe"));
    off = expect_msg(&b, off, 't', LIT("\0\0"));
    ck_assert_uint_eq(off, b.len);
    buf_free(&b);
}
END_TEST

START_TEST(encode_negotiate_protocol)
{
    static const char *const opts[] = { "_pq_.foo", "_pq_.bar" };
    Buf b;
    buf_init(&b);
    wire_negotiate_protocol(&b, 0, opts, 2);
    wire_negotiate_protocol(&b, 2, NULL, 0);
    size_t off = expect_msg(&b, 0, 'v', LIT(
        "\0\0\0\0" "\0\0\0\2" "_pq_.foo\0" "_pq_.bar\0"));
    off = expect_msg(&b, off, 'v', LIT("\0\0\0\2" "\0\0\0\0"));
    ck_assert_uint_eq(off, b.len);
    buf_free(&b);
}
END_TEST

START_TEST(encode_row_description)
{
    static const WireField f[] = {
        { "id", 16384, 1, 23, 4, -1, 0 },
        { "name", 0, 0, 25, -1, 36, 1 },
    };
    Buf b;
    buf_init(&b);
    wire_row_description(&b, f, 2);
    wire_row_description(&b, NULL, 0);
    size_t off = expect_msg(&b, 0, 'T', LIT(
        "\0\2"
        "id\0" "\0\0\x40\0" "\0\1" "\0\0\0\x17" "\0\4" "\xff\xff\xff\xff" "\0\0"
        "name\0" "\0\0\0\0" "\0\0" "\0\0\0\x19" "\xff\xff" "\0\0\0\x24" "\0\1"));
    off = expect_msg(&b, off, 'T', LIT("\0\0"));
    ck_assert_uint_eq(off, b.len);
    buf_free(&b);
}
END_TEST

START_TEST(encode_data_row)
{
    Buf b;
    buf_init(&b);
    size_t m = wire_row_begin(&b, 4);
    wire_row_value(&b, "42", 2);
    wire_row_value(&b, NULL, -1);
    wire_row_value(&b, "", 0);
    wire_row_value(&b, "x\0y", 3);
    wire_end(&b, m);
    m = wire_row_begin(&b, 0);
    wire_end(&b, m);
    size_t off = expect_msg(&b, 0, 'D', LIT(
        "\0\4" "\0\0\0\2" "42" "\xff\xff\xff\xff" "\0\0\0\0" "\0\0\0\3" "x\0y"));
    off = expect_msg(&b, off, 'D', LIT("\0\0"));
    ck_assert_uint_eq(off, b.len);
    buf_free(&b);
}
END_TEST

START_TEST(encode_appends_after_existing_bytes)
{
    /* wire_end patches a length relative to where its message began, so a
     * response built behind unsent bytes must frame exactly like a fresh one */
    static const WireField f[] = { { "?column?", 0, 0, 23, 4, -1, 0 } };
    Buf b;
    buf_init(&b);
    buf_append(&b, "leftover", 8);
    wire_row_description(&b, f, 1);
    size_t m = wire_row_begin(&b, 1);
    wire_row_value(&b, "1", 1);
    wire_end(&b, m);
    wire_command_complete(&b, "SELECT 1");
    wire_ready(&b, 'I');

    static const uint8_t order[] = { 'T', 'D', 'C', 'Z' };
    size_t off = 8;
    RqError err = {0};
    for (size_t i = 0; i < sizeof order; i++) {
        uint8_t t;
        const uint8_t *body;
        size_t bl, total;
        ck_assert_int_eq(wire_frame((uint8_t *)b.data + off, b.len - off, 1024,
                                    &t, &body, &bl, &total, &err), 1);
        ck_assert_int_eq(t, order[i]);
        off += total;
    }
    ck_assert_uint_eq(off, b.len);
    ck_assert_mem_eq(b.data, "leftover", 8);
    buf_free(&b);
}
END_TEST

/* ---- a pipelined extended-query batch, framed and decoded the way the
 *      server loop will see it (bodies by hand, headers via wire_begin/end,
 *      whose framing encode_* above already pinned to literal bytes) ---- */

START_TEST(pipelined_extended_query)
{
    Buf b;
    buf_init(&b);
    size_t m = wire_begin(&b, 'P');
    buf_append(&b, LIT("\0SELECT $1::int\0"));
    put_i16(&b, 1);
    put_i32(&b, 23);
    wire_end(&b, m);
    m = wire_begin(&b, 'B');
    buf_append(&b, LIT("\0\0"));
    put_i16(&b, 0);
    put_i16(&b, 1);
    put_i32(&b, 1);
    buf_append_byte(&b, '7');
    put_i16(&b, 0);
    wire_end(&b, m);
    m = wire_begin(&b, 'D');
    buf_append(&b, LIT("P\0"));
    wire_end(&b, m);
    m = wire_begin(&b, 'E');
    buf_append(&b, LIT("\0"));
    put_i32(&b, 0);
    wire_end(&b, m);
    wire_simple(&b, 'S');

    uint8_t *c = dup_exact(b.data, b.len);
    size_t off = 0;
    int seen = 0;
    RqError err = {0};
    for (;;) {
        uint8_t t;
        const uint8_t *body;
        size_t bl, total;
        int rc = wire_frame(c + off, b.len - off, 1 << 20, &t, &body, &bl, &total, &err);
        if (rc == 0) break;
        ck_assert_int_eq(rc, 1);
        switch (seen++) {
        case 0: {
            WireParse p;
            ck_assert_int_eq(t, 'P');
            ck_assert_int_eq(wire_decode_parse(body, bl, &p, &err), 0);
            ck_assert_str_eq(p.query, "SELECT $1::int");
            ck_assert_uint_eq(wire_oid_at(p.types, 0), 23);
            break;
        }
        case 1: {
            WireBind x;
            WireParamIter it;
            const uint8_t *v;
            int32_t len;
            ck_assert_int_eq(t, 'B');
            ck_assert_int_eq(wire_decode_bind(body, bl, &x, &err), 0);
            wire_bind_params_begin(&x, &it);
            ck_assert_int_eq(wire_bind_param_next(&it, &v, &len), 0);
            ck_assert_int_eq(len, 1);
            ck_assert_int_eq(v[0], '7');
            break;
        }
        case 2: {
            WireDescribe d;
            ck_assert_int_eq(t, 'D');
            ck_assert_int_eq(wire_decode_describe(body, bl, &d, &err), 0);
            ck_assert_int_eq(d.kind, 'P');
            break;
        }
        case 3: {
            WireExecute x;
            ck_assert_int_eq(t, 'E');
            ck_assert_int_eq(wire_decode_execute(body, bl, &x, &err), 0);
            ck_assert_int_eq(x.max_rows, 0);
            break;
        }
        case 4:
            ck_assert_int_eq(t, 'S');
            ck_assert_uint_eq(bl, 0);
            break;
        }
        off += total;
    }
    ck_assert_int_eq(seen, 5);
    ck_assert_uint_eq(off, b.len);
    ck_assert_no_error(&err);
    free(c);
    buf_free(&b);
}
END_TEST

static Suite *wire_suite(void)
{
    Suite *s = suite_create("wire");
    TCase *tc;

    tc = tcase_create("reader");
    tcase_add_test(tc, reader_reads_each_width);
    tcase_add_test(tc, reader_past_end_latches);
    tcase_add_test(tc, reader_each_width_one_short);
    tcase_add_test(tc, reader_huge_byte_count_fails);
    tcase_add_test(tc, reader_string_without_nul_fails);
    tcase_add_test(tc, reader_string_at_end_fails);
    tcase_add_test(tc, reader_empty_null_buffer);
    tcase_add_test(tc, reader_end_fails_on_leftover);
    suite_add_tcase(s, tc);

    tc = tcase_create("frame");
    tcase_add_test(tc, frame_needs_more_at_every_truncation);
    tcase_add_test(tc, frame_exact_message);
    tcase_add_test(tc, frame_empty_body);
    tcase_add_test(tc, frame_back_to_back);
    tcase_add_test(tc, frame_length_below_four);
    tcase_add_test(tc, frame_length_over_max);
    tcase_add_test(tc, frame_replaces_previous_error);
    tcase_add_test(tc, frame_startup_too_short);
    tcase_add_test(tc, frame_startup_too_long);
    tcase_add_test(tc, frame_startup_max_is_allowed);
    tcase_add_test(tc, frame_startup_exact);
    suite_add_tcase(s, tc);

    tc = tcase_create("startup");
    tcase_add_test(tc, startup_message);
    tcase_add_test(tc, startup_minor_version_and_no_params);
    tcase_add_test(tc, startup_old_protocol_left_to_caller);
    tcase_add_test(tc, startup_ssl_gss_requests);
    tcase_add_test(tc, startup_cancel_request);
    tcase_add_test(tc, startup_missing_terminator);
    tcase_add_test(tc, startup_param_limit);
    tcase_add_test(tc, startup_trailing_bytes);
    suite_add_tcase(s, tc);

    tc = tcase_create("decode");
    tcase_add_test(tc, parse_with_types);
    tcase_add_test(tc, parse_unnamed_no_types);
    tcase_add_test(tc, parse_negative_count);
    tcase_add_test(tc, parse_count_above_int16);
    tcase_add_test(tc, parse_count_exceeds_body);
    tcase_add_test(tc, bind_full);
    tcase_add_test(tc, bind_single_format_applies_to_all);
    tcase_add_test(tc, bind_no_params);
    tcase_add_test(tc, format_at_rule);
    tcase_add_test(tc, bind_format_count_mismatch);
    tcase_add_test(tc, bind_bad_format_code);
    tcase_add_test(tc, bind_negative_value_length);
    tcase_add_test(tc, bind_value_longer_than_body);
    tcase_add_test(tc, bind_negative_counts);
    tcase_add_test(tc, bind_count_above_int16);
    tcase_add_test(tc, describe_and_close);
    tcase_add_test(tc, describe_bad_subtype);
    tcase_add_test(tc, execute);
    tcase_add_test(tc, query);
    tcase_add_test(tc, sasl_initial);
    tcase_add_test(tc, sasl_initial_no_data);
    tcase_add_test(tc, sasl_initial_bad_length);
    tcase_add_test(tc, pipelined_extended_query);
    suite_add_tcase(s, tc);

    tc = tcase_create("encode");
    tcase_add_test(tc, encode_auth);
    tcase_add_test(tc, encode_parameter_status_backend_key_ready);
    tcase_add_test(tc, encode_error_all_fields);
    tcase_add_test(tc, encode_error_defaults);
    tcase_add_test(tc, encode_notice);
    tcase_add_test(tc, encode_command_complete_and_simple);
    tcase_add_test(tc, encode_parameter_description);
    tcase_add_test(tc, encode_negotiate_protocol);
    tcase_add_test(tc, encode_row_description);
    tcase_add_test(tc, encode_data_row);
    tcase_add_test(tc, encode_appends_after_existing_bytes);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(wire_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
