/*
 * Arrow results, both directions, through the Arrow C stream interface
 * (arrow.h declares the ABI; no Arrow library is linked).
 *
 * Consuming.  A handler may return anything with __arrow_c_stream__ (a
 * pyarrow Table or RecordBatchReader, a DuckDB relation, a Polars
 * DataFrame, riffq.helpers.to_arrow) or such a stream's PyCapsule itself.
 * The stream is moved out of its capsule (the capsule's struct is left
 * with release NULL, which is how the PyCapsule protocol marks a consumed
 * stream, so the capsule's destructor only frees the struct), its schema
 * maps each column's format string to a Postgres type (arrow_column_type),
 * and every ArrowArray that get_next returns -- a struct array with one
 * child per column -- is encoded straight from its buffers into DataRows,
 * in text or binary per column as the client asked.  No cell becomes a
 * Python object.  The schema, every array and the stream are released
 * exactly once, on every path; Describe reads the schema and pulls no
 * batch.
 *
 * The GIL.  get_schema, get_next and every release callback are called
 * with the GIL held.  The interface says nothing about locks, and the
 * producers that need the GIL are the ones written in or calling back into
 * Python (ctypes producers, pyarrow readers over Python iterators); they
 * take it with PyGILState_Ensure, which is reentrant, so holding it is safe
 * for them, while calling them without it would be a crash for any that
 * touches Python objects without taking it.  The cost: a producer whose
 * get_next blocks waiting for threads of its own that need the GIL would
 * deadlock; such a producer must release the GIL itself while it waits, as
 * pyarrow's do.  Encoding a batch touches only its buffers, which stay
 * valid until the array is released, so that part runs with the GIL
 * released and other handlers run meanwhile.  Batches are handed to the
 * loop with plug_handoff (backpressure), and a canceled query pulls no
 * further batch.
 *
 * Cancel.  While a stream is consumed the engine's asynchronous
 * QueryCanceled is off for this worker (quiet_interrupts): landing in a
 * producer's callback written in Python, it would abort a release callback
 * midway and leak what it had not freed yet.  A cancel still stops the
 * stream: the flag is checked before every get_next and by plug_handoff,
 * and riffq's time.sleep inside a producer still wakes with QueryCanceled.
 *
 * Producing.  riffq._ArrowBatch(columns, rows, batch_size) converts Python
 * rows once into Arrow buffers held by a reference-counted ProdData, and
 * exports them through __arrow_c_stream__ as many times as asked; every
 * exported stream and array holds a reference, so the buffers outlive the
 * Python object as long as a consumer holds them.  Release callbacks only
 * free C memory (atomically counted references), so they may run on any
 * thread, with or without the GIL, as the spec allows.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "plugin/arrow.h"
#include "plugin/plugin_internal.h"
#include "riffq/pgtypes.h"
#include "riffq/wire.h"

#define PG_EPOCH_US 946684800000000LL       /* 2000-01-01 in Unix microseconds */
#define PG_EPOCH_DAYS 10957
#define US_PER_DAY 86400000000LL
/* Postgres' ranges.  Dates (days since 1970-01-01): from 4714-11-24 BC
 * (Julian day 0) up to, not including, Julian day 2147483494.  Timestamps
 * (microseconds since 2000-01-01): from 4714-11-24 BC up to, not including,
 * 294277-01-01. */
#define PG_DATE_MIN (-2440588LL)
#define PG_DATE_END (2147483494LL - 2440588LL)
#define PG_TS_MIN (-211813488000000000LL)
#define PG_TS_END 9223371331200000000LL

static const char STREAM_CAPSULE[] = "arrow_array_stream";
static const char SCHEMA_CAPSULE[] = "arrow_schema";

/* ================================================================== */
/* Consuming                                                          */
/* ================================================================== */

enum {
    AK_NULL, AK_BOOL, AK_INT, AK_UINT, AK_HALF, AK_FLOAT, AK_DOUBLE,
    AK_BIN32, AK_BIN64, AK_VIEW, AK_FIXED, AK_DATE32, AK_DATE64, AK_TIME,
    AK_TS, AK_DECIMAL
};

/* How one column is read and what it becomes. */
typedef struct ArrCol {
    const char *name;       /* borrowed from the schema, alive until the end */
    uint32_t oid;
    uint8_t binary;         /* the client wants binary */
    uint8_t kind;           /* AK_*: of the values (the dictionary's when dict) */
    int width;              /* bytes of a value: ints, times, fixed-size binary, decimals */
    int64_t mul, div;       /* time units -> microseconds */
    int scale;              /* decimals */
    uint8_t dict;           /* dictionary-encoded: the array holds indices */
    uint8_t idx_signed;
    int idx_width;
} ArrCol;

/* One array's buffers, resolved once per batch. */
typedef struct Leaf {
    const uint8_t *valid;       /* NULL: no NULLs */
    const uint8_t *data;        /* values, bits, offsets, views or indices */
    const uint8_t *chars;       /* bytes of variable-size values */
    const void *const *vbufs;   /* data buffers of views */
    int64_t n_vbufs;
    int64_t off;                /* the array's own offset */
    int64_t len;
} Leaf;

typedef struct ArrView {
    Leaf leaf;                  /* the column's array (indices when dict) */
    Leaf dict;                  /* its dictionary */
} ArrView;

typedef struct ArrEnc {
    PlugQuery *q;
    const char *plugin;
    size_t ncols;
    ArrCol *cols;               /* owned */
    ArrView *views;             /* owned; rewritten for every batch */
    Buf batch;                  /* DataRows not yet handed off */
    size_t rows;                /* rows in batch */
    uint64_t total;
    Buf txt, bin;               /* scratch */
} ArrEnc;

static int py_fail(ArrEnc *a)
{
    plug_py_error(a->plugin, plug_query_canceled(a->q), &a->q->err);
    return -1;
}

static int flush(ArrEnc *a)
{
    if (!a->rows) return 0;
    size_t n = a->rows;
    a->rows = 0;
    return plug_handoff(a->q, &a->batch, n);
}

static int full(const ArrEnc *a)
{
    return a->rows >= PLUG_BATCH_ROWS || a->batch.len >= PLUG_BATCH_BYTES;
}

static int canceled(ArrEnc *a)
{
    rq_error_set(&a->q->err, "57014", "canceling statement due to user request");
    return -1;
}

/* ---- schema -> Postgres types ---- */

static int time_unit(char u, int64_t *mul, int64_t *div)
{
    switch (u) {
    case 's': *mul = 1000000; *div = 1; return 0;
    case 'm': *mul = 1000; *div = 1; return 0;
    case 'u': *mul = 1; *div = 1; return 0;
    case 'n': *mul = 1; *div = 1000; return 0;
    }
    return -1;
}

/* A decimal integer at *p (optional sign), advancing *p. */
static int parse_num(const char **p, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(*p, &end, 10);
    if (end == *p || errno) return -1;
    *p = end;
    *out = v;
    return 0;
}

static void int_col(ArrCol *c, int kind, int width, uint32_t oid)
{
    c->kind = (uint8_t)kind;
    c->width = width;
    c->oid = oid;
}

/* Format string -> kind and Postgres type; -1 when not supported.  The
 * integer types map to the smallest Postgres type that holds every value. */
