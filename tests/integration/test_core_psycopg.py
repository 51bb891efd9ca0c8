"""
psycopg (v3) and psycopg2 against build/riffq.

psycopg 3 is the interesting driver here: `cursor.execute(sql, params)` binds
server side (Parse/Bind/Describe/Execute/Sync through libpq's
PQsendQueryParams), `prepare=True` uses named prepared statements, ints go
out as binary int2/int4/int8 parameters, and `cursor(binary=True)` asks for
binary results.  psycopg2 interpolates client side and uses the simple query
protocol, so the two cover both protocols through libpq.
"""
import datetime
import decimal

import psycopg
import psycopg2
import pytest
from psycopg import errors, pq, sql

from harness import PASSWORD, USER


def connect(srv, **kw):
    kw.setdefault("autocommit", True)
    return psycopg.connect(srv.dsn(**{k: v for k, v in kw.items() if k != "autocommit"}),
                           autocommit=kw["autocommit"])


# ---------------------------------------------------------------------------
# the Postgres cluster fixture itself (used by later suites)
# ---------------------------------------------------------------------------
def test_pg_cluster_answers(pg_cluster):
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.info.server_version // 10000 == 15


# ---------------------------------------------------------------------------
# connection
# ---------------------------------------------------------------------------
def test_connect_parameter_status(riffq):
    with connect(riffq, application_name="pytest-psycopg") as conn:
        info = conn.info
        assert info.parameter_status("server_version") == "15.8 (riffq 0.1.0)"
        # libpq parses "15.8 ..." into 150008
        assert info.server_version == 150008
        assert info.parameter_status("server_encoding") == "UTF8"
        assert info.parameter_status("client_encoding") == "UTF8"
        assert info.parameter_status("DateStyle") == "ISO, MDY"
        assert info.parameter_status("TimeZone") == "UTC"
        assert info.parameter_status("integer_datetimes") == "on"
        assert info.parameter_status("standard_conforming_strings") == "on"
        assert info.parameter_status("is_superuser") == "off"
        assert info.parameter_status("session_authorization") == USER
        assert info.parameter_status("application_name") == "pytest-psycopg"
        assert info.encoding == "utf-8"
        assert info.transaction_status == pq.TransactionStatus.IDLE
        # psycopg uses the TimeZone parameter for timestamptz: it must be valid
        assert str(info.timezone) == "UTC"


def test_backend_pid(riffq):
    with connect(riffq) as conn:
        pid = conn.info.backend_pid
        assert pid > 0
        assert conn.execute("SELECT pg_backend_pid()").fetchone() == (pid,)


def test_timezone_from_options(riffq):
    # libpq's PGTZ/`options=-c TimeZone=...` ends up in the startup packet
    with connect(riffq, options="-c TimeZone=Europe/Paris") as conn:
        assert conn.info.parameter_status("TimeZone") == "Europe/Paris"
        assert conn.execute("SHOW TimeZone").fetchone() == ("Europe/Paris",)


def test_database_name(riffq):
    with connect(riffq) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (USER,)
    with connect(riffq, dbname="analytics") as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("analytics",)


@pytest.mark.parametrize("method", ["scram-sha-256", "md5", "password", "trust"])
def test_auth_methods(riffq_factory, method):
    srv = riffq_factory(auth={"method": method, "users": {USER: PASSWORD}})
    with connect(srv) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (USER,)


def test_scram_verifier_in_config(riffq_factory):
    # the user's secret may be a SCRAM verifier as Postgres stores it; this
    # one is for password "secret" (salt "riffq-itest-salt", 4096 iterations)
    import base64, hashlib, hmac
    salt = b"riffq-itest-salt"
    salted = hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), salt, 4096)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", hashlib.sha256).digest()).digest()
    server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    verifier = "SCRAM-SHA-256$4096:%s$%s:%s" % (base64.b64encode(salt).decode(),
                                                base64.b64encode(stored).decode(),
                                                base64.b64encode(server).decode())
    srv = riffq_factory(auth={"method": "scram-sha-256", "users": {USER: verifier}})
    with connect(srv) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(srv.dsn(password="wrong"))


@pytest.mark.parametrize("user,password", [(USER, "wrong"), ("mallory", PASSWORD)])
def test_auth_failure(riffq, user, password):
    with pytest.raises(psycopg.OperationalError) as ei:
        psycopg.connect(riffq.dsn(user=user, password=password))
    assert 'password authentication failed for user "%s"' % user in str(ei.value)


