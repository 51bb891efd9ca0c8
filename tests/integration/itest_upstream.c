/*
 * Upstream connections and pools against a real, throwaway PostgreSQL 15.
 *
 * The unchecked fixture builds one cluster for the whole run: initdb with
 * SCRAM and a password (so libpq really authenticates), a self-signed
 * certificate and ssl=on (so the raw SSL path is exercised), started with
 * pg_ctl on a free port and a private socket directory.  Running as root
 * (as CI does), cluster commands run as the postgres OS user via runuser.
 *
 * Each test owns a loop and plays the session: it acquires, attaches, sends
 * raw protocol bytes built with wire.h and frames the server's reply itself.
 * Every wait is bounded by a guard timer, so a bug fails a test instead of
 * hanging it, and every test ends by freeing the pool and checking that
 * uv_loop_close succeeds (no handle left behind).
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>
#include "riffq/log.h"
#include "riffq/upstream.h"
#include "riffq/wire.h"

#define PGBIN "/usr/lib/postgresql/15/bin"
#define PASSWORD "s3cret-itest"

static char g_dir[64];
static int g_port;
static int g_root;

/* ---- cluster ---- */

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    if (rc != 0) fprintf(stderr, "itest_upstream: command failed (%d): %s\n", rc, cmd);
    return rc;
}

static const char *as_pg(void)
{
    return g_root ? "runuser -u postgres -- " : "";
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        perror("free_port");
        abort();
    }
    close(fd);
    return ntohs(a.sin_port);
}

