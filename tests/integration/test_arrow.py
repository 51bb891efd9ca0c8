"""
Arrow results: the Arrow C stream interface consumed in C (src/plugin/arrow.c)
and produced by riffq.helpers.to_arrow.

ARROW_SRC below is a small, independent Arrow producer and reader written
with ctypes straight from the C data interface spec: it builds ArrowSchema /
ArrowArray / ArrowArrayStream structs and an "arrow_array_stream" PyCapsule,
and its release callbacks keep a ledger, so every test can assert that each
exported struct was released exactly once.  The same source runs in this
process (to read riffq's own producer) and inside the gateway (written next
to a test plugin, which serves its streams).

(a)/(b) every mapped type, NULLs, sliced arrays, several batches, empty
streams, producer errors, unsupported types, Describe and cancel, through
build/riffq, read with psycopg (text and binary) and asyncpg; (c) the
producer, riffq.helpers.to_arrow, read by the ctypes reader, through a
gateway plugin and through the importable module's own server.
"""
import asyncio
import datetime as dt
import math
import os
import subprocess
import sys
import threading
import time
import types
from decimal import Decimal

import asyncpg
import psycopg
import pytest

import harness
from harness import PASSWORD, USER

ARROW_SRC = r'''
"""A minimal Arrow C stream producer and reader in pure Python (ctypes)."""
import ctypes
import errno
import struct
import time
import types
from ctypes import (CFUNCTYPE, POINTER, Structure, addressof, c_char, c_char_p, c_int,
                    c_int64, c_void_p, cast, pointer)


class ArrowSchema(Structure):
    pass


class ArrowArray(Structure):
    pass


class ArrowArrayStream(Structure):
    pass


SCHEMA_RELEASE = CFUNCTYPE(None, POINTER(ArrowSchema))
ARRAY_RELEASE = CFUNCTYPE(None, POINTER(ArrowArray))
GET_SCHEMA = CFUNCTYPE(c_int, POINTER(ArrowArrayStream), POINTER(ArrowSchema))
GET_NEXT = CFUNCTYPE(c_int, POINTER(ArrowArrayStream), POINTER(ArrowArray))
GET_LAST_ERROR = CFUNCTYPE(c_void_p, POINTER(ArrowArrayStream))
STREAM_RELEASE = CFUNCTYPE(None, POINTER(ArrowArrayStream))
CAPSULE_DESTRUCTOR = CFUNCTYPE(None, c_void_p)

ArrowSchema._fields_ = [
    ("format", c_char_p), ("name", c_char_p), ("metadata", c_char_p), ("flags", c_int64),
    ("n_children", c_int64), ("children", POINTER(POINTER(ArrowSchema))),
    ("dictionary", POINTER(ArrowSchema)), ("release", SCHEMA_RELEASE), ("private_data", c_void_p)]
ArrowArray._fields_ = [
    ("length", c_int64), ("null_count", c_int64), ("offset", c_int64), ("n_buffers", c_int64),
    ("n_children", c_int64), ("buffers", POINTER(c_void_p)),
    ("children", POINTER(POINTER(ArrowArray))), ("dictionary", POINTER(ArrowArray)),
    ("release", ARRAY_RELEASE), ("private_data", c_void_p)]
ArrowArrayStream._fields_ = [
    ("get_schema", GET_SCHEMA), ("get_next", GET_NEXT), ("get_last_error", GET_LAST_ERROR),
    ("release", STREAM_RELEASE), ("private_data", c_void_p)]

CAPSULE_NAME = ctypes.create_string_buffer(b"arrow_array_stream")
_api = ctypes.pythonapi
_api.PyCapsule_New.restype = ctypes.py_object
_api.PyCapsule_New.argtypes = [c_void_p, c_char_p, c_void_p]
_api.PyCapsule_GetPointer.restype = c_void_p
_api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, c_char_p]
_api.PyCapsule_IsValid.restype = c_int
_api.PyCapsule_IsValid.argtypes = [ctypes.py_object, c_char_p]
_raw_get_pointer = ctypes.PYFUNCTYPE(c_void_p, c_void_p, c_char_p)(("PyCapsule_GetPointer", _api))

# ---- the ledger: what was exported, what was released ----

LEDGER = {}


def reset_ledger():
    LEDGER.clear()
    LEDGER.update(streams=0, streams_released=0, schemas=0, schemas_released=0, arrays=0,
                  arrays_released=0, double_releases=0, get_next=0, capsules=0, capsules_freed=0,
                  errors=[])


reset_ledger()
_live = {}          # private_data id -> what keeps the struct's memory alive
_ids = iter(range(1, 1 << 62))


def balanced():
    """Whether every exported struct was released exactly once."""
    L = LEDGER
    return (L["streams"] == L["streams_released"] and L["schemas"] == L["schemas_released"]
            and L["arrays"] == L["arrays_released"] and L["double_releases"] == 0
            and L["capsules"] == L["capsules_freed"] and not L["errors"])


def _keep(obj):
    k = next(_ids)
    _live[k] = obj
    return k


def _buf(data):
    """A C buffer holding bytes (never NULL, 8 spare bytes)."""
    b = (c_char * (len(data) + 8)).from_buffer_copy(bytes(data) + bytes(8))
    return b


def _cstr(keep, s):
    b = ctypes.create_string_buffer(s.encode() if isinstance(s, str) else s)
    keep.append(b)
    return cast(b, c_char_p)

# ---- describing columns ----

FIXED = {"c": "b", "C": "B", "s": "h", "S": "H", "i": "i", "I": "I", "l": "q", "L": "Q",
         "e": "e", "f": "f", "g": "d", "tdD": "i", "tdm": "q", "tts": "i", "ttm": "i",
         "ttu": "q", "ttn": "q"}


class Arr:
    """One column's array.  values are the logical values (None = NULL);
    offset junk values are put in front of them and skipped through the
    array's offset field; dictionary = (format, values) makes values the
    indices of a dictionary-encoded array."""

    def __init__(self, fmt, values, offset=0, dictionary=None, junk=None, children=()):
        self.fmt, self.values, self.offset = fmt, list(values), offset
        self.dictionary = Arr(*dictionary) if dictionary else None
        self.children = list(children)
        if junk is None:
            junk = next((v for v in self.values if v is not None), None)
        self.physical = [junk] * offset + self.values


def _bitmap(bits):
    out = bytearray((len(bits) + 7) // 8 + 1)
    for i, b in enumerate(bits):
        if b:
            out[i >> 3] |= 1 << (i & 7)
    return bytes(out)


def _encode(a):
    """-> (buffers as bytes or None, null_count)"""
    vals, fmt = a.physical, a.fmt
    nulls = sum(v is None for v in a.values)
    validity = _bitmap([v is not None for v in vals]) if any(v is None for v in vals) else None
    null_count = -1 if a.offset else nulls
    if fmt == "n":
        return [], len(a.values)
    if fmt == "b":
        return [validity, _bitmap([bool(v) for v in vals])], null_count
    if fmt in FIXED or fmt.startswith("ts"):
        code = FIXED.get(fmt, "q")
        return [validity, b"".join(struct.pack("<" + code, v or 0) for v in vals)], null_count
    if fmt.startswith("d:"):
        parts = fmt[2:].split(",")
        width = int(parts[2]) // 8 if len(parts) > 2 else 16
        return [validity, b"".join((v or 0).to_bytes(width, "little", signed=True) for v in vals)], null_count
    if fmt.startswith("w:"):
        n = int(fmt[2:])
        return [validity, b"".join(v if v is not None else bytes(n) for v in vals)], null_count
    if fmt in ("u", "U", "z", "Z"):
        code = "<i" if fmt in "uz" else "<q"
        data, offsets = b"", [0]
        for v in vals:
            if v is not None:
                data += v.encode() if isinstance(v, str) else v
            offsets.append(len(data))
        return [validity, b"".join(struct.pack(code, o) for o in offsets), data], null_count
    if fmt in ("vu", "vz"):
        views, datas = b"", [b"", b""]
        for i, v in enumerate(vals):
            raw = b"" if v is None else (v.encode() if isinstance(v, str) else v)
            if len(raw) <= 12:
                views += struct.pack("<i", len(raw)) + raw.ljust(12, b"\0")
            else:
                k = i % 2      # alternate between two data buffers
                views += struct.pack("<i4sii", len(raw), raw[:4], k, len(datas[k]))
                datas[k] += raw
        sizes = struct.pack("<qq", len(datas[0]), len(datas[1]))
        return [validity, views] + datas + [sizes], null_count
    raise ValueError("the test producer cannot encode " + fmt)


def _fill_array(out, a, kind="arrays"):
    """Fill the ArrowArray struct out (any memory) with a's data."""
    keep = []
    if a.fmt.startswith("+"):
        buffers, null_count = [None], 0
    else:
        buffers, null_count = _encode(a)
    cbufs = (c_void_p * max(1, len(buffers)))()
    for i, b in enumerate(buffers):
        if b is not None:
            cb = _buf(b)
            keep.append(cb)
            cbufs[i] = addressof(cb)
    keep.append(cbufs)
    kids = [ArrowArray() for _ in a.children]
    for k, ch in zip(kids, a.children):
        _fill_array(k, ch, "arrays")
    kidp = (POINTER(ArrowArray) * max(1, len(kids)))(*[pointer(k) for k in kids])
    keep += [kids, kidp]
    dictionary = None
    if a.dictionary is not None:
        dictionary = ArrowArray()
        _fill_array(dictionary, a.dictionary)
        keep.append(dictionary)
    out.length = len(a.values)
    out.null_count = null_count
    out.offset = a.offset
    out.n_buffers = len(buffers)
    out.n_children = len(kids)
    out.buffers = cbufs
    out.children = kidp
    out.dictionary = pointer(dictionary) if dictionary is not None else None
    out.release = _release_array
    out.private_data = _keep(keep)
    LEDGER["arrays"] += 1


def _release_node(p, released, counter):
    """The release callback of an ArrowArray or ArrowSchema: release the
    children and the dictionary, then mark the node released (released is
    the NULL callback of its type); a second call is counted as an error."""
    node = p.contents
    keep = _live.pop(node.private_data or 0, None)
    if keep is None:
        LEDGER["double_releases"] += 1
        return
    for i in range(node.n_children):
        ch = node.children[i]
        if ch.contents.release:
            ch.contents.release(ch)
    if node.dictionary and node.dictionary.contents.release:
        node.dictionary.contents.release(node.dictionary)
    node.release = released
    LEDGER[counter] += 1


@ARRAY_RELEASE
def _release_array(p):
    _release_node(p, ARRAY_RELEASE(), "arrays_released")


class Batch:
    """A record batch: one Arr per column; offset/length slice the struct
    array itself; valid (a list of bools) gives it a validity bitmap."""

    def __init__(self, columns, offset=0, length=None, valid=None):
        self.columns, self.offset, self.valid = columns, offset, valid
        self.length = (len(columns[0].values) - offset) if length is None else length

    def fill(self, out):
        keep = []
        kids = [ArrowArray() for _ in self.columns]
        for k, c in zip(kids, self.columns):
            _fill_array(k, c)
        kidp = (POINTER(ArrowArray) * max(1, len(kids)))(*[pointer(k) for k in kids])
        cbufs = (c_void_p * 1)()
        if self.valid is not None:
            vb = _buf(_bitmap(self.valid))
            keep.append(vb)
            cbufs[0] = addressof(vb)
        keep += [kids, kidp, cbufs]
        out.length = self.length
        out.null_count = -1 if self.valid is not None else 0
        out.offset = self.offset
        out.n_buffers = 1
        out.n_children = len(kids)
        out.buffers = cbufs
        out.children = kidp
        out.dictionary = None
        out.release = _release_array
        out.private_data = _keep(keep)
        LEDGER["arrays"] += 1

# ---- schemas ----


def _fill_schema(out, fmt, name, children=(), dictionary=None, flags=2):
    keep = []
    kids = [ArrowSchema() for _ in children]
    for k, (cf, cn, cd) in zip(kids, children):
        _fill_schema(k, cf, cn, dictionary=cd)
    kidp = (POINTER(ArrowSchema) * max(1, len(kids)))(*[pointer(k) for k in kids])
    keep += [kids, kidp]
    d = None
    if dictionary is not None:
        d = ArrowSchema()
        _fill_schema(d, dictionary, None)
        keep.append(d)
    out.format = _cstr(keep, fmt)
    out.name = _cstr(keep, name) if name is not None else None
    out.metadata = None
    out.flags = flags
    out.n_children = len(kids)
    out.children = kidp
    out.dictionary = pointer(d) if d is not None else None
    out.release = _release_schema
    out.private_data = _keep(keep)
    LEDGER["schemas"] += 1


@SCHEMA_RELEASE
def _release_schema(p):
    _release_node(p, SCHEMA_RELEASE(), "schemas_released")

# ---- streams ----


class Producer:
    """An object with __arrow_c_stream__.  fields: [(name, format)] or
    [(name, index format, dictionary values format)] or
    [(name, "+l", [(child name, child format, None)])]; batches: [Batch].
    fail_at=k: get_next fails with EIO before batch k.  forever: repeat the
    batches, sleeping `sleep` seconds before each."""

    def __init__(self, fields, batches, fail_at=None, fail_schema=False, forever=False, sleep=0):
        self.fields, self.batches = fields, batches
        self.fail_at, self.fail_schema = fail_at, fail_schema
        self.forever, self.sleep = forever, sleep

    def __arrow_c_stream__(self, requested_schema=None):
        state = types.SimpleNamespace(p=self, pos=0, error=ctypes.create_string_buffer(256))
        stream = ArrowArrayStream()
        stream.get_schema = _get_schema
        stream.get_next = _get_next
        stream.get_last_error = _get_last_error
        stream.release = _release_stream
        stream.private_data = _keep(state)
        state.memory = stream
        LEDGER["streams"] += 1
        LEDGER["capsules"] += 1
        # the capsule owns the struct's memory until its destructor runs
        _capsule_memory[addressof(stream)] = stream
        return _api.PyCapsule_New(addressof(stream), cast(CAPSULE_NAME, c_char_p), _capsule_free_ptr)


_capsule_memory = {}


def _schema_children(fields):
    out = []
    for f in fields:
        if len(f) == 2:
            out.append((f[1], f[0], None))
        elif isinstance(f[2], list):
            out.append((f[1], f[0], None))      # nested: children added below
        else:
            out.append((f[1], f[0], f[2]))
    return out


@GET_SCHEMA
def _get_schema(sp, outp):
    st = _live[sp.contents.private_data]
    try:
        if st.p.fail_schema:
            st.error.value = b"the producer has no schema today"
            return errno.EINVAL
        out = outp.contents
        keep = []
        kids = []
        for f in st.p.fields:
            k = ArrowSchema()
            if len(f) == 3 and isinstance(f[2], list):
                _fill_schema(k, f[1], f[0], children=f[2])
            else:
                _fill_schema(k, f[1], f[0], dictionary=f[2] if len(f) == 3 else None)
            kids.append(k)
        kidp = (POINTER(ArrowSchema) * max(1, len(kids)))(*[pointer(k) for k in kids])
        keep += [kids, kidp]
        out.format = _cstr(keep, "+s")
        out.name = _cstr(keep, "")
        out.metadata = None
        out.flags = 0
        out.n_children = len(kids)
        out.children = kidp
        out.dictionary = None
        out.release = _release_schema
        out.private_data = _keep(keep)
        LEDGER["schemas"] += 1
        return 0
    except BaseException as e:
        LEDGER["errors"].append(repr(e))
        return errno.EIO


@GET_NEXT
def _get_next(sp, outp):
    st = _live[sp.contents.private_data]
    try:
        LEDGER["get_next"] += 1
        p = st.p
        if p.sleep:
            time.sleep(p.sleep)
        if p.fail_at is not None and st.pos == p.fail_at:
            st.error.value = b"producer exploded at batch %d" % st.pos
            return errno.EIO
        if st.pos >= len(p.batches) and not p.forever:
            outp.contents.release = ARRAY_RELEASE()
            return 0
        b = p.batches[st.pos % len(p.batches)]
        st.pos += 1
        b.fill(outp.contents)
        return 0
    except BaseException as e:       # QueryCanceled from a cancel lands here too
        st.error.value = repr(e).encode()[:200]
        return errno.EINTR


@GET_LAST_ERROR
def _get_last_error(sp):
    st = _live[sp.contents.private_data]
    return addressof(st.error) if st.error.value else None


@STREAM_RELEASE
def _release_stream(sp):
    st = _live.pop(sp.contents.private_data or 0, None)
    if st is None:
        LEDGER["double_releases"] += 1
        return
    sp.contents.release = STREAM_RELEASE()
    LEDGER["streams_released"] += 1


@CAPSULE_DESTRUCTOR
def _capsule_free(cap):
    addr = _raw_get_pointer(cap, cast(CAPSULE_NAME, c_char_p))
    s = ArrowArrayStream.from_address(addr)
    if s.release:
        s.release(pointer(s))
    _capsule_memory.pop(addr, None)
    LEDGER["capsules_freed"] += 1


_capsule_free_ptr = cast(_capsule_free, c_void_p)

# ---- a reader: consume any Arrow stream from Python ----


def _bit(addr, i):
    return (ctypes.c_uint8.from_address(addr + (i >> 3)).value >> (i & 7)) & 1


def _read_column(fmt, arr, row_index):
    """Python values of arr at the logical indices in row_index."""
    bufs = [arr.buffers[i] for i in range(arr.n_buffers)]
    off = arr.offset
    out = []
    for r in row_index:
        i = off + r
        if arr.null_count != 0 and bufs and bufs[0] and not _bit(bufs[0], i):
            out.append(None)
        elif fmt == "b":
            out.append(bool(_bit(bufs[1], i)))
        elif fmt in ("l", "g", "tsu:", "tdD"):
            code = {"l": "q", "g": "d", "tsu:": "q", "tdD": "i"}[fmt]
            size = struct.calcsize(code)
            out.append(struct.unpack("<" + code, ctypes.string_at(bufs[1] + size * i, size))[0])
        elif fmt == "u":
            o0, o1 = struct.unpack("<ii", ctypes.string_at(bufs[1] + 4 * i, 8))
            out.append(ctypes.string_at(bufs[2] + o0, o1 - o0).decode())
        else:
            raise ValueError("the test reader cannot read " + fmt)
    return out


def read_stream(obj, move_child=False):
    """Consume obj (or a capsule) like a C consumer: move the stream out,
    read the schema and every batch, release everything.  Returns
    (fields [(name, format)], rows, batch lengths, checks) where checks
    records that each release callback marked its struct released."""
    cap = obj if type(obj).__name__ == "PyCapsule" else obj.__arrow_c_stream__()
    assert _api.PyCapsule_IsValid(cap, cast(CAPSULE_NAME, c_char_p))
    src = ArrowArrayStream.from_address(_api.PyCapsule_GetPointer(cap, cast(CAPSULE_NAME, c_char_p)))
    stream = ArrowArrayStream()
    ctypes.memmove(addressof(stream), addressof(src), ctypes.sizeof(stream))
    src.release = STREAM_RELEASE()          # moved
    del cap                                 # the capsule's destructor must not release it now
    checks = []
    schema = ArrowSchema()
    assert stream.get_schema(pointer(stream), pointer(schema)) == 0
    assert schema.format == b"+s"
    fields = [(schema.children[i].contents.name.decode(), schema.children[i].contents.format.decode())
              for i in range(schema.n_children)]
    rows, lengths = [], []
    while True:
        arr = ArrowArray()
        assert stream.get_next(pointer(stream), pointer(arr)) == 0
        if not arr.release:
            break
        lengths.append(arr.length)
        cols = []
        moved = None
        for k, (name, fmt) in enumerate(fields):
            ch = arr.children[k].contents
            cols.append(_read_column(fmt, ch, range(arr.offset, arr.offset + arr.length)))
            if move_child and k == 0:
                moved = ArrowArray()
                ctypes.memmove(addressof(moved), addressof(ch), ctypes.sizeof(moved))
                ch.release = ARRAY_RELEASE()
        rows += [tuple(c[r] for c in cols) for r in range(arr.length)]
        arr.release(pointer(arr))
        checks.append(not arr.release)
        if moved is not None:
            # a moved child outlives its parent: its buffers are still valid
            again = _read_column(fields[0][1], moved, range(arr.offset, arr.offset + arr.length))
            checks.append(again == cols[0])
            moved.release(pointer(moved))
            checks.append(not moved.release)
    schema.release(pointer(schema))
    checks.append(not schema.release)
    stream.release(pointer(stream))
    checks.append(not stream.release)
    return fields, rows, lengths, checks
'''


