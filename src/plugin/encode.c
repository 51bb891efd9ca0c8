/*
 * What a handler returned -> column descriptions and DataRow messages, on
 * the worker thread, in the formats the client asked for.  The loop thread
 * then only copies bytes.
 *
 * Rows are encoded into a batch Buf that is handed to the loop when it
 * holds PLUG_BATCH_ROWS rows or PLUG_BATCH_BYTES bytes, and at the end of
 * every batch a generator yields (the generator's batches are the unit of
 * backpressure: the next one is pulled only after the previous was
 * encoded, and handed off only once the loop fetched the one before).
 *
 * DataFrames take a fast path: riffq._df_arrays (Python, once per column)
 * exposes each numeric, bool and datetime64 column as a numpy array, which
 * is read here through the buffer protocol; cells of those columns never
 * become Python objects, and when every column is such a column the batch
 * is encoded with the GIL released, so other handlers run meanwhile.  The
 * exported buffers pin the arrays' memory, which makes that safe.  Other
 * columns (object, string, ...) go through .tolist() and convert.c.
 *
 * Anything with __arrow_c_stream__ (pyarrow, DuckDB, Polars,
 * riffq.helpers.to_arrow) is read through the Arrow C stream interface by
 * arrow.c, which encodes from the Arrow buffers in the same way.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

#include "plugin/plugin_internal.h"
#include "riffq/pgtypes.h"
#include "riffq/wire.h"

#define PG_EPOCH_US 946684800000000LL       /* 2000-01-01 in Unix microseconds */
#define PG_EPOCH_DAYS 10957

typedef struct Enc {
    PlugQuery *q;
    const char *plugin;
    size_t ncols;
    uint32_t *oids;         /* owned */
    uint8_t *binary;        /* owned: 1 = binary format for that column */
    PyObject *names;        /* owned: list of column names, for dict rows */
    int nan_null;           /* DataFrame semantics: NaN/NaT/NA are NULL */
    Buf batch;
    size_t rows;            /* rows in batch */
    uint64_t total;
    Buf txt, bin;           /* scratch */
} Enc;

static void enc_free(Enc *e)
{
    free(e->oids);
    free(e->binary);
    Py_XDECREF(e->names);
    buf_free(&e->batch);
    buf_free(&e->txt);
    buf_free(&e->bin);
}

static int py_fail(Enc *e)
{
    plug_py_error(e->plugin, plug_query_canceled(e->q), &e->q->err);
    return -1;
}

static int flush(Enc *e)
{
    if (!e->rows) return 0;
    size_t n = e->rows;
    e->rows = 0;
    return plug_handoff(e->q, &e->batch, n);
}

static int full(const Enc *e)
{
    return e->rows >= PLUG_BATCH_ROWS || e->batch.len >= PLUG_BATCH_BYTES;
}

/* ---- columns ---- */

/* spec: [(name, oid, nullable), ...] as riffq._columns makes them. */
static int set_columns(Enc *e, PyObject *spec)
{
    PlugQuery *q = e->q;
    Py_ssize_t n = PyList_GET_SIZE(spec);
    if (n > 1664) {     /* Postgres' MaxTupleAttributeNumber */
        rq_error_set(&q->err, "54011", "a result can have at most 1664 columns, not %zd", n);
        return -1;
    }
    RqResult cols;
    rq_result_init(&cols);
    cols.returns_rows = 1;
    e->ncols = (size_t)n;
    e->oids = xcalloc((size_t)n + 1, sizeof *e->oids);
    e->binary = xcalloc((size_t)n + 1, 1);
    e->names = PyList_New(n);
    if (!e->names) return py_fail(e);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *c = PyList_GET_ITEM(spec, i);
        PyObject *name = PyTuple_GET_ITEM(c, 0);
        const char *u = PyUnicode_AsUTF8(name);
        if (!u) {
            rq_result_free(&cols);
            return py_fail(e);
        }
        e->oids[i] = (uint32_t)PyLong_AsUnsignedLong(PyTuple_GET_ITEM(c, 1));
        e->binary[i] = q->formats && wire_format_at(q->formats, q->n_formats, (size_t)i) == 1;
        Py_INCREF(name);
        PyList_SET_ITEM(e->names, i, name);
        rq_result_add_column(&cols, u, e->oids[i]);
    }
    if (rq_result_check_formats(&cols, q->formats, q->n_formats, &q->err) < 0) {
        rq_result_free(&cols);
        return -1;
    }
    plug_publish_columns(q, &cols);
    return 0;
}

