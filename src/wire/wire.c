/*
 * Postgres v3 protocol codec (server side).  See include/riffq/wire.h.
 *
 * Decoding never trusts a length: every read goes through the WireReader,
 * which latches an error instead of running past the message, and every
 * decoder finishes with wire_reader_end so trailing garbage is an error too.
 * Encoding appends to a Buf with the length patched in at wire_end, so
 * callers build variable-length bodies without computing sizes up front.
 */
#include <stdio.h>
#include <string.h>
#include "riffq/wire.h"

void wire_reader_init(WireReader *r, const void *data, size_t len)
{
    r->p = data;
    r->len = len;
    r->pos = 0;
    r->err = 0;
}

static int need(WireReader *r, size_t n)
{
    if (r->err || r->len - r->pos < n) {
        r->err = 1;
        return 0;
    }
    return 1;
}

uint8_t wire_get_u8(WireReader *r)
{
    if (!need(r, 1)) return 0;
    return r->p[r->pos++];
}

int16_t wire_get_i16(WireReader *r)
{
    if (!need(r, 2)) return 0;
    const uint8_t *p = r->p + r->pos;
    r->pos += 2;
    return (int16_t)((p[0] << 8) | p[1]);
}

int32_t wire_get_i32(WireReader *r)
{
    if (!need(r, 4)) return 0;
    const uint8_t *p = r->p + r->pos;
    r->pos += 4;
    return (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
                     ((uint32_t)p[2] << 8) | p[3]);
}

const char *wire_get_str(WireReader *r)
{
    /* Checked before any pointer is formed: an empty body may be (NULL, 0),
     * and NULL + 0 or memchr(NULL, 0, 0) is undefined behaviour. */
    if (r->err || r->pos >= r->len) {
        r->err = 1;
        return "";
    }
    const uint8_t *start = r->p + r->pos;
    const uint8_t *nul = memchr(start, 0, r->len - r->pos);
    if (!nul) {
        r->err = 1;
        return "";
    }
    r->pos += (size_t)(nul - start) + 1;
    return (const char *)start;
}

const uint8_t *wire_get_bytes(WireReader *r, size_t n)
{
    if (!need(r, n)) return NULL;
    const uint8_t *p = r->p + r->pos;
    r->pos += n;
    return p;
}

int wire_reader_end(const WireReader *r)
{
    return (r->err || r->pos != r->len) ? -1 : 0;
}

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

int wire_frame(const uint8_t *data, size_t len, size_t max,
               uint8_t *type, const uint8_t **body, size_t *body_len,
               size_t *total, RqError *err)
{
    if (len < 5) return 0;
    uint32_t mlen = be32(data + 1);
    if (mlen < 4) {
        rq_error_set(err, "08P01", "invalid message length %u", mlen);
        return -1;
    }
    if ((size_t)mlen - 4 > max) {
        rq_error_set(err, "08P01", "message of %u bytes exceeds the limit of %zu bytes",
                     mlen, max);
        rq_error_hint(err, "Raise limits.max_message_size in the route file if this is expected.");
        return -1;
    }
    if (len < (size_t)mlen + 1) return 0;
    *type = data[0];
    *body = data + 5;
    *body_len = mlen - 4;
    *total = (size_t)mlen + 1;
    return 1;
}

int wire_frame_startup(const uint8_t *data, size_t len,
                       const uint8_t **body, size_t *body_len,
                       size_t *total, RqError *err)
{
    if (len < 4) return 0;
    uint32_t mlen = be32(data);
    if (mlen < 8 || mlen > WIRE_MAX_STARTUP) {
        rq_error_set(err, "08P01", "invalid length of startup packet");
        return -1;
    }
    if (len < mlen) return 0;
    *body = data + 4;
    *body_len = mlen - 4;
    *total = mlen;
    return 1;
}

static int malformed(RqError *err, const char *what)
{
    rq_error_set(err, "08P01", "invalid %s message format", what);
    return -1;
}

