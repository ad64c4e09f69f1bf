"""The cluster commands of `shiftray`: ``k8s render|validate|lock``, ``submit``, ``status``,
``logs``, ``stop``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shiftray.errors import UserInputError


def _split(items: list[str]) -> tuple[str, list[str]]:
    jobs = [a for a in items if "=" not in a]
    if len(jobs) != 1:
        raise UserInputError(f"give one job spec (got {len(jobs)}: {' '.join(jobs) or 'none'})")
    return jobs[0], [a for a in items if "=" in a]


def cmd_render(args: argparse.Namespace) -> int:
    from shiftray.cluster import k8s

    path, overrides = _split(args.items)
    k8s_dir = Path(args.k8s_dir) if args.k8s_dir else k8s.CHECKOUT_K8S
    if args.serve is not None and "=" in args.serve:
        raise UserInputError(f"--serve {args.serve}: give the run directory, or put --serve last "
                             "(it takes an optional RUN_DIR)")  # fmt: skip
    if args.serve is not None:
        out = k8s.render_serve(path, overrides, args.serve or None, args.overlay, args.namespace, k8s_dir)
    else:
        out = k8s.render_job(path, overrides, args.overlay, args.trials, args.memory,
                             args.namespace, k8s_dir)  # fmt: skip
    if args.validate:
        from shiftray.cluster.validate import validate_docs

        errors = validate_docs(out.docs, args.crds)
        if errors:
            raise UserInputError("the rendered manifests do not validate:\n  " + "\n  ".join(errors))
    sys.stdout.write(out.yaml())
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from shiftray.cluster.validate import validate_files

    errors = validate_files(args.files, args.crds)
    for e in errors:
        print(e)
    print(f"{len(args.files)} file(s): {'valid' if not errors else f'{len(errors)} problem(s)'}",
          file=sys.stderr)  # fmt: skip
    return 1 if errors else 0


def cmd_lock(args: argparse.Namespace) -> int:
    from shiftray.cluster.lock import write_lock

    n = write_lock(args.out)
    print(f"{args.out}: {n} pinned packages")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from shiftray.cluster import submit

    path, overrides = _split(args.items)
    if args.output_dir:
        overrides.append(f"tracking.output_dir={args.output_dir}")
    job_id, jobs = submit.submit(path, overrides, args.address, args.image, None, args.max_upload_mb,
                                 args.cluster_dir)  # fmt: skip
    print(f"submitted {job_id} to {submit.address_of(args.address)}", file=sys.stderr)
    if args.no_wait:
        print(job_id)
        return 0
    try:
        status = submit.follow(jobs, job_id)
    except KeyboardInterrupt:
        print(f"\nstopped following; the job runs on (shiftray stop {job_id})", file=sys.stderr)
        return 130
    print(f"{job_id}: {status}", file=sys.stderr)
    return 0 if status == "SUCCEEDED" else 1


def cmd_status(args: argparse.Namespace) -> int:
    from shiftray.cluster import submit
    from shiftray.display import print_table

    jobs = submit.client(args.address)
    if args.job_id:
        info = _info(jobs, args.job_id)
        print(f"{args.job_id}: {info.status.value}" + (f" ({info.message})" if info.message else ""))
        return 0
    rows = [{"job": j.submission_id or j.job_id or "", "status": str(j.status.value),
             "entrypoint": j.entrypoint[:60]} for j in jobs.list_jobs()]  # fmt: skip
    print_table(rows, ["job", "status", "entrypoint"])
    return 0


def _info(jobs, job_id: str):
    try:
        return jobs.get_job_info(job_id)
    except RuntimeError as e:
        raise UserInputError(f"job {job_id}: {str(e).splitlines()[0]}") from None


def cmd_logs(args: argparse.Namespace) -> int:
    from shiftray.cluster import submit

    jobs = submit.client(args.address)
    _info(jobs, args.job_id)
    if args.follow:
        submit.follow(jobs, args.job_id)
    else:
        sys.stdout.write(jobs.get_job_logs(args.job_id))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from shiftray.cluster import submit

    _info(submit.client(args.address), args.job_id)
    print(f"{args.job_id}: {submit.stop(args.address, args.job_id)}")
    return 0


def add_parsers(sub) -> None:
    """``k8s``, ``submit``, ``status``, ``logs`` and ``stop`` on the `shiftray` parser."""
    k = sub.add_parser("k8s", help="KubeRay manifests: render from a job spec, validate, lock")
    ks = k.add_subparsers(dest="k8s_command", required=True)
    r = ks.add_parser("render", help="a RayJob (or RayService with --serve) for a job spec, as YAML")
    r.add_argument("items", nargs="+", metavar="JOB.yaml|override")
    r.add_argument("--overlay", default="cpu", help="k8s/overlays/<name>: cpu (default) or gpu")
    r.add_argument("--serve", nargs="?", const="", default=None, metavar="RUN_DIR",
                   help="a RayService serving RUN_DIR (default: the run directory the spec writes)")  # fmt: skip
    r.add_argument("--trials", type=int, help="concurrent trials of a search (the worker pods)")
    r.add_argument("--memory", help="worker pod memory, e.g. 16Gi (default: the overlay's)")
    r.add_argument("--namespace", "-n", help="metadata.namespace of what is rendered")
    r.add_argument("--k8s-dir", help="the k8s/ folder with overlays/ (default: this checkout's)")
    r.add_argument("--validate", action="store_true", help="validate before printing (needs --crds)")
    r.add_argument("--crds", help="KubeRay CRD folder (default: $SHIFTRAY_KUBERAY_CRDS)")
    r.set_defaults(func=cmd_render)
    v = ks.add_parser("validate", help="validate manifests offline: KubeRay CRDs, core schemas")
    v.add_argument("files", nargs="+", metavar="FILE.yaml")
    v.add_argument("--crds", help="KubeRay CRD folder (default: $SHIFTRAY_KUBERAY_CRDS)")
    v.set_defaults(func=cmd_validate)
    lk = ks.add_parser("lock", help="write the image's locked dependencies from this environment")
    lk.add_argument("--out", default="k8s/requirements.lock")
    lk.set_defaults(func=cmd_lock)
    address = {"help": "the Ray dashboard, http://HEAD:8265 (default: $RAY_ADDRESS or local)"}
    s = sub.add_parser("submit", help="run a job spec on a Ray cluster (Ray Jobs API)")
    s.add_argument("items", nargs="+", metavar="JOB.yaml|override")
    s.add_argument("--address", **address)
    s.add_argument("--output-dir", help="tracking.output_dir on the cluster's shared storage")
    s.add_argument("--image", action="store_true", help="use the cluster image's shiftray: upload the spec only")
    s.add_argument("--cluster-dir", help="relative paths in the spec resolve here on the cluster "
                   "(default: the parent of the output directory)")  # fmt: skip
    s.add_argument("--max-upload-mb", type=float, default=100.0, help="working directory limit")
    s.add_argument("--no-wait", action="store_true", help="print the job id and return")
    s.set_defaults(func=cmd_submit)
    for name, func, text in (("status", cmd_status, "a job's status (no JOB_ID: all jobs)"),
                             ("logs", cmd_logs, "a job's logs"), ("stop", cmd_stop, "stop a job")):  # fmt: skip
        c = sub.add_parser(name, help=text)
        c.add_argument("job_id", nargs="?" if name == "status" else None, metavar="JOB_ID")
        c.add_argument("--address", **address)
        if name == "logs":
            c.add_argument("--follow", "-f", action="store_true", help="until the job ends")
        c.set_defaults(func=func)
