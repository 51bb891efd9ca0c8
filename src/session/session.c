/*
 * The per-client protocol state machine (see include/riffq/session.h).
 *
 * Simple query: parse the whole string once, run the statements in order,
 * stop at the first error, then ReadyForQuery.  Extended query: Parse keeps a
 * Prepared (the parse tree and parameter types), Bind makes a Portal holding
 * text parameters and result formats, Execute runs the portal once and then
 * pages through its materialized result honouring the row limit.  After an
 * error, extended-protocol messages are discarded until Sync, as Postgres
 * does, so a pipelining client resynchronizes at a known point.
 *
 * Transaction status (I/T/E) is tracked here from the statements that run;
 * in state E only ROLLBACK, COMMIT (answered as ROLLBACK) and ROLLBACK TO are
 * accepted.
 */
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>
#include <string.h>
#include "riffq/hash.h"
#include "riffq/log.h"
#include "riffq/pgtypes.h"
#include "riffq/result.h"
#include "riffq/route.h"
#include "riffq/upstream.h"
#include "riffq/plugin.h"
#include "riffq/session.h"
#include "riffq/wire.h"
#include "local.h"
#include "session_int.h"
#include "settings.h"

/* ---- helpers ---- */

static void aborted_error(RqError *err)
{
    rq_error_set(err, "25P02",
                 "current transaction is aborted, commands ignored until end of transaction block");
}

static void send_error(Session *s, RqError *err)
{
    wire_error(s->out, err);
    if (s->xact == 'T') s->xact = 'E';
    rq_error_free(err);
}

static void send_warning(Session *s, const char *sqlstate, const char *msg)
{
    RqError w = {0};
    rq_error_set(&w, sqlstate, "%s", msg);
    w.severity = xstrdup("WARNING");
    wire_notice(s->out, &w);
    rq_error_free(&w);
}

static void ready(Session *s)
{
    sess_settings_report(&s->settings, s->out);
    wire_ready(s->out, s->xact);
}

static void prepared_unref(Prepared *p)
{
    if (--p->refs > 0) return;
    free(p->name);
    free(p->sql);
    route_parse_free(&p->parse);
    free(p->types);
    free(p->decl_types);
    free(p);
}

static Prepared *find_stmt(Session *s, const char *name)
{
    for (Prepared *p = s->stmts; p; p = p->next)
        if (!strcmp(p->name, name)) return p;
    return NULL;
}

static void drop_stmt(Session *s, const char *name)
{
    for (Prepared **pp = &s->stmts; *pp; pp = &(*pp)->next) {
        if (!strcmp((*pp)->name, name)) {
            Prepared *p = *pp;
            *pp = p->next;
            prepared_unref(p);
            return;
        }
    }
}

static void portal_free(Portal *p)
{
    if (p->pq) plug_query_free(p->pq);
    free(p->name);
    prepared_unref(p->ps);
    for (uint16_t i = 0; i < p->n_params; i++) free(p->params[i]);
    free(p->params);
    free(p->formats);
    free(p->cop);
    rq_result_free(&p->res);
    free(p);
}

static Portal *find_portal(Session *s, const char *name)
{
    for (Portal *p = s->portals; p; p = p->next)
        if (!strcmp(p->name, name)) return p;
    return NULL;
}

static void drop_portal(Session *s, const char *name)
{
    for (Portal **pp = &s->portals; *pp; pp = &(*pp)->next) {
        if (!strcmp((*pp)->name, name)) {
            Portal *p = *pp;
            *pp = p->next;
            portal_free(p);
            return;
        }
    }
}

static void drop_all_portals(Session *s)
{
    while (s->portals) {
        Portal *p = s->portals;
        s->portals = p->next;
        portal_free(p);
    }
}

static void drop_all_stmts(Session *s)
{
    while (s->stmts) {
        Prepared *p = s->stmts;
        s->stmts = p->next;
        prepared_unref(p);
    }
}

static void clear_savepoints(Session *s)
{
    for (size_t i = 0; i < s->n_savepoints; i++) free(s->savepoints[i]);
    free(s->savepoints);
    s->savepoints = NULL;
    s->n_savepoints = 0;
}

static void end_xact(Session *s, int commit)
{
    sess_settings_xact_end(&s->settings, commit);
    s->xact_target = (Target){ .kind = TARGET_LOCAL, .index = -1, .route = -1 };
    clear_savepoints(s);
    s->xact = 'I';
    cursor_xact_end(s, commit);
    /* portals live until their transaction ends, as in Postgres; not right
     * here, though: the portal running this COMMIT is still in use */
    s->drop_portals = 1;
}

static LocalCtx local_ctx(Session *s, const char *sql)
{
    return (LocalCtx){
        .env = s->env,
        .settings = &s->settings, .user = s->user, .database = s->database,
        .server_version = s->cfg->server_version, .pid = s->pid,
        .in_xact = s->xact != 'I', .sql = sql,
        .view = cursor_view, .view_ud = s,
    };
}

/* ---- transaction control ---- */

static int run_xact(Session *s, const RouteStmt *st, RqResult *res, RqError *err)
{
    const char *kind = json_string_value(json_object_get(st->node, "kind"));
    const char *sp = json_string_value(json_object_get(st->node, "savepoint_name"));
    int chain = json_is_true(json_object_get(st->node, "chain"));
    if (!kind) kind = "";

    if (!strcmp(kind, "TRANS_STMT_BEGIN") || !strcmp(kind, "TRANS_STMT_START")) {
        if (s->xact != 'I') {
            send_warning(s, "25001", "there is already a transaction in progress");
        } else {
            s->xact = 'T';
            s->xact_target = (Target){ .kind = TARGET_LOCAL, .index = -1, .route = -1 };
        }
        rq_result_set_tag(res, !strcmp(kind, "TRANS_STMT_BEGIN") ? "BEGIN" : "START TRANSACTION");
        return 0;
    }
    if (!strcmp(kind, "TRANS_STMT_COMMIT") || !strcmp(kind, "TRANS_STMT_ROLLBACK")) {
        int commit = !strcmp(kind, "TRANS_STMT_COMMIT");
        if (s->xact == 'I') {
            send_warning(s, "25P01", "there is no transaction in progress");
            rq_result_set_tag(res, commit ? "COMMIT" : "ROLLBACK");
            return 0;
        }
        /* COMMIT of a failed transaction rolls back, and says so */
        if (s->xact == 'E') commit = 0;
        rq_result_set_tag(res, commit ? "COMMIT" : "ROLLBACK");
        end_xact(s, commit);
        if (chain) s->xact = 'T';
        return 0;
    }
    if (!strcmp(kind, "TRANS_STMT_SAVEPOINT") || !strcmp(kind, "TRANS_STMT_RELEASE") ||
        !strcmp(kind, "TRANS_STMT_ROLLBACK_TO")) {
        const char *verb = !strcmp(kind, "TRANS_STMT_SAVEPOINT") ? "SAVEPOINT"
                         : !strcmp(kind, "TRANS_STMT_RELEASE") ? "RELEASE SAVEPOINT"
                         : "ROLLBACK TO SAVEPOINT";
        if (s->xact == 'I') {
            rq_error_set(err, "25P01", "%s can only be used in transaction blocks", verb);
            return -1;
        }
        if (!sp) sp = "";
        if (!strcmp(kind, "TRANS_STMT_SAVEPOINT")) {
            s->savepoints = xrealloc(s->savepoints, (s->n_savepoints + 1) * sizeof *s->savepoints);
            s->savepoints[s->n_savepoints++] = xstrdup(sp);
            rq_result_set_tag(res, "SAVEPOINT");
            return 0;
        }
        size_t i = s->n_savepoints;
        while (i > 0 && strcmp(s->savepoints[i - 1], sp) != 0) i--;
        if (i == 0) {
            rq_error_set(err, "3B001", "savepoint \"%s\" does not exist", sp);
            return -1;
        }
        /* RELEASE drops the savepoint and newer ones; ROLLBACK TO keeps it */
        size_t keep = !strcmp(kind, "TRANS_STMT_RELEASE") ? i - 1 : i;
        while (s->n_savepoints > keep) free(s->savepoints[--s->n_savepoints]);
        cursor_savepoint_end(s, keep, !strcmp(kind, "TRANS_STMT_ROLLBACK_TO"));
        if (!strcmp(kind, "TRANS_STMT_ROLLBACK_TO")) s->xact = 'T';
        rq_result_set_tag(res, !strcmp(kind, "TRANS_STMT_RELEASE") ? "RELEASE" : "ROLLBACK");
        return 0;
    }
    rq_error_set(err, "0A000", "two-phase commit is not supported by riffq");
    return -1;
}

