/*
 * Local answers (see local.h).  Expressions are evaluated straight from
 * libpg_query's JSON parse tree into (type, text value, column name)
 * triples; column names follow Postgres' FigureColname rules because tools
 * display them and some drivers key results by them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "riffq/pgtypes.h"
#include "riffq/wire.h"
#include "local.h"

typedef struct Val {
    uint32_t type;
    char *text;             /* owned; NULL = SQL NULL */
    const char *colname;    /* static or points into the parse tree */
} Val;

typedef struct Eval {
    LocalCtx *ctx;
    const char *const *params;      /* NULL when only describing */
    uint16_t n_params;
    const uint32_t *param_types;
    int describe;
    /* SELECT ... FROM a view of the session's: the view, the row column
     * references read, and the names the query gives the view */
    const RqResult *view;
    size_t row;
    const char *view_name;
    const char *view_alias;
} Eval;

static const char *jstr(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static int char_pos(const char *sql, json_int_t loc)
{
    if (!sql || loc < 0) return 0;
    int chars = 0;
    for (json_int_t i = 0; i < loc && sql[i]; i++)
        if (((unsigned char)sql[i] & 0xC0) != 0x80) chars++;
    return chars + 1;
}

static void set_position(const LocalCtx *ctx, RqError *err, json_t *node)
{
    json_t *loc = json_object_get(node, "location");
    if (json_is_integer(loc)) err->position = char_pos(ctx->sql, json_integer_value(loc));
}

/* The single key of a node wrapper {"TypeName": {...}}. */
static const char *node_kind(json_t *n, json_t **inner)
{
    void *it = json_is_object(n) ? json_object_iter(n) : NULL;
    if (!it) {
        *inner = NULL;
        return "";
    }
    *inner = json_object_iter_value(it);
    return json_object_iter_key(it);
}

/* Last component of a qualified name list: [{"String":{"sval":"pg_catalog"}},{"String":{"sval":"int4"}}] */
static const char *last_name(json_t *names)
{
    json_t *last = json_array_get(names, json_array_size(names) - 1);
    json_t *s = json_object_get(last, "String");
    return jstr(s, "sval");
}

static const PgType *type_from_typename(json_t *tn)
{
    const char *name = last_name(json_object_get(tn, "names"));
    if (!name) return NULL;
    const PgType *t = pgt_by_name(name);
    if (t && json_array_size(json_object_get(tn, "arrayBounds")) > 0)
        t = t->array ? pgt_by_oid(t->array) : NULL;
    return t;
}

static int eval_expr(Eval *ev, json_t *n, Val *out, RqError *err);

static int unsupported(Eval *ev, json_t *node, RqError *err, const char *what, const char *name)
{
    if (name)
        rq_error_set(err, "0A000", "%s %s is not supported by riffq's local engine", what, name);
    else
        rq_error_set(err, "0A000", "%s is not supported by riffq's local engine", what);
    rq_error_hint(err, "Route this statement to an upstream or a plugin in the route file.");
    set_position(ev->ctx, err, node);
    return -1;
}

static int eval_const(json_t *c, Val *out)
{
    json_t *v;
    out->colname = "?column?";
    if (json_is_true(json_object_get(c, "isnull"))) {
        out->type = PGT_TEXT;
        out->text = NULL;
    } else if ((v = json_object_get(c, "ival"))) {
        out->type = PGT_INT4;
        out->text = xasprintf("%lld", (long long)json_integer_value(json_object_get(v, "ival")));
    } else if ((v = json_object_get(c, "fval"))) {
        const char *f = jstr(v, "fval");
        /* the grammar makes integers too wide for int4 "floats"; Postgres
         * then types them int8 when they fit, numeric otherwise */
        int integral = f && strspn(f, "-0123456789") == strlen(f);
        out->type = PGT_NUMERIC;
        if (integral) {
            char *end;
            errno = 0;
            strtoll(f, &end, 10);
            if (errno == 0 && *end == 0) out->type = PGT_INT8;
        }
        out->text = xstrdup(f ? f : "0");
    } else if ((v = json_object_get(c, "boolval"))) {
        out->type = PGT_BOOL;
        out->text = xstrdup(json_is_true(json_object_get(v, "boolval")) ? "t" : "f");
    } else if ((v = json_object_get(c, "sval"))) {
        out->type = PGT_TEXT;       /* unknown-type literals resolve to text */
        const char *s = jstr(v, "sval");
        out->text = xstrdup(s ? s : "");
    } else {
        return -1;
    }
    return 0;
}

static int cast_value(Eval *ev, json_t *node, Val *v, const PgType *t, RqError *err)
{
    if (v->text && v->type != t->oid) {
        Buf b;
        buf_init(&b);
        const char *in = v->text;
        /* bool to text-like keeps Postgres' "true"/"false" spelling */
        if (v->type == PGT_BOOL && (t->category == 'S'))
            in = (v->text[0] == 't') ? "true" : "false";
        if (pgt_text_normalize(t->oid, in, strlen(in), &b, err) < 0) {
            buf_free(&b);
            set_position(ev->ctx, err, node);
            return -1;
        }
        buf_append_byte(&b, 0);
        free(v->text);
        v->text = xstrdup(b.data);
        buf_free(&b);
    }
    v->type = t->oid;
    return 0;
}

static int eval_typecast(Eval *ev, json_t *tc, Val *out, RqError *err)
{
    json_t *tn = json_object_get(tc, "typeName");
    const PgType *t = type_from_typename(tn);
    if (!t) {
        const char *name = last_name(json_object_get(tn, "names"));
        rq_error_set(err, "42704", "type \"%s\" does not exist", name ? name : "?");
        set_position(ev->ctx, err, tn);
        return -1;
    }
    if (eval_expr(ev, json_object_get(tc, "arg"), out, err) < 0) return -1;
    if (!strcmp(out->colname, "?column?")) out->colname = t->name;
    return cast_value(ev, tc, out, t, err);
}

static int eval_param(Eval *ev, json_t *p, Val *out, RqError *err)
{
    json_int_t n = json_integer_value(json_object_get(p, "number"));
    out->colname = "?column?";
    if (n < 1 || n > ev->n_params) {
        rq_error_set(err, "42P02", "there is no parameter $%lld", (long long)n);
        set_position(ev->ctx, err, p);
        return -1;
    }
    out->type = ev->param_types ? ev->param_types[n - 1] : PGT_TEXT;
    if (out->type == 0 || out->type == PGT_UNKNOWN) out->type = PGT_TEXT;
    out->text = (ev->params && ev->params[n - 1]) ? xstrdup(ev->params[n - 1]) : NULL;
    return 0;
}

static char *version_string(const LocalCtx *ctx)
{
    /* SQLAlchemy and others regex "PostgreSQL N.N" out of this */
    return xasprintf("PostgreSQL %s on x86_64-pc-linux-gnu, compiled by gcc, 64-bit",
                     ctx->server_version);
}

static int eval_svf(Eval *ev, json_t *f, Val *out, RqError *err)
{
    const char *op = jstr(f, "op");
    LocalCtx *ctx = ev->ctx;
    out->type = PGT_NAME;
    if (!op) return unsupported(ev, f, err, "SQL value function", NULL);
    if (!strcmp(op, "SVFOP_CURRENT_USER") || !strcmp(op, "SVFOP_CURRENT_ROLE") ||
        !strcmp(op, "SVFOP_USER") || !strcmp(op, "SVFOP_SESSION_USER")) {
        out->text = xstrdup(ctx->user);
        out->colname = !strcmp(op, "SVFOP_CURRENT_USER") ? "current_user"
                     : !strcmp(op, "SVFOP_CURRENT_ROLE") ? "current_role"
                     : !strcmp(op, "SVFOP_USER") ? "user" : "session_user";
        return 0;
    }
    if (!strcmp(op, "SVFOP_CURRENT_CATALOG")) {
        out->text = xstrdup(ctx->database);
        out->colname = "current_catalog";
        return 0;
    }
    if (!strcmp(op, "SVFOP_CURRENT_SCHEMA")) {
        out->text = xstrdup("public");
        out->colname = "current_schema";
        return 0;
    }
    return unsupported(ev, f, err, "SQL value function", op + 6);
}

static int func_args(Eval *ev, json_t *args, Val *vals, size_t max, size_t *n, RqError *err)
{
    *n = json_array_size(args);
    if (*n > max) *n = max + 1;
    for (size_t i = 0; i < *n && i < max; i++) {
        if (eval_expr(ev, json_array_get(args, i), &vals[i], err) < 0) {
            for (size_t j = 0; j < i; j++) free(vals[j].text);
            return -1;
        }
    }
    return 0;
}

static int args_between(size_t n, size_t lo, size_t hi)
{
    return n >= lo && n <= hi;
}

static int eval_func(Eval *ev, json_t *f, Val *out, RqError *err)
{
    LocalCtx *ctx = ev->ctx;
    const char *name = last_name(json_object_get(f, "funcname"));
    Val a[3] = {{0}};
    size_t n = 0;
    if (!name) return unsupported(ev, f, err, "function call", NULL);
    out->colname = name;
    if (json_object_get(f, "agg_star") || json_object_get(f, "over"))
        return unsupported(ev, f, err, "function", name);
    if (func_args(ev, json_object_get(f, "args"), a, 3, &n, err) < 0) return -1;
    int rc = 0;
    if (!strcasecmp(name, "version") && args_between(n, 0, 0)) {
        out->type = PGT_TEXT;
        out->text = version_string(ctx);
    } else if (!strcasecmp(name, "current_database") && args_between(n, 0, 0)) {
        out->type = PGT_NAME;
        out->text = xstrdup(ctx->database);
    } else if (!strcasecmp(name, "current_schema") && args_between(n, 0, 0)) {
        out->type = PGT_NAME;
        out->text = xstrdup("public");
    } else if (!strcasecmp(name, "current_schemas") && args_between(n, 1, 1)) {
        out->type = PGT_NAME_ARRAY;
        out->text = xstrdup(a[0].text && a[0].text[0] == 't' ? "{pg_catalog,public}" : "{public}");
    } else if (!strcasecmp(name, "pg_backend_pid") && args_between(n, 0, 0)) {
        out->type = PGT_INT4;
        out->text = xasprintf("%d", ctx->pid);
    } else if (!strcasecmp(name, "pg_is_in_recovery") && args_between(n, 0, 0)) {
        out->type = PGT_BOOL;
        out->text = xstrdup("f");
    } else if (!strcasecmp(name, "current_setting") && args_between(n, 1, 2)) {
        out->type = PGT_TEXT;
        int missing_ok = n == 2 && a[1].text && a[1].text[0] == 't';
        if (!a[0].text) {
            out->text = NULL;
        } else {
            const char *canon, *value;
            if (sess_settings_get(ctx->settings, a[0].text, &canon, &value, err) == 0) {
                out->text = xstrdup(value);
            } else if (missing_ok) {
                rq_error_free(err);
                out->text = NULL;
            } else {
                set_position(ctx, err, f);
                rc = -1;
            }
        }
    } else if (!strcasecmp(name, "set_config") && args_between(n, 3, 3)) {
        out->type = PGT_TEXT;
        if (ev->describe) {
            out->text = NULL;
        } else if (!a[0].text || !a[2].text) {
            rq_error_set(err, "22004", "SET requires parameter name");
            rc = -1;
        } else {
            int is_local = a[2].text[0] == 't';
            if (sess_settings_set(ctx->settings, a[0].text, a[1].text ? a[1].text : "",
                                  is_local, ctx->in_xact, err) < 0) {
                rc = -1;
            } else {
                const char *v = sess_settings_value(ctx->settings, a[0].text);
                out->text = xstrdup(v ? v : "");
            }
        }
    } else {
        rc = unsupported(ev, f, err, "function", name);
        if (n > 0) rq_error_detail(err, "Called with %zu argument(s).", n);
    }
    for (size_t i = 0; i < n && i < 3; i++) free(a[i].text);
    return rc;
}

/* ---- the session's views ----
 *
 * pg_catalog.pg_cursors lists the session's cursors over plugins (they are
 * the gateway's, so no upstream can list them).  The local engine answers
 * the queries tools send it: a projection of its columns (or *, or
 * count(*)), a WHERE of =, <>, IN, IS [NOT] NULL, AND, OR, NOT over its
 * columns, ORDER BY columns, LIMIT and OFFSET.  Anything else is refused
 * with 0A000 naming the construct, never answered wrong. */

/* pg_cursors' columns, in Postgres' order (the session fills the rows in
 * this order: cursor_view). */
static const struct { const char *name; uint32_t type; } pg_cursors_cols[] = {
    { "name", PGT_NAME }, { "statement", PGT_TEXT }, { "is_holdable", PGT_BOOL },
    { "is_binary", PGT_BOOL }, { "is_scrollable", PGT_BOOL }, { "creation_time", PGT_TIMESTAMPTZ },
};

/* The view a SELECT reads, as its RangeVar, when it reads exactly one of
 * the session's views and no other relation. */
static json_t *view_range(const RouteStmt *st)
{
    if (st->kind != STMT_SELECT || st->n_rels != 1) return NULL;
    const RouteRel *r = &st->rels[0];
    if (strcmp(r->name, "pg_cursors") || (r->schema && strcmp(r->schema, "pg_catalog"))) return NULL;
    json_t *from = json_object_get(st->node, "fromClause");
    if (json_array_size(from) != 1) return NULL;
    return json_object_get(json_array_get(from, 0), "RangeVar");
}

static int is_view_column(const char *name, uint32_t *type)
{
    for (size_t i = 0; i < sizeof pg_cursors_cols / sizeof pg_cursors_cols[0]; i++) {
        if (!strcmp(pg_cursors_cols[i].name, name)) {
            if (type) *type = pg_cursors_cols[i].type;
            return 1;
        }
    }
    return 0;
}

/* The column a ColumnRef names: "col", "alias.col", "pg_cursors.col",
 * "pg_catalog.pg_cursors.col".  Returns the column name, NULL for a star
 * (star_ok) or an error. */
static const char *view_column_name(Eval *ev, json_t *cref, int star_ok, int *star, RqError *err)
{
    json_t *fields = json_object_get(cref, "fields");
    size_t n = json_array_size(fields);
    *star = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        const char *q = jstr(json_object_get(json_array_get(fields, i), "String"), "sval");
        const char *want = (n == 3 && i == 0) ? "pg_catalog"
                         : ev->view_alias ? ev->view_alias : ev->view_name;
        if (n > 3 || !q || strcmp(q, want) || (n == 3 && ev->view_alias)) {
            rq_error_set(err, "42P01", "missing FROM-clause entry for table \"%s\"", q ? q : "?");
            set_position(ev->ctx, err, cref);
            return NULL;
        }
    }
    json_t *last = json_array_get(fields, n - 1);
    if (json_object_get(last, "A_Star")) {
        if (!star_ok) unsupported(ev, cref, err, "* in an expression", NULL);
        else *star = 1;
        return NULL;
    }
    const char *col = jstr(json_object_get(last, "String"), "sval");
    if (!col || !is_view_column(col, NULL)) {
        rq_error_set(err, "42703", "column \"%s\" does not exist", col ? col : "?");
        set_position(ev->ctx, err, cref);
        return NULL;
    }
    return col;
}