static void cluster_start(void)
{
    g_root = geteuid() == 0;
    snprintf(g_dir, sizeof g_dir, "/tmp/riffq-itest-up-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(g_dir));
    chmod(g_dir, 0755);
    char pw[128];
    snprintf(pw, sizeof pw, "%s/pwfile", g_dir);
    FILE *f = fopen(pw, "w");
    ck_assert_ptr_nonnull(f);
    fputs(PASSWORD "\n", f);
    fclose(f);
    if (g_root) ck_assert_int_eq(sh("chown -R postgres:postgres %s", g_dir), 0);
    ck_assert_int_eq(sh("%s" PGBIN "/initdb -D %s/data -U postgres -A scram-sha-256 --pwfile=%s "
                        "-E UTF8 --locale=C --no-sync >%s/initdb.log 2>&1",
                        as_pg(), g_dir, pw, g_dir), 0);
    ck_assert_int_eq(sh("openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 1 "
                        "-keyout %s/data/server.key -out %s/data/server.crt >/dev/null 2>&1",
                        g_dir, g_dir), 0);
    if (g_root)
        ck_assert_int_eq(sh("chown postgres:postgres %s/data/server.key %s/data/server.crt",
                            g_dir, g_dir), 0);
    ck_assert_int_eq(sh("chmod 600 %s/data/server.key", g_dir), 0);
    g_port = free_port();
    ck_assert_int_eq(sh("%s" PGBIN "/pg_ctl -D %s/data -l %s/server.log -w -t 60 "
                        "-o \"-p %d -k %s -c listen_addresses=127.0.0.1 -c ssl=on -c fsync=off\" "
                        "start >/dev/null", as_pg(), g_dir, g_dir, g_port, g_dir), 0);
}

static void cluster_stop(void)
{
    if (!g_dir[0]) return;
    sh("%s" PGBIN "/pg_ctl -D %s/data -m immediate -w stop >/dev/null 2>&1", as_pg(), g_dir);
    sh("rm -rf %s", g_dir);
}

static void cluster_restart(void)
{
    ck_assert_int_eq(sh("%s" PGBIN "/pg_ctl -D %s/data -l %s/server.log -w -t 60 -m fast "
                        "restart >/dev/null", as_pg(), g_dir, g_dir), 0);
}

static const char *conninfo(const char *extra)
{
    static char buf[512];
    snprintf(buf, sizeof buf, "host=127.0.0.1 port=%d user=postgres dbname=postgres "
             "password=" PASSWORD " %s", g_port, extra ? extra : "sslmode=disable");
    return buf;
}

/* ---- a loop with a guard ---- */

typedef struct T {
    uv_loop_t loop;
    uv_timer_t guard;
    int guard_fired;
    UpPool *pool;
} T;

static void on_guard(uv_timer_t *t)
{
    ((T *)t->data)->guard_fired = 1;
}

#define RUN_UNTIL(t, cond, ms) do {                                              \
        (t)->guard_fired = 0;                                                    \
        uv_timer_start(&(t)->guard, on_guard, (ms), 0);                          \
        while (!(cond) && !(t)->guard_fired) uv_run(&(t)->loop, UV_RUN_ONCE);    \
        uv_timer_stop(&(t)->guard);                                              \
        ck_assert_msg((cond), "timed out after %d ms waiting for %s", (ms), #cond); \
    } while (0)

/* Run the loop for ms whatever happens. */
static void run_for(T *t, int ms)
{
    t->guard_fired = 0;
    uv_timer_start(&t->guard, on_guard, (uint64_t)ms, 0);
    while (!t->guard_fired) uv_run(&t->loop, UV_RUN_ONCE);
}

static void t_init(T *t, const char *ci, const UpPoolOpts *opts)
{
    memset(t, 0, sizeof *t);
    ck_assert_int_eq(uv_loop_init(&t->loop), 0);
    uv_timer_init(&t->loop, &t->guard);
    t->guard.data = t;
    t->pool = up_pool_new(&t->loop, "itest", ci, opts);
    ck_assert_ptr_nonnull(t->pool);
}

static void t_finish(T *t)
{
    if (t->pool) up_pool_free(t->pool);
    t->pool = NULL;
    uv_close((uv_handle_t *)&t->guard, NULL);
    /* let closes and any cancel request on the thread pool finish */
    for (int i = 0; i < 10000 && uv_run(&t->loop, UV_RUN_NOWAIT); i++) usleep(1000);
    ck_assert_int_eq(uv_loop_close(&t->loop), 0);
}

static UpPoolStats stats(T *t)
{
    UpPoolStats s;
    up_pool_stats(t->pool, &s);
    return s;
}

/* ---- a minimal session ---- */

typedef struct Client {
    T *t;
    int done;                   /* acquire callback ran */
    UpConn *conn;
    char sqlstate[6];           /* of the acquire error or of on_error */
    char message[512];
    int broken;                 /* on_error ran */
    Buf in;                     /* the server's bytes since the last query */
    size_t scan;
    char status;                /* ReadyForQuery status seen, 0 = none yet */
    int n_ready;
    int pause_each;             /* pause on every chunk, resume from a timer */
    int pauses;
    uv_timer_t resume;
    int slot_freed;
} Client;

static void on_acquire(void *ud, UpConn *conn, RqError *err)
{
    Client *cl = ud;
    cl->done = 1;
    cl->conn = conn;
    if (err) {
        snprintf(cl->sqlstate, sizeof cl->sqlstate, "%s", err->sqlstate);
        snprintf(cl->message, sizeof cl->message, "%s", err->message);
    }
}

static void on_resume(uv_timer_t *t)
{
    Client *cl = t->data;
    up_conn_resume(cl->conn);
}

static void on_data(void *ud, const uint8_t *data, size_t len)
{
    Client *cl = ud;
    ck_assert_uint_gt(len, 0);
    buf_append(&cl->in, data, len);
    for (;;) {
        uint8_t type;
        const uint8_t *body;
        size_t blen, total;
        RqError e = {0};
        int r = wire_frame((const uint8_t *)cl->in.data + cl->scan, cl->in.len - cl->scan,
                           64u << 20, &type, &body, &blen, &total, &e);
        ck_assert_int_ge(r, 0);
        if (r == 0) break;
        cl->scan += total;
        if (type == 'Z') {
            cl->status = (char)body[0];
            cl->n_ready++;
        }
    }
    if (cl->pause_each && !cl->status) {
        up_conn_pause(cl->conn);
        cl->pauses++;
        uv_timer_start(&cl->resume, on_resume, 1, 0);
    }
}

static void on_conn_error(void *ud, RqError *err)
{
    Client *cl = ud;
    cl->broken = 1;
    snprintf(cl->sqlstate, sizeof cl->sqlstate, "%s", err->sqlstate);
    snprintf(cl->message, sizeof cl->message, "%s", err->message);
}

static void client_init(Client *cl, T *t)
{
    memset(cl, 0, sizeof *cl);
    cl->t = t;
    buf_init(&cl->in);
    uv_timer_init(&t->loop, &cl->resume);
    cl->resume.data = cl;
}

static void client_free(Client *cl)
{
    buf_free(&cl->in);
    uv_close((uv_handle_t *)&cl->resume, NULL);
}

static UpWait *acquire(Client *cl, const char *user, const char *db)
{
    cl->done = 0;
    cl->conn = NULL;
    cl->sqlstate[0] = cl->message[0] = 0;
    return up_pool_acquire(cl->t->pool, user, db, on_acquire, cl);
}

static void acquire_ok(Client *cl)
{
    acquire(cl, "postgres", "postgres");
    RUN_UNTIL(cl->t, cl->done, 10000);
    ck_assert_msg(cl->conn != NULL, "acquire failed: %s %s", cl->sqlstate, cl->message);
}

static void attach(Client *cl)
{
    UpConnCb cb = { .ud = cl, .on_data = on_data, .on_error = on_conn_error };
    up_conn_attach(cl->conn, &cb);
}

static void send_query(Client *cl, const char *sql)
{
    Buf b;
    buf_init(&b);
    size_t m = wire_begin(&b, 'Q');
    buf_append_cstr(&b, sql);
    wire_end(&b, m);
    buf_reset(&cl->in);
    cl->scan = 0;
    cl->status = 0;
    cl->n_ready = 0;
    up_conn_send(cl->conn, b.data, b.len);
    buf_free(&b);
}

typedef struct Reply {
    char first_type;
    int n_rows;
    char *value;                /* first column of the last row (malloc'd), NULL = none */
    size_t value_len;
    char tag[64];
    char sqlstate[6];
    char status;
} Reply;

static Reply parse_reply(const Client *cl)
{
    Reply r = {0};
    size_t off = 0;
    for (;;) {
        uint8_t type;
        const uint8_t *body;
        size_t blen, total;
        RqError e = {0};
        if (wire_frame((const uint8_t *)cl->in.data + off, cl->in.len - off, 64u << 20,
                       &type, &body, &blen, &total, &e) != 1) break;
        off += total;
        if (!r.first_type) r.first_type = (char)type;
        WireReader rd;
        wire_reader_init(&rd, body, blen);
        if (type == 'D') {
            r.n_rows++;
            if (wire_get_i16(&rd) >= 1) {
                int32_t len = wire_get_i32(&rd);
                free(r.value);
                r.value = NULL;
                if (len >= 0) {
                    const uint8_t *v = wire_get_bytes(&rd, (size_t)len);
                    ck_assert_ptr_nonnull(v);
                    r.value = strndup((const char *)v, (size_t)len);
                    r.value_len = (size_t)len;
                }
            }
        } else if (type == 'C') {
            snprintf(r.tag, sizeof r.tag, "%s", wire_get_str(&rd));
        } else if (type == 'E') {
            for (uint8_t f; !rd.err && (f = wire_get_u8(&rd)) != 0;) {
                const char *v = wire_get_str(&rd);
                if (f == 'C') snprintf(r.sqlstate, sizeof r.sqlstate, "%s", v);
            }
        } else if (type == 'Z') {
            r.status = (char)body[0];
        }
    }
    return r;
}

/* Send sql and wait for ReadyForQuery. */
static Reply query(Client *cl, const char *sql)
{
    send_query(cl, sql);
    RUN_UNTIL(cl->t, cl->status || cl->broken, 10000);
    ck_assert_msg(!cl->broken, "connection broke: %s", cl->message);
    return parse_reply(cl);
}

static void query_value(Client *cl, const char *sql, const char *expect)
{
    Reply r = query(cl, sql);
    ck_assert_msg(r.sqlstate[0] == 0, "%s failed: %s", sql, r.sqlstate);
    ck_assert_ptr_nonnull(r.value);
    ck_assert_str_eq(r.value, expect);
    ck_assert_int_eq(r.status, 'I');
    free(r.value);
}

static UpPoolOpts opts_default(void)
{
    UpPoolOpts o = { .pool_size = 4, .wait_timeout_ms = 5000, .connect_timeout_ms = 5000 };
    return o;
}

/* ---- tests ---- */

START_TEST(test_query_roundtrip)
{
    T t;
    UpPoolOpts o = opts_default();
    t_init(&t, conninfo(NULL), &o);
    Client cl;
    client_init(&cl, &t);
    acquire_ok(&cl);
    ck_assert_int_gt(up_conn_backend_pid(cl.conn), 0);
    ck_assert_int_eq(up_conn_tls(cl.conn), 0);
    ck_assert_ptr_nonnull(up_conn_parameter(cl.conn, "server_version"));
    ck_assert_int_eq(strncmp(up_conn_parameter(cl.conn, "server_version"), "15", 2), 0);
    ck_assert_str_eq(up_conn_parameter(cl.conn, "integer_datetimes"), "on");
    ck_assert_str_eq(up_conn_parameter(cl.conn, "server_encoding"), "UTF8");
    ck_assert_str_eq(up_conn_parameter(cl.conn, "session_authorization"), "postgres");
    ck_assert_ptr_null(up_conn_parameter(cl.conn, "no_such_parameter"));
    attach(&cl);
    Reply r = query(&cl, "SELECT 41 + 1 AS answer");
    /* libpq left nothing of its own behind: our first raw byte is the
     * RowDescription answering our query (see conn.c) */
    ck_assert_int_eq(r.first_type, 'T');
    ck_assert_int_eq(r.n_rows, 1);
    ck_assert_str_eq(r.value, "42");
    ck_assert_str_eq(r.tag, "SELECT 1");
    ck_assert_int_eq(r.status, 'I');
    free(r.value);
    UpPoolStats s = stats(&t);
    ck_assert_int_eq(s.active, 1);
    ck_assert_int_eq((int)s.total_opened, 1);
    up_pool_release(t.pool, cl.conn, 1);
    s = stats(&t);
    ck_assert_int_eq(s.active, 0);
    ck_assert_int_eq(s.idle, 1);
    client_free(&cl);
    t_finish(&t);
}
END_TEST

START_TEST(test_reuse_same_backend)
{
    T t;
    UpPoolOpts o = opts_default();
    t_init(&t, conninfo(NULL), &o);
    Client cl;
    client_init(&cl, &t);
    acquire_ok(&cl);
    int pid = up_conn_backend_pid(cl.conn);
    up_pool_release(t.pool, cl.conn, 1);
    /* an idle connection is handed out synchronously */
    ck_assert_ptr_null(acquire(&cl, "postgres", "postgres"));
    ck_assert_int_eq(cl.done, 1);
    ck_assert_ptr_nonnull(cl.conn);
    ck_assert_int_eq(up_conn_backend_pid(cl.conn), pid);
    attach(&cl);
    char want[32];
    snprintf(want, sizeof want, "%d", pid);
    query_value(&cl, "SELECT pg_backend_pid()::text", want);
    up_pool_release(t.pool, cl.conn, 1);
    UpPoolStats s = stats(&t);
    ck_assert_int_eq((int)s.total_opened, 1);
    ck_assert_int_eq((int)s.total_acquired, 2);
    client_free(&cl);
    t_finish(&t);
}
END_TEST

START_TEST(test_wait_queue)
{
    T t;
    UpPoolOpts o = opts_default();
    o.pool_size = 2;
    t_init(&t, conninfo(NULL), &o);
    Client a, b, c;
    client_init(&a, &t);
    client_init(&b, &t);
    client_init(&c, &t);
    acquire(&a, "postgres", "postgres");
    acquire(&b, "postgres", "postgres");
    UpWait *wc = acquire(&c, "postgres", "postgres");
    ck_assert_ptr_nonnull(wc);
    RUN_UNTIL(&t, a.done && b.done, 10000);
    ck_assert_ptr_nonnull(a.conn);
    ck_assert_ptr_nonnull(b.conn);
    ck_assert_ptr_ne(a.conn, b.conn);
    run_for(&t, 100);
    ck_assert_int_eq(c.done, 0);
    UpPoolStats s = stats(&t);
    ck_assert_int_eq(s.active, 2);
    ck_assert_int_eq(s.waiting, 1);
    ck_assert_int_eq(s.connecting, 0);
    int pid_b = up_conn_backend_pid(b.conn);
    up_pool_release(t.pool, b.conn, 1);
    ck_assert_int_eq(c.done, 1);
    ck_assert_ptr_nonnull(c.conn);
    ck_assert_int_eq(up_conn_backend_pid(c.conn), pid_b);
    s = stats(&t);
    ck_assert_int_eq(s.waiting, 0);
    ck_assert_int_eq(s.active, 2);
    ck_assert_int_eq((int)s.total_opened, 2);
    attach(&c);
    query_value(&c, "SELECT 'served after a release'", "served after a release");
    int pid_a = up_conn_backend_pid(a.conn);
    up_pool_release(t.pool, c.conn, 1);
    up_pool_release(t.pool, a.conn, 1);
    ck_assert_int_eq(stats(&t).idle, 2);
    /* LIFO: the most recently released backend is handed out first */
    ck_assert_ptr_null(acquire(&a, "postgres", "postgres"));
    ck_assert_int_eq(up_conn_backend_pid(a.conn), pid_a);
    up_pool_release(t.pool, a.conn, 1);
    client_free(&a);
    client_free(&b);
    client_free(&c);
    t_finish(&t);
}
END_TEST

/* A pool of one connection with a 300 ms wait timeout, held by a. */
static void t_init_held(T *t, Client *a)
{
    UpPoolOpts o = opts_default();
    o.pool_size = 1;
    o.min_pool_size = 1;        /* connected before anyone waits: slow hosts */
    o.wait_timeout_ms = 300;
    t_init(t, conninfo(NULL), &o);
    client_init(a, t);
    RUN_UNTIL(t, stats(t).idle == 1, 10000);
    acquire_ok(a);
}

START_TEST(test_wait_timeout)
{
    T t;
    Client a, b;
    t_init_held(&t, &a);
    client_init(&b, &t);
    uint64_t t0 = uv_hrtime();
    ck_assert_ptr_nonnull(acquire(&b, "postgres", "postgres"));
    RUN_UNTIL(&t, b.done, 5000);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    ck_assert_ptr_null(b.conn);
    ck_assert_str_eq(b.sqlstate, "53300");
    ck_assert_msg(strstr(b.message, "pool \"itest\"") != NULL, "message: %s", b.message);
    ck_assert_uint_ge(ms, 250);
    ck_assert_int_eq(stats(&t).waiting, 0);
    up_pool_release(t.pool, a.conn, 1);
    client_free(&a);
    client_free(&b);
    t_finish(&t);
}
END_TEST

/* Waiters share one timer per key: each must still time out on its own
 * deadline, not its neighbour's, and one served in time must not fail. */
START_TEST(test_wait_timeout_staggered)
{
    T t;
    Client a, b, c, d;
    t_init_held(&t, &a);
    client_init(&b, &t);
    client_init(&c, &t);
    client_init(&d, &t);
    uint64_t t0 = uv_hrtime();
    ck_assert_ptr_nonnull(acquire(&b, "postgres", "postgres"));
    run_for(&t, 150);
    ck_assert_int_eq(b.done, 0);
    uint64_t t1 = uv_hrtime();
    ck_assert_ptr_nonnull(acquire(&c, "postgres", "postgres"));
    RUN_UNTIL(&t, b.done, 5000);
    ck_assert_str_eq(b.sqlstate, "53300");
    ck_assert_uint_ge((uv_hrtime() - t0) / 1000000, 250);
    ck_assert_int_eq(c.done, 0);            /* its deadline is later */
    RUN_UNTIL(&t, c.done, 5000);
    ck_assert_str_eq(c.sqlstate, "53300");
    ck_assert_uint_ge((uv_hrtime() - t1) / 1000000, 250);
    /* served before its deadline: the callback ran once, with the conn */
    ck_assert_ptr_nonnull(acquire(&d, "postgres", "postgres"));
    up_pool_release(t.pool, a.conn, 1);
    ck_assert_int_eq(d.done, 1);
    ck_assert_ptr_nonnull(d.conn);
    run_for(&t, 400);
    ck_assert_int_eq(d.done, 1);
    ck_assert_ptr_nonnull(d.conn);
    ck_assert_int_eq(stats(&t).waiting, 0);
    up_pool_release(t.pool, d.conn, 1);
    client_free(&a);
    client_free(&b);
    client_free(&c);
    client_free(&d);
    t_finish(&t);
}
END_TEST

START_TEST(test_wait_cancel)
{
    T t;
    UpPoolOpts o = opts_default();
    o.pool_size = 1;
    t_init(&t, conninfo(NULL), &o);
    Client a, b;
    client_init(&a, &t);
    client_init(&b, &t);
    acquire_ok(&a);
    UpWait *w = acquire(&b, "postgres", "postgres");
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(stats(&t).waiting, 1);
    up_wait_cancel(w);
    ck_assert_int_eq(stats(&t).waiting, 0);
    up_pool_release(t.pool, a.conn, 1);
    run_for(&t, 50);
    ck_assert_int_eq(b.done, 0);
    ck_assert_int_eq(stats(&t).idle, 1);
    client_free(&a);
    client_free(&b);
    t_finish(&t);
}
END_TEST

START_TEST(test_connect_refused)
{
    char ci[256];
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable",
             free_port());
    T t;
    UpPoolOpts o = opts_default();
    t_init(&t, ci, &o);
    Client cl;
    client_init(&cl, &t);
    acquire(&cl, "postgres", "postgres");
    RUN_UNTIL(&t, cl.done, 10000);
    ck_assert_ptr_null(cl.conn);
    ck_assert_str_eq(cl.sqlstate, "08006");
    ck_assert_msg(strstr(cl.message, "connection to server at \"127.0.0.1\"") == cl.message &&
                  strstr(cl.message, "failed: Connection refused") != NULL, "message: %s", cl.message);
    ck_assert_msg(strchr(cl.message, '\n') == NULL, "untrimmed: %s", cl.message);
    ck_assert_int_eq((int)stats(&t).total_failed, 1);
    client_free(&cl);
    t_finish(&t);
}
END_TEST

