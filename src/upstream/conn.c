/*
 * One upstream server connection, in two phases.
 *
 * Connecting: libpq does the whole startup (TLS negotiation, SCRAM/MD5,
 * every conninfo option) through PQconnectStartParams/PQconnectPoll, and we
 * only supply readiness: a uv_poll_t on PQsocket() for whatever direction
 * PQconnectPoll asked for.  The poll is stopped before every PQconnectPoll
 * call because libpq may close the socket inside it (next host, next
 * address, SSL retry) and open another one, possibly with the same number; a
 * stopped handle has already been removed from epoll, so the fd can be
 * re-registered safely, and a handle is re-created when the number changes.
 * libpq's connect_timeout only works for blocking connects, so a uv_timer
 * bounds the attempt.
 *
 * Relaying: at PGRES_POLLING_OK libpq is done with I/O.  We keep the PGconn
 * for its SSL object, its cancel key and PQfinish, and move bytes ourselves:
 * recv/send on the socket, or SSL_read/SSL_write on libpq's SSL object.
 *
 * What libpq has consumed at the handoff (verified against PostgreSQL 15 by
 * tests/integration/itest_upstream.c, test_query_roundtrip): PQconnectPoll
 * returns OK only after it parsed ReadyForQuery (PQtransactionStatus is
 * PQTRANS_IDLE then, which we check); the ParameterStatus, BackendKeyData and
 * any NoticeResponse messages before it were consumed by libpq (hence
 * PQparameterStatus below), and the server sends nothing after
 * ReadyForQuery until it gets a query, so libpq's input buffer is empty: the
 * first bytes read raw after sending a Query are its RowDescription.  A
 * NoticeResponse/ParameterStatus arriving in that window would be eaten by
 * libpq (its idle-state parser handles them) - harmless, never misframed.
 * With TLS, OpenSSL could in principle hold a decrypted record that libpq did
 * not ask for; we check SSL_pending when reading starts.
 *
 * TLS details: SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER is set because the
 * output Buf may be reallocated between an SSL_write that wants a retry and
 * the retry (the retry reuses the same length).  SSL_read is drained while
 * SSL_pending > 0 because epoll cannot see data OpenSSL already buffered.
 * libpq's BIO writes with MSG_NOSIGNAL, as do we.
 *
 * Callbacks into the session (on_data, on_error) and into the pool may free
 * the connection; io_depth marks that one of our libuv callbacks is on the
 * stack, and upc_destroy then defers the free to its end.  Errors found while
 * sending (i.e. inside an API call) are reported from a zero timer, never
 * synchronously, so callers never see a callback from up_conn_send.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <openssl/err.h>
#include "riffq/log.h"
#include "riffq/wire.h"
#include "upstream/up_int.h"

#define READ_CHUNK          16384
#define READS_PER_WAKEUP    16          /* then yield to other connections */
#define WRITE_CHUNK         (256 * 1024)
#define RESET_MAX_MESSAGE   (1u << 20)

static const char *const tracked_params[] = {
    "server_version", "server_encoding", "client_encoding", "DateStyle", "TimeZone",
    "integer_datetimes", "standard_conforming_strings", "application_name",
    "is_superuser", "session_authorization", "IntervalStyle",
    "default_transaction_read_only", "in_hot_standby",
};

static void on_poll(uv_poll_t *h, int status, int events);
static void on_timer(uv_timer_t *t);
static void conn_free(UpConn *c);
static void read_some(UpConn *c);

static void free_handle(uv_handle_t *h)
{
    free(h);
}

/* ---- errors ---- */