def test_md5_wrong_password(riffq_factory):
    srv = riffq_factory(auth={"method": "md5", "users": {USER: PASSWORD}})
    with pytest.raises(psycopg.OperationalError,
                       match='password authentication failed for user "alice"'):
        psycopg.connect(srv.dsn(password="wrong"))


def test_tls_require(riffq_factory, tls_cert):
    cert, key = tls_cert
    srv = riffq_factory(tls={"cert": cert, "key": key, "mode": "require"})
    with psycopg.connect(srv.dsn(sslmode="require"), autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)
    # verify-ca against our own self-signed cert also works
    with psycopg.connect(srv.dsn(sslmode="verify-full", sslrootcert=cert, host="localhost",
                                 hostaddr="127.0.0.1"),
                         autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(srv.dsn(sslmode="disable"))


def test_tls_prefer_when_disabled(riffq):
    # sslmode=prefer sends SSLRequest, gets 'N', continues in plaintext
    with psycopg.connect(riffq.dsn(sslmode="prefer"), autocommit=True) as conn:
        assert not conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)


# ---------------------------------------------------------------------------
# values and types
# ---------------------------------------------------------------------------
def test_select_literals(riffq):
    with connect(riffq) as conn:
        cur = conn.execute("SELECT 1 AS a, 'x' AS b, NULL AS c, true AS d, 2.5 AS e, 9999999999 AS f")
        assert cur.fetchone() == (1, "x", None, True, decimal.Decimal("2.5"), 9999999999)
        assert [(d.name, d.type_code) for d in cur.description] == [
            ("a", 23), ("b", 25), ("c", 25), ("d", 16), ("e", 1700), ("f", 20)]


def test_select_casts_and_functions(riffq):
    with connect(riffq, application_name="psy") as conn:
        assert conn.execute("SELECT 'x'::varchar").fetchone() == ("x",)
        cur = conn.execute("SELECT '2024-01-02'::date")
        assert cur.description[0].type_code == 1082
        assert cur.fetchone() == (datetime.date(2024, 1, 2),)
        (v,) = conn.execute("SELECT version()").fetchone()
        assert v.startswith("PostgreSQL 15.8 (riffq 0.1.0)")
        assert conn.execute("SELECT current_user").fetchone() == (USER,)
        assert conn.execute("SELECT current_setting('application_name')").fetchone() == ("psy",)
        assert conn.execute("SELECT current_schema()").fetchone() == ("public",)


def test_server_side_binding(riffq):
    # %s with a Python int: psycopg binds a binary int2/int4/int8 parameter;
    # with a str: a text parameter of unknown type.  The cast decides.
    with connect(riffq) as conn:
        cur = conn.cursor()
        cur.execute("SELECT %s::int4", [42])
        assert cur.fetchone() == (42,)
        assert cur.description[0].type_code == 23
        cur.execute("SELECT %s::int8", [2**40])
        assert cur.fetchone() == (2**40,)
        cur.execute("SELECT %s::text", ["héllo wörld"])
        assert cur.fetchone() == ("héllo wörld",)
        cur.execute("SELECT %s::text", [None])
        assert cur.fetchone() == (None,)
        # explicit text (%t) and binary (%b) parameter formats
        cur.execute("SELECT %t::int4", [7])
        assert cur.fetchone() == (7,)
        cur.execute("SELECT %b::int4", [-7])
        assert cur.fetchone() == (-7,)


def test_binary_results(riffq):
    # cursor(binary=True) requests binary result columns (format 1)
    with connect(riffq) as conn:
        cur = conn.cursor(binary=True)
        cur.execute("SELECT %s::int4", [123456])
        assert cur.fetchone() == (123456,)
        assert cur.pgresult.fformat(0) == pq.Format.BINARY
        assert cur.pgresult.get_value(0, 0) == (123456).to_bytes(4, "big")
        cur.execute("SELECT %s::text", ["bin"])
        assert cur.fetchone() == ("bin",)
        assert cur.pgresult.get_value(0, 0) == b"bin"
        cur.execute("SELECT %s::int8", [-5])
        assert cur.pgresult.get_value(0, 0) == (-5).to_bytes(8, "big", signed=True)
        cur.execute("SELECT 1 AS a, 'x' AS b, true AS d, '2024-01-02'::date AS g")
        assert cur.fetchone() == (1, "x", True, datetime.date(2024, 1, 2))