static int parse_format(const char *f, ArrCol *c)
{
    c->mul = c->div = 1;
    if (f[0] && !f[1]) {
        switch (f[0]) {
        case 'n': c->kind = AK_NULL; c->oid = PGT_TEXT; return 0;
        case 'b': c->kind = AK_BOOL; c->oid = PGT_BOOL; return 0;
        case 'c': int_col(c, AK_INT, 1, PGT_INT2); return 0;
        case 'C': int_col(c, AK_UINT, 1, PGT_INT2); return 0;
        case 's': int_col(c, AK_INT, 2, PGT_INT2); return 0;
        case 'S': int_col(c, AK_UINT, 2, PGT_INT4); return 0;
        case 'i': int_col(c, AK_INT, 4, PGT_INT4); return 0;
        case 'I': int_col(c, AK_UINT, 4, PGT_INT8); return 0;
        case 'l': int_col(c, AK_INT, 8, PGT_INT8); return 0;
        case 'L': int_col(c, AK_UINT, 8, PGT_NUMERIC); return 0;
        case 'e': int_col(c, AK_HALF, 2, PGT_FLOAT4); return 0;
        case 'f': int_col(c, AK_FLOAT, 4, PGT_FLOAT4); return 0;
        case 'g': int_col(c, AK_DOUBLE, 8, PGT_FLOAT8); return 0;
        case 'u': c->kind = AK_BIN32; c->oid = PGT_TEXT; return 0;
        case 'U': c->kind = AK_BIN64; c->oid = PGT_TEXT; return 0;
        case 'z': c->kind = AK_BIN32; c->oid = PGT_BYTEA; return 0;
        case 'Z': c->kind = AK_BIN64; c->oid = PGT_BYTEA; return 0;
        }
        return -1;
    }
    if (strcmp(f, "vu") == 0 || strcmp(f, "vz") == 0) {
        c->kind = AK_VIEW;
        c->oid = f[1] == 'u' ? PGT_TEXT : PGT_BYTEA;
        return 0;
    }
    if (strncmp(f, "w:", 2) == 0) {
        const char *p = f + 2;
        long w;
        if (parse_num(&p, &w) < 0 || *p || w <= 0 || w > 0x3fffffff) return -1;
        int_col(c, AK_FIXED, (int)w, PGT_BYTEA);
        return 0;
    }
    if (strcmp(f, "tdD") == 0) { int_col(c, AK_DATE32, 4, PGT_DATE); return 0; }
    if (strcmp(f, "tdm") == 0) { int_col(c, AK_DATE64, 8, PGT_DATE); return 0; }
    if (f[0] == 't' && f[1] == 't' && f[2] && !f[3]) {
        if (time_unit(f[2], &c->mul, &c->div) < 0) return -1;
        int_col(c, AK_TIME, f[2] == 's' || f[2] == 'm' ? 4 : 8, PGT_TIME);
        return 0;
    }
    if (f[0] == 't' && f[1] == 's' && f[2] && f[3] == ':') {
        if (time_unit(f[2], &c->mul, &c->div) < 0) return -1;
        /* a time zone, any, means the values are UTC instants */
        int_col(c, AK_TS, 8, f[4] ? PGT_TIMESTAMPTZ : PGT_TIMESTAMP);
        return 0;
    }
    if (f[0] == 'd' && f[1] == ':') {
        const char *p = f + 2;
        long prec, scale, bits = 128;
        if (parse_num(&p, &prec) < 0 || *p++ != ',' || parse_num(&p, &scale) < 0) return -1;
        if (*p == ',') {
            p++;
            if (parse_num(&p, &bits) < 0) return -1;
        }
        if (*p || prec <= 0 || scale < -1000 || scale > 1000) return -1;
        if (bits != 32 && bits != 64 && bits != 128 && bits != 256) return -1;
        int_col(c, AK_DECIMAL, (int)(bits / 8), PGT_NUMERIC);
        c->scale = (int)scale;
        return 0;
    }
    return -1;
}

/* What an unsupported format is, for the error message. */
static const char *format_name(const char *f)
{
    static const struct { const char *prefix, *name; } names[] = {
        { "+vl", "list view" }, { "+vL", "large list view" }, { "+l", "list" },
        { "+L", "large list" }, { "+w:", "fixed-size list" }, { "+s", "struct" },
        { "+m", "map" }, { "+ud", "dense union" }, { "+us", "sparse union" },
        { "+r", "run-end encoded" }, { "tD", "duration" }, { "ti", "interval" },
        { "d:", "decimal" }, { "ts", "timestamp" }, { "tt", "time" },
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strncmp(f, names[i].prefix, strlen(names[i].prefix)) == 0) return names[i].name;
    return "type";
}

static int unsupported(ArrEnc *a, const ArrCol *c, const char *format, const char *what)
{
    rq_error_set(&a->q->err, "0A000", "Arrow column \"%s\" has %s format \"%s\", which riffq cannot serve",
                 c->name, what ? what : format_name(format), format);
    rq_error_hint(&a->q->err, "Supported: null, bool, integers, floats, (large) utf8 and binary, "
                  "string and binary views, fixed-size binary, date32/64, time32/64, timestamps, "
                  "decimal128/256, and dictionaries of strings or binary; cast the column first.");
    return -1;
}

/* Data that breaks the C data interface's rules: c names the column, or is
 * NULL for the stream as a whole. */
static int malformed(ArrEnc *a, const ArrCol *c, const char *what)
{
    if (c)
        rq_error_set(&a->q->err, "XX000", "malformed Arrow data from plugin \"%s\": column \"%s\": %s",
                     a->plugin, c->name, what);
    else
        rq_error_set(&a->q->err, "XX000", "malformed Arrow data from plugin \"%s\": %s", a->plugin, what);
    return -1;
}

static int map_column(ArrEnc *a, ArrCol *c, const struct ArrowSchema *s)
{
    c->name = s->name && *s->name ? s->name : "?column?";
    if (!s->format) return malformed(a, c, "no format");
    if (!s->dictionary) {
        if (parse_format(s->format, c) < 0) return unsupported(a, c, s->format, NULL);
        return 0;
    }
    ArrCol idx = { 0 };
    if (parse_format(s->format, &idx) < 0 || (idx.kind != AK_INT && idx.kind != AK_UINT))
        return unsupported(a, c, s->format, "dictionary index");
    const char *vf = s->dictionary->format;
    if (!vf) return malformed(a, c, "its dictionary has no format");
    if (s->dictionary->dictionary || parse_format(vf, c) < 0 ||
        (c->kind != AK_BIN32 && c->kind != AK_BIN64 && c->kind != AK_VIEW && c->kind != AK_FIXED)) {
        rq_error_set(&a->q->err, "0A000", "Arrow column \"%s\" is dictionary-encoded with values of "
                     "format \"%s\"; riffq serves dictionaries of strings and binary only", c->name, vf);
        return -1;
    }
    c->dict = 1;
    c->idx_width = idx.width;
    c->idx_signed = idx.kind == AK_INT;
    return 0;
}

/* The result's columns from the schema, into cols (names copied). */
static int map_columns(ArrEnc *a, const struct ArrowSchema *schema, RqResult *cols)
{
    PlugQuery *q = a->q;
    if (!schema->format || strcmp(schema->format, "+s") != 0) {
        rq_error_set(&q->err, "0A000", "an Arrow stream of format \"%s\" is not a table (expected a struct, \"+s\")",
                     schema->format ? schema->format : "");
        return -1;
    }
    if (schema->n_children < 0 || (schema->n_children > 0 && !schema->children))
        return malformed(a, NULL, "the schema has no children");
    if (schema->n_children > 1664) {     /* Postgres' MaxTupleAttributeNumber */
        rq_error_set(&q->err, "54011", "a result can have at most 1664 columns, not %lld",
                     (long long)schema->n_children);
        return -1;
    }
    a->ncols = (size_t)schema->n_children;
    a->cols = xcalloc(a->ncols + 1, sizeof *a->cols);
    a->views = xcalloc(a->ncols + 1, sizeof *a->views);
    for (size_t i = 0; i < a->ncols; i++) {
        if (!schema->children[i]) return malformed(a, NULL, "a child of the schema is missing");
        if (map_column(a, &a->cols[i], schema->children[i]) < 0) return -1;
    }
    cols->returns_rows = 1;
    for (size_t i = 0; i < a->ncols; i++) {
        a->cols[i].binary = q->formats && wire_format_at(q->formats, q->n_formats, i) == 1;
        rq_result_add_column(cols, a->cols[i].name, a->cols[i].oid);
    }
    return rq_result_check_formats(cols, q->formats, q->n_formats, &q->err);
}

/* ---- batches ---- */

