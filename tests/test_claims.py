"""Typed claims: every kind renders and verifies on a real case and fails when any field changes;
free text is accepted only when it reads as typed claims; the model's interpretation is kept
apart and dropped when it states what the evidence does not hold."""

from __future__ import annotations

import pytest
from agent_fixtures import cases, metrics

from anomalens import Investigator
from anomalens.grounding.verifier import check_interpretation, verify, verify_claim
from anomalens.modalities import TabularModality
from anomalens.schema import Claim


@pytest.fixture(scope="module")
def evidence():
    inv = Investigator.fit(metrics(600, 0), detector="autoencoder", random_state=0, epochs=40)
    rows = cases()
    ev = inv.evidence(rows.loc["c7"], case_id="c7")
    other = rows.loc["c3"]
    comparison = inv.compare(rows.loc["c7"], other, other_id="c3")
    profile = inv.unit_profile("latency")
    ev = ev.with_items(comparison, profile)
    assert ev.verdict.anomalous and ev.attributions[0].unit == "memory"
    return ev


def test_every_kind_renders_from_the_evidence_and_verifies(evidence):
    cands = TabularModality.claim_candidates(evidence)
    assert {c.kind for c in cands} == set(TabularModality.claim_kinds)
    ok, bad = verify(cands, evidence)
    assert not bad and len(ok) == len(cands)
    # a model names kind, cites and params only; the verifier renders the sentence
    for c in cands:
        bare = Claim(text="", kind=c.kind, cites=c.cites, params=c.params)
        (shown,), rejected = verify([bare], evidence)
        assert not rejected and shown.text == c.text


def _mutations(c: Claim, evidence) -> list[Claim]:
    """Every single-field change of a true typed claim."""
    ids = list(evidence.items())
    out = [c.model_copy(update={"kind": k}) for k in TabularModality.claim_kinds if k != c.kind]
    for i, cite in enumerate(c.cites):
        prefix = cite.split(":")[0]
        swap = next((x for x in ids if x.split(":")[0] == prefix and x not in c.cites), None)
        if swap is not None:
            out.append(c.model_copy(update={"cites": [*c.cites[:i], swap, *c.cites[i + 1:]]}))
    flips = {"position": {"above": "below", "below": "above", "within": "above"},
             "rank": {str(k): str(k + 1) for k in range(1, 40)}}
    for key, value in c.params.items():
        if key in flips:
            out.append(c.model_copy(update={"params": {**c.params, key: flips[key][value]}}))
        else:  # unit: another unit
            other = next(n for n in evidence.context.unit_names if n != value)
            out.append(c.model_copy(update={"params": {**c.params, key: other}}))
    return out


def test_changing_any_field_of_a_typed_claim_fails_verification(evidence):
    tried = 0
    for c in TabularModality.claim_candidates(evidence):
        for m in _mutations(c, evidence):
            rendered = TabularModality.render_claim(m.kind, m.cites, m.params, evidence)
            if rendered is not None and rendered.text == c.text:
                continue  # the change names another true claim with the same words (not a change of meaning)
            assert verify_claim(m, evidence) is not None, (c, m)
            tried += 1
    assert tried > 50


@pytest.mark.parametrize("text, cites", [
    # the demo's sentences of the issue, and invented causes that cite real evidence
    ("The data set contains a feature named 'vae' that has an anomalous value.", ["feature:memory"]),
    ("The nearest normal case, exemplars:", ["verdict"]),
    ("This anomaly is caused by a memory leak in the sensor firmware.", ["feature:memory"]),
    ("The anomaly started after the last deployment.", ["verdict"]),
    ("The temperature sensor reads far above normal.", ["feature:memory"]),
    ("'memory' is below its normal range.", ["feature:memory"]),  # it is above
    ("'latency' is the main driver of the score.", ["feature:latency"]),  # memory is
    # a true relation denied: the relation's words alone would read as the true claim
    ("'memory' is not above its normal range.", ["feature:memory"]),
    ("'memory' isn't the main driver of the score.", ["feature:memory"]),
    ("'memory' never sits above its normal range.", ["feature:memory"]),
    # linking verbs are allowed, verbs of time and cause are not: a row has no history
    ("'memory' rose above its normal range after the restart.", ["feature:memory"]),
    ("'memory' lies above its normal range because of a leak.", ["feature:memory"]),
])
def test_sentences_the_evidence_cannot_prove_are_rejected(evidence, text, cites):
    assert verify_claim(Claim(text=text, cites=cites), evidence) is not None


@pytest.mark.parametrize("text, cites", [
    ("'memory' is far above its normal range.", ["feature:memory"]),
    ("memory is the main driver of the score.", ["feature:memory"]),
    ("The case is anomalous.", ["verdict"]),
    ("'memory' sits well above its usual range.", ["feature:memory"]),  # a linking verb and a degree adverb
    ("Among all features, 'memory' makes the largest contribution to the score.", ["feature:memory"]),
])
def test_free_text_that_reads_as_typed_claims_passes(evidence, text, cites):
    assert verify_claim(Claim(text=text, cites=cites), evidence) is None


def test_interpretations_are_checked_but_never_verified(evidence):
    assert check_interpretation("Memory this far out often means a stuck process.", evidence) is None
    assert "77.5" in check_interpretation("Memory reached 77.5 GB, a leak.", evidence)
    assert "not a feature" in check_interpretation("The 'disk temperature' spiked.", evidence)
    assert "contradicts" in check_interpretation("The case is normal.", evidence)
    assert "exemplar:nope" in check_interpretation("Like exemplar:nope.", evidence)


def test_the_report_shows_the_interpretation_apart(evidence):
    from anomalens.grounding.drafting import explain_evidence
    from anomalens.llm.base import Draft
    from anomalens.schema import Report

    class Fake:
        name = "fake:scripted"

        def draft(self, ev, feedback=None):
            return Draft([Claim(text="", kind="range", cites=["feature:memory"], params={"position": "above"})],
                         interpretation="A reading this far out usually means a stuck process.")

    ex = explain_evidence(evidence, Fake())
    assert ex.source == "fake:scripted" and ex.interpretation.startswith("A reading")
    md = Report(evidence=evidence, explanation=ex).to_markdown()
    verified, interp = md.split("## Interpretation")
    assert "stuck process" not in verified and "NOT verified" in interp.splitlines()[0]
    assert any(c.text.startswith("'memory' is") for c in ex.claims)


def test_the_verifier_audit_test_part_has_no_false_accepts_or_rejects():
    """The audit's test part (paraphrase set A, the first variant of each false kind) on 4 cases;
    set B and the other variants stay out of the suite (evals/results/verifier.md)."""
    from evals.verifier import audit

    res = audit(part="test", max_cases=4)
    assert res["total"]["n"] >= 60
    assert res["total"]["false_accepts"] == 0, res["examples"]
    assert res["total"]["false_rejects"] == 0, res["examples"]


def test_a_claim_chosen_twice_is_shown_once(evidence):
    # the embedded model picked the same restoration claim twice in the demo
    c = next(c for c in TabularModality.claim_candidates(evidence) if c.kind == "range")
    typed = c.model_copy(update={"text": ""})
    ok, bad = verify([typed, typed, Claim(text=c.text, cites=c.cites, kind=c.kind, params=c.params)], evidence)
    assert [x.text for x in ok] == [c.text] and not bad
