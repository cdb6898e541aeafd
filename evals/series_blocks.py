"""Series verdicts: how coarse the blocks that calibrate window scores should be.

Issue 41 #2. A point's window score (the largest score of the windows that hold it) is calibrated
against the maxima of consecutive blocks of the calibration scores (``PointCalibration``): maxima
of dependent points are about independent, so a block as long as a window was the safe choice, but
NAB's 15% training stretches then hold about 11 blocks, and a tail fitted to 11 maxima is so
uncertain that a jump three times the calibration's largest score got p = 0.02. Shorter blocks give
more maxima and finer p-values, and at some length the false events come back. Per block length
(a window divided by 1, 2, 4, 6, 8; 'points': every point its own block):

- range-F1 at the calibrated cut-off (BH at 5% over windows, ``flag_points``) on the nine benchmark
  series of ``evals.verdicts`` and on the twelve held-out NAB series, beside the best range-F1 of
  any threshold in hindsight (the same scores: the block length changes p-values, not scores);
- on 20 normal-only ``factor_series`` seeds, the seeds with an event (window-level FDR; valid when
  <= alpha + 2 SE = 0.147).

Each series is fitted once (conv_ae, 60 epochs, the default calibration) and its scores are
re-calibrated per block length. The rule that picked the shipped divisor (``BLOCK_DIVISOR``): the
most powerful on the nine benchmark series among those valid on the normal-only seeds; the
held-out series only report.

Run:  python -m evals.series_blocks     (needs tsb-ad: make bench-series)
Writes evals/results/series_blocks.json and .md.
"""

from __future__ import annotations

import math
import platform
import time

import numpy as np
import pandas as pd

from evals.common import write_results

ALPHA = 0.05
DIVISORS = {"window": 1, "1/2": 2, "1/4": 4, "1/6": 6, "1/8": 8, "points": 0}


def _rescored(m, cells: np.ndarray, ws: np.ndarray, div: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(point scores, flags, events) of a scored series with window-score blocks of window // div (0: points)."""
    from anomalens.modalities.series import PointCalibration

    m._calibrator = PointCalibration(m.calibration_scores, m.cell_calibration_scores, m.window,
                                     block=max(1, m.window // div) if div else 1)
    scores, p, _ = m.point_pvalues(cells, ws)
    flags, _ = m.flag_points(p, ALPHA)
    n_events = len(m.events(flags, cells, ALPHA))
    m._calibrator = None
    return scores, flags, n_events


def _scored(train: pd.DataFrame, test: pd.DataFrame, seed: int):
    from anomalens import Investigator
    from anomalens.modalities import SeriesModality

    inv = Investigator.fit(train, modality=SeriesModality(), random_state=seed, epochs=60)
    m = inv.modality
    s = m.read(test, "test")
    cells, ws = m.score_points(inv.detector, s.values)
    return m, cells, ws


def main() -> None:
    import torch

    from anomalens.data.series_synthesis import factor_series
    from anomalens.modalities.series import BLOCK_DIVISOR
    from evals.series import nab_series, tsb_samples
    from evals.verdicts import best_range_f1, range_f1

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    rows = []
    for name, sets in (("benchmark", tsb_samples() + nab_series(6)), ("held-out NAB", nab_series(12, skip=6))):
        for ds in sets:
            X, tr, y = ds["values"], ds["train"], ds["labels"][ds["train"]:]
            if y.sum() == 0:
                continue
            cols = [f"c{i}" for i in range(X.shape[1])]
            m, cells, ws = _scored(pd.DataFrame(X[:tr], columns=cols),
                                   pd.DataFrame(X[tr:], columns=cols, index=pd.RangeIndex(tr, len(X))), 0)
            row = {"set": name, "dataset": ds["name"], "window": m.window, "mode": m.calibration_mode, "F1_cut": {}}
            for label, div in DIVISORS.items():
                scores, flags, _ = _rescored(m, cells, ws, div)
                row["F1_cut"][label] = range_f1(y, scores, flags)
            row["F1_best"] = best_range_f1(y, scores)
            rows.append(row)
            print(name, ds["name"], {k: round(v, 3) for k, v in row["F1_cut"].items()}, round(row["F1_best"], 3), flush=True)
    null = {label: [] for label in DIVISORS}
    for seed in range(20):
        data = factor_series(4200, seed=1000 + seed)
        m, cells, ws = _scored(data.iloc[:2400], data.iloc[2400:], seed)
        for label, div in DIVISORS.items():
            null[label].append(_rescored(m, cells, ws, div)[2])
        print("null", seed, {k: v[-1] for k, v in null.items()}, flush=True)
    res = {"command": "python -m evals.series_blocks", "shipped": f"1/{BLOCK_DIVISOR}",
           "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
           "rows": rows, "null_events": null, "null_bound": ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / 20),
           "seconds": time.perf_counter() - t0}
    write_results("series_blocks", res, markdown(res))


def markdown(res: dict) -> str:
    labels = list(DIVISORS)
    lines = ["# Series verdicts: the blocks that calibrate window scores", "",
             f"`{res['command']}` on {res['machine']}; {res['seconds']:.0f} s. Range-F1 at the calibrated cut-off "
             "(BH at 5% over windows) per block length (a window, half, a quarter, ...; 'points': no blocks), the "
             f"best range-F1 of any threshold in hindsight, and normal-only seeds with an event. Shipped: blocks of "
             f"{res['shipped']} window (`BLOCK_DIVISOR`); before issue 41's change: a window. See docs/series.md.", "",
             "| set | dataset | window | " + " | ".join(labels) + " | best |",
             "|---|---|---:|" + "---:|" * len(labels) + "---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['set']} | {r['dataset']} | {r['window']} | "
                     + " | ".join(f"{r['F1_cut'][k]:.3f}" for k in labels) + f" | {r['F1_best']:.3f} |")
    for name in ("benchmark", "held-out NAB"):
        part = [r for r in res["rows"] if r["set"] == name]
        if part:
            best = float(np.mean([r["F1_best"] for r in part]))
            cells = [float(np.mean([r["F1_cut"][k] for r in part])) for k in labels]
            lines.append(f"| **{name} mean** ({len(part)}) | | | " + " | ".join(f"**{c:.3f}**" for c in cells)
                         + f" | **{best:.3f}** |")
            lines.append(f"| {name}: ratio to best | | | " + " | ".join(f"{c / best:.2f}" for c in cells) + " | |")
    n = len(next(iter(res["null_events"].values())))
    ok = {k: sum(e > 0 for e in v) / n <= res["null_bound"] for k, v in res["null_events"].items()}
    lines.append(f"| normal-only seeds with an event (of {n}; valid <= {res['null_bound']:.3f}) | | | "
                 + " | ".join(f"{sum(e > 0 for e in res['null_events'][k])}{'' if ok[k] else ' **(over)**'}" for k in labels)
                 + " | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
