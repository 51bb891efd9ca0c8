/*
 * Upstream pools: who gets which server connection, and when connections
 * are opened and closed.  (conn.c holds the I/O of one connection, health.c
 * the health checks.)
 *
 * A pool has one or more hosts - the primary and its replicas - and each
 * host has one key per (user, database) its conninfo leaves open - a single
 * key when it fixes both.  Each key has the four lists of connection states
 * (connecting, idle, active, resetting) plus a FIFO of waiters.  Counting is
 * therefore by list length, and an admin view or the stats are just walks.
 *
 *   host      up_pool_acquire uses the primary.  up_pool_acquire_read
 *             picks the next healthy replica after the last one it picked
 *             (round robin), or the primary when none is healthy; the
 *             choice is made once per acquire, so under transaction
 *             pooling every read transaction may land on another replica.
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
 *             back off for RETRY_MS after a failure.  Except on a replica
 *             whose server did not answer: the replica is marked down and
 *             its waiters move to another host, so a reader never sees the
 *             error of a replica it did not ask for.
 *   idle      idle connections keep a read watch: a server that closes them
 *             (restart, idle_session_timeout, pg_terminate_backend) is
 *             noticed and the connection discarded before anyone gets it.
 *   janitor   one unref'd repeating timer per pool closes idle connections
 *             beyond min_pool_size after idle_timeout, any idle one past
 *             lifetime, tops keys up to min_pool_size (not on replicas that
 *             are down), and drops empty keys.
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
    if (!k) return NULL;
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

void upool_enter(UpPool *p)
{
    p->depth++;
}

void upool_leave(UpPool *p)
{
    if (--p->depth == 0 && p->freeing && p->n_conns == 0) pool_free_now(p);
}

static void close_conn(UpConn *c)
{
    move_to(c, UPC_CLOSED);
    upc_destroy(c);
}

/* ---- waiters ---- */

static void on_wait_timeout(uv_timer_t *t);

/* Make the key's timer fire by deadline (loop time); an armed timer due
 * sooner stays as it is: when it fires it fails what has expired and
 * re-arms for the earliest deadline left. */
static void wait_arm(UpKey *k, uint64_t deadline)
{
    UpPool *p = k->host->pool;
    uint64_t now = uv_now(p->loop);
    if (!k->wait_timer) {
        k->wait_timer = xmalloc(sizeof *k->wait_timer);
        uv_timer_init(p->loop, k->wait_timer);
        k->wait_timer->data = k;
    } else if (uv_is_active((uv_handle_t *)k->wait_timer) &&
               now + uv_timer_get_due_in(k->wait_timer) <= deadline) {
        return;
    }
    uv_timer_start(k->wait_timer, on_wait_timeout, deadline > now ? deadline - now : 0, 0);
}

static void wait_link(UpKey *k, UpWait *w)
{
    w->key = k;
    w->next = NULL;
    w->prev = k->wait_tail;
    if (k->wait_tail) k->wait_tail->next = w;
    else k->wait_head = w;
    k->wait_tail = w;
    k->n_wait++;
    if (w->deadline_ms) wait_arm(k, w->deadline_ms);
}

static void wait_unlink(UpWait *w)
{
    UpKey *k = w->key;
    if (w->prev) w->prev->next = w->next;
    else k->wait_head = w->next;
    if (w->next) w->next->prev = w->prev;
    else k->wait_tail = w->prev;
    w->prev = w->next = NULL;
    k->n_wait--;
}

static void wait_free(UpWait *w)
{
    wait_unlink(w);
    free(w);
}

static void wait_fail(UpWait *w, RqError *err)
{
    UpAcquireCb cb = w->cb;
    void *ud = w->ud;
    wait_free(w);
    cb(ud, NULL, err);
}

static void give(UpConn *c, UpWait *w)
{
    UpAcquireCb cb = w->cb;
    void *ud = w->ud;
    wait_free(w);
    move_to(c, UPC_ACTIVE);
    upc_make_active(c);
    c->host->total_acquired++;
    cb(ud, c, NULL);
}

