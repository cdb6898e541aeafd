"""Serving benchmark: the REST API under a bounded load on loopback.

A real ``anomalens serve`` process (uvicorn, the template reasoner, a tabular investigator with the
default detector fitted on 600 synthetic rows) and HTTP clients (``http.client``), each in its own
process, sending requests one after another:

- single-row ``analyze`` (with its verified explanation) at 1, 8 and 32 concurrent clients;
- 1,000-row batch ``analyze`` (verdicts for every row, reports for the 20 most anomalous) at 1 and 4;
- ``/health`` latency, probed from another process, while 48 clients keep the workers and queues full.

Requests per second, p50 / p95 / p99 latency of the answered requests, the share of 429s, the count
of 5xx (must be 0), and the server's resident memory before and after.

Run:  python -m evals.serve [--quick]
Writes evals/results/serve.json and .md.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from evals.common import write_results

KEY = "bench-key-0123456789abcdef"
SATURATING = 48  # clients of the saturated run: more than 2 processes x (2 workers + a queue of 16) can hold


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (uvicorn's worker processes), in MB."""
    total = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1]) / 1024
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += rss_mb(int(child))
    return total


def metric_rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, 2))
    X = np.column_stack([f[:, 0], f[:, 0] + 0.5 * f[:, 1], f[:, 1], 0.3 * f[:, 0] - f[:, 1]])
    return pd.DataFrame(X + 0.1 * rng.normal(size=X.shape), columns=["cpu", "memory", "latency", "errors"])


def _client(job: tuple[str, bytes, int, float]) -> list[tuple[int, float, float, float]]:
    """One client (in its own process): ``per_client`` requests one after another on one keep-alive
    connection from the shared start time; (status, seconds, begin, end) each, on the system-wide
    monotonic clock. The standard library's ``http.client``: a load generator shares the server's two
    cores here, so it must be light (as wrk or hey are); httpx spent ~2-5 ms of CPU per request in
    the client, which counted as the server's latency."""
    import http.client
    from urllib.parse import urlparse

    url, body, per_client, start = job
    u = urlparse(url)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    out = []
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    conn.connect()
    try:
        time.sleep(max(0.0, start - time.monotonic()))
        for _ in range(per_client):
            t0 = time.monotonic()
            conn.request("POST", "/v1/investigators/metrics/analyze", body=body, headers=headers)
            r = conn.getresponse()
            r.read()
            t1 = time.monotonic()
            out.append((r.status, t1 - t0, t0, t1))
    finally:
        conn.close()
    return out


def _probe(url: str, stop, results) -> None:
    """``/health`` every 50 ms until ``stop`` is set (in its own process, as a health checker is)."""
    import httpx

    lat = []
    with httpx.Client(base_url=url, timeout=10) as c:
        c.get("/health")
        while not stop.is_set():
            t0 = time.monotonic()
            c.get("/health")
            lat.append((time.monotonic() - t0) * 1000)
            time.sleep(0.05)
    results.put(lat)