static void broken(UpConn *c, const char *detail, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Mark the connection dead and react on the next loop turn (see the file
 * comment for why never synchronously). */
static void broken(UpConn *c, const char *detail, const char *fmt, ...)
{
    if (c->dead || c->destroy_pending) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->dead = 1;
    rq_error_set(&c->err, "08006", "%s", msg);
    if (detail) rq_error_detail(&c->err, "%s", detail);
    log_debug("upstream \"%s\": server connection (pid %d) broke: %s",
              upool_name(c->pool), c->backend_pid, msg);
    if (c->poll && c->poll_events) uv_poll_stop(c->poll);
    c->poll_events = 0;
    uv_timer_start(c->timer, on_timer, 0, 0);
}

static void broken_eof(UpConn *c)
{
    broken(c, "This probably means the server terminated abnormally before or "
              "while processing the request.",
           "server closed the connection unexpectedly");
}

static void broken_ssl(UpConn *c, int sending, int sslerr)
{
    const char *dir = sending ? "send data to" : "receive data from";
    unsigned long ec = ERR_peek_error();
    int e = errno;
    if (sslerr == SSL_ERROR_ZERO_RETURN ||
        (sslerr == SSL_ERROR_SSL && ERR_GET_REASON(ec) == SSL_R_UNEXPECTED_EOF_WHILE_READING) ||
        (sslerr == SSL_ERROR_SYSCALL && ec == 0 && (e == 0 || e == ECONNRESET || e == EPIPE))) {
        ERR_clear_error();
        broken_eof(c);
    } else if (sslerr == SSL_ERROR_SYSCALL && ec == 0) {
        broken(c, NULL, "could not %s server: %s", dir, strerror(e));
    } else {
        char buf[256];
        ERR_error_string_n(ec, buf, sizeof buf);
        ERR_clear_error();
        broken(c, NULL, "could not %s server: SSL error: %s", dir, buf);
    }
}

/*
 * libpq 15 does not expose the SQLSTATE of a failed connection, but with
 * PQERRORS_VERBOSE (set before connecting) it formats a server's error as
 * "FATAL:  28P01: password authentication failed ..." plus DETAIL, HINT and
 * LOCATION lines.  So the code is read from the text - exact and
 * locale-independent, unlike matching message words - and the message is
 * the server's primary message alone (what a client would have seen
 * connecting directly), with DETAIL/HINT as detail/hint and LOCATION
 * dropped.  With several hosts the last server error is the one that
 * stands.  Failures libpq detects itself (refused, unreachable, TLS) carry
 * no code: 08006 with libpq's first line as the message and its indented
 * explanation lines as the hint - except a missing password, which is an
 * authentication failure (28P01) from the client's point of view.
 */
static int is_sqlstate(const char *s, size_t n)
{
    if (n < 7) return 0;
    for (int i = 0; i < 5; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z'))) return 0;
    return s[5] == ':' && s[6] == ' ';
}

static void append_line(Buf *b, const char *s, size_t n)
{
    if (b->len) buf_append_byte(b, '\n');
    buf_append(b, s, n);
}

static char *buf_take_str(Buf *b)
{
    while (b->len && (b->data[b->len - 1] == ' ' || b->data[b->len - 1] == '\n'))
        b->len--;
    buf_append_byte(b, 0);
    return b->data;
}

static void error_from_libpq(const char *text, RqError *err)
{
    static const char *const sevs[] = { "FATAL:  ", "ERROR:  ", "PANIC:  " };
    char state[6] = "";
    Buf local, server, detail, hint;
    buf_init(&local); buf_init(&server); buf_init(&detail); buf_init(&hint);
    for (const char *line = text; *line;) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        const char *code = NULL;
        for (size_t i = 0; i < 3 && !code; i++) {
            const char *s = strstr(line, sevs[i]);
            if (s && s + 8 <= line + len && is_sqlstate(s + 8, (size_t)(line + len - s - 8)))
                code = s + 8;
        }
        if (code) {
            memcpy(state, code, 5);
            state[5] = 0;
            buf_reset(&server); buf_reset(&detail); buf_reset(&hint);
            append_line(&server, code + 7, (size_t)(line + len - code - 7));
        } else if (len >= 11 && strncmp(line, "LOCATION:  ", 11) == 0) {
            /* server source position: noise for clients */
        } else if (len >= 9 && strncmp(line, "DETAIL:  ", 9) == 0) {
            append_line(&detail, line + 9, len - 9);
        } else if (len >= 7 && strncmp(line, "HINT:  ", 7) == 0) {
            append_line(&hint, line + 7, len - 7);
        } else if (line[0] == '\t') {
            append_line(&hint, line + 1, len - 1);
        } else if (len) {
            append_line(&local, line, len);
        }
        line += len + (eol ? 1 : 0);
    }
    const char *msg;
    if (state[0]) {
        msg = buf_take_str(&server);
    } else {
        msg = local.len ? buf_take_str(&local) : "could not connect to server";
        memcpy(state, strstr(msg, "no password supplied") ? "28P01" : "08006", 6);
    }
    rq_error_set(err, state, "%s", msg);
    if (detail.len) rq_error_detail(err, "%s", buf_take_str(&detail));
    if (hint.len) rq_error_hint(err, "%s", buf_take_str(&hint));
    buf_free(&local); buf_free(&server); buf_free(&detail); buf_free(&hint);
}

/* ---- readiness ---- */

static void close_poll(UpConn *c)
{
    if (!c->poll) return;
    c->poll->data = NULL;
    uv_close((uv_handle_t *)c->poll, free_handle);
    c->poll = NULL;
    c->poll_events = 0;
    c->poll_fd = -1;
}

/* Make c->poll watch fd (stopped).  libuv binds a poll handle to one fd, so a
 * new socket needs a new handle. */
static int watch_fd(UpConn *c, int fd)
{
    if (c->poll && c->poll_fd != fd) {
        log_debug("upstream \"%s\": libpq moved from socket %d to %d", upool_name(c->pool),
                  c->poll_fd, fd);
        close_poll(c);
    }
    if (c->poll) return 0;
    c->poll = xmalloc(sizeof *c->poll);
    int r = uv_poll_init(upool_loop(c->pool), c->poll, fd);
    if (r < 0) {
        free(c->poll);
        c->poll = NULL;
        return r;
    }
    c->poll->data = c;
    c->poll_fd = fd;
    c->poll_events = 0;
    return 0;
}

static int poll_set(UpConn *c, int events)
{
    if (!c->poll || events == c->poll_events) return 0;
    int r = events ? uv_poll_start(c->poll, events, on_poll) : uv_poll_stop(c->poll);
    if (r == 0) c->poll_events = events;
    return r;
}

static int wants_read(const UpConn *c)
{
    switch (c->state) {
    case UPC_IDLE:
    case UPC_RESETTING:
        return 1;
    case UPC_ACTIVE:
        /* Also between acquire and attach and between detach and release:
         * those come and go within one loop turn, and every change of the
         * poll set costs epoll_ctl calls (libuv re-adds the descriptor on
         * each uv_poll_start), several per transaction otherwise.  Data that
         * arrives with nobody attached parks the read until attach. */
        return !c->paused && !c->read_parked;
    default:
        return 0;
    }
}

static size_t out_pending(const UpConn *c)
{
    return c->out.len - c->out_off;
}

/* Each direction waits for the readiness its last attempt asked for: TLS
 * can turn a read into a wait for writability and vice versa (the socket
 * must not be polled for the other direction then, or a retry that cannot
 * progress would spin). */
static int read_waits_for(const UpConn *c)
{
    return c->ssl_read_wants_write ? UV_WRITABLE : UV_READABLE;
}

static int write_waits_for(const UpConn *c)
{
    return c->ssl_write_wants_read ? UV_READABLE : UV_WRITABLE;
}

static void update_poll(UpConn *c)
{
    if (c->state == UPC_CONNECTING || c->destroy_pending || !c->poll) return;
    int ev = 0;
    if (!c->dead) {
        if (wants_read(c)) ev |= read_waits_for(c);
        /* a corked connection writes when uncorked, not when writable */
        if (out_pending(c) && !c->corked) ev |= write_waits_for(c);
    }
    int r = poll_set(c, ev);
    if (r < 0) broken(c, NULL, "could not watch the server connection: %s", uv_strerror(r));
}

/* Our data may sit decrypted inside OpenSSL where epoll cannot see it. */
static void kick_if_ssl_pending(UpConn *c)
{
    if (c->ssl && !c->dead && !c->destroy_pending && wants_read(c) && SSL_pending(c->ssl) > 0)
        uv_timer_start(c->timer, on_timer, 0, 0);
}

static void io_leave(UpConn *c)
{
    if (--c->io_depth > 0) return;
    if (c->destroy_pending) conn_free(c);
    else update_poll(c);
}

/* ---- connecting ---- */

static void collect_params(UpConn *c)
{
    size_t n = sizeof tracked_params / sizeof tracked_params[0];
    c->params = xcalloc(n, sizeof *c->params);
    for (size_t i = 0; i < n; i++) {
        const char *v = PQparameterStatus(c->pg, tracked_params[i]);
        if (!v) continue;
        c->params[c->n_params].name = xstrdup(tracked_params[i]);
        c->params[c->n_params].value = xstrdup(v);
        c->n_params++;
    }
}

static void set_param(UpConn *c, const char *name, const char *value)
{
    for (size_t i = 0; i < c->n_params; i++) {
        if (strcmp(c->params[i].name, name) == 0) {
            free(c->params[i].value);
            c->params[i].value = xstrdup(value);
            return;
        }
    }
    c->params = xrealloc(c->params, (c->n_params + 1) * sizeof *c->params);
    c->params[c->n_params].name = xstrdup(name);
    c->params[c->n_params].value = xstrdup(value);
    c->n_params++;
}

static void connect_failed(UpConn *c)
{
    RqError err = {0};
    error_from_libpq(PQerrorMessage(c->pg), &err);
    upool_connect_failed(c, &err);
    rq_error_free(&err);
}

static void connect_failed_msg(UpConn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void connect_failed_msg(UpConn *c, const char *fmt, ...)
{
    RqError err = {0};
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    rq_error_set(&err, "08006", "%s", msg);
    upool_connect_failed(c, &err);
    rq_error_free(&err);
}

static void connect_done(UpConn *c)
{
    uv_timer_stop(c->timer);
    if (PQtransactionStatus(c->pg) != PQTRANS_IDLE) {
        /* the handoff reasoning in the file comment would not hold */
        connect_failed_msg(c, "server connection was not idle after startup");
        return;
    }
    /* Only now: PQconnectPoll never blocks anyway, and in libpq 15
     * PQsetnonblocking clears the error buffer, which during the connect
     * would erase the "connection to server at ..." prefix libpq already
     * wrote for the attempt in progress.  Nonblocking matters for PQfinish's
     * Terminate message, the one write libpq still does. */
    PQsetnonblocking(c->pg, 1);
    collect_params(c);
    c->backend_pid = PQbackendPID(c->pg);
    PGcancel *pc = PQgetCancel(c->pg);
    if (pc) {
        c->cancel = xcalloc(1, sizeof *c->cancel);
        c->cancel->pc = pc;
        c->cancel->refs = 1;
    }
    if (PQsslInUse(c->pg)) {
        c->ssl = PQsslStruct(c->pg, "OpenSSL");
        if (!c->ssl) {
            connect_failed_msg(c, "libpq uses TLS but not through OpenSSL");
            return;
        }
        SSL_set_mode(c->ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    }
    c->fd = PQsocket(c->pg);
    int r = c->fd < 0 ? UV_EBADF : watch_fd(c, c->fd);
    if (r < 0) {
        connect_failed_msg(c, "could not watch the server connection: %s", uv_strerror(r));
        return;
    }
    c->created_ms = uv_now(upool_loop(c->pool));
    upool_connected(c);
}

static void connect_step(UpConn *c)
{
    poll_set(c, 0);         /* libpq may close this fd in PQconnectPoll */
    PostgresPollingStatusType st = PQconnectPoll(c->pg);
    int ev;
    switch (st) {
    case PGRES_POLLING_OK:
        connect_done(c);
        return;
    case PGRES_POLLING_READING:
        ev = UV_READABLE;
        break;
    case PGRES_POLLING_WRITING:
        ev = UV_WRITABLE;
        break;
    default:
        connect_failed(c);
        return;
    }
    int fd = PQsocket(c->pg);
    int r = fd < 0 ? UV_EBADF : watch_fd(c, fd);
    if (r == 0) r = poll_set(c, ev);
    if (r < 0) connect_failed_msg(c, "could not watch the server connection: %s", uv_strerror(r));
}

static void connect_timed_out(UpConn *c, int ms)
{
    const char *host = PQhost(c->pg), *port = PQport(c->pg);
    connect_failed_msg(c, "connection to server at \"%s\", port %s failed: timeout expired after %d ms",
                       host ? host : "?", port ? port : "?", ms);
}

static void log_notice(void *arg, const char *message)
{
    log_info("upstream \"%s\": %.*s", (const char *)arg,
             (int)strcspn(message, "\n"), message);
}

UpConn *upc_open(UpPool *p, UpKey *k, uv_loop_t *loop, const char *const *kw,
                 const char *const *vals, int connect_timeout_ms)
{
    UpConn *c = xcalloc(1, sizeof *c);
    c->pool = p;
    c->key = k;
    c->state = UPC_CONNECTING;
    c->fd = c->poll_fd = -1;
    buf_init(&c->out);
    buf_init(&c->in);
    c->timer = xmalloc(sizeof *c->timer);
    uv_timer_init(loop, c->timer);
    c->timer->data = c;
    c->timeout_ms = connect_timeout_ms;

    c->pg = PQconnectStartParams(kw, vals, 1);
    if (!c->pg) {
        fputs("riffq: out of memory\n", stderr);
        abort();
    }
    PQsetNoticeProcessor(c->pg, log_notice, (void *)upool_name(p));
    PQsetErrorVerbosity(c->pg, PQERRORS_VERBOSE);     /* see error_from_libpq */
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        c->start_failed = 1;
        uv_timer_start(c->timer, on_timer, 0, 0);
        return c;
    }
    /* libpq: right after PQconnectStart, act as if PQconnectPoll had
     * returned PGRES_POLLING_WRITING */
    int fd = PQsocket(c->pg);
    int r = fd < 0 ? UV_EBADF : watch_fd(c, fd);
    if (r == 0) r = poll_set(c, UV_WRITABLE);
    if (r < 0) {
        c->start_failed = 1;
        uv_timer_start(c->timer, on_timer, 0, 0);
        return c;
    }
    if (connect_timeout_ms > 0) uv_timer_start(c->timer, on_timer, (uint64_t)connect_timeout_ms, 0);
    return c;
}

/* ---- raw I/O ---- */

/* >0 bytes read, 0 would block, -1 broken */
static ssize_t raw_recv(UpConn *c, uint8_t *buf, size_t len)
{
    if (c->ssl) {
        ERR_clear_error();
        errno = 0;
        int n = SSL_read(c->ssl, buf, (int)len);
        if (n > 0) {
            c->ssl_read_wants_write = 0;
            return n;
        }
        int e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_WANT_READ) {
            c->ssl_read_wants_write = 0;
            return 0;
        }
        if (e == SSL_ERROR_WANT_WRITE) {
            c->ssl_read_wants_write = 1;
            return 0;
        }
        broken_ssl(c, 0, e);
        return -1;
    }
    for (;;) {
        ssize_t n = recv(c->fd, buf, len, 0);
        if (n > 0) return n;
        if (n == 0) {
            broken_eof(c);
            return -1;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        if (errno == ECONNRESET) broken_eof(c);
        else broken(c, NULL, "could not receive data from server: %s", strerror(errno));
        return -1;
    }
}

static void out_consume(UpConn *c, size_t n)
{
    c->out_off += n;
    if (c->out_off == c->out.len) {
        buf_reset(&c->out);
        c->out_off = 0;
    }
}

/* Write as much as the socket takes.  0 = done or would block, -1 broken. */
static int raw_flush(UpConn *c)
{
    while (out_pending(c)) {
        const char *p = c->out.data + c->out_off;
        if (c->ssl) {
            size_t len = c->ssl_retry_len;
            if (!len) len = out_pending(c) < WRITE_CHUNK ? out_pending(c) : WRITE_CHUNK;
            ERR_clear_error();
            errno = 0;
            int n = SSL_write(c->ssl, p, (int)len);
            if (n > 0) {
                c->ssl_retry_len = 0;
                c->ssl_write_wants_read = 0;
                out_consume(c, (size_t)n);
                continue;
            }
            int e = SSL_get_error(c->ssl, n);
            if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
                log_debug("upstream \"%s\": TLS write of %zu bytes must wait (%s)",
                          upool_name(c->pool), len, e == SSL_ERROR_WANT_READ ? "read" : "write");
                c->ssl_retry_len = len;     /* OpenSSL wants the same length again */
                c->ssl_write_wants_read = e == SSL_ERROR_WANT_READ;
                return 0;
            }
            broken_ssl(c, 1, e);
            return -1;
        }
        ssize_t n = send(c->fd, p, out_pending(c), MSG_NOSIGNAL);
        if (n >= 0) {
            out_consume(c, (size_t)n);
            continue;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            log_debug("upstream \"%s\": socket full with %zu bytes queued",
                      upool_name(c->pool), out_pending(c));
            return 0;
        }
        if (errno == EPIPE || errno == ECONNRESET) broken_eof(c);
        else broken(c, NULL, "could not send data to server: %s", strerror(errno));
        return -1;
    }
    return 0;
}

static void finish_reset(UpConn *c, int ok)
{
    uv_timer_stop(c->timer);
    buf_free(&c->in);
    upool_reset_done(c, ok);
}

/* The reset query's reply: success is ReadyForQuery 'I' with no
 * ErrorResponse before it (DISCARD ALL fails inside a transaction block, so
 * a connection released mid-transaction is caught here). */
static void reset_feed(UpConn *c, const uint8_t *data, size_t len)
{
    buf_append(&c->in, data, len);
    size_t off = 0;
    for (;;) {
        uint8_t type;
        const uint8_t *body;
        size_t blen, total;
        RqError e = {0};
        int r = wire_frame((const uint8_t *)c->in.data + off, c->in.len - off,
                           RESET_MAX_MESSAGE, &type, &body, &blen, &total, &e);
        if (r < 0) {
            log_warn("upstream \"%s\": bad reply to the reset query: %s",
                     upool_name(c->pool), e.message);
            rq_error_free(&e);
            finish_reset(c, 0);
            return;
        }
        if (r == 0) break;
        off += total;
        WireReader rd;
        wire_reader_init(&rd, body, blen);
        if (type == 'E') {
            const char *msg = "";
            for (uint8_t f; !rd.err && (f = wire_get_u8(&rd)) != 0;) {
                const char *v = wire_get_str(&rd);
                if (f == 'M') msg = v;
            }
            log_info("upstream \"%s\": reset query failed, closing server connection (pid %d): %s",
                     upool_name(c->pool), c->backend_pid, msg);
            c->reset_failed = 1;
        } else if (type == 'S') {
            const char *name = wire_get_str(&rd);
            const char *value = wire_get_str(&rd);
            if (!rd.err) set_param(c, name, value);
        } else if (type == 'Z') {
            int ok = !c->reset_failed && blen == 1 && body[0] == 'I' && off == c->in.len;
            finish_reset(c, ok);
            return;
        }
    }
    buf_consume(&c->in, off);
}

static void deliver(UpConn *c, const uint8_t *data, size_t len)
{
    switch (c->state) {
    case UPC_ACTIVE:
        c->cb.on_data(c->cb.ud, data, len);
        break;
    case UPC_RESETTING:
        reset_feed(c, data, len);
        break;
    case UPC_IDLE:
        /* e.g. FATAL 57P01 before a server shutdown: the connection is done */
        broken(c, NULL, "server sent data on an idle connection (message type '%c')", data[0]);
        break;
    default:
        break;
    }
}

static void read_some(UpConn *c)
{
    uint8_t buf[READ_CHUNK];
    for (int i = 0;; i++) {
        if (c->dead || c->destroy_pending || !wants_read(c)) return;
        if (c->state == UPC_ACTIVE && !c->attached) {
            c->read_parked = 1;     /* io_leave stops polling until attach */
            return;
        }
        if (i >= READS_PER_WAKEUP && !(c->ssl && SSL_pending(c->ssl) > 0)) return;
        ssize_t n = raw_recv(c, buf, sizeof buf);
        if (n <= 0) return;
        deliver(c, buf, (size_t)n);
        /* a short plain read drained the socket: asking again would only
         * cost a recv that says EAGAIN (the poll is level-triggered, so
         * anything arriving later wakes us anyway) */
        if (!c->ssl && (size_t)n < sizeof buf) return;
    }
}

static void socket_error(UpConn *c)
{
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0) soerr = errno;
    if (soerr == 0 || soerr == ECONNRESET || soerr == EPIPE) broken_eof(c);
    else broken(c, NULL, "server connection failed: %s", strerror(soerr));
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    UpConn *c = h->data;
    if (!c) return;
    c->io_depth++;
    if (status < 0) c->poll_events = 0;    /* libuv stopped the handle */
    if (c->state == UPC_CONNECTING) {
        connect_step(c);    /* libpq finds the socket error itself */
    } else if (status < 0) {
        /* deliver what the server said before the error (a FATAL message
         * usually precedes a reset), then report the error */
        read_some(c);
        if (!c->dead) socket_error(c);
    } else if (!c->dead) {
        /* writing first frees the server to send more */
        int ok = 0;
        if (out_pending(c) && (events & write_waits_for(c))) ok = raw_flush(c);
        if (ok == 0 && (events & read_waits_for(c))) read_some(c);
    }
    io_leave(c);
}

