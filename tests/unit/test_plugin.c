/*
 * Tests for the embedded-Python plugin engine (src/plugin/), driven through
 * its C API the way the session drives it: a real uv loop, plugins written
 * to a temporary directory, queries run until their callback reports DONE
 * or FAILED (a uv timer bounds every wait), and the DataRow bytes compared
 * with what Postgres itself would send.
 *
 * Expected binary values were computed with Python's struct and datetime
 * (commented beside them), never with the code under test.
 *
 * Each test forks (check's default), so each starts its own interpreter.
 * With CK_FORK=no all tests share one interpreter and create and free many
 * engines, which is how the valgrind run exercises engine teardown:
 *   CK_FORK=no valgrind --leak-check=full --suppressions=tests/valgrind-python.supp \
 *       build/tests/test_plugin
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <uv.h>

#include "riffq/config.h"
#include "riffq/log.h"
#include "riffq/pgtypes.h"
#include "riffq/plugin.h"
#include "plugin/plugin_internal.h"

/* Under valgrind everything runs ~50x slower: shrink the big result and
 * widen the time limits rather than skip the tests. */
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif
#define SLOW (RUNNING_ON_VALGRIND ? 20 : 1)

/* ------------------------------------------------------------------ */
/* fixture: a temp dir for plugin files, a loop, a hand-made Config     */

static char tmpdir[64];
static uv_loop_t loop;
static Config *cfg;
static PlugEngine *eng;

static void rm_tree(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
}

static void setup(void)
{
    strcpy(tmpdir, "/tmp/riffq_test_plugin_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    uv_loop_init(&loop);
    cfg = calloc(1, sizeof *cfg);
    cfg->path = strdup("<test>");
    cfg->dir = strdup(tmpdir);
    eng = NULL;
    log_set_level(LOG_ERROR);
}

static void cfg_clear_plugins(Config *c)
{
    for (size_t i = 0; i < c->n_plugins; i++) {
        free(c->plugins[i].name);
        free(c->plugins[i].module);
    }
    free(c->plugins);
    c->plugins = NULL;
    c->n_plugins = 0;
}

static void teardown(void)
{
    if (eng) plug_engine_free(eng);
    eng = NULL;
    uv_run(&loop, UV_RUN_DEFAULT);      /* lets the engine's async handle close */
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    cfg_clear_plugins(cfg);
    free(cfg->path);
    free(cfg->dir);
    free(cfg);
    rm_tree(tmpdir);
}

/* Write plugin NAME with SRC into the temp dir and add it to cfg. */
static void add_plugin(const char *name, const char *src)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s.py", tmpdir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(src, f);
    fclose(f);
    for (size_t i = 0; i < cfg->n_plugins; i++)
        if (strcmp(cfg->plugins[i].name, name) == 0) return;
    cfg->plugins = realloc(cfg->plugins, (cfg->n_plugins + 1) * sizeof *cfg->plugins);
    cfg->plugins[cfg->n_plugins] = (CfgPlugin){ .name = strdup(name), .module = strdup(path) };
    cfg->n_plugins++;
}

static void start_engine(int workers)
{
    char *err = NULL;
    eng = plug_engine_new(&loop, cfg, workers, &err);
    if (!eng) ck_abort_msg("engine: %s", err);
}

/* A single plugin named "p" with SRC, on a fresh engine. */
static void start_with(const char *src)
{
    add_plugin("p", src);
    start_engine(2);
}

/* ------------------------------------------------------------------ */
/* running queries                                                     */

typedef struct Run {
    PlugQuery *q;
    Buf rows;
    size_t n_rows;
    int done;
    int no_fetch;           /* leave rows unfetched (backpressure tests) */
    int callbacks;
    int stop_on_callback;
    size_t fetch_max;
} Run;

static void on_ready(void *ud)
{
    Run *r = ud;
    r->callbacks++;
    if (!r->no_fetch) {
        /* with a row limit, fetch like consecutive Executes would */
        size_t n;
        while ((n = plug_query_fetch(r->q, r->fetch_max, &r->rows)) > 0) r->n_rows += n;
    }
    PlugState s = plug_query_state(r->q);
    if (s == PLUG_DONE || s == PLUG_FAILED) r->done = 1;
    if (r->done || r->stop_on_callback) uv_stop(&loop);
}

static int timed_out;

static void on_guard(uv_timer_t *t)
{
    (void)t;
    timed_out = 1;
    uv_stop(&loop);
}

/* Run the loop until *flag or ms elapsed; returns 0 on time-out. */
static int run_until(int *flag, uint64_t ms)
{
    uv_timer_t guard;
    uv_timer_init(&loop, &guard);
    uv_timer_start(&guard, on_guard, ms, 0);
    timed_out = 0;
    while (!*flag && !timed_out) uv_run(&loop, UV_RUN_DEFAULT);
    uv_timer_stop(&guard);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return *flag;
}

static void run_wait(Run *r, uint64_t ms)
{
    uint64_t until = uv_now(&loop) + ms;
    while (!r->done) {
        uv_update_time(&loop);
        if (uv_now(&loop) >= until) break;
        run_until(&r->done, until - uv_now(&loop) + 1);
    }
    ck_assert_msg(r->done, "query did not finish within %llu ms", (unsigned long long)ms);
}

static PlugCtx test_ctx = { "alice", "db1", "psql", "r1", 7 };

static Run *query_full(const char *plugin, const char *sql, const char *const *params,
                       const uint32_t *types, uint16_t n_params, const char *formats,
                       const PlugCtx *ctx, int describe)
{
    Run *r = calloc(1, sizeof *r);
    buf_init(&r->rows);
    uint8_t fmt[64];
    uint16_t nf = 0;
    for (; formats && formats[nf]; nf++) {
        fmt[2 * nf] = 0;
        fmt[2 * nf + 1] = formats[nf] == 'b';
    }
    r->q = plug_query_start(eng, plugin, sql, params, types, n_params, nf ? fmt : NULL, nf,
                            ctx ? ctx : &test_ctx, describe, on_ready, r);
    ck_assert_ptr_nonnull(r->q);
    return r;
}

/* Run SQL on plugin "p" to the end; formats: "tbt..." per column or NULL. */
static Run *query(const char *sql, const char *formats)
{
    Run *r = query_full("p", sql, NULL, NULL, 0, formats, NULL, 0);
    run_wait(r, 20000 * SLOW);
    return r;
}

