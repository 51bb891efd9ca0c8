/*
 * Python plugins: an embedded CPython interpreter (Debian's libpython3)
 * with a `riffq` module, running handlers on worker threads so Python never
 * runs on the event-loop thread.
 *
 * A PlugQuery is one handler invocation.  The worker converts what the
 * handler returns (rows + columns, a DataFrame, a generator of batches, a
 * command tag, or an exception) into column descriptions and DataRow
 * messages already encoded in the client's requested formats; the loop only
 * copies bytes.  Results stream in batches with backpressure: the worker
 * produces the next batch only after the loop fetched the previous one.
 */
#ifndef RIFFQ_PLUGIN_H
#define RIFFQ_PLUGIN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include "riffq/buf.h"
#include "riffq/config.h"
#include "riffq/error.h"
#include "riffq/result.h"

typedef struct PlugEngine PlugEngine;
typedef struct PlugQuery PlugQuery;

/* Start the interpreter and import every plugin in cfg.  A plugin that
 * fails to import does not stop the engine: it is recorded, logged, and its
 * queries fail with a clear error.  n_workers: handler threads.  The
 * interpreter is started once per process and never finalized, so engines
 * may come and go.  The imports run on the calling thread. */
PlugEngine *plug_engine_new(uv_loop_t *loop, const Config *cfg, int n_workers, char **errmsg);
/* Re-import the plugins of cfg (SIGHUP).  The imports run on the calling
 * thread (blocking it for as long as they take); running queries finish
 * with the module they started with. */
int plug_engine_reload(PlugEngine *e, const Config *cfg, char **errmsg);
/* Every query and hook must have been freed with plug_query_free first.
 * The engine's uv handle closes on the next loop iteration. */
void plug_engine_free(PlugEngine *e);

/* Whether a plugin is usable: 0 loaded, 1 failed to import (*error, if
 * given, says why, e.g. "ModuleNotFoundError: No module named 'x'"), -1 not
 * configured.  The string lives until the next reload. */
int plug_engine_plugin_status(PlugEngine *e, const char *plugin, const char **error);

/* A column of a registered table; type_oid from the type given in Python. */
typedef struct PlugColumn {
    const char *name;
    uint32_t type_oid;
    int nullable;
} PlugColumn;

/* Tables a plugin registered with riffq.register_table (for routing, and
 * with their columns for the catalog).  Arrays and strings are owned by the
 * engine and valid until the next plug_engine_reload or plug_engine_free. */
typedef struct PlugTable {
    const char *schema;
    const char *name;
    const PlugColumn *columns;
    size_t n_columns;
    const char *const *primary_key;     /* column names, n_primary_key of them */
    size_t n_primary_key;
    const char *comment;                /* NULL = none */
} PlugTable;
size_t plug_engine_tables(PlugEngine *e, const char *plugin, const PlugTable **out);
/* One registered table by schema and name, or NULL. */
const PlugTable *plug_engine_table(PlugEngine *e, const char *plugin,
                                   const char *schema, const char *name);

typedef struct PlugCtx {
    const char *user;
    const char *database;
    const char *application_name;
    const char *route;
    int32_t session_id;         /* ctx dict for session state is kept per session id */
    const char *client_addr;    /* IP address text; NULL for a Unix-socket client */
    int client_port;
    const char *server_name;    /* TLS SNI the client sent, or NULL */
    const char *options;        /* the startup packet's "options" (hooks), or NULL */
    int extended;               /* the statement came by the extended protocol */
} PlugCtx;

/* Set ctx's client_addr and client_port from a peer name as the server
 * writes it ("ip:port"; "[local]" for a Unix socket leaves them unset).
 * ip must hold INET6_ADDRSTRLEN (46) bytes and outlive ctx's use. */
void plug_ctx_set_peer(PlugCtx *ctx, const char *peer, char *ip);

/* Called on the loop thread whenever the query made progress: columns are
 * known, a batch of rows is ready, or it finished (done or error). */
typedef void (*PlugReadyCb)(void *ud);

