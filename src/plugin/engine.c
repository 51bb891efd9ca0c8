/*
 * The plugin engine: worker threads that run Python handlers, and the
 * hand-off of their results to the event loop.
 *
 * Threads.  The loop thread never holds the GIL (except inside the
 * synchronous hook calls and reload, which say so in plugin.h).  Workers
 * (plugin_workers pthreads, see below) take jobs from a FIFO queue; each keeps one Python
 * thread state for its whole life and holds the GIL only while it runs
 * Python or converts Python values.  A canceller thread exists because
 * PyThreadState_SetAsyncExc needs the GIL, and the loop must not wait for
 * it: plug_query_cancel only queues the query's id for the canceller.
 *
 * Hand-off.  The worker encodes a batch of DataRows into its own Buf, then
 * waits (GIL released) until the loop fetched everything of the previous
 * batch, swaps the batch in, and notifies the loop: the query goes on the
 * engine's pending list and one uv_async_t per engine wakes the loop, whose
 * callback calls each pending query's PlugReadyCb.  So a query holds at
 * most two batches (one fetched-from, one being encoded), whatever the size
 * of its result.
 *
 * Elastic workers.  A worker whose batch waits for the client to read it
 * (an open cursor, a suspended portal, a slow client) holds its generator
 * and cannot take other jobs; a few idle cursors would otherwise stall every
 * plugin query of every client.  So a worker that starts such a wait
 * starts another worker when fewer than plugin_workers would be left to run
 * handlers.  Started workers stay until the engine stops (an idle one costs
 * a stack); max_workers bounds them.
 *
 * Ownership.  The loop owns a PlugQuery until plug_query_free.  If the
 * worker has not finished by then, the query is marked abandoned (and
 * canceled, for handler calls) and the worker frees it when it finishes;
 * the finished/abandoned pair is decided under the engine mutex, so exactly
 * one side frees.  Queries carry a serial id, so a cancel that arrives late
 * can never interrupt a different query that reused the memory or the
 * worker.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "plugin/plugin_internal.h"
#include "riffq/log.h"

static __thread PlugQuery *current_query;

PlugQuery *plug_current_query(void)
{
    return current_query;
}

/* ---- plugins ---- */

static PlugPlugin *plugin_new(const CfgPlugin *cp)
{
    PlugPlugin *p = xcalloc(1, sizeof *p);
    p->refs = 1;
    p->name = xstrdup(cp->name);
    p->path = xstrdup(cp->module ? cp->module : cp->import);
    p->is_import = cp->import != NULL;
    p->modname = xasprintf("riffq_plugin_%s", cp->name);
    for (char *c = p->modname; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')))
            *c = '_';
    return p;
}

static void tables_free(PlugTable *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free((char *)t[i].schema);
        free((char *)t[i].name);
        for (size_t c = 0; c < t[i].n_columns; c++) free((char *)t[i].columns[c].name);
        free((PlugColumn *)t[i].columns);
        for (size_t k = 0; k < t[i].n_primary_key; k++) free((char *)t[i].primary_key[k]);
        free((char **)t[i].primary_key);
        free((char *)t[i].comment);
    }
    free(t);
}

/* GIL held: the last reference drops Python objects. */
static void plugin_unref(PlugEngine *e, PlugPlugin *p)
{
    pthread_mutex_lock(&e->mu);
    int last = --p->refs == 0;
    pthread_mutex_unlock(&e->mu);
    if (!last) return;
    Py_XDECREF(p->handler);
    Py_XDECREF(p->on_connect);
    Py_XDECREF(p->on_disconnect);
    Py_XDECREF(p->authenticate);
    Py_XDECREF(p->module);
    tables_free(p->tables, p->n_tables);
    free(p->name);
    free(p->path);
    free(p->modname);
    free(p->load_error);
    free(p);
}

/* GIL held. */
static PlugPlugin **plugins_load(const Config *cfg, size_t *n)
{
    *n = cfg ? cfg->n_plugins : 0;
    PlugPlugin **ps = xcalloc(*n + 1, sizeof *ps);
    for (size_t i = 0; i < *n; i++) {
        ps[i] = plugin_new(&cfg->plugins[i]);
        if (plug_py_import(ps[i]) == 0)
            log_info("plugin \"%s\" loaded from %s (%zu table%s)", ps[i]->name, ps[i]->path,
                     ps[i]->n_tables, ps[i]->n_tables == 1 ? "" : "s");
    }
    return ps;
}

static PlugPlugin *plugin_find(PlugEngine *e, const char *name)
{
    for (size_t i = 0; i < e->n_plugins; i++)
        if (strcmp(e->plugins[i]->name, name) == 0) return e->plugins[i];
    return NULL;
}