static int set_columns_from_spec(Enc *e, PyObject *spec)
{
    PyObject *cols = PyObject_CallOneArg(plug_py.columns, spec);
    if (!cols) return py_fail(e);
    int r = set_columns(e, cols);
    Py_DECREF(cols);
    return r;
}

/* ---- one value ---- */

static int put_text(Enc *e, size_t i, const char *s, size_t len)
{
    if (!e->binary[i]) {
        wire_row_value(&e->batch, s, (int32_t)len);
        return 0;
    }
    buf_reset(&e->bin);
    if (pgt_text_to_binary(e->oids[i], s, len, &e->bin, &e->q->err) < 0) return -1;
    wire_row_value(&e->batch, e->bin.data ? e->bin.data : "", (int32_t)e->bin.len);
    return 0;
}

static int put_value(Enc *e, size_t i, PyObject *v)
{
    buf_reset(&e->txt);
    int r = plug_value_to_text(v, e->oids[i], e->nan_null, &e->txt, &e->q->err);
    if (r < 0) return -1;
    if (r == 1) {
        wire_row_value(&e->batch, NULL, -1);
        return 0;
    }
    return put_text(e, i, e->txt.data ? e->txt.data : "", e->txt.len);
}

/* ---- rows of Python objects ---- */

static int put_row(Enc *e, PyObject *row)
{
    PlugQuery *q = e->q;
    PyObject *seq = NULL;       /* owned: a row given as another kind of sequence */
    int single = 0;
    if (!PyTuple_Check(row) && !PyList_Check(row) && !PyDict_Check(row)) {
        int scalar = PyUnicode_Check(row) || PyBytes_Check(row) || !PySequence_Check(row);
        if (scalar && e->ncols == 1) {
            single = 1;
        } else if (!scalar) {
            seq = PySequence_Fast(row, "row");
            if (!seq) return py_fail(e);
        } else {
            rq_error_set(&q->err, "XX000", "row %llu is a %s; expected a tuple, a list or a dict",
                         (unsigned long long)e->total + 1, Py_TYPE(row)->tp_name);
            return -1;
        }
    }
    size_t start = e->batch.len;
    size_t m = wire_row_begin(&e->batch, (uint16_t)e->ncols);
    int r = 0;
    if (single) {
        r = put_value(e, 0, row);
    } else if (PyDict_Check(row)) {
        for (size_t i = 0; i < e->ncols && r == 0; i++) {
            PyObject *v = PyDict_GetItemWithError(row, PyList_GET_ITEM(e->names, i));
            if (!v && PyErr_Occurred()) r = py_fail(e);
            else r = put_value(e, i, v ? v : Py_None);
        }
    } else {
        PyObject *items = seq ? seq : row;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
        if ((size_t)n != e->ncols) {
            rq_error_set(&q->err, "XX000", "row %llu has %zd values but the result has %zu columns",
                         (unsigned long long)e->total + 1, n, e->ncols);
            r = -1;
        }
        PyObject **v = PySequence_Fast_ITEMS(items);
        for (size_t i = 0; i < e->ncols && r == 0; i++) r = put_value(e, i, v[i]);
    }
    Py_XDECREF(seq);
    if (r < 0) {
        e->batch.len = start;
        return -1;
    }
    wire_end(&e->batch, m);
    e->rows++;
    e->total++;
    return 0;
}

