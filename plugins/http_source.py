"""The http_source plugin: a table whose rows live in a document on the web.

routes/default.json serves the table `countries` from this plugin.  Its
rows come from a JSON (or CSV) document fetched from a URL; by default that
is plugins/data/countries.json through a file:// URL, so `make run` works
offline.  After `make run`:

    psql "host=127.0.0.1 port=5433 user=riffq password=riffq" -c "
        SELECT continent, count(*), sum(population) FROM countries
        GROUP BY continent ORDER BY 3 DESC"

Environment (read when the gateway loads the plugin):

  RIFFQ_HTTP_SOURCE_URL      where the document is (http://, https:// or file://)
  RIFFQ_HTTP_SOURCE_TTL      seconds a fetched copy is used before it is fetched
                             again (default 60; 0 = every statement); a refetch
                             is conditional (If-None-Match / If-Modified-Since)
  RIFFQ_HTTP_SOURCE_TIMEOUT  seconds to connect and to wait for data (default 5)

The document is a JSON array of objects (or an object holding one under
"countries", "data", "rows", "items" or "results"), or a CSV file with a
header line; keys are the column names below, missing keys are NULL, and a
value of the wrong type is an error naming the row and the column.

Statements run on an in-memory SQLite copy of the document, through the
sqlite_engine plugin's translator (plugins/sqlite_engine.py), so SELECT with
any WHERE, ORDER BY, LIMIT, GROUP BY, joins of the table with itself and
subqueries are answered; what the translation cannot answer exactly is
refused with 0A000, never answered differently.  The table is read-only
(25006).  When the source cannot be reached the statement fails with 08001
(connection refused, timeout, DNS) or 58030 (an HTTP error status, a
missing file) and a message naming the URL; a Describe (asyncpg's prepare)
needs no fetch.
"""
import csv
import datetime
import io
import ipaddress
import json
import os
import pathlib
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import riffq
import sqlite_engine as se

HERE = os.path.dirname(os.path.abspath(__file__))
TABLE = "countries"
COLUMNS = [  # (name, Postgres type, constraints)
    ("code", "text", "PRIMARY KEY NOT NULL"),
    ("name", "text", "NOT NULL"),
    ("continent", "text", ""),
    ("capital", "text", ""),
    ("population", "int8", ""),
    ("area_km2", "float8", ""),
    ("currency", "text", ""),
    ("landlocked", "bool", ""),
    ("un_member_since", "date", ""),
]
MAX_BYTES = 64 << 20


def _env_seconds(name, default):
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        v = float(raw)
    except ValueError:
        v = -1
    if not v >= 0:
        raise ValueError(f"{name}={raw!r}: expected a number of seconds >= 0")
    return v


URL = os.environ.get("RIFFQ_HTTP_SOURCE_URL") or pathlib.Path(HERE, "data", "countries.json").as_uri()
TTL = _env_seconds("RIFFQ_HTTP_SOURCE_TTL", 60.0)
TIMEOUT = _env_seconds("RIFFQ_HTTP_SOURCE_TIMEOUT", 5.0) or 5.0
if urllib.parse.urlsplit(URL).scheme not in ("http", "https", "file"):
    raise ValueError(f"RIFFQ_HTTP_SOURCE_URL={URL!r}: expected an http://, https:// or file:// URL")

HINT = (f"The {TABLE} table is fetched from {URL} (RIFFQ_HTTP_SOURCE_URL) by plugins/http_source.py "
        f"and kept for {TTL:g} s.")


def _is_loopback(host):
    if not host:
        return True
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# proxies from the environment apply, except to this machine
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_DEFAULT = urllib.request.build_opener()


def fetch(url, timeout, validators):
    """GET url.  Returns (body bytes, content type, validators), or None
    when the server answers 304 Not Modified.  Raises riffq.Error."""
    parts = urllib.parse.urlsplit(url)
    req = urllib.request.Request(url, headers={
        "User-Agent": "riffq-http-source/0.1",
        "Accept": "application/json, text/csv;q=0.9, */*;q=0.1",
    })
    if parts.scheme != "file":
        if validators.get("etag"):
            req.add_header("If-None-Match", validators["etag"])
        if validators.get("last_modified"):
            req.add_header("If-Modified-Since", validators["last_modified"])
    opener = _DIRECT if _is_loopback(parts.hostname) else _DEFAULT
    deadline = time.monotonic() + timeout * 4
    try:
        with opener.open(req, timeout=timeout) as resp:
            chunks, size = [], 0
            while True:
                chunk = resp.read(1 << 16)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_BYTES:
                    raise riffq.Error("54000", f"the document at {url} is larger than "
                                               f"{MAX_BYTES >> 20} MB", hint=HINT)
                if time.monotonic() > deadline:
                    raise riffq.Error("08001", f"could not fetch {url}: reading it took longer than "
                                               f"{timeout * 4:g} s", hint=HINT)
                chunks.append(chunk)
            headers = resp.headers
            return (b"".join(chunks), headers.get_content_type(),
                    {"etag": headers.get("ETag"), "last_modified": headers.get("Last-Modified")})
    except urllib.error.HTTPError as e:
        if e.code == 304:
            return None
        raise riffq.Error("58030", f"could not fetch {url}: HTTP {e.code} {e.reason}", hint=HINT) from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, (FileNotFoundError, PermissionError, IsADirectoryError)) or parts.scheme == "file":
            raise riffq.Error("58030", f"could not read {url}: {getattr(reason, 'strerror', None) or reason}",
                              hint=HINT) from None
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise riffq.Error("08001", f"could not fetch {url}: timed out after {timeout:g} s",
                              hint=HINT) from None
        text = getattr(reason, "strerror", None) or str(reason)
        raise riffq.Error("08001", f"could not connect to {url}: {text}", hint=HINT) from None
    except (socket.timeout, TimeoutError):
        raise riffq.Error("08001", f"could not fetch {url}: timed out after {timeout:g} s", hint=HINT) from None
    except OSError as e:        # a reset connection, a truncated response...
        raise riffq.Error("08001", f"could not fetch {url}: {e}", hint=HINT) from None


