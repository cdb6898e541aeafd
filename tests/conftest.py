"""Shared fixtures: synthetic correlated data that every test can build, and the shared data sets."""

from __future__ import annotations

import numpy as np
import pytest

from anomalens.data import shared_data_dir
from anomalens.detectors import list_detectors, make_detector

# Small but real training runs: enough epochs to learn a 6-feature correlated cloud in seconds.
FAST = {"epochs": 40, "patience": 8}


def correlated(n: int, seed: int) -> np.ndarray:
    """(n, 6) rows on a 2-factor structure plus noise, in mixed units (one column in thousands)."""
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, 2))
    X = np.column_stack([f[:, 0], 2 * f[:, 0] + f[:, 1], f[:, 1], f[:, 0] - f[:, 1], 0.5 * f[:, 1], f[:, 0] + 0.5 * f[:, 1]])
    X = X + 0.1 * rng.normal(size=X.shape)
    X[:, 2] = 1000 + 250 * X[:, 2]
    return X


@pytest.fixture(scope="session")
def train_data() -> np.ndarray:
    return correlated(1500, seed=0)


@pytest.fixture(scope="session")
def test_normal() -> np.ndarray:
    return correlated(300, seed=1)


def detector_names() -> list[str]:
    """The detectors of the tabular modality (the series-only ones are tested in test_series.py)."""
    return [info.name for info in list_detectors() if "tabular" in info.modalities]


def fast(name: str, **params):
    """A detector with the short training of FAST where it trains (the ensemble passes it on to its members;
    PCA, fitted in closed form, takes none of it)."""
    if name == "ensemble":
        return make_detector(name, member_params=FAST, **params)
    takes = next(i.params for i in list_detectors() if i.name == name)
    return make_detector(name, **{k: v for k, v in FAST.items() if k in takes}, **params)


_FITTED: dict[str, object] = {}


@pytest.fixture(scope="session")
def fitted(train_data):
    """Fitted detectors by name, trained once per session."""

    def get(name: str):
        if name not in _FITTED:
            _FITTED[name] = fast(name, random_state=0).fit(train_data)
        return _FITTED[name]

    return get


@pytest.fixture(scope="session")
def shared_data():
    root = shared_data_dir()
    if root is None:
        pytest.skip("../shared/data is not present (set ANOMALENS_DATA_DIR to run the real-data tests)")
    return root


@pytest.fixture(scope="session")
def vllm_url(tmp_path_factory):
    """One vLLM CPU server for the whole test session (started on first use, stopped at the end)."""
    from servers import vllm_missing, vllm_server

    reason = vllm_missing()
    if reason:
        pytest.skip(reason)
    with vllm_server(tmp_path_factory.mktemp("vllm")) as url:
        yield url
