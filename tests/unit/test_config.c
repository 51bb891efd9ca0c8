/*
 * Tests for the route-file loader (src/config/config.c).
 *
 * Error messages are part of the contract: an operator reads them to fix a
 * file, and a reload that fails keeps the old config, so the message is all
 * they get.  Hence most tests assert the exact text, path included.
 *
 * JSON in C string literals drowns in backslashes, so the helpers take
 * documents written with single quotes and turn them into double quotes;
 * none of the documents here needs a literal single quote.
 *
 * Runs from the repository root (the shipped routes/ files are loaded by
 * relative path) and must stay clean under
 *   CK_FORK=no valgrind --leak-check=full --error-exitcode=1 build/tests/test_config
 */
#include <check.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "riffq/config.h"

#ifndef RIFFQ_VERSION
#define RIFFQ_VERSION "dev"
#endif

#define SCRAM_BOB "SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$" \
    "SG43IaUAmdevF5JNyURoNaasV67NdtJ87Tz1L6GpwW8=:mG7Q+VT0nv5SS7fGgQK8AmNb6mhD+BeJonDEczAJ/zY="
#define MD5_APP "md56a422f785c9e20873908ce25d1736ae2"

static char *dq(const char *single_quoted)
{
    char *s = strdup(single_quoted);
    for (char *p = s; *p; p++)
        if (*p == '\'') *p = '"';
    return s;
}

static Config *load_as(const char *json, const char *name)
{
    char *text = dq(json), *err = NULL;
    Config *cfg = cfg_load_string(text, name, &err);
    ck_assert_msg(cfg != NULL, "unexpected load error: %s", err ? err : "(none)");
    ck_assert_ptr_null(err);
    free(text);
    return cfg;
}

static Config *load(const char *json)
{
    return load_as(json, "t.json");
}

static char *load_err(const char *json)
{
    char *text = dq(json), *err = NULL;
    Config *cfg = cfg_load_string(text, "t.json", &err);
    ck_assert_msg(cfg == NULL, "loaded but should have failed: %s", text);
    ck_assert_ptr_nonnull(err);
    free(text);
    return err;
}

#define ASSERT_ERR(json, expected) do {                 \
        char *e_ = load_err(json);                      \
        ck_assert_str_eq(e_, expected);                 \
        free(e_);                                       \
    } while (0)

#define ASSERT_ERR_HAS(json, part) do {                 \
        char *e_ = load_err(json);                      \
        ck_assert_msg(strstr(e_, part) != NULL,         \
                      "error \"%s\" lacks \"%s\"", e_, part); \
        free(e_);                                       \
    } while (0)

static char *expand_err(const char *s)
{
    char *err = NULL;
    char *out = cfg_expand_env(s, &err);
    ck_assert_msg(out == NULL, "expanded to \"%s\" but should have failed", out ? out : "");
    ck_assert_ptr_nonnull(err);
    return err;
}

#define ASSERT_EXPANDS(in, expected) do {               \
        char *e_ = NULL;                                \
        char *o_ = cfg_expand_env(in, &e_);             \
        ck_assert_msg(o_ != NULL, "expand error: %s", e_ ? e_ : ""); \
        ck_assert_str_eq(o_, expected);                 \
        free(o_);                                       \
    } while (0)

#define ASSERT_EXPAND_ERR(in, expected) do {            \
        char *e_ = expand_err(in);                      \
        ck_assert_str_eq(e_, expected);                 \
        free(e_);                                       \
    } while (0)

/* A directory holding a route file's neighbours (certificates), because
 * relative paths resolve against the route file's directory. */
static char tmpdir[64];

static void make_tmpdir_with_certs(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/riffq-cfg-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    const char *files[] = { "server.crt", "server.key" };
    for (int i = 0; i < 2; i++) {
        char path[128];
        snprintf(path, sizeof path, "%s/%s", tmpdir, files[i]);
        FILE *f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        fputs("not really PEM; the loader only checks readability\n", f);
        fclose(f);
    }
}

static void remove_tmpdir(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/server.crt", tmpdir);
    unlink(path);
    snprintf(path, sizeof path, "%s/server.key", tmpdir);
    unlink(path);
    rmdir(tmpdir);
}

/* ------------------------------------------------------------------ */
/* Defaults and a full round trip                                      */

START_TEST(test_empty_object_gives_defaults)
{
    Config *c = load("{}");
    ck_assert_str_eq(c->path, "t.json");
    ck_assert_str_eq(c->dir, ".");
    ck_assert_uint_eq(c->n_listen, 1);
    ck_assert_str_eq(c->listen[0].host, "127.0.0.1");
    ck_assert_int_eq(c->listen[0].port, 5433);
    ck_assert_ptr_null(c->listen[0].unix_path);
    ck_assert_str_eq(c->listen[0].name, "127.0.0.1:5433");
    ck_assert_int_eq(c->tls_mode, TLS_DISABLE);
    ck_assert_ptr_null(c->tls_cert);
    ck_assert_ptr_null(c->tls_key);
    ck_assert_int_eq(c->auth_method, AUTH_TRUST);
    ck_assert_uint_eq(c->n_users, 0);
    ck_assert_uint_eq(c->n_upstreams, 0);
    ck_assert_uint_eq(c->n_plugins, 0);
    ck_assert_uint_eq(c->n_routes, 0);
    ck_assert_int_eq(c->max_clients, 1000);
    ck_assert_uint_eq(c->max_message_size, 64u << 20);
    ck_assert_int_eq(c->auth_timeout_ms, 60000);
    ck_assert_str_eq(c->server_version, "15.8 (riffq " RIFFQ_VERSION ")");
    ck_assert_str_eq(c->log_level, "info");
    cfg_free(c);
}
END_TEST