static int xact_allowed_when_failed(const RouteStmt *st)
{
    if (st->kind != STMT_TRANSACTION) return 0;
    const char *kind = json_string_value(json_object_get(st->node, "kind"));
    return kind && (!strcmp(kind, "TRANS_STMT_COMMIT") || !strcmp(kind, "TRANS_STMT_ROLLBACK") ||
                    !strcmp(kind, "TRANS_STMT_ROLLBACK_TO"));
}

static int run_utility(Session *s, const RouteStmt *st, RqResult *res, RqError *err)
{
    if (!strcmp(st->node_type, "DiscardStmt")) {
        const char *target = json_string_value(json_object_get(st->node, "target"));
        if (s->xact != 'I') {
            rq_error_set(err, "25001", "DISCARD ALL cannot run inside a transaction block");
            return -1;
        }
        if (target && !strcmp(target, "DISCARD_ALL")) {
            sess_settings_reset_all(&s->settings, 0);
            drop_all_portals(s);
            drop_all_stmts(s);
            cursor_close_all(s);
            rq_result_set_tag(res, "DISCARD ALL");
        } else {
            /* plans, sequences and temp tables: the gateway holds none */
            rq_result_set_tag(res, target && !strcmp(target, "DISCARD_PLANS") ? "DISCARD PLANS"
                                 : target && !strcmp(target, "DISCARD_TEMP") ? "DISCARD TEMP"
                                 : "DISCARD SEQUENCES");
        }
        return 0;
    }
    if (!strcmp(st->node_type, "DeallocateStmt")) {
        const char *name = json_string_value(json_object_get(st->node, "name"));
        if (!name) {
            drop_all_stmts(s);
            rq_result_set_tag(res, "DEALLOCATE ALL");
            return 0;
        }
        if (!find_stmt(s, name)) {
            rq_error_set(err, "26000", "prepared statement \"%s\" does not exist", name);
            return -1;
        }
        drop_stmt(s, name);
        rq_result_set_tag(res, "DEALLOCATE");
        return 0;
    }
    return cursor_run_local(s, st, res, err);
}

/* Whether a statement can be answered at all, decided when it is parsed. */
static int stmt_answerable(Session *s, const RouteStmt *st, const char *sql, RqError *err)
{
    if (st->kind == STMT_TRANSACTION || local_handles(st)) return 1;
    if (!strcmp(st->node_type, "DiscardStmt") || !strcmp(st->node_type, "DeallocateStmt")) return 1;
    /* FETCH/CLOSE of a cursor the gateway does not hold: 34000 when run */
    if (!strcmp(st->node_type, "FetchStmt") || !strcmp(st->node_type, "ClosePortalStmt")) return 1;
    LocalCtx ctx = local_ctx(s, sql);
    local_no_route(&ctx, st, err);
    return 0;
}

/* Run one statement into res.  params NULL for the simple protocol. */
static int exec_stmt(Session *s, const RouteStmt *st, const char *sql,
                     const char *const *params, uint16_t n_params, const uint32_t *types,
                     RqResult *res, RqError *err)
{
    if (s->xact == 'E' && !xact_allowed_when_failed(st)) {
        aborted_error(err);
        return -1;
    }
    if (st->kind == STMT_TRANSACTION) return run_xact(s, st, res, err);
    int rc = run_utility(s, st, res, err);
    if (rc <= 0) return rc;
    if (!local_handles(st)) {
        LocalCtx ctx = local_ctx(s, sql);
        local_no_route(&ctx, st, err);
        return -1;
    }
    LocalCtx ctx = local_ctx(s, sql);
    /* local_run treats params == NULL as describe-only; an execution
     * without parameters passes an empty (non-NULL) array */
    static const char *const no_params[1] = { NULL };
    return local_run(&ctx, st, params ? params : no_params, n_params, types, res, err);
}

static void complete(Session *s, const RqResult *res, size_t rows)
{
    if (res->tag && !strcmp(res->tag, "SELECT")) {
        char tag[40];
        snprintf(tag, sizeof tag, "SELECT %zu", rows);
        wire_command_complete(s->out, tag);
    } else {
        wire_command_complete(s->out, res->tag ? res->tag : "");
    }
}

/* ---- routing ---- */

/* The route file's choice for a statement (st NULL: not parsed). */
static int decide_route(Session *s, const RouteStmt *st, Target *t, RqError *err)
{
    *t = (Target){ .kind = TARGET_LOCAL, .index = -1, .route = -1 };
    RouteTable *rt = s->env->routes;
    if (!rt || s->cfg->n_routes == 0) return 0;
    RouteClient c = {
        .user = s->user, .database = s->database,
        .application_name = sess_settings_value(&s->settings, "application_name"),
        .addr = s->has_addr ? (const struct sockaddr *)&s->addr : NULL,
        .listen = s->listen,
    };
    int idx = route_table_match(rt, &c, st, err, NULL);
    if (idx == -2) return -1;
    if (idx < 0) return 0;   /* no route: the gateway's own answers, or the no-route error */
    const CfgRoute *r = route_table_route(rt, idx);
    t->route = idx;
    t->kind = r->target;
    /* the loader checked that the named upstream or plugin exists */
    if (r->target == TARGET_UPSTREAM)
        t->index = (int)(cfg_find_upstream(s->cfg, r->target_name) - s->cfg->upstreams);
    else if (r->target == TARGET_PLUGIN)
        t->index = (int)(cfg_find_plugin(s->cfg, r->target_name) - s->cfg->plugins);
    if (r->target == TARGET_REJECT) {
        rq_error_set(err, r->sqlstate[0] ? r->sqlstate : "42501", "%s",
                     r->message ? r->message : "statement rejected by the route file");
        rq_error_detail(err, "Rejected by route \"%s\".", r->name);
        return -1;
    }
    if (r->target == TARGET_PLUGIN && !s->env->plugins) {
        rq_error_set(err, "58000", "route \"%s\" sends this statement to plugin \"%s\", but the plugin engine is not running",
                     r->name, r->target_name);
        rq_error_hint(err, "See the gateway's log for why Python could not start.");
        return -1;
    }
    return 0;
}

/* Pick the target of a statement (st NULL: not parsed): the route file's
 * choice, then the gateway's own cursors claim theirs. */
static int decide(Session *s, const RouteStmt *st, Target *t, RqError *err)
{
    if (decide_route(s, st, t, err) < 0) return -1;
    return st ? cursor_route(s, st, t, err) : 0;
}

static int same_target(const Target *a, const Target *b)
{
    return a->kind == b->kind && a->index == b->index;
}

/* A transaction stays on the target it started on. */
static int check_sticky(Session *s, const Target *t, RqError *err)
{
    if (s->xact == 'I') return 0;
    if (same_target(&s->xact_target, t)) return 0;
    /* a cursor the gateway holds is read wherever the transaction went */
    if (t->cursor == CURSOR_USE) return 0;
    if (s->xact_target.kind == TARGET_LOCAL && t->kind == TARGET_UPSTREAM && s->xact == 'T') {
        /* BEGIN was answered here; open the transaction where it will run */
        s->relay.need_begin = 1;
        s->xact_target = *t;
        return 0;
    }
    if (t->kind == TARGET_LOCAL) return 0;      /* SET/SHOW and friends stay local */
    /* plugins are not transactional: they may answer inside a transaction
     * the gateway itself holds, but not inside an upstream's */
    if (t->kind == TARGET_PLUGIN && s->xact_target.kind == TARGET_LOCAL) return 0;
    rq_error_set(err, "25000", "statement routed to %s \"%s\" inside a transaction running on %s",
                 t->kind == TARGET_UPSTREAM ? "upstream" : t->kind == TARGET_PLUGIN ? "plugin" : "target",
                 t->kind == TARGET_UPSTREAM ? s->cfg->upstreams[t->index].name
                 : t->kind == TARGET_PLUGIN ? s->cfg->plugins[t->index].name : "local",
                 s->xact_target.kind == TARGET_UPSTREAM ? s->cfg->upstreams[s->xact_target.index].name
                                                        : "the gateway");
    rq_error_hint(err, "Finish the transaction first: a transaction cannot span two targets.");
    return -1;
}

static int needs_parse(const Session *s)
{
    return !s->env->routes || route_table_needs_parse(s->env->routes);
}

/* Local output must not overtake answers still due from an upstream. */
static SessStatus wait_for_relay(Session *s)
{
    relay_flush_server(s);
    return SESS_RETRY;
}

