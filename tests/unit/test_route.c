/*
 * Unit tests for statement classification (libpg_query) and the routing
 * table: kinds, relations (CTEs excluded), syntax errors with positions, and
 * route matching by every match key, first-match order, and the rejection of
 * statements mixing tables of routes with different targets.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include "riffq/config.h"
#include "riffq/route.h"

static RouteParse P;
static RqError E;

static void parse_ok(const char *sql)
{
    memset(&E, 0, sizeof E);
    ck_assert_int_eq(route_parse(sql, &P, &E), 0);
}

static void teardown(void)
{
    route_parse_free(&P);
    rq_error_free(&E);
}

START_TEST(kinds)
{
    static const struct { const char *sql; StmtKind kind; const char *tag; } cases[] = {
        { "SELECT 1", STMT_SELECT, "SELECT" },
        { "insert into t values (1)", STMT_INSERT, "INSERT" },
        { "UPDATE t SET a = 1", STMT_UPDATE, "UPDATE" },
        { "DELETE FROM t", STMT_DELETE, "DELETE" },
        { "CREATE TABLE t (a int)", STMT_DDL, "CREATE TABLE" },
        { "ALTER TABLE t ADD b int", STMT_DDL, "ALTER TABLE" },
        { "DROP TABLE t", STMT_DDL, "DROP" },
        { "COPY t FROM STDIN", STMT_COPY, "COPY" },
        { "BEGIN", STMT_TRANSACTION, "BEGIN" },
        { "SET search_path TO a", STMT_SET, "SET" },
        { "SHOW TimeZone", STMT_SHOW, "SHOW" },
        { "EXPLAIN SELECT 1", STMT_EXPLAIN, "EXPLAIN" },
        { "LISTEN ch", STMT_UTILITY, "LISTEN" },
        { "CREATE EXTENSION hstore", STMT_DDL, "CREATE EXTENSION" },
        { "CREATE TYPE mood AS ENUM ('a')", STMT_DDL, "DDL" },
        { "CREATE TABLE x AS SELECT 1", STMT_DDL, "CREATE TABLE AS" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        parse_ok(cases[i].sql);
        ck_assert_uint_eq(P.n, 1);
        ck_assert_msg(P.stmts[0].kind == cases[i].kind, "%s: kind %s", cases[i].sql,
                      route_kind_name(P.stmts[0].kind));
        ck_assert_str_eq(route_stmt_tag(&P.stmts[0]), cases[i].tag);
        route_parse_free(&P);
    }
}
END_TEST

START_TEST(kind_names_round_trip)
{
    for (int k = 0; k < STMT_KIND_COUNT; k++) {
        StmtKind back;
        ck_assert_int_eq(route_kind_from_name(route_kind_name((StmtKind)k), &back), 0);
        ck_assert_int_eq(back, k);
    }
    StmtKind x;
    ck_assert_int_eq(route_kind_from_name("selekt", &x), -1);
}
END_TEST

START_TEST(relations_and_ctes)
{
    parse_ok("WITH recent AS (SELECT * FROM crm.orders) "
             "SELECT * FROM recent JOIN customers c ON true, crm.orders o2 "
             "WHERE c.id IN (SELECT id FROM billing.invoices)");
    ck_assert_uint_eq(P.n, 1);
    RouteStmt *s = &P.stmts[0];
    /* crm.orders (once), customers, billing.invoices; not the CTE "recent" */
    ck_assert_uint_eq(s->n_rels, 3);
    int saw_customers = 0, saw_invoices = 0, saw_orders = 0;
    for (size_t i = 0; i < s->n_rels; i++) {
        if (!strcmp(s->rels[i].name, "orders")) {
            saw_orders = 1;
            ck_assert_str_eq(s->rels[i].schema, "crm");
        }
        if (!strcmp(s->rels[i].name, "customers")) {
            saw_customers = 1;
            ck_assert_ptr_null(s->rels[i].schema);
        }
        if (!strcmp(s->rels[i].name, "invoices")) saw_invoices = 1;
        ck_assert_str_ne(s->rels[i].name, "recent");
    }
    ck_assert(saw_customers && saw_invoices && saw_orders);
}
END_TEST