static void run_free(Run *r)
{
    plug_query_free(r->q);
    buf_free(&r->rows);
    free(r);
}

/* The bytes of cell (row, col) in a run of DataRow messages. */
static const char *cell(const Buf *b, size_t row, size_t col, int32_t *len)
{
    size_t pos = 0;
    for (size_t i = 0; pos < b->len; i++) {
        const uint8_t *m = (const uint8_t *)b->data + pos;
        ck_assert_int_eq(m[0], 'D');
        uint32_t mlen = (uint32_t)m[1] << 24 | m[2] << 16 | m[3] << 8 | m[4];
        if (i == row) {
            uint16_t n = (uint16_t)(m[5] << 8 | m[6]);
            ck_assert_uint_lt(col, n);
            const uint8_t *p = m + 7;
            for (size_t c = 0;; c++) {
                int32_t l = (int32_t)((uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]);
                if (c == col) {
                    *len = l;
                    return l < 0 ? NULL : (const char *)p + 4;
                }
                p += 4 + (l > 0 ? l : 0);
            }
        }
        pos += 1 + mlen;
    }
    ck_abort_msg("no row %zu", row);
    return NULL;
}

static void assert_text(const Run *r, size_t row, size_t col, const char *want)
{
    int32_t len;
    const char *v = cell(&r->rows, row, col, &len);
    if (!want) {
        ck_assert_msg(len == -1, "row %zu col %zu: expected NULL, got \"%.*s\"", row, col,
                      len > 0 ? len : 0, v ? v : "");
        return;
    }
    ck_assert_msg(len >= 0, "row %zu col %zu: expected \"%s\", got NULL", row, col, want);
    ck_assert_msg((size_t)len == strlen(want) && memcmp(v, want, (size_t)len) == 0,
                  "row %zu col %zu: expected \"%s\", got \"%.*s\"", row, col, want, len, v);
}

static void assert_bytes(const Run *r, size_t row, size_t col, const char *hex)
{
    int32_t len;
    const char *v = cell(&r->rows, row, col, &len);
    size_t n = strlen(hex) / 2;
    ck_assert_msg(len == (int32_t)n, "row %zu col %zu: expected %zu bytes, got %d", row, col, n, len);
    for (size_t i = 0; i < n; i++) {
        unsigned b;
        sscanf(hex + 2 * i, "%2x", &b);
        ck_assert_msg((uint8_t)v[i] == b, "row %zu col %zu byte %zu: expected %02x, got %02x",
                      row, col, i, b, (uint8_t)v[i]);
    }
}

static void assert_ok(const Run *r, const char *tag)
{
    const RqError *err = plug_query_error(r->q);
    ck_assert_msg(!err, "query failed: %s %s", err ? err->sqlstate : "", err ? err->message : "");
    ck_assert_int_eq(plug_query_state(r->q), PLUG_DONE);
    ck_assert(plug_query_finished(r->q));
    if (tag) ck_assert_str_eq(plug_query_tag(r->q), tag);
}

static void assert_error(const Run *r, const char *sqlstate, const char *message)
{
    ck_assert_int_eq(plug_query_state(r->q), PLUG_FAILED);
    const RqError *err = plug_query_error(r->q);
    ck_assert_ptr_nonnull(err);
    ck_assert_str_eq(err->sqlstate, sqlstate);
    if (message) ck_assert_str_eq(err->message, message);
}

static void assert_column(const Run *r, size_t i, const char *name, uint32_t oid)
{
    const RqResult *cols = plug_query_columns(r->q);
    ck_assert_ptr_nonnull(cols);
    ck_assert_uint_lt(i, cols->n_cols);
    ck_assert_str_eq(cols->cols[i].name, name);
    ck_assert_uint_eq(cols->cols[i].type_oid, oid);
}

/* Read a global of a plugin module directly (the test holds the GIL for
 * it, like any thread may). */
static long plugin_global(const char *plugin, const char *name)
{
    PyGILState_STATE g = PyGILState_Ensure();
    char modname[128];
    snprintf(modname, sizeof modname, "riffq_plugin_%s", plugin);
    PyObject *m = PyImport_ImportModule(modname);
    ck_assert_ptr_nonnull(m);
    PyObject *v = PyObject_GetAttrString(m, name);
    ck_assert_ptr_nonnull(v);
    long r = PyLong_AsLong(v);
    Py_DECREF(v);
    Py_DECREF(m);
    PyGILState_Release(g);
    return r;
}

/* ------------------------------------------------------------------ */
/* formatters                                                          */

static void check_f8(double v, const char *want)
{
    char buf[64];
    size_t n = plug_fmt_float8(v, buf);
    buf[n] = 0;
    ck_assert_str_eq(buf, want);
}

START_TEST(float8_text_like_postgres)
{
    /* expected values: SELECT x::float8 on Postgres 15 */
    check_f8(0.1, "0.1");
    check_f8(1.0, "1");
    check_f8(-0.0, "-0");
    check_f8(1e15, "1e+15");
    check_f8(123456789012345.0, "123456789012345");
    check_f8(1e20, "1e+20");
    check_f8(1e-5, "1e-05");
    check_f8(0.0001, "0.0001");
    check_f8(1.0 / 3, "0.3333333333333333");
    check_f8(2.5e-300, "2.5e-300");
    check_f8(1.7976931348623157e308, "1.7976931348623157e+308");
    check_f8(5e-324, "5e-324");
    check_f8(2.2250738585072e-310, "2.2250738585072e-310");
    check_f8(INFINITY, "Infinity");
    check_f8(-INFINITY, "-Infinity");
    check_f8(NAN, "NaN");
    check_f8(100, "100");
    check_f8(-12.5, "-12.5");
    /* around the exact-decimal shortcut: up to 15 digits it applies, past
     * that (or below 1e-4) printf decides */
    check_f8(4.35, "4.35");
    check_f8(12345.678, "12345.678");
    check_f8(0.000123, "0.000123");
    check_f8(1234567.0000001, "1234567.0000001");
    check_f8(0.1 + 0.2, "0.30000000000000004");
    check_f8(999999999999999.9, "999999999999999.9");
    check_f8(100000000000000.5, "100000000000000.5");
    check_f8(9.999999999999999e-05, "9.999999999999999e-05");
    char buf[64];
    buf[plug_fmt_float4(0.1f, buf)] = 0;
    ck_assert_str_eq(buf, "0.1");
    buf[plug_fmt_float4(1e6f, buf)] = 0;
    ck_assert_str_eq(buf, "1e+06");
    buf[plug_fmt_float4(123456.0f, buf)] = 0;
    ck_assert_str_eq(buf, "123456");
}
END_TEST

