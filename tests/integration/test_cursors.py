"""
SQL cursors over plugin tables: DECLARE / FETCH / MOVE / CLOSE in the simple
and the extended protocol, psycopg's server-side ("named") cursors, the
pg_cursors view, transactions, errors by SQLSTATE, statement_timeout and
CancelRequest during a FETCH, and cursors over an upstream still relayed.

The generator plugin writes how many rows it has produced to a file, so the
tests can assert that a cursor pulls rows only as fast as the client
fetches them.
"""
import datetime
import os
import struct
import subprocess
import threading
import time

import psycopg
import pytest

import harness
from harness import PASSWORD, USER, bind_msg, cstr, describe_msg, execute_msg, msg, parse_msg

PLUGIN = '''
import os
import re
import time
import datetime
import riffq

HERE = os.path.dirname(os.path.abspath(__file__))
riffq.register_table("public", "gen", [("n", "int8"), ("label", "text")])
riffq.register_table("public", "tiny", [("x", "int4"), ("t", "timestamptz"), ("f", "float8")])
riffq.register_table("public", "echo", [("sql", "text"), ("params", "text")])
riffq.register_table("public", "boom", [("x", "int4")])
riffq.register_table("public", "midboom", [("x", "int4")])
riffq.register_table("public", "slow", [("x", "int4")])
riffq.register_table("public", "cmd", [("x", "int4")])

@riffq.query_handler
def handle(sql, params, ctx):
    s = sql.lower()
    if "from gen" in s:
        m = re.search(r"n < (\\d+)", sql)
        limit = int(params[0]) if params else int(m.group(1)) if m else 5000
        progress = os.path.join(HERE, "progress_%d" % limit)
        def batches():
            for start in range(0, limit, 100):
                rows = [(i, "r%d" % i) for i in range(start, min(limit, start + 100))]
                with open(progress, "w") as f:
                    f.write(str(start + len(rows)))
                yield rows
        return riffq.Columns([("n", "int8"), ("label", "text")]), batches()
    if "from tiny" in s:
        return [(1, datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc), 1.5),
                (2, None, -0.25)], [("x", "int4"), ("t", "timestamptz"), ("f", "float8")]
    if "from echo" in s:
        return [(sql, repr(params))], [("sql", "text"), ("params", "text")]
    if "from boom" in s:
        raise riffq.Error("22012", "boom at start")
    if "from midboom" in s:
        def batches():
            yield [(i,) for i in range(100)]
            yield [(i,) for i in range(100, 200)]
            raise riffq.Error("22023", "boom in the middle")
        return riffq.Columns([("x", "int4")]), batches()
    if "from slow" in s:
        def batches():
            yield [(i,) for i in range(10)]
            while True:
                time.sleep(0.01)
        return riffq.Columns([("x", "int4")]), batches()
    if "from cmd" in s:
        return riffq.Command("INSERT 0 1")
    raise riffq.Error("42P01", "unexpected statement: " + sql)
'''

TABLES = ["gen", "tiny", "echo", "boom", "midboom", "slow", "cmd"]


def plugin_config(port, path, extra_routes=(), upstreams=None):
    cfg = {
        "listen": [{"host": "127.0.0.1", "port": port}],
        "auth": {"method": "scram-sha-256", "users": {USER: PASSWORD}},
        "plugins": {"t": {"module": path}},
        "routes": [{"name": "t", "match": {"tables": TABLES}, "to": "plugin:t"}] + list(extra_routes),
    }
    if upstreams:
        cfg["upstreams"] = upstreams
    return cfg


@pytest.fixture
def plugin_dir(short_tmp):
    path = os.path.join(short_tmp, "cur.py")
    with open(path, "w") as f:
        f.write(PLUGIN)
    return short_tmp


@pytest.fixture
def srv(riffq_factory, plugin_dir):
    port = harness.free_port()
    return riffq_factory(plugin_config(port, os.path.join(plugin_dir, "cur.py"),
                                       [{"name": "local", "to": "local"}]))


def produced(plugin_dir, limit=5000):
    """Rows the gen generator has produced so far for that limit."""
    try:
        with open(os.path.join(plugin_dir, "progress_%d" % limit)) as f:
            return int(f.read() or 0)
    except FileNotFoundError:
        return 0


