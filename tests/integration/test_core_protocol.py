"""
Raw v3 protocol tests: we write the bytes ourselves (struct) so we can assert
message order, type OIDs, type lengths and format codes exactly, and produce
inputs no driver sends (protocol 3.1, _pq_ options, protocol 2.0, oversize and
truncated messages, bogus cancel keys, a silent client, unknown message types).

Where an expectation is Postgres behaviour not spelled out in the gateway's
spec (command tags, SQLSTATEs of the extended protocol, column names of casts),
it was checked against a real PostgreSQL 15.
"""
import socket
import struct
import time

import pytest

from harness import (PASSWORD, USER, FLUSH, SYNC, PROTO_3_0, CANCEL_REQUEST, RawConn, ServerError,
                     bind_msg, close_msg, command_tag, describe_msg, errors_of, execute_msg,
                     msg, cstr, parse_error_fields, parse_msg, parse_negotiate,
                     parse_param_description, parse_row_description, rows_of, types_of)

INT4, INT8, TEXT, BOOL, NUMERIC, DATE, VARCHAR = 23, 20, 25, 16, 1700, 1082, 1043


def connect(srv, user=USER, password=PASSWORD, **params):
    c = RawConn.tcp(srv.host, srv.port)
    c.startup(user, password, **params)
    assert c.status == "I"
    return c


def single_value(msgs):
    rows = rows_of(msgs)
    assert len(rows) == 1 and len(rows[0]) == 1, msgs
    return rows[0][0]


def row_desc(msgs):
    rds = [parse_row_description(b) for t, b in msgs if t == "T"]
    assert len(rds) == 1, msgs
    return rds[0]


def tags(msgs):
    return [command_tag(b) for t, b in msgs if t == "C"]


def assert_alive(srv):
    """A fresh client still gets served: the gateway survived what came before."""
    with connect(srv) as c:
        assert single_value(c.query("SELECT 1")) == b"1"


# ---------------------------------------------------------------------------
# startup
# ---------------------------------------------------------------------------
def test_startup_message_order_and_parameter_status(riffq):
    with RawConn.tcp(riffq.host, riffq.port) as c:
        msgs = c.startup(USER, PASSWORD, application_name="rawtest")
        # SCRAM: SASL (10), SASLContinue (11), SASLFinal (12), Ok (0)
        assert c.auth_codes == [10, 11, 12, 0]
        # after AuthenticationOk: ParameterStatus*, exactly one BackendKeyData, ReadyForQuery
        t = types_of(msgs)
        assert t.endswith("Z") and set(t[:-1]) <= {"S", "K"} and t.count("K") == 1, t
        assert c.status == "I"
        expected = {
            "server_version": "15.8 (riffq 0.1.0)",
            "server_encoding": "UTF8",
            "client_encoding": "UTF8",
            "DateStyle": "ISO, MDY",
            "TimeZone": "UTC",
            "IntervalStyle": "postgres",
            "integer_datetimes": "on",
            "standard_conforming_strings": "on",
            "is_superuser": "off",
            "session_authorization": USER,
            "application_name": "rawtest",
        }
        for k, v in expected.items():
            assert c.params.get(k) == v, (k, c.params)


def test_application_name_defaults_to_empty(riffq):
    with connect(riffq) as c:
        assert c.params.get("application_name") == ""


def test_server_version_from_config(riffq_factory):
    srv = riffq_factory(server_version="15.4 (custom)")
    with connect(srv) as c:
        assert c.params["server_version"] == "15.4 (custom)"


def test_timezone_from_startup(riffq):
    with connect(riffq, TimeZone="Europe/Paris") as c:
        assert c.params["TimeZone"] == "Europe/Paris"
        assert single_value(c.query("SHOW TimeZone")) == b"Europe/Paris"


@pytest.mark.parametrize("enc", ["'utf-8'", "utf8", "UNICODE", "UTF8"])
def test_client_encoding_normalized(riffq, enc):
    with connect(riffq, client_encoding=enc) as c:
        assert c.params["client_encoding"] == "UTF8"


def test_client_encoding_other_refused_at_startup(riffq):
    with RawConn.tcp(riffq.host, riffq.port) as c:
        with pytest.raises(ServerError) as ei:
            c.startup(USER, PASSWORD, client_encoding="LATIN1")
        assert ei.value.sqlstate in ("22023", "0A000"), ei.value.fields
        c.wait_closed()
    assert_alive(riffq)


def test_set_client_encoding_other_refused(riffq):
    with connect(riffq) as c:
        msgs = c.query("SET client_encoding TO 'LATIN1'")
        errs = errors_of(msgs)
        assert len(errs) == 1 and errs[0]["C"] in ("22023", "0A000"), msgs
        assert c.status == "I"
        assert single_value(c.query("SHOW client_encoding")) == b"UTF8"


