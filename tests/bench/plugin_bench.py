"""The plugin section of `make bench` (BENCH_ONLY=plugins runs only this).

Side by side, in one run, interleaved (Postgres, riffq, then again):

  rows/s  SELECT * FROM bench_rows: 1,000,000 rows of (int8, float8, text,
          timestamp), served by riffq from a pandas DataFrame
          (tests/bench/bench_plugin.py) and by Postgres from a table with
          the same rows, read by
            - psql -A -t -o /dev/null -c 'SELECT * FROM bench_rows' (both),
            - psql \\copy (SELECT * FROM bench_rows) TO /dev/null (both),
            - psycopg: execute + fetchall, text and binary results;
  q/s     a trivial statement, pgbench -n -f script, 16 clients, simple and
          extended protocol: riffq runs `SELECT 1 FROM bench_one` in the
          plugin's handler, Postgres answers `SELECT 1`.

Before timing, the psql outputs of both are compared byte for byte, so the
two serve the same answer.  Prints medians and riffq/postgres ratios.
BENCH_PERF=1 then profiles riffq (perf record -g) on each riffq workload and
prints the top symbols.
"""
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import psycopg

CLIENTS = int(os.environ.get("BENCH_PLUGIN_CLIENTS", "16"))


def _bench():
    import bench        # tests/bench/bench.py: ports, pgbench, settings
    return bench


def start_riffq_plugin(cluster, rows):
    B = _bench()
    port = B.free_port()
    cfg = {
        "listen": [{"host": "127.0.0.1", "port": port}],
        "plugins": {"bench": {"module": os.path.join(B.ROOT, "tests", "bench", "bench_plugin.py")}},
        "routes": [{"name": "bench", "match": {"tables": ["bench_rows", "bench_one"]}, "to": "plugin:bench"},
                   {"name": "local", "to": "local"}],
        "limits": {"max_clients": 2000},
        "log_level": "warning",
    }
    path = os.path.join(cluster.dir, "plugin-routes.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    log = open(os.path.join(cluster.dir, "riffq-plugin.log"), "w")
    proc = subprocess.Popen([os.path.join(B.ROOT, "build", "riffq"), "--config", path],
                            env=dict(os.environ, BENCH_ROWS=str(rows)), stdout=log, stderr=log,
                            start_new_session=True)
    B.wait_port(port, proc, timeout=180)       # the DataFrame is built before it listens
    return proc, port


def psql_cmd(port, *args):
    return ["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", *args, "bench"]


def timed(cmd):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, timeout=600)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.decode(errors='replace')[-2000:]}")
    return dt


def psql_select(port):
    return timed(psql_cmd(port, "-A", "-t", "-o", "/dev/null", "-c", "SELECT * FROM bench_rows"))


def psql_copy(port):
    return timed(psql_cmd(port, "-c", "\\copy (SELECT * FROM bench_rows) TO '/dev/null'"))


def psycopg_fetch(port, binary, rows):
    with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=bench", autocommit=True) as c:
        cur = c.cursor(binary=binary)
        t0 = time.perf_counter()
        cur.execute("SELECT * FROM bench_rows")
        got = cur.fetchall()
        dt = time.perf_counter() - t0
    if len(got) != rows:
        raise RuntimeError(f"psycopg fetched {len(got)} rows from port {port}, expected {rows}")
    return dt