int wire_decode_startup(const uint8_t *body, size_t len, WireStartup *out, RqError *err)
{
    WireReader r;
    memset(out, 0, sizeof *out);
    wire_reader_init(&r, body, len);
    out->code = wire_get_i32(&r);
    if (r.err) return malformed(err, "startup packet");
    if (out->code == WIRE_CANCEL_CODE) {
        out->cancel_pid = wire_get_i32(&r);
        out->cancel_key = wire_get_i32(&r);
        return wire_reader_end(&r) ? malformed(err, "cancel request") : 0;
    }
    if (out->code == WIRE_SSL_CODE || out->code == WIRE_GSSENC_CODE)
        return wire_reader_end(&r) ? malformed(err, "startup packet") : 0;
    if ((out->code >> 16) != 3)
        return 0;   /* caller reports the unsupported protocol with the version */
    /* name/value pairs, terminated by an empty name */
    for (;;) {
        const char *k = wire_get_str(&r);
        if (r.err) return malformed(err, "startup packet");
        if (*k == '\0') break;
        const char *v = wire_get_str(&r);
        if (r.err) return malformed(err, "startup packet");
        if (out->n_params == sizeof out->keys / sizeof out->keys[0]) {
            rq_error_set(err, "08P01", "too many parameters in startup packet");
            return -1;
        }
        out->keys[out->n_params] = k;
        out->vals[out->n_params] = v;
        out->n_params++;
    }
    return wire_reader_end(&r) ? malformed(err, "startup packet") : 0;
}

/* Counts in Parse and Bind are unsigned in practice: Postgres reads them with
 * pq_getmsgint(msg, 2), which zero-extends, and libpq sends up to 65535
 * parameters (PQ_QUERY_PARAM_MAX_LIMIT).  Treating 32768..65535 as negative
 * would reject statements that Postgres itself accepts. */
static uint16_t get_count(WireReader *r)
{
    return (uint16_t)wire_get_i16(r);
}

uint32_t wire_oid_at(const uint8_t *p, size_t i)
{
    return be32(p + 4 * i);
}

int wire_decode_parse(const uint8_t *body, size_t len, WireParse *out, RqError *err)
{
    WireReader r;
    wire_reader_init(&r, body, len);
    out->name = wire_get_str(&r);
    out->query = wire_get_str(&r);
    out->n_types = get_count(&r);
    out->types = wire_get_bytes(&r, 4 * (size_t)out->n_types);
    return wire_reader_end(&r) ? malformed(err, "Parse") : 0;
}

int wire_decode_bind(const uint8_t *body, size_t len, WireBind *out, RqError *err)
{
    WireReader r;
    wire_reader_init(&r, body, len);
    out->portal = wire_get_str(&r);
    out->stmt = wire_get_str(&r);
    out->n_formats = get_count(&r);
    out->formats = wire_get_bytes(&r, 2 * (size_t)out->n_formats);
    out->n_params = get_count(&r);
    out->params = r.err ? NULL : r.p + r.pos;
    for (uint16_t i = 0; i < out->n_params && !r.err; i++) {
        int32_t vlen = wire_get_i32(&r);
        if (vlen < -1) r.err = 1;
        else if (vlen > 0) wire_get_bytes(&r, (size_t)vlen);
    }
    out->params_len = r.err ? 0 : (size_t)(r.p + r.pos - out->params);
    out->n_result_formats = get_count(&r);
    out->result_formats = wire_get_bytes(&r, 2 * (size_t)out->n_result_formats);
    if (wire_reader_end(&r)) return malformed(err, "Bind");
    if (out->n_formats > 1 && out->n_formats != out->n_params) {
        rq_error_set(err, "08P01", "bind message has %u parameter formats but %u parameters",
                     out->n_formats, out->n_params);
        return -1;
    }
    for (uint16_t i = 0; i < out->n_formats; i++) {
        int16_t f = (int16_t)((out->formats[2 * i] << 8) | out->formats[2 * i + 1]);
        if (f != 0 && f != 1) {
            rq_error_set(err, "22023", "unsupported format code: %d", f);
            return -1;
        }
    }
    for (uint16_t i = 0; i < out->n_result_formats; i++) {
        int16_t f = (int16_t)((out->result_formats[2 * i] << 8) | out->result_formats[2 * i + 1]);
        if (f != 0 && f != 1) {
            rq_error_set(err, "22023", "unsupported format code: %d", f);
            return -1;
        }
    }
    return 0;
}