static void deliver_error(UpConn *c)
{
    RqError err = {0};
    c->err_delivered = 1;
    rq_error_move(&err, &c->err);
    /* keep a copy: a later attach (after detach) still learns why */
    rq_error_set(&c->err, err.sqlstate, "%s", err.message);
    if (err.detail) rq_error_detail(&c->err, "%s", err.detail);
    c->cb.on_error(c->cb.ud, &err);
    rq_error_free(&err);
}

static void on_timer(uv_timer_t *t)
{
    UpConn *c = t->data;
    if (!c) return;
    c->io_depth++;
    switch (c->state) {
    case UPC_CONNECTING:
        if (c->start_failed) connect_failed(c);
        else connect_timed_out(c, c->timeout_ms);
        break;
    case UPC_RESETTING:
        if (!c->dead) log_warn("upstream \"%s\": reset query timed out, closing server connection (pid %d)",
                               upool_name(c->pool), c->backend_pid);
        finish_reset(c, 0);
        break;
    case UPC_IDLE:
        if (c->dead) upool_conn_lost(c);
        else read_some(c);
        break;
    case UPC_ACTIVE:
        if (c->dead && c->attached && !c->err_delivered) deliver_error(c);
        else read_some(c);
        break;
    default:
        break;
    }
    io_leave(c);
}

