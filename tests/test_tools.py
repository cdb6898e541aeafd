"""The investigation tools: what each returns on a case with a known injected anomaly, and how bad
arguments come back to the model as observations that list the valid choices."""

from __future__ import annotations

import numpy as np
import pytest
from agent_fixtures import cases, metrics

from anomalens.errors import InputError
from anomalens.schema import Attribution, Comparison, Exemplar, FeatureProfile, Restoration, Verdict
from anomalens.tools import TOOL_NAMES, Toolbox, make_tools


@pytest.fixture(scope="module")
def inv(metrics_inv):
    return metrics_inv


@pytest.fixture()
def tools(inv):
    box = Toolbox(inv, cases(), focus="c7")
    return box, {t.name: t for t in make_tools(box)}


def run(tool, **args):
    return tool.invoke({"name": tool.name, "args": args, "id": "call-1", "type": "tool_call"})


def test_every_tool_is_typed_and_described(tools):
    _, t = tools
    assert tuple(t) == TOOL_NAMES
    for tool in t.values():
        assert tool.response_format == "content_and_artifact"
        assert len(tool.description) > 30  # the docstring is what the model reads
        schema = tool.tool_call_schema.model_json_schema()
        assert all(p.get("type") != "string" or "json" not in p.get("description", "").lower()
                   for p in schema.get("properties", {}).values())  # no JSON inside strings


def test_tools_find_the_injected_anomaly(tools):
    box, t = tools
    v = run(t["score_case"])
    assert v.status == "success" and isinstance(v.artifact, Verdict) and v.artifact.anomalous
    assert "ANOMALOUS" in v.content and "c7" in v.content
    ex = run(t["explain_case"], top=3)
    assert [a.unit for a in ex.artifact][0] == "memory" and all(isinstance(a, Attribution) for a in ex.artifact)
    assert ex.content.startswith("feature:memory")
    nb = run(t["nearest_exemplars"], k=8)
    d = [e.distance for e in nb.artifact]
    assert len(nb.artifact) == 8 and d == sorted(d) and all(isinstance(e, Exemplar) for e in nb.artifact)
    r = run(t["restore_case"]).artifact
    assert isinstance(r, Restoration) and r.deltas[0].unit == "memory" and r.deltas[0].delta < -4
    # the normal version scores far lower than the case
    assert r.score_after < v.artifact.score / 10


def test_compare_describe_and_batch(tools, inv):
    box, t = tools
    c = run(t["compare_cases"], other_id="c3").artifact
    assert isinstance(c, Comparison) and c.id == "compare:c3" and c.differences[0].unit == "memory"
    assert not c.other_anomalous
    ex_id = run(t["nearest_exemplars"], k=1).artifact[0].id
    ce = run(t["compare_cases"], other_id=ex_id).artifact
    assert ce.differences[0].unit == "memory" and ce.distance > 0
    p, a = run(t["describe_feature"], name="latency").artifact
    assert isinstance(p, FeatureProfile) and p.unit == "latency" and p.quantiles["50%"] == pytest.approx(
        float(np.median(metrics(600, 0)["latency"])), abs=1e-9)
    assert a.unit == "latency" and a.position == "within"
    few = ["c7", "c1", "c2", "c3"]
    b = run(t["batch_verdicts"], case_ids=few, alpha=0.05).artifact
    assert list(b) == few and b["c7"].anomalous and not any(b[c].anomalous for c in few[1:])
    whole = run(t["batch_verdicts"], alpha=0.05)
    assert set(whole.artifact) == set(box.case_ids)
    # 600 training rows, cross-calibrated: the injected case has the smallest p-value of the 40 and is
    # either flagged (by the tail's approximate p-value) or, where this detector's calibration scores
    # refuse a tail, reported as "not significant at this batch size" with its p, never as plainly normal
    v = whole.artifact
    assert min(v, key=lambda c: v[c].p_value) == "c7"
    assert not any(v[c].anomalous for c in v if c != "c7")
    if v["c7"].anomalous:
        assert v["c7"].approximate and "approximate" in whole.content
    else:
        assert v["c7"].note and "not significant at this batch size" in whole.content
    cards = run(t["list_detectors"]).artifact
    assert {c.name for c in cards} >= {"vae", "diffusion", "flow"} and sum(c.in_use for c in cards) == 1
    assert run(t["describe_detector"]).artifact.name == "autoencoder"


@pytest.mark.parametrize("tool, args, expected", [
    ("score_case", {"case_id": "c999"}, "case_id must be one of"),
    ("describe_feature", {"name": "mem"}, "'memory'"),
    ("describe_detector", {"name": "vea"}, "try one of ['autoencoder'"),
    ("explain_case", {"top": 0}, "top: Input should be greater than or equal to 1 (got 0)"),
    ("nearest_exemplars", {"k": "many"}, "k: Input should be a valid integer"),
    ("compare_cases", {}, "other_id: Field required"),
    ("compare_cases", {"other_id": "exemplar:nope"}, "not in the store: ['nope']"),
    ("batch_verdicts", {"alpha": 2}, "alpha: Input should be less than 1"),
])
def test_bad_arguments_come_back_as_observations(tools, tool, args, expected):
    _, t = tools
    msg = run(t[tool], **args)
    assert msg.status == "error" and expected in msg.content and msg.artifact is None


def test_toolbox_rejects_bad_cases(inv):
    with pytest.raises(InputError, match="ids must be 40 unique"):
        Toolbox(inv, cases(), ids=["a"] * 40)
    with pytest.raises(InputError, match="case_id must be one of"):
        Toolbox(inv, cases(), focus="zz")
    box = Toolbox(inv)
    with pytest.raises(InputError, match="no case is in focus"):
        box.evidence()