static void on_wait_timeout(uv_timer_t *t)
{
    UpKey *k = t->data;
    UpPool *p = k->host->pool;
    upool_enter(p);
    for (;;) {
        /* rescan after each failure: its callback may change the queue */
        uint64_t now = uv_now(p->loop);
        UpWait *w = k->wait_head;
        while (w && !(w->deadline_ms && w->deadline_ms <= now)) w = w->next;
        if (!w) break;
        RqError err = {0};
        rq_error_set(&err, "53300", "timed out waiting for a server connection from pool \"%s\"", p->name);
        rq_error_detail(&err, "Waited %d ms; %d of %d server connections were in use and %d were being opened.",
                        p->opts.wait_timeout_ms, k->active.n + k->resetting.n, p->opts.pool_size,
                        k->connecting.n);
        rq_error_hint(&err, "Raise pool_size or the wait timeout of this upstream, or keep transactions shorter.");
        wait_fail(w, &err);
        rq_error_free(&err);
    }
    uint64_t first = 0;
    for (UpWait *w = k->wait_head; w; w = w->next)
        if (w->deadline_ms && (!first || w->deadline_ms < first)) first = w->deadline_ms;
    if (first) wait_arm(k, first);
    upool_leave(p);
}

/* ---- opening ---- */

static void open_conn(UpKey *k)
{
    UpHost *h = k->host;
    UpPool *p = h->pool;
    const char *kw[6], *vals[6];
    int n = 0;
    /* expand_dbname: the first "dbname" is the whole conninfo; keywords after
     * it override, and are given only for what the conninfo leaves open */
    kw[n] = "dbname"; vals[n++] = h->conninfo;
    if (!h->fixed_user && k->user) { kw[n] = "user"; vals[n++] = k->user; }
    if (!h->fixed_db && k->database) { kw[n] = "dbname"; vals[n++] = k->database; }
    kw[n] = "fallback_application_name"; vals[n++] = "riffq";
    kw[n] = NULL; vals[n] = NULL;
    UpConn *c = upc_open(p, k, p->loop, kw, vals, h->connect_timeout_ms);
    c->host = h;
    p->n_conns++;
    c->state = UPC_CONNECTING;
    list_push_front(&k->connecting, c);
}

/* Open connections for waiters that nothing in flight will serve. */
static void dispatch(UpKey *k)
{
    UpPool *p = k->host->pool;
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

/* ---- hosts ---- */

static int same(const char *a, const char *b)
{
    if (!a || !b) return a == b;
    return strcmp(a, b) == 0;
}

static UpKey *key_get(UpHost *h, const char *user, const char *database)
{
    const char *u = h->fixed_user ? NULL : user;
    const char *d = h->fixed_db ? NULL : database;
    for (UpKey *k = h->keys; k; k = k->next)
        if (same(k->user, u) && same(k->database, d)) return k;
    UpKey *k = xcalloc(1, sizeof *k);
    k->host = h;
    k->user = u ? xstrdup(u) : NULL;
    k->database = d ? xstrdup(d) : NULL;
    k->next = h->keys;
    h->keys = k;
    return k;
}

static void key_free(UpKey *k)
{
    if (k->wait_timer) uv_close((uv_handle_t *)k->wait_timer, free_handle);
    free(k->user);
    free(k->database);
    free(k);
}

/* Where a read goes: the next healthy replica after the one picked last. */
static UpHost *read_host(UpPool *p)
{
    for (size_t i = 0; i < p->n_hosts; i++) {
        size_t j = (p->next_replica + i) % p->n_hosts;
        UpHost *h = p->hosts[j];
        if (h->role == UP_REPLICA && h->healthy) {
            p->next_replica = j + 1;
            return h;
        }
    }
    return p->primary;
}

void upool_host_down(UpHost *h)
{
    UpPool *p = h->pool;
    upool_enter(p);
    for (UpKey *k = h->keys; k; k = k->next) {
        /* the read watch would notice a closed socket, but not a server
         * that stopped answering; nobody gets these any more anyway */
        while (k->idle.head) close_conn(k->idle.head);
        while (k->wait_head && !p->freeing) {
            UpWait *w = k->wait_head;
            wait_unlink(w);
            UpHost *to = read_host(p);     /* never h: it is no longer healthy */
            UpKey *nk = key_get(to, w->user, w->database);
            wait_link(nk, w);
            dispatch(nk);
        }
    }
    upool_leave(p);
}

/* "host:port" as the conninfo names it, for logs and SHOW riffq.pools: the
 * conninfo itself may hold a password. */
static char *host_label(PQconninfoOption *info)
{
    const char *host = NULL, *addr = NULL, *port = NULL;
    for (PQconninfoOption *o = info; o->keyword; o++) {
        if (!o->val || !*o->val) continue;
        if (strcmp(o->keyword, "host") == 0) host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0) addr = o->val;
        else if (strcmp(o->keyword, "port") == 0) port = o->val;
    }
    const char *h = host ? host : addr ? addr : "default";
    return port ? xasprintf("%s:%s", h, port) : xstrdup(h);
}

