"""Split-conformal calibration of anomaly scores.

A detector holds out part of its normal training data; the scores of those held-out rows are the
calibration set. For a new score ``s`` the conformal p-value is

    p(s) = (1 + #{calibration scores >= s}) / (n_cal + 1)

which, for a new normal row exchangeable with the calibration rows, satisfies
P(p <= alpha) <= alpha (Vovk et al., 2005; Bates et al., "Testing for outliers with conformal
p-values", Ann. Statist. 2023). The p-values of a batch share one calibration set and are
positively dependent (PRDS), so the Benjamini-Hochberg procedure controls the false discovery rate.
"""

from __future__ import annotations

import numpy as np

from anomalens.detectors._validation import check_probability
from anomalens.errors import InputError

__all__ = ["conformal_pvalues", "benjamini_hochberg", "score_threshold"]


def conformal_pvalues(calibration_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Conformal p-values of ``scores`` against ``calibration_scores`` (higher score = more anomalous).

    Args:
        calibration_scores: (n_cal,) scores of held-out normal rows.
        scores: (n,) scores to test.

    Returns:
        (n,) p-values in [1 / (n_cal + 1), 1].
    """
    cal = np.sort(np.asarray(calibration_scores, dtype=np.float64))
    if cal.size == 0:
        raise InputError("calibration_scores must hold at least one score, got 0")
    s = np.asarray(scores, dtype=np.float64)
    n_ge = cal.size - np.searchsorted(cal, s, side="left")  # number of calibration scores >= s
    return (1.0 + n_ge) / (cal.size + 1.0)


def benjamini_hochberg(pvalues: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Reject the hypotheses "this row is normal" while controlling the FDR at ``alpha``.

    Args:
        pvalues: (n,) p-values.
        alpha: target false discovery rate.

    Returns:
        (n,) int array, 1 where the row is declared anomalous.
    """
    alpha = check_probability(alpha, "alpha")
    p = np.asarray(pvalues, dtype=np.float64)
    n = p.size
    if n == 0:
        return np.zeros(0, dtype=int)
    order = np.argsort(p, kind="stable")
    below = p[order] <= alpha * np.arange(1, n + 1) / n
    flags = np.zeros(n, dtype=int)
    if below.any():
        k = int(np.nonzero(below)[0].max())  # largest rank that passes; all smaller ranks are rejected
        flags[order[: k + 1]] = 1
    return flags


def score_threshold(calibration_scores: np.ndarray, alpha: float) -> float:
    """The smallest score whose p-value is below ``alpha`` (inf when no score can reach it)."""
    alpha = check_probability(alpha, "alpha")
    cal = np.sort(np.asarray(calibration_scores, dtype=np.float64))
    n = cal.size
    # p(s) < alpha  <=>  #{cal >= s} < alpha (n + 1) - 1  <=>  s > cal[n - m] with m = ceil(alpha (n+1) - 1)
    m = int(np.ceil(alpha * (n + 1) - 1))
    if m <= 0:
        return float("inf")
    if m > n:
        return float("-inf")
    return float(np.nextafter(cal[n - m], np.inf))
