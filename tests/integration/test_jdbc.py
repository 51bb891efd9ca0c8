"""
JDBC (Debian's pgjdbc) through riffq as a transaction pooler: batches,
transactions, server-side prepared statements that JDBC names itself, types,
SQLSTATEs and metadata queries, checked against the values Postgres
computed.
"""
import os
import shutil
import subprocess

import pytest

import harness
from harness import PASSWORD, USER

JAR = "/usr/share/java/postgresql.jar"
HERE = os.path.dirname(os.path.abspath(__file__))

pytestmark = pytest.mark.skipif(not (shutil.which("java") and os.path.exists(JAR)),
                                reason="needs java and libpostgresql-jdbc-java (deploy/install-deps.sh)")


@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
def test_jdbc_through_the_pooler(riffq_factory, pg_cluster, pool_mode):
    port = harness.free_port()
    srv = riffq_factory({
        "listen": [{"host": "127.0.0.1", "port": port}],
        "auth": {"method": "scram-sha-256", "users": {USER: PASSWORD}},
        "upstreams": {"main": {"conninfo": pg_cluster.dsn(), "pool_mode": pool_mode, "pool_size": 2}},
        "routes": [{"name": "all", "to": "upstream:main"}],
    })
    url = f"jdbc:postgresql://127.0.0.1:{srv.port}/postgres"
    r = subprocess.run(["java", "-cp", JAR, os.path.join(HERE, "JdbcCheck.java"), url, USER, PASSWORD],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    facts = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    assert facts["version"] == "15"
    assert facts["batch"] == "50"
    # ids 1..20 at 1.25 each: 262.50 in cents
    assert facts["sum_cents"] == str(sum(i * 125 for i in range(1, 21)))
    assert facts["count"] == "50"                   # the rolled back DELETE left all rows
    assert facts["max_at"] == "2024-02-29 12:00:00.0"
    assert facts["total"] == "1593.75"
    assert facts["error"] == "22012"
    assert facts["search_path"] == '"$user", public'
    assert facts["columns"] == "id,name,price,at,"
    assert facts["done"] == "true"
