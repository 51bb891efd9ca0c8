/*
 * Upstream Postgres connections and pools.
 *
 * Connections are opened by libpq (PQconnectStart/PQconnectPoll driven by
 * uv_poll on the loop; never a blocking call), so every conninfo option,
 * upstream TLS and SCRAM work as libpq implements them.  Once connected, the
 * connection is used as a raw protocol stream: the session relays protocol
 * messages to it and reads the server's messages back without libpq
 * re-encoding anything (reads and writes go through libpq's SSL object when
 * the upstream uses TLS, else straight to the socket).  libpq keeps owning
 * the PGconn for cancel requests and for closing.
 *
 * A pool per upstream (and per user/database when the conninfo leaves those
 * to the client) hands out idle connections, opens new ones up to
 * pool_size, and queues acquirers beyond that with a timeout.  A released
 * connection is reset before reuse.
 *
 * An upstream may have several hosts: one primary and streaming replicas.
 * Each host has its own connections (pool_size applies per host).  Plain
 * acquires get the primary; read acquires get a healthy replica, round
 * robin, or the primary when no replica is healthy.  Health comes from
 * active checks (a nonblocking connect to each host every interval) and
 * from pool connections that fail because the server did not answer.
 */
#ifndef RIFFQ_UPSTREAM_H
#define RIFFQ_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include "riffq/buf.h"
#include "riffq/config.h"
#include "riffq/error.h"

typedef struct UpPool UpPool;
typedef struct UpConn UpConn;
typedef struct UpWait UpWait;

typedef enum { UP_PRIMARY = 0, UP_REPLICA } UpRole;

typedef struct UpHostSpec {
    const char *conninfo;       /* copied */
    UpRole role;
} UpHostSpec;

/* Called on the loop thread with a connection in idle state (ReadyForQuery
 * 'I' received, nothing pending), or with conn NULL and err set (08006
 * connection failure with libpq's message, 53300 pool wait timeout, ...).
 * err is owned by the callee for the duration of the call only. */
typedef void (*UpAcquireCb)(void *ud, UpConn *conn, RqError *err);

typedef struct UpPoolOpts {
    int pool_size;              /* max server connections per (user, database) key; <= 0 = 20 */
    int min_pool_size;
    int idle_timeout_ms;        /* close idle connections beyond min after this; 0 = never */
    int lifetime_ms;            /* close connections older than this at release; 0 = never */
    int wait_timeout_ms;        /* max time an acquirer waits in the queue; 0 = no limit */
    int connect_timeout_ms;     /* 0 = the conninfo's connect_timeout, else 10 s */
    const char *reset_query;    /* sent at release before reuse, e.g. "DISCARD ALL"; NULL = none */
    int health_interval_ms;     /* probe every host this often; 0 = no checks (then a
                                 * replica is never marked down) */
    int health_timeout_ms;      /* a probe slower than this fails; 0 = connect timeout */
} UpPoolOpts;

/* 0 when libpq can parse conninfo, else -1 with err (22023) carrying
 * libpq's message - which may quote the conninfo, so it is for the route
 * file's author, not for logs. */
int up_conninfo_check(const char *conninfo, RqError *err);

/* A pool with one host, the primary.  NULL when the conninfo does not
 * parse (see up_conninfo_check). */
UpPool *up_pool_new(uv_loop_t *loop, const char *name, const char *conninfo, const UpPoolOpts *opts);
/* A pool over n hosts, exactly one of them UP_PRIMARY.  NULL when a
 * conninfo does not parse or the roles are wrong (logged without the
 * conninfo). */
UpPool *up_pool_new_hosts(uv_loop_t *loop, const char *name, const UpHostSpec *hosts, size_t n,
                          const UpPoolOpts *opts);
/* Close idle connections now and the others when they are released; frees
 * the pool when the last connection is gone. */
void up_pool_free(UpPool *p);

