/*
 * libpq against build/riffq (a check test program).
 *
 * main() starts the gateway itself: a temp dir with a route file (SCRAM,
 * alice/secret, everything answered locally) on a free loopback port (found
 * by binding port 0), fork/exec of $RIFFQ_BIN (default build/riffq) with
 * output in the temp dir's riffq.log, and a bounded wait until the port
 * accepts.  Each test runs in check's forked child and connects anew; at the
 * end main() sends SIGTERM (SIGKILL after 10 s), checks the exit status,
 * prints the log on failure and removes the temp dir.
 *
 * libpq is the reference client: psql, psycopg and most drivers sit on it, so
 * its view of ParameterStatus, binary formats, Describe, pipelining and
 * cancel is what users get.
 *
 * ITEST_EXTERNAL_PORT=N runs the same tests against a server already
 * listening on 127.0.0.1:N (with user alice/secret), which is how the
 * expectations that are Postgres behaviour were checked against a real
 * PostgreSQL 15; riffq-specific assertions then fail, as they should.
 */
#include <check.h>
#include <libpq-fe.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define USER "alice"
#define PASSWORD "secret"

static char g_dir[256];
static char g_log[300];
static int g_port;
static pid_t g_server = -1;
static pid_t g_main_pid;

/* ------------------------------------------------------------------ */
/* server process                                                      */

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0 };
    socklen_t len = sizeof a;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(s, (struct sockaddr *)&a, &len) < 0) {
        perror("free_port");
        exit(1);
    }
    close(s);
    return ntohs(a.sin_port);
}

static int port_accepts(int port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = s >= 0 && connect(s, (struct sockaddr *)&a, sizeof a) == 0;
    if (s >= 0) close(s);
    return ok;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static void dump_log(void)
{
    FILE *f = fopen(g_log, "r");
    char line[1024];
    if (!f) return;
    fprintf(stderr, "---- riffq log (%s) ----\n", g_log);
    while (fgets(line, sizeof line, f)) fputs(line, stderr);
    fprintf(stderr, "---- end of log ----\n");
    fclose(f);
}

/* SIGTERM, wait up to 10 s, then SIGKILL.  Returns the wait status, or -1. */
static int stop_server(void)
{
    int status = -1;
    if (g_server <= 0) return -1;
    kill(g_server, SIGTERM);
    for (int i = 0; i < 1000; i++) {
        pid_t r = waitpid(g_server, &status, WNOHANG);
        if (r == g_server) { g_server = -1; return status; }
        if (r < 0) { g_server = -1; return -1; }
        sleep_ms(10);
    }
    fprintf(stderr, "riffq did not exit within 10 s of SIGTERM; killing it\n");
    kill(g_server, SIGKILL);
    waitpid(g_server, &status, 0);
    g_server = -1;
    return -1;
}

static void remove_dir(void)
{
    char path[400];
    if (!g_dir[0]) return;
    snprintf(path, sizeof path, "%s/route.json", g_dir); unlink(path);
    unlink(g_log);
    rmdir(g_dir);
    g_dir[0] = 0;
}

/* Runs in main only (check's forked test children inherit atexit handlers). */
static void cleanup_at_exit(void)
{
    if (getpid() != g_main_pid) return;
    if (g_server > 0) { kill(g_server, SIGKILL); waitpid(g_server, NULL, 0); g_server = -1; }
    remove_dir();
}

static int start_server(void)
{
    const char *bin = getenv("RIFFQ_BIN");
    char route[400];
    if (!bin || !*bin) bin = "build/riffq";
    if (access(bin, X_OK) != 0) {
        fprintf(stderr, "riffq binary %s is not executable (make build/riffq, or set RIFFQ_BIN)\n", bin);
        return -1;
    }
    snprintf(g_dir, sizeof g_dir, "/tmp/riffq-itest-XXXXXX");
    if (!mkdtemp(g_dir)) { perror("mkdtemp"); return -1; }
    snprintf(route, sizeof route, "%s/route.json", g_dir);
    snprintf(g_log, sizeof g_log, "%s/riffq.log", g_dir);

    for (int attempt = 0; attempt < 3; attempt++) {
        g_port = free_port();
        FILE *f = fopen(route, "w");
        if (!f) { perror("route file"); return -1; }
        fprintf(f,
            "{\"listen\": [{\"host\": \"127.0.0.1\", \"port\": %d}],\n"
            " \"auth\": {\"method\": \"scram-sha-256\", \"users\": {\"" USER "\": \"" PASSWORD "\"}},\n"
            " \"routes\": [{\"name\": \"local\", \"to\": \"local\"}]}\n", g_port);
        fclose(f);

        pid_t pid = fork();
        if (pid < 0) { perror("fork"); return -1; }
        if (pid == 0) {
            int fd = open(g_log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            int devnull = open("/dev/null", O_RDONLY);
            if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); close(fd); }
            if (devnull >= 0) { dup2(devnull, 0); close(devnull); }
            execl(bin, bin, "--config", route, (char *)NULL);
            fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
            _exit(127);
        }
        g_server = pid;
        for (int i = 0; i < 200; i++) {          /* 10 s */
            int status;
            if (waitpid(pid, &status, WNOHANG) == pid) { g_server = -1; break; }
            if (port_accepts(g_port)) return 0;
            sleep_ms(50);
        }
        if (g_server > 0) {                     /* still running but not listening */
            kill(g_server, SIGKILL);
            waitpid(g_server, NULL, 0);
            g_server = -1;
            dump_log();
            return -1;
        }
        dump_log();                             /* exited: maybe the port was taken; retry */
    }
    return -1;
}