static int leaf_init(ArrEnc *a, const ArrCol *c, int kind, const struct ArrowArray *x,
                     int64_t need, Leaf *l)
{
    memset(l, 0, sizeof *l);
    if (x->length < need || x->offset < 0 || x->n_buffers < 0 || (x->n_buffers > 0 && !x->buffers))
        return malformed(a, c, "its array is shorter than the batch");
    int64_t nb = kind == AK_NULL ? 0 : kind == AK_BIN32 || kind == AK_BIN64 || kind == AK_VIEW ? 3 : 2;
    if (x->n_buffers < nb) return malformed(a, c, "its array has too few buffers");
    l->off = x->offset;
    l->len = x->length;
    if (kind == AK_NULL) return 0;
    l->valid = x->null_count != 0 ? x->buffers[0] : NULL;
    l->data = x->buffers[1];
    if (kind == AK_BIN32 || kind == AK_BIN64) l->chars = x->buffers[2];
    if (kind == AK_VIEW) {
        l->vbufs = x->buffers + 2;
        l->n_vbufs = x->n_buffers - 3;      /* the last buffer holds their sizes */
    }
    if (need > 0 && !l->data) return malformed(a, c, "its array has no data buffer");
    return 0;
}

static inline int bit_at(const uint8_t *bits, int64_t i)
{
    return (bits[i >> 3] >> (i & 7)) & 1;
}

static inline int64_t rd_int(const uint8_t *p, int width, int is_signed)
{
    switch (width) {
    case 1: return is_signed ? (int64_t)*(const int8_t *)p : (int64_t)*p;
    case 2: { uint16_t v; memcpy(&v, p, 2); return is_signed ? (int64_t)(int16_t)v : (int64_t)v; }
    case 4: { uint32_t v; memcpy(&v, p, 4); return is_signed ? (int64_t)(int32_t)v : (int64_t)v; }
    default: { int64_t v; memcpy(&v, p, 8); return v; }
    }
}

static void put_null(ArrEnc *a)
{
    wire_row_value(&a->batch, NULL, -1);
}

static void put_be(ArrEnc *a, uint64_t v, int bytes)
{
    buf_append_u32(&a->batch, (uint32_t)bytes);
    if (bytes == 8) buf_append_u64(&a->batch, v);
    else if (bytes == 4) buf_append_u32(&a->batch, (uint32_t)v);
    else if (bytes == 2) buf_append_u16(&a->batch, (uint16_t)v);
    else buf_append_byte(&a->batch, (uint8_t)v);
}

/* A value in text form: sent as is, or turned into the binary form. */
static int put_text(ArrEnc *a, const ArrCol *c, const char *s, size_t n)
{
    if (!c->binary) {
        wire_row_value(&a->batch, s, (int32_t)n);
        return 0;
    }
    buf_reset(&a->bin);
    if (pgt_text_to_binary(c->oid, s, n, &a->bin, &a->q->err) < 0) return -1;
    wire_row_value(&a->batch, a->bin.data ? a->bin.data : "", (int32_t)a->bin.len);
    return 0;
}

