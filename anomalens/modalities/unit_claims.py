"""Typed claims about the units of a case (the features of a row, and as the other modalities use
them, a series' channels and a log's templates): a closed vocabulary of kinds, each rendered from
the evidence. The tabular modality's claims are these; the series and log modalities add their own
kinds on top (``series_claims``, ``log_claims``), so this module is the shared machinery of the
modality rooms, not one modality's (none imports another's module for its claims).

A typed claim is ``Claim(kind, cites, params)``; its sentence is rendered here from the evidence
items it cites, so every name and number in it is the evidence's. ``candidates(evidence)`` lists
every true typed claim the evidence supports; a typed claim verifies when it is one of them (same
kind, cites and params), and ``parse`` reads a free-text sentence as a typed claim (its kind from
its words, its relation checked against the candidates) or says why it cannot.

Kinds (params in brackets):

- ``verdict``: the verdict, its score, p-value and cut-off (cites ``verdict``)
- ``range`` [position: above | below | within]: a feature's value against its normal range, and
  its share of the score (cites ``feature:<name>``)
- ``share``: a feature's share of the score (cites ``feature:<name>``)
- ``rank`` [rank: 1, 2, ...]: a feature's place among the contributions shown
- ``exemplar_value``: a feature's mean over the nearest normal exemplars (cites the feature and
  every exemplar)
- ``exemplar_distance`` [rank]: an exemplar's distance and its place among the nearest
- ``restoration`` [unit]: the normal version's change of one feature (cites ``restoration``)
- ``profile``: a feature's training distribution (cites ``profile:<name>``)
- ``comparison`` [unit]: the case beside another one on one feature (cites ``compare:<id>``)
"""

from __future__ import annotations

import functools
import re
import threading

from anomalens.modalities.common import verdict_claim
from anomalens.schema import ITEM_ID as _ID
from anomalens.schema import (
    ORDINARY_WORDS,
    Attribution,
    Claim,
    Comparison,
    Evidence,
    FeatureProfile,
    fmt,
    quote,
    split_mentions,
)

__all__ = ["KINDS", "candidates", "check", "check_among", "claim_key", "memoised", "parse", "render_among",
           "render_kind", "unconfirmable_words"]

_MEMO = threading.local()


def memoised(fn):
    """``candidates(evidence)`` computed once per evidence object: the verifier renders and checks each
    claim of a draft against the candidates, and the template picks from them several times. Keyed by
    the object's identity (it is held while cached, so its id is not reused; evidence is never changed
    in place: updates are ``model_copy``), per thread, a few at a time; callers get their own list."""

    @functools.wraps(fn)
    def run(evidence: Evidence) -> list[Claim]:
        store = getattr(_MEMO, "store", None)
        if store is None:
            store = _MEMO.store = {}
        key = (fn.__module__, id(evidence))
        hit = store.get(key)
        if hit is not None and hit[0] is evidence:
            return list(hit[1])
        out = fn(evidence)
        if len(store) >= 16:
            store.clear()
        store[key] = (evidence, out)
        return list(out)

    return run

KINDS = {
    "verdict": "the verdict with its score, p-value and cut-off",
    "range": "a feature's value against its normal range (params: position = above | below | within)",
    "share": "a feature's share of the anomaly score",
    "rank": "a feature's place among the largest contributions (params: rank = 1, 2, ...)",
    "exemplar_value": "a feature's typical value in the nearest normal exemplars",
    "exemplar_distance": "a nearest normal exemplar and its distance (params: rank = 1, 2, ...)",
    "restoration": "what the normal version changes in one feature (params: unit = the feature)",
    "profile": "a feature's distribution in the normal training rows",
    "comparison": "the case beside another case on one feature (params: unit = the feature)",
}
_WHERE = {"above": "above its normal range", "below": "below its normal range", "within": "inside its normal range"}
_ORD = {1: "largest", 2: "second-largest", 3: "third-largest"}
_NTH = {1: "closest", 2: "second-closest", 3: "third-closest"}


def _ordinal(k: int, words: dict[int, str], fallback: str) -> str:
    return words.get(k, f"{k}th-{fallback}")