/* The current plugins, each with a reference the caller drops. */
static PlugPlugin **plugins_snapshot(PlugEngine *e, size_t *n)
{
    pthread_mutex_lock(&e->mu);
    *n = e->n_plugins;
    PlugPlugin **ps = xcalloc(*n + 1, sizeof *ps);
    for (size_t i = 0; i < *n; i++) {
        ps[i] = e->plugins[i];
        ps[i]->refs++;
    }
    pthread_mutex_unlock(&e->mu);
    return ps;
}

/* ---- queries: allocation and notification ---- */

static char *dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

static PlugQuery *query_new(PlugEngine *e, PlugJobKind kind, const PlugCtx *ctx,
                            PlugReadyCb cb, void *ud)
{
    PlugQuery *q = xcalloc(1, sizeof *q);
    q->e = e;
    q->kind = kind;
    q->cb = cb;
    q->ud = ud;
    if (ctx) {
        q->user = dup_or_null(ctx->user);
        q->database = dup_or_null(ctx->database);
        q->application_name = dup_or_null(ctx->application_name);
        q->route = dup_or_null(ctx->route);
        q->session_id = ctx->session_id;
        q->client_addr = dup_or_null(ctx->client_addr);
        q->client_port = ctx->client_port;
        q->server_name = dup_or_null(ctx->server_name);
        q->options = dup_or_null(ctx->options);
        q->extended = ctx->extended;
    }
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&q->cond, &attr);
    pthread_condattr_destroy(&attr);
    buf_init(&q->out);
    rq_result_init(&q->cols);
    pthread_mutex_lock(&e->mu);
    q->id = ++e->next_id;
    e->live++;
    pthread_mutex_unlock(&e->mu);
    return q;
}

static void query_destroy(PlugQuery *q)
{
    PlugEngine *e = q->e;
    pthread_mutex_lock(&e->mu);
    e->live--;
    pthread_mutex_unlock(&e->mu);
    free(q->plugin_name);
    if (q->kind == JOB_AUTH && q->sql) explicit_bzero(q->sql, strlen(q->sql));
    free(q->sql);
    for (uint16_t i = 0; i < q->n_params; i++) free(q->params[i]);
    free(q->params);
    free(q->param_types);
    free(q->formats);
    free(q->user);
    free(q->database);
    free(q->application_name);
    free(q->route);
    free(q->client_addr);
    free(q->server_name);
    free(q->options);
    rq_result_free(&q->cols);
    buf_free(&q->out);
    free(q->tag);
    rq_error_free(&q->err);
    pthread_cond_destroy(&q->cond);
    free(q);
}

/* mu held. */
static void notify_locked(PlugQuery *q)
{
    PlugEngine *e = q->e;
    if (q->notify_pending || !q->cb || q->abandoned) return;
    q->notify_pending = 1;
    q->next_pending = NULL;
    if (e->pending_tail) e->pending_tail->next_pending = q;
    else e->pending_head = q;
    e->pending_tail = q;
    uv_async_send(e->async);
}

/* mu held. */
static void unlink_pending(PlugQuery *q)
{
    PlugEngine *e = q->e;
    if (!q->notify_pending) return;
    PlugQuery **pp = &e->pending_head, *prev = NULL;
    while (*pp && *pp != q) {
        prev = *pp;
        pp = &(*pp)->next_pending;
    }
    if (*pp) {
        *pp = q->next_pending;
        if (e->pending_tail == q) e->pending_tail = prev;
    }
    q->notify_pending = 0;
}

static void on_async(uv_async_t *h)
{
    PlugEngine *e = h->data;
    /* one at a time: a callback may free any query, including others on
     * the list, and plug_query_free unlinks under the mutex */
    for (;;) {
        pthread_mutex_lock(&e->mu);
        PlugQuery *q = e->pending_head;
        if (!q) {
            pthread_mutex_unlock(&e->mu);
            break;
        }
        e->pending_head = q->next_pending;
        if (!e->pending_head) e->pending_tail = NULL;
        q->notify_pending = 0;
        PlugReadyCb cb = q->cb;
        void *ud = q->ud;
        pthread_mutex_unlock(&e->mu);
        if (cb) cb(ud);
    }
}

/* ---- worker side ---- */

void plug_publish_columns(PlugQuery *q, RqResult *cols)
{
    pthread_mutex_lock(&q->e->mu);
    q->cols = *cols;
    rq_result_init(cols);
    q->has_cols = 1;
    notify_locked(q);
    pthread_mutex_unlock(&q->e->mu);
}

int plug_query_canceled(PlugQuery *q)
{
    pthread_mutex_lock(&q->e->mu);
    int c = q->canceled;
    pthread_mutex_unlock(&q->e->mu);
    return c;
}

static void *worker_main(void *arg);

