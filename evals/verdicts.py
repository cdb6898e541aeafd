"""Verdicts against rankings: how much of what the scores rank does the calibrated cut-off find?

Issue 41's table. For each modality, the same scores read two ways: **F1 at our calibrated
cut-off** (the verdicts a user acts on: Benjamini-Hochberg at 5%) and **F1 at the best threshold in
hindsight** (the best any threshold on these scores could do, chosen on the test labels: an upper
reference, not a method), their ratio, and the false discovery rate on normal-only data.

- **Series** (range-F1 from the ``tsb-ad`` package, ``make bench-series`` installs it): conv_ae on
  the nine benchmark series of ``evals.series`` (three TSB-AD samples, six NAB) and on the twelve
  NAB series after them (``--held-out``, never used to develop anything), trained on NAB's
  probationary 15% (TSB-AD's marks for its samples); calibration ``split`` (the held-out block at
  the end of the training stretch, the default before issue 41) and ``auto`` (cross-fitted below 40
  held-out windows, the default now). The best threshold is searched over 60 quantiles of the
  test scores (the median to the 99.9th percentile) and the top score.
- **Series, normal only**: ``--null-seeds`` seeds of ``factor_series`` (five channels, period 48),
  2,400 minutes to fit and 1,800 fresh minutes to analyze; any event is a false discovery, so the
  window-level FDR is the share of seeds with an event. Valid when <= alpha + 2 SE.

Run:  python -m evals.verdicts [--only series,null] [--null-seeds 20] [--epochs 60]
Writes evals/results/verdicts.json and .md.
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import numpy as np
import pandas as pd

from evals.common import earlier, write_results

ALPHA = 0.05
CALIBRATIONS = ("split", "auto")


def range_f1(labels: np.ndarray, scores: np.ndarray, pred: np.ndarray) -> float:
    from TSB_AD.evaluation.basic_metrics import basic_metricor

    return float(basic_metricor().metric_RF1(labels, scores, preds=pred.astype(int)))


def best_range_f1(labels: np.ndarray, scores: np.ndarray) -> float:
    """The best range-F1 of any threshold on ``scores`` (60 quantiles from the median up, and the top score)."""
    qs = np.unique(np.quantile(scores, np.r_[np.linspace(0.5, 0.999, 60), 1.0]))
    return max(range_f1(labels, scores, scores >= q) for q in qs)


def series_one(ds: dict, calibration: str, epochs: int) -> dict:
    from anomalens import Investigator
    from anomalens.modalities import SeriesModality

    X, tr, y = ds["values"], ds["train"], ds["labels"][ds["train"]:]
    cols = [f"c{i}" for i in range(X.shape[1])]
    t0 = time.perf_counter()
    inv = Investigator.fit(pd.DataFrame(X[:tr], columns=cols), modality=SeriesModality(calibration=calibration),
                           random_state=0, epochs=epochs)
    fit_s = time.perf_counter() - t0
    sc = inv.score(pd.DataFrame(X[tr:], columns=cols, index=pd.RangeIndex(tr, len(X))))
    pred, _ = inv.modality.flag_points(sc.pvalues, ALPHA)
    cut, best = range_f1(y, sc.scores, pred), best_range_f1(y, sc.scores)
    cal = inv.modality.calibrator
    return {"mode": inv.modality.calibration_mode, "window": inv.modality.window, "calibration_windows": cal.window.n,
            "calibration_points": cal.cell.n, "flagged": int(pred.sum()), "labelled": int(y.sum()),
            "F1_cut": cut, "F1_best": best, "min_p": float(sc.pvalues.min()), "fit_s": fit_s}


def series(epochs: int, held_out: bool, rows: list[dict], save) -> None:
    """Appends a row per series to ``rows`` (saved as it goes)."""
    from evals.series import nab_series, tsb_samples

    sets = nab_series(12, skip=6) if held_out else tsb_samples() + nab_series(6)
    for ds in sets:
        if ds["labels"][ds["train"]:].sum() == 0:
            continue
        row = {"dataset": ds["name"], "set": "held-out NAB" if held_out else "benchmark",
               "points": len(ds["values"]) - ds["train"], "train": ds["train"]}
        for cal in CALIBRATIONS:
            row[cal] = series_one(ds, cal, epochs)
        print(row["dataset"], {c: (round(row[c]["F1_cut"], 3), round(row[c]["F1_best"], 3)) for c in CALIBRATIONS},
              flush=True)
        rows.append(row)
        save()


def series_null(seeds: int, epochs: int, save) -> dict:
    from anomalens import Investigator
    from anomalens.data.series_synthesis import factor_series
    from anomalens.modalities import SeriesModality

    out: dict = {"seeds": seeds, "train_points": 2400, "test_points": 1800}
    for cal in CALIBRATIONS:
        events, min_p = [], []
        for seed in range(seeds):
            data = factor_series(4200, seed=1000 + seed)
            inv = Investigator.fit(data.iloc[:2400], modality=SeriesModality(calibration=cal), random_state=seed,
                                   epochs=epochs)
            sc = inv.score(data.iloc[2400:])
            flags, _ = inv.modality.flag_points(sc.pvalues, ALPHA)
            events.append(len(inv.modality.events(flags, sc.cells, ALPHA)))
            min_p.append(float(sc.pvalues.min()))
        fdr = float(np.mean(np.array(events) > 0))
        out[cal] = {"events": events, "fdr": fdr, "se": math.sqrt(ALPHA * (1 - ALPHA) / seeds),
                    "min_p_median": float(np.median(min_p)), "mode": inv.modality.calibration_mode}
        print("null", cal, out[cal], flush=True)
        save()
    return out


def markdown(res: dict) -> str:
    lines = ["# Verdicts against rankings", "", (f"`{res['command']}` on {res['machine']}; {res['seconds']:.0f} s. "
             "F1 at the cut-off: Benjamini-Hochberg at 5%; best: the best threshold on the same scores in hindsight "
             "(an upper reference). See docs/calibration.md."), ""]
    rows = res.get("series", [])
    if rows:
        lines += ["## Series (conv_ae, range-F1)", "",
                  ("| set | dataset | window | calibration before: windows / points | range-F1 at cut-off | "
                  "now: windows / points | range-F1 at cut-off | best range-F1 | ratio now |"),
                  "|---|---|---:|---|---:|---|---:|---:|---:|"]
        for r in rows:
            s, a = r["split"], r["auto"]
            ratio = f"{a['F1_cut'] / a['F1_best']:.2f}" if a["F1_best"] > 0 else "-"
            lines.append(f"| {r['set']} | {r['dataset']} | {a['window']} | {s['calibration_windows']} / {s['calibration_points']} "
                         f"| {s['F1_cut']:.3f} | {a['calibration_windows']} / {a['calibration_points']} ({a['mode']}) "
                         f"| {a['F1_cut']:.3f} | {a['F1_best']:.3f} | {ratio} |")
        for name in ("benchmark", "held-out NAB"):
            part = [r for r in rows if r["set"] == name]
            if part:
                m = {k: float(np.mean([r[c]["F1_" + f] for r in part])) for k, (c, f) in
                     {"before": ("split", "cut"), "now": ("auto", "cut"), "best": ("auto", "best")}.items()}
                ratio = f"{m['now'] / m['best']:.2f}" if m["best"] > 0 else "-"
                lines.append(f"| **{name} mean** ({len(part)}) | | | | **{m['before']:.3f}** | | **{m['now']:.3f}** | "
                             f"**{m['best']:.3f}** | **{ratio}** |")
        lines.append("")
    null = res.get("null")
    if null:
        lines += [(f"## Series, normal only ({null['seeds']} seeds of factor_series: {null['train_points']} points to fit, "
                  f"{null['test_points']} fresh ones to analyze)"), "",
                  "| calibration | seeds with an event (window-level FDR) | alpha + 2 SE | median smallest p |",
                  "|---|---:|---:|---:|"]
        for cal in CALIBRATIONS:
            v = null[cal]
            ok = "" if v["fdr"] <= ALPHA + 2 * v["se"] else " **(over)**"
            lines.append(f"| {cal} ({v['mode']}) | {sum(e > 0 for e in v['events'])} / {null['seeds']} = {v['fdr']:.3f}{ok} "
                         f"| {ALPHA + 2 * v['se']:.3f} | {v['min_p_median']:.2g} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="series,held-out,null", help="comma-separated: series, held-out, null")
    ap.add_argument("--null-seeds", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=60)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    only = set(args.only.split(","))
    t0 = time.perf_counter()
    res = {**earlier("verdicts"), "command": "python -m evals.verdicts" + ("" if len(only) == 3 else f" --only {args.only}"),
           "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"}

    def save() -> None:
        res["seconds"] = time.perf_counter() - t0
        write_results("verdicts", res, markdown(res))

    res["series"] = [r for r in res.get("series", []) if (r["set"] == "benchmark" and "series" not in only)
                     or (r["set"] == "held-out NAB" and "held-out" not in only)]  # the last run's, for parts not run
    if "series" in only:
        series(args.epochs, False, res["series"], save)
    if "held-out" in only:
        series(args.epochs, True, res["series"], save)
    if "null" in only:
        res["null"] = series_null(args.null_seeds, args.epochs, save)
    save()


if __name__ == "__main__":
    main()
