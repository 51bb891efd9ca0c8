/*
 * Listeners and client connections (see include/riffq/server.h).
 *
 * Reading: libuv hands every read the same loop-wide buffer (one per
 * Server), and complete messages are handled straight out of it; only the
 * incomplete tail of a message is copied into the connection's own buffer.
 * An idle connection therefore holds no read buffer at all, which is what
 * keeps thousands of idle clients cheap.
 *
 * TLS: OpenSSL runs over memory BIOs, so the socket stays a plain libuv
 * stream: ciphertext read from the socket goes into the read BIO, plaintext
 * comes out of SSL_read; plaintext output goes through SSL_write and the
 * write BIO is drained into uv_write.
 *
 * Writing: everything a message handler produces is appended to conn->out
 * and flushed once per read batch, handing the buffer itself to uv_write (no
 * copy); when the kernel cannot keep up, reading from that client pauses
 * until its writes drain (backpressure).
 *
 * Configuration is reference counted: a SIGHUP reload swaps in a new Config
 * for new connections while existing sessions keep the one they started
 * with.
 */
#include <arpa/inet.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include "riffq/auth.h"
#include "riffq/plugin.h"
#include "riffq/route.h"
#include "riffq/upstream.h"
#include "riffq/buf.h"
#include "riffq/log.h"
#include "riffq/server.h"
#include "riffq/session.h"
#include "riffq/wire.h"

#define READ_BUF_SIZE (64 * 1024)
#define WRITE_PAUSE_BYTES (1024 * 1024)
#define EXTRA_CONNECTIONS 64
#define LINGER_MS 5000          /* how long a closing connection may take to send its last bytes */    /* accepted beyond max_clients just to refuse them politely */

/* A loaded configuration plus what the server derives from it. */
typedef struct CfgRef {
    Config *cfg;
    AuthVerifier *verifiers;    /* parallel to cfg->users */
    SSL_CTX *ssl;               /* NULL when TLS is disabled */
    uint8_t cbind[64];          /* tls-server-end-point of the certificate */
    int cbind_len;
    SessEnv env;                /* route table and pools of this configuration */
    int refs;                   /* the server + each connection using it */
} CfgRef;

typedef enum {
    CONN_STARTUP = 0,           /* waiting for a startup packet */
    CONN_TLS_HANDSHAKE,
    CONN_AUTH_PASSWORD,         /* cleartext or MD5 PasswordMessage expected */
    CONN_AUTH_SASL_INIT,
    CONN_AUTH_SASL_CONT,
    CONN_READY,                 /* authenticated; messages go to the session */
} ConnState;

typedef struct Listener {
    union { uv_tcp_t tcp; uv_pipe_t pipe; uv_stream_t stream; uv_handle_t handle; } h;
    Server *srv;
    char *name;                 /* "host:port" or the socket path */
    int is_unix;
} Listener;

typedef struct Conn Conn;

struct Server {
    uv_loop_t *loop;
    PlugEngine *plugins;        /* one interpreter for the process; NULL without plugins */
    RqStats stats;
    CfgRef *cur;                /* configuration for new connections */
    Listener *listeners;
    size_t n_listeners;
    Conn *conns;                /* every open connection */
    size_t n_conns;             /* all sockets */
    size_t n_clients;           /* sockets that sent a StartupMessage */
    int32_t next_pid;
    int stopping;
    char *read_buf;             /* shared by every read, see the file comment */
    char *tls_buf;
};

struct Conn {
    union { uv_tcp_t tcp; uv_pipe_t pipe; uv_stream_t stream; uv_handle_t handle; } h;
    uv_timer_t timer;           /* authentication timeout */
    Server *srv;
    CfgRef *cref;               /* counted reference */
    Conn *prev, *next;
    ConnState state;
    Buf in;                     /* incomplete input (plaintext) */
    Buf out;                    /* pending output (plaintext) */
    SSL *ssl;
    int handles_open;           /* handles still to be closed before freeing */
    int handles_closing;        /* uv_close was called on both */
    int writes_pending;
    int closing;
    int counted;                /* counted in srv->n_clients */
    int read_paused;
    int waiting;                /* the session owes a resume: input stays buffered */
    int in_consume;
    const Listener *listener;
    int32_t pid, key;
    char *user;                 /* from the startup packet (owned) */
    char *database;
    char *peer;                 /* "ip:port" or "unix" */
    struct sockaddr_in6 addr;   /* the peer (sockaddr_in fits too); family 0: unix or unknown */
    const AuthVerifier *verifier;   /* NULL for unknown users */
    AuthScram *scram;
    uint8_t md5_salt[4];
    PlugQuery *hook;            /* on_connect hooks running before the session starts */
    /* auth_query: looking the user's verifier up on an upstream */
    UpWait *aq_wait;
    UpConn *aq_conn;
    Buf aq_in;                  /* partial server message */
    int aq_done;                /* lookup finished (verifier found or not) */
    int aq_found;
    AuthVerifier aq_verifier;
    WireStartup *startup;       /* kept between startup and authentication */
    uint8_t *startup_copy;      /* the bytes startup points into */
    Session *sess;
};

typedef struct WriteReq {
    uv_write_t req;
    Conn *conn;
    char *data;
} WriteReq;

static void conn_close(Conn *c);
static PlugCtx conn_plug_ctx(Conn *c, char *ip);
static void conn_flush(Conn *c);
static void conn_process(Conn *c, const uint8_t *data, size_t len);

/* ---- configuration references ---- */

static void cref_release(CfgRef *r)
{
    if (!r || --r->refs > 0) return;
    if (r->verifiers) {
        for (size_t i = 0; i < r->cfg->n_users; i++) auth_verifier_free(&r->verifiers[i]);
        free(r->verifiers);
    }
    if (r->ssl) SSL_CTX_free(r->ssl);
    route_table_free(r->env.routes);
    for (size_t i = 0; r->env.pools && i < r->cfg->n_upstreams; i++)
        if (r->env.pools[i]) up_pool_free(r->env.pools[i]);
    free(r->env.pools);
    cfg_free(r->cfg);
    free(r);
}

static char *openssl_error(void)
{
    char buf[256];
    unsigned long e = ERR_get_error();
    ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return xstrdup(buf);
}

/* The route table asks which tables a plugin registered. */
static int plugin_has_table(void *ctx, const char *plugin, const char *schema, const char *name)
{
    return plug_engine_table(ctx, plugin, schema ? schema : "public", name) != NULL;
}