/* Connection hooks (@riffq.on_connect / @riffq.on_disconnect of every
 * plugin, in config order).  Asynchronous form: runs on a worker like a
 * query and ends PLUG_DONE, or PLUG_FAILED with the first riffq.Error an
 * on_connect hook raised (a rejected login; other exceptions are XX000).
 * on_disconnect hooks' errors are only logged, and a disconnect job then
 * drops the session's ctx["session"] dict.  Free it with plug_query_free. */
typedef enum { PLUG_HOOK_CONNECT = 0, PLUG_HOOK_DISCONNECT } PlugHook;
PlugQuery *plug_hook_start(PlugEngine *e, PlugHook hook, const PlugCtx *ctx,
                           PlugReadyCb cb, void *ud);
/* Whether any loaded plugin defines the hook (so connections without hooks
 * skip the worker round trip).  Loop thread only. */
int plug_engine_has_hooks(PlugEngine *e, PlugHook hook);
/* Synchronous forms: run the hooks on the calling thread, taking the GIL
 * there (so the caller blocks for as long as the hooks run).  Returns 0, or
 * -1 with err set (on_connect only). */
int plug_engine_on_connect(PlugEngine *e, const PlugCtx *ctx, RqError *err);
void plug_engine_on_disconnect(PlugEngine *e, const PlugCtx *ctx);
/* Forget ctx["session"] of a session that ended (without blocking: done by
 * a worker).  plug_hook_start(PLUG_HOOK_DISCONNECT) already does it. */
void plug_engine_session_end(PlugEngine *e, int32_t session_id);

/* Check a cleartext password with the plugin's @riffq.authenticate hook,
 * on a worker: ends PLUG_DONE when the login is accepted, PLUG_FAILED with
 * 28P01 (or the riffq.Error the hook raised) when not.  Free it with
 * plug_query_free; the password copy is wiped. */
PlugQuery *plug_auth_start(PlugEngine *e, const char *plugin, const char *password,
                           const PlugCtx *ctx, PlugReadyCb cb, void *ud);

/* Start a handler call.  params: text values (NULL = SQL NULL) with their
 * type OIDs; formats: result format codes per Bind's 0/1/n rule.
 * describe_only: the client wants the columns only (Describe before
 * Execute): handlers see it as ctx["describe"] = True. */
PlugQuery *plug_query_start(PlugEngine *e, const char *plugin, const char *sql,
                            const char *const *params, const uint32_t *param_types,
                            uint16_t n_params, const uint8_t *formats, uint16_t n_formats,
                            const PlugCtx *ctx, int describe_only,
                            PlugReadyCb cb, void *ud);

typedef enum {
    PLUG_RUNNING = 0,       /* nothing new yet; cb will be called */
    PLUG_COLUMNS,           /* columns known (plug_query_columns), maybe rows */
    PLUG_DONE,              /* all rows fetched; tag available */
    PLUG_FAILED             /* error available */
} PlugState;

PlugState plug_query_state(PlugQuery *q);
/* Column descriptions (valid once state >= PLUG_COLUMNS; n = 0 and
 * returns_rows = 0 for a command-only result). */
const RqResult *plug_query_columns(PlugQuery *q);
/* Move up to max_rows (0 = all available) encoded DataRow messages into
 * out.  Returns the number of rows moved; when none are buffered and the
 * handler is not finished, returns 0 and cb fires when more arrive. */
size_t plug_query_fetch(PlugQuery *q, size_t max_rows, Buf *out);
/* Whether every row has been fetched (then the tag is final). */
int plug_query_finished(PlugQuery *q);
const char *plug_query_tag(PlugQuery *q);          /* e.g. "SELECT 42", "INSERT 0 3" */
const RqError *plug_query_error(PlugQuery *q);
/* Interrupt the handler (CancelRequest, statement_timeout): it finishes
 * with 57014. */
void plug_query_cancel(PlugQuery *q);
/* Free; a running handler is cancelled and freed when its worker returns. */
void plug_query_free(PlugQuery *q);

#endif