START_TEST(test_wrong_password)
{
    char ci[256];
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d user=postgres dbname=postgres "
             "password=wrong sslmode=disable", g_port);
    T t;
    UpPoolOpts o = opts_default();
    t_init(&t, ci, &o);
    Client cl;
    client_init(&cl, &t);
    acquire(&cl, "postgres", "postgres");
    RUN_UNTIL(&t, cl.done, 10000);
    ck_assert_ptr_null(cl.conn);
    ck_assert_str_eq(cl.sqlstate, "28P01");
    ck_assert_msg(strstr(cl.message, "password authentication failed for user \"postgres\"") != NULL,
                  "message: %s", cl.message);
    ck_assert_msg(strncmp(cl.message, "password authentication failed", 30) == 0,
                  "not the server's own message: %s", cl.message);
    client_free(&cl);
    t_finish(&t);
}
END_TEST

START_TEST(test_no_password)
{
    char ci[256];
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d user=postgres dbname=postgres "
             "passfile=/nonexistent sslmode=disable", g_port);
    T t;
    UpPoolOpts o = opts_default();
    t_init(&t, ci, &o);
    Client cl;
    client_init(&cl, &t);
    acquire(&cl, "postgres", "postgres");
    RUN_UNTIL(&t, cl.done, 10000);
    ck_assert_ptr_null(cl.conn);
    ck_assert_str_eq(cl.sqlstate, "28P01");
    ck_assert_msg(strstr(cl.message, "no password supplied") != NULL, "message: %s", cl.message);
    client_free(&cl);
    t_finish(&t);
}
END_TEST