def load_arrow_module():
    mod = types.ModuleType("arrowprod")
    exec(compile(ARROW_SRC, "<arrowprod>", "exec"), mod.__dict__)
    return mod


# ---------------------------------------------------------------------------
# the data served by the test plugin

PLUGIN = r'''
import datetime

import riffq
import arrowprod as ap
from arrowprod import Arr, Batch, Producer

ALLTYPES = [
    ("b", "b", [True, False, None]),
    ("i8", "c", [-128, 127, None]),
    ("u8", "C", [0, 255, None]),
    ("i16", "s", [-32768, 32767, None]),
    ("u16", "S", [0, 65535, None]),
    ("i32", "i", [-2147483648, 2147483647, None]),
    ("u32", "I", [0, 4294967295, None]),
    ("i64", "l", [-9223372036854775808, 9223372036854775807, None]),
    ("u64", "L", [0, 18446744073709551615, None]),
    ("f16", "e", [1.5, -0.0009765625, None]),
    ("f32", "f", [0.5, float("inf"), None]),
    ("f64", "g", [0.1, -1e300, None]),
    ("s", "u", ["h\u00e9llo", "", None]),
    ("ls", "U", ["large \u2713", "x" * 100, None]),
    ("vs", "vu", ["short", "a string longer than twelve bytes", None]),
    ("bin", "z", [b"\x00\x01\xff", b"", None]),
    ("lbin", "Z", [b"abc", b"\\", None]),
    ("vb", "vz", [b"tiny", b"binary view longer than 12", None]),
    ("fsb", "w:3", [b"abc", b"\x00\x00\x01", None]),
    ("d32", "tdD", [19782, -1, None]),
    ("d64", "tdm", [19782 * 86400000, -1, None]),
    ("t32s", "tts", [13 * 3600 + 14 * 60 + 15, 0, None]),
    ("t32m", "ttm", [1234, 86399999, None]),
    ("t64u", "ttu", [45296789012, 0, None]),
    ("t64n", "ttn", [45296789012499, 1500, None]),
    ("ts", "tsu:", [1704164645678901, -500000, None]),
    ("tsn", "tsn:", [1704164645678901499, -1, None]),
    ("tss", "tss:UTC", [0, 1700000000, None]),
    ("tsm", "tsm:+02:00", [1700000000123, -62135596800000, None]),
    ("dec", "d:10,2", [1234567890, -5, None]),
    ("dec256", "d:60,5,256", [10 ** 55 + 1, -(10 ** 59), None]),
    ("dec32", "d:9,3,32", [123456, -1, None]),
    ("dec64", "d:18,0,64", [-(10 ** 17), 7, None]),
    ("nul", "n", [None, None, None]),
]
DICTS = [
    # name, index format, indices, dictionary format, dictionary values
    ("dict", "c", [2, 0, None], "u", ["red", "green", "blue"]),
    ("dictv", "S", [1, 1, None], "vu", ["zero", "a view value longer than 12"]),
    ("dictn", "i", [0, 1, 2], "U", ["x", None, "z"]),     # a NULL inside the dictionary
]


def alltypes(offset=0, parent_offset=0):
    """Every mapped type in three rows; offset slices every column array,
    parent_offset slices the struct array (junk rows in front)."""
    fields = [(n, f) for n, f, _ in ALLTYPES] + [(n, i, df) for n, i, _, df, _ in DICTS]
    def junk(vals):
        return [next(v for v in vals if v is not None)] * parent_offset + vals if any(
            v is not None for v in vals) else [None] * parent_offset + vals
    cols = [Arr(f, junk(v), offset=offset) for _, f, v in ALLTYPES]
    cols += [Arr(i, junk(ix), offset=offset, dictionary=(df, dv)) for _, i, ix, df, dv in DICTS]
    return Producer(fields, [Batch(cols, offset=parent_offset)])


def numbers(n, per_batch):
    batches = []
    for start in range(0, n, per_batch):
        vals = list(range(start, min(n, start + per_batch)))
        batches.append(Batch([Arr("l", vals), Arr("u", ["n%d" % v for v in vals])]))
    return Producer([("n", "l"), ("label", "u")], batches)


def small():
    return Producer([("x", "i"), ("y", "u")], [Batch([Arr("i", [1, 2]), Arr("u", ["a", None])])])


once = None
ours_stream = None


@riffq.query_handler
def handle(sql, params, ctx):
    global once, ours_stream
    s = " ".join(sql.lower().split())
    if s == "select * from ledger":
        L = ap.LEDGER
        return ([(L["streams"], L["streams_released"], L["schemas"], L["schemas_released"],
                  L["arrays"], L["arrays_released"], L["double_releases"], L["get_next"],
                  L["capsules"], L["capsules_freed"], "; ".join(L["errors"]),
                  riffq._ArrowBatch._exports_alive())],
                [("streams", "int8"), ("streams_released", "int8"), ("schemas", "int8"),
                 ("schemas_released", "int8"), ("arrays", "int8"), ("arrays_released", "int8"),
                 ("double_releases", "int8"), ("get_next", "int8"), ("capsules", "int8"),
                 ("capsules_freed", "int8"), ("errors", "text"), ("ours_alive", "int8")])
    if s == "select * from reset":
        ap.reset_ledger()
        return riffq.Command("RESET")
    if s == "select * from alltypes":
        return alltypes()
    if s == "select * from alltypes_sliced":
        return alltypes(offset=2)
    if s == "select * from alltypes_parent_sliced":
        return alltypes(offset=1, parent_offset=3)
    if s == "select * from capsule":
        return small().__arrow_c_stream__()
    if s == "select * from consumed":
        if once is None:
            once = small().__arrow_c_stream__()
            return once
        cap, once = once, None      # the second time: already consumed
        return cap
    if s == "select * from numbers":
        return numbers(20000, 7000)
    if s == "select * from empty":
        return Producer([("x", "l"), ("y", "u")], [])
    if s == "select * from empty_batches":
        return Producer([("x", "l")], [Batch([Arr("l", [])]), Batch([Arr("l", [5])]), Batch([Arr("l", [])])])
    if s == "select * from no_columns":
        return Producer([], [])
    if s == "select * from row_nulls":
        # the struct array's own validity: row 1 is NULL as a whole
        return Producer([("x", "l"), ("y", "u")],
                        [Batch([Arr("l", [1, 2, 3]), Arr("u", ["a", "b", "c"])], valid=[True, False, True])])
    if s == "select * from fails":
        return Producer([("x", "l")], [Batch([Arr("l", [1])]), Batch([Arr("l", [2])])], fail_at=1)
    if s == "select * from fails_schema":
        return Producer([("x", "l")], [], fail_schema=True)
    if s == "select * from list_column":
        return Producer([("ok", "l"), ("lst", "+l", [("item", "i", None)])],
                        [Batch([Arr("l", [1]), Arr("+l", [None], children=[Arr("i", [])])])])
    if s == "select * from duration":
        return Producer([("d", "tDs")], [Batch([Arr("l", [1])])])
    if s == "select * from int_dictionary":
        return Producer([("d", "c", "i")], [Batch([Arr("c", [0], dictionary=("i", [7]))])])
    if s == "select * from malformed":
        # the schema has two columns, the batch one array
        return Producer([("x", "l"), ("y", "l")], [Batch([Arr("l", [1])])])
    if s == "select * from bad_dictionary_index":
        return Producer([("d", "c", "u")], [Batch([Arr("c", [5], dictionary=("u", ["a"]))])])
    if s == "select * from date_out_of_range":
        return Producer([("d", "tdD")], [Batch([Arr("tdD", [2147483000])])])
    if s == "select * from midnight":
        # 24:00:00 is a Postgres time (Python has none: checked as text)
        return Producer([("t", "ttu")], [Batch([Arr("ttu", [86400000000])])])
    if s == "select * from slow_forever":
        return Producer([("n", "l")], [Batch([Arr("l", list(range(100)))])], forever=True, sleep=0.05)
    if s == "select * from ours":
        rows = [(i, i * 0.5, i % 3 == 0, "r%d" % i if i % 5 else None,
                 datetime.date(2024, 1, 1) + datetime.timedelta(days=i),
                 datetime.datetime(2024, 1, 1, 12) + datetime.timedelta(seconds=i)) for i in range(10)]
        return riffq._ArrowBatch([("i", "int"), ("f", "float"), ("b", "bool"), ("s", "str"),
                                  ("d", "date"), ("t", "datetime")], rows, 3)
    if s == "select * from ours_capsule":
        return riffq._ArrowBatch([("x", "int")], [(1,), (None,)]).__arrow_c_stream__()
    raise riffq.Error("42P01", "no such test table: " + sql)
'''

