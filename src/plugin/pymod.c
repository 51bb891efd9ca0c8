/*
 * The interpreter and the `riffq` module that plugins import.
 *
 * CPython is one per process, so it is started once (plug_py_start) and
 * never finalized: numpy and pandas cannot be re-initialized after
 * Py_FinalizeEx, and a gateway only stops at exit anyway.  Engines come and
 * go (tests make many); the interpreter stays.  That is why the objects in
 * plug_py are process-wide rather than per engine.
 *
 * The `riffq` module is mostly written in Python (src/plugin/riffq.py):
 * classes such as Error, Command and Columns, the decorators and the pandas
 * glue are a few lines there and would be hundreds against the C API.  C
 * supplies what Python cannot know: which plugin is being imported (the
 * decorators register into it), type names -> Postgres OIDs (pgtypes), and
 * a time.sleep that a cancel can interrupt.  time.sleep is replaced in the
 * embedded interpreter because a handler blocked in the real sleep never
 * runs bytecode, so PyThreadState_SetAsyncExc could not reach it; the
 * replacement waits on the query's condition variable instead, and behaves
 * exactly like the original on threads that are not running a handler.
 *
 * Plugin files are imported with importlib under "riffq_plugin_<name>", so
 * two plugins may use the same file name, and a reload re-executes the file
 * into a fresh module object while queries of the old one finish.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plugin/plugin_internal.h"
#include "riffq/log.h"
#include "riffq/pgtypes.h"

PlugPy plug_py;

/* The plugin whose file is being imported: the decorators register into
 * it.  Only touched with the GIL held, and imports run one at a time.  A
 * handler on a worker that calls a decorator meanwhile must not register
 * into it, hence the importing thread is remembered too. */
static PlugPlugin *loading;
static unsigned long loading_thread;

static PlugPlugin *importing(void)
{
    return loading && loading_thread == PyThread_get_thread_ident() ? loading : NULL;
}

/* The Python half of the module, src/plugin/riffq.py, compiled in as text
 * (the Makefile turns each .py into a byte array). */
extern const char riffq_py_riffq[], riffq_py_host[], riffq_py_helpers[], riffq_py_testing[];

/* ---- C functions of the module ---- */

static PyObject *py_register(PyObject *self, PyObject *args)
{
    (void)self;
    const char *kind;
    PyObject *fn;
    if (!PyArg_ParseTuple(args, "sO:_register", &kind, &fn)) return NULL;
    if (!PyCallable_Check(fn)) {
        PyErr_Format(PyExc_TypeError, "riffq.%s expects a function, got %.100s",
                     kind, Py_TYPE(fn)->tp_name);
        return NULL;
    }
    PlugPlugin *p = importing();
    if (!p) Py_RETURN_FALSE;
    PyObject **slot = strcmp(kind, "query_handler") == 0 ? &p->handler
                    : strcmp(kind, "on_connect") == 0 ? &p->on_connect
                    : strcmp(kind, "on_disconnect") == 0 ? &p->on_disconnect
                    : strcmp(kind, "authenticate") == 0 ? &p->authenticate : NULL;
    if (!slot) {
        PyErr_Format(PyExc_ValueError, "unknown hook %s", kind);
        return NULL;
    }
    Py_INCREF(fn);
    Py_XSETREF(*slot, fn);
    Py_RETURN_TRUE;
}

static char *py_strdup(PyObject *s)
{
    const char *u = PyUnicode_AsUTF8(s);
    return u ? xstrdup(u) : NULL;
}

