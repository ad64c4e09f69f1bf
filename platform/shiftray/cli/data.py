"""`shiftray data prepare|download|example|inspect`: benchmarks and your own data."""

from __future__ import annotations

import argparse
from pathlib import Path

from shiftray.display import print_table


def _bench_opts(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        k, _, v = item.partition("=")
        out[k] = yaml.safe_load(v)
    return out


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from shiftray.data.prepare import prepare
    from shiftray.registry import DATASETS

    bench = DATASETS.get(args.benchmark)
    opts = bench.Options.model_validate(_bench_opts(args.option))
    domains = args.domains or bench.domains(opts)
    if not domains:
        raise FileNotFoundError(
            f"found no domains for {args.benchmark} with {_bench_opts(args.option)}: check the "
            f"options ({', '.join(bench.Options.model_fields)}) or name them with --domains"
        )
    for written in prepare(bench, opts, args.out, domains, args.shard_rows, args.seed):
        for path in written.paths:
            print(f"{path}")
        print(f"  {written.domain}/{written.split}: {written.rows} rows")
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    from shiftray.config.load import load_spec
    from shiftray.data.download import fetch
    from shiftray.data.files import data_dirs
    from shiftray.registry import DATASETS

    wanted: dict[tuple[str, str], tuple[object, set[str]]] = {}
    for item in args.what:
        if Path(item).is_file():  # a job spec: its benchmark, options and two domains
            spec = load_spec(item)
            name, opts = spec.data.benchmark, spec.data.options
            domains = {spec.data.source, spec.data.target}
        else:
            name, opts, domains = item, _bench_opts(args.option), set()
        bench = DATASETS.get(name)
        o = bench.Options.model_validate(opts)
        found = domains or set(bench.domains(o) or [])
        key = (name, repr(sorted(o.model_dump().items())))
        wanted.setdefault(key, (o, set()))[1].update(found)
    for (name, _), (o, domains) in wanted.items():
        for f in fetch(DATASETS.get(name), o, sorted(domains)):
            print(f"{name} {f.domain}/{f.split}: {f.rows} rows")
    print("data read from: " + ", then ".join(str(d) for d in data_dirs()))
    return 0


def cmd_data_example(args: argparse.Namespace) -> int:
    from shiftray.data.example import EXAMPLES

    print(EXAMPLES[args.kind](args.out, seed=args.seed))
    return 0


def cmd_data_inspect(args: argparse.Namespace) -> int:
    import numpy as np

    from shiftray.registry import DATASETS

    if Path(args.benchmark).is_dir():
        bench, opts = DATASETS.get("parquet"), {"path": args.benchmark}
    else:
        bench, opts = DATASETS.get(args.benchmark), _bench_opts(args.option)
    o = bench.Options.model_validate(opts)
    classes = bench.class_names(o)
    rows = []
    for d in bench.domains(o) or []:
        for split in bench.splits:
            a = bench.read(d, split, o)
            y = a.y[a.y >= 0] if a.y is not None else np.zeros(0, np.int64)  # -1: unlabelled
            counts = np.bincount(y, minlength=len(classes))
            rows.append(
                {
                    "domain": d,
                    "split": split,
                    "rows": len(a),
                    "unlabelled": len(a) - len(y),
                    "input": "x".join(map(str, a.x.shape[1:])),
                    "classes": len(classes),
                    "balance (min/max class %)": (
                        f"{100 * counts.min() / len(y):.1f}/{100 * counts.max() / len(y):.1f}"
                        if len(y)
                        else "unlabelled"
                    ),
                }
            )
    print(f"{args.benchmark}: classes {', '.join(classes)}")
    print_table(rows, list(rows[0]) if rows else ["domain"])
    return 0


def add_parsers(sub) -> None:
    d = sub.add_parser("data", help="prepare or inspect datasets")
    dsub = d.add_subparsers(dest="data_command", required=True)
    prep = dsub.add_parser("prepare", help="write a benchmark as Parquet domain tables")
    prep.add_argument("benchmark")
    prep.add_argument("--out", required=True)
    prep.add_argument("--domains", nargs="*")
    prep.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE")
    prep.add_argument(
        "--shard-rows", type=int, default=0, help="rows per Parquet shard (0 = one file)"
    )
    prep.add_argument(
        "--seed", type=int, default=0,
        help="train rows are written in a random order drawn with this seed (-1: source order)",
    )  # fmt: skip
    prep.set_defaults(func=cmd_data_prepare)
    dl = dsub.add_parser(
        "download", help="fetch the files of benchmarks or of job specs' domains (checked "
        "against their sha256) into the cache, where SHIFTRAY_DATA_DIR does not hold them",
    )  # fmt: skip
    dl.add_argument("what", nargs="+", metavar="BENCHMARK|JOB.yaml")
    dl.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                    help="reader options (for a benchmark named on the command line)")  # fmt: skip
    dl.set_defaults(func=cmd_data_download)
    ex = dsub.add_parser(
        "example", help="write small generated data in a layout shiftray reads (to try it)"
    )
    ex.add_argument("kind", choices=["imagefolder", "table"])
    ex.add_argument("--out", required=True, help="a folder (imagefolder) or a .csv (table)")
    ex.add_argument("--seed", type=int, default=0)
    ex.set_defaults(func=cmd_data_example)
    ins = dsub.add_parser(
        "inspect", help="domains, sizes and class balance of a benchmark or Parquet dir"
    )
    ins.add_argument("benchmark")
    ins.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE")
    ins.set_defaults(func=cmd_data_inspect)
