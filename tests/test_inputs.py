"""Bad input raises InputError / NotFittedError / CheckpointError with messages that say what and why."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from anomalens.detectors import AutoEncoder, VAE, load, make_detector
from anomalens.errors import CheckpointError, ConfigError, InputError, NotFittedError


@pytest.fixture(scope="module")
def det(fitted):
    return fitted("autoencoder")


def test_wrong_column_count(det, test_normal):
    with pytest.raises(InputError, match=r"must have 6 features \(as in fit\), got 5"):
        det.decision_function(test_normal[:, :5])


@pytest.mark.parametrize("bad, where", [(np.nan, "row 3, column 1"), (np.inf, "row 3, column 1")])
def test_non_finite(det, test_normal, bad, where):
    X = test_normal.copy()
    X[3, 1] = bad
    with pytest.raises(InputError, match=f"must be finite.*1 non-finite value.*{where}"):
        det.decision_function(X)


def test_non_finite_names_the_column_of_a_frame(train_data):
    frame = pd.DataFrame(train_data, columns=list("abcdef"))
    frame.loc[7, "c"] = np.nan
    with pytest.raises(InputError, match="row 7, column 'c'"):
        AutoEncoder(epochs=1).fit(frame)


def test_non_numeric_array(det):
    with pytest.raises(InputError, match="must be numeric.*got dtype <U"):
        det.decision_function(np.array([["a"] * 6]))


def test_non_numeric_column(train_data):
    frame = pd.DataFrame(train_data, columns=list("abcdef"))
    frame["f"] = "text"
    with pytest.raises(InputError, match=r"non-numeric column\(s\) 'f'"):
        AutoEncoder(epochs=1).fit(frame)


def test_wrong_columns_by_name(train_data):
    det = AutoEncoder(epochs=1).fit(pd.DataFrame(train_data, columns=list("abcdef")))
    with pytest.raises(InputError, match=r"missing \['f'\], unexpected \['z'\]"):
        det.decision_function(pd.DataFrame(train_data[:3], columns=list("abcdez")))


def test_empty(det):
    with pytest.raises(InputError, match=r"at least 1 row.*got shape \(0, 6\)"):
        det.decision_function(np.empty((0, 6)))


def test_none(det):
    with pytest.raises(InputError, match="got None"):
        det.decision_function(None)


def test_one_dimensional(det, test_normal):
    with pytest.raises(InputError, match=r"must be 2-D.*1-D array of shape \(6,\).*reshape\(1, -1\)"):
        det.decision_function(test_normal[0])


def test_ragged(det):
    with pytest.raises(InputError, match="rectangular"):
        det.decision_function([[1.0, 2.0], [1.0]])


def test_too_few_rows_to_fit():
    with pytest.raises(InputError, match="at least 4 row"):
        AutoEncoder().fit(np.ones((3, 2)))


def test_not_fitted():
    with pytest.raises(NotFittedError, match="VAE is not fitted yet; call fit first"):
        VAE().decision_function(np.ones((2, 2)))
    with pytest.raises(NotFittedError):
        VAE().save("/tmp/never")


def test_bad_alpha(det, test_normal):
    with pytest.raises(InputError, match=r"alpha must be a number in \(0.0, 1.0\), got 1.5"):
        det.predict(test_normal, alpha=1.5)


def test_unknown_parameter_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['epoch'\]; valid parameters are \[.*'epochs'"):
        VAE(epoch=3)


def test_unknown_detector_lists_valid_ones():
    with pytest.raises(InputError, match=r"unknown detector 'vea'; valid detectors are \[.*'vae'"):
        make_detector("vea")


def test_invalid_hyper_parameter_fails_at_fit_not_init(train_data):
    det = VAE(epochs=0)  # __init__ only stores
    with pytest.raises(ConfigError, match="epochs must be a positive int, got 0"):
        det.fit(train_data)


def test_corrupted_weights(det, tmp_path):
    det.save(tmp_path / "m")
    (tmp_path / "m" / "weights.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="weights.safetensors is corrupted"):
        load(tmp_path / "m")


def test_corrupted_config(det, tmp_path):
    det.save(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is corrupted"):
        load(tmp_path / "m")


def test_truncated_weights(det, tmp_path):
    det.save(tmp_path / "m")
    w = tmp_path / "m" / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    with pytest.raises(CheckpointError):
        load(tmp_path / "m")


def test_weights_of_another_shape(det, tmp_path):
    det.save(tmp_path / "m")
    cfg = tmp_path / "m" / "config.json"
    meta = json.loads(cfg.read_text())
    meta["params"]["latent_dim"] = 17
    cfg.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="weights do not match"):
        load(tmp_path / "m")


def test_file_of_another_class(det, tmp_path):
    det.save(tmp_path / "m")
    with pytest.raises(CheckpointError, match="holds a AutoEncoder detector, not a VAE"):
        VAE.load(tmp_path / "m")


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="is not a saved detector"):
        load(tmp_path / "nothing")


def test_too_few_rows_for_an_ensemble_names_its_own_minimum():
    """An Ensemble's members train on what its calibration leaves: 4 rows used to reach a member as 3
    and fail with 'got shape (3, 3)', rows the user never gave."""
    from anomalens.detectors import Ensemble

    X = np.random.default_rng(0).normal(size=(4, 3))
    with pytest.raises(InputError, match=r"X must have at least 5 row\(s\).*got shape \(4, 3\)"):
        Ensemble(member_params={"epochs": 1}).fit(X)


@pytest.mark.parametrize("n", [4, 7])
def test_a_larger_calibration_size_raises_the_minimum_and_says_so(n):
    """With calibration_size=0.5 an Ensemble of 5-7 rows left its members 3 and failed with a
    member's 'got shape (3, 3)'; the minimum the ensemble states is now the one that fits (8)."""
    from anomalens.detectors import Ensemble

    X = np.random.default_rng(0).normal(size=(8, 3))
    ens = Ensemble(calibration="split", calibration_size=0.5, member_params={"epochs": 1})
    assert ens.fewest_fit_rows() == 8 and Ensemble().fewest_fit_rows() == 5
    with pytest.raises(InputError, match=rf"at least 8 row\(s\) for calibration_size=0.5 .*got shape \({n}, 3\)"):
        ens.fit(X[:n])
    assert ens.fit(X).calibration_scores_.size == 4


