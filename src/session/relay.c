/*
 * Statements relayed to an upstream Postgres (see session_int.h).
 *
 * Client messages go to the server as they arrive, so pipelining clients
 * keep their pipeline; for each one the relay queues the answer it expects
 * (RelayAct) and walks the server's messages against that queue.  The
 * queue is what lets the gateway
 *   - inject messages of its own (a Parse a pooled server has not seen, a
 *     BEGIN for a transaction that started locally) and drop their answers,
 *   - answer some messages itself in the right position (ParseComplete for
 *     a statement the server already has, CloseComplete for a client Close
 *     of a statement the server keeps cached),
 *   - know when the server is idle, so transaction pooling can hand the
 *     connection to another client exactly at a transaction boundary.
 *
 * Named prepared statements are renamed on the server to a hash of their
 * text and parameter types ("rq" + 16 hex digits), and every server
 * connection remembers which of those it holds (in its UpConn slot).  A
 * client's statement therefore works on whichever pooled connection its
 * next transaction lands on: if that server lacks it, a Parse is injected
 * before the Bind.  Different clients preparing the same text share one
 * server-side statement.
 *
 * Server messages are relayed byte for byte; only headers are read, plus
 * the status byte of ReadyForQuery.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <string.h>
#include "riffq/hash.h"
#include "riffq/log.h"
#include "riffq/wire.h"
#include "session_int.h"

#define RELAY_PAUSE_BYTES (1024 * 1024)
#define SERVER_MAX_MESSAGE (1024u * 1024 * 1024)

/* ---- the set of statements a server connection holds ---- */

typedef struct SrvStmts {
    char (*names)[24];
    size_t n, cap;
    uint64_t state_hash;    /* session settings applied on this server, 0 = none */
} SrvStmts;

static void srv_stmts_free(void *p)
{
    SrvStmts *ss = p;
    free(ss->names);
    free(ss);
}

static SrvStmts *srv_stmts(UpConn *c)
{
    SrvStmts *ss = up_conn_slot(c);
    if (!ss) {
        ss = xcalloc(1, sizeof *ss);
        up_conn_set_slot(c, ss, srv_stmts_free);
    }
    return ss;
}

static int srv_has(UpConn *c, const char *name)
{
    SrvStmts *ss = srv_stmts(c);
    for (size_t i = 0; i < ss->n; i++)
        if (!strcmp(ss->names[i], name)) return 1;
    return 0;
}

static void srv_add(UpConn *c, const char *name)
{
    SrvStmts *ss = srv_stmts(c);
    if (ss->n == ss->cap) {
        ss->cap = ss->cap ? ss->cap * 2 : 8;
        ss->names = xrealloc(ss->names, ss->cap * sizeof *ss->names);
    }
    snprintf(ss->names[ss->n++], sizeof ss->names[0], "%s", name);
}

static void srv_remove(UpConn *c, const char *name)
{
    SrvStmts *ss = srv_stmts(c);
    for (size_t i = 0; i < ss->n; i++) {
        if (!strcmp(ss->names[i], name)) {
            memmove(ss->names[i], ss->names[ss->n - 1], sizeof ss->names[0]);
            ss->n--;
            return;
        }
    }
}

/* ---- the answer queue ---- */

void relay_init(Relay *r)
{
    memset(r, 0, sizeof *r);
    r->upstream = -1;
}

static size_t acts_len(const Relay *r)
{
    return r->tail - r->head;
}

static void act_push(Relay *r, uint8_t kind, uint8_t msg, uint8_t sub, uint8_t synth, const char *srv_name)
{
    if (r->head > 0 && r->head == r->tail) r->head = r->tail = 0;
    if (r->tail == r->cap) {
        if (r->head > 0) {
            memmove(r->acts, r->acts + r->head, acts_len(r) * sizeof *r->acts);
            r->tail -= r->head;
            r->head = 0;
        } else {
            r->cap = r->cap ? r->cap * 2 : 16;
            r->acts = xrealloc(r->acts, r->cap * sizeof *r->acts);
        }
    }
    RelayAct *a = &r->acts[r->tail++];
    memset(a, 0, sizeof *a);
    a->kind = kind;
    a->msg = msg;
    a->sub = sub;
    a->synth = synth;
    a->srv_name = srv_name ? xstrdup(srv_name) : NULL;
}

