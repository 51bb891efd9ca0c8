"""
Read replicas and health checks (issue: routing table and upstream
Postgres).  Two real hot-standby streaming replicas of the throwaway cluster
(pg_basebackup -R, see harness.PgReplica) sit behind one upstream with the
cluster as its primary; a route with "read_from": "replica" must send plain
reads outside transactions to them, round robin, and everything else to the
primary.  Which server answered is asked of the server itself:
pg_is_in_recovery() and inet_server_port().

Every wait is bounded, everything is on loopback, and the replicas are
stopped by the module fixture's finalizer whatever happens.
"""
import asyncio
import time

import asyncpg
import psycopg
import pytest

import harness
from harness import PASSWORD, USER

CHECK_MS = 200          # health check interval of the test upstream
# A probe is a whole connection with SCRAM authentication; on a loaded
# machine (make test-asan) that can take over a second, and a probe that
# times out marks its host down.  Stopped servers refuse at once, so
# detection does not depend on this.
CHECK_TIMEOUT_MS = 5000


@pytest.fixture(scope="module")
def replicas(pg_cluster):
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS rr_items")
        c.execute("CREATE TABLE rr_items (id int PRIMARY KEY, name text)")
        c.execute("INSERT INTO rr_items SELECT g, 'item ' || g FROM generate_series(1, 10) g")
        c.execute("DROP SEQUENCE IF EXISTS rr_seq")
        c.execute("CREATE SEQUENCE rr_seq")
    started = []
    try:
        for _ in range(2):
            started.append(harness.PgReplica(pg_cluster).start())
        for r in started:
            # the table created above has been replayed
            wait_for(lambda: query(r.dsn(), "SELECT count(*) FROM pg_class WHERE relname = 'rr_items'") == 1,
                     "replica on port %d to replay rr_items" % r.port)
        yield started
    finally:
        for r in started:
            r.stop()


def query(dsn, sql):
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as c:
        return c.execute(sql).fetchone()[0]


