"""
The riffq extension module (make python -> build/python/riffq*.so): a
Python program serving its own handlers.  Each server runs in a child
process started from a script written here, so signals, module-level
decorators and the process-wide interpreter state of one test cannot leak
into another; the test talks to it with real drivers.
"""
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import psycopg
import pytest

import harness

PYMOD_DIR = os.environ.get("RIFFQ_PYTHONPATH") or os.path.join(harness.REPO, "build", "python")
PY = "/usr/bin/python3"


def _module_built():
    return os.path.isdir(PYMOD_DIR) and any(f.startswith("riffq") and f.endswith(".so")
                                            for f in os.listdir(PYMOD_DIR))


pytestmark = pytest.mark.skipif(not _module_built(), reason="make python has not been run")


class Child:
    """A Python program that imports riffq, as a child process."""

    def __init__(self, tmp_path, source, port, ready=True):
        self.port = port
        path = tmp_path / f"server_{port}.py"
        path.write_text(textwrap.dedent(source))
        env = dict(os.environ, PYTHONPATH=PYMOD_DIR, PORT=str(port))
        if os.environ.get("RIFFQ_PY_PRELOAD"):
            # make test-asan: the module is instrumented, the interpreter is
            # not, so the sanitizer runtime must be loaded first; leaks are
            # the interpreter's to keep (the gateway binary's tests check ours)
            env["LD_PRELOAD"] = os.environ["RIFFQ_PY_PRELOAD"]
            env["ASAN_OPTIONS"] = os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
        self.log_path = tmp_path / f"server_{port}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([PY, str(path)], env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=str(tmp_path))
        if ready and not harness.wait_port("127.0.0.1", port, time.monotonic() + harness.START_TIMEOUT,
                                           self.proc):
            self.stop()
            raise AssertionError("server did not start:\n" + self.output())

    def output(self):
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=harness.STOP_TIMEOUT):
        return self.proc.wait(timeout=timeout)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=harness.STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def child(tmp_path):
    made = []

    def start(source, ready=True):
        c = Child(tmp_path, source, harness.free_port(), ready)
        made.append(c)
        return c
    yield start
    for c in made:
        c.stop()


def dsn(port, user="u", password=None, **kw):
    s = f"host=127.0.0.1 port={port} user={user} dbname=db connect_timeout=5"
    if password is not None:
        s += f" password={password}"
    for k, v in kw.items():
        s += f" {k}={v}"
    return s


SERVE = """
    import os, riffq

    @riffq.query_handler
    def handle(sql, params, ctx):
        if sql.startswith('fail'):
            raise riffq.Error('22012', 'you asked for it', hint='do not')
        if sql.startswith('boom'):
            raise ValueError('broken handler')
        return [(sql, len(params), ctx['user'], ctx['database'], ctx['client_addr'])], \\
               [('sql', 'text'), ('nparams', 'int4'), ('user', 'text'), ('db', 'text'), ('addr', 'text')]

    @riffq.on_connect
    def hello(ctx):
        if ctx['user'] == 'mallory':
            raise riffq.Error('28000', 'mallory is not welcome')

    riffq.serve(port=int(os.environ['PORT']))
    print('serve returned', flush=True)
"""


def test_serve_answers_with_the_module_level_handler(child):
    srv = child(SERVE)
    with psycopg.connect(dsn(srv.port)) as c:
        # the statement text reaches the handler as the client wrote it
        assert c.execute("SELECT Anything FROM Whatever").fetchone() == \
            ("SELECT Anything FROM Whatever", 0, "u", "db", "127.0.0.1")
        assert c.execute("select %s, %s", (1, "x")).fetchone()[:2] == ("select $1, $2", 2)
        # transaction control is answered by the gateway, not the handler
        c.execute("BEGIN")
        assert c.execute("values").fetchone()[0] == "values"
        c.execute("COMMIT")
        with pytest.raises(psycopg.errors.DivisionByZero) as e:
            c.execute("fail now")
        assert e.value.diag.message_primary == "you asked for it"
        assert e.value.diag.message_hint == "do not"
        with pytest.raises(psycopg.errors.InternalError_) as e:
            c.execute("boom")
        assert "ValueError: broken handler" in str(e.value)
    with pytest.raises(psycopg.OperationalError, match="mallory is not welcome"):
        psycopg.connect(dsn(srv.port, user="mallory"))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_a_blocking_serve_cleanly(child, sig):
    srv = child(SERVE)
    conn = psycopg.connect(dsn(srv.port))
    srv.signal(sig)
    assert srv.wait() == 0
    assert "serve returned" in srv.output()
    assert "Traceback" not in srv.output()
    # the connected client was told, not left hanging
    with pytest.raises(psycopg.OperationalError):
        conn.execute("select 1")
    conn.close()


