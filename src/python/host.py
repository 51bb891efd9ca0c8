"""Serving from a Python program.

    import riffq

    @riffq.query_handler
    def handle(sql, params, ctx):
        return [(1, 'a')], [('id', 'int8'), ('name', 'text')]

    riffq.serve(port=5433)          # blocks; Ctrl-C stops it

The gateway runs inside this process: Server writes a route file (as JSON,
never to disk) whose only plugin is this program, and starts the same C
server the riffq binary runs.  Statements reach the handlers on the engine's
worker threads; the event loop never runs Python.

Two handler styles share the engine:
- riffq's own: handler(sql, params, ctx) returns a result (see riffq.__doc__);
  the gateway answers transaction control, SET and SHOW itself.
- the callback style of the riffq package built on pgwire (Server.on_query,
  on_connect, on_authentication, on_disconnect; RiffqServer and
  BaseConnection): handler(sql, callback, **kwargs) answers through
  callback, possibly later and from another thread, and sees every
  statement but SHOW server_version.  Adapters below turn each callback
  into the return value or riffq.Error the engine expects.
"""
import atexit as _atexit
import itertools as _itertools
import json as _jsonmod
import sys as _hsys
import threading as _threading
import types as _types
import weakref as _weakref

_server_ids = _itertools.count(1)
_running = set()                # Servers whose engine is serving
_running_lock = _threading.Lock()

# How long a callback-style handler may take to answer (seconds).
ANSWER_TIMEOUT = 300.0


def _parse_addr(addr):
    """'host:port', '[v6]:port', ':port', 'port' or a Unix socket path."""
    if isinstance(addr, tuple):
        host, port = addr
        return str(host), int(port), None
    addr = str(addr)
    if addr.startswith('/'):
        return None, None, addr
    if addr.startswith('['):
        host, sep, port = addr[1:].partition(']:')
        if not sep:
            raise ValueError(f'expected "[address]:port", got {addr!r}')
    elif ':' in addr:
        host, _, port = addr.rpartition(':')
    else:
        host, port = '127.0.0.1', addr
    try:
        port = int(port)
    except ValueError:
        raise ValueError(f'expected "host:port", got {addr!r}') from None
    if not 0 < port < 65536:
        raise ValueError(f'port {port} is out of range')
    return host or '0.0.0.0', port, None


def _in_main_thread():
    return _threading.current_thread() is _threading.main_thread()


def _log_exception(what):
    import traceback
    _hsys.stderr.write(f'riffq: {what}:\n{traceback.format_exc()}')
    _hsys.stderr.flush()


def _accepts(fn, name):
    """Whether fn takes a keyword argument called name (or **kwargs)."""
    import inspect
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    p = params.get(name)
    if p is not None:
        return p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    return any(q.kind == q.VAR_KEYWORD for q in params.values())


def _names(fn, name):
    """Whether fn names a parameter `name` explicitly (not via **kwargs)."""
    import inspect
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


# ---- answers that come through a callback ---------------------------------

class _Answer:
    """Where a callback puts its first answer; later calls are ignored."""
    __slots__ = ('event', 'value', 'lock')

    def __init__(self):
        self.event = _threading.Event()
        self.value = None
        self.lock = _threading.Lock()

    def put(self, value):
        with self.lock:
            if self.event.is_set():
                return
            self.value = value
            self.event.set()

    def wait(self, alive, timeout, what):
        """The answer, once given.  `alive` is a weak reference to the
        callback: when nothing holds the callback any more and it was not
        called, no answer can come.  Waits in short slices so that a cancel
        (an exception raised in this thread) gets through."""
        import time
        deadline = time.monotonic() + timeout
        slice_ = 0.001
        while not self.event.wait(slice_):
            if alive() is None and not self.event.is_set():
                raise Error('XX000', f'the {what} returned without calling its callback',
                            hint='Call callback(result) exactly once, possibly later from '
                                 'another thread.')
            if time.monotonic() > deadline:
                raise Error('57014', f'the {what} did not answer within {timeout:g} seconds')
            slice_ = min(slice_ * 2, 0.05)
        return self.value


