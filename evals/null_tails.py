"""Null tails: why the members' p-values stop short of what a batch of 10,000 needs.

On the calibration benchmark's synthetic data (six metrics driven by two Gaussian factors plus 0.1
noise; 600 training rows, cross calibration) each of the Ensemble's members is scored on 40,000
held-out normal rows and on 2,000 rows with one feature shifted by 15 robust sd. Measured per
detector, seed by seed:

- the tail of its normal scores: the 50%, 99% and 99.99% quantiles and the ratio of the last two;
- what drives that tail: the median factor norm |f| of the 0.1% highest-scoring normal rows (all
  rows: about 1.2), the share of them beyond the largest |f| among the training rows, and the rank
  correlation of score and |f| (a score of the distance off the factor plane alone would be
  uncorrelated with |f|);
- what the shifted rows get: the median p-value (the detector's own calibration, with its tail)
  and BH's power at 10 / 100 / 1,000 / 10,000 (``evals.calibration.evaluate``).

Beside them, a reference that is not a member: the squared residual off a 2-component PCA fitted on
the same 600 rows (the data's true rank, known here and not on real data), calibrated on its
out-of-fold residuals with the same ``Calibrator`` (conservative GPD tail). It shows what the same
calibration does with a score whose normal tail is light.

Run:  python -m evals.null_tails [--seeds 0,1,2]
Writes evals/results/null_tails.{json,md}.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from evals.calibration import BATCHES, SIZES, evaluate, shifted, synthetic
from evals.common import write_results

MEMBERS = ("autoencoder", "vae", "autoregressive")
N_TRAIN = SIZES["small"]
PCA_RANK = 2


def pca_reference(train: np.ndarray, seed: int, rank: int = PCA_RANK) -> tuple[Any, Any]:
    """(calibrator, score function) of the squared residual off a PCA of ``rank`` components,
    calibrated on 5-fold out-of-fold residuals of the training rows."""
    from sklearn.decomposition import PCA

    from anomalens.detectors import Calibrator

    def residual(model: Any, Z: np.ndarray) -> np.ndarray:
        return ((Z - model.inverse_transform(model.transform(Z))) ** 2).sum(axis=1)

    fold = np.random.default_rng(seed).permutation(len(train)) % 5
    oof = np.empty(len(train))
    for k in range(5):
        oof[fold == k] = residual(PCA(rank).fit(train[fold != k]), train[fold == k])
    final = PCA(rank).fit(train)
    return Calibrator(np.sort(oof)), lambda Z: residual(final, Z)


def measure(name: str, scores_normal: np.ndarray, scores_far: np.ndarray, cal: Any, f_held: np.ndarray,
            f_train: np.ndarray, seed: int, draws: int) -> dict[str, Any]:
    from scipy.stats import spearmanr

    r, r_max = np.linalg.norm(f_held, axis=1), np.linalg.norm(f_train, axis=1).max()
    top = np.argsort(scores_normal)[-max(1, len(scores_normal) // 1000):]
    q50, q99, q9999 = np.quantile(scores_normal, [0.5, 0.99, 0.9999])
    res = evaluate(cal, scores_normal, scores_far, draws, seed)
    return {"detector": name, "seed": seed, "q50": float(q50), "q99": float(q99), "q9999": float(q9999),
            "tail_ratio": float(q9999 / q99), "top_median_f": float(np.median(r[top])),
            "top_beyond_training_f": float((r[top] > r_max).mean()),
            "spearman_score_f": float(spearmanr(scores_normal, r).statistic),
            "far_p_median": res["min_p_far_median"], **{f"power@{m}": res[str(m)]["power"] for m in BATCHES},
            **{f"fdr@{m}": res[str(m)]["fdr"] for m in BATCHES}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--draws", type=int, default=400)
    args = ap.parse_args(argv)
    import torch

    from anomalens.detectors import make_detector

    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        pool, f_pool = synthetic(SIZES["large"], seed, factors=True)
        train, f_train = pool[:N_TRAIN], f_pool[:N_TRAIN]
        held, f_held = synthetic(40000, 10_000 + seed, factors=True)
        far = shifted(held[:2000], pool, seed)  # as evals.calibration shifts them
        for name in MEMBERS:
            det = make_detector(name, random_state=seed, calibration="cross").fit(train)
            rows.append(measure(name, det.decision_function(held), det.decision_function(far), det.calibrator,
                                f_held, f_train, seed, args.draws))
            print(rows[-1], flush=True)
        cal, score = pca_reference(train, seed)
        rows.append(measure(f"PCA residual, rank {PCA_RANK} (reference)", score(held), score(far), cal, f_held,
                            f_train, seed, args.draws))
        print(rows[-1], flush=True)
    names = list(dict.fromkeys(r["detector"] for r in rows))
    keys = [k for k in rows[0] if k not in ("detector", "seed")]
    summary = [{"detector": n, **{k: float(np.mean([r[k] for r in rows if r["detector"] == n])) for k in keys},
                "far_p_median_range": [float(min(r["far_p_median"] for r in rows if r["detector"] == n)),
                                       float(max(r["far_p_median"] for r in rows if r["detector"] == n))]}
               for n in names]
    write_results("null_tails", {"seeds": seeds, "n_train": N_TRAIN, "rows": rows, "summary": summary},
                  markdown(summary, seeds))


def markdown(summary: list[dict[str, Any]], seeds: list[int]) -> str:
    lines = [f"# Null tails: what limits the members' p-values ({N_TRAIN} training rows, cross calibration, "
             f"{len(seeds)} seed(s))", "",
             "Synthetic data of the calibration benchmark (two Gaussian factors, six metrics, 0.1 noise); 40,000 "
             "held-out normal rows, 2,000 rows with one feature shifted by 15 robust sd. Means over seeds. "
             "`|f|`: the norm of a row's two factors (its position along the normal plane; median of all rows "
             "about 1.2). The PCA row is a reference, not a member: the residual off the data's true rank, "
             "calibrated the same way.", "",
             "Command: `python -m evals.null_tails" + ("" if seeds == [0, 1, 2] else f" --seeds {','.join(map(str, seeds))}")
             + "`", "",
             "| detector | normal scores q50 / q99 / q99.99 | q99.99 / q99 | top 0.1% normal rows: median \\|f\\| | "
             "of them beyond the training rows' \\|f\\| | rank corr. score, \\|f\\| | shifted rows' median p | "
             + " | ".join(f"power @{m:,}" for m in BATCHES) + " |",
             "|" + "---|" * (7 + len(BATCHES))]
    for r in summary:
        lo, hi = r["far_p_median_range"]
        lines.append(f"| {r['detector']} | {r['q50']:.3g} / {r['q99']:.3g} / {r['q9999']:.3g} | {r['tail_ratio']:.1f} | "
                     f"{r['top_median_f']:.2f} | {r['top_beyond_training_f']:.2f} | {r['spearman_score_f']:.2f} | "
                     f"{r['far_p_median']:.1e} ({lo:.0e} to {hi:.0e}) | "
                     + " | ".join(f"{r[f'power@{m}']:.2f}" for m in BATCHES) + " |")
    lines += ["", "FDR on pure-normal batches at 10 / 100 / 1,000 / 10,000: "
              + "; ".join(f"{r['detector']} " + " / ".join(f"{r[f'fdr@{m}']:.3f}" for m in BATCHES) for r in summary)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
