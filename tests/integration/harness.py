"""
Integration-test harness for riffq: start the real gateway binary on a free
loopback port, a throwaway PostgreSQL 15 cluster, a self-signed TLS cert, and a
small hand-written v3 protocol client for edge cases that no driver produces.

Everything here is bounded in time: every socket has a timeout, every wait has
a deadline, and every process we start is stopped (SIGTERM, then SIGKILL) by
the fixtures in conftest.py.

Run with Debian's interpreter:  /usr/bin/python3 -m pytest tests/integration
"""
import atexit
import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RIFFQ_BIN = os.environ.get("RIFFQ_BIN") or os.path.join(REPO, "build", "riffq")

PG_BINDIR = os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin")
PSQL = os.environ.get("PSQL", "/usr/bin/psql")

START_TIMEOUT = 10.0    # seconds until the gateway must accept connections
STOP_TIMEOUT = 10.0     # seconds after SIGTERM before we SIGKILL
SOCK_TIMEOUT = 10.0     # every raw socket operation

# The user every default config knows, and their password.
USER = "alice"
PASSWORD = "secret"


def free_port():
    """A loopback TCP port that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(host, port, deadline, proc=None):
    """Poll until host:port accepts a TCP connection or the deadline passes.
    Returns True when it accepted; False on timeout or when proc died."""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def wait_unix(path, deadline, proc=None):
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(0.5)
            try:
                s.connect(path)
                return True
            finally:
                s.close()
        except OSError:
            time.sleep(0.05)
    return False


def default_config(port, **overrides):
    """The config most tests use: one TCP listener, SCRAM auth for alice,
    everything answered locally.  Top-level keys in overrides replace the
    defaults (e.g. auth=..., limits=..., tls=...)."""
    cfg = {
        "listen": [{"host": "127.0.0.1", "port": port}],
        "auth": {"method": "scram-sha-256", "users": {USER: PASSWORD}},
        "routes": [{"name": "local", "to": "local"}],
    }
    for k, v in overrides.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    return cfg


# Every riffq process started and not yet stopped, for the per-test watchdog
# in conftest.py (it SIGKILLs them when a test overruns, which unblocks any
# client waiting on them) and for the exit handler below.
LIVE = set()
# Every PgCluster started and not yet stopped.
LIVE_CLUSTERS = set()


@atexit.register
def _cleanup_at_exit():
    """Last resort when pytest dies without running fixture teardown (e.g. a
    SIGTERM from `timeout`, which conftest.py turns into KeyboardInterrupt):
    no riffq process or Postgres cluster outlives the test run."""
    for srv in list(LIVE):
        try:
            srv.kill()
        except Exception:
            pass
    for pg in list(LIVE_CLUSTERS):
        try:
            pg.stop()
        except Exception:
            pass


class Riffq:
    """One running build/riffq process."""

    def __init__(self, config, workdir, host="127.0.0.1", port=None, binary=None):
        self.config = config
        self.workdir = workdir
        self.host = host
        self.port = port
        self.binary = binary or RIFFQ_BIN
        self.config_path = None
        self.log_path = None
        self.proc = None
        self.returncode = None

    # -- lifecycle -----------------------------------------------------------
    def start(self):
        if not os.access(self.binary, os.X_OK):
            raise RuntimeError("riffq binary not found or not executable: %s "
                               "(build it with `make build/riffq` or set RIFFQ_BIN)" % self.binary)
        fd, self.config_path = tempfile.mkstemp(prefix="route-", suffix=".json", dir=self.workdir)
        with os.fdopen(fd, "w") as f:
            json.dump(self.config, f, indent=2)
        fd, self.log_path = tempfile.mkstemp(prefix="riffq-", suffix=".log", dir=self.workdir)
        log = os.fdopen(fd, "wb")
        try:
            self.proc = subprocess.Popen([self.binary, "--config", self.config_path],
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.workdir)
        finally:
            log.close()
        LIVE.add(self)
        deadline = time.monotonic() + START_TIMEOUT
        ok = False
        tcp = [l for l in self.config.get("listen", []) if "port" in l]
        unix = [l["unix"] for l in self.config.get("listen", []) if "unix" in l]
        if tcp:
            ok = wait_port(tcp[0]["host"], tcp[0]["port"], deadline, self.proc)
        elif unix:
            ok = wait_unix(unix[0], deadline, self.proc)
        if ok and unix and tcp:
            ok = wait_unix(unix[0], deadline, self.proc)
        if not ok:
            died = self.proc.poll() is not None
            self.kill()
            raise RuntimeError("riffq did not start listening within %.0fs (%s); log:\n%s"
                               % (START_TIMEOUT, "process exited with %s" % self.returncode
                                  if died else "still running", self.log))
        return self

    def stop(self):
        """SIGTERM, wait (bounded), SIGKILL.  Returns the exit status
        (negative = killed by that signal, as subprocess reports it)."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
                self.returncode = "killed after SIGTERM timeout"
                self.proc = None
                LIVE.discard(self)
                return self.returncode
        self.returncode = self.proc.returncode
        self.proc = None
        LIVE.discard(self)
        return self.returncode

    def kill(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)
            self.returncode = self.proc.returncode
            self.proc = None
        LIVE.discard(self)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""

    # -- connection strings ------------------------------------------------------
    def dsn(self, user=USER, password=PASSWORD, **kw):
        """A libpq keyword/value connection string.  Extra keywords (dbname,
        sslmode, application_name, options, connect_timeout...) pass through.
        sslmode defaults to disable so tests are explicit about TLS."""
        params = {"host": self.host, "port": self.port, "user": user,
                  "connect_timeout": 10, "sslmode": "disable", "gssencmode": "disable"}
        if password is not None:
            params["password"] = password
        params.update(kw)
        return " ".join("%s=%s" % (k, _dsn_quote(v)) for k, v in params.items() if v is not None)

    def connect_raw(self, **kw):
        return RawConn.tcp(self.host, self.port, **kw)


