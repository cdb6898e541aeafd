"""PCA, the linear-Gaussian detector: the subspace it keeps, exact and degenerate structure, and the
light tail of its normal scores that lets a batch verdict reach a row that leaves the subspace."""

from __future__ import annotations

import numpy as np
import pytest

from anomalens.detectors import PCA, benjamini_hochberg, make_detector
from anomalens.detectors.base import robust_scale
from anomalens.errors import ConfigError
from conftest import correlated


def shift_rows(rows: np.ndarray, ref: np.ndarray, seed: int, sd: float = 15.0) -> tuple[np.ndarray, np.ndarray]:
    """Each row with one random feature moved by ``sd`` robust standard deviations; (rows, features)."""
    rng = np.random.default_rng(seed)
    out = rows.copy()
    j = rng.integers(0, rows.shape[1], size=len(rows))
    out[np.arange(len(rows)), j] += rng.choice([-1.0, 1.0], size=len(rows)) * sd * robust_scale(ref)[1][j]
    return out, j


def test_keeps_the_rank_of_the_data():
    det = PCA(random_state=0).fit(correlated(600, seed=0))  # two factors plus 10% noise
    assert det.n_components_ == 2 and det.history_["explained"] >= 0.95
    assert det.embed(correlated(5, seed=1)).shape == (5, 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_15_sd_row_is_flagged_at_every_batch_size_from_600_rows(seed):
    """The issue's power target for a detector whose normal scores are light-tailed: with 600 training
    rows (cross calibration, 600 scores) the tail reaches a 15-sd row in batches up to 10,000, and
    pure-normal batches stay within FDR."""
    train = correlated(600, seed=seed)
    det = make_detector("pca", random_state=seed).fit(train)
    assert det.calibration_mode_ == "cross" and det.calibrator.extends
    held = correlated(20000, seed=100 + seed)
    far, _ = shift_rows(correlated(300, seed=200 + seed), train, seed)
    p_normal, p_far = det.pvalues(held), det.pvalues(far)
    assert det.calibrator.approximate(det.decision_function(far)).all()  # beyond every calibration score
    rng = np.random.default_rng(seed)
    draws = 150
    for m in (10, 100, 1000, 10000):
        false = hit = 0
        for i in range(draws):
            batch = p_normal[rng.integers(0, len(p_normal), size=m)]
            false += bool(benjamini_hochberg(batch, 0.05).any())
            batch[0] = p_far[i % len(p_far)]
            hit += bool(benjamini_hochberg(batch, 0.05)[0])
        assert hit / draws >= 0.99, (m, hit / draws)
        # one calibration set: its level at p <= 0.005 (what a batch of 10 needs) varies by about
        # sqrt(3) / 600 around 0.005, so allow 0.05 + 4 binomial standard errors of the draws
        assert false / draws <= 0.05 + 4 * np.sqrt(0.05 * 0.95 / draws), (m, false / draws)


def test_attribution_and_restoration_find_the_moved_feature():
    train = correlated(1500, seed=0)
    det = PCA(random_state=0).fit(train)
    far, moved = shift_rows(correlated(200, seed=5), train, seed=5, sd=8.0)
    att = det.explain(far)
    assert (att.top(1)[:, 0] == moved).mean() >= 0.95
    np.testing.assert_allclose(att.values.sum(axis=1), det.decision_function(far), rtol=1e-4)
    restored = det.restore(far)
    rows = np.arange(len(far))
    # the moved feature comes back to within 2 robust sd of where it was; the others are kept
    scale = robust_scale(train)[1]
    before = correlated(200, seed=5)
    assert (np.abs(restored[rows, moved] - before[rows, moved]) / scale[moved] < 2).mean() >= 0.9
    assert np.median(det.decision_function(restored)) < np.median(det.decision_function(before)) * 2


def test_exact_collinearity_and_constant_columns_do_not_divide_by_noise():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(800, 2))
    X = np.column_stack([f[:, 0], f[:, 1], f[:, 0] + f[:, 1], np.full(800, 7.0), f[:, 0] - 2 * f[:, 1]])
    det = PCA(random_state=0).fit(X)
    normal = X[:50] + 1e-9 * rng.normal(size=(50, 5))  # float noise is not an anomaly
    assert np.isfinite(det.decision_function(normal)).all()
    assert (det.pvalues(normal) > 0.001).all()
    broken = X[:20].copy()
    broken[:, 2] += 3.0  # the exact sum no longer holds
    # beyond every calibration score (p at or below the exact floor 1/801; whether a tail extends it
    # depends on the float noise the calibration scores are made of)
    assert (det.pvalues(broken) <= 1 / 801 + 1e-12).all()
    assert det.decision_function(broken).min() > 30 * det.calibration_scores_.max()
    assert set(det.explain(broken).top(1)[:, 0]) <= {0, 1, 2}


def test_one_feature_keeps_no_component_and_scores_the_standardised_distance():
    rng = np.random.default_rng(0)
    X = rng.normal(10.0, 2.0, size=(500, 1))
    det = PCA(random_state=0).fit(X)
    assert det.n_components_ == 0 and det.embed(X[:3]).shape == (3, 1)
    s = det.decision_function(np.array([[10.0], [14.0], [40.0]]))
    assert s[0] < s[1] < s[2] and det.pvalues(np.array([[40.0]]))[0] < 1e-3  # 15 sd, beyond all 500 rows


@pytest.mark.parametrize("bad, match", [({"variance": 1.0}, "variance must be a number in \\(0, 1\\), got 1.0"),
                                        ({"variance": "high"}, "variance must be a finite number, got 'high'"),
                                        ({"robust_rounds": -1}, "robust_rounds must be an int >= 0, got -1"),
                                        ({"epochs": 5}, "unknown parameter\\(s\\) \\['epochs'\\]")])
def test_bad_parameters_are_named(bad, match):
    with pytest.raises(ConfigError, match=match):
        PCA(**bad).fit(correlated(50, seed=0))