START_TEST(timestamp_text)
{
    Buf b;
    buf_init(&b);
    plug_fmt_timestamp(0, 0, &b);
    buf_append_byte(&b, '|');
    plug_fmt_timestamp(-1, 1, &b);         /* one microsecond before the epoch */
    buf_append_byte(&b, '|');
    plug_fmt_timestamp(1500000, 0, &b);
    buf_append_byte(&b, '|');
    plug_fmt_date(-719162, &b);            /* (date(1,1,1) - date(1970,1,1)).days */
    buf_append_byte(&b, '|');
    plug_fmt_date(-719163, &b);            /* the day before: 1 BC */
    buf_append_byte(&b, 0);
    ck_assert_str_eq(b.data, "1970-01-01 00:00:00|1969-12-31 23:59:59.999999+00|"
                             "1970-01-01 00:00:01.5|0001-01-01|0001-12-31 BC");
    buf_free(&b);
}
END_TEST

/* ------------------------------------------------------------------ */
/* rows + columns                                                      */

static const char *types_plugin =
    "import riffq, datetime, decimal, uuid\n"
    "ROW = (42, 9007199254740993, 'h\\u00e9llo', True, 0.1, decimal.Decimal('12.50'),\n"
    "       datetime.date(2024, 1, 2), datetime.datetime(2024, 1, 2, 3, 4, 5, 120000),\n"
    "       datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),\n"
    "       b'\\x00\\xff', {'a': [1, 2]}, uuid.UUID('12345678-1234-5678-1234-567812345678'), None,\n"
    "       decimal.Decimal('1E+3'), datetime.timedelta(days=1, hours=2, seconds=4))\n"
    "COLS = [('i4', 'int4'), ('i8', 'bigint'), ('t', 'text'), ('b', 'bool'), ('f', 'float8'),\n"
    "        ('n', 'numeric'), ('d', 'date'), ('ts', 'timestamp'), ('tz', 'timestamptz'),\n"
    "        ('by', 'bytea'), ('j', 'json'), ('u', 'uuid'), ('z', 'int4'), ('n2', 'numeric'),\n"
    "        ('iv', 'interval')]\n"
    "@riffq.query_handler\n"
    "def handle(sql, params, ctx):\n"
    "    return [ROW], COLS\n";

START_TEST(rows_text_formats)
{
    start_with(types_plugin);
    Run *r = query("select", NULL);
    assert_ok(r, "SELECT 1");
    ck_assert_uint_eq(r->n_rows, 1);
    assert_column(r, 0, "i4", PGT_INT4);
    assert_column(r, 1, "i8", PGT_INT8);
    assert_column(r, 8, "tz", PGT_TIMESTAMPTZ);
    assert_column(r, 14, "iv", PGT_INTERVAL);
    assert_text(r, 0, 0, "42");
    assert_text(r, 0, 1, "9007199254740993");
    assert_text(r, 0, 2, "h\xc3\xa9llo");
    assert_text(r, 0, 3, "t");
    assert_text(r, 0, 4, "0.1");
    assert_text(r, 0, 5, "12.50");
    assert_text(r, 0, 6, "2024-01-02");
    assert_text(r, 0, 7, "2024-01-02 03:04:05.12");
    assert_text(r, 0, 8, "2024-01-02 01:04:05+00");
    assert_text(r, 0, 9, "\\x00ff");
    assert_text(r, 0, 10, "{\"a\": [1, 2]}");
    assert_text(r, 0, 11, "12345678-1234-5678-1234-567812345678");
    assert_text(r, 0, 12, NULL);
    assert_text(r, 0, 13, "1000");
    assert_text(r, 0, 14, "1 day 02:00:04");
    run_free(r);
}
END_TEST

START_TEST(rows_binary_formats)
{
    start_with(types_plugin);
    Run *r = query("select", "bbtbbtbbbb");
    assert_ok(r, "SELECT 1");
    assert_bytes(r, 0, 0, "0000002a");
    assert_bytes(r, 0, 1, "0020000000000001");        /* struct.pack('>q', 9007199254740993) */
    assert_text(r, 0, 2, "h\xc3\xa9llo");
    assert_bytes(r, 0, 3, "01");
    assert_bytes(r, 0, 4, "3fb999999999999a");        /* struct.pack('>d', 0.1) */
    assert_text(r, 0, 5, "12.50");
    assert_bytes(r, 0, 6, "0000223f");                /* 8767 days after 2000-01-01 */
    assert_bytes(r, 0, 8, "0002b0ead7eeab40");        /* 2024-01-02 01:04:05 UTC in us since 2000 */
    assert_bytes(r, 0, 9, "00ff");
    run_free(r);
}
END_TEST