static CfgRef *cref_new(uv_loop_t *loop, PlugEngine *plugins, RqStats *stats, Config *cfg, char **errmsg)
{
    CfgRef *r = xcalloc(1, sizeof *r);
    r->cfg = cfg;
    r->refs = 1;
    r->env.cfg = cfg;
    r->env.plugins = plugins;
    r->env.loop = loop;
    r->env.stats = stats;
    r->env.routes = route_table_new(cfg, errmsg);
    if (!r->env.routes) {
        cref_release(r);
        return NULL;
    }
    if (plugins) route_table_set_plugin_tables(r->env.routes, plugin_has_table, plugins);
    r->env.pools = xcalloc(cfg->n_upstreams ? cfg->n_upstreams : 1, sizeof *r->env.pools);
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        const CfgUpstream *u = &cfg->upstreams[i];
        UpPoolOpts o = {
            .pool_size = u->pool_size, .min_pool_size = u->min_pool_size,
            .idle_timeout_ms = 600000, .lifetime_ms = 3600000, .wait_timeout_ms = 120000,
            .connect_timeout_ms = 10000,
            /* session pooling hands a server to a new client only after
             * wiping what the previous one left; transaction pooling
             * releases at transaction boundaries where nothing is left */
            .reset_query = u->pool_mode == POOL_SESSION ? "DISCARD ALL" : NULL,
            .health_interval_ms = u->health_interval_ms,
            .health_timeout_ms = u->health_timeout_ms,
        };
        UpHostSpec *hosts = xcalloc(u->n_hosts, sizeof *hosts);
        for (size_t h = 0; h < u->n_hosts; h++) {
            RqError ce = {0};
            if (up_conninfo_check(u->hosts[h].conninfo, &ce) < 0) {
                /* libpq's own message may quote the password: don't repeat it */
                rq_error_free(&ce);
                if (u->n_hosts == 1)    /* almost always a plain "conninfo" */
                    *errmsg = xasprintf("%s: upstreams.%s.conninfo: not a valid libpq connection "
                                        "string", cfg->path, u->name);
                else
                    *errmsg = xasprintf("%s: upstreams.%s.hosts[%zu].conninfo: not a valid libpq "
                                        "connection string", cfg->path, u->name, h);
                free(hosts);
                cref_release(r);
                return NULL;
            }
            hosts[h].conninfo = u->hosts[h].conninfo;
            hosts[h].role = u->hosts[h].role == HOST_REPLICA ? UP_REPLICA : UP_PRIMARY;
        }
        r->env.pools[i] = up_pool_new_hosts(loop, u->name, hosts, u->n_hosts, &o);
        free(hosts);
        if (!r->env.pools[i]) {
            *errmsg = xasprintf("%s: upstreams.%s: could not set up its pool", cfg->path, u->name);
            cref_release(r);
            return NULL;
        }
    }
    r->verifiers = xcalloc(cfg->n_users ? cfg->n_users : 1, sizeof *r->verifiers);
    for (size_t i = 0; i < cfg->n_users; i++) {
        char *e = NULL;
        if (auth_verifier_parse(cfg->users[i].secret, &r->verifiers[i], &e) < 0) {
            *errmsg = xasprintf("%s: auth.users.%s: %s", cfg->path, cfg->users[i].name, e ? e : "invalid secret");
            free(e);
            cref_release(r);
            return NULL;
        }
        /* SCRAM needs a SCRAM verifier; derive it once from a plain
         * password here rather than on every login */
        if (cfg->auth_method == AUTH_SCRAM && r->verifiers[i].kind == VERIFIER_PLAIN) {
            AuthVerifier v = {0};
            if (auth_verifier_scram_from_plain(r->verifiers[i].plain, AUTH_SCRAM_DEFAULT_ITERATIONS,
                                               NULL, 0, &v) < 0) {
                *errmsg = xasprintf("%s: auth.users.%s: cannot derive a SCRAM verifier", cfg->path,
                                    cfg->users[i].name);
                cref_release(r);
                return NULL;
            }
            auth_verifier_free(&r->verifiers[i]);
            r->verifiers[i] = v;
        }
    }
    if (cfg->tls_mode != TLS_DISABLE) {
        r->ssl = SSL_CTX_new(TLS_server_method());
        SSL_CTX_set_min_proto_version(r->ssl, TLS1_2_VERSION);
        SSL_CTX_set_options(r->ssl, SSL_OP_NO_RENEGOTIATION);
        if (SSL_CTX_use_certificate_chain_file(r->ssl, cfg->tls_cert) != 1) {
            char *e = openssl_error();
            *errmsg = xasprintf("%s: tls.cert: cannot load %s: %s", cfg->path, cfg->tls_cert, e);
            free(e);
            cref_release(r);
            return NULL;
        }
        if (SSL_CTX_use_PrivateKey_file(r->ssl, cfg->tls_key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(r->ssl) != 1) {
            char *e = openssl_error();
            *errmsg = xasprintf("%s: tls.key: cannot load %s: %s", cfg->path, cfg->tls_key, e);
            free(e);
            cref_release(r);
            return NULL;
        }
        X509 *cert = SSL_CTX_get0_certificate(r->ssl);
        r->cbind_len = cert ? auth_tls_server_end_point(cert, r->cbind) : -1;
        if (r->cbind_len < 0) r->cbind_len = 0;
    }
    return r;
}

static const AuthVerifier *find_verifier(const CfgRef *r, const char *user)
{
    for (size_t i = 0; i < r->cfg->n_users; i++)
        if (!strcmp(r->cfg->users[i].name, user)) return &r->verifiers[i];
    return NULL;
}

/* ---- output ---- */

static void resume_read(Conn *c);

static void on_handle_closed(uv_handle_t *h);
static void close_handles(Conn *c);
static void aq_finish(Conn *c, int reusable);

static void on_write(uv_write_t *req, int status)
{
    WriteReq *w = (WriteReq *)req;
    Conn *c = w->conn;
    free(w->data);
    free(w);
    c->writes_pending--;
    if (c->closing) {
        /* the fatal error or last reply is out: now the socket can go */
        if (c->writes_pending == 0) close_handles(c);
        return;
    }
    if (status < 0) {
        log_debug("write to %s failed: %s", c->peer, uv_strerror(status));
        conn_close(c);
        return;
    }
    if (uv_stream_get_write_queue_size(&c->h.stream) < WRITE_PAUSE_BYTES / 2) {
        if (c->sess) sess_output_drained(c->sess);
        if (c->read_paused && !c->waiting && !c->closing) {
            c->read_paused = 0;
            resume_read(c);
        }
    }
}

static void write_raw(Conn *c, char *data, size_t len)
{
    uv_buf_t b = uv_buf_init(data, (unsigned)len);
    if (c->writes_pending == 0) {
        /* Write now when nothing is queued (order is kept).  A uv_write
         * that completes costs libuv an epoll_ctl when its queue drains:
         * one system call per reply, a tenth of a pooled transaction's. */
        int n = uv_try_write(&c->h.stream, &b, 1);
        if (n == (int)len) {
            free(data);
            return;
        }
        if (n > 0) {
            b.base += n;
            b.len -= (size_t)n;
        }
    }
    WriteReq *w = xmalloc(sizeof *w);
    w->conn = c;
    w->data = data;
    c->writes_pending++;
    int rc = uv_write(&w->req, &c->h.stream, &b, 1, on_write);
    if (rc < 0) {
        c->writes_pending--;
        free(data);
        free(w);
        if (!c->closing) conn_close(c);
        else if (c->writes_pending == 0) close_handles(c);
    }
}