static void act_pop(Relay *r)
{
    free(r->acts[r->head].srv_name);
    r->head++;
}

static void acts_clear(Relay *r)
{
    while (acts_len(r)) act_pop(r);
}

int relay_busy(const Session *s)
{
    return acts_len(&s->relay) > 0;
}

/* Answers the gateway gives itself once they reach the head of the queue. */
static void emit_synth(Session *s)
{
    Relay *r = &s->relay;
    while (acts_len(r) && r->acts[r->head].kind == ACT_SYNTH) {
        wire_simple(s->out, r->acts[r->head].synth);
        act_pop(r);
    }
}

/* ---- server connection lifetime ---- */

static CfgPoolMode pool_mode(const Session *s, int up)
{
    return s->cfg->upstreams[up].pool_mode;
}

void relay_detach(Session *s, int reusable)
{
    Relay *r = &s->relay;
    if (r->wait) {
        up_wait_cancel(r->wait);
        r->wait = NULL;
    }
    if (r->conn) {
        if (r->corked) up_conn_cork(r->conn, 0);
        r->corked = 0;
        up_conn_detach(r->conn);
        if (r->paused) up_conn_resume(r->conn);
        /* a server in the middle of an extended-protocol batch (no Sync
         * yet) still holds its unnamed statement and implicit transaction */
        int idle = reusable && !r->broken && acts_len(r) == 0 && !r->copy_in && !s->batch_upstream;
        up_pool_release(s->env->pools[r->upstream], r->conn, idle);
        r->conn = NULL;
    }
    acts_clear(r);
    buf_free(&r->in);
    r->upstream = -1;
    r->paused = 0;
    r->copy_in = 0;
    r->skipping = 0;
    r->broken = 0;
    r->pinned = 0;
}

static void maybe_release(Session *s)
{
    Relay *r = &s->relay;
    if (!r->conn || acts_len(r) || r->copy_in || r->pinned || s->batch_upstream) return;
    if (s->xact == 'I' && pool_mode(s, r->upstream) == POOL_TRANSACTION)
        relay_detach(s, 1);
}

static void after_drain(Session *s)
{
    Relay *r = &s->relay;
    if (acts_len(r) == 0 && r->want_resume) {
        r->want_resume = 0;
        sess_done_waiting(s);
    }
}

/* ---- server -> client ---- */

static void handle_server_msg(Session *s, uint8_t type, const uint8_t *msg, size_t total)
{
    Relay *r = &s->relay;
    /* messages the server may send at any time */
    if (type == 'N' || type == 'A' || type == 'S') {
        buf_append(s->out, msg, total);
        return;
    }
    if (!acts_len(r)) {
        /* nothing expected: relay it so the client sees what happened */
        log_warn("session %d: unexpected message '%c' from upstream", s->pid, type);
        buf_append(s->out, msg, total);
        return;
    }
    RelayAct *a = &r->acts[r->head];
    /* an error always reaches the client, even for an injected message:
     * the client's own statement depended on it */
    if (a->kind == ACT_PASS || type == 'E') buf_append(s->out, msg, total);

    int done = 0;
    switch (type) {
    case 'E':
        if (a->msg == 'Q') break;   /* ReadyForQuery still ends it */
        if (a->msg == 'P' && a->srv_name && r->conn) srv_remove(r->conn, a->srv_name);
        act_pop(r);
        /* the server now ignores everything up to Sync */
        while (acts_len(r) && r->acts[r->head].msg != 'S') act_pop(r);
        if (acts_len(r) == 0) s->skip_to_sync = 1;
        emit_synth(s);
        return;
    case 'Z':
        r->copy_in = 0;     /* whatever COPY ran is over, failed or not */
        if (total >= 6) s->xact = (char)msg[5];
        if (s->xact != 'I') {
            s->xact_target.kind = TARGET_UPSTREAM;
            s->xact_target.index = r->upstream;
        }
        done = 1;
        break;
    case '1': case '2': case '3': case 'n':
        done = 1;
        break;
    case 'T':
        done = a->msg == 'D';
        break;
    case 'C': case 'I': case 's':
        done = a->msg == 'E';
        break;
    case 'G':
        /* COPY FROM STDIN: the client's CopyData must flow now */
        r->copy_in = 1;
        if (s->waiting && !s->in_handle) sess_done_waiting(s);
        break;
    default:
        break;
    }
    if (done) {
        act_pop(r);
        emit_synth(s);
    }
}

