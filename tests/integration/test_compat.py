"""
The callback-style API of the pgwire-based riffq package (Server.on_query,
on_connect, on_authentication, on_disconnect, handle_shutdown; RiffqServer
and BaseConnection), served by this engine.  Programs written for that
package run unchanged: each test here is such a program, run in a child
process (as those programs' own tests do with multiprocessing), and a real
driver checks the answers.
"""
import signal
import threading

import psycopg
import pytest

from test_pymodule import child, dsn, pytestmark  # noqa: F401  (fixture and skip mark)

VAL_SERVER = """
    import os, riffq

    def handle_query(sql, callback, **kw):
        s = sql.strip().lower()
        if s == 'select err':
            return callback(('ERROR', '42846', 'bad type'), is_error=True)
        if s in ('begin', 'commit'):
            return callback(s.upper(), is_tag=True)
        if s == 'select multi':
            return callback(([{'name': 'a', 'type': 'int'}, {'name': 'b', 'type': 'str'},
                              {'name': 'c', 'type': 'float'}, {'name': 'd', 'type': 'int'},
                              {'name': 'e', 'type': 'bool'}, {'name': 'f', 'type': 'date'},
                              {'name': 'g', 'type': 'datetime'}],
                             [[1, 'foo', 3.14, None, True,
                               __import__('datetime').date(2024, 2, 29),
                               __import__('datetime').datetime(2024, 2, 29, 12, 30, 1, 5)]]))
        if s == 'select conn_id':
            return callback(([{'name': 'id', 'type': 'int'}], [[kw['connection_id']]]))
        if s.startswith('select kwargs'):
            return callback(([{'name': 'k', 'type': 'str'}],
                             [[','.join(sorted(kw))], [repr(kw.get('query_args'))]]))
        if s == 'select raise':
            raise KeyError('no such thing')
        if s == 'select nothing':
            return None
        if s == 'select later':
            def later():
                import time
                time.sleep(0.2)
                callback(([{'name': 'late', 'type': 'int'}], [[7]]))
            threading.Thread(target=later).start()
            return
        args = kw.get('query_args')
        value = int(args[0]) if args else 1
        callback(([{'name': 'val', 'type': 'int'}], [[value]]))

    import threading
    server = riffq.Server('127.0.0.1:' + os.environ['PORT'])
    server.on_query(handle_query)
    server.start(server_version=os.environ.get('VERSION'))
"""


def test_query_callback_shapes(child):
    srv = child(VAL_SERVER)
    with psycopg.connect(dsn(srv.port)) as c:
        cur = c.cursor()
        # psycopg opens a transaction with BEGIN, which reaches the handler
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
        assert cur.execute("SELECT %s", (42,)).fetchone() == (42,)
        row = cur.execute("SELECT multi").fetchone()
        import datetime
        assert row == (1, "foo", 3.14, None, True, datetime.date(2024, 2, 29),
                       datetime.datetime(2024, 2, 29, 12, 30, 1, 5))
        assert [d.name for d in cur.description] == list("abcdefg")
        assert [d.type_code for d in cur.description] == [20, 1043, 701, 20, 16, 1082, 1114]
        with pytest.raises(psycopg.errors.CannotCoerce) as e:
            cur.execute("SELECT err")
        assert e.value.sqlstate == "42846" and e.value.diag.message_primary == "bad type"
    with psycopg.connect(dsn(srv.port), autocommit=True) as c:
        cur = c.cursor()
        cur.execute("BEGIN")
        assert cur.statusmessage == "BEGIN"
        cur.execute("COMMIT")
        assert cur.statusmessage == "COMMIT"
        # simple protocol: no query_args; extended: the bound values
        assert cur.execute("select kwargs").fetchall() == [("connection_id,do_describe",), ("None",)]
        assert cur.execute("select kwargs", prepare=False, binary=False).fetchall()[0] == \
            ("connection_id,do_describe",)
        assert c.execute("select kwargs where %s", ("x",)).fetchall() == \
            [("connection_id,do_describe,query_args",), ("['x']",)]
        # an answer from another thread, after the handler returned
        assert cur.execute("select later").fetchone() == (7,)


def test_handler_failures_are_errors_never_empty_results(child):
    srv = child(VAL_SERVER)
    with psycopg.connect(dsn(srv.port), autocommit=True) as c:
        with pytest.raises(psycopg.errors.InternalError_, match="KeyError"):
            c.execute("select raise")
        with pytest.raises(psycopg.errors.InternalError_, match="without calling its callback"):
            c.execute("select nothing")
        # the session goes on
        assert c.execute("select 5").fetchone() == (1,)
    assert "KeyError" in srv.output()      # the traceback went to the log


def test_show_server_version_is_answered_by_the_server(child, monkeypatch):
    monkeypatch.setenv("VERSION", "99.42-test")
    srv = child(VAL_SERVER)
    with psycopg.connect(dsn(srv.port)) as c:
        assert c.execute("SHOW server_version").fetchone() == ("99.42-test",)
        assert c.info.parameter_status("server_version") == "99.42-test"


