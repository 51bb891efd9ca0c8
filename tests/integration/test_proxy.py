"""
riffq in front of a real PostgreSQL 15 (issue: routing table and upstream
Postgres).  Every test talks to the gateway with a real driver and asserts
the exact values Postgres computed, so a relay that drops, reorders or
corrupts a message fails here.
"""
import asyncio
import os
import signal
import threading
import time

import asyncpg
import psycopg
import pytest

import harness
from harness import (PASSWORD, SYNC, USER, bind_msg, describe_msg, execute_msg, parse_msg,
                     parse_param_description, parse_row_description, rows_of, types_of)


def proxy_config(port, conninfo, pool_mode="transaction", pool_size=5, routes=None, upstreams=None, **top):
    cfg = {
        "listen": [{"host": "127.0.0.1", "port": port}],
        "auth": {"method": "scram-sha-256", "users": {USER: PASSWORD}},
        "upstreams": upstreams or {"main": {"conninfo": conninfo, "pool_mode": pool_mode,
                                            "pool_size": pool_size}},
        "routes": routes or [{"name": "all", "to": "upstream:main"}],
    }
    cfg.update(top)
    return cfg


@pytest.fixture
def proxy(riffq_factory, pg_cluster):
    def start(**kw):
        port = harness.free_port()
        return riffq_factory(proxy_config(port, pg_cluster.dsn(), **kw))
    return start


@pytest.fixture(scope="module")
def schema(pg_cluster):
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS items, billing_invoices")
        c.execute("CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2))")
        c.execute("INSERT INTO items SELECT g, 'item ' || g, g * 1.5 FROM generate_series(1, 100) g")
        c.execute("CREATE TABLE billing_invoices (id int, amount int)")
        c.execute("INSERT INTO billing_invoices VALUES (1, 10), (2, 20)")
    return pg_cluster


def test_simple_and_extended_queries(proxy, schema):
    srv = proxy()
    with psycopg.connect(srv.dsn()) as c:
        assert c.execute("SELECT count(*), sum(price) FROM items").fetchone() == (100, 7575)
        assert c.execute("SELECT name FROM items WHERE id = %s", (42,)).fetchone() == ("item 42",)
        assert c.execute("SELECT id FROM items WHERE id = %s", (7,), prepare=True).fetchone() == (7,)
        assert c.execute("SELECT id FROM items WHERE id = %s", (8,), prepare=True).fetchone() == (8,)
        cur = c.cursor(binary=True)
        cur.execute("SELECT id, price FROM items WHERE id IN (%s, %s) ORDER BY id", (1, 2))
        assert [(r[0], str(r[1])) for r in cur.fetchall()] == [(1, "1.50"), (2, "3.00")]
        # the server's own version comes through, not the gateway's
        assert c.execute("SHOW server_version_num").fetchone()[0].startswith("15")


def test_errors_pass_through_with_fields(proxy, schema):
    srv = proxy()
    with psycopg.connect(srv.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.UniqueViolation) as e:
            c.execute("INSERT INTO items VALUES (1, 'dup', 1)")
        assert e.value.diag.sqlstate == "23505"
        assert e.value.diag.constraint_name == "items_pkey"
        assert "Key (id)=(1) already exists." == e.value.diag.message_detail
        with pytest.raises(psycopg.errors.UndefinedTable) as e:
            c.execute("SELECT * FROM nosuch")
        assert e.value.diag.statement_position == "15"
        # the connection is fine afterwards
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_transactions_and_status(proxy, schema):
    srv = proxy(pool_size=1)
    with psycopg.connect(srv.dsn()) as a, psycopg.connect(srv.dsn()) as b:
        a.execute("UPDATE items SET name = 'changed' WHERE id = 100")
        assert a.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        a.rollback()
        assert a.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        # with pool_size 1, b only gets the server after a's transaction ended
        assert b.execute("SELECT name FROM items WHERE id = 100").fetchone() == ("item 100",)
        b.commit()
        with pytest.raises(psycopg.errors.DivisionByZero):
            a.execute("SELECT 1/0")
        assert a.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            a.execute("SELECT 1")
        a.rollback()
        assert a.execute("SELECT 2").fetchone() == (2,)