@memoised
def candidates(evidence: Evidence) -> list[Claim]:
    """Every true typed claim the evidence supports, rendered."""
    out = [verdict_claim(evidence)]
    units: list[Attribution] = [*evidence.attributions, *[a for a in evidence.lookups
                                                          if a.id not in {b.id for b in evidence.attributions}]]
    for a in units:
        out.append(Claim(kind="range", cites=[a.id], params={"position": a.position},
                         text=f"{quote(a.unit)} is {fmt(a.value)}, {_WHERE[a.position]} {fmt(a.normal_low)} to "
                              f"{fmt(a.normal_high)} (median {fmt(a.normal_median)}), and accounts for "
                              f"{fmt(100 * a.share)}% of the score."))
        out.append(Claim(kind="share", cites=[a.id], params={},
                         text=f"{quote(a.unit)} accounts for {fmt(100 * a.share)}% of the score."))
        if a.exemplar_mean is not None and evidence.exemplars:
            out.append(Claim(kind="exemplar_value", cites=[a.id, *[e.id for e in evidence.exemplars]], params={},
                             text=f"The nearest normal cases have {quote(a.unit)} around {fmt(a.exemplar_mean)} "
                                  f"(this case: {fmt(a.value)})."))
    for k, a in enumerate(evidence.attributions, start=1):
        out.append(Claim(kind="rank", cites=[a.id], params={"rank": str(k)},
                         text=f"{quote(a.unit)} is the {_ordinal(k, _ORD, 'largest')} contribution to the score "
                              f"({fmt(100 * a.share)}%)."))
    for k, e in enumerate(evidence.exemplars, start=1):
        out.append(Claim(kind="exemplar_distance", cites=[e.id], params={"rank": str(k)},
                         text=f"The {_ordinal(k, _NTH, 'closest')} normal exemplar is {e.id} at distance "
                              f"{fmt(e.distance)}."))
    r = evidence.restoration
    for d in (r.deltas if r is not None else []):
        if fmt(d.observed) != fmt(d.restored):
            out.append(Claim(kind="restoration", cites=["restoration"], params={"unit": d.unit},
                             text=f"The normal version of this case changes {quote(d.unit)} from {fmt(d.observed)} "
                                  f"to {fmt(d.restored)}."))
    for p in evidence.profiles:
        out.append(_profile(p, {"channel": "points", "event": "cases"}.get(evidence.context.unit_kind, "rows")))
    for c in evidence.comparisons:
        for d in c.differences:
            out.append(_comparison(c, d.unit))
    return out


def _profile(p: FeatureProfile, what: str = "rows") -> Claim:
    return Claim(kind="profile", cites=[p.id], params={},
                 text=f"In the {p.n_train} normal training {what}, {quote(p.unit)} has median {fmt(p.normal_median)} "
                      f"and ranges from {fmt(p.normal_low)} (1%) to {fmt(p.normal_high)} (99%).")


def _comparison(c: Comparison, unit: str) -> Claim:
    d = next(x for x in c.differences if x.unit == unit)
    other = c.other_id if c.other_id.startswith("exemplar:") else f"case {c.other_id}"
    return Claim(kind="comparison", cites=[c.id], params={"unit": unit},
                 text=f"Against {other} (distance {fmt(c.distance)}), {quote(unit)} is {fmt(d.value)} here and "
                      f"{fmt(d.other)} there.")


def claim_key(claim: Claim) -> tuple:
    """What identifies a typed claim: its kind, cited ids and params (not its text)."""
    return claim.kind, frozenset(claim.cites), tuple(sorted((k, str(v)) for k, v in claim.params.items()))


def render_kind(kind: str, cites: list[str], params: dict, evidence: Evidence) -> Claim | None:
    """The rendered typed claim (kind, cites, params), or None when the evidence does not support it."""
    return render_among(candidates(evidence), kind, cites, params)


def render_among(cands: list[Claim], kind: str, cites: list[str], params: dict) -> Claim | None:
    """The candidate with this kind, cites and params, or None."""
    want = claim_key(Claim(text="", kind=kind, cites=cites, params=params))
    return next((c for c in cands if claim_key(c) == want), None)


def check(claim: Claim, evidence: Evidence) -> str | None:
    """None when the typed claim is one the evidence supports (kind, cites and params), else why not."""
    return check_among(claim, candidates(evidence), KINDS)


def check_among(claim: Claim, cands: list[Claim], kinds: dict[str, str]) -> str | None:
    """None when the typed claim is one of the true candidates ``cands``, else why not."""
    if claim.kind not in kinds:
        return f"kind {claim.kind!r} is not one of {sorted(kinds)}"
    want = claim_key(claim)
    if any(claim_key(c) == want for c in cands):
        return None
    same = [c for c in cands if c.kind == claim.kind and set(c.cites) == set(claim.cites)]
    if not same:
        return f"a {claim.kind} claim cannot rest on {claim.cites}"
    return f"says {claim.params} where the evidence says {same[0].params}"


