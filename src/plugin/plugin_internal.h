/*
 * Private to src/plugin/: the structs the engine shares between its files.
 *
 * engine.c   owns the threads: the job queue, the worker threads, the
 *            canceller thread, the uv_async_t that hands progress to the
 *            loop, and the PlugQuery life cycle.
 * pymod.c    the interpreter: its one-time start, the `riffq` module that
 *            plugins import, importing plugin files, turning a Python
 *            exception into an RqError.
 * convert.c  single values: Postgres text -> Python object (parameters) and
 *            Python object -> Postgres text (results), plus the pure-C
 *            formatters (floats, timestamps) shared with the fast path.
 * encode.c   whole results: the shapes a handler may return, turned into
 *            column descriptions and DataRow batches, with the DataFrame
 *            fast path that reads numpy buffers directly.
 * arrow.c    Arrow results through the Arrow C stream interface: reads the
 *            streams handlers return, and produces them (riffq._ArrowBatch,
 *            behind riffq.helpers.to_arrow).  arrow.h has the C ABI.
 *
 * Locking: one mutex per engine (PlugEngine.mu) guards every field marked
 * "mu" below; fields marked "GIL" are touched only with the GIL held.  The
 * lock order is GIL, then mu (a thread holding mu never waits for the GIL),
 * and no thread sleeps on a condition variable while holding the GIL.
 */
#ifndef RIFFQ_PLUGIN_INTERNAL_H
#define RIFFQ_PLUGIN_INTERNAL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdint.h>

#include "riffq/buf.h"
#include "riffq/error.h"
#include "riffq/plugin.h"
#include "riffq/result.h"

/* Workers that may be started beyond plugin_workers while others wait for
 * clients to read their batches (see engine.c). */
#define PLUG_MAX_WAITING_WORKERS 256

/* A batch handed to the loop is cut at whichever comes first. */
#define PLUG_BATCH_ROWS  8192
#define PLUG_BATCH_BYTES (256 * 1024)

/* One imported plugin file.  Reference counted because a reload replaces
 * the engine's list while queries of the old generation still run. */
typedef struct PlugPlugin {
    int refs;                   /* mu */
    char *name;                 /* owned */
    char *path;                 /* owned: the .py file, or the module name when is_import */
    int is_import;
    char *modname;              /* owned: "riffq_plugin_<name>" */
    char *load_error;           /* owned: "ModuleNotFoundError: ..." or NULL */
    PyObject *module;           /* GIL; owned refs, NULL when absent */
    PyObject *handler;
    PyObject *on_connect;
    PyObject *on_disconnect;
    PyObject *authenticate;
    PlugTable *tables;          /* owned, strings too; written only while importing */
    size_t n_tables;
} PlugPlugin;

typedef enum {
    JOB_QUERY = 0,
    JOB_HOOK_CONNECT,
    JOB_HOOK_DISCONNECT,        /* also drops the session's ctx["session"] dict */
    JOB_SESSION_END,
    JOB_AUTH                    /* sql holds the password */
} PlugJobKind;

/* A job for a worker.  The loop owns it until plug_query_free; if the
 * worker still runs then, the worker owns it and frees it when it ends. */
struct PlugQuery {
    PlugEngine *e;
    uint64_t id;                /* never reused, so a late cancel cannot hit another query */
    PlugJobKind kind;
    PlugPlugin *plugin;         /* JOB_QUERY: reference held until the worker ends the job */

    /* inputs: owned, immutable after start */
    char *plugin_name;
    char *sql;
    char **params;              /* n_params, NULL = SQL NULL */
    uint32_t *param_types;
    uint16_t n_params;
    uint8_t *formats;           /* raw big-endian int16 codes as in Bind */
    uint16_t n_formats;
    char *user, *database, *application_name, *route;
    char *client_addr, *server_name, *options;
    int client_port;
    int extended;
    int32_t session_id;
    int describe_only;
    PlugReadyCb cb;
    void *ud;