/* mu held. */
static void grow_workers_locked(PlugEngine *e)
{
    if (e->stopping || e->n_workers - e->n_blocked >= e->target_workers ||
        e->n_workers >= e->max_workers)
        return;
    PlugWorker *w = &e->workers[e->n_workers];
    w->e = e;
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    if (rc != 0) {
        log_warn("plugins: cannot start another worker: %s", strerror(rc));
        return;
    }
    e->n_workers++;
}

int plug_handoff(PlugQuery *q, Buf *batch, size_t rows)
{
    PlugEngine *e = q->e;
    int r = 0;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&e->mu);
    if (q->out_rows > 0 && !q->canceled) {
        e->n_blocked++;
        grow_workers_locked(e);
        while (q->out_rows > 0 && !q->canceled)
            pthread_cond_wait(&q->cond, &e->mu);
        e->n_blocked--;
    }
    if (q->canceled) {
        r = -1;
    } else {
        Buf spent = q->out;     /* fetched completely: reuse its memory */
        q->out = *batch;
        q->out_pos = 0;
        q->out_rows = rows;
        *batch = spent;
        notify_locked(q);
    }
    pthread_mutex_unlock(&e->mu);
    Py_END_ALLOW_THREADS
    buf_reset(batch);
    if (r < 0) rq_error_set(&q->err, "57014", "canceling statement due to user request");
    return r;
}

int plug_query_wait_cancel(PlugQuery *q, double secs)
{
    PlugEngine *e = q->e;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    if (!(secs < 1e9)) secs = 1e9;      /* also catches inf and NaN */
    double whole = floor(secs);
    until.tv_sec += (time_t)whole;
    until.tv_nsec += (long)((secs - whole) * 1e9);
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&e->mu);
    while (!q->canceled)
        if (pthread_cond_timedwait(&q->cond, &e->mu, &until) == ETIMEDOUT) break;
    int c = q->canceled;
    pthread_mutex_unlock(&e->mu);
    return c;
}

/* GIL held.  ctx as handlers and hooks see it. */
static PyObject *make_ctx(PlugEngine *e, const PlugCtx *c, int describe)
{
    PyObject *key = PyLong_FromLong(c->session_id);
    if (!key) return NULL;
    PyObject *session = PyDict_GetItemWithError(e->sessions, key);
    if (session) {
        Py_INCREF(session);
    } else if (!PyErr_Occurred()) {
        session = PyDict_New();
        if (session && PyDict_SetItem(e->sessions, key, session) < 0) Py_CLEAR(session);
    }
    Py_DECREF(key);
    if (!session) return NULL;
    PyObject *ctx = Py_BuildValue("{s:z,s:z,s:z,s:z,s:O,s:O,s:i,s:z,s:O,s:z,s:z,s:O}",
                                  "user", c->user, "database", c->database,
                                  "application_name", c->application_name, "route", c->route,
                                  "describe", describe ? Py_True : Py_False,
                                  "session", session, "session_id", (int)c->session_id,
                                  "client_addr", c->client_addr,
                                  "client_port", Py_None, "server_name", c->server_name,
                                  "options", c->options,
                                  "extended", c->extended ? Py_True : Py_False);
    Py_DECREF(session);
    if (ctx && c->client_addr) {
        PyObject *port = PyLong_FromLong(c->client_port);
        if (!port || PyDict_SetItemString(ctx, "client_port", port) < 0) Py_CLEAR(ctx);
        Py_XDECREF(port);
    }
    return ctx;
}

void plug_ctx_set_peer(PlugCtx *ctx, const char *peer, char *ip)
{
    const char *colon = peer ? strrchr(peer, ':') : NULL;
    size_t n = colon ? (size_t)(colon - peer) : 0;
    if (!colon || n == 0 || n >= 46 || peer[0] == '?' || peer[0] == '[') return;
    memcpy(ip, peer, n);
    ip[n] = '\0';
    ctx->client_addr = ip;
    ctx->client_port = atoi(colon + 1);
}

/* The ctx a job was started with (a view of its own copies). */
static PlugCtx query_ctx(const PlugQuery *q)
{
    return (PlugCtx){ .user = q->user, .database = q->database,
                      .application_name = q->application_name, .route = q->route,
                      .session_id = q->session_id, .client_addr = q->client_addr,
                      .client_port = q->client_port, .server_name = q->server_name,
                      .options = q->options, .extended = q->extended };
}

/* GIL held. */
static void drop_session(PlugEngine *e, int32_t session_id)
{
    PyObject *key = PyLong_FromLong(session_id);
    if (key && PyDict_DelItem(e->sessions, key) < 0) PyErr_Clear();
    Py_XDECREF(key);
    PyErr_Clear();
}