static void on_server_data(void *ud, const uint8_t *data, size_t len)
{
    Session *s = ud;
    Relay *r = &s->relay;
    const uint8_t *p = data;
    size_t n = len;
    if (r->in.len) {
        buf_append(&r->in, data, len);
        p = (const uint8_t *)r->in.data;
        n = r->in.len;
    }
    size_t off = 0;
    RqError err = {0};
    while (off < n) {
        uint8_t type;
        const uint8_t *body;
        size_t blen, total;
        int rc = wire_frame(p + off, n - off, SERVER_MAX_MESSAGE, &type, &body, &blen, &total, &err);
        if (rc == 0) break;
        if (rc < 0) {
            rq_error_free(&err);
            log_error("session %d: invalid message from upstream", s->pid);
            r->broken = 1;
            break;
        }
        handle_server_msg(s, type, p + off, total);
        off += total;
        if (!r->conn) break;
    }
    if (r->in.len) {
        buf_consume(&r->in, off);
    } else if (off < n) {
        buf_append(&r->in, p + off, n - off);
    }
    if (r->in.len == 0 && r->in.cap > 65536) buf_free(&r->in);
    s->io.flush(s->io.ctx);
    if (r->conn && !r->paused && s->io.queued(s->io.ctx) > RELAY_PAUSE_BYTES) {
        /* slow client: stop reading the server so nothing piles up here */
        r->paused = 1;
        up_conn_pause(r->conn);
    }
    if (r->broken) {
        relay_detach(s, 0);
        return;
    }
    maybe_release(s);
    after_drain(s);
}

static void on_server_error(void *ud, RqError *err)
{
    Session *s = ud;
    Relay *r = &s->relay;
    int expecting_ready = 0;
    for (size_t i = r->head; i < r->tail; i++)
        if (r->acts[i].msg == 'Q' || r->acts[i].msg == 'S') expecting_ready = 1;
    if (acts_len(r)) {
        wire_error(s->out, err);
        if (expecting_ready) {
            s->xact = 'I';
            wire_ready(s->out, 'I');
        } else {
            s->skip_to_sync = 1;
        }
    }
    log_warn("session %d: upstream \"%s\" failed: %s", s->pid,
             s->cfg->upstreams[r->upstream].name, err->message ? err->message : "?");
    r->broken = 1;
    if (s->xact_target.kind == TARGET_UPSTREAM) s->xact = 'I';
    relay_detach(s, 0);
    s->io.flush(s->io.ctx);
    if (s->waiting && !s->in_handle) sess_done_waiting(s);
}

/* ---- client -> server ---- */

static void send_parse(Session *s, const Prepared *ps)
{
    Buf m;
    buf_init(&m);
    size_t off = wire_begin(&m, 'P');
    buf_append_cstr(&m, ps->srv_name);
    buf_append_cstr(&m, ps->sql);
    buf_append_u16(&m, ps->n_decl);
    for (uint16_t i = 0; i < ps->n_decl; i++) buf_append_u32(&m, ps->decl_types[i]);
    wire_end(&m, off);
    up_conn_send(s->relay.conn, m.data, m.len);
    buf_free(&m);
}

/* Make sure the server holds ps, injecting a Parse whose answer is dropped. */
static void ensure_prepared(Session *s, const Prepared *ps)
{
    Relay *r = &s->relay;
    if (srv_has(r->conn, ps->srv_name)) return;
    send_parse(s, ps);
    srv_add(r->conn, ps->srv_name);
    act_push(r, ACT_SWALLOW, 'P', 0, 0, ps->srv_name);
}

