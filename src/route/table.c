/*
 * The routing table: routes tried in file order, the first whose every
 * match condition holds wins (see include/riffq/route.h).
 *
 * Table conditions look at the relations the parser found, never at the
 * text.  Because a route claims its tables, a statement that joins tables
 * claimed by routes with different targets cannot be answered by any one of
 * them; it is rejected naming both routes instead of being sent half-right.
 */
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include "riffq/buf.h"
#include "riffq/route.h"

typedef struct Cidr {
    int family;             /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    int bits;
} Cidr;

typedef struct CompiledRoute {
    const CfgRoute *cfg;
    regex_t re;
    int has_re;
    Cidr *cidrs;
    size_t n_cidrs;
    uint64_t hits;
    int claims_plugin_tables;   /* plugin route without conditions */
} CompiledRoute;

struct RouteTable {
    const Config *cfg;
    RoutePluginTables plugin_tables;
    void *plugin_ctx;
    CompiledRoute *routes;
    size_t n;
    int needs_parse;
};

static int parse_cidr(const char *s, Cidr *out)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(s, '/');
    size_t hl = slash ? (size_t)(slash - s) : strlen(s);
    if (hl >= sizeof host) return -1;
    memcpy(host, s, hl);
    host[hl] = 0;
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, host, out->addr) == 1) {
        out->family = AF_INET;
        out->bits = 32;
    } else if (inet_pton(AF_INET6, host, out->addr) == 1) {
        out->family = AF_INET6;
        out->bits = 128;
    } else {
        return -1;
    }
    if (slash) {
        char *end;
        long b = strtol(slash + 1, &end, 10);
        if (*end || b < 0 || b > out->bits) return -1;
        out->bits = (int)b;
    }
    return 0;
}

RouteTable *route_table_new(const Config *cfg, char **errmsg)
{
    RouteTable *t = xcalloc(1, sizeof *t);
    t->cfg = cfg;
    t->routes = xcalloc(cfg->n_routes ? cfg->n_routes : 1, sizeof *t->routes);
    for (size_t i = 0; i < cfg->n_routes; i++) {
        const CfgRoute *r = &cfg->routes[i];
        CompiledRoute *cr = &t->routes[t->n++];
        cr->cfg = r;
        if (r->regex) {
            int rc = regcomp(&cr->re, r->regex, REG_EXTENDED | REG_NOSUB | REG_ICASE);
            if (rc != 0) {
                char msg[256];
                regerror(rc, &cr->re, msg, sizeof msg);
                *errmsg = xasprintf("%s: routes[%zu].match.regex: %s", cfg->path, i, msg);
                t->n--;
                route_table_free(t);
                return NULL;
            }
            cr->has_re = 1;
        }
        if (r->client.n) {
            cr->cidrs = xcalloc(r->client.n, sizeof *cr->cidrs);
            for (size_t j = 0; j < r->client.n; j++) {
                if (parse_cidr(r->client.items[j], &cr->cidrs[cr->n_cidrs]) < 0) {
                    *errmsg = xasprintf("%s: routes[%zu].match.client[%zu]: expected an address or CIDR, got \"%s\"",
                                        cfg->path, i, j, r->client.items[j]);
                    route_table_free(t);
                    return NULL;
                }
                cr->n_cidrs++;
            }
        }
        if (r->tables.n || r->schemas.n || r->statement.n || r->regex) t->needs_parse = 1;
        if (r->target == TARGET_PLUGIN && !r->has_match) {
            cr->claims_plugin_tables = 1;
            t->needs_parse = 1;
        }
    }
    return t;
}

void route_table_set_plugin_tables(RouteTable *t, RoutePluginTables fn, void *ctx)
{
    t->plugin_tables = fn;
    t->plugin_ctx = ctx;
}

void route_table_free(RouteTable *t)
{
    if (!t) return;
    for (size_t i = 0; i < t->n; i++) {
        if (t->routes[i].has_re) regfree(&t->routes[i].re);
        free(t->routes[i].cidrs);
    }
    free(t->routes);
    free(t);
}