static UpHost *host_new(UpPool *p, const UpHostSpec *spec, PQconninfoOption *info)
{
    UpHost *h = xcalloc(1, sizeof *h);
    h->pool = p;
    h->role = spec->role;
    h->conninfo = xstrdup(spec->conninfo);
    h->label = host_label(info);
    h->healthy = 1;
    int conninfo_timeout_s = 0;
    for (PQconninfoOption *o = info; o->keyword; o++) {
        if (!o->val || !*o->val) continue;
        if (strcmp(o->keyword, "user") == 0) h->fixed_user = 1;
        else if (strcmp(o->keyword, "dbname") == 0) h->fixed_db = 1;
        else if (strcmp(o->keyword, "connect_timeout") == 0) conninfo_timeout_s = atoi(o->val);
    }
    h->connect_timeout_ms = p->opts.connect_timeout_ms > 0 ? p->opts.connect_timeout_ms
                          : conninfo_timeout_s > 0 ? conninfo_timeout_s * 1000
                          : DEFAULT_CONNECT_MS;
    return h;
}

static void host_free(UpHost *h)
{
    while (h->keys) {
        UpKey *k = h->keys;
        h->keys = k->next;
        key_free(k);
    }
    explicit_bzero(h->conninfo, strlen(h->conninfo));
    free(h->conninfo);
    free(h->label);
    free(h);
}

static void top_up(UpKey *k)
{
    UpHost *h = k->host;
    UpPool *p = h->pool;
    if (p->freeing || uv_now(p->loop) < k->retry_after_ms) return;
    if (h->role == UP_REPLICA && !h->healthy) return;
    int target = p->opts.min_pool_size < p->opts.pool_size ? p->opts.min_pool_size : p->opts.pool_size;
    while (key_total(k) < target) open_conn(k);
}

/* ---- events from conn.c ---- */

void upool_connected(UpConn *c)
{
    if (!c->key) {
        uph_probe_done(c, NULL);
        return;
    }
    UpPool *p = c->pool;
    upool_enter(p);
    c->host->total_opened++;
    if (p->freeing) close_conn(c);
    else hand_on(c);
    upool_leave(p);
}

void upool_connect_failed(UpConn *c, RqError *err)
{
    if (!c->key) {
        uph_probe_done(c, err);
        return;
    }
    UpPool *p = c->pool;
    UpHost *h = c->host;
    UpKey *k = c->key;
    upool_enter(p);
    h->total_failed++;
    k->retry_after_ms = uv_now(p->loop) + RETRY_MS;
    log_warn("upstream \"%s\": could not connect to %s%s: %s", p->name,
             h->role == UP_REPLICA ? "replica " : "", h->label, err->message);
    close_conn(c);
    /* a replica marked down takes its waiters elsewhere (upool_host_down) */
    if (!uph_connect_failed(h, err) && k->wait_head && !p->freeing) wait_fail(k->wait_head, err);
    dispatch(k);
    upool_leave(p);
}

void upool_conn_lost(UpConn *c)
{
    UpPool *p = c->pool;
    UpKey *k = c->key;
    upool_enter(p);
    log_info("upstream \"%s\": discarding idle server connection (pid %d): %s",
             p->name, c->backend_pid, c->err.message ? c->err.message : "broken");
    close_conn(c);
    dispatch(k);
    upool_leave(p);
}

void upool_reset_done(UpConn *c, int ok)
{
    UpPool *p = c->pool;
    UpKey *k = c->key;
    upool_enter(p);
    if (!ok || c->dead || p->freeing) {
        close_conn(c);
        dispatch(k);
    } else {
        hand_on(c);
    }
    upool_leave(p);
}