static void drain_tls(Conn *c)
{
    BIO *wbio = SSL_get_wbio(c->ssl);
    size_t pending = BIO_ctrl_pending(wbio);
    if (pending == 0) return;
    char *data = xmalloc(pending);
    int n = BIO_read(wbio, data, (int)pending);
    if (n <= 0) {
        free(data);
        return;
    }
    write_raw(c, data, (size_t)n);
}

static void conn_flush(Conn *c)
{
    if (c->out.len == 0) return;
    if (c->closing) {
        buf_reset(&c->out);
        return;
    }
    if (c->ssl && SSL_is_init_finished(c->ssl)) {
        size_t off = 0;
        while (off < c->out.len) {
            int n = SSL_write(c->ssl, c->out.data + off, (int)(c->out.len - off));
            if (n <= 0) break;  /* memory BIOs only fail on a broken session */
            off += (size_t)n;
        }
        buf_reset(&c->out);
        if (c->out.cap > READ_BUF_SIZE) buf_free(&c->out);
        drain_tls(c);
    } else {
        /* hand the buffer itself to libuv; the connection starts a new one */
        char *data = c->out.data;
        size_t len = c->out.len;
        buf_init(&c->out);
        write_raw(c, data, len);
    }
    if (!c->closing && !c->read_paused &&
        uv_stream_get_write_queue_size(&c->h.stream) > WRITE_PAUSE_BYTES) {
        c->read_paused = 1;
        uv_read_stop(&c->h.stream);
    }
}

/* Send a fatal error and close once it is written. */
static void conn_fail(Conn *c, RqError *err)
{
    if (!err->severity) rq_error_fatal(err);
    wire_error(&c->out, err);
    rq_error_free(err);
    conn_close(c);
}

static void conn_fail_with(Conn *c, const char *sqlstate, const char *msg)
{
    RqError e = {0};
    rq_error_set(&e, sqlstate, "%s", msg);
    conn_fail(c, &e);
}

/* ---- lifetime ---- */

static void on_handle_closed(uv_handle_t *h)
{
    Conn *c = h->data;
    if (--c->handles_open > 0) return;
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
}

/* Everything but the handles and buffers, which libuv may still use. */
static void conn_release(Conn *c)
{
    Server *srv = c->srv;
    if (c->prev) c->prev->next = c->next;
    else srv->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    srv->n_conns--;
    if (c->counted) srv->n_clients--;
    if (c->hook) plug_query_free(c->hook);
    c->hook = NULL;
    aq_finish(c, 0);
    if (c->aq_found) auth_verifier_free(&c->aq_verifier);
    c->aq_found = 0;
    if (c->sess && srv->plugins && plug_engine_has_hooks(srv->plugins, PLUG_HOOK_DISCONNECT)) {
        /* fire and forget: the job runs to the end after being freed */
        char ip[INET6_ADDRSTRLEN];
        PlugCtx ctx = conn_plug_ctx(c, ip);
        plug_query_free(plug_hook_start(srv->plugins, PLUG_HOOK_DISCONNECT, &ctx, NULL, NULL));
    }
    sess_free(c->sess);
    c->sess = NULL;
    auth_scram_free(c->scram);
    c->scram = NULL;
    free(c->startup);
    free(c->startup_copy);
    free(c->user);
    free(c->database);
    free(c->peer);
    cref_release(c->cref);
}

static void close_handles(Conn *c)
{
    if (c->handles_closing) return;
    c->handles_closing = 1;
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close(&c->h.handle, on_handle_closed);   /* cancels writes still queued */
}

static void on_linger_timeout(uv_timer_t *t)
{
    close_handles(t->data);
}

static void conn_close(Conn *c)
{
    if (c->closing) return;
    conn_flush(c);          /* a final error message still goes out */
    c->closing = 1;
    uv_read_stop(&c->h.stream);
    if (c->ssl) SSL_free(c->ssl);
    c->ssl = NULL;
    conn_release(c);
    if (c->writes_pending == 0) {
        close_handles(c);
    } else {
        /* let the last reply (often the error saying why) reach the client,
         * but do not wait forever on one that stopped reading */
        uv_timer_start(&c->timer, on_linger_timeout, LINGER_MS, 0);
    }
}

/* ---- startup ---- */

static int32_t random_i32(void)
{
    int32_t v = 0;
    if (RAND_bytes((unsigned char *)&v, sizeof v) != 1) {
        /* without a CSPRNG, cancel keys would be guessable: refuse to go on */
        log_error("RAND_bytes failed");
        abort();
    }
    return v;
}

/* "-c name=value" and "--name=value" items of the startup "options"
 * parameter, split on unescaped spaces as Postgres does. */
/* The next blank-separated word of an options string into tok (a new Buf,
 * NUL-terminated); a backslash makes the next character literal. */
static void next_option_word(const char **pp, Buf *tok)
{
    const char *p = *pp;
    buf_init(tok);
    while (*p == ' ' || *p == '\t') p++;
    while (*p && *p != ' ' && *p != '\t') {
        if (*p == '\\' && p[1]) p++;
        buf_append_byte(tok, (uint8_t)*p++);
    }
    buf_append_byte(tok, 0);
    *pp = p;
}

static int parse_options(const char *opts, char ***keys, char ***vals, size_t *n)
{
    const char *p = opts;
    while (*p) {
        while (*p == ' ' || *p == '\t') p++;
        if (!*p) break;
        Buf tok;
        next_option_word(&p, &tok);
        const char *t = tok.data;
        if (!strcmp(t, "-c")) {
            buf_free(&tok);
            next_option_word(&p, &tok);
            t = tok.data;
        } else if (!strncmp(t, "--", 2)) {
            t += 2;
        } else {
            buf_free(&tok);
            return -1;
        }
        const char *eq = strchr(t, '=');
        if (!eq) {
            buf_free(&tok);
            return -1;
        }
        *keys = xrealloc(*keys, (*n + 1) * sizeof **keys);
        *vals = xrealloc(*vals, (*n + 1) * sizeof **vals);
        (*keys)[*n] = xstrndup(t, (size_t)(eq - t));
        /* Postgres accepts '-' for '_' in option names */
        for (char *q = (*keys)[*n]; *q; q++) if (*q == '-') *q = '_';
        (*vals)[*n] = xstrdup(eq + 1);
        (*n)++;
        buf_free(&tok);
    }
    return 0;
}