static int put_int(ArrEnc *a, const ArrCol *c, int64_t v)
{
    if (c->binary) {
        put_be(a, (uint64_t)v, c->oid == PGT_INT2 ? 2 : c->oid == PGT_INT4 ? 4 : 8);
        return 0;
    }
    char tmp[24];
    wire_row_value(&a->batch, tmp, (int32_t)plug_fmt_int64(v, tmp));
    return 0;
}

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        float f = ldexpf((float)mant, -24);     /* zero or subnormal */
        return sign ? -f : f;
    }
    if (exp == 31) bits = sign | 0x7f800000u | (mant << 13);
    else bits = sign | ((exp + 112) << 23) | (mant << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static int put_float4(ArrEnc *a, const ArrCol *c, float f)
{
    if (c->binary) {
        uint32_t bits;
        memcpy(&bits, &f, 4);
        put_be(a, bits, 4);
        return 0;
    }
    char tmp[40];
    wire_row_value(&a->batch, tmp, (int32_t)plug_fmt_float4(f, tmp));
    return 0;
}

static int put_float8(ArrEnc *a, const ArrCol *c, double d)
{
    if (c->binary) {
        uint64_t bits;
        memcpy(&bits, &d, 8);
        put_be(a, bits, 8);
        return 0;
    }
    char tmp[40];
    wire_row_value(&a->batch, tmp, (int32_t)plug_fmt_float8(d, tmp));
    return 0;
}

static int put_bytes(ArrEnc *a, const ArrCol *c, const uint8_t *p, int64_t n)
{
    if (n > 0x3fffffff) {
        rq_error_set(&a->q->err, "54000", "a value of column \"%s\" is %lld bytes, more than a "
                     "Postgres value can hold", c->name, (long long)n);
        return -1;
    }
    if (c->oid != PGT_BYTEA || c->binary) {
        wire_row_value(&a->batch, n ? (const void *)p : "", (int32_t)n);
        return 0;
    }
    static const char hex[] = "0123456789abcdef";
    buf_append_u32(&a->batch, (uint32_t)(2 + 2 * n));
    buf_append(&a->batch, "\\x", 2);
    buf_reserve(&a->batch, (size_t)(2 * n));
    for (int64_t k = 0; k < n; k++) {
        char two[2] = { hex[p[k] >> 4], hex[p[k] & 15] };
        buf_append(&a->batch, two, 2);
    }
    return 0;
}

/* The bytes of variable-size value i of l (kind BIN32, BIN64, VIEW, FIXED). */
static int value_bytes(ArrEnc *a, const ArrCol *c, int kind, const Leaf *l, int64_t i,
                       const uint8_t **p, int64_t *n)
{
    int64_t o0, o1;
    switch (kind) {
    case AK_BIN32:
        o0 = rd_int(l->data + 4 * i, 4, 1);
        o1 = rd_int(l->data + 4 * (i + 1), 4, 1);
        break;
    case AK_BIN64:
        o0 = rd_int(l->data + 8 * i, 8, 1);
        o1 = rd_int(l->data + 8 * (i + 1), 8, 1);
        break;
    case AK_VIEW: {
        const uint8_t *v = l->data + 16 * i;
        int64_t len = rd_int(v, 4, 1);
        if (len < 0) return malformed(a, c, "a view has a negative length");
        *n = len;
        if (len <= 12) {
            *p = v + 4;
            return 0;
        }
        int64_t b = rd_int(v + 8, 4, 1), off = rd_int(v + 12, 4, 1);
        if (b < 0 || b >= l->n_vbufs || !l->vbufs[b] || off < 0)
            return malformed(a, c, "a view points outside its buffers");
        *p = (const uint8_t *)l->vbufs[b] + off;
        return 0;
    }
    default:
        *p = l->data + (int64_t)c->width * i;
        *n = c->width;
        return 0;
    }
    if (o0 < 0 || o1 < o0) return malformed(a, c, "its offsets are not ascending");
    if (o1 > o0 && !l->chars) return malformed(a, c, "its array has no value buffer");
    *p = l->chars + o0;
    *n = o1 - o0;
    return 0;
}

static int64_t floor_div(int64_t x, int64_t d)
{
    int64_t q = x / d;
    return (x % d != 0 && (x < 0) != (d < 0)) ? q - 1 : q;
}

/* raw in c's unit -> microseconds, rounding nanoseconds half up as
 * Postgres rounds extra fractional digits.  -1 on overflow. */
static int to_us(const ArrCol *c, int64_t raw, int64_t *us)
{
    if (c->div > 1) {
        int64_t q = floor_div(raw, c->div), r = raw - q * c->div;
        *us = q + (r * 2 >= c->div);
        return 0;
    }
    return __builtin_mul_overflow(raw, c->mul, us) ? -1 : 0;
}

static int put_date(ArrEnc *a, const ArrCol *c, int64_t days)
{
    if (days < PG_DATE_MIN || days >= PG_DATE_END) {
        rq_error_set(&a->q->err, "22008", "date out of range");
        return -1;
    }
    if (c->binary) {
        put_be(a, (uint32_t)(int32_t)(days - PG_EPOCH_DAYS), 4);
        return 0;
    }
    buf_reset(&a->txt);
    plug_fmt_date(days, &a->txt);
    wire_row_value(&a->batch, a->txt.data, (int32_t)a->txt.len);
    return 0;
}

static size_t fmt_time(int64_t us, char *out)
{
    int64_t s = us / 1000000;
    unsigned frac = (unsigned)(us % 1000000);
    unsigned f[3] = { (unsigned)(s / 3600), (unsigned)(s / 60 % 60), (unsigned)(s % 60) };
    char *p = out;
    for (int k = 0; k < 3; k++) {
        if (k) *p++ = ':';
        *p++ = (char)('0' + f[k] / 10);
        *p++ = (char)('0' + f[k] % 10);
    }
    if (frac) {
        /* Postgres drops trailing zeros of the fraction */
        *p++ = '.';
        for (int k = 5; k >= 0; k--) {
            p[k] = (char)('0' + frac % 10);
            frac /= 10;
        }
        int n = 6;
        while (p[n - 1] == '0') n--;
        p += n;
    }
    return (size_t)(p - out);
}

static int put_time(ArrEnc *a, const ArrCol *c, int64_t raw)
{
    int64_t us;
    if (to_us(c, raw, &us) < 0 || us < 0 || us > US_PER_DAY) {
        rq_error_set(&a->q->err, "22008", "time out of range");
        return -1;
    }
    if (c->binary) {
        put_be(a, (uint64_t)us, 8);
        return 0;
    }
    char tmp[24];
    wire_row_value(&a->batch, tmp, (int32_t)fmt_time(us, tmp));
    return 0;
}

static int put_timestamp(ArrEnc *a, const ArrCol *c, int64_t raw)
{
    int64_t us, pg;
    if (to_us(c, raw, &us) < 0 || __builtin_sub_overflow(us, PG_EPOCH_US, &pg) ||
        pg < PG_TS_MIN || pg >= PG_TS_END) {
        rq_error_set(&a->q->err, "22008", "timestamp out of range");
        return -1;
    }
    if (c->binary) {
        put_be(a, (uint64_t)pg, 8);
        return 0;
    }
    buf_reset(&a->txt);
    plug_fmt_timestamp(us, c->oid == PGT_TIMESTAMPTZ, &a->txt);
    wire_row_value(&a->batch, a->txt.data, (int32_t)a->txt.len);
    return 0;
}

/* A decimal of width bytes (little-endian two's complement) with scale ->
 * numeric text in out. */
static void fmt_decimal(const uint8_t *p, int width, int scale, Buf *out)
{
    uint64_t limb[4] = { 0 };
    int n = width <= 8 ? 1 : width / 8;
    if (width <= 8) {
        limb[0] = (uint64_t)rd_int(p, width, 1);
    } else {
        memcpy(limb, p, (size_t)width);
    }
    int neg = (int64_t)limb[n - 1] < 0;
    if (neg) {                          /* magnitude: two's complement negation */
        unsigned carry = 1;
        for (int k = 0; k < n; k++) {
            limb[k] = ~limb[k] + carry;
            carry = carry && limb[k] == 0;
        }
    }
    /* base 10^19 chunks, least significant first */
    uint64_t chunks[6];
    int nc = 0;
    for (;;) {
        int zero = 1;
        for (int k = 0; k < n; k++) zero &= limb[k] == 0;
        if (zero && nc) break;
        unsigned __int128 rem = 0;
        for (int k = n - 1; k >= 0; k--) {
            unsigned __int128 cur = (rem << 64) | limb[k];
            limb[k] = (uint64_t)(cur / 10000000000000000000ULL);
            rem = cur % 10000000000000000000ULL;
        }
        chunks[nc++] = (uint64_t)rem;
    }
    char digits[6 * 19 + 1];
    size_t nd = 0;
    char tmp[24];
    for (int k = nc - 1; k >= 0; k--) {
        size_t m = plug_fmt_uint64(chunks[k], tmp);
        if (k != nc - 1)
            for (size_t z = m; z < 19; z++) digits[nd++] = '0';
        memcpy(digits + nd, tmp, m);
        nd += m;
    }
    int is_zero = nd == 1 && digits[0] == '0';
    if (neg && !is_zero) buf_append_byte(out, '-');
    if (scale <= 0) {
        buf_append(out, digits, nd);
        if (!is_zero)
            for (int k = 0; k < -scale; k++) buf_append_byte(out, '0');
    } else if (nd <= (size_t)scale) {
        buf_append(out, "0.", 2);
        for (size_t k = nd; k < (size_t)scale; k++) buf_append_byte(out, '0');
        buf_append(out, digits, nd);
    } else {
        buf_append(out, digits, nd - (size_t)scale);
        buf_append_byte(out, '.');
        buf_append(out, digits + (nd - (size_t)scale), (size_t)scale);
    }
}

/* Cell of column i at index idx of its array. */
static int put_cell(ArrEnc *a, size_t i, int64_t idx)
{
    const ArrCol *c = &a->cols[i];
    const ArrView *v = &a->views[i];
    const Leaf *l = &v->leaf;
    if (c->kind == AK_NULL || (l->valid && !bit_at(l->valid, idx))) {
        put_null(a);
        return 0;
    }
    if (c->dict) {
        int64_t k = rd_int(l->data + (int64_t)c->idx_width * idx, c->idx_width, c->idx_signed);
        if (k < 0 || k >= v->dict.len) return malformed(a, c, "a dictionary index is out of range");
        l = &v->dict;
        idx = l->off + k;
        if (l->valid && !bit_at(l->valid, idx)) {
            put_null(a);
            return 0;
        }
    }
    const uint8_t *p = l->data;
    switch (c->kind) {
    case AK_BOOL: {
        int b = bit_at(p, idx);
        if (c->binary) put_be(a, (uint64_t)b, 1);
        else wire_row_value(&a->batch, b ? "t" : "f", 1);
        return 0;
    }
    case AK_INT:
        return put_int(a, c, rd_int(p + (int64_t)c->width * idx, c->width, 1));
    case AK_UINT: {
        int64_t u = rd_int(p + (int64_t)c->width * idx, c->width, 0);
        if (c->width < 8) return put_int(a, c, u);
        char tmp[24];
        return put_text(a, c, tmp, plug_fmt_uint64((uint64_t)u, tmp));
    }
    case AK_HALF:
        return put_float4(a, c, half_to_float((uint16_t)rd_int(p + 2 * idx, 2, 0)));
    case AK_FLOAT: {
        float f;
        memcpy(&f, p + 4 * idx, 4);
        return put_float4(a, c, f);
    }
    case AK_DOUBLE: {
        double d;
        memcpy(&d, p + 8 * idx, 8);
        return put_float8(a, c, d);
    }
    case AK_BIN32: case AK_BIN64: case AK_VIEW: case AK_FIXED: {
        const uint8_t *s;
        int64_t n;
        if (value_bytes(a, c, c->kind, l, idx, &s, &n) < 0) return -1;
        return put_bytes(a, c, s, n);
    }
    case AK_DATE32:
        return put_date(a, c, rd_int(p + 4 * idx, 4, 1));
    case AK_DATE64:
        return put_date(a, c, floor_div(rd_int(p + 8 * idx, 8, 1), 86400000));
    case AK_TIME:
        return put_time(a, c, rd_int(p + (int64_t)c->width * idx, c->width, 1));
    case AK_TS:
        return put_timestamp(a, c, rd_int(p + 8 * idx, 8, 1));
    case AK_DECIMAL:
        buf_reset(&a->txt);
        fmt_decimal(p + (int64_t)c->width * idx, c->width, c->scale, &a->txt);
        return put_text(a, c, a->txt.data, a->txt.len);
    }
    return 0;
}

/* Rows [*row, length) of the batch until the batch Buf is full.  Touches
 * no Python object: runs without the GIL. */
static int encode_rows(ArrEnc *a, const struct ArrowArray *arr, const uint8_t *valid, int64_t *row)
{
    for (; *row < arr->length && !full(a); (*row)++) {
        int64_t r = arr->offset + *row;     /* index into the children, before their own offsets */
        size_t start = a->batch.len;
        size_t m = wire_row_begin(&a->batch, (uint16_t)a->ncols);
        int whole_null = valid && !bit_at(valid, r);
        for (size_t i = 0; i < a->ncols; i++) {
            if (whole_null) {
                put_null(a);
                continue;
            }
            if (put_cell(a, i, a->views[i].leaf.off + r) < 0) {
                if (!a->q->err.detail)
                    rq_error_detail(&a->q->err, "In column \"%s\" of row %llu.", a->cols[i].name,
                                    (unsigned long long)a->total + 1);
                a->batch.len = start;
                return -1;
            }
        }
        wire_end(&a->batch, m);
        a->rows++;
        a->total++;
    }
    return 0;
}

static int encode_batch(ArrEnc *a, const struct ArrowArray *arr)
{
    int64_t need;
    if (arr->length < 0 || arr->offset < 0 || __builtin_add_overflow(arr->offset, arr->length, &need))
        return malformed(a, NULL, "a batch has a negative length or offset");
    if (arr->n_children != (int64_t)a->ncols || (a->ncols && !arr->children))
        return malformed(a, NULL, "a batch does not have one child array per column of the schema");
    const uint8_t *valid = arr->null_count != 0 && arr->n_buffers > 0 && arr->buffers
                         ? arr->buffers[0] : NULL;
    for (size_t i = 0; i < a->ncols; i++) {
        const ArrCol *c = &a->cols[i];
        const struct ArrowArray *ch = arr->children[i];
        if (!ch) return malformed(a, c, "its array is missing");
        ArrView *v = &a->views[i];
        if (!c->dict) {
            if (leaf_init(a, c, c->kind, ch, need, &v->leaf) < 0) return -1;
            continue;
        }
        if (leaf_init(a, c, c->idx_signed ? AK_INT : AK_UINT, ch, need, &v->leaf) < 0) return -1;
        if (!ch->dictionary) return malformed(a, c, "its array has no dictionary");
        if (leaf_init(a, c, c->kind, ch->dictionary, ch->dictionary->length, &v->dict) < 0) return -1;
    }
    int64_t row = 0;
    int r = 0;
    while (r == 0 && row < arr->length) {
        Py_BEGIN_ALLOW_THREADS
        r = encode_rows(a, arr, valid, &row);
        Py_END_ALLOW_THREADS
        if (r == 0 && full(a)) r = flush(a);
    }
    return r;
}

static int stream_failed(ArrEnc *a, struct ArrowArrayStream *s, int rc, const char *call)
{
    if (plug_query_canceled(a->q)) return canceled(a);
    const char *msg = s->get_last_error ? s->get_last_error(s) : NULL;
    if (msg && *msg)
        rq_error_set(&a->q->err, "XX000", "Arrow stream of plugin \"%s\" failed: %s", a->plugin, msg);
    else
        rq_error_set(&a->q->err, "XX000", "Arrow stream of plugin \"%s\" failed: %s returned %d (%s)",
                     a->plugin, call, rc, strerror(rc));
    PyErr_Clear();
    return -1;
}

static int pull_batches(ArrEnc *a, struct ArrowArrayStream *s)
{
    for (;;) {
        if (plug_query_canceled(a->q)) return canceled(a);
        struct ArrowArray arr;
        memset(&arr, 0, sizeof arr);
        int rc = s->get_next(s, &arr);
        if (rc != 0) return stream_failed(a, s, rc, "get_next");
        if (!arr.release) break;        /* the end of the stream */
        int r = PyErr_Occurred() ? py_fail(a) : encode_batch(a, &arr);
        if (arr.release) arr.release(&arr);
        if (r < 0) return -1;
    }
    return flush(a);
}

/* What engine.c's stop_interrupts does when a handler's result is
 * dropped: the canceller no longer targets this worker (it checks
 * in_python under the GIL and mu, both held here), and an exception it
 * already scheduled is withdrawn. */
static void quiet_interrupts(PlugQuery *q)
{
    PlugEngine *e = q->e;
    unsigned long me = PyThread_get_thread_ident();
    pthread_mutex_lock(&e->mu);
    for (int k = 0; k < e->n_workers; k++)
        if (e->workers[k].ident == me && e->workers[k].in_python == q->id) e->workers[k].in_python = 0;
    pthread_mutex_unlock(&e->mu);
    PyThreadState_SetAsyncExc(me, NULL);
}

/* Move the stream out of obj's capsule into *out. */
static int take_stream(ArrEnc *a, PyObject *obj, struct ArrowArrayStream *out)
{
    PyObject *cap;
    if (PyCapsule_CheckExact(obj)) {
        cap = obj;
        Py_INCREF(cap);
    } else {
        cap = PyObject_CallMethod(obj, "__arrow_c_stream__", NULL);
        if (!cap) return py_fail(a);
    }
    int r = 0;
    if (!PyCapsule_IsValid(cap, STREAM_CAPSULE)) {
        rq_error_set(&a->q->err, "XX000", "__arrow_c_stream__() of %s returned %s, not an \"%s\" PyCapsule",
                     Py_TYPE(obj)->tp_name, Py_TYPE(cap)->tp_name, STREAM_CAPSULE);
        r = -1;
    } else {
        struct ArrowArrayStream *s = PyCapsule_GetPointer(cap, STREAM_CAPSULE);
        if (!s->release) {
            rq_error_set(&a->q->err, "XX000", "the Arrow stream returned by plugin \"%s\" was already consumed",
                         a->plugin);
            r = -1;
        } else {
            *out = *s;
            s->release = NULL;          /* moved: the capsule's destructor only frees the struct */
        }
    }
    PyErr_Clear();
    Py_DECREF(cap);
    return r;
}

int plug_arrow_is_stream(PyObject *obj)
{
    if (PyCapsule_CheckExact(obj)) return PyCapsule_IsValid(obj, STREAM_CAPSULE);
    if (PyType_Check(obj)) return 0;    /* a class has the method, unbound */
    return PyObject_HasAttrString(obj, "__arrow_c_stream__");
}

int plug_arrow_encode(PlugQuery *q, PyObject *obj, const char *plugin, uint64_t *rows)
{
    ArrEnc a = { .q = q, .plugin = plugin };
    struct ArrowArrayStream stream;
    struct ArrowSchema schema;
    memset(&stream, 0, sizeof stream);
    memset(&schema, 0, sizeof schema);
    quiet_interrupts(q);
    int r = take_stream(&a, obj, &stream);
    if (r == 0) {
        int rc = stream.get_schema(&stream, &schema);
        if (rc != 0) {
            schema.release = NULL;      /* not produced: nothing to release */
            r = stream_failed(&a, &stream, rc, "get_schema");
        } else if (!schema.release) {
            r = malformed(&a, NULL, "get_schema returned a released schema");
        }
    }
    RqResult cols;
    rq_result_init(&cols);
    if (r == 0) r = map_columns(&a, &schema, &cols);
    if (r == 0 && q->describe_only) {
        /* release first: the session answers Describe as soon as the
         * columns are published, and the client may go on at once */
        schema.release(&schema);
        stream.release(&stream);
    }
    if (r == 0) plug_publish_columns(q, &cols);
    if (r == 0 && !q->describe_only) r = pull_batches(&a, &stream);
    if (schema.release) schema.release(&schema);
    if (stream.release) stream.release(&stream);
    rq_result_free(&cols);
    *rows = a.total;
    free(a.cols);
    free(a.views);
    buf_free(&a.batch);
    buf_free(&a.txt);
    buf_free(&a.bin);
    return r;
}

/* ================================================================== */
/* Producing: riffq._ArrowBatch                                       */
/* ================================================================== */

enum { PK_INT, PK_FLOAT, PK_BOOL, PK_STR, PK_DATE, PK_DATETIME };

static const struct { const char *name, *format; } prod_kinds[] = {
    [PK_INT] = { "int", "l" }, [PK_FLOAT] = { "float", "g" }, [PK_BOOL] = { "bool", "b" },
    [PK_STR] = { "str", "u" }, [PK_DATE] = { "date", "tdD" }, [PK_DATETIME] = { "datetime", "tsu:" },
};

typedef struct ProdCol {
    char *name;                 /* owned, UTF-8 */
    int kind;                   /* PK_* */
    uint8_t *valid;             /* owned; NULL while there is no NULL */
    int64_t nulls;
    void *values;               /* owned: int64/double/int32, bits, or int32 offsets */
    char *chars;                /* owned: PK_STR bytes */
} ProdCol;

/* The converted rows.  Shared by the Python object and every exported
 * stream and array; freed by whoever drops the last reference. */
typedef struct ProdData {
    long refs;                  /* atomic */
    int64_t nrows;
    size_t ncols;
    ProdCol *cols;              /* owned */
} ProdData;

/* Exported streams, schemas and arrays not yet released (tests read it
 * through riffq._ArrowBatch._exports_alive()). */
static long live_exports;

static void live_add(long d)
{
    __atomic_add_fetch(&live_exports, d, __ATOMIC_RELAXED);
}

static void prod_ref(ProdData *d)
{
    __atomic_add_fetch(&d->refs, 1, __ATOMIC_RELAXED);
}

static void prod_unref(ProdData *d)
{
    if (!d || __atomic_sub_fetch(&d->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
    for (size_t i = 0; i < d->ncols; i++) {
        free(d->cols[i].name);
        free(d->cols[i].valid);
        free(d->cols[i].values);
        free(d->cols[i].chars);
    }
    free(d->cols);
    free(d);
}

/* ---- schemas ---- */

static void child_schema_release(struct ArrowSchema *s)
{
    free((char *)s->name);
    s->release = NULL;
}

static void schema_release(struct ArrowSchema *s)
{
    for (int64_t i = 0; i < s->n_children; i++) {
        struct ArrowSchema *ch = s->children[i];
        if (ch->release) ch->release(ch);
    }
    free(s->private_data);              /* the children's structs and pointers, one block */
    s->release = NULL;
    live_add(-1);
}

static void export_schema(const ProdData *d, struct ArrowSchema *out)
{
    size_t n = d->ncols;
    struct ArrowSchema **ptrs = xcalloc(n * (sizeof *ptrs + sizeof **ptrs) + 1, 1);
    struct ArrowSchema *kids = (struct ArrowSchema *)(ptrs + n);
    for (size_t i = 0; i < n; i++) {
        kids[i] = (struct ArrowSchema){
            .format = prod_kinds[d->cols[i].kind].format, .name = xstrdup(d->cols[i].name),
            .flags = ARROW_FLAG_NULLABLE, .release = child_schema_release,
        };
        ptrs[i] = &kids[i];
    }
    *out = (struct ArrowSchema){
        .format = "+s", .name = "", .n_children = (int64_t)n, .children = ptrs,
        .release = schema_release, .private_data = ptrs,
    };
    live_add(1);
}

/* ---- arrays ---- */

typedef struct KidPriv {
    ProdData *d;                /* a reference */
    const void *bufs[3];
} KidPriv;

static void child_array_release(struct ArrowArray *x)
{
    KidPriv *k = x->private_data;
    prod_unref(k->d);
    free(k);
    x->release = NULL;
}

static void array_release(struct ArrowArray *x)
{
    for (int64_t i = 0; i < x->n_children; i++) {
        struct ArrowArray *ch = x->children[i];
        if (ch->release) ch->release(ch);
    }
    free(x->private_data);              /* the children's structs and pointers, and buffers */
    x->release = NULL;
    live_add(-1);
}

static int64_t count_nulls(const uint8_t *valid, int64_t from, int64_t n)
{
    int64_t k = 0;
    for (int64_t i = from; i < from + n; i++) k += !bit_at(valid, i);
    return k;
}

/* Rows [from, from + n) as a struct array whose children are slices
 * (offset = from) of the columns' buffers. */
static void export_array(ProdData *d, int64_t from, int64_t n, struct ArrowArray *out)
{
    size_t nc = d->ncols;
    size_t size = nc * (sizeof(struct ArrowArray *) + sizeof(struct ArrowArray)) + sizeof(void *);
    struct ArrowArray **ptrs = xcalloc(size, 1);
    struct ArrowArray *kids = (struct ArrowArray *)(ptrs + nc);
    const void **top_bufs = (const void **)(kids + nc);     /* one buffer: no validity */
    for (size_t i = 0; i < nc; i++) {
        const ProdCol *c = &d->cols[i];
        KidPriv *k = xcalloc(1, sizeof *k);
        k->d = d;
        prod_ref(d);
        k->bufs[0] = c->valid;
        k->bufs[1] = c->values;
        k->bufs[2] = c->chars;
        kids[i] = (struct ArrowArray){
            .length = n, .offset = from,
            .null_count = c->valid ? count_nulls(c->valid, from, n) : 0,
            .n_buffers = c->kind == PK_STR ? 3 : 2, .buffers = k->bufs,
            .release = child_array_release, .private_data = k,
        };
        ptrs[i] = &kids[i];
    }
    *out = (struct ArrowArray){
        .length = n, .n_buffers = 1, .buffers = top_bufs, .n_children = (int64_t)nc,
        .children = ptrs, .release = array_release, .private_data = ptrs,
    };
    live_add(1);
}

/* ---- streams ---- */

typedef struct ProdStream {
    ProdData *d;                /* a reference */
    int64_t pos, batch_rows;
} ProdStream;

static int stream_get_schema(struct ArrowArrayStream *s, struct ArrowSchema *out)
{
    ProdStream *ps = s->private_data;
    export_schema(ps->d, out);
    return 0;
}

static int stream_get_next(struct ArrowArrayStream *s, struct ArrowArray *out)
{
    ProdStream *ps = s->private_data;
    if (ps->pos >= ps->d->nrows) {
        memset(out, 0, sizeof *out);    /* release NULL: the end */
        return 0;
    }
    int64_t n = ps->d->nrows - ps->pos;
    if (n > ps->batch_rows) n = ps->batch_rows;
    export_array(ps->d, ps->pos, n, out);
    ps->pos += n;
    return 0;
}

static const char *stream_last_error(struct ArrowArrayStream *s)
{
    (void)s;
    return NULL;                        /* it never fails */
}

static void stream_release(struct ArrowArrayStream *s)
{
    ProdStream *ps = s->private_data;
    prod_unref(ps->d);
    free(ps);
    s->release = NULL;
    live_add(-1);
}

/* A capsule owns its struct: it releases what no consumer moved out. */
static void stream_capsule_free(PyObject *cap)
{
    struct ArrowArrayStream *s = PyCapsule_GetPointer(cap, PyCapsule_GetName(cap));
    if (!s) {
        PyErr_Clear();
        return;
    }
    if (s->release) s->release(s);
    free(s);
}

static void schema_capsule_free(PyObject *cap)
{
    struct ArrowSchema *s = PyCapsule_GetPointer(cap, PyCapsule_GetName(cap));
    if (!s) {
        PyErr_Clear();
        return;
    }
    if (s->release) s->release(s);
    free(s);
}

/* ---- the Python type ---- */

typedef struct ArrowBatchObject {
    PyObject_HEAD
    ProdData *d;                /* a reference */
    int64_t batch_rows;
} ArrowBatchObject;


static int64_t date_days(PyObject *v)
{
    return plug_days_from_civil(PyDateTime_GET_YEAR(v), (unsigned)PyDateTime_GET_MONTH(v),
                           (unsigned)PyDateTime_GET_DAY(v));
}

/* A datetime (naive: as is; aware: in UTC) or a date (midnight) ->
 * microseconds since 1970-01-01.  -1 with an exception set on failure (a
 * valid result is never -1 there: it is checked with PyErr_Occurred). */
static int64_t datetime_us(PyObject *v)
{
    int64_t us = date_days(v) * US_PER_DAY;
    if (!PyDateTime_Check(v)) return us;
    us += ((int64_t)PyDateTime_DATE_GET_HOUR(v) * 3600 + PyDateTime_DATE_GET_MINUTE(v) * 60 +
           PyDateTime_DATE_GET_SECOND(v)) * 1000000LL + PyDateTime_DATE_GET_MICROSECOND(v);
    if (PyDateTime_DATE_GET_TZINFO(v) == Py_None) return us;
    PyObject *off = PyObject_CallMethod(v, "utcoffset", NULL);
    if (!off) return -1;
    if (PyDelta_Check(off))
        us -= ((int64_t)PyDateTime_DELTA_GET_DAYS(off) * 86400 + PyDateTime_DELTA_GET_SECONDS(off)) *
              1000000LL + PyDateTime_DELTA_GET_MICROSECONDS(off);
    Py_DECREF(off);
    return us;
}

/* Prefix the pending TypeError/ValueError/OverflowError with where it
 * happened. */
static void prod_context(const char *col, Py_ssize_t row)
{
    if (!PyErr_ExceptionMatches(PyExc_TypeError) && !PyErr_ExceptionMatches(PyExc_ValueError) &&
        !PyErr_ExceptionMatches(PyExc_OverflowError))
        return;
    if (PyErr_ExceptionMatches(PyExc_UnicodeError)) return;     /* needs more than a message */
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    PyObject *msg = value ? PyObject_Str(value) : NULL;
    if (msg) {
        PyErr_Format(type, "column \"%s\", row %zd: %U", col, row, msg);
        Py_DECREF(msg);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
    } else {
        PyErr_Restore(type, value, tb);
    }
}

static void set_valid(ProdCol *c, int64_t nrows, int64_t row, int ok)
{
    if (ok) {
        if (c->valid) c->valid[row >> 3] |= (uint8_t)(1u << (row & 7));
        return;
    }
    if (!c->valid) {                    /* the first NULL: every row before was valid */
        size_t bytes = (size_t)(nrows + 7) / 8 + 1;
        c->valid = xcalloc(bytes, 1);
        for (int64_t k = 0; k < row; k++) c->valid[k >> 3] |= (uint8_t)(1u << (k & 7));
    }
    c->nulls++;
}

/* Store v (not None) as row `row` of column c.  -1 with an exception. */
static int prod_store(ProdCol *c, int64_t row, PyObject *v, Buf *chars)
{
    switch (c->kind) {
    case PK_INT: {
        if (PyFloat_Check(v) || PyUnicode_Check(v) || PyBytes_Check(v)) {
            PyErr_Format(PyExc_TypeError, "expected an int, got %.100s", Py_TYPE(v)->tp_name);
            return -1;
        }
        PyObject *ix = PyNumber_Index(v);
        if (!ix) return -1;
        long long x = PyLong_AsLongLong(ix);
        Py_DECREF(ix);
        if (x == -1 && PyErr_Occurred()) return -1;
        ((int64_t *)c->values)[row] = x;
        return 0;
    }
    case PK_FLOAT: {
        if (PyUnicode_Check(v) || PyBytes_Check(v)) {
            PyErr_Format(PyExc_TypeError, "expected a float, got %.100s", Py_TYPE(v)->tp_name);
            return -1;
        }
        double x = PyFloat_AsDouble(v);
        if (x == -1.0 && PyErr_Occurred()) return -1;
        ((double *)c->values)[row] = x;
        return 0;
    }
    case PK_BOOL: {
        if (PyUnicode_Check(v) || PyBytes_Check(v)) {
            PyErr_Format(PyExc_TypeError, "expected a bool, got %.100s", Py_TYPE(v)->tp_name);
            return -1;
        }
        int b = PyObject_IsTrue(v);
        if (b < 0) return -1;
        if (b) ((uint8_t *)c->values)[row >> 3] |= (uint8_t)(1u << (row & 7));
        return 0;
    }
    case PK_STR: {
        if (!PyUnicode_Check(v)) {
            PyErr_Format(PyExc_TypeError, "expected a str, got %.100s", Py_TYPE(v)->tp_name);
            return -1;
        }
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(v, &n);
        if (!s) return -1;
        if (chars->len + (size_t)n > INT32_MAX) {
            PyErr_SetString(PyExc_OverflowError, "more than 2 GiB of strings in one column");
            return -1;
        }
        buf_append(chars, s, (size_t)n);
        return 0;
    }
    case PK_DATE:
        if (!PyDate_Check(v)) {
            PyErr_Format(PyExc_TypeError, "expected a datetime.date, got %.100s", Py_TYPE(v)->tp_name);
            return -1;
        }
        ((int32_t *)c->values)[row] = (int32_t)date_days(v);
        return 0;
    case PK_DATETIME: {
        if (!PyDate_Check(v)) {
            PyErr_Format(PyExc_TypeError, "expected a datetime.datetime, got %.100s", Py_TYPE(v)->tp_name);
            return -1;
        }
        int64_t us = datetime_us(v);
        if (us == -1 && PyErr_Occurred()) return -1;
        ((int64_t *)c->values)[row] = us;
        return 0;
    }
    }
    return 0;
}

/* columns: [(name, kind), ...] with kind a key of prod_kinds.  Fills d. */
static int prod_columns(ProdData *d, PyObject *columns, PyObject **names)
{
    PyObject *seq = PySequence_Fast(columns, "columns must be a sequence of (name, type) pairs");
    if (!seq) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    d->cols = xcalloc((size_t)n + 1, sizeof *d->cols);
    *names = PyList_New(n);
    if (!*names) goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PySequence_Fast_GET_ITEM(seq, i), *name;
        const char *kind;
        if (!PyTuple_Check(pair) || !PyArg_ParseTuple(pair, "Us", &name, &kind)) {
            if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError, "column %zd: expected a (name, type) pair of str", i + 1);
            }
            goto fail;
        }
        ProdCol *c = &d->cols[d->ncols];
        const char *u = PyUnicode_AsUTF8(name);
        if (!u) goto fail;
        c->kind = -1;
        for (size_t k = 0; k < sizeof prod_kinds / sizeof prod_kinds[0]; k++)
            if (strcmp(prod_kinds[k].name, kind) == 0) c->kind = (int)k;
        if (c->kind < 0) {
            PyErr_Format(PyExc_ValueError, "column \"%s\": unknown type \"%s\" (expected int, float, "
                         "bool, str, date or datetime)", u, kind);
            goto fail;
        }
        c->name = xstrdup(u);
        d->ncols++;
        Py_INCREF(name);
        PyList_SET_ITEM(*names, i, name);
    }
    Py_DECREF(seq);
    return 0;
fail:
    Py_DECREF(seq);
    return -1;
}

