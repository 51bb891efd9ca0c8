/*
 * Upstream pools: who gets which server connection, and when connections
 * are opened and closed.  (conn.c holds the I/O of one connection.)
 *
 * A pool has one key per (user, database) the conninfo leaves open - a
 * single key when it fixes both - and each key has the four lists of
 * connection states (connecting, idle, active, resetting) plus a FIFO of
 * waiters.  Counting is therefore by list length, and an admin view or the
 * stats are just walks.
 *
 *   acquire   idle connection (most recently used first: its backend has
 *             warm caches) handed out at once, synchronously; otherwise
 *             the acquirer queues and a connection is opened if the key is
 *             below pool_size.  Connections go to waiters in FIFO order,
 *             whoever's acquire caused them to be opened.
 *   release   unusable ones (reusable = 0, broken, past lifetime, output
 *             still queued) are closed; the others run reset_query first
 *             and are handed on only after ReadyForQuery 'I' without error.
 *             Callers must release at ReadyForQuery 'I' - the session relays
 *             bytes, so only it knows the transaction status - and a
 *             connection released inside a transaction is caught by the
 *             reset query failing (DISCARD ALL refuses to run there), not
 *             without one.
 *   failure   a failed connect fails the longest waiter with libpq's error
 *             and opens again for the rest, so each acquirer gets an error
 *             from an attempt made while it waited; min_pool_size top-ups
 *             back off for RETRY_MS after a failure.
 *   idle      idle connections keep a read watch: a server that closes them
 *             (restart, idle_session_timeout, pg_terminate_backend) is
 *             noticed and the connection discarded before anyone gets it.
 *   janitor   one unref'd repeating timer per pool closes idle connections
 *             beyond min_pool_size after idle_timeout, any idle one past
 *             lifetime, tops keys up to min_pool_size, and drops empty keys.
 *
 * Callbacks (acquire results) may re-enter anything, including
 * up_pool_free; depth counts pool functions on the stack and the pool is
 * freed only when it is zero, freeing was asked for and no connection is
 * left.  Keys are freed only by the janitor and at pool free, never while a
 * pool function runs.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "riffq/log.h"
#include "upstream/up_int.h"

#define RETRY_MS            5000        /* min_pool_size top-up backoff after a failure */
#define RESET_TIMEOUT_MS    10000
#define DEFAULT_POOL_SIZE   20
#define DEFAULT_CONNECT_MS  10000

struct UpWait {
    UpKey *key;
    UpWait *prev, *next;
    UpAcquireCb cb;
    void *ud;
    uv_timer_t *timer;          /* NULL without wait_timeout_ms; frees itself on close */
};

struct UpKey {
    UpPool *pool;
    UpKey *next;
    char *user;                 /* NULL when fixed by the conninfo (or not given) */
    char *database;
    UpList connecting, idle, active, resetting;
    UpWait *wait_head, *wait_tail;
    int n_wait;
    uint64_t retry_after_ms;
};

struct UpPool {
    uv_loop_t *loop;
    char *name;
    char *conninfo;             /* may hold a password: never logged */
    char *reset_query;
    UpPoolOpts opts;
    int fixed_user, fixed_db;
    int connect_timeout_ms;
    UpKey *keys;
    uv_timer_t *janitor;        /* frees itself on close */
    int n_conns;                /* every UpConn not yet freed, on a list or not */
    int depth;
    int freeing;
    uint64_t total_acquired, total_opened, total_failed;
};

static void pool_free_now(UpPool *p);

uv_loop_t *upool_loop(const UpPool *p) { return p->loop; }
const char *upool_name(const UpPool *p) { return p->name; }

static void free_handle(uv_handle_t *h)
{
    free(h);
}

/* ---- lists ---- */

static UpList *list_of(UpConn *c)
{
    UpKey *k = c->key;
    switch (c->state) {
    case UPC_CONNECTING: return &k->connecting;
    case UPC_IDLE: return &k->idle;
    case UPC_ACTIVE: return &k->active;
    case UPC_RESETTING: return &k->resetting;
    default: return NULL;
    }
}

