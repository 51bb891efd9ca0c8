"""
Python plugins behind the gateway, end to end: the shipped demo plugin and
small test plugins, through psql, psycopg (text and binary, server-side
binding) and asyncpg.  Values are asserted exactly; errors by SQLSTATE.
"""
import asyncio
import os
import subprocess
import threading
import time

import asyncpg
import psycopg
import pytest

import harness
from harness import PASSWORD, USER

DEMO = os.path.join(harness.REPO, "plugins", "demo.py")

TEST_PLUGIN = '''
import time
import riffq

riffq.register_table("public", "nums", [("n", "int8"), ("sq", "float8"), ("label", "text")])
riffq.register_table("public", "boom", [("x", "int4")])
riffq.register_table("public", "writes", [("x", "int4")])
riffq.register_table("public", "slow", [("x", "int4")])

@riffq.query_handler
def handle(sql, params, ctx):
    s = sql.lower()
    if "from nums" in s:
        limit = int(params[0]) if params else 100000
        def batches():
            for start in range(0, limit, 1000):
                yield [(i, float(i) ** 0.5, "n%d" % i) for i in range(start, min(limit, start + 1000))]
        return riffq.Columns([("n", "int8"), ("sq", "float8"), ("label", "text")]), batches()
    if "from boom" in s and "sqlstate" in s:
        raise riffq.Error("22012", "custom division problem", detail="d", hint="h")
    if "from boom" in s:
        raise ValueError("something broke")
    if "writes" in s:
        return riffq.Command("INSERT 0 3")
    if "from slow" in s:
        while True:
            time.sleep(0.01)
    return [(ctx["user"], ctx["route"])], [("user", "text"), ("route", "text")]
'''


@pytest.fixture
def plugin_server(riffq_factory, short_tmp):
    path = os.path.join(short_tmp, "tplug.py")
    with open(path, "w") as f:
        f.write(TEST_PLUGIN)
    broken = os.path.join(short_tmp, "broken.py")
    with open(broken, "w") as f:
        f.write("import no_such_module_for_riffq\n")
    port = harness.free_port()
    cfg = {
        "listen": [{"host": "127.0.0.1", "port": port}],
        "auth": {"method": "scram-sha-256", "users": {USER: PASSWORD}},
        "plugins": {"demo": {"module": DEMO}, "t": {"module": path}, "broken": {"module": broken}},
        "routes": [
            {"name": "demo", "match": {"tables": ["sales", "customers"]}, "to": "plugin:demo"},
            {"name": "test", "match": {"tables": ["nums", "boom", "writes", "slow", "who"]}, "to": "plugin:t"},
            {"name": "gone", "match": {"tables": ["nothing"]}, "to": "plugin:broken"},
            {"name": "local", "to": "local"},
        ],
    }
    return riffq_factory(cfg)