def _dsn_quote(v):
    s = str(v)
    if s == "" or any(c in s for c in " '\\"):
        return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return s


def make_cert(directory):
    """A self-signed cert+key for CN=localhost made with the openssl CLI."""
    cert = os.path.join(directory, "server.crt")
    key = os.path.join(directory, "server.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    os.chmod(key, 0o600)
    return cert, key


# --------------------------------------------------------------------------
# A throwaway PostgreSQL 15 cluster (run as the `postgres` OS user).
# --------------------------------------------------------------------------
class PgCluster:
    """initdb in a temp dir, start postgres on 127.0.0.1:<free port> with its
    Unix socket in the same temp dir; superuser `postgres` / password
    `postgres` (SCRAM over TCP, trust over the socket)."""

    SUPERUSER = "postgres"
    PASSWORD = "postgres"

    def __init__(self):
        self.tmp = None
        self.datadir = None
        self.host = "127.0.0.1"
        self.port = None
        self.started = False

    def _as_pg(self, argv, timeout=120, **kw):
        cmd = argv
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--"] + argv
        return subprocess.run(cmd, timeout=timeout, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, **kw)

    def start(self):
        self.tmp = tempfile.mkdtemp(prefix="riffq-pg-")
        LIVE_CLUSTERS.add(self)
        os.chmod(self.tmp, 0o755)
        self.datadir = os.path.join(self.tmp, "data")
        pwfile = os.path.join(self.tmp, "pw")
        with open(pwfile, "w") as f:
            f.write(self.PASSWORD + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.tmp, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        r = self._as_pg([os.path.join(PG_BINDIR, "initdb"), "-D", self.datadir,
                         "-U", self.SUPERUSER, "--pwfile", pwfile, "-E", "UTF8",
                         "--locale", "C", "--auth-local", "trust",
                         "--auth-host", "scram-sha-256"])
        if r.returncode != 0:
            raise RuntimeError("initdb failed:\n" + r.stdout.decode(errors="replace"))
        for attempt in range(3):
            self.port = free_port()
            opts = ("-c listen_addresses=127.0.0.1 -c port=%d -c unix_socket_directories=%s "
                    "-c fsync=off -c max_connections=50" % (self.port, self.tmp))
            # marked started before pg_ctl runs: if we are interrupted while it
            # waits, stop() still shuts the postmaster down
            self.started = True
            LIVE_CLUSTERS.add(self)
            r = self._as_pg([os.path.join(PG_BINDIR, "pg_ctl"), "-D", self.datadir,
                             "-l", os.path.join(self.tmp, "pg.log"), "-o", opts,
                             "-w", "-t", "60", "start"])
            if r.returncode == 0:
                return self
            self.started = False
            # most likely the port got taken between free_port() and bind
        raise RuntimeError("pg_ctl start failed:\n%s\n%s" % (r.stdout.decode(errors="replace"), self.log))

    @property
    def log(self):
        try:
            with open(os.path.join(self.tmp, "pg.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    @property
    def socket_dir(self):
        return self.tmp

    def dsn(self, user=SUPERUSER, password=PASSWORD, dbname="postgres", **kw):
        params = {"host": self.host, "port": self.port, "user": user, "dbname": dbname,
                  "password": password, "connect_timeout": 10, "sslmode": "disable"}
        params.update(kw)
        return " ".join("%s=%s" % (k, _dsn_quote(v)) for k, v in params.items() if v is not None)

    def stop(self):
        try:
            if self.started and os.path.exists(os.path.join(self.datadir, "postmaster.pid")):
                self._as_pg([os.path.join(PG_BINDIR, "pg_ctl"), "-D", self.datadir,
                             "-m", "immediate", "-w", "-t", "30", "stop"], timeout=60)
            self.started = False
        finally:
            LIVE_CLUSTERS.discard(self)
            if self.tmp:
                shutil.rmtree(self.tmp, ignore_errors=True)
                self.tmp = None


# --------------------------------------------------------------------------
# A minimal v3 protocol client, for byte-exact assertions and edge cases.
# --------------------------------------------------------------------------
PROTO_3_0 = 196608          # 3 << 16
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102


class ServerError(Exception):
    def __init__(self, fields):
        self.fields = fields
        super().__init__("%s %s" % (fields.get("C"), fields.get("M")))

    @property
    def sqlstate(self):
        return self.fields.get("C")

    @property
    def message(self):
        return self.fields.get("M")


def parse_error_fields(body):
    fields = {}
    i = 0
    while i < len(body) and body[i] != 0:
        code = chr(body[i])
        end = body.index(b"\0", i + 1)
        fields[code] = body[i + 1:end].decode("utf-8", "replace")
        i = end + 1
    return fields


def cstr(s):
    if isinstance(s, str):
        s = s.encode()
    return s + b"\0"


def msg(tag, body=b""):
    """One frontend message: type byte, int32 length (self-inclusive), body."""
    return tag + struct.pack("!I", len(body) + 4) + body


class RawConn:
    """A blocking socket speaking the v3 protocol by hand.  Every read has a
    timeout (SOCK_TIMEOUT); closed connections raise EOFError."""

    def __init__(self, sock):
        self.sock = sock
        self.sock.settimeout(SOCK_TIMEOUT)
        self.buf = b""
        self.params = {}
        self.backend_pid = None
        self.backend_key = None
        self.status = None

    @classmethod
    def tcp(cls, host, port, timeout=SOCK_TIMEOUT):
        s = socket.create_connection((host, port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(s)

    @classmethod
    def unix(cls, path):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(SOCK_TIMEOUT)
        s.connect(path)
        return cls(s)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    # -- bytes -------------------------------------------------------------------
    def send(self, data):
        self.sock.sendall(data)

    def recv_exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed by server (wanted %d bytes, have %d)"
                               % (n, len(self.buf)))
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_byte(self):
        return self.recv_exact(1)

    def read_message(self):
        """(type char, body bytes)."""
        t = self.recv_exact(1)
        (n,) = struct.unpack("!I", self.recv_exact(4))
        assert n >= 4, "bad message length %d for type %r" % (n, t)
        return t.decode("latin-1"), self.recv_exact(n - 4)

    def wait_closed(self, timeout=SOCK_TIMEOUT):
        """Read until EOF (bounded).  Returns the messages received before the
        close.  Raises AssertionError if still open after timeout."""
        deadline = time.monotonic() + timeout
        msgs = []
        self.sock.settimeout(0.2)
        try:
            while time.monotonic() < deadline:
                try:
                    msgs.append(self.read_message())
                except socket.timeout:
                    continue
                except (EOFError, ConnectionResetError, BrokenPipeError):
                    return msgs
            raise AssertionError("connection still open after %.1fs; got %r" % (timeout, msgs))
        finally:
            self.sock.settimeout(SOCK_TIMEOUT)

    def read_all_until_closed(self, timeout=SOCK_TIMEOUT):
        """Every byte until EOF (bounded), unparsed."""
        deadline = time.monotonic() + timeout
        data = self.buf
        self.buf = b""
        self.sock.settimeout(0.2)
        try:
            while time.monotonic() < deadline:
                try:
                    chunk = self.sock.recv(65536)
                except socket.timeout:
                    continue
                except (ConnectionResetError, BrokenPipeError):
                    return data
                if not chunk:
                    return data
                data += chunk
            raise AssertionError("connection still open after %.1fs; got %r" % (timeout, data))
        finally:
            self.sock.settimeout(SOCK_TIMEOUT)

    # -- startup ------------------------------------------------------------------
    def send_startup(self, params, version=PROTO_3_0):
        body = struct.pack("!I", version)
        for k, v in params.items():
            body += cstr(k) + cstr(v)
        body += b"\0"
        self.send(struct.pack("!I", len(body) + 4) + body)

    def ssl_request(self):
        self.send(struct.pack("!II", 8, SSL_REQUEST))
        return self.recv_byte()

    def gssenc_request(self):
        self.send(struct.pack("!II", 8, GSSENC_REQUEST))
        return self.recv_byte()

    def start_tls(self):
        """After an 'S' answer: wrap the socket (no verification: self-signed)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        assert self.buf == b"", "unencrypted bytes after SSLRequest answer: %r" % self.buf
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
        self.sock.settimeout(SOCK_TIMEOUT)

    def authenticate(self, user, password):
        """Answer whatever authentication request comes (trust, cleartext, md5,
        SCRAM-SHA-256).  Returns the list of authentication codes seen.
        Raises ServerError on ErrorResponse."""
        codes = []
        scram = None
        while True:
            t, body = self.read_message()
            if t == "E":
                raise ServerError(parse_error_fields(body))
            if t == "v":
                self.negotiate = parse_negotiate(body)
                continue
            assert t == "R", "expected an authentication message, got %r %r" % (t, body)
            (code,) = struct.unpack("!I", body[:4])
            codes.append(code)
            if code == 0:                       # AuthenticationOk
                return codes
            if code == 3:                       # cleartext
                self.send(msg(b"p", cstr(password)))
            elif code == 5:                     # md5 with 4-byte salt
                salt = body[4:8]
                inner = hashlib.md5(password.encode() + user.encode()).hexdigest()
                outer = hashlib.md5(inner.encode() + salt).hexdigest()
                self.send(msg(b"p", cstr("md5" + outer)))
            elif code == 10:                    # SASL: mechanism list
                mechs = [m.decode() for m in body[4:].split(b"\0") if m]
                assert "SCRAM-SHA-256" in mechs, mechs
                scram = ScramClient(password)
                first = scram.client_first()
                self.send(msg(b"p", cstr("SCRAM-SHA-256") + struct.pack("!i", len(first)) + first))
            elif code == 11:                    # SASLContinue
                self.send(msg(b"p", scram.client_final(body[4:])))
            elif code == 12:                    # SASLFinal
                scram.verify_server_final(body[4:])
            else:
                raise AssertionError("unsupported authentication request %d" % code)

    def read_until_ready(self):
        """Collect messages until ReadyForQuery; record ParameterStatus and
        BackendKeyData on the way.  Returns the list of (type, body)."""
        msgs = []
        while True:
            try:
                t, body = self.read_message()
            except EOFError:
                # a FATAL error is followed by the server closing: report it
                fatal = [b for (mt, b) in msgs if mt == "E"]
                if fatal:
                    raise ServerError(parse_error_fields(fatal[-1]))
                raise
            msgs.append((t, body))
            if t == "S":
                k, v = body.split(b"\0")[:2]
                self.params[k.decode()] = v.decode()
            elif t == "K":
                self.backend_pid, self.backend_key = struct.unpack("!Ii", body)
            elif t == "Z":
                self.status = body.decode()
                return msgs

    def startup(self, user, password=None, database=None, version=PROTO_3_0, **params):
        p = {"user": user}
        if database is not None:
            p["database"] = database
        p.update(params)
        self.send_startup(p, version)
        self.auth_codes = self.authenticate(user, password)
        return self.read_until_ready()

    # -- queries ------------------------------------------------------------------
    def query(self, sql):
        self.send(msg(b"Q", cstr(sql)))
        return self.read_until_ready()

    def sync(self):
        self.send(msg(b"S"))

    def terminate(self):
        self.send(msg(b"X"))


def parse_negotiate(body):
    minor, n = struct.unpack("!Ii", body[:8])
    names = [x.decode() for x in body[8:].split(b"\0")[:n]]
    return minor, names


# -- message builders (extended protocol) ----------------------------------------
def parse_msg(name, sql, types=()):
    return msg(b"P", cstr(name) + cstr(sql) + struct.pack("!H", len(types))
               + b"".join(struct.pack("!I", t) for t in types))


def bind_msg(portal, stmt, params=(), param_formats=(), result_formats=()):
    body = cstr(portal) + cstr(stmt)
    body += struct.pack("!H", len(param_formats)) + b"".join(struct.pack("!H", f) for f in param_formats)
    body += struct.pack("!H", len(params))
    for p in params:
        if p is None:
            body += struct.pack("!i", -1)
        else:
            if isinstance(p, str):
                p = p.encode()
            body += struct.pack("!i", len(p)) + p
    body += struct.pack("!H", len(result_formats)) + b"".join(struct.pack("!H", f) for f in result_formats)
    return msg(b"B", body)


def describe_msg(kind, name):
    return msg(b"D", kind + cstr(name))


def execute_msg(portal, max_rows=0):
    return msg(b"E", cstr(portal) + struct.pack("!I", max_rows))


def close_msg(kind, name):
    return msg(b"C", kind + cstr(name))


SYNC = msg(b"S")
FLUSH = msg(b"H")


# -- message decoders --------------------------------------------------------------
def parse_row_description(body):
    """List of dicts: name, table_oid, attnum, type_oid, typlen, typmod, format."""
    (n,) = struct.unpack("!H", body[:2])
    i = 2
    cols = []
    for _ in range(n):
        end = body.index(b"\0", i)
        name = body[i:end].decode()
        i = end + 1
        table_oid, attnum, type_oid, typlen, typmod, fmt = struct.unpack("!IhIhih", body[i:i + 18])
        i += 18
        cols.append(dict(name=name, table_oid=table_oid, attnum=attnum, type_oid=type_oid,
                         typlen=typlen, typmod=typmod, format=fmt))
    return cols


def parse_data_row(body):
    """List of bytes values (None for NULL)."""
    (n,) = struct.unpack("!H", body[:2])
    i = 2
    vals = []
    for _ in range(n):
        (ln,) = struct.unpack("!i", body[i:i + 4])
        i += 4
        if ln < 0:
            vals.append(None)
        else:
            vals.append(body[i:i + ln])
            i += ln
    return vals


def parse_param_description(body):
    (n,) = struct.unpack("!H", body[:2])
    return list(struct.unpack("!%dI" % n, body[2:2 + 4 * n]))


def command_tag(body):
    return body.rstrip(b"\0").decode()


def types_of(msgs):
    return "".join(t for t, _ in msgs)


def errors_of(msgs):
    return [parse_error_fields(b) for t, b in msgs if t == "E"]


def rows_of(msgs):
    return [parse_data_row(b) for t, b in msgs if t == "D"]


# -- SCRAM-SHA-256 client (RFC 5802 / 7677), no channel binding -------------------------
class ScramClient:
    def __init__(self, password, nonce=None):
        self.password = password.encode()
        self.nonce = nonce or base64.b64encode(os.urandom(18)).decode()
        self.first_bare = "n=,r=" + self.nonce

    def client_first(self):
        return ("n,," + self.first_bare).encode()

    def client_final(self, server_first):
        self.server_first = server_first.decode()
        attrs = dict(kv.split("=", 1) for kv in self.server_first.split(","))
        r, s, i = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        assert r.startswith(self.nonce), "server nonce does not extend ours"
        salted = hashlib.pbkdf2_hmac("sha256", self.password, s, i)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = "c=biws,r=" + r
        auth_msg = (self.first_bare + "," + self.server_first + "," + without_proof).encode()
        client_sig = hmac.new(stored_key, auth_msg, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, client_sig))
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        self.expected_server_sig = hmac.new(server_key, auth_msg, hashlib.sha256).digest()
        return (without_proof + ",p=" + base64.b64encode(proof).decode()).encode()

    def verify_server_final(self, data):
        attrs = dict(kv.split("=", 1) for kv in data.decode().split(","))
        assert base64.b64decode(attrs["v"]) == self.expected_server_sig, "bad server signature"


# --------------------------------------------------------------------------
# Streaming replicas of a PgCluster (read-replica tests).
# --------------------------------------------------------------------------
class PgReplica(PgCluster):
    """A hot-standby streaming replica of a running PgCluster: pg_basebackup
    -R over the primary's Unix socket (trust auth, so no password is needed)
    into its own temp dir, started on another free loopback port.  Same
    superuser and password as the primary (the data directory is a copy).
    halt()/resume() stop and restart it on the same port, for tests that take
    a replica down; stop() ends it for good and removes the temp dir."""

    def __init__(self, primary):
        super().__init__()
        self.primary = primary

    def _opts(self):
        return ("-c listen_addresses=127.0.0.1 -c port=%d -c unix_socket_directories=%s "
                "-c fsync=off -c max_connections=50 -c hot_standby=on" % (self.port, self.tmp))

    def _pg_ctl(self, *args, timeout=90):
        return self._as_pg([os.path.join(PG_BINDIR, "pg_ctl"), "-D", self.datadir] + list(args),
                           timeout=timeout)

    def start(self):
        self.tmp = tempfile.mkdtemp(prefix="riffq-pg-replica-")
        LIVE_CLUSTERS.add(self)
        os.chmod(self.tmp, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.tmp, "postgres", "postgres")
        self.datadir = os.path.join(self.tmp, "data")
        r = self._as_pg([os.path.join(PG_BINDIR, "pg_basebackup"), "-D", self.datadir,
                         "-h", self.primary.socket_dir, "-p", str(self.primary.port),
                         "-U", self.SUPERUSER, "-R", "-X", "stream", "-c", "fast", "--no-sync"])
        if r.returncode != 0:
            raise RuntimeError("pg_basebackup failed:\n" + r.stdout.decode(errors="replace"))
        for attempt in range(3):
            self.port = free_port()
            self.started = True
            # -w returns once the standby accepts read-only connections
            r = self._pg_ctl("-l", os.path.join(self.tmp, "pg.log"), "-o", self._opts(),
                             "-w", "-t", "60", "start")
            if r.returncode == 0:
                return self
            self.started = False
        raise RuntimeError("replica start failed:\n%s\n%s" % (r.stdout.decode(errors="replace"), self.log))

    def halt(self):
        """Stop the server (fast shutdown: sessions are terminated), keep its data."""
        r = self._pg_ctl("-m", "fast", "-w", "-t", "60", "stop")
        if r.returncode != 0:
            raise RuntimeError("replica stop failed:\n" + r.stdout.decode(errors="replace"))

    def resume(self):
        """Start a halted replica again on the same port."""
        r = self._pg_ctl("-l", os.path.join(self.tmp, "pg.log"), "-o", self._opts(),
                         "-w", "-t", "60", "start")
        if r.returncode != 0:
            raise RuntimeError("replica restart failed:\n%s\n%s" % (r.stdout.decode(errors="replace"), self.log))

    @property
    def running(self):
        return os.path.exists(os.path.join(self.datadir, "postmaster.pid"))
