/*
 * The route file, loaded and validated.  A Config is immutable once loaded:
 * a SIGHUP reload builds a new one and swaps it in, so sessions that hold the
 * old one keep a consistent view.  cfg_load owns every string inside.
 *
 * Loading substitutes ${NAME} and ${NAME:-default} in every JSON string from
 * the environment, rejects unknown keys, and reports the first error as
 * "FILE: JSON.PATH: what was expected" (e.g. "r.json: routes[2].match.tables:
 * expected an array of strings").
 */
#ifndef RIFFQ_CONFIG_H
#define RIFFQ_CONFIG_H

#include <stddef.h>

typedef enum { TLS_DISABLE = 0, TLS_ALLOW, TLS_REQUIRE } CfgTlsMode;
typedef enum { AUTH_TRUST = 0, AUTH_PASSWORD, AUTH_MD5, AUTH_SCRAM } CfgAuthMethod;
typedef enum { POOL_SESSION = 0, POOL_TRANSACTION } CfgPoolMode;
typedef enum { TARGET_UPSTREAM = 0, TARGET_PLUGIN, TARGET_LOCAL, TARGET_REJECT,
               TARGET_CATALOG } CfgTargetKind;
typedef enum { HOST_PRIMARY = 0, HOST_REPLICA } CfgHostRole;
typedef enum { READ_FROM_PRIMARY = 0, READ_FROM_REPLICA } CfgReadFrom;

typedef struct CfgListen {
    char *host;     /* TCP: host or address; NULL for a Unix socket */
    int port;       /* TCP port (1..65535) */
    char *unix_path;/* Unix socket path, or NULL for TCP */
    char *name;     /* "host:port", "[v6addr]:port" or the Unix path: how a
                     * route's match.listen names this listener */
} CfgListen;

typedef struct CfgUser {
    char *name;
    char *secret;   /* as written: plain password, "md5<32 hex>", or "SCRAM-SHA-256$..." */
} CfgUser;

/* One server of an upstream: its primary, or a streaming replica that
 * routes with "read_from": "replica" may send plain reads to. */
typedef struct CfgHost {
    char *conninfo;
    CfgHostRole role;
} CfgHost;

typedef struct CfgUpstream {
    char *name;
    char *conninfo;         /* the primary's: borrowed from hosts[], not owned */
    CfgHost *hosts;         /* exactly one primary; a plain "conninfo" is a
                             * single primary host */
    size_t n_hosts;
    size_t n_replicas;
    CfgPoolMode pool_mode;
    int pool_size;          /* default 20, per host */
    int min_pool_size;      /* default 0, per host */
    /* health_check: every host is probed every interval; 0 = no probes
     * (the default for an upstream without replicas) */
    int health_interval_ms;
    int health_timeout_ms;
} CfgUpstream;

typedef struct CfgPlugin {
    char *name;
    char *module;           /* path of the .py file, relative paths against the route file's dir */
    char *import;           /* or a module name for importlib ("pkg.plugin"); exactly one is set */
} CfgPlugin;

typedef struct CfgStrList {
    char **items;
    size_t n;
} CfgStrList;

typedef struct CfgRoute {
    char *name;             /* defaults to "route[N]" */
    /* match: each list empty = not constrained.  statement holds the lower
     * case kind names of route_kind_name(); client holds CIDRs or bare
     * addresses as written (validated with inet_pton); listen holds
     * CfgListen.name values of configured listeners. */
    CfgStrList tables, schemas, statement, user, database, application_name, client, listen;
    char *regex;            /* NULL = not constrained */
    CfgTargetKind target;
    char *target_name;      /* upstream or plugin name; NULL for local/reject/catalog */
    char *message;          /* reject message (NULL = a default one) */
    char sqlstate[6];       /* reject SQLSTATE, default "42501" */
    int has_match;          /* "match" was given, even empty: a plugin route
                             * without it claims the plugin's own tables */
    CfgReadFrom read_from;  /* upstream routes: where plain reads outside a
                             * transaction go (replica: a healthy replica) */
} CfgRoute;

typedef struct Config {
    char *path;             /* file it came from, or "<builtin>" */
    char *dir;              /* directory of path, for relative paths */

    CfgListen *listen; size_t n_listen;

    CfgTlsMode tls_mode;    /* default: require when cert and key are given, else disable */
    char *tls_cert;         /* resolved path or NULL */
    char *tls_key;

    CfgAuthMethod auth_method;  /* default trust */
    CfgUser *users; size_t n_users;
    /* auth.auth_query: users not in `users` are looked up on this upstream
     * with this query ($1 = user name; the second column is the verifier) */
    char *auth_query_upstream;  /* NULL = no lookup */
    char *auth_query;
    /* auth.plugin: cleartext passwords are checked by this plugin's
     * @riffq.authenticate hook, for users that "users" does not list */
    char *auth_plugin;

    CfgUpstream *upstreams; size_t n_upstreams;
    CfgPlugin *plugins; size_t n_plugins;
    CfgRoute *routes; size_t n_routes;

    /* limits (key "limits" in the file) */
    int max_clients;            /* default 1000 */
    int plugin_workers;         /* Python handler threads, default 2 */
    size_t max_message_size;    /* bytes, default 64 MiB */
    int auth_timeout_ms;        /* default 60000 */

    char *server_version;       /* reported version, default "15.8 (riffq " RIFFQ_VERSION ")" */
    /* "unknown_settings": "accept" stores settings Postgres does not know
     * (startup options, SET) like custom ones instead of failing with 42704:
     * for servers that imitate another system's parameters */
    int accept_unknown_settings;
    char *log_level;            /* "debug" | "info" | "warning" | "error", default "info" */
} Config;

/* Parse and validate a route file.  On error returns NULL and sets *errmsg to
 * a malloc'd message the caller frees. */
Config *cfg_load(const char *path, char **errmsg);
/* Same, from a JSON text; name is used in error messages and for relative paths
 * (its directory). */
Config *cfg_load_string(const char *json, const char *name, char **errmsg);
void cfg_free(Config *cfg);

/* Expand ${NAME} and ${NAME:-default} from the environment.  Returns a
 * malloc'd string, or NULL with *errmsg set (unset variable without default,
 * unterminated ${). */
char *cfg_expand_env(const char *s, char **errmsg);

const CfgUser *cfg_find_user(const Config *cfg, const char *name);
const CfgUpstream *cfg_find_upstream(const Config *cfg, const char *name);
const CfgPlugin *cfg_find_plugin(const Config *cfg, const char *name);

#endif
