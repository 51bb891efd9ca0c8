"""The sqlite_engine plugin: Postgres clients run SQL on SQLite, through riffq.

routes/default.json sends statements about the tables `authors`, `books` and
`orders` here, so after `make run`:

    psql "host=127.0.0.1 port=5433 user=riffq password=riffq" -c "
        SELECT a.name, count(*) AS books, sum(o.quantity) AS sold
        FROM orders o JOIN books b ON b.id = o.book_id JOIN authors a ON a.id = b.author_id
        GROUP BY a.name ORDER BY sold DESC LIMIT 5"

The data is a small bookstore catalogue: plugins/data/bookstore.json holds
the authors and books, and 500 orders are generated from a fixed seed when
the plugin is imported, into an in-memory SQLite database that every client
of the gateway process shares.  SELECT, INSERT, UPDATE and DELETE work
(each statement commits at once; see "Writes" below).  Set RIFFQ_SQLITE_PATH
to serve an SQLite file of your own instead: its tables are registered with
Postgres types read from their declared column types.

What the plugin does with a statement:

1. Translates the Postgres SQL to SQLite where the two differ, on tokens
   (never inside string literals): `$1` -> `?1`, `x::type` and
   `CAST(x AS type)` with Postgres' semantics, ILIKE, `/` and `%` (division
   by zero is an error, as in Postgres, not NULL), NULLS LAST/FIRST defaults
   in ORDER BY (Postgres sorts NULLs last), LIMIT/OFFSET/FETCH FIRST, and
   the `public.` schema.  LIKE is case-sensitive, as in Postgres.
   Constructs it cannot translate (DISTINCT ON, intervals, arrays, regular
   expression operators, ...) are refused with 0A000 rather than answered
   differently.
2. Types the result columns as Postgres would: plain columns keep their
   declared types (int8, numeric(6,2), bool, timestamptz, date...); casts,
   count/sum/avg/min/max of a column, comparisons and string functions get
   Postgres' result types; other expressions are typed from their values
   (int8, float8, text; text when every value is NULL).  A Describe
   (asyncpg's prepare) and the Execute that follows agree on the types.
3. Maps SQLite errors to SQLSTATEs: syntax 42601, no such table 42P01, no
   such column 42703, unique/primary key 23505, NOT NULL 23502, foreign
   key 23503, CHECK 23514, a value of the wrong type 22P02, anything else
   XX000 with SQLite's message.

Writes: one SQLite connection is shared by every client of the gateway
process, behind a lock (handlers run on several worker threads).  Each
statement commits when it ends: a client's BEGIN/ROLLBACK is answered by the
gateway and does not undo plugin writes.  INSERT ... RETURNING is refused
(0A000).  The in-memory data starts over when the gateway starts or reloads.

Imported as a plain module (`import sqlite_engine`, as plugins/http_source.py
does), this file is a library: the Engine class below, with no tables.
"""
import collections
import datetime
import decimal
import functools
import json
import os
import random
import re
import sqlite3
import threading
import uuid

import riffq

HERE = os.path.dirname(os.path.abspath(__file__))

# ===========================================================================
# Postgres SQL as a tree of tokens
# ===========================================================================

_LEX = re.compile(r"""
  (?P<ws>(?:\s+|--[^\n]*|/\*.*?\*/)+)
| (?P<bad>[eEbBxX]'|[uU]&['"]|\$(?:[A-Za-z_][A-Za-z_0-9]*)?\$)
| (?P<str>'(?:[^']|'')*')
| (?P<qident>"(?:[^"]|"")+")
| (?P<param>\$[0-9]+)
| (?P<num>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
| (?P<ident>[^\W\d]\w*)
| (?P<op>::|<=|>=|<>|!=|\|\||->>|->|!~~\*|~~\*|!~~|~~|!~\*|!~|~\*|@>|<@|&&|<<|>>|[-+*/%<>=~!@#^&|`?])
| (?P<punct>[(),;.\[\]])
""", re.S | re.X)

# operators SQLite has with Postgres' meaning; :: is rewritten, the rest refused
_SAFE_OPS = {"=", "<", ">", "<=", ">=", "<>", "!=", "||", "+", "-", "*", "/", "%", "::"}

KEYWORDS = frozenset("""
ALL AND ANY AS ASC BETWEEN BY CASE CAST COLLATE CONFLICT CROSS DEFAULT DELETE DESC DISTINCT DO
ELSE END ESCAPE EXCEPT EXISTS FALSE FETCH FILTER FIRST FOR FROM FULL GROUP GROUPS HAVING ILIKE
IN INNER INSERT INTERSECT INTO IS ISNULL JOIN LAST LATERAL LEFT LIKE LIMIT NATURAL NOT NOTHING
NOTNULL NULL NULLS OFFSET ON ONLY OR ORDER OUTER OVER PARTITION PRECISION RANGE RECURSIVE
RETURNING RIGHT ROWS SELECT SET SIMILAR SOME TABLE THEN TRUE UNION UPDATE USING VALUES VARYING
WHEN WHERE WINDOW WITH WITHOUT ZONE
""".split())

# clause keywords that end a select list / an ORDER BY / LIMIT expression
_CLAUSE_END = frozenset("""FROM WHERE GROUP HAVING ORDER LIMIT OFFSET FETCH UNION EXCEPT
INTERSECT WINDOW INTO FOR RETURNING ON""".split())
# what may precede / follow an operand that we rewrite as a whole
_LEFT_BOUND = frozenset("WHERE AND OR NOT ON HAVING WHEN THEN ELSE SELECT CASE".split())
_RIGHT_BOUND = frozenset("""AND OR THEN ELSE END WHEN ORDER GROUP LIMIT OFFSET HAVING UNION
EXCEPT INTERSECT AS FROM WINDOW ASC DESC FETCH""".split())


class Tok:
    __slots__ = ("kind", "text", "pre")

    def __init__(self, kind, text, pre=" "):
        self.kind, self.text, self.pre = kind, text, pre

    @property
    def up(self):
        return self.text.upper() if self.kind == "ident" else None

    def __repr__(self):
        return f"Tok({self.kind}, {self.text!r})"


class Group:
    """( items )"""
    __slots__ = ("items", "pre")

    def __init__(self, items, pre=" "):
        self.items, self.pre = items, pre

    def __repr__(self):
        return f"Group({self.items!r})"


class _NoOperand(Exception):
    pass


class Unsupported(Exception):
    """A Postgres construct the SQLite translation cannot answer exactly."""


def parse_tree(sql):
    root = Group([], "")
    stack = [root]
    pre = ""
    pos = 0
    n = len(sql)
    while pos < n:
        m = _LEX.match(sql, pos)
        if not m:
            c = sql[pos]
            if c in "'\"":
                raise riffq.Error("42601", "unterminated quoted string" if c == "'"
                                  else "unterminated quoted identifier")
            raise riffq.Error("42601", f'syntax error at or near "{c}"')
        pos = m.end()
        kind, text = m.lastgroup, m.group()
        if kind == "ws":
            pre = " "
            continue
        if kind == "bad":
            what = "dollar-quoted strings" if text.startswith("$") else f"{text[:-1]}'...' string constants"
            raise Unsupported(what)
        if kind == "op" and text not in _SAFE_OPS:
            raise Unsupported(f"the operator {text}")
        if text == "(":
            g = Group([], pre)
            stack[-1].items.append(g)
            stack.append(g)
        elif text == ")":
            if len(stack) == 1:
                raise riffq.Error("42601", 'syntax error at or near ")"')
            stack.pop()
        else:
            stack[-1].items.append(Tok(kind, text, pre))
        pre = ""
    if len(stack) != 1:
        raise riffq.Error("42601", "syntax error at end of input")
    return root.items


def emit(items):
    out = []

    def walk(items, first):
        for it in items:
            if it.pre and not first:
                out.append(" ")
            first = False
            if isinstance(it, Group):
                out.append("(")
                walk(it.items, True)
                out.append(")")
            else:
                out.append(it.text)
    walk(items, True)
    return "".join(out)


def kw(it, *words):
    return isinstance(it, Tok) and it.kind == "ident" and it.text.upper() in words


def punct(it, p):
    return isinstance(it, Tok) and it.kind in ("punct", "op") and it.text == p


def is_name(it):
    return isinstance(it, Tok) and (it.kind == "qident" or (it.kind == "ident" and it.text.upper() not in KEYWORDS))


def ident_value(it):
    """Postgres folds unquoted names to lower case."""
    if it.kind == "qident":
        return it.text[1:-1].replace('""', '"')
    return it.text.lower()


def groups_in(items):
    for it in items:
        if isinstance(it, Group):
            yield it


def split_commas(items):
    parts, cur = [], []
    for it in items:
        if punct(it, ","):
            parts.append(cur)
            cur = []
        else:
            cur.append(it)
    parts.append(cur)
    return parts


def case_end(items, i):
    """items[i] is CASE: the index of its END."""
    depth = 0
    for j in range(i, len(items)):
        if kw(items[j], "CASE"):
            depth += 1
        elif kw(items[j], "END"):
            depth -= 1
            if depth == 0:
                return j
    raise riffq.Error("42601", "syntax error at end of input")


