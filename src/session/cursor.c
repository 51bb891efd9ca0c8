/*
 * SQL cursors over plugins: DECLARE ... CURSOR FOR a query routed to a
 * plugin, then FETCH, MOVE and CLOSE, in the simple and the extended
 * protocol (psycopg's server-side cursors send exactly these).
 *
 * A cursor is the handler's result stream kept open.  DECLARE starts the
 * handler and answers once its columns are known (so a handler that raises
 * fails the DECLARE, not the first FETCH); FETCH n moves up to n encoded
 * DataRows from the stream to the client, MOVE n drops them, CLOSE frees
 * the stream.  The engine produces the next batch only when the previous one
 * was fetched, so an open cursor costs at most two batches of memory, and a
 * generator runs only as far as the client has fetched.
 *
 * Plugins produce rows once, in order: cursors move forward only.  What
 * needs the cursor to go back (BACKWARD, PRIOR, LAST, ABSOLUTE or RELATIVE
 * to a row already passed, SCROLL) is refused with 0A000.
 *
 * Transactions: as in Postgres, a cursor WITHOUT HOLD needs a transaction
 * block (25P01 otherwise; a multi-statement query string is one) and ends
 * with it; WITH HOLD cursors outlive COMMIT (the stream simply stays open)
 * but not the ROLLBACK of the transaction that declared them; ROLLBACK TO a
 * savepoint drops the cursors declared after it.  A cursor whose stream
 * failed (handler error, statement_timeout, CancelRequest during a FETCH)
 * is dropped at the end of its transaction.
 *
 * In the extended protocol a FETCH portal takes its Bind's result formats
 * (values are converted where they differ from the stream's) and keeps its
 * place when Execute's row limit suspends it; the cursor itself is a portal
 * that Describe, Execute and Close accept, as in Postgres.
 *
 * The session's cursors are also the pg_catalog.pg_cursors view, which the
 * local engine answers (local.c) from cursor_view.
 *
 * Only cursors whose query goes to a plugin are the gateway's: a DECLARE
 * routed to an upstream is relayed, and so are FETCH/MOVE/CLOSE of names
 * the gateway does not hold.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include "riffq/pgtypes.h"
#include "riffq/plugin.h"
#include "riffq/wire.h"
#include "session_int.h"

/* DeclareCursorStmt.options bits (Postgres' parsenodes.h) */
#define CURSOR_OPT_BINARY 0x0001
#define CURSOR_OPT_SCROLL 0x0002
#define CURSOR_OPT_HOLD 0x0020

#define ALL_ROWS UINT64_MAX

/* ---- the cursor list ---- */

static Cursor *find_cursor(const Session *s, const char *name)
{
    for (Cursor *c = s->cursors; c; c = c->next)
        if (!strcmp(c->name, name)) return c;
    return NULL;
}

int cursor_exists(const Session *s, const char *name)
{
    return find_cursor(s, name) != NULL;
}

static void cursor_free(Cursor *c)
{
    if (!c) return;
    if (c->q) plug_query_free(c->q);
    free(c->name);
    free(c->statement);
    free(c);
}

