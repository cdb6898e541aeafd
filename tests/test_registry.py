"""The registry, the factory, and the ensemble's own guarantees."""

from __future__ import annotations

import numpy as np
import pytest

from anomalens.detectors import Ensemble, list_detectors, make_detector
from anomalens.errors import ConfigError, InputError
from anomalens.modalities import list_modalities
from conftest import FAST, correlated


def test_every_detector_is_described():
    infos = list_detectors()
    names = [i.name for i in infos]
    assert {"autoencoder", "vae", "flow", "autoregressive", "ensemble"} <= set(names)
    for info in infos:
        assert info.family in {"reconstruction", "density", "ensemble", "memory bank"}
        assert info.modalities and set(info.modalities) <= set(list_modalities()) and len(info.score) > 20
        assert "random_state" in info.params
        assert type(make_detector(info.name)).__name__ == info.cls.__name__


def test_factory_accepts_class_names_and_rejects_unknown_parameters():
    assert type(make_detector("VAE")).__name__ == "VAE"
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['n_component'\].*'n_components'"):
        make_detector("autoregressive", n_component=3)
    with pytest.raises(InputError, match="valid detectors are"):
        make_detector("isolation_forest")


def test_ensemble_rejects_unknown_members_at_fit(train_data):
    with pytest.raises(ConfigError, match="unknown detector 'vea'"):  # a hyper-parameter: checked before any fit
        Ensemble(detectors=["vea"]).fit(train_data)
    with pytest.raises(ConfigError, match="must not contain 'ensemble'"):
        Ensemble(detectors=["ensemble"]).fit(train_data)


def test_ensemble_reports_which_member_flagged(fitted):
    from test_contract import inject

    ens = fitted("ensemble")
    normal = correlated(200, seed=21)
    anomalous, _ = inject(correlated(40, seed=22), seed=2)
    rows = np.vstack([normal, anomalous])
    per_member = ens.member_pvalues(rows)
    assert list(per_member) == list(ens.config.detectors)
    assert all(p.shape == (240,) for p in per_member.values())
    # the ensemble flags a row when its members do
    combined = ens.pvalues(rows) < 0.05
    by_members = np.min(np.stack(list(per_member.values())), axis=0) < 0.05 / len(per_member)
    assert (combined == by_members).mean() > 0.9
    assert combined[200:].mean() > 0.8 and combined[:200].mean() < 0.1


def test_ensemble_member_params_reach_members(train_data):
    ens = Ensemble(detectors=["autoencoder"], member_params={"epochs": 3}).fit(train_data[:200])
    assert ens.members_[0].history_["epochs"] <= 3
    assert FAST["epochs"] != 3