static int put_rows(Enc *e, PyObject *rows, int flush_at_end)
{
    if (PyList_Check(rows) || PyTuple_Check(rows)) {
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(rows); i++) {
            PyObject *row = PySequence_Fast_GET_ITEM(rows, i);
            Py_INCREF(row);     /* the list is the handler's; keep the row alive */
            int r = put_row(e, row);
            Py_DECREF(row);
            if (r < 0) return -1;
            if (full(e) && flush(e) < 0) return -1;
        }
    } else {
        PyObject *it = PyObject_GetIter(rows);
        if (!it) return py_fail(e);
        PyObject *row;
        while ((row = PyIter_Next(it))) {
            int r = put_row(e, row);
            Py_DECREF(row);
            if (r < 0 || (full(e) && flush(e) < 0)) {
                Py_DECREF(it);
                return -1;
            }
        }
        Py_DECREF(it);
        if (PyErr_Occurred()) return py_fail(e);
    }
    return flush_at_end ? flush(e) : 0;
}

/* ---- DataFrames ---- */

enum { DF_SLOW = 0, DF_INT, DF_UINT, DF_FLOAT, DF_BOOL, DF_DT };

typedef struct DfCol {
    int kind;
    Py_buffer view;         /* DF_INT..DF_DT */
    int has_view;
    Py_buffer mask;         /* NULL flags of nullable extension dtypes */
    int has_mask;
    char fmt;               /* struct format char of view */
    int64_t mul, div;       /* datetime64 unit -> microseconds */
    PyObject *list;         /* DF_SLOW: owned list of Python values */
} DfCol;

static char buffer_format(const Py_buffer *v)
{
    const char *f = v->format ? v->format : "B";
    if (*f == '@' || *f == '=' || *f == '<') f++;
    else if (*f == '>' || *f == '!') return 0;    /* big-endian arrays: take the slow path */
    return f[1] ? 0 : f[0];
}

static int is_text_target(uint32_t oid)
{
    return oid == PGT_TEXT || oid == PGT_VARCHAR || oid == PGT_BPCHAR || oid == PGT_NAME ||
           oid == PGT_UNKNOWN;
}

static int is_int_target(uint32_t oid)
{
    return oid == PGT_INT2 || oid == PGT_INT4 || oid == PGT_INT8 || oid == PGT_OID;
}

/* Which kinds the fast path encodes for which column types; anything else
 * goes through Python objects and convert.c. */
static int fast_ok(int kind, uint32_t oid)
{
    switch (kind) {
    case DF_INT: case DF_UINT:
        return is_int_target(oid) || oid == PGT_FLOAT4 || oid == PGT_FLOAT8 ||
               oid == PGT_NUMERIC || oid == PGT_BOOL || is_text_target(oid);
    case DF_FLOAT:
        return oid == PGT_FLOAT4 || oid == PGT_FLOAT8 || oid == PGT_NUMERIC || is_text_target(oid);
    case DF_BOOL:
        return oid == PGT_BOOL || is_text_target(oid) || is_int_target(oid);
    case DF_DT:
        return 1;
    }
    return 0;
}

static int unit_to_us(const char *unit, int64_t *mul, int64_t *div)
{
    static const struct { const char *u; int64_t mul, div; } units[] = {
        { "ns", 1, 1000 }, { "us", 1, 1 }, { "ms", 1000, 1 }, { "s", 1000000, 1 },
        { "m", 60000000LL, 1 }, { "h", 3600000000LL, 1 }, { "D", 86400000000LL, 1 },
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(units[i].u, unit) == 0) {
            *mul = units[i].mul;
            *div = units[i].div;
            return 0;
        }
    }
    return -1;
}