static int prod_rows(ProdData *d, PyObject *rows, PyObject *names)
{
    PyObject *seq = PySequence_Fast(rows, "rows must be a sequence of rows");
    if (!seq) return -1;
    int64_t nrows = PySequence_Fast_GET_SIZE(seq);
    d->nrows = nrows;
    Buf *chars = xcalloc(d->ncols + 1, sizeof *chars);
    for (size_t i = 0; i < d->ncols; i++) {
        ProdCol *c = &d->cols[i];
        size_t n = (size_t)nrows + 1;
        switch (c->kind) {
        case PK_INT: case PK_FLOAT: case PK_DATETIME: c->values = xcalloc(n, 8); break;
        case PK_DATE: case PK_STR: c->values = xcalloc(n, 4); break;
        case PK_BOOL: c->values = xcalloc(n / 8 + 1, 1); break;
        }
    }
    int r = 0;
    for (int64_t row = 0; row < nrows && r == 0; row++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, row), *vals = NULL;
        if (!PyDict_Check(item)) {
            vals = PySequence_Fast(item, "a row must be a sequence or a dict");
            if (!vals) {
                r = -1;
                break;
            }
            if ((size_t)PySequence_Fast_GET_SIZE(vals) != d->ncols) {
                PyErr_Format(PyExc_ValueError, "row %zd has %zd values, expected %zu", (Py_ssize_t)row,
                             PySequence_Fast_GET_SIZE(vals), d->ncols);
                Py_DECREF(vals);
                r = -1;
                break;
            }
        }
        for (size_t i = 0; i < d->ncols && r == 0; i++) {
            ProdCol *c = &d->cols[i];
            PyObject *v;
            if (vals) {
                v = PySequence_Fast_GET_ITEM(vals, i);
            } else {
                v = PyDict_GetItemWithError(item, PyList_GET_ITEM(names, i));
                if (!v && PyErr_Occurred()) r = -1;
            }
            if (r == 0 && (!v || v == Py_None)) {
                set_valid(c, nrows, row, 0);
            } else if (r == 0) {
                Py_INCREF(v);
                r = prod_store(c, row, v, &chars[i]);
                Py_DECREF(v);
                if (r == 0) set_valid(c, nrows, row, 1);
                else prod_context(c->name, (Py_ssize_t)row);
            }
            if (c->kind == PK_STR) ((int32_t *)c->values)[row + 1] = (int32_t)chars[i].len;
        }
        Py_XDECREF(vals);
    }
    for (size_t i = 0; i < d->ncols; i++) {
        ProdCol *c = &d->cols[i];
        if (c->kind == PK_STR) {
            /* never NULL, even when every string is empty */
            c->chars = xmalloc(chars[i].len + 1);
            if (chars[i].len) memcpy(c->chars, chars[i].data, chars[i].len);
        }
        buf_free(&chars[i]);
    }
    free(chars);
    Py_DECREF(seq);
    return r;
}