int route_table_needs_parse(const RouteTable *t)
{
    return t->needs_parse;
}

const CfgRoute *route_table_route(const RouteTable *t, int index)
{
    return (index >= 0 && (size_t)index < t->n) ? t->routes[index].cfg : NULL;
}

uint64_t route_table_hits(const RouteTable *t, int index)
{
    return (index >= 0 && (size_t)index < t->n) ? t->routes[index].hits : 0;
}

static int in_list(const CfgStrList *l, const char *v)
{
    if (!v) return 0;
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->items[i], v)) return 1;
    return 0;
}

/* A table entry "name" matches that relation in any schema; "schema.name"
 * matches it qualified, or unqualified when schema is public (the default
 * search_path). */
static int table_entry_matches(const char *entry, const RouteRel *rel)
{
    const char *dot = strchr(entry, '.');
    if (!dot) return !strcasecmp(entry, rel->name);
    size_t sl = (size_t)(dot - entry);
    const char *schema = rel->schema ? rel->schema : "public";
    if (!strcmp(dot + 1, "*"))
        return strlen(schema) == sl && !strncasecmp(entry, schema, sl);
    return strlen(schema) == sl && !strncasecmp(entry, schema, sl) && !strcasecmp(dot + 1, rel->name);
}

static int route_claims_rel(const RouteTable *t, const CompiledRoute *cr, const RouteRel *rel)
{
    const CfgRoute *r = cr->cfg;
    if (cr->claims_plugin_tables)
        return t->plugin_tables && t->plugin_tables(t->plugin_ctx, r->target_name, rel->schema, rel->name);
    for (size_t i = 0; i < r->tables.n; i++)
        if (table_entry_matches(r->tables.items[i], rel)) return 1;
    for (size_t i = 0; i < r->schemas.n; i++)
        if (!strcasecmp(r->schemas.items[i], rel->schema ? rel->schema : "public")) return 1;
    return 0;
}