START_TEST(rows_dicts_generators_and_types)
{
    start_with(
        "import riffq, datetime\n"
        "@riffq.query_handler\n"
        "def handle(sql, params, ctx):\n"
        "    if sql == 'dicts':\n"
        "        return [{'a': 1, 'b': 'x'}, {'b': 'y'}], [('a', 'int64'), ('b', str)]\n"
        "    if sql == 'gen':\n"
        "        return ((i, i * i) for i in range(3)), [('i', int), ('sq', 'int4')]\n"
        "    if sql == 'single':\n"
        "        return [1, 2], ['n']\n"
        "    if sql == 'short':\n"
        "        return [(1,)], [('a', 'int4'), ('b', 'int4')]\n"
        "    if sql == 'badtype':\n"
        "        return [(1,)], [('a', 'nosuchtype')]\n"
        "    if sql == 'range':\n"
        "        return [(70000,)], [('a', 'int2')]\n"
        "    if sql == 'arr':\n"
        "        return [([1, None, 3], ['a b', 'c\"'])], [('a', 'int4[]'), ('t', 'text[]')]\n"
        "    if sql == 'typmod':\n"
        "        return [(1, 'x', None)], [('a', 'numeric(12, 2)'), ('b', 'varchar(20)'),\n"
        "                                  ('c', 'timestamp(3) with time zone')]\n"
        "    if sql == 'none':\n"
        "        return None\n");
    Run *r = query("dicts", NULL);
    assert_ok(r, "SELECT 2");
    assert_column(r, 0, "a", PGT_INT8);
    assert_column(r, 1, "b", PGT_TEXT);
    assert_text(r, 0, 0, "1");
    assert_text(r, 0, 1, "x");
    assert_text(r, 1, 0, NULL);
    assert_text(r, 1, 1, "y");
    run_free(r);

    r = query("gen", NULL);
    assert_ok(r, "SELECT 3");
    assert_text(r, 2, 1, "4");
    run_free(r);

    r = query("single", NULL);
    assert_ok(r, "SELECT 2");
    assert_column(r, 0, "n", PGT_TEXT);
    assert_text(r, 1, 0, "2");
    run_free(r);

    r = query("short", NULL);
    assert_error(r, "XX000", "row 1 has 1 values but the result has 2 columns");
    run_free(r);

    r = query("badtype", NULL);
    assert_error(r, "42704", "type \"nosuchtype\" does not exist");
    run_free(r);

    r = query("range", NULL);
    assert_error(r, "22003", "smallint out of range");
    run_free(r);

    r = query("arr", NULL);
    assert_ok(r, "SELECT 1");
    assert_text(r, 0, 0, "{1,NULL,3}");
    assert_text(r, 0, 1, "{\"a b\",\"c\\\"\"}");
    run_free(r);

    r = query("typmod", NULL);
    assert_ok(r, "SELECT 1");
    assert_column(r, 0, "a", PGT_NUMERIC);
    assert_column(r, 1, "b", PGT_VARCHAR);
    assert_column(r, 2, "c", PGT_TIMESTAMPTZ);
    run_free(r);

    r = query("none", NULL);
    assert_error(r, "XX000", NULL);
    ck_assert_ptr_nonnull(strstr(plug_query_error(r->q)->message, "returned None"));
    run_free(r);
}
END_TEST

START_TEST(fetch_with_row_limit)
{
    start_with(
        "import riffq\n"
        "@riffq.query_handler\n"
        "def handle(sql, params, ctx):\n"
        "    return [(i,) for i in range(5)], [('i', 'int4')]\n");
    Run *r = query_full("p", "x", NULL, NULL, 0, NULL, NULL, 0);
    r->fetch_max = 2;
    run_wait(r, 20000 * SLOW);
    assert_ok(r, "SELECT 5");
    ck_assert_uint_eq(r->n_rows, 5);
    for (int i = 0; i < 5; i++) {
        char want[16];
        snprintf(want, sizeof want, "%d", i);
        assert_text(r, (size_t)i, 0, want);
    }
    run_free(r);
}
END_TEST

/* ------------------------------------------------------------------ */
/* DataFrames                                                          */

static const char *df_plugin =
    "import riffq, pandas as pd, numpy as np\n"
    "@riffq.query_handler\n"
    "def handle(sql, params, ctx):\n"
    "    if sql == 'df':\n"
    "        return pd.DataFrame({\n"
    "            'i': np.array([1, -5, 7], dtype='int64'),\n"
    "            'f': [2.5, np.nan, 0.1],\n"
    "            'b': [True, False, True],\n"
    "            'ts': pd.to_datetime(['2021-03-04 05:06:07', None, '2024-01-02 03:04:05.1234567']),\n"
    "            's': ['x', None, 'z'],\n"
    "            'i32': np.array([1, 2, 3], dtype='int32'),\n"
    "            'n': pd.array([1, None, 3], dtype='Int64'),\n"
    "            'tz': pd.to_datetime(['2021-03-04 05:06:07+02:00'] * 3, utc=True),\n"
    "        })\n"
    "    if sql == 'big':\n"
    "        n = int(params[0])\n"
    "        return pd.DataFrame({'i': np.arange(n, dtype='int64'), 'f': np.arange(n) * 0.5})\n";

START_TEST(dataframe_text)
{
    start_with(df_plugin);
    Run *r = query("df", NULL);
    assert_ok(r, "SELECT 3");
    assert_column(r, 0, "i", PGT_INT8);
    assert_column(r, 1, "f", PGT_FLOAT8);
    assert_column(r, 2, "b", PGT_BOOL);
    assert_column(r, 3, "ts", PGT_TIMESTAMP);
    assert_column(r, 4, "s", PGT_TEXT);
    assert_column(r, 5, "i32", PGT_INT4);
    assert_column(r, 6, "n", PGT_INT8);
    assert_column(r, 7, "tz", PGT_TIMESTAMPTZ);
    assert_text(r, 0, 0, "1");
    assert_text(r, 1, 0, "-5");
    assert_text(r, 0, 1, "2.5");
    assert_text(r, 1, 1, NULL);
    assert_text(r, 2, 1, "0.1");
    assert_text(r, 0, 2, "t");
    assert_text(r, 1, 2, "f");
    assert_text(r, 0, 3, "2021-03-04 05:06:07");
    assert_text(r, 1, 3, NULL);
    assert_text(r, 2, 3, "2024-01-02 03:04:05.123457");   /* ns rounded to us */
    assert_text(r, 0, 4, "x");
    assert_text(r, 1, 4, NULL);
    assert_text(r, 2, 5, "3");
    assert_text(r, 0, 6, "1");
    assert_text(r, 1, 6, NULL);
    assert_text(r, 0, 7, "2021-03-04 03:06:07+00");
    run_free(r);
}
END_TEST

START_TEST(dataframe_binary)
{
    start_with(df_plugin);
    Run *r = query("df", "bbbbbbbb");
    assert_ok(r, "SELECT 3");
    assert_bytes(r, 1, 0, "fffffffffffffffb");        /* struct.pack('>q', -5) */
    assert_bytes(r, 0, 1, "4004000000000000");        /* struct.pack('>d', 2.5) */
    assert_text(r, 1, 1, NULL);
    assert_bytes(r, 0, 2, "01");
    assert_bytes(r, 1, 2, "00");
    assert_bytes(r, 0, 3, "00025fadb1990dc0");        /* 2021-03-04 05:06:07 in us since 2000 */
    assert_text(r, 1, 3, NULL);
    assert_bytes(r, 2, 5, "00000003");
    assert_text(r, 1, 6, NULL);
    assert_bytes(r, 2, 6, "0000000000000003");
    run_free(r);
}
END_TEST