def rows(n0, n1):
    return [(i, "r%d" % i) for i in range(n0, n1)]


def sqlstate_of(fn):
    with pytest.raises(psycopg.Error) as e:
        fn()
    return e.value.sqlstate


# ---------------------------------------------------------------------------
# psycopg named cursors
# ---------------------------------------------------------------------------
def test_named_cursor_streams_only_what_is_fetched(srv, plugin_dir):
    with psycopg.connect(srv.dsn()) as conn:
        with conn.cursor(name="c") as cur:
            cur.itersize = 250
            cur.execute("SELECT * FROM gen")
            assert [d.name for d in cur.description] == ["n", "label"]
            assert cur.fetchone() == (0, "r0")
            assert cur.fetchmany(9) == rows(1, 10)
            # the engine holds at most a batch or two ahead of the client
            assert produced(plugin_dir) <= 10 + 300
            assert cur.fetchmany(1000) == rows(10, 1010)
            assert produced(plugin_dir) <= 1010 + 300
            got = list(cur)
            assert got == rows(1010, 5000)
            assert produced(plugin_dir) == 5000
            assert cur.fetchall() == []
        conn.commit()


def test_named_cursor_fetchall_with_parameters(srv):
    with psycopg.connect(srv.dsn()) as conn:
        with conn.cursor(name="p") as cur:
            cur.execute("SELECT * FROM gen WHERE n < %s", (1234,))
            assert cur.fetchall() == rows(0, 1234)
        with conn.cursor(name="e") as cur:
            cur.execute("SELECT * FROM echo WHERE a = %s AND b = %s", ("x", 7))
            (sql, params), = cur.fetchall()
            # the handler gets the cursor's query, not the DECLARE around it
            assert sql == "SELECT * FROM echo WHERE a = $1 AND b = $2"
            assert params == "['x', 7]"
        conn.rollback()


def test_open_cursors_do_not_starve_other_queries(srv):
    """Each open cursor keeps its generator on a worker waiting for FETCH;
    with the default two workers, eight open cursors in eight sessions must
    not stop a ninth client's plugin query (the engine starts workers)."""
    conns = [psycopg.connect(srv.dsn()) for _ in range(8)]
    try:
        for i, c in enumerate(conns):
            c.execute("DECLARE c%d CURSOR FOR SELECT n, label FROM gen WHERE n < 50000" % i)
            assert c.execute("FETCH 3 FROM c%d" % i).fetchall() == rows(0, 3)
        with psycopg.connect(srv.dsn()) as other:
            assert [r[0] for r in other.execute("SELECT x FROM tiny").fetchall()] == [1, 2]
        for i, c in enumerate(conns):
            assert c.execute("FETCH 2 FROM c%d" % i).fetchall() == rows(3, 5)
    finally:
        for c in conns:
            c.close()


def test_binary_named_cursor(srv):
    with psycopg.connect(srv.dsn()) as conn:
        with conn.cursor(name="b", binary=True) as cur:
            cur.execute("SELECT * FROM tiny")
            assert cur.fetchall() == [
                (1, datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc), 1.5),
                (2, None, -0.25)]
        with conn.cursor(name="g", binary=True) as cur:
            cur.execute("SELECT * FROM gen")
            assert cur.fetchmany(3) == rows(0, 3)
        conn.rollback()


def test_two_cursors_interleaved_in_one_transaction(srv, plugin_dir):
    with psycopg.connect(srv.dsn()) as conn:
        a = conn.cursor(name="a")
        b = conn.cursor(name="b")
        a.execute("SELECT * FROM gen WHERE n < %s", (3000,))
        b.execute("SELECT * FROM gen WHERE n < %s", (2000,))
        got_a, got_b = [], []
        for _ in range(10):
            got_a += a.fetchmany(150)
            got_b += b.fetchmany(110)
        assert got_a == rows(0, 1500) and got_b == rows(0, 1100)
        assert produced(plugin_dir, 3000) <= 1500 + 300 and produced(plugin_dir, 2000) <= 1100 + 300
        assert b.fetchall() == rows(1100, 2000)
        assert a.fetchmany(2) == rows(1500, 1502)
        names = conn.execute("SELECT name FROM pg_cursors ORDER BY name").fetchall()
        assert names == [("a",), ("b",)]
        a.close()
        b.close()
        conn.commit()


