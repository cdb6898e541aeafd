"""The verifier: grounded claims pass, every kind of ungrounded claim is rejected with a reason."""

from __future__ import annotations

import pytest

from anomalens.agents import explain_evidence, verify, verify_claim
from anomalens.errors import BackendError
from anomalens.llm import Draft, TemplateReasoner
from anomalens.schema import Attribution, Claim, Context, Evidence, Exemplar, FeatureDelta, Restoration, Verdict


def make_evidence(anomalous: bool = True) -> Evidence:
    feats = ["glucose", "age", "blood pressure"]
    return Evidence(
        case_id="c1",
        verdict=Verdict(anomalous=anomalous, score=12.34, p_value=0.0041, alpha=0.05, cutoff=0.05, threshold=7.5, detector="vae"),
        attributions=[
            Attribution(id="feature:glucose", unit="glucose", value=310.0, contribution=8.1, share=0.6564,
                        abnormal=True, normal_low=70.0, normal_median=110.0, normal_high=190.0, position="above",
                        exemplar_mean=121.5),
            Attribution(id="feature:age", unit="age", value=41.0, contribution=1.2, share=0.0972, abnormal=False,
                        normal_low=21.0, normal_median=33.0, normal_high=70.0, position="within"),
        ],
        exemplars=[Exemplar(id="exemplar:17", row_id="17", distance=0.8123,
                            values={"glucose": 118.0, "age": 40.0, "blood pressure": 72.0})],
        restoration=Restoration(values={"glucose": 125.0, "age": 41.0, "blood pressure": 70.0},
                                deltas=[FeatureDelta(unit="glucose", observed=310.0, restored=125.0, delta=-185.0)]),
        context=Context(unit_names=feats, n_train=500, detector="vae", attribution_method="nll"),
    )


@pytest.mark.parametrize("text, cites", [
    ("glucose is 310, far above its normal range of 70 to 190.", ["feature:glucose"]),
    ("glucose (310.0) accounts for 65.6% of the score.", ["feature:glucose"]),
    ("The p-value is 0.004, below 0.05.", ["verdict"]),
    ("The closest normal case, exemplar:17, is at distance 0.81.", ["exemplar:17"]),
    ("The normal version lowers glucose by 185 to 125.", ["restoration"]),
    ("Of the 2 features shown, 1 is abnormal.", ["verdict"]),
    ("At 310, glucose lies above its usual range (70 to 190).", ["feature:glucose"]),
    ("glucose is 200 above its median.", ["feature:glucose"]),
    ("The score of 12.34 gives a p-value of 0.0041, below the cut-off of 0.05.", ["verdict"]),
    ("glucose is 310, above its normal range, and age is 41, within its range.", ["feature:glucose", "feature:age"]),
    ("glucose accounts for 65.6% of the score, age for 9.72%.", ["feature:glucose", "feature:age"]),
    ("65.6% of the score comes from glucose and 9.72% from age.", ["feature:glucose", "feature:age"]),
])
def test_grounded_claims_pass(text, cites):
    assert verify_claim(Claim(text=text, cites=cites), make_evidence()) is None


@pytest.mark.parametrize("text, cites, reason", [
    ("glucose is high.", [], "cites no evidence"),
    ("glucose is high.", ["feature:insulin"], "unknown evidence ids"),
    ("glucose is 410.", ["feature:glucose"], "states 410"),
    ("age is 41 and glucose is 310.", ["feature:age"], "names feature 'glucose'"),
    ("blood pressure is 72.", ["feature:glucose"], "names feature 'blood pressure'"),
    ("The closest case is exemplar:99.", ["exemplar:17"], "not in the evidence"),
    ("The case is not anomalous.", ["verdict"], "contradicts the verdict"),
    ("The score is 12.9.", ["verdict"], "states 12.9"),
    # a number of a cited item stated in another role (each accepted before the roles were read)
    ("glucose is 190, above its normal range.", ["feature:glucose"], "190 as a value"),
    ("glucose accounts for 310% of the score.", ["feature:glucose"], "310 as a share"),
    ("glucose is -310, above its normal range.", ["feature:glucose"], "-310 as a value"),
    ("The p-value is 12.34.", ["verdict"], "12.34 as a p-value"),
    ("The closest normal case, exemplar:17, is at distance 118.", ["exemplar:17"], "118 as a distance"),
    ("age accounts for 65.6% of the score.", ["feature:glucose", "feature:age"], "65.6 as a share"),
    ("glucose is 41 and age is 310.", ["feature:glucose", "feature:age"], "41 as a value of 'glucose'"),
    ("9.72% of the score comes from glucose and 65.6% from age.", ["feature:glucose", "feature:age"],
     "9.72 as a share of 'glucose'"),
])
def test_ungrounded_claims_are_rejected(text, cites, reason):
    got = verify_claim(Claim(text=text, cites=cites), make_evidence())
    assert got is not None and reason in got