    /* shared with the loop: mu */
    pthread_cond_t cond;        /* worker waits here for a fetch or a cancel */
    int started;                /* a worker picked it up */
    int finished;               /* the worker is done with Python and rows */
    int canceled;
    int abandoned;              /* plug_query_free came first: the worker frees */
    int notify_pending;         /* on the engine's pending list */
    int has_cols;
    RqResult cols;              /* written before has_cols is set, then read-only */
    Buf out;                    /* encoded DataRows not yet fetched, from out_pos */
    size_t out_pos;
    size_t out_rows;
    char *tag;
    int failed;
    RqError err;

    PlugQuery *next_job;        /* mu: engine queue */
    PlugQuery *next_pending;    /* mu: engine pending-notification list */
};

typedef struct PlugWorker {
    PlugEngine *e;
    pthread_t thread;
    unsigned long ident;        /* PyThread ident, the target of SetAsyncExc */
    uint64_t in_python;         /* GIL and mu: id of the query whose Python code runs */
} PlugWorker;

struct PlugEngine {
    uv_loop_t *loop;
    uv_async_t *async;          /* owned; freed by its close callback */
    pthread_mutex_t mu;
    pthread_cond_t work_cond;   /* workers wait for jobs */
    pthread_cond_t cancel_cond; /* the canceller waits for requests */
    PlugQuery *queue_head, *queue_tail;         /* mu */
    PlugQuery *pending_head, *pending_tail;     /* mu */
    uint64_t *cancel_ids;       /* mu: queries to interrupt with QueryCanceled */
    size_t n_cancel, cap_cancel;
    PlugPlugin **plugins;       /* mu for writes (reload, loop thread); owned refs */
    size_t n_plugins;
    PlugWorker *workers;        /* max_workers entries, n_workers of them started */
    int n_workers;              /* mu (grows only; entries never move) */
    int target_workers;         /* workers free to run handlers: plugin_workers */
    int max_workers;
    int n_blocked;              /* mu: workers waiting for a client to read a batch */
    pthread_t canceller;
    int has_canceller;
    int stopping;               /* mu */
    uint64_t next_id;           /* mu */
    size_t live;                /* mu: queries not yet freed */
    PyObject *sessions;         /* GIL: {session_id: dict} */
};

/* ---- engine.c ---- */

/* The query whose handler runs on the calling thread, or NULL. */
PlugQuery *plug_current_query(void);
/* Publish the result's columns (moved from cols).  GIL held. */
void plug_publish_columns(PlugQuery *q, RqResult *cols);
/* Hand a batch of rows to the loop, waiting (GIL released) until the
 * previous batch was fetched.  batch is emptied.  Returns 0, or -1 when the
 * query was canceled or abandoned meanwhile (q->err set for a cancel). */
int plug_handoff(PlugQuery *q, Buf *batch, size_t rows);
/* Whether the query was canceled (cheap; takes mu). */
int plug_query_canceled(PlugQuery *q);
/* Sleep up to secs, returning early with 1 when q is canceled.  Call
 * without the GIL. */
int plug_query_wait_cancel(PlugQuery *q, double secs);

/* ---- pymod.c ---- */

/* Interned Python objects the engine uses everywhere.  Process-wide, like
 * the interpreter itself; set once by plug_py_start. */
typedef struct PlugPy {
    PyObject *module;           /* riffq */
    PyObject *Error, *QueryCanceled, *Command, *Columns;
    PyObject *load;             /* riffq._load(modname, path) */
    PyObject *columns;          /* riffq._columns(spec) -> [(name, oid, nullable)] */
    PyObject *df_arrays;        /* riffq._df_arrays(df) */
    PyObject *np_scalar;        /* riffq._np_scalar(x) -> Python value or None */
    PyObject *format_exc;       /* riffq._format_exc(exc) -> (summary, traceback) */
    PyObject *json_dumps, *json_loads;
    PyObject *Decimal, *UUID;
    PyObject *str_tag, *str_columns, *str_sqlstate, *str_message, *str_detail, *str_hint;
} PlugPy;
extern PlugPy plug_py;

