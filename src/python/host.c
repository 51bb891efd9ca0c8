/*
 * The gateway inside a Python program: riffq imported as an extension
 * module (build/python/riffq*.so) runs the same server the riffq binary
 * runs, configured from a route file that host.py writes as JSON.
 *
 * riffq._Engine(config_json) validates the configuration; start() opens
 * the listeners and then either runs the event loop on the calling thread
 * with the GIL released (blocking: what riffq.serve and Server.start do) or
 * on a thread of its own (background: the caller goes on and calls stop()).
 * Python handlers run on the plugin engine's worker threads either way, so
 * the loop never waits for Python.
 *
 * Signals.  A blocking start on the main thread takes SIGINT and SIGTERM
 * for the loop (libuv's handlers replace Python's for the duration and the
 * previous dispositions come back afterwards): the first one calls
 * on_signal, if given, with the GIL, then stops the server the way the
 * gateway binary does, and start() returns the signal number.  Python's own
 * SIGINT handler would only set a flag that no Python code runs to notice
 * while the loop owns the thread.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "plugin/plugin_internal.h"
#include "riffq/buf.h"
#include "riffq/config.h"
#include "riffq/log.h"
#include "riffq/route.h"
#include "riffq/server.h"

enum { ENG_NEW = 0, ENG_RUNNING, ENG_STOPPED };

typedef struct Engine {
    PyObject_HEAD
    pthread_mutex_t mu;
    int state;                  /* mu */
    int stop_requested;         /* mu: stop() before the loop took it */
    Config *cfg;                /* until start hands it to server_new */
    uv_loop_t loop;
    uv_async_t stop_async;
    uv_signal_t sigint, sigterm;
    int signals;                /* the signal handles are live */
    int got_signal;
    PyObject *on_signal;        /* GIL */
    Server *srv;
    pthread_t thread;
    int has_thread;
    pthread_cond_t done_cond;   /* mu: state became ENG_STOPPED */
} Engine;

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Loop thread. */
static void begin_stop(Engine *e)
{
    server_stop(e->srv);
    if (e->signals) {
        uv_signal_stop(&e->sigint);
        uv_signal_stop(&e->sigterm);
        uv_close((uv_handle_t *)&e->sigint, NULL);
        uv_close((uv_handle_t *)&e->sigterm, NULL);
        e->signals = 0;
    }
    if (!uv_is_closing((uv_handle_t *)&e->stop_async))
        uv_close((uv_handle_t *)&e->stop_async, NULL);
}

static void on_stop_async(uv_async_t *h)
{
    begin_stop(h->data);
}

static void on_signal(uv_signal_t *s, int signum)
{
    Engine *e = s->data;
    if (e->got_signal) return;
    e->got_signal = signum;
    log_info("received %s, shutting down", signum == SIGINT ? "SIGINT" : "SIGTERM");
    if (e->on_signal) {
        PyGILState_STATE g = PyGILState_Ensure();
        PyObject *r = PyObject_CallFunction(e->on_signal, "i", signum);
        if (!r) PyErr_WriteUnraisable(e->on_signal);
        Py_XDECREF(r);
        PyGILState_Release(g);
    }
    begin_stop(e);
}

/* The loop until the server stopped, then the same teardown as the
 * gateway binary: the server's pools still own handles, so it is freed
 * while the loop can close them, and whatever is left is swept. */
static void run_loop(Engine *e)
{
    uv_run(&e->loop, UV_RUN_DEFAULT);
    server_free(e->srv);
    e->srv = NULL;
    uv_run(&e->loop, UV_RUN_DEFAULT);
    uv_walk(&e->loop, close_walk, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    uv_loop_close(&e->loop);
    route_cache_exit();
    pthread_mutex_lock(&e->mu);
    e->state = ENG_STOPPED;
    pthread_cond_broadcast(&e->done_cond);
    pthread_mutex_unlock(&e->mu);
}

static void *loop_thread(void *arg)
{
    run_loop(arg);
    return NULL;
}

static int engine_init(Engine *e, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = { "config", "name", NULL };
    const char *json, *name = "<riffq>";
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|s:_Engine", kwlist, &json, &name)) return -1;
    if (e->cfg || e->state != ENG_NEW) {
        PyErr_SetString(PyExc_RuntimeError, "riffq._Engine is already initialized");
        return -1;
    }
    char *err = NULL;
    e->cfg = cfg_load_string(json, name, &err);
    if (!e->cfg) {
        PyErr_SetString(PyExc_ValueError, err ? err : "invalid configuration");
        free(err);
        return -1;
    }
    return 0;
}

static PyObject *engine_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    (void)args; (void)kw;
    Engine *e = (Engine *)type->tp_alloc(type, 0);
    if (!e) return NULL;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->done_cond, NULL);
    return (PyObject *)e;
}