def test_handle_shutdown_runs_once_on_sigterm(child):
    srv = child("""
        import os, riffq
        calls = []
        riffq.query_handler(lambda sql, params, ctx: ([(1,)], [('x', 'int4')]))
        s = riffq.Server('127.0.0.1:' + os.environ['PORT'])
        s.handle_shutdown(lambda: calls.append(1) or print('shutdown hook ran', flush=True))
        got = s.start()
        print('start returned', got, s.stopped_by, 'calls', len(calls), flush=True)
    """)
    srv.signal(signal.SIGTERM)
    assert srv.wait() == 0
    out = srv.output()
    assert out.count("shutdown hook ran") == 1
    assert f"start returned None {int(signal.SIGTERM)} calls 1" in out


def test_background_server_stop_and_serve_on_a_thread(child):
    srv = child("""
        import os, threading, time, riffq, psycopg
        port = int(os.environ['PORT'])

        @riffq.query_handler
        def handle(sql, params, ctx):
            return [(sql.upper(),)], [('up', 'text')]

        # serve() on a thread: no signal handling there; shutdown() ends it
        t = threading.Thread(target=riffq.serve, kwargs={'port': port + 0})
        t.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                c = psycopg.connect(f'host=127.0.0.1 port={port} user=u dbname=d')
                break
            except psycopg.OperationalError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        print('thread:', c.execute('abc').fetchone()[0], flush=True)
        c.close()
        riffq.shutdown()
        t.join(10)
        print('joined:', not t.is_alive(), flush=True)

        # a background Server: start returns once it listens; stop() ends it
        s = riffq.Server(f'127.0.0.1:{port}')
        s.query_handler(lambda sql, params, ctx: ([(len(sql),)], [('n', 'int8')]))
        s.start(background=True)
        with psycopg.connect(f'host=127.0.0.1 port={port} user=u dbname=d') as c:
            print('background:', c.execute('four').fetchone()[0], flush=True)
        s.stop()
        print('running after stop:', s.running, flush=True)
        # the same address can be served again at once
        s2 = riffq.Server(f'127.0.0.1:{port}')
        s2.query_handler(lambda sql, params, ctx: ([(2,)], [('n', 'int8')]))
        s2.start(background=True)
        s2.stop()
        print('done', flush=True)
    """, ready=False)
    assert srv.wait(timeout=30) == 0, srv.output()
    out = srv.output()
    assert "thread: ABC" in out
    assert "joined: True" in out
    assert "background: 4" in out
    assert "running after stop: False" in out
    assert "done" in out


def test_tls_with_a_generated_certificate(child, tmp_path):
    cert, key = harness.make_cert(str(tmp_path))
    srv = child(f"""
        import os, riffq
        riffq.query_handler(lambda sql, params, ctx: ([(ctx['server_name'],)], [('sni', 'text')]))
        s = riffq.Server('127.0.0.1:' + os.environ['PORT'])
        s.set_tls({cert!r}, {key!r})
        s.start(tls=True)
    """)
    with psycopg.connect(dsn(srv.port, sslmode="require")) as c:
        assert c.pgconn.ssl_in_use
        assert c.execute("select 1").fetchone() == (None,)
    with psycopg.connect(dsn(srv.port, sslmode="verify-full", sslrootcert=cert).replace(
            "host=127.0.0.1", "host=localhost hostaddr=127.0.0.1")) as c:
        assert c.pgconn.ssl_in_use


def test_authenticate_hook_checks_cleartext_passwords(child):
    srv = child("""
        import os, riffq
        seen = []

        @riffq.authenticate
        def auth(user, password, ctx):
            if user == 'eve':
                raise riffq.Error('28000', 'eve is locked out', detail='too many attempts')
            return (user, password) == ('bob', 's3cret') and ctx['client_addr'] == '127.0.0.1'

        @riffq.query_handler
        def handle(sql, params, ctx):
            return [(ctx['user'],)], [('who', 'text')]

        riffq.serve(port=int(os.environ['PORT']))
    """)
    with psycopg.connect(dsn(srv.port, user="bob", password="s3cret")) as c:
        assert c.execute("who").fetchone() == ("bob",)
    with pytest.raises(psycopg.OperationalError, match='password authentication failed for user "bob"'):
        psycopg.connect(dsn(srv.port, user="bob", password="wrong"))
    with pytest.raises(psycopg.OperationalError, match="eve is locked out"):
        psycopg.connect(dsn(srv.port, user="eve", password="x"))


def test_start_reports_a_busy_port(child):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        srv = child(f"""
            import riffq
            riffq.query_handler(lambda sql, params, ctx: ([(1,)], [('x', 'int4')]))
            try:
                riffq.Server('127.0.0.1:{port}').start()
            except OSError as e:
                print('OSError:', e, flush=True)
        """, ready=False)
        assert srv.wait() == 0
    assert "OSError: cannot listen on 127.0.0.1:%d" % port in srv.output()


def test_no_handler_is_a_clear_error(child):
    srv = child("""
        import riffq
        try:
            riffq.serve(port=1)
        except RuntimeError as e:
            print('RuntimeError:', e, flush=True)
    """, ready=False)
    assert srv.wait() == 0
    assert "RuntimeError: no query handler" in srv.output()