/* Re-send a message with the statement name field replaced. */
static void send_renamed(Session *s, uint8_t type, const uint8_t *prefix, size_t prefix_len,
                         const char *name, const uint8_t *rest, size_t rest_len)
{
    Buf m;
    buf_init(&m);
    size_t off = wire_begin(&m, type);
    buf_append(&m, prefix, prefix_len);
    buf_append_cstr(&m, name);
    buf_append(&m, rest, rest_len);
    wire_end(&m, off);
    up_conn_send(s->relay.conn, m.data, m.len);
    buf_free(&m);
}

static void send_raw(Session *s, uint8_t type, const uint8_t *body, size_t len)
{
    uint8_t hdr[5] = { type, (uint8_t)((len + 4) >> 24), (uint8_t)((len + 4) >> 16),
                       (uint8_t)((len + 4) >> 8), (uint8_t)(len + 4) };
    /* corked: both pieces leave in the same write */
    up_conn_send(s->relay.conn, hdr, 5);
    if (len) up_conn_send(s->relay.conn, body, len);
}

static void forward(Session *s, uint8_t type, const uint8_t *body, size_t len, Prepared *ps)
{
    Relay *r = &s->relay;
    if (!r->corked) {
        up_conn_cork(r->conn, 1);
        r->corked = 1;
    }
    if (!r->state_checked) {
        /* this server may carry another client's settings, or none of ours */
        r->state_checked = 1;
        SrvStmts *ss = srv_stmts(r->conn);
        if (ss->state_hash != s->up_hash) {
            Buf q;
            buf_init(&q);
            buf_append_str(&q, "RESET ALL");
            for (size_t i = 0; i < s->n_up; i++) {
                buf_append_str(&q, "; ");
                buf_append_str(&q, s->up_sets[i]);
            }
            buf_append_byte(&q, 0);
            act_push(r, ACT_SWALLOW, 'Q', 0, 0, NULL);
            send_raw(s, 'Q', (const uint8_t *)q.data, q.len);
            buf_free(&q);
            ss->state_hash = s->up_hash;
        }
    }
    if (r->need_begin) {
        /* the client said BEGIN before anything reached this upstream */
        static const char begin[] = "BEGIN";
        r->need_begin = 0;
        act_push(r, ACT_SWALLOW, 'Q', 0, 0, NULL);
        send_raw(s, 'Q', (const uint8_t *)begin, sizeof begin);
    }
    switch (type) {
    case 'Q':
        act_push(r, ACT_PASS, 'Q', 0, 0, NULL);
        send_raw(s, type, body, len);
        break;
    case 'P': {
        const char *name = (const char *)body;
        if (!name[0] || !ps) {
            act_push(r, ACT_PASS, 'P', 0, 0, NULL);
            send_raw(s, type, body, len);
        } else if (srv_has(r->conn, ps->srv_name)) {
            act_push(r, ACT_SYNTH, 'P', 0, '1', NULL);
        } else {
            send_parse(s, ps);
            srv_add(r->conn, ps->srv_name);
            act_push(r, ACT_PASS, 'P', 0, 0, ps->srv_name);
        }
        break;
    }
    case 'B': {
        size_t plen = strnlen((const char *)body, len) + 1;
        const char *stmt = (const char *)body + plen;
        size_t slen = plen < len ? strnlen(stmt, len - plen) + 1 : 0;
        if (ps && ps->name[0] && plen + slen <= len) {
            ensure_prepared(s, ps);
            send_renamed(s, 'B', body, plen, ps->srv_name, body + plen + slen, len - plen - slen);
        } else {
            send_raw(s, type, body, len);
        }
        act_push(r, ACT_PASS, 'B', 0, 0, NULL);
        break;
    }
    case 'D': case 'C': {
        uint8_t sub = len ? body[0] : 'P';
        if (sub == 'S' && ps && ps->name[0]) {
            if (type == 'C') {
                /* the server keeps the statement for whoever prepares the
                 * same text next; the client only sees it closed */
                act_push(r, ACT_SYNTH, 'C', 'S', '3', NULL);
                break;
            }
            ensure_prepared(s, ps);
            send_renamed(s, 'D', body, 1, ps->srv_name, NULL, 0);
        } else {
            send_raw(s, type, body, len);
        }
        act_push(r, ACT_PASS, type, sub, 0, NULL);
        break;
    }
    case 'E':
        act_push(r, ACT_PASS, 'E', 0, 0, NULL);
        send_raw(s, type, body, len);
        break;
    case 'S':
        act_push(r, ACT_PASS, 'S', 0, 0, NULL);
        send_raw(s, type, body, len);
        break;
    case 'c': case 'f':
        r->copy_in = 0;
        send_raw(s, type, body, len);
        break;
    default:    /* 'H' Flush, 'd' CopyData */
        send_raw(s, type, body, len);
        break;
    }
    emit_synth(s);
}

