/*
 * Active health checks of upstream hosts, and what health means for reads.
 *
 * Every host of a pool with health_interval_ms > 0 has a repeating
 * (unref'd) timer; each tick opens one probe: a connection made with the
 * host's own conninfo through the same nonblocking libpq connect as pool
 * connections (conn.c: PQconnectStartParams/PQconnectPoll on uv_poll,
 * bounded by a uv timer), so a probe never blocks the loop.  A tick that
 * finds the previous probe still running does nothing: the probe's timeout
 * ends it.
 *
 * Why a connection and no query: PQconnectPoll reports OK only after the
 * server sent ReadyForQuery, i.e. after a backend was forked, the client
 * authenticated, the database was opened and its catalog read.  That is the
 * work a trivial query would exercise again, one round trip later; what a
 * pool needs to know is whether it can get connections, which is exactly
 * what was just tested.  The probe then closes at once.
 *
 * The verdict follows libpq's PQping: a server that answered at all is up,
 * even when it refused our user or database (the same refusal would hit
 * every host alike, so it says nothing about this one).  Down is: no answer
 * (refused, unreachable, timed out: 08006 from conn.c), 57P03 (starting up,
 * shutting down, or a standby not accepting connections yet), and 53300 (no
 * connection slots left: such a replica cannot serve reads either).
 *
 * Health only steers reads: a replica that is down is skipped by
 * up_pool_acquire_read and has its idle connections closed and its waiters
 * moved (upool_host_down); it comes back when a probe succeeds.  The
 * primary is probed too, for SHOW riffq.pools, but its statements have
 * nowhere else to go.  Pool connections that fail for lack of an answer
 * mark a replica down at once rather than at the next tick (only when
 * checks run, since only a probe can bring it back).
 *
 * Each change is logged once, and so is the moment no replica is left
 * (reads fall back to the primary) and the moment one is back.
 */
#include <stdlib.h>
#include <string.h>
#include "riffq/log.h"
#include "upstream/up_int.h"

static void free_handle(uv_handle_t *h)
{
    free(h);
}

static const char *role_name(const UpHost *h)
{
    return h->role == UP_REPLICA ? "replica" : "primary";
}

static int says_down(const RqError *err)
{
    return !strcmp(err->sqlstate, "08006") || !strcmp(err->sqlstate, "08001") ||
           !strcmp(err->sqlstate, "57P03") || !strcmp(err->sqlstate, "53300");
}

static void set_healthy(UpHost *h, int ok, const RqError *why)
{
    if (h->healthy == ok) return;
    UpPool *p = h->pool;
    h->healthy = ok;
    if (ok) {
        log_info("upstream \"%s\": %s %s is healthy again", p->name, role_name(h), h->label);
    } else {
        log_warn("upstream \"%s\": %s %s is unhealthy (%s)%s", p->name, role_name(h), h->label,
                 why && why->message ? why->message : "health check failed",
                 h->role == UP_REPLICA ? "; reads skip it until a health check succeeds" : "");
    }
    if (h->role != UP_REPLICA) return;
    int before = p->healthy_replicas;
    p->healthy_replicas += ok ? 1 : -1;
    if (before > 0 && p->healthy_replicas == 0)
        log_warn("upstream \"%s\": no healthy replica left, reads go to the primary", p->name);
    else if (before == 0 && p->healthy_replicas > 0)
        log_info("upstream \"%s\": a replica is healthy again, reads go to replicas", p->name);
    if (!ok) upool_host_down(h);
}

static void on_check(uv_timer_t *t)
{
    UpHost *h = t->data;
    if (!h || h->probe) return;
    UpPool *p = h->pool;
    if (p->freeing) return;
    const char *kw[] = { "dbname", "fallback_application_name", NULL };
    const char *vals[] = { h->conninfo, "riffq health check", NULL };
    int timeout = p->opts.health_timeout_ms > 0 ? p->opts.health_timeout_ms : h->connect_timeout_ms;
    UpConn *c = upc_open(p, NULL, p->loop, kw, vals, timeout);
    c->host = h;
    p->n_conns++;
    h->probe = c;
}

void uph_start(UpHost *h)
{
    UpPool *p = h->pool;
    h->check_timer = xmalloc(sizeof *h->check_timer);
    uv_timer_init(p->loop, h->check_timer);
    h->check_timer->data = h;
    /* the first check right away: a replica that is down at start should
     * cost no reader a failed connect */
    uv_timer_start(h->check_timer, on_check, 0, (uint64_t)p->opts.health_interval_ms);
    uv_unref((uv_handle_t *)h->check_timer);
}

static void end_probe(UpConn *c)
{
    c->host->probe = NULL;
    c->state = UPC_CLOSED;
    upc_destroy(c);
}

void uph_stop(UpHost *h)
{
    if (h->check_timer) {
        h->check_timer->data = NULL;
        uv_close((uv_handle_t *)h->check_timer, free_handle);
        h->check_timer = NULL;
    }
    if (h->probe) end_probe(h->probe);
}

void uph_probe_done(UpConn *c, const RqError *err)
{
    UpHost *h = c->host;
    UpPool *p = h->pool;
    upool_enter(p);
    end_probe(c);
    if (!p->freeing) {
        if (err && says_down(err)) {
            set_healthy(h, 0, err);
        } else {
            if (err) log_debug("upstream \"%s\": health check of %s: server answered: %s",
                               p->name, h->label, err->message);
            set_healthy(h, 1, NULL);
        }
    }
    upool_leave(p);
}

int uph_connect_failed(UpHost *h, const RqError *err)
{
    if (h->role != UP_REPLICA || !h->check_timer || !says_down(err)) return 0;
    if (h->healthy) set_healthy(h, 0, err);
    else upool_host_down(h);    /* waiters that queued before it went down */
    return 1;
}
