"""Calibration benchmark: FDR and power of batch verdicts for each way of calibrating.

For each data source, training size (small: 600 rows, large: 10,000) and seed, a detector is fitted
twice, with split calibration (20% held out) and with cross calibration (out-of-fold scores of every
training row). Each fit gives two p-value options, from the detector's own calibration stage
(``det.calibrator``) with ``tail`` off and on: exact conformal only, and extrapolated below
1/(n_cal+1) (the GPD tail; the Ensemble's: the larger of its members' combined p-value and the GPD
tail of its own scores). For batch sizes 10, 100, 1,000 and 10,000:

- FDR: Benjamini-Hochberg at alpha = 0.05 on batches of held-out normal rows only; every rejection
  is false, so FDR = the share of batches with any rejection;
- power: one row with a random feature shifted by 15 robust standard deviations in a batch of
  normal rows; the share of batches in which it is flagged.

Scores of a pool of held-out normal rows and of shifted rows are computed once per fit; batches are
drawn from the pools (scores only), so many draws are cheap.

Run:  python -m evals.calibration [--detector vae] [--seeds 0,1,2] [--draws 400] [--cells small-cross] [--tag T]
Writes evals/results/calibration.{json,md} (vae) or calibration_<detector>.{json,md} (``_<tag>`` appended
when given: ``--cells small-cross --seeds 0,...,9 --tag 10seeds`` is the 600-row cross cell over 10 seeds).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from evals.common import result_name, write_results

BATCHES = (10, 100, 1000, 10000)
SIZES = {"small": 600, "large": 10000}
ALPHA = 0.05
SHIFT = 15.0


def synthetic(n: int, seed: int, *, factors: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """(n, 6) correlated 'server metrics' (two load factors plus noise), as in the tests; with
    ``factors`` also the (n, 2) factors that generated them."""
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, 2))
    X = np.column_stack([f[:, 0], 0.8 * f[:, 0] + 0.3 * f[:, 1], f[:, 1], f[:, 0] + f[:, 1], f[:, 0] - 0.5 * f[:, 1],
                         0.5 * f[:, 1] + 0.2 * f[:, 0]])
    X = X + 0.1 * rng.normal(size=X.shape)
    return (X, f) if factors else X


def sources(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(training pool, held-out normal pool) per data source."""
    out = {"synthetic": (synthetic(SIZES["large"], seed), synthetic(40000, 10_000 + seed))}
    try:
        from anomalens.data import load_adbench

        X, y = load_adbench("shuttle")
        normal = X[y == 0]
        rng = np.random.default_rng(seed)
        rng.shuffle(normal)
        out["shuttle"] = (normal[: SIZES["large"]], normal[SIZES["large"]:])
    except Exception as exc:  # the shared data is absent: the synthetic source alone
        print(f"shuttle skipped: {exc}")
    return out


def shifted(rows: np.ndarray, ref: np.ndarray, seed: int) -> np.ndarray:
    from anomalens.detectors.base import robust_scale

    rng = np.random.default_rng(seed)
    scale = robust_scale(ref)[1]
    A = rows.copy()
    j = rng.integers(0, A.shape[1], size=len(A))
    A[np.arange(len(A)), j] += rng.choice([-1.0, 1.0], size=len(A)) * SHIFT * scale[j]
    return A