def test_prepare_true(riffq):
    # prepare=True: Parse once into a named statement, then Bind/Execute it
    with connect(riffq) as conn:
        for i in range(5):
            cur = conn.execute("SELECT %s::int4", [i], prepare=True)
            assert cur.fetchone() == (i,)
        for s in ["a", "b"]:
            assert conn.execute("SELECT %s::text", [s], prepare=True).fetchone() == (s,)


def test_auto_prepare_threshold(riffq):
    # by default psycopg prepares a query after 5 executions: the 6th and
    # later run a named statement
    with connect(riffq) as conn:
        conn.prepare_threshold = 2
        for i in range(8):
            assert conn.execute("SELECT %s::int8", [i]).fetchone() == (i,)


def test_executemany_pipeline(riffq):
    # executemany runs in pipeline mode with psycopg >= 3.1 on libpq >= 14
    with connect(riffq) as conn:
        cur = conn.cursor()
        cur.executemany("SELECT %s::int4", [(i,) for i in range(10)], returning=True)
        got = []
        while True:
            got.append(cur.fetchone())
            if not cur.nextset():
                break
        assert got == [(i,) for i in range(10)]


def test_explicit_pipeline(riffq):
    if not psycopg.Pipeline.is_supported():
        pytest.skip("libpq without pipeline support")
    with connect(riffq) as conn:
        with conn.pipeline():
            c1 = conn.execute("SELECT %s::int4", [1])
            c2 = conn.execute("SELECT %s::text", ["two"])
            c3 = conn.execute("SHOW application_name")
        assert c1.fetchone() == (1,)
        assert c2.fetchone() == ("two",)
        assert c3.fetchone() == ("",)


def test_show_all_fetchmany(riffq):
    # (psycopg's server-side cursors use DECLARE, which the core does not
    # answer; the row-limited Execute path is covered by the raw protocol and
    # asyncpg suites.)
    with connect(riffq) as conn:
        cur = conn.execute("SHOW ALL")
        assert [d.name for d in cur.description] == ["name", "setting", "description"]
        rows = cur.fetchmany(3)
        assert len(rows) == 3
        settings = dict((r[0], r[1]) for r in rows + cur.fetchall())
        assert settings["server_version"] == "15.8 (riffq 0.1.0)"


# ---------------------------------------------------------------------------
# SET / SHOW
# ---------------------------------------------------------------------------
def test_set_show(riffq):
    with connect(riffq) as conn:
        assert conn.execute("SHOW search_path").fetchone() == ('"$user", public',)
        cur = conn.execute("SET application_name = 'x'")
        assert cur.statusmessage == "SET"
        assert conn.info.parameter_status("application_name") == "x"
        assert conn.execute("SHOW application_name").fetchone() == ("x",)
        conn.execute("SET TIME ZONE 'Europe/Paris'")
        assert conn.info.parameter_status("TimeZone") == "Europe/Paris"
        assert conn.execute("SHOW TimeZone").fetchone() == ("Europe/Paris",)
        conn.execute("SET search_path TO a, b")
        assert conn.execute("SHOW search_path").fetchone() == ("a, b",)
        assert conn.execute("RESET ALL").statusmessage == "RESET"
        assert conn.execute("SHOW search_path").fetchone() == ('"$user", public',)
        assert conn.execute("SHOW application_name").fetchone() == ("",)
        assert conn.info.parameter_status("application_name") == ""


def test_set_unknown(riffq):
    with connect(riffq) as conn:
        with pytest.raises(errors.UndefinedObject) as ei:
            conn.execute("SET no_such_setting = 1")
        assert ei.value.sqlstate == "42704"
        assert ei.value.diag.message_primary == 'unrecognized configuration parameter "no_such_setting"'
        conn.execute("SET myapp.x = '1'")
        assert conn.execute("SHOW myapp.x").fetchone() == ("1",)


def test_set_via_sql_composition(riffq):
    with connect(riffq) as conn:
        conn.execute(sql.SQL("SET application_name = {}").format(sql.Literal("it's")))
        assert conn.execute("SHOW application_name").fetchone() == ("it's",)


