"""`shiftray run`, `tune` and `compare`: training, search and side-by-side comparisons."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from shiftray.cli.common import _split_args
from shiftray.config.load import SpecError, load_spec
from shiftray.display import print_table  # rich on a terminal, plain text otherwise


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
    return (
        f"{n / 1e6:.2f}M ({100 * n / total:.1f}%)"
        if n >= 1e5
        else f"{n:,} ({100 * n / total:.1f}%)"
    )


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


def cmd_tune(args: argparse.Namespace) -> int:
    from shiftray.api import tune

    jobs, overrides = _split_args(args.items)
    if len(jobs) != 1:
        raise SpecError("shiftray tune takes one job spec with a search: section")
    tune(jobs[0], overrides, resume=args.resume, restart=args.restart,
         num_samples=args.num_samples)  # fmt: skip
    return 0


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


def add_parsers(sub) -> None:
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
        "tune",
        help="search a job spec's search: space with Ray Tune, selecting without target labels",
    )
    t.add_argument("items", nargs="+", metavar="JOB.yaml|override")
    t.add_argument("--resume", action="store_true", help="continue the search in its directory")
    t.add_argument("--restart", action="store_true", help="delete an earlier search there first")
    t.add_argument("--num-samples", type=int, default=None, help="override search.num_samples")
    t.set_defaults(func=cmd_tune)
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