/* GIL held.  Runs every plugin's hook; 0, or -1 with err (on_connect). */
static int run_hooks(PlugEngine *e, PlugHook hook, PyObject *ctx, RqError *err)
{
    size_t n;
    PlugPlugin **ps = plugins_snapshot(e, &n);
    int r = 0;
    for (size_t i = 0; i < n && r == 0; i++) {
        PyObject *fn = hook == PLUG_HOOK_CONNECT ? ps[i]->on_connect : ps[i]->on_disconnect;
        if (!fn) continue;
        PyObject *res = PyObject_CallOneArg(fn, ctx);
        if (res) {
            Py_DECREF(res);
        } else if (hook == PLUG_HOOK_CONNECT) {
            plug_py_error(ps[i]->name, 0, err);
            r = -1;
        } else {
            RqError ignored = { 0 };
            plug_py_error(ps[i]->name, 0, &ignored);
            log_warn("plugin \"%s\": on_disconnect failed: %s", ps[i]->name, ignored.message);
            rq_error_free(&ignored);
        }
    }
    for (size_t i = 0; i < n; i++) plugin_unref(e, ps[i]);
    free(ps);
    return r;
}

static PyObject *utf8(const char *s)
{
    /* clients may send bytes that are not UTF-8; never fail on them */
    return PyUnicode_DecodeUTF8(s, (Py_ssize_t)strlen(s), "surrogateescape");
}

/* GIL held.  After this the canceller cannot reach this worker until it
 * runs the next job: in_python is cleared under the GIL, which the
 * canceller holds while it checks and acts, and an exception it already
 * scheduled is withdrawn. */
static void stop_interrupts(PlugWorker *w)
{
    pthread_mutex_lock(&w->e->mu);
    w->in_python = 0;
    pthread_mutex_unlock(&w->e->mu);
    PyThreadState_SetAsyncExc(w->ident, NULL);
}

/* GIL held. */
static void run_query(PlugWorker *w, PlugQuery *q)
{
    PlugEngine *e = w->e;
    PlugPlugin *p = q->plugin;
    if (!p->handler) {
        rq_error_set(&q->err, "58000", "plugin \"%s\" defines no query handler", p->name);
        rq_error_hint(&q->err, "Decorate a function with @riffq.query_handler in %s.", p->path);
        return;
    }
    if (plug_query_canceled(q)) {
        rq_error_set(&q->err, "57014", "canceling statement due to user request");
        return;
    }
    PyObject *params = PyList_New(q->n_params);
    PyObject *ctx = NULL, *sql = NULL, *res = NULL;
    if (!params) goto py_error;
    for (uint16_t i = 0; i < q->n_params; i++) {
        PyObject *v = plug_param_to_py(q->param_types ? q->param_types[i] : 0, q->params[i]);
        if (!v) goto py_error;
        PyList_SET_ITEM(params, i, v);
    }
    PlugCtx qc = query_ctx(q);
    ctx = make_ctx(e, &qc, q->describe_only);
    sql = utf8(q->sql);
    if (!ctx || !sql) goto py_error;

    res = PyObject_CallFunctionObjArgs(p->handler, sql, params, ctx, NULL);
    if (!res) goto py_error;
    plug_encode_result(q, res, p->name);
    goto out;
py_error:
    plug_py_error(p->name, plug_query_canceled(q), &q->err);
out:
    /* dropping the result may run a generator's finally block, which a
     * late QueryCanceled must not interrupt */
    stop_interrupts(w);
    Py_XDECREF(res);
    Py_XDECREF(sql);
    Py_XDECREF(ctx);
    Py_XDECREF(params);
    PyErr_Clear();
}

/* GIL held.  A password check: the hook's truth value decides, and a
 * riffq.Error it raises is the client's error as it is. */
static void run_auth(PlugWorker *w, PlugQuery *q)
{
    PlugEngine *e = w->e;
    PlugPlugin *p = q->plugin;
    if (!p->authenticate) {
        rq_error_set(&q->err, "28000", "plugin \"%s\" defines no authenticate hook", p->name);
        rq_error_hint(&q->err, "Decorate a function with @riffq.authenticate in %s.", p->path);
        return;
    }
    PlugCtx qc = query_ctx(q);
    PyObject *ctx = make_ctx(e, &qc, 0);
    PyObject *user = ctx ? utf8(q->user ? q->user : "") : NULL;
    PyObject *pw = user ? utf8(q->sql) : NULL;
    PyObject *res = pw ? PyObject_CallFunctionObjArgs(p->authenticate, user, pw, ctx, NULL) : NULL;
    int ok = res ? PyObject_IsTrue(res) : -1;
    if (ok < 0) {
        plug_py_error(p->name, plug_query_canceled(q), &q->err);
        log_warn("plugin \"%s\": authenticate failed: %s", p->name, q->err.message);
        if (strcmp(q->err.sqlstate, "XX000") == 0) {
            /* a broken hook must not tell the client more than a refusal */
            rq_error_free(&q->err);
            ok = 0;
        }
    }
    if (ok == 0)
        rq_error_set(&q->err, "28P01", "password authentication failed for user \"%s\"",
                     q->user ? q->user : "");
    Py_XDECREF(res);
    Py_XDECREF(pw);
    Py_XDECREF(user);
    Py_XDECREF(ctx);
}

