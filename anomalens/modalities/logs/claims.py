"""Typed claims about a log case (a session or window) and its incident, each rendered from the evidence.

Claims name templates by id (``E5``; ``N1`` for one never seen in normal logs) and lines by their
evidence id (``line:<file>:<n>``); **never the log text**, which is attacker-controlled: the text of
lines and templates is evidence shown (escaped) beside the claims, not part of a verified sentence.

Kinds (params in brackets), besides the tabular kinds about units (here templates: a template's
count in the case against its count in normal cases, its share of the surprise, the nearest normal
sessions' counts, the normal version's counts; see ``unit_claims``):

- ``line``: a line's template and how probable the next-event model of normal logs found it there,
  and what it expected instead (cites ``line:<file>:<n>``)
- ``unseen``: a line whose template was never seen in normal logs (cites ``line:<file>:<n>``)
- ``template``: how often normal logs hold a template (cites ``template:<id>``)
- ``incident``: the incident's cases, lines and span (cites ``incident``)
"""

from __future__ import annotations

import re

from anomalens.modalities import unit_claims
from anomalens.schema import Claim, Evidence, fmt

__all__ = ["KINDS", "candidates", "check", "parse", "render_kind"]

KINDS = {
    **{k: v.replace("feature", "template (its count in the case)") for k, v in unit_claims.KINDS.items()},
    "line": "a line's template, its probability in context under the model of normal logs, and the expected template",
    "unseen": "a line whose template was never seen in normal logs",
    "template": "how often the normal logs hold a template",
    "incident": "the incident's number of cases and lines and its time span",
}
_SEEN_NEGATION = re.compile(r"\bnever (been )?seen\b")
_LOG_WORDS = frozenset("""
line lines template templates event events session sessions window windows case cases log logs
never seen unseen new probability probable improbable likely unlikely most expected expects expect instead of in
model next context place position count counts times occurs occurred occurrences appears appeared holds hold
incident incidents spans span spanning from to until through between starts started start ends ended end
lines training share percent normal once least at
""".split())


@unit_claims.memoised
def candidates(evidence: Evidence) -> list[Claim]:
    """Every true typed claim the evidence supports, rendered."""
    out = unit_claims.candidates(evidence)
    for ln in evidence.lines:
        if not ln.seen:
            out.append(Claim(kind="unseen", cites=[ln.id], params={},
                             text=f"{ln.id} has template {ln.template_id}, which was never seen in normal logs."))
            continue
        text = (f"{ln.id} has template {ln.template_id}, with probability {fmt(ln.probability)} at that place "
                f"under the model of normal logs")
        text += (f"; the model expected {ln.expected} (probability {fmt(ln.expected_probability)})."
                 if ln.expected is not None else ".")
        out.append(Claim(kind="line", cites=[ln.id], params={}, text=text))
    for t in evidence.templates:
        if t.seen:
            out.append(Claim(kind="template", cites=[t.id], params={},
                             text=f"Template {t.template_id} makes up {fmt(100 * t.training_share)}% of the normal "
                                  f"training lines ({t.training_lines} lines) and appears in "
                                  f"{fmt(100 * t.normal_cases)}% of normal cases."))
        else:
            out.append(Claim(kind="template", cites=[t.id], params={},
                             text=f"Template {t.template_id} never appears in the normal training lines."))
    i = evidence.incident
    if i is not None:
        span = f" from {i.start} to {i.end}" if i.start and i.end else ""
        out.append(Claim(kind="incident", cites=["incident"], params={},
                         text=f"Incident {i.index} groups {i.n_cases} anomalous case(s) and {i.n_lines} lines{span}."))
    return out


def render_kind(kind: str, cites: list[str], params: dict, evidence: Evidence) -> Claim | None:
    return unit_claims.render_among(candidates(evidence), kind, cites, params)


def check(claim: Claim, evidence: Evidence) -> str | None:
    return unit_claims.check_among(claim, candidates(evidence), KINDS)


def parse(claim: Claim, evidence: Evidence) -> str | None:
    """None when a free-text claim reads as typed claims that hold, else why it cannot be proved.
    A sentence about lines, templates or the incident may use their words; what it states about a
    line must hold (a line called never seen must be; the expected template must be the model's)."""
    cites = set(claim.cites)
    items = evidence.items()
    low = claim.text.lower()
    log_cites = [c for c in cites if c.startswith(("line:", "template:")) or c == "incident"]
    if log_cites:
        extra = unit_claims.unconfirmable_words(claim.text, evidence.context.unit_names, _LOG_WORDS)
        if extra:
            return f"states what its evidence cannot confirm ({', '.join(dict.fromkeys(extra[:4]))})"
        # "never seen in normal logs" is checked below against the line's template
        denied = unit_claims.denies(claim.text, evidence.context.unit_names, _SEEN_NEGATION)
        if denied:
            return denied
        for c in log_cites:
            item = items.get(c)
            if c.startswith("line:") and item is not None:
                if ("never seen" in low or "unseen" in low) and item.seen and len(log_cites) == 1:
                    return f"says {c} has a template never seen in normal logs, but {item.template_id} was seen"
        return None
    return unit_claims.parse(claim, evidence, _LOG_WORDS)