TABLES = ["alltypes", "alltypes_sliced", "alltypes_parent_sliced", "capsule", "consumed", "numbers",
          "empty", "empty_batches", "no_columns", "row_nulls", "fails", "fails_schema", "list_column",
          "duration", "int_dictionary", "malformed", "bad_dictionary_index", "date_out_of_range",
          "slow_forever", "ours", "ours_capsule", "midnight", "ledger", "reset"]

UTC = dt.timezone.utc

# The three rows of alltypes as clients must see them, column by column:
# (name, type OID, [row 1, row 2, row 3]).
EXPECTED = [
    ("b", 16, [True, False, None]),
    ("i8", 21, [-128, 127, None]),
    ("u8", 21, [0, 255, None]),
    ("i16", 21, [-32768, 32767, None]),
    ("u16", 23, [0, 65535, None]),
    ("i32", 23, [-2147483648, 2147483647, None]),
    ("u32", 20, [0, 4294967295, None]),
    ("i64", 20, [-9223372036854775808, 9223372036854775807, None]),
    ("u64", 1700, [Decimal(0), Decimal("18446744073709551615"), None]),
    ("f16", 700, [1.5, -0.0009765625, None]),
    ("f32", 700, [0.5, math.inf, None]),
    ("f64", 701, [0.1, -1e300, None]),
    ("s", 25, ["h\u00e9llo", "", None]),
    ("ls", 25, ["large \u2713", "x" * 100, None]),
    ("vs", 25, ["short", "a string longer than twelve bytes", None]),
    ("bin", 17, [b"\x00\x01\xff", b"", None]),
    ("lbin", 17, [b"abc", b"\\", None]),
    ("vb", 17, [b"tiny", b"binary view longer than 12", None]),
    ("fsb", 17, [b"abc", b"\x00\x00\x01", None]),
    ("d32", 1082, [dt.date(2024, 2, 29), dt.date(1969, 12, 31), None]),
    ("d64", 1082, [dt.date(2024, 2, 29), dt.date(1969, 12, 31), None]),
    ("t32s", 1083, [dt.time(13, 14, 15), dt.time(0, 0), None]),
    ("t32m", 1083, [dt.time(0, 0, 1, 234000), dt.time(23, 59, 59, 999000), None]),
    ("t64u", 1083, [dt.time(12, 34, 56, 789012), dt.time(0, 0), None]),
    ("t64n", 1083, [dt.time(12, 34, 56, 789012), dt.time(0, 0, 0, 2), None]),
    ("ts", 1114, [dt.datetime(2024, 1, 2, 3, 4, 5, 678901), dt.datetime(1969, 12, 31, 23, 59, 59, 500000), None]),
    ("tsn", 1114, [dt.datetime(2024, 1, 2, 3, 4, 5, 678901), dt.datetime(1970, 1, 1), None]),
    ("tss", 1184, [dt.datetime(1970, 1, 1, tzinfo=UTC), dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC), None]),
    ("tsm", 1184, [dt.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC),
                   dt.datetime(1, 1, 1, tzinfo=UTC), None]),
    ("dec", 1700, [Decimal("12345678.90"), Decimal("-0.05"), None]),
    ("dec256", 1700, [Decimal("1" + "0" * 50 + ".00001"), Decimal("-1" + "0" * 54 + ".00000"), None]),
    ("dec32", 1700, [Decimal("123.456"), Decimal("-0.001"), None]),
    ("dec64", 1700, [Decimal(-(10 ** 17)), Decimal(7), None]),
    ("nul", 25, [None, None, None]),
    ("dict", 25, ["blue", "red", None]),
    ("dictv", 25, ["a view value longer than 12", "a view value longer than 12", None]),
    ("dictn", 25, ["x", None, "z"]),
]

