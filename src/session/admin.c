/*
 * The gateway's own views, answered by SHOW wherever other statements are
 * routed (a SHOW riffq.* never reaches an upstream):
 *
 *   SHOW riffq.pools    one row per upstream host: mode, size, connection
 *                       counts, and the host's role and health
 *   SHOW riffq.routes   one row per route: target and hits
 *   SHOW riffq.stats    gateway counters (sessions, pins, classification cache)
 *
 * Values are computed when asked; nothing here keeps state of its own.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include "riffq/pgtypes.h"
#include "riffq/route.h"
#include "riffq/session.h"
#include "riffq/upstream.h"
#include "local.h"

int admin_is_show(const char *sql)
{
    while (isspace((unsigned char)*sql)) sql++;
    if (strncasecmp(sql, "show", 4) != 0 || !isspace((unsigned char)sql[4])) return 0;
    sql += 4;
    while (isspace((unsigned char)*sql)) sql++;
    return strncasecmp(sql, "riffq.", 6) == 0;
}

static void columns(RqResult *r, const char *const *names, const uint32_t *types, size_t n)
{
    for (size_t i = 0; i < n; i++) rq_result_add_column(r, names[i], types[i]);
}

/* The upstream's columns come first, as they did when an upstream had one
 * host; host, role and healthy were added at the end so that clients
 * reading columns by position keep working. */
static void show_pools(const SessEnv *env, int describe, RqResult *out)
{
    static const char *names[] = { "upstream", "pool_mode", "pool_size", "active", "idle",
                                   "connecting", "waiting", "acquired", "opened", "failed",
                                   "host", "role", "healthy" };
    static const uint32_t types[] = { PGT_TEXT, PGT_TEXT, PGT_INT4, PGT_INT4, PGT_INT4,
                                      PGT_INT4, PGT_INT4, PGT_INT8, PGT_INT8, PGT_INT8,
                                      PGT_TEXT, PGT_TEXT, PGT_BOOL };
    columns(out, names, types, 13);
    for (size_t i = 0; !describe && i < env->cfg->n_upstreams; i++) {
        const CfgUpstream *u = &env->cfg->upstreams[i];
        const UpPool *pool = env->pools ? env->pools[i] : NULL;
        size_t n = pool ? up_pool_n_hosts(pool) : 0;
        for (size_t h = 0; h < n; h++) {
            UpHostStats hs;
            up_pool_host_stats(pool, h, &hs);
            const UpPoolStats *st = &hs.stats;
            char v[8][24];
            snprintf(v[0], 24, "%d", u->pool_size);
            snprintf(v[1], 24, "%d", st->active);
            snprintf(v[2], 24, "%d", st->idle);
            snprintf(v[3], 24, "%d", st->connecting);
            snprintf(v[4], 24, "%d", st->waiting);
            snprintf(v[5], 24, "%llu", (unsigned long long)st->total_acquired);
            snprintf(v[6], 24, "%llu", (unsigned long long)st->total_opened);
            snprintf(v[7], 24, "%llu", (unsigned long long)st->total_failed);
            const char *row[13] = { u->name, u->pool_mode == POOL_TRANSACTION ? "transaction" : "session",
                                    v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7],
                                    hs.host, hs.role == UP_REPLICA ? "replica" : "primary",
                                    hs.healthy ? "t" : "f" };
            rq_result_add_row(out, row);
        }
    }
}

static void show_routes(const SessEnv *env, int describe, RqResult *out)
{
    static const char *names[] = { "route", "target", "hits" };
    static const uint32_t types[] = { PGT_TEXT, PGT_TEXT, PGT_INT8 };
    static const char *kinds[] = { "upstream", "plugin", "local", "reject", "catalog" };
    columns(out, names, types, 3);
    for (size_t i = 0; !describe && env->routes && i < env->cfg->n_routes; i++) {
        const CfgRoute *r = route_table_route(env->routes, (int)i);
        char target[160], hits[24];
        snprintf(target, sizeof target, "%s%s%s", kinds[r->target], r->target_name ? ":" : "",
                 r->target_name ? r->target_name : "");
        snprintf(hits, sizeof hits, "%llu", (unsigned long long)route_table_hits(env->routes, (int)i));
        const char *row[3] = { r->name, target, hits };
        rq_result_add_row(out, row);
    }
}

static void show_stats(const SessEnv *env, int describe, RqResult *out)
{
    static const char *names[] = { "name", "value" };
    static const uint32_t types[] = { PGT_TEXT, PGT_INT8 };
    columns(out, names, types, 2);
    if (describe) return;
    uint64_t hits, misses;
    route_cache_stats(&hits, &misses);
    const struct { const char *name; uint64_t v; } rows[] = {
        { "sessions_started", env->stats ? env->stats->sessions_started : 0 },
        { "sessions_pinned", env->stats ? env->stats->sessions_pinned : 0 },
        { "classification_cache_hits", hits },
        { "classification_cache_misses", misses },
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char v[24];
        snprintf(v, sizeof v, "%llu", (unsigned long long)rows[i].v);
        const char *row[2] = { rows[i].name, v };
        rq_result_add_row(out, row);
    }
}

int admin_show(const SessEnv *env, const char *name, int describe, RqResult *out, RqError *err)
{
    if (env && !strcasecmp(name, "riffq.pools")) show_pools(env, describe, out);
    else if (env && !strcasecmp(name, "riffq.routes")) show_routes(env, describe, out);
    else if (env && !strcasecmp(name, "riffq.stats")) show_stats(env, describe, out);
    else {
        rq_error_set(err, "42704", "unrecognized configuration parameter \"%s\"", name);
        rq_error_hint(err, "The gateway's views are riffq.pools, riffq.routes and riffq.stats.");
        return -1;
    }
    return 0;
}
