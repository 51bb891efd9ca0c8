/*
 * Internals shared by the two halves of the upstream layer:
 *
 *   conn.c  one server connection: the nonblocking libpq connect, then raw
 *           protocol I/O on the socket (or libpq's SSL object), the reset
 *           query exchange, cancel.  It knows nothing of pools beyond
 *           reporting state changes through the upool_* calls below.
 *   pool.c  pools, their hosts (a primary and its replicas), per-(user,
 *           database) keys, the wait queue, housekeeping.
 *   health.c active health checks of each host, and what a host going
 *           down or coming back means for the replicas reads may use.
 *
 * Every connection is on exactly one list of its key, and the list names its
 * state (pgbouncer's habit): connecting, idle, active or resetting.  The pool
 * owns its hosts, a host owns its keys, the keys own the connections on their
 * lists.  A health probe is an UpConn too (so it shares the nonblocking
 * connect), but on no list: its host points at it and it has no key.
 */
#ifndef RIFFQ_UPSTREAM_INT_H
#define RIFFQ_UPSTREAM_INT_H

#include <libpq-fe.h>
#include <openssl/ssl.h>
#include "riffq/upstream.h"

typedef struct UpKey UpKey;
typedef struct UpHost UpHost;

typedef enum {
    UPC_CONNECTING = 0,
    UPC_IDLE,
    UPC_ACTIVE,
    UPC_RESETTING,
    UPC_CLOSED,                     /* on no list: being destroyed */
} UpConnState;

typedef struct UpList {
    UpConn *head, *tail;
    int n;
} UpList;

/* A PGcancel shared between a connection and the cancel requests running on
 * the thread pool, so that a connection closing while PQcancel runs does not
 * free it under the worker.  refs is touched on the loop thread only. */
typedef struct UpCancelKey {
    PGcancel *pc;
    int refs;
} UpCancelKey;

typedef struct UpParam {
    char *name;
    char *value;
} UpParam;

struct UpConn {
    UpPool *pool;
    UpHost *host;
    UpKey *key;                     /* NULL for a health probe */
    UpConn *prev, *next;            /* links on the key's list for state */
    UpConnState state;

    PGconn *pg;                     /* owned; PQfinish at close */
    UpCancelKey *cancel;            /* one reference owned */
    SSL *ssl;                       /* libpq's, when the upstream uses TLS */
    int fd;

    /* Readiness.  Heap-allocated and freed by their close callbacks, so a
     * connection can be freed synchronously while libuv finishes closing. */
    uv_poll_t *poll;
    int poll_fd;
    int poll_events;                /* what poll is started with; 0 = stopped */
    uv_timer_t *timer;              /* connect timeout, reset timeout, deferred work */
    int timeout_ms;                 /* of the connect attempt */

    Buf out;                        /* queued for the server, from out_off on */
    size_t out_off;
    size_t ssl_retry_len;           /* length an SSL_write must be retried with */
    unsigned ssl_read_wants_write : 1;
    unsigned ssl_write_wants_read : 1;

    Buf in;                         /* reset phase only: the server's reply so far */
    unsigned reset_failed : 1;

    UpConnCb cb;
    unsigned attached : 1;
    unsigned paused : 1;
    unsigned corked : 1;            /* queue writes until uncorked */
    unsigned read_parked : 1;       /* readable while nobody is attached: not polled until attach */
    unsigned dead : 1;              /* broken: err holds why */
    unsigned err_delivered : 1;
    unsigned start_failed : 1;      /* PQconnectStart failed: report on next tick */
    unsigned destroy_pending : 1;
    int io_depth;                   /* >0 while a libuv callback of ours runs */
    RqError err;

    UpParam *params;
    size_t n_params;
    int backend_pid;
    uint64_t created_ms, idle_since_ms;

    void *slot;
    void (*slot_free)(void *);
};

/* A queued acquirer.  user/database are kept (owned) so that a waiter can
 * move to another host's key when its replica goes down. */
