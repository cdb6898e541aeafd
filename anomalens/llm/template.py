"""The template reasoner: a deterministic narrative built from the evidence alone.

Always available, needs no model, and the fallback when an LLM is down or none of its claims
pass the verifier. Numbers are written with ``schema.fmt`` (4 significant digits), which is the
rounding the verifier accepts. ``answer`` picks the claims that a question asks for by its
words (neighbours, normal version, a feature's name, comparison, verdict), over every evidence
item an investigation has gathered.
"""

from __future__ import annotations


from anomalens.llm.base import Draft
from anomalens.modalities import modality_of
from anomalens.modalities.common import verdict_claim
from anomalens.schema import Attribution, Claim, Comparison, Evidence, EvidenceItem, FeatureProfile, split_mentions

__all__ = ["TemplateReasoner", "topics", "verdict_claim"]

_TOPICS = {
    "neighbors": ("similar", "neighbo", "nearest", "closest", "exemplar", "like this", "normal case", "normal row"),
    "restore": ("look like", "should", "restor", "normal version", "expected", "fix", "what would normal"),
    "compare": ("compare", "differ", "versus", " vs"),
    "verdict": ("p-value", "p value", "score", "confiden", "how sure", "significan", "is this anomal", "is it anomal"),
    "why": ("why", "explain", "cause", "reason", "driv", "responsible", "wrong"),
}


def topics(question: str, evidence: Evidence) -> tuple[list[str], list[str]]:
    """(topics the question asks about, feature names it mentions), longest names first."""
    q = question.lower()
    found = [t for t, words in _TOPICS.items() if any(w in q for w in words)]
    return found, split_mentions(question, evidence.context.unit_names)[0]


def about(evidence: Evidence, *item_ids: str) -> list[Claim]:
    """The modality's true typed claims whose first cited item is one of ``item_ids``, in the
    modality's order (candidates rendered once)."""
    return [c for c in modality_of(evidence).claim_candidates(evidence) if c.cites and c.cites[0] in item_ids]


def feature_claim(a: Attribution, evidence: Evidence, *, with_exemplars: bool = True) -> list[Claim]:
    """The modality's claims about one unit (tabular: its value against its normal range and share
    of the score, and with ``with_exemplars`` its value in the nearest normal cases)."""
    return modality_of(evidence).unit_claims(evidence, a.id, with_exemplars=with_exemplars)


def exemplar_claims(evidence: Evidence, n: int = 1) -> list[Claim]:
    return about(evidence, *[e.id for e in evidence.exemplars[:n]])


def restoration_claim(evidence: Evidence, n: int = 2) -> list[Claim]:
    return about(evidence, "restoration")[:n]


def profile_claim(p: FeatureProfile, evidence: Evidence) -> list[Claim]:
    return about(evidence, p.id)


def comparison_claim(c: Comparison, evidence: Evidence, n: int = 2) -> list[Claim]:
    return about(evidence, c.id)[:n]


class TemplateReasoner:
    """Claims: the verdict, each feature with an abnormal contribution or a value outside its normal
    range (at most ``max_features``, largest contribution first) against its normal range and the
    nearest normal cases, the closest exemplar, and the restoration's main changes."""

    name = "template"

    def __init__(self, max_features: int = 3) -> None:
        self.max_features = max_features

    def draft(self, evidence: Evidence, feedback: list[str] | None = None) -> Draft:
        # the case's one-of-a-kind items (a series' event, a log's incident, an image's anomaly map) first
        claims = [verdict_claim(evidence), *about(evidence, *[p.id for p in evidence.parts if type(p).single])]
        # units whose contribution is abnormal or whose value is outside its normal range, by contribution
        # (an event of a series: its channels beyond their normal attribution level, as a value outside
        # the normal band of its phase is common in a long series)
        shown = [a for a in evidence.attributions if a.abnormal or (a.position != "within" and evidence.event is None)] \
            or evidence.attributions[:1]
        claims += [c for a in shown[: self.max_features] for c in feature_claim(a, evidence)]
        # a log case: its most surprising lines that the units above did not already cover
        said = {c.cites[0] for c in claims if c.cites}
        claims += about(evidence, *[ln.id for ln in evidence.lines[:3] if ln.id not in said])
        return Draft(claims=claims + exemplar_claims(evidence) + restoration_claim(evidence))

    def answer(self, question: str, evidence: Evidence, feedback: list[str] | None = None) -> Draft:
        found, features = topics(question, evidence)
        items = evidence.items()
        claims: list[Claim] = []
        kind = evidence.context.unit_kind
        for name in features:
            if f"{kind}:{name}" in items:
                claims += feature_claim(items[f"{kind}:{name}"], evidence, with_exemplars=False)
            if f"profile:{name}" in items:
                claims += profile_claim(items[f"profile:{name}"], evidence)
        if "compare" in found and evidence.comparisons:
            claims += comparison_claim(evidence.comparisons[-1], evidence)
        if "neighbors" in found:
            claims += exemplar_claims(evidence, n=3)
        if "restore" in found:
            claims += restoration_claim(evidence, n=3)
        if "verdict" in found:
            claims.insert(0, verdict_claim(evidence))
        if not claims or ("why" in found and not features):
            claims = self.draft(evidence).claims if not claims else [*self.draft(evidence).claims[:3], *claims]
        seen: set[str] = set()
        return Draft(claims=[c for c in claims if not (c.text in seen or seen.add(c.text))])

    def direct_answer(self, question: str, evidence: Evidence) -> list[Claim]:
        """The claims that answer the question itself: those of the features it names and the topics
        it asks about (neighbours, restoration, comparison, verdict); for a question without one
        ("why?", "which feature ...?"), the claim about the unit that leads the explanation."""
        found, features = topics(question, evidence)
        if features or set(found) - {"why"}:
            return self.answer(question, evidence).claims
        return [c for c in self.draft(evidence).claims if "verdict" not in c.cites][:1]

    def command_claims(self, command: str, evidence: Evidence, args: dict, new: list[str] = ()) -> list[Claim]:
        """The claims about what a chat command's tool returned (``/why``, ``/neighbors``, ...); for a
        command this list does not name (a modality's own, e.g. ``/region``), the claims about the
        evidence items its tool added (``new``: their ids)."""
        ev = evidence
        if command == "/why":
            return self.draft(ev).claims
        if command == "/neighbors":
            return exemplar_claims(ev, n=int(args.get("k", 5)))
        if command == "/restore":
            return restoration_claim(ev, n=3)
        if command == "/compare":
            return [x for c in ev.comparisons if c.other_id == args["other_id"] for x in comparison_claim(c, ev, n=3)]
        if command == "/feature":
            items, kind = ev.items(), ev.context.unit_kind
            return [*feature_claim(items[f"{kind}:{args['name']}"], ev, with_exemplars=False),
                    *profile_claim(items[f"profile:{args['name']}"], ev)]
        if command == "/score":
            return [verdict_claim(ev)]
        if command == "/lines":
            return about(ev, *[ln.id for ln in ev.lines])
        if command == "/template":
            return about(ev, f"template:{args['template_id']}")
        if command == "/timeline":
            return about(ev, "incident")
        items = ev.items()  # the modality's own items first (a region's level), then units looked up
        return sorted(about(ev, *new), key=lambda c: not isinstance(items.get(c.cites[0]), EvidenceItem))[:3]