class QueryCallback:
    """callback(result, *, is_tag=False, is_error=False), given to a
    callback-style query handler.  result: (schema, rows), an Arrow stream
    (an object with __arrow_c_stream__, or its PyCapsule), a command tag
    with is_tag=True, or (severity, sqlstate, message) with is_error=True."""
    __slots__ = ('_answer', '__weakref__')

    def __init__(self, answer):
        self._answer = answer

    def __call__(self, result=None, *, is_tag=False, is_error=False):
        self._answer.put((result, bool(is_tag), bool(is_error)))


class DecisionCallback:
    """callback(result, message=None, severity=None, sqlstate=None), given
    to connect and authentication hooks: True lets the client in; anything
    else refuses it, with the error message, severity and SQLSTATE if
    given."""
    __slots__ = ('_answer', '__weakref__')

    def __init__(self, answer):
        self._answer = answer

    def __call__(self, result, message=None, severity=None, sqlstate=None):
        self._answer.put((result, message, severity, sqlstate))


# Type names of the callback style's schemas, as its to_arrow maps them.
_COMPAT_TYPES = {'int': 'int8', 'integer': 'int8', 'float': 'float8', 'bool': 'bool',
                 'boolean': 'bool', 'str': 'varchar', 'string': 'varchar', 'date': 'date',
                 'datetime': 'timestamp'}


def _compat_type(t):
    if t is None:
        return 'varchar'
    if not isinstance(t, str):
        return t
    mapped = _COMPAT_TYPES.get(t.lower())
    if mapped:
        return mapped
    try:
        _type_oid(t)
        return t
    except Exception:
        return 'varchar'


def _compat_columns(schema):
    cols = []
    for c in schema:
        if isinstance(c, dict) and 'name' in c:
            cols.append((str(c['name']), _compat_type(c.get('type'))))
        elif isinstance(c, (tuple, list)) and len(c) >= 2:
            cols.append((str(c[0]), _compat_type(c[1])))
        else:
            raise Error('XX000', f'result column {c!r}: expected {{"name": ..., "type": ...}}')
    return Columns(cols)


class _CapsuleStream:
    """An Arrow C stream PyCapsule, as an object the engine consumes."""
    __slots__ = ('_capsule',)

    def __init__(self, capsule):
        self._capsule = capsule

    def __arrow_c_stream__(self, requested_schema=None):
        capsule, self._capsule = self._capsule, None
        if capsule is None:
            raise RuntimeError('this Arrow stream was already consumed')
        return capsule


def _query_result(value):
    """What a QueryCallback was given -> a result the engine encodes."""
    result, is_tag, is_error = value
    if is_error:
        if isinstance(result, (tuple, list)) and len(result) == 3 and \
                all(isinstance(x, str) for x in result):
            severity, sqlstate, message = result
        else:
            severity, sqlstate, message = 'ERROR', 'XX000', 'unknown error'
        raise Error(sqlstate, message)
    if is_tag:
        return Command(result if isinstance(result, str) else '')
    if hasattr(result, '__arrow_c_stream__'):
        return result
    if type(result).__name__ == 'PyCapsule':
        return _CapsuleStream(result)
    if isinstance(result, (tuple, list)) and len(result) == 2 and \
            isinstance(result[0], (list, tuple)) and \
            all(isinstance(c, dict) for c in result[0]):
        schema, rows = result
        return rows, _compat_columns(schema)
    if isinstance(result, (Command, Columns)) or _is_native_result(result):
        return result
    raise Error('XX000', f'the query handler answered with {type(result).__name__}; expected '
                         '(schema, rows), an Arrow stream, a tag (is_tag=True) or an error '
                         '(is_error=True)')


def _is_native_result(r):
    return type(r).__name__ == 'DataFrame' or (
        isinstance(r, tuple) and len(r) == 2 and isinstance(r[0], Columns))