START_TEST(test_unknown_database)
{
    char ci[256];
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d user=postgres dbname=no_such_db "
             "password=" PASSWORD " sslmode=disable", g_port);
    T t;
    UpPoolOpts o = opts_default();
    t_init(&t, ci, &o);
    Client cl;
    client_init(&cl, &t);
    acquire(&cl, "postgres", "postgres");
    RUN_UNTIL(&t, cl.done, 10000);
    ck_assert_ptr_null(cl.conn);
    ck_assert_str_eq(cl.sqlstate, "3D000");
    ck_assert_msg(strstr(cl.message, "database \"no_such_db\" does not exist") != NULL,
                  "message: %s", cl.message);
    client_free(&cl);
    t_finish(&t);
}
END_TEST

/* A server that accepts TCP but never answers the startup packet. */
START_TEST(test_connect_timeout)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(fd, 8), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    char ci[256];
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable",
             ntohs(a.sin_port));
    T t;
    UpPoolOpts o = opts_default();
    o.connect_timeout_ms = 300;
    t_init(&t, ci, &o);
    Client cl;
    client_init(&cl, &t);
    uint64_t t0 = uv_hrtime();
    acquire(&cl, "postgres", "postgres");
    RUN_UNTIL(&t, cl.done, 5000);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    ck_assert_ptr_null(cl.conn);
    ck_assert_str_eq(cl.sqlstate, "08006");
    ck_assert_msg(strstr(cl.message, "timeout expired") != NULL, "message: %s", cl.message);
    ck_assert_uint_ge(ms, 250);
    ck_assert_uint_lt(ms, 3000);
    close(fd);
    client_free(&cl);
    t_finish(&t);
}
END_TEST

