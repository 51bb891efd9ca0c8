/*
 * riffq: command line, configuration load, signals, start and stop.
 *
 *   riffq --config FILE            run the gateway
 *   riffq --config FILE --check    validate FILE: exit 0, or 1 with the error
 *
 * SIGINT/SIGTERM stop the gateway (sessions get 57P01 and are closed);
 * SIGHUP reloads the route file for new connections and keeps the old one
 * when the new file is invalid.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <signal.h>
#include <uv.h>
#include <openssl/ssl.h>
#include "riffq/buf.h"
#include "riffq/config.h"
#include "riffq/log.h"
#include "riffq/plugin.h"
#include "riffq/route.h"
#include "riffq/server.h"

typedef struct App {
    uv_loop_t loop;
    uv_signal_t sigint, sigterm, sighup;
    Server *srv;
    char *config_path;
} App;

static void usage(FILE *f)
{
    fprintf(f,
        "Usage: riffq --config FILE [--check | --explain SQL]\n"
        "\n"
        "A PostgreSQL wire-compatible gateway: routes each statement to an upstream\n"
        "Postgres, a Python plugin, the emulated catalog, or answers it itself.\n"
        "\n"
        "Options:\n"
        "  -c, --config FILE   route file (JSON); see README.md\n"
        "      --check         validate the route file and exit (0 = valid)\n"
        "      --explain SQL   show which route each statement of SQL takes, and why\n"
        "      --user NAME, --database NAME, --application-name NAME\n"
        "                      the client --explain pretends to be (default: riffq)\n"
        "  -h, --help          show this help and exit\n"
        "  -V, --version       show the version and exit\n");
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void on_stop_signal(uv_signal_t *s, int signum)
{
    App *app = s->data;
    log_info("received %s, shutting down", signum == SIGINT ? "SIGINT" : "SIGTERM");
    server_stop(app->srv);
    uv_signal_stop(&app->sigint);
    uv_signal_stop(&app->sigterm);
    uv_signal_stop(&app->sighup);
    uv_close((uv_handle_t *)&app->sigint, NULL);
    uv_close((uv_handle_t *)&app->sigterm, NULL);
    uv_close((uv_handle_t *)&app->sighup, NULL);
}

static void on_hup(uv_signal_t *s, int signum)
{
    App *app = s->data;
    char *err = NULL;
    (void)signum;
    Config *cfg = cfg_load(app->config_path, &err);
    if (!cfg || server_reload(app->srv, cfg, &err) < 0) {
        log_error("reload failed, keeping the current configuration: %s", err ? err : "?");
        free(err);
        return;
    }
    log_info("reloaded %s", app->config_path);
}

/* --explain: how the routing table treats each statement of sql. */
static int explain_plugin_has_table(void *ctx, const char *plugin, const char *schema,
                                    const char *name)
{
    return plug_engine_table(ctx, plugin, schema ? schema : "public", name) != NULL;
}

/* A plugin route without "match" claims the tables its plugin registers,
 * which only importing the plugin tells: --explain does, as the gateway
 * would at start. */
static PlugEngine *explain_plugins(const Config *cfg, uv_loop_t *loop, RouteTable *t)
{
    int needed = 0;
    for (size_t i = 0; i < cfg->n_routes; i++)
        if (cfg->routes[i].target == TARGET_PLUGIN && !cfg->routes[i].has_match) needed = 1;
    if (!needed) return NULL;
    char *err = NULL;
    PlugEngine *e = plug_engine_new(loop, cfg, 1, &err);
    if (!e) {
        printf("plugins: not imported (%s): routes that claim a plugin's tables cannot match\n",
               err ? err : "?");
        free(err);
        return NULL;
    }
    route_table_set_plugin_tables(t, explain_plugin_has_table, e);
    printf("plugins: imported, to learn the tables they register\n");
    return e;
}