def test_connection_ids_are_distinct_and_stable(child):
    srv = child(VAL_SERVER)

    def fetch():
        with psycopg.connect(dsn(srv.port)) as c:
            a = c.execute("SELECT conn_id").fetchone()[0]
            b = c.execute("SELECT conn_id").fetchone()[0]
            assert a == b and isinstance(a, int)
            return a

    first, second = fetch(), fetch()
    assert first != second
    got = []
    threads = [threading.Thread(target=lambda: got.append(fetch())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(set(got + [first, second])) == 6


HOOKS_SERVER = """
    import os, sys, riffq
    mode = os.environ['MODE']

    def handle_query(sql, callback, **kw):
        callback(([{'name': 'val', 'type': 'int'}], [[1]]))

    def connect_plain(conn_id, ip, port, *, callback):
        # no server_name parameter: it must not be passed
        if mode == 'reject-kw':
            callback(False, message='nope', sqlstate='57P03', severity='FATAL')
        elif mode == 'reject':
            callback(False)
        elif mode == 'reject-positional':
            callback(False, 'go away', 'FATAL', '28000')
        elif mode == 'raise':
            raise RuntimeError('hook bug')
        elif mode == 'silent':
            pass
        else:
            print('connect', conn_id, ip, type(port).__name__, flush=True)
            callback(True)

    def connect_hostname(conn_id, ip, port, *, callback, hostname=None):
        callback(False, f'sni_hostname={hostname}', 'FATAL', '28000')

    def connect_sni(conn_id, ip, port, *, callback, server_name=None):
        callback(False, f'server_name={server_name}', 'FATAL', '28000')

    def auth(conn_id, user, password, host, *, callback, database=None):
        if password == 'custom':
            return callback(False, message='bad pass', sqlstate='28P02', severity='FATAL')
        print('auth', conn_id, user, host, database, flush=True)
        callback(user == 'user' and password == 'secret')

    def disconnect(conn_id, ip, port):
        print('disconnect', conn_id, ip, type(port).__name__, flush=True)

    server = riffq.Server('127.0.0.1:' + os.environ['PORT'])
    server.on_query(handle_query)
    server.on_connect({'hostname': connect_hostname, 'sni': connect_sni}.get(mode, connect_plain))
    if mode in ('auth', 'custom'):
        server.on_authentication(auth)
    server.on_disconnect(disconnect)
    server.start()
"""


@pytest.mark.parametrize("mode,message", [
    ("reject", "Connection rejected"),
    ("reject-kw", "nope"),
    ("reject-positional", "go away"),
    ("raise", "Connection rejected"),
    ("silent", "Connection rejected"),
])
def test_connect_hook_rejects(child, monkeypatch, mode, message):
    monkeypatch.setenv("MODE", mode)
    srv = child(HOOKS_SERVER)
    with pytest.raises(psycopg.OperationalError, match=message):
        psycopg.connect(dsn(srv.port))


def test_connect_and_disconnect_hooks_see_the_connection(child, monkeypatch):
    monkeypatch.setenv("MODE", "accept")
    srv = child(HOOKS_SERVER)
    with psycopg.connect(dsn(srv.port)) as c:
        assert c.execute("select 1").fetchone() == (1,)
    import time
    deadline = time.monotonic() + 5
    # print() may write its pieces separately: wait for the whole line
    while "disconnect 0 127.0.0.1 int" not in srv.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    out = srv.output()
    assert "connect 0 127.0.0.1 int" in out
    assert "disconnect 0 127.0.0.1 int" in out


def test_disconnect_hook_of_a_session_that_ran_nothing(child):
    srv = child("""
        import os, riffq
        server = riffq.Server('127.0.0.1:' + os.environ['PORT'])
        server.on_query(lambda sql, callback, **kw: callback(([{'name': 'v', 'type': 'int'}], [[1]])))
        server.on_disconnect(lambda cid, ip, port: print('bye', cid, ip, port > 0, flush=True))
        server.start()
    """)
    psycopg.connect(dsn(srv.port)).close()
    import time
    deadline = time.monotonic() + 5
    while "bye 0 127.0.0.1 True" not in srv.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "bye 0 127.0.0.1 True" in srv.output()


def test_hostname_from_startup_options(child, monkeypatch):
    monkeypatch.setenv("MODE", "hostname")
    srv = child(HOOKS_SERVER)
    with pytest.raises(psycopg.OperationalError, match="sni_hostname=my.example.test"):
        psycopg.connect(host="127.0.0.1", port=srv.port, user="user", dbname="db",
                        options="-c sni_hostname=my.example.test")
    with pytest.raises(psycopg.OperationalError, match="sni_hostname=None"):
        psycopg.connect(dsn(srv.port))


def test_authentication_hook(child, monkeypatch):
    monkeypatch.setenv("MODE", "auth")
    srv = child(HOOKS_SERVER)
    with pytest.raises(psycopg.OperationalError, match="Authentication failed"):
        psycopg.connect(dsn(srv.port, user="user", password="wrong"))
    with psycopg.connect(dsn(srv.port, user="user", password="secret")) as c:
        assert c.execute("select 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="bad pass") as e:
        psycopg.connect(dsn(srv.port, user="user", password="custom"))
    assert "auth 1 user 127.0.0.1 db" in srv.output()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_handle_shutdown(child, tmp_path, sig):
    flag = tmp_path / "flag"
    srv = child(f"""
        import os, riffq
        server = riffq.Server('127.0.0.1:' + os.environ['PORT'])
        server.on_query(lambda sql, callback, **kw: callback(([{{'name': 'v', 'type': 'int'}}], [[1]])))
        server.handle_shutdown(lambda: open({str(flag)!r}, 'a').write('x'))
        print('returned', server.start(), flush=True)
    """)
    srv.signal(sig)
    assert srv.wait() == 0
    assert flag.read_text() == "x"
    assert "returned None" in srv.output()
    assert "KeyboardInterrupt" not in srv.output()


RIFFQSERVER = """
    import os, riffq
    from riffq.connection import BaseConnection, RiffqServer

    class Conn(BaseConnection):
        def handle_auth(self, user, password, host, database=None, callback=callable):
            return callback(password == 'secret')

        def handle_query(self, sql, callback, *, tag_callback=None, **kwargs):
            s = sql.strip().lower()
            if s.startswith('set '):
                return tag_callback('SET')
            if s.startswith('show '):
                return callback(([{'name': s.split()[1], 'type': 'str'}], [['1']]))
            if s == 'select me':
                # answered later from the connection's executor
                return self.executor.submit(
                    callback, ([{'name': 'conn', 'type': 'int'}], [[self.conn_id]]))
            callback(([{'name': 'val', 'type': 'int'}], [[1]]))

    RiffqServer('127.0.0.1:' + os.environ['PORT'], connection_cls=Conn).start()
"""


def test_riffqserver_connection_classes(child):
    srv = child(RIFFQSERVER)
    with psycopg.connect(dsn(srv.port, user="user", password="secret")) as c:
        cur = c.cursor()
        cur.execute("SET myvar TO 1")
        assert cur.statusmessage == "SET"
        assert cur.execute("SHOW myvar").fetchone() == ("1",)
        me = cur.execute("select me").fetchone()[0]
        assert isinstance(me, int)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn(srv.port, user="user", password="nope"))


def test_module_layout_matches_the_pgwire_package(child):
    srv = child("""
        import riffq, riffq._riffq, riffq.connection, riffq.helpers, riffq.testing
        assert riffq._riffq.Server is riffq.Server
        assert 'server_version' in riffq._riffq.Server.start.__text_signature__
        assert riffq.connection.RiffqServer is riffq.RiffqServer
        assert callable(riffq.testing.stop_server) and callable(riffq.testing.wait_for_catalog)
        import threading
        assert threading.active_count() == 1     # importing starts nothing
        s = riffq.Server('127.0.0.1:1')
        s.register_database('db')
        s.register_schema('db', 'public')
        s.register_table('db', 'public', 'users', [{'id': {'type': 'int', 'nullable': False}}])
        s.register_table('legacy', [('id', 'int', False), ('name', 'text', True)])
        for bad, msg in (([{'a': {'type': 'int'}, 'b': {}}], 'single-key'),
                         ([{'a': {'nullable': True}}], 'missing type'),
                         ([{'a': {'type': 'int'}}], 'missing nullable')):
            try:
                s.register_table('db', 'public', 't', bad)
            except ValueError as e:
                assert msg in str(e), e
            else:
                raise AssertionError(bad)
        assert [t[1] for t in s._tables] == ['users', 'legacy']
        print('ok', flush=True)
    """, ready=False)
    assert srv.wait() == 0, srv.output()
    assert "ok" in srv.output()


def test_tls_and_a_silent_client(child, tmp_path):
    import socket
    import harness
    cert, key = harness.make_cert(str(tmp_path))
    srv = child(f"""
        import os, riffq
        server = riffq.Server('127.0.0.1:' + os.environ['PORT'])
        server.on_query(lambda sql, callback, **kw: callback(([{{'name': 'v', 'type': 'int'}}], [[1]])))
        server.set_tls({cert!r}, {key!r})
        server.start(tls=True)
    """)
    silent = socket.create_connection(("127.0.0.1", srv.port))
    try:
        for _ in range(3):
            with psycopg.connect(dsn(srv.port, sslmode="require")) as c:
                assert c.pgconn.ssl_in_use
                assert c.execute("select 1").fetchone() == (1,)
    finally:
        silent.close()