static int cidr_contains(const Cidr *c, const struct sockaddr *sa)
{
    const uint8_t *a;
    uint8_t mapped[16];
    if (sa->sa_family == AF_INET) {
        a = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
        if (c->family == AF_INET6) {
            /* IPv4 clients match IPv4-mapped IPv6 ranges too */
            memset(mapped, 0, 10);
            mapped[10] = mapped[11] = 0xff;
            memcpy(mapped + 12, a, 4);
            a = mapped;
        }
    } else if (sa->sa_family == AF_INET6) {
        a = (const uint8_t *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (c->family == AF_INET) {
            static const uint8_t prefix[12] = {0,0,0,0,0,0,0,0,0,0,0xff,0xff};
            if (memcmp(a, prefix, 12) != 0) return 0;
            a += 12;
        }
    } else {
        return 0;
    }
    int bits = c->bits;
    for (int i = 0; bits > 0; i++, bits -= 8) {
        uint8_t mask = bits >= 8 ? 0xff : (uint8_t)(0xff << (8 - bits));
        if ((a[i] & mask) != (c->addr[i] & mask)) return 0;
    }
    return 1;
}

static const char *target_text(const CfgRoute *r, char *buf, size_t n)
{
    static const char *kinds[] = { "upstream", "plugin", "local", "reject", "catalog" };
    if (r->target_name) snprintf(buf, n, "%s:%s", kinds[r->target], r->target_name);
    else snprintf(buf, n, "%s", kinds[r->target]);
    return buf;
}

static int same_target(const CfgRoute *a, const CfgRoute *b)
{
    if (a->target != b->target) return 0;
    if (!a->target_name || !b->target_name) return a->target_name == b->target_name;
    return !strcmp(a->target_name, b->target_name);
}

/* Does route r hold for this client and statement?  Explains a failure in why. */
static int route_holds(const RouteTable *t, const CompiledRoute *cr, const RouteClient *c,
                       const RouteStmt *st, Buf *why)
{
    const CfgRoute *r = cr->cfg;
#define FAIL(...) do { if (why) { buf_printf(why, "  %s: no, ", r->name); buf_printf(why, __VA_ARGS__); buf_append_str(why, "\n"); } return 0; } while (0)
    if (r->user.n && !in_list(&r->user, c->user)) FAIL("user \"%s\" is not listed", c->user ? c->user : "");
    if (r->database.n && !in_list(&r->database, c->database))
        FAIL("database \"%s\" is not listed", c->database ? c->database : "");
    if (r->application_name.n && !in_list(&r->application_name, c->application_name))
        FAIL("application_name \"%s\" is not listed", c->application_name ? c->application_name : "");
    if (r->listen.n && !in_list(&r->listen, c->listen)) FAIL("listener %s is not listed", c->listen ? c->listen : "?");
    if (cr->n_cidrs) {
        int ok = 0;
        for (size_t i = 0; c->addr && i < cr->n_cidrs && !ok; i++) ok = cidr_contains(&cr->cidrs[i], c->addr);
        if (!ok) FAIL("client address is outside match.client");
    }
    if (r->statement.n) {
        if (!st) FAIL("statement kind unknown (not parsed)");
        if (!in_list(&r->statement, route_kind_name(st->kind)))
            FAIL("statement kind %s is not listed", route_kind_name(st->kind));
    }
    if (r->tables.n || r->schemas.n || cr->claims_plugin_tables) {
        if (!st) FAIL("statement tables unknown (not parsed)");
        int any = 0;
        for (size_t i = 0; i < st->n_rels && !any; i++) any = route_claims_rel(t, cr, &st->rels[i]);
        if (!any && cr->claims_plugin_tables)
            FAIL("no table of plugin \"%s\" in the statement", r->target_name);
        if (!any) FAIL("no listed table or schema in the statement");
    }
    if (cr->has_re) {
        if (!st) FAIL("statement text unknown");
        if (regexec(&cr->re, st->text, 0, NULL, 0) != 0) FAIL("regex does not match");
    }
#undef FAIL
    return 1;
}

int route_table_match(RouteTable *t, const RouteClient *c, const RouteStmt *st,
                      RqError *err, Buf *why)
{
    for (size_t i = 0; i < t->n; i++) {
        CompiledRoute *cr = &t->routes[i];
        if (!route_holds(t, cr, c, st, why)) continue;
        /* the winner must not be joined with tables another route claims
         * for a different target (a reject sends nothing anywhere) */
        for (size_t k = 0; st && cr->cfg->target != TARGET_REJECT && k < st->n_rels; k++) {
            for (size_t j = 0; j < t->n; j++) {
                const CfgRoute *o = t->routes[j].cfg;
                if (j == i || same_target(o, cr->cfg) || !route_claims_rel(t, &t->routes[j], &st->rels[k]))
                    continue;
                if (route_claims_rel(t, cr, &st->rels[k])) continue;
                char ta[160], tb[160];
                rq_error_set(err, "0A000",
                             "statement mixes tables of route \"%s\" (%s) and route \"%s\" (%s)",
                             cr->cfg->name, target_text(cr->cfg, ta, sizeof ta),
                             o->name, target_text(o, tb, sizeof tb));
                rq_error_detail(err, "Relation \"%s%s%s\" belongs to route \"%s\".",
                                st->rels[k].schema ? st->rels[k].schema : "",
                                st->rels[k].schema ? "." : "", st->rels[k].name, o->name);
                rq_error_hint(err, "Query each source separately, or join them in a plugin.");
                if (why) buf_printf(why, "  %s: matches, but the statement also uses route %s's tables\n",
                                    cr->cfg->name, o->name);
                return -2;
            }
        }
        cr->hits++;
        if (why) {
            char tt[160];
            buf_printf(why, "  %s: yes -> %s\n", cr->cfg->name, target_text(cr->cfg, tt, sizeof tt));
        }
        return (int)i;
    }
    return -1;
}