# ---------------------------------------------------------------------------
# transactions (psycopg's default: not autocommit, BEGIN before the first statement)
# ---------------------------------------------------------------------------
def test_transactions(riffq):
    TS = pq.TransactionStatus
    with connect(riffq, autocommit=False) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.info.transaction_status == TS.INTRANS
        conn.commit()
        assert conn.info.transaction_status == TS.IDLE
        with pytest.raises(errors.UndefinedTable) as ei:
            conn.execute("SELECT * FROM nosuch")
        assert ei.value.diag.message_primary == 'relation "nosuch" does not exist'
        assert conn.info.transaction_status == TS.INERROR
        with pytest.raises(errors.InFailedSqlTransaction) as ei:
            conn.execute("SELECT 1")
        assert ei.value.sqlstate == "25P02"
        assert ei.value.diag.message_primary == (
            "current transaction is aborted, commands ignored until end of transaction block")
        conn.rollback()
        assert conn.info.transaction_status == TS.IDLE
        assert conn.execute("SELECT 2").fetchone() == (2,)
        conn.rollback()


def test_transaction_block_and_set_local(riffq):
    with connect(riffq) as conn:
        conn.execute("SET application_name = 'outer'")
        with conn.transaction():
            conn.execute("SET LOCAL application_name = 'inner'")
            assert conn.execute("SHOW application_name").fetchone() == ("inner",)
        assert conn.execute("SHOW application_name").fetchone() == ("outer",)


def test_commit_in_failed_transaction(riffq):
    with connect(riffq) as conn:
        conn.execute("BEGIN")
        with pytest.raises(errors.SyntaxError):
            conn.execute("SELEC 1")
        cur = conn.execute("COMMIT")
        assert cur.statusmessage == "ROLLBACK"
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------
def test_errors(riffq):
    with connect(riffq) as conn:
        with pytest.raises(errors.UndefinedTable):
            conn.execute("SELECT * FROM nosuch")
        with pytest.raises(errors.FeatureNotSupported) as ei:
            conn.execute("INSERT INTO t VALUES (1)")
        assert "insert" in ei.value.diag.message_primary.lower()
        with pytest.raises(errors.FeatureNotSupported) as ei:
            conn.execute("CREATE TABLE t (a int)")
        assert "create table" in ei.value.diag.message_primary.lower()
        with pytest.raises(errors.SyntaxError) as ei:
            conn.execute("SELEC 1")
        assert ei.value.diag.statement_position == "1"
        with pytest.raises(errors.InvalidTextRepresentation):
            conn.execute("SELECT %s::int4", ["abc"])
        # still usable after all that
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_cancel_idle(riffq):
    with connect(riffq) as conn:
        conn.cancel()           # nothing running: the request is simply accepted
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_two_clients_independent(riffq):
    with connect(riffq) as a, connect(riffq) as b:
        a.execute("SET application_name = 'A'")
        b.execute("SET application_name = 'B'")
        assert a.execute("SHOW application_name").fetchone() == ("A",)
        assert b.execute("SHOW application_name").fetchone() == ("B",)
        assert a.info.backend_pid != b.info.backend_pid


# ---------------------------------------------------------------------------
# psycopg2: client-side interpolation, simple query protocol
# ---------------------------------------------------------------------------
def test_psycopg2_simple_protocol(riffq):
    conn = psycopg2.connect(riffq.dsn())
    try:
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("SELECT %s::int4, %s::text", (41, "o'k"))
        assert cur.fetchone() == (41, "o'k")
        cur.execute("SELECT 1 AS a, 'x' AS b, NULL AS c, true AS d, 2.5 AS e, 9999999999 AS f")
        assert cur.fetchone() == (1, "x", None, True, decimal.Decimal("2.5"), 9999999999)
        # several statements in one Query: psycopg2 keeps the last result
        cur.execute("SELECT 1; SELECT 2")
        assert cur.fetchone() == (2,)
        assert conn.server_version == 150008
        assert conn.get_parameter_status("server_version") == "15.8 (riffq 0.1.0)"
    finally:
        conn.close()


def test_psycopg2_transactions(riffq):
    conn = psycopg2.connect(riffq.dsn())
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1")       # psycopg2 sends BEGIN first
        assert conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_INTRANS
        with pytest.raises(psycopg2.errors.UndefinedTable):
            cur.execute("SELECT * FROM nosuch")
        assert conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_INERROR
        with pytest.raises(psycopg2.errors.InFailedSqlTransaction):
            cur.execute("SELECT 1")
        conn.rollback()
        cur.execute("SELECT 3")
        assert cur.fetchone() == (3,)
        conn.commit()
    finally:
        conn.close()
