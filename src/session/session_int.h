/*
 * Session internals shared by session.c (protocol state machine, local and
 * plugin answers) and relay.c (statements relayed to an upstream).
 */
#ifndef RIFFQ_SESSION_INT_H
#define RIFFQ_SESSION_INT_H

#include <sys/socket.h>
#include "riffq/buf.h"
#include "riffq/config.h"
#include "riffq/result.h"
#include "riffq/route.h"
#include "riffq/session.h"
#include "riffq/upstream.h"
#include "settings.h"

/* Where a statement goes. */
typedef struct Target {
    CfgTargetKind kind;
    int index;          /* upstream or plugin index in cfg; -1 otherwise */
    int route;          /* route index that chose it, -1 when none did */
    int cursor;         /* CURSOR_*: a cursor statement cursor.c runs, not the handler */
} Target;

/* Target.cursor: a DECLARE whose query goes to a plugin, or a FETCH, MOVE
 * or CLOSE of a cursor the gateway holds. */
enum { CURSOR_NONE = 0, CURSOR_DECLARE, CURSOR_USE };

typedef struct Prepared {
    char *name;
    char *sql;
    RouteParse parse;           /* empty when the statement was not parsed (pure proxy) */
    int parsed;
    uint32_t *types;            /* n_params */
    uint16_t n_params;
    uint32_t *decl_types;       /* types as the client declared them (for re-Parse upstream) */
    uint16_t n_decl;
    Target target;
    char srv_name[24];          /* name on upstream servers: content hash */
    int refs;                   /* the statement list + each portal made from it */
    struct Prepared *next;
} Prepared;

typedef struct Portal {
    char *name;
    Prepared *ps;               /* counted reference */
    char **params;              /* text values, NULL = SQL NULL (owned) */
    uint16_t n_params;
    uint8_t *formats;           /* result format codes as sent (owned) */
    uint16_t n_formats;
    RqResult res;
    int ran;
    size_t pos;                 /* next row to send */
    struct PlugQuery *pq;       /* plugin statements: the running handler call (owned) */
    struct CursorOp *cop;       /* a FETCH suspended by Execute's row limit: where it stands (owned) */
    struct Portal *next;
} Portal;

/* A SQL cursor over a plugin (DECLARE ... CURSOR FOR a query routed to a
 * plugin; cursor.c): the handler's result stream kept open, which FETCH and
 * MOVE pull from, forward only. */
typedef struct Cursor {
    char *name;
    char *statement;            /* pg_cursors.statement: the DECLARE as sent */
    struct PlugQuery *q;        /* the stream (owned); NULL once it failed */
    Target target;              /* the plugin and route of its query */
    int holdable;               /* WITH HOLD: outlives its transaction */
    int binary;                 /* BINARY: the stream is encoded in binary */
    int in_xact;                /* declared in the current transaction */
    size_t depth;               /* savepoints open when it was declared */
    uint64_t pos;               /* rows moved over: the cursor's position */
    int past_end;               /* a fetch ran out of rows */
    int64_t created_us;         /* creation_time, Unix microseconds */
    struct Cursor *next;
} Cursor;

/* One DECLARE, FETCH, MOVE or CLOSE being answered (cursor.c). */
typedef struct CursorOp {
    uint8_t kind;               /* 'D' 'F' 'M' 'C' */
    int started;                /* checked and set up */
    int on_row;                 /* MOVE FORWARD 0: only says whether it is on a row */
    uint64_t skip;              /* rows to pass over first (ABSOLUTE, RELATIVE) */
    uint64_t want;              /* rows to return or move over; UINT64_MAX = ALL */
    uint64_t done;              /* rows returned or moved over so far */
} CursorOp;

/* A plugin statement being answered: a simple Query's statements one after
 * another, or one Describe/Execute of the extended protocol. */
/* COPY ... TO STDOUT of a plugin's result (copyout.c). */
typedef struct CopyOut CopyOut;

typedef struct PlugRun {
    struct PlugQuery *q;        /* owned here for simple and Describe S; else the portal's */
    Portal *portal;             /* extended protocol: the portal */
    int active;
    int simple;
    uint8_t describe;           /* 0, or 'S' / 'P' while answering a Describe */
    int need_rowdesc;           /* simple protocol: RowDescription not sent yet */
    int32_t max_rows;           /* Execute limit, 0 = all */
    size_t rows;                /* rows sent for this Execute / statement */
    int blocked;                /* waiting for the client's output to drain */
    RouteParse parse;           /* simple Query: its statements */
    size_t next_stmt;
    Target target;
    struct uv_timer_s *timer;   /* statement_timeout (owned; closed with the session) */
    int timed_out;
    Target *targets;            /* simple Query: each statement's own target (owned) */
    char *sql;                  /* simple Query: its text (owned) */
    int is_cursor;              /* running a cursor statement (cursor.c) */
    const RouteStmt *cursor_st; /* that statement (borrowed) */
    const char *cursor_sql;     /* the text it came from (borrowed) */
    Cursor *cursor;             /* its cursor; a DECLARE's own until it succeeds */
    CursorOp cop;
    CopyOut *copy;              /* simple Query: a COPY TO STDOUT running (owned) */
} PlugRun;