/* ---- plugin statements ---- */

void sess_plug_error(Session *s, PlugQuery *q, RqError *e)
{
    const RqError *pe = plug_query_error(q);
    if (s->plug.timed_out && pe && !strcmp(pe->sqlstate, "57014")) {
        rq_error_set(e, "57014", "canceling statement due to statement timeout");
        return;
    }
    rq_error_set(e, pe && pe->sqlstate[0] ? pe->sqlstate : "XX000", "%s",
                 pe && pe->message ? pe->message : "plugin failed");
    if (pe && pe->detail) rq_error_detail(e, "%s", pe->detail);
    if (pe && pe->hint) rq_error_hint(e, "%s", pe->hint);
}

static void plug_error(Session *s, PlugQuery *q)
{
    RqError e = {0};
    sess_plug_error(s, q, &e);
    send_error(s, &e);
}

/* The handler call the running plugin statement waits on. */
static PlugQuery *plug_run_query(Session *s)
{
    PlugRun *pr = &s->plug;
    if (pr->is_cursor) return cursor_running_query(s);
    return pr->portal ? pr->portal->pq : pr->q;
}

static void plug_tag(Session *s, PlugQuery *q, size_t rows)
{
    const char *tag = plug_query_tag(q);
    /* a row count in the tag counts the rows of this Execute, as in Postgres */
    if (!tag || !strncmp(tag, "SELECT", 6)) {
        char t[40];
        snprintf(t, sizeof t, "SELECT %zu", rows);
        wire_command_complete(s->out, t);
    } else {
        wire_command_complete(s->out, tag);
    }
}

static void on_plug_ready(void *ud);

/* statement_timeout in milliseconds, from the session setting ("5s", "250",
 * "1min", ...), as Postgres reads it; 0 = none. */
static uint64_t statement_timeout_ms(const Session *s)
{
    const char *v = sess_settings_value(&s->settings, "statement_timeout");
    if (!v) return 0;
    char *end;
    double n = strtod(v, &end);
    while (*end == ' ') end++;
    double mult = !*end || !strcmp(end, "ms") ? 1 : !strcmp(end, "s") ? 1000
                : !strcmp(end, "min") ? 60000 : !strcmp(end, "h") ? 3600000
                : !strcmp(end, "d") ? 86400000 : !strcmp(end, "us") ? 0.001 : 1;
    return n > 0 ? (uint64_t)(n * mult + 0.5) : 0;
}

static void on_statement_timeout(uv_timer_t *t)
{
    Session *s = t->data;
    PlugRun *pr = &s->plug;
    PlugQuery *q = plug_run_query(s);
    if (!pr->active || !q) return;
    pr->timed_out = 1;
    plug_query_cancel(q);
}

static void free_closed_timer(uv_handle_t *h)
{
    free(h);
}

static void arm_statement_timeout(Session *s)
{
    uint64_t ms = statement_timeout_ms(s);
    if (!ms || !s->env->loop) return;
    if (!s->plug.timer) {
        s->plug.timer = xmalloc(sizeof *s->plug.timer);
        uv_timer_init(s->env->loop, s->plug.timer);
        s->plug.timer->data = s;
    }
    uv_timer_start(s->plug.timer, on_statement_timeout, ms, 0);
}

static void disarm_statement_timeout(Session *s)
{
    if (s->plug.timer) uv_timer_stop(s->plug.timer);
}

static PlugQuery *plug_start(Session *s, const Target *t, const char *sql, Portal *portal,
                             const Prepared *described)
{
    PlugCtx ctx = {
        .user = s->user, .database = s->database,
        .application_name = sess_settings_value(&s->settings, "application_name"),
        .route = t->route >= 0 ? s->cfg->routes[t->route].name : "",
        .session_id = s->pid,
        .extended = portal != NULL || described != NULL,
    };
    char ip[INET6_ADDRSTRLEN];
    if (s->has_addr) plug_ctx_set_peer(&ctx, s->client, ip);
    if (described) {
        /* Describe of a statement: no values yet, so every parameter is
         * NULL; handlers see ctx["describe"] and may answer columns only */
        const char **nulls = xcalloc(described->n_params ? described->n_params : 1, sizeof *nulls);
        PlugQuery *q = plug_query_start(s->env->plugins, s->cfg->plugins[t->index].name, sql,
                                        nulls, described->types, described->n_params, NULL, 0,
                                        &ctx, 1, on_plug_ready, s);
        free(nulls);
        return q;
    }
    const Prepared *ps = portal ? portal->ps : NULL;
    return plug_query_start(s->env->plugins, s->cfg->plugins[t->index].name, sql,
                            portal ? (const char *const *)portal->params : NULL,
                            ps ? ps->types : NULL, portal ? portal->n_params : 0,
                            portal ? portal->formats : NULL, portal ? portal->n_formats : 0,
                            &ctx, 0, on_plug_ready, s);
}

PlugQuery *sess_plug_start(Session *s, const Target *t, const char *sql, Portal *portal)
{
    return plug_start(s, t, sql, portal, NULL);
}

/* One statement the gateway answers itself, answered in full.  -1: it
 * failed, and its error is sent. */
static int run_local_stmt(Session *s, const RouteStmt *st, const char *sql)
{
    RqError err = {0};
    RqResult res;
    rq_result_init(&res);
    int rc = exec_stmt(s, st, sql, NULL, 0, NULL, &res, &err);
    if (rc < 0) {
        send_error(s, &err);
    } else {
        if (res.returns_rows) {
            rq_result_describe(&res, NULL, 0, s->out);
            rq_result_rows(&res, 0, res.n_rows, NULL, 0, s->out, &err);
        }
        complete(s, &res, res.n_rows);
    }
    rq_result_free(&res);
    return rc < 0 ? -1 : 0;
}

/* The simple Query is answered (or one of its statements failed). */
static void plug_simple_end(Session *s)
{
    PlugRun *pr = &s->plug;
    route_parse_free(&pr->parse);
    free(pr->targets);
    pr->targets = NULL;
    free(pr->sql);
    pr->sql = NULL;
    pr->active = 0;
    /* outside a block, a query string is a transaction of its own */
    if (s->xact == 'I') cursor_sweep(s);
    ready(s);
}

/* Start the next statement of a simple Query, or finish it.  1 = finished.
 * The gateway's own answers (SET, BEGIN, COMMIT...) between plugin
 * statements run right here. */
static int plug_simple_next(Session *s)
{
    PlugRun *pr = &s->plug;
    while (pr->next_stmt < pr->parse.n) {
        size_t i = pr->next_stmt++;
        const RouteStmt *st = &pr->parse.stmts[i];
        const Target *t = pr->targets ? &pr->targets[i] : &pr->target;
        pr->need_rowdesc = 1;
        pr->rows = 0;
        pr->is_cursor = 0;
        pr->cursor = NULL;
        if (t->kind != TARGET_PLUGIN) {
            if (run_local_stmt(s, st, pr->sql) < 0) break;
            continue;
        }
        if (t->cursor) {
            cursor_begin(s, st, pr->parse.n == 1 && pr->sql ? pr->sql : st->text);
        } else if (st->kind == STMT_COPY && st->node) {
            /* COPY (query) TO STDOUT: the plugin answers the query */
            char *inner;
            RqError err = {0};
            copyout_free(pr->copy);
            if (copyout_prepare(st, &inner, &pr->copy, &err) < 0) {
                send_error(s, &err);
                break;
            }
            pr->q = plug_start(s, t, inner, NULL, NULL);
            free(inner);
        } else {
            pr->q = plug_start(s, t, st->text, NULL, NULL);
        }
        arm_statement_timeout(s);
        return 0;
    }
    plug_simple_end(s);
    return 1;
}

/* The running plugin statement failed; its error is sent. */
static void plug_run_failed(Session *s)
{
    PlugRun *pr = &s->plug;
    pr->active = 0;
    if (pr->simple) plug_simple_end(s);
    else s->skip_to_sync = 1;
}

/* Move the running plugin statement forward as far as it can go now.
 * Returns 1 when the client message it answers is fully answered. */
#define PLUG_FLUSH_BYTES (256 * 1024)

