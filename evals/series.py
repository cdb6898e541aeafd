"""Series benchmark: VUS-PR against TSB-AD's baselines, explanation quality on injected events, throughput.

Detection (semi-supervised: each detector of ours trains on a normal stretch at the start of the
series and scores the rest; ``/no-memory``: conv_ae without its memory (memory=0), ``/cell``: point
scores from the cells alone, point_score="cell", the default before window scores):
- TSB-AD samples in ``../shared/data/tsb_ad_samples/``: SMAP E-9 (25 channels; rows before the
  ``tr_`` mark, 2,075, for training) and two univariate NAB-derived series (their ``tr_`` marks);
- NAB series in ``../shared/data/nab/`` (``--nab`` of them, in name order): training on NAB's
  probationary first 15%, which NAB keeps free of scored anomalies.
Metrics from the ``tsb-ad`` package (``TSB_AD.evaluation.metrics.get_metrics``): VUS-PR (primary),
AUC-PR and range-F1 at our calibrated cut-off (Benjamini-Hochberg at 5% over the scored windows),
computed on the part after the training stretch, with TSB-AD's sliding window for VUS
(``find_length_rank``). Baselines: TSB-AD's own implementations with its tuned hyper-parameters
(``HP_list``): PCA, IForest, KNN, LOF twice, unsupervised as TSB-AD runs them (fitted on the scored
part itself) and ``/semi``: fitted on the same training stretch as ours and scoring the rest
(the same splits), and its CNN (semi-supervised, same splits).

Explanation (``--synthetic``): spike, level-shift and decoupling events (20 points, 1 or 2
channels) injected into a 12-channel factor series; channel hit@k (k = channels injected),
time IoU of the best-overlapping event with the injected span, and the share of the injected
deviation the restored segment undoes (median over injected cells).

Throughput: points scored per second by ``Investigator.score`` (the series flow) on SMAP (25 channels), fit
time; the baselines' time per point in the same process.

Run:  python -m evals.series [--nab 8] [--epochs 60] [--quick]
Writes evals/results/series.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from evals.common import write_results

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# "/no-memory": conv_ae reconstructing from a window's own code (memory=0); "/cell": point scores from the cells
# alone (point_score="cell", the default before window scores); see docs/series.md
OURS = ("conv_ae", "conv_ae/no-memory", "conv_ae/cell", "autoencoder")
BASELINES = ("PCA", "IForest", "KNN", "LOF", "CNN", "PCA/semi", "IForest/semi", "KNN/semi", "LOF/semi")
# TSB-AD's run_* defaults for the multivariate windowed baselines (its HP_list does not set the window)
_MULTI_WINDOW = {"PCA": 100, "IForest": 100, "KNN": 1, "LOF": 1}


def tsb_samples() -> list[dict]:
    out = []
    for path in sorted((DATA / "tsb_ad_samples").glob("*.csv")):
        frame = pd.read_csv(path)
        m = re.search(r"_tr_(\d+)_", path.name) or re.search(r"_(\d+)_(\d+)\.csv$", path.name)
        train = int(m.group(1))
        labels = frame.pop("Label").to_numpy().astype(int)
        out.append({"name": path.stem, "values": frame.to_numpy(dtype=np.float64), "labels": labels, "train": train,
                    "source": "tsb_ad_samples"})
    return out


def nab_series(n: int, skip: int = 0) -> list[dict]:
    windows = json.loads((DATA / "nab" / "labels" / "combined_windows.json").read_text())
    out = []
    for key in [k for k in sorted(windows) if windows[k]][skip : skip + n]:  # series with a labelled window
        frame = pd.read_csv(DATA / "nab" / "data" / key, parse_dates=["timestamp"])
        t = frame["timestamp"]
        y = np.zeros(len(frame), dtype=int)
        for a, b in windows[key]:
            y |= ((t >= pd.Timestamp(a)) & (t <= pd.Timestamp(b))).to_numpy()
        out.append({"name": key.removesuffix(".csv"), "values": frame[["value"]].to_numpy(dtype=np.float64),
                    "labels": y, "train": int(0.15 * len(frame)), "source": "nab"})
    return out


def metrics(score: np.ndarray, labels: np.ndarray, window: int, pred: np.ndarray | None = None) -> dict:
    from TSB_AD.evaluation.basic_metrics import basic_metricor
    from TSB_AD.evaluation.metrics import get_metrics

    m = get_metrics(np.asarray(score, dtype=np.float64), labels, slidingWindow=window)
    out = {"VUS-PR": float(m["VUS-PR"]), "AUC-PR": float(m["AUC-PR"])}
    if pred is not None:
        out["range-F1"] = float(basic_metricor().metric_RF1(labels, score, preds=pred.astype(int)))
    return out


def run_ours(name: str, ds: dict, epochs: int) -> tuple[np.ndarray, np.ndarray, dict]:
    from anomalens import Investigator
    from anomalens.modalities import SeriesModality

    X, tr = ds["values"], ds["train"]
    cols = [f"c{i}" for i in range(X.shape[1])]
    train = pd.DataFrame(X[:tr], columns=cols)
    test = pd.DataFrame(X[tr:], columns=cols, index=pd.RangeIndex(tr, len(X)))
    detector, _, variant = name.partition("/")
    extra = {"memory": 0} if variant == "no-memory" else {}
    t0 = time.perf_counter()
    inv = Investigator.fit(train, modality=SeriesModality(point_score="cell" if variant == "cell" else "window"),
                           detector=detector, random_state=0, epochs=epochs, **extra)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sc = inv.score(test)
    score_s = time.perf_counter() - t0
    pred, _ = inv.modality.flag_points(sc.pvalues, 0.05)
    return sc.scores, pred, {"fit_s": fit_s, "score_s": score_s, "window": inv.modality.window}


def run_baseline(name: str, ds: dict) -> np.ndarray:
    """TSB-AD's ``run_<name>`` (called directly: its ``run_*_AD`` dispatchers print and swallow errors)."""
    np.Inf = np.inf  # TSB-AD 1.5 pins numpy<2; its early stopping reads np.Inf, which numpy 2 removed (only that)
    from TSB_AD import model_wrapper
    from TSB_AD.HP_list import Optimal_Multi_algo_HP_dict, Optimal_Uni_algo_HP_dict

    X, tr = ds["values"], ds["train"]
    uni = X.shape[1] == 1
    if name.endswith("/semi"):  # the same class and hyper-parameters, fitted on our training stretch
        import importlib

        from TSB_AD.utils.slidingWindows import find_length_rank

        base = name.removesuffix("/semi")
        hp = dict((Optimal_Uni_algo_HP_dict if uni else Optimal_Multi_algo_HP_dict)[f"Sub_{base}" if uni else base])
        window = find_length_rank(X[:tr], rank=hp.pop("periodicity", 1)) if uni else _MULTI_WINDOW[base]
        module = importlib.import_module(f"TSB_AD.models.{base}")
        # its decision_function calls scikit-learn's check_is_fitted on a class without scikit-learn's
        # tags, which scikit-learn >= 1.6 refuses; the model is fitted two lines below, so the check goes
        module.check_is_fitted = lambda *args, **kwargs: None
        clf = getattr(module, base)(slidingWindow=window, **hp)
        clf.fit(X[:tr])
        return np.asarray(clf.decision_function(X[tr:]), dtype=np.float64).ravel()
    if name == "CNN":
        hp = (Optimal_Uni_algo_HP_dict if uni else Optimal_Multi_algo_HP_dict)["CNN"]
        return np.asarray(model_wrapper.run_CNN(X[:tr], X[tr:], **hp), dtype=np.float64)
    key = f"Sub_{name}" if uni else name
    hp = (Optimal_Uni_algo_HP_dict if uni else Optimal_Multi_algo_HP_dict)[key]
    return np.asarray(getattr(model_wrapper, f"run_{key}")(X[tr:], **hp), dtype=np.float64)


