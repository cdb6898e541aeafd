"""The verifier: no claim reaches a user unless the evidence it cites backs every fact in it.

It accepts only what it can prove. A **typed claim** (``Claim.kind``) is checked exactly by its
modality: its kind, cited ids and relation fields must be one of the true claims the evidence
supports, and its text is the modality's rendering. A **free-text** claim must also read as typed
claims (its modality's ``parse_claim``): every word is a unit name, an id, a number or the
vocabulary of claims, and the relations it states hold ("below its normal range" for a value
above it is rejected); a sentence about causes, deployments or firmware is not a claim the
evidence can prove. A model's **interpretation** is checked by ``check_interpretation`` and is
never shown as verified.

A claim is rejected when it

- cites no evidence, or an id that the evidence does not contain;
- names a feature that none of its cited items speaks about;
- states a number that is not, up to rounding, a number of its cited items (or a count of the
  evidence: features shown, exemplars, abnormal features);
- (free text) states a number in a role its cited items give it nowhere: the words next to a number
  say what it is (a value right after a name, "%" a share, "p-value" a p-value, "distance", "score",
  "range" or "normal level" a bound, "peaks at" a value), and it must be a number of that role
  ("'cpu' is 2.1, above its normal range" where 2.1 is the range's top and 'cpu' is 6.3; "'cpu'
  accounts for 6.3%" where 6.3 is its value); a number whose words say nothing keeps the check above;
- names an exemplar id that the evidence does not contain;
- contradicts the verdict (calls an anomalous case normal, or the reverse);
- asks a question, or states nothing checkable (no number, feature, id or verdict);
- (typed) is not one of the true typed claims of its modality; (free text) cannot be read as one.

Rounding: a number written with r decimals matches a value within 0.5 * 10^-r, or within 0.5%
relative (rounding to 3 significant digits); percentages match shares.
"""

from __future__ import annotations

import re

from anomalens.modalities import modality_of
from anomalens.schema import ITEM_ID as _ID
from anomalens.schema import Claim, Comparison, Evidence, quote, split_mentions

__all__ = ["check_interpretation", "cite_text", "verify", "verify_claim"]

_NUMBER = re.compile(r"(?<![\w.])[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w])")
_NEGATIONS = ("not anomalous", "no anomaly", "not an anomaly", "case is normal", "row is normal", "case looks normal",
              "say normal", "is not unusual")


def _numbers_in(text: str) -> list[tuple[float, int]]:
    """(value, decimals) of each number written in ``text``."""
    out = []
    for m in _NUMBER.finditer(text):
        tok = m.group(0).replace(",", "").replace("−", "-")
        mant = tok.lower().split("e")[0]
        decimals = len(mant.split(".")[1]) if "." in mant else 0
        if "e" in tok.lower():
            decimals = max(0, decimals - int(tok.lower().split("e")[1]))
        try:
            out.append((float(tok), decimals))
        except ValueError:
            continue
    return out


def _matches(x: float, decimals: int, values: list[float], either_sign: bool = True) -> bool:
    """Whether ``x``, written with ``decimals`` decimals, is one of ``values`` up to rounding (or, with
    ``either_sign``, minus one of them: a change may be written as a drop of its size)."""
    tol = 0.5 * 10.0 ** (-decimals) * (1 + 1e-9)
    for v in values:
        if v is None:
            continue
        for cand in ((v, -v) if either_sign else (v,)):
            if abs(x - cand) <= tol or (cand != 0 and abs(x - cand) <= 0.005 * abs(cand)):
                return True
    return False


def _foreign_number(text: str, values: list[float]) -> float | None:
    """The first number written in ``text`` that is none of ``values`` up to rounding, or None."""
    return next((x for x, decimals in _numbers_in(text) if not _matches(x, decimals, values)), None)


# ---------------------------------------------------------------- the role a sentence gives a number
# where each unit name stood: a private-use character per name (no word or digit character, so no pattern of
# words or numbers matches it), the first name mentioned U+E000, the next U+E001, ...
_NAME = "[\ue000-\uf8ff]"
_MARKED = re.compile(" " + _NAME + " ")  # a mark as ``_grounded`` writes it, spaces included
# the words before a number that say what it is (the nearest one in its clause decides)
_CUES = (("p", re.compile(r"p-values?|\bp values?|\bp\s*[=<>≤]|\bp of\b|\balpha\b|significance")),
         ("cut-off", re.compile(r"cut-?offs?|thresholds?")),
         ("distance", re.compile(r"\bdistances?\b|\baway\b")),
         ("score", re.compile(r"\bscor(?:e|es|ed|ing)\b")),
         ("bound", re.compile(r"\branges?\b|\bbetween\b|quantiles?|percentiles?|\bmedian\b|\blevels?\b|\btypical\b|"
                              r"\busual\b|\bstays? (?:below|under)\b")),
         ("value", re.compile(r"\b(?:peaks?|peaked|highest|maximum)\b|(?<!-)\bvalues?\b")))
