"""Serving load benchmark: `shiftray serve` beside its peers, each serving the same `Predictor`
on the same run directory with the same torch threads, the same request bytes for all.

Servers (each its own process tree, all started for a model, idle when not under load):
  bare      the predictor in one plain FastAPI + uvicorn process (bench/serve_peers/bare.py):
            the baseline every ratio is to, measured in the same round;
  litserve  LitServe (LitAPI decode/predict/encode), one API server + one inference worker,
            batching off; litserve-batch: the same with LitServe's batching on
            (max_batch_size: as shiftray's, --litserve-batch-timeout to fill);
  kserve    KServe's `kserve.Model` + `ModelServer`, its native V2 route;
  shiftray  `shiftray serve NAME=RUN_DIR --port P` as a subprocess, env SHIFTRAY_SERVE_ENV
            (bench/serve_peers/servers.py) + --shiftray-env; ready when /v2/health/ready is 200.
Batching servers (shiftray, litserve-batch) use the same max batch: the model's best direct batch
(inputs per second of the predictor called in this process at 1..32, measured first), or
--max-batch-size.
Request: one Open Inference Protocol V2 JSON FP32 tensor [1, *shape] to /v2/models/NAME/infer
(LeNet [1,1,28,28], EfficientNet-Lite0 [1,3,224,224], see bench/serve_peers/runs.py), plus
shiftray-only rows "shiftray-binary": the same tensor in the binary tensor extension (until the
server accepts it those rows record its errors).
Client: wrk, one thread, closed loop, at concurrency 1, 8, 32; per round and concurrency the
servers go in a rotated order, each after a --warmup second warm-up. Per (model, server,
concurrency): median [min-max] over rounds of 2xx req/s, p50, p99, the server tree's CPU ms per
request, non-2xx and errors, and the median over rounds of each figure's ratio to bare's in the
same round. Then the overload row: open loop at 4x shiftray's c=32 req/s (or --overload-rate)
for --overload-seconds, counts by status, p99 of 503s and of 2xx, and the recovery time.
Writes bench/results/cpu-serve-load.json (--quick: cpu-serve-load-quick.json).

Fairness on a shared machine: each point starts after the server has answered one request
(the requests a stopped client left behind are computed first, not while the next server is
measured); --pause-idle SIGSTOPs the servers not under load (idle, Ray takes ~15% of a core and
LitServe's batching loop ~20%). Under CPU contention from other work a server of several
processes gets a larger share of the cores than a one-process server: read "cpu ms/req" (CPU
seconds of the server's processes per answered request) beside req/s.

Setup (once): LitServe and KServe live in an overlay venv, never in .venv (kserve pins psutil<6):
    .venv/bin/python bench/serve_peers/peers_venv.py      # creates .venv-peers
which does: `python3.11 -m venv .venv-peers`; a .pth file in its site-packages,
    import site; site.addsitedir('/abs/path/.venv/lib/python3.11/site-packages')
(torch, shiftray and the rest come from .venv); `.venv-peers/bin/pip install kserve==0.21.0
litserve==0.2.19` (kserve's pins land in .venv-peers only); and checks .venv's `pip freeze`.
wrk: `apt-get install wrk`. Run:
    .venv/bin/python bench/serve_load.py --quick       # 1 round, 3 s per point, LeNet: minutes
    .venv/bin/python bench/serve_load.py               # 3 rounds, 10 s, LeNet + EfficientNet
A peer that cannot start is skipped with a note (and "skipped" in the JSON).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_result  # noqa: E402
from serve_peers import overload, runs, servers, wrk  # noqa: E402
from serve_peers.summary import acceptance, summarise  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SERVERS = ("bare", "litserve", "litserve-batch", "kserve", "shiftray")
GOALS = {"lenet": 0.7, "effnet": 0.9}  # shiftray c=32 req/s / bare's, at least
P50_SLACK_MS = 3.0  # shiftray c=1 p50 <= bare's + this


def write_run(run_dir: Path, backbone: str, shape: tuple[int, ...], pretrained) -> Path:
    """A run directory of ``backbone`` (ERM, untrained or ``pretrained`` weights), for a model
    that is not trained here; the serving tests build theirs with it."""
    return runs.write_run(run_dir, runs.erm_spec(backbone, pretrained), shape)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 round, 3 s per point, LeNet only")
    p.add_argument("--models", default="lenet,effnet")
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument("--no-binary", action="store_true", help="skip the shiftray-binary rows")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=10, help="per point (wrk)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of load before each point")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--threads", type=int, default=1, help="torch threads in every server")
    p.add_argument("--peers-python", default=str(ROOT / ".venv-peers/bin/python"))
    p.add_argument("--max-batch-size", type=int, default=0,
                   help="the batching servers' (shiftray, litserve-batch) max batch; default: the "
                        "model's best direct batch, measured first (on a CPU a larger batch is not "
                        "always faster per input)")  # fmt: skip
    p.add_argument("--litserve-batch-timeout", type=float, default=0.005, help="seconds")
    p.add_argument("--shiftray-env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--shiftray-arg",
        action="append",
        default=[],
        help="extra `shiftray serve` argument, e.g. --shiftray-arg=--max-batch-size=8",
    )
    p.add_argument("--lenet-run", help="run directory served as lenet (default: the demo run)")
    p.add_argument(
        "--pause-idle",
        action="store_true",
        help="SIGSTOP the servers not under load (their idle work takes no CPU)",
    )
    p.add_argument("--ready-timeout", type=float, default=300.0, help="seconds per server start")
    p.add_argument("--overload-seconds", type=float, default=20.0, help="0: no overload row")
    p.add_argument("--overload-rate", type=float, default=0.0, help="req/s (default 4x c=32)")
    p.add_argument("--overload-servers", default="shiftray")
    args = p.parse_args()
    if shutil.which("wrk") is None:
        p.error("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
    if unknown := set(args.servers.split(",")) - set(SERVERS):
        p.error(f"--servers: unknown {sorted(unknown)}; known: {', '.join(SERVERS)}")
    if args.quick:
        args.rounds, args.seconds, args.overload_seconds = 1, 3, min(args.overload_seconds, 10)
        if args.models == "lenet,effnet":
            args.models = "lenet"
    return args


def targets(live: dict, binary: bool) -> list[tuple[str, str, str]]:
    """(row name, server, body kind) of every measured row."""
    out = [(s, s, "json") for s in live]
    if binary and "shiftray" in live:
        out.append(("shiftray-binary", "shiftray", "binary"))
    return out


BATCHES = (1, 2, 4, 8, 16, 32)


def best_batch(run_dir: Path, model: str, threads: int) -> tuple[int, dict[int, float]]:
    """The batch size at which the predictor answers the most inputs per second, called
    directly in this process with the servers' threads; inputs per second at each size."""
    import torch
    from shiftray.serving.predictor import Predictor

    torch.set_num_threads(threads)
    pred, shape = Predictor(run_dir), runs.SHAPES[model]
    rate = {}
    for b in BATCHES:
        x = np.random.default_rng(0).random((b, *shape), dtype=np.float32)
        for _ in range(2):
            pred(x)
        n, start = max(4, 64 // b), time.perf_counter()
        for _ in range(n):
            pred(x)
        rate[b] = round(b * n / (time.perf_counter() - start), 1)
    return max(rate, key=rate.get), rate


def define(model: str, run_dir: Path, args, logs: Path, batch: int) -> dict[str, servers.Server]:
    env = dict(kv.split("=", 1) for kv in args.shiftray_env)
    return servers.define(args.servers.split(","), model, run_dir, args.threads,
                          args.peers_python, logs, batch, args.litserve_batch_timeout, env,
                          ["--max-batch-size", str(batch), *args.shiftray_arg])  # fmt: skip


def start(model: str, run_dir: Path, defs: dict, args) -> dict[str, servers.Server]:
    """Start the servers, wait for each, check its answer; returns those that answered."""
    for s in sorted(defs.values(), key=lambda s: s.name != "shiftray"):  # the slowest first
        servers.launch(s)
    from shiftray.serving.predictor import Predictor

    expected = int(Predictor(run_dir)(runs.image(runs.SHAPES[model])).index[0])
    body = runs.bodies(runs.SHAPES[model])
    for s in defs.values():
        servers.wait_ready(s, args.ready_timeout)
        if not s.skipped:
            status, doc = servers.post(f"{s.base}/v2/models/{model}/infer", body["json"])
            s.check = {"status": status, **servers.answer(doc), "expected_index": expected}
            if status != 200:
                s.skipped = f"the V2 JSON request answered {status}: {str(doc)[:200]}"
            elif shared := servers.foreign_listeners(s):
                s.skipped = f"port {s.port} is shared with other processes {shared}"
        if s.name == "shiftray" and not s.skipped:
            status, doc = servers.post(f"{s.base}/v2/models/{model}/infer", body["binary"])
            s.check["binary"] = {"status": status, **servers.answer(doc)}
        mark = f"SKIPPED: {s.skipped}" if s.skipped else f"ready in {s.started_s} s, {s.check}"
        print(f"  {model} {s.name}: {mark}", flush=True)
        if s.skipped:
            servers.stop(s)
    return {n: s for n, s in defs.items() if not s.skipped}


def idle_cpu(live: dict, seconds: float = 5.0) -> dict[str, float]:
    """% of one core each server's processes use while no server is under load."""
    before = {n: servers.cpu_seconds(s) for n, s in live.items()}
    time.sleep(seconds)
    return {n: round(100 * (servers.cpu_seconds(s) - before[n]) / seconds, 1)
            for n, s in live.items()}  # fmt: skip


def focus(live: dict, server: str | None, args) -> None:
    """--pause-idle: only ``server`` runs (None: all run)."""
    if args.pause_idle:
        for name, s in live.items():
            servers.pause(s, server is not None and name != server)


def rounds(model: str, live: dict, args) -> list[dict]:
    body = runs.bodies(runs.SHAPES[model])
    rows = targets(live, not args.no_binary)
    conc = [int(c) for c in args.concurrency.split(",")]

    def url(server: str) -> str:
        return f"{live[server].base}/v2/models/{model}/infer"

    for _name, server, kind in rows:  # first load: lazy model loads, pools, caches
        focus(live, server, args)
        wrk.run(url(server), body[kind], 8, 2)
        servers.drain(live[server], url(server), body["json"])
    raw = []
    for r in range(args.rounds):
        for ci, c in enumerate(conc):
            k = (r * len(conc) + ci) % len(rows)
            for name, server, kind in rows[k:] + rows[:k]:
                s = live[server]
                focus(live, server, args)
                wrk.run(url(server), body[kind], c, args.warmup)
                servers.drain(s, url(server), body["json"])
                cpu0 = servers.cpu_seconds(s)
                res = wrk.run(url(server), body[kind], c, args.seconds)
                cpu = servers.cpu_seconds(s) - cpu0
                res["cpu_ms_per_req"] = 1000 * cpu / res["ok"] if res.get("ok") else None
                res["drain_s"] = round(servers.drain(s, url(server), body["json"]), 2)
                raw.append({"model": model, "server": name, "round": r + 1, "concurrency": c,
                            **res})  # fmt: skip
                keys = ("req_per_s", "p50_ms", "p99_ms", "non_2xx", "errors", "error")
                shown = {k: round(v, 2) if isinstance(v, float) else v
                         for k, v in res.items() if k in keys}  # fmt: skip
                print(f"  round {r + 1} c={c} {name}: {shown}", flush=True)
    focus(live, None, args)
    return raw


def overload_rows(model: str, live: dict, rows: list[dict], args) -> list[dict]:
    pick = {(r["server"], r["concurrency"]): r for r in rows if r["model"] == model}
    out = []
    for name in args.overload_servers.split(","):
        if name not in live or args.overload_seconds <= 0:
            continue
        top = pick.get((name, max(int(c) for c in args.concurrency.split(","))))
        sustainable = top["req_per_s"] if top else None
        rate = args.overload_rate or 4 * (sustainable or 0)
        if not rate:
            continue
        c1 = pick.get((name, 1))
        p99 = c1["p99_ms"] if c1 and c1["p99_ms"] else 100.0
        print(
            f"  overload {model} {name}: {rate:.0f} req/s open loop for "
            f"{args.overload_seconds:.0f} s (sustainable {sustainable})",
            flush=True,
        )
        url = f"{live[name].base}/v2/models/{model}/infer"
        focus(live, name, args)
        res = overload.run(url, runs.bodies(runs.SHAPES[model])["json"], rate,
                           args.overload_seconds, p99)  # fmt: skip
        focus(live, None, args)
        out.append({"model": model, "server": name, "sustainable_req_per_s": sustainable, **res})
        print(f"    {out[-1]}", flush=True)
        time.sleep(2)
    return out


def peer_versions(python: str) -> dict:
    code = ("import importlib.metadata as m, json\nv = {}\nfor p in ('litserve', 'kserve', "
            "'fastapi', 'uvicorn', 'psutil'):\n    try: v[p] = m.version(p)\n"
            "    except m.PackageNotFoundError: pass\nprint(json.dumps(v))")  # fmt: skip
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
        import json

        return json.loads(out.stdout)
    except (OSError, ValueError, subprocess.SubprocessError):
        return {}


def main() -> None:
    args = parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="serve-load-"))
    print(f"servers' logs: {tmp}", flush=True)
    raw, overloads, info = [], [], {}
    for model in args.models.split(","):
        run_dir = Path(args.lenet_run) if model == "lenet" and args.lenet_run else None
        run_dir = run_dir or runs.model_run(model, tmp)
        batch, sweep = best_batch(run_dir, model, args.threads)
        batch = args.max_batch_size or batch
        print(f"{model}: {run_dir}; direct inputs/s by batch {sweep}: batching servers use "
              f"max batch {batch}", flush=True)  # fmt: skip
        defs = define(model, run_dir, args, tmp, batch)
        try:
            live = start(model, run_dir, defs, args)
            idle = idle_cpu(live)
            print(f"  idle CPU % of a core: {idle}", flush=True)
            raw += rounds(model, live, args)
            for s in live.values():  # a server that took the port since would have shared it
                if shared := servers.foreign_listeners(s):
                    s.check["foreign_listeners_after"] = shared
                    print(f"  WARNING {s.name}: port {s.port} now also {shared}", flush=True)
            overloads += overload_rows(model, live, summarise(raw), args)
        finally:
            for s in defs.values():
                servers.stop(s)
            wrk.cleanup()
            if run_dir.parent == tmp:  # written here: weights go, the servers' logs stay
                shutil.rmtree(run_dir, ignore_errors=True)
        info[model] = {"run_dir": str(run_dir), "max_batch": batch, "direct_per_s": sweep,
                       "servers": {n: {
            "argv": s.argv, "skipped": s.skipped, "ready_s": s.started_s if not s.skipped else None,
            "check": s.check, "idle_cpu_pct": idle.get(n), "log": str(s.log)}
            for n, s in defs.items()}}  # fmt: skip
    rows = summarise(raw)
    print_table([{**r, "c": r["concurrency"], "req/s": r["req_per_s_span"],
                  "x bare": r["x_bare_req_per_s"], "p50 ms": r["p50_ms_span"],
                  "p50-bare": r["p50_minus_bare_ms"], "p99 ms": r["p99_ms_span"],
                  "cpu ms/req": r["cpu_ms_per_req_span"]} for r in rows],
                ["model", "server", "c", "req/s", "x bare", "p50 ms", "p50-bare", "p99 ms",
                 "cpu ms/req", "non_2xx", "errors"])  # fmt: skip
    if overloads:
        print()
        print_table([{**o, **{f"n_{k}": v for k, v in o["counts"].items()}} for o in overloads],
                    ["model", "server", "target_rate", "sent_rate", "ok_per_s", "n_2xx", "n_503",
                     "n_5xx", "n_other", "n_error", "p99_503_ms", "server_p99_503_ms", "p50_2xx_ms",
                     "p99_2xx_ms", "server_p99_2xx_ms",
                     "unloaded_c1_p99_ms", "recovery_s", "first_200_s",
                     "client_cpu_pct"])  # fmt: skip
    goals = acceptance(rows, GOALS, P50_SLACK_MS)
    for k, v in goals.items():
        print(f"{'PASS' if v['pass'] else 'FAIL'}  {k}: {v['value']}")
    skipped = {f"{m} {n}": s["skipped"] for m, i in info.items()
               for n, s in i["servers"].items() if s["skipped"]}  # fmt: skip
    for k, v in skipped.items():
        print(f"skipped {k}: {v}")
    from shiftray import provenance

    keys = ("quick", "threads", "pause_idle", "rounds", "seconds", "warmup", "concurrency",
            "max_batch_size", "litserve_batch_timeout")  # fmt: skip
    settings = {k: getattr(args, k) for k in keys}
    shiftray_env = servers.SHIFTRAY_SERVE_ENV | dict(kv.split("=", 1) for kv in args.shiftray_env)
    write_result("cpu-serve-load-quick" if args.quick else "cpu-serve-load", {
        "dirty": provenance.dirty(), **settings, "shiftray_env": shiftray_env,
        "client": wrk.version(), "peer_versions": peer_versions(args.peers_python),
        "models": info, "rows": rows, "overload": overloads, "acceptance": goals,
        "skipped": skipped, "points": raw,
    })  # fmt: skip


if __name__ == "__main__":
    main()