static void list_push_front(UpList *l, UpConn *c)
{
    c->prev = NULL;
    c->next = l->head;
    if (l->head) l->head->prev = c;
    else l->tail = c;
    l->head = c;
    l->n++;
}

static void list_remove(UpList *l, UpConn *c)
{
    if (c->prev) c->prev->next = c->next;
    else l->head = c->next;
    if (c->next) c->next->prev = c->prev;
    else l->tail = c->prev;
    c->prev = c->next = NULL;
    l->n--;
}

static void move_to(UpConn *c, UpConnState st)
{
    UpList *from = list_of(c);
    if (from) list_remove(from, c);
    c->state = st;
    UpList *to = list_of(c);
    if (to) list_push_front(to, c);
}

static int key_total(const UpKey *k)
{
    return k->connecting.n + k->idle.n + k->active.n + k->resetting.n;
}

static void pool_enter(UpPool *p)
{
    p->depth++;
}

static void pool_leave(UpPool *p)
{
    if (--p->depth == 0 && p->freeing && p->n_conns == 0) pool_free_now(p);
}

static void close_conn(UpConn *c)
{
    move_to(c, UPC_CLOSED);
    upc_destroy(c);
}

/* ---- waiters ---- */

static void wait_unlink(UpWait *w)
{
    UpKey *k = w->key;
    if (w->prev) w->prev->next = w->next;
    else k->wait_head = w->next;
    if (w->next) w->next->prev = w->prev;
    else k->wait_tail = w->prev;
    k->n_wait--;
    if (w->timer) {
        w->timer->data = NULL;
        uv_close((uv_handle_t *)w->timer, free_handle);
        w->timer = NULL;
    }
}

static void wait_fail(UpWait *w, RqError *err)
{
    UpAcquireCb cb = w->cb;
    void *ud = w->ud;
    wait_unlink(w);
    free(w);
    cb(ud, NULL, err);
}

static void give(UpConn *c, UpWait *w)
{
    UpAcquireCb cb = w->cb;
    void *ud = w->ud;
    wait_unlink(w);
    free(w);
    move_to(c, UPC_ACTIVE);
    upc_make_active(c);
    c->pool->total_acquired++;
    cb(ud, c, NULL);
}

static void on_wait_timeout(uv_timer_t *t)
{
    UpWait *w = t->data;
    if (!w) return;
    UpKey *k = w->key;
    UpPool *p = k->pool;
    RqError err = {0};
    rq_error_set(&err, "53300", "timed out waiting for a server connection from pool \"%s\"", p->name);
    rq_error_detail(&err, "Waited %d ms; %d of %d server connections were in use and %d were being opened.",
                    p->opts.wait_timeout_ms, k->active.n + k->resetting.n, p->opts.pool_size,
                    k->connecting.n);
    rq_error_hint(&err, "Raise pool_size or the wait timeout of this upstream, or keep transactions shorter.");
    pool_enter(p);
    wait_fail(w, &err);
    pool_leave(p);
    rq_error_free(&err);
}

/* ---- opening ---- */

static void open_conn(UpKey *k)
{
    UpPool *p = k->pool;
    const char *kw[6], *vals[6];
    int n = 0;
    /* expand_dbname: the first "dbname" is the whole conninfo; keywords after
     * it override, and are given only for what the conninfo leaves open */
    kw[n] = "dbname"; vals[n++] = p->conninfo;
    if (!p->fixed_user && k->user) { kw[n] = "user"; vals[n++] = k->user; }
    if (!p->fixed_db && k->database) { kw[n] = "dbname"; vals[n++] = k->database; }
    kw[n] = "fallback_application_name"; vals[n++] = "riffq";
    kw[n] = NULL; vals[n] = NULL;
    UpConn *c = upc_open(p, k, p->loop, kw, vals, p->connect_timeout_ms);
    p->n_conns++;
    c->state = UPC_CONNECTING;
    list_push_front(&k->connecting, c);
}