START_TEST(multi_statement_text)
{
    parse_ok("  SELECT 1 ;\n  insert into t values (2);SHOW x");
    ck_assert_uint_eq(P.n, 3);
    ck_assert_str_eq(P.stmts[0].text, "SELECT 1");
    ck_assert_str_eq(P.stmts[1].text, "insert into t values (2)");
    ck_assert_str_eq(P.stmts[2].text, "SHOW x");
    ck_assert_uint_eq(P.stmts[1].n_rels, 1);
    ck_assert_str_eq(P.stmts[1].rels[0].name, "t");
    ck_assert_uint_eq(P.stmts[2].n_rels, 0);
}
END_TEST

START_TEST(empty_and_comment_only)
{
    parse_ok("");
    ck_assert_uint_eq(P.n, 0);
    route_parse_free(&P);
    parse_ok("  -- nothing here\n ;");
    ck_assert_uint_eq(P.n, 0);
}
END_TEST

START_TEST(syntax_error_position)
{
    memset(&E, 0, sizeof E);
    ck_assert_int_eq(route_parse("SELECT 1; SELEC 2", &P, &E), -1);
    ck_assert_str_eq(E.sqlstate, "42601");
    ck_assert_str_eq(E.message, "syntax error at or near \"SELEC\"");
    ck_assert_int_eq(E.position, 11);
    rq_error_free(&E);
    /* positions count characters, not bytes */
    ck_assert_int_eq(route_parse("SELECT 'é' FORM t", &P, &E), -1);
    ck_assert_str_eq(E.message, "syntax error at or near \"t\"");
    ck_assert_int_eq(E.position, 17);
}
END_TEST

START_TEST(cache_shares_parses)
{
    uint64_t h0, m0, h1, m1;
    route_cache_stats(&h0, &m0);
    RouteParse a, b, c;
    RqError e = {0};
    ck_assert_int_eq(route_parse("SELECT * FROM cached_t WHERE x = $1", &a, &e), 0);
    ck_assert_int_eq(route_parse("SELECT * FROM cached_t WHERE x = $1", &b, &e), 0);
    route_cache_stats(&h1, &m1);
    ck_assert_uint_eq(m1 - m0, 1);
    ck_assert_uint_eq(h1 - h0, 1);
    /* the second is the same tree, not a re-parse */
    ck_assert_ptr_eq(a.root, b.root);
    ck_assert_ptr_eq(a.stmts, b.stmts);
    ck_assert_str_eq(b.stmts[0].rels[0].name, "cached_t");
    /* a different text is parsed */
    ck_assert_int_eq(route_parse("SELECT * FROM cached_u", &c, &e), 0);
    ck_assert_ptr_ne(c.root, a.root);
    /* copies outlive each other in any order */
    route_parse_free(&a);
    ck_assert_str_eq(b.stmts[0].text, "SELECT * FROM cached_t WHERE x = $1");
    route_parse_free(&b);
    route_parse_free(&c);
    /* syntax errors are not cached: each call reports the error again */
    ck_assert_int_eq(route_parse("SELEKT", &a, &e), -1);
    rq_error_free(&e);
    ck_assert_int_eq(route_parse("SELEKT", &a, &e), -1);
    ck_assert_str_eq(e.sqlstate, "42601");
    rq_error_free(&e);
}
END_TEST

