"""Soak benchmark: ``anomalens serve`` in its default configuration under mixed concurrent work.

Issue 40's target: no process crash under the default configuration (the embedded model as the
reasoner, ``ANOMALENS_LLM`` unset; 2 workers; MCP on) with 8 concurrent clients for 5 minutes. A
real server process serves a tabular investigator (the default detector, 600 synthetic rows) and a
log investigator (generated web logs); 8 client threads send, one after another, a mix of
requests: one-row ``analyze`` with its explanation (the embedded model drafts it), chat turns (a
question the model answers, and a command that runs a tool), 300-row CSV uploads (reports
explained by the template at once) and log triage uploads. For each kind: requests, statuses,
p50 / p95 / max latency; overall: 5xx count, transport errors (a dead server shows as these), the
server's exit status (must still be running) and its resident memory at the start and the end.

Run:  python -m evals.soak [--seconds 300] [--clients 8]
Writes evals/results/soak.json and .md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from evals.common import write_results
from evals.serve import KEY, metric_rows, rss_mb

KINDS = ("analyze_one", "chat_question", "chat_command", "upload_300", "triage")


def _client(url: str, k: int, deadline: float, upload: bytes, logs: bytes, sid: str, out: dict, lock) -> None:
    """One client: requests of every kind in turn (starting at kind ``k``) until ``deadline``."""
    import httpx

    auth = {"Authorization": f"Bearer {KEY}"}
    rng = np.random.default_rng(k)
    with httpx.Client(base_url=url, headers=auth, timeout=180) as c:
        i = k
        while time.perf_counter() < deadline:
            kind = KINDS[i % len(KINDS)]
            i += 1
            t0 = time.perf_counter()
            try:
                if kind == "analyze_one":
                    row = {"cpu": float(rng.normal()), "memory": float(rng.choice([0.0, 9.0])), "latency": 0.0,
                           "errors": 0.2}
                    r = c.post("/v1/investigators/metrics/analyze", json={"rows": [row]})
                elif kind == "chat_question":
                    r = c.post(f"/v1/sessions/{sid}/messages", json={"text": "why is this anomalous?"})
                elif kind == "chat_command":
                    r = c.post(f"/v1/sessions/{sid}/messages", json={"text": "/neighbors 2"})
                elif kind == "upload_300":
                    r = c.post("/v1/investigators/metrics/analyze/upload", files={"file": ("rows.csv", upload)})
                else:
                    r = c.post("/v1/investigators/web/triage/upload", files={"file": ("today.log", logs)},
                               params={"top": 3})
                status = r.status_code
            except httpx.HTTPError as exc:  # the server went away, or a read timed out
                status = f"transport:{type(exc).__name__}"
            with lock:
                out[kind].append((status, time.perf_counter() - t0))


def main(argv: list[str] | None = None) -> None:
    from anomalens import Investigator
    from anomalens.data.log_synthesis import SESSION_PATTERN, inject_logs, normal_logs
    from anomalens.modalities import LogModality
    from anomalens.testing import free_port, running

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args(argv)
    res: dict = {"args": " ".join(sys.argv[1:] if argv is None else argv),
                 "machine": f"{platform.machine()}, {os.cpu_count()} cores", "seconds": args.seconds,
                 "clients": args.clients, "configuration": "anomalens serve defaults (ANOMALENS_LLM unset: the "
                                                           "embedded model; 2 workers, queue 16, MCP on)"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        Investigator.fit(metric_rows(600, 0), random_state=0).save(tmp / "metrics")
        (tmp / "normal.log").write_text(normal_logs(600, seed=0).text())
        Investigator.fit(str(tmp / "normal.log"), modality=LogModality(session=SESSION_PATTERN)).save(tmp / "web")
        (tmp / "keys").write_text(KEY + "\n")
        rows = metric_rows(300, 11)
        rows.loc[5, "memory"] = 9.0
        upload = rows.to_csv(index=False).encode()
        logs = inject_logs(150, 8, seed=2).text().encode()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "anomalens.cli", "serve", str(tmp / "metrics"), str(tmp / "web"),
               "--api-key-file", str(tmp / "keys"), "--port", str(port), "--state-dir", str(tmp / "state")]
        env = {k: v for k, v in os.environ.items() if k != "ANOMALENS_LLM"}  # the default reasoner
        with running(cmd, f"{url}/health", 180, tmp / "serve.log", env=env) as proc:
            import httpx

            ready = httpx.get(f"{url}/ready", headers={"Authorization": f"Bearer {KEY}"}).json()
            res["reasoner"] = ready["reasoner"]
            sid = httpx.post(f"{url}/v1/sessions", headers={"Authorization": f"Bearer {KEY}"}, timeout=120,
                             json={"investigator": "metrics", "row": {"cpu": 0.1, "memory": 9.0, "latency": 0.0,
                                                                      "errors": 0.2}}).json()["id"]
            res["rss_start_mb"] = rss_mb(proc.pid)
            out: dict = defaultdict(list)
            lock = threading.Lock()
            deadline = time.perf_counter() + args.seconds
            threads = [threading.Thread(target=_client, args=(url, k, deadline, upload, logs, sid, out, lock))
                       for k in range(args.clients)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            res["wall_s"] = time.perf_counter() - t0
            res["server_alive"] = proc.poll() is None
            res["rss_end_mb"] = rss_mb(proc.pid) if res["server_alive"] else None
            res["health_after"] = httpx.get(f"{url}/health").json().get("status") if res["server_alive"] else None
        log_tail = (tmp / "serve.log").read_text(errors="replace")[-2000:]
    res["kinds"] = {}
    for kind in KINDS:
        got = out.get(kind, [])
        secs = np.array([s for _, s in got]) if got else np.zeros(1)
        statuses: dict = defaultdict(int)
        for st, _ in got:
            statuses[str(st)] += 1
        res["kinds"][kind] = {"requests": len(got), "statuses": dict(statuses), "p50_s": float(np.percentile(secs, 50)),
                              "p95_s": float(np.percentile(secs, 95)), "max_s": float(secs.max())}
    every = [st for got in out.values() for st, _ in got]
    res["server_errors_5xx"] = sum(isinstance(st, int) and st >= 500 for st in every)
    res["transport_errors"] = sum(isinstance(st, str) for st in every)
    res["crashed"] = not res["server_alive"]
    if res["crashed"]:
        res["server_log_tail"] = log_tail
    print({k: v for k, v in res.items() if k != "kinds"}, flush=True)
    write_results("soak", res, markdown(res))


def markdown(res: dict) -> str:
    lines = ["# Soak: the default server under mixed concurrent work", "",
             f"{res['machine']}; {res['configuration']}; reasoner {res['reasoner']}; {res['clients']} clients for "
             f"{res['seconds']:.0f} s (`python -m evals.soak {res['args']}`).", "",
             f"- server alive at the end: **{res['server_alive']}** (health: {res['health_after']})",
             f"- 5xx answers: **{res['server_errors_5xx']}**; transport errors: **{res['transport_errors']}**",
             f"- resident memory: {res['rss_start_mb']:.0f} MB at the start, "
             + (f"{res['rss_end_mb']:.0f} MB at the end" if res["rss_end_mb"] else "-"), "",
             "| request | sent | statuses | p50 s | p95 s | max s |", "|---|---:|---|---:|---:|---:|"]
    for kind, k in res["kinds"].items():
        st = ", ".join(f"{s}: {n}" for s, n in sorted(k["statuses"].items()))
        lines.append(f"| {kind} | {k['requests']} | {st} | {k['p50_s']:.2f} | {k['p95_s']:.2f} | {k['max_s']:.2f} |")
    lines += ["", "429 is the server refusing work past its queue (by design, with Retry-After); 504 is a "
                  "request past the 60 s timeout. A crash shows as transport errors and a dead server."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