def primary_start(items, end):
    """Start index of the operand (a primary expression) that ends at
    items[end], or None."""
    if end < 0:
        return None
    it = items[end]
    if isinstance(it, Group):
        i = end
        if i > 0 and (is_name(items[i - 1]) or kw(items[i - 1], "CAST", "EXISTS", "LEFT", "RIGHT")):
            i -= 1
            while i >= 2 and punct(items[i - 1], ".") and is_name(items[i - 2]):
                i -= 2
        return i
    if kw(it, "END"):
        depth = 0
        for j in range(end, -1, -1):
            if kw(items[j], "END"):
                depth += 1
            elif kw(items[j], "CASE"):
                depth -= 1
                if depth == 0:
                    return j
        return None
    if isinstance(it, Tok) and (it.kind in ("str", "num", "param") or is_name(it)
                                 or kw(it, "TRUE", "FALSE", "NULL")):
        i = end
        if is_name(it):
            while i >= 2 and punct(items[i - 1], ".") and is_name(items[i - 2]):
                i -= 2
        return i
    return None


def primary_end(items, start):
    """End index (inclusive) of the operand that starts at items[start]
    (with unary signs), or None."""
    if start >= len(items):
        return None
    it = items[start]
    if punct(it, "-") or punct(it, "+"):
        return primary_end(items, start + 1)
    if isinstance(it, Group):
        return start
    if kw(it, "CASE"):
        return case_end(items, start)
    if kw(it, "CAST", "EXISTS") and start + 1 < len(items) and isinstance(items[start + 1], Group):
        return start + 1
    if isinstance(it, Tok) and it.kind in ("str", "num", "param") or kw(it, "TRUE", "FALSE", "NULL"):
        return start
    if is_name(it) or kw(it, "LEFT", "RIGHT"):
        i = start
        while i + 2 < len(items) and punct(items[i + 1], ".") and is_name(items[i + 2]):
            i += 2
        if i + 1 < len(items) and isinstance(items[i + 1], Group):
            i += 1
            # aggregate FILTER (...) and window OVER (...)/OVER name
            while i + 1 < len(items) and kw(items[i + 1], "FILTER", "OVER"):
                if i + 2 < len(items) and (isinstance(items[i + 2], Group) or is_name(items[i + 2])):
                    i += 2
                else:
                    break
        return i
    return None


# ---- Postgres types ---------------------------------------------------------

# type names in casts, as Postgres resolves them
PG_TYPE_NAMES = {
    "int": "int4", "integer": "int4", "int4": "int4", "smallint": "int2", "int2": "int2",
    "bigint": "int8", "int8": "int8", "real": "float4", "float4": "float4",
    "double precision": "float8", "float8": "float8", "float": "float8",
    "numeric": "numeric", "decimal": "numeric", "text": "text", "varchar": "varchar",
    "character varying": "varchar", "char": "bpchar", "character": "bpchar", "bpchar": "bpchar",
    "bool": "bool", "boolean": "bool", "date": "date", "timestamp": "timestamp",
    "timestamp without time zone": "timestamp", "timestamptz": "timestamptz",
    "timestamp with time zone": "timestamptz", "name": "text",
}

# declared column types (SQLite side) -> Postgres
_DECL_TYPES = {
    "integer": "int8", "int": "int8", "bigint": "int8", "int8": "int8", "int4": "int4",
    "int2": "int2", "smallint": "int2", "real": "float8", "double": "float8",
    "double precision": "float8", "float": "float8", "float8": "float8", "float4": "float4",
    "text": "text", "varchar": "varchar", "character varying": "varchar", "clob": "text",
    "blob": "bytea", "bytea": "bytea", "bool": "bool", "boolean": "bool", "date": "date",
    "timestamp": "timestamp", "datetime": "timestamp", "timestamptz": "timestamptz",
    "numeric": "numeric", "decimal": "numeric", "json": "json", "jsonb": "jsonb", "uuid": "uuid",
}

INT_TYPES = ("int2", "int4", "int8")
FLOAT_TYPES = ("float4", "float8")


def pg_type_of_decl(decl):
    """A column's declared SQLite type -> its Postgres type (None: no
    declared type, e.g. an expression)."""
    d = " ".join((decl or "").lower().split())
    if not d:
        return None
    base, _, mod = d.partition("(")
    base = base.strip()
    if base in _DECL_TYPES:
        t = _DECL_TYPES[base]
        if t in ("numeric", "varchar") and mod:
            return f"{t}({mod.strip().rstrip(')').replace(' ', '')})"
        return t
    # SQLite's own affinity rules
    if "int" in d:
        return "int8"
    if any(k in d for k in ("char", "clob", "text")):
        return "text"
    if "blob" in d:
        return "bytea"
    if any(k in d for k in ("real", "floa", "doub")):
        return "float8"
    return "numeric"


def numeric_scale(pgtype):
    m = re.match(r"numeric\(\s*\d+\s*,\s*(\d+)\s*\)", pgtype or "")
    return int(m.group(1)) if m else None


def parse_type(items, i):
    """A type name in a cast starting at items[i]: (pg type, index after)."""
    words = []
    j = i
    if j + 2 < len(items) and kw(items[j], "PG_CATALOG") and punct(items[j + 1], "."):
        j += 2
    while j < len(items) and isinstance(items[j], Tok) and items[j].kind in ("ident", "qident"):
        w = ident_value(items[j])
        cand = " ".join(words + [w])
        if words and not any(k.startswith(cand) for k in PG_TYPE_NAMES):
            break
        words.append(w)
        j += 1
        if not any(k.startswith(" ".join(words) + " ") for k in PG_TYPE_NAMES):
            break
    name = " ".join(words)
    mod = None
    if j < len(items) and isinstance(items[j], Group) and name in PG_TYPE_NAMES:
        mod = emit(items[j].items).replace(" ", "")
        j += 1
        # timestamp(3) with time zone
        rest = []
        k = j
        while k < len(items) and kw(items[k], "WITH", "WITHOUT", "TIME", "ZONE"):
            rest.append(items[k].text.lower())
            k += 1
        if rest:
            name = name + " " + " ".join(rest)
            j = k
    if j < len(items) and punct(items[j], "["):
        raise Unsupported("arrays")
    if name not in PG_TYPE_NAMES:
        raise Unsupported(f"casts to {name or 'this type'}")
    t = PG_TYPE_NAMES[name]
    if t == "numeric" and mod:
        t = f"numeric({mod})"
    return t, j


# ---- the translation ----------------------------------------------------------

_CAST_FUNCS = {"int2": "pg_int2", "int4": "pg_int4", "int8": "pg_int8", "float4": "pg_float8",
               "float8": "pg_float8", "bool": "pg_bool", "date": "pg_date",
               "timestamp": "pg_timestamp", "timestamptz": "pg_timestamptz",
               "text": "pg_text", "varchar": "pg_text", "bpchar": "pg_text"}


def fn_call(name, args):
    """name(args...) as tree items; args: lists of items."""
    inner = []
    for k, a in enumerate(args):
        if k:
            inner.append(Tok("punct", ",", ""))
        inner.extend(a)
    return [Tok("ident", name), Group(inner, "")]


