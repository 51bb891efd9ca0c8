/*
 * Single values between Postgres and Python.
 *
 * Parameters arrive as Postgres text with a type OID and become the Python
 * value a handler expects (int, Decimal, datetime, UUID, ...).  Results go
 * the other way: each Python value becomes the text Postgres' own output
 * function would print for the column's type, because clients parse that
 * text (psql shows it, drivers decode it).  Binary results are made from
 * this text by pgtypes, except on the DataFrame fast path (encode.c), which
 * shares the pure-C formatters at the end of this file.
 *
 * Everything with a PyObject needs the GIL; the plug_fmt_* functions do not,
 * so the fast path can run with the GIL released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin/plugin_internal.h"
#include "riffq/pgtypes.h"

#define US_PER_DAY 86400000000LL

void plug_convert_init(void)
{
    PyDateTime_IMPORT;
}

/* ---- calendar (proleptic Gregorian, as Postgres and Python use) ---- */

int64_t plug_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

/* ---- pure-C formatters ---- */

size_t plug_fmt_uint64(uint64_t v, char *out)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    return n;
}

size_t plug_fmt_int64(int64_t v, char *out)
{
    if (v < 0) {
        out[0] = '-';
        return 1 + plug_fmt_uint64((uint64_t)0 - (uint64_t)v, out + 1);
    }
    return plug_fmt_uint64((uint64_t)v, out);
}

static size_t fmt_special(double v, char *out)
{
    const char *s = isnan(v) ? "NaN" : isinf(v) ? (v > 0 ? "Infinity" : "-Infinity")
                  : signbit(v) ? "-0" : "0";
    size_t n = strlen(s);
    memcpy(out, s, n);
    return n;
}

/* Shortest digits that read back as the same value (Postgres' and Python's
 * rule since both use shortest round-trip output).  printf's correctly
 * rounded %.{p}e with the smallest p that round-trips gives them: a value
 * whose shortest form has at most DBL_DIG (FLT_DIG) digits reads back from
 * those digits, so starting there is exact. */
/* The common case without printf: v equal to m / 10^k for an integer m of
 * at most 15 digits (prices, measurements, halves...).  Division of exact
 * operands is correctly rounded, so (double)m / 10^k == v means the
 * decimal m.10^-k reads back as v; and two decimals of at most DBL_DIG
 * digits never read as the same double, so this is the shortest form, the
 * one the printf loop below finds.  Returns 0 when it does not apply. */
static int exact_decimal_digits(double v, char *digits, int *exp10)
{
    static const double pow10[] = { 1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
                                    1e11, 1e12, 1e13, 1e14, 1e15 };
    double a = fabs(v);
    if (!(a >= 1e-4 && a < 1e15)) return 0;
    for (int k = 0; k < 16; k++) {
        double s = a * pow10[k];
        if (s >= 1e15) return 0;
        if (s != floor(s)) continue;
        uint64_t m = (uint64_t)s;
        if ((double)m / pow10[k] != a) continue;
        char tmp[24];
        int n = (int)plug_fmt_uint64(m, tmp);
        int nd = n;
        while (nd > 1 && tmp[nd - 1] == '0') nd--;
        memcpy(digits, tmp, (size_t)nd);
        *exp10 = n - 1 - k;
        return nd;
    }
    return 0;
}