class _ConnIds:
    """connection_id for the callback style: 0, 1, 2... in order of first
    sight, kept per gateway session until it ends."""

    def __init__(self):
        self._ids = {}
        self._next = _itertools.count(0)

    def get(self, ctx):
        sid = ctx['session_id']
        cid = self._ids.get(sid)
        if cid is None:
            cid = self._ids.setdefault(sid, next(self._next))
        return cid

    def drop(self, ctx):
        return self._ids.pop(ctx['session_id'], None)


def _hostname(ctx):
    """The server name a client asked for without TLS SNI: from
    application_name 'sni_hostname=NAME' / 'sni:NAME', or startup options
    '-c sni_hostname=NAME' (also target_hostname, hostname)."""
    app = ctx.get('application_name') or ''
    for prefix in ('sni_hostname=', 'sni:'):
        if app.startswith(prefix) and app[len(prefix):]:
            return app[len(prefix):]
    words = (ctx.get('options') or '').split()
    for i, w in enumerate(words):
        kv = None
        if w == '-c' and i + 1 < len(words):
            kv = words[i + 1]
        elif w.startswith('-c') and len(w) > 2:
            kv = w[2:]
        elif w.startswith('--'):
            kv = w[2:]
        if kv and '=' in kv:
            k, v = kv.split('=', 1)
            if k.replace('-', '_') in ('sni_hostname', 'target_hostname', 'hostname') and v:
                return v
    return None


def _refuse(value, sqlstate, message):
    result, msg, severity, state = value
    if result is True:
        return
    if msg is None and severity is None and state is None:
        raise Error(sqlstate, message)
    raise Error(state or 'XX000', msg if msg is not None else 'rejected')


class _Compat:
    """Adapters from the callback style's hooks to engine handlers."""

    def __init__(self, query, connect, auth, disconnect, timeout):
        self.ids = _ConnIds()
        self.timeout = timeout
        self.query = query
        self.connect = connect
        self.auth = auth
        self.disconnect = disconnect
        self.tag_kw = query is not None and _names(query, 'tag_callback')
        self.server_name_kw = connect is not None and _accepts(connect, 'server_name')
        self.hostname_kw = connect is not None and _names(connect, 'hostname')

    def handlers(self):
        h = {'query_handler': self.on_query, 'on_disconnect': self.on_disconnect}
        if self.connect is not None:
            h['on_connect'] = self.on_connect
        if self.auth is not None:
            h['authenticate'] = self.on_auth
        return h

    def on_query(self, sql, params, ctx):
        answer = _Answer()
        cb = QueryCallback(answer)
        alive = _weakref.ref(cb)
        kw = {'do_describe': bool(ctx['describe']), 'connection_id': self.ids.get(ctx)}
        if ctx.get('extended') and not ctx['describe']:
            kw['query_args'] = list(params)
        if self.tag_kw:
            kw['tag_callback'] = lambda tag, _cb=cb: _cb(tag, is_tag=True)
        try:
            self.query(sql, cb, **kw)
        except Error:
            raise
        except Exception as exc:
            _log_exception('query handler failed')
            raise Error('XX000', f'{type(exc).__name__}: {exc}') from None
        del cb, kw
        return _query_result(answer.wait(alive, self.timeout, 'query handler'))

    def _decide(self, fn, args, kw, ctx, sqlstate, message, what):
        answer = _Answer()
        cb = DecisionCallback(answer)
        alive = _weakref.ref(cb)
        kw = dict(kw, callback=cb)      # the caller's dict must not keep cb alive
        try:
            fn(*args, **kw)
        except Exception:
            _log_exception(f'{what} hook failed')
            self.ids.drop(ctx)
            raise Error(sqlstate, message) from None
        del cb, kw
        try:
            _refuse(answer.wait(alive, self.timeout, f'{what} hook'), sqlstate, message)
        except Error as e:
            self.ids.drop(ctx)
            if e.sqlstate == 'XX000' and 'without calling' in e.message:
                raise Error(sqlstate, message) from None
            raise

    def on_connect(self, ctx):
        kw = {}
        if self.server_name_kw:
            kw['server_name'] = ctx.get('server_name')
        if self.hostname_kw:
            name = _hostname(ctx)
            if name is not None:
                kw['hostname'] = name
        self._decide(self.connect, (self.ids.get(ctx), ctx.get('client_addr') or '',
                                    ctx.get('client_port') or 0),
                     kw, ctx, '28000', 'Connection rejected', 'connect')

    def on_auth(self, user, password, ctx):
        kw = {}
        if ctx.get('database') is not None:
            kw['database'] = ctx['database']
        self._decide(self.auth, (self.ids.get(ctx), user, password, ctx.get('client_addr') or ''),
                     kw, ctx, '28P01', 'Authentication failed', 'authentication')
        return True

    def on_disconnect(self, ctx):
        cid = self.ids.drop(ctx)
        if cid is None:
            # a session that ran no query and met no hook still had an id
            cid = next(self.ids._next)
        if self.disconnect is not None:
            try:
                self.disconnect(cid, ctx.get('client_addr') or '', ctx.get('client_port') or 0)
            except Exception:
                _log_exception('disconnect hook failed')


