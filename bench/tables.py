"""Wide tables: the `table` reader against pyarrow's own parse of the same file.

Generated tables (float32 features written as text by Arrow, an integer ``label`` of 31
classes and two domains, as pre-extracted CNN features of Office-31 are) at several widths,
and a rows sweep at one width, as CSV and as Parquet. Each round times, for every table in
turn (interleaved, so a slow spell of the machine hits all of them):

- ``pyarrow``: `pyarrow.csv.read_csv` / `pyarrow.parquet.read_table` of the file;
- ``reader``: what `shiftray data prepare table` reads, from a cold cache: the domains, the
  class names and each domain's train and test split (features, labels);
- ``inspect``: `shiftray data inspect table -o path=...`, in this process.

    python bench/tables.py                     # 452 rows x 512, 2048, 4096 columns; rows sweep
    python bench/tables.py --rounds 5 --columns 4096 --sweep-rows ""

Prints the medians and writes bench/results/cpu-tables.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_result  # noqa: E402
from shiftray.cli import main as cli  # noqa: E402
from shiftray.data.readers.table import TableFile, _parse  # noqa: E402


def write_tables(folder: Path, rows: int, cols: int) -> dict[str, Path]:
    rng = np.random.default_rng([rows, cols])
    x = rng.standard_normal((rows, cols), dtype=np.float32)
    t = pa.table(
        {
            **{f"f{j}": x[:, j] for j in range(cols)},
            "label": pa.array(np.arange(rows) % 31, pa.int64()),
            "domain": pa.array(np.where(np.arange(rows) % 2, "amazon", "webcam")),
        }
    )
    paths = {"csv": folder / f"{rows}x{cols}.csv", "parquet": folder / f"{rows}x{cols}.parquet"}
    pacsv.write_csv(t, paths["csv"])
    pq.write_table(t, paths["parquet"])
    return paths


def pyarrow_parse(path: Path) -> pa.Table:
    return pq.read_table(path) if path.suffix == ".parquet" else pacsv.read_csv(path)


def read_all(path: Path) -> int:
    """Every domain and split, as `data prepare` reads them; the parse cache cleared first."""
    _parse.cache_clear()
    opts = TableFile.Options(path=str(path))
    n = 0
    TableFile.class_names(opts)
    for d in TableFile.domains(opts):
        for split in TableFile.splits:
            n += len(TableFile.read(d, split, opts))
    return n


def inspect(path: Path) -> None:
    _parse.cache_clear()
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli(["data", "inspect", "table", "-o", f"path={path}"]) == 0


def timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def fmt_table(rows: list[dict], columns: list[str]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print_table(rows, columns)
        return
    table = Table(*columns)
    for r in rows:
        table.add_row(*(str(r[c]) for c in columns))
    Console().print(table)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", type=int, default=452, help="rows of the width sweep")
    p.add_argument("--columns", default="512,2048,4096", help="feature columns (width sweep)")
    p.add_argument("--sweep-rows", default="904,1808", help="more rows at --sweep-columns")
    p.add_argument("--sweep-columns", type=int, default=2048)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    shapes = [(args.rows, int(c)) for c in args.columns.split(",") if c]
    shapes += [(int(r), args.sweep_columns) for r in args.sweep_rows.split(",") if r]
    shapes = list(dict.fromkeys(shapes))
    with tempfile.TemporaryDirectory() as tmp:
        files = {s: write_tables(Path(tmp), *s) for s in shapes}
        cases = [(s, fmt) for s in shapes for fmt in ("csv", "parquet")]
        for (rows, cols), fmt in cases:  # warm-up: imports, first kernel calls, page cache
            path = files[rows, cols][fmt]
            pyarrow_parse(path)
            assert read_all(path) == 2 * rows
        samples: dict[tuple, dict[str, list[float]]] = {
            c: {"pyarrow": [], "reader": [], "inspect": []} for c in cases
        }
        for r in range(args.rounds):
            for case in cases:
                path = files[case[0]][case[1]]
                samples[case]["pyarrow"].append(timed(pyarrow_parse, path))
                samples[case]["reader"].append(timed(read_all, path))
                samples[case]["inspect"].append(timed(inspect, path))
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    results = []
    for ((rows, cols), fmt), s in samples.items():
        med = {k: statistics.median(v) for k, v in s.items()}
        results.append(
            {
                "format": fmt,
                "rows": rows,
                "columns": cols,
                "pyarrow_s": round(med["pyarrow"], 3),
                "reader_s": round(med["reader"], 3),
                "reader / pyarrow": round(med["reader"] / med["pyarrow"], 2),
                "inspect_s": round(med["inspect"], 3),
                "reader ns / cell": round(1e9 * med["reader"] / (rows * cols), 1),
                "reader_rounds_s": [round(v, 3) for v in s["reader"]],
                "pyarrow_rounds_s": [round(v, 3) for v in s["pyarrow"]],
            }
        )
    fmt_table(results, [c for c in results[0] if not c.endswith("rounds_s")])
    write_result("cpu-tables", {"rounds": args.rounds, "rows": results})


if __name__ == "__main__":
    main()