/* libpq tries the first host, gets refused, and moves to a new socket:
 * the poll handle must follow it. */
START_TEST(test_multi_host_socket_change)
{
    char ci[256];
    snprintf(ci, sizeof ci, "host=127.0.0.1,127.0.0.1 port=%d,%d user=postgres dbname=postgres "
             "password=" PASSWORD " sslmode=disable", free_port(), g_port);
    T t;
    UpPoolOpts o = opts_default();
    t_init(&t, ci, &o);
    Client cl;
    client_init(&cl, &t);
    acquire_ok(&cl);
    attach(&cl);
    char want[16];
    snprintf(want, sizeof want, "%d", g_port);
    query_value(&cl, "SELECT current_setting('port')", want);
    up_pool_release(t.pool, cl.conn, 1);
    client_free(&cl);
    t_finish(&t);
}
END_TEST

typedef struct CancelCtx {
    UpConn *conn;
} CancelCtx;

static void on_cancel_timer(uv_timer_t *t)
{
    up_conn_cancel(((CancelCtx *)t->data)->conn);
}

START_TEST(test_cancel)
{
    T t;
    UpPoolOpts o = opts_default();
    t_init(&t, conninfo(NULL), &o);
    Client cl;
    client_init(&cl, &t);
    acquire_ok(&cl);
    attach(&cl);
    CancelCtx cx = { cl.conn };
    uv_timer_t timer;
    uv_timer_init(&t.loop, &timer);
    timer.data = &cx;
    uint64_t t0 = uv_hrtime();
    send_query(&cl, "SELECT pg_sleep(10)");
    uv_timer_start(&timer, on_cancel_timer, 300, 0);
    RUN_UNTIL(&t, cl.status || cl.broken, 8000);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    Reply r = parse_reply(&cl);
    ck_assert_str_eq(r.sqlstate, "57014");
    ck_assert_int_eq(r.status, 'I');
    ck_assert_uint_lt(ms, 5000);
    /* still usable after the cancel */
    query_value(&cl, "SELECT 'after cancel'", "after cancel");
    up_pool_release(t.pool, cl.conn, 1);
    uv_close((uv_handle_t *)&timer, NULL);
    client_free(&cl);
    t_finish(&t);
}
END_TEST

