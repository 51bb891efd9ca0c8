"""
psql (PostgreSQL 15 client) against build/riffq.

psql is what people type first.  It goes through libpq with the simple query
protocol, prints every result of a multi-statement -c string (psql >= 15),
shows SSL details in \\conninfo, and runs with -X so no ~/.psqlrc interferes.
Every run has a timeout.
"""
import os
import subprocess

import pytest

from harness import PASSWORD, PSQL, USER

TIMEOUT = 20


def psql(srv, *args, password=PASSWORD, user=USER, sslmode="disable", host=None, port=None,
         extra_env=None, check=True, input=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({"PGPASSWORD": password, "PGSSLMODE": sslmode, "PGGSSENCMODE": "disable",
                "PGCONNECT_TIMEOUT": "10", "PGAPPNAME": "psql-itest"})
    if extra_env:
        env.update(extra_env)
    cmd = [PSQL, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
           "-h", host or srv.host, "-p", str(port or srv.port), "-U", user] + list(args)
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=TIMEOUT, input=(input or "").encode())
    out, err = r.stdout.decode(), r.stderr.decode()
    if check:
        assert r.returncode == 0, "psql exited %d\nstdout:\n%s\nstderr:\n%s\nserver log:\n%s" % (
            r.returncode, out, err, srv.log)
    return r.returncode, out, err


def test_select_1(riffq):
    assert psql(riffq, "-c", "SELECT 1")[1] == "1\n"


def test_multi_statement(riffq):
    # psql 15 prints the result of each statement in a -c string
    assert psql(riffq, "-c", "SELECT 1; SELECT 2")[1] == "1\n2\n"


def test_literal_row(riffq):
    out = psql(riffq, "-F", "|", "-c",
               "SELECT 1 AS a, 'x' AS b, NULL AS c, true AS d, 2.5 AS e, 9999999999 AS f")[1]
    assert out == "1|x||t|2.5|9999999999\n"


def test_headers_and_types(riffq):
    # unaligned with headers: the column names as the server described them
    out = psql(riffq, "-P", "tuples_only=off", "-P", "footer=off", "-c", "SELECT 1")[1]
    assert out == "?column?\n1\n"


def test_version_and_show(riffq):
    out = psql(riffq, "-c", "SELECT version()")[1]
    assert out.startswith("PostgreSQL 15.8 (riffq 0.1.0)")
    assert psql(riffq, "-c", "SHOW server_version")[1] == "15.8 (riffq 0.1.0)\n"
    assert psql(riffq, "-c", "SHOW application_name")[1] == "psql-itest\n"
    assert psql(riffq, "-c", "SELECT current_user")[1] == USER + "\n"
    assert psql(riffq, "-d", "mydb", "-c", "SELECT current_database()")[1] == "mydb\n"


def test_set_sequence(riffq):
    script = "\n".join([
        "SET application_name = 'x';",
        "SHOW application_name;",
        "SET search_path TO a, b;",
        "SHOW search_path;",
        "RESET ALL;",
        "SHOW search_path;",
        "SET TIME ZONE 'Europe/Paris';",
        "SHOW TimeZone;",
    ])
    out = psql(riffq, "-c", script)[1]
    # psql 15 prints the command tag of statements that return no rows
    assert out == 'SET\nx\nSET\na, b\nRESET\n"$user", public\nSET\nEurope/Paris\n'


def test_pgtz_environment(riffq):
    # libpq sends PGTZ as the TimeZone startup parameter
    out = psql(riffq, "-c", "SHOW TimeZone", extra_env={"PGTZ": "America/New_York"})[1]
    assert out == "America/New_York\n"


def test_psql_variables_and_echo(riffq):
    # \gset stores a result column into a psql variable
    out = psql(riffq, input="SELECT 41 AS n \\gset\n\\echo :n\n")[1]
    assert out == "41\n"