def test_demo_tables_through_psycopg(plugin_server):
    with psycopg.connect(plugin_server.dsn(), autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM sales").fetchone() == (1000,)
        assert c.execute("SELECT count(*) FROM customers WHERE vip").fetchone() == (40,)
        rows = c.execute("SELECT id, region FROM sales WHERE id <= %s ORDER BY id", (3,)).fetchall()
        assert [r[0] for r in rows] == [1, 2, 3]
        cur = c.cursor(binary=True)
        cur.execute("SELECT id, amount, sold_at FROM sales WHERE id = %s", (1,))
        (rid, amount, sold_at), = cur.fetchall()
        assert rid == 1 and str(amount) == "136.12"
        assert sold_at.isoformat() == "2024-10-14T23:45:05+00:00"


def test_demo_tables_through_asyncpg_and_psql(plugin_server):
    async def main():
        con = await asyncpg.connect(host=plugin_server.host, port=plugin_server.port,
                                    user=USER, password=PASSWORD, database="db")
        try:
            rows = await con.fetch("SELECT id, name, vip FROM customers WHERE id <= $1 ORDER BY id", 2)
            assert [tuple(r) for r in rows] == [(1, "Leslie Liskov", False), (2, "Alan Turing", False)]
            async with con.transaction():
                cur = await con.cursor("SELECT id FROM sales ORDER BY id")
                assert [r["id"] for r in await cur.fetch(3)] == [1, 2, 3]
                assert [r["id"] for r in await cur.fetch(2)] == [4, 5]
        finally:
            await con.close()
    asyncio.run(main())
    out = subprocess.run([harness.PSQL, "-X", "-A", "-t", "-c", "SELECT count(*) FROM customers",
                          plugin_server.dsn()], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "200"


def test_streamed_generator_and_row_limits(plugin_server):
    with psycopg.connect(plugin_server.dsn()) as c:
        rows = c.execute("SELECT * FROM nums").fetchall()
        assert len(rows) == 100000
        assert rows[99999] == (99999, 99999 ** 0.5, "n99999")
    # Execute with a row limit (PortalSuspended) through a raw extended-protocol exchange
    with harness.RawConn.tcp(plugin_server.host, plugin_server.port) as c:
        c.startup(USER, PASSWORD)
        c.send(harness.parse_msg("", "SELECT n FROM nums") + harness.bind_msg("", "")
               + harness.execute_msg("", 3) + harness.execute_msg("", 2) + harness.msg(b"S"))
        msgs = c.read_until_ready()
        assert "".join(t for t, _ in msgs) == "12DDDsDDsZ"


def test_plugin_errors_and_commands(plugin_server):
    with psycopg.connect(plugin_server.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.DivisionByZero) as e:
            c.execute("SELECT sqlstate FROM boom")
        assert e.value.diag.message_primary == "custom division problem"
        assert e.value.diag.message_detail == "d" and e.value.diag.message_hint == "h"
        with pytest.raises(psycopg.errors.InternalError_) as e:
            c.execute("SELECT * FROM boom")
        assert "something broke" in e.value.diag.message_primary
        cur = c.execute("INSERT INTO writes VALUES (1), (2), (3)")
        assert cur.statusmessage == "INSERT 0 3" and cur.rowcount == 3
        with pytest.raises(psycopg.Error) as e:
            c.execute("SELECT * FROM nothing")
        assert "broken" in str(e.value) and "no_such_module_for_riffq" in str(e.value)
        # the session carries on
        assert c.execute("SELECT * FROM who").fetchone() == (USER, "test")


def test_cancel_interrupts_handler(plugin_server):
    with psycopg.connect(plugin_server.dsn(), autocommit=True) as c:
        threading.Timer(0.5, c.cancel).start()
        start = time.time()
        with pytest.raises(psycopg.errors.QueryCanceled):
            c.execute("SELECT * FROM slow")
        assert time.time() - start < 10
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_statement_timeout_interrupts_handler(plugin_server):
    with psycopg.connect(plugin_server.dsn(), autocommit=True) as c:
        c.execute("SET statement_timeout = '300ms'")
        start = time.time()
        with pytest.raises(psycopg.errors.QueryCanceled) as e:
            c.execute("SELECT * FROM slow")
        assert e.value.diag.message_primary == "canceling statement due to statement timeout"
        assert time.time() - start < 10
        # fast statements are not affected, and the session goes on
        assert c.execute("SELECT count(*) FROM customers").fetchone() == (200,)
        c.execute("SET statement_timeout = 0")


def test_plugin_inside_local_transaction(plugin_server):
    with psycopg.connect(plugin_server.dsn()) as c:
        c.execute("SET application_name = 'in-tx'")
        assert c.execute("SELECT count(*) FROM customers").fetchone() == (200,)
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        c.rollback()
        assert c.execute("SHOW application_name").fetchone() == ("",)


def test_plugin_route_without_tables_claims_registered_ones(riffq_factory, short_tmp):
    path = os.path.join(short_tmp, "auto.py")
    with open(path, "w") as f:
        f.write(TEST_PLUGIN)
    port = harness.free_port()
    srv = riffq_factory({
        "listen": [{"host": "127.0.0.1", "port": port}],
        "auth": {"method": "scram-sha-256", "users": {USER: PASSWORD}},
        "plugins": {"t": {"module": path}},
        "routes": [{"name": "auto", "to": "plugin:t"}, {"name": "local", "to": "local"}],
    })
    with psycopg.connect(srv.dsn(), autocommit=True) as c:
        # "nums" is registered by the plugin, so the route without tables claims it
        assert c.execute("SELECT * FROM nums WHERE n < %s", (4,)).fetchall() == [
            (0, 0.0, "n0"), (1, 1.0, "n1"), (2, 2 ** 0.5, "n2"), (3, 3 ** 0.5, "n3")]
        # anything else is not the plugin's
        assert c.execute("SELECT version()").fetchone()[0].startswith("PostgreSQL 15.8 (riffq")
        with pytest.raises(psycopg.errors.UndefinedTable):
            c.execute("SELECT * FROM not_registered")


HOOK_PLUGIN = '''
import riffq

seen = []

@riffq.on_connect
def check(ctx):
    if ctx["user"] == "mallory":
        raise riffq.Error("28000", "mallory may not log in", hint="ask an admin")
    seen.append(("connect", ctx["user"], ctx["application_name"]))

@riffq.on_disconnect
def bye(ctx):
    seen.append(("disconnect", ctx["user"], ""))

riffq.register_table("public", "hook_log", [("event", "text"), ("user", "text"), ("app", "text")])

@riffq.query_handler
def handle(sql, params, ctx):
    return list(seen), [("event", "text"), ("user", "text"), ("app", "text")]
'''


def test_connect_hooks_can_refuse_a_login(riffq_factory, short_tmp):
    path = os.path.join(short_tmp, "hooks.py")
    with open(path, "w") as f:
        f.write(HOOK_PLUGIN)
    port = harness.free_port()
    srv = riffq_factory({
        "listen": [{"host": "127.0.0.1", "port": port}],
        "auth": {"method": "scram-sha-256", "users": {USER: PASSWORD, "mallory": "pw"}},
        "plugins": {"h": {"module": path}},
        "routes": [{"name": "h", "to": "plugin:h"}, {"name": "local", "to": "local"}],
    })
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(srv.dsn(user="mallory", password="pw"))
    assert "mallory may not log in" in str(e.value)
    with psycopg.connect(srv.dsn(application_name="first"), autocommit=True):
        pass
    with psycopg.connect(srv.dsn(application_name="second"), autocommit=True) as c:
        deadline = time.time() + 5
        rows = []
        while time.time() < deadline:
            rows = c.execute("SELECT * FROM hook_log").fetchall()
            if ("disconnect", USER, "") in rows:
                break
            time.sleep(0.05)
        assert rows[0] == ("connect", USER, "first")
        assert ("disconnect", USER, "") in rows
        assert ("connect", USER, "second") in rows
        assert not any(r[1] == "mallory" for r in rows)
