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
} Target;

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
    struct Portal *next;
} Portal;

/* A plugin statement being answered: a simple Query's statements one after
 * another, or one Describe/Execute of the extended protocol. */
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

#endif
