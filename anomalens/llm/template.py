"""The template reasoner: a deterministic narrative built from the evidence alone.

Always available, needs no model, and the fallback when an LLM is down or none of its claims
pass the verifier. Numbers are written with ``schema.fmt`` (4 significant digits), which is the
rounding the verifier accepts.
"""

from __future__ import annotations

from anomalens.llm.base import Draft
from anomalens.schema import Claim, Evidence, fmt

__all__ = ["TemplateReasoner"]


class TemplateReasoner:
    """Claims: the verdict, each abnormal feature against its normal range and the nearest normal
    cases, the closest exemplar, and the restoration's main changes."""

    name = "template"

    def __init__(self, max_features: int = 3) -> None:
        self.max_features = max_features

    def draft(self, evidence: Evidence, feedback: list[str] | None = None) -> Draft:
        v = evidence.verdict
        claims = []
        if v.anomalous:
            claims.append(Claim(text=f"The case is anomalous: its score {fmt(v.score)} gives a p-value of {fmt(v.p_value)}, "
                                f"below the cut-off {fmt(v.cutoff)} ({v.method}).", cites=["verdict"]))
        else:
            claims.append(Claim(text=f"The case is not anomalous: its score {fmt(v.score)} gives a p-value of "
                                f"{fmt(v.p_value)}, not below the cut-off {fmt(v.cutoff)} ({v.method}).", cites=["verdict"]))
        shown = [a for a in evidence.attributions if a.abnormal] or evidence.attributions[:1]
        for a in shown[: self.max_features]:
            where = {"above": "above its normal range", "below": "below its normal range", "within": "inside its normal range"}
            text = (f"{a.feature} is {fmt(a.value)}, {where[a.position]} {fmt(a.normal_low)} to {fmt(a.normal_high)} "
                    f"(median {fmt(a.normal_median)}), and accounts for {fmt(100 * a.share)}% of the score")
            cites = [a.id]
            if a.exemplar_mean is not None and evidence.exemplars:
                text += f"; the nearest normal cases have {a.feature} around {fmt(a.exemplar_mean)}"
                cites += [e.id for e in evidence.exemplars]
            claims.append(Claim(text=text + ".", cites=cites))
        if evidence.exemplars:
            e = evidence.exemplars[0]
            claims.append(Claim(text=f"The closest normal exemplar is {e.id} at distance {fmt(e.distance)}.", cites=[e.id]))
        r = evidence.restoration
        if r is not None and r.deltas:
            changes = ", ".join(f"{d.feature} from {fmt(d.observed)} to {fmt(d.restored)}" for d in r.deltas[:2])
            claims.append(Claim(text=f"The normal version of this case changes {changes}.", cites=["restoration"]))
        return Draft(claims=claims)