class Translator:
    """Postgres statement text -> SQLite statement text.  `coltypes` maps a
    column name to its Postgres type where the tables agree on it (for
    casts of bool and numeric columns to text)."""

    def __init__(self, coltypes):
        self.coltypes = coltypes

    def operand_type(self, items):
        if len(items) in (1, 3) and is_name(items[-1]) and (len(items) == 1 or punct(items[1], ".")):
            return self.coltypes.get(ident_value(items[-1]))
        return None

    def cast(self, operand, pgtype):
        if pgtype.startswith("numeric"):
            scale = numeric_scale(pgtype)
            args = [operand] + ([[Tok("num", str(scale))]] if scale is not None else [])
            return fn_call("pg_numeric", args)
        fn = _CAST_FUNCS[pgtype]
        if fn == "pg_text":
            src = self.operand_type(operand)
            if src == "bool":
                return fn_call("pg_bool_text", [operand])
            if src and src.startswith("numeric") and numeric_scale(src) is not None:
                return fn_call("pg_numeric_text", [operand, [Tok("num", str(numeric_scale(src)))]])
        return fn_call(fn, [operand])

    def rewrite(self, items, top=False):
        for g in groups_in(items):
            self.rewrite(g.items)
        self.strip_public(items)
        self.check_unsupported(items)
        self.casts(items)
        self.likes(items)
        self.arithmetic(items)
        self.order_by(items)
        self.limits(items)
        self.aliases(items)
        if top and items and kw(items[0], "TABLE"):
            items[0:1] = [Tok("ident", "SELECT", ""), Tok("op", "*"), Tok("ident", "FROM")]
        return items

    def aliases(self, items):
        """AS name -> AS "name": Postgres folds it to lower case, and SQLite
        refuses some names that Postgres takes (AS nothing, AS action)."""
        for i in range(len(items) - 1):
            if kw(items[i], "AS") and isinstance(items[i + 1], Tok) and items[i + 1].kind == "ident" \
                    and not kw(items[i + 1], "NOT", "MATERIALIZED"):
                items[i + 1].text = '"%s"' % items[i + 1].text.lower()

    def strip_public(self, items):
        i = 0
        while i + 2 < len(items):
            it = items[i]
            if (isinstance(it, Tok) and it.kind in ("ident", "qident") and ident_value(it) == "public"
                    and punct(items[i + 1], ".") and is_name(items[i + 2])
                    and not (i > 0 and punct(items[i - 1], "."))):
                items[i + 2].pre = it.pre
                del items[i:i + 2]
            i += 1

    def check_unsupported(self, items):
        for i, it in enumerate(items):
            if not (isinstance(it, Tok) and it.kind == "ident"):
                if punct(it, "["):
                    raise Unsupported("array subscripts")
                continue
            u = it.text.upper()
            if u == "DISTINCT" and i + 1 < len(items) and kw(items[i + 1], "ON"):
                raise Unsupported("DISTINCT ON")
            if u in ("INTERVAL", "ARRAY", "SIMILAR", "EXTRACT", "OVERLAPS", "TABLESAMPLE"):
                raise Unsupported(u)
            if u == "AT" and i + 2 < len(items) and kw(items[i + 1], "TIME") and kw(items[i + 2], "ZONE"):
                raise Unsupported("AT TIME ZONE")
            if u == "FOR" and i + 1 < len(items) and kw(items[i + 1], "UPDATE", "SHARE", "NO", "KEY"):
                raise Unsupported("row locking (FOR UPDATE/SHARE)")
            if u == "RETURNING":
                raise Unsupported("RETURNING (a plugin cannot return rows with an INSERT/UPDATE/DELETE tag)")
            if u in ("TIMESTAMP", "TIMESTAMPTZ", "DATE") and i + 1 < len(items) \
                    and isinstance(items[i + 1], Tok) and items[i + 1].kind == "str" \
                    and not (i > 0 and punct(items[i - 1], "::")):
                # DATE '2024-01-01': a typed literal
                items[i:i + 2] = self.cast([items[i + 1]], PG_TYPE_NAMES[u.lower()])
                return self.check_unsupported(items)

    def casts(self, items):
        i = 0
        while i < len(items):
            it = items[i]
            if punct(it, "::"):
                s = primary_start(items, i - 1)
                if s is None:
                    raise Unsupported("this use of ::")
                typ, j = parse_type(items, i + 1)
                pre = items[s].pre
                repl = self.cast(items[s:i], typ)
                repl[0].pre = pre
                items[s:j] = repl
                i = s + 1
                continue
            if kw(it, "CAST") and i + 1 < len(items) and isinstance(items[i + 1], Group):
                inner = items[i + 1].items
                k = max((n for n, x in enumerate(inner) if kw(x, "AS")), default=None)
                if k is None:
                    raise riffq.Error("42601", 'syntax error at or near ")"')
                typ, j = parse_type(inner, k + 1)
                if j != len(inner):
                    raise Unsupported("this CAST")
                repl = self.cast(inner[:k], typ)
                repl[0].pre = it.pre
                items[i:i + 2] = repl
                i += 1
                continue
            i += 1

    def likes(self, items):
        i = 0
        while i < len(items):
            if not kw(items[i], "LIKE", "ILIKE"):
                i += 1
                continue
            ilike = kw(items[i], "ILIKE")
            neg = i > 0 and kw(items[i - 1], "NOT")
            lend = i - 2 if neg else i - 1
            s = primary_start(items, lend)
            e = primary_end(items, i + 1)
            simple = (s is not None and e is not None
                      and (s == 0 or kw(items[s - 1], *_LEFT_BOUND) or punct(items[s - 1], ","))
                      and (e + 1 == len(items) or kw(items[e + 1], *_RIGHT_BOUND)
                           or punct(items[e + 1], ",") or punct(items[e + 1], ";")))
            if e is not None and e + 1 < len(items) and kw(items[e + 1], "ESCAPE"):
                simple = False
            pattern = items[i + 1:e + 1] if e is not None else []
            plain = (len(pattern) == 1 and isinstance(pattern[0], Tok) and pattern[0].kind == "str"
                     and "\\" not in pattern[0].text)
            if not ilike and plain:
                i += 1          # no escapes in the pattern: SQLite's LIKE (case-sensitive) is exact
                continue
            if not simple:
                raise Unsupported(f"this {items[i].text.upper()} (its operands: write them as plain "
                                  f"columns, literals or parameters)")
            call = fn_call("pg_ilike" if ilike else "pg_like", [items[s:lend + 1], pattern])
            call[0].pre = items[s].pre
            if neg:
                call = [Tok("ident", "NOT", items[s].pre)] + call
            items[s:e + 1] = call
            i = s + len(call)

    def arithmetic(self, items):
        """Runs of operands joined by + - * / %, parsed with Postgres'
        precedence.  Where an operand is numeric (stored as a double in
        SQLite) the operation becomes pg_num(), which computes in decimal;
        / and % always go through pg_div/pg_mod (division by zero is an
        error, integer division truncates)."""
        i = 0
        while i < len(items):
            if i > 0 and (self._is_operand_end(items[i - 1]) or punct(items[i - 1], ".")):
                i += 1
                continue
            try:
                node, j = self._sum(items, i)
            except _NoOperand:
                i += 1
                continue
            if self._has_bin(node):
                repl = self._emit(node)
                repl[0].pre = items[i].pre
                items[i:j] = repl
                i += len(repl)
            else:
                i = max(j, i + 1)

    def _sum(self, items, i):
        left, i = self._prod(items, i)
        while i < len(items) and (punct(items[i], "+") or punct(items[i], "-")):
            right, j = self._prod(items, i + 1)
            left, i = ("bin", items[i].text, left, right), j
        return left, i

    def _prod(self, items, i):
        left, i = self._unary(items, i)
        while i < len(items) and (punct(items[i], "*") or punct(items[i], "/") or punct(items[i], "%")):
            right, j = self._unary(items, i + 1)
            left, i = ("bin", items[i].text, left, right), j
        return left, i

    def _unary(self, items, i):
        if i < len(items) and (punct(items[i], "-") or punct(items[i], "+")):
            node, j = self._unary(items, i + 1)
            return (("neg", node) if items[i].text == "-" else node), j
        e = primary_end(items, i) if i < len(items) else None
        if e is None:
            raise _NoOperand()
        return ("atom", items[i:e + 1]), e + 1

    @staticmethod
    def _has_bin(node):
        if node[0] == "bin":
            return True
        return node[0] == "neg" and Translator._has_bin(node[1])

    def _type(self, node):
        if node[0] == "atom":
            return expr_info(node[1], self.coltypes)[1]
        if node[0] == "neg":
            return self._type(node[1])
        ts = [self._type(node[2]), self._type(node[3])]
        bases = [t.split("(")[0] if t else None for t in ts]
        if "numeric" in bases:
            return "numeric"
        if None in bases:
            return None
        return _common_numeric(ts)

    def _emit(self, node):
        if node[0] == "atom":
            return node[1]
        if node[0] == "neg":
            return [Tok("op", "-"), Group(self._emit(node[1]), "")]
        op, left, right = node[1], self._emit(node[2]), self._emit(node[3])
        bases = [(self._type(n) or "").split("(")[0] for n in (node[2], node[3])]
        for b in bases:
            if b and b not in INT_TYPES + FLOAT_TYPES + ("numeric",):
                # dates and times are text in SQLite: a - b would not be Postgres' answer
                raise Unsupported(f"the operator {op} on {_PG_NAMES.get(b, b)} values")
        if "numeric" in bases:
            return fn_call("pg_num", [[Tok("str", "'%s'" % op, "")], left, right])
        if op == "/":
            return fn_call("pg_div", [left, right])
        if op == "%":
            return fn_call("pg_mod", [left, right])
        return [Group(left + [Tok("op", op)] + right, "")]

    @staticmethod
    def _is_operand_end(it):
        return (isinstance(it, Group) or kw(it, "END", "TRUE", "FALSE", "NULL")
                or (isinstance(it, Tok) and it.kind in ("str", "num", "param", "qident"))
                or is_name(it))

    def order_by(self, items):
        i = 0
        while i + 1 < len(items):
            if not (kw(items[i], "ORDER") and kw(items[i + 1], "BY")):
                i += 1
                continue
            j = i + 2
            end = j
            while end < len(items) and not (kw(items[end], "LIMIT", "OFFSET", "FETCH", "FOR", "ROWS",
                                                   "RANGE", "GROUPS", "UNION", "EXCEPT", "INTERSECT",
                                                   "WINDOW") or punct(items[end], ";")):
                end += 1
            out = []
            for part in split_commas(items[j:end]):
                out.extend(part)
                if not part:
                    continue
                if not (len(part) >= 2 and kw(part[-2], "NULLS")):
                    desc = kw(part[-1], "DESC")
                    out += [Tok("ident", "NULLS"), Tok("ident", "FIRST" if desc else "LAST")]
                out.append(Tok("punct", ",", ""))
            if out:
                out.pop()
            items[j:end] = out
            i = j + len(out)

    def limits(self, items):
        idx = [n for n, x in enumerate(items) if kw(x, "LIMIT", "OFFSET", "FETCH")]
        if not idx:
            return
        if len(idx) == 1 and kw(items[idx[0]], "LIMIT") and not (
                idx[0] + 1 < len(items) and kw(items[idx[0] + 1], "ALL")):
            return
        limit = offset = None
        spans = []
        for k, start in enumerate(idx):
            stop = idx[k + 1] if k + 1 < len(idx) else len(items)
            for n in range(start + 1, stop):
                if kw(items[n], "FOR") or punct(items[n], ";"):
                    stop = n
                    break
            spans.append((start, stop))
            body = items[start + 1:stop]
            word = items[start].text.upper()
            if word == "LIMIT":
                limit = None if len(body) == 1 and kw(body[0], "ALL") else body
            elif word == "OFFSET":
                if body and kw(body[-1], "ROW", "ROWS"):
                    body = body[:-1]
                offset = body
            else:   # FETCH FIRST|NEXT [n] ROW|ROWS ONLY
                if not (body and kw(body[0], "FIRST", "NEXT") and kw(body[-1], "ONLY")
                        and len(body) >= 3 and kw(body[-2], "ROW", "ROWS")):
                    raise Unsupported("this FETCH clause (FETCH FIRST n ROWS WITH TIES?)")
                limit = body[1:-2] or [Tok("num", "1")]
        out = [Tok("ident", "LIMIT")] + (limit if limit else [Tok("num", "-1")])
        if offset:
            out += [Tok("ident", "OFFSET")] + offset
        first = spans[0][0]
        last = spans[-1][1]
        items[first:last] = out

    def translate(self, sql):
        """(SQLite text, the same with every parameter NULL, number of
        parameters)."""
        items = self.rewrite(parse_tree(sql), top=True)
        while items and punct(items[-1], ";"):
            items.pop()
        params = []

        def walk(items):
            for it in items:
                if isinstance(it, Group):
                    walk(it.items)
                elif it.kind == "param":
                    params.append(it)
        walk(items)
        n = 0
        for it in params:
            k = int(it.text[1:])
            if not 1 <= k <= 32766:
                raise riffq.Error("42P02", f"there is no parameter {it.text}")
            n = max(n, k)
            it.text = f"?{k}"
        text = emit(items)
        for it in params:
            it.text = "NULL"
        return text, emit(items), n


