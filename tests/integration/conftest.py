"""
pytest fixtures for the riffq integration tests.

  riffq_factory  start(config=None, **top_level_overrides) -> harness.Riffq
                 Writes the route file (a JSON dict) to a temp file, picks a free
                 loopback port, starts build/riffq (env RIFFQ_BIN overrides), waits
                 (<= 10 s) for the port, and on teardown SIGTERMs every server it
                 started, SIGKILLs after 10 s, and fails the test unless each one
                 exited 0.
  riffq          one server with the default config (SCRAM, alice/secret, local).
  tls_cert       (cert_path, key_path): self-signed, made once per session with
                 the openssl CLI.
  pg_cluster     a throwaway PostgreSQL 15 cluster (initdb as `postgres`, stopped
                 with `pg_ctl stop -m immediate`, temp dir removed).
  short_tmp      a short temp dir (Unix socket paths must stay < 108 bytes).

A watchdog bounds every test (RIFFQ_TEST_TIMEOUT seconds, default 60): when a
test overruns it dumps every thread's stack and SIGKILLs the riffq processes
still running, so a client blocked on a silent server (psycopg2's PQexec has
no client-side timeout) gets EOF and the test fails instead of hanging.
"""
import faulthandler
import os
import shutil
import signal
import sys
import tempfile
import threading

import pytest

import harness
from harness import Riffq, default_config, free_port


TEST_TIMEOUT = float(os.environ.get("RIFFQ_TEST_TIMEOUT", "60"))


def _sigterm(signum, frame):
    # `timeout` (tests/run.sh) stops pytest with SIGTERM; as KeyboardInterrupt
    # pytest still tears fixtures down, so riffq processes and the Postgres
    # cluster are stopped and temp dirs removed.
    raise KeyboardInterrupt("SIGTERM")


def pytest_configure(config):
    signal.signal(signal.SIGTERM, _sigterm)


@pytest.fixture(autouse=True)
def watchdog(request):
    fired = []

    def on_timeout():
        fired.append(True)
        sys.stderr.write("\n*** %s exceeded %.0fs: killing riffq to unblock it ***\n"
                         % (request.node.nodeid, TEST_TIMEOUT))
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        for srv in list(harness.LIVE):
            if srv.proc is not None and srv.proc.poll() is None:
                srv.proc.kill()

    t = threading.Timer(TEST_TIMEOUT, on_timeout)
    t.daemon = True
    t.start()
    yield
    t.cancel()
    if fired:
        pytest.fail("test exceeded %.0fs (the watchdog killed riffq)" % TEST_TIMEOUT, pytrace=False)


@pytest.fixture
def short_tmp():
    d = tempfile.mkdtemp(prefix="rq-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def riffq_factory(short_tmp):
    servers = []

    def start(config=None, **overrides):
        """config: a full route-file dict (its listen ports are used as
        given); or None: default_config() with a free port, top-level keys
        replaced by overrides.  A port race (someone else bound the port
        between free_port() and riffq's bind) is retried with a new port."""
        last = None
        for _attempt in range(3):
            if config is None:
                port = free_port()
                cfg = default_config(port, **overrides)
            else:
                cfg = config
                tcp = [l for l in cfg.get("listen", []) if "port" in l]
                port = tcp[0]["port"] if tcp else None
            srv = Riffq(cfg, short_tmp, port=port)
            servers.append(srv)
            try:
                return srv.start()
            except RuntimeError as e:
                last = e
                if config is not None or "in use" not in str(e).lower():
                    raise
        raise last

    yield start

    problems = []
    for srv in servers:
        was_running = srv.proc is not None
        rc = srv.stop()
        if was_running and rc != 0:
            problems.append("riffq (config %s) exited with %r after SIGTERM; log:\n%s"
                            % (srv.config_path, rc, srv.log))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def riffq(riffq_factory):
    return riffq_factory()


@pytest.fixture(scope="session")
def tls_cert():
    d = tempfile.mkdtemp(prefix="rq-tls-")
    try:
        yield harness.make_cert(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster():
    if not os.path.exists(os.path.join(harness.PG_BINDIR, "initdb")):
        pytest.skip("PostgreSQL 15 server binaries not installed in " + harness.PG_BINDIR)
    pg = harness.PgCluster()
    try:
        pg.start()
        yield pg
    finally:
        pg.stop()