/* GIL held: waits (GIL released) for a background loop to finish. */
static void join_thread(Engine *e)
{
    if (!e->has_thread) return;
    Py_BEGIN_ALLOW_THREADS
    pthread_join(e->thread, NULL);
    Py_END_ALLOW_THREADS
    e->has_thread = 0;
    Py_DECREF(e);       /* the reference start() took for the thread */
}

static void request_stop(Engine *e)
{
    pthread_mutex_lock(&e->mu);
    if (e->state == ENG_RUNNING) uv_async_send(&e->stop_async);
    else if (e->state == ENG_NEW) e->stop_requested = 1;
    pthread_mutex_unlock(&e->mu);
}

static void engine_dealloc(Engine *e)
{
    /* a running engine holds a reference to itself (see start), so one
     * that gets here never started or has stopped and was joined */
    cfg_free(e->cfg);
    Py_XDECREF(e->on_signal);
    pthread_cond_destroy(&e->done_cond);
    pthread_mutex_destroy(&e->mu);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static PyObject *engine_start(Engine *e, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = { "background", "signals", "on_signal", NULL };
    int background = 0, signals = 1;
    PyObject *sig_cb = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|ppO:start", kwlist, &background, &signals, &sig_cb))
        return NULL;
    if (sig_cb != Py_None && !PyCallable_Check(sig_cb)) {
        PyErr_SetString(PyExc_TypeError, "on_signal must be callable");
        return NULL;
    }
    pthread_mutex_lock(&e->mu);
    int state = e->state;
    pthread_mutex_unlock(&e->mu);
    if (state != ENG_NEW || !e->cfg) {
        PyErr_SetString(PyExc_RuntimeError, "this server was already started; make a new one");
        return NULL;
    }
    if (sig_cb != Py_None) {
        Py_INCREF(sig_cb);
        Py_XSETREF(e->on_signal, sig_cb);
    }

    LogLevel lvl = LOG_INFO;
    if (e->cfg->log_level) log_parse_level(e->cfg->log_level, &lvl);
    log_set_level(lvl);

    int rc = uv_loop_init(&e->loop);
    if (rc < 0) return PyErr_Format(PyExc_OSError, "uv_loop_init: %s", uv_strerror(rc));
    char *err = NULL;
    Config *cfg = e->cfg;
    e->cfg = NULL;
    /* server_new starts the plugin engine, whose imports need the GIL we
     * hold; the loop itself runs without it */
    e->srv = server_new(&e->loop, cfg, &err);
    if (!e->srv || server_listen(e->srv, &err) < 0) {
        PyObject *exc = PyErr_Occurred() ? NULL : PyExc_OSError;
        if (exc) PyErr_SetString(exc, err ? err : "cannot start the server");
        free(err);
        if (e->srv) server_stop(e->srv);
        Py_BEGIN_ALLOW_THREADS
        run_loop(e);
        Py_END_ALLOW_THREADS
        return NULL;
    }
    uv_async_init(&e->loop, &e->stop_async, on_stop_async);
    e->stop_async.data = e;
    if (signals && !background) {
        uv_signal_init(&e->loop, &e->sigint);
        uv_signal_init(&e->loop, &e->sigterm);
        e->sigint.data = e->sigterm.data = e;
        uv_signal_start(&e->sigint, on_signal, SIGINT);
        uv_signal_start(&e->sigterm, on_signal, SIGTERM);
        e->signals = 1;
    }
    /* a client that vanishes must not kill the host program */
    signal(SIGPIPE, SIG_IGN);

    pthread_mutex_lock(&e->mu);
    e->state = ENG_RUNNING;
    if (e->stop_requested) uv_async_send(&e->stop_async);
    pthread_mutex_unlock(&e->mu);

    /* while running, the loop thread uses e: keep it alive */
    Py_INCREF(e);
    if (background) {
        rc = pthread_create(&e->thread, NULL, loop_thread, e);
        if (rc == 0) {
            e->has_thread = 1;
            Py_RETURN_NONE;
        }
        log_error("cannot start the server thread: %s", strerror(rc));
        begin_stop(e);
    }

    struct sigaction old_int, old_term;
    sigaction(SIGINT, NULL, &old_int);
    sigaction(SIGTERM, NULL, &old_term);
    Py_BEGIN_ALLOW_THREADS
    run_loop(e);
    Py_END_ALLOW_THREADS
    /* libuv leaves SIG_DFL behind; Python's handlers must come back */
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    int got = e->got_signal;
    Py_DECREF(e);
    if (background) return PyErr_Format(PyExc_OSError, "cannot start the server thread: %s",
                                        strerror(rc));
    return PyLong_FromLong(got);
}

static PyObject *engine_stop(Engine *e, PyObject *unused)
{
    (void)unused;
    request_stop(e);
    Py_RETURN_NONE;
}

/* wait(timeout=None) -> True once stopped.  Waits in slices so that a
 * Ctrl-C in the waiting (main) thread raises KeyboardInterrupt promptly. */
static PyObject *engine_wait(Engine *e, PyObject *args)
{
    double timeout = -1;
    if (!PyArg_ParseTuple(args, "|d:wait", &timeout)) return NULL;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        int stopped;
        Py_BEGIN_ALLOW_THREADS
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 100 * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&e->mu);
        if (e->state == ENG_RUNNING) pthread_cond_timedwait(&e->done_cond, &e->mu, &until);
        stopped = e->state != ENG_RUNNING;
        pthread_mutex_unlock(&e->mu);
        Py_END_ALLOW_THREADS
        if (stopped) {
            join_thread(e);
            Py_RETURN_TRUE;
        }
        if (PyErr_CheckSignals() < 0) return NULL;
        if (timeout >= 0) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            double spent = (double)(now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9;
            if (spent >= timeout) Py_RETURN_FALSE;
        }
    }
}