void wire_bind_params_begin(const WireBind *b, WireParamIter *it)
{
    wire_reader_init(&it->r, b->params, b->params_len);
}

int wire_bind_param_next(WireParamIter *it, const uint8_t **v, int32_t *len)
{
    *len = wire_get_i32(&it->r);
    *v = NULL;
    if (*len > 0) *v = wire_get_bytes(&it->r, (size_t)*len);
    return it->r.err ? -1 : 0;
}

int16_t wire_format_at(const uint8_t *formats, uint16_t n, size_t i)
{
    if (n == 0) return 0;
    if (n == 1) i = 0;
    else if (i >= n) return 0;
    return (int16_t)((formats[2 * i] << 8) | formats[2 * i + 1]);
}

static int decode_kind_name(const uint8_t *body, size_t len, WireDescribe *out,
                            RqError *err, const char *what)
{
    WireReader r;
    wire_reader_init(&r, body, len);
    out->kind = wire_get_u8(&r);
    out->name = wire_get_str(&r);
    if (wire_reader_end(&r)) return malformed(err, what);
    if (out->kind != 'S' && out->kind != 'P') {
        rq_error_set(err, "08P01", "invalid %s message subtype %d", what, out->kind);
        return -1;
    }
    return 0;
}

int wire_decode_describe(const uint8_t *body, size_t len, WireDescribe *out, RqError *err)
{
    return decode_kind_name(body, len, out, err, "Describe");
}

int wire_decode_close(const uint8_t *body, size_t len, WireClose *out, RqError *err)
{
    return decode_kind_name(body, len, out, err, "Close");
}

int wire_decode_execute(const uint8_t *body, size_t len, WireExecute *out, RqError *err)
{
    WireReader r;
    wire_reader_init(&r, body, len);
    out->portal = wire_get_str(&r);
    out->max_rows = wire_get_i32(&r);
    return wire_reader_end(&r) ? malformed(err, "Execute") : 0;
}

int wire_decode_query(const uint8_t *body, size_t len, const char **sql, RqError *err)
{
    WireReader r;
    wire_reader_init(&r, body, len);
    *sql = wire_get_str(&r);
    return wire_reader_end(&r) ? malformed(err, "Query") : 0;
}

int wire_decode_sasl_initial(const uint8_t *body, size_t len, const char **mech,
                             const uint8_t **data, size_t *data_len, RqError *err)
{
    WireReader r;
    wire_reader_init(&r, body, len);
    *mech = wire_get_str(&r);
    int32_t n = wire_get_i32(&r);
    if (n < -1) r.err = 1;
    if (n == -1) {
        *data = NULL;
        *data_len = 0;
    } else {
        *data = wire_get_bytes(&r, (size_t)n);
        *data_len = (size_t)n;
    }
    return wire_reader_end(&r) ? malformed(err, "SASLInitialResponse") : 0;
}

/* ---- encoding ---- */

size_t wire_begin(Buf *b, uint8_t type)
{
    buf_append_byte(b, type);
    size_t off = b->len;
    buf_append_u32(b, 0);
    return off;
}

void wire_end(Buf *b, size_t off)
{
    buf_put_u32_at(b, off, (uint32_t)(b->len - off));
}

void wire_auth(Buf *b, uint32_t code, const void *extra, size_t extra_len)
{
    size_t m = wire_begin(b, 'R');
    buf_append_u32(b, code);
    buf_append(b, extra, extra_len);
    wire_end(b, m);
}