START_TEST(test_active_conn_terminated)
{
    T t;
    UpPoolOpts o = opts_default();
    t_init(&t, conninfo(NULL), &o);
    Client a, b;
    client_init(&a, &t);
    client_init(&b, &t);
    acquire_ok(&a);
    acquire_ok(&b);
    attach(&a);
    attach(&b);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)::text", up_conn_backend_pid(a.conn));
    query_value(&b, sql, "true");
    /* the FATAL ErrorResponse arrives as data, then the EOF as an error */
    RUN_UNTIL(&t, a.broken, 5000);
    ck_assert_str_eq(a.sqlstate, "08006");
    ck_assert_str_eq(a.message, "server closed the connection unexpectedly");
    Reply r = parse_reply(&a);
    ck_assert_str_eq(r.sqlstate, "57P01");
    free(r.value);
    up_pool_release(t.pool, a.conn, 1);     /* broken: closed whatever we say */
    UpPoolStats s = stats(&t);
    ck_assert_int_eq(s.idle, 0);
    ck_assert_int_eq(s.active, 1);
    up_pool_release(t.pool, b.conn, 1);
    ck_assert_int_eq(stats(&t).idle, 1);
    client_free(&a);
    client_free(&b);
    t_finish(&t);
}
END_TEST

START_TEST(test_idle_conn_terminated)
{
    T t;
    UpPoolOpts o = opts_default();
    t_init(&t, conninfo(NULL), &o);
    Client a, b;
    client_init(&a, &t);
    client_init(&b, &t);
    acquire_ok(&a);
    acquire_ok(&b);
    int pid_a = up_conn_backend_pid(a.conn);
    up_pool_release(t.pool, a.conn, 1);
    ck_assert_int_eq(stats(&t).idle, 1);
    attach(&b);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)::text", pid_a);
    query_value(&b, sql, "true");
    RUN_UNTIL(&t, stats(&t).idle == 0, 5000);
    up_pool_release(t.pool, b.conn, 1);
    acquire_ok(&a);
    ck_assert_int_ne(up_conn_backend_pid(a.conn), pid_a);
    up_pool_release(t.pool, a.conn, 1);
    client_free(&a);
    client_free(&b);
    t_finish(&t);
}
END_TEST

START_TEST(test_upstream_restart)
{
    T t;
    UpPoolOpts o = opts_default();
    t_init(&t, conninfo(NULL), &o);
    Client cl;
    client_init(&cl, &t);
    acquire_ok(&cl);
    int pid = up_conn_backend_pid(cl.conn);
    up_pool_release(t.pool, cl.conn, 1);
    ck_assert_int_eq(stats(&t).idle, 1);
    cluster_restart();      /* blocks the loop; the server closes our idle conn meanwhile */
    RUN_UNTIL(&t, stats(&t).idle == 0, 10000);
    acquire_ok(&cl);
    ck_assert_int_ne(up_conn_backend_pid(cl.conn), pid);
    attach(&cl);
    query_value(&cl, "SELECT 'fresh after restart'", "fresh after restart");
    up_pool_release(t.pool, cl.conn, 1);
    client_free(&cl);
    t_finish(&t);
}
END_TEST

static void count_slot_free(void *p)
{
    (*(int *)p)++;
}

START_TEST(test_reset_query)
{
    T t;
    UpPoolOpts o = opts_default();
    o.reset_query = "DISCARD ALL";
    t_init(&t, conninfo(NULL), &o);
    Client cl;
    client_init(&cl, &t);
    acquire_ok(&cl);
    int pid = up_conn_backend_pid(cl.conn);
    char orig[64];
    snprintf(orig, sizeof orig, "%s", up_conn_parameter(cl.conn, "application_name"));
    ck_assert_str_eq(orig, "riffq");        /* fallback_application_name */
    up_conn_set_slot(cl.conn, &cl.slot_freed, count_slot_free);
    ck_assert_ptr_eq(up_conn_slot(cl.conn), &cl.slot_freed);
    attach(&cl);
    Reply r = query(&cl, "SET application_name = 'changed-by-test'");
    ck_assert_str_eq(r.tag, "SET");
    query_value(&cl, "SHOW application_name", "changed-by-test");
    up_pool_release(t.pool, cl.conn, 1);
    UpPoolStats s = stats(&t);
    ck_assert_int_eq(s.active, 1);          /* resetting */
    ck_assert_int_eq(s.idle, 0);
    RUN_UNTIL(&t, stats(&t).idle == 1, 5000);
    ck_assert_int_eq(cl.slot_freed, 1);
    ck_assert_ptr_null(acquire(&cl, "postgres", "postgres"));
    ck_assert_int_eq(up_conn_backend_pid(cl.conn), pid);
    ck_assert_ptr_null(up_conn_slot(cl.conn));
    /* DISCARD ALL's ParameterStatus updated what we report */
    ck_assert_str_eq(up_conn_parameter(cl.conn, "application_name"), orig);
    attach(&cl);
    query_value(&cl, "SHOW application_name", orig);
    up_pool_release(t.pool, cl.conn, 1);
    client_free(&cl);
    t_finish(&t);
}
END_TEST

