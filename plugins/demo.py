"""The demo plugin: Python data served as Postgres tables.

routes/default.json sends statements about the tables `sales` and
`customers` here, so after `make run`:

    psql "host=127.0.0.1 port=5433 user=riffq password=riffq" \
        -c "SELECT region, sum(amount) FROM sales GROUP BY region ORDER BY 2 DESC"

It shows the three things most plugins do:

1. Declare tables with riffq.register_table, so the router (and the
   emulated catalog: \\d, DBeaver, ...) know them.
2. Answer statements in a query handler.  Here the data lives in pandas
   DataFrames; `SELECT * FROM sales` returns the DataFrame itself (the
   gateway encodes numeric and datetime columns straight from numpy), and
   any other statement is run by SQLite over a copy of the data, so WHERE,
   ORDER BY, GROUP BY, LIMIT and joins work without writing a SQL engine.
3. Stream a result too large for memory: `SELECT * FROM events` yields
   10 million generated rows in batches, pulled only as fast as the client
   reads them.

Copy this file to start your own plugin; everything the gateway gives a
plugin is in the `riffq` module (see riffq.__doc__).
"""
import datetime
import decimal
import random
import re
import sqlite3
import threading

import riffq

try:
    import pandas as pd
except ImportError:     # the plugin still works, returning plain rows
    pd = None

# ---- the tables ----------------------------------------------------------

SALES_COLUMNS = [("id", "int8", False), ("region", "text"), ("amount", "numeric(12,2)"),
                 ("sold_at", "timestamptz")]
CUSTOMERS_COLUMNS = [("id", "int8", False), ("name", "text"), ("email", "text"), ("vip", "bool")]
EVENTS_COLUMNS = [("id", "int8", False), ("kind", "text"), ("value", "float8"),
                  ("at", "timestamptz")]
EVENTS_ROWS = 10_000_000

riffq.register_table("public", "sales", SALES_COLUMNS, primary_key="id",
                     comment="One row per sale (generated, deterministic)")
riffq.register_table("public", "customers", CUSTOMERS_COLUMNS, primary_key="id",
                     comment="Customers (generated, deterministic)")
riffq.register_table("public", "events", EVENTS_COLUMNS, primary_key="id",
                     comment="10 million generated rows, streamed")

TYPES = {name: typ for cols in (SALES_COLUMNS, CUSTOMERS_COLUMNS, EVENTS_COLUMNS)
         for name, typ, *_ in cols}

# ---- data: seeded, so every run (and every test) sees the same rows -------

REGIONS = ["north", "south", "east", "west", "central"]
FIRST = ["Ada", "Alan", "Barbara", "Claude", "Donald", "Edsger", "Frances", "Grace",
         "John", "Ken", "Leslie", "Margaret", "Niklaus", "Radia", "Tim", "Yukihiro"]
LAST = ["Lovelace", "Turing", "Liskov", "Shannon", "Knuth", "Dijkstra", "Allen",
        "Hopper", "McCarthy", "Thompson", "Lamport", "Hamilton", "Wirth", "Perlman"]
EPOCH = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
CENTS = decimal.Decimal("0.01")


def make_sales(n=1000, seed=42):
    rng = random.Random(seed)
    return [(i + 1,
             rng.choice(REGIONS),
             (decimal.Decimal(rng.randint(500, 500_000)) / 100).quantize(CENTS),
             EPOCH + datetime.timedelta(seconds=rng.randint(0, 365 * 24 * 3600)))
            for i in range(n)]


def make_customers(n=200, seed=7):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        rows.append((i + 1, f"{first} {last}",
                     f"{first.lower()}.{last.lower()}{i + 1}@example.com",
                     rng.random() < 0.2))
    return rows


SALES = make_sales()
CUSTOMERS = make_customers()

if pd is not None:
    SALES_DF = pd.DataFrame(SALES, columns=[c[0] for c in SALES_COLUMNS])
    SALES_DF["sold_at"] = pd.to_datetime(SALES_DF["sold_at"], utc=True)
    CUSTOMERS_DF = pd.DataFrame(CUSTOMERS, columns=[c[0] for c in CUSTOMERS_COLUMNS])
    WHOLE = {"sales": SALES_DF, "customers": CUSTOMERS_DF}
else:
    WHOLE = {}

# SQLite runs everything else.  Handlers run on several worker threads at
# once, so the one connection is shared under a lock.
DB = sqlite3.connect(":memory:", check_same_thread=False)
DB.execute("CREATE TABLE sales (id INTEGER PRIMARY KEY, region TEXT, amount REAL, sold_at TEXT)")
DB.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, email TEXT, vip INTEGER)")
DB.executemany("INSERT INTO sales VALUES (?, ?, ?, ?)",
               [(i, r, float(a), t.isoformat()) for i, r, a, t in SALES])
DB.executemany("INSERT INTO customers VALUES (?, ?, ?, ?)", CUSTOMERS)
DB_LOCK = threading.Lock()


class ExactSum:
    """sum() in decimal, as Postgres sums numeric: SQLite's float sum would
    show 548534.0699999998 where Postgres shows 548534.07."""
    def __init__(self):
        self.total = None

    def step(self, v):
        if v is not None:
            self.total = (self.total or 0) + decimal.Decimal(repr(v) if isinstance(v, float) else v)

    def finalize(self):
        if self.total is None:
            return None
        return int(self.total) if self.total == self.total.to_integral_value() else float(self.total)