static PyObject *ab_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = { "columns", "rows", "batch_size", NULL };
    PyObject *columns, *rows, *names = NULL;
    Py_ssize_t batch = 65536;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|n:_ArrowBatch", kwlist, &columns, &rows, &batch))
        return NULL;
    if (batch <= 0) {
        PyErr_SetString(PyExc_ValueError, "batch_size must be positive");
        return NULL;
    }
    ProdData *d = xcalloc(1, sizeof *d);
    d->refs = 1;
    if (prod_columns(d, columns, &names) < 0 || prod_rows(d, rows, names) < 0) {
        Py_XDECREF(names);
        prod_unref(d);
        return NULL;
    }
    Py_DECREF(names);
    ArrowBatchObject *self = (ArrowBatchObject *)type->tp_alloc(type, 0);
    if (!self) {
        prod_unref(d);
        return NULL;
    }
    self->d = d;
    self->batch_rows = batch;
    return (PyObject *)self;
}

static void ab_dealloc(PyObject *o)
{
    ArrowBatchObject *self = (ArrowBatchObject *)o;
    PyTypeObject *type = Py_TYPE(o);
    prod_unref(self->d);
    type->tp_free(o);
    Py_DECREF(type);
}

static PyObject *ab_stream(PyObject *o, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = { "requested_schema", NULL };
    PyObject *requested = Py_None;
    /* requested_schema is best effort by the protocol; the types are
     * fixed by the rows, so it is accepted and not applied */
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:__arrow_c_stream__", kwlist, &requested)) return NULL;
    ArrowBatchObject *self = (ArrowBatchObject *)o;
    struct ArrowArrayStream *s = xcalloc(1, sizeof *s);
    ProdStream *ps = xcalloc(1, sizeof *ps);
    ps->d = self->d;
    prod_ref(self->d);
    ps->batch_rows = self->batch_rows;
    *s = (struct ArrowArrayStream){
        .get_schema = stream_get_schema, .get_next = stream_get_next,
        .get_last_error = stream_last_error, .release = stream_release, .private_data = ps,
    };
    live_add(1);
    PyObject *cap = PyCapsule_New(s, STREAM_CAPSULE, stream_capsule_free);
    if (!cap) {
        stream_release(s);
        free(s);
    }
    return cap;
}

