"""Per-row levels of cross-calibrated p-values on shuttle's normal rows: does P(p <= t) stay <= t?

shuttle's normal class has rare modes whose scores reach 10^6 times the bulk's, the hard case for
calibration (docs/calibration.md). For each detector and seed: fit on 600 normal rows with cross
calibration (the default below 1,000 rows), score 20,000 held-out normal rows, and report the share
with p <= t for t = 0.005, 0.01, 0.05. A valid p-value keeps each share at about t or below
(binomial standard error about sqrt(t / 20,000)); the Ensemble also reports each member's share at
0.01 (members calibrated on 120 rows of their own, before 2026-12-01, missed rare modes: the cause
of the Ensemble's excess then).

Run:  python -m evals.levels [--detectors vae,autoregressive,ensemble] [--seeds 7,99]
Writes evals/results/levels.{json,md}.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from evals.common import write_results

LEVELS = (0.005, 0.01, 0.05)
N_TRAIN = 600
N_HELD = 20000


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detectors", default="vae,autoregressive,ensemble")
    ap.add_argument("--seeds", default="7,99")
    args = ap.parse_args(argv)
    import torch

    from anomalens.detectors import make_detector
    from evals.calibration import sources

    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        pools = sources(seed)  # the calibration benchmark's shuttle pools: training first, held-out normal rows
        if "shuttle" not in pools:
            raise SystemExit("evals.levels needs shuttle from ../shared/data (or ANOMALENS_DATA_DIR)")
        train, held = pools["shuttle"][0][:N_TRAIN], pools["shuttle"][1][:N_HELD]
        for name in args.detectors.split(","):
            t0 = time.perf_counter()
            det = make_detector(name, random_state=seed, calibration="cross").fit(train)
            fit_s = time.perf_counter() - t0
            p = det.pvalues(held)
            row = {"detector": name, "seed": seed, "n_held": len(held), "fit_s": fit_s,
                   "share": {str(t): float((p <= t).mean()) for t in LEVELS}}
            if hasattr(det, "member_pvalues"):
                row["member_share_0.01"] = {k: float((v <= 0.01).mean()) for k, v in det.member_pvalues(held).items()}
            rows.append(row)
            print(name, seed, row["share"], row.get("member_share_0.01", ""), flush=True)
    lines = ["# Per-row levels on shuttle's normal rows (cross calibration, 600 training rows)", "",
             f"Share of {N_HELD:,} held-out normal rows with p <= t; valid p-values keep it at about t or below "
             f"(one binomial standard error: {np.sqrt(0.005 / N_HELD):.4f} at t = 0.005, {np.sqrt(0.05 / N_HELD):.4f} "
             "at 0.05).", "", f"Command: `python -m evals.levels --detectors {args.detectors} --seeds {args.seeds}`", "",
             "| detector | seed | t = 0.005 | t = 0.01 | t = 0.05 | members at t = 0.01 |", "|---|---|---|---|---|---|"]
    for r in rows:
        members = ", ".join(f"{k} {v:.3f}" for k, v in r.get("member_share_0.01", {}).items())
        lines.append(f"| {r['detector']} | {r['seed']} | " + " | ".join(f"{r['share'][str(t)]:.4f}" for t in LEVELS)
                     + f" | {members} |")
    write_results("levels", {"n_train": N_TRAIN, "levels": LEVELS, "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