# the text form of every cell (psql / text protocol), where it tells more
# than the Python value: exact float and timestamp formatting
EXPECTED_TEXT = {
    "f16": ["1.5", "-0.0009765625", None],
    "f32": ["0.5", "Infinity", None],
    "f64": ["0.1", "-1e+300", None],
    "u64": ["0", "18446744073709551615", None],
    "t64u": ["12:34:56.789012", "00:00:00", None],
    "t64n": ["12:34:56.789012", "00:00:00.000002", None],
    "ts": ["2024-01-02 03:04:05.678901", "1969-12-31 23:59:59.5", None],
    "tss": ["1970-01-01 00:00:00+00", "2023-11-14 22:13:20+00", None],
    "tsm": ["2023-11-14 22:13:20.123+00", "0001-01-01 00:00:00+00", None],
    "bin": ["\\x0001ff", "\\x", None],
    "dec": ["12345678.90", "-0.05", None],
    "dec32": ["123.456", "-0.001", None],
    "d32": ["2024-02-29", "1969-12-31", None],
}


@pytest.fixture
def arrow_server(riffq_factory, short_tmp):
    with open(os.path.join(short_tmp, "arrowprod.py"), "w") as f:
        f.write(ARROW_SRC)
    path = os.path.join(short_tmp, "arrowplug.py")
    with open(path, "w") as f:
        f.write(PLUGIN)
    port = harness.free_port()
    cfg = {
        "listen": [{"host": "127.0.0.1", "port": port}],
        "auth": {"method": "scram-sha-256", "users": {USER: PASSWORD}},
        "plugins": {"arrow": {"module": path}},
        "routes": [
            {"name": "arrow", "match": {"tables": TABLES}, "to": "plugin:arrow"},
            {"name": "local", "to": "local"},
        ],
    }
    srv = riffq_factory(cfg)
    yield srv
    # whatever a test did, nothing may stay unreleased
    with psycopg.connect(srv.dsn(), autocommit=True) as c:
        row = c.execute("SELECT * FROM ledger").fetchone()
    assert_balanced(row)