static int plug_pump(Session *s)
{
    PlugRun *pr = &s->plug;
    while (pr->active) {
        if (pr->is_cursor) {
            RqError err = {0};
            int rc = cursor_pump(s, &err);
            if (rc == 0) return 0;
            if (rc < 0) {
                send_error(s, &err);
                plug_run_failed(s);
                return 1;
            }
            if (!pr->simple) {
                pr->active = 0;
                return 1;
            }
            if (plug_simple_next(s)) return 1;
            continue;
        }
        PlugQuery *q = pr->portal ? pr->portal->pq : pr->q;
        PlugState st = plug_query_state(q);
        if (st == PLUG_RUNNING) return 0;
        if (st == PLUG_FAILED) {
            copyout_free(pr->copy);
            pr->copy = NULL;
            plug_error(s, q);
            if (pr->portal) {
                plug_query_free(pr->portal->pq);
                pr->portal->pq = NULL;
                pr->portal->ran = 1;
            } else {
                plug_query_free(pr->q);
                pr->q = NULL;
            }
            plug_run_failed(s);
            return 1;
        }
        const RqResult *cols = plug_query_columns(q);
        if (pr->describe) {
            if (cols->returns_rows)
                rq_result_describe(cols, pr->portal ? pr->portal->formats : NULL,
                                   pr->portal ? pr->portal->n_formats : 0, s->out);
            else
                wire_simple(s->out, 'n');
            if (!pr->portal) {
                plug_query_free(pr->q);
                pr->q = NULL;
            }
            pr->active = 0;
            return 1;
        }
        if (pr->simple && pr->need_rowdesc) {
            if (pr->copy) copyout_begin(pr->copy, cols, s->out);
            else if (cols->returns_rows) rq_result_describe(cols, NULL, 0, s->out);
            pr->need_rowdesc = 0;
        }
        /* Small answers go out in one write with their CommandComplete and
         * ReadyForQuery; a large one is written as it comes, so that only
         * what the socket refuses counts as queued below.  (Output that was
         * written at once never calls back: blocking on it would wait for
         * a drain that is not coming.) */
        if (s->out->len >= PLUG_FLUSH_BYTES) s->io.flush(s->io.ctx);
        if (s->io.queued(s->io.ctx) > 1024 * 1024) {
            /* slow client: the next batch waits until its output drains */
            pr->blocked = 1;
            return 0;
        }
        size_t want = pr->max_rows > 0 ? (size_t)pr->max_rows - pr->rows : 0;
        size_t n;
        if (pr->copy) {
            Buf rows;
            buf_init(&rows);
            n = plug_query_fetch(q, want, &rows);
            copyout_rows(pr->copy, (const uint8_t *)rows.data, rows.len, s->out);
            buf_free(&rows);
        } else {
            n = plug_query_fetch(q, want, s->out);
        }
        pr->rows += n;
        if (pr->max_rows > 0 && pr->rows == (size_t)pr->max_rows) {
            wire_simple(s->out, 's');
            pr->active = 0;
            return 1;
        }
        if (!plug_query_finished(q)) {
            if (n == 0) return 0;
            continue;
        }
        if (pr->copy) {
            copyout_end(pr->copy, s->out);
            copyout_free(pr->copy);
            pr->copy = NULL;
        } else {
            plug_tag(s, q, pr->rows);
        }
        if (pr->portal) {
            plug_query_free(pr->portal->pq);
            pr->portal->pq = NULL;
            pr->portal->ran = 1;
            pr->active = 0;
            return 1;
        }
        plug_query_free(pr->q);
        pr->q = NULL;
        if (!pr->simple) {
            pr->active = 0;
            return 1;
        }
        if (plug_simple_next(s)) return 1;
    }
    return 1;
}

static void on_plug_ready(void *ud)
{
    Session *s = ud;
    if (s->plug.blocked || !s->plug.active) return;    /* sess_output_drained pumps */
    if (plug_pump(s)) {
        disarm_statement_timeout(s);
        sess_done_waiting(s);
    }
    s->io.flush(s->io.ctx);
}

static SessStatus plug_wait_or_done(Session *s)
{
    if (!plug_pump(s)) return SESS_WAIT;
    disarm_statement_timeout(s);
    return SESS_OK;
}

/* A fresh PlugRun for the next plugin statement; the timer handle stays. */
static void plug_run_reset(Session *s)
{
    copyout_free(s->plug.copy);
    uv_timer_t *timer = s->plug.timer;
    memset(&s->plug, 0, sizeof s->plug);
    s->plug.timer = timer;
}

/* A statement libpg_query could not parse, as a one-statement RouteParse
 * of kind "other", for a plugin that routes take it to. */
static void unparsed_statement(const char *sql, RouteParse *out)
{
    memset(out, 0, sizeof *out);
    out->stmts = xcalloc(1, sizeof *out->stmts);
    out->n = 1;
    out->stmts[0].kind = STMT_OTHER;
    out->stmts[0].node_type = "";
    out->stmts[0].text = xstrdup(sql);
}

/* The highest $n in sql outside '...' and "...".  Comments and dollar
 * quotes are not recognized: the text is in the plugin's own dialect, and
 * a count that comes out too high only makes Bind stricter. */
static uint16_t text_param_count(const char *sql)
{
    unsigned maxn = 0;
    char quote = 0;
    for (const char *c = sql; *c; c++) {
        if (quote) {
            if (*c == quote) quote = 0;
        } else if (*c == '\'' || *c == '"') {
            quote = *c;
        } else if (*c == '$' && c[1] >= '1' && c[1] <= '9') {
            unsigned n = 0;
            while (c[1] >= '0' && c[1] <= '9' && n <= WIRE_MAX_PARAMS) n = n * 10 + (unsigned)(*++c - '0');
            if (n <= WIRE_MAX_PARAMS && n > maxn) maxn = n;
        }
    }
    return (uint16_t)maxn;
}

/* targets: each statement's (owned from here on), or NULL: all go to t. */
static SessStatus plug_simple_query(Session *s, RouteParse *parse, const Target *t,
                                    Target *targets, const char *sql)
{
    PlugRun *pr = &s->plug;
    plug_run_reset(s);
    pr->parse = *parse;
    memset(parse, 0, sizeof *parse);
    pr->target = *t;
    pr->targets = targets;
    pr->sql = xstrdup(sql);
    pr->simple = 1;
    pr->active = 1;
    if (pr->parse.n == 0) {
        wire_simple(s->out, 'I');
    }
    if (plug_simple_next(s)) return SESS_OK;
    /* a cursor statement may be answered at once */
    return plug_wait_or_done(s);
}

static SessStatus plug_execute(Session *s, Portal *p, int32_t max_rows)
{
    PlugRun *pr = &s->plug;
    if (p->ps->target.cursor) {
        plug_run_reset(s);
        pr->portal = p;
        pr->target = p->ps->target;
        pr->max_rows = max_rows;
        pr->active = 1;
        cursor_begin(s, &p->ps->parse.stmts[0], p->ps->sql);
        arm_statement_timeout(s);
        return plug_wait_or_done(s);
    }
    if (!p->pq) {
        if (p->ran) {
            /* a completed portal has nothing more to give */
            wire_command_complete(s->out, "SELECT 0");
            return SESS_OK;
        }
        p->pq = plug_start(s, &p->ps->target, p->ps->sql, p, NULL);
    }
    plug_run_reset(s);
    pr->portal = p;
    pr->target = p->ps->target;
    pr->max_rows = max_rows;
    pr->active = 1;
    arm_statement_timeout(s);
    return plug_wait_or_done(s);
}

static SessStatus plug_describe(Session *s, Prepared *ps, Portal *p)
{
    PlugRun *pr = &s->plug;
    plug_run_reset(s);
    pr->target = ps->target;
    pr->active = 1;
    arm_statement_timeout(s);
    if (p) {
        /* the portal's real run starts now and is kept for its Execute */
        if (!p->pq && !p->ran) p->pq = plug_start(s, &ps->target, ps->sql, p, NULL);
        if (!p->pq) {
            wire_simple(s->out, 'n');
            pr->active = 0;
            return SESS_OK;
        }
        pr->portal = p;
        pr->describe = 'P';
    } else {
        pr->q = plug_start(s, &ps->target, ps->sql, NULL, ps);
        pr->describe = 'S';
    }
    return plug_wait_or_done(s);
}

/* ---- simple query ---- */

static SessStatus relay_query(Session *s, const Target *t, const uint8_t *body, size_t len, const char *sql)
{
    SessStatus st = relay_message_routed(s, t->index, t->route, 'Q', body, len, NULL);
    if (st == SESS_OK) relay_note_query(s, sql);
    return st;
}

static void run_local_query(Session *s, const char *sql, RouteParse *parse)
{
    if (parse->n == 0) wire_simple(s->out, 'I');
    for (size_t i = 0; i < parse->n; i++)
        if (run_local_stmt(s, &parse->stmts[i], sql) < 0) break;
    ready(s);
}