START_TEST(cache_eviction_keeps_held_copies)
{
    RouteParse held;
    RqError e = {0};
    ck_assert_int_eq(route_parse("SELECT 'held' FROM evict_me", &held, &e), 0);
    /* churn far more statements than the cache has slots */
    for (int i = 0; i < 3000; i++) {
        char sql[64];
        RouteParse p;
        snprintf(sql, sizeof sql, "SELECT %d FROM churn_%d", i, i);
        ck_assert_int_eq(route_parse(sql, &p, &e), 0);
        ck_assert_uint_eq(p.stmts[0].n_rels, 1);
        route_parse_free(&p);
    }
    ck_assert_str_eq(held.stmts[0].rels[0].name, "evict_me");
    route_parse_free(&held);
}
END_TEST

/* ---- routing table ---- */

static Config *load(const char *json)
{
    char *err = NULL;
    Config *c = cfg_load_string(json, "test.json", &err);
    ck_assert_msg(c != NULL, "config: %s", err ? err : "?");
    return c;
}

static const char *ROUTES =
    "{\"upstreams\": {\"crm\": {\"conninfo\": \"host=a\"}, \"billing\": {\"conninfo\": \"host=b\"}},"
    " \"plugins\": {\"demo\": {\"module\": \"x.py\"}},"
    " \"routes\": ["
    "  {\"name\": \"ro\", \"match\": {\"statement\": [\"delete\", \"update\"], \"user\": [\"analyst\"]},"
    "   \"to\": \"reject\", \"message\": \"analysts are read-only\"},"
    "  {\"name\": \"live\", \"match\": {\"tables\": [\"sales_live\", \"public.hot\"]}, \"to\": \"plugin:demo\"},"
    "  {\"name\": \"crm\", \"match\": {\"schemas\": [\"crm\"]}, \"to\": \"upstream:crm\"},"
    "  {\"name\": \"bill\", \"match\": {\"tables\": [\"billing.*\"]}, \"to\": \"upstream:billing\"},"
    "  {\"name\": \"office\", \"match\": {\"client\": [\"10.1.0.0/16\", \"::1\"], \"regex\": \"^select .*pg_sleep\"},"
    "   \"to\": \"reject\"},"
    "  {\"name\": \"app\", \"match\": {\"application_name\": [\"report\"], \"database\": [\"dw\"]}, \"to\": \"upstream:billing\"},"
    "  {\"name\": \"rest\", \"to\": \"upstream:crm\"}"
    " ]}";

static int route_of(RouteTable *t, const RouteClient *c, const char *sql, RqError *err)
{
    RouteParse p;
    RqError perr = {0};
    ck_assert_int_eq(route_parse(sql, &p, &perr), 0);
    int r = route_table_match(t, c, p.n ? &p.stmts[0] : NULL, err, NULL);
    route_parse_free(&p);
    return r;
}

START_TEST(match_order_and_keys)
{
    Config *cfg = load(ROUTES);
    char *err = NULL;
    RouteTable *t = route_table_new(cfg, &err);
    ck_assert_ptr_nonnull(t);
    ck_assert(route_table_needs_parse(t));
    RqError e = {0};
    RouteClient app = { .user = "app", .database = "db", .application_name = "psql" };
    RouteClient analyst = { .user = "analyst", .database = "db" };

    ck_assert_int_eq(route_of(t, &analyst, "DELETE FROM crm.x", &e), 0);
    ck_assert_int_eq(route_of(t, &app, "DELETE FROM crm.x", &e), 2);      /* not an analyst */
    ck_assert_int_eq(route_of(t, &analyst, "SELECT * FROM sales_live", &e), 1);
    ck_assert_int_eq(route_of(t, &app, "select * from public.hot", &e), 1);
    ck_assert_int_eq(route_of(t, &app, "select * from HOT", &e), 1);      /* unqualified = public */
    ck_assert_int_eq(route_of(t, &app, "select * from other.hot", &e), 6);/* other schema: rest */
    ck_assert_int_eq(route_of(t, &app, "select * from billing.invoices", &e), 3);
    ck_assert_int_eq(route_of(t, &app, "select 1", &e), 6);
    RouteClient rep = { .user = "app", .database = "dw", .application_name = "report" };
    ck_assert_int_eq(route_of(t, &rep, "select 1", &e), 5);
    ck_assert_uint_eq(route_table_hits(t, 6), 2);
    ck_assert_uint_eq(route_table_hits(t, 1), 3);
    ck_assert_str_eq(route_table_route(t, 5)->name, "app");
    route_table_free(t);
    cfg_free(cfg);
}
END_TEST