static void df_cols_free(DfCol *cols, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (cols[i].has_view) PyBuffer_Release(&cols[i].view);
        if (cols[i].has_mask) PyBuffer_Release(&cols[i].mask);
        Py_XDECREF(cols[i].list);
    }
    free(cols);
}

/* arrays: riffq._df_arrays(df).  Fills cols; 0 or -1 with q->err. */
static int df_prepare(Enc *e, PyObject *arrays, DfCol *cols, int *all_fast)
{
    *all_fast = 1;
    for (size_t i = 0; i < e->ncols; i++) {
        PyObject *t = PyList_GET_ITEM(arrays, i);
        const char *kind = PyUnicode_AsUTF8(PyTuple_GET_ITEM(t, 2));
        PyObject *payload = PyTuple_GET_ITEM(t, 3), *mask = PyTuple_GET_ITEM(t, 4);
        PyObject *unit = PyTuple_GET_ITEM(t, 5);
        DfCol *c = &cols[i];
        if (!kind) return py_fail(e);
        if (kind[0] == 'n' || kind[0] == 'M') {
            if (PyObject_GetBuffer(payload, &c->view, PyBUF_RECORDS_RO) < 0) return py_fail(e);
            c->has_view = 1;
            c->fmt = buffer_format(&c->view);
            switch (c->fmt) {
            case 'b': case 'h': case 'i': case 'l': case 'q': c->kind = DF_INT; break;
            case 'B': case 'H': case 'I': case 'L': case 'Q': c->kind = DF_UINT; break;
            case 'f': case 'd': c->kind = DF_FLOAT; break;
            case '?': c->kind = DF_BOOL; break;
            default: c->kind = DF_SLOW; break;
            }
            if (kind[0] == 'M') {
                const char *u = PyUnicode_AsUTF8(unit);
                if (!u) return py_fail(e);
                c->kind = (c->fmt == 'q' || c->fmt == 'l') && unit_to_us(u, &c->mul, &c->div) == 0
                          ? DF_DT : DF_SLOW;
                if (c->kind == DF_SLOW) {
                    rq_error_set(&e->q->err, "0A000", "datetime64 unit \"%s\" is not supported", u);
                    return -1;
                }
            }
            if (c->kind != DF_SLOW && c->view.ndim != 1) c->kind = DF_SLOW;
            if (c->kind != DF_SLOW && !fast_ok(c->kind, e->oids[i])) c->kind = DF_SLOW;
            if (c->kind == DF_SLOW) {
                PyBuffer_Release(&c->view);
                c->has_view = 0;
                c->list = PyObject_CallMethod(payload, "tolist", NULL);
                if (!c->list) return py_fail(e);
            }
            if (c->kind != DF_SLOW && mask != Py_None) {
                if (PyObject_GetBuffer(mask, &c->mask, PyBUF_RECORDS_RO) < 0) return py_fail(e);
                c->has_mask = 1;
            }
        } else {
            c->kind = DF_SLOW;
            c->list = PySequence_List(payload);
            if (!c->list) return py_fail(e);
        }
        if (c->kind == DF_SLOW) *all_fast = 0;
    }
    return 0;
}

static inline void put_be16(Buf *b, uint16_t v) { buf_append_u16(b, v); }
static inline void put_be32(Buf *b, uint32_t v) { buf_append_u32(b, v); }
static inline void put_be64(Buf *b, uint64_t v) { buf_append_u64(b, v); }

static void cell_header(Buf *b, int32_t len)
{
    buf_append_u32(b, (uint32_t)len);
}

static int64_t read_int(const DfCol *c, const char *p)
{
    switch (c->fmt) {
    case 'b': return *(const int8_t *)p;
    case 'h': { int16_t v; memcpy(&v, p, 2); return v; }
    case 'i': { int32_t v; memcpy(&v, p, 4); return v; }
    default:  { int64_t v; memcpy(&v, p, 8); return v; }
    }
}