START_TEST(dataframe_throughput)
{
    start_with(df_plugin);
    const char *n = RUNNING_ON_VALGRIND ? "20000" : "1000000";
    size_t rows = RUNNING_ON_VALGRIND ? 20000 : 1000000;
    char tag[32], last[32];
    snprintf(tag, sizeof tag, "SELECT %zu", rows);
    uint32_t t = PGT_INT8;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    Run *r = query_full("p", "big", &n, &t, 1, "bb", NULL, 0);
    run_wait(r, 60000 * SLOW);
    clock_gettime(CLOCK_MONOTONIC, &b);
    assert_ok(r, tag);
    ck_assert_uint_eq(r->n_rows, rows);
    double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    printf("dataframe %zu int64+float64 rows, binary: %.3f s, %.0f rows/s, %zu bytes\n",
           rows, s, (double)rows / s, r->rows.len);
    snprintf(last, sizeof last, "%016zx", rows - 1);
    assert_bytes(r, rows - 1, 0, last);
    run_free(r);

    clock_gettime(CLOCK_MONOTONIC, &a);
    r = query_full("p", "big", &n, &t, 1, NULL, NULL, 0);
    run_wait(r, 60000 * SLOW);
    clock_gettime(CLOCK_MONOTONIC, &b);
    assert_ok(r, tag);
    s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    printf("dataframe %zu int64+float64 rows, text: %.3f s, %.0f rows/s\n", rows, s, (double)rows / s);
    snprintf(last, sizeof last, "%zu.5", (rows - 1) / 2);
    assert_text(r, rows - 1, 1, last);
    run_free(r);
}
END_TEST

/* ------------------------------------------------------------------ */
/* streaming                                                           */

static const char *stream_plugin =
    "import riffq, pandas as pd\n"
    "produced = 0\n"
    "def batches(n):\n"
    "    global produced\n"
    "    for b in range(n):\n"
    "        produced += 1\n"
    "        if b % 2:\n"
    "            yield pd.DataFrame({'i': range(b * 100, b * 100 + 100), 's': ['x'] * 100})\n"
    "        else:\n"
    "            yield [(i, 'x') for i in range(b * 100, b * 100 + 100)]\n"
    "@riffq.query_handler\n"
    "def handle(sql, params, ctx):\n"
    "    global produced\n"
    "    produced = 0\n"
    "    return riffq.Columns([('i', 'int8'), ('s', 'text')]), batches(50)\n";

START_TEST(generator_streams_with_backpressure)
{
    start_with(stream_plugin);
    Run *r = query_full("p", "x", NULL, NULL, 0, NULL, NULL, 0);
    r->no_fetch = 1;
    r->stop_on_callback = 1;
    int got = 0;
    /* wait until rows are buffered, then give the worker time to run ahead */
    for (int i = 0; i < 200 && plug_query_state(r->q) != PLUG_COLUMNS; i++) {
        r->callbacks = 0;
        run_until(&r->callbacks, 100);
    }
    uv_sleep(300);
    long produced = plugin_global("p", "produced");
    ck_assert_msg(produced >= 1 && produced <= 3,
                  "the generator ran ahead of the client: %ld batches produced", produced);
    (void)got;
    r->no_fetch = 0;
    r->stop_on_callback = 0;
    on_ready(r);
    run_wait(r, 20000 * SLOW);
    assert_ok(r, "SELECT 5000");
    ck_assert_uint_eq(r->n_rows, 5000);
    assert_text(r, 4999, 0, "4999");
    assert_text(r, 150, 1, "x");
    ck_assert_int_eq(plugin_global("p", "produced"), 50);
    run_free(r);
}
END_TEST

START_TEST(free_while_streaming)
{
    start_with(stream_plugin);
    Run *r = query_full("p", "x", NULL, NULL, 0, NULL, NULL, 0);
    r->no_fetch = 1;
    r->stop_on_callback = 1;
    run_until(&r->callbacks, 5000 * SLOW);
    /* the worker is blocked on backpressure: free must release it */
    plug_query_free(r->q);
    buf_free(&r->rows);
    free(r);
    Run *r2 = query("x", NULL);
    assert_ok(r2, "SELECT 5000");
    run_free(r2);
}
END_TEST

/* ------------------------------------------------------------------ */
/* commands and errors                                                 */

static const char *errors_plugin =
    "import riffq\n"
    "@riffq.query_handler\n"
    "def handle(sql, params, ctx):\n"
    "    if sql == 'insert':\n"
    "        return riffq.Command('INSERT 0 3')\n"
    "    if sql == 'error':\n"
    "        raise riffq.Error('42P01', 'relation \"nope\" does not exist',\n"
    "                          detail='some detail', hint='some hint')\n"
    "    if sql == 'zero':\n"
    "        return 1 / 0\n"
    "    if sql == 'midstream':\n"
    "        def gen():\n"
    "            yield [(1,)]\n"
    "            raise ValueError('broken source')\n"
    "        return riffq.Columns([('a', 'int4')]), gen()\n"
    "    if sql == 'busy':\n"
    "        while True:\n"
    "            pass\n"
    "    if sql == 'sleep':\n"
    "        import time\n"
    "        time.sleep(60)\n"
    "    if sql == 'swallow':\n"
    "        while True:\n"
    "            try:\n"
    "                while True:\n"
    "                    pass\n"
    "            except Exception:\n"
    "                pass\n";

START_TEST(command_tag)
{
    start_with(errors_plugin);
    Run *r = query("insert", NULL);
    assert_ok(r, "INSERT 0 3");
    const RqResult *cols = plug_query_columns(r->q);
    ck_assert_ptr_nonnull(cols);
    ck_assert_int_eq(cols->returns_rows, 0);
    ck_assert_uint_eq(cols->n_cols, 0);
    ck_assert_uint_eq(r->n_rows, 0);
    run_free(r);
}
END_TEST

START_TEST(riffq_error_mapping)
{
    start_with(errors_plugin);
    Run *r = query("error", NULL);
    assert_error(r, "42P01", "relation \"nope\" does not exist");
    ck_assert_str_eq(plug_query_error(r->q)->detail, "some detail");
    ck_assert_str_eq(plug_query_error(r->q)->hint, "some hint");
    run_free(r);
}
END_TEST

START_TEST(exception_is_xx000)
{
    start_with(errors_plugin);
    Run *r = query("zero", NULL);
    assert_error(r, "XX000", "ZeroDivisionError: division by zero");
    run_free(r);

    r = query("midstream", NULL);
    /* the rows produced before the error reach the client first */
    ck_assert_uint_eq(r->n_rows, 1);
    assert_error(r, "XX000", "ValueError: broken source");
    run_free(r);
}
END_TEST

