"""Anomaly synthesis with ground truth: which rows were changed, and which of their features.

The four anomaly types of ADBench (Han et al., "ADBench: Anomaly Detection Benchmark", NeurIPS
2022) are generated there as whole new rows. To score *explanations* we need to know which features
make a row anomalous, so here each type changes a chosen subset S of the features of a real normal
row and keeps the others:

- ``local``: each feature in S moves by 3 to 6 robust standard deviations (random sign) from the
  row's own value: a moderate deviation that a good model notices next to the other features.
- ``global``: each feature in S is drawn uniformly from outside the normal range, between 10% and
  100% of the range beyond the training minimum or maximum.
- ``dependency``: the features in S are copied from another random normal row: every marginal stays
  normal, only the relation to the other features breaks (the hardest type; can be undetectable when
  the features are independent).
- ``clustered``: rows come in groups that share one shift direction on S (6 robust sd plus a little
  noise): a small cluster of anomalies, which density models may find dense.

Robust standard deviations are IQR / 1.349 of the reference rows (std where the IQR is zero).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anomalens.detectors import check_matrix, check_positive_int
from anomalens.detectors.base import robust_scale
from anomalens.errors import InputError

__all__ = ["ANOMALY_TYPES", "Synthesized", "synthesize"]

ANOMALY_TYPES = ("local", "global", "dependency", "clustered")


@dataclass(frozen=True)
class Synthesized:
    """Rows with injected anomalies and their ground truth.

    Attributes:
        X: (n, d) rows: the first ``n - n_anomalies`` untouched, the rest anomalous.
        y: (n,) 1 for an injected row.
        changed: (n, d) bool, True where a feature was changed (all False on normal rows).
        clean: (n, d) the rows before injection (equal to X on normal rows).
        kind: (n,) the anomaly type of each row ("" for normal rows).
    """

    X: np.ndarray
    y: np.ndarray
    changed: np.ndarray
    clean: np.ndarray
    kind: np.ndarray


def synthesize(
    X_normal,
    kind: str,
    n_anomalies: int,
    *,
    n_features: int = 2,
    reference=None,
    keep_normal: bool = True,
    cluster_size: int = 10,
    random_state: int | None = 0,
) -> Synthesized:
    """Inject ``n_anomalies`` anomalies of one ``kind`` into copies of rows of ``X_normal``.

    Args:
        X_normal: (n, d) normal rows to copy from (DataFrame or array).
        kind: one of ``ANOMALY_TYPES``.
        n_anomalies: how many anomalous rows to make.
        n_features: how many features each anomaly changes (|S|).
        reference: rows that define "normal" scales and ranges (default ``X_normal``; pass the
            training rows when ``X_normal`` is a test split).
        keep_normal: also return the untouched rows of ``X_normal`` (labelled 0) before the anomalies.
        cluster_size: rows per group for ``clustered``.
        random_state: seed.

    Returns:
        Synthesized rows with labels, changed-feature masks and the clean rows.
    """
    X, _ = check_matrix(X_normal, name="X_normal", min_rows=2)
    ref = X if reference is None else check_matrix(reference, name="reference", n_features=X.shape[1])[0]
    if kind not in ANOMALY_TYPES:
        raise InputError(f"kind must be one of {list(ANOMALY_TYPES)}, got {kind!r}")
    n_anomalies = check_positive_int(n_anomalies, "n_anomalies")
    n, d = X.shape
    if not isinstance(n_features, (int, np.integer)) or not 1 <= n_features <= d:
        raise InputError(f"n_features must be an int in [1, {d}] (the number of columns), got {n_features!r}")
    rng = np.random.default_rng(random_state)
    sd = robust_scale(ref)[1]
    lo, hi = ref.min(axis=0), ref.max(axis=0)
    span = np.where(hi > lo, hi - lo, sd)

    base = X[rng.integers(0, n, size=n_anomalies)].copy()
    clean = base.copy()
    subsets = np.array([rng.choice(d, n_features, replace=False) for _ in range(n_anomalies)])
    rows = np.arange(n_anomalies)[:, None]
    if kind == "local":
        mag = rng.uniform(3.0, 6.0, size=subsets.shape) * rng.choice([-1.0, 1.0], size=subsets.shape)
        base[rows, subsets] += mag * sd[subsets]
    elif kind == "global":
        frac = rng.uniform(0.1, 1.0, size=subsets.shape)
        above = rng.random(size=subsets.shape) < 0.5
        base[rows, subsets] = np.where(above, hi[subsets] + frac * span[subsets], lo[subsets] - frac * span[subsets])
    elif kind == "dependency":
        donors = ref[rng.integers(0, len(ref), size=n_anomalies)]
        base[rows, subsets] = donors[rows, subsets]
    else:  # clustered: groups share one subset and one shift direction
        cluster_size = check_positive_int(cluster_size, "cluster_size")
        for start in range(0, n_anomalies, cluster_size):
            grp = slice(start, min(start + cluster_size, n_anomalies))
            subsets[grp] = subsets[start]
            direction = rng.choice([-1.0, 1.0], size=n_features) * 6.0
            noise = 0.3 * rng.normal(size=(grp.stop - grp.start, n_features))
            base[rows[grp], subsets[grp]] += (direction + noise) * sd[subsets[start]]
    changed = np.zeros((n_anomalies, d), dtype=bool)
    changed[rows, subsets] = True
    changed &= base != clean  # a dependency donor can share a value: then that feature did not change
    kinds = np.full(n_anomalies, kind, dtype=object)
    if keep_normal:
        return Synthesized(
            X=np.vstack([X, base]),
            y=np.r_[np.zeros(n, dtype=int), np.ones(n_anomalies, dtype=int)],
            changed=np.vstack([np.zeros((n, d), dtype=bool), changed]),
            clean=np.vstack([X, clean]),
            kind=np.r_[np.full(n, "", dtype=object), kinds],
        )
    return Synthesized(base, np.ones(n_anomalies, dtype=int), changed, clean, kinds)