static int eval_column(Eval *ev, json_t *cref, Val *out, RqError *err)
{
    int star;
    const char *col = view_column_name(ev, cref, 0, &star, err);
    if (!col) return -1;
    const RqResult *v = ev->view;
    for (size_t i = 0; i < v->n_cols; i++) {
        if (strcmp(v->cols[i].name, col)) continue;
        out->type = v->cols[i].type_oid;
        out->colname = v->cols[i].name;
        const char *text = ev->row < v->n_rows ? v->vals[ev->row * v->n_cols + i] : NULL;
        out->text = text ? xstrdup(text) : NULL;
        return 0;
    }
    rq_error_set(err, "42703", "column \"%s\" does not exist", col);
    return -1;
}

static int is_bool(Eval *ev, json_t *node, const Val *v, const char *what, RqError *err)
{
    if (v->type == PGT_BOOL) return 1;
    const PgType *t = pgt_by_oid(v->type);
    rq_error_set(err, "42804", "argument of %s must be type boolean, not type %s", what, t ? t->name : "unknown");
    set_position(ev->ctx, err, node);
    return 0;
}

/* a = b with b (or a) brought to the column's type; -1 error, else 1
 * (true), 0 (false), 2 (NULL). */
static int compare_eq(Eval *ev, json_t *node, json_t *ln, Val *a, json_t *rn, Val *b, RqError *err)
{
    int lcol = json_object_get(ln, "ColumnRef") != NULL, rcol = json_object_get(rn, "ColumnRef") != NULL;
    if (!lcol && !rcol) {
        unsupported(ev, node, err, "comparison without a column of the view", NULL);
        return -1;
    }
    Val *col = lcol ? a : b, *other = lcol ? b : a;
    if (other->type != col->type) {
        if (other->type != PGT_TEXT && other->type != PGT_UNKNOWN &&
            !(lcol && rcol)) {
            const PgType *ta = pgt_by_oid(a->type), *tb = pgt_by_oid(b->type);
            rq_error_set(err, "42883", "operator does not exist: %s = %s", ta ? ta->name : "unknown",
                         tb ? tb->name : "unknown");
            set_position(ev->ctx, err, node);
            return -1;
        }
        const PgType *t = pgt_by_oid(col->type);
        if (!t || cast_value(ev, node, other, t, err) < 0) return -1;
    }
    if (!a->text || !b->text) return 2;
    return strcmp(a->text, b->text) == 0;
}

