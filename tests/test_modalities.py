"""The modality contract, run for every registered modality (series and logs join with a sample).

Each modality gives a sample here: normal training data, a normal case, a case with one injected
anomalous unit, and bad inputs. The same tests then check fit, analyze (the injected unit is the
top one, ids are ``<kind>:<name>``, every shown claim verified), the save/load and JSON round trips
and one-line errors on bad input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest
from conftest import FAST

from anomalens import Investigator
from anomalens.errors import InputError
from anomalens.grounding.verifier import verify
from anomalens.modalities import Modality, TabularModality, get_modality, list_modalities, register
from anomalens.schema import Report


@dataclass
class Sample:
    train: Any
    normal: Any
    anomalous: Any
    changed_unit: str  # the unit the anomaly was injected into
    bad: list[tuple[Any, str]]  # (input, words the error must contain)


def tabular_sample() -> Sample:
    rng = np.random.default_rng(0)
    names = ["cpu", "memory", "latency", "errors"]

    def rows(n: int) -> pd.DataFrame:
        f = rng.normal(size=(n, 2))
        X = np.column_stack([f[:, 0], f[:, 0] + 0.5 * f[:, 1], f[:, 1], 0.3 * f[:, 0] - f[:, 1]])
        return pd.DataFrame(X + 0.1 * rng.normal(size=X.shape), columns=names)

    train, test = rows(800), rows(2)
    anomalous = test.iloc[[1]].copy()
    anomalous["latency"] += 12 * float(train["latency"].std())
    return Sample(train, test.iloc[[0]], anomalous, "latency", bad=[
        (None, "case"), ("abc", "case"), ({"cpu": 1.0}, "missing"),
        (pd.DataFrame([[1.0, 2.0, np.nan, 0.0]], columns=names), "NaN"),
        (np.ones((1, 3)), "4"),
    ])


def series_sample() -> Sample:
    rng = np.random.default_rng(0)
    names = ["cpu", "memory", "latency"]
    T = 2100
    t = np.arange(T)
    phase = 2 * np.pi * t / 40
    X = np.column_stack([np.sin(phase), 0.7 * np.sin(phase + 0.5), np.cos(phase)]) + 0.1 * rng.normal(size=(T, 3))
    frame = pd.DataFrame(X, columns=names, index=pd.date_range("2026-01-01", periods=T, freq="min"))
    train, test = frame.iloc[:1700], frame.iloc[1700:]
    anomalous = test.copy()
    anomalous.iloc[200:215, 2] += 2.5
    unsorted = test.iloc[::-1]
    duplicated = pd.concat([test.iloc[:100], test.iloc[99:200]])
    nan = test.copy()
    nan.iloc[10, 1] = np.nan
    text = test.assign(memory=["x"] * len(test))
    return Sample(train, test, anomalous, "latency", bad=[
        (None, "case"), (nan, "NaN"), (unsorted, "increasing"), (duplicated, "unique"), (test.iloc[:20], "window"),
        (text, "numeric"), (test.drop(columns=["cpu"]), "missing"),
    ])


def logs_sample() -> Sample:
    """Sessions of log keys (already parsed): a request workflow with a cache hit or miss and a variable
    number of reads; the anomaly repeats the read step far beyond its normal count."""
    rng = np.random.default_rng(0)

    def session() -> list[int]:
        s = [1, 2]
        s += [3] if rng.random() < 0.6 else [7] + [4] * int(rng.integers(1, 4))
        return s + [5, 6]

    train = [session() for _ in range(600)]
    anomalous = [1, 2, 7, *[4] * 15, 5, 6]
    return Sample(train, [1, 2, 3, 5, 6], anomalous, "E4", bad=[
        (None, "case"), ([[]], "empty"), ([1.5, 2.0], "sequence"), ("no/such/file.log", "sequences"),
    ])


def images_sample() -> Sample:
    """28 x 28 grey images of gratings at random phases; the anomaly is a bright square over region 2,4
    (rows 8-11, columns 16-19 of the 7 x 7 grid's 4-pixel regions)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:28, 0:28] / 28.0

    def image() -> np.ndarray:
        a, b = rng.uniform(0, 2 * np.pi, 2)
        return (0.5 + 0.15 * np.sin(2 * np.pi * 2 * xx + a) + 0.15 * np.sin(2 * np.pi * 3 * yy + b)
                + 0.02 * rng.normal(size=xx.shape)).clip(0, 1)

    train = {f"train{i:03d}.png": image() for i in range(300)}
    anomalous = image()
    anomalous[8:12, 16:20] = 1.0
    return Sample(train, image(), anomalous, "2,4", bad=[
        (None, "None"), (b"not an image at all", "not an image"), (np.zeros((1, 1)), "at least"),
        (np.full((28, 28), np.nan), "NaN"), (np.full((28, 28), -2.0), "[0, 1]"), ("no/such/image.png", "no such"),
    ])


SAMPLES: dict[str, Callable[[], Sample]] = {"tabular": tabular_sample, "series": series_sample, "logs": logs_sample,
                                            "images": images_sample}


def test_every_registered_modality_has_a_sample_here():
    assert set(list_modalities()) <= set(SAMPLES), "a new modality must add its sample to SAMPLES"


@pytest.fixture(scope="module", params=list_modalities())
def fitted(request):
    sample = SAMPLES[request.param]()
    inv = Investigator.fit(sample.train, modality=request.param, detector="autoencoder", random_state=0, **FAST)
    return request.param, sample, inv


def test_fit_keeps_the_modality_and_its_units(fitted):
    name, sample, inv = fitted
    assert inv.modality.name == name and isinstance(inv.modality, get_modality(name))
    assert inv.modality.model_width == inv.detector.n_features_in_
    assert sample.changed_unit in inv.modality.unit_names


def test_analyze_names_the_injected_unit_and_every_shown_claim_is_verified(fitted):
    name, sample, inv = fitted
    kind = inv.modality.unit_kind
    rep = inv.analyze(sample.anomalous)
    assert rep.verdict.anomalous
    assert rep.evidence.attributions[0].id == f"{kind}:{sample.changed_unit}"
    assert all(a.id.startswith(f"{kind}:") for a in rep.evidence.attributions)
    assert rep.evidence.context.unit_kind == kind and rep.evidence.context.modality == name
    assert rep.explanation.claims and all(c.verified for c in rep.explanation.claims)
    ok, bad = verify(rep.explanation.claims, rep.evidence)
    assert not bad and len(ok) == len(rep.explanation.claims)
    assert any(sample.changed_unit in c.text for c in rep.explanation.claims)
    normal = inv.analyze(sample.normal)
    assert not normal.verdict.anomalous


def test_save_load_and_json_round_trips(fitted, tmp_path):
    name, sample, inv = fitted
    rep = inv.analyze(sample.anomalous)
    back = Investigator.load(inv.save(tmp_path / "model"))
    assert back.modality.name == name and back.modality.unit_names == inv.modality.unit_names
    again = back.analyze(sample.anomalous)
    assert again.verdict.p_value == pytest.approx(rep.verdict.p_value, rel=1e-9)
    assert again.evidence.attributions == rep.evidence.attributions
    assert again.evidence.restoration == rep.evidence.restoration
    assert [e.row_id for e in again.evidence.exemplars] == [e.row_id for e in rep.evidence.exemplars]
    assert Report.model_validate_json(rep.model_dump_json()) == rep
    assert back.unit_profile(sample.changed_unit) == inv.unit_profile(sample.changed_unit)


def test_bad_input_is_one_input_error_naming_the_problem(fitted):
    name, sample, inv = fitted
    for data, words in sample.bad:
        with pytest.raises(InputError) as err:
            inv.analyze(data)
        msg = str(err.value)
        assert "\n" not in msg and words.lower() in msg.lower(), msg
    with pytest.raises(InputError, match="must be one of"):
        inv.unit_profile("no such unit")


def test_unknown_modalities_are_refused_with_the_list():
    with pytest.raises(InputError, match=r"modality must be one of \['images', 'logs', 'series', 'tabular'"):
        Investigator.fit(np.zeros((10, 2)), modality="video")
    with pytest.raises(InputError, match="modality must be one of"):
        get_modality("video")
    with pytest.raises(InputError, match="Modality subclass"):
        register(dict)  # type: ignore[arg-type]


def test_the_contract_is_abstract():
    with pytest.raises(TypeError):
        Modality()  # type: ignore[abstract]
    assert issubclass(TabularModality, Modality)


def test_a_modality_instance_can_be_passed_to_fit():
    sample = tabular_sample()
    inv = Investigator.fit(sample.train, modality=TabularModality(), detector="autoencoder", random_state=0, epochs=3)
    assert inv.modality.unit_names == list(sample.train.columns)
