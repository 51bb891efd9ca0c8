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
    if (!strcmp(kind, "ColumnRef")) {
        rq_error_set(err, "42703", "column reference without a FROM clause");
        rq_error_hint(err, "riffq answers SELECTs without FROM itself; route table queries to an upstream or plugin.");
        set_position(ev->ctx, err, inner);
        return -1;
    }
    if (!strcmp(kind, "A_Expr")) return unsupported(ev, inner, err, "operator expression", NULL);
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
            if (num > 0 && num <= WIRE_MAX_PARAMS && t && in->types[num - 1] == 0)
                in->types[num - 1] = t->oid;
        }
    }
}

void local_param_types(const RouteStmt *st, const uint32_t *declared, uint16_t n_declared,
                       uint32_t *types_out, uint16_t *n_out)
{
    uint16_t maxn = n_declared;
    uint32_t inferred[WIRE_MAX_PARAMS];
    memset(inferred, 0, sizeof inferred);
    Infer in = { .types = inferred, .maxn = &maxn };
    if (st && st->node) route_json_walk(st->node, visit_params, &in);
    for (uint16_t i = 0; i < maxn; i++) {
        uint32_t t = i < n_declared ? declared[i] : 0;
        if (t == 0) t = inferred[i];
        if (t == 0) t = PGT_TEXT;
        types_out[i] = t;
    }
    *n_out = maxn;
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
    if (st->kind == STMT_SELECT) return select_is_local(st->node);
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

int local_run(LocalCtx *ctx, const RouteStmt *st, const char *const *params, uint16_t n_params,
              const uint32_t *param_types, RqResult *out, RqError *err)
{
    /* describe-only calls pass params == NULL: columns, no rows, no side effects */
    Eval ev = { .ctx = ctx, .params = params, .n_params = n_params,
                .param_types = param_types, .describe = params == NULL };
    switch (st->kind) {
    case STMT_SELECT:
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
    if (st->kind == STMT_SELECT && st->n_rels > 0) {
        const RouteRel *r = &st->rels[0];
        if (r->schema)
            rq_error_set(err, "42P01", "relation \"%s.%s\" does not exist", r->schema, r->name);
        else
            rq_error_set(err, "42P01", "relation \"%s\" does not exist", r->name);
        if (r->location >= 0) err->position = char_pos(ctx->sql, r->location);
        return;
    }
    rq_error_set(err, "0A000", "no route for %s statement", route_stmt_tag(st));
    rq_error_hint(err, "Add a route for %s statements to the route file, e.g. to an upstream.",
                  route_kind_name(st->kind));
}