static void cancel_after(const char *sql, int ms_before, int ms_limit)
{
    Run *r = query_full("p", sql, NULL, NULL, 0, NULL, NULL, 0);
    uv_sleep((unsigned)ms_before);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    plug_query_cancel(r->q);
    ms_limit *= SLOW;
    run_wait(r, (uint64_t)ms_limit);
    clock_gettime(CLOCK_MONOTONIC, &b);
    assert_error(r, "57014", "canceling statement due to user request");
    double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
    ck_assert_msg(ms < ms_limit, "cancel took %.0f ms", ms);
    run_free(r);
}

START_TEST(cancel_busy_loop)
{
    start_with(errors_plugin);
    cancel_after("busy", 200, 2000);
    /* the worker is usable again afterwards */
    Run *r = query("insert", NULL);
    assert_ok(r, "INSERT 0 3");
    run_free(r);
}
END_TEST

START_TEST(cancel_sleep)
{
    start_with(errors_plugin);
    cancel_after("sleep", 200, 2000);
}
END_TEST

START_TEST(cancel_not_swallowed_by_except_exception)
{
    start_with(errors_plugin);
    cancel_after("swallow", 200, 2000);
}
END_TEST

START_TEST(cancel_before_start)
{
    add_plugin("p", errors_plugin);
    start_engine(1);
    Run *busy = query_full("p", "busy", NULL, NULL, 0, NULL, NULL, 0);
    Run *queued = query_full("p", "insert", NULL, NULL, 0, NULL, NULL, 0);
    uv_sleep(100);
    plug_query_cancel(queued->q);       /* still waiting for the only worker */
    plug_query_cancel(busy->q);
    run_wait(busy, 2000 * SLOW);
    run_wait(queued, 2000 * SLOW);
    assert_error(busy, "57014", NULL);
    assert_error(queued, "57014", NULL);
    run_free(busy);
    run_free(queued);
}
END_TEST

START_TEST(free_running_handler)
{
    start_with(errors_plugin);
    Run *r = query_full("p", "busy", NULL, NULL, 0, NULL, NULL, 0);
    uv_sleep(100);
    plug_query_free(r->q);      /* the worker finishes and frees it */
    buf_free(&r->rows);
    free(r);
    Run *r2 = query("insert", NULL);
    assert_ok(r2, "INSERT 0 3");
    run_free(r2);
}
END_TEST

/* ------------------------------------------------------------------ */
/* loading                                                             */

START_TEST(import_failure_reported)
{
    add_plugin("bad", "import riffq\nimport nonexistent_module_xyz\n");
    add_plugin("good", errors_plugin);
    start_engine(1);
    const char *why = NULL;
    ck_assert_int_eq(plug_engine_plugin_status(eng, "bad", &why), 1);
    ck_assert_str_eq(why, "ModuleNotFoundError: No module named 'nonexistent_module_xyz'");
    ck_assert_int_eq(plug_engine_plugin_status(eng, "good", &why), 0);
    ck_assert_int_eq(plug_engine_plugin_status(eng, "other", &why), -1);

    Run *r = query_full("bad", "select 1", NULL, NULL, 0, NULL, NULL, 0);
    run_wait(r, 5000 * SLOW);
    assert_error(r, "58000", "plugin \"bad\" failed to load: "
                             "ModuleNotFoundError: No module named 'nonexistent_module_xyz'");
    run_free(r);

    r = query_full("other", "select 1", NULL, NULL, 0, NULL, NULL, 0);
    run_wait(r, 5000 * SLOW);
    assert_error(r, "58000", "no plugin named \"other\" is configured");
    run_free(r);

    r = query_full("good", "insert", NULL, NULL, 0, NULL, NULL, 0);
    run_wait(r, 5000 * SLOW);
    assert_ok(r, "INSERT 0 3");
    run_free(r);
}
END_TEST

START_TEST(reload_reimports)
{
    start_with("import riffq\n"
               "@riffq.query_handler\n"
               "def handle(sql, params, ctx):\n"
               "    return riffq.Command('ONE')\n");
    Run *r = query("x", NULL);
    assert_ok(r, "ONE");
    run_free(r);
    add_plugin("p", "import riffq\n"
                    "@riffq.query_handler\n"
                    "def handle(sql, params, ctx):\n"
                    "    return riffq.Command('TWO')\n");
    char *err = NULL;
    ck_assert_int_eq(plug_engine_reload(eng, cfg, &err), 0);
    r = query("x", NULL);
    assert_ok(r, "TWO");
    run_free(r);
}
END_TEST

START_TEST(register_table_recorded)
{
    start_with("import riffq\n"
               "riffq.register_table('public', 'sales', [('id', 'int8', False), ('region', 'text'),\n"
               "                     ('amount', 'numeric')], primary_key='id', comment='Sales')\n"
               "riffq.register_table('s2', 't', [('x', float)])\n"
               "@riffq.query_handler\n"
               "def handle(sql, params, ctx):\n"
               "    return riffq.Command('OK')\n");
    const PlugTable *t;
    size_t n = plug_engine_tables(eng, "p", &t);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(t[0].schema, "public");
    ck_assert_str_eq(t[0].name, "sales");
    ck_assert_uint_eq(t[0].n_columns, 3);
    ck_assert_str_eq(t[0].columns[0].name, "id");
    ck_assert_uint_eq(t[0].columns[0].type_oid, PGT_INT8);
    ck_assert_int_eq(t[0].columns[0].nullable, 0);
    ck_assert_uint_eq(t[0].columns[2].type_oid, PGT_NUMERIC);
    ck_assert_int_eq(t[0].columns[2].nullable, 1);
    ck_assert_uint_eq(t[0].n_primary_key, 1);
    ck_assert_str_eq(t[0].primary_key[0], "id");
    ck_assert_str_eq(t[0].comment, "Sales");
    ck_assert_uint_eq(t[1].columns[0].type_oid, PGT_FLOAT8);
    ck_assert_ptr_null(t[1].comment);
    const PlugTable *one = plug_engine_table(eng, "p", "s2", "t");
    ck_assert_ptr_eq(one, &t[1]);
    ck_assert_ptr_null(plug_engine_table(eng, "p", "public", "nope"));
}
END_TEST

/* ------------------------------------------------------------------ */
/* parameters, ctx, hooks                                              */

