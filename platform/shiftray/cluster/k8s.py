"""KubeRay manifests from a job spec: `shiftray k8s render JOB.yaml [--overlay gpu] [--serve]`.

The kustomize overlay (k8s/overlays/<overlay>, rendered by ``kubectl kustomize``) is the
template: its RayJob (``shiftray-run``, or ``shiftray-tune`` for a spec with a ``search:``
section) or its RayService. From the spec come:

- a ConfigMap holding the resolved spec (overrides applied, ``base:`` merged), mounted on the
  head pod at /home/ray/job: the spec need not exist anywhere but on the laptop;
- the entrypoint ``shiftray -C /mnt/shiftray run|tune /home/ray/job/spec.yaml``: relative paths
  in the spec (``tracking.output_dir: runs``, a SHOT source run) land on the shared volume;
- the worker group: one pod per Ray Train worker, ``resources.num_workers`` of them (times the
  concurrent trials of a search), each with ``ceil(cpus_per_worker)`` CPUs and a GPU when
  ``resources.use_gpu``;
- for ``--serve``: the RayService's Serve config, serving the run directory this spec writes.

Names carry a hash of the spec, so a changed spec is a new RayJob rather than an edit that
KubeRay would not act on.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shiftray.config.load import dump_spec, load_raw, spec_from_dict
from shiftray.config.schema import JobSpec
from shiftray.errors import UserInputError
from shiftray.serving.args import AppArgs

MOUNT = "/mnt/shiftray"  # the shared volume (k8s/base/storage.yaml)
SPEC_DIR = "/home/ray/job"  # where the head pod sees the ConfigMap
CHECKOUT_K8S = Path(__file__).resolve().parents[3] / "k8s"


@dataclass
class Rendered:
    """What `render` emits, in order: the ConfigMap (none for serving) and the resource."""

    docs: list[dict[str, Any]]

    def yaml(self) -> str:
        return yaml.dump_all(self.docs, Dumper=BlockDumper, sort_keys=False)


class BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the spec, the Serve config) as ``|`` blocks a person can read."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


BlockDumper.add_representer(str, _str)


def kustomize(overlay: str, k8s_dir: Path = CHECKOUT_K8S) -> list[dict[str, Any]]:
    """The overlay's manifests, as ``kubectl kustomize`` (or ``kustomize build``) renders them."""
    path = k8s_dir / "overlays" / overlay
    if not path.is_dir():
        have = sorted(p.name for p in (k8s_dir / "overlays").glob("*")) if k8s_dir.is_dir() else []
        raise UserInputError(f"no overlay {overlay!r} in {k8s_dir / 'overlays'} (have: {', '.join(have) or 'none'}); "
                             "give the checkout's k8s/ with --k8s-dir")  # fmt: skip
    if shutil.which("kubectl"):
        cmd = ["kubectl", "kustomize", str(path)]
    elif shutil.which("kustomize"):
        cmd = ["kustomize", "build", str(path)]
    else:
        raise UserInputError("rendering needs kubectl (its built-in kustomize) or kustomize on PATH")
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise UserInputError(f"{' '.join(cmd)} failed:\n{out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def pick(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    for d in docs:
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name):
            return copy.deepcopy(d)
    raise UserInputError(f"the overlay has no {kind} {name or ''}".rstrip())