/* Start the interpreter once per process (later calls return 0 at once).
 * On return the calling thread does not hold the GIL. */
int plug_py_start(char **errmsg);
/* Import p's file as p->modname; on failure p->load_error is set and the
 * traceback logged.  GIL held. */
int plug_py_import(PlugPlugin *p);
/* Turn the pending Python exception into err: riffq.Error keeps its
 * fields, QueryCanceled (or any exception once canceled) is 57014, anything
 * else XX000 "Type: text" with the traceback logged.  GIL held. */
void plug_py_error(const char *plugin, int canceled, RqError *err);
/* Whether obj is a pandas DataFrame (without importing pandas).  GIL held. */
int plug_py_is_dataframe(PyObject *obj);
/* Type name or OID -> OID; 0 when unknown.  dtype_first: read numpy names
 * such as "int8" (1 byte) as numpy's, not Postgres' (8 bytes). */
uint32_t plug_type_oid(const char *name, int dtype_first);

/* ---- src/python/host.c ---- */

/* Add the serving API's C types (riffq._Engine) to the module, when a
 * Python program imported riffq as an extension. */
int riffq_host_init(PyObject *module);

/* ---- convert.c ---- */

/* Postgres text of type oid -> a new Python object.  GIL held. */
PyObject *plug_param_to_py(uint32_t oid, const char *text);
/* Python value -> Postgres text for a column of type oid, appended to out.
 * Returns 1 for SQL NULL, 0 for a value, -1 with err set (a Python
 * exception, if any, is already turned into err).  nan_null: NaN, NaT and
 * pd.NA are NULL (DataFrame semantics).  GIL held. */
int plug_value_to_text(PyObject *v, uint32_t oid, int nan_null, Buf *out, RqError *err);
void plug_convert_init(void);   /* GIL held; once */

/* Pure C, no GIL needed. */
/* Days since 1970-01-01 of a proleptic Gregorian date (as Postgres and
 * Python count them). */
int64_t plug_days_from_civil(int64_t y, unsigned m, unsigned d);
size_t plug_fmt_int64(int64_t v, char *out);                   /* >= 21 bytes */
size_t plug_fmt_uint64(uint64_t v, char *out);
size_t plug_fmt_float8(double v, char *out);                   /* >= 32 bytes */
size_t plug_fmt_float4(float v, char *out);
size_t plug_fmt_numeric_double(double v, char *out);           /* >= 360 bytes */
/* Microseconds since the Unix epoch -> "YYYY-MM-DD HH:MM:SS[.ffffff][+00][ BC]". */
void plug_fmt_timestamp(int64_t us, int with_tz, Buf *out);
/* Days since the Unix epoch -> "YYYY-MM-DD[ BC]". */
void plug_fmt_date(int64_t days, Buf *out);

/* ---- arrow.c ---- */

/* Whether obj is an Arrow stream: it has __arrow_c_stream__, or it is an
 * "arrow_array_stream" PyCapsule.  GIL held. */
int plug_arrow_is_stream(PyObject *obj);
/* Columns and rows of the Arrow stream obj for q (columns only when
 * q->describe_only).  The stream is moved out of its capsule and released
 * on every path.  *rows counts the rows encoded.  Returns 0, or -1 with
 * q->err set.  GIL held. */
int plug_arrow_encode(PlugQuery *q, PyObject *obj, const char *plugin, uint64_t *rows);
/* Add riffq._ArrowBatch (the producer behind riffq.helpers.to_arrow) to the
 * module.  GIL held. */
int plug_arrow_init(PyObject *module);

/* ---- encode.c ---- */

/* Turn what the handler returned into columns and rows for q.  Returns 0,
 * or -1 with q->err set.  GIL held. */
int plug_encode_result(PlugQuery *q, PyObject *res, const char *plugin);

#endif
