/*
 * Statement classification with libpg_query (see include/riffq/route.h).
 *
 * libpg_query returns a JSON parse tree; we keep it as jansson objects and
 * walk it once per statement to collect the relations it names.  CTE names
 * are collected in the same walk and removed afterwards, so `WITH x AS (...)
 * SELECT * FROM x` does not claim a table called x.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <pg_query.h>
#include "riffq/buf.h"
#include "riffq/hash.h"
#include "riffq/route.h"

static const char *kind_names[STMT_KIND_COUNT] = {
    "select", "insert", "update", "delete", "merge", "ddl", "copy", "utility",
    "transaction", "set", "show", "call", "explain", "other"
};

const char *route_kind_name(StmtKind k)
{
    return (k >= 0 && k < STMT_KIND_COUNT) ? kind_names[k] : "other";
}

int route_kind_from_name(const char *name, StmtKind *out)
{
    for (int i = 0; i < STMT_KIND_COUNT; i++) {
        if (strcmp(kind_names[i], name) == 0) {
            *out = (StmtKind)i;
            return 0;
        }
    }
    return -1;
}

/* Node type -> kind for the statements that are not plain DDL. */
static const struct { const char *node; StmtKind kind; const char *tag; } node_kinds[] = {
    { "SelectStmt", STMT_SELECT, "SELECT" },
    { "InsertStmt", STMT_INSERT, "INSERT" },
    { "UpdateStmt", STMT_UPDATE, "UPDATE" },
    { "DeleteStmt", STMT_DELETE, "DELETE" },
    { "MergeStmt", STMT_MERGE, "MERGE" },
    { "CopyStmt", STMT_COPY, "COPY" },
    { "TransactionStmt", STMT_TRANSACTION, "BEGIN" },
    { "VariableSetStmt", STMT_SET, "SET" },
    { "VariableShowStmt", STMT_SHOW, "SHOW" },
    { "CallStmt", STMT_CALL, "CALL" },
    { "ExplainStmt", STMT_EXPLAIN, "EXPLAIN" },
    { "DoStmt", STMT_UTILITY, "DO" },
    { "PrepareStmt", STMT_UTILITY, "PREPARE" },
    { "ExecuteStmt", STMT_UTILITY, "EXECUTE" },
    { "DeallocateStmt", STMT_UTILITY, "DEALLOCATE" },
    { "DiscardStmt", STMT_UTILITY, "DISCARD" },
    { "ListenStmt", STMT_UTILITY, "LISTEN" },
    { "UnlistenStmt", STMT_UTILITY, "UNLISTEN" },
    { "NotifyStmt", STMT_UTILITY, "NOTIFY" },
    { "LockStmt", STMT_UTILITY, "LOCK TABLE" },
    { "VacuumStmt", STMT_UTILITY, "VACUUM" },
    { "CheckPointStmt", STMT_UTILITY, "CHECKPOINT" },
    { "DeclareCursorStmt", STMT_UTILITY, "DECLARE CURSOR" },
    { "FetchStmt", STMT_UTILITY, "FETCH" },
    { "ClosePortalStmt", STMT_UTILITY, "CLOSE CURSOR" },
    { "ConstraintsSetStmt", STMT_UTILITY, "SET CONSTRAINTS" },
    { "LoadStmt", STMT_UTILITY, "LOAD" },
    { "ReindexStmt", STMT_UTILITY, "REINDEX" },
    { "ClusterStmt", STMT_UTILITY, "CLUSTER" },
    { "VariableResetStmt", STMT_SET, "RESET" },
    { "CreateTableAsStmt", STMT_DDL, "CREATE TABLE AS" },
    { "CreateStmt", STMT_DDL, "CREATE TABLE" },
    { "ViewStmt", STMT_DDL, "CREATE VIEW" },
    { "IndexStmt", STMT_DDL, "CREATE INDEX" },
    { "CreateSchemaStmt", STMT_DDL, "CREATE SCHEMA" },
    { "CreateFunctionStmt", STMT_DDL, "CREATE FUNCTION" },
    { "CreateSeqStmt", STMT_DDL, "CREATE SEQUENCE" },
    { "CreatedbStmt", STMT_DDL, "CREATE DATABASE" },
    { "CreateRoleStmt", STMT_DDL, "CREATE ROLE" },
    { "CreateExtensionStmt", STMT_DDL, "CREATE EXTENSION" },
    { "AlterTableStmt", STMT_DDL, "ALTER TABLE" },
    { "RenameStmt", STMT_DDL, "ALTER" },
    { "DropStmt", STMT_DDL, "DROP" },
    { "TruncateStmt", STMT_DDL, "TRUNCATE TABLE" },
    { "GrantStmt", STMT_DDL, "GRANT" },
    { "CommentStmt", STMT_DDL, "COMMENT" },
};