static void unlink_cursor(Session *s, Cursor *c)
{
    for (Cursor **pp = &s->cursors; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    if (s->plug.cursor == c) s->plug.cursor = NULL;
    cursor_free(c);
}

/* Keep the list in declaration order: pg_cursors lists them so. */
static void append_cursor(Session *s, Cursor *c)
{
    Cursor **pp = &s->cursors;
    while (*pp) pp = &(*pp)->next;
    c->next = NULL;
    *pp = c;
}

static void drop_where(Session *s, int (*doomed)(const Cursor *, const void *), const void *arg)
{
    Cursor **pp = &s->cursors;
    while (*pp) {
        Cursor *c = *pp;
        if (doomed(c, arg)) {
            *pp = c->next;
            if (s->plug.cursor == c) s->plug.cursor = NULL;
            cursor_free(c);
        } else {
            pp = &c->next;
        }
    }
}

static int any_cursor(const Cursor *c, const void *arg)
{
    (void)c;
    (void)arg;
    return 1;
}

void cursor_close_all(Session *s)
{
    drop_where(s, any_cursor, NULL);
    if (s->plug.is_cursor && s->plug.cop.kind == 'D' && s->plug.cursor) {
        /* a DECLARE still waiting for its columns owns its cursor */
        cursor_free(s->plug.cursor);
        s->plug.cursor = NULL;
    }
}

static int ends_with_xact(const Cursor *c, const void *commit)
{
    if (!c->q) return 1;                        /* its stream failed */
    if (!c->holdable) return 1;
    return !*(const int *)commit && c->in_xact;
}

void cursor_xact_end(Session *s, int commit)
{
    drop_where(s, ends_with_xact, &commit);
    for (Cursor *c = s->cursors; c; c = c->next) {
        c->in_xact = 0;
        c->depth = 0;
    }
}

void cursor_sweep(Session *s)
{
    /* how the transaction ended is not known here (an upstream ran it):
     * WITH HOLD cursors stay, as after a COMMIT */
    if (s->cursors) cursor_xact_end(s, 1);
}

static int declared_after(const Cursor *c, const void *keep)
{
    return c->in_xact && c->depth >= *(const size_t *)keep;
}

void cursor_savepoint_end(Session *s, size_t keep, int rollback)
{
    if (rollback) {
        drop_where(s, declared_after, &keep);
        return;
    }
    /* RELEASE: cursors of the released savepoints now belong to the one
     * that contained them */
    for (Cursor *c = s->cursors; c; c = c->next)
        if (c->in_xact && c->depth > keep) c->depth = keep;
}

/* ---- routing ---- */

static const char *jstr(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static int is_node(const RouteStmt *st, const char *type)
{
    return st->node_type && !strcmp(st->node_type, type);
}

/* Whether a SELECT reads the pg_cursors view and nothing else. */
static int reads_pg_cursors(const RouteStmt *st)
{
    if (st->kind != STMT_SELECT || st->n_rels != 1) return 0;
    const RouteRel *r = &st->rels[0];
    return !strcmp(r->name, "pg_cursors") && (!r->schema || !strcmp(r->schema, "pg_catalog"));
}

int cursor_route(Session *s, const RouteStmt *st, Target *t, RqError *err)
{
    if (is_node(st, "DeclareCursorStmt")) {
        const char *name = jstr(st->node, "portalname");
        if (t->kind == TARGET_PLUGIN) {
            t->cursor = CURSOR_DECLARE;
        } else if (t->kind == TARGET_UPSTREAM && name && find_cursor(s, name)) {
            /* the upstream would make a second cursor of that name, and
             * FETCH could only ever reach one of them */
            rq_error_set(err, "42P03", "cursor \"%s\" already exists", name);
            return -1;
        }
        return 0;
    }
    if (is_node(st, "FetchStmt") || is_node(st, "ClosePortalStmt")) {
        const char *name = jstr(st->node, "portalname");
        Cursor *c = name ? find_cursor(s, name) : NULL;
        if (c) {
            *t = c->target;
            t->cursor = CURSOR_USE;
        } else if (!name && s->cursors && t->kind == TARGET_PLUGIN) {
            /* CLOSE ALL: the gateway closes its own (an upstream's are
             * closed by relaying it, after the gateway closed its own) */
            t->cursor = CURSOR_USE;
        }
        return 0;
    }
    if (reads_pg_cursors(st) && t->kind == TARGET_UPSTREAM && s->cursors) {
        /* the gateway's cursors are not the upstream's to list; both
         * together cannot be listed by either */
        if (s->xact_target.kind == TARGET_UPSTREAM || s->relay.pinned) {
            rq_error_set(err, "0A000",
                         "pg_cursors cannot list the gateway's cursors and upstream \"%s\"'s together",
                         s->cfg->upstreams[t->index].name);
            rq_error_detail(err, "This session holds cursors over plugins, and may hold cursors on the upstream.");
            rq_error_hint(err, "Query pg_cursors outside a transaction running on the upstream.");
            return -1;
        }
        *t = (Target){ .kind = TARGET_LOCAL, .index = -1, .route = -1 };
    }
    return 0;
}

void cursor_note_relayed(Session *s, const RouteStmt *st)
{
    if (s->cursors && is_node(st, "ClosePortalStmt") && !jstr(st->node, "portalname"))
        cursor_close_all(s);
}

void cursor_route_string(const RouteParse *parse, size_t i, const Target *targets, Target *t)
{
    const RouteStmt *st = &parse->stmts[i];
    if (t->cursor || !(is_node(st, "FetchStmt") || is_node(st, "ClosePortalStmt"))) return;
    const char *name = jstr(st->node, "portalname");
    if (!name) return;
    for (size_t k = i; k-- > 0;) {
        const RouteStmt *d = &parse->stmts[k];
        if (targets[k].cursor == CURSOR_DECLARE && is_node(d, "DeclareCursorStmt") &&
            !strcmp(jstr(d->node, "portalname") ? jstr(d->node, "portalname") : "", name)) {
            *t = targets[k];
            t->cursor = CURSOR_USE;
            return;
        }
    }
}

/* ---- answering ---- */

/* The cursor's query in the text of a DECLARE: what follows FOR.  FOR is a
 * reserved word, so the first one outside quotes and comments is it (the
 * cursor's name, the only other free text before it, can only contain one
 * when quoted). */
static const char *declare_query(const char *text)
{
    const unsigned char *p = (const unsigned char *)text;
    while (*p) {
        if (p[0] == '-' && p[1] == '-') {
            while (*p && *p != '\n') p++;
        } else if (p[0] == '/' && p[1] == '*') {
            int depth = 1;
            p += 2;
            while (*p && depth) {
                if (p[0] == '/' && p[1] == '*') { depth++; p += 2; }
                else if (p[0] == '*' && p[1] == '/') { depth--; p += 2; }
                else p++;
            }
        } else if (*p == '"') {
            for (p++; *p; p++) {
                if (*p != '"') continue;
                if (p[1] != '"') { p++; break; }
                p++;
            }
        } else if (isalpha(*p) || *p == '_' || *p >= 0x80) {
            const unsigned char *w = p;
            while (isalnum(*p) || *p == '_' || *p == '$' || *p >= 0x80) p++;
            if (p - w == 3 && !strncasecmp((const char *)w, "for", 3)) {
                while (isspace(*p)) p++;
                return (const char *)p;
            }
        } else {
            p++;
        }
    }
    return NULL;
}

static const char *plugin_name(const Session *s, const Target *t)
{
    return t->index >= 0 && (size_t)t->index < s->cfg->n_plugins ? s->cfg->plugins[t->index].name : "?";
}

static void refuse_backward(const Session *s, const Cursor *c, const char *what, RqError *err)
{
    rq_error_set(err, "0A000", "cursor \"%s\" can only scan forward", c->name);
    rq_error_detail(err, "Its rows stream from plugin \"%s\", which produces them once and in order: %s would go back to rows already passed.",
                    plugin_name(s, &c->target), what);
    rq_error_hint(err, "Fetch forward (FETCH n, FETCH ALL, MOVE n), or run the query again.");
}

static int start_declare(Session *s, RqError *err)
{
    PlugRun *pr = &s->plug;
    const RouteStmt *st = pr->cursor_st;
    const char *name = jstr(st->node, "portalname");
    json_int_t opts = json_integer_value(json_object_get(st->node, "options"));
    const Target *t = pr->targets ? &pr->targets[pr->next_stmt - 1]
                    : pr->portal ? &pr->portal->ps->target : &pr->target;
    if (!name) name = "";
    /* a query string of several statements runs as one transaction */
    int implicit_block = pr->simple && pr->parse.n > 1;
    if (!(opts & CURSOR_OPT_HOLD) && s->xact == 'I' && !implicit_block) {
        rq_error_set(err, "25P01", "DECLARE CURSOR can only be used in transaction blocks");
        return -1;
    }
    if (opts & CURSOR_OPT_SCROLL) {
        rq_error_set(err, "0A000", "SCROLL cursors are not supported over plugin \"%s\"",
                     plugin_name(s, t));
        rq_error_detail(err, "A plugin produces its rows once and in order, so its cursors move forward only.");
        rq_error_hint(err, "Declare the cursor NO SCROLL, or without SCROLL.");
        return -1;
    }
    int taken = find_cursor(s, name) != NULL;
    for (Portal *p = s->portals; p && !taken; p = p->next) taken = !strcmp(p->name, name);
    if (taken) {
        rq_error_set(err, "42P03", "cursor \"%s\" already exists", name);
        return -1;
    }
    const char *query = declare_query(st->text);
    if (!query || !*query) {
        rq_error_set(err, "42601", "syntax error in DECLARE CURSOR: no query after FOR");
        return -1;
    }
    Cursor *c = xcalloc(1, sizeof *c);
    c->name = xstrdup(name);
    c->statement = xstrdup(pr->cursor_sql ? pr->cursor_sql : st->text);
    c->target = *t;
    c->target.cursor = CURSOR_NONE;
    c->holdable = (opts & CURSOR_OPT_HOLD) != 0;
    c->binary = (opts & CURSOR_OPT_BINARY) != 0;
    c->in_xact = 1;
    c->depth = s->n_savepoints;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    c->created_us = (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
    /* the stream's formats are the cursor's (text, or binary for BINARY);
     * the portal's result formats are those of the DECLARE, which has none */
    static const uint8_t binary_fmt[2] = { 0, 1 };
    Portal args = {0};
    if (pr->portal) {
        args.params = pr->portal->params;
        args.n_params = pr->portal->n_params;
        args.ps = pr->portal->ps;
    }
    args.formats = c->binary ? (uint8_t *)binary_fmt : NULL;
    args.n_formats = c->binary ? 1 : 0;
    c->q = sess_plug_start(s, t, query, &args);
    pr->cursor = c;
    return 0;
}

/* DECLARE answers once the handler described its columns. */
static int pump_declare(Session *s, RqError *err)
{
    PlugRun *pr = &s->plug;
    Cursor *c = pr->cursor;
    PlugState st = plug_query_state(c->q);
    if (st == PLUG_RUNNING) return 0;
    if (st == PLUG_FAILED) {
        sess_plug_error(s, c->q, err);
        cursor_free(c);
        pr->cursor = NULL;
        return -1;
    }
    const RqResult *cols = plug_query_columns(c->q);
    if (!cols || !cols->returns_rows) {
        rq_error_set(err, "42P11", "cannot open a cursor: plugin \"%s\" answered its query without rows",
                     plugin_name(s, &c->target));
        rq_error_detail(err, "The handler returned a command tag (%s).",
                        plug_query_tag(c->q) ? plug_query_tag(c->q) : "none");
        cursor_free(c);
        pr->cursor = NULL;
        return -1;
    }
    append_cursor(s, c);
    wire_command_complete(s->out, "DECLARE CURSOR");
    return 1;
}

/* The formats FETCH rows go out in: a simple-protocol FETCH gets the
 * cursor's own, an extended one those its Bind asked for (which override
 * BINARY, as in Postgres). */
static void fetch_formats(const Session *s, const Cursor *c, const uint8_t **formats, uint16_t *n)
{
    static const uint8_t binary_fmt[2] = { 0, 1 };
    const PlugRun *pr = &s->plug;
    if (pr->portal) {
        *formats = pr->portal->formats;
        *n = pr->portal->n_formats;
    } else {
        *formats = c->binary ? binary_fmt : NULL;
        *n = c->binary ? 1 : 0;
    }
}

static int fetch_plan(Session *s, Cursor *c, CursorOp *op, RqError *err)
{
    const RouteStmt *st = s->plug.cursor_st;
    const char *dir = jstr(st->node, "direction");
    json_int_t n = json_integer_value(json_object_get(st->node, "howMany"));
    int all = n == INT64_MAX;
    int move = op->kind == 'M';
    if (!dir) dir = "FETCH_FORWARD";
    if (!strcmp(dir, "FETCH_BACKWARD")) {
        if (n != 0) {
            refuse_backward(s, c, "a backward fetch", err);
            return -1;
        }
        dir = "FETCH_RELATIVE";        /* BACKWARD 0 is RELATIVE 0 */
    } else if (!strcmp(dir, "FETCH_FORWARD")) {
        if (n < 0) {
            refuse_backward(s, c, "a backward fetch", err);
            return -1;
        }
        if (n > 0) {
            op->want = all ? ALL_ROWS : (uint64_t)n;
            return 0;
        }
        dir = "FETCH_RELATIVE";        /* FORWARD 0 is RELATIVE 0 */
    }
    if (!strcmp(dir, "FETCH_RELATIVE")) {
        if (n > 0) {
            op->skip = (uint64_t)n - 1;
            op->want = 1;
            return 0;
        }
        if (n == 0 && move) {
            /* stays put: says whether it is on a row */
            op->on_row = 1;
            return 0;
        }
        refuse_backward(s, c, n == 0 ? "fetching the current row again" : "a backward fetch", err);
        return -1;
    }
    if (!strcmp(dir, "FETCH_ABSOLUTE")) {
        if (n > 0 && (uint64_t)n > c->pos) {
            op->skip = (uint64_t)n - c->pos - 1;
            op->want = 1;
            return 0;
        }
        if (n == 0 && c->pos == 0) {
            op->want = 0;              /* before the first row already */
            return 0;
        }
        refuse_backward(s, c, n < 0 ? "a position counted from the end" : "that absolute position", err);
        return -1;
    }
    rq_error_set(err, "0A000", "FETCH direction %s is not supported", dir);
    return -1;
}

static int start_fetch(Session *s, RqError *err)
{
    PlugRun *pr = &s->plug;
    CursorOp *op = &pr->cop;
    const RouteStmt *st = pr->cursor_st;
    /* an Execute of the cursor itself names it in cursor_sql */
    const char *name = op->kind == 'E' ? pr->cursor_sql : jstr(st->node, "portalname");
    Cursor *c = name ? find_cursor(s, name) : NULL;
    if (!c) {
        rq_error_set(err, "34000", "cursor \"%s\" does not exist", name ? name : "");
        return -1;
    }
    if (!c->q) {
        rq_error_set(err, "55000", "portal \"%s\" cannot be run", c->name);
        rq_error_detail(err, "Its stream failed earlier.");
        return -1;
    }
    pr->cursor = c;
    if (op->kind == 'E') {
        /* as many rows as the Execute asks for (row limit: 's') */
        op->want = ALL_ROWS;
        return 0;
    }
    if (pr->portal && pr->portal->cop) {
        /* an Execute continuing a FETCH its row limit suspended */
        *op = *pr->portal->cop;
        return 0;
    }
    if (fetch_plan(s, c, op, err) < 0) return -1;
    const RqResult *cols = plug_query_columns(c->q);
    if (op->kind == 'F') {
        const uint8_t *formats;
        uint16_t nf;
        fetch_formats(s, c, &formats, &nf);
        if (rq_result_check_formats(cols, formats, nf, err) < 0) return -1;
        /* the simple protocol describes every FETCH; the extended one's
         * Describe did */
        if (pr->simple) rq_result_describe(cols, formats, nf, s->out);
    }
    return 0;
}

static int run_close(Session *s, RqError *err)
{
    const RouteStmt *st = s->plug.cursor_st;
    const char *name = jstr(st->node, "portalname");
    if (!name) {
        cursor_close_all(s);
        wire_command_complete(s->out, "CLOSE CURSOR ALL");
        return 1;
    }
    Cursor *c = find_cursor(s, name);
    if (!c) {
        rq_error_set(err, "34000", "cursor \"%s\" does not exist", name);
        return -1;
    }
    unlink_cursor(s, c);
    wire_command_complete(s->out, "CLOSE CURSOR");
    return 1;
}

void cursor_begin(Session *s, const RouteStmt *st, const char *sql)
{
    PlugRun *pr = &s->plug;
    pr->is_cursor = 1;
    pr->cursor_st = st;
    pr->cursor_sql = sql;
    pr->cursor = NULL;
    memset(&pr->cop, 0, sizeof pr->cop);
    pr->cop.kind = !st ? 'E'
                 : is_node(st, "DeclareCursorStmt") ? 'D'
                 : is_node(st, "ClosePortalStmt") ? 'C'
                 : json_is_true(json_object_get(st->node, "ismove")) ? 'M' : 'F';
}

PlugQuery *cursor_running_query(Session *s)
{
    const PlugRun *pr = &s->plug;
    return pr->is_cursor && pr->cursor ? pr->cursor->q : NULL;
}

/* Values of some columns in the other format: DataRows of the stream
 * (from_binary: its format) re-encoded per the fetch's format codes. */
static int convert_rows(const RqResult *cols, int from_binary, const uint8_t *formats, uint16_t nf,
                        const Buf *in, Buf *out, RqError *err)
{
    Buf v;
    buf_init(&v);
    size_t pos = 0;
    int rc = 0;
    while (pos + 5 <= in->len && rc == 0) {
        const uint8_t *m = (const uint8_t *)in->data + pos;
        uint32_t len = (uint32_t)m[1] << 24 | (uint32_t)m[2] << 16 | (uint32_t)m[3] << 8 | m[4];
        WireReader r;
        wire_reader_init(&r, m + 5, len - 4);
        int16_t ncols = wire_get_i16(&r);
        size_t off = wire_row_begin(out, (uint16_t)ncols);
        for (int16_t i = 0; i < ncols; i++) {
            int32_t vlen = wire_get_i32(&r);
            const uint8_t *val = vlen > 0 ? wire_get_bytes(&r, (size_t)vlen) : NULL;
            int to_binary = wire_format_at(formats, nf, (size_t)i) == 1;
            if (vlen < 0 || to_binary == from_binary || (size_t)i >= cols->n_cols) {
                wire_row_value(out, val, vlen);
                continue;
            }
            buf_reset(&v);
            uint32_t oid = cols->cols[i].type_oid;
            rc = from_binary ? pgt_binary_to_text(oid, val, (size_t)vlen, &v, err)
                             : pgt_text_to_binary(oid, (const char *)val, (size_t)vlen, &v, err);
            if (rc < 0) break;
            wire_row_value(out, v.data, (int32_t)v.len);
        }
        wire_end(out, off);
        pos += 1 + (size_t)len;
    }
    buf_free(&v);
    return rc;
}

static int needs_conversion(const Cursor *c, const RqResult *cols, const uint8_t *formats, uint16_t nf)
{
    for (size_t i = 0; i < cols->n_cols; i++)
        if ((wire_format_at(formats, nf, i) == 1) != c->binary) return 1;
    return 0;
}

static void fetch_done(Session *s, CursorOp *op)
{
    PlugRun *pr = &s->plug;
    char tag[48];
    /* MOVE counts the rows it passed; FETCH and Execute those this
     * message returned, as Postgres (an Execute that resumes a FETCH
     * counts its own) */
    if (op->kind == 'M') snprintf(tag, sizeof tag, "MOVE %" PRIu64, op->done);
    else snprintf(tag, sizeof tag, "%s %zu", op->kind == 'E' ? "SELECT" : "FETCH", pr->rows);
    wire_command_complete(s->out, tag);
    if (pr->portal) {
        free(pr->portal->cop);
        pr->portal->cop = NULL;
        pr->portal->ran = 1;
    }
}

/* FETCH and MOVE: pass over op->skip rows, then return (or drop) up to
 * op->want, honouring the client's output backpressure and an Execute row
 * limit. */
static int pump_rows(Session *s, RqError *err)
{
    PlugRun *pr = &s->plug;
    CursorOp *op = &pr->cop;
    Cursor *c = pr->cursor;
    if (op->on_row) {
        op->done = c->pos > 0 && !c->past_end;
        fetch_done(s, op);
        return 1;
    }
    const RqResult *cols = plug_query_columns(c->q);
    const uint8_t *formats;
    uint16_t nf;
    fetch_formats(s, c, &formats, &nf);
    int rows_out = op->kind != 'M';
    int convert = rows_out && needs_conversion(c, cols, formats, nf);
    Buf scratch;
    buf_init(&scratch);
    int rc = 0;
    for (;;) {
        if (op->skip == 0 && op->done == op->want) {
            fetch_done(s, op);
            rc = 1;
            break;
        }
        if (rows_out && pr->max_rows > 0 && pr->rows == (size_t)pr->max_rows) {
            /* Execute's row limit: a FETCH portal keeps its place (the
             * cursor's own Execute just continues from the cursor's) */
            if (op->kind == 'F') {
                if (!pr->portal->cop) pr->portal->cop = xmalloc(sizeof *pr->portal->cop);
                *pr->portal->cop = *op;
            }
            wire_simple(s->out, 's');
            rc = 1;
            break;
        }
        PlugState st = plug_query_state(c->q);
        if (st == PLUG_FAILED) {
            sess_plug_error(s, c->q, err);
            /* the stream is gone: the cursor is dropped with its transaction */
            plug_query_free(c->q);
            c->q = NULL;
            rc = -1;
            break;
        }
        if (rows_out && s->io.queued(s->io.ctx) > 1024 * 1024) {
            /* slow client: the rest waits until its output drains */
            pr->blocked = 1;
            break;
        }
        size_t n;
        if (op->skip) {
            n = plug_query_fetch(c->q, op->skip > SIZE_MAX / 2 ? 0 : (size_t)op->skip, &scratch);
            op->skip -= n;
        } else {
            uint64_t left = op->want - op->done;
            if (rows_out && pr->max_rows > 0 && (uint64_t)pr->max_rows - pr->rows < left)
                left = (uint64_t)pr->max_rows - pr->rows;
            size_t lim = left > SIZE_MAX / 2 ? 0 : (size_t)left;
            if (!rows_out || convert) {
                n = plug_query_fetch(c->q, lim, &scratch);
                if (convert && convert_rows(cols, c->binary, formats, nf, &scratch, s->out, err) < 0) {
                    c->pos += n;
                    rc = -1;
                    break;
                }
            } else {
                n = plug_query_fetch(c->q, lim, s->out);
            }
            op->done += n;
            if (rows_out) pr->rows += n;
        }
        buf_reset(&scratch);
        c->pos += n;
        if (n && rows_out && !s->in_handle) s->io.flush(s->io.ctx);
        if (n == 0) {
            if (!plug_query_finished(c->q)) break;      /* the next batch calls back */
            /* ran dry: positioned after the last row */
            c->past_end = 1;
            op->skip = 0;
            op->want = op->done;
        }
    }
    buf_free(&scratch);
    return rc;
}

int cursor_pump(Session *s, RqError *err)
{
    PlugRun *pr = &s->plug;
    CursorOp *op = &pr->cop;
    if (!op->started) {
        if (s->xact == 'E') {
            rq_error_set(err, "25P02",
                         "current transaction is aborted, commands ignored until end of transaction block");
            return -1;
        }
        if (pr->portal && pr->portal->ran && !pr->portal->cop) {
            /* as in Postgres: a FETCH portal that completed has no more
             * rows; other statements' portals cannot run again */
            if (op->kind == 'F') {
                wire_command_complete(s->out, "FETCH 0");
                return 1;
            }
            rq_error_set(err, "55000", "portal \"%s\" cannot be run", pr->portal->name);
            return -1;
        }
        int rc;
        switch (op->kind) {
        case 'D': rc = start_declare(s, err); break;
        case 'C': rc = run_close(s, err); break;
        default: rc = start_fetch(s, err); break;
        }
        if (rc != 0) {
            if (rc > 0 && pr->portal) pr->portal->ran = 1;
            return rc;
        }
        op->started = 1;
    }
    if (op->kind == 'D') {
        int rc = pump_declare(s, err);
        if (rc > 0 && pr->portal) pr->portal->ran = 1;
        return rc;
    }
    if (!pr->cursor) {
        /* closed under it (cannot happen: statements run one at a time) */
        rq_error_set(err, "34000", "cursor does not exist");
        return -1;
    }
    return pump_rows(s, err);
}

/* ---- Describe and Close of the extended protocol ---- */

int cursor_describe(Session *s, const Prepared *ps, const Portal *p, RqError *err)
{
    const RouteStmt *st = &ps->parse.stmts[0];
    if (!is_node(st, "FetchStmt") || json_is_true(json_object_get(st->node, "ismove"))) {
        wire_simple(s->out, 'n');
        return 0;
    }
    const char *name = jstr(st->node, "portalname");
    Cursor *c = name ? find_cursor(s, name) : NULL;
    const RqResult *cols = c && c->q ? plug_query_columns(c->q) : NULL;
    if (!cols) {
        /* as Postgres: a FETCH of a cursor that is not there describes as
         * no data, and fails when executed */
        wire_simple(s->out, 'n');
        return 0;
    }
    const uint8_t *formats = p ? p->formats : NULL;
    uint16_t nf = p ? p->n_formats : 0;
    if (rq_result_check_formats(cols, formats, nf, err) < 0) return -1;
    rq_result_describe(cols, formats, nf, s->out);
    return 0;
}

int cursor_describe_portal(Session *s, const char *name, RqError *err)
{
    Cursor *c = find_cursor(s, name);
    if (!c) return 0;
    const RqResult *cols = c->q ? plug_query_columns(c->q) : NULL;
    if (!cols) {
        rq_error_set(err, "55000", "portal \"%s\" cannot be run", c->name);
        return 1;
    }
    static const uint8_t binary_fmt[2] = { 0, 1 };
    rq_result_describe(cols, c->binary ? binary_fmt : NULL, c->binary ? 1 : 0, s->out);
    return 1;
}

int cursor_close_portal(Session *s, const char *name)
{
    Cursor *c = find_cursor(s, name);
    if (!c) return 0;
    unlink_cursor(s, c);
    return 1;
}

/* ---- statements on cursors the gateway answers without a plugin ---- */

int cursor_run_local(Session *s, const RouteStmt *st, RqResult *res, RqError *err)
{
    if (is_node(st, "FetchStmt")) {
        /* routed here, so not a cursor of the gateway's */
        const char *name = jstr(st->node, "portalname");
        rq_error_set(err, "34000", "cursor \"%s\" does not exist", name ? name : "");
        return -1;
    }
    if (is_node(st, "ClosePortalStmt")) {
        const char *name = jstr(st->node, "portalname");
        if (name) {
            if (!find_cursor(s, name)) {
                rq_error_set(err, "34000", "cursor \"%s\" does not exist", name);
                return -1;
            }
            unlink_cursor(s, find_cursor(s, name));
            rq_result_set_tag(res, "CLOSE CURSOR");
            return 0;
        }
        cursor_close_all(s);
        rq_result_set_tag(res, "CLOSE CURSOR ALL");
        return 0;
    }
    return 1;
}

/* ---- pg_cursors ---- */

void cursor_view(void *session, const char *view, RqResult *out)
{
    Session *s = session;
    (void)view;
    rq_result_add_column(out, "name", PGT_NAME);
    rq_result_add_column(out, "statement", PGT_TEXT);
    rq_result_add_column(out, "is_holdable", PGT_BOOL);
    rq_result_add_column(out, "is_binary", PGT_BOOL);
    rq_result_add_column(out, "is_scrollable", PGT_BOOL);
    rq_result_add_column(out, "creation_time", PGT_TIMESTAMPTZ);
    out->returns_rows = 1;
    Buf b;
    buf_init(&b);
    for (Cursor *c = s->cursors; c; c = c->next) {
        char ts[64];
        time_t secs = (time_t)(c->created_us / 1000000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        size_t k = strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", &tm);
        snprintf(ts + k, sizeof ts - k, ".%06d+00", (int)(c->created_us % 1000000));
        /* Postgres' spelling: trailing zeros of the fraction dropped */
        RqError e = {0};
        buf_reset(&b);
        if (pgt_text_normalize(PGT_TIMESTAMPTZ, ts, strlen(ts), &b, &e) == 0) {
            buf_append_byte(&b, 0);
        } else {
            rq_error_free(&e);
            buf_reset(&b);
            buf_append_cstr(&b, ts);
        }
        const char *row[6] = { c->name, c->statement, c->holdable ? "t" : "f",
                               c->binary ? "t" : "f", "f", b.data };
        rq_result_add_row(out, row);
    }
    buf_free(&b);
}