/* ------------------------------------------------------------------ */
/* helpers                                                             */

static PGconn *connect_with(const char *user, const char *password, const char *extra)
{
    char ci[512];
    snprintf(ci, sizeof ci,
             "host=127.0.0.1 port=%d user=%s password=%s sslmode=disable gssencmode=disable "
             "connect_timeout=10 %s", g_port, user, password, extra ? extra : "");
    return PQconnectdb(ci);
}

static PGconn *connect_ok(const char *extra)
{
    PGconn *c = connect_with(USER, PASSWORD, extra);
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connect failed: %s", PQerrorMessage(c));
    return c;
}

static PGresult *exec_ok(PGconn *c, const char *sql, ExecStatusType want)
{
    PGresult *r = PQexec(c, sql);
    ck_assert_msg(PQresultStatus(r) == want, "%s: %s %s", sql,
                  PQresStatus(PQresultStatus(r)), PQresultErrorMessage(r));
    return r;
}

static const char *field(PGresult *r, int code)
{
    const char *s = PQresultErrorField(r, code);
    return s ? s : "(null)";
}

/* ------------------------------------------------------------------ */
/* tests                                                               */

START_TEST(test_connect_scram)
{
    PGconn *c = connect_ok(NULL);
    ck_assert_int_eq(PQprotocolVersion(c), 3);
    ck_assert_int_eq(PQserverVersion(c), 150008);      /* "15.8 (riffq 0.1.0)" */
    ck_assert_int_eq(PQtransactionStatus(c), PQTRANS_IDLE);
    ck_assert_int_eq(PQsslInUse(c), 0);
    ck_assert_int_eq(PQconnectionUsedPassword(c), 1);
    ck_assert_str_eq(PQuser(c), USER);
    PQfinish(c);
}
END_TEST

START_TEST(test_parameter_status)
{
    PGconn *c = connect_ok("application_name=itest_libpq");
    ck_assert_str_eq(PQparameterStatus(c, "server_version"), "15.8 (riffq 0.1.0)");
    ck_assert_str_eq(PQparameterStatus(c, "server_encoding"), "UTF8");
    ck_assert_str_eq(PQparameterStatus(c, "client_encoding"), "UTF8");
    ck_assert_str_eq(PQparameterStatus(c, "DateStyle"), "ISO, MDY");
    ck_assert_str_eq(PQparameterStatus(c, "TimeZone"), "UTC");
    ck_assert_str_eq(PQparameterStatus(c, "IntervalStyle"), "postgres");
    ck_assert_str_eq(PQparameterStatus(c, "integer_datetimes"), "on");
    ck_assert_str_eq(PQparameterStatus(c, "standard_conforming_strings"), "on");
    ck_assert_str_eq(PQparameterStatus(c, "is_superuser"), "off");
    ck_assert_str_eq(PQparameterStatus(c, "session_authorization"), USER);
    ck_assert_str_eq(PQparameterStatus(c, "application_name"), "itest_libpq");
    ck_assert_str_eq(pg_encoding_to_char(PQclientEncoding(c)), "UTF8");
    PQfinish(c);
}
END_TEST

