#!/usr/bin/python3
"""make bench: riffq against pgbouncer and direct Postgres, side by side.

One throwaway PostgreSQL 15 cluster, one pgbouncer (transaction pooling) and
one riffq (routes/proxy.json, transaction pooling, the same pool size) run at
the same time; pgbench is pointed at each in turn, interleaved (direct,
pgbouncer, riffq, then again), with identical settings, so machine noise hits
all three alike.  Each server runs in its own session, as a service would
(pg_ctl does that for Postgres): with the kernel's autogroup scheduling, a
pooler left in pgbench's session would share one CPU share with pgbench
while the other had a share of its own.  Prints median tps and latency per target and the ratios
riffq/pgbouncer and riffq/direct, and the CPU time each pooler spent per
transaction (from /proc/PID/stat: a measure of the pooler's own cost that,
unlike tps, hardly moves when a shared machine's speed does), then measures riffq's memory for idle
client connections.

Then the plugin section (tests/bench/plugin_bench.py): riffq serving a
1,000,000-row pandas DataFrame and a trivial handler, against Postgres
serving the same table and answering SELECT 1.

Environment: BENCH_SECONDS (per run, default 5), BENCH_REPEAT (default 3),
BENCH_CLIENTS (default "1 16 64 256"), BENCH_SCALE (pgbench -s, default 10),
BENCH_IDLE (idle connections to hold, default 10000; 0 skips), BENCH_QUICK=1 (only -S),
BENCH_ONLY=proxy|plugins (one section only), BENCH_ROWS (rows of the plugin
table, default 1000000), BENCH_PERF=1 (profile riffq in the plugin section).
"""
import os, re, resource, shutil, signal, socket, statistics, struct, subprocess, sys, tempfile, time

import plugin_bench

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PGBIN = "/usr/lib/postgresql/15/bin"
SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
CLIENTS = [int(c) for c in os.environ.get("BENCH_CLIENTS", "1 16 64 256").split()]
SCALE = int(os.environ.get("BENCH_SCALE", "10"))
IDLE = int(os.environ.get("BENCH_IDLE", "10000"))
POOL = 20
ONLY = os.environ.get("BENCH_ONLY", "")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres(cmd):
    return ["runuser", "-u", "postgres", "--"] + cmd if os.geteuid() == 0 else cmd


def wait_port(port, proc=None, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        if proc and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def startup_packet(user, db):
    body = struct.pack("!i", 196608)
    for k, v in (("user", user), ("database", db)):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


def open_idle(port, n):
    """Open n logged-in idle client connections (trust auth)."""
    socks = []
    pkt = startup_packet("postgres", "bench")
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), 10)
        s.sendall(pkt)
        socks.append(s)
    for s in socks:
        buf = b""
        while not buf.endswith(b"Z\0\0\0\5I"):
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError("server closed an idle connection")
            buf += chunk
    return socks


