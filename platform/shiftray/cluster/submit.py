"""Jobs on any Ray cluster through the Ray Jobs API (the dashboard's HTTP port, 8265).

    shiftray submit JOB.yaml [overrides] --address http://HEAD:8265 [--image] [--no-wait]
    shiftray status [JOB_ID]       shiftray logs JOB_ID [--follow]       shiftray stop JOB_ID

What travels: the resolved spec (overrides applied, ``base:`` merged) as ``.shiftray/spec.yaml``
in the job's working directory, and, unless ``--image`` (the cluster's image has shiftray),
this directory's files (``.git``, ``runs/``, ``.venv``, caches excluded; the size is checked
before anything is sent) with shiftray's own code as a ``py_modules`` entry, so the cluster runs
the code that was submitted. The job's working directory is temporary, so the spec's
``tracking.output_dir`` must be an absolute path on storage that the cluster's nodes share.

Token authentication (Ray 2.60's default): Ray's client reads ``RAY_AUTH_MODE=token`` and
``RAY_AUTH_TOKEN`` from the environment (k8s/README.md shows where KubeRay keeps the token).
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shiftray.cluster.k8s import load_job, slug
from shiftray.errors import UserInputError

EXCLUDES = (".git", ".venv", ".venv-*", "venv", "runs", "site", "__pycache__", "*.egg-info",
            ".pytest_cache", ".ruff_cache", ".hypothesis", ".ray", "node_modules", "wandb",
            ".shiftray")  # fmt: skip
SPEC = ".shiftray/spec.yaml"
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def address_of(given: str | None) -> str:
    return given or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS


def client(address: str | None):
    """A JobSubmissionClient, or an error that says where it looked and what to check."""
    from ray.job_submission import JobSubmissionClient

    addr = address_of(address)
    try:
        return JobSubmissionClient(addr)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UserInputError(
            f"no Ray Jobs API at {addr}: {str(e).splitlines()[0]}\n  is the cluster up and its "
            "dashboard reachable? (KubeRay: kubectl port-forward svc/shiftray-head-svc 8265:8265); "
            "with token authentication set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN"
        ) from None


def files(root: Path) -> Iterator[Path]:
    """The files a working-directory upload holds: everything under ``root`` but EXCLUDES."""
    for here, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not any(fnmatch.fnmatch(d, p) for p in EXCLUDES))
        for n in sorted(names):
            if not any(fnmatch.fnmatch(n, p) for p in EXCLUDES):
                yield Path(here) / n


def stage(workdir: Path | None, spec_text: str, max_mb: float) -> Path:
    """A temporary directory to upload: ``workdir``'s files (checked against ``max_mb`` first)
    and the spec. ``workdir`` None: the spec alone (image mode)."""
    found = [p for p in files(workdir) if p.is_file()] if workdir is not None else []
    size = sum(p.stat().st_size for p in found) / 2**20
    if size > max_mb:
        biggest = sorted(found, key=lambda p: -p.stat().st_size)[:5]
        raise UserInputError(
            f"the working directory {workdir} holds {size:.1f} MiB to upload (limit "
            f"{max_mb:g} MiB, --max-upload-mb); the largest files: "
            + ", ".join(f"{p.relative_to(workdir)} ({p.stat().st_size / 2**20:.1f} MiB)" for p in biggest)
            + ". Move data to the cluster's storage, or submit with --image"
        )
    out = Path(tempfile.mkdtemp(prefix="shiftray-submit-"))
    try:
        for p in found:
            dst = out / p.relative_to(workdir)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dst)
        (out / SPEC).parent.mkdir(parents=True, exist_ok=True)
        (out / SPEC).write_text(spec_text)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return out


def runtime_env(staged: Path, image: bool) -> dict[str, Any]:
    env: dict[str, Any] = {"working_dir": str(staged)}
    code = staged / "platform" / "shiftray"
    if not image and code.is_dir():  # this checkout's shiftray, not the cluster's
        env["py_modules"] = [str(code)]
    return env


def submit(path: str, overrides: list[str], address: str | None = None, image: bool = False,
           workdir: Path | None = None, max_mb: float = 100.0,
           cluster_dir: str | None = None) -> tuple[str, Any]:  # fmt: skip
    """Validate the spec (before anything is sent), stage and submit it: (job id, client).
    Relative file paths in the spec resolve against ``cluster_dir`` on the cluster (default:
    the parent of ``tracking.output_dir``: ``runs/x`` is then a run beside this one's)."""
    spec, text = load_job(path, overrides, Path.cwd())
    if cluster_dir or Path(spec.tracking.output_dir).is_absolute():
        spec, text = load_job(path, overrides, cluster_dir or Path(spec.tracking.output_dir).parent)
    if not Path(spec.tracking.output_dir).is_absolute():
        raise UserInputError(
            f"tracking.output_dir is {spec.tracking.output_dir!r}: on the cluster a relative path "
            "lands in the job's temporary working directory and is lost. Give an absolute path "
            "on storage every node mounts: --output-dir /mnt/shiftray/runs (KubeRay's volume)"
        )
    verb = "tune" if spec.search is not None else "run"
    jobs = client(address)  # before staging: nothing to clean up when no cluster answers
    staged = stage(None if image else (workdir or Path.cwd()), text, max_mb)
    job_id = f"shiftray-{slug(spec.name, 30)}-{uuid.uuid4().hex[:6]}"
    try:
        send(jobs, dict(
            entrypoint=f"python -m shiftray.cli {verb} {SPEC}",
            submission_id=job_id,
            runtime_env=runtime_env(staged, image),
            metadata={"shiftray_name": spec.name, "spec_sha256": hashlib.sha256(text.encode()).hexdigest()},
        ))  # fmt: skip
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return job_id, jobs


def send(jobs: Any, request: dict[str, Any], patience: float = 60.0) -> None:
    """Submit; a head that has just started answers "No available agent" until its dashboard
    agent is up, so that one answer is retried for ``patience`` seconds."""
    end = time.monotonic() + patience
    while True:
        try:
            jobs.submit_job(**request)
            return
        except RuntimeError as e:
            if "No available agent" not in str(e) or time.monotonic() > end:
                raise
        time.sleep(2)


def follow(jobs: Any, job_id: str, out=sys.stdout) -> str:
    """Print the job's logs as they come until it ends; its final status."""

    async def tail() -> None:
        async for lines in jobs.tail_job_logs(job_id):
            out.write(lines)
            out.flush()

    asyncio.run(tail())
    return wait(jobs, job_id, timeout=60)


def wait(jobs: Any, job_id: str, timeout: float) -> str:
    """The job's status once terminal (or when ``timeout`` seconds have passed)."""
    end = time.monotonic() + timeout
    while True:
        status = str(jobs.get_job_status(job_id).value)
        if status in TERMINAL or time.monotonic() > end:
            return status
        time.sleep(0.5)


def stop(address: str | None, job_id: str, timeout: float = 60) -> str:
    jobs = client(address)
    jobs.stop_job(job_id)
    return wait(jobs, job_id, timeout)
