"""The open-loop client: requests sent at a fixed rate whatever the server answers (a closed-loop
client such as wrk slows down with the server and never overloads it), then the recovery.

Each request's latency counts from the moment it was due, so a client-side wait (connections
all busy, or the client's own loop behind) is latency too; ``server_*`` latencies count from the
moment the request had its connection (the server's share). After the load stops, single probe requests every 100 ms until one
answers 200 within ``near_ms`` (twice the unloaded concurrency-1 p99): the recovery time."""

from __future__ import annotations

import asyncio
import resource
import time
from collections import Counter

import numpy as np

from serve_peers.runs import Body


def _p(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _trace():
    """Marks the moment each request has a connection (queued for none, new, or reused): the
    server's own time is from then on."""
    import aiohttp

    async def connected(session, ctx, params) -> None:
        ctx.trace_request_ctx["connected"] = time.perf_counter()

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(connected)
    trace.on_connection_reuseconn.append(connected)
    return trace


async def _send(session, url, body: Body, due: float, out: list, retry_after: list) -> None:
    import aiohttp

    ctx: dict[str, float] = {}
    try:
        async with session.post(url, data=body.data, headers=body.headers(),
                                trace_request_ctx=ctx) as r:  # fmt: skip
            await r.read()
            status = r.status
            if status == 503 and "Retry-After" in r.headers:
                retry_after.append(r.headers["Retry-After"])
    except asyncio.TimeoutError:
        status = "timeout"
    except (aiohttp.ClientError, OSError):
        status = "error"
    end = time.perf_counter()
    out.append((status, (end - due) * 1000, (end - ctx.get("connected", end)) * 1000))


async def _probe(url: str, body: Body, near_ms: float, limit_s: float) -> dict:
    import aiohttp

    t0, first_ok, probes = time.perf_counter(), None, 0
    timeout = aiohttp.ClientTimeout(total=limit_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.perf_counter() - t0 < limit_s:
            probes += 1
            t = time.perf_counter()
            try:
                async with session.post(url, data=body.data, headers=body.headers()) as r:
                    await r.read()
                    status = r.status
            except (asyncio.TimeoutError, aiohttp.ClientError, OSError):
                status = 0
            ms = (time.perf_counter() - t) * 1000
            now = time.perf_counter() - t0
            if status == 200 and first_ok is None:
                first_ok = round(now, 2)
            if status == 200 and ms <= near_ms:
                return {"recovery_s": round(now, 2), "first_200_s": first_ok, "probes": probes,
                        "last_probe_ms": round(ms, 1)}  # fmt: skip
            await asyncio.sleep(0.1)
    return {"recovery_s": None, "first_200_s": first_ok, "probes": probes,
            "note": f"no 200 within {near_ms:.1f} ms in {limit_s:.0f} s"}  # fmt: skip


async def _run(url, body, rate, seconds, near_ms, connections, timeout_s, recovery_limit_s):
    import aiohttp

    results: list = []
    retry_after: list = []
    tasks: set[asyncio.Task] = set()
    conn = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    cpu0 = _cpu()
    async with aiohttp.ClientSession(connector=conn, timeout=timeout,
                                     trace_configs=[_trace()]) as session:  # fmt: skip
        t0 = time.perf_counter()
        n, sent, lag = int(rate * seconds), 0, 0.0
        while sent < n:
            now = time.perf_counter()
            while sent < n and t0 + sent / rate <= now:  # every request due by now
                due = t0 + sent / rate
                lag = max(lag, now - due)
                task = asyncio.create_task(_send(session, url, body, due, results, retry_after))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            await asyncio.sleep(max(0.0, t0 + sent / rate - time.perf_counter()))
        send_s = time.perf_counter() - t0
        recovery = await _probe(url, body, near_ms, recovery_limit_s)
        if tasks:
            await asyncio.gather(*tasks)
    client_cpu = _cpu() - cpu0
    return results, retry_after, recovery, send_s, lag, client_cpu, time.perf_counter() - t0


def run(
    url: str,
    body: Body,
    rate: float,
    seconds: float,
    unloaded_p99_ms: float,
    connections: int = 1024,
    timeout_s: float = 30.0,
    recovery_limit_s: float = 60.0,
) -> dict:
    """Open loop at ``rate`` req/s for ``seconds``: counts by status, latencies, recovery."""
    try:
        from uvloop import run as run_loop  # the client's own CPU cost is what the server loses
    except ImportError:
        run_loop = asyncio.run
    near_ms = 2 * unloaded_p99_ms
    results, retry_after, recovery, send_s, lag, cpu, wall = run_loop(_run(
        url, body, rate, seconds, near_ms, connections, timeout_s, recovery_limit_s))  # fmt: skip
    by: dict[str, list[float]] = {"2xx": [], "503": [], "5xx": [], "other": [], "error": []}
    wire: dict[str, list[float]] = {k: [] for k in by}
    for status, ms, wire_ms in results:
        if isinstance(status, str):
            key = "error"  # connection errors and client timeouts
        elif 200 <= status < 300:
            key = "2xx"
        elif status == 503:
            key = "503"
        elif status >= 500:
            key = "5xx"
        else:
            key = "other"
        by[key].append(ms)
        wire[key].append(wire_ms)
    return {
        "target_rate": round(rate, 1), "sent_rate": round(len(results) / send_s, 1),
        "seconds": seconds, "connections": connections, "client_timeout_s": timeout_s,
        "counts": {k: len(v) for k, v in by.items()},
        "statuses": {k: v for k, v in sorted(Counter(str(r[0]) for r in results).items())},
        "timeouts": sum(1 for r in results if r[0] == "timeout"),
        "ok_per_s": round(len(by["2xx"]) / send_s, 1),
        "p50_2xx_ms": _p(by["2xx"], 50), "p99_2xx_ms": _p(by["2xx"], 99),
        "p99_503_ms": _p(by["503"], 99), "retry_after": sorted(set(retry_after))[:5],
        "server_p50_2xx_ms": _p(wire["2xx"], 50), "server_p99_2xx_ms": _p(wire["2xx"], 99),
        "server_p99_503_ms": _p(wire["503"], 99),
        "unloaded_c1_p99_ms": round(unloaded_p99_ms, 2), "near_unloaded_ms": round(near_ms, 2),
        **recovery,
        "client_max_lag_ms": round(lag * 1000, 1),
        "client_cpu_pct": round(100 * cpu / wall, 1),
    }  # fmt: skip