static uint64_t read_uint(const DfCol *c, const char *p)
{
    switch (c->fmt) {
    case 'B': return *(const uint8_t *)p;
    case 'H': { uint16_t v; memcpy(&v, p, 2); return v; }
    case 'I': { uint32_t v; memcpy(&v, p, 4); return v; }
    default:  { uint64_t v; memcpy(&v, p, 8); return v; }
    }
}

static const char *int_name(uint32_t oid)
{
    return oid == PGT_INT2 ? "smallint" : oid == PGT_INT4 ? "integer" : oid == PGT_OID ? "oid" : "bigint";
}

static int put_fast_text(Enc *e, size_t i, const char *s, size_t n)
{
    if (!e->binary[i]) {
        cell_header(&e->batch, (int32_t)n);
        buf_append(&e->batch, s, n);
        return 0;
    }
    return put_text(e, i, s, n);
}

/* An integer cell (signed, or unsigned above INT64_MAX when big). */
static int put_int_cell(Enc *e, size_t i, int64_t v, int big, uint64_t uv)
{
    uint32_t oid = e->oids[i];
    char tmp[400];
    if (is_int_target(oid)) {
        int ok = !big && (oid == PGT_INT8 ? 1 : oid == PGT_INT4 ? (v >= INT32_MIN && v <= INT32_MAX)
                          : oid == PGT_INT2 ? (v >= INT16_MIN && v <= INT16_MAX)
                          : (v >= 0 && v <= UINT32_MAX));
        if (!ok) {
            rq_error_set(&e->q->err, "22003", "%s out of range", int_name(oid));
            return -1;
        }
        if (e->binary[i]) {
            if (oid == PGT_INT8) { cell_header(&e->batch, 8); put_be64(&e->batch, (uint64_t)v); }
            else if (oid == PGT_INT2) { cell_header(&e->batch, 2); put_be16(&e->batch, (uint16_t)v); }
            else { cell_header(&e->batch, 4); put_be32(&e->batch, (uint32_t)v); }
            return 0;
        }
        return put_fast_text(e, i, tmp, plug_fmt_int64(v, tmp));
    }
    if (oid == PGT_FLOAT8 || oid == PGT_FLOAT4) {
        double d = big ? (double)uv : (double)v;
        if (e->binary[i]) {
            if (oid == PGT_FLOAT8) {
                uint64_t bits;
                memcpy(&bits, &d, 8);
                cell_header(&e->batch, 8);
                put_be64(&e->batch, bits);
            } else {
                float f = (float)d;
                uint32_t bits;
                memcpy(&bits, &f, 4);
                cell_header(&e->batch, 4);
                put_be32(&e->batch, bits);
            }
            return 0;
        }
        size_t n = oid == PGT_FLOAT8 ? plug_fmt_float8(d, tmp) : plug_fmt_float4((float)d, tmp);
        return put_fast_text(e, i, tmp, n);
    }
    if (oid == PGT_BOOL) {
        int b = big || v != 0;
        if (e->binary[i]) {
            cell_header(&e->batch, 1);
            buf_append_byte(&e->batch, (uint8_t)b);
            return 0;
        }
        return put_fast_text(e, i, b ? "t" : "f", 1);
    }
    size_t n = big ? plug_fmt_uint64(uv, tmp) : plug_fmt_int64(v, tmp);
    return put_fast_text(e, i, tmp, n);
}

static int put_float_cell(Enc *e, size_t i, double d, int single)
{
    uint32_t oid = e->oids[i];
    char tmp[400];
    if (isnan(d)) {
        cell_header(&e->batch, -1);
        return 0;
    }
    if (e->binary[i] && oid == PGT_FLOAT8) {
        uint64_t bits;
        memcpy(&bits, &d, 8);
        cell_header(&e->batch, 8);
        put_be64(&e->batch, bits);
        return 0;
    }
    if (e->binary[i] && oid == PGT_FLOAT4) {
        float f = (float)d;
        uint32_t bits;
        memcpy(&bits, &f, 4);
        cell_header(&e->batch, 4);
        put_be32(&e->batch, bits);
        return 0;
    }
    size_t n = oid == PGT_NUMERIC ? plug_fmt_numeric_double(d, tmp)
             : (oid == PGT_FLOAT4 || single) ? plug_fmt_float4((float)d, tmp)
             : plug_fmt_float8(d, tmp);
    return put_fast_text(e, i, tmp, n);
}