def test_database_defaults_to_user(riffq):
    with connect(riffq) as c:
        assert single_value(c.query("SELECT current_database()")) == USER.encode()
    with connect(riffq, database="shop") as c:
        assert single_value(c.query("SELECT current_database()")) == b"shop"


def test_backend_pid_matches_backend_key_data(riffq):
    with connect(riffq) as c:
        assert c.backend_pid is not None
        assert single_value(c.query("SELECT pg_backend_pid()")) == str(c.backend_pid).encode()


# NegotiateProtocolVersion's first field: the docs call it "newest minor
# version supported", but Postgres sends the whole version word
# (PG_PROTOCOL_LATEST = 3 << 16 | 0) and libpq reads it that way; so minor 0
# is 196608 on the wire.
NEGOTIATED_3_0 = PROTO_3_0


def test_protocol_3_1_negotiated_down(riffq):
    # A 3.1 client gets NegotiateProtocolVersion (3.0, no unknown options) and
    # then the normal authentication exchange.
    with RawConn.tcp(riffq.host, riffq.port) as c:
        c.negotiate = None
        c.startup(USER, PASSWORD, version=(3 << 16) | 1)
        assert c.negotiate == (NEGOTIATED_3_0, []), c.negotiate
        assert single_value(c.query("SELECT 1")) == b"1"


def test_pq_options_negotiated(riffq):
    with RawConn.tcp(riffq.host, riffq.port) as c:
        c.negotiate = None
        c.startup(USER, PASSWORD, **{"_pq_.foo": "bar"})
        assert c.negotiate == (NEGOTIATED_3_0, ["_pq_.foo"]), c.negotiate
        assert single_value(c.query("SELECT 1")) == b"1"


def test_negotiate_comes_before_authentication(riffq):
    with RawConn.tcp(riffq.host, riffq.port) as c:
        c.send_startup({"user": USER, "_pq_.a": "1", "_pq_.b": "2"}, version=(3 << 16) | 5)
        t, body = c.read_message()
        assert t == "v", (t, body)
        assert parse_negotiate(body) == (NEGOTIATED_3_0, ["_pq_.a", "_pq_.b"])
        t, body = c.read_message()
        assert t == "R" and struct.unpack("!I", body[:4])[0] == 10


def test_protocol_2_refused(riffq):
    # The answer is an ErrorResponse and a close.  A v3-framed error must carry
    # 0A000; Postgres 15 itself answers a 2.0 client in the v2 framing ('E',
    # then a NUL-terminated text with no length word), which we also accept.
    with RawConn.tcp(riffq.host, riffq.port) as c:
        c.send_startup({"user": USER}, version=2 << 16)
        data = c.read_all_until_closed()
        assert data[:1] == b"E", data
        (n,) = struct.unpack("!I", data[1:5])
        if n == len(data) - 1:
            fields = parse_error_fields(data[5:])
            assert fields["C"] == "0A000", fields
            assert "protocol" in fields["M"], fields
        else:
            assert b"unsupported frontend protocol" in data, data
    assert_alive(riffq)


def test_startup_without_user_refused(riffq):
    with RawConn.tcp(riffq.host, riffq.port) as c:
        c.send_startup({"database": "x"})
        msgs = c.wait_closed()
        errs = errors_of(msgs)
        # Postgres: 28000 no PostgreSQL user name specified in startup packet
        assert len(errs) == 1 and errs[0]["C"] == "28000", msgs


def test_gssenc_request_refused_then_startup(riffq):
    with RawConn.tcp(riffq.host, riffq.port) as c:
        assert c.gssenc_request() == b"N"
        c.startup(USER, PASSWORD)
        assert single_value(c.query("SELECT 1")) == b"1"


def test_ssl_request_refused_when_tls_disabled(riffq):
    with RawConn.tcp(riffq.host, riffq.port) as c:
        assert c.ssl_request() == b"N"
        c.startup(USER, PASSWORD)
        assert single_value(c.query("SELECT 1")) == b"1"


def test_unix_socket_listener(riffq_factory, short_tmp):
    port = 54000 + (hash(short_tmp) % 1000)
    path = "%s/.s.PGSQL.%d" % (short_tmp, port)
    riffq_factory(listen=[{"unix": path}])
    with RawConn.unix(path) as c:
        c.startup(USER, PASSWORD)
        assert single_value(c.query("SELECT 1")) == b"1"


# ---------------------------------------------------------------------------
# authentication
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("method,codes", [("scram-sha-256", [10, 11, 12, 0]),
                                          ("md5", [5, 0]),
                                          ("password", [3, 0]),
                                          ("trust", [0])])