START_TEST(match_client_cidr_and_regex)
{
    Config *cfg = load(ROUTES);
    char *err = NULL;
    RouteTable *t = route_table_new(cfg, &err);
    RqError e = {0};
    struct sockaddr_in in4 = { .sin_family = AF_INET };
    struct sockaddr_in6 in6 = { .sin6_family = AF_INET6 };
    RouteClient c = { .user = "app", .database = "db" };

    inet_pton(AF_INET, "10.1.200.3", &in4.sin_addr);
    c.addr = (struct sockaddr *)&in4;
    ck_assert_int_eq(route_of(t, &c, "SELECT pg_sleep(10)", &e), 4);
    ck_assert_int_eq(route_of(t, &c, "SELECT 1", &e), 6);                 /* regex fails */
    inet_pton(AF_INET, "10.2.0.1", &in4.sin_addr);
    ck_assert_int_eq(route_of(t, &c, "SELECT pg_sleep(10)", &e), 6);      /* outside /16 */
    inet_pton(AF_INET6, "::1", &in6.sin6_addr);
    c.addr = (struct sockaddr *)&in6;
    ck_assert_int_eq(route_of(t, &c, "select  PG_SLEEP(1)", &e), 4);      /* case-insensitive */
    c.addr = NULL;                                                         /* Unix socket */
    ck_assert_int_eq(route_of(t, &c, "SELECT pg_sleep(10)", &e), 6);
    route_table_free(t);
    cfg_free(cfg);
}
END_TEST

START_TEST(mixed_targets_rejected)
{
    Config *cfg = load(ROUTES);
    char *err = NULL;
    RouteTable *t = route_table_new(cfg, &err);
    RqError e = {0};
    RouteClient c = { .user = "app", .database = "db" };
    ck_assert_int_eq(route_of(t, &c, "SELECT * FROM crm.a JOIN billing.b ON true", &e), -2);
    ck_assert_str_eq(e.sqlstate, "0A000");
    ck_assert_str_eq(e.message, "statement mixes tables of route \"crm\" (upstream:crm) and route \"bill\" (upstream:billing)");
    ck_assert_str_eq(e.detail, "Relation \"billing.b\" belongs to route \"bill\".");
    rq_error_free(&e);
    /* the same target twice is fine */
    ck_assert_int_eq(route_of(t, &c, "SELECT * FROM crm.a JOIN crm.b ON true", &e), 2);
    ck_assert(!rq_error_is_set(&e));
    route_table_free(t);
    cfg_free(cfg);
}
END_TEST

START_TEST(unparsed_statements_only_match_content_free_routes)
{
    Config *cfg = load(ROUTES);
    char *err = NULL;
    RouteTable *t = route_table_new(cfg, &err);
    RqError e = {0};
    RouteClient rep = { .user = "app", .database = "dw", .application_name = "report" };
    ck_assert_int_eq(route_table_match(t, &rep, NULL, &e, NULL), 5);
    RouteClient c = { .user = "analyst", .database = "db" };
    Buf why;
    buf_init(&why);
    ck_assert_int_eq(route_table_match(t, &c, NULL, &e, &why), 6);
    buf_append_byte(&why, 0);
    ck_assert_ptr_nonnull(strstr(why.data, "ro: no, statement kind unknown"));
    ck_assert_ptr_nonnull(strstr(why.data, "rest: yes -> upstream:crm"));
    buf_free(&why);
    route_table_free(t);
    cfg_free(cfg);
}
END_TEST

