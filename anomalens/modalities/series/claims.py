"""Typed claims about an event of a time series: the tabular kinds about units (here channels) and
two of the series' own, each rendered from the evidence.

Kinds (params in brackets), besides ``verdict``, ``range`` [position], ``share``, ``rank`` [rank],
``exemplar_value``, ``exemplar_distance`` [rank], ``restoration`` [unit], ``profile`` and
``comparison`` [unit] (see ``unit_claims``; a channel's value is taken at its most deviating
point of the event, against its normal range at that phase of the period):

- ``event``: the event's span, length and peak time (cites ``event``)
- ``peak``: a channel's most deviating point over the event, observed against the restoration's
  expected value and the normal range there (cites ``segment:<channel>:<start>..<end>``)

A free-text sentence is read as in ``unit_claims.parse``, with the words of the two series kinds;
the times it names must be times of its cited event or segment.
"""

from __future__ import annotations

import re

from anomalens.modalities import unit_claims
from anomalens.schema import Claim, Evidence, fmt, quote

__all__ = ["KINDS", "candidates", "check", "parse", "render_kind"]

KINDS = {
    **{k: v.replace("feature", "channel") for k, v in unit_claims.KINDS.items()},
    "event": "the event's time span, length and peak time",
    "peak": "a channel's most deviating point in the event against the restored (expected) value and normal range",
}
_EVENT_WORDS = frozenset("""
event events runs ran run lasting lasts spans span spanning from to until through between starts started start
ends ended end peak peaks peaked peaking points point time times at when during window windows channel channels
expected restored restoration series segment segments involved deviates deviation deviating most
""".split())
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[+-]\d{2}:\d{2})?")


@unit_claims.memoised
def candidates(evidence: Evidence) -> list[Claim]:
    """Every true typed claim the evidence supports, rendered."""
    out = unit_claims.candidates(evidence)
    e = evidence.event
    if e is not None:
        out.append(Claim(kind="event", cites=["event"], params={},
                         text=f"The event runs from {e.start} to {e.end} ({e.n_points} points) and peaks at {e.peak}."))
    for g in evidence.segments:
        out.append(Claim(kind="peak", cites=[g.id], params={},
                         text=f"{quote(g.channel)} deviates most at {g.peak_time}: {fmt(g.peak_value)} where the "
                              f"restoration expects {fmt(g.expected)} (normal range there {fmt(g.normal_low)} to "
                              f"{fmt(g.normal_high)})."))
    return out


def render_kind(kind: str, cites: list[str], params: dict, evidence: Evidence) -> Claim | None:
    return unit_claims.render_among(candidates(evidence), kind, cites, params)


def check(claim: Claim, evidence: Evidence) -> str | None:
    return unit_claims.check_among(claim, candidates(evidence), KINDS)


def _times_of(evidence: Evidence, cites: set[str]) -> set[str]:
    """The times the cited items hold (an event's or a segment's ``stamps``)."""
    items = evidence.items()
    return {t for c in cites if c in items for t in getattr(items[c], "stamps", list)()}


def parse(claim: Claim, evidence: Evidence) -> str | None:
    """None when a free-text claim reads as typed claims that hold, else why it cannot be proved."""
    cites = set(claim.cites)
    known = _times_of(evidence, cites)
    times = _TIME.findall(claim.text)
    foreign = [t for t in times if t not in known]
    if foreign:
        return f"names a time its cited evidence does not hold ({foreign[0]})"
    text = _TIME.sub(" ", claim.text)
    if ("event" in cites or any(c.startswith("segment:") for c in cites)) and (times or re.search(r"\d", text)):
        extra = unit_claims.unconfirmable_words(text, evidence.context.unit_names, _EVENT_WORDS)
        if extra:
            return f"states what its evidence cannot confirm ({', '.join(dict.fromkeys(extra[:4]))})"
        return unit_claims.denies(text, evidence.context.unit_names)
    return unit_claims.parse(claim.model_copy(update={"text": text}), evidence, _EVENT_WORDS)