def test_auth_methods(riffq_factory, method, codes):
    srv = riffq_factory(auth={"method": method, "users": {USER: PASSWORD}})
    with RawConn.tcp(srv.host, srv.port) as c:
        c.startup(USER, PASSWORD)
        assert c.auth_codes == codes
        assert single_value(c.query("SELECT current_user")) == USER.encode()


@pytest.mark.parametrize("method", ["scram-sha-256", "md5", "password"])
@pytest.mark.parametrize("user", [USER, "mallory"])
def test_auth_failure(riffq_factory, method, user):
    # Wrong password and unknown user give the same answer: no user enumeration.
    srv = riffq_factory(auth={"method": method, "users": {USER: PASSWORD}})
    with RawConn.tcp(srv.host, srv.port) as c:
        with pytest.raises(ServerError) as ei:
            c.startup(user, "wrong")
        assert ei.value.sqlstate == "28P01"
        assert ei.value.message == 'password authentication failed for user "%s"' % user
        c.wait_closed()
    assert_alive(srv)


def test_auth_timeout_closes_silent_client(riffq_factory):
    srv = riffq_factory(limits={"auth_timeout": 500})
    with RawConn.tcp(srv.host, srv.port) as c:
        t0 = time.monotonic()
        c.wait_closed(timeout=8)
        elapsed = time.monotonic() - t0
        assert 0.3 <= elapsed < 8, elapsed
    assert_alive(srv)


def test_auth_timeout_during_password_exchange(riffq_factory):
    srv = riffq_factory(limits={"auth_timeout": 500})
    with RawConn.tcp(srv.host, srv.port) as c:
        c.send_startup({"user": USER})
        t, body = c.read_message()
        assert t == "R"
        c.wait_closed(timeout=8)       # we never answer the SASL request


# ---------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------
def tls_conf(tls_cert, mode):
    cert, key = tls_cert
    return {"cert": cert, "key": key, "mode": mode}


def test_tls_require_refuses_plaintext(riffq_factory, tls_cert):
    srv = riffq_factory(tls=tls_conf(tls_cert, "require"))
    with RawConn.tcp(srv.host, srv.port) as c:
        c.send_startup({"user": USER})
        msgs = c.wait_closed()
        errs = errors_of(msgs)
        assert len(errs) == 1 and errs[0]["C"] == "28000", msgs


@pytest.mark.parametrize("mode", ["require", "allow"])
def test_tls_handshake_then_startup(riffq_factory, tls_cert, mode):
    srv = riffq_factory(tls=tls_conf(tls_cert, mode))
    with RawConn.tcp(srv.host, srv.port) as c:
        assert c.ssl_request() == b"S"
        c.start_tls()
        c.startup(USER, PASSWORD)
        assert single_value(c.query("SELECT 1")) == b"1"


def test_tls_allow_accepts_plaintext(riffq_factory, tls_cert):
    srv = riffq_factory(tls=tls_conf(tls_cert, "allow"))
    with connect(srv) as c:
        assert single_value(c.query("SELECT 1")) == b"1"


def test_tls_disable_answers_n(riffq_factory, tls_cert):
    srv = riffq_factory(tls=tls_conf(tls_cert, "disable"))
    with RawConn.tcp(srv.host, srv.port) as c:
        assert c.ssl_request() == b"N"
        c.startup(USER, PASSWORD)
        assert single_value(c.query("SELECT 1")) == b"1"


# ---------------------------------------------------------------------------
# simple query protocol
# ---------------------------------------------------------------------------
def test_select_1_exact(riffq):
    with connect(riffq) as c:
        msgs = c.query("SELECT 1")
        assert types_of(msgs) == "TDCZ"
        assert row_desc(msgs) == [dict(name="?column?", table_oid=0, attnum=0, type_oid=INT4,
                                       typlen=4, typmod=-1, format=0)]
        assert rows_of(msgs) == [[b"1"]]
        assert tags(msgs) == ["SELECT 1"]
        assert c.status == "I"


def test_select_literals_types(riffq):
    with connect(riffq) as c:
        msgs = c.query("SELECT 1 AS a, 'x' AS b, NULL AS c, true AS d, 2.5 AS e, 9999999999 AS f")
        cols = row_desc(msgs)
        assert [(x["name"], x["type_oid"], x["typlen"], x["format"]) for x in cols] == [
            ("a", INT4, 4, 0), ("b", TEXT, -1, 0), ("c", TEXT, -1, 0),
            ("d", BOOL, 1, 0), ("e", NUMERIC, -1, 0), ("f", INT8, 8, 0)]
        assert rows_of(msgs) == [[b"1", b"x", None, b"t", b"2.5", b"9999999999"]]
        assert tags(msgs) == ["SELECT 1"]