def detection(datasets: list[dict], epochs: int, save=None) -> list[dict]:
    from TSB_AD.utils.slidingWindows import find_length_rank

    rows = []
    for ds in datasets:
        X, y, tr = ds["values"], ds["labels"], ds["train"]
        yt = y[tr:]
        if yt.sum() == 0:
            continue
        window = int(find_length_rank(X[tr:, 0].reshape(-1, 1), rank=1))
        row = {"dataset": ds["name"], "source": ds["source"], "channels": X.shape[1], "points": len(X) - tr,
               "train": tr, "anomalous_share": float(yt.mean()), "results": {}}
        for name in OURS:
            try:
                score, pred, info = run_ours(name, ds, epochs)
                row["results"][name] = {**metrics(score, yt, window, pred), **info}
            except Exception as exc:  # reported, like a failing baseline, and the run goes on
                row["results"][name] = {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}
        for name in BASELINES:
            t0 = time.perf_counter()
            try:
                score = run_baseline(name, ds)
                if len(score) != len(yt) or not np.isfinite(score).all():
                    raise ValueError(f"{len(score)} scores for {len(yt)} points or non-finite scores")
                row["results"][name] = {**metrics(score, yt, window), "total_s": time.perf_counter() - t0}
            except Exception as exc:  # a baseline that fails is reported, not hidden
                row["results"][name] = {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}
        print(ds["name"], {k: round(v.get("VUS-PR", float("nan")), 3) for k, v in row["results"].items()}, flush=True)
        rows.append(row)
        if save is not None:
            save(rows)  # results so far, so a stopped run leaves what it measured
    return rows