static void on_acquired(void *ud, UpConn *conn, RqError *err)
{
    Session *s = ud;
    Relay *r = &s->relay;
    r->wait = NULL;
    if (!conn) {
        /* the client's message was not consumed: it comes back on resume
         * and is answered with this error then, in its place */
        rq_error_move(&r->acquire_err, err);
        r->upstream = -1;
        r->acquire_failed = 1;
        if (!s->in_handle) sess_done_waiting(s);
        return;
    }
    r->conn = conn;
    r->state_checked = 0;
    UpConnCb cb = { .ud = s, .on_data = on_server_data, .on_error = on_server_error };
    up_conn_attach(conn, &cb);
    if (!s->in_handle) sess_done_waiting(s);
}

/* ---- read replicas ---- */

/* Functions that write, take locks, touch session or transaction state
 * that must stay on one server, or fail during recovery.  A statement
 * calling one is not a plain read.  User functions cannot be told apart
 * without the catalog; one that writes fails on a replica with 25006
 * rather than writing anywhere. */
static const char *const unsafe_funcs[] = {
    "nextval", "setval", "currval", "lastval", "pg_notify", "set_config", "txid_current",
    "txid_current_if_assigned", "pg_current_xact_id", "pg_current_xact_id_if_assigned",
    "pg_current_wal_lsn", "pg_current_wal_insert_lsn", "pg_current_wal_flush_lsn",
    "pg_switch_wal", "pg_create_restore_point", "pg_terminate_backend", "pg_cancel_backend",
    "pg_reload_conf", "pg_rotate_logfile", "pg_promote", "pg_export_snapshot",
    "pg_import_snapshot", "pg_logical_emit_message", "loread", "lowrite", NULL
};
static const char *const unsafe_prefixes[] = {
    "lo_", "pg_advisory_", "pg_try_advisory_", "pg_create_", "pg_drop_", "pg_replication_",
    "pg_logical_slot_", "pg_stat_reset", "pg_backup_", "pg_start_backup", "pg_stop_backup",
    "dblink", NULL
};

static int unsafe_func(const char *name)
{
    for (size_t i = 0; unsafe_funcs[i]; i++)
        if (!strcasecmp(name, unsafe_funcs[i])) return 1;
    for (size_t i = 0; unsafe_prefixes[i]; i++)
        if (!strncasecmp(name, unsafe_prefixes[i], strlen(unsafe_prefixes[i]))) return 1;
    return 0;
}

static void visit_read(const char *key, json_t *v, void *ctx)
{
    int *ok = ctx;
    if (!strcmp(key, "lockingClause") || !strcmp(key, "intoClause") ||
        !strcmp(key, "InsertStmt") || !strcmp(key, "UpdateStmt") ||
        !strcmp(key, "DeleteStmt") || !strcmp(key, "MergeStmt")) {
        *ok = 0;    /* FOR UPDATE/SHARE, SELECT INTO, a writable CTE */
    } else if (!strcmp(key, "FuncCall")) {
        json_t *parts = json_object_get(v, "funcname");
        json_t *last = json_array_get(parts, json_array_size(parts) - 1);
        const char *name = json_string_value(json_object_get(json_object_get(last, "String"), "sval"));
        if (!name || unsafe_func(name)) *ok = 0;
    }
}

/* A SELECT that only reads, as far as the parse tree tells. */
static int plain_read(const RouteStmt *st)
{
    if (strcmp(st->node_type, "SelectStmt") != 0) return 0;
    int ok = 1;
    route_json_walk(st->node, visit_read, &ok);
    return ok;
}

