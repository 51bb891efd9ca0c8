"""riffq.helpers: small Arrow results without pyarrow.

    from riffq.helpers import to_arrow

    def handle_query(sql, callback, **kwargs):
        callback(to_arrow([{"name": "val", "type": "int"}], [[1], [2]]))

to_arrow builds the rows into Arrow buffers in C (riffq._ArrowBatch) and
returns an object that exports them through the Arrow PyCapsule stream
interface (__arrow_c_stream__), which the server reads without converting
the cells back to Python.  Any Arrow consumer can read it too.
"""

# schema_desc type -> the kind riffq._ArrowBatch builds (Arrow format):
# int64, float64, bool, utf8, date32, timestamp[us] without a time zone
# (aware datetimes are converted to UTC).
_TYPES = {
    'int': 'int', 'float': 'float', 'bool': 'bool', 'str': 'str', 'string': 'str',
    'date': 'date', 'datetime': 'datetime',
}


def to_arrow(schema_desc, rows, *, batch_size=65536):
    """Build an Arrow stream from a schema description and rows.

    schema_desc: [{"name": str, "type": str}, ...] in column order, type one
    of int, float, bool, str/string, date, datetime.  rows: an iterable of
    sequences aligned to schema_desc (or of dicts keyed by column name);
    None is NULL.  The stream yields record batches of at most batch_size
    rows and can be read any number of times.
    """
    import riffq
    columns = []
    for i, col in enumerate(schema_desc):
        try:
            name, typ = col['name'], col['type']
        except (KeyError, TypeError):
            raise TypeError(f'column {i + 1}: expected {{"name": ..., "type": ...}}, got {col!r}') from None
        kind = _TYPES.get(typ) if isinstance(typ, str) else None
        if kind is None:
            raise ValueError(f'column {name!r}: unknown type {typ!r} (expected one of '
                             f'{", ".join(sorted(_TYPES))})')
        columns.append((str(name), kind))
    if not isinstance(rows, (list, tuple)):
        rows = list(rows)
    return riffq._ArrowBatch(columns, rows, batch_size)