def bh_batches(p_normal: np.ndarray, p_far: np.ndarray, draws: int, seed: int) -> dict[str, Any]:
    """FDR and power of BH over batches of BATCHES sizes drawn from p-value pools: FDR from batches of
    normal rows (any rejection is false), power from the same batch with its first row replaced by
    a far row (the share of batches flagging it)."""
    from anomalens.detectors import benjamini_hochberg

    rng = np.random.default_rng(seed)
    out = {}
    for m in BATCHES:
        n_draws = draws if m < 10000 else max(draws // 4, 25)
        fdr = power = 0
        for _ in range(n_draws):
            batch = p_normal[rng.integers(0, len(p_normal), size=m)]
            fdr += bool(benjamini_hochberg(batch, ALPHA).any())
            batch[0] = p_far[rng.integers(0, len(p_far))]
            power += bool(benjamini_hochberg(batch, ALPHA)[0])
        out[str(m)] = {"fdr": fdr / n_draws, "power": power / n_draws, "draws": n_draws}
    return out


def evaluate(cal: Any, normal_scores: np.ndarray, far_scores: np.ndarray, draws: int, seed: int) -> dict[str, Any]:
    """FDR and power of BH over batches drawn from the pools, with p-values from ``cal`` (a
    detector's calibration stage: ``det.calibrator``)."""
    p_normal, p_far = cal.pvalues(normal_scores), cal.pvalues(far_scores)
    return {**bh_batches(p_normal, p_far, draws, seed), "min_p_far_median": float(np.median(p_far))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detector", default="vae")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--draws", type=int, default=400)
    ap.add_argument("--rewrite", action="store_true", help="rewrite the markdown from the saved JSON, run nothing")
    ap.add_argument("--cells", default="", help="only these size-calibration cells, e.g. small-cross (default: all)")
    ap.add_argument("--tag", default="", help="suffix of the result files (calibration_<detector>_<tag>)")
    args = ap.parse_args(argv)
    name = result_name("calibration", args.detector) + (f"_{args.tag}" if args.tag else "")
    only = set(filter(None, args.cells.split(",")))
    if args.rewrite:
        import json

        from evals.common import RESULTS

        saved = json.loads((RESULTS / f"{name}.json").read_text())
        summary = summarize(saved["cells"])
        write_results(name, {**saved, "summary": summary}, markdown(summary, saved["detector"], saved["seeds"], args))
        return
    import torch

    from anomalens.detectors import make_detector

    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    cells: list[dict[str, Any]] = []
    for seed in seeds:
        for src, (train_pool, held) in sources(seed).items():
            far = shifted(held[:2000], train_pool, seed)
            for size_name, n in SIZES.items():
                for mode in ("split", "cross"):
                    if mode == "cross" and n > 2000:
                        continue  # n_folds + 1 fits of 10,000 rows: the split already holds 2,000 calibration rows
                    if only and f"{size_name}-{mode}" not in only:
                        continue
                    t0 = time.perf_counter()
                    det = make_detector(args.detector, random_state=seed, calibration=mode).fit(train_pool[:n])
                    fit_s = time.perf_counter() - t0
                    normal_scores, far_scores = det.decision_function(held), det.decision_function(far)
                    for tail in (False, True):
                        det.set_params(tail=tail)  # the detector's own calibration stage, with or without extrapolation
                        res = evaluate(det.calibrator, normal_scores, far_scores, args.draws, seed)
                        cells.append({"source": src, "size": size_name, "n_train": n, "calibration": mode, "tail": tail,
                                      "n_cal": len(det.calibration_scores_), "seed": seed, "fit_s": fit_s, **res})
                        print(src, size_name, mode, "tail" if tail else "exact", seed,
                              {m: (res[str(m)]["fdr"], res[str(m)]["power"]) for m in BATCHES}, flush=True)
    summary = summarize(cells)
    write_results(name, {"detector": args.detector, "alpha": ALPHA, "shift_sd": SHIFT, "seeds": seeds, "cells": cells,
                         "summary": summary}, markdown(summary, args.detector, seeds, args))


def summarize(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = sorted({(c["source"], c["size"], c["calibration"], c["tail"]) for c in cells},
                  key=lambda k: (k[0], SIZES[k[1]], k[2] != "split", k[3]))
    out = []
    for src, size, mode, tail in keys:
        group = [c for c in cells if (c["source"], c["size"], c["calibration"], c["tail"]) == (src, size, mode, tail)]
        row = {"source": src, "size": size, "n_train": group[0]["n_train"], "n_cal": group[0]["n_cal"],
               "calibration": mode, "tail": tail}
        for m in BATCHES:
            row[f"fdr@{m}"] = float(np.mean([c[str(m)]["fdr"] for c in group]))
            row[f"power@{m}"] = float(np.mean([c[str(m)]["power"] for c in group]))
        out.append(row)
    return out


def markdown(summary: list[dict[str, Any]], detector: str, seeds: list[int], args: Any = None) -> str:
    head = "| data | train rows | calibration | n_cal | p-values | " + " | ".join(
        f"FDR / power @{m:,}" for m in BATCHES) + " |"
    lines = [f"# Calibration: FDR and power of batch verdicts ({detector}, BH at alpha = {ALPHA}, "
             f"{len(seeds)} seed(s))", "",
             f"FDR on batches of held-out normal rows (any rejection is false); power: one row shifted by {SHIFT:g} "
             "robust sd in a normal batch, flagged. Exact conformal p-values cannot go below 1/(n_cal+1); the tail "
             "option splits that last cell (approximate p-values): a conservative GPD tail, or for the Ensemble the "
             "larger of that tail and its members' combined p-value.", "",
             f"Command: `python -m evals.calibration --detector {detector}"
             + ("" if list(seeds) == [0, 1, 2] else f" --seeds {','.join(str(x) for x in seeds)}")
             + (f" --cells {args.cells}" if getattr(args, "cells", "") else "")
             + (f" --tag {args.tag}" if getattr(args, "tag", "") else "") + "`", "", head, "|" + "---|" * (5 + len(BATCHES))]
    for r in summary:
        cellv = " | ".join(f"{r[f'fdr@{m}']:.3f} / {r[f'power@{m}']:.2f}" for m in BATCHES)
        lines.append(f"| {r['source']} | {r['n_train']:,} | {r['calibration']} | {r['n_cal']:,} | "
                     f"{'conformal + tail' if r['tail'] else 'exact conformal'} | {cellv} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
