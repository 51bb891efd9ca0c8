"""The plugin `make bench` measures (tests/bench/bench.py, the plugin section).

  bench_rows  BENCH_ROWS (default 1,000,000) rows, 4 columns, in a pandas
              DataFrame: id int8, x float8 (id * 0.5), label text
              ('row-<id>'), ts timestamp (2024-01-01 + id seconds).  The
              benchmark creates the same table in Postgres.
  bench_one   a trivial handler: one row, one int4 column (1), the
              plugin-side counterpart of Postgres answering SELECT 1.
"""
import os

import numpy as np
import pandas as pd

import riffq

N = int(os.environ.get("BENCH_ROWS", "1000000"))

_ids = np.arange(N, dtype=np.int64)
ROWS = pd.DataFrame({
    "id": _ids,
    "x": _ids * 0.5,
    "label": np.array(["row-%d" % i for i in range(N)], dtype=object),
    "ts": pd.Timestamp("2024-01-01") + pd.to_timedelta(_ids, unit="s"),
})
del _ids

riffq.register_table("public", "bench_rows", [("id", "int8"), ("x", "float8"), ("label", "text"),
                                              ("ts", "timestamp")])
riffq.register_table("public", "bench_one", [("one", "int4")])

ONE_ROW = [(1,)]
ONE_COLUMNS = [("?column?", "int4")]


@riffq.query_handler
def handle(sql, params, ctx):
    if "bench_one" in sql:
        return ONE_ROW, ONE_COLUMNS
    return ROWS