_WANT = {"p": {"p"}, "cut-off": {"p", "score"}, "distance": {"distance"}, "score": {"score"}, "bound": {"bound"},
         "value": {"value"}, "share": {"share"}}
_ROLE_WORDS = {"p": "a p-value", "cut-off": "a cut-off", "distance": "a distance", "score": "a score",
               "bound": "a bound of a normal range or level", "value": "a value", "share": "a share"}
# a value right after a name: "'cpu' is 6.3", "'cpu' (6.3)", "'cpu' at about 6.3"
_AFTER_NAME = re.compile(_NAME + r"\s*(?:is|was|reads|read|measures|measured|equals|=|:|at|of|sits at|lies at|stands at|"
                         r"stays at|remains at|reaches|reached|\()?\s*(?:about|around|roughly|approximately|nearly|almost|"
                         r"just|only|exactly|~)?\s*$")
_BEFORE_NAME = re.compile(r"^\s*,?\s*" + _NAME)  # "At 6.3, 'cpu' lies above its range"
_COMPARATIVE = re.compile(r"^\s*(?:units?\s+)?(?:above|below|higher|lower|more|less|over|under)\b")
_CLAUSE = re.compile(r"[,;]|\b(?:and|but|while|whereas)\b")
_PAIR = re.compile(r"(?<![\w.])([-+−]?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*(?:to|and|through|–|-)\s*$")


def _clause_before(low: str, start: int) -> str:
    """The words of the number at ``low[start]``'s clause before it (at most 60 characters)."""
    before = low[max(0, start - 60):start]
    return before[max((m.end() for m in _CLAUSE.finditer(before)), default=0):]


def _role(low: str, start: int, end: int) -> str | None:
    """The role the words around the number at ``low[start:end]`` give it, or None when they say none."""
    after = low[end:end + 16]
    if re.match(r"\s*(?:%|percent\b|per cent\b)", after):
        return "share"
    before = low[max(0, start - 60):start]
    pair = _PAIR.search(before)  # the second number of "-2.4 to 2.1" or "between 1 and 3": the first one's role
    if pair:
        first = start - len(before) + pair.start(1)
        return _role(low, first, first + len(pair.group(1)))
    if _AFTER_NAME.search(before) or (_BEFORE_NAME.match(after) and re.search(r"(?:^|[.:;]|\bat|\bof|\bwith)\s*$", before)):
        return "value"
    clause, best, role = _clause_before(low, start), -1, None
    for name, pattern in _CUES:
        for m in pattern.finditer(clause):
            if m.end() > best:
                best, role = m.end(), name
    return role


def _subject(low: str, start: int, end: int) -> str | None:
    """The marker of the unit a number at ``low[start:end]`` is about: the name nearest before it in its
    clause ("'cpu' is 6.3 and 'memory' is 0.3"), else right after it ("At 6.3, 'cpu' ..."), else the
    first after it in its clause ("87% comes from 'cpu' and 5% from 'memory'"); None if none."""
    found = re.findall(_NAME, _clause_before(low, start))
    if found:
        return found[-1]
    after = low[end:end + 60]
    after = after[:next((m.start() for m in _CLAUSE.finditer(after) if m.start() > 0), len(after))]
    later = re.search(_NAME, after)
    return later.group(0) if later else None