def test_template_claims_always_verify():
    for anomalous in (True, False):
        ev = make_evidence(anomalous)
        ok, bad = verify(TemplateReasoner().draft(ev).claims, ev)
        assert not bad and len(ok) >= 4
        assert any("glucose" in c.text for c in ok)


class ScriptedReasoner:
    """A fake reasoner (named as such): returns scripted drafts, or raises like a dead server."""

    name = "llm:scripted-fake"

    def __init__(self, drafts=None, fail=False):
        self.drafts, self.fail, self.feedback = list(drafts or []), fail, []

    def draft(self, evidence, feedback=None):
        self.feedback.append(feedback)
        if self.fail:
            raise BackendError("connection refused")
        return Draft(claims=self.drafts.pop(0))


def test_rejected_claims_are_regenerated_with_feedback_and_never_shown():
    good = Claim(text="glucose is 310, above 190.", cites=["feature:glucose"])
    bad = Claim(text="insulin is 999.", cites=["feature:glucose"])
    r = ScriptedReasoner([[bad], [good]])
    ex = explain_evidence(make_evidence(), r)
    assert ex.source == "llm:scripted-fake" and ex.grounded
    # the model's verified claim, led by the verdict sentence a report never loses
    assert [c.text for c in ex.claims][1:] == [good.text] and ex.claims[0].cites == ["verdict"]
    assert len(ex.rejected) == 1 and ex.rejected[0].reason
    assert r.feedback[1] and "states 999" in r.feedback[1][0]


def test_nothing_grounded_falls_back_to_the_template():
    bad = Claim(text="glucose is 999.", cites=["feature:glucose"])
    ex = explain_evidence(make_evidence(), ScriptedReasoner([[bad], [bad]]))
    assert ex.source == "template" and ex.grounded and "passed verification" in ex.note
    assert all(c.verified for c in ex.claims) and len(ex.rejected) == 2


def test_dead_backend_falls_back_to_the_template_and_says_so():
    ex = explain_evidence(make_evidence(), ScriptedReasoner(fail=True))
    assert ex.source == "template" and "unavailable" in ex.note and "connection refused" in ex.note


def test_feature_names_are_names_by_position_never_words_of_the_sentence():
    """Issue 40 #12: with a feature named 'is anomalous' the template's own verdict claim was rejected
    ("names feature 'is anomalous'"), and "'above' is normal." was accepted because the relation's
    word was read inside the name. Names count where the rendering quotes them, and the relation
    words are read with the names blanked."""
    import numpy as np
    import pandas as pd

    from anomalens import Investigator
    from anomalens.llm.template import TemplateReasoner

    names = ["above", "not", "normal", "a", "1.5", "is anomalous", "温度"]
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(300, len(names))), columns=names)
    inv = Investigator.fit(X, detector="pca", random_state=0)
    for j, name in enumerate(names):
        row = X.iloc[[0]].copy()
        row.iloc[0, j] += 15
        ev = inv.evidence(row)
        ok, bad = verify(TemplateReasoner().draft(ev).claims, ev)
        assert ev.verdict.anomalous and not bad and any(c.kind == "verdict" for c in ok), (name, bad)
    ev = inv.evidence(X.iloc[[0]].assign(above=15.0))
    assert verify_claim(Claim(text="'above' is normal.", cites=["feature:above"]), ev) is not None
    assert verify_claim(Claim(text="'above' is within its normal range.", cites=["feature:above"]), ev) is not None
    assert verify_claim(Claim(text="'above' is above its normal range.", cites=["feature:above"]), ev) is None
