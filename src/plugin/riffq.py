"""riffq: what the gateway gives its Python plugins.

    import riffq

    @riffq.query_handler
    def handle(sql, params, ctx):
        return [(1, 'a')], [('id', 'int8'), ('name', 'text')]

A handler returns (rows, columns), a pandas DataFrame,
(riffq.Columns([...]), iterator_of_batches), riffq.Command(tag), or raises
riffq.Error(sqlstate, message, detail=None, hint=None).
"""
import sys as _sys
import time as _time

class Error(Exception):
    """Answer the client with this SQLSTATE, message, detail and hint."""
    def __init__(self, sqlstate, message, detail=None, hint=None):
        super().__init__(sqlstate, message, detail, hint)
        self.sqlstate = str(sqlstate)
        self.message = str(message)
        self.detail = None if detail is None else str(detail)
        self.hint = None if hint is None else str(hint)
    def __str__(self):
        return self.message

class QueryCanceled(BaseException):
    """Raised inside a handler whose query was canceled (CancelRequest,
    statement_timeout).  A BaseException, so `except Exception` in a
    handler does not swallow it."""

class Command:
    """A result without rows: riffq.Command('INSERT 0 3')."""
    __slots__ = ('tag',)
    def __init__(self, tag):
        self.tag = str(tag)
    def __repr__(self):
        return f'riffq.Command({self.tag!r})'

class Columns:
    """Result columns, [(name, type), ...]: type is a Postgres type name
    ('int8', 'text', 'timestamptz', 'numeric', ...), a numpy/pandas dtype
    ('int64', 'float64', 'object', 'datetime64[ns]', ...), a Python type
    (int, str, datetime.date, ...) or an OID."""
    __slots__ = ('columns',)
    def __init__(self, columns):
        self.columns = _columns(columns)
    def __len__(self):
        return len(self.columns)
    def __iter__(self):
        return iter(self.columns)
    def __repr__(self):
        return f'riffq.Columns({self.columns!r})'

_handlers = {}
_tables = []

def query_handler(fn):
    """Decorator: fn(sql, params, ctx) answers the statements routed to
    the plugin that defines it."""
    if not _register('query_handler', fn):
        _handlers['query_handler'] = fn
    return fn

def on_connect(fn):
    """Decorator: fn(ctx) runs when a client connects; raising riffq.Error
    rejects the login."""
    if not _register('on_connect', fn):
        _handlers['on_connect'] = fn
    return fn

def on_disconnect(fn):
    """Decorator: fn(ctx) runs when a client disconnects."""
    if not _register('on_disconnect', fn):
        _handlers['on_disconnect'] = fn
    return fn

def authenticate(fn):
    """Decorator: fn(user, password, ctx) checks a login when the route
    file says "auth": {"method": "password", "plugin": NAME}.  Return True to
    let the client in; False (or raise riffq.Error) to refuse it."""
    if not _register('authenticate', fn):
        _handlers['authenticate'] = fn
    return fn

def register_table(schema, name, columns, primary_key=None, comment=None):
    """Declare a table this plugin serves; columns as (name, type) or
    (name, type, nullable)."""
    spec = _table_spec(schema, name, columns, primary_key, comment)
    if not _register_table(*spec):
        _tables.append(spec)

def _table_spec(schema, name, columns, primary_key=None, comment=None):
    cols = _columns(columns, True)
    if primary_key is None:
        pk = []
    elif isinstance(primary_key, str):
        pk = [primary_key]
    else:
        pk = [str(c) for c in primary_key]
    names = {c[0] for c in cols}
    for c in pk:
        if c not in names:
            raise ValueError(f'primary key column {c!r} is not a column of {schema}.{name}')
    comment = None if comment is None else str(comment)
    return (str(schema), str(name), cols, pk, comment)

_PYTYPES = {'int': 'int8', 'float': 'float8', 'str': 'text', 'bool': 'bool',
            'bytes': 'bytea', 'bytearray': 'bytea', 'dict': 'jsonb', 'list': 'jsonb',
            'datetime': 'timestamp', 'date': 'date', 'time': 'time',
            'timedelta': 'interval', 'Decimal': 'numeric', 'UUID': 'uuid',
            'Timestamp': 'timestamp', 'bool_': 'bool'}

def _type_name(t):
    if isinstance(t, (str, int)) and not isinstance(t, bool):
        return t
    if isinstance(t, type):
        if t.__module__ in ('builtins', 'datetime', 'decimal', 'uuid') or\
           t.__module__.startswith('pandas'):
            return _PYTYPES.get(t.__name__, t.__name__)
        if t.__module__ == 'numpy':
            return _PYTYPES.get(t.__name__, t.__name__)
    return str(t)

def _columns(spec, table=False):
    if isinstance(spec, Columns):
        return spec.columns
    out = []
    for c in spec:
        nullable = True
        if isinstance(c, str):
            name, typ = c, 'text'
        elif isinstance(c, dict):
            if 'name' in c:
                name, typ, nullable = c['name'], c.get('type', 'text'), c.get('nullable', True)
            elif len(c) == 1:
                (name, d), = c.items()
                if isinstance(d, dict):
                    typ, nullable = d.get('type', 'text'), d.get('nullable', True)
                else:
                    typ = d
            else:
                raise TypeError(f'column {c!r}: expected {{"name": ..., "type": ...}}')
        else:
            c = tuple(c)
            if len(c) == 2:
                name, typ = c
            elif len(c) == 3 and table:
                name, typ, nullable = c
            else:
                raise TypeError(f'column {c!r}: expected (name, type)' +
                                (' or (name, type, nullable)' if table else ''))
        out.append((str(name), _type_oid(_type_name(typ)), bool(nullable)))
    return out