struct UpWait {
    UpKey *key;
    UpWait *prev, *next;
    UpAcquireCb cb;
    void *ud;
    const char *user;           /* the acquirer's: valid while it waits */
    const char *database;
    uint64_t deadline_ms;       /* loop time it fails at; 0: waits forever */
};

/* One (user, database) of a host: what the conninfo leaves open. */
struct UpKey {
    UpHost *host;
    UpKey *next;
    char *user;                 /* NULL when fixed by the conninfo (or not given) */
    char *database;
    UpList connecting, idle, active, resetting;
    UpWait *wait_head, *wait_tail;
    int n_wait;
    /* One timer for all waiters, armed for the earliest deadline and moved
     * on lazily when it fires: a per-waiter timer cost a malloc and a
     * handle close on every queued acquire, and under load most are. */
    uv_timer_t *wait_timer;
    uint64_t retry_after_ms;
};

/* One server of a pool: the primary or a replica. */
struct UpHost {
    UpPool *pool;
    UpRole role;
    char *conninfo;             /* may hold a password: never logged */
    char *label;                /* "host:port" from the conninfo, for logs and views */
    int fixed_user, fixed_db;
    int connect_timeout_ms;
    UpKey *keys;                /* owned */
    uint64_t total_acquired, total_opened, total_failed;
    /* health.c */
    int healthy;                /* optimistic at start: reads flow before the first probe */
    UpConn *probe;              /* the check in flight (owned), or NULL */
    uv_timer_t *check_timer;    /* NULL without checks; frees itself on close */
};

struct UpPool {
    uv_loop_t *loop;
    char *name;
    char *reset_query;
    UpPoolOpts opts;
    UpHost **hosts;             /* owned, in route-file order */
    size_t n_hosts;
    UpHost *primary;            /* one of hosts */
    size_t next_replica;        /* round robin cursor into hosts */
    int healthy_replicas;
    uv_timer_t *janitor;        /* frees itself on close */
    int n_conns;                /* every UpConn not yet freed (probes too), on a list or not */
    int depth;
    int freeing;
};

/* ---- conn.c ---- */
/* Start connecting with the given libpq keywords (NULL-terminated). */
UpConn *upc_open(UpPool *p, UpKey *k, uv_loop_t *loop, const char *const *kw,
                 const char *const *vals, int connect_timeout_ms);
/* Close now (or as soon as the current callback of ours returns). */
void upc_destroy(UpConn *c);
/* Enter idle state: no callbacks, watch the socket for the server closing. */
void upc_make_idle(UpConn *c);
void upc_make_active(UpConn *c);
/* Send query and collect the reply; upool_reset_done reports the outcome. */
void upc_start_reset(UpConn *c, const char *query, int timeout_ms);

/* ---- pool.c, called by conn.c ---- */
void upool_connected(UpConn *c);
void upool_connect_failed(UpConn *c, RqError *err);
void upool_conn_lost(UpConn *c);                /* an idle or resetting conn broke */
void upool_reset_done(UpConn *c, int ok);
void upool_conn_freed(UpPool *p);               /* the last act of upc_destroy */
uv_loop_t *upool_loop(const UpPool *p);
const char *upool_name(const UpPool *p);
/* Pool functions on the stack: the pool is freed only when none is. */
void upool_enter(UpPool *p);
void upool_leave(UpPool *p);
/* A replica went down: close its idle connections and send its waiters to
 * another host (a healthy replica, else the primary). */
void upool_host_down(UpHost *h);

/* ---- health.c, called by pool.c ---- */
void uph_start(UpHost *h);                      /* begin probing (opts.health_interval_ms) */
void uph_stop(UpHost *h);                       /* at pool free */
/* The probe connected (err NULL) or failed. */
void uph_probe_done(UpConn *probe, const RqError *err);
/* A pool connection to h failed with err.  Returns 1 when that marks h (a
 * replica, with checks running) down: the server did not answer, rather
 * than refusing this user or database. */
int uph_connect_failed(UpHost *h, const RqError *err);

#endif