void upool_conn_freed(UpPool *p)
{
    p->n_conns--;
    if (p->depth == 0 && p->freeing && p->n_conns == 0) pool_free_now(p);
}

/* ---- janitor ---- */

static void janitor_key(UpKey *k, uint64_t now)
{
    UpPool *p = k->host->pool;
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
    upool_enter(p);
    for (size_t i = 0; i < p->n_hosts; i++) {
        UpHost *h = p->hosts[i];
        for (UpKey *k = h->keys; k; k = k->next) janitor_key(k, now);
        /* keys the conninfo leaves open accumulate per client user/database;
         * forget the empty ones */
        for (UpKey **pk = &h->keys; *pk;) {
            UpKey *k = *pk;
            if ((h->fixed_user && h->fixed_db) || key_total(k) || k->n_wait || p->opts.min_pool_size > 0) {
                pk = &k->next;
            } else {
                *pk = k->next;
                key_free(k);
            }
        }
    }
    upool_leave(p);
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
    UpHostSpec spec = { .conninfo = conninfo, .role = UP_PRIMARY };
    return up_pool_new_hosts(loop, name, &spec, 1, opts);
}

UpPool *up_pool_new_hosts(uv_loop_t *loop, const char *name, const UpHostSpec *hosts, size_t n,
                          const UpPoolOpts *opts)
{
    size_t n_primary = 0;
    for (size_t i = 0; i < n; i++) n_primary += hosts[i].role == UP_PRIMARY;
    if (n_primary != 1) {
        log_error("upstream \"%s\": needs exactly one primary host, got %zu", name, n_primary);
        return NULL;
    }
    PQconninfoOption **infos = xcalloc(n, sizeof *infos);
    for (size_t i = 0; i < n; i++) {
        infos[i] = PQconninfoParse(hosts[i].conninfo, NULL);
        if (!infos[i]) {
            /* libpq's message may quote the conninfo, password included */
            log_error("upstream \"%s\": invalid conninfo for host %zu", name, i);
            for (size_t j = 0; j < i; j++) PQconninfoFree(infos[j]);
            free(infos);
            return NULL;
        }
    }
    UpPool *p = xcalloc(1, sizeof *p);
    p->loop = loop;
    p->name = xstrdup(name);
    p->opts = *opts;
    p->reset_query = opts->reset_query && *opts->reset_query ? xstrdup(opts->reset_query) : NULL;
    p->opts.reset_query = p->reset_query;
    if (p->opts.pool_size <= 0) p->opts.pool_size = DEFAULT_POOL_SIZE;
    if (p->opts.min_pool_size < 0) p->opts.min_pool_size = 0;
    p->hosts = xcalloc(n, sizeof *p->hosts);
    p->n_hosts = n;
    for (size_t i = 0; i < n; i++) {
        p->hosts[i] = host_new(p, &hosts[i], infos[i]);
        PQconninfoFree(infos[i]);
        if (hosts[i].role == UP_PRIMARY) p->primary = p->hosts[i];
        else p->healthy_replicas++;
    }
    free(infos);

    int every = 1000;
    if (p->opts.idle_timeout_ms > 0 && p->opts.idle_timeout_ms / 2 < every) every = p->opts.idle_timeout_ms / 2;
    if (p->opts.lifetime_ms > 0 && p->opts.lifetime_ms / 2 < every) every = p->opts.lifetime_ms / 2;
    if (every < 10) every = 10;
    p->janitor = xmalloc(sizeof *p->janitor);
    uv_timer_init(loop, p->janitor);
    p->janitor->data = p;
    uv_timer_start(p->janitor, on_janitor, (uint64_t)every, (uint64_t)every);
    uv_unref((uv_handle_t *)p->janitor);

    for (size_t i = 0; i < n; i++) {
        UpHost *h = p->hosts[i];
        if (h->fixed_user && h->fixed_db && p->opts.min_pool_size > 0) top_up(key_get(h, NULL, NULL));
        if (p->opts.health_interval_ms > 0) uph_start(h);
    }
    return p;
}