static PyObject *py_register_table(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *schema, *name, *cols, *pk, *comment;
    if (!PyArg_ParseTuple(args, "UUO!O!O:_register_table", &schema, &name,
                          &PyList_Type, &cols, &PyList_Type, &pk, &comment))
        return NULL;
    PlugPlugin *loading = importing();
    if (!loading) Py_RETURN_FALSE;
    const char *s = PyUnicode_AsUTF8(schema), *n = PyUnicode_AsUTF8(name);
    if (!s || !n) return NULL;
    for (size_t i = 0; i < loading->n_tables; i++) {
        if (strcmp(loading->tables[i].schema, s) == 0 && strcmp(loading->tables[i].name, n) == 0) {
            PyErr_Format(PyExc_ValueError, "table %s.%s is already registered", s, n);
            return NULL;
        }
    }
    Py_ssize_t nc = PyList_GET_SIZE(cols), npk = PyList_GET_SIZE(pk);
    PlugColumn *pc = xcalloc((size_t)nc + 1, sizeof *pc);
    const char **keys = xcalloc((size_t)npk + 1, sizeof *keys);
    for (Py_ssize_t i = 0; i < nc; i++) {
        PyObject *c = PyList_GET_ITEM(cols, i);
        pc[i].name = py_strdup(PyTuple_GET_ITEM(c, 0));
        pc[i].type_oid = (uint32_t)PyLong_AsUnsignedLong(PyTuple_GET_ITEM(c, 1));
        pc[i].nullable = PyObject_IsTrue(PyTuple_GET_ITEM(c, 2));
    }
    for (Py_ssize_t i = 0; i < npk; i++) keys[i] = py_strdup(PyList_GET_ITEM(pk, i));
    loading->tables = xrealloc(loading->tables, (loading->n_tables + 1) * sizeof *loading->tables);
    PlugTable *t = &loading->tables[loading->n_tables++];
    *t = (PlugTable){
        .schema = xstrdup(s), .name = xstrdup(n),
        .columns = pc, .n_columns = (size_t)nc,
        .primary_key = keys, .n_primary_key = (size_t)npk,
        .comment = comment == Py_None ? NULL : py_strdup(comment),
    };
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_TRUE;
}

static PyObject *py_type_oid(PyObject *self, PyObject *arg)
{
    (void)self;
    if (PyLong_Check(arg)) {
        unsigned long oid = PyLong_AsUnsignedLong(arg);
        if (PyErr_Occurred()) return NULL;
        return PyLong_FromUnsignedLong(oid);
    }
    const char *name = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
    if (!name) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_TypeError, "a column type must be a name or an OID, not %.100s",
                         Py_TYPE(arg)->tp_name);
        return NULL;
    }
    uint32_t oid = plug_type_oid(name, 0);
    if (!oid) {
        PyObject *msg = PyUnicode_FromFormat("type \"%s\" does not exist", name);
        PyObject *exc = msg ? PyObject_CallFunction(plug_py.Error, "sO", "42704", msg) : NULL;
        if (exc) PyErr_SetObject(plug_py.Error, exc);
        Py_XDECREF(exc);
        Py_XDECREF(msg);
        return NULL;
    }
    return PyLong_FromUnsignedLong(oid);
}