START_TEST(test_parameter_status_from_options)
{
    /* options=-c TimeZone=... goes into the startup packet */
    PGconn *c = connect_ok("options='-c TimeZone=Europe/Paris'");
    ck_assert_str_eq(PQparameterStatus(c, "TimeZone"), "Europe/Paris");
    ck_assert_str_eq(PQparameterStatus(c, "application_name"), "");
    PGresult *r = exec_ok(c, "SET application_name = 'changed'", PGRES_COMMAND_OK);
    ck_assert_str_eq(PQcmdStatus(r), "SET");
    PQclear(r);
    ck_assert_str_eq(PQparameterStatus(c, "application_name"), "changed");
    PQfinish(c);
}
END_TEST

START_TEST(test_exec_select_1)
{
    PGconn *c = connect_ok(NULL);
    PGresult *r = exec_ok(c, "SELECT 1", PGRES_TUPLES_OK);
    ck_assert_int_eq(PQntuples(r), 1);
    ck_assert_int_eq(PQnfields(r), 1);
    ck_assert_str_eq(PQfname(r, 0), "?column?");
    ck_assert_uint_eq(PQftype(r, 0), 23);
    ck_assert_int_eq(PQfsize(r, 0), 4);
    ck_assert_int_eq(PQfformat(r, 0), 0);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "1");
    ck_assert_str_eq(PQcmdStatus(r), "SELECT 1");
    ck_assert_str_eq(PQcmdTuples(r), "1");
    PQclear(r);
    PQfinish(c);
}
END_TEST

START_TEST(test_exec_literals)
{
    PGconn *c = connect_ok(NULL);
    PGresult *r = exec_ok(c, "SELECT 1 AS a, 'x' AS b, NULL AS c, true AS d, 2.5 AS e, 9999999999 AS f",
                          PGRES_TUPLES_OK);
    static const Oid types[] = { 23, 25, 25, 16, 1700, 20 };
    static const char *names[] = { "a", "b", "c", "d", "e", "f" };
    static const char *vals[] = { "1", "x", "", "t", "2.5", "9999999999" };
    ck_assert_int_eq(PQnfields(r), 6);
    for (int i = 0; i < 6; i++) {
        ck_assert_str_eq(PQfname(r, i), names[i]);
        ck_assert_uint_eq(PQftype(r, i), types[i]);
        ck_assert_str_eq(PQgetvalue(r, 0, i), vals[i]);
        ck_assert_int_eq(PQgetisnull(r, 0, i), i == 2);
    }
    PQclear(r);
    PQfinish(c);
}
END_TEST

START_TEST(test_exec_multi_statement)
{
    PGconn *c = connect_ok(NULL);
    ck_assert_int_eq(PQsendQuery(c, "SELECT 1; SELECT 2"), 1);
    PGresult *r = PQgetResult(c);
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "1");
    PQclear(r);
    r = PQgetResult(c);
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "2");
    PQclear(r);
    ck_assert_ptr_null(PQgetResult(c));
    /* empty query */
    r = PQexec(c, "");
    ck_assert_int_eq(PQresultStatus(r), PGRES_EMPTY_QUERY);
    PQclear(r);
    PQfinish(c);
}
END_TEST