def load(pool, url: str, body: dict, clients: int, per_client: int) -> dict:
    """``clients`` concurrent clients, each in its own process (clients as threads of one process
    would queue on that process's GIL and add their own latency to the server's)."""
    import json

    raw = json.dumps(body).encode()
    start = time.monotonic() + 0.5
    runs = pool.map(_client, [(url, raw, per_client, start)] * clients, chunksize=1)
    calls = [c for run in runs for c in run]
    codes = [c[0] for c in calls]
    ms = np.array([c[1] for c in calls if c[0] == 200]) * 1000
    wall = max(c[3] for c in calls) - min(c[2] for c in calls)
    return {"clients": clients, "requests": len(codes), "ok": int(sum(c == 200 for c in codes)),
            "share_429": float(np.mean([c == 429 for c in codes])), "n_5xx": int(sum(c >= 500 for c in codes)),
            "answered_per_s": len(ms) / wall, "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p95_ms": float(np.percentile(ms, 95)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None}


def main() -> None:
    from anomalens import Investigator
    from anomalens.testing import free_port, running

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--processes", type=int, default=2, help="server processes (one per core here)")
    ap.add_argument("--workers", type=int, default=1,
                    help="scoring threads per server process (one per process: a second thread of the same "
                         "process shares its GIL and splits the batches its one-row requests would form)")
    args = ap.parse_args()
    per = 10 if args.quick else 40
    res: dict = {"args": " ".join(sys.argv[1:]), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                 "processes": args.processes, "workers": args.workers}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        inv = Investigator.fit(metric_rows(600, 0), random_state=0)
        res["detector"], res["fit_s"] = inv.detector_name, time.perf_counter() - t0
        inv.save(tmp / "metrics")
        (tmp / "keys").write_text(KEY + "\n")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "anomalens.cli", "serve", str(tmp / "metrics"), "--api-key-file", str(tmp / "keys"),
               "--port", str(port), "--workers", str(args.workers), "--queue", "16", "--processes", str(args.processes),
               "--state-dir", str(tmp / "state")]
        env = {**os.environ, "ANOMALENS_LLM": "template"}
        ctx = mp.get_context("spawn")  # the clients' processes: no torch, no fork of this one's threads
        with running(cmd, f"{url}/health", 120, tmp / "serve.log", env=env) as proc, ctx.Pool(SATURATING) as pool:
            pool.map(time.sleep, [0.2] * (2 * SATURATING), chunksize=1)  # every client process started
            res["rss_start_mb"] = rss_mb(proc.pid)
            one = {"rows": [{"cpu": 0.1, "memory": 9.0, "latency": 0.0, "errors": 0.2}]}
            load(pool, url, one, 2 * args.processes, 5)  # warm-up: each process's first request pays its lazy set-up
            res["single_row"] = [load(pool, url, one, c, per if c < 32 else max(5, per // 2)) for c in (1, 8, 32)]
            for r in res["single_row"]:
                print("single row", r, flush=True)
            batch = {"rows": metric_rows(1000, 1).to_dict("records"), "limit": 20}
            res["batch_1000"] = [load(pool, url, batch, c, max(3, per // 8)) for c in (1, 4)]
            for r in res["batch_1000"]:
                print("batch", r, flush=True)
            # /health from another process while SATURATING clients keep the pools and queues full
            stop, probes = ctx.Event(), ctx.Queue()
            prober = ctx.Process(target=_probe, args=(url, stop, probes))
            prober.start()
            time.sleep(1.0)
            sat = load(pool, url, batch, SATURATING, 2)
            stop.set()
            health = probes.get(timeout=60)
            prober.join()
            res["saturated"] = {**sat, "health_p50_ms": float(np.percentile(health, 50)),
                                "health_max_ms": float(np.max(health)), "health_probes": len(health)}
            print("saturated", res["saturated"], flush=True)
            res["rss_end_mb"] = rss_mb(proc.pid)
    write_results("serve", res, markdown(res))


def markdown(res: dict) -> str:
    f = lambda x: "-" if x is None else f"{x:.1f}"  # noqa: E731
    out = ["# Serving benchmark", "", f"`python -m evals.serve {res['args']}` on {res['machine']}; a real `anomalens serve` "
           f"(uvicorn, template reasoner, `{res['detector']}` on 600 rows, {res.get('processes', 1)} process(es) of {res.get('workers', 2)} workers and a "
           f"queue of 16 each) and `http.client` clients, one process each.", "",
           "| request | clients | requests | answered/s | p50 ms | p95 ms | p99 ms | 429 share | 5xx |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, rows in (("single-row analyze", res["single_row"]), ("1,000-row batch", res["batch_1000"]),
                       ("1,000-row batch, saturated", [res["saturated"]])):
        for r in rows:
            out.append(f"| {name} | {r['clients']} | {r['requests']} | {r['answered_per_s']:.1f} | {f(r['p50_ms'])} | "
                       f"{f(r['p95_ms'])} | {f(r['p99_ms'])} | {100 * r['share_429']:.0f}% | {r['n_5xx']} |")
    s = res["saturated"]
    out += ["", f"`/health` while saturated: p50 {s['health_p50_ms']:.1f} ms, max {s['health_max_ms']:.1f} ms over "
            f"{s['health_probes']} probes. Server memory {res['rss_start_mb']:.0f} MB at start, "
            f"{res['rss_end_mb']:.0f} MB after the run."]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
