"""Helpers for the tests of programs that serve with riffq.

stop_server(proc): end a server running in a multiprocessing.Process.
wait_for_catalog(port, database, probe_sql, expected_value): poll a server
until a probe statement gives the expected first value.
"""
import time as _time


def stop_server(proc, grace=2.0):
    """SIGTERM the server process (riffq stops cleanly on it), then SIGKILL
    it if it is still alive after `grace` seconds; always reaps it, so the
    port is free for the next test."""
    proc.terminate()
    proc.join(timeout=grace)
    if proc.is_alive():
        proc.kill()
        proc.join()


def _dsn(port, database, user, password):
    auth = user if password is None else f'{user}:{password}'
    return f'postgresql://{auth}@127.0.0.1:{port}/{database}'


def wait_for_catalog(port, database, probe_sql, expected_value, user='user', password=None,
                     attempts=300):
    """Poll until probe_sql's first column of the first row equals
    expected_value; returns the seconds it took.  A server that is still
    starting (connection refused) or not ready (the probe fails or returns
    no row) is retried every 0.1 s, `attempts` times, then RuntimeError."""
    import psycopg
    started = _time.monotonic()
    last = None
    for _ in range(attempts):
        try:
            with psycopg.connect(_dsn(port, database, user, password), connect_timeout=2) as conn:
                try:
                    row = conn.execute(probe_sql).fetchone()
                except psycopg.Error as exc:
                    row, last = None, exc
                if row is not None:
                    last = row[0]
                    if row[0] == expected_value:
                        return _time.monotonic() - started
        except psycopg.OperationalError as exc:
            last = exc
        _time.sleep(0.1)
    raise RuntimeError(f'the catalog was not ready after {attempts} attempts '
                       f'(port {port}, database {database!r}, probe {probe_sql!r}, '
                       f'expected {expected_value!r}, last answer {last!r})')
