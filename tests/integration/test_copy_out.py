"""
COPY ... TO STDOUT of plugin tables (psql's \\copy, psycopg's copy()): the
bytes must be exactly what PostgreSQL 15 writes for the same rows, in text
and CSV with their options, so every COPY reader parses them the same way.
"""
import json
import os
import subprocess

import psycopg
import pytest

import harness
from harness import PASSWORD, USER

PG_VALUES = [
    (1, "plain", 1.5, True),
    (2, "tab\there, newline\nthere, cr\rend", -0.25, False),
    (3, "back\\slash and \"quotes\" and 'single'", 1e-7, None),
    (4, None, None, True),
    (5, "", 0.1, False),
    (6, "comma, semicolon; pipe|", 123456789.125, True),
    (7, "\\.", 3.0, False),
    (8, "ünïcødé ✓", float("inf"), True),
    (9, "NULL", float("nan"), None),
]

# the plugin serves the same rows (json keeps inf and nan)
PLUGIN = r'''
import json
import re
import riffq

COLS = [("id", "int4"), ("t", "text"), ("f", "float8"), ("b", "bool")]
ROWS = [tuple(r) for r in json.loads(ROWS_JSON)]
riffq.register_table("public", "vals", [c + (True,) for c in COLS])
riffq.register_table("public", "nums", [("n", "int8")])
riffq.register_table("public", "wide", [("n", "int8"), ("pad", "text")])

@riffq.query_handler
def handle(sql, params, ctx):
    m = re.match(r"\s*select\s+(.*?)\s+from\s+(\w+)", sql, re.I | re.S)
    if not m:
        raise riffq.Error("42601", "unexpected: " + sql)
    if m.group(2) == "wide":
        # batches of several megabytes: more than the gateway queues for a
        # client before it waits for the socket to drain
        def wide():
            for b in range(8):
                yield [(b * 20000 + i, "x" * 200) for i in range(20000)]
        return riffq.Columns([("n", "int8"), ("pad", "text")]), wide()
    if m.group(2) == "nums":
        def batches():
            for s in range(0, 100000, 5000):
                yield [(i,) for i in range(s, s + 5000)]
        return riffq.Columns([("n", "int8")]), batches()
    want = [c.strip() for c in m.group(1).split(",")]
    idx = list(range(len(COLS))) if want == ["*"] else [[c[0] for c in COLS].index(w) for w in want]
    return [tuple(r[i] for i in idx) for r in ROWS], [COLS[i] for i in idx]
'''



@pytest.fixture(scope="module")
def pg_vals(pg_cluster):
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS vals")
        c.execute("CREATE TABLE vals (id int4, t text, f float8, b bool)")
        with c.cursor() as cur:
            cur.executemany("INSERT INTO vals VALUES (%s, %s, %s, %s)", PG_VALUES)
    return pg_cluster


@pytest.fixture
def srv(riffq_factory, short_tmp):
    path = os.path.join(short_tmp, "copyplug.py")
    with open(path, "w") as f:
        f.write("ROWS_JSON = %r\n" % json.dumps(PG_VALUES) + PLUGIN)
    cfg = {
        "listen": [{"host": "127.0.0.1", "port": harness.free_port()}],
        "auth": {"method": "scram-sha-256", "users": {USER: PASSWORD}},
        "plugins": {"p": {"module": path}},
        "routes": [{"name": "p", "to": "plugin:p"}, {"name": "local", "to": "local"}],
    }
    return riffq_factory(cfg)


def copy_bytes(dsn, sql):
    with psycopg.connect(dsn) as c:
        with c.cursor() as cur:
            with cur.copy(sql) as cp:
                return b"".join(bytes(b) for b in cp)