# ---------------------------------------------------------------- reading free text
# Words a sentence about the evidence may use besides names, ids and numbers: the ordinary words of
# the schema, the words of each kind, and connectives. Anything else ("caused", "leak", "firmware",
# "deployment") is something the evidence cannot confirm.
_KIND_WORDS = set("""
above below within inside outside higher lower high low exceeds exceed exceeding over under beyond less greater
normal range ranges usual typical typically median quantile quantiles percentile training rows row
accounts account share percent contribution contributions contributes contributor largest biggest top first
second third rank ranks ranked greatest strongest main largest-contributing
nearest closest close exemplar exemplars neighbour neighbours neighbor neighbors distance away similar
restored restoration restore version changes change changed changing lowers raises lowered raised moves moved
brings brought back reduces reduced increases increased
p-value pvalue cut-off cutoff score scores gives give giving anomalous anomaly flagged flag significant
level alpha false discovery rate control conformal method detector batch
against compared comparison differs differ difference versus vs here there other
around about roughly approximately nearly almost just only also while whereas which where their its
much far well very clearly strongly mostly largely mainly primarily chiefly
should would expected observed value values its this that case is are was be being
shown abnormal unusual outlier benjamini-hochberg benjamini hochberg
driver drivers drives driving responsible explains explained primary chief
second-closest third-closest second-largest third-largest
""".split())
# Verbs that link a name to a value, a place or a source without adding a fact of their own
# (copular, locative and motion verbs, in every form): "'cpu' lies above its range", "87% of the
# score comes from 'cpu'", "the normal version takes 'cpu' from 9.1 to 0.2". Verbs of time and
# cause (rose, started, caused, triggered) are not among them: a row has no history to check.
_LINKING = {
    "seem": "seems seemed seeming", "appear": "appears appeared appearing", "look": "looks looked looking",
    "remain": "remains remained remaining", "stay": "stays stayed staying", "sit": "sits sat sitting",
    "lie": "lies lay lying", "stand": "stands stood standing", "rest": "rests rested resting",
    "fall": "falls fell fallen falling", "land": "lands landed landing", "reach": "reaches reached reaching",
    "measure": "measures measured measuring", "read": "reads reading", "hold": "holds held holding",
    "come": "comes came coming", "stem": "stems stemmed stemming", "arise": "arises arose arisen arising",
    "originate": "originates originated originating", "go": "goes went gone going",
    "return": "returns returned returning", "take": "takes took taken taking", "make": "makes made making",
    "provide": "provides provided providing", "carry": "carries carried carrying",
    "show": "shows showed shown showing", "equal": "equals equalled equaled equalling equaling",
}
_LINKING_WORDS = frozenset(w for base, forms in _LINKING.items() for w in (base, *forms.split()))
# prepositions, determiners and adverbs of degree that state nothing themselves
_FRAME_WORDS = frozenset("""
among amongst across along per via toward towards onto upon beside besides both either all whose whole
overall together total entire alone slightly somewhat considerably substantially markedly notably
noticeably sharply strongly significantly moderately modestly extremely exactly precisely some
""".split())
_ALLOWED = ORDINARY_WORDS | _KIND_WORDS | _LINKING_WORDS | _FRAME_WORDS
_WORD = re.compile(r"[a-z][a-z'-]*")
_NUM = re.compile(r"[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?%?")

_POSITION = (("above", r"\b(above|higher than|exceeds?|exceeding|over|beyond|greater than)\b"),
             ("below", r"\b(below|lower than|under|less than)\b"),
             ("within", r"\b(within|inside|in (its|the) normal range)\b"))


# A claim states what holds; "'cpu' is not above its range" or "'cpu' is not the main driver" is a
# relation denied, which no kind states (the relation's words alone would read as the opposite
# claim). Only the verdict may be stated negatively ("not anomalous"), and the verdict check then
# holds it to the detector's verdict. A modality may allow phrases whose truth it checks.
_NEGATION = re.compile(r"\b(not|no|nor|never|none|neither|nothing|without|cannot|n't)\b|n't\b")
_VERDICT_NEGATION = re.compile(r"\bnot (anomalous|an anomaly|an outlier|abnormal|unusual|flagged)\b")