LEDGER_COLS = ["streams", "streams_released", "schemas", "schemas_released", "arrays",
               "arrays_released", "double_releases", "get_next", "capsules", "capsules_freed",
               "errors", "ours_alive"]


def ledger(conn):
    return dict(zip(LEDGER_COLS, conn.execute("SELECT * FROM ledger").fetchone()))


def assert_balanced(row):
    L = dict(zip(LEDGER_COLS, row)) if not isinstance(row, dict) else row
    assert L["streams"] == L["streams_released"], L
    assert L["schemas"] == L["schemas_released"], L
    assert L["arrays"] == L["arrays_released"], L
    assert L["capsules"] == L["capsules_freed"], L
    assert L["double_releases"] == 0, L
    assert L["errors"] == "", L
    assert L["ours_alive"] == 0, L


def check_rows(rows, description):
    assert [d.name for d in description] == [n for n, _, _ in EXPECTED]
    assert [d.type_code for d in description] == [oid for _, oid, _ in EXPECTED]
    check_values(rows)


def check_values(rows):
    assert len(rows) == 3
    for k, (name, oid, values) in enumerate(EXPECTED):
        for r in range(3):
            got, want = rows[r][k], values[r]
            assert got == want and type(got) is type(want), (name, r, got, want)


def raises(conn, sql, sqlstate, *fragments):
    with pytest.raises(psycopg.Error) as ei:
        conn.execute(sql).fetchall()
    assert ei.value.diag.sqlstate == sqlstate, (sql, ei.value.diag.sqlstate, str(ei.value))
    for f in fragments:
        assert f in ei.value.diag.message_primary, (f, ei.value.diag.message_primary)
    return ei.value