def test_select_casts(riffq):
    with connect(riffq) as c:
        msgs = c.query("SELECT 'x'::varchar")
        assert row_desc(msgs)[0]["type_oid"] == VARCHAR
        assert single_value(msgs) == b"x"
        msgs = c.query("SELECT '2024-01-02'::date")
        assert row_desc(msgs)[0]["type_oid"] == DATE
        assert row_desc(msgs)[0]["typlen"] == 4
        assert single_value(msgs) == b"2024-01-02"


def test_session_functions(riffq):
    with connect(riffq, application_name="fn-test") as c:
        assert single_value(c.query("SELECT version()")).startswith(b"PostgreSQL 15.8 (riffq 0.1.0)")
        assert single_value(c.query("SELECT current_user")) == USER.encode()
        assert single_value(c.query("SELECT current_setting('application_name')")) == b"fn-test"
        assert single_value(c.query("SELECT current_schema()")) == b"public"


def test_multiple_statements_in_one_query(riffq):
    with connect(riffq) as c:
        msgs = c.query("SELECT 1; SELECT 2")
        assert types_of(msgs) == "TDCTDCZ"
        assert rows_of(msgs) == [[b"1"], [b"2"]]
        assert tags(msgs) == ["SELECT 1", "SELECT 1"]


def test_error_in_multi_statement_stops_the_rest(riffq):
    with connect(riffq) as c:
        msgs = c.query("SELECT 1; SELECT * FROM nosuch; SELECT 2")
        assert types_of(msgs) == "TDCEZ"
        assert rows_of(msgs) == [[b"1"]]
        assert c.status == "I"


def test_empty_query(riffq):
    with connect(riffq) as c:
        assert types_of(c.query("")) == "IZ"
        assert types_of(c.query("   ;  ")) == "IZ"


def test_show(riffq):
    with connect(riffq) as c:
        msgs = c.query("SHOW server_version")
        assert row_desc(msgs)[0]["name"] == "server_version"
        assert row_desc(msgs)[0]["type_oid"] == TEXT
        assert single_value(msgs) == b"15.8 (riffq 0.1.0)"
        assert tags(msgs) == ["SHOW"]
        assert single_value(c.query("SHOW TimeZone")) == b"UTC"
        assert single_value(c.query("SHOW application_name")) == b""
        assert single_value(c.query("SHOW search_path")) == b'"$user", public'


def test_show_all(riffq):
    with connect(riffq) as c:
        msgs = c.query("SHOW ALL")
        assert [(x["name"], x["type_oid"]) for x in row_desc(msgs)] == [
            ("name", TEXT), ("setting", TEXT), ("description", TEXT)]
        rows = {r[0]: r[1] for r in rows_of(msgs)}
        assert rows[b"server_version"] == b"15.8 (riffq 0.1.0)"
        assert rows[b"client_encoding"] == b"UTF8"
        assert tags(msgs) == ["SHOW"]


def test_set_application_name(riffq):
    with connect(riffq) as c:
        msgs = c.query("SET application_name = 'x'")
        assert tags(msgs) == ["SET"]
        status = [tuple(b.split(b"\0")[:2]) for t, b in msgs if t == "S"]
        assert status == [(b"application_name", b"x")], msgs
        assert single_value(c.query("SHOW application_name")) == b"x"
        assert single_value(c.query("SELECT current_setting('application_name')")) == b"x"


def test_set_time_zone(riffq):
    with connect(riffq) as c:
        msgs = c.query("SET TIME ZONE 'Europe/Paris'")
        assert tags(msgs) == ["SET"]
        assert (b"TimeZone", b"Europe/Paris") in [tuple(b.split(b"\0")[:2]) for t, b in msgs if t == "S"]
        assert single_value(c.query("SHOW TimeZone")) == b"Europe/Paris"


def test_set_search_path(riffq):
    with connect(riffq) as c:
        assert tags(c.query("SET search_path TO a, b")) == ["SET"]
        assert single_value(c.query("SHOW search_path")) == b"a, b"


def test_reset(riffq):
    with connect(riffq, application_name="boot") as c:
        c.query("SET application_name = 'x'")
        msgs = c.query("RESET application_name")
        assert tags(msgs) == ["RESET"]
        # RESET goes back to the session default, i.e. the startup packet's value
        assert single_value(c.query("SHOW application_name")) == b"boot"
        c.query("SET search_path TO a, b")
        c.query("SET application_name = 'y'")
        assert tags(c.query("RESET ALL")) == ["RESET"]
        assert single_value(c.query("SHOW search_path")) == b'"$user", public'
        assert single_value(c.query("SHOW application_name")) == b"boot"