def test_withhold_named_cursor_outlives_commit(srv):
    with psycopg.connect(srv.dsn(), autocommit=True) as conn:
        with conn.cursor(name="h", withhold=True) as cur:
            cur.execute("SELECT * FROM gen")
            assert cur.fetchmany(2) == rows(0, 2)
            assert conn.execute("SELECT name, is_holdable FROM pg_cursors").fetchall() == [("h", True)]
            with conn.transaction():
                assert cur.fetchmany(2) == rows(2, 4)
            assert cur.fetchmany(2) == rows(4, 6)
        assert conn.execute("SELECT count(*) FROM pg_cursors").fetchone() == (0,)


def test_psycopg2_named_cursor(srv, plugin_dir):
    import psycopg2
    conn = psycopg2.connect(srv.dsn())
    try:
        # psycopg2 sends DECLARE "c2" CURSOR WITHOUT HOLD FOR ... in the
        # simple protocol, then FETCH FORWARD itersize, MOVE for scroll()
        cur = conn.cursor(name="c2")
        cur.itersize = 300
        cur.execute("SELECT * FROM gen WHERE n < %s", (1000,))
        assert cur.fetchmany(5) == rows(0, 5)
        cur.scroll(10)
        assert cur.fetchone() == (15, "r15")
        assert produced(plugin_dir, 1000) <= 16 + 300
        assert list(cur) == rows(16, 1000)
        cur.close()
        conn.commit()
    finally:
        conn.close()


def test_cursor_under_a_route_without_statement_conditions(riffq_factory, plugin_dir):
    # a route that looks at no statement's content: nothing needs parsing,
    # yet DECLARE and FETCH stay the gateway's, in both protocols
    port = harness.free_port()
    cfg = plugin_config(port, os.path.join(plugin_dir, "cur.py"))
    cfg["routes"] = [{"name": "everything", "match": {"user": [USER]}, "to": "plugin:t"}]
    srv = riffq_factory(cfg)
    # (everything goes to the plugin, BEGIN too: WITH HOLD cursors, then)
    with psycopg.connect(srv.dsn(), autocommit=True) as conn:
        with conn.cursor(name="c", withhold=True) as cur:
            cur.execute("SELECT * FROM gen WHERE n < %s", (30,))
            assert cur.fetchmany(4) == rows(0, 4)
            assert cur.fetchall() == rows(4, 30)
        conn.execute("DECLARE s CURSOR WITH HOLD FOR SELECT * FROM gen")
        assert conn.execute("FETCH 2 FROM s").fetchall() == rows(0, 2)
        assert conn.execute("FETCH 1 FROM s", prepare=True).fetchall() == rows(2, 3)
        assert conn.execute("CLOSE s").statusmessage == "CLOSE CURSOR"
        # a name the gateway does not hold is the handler's business
        with pytest.raises(psycopg.errors.UndefinedTable) as e:
            conn.execute("FETCH 5 FROM s")
        assert e.value.diag.message_primary == "unexpected statement: FETCH 5 FROM s"
        # a statement prepared while the cursor was open finds it gone
        with pytest.raises(psycopg.errors.InvalidCursorName):
            conn.execute("FETCH 1 FROM s", prepare=True)


def test_psycopg_closes_a_cursor_it_did_not_declare(srv):
    with psycopg.connect(srv.dsn()) as conn:
        conn.execute("DECLARE stolen CURSOR FOR SELECT * FROM gen")
        # closing a cursor it never described: psycopg asks pg_cursors first
        conn.cursor(name="stolen").close()
        assert conn.execute("SELECT count(*) FROM pg_cursors").fetchone() == (0,)
        conn.cursor(name="never_declared").close()
        # and reading one it did not declare describes the portal first
        conn.execute("DECLARE other CURSOR FOR SELECT * FROM gen")
        cur = conn.cursor(name="other")
        assert cur.fetchmany(2) == rows(0, 2)
        assert [d.name for d in cur.description] == ["n", "label"]
        cur.close()
        assert conn.execute("SELECT count(*) FROM pg_cursors").fetchone() == (0,)
        conn.commit()