def test_transaction_script(riffq):
    script = "BEGIN;\nSELECT 1;\nCOMMIT;\n"
    assert psql(riffq, "-c", script)[1] == "BEGIN\n1\nCOMMIT\n"
    # single-transaction mode wraps -c in BEGIN/COMMIT
    assert psql(riffq, "-1", "-c", "SELECT 5")[1] == "5\n"


def test_error_exit_status(riffq):
    rc, out, err = psql(riffq, "-c", "SELECT * FROM nosuch", check=False)
    assert rc == 1
    assert 'ERROR:  relation "nosuch" does not exist' in err
    rc, out, err = psql(riffq, "-c", "SELEC 1", check=False)
    assert rc == 1
    assert 'ERROR:  syntax error at or near "SELEC"' in err
    # psql draws the caret from the error position
    assert "LINE 1: SELEC 1" in err and "\n        ^" in err
    rc, out, err = psql(riffq, "-c", "SET no_such_setting = 1", check=False)
    assert rc == 1
    assert 'ERROR:  unrecognized configuration parameter "no_such_setting"' in err


def test_failed_transaction_messages(riffq):
    # one -c per statement (a single -c string is one Query message, which
    # stops at its first error); without ON_ERROR_STOP psql runs them all
    rc, out, err = psql(riffq, "-v", "ON_ERROR_STOP=0", "-c", "BEGIN", "-c", "SELECT * FROM nosuch",
                        "-c", "SELECT 1", "-c", "COMMIT", check=False)
    assert 'relation "nosuch" does not exist' in err
    assert ("current transaction is aborted, commands ignored until end of transaction block"
            in err)


def test_wrong_password(riffq):
    rc, out, err = psql(riffq, "-c", "SELECT 1", password="wrong", check=False)
    assert rc == 2
    assert 'password authentication failed for user "alice"' in err


def test_unknown_user(riffq):
    rc, out, err = psql(riffq, "-c", "SELECT 1", user="mallory", check=False)
    assert rc == 2
    assert 'password authentication failed for user "mallory"' in err


def test_tls_require(riffq_factory, tls_cert):
    cert, key = tls_cert
    srv = riffq_factory(tls={"cert": cert, "key": key, "mode": "require"})
    assert psql(srv, "-c", "SELECT 1", sslmode="require")[1] == "1\n"
    out = psql(srv, "-c", "\\conninfo", sslmode="require")[1]
    assert 'You are connected to database "alice" as user "alice"' in out
    assert "SSL connection (protocol: TLSv1." in out
    # verify the chain and the name against our self-signed cert
    out = psql(srv, "-c", "SELECT 2", sslmode="verify-full",
               extra_env={"PGSSLROOTCERT": cert}, host="localhost")[1]
    assert out == "2\n"
    # plaintext is refused with 28000
    rc, out, err = psql(srv, "-c", "SELECT 1", sslmode="disable", check=False)
    assert rc == 2
    assert "FATAL" in err


def test_tls_prefer_when_disabled(riffq):
    # sslmode=prefer: SSLRequest answered 'N', psql goes on in plaintext
    out = psql(riffq, "-c", "\\conninfo", sslmode="prefer")[1]
    assert "SSL connection" not in out
    assert 'You are connected to database "alice" as user "alice"' in out


@pytest.mark.parametrize("method", ["md5", "password", "trust"])
def test_other_auth_methods(riffq_factory, method):
    srv = riffq_factory(auth={"method": method, "users": {USER: PASSWORD}})
    assert psql(srv, "-c", "SELECT current_user")[1] == USER + "\n"


def test_unix_socket(riffq_factory, short_tmp):
    # psql -h DIR -p N connects to DIR/.s.PGSQL.N
    port = 55000 + (os.getpid() % 1000)
    srv = riffq_factory(listen=[{"unix": "%s/.s.PGSQL.%d" % (short_tmp, port)}])
    out = psql(srv, "-c", "SELECT 1", host=short_tmp, port=port)[1]
    assert out == "1\n"