# ---- what the statement is, and what its columns are called ---------------------

def statement_kind(items):
    """(kind, verb): kind 'read', 'write', 'EMPTY' or the first keyword
    (upper case) of anything else; verb INSERT, UPDATE or DELETE for writes."""
    i = 0
    if items and kw(items[0], "WITH"):
        i = 1
        if i < len(items) and kw(items[i], "RECURSIVE"):
            i += 1
        # name [(columns)] AS [NOT] [MATERIALIZED] (query) [, ...]
        while i < len(items):
            while i < len(items) and not kw(items[i], "AS"):
                i += 1
            while i < len(items) and not isinstance(items[i], Group):
                i += 1
            i += 1
            if i < len(items) and punct(items[i], ","):
                i += 1
                continue
            break
    if i >= len(items):
        return "EMPTY", None
    first = items[i]
    if isinstance(first, Group):
        return "read", None
    w = first.up
    if w in ("SELECT", "VALUES", "TABLE"):
        return "read", None
    if w in ("INSERT", "UPDATE", "DELETE"):
        return "write", w
    return w or "?", None


class Item:
    """One entry of the top-level select list."""
    __slots__ = ("name", "type", "scale", "star")

    def __init__(self, name=None, type=None, scale=None, star=False):
        self.name, self.type, self.scale, self.star = name, type, scale, star


_TEXT_FUNCS = frozenset("""lower upper concat concat_ws substr substring trim ltrim rtrim btrim
replace left right initcap string_agg group_concat reverse lpad rpad repeat md5 to_char
quote_ident quote_literal format""".split())
# functions the translation writes, and the Postgres types they stand for
_FN_TYPES = {"pg_int2": "int2", "pg_int4": "int4", "pg_int8": "int8", "pg_float8": "float8",
             "pg_numeric": "numeric", "pg_num": "numeric", "pg_text": "text", "pg_bool_text": "text",
             "pg_numeric_text": "text", "pg_bool": "bool", "pg_date": "date", "pg_timestamp": "timestamp",
             "pg_timestamptz": "timestamptz", "pg_like": "bool", "pg_ilike": "bool"}
_INT4_FUNCS = frozenset("length char_length character_length octet_length strpos instr".split())
_BOOL_OPS = frozenset(["=", "<", ">", "<=", ">=", "<>", "!="])
_BOOL_WORDS = frozenset("AND OR NOT IS IN LIKE ILIKE BETWEEN EXISTS ISNULL NOTNULL".split())


def select_items(items, coltypes):
    """The top-level select list: [Item] (names and static types), or None
    when the statement has none we can read."""
    i = 0
    if items and kw(items[0], "WITH"):
        while i < len(items) and not kw(items[i], "SELECT"):
            i += 1
    if i >= len(items) or not kw(items[i], "SELECT"):
        return None
    i += 1
    if i < len(items) and kw(items[i], "DISTINCT", "ALL"):
        i += 1
    j = i
    while j < len(items) and not (kw(items[j], *_CLAUSE_END) or punct(items[j], ";")):
        j += 1
    out = []
    for part in split_commas(items[i:j]):
        if not part:
            return None
        out.append(analyze_item(part, coltypes))
    return out


def analyze_item(part, coltypes):
    if punct(part[-1], "*"):
        return Item(star=True)
    alias = None
    if len(part) >= 3 and kw(part[-2], "AS") and isinstance(part[-1], Tok):
        alias, part = ident_value(part[-1]), part[:-2]
    elif len(part) >= 2 and is_name(part[-1]) and Translator._is_operand_end(part[-2]) \
            and not punct(part[-2], "."):
        alias, part = ident_value(part[-1]), part[:-1]
    name, typ, scale = expr_info(part, coltypes)
    return Item(alias or name, typ, scale)


def _colref(part):
    if len(part) == 1 and is_name(part[0]):
        return ident_value(part[0])
    if len(part) == 3 and is_name(part[0]) and punct(part[1], ".") and is_name(part[2]):
        return ident_value(part[2])
    return None


def expr_info(part, coltypes):
    """(Postgres column name, static type or None, numeric scale or None)."""
    while len(part) == 1 and isinstance(part[0], Group):
        part = part[0].items
    if not part:
        return "?column?", None, None
    col = _colref(part)
    if col is not None:
        t = coltypes.get(col)
        return col, t, numeric_scale(t)
    # x::type (the whole item)
    casts = [n for n, x in enumerate(part) if punct(x, "::")]
    if casts:
        k = casts[-1]
        try:
            t, j = parse_type(part, k + 1)
        except Unsupported:
            t, j = None, -1
        if j == len(part) and primary_start(part, k - 1) == 0:
            inner_name = expr_info(part[:k], coltypes)[0]
            return (inner_name if inner_name != "?column?" else t.split("(")[0]), t, numeric_scale(t)
    first = part[0]
    if kw(first, "CAST") and len(part) == 2 and isinstance(part[1], Group):
        inner = part[1].items
        k = max((n for n, x in enumerate(inner) if kw(x, "AS")), default=None)
        if k is not None:
            try:
                t, j = parse_type(inner, k + 1)
            except Unsupported:
                t = None
            inner_name = expr_info(inner[:k], coltypes)[0]
            if t:
                return (inner_name if inner_name != "?column?" else t.split("(")[0]), t, numeric_scale(t)
    if len(part) == 2 and kw(first, "DATE", "TIMESTAMP", "TIMESTAMPTZ") and isinstance(part[1], Tok) \
            and part[1].kind == "str":
        t = PG_TYPE_NAMES[first.text.lower()]
        return t, t, None           # DATE '2024-01-01'
    if kw(first, "CASE") and case_end(part, 0) == len(part) - 1:
        return "case", None, None
    if kw(first, "EXISTS"):
        return "exists", "bool", None
    if len(part) == 1 and isinstance(first, Tok):
        if kw(first, "TRUE", "FALSE"):
            return "bool", "bool", None
        if first.kind == "str":
            return "?column?", "text", None
        if first.kind == "num":
            if re.fullmatch(r"\d+", first.text):
                return "?column?", ("int4" if int(first.text) < 2 ** 31 else "int8"), None
            return "?column?", "numeric", None
    # f(args) [FILTER (...)] [OVER ...]
    if (is_name(first) or kw(first, "LEFT", "RIGHT")) and primary_end(part, 0) == len(part) - 1 \
            and len(part) >= 2 and isinstance(part[1], Group):
        fname = ident_value(first) if first.kind == "qident" else first.text.lower()
        args = [a[1:] if a and kw(a[0], "DISTINCT", "ALL") else a for a in split_commas(part[1].items)]
        at = expr_info(args[0], coltypes)[1] if len(args) == 1 and args[0] else None
        t = scale = None
        if fname == "count":
            t = "int8"
        elif fname in ("min", "max") and at:
            t, scale = at, numeric_scale(at)
        elif fname == "sum" and at:
            if at in ("int2", "int4"):
                t = "int8"
            elif at == "int8" or at.startswith("numeric"):
                t, scale = "numeric", numeric_scale(at)
            elif at in FLOAT_TYPES:
                t = at
        elif fname == "avg" and at:
            if at in INT_TYPES or at.startswith("numeric"):
                t = "numeric"
            elif at in FLOAT_TYPES:
                t = "float8"
        elif fname in ("coalesce", "greatest", "least", "nullif") and args and all(args):
            ts = [expr_info(a, coltypes)[1] for a in args]
            if fname == "nullif":
                ts = ts[:1]
            if all(ts) and len({x.split("(")[0] for x in ts}) == 1:
                t = ts[0] if len(set(ts)) == 1 else ts[0].split("(")[0]
                scale = numeric_scale(t)
            elif all(ts):
                t = _common_numeric(ts)
        elif fname in _FN_TYPES:
            t = _FN_TYPES[fname]
            if fname == "pg_numeric" and len(args) == 2 and len(args[1]) == 1 and args[1][0].kind == "num":
                t, scale = f"numeric(38,{args[1][0].text})", int(args[1][0].text)
        elif fname in _TEXT_FUNCS:
            t = "text"
        elif fname in _INT4_FUNCS:
            t = "int4"
        elif fname == "now":
            t = "timestamptz"
        return fname, t, scale
    # operators at the top level of the expression
    depth = 0
    saw_concat = False
    for x in part:
        if kw(x, "CASE"):
            depth += 1
        elif kw(x, "END"):
            depth -= 1
        elif depth == 0:
            if (isinstance(x, Tok) and x.kind == "op" and x.text in _BOOL_OPS) or kw(x, *_BOOL_WORDS):
                return "?column?", "bool", None
            if punct(x, "||"):
                saw_concat = True
    if saw_concat:
        return "?column?", "text", None
    return "?column?", arith_type(part, coltypes), None