/* Open connections for waiters that nothing in flight will serve. */
static void dispatch(UpKey *k)
{
    UpPool *p = k->pool;
    if (p->freeing) return;
    while (k->n_wait > k->connecting.n + k->resetting.n && key_total(k) < p->opts.pool_size)
        open_conn(k);
}

static void hand_on(UpConn *c)
{
    UpKey *k = c->key;
    if (k->wait_head) {
        give(c, k->wait_head);
    } else {
        move_to(c, UPC_IDLE);
        upc_make_idle(c);
    }
}

/* ---- events from conn.c ---- */

void upool_connected(UpConn *c)
{
    UpPool *p = c->pool;
    pool_enter(p);
    p->total_opened++;
    if (p->freeing) close_conn(c);
    else hand_on(c);
    pool_leave(p);
}

void upool_connect_failed(UpConn *c, RqError *err)
{
    UpPool *p = c->pool;
    UpKey *k = c->key;
    pool_enter(p);
    p->total_failed++;
    k->retry_after_ms = uv_now(p->loop) + RETRY_MS;
    log_warn("upstream \"%s\": could not connect: %s", p->name, err->message);
    close_conn(c);
    if (k->wait_head && !p->freeing) wait_fail(k->wait_head, err);
    dispatch(k);
    pool_leave(p);
}

void upool_conn_lost(UpConn *c)
{
    UpPool *p = c->pool;
    UpKey *k = c->key;
    pool_enter(p);
    log_info("upstream \"%s\": discarding idle server connection (pid %d): %s",
             p->name, c->backend_pid, c->err.message ? c->err.message : "broken");
    close_conn(c);
    dispatch(k);
    pool_leave(p);
}

void upool_reset_done(UpConn *c, int ok)
{
    UpPool *p = c->pool;
    UpKey *k = c->key;
    pool_enter(p);
    if (!ok || c->dead || p->freeing) {
        close_conn(c);
        dispatch(k);
    } else {
        hand_on(c);
    }
    pool_leave(p);
}

void upool_conn_freed(UpPool *p)
{
    p->n_conns--;
    if (p->depth == 0 && p->freeing && p->n_conns == 0) pool_free_now(p);
}

/* ---- keys ---- */

static int same(const char *a, const char *b)
{
    if (!a || !b) return a == b;
    return strcmp(a, b) == 0;
}

static UpKey *key_get(UpPool *p, const char *user, const char *database)
{
    const char *u = p->fixed_user ? NULL : user;
    const char *d = p->fixed_db ? NULL : database;
    for (UpKey *k = p->keys; k; k = k->next)
        if (same(k->user, u) && same(k->database, d)) return k;
    UpKey *k = xcalloc(1, sizeof *k);
    k->pool = p;
    k->user = u ? xstrdup(u) : NULL;
    k->database = d ? xstrdup(d) : NULL;
    k->next = p->keys;
    p->keys = k;
    return k;
}

static void key_free(UpKey *k)
{
    free(k->user);
    free(k->database);
    free(k);
}

static void top_up(UpKey *k)
{
    UpPool *p = k->pool;
    if (p->freeing || uv_now(p->loop) < k->retry_after_ms) return;
    int target = p->opts.min_pool_size < p->opts.pool_size ? p->opts.min_pool_size : p->opts.pool_size;
    while (key_total(k) < target) open_conn(k);
}

/* ---- janitor ---- */

static void janitor_key(UpKey *k, uint64_t now)
{
    UpPool *p = k->pool;
    const UpPoolOpts *o = &p->opts;
    /* oldest idle at the tail */
    UpConn *c = k->idle.tail;
    while (c) {
        UpConn *prev = c->prev;
        int too_old = o->lifetime_ms > 0 && now - c->created_ms >= (uint64_t)o->lifetime_ms;
        int too_idle = o->idle_timeout_ms > 0 && key_total(k) > o->min_pool_size &&
                       now - c->idle_since_ms >= (uint64_t)o->idle_timeout_ms;
        if (too_old || too_idle) {
            log_debug("upstream \"%s\": closing %s server connection (pid %d)",
                      p->name, too_old ? "expired" : "idle", c->backend_pid);
            close_conn(c);
        }
        c = prev;
    }
    top_up(k);
}

