"""Anomaly synthesis returns true ground truth: changed features changed, the others did not."""

from __future__ import annotations

import numpy as np
import pytest

from anomalens.data import ANOMALY_TYPES, synthesize
from anomalens.errors import InputError
from conftest import correlated


@pytest.mark.parametrize("kind", ANOMALY_TYPES)
def test_ground_truth_is_exact(kind):
    X = correlated(400, seed=0)
    s = synthesize(X, kind, 60, n_features=2, random_state=1)
    assert s.X.shape == (460, 6) and s.y.sum() == 60 and (s.kind[s.y == 1] == kind).all()
    np.testing.assert_array_equal(s.X[s.y == 0], X)  # normal rows untouched
    assert not s.changed[s.y == 0].any()
    diff = s.X != s.clean
    np.testing.assert_array_equal(diff, s.changed)  # changed exactly where the mask says
    assert (s.changed[s.y == 1].sum(axis=1) <= 2).all()
    if kind != "dependency":  # a donor row may share a value; the other kinds always change both
        assert (s.changed[s.y == 1].sum(axis=1) == 2).all()


def test_global_values_lie_outside_the_normal_range():
    X = correlated(400, seed=0)
    s = synthesize(X, "global", 50, n_features=1, random_state=2)
    lo, hi = X.min(axis=0), X.max(axis=0)
    vals = s.X[s.changed]
    cols = np.nonzero(s.changed)[1]
    assert ((vals < lo[cols]) | (vals > hi[cols])).all()


def test_dependency_keeps_marginals_in_range():
    X = correlated(400, seed=0)
    s = synthesize(X, "dependency", 50, n_features=2, random_state=3)
    cols = np.nonzero(s.changed)[1]
    vals = s.X[s.changed]
    assert ((vals >= X.min(axis=0)[cols]) & (vals <= X.max(axis=0)[cols])).all()


def test_clustered_rows_share_features_and_direction():
    X = correlated(400, seed=0)
    s = synthesize(X, "clustered", 20, n_features=2, cluster_size=10, keep_normal=False, random_state=4)
    first, second = s.changed[:10], s.changed[10:]
    assert (first == first[0]).all() and (second == second[0]).all()
    shift = (s.X - s.clean)[:10][first].reshape(10, 2)
    assert (np.sign(shift) == np.sign(shift[0])).all()


def test_detectable_by_a_detector(fitted):
    """Local and global injections are easy for a trained detector: a sanity check of the generator."""
    from sklearn.metrics import roc_auc_score

    det = fitted("vae")
    for kind in ("local", "global"):
        s = synthesize(correlated(300, seed=5), kind, 100, n_features=1, random_state=6)
        assert roc_auc_score(s.y, det.decision_function(s.X)) > 0.95


def test_bad_arguments():
    X = correlated(50, seed=0)
    with pytest.raises(InputError, match=r"kind must be one of \['local', 'global', 'dependency', 'clustered'\], got 'loc'"):
        synthesize(X, "loc", 5)
    with pytest.raises(InputError, match=r"n_features must be an int in \[1, 6\].*got 7"):
        synthesize(X, "local", 5, n_features=7)
    with pytest.raises(InputError, match="n_anomalies must be a positive int, got 0"):
        synthesize(X, "local", 0)