/* Statements of one query string run together when they go to the same
 * upstream, or all to the gateway: its own answers, plugins and cursors
 * one after another. */
static int share_string(const Target *a, const Target *b)
{
    if (same_target(a, b)) return 1;
    return (a->kind == TARGET_LOCAL || a->kind == TARGET_PLUGIN) &&
           (b->kind == TARGET_LOCAL || b->kind == TARGET_PLUGIN);
}

static SessStatus handle_query(Session *s, const uint8_t *body, size_t len)
{
    RouteParse parse;
    RqError err = {0};
    Target t;
    const char *sql;
    if (wire_decode_query(body, len, &sql, &err) < 0) {
        rq_error_fatal(&err);
        send_error(s, &err);
        return SESS_CLOSE;
    }
    if (admin_is_show(sql) && !relay_busy(s) && route_parse(sql, &parse, &err) == 0) {
        /* the gateway's own views answer wherever statements are routed */
        drop_portal(s, "");
        drop_stmt(s, "");
        run_local_query(s, sql, &parse);
        route_parse_free(&parse);
        return SESS_OK;
    }
    rq_error_free(&err);
    if (!needs_parse(s) && !s->cursors) {
        /* no route looks inside statements: route without parsing */
        if (decide(s, NULL, &t, &err) == 0 && t.kind == TARGET_UPSTREAM) {
            if (check_sticky(s, &t, &err) < 0) goto fail;
            return relay_query(s, &t, body, len, sql);
        }
        rq_error_free(&err);
    }
    if (route_parse(sql, &parse, &err) < 0) {
        /* let the default route's server report its own syntax error */
        RqError e2 = {0};
        if (decide(s, NULL, &t, &e2) == 0 && t.kind == TARGET_UPSTREAM) {
            rq_error_free(&err);
            if (check_sticky(s, &t, &err) < 0) goto fail;
            return relay_query(s, &t, body, len, sql);
        }
        if (!rq_error_is_set(&e2) && t.kind == TARGET_PLUGIN && !relay_busy(s)) {
            /* a plugin may speak another dialect (SQLite, its own
             * commands): it gets the text as one statement and judges it */
            rq_error_free(&err);
            if (check_sticky(s, &t, &err) < 0) goto fail;
            unparsed_statement(sql, &parse);
            drop_portal(s, "");
            drop_stmt(s, "");
            return plug_simple_query(s, &parse, &t, NULL, sql);
        }
        rq_error_free(&e2);
        if (relay_busy(s)) {
            rq_error_free(&err);
            return wait_for_relay(s);
        }
        goto fail;
    }
    t = (Target){ .kind = TARGET_LOCAL, .index = -1, .route = -1 };
    Target *targets = xcalloc(parse.n ? parse.n : 1, sizeof *targets);
    for (size_t i = 0; i < parse.n; i++) {
        Target ti;
        if (decide(s, &parse.stmts[i], &ti, &err) < 0) break;
        cursor_route_string(&parse, i, targets, &ti);
        targets[i] = ti;
        if (i > 0 && !share_string(&ti, &t)) {
            rq_error_set(&err, "0A000", "the statements of this query string go to different targets");
            rq_error_hint(&err, "Send them as separate queries.");
            break;
        }
        /* the first plugin statement decides where the string may run
         * (one on a cursor already open runs anywhere) */
        if (i == 0 || (ti.kind == TARGET_PLUGIN &&
                       (t.kind != TARGET_PLUGIN || (t.cursor == CURSOR_USE && ti.cursor != CURSOR_USE))))
            t = ti;
    }
    if (!rq_error_is_set(&err) && t.kind == TARGET_UPSTREAM) {
        if (check_sticky(s, &t, &err) < 0) {
            free(targets);
            route_parse_free(&parse);
            goto fail;
        }
        for (size_t i = 0; i < parse.n; i++) cursor_note_relayed(s, &parse.stmts[i]);
        free(targets);
        route_parse_free(&parse);
        return relay_query(s, &t, body, len, sql);
    }
    if (!rq_error_is_set(&err) && t.kind == TARGET_PLUGIN && !relay_busy(s)) {
        if (check_sticky(s, &t, &err) < 0) {
            free(targets);
            route_parse_free(&parse);
            goto fail;
        }
        drop_portal(s, "");
        drop_stmt(s, "");
        return plug_simple_query(s, &parse, &t, targets, sql);
    }
    free(targets);
    if (relay_busy(s)) {
        route_parse_free(&parse);
        rq_error_free(&err);
        return wait_for_relay(s);
    }
    if (rq_error_is_set(&err)) {
        route_parse_free(&parse);
        goto fail;
    }
    drop_portal(s, "");
    drop_stmt(s, "");
    run_local_query(s, sql, &parse);
    route_parse_free(&parse);
    return SESS_OK;
fail:
    if (relay_busy(s)) {
        rq_error_free(&err);
        return wait_for_relay(s);
    }
    send_error(s, &err);
    ready(s);
    return SESS_OK;
}

/* ---- extended query ---- */

/* Parameter types of a plugin statement, from the registered tables: in
 * `col <op> $n` the parameter takes the column's type, and LIMIT/OFFSET
 * parameters are int8, as Postgres would infer them.  Declared and cast
 * types (already in types) win. */
typedef struct PlugInfer {
    Session *s;
    const Prepared *ps;
    const char *plugin;
    const uint32_t *declared;
    uint16_t n_declared;
    uint32_t *types;
    uint16_t n;
} PlugInfer;

static uint32_t plug_column_type(PlugInfer *pi, json_t *colref)
{
    json_t *fields = json_object_get(colref, "fields");
    json_t *last = json_array_get(fields, json_array_size(fields) - 1);
    const char *col = json_string_value(json_object_get(json_object_get(last, "String"), "sval"));
    if (!col) return 0;
    const RouteStmt *st = &pi->ps->parse.stmts[0];
    for (size_t i = 0; i < st->n_rels; i++) {
        const PlugTable *t = plug_engine_table(pi->s->env->plugins, pi->plugin,
                                               st->rels[i].schema ? st->rels[i].schema : "public",
                                               st->rels[i].name);
        for (size_t c = 0; t && c < t->n_columns; c++)
            if (!strcmp(t->columns[c].name, col)) return t->columns[c].type_oid;
    }
    return 0;
}

static void plug_infer_param(PlugInfer *pi, json_t *node, uint32_t type)
{
    json_t *pr = json_object_get(node, "ParamRef");
    if (!pr || !type) return;
    json_int_t n = json_integer_value(json_object_get(pr, "number"));
    if (n < 1 || n > pi->n) return;
    /* only override the text default, never a declared or cast type */
    if ((size_t)(n - 1) < pi->n_declared && pi->declared[n - 1]) return;
    if (pi->types[n - 1] == 25) pi->types[n - 1] = type;
}

static void visit_plug_params(const char *key, json_t *v, void *ctx)
{
    PlugInfer *pi = ctx;
    if (!strcmp(key, "A_Expr")) {
        json_t *l = json_object_get(v, "lexpr"), *r = json_object_get(v, "rexpr");
        json_t *lc = json_object_get(l, "ColumnRef"), *rc = json_object_get(r, "ColumnRef");
        if (lc) {
            uint32_t t = plug_column_type(pi, lc);
            plug_infer_param(pi, r, t);
            /* col IN ($1, $2) */
            size_t i;
            json_t *item;
            json_t *list = json_object_get(json_object_get(r, "List"), "items");
            json_array_foreach(list, i, item) plug_infer_param(pi, item, t);
        }
        if (rc) plug_infer_param(pi, l, plug_column_type(pi, rc));
    } else if (!strcmp(key, "limitCount") || !strcmp(key, "limitOffset")) {
        plug_infer_param(pi, v, 20);
    }
}

static void plug_infer_types(Session *s, Prepared *p)
{
    if (!p->parse.n || !p->parse.stmts[0].node || !s->env->plugins) return;
    PlugInfer pi = { .s = s, .ps = p, .plugin = s->cfg->plugins[p->target.index].name,
                     .declared = p->decl_types, .n_declared = p->n_decl,
                     .types = p->types, .n = p->n_params };
    route_json_walk(p->parse.stmts[0].node, visit_plug_params, &pi);
}



/* Server-side statement name: the same text and types get the same name,
 * so pooled connections share prepared statements between clients. */