static void on_janitor(uv_timer_t *t)
{
    UpPool *p = t->data;
    if (!p) return;
    uint64_t now = uv_now(p->loop);
    pool_enter(p);
    for (UpKey *k = p->keys; k; k = k->next) janitor_key(k, now);
    /* keys the conninfo leaves open accumulate per client user/database;
     * forget the empty ones */
    for (UpKey **pk = &p->keys; *pk;) {
        UpKey *k = *pk;
        if ((p->fixed_user && p->fixed_db) || key_total(k) || k->n_wait || p->opts.min_pool_size > 0) {
            pk = &k->next;
        } else {
            *pk = k->next;
            key_free(k);
        }
    }
    pool_leave(p);
}

/* ---- public API ---- */

int up_conninfo_check(const char *conninfo, RqError *err)
{
    char *errmsg = NULL;
    PQconninfoOption *o = PQconninfoParse(conninfo, &errmsg);
    if (!o) {
        if (errmsg) {
            size_t n = strlen(errmsg);
            while (n && (errmsg[n - 1] == '\n' || errmsg[n - 1] == ' ')) n--;
            rq_error_set(err, "22023", "invalid upstream conninfo: %.*s", (int)n, errmsg);
            PQfreemem(errmsg);
        } else {
            rq_error_set(err, "22023", "invalid upstream conninfo");
        }
        return -1;
    }
    PQconninfoFree(o);
    return 0;
}

UpPool *up_pool_new(uv_loop_t *loop, const char *name, const char *conninfo, const UpPoolOpts *opts)
{
    PQconninfoOption *info = PQconninfoParse(conninfo, NULL);
    if (!info) {
        /* libpq's message may quote the conninfo, password included */
        log_error("upstream \"%s\": invalid conninfo", name);
        return NULL;
    }
    UpPool *p = xcalloc(1, sizeof *p);
    p->loop = loop;
    p->name = xstrdup(name);
    p->conninfo = xstrdup(conninfo);
    p->opts = *opts;
    p->reset_query = opts->reset_query && *opts->reset_query ? xstrdup(opts->reset_query) : NULL;
    p->opts.reset_query = p->reset_query;
    if (p->opts.pool_size <= 0) p->opts.pool_size = DEFAULT_POOL_SIZE;
    if (p->opts.min_pool_size < 0) p->opts.min_pool_size = 0;
    int conninfo_timeout_s = 0;
    for (PQconninfoOption *o = info; o->keyword; o++) {
        if (!o->val || !*o->val) continue;
        if (strcmp(o->keyword, "user") == 0) p->fixed_user = 1;
        else if (strcmp(o->keyword, "dbname") == 0) p->fixed_db = 1;
        else if (strcmp(o->keyword, "connect_timeout") == 0) conninfo_timeout_s = atoi(o->val);
    }
    PQconninfoFree(info);
    p->connect_timeout_ms = opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms
                          : conninfo_timeout_s > 0 ? conninfo_timeout_s * 1000
                          : DEFAULT_CONNECT_MS;

    int every = 1000;
    if (p->opts.idle_timeout_ms > 0 && p->opts.idle_timeout_ms / 2 < every) every = p->opts.idle_timeout_ms / 2;
    if (p->opts.lifetime_ms > 0 && p->opts.lifetime_ms / 2 < every) every = p->opts.lifetime_ms / 2;
    if (every < 10) every = 10;
    p->janitor = xmalloc(sizeof *p->janitor);
    uv_timer_init(loop, p->janitor);
    p->janitor->data = p;
    uv_timer_start(p->janitor, on_janitor, (uint64_t)every, (uint64_t)every);
    uv_unref((uv_handle_t *)p->janitor);

    if (p->fixed_user && p->fixed_db && p->opts.min_pool_size > 0)
        top_up(key_get(p, NULL, NULL));
    return p;
}