static PyObject *ab_schema(PyObject *o, PyObject *unused)
{
    (void)unused;
    ArrowBatchObject *self = (ArrowBatchObject *)o;
    struct ArrowSchema *s = xcalloc(1, sizeof *s);
    export_schema(self->d, s);
    PyObject *cap = PyCapsule_New(s, SCHEMA_CAPSULE, schema_capsule_free);
    if (!cap) {
        s->release(s);
        free(s);
    }
    return cap;
}

static PyObject *ab_exports_alive(PyObject *cls, PyObject *unused)
{
    (void)cls;
    (void)unused;
    return PyLong_FromLong(__atomic_load_n(&live_exports, __ATOMIC_RELAXED));
}

static PyObject *ab_columns(PyObject *o, void *closure)
{
    (void)closure;
    ProdData *d = ((ArrowBatchObject *)o)->d;
    PyObject *list = PyList_New((Py_ssize_t)d->ncols);
    for (size_t i = 0; list && i < d->ncols; i++) {
        PyObject *t = Py_BuildValue("(ss)", d->cols[i].name, prod_kinds[d->cols[i].kind].name);
        if (!t) Py_CLEAR(list);
        else PyList_SET_ITEM(list, (Py_ssize_t)i, t);
    }
    return list;
}

static Py_ssize_t ab_len(PyObject *o)
{
    return (Py_ssize_t)((ArrowBatchObject *)o)->d->nrows;
}