/* What to do with the server's answer to one relayed client message. */
typedef enum {
    ACT_PASS = 0,       /* relay it to the client */
    ACT_SWALLOW,        /* answer to a message the gateway injected: drop it */
    ACT_SYNTH,          /* no message went upstream: emit `synth` to the client here */
} ActKind;

typedef struct RelayAct {
    uint8_t kind;
    uint8_t msg;        /* client message type: Q P B D E C S */
    uint8_t sub;        /* Describe/Close subtype 'S' or 'P' */
    uint8_t synth;      /* ACT_SYNTH: message type to emit ('1', '3') */
    uint8_t got_t;      /* Describe 'S': ParameterDescription seen */
    char *srv_name;     /* Parse: statement name, forgotten again if the Parse fails */
} RelayAct;

typedef struct Relay {
    int upstream;               /* index of the attached upstream, -1 = none */
    UpConn *conn;
    UpWait *wait;
    RelayAct *acts;             /* FIFO of answers expected from the server */
    size_t head, tail, cap;
    Buf in;                     /* partial server message */
    Buf pending;                /* client messages held while acquiring */
    int skipping;               /* the server reported an error and skips to Sync */
    int copy_in;                /* COPY FROM STDIN running: client data flows upstream */
    int paused;                 /* server reading paused for backpressure */
    int want_resume;            /* session must resume when the queue drains */
    int broken;
    int acquire_failed;         /* acquire_err answers the message that comes back */
    RqError acquire_err;
    int need_begin;             /* open the transaction begun locally before forwarding */
    int corked;                 /* conn is corked until the client's batch is read */
    int state_checked;          /* the attached server has this session's settings */
    int pinned;                 /* session state the pool cannot move: keep the server */
} Relay;

struct Session {
    const SessEnv *env;
    const Config *cfg;
    SessIO io;
    char *user;
    char *database;
    char *client;
    char *listen;
    struct sockaddr_storage addr;
    int has_addr;
    int32_t pid;
    int32_t key;
    Buf *out;                   /* the connection's output buffer (borrowed) */
    SessSettings settings;
    char xact;                  /* 'I', 'T' or 'E' */
    Target xact_target;         /* where the open transaction runs */
    int skip_to_sync;
    int in_handle;              /* inside sess_handle: completion need not resume */
    int waiting;                /* returned SESS_WAIT/RETRY, owes io.resume */
    int batch_upstream;         /* extended messages went upstream since the last Sync */
    int drop_portals;           /* the transaction ended: drop portals after this message */
    Prepared *stmts;
    Portal *portals;
    char **savepoints;
    size_t n_savepoints;
    Relay relay;
    PlugRun plug;
    Cursor *cursors;            /* open SQL cursors over plugins (owned) */
    /* Settings the client gave upstream servers (startup packet, then SET
     * statements), replayed on each pooled server it lands on: one
     * "SET name = value" statement per setting, in order. */
    char **up_names;
    char **up_sets;
    size_t n_up;
    uint64_t up_hash;           /* 0 = no settings */
};

/* relay.c */
void relay_init(Relay *r);
/* Relay one client message (type + body) to upstream t.index.  Returns
 * SESS_OK when forwarded/queued, SESS_WAIT while a connection is being
 * acquired.  ps: the statement a Parse/Bind/Describe refers to, if named. */
SessStatus relay_message(Session *s, int upstream, uint8_t type, const uint8_t *body, size_t len,
                         Prepared *ps);
/* The same with the route that chose the statement (for a simple Query,
 * which has no Prepared to carry it): its read_from decides whether a
 * plain read may run on a replica. */
SessStatus relay_message_routed(Session *s, int upstream, int route, uint8_t type,
                                const uint8_t *body, size_t len, Prepared *ps);
/* Whether server answers are still outstanding. */
int relay_busy(const Session *s);
/* Close out the relay: give the connection back (reusable when idle). */
void relay_detach(Session *s, int reusable);
void relay_cancel(Session *s);
void relay_output_drained(Session *s);
/* Ask the server to flush answers and resume the session once it has. */
void relay_flush_server(Session *s);
/* Look at a Query bound upstream for statements that change session state:
 * SET/RESET are recorded for replay, LISTEN/PREPARE/temp tables/advisory
 * locks pin the server connection to the session. */