START_TEST(test_reset_fails_in_transaction)
{
    T t;
    UpPoolOpts o = opts_default();
    o.reset_query = "DISCARD ALL";
    t_init(&t, conninfo(NULL), &o);
    Client cl;
    client_init(&cl, &t);
    acquire_ok(&cl);
    int pid = up_conn_backend_pid(cl.conn);
    attach(&cl);
    Reply r = query(&cl, "BEGIN");
    ck_assert_int_eq(r.status, 'T');
    up_pool_release(t.pool, cl.conn, 1);    /* a caller bug the reset catches */
    RUN_UNTIL(&t, stats(&t).active == 0, 5000);
    ck_assert_int_eq(stats(&t).idle, 0);
    acquire_ok(&cl);
    ck_assert_int_ne(up_conn_backend_pid(cl.conn), pid);
    up_pool_release(t.pool, cl.conn, 0);    /* not reusable: closed */
    ck_assert_int_eq(stats(&t).idle, 0);
    client_free(&cl);
    t_finish(&t);
}
END_TEST

static void big_roundtrip(const char *ci, int expect_tls, int pause_each)
{
    T t;
    UpPoolOpts o = opts_default();
    t_init(&t, ci, &o);
    Client cl;
    client_init(&cl, &t);
    acquire_ok(&cl);
    ck_assert_int_eq(up_conn_tls(cl.conn), expect_tls);
    attach(&cl);
    query_value(&cl, "SELECT coalesce((SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()), 'none')",
                expect_tls ? "true" : "false");
    /* a result far larger than one read or one TLS record */
    cl.pause_each = pause_each;
    Reply r = query(&cl, "SELECT repeat('x', 3000000)");
    ck_assert_int_eq(r.status, 'I');
    ck_assert_uint_eq(r.value_len, 3000000);
    ck_assert_int_eq(r.value[0], 'x');
    ck_assert_int_eq(r.value[2999999], 'x');
    free(r.value);
    if (pause_each) ck_assert_int_gt(cl.pauses, 10);
    cl.pause_each = 0;
    /* A query far larger than the socket buffer, behind one that keeps the
     * server from reading: the socket fills and writing must wait for
     * UV_WRITABLE (or TLS WANT_WRITE) and resume. */
    size_t n = 16000000;
    Buf q;
    buf_init(&q);
    size_t m = wire_begin(&q, 'Q');
    buf_append_cstr(&q, "SELECT pg_sleep(0.3)");
    wire_end(&q, m);
    m = wire_begin(&q, 'Q');
    buf_append_str(&q, "SELECT length('");
    buf_reserve(&q, n);
    memset(q.data + q.len, 'y', n);
    q.len += n;
    buf_append_cstr(&q, "')::text");
    wire_end(&q, m);
    buf_reset(&cl.in);
    cl.scan = 0;
    cl.n_ready = 0;
    cl.status = 0;
    up_conn_send(cl.conn, q.data, q.len);
    buf_free(&q);
    RUN_UNTIL(&t, cl.n_ready == 2 || cl.broken, 20000);
    r = parse_reply(&cl);
    ck_assert_str_eq(r.sqlstate, "");
    ck_assert_int_eq(r.n_rows, 2);
    ck_assert_str_eq(r.value, "16000000");
    free(r.value);
    query_value(&cl, "SELECT 'in sync'", "in sync");
    up_pool_release(t.pool, cl.conn, 1);
    client_free(&cl);
    t_finish(&t);
}

START_TEST(test_large_plain)
{
    big_roundtrip(conninfo(NULL), 0, 0);
}
END_TEST

START_TEST(test_tls_roundtrip)
{
    big_roundtrip(conninfo("sslmode=require"), 1, 0);
}
END_TEST

START_TEST(test_tls_pause_resume)
{
    big_roundtrip(conninfo("sslmode=require"), 1, 1);
}
END_TEST

START_TEST(test_tls_idle_restart)
{
    T t;
    UpPoolOpts o = opts_default();
    t_init(&t, conninfo("sslmode=require"), &o);
    Client cl;
    client_init(&cl, &t);
    acquire_ok(&cl);
    int pid = up_conn_backend_pid(cl.conn);
    attach(&cl);
    Client k;
    client_init(&k, &t);
    acquire_ok(&k);
    attach(&k);
    up_pool_release(t.pool, cl.conn, 1);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)::text", pid);
    query_value(&k, sql, "true");
    RUN_UNTIL(&t, stats(&t).idle == 0, 5000);
    up_pool_release(t.pool, k.conn, 1);
    client_free(&cl);
    client_free(&k);
    t_finish(&t);
}
END_TEST

START_TEST(test_keyed_pools)
{
    char ci[256];
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d password=" PASSWORD " sslmode=disable", g_port);
    T t;
    UpPoolOpts o = opts_default();
    o.pool_size = 1;
    t_init(&t, ci, &o);
    Client a, b;
    client_init(&a, &t);
    client_init(&b, &t);
    acquire(&a, "postgres", "postgres");
    acquire(&b, "postgres", "template1");
    /* pool_size is per key: both get a connection */
    RUN_UNTIL(&t, a.done && b.done, 10000);
    ck_assert_ptr_nonnull(a.conn);
    ck_assert_ptr_nonnull(b.conn);
    attach(&a);
    attach(&b);
    query_value(&a, "SELECT current_database()::text", "postgres");
    query_value(&b, "SELECT current_database()::text", "template1");
    int pid_b = up_conn_backend_pid(b.conn);
    up_pool_release(t.pool, a.conn, 1);
    up_pool_release(t.pool, b.conn, 1);
    ck_assert_ptr_null(acquire(&b, "postgres", "template1"));
    ck_assert_int_eq(up_conn_backend_pid(b.conn), pid_b);
    up_pool_release(t.pool, b.conn, 1);
    ck_assert_int_eq(stats(&t).idle, 2);
    /* a user the server does not know: the key's own error */
    Client c;
    client_init(&c, &t);
    acquire(&c, "nobody", "postgres");
    RUN_UNTIL(&t, c.done, 10000);
    ck_assert_ptr_null(c.conn);
    ck_assert_str_eq(c.sqlstate, "28P01");  /* SCRAM hides whether the role exists */
    client_free(&a);
    client_free(&b);
    client_free(&c);
    t_finish(&t);
}
END_TEST