static PyObject *ab_repr(PyObject *o)
{
    ProdData *d = ((ArrowBatchObject *)o)->d;
    return PyUnicode_FromFormat("<riffq._ArrowBatch: %zd rows, %zd columns>", (Py_ssize_t)d->nrows,
                                (Py_ssize_t)d->ncols);
}

static PyMethodDef ab_methods[] = {
    { "__arrow_c_stream__", (PyCFunction)(void (*)(void))ab_stream, METH_VARARGS | METH_KEYWORDS,
      "__arrow_c_stream__(requested_schema=None): a new \"arrow_array_stream\" PyCapsule over the rows." },
    { "__arrow_c_schema__", ab_schema, METH_NOARGS,
      "__arrow_c_schema__(): an \"arrow_schema\" PyCapsule of the columns." },
    { "_exports_alive", ab_exports_alive, METH_NOARGS | METH_STATIC,
      "Exported Arrow streams, schemas and arrays whose release has not run (for tests)." },
    { NULL, NULL, 0, NULL },
};

static PyGetSetDef ab_getset[] = {
    { "columns", ab_columns, NULL, "[(name, type), ...]", NULL },
    { NULL, NULL, NULL, NULL, NULL },
};

static PyType_Slot ab_slots[] = {
    { Py_tp_new, ab_new },
    { Py_tp_dealloc, ab_dealloc },
    { Py_tp_methods, ab_methods },
    { Py_tp_getset, ab_getset },
    { Py_sq_length, ab_len },
    { Py_tp_repr, ab_repr },
    { Py_tp_doc, "_ArrowBatch(columns, rows, batch_size=65536): rows as Arrow record batches.\n\n"
                 "columns: [(name, type)] with type int, float, bool, str, date or datetime.\n"
                 "Exports the Arrow PyCapsule stream interface; see riffq.helpers.to_arrow." },
    { 0, NULL },
};

static PyType_Spec ab_spec = {
    .name = "riffq._ArrowBatch",
    .basicsize = sizeof(ArrowBatchObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = ab_slots,
};

int plug_arrow_init(PyObject *module)
{
    PyDateTime_IMPORT;
    if (!PyDateTimeAPI) return -1;
    PyObject *type = PyType_FromSpec(&ab_spec);
    if (!type) return -1;
    int r = PyModule_AddType(module, (PyTypeObject *)type);
    Py_DECREF(type);
    return r;
}