/* Get a connection for (user, database).  user/database are used only when
 * the conninfo does not fix them (dbname=/user= absent).  Returns a wait
 * handle while queued (may be NULL when cb was already called: an idle
 * connection is handed out synchronously).  cb is called exactly once
 * unless up_wait_cancel comes first; after up_pool_free, with 57P01.
 * user and database are borrowed: they must outlive the wait. */
UpWait *up_pool_acquire(UpPool *p, const char *user, const char *database,
                        UpAcquireCb cb, void *ud);
/* The same for a statement that only reads: from a healthy replica (round
 * robin over them), or from the primary when none is healthy. */
UpWait *up_pool_acquire_read(UpPool *p, const char *user, const char *database,
                             UpAcquireCb cb, void *ud);
void up_wait_cancel(UpWait *w);     /* cb is not called after this */
int up_pool_has_replicas(const UpPool *p);

/* Give a connection back.  reusable = 0 closes it (protocol state unknown,
 * e.g. the client vanished mid-result).  Runs reset_query first when set.
 * Release with reusable = 1 only right after ReadyForQuery 'I': the pool
 * does not parse relayed traffic, so it cannot tell otherwise (a reset
 * query like DISCARD ALL fails inside a transaction, which closes the
 * connection; without a reset query nothing catches it).  Broken
 * connections are closed whatever reusable says.  May hand the connection
 * to the next waiter (its callback runs) before returning. */
void up_pool_release(UpPool *p, UpConn *c, int reusable);

/* ---- raw protocol I/O on an acquired connection ---- */

typedef struct UpConnCb {
    void *ud;
    /* bytes from the server (any split: the receiver frames messages) */
    void (*on_data)(void *ud, const uint8_t *data, size_t len);
    /* the connection broke (08006 with a message); it is unusable after */
    void (*on_error)(void *ud, RqError *err);
} UpConnCb;

void up_conn_attach(UpConn *c, const UpConnCb *cb);    /* starts reading */
void up_conn_detach(UpConn *c);                        /* stops delivering */
/* Queue bytes for the server (copied); written as the socket allows. */
void up_conn_send(UpConn *c, const void *data, size_t len);
/* Corked, up_conn_send only queues; uncorking writes everything queued at
 * once, so several relayed messages cost one system call. */
void up_conn_cork(UpConn *c, int on);
void up_conn_pause(UpConn *c);      /* stop reading (client is slow) */
void up_conn_resume(UpConn *c);
/* Ask the server to cancel what this connection runs (libpq's cancel API,
 * run off the loop because PQcancel blocks). */
void up_conn_cancel(UpConn *c);
/* Server parameter values reported at connect (server_version, ...). */
const char *up_conn_parameter(const UpConn *c, const char *name);
int up_conn_backend_pid(const UpConn *c);
int up_conn_tls(const UpConn *c);   /* 1 when the upstream connection uses TLS */
UpRole up_conn_role(const UpConn *c);
/* Whether the host of c passed its last health check (1 without checks). */
int up_conn_host_healthy(const UpConn *c);

/* One pointer of session-layer state per server connection (the relay keeps
 * the set of statements prepared on it there); freed with free_fn when the
 * connection closes, and cleared by the pool when a reset query runs. */
void *up_conn_slot(const UpConn *c);
void up_conn_set_slot(UpConn *c, void *data, void (*free_fn)(void *));

typedef struct UpPoolStats {
    int active, idle, connecting, waiting;  /* active includes those running reset_query */
    uint64_t total_acquired, total_opened, total_failed;
} UpPoolStats;
void up_pool_stats(const UpPool *p, UpPoolStats *out);     /* all hosts together */

typedef struct UpHostStats {
    const char *host;           /* "host:port" from the conninfo; valid while the pool lives */
    UpRole role;
    int healthy;
    UpPoolStats stats;          /* this host's connections */
} UpHostStats;
size_t up_pool_n_hosts(const UpPool *p);
void up_pool_host_stats(const UpPool *p, size_t i, UpHostStats *out);

#endif