/* GIL held.  Ends the job: frees it if the loop already let go of it. */
static void finish_job(PlugWorker *w, PlugQuery *q)
{
    PlugEngine *e = w->e;
    if (q->plugin) {
        plugin_unref(e, q->plugin);
        q->plugin = NULL;
    }
    pthread_mutex_lock(&e->mu);
    if (rq_error_is_set(&q->err)) {
        q->failed = 1;
        if (strcmp(q->err.sqlstate, "57014") == 0) {
            /* a canceled statement shows no more rows */
            buf_reset(&q->out);
            q->out_pos = 0;
            q->out_rows = 0;
        }
    }
    q->finished = 1;
    int abandoned = q->abandoned;
    notify_locked(q);
    pthread_mutex_unlock(&e->mu);
    if (abandoned) query_destroy(q);
}

/* GIL held. */
static void run_job(PlugWorker *w, PlugQuery *q)
{
    PlugEngine *e = w->e;
    pthread_mutex_lock(&e->mu);
    w->in_python = q->id;
    int abandoned = q->abandoned;
    pthread_mutex_unlock(&e->mu);
    current_query = q;

    switch (q->kind) {
    case JOB_QUERY:
        if (!abandoned) run_query(w, q);
        break;
    case JOB_AUTH:
        if (!abandoned) run_auth(w, q);
        break;
    case JOB_HOOK_CONNECT:
    case JOB_HOOK_DISCONNECT: {
        PlugCtx qc = query_ctx(q);
        PyObject *ctx = make_ctx(e, &qc, 0);
        if (!ctx) {
            plug_py_error("riffq", 0, &q->err);
        } else {
            run_hooks(e, q->kind == JOB_HOOK_CONNECT ? PLUG_HOOK_CONNECT : PLUG_HOOK_DISCONNECT,
                      ctx, &q->err);
            Py_DECREF(ctx);
        }
        if (q->kind == JOB_HOOK_DISCONNECT) drop_session(e, q->session_id);
        break;
    }
    case JOB_SESSION_END:
        drop_session(e, q->session_id);
        break;
    }

    current_query = NULL;
    stop_interrupts(w);
    PyErr_Clear();
    finish_job(w, q);
}

static void *worker_main(void *arg)
{
    PlugWorker *w = arg;
    PlugEngine *e = w->e;
    PyGILState_STATE g = PyGILState_Ensure();
    w->ident = PyThread_get_thread_ident();
    PyThreadState *ts = PyEval_SaveThread();
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->queue_head && !e->stopping) pthread_cond_wait(&e->work_cond, &e->mu);
        PlugQuery *q = e->queue_head;
        if (!q) {
            pthread_mutex_unlock(&e->mu);
            break;
        }
        e->queue_head = q->next_job;
        if (!e->queue_head) e->queue_tail = NULL;
        q->started = 1;
        pthread_mutex_unlock(&e->mu);
        PyEval_RestoreThread(ts);
        run_job(w, q);
        ts = PyEval_SaveThread();
    }
    PyEval_RestoreThread(ts);
    PyGILState_Release(g);
    return NULL;
}

static void *canceller_main(void *arg)
{
    PlugEngine *e = arg;
    uint64_t *ids = NULL;
    size_t cap = 0;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        while (!e->n_cancel && !e->stopping) pthread_cond_wait(&e->cancel_cond, &e->mu);
        if (!e->n_cancel) break;
        size_t n = e->n_cancel;
        if (n > cap) {
            cap = n;
            ids = xrealloc(ids, cap * sizeof *ids);
        }
        memcpy(ids, e->cancel_ids, n * sizeof *ids);
        e->n_cancel = 0;
        pthread_mutex_unlock(&e->mu);

        PyGILState_STATE g = PyGILState_Ensure();
        pthread_mutex_lock(&e->mu);
        for (size_t i = 0; i < n; i++)
            for (int k = 0; k < e->n_workers; k++)
                if (e->workers[k].in_python == ids[i])
                    PyThreadState_SetAsyncExc(e->workers[k].ident, plug_py.QueryCanceled);
        pthread_mutex_unlock(&e->mu);
        PyGILState_Release(g);
        pthread_mutex_lock(&e->mu);
    }
    pthread_mutex_unlock(&e->mu);
    free(ids);
    return NULL;
}

