"""The `shiftray` command line: run, tune, report, compare, validate, serve, ls, reference, data,
and the cluster commands (k8s, submit, status, logs, stop: shiftray.cluster.commands)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from shiftray.config.load import SpecError, dump_spec, load_spec
from shiftray.display import print_table  # rich on a terminal, plain text otherwise
from shiftray.errors import UserInputError


def _split_args(items: list[str]) -> tuple[list[str], list[str]]:
    jobs = [a for a in items if "=" not in a]
    overrides = [a for a in items if "=" in a]
    return jobs, overrides


def cmd_run(args: argparse.Namespace) -> int:
    from shiftray.api import fit, refuse_changed_run
    from shiftray.train.launch import job_data

    jobs, overrides = _split_args(args.items)
    specs = [load_spec(j, overrides) for j in jobs]  # every spec is checked before Ray starts
    resumed = set()
    for rd in args.resume or []:  # continue a run directory with the spec it was started with
        rd = Path(rd).resolve()
        if not (rd / "spec.yaml").is_file():
            raise SpecError(f"--resume {rd}: no spec.yaml there; is it a shiftray run directory?")
        place = [f"name={rd.name}", f"tracking.output_dir={rd.parent}"]
        specs.append(load_spec(rd / "spec.yaml", [*overrides, *place]))
        resumed.add(len(specs) - 1)
        if overrides:  # the first spec stays in spec.yaml; what the resume changed, beside it
            with open(rd / "resumes.jsonl", "a") as f:
                f.write(json.dumps({"date": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                    "overrides": overrides}) + "\n")  # fmt: skip
    if not specs:
        raise SpecError("shiftray run needs a job spec (a .yaml file) or --resume RUN_DIR")
    for i, spec in enumerate(specs):  # before any training: a changed spec stops the command
        if not args.restart and i not in resumed:
            refuse_changed_run(spec)
    datas = [job_data(s) for s in specs]  # and every data file found (streamed: footers)
    rows, per_class = [], []
    for i, (spec, data) in enumerate(zip(specs, datas, strict=True)):
        print(
            f"== {spec.name}: {spec.method.name} {spec.data.benchmark} {spec.data.source} -> "
            f"{spec.data.target}, {spec.train.steps} steps, "
            f"{'in-process' if args.no_ray else f'{spec.resources.num_workers} Ray Train worker(s)'}",
            flush=True,
        )
        result = fit(spec, ray=not args.no_ray, restart=args.restart, resumed=i in resumed,
                     max_failures=args.max_failures, progress=not args.quiet, data=data)  # fmt: skip
        final = result.metrics
        rows.append(
            {
                "run": spec.name,
                "method": spec.method.name,
                "task": f"{spec.data.source}->{spec.data.target}",
                "target_acc": f"{final.get('target_acc', float('nan')):.2f}",
                "health": _health(final),
                "trainable": _params(final),
                "seconds": f"{result.seconds:.0f}",
                "run_dir": str(result.run_dir),
            }
        )
        per_class.append((spec.name, final.get("target_per_class")))
    print()
    print_table(rows, ["run", "method", "task", "target_acc", "health", "trainable", "seconds",
                       "run_dir"])  # fmt: skip
    _print_per_class(per_class)
    return 0


def _params(result: dict) -> str:
    """Trainable parameters of the final model, and their share (LoRA: a few percent)."""
    n, total = result.get("trainable_params"), result.get("total_params")
    if not n or not total:
        return "-"
    return f"{n / 1e6:.2f}M ({100 * n / total:.1f}%)" if n >= 1e5 else f"{n:,} ({100 * n / total:.1f}%)"


def _health(result: dict) -> str:
    """The summary's health cell: ok, or what went wrong, in capitals (see evaluate/health)."""
    bad = [k for k, v in (result.get("health") or {}).items() if v]
    return "ok" if not bad else " ".join(f"!{k.upper()}" for k in bad)


def _print_per_class(per_class: list[tuple[str, dict | None]]) -> None:
    """Target-test accuracy per class, one column per run (classes as rows)."""
    runs = [(name, pc) for name, pc in per_class if pc]
    if not runs:
        return
    rows = [
        {"class": c, **{n: "-" if pc.get(c) is None else f"{pc[c]:.1f}" for n, pc in runs}}
        for c in runs[0][1]
    ]
    print("\ntarget accuracy per class:")
    print_table(rows, ["class", *(n for n, _ in runs)])