class Cluster:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="riffq-bench-")
        os.chmod(self.dir, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self.port = free_port()
        self.data = os.path.join(self.dir, "data")
        subprocess.run(as_postgres([f"{PGBIN}/initdb", "-D", self.data, "-A", "trust", "-U", "postgres"]),
                       check=True, stdout=subprocess.DEVNULL)
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=400 "
                "-c shared_buffers=256MB -c fsync=off -c synchronous_commit=off")
        subprocess.run(as_postgres([f"{PGBIN}/pg_ctl", "-D", self.data, "-o", opts, "-l",
                                    os.path.join(self.dir, "log"), "-w", "start"]),
                       check=True, stdout=subprocess.DEVNULL)

    def stop(self):
        subprocess.run(as_postgres([f"{PGBIN}/pg_ctl", "-D", self.data, "-m", "immediate", "stop"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)


def start_pgbouncer(cluster):
    port = free_port()
    d = cluster.dir
    with open(os.path.join(d, "userlist.txt"), "w") as f:
        f.write('"postgres" ""\n')
    ini = os.path.join(d, "pgbouncer.ini")
    with open(ini, "w") as f:
        f.write(f"""[databases]
bench = host=127.0.0.1 port={cluster.port} dbname=bench user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {d}/userlist.txt
pool_mode = transaction
default_pool_size = {POOL}
max_client_conn = 20000
logfile = {d}/pgbouncer.log
pidfile = {d}/pgbouncer.pid
""")
    for p in (ini, os.path.join(d, "userlist.txt")):
        if os.geteuid() == 0:
            shutil.chown(p, "postgres")
    proc = subprocess.Popen(as_postgres(["pgbouncer", ini]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_port(port, proc)
    except RuntimeError:
        with open(os.path.join(d, "pgbouncer.log"), errors="replace") as f:
            sys.stderr.write(f.read()[-2000:])
        raise
    return proc, port


def start_riffq(cluster):
    port = free_port()
    env = dict(os.environ, RIFFQ_PORT=str(port), RIFFQ_POOL_SIZE=str(POOL), RIFFQ_POOL_MODE="transaction",
               RIFFQ_UPSTREAM=f"host=127.0.0.1 port={cluster.port} dbname=bench user=postgres",
               RIFFQ_MAX_CLIENTS="30000", RIFFQ_LOG_LEVEL="warning")
    log = open(os.path.join(cluster.dir, "riffq.log"), "w")
    proc = subprocess.Popen([os.path.join(ROOT, "build", "riffq"), "--config", os.path.join(ROOT, "routes", "proxy.json")],
                            env=env, stdout=log, stderr=log, start_new_session=True)
    wait_port(port, proc)
    return proc, port


def cpu_ticks(pid):
    """utime + stime of a process, in clock ticks (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def pgbench(port, args, pid=None):
    """One pgbench run: (tps, latency ms, failed transactions, CPU time
    of process pid per transaction in microseconds, or nan), or None when
    it failed.  The CPU column compares what each pooler spends on the same
    work; unlike tps it hardly moves when the machine's speed does."""
    cmd = ["pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-n", "-T", str(SECONDS)] + args + ["bench"]
    t0 = cpu_ticks(pid) if pid else 0
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=SECONDS * 10 + 120)
    t1 = cpu_ticks(pid) if pid else 0
    text = out.stdout + out.stderr
    tps = re.search(r"tps = ([0-9.]+) \((?:without|excluding|including)", text)
    lat = re.search(r"latency average = ([0-9.]+) ms", text)
    failed = re.search(r"number of failed transactions: ([0-9]+)", text)
    done = re.search(r"number of transactions actually processed: ([0-9]+)", text)
    if out.returncode != 0 or not tps:
        sys.stderr.write(f"pgbench failed on port {port} {' '.join(args)}:\n{text[-2000:]}\n")
        return None
    n = int(done.group(1)) if done else 0
    cpu = (t1 - t0) * 1e6 / os.sysconf("SC_CLK_TCK") / n if pid and n else float("nan")
    return (float(tps.group(1)), float(lat.group(1)) if lat else float("nan"),
            int(failed.group(1)) if failed else 0, cpu)


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if not os.path.exists(os.path.join(ROOT, "build", "riffq")):
        sys.exit("build/riffq is missing: run make first")
    if ONLY not in ("", "proxy", "plugins"):
        sys.exit(f"BENCH_ONLY={ONLY!r}: expected proxy or plugins")
    cluster = Cluster()
    procs = []
    try:
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres", "-qc", "CREATE DATABASE bench", "postgres"], check=True)
        if ONLY in ("", "proxy"):
            proxy_section(cluster, procs)
        if ONLY in ("", "plugins"):
            plugin_bench.plugin_section(cluster, procs)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        cluster.stop()


def proxy_section(cluster, procs):
    """riffq as a pooler: pgbench against Postgres, pgbouncer and riffq."""
    subprocess.run(["pgbench", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres", "-i", "-q", "-s", str(SCALE), "bench"],
                   check=True, capture_output=True)
    bouncer, bport = start_pgbouncer(cluster)
    riffq, rport = start_riffq(cluster)
    procs += [bouncer, riffq]
    # runuser stays pgbouncer's parent: its pid file names the pooler itself
    with open(os.path.join(cluster.dir, "pgbouncer.pid")) as f:
        bpid = int(f.read().split()[0])
    targets = [("direct", cluster.port, None), ("pgbouncer", bport, bpid), ("riffq", rport, riffq.pid)]
    scripts = [("-S", ["-S"])] if os.environ.get("BENCH_QUICK") else [("-S", ["-S"]), ("tpcb", [])]
    rows = []

    def measure(name, args):
        """REPEAT interleaved rounds over the three targets, then its row."""
        res = {t: [] for t, _, _ in targets}
        for _ in range(REPEAT):
            for t, port, pid in targets:
                res[t].append(pgbench(port, args, pid))
        rows.append((name, res))
        print_row(rows[-1], flush=True)

    for sname, sargs in scripts:
        for mode in ("simple", "extended", "prepared"):
            for c in CLIENTS:
                if c > 256:
                    continue
                measure(f"{sname} -M {mode} -c {c}", sargs + ["-M", mode, "-c", str(c), "-j", str(min(c, 2))])
        # new connection per transaction
        measure(f"{sname} -C -M simple -c 16", sargs + ["-C", "-M", "simple", "-c", "16", "-j", "2"])
    print()
    print_table(rows)
    idle_memory(riffq, rport)


def med(rs, i):
    """Median of one field over the runs; nan when any run failed: a
    target that works only some of the time (pgbouncer with -M prepared
    when another client's statement of the same name happens to be on its
    server) has no speed worth comparing."""
    if not rs or any(r is None for r in rs):
        return float("nan")
    return statistics.median(r[i] for r in rs)


def cell(rs, v, fmt):
    bad = sum(r is None for r in rs)
    return f"failed {bad}/{len(rs)}" if bad else fmt.format(v)


def print_row(row, flush=False):
    name, res = row
    d, b, q = (med(res[t], 0) for t in ("direct", "pgbouncer", "riffq"))
    print(f"{name:32s} direct {d:9.0f}  pgbouncer {b:9.0f}  riffq {q:9.0f}  riffq/pgbouncer {q / b if b else float('nan'):5.2f}",
          flush=flush)


def print_table(rows):
    print("| workload | direct tps | pgbouncer tps | riffq tps | riffq lat ms | pgbouncer lat ms | riffq/pgbouncer | riffq/direct "
          "| pgbouncer CPU µs/txn | riffq CPU µs/txn |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, res in rows:
        d, b, q = (med(res[t], 0) for t in ("direct", "pgbouncer", "riffq"))
        ql, bl = med(res["riffq"], 1), med(res["pgbouncer"], 1)
        rd, rb, rq = res["direct"], res["pgbouncer"], res["riffq"]
        ratio_b = "n/a" if None in rb + rq else f"{q / b:.2f}"
        ratio_d = "n/a" if None in rd + rq else f"{q / d:.2f}"
        print(f"| `{name}` | {cell(rd, d, '{:.0f}')} | {cell(rb, b, '{:.0f}')} | {cell(rq, q, '{:.0f}')} | "
              f"{cell(rq, ql, '{:.3f}')} | {cell(rb, bl, '{:.3f}')} | {ratio_b} | {ratio_d} | "
              f"{cell(rb, med(rb, 3), '{:.1f}')} | {cell(rq, med(rq, 3), '{:.1f}')} |")


def idle_memory(proc, port):
    if IDLE <= 0:
        return
    before = rss_kib(proc.pid)
    socks = open_idle(port, IDLE)
    time.sleep(1)
    after = rss_kib(proc.pid)
    per = (after - before) * 1024 / IDLE
    print(f"\nidle connections: {IDLE} held; riffq RSS {before} KiB -> {after} KiB: {per:.0f} bytes per connection")
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