def test_set_unknown_setting(riffq):
    with connect(riffq) as c:
        msgs = c.query("SET no_such_setting = 1")
        errs = errors_of(msgs)
        assert len(errs) == 1
        assert errs[0]["C"] == "42704"
        assert errs[0]["M"] == 'unrecognized configuration parameter "no_such_setting"'
        assert errs[0]["S"] == "ERROR"
        assert c.status == "I"


def test_set_custom_dotted_setting(riffq):
    with connect(riffq) as c:
        assert tags(c.query("SET myapp.x = '1'")) == ["SET"]
        assert single_value(c.query("SHOW myapp.x")) == b"1"
        assert single_value(c.query("SELECT current_setting('myapp.x')")) == b"1"


@pytest.mark.parametrize("end", ["COMMIT", "ROLLBACK"])
def test_set_local_reverts(riffq, end):
    with connect(riffq) as c:
        c.query("SET application_name = 'outer'")
        c.query("BEGIN")
        assert tags(c.query("SET LOCAL application_name = 'inner'")) == ["SET"]
        assert single_value(c.query("SHOW application_name")) == b"inner"
        c.query(end)
        assert c.status == "I"
        assert single_value(c.query("SHOW application_name")) == b"outer"


# ---------------------------------------------------------------------------
# transactions
# ---------------------------------------------------------------------------
def test_transaction_status(riffq):
    with connect(riffq) as c:
        msgs = c.query("BEGIN")
        assert tags(msgs) == ["BEGIN"] and c.status == "T"
        assert single_value(c.query("SELECT 1")) == b"1" and c.status == "T"
        msgs = c.query("COMMIT")
        assert tags(msgs) == ["COMMIT"] and c.status == "I"


def test_failed_transaction(riffq):
    with connect(riffq) as c:
        c.query("BEGIN")
        msgs = c.query("SELECT * FROM nosuch")
        assert errors_of(msgs)[0]["C"] == "42P01"
        assert c.status == "E"
        msgs = c.query("SELECT 1")
        errs = errors_of(msgs)
        assert len(errs) == 1 and errs[0]["C"] == "25P02"
        assert errs[0]["M"] == ("current transaction is aborted, commands ignored "
                                "until end of transaction block")
        assert c.status == "E"
        msgs = c.query("ROLLBACK")
        assert tags(msgs) == ["ROLLBACK"] and c.status == "I"
        assert single_value(c.query("SELECT 1")) == b"1"


def test_commit_in_failed_transaction_is_rollback(riffq):
    with connect(riffq) as c:
        c.query("BEGIN")
        c.query("SELEC 1")
        assert c.status == "E"
        msgs = c.query("COMMIT")
        assert errors_of(msgs) == []
        assert tags(msgs) == ["ROLLBACK"] and c.status == "I"


# ---------------------------------------------------------------------------
# errors with no route
# ---------------------------------------------------------------------------
def test_unknown_relation(riffq):
    with connect(riffq) as c:
        errs = errors_of(c.query("SELECT * FROM nosuch"))
        assert len(errs) == 1
        assert errs[0]["C"] == "42P01"
        assert errs[0]["M"] == 'relation "nosuch" does not exist'


@pytest.mark.parametrize("sql,kind", [("INSERT INTO t VALUES (1)", "INSERT"),
                                      ("CREATE TABLE t (a int)", "CREATE TABLE")])
def test_unroutable_statement(riffq, sql, kind):
    with connect(riffq) as c:
        errs = errors_of(c.query(sql))
        assert len(errs) == 1
        assert errs[0]["C"] == "0A000"
        assert kind.lower() in errs[0]["M"].lower(), errs[0]
        assert c.status == "I"


def test_syntax_error_has_position(riffq):
    with connect(riffq) as c:
        errs = errors_of(c.query("SELEC 1"))
        assert len(errs) == 1
        assert errs[0]["C"] == "42601"
        assert errs[0]["M"] == 'syntax error at or near "SELEC"'
        assert errs[0]["P"] == "1"
        errs = errors_of(c.query("SELECT 1 FROM"))
        assert errs[0]["C"] == "42601" and errs[0]["P"] == "14", errs


def test_unknown_message_type(riffq):
    # Postgres: FATAL 08P01 invalid frontend message type, then close.
    with connect(riffq) as c:
        c.send(msg(b"y", b"abc"))
        msgs = c.wait_closed()
        errs = errors_of(msgs)
        assert len(errs) == 1 and errs[0]["C"] == "08P01", msgs
    assert_alive(riffq)