START_TEST(plain_proxy_needs_no_parse)
{
    Config *cfg = load("{\"upstreams\": {\"m\": {\"conninfo\": \"host=x\"}},"
                       " \"routes\": [{\"name\": \"u\", \"match\": {\"user\": [\"a\"]}, \"to\": \"reject\"},"
                       "              {\"name\": \"all\", \"to\": \"upstream:m\"}]}");
    char *err = NULL;
    RouteTable *t = route_table_new(cfg, &err);
    ck_assert(!route_table_needs_parse(t));
    RqError e = {0};
    RouteClient a = { .user = "a" }, b = { .user = "b" };
    ck_assert_int_eq(route_table_match(t, &a, NULL, &e, NULL), 0);
    ck_assert_int_eq(route_table_match(t, &b, NULL, &e, NULL), 1);
    route_table_free(t);
    cfg_free(cfg);
}
END_TEST

static int fake_plugin_tables(void *ctx, const char *plugin, const char *schema, const char *name)
{
    (void)ctx;
    return !strcmp(plugin, "demo") && (!schema || !strcmp(schema, "public")) &&
           (!strcmp(name, "sales") || !strcmp(name, "customers"));
}

START_TEST(plugin_route_claims_registered_tables)
{
    Config *cfg = load("{\"upstreams\": {\"m\": {\"conninfo\": \"host=x\"}},"
                       " \"plugins\": {\"demo\": {\"module\": \"d.py\"}},"
                       " \"routes\": [{\"name\": \"demo\", \"to\": \"plugin:demo\"},"
                       "              {\"name\": \"rest\", \"to\": \"upstream:m\"}]}");
    char *err = NULL;
    RouteTable *t = route_table_new(cfg, &err);
    ck_assert(route_table_needs_parse(t));
    RqError e = {0};
    RouteClient c = { .user = "u" };
    /* without the plugin's tables known, the plugin route claims nothing */
    ck_assert_int_eq(route_of(t, &c, "SELECT * FROM sales", &e), 1);
    route_table_set_plugin_tables(t, fake_plugin_tables, NULL);
    ck_assert_int_eq(route_of(t, &c, "SELECT * FROM sales", &e), 0);
    ck_assert_int_eq(route_of(t, &c, "SELECT * FROM public.customers", &e), 0);
    ck_assert_int_eq(route_of(t, &c, "SELECT * FROM other.sales", &e), 1);
    ck_assert_int_eq(route_of(t, &c, "SELECT * FROM orders", &e), 1);
    /* only claimed tables conflict: "orders" is claimed by no route, so the
     * plugin route, which claims "sales", takes the join */
    ck_assert_int_eq(route_of(t, &c, "SELECT * FROM orders JOIN sales ON true", &e), 0);
    ck_assert(!rq_error_is_set(&e));
    route_table_free(t);
    cfg_free(cfg);
}
END_TEST

/* A DECLARE reports its query's relations, so table routes send it where
 * the query would go; FETCH, MOVE and CLOSE name none (the session finds
 * their cursor). */