def _common_numeric(types):
    bases = [t.split("(")[0] for t in types]
    if any(b not in INT_TYPES + FLOAT_TYPES + ("numeric",) for b in bases):
        return None
    if any(b in FLOAT_TYPES for b in bases):
        return "float8"
    if "numeric" in bases:
        return "numeric"
    return "int8" if "int8" in bases else "int4"


def arith_type(part, coltypes):
    """Postgres' type of operands joined by + - * / %: float8 if any is
    floating, numeric if any is numeric, else the widest integer; None when
    an operand's type is unknown (a parameter, say)."""
    types = []
    i = 0
    while i < len(part):
        while i < len(part) and (punct(part[i], "-") or punct(part[i], "+")):
            i += 1
        e = primary_end(part, i)
        if e is None or (i == 0 and e == len(part) - 1):
            return None         # not operands and operators (or one we know nothing of)
        t = expr_info(part[i:e + 1], coltypes)[1]
        if t is None:
            return None
        types.append(t.split("(")[0])
        i = e + 1
        if i < len(part):
            if not any(punct(part[i], o) for o in "+-*/%"):
                return None
            i += 1
            if i == len(part):
                return None
    return _common_numeric(types) if types else None


# ===========================================================================
# Values: Python <-> SQLite <-> Postgres
# ===========================================================================

UTC = datetime.timezone.utc


def fmt_timestamp(v):
    """How timestamps are stored: ISO text, UTC for timestamptz, so that
    text comparisons order them in time."""
    if v.tzinfo is not None:
        v = v.astimezone(UTC)
        return v.replace(tzinfo=None).isoformat(sep=" ") + "+00:00"
    return v.isoformat(sep=" ")


def to_sqlite(v):
    """A bound parameter (already a Python value) -> what SQLite stores."""
    if v is None or isinstance(v, (str, bytes, float)):
        return v
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, decimal.Decimal):
        if not v.is_finite():
            return float(v)
        return int(v) if v == v.to_integral_value() and abs(v) < 2 ** 63 else float(v)
    if isinstance(v, datetime.datetime):
        return fmt_timestamp(v)
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, datetime.timedelta):
        raise riffq.Error("0A000", "interval parameters are not supported by the sqlite_engine plugin")
    return str(v)


def parse_timestamp(v, with_tz):
    if isinstance(v, (int, float)):
        d = datetime.datetime.fromtimestamp(v, UTC)
    else:
        s = str(v).strip()
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        d = datetime.datetime.fromisoformat(s)
    if with_tz:
        return d.replace(tzinfo=UTC) if d.tzinfo is None else d
    return d.replace(tzinfo=None) if d.tzinfo is None else d.astimezone(UTC).replace(tzinfo=None)


def to_decimal(v):
    if isinstance(v, float):
        # 15 significant digits: what a double holds exactly, without the
        # binary noise of a sum or average (12.211359999999907 -> 12.21136)
        return decimal.Decimal(format(v, ".15g")) if v == v and abs(v) != float("inf") \
            else decimal.Decimal(repr(v))
    return decimal.Decimal(str(v).strip())


_PG_NAMES = {"int2": "smallint", "int4": "integer", "int8": "bigint", "float8": "double precision",
             "float4": "real", "bool": "boolean", "timestamptz": "timestamp with time zone",
             "timestamp": "timestamp without time zone", "date": "date", "numeric": "numeric"}


def from_sqlite(v, pgtype, scale=None):
    """A value SQLite returned -> the Python value for a column of pgtype."""
    if v is None:
        return None
    base = pgtype.split("(")[0]
    try:
        if base in INT_TYPES:
            if isinstance(v, float) and v.is_integer():
                return int(v)
            if isinstance(v, str):
                return int(v)
            return v if isinstance(v, int) else int(v)
        if base in FLOAT_TYPES:
            return float(v)
        if base == "numeric":
            d = to_decimal(v)
            if scale is not None and d.is_finite():
                d = d.quantize(decimal.Decimal(1).scaleb(-scale), rounding=decimal.ROUND_HALF_UP)
            return d
        if base == "bool":
            if isinstance(v, str):
                return _parse_bool(v)
            return bool(v)
        if base == "timestamptz":
            return parse_timestamp(v, True)
        if base == "timestamp":
            return parse_timestamp(v, False)
        if base == "date":
            return datetime.date.fromisoformat(str(v)[:10])
        if base == "bytea":
            return bytes(v) if not isinstance(v, str) else v.encode()
        if base in ("json", "jsonb"):
            return json.loads(v) if isinstance(v, str) else v
        if base == "uuid":
            return uuid.UUID(str(v))
        # text, varchar, ...
        if isinstance(v, float):
            return _float_text(v)
        return v if isinstance(v, str) else str(v)
    except (ValueError, TypeError, decimal.InvalidOperation):
        raise riffq.Error("22P02", f"invalid input syntax for type {_PG_NAMES.get(base, base)}: "
                                   f"\"{v}\"") from None


def _float_text(v):
    r = repr(v)
    return r[:-2] if r.endswith(".0") else r


def infer_type(values):
    """The Postgres type of an expression column, from SQLite's values."""
    seen = set()
    for v in values:
        if v is not None:
            seen.add(type(v))
    if not seen:
        return "text"           # Postgres' type for an unknown-typed NULL
    if seen <= {int}:
        return "int8"
    if seen <= {int, float}:
        return "float8"
    if seen <= {bytes}:
        return "bytea"
    return "text"


def _parse_bool(s):
    t = str(s).strip().lower()
    if t in ("t", "true", "y", "yes", "on", "1"):
        return True
    if t in ("f", "false", "n", "no", "off", "0"):
        return False
    raise ValueError(s)


# ---- SQL functions with Postgres' semantics -------------------------------------

_state = threading.local()


def _fail(sqlstate, message):
    """Raise from inside an SQL function: SQLite only reports "user-defined
    function raised exception", so the real error is kept aside."""
    e = riffq.Error(sqlstate, message)
    _state.error = e
    raise e


def _num(v, what):
    if isinstance(v, (int, float)):
        return v
    try:
        return int(v) if re.fullmatch(r"\s*[-+]?\d+\s*", str(v)) else float(v)
    except (TypeError, ValueError):
        _fail("22P02", f"invalid input syntax for type numeric: \"{v}\"")


def pg_div(a, b):
    if a is None or b is None:
        return None
    a, b = _num(a, "/"), _num(b, "/")
    if b == 0:
        _fail("22012", "division by zero")
    if isinstance(a, int) and isinstance(b, int):
        q = abs(a) // abs(b)
        return q if (a >= 0) == (b >= 0) else -q
    return a / b


def pg_mod(a, b):
    if a is None or b is None:
        return None
    a, b = _num(a, "%"), _num(b, "%")
    if b == 0:
        _fail("22012", "division by zero")
    if isinstance(a, int) and isinstance(b, int):
        r = abs(a) % abs(b)
        return r if a >= 0 else -r
    import math
    return math.fmod(a, b)


def _snap(d):
    """A decimal result -> what SQLite stores: an int when integral, else
    the double nearest to it."""
    if d == d.to_integral_value() and abs(d) < 2 ** 63:
        return int(d)
    return float(d)


def _dec(v):
    if isinstance(v, int):
        return decimal.Decimal(v)
    try:
        return to_decimal(v)
    except decimal.InvalidOperation:
        _fail("22P02", f"invalid input syntax for type numeric: \"{v}\"")


_NUM_CTX = decimal.Context(prec=40)


def pg_num(op, a, b):
    """numeric a op b, computed in decimal: Postgres' numeric is exact,
    where SQLite would multiply doubles (12.99 * 3 = 38.970000000000006)."""
    if a is None or b is None:
        return None
    x, y = _dec(a), _dec(b)
    if op == "+":
        r = _NUM_CTX.add(x, y)
    elif op == "-":
        r = _NUM_CTX.subtract(x, y)
    elif op == "*":
        r = _NUM_CTX.multiply(x, y)
    else:
        if y == 0:
            _fail("22012", "division by zero")
        r = _NUM_CTX.divide(x, y) if op == "/" else _NUM_CTX.remainder(x, y)
    return _snap(r)


class _ExactSum:
    """sum() in decimal, so that sums of numeric values are exact: SQLite's
    sum of doubles can make 181.86 of one set of prices and
    181.85999999999999 of another, and ORDER BY would tell them apart."""
    def __init__(self):
        self.total = None
        self.n = 0
        self.floats = False

    def step(self, v):
        if v is None:
            return
        if isinstance(v, float):
            self.floats = True
        self.total = _dec(v) if self.total is None else _NUM_CTX.add(self.total, _dec(v))
        self.n += 1

    def finalize(self):
        if self.total is None:
            return None
        if not self.floats:
            if abs(self.total) >= 2 ** 63:
                _fail("22003", "bigint out of range")
            return int(self.total)
        return _snap(self.total)