def test_prepared_statements_survive_transaction_pooling(proxy, schema):
    srv = proxy(pool_size=2)

    async def client(n):
        con = await asyncpg.connect(host=srv.host, port=srv.port, user=USER, password=PASSWORD,
                                    database="postgres")
        try:
            stmt = await con.prepare("SELECT name, price FROM items WHERE id = $1")
            out = []
            for i in range(1, 21):
                row = await stmt.fetchrow((i + n) % 100 + 1)
                out.append((row["name"], row["price"]))
            return out
        finally:
            await con.close()

    async def main():
        return await asyncio.gather(*(client(n) for n in range(6)))

    results = asyncio.run(main())
    for n, rows in enumerate(results):
        for i, (name, price) in enumerate(rows, 1):
            k = (i + n) % 100 + 1
            assert name == "item %d" % k
            assert float(price) == k * 1.5


def test_copy_in_and_out(proxy, schema):
    srv = proxy()
    with psycopg.connect(srv.dsn(), autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS copied")
        c.execute("CREATE TABLE copied (a int, b text)")
        with c.cursor().copy("COPY copied FROM STDIN") as cp:
            for i in range(5000):
                cp.write_row((i, "row %d" % i))
        assert c.execute("SELECT count(*), max(a) FROM copied").fetchone() == (5000, 4999)
        lines = []
        with c.cursor().copy("COPY (SELECT a, b FROM copied WHERE a < 3 ORDER BY a) TO STDOUT") as cp:
            for row in cp.rows():
                lines.append(row)
        assert lines == [("0", "row 0"), ("1", "row 1"), ("2", "row 2")]


def test_notify_reaches_listener(proxy, schema):
    srv = proxy(pool_mode="session")
    with psycopg.connect(srv.dsn(), autocommit=True) as listener, \
         psycopg.connect(srv.dsn(), autocommit=True) as talker:
        got = []
        listener.add_notify_handler(lambda n: got.append((n.channel, n.payload)))
        listener.execute("LISTEN riffq_test")
        talker.execute("NOTIFY riffq_test, 'hello'")
        # the notification arrives asynchronously; any round trip reads it
        deadline = time.time() + 5
        while not got and time.time() < deadline:
            listener.execute("SELECT 1")
            time.sleep(0.05)
        assert got == [("riffq_test", "hello")]


def test_cancel_running_statement(proxy, schema):
    srv = proxy()
    with psycopg.connect(srv.dsn()) as c:
        t = threading.Timer(0.5, c.cancel)
        t.start()
        start = time.time()
        with pytest.raises(psycopg.errors.QueryCanceled):
            c.execute("SELECT pg_sleep(20)")
        assert time.time() - start < 10
        c.rollback()
        assert c.execute("SELECT 3").fetchone() == (3,)


def test_pool_exhaustion_queues_clients(proxy, schema):
    srv = proxy(pool_size=1)
    results = []

    def worker(i):
        with psycopg.connect(srv.dsn(), autocommit=True) as c:
            results.append(c.execute("SELECT %s::int, pg_sleep(0.2)", (i,)).fetchone()[0])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [0, 1, 2, 3]
    # one server connection: the sleeps ran one after another
    assert time.time() - start >= 0.75


def test_route_by_table_user_and_reject(riffq_factory, pg_cluster, schema):
    port = harness.free_port()
    cfg = proxy_config(port, pg_cluster.dsn(), routes=[
        {"name": "ro", "match": {"statement": ["delete", "update"], "user": [USER]},
         "to": "reject", "message": "alice is read-only", "sqlstate": "42501"},
        {"name": "items", "match": {"tables": ["items"]}, "to": "upstream:main"},
        {"name": "local", "to": "local"},
    ])
    srv = riffq_factory(cfg)
    with psycopg.connect(srv.dsn(), autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM items").fetchone() == (100,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            c.execute("DELETE FROM items")
        assert str(e.value).startswith("alice is read-only")
        # not routed upstream: the gateway answers, and knows no such table
        with pytest.raises(psycopg.errors.UndefinedTable):
            c.execute("SELECT * FROM billing_invoices")
        assert c.execute("SELECT version()").fetchone()[0].startswith("PostgreSQL 15.8 (riffq")


def test_two_upstreams_and_mixed_join(riffq_factory, pg_cluster, schema):
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS other")
        c.execute("CREATE DATABASE other")
    with psycopg.connect(pg_cluster.dsn(dbname="other"), autocommit=True) as c:
        c.execute("CREATE TABLE crm_accounts (id int, owner text)")
        c.execute("INSERT INTO crm_accounts VALUES (1, 'ann')")
    port = harness.free_port()
    cfg = proxy_config(port, None, upstreams={
        "main": {"conninfo": pg_cluster.dsn(), "pool_mode": "transaction"},
        "crm": {"conninfo": pg_cluster.dsn(dbname="other"), "pool_mode": "transaction"},
    }, routes=[
        {"name": "crm", "match": {"tables": ["crm_accounts"]}, "to": "upstream:crm"},
        {"name": "billing", "match": {"tables": ["billing_invoices"]}, "to": "upstream:main"},
        {"name": "rest", "to": "upstream:main"},
    ])
    srv = riffq_factory(cfg)
    with psycopg.connect(srv.dsn(), autocommit=True) as c:
        assert c.execute("SELECT owner FROM crm_accounts").fetchone() == ("ann",)
        assert c.execute("SELECT sum(amount) FROM billing_invoices").fetchone() == (30,)
        assert c.execute("SELECT current_database()").fetchone() == ("postgres",)
        with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
            c.execute("SELECT * FROM crm_accounts JOIN billing_invoices USING (id)")
        msg = str(e.value)
        assert '"crm"' in msg and '"billing"' in msg


def test_sighup_reload_good_and_bad(riffq_factory, pg_cluster, schema):
    port = harness.free_port()
    cfg = proxy_config(port, pg_cluster.dsn())
    srv = riffq_factory(cfg)
    held = psycopg.connect(srv.dsn(), autocommit=True)
    assert held.execute("SELECT count(*) FROM items").fetchone() == (100,)
    # a new route file that rejects everything for new sessions
    cfg["routes"] = [{"name": "closed", "to": "reject", "message": "maintenance", "sqlstate": "57P03"}]
    _rewrite(srv, cfg)
    os.kill(srv.pid, signal.SIGHUP)
    deadline = time.time() + 10
    while "reloaded" not in srv.log and time.time() < deadline:
        time.sleep(0.05)
    assert "reloaded" in srv.log
    with psycopg.connect(srv.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.CannotConnectNow) as e:
            c.execute("SELECT 1")
        assert "maintenance" in str(e.value)
    # the old session keeps its configuration
    assert held.execute("SELECT count(*) FROM items").fetchone() == (100,)
    # an invalid file is refused and the current one stays
    with open(srv.config_path, "w") as f:
        f.write('{"routes": [{"to": "upstream:nowhere"}]}')
    os.kill(srv.pid, signal.SIGHUP)
    deadline = time.time() + 10
    while "reload failed" not in srv.log and time.time() < deadline:
        time.sleep(0.05)
    assert "reload failed" in srv.log
    with psycopg.connect(srv.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.CannotConnectNow):
            c.execute("SELECT 1")
    held.close()


def _rewrite(srv, cfg):
    import json
    with open(srv.config_path, "w") as f:
        json.dump(cfg, f)


@pytest.fixture
def own_cluster():
    pg = harness.PgCluster()
    try:
        pg.start()
        yield pg
    finally:
        pg.stop()


def test_upstream_killed_mid_query_and_pool_heals(riffq_factory, own_cluster):
    port = harness.free_port()
    srv = riffq_factory(proxy_config(port, own_cluster.dsn(), pool_size=2))
    with psycopg.connect(srv.dsn(), autocommit=True) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        killer = threading.Timer(0.5, lambda: psycopg.connect(own_cluster.dsn(), autocommit=True)
                                 .execute("SELECT pg_terminate_backend(%s)", (pid,)))
        killer.start()
        with pytest.raises(psycopg.OperationalError) as e:
            c.execute("SELECT pg_sleep(10)")
        killer.join()
        assert e.value.sqlstate in ("57P01", "08006")
    # a new client gets a fresh server connection
    with psycopg.connect(srv.dsn(), autocommit=True) as c:
        assert c.execute("SELECT 5").fetchone() == (5,)
    # a restart of the whole server: idle pooled connections die, new ones work
    own_cluster._as_pg([os.path.join(harness.PG_BINDIR, "pg_ctl"), "-D", own_cluster.datadir,
                        "-l", os.path.join(own_cluster.tmp, "pg.log"), "-m", "fast", "-w", "restart"])
    deadline = time.time() + 10
    while True:
        try:
            with psycopg.connect(srv.dsn(), autocommit=True) as c:
                assert c.execute("SELECT 6").fetchone() == (6,)
            break
        except psycopg.OperationalError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def test_upstream_down_gives_clear_error(riffq_factory):
    port = harness.free_port()
    dead = harness.free_port()
    srv = riffq_factory(proxy_config(port, "host=127.0.0.1 port=%d dbname=x user=x connect_timeout=2" % dead))
    with psycopg.connect(srv.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.OperationalError) as e:
            c.execute("SELECT 1")
        assert e.value.sqlstate == "08006"
        assert "Connection refused" in str(e.value) or "connection" in str(e.value).lower()
        # the session is still usable for statements the gateway answers... none here:
        # everything routes upstream, so the same error again
        with pytest.raises(psycopg.OperationalError):
            c.execute("SELECT 1")


def test_session_settings_follow_clients_across_pooled_servers(proxy, schema):
    # one server connection for two clients: each must see only its own settings
    srv = proxy(pool_size=1)
    with psycopg.connect(srv.dsn(options="-c search_path=pg_catalog,public"), autocommit=True) as a, \
         psycopg.connect(srv.dsn(application_name="client-b"), autocommit=True) as b:
        assert a.execute("SHOW search_path").fetchone() == ("pg_catalog,public",)
        a.execute("SET application_name = 'client-a'")
        a.execute("SET TIME ZONE 'Asia/Tokyo'")
        assert b.execute("SHOW application_name").fetchone() == ("client-b",)
        assert b.execute("SHOW TimeZone").fetchone()[0] != "Asia/Tokyo"
        assert b.execute("SHOW search_path").fetchone() == ('"$user", public',)
        assert a.execute("SELECT current_setting('application_name'), current_setting('TimeZone')").fetchone() \
            == ("client-a", "Asia/Tokyo")
        a.execute("RESET application_name")
        b.execute("SET search_path TO public")
        assert a.execute("SHOW search_path").fetchone() == ("pg_catalog,public",)
        assert b.execute("SHOW search_path").fetchone() == ("public",)
        # the server really is shared
        assert a.execute("SELECT pg_backend_pid()").fetchone() == b.execute("SELECT pg_backend_pid()").fetchone()


def test_listen_pins_the_server_under_transaction_pooling(proxy, schema):
    srv = proxy(pool_size=3)
    with psycopg.connect(srv.dsn(), autocommit=True) as listener, \
         psycopg.connect(srv.dsn(), autocommit=True) as talker:
        got = []
        listener.add_notify_handler(lambda n: got.append(n.payload))
        listener.execute("LISTEN pinned_chan")
        pid = listener.execute("SELECT pg_backend_pid()").fetchone()[0]
        talker.execute("NOTIFY pinned_chan, 'one'")
        deadline = time.time() + 5
        while not got and time.time() < deadline:
            listener.execute("SELECT 1")
            time.sleep(0.05)
        assert got == ["one"]
        assert listener.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
    assert "pinned to its server connection by LISTEN" in srv.log


def test_gateway_views_answer_show(proxy, schema):
    srv = proxy(pool_size=4)
    with psycopg.connect(srv.dsn(), autocommit=True) as c:
        for _ in range(3):
            c.execute("SELECT count(*) FROM items")
        c.execute("LISTEN some_channel")         # pins this session
        pools = c.execute("SHOW riffq.pools").fetchall()
        assert len(pools) == 1
        (name, mode, size, active, idle, connecting, waiting, acquired, opened, failed,
         host, role, healthy) = pools[0]
        assert (name, mode, size, failed) == ("main", "transaction", 4, 0)
        assert (host, role, healthy) == ("127.0.0.1:%d" % schema.port, "primary", True)
        assert acquired >= 4 and opened >= 1 and active == 1
        routes = c.execute("SHOW riffq.routes").fetchall()
        assert routes[0][0] == "all" and routes[0][1] == "upstream:main" and routes[0][2] >= 4
        stats = dict(c.execute("SHOW riffq.stats").fetchall())
        assert stats["sessions_started"] >= 1 and stats["sessions_pinned"] >= 1
        with pytest.raises(psycopg.errors.UndefinedObject):
            c.execute("SHOW riffq.nothing")
        # the extended protocol too: psycopg prepares what runs repeatedly,
        # and binary results are asked for here
        for _ in range(3):
            named = c.execute("SHOW riffq.stats", prepare=True).fetchall()
            assert dict(named)["sessions_started"] >= 1
        cur = c.cursor(binary=True)
        assert cur.execute("SHOW riffq.routes").fetchall()[0][:2] == ("all", "upstream:main")
        with pytest.raises(psycopg.errors.UndefinedObject):
            c.execute("SHOW riffq.nothing", prepare=True)


def test_failed_copy_in_leaves_the_connection_usable(proxy, schema):
    srv = proxy(pool_size=1)
    with psycopg.connect(srv.dsn(), autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS copy_bad")
        c.execute("CREATE TABLE copy_bad (a int)")
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            with c.cursor().copy("COPY copy_bad FROM STDIN") as cp:
                cp.write(b"1\nnot a number\n3\n")
        assert c.execute("SELECT count(*) FROM copy_bad").fetchone() == (0,)
    # the single pooled server went back to the pool in a clean state
    with psycopg.connect(srv.dsn(), autocommit=True) as c2:
        assert c2.execute("SELECT 42").fetchone() == (42,)


def test_auth_query_uses_verifiers_postgres_holds(riffq_factory, pg_cluster, schema):
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as c:
        c.execute("DROP ROLE IF EXISTS pgalice")
        c.execute("CREATE ROLE pgalice LOGIN PASSWORD 'pw-secret'")   # stored as SCRAM
    port = harness.free_port()
    cfg = proxy_config(port, pg_cluster.dsn())
    cfg["auth"] = {"method": "scram-sha-256", "auth_query": {"upstream": "main"}}
    srv = riffq_factory(cfg)
    with psycopg.connect(srv.dsn(user="pgalice", password="pw-secret"), autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM items").fetchone() == (100,)
    for user, password in (("pgalice", "wrong"), ("nobody", "pw-secret")):
        with pytest.raises(psycopg.OperationalError) as e:
            psycopg.connect(srv.dsn(user=user, password=password))
        assert 'password authentication failed for user "%s"' % user in str(e.value)
    # the lookups did not use up the pool
    with psycopg.connect(srv.dsn(user="pgalice", password="pw-secret"), autocommit=True) as c:
        pools = c.execute("SHOW riffq.pools").fetchall()
        assert pools[0][3] == 0 or pools[0][3] == 1     # active: at most this session's


def test_repeated_unnamed_parse_follows_text_and_types(proxy, schema):
    """Drivers in extended mode re-send the same unnamed Parse before every
    execution, and the gateway keeps its record of the unnamed statement when
    text and types repeat.  Each round must still run what the client sent:
    new text, new declared types, a Describe of the statement, and a Bind
    that names a statement the unnamed Parse replaced."""
    srv = proxy(pool_size=2)
    INT4, INT8, TEXT = 23, 20, 25

    def run(c, sql, types, params, describe=False):
        out = parse_msg("", sql, types)
        if describe:
            out += describe_msg(b"S", "")
        c.send(out + bind_msg("", "", params) + describe_msg(b"P", "") + execute_msg("") + SYNC)
        return c.read_until_ready()

    with srv.connect_raw() as c:
        c.startup(USER, PASSWORD, database="postgres")
        for i in (1, 2, 3):
            got = run(c, "SELECT name FROM items WHERE id = $1", (), [str(i)])
            assert types_of(got) == "12TDCZ"
            assert rows_of(got) == [[b"item %d" % i]]
        # same text, other declared type: the result type follows it
        got = run(c, "SELECT $1 AS v", (INT8,), ["9000000000"], describe=True)
        assert types_of(got) == "1tT2TDCZ"
        assert parse_param_description(got[1][1]) == [INT8]
        assert parse_row_description(got[2][1])[0]["type_oid"] == INT8
        got = run(c, "SELECT $1 AS v", (TEXT,), ["abc"], describe=True)
        assert parse_param_description(got[1][1]) == [TEXT]
        assert parse_row_description(got[2][1])[0]["type_oid"] == TEXT
        assert rows_of(got) == [[b"abc"]]
        got = run(c, "SELECT $1 AS v", (TEXT,), ["again"], describe=True)
        assert parse_param_description(got[1][1]) == [TEXT]
        assert rows_of(got) == [[b"again"]]
        # other text after a repeat
        got = run(c, "SELECT price FROM items WHERE id = $1", (INT4,), ["4"])
        assert rows_of(got) == [[b"6.00"]]
        # an error in a repeated statement leaves the next round working
        for _ in range(2):
            got = run(c, "SELECT 1 / $1::int", (), ["0"])
            assert "E" in types_of(got) and c.status == "I"
        got = run(c, "SELECT 1 / $1::int", (), ["4"])
        assert rows_of(got) == [[b"0"]]
        # inside a transaction block, then after it
        c.query("BEGIN")
        for i in (5, 6):
            assert rows_of(run(c, "SELECT name FROM items WHERE id = $1", (), [str(i)])) == [[b"item %d" % i]]
            assert c.status == "T"
        c.query("COMMIT")
        assert rows_of(run(c, "SELECT name FROM items WHERE id = $1", (), ["7"])) == [[b"item 7"]]