def same_answer(pg_port, rq_port):
    """md5 of psql's unaligned output from each: the two must agree."""
    digests = []
    for port in (pg_port, rq_port):
        r = subprocess.run(psql_cmd(port, "-A", "-t", "-c", "SELECT * FROM bench_rows"),
                           capture_output=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(r.stderr.decode(errors="replace"))
        digests.append((hashlib.md5(r.stdout).hexdigest(), r.stdout.count(b"\n"),
                        r.stdout.split(b"\n", 3)[:3]))
    if digests[0][:2] != digests[1][:2]:
        raise RuntimeError(f"Postgres and riffq disagree on SELECT * FROM bench_rows:\n"
                           f"  postgres {digests[0]}\n  riffq    {digests[1]}")
    return digests[0]


def qps(port, script, mode):
    B = _bench()
    r = B.pgbench(port, ["-f", script, "-M", mode, "-c", str(CLIENTS), "-j", str(min(CLIENTS, 2))])
    return r[0] if r else None


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def plugin_section(cluster, procs):
    B = _bench()
    rows = int(os.environ.get("BENCH_ROWS", "1000000"))
    print(f"\nplugin section: {rows} rows; {B.REPEAT} repeats; pgbench {B.SECONDS} s, {CLIENTS} clients", flush=True)
    subprocess.run(psql_cmd(cluster.port, "-c",
                            "CREATE TABLE bench_rows AS SELECT i::int8 AS id, i * 0.5::float8 AS x, "
                            "'row-' || i AS label, timestamp '2024-01-01' + make_interval(secs => i) AS ts "
                            f"FROM generate_series(0, {rows - 1}) AS i", "-c", "VACUUM ANALYZE bench_rows"),
                   check=True)
    t0 = time.perf_counter()
    riffq, rport = start_riffq_plugin(cluster, rows)
    procs.append(riffq)
    print(f"riffq with the bench plugin listening after {time.perf_counter() - t0:.1f} s "
          f"(building the DataFrame); RSS {B.rss_kib(riffq.pid)} KiB", flush=True)
    digest = same_answer(cluster.port, rport)
    print(f"same answer from both: {digest[1]} lines, md5 {digest[0]}, first rows {digest[2]}", flush=True)

    scripts = {}
    for name, sql in (("postgres", "SELECT 1;\n"), ("riffq", "SELECT 1 FROM bench_one;\n")):
        scripts[name] = os.path.join(cluster.dir, f"trivial-{name}.sql")
        with open(scripts[name], "w") as f:
            f.write(sql)
    targets = [("postgres", cluster.port), ("riffq", rport)]
    res = {}

    def add(key, target, value):
        res.setdefault(key, {}).setdefault(target, []).append(value)

    for rep in range(B.REPEAT):
        for target, port in targets:
            add("psql", target, rows / psql_select(port))
            add("psycopg text", target, rows / psycopg_fetch(port, False, rows))
            add("psycopg binary", target, rows / psycopg_fetch(port, True, rows))
            add("psql copy", target, rows / psql_copy(port))
        for mode in ("simple", "extended"):
            for target, port in targets:
                add(f"q {mode}", target, qps(port, scripts[target], mode))
        print(f"  repeat {rep + 1}: " + ", ".join(
            f"{k} {res[k].get('riffq', [float('nan')])[-1] / res[k]['postgres'][-1]:.2f}x"
            for k in res if "riffq" in res[k]), flush=True)
    rss = B.rss_kib(riffq.pid)

    labels = [
        ("psql", "`SELECT * FROM bench_rows`, psql -A -t -o /dev/null", "rows/s"),
        ("psql copy", r"`\copy (SELECT * FROM bench_rows) TO /dev/null`, psql", "rows/s"),
        ("psycopg text", "`SELECT * FROM bench_rows`, psycopg fetchall, text", "rows/s"),
        ("psycopg binary", "`SELECT * FROM bench_rows`, psycopg fetchall, binary", "rows/s"),
        ("q simple", f"trivial statement, pgbench -M simple -c {CLIENTS}", "q/s"),
        ("q extended", f"trivial statement, pgbench -M extended -c {CLIENTS}", "q/s"),
    ]
    print()
    print(f"| plugin workload ({rows:,} rows x 4 columns; medians of {B.REPEAT}) | unit | postgres | riffq | riffq/postgres |")
    print("|---|---|---:|---:|---:|")
    for key, label, unit in labels:
        pg, rq = med(res[key].get("postgres", [])), med(res[key].get("riffq", []))
        ratio = f"{rq / pg:.2f}" if rq == rq and pg == pg else "n/a"
        rq_s = f"{rq:,.0f}" if rq == rq else "n/a"
        print(f"| {label} | {unit} | {pg:,.0f} | {rq_s} | {ratio} |")
    print(f"\nriffq RSS after the plugin workloads: {rss} KiB (the DataFrame included)", flush=True)

    if os.environ.get("BENCH_PERF"):
        profile(riffq.pid, rport, scripts["riffq"], rows, cluster.dir)


def profile(pid, port, script, rows, workdir):
    """perf record -g on the riffq process while each workload runs."""
    if not shutil.which("perf"):
        print("BENCH_PERF: perf is not installed", file=sys.stderr)
        return
    for name, work in (("psql SELECT * FROM bench_rows", lambda: psql_select(port)),
                       ("psycopg text fetchall", lambda: psycopg_fetch(port, False, rows)),
                       ("pgbench -M simple trivial", lambda: qps(port, script, "simple")),
                       ("pgbench -M extended trivial", lambda: qps(port, script, "extended"))):
        data = os.path.join(workdir, "perf.data")
        rec = subprocess.Popen(["perf", "record", "-q", "-g", "-F", "999", "-p", str(pid), "-o", data],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        work()
        rec.send_signal(2)
        rec.wait(60)
        rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,symbol",
                              "--stdio", "-g", "none", "--percent-limit", "1"],
                             capture_output=True, text=True, timeout=300)
        top = [l for l in rep.stdout.splitlines() if l.strip() and not l.startswith("#")][:25]
        print(f"\nperf, riffq during {name} (self time, >= 1%):")
        print("\n".join(top))