def psql(srv, sql):
    out = subprocess.run([harness.PSQL, "-X", "-A", "-t", "-F", "|", "-c", sql, srv.dsn()],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return [line.split("|") for line in out.stdout.splitlines()]


# ---- (b) the consumer, through the gateway ----

def test_every_type_through_psycopg_text_and_binary(arrow_server):
    with psycopg.connect(arrow_server.dsn(), autocommit=True) as c:
        c.execute("SELECT * FROM reset")
        cur = c.cursor()
        cur.execute("SELECT * FROM alltypes")
        check_rows(cur.fetchall(), cur.description)
        cur = c.cursor(binary=True)
        cur.execute("SELECT * FROM alltypes")
        check_rows(cur.fetchall(), cur.description)
        L = ledger(c)
        assert L["streams"] == 2 and L["get_next"] == 4     # one batch, then the end, twice
        assert_balanced(L)


class RawBinary(psycopg.adapt.Loader):
    format = psycopg.pq.Format.BINARY

    def load(self, data):
        return bytes(data)


def test_every_type_as_text_through_psql(arrow_server):
    rows = psql(arrow_server, "SELECT * FROM alltypes")
    names = [n for n, _, _ in EXPECTED]
    assert len(rows) == 3 and all(len(r) == len(names) for r in rows)
    for name, want in EXPECTED_TEXT.items():
        k = names.index(name)
        assert [r[k] for r in rows] == [w if w is not None else "" for w in want], name
    assert psql(arrow_server, "SELECT * FROM midnight") == [["24:00:00"]]
    with psycopg.connect(arrow_server.dsn(), autocommit=True) as c:
        cur = c.cursor(binary=True)
        cur.adapters.register_loader("time", RawBinary)
        cur.execute("SELECT * FROM midnight")
        # binary time is microseconds since midnight
        assert cur.fetchall() == [((86400000000).to_bytes(8, "big"),)]


def test_every_type_through_asyncpg_and_describe_pulls_nothing(arrow_server):
    async def main():
        con = await asyncpg.connect(host=arrow_server.host, port=arrow_server.port,
                                    user=USER, password=PASSWORD, database="db")
        try:
            await con.execute("SELECT * FROM reset")
            rows = await con.fetch("SELECT * FROM alltypes")
            check_values([tuple(r) for r in rows])
            assert list(rows[0].keys()) == [n for n, _, _ in EXPECTED]
            # Describe of a statement: the schema only, no batch pulled
            before = await con.fetchrow("SELECT * FROM ledger")
            stmt = await con.prepare("SELECT * FROM numbers")
            assert [a.name for a in stmt.get_attributes()] == ["n", "label"]
            assert [a.type.name for a in stmt.get_attributes()] == ["int8", "text"]
            after = await con.fetchrow("SELECT * FROM ledger")
            assert after["get_next"] == before["get_next"]
            assert after["streams"] == before["streams"] + 1
            assert_balanced(dict(after))
            # sliced arrays in binary
            for t in ("alltypes_sliced", "alltypes_parent_sliced"):
                check_values([tuple(r) for r in await con.fetch("SELECT * FROM " + t)])
        finally:
            await con.close()
    asyncio.run(main())


@pytest.mark.parametrize("table", ["alltypes_sliced", "alltypes_parent_sliced"])
def test_sliced_arrays_honour_offsets(arrow_server, table):
    with psycopg.connect(arrow_server.dsn(), autocommit=True) as c:
        for binary in (False, True):
            cur = c.cursor(binary=binary)
            cur.execute("SELECT * FROM " + table)
            check_rows(cur.fetchall(), cur.description)
    rows = psql(arrow_server, "SELECT * FROM " + table)
    assert rows == psql(arrow_server, "SELECT * FROM alltypes")


def test_many_batches_stream_with_row_limits(arrow_server):
    want = [(i, "n%d" % i) for i in range(20000)]
    with psycopg.connect(arrow_server.dsn(), autocommit=True) as c:
        # 20000 rows in batches of 7000: more than one handoff per batch
        assert c.execute("SELECT * FROM numbers").fetchall() == want
        assert c.cursor(binary=True).execute("SELECT * FROM numbers").fetchall() == want
        assert_balanced(ledger(c))

    async def main():
        con = await asyncpg.connect(host=arrow_server.host, port=arrow_server.port,
                                    user=USER, password=PASSWORD, database="db")
        try:
            async with con.transaction():
                # Execute with row limits: the portal is suspended between fetches
                cur = await con.cursor("SELECT * FROM numbers")
                assert [tuple(r) for r in await cur.fetch(5)] == want[:5]
                assert [tuple(r) for r in await cur.fetch(3)] == want[5:8]
                assert [tuple(r) for r in await cur.fetch(30000)] == want[8:]
        finally:
            await con.close()
    asyncio.run(main())


def test_empty_streams_and_row_level_nulls(arrow_server):
    with psycopg.connect(arrow_server.dsn(), autocommit=True) as c:
        cur = c.execute("SELECT * FROM empty")
        assert cur.fetchall() == []
        assert [(d.name, d.type_code) for d in cur.description] == [("x", 20), ("y", 25)]
        assert cur.statusmessage == "SELECT 0"
        cur = c.execute("SELECT * FROM empty_batches")
        assert cur.fetchall() == [(5,)] and cur.statusmessage == "SELECT 1"
        cur = c.execute("SELECT * FROM no_columns")
        assert cur.fetchall() == [] and cur.description == []
        assert c.execute("SELECT * FROM row_nulls").fetchall() == [(1, "a"), (None, None), (3, "c")]
        cur = c.cursor(binary=True)
        assert cur.execute("SELECT * FROM row_nulls").fetchall() == [(1, "a"), (None, None), (3, "c")]
    assert psql(arrow_server, "SELECT * FROM empty") == []


def test_a_bare_capsule_is_a_result_and_is_consumed_once(arrow_server):
    with psycopg.connect(arrow_server.dsn(), autocommit=True) as c:
        assert c.execute("SELECT * FROM capsule").fetchall() == [(1, "a"), (2, None)]
        assert c.execute("SELECT * FROM consumed").fetchall() == [(1, "a"), (2, None)]
        raises(c, "SELECT * FROM consumed", "XX000", "already consumed")
        assert_balanced(ledger(c))


def test_producer_errors_and_unsupported_types(arrow_server):
    with psycopg.connect(arrow_server.dsn(), autocommit=True) as c:
        raises(c, "SELECT * FROM fails", "XX000", "producer exploded at batch 1")
        raises(c, "SELECT * FROM fails_schema", "XX000", "the producer has no schema today")
        e = raises(c, "SELECT * FROM list_column", "0A000", '"lst"', '"+l"', "list")
        assert e.diag.message_hint and "cast" in e.diag.message_hint
        raises(c, "SELECT * FROM duration", "0A000", '"d"', '"tDs"', "duration")
        raises(c, "SELECT * FROM int_dictionary", "0A000", '"d"', "dictionary", '"i"')
        raises(c, "SELECT * FROM malformed", "XX000", "malformed Arrow data", "one child array per column")
        raises(c, "SELECT * FROM bad_dictionary_index", "XX000", '"d"', "dictionary index")
        e = raises(c, "SELECT * FROM date_out_of_range", "22008", "date out of range")
        assert 'column "d"' in e.diag.message_detail
        # binary too: the error comes from the same cell
        with pytest.raises(psycopg.Error) as ei:
            c.cursor(binary=True).execute("SELECT * FROM fails").fetchall()
        assert ei.value.diag.sqlstate == "XX000"
        # the session is fine afterwards
        assert c.execute("SELECT * FROM capsule").fetchall() == [(1, "a"), (2, None)]
        L = ledger(c)
        assert L["streams"] >= 9
        assert_balanced(L)


def settled_ledger(conn):
    """The ledger once a canceled query's worker is done: the client gets
    57014 at once, while the worker still unwinds and releases."""
    deadline = time.monotonic() + 10
    while True:
        L = ledger(conn)
        if L["streams"] == L["streams_released"] or time.monotonic() > deadline:
            return L
        time.sleep(0.02)


def test_statement_timeout_stops_pulling(arrow_server):
    with psycopg.connect(arrow_server.dsn(), autocommit=True) as c:
        c.execute("SET statement_timeout = 400")
        raises(c, "SELECT * FROM slow_forever", "57014")
        c.execute("SET statement_timeout = 0")
        first = settled_ledger(c)
        assert 2 <= first["get_next"] <= 12
        time.sleep(0.3)
        L = ledger(c)
        assert L["get_next"] == first["get_next"], "the stream was still pulled after the cancel"
        assert_balanced(L)
    # a cancel request too
    with psycopg.connect(arrow_server.dsn(), autocommit=True) as c:
        t = threading.Timer(0.4, c.cancel)
        t.start()
        try:
            raises(c, "SELECT * FROM slow_forever", "57014")
        finally:
            t.cancel()
        assert_balanced(settled_ledger(c))


# ---- (c) the producer: riffq._ArrowBatch / riffq.helpers.to_arrow ----

OURS_TYPES = [("i", 20), ("f", 701), ("b", 16), ("s", 25), ("d", 1082), ("t", 1114)]


def ours_rows(n):
    return [(i, i * 0.5, i % 3 == 0, "r%d" % i if i % 5 else None,
             dt.date(2024, 1, 1) + dt.timedelta(days=i),
             dt.datetime(2024, 1, 1, 12) + dt.timedelta(seconds=i)) for i in range(n)]


def test_our_producer_served_by_a_gateway_plugin(arrow_server):
    with psycopg.connect(arrow_server.dsn(), autocommit=True) as c:
        for binary in (False, True):
            cur = c.cursor(binary=binary)
            cur.execute("SELECT * FROM ours")
            assert [(d.name, d.type_code) for d in cur.description] == OURS_TYPES
            assert cur.fetchall() == ours_rows(10)
        assert c.execute("SELECT * FROM ours_capsule").fetchall() == [(1,), (None,)]
        assert ledger(c)["ours_alive"] == 0

    async def main():
        con = await asyncpg.connect(host=arrow_server.host, port=arrow_server.port,
                                    user=USER, password=PASSWORD, database="db")
        try:
            assert [tuple(r) for r in await con.fetch("SELECT * FROM ours")] == ours_rows(10)
        finally:
            await con.close()
    asyncio.run(main())


def _clean_make_env():
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "BUILD", "OPT", "CFLAGS", "LDFLAGS",
                        "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS")}
    return env