void relay_note_query(Session *s, const char *sql);
/* Record the startup packet's settings for replay. */
void relay_startup_settings(Session *s, const char *const *keys, const char *const *vals, size_t n);
void relay_free_settings(Session *s);
/* The client's input batch is done: write what was relayed. */
void relay_batch_end(Session *s);
/* The session finished with a message synchronously or asynchronously. */
void sess_done_waiting(Session *s);

/* session.c, for cursor.c: start a handler call for sql with the portal's
 * parameters and result formats (portal NULL: none, text), and the error a
 * failed handler call reports. */
struct PlugQuery *sess_plug_start(Session *s, const Target *t, const char *sql, Portal *portal);
void sess_plug_error(Session *s, struct PlugQuery *q, RqError *err);

/* cursor.c: SQL cursors over plugins. */
/* Adjust the target decide() picked for a parsed statement: a DECLARE
 * routed to a plugin and FETCH/MOVE/CLOSE of the gateway's cursors are
 * cursor statements; a SELECT of pg_catalog.pg_cursors is answered locally
 * when the gateway holds cursors (or nothing else would answer it).
 * Returns -1 with err set to refuse the statement. */
int cursor_route(Session *s, const RouteStmt *st, Target *t, RqError *err);
/* In a simple Query string: FETCH/MOVE/CLOSE of a cursor an earlier
 * statement of the string declares goes where that DECLARE goes. */
void cursor_route_string(const RouteParse *parse, size_t i, const Target *targets, Target *t);
/* Set up s->plug (its portal, row limit and simple flag already set) to
 * run cursor statement st; sql: the text it came from, read by the first
 * cursor_pump.  st NULL: an Execute of the cursor named sql itself. */
void cursor_begin(Session *s, const RouteStmt *st, const char *sql);
/* Move the running cursor statement forward: 0 = waiting for the handler
 * or the client, 1 = answered, -1 = failed with err set (nothing sent). */
int cursor_pump(Session *s, RqError *err);
/* The handler call a running cursor statement waits on, or NULL. */
struct PlugQuery *cursor_running_query(Session *s);
/* Describe of a cursor statement's portal (p) or prepared statement (p
 * NULL): RowDescription for a FETCH, else NoData. */
int cursor_describe(Session *s, const Prepared *ps, const Portal *p, RqError *err);
/* Protocol-level Describe/Close of portal `name` that is a SQL cursor:
 * 1 = done, 0 = no such cursor. */
int cursor_describe_portal(Session *s, const char *name, RqError *err);
int cursor_close_portal(Session *s, const char *name);
int cursor_exists(const Session *s, const char *name);
/* Transaction boundaries: COMMIT keeps WITH HOLD cursors, ROLLBACK also
 * drops those declared in the transaction; a savepoint rolled back drops
 * the cursors declared after it. */
void cursor_xact_end(Session *s, int commit);
void cursor_savepoint_end(Session *s, size_t keep, int rollback);
/* The session is outside a transaction (however it ended, e.g. upstream):
 * no cursor WITHOUT HOLD survives that. */
void cursor_sweep(Session *s);

/* ---- copyout.c ---- */

/* A COPY statement routed to a plugin: the query to run (malloc'd) and the
 * output settings; -1 with err for COPY FROM, files, binary, bad options. */
int copyout_prepare(const RouteStmt *st, char **inner_sql, CopyOut **out, RqError *err);
/* CopyOutResponse (and the header line) once the columns are known. */
void copyout_begin(CopyOut *co, const RqResult *cols, Buf *out);
/* Encoded text DataRow messages -> CopyData lines. */
void copyout_rows(CopyOut *co, const uint8_t *data, size_t len, Buf *out);
/* CopyDone and CommandComplete "COPY n". */
void copyout_end(CopyOut *co, Buf *out);
void copyout_free(CopyOut *co);
/* FETCH/CLOSE that reached the local engine (no cursor of the gateway's
 * and no route): 34000, or CLOSE ALL.  1 = not a cursor statement. */
int cursor_run_local(Session *s, const RouteStmt *st, RqResult *res, RqError *err);
/* A statement relayed upstream: CLOSE ALL closes the gateway's too. */
void cursor_note_relayed(Session *s, const RouteStmt *st);
/* CLOSE ALL, DISCARD ALL, the session's end. */
void cursor_close_all(Session *s);
/* Rows of the pg_cursors view (the local engine's view callback). */
void cursor_view(void *session, const char *view, RqResult *out);

#endif