static int eval_operator(Eval *ev, json_t *ae, Val *out, RqError *err)
{
    const char *kind = jstr(ae, "kind");
    const char *op = last_name(json_object_get(ae, "name"));
    int in = kind && !strcmp(kind, "AEXPR_IN");
    if (!ev->view || !kind || !op || (!in && strcmp(kind, "AEXPR_OP")) ||
        (strcmp(op, "=") && strcmp(op, "<>") && strcmp(op, "!=")))
        return unsupported(ev, ae, err, "operator expression", op && ev->view ? op : NULL);
    int negate = strcmp(op, "=") != 0;
    json_t *ln = json_object_get(ae, "lexpr"), *rn = json_object_get(ae, "rexpr");
    Val a;
    if (eval_expr(ev, ln, &a, err) < 0) return -1;
    int res = 0;       /* 0 false, 1 true, 2 NULL */
    if (in) {
        json_t *items = json_object_get(json_object_get(rn, "List"), "items");
        size_t i;
        json_t *item;
        json_array_foreach(items, i, item) {
            Val b, a2 = { .type = a.type, .text = a.text ? xstrdup(a.text) : NULL, .colname = a.colname };
            if (eval_expr(ev, item, &b, err) < 0) {
                free(a2.text);
                res = -1;
                break;
            }
            int r = compare_eq(ev, ae, ln, &a2, item, &b, err);
            free(a2.text);
            free(b.text);
            if (r < 0) { res = -1; break; }
            if (r == 1) { res = 1; break; }
            if (r == 2) res = 2;
        }
    } else {
        Val b;
        if (eval_expr(ev, rn, &b, err) < 0) {
            free(a.text);
            return -1;
        }
        res = compare_eq(ev, ae, ln, &a, rn, &b, err);
        free(b.text);
    }
    free(a.text);
    if (res < 0) return -1;
    out->type = PGT_BOOL;
    out->colname = "?column?";
    out->text = res == 2 ? NULL : xstrdup((res == 1) != negate ? "t" : "f");
    return 0;
}