START_TEST(params_converted)
{
    start_with("import riffq\n"
               "@riffq.query_handler\n"
               "def handle(sql, params, ctx):\n"
               "    return [(repr(p),) for p in params], [('r', 'text')]\n");
    const char *params[] = { "42", "hello", NULL, "12.50", "2024-01-02", "t", "\\x00ff",
                             "{\"a\": 1}", "2024-01-02 03:04:05.5+02", "1.5", "whatever" };
    uint32_t types[] = { PGT_INT4, PGT_TEXT, PGT_INT4, PGT_NUMERIC, PGT_DATE, PGT_BOOL, PGT_BYTEA,
                         PGT_JSONB, PGT_TIMESTAMPTZ, PGT_FLOAT8, PGT_UNKNOWN };
    Run *r = query_full("p", "x", params, types, 11, NULL, NULL, 0);
    run_wait(r, 5000 * SLOW);
    assert_ok(r, "SELECT 11");
    assert_text(r, 0, 0, "42");
    assert_text(r, 1, 0, "'hello'");
    assert_text(r, 2, 0, "None");
    assert_text(r, 3, 0, "Decimal('12.50')");
    assert_text(r, 4, 0, "datetime.date(2024, 1, 2)");
    assert_text(r, 5, 0, "True");
    assert_text(r, 6, 0, "b'\\x00\\xff'");
    assert_text(r, 7, 0, "{'a': 1}");
    assert_text(r, 8, 0, "datetime.datetime(2024, 1, 2, 3, 4, 5, 500000, "
                         "tzinfo=datetime.timezone(datetime.timedelta(seconds=7200)))");
    assert_text(r, 9, 0, "1.5");
    assert_text(r, 10, 0, "'whatever'");
    run_free(r);

    const char *bad[] = { "abc" };
    uint32_t bad_type[] = { PGT_INT4 };
    r = query_full("p", "x", bad, bad_type, 1, NULL, NULL, 0);
    run_wait(r, 5000 * SLOW);
    assert_error(r, "22P02", "invalid input syntax for type integer: \"abc\"");
    run_free(r);
}
END_TEST

START_TEST(ctx_and_session_state)
{
    add_plugin("p", "import riffq\n"
                    "@riffq.query_handler\n"
                    "def handle(sql, params, ctx):\n"
                    "    s = ctx['session']\n"
                    "    s['n'] = s.get('n', 0) + 1\n"
                    "    return [(ctx['user'], ctx['database'], ctx['application_name'], ctx['route'],\n"
                    "             ctx['describe'], s['n'])], \\\n"
                    "        [('u', 'text'), ('d', 'text'), ('a', 'text'), ('r', 'text'),\n"
                    "         ('desc', 'bool'), ('n', 'int4')]\n");
    start_engine(1);    /* one worker: jobs run in order */
    PlugCtx other = { "bob", NULL, NULL, "r2", 8 };
    const char *want_n[] = { "1", "2" };
    for (int i = 0; i < 2; i++) {
        Run *r = query_full("p", "x", NULL, NULL, 0, NULL, NULL, 0);
        run_wait(r, 5000 * SLOW);
        assert_ok(r, "SELECT 1");
        assert_text(r, 0, 0, "alice");
        assert_text(r, 0, 1, "db1");
        assert_text(r, 0, 2, "psql");
        assert_text(r, 0, 3, "r1");
        assert_text(r, 0, 4, "f");
        assert_text(r, 0, 5, want_n[i]);
        run_free(r);
    }
    Run *r = query_full("p", "x", NULL, NULL, 0, NULL, &other, 0);
    run_wait(r, 5000 * SLOW);
    assert_text(r, 0, 0, "bob");
    assert_text(r, 0, 1, NULL);
    assert_text(r, 0, 5, "1");
    run_free(r);

    plug_engine_session_end(eng, 7);
    r = query_full("p", "x", NULL, NULL, 0, NULL, NULL, 0);
    run_wait(r, 5000 * SLOW);
    assert_text(r, 0, 5, "1");
    run_free(r);

    /* Describe: the handler sees describe=True and no rows are sent */
    r = query_full("p", "x", NULL, NULL, 0, NULL, NULL, 1);
    run_wait(r, 5000 * SLOW);
    assert_ok(r, NULL);
    ck_assert_uint_eq(r->n_rows, 0);
    assert_column(r, 5, "n", PGT_INT4);
    run_free(r);
}
END_TEST

static const char *hooks_plugin =
    "import riffq\n"
    "seen = []\n"
    "@riffq.on_connect\n"
    "def hello(ctx):\n"
    "    if ctx['user'] == 'bob':\n"
    "        raise riffq.Error('28000', 'bob may not connect')\n"
    "    ctx['session']['greeted'] = True\n"
    "@riffq.on_disconnect\n"
    "def bye(ctx):\n"
    "    seen.append(ctx['user'])\n"
    "@riffq.query_handler\n"
    "def handle(sql, params, ctx):\n"
    "    return [(ctx['session'].get('greeted', False), len(seen))], [('g', 'bool'), ('n', 'int4')]\n";

START_TEST(hooks_sync)
{
    add_plugin("p", hooks_plugin);
    start_engine(1);
    RqError err = { 0 };
    ck_assert_int_eq(plug_engine_on_connect(eng, &test_ctx, &err), 0);
    PlugCtx bob = { "bob", "db", NULL, NULL, 9 };
    ck_assert_int_eq(plug_engine_on_connect(eng, &bob, &err), -1);
    ck_assert_str_eq(err.sqlstate, "28000");
    ck_assert_str_eq(err.message, "bob may not connect");
    rq_error_free(&err);

    Run *r = query("x", NULL);
    assert_text(r, 0, 0, "t");
    assert_text(r, 0, 1, "0");
    run_free(r);

    plug_engine_on_disconnect(eng, &test_ctx);
    r = query("x", NULL);
    assert_text(r, 0, 0, "f");      /* the session's dict went with the disconnect */
    assert_text(r, 0, 1, "1");
    run_free(r);
}
END_TEST

