"""Exemplar-store benchmark: add throughput and query latency of ExemplarStore (embedded chromadb)
at 100,000 exemplars, next to an exact numpy brute-force search on the same vectors (recall@5).

Run:  python -m evals.store [--n 100000] [--dim 16]
Writes evals/results/store.json and .md.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from evals.common import write_results



def main(argv: list[str] | None = None) -> dict:
    from anomalens.store import ExemplarStore

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    E = rng.normal(size=(args.n, args.dim)).astype(np.float32)
    R = rng.normal(size=(args.n, args.features))
    Q = rng.normal(size=(args.queries, args.dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        store = ExemplarStore(Path(tmp) / "store")
        t0 = time.perf_counter()
        store.add(E, R, source="bench")
        add_s = time.perf_counter() - t0
        lat = []
        got = []
        for q in Q:
            t0 = time.perf_counter()
            hits = store.query(q, k=5)[0]
            lat.append(time.perf_counter() - t0)
            got.append({int(h.row_id) for h in hits})
    lat_bf = []
    recall = []
    for q, g in zip(Q, got):
        t0 = time.perf_counter()
        exact = set(np.argpartition(((E - q) ** 2).sum(1), 5)[:5].tolist())
        lat_bf.append(time.perf_counter() - t0)
        recall.append(len(exact & g) / 5)
    result = {
        "meta": {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, 2 cores", "n": args.n,
                 "dim": args.dim, "features": args.features, "queries": args.queries},
        "add_rows_per_s": args.n / add_s, "add_s": add_s,
        "query_ms_median": 1000 * float(np.median(lat)), "query_ms_p95": 1000 * float(np.percentile(lat, 95)),
        "bruteforce_ms_median": 1000 * float(np.median(lat_bf)), "recall_at_5": float(np.mean(recall)),
    }
    write_results("store", result,
        f"# Exemplar store (embedded chromadb), {args.n:,} exemplars, {args.dim}-d vectors + {args.features}-feature rows\n\n"
        f"| measure | ExemplarStore | numpy brute force |\n|---|---:|---:|\n"
        f"| add, rows/s | {result['add_rows_per_s']:,.0f} | - |\n"
        f"| query k=5, median ms | {result['query_ms_median']:.2f} | {result['bruteforce_ms_median']:.2f} |\n"
        f"| query k=5, p95 ms | {result['query_ms_p95']:.2f} | - |\n"
        f"| recall@5 vs exact | {result['recall_at_5']:.3f} | 1 |\n")
    return result


if __name__ == "__main__":
    main()