START_TEST(test_exec_params_text)
{
    PGconn *c = connect_ok(NULL);
    const char *v1[] = { "42" };
    PGresult *r = PQexecParams(c, "SELECT $1::int4", 1, NULL, v1, NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    ck_assert_uint_eq(PQftype(r, 0), 23);
    ck_assert_str_eq(PQfname(r, 0), "int4");        /* Postgres names a bare cast after its type */
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "42");
    PQclear(r);

    const char *v2[] = { "h\xc3\xa9llo" };
    r = PQexecParams(c, "SELECT $1::text", 1, NULL, v2, NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    ck_assert_uint_eq(PQftype(r, 0), 25);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "h\xc3\xa9llo");
    PQclear(r);

    const char *v3[] = { "9999999999" };
    Oid t3[] = { 20 };
    r = PQexecParams(c, "SELECT $1::int8", 1, t3, v3, NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    ck_assert_uint_eq(PQftype(r, 0), 20);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "9999999999");
    PQclear(r);

    const char *v4[] = { NULL };
    r = PQexecParams(c, "SELECT $1::text", 1, NULL, v4, NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    ck_assert_int_eq(PQgetisnull(r, 0, 0), 1);
    PQclear(r);
    PQfinish(c);
}
END_TEST

START_TEST(test_exec_params_binary)
{
    PGconn *c = connect_ok(NULL);
    /* binary int4 parameter in, binary result out: the exact 4 bytes */
    uint32_t net = htonl((uint32_t)-5);
    const char *v[] = { (const char *)&net };
    int lens[] = { 4 };
    int fmts[] = { 1 };
    Oid types[] = { 23 };
    PGresult *r = PQexecParams(c, "SELECT $1::int4", 1, types, v, lens, fmts, 1);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    ck_assert_int_eq(PQfformat(r, 0), 1);
    ck_assert_int_eq(PQgetlength(r, 0, 0), 4);
    uint32_t got;
    memcpy(&got, PQgetvalue(r, 0, 0), 4);
    ck_assert_int_eq((int32_t)ntohl(got), -5);
    PQclear(r);

    /* text parameter in, binary result out */
    const char *tv[] = { "305419896" };             /* 0x12345678 */
    r = PQexecParams(c, "SELECT $1::int4", 1, NULL, tv, NULL, NULL, 1);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    ck_assert_int_eq(PQgetlength(r, 0, 0), 4);
    ck_assert_int_eq(memcmp(PQgetvalue(r, 0, 0), "\x12\x34\x56\x78", 4), 0);
    PQclear(r);

    /* int8: 8 big-endian bytes */
    const char *v8[] = { "-2" };
    r = PQexecParams(c, "SELECT $1::int8", 1, NULL, v8, NULL, NULL, 1);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    ck_assert_int_eq(PQgetlength(r, 0, 0), 8);
    ck_assert_int_eq(memcmp(PQgetvalue(r, 0, 0), "\xff\xff\xff\xff\xff\xff\xff\xfe", 8), 0);
    PQclear(r);

    /* text's binary format is its bytes */
    const char *vt[] = { "abc" };
    r = PQexecParams(c, "SELECT $1::text", 1, NULL, vt, NULL, NULL, 1);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    ck_assert_int_eq(PQgetlength(r, 0, 0), 3);
    ck_assert_int_eq(memcmp(PQgetvalue(r, 0, 0), "abc", 3), 0);
    PQclear(r);
    PQfinish(c);
}
END_TEST

START_TEST(test_prepare_describe_execute)
{
    PGconn *c = connect_ok(NULL);
    PGresult *r = PQprepare(c, "s1", "SELECT $1::int4", 0, NULL);
    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s", PQresultErrorMessage(r));
    PQclear(r);

    r = PQdescribePrepared(c, "s1");
    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s", PQresultErrorMessage(r));
    ck_assert_int_eq(PQnparams(r), 1);
    ck_assert_uint_eq(PQparamtype(r, 0), 23);
    ck_assert_int_eq(PQnfields(r), 1);
    ck_assert_uint_eq(PQftype(r, 0), 23);
    ck_assert_str_eq(PQfname(r, 0), "int4");
    PQclear(r);

    for (int i = 0; i < 3; i++) {
        char buf[16];
        snprintf(buf, sizeof buf, "%d", 7 + i);
        const char *v[] = { buf };
        r = PQexecPrepared(c, "s1", 1, v, NULL, NULL, 0);
        ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
        ck_assert_str_eq(PQgetvalue(r, 0, 0), buf);
        PQclear(r);
    }

    r = PQprepare(c, "s2", "SELECT $1::text, $2::int8", 0, NULL);
    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s", PQresultErrorMessage(r));
    PQclear(r);
    r = PQdescribePrepared(c, "s2");
    ck_assert_int_eq(PQnparams(r), 2);
    ck_assert_uint_eq(PQparamtype(r, 0), 25);
    ck_assert_uint_eq(PQparamtype(r, 1), 20);
    ck_assert_int_eq(PQnfields(r), 2);
    ck_assert_uint_eq(PQftype(r, 0), 25);
    ck_assert_uint_eq(PQftype(r, 1), 20);
    PQclear(r);

    /* describing a portal-less statement that does not exist */
    r = PQdescribePrepared(c, "nope");
    ck_assert_int_eq(PQresultStatus(r), PGRES_FATAL_ERROR);
    ck_assert_str_eq(field(r, PG_DIAG_SQLSTATE), "26000");
    PQclear(r);

    /* duplicate name */
    r = PQprepare(c, "s1", "SELECT 1", 0, NULL);
    ck_assert_int_eq(PQresultStatus(r), PGRES_FATAL_ERROR);
    ck_assert_str_eq(field(r, PG_DIAG_SQLSTATE), "42P05");
    PQclear(r);

    /* the statement survives the error */
    const char *v[] = { "11" };
    r = PQexecPrepared(c, "s1", 1, v, NULL, NULL, 1);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    ck_assert_int_eq(PQgetlength(r, 0, 0), 4);
    ck_assert_int_eq(memcmp(PQgetvalue(r, 0, 0), "\0\0\0\x0b", 4), 0);
    PQclear(r);
    PQfinish(c);
}
END_TEST

START_TEST(test_pipeline)
{
    PGconn *c = connect_ok(NULL);
    ck_assert_int_eq(PQenterPipelineMode(c), 1);
    ck_assert_int_eq(PQpipelineStatus(c), PQ_PIPELINE_ON);
    const char *v1[] = { "1" }, *v2[] = { "two" }, *v3[] = { "3" };
    ck_assert_int_eq(PQsendQueryParams(c, "SELECT $1::int4", 1, NULL, v1, NULL, NULL, 0), 1);
    ck_assert_int_eq(PQsendQueryParams(c, "SELECT $1::text", 1, NULL, v2, NULL, NULL, 0), 1);
    ck_assert_int_eq(PQsendQueryParams(c, "SELECT $1::int8", 1, NULL, v3, NULL, NULL, 1), 1);
    ck_assert_int_eq(PQpipelineSync(c), 1);

    const char *want[] = { "1", "two" };
    for (int i = 0; i < 3; i++) {
        PGresult *r = PQgetResult(c);
        ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "query %d: %s %s", i,
                      PQresStatus(PQresultStatus(r)), PQresultErrorMessage(r));
        if (i < 2) {
            ck_assert_str_eq(PQgetvalue(r, 0, 0), want[i]);
        } else {
            ck_assert_int_eq(PQgetlength(r, 0, 0), 8);
            ck_assert_int_eq(memcmp(PQgetvalue(r, 0, 0), "\0\0\0\0\0\0\0\x03", 8), 0);
        }
        PQclear(r);
        ck_assert_ptr_null(PQgetResult(c));         /* end of this query's results */
    }
    PGresult *r = PQgetResult(c);
    ck_assert_int_eq(PQresultStatus(r), PGRES_PIPELINE_SYNC);
    PQclear(r);
    ck_assert_int_eq(PQexitPipelineMode(c), 1);
    r = exec_ok(c, "SELECT 1", PGRES_TUPLES_OK);
    PQclear(r);
    PQfinish(c);
}
END_TEST