/* ---- the session's way back to its connection ---- */

static size_t consume(Conn *c, const uint8_t *data, size_t len);

static void io_flush(void *ctx)
{
    Conn *c = ctx;
    if (!c->closing) conn_flush(c);
}

static void io_close(void *ctx)
{
    conn_close(ctx);
}

static size_t io_queued(void *ctx)
{
    Conn *c = ctx;
    return c->closing ? 0 : uv_stream_get_write_queue_size(&c->h.stream) + c->out.len;
}

/* The session can take input again: handle what arrived meanwhile. */
static void io_resume(void *ctx)
{
    Conn *c = ctx;
    if (c->closing) return;
    c->waiting = 0;
    if (c->in_consume) return;      /* the running consume loop goes on by itself */
    size_t used = consume(c, (const uint8_t *)c->in.data, c->in.len);
    if (c->sess && !c->closing) sess_batch_end(c->sess);
    if (!c->closing) {
        buf_consume(&c->in, used);
        if (c->in.len == 0 && c->in.cap > 0) buf_free(&c->in);
        if (!c->waiting) conn_flush(c);
        if (c->read_paused && !c->waiting) {
            c->read_paused = 0;
            resume_read(c);
        }
    }
}

static void start_session(Conn *c)
{
    WireStartup *st = c->startup;
    RqError err = {0};
    size_t n = 0;
    char **keys = NULL, **vals = NULL;
    for (size_t i = 0; i < st->n_params; i++) {
        const char *k = st->keys[i];
        if (!strcmp(k, "user") || !strcmp(k, "database") || !strncmp(k, "_pq_.", 5) ||
            !strcmp(k, "replication"))
            continue;
        if (!strcmp(k, "options")) {
            if (parse_options(st->vals[i], &keys, &vals, &n) < 0) {
                rq_error_set(&err, "42601", "invalid command-line argument in startup options: \"%s\"",
                             st->vals[i]);
                rq_error_hint(&err, "Use -c name=value or --name=value.");
                goto fail;
            }
            continue;
        }
        keys = xrealloc(keys, (n + 1) * sizeof *keys);
        vals = xrealloc(vals, (n + 1) * sizeof *vals);
        keys[n] = xstrdup(k);
        vals[n] = xstrdup(st->vals[i]);
        n++;
    }
    wire_auth(&c->out, 0, NULL, 0);     /* AuthenticationOk */
    SessInit si = {
        .env = &c->cref->env,
        .io = { .ctx = c, .flush = io_flush, .resume = io_resume, .close = io_close, .queued = io_queued },
        .user = c->user, .database = c->database,
        .pid = c->pid, .key = c->key,
        .keys = (const char *const *)keys, .vals = (const char *const *)vals, .n = n,
        .client_addr = c->peer,
        .addr = c->addr.sin6_family ? (const struct sockaddr *)&c->addr : NULL,
        .listen = c->listener->name,
    };
    c->sess = sess_new(&si, &c->out, &err);
fail:
    for (size_t i = 0; i < n; i++) {
        free(keys[i]);
        free(vals[i]);
    }
    free(keys);
    free(vals);
    free(c->startup);
    c->startup = NULL;
    free(c->startup_copy);
    c->startup_copy = NULL;
    if (!c->sess) {
        conn_fail(c, &err);
        return;
    }
    uv_timer_stop(&c->timer);
    c->state = CONN_READY;
    log_debug("session %d: %s connected as %s to %s", c->pid, c->peer, c->user, c->database);
}

static const char *startup_value(const Conn *c, const char *key)
{
    for (size_t i = 0; c->startup && i < c->startup->n_params; i++)
        if (!strcmp(c->startup->keys[i], key)) return c->startup->vals[i];
    return NULL;
}

/* What plugin hooks learn about the client.  ip must hold
 * INET6_ADDRSTRLEN bytes.  The address comes from c->peer, taken at
 * accept: at disconnect the socket may no longer have a peer to ask. */
static PlugCtx conn_plug_ctx(Conn *c, char *ip)
{
    const char *app = startup_value(c, "application_name");
    PlugCtx ctx = { .user = c->user, .database = c->database, .application_name = app ? app : "",
                    .route = "", .session_id = c->pid };
    if (!c->listener->is_unix) plug_ctx_set_peer(&ctx, c->peer, ip);
    if (c->ssl) ctx.server_name = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
    ctx.options = startup_value(c, "options");
    return ctx;
}

/* A login hook (on_connect, authenticate) answered: 0 to go on, or -1
 * with e set from the plugin's error (sqlstate and message are the
 * defaults for what it left out).  The hook is freed either way. */
static int hook_result(Conn *c, const char *sqlstate, const char *message, RqError *e)
{
    int failed = plug_query_state(c->hook) == PLUG_FAILED;
    if (failed) {
        const RqError *pe = plug_query_error(c->hook);
        rq_error_set(e, pe && pe->sqlstate[0] ? pe->sqlstate : sqlstate, "%s",
                     pe && pe->message ? pe->message : message);
        if (pe && pe->detail) rq_error_detail(e, "%s", pe->detail);
        if (pe && pe->hint) rq_error_hint(e, "%s", pe->hint);
    }
    plug_query_free(c->hook);
    c->hook = NULL;
    return failed ? -1 : 0;
}

static void on_connect_hooks(void *ud)
{
    Conn *c = ud;
    PlugState st = plug_query_state(c->hook);
    if (st == PLUG_RUNNING || st == PLUG_COLUMNS) return;
    RqError e = {0};
    if (hook_result(c, "28000", "login rejected by a plugin", &e) < 0) {
        /* a plugin refused the login */
        log_info("login of \"%s\" from %s rejected by a plugin: %s", c->user, c->peer, e.message);
        conn_fail(c, &e);
        return;
    }
    c->waiting = 0;
    start_session(c);
    if (!c->closing) io_resume(c);
}

/* Authentication succeeded: run the plugins' on_connect hooks, if any,
 * before the session starts (they may still refuse the login). */
static void auth_done(Conn *c)
{
    PlugEngine *e = c->srv->plugins;
    if (!e || !plug_engine_has_hooks(e, PLUG_HOOK_CONNECT)) {
        start_session(c);
        return;
    }
    char ip[INET6_ADDRSTRLEN];
    PlugCtx ctx = conn_plug_ctx(c, ip);
    c->waiting = 1;     /* input waits until the hooks have answered */
    c->hook = plug_hook_start(e, PLUG_HOOK_CONNECT, &ctx, on_connect_hooks, c);
}