static void classify_node(const char *node, StmtKind *kind, const char **tag)
{
    for (size_t i = 0; i < sizeof node_kinds / sizeof node_kinds[0]; i++) {
        if (strcmp(node_kinds[i].node, node) == 0) {
            *kind = node_kinds[i].kind;
            *tag = node_kinds[i].tag;
            return;
        }
    }
    /* Everything else that creates, alters or drops an object is DDL; the
     * grammar's node names say so reliably. */
    if (strncmp(node, "Create", 6) == 0 || strncmp(node, "Alter", 5) == 0 ||
        strncmp(node, "Drop", 4) == 0 || strncmp(node, "Define", 6) == 0) {
        *kind = STMT_DDL;
        *tag = NULL;
        return;
    }
    *kind = STMT_UTILITY;
    *tag = NULL;
}

const char *route_stmt_tag(const RouteStmt *s)
{
    StmtKind k;
    const char *tag;
    /* forms whose tag is not their node's (a DECLARE's relations are its
     * query's, collected like any statement's, so tables route it) */
    if (!strcmp(s->node_type, "FetchStmt") && json_is_true(json_object_get(s->node, "ismove")))
        return "MOVE";
    if (!strcmp(s->node_type, "ClosePortalStmt") && !json_object_get(s->node, "portalname"))
        return "CLOSE CURSOR ALL";
    classify_node(s->node_type, &k, &tag);
    if (tag) return tag;
    return k == STMT_DDL ? "DDL" : "UTILITY";
}

typedef struct RelWalk {
    RouteRel *rels;
    size_t n, cap;
    char **ctes;
    size_t n_ctes, cap_ctes;
} RelWalk;

static void add_rel(RelWalk *w, const char *schema, const char *name, int location)
{
    for (size_t i = 0; i < w->n; i++) {
        if (strcmp(w->rels[i].name, name) == 0 &&
            ((!schema && !w->rels[i].schema) ||
             (schema && w->rels[i].schema && strcmp(schema, w->rels[i].schema) == 0)))
            return;
    }
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 4;
        w->rels = xrealloc(w->rels, w->cap * sizeof *w->rels);
    }
    w->rels[w->n].schema = schema ? xstrdup(schema) : NULL;
    w->rels[w->n].name = xstrdup(name);
    w->rels[w->n].location = location;
    w->n++;
}

static void add_cte(RelWalk *w, const char *name)
{
    if (w->n_ctes == w->cap_ctes) {
        w->cap_ctes = w->cap_ctes ? w->cap_ctes * 2 : 4;
        w->ctes = xrealloc(w->ctes, w->cap_ctes * sizeof *w->ctes);
    }
    w->ctes[w->n_ctes++] = xstrdup(name);
}

void route_json_walk(json_t *n, RouteJsonVisit visit, void *ctx)
{
    if (json_is_array(n)) {
        size_t i;
        json_t *v;
        json_array_foreach(n, i, v) route_json_walk(v, visit, ctx);
        return;
    }
    if (!json_is_object(n)) return;
    const char *key;
    json_t *v;
    json_object_foreach(n, key, v) {
        visit(key, v, ctx);
        route_json_walk(v, visit, ctx);
    }
}

static void visit_rels(const char *key, json_t *v, void *ctx)
{
    RelWalk *w = ctx;
    /* RangeVars appear wrapped ({"RangeVar": {...}}) where the grammar
     * allows any node, and bare where the field can only be a RangeVar
     * (InsertStmt.relation, IntoClause.rel, ViewStmt.view, ...); a bare one
     * is known by its fields */
    if (json_is_object(v) && json_is_string(json_object_get(v, "relname")) &&
        json_object_get(v, "relpersistence")) {
        const char *rel = json_string_value(json_object_get(v, "relname"));
        const char *sch = json_string_value(json_object_get(v, "schemaname"));
        json_t *loc = json_object_get(v, "location");
        add_rel(w, sch, rel, json_is_integer(loc) ? (int)json_integer_value(loc) : -1);
    } else if (strcmp(key, "CommonTableExpr") == 0 && json_is_object(v)) {
        const char *name = json_string_value(json_object_get(v, "ctename"));
        if (name) add_cte(w, name);
    }
}

static void collect_rels(json_t *node, RouteStmt *s)
{
    RelWalk w = {0};
    route_json_walk(node, visit_rels, &w);
    size_t keep = 0;
    for (size_t i = 0; i < w.n; i++) {
        int is_cte = 0;
        if (!w.rels[i].schema) {
            for (size_t j = 0; j < w.n_ctes; j++)
                if (strcmp(w.ctes[j], w.rels[i].name) == 0) is_cte = 1;
        }
        if (is_cte) {
            free(w.rels[i].name);
            continue;
        }
        w.rels[keep++] = w.rels[i];
    }
    for (size_t j = 0; j < w.n_ctes; j++) free(w.ctes[j]);
    free(w.ctes);
    s->rels = w.rels;
    s->n_rels = keep;
}

/* libpg_query keeps a memory context per thread, created on first use;
 * pg_query_exit crashes when it was never created. */
static __thread int parser_used;

static void cache_clear(void);

void route_cache_exit(void)
{
    cache_clear();
}

void route_parser_exit(void)
{
    cache_clear();
    if (parser_used) pg_query_exit();
    parser_used = 0;
}

