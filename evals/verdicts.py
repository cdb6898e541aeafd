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

- **Logs** (``--only logs``): the two log sets of ``evals.logs`` with too few normal cases for a
  thick calibration: BGL's 2k sample (windows of 20 lines: 48 alert-free training windows, 40 test
  windows, 16 with alerts) and HDFS with 600 normal training sessions, tested in batches of every
  held-out normal session plus abnormal ones making 1% or 5% of the batch (10 draws); calibration
  ``split`` (the default: a held-out 30%, in two halves) and ``cross`` (every case out of fold,
  five contiguous blocks). F1 at BH 5% and the best F1 over thresholds on the same p-values.

Run:  python -m evals.verdicts [--only series,held-out,null,logs] [--null-seeds 20] [--epochs 60]
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


def best_f1(y: np.ndarray, p: np.ndarray) -> float:
    """The best point F1 of any threshold on the p-values (flag p <= t), in hindsight."""
    best = 0.0
    for t in np.unique(p):
        pred = p <= t
        tp = float((pred & y).sum())
        if tp:
            best = max(best, 2 * tp / (pred.sum() + y.sum()))
    return best


def logs_cells(y: np.ndarray, p: np.ndarray) -> dict:
    from anomalens.detectors import benjamini_hochberg
    from evals.logs import prf

    pred = benjamini_hochberg(p, ALPHA).astype(bool)
    m = prf(pred, y)
    return {"flagged": m["flagged"], "recall": m["recall"], "false": int((pred & ~y).sum()), "F1_cut": m["F1"],
            "F1_best": best_f1(y, p)}


def logs(save) -> dict:
    """BGL windows and HDFS at 1% / 5% abnormal, calibration split and cross (module docstring)."""
    from anomalens import Investigator
    from anomalens.modalities import LogModality
    from evals.logs import DATA, bgl_windows

    out: dict = {}
    train, test, y = bgl_windows()
    normal = [ln.split() for ln in (DATA / "hdfs_sessions" / "normal").read_text().splitlines()]
    abnormal = [ln.split() for ln in (DATA / "hdfs_sessions" / "abnormal").read_text().splitlines()]
    order = np.random.default_rng(0).permutation(len(normal))
    h_train, h_normal = [normal[i] for i in order[:600]], [normal[i] for i in order[600:]]
    for cal in ("split", "cross"):
        t0 = time.perf_counter()
        inv = Investigator.fit(train, modality=LogModality(calibration=cal), random_state=0)
        fit_s = time.perf_counter() - t0
        p = np.array([v.p_value for v in inv.verdicts(test, alpha=ALPHA).values()])
        out.setdefault("bgl", {"train": len(train), "test": len(y), "anomalous": int(y.sum())})[cal] = {
            **logs_cells(y, p), "fit_s": fit_s, "calibration_cases": int(inv.modality.combined_scores.size)}
        t0 = time.perf_counter()
        inv = Investigator.fit(h_train, modality=LogModality(calibration=cal), random_state=0)
        fit_s = time.perf_counter() - t0
        p_n = np.array([v.p_value for v in inv.verdicts(h_normal, alpha=ALPHA).values()])
        p_a = np.array([v.p_value for v in inv.verdicts(abnormal, alpha=ALPHA).values()])
        h = out.setdefault("hdfs", {"train": 600, "test_normal": len(h_normal), "draws": 10})
        h[cal] = {"fit_s": fit_s, "calibration_cases": int(inv.modality.combined_scores.size),
                  "p_abnormal": [float(np.quantile(p_a, q)) for q in (0.1, 0.5, 0.9)],
                  "normal_only": logs_cells(np.zeros(len(p_n), dtype=bool), p_n)}
        rng = np.random.default_rng(1)
        for ratio in (0.01, 0.05):
            k = int(round(ratio / (1 - ratio) * len(h_normal)))
            cells = [logs_cells(np.r_[np.zeros(len(p_n), dtype=bool), np.ones(k, dtype=bool)],
                                np.r_[p_n, p_a[rng.choice(len(p_a), size=k, replace=False)]]) for _ in range(10)]
            h[cal][f"{100 * ratio:g}%"] = {m: float(np.mean([c[m] for c in cells])) for m in cells[0]}
        print("logs", cal, out["bgl"][cal], h[cal], flush=True)
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
    lg = res.get("logs")
    if lg:
        b, h = lg["bgl"], lg["hdfs"]
        lines += ["## Logs (BH at 5%; best: the best F1 of any threshold on the same p-values, in hindsight)", "",
                  (f"BGL 2k: {b['train']} alert-free training windows of 20 lines, {b['test']} test windows "
                   f"({b['anomalous']} with alerts). HDFS: {h['train']} normal training sessions; batches of the "
                   f"{h['test_normal']} held-out normal sessions plus abnormal ones making 1% or 5% (mean of "
                   f"{h['draws']} draws); 'normal only': the held-out normal sessions alone."), "",
                  "| data | calibration (cases in the combination's half) | flagged | false | recall | F1 at cut-off | best F1 | fit s |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for cal in ("split", "cross"):
            v = b[cal]
            lines.append(f"| BGL windows | {cal} ({v['calibration_cases']}) | {v['flagged']} | {v['false']} | {v['recall']:.3f} "
                         f"| {v['F1_cut']:.3f} | {v['F1_best']:.3f} | {v['fit_s']:.0f} |")
        for cal in ("split", "cross"):
            v = h[cal]
            for part in ("1%", "5%"):
                c = v[part]
                lines.append(f"| HDFS {part} | {cal} ({v['calibration_cases']}) | {c['flagged']:.1f} | {c['false']:.1f} "
                             f"| {c['recall']:.3f} | {c['F1_cut']:.3f} | {c['F1_best']:.3f} | {v['fit_s']:.0f} |")
            c = v["normal_only"]
            lines.append(f"| HDFS normal only | {cal} ({v['calibration_cases']}) | {c['flagged']} | {c['false']} | - | - | - | "
                         f"{v['fit_s']:.0f} |")
        lines += ["", "Abnormal HDFS sessions' p-values (10th / 50th / 90th percentile): " + "; ".join(
            f"{cal} " + " / ".join(f"{x:.2g}" for x in h[cal]["p_abnormal"]) for cal in ("split", "cross")) + ".", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="series,held-out,null,logs", help="comma-separated: series, held-out, null, logs")
    ap.add_argument("--null-seeds", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=60)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    only = set(args.only.split(","))
    t0 = time.perf_counter()
    res = {**earlier("verdicts"), "command": "python -m evals.verdicts" + ("" if len(only) == 4 else f" --only {args.only}"),
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
    if "logs" in only:
        res["logs"] = logs(save)
    save()


if __name__ == "__main__":
    main()