/* mu held. */
static void request_interrupt(PlugQuery *q)
{
    PlugEngine *e = q->e;
    if (!q->started || q->finished) return;
    if (e->n_cancel == e->cap_cancel) {
        e->cap_cancel = e->cap_cancel ? e->cap_cancel * 2 : 8;
        e->cancel_ids = xrealloc(e->cancel_ids, e->cap_cancel * sizeof *e->cancel_ids);
    }
    e->cancel_ids[e->n_cancel++] = q->id;
    pthread_cond_signal(&e->cancel_cond);
}

static void enqueue(PlugQuery *q)
{
    PlugEngine *e = q->e;
    pthread_mutex_lock(&e->mu);
    q->next_job = NULL;
    if (e->queue_tail) e->queue_tail->next_job = q;
    else e->queue_head = q;
    e->queue_tail = q;
    pthread_cond_signal(&e->work_cond);
    pthread_mutex_unlock(&e->mu);
}

/* A query that fails before reaching a worker: its callback still comes
 * from the loop, later, like every other. */
static void fail_now(PlugQuery *q)
{
    pthread_mutex_lock(&q->e->mu);
    q->failed = 1;
    q->finished = 1;
    notify_locked(q);
    pthread_mutex_unlock(&q->e->mu);
}

/* ---- engine ---- */

static void on_async_closed(uv_handle_t *h)
{
    free(h);
}

PlugEngine *plug_engine_new(uv_loop_t *loop, const Config *cfg, int n_workers, char **errmsg)
{
    *errmsg = NULL;
    if (plug_py_start(errmsg) < 0) return NULL;
    PlugEngine *e = xcalloc(1, sizeof *e);
    e->loop = loop;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->work_cond, NULL);
    pthread_cond_init(&e->cancel_cond, NULL);
    e->async = xcalloc(1, sizeof *e->async);
    int rc = uv_async_init(loop, e->async, on_async);
    if (rc < 0) {
        *errmsg = xasprintf("plugins: uv_async_init: %s", uv_strerror(rc));
        free(e->async);
        pthread_mutex_destroy(&e->mu);
        pthread_cond_destroy(&e->work_cond);
        pthread_cond_destroy(&e->cancel_cond);
        free(e);
        return NULL;
    }
    e->async->data = e;
    /* the engine alone must not keep the loop running: sessions and
     * listeners do, and they are the ones waiting for results */
    uv_unref((uv_handle_t *)e->async);

    PyGILState_STATE g = PyGILState_Ensure();
    e->sessions = PyDict_New();
    e->plugins = plugins_load(cfg, &e->n_plugins);
    PyGILState_Release(g);

    e->target_workers = n_workers > 0 ? n_workers : 1;
    e->max_workers = e->target_workers + PLUG_MAX_WAITING_WORKERS;
    e->workers = xcalloc((size_t)e->max_workers, sizeof *e->workers);
    pthread_mutex_lock(&e->mu);
    for (int i = 0; i < e->target_workers; i++) {
        e->workers[i].e = e;
        rc = pthread_create(&e->workers[i].thread, NULL, worker_main, &e->workers[i]);
        if (rc != 0) {
            log_error("plugins: cannot start worker %d: %s", i, strerror(rc));
            break;
        }
        e->n_workers = i + 1;
    }
    pthread_mutex_unlock(&e->mu);
    rc = pthread_create(&e->canceller, NULL, canceller_main, e);
    e->has_canceller = rc == 0;
    if (rc != 0 || e->n_workers == 0) {
        *errmsg = xasprintf("plugins: cannot start threads: %s", strerror(rc ? rc : EAGAIN));
        plug_engine_free(e);    /* joins whatever did start */
        return NULL;
    }
    return e;
}

int plug_engine_reload(PlugEngine *e, const Config *cfg, char **errmsg)
{
    *errmsg = NULL;
    PyGILState_STATE g = PyGILState_Ensure();
    size_t n, old_n;
    PlugPlugin **ps = plugins_load(cfg, &n);
    pthread_mutex_lock(&e->mu);
    PlugPlugin **old = e->plugins;
    old_n = e->n_plugins;
    e->plugins = ps;
    e->n_plugins = n;
    pthread_mutex_unlock(&e->mu);
    for (size_t i = 0; i < old_n; i++) plugin_unref(e, old[i]);
    free(old);
    PyGILState_Release(g);
    return 0;
}

void plug_engine_free(PlugEngine *e)
{
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    e->stopping = 1;
    if (e->live)
        log_warn("plugins: stopping with %zu queries not yet freed or finished", e->live);
    pthread_cond_broadcast(&e->work_cond);
    pthread_cond_broadcast(&e->cancel_cond);
    int n_workers = e->n_workers;      /* no more start once stopping is set */
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < n_workers; i++) pthread_join(e->workers[i].thread, NULL);
    if (e->has_canceller) pthread_join(e->canceller, NULL);

    PyGILState_STATE g = PyGILState_Ensure();
    for (size_t i = 0; i < e->n_plugins; i++) plugin_unref(e, e->plugins[i]);
    Py_XDECREF(e->sessions);
    PyGILState_Release(g);

    uv_close((uv_handle_t *)e->async, on_async_closed);
    free(e->plugins);
    free(e->workers);
    free(e->cancel_ids);
    pthread_cond_destroy(&e->work_cond);
    pthread_cond_destroy(&e->cancel_cond);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