static void statement_hash_name(const char *sql, const uint32_t *types, uint16_t n, char out[24])
{
    uint64_t h = rq_hash_str(RQ_HASH_INIT, sql, NULL);
    h = rq_hash_bytes(h, types, (size_t)n * sizeof *types);
    snprintf(out, 24, "rq%016llx", (unsigned long long)h);
}

/* An extended-protocol message failed with err.  While answers are still
 * due from an upstream the error must not overtake them: drop it and wait,
 * and the message comes back and fails again in its turn.  Otherwise the
 * caller reports err. */
static SessStatus ext_failed(Session *s, RqError *err)
{
    if (relay_busy(s)) {
        rq_error_free(err);
        return wait_for_relay(s);
    }
    return SESS_OK;
}

/* Drivers in extended mode send the same unnamed Parse before every
 * execution (pgbench -M extended, JDBC before its prepare threshold).  When
 * the unnamed statement already holds that text and those types for the
 * same upstream, keep its record and only relay the message: building a
 * new one cost five allocations per statement.  Returns 1 when it handled
 * the Parse (*st says how). */
static int reparse_unnamed(Session *s, const WireParse *m, const Target *t, const uint8_t *body,
                           size_t len, SessStatus *st, RqError *err)
{
    Prepared *old = find_stmt(s, "");
    if (!old || old->parsed || t->kind != TARGET_UPSTREAM || old->target.kind != TARGET_UPSTREAM ||
        old->target.index != t->index || old->n_decl != m->n_types || strcmp(old->sql, m->query))
        return 0;
    for (uint16_t i = 0; i < m->n_types; i++)
        if (old->decl_types[i] != wire_oid_at(m->types, i)) return 0;
    old->target = *t;
    if (check_sticky(s, t, err) < 0) {
        *st = ext_failed(s, err);
        return 1;
    }
    *st = relay_message(s, t->index, 'P', body, len, old);
    if (*st == SESS_OK) s->batch_upstream = 1;
    return 1;
}

static SessStatus handle_parse(Session *s, const uint8_t *body, size_t len, RqError *err)
{
    WireParse m;
    Target t;
    if (wire_decode_parse(body, len, &m, err) < 0) return SESS_CLOSE;
    int show = admin_is_show(m.query);
    /* pure proxying: the route needs no parse tree, only the session */
    int proxy_only = !show && !needs_parse(s) && !s->cursors;
    if (proxy_only) {
        if (decide(s, NULL, &t, err) < 0) return ext_failed(s, err);
        SessStatus st;
        if (!m.name[0] && reparse_unnamed(s, &m, &t, body, len, &st, err)) return st;
    }
    Prepared *p = xcalloc(1, sizeof *p);
    p->refs = 1;
    int parsed = 0;
    if (show) {
        /* the gateway's own views, whatever the routes say (as in the
         * simple protocol: drivers prepare what they run repeatedly) */
        parsed = route_parse(m.query, &p->parse, err) == 0;
        if (!parsed) goto fail;
        t = (Target){ .kind = TARGET_LOCAL, .index = -1, .route = -1 };
    } else if (!proxy_only) {
        parsed = route_parse(m.query, &p->parse, err) == 0;
        if (!parsed) {
            RqError e2 = {0};
            if (decide(s, NULL, &t, &e2) < 0 || (t.kind != TARGET_UPSTREAM && t.kind != TARGET_PLUGIN)) {
                rq_error_free(&e2);
                goto fail;
            }
            rq_error_free(err);     /* the upstream or plugin judges the text */
            if (t.kind == TARGET_PLUGIN) {
                unparsed_statement(m.query, &p->parse);
                parsed = 1;
            }
        } else {
            if (p->parse.n > 1) {
                rq_error_set(err, "42601", "cannot insert multiple commands into a prepared statement");
                goto fail;
            }
            if (decide(s, p->parse.n ? &p->parse.stmts[0] : NULL, &t, err) < 0) goto fail;
        }
    }
    if (t.kind != TARGET_UPSTREAM && !parsed) {
        parsed = route_parse(m.query, &p->parse, err) == 0;
        if (!parsed) goto fail;
        /* routed unparsed: the gateway's cursor statements are still its own */
        if (p->parse.n && cursor_route(s, &p->parse.stmts[0], &t, err) < 0) goto fail;
    }
    p->parsed = parsed;
    p->target = t;
    p->sql = xstrdup(m.query);
    p->name = xstrdup(m.name);
    p->n_decl = m.n_types;
    p->decl_types = xmalloc((m.n_types ? m.n_types : 1) * sizeof *p->decl_types);
    for (uint16_t i = 0; i < m.n_types; i++) p->decl_types[i] = wire_oid_at(m.types, i);
    if (t.kind == TARGET_UPSTREAM) {
        if (m.name[0] && find_stmt(s, m.name)) {
            if (relay_busy(s)) goto wait;
            rq_error_set(err, "42P05", "prepared statement \"%s\" already exists", m.name);
            goto fail;
        }
        if (check_sticky(s, &t, err) < 0) {
            if (relay_busy(s)) goto wait;
            goto fail;
        }
        statement_hash_name(p->sql, p->decl_types, p->n_decl, p->srv_name);
        if (m.name[0] && !s->relay.conn && s->xact == 'I') {
            /* Outside a transaction a named statement is prepared lazily,
             * on whichever server its first Bind lands: waiting for a
             * server just to prepare would deadlock clients that prepare
             * synchronously (PQprepare) while every pooled server is held
             * by their other connections.  Errors in the statement then
             * surface at that Bind. */
            wire_simple(s->out, '1');
        } else {
            SessStatus st = relay_message(s, t.index, 'P', body, len, p);
            if (st != SESS_OK) {
                prepared_unref(p);
                return st;
            }
            s->batch_upstream = 1;
        }
        p->types = xmalloc(sizeof *p->types);
        if (!m.name[0]) drop_stmt(s, "");
        p->next = s->stmts;
        s->stmts = p;
        return SESS_OK;
    }
    if (relay_busy(s)) goto wait;
    if (m.name[0] && find_stmt(s, m.name)) {
        rq_error_set(err, "42P05", "prepared statement \"%s\" already exists", m.name);
        goto fail;
    }
    const RouteStmt *st = p->parse.n ? &p->parse.stmts[0] : NULL;
    if (s->xact == 'E' && !(st && xact_allowed_when_failed(st))) {
        aborted_error(err);
        goto fail;
    }
    if (st && t.kind != TARGET_PLUGIN && !stmt_answerable(s, st, p->sql, err)) goto fail;
    /* unparsed text for a plugin: its $n are the parameters */
    uint16_t text_n = st && !st->node ? text_param_count(st->text) : 0;
    p->types = local_param_types(st, p->decl_types, p->n_decl, text_n, &p->n_params);
    if (t.kind == TARGET_PLUGIN) plug_infer_types(s, p);
    if (!m.name[0]) drop_stmt(s, "");
    p->next = s->stmts;
    s->stmts = p;
    wire_simple(s->out, '1');
    return SESS_OK;
wait:
    rq_error_free(err);
    prepared_unref(p);
    return wait_for_relay(s);
fail:
    prepared_unref(p);
    return ext_failed(s, err);
}

static int bind_local(Session *s, const WireBind *m, Prepared *ps, RqError *err)
{
    if (m->n_params != ps->n_params) {
        rq_error_set(err, "08P01", "bind message supplies %u parameters, but prepared statement \"%s\" requires %u",
                     m->n_params, m->stmt, ps->n_params);
        return -1;
    }
    if (s->xact == 'E' && !(ps->parse.n && xact_allowed_when_failed(&ps->parse.stmts[0]))) {
        aborted_error(err);
        return -1;
    }
    if (m->portal[0] && (find_portal(s, m->portal) || cursor_exists(s, m->portal))) {
        rq_error_set(err, "42P03", "cursor \"%s\" already exists", m->portal);
        return -1;
    }
    Portal *p = xcalloc(1, sizeof *p);
    p->params = xcalloc(m->n_params ? m->n_params : 1, sizeof *p->params);
    p->n_params = m->n_params;
    p->name = xstrdup(m->portal);
    p->ps = ps;
    ps->refs++;
    WireParamIter it;
    wire_bind_params_begin(m, &it);
    Buf b;
    buf_init(&b);
    int rc = 0;
    for (uint16_t i = 0; i < m->n_params; i++) {
        const uint8_t *v;
        int32_t vlen;
        wire_bind_param_next(&it, &v, &vlen);
        if (vlen < 0) continue;
        if (wire_format_at(m->formats, m->n_formats, i) == 1) {
            buf_reset(&b);
            if (pgt_binary_to_text(ps->types[i], v, (size_t)vlen, &b, err) < 0) {
                rq_error_detail(err, "Bind parameter $%u.", i + 1);
                rc = -1;
                break;
            }
            p->params[i] = xstrndup(b.data ? b.data : "", b.len);
        } else {
            if (memchr(v, 0, (size_t)vlen)) {
                rq_error_set(err, "22021", "invalid byte sequence for encoding \"UTF8\": 0x00");
                rc = -1;
                break;
            }
            /* Postgres runs the type's input function at Bind */
            buf_reset(&b);
            if (pgt_text_normalize(ps->types[i], (const char *)v, (size_t)vlen, &b, err) < 0) {
                rc = -1;
                break;
            }
            p->params[i] = xstrndup(b.data ? b.data : "", b.len);
        }
    }
    buf_free(&b);
    if (m->n_result_formats) {
        p->formats = xmalloc(2 * (size_t)m->n_result_formats);
        memcpy(p->formats, m->result_formats, 2 * (size_t)m->n_result_formats);
        p->n_formats = m->n_result_formats;
    }
    if (rc < 0) {
        portal_free(p);
        return -1;
    }
    if (!m->portal[0]) drop_portal(s, "");
    p->next = s->portals;
    s->portals = p;
    wire_simple(s->out, '2');
    return 0;
}