START_TEST(test_full_round_trip)
{
    make_tmpdir_with_certs();
    char name[128];
    snprintf(name, sizeof name, "%s/r.json", tmpdir);
    Config *c = load_as(
        "{'comment': 'every field',"
        " 'listen': [{'host': '127.0.0.1', 'port': 6432}, {'unix': '/tmp/.s.PGSQL.6432'},"
        "            {'host': '::1', 'port': '6433', 'comment': 'v6'}],"
        " 'tls': {'cert': 'server.crt', 'key': 'server.key', 'mode': 'allow'},"
        " 'auth': {'method': 'scram-sha-256',"
        "          'users': {'app': 'secret', 'bob': '" SCRAM_BOB "', 'comment': 'x'}},"
        " 'upstreams': {'main': {'conninfo': 'host=db dbname=x', 'pool_mode': 'transaction',"
        "                        'pool_size': 5, 'min_pool_size': 2},"
        "               'other': {'conninfo': 'host=o'}},"
        " 'plugins': {'demo': {'module': 'plugins/demo.py'}, 'abs': {'module': '/opt/p.py'}},"
        " 'routes': ["
        "   {'name': 'live', 'match': {'tables': ['sales_live', 'public.orders'],"
        "      'schemas': ['s1'], 'statement': ['select', 'insert'], 'user': ['u'],"
        "      'database': ['d'], 'application_name': ['psql'],"
        "      'client': ['10.0.0.0/8', '::1', 'fe80::/10', '192.168.1.7'],"
        "      'listen': ['127.0.0.1:6432', '/tmp/.s.PGSQL.6432', '[::1]:6433'],"
        "      'regex': '^select', 'comment': ['two', 'lines']}, 'to': 'plugin:demo'},"
        "   {'name': 'ro', 'match': {'statement': ['delete', 'update'], 'user': ['analyst']},"
        "    'to': 'reject', 'message': 'analysts are read-only', 'sqlstate': '42P01'},"
        "   {'match': {'schemas': ['pg_catalog']}, 'to': 'catalog'},"
        "   {'match': {'statement': ['show']}, 'to': 'local'},"
        "   {'match': {'statement': ['set']}, 'to': 'reject'},"
        "   {'name': 'rest', 'to': 'upstream:main'}],"
        " 'limits': {'max_clients': 50, 'max_message_size': '2MB', 'auth_timeout': '5s'},"
        " 'server_version': '16.1 (test)',"
        " 'log_level': 'debug'}", name);

    ck_assert_str_eq(c->path, name);
    ck_assert_str_eq(c->dir, tmpdir);

    ck_assert_uint_eq(c->n_listen, 3);
    ck_assert_str_eq(c->listen[0].host, "127.0.0.1");
    ck_assert_int_eq(c->listen[0].port, 6432);
    ck_assert_ptr_null(c->listen[0].unix_path);
    ck_assert_str_eq(c->listen[0].name, "127.0.0.1:6432");
    ck_assert_ptr_null(c->listen[1].host);
    ck_assert_str_eq(c->listen[1].unix_path, "/tmp/.s.PGSQL.6432");
    ck_assert_str_eq(c->listen[1].name, "/tmp/.s.PGSQL.6432");
    ck_assert_str_eq(c->listen[2].host, "::1");
    ck_assert_int_eq(c->listen[2].port, 6433);
    ck_assert_str_eq(c->listen[2].name, "[::1]:6433");

    char want[160];
    ck_assert_int_eq(c->tls_mode, TLS_ALLOW);
    snprintf(want, sizeof want, "%s/server.crt", tmpdir);
    ck_assert_str_eq(c->tls_cert, want);
    snprintf(want, sizeof want, "%s/server.key", tmpdir);
    ck_assert_str_eq(c->tls_key, want);

    ck_assert_int_eq(c->auth_method, AUTH_SCRAM);
    ck_assert_uint_eq(c->n_users, 2);
    ck_assert_str_eq(c->users[0].name, "app");
    ck_assert_str_eq(c->users[0].secret, "secret");
    ck_assert_str_eq(c->users[1].name, "bob");
    ck_assert_str_eq(c->users[1].secret, SCRAM_BOB);
    ck_assert_ptr_eq(cfg_find_user(c, "bob"), &c->users[1]);
    ck_assert_ptr_null(cfg_find_user(c, "comment"));
    ck_assert_ptr_null(cfg_find_user(c, "nobody"));

    ck_assert_uint_eq(c->n_upstreams, 2);
    const CfgUpstream *u = cfg_find_upstream(c, "main");
    ck_assert_ptr_nonnull(u);
    ck_assert_str_eq(u->name, "main");
    ck_assert_str_eq(u->conninfo, "host=db dbname=x");
    ck_assert_int_eq(u->pool_mode, POOL_TRANSACTION);
    ck_assert_int_eq(u->pool_size, 5);
    ck_assert_int_eq(u->min_pool_size, 2);
    u = cfg_find_upstream(c, "other");
    ck_assert_ptr_nonnull(u);
    ck_assert_str_eq(u->conninfo, "host=o");
    ck_assert_int_eq(u->pool_mode, POOL_SESSION);
    ck_assert_int_eq(u->pool_size, 20);
    ck_assert_int_eq(u->min_pool_size, 0);
    ck_assert_ptr_null(cfg_find_upstream(c, "nope"));

    ck_assert_uint_eq(c->n_plugins, 2);
    snprintf(want, sizeof want, "%s/plugins/demo.py", tmpdir);
    ck_assert_str_eq(cfg_find_plugin(c, "demo")->module, want);
    ck_assert_str_eq(cfg_find_plugin(c, "abs")->module, "/opt/p.py");
    ck_assert_ptr_null(cfg_find_plugin(c, "nope"));

    ck_assert_uint_eq(c->n_routes, 6);
    const CfgRoute *r = &c->routes[0];
    ck_assert_str_eq(r->name, "live");
    ck_assert_uint_eq(r->tables.n, 2);
    ck_assert_str_eq(r->tables.items[0], "sales_live");
    ck_assert_str_eq(r->tables.items[1], "public.orders");
    ck_assert_uint_eq(r->schemas.n, 1);
    ck_assert_str_eq(r->schemas.items[0], "s1");
    ck_assert_uint_eq(r->statement.n, 2);
    ck_assert_str_eq(r->statement.items[0], "select");
    ck_assert_str_eq(r->statement.items[1], "insert");
    ck_assert_uint_eq(r->user.n, 1);
    ck_assert_str_eq(r->user.items[0], "u");
    ck_assert_uint_eq(r->database.n, 1);
    ck_assert_str_eq(r->database.items[0], "d");
    ck_assert_uint_eq(r->application_name.n, 1);
    ck_assert_str_eq(r->application_name.items[0], "psql");
    ck_assert_uint_eq(r->client.n, 4);
    ck_assert_str_eq(r->client.items[0], "10.0.0.0/8");
    ck_assert_str_eq(r->client.items[1], "::1");
    ck_assert_str_eq(r->client.items[2], "fe80::/10");
    ck_assert_str_eq(r->client.items[3], "192.168.1.7");
    ck_assert_uint_eq(r->listen.n, 3);
    ck_assert_str_eq(r->listen.items[2], "[::1]:6433");
    ck_assert_str_eq(r->regex, "^select");
    ck_assert_int_eq(r->target, TARGET_PLUGIN);
    ck_assert_str_eq(r->target_name, "demo");
    ck_assert_ptr_null(r->message);

    r = &c->routes[1];
    ck_assert_str_eq(r->name, "ro");
    ck_assert_uint_eq(r->tables.n, 0);
    ck_assert_ptr_null(r->regex);
    ck_assert_int_eq(r->target, TARGET_REJECT);
    ck_assert_ptr_null(r->target_name);
    ck_assert_str_eq(r->message, "analysts are read-only");
    ck_assert_str_eq(r->sqlstate, "42P01");

    r = &c->routes[2];
    ck_assert_str_eq(r->name, "route[2]");
    ck_assert_int_eq(r->target, TARGET_CATALOG);
    ck_assert_ptr_null(r->target_name);
    r = &c->routes[3];
    ck_assert_str_eq(r->name, "route[3]");
    ck_assert_int_eq(r->target, TARGET_LOCAL);
    r = &c->routes[4];
    ck_assert_int_eq(r->target, TARGET_REJECT);
    ck_assert_ptr_null(r->message);
    ck_assert_str_eq(r->sqlstate, "42501");
    r = &c->routes[5];
    ck_assert_str_eq(r->name, "rest");
    ck_assert_int_eq(r->target, TARGET_UPSTREAM);
    ck_assert_str_eq(r->target_name, "main");
    ck_assert_uint_eq(r->statement.n, 0);

    ck_assert_int_eq(c->max_clients, 50);
    ck_assert_uint_eq(c->max_message_size, 2u << 20);
    ck_assert_int_eq(c->auth_timeout_ms, 5000);
    ck_assert_str_eq(c->server_version, "16.1 (test)");
    ck_assert_str_eq(c->log_level, "debug");
    cfg_free(c);
    remove_tmpdir();
}
END_TEST

START_TEST(test_tls_defaults_to_require_with_cert)
{
    make_tmpdir_with_certs();
    char name[128];
    snprintf(name, sizeof name, "%s/r.json", tmpdir);
    Config *c = load_as("{'tls': {'cert': 'server.crt', 'key': 'server.key'}}", name);
    ck_assert_int_eq(c->tls_mode, TLS_REQUIRE);
    cfg_free(c);
    c = load_as("{'tls': {'mode': 'require', 'cert': 'server.crt', 'key': 'server.key'}}", name);
    ck_assert_int_eq(c->tls_mode, TLS_REQUIRE);
    cfg_free(c);
    remove_tmpdir();
}
END_TEST

START_TEST(test_tls_disabled_needs_no_files)
{
    Config *c = load("{'tls': {'mode': 'disable', 'cert': 'missing.crt', 'key': 'missing.key'}}");
    ck_assert_int_eq(c->tls_mode, TLS_DISABLE);
    ck_assert_str_eq(c->tls_cert, "missing.crt");
    cfg_free(c);
    c = load("{'tls': {}}");
    ck_assert_int_eq(c->tls_mode, TLS_DISABLE);
    ck_assert_ptr_null(c->tls_cert);
    cfg_free(c);
}
END_TEST

START_TEST(test_units_and_numbers_as_strings)
{
    Config *c = load("{'limits': {'max_message_size': 65536, 'auth_timeout': 1500,"
                     " 'max_clients': '7'}}");
    ck_assert_uint_eq(c->max_message_size, 65536);
    ck_assert_int_eq(c->auth_timeout_ms, 1500);
    ck_assert_int_eq(c->max_clients, 7);
    cfg_free(c);
    c = load("{'limits': {'max_message_size': '1 GB', 'auth_timeout': '2min'}}");
    ck_assert_uint_eq(c->max_message_size, 1u << 30);
    ck_assert_int_eq(c->auth_timeout_ms, 120000);
    cfg_free(c);
    c = load("{'limits': {'max_message_size': '512kB', 'auth_timeout': '250ms'}}");
    ck_assert_uint_eq(c->max_message_size, 512u << 10);
    ck_assert_int_eq(c->auth_timeout_ms, 250);
    cfg_free(c);
    c = load("{'limits': {'max_message_size': '8MiB', 'auth_timeout': '1h'}}");
    ck_assert_uint_eq(c->max_message_size, 8u << 20);
    ck_assert_int_eq(c->auth_timeout_ms, 3600000);
    cfg_free(c);
}
END_TEST

START_TEST(test_secrets_md5_and_password_methods)
{
    Config *c = load("{'auth': {'method': 'md5', 'users': {'app': '" MD5_APP "', 'b': 'pw'}}}");
    ck_assert_int_eq(c->auth_method, AUTH_MD5);
    ck_assert_str_eq(c->users[0].secret, MD5_APP);
    cfg_free(c);
    /* the server upgrades an md5 login of a SCRAM user to SCRAM */
    c = load("{'auth': {'method': 'md5', 'users': {'bob': '" SCRAM_BOB "'}}}");
    ck_assert_str_eq(c->users[0].secret, SCRAM_BOB);
    cfg_free(c);
    c = load("{'auth': {'method': 'password', 'users': {'a': '" MD5_APP "', 'b': '"
             SCRAM_BOB "'}}}");
    ck_assert_int_eq(c->auth_method, AUTH_PASSWORD);
    cfg_free(c);
    /* trust ignores secrets but still accepts a user list */
    c = load("{'auth': {'method': 'trust', 'users': {'a': 'x'}}}");
    ck_assert_int_eq(c->auth_method, AUTH_TRUST);
    ck_assert_uint_eq(c->n_users, 1);
    cfg_free(c);
    c = load("{'auth': {'method': 'trust'}}");
    ck_assert_int_eq(c->auth_method, AUTH_TRUST);
    cfg_free(c);
}
END_TEST

START_TEST(test_odd_keys_are_bracketed_in_paths)
{
    ASSERT_ERR("{'upstreams': {'my.db': {'conninfo': 'x', 'pool_size': 0}}}",
               "t.json: upstreams[\"my.db\"].pool_size: expected an integer between 1 and "
               "10000, got 0");
}
END_TEST