/* ---- state changes, driven by the pool ---- */

void upc_make_idle(UpConn *c)
{
    uv_timer_stop(c->timer);
    memset(&c->cb, 0, sizeof c->cb);
    c->attached = c->paused = c->read_parked = 0;
    c->idle_since_ms = uv_now(upool_loop(c->pool));
    update_poll(c);
    kick_if_ssl_pending(c);
}

void upc_make_active(UpConn *c)
{
    uv_timer_stop(c->timer);
    update_poll(c);
}

void upc_start_reset(UpConn *c, const char *query, int timeout_ms)
{
    if (c->slot_free && c->slot) c->slot_free(c->slot);
    c->slot = NULL;
    c->slot_free = NULL;
    memset(&c->cb, 0, sizeof c->cb);
    c->attached = c->paused = c->read_parked = 0;
    c->reset_failed = 0;
    buf_reset(&c->in);
    size_t m = wire_begin(&c->out, 'Q');
    buf_append_cstr(&c->out, query);
    wire_end(&c->out, m);
    /* timer first: a send error re-arms it to fire at once */
    uv_timer_start(c->timer, on_timer, (uint64_t)timeout_ms, 0);
    raw_flush(c);
    update_poll(c);
}

void upc_destroy(UpConn *c)
{
    if (c->destroy_pending) return;
    c->destroy_pending = 1;
    close_poll(c);
    c->timer->data = NULL;
    uv_close((uv_handle_t *)c->timer, free_handle);
    c->timer = NULL;
    if (c->io_depth == 0) conn_free(c);
}