/* A portal record for a relayed Bind: only where later messages go. */
static void bind_relayed(Session *s, const char *portal, Prepared *ps)
{
    /* a portal of an upstream statement is only this record: the same
     * statement bound again leaves it as it is */
    Portal *old = find_portal(s, portal);
    if (old && old->ps == ps) return;
    drop_portal(s, portal);
    Portal *p = xcalloc(1, sizeof *p);
    p->name = xstrdup(portal);
    p->ps = ps;
    ps->refs++;
    p->next = s->portals;
    s->portals = p;
}

static SessStatus handle_bind(Session *s, const uint8_t *body, size_t len, RqError *err)
{
    WireBind m;
    if (wire_decode_bind(body, len, &m, err) < 0) {
        if (relay_busy(s)) {
            rq_error_free(err);
            return wait_for_relay(s);
        }
        /* an unknown format code is an ordinary error; a garbled message is not */
        return strcmp(err->sqlstate, "08P01") ? SESS_OK : SESS_CLOSE;
    }
    Prepared *ps = find_stmt(s, m.stmt);
    if (ps && ps->target.kind == TARGET_UPSTREAM) {
        if (check_sticky(s, &ps->target, err) < 0) return ext_failed(s, err);
        SessStatus st = relay_message(s, ps->target.index, 'B', body, len, ps);
        if (st == SESS_OK) {
            s->batch_upstream = 1;
            bind_relayed(s, m.portal, ps);
        }
        return st;
    }
    if (relay_busy(s)) return wait_for_relay(s);
    if (!ps) {
        rq_error_set(err, "26000", "prepared statement \"%s\" does not exist", m.stmt);
        return SESS_OK;
    }
    bind_local(s, &m, ps, err);
    return SESS_OK;
}

static int describe_stmt(Session *s, const Prepared *ps, const uint8_t *formats, uint16_t n_formats,
                         RqError *err)
{
    RqResult shape;
    rq_result_init(&shape);
    int rc = 0;
    if (ps->parse.n && local_handles(&ps->parse.stmts[0])) {
        LocalCtx ctx = local_ctx(s, ps->sql);
        rc = local_run(&ctx, &ps->parse.stmts[0], NULL, ps->n_params, ps->types, &shape, err);
    }
    if (rc == 0 && formats) rc = rq_result_check_formats(&shape, formats, n_formats, err);
    if (rc == 0) {
        if (shape.returns_rows) rq_result_describe(&shape, formats, n_formats, s->out);
        else wire_simple(s->out, 'n');
    }
    rq_result_free(&shape);
    return rc;
}

static SessStatus handle_describe(Session *s, const uint8_t *body, size_t len, RqError *err)
{
    WireDescribe m;
    if (wire_decode_describe(body, len, &m, err) < 0) return SESS_CLOSE;
    Prepared *ps = NULL;
    Portal *p = NULL;
    if (m.kind == 'S') ps = find_stmt(s, m.name);
    else if ((p = find_portal(s, m.name))) ps = p->ps;
    if (ps && ps->target.kind == TARGET_UPSTREAM) {
        SessStatus st = relay_message(s, ps->target.index, 'D', body, len, ps);
        if (st == SESS_OK) s->batch_upstream = 1;
        return st;
    }
    if (relay_busy(s)) return wait_for_relay(s);
    if (m.kind == 'S') {
        if (!ps) {
            rq_error_set(err, "26000", "prepared statement \"%s\" does not exist", m.name);
            return SESS_OK;
        }
        wire_parameter_description(s->out, ps->types, ps->n_params);
        if (ps->target.kind == TARGET_PLUGIN && ps->parse.n && ps->target.cursor) {
            cursor_describe(s, ps, NULL, err);
            return SESS_OK;
        }
        if (ps->target.kind == TARGET_PLUGIN && ps->parse.n) return plug_describe(s, ps, NULL);
        describe_stmt(s, ps, NULL, 0, err);
        return SESS_OK;
    }
    if (!p) {
        /* a cursor DECLAREd in SQL is a portal too (psycopg describes it):
         * the gateway's own, or one on the upstream the session is on */
        if (cursor_describe_portal(s, m.name, err)) return SESS_OK;
        int up = s->xact != 'I' && s->xact_target.kind == TARGET_UPSTREAM ? s->xact_target.index
               : s->relay.conn && s->relay.pinned ? s->relay.upstream : -1;
        if (up >= 0) {
            SessStatus st = relay_message(s, up, 'D', body, len, NULL);
            if (st == SESS_OK) s->batch_upstream = 1;
            return st;
        }
        rq_error_set(err, "34000", "portal \"%s\" does not exist", m.name);
        return SESS_OK;
    }
    if (ps->target.kind == TARGET_PLUGIN && ps->parse.n && ps->target.cursor) {
        cursor_describe(s, ps, p, err);
        return SESS_OK;
    }
    if (ps->target.kind == TARGET_PLUGIN && ps->parse.n) return plug_describe(s, ps, p);
    if (p->ran) {
        if (p->res.returns_rows) rq_result_describe(&p->res, p->formats, p->n_formats, s->out);
        else wire_simple(s->out, 'n');
        return SESS_OK;
    }
    describe_stmt(s, p->ps, p->formats, p->n_formats, err);
    return SESS_OK;
}

static int execute_local(Session *s, Portal *p, int32_t max_rows, RqError *err)
{
    if (!p->ps->parse.n) {
        wire_simple(s->out, 'I');
        return 0;
    }
    if (!p->ran) {
        const RouteStmt *st = &p->ps->parse.stmts[0];
        if (exec_stmt(s, st, p->ps->sql, (const char *const *)p->params, p->n_params,
                      p->ps->types, &p->res, err) < 0)
            return -1;
        p->ran = 1;
        if (rq_result_check_formats(&p->res, p->formats, p->n_formats, err) < 0) return -1;
    } else if (s->xact == 'E') {
        aborted_error(err);
        return -1;
    }
    if (!p->res.returns_rows) {
        complete(s, &p->res, 0);
        return 0;
    }
    size_t left = p->res.n_rows - p->pos;
    size_t n = (max_rows > 0 && (size_t)max_rows < left) ? (size_t)max_rows : left;
    if (rq_result_rows(&p->res, p->pos, n, p->formats, p->n_formats, s->out, err) < 0) return -1;
    p->pos += n;
    /* like Postgres, a limit that is reached suspends the portal even when
     * no row is left; only running dry before the limit completes it */
    if (max_rows > 0 && n == (size_t)max_rows) wire_simple(s->out, 's');
    else complete(s, &p->res, n);
    return 0;
}

