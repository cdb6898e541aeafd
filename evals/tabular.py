"""Tabular benchmark: anomalens detectors side by side with PyOD on ADBench's classical sets.

Protocol (ADBench / DTE semi-supervised): for each seed, train on a random half of the normal rows
and test on the other half plus every anomaly; report AUROC and AUPRC, mean and mean rank over the
data sets, fit seconds and scoring throughput. In the same run:

- attribution check: up to 300 normal test rows (a seeded random subset) get one or two features
  shifted by ``--shift`` robust standard deviations; hit@k is the share of rows whose k injected
  features are exactly the top k of ``explain`` (for PyOD models, which have no attribution,
  nothing is reported);
- throughput: rows/s of ``decision_function`` on 200,000 rows at d = 20, after fitting on 5,000.

Run:  python -m evals.tabular [--datasets cardio,thyroid | --all] [--seeds 0,1,2] [--jobs 2] [--fresh]
      python -m evals.tabular --all --no-attribution --out evals/results/tabular_all.json
        (every classical set in ../shared/data; sets with more than --max-train normal training rows
        or --max-test test rows are subsampled, seeded, keeping the test set's anomaly share)
A detector name may carry parameters (JSON values): ``vae@beta=1`` is the VAE with beta = 1,
``ensemble@detectors=["autoencoder","vae"]`` an Ensemble of two members.
Writes evals/results/tabular.json and evals/results/tabular.md. Finished (dataset, seed,
detector) cells are cached in the JSON and skipped on the next run unless ``--fresh`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = [
    "cardio", "thyroid", "Pima", "breastw", "Ionosphere", "WBC", "WDBC", "glass", "vertebral", "wine",
    "Hepatitis", "Lymphography", "satimage-2", "musk", "SpamBase", "optdigits", "satellite",
]
OURS = ["autoencoder", "vae", "diffusion", "ganomaly", "flow", "autoregressive", "ensemble"]
PYOD = ["pyod:IForest", "pyod:ECOD", "pyod:KNN", "pyod:AutoEncoder", "pyod:VAE"]
N_INJECT = 300  # normal test rows (at most) that get injected features in the attribution check


def split_names(text: str) -> list[str]:
    """``text`` split at the commas that are not inside a JSON list (``a,b@x=[1,2]`` -> two names)."""
    return re.split(r",(?![^\[]*\])", text)


def make(name: str, seed: int):
    """A fresh detector by benchmark name; PyOD models with their library defaults."""
    if name.startswith("pyod:"):
        cls = name.split(":", 1)[1]
        if cls == "IForest":
            from pyod.models.iforest import IForest

            return IForest(random_state=seed)
        if cls == "ECOD":
            from pyod.models.ecod import ECOD

            return ECOD()
        if cls == "KNN":
            from pyod.models.knn import KNN

            return KNN()
        if cls == "AutoEncoder":
            from pyod.models.auto_encoder import AutoEncoder

            return AutoEncoder(random_state=seed, verbose=0)
        if cls == "VAE":
            from pyod.models.vae import VAE

            return VAE(random_state=seed, verbose=0)
        raise ValueError(f"unknown PyOD model {cls!r}")
    from anomalens.detectors import make_detector

    base, _, spec = name.partition("@")
    params = {}
    for kv in filter(None, split_names(spec)):
        k, v = kv.split("=", 1)
        params[k] = json.loads(v)
    return make_detector(base, random_state=seed, **params)


def inject(X: np.ndarray, ref: np.ndarray, n_feats: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shift ``n_feats`` random features of each row by ``shift`` robust sd of ``ref`` (random sign)."""
    from anomalens.detectors.base import robust_scale

    rng = np.random.default_rng(seed)
    scale = robust_scale(ref)[1]
    A = X.copy()
    feats = np.array([rng.choice(X.shape[1], n_feats, replace=False) for _ in range(len(X))])
    signs = rng.choice([-1.0, 1.0], size=feats.shape)
    rows = np.arange(len(X))[:, None]
    A[rows, feats] += signs * shift * scale[feats]
    return A, feats