static int parse_uncached(const char *sql, RouteParse *out, RqError *err)
{
    memset(out, 0, sizeof *out);
    parser_used = 1;
    PgQueryParseResult r = pg_query_parse(sql);
    if (r.error) {
        rq_error_set(err, "42601", "%s", r.error->message);
        /* already a 1-based character position, as Postgres reports it */
        if (r.error->cursorpos > 0) err->position = r.error->cursorpos;
        pg_query_free_parse_result(r);
        return -1;
    }
    json_error_t jerr;
    out->root = json_loads(r.parse_tree, 0, &jerr);
    pg_query_free_parse_result(r);
    if (!out->root) {
        rq_error_set(err, "XX000", "could not read the parse tree: %s", jerr.text);
        return -1;
    }
    json_t *stmts = json_object_get(out->root, "stmts");
    size_t n = json_array_size(stmts);
    out->stmts = xcalloc(n ? n : 1, sizeof *out->stmts);
    size_t sqllen = strlen(sql);
    for (size_t i = 0; i < n; i++) {
        json_t *raw = json_array_get(stmts, i);
        json_t *wrap = json_object_get(raw, "stmt");
        size_t loc = (size_t)json_integer_value(json_object_get(raw, "stmt_location"));
        size_t len = (size_t)json_integer_value(json_object_get(raw, "stmt_len"));
        if (loc > sqllen) loc = sqllen;
        if (len == 0 || loc + len > sqllen) len = sqllen - loc;
        RouteStmt *s = &out->stmts[out->n++];
        /* trim the whitespace the grammar leaves around a statement */
        while (len && isspace((unsigned char)sql[loc])) { loc++; len--; }
        while (len && isspace((unsigned char)sql[loc + len - 1])) len--;
        s->text = xstrndup(sql + loc, len);
        const char *key = NULL;
        json_t *node = NULL;
        if (json_is_object(wrap)) {
            void *it = json_object_iter(wrap);
            if (it) {
                key = json_object_iter_key(it);
                node = json_object_iter_value(it);
            }
        }
        if (!key) {
            s->node_type = "";
            s->kind = STMT_OTHER;
            continue;
        }
        s->node_type = key;
        s->node = node;
        const char *tag;
        classify_node(key, &s->kind, &tag);
        collect_rels(node, s);
    }
    return 0;
}

void route_parse_free(RouteParse *p)
{
    if (p->shared && --*p->shared > 0) {
        memset(p, 0, sizeof *p);
        return;
    }
    free(p->shared);
    for (size_t i = 0; i < p->n; i++) {
        RouteStmt *s = &p->stmts[i];
        free(s->text);
        for (size_t j = 0; j < s->n_rels; j++) {
            free(s->rels[j].schema);
            free(s->rels[j].name);
        }
        free(s->rels);
    }
    free(p->stmts);
    if (p->root) json_decref(p->root);
    memset(p, 0, sizeof *p);
}

/* ---- the classification cache ----
 *
 * Direct-mapped by a hash of the text: a lookup is one hash and one string
 * compare, and a colliding statement simply replaces the older one.  Entries
 * share their parse with every copy handed out (a reference count), so a
 * session keeping a prepared statement's parse keeps it alive after
 * eviction.  Per thread, because jansson's reference counts are not atomic
 * and only the loop thread classifies statements. */

#define CACHE_SLOTS 512
#define CACHE_MAX_TEXT 8192     /* longer statements are rarely repeated verbatim */

typedef struct CacheSlot {
    char *sql;
    RouteParse parse;
} CacheSlot;

static __thread CacheSlot *cache;
static __thread uint64_t cache_hits, cache_misses;

static void share(const RouteParse *from, RouteParse *to)
{
    *to = *from;
    (*to->shared)++;
}

int route_parse(const char *sql, RouteParse *out, RqError *err)
{
    size_t len;
    uint64_t h = rq_hash_str(RQ_HASH_INIT, sql, &len);
    if (len > CACHE_MAX_TEXT) return parse_uncached(sql, out, err);
    if (!cache) cache = xcalloc(CACHE_SLOTS, sizeof *cache);
    CacheSlot *slot = &cache[h % CACHE_SLOTS];
    if (slot->sql && !strcmp(slot->sql, sql)) {
        cache_hits++;
        share(&slot->parse, out);
        return 0;
    }
    cache_misses++;
    if (parse_uncached(sql, out, err) < 0) return -1;
    out->shared = xmalloc(sizeof *out->shared);
    *out->shared = 1;
    if (slot->sql) {
        free(slot->sql);
        route_parse_free(&slot->parse);
    }
    slot->sql = xstrdup(sql);
    share(out, &slot->parse);
    return 0;
}

void route_cache_stats(uint64_t *hits, uint64_t *misses)
{
    *hits = cache_hits;
    *misses = cache_misses;
}

static void cache_clear(void)
{
    if (!cache) return;
    for (size_t i = 0; i < CACHE_SLOTS; i++) {
        if (!cache[i].sql) continue;
        free(cache[i].sql);
        route_parse_free(&cache[i].parse);
    }
    free(cache);
    cache = NULL;
}