static int put_dt_cell(Enc *e, size_t i, const DfCol *c, int64_t raw)
{
    uint32_t oid = e->oids[i];
    if (raw == INT64_MIN) {         /* NaT */
        cell_header(&e->batch, -1);
        return 0;
    }
    int64_t us;
    if (c->div > 1) {
        /* round half up to microseconds, as Postgres rounds extra digits */
        int64_t q = raw / c->div, r = raw % c->div;
        if (r < 0) { r += c->div; q--; }
        us = q + (r * 2 >= c->div);
    } else {
        if (__builtin_mul_overflow(raw, c->mul, &us)) {
            rq_error_set(&e->q->err, "22008", "timestamp out of range");
            return -1;
        }
    }
    if (e->binary[i] && (oid == PGT_TIMESTAMP || oid == PGT_TIMESTAMPTZ)) {
        cell_header(&e->batch, 8);
        put_be64(&e->batch, (uint64_t)(us - PG_EPOCH_US));
        return 0;
    }
    int64_t days = us / 86400000000LL - (us % 86400000000LL < 0);
    if (e->binary[i] && oid == PGT_DATE) {
        cell_header(&e->batch, 4);
        put_be32(&e->batch, (uint32_t)(int32_t)(days - PG_EPOCH_DAYS));
        return 0;
    }
    buf_reset(&e->txt);
    if (oid == PGT_DATE) plug_fmt_date(days, &e->txt);
    else plug_fmt_timestamp(us, oid == PGT_TIMESTAMPTZ, &e->txt);
    return put_fast_text(e, i, e->txt.data, e->txt.len);
}

static int put_fast_cell(Enc *e, size_t i, const DfCol *c, Py_ssize_t row)
{
    if (c->has_mask && ((const uint8_t *)c->mask.buf)[row * c->mask.strides[0]]) {
        cell_header(&e->batch, -1);
        return 0;
    }
    const char *p = (const char *)c->view.buf + row * c->view.strides[0];
    switch (c->kind) {
    case DF_INT:
        return put_int_cell(e, i, read_int(c, p), 0, 0);
    case DF_UINT: {
        uint64_t u = read_uint(c, p);
        return put_int_cell(e, i, (int64_t)u, u > INT64_MAX, u);
    }
    case DF_FLOAT: {
        double d;
        if (c->fmt == 'f') {
            float f;
            memcpy(&f, p, 4);
            d = f;
        } else {
            memcpy(&d, p, 8);
        }
        return put_float_cell(e, i, d, c->fmt == 'f' && e->oids[i] != PGT_NUMERIC);
    }
    case DF_BOOL: {
        int b = *(const uint8_t *)p != 0;
        uint32_t oid = e->oids[i];
        if (e->binary[i] && oid == PGT_BOOL) {
            cell_header(&e->batch, 1);
            buf_append_byte(&e->batch, (uint8_t)b);
            return 0;
        }
        const char *s = oid == PGT_BOOL ? (b ? "t" : "f") : is_int_target(oid) ? (b ? "1" : "0")
                      : (b ? "true" : "false");
        return put_fast_text(e, i, s, strlen(s));
    }
    case DF_DT: {
        int64_t raw;
        memcpy(&raw, p, 8);
        return put_dt_cell(e, i, c, raw);
    }
    }
    return 0;
}