static int eval_boolexpr(Eval *ev, json_t *be, Val *out, RqError *err)
{
    const char *op = jstr(be, "boolop");
    if (!ev->view || !op) return unsupported(ev, be, err, "boolean expression", NULL);
    int is_and = !strcmp(op, "AND_EXPR"), is_not = !strcmp(op, "NOT_EXPR");
    const char *what = is_and ? "AND" : is_not ? "NOT" : "OR";
    /* three-valued: AND is false if any is, OR true if any is, else NULL
     * if any is NULL */
    int any_null = 0, decided = 0;
    size_t i;
    json_t *arg;
    json_array_foreach(json_object_get(be, "args"), i, arg) {
        Val v;
        if (eval_expr(ev, arg, &v, err) < 0) return -1;
        if (!is_bool(ev, arg, &v, what, err)) {
            free(v.text);
            return -1;
        }
        if (!v.text) any_null = 1;
        else if (is_not) decided = v.text[0] == 'f' ? 1 : -1;
        else if (is_and && v.text[0] == 'f') decided = -1;
        else if (!is_and && v.text[0] == 't') decided = 1;
        free(v.text);
    }
    out->type = PGT_BOOL;
    out->colname = "?column?";
    if (decided) out->text = xstrdup(decided > 0 ? "t" : "f");
    else out->text = any_null || is_not ? NULL : xstrdup(is_and ? "t" : "f");
    return 0;
}

static int eval_nulltest(Eval *ev, json_t *nt, Val *out, RqError *err)
{
    const char *t = jstr(nt, "nulltesttype");
    if (!ev->view || !t) return unsupported(ev, nt, err, "IS NULL test", NULL);
    Val v;
    if (eval_expr(ev, json_object_get(nt, "arg"), &v, err) < 0) return -1;
    int is_null = v.text == NULL;
    free(v.text);
    out->type = PGT_BOOL;
    out->colname = "?column?";
    out->text = xstrdup(is_null == !strcmp(t, "IS_NULL") ? "t" : "f");
    return 0;
}

static int eval_expr(Eval *ev, json_t *n, Val *out, RqError *err)
{
    json_t *inner;
    const char *kind = node_kind(n, &inner);
    memset(out, 0, sizeof *out);
    if (!strcmp(kind, "A_Const")) {
        if (eval_const(inner, out) < 0) return unsupported(ev, inner, err, "constant", NULL);
        return 0;
    }
    if (!strcmp(kind, "TypeCast")) return eval_typecast(ev, inner, out, err);
    if (!strcmp(kind, "ParamRef")) return eval_param(ev, inner, out, err);
    if (!strcmp(kind, "FuncCall")) return eval_func(ev, inner, out, err);
    if (!strcmp(kind, "SQLValueFunction")) return eval_svf(ev, inner, out, err);
    if (!strcmp(kind, "ColumnRef") && ev->view) return eval_column(ev, inner, out, err);
    if (!strcmp(kind, "BoolExpr") && ev->view) return eval_boolexpr(ev, inner, out, err);
    if (!strcmp(kind, "NullTest") && ev->view) return eval_nulltest(ev, inner, out, err);
    if (!strcmp(kind, "ColumnRef")) {
        rq_error_set(err, "42703", "column reference without a FROM clause");
        rq_error_hint(err, "riffq answers SELECTs without FROM itself; route table queries to an upstream or plugin.");
        set_position(ev->ctx, err, inner);
        return -1;
    }
    if (!strcmp(kind, "A_Expr")) return eval_operator(ev, inner, out, err);
    return unsupported(ev, inner, err, "expression", kind);
}

/* ---- parameter type inference ---- */

typedef struct Infer {
    uint32_t *types;
    uint16_t *maxn;
} Infer;

static void visit_params(const char *key, json_t *v, void *ctx)
{
    Infer *in = ctx;
    if (!strcmp(key, "ParamRef")) {
        json_int_t num = json_integer_value(json_object_get(v, "number"));
        if (num > 0 && num <= WIRE_MAX_PARAMS && num > *in->maxn) *in->maxn = (uint16_t)num;
    } else if (!strcmp(key, "TypeCast")) {
        json_t *pr = json_object_get(json_object_get(v, "arg"), "ParamRef");
        if (pr) {
            json_int_t num = json_integer_value(json_object_get(pr, "number"));
            const PgType *t = type_from_typename(json_object_get(v, "typeName"));
            if (in->types && num > 0 && num <= *in->maxn && t && in->types[num - 1] == 0)
                in->types[num - 1] = t->oid;
        }
    }
}

