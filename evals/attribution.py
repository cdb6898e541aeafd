"""Explanation benchmark: attributions and restorations scored against known causes.

Two sections, each cell one (data set, detector) fit:

- **synthesized**: a detector is trained on a random half of a data set's normal rows (ADBench
  semi-supervised split, seed 0); anomalies of each of the four types of
  ``anomalens.data.synthesize`` (local, global, dependency, clustered; 2 changed features) are
  injected into the held-out normal rows. Reported per type: hit@k (k = number of injected features:
  the share of those features found among the top k of ``explain``), the same among the rows the
  detector flags at alpha = 0.05, the flagged share, and restoration: the fraction of the injected
  deviation that ``restore`` undoes, 1 - ||restored - clean|| / ||anomalous - clean|| in robust
  units, median over rows.
- **aton**: the nine data sets of ATON (Xu et al., WWW 2021) with, per outlier, the feature subspace
  in which iForest, COPOD or HBOS scores it highest. A detector is trained on the inlier rows and
  explains each outlier; agreement is hit@|S| (share of the subspace S among the top |S| features)
  against each of the three annotators, next to the share a random ranking gets (|S| / d on average).

Run:  python -m evals.attribution [--section synthesized|aton|all] [--detectors vae,flow] [--jobs 2]
Writes evals/results/attribution.json and .md; finished cells are cached unless ``--fresh``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
OURS = ["autoencoder", "vae", "diffusion", "ganomaly", "flow", "autoregressive", "ensemble"]
SYNTH_DATASETS = ["cardio", "thyroid", "Pima", "breastw", "WBC", "vertebral", "wine", "satellite"]
ATON_SETS = [
    "pima", "vertebral", "wineQualityReds-od2", "ionosphere_pca", "letter_pca", "arrhythmia_pca", "wbc_pca",
    "satimage-2_pca", "optdigits_pca",
]
ANNOTATORS = ("iforest", "copod", "hbos")
N_INJECT = 200


def aton_root() -> Path:
    from anomalens.data import shared_data_dir

    root = shared_data_dir()
    if root is None:
        raise SystemExit("../shared/data is not present; set ANOMALENS_DATA_DIR")
    return root / "aton_outlier_interpretation"


def load_aton(name: str) -> tuple[np.ndarray, np.ndarray, dict[str, list[tuple[int, list[int]]]]]:
    """X, y (1 = outlier) and, per annotator, [(row, subspace)] of an ATON data set."""
    import pandas as pd

    root = aton_root()
    (csv,) = [p for p in (root / "data").glob("*.csv") if p.stem.split("-", 1)[1] == name]
    df = pd.read_csv(csv)
    y = df.pop(df.columns[-1]).to_numpy().astype(int)  # the label is the last column ("class", "label", ...)
    truth = {}
    for ann in ANNOTATORS:
        gt = pd.read_csv(root / "data_od_evaluation" / f"{name}_gt_{ann}.csv")
        truth[ann] = [(int(i), json.loads(s)) for i, s in zip(gt["ano_idx"], gt["exp_subspace"])]
    return df.to_numpy(dtype=np.float64), y, truth


def hit_at_k(values: np.ndarray, truth: list[np.ndarray]) -> np.ndarray:
    """Per row: share of the true features among the top len(truth) attributed ones (NaN: no truth)."""
    out = np.full(len(values), np.nan)
    for i, (v, t) in enumerate(zip(values, truth)):
        if len(t) == 0:  # e.g. a dependency swap that copied equal values: nothing changed
            continue
        top = np.argsort(-v, kind="stable")[: len(t)]
        out[i] = len(set(top.tolist()) & set(np.asarray(t).tolist())) / len(t)
    return out


def run_synth(task: tuple[str, str]) -> dict[str, Any]:
    import torch

    from anomalens.data import load_adbench, semi_supervised_split
    from anomalens.data.synthesis import ANOMALY_TYPES, synthesize
    from anomalens.detectors import make_detector

    torch.set_num_threads(1)
    dataset, name = task
    X, y = load_adbench(dataset)
    X_train, X_test, y_test = semi_supervised_split(X, y, 0)
    det = make_detector(name, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        det.fit(X_train)
        fit_s = time.perf_counter() - t0
    cell: dict[str, Any] = {"section": "synthesized", "dataset": dataset, "detector": name, "fit_s": fit_s,
                            "n_train": len(X_train), "d": X.shape[1]}
    normal = X_test[y_test == 0]
    for kind in ANOMALY_TYPES:
        syn = synthesize(normal, kind, N_INJECT, n_features=2, reference=X_train, keep_normal=False, random_state=0)
        values = det.explain(syn.X).values
        hits = hit_at_k(values, [np.flatnonzero(c) for c in syn.changed])
        real = ~np.isnan(hits)  # rows where the injection changed something
        flagged = (det.predict(syn.X, alpha=0.05) == 1) & real
        before = np.linalg.norm((syn.X - syn.clean) / det.scale_, axis=1)[real]
        after = np.linalg.norm((det.restore(syn.X) - syn.clean) / det.scale_, axis=1)[real]
        cell[kind] = {
            "hit": float(hits[real].mean()),
            "hit_flagged": float(hits[flagged].mean()) if flagged.any() else None,
            "flagged": float(flagged[real].mean()),
            "undone": float(np.median(1 - after / before)),
            "n": int(real.sum()),
        }
    return cell


def run_aton(task: tuple[str, str]) -> dict[str, Any]:
    import torch

    from anomalens.detectors import make_detector

    torch.set_num_threads(1)
    dataset, name = task
    X, y, truth = load_aton(dataset)
    det = make_detector(name, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        det.fit(X[y == 0])
        fit_s = time.perf_counter() - t0
    cell: dict[str, Any] = {"section": "aton", "dataset": dataset, "detector": name, "fit_s": fit_s, "d": X.shape[1]}
    for ann, items in truth.items():
        rows = np.array([i for i, _ in items])
        values = det.explain(X[rows]).values
        hits = hit_at_k(values, [np.array(s) for _, s in items])
        cell[ann] = {"hit": float(hits.mean()), "random": float(np.mean([len(s) / X.shape[1] for _, s in items])),
                     "n": len(items)}
    return cell


def run_cell(task: tuple[str, str, str]) -> dict[str, Any]:
    section, dataset, name = task
    return (run_synth if section == "synthesized" else run_aton)((dataset, name))


def summarize(cells: list[dict[str, Any]]) -> dict[str, Any]:
    from anomalens.data.synthesis import ANOMALY_TYPES

    out: dict[str, Any] = {"synthesized": {}, "aton": {}}
    for det in dict.fromkeys(c["detector"] for c in cells):
        syn = [c for c in cells if c["section"] == "synthesized" and c["detector"] == det]
        if syn:
            row = {"fit_s": float(np.mean([c["fit_s"] for c in syn])), "n_datasets": len(syn)}
            for kind in ANOMALY_TYPES:
                flagged = [c[kind]["hit_flagged"] for c in syn if c[kind]["hit_flagged"] is not None]
                row[kind] = {
                    "hit": float(np.mean([c[kind]["hit"] for c in syn])),
                    "hit_flagged": float(np.mean(flagged)) if flagged else None,
                    "flagged": float(np.mean([c[kind]["flagged"] for c in syn])),
                    "undone": float(np.mean([c[kind]["undone"] for c in syn])),
                }
            out["synthesized"][det] = row
        aton = [c for c in cells if c["section"] == "aton" and c["detector"] == det]
        if aton:
            out["aton"][det] = {
                ann: {"hit": float(np.mean([c[ann]["hit"] for c in aton])),
                      "random": float(np.mean([c[ann]["random"] for c in aton]))}
                for ann in ANNOTATORS
            } | {"n_datasets": len(aton)}
    return out


def to_markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    from anomalens.data.synthesis import ANOMALY_TYPES

    lines = ["# Explanation benchmark (attribution and restoration against known causes)", "",
             f"Run {meta['date']}; `python -m evals.attribution`. Means over data sets; 2 features injected per row.", ""]
    syn = summary["synthesized"]
    if syn:
        lines += [f"## Synthesized anomalies ({', '.join(meta['synth_datasets'])}; {N_INJECT} rows per type)", "",
                  "hit@2 (all injected rows / rows the detector flags at alpha 0.05) and restoration (median share of the "
                  "injected deviation undone).", "",
                  "| detector | " + " | ".join(f"{k} hit@2 | {k} undone" for k in ANOMALY_TYPES) + " | fit s |",
                  "|---|" + "---:|" * (2 * len(ANOMALY_TYPES) + 1)]
        for det, row in syn.items():
            cells = []
            for k in ANOMALY_TYPES:
                r = row[k]
                hf = "-" if r["hit_flagged"] is None else f"{r['hit_flagged']:.2f}"
                cells += [f"{r['hit']:.2f} / {hf}", f"{r['undone']:.2f}"]
            lines.append(f"| {det} | " + " | ".join(cells) + f" | {row['fit_s']:.1f} |")
        lines.append("")
    aton = summary["aton"]
    if aton:
        lines += ["## ATON outlier-interpretation subspaces (9 data sets)", "",
                  "hit@|S| of each outlier's annotated subspace S among the top |S| attributed features; "
                  "the last row is what a random ranking gets.", "",
                  "| detector | " + " | ".join(ANNOTATORS) + " |", "|---|" + "---:|" * len(ANNOTATORS)]
        for det, row in aton.items():
            lines.append(f"| {det} | " + " | ".join(f"{row[a]['hit']:.3f}" for a in ANNOTATORS) + " |")
        any_row = next(iter(aton.values()))
        lines.append("| random | " + " | ".join(f"{any_row[a]['random']:.3f}" for a in ANNOTATORS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--section", choices=["synthesized", "aton", "all"], default="all")
    ap.add_argument("--detectors", default=",".join(OURS))
    ap.add_argument("--datasets", default=None, help="comma-separated; default: the section's list")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "attribution.json"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() and not args.fresh else {}
    cells = previous.get("cells", [])
    done = {(c["section"], c["dataset"], c["detector"]) for c in cells}
    sections = ["synthesized", "aton"] if args.section == "all" else [args.section]
    tasks = []
    for section in sections:
        default = SYNTH_DATASETS if section == "synthesized" else ATON_SETS
        datasets = args.datasets.split(",") if args.datasets else default
        tasks += [(section, ds, det) for ds in datasets for det in args.detectors.split(",")
                  if (section, ds, det) not in done]
    print(f"{len(tasks)} cells to run ({len(done)} cached)", flush=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "synth_datasets": SYNTH_DATASETS, "aton_datasets": ATON_SETS,
            "n_inject": N_INJECT, "seed": 0}

    def save() -> dict[str, Any]:
        summary = summarize(cells)
        result = {"meta": meta, "summary": summary, "cells": cells}
        out.write_text(json.dumps(result, indent=1))
        out.with_suffix(".md").write_text(to_markdown(summary, meta))
        return result

    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for cell in pool.map(run_cell, tasks):
            cells.append(cell)
            print(f"{cell['section']:12s} {cell['dataset']:20s} {cell['detector']:15s} fit {cell['fit_s']:.1f}s", flush=True)
            save()
    return save()


if __name__ == "__main__":
    main()