/* Rows [*row, end) until the batch is full.  No Python when all_fast. */
static int df_encode_rows(Enc *e, DfCol *cols, Py_ssize_t *row, Py_ssize_t end)
{
    for (; *row < end && !full(e); (*row)++) {
        size_t start = e->batch.len;
        size_t m = wire_row_begin(&e->batch, (uint16_t)e->ncols);
        for (size_t i = 0; i < e->ncols; i++) {
            int r = cols[i].kind == DF_SLOW
                  ? put_value(e, i, PyList_GET_ITEM(cols[i].list, *row))
                  : put_fast_cell(e, i, &cols[i], *row);
            if (r < 0) {
                e->batch.len = start;
                return -1;
            }
        }
        wire_end(&e->batch, m);
        e->rows++;
        e->total++;
    }
    return 0;
}

static int put_dataframe(Enc *e, PyObject *arrays, Py_ssize_t nrows)
{
    if ((size_t)PyList_GET_SIZE(arrays) != e->ncols) {
        rq_error_set(&e->q->err, "XX000", "a DataFrame with %zd columns was returned for %zu columns",
                     PyList_GET_SIZE(arrays), e->ncols);
        return -1;
    }
    DfCol *cols = xcalloc(e->ncols + 1, sizeof *cols);
    int all_fast, r = df_prepare(e, arrays, cols, &all_fast);
    for (size_t i = 0; i < e->ncols && r == 0; i++) {
        if (cols[i].kind == DF_SLOW && PyList_GET_SIZE(cols[i].list) != nrows) {
            rq_error_set(&e->q->err, "XX000", "DataFrame column %zu has an unexpected length", i + 1);
            r = -1;
        } else if (cols[i].kind != DF_SLOW && cols[i].view.shape[0] < nrows) {
            rq_error_set(&e->q->err, "XX000", "DataFrame column %zu has an unexpected length", i + 1);
            r = -1;
        }
    }
    Py_ssize_t row = 0;
    while (r == 0 && row < nrows) {
        if (all_fast) {
            Py_BEGIN_ALLOW_THREADS
            r = df_encode_rows(e, cols, &row, nrows);
            Py_END_ALLOW_THREADS
        } else {
            r = df_encode_rows(e, cols, &row, nrows);
        }
        if (r == 0 && full(e)) r = flush(e);
    }
    df_cols_free(cols, e->ncols);
    return r;
}

static PyObject *df_arrays(Enc *e, PyObject *df, Py_ssize_t *nrows)
{
    PyObject *arrays = PyObject_CallOneArg(plug_py.df_arrays, df);
    if (!arrays) {
        py_fail(e);
        return NULL;
    }
    *nrows = PyObject_Length(df);
    if (*nrows < 0) {
        Py_DECREF(arrays);
        py_fail(e);
        return NULL;
    }
    return arrays;
}

/* A DataFrame as the whole result: its dtypes give the column types. */
static int result_dataframe(Enc *e, PyObject *df)
{
    Py_ssize_t nrows;
    PyObject *arrays = df_arrays(e, df, &nrows);
    if (!arrays) return -1;
    Py_ssize_t n = PyList_GET_SIZE(arrays);
    PyObject *spec = PyList_New(n);
    if (!spec) {
        Py_DECREF(arrays);
        return py_fail(e);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(arrays, i);
        const char *typ = PyUnicode_AsUTF8(PyTuple_GET_ITEM(t, 1));
        uint32_t oid = typ ? plug_type_oid(typ, 1) : 0;
        PyErr_Clear();
        PyList_SET_ITEM(spec, i, Py_BuildValue("(OIO)", PyTuple_GET_ITEM(t, 0),
                                               (unsigned)(oid ? oid : PGT_TEXT), Py_True));
    }
    int r = set_columns(e, spec);
    Py_DECREF(spec);
    if (r == 0 && !e->q->describe_only) r = put_dataframe(e, arrays, nrows);
    Py_DECREF(arrays);
    return r == 0 ? flush(e) : -1;
}