START_TEST(test_cfg_load_from_file)
{
    make_tmpdir_with_certs();
    char name[128];
    snprintf(name, sizeof name, "%s/r.json", tmpdir);
    FILE *f = fopen(name, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"plugins\": {\"p\": {\"module\": \"p.py\"}},\n"
          " \"routes\": [{\"to\": \"plugin:p\"}]}\n", f);
    fclose(f);
    char *err = NULL;
    Config *c = cfg_load(name, &err);
    ck_assert_ptr_nonnull(c);
    char want[160];
    snprintf(want, sizeof want, "%s/p.py", tmpdir);
    ck_assert_str_eq(c->plugins[0].module, want);
    ck_assert_str_eq(c->routes[0].name, "route[0]");
    cfg_free(c);

    f = fopen(name, "w");
    fputs("{\n  \"listen\": [\n    {\"host\": \"x\",}\n  ]\n}\n", f);
    fclose(f);
    c = cfg_load(name, &err);
    ck_assert_ptr_null(c);
    char prefix[160];
    snprintf(prefix, sizeof prefix, "%s:3:18: ", name);
    ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0, "got %s", err);
    free(err);
    unlink(name);
    remove_tmpdir();
}
END_TEST

START_TEST(test_cfg_load_missing_file)
{
    char *err = NULL;
    ck_assert_ptr_null(cfg_load("/nonexistent/r.json", &err));
    ck_assert_str_eq(err, "/nonexistent/r.json: cannot read: No such file or directory");
    free(err);
    /* errmsg is optional */
    ck_assert_ptr_null(cfg_load("/nonexistent/r.json", NULL));
    ck_assert_ptr_null(cfg_load_string("[", "x.json", NULL));
    ck_assert_ptr_null(cfg_load_string("{'a': 1}", "x.json", NULL));
}
END_TEST