# ---------------------------------------------------------------------------
# extended query protocol
# ---------------------------------------------------------------------------
def test_extended_named_statement(riffq):
    with connect(riffq) as c:
        c.send(parse_msg("s1", "SELECT $1::int4") + describe_msg(b"S", "s1") + SYNC)
        msgs = c.read_until_ready()
        assert types_of(msgs) == "1tTZ"
        assert parse_param_description(msgs[1][1]) == [INT4]
        cols = parse_row_description(msgs[2][1])
        # Postgres names a bare cast after its type; format is 0 until bound
        assert [(x["name"], x["type_oid"], x["typlen"], x["format"]) for x in cols] == [
            ("int4", INT4, 4, 0)]
        # bind twice, text then binary results
        c.send(bind_msg("p1", "s1", ["42"]) + describe_msg(b"P", "p1") + execute_msg("p1")
               + bind_msg("p2", "s1", ["-7"], result_formats=[1]) + describe_msg(b"P", "p2")
               + execute_msg("p2") + SYNC)
        msgs = c.read_until_ready()
        assert types_of(msgs) == "2TDC2TDCZ"
        assert parse_row_description(msgs[1][1])[0]["format"] == 0
        assert rows_of(msgs)[0] == [b"42"]
        assert parse_row_description(msgs[5][1])[0]["format"] == 1
        assert rows_of(msgs)[1] == [struct.pack("!i", -7)]
        assert tags(msgs) == ["SELECT 1", "SELECT 1"]


def test_extended_unnamed(riffq):
    with connect(riffq) as c:
        c.send(parse_msg("", "SELECT $1::text", [TEXT]) + bind_msg("", "", ["héllo"])
               + execute_msg("") + SYNC)
        msgs = c.read_until_ready()
        assert types_of(msgs) == "12DCZ"
        assert rows_of(msgs) == [["héllo".encode()]]


def test_extended_param_types(riffq):
    with connect(riffq) as c:
        # binary parameters in, binary results out
        c.send(parse_msg("", "SELECT $1::int8") + bind_msg("", "", [struct.pack("!q", 2**40)],
                                                            param_formats=[1], result_formats=[1])
               + execute_msg("") + SYNC)
        msgs = c.read_until_ready()
        assert rows_of(msgs) == [[struct.pack("!q", 2**40)]], msgs
        # an int4 parameter declared by the client, text in
        c.send(parse_msg("", "SELECT $1::int4", [INT4]) + bind_msg("", "", ["2147483647"])
               + execute_msg("") + SYNC)
        assert rows_of(c.read_until_ready()) == [[b"2147483647"]]
        # NULL parameter
        c.send(parse_msg("", "SELECT $1::text") + bind_msg("", "", [None]) + execute_msg("") + SYNC)
        assert rows_of(c.read_until_ready()) == [[None]]


def test_extended_bad_int_param(riffq):
    with connect(riffq) as c:
        c.send(parse_msg("", "SELECT $1::int4") + bind_msg("", "", ["abc"]) + execute_msg("") + SYNC)
        msgs = c.read_until_ready()
        errs = errors_of(msgs)
        assert len(errs) == 1 and errs[0]["C"] == "22P02", msgs
        assert errs[0]["M"] == 'invalid input syntax for type integer: "abc"'


def test_extended_no_data_for_set(riffq):
    with connect(riffq) as c:
        c.send(parse_msg("", "SET application_name = 'ext'") + describe_msg(b"S", "")
               + bind_msg("", "") + execute_msg("") + SYNC)
        msgs = c.read_until_ready()
        # ParseComplete, ParameterDescription(0), NoData, BindComplete, CommandComplete, (S), Z
        assert [t for t, _ in msgs if t != "S"] == list("1tn2CZ"), msgs
        assert parse_param_description(msgs[1][1]) == []
        assert tags(msgs) == ["SET"]


def test_extended_error_skips_to_sync(riffq):
    with connect(riffq) as c:
        c.send(parse_msg("", "SELEC 1") + bind_msg("", "") + describe_msg(b"P", "")
               + execute_msg("") + SYNC)
        msgs = c.read_until_ready()
        assert types_of(msgs) == "EZ", msgs
        assert errors_of(msgs)[0]["C"] == "42601"
        # the next batch runs normally
        c.send(parse_msg("", "SELECT 1") + bind_msg("", "") + execute_msg("") + SYNC)
        msgs = c.read_until_ready()
        assert types_of(msgs) == "12DCZ"


def test_extended_error_in_transaction(riffq):
    with connect(riffq) as c:
        c.query("BEGIN")
        c.send(parse_msg("", "SELECT * FROM nosuch") + bind_msg("", "") + execute_msg("") + SYNC)
        msgs = c.read_until_ready()
        assert types_of(msgs) == "EZ" and c.status == "E"
        c.send(parse_msg("", "SELECT 1") + SYNC)
        msgs = c.read_until_ready()
        assert errors_of(msgs)[0]["C"] == "25P02" and c.status == "E"
        c.query("ROLLBACK")
        assert c.status == "I"