@pytest.mark.parametrize("sql", [
    "COPY (SELECT * FROM vals ORDER BY id) TO STDOUT",
    "COPY (SELECT * FROM vals ORDER BY id) TO STDOUT WITH (FORMAT csv)",
    "COPY (SELECT * FROM vals ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)",
    "COPY (SELECT * FROM vals ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER true, DELIMITER ';', "
    "NULL 'NULL', FORCE_QUOTE *)",
    "COPY (SELECT * FROM vals ORDER BY id) TO STDOUT WITH (FORMAT csv, QUOTE '''', ESCAPE '\\', "
    "FORCE_QUOTE (t))",
    "COPY (SELECT * FROM vals ORDER BY id) TO STDOUT WITH (DELIMITER '|', NULL '<null>', HEADER)",
    "COPY (SELECT id, t FROM vals ORDER BY id) TO STDOUT CSV HEADER",
    "COPY (SELECT t FROM vals ORDER BY id) TO STDOUT CSV",
])
def test_copy_bytes_match_postgres(srv, pg_vals, sql):
    assert copy_bytes(srv.dsn(), sql) == copy_bytes(pg_vals.dsn(), sql)


def test_copy_of_a_table_and_of_columns(srv, pg_vals):
    # the table form runs SELECT ... FROM the table on the plugin, which
    # returns rows in id order, as the Postgres side is asked to
    ours = copy_bytes(srv.dsn(), "COPY vals (t, id) TO STDOUT (FORMAT csv)")
    theirs = copy_bytes(pg_vals.dsn(), "COPY (SELECT t, id FROM vals ORDER BY id) TO STDOUT (FORMAT csv)")
    assert ours == theirs
    assert copy_bytes(srv.dsn(), "COPY public.vals TO STDOUT") == \
        copy_bytes(pg_vals.dsn(), "COPY (SELECT * FROM vals ORDER BY id) TO STDOUT")


def test_psql_copy_streams_a_large_result(srv, tmp_path):
    out = tmp_path / "nums.csv"
    r = subprocess.run([harness.PSQL, "-X", "-v", "ON_ERROR_STOP=1", "-c",
                        f"\\copy (select n from nums) to '{out}' csv header", srv.dsn()],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "COPY 100000"
    lines = out.read_text().splitlines()
    assert lines[0] == "n" and lines[1] == "0" and lines[-1] == "99999" and len(lines) == 100001


def test_large_batches_through_psql(srv, tmp_path):
    """Batches larger than the client output limit, read by a fast client:
    what the socket takes at once must not leave the stream waiting."""
    out = tmp_path / "wide.txt"
    r = subprocess.run([harness.PSQL, "-X", "-v", "ON_ERROR_STOP=1", "-c",
                        f"\\copy (select n, pad from wide) to '{out}'", "-c",
                        "select n, pad from wide", "-o", "/dev/null", srv.dsn()],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 160000 and lines[-1] == "159999\t" + "x" * 200


@pytest.mark.parametrize("sql,state,text", [
    ("COPY vals FROM STDIN", "0A000", "COPY FROM into a plugin table"),
    ("COPY vals TO '/tmp/riffq-copy-test'", "0A000", "writes only to STDOUT"),
    ("COPY (SELECT * FROM vals) TO STDOUT (FORMAT binary)", "0A000", "binary"),
    ("COPY (SELECT * FROM vals) TO STDOUT (FORMAT json)", "22023", "not recognized"),
    ("COPY (SELECT * FROM vals) TO STDOUT (FREEZE)", "0A000", "freeze"),
    ("COPY (SELECT * FROM vals) TO STDOUT (DELIMITER ';;')", "0A000", "single one-byte"),
    ("COPY (SELECT * FROM vals) TO STDOUT (FORCE_QUOTE *)", "0A000", "CSV mode"),
])
def test_copy_errors(srv, sql, state, text):
    with psycopg.connect(srv.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.Error) as e:
            with c.cursor().copy(sql) as cp:
                for _ in cp:
                    pass
        assert e.value.sqlstate == state
        assert text in str(e.value)
        # the session goes on
        assert c.execute("SELECT id FROM vals").fetchone() == (1,)