def denies(text: str, names: list[str], allowed: re.Pattern | None = None) -> str | None:
    """Why ``text`` cannot be a claim because it states a negation, or None. Unit names and ids are
    blanked first (a column called "no_show" denies nothing); a phrase of ``allowed`` and the
    verdict's "not anomalous" do not count."""
    low = _VERDICT_NEGATION.sub(" ", split_mentions(_ID.sub(" ", text), names)[1].lower())
    if allowed is not None:
        low = allowed.sub(" ", low)
    m = _NEGATION.search(low)
    if m is None:
        return None
    return f"denies a relation ({m.group(0)!r}); a claim states what holds, and only the verdict may be negative"


def unconfirmable_words(text: str, names: list[str], extra: frozenset[str] = frozenset()) -> list[str]:
    """Words of ``text`` that are none of: a unit name, an evidence id, a number, the claim
    vocabulary or the ``extra`` words of a modality's own kinds."""
    _, rest = split_mentions(_ID.sub(" ", text), names)
    rest = _NUM.sub(" ", rest.lower())
    return [w for w in _WORD.findall(rest) if w.strip("'-") not in _ALLOWED | extra and w.strip("'-")]


def parse(claim: Claim, evidence: Evidence, extra_words: frozenset[str] = frozenset()) -> str | None:
    """Read a free-text claim as typed claims: None when it is one (its words are the vocabulary of
    claims about its cited items and the relations it states hold), else why it cannot be proved."""
    names = evidence.context.unit_names
    unit = evidence.context.unit_kind
    extra = unconfirmable_words(claim.text, names, extra_words)
    if extra:
        return f"states what its evidence cannot confirm ({', '.join(dict.fromkeys(extra[:4]))})"
    named, rest = split_mentions(_ID.sub(" ", claim.text), names)
    low = rest.lower()  # the relation's words, with the names blanked: a feature named 'above' says nothing
    denied = denies(claim.text, names)
    if denied:
        return denied
    has_number = bool(_NUM.search(rest))
    ids_in_text = {m.group(0).rstrip(".") for m in _ID.finditer(claim.text)}
    cites = set(claim.cites) | ids_in_text
    items = evidence.items()
    cited_units = [n for n in named if f"{unit}:{n}" in cites or f"profile:{n}" in cites]
    kinds = set()  # the kinds the sentence reads as, each with what it needs: its items cited, a fact stated
    for position, pattern in _POSITION:
        if cited_units and re.search(pattern, low) and (re.search(r"\b(normal|range|usual|typical)\b", low) or has_number):
            kinds.add("range")
            item = items.get(f"{unit}:{cited_units[0]}")
            held = item.position if isinstance(item, Attribution) else None
            if len(cited_units) == 1 and held is not None and held != position:
                return f"says {quote(cited_units[0])} is {position} its normal range, but it is {held}"
    if cited_units and has_number and re.search(r"%|\b(share|accounts?|contribut\w*|percent)\b", low):
        kinds.add("share")
    if cited_units and re.search(r"\b(main|largest|biggest|top|primary|chief|strongest|greatest|drivers?|drives|driving|"
                                 r"responsible)\b", low) and not re.search(r"\b(second|third|\d+(st|nd|rd|th))\b", low):
        kinds.add("rank")
        top = evidence.attributions[0].unit if evidence.attributions else None
        if len(cited_units) == 1 and top is not None and cited_units[0] != top:
            return f"says {quote(cited_units[0])} contributes most, but {quote(top)} does"
    if any(c.startswith("exemplar:") for c in cites) and (ids_in_text or has_number):
        kinds.add("exemplar")
        named_ex = [i for i in ids_in_text if i.startswith("exemplar:")]
        first = evidence.exemplars[0].id if evidence.exemplars else None
        if (len(named_ex) == 1 and first is not None and named_ex[0] != first and re.search(r"\b(closest|nearest)\b", low)
                and not re.search(r"\b(second|third|next|other|\d+(st|nd|rd|th))\b|-closest|-nearest", low)):
            return f"calls {named_ex[0]} the closest normal exemplar, but {first} is"
    if "restoration" in cites and (named or has_number) and re.search(r"\b(normal version|restor\w*|change\w*)\b", low):
        kinds.add("restoration")
    if any(c.startswith("profile:") for c in cites) and cited_units and has_number:
        kinds.add("profile")
    if any(c.startswith("compare:") for c in cites) and (named or has_number):
        kinds.add("comparison")
    if "verdict" in cites and (has_number or re.search(
            r"\b(anomal\w*|abnormal|flag\w*|significan\w*|outlier)\b", low)):
        kinds.add("verdict")
    if not kinds:
        return ("is not a claim of any kind its cited evidence can prove (a range, share, rank, exemplar, restoration, "
                "profile, comparison or the verdict, stating a name, number or id)")
    return None
