"""Conformal p-values and FDR control."""

from __future__ import annotations

import numpy as np
import pytest

from anomalens.detectors import conformal_pvalues, make_detector
from anomalens.detectors.calibration import benjamini_hochberg, score_threshold
from conftest import correlated, detector_names


def test_pvalue_formula():
    cal = np.array([1.0, 2.0, 3.0, 4.0])
    # (1 + #{cal >= s}) / (n + 1)
    np.testing.assert_allclose(conformal_pvalues(cal, [0.5, 2.0, 2.5, 4.0, 9.0]), [5 / 5, 4 / 5, 3 / 5, 2 / 5, 1 / 5])


def test_threshold_matches_predict():
    rng = np.random.default_rng(0)
    cal = rng.normal(size=999)
    for alpha in (0.01, 0.05, 0.2):
        t = score_threshold(cal, alpha)
        assert conformal_pvalues(cal, [t])[0] < alpha
        assert conformal_pvalues(cal, [np.nextafter(t, -np.inf)])[0] >= alpha


def test_benjamini_hochberg_known_case():
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216])
    # BH at 0.05 with n = 10: thresholds 0.005, 0.010, 0.015, ...: the first two pass
    np.testing.assert_array_equal(benjamini_hochberg(p, 0.05), [1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    assert benjamini_hochberg(np.full(5, 0.9), 0.05).sum() == 0


@pytest.mark.parametrize("name", detector_names())
def test_false_positive_rate_on_held_out_normals(name, fitted):
    """On fresh normal rows, predict(alpha=0.05) flags at most 5% plus sampling tolerance."""
    det = fitted(name)
    normal = correlated(4000, seed=11)
    n_cal = len(det.calibration_scores_)
    fpr = det.predict(normal, alpha=0.05).mean()
    # The FPR conditional on one calibration set is Beta-distributed around alpha with sd
    # ~ sqrt(alpha (1 - alpha) / n_cal); allow 3 sd of that plus 3 sd of the test sampling.
    tol = 3 * np.sqrt(0.05 * 0.95 / n_cal) + 3 * np.sqrt(0.05 * 0.95 / len(normal))
    assert fpr <= 0.05 + tol
    assert fpr > 0.0  # a test that flags nothing would pass trivially


def test_false_positive_rate_averages_to_alpha(train_data):
    """Over independent calibration draws the marginal FPR is at most alpha (the conformal guarantee)."""
    normal = correlated(3000, seed=12)
    rates = [make_detector("autoencoder", random_state=s, epochs=15).fit(train_data).predict(normal, alpha=0.1).mean()
             for s in range(4)]
    assert np.mean(rates) <= 0.1 + 0.02


def test_fdr_controlled_batch(fitted):
    """BH over a mixed batch: the share of false discoveries stays near or below the target."""
    from test_contract import inject

    det = fitted("autoencoder")
    normal = correlated(2000, seed=13)
    anomalous, _ = inject(correlated(200, seed=14), seed=1)
    X = np.vstack([normal, anomalous])
    flags = det.predict_fdr(X, alpha=0.1)
    discoveries = flags.sum()
    false = flags[: len(normal)].sum()
    assert discoveries >= 150
    assert false / discoveries <= 0.15