void up_pool_free(UpPool *p)
{
    if (!p || p->freeing) return;
    p->freeing = 1;
    upool_enter(p);
    p->janitor->data = NULL;
    uv_close((uv_handle_t *)p->janitor, free_handle);
    p->janitor = NULL;
    RqError err = {0};
    rq_error_set(&err, "57P01", "upstream pool \"%s\" is shutting down", p->name);
    for (size_t i = 0; i < p->n_hosts; i++) {
        UpHost *h = p->hosts[i];
        uph_stop(h);
        for (UpKey *k = h->keys; k; k = k->next) {
            UpList *lists[] = { &k->idle, &k->connecting, &k->resetting };
            for (size_t j = 0; j < 3; j++)
                while (lists[j]->head) close_conn(lists[j]->head);
            while (k->wait_head) wait_fail(k->wait_head, &err);
        }
    }
    rq_error_free(&err);
    upool_leave(p);
}

static void pool_free_now(UpPool *p)
{
    for (size_t i = 0; i < p->n_hosts; i++) host_free(p->hosts[i]);
    free(p->hosts);
    free(p->name);
    free(p->reset_query);
    free(p);
}

static UpWait *acquire_on(UpHost *h, const char *user, const char *database,
                          UpAcquireCb cb, void *ud)
{
    UpPool *p = h->pool;
    if (p->freeing) {
        RqError err = {0};
        rq_error_set(&err, "57P01", "upstream pool \"%s\" is shutting down", p->name);
        cb(ud, NULL, &err);
        rq_error_free(&err);
        return NULL;
    }
    UpKey *k = key_get(h, user, database);
    upool_enter(p);
    while (k->idle.head) {
        UpConn *c = k->idle.head;
        if (c->dead) {          /* broke while idle; its report is still queued */
            close_conn(c);
            continue;
        }
        move_to(c, UPC_ACTIVE);
        upc_make_active(c);
        h->total_acquired++;
        cb(ud, c, NULL);
        upool_leave(p);
        return NULL;
    }
    UpWait *w = xcalloc(1, sizeof *w);
    w->cb = cb;
    w->ud = ud;
    w->user = user;
    w->database = database;
    if (p->opts.wait_timeout_ms > 0) w->deadline_ms = uv_now(p->loop) + (uint64_t)p->opts.wait_timeout_ms;
    wait_link(k, w);
    dispatch(k);        /* opens asynchronously: w stays valid */
    upool_leave(p);
    return w;
}

UpWait *up_pool_acquire(UpPool *p, const char *user, const char *database,
                        UpAcquireCb cb, void *ud)
{
    return acquire_on(p->primary, user, database, cb, ud);
}

UpWait *up_pool_acquire_read(UpPool *p, const char *user, const char *database,
                             UpAcquireCb cb, void *ud)
{
    return acquire_on(read_host(p), user, database, cb, ud);
}

int up_pool_has_replicas(const UpPool *p)
{
    return p->n_hosts > 1;
}

void up_wait_cancel(UpWait *w)
{
    if (w) wait_free(w);
}

void up_pool_release(UpPool *p, UpConn *c, int reusable)
{
    UpKey *k = c->key;
    upool_enter(p);
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
    upool_leave(p);
}

UpRole up_conn_role(const UpConn *c)
{
    return c->host->role;
}

int up_conn_host_healthy(const UpConn *c)
{
    return c->host->healthy;
}

static void host_stats(const UpHost *h, UpPoolStats *out)
{
    for (const UpKey *k = h->keys; k; k = k->next) {
        out->active += k->active.n + k->resetting.n;
        out->idle += k->idle.n;
        out->connecting += k->connecting.n;
        out->waiting += k->n_wait;
    }
    out->total_acquired += h->total_acquired;
    out->total_opened += h->total_opened;
    out->total_failed += h->total_failed;
}

void up_pool_stats(const UpPool *p, UpPoolStats *out)
{
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < p->n_hosts; i++) host_stats(p->hosts[i], out);
}

size_t up_pool_n_hosts(const UpPool *p)
{
    return p->n_hosts;
}

void up_pool_host_stats(const UpPool *p, size_t i, UpHostStats *out)
{
    memset(out, 0, sizeof *out);
    if (i >= p->n_hosts) return;
    const UpHost *h = p->hosts[i];
    out->host = h->label;
    out->role = h->role;
    out->healthy = h->healthy;
    host_stats(h, &out->stats);
}