/* In a query of a view, `col = $n` and `col IN ($n, ...)` give $n the
 * column's type, as Postgres infers it. */
static void infer_view_param(Infer *in, json_t *node, uint32_t type)
{
    json_int_t num = json_integer_value(json_object_get(json_object_get(node, "ParamRef"), "number"));
    if (in->types && num > 0 && num <= *in->maxn && in->types[num - 1] == 0) in->types[num - 1] = type;
}

static void visit_view_params(const char *key, json_t *v, void *ctx)
{
    if (strcmp(key, "A_Expr")) return;
    json_t *l = json_object_get(v, "lexpr"), *r = json_object_get(v, "rexpr");
    json_t *fields = json_object_get(json_object_get(l, "ColumnRef"), "fields");
    json_t *last = json_array_get(fields, json_array_size(fields) - 1);
    uint32_t type;
    const char *col = jstr(json_object_get(last, "String"), "sval");
    if (!col) {
        /* $1 = col */
        fields = json_object_get(json_object_get(r, "ColumnRef"), "fields");
        last = json_array_get(fields, json_array_size(fields) - 1);
        col = jstr(json_object_get(last, "String"), "sval");
        if (col && is_view_column(col, &type)) infer_view_param(ctx, l, type);
        return;
    }
    if (!is_view_column(col, &type)) return;
    infer_view_param(ctx, r, type);
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(json_object_get(r, "List"), "items"), i, item)
        infer_view_param(ctx, item, type);
}

uint32_t *local_param_types(const RouteStmt *st, const uint32_t *declared, uint16_t n_declared,
                            uint16_t min_n, uint16_t *n_out)
{
    /* two walks: the count, then the types into an array of that size (a
     * Parse must not pay for 65535 possible parameters) */
    uint16_t maxn = n_declared > min_n ? n_declared : min_n;
    Infer in = { .types = NULL, .maxn = &maxn };
    if (st && st->node) route_json_walk(st->node, visit_params, &in);
    uint32_t *types = xcalloc((size_t)maxn + 1, sizeof *types);
    in.types = types;
    if (st && st->node) route_json_walk(st->node, visit_params, &in);
    if (st && view_range(st)) route_json_walk(json_object_get(st->node, "whereClause"), visit_view_params, &in);
    for (uint16_t i = 0; i < maxn; i++) {
        uint32_t t = i < n_declared ? declared[i] : 0;
        if (t == 0) t = types[i];
        if (t == 0) t = PGT_TEXT;
        types[i] = t;
    }
    *n_out = maxn;
    return types;
}

/* ---- statements ---- */

static int select_is_local(json_t *sel)
{
    static const char *allowed[] = { "targetList", "limitOption", "op" };
    const char *key;
    json_t *v;
    json_object_foreach(sel, key, v) {
        int ok = 0;
        for (size_t i = 0; i < 3; i++) if (!strcmp(key, allowed[i])) ok = 1;
        if (!ok) return 0;
    }
    const char *op = jstr(sel, "op");
    return !op || !strcmp(op, "SETOP_NONE");
}

int local_handles(const RouteStmt *st)
{
    if (st->kind == STMT_SET || st->kind == STMT_SHOW) return 1;
    if (st->kind == STMT_SELECT) return select_is_local(st->node) || view_range(st) != NULL;
    return 0;
}

static int run_select(LocalCtx *ctx, const RouteStmt *st, Eval *ev, RqResult *out, RqError *err)
{
    json_t *tl = json_object_get(st->node, "targetList");
    size_t n = json_array_size(tl);
    Val vals[n ? n : 1];
    memset(vals, 0, sizeof vals);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *rt = json_object_get(json_array_get(tl, i), "ResTarget");
        if (eval_expr(ev, json_object_get(rt, "val"), &vals[i], err) < 0) {
            rc = -1;
            break;
        }
        const char *alias = jstr(rt, "name");
        rq_result_add_column(out, alias ? alias : vals[i].colname, vals[i].type);
    }
    if (rc == 0) {
        out->returns_rows = 1;
        if (!ev->describe) {
            const char *row[n ? n : 1];
            for (size_t i = 0; i < n; i++) row[i] = vals[i].text;
            rq_result_add_row(out, row);
        }
        rq_result_set_tag(out, "SELECT");
    }
    for (size_t i = 0; i < n; i++) free(vals[i].text);
    (void)ctx;
    return rc;
}

/* Text of a SET argument list, as Postgres flattens it. */
static char *set_args_text(const char *name, json_t *args)
{
    Buf b;
    buf_init(&b);
    size_t i;
    json_t *a;
    int list = !strcasecmp(name, "search_path");
    json_array_foreach(args, i, a) {
        json_t *c = json_object_get(a, "A_Const");
        json_t *tc = json_object_get(a, "TypeCast");
        if (tc) c = json_object_get(json_object_get(tc, "arg"), "A_Const");
        Val v = {0};
        if (i) buf_append_str(&b, ", ");
        if (c && eval_const(c, &v) == 0 && v.text) {
            /* quote list items that are not plain lower-case identifiers */
            int plain = strspn(v.text, "abcdefghijklmnopqrstuvwxyz0123456789_") == strlen(v.text) && v.text[0];
            if (list && !plain) buf_printf(&b, "\"%s\"", v.text);
            else buf_append_str(&b, v.text);
        }
        free(v.text);
    }
    buf_append_byte(&b, 0);
    char *s = xstrdup(b.data);
    buf_free(&b);
    return s;
}

static const char *canonical_set_name(const char *name)
{
    if (!strcasecmp(name, "timezone")) return "TimeZone";
    return name;
}