def test_extended_row_limit_portal_suspended(riffq):
    with connect(riffq) as c:
        total = len(rows_of(c.query("SHOW ALL")))
        assert total > 7
        c.query("BEGIN")
        c.send(parse_msg("all", "SHOW ALL") + bind_msg("p", "all") + execute_msg("p", 3)
               + execute_msg("p", 3) + SYNC)
        msgs = c.read_until_ready()
        assert types_of(msgs) == "12DDDsDDDsZ", types_of(msgs)
        c.send(execute_msg("p", 0) + SYNC)
        msgs = c.read_until_ready()
        assert types_of(msgs) == "D" * (total - 6) + "CZ"
        assert tags(msgs) == ["SHOW"]
        # a completed portal executed again returns nothing more
        c.send(execute_msg("p", 0) + SYNC)
        msgs = c.read_until_ready()
        assert "D" not in types_of(msgs)
        c.query("COMMIT")


def test_extended_row_limit_exact_fit(riffq):
    # Postgres 15 answers an Execute whose limit equals the remaining row count
    # with PortalSuspended (it does not look ahead); the next Execute then
    # gives CommandComplete with no rows.
    with connect(riffq) as c:
        total = len(rows_of(c.query("SHOW ALL")))
        c.send(parse_msg("", "SHOW ALL") + bind_msg("", "") + execute_msg("", total)
               + execute_msg("", 1) + SYNC)
        msgs = c.read_until_ready()
        assert types_of(msgs) == "12" + "D" * total + "sCZ", types_of(msgs)


def test_extended_describe_portal_formats(riffq):
    with connect(riffq) as c:
        c.send(parse_msg("", "SELECT 1 AS a, 'x' AS b") + bind_msg("", "", result_formats=[1, 0])
               + describe_msg(b"P", "") + execute_msg("") + SYNC)
        msgs = c.read_until_ready()
        assert types_of(msgs) == "12TDCZ"
        cols = parse_row_description(msgs[2][1])
        assert [(x["name"], x["type_oid"], x["format"]) for x in cols] == [("a", INT4, 1), ("b", TEXT, 0)]
        assert rows_of(msgs) == [[struct.pack("!i", 1), b"x"]]


def test_extended_close_and_missing_statement(riffq):
    with connect(riffq) as c:
        c.send(parse_msg("s", "SELECT 1") + close_msg(b"S", "s") + SYNC)
        assert types_of(c.read_until_ready()) == "13Z"
        c.send(bind_msg("", "s") + execute_msg("") + SYNC)
        msgs = c.read_until_ready()
        errs = errors_of(msgs)
        assert types_of(msgs) == "EZ"
        assert errs[0]["C"] == "26000" and errs[0]["M"] == 'prepared statement "s" does not exist'
        # closing something that does not exist is not an error
        c.send(close_msg(b"S", "nope") + close_msg(b"P", "nope") + SYNC)
        assert types_of(c.read_until_ready()) == "33Z"


def test_extended_missing_portal(riffq):
    with connect(riffq) as c:
        c.send(execute_msg("nope") + SYNC)
        msgs = c.read_until_ready()
        errs = errors_of(msgs)
        assert errs[0]["C"] == "34000" and errs[0]["M"] == 'portal "nope" does not exist'


def test_extended_duplicate_statement(riffq):
    with connect(riffq) as c:
        c.send(parse_msg("d", "SELECT 1") + parse_msg("d", "SELECT 2") + SYNC)
        msgs = c.read_until_ready()
        assert types_of(msgs) == "1EZ"
        errs = errors_of(msgs)
        assert errs[0]["C"] == "42P05" and errs[0]["M"] == 'prepared statement "d" already exists'


def test_extended_wrong_param_count(riffq):
    with connect(riffq) as c:
        c.send(parse_msg("", "SELECT $1::int4") + bind_msg("", "", []) + execute_msg("") + SYNC)
        msgs = c.read_until_ready()
        assert types_of(msgs) == "1EZ"
        assert errors_of(msgs)[0]["C"] == "08P01"


def test_extended_flush(riffq):
    with connect(riffq) as c:
        c.send(parse_msg("", "SELECT 1") + bind_msg("", "") + execute_msg("") + FLUSH)
        got = [c.read_message()[0] for _ in range(4)]
        assert got == ["1", "2", "D", "C"]
        c.send(SYNC)
        assert types_of(c.read_until_ready()) == "Z"


def test_sync_alone(riffq):
    with connect(riffq) as c:
        c.send(SYNC)
        assert types_of(c.read_until_ready()) == "Z" and c.status == "I"