/* The auth plugin's answer to a cleartext password. */
static void on_auth_hook(void *ud)
{
    Conn *c = ud;
    PlugState st = plug_query_state(c->hook);
    if (st == PLUG_RUNNING || st == PLUG_COLUMNS) return;
    RqError e = {0};
    int rc = hook_result(c, "28P01", "password authentication failed", &e);
    c->waiting = 0;
    if (rc < 0) {
        log_info("authentication failed for user \"%s\" from %s: %s", c->user, c->peer, e.message);
        conn_fail(c, &e);
        return;
    }
    auth_done(c);
    if (!c->closing && !c->waiting) io_resume(c);
}

static void auth_failed(Conn *c)
{
    RqError e = {0};
    rq_error_set(&e, "28P01", "password authentication failed for user \"%s\"", c->user);
    log_info("authentication failed for user \"%s\" from %s", c->user, c->peer);
    conn_fail(c, &e);
}

/* ---- auth_query: verifiers Postgres already holds ---- */

static void begin_auth(Conn *c);

/* The pool of the upstream auth_query names (the loader checked it exists). */
static UpPool *auth_query_pool(const CfgRef *r)
{
    const Config *cfg = r->cfg;
    return r->env.pools[cfg_find_upstream(cfg, cfg->auth_query_upstream) - cfg->upstreams];
}

/* Give the lookup connection back (reusable only at ReadyForQuery 'I'). */
static void aq_finish(Conn *c, int reusable)
{
    if (c->aq_wait) up_wait_cancel(c->aq_wait);
    c->aq_wait = NULL;
    if (c->aq_conn) {
        up_conn_detach(c->aq_conn);
        up_pool_release(auth_query_pool(c->cref), c->aq_conn, reusable);
    }
    c->aq_conn = NULL;
    buf_free(&c->aq_in);
}

static void aq_failed(Conn *c, const char *why)
{
    RqError e = {0};
    aq_finish(c, 0);
    log_warn("auth_query for user \"%s\" failed: %s", c->user, why);
    rq_error_set(&e, "08006", "could not look up user \"%s\" for authentication", c->user);
    conn_fail(c, &e);
}

static void aq_row(Conn *c, const uint8_t *body, size_t len)
{
    WireReader r;
    wire_reader_init(&r, body, len);
    int16_t ncols = wire_get_i16(&r);
    if (ncols < 2 || c->aq_found) return;
    int32_t l0 = wire_get_i32(&r);
    if (l0 > 0) wire_get_bytes(&r, (size_t)l0);
    int32_t l1 = wire_get_i32(&r);
    if (l1 <= 0 || r.err) return;
    const uint8_t *v = wire_get_bytes(&r, (size_t)l1);
    if (!v) return;
    char *secret = xstrndup((const char *)v, (size_t)l1);
    char *err = NULL;
    if (auth_verifier_parse(secret, &c->aq_verifier, &err) == 0) c->aq_found = 1;
    else log_warn("auth_query: unusable verifier for user \"%s\": %s", c->user, err ? err : "?");
    free(err);
    free(secret);
}

static void on_aq_data(void *ud, const uint8_t *data, size_t len)
{
    Conn *c = ud;
    RqError err = {0};
    buf_append(&c->aq_in, data, len);
    size_t off = 0;
    for (;;) {
        uint8_t type;
        const uint8_t *body;
        size_t blen, total;
        int rc = wire_frame((const uint8_t *)c->aq_in.data + off, c->aq_in.len - off, 1 << 20,
                            &type, &body, &blen, &total, &err);
        if (rc < 0) {
            rq_error_free(&err);
            aq_failed(c, "invalid message from the upstream");
            return;
        }
        if (rc == 0) break;
        off += total;
        if (type == 'D') aq_row(c, body, blen);
        else if (type == 'E') log_warn("auth_query for user \"%s\": the upstream reported an error", c->user);
        else if (type == 'Z') {
            aq_finish(c, blen == 1 && body[0] == 'I');
            c->aq_done = 1;
            c->waiting = 0;
            begin_auth(c);
            conn_flush(c);
            return;
        }
    }
    buf_consume(&c->aq_in, off);
}

static void on_aq_error(void *ud, RqError *err)
{
    aq_failed(ud, err->message ? err->message : "connection lost");
}

static void on_aq_acquired(void *ud, UpConn *conn, RqError *err)
{
    Conn *c = ud;
    c->aq_wait = NULL;
    if (!conn) {
        aq_failed(c, err && err->message ? err->message : "no server connection");
        return;
    }
    c->aq_conn = conn;
    UpConnCb cb = { .ud = c, .on_data = on_aq_data, .on_error = on_aq_error };
    up_conn_attach(conn, &cb);
    /* Parse/Bind/Execute/Sync: the user name travels as a parameter, never
     * spliced into SQL */
    Buf m;
    buf_init(&m);
    size_t o = wire_begin(&m, 'P');
    buf_append_cstr(&m, "");
    buf_append_cstr(&m, c->cref->cfg->auth_query);
    buf_append_u16(&m, 0);
    wire_end(&m, o);
    o = wire_begin(&m, 'B');
    buf_append_cstr(&m, "");
    buf_append_cstr(&m, "");
    buf_append_u16(&m, 0);
    buf_append_u16(&m, 1);
    buf_append_u32(&m, (uint32_t)strlen(c->user));
    buf_append_str(&m, c->user);
    buf_append_u16(&m, 0);
    wire_end(&m, o);
    o = wire_begin(&m, 'E');
    buf_append_cstr(&m, "");
    buf_append_u32(&m, 0);
    wire_end(&m, o);
    wire_simple(&m, 'S');
    up_conn_send(conn, m.data, m.len);
    buf_free(&m);
}

static void begin_auth(Conn *c)
{
    const Config *cfg = c->cref->cfg;
    c->verifier = find_verifier(c->cref, c->user);
    if (!c->verifier && c->aq_found) c->verifier = &c->aq_verifier;
    if (!c->verifier && cfg->auth_method != AUTH_TRUST && cfg->auth_query_upstream && !c->aq_done) {
        /* not in the route file: ask the upstream, then come back here */
        c->waiting = 1;
        c->aq_wait = up_pool_acquire(auth_query_pool(c->cref), NULL, NULL, on_aq_acquired, c);
        return;
    }
    CfgAuthMethod m = cfg->auth_method;
    if (m == AUTH_TRUST) {
        auth_done(c);
        return;
    }
    /* An MD5 login for a user stored as SCRAM is upgraded to SCRAM, as
     * Postgres does: the MD5 hash cannot be derived from the verifier. */
    if (m == AUTH_MD5 && c->verifier && c->verifier->kind == VERIFIER_SCRAM) m = AUTH_SCRAM;
    if (m == AUTH_PASSWORD) {
        wire_auth(&c->out, 3, NULL, 0);
        c->state = CONN_AUTH_PASSWORD;
    } else if (m == AUTH_MD5) {
        if (RAND_bytes(c->md5_salt, 4) != 1) abort();
        wire_auth(&c->out, 5, c->md5_salt, 4);
        c->state = CONN_AUTH_PASSWORD;
    } else {
        /* a user whose only secret is an MD5 hash cannot do SCRAM: run the
         * exchange against no verifier so it fails like a wrong password */
        const AuthVerifier *v = c->verifier;
        if (v && v->kind != VERIFIER_SCRAM) v = NULL;
        const uint8_t *cb = NULL;
        size_t cbl = 0;
        if (c->ssl && c->cref->cbind_len > 0) {
            cb = c->cref->cbind;
            cbl = (size_t)c->cref->cbind_len;
        }
        c->scram = auth_scram_new(v, c->user, cb, cbl);
        Buf mech;
        buf_init(&mech);
        auth_scram_mechanisms(c->scram, &mech);
        wire_auth(&c->out, 10, mech.data, mech.len);
        buf_free(&mech);
        c->state = CONN_AUTH_SASL_INIT;
    }
}