static int run_set(LocalCtx *ctx, const RouteStmt *st, RqResult *out, RqError *err)
{
    const char *kind = jstr(st->node, "kind");
    const char *name = jstr(st->node, "name");
    int is_local = json_is_true(json_object_get(st->node, "is_local"));
    int rc = 0;
    if (!kind) kind = "";
    if (!strcmp(kind, "VAR_RESET_ALL")) {
        sess_settings_reset_all(ctx->settings, ctx->in_xact);
        rq_result_set_tag(out, "RESET");
        return 0;
    }
    if (!name) {
        rq_error_set(err, "0A000", "this form of SET is not supported by riffq");
        return -1;
    }
    if (!strcmp(kind, "VAR_SET_MULTI")) {
        /* SET TRANSACTION / SESSION CHARACTERISTICS: nothing runs here to
         * apply them to, so accept them without effect */
        rq_result_set_tag(out, "SET");
        return 0;
    }
    name = canonical_set_name(name);
    if (!strcmp(kind, "VAR_SET_VALUE")) {
        char *v = set_args_text(name, json_object_get(st->node, "args"));
        rc = sess_settings_set(ctx->settings, name, v, is_local, ctx->in_xact, err);
        free(v);
    } else if (!strcmp(kind, "VAR_SET_DEFAULT") || !strcmp(kind, "VAR_RESET")) {
        rc = sess_settings_set(ctx->settings, name, NULL, is_local, ctx->in_xact, err);
    } else {
        rq_error_set(err, "0A000", "SET %s FROM CURRENT is not supported by riffq", name);
        rc = -1;
    }
    if (rc == 0) rq_result_set_tag(out, strcmp(kind, "VAR_RESET") ? "SET" : "RESET");
    return rc;
}

static int run_show(LocalCtx *ctx, const RouteStmt *st, Eval *ev, RqResult *out, RqError *err)
{
    const char *name = jstr(st->node, "name");
    if (!name) name = "";
    if (!strncasecmp(name, "riffq.", 6)) {
        if (admin_show(ctx->env, name, ev->describe, out, err) < 0) return -1;
    } else if (!strcasecmp(name, "all")) {
        sess_settings_show_all(ctx->settings, out);
        if (ev->describe) {
            for (size_t i = 0; i < out->n_rows * out->n_cols; i++) free(out->vals[i]);
            out->n_rows = 0;
        }
    } else {
        const char *canon, *value;
        if (sess_settings_get(ctx->settings, canonical_set_name(name), &canon, &value, err) < 0)
            return -1;
        rq_result_add_column(out, canon, PGT_TEXT);
        if (!ev->describe) {
            const char *row[1] = { value };
            rq_result_add_row(out, row);
        }
    }
    rq_result_set_tag(out, "SHOW");
    return 0;
}

/* An output column of a SELECT over a view. */
typedef struct OutCol {
    const char *name;
    uint32_t type;
    int view_col;           /* >= 0: that column of the view (from *) */
    json_t *expr;           /* else an expression evaluated per row */
    int count;              /* count(*) */
} OutCol;

static int is_count_star(json_t *n)
{
    json_t *f = json_object_get(n, "FuncCall");
    const char *name = f ? last_name(json_object_get(f, "funcname")) : NULL;
    return name && !strcasecmp(name, "count") && json_is_true(json_object_get(f, "agg_star")) &&
           !json_object_get(f, "over") && !json_object_get(f, "agg_filter");
}

/* Value of an output column for view row r (count: rows counted). */
static int out_value(Eval *ev, const OutCol *oc, size_t r, size_t count, char **text, RqError *err)
{
    if (oc->count) {
        *text = xasprintf("%zu", count);
        return 0;
    }
    if (oc->view_col >= 0) {
        const char *v = r < ev->view->n_rows ? ev->view->vals[r * ev->view->n_cols + (size_t)oc->view_col] : NULL;
        *text = v ? xstrdup(v) : NULL;
        return 0;
    }
    Val v;
    ev->row = r;
    if (eval_expr(ev, oc->expr, &v, err) < 0) return -1;
    *text = v.text;
    return 0;
}

static int view_bound(Eval *ev, json_t *node, const char *what, const char *sqlstate, size_t *out, RqError *err)
{
    if (!node) return 0;
    Eval cev = *ev;
    cev.view = NULL;        /* constants and parameters only */
    Val v;
    if (eval_expr(&cev, node, &v, err) < 0) return -1;
    if (!v.text) return 0;  /* LIMIT ALL / NULL */
    char *end;
    long long n = strtoll(v.text, &end, 10);
    int bad = *end != 0;
    free(v.text);
    if (bad) return unsupported(ev, node, err, what, "with a value that is not an integer");
    if (n < 0) {
        rq_error_set(err, sqlstate, "%s must not be negative", what);
        return -1;
    }
    *out = (size_t)n;
    return 0;
}

typedef struct SortKey {
    const OutCol *col;
    int desc, nulls_first;
} SortKey;

typedef struct SortRows {
    char **keys;            /* n_rows * n_keys */
    const SortKey *sk;
    size_t n_keys;
} SortRows;

static int cmp_rows(const void *a, const void *b, void *arg)
{
    const SortRows *sr = arg;
    size_t ra = *(const size_t *)a, rb = *(const size_t *)b;
    for (size_t k = 0; k < sr->n_keys; k++) {
        const char *x = sr->keys[ra * sr->n_keys + k], *y = sr->keys[rb * sr->n_keys + k];
        if (!x || !y) {
            if (!x && !y) continue;
            return (!x) == sr->sk[k].nulls_first ? -1 : 1;
        }
        /* name (C collation), text, bool 'f' < 't', and timestamptz (all
         * in UTC, with the same suffix): byte order is value order */
        int c = strcmp(x, y);
        if (c) return sr->sk[k].desc ? -c : c;
    }
    return ra < rb ? -1 : ra > rb;
}

static void visit_colref(const char *key, json_t *v, void *ctx)
{
    (void)v;
    if (!strcmp(key, "ColumnRef")) *(int *)ctx = 1;
}