class _ExactAvg(_ExactSum):
    def finalize(self):
        if self.total is None:
            return None
        return float(_NUM_CTX.divide(self.total, self.n))


def _round_half_away(x):
    d = decimal.Decimal(repr(x)) if isinstance(x, float) else decimal.Decimal(x)
    return int(d.to_integral_value(rounding=decimal.ROUND_HALF_UP))


def _to_int(v, bits, name):
    if v is None:
        return None
    try:
        if isinstance(v, bool):
            n = int(v)
        elif isinstance(v, int):
            n = v
        elif isinstance(v, float):
            n = _round_half_away(v)
        else:
            s = str(v).strip()
            if not re.fullmatch(r"[-+]?\d+", s):
                _fail("22P02", f"invalid input syntax for type {name}: \"{v}\"")
            n = int(s)
    except (ValueError, OverflowError, decimal.InvalidOperation):
        _fail("22P02", f"invalid input syntax for type {name}: \"{v}\"")
    if not -(2 ** (bits - 1)) <= n < 2 ** (bits - 1):
        _fail("22003", f"{name} out of range")
    return n


def pg_numeric(v, scale=None):
    if v is None:
        return None
    try:
        d = to_decimal(v)
    except decimal.InvalidOperation:
        _fail("22P02", f"invalid input syntax for type numeric: \"{v}\"")
    if scale is not None:
        d = d.quantize(decimal.Decimal(1).scaleb(-int(scale)), rounding=decimal.ROUND_HALF_UP)
    return int(d) if d == d.to_integral_value() else float(d)


def pg_float8(v):
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        _fail("22P02", f"invalid input syntax for type double precision: \"{v}\"")


def pg_text(v):
    if v is None:
        return None
    if isinstance(v, float):
        return _float_text(v)
    if isinstance(v, bytes):
        return "\\x" + v.hex()
    return str(v)


def pg_bool_text(v):
    return None if v is None else ("true" if v else "false")


def pg_numeric_text(v, scale):
    return None if v is None else str(from_sqlite(v, "numeric", scale))


def pg_bool(v):
    if v is None:
        return None
    if isinstance(v, (int, float)):
        return int(bool(v))
    try:
        return int(_parse_bool(v))
    except ValueError:
        _fail("22P02", f"invalid input syntax for type boolean: \"{v}\"")


def _ts(v, with_tz, name):
    if v is None:
        return None
    try:
        return fmt_timestamp(parse_timestamp(v, with_tz))
    except (ValueError, TypeError, OverflowError):
        _fail("22007", f"invalid input syntax for type {name}: \"{v}\"")


def pg_date(v):
    if v is None:
        return None
    try:
        s = str(v).strip()
        if len(s) > 10:
            return parse_timestamp(s, True).astimezone(UTC).date().isoformat()
        return datetime.date.fromisoformat(s).isoformat()
    except ValueError:
        _fail("22007", f"invalid input syntax for type date: \"{v}\"")


@functools.lru_cache(maxsize=256)
def _like_regex(pattern, ignore_case):
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
        i += 1
    return re.compile("".join(out), re.S | (re.I if ignore_case else 0))


def pg_like(s, p):
    if s is None or p is None:
        return None
    return int(_like_regex(pg_text(p), False).fullmatch(pg_text(s)) is not None)


def pg_ilike(s, p):
    if s is None or p is None:
        return None
    return int(_like_regex(pg_text(p), True).fullmatch(pg_text(s)) is not None)


def _greatest(*args):
    vals = [a for a in args if a is not None]
    return max(vals) if vals else None


def _least(*args):
    vals = [a for a in args if a is not None]
    return min(vals) if vals else None


class _StringAgg:
    def __init__(self):
        self.parts = []
        self.sep = None

    def step(self, v, sep):
        if v is not None:
            if self.parts and sep is not None:
                self.parts.append(str(sep))
            self.parts.append(pg_text(v))

    def finalize(self):
        return "".join(self.parts) if self.parts else None


FUNCTIONS = [
    ("pg_div", 2, pg_div), ("pg_mod", 2, pg_mod), ("pg_num", 3, pg_num),
    ("pg_int2", 1, lambda v: _to_int(v, 16, "smallint")),
    ("pg_int4", 1, lambda v: _to_int(v, 32, "integer")),
    ("pg_int8", 1, lambda v: _to_int(v, 64, "bigint")),
    ("pg_float8", 1, pg_float8), ("pg_numeric", 1, pg_numeric), ("pg_numeric", 2, pg_numeric),
    ("pg_text", 1, pg_text), ("pg_bool_text", 1, pg_bool_text),
    ("pg_numeric_text", 2, pg_numeric_text), ("pg_bool", 1, pg_bool), ("pg_date", 1, pg_date),
    ("pg_timestamp", 1, lambda v: _ts(v, False, "timestamp")),
    ("pg_timestamptz", 1, lambda v: _ts(v, True, "timestamp with time zone")),
    ("pg_like", 2, pg_like), ("pg_ilike", 2, pg_ilike),
    # Unicode-aware, as Postgres' are in a UTF8 database (SQLite's are ASCII only)
    ("lower", 1, lambda s: None if s is None else pg_text(s).lower()),
    ("upper", 1, lambda s: None if s is None else pg_text(s).upper()),
    ("initcap", 1, lambda s: None if s is None else pg_text(s).title()),
    ("concat", -1, lambda *a: "".join(pg_text(x) for x in a if x is not None)),
    ("left", 2, lambda s, n: None if s is None or n is None else
        pg_text(s)[:n] if n >= 0 else pg_text(s)[:n]),
    ("right", 2, lambda s, n: None if s is None or n is None else
        (pg_text(s)[-n:] if n > 0 else "") if n >= 0 else pg_text(s)[-n:]),
    ("char_length", 1, lambda s: None if s is None else len(pg_text(s))),
    ("character_length", 1, lambda s: None if s is None else len(pg_text(s))),
    ("starts_with", 2, lambda s, p: None if s is None or p is None else int(pg_text(s).startswith(pg_text(p)))),
    ("greatest", -1, _greatest), ("least", -1, _least),
    ("now", 0, lambda: fmt_timestamp(datetime.datetime.now(UTC))),
]


# ===========================================================================
# The engine: one SQLite connection, shared by the gateway's worker threads
# ===========================================================================

# SQLite messages -> (SQLSTATE, Postgres-style message); \1 is the name
_ERRORS = [
    (r'^near "(.*)": syntax error$', "42601", 'syntax error at or near "\\1"'),
    (r"^incomplete input$", "42601", "syntax error at end of input"),
    (r"^unrecognized token: (.*)$", "42601", "syntax error at or near \\1"),
    (r"^no such table: (?:main\.)?(.*)$", "42P01", 'relation "\\1" does not exist'),
    (r"^no such column: (.*)$", "42703", 'column "\\1" does not exist'),
    (r"^no such function: (.*)$", "42883", "function \\1 does not exist"),
    (r"^wrong number of arguments to function (\w+)\(\)$", "42883",
     "function \\1 does not exist with this number of arguments"),
    (r"^ambiguous column name: (.*)$", "42702", 'column reference "\\1" is ambiguous'),
    (r"^(misuse of aggregate.*|aggregate functions are not allowed.*)$", "42803", "\\1"),
    (r"^(\d+\w\w) ORDER BY term out of range - should be between 1 and (\d+)$", "42P10",
     "the \\1 ORDER BY position is not in select list (positions 1 to \\2)"),
    (r"^(\d+\w\w) GROUP BY term out of range - should be between 1 and (\d+)$", "42P10",
     "the \\1 GROUP BY position is not in select list (positions 1 to \\2)"),
    (r"^SELECTs to the left and right of (\w+).*$", "42601",
     "each \\1 query must have the same number of columns"),
    (r"^sub-select returns (\d+) columns - expected 1$", "42601", "subquery must return only one column"),
    (r"^integer overflow$", "22003", "bigint out of range"),
    (r"^datatype mismatch$", "22P02", "invalid input syntax (datatype mismatch)"),
    (r"^(database|database table) is locked$", "55P03", "could not obtain lock: \\1 is locked"),
    (r"^attempt to write a readonly database$", "25006", "cannot write: the SQLite database is read-only"),
    (r"^(table|view) (\S+) may not be modified$", "42809", "cannot change \\2"),
    (r"^too many SQL variables$", "54000", "too many parameters"),
]