START_TEST(cursor_statements)
{
    parse_ok("DECLARE \"for x\" BINARY NO SCROLL CURSOR WITH HOLD FOR "
             "WITH recent AS (SELECT * FROM crm.orders) SELECT * FROM recent JOIN customers ON true");
    ck_assert_uint_eq(P.n, 1);
    ck_assert_str_eq(P.stmts[0].node_type, "DeclareCursorStmt");
    ck_assert_int_eq(P.stmts[0].kind, STMT_UTILITY);
    ck_assert_str_eq(route_stmt_tag(&P.stmts[0]), "DECLARE CURSOR");
    /* crm.orders and customers; not the CTE */
    ck_assert_uint_eq(P.stmts[0].n_rels, 2);
    int orders = 0, customers = 0;
    for (size_t i = 0; i < 2; i++) {
        const RouteRel *r = &P.stmts[0].rels[i];
        orders |= !strcmp(r->name, "orders") && r->schema && !strcmp(r->schema, "crm");
        customers |= !strcmp(r->name, "customers") && !r->schema;
    }
    ck_assert(orders && customers);
    route_parse_free(&P);

    static const struct { const char *sql; const char *tag; } uses[] = {
        { "FETCH 3 FROM c", "FETCH" }, { "FETCH ALL IN c", "FETCH" }, { "MOVE 2 c", "MOVE" },
        { "MOVE ABSOLUTE 5 FROM c", "MOVE" }, { "CLOSE c", "CLOSE CURSOR" }, { "CLOSE ALL", "CLOSE CURSOR ALL" },
    };
    for (size_t i = 0; i < sizeof uses / sizeof uses[0]; i++) {
        parse_ok(uses[i].sql);
        ck_assert_str_eq(route_stmt_tag(&P.stmts[0]), uses[i].tag);
        ck_assert_uint_eq(P.stmts[0].n_rels, 0);
        route_parse_free(&P);
    }

    Config *cfg = load(ROUTES);
    char *err = NULL;
    RouteTable *t = route_table_new(cfg, &err);
    RqError e = {0};
    RouteClient app = { .user = "app", .database = "db" };
    ck_assert_int_eq(route_of(t, &app, "DECLARE c CURSOR FOR SELECT * FROM sales_live WHERE id = $1", &e), 1);
    ck_assert_int_eq(route_of(t, &app, "DECLARE c CURSOR FOR SELECT * FROM billing.invoices", &e), 3);
    ck_assert_int_eq(route_of(t, &app, "FETCH 10 FROM c", &e), 6);
    /* a cursor over tables of two targets is refused like the query */
    ck_assert_int_eq(route_of(t, &app, "DECLARE c CURSOR FOR SELECT * FROM sales_live, billing.x", &e), -2);
    ck_assert_str_eq(e.sqlstate, "0A000");
    rq_error_free(&e);
    route_table_free(t);
    cfg_free(cfg);
}
END_TEST

START_TEST(no_match)
{
    Config *cfg = load("{\"upstreams\": {\"m\": {\"conninfo\": \"host=x\"}},"
                       " \"routes\": [{\"match\": {\"tables\": [\"t\"]}, \"to\": \"upstream:m\"}]}");
    char *err = NULL;
    RouteTable *t = route_table_new(cfg, &err);
    RqError e = {0};
    RouteClient c = { .user = "x" };
    ck_assert_int_eq(route_of(t, &c, "SELECT * FROM u", &e), -1);
    ck_assert(!rq_error_is_set(&e));
    ck_assert_str_eq(route_table_route(t, 0)->name, "route[0]");
    route_table_free(t);
    cfg_free(cfg);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("route");
    TCase *tc = tcase_create("classify");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, kinds);
    tcase_add_test(tc, kind_names_round_trip);
    tcase_add_test(tc, relations_and_ctes);
    tcase_add_test(tc, multi_statement_text);
    tcase_add_test(tc, empty_and_comment_only);
    tcase_add_test(tc, syntax_error_position);
    tcase_add_test(tc, cache_shares_parses);
    tcase_add_test(tc, cache_eviction_keeps_held_copies);
    suite_add_tcase(s, tc);
    TCase *tm = tcase_create("table");
    tcase_add_test(tm, match_order_and_keys);
    tcase_add_test(tm, match_client_cidr_and_regex);
    tcase_add_test(tm, mixed_targets_rejected);
    tcase_add_test(tm, unparsed_statements_only_match_content_free_routes);
    tcase_add_test(tm, plain_proxy_needs_no_parse);
    tcase_add_test(tm, no_match);
    tcase_add_test(tm, plugin_route_claims_registered_tables);
    tcase_add_test(tm, cursor_statements);
    suite_add_tcase(s, tm);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    route_parser_exit();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
