/*
 * Statement classification: the real Postgres grammar (libpg_query) splits a
 * query string into statements and tells, for each, its kind and the
 * relations it names.  Routing decisions and the gateway's own answers are
 * both made from this, never from regexes over the text.
 *
 * The parse tree is libpg_query's JSON, held as a jansson tree so the local
 * engine can walk expressions without a second parse.
 */
#ifndef RIFFQ_ROUTE_H
#define RIFFQ_ROUTE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <jansson.h>
#include "riffq/config.h"
#include "riffq/buf.h"
#include "riffq/error.h"

typedef enum {
    STMT_SELECT = 0, STMT_INSERT, STMT_UPDATE, STMT_DELETE, STMT_MERGE, STMT_DDL,
    STMT_COPY, STMT_UTILITY, STMT_TRANSACTION, STMT_SET, STMT_SHOW, STMT_CALL,
    STMT_EXPLAIN, STMT_OTHER, STMT_KIND_COUNT
} StmtKind;

typedef struct RouteRel {
    char *schema;       /* NULL when unqualified */
    char *name;
    int location;       /* byte offset in the query string, -1 unknown */
} RouteRel;

typedef struct RouteStmt {
    StmtKind kind;
    const char *node_type;  /* libpg_query node name, e.g. "SelectStmt" (points into node) */
    json_t *node;           /* the statement node (borrowed from RouteParse.root) */
    char *text;             /* this statement's own text (owned) */
    RouteRel *rels;         /* relations read or written, CTE names excluded (owned) */
    size_t n_rels;
} RouteStmt;

typedef struct RouteParse {
    RouteStmt *stmts;       /* owned; n == 0 for an empty query string */
    size_t n;
    json_t *root;           /* owns the parse tree */
    int *shared;            /* copies sharing stmts and root (classification cache), or NULL */
} RouteParse;

/* Parse sql.  Returns 0, or -1 with a 42601 syntax error (with position, in
 * Postgres' words) in err.  Results are cached per thread by statement text,
 * so a statement parsed again (a re-prepared or repeated query) costs a hash
 * lookup; the result is read-only and shared with the cache. */
int route_parse(const char *sql, RouteParse *out, RqError *err);
void route_parse_free(RouteParse *p);
/* Visit every member (key, value) of every object in a parse tree, depth
 * first, before descending into the value. */
typedef void (*RouteJsonVisit)(const char *key, json_t *value, void *ctx);
void route_json_walk(json_t *node, RouteJsonVisit visit, void *ctx);
/* Classification cache counters of the calling thread. */
void route_cache_stats(uint64_t *hits, uint64_t *misses);
/* Release the parser's per-thread memory (at exit, for leak checkers).
 * Only for a thread that never exits afterwards: libpg_query also frees its
 * memory from a thread-exit destructor, which would free it twice. */
void route_parser_exit(void);
/* Drop the calling thread's classification cache only (a thread that will
 * exit, or go on without the gateway, leaves the rest to libpg_query). */
void route_cache_exit(void);

/* "select", "insert", ... as route files spell statement kinds. */
const char *route_kind_name(StmtKind k);
int route_kind_from_name(const char *name, StmtKind *out);

/* Command tag word(s) Postgres uses for a statement node, e.g. "CREATE TABLE"
 * for CreateStmt; falls back to the kind in upper case. */
const char *route_stmt_tag(const RouteStmt *s);

/* ---- the routing table ---- */


typedef struct RouteTable RouteTable;

/* Compile the routes of cfg (regexes, CIDRs).  cfg must outlive the table. */
RouteTable *route_table_new(const Config *cfg, char **errmsg);
void route_table_free(RouteTable *t);

/* Whether any route looks inside statements (tables, schemas, statement
 * kinds, regex).  When none does, a statement need not be parsed to be
 * routed, which keeps a plain proxy fast. */
int route_table_needs_parse(const RouteTable *t);

typedef struct RouteClient {
    const char *user;
    const char *database;
    const char *application_name;
    const struct sockaddr *addr;    /* NULL for Unix sockets */
    const char *listen;             /* the listener's name: "host:port" or the socket path */
} RouteClient;

/* Whether plugin `plugin` registered table schema.name (schema NULL =
 * "public").  Set by whoever runs the plugins; without it, plugin routes
 * without conditions match nothing. */
typedef int (*RoutePluginTables)(void *ctx, const char *plugin, const char *schema, const char *name);
void route_table_set_plugin_tables(RouteTable *t, RoutePluginTables fn, void *ctx);

/* Pick the route for a statement (st may be NULL when the table does not
 * need parsing, or for a statement libpg_query could not parse: then only
 * routes without statement-content conditions can match).  Returns the route
 * index, -1 when no route matches (err unset), or -2 with err set when the
 * statement's tables are claimed by routes with different targets.  When
 * why is non-NULL, a human explanation is appended (for --explain). */
int route_table_match(RouteTable *t, const RouteClient *c, const RouteStmt *st,
                      RqError *err, Buf *why);
const CfgRoute *route_table_route(const RouteTable *t, int index);
/* Hit counter of each route (incremented by route_table_match). */
uint64_t route_table_hits(const RouteTable *t, int index);

#endif