class Engine:
    """SQL from Postgres clients on one SQLite connection.

    conn: an sqlite3 connection (check_same_thread=False, autocommit) whose
    tables declare Postgres types (int8, numeric(6,2), timestamptz, ...);
    name: how errors name the plugin; syntax_sqlstate: the SQLSTATE of a
    statement SQLite cannot parse (42601, or 0A000 where the contract is
    "answered or refused"); read_only: refuse writes with 25006."""

    def __init__(self, conn, name="sqlite_engine", syntax_sqlstate="42601", read_only=False,
                 hint=None):
        self.conn = conn
        self.name = name
        self.syntax_sqlstate = syntax_sqlstate
        self.read_only = read_only
        self.hint = hint
        self.lock = threading.Lock()                    # the connection
        self.cache_lock = threading.Lock()              # self.statements
        self.statements = collections.OrderedDict()     # sql -> Prepared (LRU)
        conn.isolation_level = None
        install_functions(conn)
        # lets a cancel (an exception the gateway raises in this thread)
        # interrupt a long SQLite statement
        conn.set_progress_handler(_tick, 20000)
        self.tables = self._introspect()
        types = collections.defaultdict(set)
        for cols in self.tables.values():
            for col, t, _nullable in cols["columns"]:
                types[col.lower()].add(t)
        self.coltypes = {c: next(iter(ts)) for c, ts in types.items() if len(ts) == 1}
        self.translator = Translator(self.coltypes)
        self.type_checks = {}       # CHECK constraint name -> (table, column, pg type)

    def _introspect(self):
        tables = {}
        for (tname,) in self.conn.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                "AND name NOT LIKE 'sqlite_%' ORDER BY rowid"):
            cols, pk = [], []
            for _cid, col, decl, notnull, _dflt, pkn in self.conn.execute(
                    f'PRAGMA table_info("{tname}")'):
                cols.append((col, pg_type_of_decl(decl) or "text", not notnull and not pkn))
                if pkn:
                    pk.append((pkn, col))
            tables[tname] = {"columns": cols, "primary_key": [c for _n, c in sorted(pk)]}
        return tables

    def register(self, schema="public", comments=None):
        """riffq.register_table for every table, so routes claim them."""
        for tname, t in self.tables.items():
            riffq.register_table(schema, tname, t["columns"], primary_key=t["primary_key"] or None,
                                 comment=(comments or {}).get(tname))

    # ---- locking that a cancel can interrupt ----
    def locked(self, fn):
        """fn() with the connection's lock held.  The wait is a loop of short
        timed waits, so a cancel (an exception the gateway raises in this
        thread) ends it; `got` is set in the same bytecode step as the
        acquire, so a cancel cannot leave the lock taken."""
        got = False
        try:
            while not got:
                got = self.lock.acquire(timeout=0.05)
            return fn()
        finally:
            if got:
                self.lock.release()

    # ---- statements ----
    def prepare(self, sql):
        with self.cache_lock:
            st = self.statements.get(sql)
            if st is not None:
                self.statements.move_to_end(sql)
                return st
        try:
            tree = parse_tree(sql)
            kind, verb = statement_kind(tree)
            items = select_items(tree, self.coltypes) if kind == "read" else None
            text, probe, nparams = self.translator.translate(sql)
        except Unsupported as e:
            raise riffq.Error("0A000", f"{e} is not supported by the {self.name} plugin",
                              hint=f"The {self.name} plugin runs statements on SQLite "
                                   f"{sqlite3.sqlite_version}; rewrite the statement without it.")
        st = Prepared(kind, text, probe, items, nparams)
        st.verb = verb
        with self.cache_lock:
            self.statements[sql] = st
            if len(self.statements) > 512:
                self.statements.popitem(last=False)
        return st

    def handle(self, sql, params, ctx):
        st = self.prepare(sql)
        describe = bool(ctx.get("describe")) if ctx else False
        if st.kind == "EMPTY":
            return riffq.Command("EMPTY")
        if st.kind not in ("read", "write"):
            raise riffq.Error("0A000", f"{st.kind} is not supported by the {self.name} plugin",
                              hint="It answers SELECT" + ("." if self.read_only else
                                                          ", INSERT, UPDATE and DELETE."))
        if describe:
            args = [None] * st.nparams
        else:
            args = [to_sqlite(p) for p in (params or [])]
            if len(args) != st.nparams:
                raise riffq.Error("08P01", f"bind message supplies {len(args)} parameters, "
                                           f"but the statement requires {st.nparams}")
        if st.kind == "write":
            return self._write(st, args, describe)
        return self._read(st, args, describe, ctx)

    def _write(self, st, args, describe):
        if self.read_only:
            raise riffq.Error("25006", f"the {self.name} plugin's tables are read-only",
                              hint=self.hint)
        def run():
            if describe:
                self._run("EXPLAIN " + st.text, args)      # compile, do not run
                return 0
            self._run(st.text, args, rows=False)
            # the rows this statement changed (not the cursor's rowcount,
            # which Python's sqlite3 leaves at -1 for WITH ... DELETE)
            return self.conn.execute("SELECT changes()").fetchone()[0]
        n = self.locked(run)
        return riffq.Command(f"INSERT 0 {n}" if st.verb == "INSERT" else f"{st.verb} {n}")

    def _read(self, st, args, describe, ctx):
        def run():
            if st.decl is None:
                st.decl = self._declared_types(st)
            try:
                return self._run(st.text, args)
            except riffq.Error:
                if not describe:
                    raise
                # Describe before Bind: NULL parameters may not run (LIMIT
                # NULL); the statement compiled, so answer its columns
                return [(n,) for n in (st.decl_names or [])], []
        desc, rows = self.locked(run)
        ncols = len(desc)
        names = [d[0] for d in desc]
        decl = st.decl if st.decl and len(st.decl) == ncols else [None] * ncols
        items = self._map_items(st.items, ncols)
        cache = None
        if ctx is not None and isinstance(ctx.get("session"), dict):
            cache = ctx["session"].setdefault("sqlite_engine.types", {})
        remembered = cache.get((self.name, st.text)) if cache is not None else None
        types, scales = [], []
        for i in range(ncols):
            it = items[i]
            t = decl[i]
            scale = numeric_scale(t) if t else None
            if it is not None and not it.star:
                if it.name:
                    names[i] = it.name
                if t is None and it.type:
                    t, scale = it.type, it.scale
            if t is None and remembered and len(remembered) == ncols:
                t = remembered[i]
            if t is None:
                t = infer_type(r[i] for r in rows)
            types.append(t)
            scales.append(scale)
        if describe and cache is not None:
            if len(cache) > 256:
                cache.clear()
            cache[(self.name, st.text)] = types
        out = [tuple(from_sqlite(v, t, s) for v, t, s in zip(r, types, scales)) for r in rows]
        return out, list(zip(names, types))

    @staticmethod
    def _map_items(items, ncols):
        """Select-list entries -> result columns (a * expands to several)."""
        if not items:
            return [None] * ncols
        stars = [n for n, it in enumerate(items) if it.star]
        if not stars:
            return items if len(items) == ncols else [None] * ncols
        first, last = stars[0], stars[-1]
        after = len(items) - last - 1
        if first + after > ncols:
            return [None] * ncols
        out = [None] * ncols
        out[:first] = items[:first]
        if after:
            out[ncols - after:] = items[last + 1:]
        return out

    def _declared_types(self, st):
        """Postgres types of the columns that are plain table columns, read
        from a temporary view of the statement (parameters as NULL)."""
        try:
            try:
                self.conn.execute(f"CREATE TEMP VIEW _riffq_probe AS {st.probe}")
                info = self.conn.execute("PRAGMA table_info(_riffq_probe)").fetchall()
            finally:
                self.conn.execute("DROP VIEW IF EXISTS temp._riffq_probe")
        except sqlite3.Error:
            st.decl_names = None
            # the statement itself reports the problem (or compiles after all)
            self._run("EXPLAIN " + st.text, [None] * st.nparams)
            return []
        st.decl_names = [r[1] for r in info]
        return [pg_type_of_decl(r[2]) for r in info]

    def _run(self, text, args, rows=True):
        """(description, rows), or the row count of a write (rows=False)."""
        _state.error = None
        try:
            cur = self.conn.execute(text, args)
            if not rows:
                return cur.rowcount
            return cur.description, cur.fetchall()
        except sqlite3.Error as e:
            raise self.error(e) from None

    def error(self, e):
        """An sqlite3 exception -> riffq.Error (or QueryCanceled)."""
        pending = getattr(_state, "error", None)
        if pending is not None:
            _state.error = None
            return pending
        msg = str(e)
        if msg == "interrupted":
            return riffq.QueryCanceled("canceling statement due to user request")
        hint = self.hint or f"The {self.name} plugin runs statements on SQLite {sqlite3.sqlite_version}."
        if isinstance(e, sqlite3.IntegrityError):
            return self._constraint_error(e, msg, hint)
        if isinstance(e, sqlite3.ProgrammingError) and "bindings" in msg:
            return riffq.Error("08P01", msg, hint=hint)
        for pattern, state, repl in _ERRORS:
            m = re.match(pattern, msg)
            if m:
                if state == "42601":
                    state = self.syntax_sqlstate
                    if state == "0A000":
                        return riffq.Error("0A000", f"{m.expand(repl)}: this statement is not "
                                                    f"supported by the {self.name} plugin",
                                           detail=f"SQLite says: {msg}", hint=hint)
                return riffq.Error(state, m.expand(repl), detail=f"SQLite says: {msg}", hint=hint)
        return riffq.Error("XX000", f"{self.name}: {msg}", hint=hint)

    def _constraint_error(self, e, msg, hint):
        code = getattr(e, "sqlite_errorname", "")
        detail = f"SQLite says: {msg}"
        m = re.match(r"^(?:UNIQUE|NOT NULL) constraint failed: (.*)$", msg)
        if code in ("SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_ROWID") \
                or msg.startswith("UNIQUE"):
            cols = [c.split(".", 1) for c in m.group(1).split(", ")] if m else []
            table = cols[0][0] if cols else "?"
            names = [c[-1] for c in cols]
            pk = self.tables.get(table, {}).get("primary_key") or []
            cname = f"{table}_pkey" if names == pk else f"{table}_{'_'.join(names)}_key"
            return riffq.Error("23505", f'duplicate key value violates unique constraint "{cname}"',
                               detail=f"Key ({', '.join(names)}) already exists.", hint=hint)
        if code == "SQLITE_CONSTRAINT_NOTNULL" or msg.startswith("NOT NULL"):
            table, _, col = (m.group(1) if m else "?.?").partition(".")
            return riffq.Error("23502", f'null value in column "{col}" of relation "{table}" '
                                        f"violates not-null constraint", detail=detail, hint=hint)
        if code == "SQLITE_CONSTRAINT_FOREIGNKEY" or msg.startswith("FOREIGN KEY"):
            return riffq.Error("23503", "insert or update violates a foreign key constraint",
                               detail=detail, hint=hint)
        m = re.match(r"^CHECK constraint failed: (.*)$", msg)
        if m:
            cname = m.group(1).strip('"')
            if cname in self.type_checks:
                table, col, t = self.type_checks[cname]
                return riffq.Error("22P02", f"invalid input syntax for type {_PG_NAMES.get(t, t)}",
                                   detail=f'A value for column "{col}" of relation "{table}" '
                                          f"is not of type {t}.", hint=hint)
            table = next((t for t in sorted(self.tables, key=len, reverse=True)
                          if cname.startswith(t + "_")), "?")
            return riffq.Error("23514", f'new row for relation "{table}" violates check '
                                        f'constraint "{cname}"', detail=detail, hint=hint)
        return riffq.Error("23000", msg, detail=detail, hint=hint)