START_TEST(test_pipeline_error_aborts_until_sync)
{
    PGconn *c = connect_ok(NULL);
    ck_assert_int_eq(PQenterPipelineMode(c), 1);
    const char *v[] = { "5" };
    ck_assert_int_eq(PQsendQueryParams(c, "SELECT $1::int4", 1, NULL, v, NULL, NULL, 0), 1);
    ck_assert_int_eq(PQsendQueryParams(c, "SELEC 1", 0, NULL, NULL, NULL, NULL, 0), 1);
    ck_assert_int_eq(PQsendQueryParams(c, "SELECT $1::int4", 1, NULL, v, NULL, NULL, 0), 1);
    ck_assert_int_eq(PQpipelineSync(c), 1);
    ck_assert_int_eq(PQsendQueryParams(c, "SELECT $1::int4", 1, NULL, v, NULL, NULL, 0), 1);
    ck_assert_int_eq(PQpipelineSync(c), 1);

    PGresult *r = PQgetResult(c);
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    ck_assert_ptr_null(PQgetResult(c));
    r = PQgetResult(c);
    ck_assert_int_eq(PQresultStatus(r), PGRES_FATAL_ERROR);
    ck_assert_str_eq(field(r, PG_DIAG_SQLSTATE), "42601");
    PQclear(r);
    ck_assert_ptr_null(PQgetResult(c));
    r = PQgetResult(c);
    ck_assert_int_eq(PQresultStatus(r), PGRES_PIPELINE_ABORTED);   /* skipped by the server */
    PQclear(r);
    ck_assert_ptr_null(PQgetResult(c));
    r = PQgetResult(c);
    ck_assert_int_eq(PQresultStatus(r), PGRES_PIPELINE_SYNC);
    PQclear(r);
    /* after the first Sync the next query runs normally */
    r = PQgetResult(c);
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "5");
    PQclear(r);
    ck_assert_ptr_null(PQgetResult(c));
    r = PQgetResult(c);
    ck_assert_int_eq(PQresultStatus(r), PGRES_PIPELINE_SYNC);
    PQclear(r);
    ck_assert_int_eq(PQexitPipelineMode(c), 1);
    PQfinish(c);
}
END_TEST