void up_pool_free(UpPool *p)
{
    if (!p || p->freeing) return;
    p->freeing = 1;
    pool_enter(p);
    p->janitor->data = NULL;
    uv_close((uv_handle_t *)p->janitor, free_handle);
    p->janitor = NULL;
    RqError err = {0};
    rq_error_set(&err, "57P01", "upstream pool \"%s\" is shutting down", p->name);
    for (UpKey *k = p->keys; k; k = k->next) {
        UpList *lists[] = { &k->idle, &k->connecting, &k->resetting };
        for (size_t i = 0; i < 3; i++)
            while (lists[i]->head) close_conn(lists[i]->head);
        while (k->wait_head) wait_fail(k->wait_head, &err);
    }
    rq_error_free(&err);
    pool_leave(p);
}

static void pool_free_now(UpPool *p)
{
    while (p->keys) {
        UpKey *k = p->keys;
        p->keys = k->next;
        key_free(k);
    }
    free(p->name);
    free(p->conninfo);
    free(p->reset_query);
    free(p);
}

UpWait *up_pool_acquire(UpPool *p, const char *user, const char *database,
                        UpAcquireCb cb, void *ud)
{
    if (p->freeing) {
        RqError err = {0};
        rq_error_set(&err, "57P01", "upstream pool \"%s\" is shutting down", p->name);
        cb(ud, NULL, &err);
        rq_error_free(&err);
        return NULL;
    }
    UpKey *k = key_get(p, user, database);
    pool_enter(p);
    while (k->idle.head) {
        UpConn *c = k->idle.head;
        if (c->dead) {          /* broke while idle; its report is still queued */
            close_conn(c);
            continue;
        }
        move_to(c, UPC_ACTIVE);
        upc_make_active(c);
        p->total_acquired++;
        cb(ud, c, NULL);
        pool_leave(p);
        return NULL;
    }
    UpWait *w = xcalloc(1, sizeof *w);
    w->key = k;
    w->cb = cb;
    w->ud = ud;
    w->prev = k->wait_tail;
    if (k->wait_tail) k->wait_tail->next = w;
    else k->wait_head = w;
    k->wait_tail = w;
    k->n_wait++;
    if (p->opts.wait_timeout_ms > 0) {
        w->timer = xmalloc(sizeof *w->timer);
        uv_timer_init(p->loop, w->timer);
        w->timer->data = w;
        uv_timer_start(w->timer, on_wait_timeout, (uint64_t)p->opts.wait_timeout_ms, 0);
    }
    dispatch(k);        /* opens asynchronously: w stays valid */
    pool_leave(p);
    return w;
}

void up_wait_cancel(UpWait *w)
{
    if (!w) return;
    wait_unlink(w);
    free(w);
}

void up_pool_release(UpPool *p, UpConn *c, int reusable)
{
    UpKey *k = c->key;
    pool_enter(p);
    up_conn_detach(c);
    uint64_t now = uv_now(p->loop);
    int expired = p->opts.lifetime_ms > 0 && now - c->created_ms >= (uint64_t)p->opts.lifetime_ms;
    if (!reusable || c->dead || p->freeing || expired || c->out.len > c->out_off) {
        close_conn(c);
        dispatch(k);
    } else if (p->reset_query) {
        move_to(c, UPC_RESETTING);
        upc_start_reset(c, p->reset_query, RESET_TIMEOUT_MS);
    } else {
        hand_on(c);
    }
    pool_leave(p);
}

void up_pool_stats(const UpPool *p, UpPoolStats *out)
{
    memset(out, 0, sizeof *out);
    for (const UpKey *k = p->keys; k; k = k->next) {
        out->active += k->active.n + k->resetting.n;
        out->idle += k->idle.n;
        out->connecting += k->connecting.n;
        out->waiting += k->n_wait;
    }
    out->total_acquired = p->total_acquired;
    out->total_opened = p->total_opened;
    out->total_failed = p->total_failed;
}