# ---- the server -------------------------------------------------------------

_table_entry = _table_spec    # riffq.py: the same checks as riffq.register_table


def _compat_table_columns(columns):
    """[{"col": {"type": "int", "nullable": False}}, ...] -> (name, type, nullable)."""
    if not isinstance(columns, list):
        raise TypeError('columns must be a list')
    out = []
    for c in columns:
        if isinstance(c, (tuple, list)):
            name, typ, nullable = (tuple(c) + (True,))[:3] if len(c) == 2 else tuple(c)
            out.append((str(name), _compat_type(typ), bool(nullable)))
            continue
        if not isinstance(c, dict) or len(c) != 1:
            raise ValueError('each column must be a single-key dict')
        (name, spec), = c.items()
        if not isinstance(spec, dict) or 'type' not in spec:
            raise ValueError('missing type')
        if 'nullable' not in spec:
            raise ValueError('missing nullable')
        out.append((str(name), _compat_type(spec['type']), bool(spec['nullable'])))
    return out


class Server:
    """A gateway serving this program's handlers on one address.

    riffq style: handlers decorated with @riffq.query_handler (and
    on_connect, on_disconnect, authenticate) at module level, or given with
    server.query_handler(fn).  Callback style: server.on_query(cb) and the
    other on_* methods (see the module docstring)."""

    def __init__(self, addr='127.0.0.1:5433', *, log_level='warning', workers=4,
                 answer_timeout=ANSWER_TIMEOUT):
        self.addr = addr
        self._host, self._port, self._unix = _parse_addr(addr)
        self._log_level = log_level
        self._workers = int(workers)
        self._answer_timeout = float(answer_timeout)
        self._handlers = {}         # riffq style
        self._compat = {}           # callback style: query, connect, auth, disconnect
        self._tables = []
        self._databases = []
        self._schemas = []
        self._lazy_catalog = None
        self._tls = None
        self._shutdown = []
        self._engine = None
        self._module_name = f'riffq._host{next(_server_ids)}'
        self.stopped_by = None      # the signal number that stopped start(), if any

    # -- riffq style ----------------------------------------------------------

    def query_handler(self, fn):
        """Decorator/setter: fn(sql, params, ctx) answers every statement."""
        self._handlers['query_handler'] = fn
        return fn

    def authenticate(self, fn):
        """Decorator/setter: fn(user, password, ctx) -> bool checks logins."""
        self._handlers['authenticate'] = fn
        return fn

    # -- callback style -------------------------------------------------------

    def on_query(self, cb):
        """cb(sql, callback, *, do_describe, connection_id, query_args=None)."""
        self._compat['query'] = cb

    set_callback = on_query

    def on_connect(self, cb):
        """cb(connection_id, ip, port, *, callback, server_name=None)."""
        self._compat['connect'] = cb

    def on_authentication(self, cb):
        """cb(connection_id, user, password, host, *, callback, database=None);
        setting it makes clients send a cleartext password."""
        self._compat['auth'] = cb

    def on_disconnect(self, cb):
        """cb(connection_id, ip, port), after the client left."""
        self._compat['disconnect'] = cb

    def handle_shutdown(self, fn):
        """fn() runs once when SIGINT or SIGTERM stops a blocking start()."""
        self._shutdown.append(fn)
        return fn

    on_shutdown = handle_shutdown

    def register_database(self, database_name):
        self._databases.append(str(database_name))

    def register_schema(self, database_name, schema_name):
        self._schemas.append((str(database_name), str(schema_name)))

    def register_table(self, *args, **kw):
        """register_table(database, schema, table, [{"col": {"type": ..., "nullable": ...}}])
        (callback style), register_table(schema, table, [(name, type[, nullable])],
        primary_key=None, comment=None) (riffq style), or the older
        register_table(table, [(name, type, nullable)])."""
        if len(args) == 4:
            db, schema, table, columns = args
            self._tables.append(_table_entry(schema, table, _compat_table_columns(columns)))
            self._tables[-1] = self._tables[-1] + (str(db),)
        elif len(args) == 2 and not kw:
            table, columns = args
            self._tables.append(_table_entry('public', table, _compat_table_columns(columns)))
        else:
            self._tables.append(_table_entry(*args, **kw))

    def set_lazy_catalog(self, source):
        """A source of databases/schemas/relations/columns, asked on every
        catalog scan (catalog emulation)."""
        self._lazy_catalog = source

    def set_tls(self, cert, key):
        """Serve TLS with this certificate chain and key (PEM files)."""
        for path in (cert, key):
            with open(path, 'rb'):
                pass
        self._tls = (str(cert), str(key))
        return self

    # -- running ------------------------------------------------------------

    def _plugin_handlers(self):
        if self._compat:
            if self._compat.get('query') is None:
                raise RuntimeError('No callback set. Use on_query() before starting the server.')
            return _Compat(self._compat.get('query'), self._compat.get('connect'),
                           self._compat.get('auth'), self._compat.get('disconnect'),
                           self._answer_timeout).handlers(), True
        h = dict(_handlers)
        h.update(self._handlers)
        if h.get('query_handler') is None:
            raise RuntimeError('no query handler: decorate a function with @riffq.query_handler, '
                               'or use server.query_handler(fn) or server.on_query(cb)')
        return h, False

    def _config(self, tls, server_version, handlers, compat):
        if self._unix:
            listen = [{'unix': self._unix}]
        else:
            listen = [{'host': self._host, 'port': self._port}]
        if compat:
            # every statement is the handler's, except the server's version
            # (drivers ask for it) and the isolation level
            routes = [
                {'name': 'server', 'to': 'local', 'match': {'regex':
                    '^[[:space:]]*show[[:space:]]+(server_version|transaction[[:space:]]+'
                    'isolation[[:space:]]+level)[[:space:]]*;?[[:space:]]*$'}},
                {'name': 'app', 'match': {}, 'to': 'plugin:app'},
            ]
        else:
            # the gateway keeps the session (transactions, settings) for
            # handlers that only want to answer queries
            routes = [
                {'name': 'session', 'match': {'statement': ['transaction', 'set', 'show']},
                 'to': 'local'},
                {'name': 'app', 'match': {}, 'to': 'plugin:app'},
            ]
        cfg = {
            'listen': listen,
            'log_level': self._log_level,
            'limits': {'plugin_workers': self._workers},
            'plugins': {'app': {'import': self._module_name}},
            'routes': routes,
        }
        if compat:
            # clients of such servers pass their own -c name=value options
            cfg['unknown_settings'] = 'accept'
        if handlers.get('authenticate') is not None:
            cfg['auth'] = {'method': 'password', 'plugin': 'app'}
        if tls:
            if not self._tls:
                raise ValueError('start(tls=True) needs set_tls(cert, key) first')
            cfg['tls'] = {'cert': self._tls[0], 'key': self._tls[1], 'mode': 'allow'}
        if server_version:
            cfg['server_version'] = str(server_version)
        return cfg

    def start(self, tls=False, catalog_emulation=False, server_version=None, *,
              background=False):
        """Serve.  Blocks until SIGINT/SIGTERM (or stop() from another
        thread) unless background=True, in which case it returns once the
        listeners are open."""
        if self._engine is not None and self._engine.running:
            raise RuntimeError('this server is already running')
        handlers, compat = self._plugin_handlers()
        if catalog_emulation:
            _hsys.stderr.write('riffq: catalog emulation is not available in this version; '
                               'catalog queries go to the query handler\n')
        mod = _types.ModuleType(self._module_name)
        mod.__riffq_plugin__ = {'handlers': handlers, 'tables': [t[:5] for t in self._tables]}
        _hsys.modules[self._module_name] = mod
        signals = not background and _in_main_thread()
        try:
            cfg = self._config(tls, server_version, handlers, compat)
            self._engine = _Engine(_jsonmod.dumps(cfg), f'<riffq.Server {self.addr}>')
            with _running_lock:
                _running.add(self)
            got = self._engine.start(background=background, signals=signals,
                                     on_signal=self._on_signal if signals else None)
        except BaseException:
            with _running_lock:
                _running.discard(self)
            _hsys.modules.pop(self._module_name, None)
            raise
        if background:
            return None
        self.stopped_by = got or None
        with _running_lock:
            _running.discard(self)
        _hsys.modules.pop(self._module_name, None)
        return None

    start.__text_signature__ = \
        '($self, /, tls=False, catalog_emulation=False, server_version=None, *, background=False)'

    def _on_signal(self, signum):
        fns, self._shutdown = self._shutdown, []
        for fn in fns:
            try:
                fn()
            except Exception:
                _log_exception('shutdown hook failed')

    def stop(self, wait=True):
        """Stop serving (from any thread); clients get 57P01."""
        eng = self._engine
        if eng is None:
            return
        eng.stop()
        if wait:
            eng.wait()
        with _running_lock:
            _running.discard(self)

    def wait(self, timeout=None):
        """Block until a background server stopped; False on timeout."""
        eng = self._engine
        return True if eng is None else eng.wait(-1 if timeout is None else timeout)

    @property
    def running(self):
        return self._engine is not None and self._engine.running

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def serve(port=5433, host='127.0.0.1', *, tls=None, **kw):
    """Serve the @riffq.query_handler of this program on host:port until
    Ctrl-C (or SIGTERM, or riffq.shutdown() from another thread).
    tls: (cert, key) paths to serve TLS."""
    srv = Server(f'[{host}]:{port}' if ':' in host else f'{host}:{port}', **kw)
    if tls:
        srv.set_tls(*tls)
    srv.start(tls=bool(tls))