START_TEST(test_single_row_mode)
{
    PGconn *c = connect_ok(NULL);
    ck_assert_int_eq(PQsendQuery(c, "SHOW ALL"), 1);
    ck_assert_int_eq(PQsetSingleRowMode(c), 1);
    int rows = 0;
    PGresult *r;
    while ((r = PQgetResult(c)) != NULL) {
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_SINGLE_TUPLE) {
            ck_assert_int_eq(PQnfields(r), 3);
            rows++;
        } else {
            ck_assert_msg(st == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
            ck_assert_int_eq(PQntuples(r), 0);
            ck_assert_str_eq(PQfname(r, 0), "name");
            ck_assert_str_eq(PQfname(r, 1), "setting");
            ck_assert_str_eq(PQfname(r, 2), "description");
        }
        PQclear(r);
    }
    ck_assert_int_gt(rows, 5);
    PQfinish(c);
}
END_TEST

START_TEST(test_cancel)
{
    PGconn *c = connect_ok(NULL);
    char errbuf[256] = "";
    PGcancel *cn = PQgetCancel(c);
    ck_assert_ptr_nonnull(cn);
    /* nothing is running for a local statement: the request is accepted */
    ck_assert_msg(PQcancel(cn, errbuf, sizeof errbuf) == 1, "PQcancel: %s", errbuf);
    PQfreeCancel(cn);
    sleep_ms(100);
    PGresult *r = exec_ok(c, "SELECT 1", PGRES_TUPLES_OK);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "1");
    PQclear(r);
    ck_assert_int_eq(PQstatus(c), CONNECTION_OK);
    PQfinish(c);
}
END_TEST

START_TEST(test_backend_pid)
{
    PGconn *c = connect_ok(NULL);
    char want[32];
    snprintf(want, sizeof want, "%d", PQbackendPID(c));
    ck_assert_int_gt(PQbackendPID(c), 0);
    PGresult *r = exec_ok(c, "SELECT pg_backend_pid()", PGRES_TUPLES_OK);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), want);
    PQclear(r);
    PQfinish(c);
}
END_TEST

START_TEST(test_wrong_password)
{
    PGconn *c = connect_with(USER, "wrong", NULL);
    ck_assert_int_eq(PQstatus(c), CONNECTION_BAD);
    ck_assert_msg(strstr(PQerrorMessage(c), "password authentication failed for user \"alice\"") != NULL,
                  "got: %s", PQerrorMessage(c));
    PQfinish(c);
}
END_TEST

START_TEST(test_unknown_user)
{
    PGconn *c = connect_with("mallory", PASSWORD, NULL);
    ck_assert_int_eq(PQstatus(c), CONNECTION_BAD);
    ck_assert_msg(strstr(PQerrorMessage(c), "password authentication failed for user \"mallory\"") != NULL,
                  "got: %s", PQerrorMessage(c));
    PQfinish(c);
}
END_TEST