def synthetic_explanations(epochs: int, seeds: int = 2) -> dict:
    """Channel hit@k, time IoU and restoration undone share on injected events (see the docstring)."""
    from anomalens import Investigator
    from anomalens.data.series_synthesis import inject_series

    out: dict[str, dict] = {}
    for kind in ("spike", "level_shift", "decoupling"):
        hits, ious, undone, found, total = [], [], [], 0, 0
        for seed in range(seeds):
            rng = np.random.default_rng(100 + seed)
            T, C = 6000, 12
            t = np.arange(T)
            f = np.column_stack([np.sin(2 * np.pi * t / 64), np.cos(2 * np.pi * t / 64), np.sin(2 * np.pi * t / 17),
                                 np.convolve(rng.normal(size=T), np.ones(16) / 16, mode="same") * 2])
            X = f @ rng.normal(size=(4, C)) + 0.1 * rng.normal(size=(T, C))
            cols = [f"m{i}" for i in range(C)]
            inv = Investigator.fit(pd.DataFrame(X[:3000], columns=cols), modality="series", random_state=seed,
                                   epochs=epochs)
            for n_ch in (1, 2):
                V, mask, events = inject_series(X[3000:], [kind] * 4, length=20, n_channels=n_ch, seed=seed * 10 + n_ch)
                reps = inv.analyze_batch(pd.DataFrame(V, columns=cols, index=pd.RangeIndex(3000, T)))
                for e in events:
                    total += 1
                    best, rep = 0.0, None
                    for r in reps:
                        a, b = int(r.evidence.event.start) - 3000, int(r.evidence.event.end) - 3000
                        inter = max(0, min(b, e.end) - max(a, e.start) + 1)
                        if inter and inter / (max(b, e.end) - min(a, e.start) + 1) > best:
                            best, rep = inter / (max(b, e.end) - min(a, e.start) + 1), r
                    ious.append(best)
                    if rep is None:
                        hits.append(0.0)
                        continue
                    found += 1
                    k = len(e.channels)
                    top = {a.unit for a in rep.evidence.attributions[:k]}
                    hits.append(len(top & {cols[c] for c in e.channels}) / k)
                    for c in e.channels:
                        seg = next((g for g in rep.evidence.segments if g.channel == cols[c]), None)
                        if seg is None:
                            continue
                        rows = np.array([int(x) - 3000 for x in seg.times])
                        inj = V[rows, c] - X[3000:][rows, c]
                        ok = mask[rows, c] & (np.abs(inj) > 1e-9)
                        undone += list(np.abs(np.array(seg.restored)[ok] - V[rows, c][ok]) / np.abs(inj[ok]))
        out[kind] = {"events": total, "found": found, "channel_hit_at_k": float(np.mean(hits)),
                     "time_iou": float(np.mean(ious)), "restoration_undone_median": float(np.median(undone)) if undone else None}
        print(kind, out[kind], flush=True)
    return out


def throughput(epochs: int) -> list[dict]:
    """Points scored per second on SMAP (25 channels) by conv_ae: as shipped (the plain per-cell
    errors, one forward pass per window, every window/8-th window scored), scoring every window
    (``SeriesModality(score_stride=1)``), and every window with the robust attribution
    (``robust_rounds=3``: 4 forward passes per window); with each, its VUS-PR on SMAP, so speed
    and quality sit side by side."""
    from TSB_AD.utils.slidingWindows import find_length_rank

    from anomalens import Investigator
    from anomalens.modalities import SeriesModality

    ds = next(d for d in tsb_samples() if "SMAP" in d["name"])
    X, y, tr = ds["values"], ds["labels"], ds["train"]
    cols = [f"c{i}" for i in range(X.shape[1])]
    vus_window = int(find_length_rank(X[tr:, 0].reshape(-1, 1), rank=1))
    out = []
    for rounds, stride in ((None, None), (None, 1), (3, 1)):
        t0 = time.perf_counter()
        inv = Investigator.fit(pd.DataFrame(X[:tr], columns=cols), modality=SeriesModality(score_stride=stride),
                               random_state=0, epochs=epochs, **({} if rounds is None else {"robust_rounds": rounds}))
        fit_s = time.perf_counter() - t0
        test = pd.DataFrame(X[tr:], columns=cols, index=pd.RangeIndex(tr, len(X)))
        inv.score(test.iloc[:1000])  # warm-up
        t0 = time.perf_counter()
        sc = inv.score(test)
        s = time.perf_counter() - t0
        out.append({"variant": f"robust_rounds={inv.detector.config.robust_rounds}, score_stride={inv.modality.score_stride}"
                               + (" (default)" if rounds is None and stride is None else ""),
                    "channels": X.shape[1], "points": len(test), "window": inv.modality.window,
                    "points_per_s": len(test) / s, "fit_s": fit_s, "train_points": tr,
                    "VUS-PR": metrics(sc.scores, y[tr:], vus_window)["VUS-PR"]})
        print(out[-1], flush=True)
    return out


