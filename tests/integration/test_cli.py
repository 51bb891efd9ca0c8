"""The command line: --check, --explain, --version, --help, bad usage."""
import json
import os
import subprocess

import harness

BIN = harness.RIFFQ_BIN
ROUTES = os.path.join(harness.REPO, "routes")


def run(*args, env=None, unset=()):
    e = dict(os.environ, **(env or {}))
    for k in unset:
        e.pop(k, None)
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=30, env=e)


def test_check_shipped_files():
    r = run("--config", os.path.join(ROUTES, "default.json"), "--check")
    assert r.returncode == 0 and "OK" in r.stdout
    r = run("--config", os.path.join(ROUTES, "proxy.json"), "--check",
            env={"RIFFQ_UPSTREAM": "host=127.0.0.1 dbname=x"})
    assert r.returncode == 0


def test_check_reports_file_path_and_expectation(short_tmp):
    path = os.path.join(short_tmp, "bad.json")
    with open(path, "w") as f:
        json.dump({"routes": [{"name": "a", "match": {"tabels": ["x"]}, "to": "local"}]}, f)
    r = run("--config", path, "--check")
    assert r.returncode == 1
    assert path in r.stderr and "routes[0].match" in r.stderr and '"tabels"' in r.stderr


def test_check_missing_env_variable():
    r = run("--config", os.path.join(ROUTES, "proxy.json"), "--check", unset=["RIFFQ_UPSTREAM"])
    assert r.returncode == 1 and "RIFFQ_UPSTREAM" in r.stderr and "upstreams.main.conninfo" in r.stderr
    r = run("--config", os.path.join(ROUTES, "proxy.json"), "--check", env={"RIFFQ_UPSTREAM": ""})
    assert r.returncode == 1 and "expected a non-empty string" in r.stderr


def test_explain_names_route_and_reason():
    r = run("--config", os.path.join(ROUTES, "examples.json"), "--explain",
            "DELETE FROM crm.accounts", "--user", "analyst")
    assert r.returncode == 0, r.stderr
    assert "kind: delete (DELETE)" in r.stdout
    assert "relations: crm.accounts" in r.stdout
    assert '=> route "ro": reject' in r.stdout
    r = run("--config", os.path.join(ROUTES, "default.json"), "--explain",
            "SELECT * FROM sales; SHOW TimeZone")
    assert '=> route "demo": plugin:demo' in r.stdout
    assert '=> route "local": local' in r.stdout


def test_explain_imports_plugins_whose_routes_claim_their_tables(short_tmp):
    cfg = os.path.join(short_tmp, "claims.json")
    with open(cfg, "w") as f:
        json.dump({"plugins": {"demo": {"module": os.path.join(harness.REPO, "plugins", "demo.py")}},
                   "routes": [{"name": "demo", "to": "plugin:demo"}, {"name": "rest", "to": "local"}]}, f)
    r = run("--config", cfg, "--explain", "SELECT * FROM sales JOIN customers USING (id)")
    assert r.returncode == 0, r.stderr
    assert "plugins: imported" in r.stdout
    assert r.stdout.rstrip().endswith('=> route "demo": plugin:demo')
    r = run("--config", cfg, "--explain", "SELECT * FROM elsewhere")
    assert r.stdout.rstrip().endswith('=> route "rest": local')


def test_version_help_and_usage():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("riffq ")
    r = run("--help")
    assert r.returncode == 0 and "--config FILE" in r.stdout
    r = run()
    assert r.returncode == 2 and "Usage" in r.stderr