START_TEST(hooks_async)
{
    add_plugin("p", hooks_plugin);
    start_engine(1);
    Run *r = calloc(1, sizeof *r);
    buf_init(&r->rows);
    r->q = plug_hook_start(eng, PLUG_HOOK_CONNECT, &test_ctx, on_ready, r);
    run_wait(r, 5000 * SLOW);
    assert_ok(r, NULL);
    run_free(r);

    PlugCtx bob = { "bob", "db", NULL, NULL, 9 };
    r = calloc(1, sizeof *r);
    buf_init(&r->rows);
    r->q = plug_hook_start(eng, PLUG_HOOK_CONNECT, &bob, on_ready, r);
    run_wait(r, 5000 * SLOW);
    assert_error(r, "28000", "bob may not connect");
    run_free(r);

    /* started and forgotten: still runs */
    plug_query_free(plug_hook_start(eng, PLUG_HOOK_DISCONNECT, &test_ctx, NULL, NULL));
    r = query("x", NULL);
    assert_text(r, 0, 0, "f");
    assert_text(r, 0, 1, "1");
    run_free(r);
}
END_TEST

START_TEST(pandas_imports)
{
    start_with("import riffq, pandas, numpy, sys\n"
               "@riffq.query_handler\n"
               "def handle(sql, params, ctx):\n"
               "    return [(pandas.__version__, sys.flags.isolated)], [('v', 'text'), ('i', 'int4')]\n");
    Run *r = query("x", NULL);
    assert_ok(r, "SELECT 1");
    int32_t len;
    ck_assert_ptr_nonnull(cell(&r->rows, 0, 0, &len));
    ck_assert_int_gt(len, 0);
    assert_text(r, 0, 1, "1");
    run_free(r);
}
END_TEST

/* ------------------------------------------------------------------ */
/* the shipped demo plugin (run from the repository root)              */

START_TEST(demo_plugin)
{
    char path[4096];
    ck_assert_ptr_nonnull(realpath("plugins/demo.py", path));
    cfg->plugins = calloc(1, sizeof *cfg->plugins);
    cfg->plugins[0].name = strdup("demo");
    cfg->plugins[0].module = strdup(path);
    cfg->n_plugins = 1;
    start_engine(2);
    ck_assert_int_eq(plug_engine_plugin_status(eng, "demo", NULL), 0);
    const PlugTable *sales = plug_engine_table(eng, "demo", "public", "sales");
    const PlugTable *customers = plug_engine_table(eng, "demo", "public", "customers");
    ck_assert_ptr_nonnull(sales);
    ck_assert_ptr_nonnull(customers);
    ck_assert_uint_eq(sales->n_columns, 4);
    ck_assert_uint_eq(sales->columns[2].type_oid, PGT_NUMERIC);
    ck_assert_uint_eq(sales->columns[3].type_oid, PGT_TIMESTAMPTZ);
    ck_assert_uint_eq(customers->columns[3].type_oid, PGT_BOOL);

    Run *r = query_full("demo", "SELECT * FROM sales", NULL, NULL, 0, NULL, NULL, 0);
    run_wait(r, 20000 * SLOW);
    assert_ok(r, "SELECT 1000");
    assert_column(r, 2, "amount", PGT_NUMERIC);
    assert_column(r, 3, "sold_at", PGT_TIMESTAMPTZ);
    assert_text(r, 0, 0, "1");
    run_free(r);

    /* WHERE, ORDER BY and LIMIT reach SQLite; the seed makes rows stable */
    const char *p[] = { "3" };
    uint32_t t[] = { PGT_INT8 };
    r = query_full("demo", "select id, name, vip from public.customers where id <= $1 order by id desc",
                   p, t, 1, NULL, NULL, 0);
    run_wait(r, 20000 * SLOW);
    assert_ok(r, "SELECT 3");
    assert_column(r, 0, "id", PGT_INT8);
    assert_column(r, 2, "vip", PGT_BOOL);
    assert_text(r, 0, 0, "3");
    assert_text(r, 2, 0, "1");
    run_free(r);

    /* sums are exact, as over numeric */
    r = query_full("demo", "select count(*), sum(amount) from sales where amount < 100",
                   NULL, NULL, 0, NULL, NULL, 0);
    run_wait(r, 20000 * SLOW);
    assert_ok(r, "SELECT 1");
    assert_column(r, 0, "count", PGT_INT8);
    assert_column(r, 1, "sum", PGT_NUMERIC);
    int32_t len;
    const char *sum = cell(&r->rows, 0, 1, &len);
    ck_assert_int_gt(len, 3);
    ck_assert_msg(sum[len - 3] == '.', "sum %.*s should have two decimals", len, sum);
    run_free(r);

    r = query_full("demo", "select nope from sales", NULL, NULL, 0, NULL, NULL, 0);
    run_wait(r, 20000 * SLOW);
    assert_error(r, "42703", NULL);
    run_free(r);

    r = query_full("demo", "delete from sales", NULL, NULL, 0, NULL, NULL, 0);
    run_wait(r, 20000 * SLOW);
    assert_error(r, "25006", NULL);
    run_free(r);
}
END_TEST

static Suite *plugin_suite(void)
{
    Suite *s = suite_create("plugin");
    TCase *tc = tcase_create("format");
    tcase_add_test(tc, float8_text_like_postgres);
    tcase_add_test(tc, timestamp_text);
    suite_add_tcase(s, tc);

    tc = tcase_create("engine");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120 * SLOW);
    tcase_add_test(tc, pandas_imports);
    tcase_add_test(tc, rows_text_formats);
    tcase_add_test(tc, rows_binary_formats);
    tcase_add_test(tc, rows_dicts_generators_and_types);
    tcase_add_test(tc, fetch_with_row_limit);
    tcase_add_test(tc, dataframe_text);
    tcase_add_test(tc, dataframe_binary);
    tcase_add_test(tc, dataframe_throughput);
    tcase_add_test(tc, generator_streams_with_backpressure);
    tcase_add_test(tc, free_while_streaming);
    tcase_add_test(tc, command_tag);
    tcase_add_test(tc, riffq_error_mapping);
    tcase_add_test(tc, exception_is_xx000);
    tcase_add_test(tc, cancel_busy_loop);
    tcase_add_test(tc, cancel_sleep);
    tcase_add_test(tc, cancel_not_swallowed_by_except_exception);
    tcase_add_test(tc, cancel_before_start);
    tcase_add_test(tc, free_running_handler);
    tcase_add_test(tc, import_failure_reported);
    tcase_add_test(tc, reload_reimports);
    tcase_add_test(tc, register_table_recorded);
    tcase_add_test(tc, params_converted);
    tcase_add_test(tc, ctx_and_session_state);
    tcase_add_test(tc, hooks_sync);
    tcase_add_test(tc, hooks_async);
    tcase_add_test(tc, demo_plugin);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(plugin_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
