"""Linear member prototype: what a PCA-residual voice would cost the Ensemble's ranking.

``evals.null_tails`` shows that a residual off a linear fit of the normal rows has a light normal
tail and carries the batch-power target the members miss. Before such a member joins the default,
its price in AUROC: on ADBench sets (semi-supervised split, seed 0, at most 5,000 training and test
rows, as ``evals.tabular --all``) the Ensemble of the three generative members (the default then) is
fitted, and its members' conformal p-values of the test rows are Cauchy-combined (truncated at 1/2,
as ``Ensemble`` does) with and without a fourth p-value: the squared residual of the robust-scaled
row off a PCA of the training rows, with the fewest components that explain 95% of their variance
(at most d - 1), calibrated by ``Calibrator`` on 5-fold out-of-fold residuals. A measurement made
before the package had such a member; the ``PCA`` detector that joined the default Ensemble
afterwards whitens each discarded direction instead of summing raw squared residuals
(``anomalens/detectors/pca.py``), and its price was measured on all 33 sets
(``evals/results/tabular_all.md``).

Run:  python -m evals.linear_member [--sets landsat,vertebral,...]
Writes evals/results/linear_member.{json,md}.
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

import numpy as np

from evals.common import write_results

SETS = ("landsat", "vertebral", "Pima", "glass", "wine", "Hepatitis", "breastw", "WBC", "thyroid", "annthyroid",
        "satellite", "pendigits", "shuttle", "magic.gamma")
VARIANCE = 0.95
THREE = ("autoencoder", "vae", "autoregressive")  # the default Ensemble's members when this was measured


def pca_pvalues(train: np.ndarray, test: np.ndarray, seed: int) -> tuple[np.ndarray, int]:
    """(p-values of the test rows' PCA residual, the number of components)."""
    from sklearn.decomposition import PCA

    from anomalens.detectors.base import robust_scale
    from evals.null_tails import pca_reference

    center, scale = robust_scale(train)
    Z, T = (train - center) / scale, (test - center) / scale
    explained = np.cumsum(PCA().fit(Z).explained_variance_ratio_)
    k = int(min(np.searchsorted(explained, VARIANCE) + 1, Z.shape[1] - 1))
    calibrator, score = pca_reference(Z, seed, rank=k)
    return calibrator.pvalues(score(T)), k


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(SETS))
    args = ap.parse_args(argv)
    import torch
    from sklearn.metrics import roc_auc_score

    from anomalens.data import load_adbench, semi_supervised_split
    from anomalens.detectors import make_detector
    from anomalens.detectors.ensemble import cauchy_combine
    from evals.tabular import subsample

    torch.set_num_threads(1)
    rows = []
    for name in args.sets.split(","):
        t0 = time.perf_counter()
        X, y = load_adbench(name)
        train, test, y_test = subsample(*semi_supervised_split(X, y, 0), 5000, 5000, 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ens = make_detector("ensemble", detectors=THREE, random_state=0).fit(train)
            own = ens.decision_function(test)
            members = np.stack(list(ens.member_pvalues(test).values()))
        p_lin, k = pca_pvalues(train, test, 0)
        rows.append({"set": name, "d": int(X.shape[1]), "components": k, "n_train": len(train),
                     "ensemble": float(roc_auc_score(y_test, own)),
                     "three_members": float(roc_auc_score(y_test, cauchy_combine(members, truncate=0.5))),
                     "with_linear": float(roc_auc_score(y_test, cauchy_combine(np.vstack([members, p_lin[None]]),
                                                                              truncate=0.5))),
                     "linear_alone": float(roc_auc_score(y_test, -np.log(p_lin))), "seconds": time.perf_counter() - t0})
        print(rows[-1], flush=True)
    diff = [r["with_linear"] - r["three_members"] for r in rows]
    summary = {"mean_three": float(np.mean([r["three_members"] for r in rows])),
               "mean_with_linear": float(np.mean([r["with_linear"] for r in rows])),
               "mean_linear_alone": float(np.mean([r["linear_alone"] for r in rows])),
               "worst_change": float(min(diff)), "best_change": float(max(diff)),
               "sets_lower": int(sum(d < -0.0005 for d in diff)), "sets_higher": int(sum(d > 0.0005 for d in diff))}
    write_results("linear_member", {"sets": [r["set"] for r in rows], "variance": VARIANCE, "rows": rows,
                                    "summary": summary}, markdown(rows, summary, args.sets))


def markdown(rows: list[dict[str, Any]], s: dict[str, Any], sets: str) -> str:
    cmd = "python -m evals.linear_member" + ("" if sets == ",".join(SETS) else f" --sets {sets}")
    lines = ["# Linear member prototype: AUROC of the Ensemble's combination with a PCA-residual p-value", "",
             f"Semi-supervised split, seed 0, at most 5,000 training / test rows; PCA on robust-scaled training rows "
             f"with the fewest components explaining {VARIANCE:.0%} of the variance (at most d - 1), calibrated on "
             "5-fold out-of-fold residuals. `three members`: the Cauchy combination of the three-member Ensemble's member "
             "p-values (its own ranking); `with linear`: the same with the PCA p-value as a fourth.", "",
             f"Command: `{cmd}`", "",
             f"Mean AUROC over {len(rows)} sets: three members {s['mean_three']:.3f}, with linear "
             f"{s['mean_with_linear']:.3f}, linear alone {s['mean_linear_alone']:.3f}; change per set from "
             f"{s['worst_change']:+.3f} to {s['best_change']:+.3f} ({s['sets_lower']} lower, {s['sets_higher']} higher).",
             "", "| set | d | components | Ensemble (its score) | three members | with linear | linear alone |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['set']} | {r['d']} | {r['components']} | {r['ensemble']:.3f} | {r['three_members']:.3f} | "
                     f"{r['with_linear']:.3f} | {r['linear_alone']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