# ---------------------------------------------------------------------------
# SQL DECLARE / FETCH / MOVE / CLOSE
# ---------------------------------------------------------------------------
def test_sql_cursor_through_psql(srv):
    script = "\n".join([
        "BEGIN;",
        "DECLARE c CURSOR FOR SELECT * FROM gen;",
        "FETCH 3 FROM c;",
        "MOVE 2 IN c;",
        "FETCH NEXT FROM c;",
        "FETCH ABSOLUTE 10 c;",
        "FETCH RELATIVE 2 c;",
        "FETCH FORWARD 2 IN c;",
        "MOVE ALL c;",
        "FETCH c;",
        "CLOSE c;",
        "COMMIT;",
        "",
    ])
    out = subprocess.run([harness.PSQL, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", srv.dsn()],
                         input=script, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n") == [
        "BEGIN", "DECLARE CURSOR", "0|r0", "1|r1", "2|r2", "MOVE 2", "5|r5", "9|r9", "11|r11",
        "12|r12", "13|r13", "MOVE 4986", "CLOSE CURSOR", "COMMIT", ""]


def test_sql_cursor_tags_through_psycopg(srv):
    with psycopg.connect(srv.dsn(), autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute("BEGIN")
        cur.execute("DECLARE c NO SCROLL CURSOR WITHOUT HOLD FOR SELECT * FROM gen WHERE n < 20")
        assert cur.statusmessage == "DECLARE CURSOR"
        cur.execute("FETCH 2 FROM c")
        assert cur.statusmessage == "FETCH 2" and cur.fetchall() == rows(0, 2)
        cur.execute("MOVE FORWARD 0 FROM c")
        assert cur.statusmessage == "MOVE 1"        # on a row
        cur.execute("MOVE 3 FROM c")
        assert cur.statusmessage == "MOVE 3"
        cur.execute("FETCH ABSOLUTE 7 FROM c")
        assert cur.statusmessage == "FETCH 1" and cur.fetchall() == [(6, "r6")]
        cur.execute("MOVE RELATIVE 2 FROM c")
        assert cur.statusmessage == "MOVE 1"
        cur.execute("FETCH ALL FROM c")
        assert cur.statusmessage == "FETCH 11" and cur.fetchall() == rows(9, 20)
        cur.execute("FETCH 5 FROM c")
        assert cur.statusmessage == "FETCH 0" and cur.fetchall() == []
        assert [d.name for d in cur.description] == ["n", "label"]
        cur.execute("MOVE FORWARD 0 FROM c")
        assert cur.statusmessage == "MOVE 0"        # after the last row
        cur.execute("FETCH ABSOLUTE 100 FROM c")
        assert cur.statusmessage == "FETCH 0"
        cur.execute("CLOSE c")
        assert cur.statusmessage == "CLOSE CURSOR"
        cur.execute("DECLARE d CURSOR FOR SELECT * FROM gen")
        cur.execute("DECLARE e CURSOR FOR SELECT * FROM tiny")
        cur.execute("CLOSE ALL")
        assert cur.statusmessage == "CLOSE CURSOR ALL"
        assert conn.execute("SELECT count(*) FROM pg_cursors").fetchone() == (0,)
        cur.execute("COMMIT")


def test_query_text_reaches_the_handler(srv):
    with psycopg.connect(srv.dsn(), autocommit=True) as conn:
        with conn.transaction():
            conn.execute('DECLARE "for FOR" /* a FOR in a comment */ CURSOR\n  FOR  SELECT * FROM echo')
            (sql, params), = conn.execute('FETCH ALL FROM "for FOR"').fetchall()
            assert sql == "SELECT * FROM echo" and params == "[]"


def test_multi_statement_query_string(srv):
    with harness.RawConn.tcp(srv.host, srv.port) as c:
        c.startup(USER, PASSWORD)

        def run(sql):
            out = []
            for t, body in c.query(sql):
                if t == "C":
                    out.append(body.rstrip(b"\0").decode())
                elif t == "E":
                    out.append("E" + harness.parse_error_fields(body)["C"])
                elif t == "D":
                    out.append(int(body[6:6 + struct.unpack("!i", body[2:6])[0]]))
                elif t in "TZ":
                    out.append(t)
            return out
        assert run("BEGIN; DECLARE c CURSOR FOR SELECT * FROM gen; FETCH 3 FROM c; "
                   "CLOSE c; COMMIT") == [
            "BEGIN", "DECLARE CURSOR", "T", 0, 1, 2, "FETCH 3", "CLOSE CURSOR", "COMMIT", "Z"]
        # a query string is a transaction block of its own...
        assert run("DECLARE c CURSOR FOR SELECT * FROM gen; FETCH 2 FROM c") == [
            "DECLARE CURSOR", "T", 0, 1, "FETCH 2", "Z"]
        # ...whose cursors end with it
        assert run("FETCH 1 FROM c") == ["E34000", "Z"]
        assert c.status == "I"


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------
def test_errors_with_sqlstates(srv):
    with psycopg.connect(srv.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.NoActiveSqlTransaction) as e:
            conn.execute("DECLARE c CURSOR FOR SELECT * FROM gen")
        assert e.value.diag.message_primary == "DECLARE CURSOR can only be used in transaction blocks"
        with pytest.raises(psycopg.errors.InvalidCursorName) as e:
            conn.execute("FETCH 1 FROM nope")
        assert e.value.diag.message_primary == 'cursor "nope" does not exist'
        assert sqlstate_of(lambda: conn.execute("CLOSE nope")) == "34000"
        assert sqlstate_of(lambda: conn.execute("MOVE 1 IN nope")) == "34000"
        for backward in ["FETCH BACKWARD 1 FROM c", "FETCH PRIOR FROM c", "FETCH LAST FROM c",
                         "FETCH -1 FROM c", "FETCH ABSOLUTE 1 FROM c", "FETCH RELATIVE 0 FROM c",
                         "FETCH RELATIVE -1 FROM c", "MOVE BACKWARD 2 IN c", "FETCH FORWARD 0 FROM c"]:
            with conn.transaction():
                conn.execute("DECLARE c CURSOR FOR SELECT * FROM gen")
                conn.execute("FETCH 2 FROM c")
                with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
                    conn.execute(backward)
                assert e.value.diag.message_primary == 'cursor "c" can only scan forward', backward
                assert 'plugin "t"' in e.value.diag.message_detail
                # the failed transaction refuses everything until it ends
                assert sqlstate_of(lambda: conn.execute("FETCH 1 FROM c")) == "25P02"
                raise psycopg.Rollback()
        with conn.transaction():
            with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
                conn.execute("DECLARE s SCROLL CURSOR FOR SELECT * FROM gen")
            assert "SCROLL" in e.value.diag.message_primary
            raise psycopg.Rollback()
        with conn.transaction():
            conn.execute("DECLARE dup CURSOR FOR SELECT * FROM gen")
            assert sqlstate_of(lambda: conn.execute("DECLARE dup CURSOR FOR SELECT * FROM tiny")) == "42P03"
            raise psycopg.Rollback()
        with conn.transaction():
            # the handler's error surfaces at DECLARE
            with pytest.raises(psycopg.errors.DivisionByZero) as e:
                conn.execute("DECLARE b CURSOR FOR SELECT * FROM boom")
            assert e.value.diag.message_primary == "boom at start"
            raise psycopg.Rollback()
        with conn.transaction():
            assert sqlstate_of(lambda: conn.execute("DECLARE b CURSOR FOR SELECT * FROM cmd")) == "42P11"
            raise psycopg.Rollback()
        # the session goes on, with no cursor left over
        assert conn.execute("SELECT count(*) FROM pg_cursors").fetchone() == (0,)


def test_handler_failing_in_the_middle_of_a_cursor(srv):
    with psycopg.connect(srv.dsn()) as conn:
        conn.execute("DECLARE m CURSOR FOR SELECT * FROM midboom")
        assert conn.execute("FETCH 150 FROM m").fetchall() == [(i,) for i in range(150)]
        with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
            conn.execute("FETCH 100 FROM m")
        assert e.value.diag.message_primary == "boom in the middle"
        conn.rollback()
        assert sqlstate_of(lambda: conn.execute("FETCH 1 FROM m")) == "34000"


def test_commit_and_rollback_close_cursors(srv):
    with psycopg.connect(srv.dsn()) as conn:
        conn.execute("DECLARE c CURSOR FOR SELECT * FROM gen")
        conn.execute("DECLARE h CURSOR WITH HOLD FOR SELECT * FROM gen")
        conn.commit()
        assert conn.execute("SELECT name FROM pg_cursors").fetchall() == [("h",)]
        assert sqlstate_of(lambda: conn.execute("FETCH 1 FROM c")) == "34000"
        conn.rollback()
        assert conn.execute("FETCH 2 FROM h").fetchall() == rows(0, 2)
        # ROLLBACK drops a holdable cursor only in the transaction that declared it
        conn.execute("DECLARE h2 CURSOR WITH HOLD FOR SELECT * FROM gen")
        conn.rollback()
        assert conn.execute("SELECT name FROM pg_cursors").fetchall() == [("h",)]
        # ROLLBACK TO SAVEPOINT drops the cursors declared after it
        conn.execute("DECLARE before CURSOR FOR SELECT * FROM gen")
        conn.execute("SAVEPOINT sp")
        conn.execute("DECLARE after CURSOR FOR SELECT * FROM gen")
        conn.execute("ROLLBACK TO SAVEPOINT sp")
        assert conn.execute("SELECT name FROM pg_cursors ORDER BY name").fetchall() == [("before",), ("h",)]
        conn.execute("SAVEPOINT sp2")
        conn.execute("DECLARE released CURSOR FOR SELECT * FROM gen")
        conn.execute("RELEASE SAVEPOINT sp2")
        assert conn.execute("SELECT count(*) FROM pg_cursors").fetchone() == (3,)
        conn.commit()
        assert conn.execute("FETCH 1 FROM h").fetchall() == rows(2, 3)
        conn.execute("CLOSE h")
        conn.commit()
    with psycopg.connect(srv.dsn(), autocommit=True) as conn:
        conn.execute("DECLARE h CURSOR WITH HOLD FOR SELECT * FROM gen")
        conn.execute("DISCARD ALL")
        assert sqlstate_of(lambda: conn.execute("FETCH 1 FROM h")) == "34000"


# ---------------------------------------------------------------------------
# pg_cursors
# ---------------------------------------------------------------------------
def test_pg_cursors_view(srv):
    with psycopg.connect(srv.dsn()) as conn:
        assert conn.execute("SELECT * FROM pg_catalog.pg_cursors").fetchall() == []
        before = datetime.datetime.now(datetime.timezone.utc)
        conn.execute("DECLARE a CURSOR FOR SELECT * FROM gen")
        conn.execute('DECLARE "B b" BINARY CURSOR WITH HOLD FOR SELECT * FROM tiny')
        cur = conn.execute("SELECT * FROM pg_cursors")
        assert [d.name for d in cur.description] == [
            "name", "statement", "is_holdable", "is_binary", "is_scrollable", "creation_time"]
        assert [d.type_code for d in cur.description] == [19, 25, 16, 16, 16, 1184]
        got = cur.fetchall()
        assert [r[:5] for r in got] == [
            ("a", "DECLARE a CURSOR FOR SELECT * FROM gen", False, False, False),
            ("B b", 'DECLARE "B b" BINARY CURSOR WITH HOLD FOR SELECT * FROM tiny', True, True, False)]
        for r in got:
            assert before - datetime.timedelta(seconds=1) <= r[5] <= datetime.datetime.now(datetime.timezone.utc)
        # the shapes tools send: psycopg's, with a literal or a parameter
        assert conn.execute("SELECT 1 FROM pg_catalog.pg_cursors WHERE name = 'a'").fetchall() == [(1,)]
        assert conn.execute("SELECT 1 FROM pg_catalog.pg_cursors WHERE name = %s", ("B b",)).fetchall() == [(1,)]
        assert conn.execute("SELECT 1 FROM pg_catalog.pg_cursors WHERE name = %s", ("x",),
                            prepare=True).fetchall() == []
        assert conn.execute("SELECT name FROM pg_cursors c WHERE c.is_holdable AND NOT c.is_scrollable"
                            ).fetchall() == [("B b",)]
        assert conn.execute("SELECT name FROM pg_cursors WHERE name IN ('a', 'zz') OR is_binary "
                            "ORDER BY name DESC").fetchall() == [("a",), ("B b",)]
        assert conn.execute("SELECT count(*) FROM pg_cursors WHERE statement IS NOT NULL").fetchone() == (2,)
        assert conn.execute("SELECT name, is_binary FROM pg_cursors ORDER BY 1 LIMIT 1 OFFSET 1"
                            ).fetchall() == [("a", False)]
        bcur = conn.cursor(binary=True)
        assert bcur.execute("SELECT name, creation_time FROM pg_cursors WHERE name = %s",
                            ("a",)).fetchone()[0] == "a"
        # what it cannot answer exactly, it refuses, naming the construct
        for sql in ["SELECT name FROM pg_cursors GROUP BY name",
                    "SELECT name FROM pg_cursors WHERE name LIKE 'a%'",
                    "SELECT DISTINCT name FROM pg_cursors",
                    "SELECT name FROM pg_cursors WHERE name IN (SELECT name FROM pg_cursors)"]:
            with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
                conn.execute(sql)
            assert "not supported" in e.value.diag.message_primary, sql
            conn.rollback()
        with pytest.raises(psycopg.errors.UndefinedColumn):
            conn.execute("SELECT nope FROM pg_cursors")
        conn.rollback()
        # the ROLLBACKs closed "a"; "B b" was declared WITH HOLD in that
        # same transaction, so it went too
        assert conn.execute("SELECT count(*) FROM pg_cursors").fetchone() == (0,)


# ---------------------------------------------------------------------------
# the extended protocol, message by message
# ---------------------------------------------------------------------------
def test_extended_protocol_fetch_portals(srv):
    with harness.RawConn.tcp(srv.host, srv.port) as c:
        c.startup(USER, PASSWORD)
        c.query("BEGIN")
        # DECLARE with a parameter: Describe gives NoData
        c.send(parse_msg("", "DECLARE g CURSOR FOR SELECT * FROM gen WHERE n < $1")
               + bind_msg("", "", ["7"]) + describe_msg(b"P", "") + execute_msg("", 0) + msg(b"S"))
        msgs = c.read_until_ready()
        assert [t for t, _ in msgs] == ["1", "2", "n", "C", "Z"]
        assert msgs[3][1] == b"DECLARE CURSOR\0"
        # the cursor is a portal: Describe names its columns, in text
        c.send(describe_msg(b"P", "g") + msg(b"S"))
        (t, body), _ = c.read_until_ready()
        assert t == "T" and b"label" in body and body.endswith(b"\xff\xff\xff\xff\x00\x00")
        # FETCH in binary with a row limit: suspended, then the rest
        c.send(parse_msg("", "FETCH 5 FROM g") + bind_msg("", "", result_formats=[1])
               + describe_msg(b"P", "") + execute_msg("", 3) + execute_msg("", 3)
               + execute_msg("", 3) + msg(b"S"))
        msgs = c.read_until_ready()
        assert "".join(t for t, _ in msgs) == "12TDDDsDDCCZ"
        assert msgs[2][1].endswith(b"\x00\x01")           # binary format in RowDescription
        assert [struct.unpack("!q", b[6:14])[0] for t, b in msgs if t == "D"] == [0, 1, 2, 3, 4]
        assert [b for t, b in msgs if t == "C"] == [b"FETCH 2\0", b"FETCH 0\0"]
        # Execute of the cursor portal itself; then Close it
        c.send(execute_msg("g", 1) + execute_msg("g", 0) + msg(b"C", b"P" + cstr("g")) + msg(b"S"))
        msgs = c.read_until_ready()
        assert "".join(t for t, _ in msgs) == "DsDC3Z"
        assert msgs[3][1] == b"SELECT 1\0"
        msgs = c.query("FETCH 1 FROM g")
        assert harness.parse_error_fields(msgs[0][1])["C"] == "34000"
        c.query("ROLLBACK")


# ---------------------------------------------------------------------------
# statement_timeout and CancelRequest during a FETCH
# ---------------------------------------------------------------------------
def test_statement_timeout_during_fetch(srv):
    with psycopg.connect(srv.dsn()) as conn:
        conn.execute("DECLARE s CURSOR FOR SELECT * FROM slow")
        assert conn.execute("FETCH 5 FROM s").fetchall() == [(i,) for i in range(5)]
        conn.execute("SET statement_timeout = '300ms'")
        start = time.time()
        with pytest.raises(psycopg.errors.QueryCanceled) as e:
            conn.execute("FETCH 20 FROM s")
        assert e.value.diag.message_primary == "canceling statement due to statement timeout"
        assert time.time() - start < 10
        conn.rollback()
        conn.execute("SET statement_timeout = 0")
        assert sqlstate_of(lambda: conn.execute("FETCH 1 FROM s")) == "34000"
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM pg_cursors").fetchone() == (0,)


def test_cancel_during_fetch(srv):
    with psycopg.connect(srv.dsn()) as conn:
        conn.execute("DECLARE s CURSOR FOR SELECT * FROM slow")
        threading.Timer(0.5, conn.cancel).start()
        start = time.time()
        with pytest.raises(psycopg.errors.QueryCanceled) as e:
            conn.execute("FETCH ALL FROM s")
        assert time.time() - start < 10
        assert "user request" in e.value.diag.message_primary
        conn.rollback()
        with conn.cursor(name="after") as cur:
            cur.execute("SELECT * FROM gen")
            assert cur.fetchmany(2) == rows(0, 2)


# ---------------------------------------------------------------------------
# next to an upstream
# ---------------------------------------------------------------------------
def test_upstream_cursors_are_still_relayed(riffq_factory, pg_cluster, plugin_dir):
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS cur_items")
        c.execute("CREATE TABLE cur_items AS SELECT g AS id, 'item ' || g AS name FROM generate_series(1, 50) g")
    port = harness.free_port()
    srv = riffq_factory(plugin_config(
        port, os.path.join(plugin_dir, "cur.py"), [{"name": "rest", "to": "upstream:main"}],
        upstreams={"main": {"conninfo": pg_cluster.dsn(), "pool_mode": "transaction"}}))
    with psycopg.connect(srv.dsn()) as conn:
        # a cursor over an upstream table is the upstream's
        with conn.cursor(name="up") as cur:
            cur.execute("SELECT * FROM cur_items ORDER BY id")
            assert cur.fetchmany(3) == [(1, "item 1"), (2, "item 2"), (3, "item 3")]
            assert conn.execute("SELECT name FROM pg_cursors").fetchall() == [("up",)]
            assert cur.fetchmany(2) == [(4, "item 4"), (5, "item 5")]
        cur = conn.execute("DECLARE u CURSOR FOR SELECT id FROM cur_items ORDER BY id")
        assert conn.execute("FETCH 2 FROM u").fetchall() == [(1,), (2,)]
        assert conn.execute("MOVE 10 FROM u").statusmessage == "MOVE 10"
        # what the gateway refuses over a plugin, the upstream answers
        assert conn.execute("FETCH BACKWARD 1 FROM u").fetchall() == [(11,)]
        conn.commit()
    with psycopg.connect(srv.dsn(), autocommit=True) as conn:
        # a held cursor over a plugin next to a transaction on the upstream
        conn.execute("DECLARE h CURSOR WITH HOLD FOR SELECT * FROM gen")
        assert conn.execute("SELECT name FROM pg_cursors").fetchall() == [("h",)]
        with conn.transaction():
            conn.execute("DECLARE u CURSOR FOR SELECT id FROM cur_items ORDER BY id")
            assert conn.execute("FETCH 1 FROM u").fetchall() == [(1,)]
            assert conn.execute("FETCH 2 FROM h").fetchall() == rows(0, 2)
            # both cannot be listed by either: refused, not half answered
            with pytest.raises(psycopg.errors.FeatureNotSupported):
                conn.execute("SELECT name FROM pg_cursors")
            raise psycopg.Rollback()
        assert conn.execute("FETCH 1 FROM h").fetchall() == rows(2, 3)
        assert sqlstate_of(lambda: conn.execute("DECLARE h CURSOR WITH HOLD FOR SELECT 1")) == "42P03"
        conn.execute("CLOSE h")
        assert conn.execute("SELECT count(*) FROM pg_cursors").fetchone() == (0,)