/* Every statement of sql is a plain read.  Routes that do not look inside
 * statements leave them unparsed; the parse is cached by text, so asking
 * again for a repeated statement costs a lookup. */
static int sql_reads_only(const char *sql)
{
    RouteParse p;
    RqError err = {0};
    if (route_parse(sql, &p, &err) < 0) {
        rq_error_free(&err);
        return 0;       /* the primary reports the syntax error */
    }
    int ok = p.n > 0;
    for (size_t i = 0; ok && i < p.n; i++) ok = plain_read(&p.stmts[i]);
    route_parse_free(&p);
    return ok;
}

typedef enum { WANT_ANY = 0, WANT_PRIMARY, WANT_REPLICA } Want;

/* Where a message should run: plain reads of a "read_from": "replica"
 * route outside a transaction block on a replica, other statements on the
 * primary; messages that carry no statement (Sync, Flush, COPY data,
 * Close) wherever the session's server already is. */
static Want want_for(Session *s, int upstream, int route, uint8_t type, const uint8_t *body,
                     size_t len, const Prepared *ps)
{
    if (type != 'Q' && type != 'P' && type != 'B' && type != 'D' && type != 'E') return WANT_ANY;
    if (route < 0 || (size_t)route >= s->cfg->n_routes ||
        s->cfg->routes[route].read_from != READ_FROM_REPLICA ||
        s->xact != 'I' || s->relay.need_begin || s->relay.pinned ||
        !up_pool_has_replicas(s->env->pools[upstream]))
        return WANT_PRIMARY;
    if (type != 'Q') {
        if (!ps) return WANT_PRIMARY;
        if (ps->parsed) return ps->parse.n == 1 && plain_read(&ps->parse.stmts[0])
                               ? WANT_REPLICA : WANT_PRIMARY;
        return sql_reads_only(ps->sql) ? WANT_REPLICA : WANT_PRIMARY;
    }
    if (len == 0 || body[len - 1] != 0) return WANT_PRIMARY;
    return sql_reads_only((const char *)body) ? WANT_REPLICA : WANT_PRIMARY;
}

/* Whether the held server connection must, or may, give way to another
 * one for this message: 1 to let it go now, 0 to keep using it, -1 when it
 * must go but still owes answers (the caller waits for them first). */
static int must_switch(Session *s, int upstream, Want want)
{
    Relay *r = &s->relay;
    if (r->pinned) return 0;
    int owes = relay_busy(s) || r->copy_in;
    int on_replica = up_conn_role(r->conn) == UP_REPLICA;
    /* required: another upstream (session pooling keeps a server across
     * statements), or a statement a replica must not run */
    if (r->upstream != upstream || (on_replica && want == WANT_PRIMARY)) return owes ? -1 : 1;
    /* optional moves only between batches, where the server holds nothing
     * of an unfinished exchange; a read on the primary is never wrong */
    if (want != WANT_REPLICA || owes || s->batch_upstream || s->xact != 'I') return 0;
    return on_replica ? !up_conn_host_healthy(r->conn) : 1;
}

/* relay_message with the route that chose the statement (-1: none known),
 * which says whether its reads may go to a replica. */
SessStatus relay_message_routed(Session *s, int upstream, int route, uint8_t type,
                                const uint8_t *body, size_t len, Prepared *ps)
{
    Relay *r = &s->relay;
    if (r->acquire_failed) {
        r->acquire_failed = 0;
        wire_error(s->out, &r->acquire_err);
        rq_error_free(&r->acquire_err);
        if (s->xact == 'T') s->xact = 'E';
        if (type == 'Q' || type == 'S') wire_ready(s->out, s->xact);
        else s->skip_to_sync = 1;
        return SESS_OK;
    }
    Want want = r->conn || !r->wait ? want_for(s, upstream, route, type, body, len, ps) : WANT_ANY;
    if (r->conn) {
        int sw = must_switch(s, upstream, want);
        if (sw < 0) {
            relay_flush_server(s);      /* resumes us once the answers are in */
            return SESS_RETRY;
        }
        /* relay_detach closes a server left in the middle of a batch */
        if (sw > 0) relay_detach(s, up_conn_host_healthy(r->conn));
    }
    if (!r->conn) {
        if (!r->wait) {
            UpPool *pool = s->env->pools[upstream];
            r->upstream = upstream;
            r->wait = want == WANT_REPLICA
                ? up_pool_acquire_read(pool, s->user, s->database, on_acquired, s)
                : up_pool_acquire(pool, s->user, s->database, on_acquired, s);
        }
        if (!r->conn) return r->acquire_failed
                             ? relay_message_routed(s, upstream, route, type, body, len, ps)
                             : SESS_RETRY;
    }
    forward(s, type, body, len, ps);
    return SESS_OK;
}