def wait_for(cond, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except psycopg.Error:
            pass
        time.sleep(0.05)
    pytest.fail("timed out after %.0fs waiting for %s" % (timeout, what))


def replica_config(port, pg, reps, pool_mode="transaction", **route):
    hosts = [{"conninfo": pg.dsn(), "role": "primary"}]
    hosts += [{"conninfo": r.dsn(), "role": "replica"} for r in reps]
    return {
        "listen": [{"host": "127.0.0.1", "port": port}],
        "auth": {"method": "scram-sha-256", "users": {USER: PASSWORD}},
        "upstreams": {"main": {"hosts": hosts, "pool_mode": pool_mode, "pool_size": 4,
                               "health_check": {"interval": CHECK_MS, "timeout": CHECK_TIMEOUT_MS}}},
        "routes": [dict({"name": "all", "to": "upstream:main", "read_from": "replica"}, **route)],
    }


@pytest.fixture
def gateway(riffq_factory, pg_cluster, replicas):
    def start(**kw):
        return riffq_factory(replica_config(harness.free_port(), pg_cluster, replicas, **kw))
    return start


def where(c, sql="SELECT pg_is_in_recovery(), inet_server_port()", params=None, **kw):
    """(in_recovery, port) of the server that ran sql through connection c."""
    return tuple(c.execute(sql, params, **kw).fetchone())


def pools(c):
    """SHOW riffq.pools as {port: row dict}, one entry per host.  (The
    gateway answers its views over the simple query protocol: psycopg must
    not turn a repeated SHOW into a prepared statement.)"""
    cur = c.execute("SHOW riffq.pools")
    names = [d.name for d in cur.description]
    rows = [dict(zip(names, r)) for r in cur.fetchall()]
    return {int(r["host"].rsplit(":", 1)[1]): r for r in rows}


def test_reads_go_to_replicas_and_the_rest_to_the_primary(gateway, pg_cluster, replicas):
    srv = gateway()
    ports = {r.port for r in replicas}
    with psycopg.connect(srv.dsn(), autocommit=True) as c:
        # plain reads, simple and extended protocol, prepared too
        rec, port = where(c)
        assert rec is True and port in ports
        assert c.execute("SELECT pg_is_in_recovery() WHERE %s = 1", (1,)).fetchone() == (True,)
        for i in range(3):
            assert c.execute("SELECT pg_is_in_recovery(), %s::int", (i,), prepare=True).fetchone() == (True, i)
        assert c.execute("SELECT name FROM rr_items WHERE id = 3").fetchone() == ("item 3",)
        # writes, and reads that are not plain: the primary
        c.execute("INSERT INTO rr_items VALUES (100, 'new')")
        c.execute("UPDATE rr_items SET name = %s WHERE id = %s", ("newer", 100))
        assert where(c, "SELECT pg_is_in_recovery(), id FROM rr_items WHERE id = 1 FOR UPDATE") == (False, 1)
        assert where(c, "SELECT pg_is_in_recovery(), nextval('rr_seq') > 0") == (False, True)
        assert where(c, "WITH n AS (INSERT INTO rr_items VALUES (101, 'cte') RETURNING id) "
                        "SELECT pg_is_in_recovery(), id FROM n") == (False, 101)
        assert where(c, "SELECT pg_is_in_recovery(), pg_try_advisory_xact_lock(7)") == (False, True)
        c.execute("DROP TABLE IF EXISTS rr_into")
        c.execute("SELECT 1 AS one INTO rr_into")           # SELECT INTO creates a table
        # a query string with a write among reads runs on the primary whole
        c.execute("SELECT 1; DELETE FROM rr_items WHERE id = 101; SELECT 2")
        # everything inside a transaction block goes to the primary
        with c.transaction():
            assert where(c) == (False, pg_cluster.port)
            assert c.execute("SELECT name FROM rr_items WHERE id = 100").fetchone() == ("newer",)
        c.execute("BEGIN READ ONLY")
        assert where(c) == (False, pg_cluster.port)
        c.execute("COMMIT")
        # and reads go back to replicas afterwards
        assert where(c)[0] is True
    assert "read-only transaction" not in srv.log


def test_reads_round_robin_over_replicas(gateway, replicas):
    srv = gateway()
    with psycopg.connect(srv.dsn(), autocommit=True) as c:
        seen = [where(c)[1] for _ in range(10)]
        p = pools(c)
    # one client, transaction pooling: every read is a new pick
    counts = {r.port: seen.count(r.port) for r in replicas}
    assert sum(counts.values()) == 10, seen
    assert all(n >= 3 for n in counts.values()), counts
    for r in replicas:
        row = p[r.port]
        assert (row["upstream"], row["role"], row["healthy"]) == ("main", "replica", True)
        assert row["acquired"] == counts[r.port]
    assert [row["role"] for row in p.values()].count("primary") == 1


def test_session_pooling_moves_between_primary_and_replica(gateway, pg_cluster):
    srv = gateway(pool_mode="session")
    with psycopg.connect(srv.dsn(), autocommit=True) as c:
        c.execute("SET application_name = 'rr-app'")
        assert where(c)[0] is True
        # settings follow the session to whichever server it is on
        assert c.execute("SELECT current_setting('application_name')").fetchone() == ("rr-app",)
        c.execute("INSERT INTO rr_items VALUES (200, 'session') ON CONFLICT (id) DO NOTHING")
        assert c.execute("SELECT pg_is_in_recovery(), current_setting('application_name')").fetchone() == (True, "rr-app")
        with c.transaction():
            assert where(c) == (False, pg_cluster.port)
        # a pipeline of several extended-protocol statements, reads first
        with c.pipeline():
            r1 = c.execute("SELECT pg_is_in_recovery() WHERE %s = 1", (1,))
            c.execute("UPDATE rr_items SET name = %s WHERE id = %s", ("piped", 200))
            r2 = c.execute("SELECT name FROM rr_items WHERE id = %s", (200,))
        assert r1.fetchone() == (True,)
        assert r2.fetchone() == ("piped",)
        assert where(c)[0] is True


def test_prepared_statements_on_replicas_with_asyncpg(gateway, pg_cluster, replicas):
    srv = gateway()
    ports = {r.port for r in replicas}

    async def client():
        con = await asyncpg.connect(host=srv.host, port=srv.port, user=USER, password=PASSWORD,
                                    database="postgres")
        try:
            # a named statement is prepared on whichever replica each read lands on
            stmt = await con.prepare("SELECT pg_is_in_recovery(), inet_server_port(), name "
                                     "FROM rr_items WHERE id = $1")
            reads = [tuple(await stmt.fetchrow(i)) for i in range(1, 7)]
            await con.execute("UPDATE rr_items SET name = name WHERE id = $1", 1)
            async with con.transaction():
                in_xact = tuple(await stmt.fetchrow(2))
            return reads, in_xact
        finally:
            await con.close()

    reads, in_xact = asyncio.run(client())
    assert [(rec, name) for rec, _, name in reads] == [(True, "item %d" % i) for i in range(1, 7)]
    assert {port for _, port, _ in reads} == ports
    assert in_xact == (False, pg_cluster.port, "item 2")


def test_pinned_session_stays_on_the_primary(gateway, pg_cluster):
    srv = gateway()
    with psycopg.connect(srv.dsn(), autocommit=True) as c:
        assert where(c)[0] is True
        c.execute("LISTEN rr_channel")          # pins the session to its server
        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        for _ in range(3):
            assert where(c) == (False, pg_cluster.port)
        assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
    with psycopg.connect(srv.dsn(), autocommit=True) as c:
        c.execute("CREATE TEMP TABLE rr_tmp (a int)")
        c.execute("INSERT INTO rr_tmp VALUES (1)")
        assert c.execute("SELECT pg_is_in_recovery(), a FROM rr_tmp").fetchone() == (False, 1)
    assert "pinned to its server connection by LISTEN" in srv.log


def test_routes_without_read_from_use_the_primary(riffq_factory, pg_cluster, replicas):
    cfg = replica_config(harness.free_port(), pg_cluster, replicas, read_from="primary")
    srv = riffq_factory(cfg)
    with psycopg.connect(srv.dsn(), autocommit=True) as c:
        for _ in range(3):
            assert where(c) == (False, pg_cluster.port)
        # the replicas are probed all the same
        assert all(r["healthy"] for r in pools(c).values())


def test_stopped_replica_is_skipped_and_comes_back(gateway, pg_cluster, replicas):
    r1, r2 = replicas
    srv = gateway()

    def healthy(c, port):
        return pools(c)[port]["healthy"]

    try:
        with psycopg.connect(srv.dsn(), autocommit=True) as c:
            assert {where(c)[1] for _ in range(4)} == {r1.port, r2.port}
            r1.halt()
            wait_for(lambda: not healthy(c, r1.port), "the health check to mark replica 1 down")
            # after detection no read fails and none lands on the stopped one
            assert [where(c) for _ in range(6)] == [(True, r2.port)] * 6
            r2.halt()
            wait_for(lambda: not healthy(c, r2.port), "the health check to mark replica 2 down")
            # no replica left: reads fall back to the primary
            assert [where(c) for _ in range(3)] == [(False, pg_cluster.port)] * 3
            assert healthy(c, pg_cluster.port)
            r1.resume()
            wait_for(lambda: healthy(c, r1.port), "replica 1 to be healthy again")
            assert [where(c) for _ in range(3)] == [(True, r1.port)] * 3
            r2.resume()
            wait_for(lambda: healthy(c, r2.port), "replica 2 to be healthy again")
            assert {where(c)[1] for _ in range(4)} == {r1.port, r2.port}
    finally:
        for r in (r1, r2):
            if not r.running:
                r.resume()
    log = srv.log
    # each change is logged once: fallback and return alternate
    changes = [line for line in log.splitlines()
               if "no healthy replica left, reads go to the primary" in line
               or "reads go to replicas" in line]
    assert changes and "no healthy replica left" in changes[0], log
    assert all(("no healthy" in a) != ("no healthy" in b) for a, b in zip(changes, changes[1:])), log
    assert "replica 127.0.0.1:%d is unhealthy" % r1.port in log
    assert "replica 127.0.0.1:%d is healthy again" % r1.port in log


def test_replica_down_at_start_costs_no_reader_an_error(riffq_factory, pg_cluster, replicas):
    r1, r2 = replicas
    r1.halt()
    try:
        srv = riffq_factory(replica_config(harness.free_port(), pg_cluster, replicas,
                                           pool_mode="transaction"))
        with psycopg.connect(srv.dsn(), autocommit=True) as c:
            # whether or not the first probe has run yet, reads succeed
            assert [where(c) for _ in range(6)] == [(True, r2.port)] * 6, srv.log
            assert not pools(c)[r1.port]["healthy"], srv.log
    finally:
        r1.resume()


def test_bad_replica_conninfo_is_refused_at_start(riffq_factory, pg_cluster):
    cfg = replica_config(harness.free_port(), pg_cluster, [])
    cfg["upstreams"]["main"]["hosts"].append(
        {"conninfo": "host=127.0.0.1 password=hunter2 no_such_option=1", "role": "replica"})
    with pytest.raises(RuntimeError) as e:
        riffq_factory(cfg)
    assert "upstreams.main.hosts[1].conninfo: not a valid libpq connection string" in str(e.value)
    assert "hunter2" not in str(e.value)