static PyObject *engine_running(Engine *e, void *closure)
{
    (void)closure;
    pthread_mutex_lock(&e->mu);
    int r = e->state == ENG_RUNNING;
    pthread_mutex_unlock(&e->mu);
    return PyBool_FromLong(r);
}

static PyMethodDef engine_methods[] = {
    { "start", (PyCFunction)(void (*)(void))engine_start, METH_VARARGS | METH_KEYWORDS,
      "start(background=False, signals=True, on_signal=None): open the listeners and serve; "
      "blocking, returns the signal number that stopped it (0 for stop())." },
    { "stop", (PyCFunction)engine_stop, METH_NOARGS,
      "Stop serving (any thread): sessions get 57P01 and are closed." },
    { "wait", (PyCFunction)engine_wait, METH_VARARGS,
      "wait(timeout=None) -> bool: block until a background server stopped." },
    { NULL, NULL, 0, NULL }
};

static PyGetSetDef engine_getset[] = {
    { "running", (getter)engine_running, NULL, "Whether the server is serving.", NULL },
    { NULL, NULL, NULL, NULL, NULL }
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "riffq._Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "_Engine(config_json): one gateway server configured by a route file's JSON.",
    .tp_new = engine_new,
    .tp_init = (initproc)engine_init,
    .tp_dealloc = (destructor)engine_dealloc,
    .tp_methods = engine_methods,
    .tp_getset = engine_getset,
};

int riffq_host_init(PyObject *module)
{
    if (PyType_Ready(&EngineType) < 0) return -1;
    return PyModule_AddObjectRef(module, "_Engine", (PyObject *)&EngineType);
}
