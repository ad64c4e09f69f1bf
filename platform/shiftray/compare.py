"""The comparison protocol: does transfer help here, and which kind?

`shiftray compare JOB.yaml --strategies scratch,feature-extraction,fine-tune,gradual-unfreeze,dann
--seeds 3` derives one variant of the job per strategy and seed, runs them as Ray tasks (one
core each, side by side), and writes to ``<output_dir>/<name>-compare/``: ``compare.json``
(every run), ``compare.md`` (mean ± std of target accuracy and time per strategy) and
``compare.svg`` (the plot). Strategies are overrides of the base job:

- scratch:            random initialisation (model.pretrained=false), everything trained, ERM
- feature-extraction: frozen pre-trained backbone, features cached, new head trained, ERM
- fine-tune:          everything trained (backbone at finetune.backbone_lr_scale), ERM
- gradual-unfreeze:   finetune.stages unfreeze the backbone from the top, ERM
- <method name>:      fine-tuning with that adaptation method (dann, cdan, mcc, ...)
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiftray.config.load import SpecError, apply_overrides, spec_from_dict
from shiftray.config.schema import JobSpec
from shiftray.errors import UserInputError
from shiftray.registry import METHODS

ERM = ["method.name=erm", "method.params={}"]
STRATEGIES: dict[str, list[str]] = {
    "scratch": [
        "model.pretrained=false",
        "finetune.strategy=fine-tune",
        "finetune.backbone_lr_scale=1.0",
        *ERM,
    ],
    "feature-extraction": ["finetune.strategy=feature-extraction", *ERM],
    "fine-tune": ["finetune.strategy=fine-tune", *ERM],
    "gradual-unfreeze": ["finetune.strategy=gradual-unfreeze", *ERM],
}


@dataclass
class Variant:
    strategy: str
    seed: int
    spec: JobSpec


def strategy_overrides(name: str, base: JobSpec) -> list[str]:
    if name in STRATEGIES:
        return STRATEGIES[name]
    if name in METHODS:
        keep = name == base.method.name  # the base job's own method keeps its parameters
        return ["finetune.strategy=fine-tune", f"method.name={name}"] + (
            [] if keep else ["method.params={}"]
        )
    raise SpecError(
        f"unknown strategy {name!r}; allowed: {', '.join(STRATEGIES)} or a method: {', '.join(METHODS.names())}"
    )


def variants(base: JobSpec, strategies: list[str], seeds: int, out_dir: Path) -> list[Variant]:
    raw = base.model_dump(mode="json")
    out = []
    for strategy in strategies:
        ov = strategy_overrides(strategy, base)
        for seed in range(seeds):
            extra = [
                f"name={base.name}-{strategy}-s{seed}",
                f"train.seed={seed}",
                f"tracking.output_dir={out_dir}",
            ]
            spec = spec_from_dict(apply_overrides(raw, ov + extra), f"{base.name} [{strategy}]")
            out.append(Variant(strategy, seed, spec))
    return out


def _run_variant(spec_json: dict[str, Any], run_dir: str, data) -> dict[str, Any]:
    import torch

    from shiftray.train.loop import train_loop_per_worker
    from shiftray.train.run import LoopConfig

    spec = JobSpec.model_validate(spec_json)
    torch.set_num_threads(
        spec.resources.torch_threads or max(1, int(spec.resources.cpus_per_worker))
    )
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = train_loop_per_worker(LoopConfig(spec, Path(run_dir), data))
    return {**result, "seconds": time.perf_counter() - t0}


def summarize(rows: list[dict], strategies: list[str]) -> list[dict]:
    table = []
    for s in strategies:
        accs = [r["target_acc"] for r in rows if r["strategy"] == s]
        secs = [r["seconds"] for r in rows if r["strategy"] == s]
        if not accs:
            continue
        table.append(
            {
                "strategy": s,
                "target_acc": f"{statistics.mean(accs):.2f} ± {statistics.stdev(accs) if len(accs) > 1 else 0.0:.2f}",
                "seeds": len(accs),
                "seconds/run": f"{statistics.mean(secs):.0f}",
                "_mean": statistics.mean(accs),
                "_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            }
        )
    return table


def compare(
    base: JobSpec, strategies: list[str], seeds: int, use_ray: bool = True
) -> tuple[Path, list[dict]]:
    from shiftray.data.loading import load_job_data

    out_dir = (Path(base.tracking.output_dir).expanduser() / f"{base.name}-compare").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = variants(base, strategies, seeds, out_dir)  # every variant validated before any runs
    cache: dict[str, Any] = {}
    if use_ray:
        import ray

        from shiftray.train.launch import ensure_ray

        ensure_ray()

    def data_for(v: Variant):
        """Each distinct data spec is read once (and put in the object store once)."""
        uses_source = METHODS.get(v.spec.method.name).uses_source
        key = json.dumps(v.spec.data.model_dump(mode="json")) + str(uses_source)
        if key not in cache:
            data = load_job_data(v.spec)
            if data.target_test.y is None:
                raise UserInputError(
                    f"compare ranks strategies by target accuracy, and data.target="
                    f"{v.spec.data.target!r} has no labels; compare on a labelled pair, or run "
                    "the strategies with train.label_free_scores: true and read target_im"
                )
            cache[key] = ray.put(data) if use_ray else data
        return cache[key]

    t0 = time.perf_counter()
    if use_ray:
        task = ray.remote(num_cpus=base.resources.cpus_per_worker)(_run_variant)
        refs = [
            task.remote(v.spec.model_dump(mode="json"), str(out_dir / v.spec.name), data_for(v))
            for v in todo
        ]
        results = {v.spec.name: r for v, r in zip(todo, ray.get(refs), strict=True)}
    else:
        results = {
            v.spec.name: _run_variant(
                v.spec.model_dump(mode="json"), str(out_dir / v.spec.name), data_for(v)
            )
            for v in todo
        }
    rows = [
        {"strategy": v.strategy, "seed": v.seed, "run": v.spec.name,
         "target_acc": results[v.spec.name]["target_acc"], "seconds": results[v.spec.name]["seconds"]}
        for v in todo
    ]  # fmt: skip
    table = summarize(rows, strategies)
    write_outputs(out_dir, base, rows, table, time.perf_counter() - t0)
    return out_dir, table


def write_outputs(
    out_dir: Path, base: JobSpec, rows: list[dict], table: list[dict], seconds: float
) -> None:
    from shiftray.report.plots import bar_chart

    (out_dir / "compare.json").write_text(
        json.dumps({"job": base.name, "seconds": seconds, "runs": rows}, indent=1)
    )
    cols = ["strategy", "target_acc", "seeds", "seconds/run"]
    md = [f"# {base.name}: {base.data.source} -> {base.data.target} ({base.model.backbone})", "",
          "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]  # fmt: skip
    md += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in table]
    md += ["", f"{len(rows)} runs in {seconds:.0f} s."]
    (out_dir / "compare.md").write_text("\n".join(md) + "\n")
    bar_chart(
        out_dir / "compare.svg",
        [r["strategy"] for r in table], [r["_mean"] for r in table], [r["_std"] for r in table],
        f"{base.data.source} -> {base.data.target}: target accuracy", "target accuracy (%)",
    )  # fmt: skip