# ---------------------------------------------------------------------------
# cancel, terminate, broken clients, limits
# ---------------------------------------------------------------------------
def send_cancel(srv, pid, key):
    with RawConn.tcp(srv.host, srv.port) as k:
        k.send(struct.pack("!IIIi", 16, CANCEL_REQUEST, pid, key))
        return k.wait_closed()


def test_cancel_wrong_key_ignored(riffq):
    with connect(riffq) as c:
        assert send_cancel(riffq, c.backend_pid, c.backend_key ^ 0x5A5A5A5A) == []
        assert send_cancel(riffq, 0xFFFFFFF0, 12345) == []
        assert single_value(c.query("SELECT 1")) == b"1"
    assert_alive(riffq)


def test_cancel_right_key_idle_session(riffq):
    with connect(riffq) as c:
        assert send_cancel(riffq, c.backend_pid, c.backend_key) == []
        time.sleep(0.2)     # let the cancel be processed before our next query
        assert single_value(c.query("SELECT 1")) == b"1"


def test_terminate(riffq):
    with connect(riffq) as c:
        c.terminate()
        assert c.wait_closed() == []
    assert_alive(riffq)


@pytest.mark.parametrize("garbage", [
    b"\x00\x00",                                     # half a startup length
    b"\x00\x00\x00\x50\x00\x03\x00\x00user\x00",     # truncated startup packet
])
def test_abrupt_disconnect_during_startup(riffq, garbage):
    with connect(riffq) as other:
        s = socket.create_connection((riffq.host, riffq.port), timeout=5)
        s.sendall(garbage)
        s.close()
        time.sleep(0.1)
        assert single_value(other.query("SELECT 1")) == b"1"
    assert_alive(riffq)


def test_abrupt_disconnect_mid_message(riffq):
    with connect(riffq) as other:
        c = connect(riffq)
        c.send(b"Q" + struct.pack("!I", 100) + b"SELECT")     # 100-byte message, 6 bytes sent
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
        c.close()
        c2 = connect(riffq)
        c2.send(parse_msg("", "SELECT 1") + bind_msg("", ""))
        c2.close()
        time.sleep(0.1)
        assert single_value(other.query("SELECT 1")) == b"1"
    assert_alive(riffq)


def test_invalid_message_length(riffq):
    # Postgres closes silently here (COMMERROR); riffq's design promises an
    # ErrorResponse for every malformed message, so we hold it to 08P01.
    with connect(riffq) as c:
        c.send(b"Q" + struct.pack("!I", 2))     # length < 4 is malformed
        errs = errors_of(c.wait_closed())
        assert len(errs) == 1 and errs[0]["C"] == "08P01"
    assert_alive(riffq)


def test_max_message_size(riffq_factory):
    srv = riffq_factory(limits={"max_message_size": 4096})
    with connect(srv) as c:
        # just under the limit works
        big = "SELECT '" + "x" * 3000 + "'"
        assert single_value(c.query(big)) == b"x" * 3000
        # header of a message over the limit: rejected without reading the body
        c.send(b"Q" + struct.pack("!I", 100000))
        errs = errors_of(c.wait_closed())
        assert len(errs) == 1 and errs[0]["C"] == "08P01", errs
    assert_alive(srv)


def test_max_clients(riffq_factory):
    srv = riffq_factory(limits={"max_clients": 2})
    a = connect(srv)
    b = connect(srv)
    try:
        with RawConn.tcp(srv.host, srv.port) as c:
            with pytest.raises(ServerError) as ei:
                c.startup(USER, PASSWORD)
            assert ei.value.sqlstate == "53300"
            assert ei.value.message == "sorry, too many clients already"
        assert single_value(a.query("SELECT 1")) == b"1"
        # a slot freed by a Terminate becomes available again (bounded retry:
        # the server notices the close asynchronously)
        b.terminate()
        b.wait_closed()
        deadline = time.monotonic() + 5
        while True:
            try:
                with connect(srv) as d:
                    assert single_value(d.query("SELECT 1")) == b"1"
                break
            except ServerError as e:
                assert e.sqlstate == "53300"
                assert time.monotonic() < deadline, "slot never freed"
                time.sleep(0.1)
    finally:
        a.close()
        b.close()


def test_many_concurrent_clients(riffq):
    conns = [connect(riffq) for _ in range(20)]
    try:
        pids = {c.backend_pid for c in conns}
        assert len(pids) == 20, "BackendKeyData pids must be unique per session"
        for i, c in enumerate(conns):
            c.send(msg(b"Q", cstr("SELECT %d" % i)))
        for i, c in enumerate(conns):
            assert single_value(c.read_until_ready()) == str(i).encode()
    finally:
        for c in conns:
            c.close()
