"""
asyncpg against build/riffq.

asyncpg does not use libpq: it has its own protocol implementation, always
uses the extended protocol for queries with arguments and for fetch*/prepare
(Parse + Describe statement, then Bind with *binary* parameters and binary
result columns), caches named prepared statements, reads server_version to
decide features, and its cursors use Execute with a row limit
(PortalSuspended).  So it checks the binary encoders/decoders and the
extended-protocol state machine from a second, independent implementation.

Every coroutine runs under asyncio.wait_for so a hung server fails the test
instead of hanging the suite.
"""
import asyncio
import datetime
import decimal
import ssl

import asyncpg
import pytest

from harness import PASSWORD, USER

TIMEOUT = 20


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


async def connect(srv, **kw):
    kw.setdefault("user", USER)
    kw.setdefault("password", PASSWORD)
    kw.setdefault("ssl", False)
    return await asyncpg.connect(host=srv.host, port=srv.port, timeout=10, **kw)


def test_connect_and_settings(riffq):
    async def main():
        conn = await connect(riffq, server_settings={"application_name": "apg"})
        try:
            sv = conn.get_server_version()
            # asyncpg maps "15.8" to major 15, minor 0, micro 8 (the Postgres 10+ scheme)
            assert (sv.major, sv.minor, sv.micro) == (15, 0, 8)
            s = conn.get_settings()
            assert s.server_version == "15.8 (riffq 0.1.0)"
            assert s.server_encoding == "UTF8"
            assert s.client_encoding == "UTF8"
            assert s.application_name == "apg"
            assert s.session_authorization == USER
            assert s.TimeZone == "UTC"
            pid = conn.get_server_pid()
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid
            assert await conn.fetchval("SELECT current_setting('application_name')") == "apg"
        finally:
            await conn.close(timeout=5)
    run(main())


def test_ssl_prefer_falls_back_to_plaintext(riffq):
    # ssl="prefer": SSLRequest answered 'N', startup continues in plaintext
    async def main():
        conn = await connect(riffq, ssl="prefer")
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close(timeout=5)
    run(main())


def test_ssl_require(riffq_factory, tls_cert):
    cert, key = tls_cert
    srv = riffq_factory(tls={"cert": cert, "key": key, "mode": "require"})

    async def main():
        ctx = ssl.create_default_context(cafile=cert)
        ctx.check_hostname = False
        conn = await connect(srv, ssl=ctx)
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close(timeout=5)
        with pytest.raises((asyncpg.PostgresError, ConnectionError, OSError)) as ei:
            await connect(srv, ssl=False)
        if isinstance(ei.value, asyncpg.PostgresError):
            assert ei.value.sqlstate == "28000"
    run(main())


@pytest.mark.parametrize("method", ["scram-sha-256", "md5", "password", "trust"])
def test_auth_methods(riffq_factory, method):
    srv = riffq_factory(auth={"method": method, "users": {USER: PASSWORD}})

    async def main():
        conn = await connect(srv)
        try:
            assert await conn.fetchval("SELECT current_user") == USER
        finally:
            await conn.close(timeout=5)
    run(main())


@pytest.mark.parametrize("user,password", [(USER, "nope"), ("mallory", "nope")])
def test_wrong_password(riffq, user, password):
    async def main():
        with pytest.raises(asyncpg.InvalidPasswordError) as ei:
            await connect(riffq, user=user, password=password)
        assert ei.value.sqlstate == "28P01"
        # .message is the primary message (str() appends DETAIL/HINT lines)
        assert ei.value.message == 'password authentication failed for user "%s"' % user
    run(main())


def test_literal_types_binary(riffq):
    # asyncpg asks for binary results of every column: int4, text, bool,
    # numeric, int8 and date decoders all see the binary wire formats
    async def main():
        conn = await connect(riffq)
        try:
            row = await conn.fetchrow(
                "SELECT 1 AS a, 'x' AS b, NULL AS c, true AS d, 2.5 AS e, 9999999999 AS f")
            assert tuple(row) == (1, "x", None, True, decimal.Decimal("2.5"), 9999999999)
            assert list(row.keys()) == ["a", "b", "c", "d", "e", "f"]
            assert await conn.fetchval("SELECT '2024-01-02'::date") == datetime.date(2024, 1, 2)
            assert await conn.fetchval("SELECT 'x'::varchar") == "x"
            assert (await conn.fetchval("SELECT version()")).startswith("PostgreSQL 15.8 (riffq 0.1.0)")
            assert await conn.fetchval("SELECT current_database()") == USER
            assert await conn.fetchval("SELECT current_schema()") == "public"
        finally:
            await conn.close(timeout=5)
    run(main())


def test_parameters(riffq):
    # parameter types come from the server's ParameterDescription, values go
    # out binary
    async def main():
        conn = await connect(riffq)
        try:
            assert await conn.fetchval("SELECT $1::int4", 42) == 42
            assert await conn.fetchval("SELECT $1::int4", -2147483648) == -2147483648
            assert await conn.fetchval("SELECT $1::int8", 2**62) == 2**62
            assert await conn.fetchval("SELECT $1::text", "héllo") == "héllo"
            assert await conn.fetchval("SELECT $1::text", None) is None
            with pytest.raises(asyncpg.DataError):
                # the int4 encoder refuses out-of-range values client side
                await conn.fetchval("SELECT $1::int4", 2**40)
        finally:
            await conn.close(timeout=5)
    run(main())