class ExactAvg(ExactSum):
    def __init__(self):
        super().__init__()
        self.n = 0

    def step(self, v):
        super().step(v)
        self.n += v is not None

    def finalize(self):
        return None if self.total is None else float(self.total / self.n)


DB.create_aggregate("sum", 1, ExactSum)
DB.create_aggregate("avg", 1, ExactAvg)

# ---- the handler -----------------------------------------------------------

SELECT_ALL = re.compile(r"^\s*select\s+\*\s+from\s+(?:public\.)?(\w+)\s*;?\s*$", re.I)
EVENTS = re.compile(r"^\s*select\s+\*\s+from\s+(?:public\.)?events"
                    r"(?:\s+limit\s+(\d+))?\s*;?\s*$", re.I)


@riffq.query_handler
def handle(sql, params, ctx):
    if not re.match(r"^\s*(select|with|values)\b", sql, re.I):
        raise riffq.Error("25006", "the demo plugin's tables are read-only",
                          hint="Only SELECT statements are answered.")
    m = EVENTS.match(sql)
    if m:
        return stream_events(int(m.group(1)) if m.group(1) else EVENTS_ROWS)
    if re.search(r"\bevents\b", sql, re.I):
        raise riffq.Error("0A000", "the demo's events table only supports SELECT * [LIMIT n]",
                          hint="It is generated on the fly, not stored.")
    m = SELECT_ALL.match(sql)
    if m and m.group(1).lower() in WHOLE and not params:
        return WHOLE[m.group(1).lower()]          # a DataFrame: the fast path
    return run_in_sqlite(sql, params, ctx)


def stream_events(limit):
    """(Columns, generator of batches): nothing is built up front, and the
    gateway asks for the next batch only when the client has read the last."""
    def batches(size=10_000):
        rng = random.Random(1)
        kinds = ["click", "view", "buy"]
        for start in range(0, limit, size):
            n = min(size, limit - start)
            yield [(start + i + 1, kinds[(start + i) % 3], rng.random() * 100,
                    EPOCH + datetime.timedelta(seconds=start + i)) for i in range(n)]
    return riffq.Columns([c[:2] for c in EVENTS_COLUMNS]), batches()


def translate(sql):
    """Postgres SQL -> SQLite, lightly: enough for the demo's tables."""
    sql = re.sub(r"\bpublic\.", "", sql, flags=re.I)
    sql = re.sub(r"::\s*\w+(\s*\(\s*\d+(\s*,\s*\d+)?\s*\))?", "", sql)     # casts
    sql = re.sub(r"\bilike\b", "LIKE", sql, flags=re.I)                    # LIKE ignores case
    return re.sub(r"\$(\d+)", r"?\1", sql)                                # $1 -> ?1


def sqlite_value(v):
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return str(v)
    return v


def column_type(expr, values):
    """The Postgres type of a result column, from the SQLite expression that
    made it and its values."""
    name = expr.strip().lower()
    if name in TYPES:
        return TYPES[name]
    if re.match(r"^(sum|min|max|avg)\(.*\bamount\b", name):
        return "numeric"
    if re.match(r"^(min|max)\(.*\bsold_at\b", name):
        return "timestamptz"
    for v in values:
        if isinstance(v, bool):
            return "bool"
        if isinstance(v, int):
            return "int8"
        if isinstance(v, float):
            return "float8"
        if v is not None:
            return "text"
    return "int8" if name.startswith("count(") else "text"


def column_name(expr):
    """Postgres names an unaliased call after its function: sum(amount) -> sum."""
    m = re.match(r"^\s*(\w+)\s*\(.*\)\s*$", expr)
    return m.group(1).lower() if m else expr


# amounts are numeric(12, 2): shown with two decimals, like Postgres would
IN_CENTS = re.compile(r"^\s*(amount|(sum|min|max)\s*\(\s*amount\s*\))\s*$", re.I)


def python_value(typ, v, expr):
    """SQLite hands back text and numbers; give the declared types back."""
    if v is None:
        return None
    if typ.startswith("numeric"):
        d = decimal.Decimal(repr(v) if isinstance(v, float) else str(v))
        return d.quantize(CENTS) if IN_CENTS.match(expr) else d
    if typ == "timestamptz":
        return datetime.datetime.fromisoformat(v)
    if typ == "bool":
        return bool(v)
    return v


ERRORS = [("syntax error", "42601"), ("no such column", "42703"), ("no such table", "42P01"),
          ("no such function", "42883")]


def run_in_sqlite(sql, params, ctx):
    try:
        with DB_LOCK:
            cur = DB.execute(translate(sql), [sqlite_value(p) for p in params])
            if cur.description is None:
                raise riffq.Error("25006", "the demo plugin's tables are read-only")
            names = [d[0] for d in cur.description]
            rows = [] if ctx.get("describe") else cur.fetchall()
    except sqlite3.Error as e:
        text = str(e)
        state = next((s for k, s in ERRORS if k in text), "XX000")
        raise riffq.Error(state, text, hint="The demo plugin runs SQL on SQLite.") from None
    types = [column_type(n, [r[i] for r in rows]) for i, n in enumerate(names)]
    rows = [tuple(python_value(t, v, n) for t, v, n in zip(types, r, names)) for r in rows]
    names = [column_name(n) for n in names]
    columns = list(zip(names, types))
    if pd is not None:
        # a DataFrame with explicit column types: the types stay exact even
        # where pandas would widen them (an int column with NULLs -> float)
        return pd.DataFrame(rows, columns=names), columns
    return rows, columns