void wire_parameter_status(Buf *b, const char *name, const char *value)
{
    size_t m = wire_begin(b, 'S');
    buf_append_cstr(b, name);
    buf_append_cstr(b, value);
    wire_end(b, m);
}

void wire_backend_key(Buf *b, int32_t pid, int32_t key)
{
    size_t m = wire_begin(b, 'K');
    buf_append_u32(b, (uint32_t)pid);
    buf_append_u32(b, (uint32_t)key);
    wire_end(b, m);
}

void wire_ready(Buf *b, char status)
{
    size_t m = wire_begin(b, 'Z');
    buf_append_byte(b, (uint8_t)status);
    wire_end(b, m);
}

static void field(Buf *b, char code, const char *v)
{
    if (!v) return;
    buf_append_byte(b, (uint8_t)code);
    buf_append_cstr(b, v);
}

static void error_fields(Buf *b, uint8_t type, const RqError *e, const char *default_sev)
{
    size_t m = wire_begin(b, type);
    const char *sev = e->severity ? e->severity : default_sev;
    field(b, 'S', sev);
    field(b, 'V', sev);
    field(b, 'C', e->sqlstate[0] ? e->sqlstate : "XX000");
    field(b, 'M', e->message ? e->message : "unknown error");
    field(b, 'D', e->detail);
    field(b, 'H', e->hint);
    if (e->position > 0) {
        char pos[16];
        snprintf(pos, sizeof pos, "%d", e->position);
        field(b, 'P', pos);
    }
    buf_append_byte(b, 0);
    wire_end(b, m);
}

void wire_error(Buf *b, const RqError *e)
{
    error_fields(b, 'E', e, "ERROR");
}

void wire_notice(Buf *b, const RqError *e)
{
    error_fields(b, 'N', e, "NOTICE");
}

void wire_command_complete(Buf *b, const char *tag)
{
    size_t m = wire_begin(b, 'C');
    buf_append_cstr(b, tag);
    wire_end(b, m);
}

void wire_simple(Buf *b, uint8_t type)
{
    size_t m = wire_begin(b, type);
    wire_end(b, m);
}

void wire_parameter_description(Buf *b, const uint32_t *oids, size_t n)
{
    size_t m = wire_begin(b, 't');
    buf_append_u16(b, (uint16_t)n);
    for (size_t i = 0; i < n; i++) buf_append_u32(b, oids[i]);
    wire_end(b, m);
}

void wire_negotiate_protocol(Buf *b, int32_t newest, const char *const *opts, size_t n)
{
    size_t m = wire_begin(b, 'v');
    buf_append_u32(b, (uint32_t)newest);
    buf_append_u32(b, (uint32_t)n);
    for (size_t i = 0; i < n; i++) buf_append_cstr(b, opts[i]);
    wire_end(b, m);
}

void wire_row_description(Buf *b, const WireField *f, size_t n)
{
    size_t m = wire_begin(b, 'T');
    buf_append_u16(b, (uint16_t)n);
    for (size_t i = 0; i < n; i++) {
        buf_append_cstr(b, f[i].name);
        buf_append_u32(b, f[i].table_oid);
        buf_append_u16(b, (uint16_t)f[i].column);
        buf_append_u32(b, f[i].type_oid);
        buf_append_u16(b, (uint16_t)f[i].type_len);
        buf_append_u32(b, (uint32_t)f[i].type_mod);
        buf_append_u16(b, (uint16_t)f[i].format);
    }
    wire_end(b, m);
}

size_t wire_row_begin(Buf *b, uint16_t ncols)
{
    size_t m = wire_begin(b, 'D');
    buf_append_u16(b, ncols);
    return m;
}

void wire_row_value(Buf *b, const void *v, int32_t len)
{
    buf_append_u32(b, (uint32_t)len);
    if (len > 0) buf_append(b, v, (size_t)len);
}