class Prepared:
    __slots__ = ("kind", "verb", "text", "probe", "items", "nparams", "decl", "decl_names")

    def __init__(self, kind, text, probe, items, nparams):
        self.kind, self.text, self.probe, self.items, self.nparams = kind, text, probe, items, nparams
        self.decl = None
        self.decl_names = None


def _tick():
    return 0


# ---- building a database from a table spec ------------------------------------------

_TYPE_CHECKS = {
    "int2": "typeof({c}) = 'integer'", "int4": "typeof({c}) = 'integer'",
    "int8": "typeof({c}) = 'integer'",
    "float8": "typeof({c}) IN ('real', 'integer')", "float4": "typeof({c}) IN ('real', 'integer')",
    "numeric": "typeof({c}) IN ('real', 'integer')",
    "bool": "{c} IN (0, 1)",
    "text": "typeof({c}) = 'text'",
    # (the pg_* functions report a value they cannot read with 22007)
    "timestamptz": "typeof({c}) = 'text' AND pg_timestamptz({c}) IS NOT NULL",
    "timestamp": "typeof({c}) = 'text' AND pg_timestamp({c}) IS NOT NULL",
    "date": "typeof({c}) = 'text' AND pg_date({c}) IS NOT NULL",
}


def install_functions(conn):
    """Postgres' semantics on an SQLite connection: the pg_* functions the
    translation writes, Unicode lower/upper, decimal sum/avg, case-sensitive
    LIKE, enforced foreign keys."""
    conn.execute("PRAGMA case_sensitive_like = ON")
    conn.execute("PRAGMA foreign_keys = ON")
    for fname, n, fn in FUNCTIONS:
        conn.create_function(fname, n, fn, deterministic=fname != "now")
    conn.create_aggregate("string_agg", 2, _StringAgg)
    conn.create_aggregate("sum", 1, _ExactSum)
    conn.create_aggregate("avg", 1, _ExactAvg)


_NORMALIZE = {"timestamptz": "pg_timestamptz", "timestamp": "pg_timestamp", "date": "pg_date"}


def create_tables(conn, spec):
    """spec: {table: [(column, pg type, constraints SQL or ""), ...]}.
    Columns declare their Postgres type; a CHECK keeps SQLite's flexible
    typing from storing a value of another type (reported as 22P02).  A
    column whose constraints say "pk" becomes the table's integer key,
    assigned automatically when an INSERT leaves it out.  Returns the
    CHECK names that guard types: {name: (table, column, type)}."""
    checks = {}
    for table, cols in spec.items():
        parts = []
        for col, typ, extra in cols:
            if extra == "pk":
                parts.append(f"{col} INTEGER PRIMARY KEY")
                continue
            base = typ.split("(")[0]
            cname = f"{table}_{col}_type"
            check = _TYPE_CHECKS[base].format(c=col)
            checks[cname] = (table, col, base)
            extra = re.sub(r"\bcheck\b", f"CONSTRAINT {table}_{col}_check CHECK", extra, flags=re.I)
            parts.append(f"{col} {typ} {extra} CONSTRAINT {cname} CHECK ({col} IS NULL OR {check})")
        conn.execute(f"CREATE TABLE {table} ({', '.join(parts)})")
        # times are stored in one form (UTC for timestamptz), so that text
        # comparison and ORDER BY follow time, whatever form an INSERT used
        for col, typ, _extra in cols:
            fn = _NORMALIZE.get(typ)
            if not fn:
                continue
            for event in ("INSERT", f"UPDATE OF {col}"):
                conn.execute(
                    f"CREATE TRIGGER {table}_{col}_{event[0].lower()}_normal AFTER {event} ON {table} "
                    f"FOR EACH ROW WHEN NEW.{col} IS NOT {fn}(NEW.{col}) BEGIN "
                    f"UPDATE {table} SET {col} = {fn}(NEW.{col}) WHERE rowid = NEW.rowid; END")
    return checks


def insert_rows(conn, table, columns, rows):
    marks = ", ".join("?" for _ in columns)
    conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                     [[to_sqlite(v) for v in r] for r in rows])


# ===========================================================================
# The bookstore (only when the gateway loads this file as a plugin)
# ===========================================================================

BOOKSTORE = {
    "authors": [("id", "int8", "pk"), ("name", "text", "NOT NULL UNIQUE"), ("country", "text", ""),
                ("born", "int4", ""), ("died", "int4", "")],
    "books": [("id", "int8", "pk"), ("title", "text", "NOT NULL"),
              ("author_id", "int8", "NOT NULL REFERENCES authors (id)"), ("published", "int4", ""),
              ("genre", "text", ""), ("pages", "int4", "CHECK (pages > 0)"),
              ("price", "numeric(6,2)", "NOT NULL CHECK (price >= 0)"),
              ("in_stock", "bool", "NOT NULL DEFAULT 1")],
    "orders": [("id", "int8", "pk"), ("book_id", "int8", "NOT NULL REFERENCES books (id)"),
               ("customer", "text", "NOT NULL"), ("quantity", "int4", "NOT NULL CHECK (quantity > 0)"),
               ("ordered_at", "timestamptz", "NOT NULL"), ("shipped_on", "date", "")],
}
COMMENTS = {
    "authors": "Authors of the bookstore's books (plugins/data/bookstore.json)",
    "books": "The bookstore's catalogue; price in EUR",
    "orders": "500 orders placed in 2024 (generated from a fixed seed); shipped_on is NULL until shipped",
}
N_ORDERS = 500


def make_orders(book_ids, customers, n=N_ORDERS, seed=2024):
    """Orders placed in 2024: the same rows on every run."""
    rng = random.Random(seed)
    start = datetime.datetime(2024, 1, 1, tzinfo=UTC)
    weights = [1 + (b * 7919) % 13 for b in book_ids]     # some books sell better
    rows = []
    for i in range(n):
        at = start + datetime.timedelta(seconds=rng.randrange(366 * 24 * 3600))
        book = rng.choices(book_ids, weights)[0]
        qty = rng.choice((1, 1, 1, 1, 2, 2, 3))
        shipped = None
        if at < datetime.datetime(2024, 12, 24, tzinfo=UTC) and rng.random() > 0.03:
            shipped = (at + datetime.timedelta(days=rng.randint(1, 4))).date()
        rows.append((i + 1, book, rng.choice(customers), qty, at, shipped))
    rows.sort(key=lambda r: r[4])
    return [(k + 1,) + r[1:] for k, r in enumerate(rows)]     # ids in time order


def bookstore_engine():
    conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
    install_functions(conn)
    checks = create_tables(conn, BOOKSTORE)
    with open(os.path.join(HERE, "data", "bookstore.json"), encoding="utf-8") as f:
        data = json.load(f)
    for table in ("authors", "books"):
        t = data[table]
        rows = t["rows"]
        if table == "books":
            rows = [r[:6] + [decimal.Decimal(r[6])] + r[7:] for r in rows]
        insert_rows(conn, table, t["columns"], rows)
    orders = make_orders([r[0] for r in data["books"]["rows"]], data["customers"])
    insert_rows(conn, "orders", [c[0] for c in BOOKSTORE["orders"]], orders)
    engine = Engine(conn, name="sqlite_engine")
    engine.type_checks = checks
    return engine


def file_engine(path):
    """RIFFQ_SQLITE_PATH: serve an existing SQLite file (read-write)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"RIFFQ_SQLITE_PATH: {path} does not exist")
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5)
    return Engine(conn, name="sqlite_engine")


if __name__ != "sqlite_engine":
    _path = os.environ.get("RIFFQ_SQLITE_PATH")
    ENGINE = file_engine(_path) if _path else bookstore_engine()
    ENGINE.register(comments=None if _path else COMMENTS)

    @riffq.query_handler
    def handle(sql, params, ctx):
        return ENGINE.handle(sql, params, ctx)