static int explain_routes(const Config *cfg, const RouteClient *client, const char *sql)
{
    char *err = NULL;
    RouteTable *t = route_table_new(cfg, &err);
    if (!t) {
        fprintf(stderr, "riffq: %s\n", err);
        free(err);
        return 1;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    PlugEngine *plugins = explain_plugins(cfg, &loop, t);
    RouteParse p;
    RqError e = {0};
    int rc = 0;
    printf("client: user=%s database=%s application_name=%s\n", client->user, client->database,
           client->application_name);
    if (route_parse(sql, &p, &e) < 0) {
        printf("parse: %s (at character %d): only routes without statement conditions apply\n",
               e.message, e.position);
        rq_error_free(&e);
        memset(&p, 0, sizeof p);
        p.n = 0;
        Buf why;
        buf_init(&why);
        int idx = route_table_match(t, client, NULL, &e, &why);
        buf_append_byte(&why, 0);
        fputs(why.data ? why.data : "", stdout);
        printf("=> %s\n", idx >= 0 ? route_table_route(t, idx)->name : "no route: answered by the gateway");
        buf_free(&why);
    }
    for (size_t i = 0; i < p.n; i++) {
        const RouteStmt *st = &p.stmts[i];
        printf("\nstatement %zu: %s\n  kind: %s (%s)\n  relations:", i + 1, st->text,
               route_kind_name(st->kind), route_stmt_tag(st));
        for (size_t k = 0; k < st->n_rels; k++)
            printf(" %s%s%s", st->rels[k].schema ? st->rels[k].schema : "",
                   st->rels[k].schema ? "." : "", st->rels[k].name);
        printf("%s\n", st->n_rels ? "" : " none");
        Buf why;
        buf_init(&why);
        int idx = route_table_match(t, client, st, &e, &why);
        buf_append_byte(&why, 0);
        fputs(why.data ? why.data : "", stdout);
        buf_free(&why);
        if (idx == -2) {
            printf("=> rejected: %s (%s)\n", e.message, e.sqlstate);
            rq_error_free(&e);
            rc = 1;
        } else if (idx == -1) {
            printf("=> no route matches: answered by the gateway itself when it can, else an error\n");
        } else {
            const CfgRoute *r = route_table_route(t, idx);
            static const char *kinds[] = { "upstream", "plugin", "local", "reject", "catalog" };
            printf("=> route \"%s\": %s%s%s\n", r->name, kinds[r->target],
                   r->target_name ? ":" : "", r->target_name ? r->target_name : "");
        }
    }
    route_parse_free(&p);
    route_table_free(t);
    plug_engine_free(plugins);
    uv_run(&loop, UV_RUN_DEFAULT);      /* closes the engine's handle */
    uv_loop_close(&loop);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "check", no_argument, NULL, 'k' },
        { "explain", required_argument, NULL, 'x' },
        { "user", required_argument, NULL, 'u' },
        { "database", required_argument, NULL, 'd' },
        { "application-name", required_argument, NULL, 'a' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    const char *config = NULL, *explain = NULL;
    RouteClient client = { .user = "riffq", .database = NULL, .application_name = "" };
    int check = 0, ch;
    while ((ch = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': config = optarg; break;
        case 'k': check = 1; break;
        case 'x': explain = optarg; break;
        case 'u': client.user = optarg; break;
        case 'd': client.database = optarg; break;
        case 'a': client.application_name = optarg; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("riffq %s\n", RIFFQ_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc || !config) {
        usage(stderr);
        return 2;
    }
    char *err = NULL;
    Config *cfg = cfg_load(config, &err);
    if (!cfg) {
        fprintf(stderr, "riffq: %s\n", err);
        free(err);
        return 1;
    }
    if (explain) {
        if (!client.database) client.database = client.user;
        int rc = explain_routes(cfg, &client, explain);
        cfg_free(cfg);
        route_parser_exit();
        return rc;
    }
    if (check) {
        printf("%s: OK (%zu listener(s), %zu route(s))\n", config, cfg->n_listen, cfg->n_routes);
        cfg_free(cfg);
        return 0;
    }
    LogLevel lvl = LOG_INFO;
    if (cfg->log_level) log_parse_level(cfg->log_level, &lvl);
    log_set_level(lvl);

    App app = {0};
    app.config_path = xstrdup(config);
    uv_loop_init(&app.loop);
    app.srv = server_new(&app.loop, cfg, &err);
    int rc = 0;
    if (!app.srv || server_listen(app.srv, &err) < 0) {
        fprintf(stderr, "riffq: %s\n", err);
        free(err);
        rc = 1;
        if (app.srv) server_stop(app.srv);
    } else {
        uv_signal_init(&app.loop, &app.sigint);
        uv_signal_init(&app.loop, &app.sigterm);
        uv_signal_init(&app.loop, &app.sighup);
        app.sigint.data = app.sigterm.data = app.sighup.data = &app;
        uv_signal_start(&app.sigint, on_stop_signal, SIGINT);
        uv_signal_start(&app.sigterm, on_stop_signal, SIGTERM);
        uv_signal_start(&app.sighup, on_hup, SIGHUP);
        signal(SIGPIPE, SIG_IGN);
        log_info("riffq %s ready", RIFFQ_VERSION);
        uv_run(&app.loop, UV_RUN_DEFAULT);
    }
    uv_run(&app.loop, UV_RUN_DEFAULT);
    /* the server's pools still own handles: free it while the loop can
     * close them, then sweep whatever is left */
    server_free(app.srv);
    uv_run(&app.loop, UV_RUN_DEFAULT);
    uv_walk(&app.loop, close_walk, NULL);
    uv_run(&app.loop, UV_RUN_DEFAULT);
    uv_loop_close(&app.loop);
    free(app.config_path);
    route_parser_exit();
    log_info("stopped");
    return rc;
}