static void handle_auth_message(Conn *c, uint8_t type, const uint8_t *body, size_t len)
{
    RqError err = {0};
    if (type != 'p') {
        conn_fail_with(c, "08P01", type == 'X' ? "client terminated during authentication"
                                               : "expected password response");
        return;
    }
    if (c->state == CONN_AUTH_PASSWORD) {
        WireReader r;
        wire_reader_init(&r, body, len);
        const char *pw = wire_get_str(&r);
        if (wire_reader_end(&r) < 0) {
            conn_fail_with(c, "08P01", "invalid password packet");
            return;
        }
        const Config *cfg = c->cref->cfg;
        if (!c->verifier && cfg->auth_plugin && c->srv->plugins) {
            char ip[INET6_ADDRSTRLEN];
            PlugCtx ctx = conn_plug_ctx(c, ip);
            c->waiting = 1;     /* nothing else is read until the plugin answered */
            c->hook = plug_auth_start(c->srv->plugins, cfg->auth_plugin, pw, &ctx, on_auth_hook, c);
            return;
        }
        int ok;
        if (cfg->auth_method == AUTH_MD5)
            ok = c->verifier && auth_md5_check(c->verifier, c->user, c->md5_salt, pw);
        else
            ok = c->verifier && auth_password_check(c->verifier, c->user, pw);
        if (!ok) {
            auth_failed(c);
            return;
        }
        auth_done(c);
        return;
    }
    Buf reply;
    buf_init(&reply);
    if (c->state == CONN_AUTH_SASL_INIT) {
        const char *mech;
        const uint8_t *data;
        size_t dlen;
        if (wire_decode_sasl_initial(body, len, &mech, &data, &dlen, &err) < 0 ||
            auth_scram_client_first(c->scram, mech, (const char *)data, dlen, &reply, &err) < 0) {
            buf_free(&reply);
            conn_fail(c, &err);
            return;
        }
        wire_auth(&c->out, 11, reply.data, reply.len);
        c->state = CONN_AUTH_SASL_CONT;
    } else {
        if (auth_scram_client_final(c->scram, (const char *)body, len, &reply, &err) < 0) {
            buf_free(&reply);
            if (!strcmp(err.sqlstate, "28P01"))
                log_info("authentication failed for user \"%s\" from %s", c->user, c->peer);
            conn_fail(c, &err);
            return;
        }
        wire_auth(&c->out, 12, reply.data, reply.len);
        auth_scram_free(c->scram);
        c->scram = NULL;
        auth_done(c);
    }
    buf_free(&reply);
}

static Conn *find_by_pid(Server *srv, int32_t pid)
{
    for (Conn *c = srv->conns; c; c = c->next)
        if (c->pid == pid && c->sess) return c;
    return NULL;
}

static void handle_cancel(Conn *c, const WireStartup *st)
{
    Conn *target = find_by_pid(c->srv, st->cancel_pid);
    /* compare keys without leaking timing; a wrong key is silently ignored,
     * as Postgres does, so cancel requests cannot probe sessions */
    if (target && CRYPTO_memcmp(&target->key, &st->cancel_key, sizeof st->cancel_key) == 0)
        sess_cancel(target->sess);
    else
        log_debug("cancel request for unknown session %d ignored", st->cancel_pid);
    conn_close(c);
}