def shutdown():
    """Stop every server this process runs (any thread)."""
    with _running_lock:
        servers = list(_running)
    for s in servers:
        s.stop(wait=False)


@_atexit.register
def _stop_all_at_exit():
    with _running_lock:
        servers = list(_running)
    for s in servers:
        s.stop()


# ---- the class-based API --------------------------------------------------

def _noop(*args, **kwargs):
    return None


class BaseConnection:
    """One instance per client of a RiffqServer; subclass it and implement
    handle_auth and handle_query."""
    conn_id = None

    def __init__(self, conn_id, executor):
        self.conn_id = conn_id
        self.executor = executor

    def send_reader(self, reader, callback):
        """Answer with an Arrow stream (pyarrow RecordBatchReader, or any
        object with __arrow_c_stream__)."""
        if hasattr(reader, '__arrow_c_stream__'):
            return callback(reader.__arrow_c_stream__())
        import pyarrow.cffi  # noqa: F401  (only for readers without the protocol)
        from pyarrow.cffi import export_stream
        return callback(export_stream(reader))

    def arrow_batch(self, values, names):
        """A one-batch pyarrow RecordBatchReader from arrays (needs pyarrow)."""
        import pyarrow as pa
        schema = pa.schema(list(zip(names, [v.type for v in values])))
        return pa.RecordBatchReader.from_batches(schema, [pa.record_batch(values, names=names)])

    def handle_auth(self, user, password, host, database=None, callback=_noop):
        return callback(user == 'user' and password == 'secret')

    def handle_connect(self, ip, port, server_name=None, callback=_noop):
        return callback(True)

    def handle_query(self, sql, callback=_noop, **kwargs):
        raise NotImplementedError('subclasses of riffq.BaseConnection implement handle_query')

    def handle_disconnect(self, ip, port, callback=_noop):
        return callback(True)


