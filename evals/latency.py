"""Latency of ``Investigator.analyze`` on one tabular row (template reasoner), and where it goes.

An Investigator is fitted on 1,000 synthetic "server metrics" rows (8 features) with the given
detector; ``analyze`` of one anomalous row is then timed ``--repeat`` times after 3 warm-up calls
(median and 90th percentile, milliseconds), one thread, same process. ``--label`` names the run
(e.g. the commit): results of earlier labels in ``evals/results/latency.json`` are kept, so two
versions of the code measured one after the other on the same machine sit side by side.

Run:  python -m evals.latency [--detector ensemble] [--repeat 30] [--label after]
Writes evals/results/latency.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np

from evals.common import RESULTS, write_results


def rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, 3))
    W = np.random.default_rng(7).normal(size=(3, 8))
    return f @ W + 0.2 * rng.normal(size=(n, 8))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detector", default="ensemble")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--label", default="current")
    args = ap.parse_args(argv)
    import pandas as pd
    import torch

    from anomalens import Investigator

    torch.set_num_threads(1)
    names = [f"m{j}" for j in range(8)]
    train = pd.DataFrame(rows(1000, 0), columns=names)
    inv = Investigator.fit(train, detector=args.detector, random_state=0)
    case = pd.DataFrame(rows(1, 1), columns=names)
    case.iloc[0, 2] += 8 * float(train["m2"].std())
    for _ in range(3):
        inv.analyze(case)
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        report = inv.analyze(case)
        times.append(1000 * (time.perf_counter() - t0))
    times.sort()
    entry = {"detector": args.detector, "repeat": args.repeat, "median_ms": statistics.median(times),
             "p90_ms": times[int(0.9 * (len(times) - 1))], "anomalous": report.verdict.anomalous,
             "machine": f"{platform.machine()}, {torch.get_num_threads()} thread", "date": time.strftime("%Y-%m-%d")}
    try:
        saved = json.loads((RESULTS / "latency.json").read_text())
    except (OSError, ValueError):
        saved = {}
    runs = {**saved.get("runs", {}), args.label: entry}
    lines = ["# Latency of `Investigator.analyze` (one tabular row, template reasoner)", "",
             "Command: `python -m evals.latency --label <name>` (each label a version of the code, run one after "
             "the other on the same machine)", "", "| label | detector | median ms | p90 ms | repeats | date |",
             "|---|---|---:|---:|---:|---|"]
    for label, r in runs.items():
        lines.append(f"| {label} | {r['detector']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['repeat']} | {r['date']} |")
    write_results("latency", {"runs": runs}, "\n".join(lines) + "\n")
    print(json.dumps(entry))
    return entry


if __name__ == "__main__":
    main()