int plug_engine_plugin_status(PlugEngine *e, const char *plugin, const char **error)
{
    PlugPlugin *p = plugin_find(e, plugin);
    if (error) *error = p ? p->load_error : NULL;
    return !p ? -1 : p->load_error ? 1 : 0;
}

size_t plug_engine_tables(PlugEngine *e, const char *plugin, const PlugTable **out)
{
    PlugPlugin *p = plugin_find(e, plugin);
    *out = p ? p->tables : NULL;
    return p ? p->n_tables : 0;
}

const PlugTable *plug_engine_table(PlugEngine *e, const char *plugin,
                                   const char *schema, const char *name)
{
    const PlugTable *t;
    size_t n = plug_engine_tables(e, plugin, &t);
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].schema, schema) == 0 && strcmp(t[i].name, name) == 0) return &t[i];
    return NULL;
}

/* ---- hooks and sessions ---- */

PlugQuery *plug_hook_start(PlugEngine *e, PlugHook hook, const PlugCtx *ctx,
                           PlugReadyCb cb, void *ud)
{
    PlugQuery *q = query_new(e, hook == PLUG_HOOK_CONNECT ? JOB_HOOK_CONNECT : JOB_HOOK_DISCONNECT,
                             ctx, cb, ud);
    enqueue(q);
    return q;
}

int plug_engine_has_hooks(PlugEngine *e, PlugHook hook)
{
    /* the list is only replaced on this (the loop) thread, and a NULL check
     * of a function pointer needs no GIL */
    for (size_t i = 0; i < e->n_plugins; i++) {
        const PlugPlugin *p = e->plugins[i];
        if (hook == PLUG_HOOK_CONNECT ? p->on_connect != NULL : p->on_disconnect != NULL) return 1;
    }
    return 0;
}

int plug_engine_on_connect(PlugEngine *e, const PlugCtx *ctx, RqError *err)
{
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *c = make_ctx(e, ctx, 0);
    int r;
    if (!c) {
        plug_py_error("riffq", 0, err);
        r = -1;
    } else {
        r = run_hooks(e, PLUG_HOOK_CONNECT, c, err);
        Py_DECREF(c);
    }
    PyGILState_Release(g);
    return r;
}

void plug_engine_on_disconnect(PlugEngine *e, const PlugCtx *ctx)
{
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *c = make_ctx(e, ctx, 0);
    if (c) {
        run_hooks(e, PLUG_HOOK_DISCONNECT, c, NULL);
        Py_DECREF(c);
    }
    PyErr_Clear();
    drop_session(e, ctx->session_id);
    PyGILState_Release(g);
}

void plug_engine_session_end(PlugEngine *e, int32_t session_id)
{
    PlugCtx ctx = { .session_id = session_id };
    PlugQuery *q = query_new(e, JOB_SESSION_END, &ctx, NULL, NULL);
    q->abandoned = 1;       /* nobody waits for it: the worker frees it */
    enqueue(q);
}

PlugQuery *plug_auth_start(PlugEngine *e, const char *plugin, const char *password,
                           const PlugCtx *ctx, PlugReadyCb cb, void *ud)
{
    PlugQuery *q = query_new(e, JOB_AUTH, ctx, cb, ud);
    q->plugin_name = xstrdup(plugin);
    q->sql = xstrdup(password ? password : "");
    pthread_mutex_lock(&e->mu);
    PlugPlugin *p = plugin_find(e, plugin);
    if (p && !p->load_error) p->refs++;
    pthread_mutex_unlock(&e->mu);
    if (!p || p->load_error) {
        /* logged at load; the client learns only that it is not let in */
        rq_error_set(&q->err, "28000", "authentication is unavailable: plugin \"%s\" is not loaded",
                     plugin);
        fail_now(q);
        return q;
    }
    q->plugin = p;
    enqueue(q);
    return q;
}

/* ---- queries: the loop's side ---- */

