/*
 * Session: the per-client protocol state machine once authentication is
 * done.  It consumes decoded frontend messages (simple and extended query
 * protocol), keeps prepared statements, portals, transaction status and
 * session settings, runs each statement on its target, and writes backend
 * messages into the connection's output buffer.  It never touches a socket:
 * the server layer owns I/O and flushes the buffer.
 *
 * The session is the only place that turns an RqError into an
 * ErrorResponse.
 */
#ifndef RIFFQ_SESSION_H
#define RIFFQ_SESSION_H

#include <stddef.h>
#include <stdint.h>
#include "riffq/buf.h"
#include "riffq/config.h"
#include "riffq/error.h"

struct sockaddr;

typedef struct Session Session;
typedef struct RouteTable RouteTable;
typedef struct UpPool UpPool;
typedef struct PlugEngine PlugEngine;

/* Gateway-wide counters, owned by the server; SHOW riffq.stats shows them. */
typedef struct RqStats {
    uint64_t sessions_started;
    uint64_t sessions_pinned;       /* pinned to a server under transaction pooling */
} RqStats;

/* What a session can send statements to; owned by the server, shared by
 * every session started under the same configuration, and kept alive until
 * the last of them ends. */
typedef struct SessEnv {
    const Config *cfg;
    RouteTable *routes;
    UpPool **pools;                 /* parallel to cfg->upstreams */
    PlugEngine *plugins;            /* NULL when no plugin engine runs */
    struct uv_loop_s *loop;         /* for timers (statement_timeout) */
    RqStats *stats;                 /* the server's counters */
} SessEnv;

/* How a session talks back to its connection outside sess_handle, when an
 * upstream or plugin answers later. */
typedef struct SessIO {
    void *ctx;
    void (*flush)(void *ctx);       /* output was appended: send it */
    void (*resume)(void *ctx);      /* ready for the next buffered message */
    void (*close)(void *ctx);       /* fatal: flush and close */
    size_t (*queued)(void *ctx);    /* bytes still waiting to be written to the client */
} SessIO;

typedef struct SessInit {
    const SessEnv *env;             /* borrowed; outlives the session */
    SessIO io;
    const char *user;
    const char *database;
    int32_t pid;                    /* BackendKeyData process id */
    int32_t key;                    /* BackendKeyData secret */
    const char *const *keys;        /* startup parameters other than user/database */
    const char *const *vals;
    size_t n;
    const char *client_addr;        /* "ip:port" or "unix" for logs */
    const struct sockaddr *addr;    /* NULL for Unix sockets */
    const char *listen;             /* listener name, for match.listen */
} SessInit;

/* SESS_WAIT: the message was taken, but the session is waiting for a target;
 * deliver nothing more until io.resume is called.  SESS_RETRY: the message
 * was NOT taken (e.g. a server connection is being acquired); deliver the
 * same message again after io.resume. */
typedef enum { SESS_OK = 0, SESS_WAIT = 1, SESS_RETRY = 2, SESS_CLOSE = -1 } SessStatus;

/* Create a session and write ParameterStatus*, BackendKeyData and
 * ReadyForQuery to out (after the server's AuthenticationOk).  Returns NULL
 * with err set (e.g. an invalid startup setting: FATAL). */
Session *sess_new(const SessInit *init, Buf *out, RqError *err);
void sess_free(Session *s);

/* Handle one frontend message. SESS_CLOSE: the client asked to terminate or
 * the message was fatal (an ErrorResponse was already written). */
SessStatus sess_handle(Session *s, uint8_t type, const uint8_t *body, size_t len);

/* A CancelRequest matched this session's key. */
void sess_cancel(Session *s);
/* The connection handled every complete message it had read: what the
 * session queued for upstream servers goes out now, in one write each. */
void sess_batch_end(Session *s);
/* The connection's output drained below its high-water mark. */
void sess_output_drained(Session *s);

char sess_xact_status(const Session *s);
int32_t sess_pid(const Session *s);
int32_t sess_key(const Session *s);

#endif