def _load(modname, path, is_import=False):
    if is_import:
        return _import(path)
    import importlib.util, os
    d = os.path.dirname(os.path.abspath(path))
    if d not in _sys.path:
        _sys.path.insert(0, d)
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:
        raise ImportError(f'cannot import {path!r}: not a Python source file')
    mod = importlib.util.module_from_spec(spec)
    _sys.modules[modname] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        if _sys.modules.get(modname) is mod:
            del _sys.modules[modname]
        raise
    return mod

def _import(name):
    # A plugin named by module ("import": "pkg.plugin").  A module that is
    # already loaded is executed again, so that its decorators register into
    # the plugin being loaded (a reload gets the file's current code).  A
    # Python program serving with riffq.Server is a namespace carrying its
    # handlers in __riffq_plugin__ instead: it is not a file to run again.
    import importlib
    mod = _sys.modules.get(name)
    spec = getattr(mod, '__riffq_plugin__', None)
    if spec is not None:
        for kind, fn in spec['handlers'].items():
            if fn is not None:
                _register(kind, fn)
        for t in spec['tables']:
            _register_table(*t)
        return mod
    if mod is not None:
        return importlib.reload(mod)
    return importlib.import_module(name)

def _format_exc(exc):
    import traceback
    text = str(exc)
    t = type(exc)
    name = t.__qualname__ if t.__module__ == 'builtins' else f'{t.__module__}.{t.__qualname__}'
    summary = f'{name}: {text}' if text else name
    return summary, ''.join(traceback.format_exception(exc)).rstrip()

def _isnull(v):
    try:
        return v is None or bool(v != v)
    except Exception:
        return True

def _infer(vals):
    import datetime, decimal, uuid
    for v in vals:
        if _isnull(v):
            continue
        if isinstance(v, bool): return 'bool'
        if isinstance(v, int): return 'int8'
        if isinstance(v, float): return 'float8'
        if isinstance(v, str): return 'text'
        if isinstance(v, (bytes, bytearray, memoryview)): return 'bytea'
        if isinstance(v, datetime.datetime):
            return 'timestamptz' if v.tzinfo is not None else 'timestamp'
        if isinstance(v, datetime.date): return 'date'
        if isinstance(v, datetime.time): return 'timetz' if v.tzinfo is not None else 'time'
        if isinstance(v, datetime.timedelta): return 'interval'
        if isinstance(v, decimal.Decimal): return 'numeric'
        if isinstance(v, uuid.UUID): return 'uuid'
        if isinstance(v, (dict, list)): return 'jsonb'
        t = type(v)
        if t.__module__ == 'numpy':
            k = getattr(getattr(v, 'dtype', None), 'kind', '')
            return {'b': 'bool', 'i': 'int8', 'u': 'int8', 'f': 'float8',
                    'M': 'timestamp', 'm': 'interval'}.get(k, 'text')
        return 'text'
    return 'text'

def _df_arrays(df):
    # Per column: (name, type name, kind, payload, mask, unit).  kind 'n':
    # payload is a numeric/bool numpy array read in C through the buffer
    # protocol; 'M': datetime64 as an int64 view in `unit` (UTC for tz-aware
    # columns); 'O': a list of Python objects.  mask: a bool array marking
    # NULLs of pandas' nullable dtypes (Int64, boolean, Float64).
    import numpy as np
    out = []
    names = df.columns
    for i in range(df.shape[1]):
        s = df.iloc[:, i]
        dt = s.dtype
        name = str(names[i])
        kind = getattr(dt, 'kind', 'O')
        if isinstance(dt, np.dtype) and kind in 'iufb':
            out.append((name, str(dt), 'n', s.to_numpy(), None, None))
        elif kind == 'M':
            if getattr(dt, 'tz', None) is not None:
                arr = s.to_numpy(dtype='datetime64[ns]')
            else:
                arr = s.to_numpy()
            unit = np.datetime_data(arr.dtype)[0]
            out.append((name, str(dt), 'M', arr.view('int64'), None, unit))
        elif kind in 'iufb' and hasattr(dt, 'numpy_dtype'):
            mask = s.isna().to_numpy()
            arr = s.to_numpy(dtype=dt.numpy_dtype, na_value=(False if kind == 'b' else 0))
            out.append((name, str(dt), 'n', arr, mask, None))
        else:
            vals = s.tolist()
            typ = _infer(vals) if str(dt) in ('object', 'category') else str(dt)
            out.append((name, typ, 'O', vals, None, None))
    return out

def _np_scalar(x):
    import numpy as np
    if isinstance(x, np.datetime64):
        return None if np.isnat(x) else x.astype('datetime64[us]').item()
    if isinstance(x, np.timedelta64):
        return None if np.isnat(x) else x.astype('timedelta64[us]').item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x.item()

def _json_default(o):
    import datetime, decimal, uuid
    if isinstance(o, (datetime.date, datetime.time)):
        return o.isoformat()
    if isinstance(o, decimal.Decimal):
        return int(o) if o == o.to_integral_value() else float(o)
    if isinstance(o, uuid.UUID):
        return str(o)
    if isinstance(o, (bytes, bytearray, memoryview)):
        return '\\x' + bytes(o).hex()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if hasattr(o, 'tolist'):
        return o.tolist()
    raise TypeError(f'{type(o).__name__} is not JSON serializable')

def _json_dumps(v):
    import json
    return json.dumps(v, default=_json_default, ensure_ascii=False)

_orig_sleep = _time.sleep
_time.sleep = sleep