static void handle_startup(Conn *c, const uint8_t *body, size_t len)
{
    RqError err = {0};
    WireStartup st;
    const Config *cfg = c->cref->cfg;
    if (wire_decode_startup(body, len, &st, &err) < 0) {
        conn_fail(c, &err);
        return;
    }
    if (st.code == WIRE_CANCEL_CODE) {
        handle_cancel(c, &st);
        return;
    }
    if (st.code == WIRE_SSL_CODE) {
        if (c->ssl) {
            conn_fail_with(c, "08P01", "SSLRequest received on an encrypted connection");
            return;
        }
        if (!c->cref->ssl) {
            buf_append_byte(&c->out, 'N');
            return;
        }
        buf_append_byte(&c->out, 'S');
        conn_flush(c);
        c->ssl = SSL_new(c->cref->ssl);
        SSL_set_bio(c->ssl, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
        SSL_set_accept_state(c->ssl);
        c->state = CONN_TLS_HANDSHAKE;
        return;
    }
    if (st.code == WIRE_GSSENC_CODE) {
        buf_append_byte(&c->out, 'N');
        return;
    }
    int major = st.code >> 16, minor = st.code & 0xFFFF;
    if (major != 3) {
        RqError e = {0};
        rq_error_set(&e, "0A000", "unsupported frontend protocol %d.%d: server supports 3.0 to 3.0",
                     major, minor);
        conn_fail(c, &e);
        return;
    }
    if (cfg->tls_mode == TLS_REQUIRE && !c->ssl && c->h.handle.type != UV_NAMED_PIPE) {
        conn_fail_with(c, "28000", "this server requires TLS: reconnect with sslmode=require");
        return;
    }
    if (c->srv->n_clients >= (size_t)cfg->max_clients) {
        conn_fail_with(c, "53300", "sorry, too many clients already");
        return;
    }
    c->srv->n_clients++;
    c->counted = 1;
    const char *user = NULL, *db = NULL;
    const char *unknown[64];
    size_t n_unknown = 0;
    for (size_t i = 0; i < st.n_params; i++) {
        if (!strcmp(st.keys[i], "user")) user = st.vals[i];
        else if (!strcmp(st.keys[i], "database")) db = st.vals[i];
        else if (!strncmp(st.keys[i], "_pq_.", 5)) unknown[n_unknown++] = st.keys[i];
    }
    if (!user || !*user) {
        conn_fail_with(c, "28000", "no PostgreSQL user name specified in startup packet");
        return;
    }
    /* newer minor versions and protocol extensions we don't know are
     * negotiated down rather than refused, as Postgres does */
    if (minor > 0 || n_unknown > 0)
        wire_negotiate_protocol(&c->out, WIRE_PROTO_30, unknown, n_unknown);
    c->user = xstrdup(user);
    c->database = xstrdup(db && *db ? db : user);
    /* the session is created after authentication but needs these values,
     * which point into a read buffer that will be reused: keep a copy */
    c->startup_copy = xmalloc(len ? len : 1);
    memcpy(c->startup_copy, body, len);
    c->startup = xmalloc(sizeof *c->startup);
    wire_decode_startup(c->startup_copy, len, c->startup, &err);
    c->pid = ++c->srv->next_pid;
    c->key = random_i32();
    begin_auth(c);
}

/* ---- input ---- */

/* Handle every complete message at data; returns bytes consumed. */
static size_t consume(Conn *c, const uint8_t *data, size_t len)
{
    size_t off = 0;
    RqError err = {0};
    while (off < len && !c->closing && !c->waiting) {
        const uint8_t *body;
        size_t blen, total;
        if (c->state == CONN_TLS_HANDSHAKE) {
            /* bytes read before TLS was set up belong to the handshake */
            break;
        }
        if (c->state == CONN_STARTUP) {
            int r = wire_frame_startup(data + off, len - off, &body, &blen, &total, &err);
            if (r == 0) break;
            if (r < 0) {
                conn_fail(c, &err);
                break;
            }
            off += total;
            handle_startup(c, body, blen);
            if (c->state == CONN_TLS_HANDSHAKE && off < len) {
                /* bytes after SSLRequest but before the handshake could be
                 * injected by a man in the middle (CVE-2021-23214) */
                conn_fail_with(c, "08P01", "received unencrypted data after SSL request");
                break;
            }
            continue;
        }
        uint8_t type;
        int r = wire_frame(data + off, len - off, c->cref->cfg->max_message_size,
                           &type, &body, &blen, &total, &err);
        if (r == 0) break;
        if (r < 0) {
            conn_fail(c, &err);
            break;
        }
        if (c->state == CONN_READY) {
            c->in_consume = 1;
            SessStatus st = sess_handle(c->sess, type, body, blen);
            c->in_consume = 0;
            if (st == SESS_RETRY) {
                /* not taken: deliver the same message again on resume */
                c->waiting = 1;
                break;
            }
            off += total;
            if (st == SESS_CLOSE) {
                conn_close(c);
                break;
            }
            if (st == SESS_WAIT) {
                c->waiting = 1;
                break;
            }
        } else {
            off += total;
            handle_auth_message(c, type, body, blen);
        }
    }
    return off;
}

static void conn_process(Conn *c, const uint8_t *data, size_t len)
{
    if (c->waiting) {
        /* the session is busy with an earlier message: keep this for later,
         * and stop reading when a lot piles up */
        buf_append(&c->in, data, len);
        if (c->in.len > WRITE_PAUSE_BYTES && !c->read_paused) {
            c->read_paused = 1;
            uv_read_stop(&c->h.stream);
        }
        return;
    }
    if (c->in.len == 0) {
        size_t used = consume(c, data, len);
        if (!c->closing && used < len) buf_append(&c->in, data + used, len - used);
    } else {
        buf_append(&c->in, data, len);
        size_t used = consume(c, (const uint8_t *)c->in.data, c->in.len);
        if (!c->closing) buf_consume(&c->in, used);
    }
    if (c->sess && !c->closing) sess_batch_end(c->sess);
    /* an idle connection should not keep a large buffer around */
    if (!c->closing && !c->waiting && c->in.len == 0 && c->in.cap > 0) buf_free(&c->in);
}

static void tls_input(Conn *c, const char *data, size_t len)
{
    BIO_write(SSL_get_rbio(c->ssl), data, (int)len);
    if (c->state == CONN_TLS_HANDSHAKE) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            drain_tls(c);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                char *msg = openssl_error();
                log_info("TLS handshake with %s failed: %s", c->peer, msg);
                free(msg);
                conn_close(c);
            }
            return;
        }
        drain_tls(c);
        c->state = CONN_STARTUP;
    }
    for (;;) {
        int n = SSL_read(c->ssl, c->srv->tls_buf, READ_BUF_SIZE);
        if (n <= 0) {
            int e = SSL_get_error(c->ssl, n);
            if (e == SSL_ERROR_ZERO_RETURN) conn_close(c);
            else if (e != SSL_ERROR_WANT_READ) {
                char *msg = openssl_error();
                log_info("TLS error from %s: %s", c->peer, msg);
                free(msg);
                conn_close(c);
            }
            break;
        }
        conn_process(c, (const uint8_t *)c->srv->tls_buf, (size_t)n);
        if (c->closing || !c->ssl) break;
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    Conn *c = h->data;
    (void)suggested;
    *buf = uv_buf_init(c->srv->read_buf, READ_BUF_SIZE);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    Conn *c = stream->data;
    if (nread < 0) {
        if (nread != UV_EOF) log_debug("read from %s: %s", c->peer, uv_strerror((int)nread));
        conn_close(c);
        return;
    }
    if (nread == 0) return;
    if (c->ssl) tls_input(c, buf->base, (size_t)nread);
    else conn_process(c, (const uint8_t *)buf->base, (size_t)nread);
    /* A session that waits (for a plugin, a server connection) sends what
     * it has with its answer: ParseComplete alone in a packet would cost a
     * write, and the client reads nothing before its Sync's answer anyway.
     * What must go out at once (COPY responses, results) is flushed by the
     * session itself. */
    if (!c->closing && !c->waiting) conn_flush(c);
}

static void resume_read(Conn *c)
{
    uv_read_start(&c->h.stream, on_alloc, on_read);
}

static void on_auth_timeout(uv_timer_t *t)
{
    Conn *c = t->data;
    log_info("authentication timeout for %s", c->peer);
    conn_fail_with(c, "08006", "authentication timeout: the client did not complete the handshake");
}

/* ---- accepting ---- */

static char *peer_name(uv_stream_t *s, int is_unix, struct sockaddr_in6 *addr)
{
    if (is_unix) return xstrdup("[local]");
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (uv_tcp_getpeername((uv_tcp_t *)s, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            uv_ip4_name(a, host, sizeof host);
            port = ntohs(a->sin_port);
            memcpy(addr, a, sizeof *a);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            uv_ip6_name(a, host, sizeof host);
            port = ntohs(a->sin6_port);
            *addr = *a;
        }
    }
    return xasprintf("%s:%d", host, port);
}