PlugQuery *plug_query_start(PlugEngine *e, const char *plugin, const char *sql,
                            const char *const *params, const uint32_t *param_types,
                            uint16_t n_params, const uint8_t *formats, uint16_t n_formats,
                            const PlugCtx *ctx, int describe_only,
                            PlugReadyCb cb, void *ud)
{
    PlugQuery *q = query_new(e, JOB_QUERY, ctx, cb, ud);
    q->plugin_name = xstrdup(plugin);
    q->sql = xstrdup(sql ? sql : "");
    q->n_params = n_params;
    q->params = xcalloc((size_t)n_params + 1, sizeof *q->params);
    q->param_types = xcalloc((size_t)n_params + 1, sizeof *q->param_types);
    for (uint16_t i = 0; i < n_params; i++) {
        q->params[i] = params && params[i] ? xstrdup(params[i]) : NULL;
        q->param_types[i] = param_types ? param_types[i] : 0;
    }
    if (n_formats) {
        q->formats = xmalloc(2 * (size_t)n_formats);
        memcpy(q->formats, formats, 2 * (size_t)n_formats);
        q->n_formats = n_formats;
    }
    q->describe_only = describe_only;

    pthread_mutex_lock(&e->mu);
    PlugPlugin *p = plugin_find(e, plugin);
    if (p && !p->load_error) p->refs++;
    else if (p) rq_error_set(&q->err, "58000", "plugin \"%s\" failed to load: %s", plugin, p->load_error);
    else rq_error_set(&q->err, "58000", "no plugin named \"%s\" is configured", plugin);
    pthread_mutex_unlock(&e->mu);
    if (rq_error_is_set(&q->err)) {
        fail_now(q);
        return q;
    }
    q->plugin = p;
    enqueue(q);
    return q;
}

PlugState plug_query_state(PlugQuery *q)
{
    pthread_mutex_lock(&q->e->mu);
    PlugState s = q->out_rows > 0 ? PLUG_COLUMNS
                : q->finished ? (q->failed ? PLUG_FAILED : PLUG_DONE)
                : q->has_cols ? PLUG_COLUMNS : PLUG_RUNNING;
    pthread_mutex_unlock(&q->e->mu);
    return s;
}

const RqResult *plug_query_columns(PlugQuery *q)
{
    pthread_mutex_lock(&q->e->mu);
    int has = q->has_cols;
    pthread_mutex_unlock(&q->e->mu);
    return has ? &q->cols : NULL;
}

size_t plug_query_fetch(PlugQuery *q, size_t max_rows, Buf *out)
{
    pthread_mutex_lock(&q->e->mu);
    size_t n = q->out_rows;
    if (max_rows && max_rows < n) n = max_rows;
    if (n == q->out_rows) {
        buf_append(out, q->out.data + q->out_pos, q->out.len - q->out_pos);
        q->out_pos = q->out.len;
    } else {
        /* whole DataRow messages: type byte + int32 length (counting itself) */
        size_t pos = q->out_pos;
        for (size_t i = 0; i < n; i++) {
            const uint8_t *h = (const uint8_t *)q->out.data + pos + 1;
            pos += 1 + ((size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3]);
        }
        buf_append(out, q->out.data + q->out_pos, pos - q->out_pos);
        q->out_pos = pos;
    }
    q->out_rows -= n;
    if (q->out_rows == 0) {
        buf_reset(&q->out);
        q->out_pos = 0;
        pthread_cond_signal(&q->cond);
    }
    pthread_mutex_unlock(&q->e->mu);
    return n;
}

int plug_query_finished(PlugQuery *q)
{
    pthread_mutex_lock(&q->e->mu);
    int r = q->finished && !q->failed && q->out_rows == 0;
    pthread_mutex_unlock(&q->e->mu);
    return r;
}

const char *plug_query_tag(PlugQuery *q)
{
    pthread_mutex_lock(&q->e->mu);
    const char *t = q->finished && !q->failed ? q->tag : NULL;
    pthread_mutex_unlock(&q->e->mu);
    return t;
}

const RqError *plug_query_error(PlugQuery *q)
{
    pthread_mutex_lock(&q->e->mu);
    const RqError *err = q->finished && q->failed ? &q->err : NULL;
    pthread_mutex_unlock(&q->e->mu);
    return err;
}

void plug_query_cancel(PlugQuery *q)
{
    pthread_mutex_lock(&q->e->mu);
    if (!q->finished && !q->canceled) {
        q->canceled = 1;
        pthread_cond_broadcast(&q->cond);
        request_interrupt(q);
    }
    pthread_mutex_unlock(&q->e->mu);
}

void plug_query_free(PlugQuery *q)
{
    if (!q) return;
    PlugEngine *e = q->e;
    pthread_mutex_lock(&e->mu);
    unlink_pending(q);
    q->cb = NULL;
    if (q->finished) {
        pthread_mutex_unlock(&e->mu);
        query_destroy(q);
        return;
    }
    q->abandoned = 1;
    if (q->kind == JOB_QUERY) {
        /* nobody will read the rows: stop producing them.  Hooks run to
         * the end (a disconnect hook is often started and forgotten). */
        q->canceled = 1;
        pthread_cond_broadcast(&q->cond);
        request_interrupt(q);
    }
    pthread_mutex_unlock(&e->mu);
}