def slug(text: str, limit: int = 38) -> str:
    """A DNS-1035 name part: lower case, digits and '-', starting with a letter, ending
    alphanumeric. 38 characters leave room for ``-<hash8>``: KubeRay refuses RayJob names over
    47 characters (its pods' names are built from them)."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    s = s if s[:1].isalpha() else f"j-{s}".rstrip("-")
    return s[:limit].strip("-")


def load_job(path: str, overrides: list[str], paths_from: str | Path = MOUNT) -> tuple[JobSpec, str]:
    """The validated spec (a search spec's space checked too) and its resolved YAML; relative
    file paths in it (a SHOT source run, own data) resolve against ``paths_from`` on the
    cluster, not against this machine's working directory."""
    raw = load_raw(path, overrides, Path(paths_from))
    if raw.get("search") is not None:  # the space's values are checked too
        from shiftray.search.space import load_search

        spec = load_search(path, overrides, Path(paths_from)).spec
    else:
        spec = spec_from_dict(raw, path)
    return spec, dump_spec(spec)


def size_workers(cluster: dict[str, Any], spec: JobSpec, pods: int, memory: str | None) -> None:
    """One worker group of ``pods`` pods, each one Ray Train worker's CPUs (and GPU)."""
    group = cluster["workerGroupSpecs"][0]
    group.update(replicas=pods, minReplicas=pods, maxReplicas=pods)
    # a streamed job's Ray Data reads run beside the worker: one CPU more for them
    cpus = str(math.ceil(spec.resources.cpus_per_worker) + int(spec.data.stream.enabled))
    group.setdefault("rayStartParams", {})["num-cpus"] = cpus
    res = group["template"]["spec"]["containers"][0].setdefault("resources", {})
    for part in ("requests", "limits"):
        res.setdefault(part, {})["cpu"] = cpus
        if memory:
            res[part]["memory"] = memory
        if spec.resources.use_gpu:
            res[part]["nvidia.com/gpu"] = 1
        else:
            res[part].pop("nvidia.com/gpu", None)


def mount_spec(cluster: dict[str, Any], configmap: str) -> None:
    pod = cluster["headGroupSpec"]["template"]["spec"]
    pod.setdefault("volumes", []).append({"name": "job-spec", "configMap": {"name": configmap}})
    pod["containers"][0].setdefault("volumeMounts", []).append(
        {"name": "job-spec", "mountPath": SPEC_DIR, "readOnly": True}
    )


def check_overlay(spec: JobSpec, overlay: str) -> None:
    gpu_image = overlay == "gpu"
    if spec.resources.use_gpu and not gpu_image:
        raise UserInputError("resources.use_gpu=true needs --overlay gpu (the CUDA image, GPU nodes)")
    if gpu_image and not spec.resources.use_gpu:
        print("notice: --overlay gpu with resources.use_gpu=false: the workers get no GPU",
              file=sys.stderr)  # fmt: skip


def named(doc: dict[str, Any], name: str, namespace: str | None) -> dict[str, Any]:
    doc["metadata"]["name"] = name
    if namespace:
        doc["metadata"]["namespace"] = namespace
    return doc


def render_job(path: str, overrides: list[str], overlay: str = "cpu", trials: int | None = None,
               memory: str | None = None, namespace: str | None = None,
               k8s_dir: Path = CHECKOUT_K8S) -> Rendered:  # fmt: skip
    """ConfigMap + RayJob for ``shiftray run`` (or ``shiftray tune`` for a search spec)."""
    spec, text = load_job(path, overrides)
    check_overlay(spec, overlay)
    search = spec.search is not None
    if search:
        trials = trials or spec.search.max_concurrent_trials or min(spec.search.num_samples, 4)
        spec.search.max_concurrent_trials = trials
        text = dump_spec(spec)
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    name = f"{slug(spec.name)}-{digest}"
    label = {"shiftray.io/job": slug(spec.name, 63)}  # kubectl delete configmap,rayjob -l ...
    cm = named({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-spec", "labels": label},
                "data": {"spec.yaml": text}}, f"{name}-spec", namespace)  # fmt: skip
    job = named(pick(kustomize(overlay, k8s_dir), "RayJob", f"shiftray-{'tune' if search else 'run'}"),
                name, namespace)  # fmt: skip
    job["metadata"].setdefault("labels", {}).update(label)
    verb = "tune" if search else "run"
    job["spec"]["entrypoint"] = f"shiftray -C {MOUNT} {verb} {SPEC_DIR}/spec.yaml"
    cluster = job["spec"]["rayClusterSpec"]
    size_workers(cluster, spec, spec.resources.num_workers * (trials if search else 1), memory)
    mount_spec(cluster, cm["metadata"]["name"])
    return Rendered([cm, job])


def run_dir_on_cluster(spec: JobSpec) -> str:
    """Where the spec's run lands on the shared volume; a search's selected trial is in best/."""
    out = spec.tracking.output_dir
    run = Path(out if out.startswith("/") else f"{MOUNT}/{out}") / spec.name
    return str(run / "best" if spec.search is not None else run)


def render_serve(path: str, overrides: list[str], run_dir: str | None, overlay: str = "cpu",
                 namespace: str | None = None, k8s_dir: Path = CHECKOUT_K8S) -> Rendered:  # fmt: skip
    """A RayService serving the run directory the spec writes (or ``run_dir``), model named
    after the spec."""
    spec, _ = load_job(path, overrides)
    model = slug(spec.name, 63)
    svc = named(pick(kustomize(overlay, k8s_dir), "RayService"), f"{slug(spec.name)}-serve", namespace)
    config = yaml.safe_load(svc["spec"]["serveConfigV2"])
    args = config["applications"][0]["args"]
    args["models"] = {model: run_dir or run_dir_on_cluster(spec)}
    args["device"] = "cuda" if overlay == "gpu" else "cpu"
    AppArgs.model_validate(args)  # what build_app will accept
    svc["spec"]["serveConfigV2"] = yaml.dump(config, Dumper=BlockDumper, sort_keys=False)
    return Rendered([svc])