def cmd_compare(args: argparse.Namespace) -> int:
    from shiftray.compare import compare

    jobs, overrides = _split_args(args.items)
    if len(jobs) != 1:
        raise SpecError("shiftray compare takes exactly one job spec")
    base = load_spec(jobs[0], overrides)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    out_dir, table = compare(base, strategies, args.seeds, use_ray=not args.no_ray)
    print_table(table, ["strategy", "target_acc", "seeds", "seconds/run"])
    print(f"\ntable: {out_dir / 'compare.md'}\nplot:  {out_dir / 'compare.svg'}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    jobs, overrides = _split_args(args.items)
    for j in jobs:
        spec = load_spec(j, overrides)
        print(
            f"{j}: ok ({spec.method.name}, {spec.data.benchmark} {spec.data.source} -> {spec.data.target})"
        )
        if args.print:
            print(dump_spec(spec))
    return 0


def cmd_reference(args: argparse.Namespace) -> int:
    from shiftray.config.reference import spec_reference

    sys.stdout.write(spec_reference())
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from shiftray.models.backbones import FAMILIES
    from shiftray.registry import BACKBONES, DATASETS, METHODS, VALIDATORS

    regs = (("backbones", BACKBONES), ("methods", METHODS), ("datasets", DATASETS))
    for title, reg in (*regs, ("validators", VALIDATORS)):
        print(f"{title}:")
        rows = reg.describe() + (list(FAMILIES.items()) if title == "backbones" else [])
        for name, doc in rows:
            print(f"  {name:<16} {doc}")
    return 0


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


def cmd_serve(args: argparse.Namespace) -> int:
    from shiftray.api import serve
    from shiftray.serving.local import run_dir_arg

    models = dict(run_dir_arg(a) for a in args.run_dirs)
    return serve(
        models, port=args.port, grpc_port=args.grpc_port, host=args.host,
        grace_s=args.grace_period, models_root=args.models_root, replicas=args.replicas,
        max_batch_size=args.max_batch_size, device=args.device, threads=args.threads,
        **({"auth": {"keys_file": args.keys_file}} if args.keys_file else {}),
    )  # fmt: skip


def cmd_tune(args: argparse.Namespace) -> int:
    from shiftray.api import tune

    jobs, overrides = _split_args(args.items)
    if len(jobs) != 1:
        raise SpecError("shiftray tune takes one job spec with a search: section")
    tune(jobs[0], overrides, resume=args.resume, restart=args.restart,
         num_samples=args.num_samples)  # fmt: skip
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    path = Path(args.dir)
    if (path / "search.json").is_file():
        from shiftray.report.search_report import search_report

        print(search_report(path, args.out))
        return 0
    if not path.is_dir():
        raise UserInputError(f"{path} does not exist")
    from shiftray.report.run_report import run_report

    print(run_report(path, args.before, args.out))
    return 0


def cmd_fewshot(args: argparse.Namespace) -> int:
    from shiftray.evaluate.fewshot import embed, evaluate

    shot_list = [int(k) for k in args.shots.split(",")]
    features, labels = embed(args.run_dir, args.domain, args.benchmark, args.finetune, args.ways,
                             max(shot_list), args.finetune_lr, args.seed)  # fmt: skip
    rows = []
    for shots in shot_list:
        r = evaluate(features, labels, args.ways, shots, args.episodes, args.queries, args.seed)
        rows.append({"episode": f"{r.ways}-way {r.shots}-shot", "episodes": r.episodes,
                     "accuracy % (95% CI)": f"{r.accuracy:.2f} ± {r.ci95:.2f}",
                     "queries/class": r.queries})  # fmt: skip
    tuned = f", after {args.finetune} source episodes of episodic fine-tuning" if args.finetune else ""
    print(f"{args.run_dir} on {args.domain} ({len(labels)} test examples, prototypes of its features{tuned})")
    print_table(rows, ["episode", "accuracy % (95% CI)", "episodes", "queries/class"])
    return 0


def _version() -> str:
    """The installed package's version, with Ray's and torch's (what a bug report needs)."""
    from importlib.metadata import PackageNotFoundError, version

    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return f"{of('shiftray')} (ray {of('ray')}, torch {of('torch')})"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shiftray", description="Domain adaptation and transfer learning on Ray"
    )
    p.add_argument("-C", dest="chdir", metavar="DIR",
                   help="run as if started in DIR: relative paths in specs resolve there")  # fmt: skip
    p.add_argument("--version", action="version", version=f"shiftray {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser(
        "run", help="train one or more job specs (JOB.yaml ... [section.field=value ...])"
    )
    r.add_argument("items", nargs="*", metavar="JOB.yaml|override")
    r.add_argument(
        "--resume", action="append", metavar="RUN_DIR", help="continue this run directory"
    )
    r.add_argument(
        "--no-ray", action="store_true", help="run the loop in this process, without Ray"
    )
    r.add_argument(
        "--restart",
        action="store_true",
        help="delete the run directory (and its checkpoints in tracking.storage_path) first: no resume",
    )
    r.add_argument("--max-failures", type=int, default=None, help="override resources.max_failures")
    r.add_argument("--quiet", action="store_true", help="no live progress")
    r.set_defaults(func=cmd_run)

    t = sub.add_parser(
        "tune", help="search a job spec's search: space with Ray Tune, selecting without target labels"
    )
    t.add_argument("items", nargs="+", metavar="JOB.yaml|override")
    t.add_argument("--resume", action="store_true", help="continue the search in its directory")
    t.add_argument("--restart", action="store_true", help="delete an earlier search there first")
    t.add_argument("--num-samples", type=int, default=None, help="override search.num_samples")
    t.set_defaults(func=cmd_tune)

    rp = sub.add_parser(
        "report", help="a self-contained HTML report of a search (SEARCH_DIR) or a run (RUN_DIR)"
    )
    rp.add_argument("dir", metavar="SEARCH_DIR|RUN_DIR")
    rp.add_argument("--out", default=None, help="default: DIR/report.html")
    rp.add_argument(
        "--before", default=None, metavar="RUN_DIR",
        help="runs: the model before adaptation (e.g. the source-only run; default: the earliest kept checkpoint)",
    )  # fmt: skip
    rp.set_defaults(func=cmd_report)

    c = sub.add_parser(
        "compare", help="run transfer strategies / methods side by side, several seeds"
    )
    c.add_argument("items", nargs="+", metavar="JOB.yaml|override")
    c.add_argument(
        "--strategies", default="scratch,feature-extraction,fine-tune,gradual-unfreeze,dann",
        help="comma-separated: scratch, feature-extraction, fine-tune, gradual-unfreeze, or method names",
    )  # fmt: skip
    c.add_argument("--seeds", type=int, default=3)
    c.add_argument(
        "--no-ray", action="store_true", help="run the variants one by one in this process"
    )
    c.set_defaults(func=cmd_compare)

    v = sub.add_parser("validate", help="check job specs without running them")
    v.add_argument("items", nargs="+", metavar="JOB.yaml|override")
    v.add_argument("--print", action="store_true", help="print the resolved spec")
    v.set_defaults(func=cmd_validate)

    ls = sub.add_parser("ls", help="list registered backbones, methods and datasets")
    ls.set_defaults(func=cmd_ls)
    ref = sub.add_parser(
        "reference", help="print the job-spec reference (Markdown), generated from the schema"
    )
    ref.set_defaults(func=cmd_reference)

    sv = sub.add_parser(
        "serve",
        help="serve trained run directories (Ray Serve: KServe V1 and the Open Inference "
        "Protocol over HTTP and gRPC)",
    )
    sv.add_argument("run_dirs", nargs="*", metavar="RUN_DIR|NAME=RUN_DIR")
    sv.add_argument("--models-root", help="serve every run directory inside, by folder name")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--replicas", type=int, default=None, help="model replicas (default 1)")
    sv.add_argument("--max-batch-size", type=int, default=32)
    sv.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    sv.add_argument("--threads", type=int, default=None, help="torch threads per replica")
    sv.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        help="also serve the Open Inference Protocol over gRPC on this port",
    )
    sv.add_argument(
        "--keys-file",
        default=None,
        help="API keys (shiftray keys add): every model route then needs a key",
    )
    sv.add_argument(
        "--grace-period",
        type=float,
        default=30.0,
        help="seconds a SIGTERM gives requests in flight before the server exits",
    )
    sv.set_defaults(func=cmd_serve)

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
    fs = sub.add_parser("fewshot", help="N-way K-shot accuracy of a trained run's features "
                        "(prototypical networks) on a labelled domain")  # fmt: skip
    fs.add_argument("run_dir", metavar="RUN_DIR")
    fs.add_argument("--domain", required=True, help="a domain of the run's benchmark, e.g. usps")
    fs.add_argument("--benchmark", help="another benchmark than the run's")
    fs.add_argument("--ways", type=int, default=5)
    fs.add_argument("--shots", default="1,5", help="comma-separated, e.g. 1,5")
    fs.add_argument("--queries", type=int, default=15, help="query examples per class")
    fs.add_argument("--episodes", type=int, default=600)
    fs.add_argument("--seed", type=int, default=0)
    fs.add_argument("--finetune", type=int, default=0, metavar="EPISODES",
                    help="episodic fine-tuning first: this many N-way K-shot episodes (the largest "
                    "--shots) of the run's labelled source training split, prototypical loss")
    fs.add_argument("--finetune-lr", type=float, default=1e-4, help="Adam's learning rate for it")
    fs.set_defaults(func=cmd_fewshot)
    from shiftray.cluster.commands import add_parsers
    from shiftray.serving.keys_cli import add_parsers as add_keys_parsers

    add_parsers(sub)
    add_keys_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)  # overrides may follow options: --overlay gpu a.b=1
    if extra and (not isinstance(getattr(args, "items", None), list)
                  or any(a.startswith("-") or "=" not in a for a in extra)):  # fmt: skip
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.items += extra
    try:
        if args.chdir:
            os.chdir(args.chdir)
        return args.func(args)
    except (UserInputError, FileNotFoundError, ValidationError) as e:  # the user's input: one
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)  # line; a bug keeps
        print(f"error: {msg}", file=sys.stderr)  # its traceback
        return 2


if __name__ == "__main__":
    sys.exit(main())