def test_prepared_statement_introspection(riffq):
    async def main():
        conn = await connect(riffq)
        try:
            stmt = await conn.prepare("SELECT $1::int4")
            params = stmt.get_parameters()
            assert [(t.oid, t.name) for t in params] == [(23, "int4")]
            attrs = stmt.get_attributes()
            # Postgres names the column of a bare cast after the type
            assert [(a.name, a.type.oid) for a in attrs] == [("int4", 23)]
            assert [await stmt.fetchval(i) for i in range(5)] == list(range(5))
            stmt2 = await conn.prepare("SELECT $1::text AS t, $2::int8 AS n")
            assert [t.oid for t in stmt2.get_parameters()] == [25, 20]
            assert tuple(await stmt2.fetchrow("a", 7)) == ("a", 7)
        finally:
            await conn.close(timeout=5)
    run(main())


def test_statement_cache_reuse(riffq):
    # the same query many times: asyncpg reuses its named statement
    async def main():
        conn = await connect(riffq)
        try:
            for i in range(20):
                assert await conn.fetchval("SELECT $1::int8", i) == i
        finally:
            await conn.close(timeout=5)
    run(main())


def test_cursor_row_limit(riffq):
    # asyncpg cursors: Bind once, then Execute with a row limit, answered
    # with PortalSuspended until the rows run out
    async def main():
        conn = await connect(riffq)
        try:
            everything = await conn.fetch("SHOW ALL")
            assert len(everything) > 10
            async with conn.transaction():
                got = [r async for r in conn.cursor("SHOW ALL", prefetch=4)]
                assert [tuple(r) for r in got] == [tuple(r) for r in everything]
                cur = await conn.cursor("SHOW ALL")
                first = await cur.fetch(3)
                assert [tuple(r) for r in first] == [tuple(r) for r in everything[:3]]
                nxt = await cur.fetchrow()
                assert tuple(nxt) == tuple(everything[3])
        finally:
            await conn.close(timeout=5)
    run(main())


def test_simple_protocol_execute(riffq):
    # execute() without arguments uses the simple query protocol
    async def main():
        conn = await connect(riffq)
        try:
            assert await conn.execute("SELECT 1; SELECT 2") == "SELECT 1"
            assert await conn.execute("SET application_name = 'x'") == "SET"
            assert conn.get_settings().application_name == "x"
            assert await conn.fetchval("SHOW application_name") == "x"
            await conn.execute("SET TIME ZONE 'Europe/Paris'")
            assert conn.get_settings().TimeZone == "Europe/Paris"
            await conn.execute("SET search_path TO a, b")
            assert await conn.fetchval("SHOW search_path") == "a, b"
            assert await conn.execute("RESET ALL") == "RESET"
            assert await conn.fetchval("SHOW search_path") == '"$user", public'
            # (execute("") is not tested: asyncpg itself fails on EmptyQueryResponse)
        finally:
            await conn.close(timeout=5)
    run(main())


def test_transactions(riffq):
    async def main():
        conn = await connect(riffq)
        try:
            async with conn.transaction():
                assert conn.is_in_transaction()
                await conn.execute("SET LOCAL application_name = 'tx'")
                assert await conn.fetchval("SHOW application_name") == "tx"
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SHOW application_name") == ""

            tr = conn.transaction()
            await tr.start()
            with pytest.raises(asyncpg.UndefinedTableError) as ei:
                await conn.fetch("SELECT * FROM nosuch")
            assert ei.value.message == 'relation "nosuch" does not exist'
            with pytest.raises(asyncpg.InFailedSQLTransactionError) as ei:
                await conn.fetchval("SELECT 1")
            assert ei.value.message == ("current transaction is aborted, commands ignored "
                                     "until end of transaction block")
            await tr.rollback()
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close(timeout=5)
    run(main())


def test_errors(riffq):
    async def main():
        conn = await connect(riffq)
        try:
            with pytest.raises(asyncpg.UndefinedObjectError) as ei:
                await conn.execute("SET no_such_setting = 1")
            assert ei.value.message == 'unrecognized configuration parameter "no_such_setting"'
            with pytest.raises(asyncpg.FeatureNotSupportedError):
                await conn.execute("INSERT INTO t VALUES (1)")
            with pytest.raises(asyncpg.FeatureNotSupportedError):
                await conn.fetch("CREATE TABLE t (a int)")
            with pytest.raises(asyncpg.PostgresSyntaxError) as ei:
                await conn.fetch("SELEC 1")
            assert ei.value.position == "1"
            # errors in the extended protocol leave the connection usable
            assert await conn.fetchval("SELECT $1::int4", 5) == 5
        finally:
            await conn.close(timeout=5)
    run(main())


def test_concurrent_connections(riffq):
    async def one(i):
        conn = await connect(riffq)
        try:
            for j in range(5):
                assert await conn.fetchval("SELECT $1::int4", i * 100 + j) == i * 100 + j
            return conn.get_server_pid()
        finally:
            await conn.close(timeout=5)

    async def main():
        pids = await asyncio.gather(*[one(i) for i in range(10)])
        assert len(set(pids)) == 10
    run(main())


def test_terminate_and_abort(riffq):
    async def main():
        a = await connect(riffq)
        b = await connect(riffq)
        b.terminate()              # drops the socket without a Terminate message
        assert await a.fetchval("SELECT 1") == 1
        await a.close(timeout=5)   # sends Terminate
        c = await connect(riffq)
        assert await c.fetchval("SELECT 2") == 2
        await c.close(timeout=5)
    run(main())