SessStatus relay_message(Session *s, int upstream, uint8_t type, const uint8_t *body, size_t len,
                         Prepared *ps)
{
    return relay_message_routed(s, upstream, ps ? ps->target.route : -1, type, body, len, ps);
}

void relay_batch_end(Session *s)
{
    Relay *r = &s->relay;
    if (r->corked && r->conn) up_conn_cork(r->conn, 0);
    r->corked = 0;
}

void relay_cancel(Session *s)
{
    if (s->relay.conn && relay_busy(s)) up_conn_cancel(s->relay.conn);
}

void relay_output_drained(Session *s)
{
    Relay *r = &s->relay;
    if (r->paused && r->conn) {
        r->paused = 0;
        up_conn_resume(r->conn);
    }
}

/* Wait for the server to answer everything relayed so far: asks it to
 * flush what it holds for us (the answers to Parse/Bind/Execute stay in the
 * server's buffer until Sync or Flush). */
void relay_flush_server(Session *s)
{
    if (s->relay.conn && relay_busy(s)) send_raw(s, 'H', NULL, 0);
    s->relay.want_resume = 1;
    relay_batch_end(s);
}

/* ---- session state for pooled servers ---- */

static uint64_t settings_hash(const Session *s)
{
    if (s->n_up == 0) return 0;
    uint64_t h = RQ_HASH_INIT;
    for (size_t i = 0; i < s->n_up; i++) {
        h = rq_hash_str(h, s->up_sets[i], NULL);
        h = rq_hash_bytes(h, ";", 1);
    }
    return h ? h : 1;
}

static void forget_setting(Session *s, const char *name)
{
    for (size_t i = 0; i < s->n_up; i++) {
        if (!strcasecmp(s->up_names[i], name)) {
            free(s->up_names[i]);
            free(s->up_sets[i]);
            memmove(s->up_names + i, s->up_names + i + 1, (s->n_up - i - 1) * sizeof *s->up_names);
            memmove(s->up_sets + i, s->up_sets + i + 1, (s->n_up - i - 1) * sizeof *s->up_sets);
            s->n_up--;
            return;
        }
    }
}

static void remember_setting(Session *s, const char *name, char *set_sql)
{
    forget_setting(s, name);
    s->up_names = xrealloc(s->up_names, (s->n_up + 1) * sizeof *s->up_names);
    s->up_sets = xrealloc(s->up_sets, (s->n_up + 1) * sizeof *s->up_sets);
    s->up_names[s->n_up] = xstrdup(name);
    s->up_sets[s->n_up] = set_sql;
    s->n_up++;
}

static int plain_name(const char *n)
{
    if (!*n || !(isalpha((unsigned char)*n) || *n == '_')) return 0;
    for (; *n; n++)
        if (!isalnum((unsigned char)*n) && *n != '_' && *n != '.') return 0;
    return 1;
}

void relay_startup_settings(Session *s, const char *const *keys, const char *const *vals, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!plain_name(keys[i])) continue;
        /* set_config reads the value as the startup packet would: a list
         * setting such as search_path stays a list */
        Buf b;
        buf_init(&b);
        buf_printf(&b, "SELECT pg_catalog.set_config('%s', '", keys[i]);
        for (const char *v = vals[i]; *v; v++) {
            if (*v == '\'') buf_append_byte(&b, '\'');
            buf_append_byte(&b, (uint8_t)*v);
        }
        buf_append_str(&b, "', false)");
        buf_append_byte(&b, 0);
        remember_setting(s, keys[i], xstrdup(b.data));
        buf_free(&b);
    }
    s->up_hash = settings_hash(s);
}