static int refs_column(json_t *node)
{
    int found = 0;
    route_json_walk(node, visit_colref, &found);
    return found;
}

static int run_view_select(LocalCtx *ctx, const RouteStmt *st, json_t *rv, Eval *ev, RqResult *out,
                           RqError *err)
{
    static const char *allowed[] = { "targetList", "fromClause", "whereClause", "sortClause",
                                     "limitCount", "limitOffset", "limitOption", "op" };
    json_t *sel = st->node;
    const char *key;
    json_t *v;
    json_object_foreach(sel, key, v) {
        int ok = 0;
        for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++) ok |= !strcmp(key, allowed[i]);
        if (!ok) return unsupported(ev, sel, err, "in a query of pg_cursors, the clause", key);
    }
    const char *lo = jstr(sel, "limitOption");
    if (lo && strcmp(lo, "LIMIT_OPTION_DEFAULT") && strcmp(lo, "LIMIT_OPTION_COUNT"))
        return unsupported(ev, sel, err, "FETCH FIRST ... WITH TIES", NULL);
    if (json_object_get(rv, "alias") && json_object_get(json_object_get(rv, "alias"), "colnames"))
        return unsupported(ev, rv, err, "column aliases of pg_cursors", NULL);

    RqResult view;
    rq_result_init(&view);
    if (ctx->view) ctx->view(ctx->view_ud, "pg_cursors", &view);
    if (view.n_cols == 0)
        for (size_t i = 0; i < sizeof pg_cursors_cols / sizeof pg_cursors_cols[0]; i++)
            rq_result_add_column(&view, pg_cursors_cols[i].name, pg_cursors_cols[i].type);
    ev->view = &view;
    ev->view_name = jstr(rv, "relname");
    ev->view_alias = jstr(json_object_get(rv, "alias"), "aliasname");
    ev->row = SIZE_MAX;

    json_t *tl = json_object_get(sel, "targetList");
    size_t n_tl = json_array_size(tl), n_out = 0, cap = n_tl + view.n_cols;
    OutCol *oc = xcalloc(cap ? cap : 1, sizeof *oc);
    size_t n_rows = view.n_rows, n_keep = 0;
    size_t *keep = xcalloc(n_rows ? n_rows : 1, sizeof *keep);
    SortKey *sk = NULL;
    SortRows sr = {0};
    int aggregate = 0, plain = 0, rc = -1;
    /* the output columns; each is typed by evaluating it without a row */
    for (size_t i = 0; i < n_tl; i++) {
        json_t *rt = json_object_get(json_array_get(tl, i), "ResTarget");
        json_t *val = json_object_get(rt, "val");
        const char *alias = jstr(rt, "name");
        json_t *cref = json_object_get(val, "ColumnRef");
        int star = 0;
        if (cref) {
            RqError e = {0};
            view_column_name(ev, cref, 1, &star, &e);
            if (!star) rq_error_free(&e);
            else if (rq_error_is_set(&e)) {
                rq_error_move(err, &e);
                goto done;
            }
        }
        if (star) {
            for (size_t c = 0; c < view.n_cols; c++)
                oc[n_out++] = (OutCol){ .name = view.cols[c].name, .type = view.cols[c].type_oid, .view_col = (int)c };
            plain = 1;
            continue;
        }
        if (is_count_star(val)) {
            oc[n_out++] = (OutCol){ .name = alias ? alias : "count", .type = PGT_INT8, .view_col = -1, .count = 1 };
            aggregate = 1;
            continue;
        }
        Val tv;
        if (eval_expr(ev, val, &tv, err) < 0) goto done;
        oc[n_out++] = (OutCol){ .name = alias ? alias : tv.colname, .type = tv.type, .view_col = -1, .expr = val };
        free(tv.text);
        plain |= refs_column(val);
    }
    if (aggregate && plain) {
        rq_error_set(err, "42803", "in a query of pg_cursors, count(*) can only be selected with constants");
        rq_error_hint(err, "riffq answers pg_cursors without GROUP BY.");
        goto done;
    }
    for (size_t i = 0; i < n_out; i++) rq_result_add_column(out, oc[i].name, oc[i].type);
    out->returns_rows = 1;
    rq_result_set_tag(out, "SELECT");

    /* the rows WHERE keeps (describe: check the expression only) */
    json_t *where = json_object_get(sel, "whereClause");
    if (where) {
        Val w;
        if (eval_expr(ev, where, &w, err) < 0) goto done;
        free(w.text);
        if (!is_bool(ev, where, &w, "WHERE", err)) goto done;
    }
    for (size_t r = 0; r < n_rows && !ev->describe; r++) {
        if (where) {
            Val w;
            ev->row = r;
            if (eval_expr(ev, where, &w, err) < 0) goto done;
            int yes = w.text && w.text[0] == 't';
            free(w.text);
            if (!yes) continue;
        }
        keep[n_keep++] = r;
    }

    /* ORDER BY: output columns by position or name, or expressions */
    json_t *sort = json_object_get(sel, "sortClause");
    size_t n_sk = json_array_size(sort);
    sk = xcalloc(n_sk ? n_sk : 1, sizeof *sk);
    OutCol *extra = xcalloc(n_sk ? n_sk : 1, sizeof *extra);
    for (size_t k = 0; k < n_sk; k++) {
        json_t *sb = json_object_get(json_array_get(sort, k), "SortBy");
        json_t *node = json_object_get(sb, "node");
        const char *dir = jstr(sb, "sortby_dir"), *nulls = jstr(sb, "sortby_nulls");
        if (json_object_get(sb, "useOp")) {
            free(extra);
            unsupported(ev, sb, err, "ORDER BY ... USING", NULL);
            goto done;
        }
        sk[k].desc = dir && !strcmp(dir, "SORTBY_DESC");
        sk[k].nulls_first = nulls ? !strcmp(nulls, "SORTBY_NULLS_FIRST") : sk[k].desc;
        json_t *ic = json_object_get(json_object_get(json_object_get(node, "A_Const"), "ival"), "ival");
        json_t *cr = json_object_get(json_object_get(node, "ColumnRef"), "fields");
        if (json_object_get(node, "A_Const")) {
            json_int_t pos = ic ? json_integer_value(ic) : 0;
            if (pos < 1 || (size_t)pos > n_out) {
                free(extra);
                rq_error_set(err, "42P10", "ORDER BY position %lld is not in select list", (long long)pos);
                set_position(ctx, err, node);
                goto done;
            }
            sk[k].col = &oc[pos - 1];
            continue;
        }
        const char *one = json_array_size(cr) == 1
                        ? jstr(json_object_get(json_array_get(cr, 0), "String"), "sval") : NULL;
        for (size_t i = 0; one && i < n_out && !sk[k].col; i++)
            if (!strcmp(oc[i].name, one) && (oc[i].view_col >= 0 || oc[i].count || oc[i].expr)) sk[k].col = &oc[i];
        if (!sk[k].col) {
            Val tv;
            if (eval_expr(ev, node, &tv, err) < 0) {
                free(extra);
                goto done;
            }
            free(tv.text);
            extra[k] = (OutCol){ .view_col = -1, .expr = node };
            sk[k].col = &extra[k];
        }
    }
    if (n_sk && n_keep > 1 && !aggregate) {
        sr = (SortRows){ .keys = xcalloc(n_rows * n_sk, sizeof *sr.keys), .sk = sk, .n_keys = n_sk };
        for (size_t i = 0; i < n_keep; i++)
            for (size_t k = 0; k < n_sk; k++)
                if (out_value(ev, sk[k].col, keep[i], 0, &sr.keys[keep[i] * n_sk + k], err) < 0) {
                    free(extra);
                    goto done;
                }
        qsort_r(keep, n_keep, sizeof *keep, cmp_rows, &sr);
    }
    free(extra);

    size_t offset = 0, limit = SIZE_MAX;
    if (view_bound(ev, json_object_get(sel, "limitOffset"), "OFFSET", "2201X", &offset, err) < 0) goto done;
    if (view_bound(ev, json_object_get(sel, "limitCount"), "LIMIT", "2201W", &limit, err) < 0) goto done;
    if (ev->describe) {
        rc = 0;
        goto done;
    }
    const char **row = xcalloc(n_out ? n_out : 1, sizeof *row);
    char **texts = xcalloc(n_out ? n_out : 1, sizeof *texts);
    size_t emitted = 0;
    rc = 0;
    if (aggregate) {
        /* one row, whatever LIMIT says unless it is 0 */
        if (offset == 0 && limit > 0) {
            for (size_t i = 0; i < n_out && rc == 0; i++) {
                rc = out_value(ev, &oc[i], SIZE_MAX, n_keep, &texts[i], err);
                row[i] = texts[i];
            }
            if (rc == 0) rq_result_add_row(out, row);
            for (size_t i = 0; i < n_out; i++) free(texts[i]);
        }
    } else {
        for (size_t i = offset; i < n_keep && emitted < limit && rc == 0; i++, emitted++) {
            for (size_t c = 0; c < n_out && rc == 0; c++) {
                rc = out_value(ev, &oc[c], keep[i], 0, &texts[c], err);
                row[c] = texts[c];
            }
            if (rc == 0) rq_result_add_row(out, row);
            for (size_t c = 0; c < n_out; c++) {
                free(texts[c]);
                texts[c] = NULL;
            }
        }
    }
    free(row);
    free(texts);