static void cancel_key_unref(UpCancelKey *k)
{
    if (k && --k->refs == 0) {
        PQfreeCancel(k->pc);
        free(k);
    }
}

static void conn_free(UpConn *c)
{
    UpPool *p = c->pool;
    PQfinish(c->pg);        /* sends Terminate, closes socket and TLS */
    cancel_key_unref(c->cancel);
    for (size_t i = 0; i < c->n_params; i++) {
        free(c->params[i].name);
        free(c->params[i].value);
    }
    free(c->params);
    if (c->slot_free && c->slot) c->slot_free(c->slot);
    buf_free(&c->out);
    buf_free(&c->in);
    rq_error_free(&c->err);
    free(c);
    upool_conn_freed(p);
}

/* ---- public API on an acquired connection ---- */

void up_conn_attach(UpConn *c, const UpConnCb *cb)
{
    c->cb = *cb;
    c->attached = 1;
    c->read_parked = 0;
    update_poll(c);
    if (c->dead && !c->destroy_pending) {
        c->err_delivered = 0;
        uv_timer_start(c->timer, on_timer, 0, 0);
    } else {
        kick_if_ssl_pending(c);
    }
}

void up_conn_detach(UpConn *c)
{
    memset(&c->cb, 0, sizeof c->cb);
    c->attached = 0;
    update_poll(c);
}

