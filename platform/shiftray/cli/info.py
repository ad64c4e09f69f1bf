"""`shiftray init`, `validate`, `ls`, `reference`, `report` and `fewshot`: specs, components,
reports."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shiftray.cli.common import _split_args
from shiftray.config.load import dump_spec, load_spec
from shiftray.display import print_table
from shiftray.errors import UserInputError


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
    from shiftray.registry import BACKBONES, DATASETS, FAMILIES, METHODS, VALIDATORS

    regs = (("backbones", BACKBONES), ("methods", METHODS), ("datasets", DATASETS))
    for title, reg in (*regs, ("validators", VALIDATORS)):
        print(f"{title}:")
        fams = [(f"{f.prefix}<name>", f.about) for f in FAMILIES] if title == "backbones" else []
        rows = reg.describe() + fams
        for name, doc in rows:
            print(f"  {name:<16} {doc}")
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
    tuned = (
        f", after {args.finetune} source episodes of episodic fine-tuning" if args.finetune else ""
    )
    print(
        f"{args.run_dir} on {args.domain} ({len(labels)} test examples, prototypes of its features{tuned})"
    )
    print_table(rows, ["episode", "accuracy % (95% CI)", "episodes", "queries/class"])
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from shiftray.config.init import init_spec

    columns = {"label": args.label, "domain": args.domain, "text": args.text}
    text = init_spec(args.data, args.method, args.path, args.source, args.target, args.name,
                     columns)  # fmt: skip
    if not args.out:
        sys.stdout.write(text)
        return 0
    out = Path(args.out)
    if out.exists() and not args.force:
        raise UserInputError(f"{out} exists: choose another --out, or --force to replace it")
    out.write_text(text)
    print(f"wrote {out}: shiftray validate {out}; shiftray run {out}")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    import shutil

    from shiftray.config.shipped import about, jobs_dir, shipped_jobs

    jobs = shipped_jobs()
    if not jobs:
        raise UserInputError("no shipped job specs found (neither a checkout's jobs/ nor "
                             "<prefix>/share/shiftray/jobs)")  # fmt: skip
    if not args.names:
        print(f"{len(jobs)} job specs in {jobs_dir()}:")
        for name, path in jobs.items():
            print(f"  {name:<34} {about(path)}")
        return 0
    if unknown := [n for n in args.names if n.removesuffix(".yaml") not in jobs]:
        raise UserInputError(f"no shipped job {', '.join(unknown)}; `shiftray jobs` lists them")
    out = Path(args.to)
    for name in args.names:
        dest = out / f"{name.removesuffix('.yaml')}.yaml"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists() and not args.force:
            raise UserInputError(f"{dest} exists: --force replaces it")
        shutil.copyfile(jobs[name.removesuffix(".yaml")], dest)
        print(f"wrote {dest}")
    return 0


def add_parsers(sub) -> None:
    i = sub.add_parser("init", help="write a commented job spec for your own data")
    i.add_argument(
        "--data",
        required=True,
        choices=["imagefolder", "table", "text"],
        help="imagefolder: <path>/<domain>/<class>/*.jpg; table: a CSV/TSV/JSONL/"
        "Parquet file with label and domain columns; text: the same with a text column",
    )
    i.add_argument("--path", required=True, help="the image root, or the table file")
    i.add_argument("--source", required=True, help="the labelled domain (a domain value)")
    i.add_argument("--target", required=True, help="the unlabelled domain to adapt to")
    i.add_argument("--method", default="dann", help="a registered method (shiftray ls)")
    i.add_argument("--label", default="label", help="a table's label column")
    i.add_argument("--domain", default="domain", help="a table's domain column")
    i.add_argument("--text", default="text", help="a text table's text column")
    i.add_argument("--name", default=None, help="the run's name (default: kind-method-pair)")
    i.add_argument("--out", default=None, help="write here (default: print)")
    i.add_argument("--force", action="store_true", help="replace --out if it exists")
    i.set_defaults(func=cmd_init)
    j = sub.add_parser("jobs", help="list the shipped job specs (jobs copy: copy some to edit)")
    j.set_defaults(func=cmd_jobs, names=[])
    jc = j.add_subparsers(dest="jobs_command").add_parser("copy", help="copy shipped specs")
    jc.add_argument("names", nargs="+", metavar="BENCHMARK/NAME", help="e.g. amazon/dann")
    jc.add_argument("--to", default="jobs", help="where copies go (default: ./jobs)")
    jc.add_argument("--force", action="store_true", help="replace existing copies")
    jc.set_defaults(func=cmd_jobs)
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
    fs.add_argument(
        "--finetune",
        type=int,
        default=0,
        metavar="EPISODES",
        help="episodic fine-tuning first: this many N-way K-shot episodes (the largest "
        "--shots) of the run's labelled source training split, prototypical loss",
    )
    fs.add_argument("--finetune-lr", type=float, default=1e-4, help="Adam's learning rate for it")
    fs.set_defaults(func=cmd_fewshot)