@pytest.fixture(scope="session")
def riffq_module():
    """The importable module (make python -> build/python), imported into
    this process.  Built with the default flags even under make test-asan:
    a sanitized extension cannot load into a plain interpreter."""
    r = subprocess.run(["make", "-s", "BUILD=build", "PY=" + sys.executable, "python"], cwd=harness.REPO,
                       env=_clean_make_env(), capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        pytest.fail("make python failed:\n" + r.stdout + r.stderr)
    path = os.path.join(harness.REPO, "build", "python")
    if path not in sys.path:
        sys.path.insert(0, path)
    import riffq
    assert os.path.dirname(riffq.__file__) == path, riffq.__file__
    return riffq


def test_to_arrow_read_by_an_independent_reader(riffq_module):
    riffq = riffq_module
    from riffq.helpers import to_arrow
    ap = load_arrow_module()
    Alive = riffq._ArrowBatch._exports_alive
    assert Alive() == 0
    schema = [{"name": "i", "type": "int"}, {"name": "f", "type": "float"}, {"name": "b", "type": "bool"},
              {"name": "s", "type": "string"}, {"name": "d", "type": "date"},
              {"name": "t", "type": "datetime"}]
    aware = dt.datetime(2024, 5, 6, 7, 8, 9, 10, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    rows = [[1, 1.5, True, "aé", dt.date(2024, 2, 29), dt.datetime(2024, 2, 29, 1, 2, 3, 4)],
            [None, None, None, None, None, None],
            [-(2 ** 63), -0.0, False, "", dt.date(1, 1, 1), aware],
            {"i": 7, "s": "from a dict"}]
    batch = to_arrow(schema, rows, batch_size=2)
    assert len(batch) == 4 and "4 rows" in repr(batch)
    fields, got, lengths, checks = ap.read_stream(batch, move_child=True)
    assert fields == [("i", "l"), ("f", "g"), ("b", "b"), ("s", "u"), ("d", "tdD"), ("t", "tsu:")]
    assert lengths == [2, 2]
    assert all(checks), checks
    epoch = dt.datetime(1970, 1, 1)
    us = lambda d: (d - epoch) // dt.timedelta(microseconds=1)
    days = lambda d: (d - dt.date(1970, 1, 1)).days
    assert got == [
        (1, 1.5, True, "aé", days(dt.date(2024, 2, 29)), us(dt.datetime(2024, 2, 29, 1, 2, 3, 4))),
        (None,) * 6,
        (-(2 ** 63), -0.0, False, "", days(dt.date(1, 1, 1)), us(dt.datetime(2024, 5, 6, 5, 8, 9, 10))),
        (7, None, None, "from a dict", None, None),
    ]
    assert Alive() == 0
    # read twice from the same object; a bare capsule too
    assert ap.read_stream(batch)[1] == got
    assert ap.read_stream(batch.__arrow_c_stream__())[1] == got
    # a capsule dropped unread releases its stream
    cap = batch.__arrow_c_stream__()
    assert Alive() == 1
    del cap
    assert Alive() == 0
    # the schema capsule
    sc = batch.__arrow_c_schema__()
    assert Alive() == 1
    del sc
    assert Alive() == 0
    # buffers outlive the Python object while a consumer holds the stream
    cap = to_arrow([{"name": "x", "type": "str"}], [["kept"]]).__arrow_c_stream__()
    assert ap.read_stream(cap)[1] == [("kept",)]
    del cap
    assert Alive() == 0
    # an empty result: the schema, no batch
    assert ap.read_stream(to_arrow(schema, [])) [:3] == (ap.read_stream(batch)[0], [], [])
    # bad input is refused where it is
    with pytest.raises(TypeError, match='column "i", row 0: expected an int'):
        to_arrow([{"name": "i", "type": "int"}], [["x"]])
    with pytest.raises(TypeError, match='column "d", row 1'):
        to_arrow([{"name": "d", "type": "date"}], [[dt.date(2020, 1, 1)], ["2020-01-01"]])
    with pytest.raises(OverflowError, match='column "i"'):
        to_arrow([{"name": "i", "type": "int"}], [[2 ** 63]])
    with pytest.raises(ValueError, match="unknown type 'blob'"):
        to_arrow([{"name": "i", "type": "blob"}], [])
    with pytest.raises(ValueError, match="row 0 has 2 values, expected 1"):
        to_arrow([{"name": "i", "type": "int"}], [[1, 2]])
    assert Alive() == 0


def test_to_arrow_served_by_the_module_server(riffq_module):
    riffq = riffq_module
    from riffq.helpers import to_arrow
    port = harness.free_port()
    srv = riffq.Server("127.0.0.1:%d" % port)
    schema = [{"name": "i", "type": "int"}, {"name": "f", "type": "float"}, {"name": "b", "type": "bool"},
              {"name": "s", "type": "str"}, {"name": "d", "type": "date"}, {"name": "t", "type": "datetime"}]

    @srv.query_handler
    def handle(sql, params, ctx):
        if "capsule" in sql:
            return to_arrow(schema, ours_rows(3)).__arrow_c_stream__()
        return to_arrow(schema, ours_rows(5000), batch_size=1000)

    srv.start(background=True)
    try:
        dsn = "host=127.0.0.1 port=%d user=u dbname=d" % port
        with psycopg.connect(dsn, autocommit=True) as c:
            for binary in (False, True):
                cur = c.cursor(binary=binary)
                cur.execute("SELECT * FROM t")
                assert [(d.name, d.type_code) for d in cur.description] == OURS_TYPES
                assert cur.fetchall() == ours_rows(5000)
            assert c.execute("SELECT capsule").fetchall() == ours_rows(3)

        async def main():
            con = await asyncpg.connect(host="127.0.0.1", port=port, user="u", database="d")
            try:
                assert [tuple(r) for r in await con.fetch("SELECT * FROM t")] == ours_rows(5000)
            finally:
                await con.close()
        asyncio.run(main())
    finally:
        srv.stop()
    assert riffq._ArrowBatch._exports_alive() == 0