static SessStatus handle_execute(Session *s, const uint8_t *body, size_t len, RqError *err)
{
    WireExecute m;
    if (wire_decode_execute(body, len, &m, err) < 0) return SESS_CLOSE;
    Portal *p = find_portal(s, m.portal);
    if (p && p->ps->target.kind == TARGET_UPSTREAM) {
        SessStatus st = relay_message(s, p->ps->target.index, 'E', body, len, p->ps);
        if (st == SESS_OK) s->batch_upstream = 1;
        if (st == SESS_OK && p->ps->parse.n) cursor_note_relayed(s, &p->ps->parse.stmts[0]);
        return st;
    }
    if (relay_busy(s)) return wait_for_relay(s);
    if (!p && cursor_exists(s, m.portal)) {
        /* a cursor DECLAREd in SQL is a portal the protocol can run too */
        PlugRun *pr = &s->plug;
        plug_run_reset(s);
        pr->max_rows = m.max_rows;
        pr->active = 1;
        cursor_begin(s, NULL, m.portal);
        arm_statement_timeout(s);
        return plug_wait_or_done(s);
    }
    if (!p) {
        rq_error_set(err, "34000", "portal \"%s\" does not exist", m.portal);
        return SESS_OK;
    }
    if (p->ps->target.kind == TARGET_PLUGIN && p->ps->parse.n) {
        if (relay_busy(s)) return wait_for_relay(s);
        if (s->xact == 'E') {
            aborted_error(err);
            return SESS_OK;
        }
        return plug_execute(s, p, m.max_rows);
    }
    execute_local(s, p, m.max_rows, err);
    return SESS_OK;
}

static SessStatus handle_close(Session *s, const uint8_t *body, size_t len, RqError *err)
{
    WireClose m;
    if (wire_decode_close(body, len, &m, err) < 0) return SESS_CLOSE;
    Prepared *ps = NULL;
    Portal *p = NULL;
    if (m.kind == 'S') ps = find_stmt(s, m.name);
    else if ((p = find_portal(s, m.name))) ps = p->ps;
    if (ps && ps->target.kind == TARGET_UPSTREAM && (m.kind == 'P' || ps->name[0] || s->relay.conn)) {
        SessStatus st = relay_message(s, ps->target.index, 'C', body, len, ps);
        if (st != SESS_OK) return st;
        s->batch_upstream = 1;
    } else {
        if (relay_busy(s)) return wait_for_relay(s);
        if (m.kind == 'P' && !p) cursor_close_portal(s, m.name);
        wire_simple(s->out, '3');
    }
    if (m.kind == 'S') drop_stmt(s, m.name);
    else drop_portal(s, m.name);
    return SESS_OK;
}

static SessStatus handle_sync(Session *s, uint8_t type)
{
    Relay *r = &s->relay;
    if (type == 'S') s->skip_to_sync = 0;
    if (s->batch_upstream && r->conn) {
        if (type == 'S') s->batch_upstream = 0;
        return relay_message(s, r->upstream, type, NULL, 0, NULL);
    }
    if (type == 'H') return SESS_OK;   /* local answers are flushed after every read anyway */
    if (relay_busy(s)) return wait_for_relay(s);
    s->batch_upstream = 0;
    if (s->xact == 'I') drop_all_portals(s);
    ready(s);
    return SESS_OK;
}

/* ---- entry points ---- */

static SessStatus dispatch(Session *s, uint8_t type, const uint8_t *body, size_t len)
{
    RqError err = {0};
    SessStatus st = SESS_OK;

    if (type == 'S' || type == 'H') return handle_sync(s, type);
    if (type == 'd' || type == 'c' || type == 'f') {
        /* COPY data flows to the upstream running COPY FROM STDIN; after a
         * failed COPY, Postgres drops stray copy messages, and so do we */
        if (s->relay.copy_in) return relay_message(s, s->relay.upstream, type, body, len, NULL);
        return SESS_OK;
    }
    if (s->skip_to_sync) return SESS_OK;

    switch (type) {
    case 'Q': return handle_query(s, body, len);
    case 'P': st = handle_parse(s, body, len, &err); break;
    case 'B': st = handle_bind(s, body, len, &err); break;
    case 'D': st = handle_describe(s, body, len, &err); break;
    case 'E': st = handle_execute(s, body, len, &err); break;
    case 'C': st = handle_close(s, body, len, &err); break;
    case 'F':
        if (relay_busy(s)) return wait_for_relay(s);
        rq_error_set(&err, "0A000", "the fastpath function call interface is not supported by riffq");
        break;
    default:
        rq_error_set(&err, "08P01", "invalid frontend message type %d", type);
        st = SESS_CLOSE;
        break;
    }
    if (rq_error_is_set(&err)) {
        /* a message that cannot be decoded leaves the stream unusable */
        if (st == SESS_CLOSE) rq_error_fatal(&err);
        send_error(s, &err);
        s->skip_to_sync = 1;
    }
    return st;
}

SessStatus sess_handle(Session *s, uint8_t type, const uint8_t *body, size_t len)
{
    if (type == 'X') return SESS_CLOSE;
    /* a transaction ended, maybe on an upstream: its cursors went with it */
    if (s->cursors && s->xact == 'I') cursor_sweep(s);
    s->in_handle = 1;
    SessStatus st = dispatch(s, type, body, len);
    s->in_handle = 0;
    if (s->drop_portals && st != SESS_WAIT && st != SESS_RETRY) {
        s->drop_portals = 0;
        drop_all_portals(s);
    }
    if (st == SESS_WAIT || st == SESS_RETRY) s->waiting = 1;
    return st;
}

void sess_done_waiting(Session *s)
{
    if (!s->waiting) return;
    s->waiting = 0;
    s->io.resume(s->io.ctx);
}

Session *sess_new(const SessInit *init, Buf *out, RqError *err)
{
    Session *s = xcalloc(1, sizeof *s);
    s->env = init->env;
    s->cfg = init->env->cfg;
    s->io = init->io;
    s->user = xstrdup(init->user);
    s->database = xstrdup(init->database && init->database[0] ? init->database : init->user);
    s->client = xstrdup(init->client_addr ? init->client_addr : "");
    s->listen = xstrdup(init->listen ? init->listen : "");
    if (init->addr) {
        size_t alen = init->addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                        : sizeof(struct sockaddr_in);
        memcpy(&s->addr, init->addr, alen);
        s->has_addr = 1;
    }
    s->pid = init->pid;
    s->key = init->key;
    s->out = out;
    s->xact = 'I';
    s->xact_target = (Target){ .kind = TARGET_LOCAL, .index = -1, .route = -1 };
    relay_init(&s->relay);
    SettingsInit si = {
        .user = s->user, .server_version = s->cfg->server_version,
        .accept_unknown = s->cfg->accept_unknown_settings,
        .keys = init->keys, .vals = init->vals, .n = init->n,
    };
    if (sess_settings_init(&s->settings, &si, err) < 0) {
        rq_error_fatal(err);
        sess_free(s);
        return NULL;
    }
    if (s->cfg->n_upstreams) relay_startup_settings(s, init->keys, init->vals, init->n);
    if (s->env->stats) s->env->stats->sessions_started++;
    sess_settings_report_all(&s->settings, out);
    wire_backend_key(out, s->pid, s->key);
    wire_ready(out, s->xact);
    return s;
}

void sess_free(Session *s)
{
    if (!s) return;
    if (s->plug.q) plug_query_free(s->plug.q);
    if (s->plug.timer) uv_close((uv_handle_t *)s->plug.timer, free_closed_timer);
    route_parse_free(&s->plug.parse);
    free(s->plug.targets);
    free(s->plug.sql);
    copyout_free(s->plug.copy);
    cursor_close_all(s);
    if (s->env->plugins && s->cfg->n_plugins) plug_engine_session_end(s->env->plugins, s->pid);
    relay_detach(s, s->xact == 'I');
    relay_free_settings(s);
    rq_error_free(&s->relay.acquire_err);
    free(s->relay.acts);
    drop_all_portals(s);
    drop_all_stmts(s);
    clear_savepoints(s);
    sess_settings_free(&s->settings);
    free(s->user);
    free(s->database);
    free(s->client);
    free(s->listen);
    free(s);
}

void sess_cancel(Session *s)
{
    /* Local answers complete within one loop iteration, so only relayed
     * statements can be running. */
    relay_cancel(s);
    PlugRun *pr = &s->plug;
    if (pr->active) {
        PlugQuery *q = plug_run_query(s);
        if (q) plug_query_cancel(q);
    }
}

void sess_batch_end(Session *s)
{
    relay_batch_end(s);
}

void sess_output_drained(Session *s)
{
    relay_output_drained(s);
    if (s->plug.blocked) {
        s->plug.blocked = 0;
        if (plug_pump(s)) {
            disarm_statement_timeout(s);
            sess_done_waiting(s);
        }
        s->io.flush(s->io.ctx);
    }
}

char sess_xact_status(const Session *s) { return s->xact; }
int32_t sess_pid(const Session *s) { return s->pid; }
int32_t sess_key(const Session *s) { return s->key; }
