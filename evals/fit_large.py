"""Fitting on 100,000 rows: the time of each step, the exemplar sample, and PyOD's AutoEncoder beside it.

Rows come from a nonlinear 8-factor model in 20 dimensions (plus noise). ``Investigator.fit``
keeps a k-means sample of at most ``max_exemplars`` exemplars (each with the number of training
rows it stands for) instead of every row. Measured:

- the whole fit, the detector's part and the exemplar step (embed, sample, store, coverage);
- PyOD's AutoEncoder fit on the same rows (library defaults), in the same process;
- how much further the nearest row a query returns is than the true nearest training row
  (embedding space, brute force over all training rows), as the median ratio over held-out normal
  rows and over anomalous rows (5 features shifted by 6 robust sd), and the fit's own estimate:
  with the two-stage retrieval (the store's nearest exemplars, then the member index's rows of
  their clusters) and with the nearest kept exemplar alone.

Run:  python -m evals.fit_large [--n 100000] [--detector vae|ensemble] [--max-exemplars 5000]
Writes evals/results/fit_large.{json,md} (vae) or fit_large_<detector>.{json,md}.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np

from evals.common import result_name, write_results


def factor_rows(n: int, seed: int, d: int = 20, k: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    W = np.random.default_rng(123).normal(size=(k, d)) / np.sqrt(k)
    f = rng.normal(size=(n, k))
    return np.tanh(f @ W) * 2 + 0.3 * (f @ W) ** 2 + 0.1 * rng.normal(size=(n, d))


def nn_ratio(inv, E_train: np.ndarray, Q: np.ndarray) -> float:
    from anomalens.store.coreset import nearest

    E_q = inv.detector.embed(Q).astype(np.float64)
    _, d_all = nearest(E_q, E_train.astype(np.float64))
    hits = inv.store.query(E_q, k=1)
    d_kept = np.array([h[0].distance for h in hits])
    ok = d_all > 0
    return float(np.median(d_kept[ok] / d_all[ok]))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--detector", default="vae")
    ap.add_argument("--max-exemplars", type=int, default=None)
    args = ap.parse_args(argv)
    from anomalens import Investigator
    from anomalens.detectors.base import robust_scale
    from anomalens.investigator import MAX_EXEMPLARS

    X = factor_rows(args.n, 0)
    held = factor_rows(500, 1)
    rng = np.random.default_rng(2)
    anomalous = held[:200].copy()
    scale = robust_scale(X)[1]
    for row in anomalous:
        j = rng.choice(X.shape[1], 5, replace=False)
        row[j] += 6 * scale[j] * rng.choice([-1, 1], 5)
    size = args.max_exemplars or MAX_EXEMPLARS
    inv = Investigator.fit(X, detector=args.detector, random_state=0, max_exemplars=size)
    E_train = inv.detector.embed(X)
    result = {
        "meta": {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, 2 cores", "n": args.n,
                 "d": X.shape[1], "detector": args.detector, "max_exemplars": size},
        "fit_s": inv.fit_seconds["total"], "detector_s": inv.fit_seconds["detector"],
        "exemplars_s": inv.fit_seconds["exemplars"], "exemplars": inv.store.count(),
        "coverage_estimate": inv.exemplar_coverage,
        "ratio_normal": nn_ratio(inv, E_train, held[200:]), "ratio_anomalous": nn_ratio(inv, E_train, anomalous),
        "members": len(inv.store.members) if inv.store.members is not None else 0,
    }
    members, source = inv.store.members, inv.store.member_source
    inv.store.attach_members(None)  # the exemplar sample alone
    result["exemplar_only_ratio_normal"] = nn_ratio(inv, E_train, held[200:])
    result["exemplar_only_ratio_anomalous"] = nn_ratio(inv, E_train, anomalous)
    inv.store.attach_members(members, source=source)
    from pyod.models.auto_encoder import AutoEncoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        AutoEncoder(random_state=0, verbose=0).fit(X)
        result["pyod_autoencoder_fit_s"] = time.perf_counter() - t0
    r = result
    md = (f"# Fit on {args.n:,} x {X.shape[1]} rows ({args.detector}, at most {size:,} exemplars)\n\n"
          f"Command: `python -m evals.fit_large --n {args.n} --detector {args.detector}`; {r['meta']['machine']}, "
          f"{r['meta']['date']}.\n\n"
          "| step | seconds |\n|---|---:|\n"
          f"| anomalens fit, total | {r['fit_s']:.1f} |\n| of which the detector | {r['detector_s']:.1f} |\n"
          f"| of which the exemplar step (embed, k-means sample, store, coverage) | {r['exemplars_s']:.1f} |\n"
          f"| PyOD AutoEncoder fit (defaults), same rows | {r['pyod_autoencoder_fit_s']:.1f} |\n\n"
          f"{r['exemplars']:,} exemplars kept in the vector store, {r['members']:,} training rows in the member index. "
          "Nearest row a query returns / true nearest training row (embedding distance, median):\n\n"
          "| queries | exemplars, then their clusters' rows (default) | nearest exemplar alone |\n|---|---:|---:|\n"
          f"| held-out normal rows | {r['ratio_normal']:.2f} | {r['exemplar_only_ratio_normal']:.2f} |\n"
          f"| anomalous rows (5 features, 6 sd) | {r['ratio_anomalous']:.2f} | {r['exemplar_only_ratio_anomalous']:.2f} |\n"
          f"| the fit's own estimate (training rows left out) | {r['coverage_estimate']:.2f} | |\n")
    write_results(result_name("fit_large", args.detector), result, md)
    return result


if __name__ == "__main__":
    main()