def _miscast_number(marked: str, marks: dict[str, str], named: list[str], evidence: Evidence,
                    cites: list[str]) -> str | None:
    """Why a free-text claim states a number in a role its cited items do not give it, or None. ``marked``:
    its text with ids and times blanked and each unit name ``named`` replaced by its mark (``marks``). A
    number about a unit (a value, share, bound or change next to its name, or in a sentence naming one
    unit) is held to the cited items about that unit (or about none)."""
    items = evidence.items()
    unit_of = {mark: name for name, mark in marks.items()}
    counts = [("count", float(n)) for n in evidence.counts()]
    roles = {c: items[c].number_roles() for c in cites}
    units = {c: evidence.units_of(c) for c in cites}
    low = marked.lower()
    for m in _NUMBER.finditer(low):
        role = _role(low, m.start(), m.end())
        if role is None:
            continue
        want = set(_WANT[role])
        if role == "value" and _COMPARATIVE.match(low[m.end():]):  # "'cpu' is 4.2 above its median"
            want.add("change")
        about = unit_of.get(_subject(low, m.start(), m.end()) or "") if want & {"value", "share", "bound", "change"} else None
        about = about or (named[0] if len(named) == 1 else None)
        pool = counts + [rv for c in cites if about is None or not units[c] or about in units[c] for rv in roles[c]]
        (x, decimals), = _numbers_in(m.group(0))
        if not any((r in want or r == "any") and _matches(x, decimals, [v], either_sign=r in ("change", "any"))
                   for r, v in pool):
            whose = f" of {quote(about)}" if about else ""
            return f"states {x:g} as {_ROLE_WORDS[role]}{whose}, which none of its cited items has"
    return None


def _reverses_verdict(low: str, evidence: Evidence) -> str | None:
    """Why lower-cased text (unit names already stripped) reverses the verdict, or None."""
    if evidence.verdict.anomalous and any(n in low for n in _NEGATIONS):
        return "contradicts the verdict (the case is anomalous)"
    if not evidence.verdict.anomalous and re.search(r"\bis (an )?anomal(ous|y)\b", low) and "not" not in low:
        return "contradicts the verdict (the case is not anomalous)"
    return None


def verify_claim(claim: Claim, evidence: Evidence) -> str | None:
    """None when the claim is grounded in the evidence it cites, else the reason it is not. A typed
    claim's text must be its kind's rendering from the evidence."""
    return _verified(claim, evidence, render=False)[1]


def _verified(claim: Claim, evidence: Evidence, *, render: bool) -> tuple[Claim, str | None]:
    """(the claim, why it is rejected or None). A typed claim is rendered once: with ``render`` its
    text becomes the rendering (a model chose kind, cites and params), else it must equal it."""
    modality = modality_of(evidence)
    if claim.kind is None:
        return claim, _grounded(claim, evidence) or modality.parse_claim(claim, evidence)
    rendered = modality.render_claim(claim.kind, claim.cites, claim.params, evidence)
    if rendered is None:
        return claim, modality.check_claim(claim, evidence) or "the evidence does not support it"
    if render:
        claim = claim.model_copy(update={"text": rendered.text})
    elif rendered.text != claim.text:
        return claim, "its text is not the rendering of its kind from the evidence"
    return claim, _grounded(claim, evidence, rendered=True)


def _grounded(claim: Claim, evidence: Evidence, *, rendered: bool = False) -> str | None:
    """The checks every claim passes: ids, names, numbers, something checkable, the verdict. A
    ``rendered`` claim's text is our rendering, which quotes every name it writes: only quoted names
    are names there (by position, never as words of the sentence)."""
    items = evidence.items()
    if not claim.cites:
        return "cites no evidence"
    unknown = [c for c in claim.cites if c not in items]
    if unknown:
        return f"cites unknown evidence ids {unknown[:3]}"
    text = claim.text.strip()
    if text.endswith("?"):
        return "asks a question instead of stating a fact"
    # exemplar or feature ids written in the text must exist (or be what a cited comparison compares with)
    compared = {items[c].other_id for c in claim.cites if isinstance(items[c], Comparison)}
    for m in _ID.finditer(text):
        ident = m.group(0).rstrip(".")
        if ident not in items and ident not in compared:
            return f"names {ident!r}, which is not in the evidence"
    # feature names: every one mentioned must be spoken about by a cited item
    cited_features = set().union(*(evidence.units_of(c) for c in claim.cites))
    marks: dict[str, str] = {}  # each name mentioned -> the character standing where it stood (``_NAME``)
    named, marked = split_mentions(_ID.sub(" ", text), evidence.context.unit_names, quoted_only=rendered,
                                   blank=lambda name: f" {marks.setdefault(name, chr(0xE000 + min(len(marks), 6399)))} ")
    times = False
    for c in claim.cites:  # the times of a cited event or segment are times, not numbers
        for t in sorted(getattr(items[c], "stamps", list)(), key=len, reverse=True):
            if not t.lstrip("-").isdigit() and t in marked:
                marked, times = marked.replace(t, " "), True
    stripped = _MARKED.sub(" ", marked)  # the text with names and times blanked
    for name in named:
        if name not in cited_features:
            return f"names {evidence.context.unit_kind} {name!r}, which its cited evidence does not contain"
    # numbers: each must be a number of a cited item (or a count of the evidence)
    values: list[float] = list(evidence.counts())
    for c in claim.cites:
        values += items[c].numbers()
    x = _foreign_number(stripped, values)
    if x is not None:
        return f"states {x:g}, which its cited evidence does not contain"
    if not rendered:  # our renderings put every number in its place; free text is read for the role it gives each
        miscast = _miscast_number(marked, marks, named, evidence, claim.cites)
        if miscast:
            return miscast
    # a claim must say something the evidence can confirm: a number, a feature, an id, or the verdict
    said_something = _numbers_in(stripped) or times or named or _ID.search(text) or re.search(
        r"\b(anomal\w*|normal|outlier|unusual)\b", stripped.lower())
    if not said_something:
        return "states nothing that its cited evidence could confirm"
    # the verdict is the detector's: a claim may not reverse it (feature names, which are untrusted
    # text, were stripped above, so a column named "... say normal" cannot trip or dodge this)
    return _reverses_verdict(stripped.lower(), evidence)