static PyObject *py_sleep(PyObject *self, PyObject *arg)
{
    PlugQuery *q = plug_current_query();
    if (!q) {
        PyObject *orig = PyObject_GetAttrString(self, "_orig_sleep");
        if (!orig) return NULL;
        PyObject *r = PyObject_CallOneArg(orig, arg);
        Py_DECREF(orig);
        return r;
    }
    double secs = PyFloat_AsDouble(arg);
    if (secs == -1.0 && PyErr_Occurred()) return NULL;
    if (secs < 0) {
        PyErr_SetString(PyExc_ValueError, "sleep length must be non-negative");
        return NULL;
    }
    int canceled;
    Py_BEGIN_ALLOW_THREADS
    canceled = plug_query_wait_cancel(q, secs);
    Py_END_ALLOW_THREADS
    if (canceled) {
        PyErr_SetNone(plug_py.QueryCanceled);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef riffq_methods[] = {
    { "_register", py_register, METH_VARARGS, NULL },
    { "_register_table", py_register_table, METH_VARARGS, NULL },
    { "_type_oid", py_type_oid, METH_O, NULL },
    { "sleep", py_sleep, METH_O,
      "time.sleep, except that a canceled query's handler wakes up with riffq.QueryCanceled." },
    { NULL, NULL, 0, NULL }
};

static struct PyModuleDef riffq_def = {
    PyModuleDef_HEAD_INIT, "riffq", NULL, -1, riffq_methods,
    NULL, NULL, NULL, NULL
};

/* Set by plug_py_start before it starts an interpreter: the module is then
 * the plugins' riffq inside the gateway.  Otherwise a Python program
 * imported the extension module and gets the serving API too. */
static int in_gateway;

static int exec_source(PyObject *dict, const char *src, const char *filename)
{
    if (PyDict_SetItemString(dict, "__builtins__", PyEval_GetBuiltins()) < 0) return -1;
    PyObject *code = Py_CompileString(src, filename, Py_file_input);
    if (!code) return -1;
    PyObject *r = PyEval_EvalCode(code, dict, dict);
    Py_DECREF(code);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

/* riffq.NAME as a submodule: importable as "riffq.NAME" and reachable as
 * an attribute, though the extension is a single file. */
static int add_submodule(PyObject *parent, const char *name, const char *src)
{
    char full[64];
    snprintf(full, sizeof full, "riffq.%s", name);
    PyObject *m = PyModule_New(full);
    if (!m) return -1;
    char filename[80];
    snprintf(filename, sizeof filename, "<riffq>/%s.py", name);
    PyObject *mods = PyImport_GetModuleDict();
    int rc = PyDict_SetItemString(mods, full, m);
    if (rc == 0) rc = exec_source(PyModule_GetDict(m), src, filename);
    if (rc == 0) rc = PyModule_AddObjectRef(parent, name, m);
    if (rc < 0) PyDict_DelItemString(mods, full);
    Py_DECREF(m);
    return rc;
}

PyMODINIT_FUNC PyInit_riffq(void);
PyMODINIT_FUNC PyInit_riffq(void)
{
    PyObject *m = PyModule_Create(&riffq_def);
    if (!m) return NULL;
    PyObject *d = PyModule_GetDict(m);
    if (exec_source(d, riffq_py_riffq, "<riffq>/riffq.py") < 0) goto fail;
    if (plug_arrow_init(m) < 0) goto fail;      /* riffq._ArrowBatch, plugins and programs alike */
    if (!in_gateway) {
        if (riffq_host_init(m) < 0) goto fail;
        if (exec_source(d, riffq_py_host, "<riffq>/host.py") < 0) goto fail;
        if (add_submodule(m, "helpers", riffq_py_helpers) < 0) goto fail;
        if (add_submodule(m, "testing", riffq_py_testing) < 0) goto fail;
    }
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}

/* ---- type names ---- */

static const struct { const char *name; uint32_t oid; } dtype_names[] = {
    { "int64", PGT_INT8 }, { "int32", PGT_INT4 }, { "int16", PGT_INT2 }, { "int8", PGT_INT2 },
    { "uint8", PGT_INT2 }, { "uint16", PGT_INT4 }, { "uint32", PGT_INT8 },
    { "uint64", PGT_NUMERIC },
    { "Int64", PGT_INT8 }, { "Int32", PGT_INT4 }, { "Int16", PGT_INT2 }, { "Int8", PGT_INT2 },
    { "UInt8", PGT_INT2 }, { "UInt16", PGT_INT4 }, { "UInt32", PGT_INT8 },
    { "UInt64", PGT_NUMERIC },
    { "float64", PGT_FLOAT8 }, { "float32", PGT_FLOAT4 }, { "float16", PGT_FLOAT4 },
    { "Float64", PGT_FLOAT8 }, { "Float32", PGT_FLOAT4 },
    { "bool", PGT_BOOL }, { "boolean", PGT_BOOL }, { "bool_", PGT_BOOL },
    { "object", PGT_TEXT }, { "string", PGT_TEXT }, { "str", PGT_TEXT },
    { "category", PGT_TEXT }, { "bytes", PGT_BYTEA }, { "datetime", PGT_TIMESTAMP },
    { "Decimal", PGT_NUMERIC }, { "UUID", PGT_UUID }, { "timedelta", PGT_INTERVAL },
    { "dict", PGT_JSONB }, { "list", PGT_JSONB },
};

static uint32_t dtype_oid(const char *name)
{
    for (size_t i = 0; i < sizeof dtype_names / sizeof dtype_names[0]; i++)
        if (strcmp(dtype_names[i].name, name) == 0) return dtype_names[i].oid;
    if (strncmp(name, "datetime64[", 11) == 0)
        return strchr(name, ',') ? PGT_TIMESTAMPTZ : PGT_TIMESTAMP;
    if (strncmp(name, "timedelta64[", 12) == 0) return PGT_INTERVAL;
    if (strncmp(name, "string[", 7) == 0) return PGT_TEXT;
    return 0;
}

uint32_t plug_type_oid(const char *name, int dtype_first)
{
    /* type modifiers such as numeric(12,2), varchar(20) or timestamp(3)
     * with time zone name the same type (the modifier is not kept) */
    const char *open = strchr(name, '(');
    if (open && strncmp(name, "datetime64[", 11) != 0) {
        const char *close = strchr(open, ')');
        if (!close) return 0;
        char base[128];
        size_t a = (size_t)(open - name), b = strlen(close + 1);
        while (a > 0 && name[a - 1] == ' ') a--;
        if (a + b >= sizeof base) return 0;
        memcpy(base, name, a);
        memcpy(base + a, close + 1, b + 1);
        return plug_type_oid(base, dtype_first);
    }
    uint32_t oid = dtype_first ? dtype_oid(name) : 0;
    if (oid) return oid;
    const PgType *t = pgt_by_name(name);
    if (t) return t->oid;
    return dtype_oid(name);
}

/* ---- start ---- */

static PyObject *attr(PyObject *obj, const char *name)
{
    PyObject *v = PyObject_GetAttrString(obj, name);
    if (!v) log_error("python: missing attribute %s", name);
    return v;
}

static int cache_objects(void)
{
    PyObject *m = PyImport_ImportModule("riffq");
    if (!m) return -1;
    plug_py.module = m;
    if (!(plug_py.Error = attr(m, "Error")) || !(plug_py.QueryCanceled = attr(m, "QueryCanceled")) ||
        !(plug_py.Command = attr(m, "Command")) || !(plug_py.Columns = attr(m, "Columns")) ||
        !(plug_py.load = attr(m, "_load")) || !(plug_py.columns = attr(m, "_columns")) ||
        !(plug_py.df_arrays = attr(m, "_df_arrays")) || !(plug_py.np_scalar = attr(m, "_np_scalar")) ||
        !(plug_py.format_exc = attr(m, "_format_exc")) || !(plug_py.json_dumps = attr(m, "_json_dumps")))
        return -1;
    PyObject *json = PyImport_ImportModule("json");
    PyObject *dec = PyImport_ImportModule("decimal");
    PyObject *uuid = PyImport_ImportModule("uuid");
    if (!json || !dec || !uuid) {
        Py_XDECREF(json); Py_XDECREF(dec); Py_XDECREF(uuid);
        return -1;
    }
    plug_py.json_loads = attr(json, "loads");
    plug_py.Decimal = attr(dec, "Decimal");
    plug_py.UUID = attr(uuid, "UUID");
    Py_DECREF(json); Py_DECREF(dec); Py_DECREF(uuid);
    if (!plug_py.json_loads || !plug_py.Decimal || !plug_py.UUID) return -1;
    plug_py.str_tag = PyUnicode_InternFromString("tag");
    plug_py.str_columns = PyUnicode_InternFromString("columns");
    plug_py.str_sqlstate = PyUnicode_InternFromString("sqlstate");
    plug_py.str_message = PyUnicode_InternFromString("message");
    plug_py.str_detail = PyUnicode_InternFromString("detail");
    plug_py.str_hint = PyUnicode_InternFromString("hint");
    plug_convert_init();
    return 0;
}

static char *exception_text(void)
{
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    PyObject *s = v ? PyObject_Str(v) : NULL;
    const char *u = s ? PyUnicode_AsUTF8(s) : NULL;
    char *out = xasprintf("%s: %s", t ? ((PyTypeObject *)t)->tp_name : "error", u ? u : "?");
    Py_XDECREF(s); Py_XDECREF(t); Py_XDECREF(v); Py_XDECREF(tb);
    PyErr_Clear();
    return out;
}

static pthread_mutex_t start_mu = PTHREAD_MUTEX_INITIALIZER;
static int started;

int plug_py_start(char **errmsg)
{
    pthread_mutex_lock(&start_mu);
    if (started) {
        pthread_mutex_unlock(&start_mu);
        return 0;
    }
    int ok = 0;
    if (Py_IsInitialized()) {
        /* a host Python (riffq imported as an extension module) runs us */
        PyGILState_STATE g = PyGILState_Ensure();
        if (cache_objects() < 0) *errmsg = exception_text();
        else ok = 1;
        PyGILState_Release(g);
    } else {
        in_gateway = 1;
        if (PyImport_AppendInittab("riffq", PyInit_riffq) < 0) {
            *errmsg = xstrdup("python: cannot register the riffq module");
            goto out;
        }
        PyConfig c;
        /* isolated: PYTHON* variables and the user's site directory must not
         * change what a gateway runs; Debian's site.py still adds its
         * dist-packages, where python3-pandas lives */
        PyConfig_InitIsolatedConfig(&c);
        c.write_bytecode = 0;          /* keep __pycache__ out of the plugin directories */
        c.install_signal_handlers = 0; /* signals belong to the event loop */
        c.site_import = 1;
        c.user_site_directory = 0;
        /* the prefix is found from the executable; our own binary is not in
         * /usr/bin, and the first python3 on PATH may be another install */
        if (access("/usr/bin/python3", X_OK) == 0)
            PyConfig_SetString(&c, &c.program_name, L"/usr/bin/python3");
        PyStatus st = Py_InitializeFromConfig(&c);
        PyConfig_Clear(&c);
        if (PyStatus_Exception(st)) {
            *errmsg = xasprintf("python: cannot start the interpreter: %s",
                                st.err_msg ? st.err_msg : "unknown error");
            goto out;
        }
        if (cache_objects() < 0) *errmsg = exception_text();
        else ok = 1;
        /* from here on the loop thread never holds the GIL */
        PyEval_SaveThread();
    }
out:
    if (ok) started = 1;
    pthread_mutex_unlock(&start_mu);
    return ok ? 0 : -1;
}

/* ---- import ---- */

static void fetch_summary(PyObject *exc, char **summary, char **traceback)
{
    *summary = *traceback = NULL;
    PyObject *r = exc ? PyObject_CallOneArg(plug_py.format_exc, exc) : NULL;
    if (r && PyTuple_Check(r) && PyTuple_GET_SIZE(r) == 2) {
        *summary = py_strdup(PyTuple_GET_ITEM(r, 0));
        *traceback = py_strdup(PyTuple_GET_ITEM(r, 1));
    }
    Py_XDECREF(r);
    PyErr_Clear();
    if (!*summary) {
        PyObject *s = exc ? PyObject_Str(exc) : NULL;
        const char *u = s ? PyUnicode_AsUTF8(s) : NULL;
        *summary = xasprintf("%s: %s", exc ? Py_TYPE(exc)->tp_name : "error", u ? u : "?");
        Py_XDECREF(s);
        PyErr_Clear();
    }
}

static PyObject *fetch_exception(void)
{
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    if (!t) return NULL;
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb && v) PyException_SetTraceback(v, tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    return v;
}

int plug_py_import(PlugPlugin *p)
{
    loading = p;
    loading_thread = PyThread_get_thread_ident();
    PyObject *mod = PyObject_CallFunction(plug_py.load, "ssi", p->modname, p->path, p->is_import);
    loading = NULL;
    if (mod) {
        p->module = mod;
        return 0;
    }
    PyObject *exc = fetch_exception();
    char *summary, *tb;
    fetch_summary(exc, &summary, &tb);
    Py_XDECREF(exc);
    log_error("plugin \"%s\" (%s) failed to load: %s", p->name, p->path, tb ? tb : summary);
    free(tb);
    p->load_error = summary;
    /* a half-imported module must not answer queries */
    Py_CLEAR(p->handler);
    Py_CLEAR(p->on_connect);
    Py_CLEAR(p->on_disconnect);
    Py_CLEAR(p->authenticate);
    return -1;
}

/* ---- errors ---- */

static char *attr_str(PyObject *obj, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    char *out = NULL;
    if (v && v != Py_None) {
        PyObject *s = PyObject_Str(v);
        if (s) out = py_strdup(s);
        Py_XDECREF(s);
    }
    Py_XDECREF(v);
    PyErr_Clear();
    return out;
}

static int valid_sqlstate(const char *s)
{
    if (!s || strlen(s) != 5) return 0;
    for (int i = 0; i < 5; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z'))) return 0;
    return 1;
}

void plug_py_error(const char *plugin, int canceled, RqError *err)
{
    PyObject *exc = fetch_exception();
    if (!exc) {
        rq_error_set(err, "XX000", "plugin \"%s\" failed without an exception", plugin);
        return;
    }
    if (canceled || PyObject_IsInstance(exc, plug_py.QueryCanceled) == 1) {
        rq_error_set(err, "57014", "canceling statement due to user request");
    } else if (PyObject_IsInstance(exc, plug_py.Error) == 1) {
        char *state = attr_str(exc, plug_py.str_sqlstate);
        char *msg = attr_str(exc, plug_py.str_message);
        char *detail = attr_str(exc, plug_py.str_detail);
        char *hint = attr_str(exc, plug_py.str_hint);
        rq_error_set(err, valid_sqlstate(state) ? state : "XX000", "%s", msg ? msg : "error");
        if (!valid_sqlstate(state))
            log_warn("plugin \"%s\" raised riffq.Error with an invalid SQLSTATE \"%s\"",
                     plugin, state ? state : "");
        if (detail) rq_error_detail(err, "%s", detail);
        if (hint) rq_error_hint(err, "%s", hint);
        free(state); free(msg); free(detail); free(hint);
    } else {
        char *summary, *tb;
        fetch_summary(exc, &summary, &tb);
        log_error("plugin \"%s\": %s", plugin, tb ? tb : summary);
        rq_error_set(err, "XX000", "%s", summary);
        free(summary);
        free(tb);
    }
    Py_DECREF(exc);
    PyErr_Clear();
}

int plug_py_is_dataframe(PyObject *obj)
{
    /* only pandas itself can make a DataFrame, so a module not yet imported
     * means "no" without paying for the import */
    PyTypeObject *t = Py_TYPE(obj);
    if (strcmp(t->tp_name, "DataFrame") != 0) {
        int found = 0;
        for (PyTypeObject *b = t->tp_base; b && !found; b = b->tp_base)
            found = strcmp(b->tp_name, "DataFrame") == 0;
        if (!found) return 0;
    }
    PyObject *mods = PyImport_GetModuleDict();
    PyObject *pd = PyDict_GetItemString(mods, "pandas");
    if (!pd) return 0;
    PyObject *cls = PyObject_GetAttrString(pd, "DataFrame");
    if (!cls) {
        PyErr_Clear();
        return 0;
    }
    int r = PyObject_IsInstance(obj, cls) == 1;
    Py_DECREF(cls);
    PyErr_Clear();
    return r;
}