void relay_free_settings(Session *s)
{
    for (size_t i = 0; i < s->n_up; i++) {
        free(s->up_names[i]);
        free(s->up_sets[i]);
    }
    free(s->up_names);
    free(s->up_sets);
    s->up_names = s->up_sets = NULL;
    s->n_up = 0;
}

/* First keyword of a statement, skipping blanks and comments. */
static size_t first_word(const char *sql, char *out, size_t cap)
{
    const char *p = sql;
    for (;;) {
        while (isspace((unsigned char)*p)) p++;
        if (p[0] == '-' && p[1] == '-') {
            while (*p && *p != '\n') p++;
        } else if (p[0] == '/' && p[1] == '*') {
            const char *e = strstr(p + 2, "*/");
            p = e ? e + 2 : p + strlen(p);
        } else {
            break;
        }
    }
    size_t n = 0;
    while (isalpha((unsigned char)p[n]) && n + 1 < cap) {
        out[n] = (char)tolower((unsigned char)p[n]);
        n++;
    }
    out[n] = 0;
    return n;
}

static void note_stmt(Session *s, const RouteStmt *st)
{
    Relay *r = &s->relay;
    const char *node = st->node_type;
    if (!strcmp(node, "VariableSetStmt")) {
        const char *kind = json_string_value(json_object_get(st->node, "kind"));
        const char *name = json_string_value(json_object_get(st->node, "name"));
        if (json_is_true(json_object_get(st->node, "is_local")) || !kind) return;
        /* inside a transaction the SET may still roll back; recorded anyway,
         * as a rolled-back SET is rare and a replayed one is harmless */
        if (!strcmp(kind, "VAR_RESET_ALL")) {
            relay_free_settings(s);
        } else if (name && (!strcmp(kind, "VAR_RESET") || !strcmp(kind, "VAR_SET_DEFAULT"))) {
            forget_setting(s, name);
        } else if (name && !strcmp(kind, "VAR_SET_VALUE")) {
            remember_setting(s, name, xstrdup(st->text));
        }
        s->up_hash = settings_hash(s);
        /* the server runs this very statement: it will hold the new state */
        if (r->conn) srv_stmts(r->conn)->state_hash = s->up_hash;
        return;
    }
    int pin = !strcmp(node, "ListenStmt") || !strcmp(node, "PrepareStmt") ||
              (!strcmp(node, "DeclareCursorStmt") &&
               (json_integer_value(json_object_get(st->node, "options")) & 0x20 /* WITH HOLD */)) ||
              (!strcmp(node, "CreateStmt") &&
               json_string_value(json_object_get(json_object_get(st->node, "relation"), "relpersistence")) &&
               !strcmp(json_string_value(json_object_get(json_object_get(st->node, "relation"), "relpersistence")), "t"));
    if (!pin && st->kind == STMT_SELECT && strstr(st->text, "advisory_lock") &&
        !strstr(st->text, "advisory_xact_lock"))
        pin = 1;
    if (pin && !r->pinned) {
        r->pinned = 1;
        if (s->env->stats) s->env->stats->sessions_pinned++;
        log_info("session %d: pinned to its server connection by %s", s->pid, route_stmt_tag(st));
    }
}

void relay_note_query(Session *s, const char *sql)
{
    char w[16];
    first_word(sql, w, sizeof w);
    int maybe = !strcmp(w, "set") || !strcmp(w, "reset") || !strcmp(w, "listen") ||
                !strcmp(w, "prepare") || !strcmp(w, "declare") || !strcmp(w, "create") ||
                (!strcmp(w, "select") && strstr(sql, "advisory_lock"));
    if (!maybe) return;     /* the common case costs one keyword read */
    RouteParse p;
    RqError err = {0};
    if (route_parse(sql, &p, &err) < 0) {
        rq_error_free(&err);
        return;
    }
    for (size_t i = 0; i < p.n; i++) note_stmt(s, &p.stmts[i]);
    route_parse_free(&p);
}