static int shortest_digits(double v, int single, char *digits, int *exp10)
{
    if (!single) {
        int nd = exact_decimal_digits(v, digits, exp10);
        if (nd) return nd;
    }
    char tmp[48];
    int p0 = single ? 6 : 15, p1 = single ? 9 : 17;
    /* subnormals carry fewer bits, so the DBL_DIG argument does not hold */
    if (single ? fabsf((float)v) < FLT_MIN : fabs(v) < DBL_MIN) p0 = 1;
    for (int p = p0; p <= p1; p++) {
        snprintf(tmp, sizeof tmp, "%.*e", p - 1, v);
        if (p == p1) break;
        if (single ? strtof(tmp, NULL) == (float)v : strtod(tmp, NULL) == v) break;
    }
    const char *s = tmp + (tmp[0] == '-');
    int nd = 0;
    for (; *s && *s != 'e'; s++)
        if (*s != '.') digits[nd++] = *s;
    *exp10 = atoi(s + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    return nd;
}

/* Fixed notation for exponents in [-4, hi), else d.ddde+XX: float8out
 * (hi 15) and float4out (hi 6) do exactly this.  hi = INT_MAX: always fixed
 * (numeric). */
static size_t layout(double v, int single, int hi, char *out)
{
    if (isnan(v) || isinf(v) || v == 0) return fmt_special(v, out);
    char digits[24];
    int exp;
    int nd = shortest_digits(v, single, digits, &exp);
    char *o = out;
    if (v < 0) *o++ = '-';
    if (exp >= -4 && exp < hi) {
        if (exp < 0) {
            *o++ = '0';
            *o++ = '.';
            for (int i = 0; i < -exp - 1; i++) *o++ = '0';
            memcpy(o, digits, (size_t)nd);
            o += nd;
        } else {
            for (int i = 0; i <= exp; i++) *o++ = i < nd ? digits[i] : '0';
            if (nd > exp + 1) {
                *o++ = '.';
                memcpy(o, digits + exp + 1, (size_t)(nd - exp - 1));
                o += nd - exp - 1;
            }
        }
    } else {
        *o++ = digits[0];
        if (nd > 1) {
            *o++ = '.';
            memcpy(o, digits + 1, (size_t)nd - 1);
            o += nd - 1;
        }
        *o++ = 'e';
        *o++ = exp < 0 ? '-' : '+';
        int a = exp < 0 ? -exp : exp;
        if (a >= 100) *o++ = (char)('0' + a / 100);
        *o++ = (char)('0' + a / 10 % 10);
        *o++ = (char)('0' + a % 10);
    }
    return (size_t)(o - out);
}

size_t plug_fmt_float8(double v, char *out) { return layout(v, 0, 15, out); }
size_t plug_fmt_float4(float v, char *out) { return layout(v, 1, 6, out); }

size_t plug_fmt_numeric_double(double v, char *out)
{
    if (v == 0) {
        out[0] = '0';
        return 1;
    }
    return layout(v, 0, 1 << 30, out);
}

static char *put2(char *p, unsigned v)
{
    p[0] = (char)('0' + v / 10);
    p[1] = (char)('0' + v % 10);
    return p + 2;
}

static char *put_year(char *p, int64_t y, int *bc)
{
    *bc = y <= 0;
    if (*bc) y = 1 - y;     /* there is no year 0: 0 is 1 BC */
    char tmp[24];
    size_t n = plug_fmt_int64(y, tmp);
    for (size_t i = n; i < 4; i++) *p++ = '0';
    memcpy(p, tmp, n);
    return p + n;
}

static char *put_time(char *p, int64_t us_of_day)
{
    int64_t s = us_of_day / 1000000;
    unsigned frac = (unsigned)(us_of_day % 1000000);
    p = put2(p, (unsigned)(s / 3600));
    *p++ = ':';
    p = put2(p, (unsigned)(s / 60 % 60));
    *p++ = ':';
    p = put2(p, (unsigned)(s % 60));
    if (frac) {
        /* Postgres drops trailing zeros of the fraction */
        *p++ = '.';
        char f[6];
        for (int i = 5; i >= 0; i--) {
            f[i] = (char)('0' + frac % 10);
            frac /= 10;
        }
        int n = 6;
        while (f[n - 1] == '0') n--;
        memcpy(p, f, (size_t)n);
        p += n;
    }
    return p;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

void plug_fmt_timestamp(int64_t us, int with_tz, Buf *out)
{
    int64_t days = floor_div(us, US_PER_DAY);
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    char tmp[64], *p = tmp;
    int bc;
    p = put_year(p, y, &bc);
    *p++ = '-';
    p = put2(p, m);
    *p++ = '-';
    p = put2(p, d);
    *p++ = ' ';
    p = put_time(p, us - days * US_PER_DAY);
    if (with_tz) {
        memcpy(p, "+00", 3);
        p += 3;
    }
    if (bc) {
        memcpy(p, " BC", 3);
        p += 3;
    }
    buf_append(out, tmp, (size_t)(p - tmp));
}

void plug_fmt_date(int64_t days, Buf *out)
{
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    char tmp[40], *p = tmp;
    int bc;
    p = put_year(p, y, &bc);
    *p++ = '-';
    p = put2(p, m);
    *p++ = '-';
    p = put2(p, d);
    if (bc) {
        memcpy(p, " BC", 3);
        p += 3;
    }
    buf_append(out, tmp, (size_t)(p - tmp));
}

/* ---- Postgres text -> Python (parameters) ---- */

static PyObject *raise_pg(const char *sqlstate, const char *type, const char *text)
{
    PyObject *msg = PyUnicode_FromFormat("invalid input syntax for type %s: \"%s\"", type, text);
    PyObject *exc = msg ? PyObject_CallFunction(plug_py.Error, "sO", sqlstate, msg) : NULL;
    if (exc) PyErr_SetObject(plug_py.Error, exc);
    Py_XDECREF(exc);
    Py_XDECREF(msg);
    return NULL;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static PyObject *bytea_to_py(const char *s)
{
    size_t n = strlen(s);
    Buf b;
    buf_init(&b);
    if (n >= 2 && s[0] == '\\' && s[1] == 'x') {
        for (size_t i = 2; i < n;) {
            if (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r') {
                i++;
                continue;
            }
            int hi = hexval((unsigned char)s[i]), lo = i + 1 < n ? hexval((unsigned char)s[i + 1]) : -1;
            if (hi < 0 || lo < 0) {
                buf_free(&b);
                return raise_pg("22P02", "bytea", s);
            }
            buf_append_byte(&b, (uint8_t)(hi << 4 | lo));
            i += 2;
        }
    } else {
        /* escape format: \\ and \ooo, everything else literal */
        for (size_t i = 0; i < n; i++) {
            if (s[i] != '\\') {
                buf_append_byte(&b, (uint8_t)s[i]);
            } else if (i + 1 < n && s[i + 1] == '\\') {
                buf_append_byte(&b, '\\');
                i++;
            } else if (i + 3 < n + 0 && s[i + 1] >= '0' && s[i + 1] <= '3' &&
                       s[i + 2] >= '0' && s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
                buf_append_byte(&b, (uint8_t)((s[i + 1] - '0') << 6 | (s[i + 2] - '0') << 3 | (s[i + 3] - '0')));
                i += 3;
            } else {
                buf_free(&b);
                return raise_pg("22P02", "bytea", s);
            }
        }
    }
    PyObject *r = PyBytes_FromStringAndSize(b.data ? b.data : "", (Py_ssize_t)b.len);
    buf_free(&b);
    return r;
}

/* "YYYY-MM-DD" at s; returns the characters used or 0. */
static int parse_date(const char *s, int *y, int *m, int *d)
{
    int n = 0;
    if (sscanf(s, "%4d-%2d-%2d%n", y, m, d, &n) != 3 || n < 8) return 0;
    if (*y < 1 || *m < 1 || *m > 12 || *d < 1 || *d > 31) return 0;
    return n;
}

/* "HH:MM[:SS[.ffffff]]" at s; returns the characters used or 0. */
static int parse_time(const char *s, int *hh, int *mi, int *ss, int *us)
{
    int n = 0;
    *ss = *us = 0;
    if (sscanf(s, "%2d:%2d%n", hh, mi, &n) != 2) return 0;
    if (s[n] == ':') {
        int k = 0;
        if (sscanf(s + n + 1, "%2d%n", ss, &k) != 1) return 0;
        n += 1 + k;
        if (s[n] == '.') {
            n++;
            int digits = 0;
            while (s[n] >= '0' && s[n] <= '9') {
                if (digits < 6) *us = *us * 10 + (s[n] - '0');
                digits++;
                n++;
            }
            for (; digits < 6; digits++) *us *= 10;
        }
    }
    if (*hh > 23 || *mi > 59 || *ss > 59) return 0;
    return n;
}

/* "+HH[:MM[:SS]]" or "Z"; seconds east of UTC. */
static int parse_offset(const char *s, int *secs)
{
    if (*s == 'Z' || *s == 'z') {
        *secs = 0;
        return s[1] == 0;
    }
    if (*s != '+' && *s != '-') return 0;
    int sign = *s == '-' ? -1 : 1, h = 0, m = 0, sec = 0;
    int n = sscanf(s + 1, "%2d:%2d:%2d", &h, &m, &sec);
    if (n < 1) {
        n = sscanf(s + 1, "%2d%2d", &h, &m);
        if (n < 1) return 0;
    }
    *secs = sign * (h * 3600 + m * 60 + sec);
    return 1;
}

static PyObject *tz_from_offset(int secs)
{
    if (secs == 0) {
        Py_INCREF(PyDateTime_TimeZone_UTC);
        return PyDateTime_TimeZone_UTC;
    }
    PyObject *delta = PyDelta_FromDSU(0, secs, 0);
    if (!delta) return NULL;
    PyObject *tz = PyTimeZone_FromOffset(delta);
    Py_DECREF(delta);
    return tz;
}

static PyObject *datetime_to_py(const char *s, int with_tz)
{
    int y, mo, d, hh = 0, mi = 0, ss = 0, us = 0;
    int n = parse_date(s, &y, &mo, &d);
    if (!n) return PyUnicode_FromString(s);     /* infinity, BC, ...: left as text */
    if (s[n] == ' ' || s[n] == 'T') {
        int k = parse_time(s + n + 1, &hh, &mi, &ss, &us);
        if (!k) return PyUnicode_FromString(s);
        n += 1 + k;
    }
    int off = 0, has_off = 0;
    if (s[n]) {
        if (!parse_offset(s + n, &off)) return PyUnicode_FromString(s);
        has_off = 1;
    }
    if (!with_tz && !has_off)
        return PyDateTime_FromDateAndTime(y, mo, d, hh, mi, ss, us);
    PyObject *tz = tz_from_offset(off);
    if (!tz) return NULL;
    PyObject *r = PyDateTimeAPI->DateTime_FromDateAndTime(y, mo, d, hh, mi, ss, us, tz,
                                                          PyDateTimeAPI->DateTimeType);
    Py_DECREF(tz);
    return r;
}

static PyObject *time_to_py(const char *s, int with_tz)
{
    int hh, mi, ss, us;
    int n = parse_time(s, &hh, &mi, &ss, &us);
    if (!n) return PyUnicode_FromString(s);
    if (!s[n] && !with_tz) return PyTime_FromTime(hh, mi, ss, us);
    int off = 0;
    if (s[n] && !parse_offset(s + n, &off)) return PyUnicode_FromString(s);
    PyObject *tz = tz_from_offset(off);
    if (!tz) return NULL;
    PyObject *r = PyDateTimeAPI->Time_FromTime(hh, mi, ss, us, tz, PyDateTimeAPI->TimeType);
    Py_DECREF(tz);
    return r;
}

PyObject *plug_param_to_py(uint32_t oid, const char *s)
{
    if (!s) Py_RETURN_NONE;
    switch (oid) {
    case PGT_INT2: case PGT_INT4: case PGT_INT8: case PGT_OID: {
        char *end;
        PyObject *r = PyLong_FromString(s, &end, 10);
        if (!r) {
            PyErr_Clear();
            const PgType *t = pgt_by_oid(oid);
            return raise_pg("22P02", oid == PGT_INT2 ? "smallint" : oid == PGT_INT4 ? "integer"
                                   : oid == PGT_INT8 ? "bigint" : t ? t->name : "integer", s);
        }
        return r;
    }
    case PGT_FLOAT4: case PGT_FLOAT8: {
        PyObject *str = PyUnicode_FromString(s);
        PyObject *r = str ? PyFloat_FromString(str) : NULL;
        Py_XDECREF(str);
        if (!r && PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyErr_Clear();
            return raise_pg("22P02", oid == PGT_FLOAT4 ? "real" : "double precision", s);
        }
        return r;
    }
    case PGT_NUMERIC: {
        PyObject *r = PyObject_CallFunction(plug_py.Decimal, "s", s);
        if (!r) {
            PyErr_Clear();
            return raise_pg("22P02", "numeric", s);
        }
        return r;
    }
    case PGT_BOOL: {
        static const char *const yes[] = { "t", "true", "y", "yes", "on", "1" };
        static const char *const no[] = { "f", "false", "n", "no", "off", "0" };
        for (size_t i = 0; i < 6; i++) {
            if (strcasecmp(s, yes[i]) == 0) Py_RETURN_TRUE;
            if (strcasecmp(s, no[i]) == 0) Py_RETURN_FALSE;
        }
        return raise_pg("22P02", "boolean", s);
    }
    case PGT_BYTEA:
        return bytea_to_py(s);
    case PGT_DATE: {
        int y, m, d;
        int n = parse_date(s, &y, &m, &d);
        if (n && !s[n]) return PyDate_FromDate(y, m, d);
        return PyUnicode_FromString(s);
    }
    case PGT_TIMESTAMP:
        return datetime_to_py(s, 0);
    case PGT_TIMESTAMPTZ:
        return datetime_to_py(s, 1);
    case PGT_TIME:
        return time_to_py(s, 0);
    case PGT_TIMETZ:
        return time_to_py(s, 1);
    case PGT_JSON: case PGT_JSONB:
        return PyObject_CallFunction(plug_py.json_loads, "s", s);
    case PGT_UUID: {
        PyObject *r = PyObject_CallFunction(plug_py.UUID, "s", s);
        if (!r) {
            PyErr_Clear();
            return raise_pg("22P02", "uuid", s);
        }
        return r;
    }
    default:
        return PyUnicode_FromString(s);
    }
}

/* ---- Python -> Postgres text (results) ---- */

static const char *short_type_name(PyObject *v)
{
    const char *n = Py_TYPE(v)->tp_name;
    const char *dot = strrchr(n, '.');
    return dot ? dot + 1 : n;
}

static int is_text_like(uint32_t oid)
{
    return oid == PGT_TEXT || oid == PGT_VARCHAR || oid == PGT_BPCHAR || oid == PGT_NAME ||
           oid == PGT_UNKNOWN || oid == PGT_CHAR;
}

static int is_int_type(uint32_t oid)
{
    return oid == PGT_INT2 || oid == PGT_INT4 || oid == PGT_INT8 || oid == PGT_OID;
}

static const char *int_type_name(uint32_t oid)
{
    return oid == PGT_INT2 ? "smallint" : oid == PGT_INT4 ? "integer" : "bigint";
}

static int int_in_range(uint32_t oid, long long v)
{
    if (oid == PGT_INT2) return v >= INT16_MIN && v <= INT16_MAX;
    if (oid == PGT_INT4) return v >= INT32_MIN && v <= INT32_MAX;
    if (oid == PGT_OID) return v >= 0 && v <= UINT32_MAX;
    return 1;
}

static void append_bool(uint32_t oid, int b, Buf *out)
{
    if (is_text_like(oid) || oid == PGT_JSON || oid == PGT_JSONB)
        buf_append_str(out, b ? "true" : "false");
    else if (is_int_type(oid) || oid == PGT_NUMERIC || oid == PGT_FLOAT4 || oid == PGT_FLOAT8)
        buf_append_byte(out, b ? '1' : '0');
    else
        buf_append_byte(out, b ? 't' : 'f');
}

static int append_py_str(PyObject *s, Buf *out, RqError *err)
{
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(s, &n);
    if (!u) {
        plug_py_error("riffq", 0, err);
        return -1;
    }
    buf_append(out, u, (size_t)n);
    return 0;
}

static int append_str_of(PyObject *v, Buf *out, RqError *err)
{
    PyObject *s = PyObject_Str(v);
    if (!s) {
        plug_py_error("riffq", 0, err);
        return -1;
    }
    int r = append_py_str(s, out, err);
    Py_DECREF(s);
    return r;
}

static void append_hex(const char *p, size_t n, Buf *out)
{
    static const char hex[] = "0123456789abcdef";
    buf_reserve(out, 2 + 2 * n);
    char *o = out->data + out->len;
    *o++ = '\\';
    *o++ = 'x';
    for (size_t i = 0; i < n; i++) {
        *o++ = hex[(unsigned char)p[i] >> 4];
        *o++ = hex[(unsigned char)p[i] & 15];
    }
    out->len += 2 + 2 * n;
}

static int append_int(PyObject *v, uint32_t oid, Buf *out, RqError *err)
{
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && PyErr_Occurred()) {
        plug_py_error("riffq", 0, err);
        return -1;
    }
    if (oid == PGT_BOOL) {
        buf_append_byte(out, (x != 0 || overflow) ? 't' : 'f');
        return 0;
    }
    if (overflow || (is_int_type(oid) && !int_in_range(oid, x))) {
        if (is_int_type(oid)) {
            rq_error_set(err, "22003", "%s out of range", int_type_name(oid));
            return -1;
        }
        return append_str_of(v, out, err);
    }
    char tmp[24];
    buf_append(out, tmp, plug_fmt_int64(x, tmp));
    return 0;
}

static int append_double(double d, uint32_t oid, int nan_null, Buf *out, RqError *err)
{
    char tmp[400];
    if (isnan(d) && nan_null) return 1;
    if (is_int_type(oid)) {
        if (isnan(d) || isinf(d) || fabs(rint(d)) > 9.2e18 || !int_in_range(oid, (long long)rint(d))) {
            rq_error_set(err, "22003", "%s out of range", int_type_name(oid));
            return -1;
        }
        buf_append(out, tmp, plug_fmt_int64((int64_t)rint(d), tmp));   /* rounds like Postgres' cast */
    } else if (oid == PGT_FLOAT4) {
        buf_append(out, tmp, plug_fmt_float4((float)d, tmp));
    } else if (oid == PGT_NUMERIC) {
        buf_append(out, tmp, plug_fmt_numeric_double(d, tmp));
    } else if (oid == PGT_BOOL) {
        buf_append_byte(out, d != 0 ? 't' : 'f');
    } else {
        buf_append(out, tmp, plug_fmt_float8(d, tmp));
    }
    return 0;
}

static int64_t utc_offset_us(PyObject *v, RqError *err, int *has)
{
    *has = 0;
    PyObject *off = PyObject_CallMethod(v, "utcoffset", NULL);
    if (!off) {
        plug_py_error("riffq", 0, err);
        return INT64_MIN;
    }
    int64_t us = 0;
    if (off != Py_None && PyDelta_Check(off)) {
        *has = 1;
        us = (int64_t)PyDateTime_DELTA_GET_DAYS(off) * US_PER_DAY +
             (int64_t)PyDateTime_DELTA_GET_SECONDS(off) * 1000000 +
             PyDateTime_DELTA_GET_MICROSECONDS(off);
    }
    Py_DECREF(off);
    return us;
}

static void append_offset(int64_t off_us, Buf *out)
{
    int64_t s = off_us / 1000000;
    char sign = s < 0 ? '-' : '+';
    if (s < 0) s = -s;
    buf_printf(out, "%c%02d", sign, (int)(s / 3600));
    if (s % 3600) buf_printf(out, ":%02d", (int)(s / 60 % 60));
    if (s % 60) buf_printf(out, ":%02d", (int)(s % 60));
}

static int append_datetime(PyObject *v, uint32_t oid, Buf *out, RqError *err)
{
    int64_t us = (plug_days_from_civil(PyDateTime_GET_YEAR(v), PyDateTime_GET_MONTH(v),
                                  PyDateTime_GET_DAY(v)) * 86400 +
                  PyDateTime_DATE_GET_HOUR(v) * 3600 + PyDateTime_DATE_GET_MINUTE(v) * 60 +
                  PyDateTime_DATE_GET_SECOND(v)) * 1000000LL +
                 PyDateTime_DATE_GET_MICROSECOND(v);
    int has_tz;
    int64_t off = utc_offset_us(v, err, &has_tz);
    if (off == INT64_MIN) return -1;
    us -= off;      /* aware values are shown in UTC, the gateway's TimeZone */
    if (oid == PGT_DATE) {
        plug_fmt_date(floor_div(us, US_PER_DAY), out);
    } else if (oid == PGT_TIME || oid == PGT_TIMETZ) {
        int64_t days = floor_div(us, US_PER_DAY);
        char tmp[32];
        char *p = put_time(tmp, us - days * US_PER_DAY);
        buf_append(out, tmp, (size_t)(p - tmp));
        if (oid == PGT_TIMETZ) buf_append_str(out, "+00");
    } else {
        int tz = oid == PGT_TIMESTAMPTZ || (oid != PGT_TIMESTAMP && has_tz);
        plug_fmt_timestamp(us, tz, out);
    }
    return 0;
}

static int append_date(PyObject *v, uint32_t oid, Buf *out)
{
    int64_t days = plug_days_from_civil(PyDateTime_GET_YEAR(v), PyDateTime_GET_MONTH(v),
                                   PyDateTime_GET_DAY(v));
    if (oid == PGT_TIMESTAMP || oid == PGT_TIMESTAMPTZ)
        plug_fmt_timestamp(days * US_PER_DAY, oid == PGT_TIMESTAMPTZ, out);
    else
        plug_fmt_date(days, out);
    return 0;
}

static int append_time(PyObject *v, uint32_t oid, Buf *out, RqError *err)
{
    int64_t us = ((int64_t)PyDateTime_TIME_GET_HOUR(v) * 3600 + PyDateTime_TIME_GET_MINUTE(v) * 60 +
                  PyDateTime_TIME_GET_SECOND(v)) * 1000000LL + PyDateTime_TIME_GET_MICROSECOND(v);
    char tmp[32];
    char *p = put_time(tmp, us);
    buf_append(out, tmp, (size_t)(p - tmp));
    int has_tz;
    int64_t off = utc_offset_us(v, err, &has_tz);
    if (off == INT64_MIN) return -1;
    if (has_tz) append_offset(off, out);
    else if (oid == PGT_TIMETZ) buf_append_str(out, "+00");
    return 0;
}

static void append_interval(PyObject *v, Buf *out)
{
    int64_t us = (int64_t)PyDateTime_DELTA_GET_DAYS(v) * US_PER_DAY +
                 (int64_t)PyDateTime_DELTA_GET_SECONDS(v) * 1000000 +
                 PyDateTime_DELTA_GET_MICROSECONDS(v);
    int neg = us < 0;
    uint64_t a = neg ? (uint64_t)0 - (uint64_t)us : (uint64_t)us;
    uint64_t days = a / (uint64_t)US_PER_DAY, rest = a % (uint64_t)US_PER_DAY;
    if (days) {
        buf_printf(out, "%s%llu day%s", neg ? "-" : "", (unsigned long long)days,
                   days == 1 && !neg ? "" : "s");
    }
    if (rest || !days) {
        if (days) buf_append_byte(out, ' ');
        if (neg) buf_append_byte(out, '-');
        char tmp[40];
        /* hours may exceed 24 only through days, which are split off above */
        char *p = put_time(tmp, (int64_t)rest);
        buf_append(out, tmp, (size_t)(p - tmp));
    }
}

static int append_decimal(PyObject *v, uint32_t oid, Buf *out, RqError *err)
{
    if (oid == PGT_FLOAT4 || oid == PGT_FLOAT8 || is_int_type(oid)) {
        double d = PyFloat_AsDouble(v);
        if (d == -1.0 && PyErr_Occurred()) {
            plug_py_error("riffq", 0, err);
            return -1;
        }
        return append_double(d, oid, 0, out, err);
    }
    PyObject *s = PyObject_Str(v);
    if (!s) {
        plug_py_error("riffq", 0, err);
        return -1;
    }
    /* Decimal('1E+3') prints in exponent form; numeric never does */
    if (PyUnicode_FindChar(s, 'E', 0, PyUnicode_GET_LENGTH(s), 1) >= 0 &&
        PyUnicode_CompareWithASCIIString(s, "Infinity") != 0 &&
        PyUnicode_CompareWithASCIIString(s, "-Infinity") != 0) {
        Py_DECREF(s);
        PyObject *spec = PyUnicode_FromString("f");
        s = spec ? PyObject_Format(v, spec) : NULL;
        Py_XDECREF(spec);
        if (!s) {
            plug_py_error("riffq", 0, err);
            return -1;
        }
    }
    int r = append_py_str(s, out, err);
    Py_DECREF(s);
    return r;
}

static int append_array(PyObject *seq, uint32_t elem, int nan_null, Buf *out, RqError *err);

static int append_json(PyObject *v, Buf *out, RqError *err)
{
    PyObject *s = PyObject_CallOneArg(plug_py.json_dumps, v);
    if (!s) {
        plug_py_error("riffq", 0, err);
        return -1;
    }
    int r = append_py_str(s, out, err);
    Py_DECREF(s);
    return r;
}

int plug_value_to_text(PyObject *v, uint32_t oid, int nan_null, Buf *out, RqError *err)
{
    if (v == Py_None) return 1;
    PyTypeObject *t = Py_TYPE(v);
    if (PyBool_Check(v)) {
        append_bool(oid, v == Py_True, out);
        return 0;
    }
    if (PyLong_Check(v)) return append_int(v, oid, out, err);
    if (PyFloat_Check(v)) return append_double(PyFloat_AS_DOUBLE(v), oid, nan_null, out, err);
    if (PyUnicode_Check(v)) {
        if (oid == PGT_BYTEA) {
            Py_ssize_t n;
            const char *u = PyUnicode_AsUTF8AndSize(v, &n);
            if (!u) {
                plug_py_error("riffq", 0, err);
                return -1;
            }
            if (n >= 2 && u[0] == '\\' && u[1] == 'x') buf_append(out, u, (size_t)n);
            else append_hex(u, (size_t)n, out);
            return 0;
        }
        return append_py_str(v, out, err);
    }
    if (PyBytes_Check(v)) {
        if (is_text_like(oid) || oid == PGT_JSON || oid == PGT_JSONB)
            buf_append(out, PyBytes_AS_STRING(v), (size_t)PyBytes_GET_SIZE(v));
        else
            append_hex(PyBytes_AS_STRING(v), (size_t)PyBytes_GET_SIZE(v), out);
        return 0;
    }
    if (PyByteArray_Check(v) || PyMemoryView_Check(v)) {
        PyObject *b = PyBytes_FromObject(v);
        if (!b) {
            plug_py_error("riffq", 0, err);
            return -1;
        }
        int r = plug_value_to_text(b, oid, nan_null, out, err);
        Py_DECREF(b);
        return r;
    }
    const char *tn = short_type_name(v);
    /* pandas' missing values; NaT is a datetime subclass, so test it first */
    if (strcmp(tn, "NaTType") == 0 || strcmp(tn, "NAType") == 0) return 1;
    if (PyDateTime_Check(v)) return append_datetime(v, oid, out, err);
    if (PyDate_Check(v)) return append_date(v, oid, out);
    if (PyTime_Check(v)) return append_time(v, oid, out, err);
    if (PyDelta_Check(v)) {
        append_interval(v, out);
        return 0;
    }
    if (PyObject_IsInstance(v, plug_py.Decimal) == 1) {
        if (nan_null) {
            PyObject *nan = PyObject_CallMethod(v, "is_nan", NULL);
            int isnan_ = nan == Py_True;
            Py_XDECREF(nan);
            PyErr_Clear();
            if (isnan_) return 1;
        }
        return append_decimal(v, oid, out, err);
    }
    if (PyObject_IsInstance(v, plug_py.UUID) == 1) return append_str_of(v, out, err);
    if (PyDict_Check(v)) return append_json(v, out, err);
    if (PyList_Check(v) || PyTuple_Check(v)) {
        const PgType *pt = pgt_by_oid(oid);
        if (pt && pt->elem) return append_array(v, pt->elem, nan_null, out, err);
        return append_json(v, out, err);
    }
    if (strncmp(t->tp_name, "numpy.", 6) == 0) {
        /* numpy scalars: integers and floats through their number slots,
         * the rest (bool_, datetime64, arrays) through .item() */
        if (t->tp_as_number && t->tp_as_number->nb_index && strcmp(tn, "bool_") != 0) {
            PyObject *i = PyNumber_Index(v);
            if (!i) {
                plug_py_error("riffq", 0, err);
                return -1;
            }
            int r = append_int(i, oid, out, err);
            Py_DECREF(i);
            return r;
        }
        if (PyObject_HasAttrString(v, "dtype") && t->tp_as_number && t->tp_as_number->nb_float &&
            strstr(tn, "float")) {
            double d = PyFloat_AsDouble(v);
            if (d == -1.0 && PyErr_Occurred()) {
                plug_py_error("riffq", 0, err);
                return -1;
            }
            if (oid == PGT_FLOAT8 && strcmp(tn, "float32") == 0) {
                /* a float32 shown as float8 keeps its float32 digits, as
                 * Postgres' float4 -> float8 cast would not, but as users expect */
                char tmp[64];
                buf_append(out, tmp, plug_fmt_float4((float)d, tmp));
                return isnan(d) && nan_null ? 1 : 0;
            }
            return append_double(d, oid, nan_null, out, err);
        }
        PyObject *x = PyObject_CallOneArg(plug_py.np_scalar, v);
        if (!x) {
            plug_py_error("riffq", 0, err);
            return -1;
        }
        int r = x == v ? append_str_of(v, out, err) : plug_value_to_text(x, oid, nan_null, out, err);
        Py_DECREF(x);
        return r;
    }
    if (oid == PGT_JSON || oid == PGT_JSONB) return append_json(v, out, err);
    return append_str_of(v, out, err);
}

/* One-dimensional (or nested) Postgres array literal: {1,2,NULL,"a b"}. */
static int append_array(PyObject *seq, uint32_t elem, int nan_null, Buf *out, RqError *err)
{
    buf_append_byte(out, '{');
    Py_ssize_t n = PySequence_Size(seq);
    Buf item;
    buf_init(&item);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i) buf_append_byte(out, ',');
        PyObject *x = PySequence_GetItem(seq, i);
        if (!x) {
            buf_free(&item);
            plug_py_error("riffq", 0, err);
            return -1;
        }
        int r;
        if (PyList_Check(x) || PyTuple_Check(x)) {
            r = append_array(x, elem, nan_null, out, err);
            Py_DECREF(x);
            if (r < 0) {
                buf_free(&item);
                return -1;
            }
            continue;
        }
        buf_reset(&item);
        r = plug_value_to_text(x, elem, nan_null, &item, err);
        Py_DECREF(x);
        if (r < 0) {
            buf_free(&item);
            return -1;
        }
        if (r == 1) {
            buf_append_str(out, "NULL");
            continue;
        }
        int quote = item.len == 0 || (item.len == 4 && strncasecmp(item.data, "NULL", 4) == 0);
        for (size_t k = 0; k < item.len && !quote; k++)
            quote = strchr("{}\",\\ \t\n\r\v\f", item.data[k]) != NULL;
        if (!quote) {
            buf_append(out, item.data, item.len);
            continue;
        }
        buf_append_byte(out, '"');
        for (size_t k = 0; k < item.len; k++) {
            if (item.data[k] == '"' || item.data[k] == '\\') buf_append_byte(out, '\\');
            buf_append_byte(out, (uint8_t)item.data[k]);
        }
        buf_append_byte(out, '"');
    }
    buf_free(&item);
    buf_append_byte(out, '}');
    return 0;
}
