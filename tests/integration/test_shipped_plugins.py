"""
The plugins shipped in plugins/ (sqlite_engine.py, http_source.py) behind
the real gateway, started from routes/default.json or from route files that
point at the real plugin files, through psql, psycopg (text and binary) and
asyncpg.  Answers are asserted exactly: rows, column types, SQLSTATEs; the
bookstore's answers are also compared with PostgreSQL's own over the same
data.  http_source is fed by a local http.server on a free loopback port.
"""
import asyncio
import contextlib
import datetime
import decimal
import http.server
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import asyncpg
import psycopg
import pytest

import harness
from harness import PASSWORD, USER

PLUGINS = os.path.join(harness.REPO, "plugins")
SQLITE_ENGINE = os.path.join(PLUGINS, "sqlite_engine.py")
HTTP_SOURCE = os.path.join(PLUGINS, "http_source.py")
ENV_VARS = ("RIFFQ_HTTP_SOURCE_URL", "RIFFQ_HTTP_SOURCE_TTL", "RIFFQ_HTTP_SOURCE_TIMEOUT",
            "RIFFQ_SQLITE_PATH")

# Postgres type OIDs
BOOL, INT8, INT4, TEXT, FLOAT8, NUMERIC, DATE, TIMESTAMPTZ = 16, 20, 23, 25, 701, 1700, 1082, 1184
UTC = datetime.timezone.utc
D = decimal.Decimal


@contextlib.contextmanager
def clean_env(**env):
    """The gateway inherits our environment: only the plugin settings given."""
    saved = {k: os.environ.pop(k) for k in ENV_VARS if k in os.environ}
    os.environ.update({k: str(v) for k, v in env.items()})
    try:
        yield
    finally:
        for k in env:
            os.environ.pop(k, None)
        os.environ.update(saved)


def default_route_file(port):
    """routes/default.json as `make run` uses it, on a test port and user."""
    with open(os.path.join(harness.REPO, "routes", "default.json")) as f:
        cfg = json.load(f)
    cfg["listen"] = [{"host": "127.0.0.1", "port": port}]
    cfg["auth"] = {"method": "scram-sha-256", "users": {USER: PASSWORD}}
    for p in cfg["plugins"].values():
        if isinstance(p, dict) and "module" in p:
            p["module"] = os.path.normpath(os.path.join(harness.REPO, "routes", p["module"]))
    return cfg


def plugin_config(port, plugins, routes):
    return {
        "listen": [{"host": "127.0.0.1", "port": port}],
        "auth": {"method": "scram-sha-256", "users": {USER: PASSWORD}},
        "plugins": {name: {"module": path} for name, path in plugins.items()},
        "routes": routes + [{"name": "local", "to": "local"}],
    }


@pytest.fixture(scope="module")
def shipped():
    """One gateway on routes/default.json (demo, sqlite, http) for the
    read-only tests of this module."""
    tmp = tempfile.mkdtemp(prefix="rq-shipped-")
    srv = None
    try:
        with clean_env():
            for _attempt in range(3):
                srv = harness.Riffq(default_route_file(harness.free_port()), tmp)
                srv.port = srv.config["listen"][0]["port"]
                try:
                    srv.start()
                    break
                except RuntimeError as e:
                    if "in use" not in str(e).lower():
                        raise
        yield srv
        rc = srv.stop()
        assert rc == 0, "riffq exited with %r; log:\n%s" % (rc, srv.log)
    finally:
        if srv is not None:
            srv.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def connect(srv, **kw):
    return psycopg.connect(srv.dsn(), autocommit=True, **kw)


def run_async(coro):
    return asyncio.run(coro)


async def apg(srv):
    return await asyncpg.connect(host=srv.host, port=srv.port, user=USER, password=PASSWORD,
                                 database="db", timeout=10)