void up_conn_send(UpConn *c, const void *data, size_t len)
{
    if (c->dead || c->destroy_pending || len == 0) return;
    if (c->out_off > 65536 && c->out_off * 2 > c->out.len) {
        buf_consume(&c->out, c->out_off);
        c->out_off = 0;
    }
    buf_append(&c->out, data, len);
    /* write now unless a write is already waiting (saves a loop turn per
     * query), or the caller is batching messages into one write */
    if (!c->corked && out_pending(c) == len) raw_flush(c);
    update_poll(c);
}

void up_conn_cork(UpConn *c, int on)
{
    c->corked = on ? 1 : 0;
    if (on || c->dead || c->destroy_pending) return;
    if (out_pending(c)) raw_flush(c);
    update_poll(c);
}

void up_conn_pause(UpConn *c)
{
    c->paused = 1;
    update_poll(c);
}

void up_conn_resume(UpConn *c)
{
    c->paused = 0;
    update_poll(c);
    kick_if_ssl_pending(c);
}

typedef struct CancelReq {
    uv_work_t req;
    UpCancelKey *key;
    int pid;
    int ok;
    char errbuf[256];
} CancelReq;

static void cancel_work(uv_work_t *req)
{
    CancelReq *q = req->data;
    /* PQcancel connects and waits for the server: blocking, hence here */
    q->ok = PQcancel(q->key->pc, q->errbuf, (int)sizeof q->errbuf);
}