static void on_connection(uv_stream_t *ls, int status)
{
    Listener *l = ls->data;
    Server *srv = l->srv;
    if (status < 0) {
        log_warn("accept on %s: %s", l->name, uv_strerror(status));
        return;
    }
    Conn *c = xcalloc(1, sizeof *c);
    c->srv = srv;
    c->listener = l;
    if (l->is_unix) uv_pipe_init(srv->loop, &c->h.pipe, 0);
    else uv_tcp_init(srv->loop, &c->h.tcp);
    c->h.handle.data = c;
    uv_timer_init(srv->loop, &c->timer);
    c->timer.data = c;
    c->handles_open = 2;
    c->cref = srv->cur;
    c->cref->refs++;
    c->next = srv->conns;
    if (srv->conns) srv->conns->prev = c;
    srv->conns = c;
    srv->n_conns++;
    if (uv_accept(ls, &c->h.stream) < 0) {
        c->peer = xstrdup("?");
        conn_close(c);
        return;
    }
    if (!l->is_unix) uv_tcp_nodelay(&c->h.tcp, 1);
    c->peer = peer_name(&c->h.stream, l->is_unix, &c->addr);
    if (srv->n_conns > (size_t)c->cref->cfg->max_clients + EXTRA_CONNECTIONS) {
        /* far beyond the limit: don't even read the startup packet */
        conn_fail_with(c, "53300", "sorry, too many clients already");
        return;
    }
    uv_timer_start(&c->timer, on_auth_timeout, (uint64_t)c->cref->cfg->auth_timeout_ms, 0);
    uv_read_start(&c->h.stream, on_alloc, on_read);
}

/* ---- server ---- */

/* Start Python when the configuration names plugins.  A failure is logged
 * and the gateway serves without it: statements routed to a plugin then get
 * an error that says so. */
static void start_plugins(Server *srv, const Config *cfg)
{
    char *err = NULL;
    if (srv->plugins) {
        if (plug_engine_reload(srv->plugins, cfg, &err) < 0) {
            log_error("plugin reload: %s", err ? err : "?");
            free(err);
        }
        return;
    }
    if (cfg->n_plugins == 0) return;
    srv->plugins = plug_engine_new(srv->loop, cfg, cfg->plugin_workers, &err);
    if (!srv->plugins) {
        log_error("cannot start the Python plugin engine: %s", err ? err : "?");
        free(err);
    }
}

Server *server_new(uv_loop_t *loop, Config *cfg, char **errmsg)
{
    Server *srv = xcalloc(1, sizeof *srv);
    srv->loop = loop;
    start_plugins(srv, cfg);
    CfgRef *r = cref_new(loop, srv->plugins, &srv->stats, cfg, errmsg);
    if (!r) {
        if (srv->plugins) plug_engine_free(srv->plugins);
        free(srv);
        return NULL;
    }
    srv->cur = r;
    srv->read_buf = xmalloc(READ_BUF_SIZE);
    srv->tls_buf = xmalloc(READ_BUF_SIZE);
    /* process ids in BackendKeyData start somewhere unpredictable */
    srv->next_pid = (random_i32() & 0x3fffffff) | 0x10000;
    return srv;
}

int server_listen(Server *srv, char **errmsg)
{
    const Config *cfg = srv->cur->cfg;
    srv->listeners = xcalloc(cfg->n_listen ? cfg->n_listen : 1, sizeof *srv->listeners);
    for (size_t i = 0; i < cfg->n_listen; i++) {
        const CfgListen *cl = &cfg->listen[i];
        Listener *l = &srv->listeners[i];
        l->srv = srv;
        int rc;
        if (cl->unix_path) {
            l->is_unix = 1;
            l->name = xstrdup(cl->name ? cl->name : cl->unix_path);
            uv_pipe_init(srv->loop, &l->h.pipe, 0);
            srv->n_listeners++;
            l->h.handle.data = l;
            /* a socket file left by a crashed run would make bind fail */
            unlink(cl->unix_path);
            rc = uv_pipe_bind(&l->h.pipe, cl->unix_path);
        } else {
            struct sockaddr_storage ss;
            l->name = xstrdup(cl->name);
            uv_tcp_init(srv->loop, &l->h.tcp);
            srv->n_listeners++;
            l->h.handle.data = l;
            rc = uv_ip4_addr(cl->host, cl->port, (struct sockaddr_in *)&ss);
            if (rc < 0) rc = uv_ip6_addr(cl->host, cl->port, (struct sockaddr_in6 *)&ss);
            if (rc == 0) rc = uv_tcp_bind(&l->h.tcp, (struct sockaddr *)&ss, 0);
        }
        if (rc == 0) rc = uv_listen(&l->h.stream, 511, on_connection);
        if (rc < 0) {
            *errmsg = xasprintf("cannot listen on %s: %s", l->name, uv_strerror(rc));
            return -1;
        }
        log_info("listening on %s", l->name);
    }
    return 0;
}

int server_reload(Server *srv, Config *cfg, char **errmsg)
{
    start_plugins(srv, cfg);
    CfgRef *r = cref_new(srv->loop, srv->plugins, &srv->stats, cfg, errmsg);
    if (!r) return -1;
    const Config *old = srv->cur->cfg;
    int same = old->n_listen == cfg->n_listen;
    for (size_t i = 0; same && i < cfg->n_listen; i++) {
        const CfgListen *a = &old->listen[i], *b = &cfg->listen[i];
        same = a->port == b->port &&
               !strcmp(a->host ? a->host : "", b->host ? b->host : "") &&
               !strcmp(a->unix_path ? a->unix_path : "", b->unix_path ? b->unix_path : "");
    }
    if (!same) log_warn("reload: listen addresses changed; restart riffq to apply that part");
    cref_release(srv->cur);
    srv->cur = r;
    return 0;
}

static void on_listener_closed(uv_handle_t *h)
{
    (void)h;
}

void server_stop(Server *srv)
{
    if (srv->stopping) return;
    srv->stopping = 1;
    for (size_t i = 0; i < srv->n_listeners; i++) {
        Listener *l = &srv->listeners[i];
        if (!uv_is_closing(&l->h.handle)) uv_close(&l->h.handle, on_listener_closed);
        if (l->is_unix) unlink(l->name);
    }
    while (srv->conns) {
        Conn *c = srv->conns;
        if (c->sess) {
            RqError e = {0};
            rq_error_set(&e, "57P01", "terminating connection due to administrator command");
            conn_fail(c, &e);
        } else {
            conn_close(c);
        }
    }
    /* every session has given its server connection back; closing the
     * pools now lets the loop run dry */
    CfgRef *r = srv->cur;
    for (size_t i = 0; i < r->cfg->n_upstreams; i++) {
        up_pool_free(r->env.pools[i]);
        r->env.pools[i] = NULL;
    }
}

void server_free(Server *srv)
{
    if (!srv) return;
    for (size_t i = 0; i < srv->n_listeners; i++) free(srv->listeners[i].name);
    free(srv->listeners);
    cref_release(srv->cur);
    if (srv->plugins) plug_engine_free(srv->plugins);
    free(srv->read_buf);
    free(srv->tls_buf);
    free(srv);
}