class RiffqServer:
    """A Server whose clients are each handled by an instance of
    connection_cls (a BaseConnection subclass)."""

    def __init__(self, listen_addr, connection_cls=BaseConnection, **server_kw):
        from concurrent.futures import ThreadPoolExecutor
        self._server = Server(listen_addr, **server_kw)
        self.executor = ThreadPoolExecutor(max_workers=4)
        self._server.on_authentication(self.handle_auth)
        self._server.on_query(self.handle_query)
        self._server.on_connect(self.handle_connect)
        self._server.on_disconnect(self.handle_disconnect)
        self.connections = {}
        self.connection_cls = connection_cls

    def set_tls(self, crt, key):
        import os
        if not os.path.exists(crt):
            raise OSError(f'Certificate not found in {crt}')
        if not os.path.exists(key):
            raise OSError(f'Certificate keyfile not found in {key}')
        self._server.set_tls(crt, key)

    def register_database(self, database_name):
        self._server.register_database(database_name)

    def register_schema(self, database_name, schema_name):
        self._server.register_schema(database_name, schema_name)

    def register_table(self, database_name, schema_name, table_name, columns):
        self._server.register_table(database_name, schema_name, table_name, columns)

    def set_lazy_catalog(self, source):
        self._server.set_lazy_catalog(source)

    def handle_shutdown(self, fn):
        return self._server.handle_shutdown(fn)

    def get_connection(self, connection_id):
        conn = self.connections.get(connection_id)
        if conn is None:
            conn = self.connection_cls(connection_id, self.executor)
            self.connections[connection_id] = conn
        return conn

    def handle_auth(self, connection_id, user, password, host, database=None, callback=_noop):
        return self.get_connection(connection_id).handle_auth(
            user, password, host, database=database, callback=callback)

    def handle_connect(self, connection_id, ip, port, server_name=None, callback=_noop):
        conn = self.get_connection(connection_id)
        if _accepts(conn.handle_connect, 'server_name'):
            return conn.handle_connect(ip, port, callback=callback, server_name=server_name)
        return conn.handle_connect(ip, port, callback=callback)

    def handle_query(self, sql, callback, connection_id=None, tag_callback=None, **kwargs):
        conn = self.get_connection(connection_id)
        if tag_callback is not None and _names(conn.handle_query, 'tag_callback'):
            kwargs['tag_callback'] = tag_callback
        return conn.handle_query(sql, callback=callback, **kwargs)

    def handle_disconnect(self, connection_id, ip, port, callback=_noop):
        conn = self.connections.pop(connection_id, None)
        if conn is not None:
            conn.handle_disconnect(ip, port, callback=callback)

    def start(self, tls=False, catalog_emulation=False, server_version=None, **kw):
        return self._server.start(tls=tls, catalog_emulation=catalog_emulation,
                                  server_version=server_version, **kw)

    def stop(self):
        self._server.stop()


def _submodule(name, **attrs):
    mod = _types.ModuleType(f'riffq.{name}')
    mod.__dict__.update(attrs)
    _hsys.modules[f'riffq.{name}'] = mod
    return mod


# riffq._riffq and riffq.connection: where programs written for the pgwire
# based riffq package import these from
_riffq = _submodule('_riffq', Server=Server)
connection = _submodule('connection', BaseConnection=BaseConnection, RiffqServer=RiffqServer,
                        Server=Server)

for _c in (Server, BaseConnection, RiffqServer, QueryCallback, DecisionCallback):
    _c.__module__ = 'riffq'
del _c