def check_interpretation(text: str, evidence: Evidence) -> str | None:
    """None when a model's interpretation may be shown (labelled, never as verified): it names no id,
    quoted name or number that is not in the evidence, and does not reverse the verdict."""
    items = evidence.items()
    for m in _ID.finditer(text):
        if m.group(0).rstrip(".") not in items:
            return f"names {m.group(0).rstrip('.')!r}, which is not in the evidence"
    names = set(evidence.context.unit_names)
    for name in re.findall(r"'([^']{1,80})'", text):
        if name not in names:
            return f"names {name!r}, which is not a {evidence.context.unit_kind} of the evidence"
    values: list[float] = list(evidence.counts())
    for item in items.values():
        values += item.numbers()
    _, stripped = split_mentions(_ID.sub(" ", text), evidence.context.unit_names)
    x = _foreign_number(stripped, values)
    if x is not None:
        return f"states {x:g}, which the evidence does not contain"
    return _reverses_verdict(stripped.lower(), evidence)


def verify(claims: list[Claim], evidence: Evidence) -> tuple[list[Claim], list[Claim]]:
    """Split claims into (verified, rejected); rejected ones carry the reason. Typed claims are
    rendered from the evidence first (a model chooses kinds and ids; the sentence is ours). A claim
    that says again what an earlier verified one said (a small model may choose one twice) is
    neither: it is left out once."""
    ok, bad, said = [], [], set()
    for c in claims:
        c, reason = _verified(c, evidence, render=True)
        if reason is None:
            if c.text in said:
                continue
            said.add(c.text)
            ok.append(c.model_copy(update={"verified": True, "reason": None}))
        else:
            bad.append(c.model_copy(update={"verified": False, "reason": reason}))
    return ok, bad


def cite_text(text: str, evidence: Evidence) -> list[Claim]:
    """Claims of free text (a model that answered in prose): one per sentence, citing the evidence
    items the sentence mentions (ids written out, features named, the verdict's and restoration's
    words, exemplars when it speaks of neighbours). A sentence that mentions nothing checkable cites
    nothing, so the verifier rejects it."""
    items = evidence.items()
    claims = []
    for sentence in (s.strip() for s in re.split(r"(?<=[.!?])\s+", text.strip())):
        if not sentence:
            continue
        cites = [m.group(0).rstrip(".") for m in _ID.finditer(sentence) if m.group(0).rstrip(".") in items]
        named, rest = split_mentions(_ID.sub(" ", sentence), evidence.context.unit_names)
        kind = evidence.context.unit_kind
        cites += [i for name in named for i in (f"{kind}:{name}", f"profile:{name}") if i in items]
        low = rest.lower()
        if re.search(r"p-value|p value|score|anomal|cut-off|threshold", low):
            cites.append("verdict")
        if "restoration" in items and re.search(r"normal version|restor|should (be|have)|would be", low):
            cites.append("restoration")
        if not any(c.startswith("exemplar:") for c in cites) and re.search(r"exemplar|neighbo|nearest|closest", low):
            cites += [e.id for e in evidence.exemplars]
        claims.append(Claim(text=sentence, cites=list(dict.fromkeys(cites))))
    return claims