def subsample(X_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, max_train: int, max_test: int,
              seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded subsets of at most ``max_train`` training rows and ``max_test`` test rows (the test
    subset keeps the anomaly share)."""
    rng = np.random.default_rng(10_000 + seed)
    if len(X_train) > max_train:
        X_train = X_train[np.sort(rng.choice(len(X_train), max_train, replace=False))]
    if len(X_test) > max_test:
        keep = []
        for label in (0, 1):
            idx = np.flatnonzero(y_test == label)
            k = max(1, int(round(max_test * len(idx) / len(y_test))))
            keep.append(rng.choice(idx, min(k, len(idx)), replace=False))
        keep = np.sort(np.concatenate(keep))
        X_test, y_test = X_test[keep], y_test[keep]
    return X_train, X_test, y_test


def run_cell(task: tuple) -> dict[str, Any]:
    """Fit and score one (dataset, seed, detector) cell."""
    import torch
    from sklearn.metrics import average_precision_score, roc_auc_score

    from anomalens.data import load_adbench, semi_supervised_split

    torch.set_num_threads(1)
    dataset, seed, name, shift = task[:4]
    opts = task[4] if len(task) > 4 else {}
    X, y = load_adbench(dataset)
    X_train, X_test, y_test = semi_supervised_split(X, y, seed)
    if opts.get("max_train") or opts.get("max_test"):
        X_train, X_test, y_test = subsample(X_train, X_test, y_test, opts.get("max_train") or len(X_train),
                                            opts.get("max_test") or len(X_test), seed)
    det = make(name, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        det.fit(X_train)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        scores = det.decision_function(X_test)
        score_s = time.perf_counter() - t0
    cell: dict[str, Any] = {
        "dataset": dataset, "seed": seed, "detector": name, "n_train": len(X_train), "n_test": len(X_test),
        "d": X.shape[1], "auroc": float(roc_auc_score(y_test, scores)),
        "auprc": float(average_precision_score(y_test, scores)), "fit_s": fit_s,
        "score_rows_per_s": len(X_test) / max(score_s, 1e-9),
        "calibrated_fpr_at_0.05": None, "calibrated_tpr_at_0.05": None,
    }
    if hasattr(det, "explain") and not opts.get("no_attribution"):
        flags = det.predict(X_test, alpha=0.05)
        cell["calibrated_fpr_at_0.05"] = float(flags[y_test == 0].mean())
        cell["calibrated_tpr_at_0.05"] = float(flags[y_test == 1].mean())
        normal_test = X_test[y_test == 0]
        if len(normal_test) > N_INJECT:  # a fixed random subset: restoring thousands of rows adds nothing
            normal_test = normal_test[np.random.default_rng(seed).choice(len(normal_test), N_INJECT, replace=False)]
        for k in (1, 2):
            A, feats = inject(normal_test, X_train, k, shift, seed=1000 + seed)
            top = det.explain(A).top(k)
            hits = np.array([set(t) == set(f) for t, f in zip(top, feats)])
            flagged = det.predict(A, alpha=0.05) == 1
            cell[f"hit@{k}"] = float(hits.mean())
            # among the injected rows the detector itself flags: a shift of a heavy-tailed feature can
            # stay inside normal variation, and then no explanation should single it out
            cell[f"hit@{k}_flagged"] = float(hits[flagged].mean()) if flagged.any() else None
            cell[f"flagged@{k}"] = float(flagged.mean())
            clean_dist = np.linalg.norm((A - normal_test) / det.scale_, axis=1)
            restored_dist = np.linalg.norm((det.restore(A) - normal_test) / det.scale_, axis=1)
            cell[f"undone@{k}"] = float(np.median(1 - restored_dist / clean_dist))
    return cell


def throughput(names: list[str], n_fit: int = 5000, n_score: int = 200_000, d: int = 20, repeats: int = 3) -> dict[str, Any]:
    """Median scoring rows/s over ``repeats`` at dimension ``d`` (all threads of this machine)."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    X_fit = rng.normal(size=(n_fit, d)) @ mix
    X = rng.normal(size=(n_score, d)) @ mix
    out = {}
    for name in names:
        det = make(name, 0)
        if hasattr(det, "config"):  # training quality does not matter for speed
            params = det.get_params()
            short = ({"member_params": {"epochs": 5}} if "member_params" in params
                     else {"epochs": 5} if "epochs" in params else {})  # PCA does not train
            det = type(det)(**{**params, "random_state": 0, **short})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            det.fit(X_fit)
            det.decision_function(X[:1000])  # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                det.decision_function(X)
                times.append(time.perf_counter() - t0)
        out[name] = {"rows_per_s": n_score / float(np.median(times)), "d": d, "rows": n_score}
        print(f"throughput {name:18s} {out[name]['rows_per_s']:>12,.0f} rows/s", flush=True)
    return out


def summarize(cells: list[dict[str, Any]], detectors: list[str], datasets: list[str]) -> dict[str, Any]:
    """Per-dataset means over seeds, means over data sets, and mean rank (1 = best AUROC)."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for ds in datasets:
        table[ds] = {}
        for det in detectors:
            cs = [c for c in cells if c["dataset"] == ds and c["detector"] == det]
            if cs:
                table[ds][det] = {k: float(np.mean([c[k] for c in cs if c.get(k) is not None]))
                                  for k in ("auroc", "auprc", "fit_s", "score_rows_per_s", "hit@1", "hit@2",
                                            "hit@1_flagged", "hit@2_flagged", "flagged@1", "flagged@2",
                                            "undone@1", "undone@2", "calibrated_fpr_at_0.05", "calibrated_tpr_at_0.05")
                                  if any(c.get(k) is not None for c in cs)}
    complete = [ds for ds in datasets if all(det in table[ds] for det in detectors)]
    ranks = {det: [] for det in detectors}
    for ds in complete:
        order = sorted(detectors, key=lambda d: -table[ds][d]["auroc"])
        for r, det in enumerate(order, 1):
            ranks[det].append(r)
    overall = {}
    for det in detectors:
        rows = [table[ds][det] for ds in complete]
        keys = dict.fromkeys(k for r in rows for k in r)
        overall[det] = {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}
        overall[det]["mean_rank"] = float(np.mean(ranks[det])) if ranks[det] else None
    return {"per_dataset": table, "overall": overall, "datasets_complete": complete}


def robustness(summary: dict[str, Any], detectors: list[str], anchor: str = "pyod:KNN") -> list[str]:
    """Per detector: mean AUROC, mean rank, the worst set, and the largest shortfall against ``anchor``."""
    table, complete = summary["per_dataset"], summary["datasets_complete"]
    if not complete:
        return []
    lines = [f"## Robustness ({len(complete)} data sets)", "",
             f"| detector | mean AUROC | mean rank | worst set (AUROC) | largest shortfall vs {anchor} (set) |",
             "|---|---:|---:|---|---|"]
    for d in sorted(detectors, key=lambda d: -summary["overall"][d]["auroc"]):
        worst = min(complete, key=lambda ds: table[ds][d]["auroc"])
        gap = ""
        if anchor in detectors:
            ds_gap = max(complete, key=lambda ds: table[ds][anchor]["auroc"] - table[ds][d]["auroc"])
            gap = f"{table[ds_gap][anchor]['auroc'] - table[ds_gap][d]['auroc']:+.3f} ({ds_gap})"
        lines.append(f"| {d} | {summary['overall'][d]['auroc']:.3f} | {summary['overall'][d]['mean_rank']:.2f} | "
                     f"{worst} ({table[worst][d]['auroc']:.3f}) | {gap} |")
    return lines + [""]


def to_markdown(summary: dict[str, Any], detectors: list[str], meta: dict[str, Any]) -> str:
    lines = [f"# Tabular benchmark ({len(summary['datasets_complete'])} ADBench data sets, seeds {meta['seeds']})", "",
             f"Semi-supervised protocol; {meta['machine']}; run {meta['date']}. "
             "Generated by `python -m evals.tabular`.", ""]
    head = "| data set | " + " | ".join(detectors) + " |"
    sep = "|---|" + "---:|" * len(detectors)
    for metric in ("auroc", "auprc"):
        lines += [f"## {metric.upper()} (mean over seeds)", "", head, sep]
        for ds in summary["datasets_complete"]:
            vals = [summary["per_dataset"][ds][d][metric] for d in detectors]
            best = max(vals)
            lines.append(f"| {ds} | " + " | ".join(f"**{v:.3f}**" if v == best else f"{v:.3f}" for v in vals) + " |")
        lines.append("| **mean** | " + " | ".join(f"{summary['overall'][d][metric]:.3f}" for d in detectors) + " |")
        if metric == "auroc":
            lines.append("| **mean rank** | " + " | ".join(f"{summary['overall'][d]['mean_rank']:.2f}" for d in detectors) + " |")
        lines.append("")
    lines += robustness(summary, detectors)
    lines += ["## Cost (mean over data sets and seeds; 1 thread per fit)", "", "| | " + " | ".join(detectors) + " |", sep,
              "| fit seconds | " + " | ".join(f"{summary['overall'][d]['fit_s']:.2f}" for d in detectors) + " |",
              "| scoring rows/s (test sets) | " + " | ".join(f"{summary['overall'][d]['score_rows_per_s']:,.0f}" for d in detectors) + " |"]
    if meta.get("throughput"):
        tp = meta["throughput"]
        lines.append("| scoring rows/s, 200k rows, d = 20, all threads | "
                     + " | ".join(f"{tp[d]['rows_per_s']:,.0f}" if d in tp else "" for d in detectors) + " |")
    ours = [d for d in detectors if "hit@1" in summary["overall"][d]]
    lines += ["", f"## Attribution and restoration on injected anomalies (shift {meta['shift']} robust sd)", "",
              "hit@k: share of rows whose k injected features are exactly the top k of `explain`. "
              "undone@k: median share of the injected deviation that `restore` removes. "
              "flagged: share of injected rows with p < 0.05; hit@k flagged: hit@k among those rows. "
              "FPR/TPR: `predict(alpha=0.05)` on the real test rows.", "",
              "| detector | hit@1 | hit@2 | hit@2 cardio | hit@2 flagged | hit@2 flagged, cardio | flagged@2 | undone@1 | undone@2 | FPR at 0.05 | TPR at 0.05 |",
              "|---|" + "---:|" * 10]
    nan = float("nan")
    for d in ours:
        o = summary["overall"][d]
        c = summary["per_dataset"].get("cardio", {}).get(d, {})
        lines.append(f"| {d} | {o['hit@1']:.3f} | {o['hit@2']:.3f} | {c.get('hit@2', nan):.3f} | {o.get('hit@2_flagged', nan):.3f} | "
                     f"{c.get('hit@2_flagged', nan):.3f} | {o.get('flagged@2', nan):.2f} | {o['undone@1']:.2f} | {o['undone@2']:.2f} | "
                     f"{o['calibrated_fpr_at_0.05']:.3f} | {o['calibrated_tpr_at_0.05']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--detectors", default=",".join(OURS + PYOD))
    ap.add_argument("--shift", type=float, default=5.0)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--fresh", action="store_true", help="ignore cached cells")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "tabular.json"))
    ap.add_argument("--all", action="store_true", help="every classical set in ../shared/data/adbench_classical")
    ap.add_argument("--max-train", type=int, default=0, help="subsample training rows beyond this (0: never)")
    ap.add_argument("--max-test", type=int, default=0, help="subsample test rows beyond this (0: never)")
    ap.add_argument("--no-attribution", action="store_true", help="skip the attribution and restoration check")
    args = ap.parse_args(argv)
    datasets, detectors = args.datasets.split(","), split_names(args.detectors)
    if args.all:
        from anomalens.data import shared_data_dir

        root = shared_data_dir()
        if root is None:
            raise SystemExit("--all needs ../shared/data (or ANOMALENS_DATA_DIR)")
        stems = sorted((p.stem for p in (root / "adbench_classical").glob("*.npz")), key=lambda s: int(s.split("_")[0]))
        datasets = [s.split("_", 1)[1] for s in stems]
    opts = {"max_train": args.max_train, "max_test": args.max_test, "no_attribution": args.no_attribution}
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() and not args.fresh else {}
    cells = [c for c in previous.get("cells", []) if c.get("shift", args.shift) == args.shift]
    done = {(c["dataset"], c["seed"], c["detector"]) for c in cells}
    # cheap cells first, so a partial run already covers most data sets
    tasks = [(ds, s, det, args.shift, opts) for ds in datasets for s in seeds for det in detectors
             if (ds, s, det) not in done]
    print(f"{len(tasks)} cells to run ({len(done)} cached)", flush=True)

    def save(extra: dict[str, Any] | None = None) -> dict[str, Any]:
        meta = {"seeds": seeds, "shift": args.shift, "date": time.strftime("%Y-%m-%d"), **opts,
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads 1 per fit",
                "throughput": previous.get("meta", {}).get("throughput", {})}
        if extra:
            meta.update(extra)
        all_dets = list(dict.fromkeys(detectors + [c["detector"] for c in cells]))
        all_ds = list(dict.fromkeys(datasets + [c["dataset"] for c in cells]))
        summary = summarize(cells, all_dets, all_ds)
        result = {"meta": meta, "summary": summary, "cells": cells}
        out.write_text(json.dumps(result, indent=1))
        if summary["datasets_complete"]:
            out.with_suffix(".md").write_text(to_markdown(summary, all_dets, meta))
        return result

    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for cell in pool.map(run_cell, tasks):
            cell["shift"] = args.shift
            cells.append(cell)
            print(f"{cell['dataset']:14s} seed {cell['seed']} {cell['detector']:18s} AUROC {cell['auroc']:.3f} "
                  f"fit {cell['fit_s']:.1f}s" + (f" hit@2 {cell['hit@2']:.2f}" if "hit@2" in cell else ""), flush=True)
            if len(cells) % 10 == 0:
                save()
    extra = {}
    if not args.no_throughput:
        tp = dict(previous.get("meta", {}).get("throughput", {}))
        tp.update(throughput(detectors))
        extra["throughput"] = tp
    result = save(extra)
    for det, o in result["summary"]["overall"].items():
        if o:
            print(f"{det:18s} mean AUROC {o['auroc']:.3f}  AUPRC {o['auprc']:.3f}  rank {o['mean_rank']:.2f}")
    return result


if __name__ == "__main__":
    main()