START_TEST(test_min_pool_size)
{
    T t;
    UpPoolOpts o = opts_default();
    o.min_pool_size = 2;
    t_init(&t, conninfo(NULL), &o);
    RUN_UNTIL(&t, stats(&t).idle == 2, 10000);
    ck_assert_int_eq((int)stats(&t).total_opened, 2);
    t_finish(&t);
}
END_TEST

START_TEST(test_idle_timeout)
{
    T t;
    UpPoolOpts o = opts_default();
    o.idle_timeout_ms = 200;
    t_init(&t, conninfo(NULL), &o);
    Client cl;
    client_init(&cl, &t);
    acquire_ok(&cl);
    up_pool_release(t.pool, cl.conn, 1);
    ck_assert_int_eq(stats(&t).idle, 1);
    RUN_UNTIL(&t, stats(&t).idle == 0, 3000);
    client_free(&cl);
    t_finish(&t);
}
END_TEST

START_TEST(test_lifetime)
{
    T t;
    UpPoolOpts o = opts_default();
    o.lifetime_ms = 200;
    t_init(&t, conninfo(NULL), &o);
    Client cl;
    client_init(&cl, &t);
    acquire_ok(&cl);
    run_for(&t, 300);
    up_pool_release(t.pool, cl.conn, 1);   /* too old: closed, not kept */
    ck_assert_int_eq(stats(&t).idle, 0);
    client_free(&cl);
    t_finish(&t);
}
END_TEST

START_TEST(test_free_with_active_and_waiting)
{
    T t;
    UpPoolOpts o = opts_default();
    o.pool_size = 1;
    t_init(&t, conninfo(NULL), &o);
    Client a, b;
    client_init(&a, &t);
    client_init(&b, &t);
    acquire_ok(&a);
    attach(&a);
    ck_assert_ptr_nonnull(acquire(&b, "postgres", "postgres"));
    UpPool *p = t.pool;
    up_pool_free(p);
    t.pool = NULL;
    ck_assert_int_eq(b.done, 1);
    ck_assert_str_eq(b.sqlstate, "57P01");
    /* the active connection still works until it is given back */
    query_value(&a, "SELECT 'still here'", "still here");
    up_pool_release(p, a.conn, 1);          /* frees the pool */
    client_free(&a);
    client_free(&b);
    t_finish(&t);
}
END_TEST

START_TEST(test_bad_conninfo)
{
    RqError err = {0};
    ck_assert_int_eq(up_conninfo_check("host=x nonsense_option=1", &err), -1);
    ck_assert_str_eq(err.sqlstate, "22023");
    ck_assert_msg(strstr(err.message, "nonsense_option") != NULL, "%s", err.message);
    rq_error_free(&err);
    ck_assert_int_eq(up_conninfo_check("host=x port=5432", &err), 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    UpPoolOpts o = opts_default();
    ck_assert_ptr_null(up_pool_new(&loop, "bad", "host=x nonsense_option=1", &o));
    ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("upstream");
    TCase *tc = tcase_create("pool");
    tcase_set_timeout(tc, 60);
    tcase_add_unchecked_fixture(tc, cluster_start, cluster_stop);
    tcase_add_test(tc, test_query_roundtrip);
    tcase_add_test(tc, test_reuse_same_backend);
    tcase_add_test(tc, test_wait_queue);
    tcase_add_test(tc, test_wait_timeout);
    tcase_add_test(tc, test_wait_timeout_staggered);
    tcase_add_test(tc, test_wait_cancel);
    tcase_add_test(tc, test_connect_refused);
    tcase_add_test(tc, test_wrong_password);
    tcase_add_test(tc, test_no_password);
    tcase_add_test(tc, test_unknown_database);
    tcase_add_test(tc, test_connect_timeout);
    tcase_add_test(tc, test_multi_host_socket_change);
    tcase_add_test(tc, test_cancel);
    tcase_add_test(tc, test_active_conn_terminated);
    tcase_add_test(tc, test_idle_conn_terminated);
    tcase_add_test(tc, test_reset_query);
    tcase_add_test(tc, test_reset_fails_in_transaction);
    tcase_add_test(tc, test_large_plain);
    tcase_add_test(tc, test_tls_roundtrip);
    tcase_add_test(tc, test_tls_pause_resume);
    tcase_add_test(tc, test_tls_idle_restart);
    tcase_add_test(tc, test_keyed_pools);
    tcase_add_test(tc, test_min_pool_size);
    tcase_add_test(tc, test_idle_timeout);
    tcase_add_test(tc, test_lifetime);
    tcase_add_test(tc, test_free_with_active_and_waiting);
    tcase_add_test(tc, test_bad_conninfo);
    /* last: it restarts the server under everyone */
    tcase_add_test(tc, test_upstream_restart);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    log_set_level(getenv("ITEST_DEBUG") ? LOG_DEBUG : LOG_ERROR);
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