static int put_batch(Enc *e, PyObject *batch)
{
    if (plug_py_is_dataframe(batch)) {
        Py_ssize_t nrows;
        PyObject *arrays = df_arrays(e, batch, &nrows);
        if (!arrays) return -1;
        int saved = e->nan_null;
        e->nan_null = 1;
        int r = put_dataframe(e, arrays, nrows);
        e->nan_null = saved;
        Py_DECREF(arrays);
        return r == 0 ? flush(e) : -1;
    }
    return put_rows(e, batch, 1);
}

/* (riffq.Columns, batches): one batch pulled at a time. */
static int result_stream(Enc *e, PyObject *columns, PyObject *batches)
{
    PyObject *spec = PyObject_GetAttr(columns, plug_py.str_columns);
    if (!spec) return py_fail(e);
    int r = set_columns(e, spec);
    Py_DECREF(spec);
    if (r < 0 || e->q->describe_only) return r;
    if (plug_py_is_dataframe(batches)) return put_batch(e, batches);
    PyObject *it = PyObject_GetIter(batches);
    if (!it) return py_fail(e);
    PyObject *batch;
    while ((batch = PyIter_Next(it))) {
        r = put_batch(e, batch);
        Py_DECREF(batch);
        if (r < 0) break;
    }
    Py_DECREF(it);
    if (r == 0 && PyErr_Occurred()) r = py_fail(e);
    return r;
}

static int result_rows(Enc *e, PyObject *rows, PyObject *columns)
{
    if (set_columns_from_spec(e, columns) < 0) return -1;
    if (e->q->describe_only) return 0;
    if (plug_py_is_dataframe(rows)) {
        e->nan_null = 1;
        return put_batch(e, rows);
    }
    return put_rows(e, rows, 1);
}

int plug_encode_result(PlugQuery *q, PyObject *res, const char *plugin)
{
    Enc e = { .q = q, .plugin = plugin };
    int r;
    if (PyObject_IsInstance(res, plug_py.Command) == 1) {
        PyObject *tag = PyObject_GetAttr(res, plug_py.str_tag);
        const char *u = tag ? PyUnicode_AsUTF8(tag) : NULL;
        if (!u) {
            Py_XDECREF(tag);
            return py_fail(&e);
        }
        RqResult none;
        rq_result_init(&none);
        plug_publish_columns(q, &none);
        q->tag = xstrdup(u);
        Py_DECREF(tag);
        return 0;
    }
    if (plug_py_is_dataframe(res)) {
        e.nan_null = 1;
        r = result_dataframe(&e, res);
    } else if (plug_arrow_is_stream(res)) {
        r = plug_arrow_encode(q, res, plugin, &e.total);
    } else if (PyObject_IsInstance(res, plug_py.Columns) == 1) {
        PyObject *none = PyList_New(0);
        r = none ? result_stream(&e, res, none) : py_fail(&e);
        Py_XDECREF(none);
    } else if (PyTuple_Check(res) && PyTuple_GET_SIZE(res) == 2) {
        PyObject *a = PyTuple_GET_ITEM(res, 0), *b = PyTuple_GET_ITEM(res, 1);
        if (PyObject_IsInstance(a, plug_py.Columns) == 1) r = result_stream(&e, a, b);
        else r = result_rows(&e, a, b);
    } else {
        rq_error_set(&q->err, "XX000",
                     "query handler of plugin \"%s\" returned %s; expected (rows, columns), a pandas "
                     "DataFrame, an Arrow stream (__arrow_c_stream__), (riffq.Columns, batches) or "
                     "riffq.Command",
                     plugin, res == Py_None ? "None" : Py_TYPE(res)->tp_name);
        r = -1;
    }
    PyErr_Clear();
    if (r == 0) q->tag = xasprintf("SELECT %llu", (unsigned long long)e.total);
    enc_free(&e);
    return r;
}