@pytest.mark.parametrize("unit", [1e-13, 1e-30, 1e20])
def test_verdicts_do_not_depend_on_the_unit(unit):
    """A column in small units (capacitances in farads) used to count as constant (its spread under an
    absolute 1e-12), so every row scored alike: normal rows got p = 1/(n+1) and a far row went unseen."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4)) @ rng.normal(size=(4, 4)) + 5
    rows = np.r_[X[-3:], X[:1] + [30.0, 0.0, 0.0, 0.0]]
    ref = make_detector("autoencoder", random_state=0, epochs=10).fit(X).pvalues(rows)
    p = make_detector("autoencoder", random_state=0, epochs=10).fit(X * unit).pvalues(rows * unit)
    np.testing.assert_allclose(p, ref, rtol=1e-6)
    assert p[-1] < 0.01 < p[:3].min()


def test_a_constant_column_of_large_values_is_not_thrown_out_by_float_noise():
    """A column constant at 1e20 (ids, epoch nanoseconds) used to be divided by 1: a new value one
    ulp (16,384) off the constant was 16,384 units out, and decided the verdict."""
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=(300, 3)) @ rng.normal(size=(3, 3)), np.full(300, 1e20)])
    det = make_detector("autoencoder", random_state=0, epochs=10).fit(X)
    rows = X[:20].copy()
    rows[:, 3] = np.nextafter(1e20, np.inf)
    assert det.pvalues(rows).min() > 0.01


def test_series_units_do_not_set_the_ranking_or_the_injected_size():
    """A series channel in small units (1e-15) had its 1%-99% range floored at an absolute 1e-12, so
    its deviations ranked last in a restoration; and ``inject_series`` floored its robust sd at 1e-6,
    so a 'spike' there was 10^10 of its own sds. Both now scale with the channel."""
    from anomalens.data.series_synthesis import inject_series
    from anomalens.modalities import SeriesModality

    rng = np.random.default_rng(0)
    V = rng.normal(size=(500, 3)).cumsum(axis=0) * 0.1 + rng.normal(size=(500, 3))
    small = V * np.array([1.0, 1e-15, 1.0])
    m_ref, m_small = SeriesModality(window=16), SeriesModality(window=16)
    m_ref.fit_profile(V)
    m_small.fit_profile(small)
    np.testing.assert_allclose(m_small.spreads(), m_ref.spreads() * [1.0, 1e-15, 1.0], rtol=1e-12)
    const = SeriesModality(window=16)
    const.fit_profile(np.column_stack([V[:, 0], np.zeros(500), np.full(500, 1e20)]))
    assert const.spreads()[1] == 1.0 and 1.0 <= const.spreads()[2] < 1e7  # constant: max(noise, 1)
    ref, mask_ref, _ = inject_series(V, ["spike"] * 3, n_channels=3, seed=1)
    out, mask, _ = inject_series(small, ["spike"] * 3, n_channels=3, seed=1)
    assert np.array_equal(mask, mask_ref)
    np.testing.assert_allclose((out - small)[:, 1], (ref - V)[:, 1] * 1e-15, rtol=1e-9, atol=0)


def test_the_flow_scores_rows_far_outside_the_data_finitely_and_in_order(fitted, test_normal):
    """A row far outside the training data has a finite base-space code whose square passed float32's
    range: NormalizingFlow scored it inf (7 held-out cardio rows, seed 1), so such rows had no order
    among them and AUROC was undefined. The likelihood is summed in float64 now."""
    det = fitted("flow")
    rows = np.vstack([test_normal[0] + k for k in (1e3, 1e8, 1e15, 1e20, 1e25)])
    s = det.decision_function(rows)
    assert np.isfinite(s).all() and np.all(np.diff(s) > 0), s
    p = det.pvalues(rows)
    assert np.isfinite(p).all() and np.all((p >= 0) & (p <= 1)) and np.all(np.diff(p) <= 0)


@pytest.mark.parametrize("name", ["ganomaly", "autoregressive", "pca"])
def test_every_score_is_finite_and_ordered_far_outside_the_data(fitted, test_normal, name):
    """Issue 40 #5, the class: GANomaly, the autoregressive model and PCA overflowed to inf on rows
    1e20 out, so p-values and AUROC had no order there. Scores are finite now (an overflow is the
    largest float64) and never decrease as a row moves further out."""
    det = fitted(name)
    rows = np.vstack([test_normal[0] + k for k in (0.0, 1e3, 1e8, 1e15, 1e20, 1e25, 1e300)])
    s = det.decision_function(rows)
    assert np.isfinite(s).all() and np.all(np.diff(s) >= 0) and s[-1] > s[0], s
    p = det.pvalues(rows)
    assert np.isfinite(p).all() and np.all(np.diff(p) <= 0), p
    # the embedding that retrieves exemplars stays finite too (a 1e308 row failed the query, "must be finite")
    huge = np.vstack([test_normal[0], np.full_like(test_normal[0], 1e308), np.full_like(test_normal[0], -1.7e308)])
    assert np.isfinite(det.embed(huge)).all() and np.isfinite(det.inspect(huge).embedding).all()
    assert np.isfinite(det.decision_function(huge)).all()