# ---- the document -> rows ------------------------------------------------------------

def _bad(row, col, expected, v):
    raise riffq.Error("22P02", f"the document at {URL} has an invalid value in row {row}, "
                               f"column \"{col}\": expected {expected}, got {v!r}", hint=HINT)


def convert(row_no, col, typ, v):
    """A value from the document -> the value stored for a column of typ
    (CSV gives strings; empty means NULL)."""
    if v is None or (isinstance(v, str) and v.strip() == "" and typ != "text"):
        return None
    if typ == "text":
        if isinstance(v, (dict, list)):
            _bad(row_no, col, "text", v)
        return v if isinstance(v, str) else str(v)
    if typ == "int8":
        if isinstance(v, bool):
            _bad(row_no, col, "an integer", v)
        if isinstance(v, int):
            return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, str):
            try:
                return int(v.strip())
            except ValueError:
                pass
        _bad(row_no, col, "an integer", v)
    if typ == "float8":
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                pass
        _bad(row_no, col, "a number", v)
    if typ == "bool":
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, int) and v in (0, 1):
            return v
        if isinstance(v, str):
            try:
                return int(se._parse_bool(v))
            except ValueError:
                pass
        _bad(row_no, col, "true or false", v)
    if typ == "date":
        if isinstance(v, str):
            try:
                return datetime.date.fromisoformat(v.strip()[:10]).isoformat()
            except ValueError:
                pass
        _bad(row_no, col, "a date (YYYY-MM-DD)", v)
    raise AssertionError(typ)


def parse_document(body, content_type, url):
    """bytes -> list of dicts."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise riffq.Error("22021", f"the document at {url} is not UTF-8: {e}", hint=HINT) from None
    path = urllib.parse.urlsplit(url).path.lower()
    if content_type in ("text/csv", "application/csv") or path.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        return list(reader)
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise riffq.Error("22P02", f"the document at {url} is not valid JSON ({content_type}): {e}",
                          hint=HINT) from None
    if isinstance(doc, dict):
        for key in (TABLE, "data", "rows", "items", "results"):
            if isinstance(doc.get(key), list):
                doc = doc[key]
                break
    if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
        raise riffq.Error("22P02", f"the document at {url} is not a JSON array of objects", hint=HINT)
    return doc


def build_engine(records):
    conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
    se.install_functions(conn)
    checks = se.create_tables(conn, {TABLE: COLUMNS})
    names = [c[0] for c in COLUMNS]
    rows = [[convert(n + 1, c, t, r.get(c)) for c, t, _ in COLUMNS] for n, r in enumerate(records)]
    engine = se.Engine(conn, name="http_source", syntax_sqlstate="0A000", read_only=True, hint=HINT)
    engine.type_checks = checks
    try:
        se.insert_rows(conn, TABLE, names, rows)
    except sqlite3.Error as e:
        err = engine.error(e)
        if not isinstance(err, riffq.Error):
            raise err from None         # canceled
        raise riffq.Error(err.sqlstate, f"the document at {URL} cannot be loaded: {err.message}",
                          detail=err.detail, hint=HINT) from None
    return engine


class Source:
    """The fetched copy and when it was fetched, shared by every client."""

    def __init__(self, url, ttl, timeout):
        self.url, self.ttl, self.timeout = url, ttl, timeout
        self.lock = threading.Lock()
        self.engine = None
        self.fetched_at = None          # time.monotonic() of the last good fetch
        self.validators = {}

    def get(self, describe=False):
        got = False
        try:
            # timed waits, so a cancel of this statement is not stuck behind a fetch
            while not got:
                got = self.lock.acquire(timeout=0.05)
            fresh = self.engine is not None and time.monotonic() - self.fetched_at < self.ttl
            if fresh:
                return self.engine
            if describe:
                # a Describe needs the columns, not the rows: no fetch
                return self.engine or SCHEMA
            fetched = fetch(self.url, self.timeout, self.validators if self.engine is not None else {})
            now = time.monotonic()
            if fetched is None:         # 304: the copy we have is current
                self.fetched_at = now
                return self.engine
            body, ctype, validators = fetched
            self.engine = build_engine(parse_document(body, ctype, self.url))
            self.validators = validators
            self.fetched_at = now
            return self.engine
        finally:
            if got:
                self.lock.release()


SOURCE = Source(URL, TTL, TIMEOUT)
SCHEMA = build_engine([])       # the table without rows: Describe, and refusing writes
riffq.register_table("public", TABLE, [(c, t, "NOT NULL" not in x) for c, t, x in COLUMNS],
                     primary_key="code", comment=f"Fetched from {URL}, cached {TTL:g} s")


@riffq.query_handler
def handle(sql, params, ctx):
    if SCHEMA.prepare(sql).kind != "read":
        return SCHEMA.handle(sql, params, ctx)      # 25006 for writes, 0A000 for the rest
    return SOURCE.get(bool(ctx.get("describe"))).handle(sql, params, ctx)