done:
    if (sr.keys) {
        for (size_t i = 0; i < n_rows * sr.n_keys; i++) free(sr.keys[i]);
        free(sr.keys);
    }
    free(sk);
    free(keep);
    free(oc);
    ev->view = NULL;
    rq_result_free(&view);
    if (rc < 0 && !strcmp(err->sqlstate, "0A000"))
        rq_error_hint(err, "pg_cursors lists the gateway's cursors over plugins; select its columns, filter with =, <>, IN, IS NULL, AND, OR, NOT, and ORDER BY, LIMIT, OFFSET.");
    return rc;
}

int local_run(LocalCtx *ctx, const RouteStmt *st, const char *const *params, uint16_t n_params,
              const uint32_t *param_types, RqResult *out, RqError *err)
{
    /* describe-only calls pass params == NULL: columns, no rows, no side effects */
    Eval ev = { .ctx = ctx, .params = params, .n_params = n_params,
                .param_types = param_types, .describe = params == NULL };
    switch (st->kind) {
    case STMT_SELECT:
        if (view_range(st)) return run_view_select(ctx, st, view_range(st), &ev, out, err);
        return run_select(ctx, st, &ev, out, err);
    case STMT_SHOW:
        return run_show(ctx, st, &ev, out, err);
    case STMT_SET:
        if (ev.describe) return 0;      /* NoData */
        return run_set(ctx, st, out, err);
    default:
        local_no_route(ctx, st, err);
        return -1;
    }
}

void local_no_route(const LocalCtx *ctx, const RouteStmt *st, RqError *err)
{
    /* a query of a table nothing serves reads, to a client, exactly like a
     * query of a table that does not exist */
    if ((st->kind == STMT_SELECT || !strcmp(st->node_type, "DeclareCursorStmt")) && st->n_rels > 0) {
        const RouteRel *r = &st->rels[0];
        if (r->schema)
            rq_error_set(err, "42P01", "relation \"%s.%s\" does not exist", r->schema, r->name);
        else
            rq_error_set(err, "42P01", "relation \"%s\" does not exist", r->name);
        if (r->location >= 0) err->position = char_pos(ctx->sql, r->location);
        return;
    }
    if (!strcmp(st->node_type, "DeclareCursorStmt")) {
        rq_error_set(err, "0A000", "DECLARE CURSOR is only supported over plugin tables and upstreams");
        rq_error_hint(err, "The gateway answers this query itself, without a cursor: run it as a plain query.");
        return;
    }
    rq_error_set(err, "0A000", "no route for %s statement", route_stmt_tag(st));
    rq_error_hint(err, "Add a route for %s statements to the route file, e.g. to an upstream.",
                  route_kind_name(st->kind));
}