def psql(srv, *args):
    out = subprocess.run([harness.PSQL, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", *args, srv.dsn()],
                         capture_output=True, text=True, timeout=30)
    return out


# ---------------------------------------------------------------------------
# sqlite_engine: the bookstore
# ---------------------------------------------------------------------------

def test_bookstore_rows_and_types_psycopg_text_and_binary(shipped):
    with connect(shipped) as c:
        for binary in (False, True):
            cur = c.cursor(binary=binary)
            cur.execute("SELECT count(*) FROM books")
            assert cur.fetchall() == [(99,)]
            cur.execute("SELECT id, title, author_id, published, genre, pages, price, in_stock "
                        "FROM books WHERE id = %s", (33,))
            assert cur.fetchall() == [(33, "A Room of One's Own", 8, 1929, "essay", 112, D("6.99"), True)]
            assert [d.type_code for d in cur.description] == [INT8, TEXT, INT8, INT4, TEXT, INT4, NUMERIC, BOOL]
            cur.execute("SELECT * FROM orders WHERE id <= %s ORDER BY id", (2,))
            assert [d.name for d in cur.description] == ["id", "book_id", "customer", "quantity",
                                                         "ordered_at", "shipped_on"]
            assert [d.type_code for d in cur.description] == [INT8, INT8, TEXT, INT4, TIMESTAMPTZ, DATE]
            assert cur.fetchall() == [
                (1, 76, "Grace", 3, datetime.datetime(2024, 1, 2, 2, 45, 8, tzinfo=UTC), datetime.date(2024, 1, 6)),
                (2, 4, "Yusuf", 1, datetime.datetime(2024, 1, 2, 9, 16, 34, tzinfo=UTC), datetime.date(2024, 1, 3)),
            ]
            cur.execute("SELECT name, born, died FROM authors WHERE country = %s ORDER BY born", ("Nigeria",))
            assert cur.fetchall() == [("Chinua Achebe", 1930, 2013), ("Chimamanda Ngozi Adichie", 1977, None)]


def test_bookstore_joins_and_aggregates(shipped):
    with connect(shipped) as c:
        assert c.execute(
            "SELECT a.name, count(*) AS n FROM books b JOIN authors a ON a.id = b.author_id "
            "GROUP BY a.name ORDER BY n DESC, a.name LIMIT 3").fetchall() == [
            ("Charles Dickens", 6), ("Jane Austen", 6), ("Fyodor Dostoevsky", 5)]
        cur = c.execute(
            "SELECT a.name, count(*) AS orders, sum(o.quantity) AS sold, sum(o.quantity * b.price) AS revenue "
            "FROM orders o JOIN books b ON b.id = o.book_id JOIN authors a ON a.id = b.author_id "
            "GROUP BY a.name ORDER BY sold DESC, a.name LIMIT 3")
        assert cur.fetchall() == [("Agatha Christie", 36, 62, D("609.09")),
                                  ("Jane Austen", 34, 51, D("448.67")),
                                  ("Toni Morrison", 25, 46, D("603.70"))]
        assert [d.type_code for d in cur.description] == [TEXT, INT8, INT8, NUMERIC]
        # Postgres' result types: sum(int4) int8, sum/avg(numeric) numeric,
        # min/max keep the column's type, comparisons bool, || text
        cur = c.execute("SELECT count(*), sum(pages), sum(price), avg(price), max(price), min(published), "
                        "max(ordered_at), published > 1900 AS modern, title || '!' AS shout, price::int "
                        "FROM books JOIN orders ON orders.book_id = books.id WHERE books.id = 1 "
                        "GROUP BY books.id")
        assert [(d.name, d.type_code) for d in cur.description] == [
            ("count", INT8), ("sum", INT8), ("sum", NUMERIC), ("avg", NUMERIC), ("max", NUMERIC),
            ("min", INT4), ("max", TIMESTAMPTZ), ("modern", BOOL), ("shout", TEXT), ("price", INT4)]
        assert cur.fetchall() == [(1, 409, D("9.99"), D("9.99"), D("9.99"), 1811,
                                   datetime.datetime(2024, 12, 15, 19, 34, 13, tzinfo=UTC), False,
                                   "Sense and Sensibility!", 10)]
        # an expression typed from its values; NULL-only columns are text
        cur = c.execute("SELECT coalesce(died, 0) AS d, NULL AS nothing, abs(-2.5) AS a "
                        "FROM authors WHERE id = 17")
        assert cur.fetchall() == [(0, None, 2.5)]
        assert [d.type_code for d in cur.description] == [INT4, TEXT, FLOAT8]


def test_bookstore_postgres_semantics(shipped):
    with connect(shipped) as c:
        # NULLs sort last ascending and first descending, as in Postgres
        assert c.execute("SELECT name FROM authors ORDER BY died DESC, name LIMIT 2").fetchall() == [
            ("Chimamanda Ngozi Adichie",), ("Haruki Murakami",)]
        assert c.execute("SELECT died FROM authors ORDER BY died LIMIT 1 OFFSET 26").fetchall() == [(None,)]
        # LIKE is case-sensitive, ILIKE is not
        assert c.execute("SELECT count(*) FROM books WHERE title LIKE 'the%'").fetchone() == (0,)
        assert c.execute("SELECT count(*) FROM books WHERE title ILIKE 'the%'").fetchone() == (29,)
        # integer division truncates; division by zero is an error, not NULL
        assert c.execute("SELECT pages / 100, -pages / 100, pages % 100 FROM books WHERE id = 10").fetchone() == (
            10, -10, 36)
        with pytest.raises(psycopg.errors.DivisionByZero):
            c.execute("SELECT price / 0 FROM books")
        # Unicode case mapping; casts with Postgres' rounding and spelling
        assert c.execute("SELECT upper(name), price::text, in_stock::text, (price * 2)::int "
                         "FROM authors, books WHERE authors.id = 14 AND books.id = 4").fetchone() == (
            "GABRIEL GARCÍA MÁRQUEZ", "9.50", "false", 19)
        # schema-qualified names, TABLE, OFFSET without LIMIT, FETCH FIRST
        assert c.execute("SELECT count(*) FROM public.books").fetchone() == (99,)
        assert len(c.execute("TABLE authors").fetchall()) == 30
        assert c.execute("SELECT id FROM books ORDER BY id OFFSET 97").fetchall() == [(98,), (99,)]
        assert c.execute("SELECT id FROM books ORDER BY price DESC, id FETCH FIRST 2 ROWS ONLY").fetchall() == [
            (71,), (89,)]


def test_bookstore_parameters_asyncpg(shipped):
    async def main():
        con = await apg(shipped)
        try:
            # $1 inside a string literal is text, not a parameter
            assert await con.fetchval("SELECT count(*) FROM books WHERE title <> '$1' AND id < $1", 10) == 9
            assert await con.fetchval("SELECT title FROM books WHERE title = '$1 and $2' OR id = $1", 8) == \
                "A Christmas Carol"
            # numbered out of order, and one used twice
            rows = await con.fetch("SELECT id, title FROM books WHERE price < $2 AND (author_id = $1 OR id = $1) "
                                   "ORDER BY id", 22, D("9.70"))
            assert [tuple(r) for r in rows] == [(78, "A Study in Scarlet"), (79, "The Sign of the Four"),
                                                (80, "The Hound of the Baskervilles")]
            # binary results of every column type
            r = await con.fetchrow("SELECT * FROM orders WHERE ordered_at >= $1 ORDER BY id LIMIT 1",
                                   datetime.datetime(2024, 12, 31, tzinfo=UTC))
            assert tuple(r) == (500, 53, "Dev", 1, datetime.datetime(2024, 12, 31, 22, 59, 24, tzinfo=UTC), None)
            r = await con.fetchrow("SELECT title, price, in_stock FROM books WHERE in_stock = $1 AND price > $2 "
                                   "ORDER BY price DESC LIMIT 1", False, D("15"))
            assert tuple(r) == ("Bleak House", D("15.99"), False)
            # a prepared statement: Describe before Bind, then Execute, agree on types
            stmt = await con.prepare("SELECT genre, avg(pages) AS avg_pages, max(pages) - min(pages) AS spread, "
                                     "count(*) * 1.5 AS weighted FROM books WHERE published < $1 "
                                     "GROUP BY genre ORDER BY genre LIMIT $2")
            assert [a.type.name for a in stmt.get_attributes()] == ["text", "numeric", "int4", "numeric"]
            rows = await stmt.fetch(1850, 2)
            assert [tuple(r) for r in rows] == [("gothic", D("369.75"), 281, D("6")),
                                                ("historical", D("940"), 0, D("1.5"))]
            # a column typed from its values, prepared before any value is
            # known (the Describe runs with NULL parameters: no rows), stays
            # text in the Execute that follows, so the client decodes it right
            stmt = await con.prepare("SELECT abs(born - 1900) AS x FROM authors WHERE id = $1")
            assert [a.type.name for a in stmt.get_attributes()] == ["text"]
            assert [tuple(r) for r in await stmt.fetch(1)] == [("125",)]
            assert await con.fetchval("SELECT coalesce(died, born) FROM authors WHERE id = $1", 17) == 1949
        finally:
            await con.close()
    run_async(main())


def test_bookstore_psql(shipped):
    out = psql(shipped, "-F", "|", "-c",
               "SELECT title, price FROM books WHERE author_id = 8 ORDER BY published")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["Mrs Dalloway|9.99", "To the Lighthouse|9.99", "Orlando|10.50",
                                       "A Room of One's Own|6.99", "The Waves|10.99"]
    out = psql(shipped, "-c", "SELECT nosuch FROM books")
    assert out.returncode != 0 and 'column "nosuch" does not exist' in out.stderr


@pytest.mark.parametrize("sql,sqlstate,message", [
    ("SELECT title FROM books WHERE published BETWEEN SYMMETRIC 1900 AND 1950", "42601",
     'syntax error at or near "1900"'),
    ("SELECT * FROM books JOIN nosuch ON true", "42P01", 'relation "nosuch" does not exist'),
    ("SELECT nosuch FROM books", "42703", 'column "nosuch" does not exist'),
    ("SELECT id FROM books, authors", "42702", 'column reference "id" is ambiguous'),
    ("SELECT no_such_function(title) FROM books", "42883", "function no_such_function does not exist"),
    ("SELECT title FROM books ORDER BY 5", "42P10", "ORDER BY position is not in select list (positions 1 to 1)"),
    ("SELECT DISTINCT ON (genre) title FROM books", "0A000", "DISTINCT ON is not supported"),
    ("SELECT ordered_at + interval '1 day' FROM orders", "0A000", "INTERVAL is not supported"),
    ("SELECT title FROM books WHERE title ~ 'War'", "0A000", "the operator ~ is not supported"),
    ("SELECT 'x'::int FROM books", "22P02", 'invalid input syntax for type integer: "x"'),
    ("CREATE TABLE books2 AS SELECT * FROM books", "0A000", "CREATE is not supported"),
])
def test_bookstore_errors(shipped, sql, sqlstate, message):
    with connect(shipped) as c:
        with pytest.raises(psycopg.Error) as e:
            c.execute(sql)
        assert e.value.sqlstate == sqlstate, (e.value.sqlstate, str(e.value))
        assert message in e.value.diag.message_primary
        # the session goes on
        assert c.execute("SELECT count(*) FROM authors").fetchone() == (30,)


def test_bookstore_statement_timeout_and_cancel(shipped):
    with connect(shipped) as c:
        c.execute("SET statement_timeout = '300ms'")
        start = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            c.execute("SELECT count(*) FROM orders a, orders b, orders c")
        assert time.monotonic() - start < 10
        c.execute("SET statement_timeout = 0")
        threading.Timer(0.3, c.cancel).start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            c.execute("SELECT count(*) FROM orders a, orders b, orders c")
        assert c.execute("SELECT count(*) FROM orders").fetchone() == (500,)


@pytest.fixture
def bookstore(riffq_factory):
    """A gateway of its own (its writes stay there), sqlite_engine only."""
    with clean_env():
        return riffq_factory(plugin_config(harness.free_port(), {"sqlite": SQLITE_ENGINE},
                                           [{"name": "bookstore", "to": "plugin:sqlite"}]))


def test_bookstore_writes(bookstore):
    with connect(bookstore) as c, connect(bookstore) as other:
        cur = c.execute("INSERT INTO authors (name, country, born) VALUES (%s, %s, %s), (%s, %s, %s)",
                        ("Octavia E. Butler", "United States", 1947, "Italo Calvino", "Italy", 1923))
        assert cur.statusmessage == "INSERT 0 2" and cur.rowcount == 2
        # another client of the same gateway sees it at once (ids assigned in order)
        assert other.execute("SELECT id, name, died FROM authors WHERE id > 30 ORDER BY id").fetchall() == [
            (31, "Octavia E. Butler", None), (32, "Italo Calvino", None)]
        cur = c.execute("INSERT INTO books (title, author_id, published, genre, pages, price) "
                        "VALUES (%s, %s, %s, %s, %s, %s)", ("Kindred", 31, 1979, "science fiction", 264, D("13.99")))
        assert cur.statusmessage == "INSERT 0 1"
        assert other.execute("SELECT id, in_stock, price FROM books WHERE title = 'Kindred'").fetchone() == (
            100, True, D("13.99"))
        cur = c.execute("UPDATE books SET price = price + 1, in_stock = %s WHERE author_id = %s", (False, 1))
        assert cur.statusmessage == "UPDATE 6" and cur.rowcount == 6
        assert other.execute("SELECT sum(price), bool_or_none FROM (SELECT price, NULL AS bool_or_none "
                             "FROM books WHERE author_id = 1 AND NOT in_stock) s").fetchone() == (D("60.96"), None)
        cur = c.execute("INSERT INTO orders (book_id, customer, quantity, ordered_at) VALUES (%s, %s, %s, %s)",
                        (100, "Zoe", 2, datetime.datetime(2025, 1, 2, 12, 0, tzinfo=datetime.timezone(
                            datetime.timedelta(hours=2)))))
        assert cur.rowcount == 1
        # stored in UTC, compared in time order
        assert other.execute("SELECT id, ordered_at FROM orders WHERE ordered_at > %s",
                             (datetime.datetime(2025, 1, 2, 9, 59, tzinfo=UTC),)).fetchall() == [
            (501, datetime.datetime(2025, 1, 2, 10, 0, tzinfo=UTC))]
        cur = c.execute("DELETE FROM orders WHERE customer = %s AND book_id = %s", ("Zoe", 100))
        assert cur.statusmessage == "DELETE 1"
        cur = c.execute("DELETE FROM orders WHERE id < 0")
        assert cur.statusmessage == "DELETE 0"
        # upsert, as Postgres spells it
        cur = c.execute("INSERT INTO authors (id, name) VALUES (31, 'Octavia Butler') "
                        "ON CONFLICT (id) DO UPDATE SET name = excluded.name")
        assert cur.rowcount == 1
        assert other.execute("SELECT name FROM authors WHERE id = 31").fetchone() == ("Octavia Butler",)
        # constraints, with Postgres' SQLSTATEs
        for sql, exc, msg in [
            ("INSERT INTO authors (id, name) VALUES (1, 'Someone')", psycopg.errors.UniqueViolation,
             'duplicate key value violates unique constraint "authors_pkey"'),
            ("INSERT INTO authors (name) VALUES ('Jane Austen')", psycopg.errors.UniqueViolation,
             'duplicate key value violates unique constraint "authors_name_key"'),
            ("INSERT INTO books (title, author_id, price) VALUES (NULL, 1, 5)", psycopg.errors.NotNullViolation,
             'null value in column "title" of relation "books" violates not-null constraint'),
            ("INSERT INTO books (title, author_id, price) VALUES ('T', 999, 5)",
             psycopg.errors.ForeignKeyViolation, "foreign key"),
            ("UPDATE orders SET quantity = 0 WHERE id = 1", psycopg.errors.CheckViolation,
             'violates check constraint "orders_quantity_check"'),
            ("UPDATE books SET pages = 'many' WHERE id = 1", psycopg.errors.InvalidTextRepresentation,
             "invalid input syntax for type integer"),
            ("UPDATE books SET in_stock = 'maybe' WHERE id = 1", psycopg.errors.InvalidTextRepresentation,
             "invalid input syntax for type boolean"),
            ("INSERT INTO authors (name) VALUES ('X') RETURNING id", psycopg.errors.FeatureNotSupported,
             "RETURNING"),
        ]:
            with pytest.raises(exc) as e:
                c.execute(sql)
            assert msg in e.value.diag.message_primary, sql
        assert other.execute("SELECT count(*) FROM authors").fetchone() == (32,)
        assert other.execute("SELECT count(*), sum(quantity) FROM orders").fetchone() == (500, 792)


def test_bookstore_concurrent_writers(bookstore):
    """Handlers run on several worker threads; the shared database is
    locked, so concurrent INSERTs all land, with distinct ids."""
    errors = []

    def writer(k):
        try:
            with connect(bookstore) as c:
                for i in range(25):
                    c.execute("INSERT INTO orders (book_id, customer, quantity, ordered_at) "
                              "VALUES (%s, %s, 1, now())", (1 + (k * 25 + i) % 99, f"w{k}"))
                    c.execute("SELECT count(*) FROM orders WHERE customer = %s", (f"w{k}",))
        except Exception as e:      # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    with connect(bookstore) as c:
        assert c.execute("SELECT count(*), count(DISTINCT id), max(id) FROM orders").fetchone() == (700, 700, 700)
        assert c.execute("SELECT customer, count(*) FROM orders WHERE customer LIKE 'w%' GROUP BY customer "
                         "ORDER BY customer").fetchall() == [(f"w{k}", 25) for k in range(8)]


# Queries whose answers (rows, column names and column types) must be
# Postgres' own, compared on the same data.
SAME_AS_POSTGRES = [
    "SELECT * FROM authors ORDER BY id",
    "SELECT * FROM books ORDER BY id",
    "SELECT * FROM orders ORDER BY id",
    "SELECT genre, count(*), sum(pages), avg(pages), sum(price), avg(price), min(price), max(published) "
    "FROM books GROUP BY genre ORDER BY genre",
    "SELECT name, died FROM authors ORDER BY died, name",
    "SELECT name, died FROM authors ORDER BY died DESC, name",
    "SELECT title FROM books WHERE title LIKE '%of%' ORDER BY title",
    "SELECT title FROM books WHERE title ILIKE 'THE%' ORDER BY id",
    "SELECT title FROM books WHERE title NOT LIKE '%e%' ORDER BY id",
    "SELECT id, price, price::int, price * 2, pages / 7, pages % 7, -pages / 7, pages::float8 / 3 "
    "FROM books ORDER BY id",
    "SELECT b.title, sum(o.quantity) AS sold, sum(o.quantity * b.price) AS revenue FROM orders o "
    "JOIN books b ON b.id = o.book_id GROUP BY b.title HAVING sum(o.quantity) >= 10 "
    "ORDER BY revenue DESC, b.title",
    "SELECT customer, count(*), min(ordered_at), max(ordered_at), max(shipped_on) FROM orders "
    "GROUP BY customer ORDER BY customer",
    "SELECT count(*) FILTER (WHERE shipped_on IS NULL), count(shipped_on), count(DISTINCT book_id) "
    "FROM orders",
    "SELECT title, published FROM books WHERE published BETWEEN 1900 AND 1950 "
    "ORDER BY published, title LIMIT 5 OFFSET 3",
    "SELECT country, count(*) FROM authors GROUP BY country HAVING count(*) > 1 ORDER BY 2 DESC, 1",
    "WITH best AS (SELECT book_id, sum(quantity) AS q FROM orders GROUP BY book_id) "
    "SELECT b.title, best.q FROM best JOIN books b ON b.id = best.book_id ORDER BY best.q DESC, b.title "
    "LIMIT 5",
    "SELECT title FROM books WHERE author_id IN (SELECT id FROM authors WHERE country = 'Russia') "
    "ORDER BY title",
    "SELECT a.name FROM authors a WHERE NOT EXISTS (SELECT 1 FROM books b WHERE b.author_id = a.id "
    "AND NOT b.in_stock) ORDER BY a.name",
    # (ASCII names: the test cluster's locale is C, where upper('í') is 'í')
    "SELECT upper(name), lower(name), length(name) FROM authors WHERE id IN (1, 5) ORDER BY id",
    "SELECT CASE WHEN price >= 15 THEN 'premium' WHEN price >= 10 THEN 'standard' ELSE 'budget' END AS tier, "
    "count(*) FROM books GROUP BY tier ORDER BY tier",
    "SELECT title, price FROM books ORDER BY price DESC, id FETCH FIRST 3 ROWS ONLY",
    "SELECT ordered_at::date AS day, count(*) FROM orders GROUP BY day ORDER BY count(*) DESC, day LIMIT 3",
    "SELECT id, in_stock, NOT in_stock, in_stock::text, price::text FROM books ORDER BY id LIMIT 5",
    "SELECT sum(price), max(price), min(price), sum(quantity) FROM books JOIN orders ON books.id = book_id",
    "SELECT rank() OVER (ORDER BY pages DESC) AS r, title FROM books ORDER BY 1, 2 LIMIT 5",
    "SELECT coalesce(died, 2024) - born AS age, name FROM authors ORDER BY age DESC, name LIMIT 3",
    "SELECT a.country, b.genre, count(*) FROM books b JOIN authors a ON a.id = b.author_id "
    "WHERE b.published >= 1900 GROUP BY a.country, b.genre ORDER BY 3 DESC, 1, 2 LIMIT 6",
    "SELECT title FROM books WHERE lower(title) LIKE '%the %' AND price < 10 ORDER BY title",
    "SELECT id, title FROM books WHERE title LIKE '%''%' ORDER BY id",
    "SELECT count(*), sum(price * 3) FROM books WHERE price * 3 = 38.97",
    "SELECT genre, max(price) - min(price) AS spread FROM books GROUP BY genre ORDER BY spread DESC, genre "
    "LIMIT 4",
    "SELECT customer, sum(quantity) FILTER (WHERE shipped_on IS NOT NULL) AS shipped FROM orders "
    "GROUP BY customer ORDER BY shipped DESC, customer LIMIT 5",
]


def test_bookstore_answers_match_postgres(shipped, pg_cluster):
    """Load the bookstore into PostgreSQL 15 and compare every answer."""
    with connect(shipped) as rq, psycopg.connect(pg_cluster.dsn(), autocommit=True) as pg:
        pg.execute("DROP SCHEMA IF EXISTS shipped_bookstore CASCADE")
        pg.execute("CREATE SCHEMA shipped_bookstore")
        pg.execute("SET search_path = shipped_bookstore")
        pg.execute("CREATE TABLE authors (id int8 PRIMARY KEY, name text NOT NULL UNIQUE, country text, "
                   "born int4, died int4)")
        pg.execute("CREATE TABLE books (id int8 PRIMARY KEY, title text NOT NULL, author_id int8 NOT NULL, "
                   "published int4, genre text, pages int4, price numeric(6,2) NOT NULL, in_stock bool NOT NULL)")
        pg.execute("CREATE TABLE orders (id int8 PRIMARY KEY, book_id int8 NOT NULL, customer text NOT NULL, "
                   "quantity int4 NOT NULL, ordered_at timestamptz NOT NULL, shipped_on date)")
        pg.execute("SET TimeZone = 'UTC'")
        for table in ("authors", "books", "orders"):
            rows = rq.execute(f"SELECT * FROM {table}").fetchall()
            marks = ", ".join(["%s"] * len(rows[0]))
            with pg.cursor() as cur:
                cur.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
        try:
            for sql in SAME_AS_POSTGRES:
                want = pg.execute(sql)
                want_types = [d.type_code for d in want.description]
                want_names = [d.name for d in want.description]
                want_rows = want.fetchall()
                got = rq.execute(sql)
                assert [d.name for d in got.description] == want_names, sql
                assert [d.type_code for d in got.description] == want_types, sql
                got_rows = got.fetchall()
                assert len(got_rows) == len(want_rows), sql
                for g, w in zip(got_rows, want_rows):
                    assert same_row(g, w), f"{sql}\n riffq:    {g}\n postgres: {w}"
        finally:
            pg.execute("DROP SCHEMA shipped_bookstore CASCADE")


def same_row(got, want):
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        if isinstance(w, (D, float)) and isinstance(g, (D, float, int)) and not isinstance(g, bool):
            # avg(): Postgres shows 20 significant digits, SQLite has 15
            if abs(D(str(g)) - D(str(w))) > abs(D(str(w))) * D("1e-13") + D("1e-13"):
                return False
        elif g != w:
            return False
    return True


# ---------------------------------------------------------------------------
# http_source
# ---------------------------------------------------------------------------

COUNTRIES = [
    {"code": "FR", "name": "France", "continent": "Europe", "capital": "Paris", "population": 67935660,
     "area_km2": 643801, "currency": "EUR", "landlocked": False, "un_member_since": "1945-10-24"},
    {"code": "CH", "name": "Switzerland", "continent": "Europe", "capital": "Bern", "population": 8775760,
     "area_km2": 41285.5, "currency": "CHF", "landlocked": True, "un_member_since": "2002-09-10"},
    {"code": "XK", "name": "Kosovo", "continent": "Europe", "capital": "Pristina", "population": 1761985,
     "area_km2": 10887, "currency": "EUR", "landlocked": True, "un_member_since": None},
    {"code": "JP", "name": "Japan", "continent": "Asia", "capital": "Tokyo", "population": 125124989,
     "area_km2": 377975, "currency": "JPY", "landlocked": False, "un_member_since": "1956-12-18"},
    {"code": "IS", "name": "Iceland", "continent": "Europe", "capital": "Reykjavík", "population": 382003,
     "currency": "ISK", "landlocked": False, "un_member_since": "1946-11-19"},
]


class DocServer:
    """http.server on a free loopback port, in a thread.  docs: path ->
    (bytes, content type); answers If-None-Match with 304; counts GETs."""

    def __init__(self):
        self.docs = {}
        self.requests = []      # (path, If-None-Match)
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                with server.lock:
                    server.requests.append((self.path, self.headers.get("If-None-Match")))
                    doc = server.docs.get(self.path)
                if doc is None:
                    self.send_error(404, "Not Found")
                    return
                body, ctype = doc
                etag = '"%x"' % (hash(body) & 0xffffffff)
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", etag)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def put(self, path, doc, ctype="application/json"):
        with self.lock:
            self.docs[path] = (doc if isinstance(doc, bytes) else json.dumps(doc).encode(), ctype)

    def gets(self, path):
        with self.lock:
            return [r for r in self.requests if r[0] == path]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def docs():
    d = DocServer()
    yield d
    d.close()


@pytest.fixture
def http_gateway(riffq_factory):
    """start(url, ttl=60, timeout=5) -> a gateway serving countries from url."""
    def start(url, ttl=60, timeout=5):
        with clean_env(RIFFQ_HTTP_SOURCE_URL=url, RIFFQ_HTTP_SOURCE_TTL=ttl, RIFFQ_HTTP_SOURCE_TIMEOUT=timeout):
            return riffq_factory(plugin_config(harness.free_port(), {"http": HTTP_SOURCE},
                                               [{"name": "countries", "to": "plugin:http"}]))
    return start


def test_http_source_rows_filters_and_types(docs, http_gateway):
    docs.put("/countries.json", COUNTRIES)
    srv = http_gateway(docs.url("/countries.json"))
    with connect(srv) as c:
        for binary in (False, True):
            cur = c.cursor(binary=binary)
            cur.execute("SELECT * FROM countries ORDER BY code")
            assert [(d.name, d.type_code) for d in cur.description] == [
                ("code", TEXT), ("name", TEXT), ("continent", TEXT), ("capital", TEXT), ("population", INT8),
                ("area_km2", FLOAT8), ("currency", TEXT), ("landlocked", BOOL), ("un_member_since", DATE)]
            assert cur.fetchall() == [
                ("CH", "Switzerland", "Europe", "Bern", 8775760, 41285.5, "CHF", True, datetime.date(2002, 9, 10)),
                ("FR", "France", "Europe", "Paris", 67935660, 643801.0, "EUR", False, datetime.date(1945, 10, 24)),
                ("IS", "Iceland", "Europe", "Reykjavík", 382003, None, "ISK", False, datetime.date(1946, 11, 19)),
                ("JP", "Japan", "Asia", "Tokyo", 125124989, 377975.0, "JPY", False, datetime.date(1956, 12, 18)),
                ("XK", "Kosovo", "Europe", "Pristina", 1761985, 10887.0, "EUR", True, None)]
            # projection, equality, comparisons, ORDER BY, LIMIT, parameters
            cur.execute("SELECT name FROM countries WHERE code = %s", ("JP",))
            assert cur.fetchall() == [("Japan",)]
            cur.execute("SELECT code, population FROM countries WHERE population >= %s AND continent = %s "
                        "ORDER BY population DESC", (1_000_000, "Europe"))
            assert cur.fetchall() == [("FR", 67935660), ("CH", 8775760), ("XK", 1761985)]
            cur.execute("SELECT code FROM countries WHERE un_member_since < %s ORDER BY un_member_since LIMIT 2",
                        (datetime.date(1950, 1, 1),))
            assert cur.fetchall() == [("FR",), ("IS",)]
            cur.execute("SELECT code FROM countries WHERE landlocked ORDER BY un_member_since DESC, code")
            assert cur.fetchall() == [("XK",), ("CH",)]      # NULL first when descending
            cur.execute("SELECT code FROM countries WHERE name <> 'France' AND area_km2 > 20000 ORDER BY 1")
            assert cur.fetchall() == [("CH",), ("JP",)]
            cur.execute("SELECT continent, count(*), sum(population) FROM countries GROUP BY continent "
                        "ORDER BY continent")
            assert cur.fetchall() == [("Asia", 1, D(125124989)), ("Europe", 4, D(78855408))]

    async def main():
        con = await apg(srv)
        try:
            rows = await con.fetch("SELECT code, area_km2, landlocked, un_member_since FROM countries "
                                   "WHERE population < $1 ORDER BY code", 10_000_000)
            assert [tuple(r) for r in rows] == [("CH", 41285.5, True, datetime.date(2002, 9, 10)),
                                                ("IS", None, False, datetime.date(1946, 11, 19)),
                                                ("XK", 10887.0, True, None)]
        finally:
            await con.close()
    run_async(main())
    out = psql(srv, "-c", "SELECT capital FROM countries WHERE code = 'IS'")
    assert out.returncode == 0 and out.stdout.strip() == "Reykjavík", out.stderr


def test_http_source_csv(docs, http_gateway):
    docs.put("/c.csv", b"code,name,population,landlocked,un_member_since\n"
                       b"AT,Austria,9041851,true,1955-12-14\nVA,Vatican City,764,true,\n", "text/csv")
    srv = http_gateway(docs.url("/c.csv"))
    with connect(srv) as c:
        assert c.execute("SELECT code, name, population, landlocked, un_member_since, capital FROM countries "
                         "ORDER BY population").fetchall() == [
            ("VA", "Vatican City", 764, True, None, None),
            ("AT", "Austria", 9041851, True, datetime.date(1955, 12, 14), None)]


def test_http_source_cache_ttl(docs, http_gateway):
    docs.put("/countries.json", COUNTRIES)
    srv = http_gateway(docs.url("/countries.json"), ttl=2)
    with connect(srv) as c:
        assert c.execute("SELECT count(*) FROM countries").fetchone() == (5,)
        assert c.execute("SELECT count(*) FROM countries WHERE continent = 'Asia'").fetchone() == (1,)
        assert len(docs.gets("/countries.json")) == 1           # the second statement used the copy
        time.sleep(2.3)
        assert c.execute("SELECT count(*) FROM countries").fetchone() == (5,)
        gets = docs.gets("/countries.json")
        assert len(gets) == 2 and gets[1][1] is not None        # a conditional GET, answered 304
        docs.put("/countries.json", COUNTRIES + [{"code": "NZ", "name": "New Zealand", "continent": "Oceania"}])
        assert c.execute("SELECT count(*) FROM countries").fetchone() == (5,)   # still fresh
        time.sleep(2.3)
        assert c.execute("SELECT name FROM countries WHERE continent = 'Oceania'").fetchall() == [("New Zealand",)]
        assert len(docs.gets("/countries.json")) == 3


def test_http_source_unreachable(docs, http_gateway):
    closed = harness.free_port()            # nothing listens there
    url = f"http://127.0.0.1:{closed}/countries.json"
    srv = http_gateway(url, timeout=2)
    with connect(srv) as c:
        with pytest.raises(psycopg.errors.SqlclientUnableToEstablishSqlconnection) as e:
            c.execute("SELECT * FROM countries")
        assert url in e.value.diag.message_primary and "refused" in e.value.diag.message_primary
        # writes are refused before any fetch
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            c.execute("DELETE FROM countries")
        assert c.execute("SELECT 1").fetchone() == (1,)

    async def main():
        con = await apg(srv)
        try:
            # a Describe needs no fetch; the Execute reports the source
            stmt = await con.prepare("SELECT code, population FROM countries WHERE code = $1")
            assert [a.type.name for a in stmt.get_attributes()] == ["text", "int8"]
            with pytest.raises(asyncpg.PostgresError) as e:
                await stmt.fetch("FR")
            assert e.value.sqlstate == "08001" and url in str(e.value)
        finally:
            await con.close()
    run_async(main())


def test_http_source_http_errors_timeouts_and_bad_documents(docs, http_gateway):
    # 404
    srv = http_gateway(docs.url("/missing.json"))
    with connect(srv) as c:
        with pytest.raises(psycopg.Error) as e:
            c.execute("SELECT * FROM countries")
        assert e.value.sqlstate == "58030"
        assert docs.url("/missing.json") in e.value.diag.message_primary and "404" in e.value.diag.message_primary
    # a server that accepts and never answers
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        url = "http://127.0.0.1:%d/slow.json" % silent.getsockname()[1]
        srv = http_gateway(url, timeout=1)
        with connect(srv) as c:
            start = time.monotonic()
            with pytest.raises(psycopg.Error) as e:
                c.execute("SELECT * FROM countries")
            assert e.value.sqlstate == "08001" and "timed out" in e.value.diag.message_primary
            assert url in e.value.diag.message_primary
            assert time.monotonic() - start < 8
    finally:
        silent.close()
    # documents that are not what the table needs
    docs.put("/bad.json", [{"code": "FR", "name": "France", "population": "many"}])
    docs.put("/notjson.json", b"<html>oops</html>", "text/html")
    srv = http_gateway(docs.url("/bad.json"))
    with connect(srv) as c:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as e:
            c.execute("SELECT * FROM countries")
        assert 'row 1, column "population"' in e.value.diag.message_primary
    srv = http_gateway(docs.url("/notjson.json"))
    with connect(srv) as c:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as e:
            c.execute("SELECT * FROM countries")
        assert "not valid JSON" in e.value.diag.message_primary


def test_http_source_refuses_what_it_cannot_answer(docs, http_gateway):
    docs.put("/countries.json", COUNTRIES)
    srv = http_gateway(docs.url("/countries.json"))
    with connect(srv) as c:
        for sql, sqlstate in [
            ("INSERT INTO countries (code, name) VALUES ('NZ', 'New Zealand')", "25006"),
            ("UPDATE countries SET population = 0", "25006"),
            ("SELECT DISTINCT ON (continent) name FROM countries", "0A000"),
            ("SELECT name FROM countries ORDER BY population FETCH FIRST 1 ROWS WITH TIES", "0A000"),
            ("SELECT name FROM countries WHERE name SIMILAR TO 'F%'", "0A000"),
            ("SELECT name FROM countries WHERE population BETWEEN SYMMETRIC 10 AND 1", "0A000"),
            ("SELECT nosuch FROM countries", "42703"),
        ]:
            with pytest.raises(psycopg.Error) as e:
                c.execute(sql)
            assert e.value.sqlstate == sqlstate, (sql, str(e.value))
        assert c.execute("SELECT count(*) FROM countries").fetchone() == (5,)


# ---------------------------------------------------------------------------
# routes/default.json: the three shipped plugins side by side
# ---------------------------------------------------------------------------

def test_default_route_file_serves_every_shipped_plugin(shipped):
    with connect(shipped) as c:
        assert c.execute("SELECT count(*) FROM sales").fetchone() == (1000,)
        assert c.execute("SELECT count(*) FROM books").fetchone() == (99,)
        assert c.execute("SELECT name, capital, un_member_since FROM countries WHERE code = %s",
                         ("CH",)).fetchone() == ("Switzerland", "Bern", datetime.date(2002, 9, 10))
        assert c.execute("SELECT count(*) FROM countries").fetchone() == (41,)
        # tables of two plugins in one statement: refused, naming both routes
        with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
            c.execute("SELECT * FROM books JOIN countries ON true")
        assert "bookstore" in str(e.value) and "countries" in str(e.value)