static void cancel_done(uv_work_t *req, int status)
{
    CancelReq *q = req->data;
    if (status == 0 && !q->ok)
        log_warn("could not send cancel request for server pid %d: %s", q->pid, q->errbuf);
    cancel_key_unref(q->key);
    free(q);
}

void up_conn_cancel(UpConn *c)
{
    if (!c->cancel || c->destroy_pending) return;
    CancelReq *q = xcalloc(1, sizeof *q);
    q->req.data = q;
    q->key = c->cancel;
    q->key->refs++;
    q->pid = c->backend_pid;
    if (uv_queue_work(upool_loop(c->pool), &q->req, cancel_work, cancel_done) != 0) {
        cancel_key_unref(q->key);
        free(q);
    }
}

const char *up_conn_parameter(const UpConn *c, const char *name)
{
    for (size_t i = 0; i < c->n_params; i++)
        if (strcasecmp(c->params[i].name, name) == 0) return c->params[i].value;
    return NULL;
}

int up_conn_backend_pid(const UpConn *c)
{
    return c->backend_pid;
}

int up_conn_tls(const UpConn *c)
{
    return c->ssl != NULL;
}

void *up_conn_slot(const UpConn *c)
{
    return c->slot;
}

void up_conn_set_slot(UpConn *c, void *data, void (*free_fn)(void *))
{
    if (c->slot_free && c->slot && c->slot != data) c->slot_free(c->slot);
    c->slot = data;
    c->slot_free = free_fn;
}