START_TEST(test_error_fields)
{
    PGconn *c = connect_ok(NULL);
    PGresult *r = PQexec(c, "SELECT * FROM nosuch");
    ck_assert_int_eq(PQresultStatus(r), PGRES_FATAL_ERROR);
    ck_assert_str_eq(field(r, PG_DIAG_SQLSTATE), "42P01");
    ck_assert_str_eq(field(r, PG_DIAG_MESSAGE_PRIMARY), "relation \"nosuch\" does not exist");
    ck_assert_str_eq(field(r, PG_DIAG_SEVERITY), "ERROR");
    PQclear(r);

    r = PQexec(c, "SELEC 1");
    ck_assert_str_eq(field(r, PG_DIAG_SQLSTATE), "42601");
    ck_assert_str_eq(field(r, PG_DIAG_STATEMENT_POSITION), "1");
    PQclear(r);

    r = PQexec(c, "SET no_such_setting = 1");
    ck_assert_str_eq(field(r, PG_DIAG_SQLSTATE), "42704");
    ck_assert_str_eq(field(r, PG_DIAG_MESSAGE_PRIMARY),
                     "unrecognized configuration parameter \"no_such_setting\"");
    PQclear(r);

    r = PQexec(c, "INSERT INTO t VALUES (1)");
    ck_assert_str_eq(field(r, PG_DIAG_SQLSTATE), "0A000");
    PQclear(r);

    const char *bad[] = { "abc" };
    r = PQexecParams(c, "SELECT $1::int4", 1, NULL, bad, NULL, NULL, 0);
    ck_assert_str_eq(field(r, PG_DIAG_SQLSTATE), "22P02");
    PQclear(r);

    r = exec_ok(c, "SELECT 1", PGRES_TUPLES_OK);
    PQclear(r);
    PQfinish(c);
}
END_TEST

START_TEST(test_transaction_status)
{
    PGconn *c = connect_ok(NULL);
    PGresult *r = exec_ok(c, "BEGIN", PGRES_COMMAND_OK);
    ck_assert_str_eq(PQcmdStatus(r), "BEGIN");
    PQclear(r);
    ck_assert_int_eq(PQtransactionStatus(c), PQTRANS_INTRANS);
    r = PQexec(c, "SELECT * FROM nosuch");
    PQclear(r);
    ck_assert_int_eq(PQtransactionStatus(c), PQTRANS_INERROR);
    r = PQexec(c, "SELECT 1");
    ck_assert_str_eq(field(r, PG_DIAG_SQLSTATE), "25P02");
    ck_assert_str_eq(field(r, PG_DIAG_MESSAGE_PRIMARY),
                     "current transaction is aborted, commands ignored until end of transaction block");
    PQclear(r);
    r = exec_ok(c, "COMMIT", PGRES_COMMAND_OK);
    ck_assert_str_eq(PQcmdStatus(r), "ROLLBACK");
    PQclear(r);
    ck_assert_int_eq(PQtransactionStatus(c), PQTRANS_IDLE);
    PQfinish(c);
}
END_TEST

/* ------------------------------------------------------------------ */

static Suite *libpq_suite(void)
{
    Suite *s = suite_create("libpq");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_connect_scram);
    tcase_add_test(tc, test_parameter_status);
    tcase_add_test(tc, test_parameter_status_from_options);
    tcase_add_test(tc, test_exec_select_1);
    tcase_add_test(tc, test_exec_literals);
    tcase_add_test(tc, test_exec_multi_statement);
    tcase_add_test(tc, test_exec_params_text);
    tcase_add_test(tc, test_exec_params_binary);
    tcase_add_test(tc, test_prepare_describe_execute);
    tcase_add_test(tc, test_pipeline);
    tcase_add_test(tc, test_pipeline_error_aborts_until_sync);
    tcase_add_test(tc, test_single_row_mode);
    tcase_add_test(tc, test_cancel);
    tcase_add_test(tc, test_backend_pid);
    tcase_add_test(tc, test_wrong_password);
    tcase_add_test(tc, test_unknown_user);
    tcase_add_test(tc, test_error_fields);
    tcase_add_test(tc, test_transaction_status);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    g_main_pid = getpid();
    signal(SIGPIPE, SIG_IGN);
    atexit(cleanup_at_exit);
    const char *ext = getenv("ITEST_EXTERNAL_PORT");
    if (ext && *ext) {
        g_port = atoi(ext);
    } else if (start_server() < 0) {
        fprintf(stderr, "could not start riffq\n");
        /* a summary line so tests/run.sh counts this as one failure */
        printf("0%%: Checks: 1, Failures: 1, Errors: 0\n");
        return 1;
    }
    SRunner *sr = srunner_create(libpq_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);

    if (ext && *ext) return failed ? 1 : 0;
    int status = stop_server();
    int clean = status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!clean) {
        fprintf(stderr, "riffq did not exit 0 after SIGTERM (wait status %d)\n", status);
        failed++;
    }
    if (failed) dump_log();
    remove_dir();
    return failed ? 1 : 0;
}