def markdown(res: dict) -> str:
    names = [*OURS, *BASELINES]
    lines = ["# Series benchmark", "", f"`{res['command']}` on {res['machine']}; {res['seconds']:.0f} s.", "",
             "## Detection (VUS-PR; AUC-PR in brackets)", "",
             "| dataset | ch | points | " + " | ".join(names) + " |", "|---|---:|---:|" + "---:|" * len(names)]
    for r in res["detection"]:
        cells = []
        for n in names:
            v = r["results"].get(n, {})
            cells.append(f"{v['VUS-PR']:.3f} ({v['AUC-PR']:.3f})" if "VUS-PR" in v else "failed")
        lines.append(f"| {r['dataset']} | {r['channels']} | {r['points']} | " + " | ".join(cells) + " |")
    means = res["mean_vus_pr"]
    lines.append("| **mean** | | | " + " | ".join(f"**{means.get(n, float('nan')):.3f}**" for n in names) + " |")
    lines += ["", "Range-F1 at our calibrated cut-off (BH 5% over windows), mean: "
              + ", ".join(f"{n} {v:.3f}" for n, v in res["mean_range_f1"].items()), ""]
    lines += ["## Explanations on injected events (12 channels, 20-point events, 1-2 channels each)", "",
              "| kind | events | found | channel hit@k | time IoU | restoration undoes (median) |", "|---|---:|---:|---:|---:|---:|"]
    for k, v in res["synthetic"].items():
        und = "-" if v["restoration_undone_median"] is None else f"{100 * v['restoration_undone_median']:.0f}%"
        lines.append(f"| {k} | {v['events']} | {v['found']} | {v['channel_hit_at_k']:.2f} | {v['time_iou']:.2f} | {und} |")
    lines += ["", "## Throughput (conv_ae on SMAP, 25 channels)", "",
              "| variant | window | points/s scored | fit s | VUS-PR |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {t['variant']} | {t['window']} | {t['points_per_s']:.0f} | {t['fit_s']:.1f} | {t['VUS-PR']:.3f} |"
              for t in res["throughput"]]
    lines += ["", "| detector | mean fit + score seconds per 1,000 points (detection runs) |", "|---|---:|"]
    for n in names:
        per = [r["results"][n].get("total_s", r["results"][n].get("fit_s", 0) + r["results"][n].get("score_s", 0))
               / r["points"] * 1000 for r in res["detection"] if "VUS-PR" in r["results"].get(n, {})]
        lines.append(f"| {n} | {np.mean(per):.2f} |" if per else f"| {n} | - |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nab", type=int, default=8, help="NAB series to include (name order)")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--quick", action="store_true", help="2 NAB series, 1 synthetic seed")
    ap.add_argument("--held-out", type=int, default=0, metavar="N",
                    help="detection only, on the N NAB series after the first --nab (series the development "
                         "runs never scored); results in series_held_out.json/.md")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    held = args.held_out > 0
    res = {"command": "python -m evals.series" + (" --quick" if args.quick else f" --nab {args.nab}")
           + (f" --held-out {args.held_out}" if held else ""),
           "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
           "detection": [], "mean_vus_pr": {}, "mean_range_f1": {}}

    def save(det: list[dict] | None = None) -> None:
        if det is not None:
            res["detection"] = det
            res["mean_vus_pr"] = {n: float(np.mean(v)) for n in [*OURS, *BASELINES]
                                  if (v := [r["results"][n]["VUS-PR"] for r in det if "VUS-PR" in r["results"][n]])}
            res["mean_range_f1"] = {n: float(np.mean(v)) for n in OURS
                                    if (v := [r["results"][n]["range-F1"] for r in det if "range-F1" in r["results"][n]])}
        res["seconds"] = time.perf_counter() - t0
        write_results("series_held_out" if held else "series", res, markdown(res))

    if held:
        res["synthetic"], res["throughput"] = {}, []
        detection(nab_series(args.held_out, skip=args.nab), args.epochs, save=save)
        print(markdown(res))
        return
    # explanations and throughput first (minutes), then the detection runs (the long part), saved as they go
    res["synthetic"] = synthetic_explanations(args.epochs, seeds=1 if args.quick else 2)
    res["throughput"] = throughput(args.epochs)
    save()
    detection(tsb_samples() + nab_series(2 if args.quick else args.nab), args.epochs, save=save)
    print(markdown(res))


if __name__ == "__main__":
    main()