START_TEST(test_load_string_name_and_dir)
{
    char *err = NULL;
    Config *c = cfg_load_string("{\"plugins\": {\"p\": {\"module\": \"p.py\"}}}", NULL, &err);
    ck_assert_ptr_nonnull(c);
    ck_assert_str_eq(c->path, "<string>");
    ck_assert_str_eq(c->dir, ".");
    ck_assert_str_eq(c->plugins[0].module, "p.py");
    cfg_free(c);
    c = cfg_load_string("{\"plugins\": {\"p\": {\"module\": \"p.py\"}}}", "/etc/riffq/r.json",
                        &err);
    ck_assert_str_eq(c->dir, "/etc/riffq");
    ck_assert_str_eq(c->plugins[0].module, "/etc/riffq/p.py");
    cfg_free(c);
    c = cfg_load_string("{}", "/r.json", &err);
    ck_assert_str_eq(c->dir, "/");
    cfg_free(c);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Environment expansion                                               */

START_TEST(test_expand_set_and_default)
{
    setenv("RIFFQ_T_A", "alpha", 1);
    unsetenv("RIFFQ_T_UNSET");
    setenv("RIFFQ_T_EMPTY", "", 1);
    ASSERT_EXPANDS("${RIFFQ_T_A}", "alpha");
    ASSERT_EXPANDS("x${RIFFQ_T_A}y", "xalphay");
    ASSERT_EXPANDS("${RIFFQ_T_UNSET:-dflt}", "dflt");
    ASSERT_EXPANDS("${RIFFQ_T_A:-dflt}", "alpha");
    ASSERT_EXPANDS("${RIFFQ_T_UNSET:-}", "");
    /* like the shell's ":-", empty counts as unset when a default is given... */
    ASSERT_EXPANDS("${RIFFQ_T_EMPTY:-dflt}", "dflt");
    /* ...but is a value otherwise */
    ASSERT_EXPANDS("${RIFFQ_T_EMPTY}", "");
    ASSERT_EXPANDS("", "");
    ASSERT_EXPANDS("${RIFFQ_T_UNSET:-a b:c-d}", "a b:c-d");
    unsetenv("RIFFQ_T_A");
    unsetenv("RIFFQ_T_EMPTY");
}
END_TEST

START_TEST(test_expand_multiple_and_nested)
{
    setenv("RIFFQ_T_H", "db", 1);
    setenv("RIFFQ_T_P", "5432", 1);
    unsetenv("RIFFQ_T_UNSET");
    ASSERT_EXPANDS("host=${RIFFQ_T_H} port=${RIFFQ_T_P} x=${RIFFQ_T_UNSET:-y}",
                   "host=db port=5432 x=y");
    ASSERT_EXPANDS("${RIFFQ_T_H}${RIFFQ_T_P}", "db5432");
    /* defaults may hold references themselves */
    ASSERT_EXPANDS("${RIFFQ_T_UNSET:-${RIFFQ_T_P}}", "5432");
    ASSERT_EXPANDS("${RIFFQ_T_UNSET:-${RIFFQ_T_UNSET:-deep}}!", "deep!");
    /* an unused default is not evaluated, so its unset variable is fine */
    ASSERT_EXPANDS("${RIFFQ_T_H:-${RIFFQ_T_UNSET}}", "db");
    /* values are not re-expanded: a password may contain "${" */
    setenv("RIFFQ_T_V", "p${x}w", 1);
    ASSERT_EXPANDS("${RIFFQ_T_V}", "p${x}w");
    unsetenv("RIFFQ_T_H");
    unsetenv("RIFFQ_T_P");
    unsetenv("RIFFQ_T_V");
}
END_TEST

START_TEST(test_expand_literal_text)
{
    setenv("HOME_RIFFQ_T", "no", 1);
    /* only "${" starts a reference */
    ASSERT_EXPANDS("$HOME_RIFFQ_T", "$HOME_RIFFQ_T");
    ASSERT_EXPANDS("price: $5, {braces} and $}", "price: $5, {braces} and $}");
    ASSERT_EXPANDS("trailing $", "trailing $");
    ASSERT_EXPANDS("}{", "}{");
    ASSERT_EXPANDS("a$ {B}", "a$ {B}");
    unsetenv("HOME_RIFFQ_T");
}
END_TEST

START_TEST(test_expand_errors)
{
    unsetenv("RIFFQ_T_UNSET");
    ASSERT_EXPAND_ERR("${RIFFQ_T_UNSET}",
                      "environment variable \"RIFFQ_T_UNSET\" is not set "
                      "(write ${RIFFQ_T_UNSET:-default} to give a default)");
    ASSERT_EXPAND_ERR("abc${RIFFQ_T_UNSET",
                      "unterminated \"${\" at character 4 (expected \"}\")");
    ASSERT_EXPAND_ERR("${A:-${B}", "unterminated \"${\" at character 1 (expected \"}\")");
    ASSERT_EXPAND_ERR("x${}", "invalid \"${...}\" at character 2: expected ${NAME} or "
                      "${NAME:-default}, NAME made of letters, digits and _");
    ASSERT_EXPAND_ERR("${1X}", "invalid \"${...}\" at character 1: expected ${NAME} or "
                      "${NAME:-default}, NAME made of letters, digits and _");
    ASSERT_EXPAND_ERR("${A-b}", "invalid \"${...}\" at character 1: expected ${NAME} or "
                      "${NAME:-default}, NAME made of letters, digits and _");
    /* positions inside a default count from the start of the whole string */
    ASSERT_EXPAND_ERR("${RIFFQ_T_UNSET:-ab${ }}", "invalid \"${...}\" at character 20: "
                      "expected ${NAME} or ${NAME:-default}, NAME made of letters, digits and _");
    ASSERT_EXPAND_ERR("${RIFFQ_T_UNSET:-${RIFFQ_T_UNSET}}",
                      "environment variable \"RIFFQ_T_UNSET\" is not set "
                      "(write ${RIFFQ_T_UNSET:-default} to give a default)");
    /* errmsg is optional */
    ck_assert_ptr_null(cfg_expand_env("${RIFFQ_T_UNSET}", NULL));
}
END_TEST

START_TEST(test_expand_in_loader)
{
    setenv("RIFFQ_T_PORT", "7000", 1);
    setenv("RIFFQ_T_USER", "carol", 1);
    setenv("RIFFQ_T_PW", "s3cret", 1);
    setenv("RIFFQ_T_CI", "host=h password=zz", 1);
    unsetenv("RIFFQ_T_UNSET");
    Config *c = load("{'listen': [{'host': '${RIFFQ_T_UNSET:-0.0.0.0}', 'port': '${RIFFQ_T_PORT}'}],"
                     " 'auth': {'method': 'md5', 'users': {'${RIFFQ_T_USER}': '${RIFFQ_T_PW}'}},"
                     " 'upstreams': {'u': {'conninfo': '${RIFFQ_T_CI}',"
                     "                     'pool_size': '${RIFFQ_T_UNSET:-9}'}},"
                     " 'routes': [{'match': {'tables': ['${RIFFQ_T_UNSET:-t1}', 't2']},"
                     "             'to': 'upstream:${RIFFQ_T_UNSET:-u}'},"
                     "            {'to': 'local', 'comment': 'not expanded: ${RIFFQ_T_UNSET}'}],"
                     " 'log_level': '${RIFFQ_T_UNSET:-warning}'}");
    ck_assert_str_eq(c->listen[0].host, "0.0.0.0");
    ck_assert_int_eq(c->listen[0].port, 7000);
    ck_assert_str_eq(c->users[0].name, "carol");
    ck_assert_str_eq(c->users[0].secret, "s3cret");
    ck_assert_str_eq(c->upstreams[0].conninfo, "host=h password=zz");
    ck_assert_int_eq(c->upstreams[0].pool_size, 9);
    ck_assert_str_eq(c->routes[0].tables.items[0], "t1");
    ck_assert_str_eq(c->routes[0].target_name, "u");
    ck_assert_str_eq(c->log_level, "warning");
    cfg_free(c);

    ASSERT_ERR("{'routes': [{'to': 'local'}, {'to': 'local'},"
               " {'match': {'tables': ['a', '${RIFFQ_T_UNSET}']}, 'to': 'local'}]}",
               "t.json: routes[2].match.tables[1]: environment variable \"RIFFQ_T_UNSET\" is "
               "not set (write ${RIFFQ_T_UNSET:-default} to give a default)");
    ASSERT_ERR("{'listen': [{'host': '::1', 'port': '${RIFFQ_T_USER}'}]}",
               "t.json: listen[0].port: expected an integer between 1 and 65535, got "
               "\"carol\" (expanded from \"${RIFFQ_T_USER}\")");
    ASSERT_ERR("{'server_version': 'x${RIFFQ_T_UNSET'}",
               "t.json: server_version: unterminated \"${\" at character 2 (expected \"}\")");
    ASSERT_ERR("{'auth': {'method': 'md5', 'users': {'${RIFFQ_T_UNSET}': 'pw'}}}",
               "t.json: auth.users[\"${RIFFQ_T_UNSET}\"]: environment variable "
               "\"RIFFQ_T_UNSET\" is not set (write ${RIFFQ_T_UNSET:-default} to give a "
               "default)");
    ASSERT_ERR("{'auth': {'method': 'md5', 'users': {'${RIFFQ_T_UNSET:-}': 'pw'}}}",
               "t.json: auth.users[\"${RIFFQ_T_UNSET:-}\"]: the user name is empty after "
               "expanding it");
    ASSERT_ERR("{'auth': {'method': 'md5', 'users': {'carol': 'x', '${RIFFQ_T_USER}': 'y'}}}",
               "t.json: auth.users[\"${RIFFQ_T_USER}\"]: user \"carol\" is defined twice");
    setenv("RIFFQ_T_EMPTY", "", 1);
    ASSERT_ERR("{'log_level': '${RIFFQ_T_EMPTY}'}",
               "t.json: log_level: expected a non-empty string (expanded from "
               "\"${RIFFQ_T_EMPTY}\")");
    /* a secret's text is never echoed, not even the reference it came from */
    ASSERT_ERR("{'auth': {'method': 'md5', 'users': {'a': '${RIFFQ_T_EMPTY}'}}}",
               "t.json: auth.users.a: expected a non-empty string");
    unsetenv("RIFFQ_T_PORT");
    unsetenv("RIFFQ_T_USER");
    unsetenv("RIFFQ_T_PW");
    unsetenv("RIFFQ_T_CI");
    unsetenv("RIFFQ_T_EMPTY");
}
END_TEST

/* ------------------------------------------------------------------ */
/* Syntax, structure, unknown keys                                     */

START_TEST(test_json_syntax_error_has_line_and_column)
{
    char *e = load_err("{\n 'listen': [\n  {'host': 'a' 'port': 1}\n ]\n}");
    ck_assert_msg(strncmp(e, "t.json:3:", 9) == 0, "got %s", e);
    free(e);
    e = load_err("");
    ck_assert_msg(strncmp(e, "t.json:", 7) == 0, "got %s", e);
    free(e);
    /* jansson would keep the last of two equal keys; we refuse the ambiguity */
    e = load_err("{'log_level': 'info',\n 'log_level': 'debug'}");
    ck_assert_msg(strncmp(e, "t.json:2:", 9) == 0 && strstr(e, "duplicate"), "got %s", e);
    free(e);
}
END_TEST

START_TEST(test_top_level_must_be_object)
{
    ASSERT_ERR("[]", "t.json: expected a JSON object at the top level, got an array");
}
END_TEST

/* What a Python program serving with the riffq module writes for itself. */
START_TEST(test_python_host_keys)
{
    Config *c = load("{'plugins': {'app': {'import': 'riffq._host1'}, 'f': {'module': 'f.py'}},"
                     " 'auth': {'method': 'password', 'plugin': 'app'},"
                     " 'limits': {'plugin_workers': 8}, 'unknown_settings': 'accept',"
                     " 'routes': [{'name': 'app', 'match': {}, 'to': 'plugin:app'}]}");
    ck_assert_str_eq(c->plugins[0].import, "riffq._host1");
    ck_assert_ptr_null(c->plugins[0].module);
    ck_assert_ptr_null(c->plugins[1].import);
    ck_assert_str_eq(c->auth_plugin, "app");
    ck_assert_int_eq(c->plugin_workers, 8);
    ck_assert_int_eq(c->accept_unknown_settings, 1);
    ck_assert_int_eq(c->routes[0].has_match, 1);
    cfg_free(c);
    c = load("{'plugins': {'d': {'module': 'd.py'}}, 'routes': [{'to': 'plugin:d'}]}");
    ck_assert_int_eq(c->routes[0].has_match, 0);
    ck_assert_int_eq(c->plugin_workers, 2);
    ck_assert_int_eq(c->accept_unknown_settings, 0);
    cfg_free(c);
    /* a plugin route with an empty match takes everything, so it must be last */
    ASSERT_ERR_HAS("{'plugins': {'d': {'module': 'd.py'}},"
                   " 'routes': [{'match': {}, 'to': 'plugin:d'}, {'to': 'local'}]}",
                   "can never be chosen");
}
END_TEST

START_TEST(test_unknown_keys)
{
    ASSERT_ERR("{'routes': [{'to': 'local', 'match': {'user': ['a']}},"
               " {'match': {'tabels': ['x']}, 'to': 'local'}]}",
               "t.json: routes[1].match: unknown key \"tabels\" (did you mean \"tables\"?)");
    ASSERT_ERR("{'lisen': []}", "t.json: unknown key \"lisen\" (did you mean \"listen\"?)");
    ASSERT_ERR("{'frobnicate': 1}",
               "t.json: unknown key \"frobnicate\" (expected one of: listen, tls, auth, "
               "upstreams, plugins, routes, limits, server_version, log_level, "
               "unknown_settings)");
    ASSERT_ERR("{'limits': {'max_client': 5}}",
               "t.json: limits: unknown key \"max_client\" (did you mean \"max_clients\"?)");
    ASSERT_ERR("{'listen': [{'host': '0.0.0.0', 'port': 1, 'prot': 'tcp'}]}",
               "t.json: listen[0]: unknown key \"prot\" (did you mean \"port\"?)");
    ASSERT_ERR("{'upstreams': {'u': {'conninfo': 'x', 'poolsize': 3}}}",
               "t.json: upstreams.u: unknown key \"poolsize\" (did you mean \"pool_size\"?)");
    ASSERT_ERR("{'routes': [{'to': 'reject', 'mesage': 'no'}]}",
               "t.json: routes[0]: unknown key \"mesage\" (did you mean \"message\"?)");
}
END_TEST

START_TEST(test_comments)
{
    Config *c = load("{'comment': 'a', 'limits': {'comment': ['x', 'y']},"
                     " 'upstreams': {'comment': 'not an upstream', 'u': {'conninfo': 'c'}},"
                     " 'plugins': {'comment': 'z'}}");
    ck_assert_uint_eq(c->n_upstreams, 1);
    ck_assert_uint_eq(c->n_plugins, 0);
    cfg_free(c);
    ASSERT_ERR("{'comment': 5}",
               "t.json: comment: expected a string or an array of strings (a comment), got "
               "an integer");
    ASSERT_ERR("{'tls': {'comment': ['a', null]}}",
               "t.json: tls.comment[1]: expected a string (a comment line), got null");
}
END_TEST

START_TEST(test_type_errors)
{
    ASSERT_ERR("{'routes': [{'to': 'local', 'match': {'user': ['a']}},"
               " {'to': 'local', 'match': {'user': ['b']}},"
               " {'match': {'tables': 'sales'}, 'to': 'local'}]}",
               "t.json: routes[2].match.tables: expected an array of strings, got a string");
    ASSERT_ERR("{'routes': [{'match': {'tables': ['a', 3]}, 'to': 'local'}]}",
               "t.json: routes[0].match.tables[1]: expected a string, got an integer");
    ASSERT_ERR("{'routes': [{'match': {'tables': []}, 'to': 'local'}]}",
               "t.json: routes[0].match.tables: expected a non-empty array of strings (leave "
               "the key out to match anything)");
    ASSERT_ERR("{'routes': {}}", "t.json: routes: expected an array of routes, got an object");
    ASSERT_ERR("{'routes': [5]}",
               "t.json: routes[0]: expected a route such as {\"match\": {...}, \"to\": "
               "\"upstream:main\"} (a JSON object), got an integer");
    ASSERT_ERR("{'routes': [{'match': [], 'to': 'local'}]}",
               "t.json: routes[0].match: expected match conditions (a JSON object), got an "
               "array");
    ASSERT_ERR("{'upstreams': []}",
               "t.json: upstreams: expected a map of upstream name to upstream (a JSON "
               "object), got an array");
    ASSERT_ERR("{'log_level': 3}", "t.json: log_level: expected a string, got an integer");
    ASSERT_ERR("{'routes': [{'name': '', 'to': 'local'}]}",
               "t.json: routes[0].name: expected a non-empty string");
}
END_TEST

/* ------------------------------------------------------------------ */
/* listen                                                              */

START_TEST(test_listen_errors)
{
    ASSERT_ERR("{'listen': [{'host': '::', 'port': 70000}]}",
               "t.json: listen[0].port: expected an integer between 1 and 65535, got 70000");
    ASSERT_ERR("{'listen': [{'host': '0.0.0.0', 'port': 0}]}",
               "t.json: listen[0].port: expected an integer between 1 and 65535, got 0");
    ASSERT_ERR("{'listen': [{'host': '0.0.0.0', 'port': 54.5}]}",
               "t.json: listen[0].port: expected an integer between 1 and 65535, got a number "
               "with a fraction or exponent");
    ASSERT_ERR("{'listen': [{'host': '0.0.0.0', 'port': '54x'}]}",
               "t.json: listen[0].port: expected an integer between 1 and 65535, got \"54x\"");
    ASSERT_ERR("{'listen': [{'host': '0.0.0.0', 'port': 1}, {'host': '0.0.0.0'}]}",
               "t.json: listen[1]: missing required key \"port\"");
    ASSERT_ERR("{'listen': [{'host': 'localhost', 'port': 1}]}",
               "t.json: listen[0].host: expected an IPv4 or IPv6 address such as "
               "\"127.0.0.1\", \"0.0.0.0\" or \"::\", got \"localhost\"");
    ASSERT_ERR("{'listen': [{'port': 1}]}", "t.json: listen[0]: missing required key \"host\"");
    ASSERT_ERR("{'listen': [{}]}", "t.json: listen[0]: expected \"host\" and \"port\", or \"unix\"");
    ASSERT_ERR("{'listen': [{'unix': '/tmp/s', 'port': 1}]}",
               "t.json: listen[0]: expected either \"unix\" or \"host\" and \"port\", not both");
    ASSERT_ERR("{'listen': []}", "t.json: listen: expected at least one listener");
    ASSERT_ERR("{'listen': {'host': '0.0.0.0', 'port': 1}}",
               "t.json: listen: expected an array of listeners, got an object");
    ASSERT_ERR("{'listen': [{'host': '0.0.0.0', 'port': 1}, {'host': '0.0.0.0', 'port': '1'}]}",
               "t.json: listen[1]: listener 0.0.0.0:1 is also listen[0]");
    ASSERT_ERR("{'listen': [{'unix': '/tmp/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
               "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'}]}",
               "t.json: listen[0].unix: a Unix socket path must be shorter than 108 bytes, "
               "this one has 122");
}
END_TEST

/* ------------------------------------------------------------------ */
/* tls                                                                 */

START_TEST(test_tls_errors)
{
    ASSERT_ERR("{'tls': {'mode': 'require'}}",
               "t.json: tls: mode \"require\" needs \"cert\" and \"key\"");
    ASSERT_ERR("{'tls': {'mode': 'allow'}}",
               "t.json: tls: mode \"allow\" needs \"cert\" and \"key\"");
    ASSERT_ERR("{'tls': {'cert': 'a.crt'}}",
               "t.json: tls: \"cert\" and \"key\" go together: give both or neither");
    ASSERT_ERR("{'tls': {'mode': 'requir'}}",
               "t.json: tls.mode: unknown value \"requir\" (did you mean \"require\"?)");
    ASSERT_ERR("{'tls': {'mode': 'on'}}",
               "t.json: tls.mode: unknown value \"on\" (expected one of: disable, allow, require)");
    ASSERT_ERR("{'tls': {'cert': 'nonexistent-riffq.crt', 'key': 'k'}}",
               "t.json: tls.cert: cannot read \"nonexistent-riffq.crt\": No such file or "
               "directory");
    make_tmpdir_with_certs();
    char name[128], want[320];
    snprintf(name, sizeof name, "%s/r.json", tmpdir);
    char *err = NULL;
    Config *c = cfg_load_string("{\"tls\": {\"cert\": \"server.crt\", \"key\": \"nokey\"}}",
                                name, &err);
    ck_assert_ptr_null(c);
    snprintf(want, sizeof want, "%s: tls.key: cannot read \"%s/nokey\": No such file or "
             "directory", name, tmpdir);
    ck_assert_str_eq(err, want);
    free(err);
    remove_tmpdir();
}
END_TEST

/* ------------------------------------------------------------------ */
/* auth                                                                */

START_TEST(test_auth_errors)
{
    ASSERT_ERR("{'auth': {'method': 'scram'}}",
               "t.json: auth.method: unknown value \"scram\" (did you mean "
               "\"scram-sha-256\"?)");
    ASSERT_ERR("{'auth': {'method': 'kerberos'}}",
               "t.json: auth.method: unknown value \"kerberos\" (expected one of: trust, "
               "password, md5, scram-sha-256)");
    ASSERT_ERR("{'auth': {'method': 'scram-sha256', 'users': {'a': 'b'}}}",
               "t.json: auth.method: unknown value \"scram-sha256\" (did you mean "
               "\"scram-sha-256\"?)");
    ASSERT_ERR("{'auth': {'method': 'scram-sha-256'}}",
               "t.json: auth: method \"scram-sha-256\" needs at least one user in \"users\", "
               "\"auth_query\" or \"plugin\"");
    ASSERT_ERR("{'auth': {'method': 'md5', 'users': {'comment': 'only a comment'}}}",
               "t.json: auth: method \"md5\" needs at least one user in \"users\", \"auth_query\" or \"plugin\"");
    ASSERT_ERR("{'auth': {'method': 'md5', 'auth_query': {'upstream': 'nope'}}}",
               "t.json: auth.auth_query.upstream: no upstream named \"nope\" in \"upstreams\"");
    ASSERT_ERR("{'upstreams': {'m': {'conninfo': 'host=x'}},"
               " 'auth': {'method': 'md5', 'auth_query': {'upstream': 'm', 'sql': 'x'}}}",
               "t.json: auth.auth_query: unknown key \"sql\" (expected one of: upstream, query)");
    {
        Config *aq = load("{'upstreams': {'m': {'conninfo': 'host=x'}},"
                          " 'auth': {'method': 'scram-sha-256', 'auth_query': {'upstream': 'm'}}}");
        ck_assert_str_eq(aq->auth_query_upstream, "m");
        ck_assert_str_eq(aq->auth_query, "SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = $1");
        cfg_free(aq);
    }
    ASSERT_ERR("{'auth': {'users': {'a': 'b'}}}",
               "t.json: auth: missing required key \"method\"");
    ASSERT_ERR("{'auth': {'method': 'md5', 'users': ['a']}}",
               "t.json: auth.users: expected a map of user name to password or verifier (a "
               "JSON object), got an array");
    ASSERT_ERR("{'auth': {'method': 'md5', 'users': {'a': 12345}}}",
               "t.json: auth.users.a: expected a string, got an integer");
    ASSERT_ERR("{'auth': {'method': 'md5', 'users': {'a': ''}}}",
               "t.json: auth.users.a: expected a non-empty string");
    ASSERT_ERR("{'auth': {'method': 'scram-sha-256', 'users': {'app': '" MD5_APP "'}}}",
               "t.json: auth.users.app: an md5 verifier cannot answer method "
               "\"scram-sha-256\"; give the plain password or a SCRAM-SHA-256 verifier");
    /* the malformed verifier is a secret: the message must not quote it */
    char *e = load_err("{'auth': {'method': 'password', 'users': "
                       "{'bob': 'SCRAM-SHA-256$4096:c2FsdA==$tooshort:tooshort'}}}");
    ck_assert_str_eq(e, "t.json: auth.users.bob: malformed SCRAM-SHA-256 verifier: expected "
                        "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>");
    ck_assert_ptr_null(strstr(e, "tooshort"));
    free(e);
}
END_TEST

/* ------------------------------------------------------------------ */
/* upstreams, plugins, limits, scalars                                 */

START_TEST(test_upstream_and_plugin_errors)
{
    ASSERT_ERR("{'upstreams': {'main': {'pool_size': 3}}}",
               "t.json: upstreams.main: missing required key \"conninfo\" (or \"hosts\")");
    ASSERT_ERR("{'upstreams': {'main': {'conninfo': 'x', 'pool_size': 'big'}}}",
               "t.json: upstreams.main.pool_size: expected an integer between 1 and 10000, "
               "got \"big\"");
    ASSERT_ERR("{'upstreams': {'main': {'conninfo': 'x', 'pool_size': true}}}",
               "t.json: upstreams.main.pool_size: expected an integer between 1 and 10000, "
               "got true");
    ASSERT_ERR("{'upstreams': {'main': {'conninfo': 'x', 'pool_mode': 'statement'}}}",
               "t.json: upstreams.main.pool_mode: unknown value \"statement\" (expected one "
               "of: session, transaction)");
    ASSERT_ERR("{'upstreams': {'main': {'conninfo': 'x', 'pool_size': 4, 'min_pool_size': 5}}}",
               "t.json: upstreams.main.min_pool_size: expected an integer between 0 and 4, "
               "got 5");
    ASSERT_ERR("{'upstreams': {'main': 'host=x'}}",
               "t.json: upstreams.main: expected an upstream such as {\"conninfo\": "
               "\"host=... dbname=...\"} (a JSON object), got a string");
    ASSERT_ERR("{'upstreams': {'': {'conninfo': 'x'}}}",
               "t.json: upstreams[\"\"]: a name must not be empty");
    ASSERT_ERR("{'plugins': {'demo': {}}}",
               "t.json: plugins.demo: missing required key \"module\" (a .py file), or "
               "\"import\" (a Python module name such as \"mypackage.plugin\")");
    ASSERT_ERR("{'plugins': {'demo': {'module': 'd.py', 'import': 'd'}}}",
               "t.json: plugins.demo: give \"module\" or \"import\", not both");
    ASSERT_ERR("{'plugins': {'demo': {'import': 'pkg..mod'}}}",
               "t.json: plugins.demo.import: expected a Python module name such as "
               "\"package.module\", got \"pkg..mod\"");
    ASSERT_ERR("{'plugins': {'demo': {'import': '1pkg'}}}",
               "t.json: plugins.demo.import: expected a Python module name such as "
               "\"package.module\", got \"1pkg\"");
    ASSERT_ERR("{'auth': {'method': 'scram-sha-256', 'plugin': 'demo'},"
               " 'plugins': {'demo': {'import': 'd'}}}",
               "t.json: auth.plugin: a plugin checks cleartext passwords: use \"method\": "
               "\"password\" (with TLS), not \"scram-sha-256\"");
    ASSERT_ERR("{'auth': {'method': 'password', 'plugin': 'nope'},"
               " 'plugins': {'demo': {'import': 'd'}}}",
               "t.json: auth.plugin: no plugin named \"nope\" in \"plugins\"");
    ASSERT_ERR("{'unknown_settings': 'allow'}",
               "t.json: unknown_settings: unknown value \"allow\" (expected one of: reject, accept)");
    ASSERT_ERR("{'limits': {'plugin_workers': 0}}",
               "t.json: limits.plugin_workers: expected an integer between 1 and 256, got 0");
    ASSERT_ERR("{'plugins': {'demo': {'module': 'd.py', 'modul': 'x'}}}",
               "t.json: plugins.demo: unknown key \"modul\" (did you mean \"module\"?)");
}
END_TEST

/* An upstream with a primary and replicas, and routes reading from them. */
START_TEST(test_upstream_hosts_and_read_from)
{
    Config *c = load(
        "{'upstreams': {"
        "   'main': {'hosts': [{'conninfo': 'host=r1', 'role': 'replica'},"
        "                      {'conninfo': 'host=p password=pw', 'role': 'primary',"
        "                       'comment': 'writes go here'},"
        "                      {'conninfo': 'host=r2', 'role': 'replica'}],"
        "            'pool_mode': 'transaction', 'pool_size': 3,"
        "            'health_check': {'interval': '250ms', 'timeout': 100}},"
        "   'plain': {'conninfo': 'host=x'},"
        "   'probed': {'conninfo': 'host=y', 'health_check': {}},"
        "   'defaults': {'hosts': [{'conninfo': 'host=z', 'role': 'primary'},"
        "                          {'conninfo': 'host=z2', 'role': 'replica'}]}},"
        " 'routes': ["
        "   {'name': 'reports', 'match': {'schemas': ['rpt']}, 'to': 'upstream:main',"
        "    'read_from': 'replica'},"
        "   {'name': 'explicit', 'match': {'user': ['w']}, 'to': 'upstream:main',"
        "    'read_from': 'primary'},"
        "   {'name': 'rest', 'to': 'upstream:plain'}]}");
    const CfgUpstream *u = cfg_find_upstream(c, "main");
    ck_assert_uint_eq(u->n_hosts, 3);
    ck_assert_uint_eq(u->n_replicas, 2);
    ck_assert_str_eq(u->hosts[0].conninfo, "host=r1");
    ck_assert_int_eq(u->hosts[0].role, HOST_REPLICA);
    ck_assert_int_eq(u->hosts[1].role, HOST_PRIMARY);
    ck_assert_int_eq(u->hosts[2].role, HOST_REPLICA);
    ck_assert_ptr_eq(u->conninfo, u->hosts[1].conninfo);     /* the primary's */
    ck_assert_int_eq(u->pool_mode, POOL_TRANSACTION);
    ck_assert_int_eq(u->pool_size, 3);
    ck_assert_int_eq(u->health_interval_ms, 250);
    ck_assert_int_eq(u->health_timeout_ms, 100);
    /* a plain conninfo is one primary, not probed unless asked */
    u = cfg_find_upstream(c, "plain");
    ck_assert_uint_eq(u->n_hosts, 1);
    ck_assert_uint_eq(u->n_replicas, 0);
    ck_assert_int_eq(u->hosts[0].role, HOST_PRIMARY);
    ck_assert_str_eq(u->conninfo, "host=x");
    ck_assert_int_eq(u->health_interval_ms, 0);
    u = cfg_find_upstream(c, "probed");
    ck_assert_int_eq(u->health_interval_ms, 5000);
    ck_assert_int_eq(u->health_timeout_ms, 2000);
    /* replicas are probed by default */
    u = cfg_find_upstream(c, "defaults");
    ck_assert_int_eq(u->health_interval_ms, 5000);
    ck_assert_int_eq(u->health_timeout_ms, 2000);
    ck_assert_int_eq(c->routes[0].read_from, READ_FROM_REPLICA);
    ck_assert_int_eq(c->routes[1].read_from, READ_FROM_PRIMARY);
    ck_assert_int_eq(c->routes[2].read_from, READ_FROM_PRIMARY);
    cfg_free(c);
}
END_TEST

START_TEST(test_upstream_hosts_errors)
{
#define R1 "{'conninfo': 'host=r1', 'role': 'replica'}"
#define P1 "{'conninfo': 'host=p', 'role': 'primary'}"
    ASSERT_ERR("{'upstreams': {'m': {'conninfo': 'host=p', 'hosts': [" P1 "]}}}",
               "t.json: upstreams.m: give either \"conninfo\" (one server) or \"hosts\" (a "
               "primary and its replicas), not both");
    ASSERT_ERR("{'upstreams': {'m': {'hosts': []}}}",
               "t.json: upstreams.m.hosts: expected a non-empty array of hosts such as "
               "[{\"conninfo\": \"host=...\", \"role\": \"primary\"}], got an empty array");
    ASSERT_ERR("{'upstreams': {'m': {'hosts': {'a': 1}}}}",
               "t.json: upstreams.m.hosts: expected a non-empty array of hosts such as "
               "[{\"conninfo\": \"host=...\", \"role\": \"primary\"}], got an object");
    ASSERT_ERR("{'upstreams': {'m': {'hosts': [" R1 "]}}}",
               "t.json: upstreams.m.hosts: expected exactly one host with \"role\": \"primary\", "
               "got none (writes and transactions need it; for a read-only server, give its "
               "conninfo as the primary)");
    ASSERT_ERR("{'upstreams': {'m': {'hosts': [" P1 ", " R1 ", " P1 "]}}}",
               "t.json: upstreams.m.hosts[2].role: expected exactly one host with \"role\": "
               "\"primary\", but hosts[0] is the primary already");
    ASSERT_ERR("{'upstreams': {'m': {'hosts': [" P1 ", {'conninfo': 'host=r'}]}}}",
               "t.json: upstreams.m.hosts[1]: missing required key \"role\"");
    ASSERT_ERR("{'upstreams': {'m': {'hosts': [" P1 ", {'role': 'replica'}]}}}",
               "t.json: upstreams.m.hosts[1]: missing required key \"conninfo\"");
    ASSERT_ERR("{'upstreams': {'m': {'hosts': [" P1 ", {'conninfo': 'host=r', 'role': 'standby'}]}}}",
               "t.json: upstreams.m.hosts[1].role: unknown value \"standby\" (expected one of: "
               "primary, replica)");
    ASSERT_ERR("{'upstreams': {'m': {'hosts': [" P1 ", {'conninfo': 'host=r', 'rol': 'replica'}]}}}",
               "t.json: upstreams.m.hosts[1]: unknown key \"rol\" (did you mean \"role\"?)");
    ASSERT_ERR("{'upstreams': {'m': {'hosts': [" P1 ", 'host=r']}}}",
               "t.json: upstreams.m.hosts[1]: expected a host such as {\"conninfo\": \"host=...\", "
               "\"role\": \"replica\"} (a JSON object), got a string");
    ASSERT_ERR("{'upstreams': {'m': {'hosts': [{'conninfo': '', 'role': 'primary'}]}}}",
               "t.json: upstreams.m.hosts[0].conninfo: expected a non-empty string");
    ASSERT_ERR("{'upstreams': {'m': {'host': [" P1 "]}}}",
               "t.json: upstreams.m: unknown key \"host\" (did you mean \"hosts\"?)");
    /* health_check */
    ASSERT_ERR("{'upstreams': {'m': {'conninfo': 'x', 'health_check': {'interval': '10ms'}}}}",
               "t.json: upstreams.m.health_check.interval: expected a duration between 100ms "
               "and 1h, got \"10ms\"");
    ASSERT_ERR("{'upstreams': {'m': {'conninfo': 'x', 'health_check': {'timeout': 'soon'}}}}",
               "t.json: upstreams.m.health_check.timeout: expected a duration in milliseconds "
               "such as 60000, or a string such as \"60s\" (units ms, s, min, h, d), got \"soon\"");
    ASSERT_ERR("{'upstreams': {'m': {'conninfo': 'x', 'health_check': {'intervall': 100}}}}",
               "t.json: upstreams.m.health_check: unknown key \"intervall\" (did you mean "
               "\"interval\"?)");
    ASSERT_ERR("{'upstreams': {'m': {'conninfo': 'x', 'health_check': true}}}",
               "t.json: upstreams.m.health_check: expected health check settings such as "
               "{\"interval\": \"5s\", \"timeout\": \"2s\"} (a JSON object), got true");
    ASSERT_ERR("{'upstreams': {'m': {'conninfo': 'x', 'helth_check': {}}}}",
               "t.json: upstreams.m: unknown key \"helth_check\" (did you mean \"health_check\"?)");
    /* read_from */
    ASSERT_ERR("{'upstreams': {'m': {'hosts': [" P1 ", " R1 "]}},"
               " 'routes': [{'to': 'upstream:m', 'read_from': 'replicas'}]}",
               "t.json: routes[0].read_from: unknown value \"replicas\" (did you mean "
               "\"replica\"?)");
    ASSERT_ERR("{'upstreams': {'m': {'conninfo': 'host=p'}},"
               " 'routes': [{'to': 'upstream:m', 'read_from': 'replica'}]}",
               "t.json: routes[0].read_from: upstream \"m\" has no host with \"role\": "
               "\"replica\"");
    ASSERT_ERR("{'routes': [{'to': 'local', 'read_from': 'replica'}]}",
               "t.json: routes[0].read_from: applies only to routes with \"to\": "
               "\"upstream:NAME\"");
    ASSERT_ERR("{'upstreams': {'m': {'hosts': [" P1 ", " R1 "]}},"
               " 'routes': [{'to': 'upstream:m', 'readfrom': 'replica'}]}",
               "t.json: routes[0]: unknown key \"readfrom\" (did you mean \"read_from\"?)");
#undef R1
#undef P1
}
END_TEST

START_TEST(test_limits_and_scalar_errors)
{
    ASSERT_ERR("{'limits': {'max_clients': 0}}",
               "t.json: limits.max_clients: expected an integer between 1 and 1000000, got 0");
    ASSERT_ERR("{'limits': {'max_message_size': '64XB'}}",
               "t.json: limits.max_message_size: expected a size in bytes such as 65536, or a "
               "string such as \"64MB\" (units B, kB, MB, GB, TB), got \"64XB\"");
    ASSERT_ERR("{'limits': {'max_message_size': '2GB'}}",
               "t.json: limits.max_message_size: expected a size between 1kB and 1GB, got "
               "\"2GB\"");
    ASSERT_ERR("{'limits': {'max_message_size': 100}}",
               "t.json: limits.max_message_size: expected a size between 1kB and 1GB, got 100");
    ASSERT_ERR("{'limits': {'max_message_size': '99999999999999999999TB'}}",
               "t.json: limits.max_message_size: expected a size in bytes such as 65536, or a "
               "string such as \"64MB\" (units B, kB, MB, GB, TB), got "
               "\"99999999999999999999TB\"");
    ASSERT_ERR("{'limits': {'auth_timeout': '60 sec'}}",
               "t.json: limits.auth_timeout: expected a duration in milliseconds such as "
               "60000, or a string such as \"60s\" (units ms, s, min, h, d), got \"60 sec\"");
    ASSERT_ERR("{'limits': {'auth_timeout': '2h'}}",
               "t.json: limits.auth_timeout: expected a duration between 1ms and 1h, got "
               "\"2h\"");
    ASSERT_ERR("{'limits': {'auth_timeout': 0}}",
               "t.json: limits.auth_timeout: expected a duration between 1ms and 1h, got 0");
    ASSERT_ERR("{'limits': {'auth_timeout': [1]}}",
               "t.json: limits.auth_timeout: expected a duration in milliseconds such as "
               "60000, or a string such as \"60s\" (units ms, s, min, h, d), got an array");
    ASSERT_ERR("{'server_version': 'riffq 1.0'}",
               "t.json: server_version: expected a version that starts with a number, such as "
               "\"15.8 (riffq)\"");
    ASSERT_ERR("{'log_level': 'warn'}",
               "t.json: log_level: unknown value \"warn\" (did you mean \"warning\"?)");
    ASSERT_ERR("{'upstreams': {'u': {'conninfo': 'x', 'pool_mode': 'trans'}}}",
               "t.json: upstreams.u.pool_mode: unknown value \"trans\" (did you mean "
               "\"transaction\"?)");
    ASSERT_ERR("{'log_level': 'verbose'}",
               "t.json: log_level: unknown value \"verbose\" (expected one of: debug, info, "
               "warning, error)");
}
END_TEST

/* ------------------------------------------------------------------ */
/* routes                                                              */

START_TEST(test_route_target_errors)
{
    const char *defs = "'upstreams': {'main': {'conninfo': 'x'}, 'archive': {'conninfo': 'y'}},"
                       "'plugins': {'demo': {'module': 'd.py'}},";
    char json[512];
    snprintf(json, sizeof json, "{%s 'routes': [{'to': 'upstream:mian'}]}", defs);
    ASSERT_ERR(json, "t.json: routes[0].to: no upstream named \"mian\" (did you mean \"main\"?)");
    snprintf(json, sizeof json, "{%s 'routes': [{'to': 'upstream:zzz'}]}", defs);
    ASSERT_ERR(json, "t.json: routes[0].to: no upstream named \"zzz\" (upstreams defined: "
               "main, archive)");
    ASSERT_ERR("{'routes': [{'to': 'upstream:main'}]}",
               "t.json: routes[0].to: no upstream named \"main\" (no upstreams are defined)");
    snprintf(json, sizeof json, "{%s 'routes': [{'to': 'plugin:dmeo'}]}", defs);
    ASSERT_ERR(json, "t.json: routes[0].to: no plugin named \"dmeo\" (did you mean \"demo\"?)");
    ASSERT_ERR("{'routes': [{'to': 'upstrem:main'}]}",
               "t.json: routes[0].to: expected \"upstream:NAME\", \"plugin:NAME\", \"local\", "
               "\"reject\" or \"catalog\", got \"upstrem:main\" (did you mean "
               "\"upstream:main\"?)");
    ASSERT_ERR("{'routes': [{'to': 'upstream'}]}",
               "t.json: routes[0].to: expected \"upstream:NAME\", \"plugin:NAME\", \"local\", "
               "\"reject\" or \"catalog\", got \"upstream\" (did you mean \"upstream:NAME\"?)");
    ASSERT_ERR("{'routes': [{'to': 'locl'}]}",
               "t.json: routes[0].to: expected \"upstream:NAME\", \"plugin:NAME\", \"local\", "
               "\"reject\" or \"catalog\", got \"locl\" (did you mean \"local\"?)");
    ASSERT_ERR("{'routes': [{'to': 'nowhere'}]}",
               "t.json: routes[0].to: expected \"upstream:NAME\", \"plugin:NAME\", \"local\", "
               "\"reject\" or \"catalog\", got \"nowhere\"");
    ASSERT_ERR("{'routes': [{'name': 'x'}]}", "t.json: routes[0]: missing required key \"to\"");
    ASSERT_ERR("{'routes': [{'to': 'local', 'message': 'no'}]}",
               "t.json: routes[0]: \"message\" applies only to routes with \"to\": \"reject\"");
    ASSERT_ERR("{'routes': [{'to': 'catalog', 'sqlstate': '42501'}]}",
               "t.json: routes[0]: \"sqlstate\" applies only to routes with \"to\": \"reject\"");
}
END_TEST

START_TEST(test_route_reject_sqlstate)
{
    ASSERT_ERR("{'routes': [{'to': 'reject', 'sqlstate': '4250'}]}",
               "t.json: routes[0].sqlstate: expected a SQLSTATE of five characters 0-9 or A-Z, "
               "such as \"42501\", got \"4250\"");
    ASSERT_ERR("{'routes': [{'to': 'reject', 'sqlstate': '42p01'}]}",
               "t.json: routes[0].sqlstate: expected a SQLSTATE of five characters 0-9 or A-Z, "
               "such as \"42501\", got \"42p01\"");
    ASSERT_ERR("{'routes': [{'to': 'reject', 'sqlstate': '01000'}]}",
               "t.json: routes[0].sqlstate: expected an error SQLSTATE, got class 01 (success, "
               "warning or no data)");
    Config *c = load("{'routes': [{'to': 'reject', 'sqlstate': '0A000', 'message': 'm'}]}");
    ck_assert_str_eq(c->routes[0].sqlstate, "0A000");
    cfg_free(c);
}
END_TEST

START_TEST(test_route_match_errors)
{
    ASSERT_ERR("{'routes': [{'match': {'statement': ['selct']}, 'to': 'local'}]}",
               "t.json: routes[0].match.statement[0]: unknown statement kind \"selct\" (did "
               "you mean \"select\"?)");
    ASSERT_ERR("{'routes': [{'match': {'statement': ['SELECT', 'x']}, 'to': 'local'}]}",
               "t.json: routes[0].match.statement[0]: unknown statement kind \"SELECT\" "
               "(expected one of: select, insert, update, delete, merge, ddl, copy, utility, "
               "transaction, set, show, call, explain, other)");
    ASSERT_ERR("{'routes': [{'match': {'client': ['10.0.0.0/8', '10.0.0/8']}, 'to': 'local'}]}",
               "t.json: routes[0].match.client[1]: expected an IPv4 or IPv6 address or CIDR "
               "such as \"10.0.0.0/8\" or \"::1/128\", got \"10.0.0/8\"");
    ASSERT_ERR("{'routes': [{'match': {'client': ['10.0.0.0/33']}, 'to': 'local'}]}",
               "t.json: routes[0].match.client[0]: expected an IPv4 or IPv6 address or CIDR "
               "such as \"10.0.0.0/8\" or \"::1/128\", got \"10.0.0.0/33\"");
    ASSERT_ERR("{'routes': [{'match': {'client': ['::/129']}, 'to': 'local'}]}",
               "t.json: routes[0].match.client[0]: expected an IPv4 or IPv6 address or CIDR "
               "such as \"10.0.0.0/8\" or \"::1/128\", got \"::/129\"");
    ASSERT_ERR("{'routes': [{'match': {'client': ['1.2.3.4/']}, 'to': 'local'}]}",
               "t.json: routes[0].match.client[0]: expected an IPv4 or IPv6 address or CIDR "
               "such as \"10.0.0.0/8\" or \"::1/128\", got \"1.2.3.4/\"");
    ASSERT_ERR("{'routes': [{'match': {'client': ['localhost']}, 'to': 'local'}]}",
               "t.json: routes[0].match.client[0]: expected an IPv4 or IPv6 address or CIDR "
               "such as \"10.0.0.0/8\" or \"::1/128\", got \"localhost\"");
    ASSERT_ERR_HAS("{'routes': [{'match': {'regex': '(unclosed'}, 'to': 'local'}]}",
                   "t.json: routes[0].match.regex: invalid regular expression: ");
    ASSERT_ERR("{'routes': [{'match': {'regex': 5}, 'to': 'local'}]}",
               "t.json: routes[0].match.regex: expected a string, got an integer");
    ASSERT_ERR("{'listen': [{'host': '127.0.0.1', 'port': 6432}],"
               " 'routes': [{'match': {'listen': ['127.0.0.1:6433']}, 'to': 'local'}]}",
               "t.json: routes[0].match.listen[0]: no listener \"127.0.0.1:6433\" (did you "
               "mean \"127.0.0.1:6432\"?)");
    ASSERT_ERR("{'routes': [{'match': {'listen': ['/tmp/x']}, 'to': 'local'}]}",
               "t.json: routes[0].match.listen[0]: no listener \"/tmp/x\" (listeners are: "
               "127.0.0.1:5433)");
}
END_TEST

START_TEST(test_regex_error_text_from_regerror)
{
    regex_t re;
    int rc = regcomp(&re, "(unclosed", REG_EXTENDED | REG_NOSUB);
    ck_assert_int_ne(rc, 0);
    char msg[256], want[320];
    regerror(rc, &re, msg, sizeof msg);
    snprintf(want, sizeof want, "t.json: routes[0].match.regex: invalid regular expression: %s",
             msg);
    ASSERT_ERR("{'routes': [{'match': {'regex': '(unclosed'}, 'to': 'local'}]}", want);
}
END_TEST

START_TEST(test_route_names_and_order)
{
    ASSERT_ERR("{'routes': [{'name': 'a', 'match': {'user': ['u']}, 'to': 'local'},"
               " {'name': 'b', 'match': {'user': ['v']}, 'to': 'local'},"
               " {'name': 'a', 'to': 'local'}]}",
               "t.json: routes[2].name: duplicate route name \"a\" (also routes[0])");
    /* a default name counts too */
    ASSERT_ERR("{'routes': [{'match': {'user': ['u']}, 'to': 'local'},"
               " {'name': 'route[0]', 'to': 'local'}]}",
               "t.json: routes[1].name: duplicate route name \"route[0]\" (also routes[0])");
    ASSERT_ERR("{'routes': [{'name': 'all', 'to': 'local'}, {'name': 'never', 'to': 'reject'}]}",
               "t.json: routes[0]: route \"all\" has no match conditions and takes every "
               "statement, so routes[1] (\"never\") and any after it can never be chosen; give "
               "it a \"match\" or move it last");
    ASSERT_ERR("{'routes': [{'match': {'comment': 'empty'}, 'to': 'local'}, {'to': 'local'}]}",
               "t.json: routes[0]: route \"route[0]\" has no match conditions and takes every "
               "statement, so routes[1] (\"route[1]\") and any after it can never be chosen; "
               "give it a \"match\" or move it last");
    /* a plugin route without conditions claims its plugin's tables, not
     * every statement, so routes may follow it */
    Config *pc = load("{'plugins': {'p': {'module': 'p.py'}},"
                      " 'routes': [{'name': 'p', 'to': 'plugin:p'}, {'name': 'l', 'to': 'local'}]}");
    ck_assert_uint_eq(pc->n_routes, 2);
    ck_assert_int_eq(pc->routes[0].target, TARGET_PLUGIN);
    cfg_free(pc);
    Config *c = load("{'routes': []}");
    ck_assert_uint_eq(c->n_routes, 0);
    cfg_free(c);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Shipped route files                                                 */

START_TEST(test_shipped_default)
{
    unsetenv("RIFFQ_PORT");
    unsetenv("RIFFQ_USER");
    unsetenv("RIFFQ_PASSWORD");
    char *err = NULL;
    Config *c = cfg_load("routes/default.json", &err);
    ck_assert_msg(c != NULL, "%s", err ? err : "");
    ck_assert_str_eq(c->dir, "routes");
    ck_assert_uint_eq(c->n_listen, 1);
    ck_assert_str_eq(c->listen[0].host, "127.0.0.1");
    ck_assert_int_eq(c->listen[0].port, 5433);
    ck_assert_int_eq(c->auth_method, AUTH_SCRAM);
    ck_assert_uint_eq(c->n_users, 1);
    ck_assert_str_eq(c->users[0].name, "riffq");
    ck_assert_str_eq(c->users[0].secret, "riffq");
    ck_assert_str_eq(cfg_find_plugin(c, "demo")->module, "routes/../plugins/demo.py");
    ck_assert_str_eq(cfg_find_plugin(c, "sqlite")->module, "routes/../plugins/sqlite_engine.py");
    ck_assert_str_eq(cfg_find_plugin(c, "http")->module, "routes/../plugins/http_source.py");
    ck_assert_uint_eq(c->n_routes, 4);
    ck_assert_int_eq(c->routes[0].target, TARGET_PLUGIN);
    ck_assert_str_eq(c->routes[0].target_name, "demo");
    ck_assert_uint_eq(c->routes[0].tables.n, 3);
    ck_assert_str_eq(c->routes[0].tables.items[0], "sales");
    ck_assert_str_eq(c->routes[0].tables.items[1], "customers");
    ck_assert_str_eq(c->routes[0].tables.items[2], "events");
    ck_assert_str_eq(c->routes[1].target_name, "sqlite");
    ck_assert_str_eq(c->routes[2].target_name, "http");
    ck_assert_str_eq(c->routes[3].name, "local");
    ck_assert_int_eq(c->routes[3].target, TARGET_LOCAL);
    ck_assert_int_eq(c->tls_mode, TLS_DISABLE);
    cfg_free(c);

    setenv("RIFFQ_PORT", "6000", 1);
    setenv("RIFFQ_USER", "me", 1);
    setenv("RIFFQ_PASSWORD", "pw", 1);
    c = cfg_load("routes/default.json", &err);
    ck_assert_msg(c != NULL, "%s", err ? err : "");
    ck_assert_int_eq(c->listen[0].port, 6000);
    ck_assert_str_eq(c->users[0].name, "me");
    ck_assert_str_eq(c->users[0].secret, "pw");
    cfg_free(c);
    unsetenv("RIFFQ_PORT");
    unsetenv("RIFFQ_USER");
    unsetenv("RIFFQ_PASSWORD");
}
END_TEST

START_TEST(test_shipped_examples)
{
    char *err = NULL;
    Config *c = cfg_load("routes/examples.json", &err);
    ck_assert_msg(c != NULL, "%s", err ? err : "");
    ck_assert_uint_eq(c->n_listen, 2);
    ck_assert_str_eq(c->listen[1].unix_path, "/tmp/.s.PGSQL.6432");
    ck_assert_int_eq(c->auth_method, AUTH_SCRAM);
    ck_assert_ptr_nonnull(cfg_find_user(c, "analyst"));
    ck_assert_int_eq(cfg_find_upstream(c, "main")->pool_mode, POOL_TRANSACTION);
    ck_assert_ptr_nonnull(cfg_find_upstream(c, "archive"));
    ck_assert_uint_eq(c->n_routes, 8);
    ck_assert_int_eq(c->routes[0].target, TARGET_CATALOG);
    ck_assert_str_eq(c->routes[2].message, "analysts are read-only");
    ck_assert_str_eq(c->routes[5].name, "shop-reads");
    ck_assert_int_eq(c->routes[5].read_from, READ_FROM_REPLICA);
    ck_assert_str_eq(c->routes[7].name, "rest");
    ck_assert_int_eq(c->routes[7].target, TARGET_UPSTREAM);
    ck_assert_uint_eq(cfg_find_upstream(c, "shop")->n_hosts, 2);
    ck_assert_int_eq(c->plugin_workers, 4);
    ck_assert_uint_eq(c->max_message_size, 64u << 20);
    ck_assert_int_eq(c->auth_timeout_ms, 60000);
    cfg_free(c);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("load");
    tcase_add_test(tc, test_empty_object_gives_defaults);
    tcase_add_test(tc, test_full_round_trip);
    tcase_add_test(tc, test_tls_defaults_to_require_with_cert);
    tcase_add_test(tc, test_tls_disabled_needs_no_files);
    tcase_add_test(tc, test_units_and_numbers_as_strings);
    tcase_add_test(tc, test_secrets_md5_and_password_methods);
    tcase_add_test(tc, test_odd_keys_are_bracketed_in_paths);
    tcase_add_test(tc, test_cfg_load_from_file);
    tcase_add_test(tc, test_cfg_load_missing_file);
    tcase_add_test(tc, test_load_string_name_and_dir);
    suite_add_tcase(s, tc);

    tc = tcase_create("env");
    tcase_add_test(tc, test_expand_set_and_default);
    tcase_add_test(tc, test_expand_multiple_and_nested);
    tcase_add_test(tc, test_expand_literal_text);
    tcase_add_test(tc, test_expand_errors);
    tcase_add_test(tc, test_expand_in_loader);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_test(tc, test_json_syntax_error_has_line_and_column);
    tcase_add_test(tc, test_top_level_must_be_object);
    tcase_add_test(tc, test_unknown_keys);
    tcase_add_test(tc, test_python_host_keys);
    tcase_add_test(tc, test_comments);
    tcase_add_test(tc, test_type_errors);
    tcase_add_test(tc, test_listen_errors);
    tcase_add_test(tc, test_tls_errors);
    tcase_add_test(tc, test_auth_errors);
    tcase_add_test(tc, test_upstream_and_plugin_errors);
    tcase_add_test(tc, test_upstream_hosts_and_read_from);
    tcase_add_test(tc, test_upstream_hosts_errors);
    tcase_add_test(tc, test_limits_and_scalar_errors);
    tcase_add_test(tc, test_route_target_errors);
    tcase_add_test(tc, test_route_reject_sqlstate);
    tcase_add_test(tc, test_route_match_errors);
    tcase_add_test(tc, test_regex_error_text_from_regerror);
    tcase_add_test(tc, test_route_names_and_order);
    suite_add_tcase(s, tc);

    tc = tcase_create("shipped");
    tcase_add_test(tc, test_shipped_default);
    tcase_add_test(tc, test_shipped_examples);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(config_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
