"""The case report: pydantic models of a verdict, its evidence and its verified explanation.

Every evidence item has a stable ``id`` that claims cite:

- ``verdict``                  the calibrated verdict
- ``feature:<name>``           one feature's attribution, value and normal range
- ``exemplar:<row id>``        one nearest normal exemplar
- ``restoration``              the restored normal version and its per-feature deltas
- ``compare:<other id>``       the case beside another row or exemplar   } added during a chat
- ``profile:<name>``           a feature's training distribution          } investigation

Features looked up during an investigation beyond the top ones are ``feature:<name>`` items too
(``Evidence.lookups``).

``anomalens.schema.Attribution`` is the report's view of one feature (value, normal range,
contribution); the detectors' array-valued ``anomalens.detectors.Attribution`` is what it is
built from.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Attribution",
    "Claim",
    "Comparison",
    "Context",
    "Event",
    "Evidence",
    "ExpectedSequence",
    "Incident",
    "LogLine",
    "LogTemplate",
    "Exemplar",
    "Explanation",
    "Item",
    "ORDINARY_WORDS",
    "ITEM_ID",
    "ITEM_KINDS",
    "UNIT_KINDS",
    "FeatureDifference",
    "FeatureDelta",
    "FeatureProfile",
    "Report",
    "Restoration",
    "Segment",
    "Verdict",
    "fmt",
    "is_ordinary_word",
    "quote",
    "split_mentions",
]


def fmt(x: float) -> str:
    """How numbers are written in explanations: 4 significant digits (the verifier's rounding)."""
    if x is None or not math.isfinite(x):
        return str(x)
    return f"{x:.4g}"


# Words that prose about a case uses on its own (function words and the templates' vocabulary): a
# feature named like one of them is a mention only when quoted ('score'), never as a bare word.
ORDINARY_WORDS = frozenset("""
a an the and or but not no nor of in on at to from by for with as is are was were be been being it its this
that these those there here than then so if into over under above below within between about around after
before up down out off all any each every some most more less few many much one two three case cases row rows
value values score scores normal anomalous anomaly anomalies range median mean share feature features exemplar
exemplars distance nearest closest next version change changes restored restoration observed verdict p
cut off cutoff threshold alpha level rate detector model training train data set sets point points
has have had gives given accounts account against differs differ most least high low time times count id
""".split())

_QUOTES = (("'", "'"), ('"', '"'), ("`", "`"), ("\u2018", "\u2019"), ("\u201c", "\u201d"))


def quote(name: str) -> str:
    """How explanations write a feature name: in single quotes, so it is read as a name, not a word."""
    return f"'{name}'"


def is_ordinary_word(name: str) -> bool:
    """Whether a feature name could be ordinary words of a sentence (then only its quoted form counts):
    a word of the claims' vocabulary, a short word, words that all are ("is anomalous"), or a number
    ("1.5")."""
    low = name.strip().lower()
    if re.fullmatch(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?%?", low):
        return True
    words = low.split()
    return bool(words) and all(w in ORDINARY_WORDS or (w.isalpha() and len(w) <= 2) for w in words)


def split_mentions(text: str, names: list[str], *, quoted_only: bool = False) -> tuple[list[str], str]:
    """(the names ``text`` mentions, case-insensitively; ``text`` with them blanked).

    A name is mentioned when it appears quoted ('name', "name", `name`, curly quotes), or as a
    whole word when it is not an ordinary word (see ``is_ordinary_word``: a feature called "a" or
    "score" is not mentioned by "a score"). Longest names first, each blanked once found, so "age"
    is not found inside "page_age" and a feature name cannot be mistaken for the words or numbers of
    the text around it. ``quoted_only``: only quoted forms count (a sentence we rendered, which quotes
    every name it writes: a feature named "is anomalous" is then not found in "The case is anomalous").
    """
    found = []
    for name in sorted(names, key=len, reverse=True):
        text, hits = _mention_pattern(name, quoted_only).subn(" ", text)
        if hits:
            found.append(name)
    return found, text


@functools.lru_cache(maxsize=4096)
def _mention_pattern(name: str, quoted_only: bool = False) -> re.Pattern:
    """The regex of ``name``'s mentions (see ``split_mentions``), compiled once per name."""
    pattern = "|".join(re.escape(a) + re.escape(name) + re.escape(b) for a, b in _QUOTES)
    if not quoted_only and not is_ordinary_word(name):
        pattern += r"|(?<![\w])" + re.escape(name) + r"(?![\w])"
    return re.compile(pattern, flags=re.IGNORECASE)


# Prefixes of evidence ids: units of each modality (feature of a row; channel and segment of a series;
# event and line of a log) and the items an investigation adds.
UNIT_KINDS = ("feature", "channel", "segment", "event", "line")
ITEM_KINDS = (*UNIT_KINDS, "exemplar", "profile", "compare", "template")
# an evidence id written in text ("feature:memory", "exemplar:17"), as the verifier and the modalities read it
ITEM_ID = re.compile(r"(?<![\w:])(?:" + "|".join(ITEM_KINDS) + r"):[^\s,;()\[\]]+")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class Verdict(_Model):
    id: Literal["verdict"] = "verdict"
    anomalous: bool
    score: float  # detector score, higher = more anomalous
    p_value: float  # conformal p-value against held-out normal rows
    alpha: float  # the level asked for: false-positive rate per case, or false discovery rate of a batch
    cutoff: float  # the p-value cut-off applied: alpha for one case, the Benjamini-Hochberg cut-off in a batch
    threshold: float | None  # the score above which a row is flagged at the cut-off (None: no score can be)
    detector: str
    method: str = "conformal p-value below alpha"
    p_value_method: str = "conformal"  # exact conformal, or the GPD tail's extrapolation beyond the calibration scores
    approximate: bool = False  # the p-value is the tail's extrapolation, not an exact conformal p-value
    note: str | None = None  # e.g. "not significant at this batch size; per-row p = ..."

    def numbers(self) -> list[float]:
        return [n for n in (self.score, self.p_value, self.alpha, self.cutoff, self.threshold) if n is not None]


class Attribution(_Model):
    """One feature's part in the verdict."""

    id: str  # "feature:<name>"
    feature: str
    value: float  # the case's value
    contribution: float  # the detector's attribution, higher = more responsible
    share: float  # contribution / total of the case's contributions (0..1; 0 when the total is 0)
    abnormal: bool  # contribution above the 99% level seen on normal rows
    normal_low: float  # 1% quantile of the training rows
    normal_median: float
    normal_high: float  # 99% quantile of the training rows
    position: Literal["below", "within", "above"]  # value relative to [normal_low, normal_high]
    exemplar_mean: float | None = None  # mean value of this feature in the nearest normal exemplars

    def numbers(self) -> list[float]:
        nums = [self.value, self.contribution, self.share, 100 * self.share, self.normal_low, self.normal_median,
                self.normal_high, self.value - self.normal_median]
        return nums + ([self.exemplar_mean] if self.exemplar_mean is not None else [])


class Exemplar(_Model):
    """A nearest normal case from the exemplar store."""

    id: str  # "exemplar:<row id>"
    row_id: str
    distance: float  # in the detector's embedding space
    values: dict[str, float]
    source: str | None = None
    timestamp: str | None = None
    weight: int = 1  # training rows this exemplar stands for (the store keeps a sample beyond a size)

    def numbers(self) -> list[float]:
        return [self.distance, *self.values.values()]


class FeatureDelta(_Model):
    feature: str
    observed: float
    restored: float
    delta: float  # restored - observed


class Restoration(_Model):
    """The normal version of the case: what the detector says it should have looked like."""

    id: Literal["restoration"] = "restoration"
    values: dict[str, float]
    deltas: list[FeatureDelta]  # largest relative change first
    score_after: float | None = None  # the detector's score of the restored row
    note: str | None = None  # e.g. that no restoration scoring below the single-case threshold was found

    def numbers(self) -> list[float]:
        nums = [n for d in self.deltas for n in (d.observed, d.restored, d.delta, abs(d.delta))]
        return nums + ([self.score_after] if self.score_after is not None else [])


class FeatureDifference(_Model):
    feature: str
    value: float  # the case's value
    other: float  # the other case's value
    difference: float  # other - value


class Comparison(_Model):
    """The case beside another one (a row of the data or a stored normal exemplar)."""

    id: str  # "compare:<other id>"
    other_id: str  # a row id of the data, or "exemplar:<row id>"
    distance: float  # in the detector's embedding space
    other_score: float  # the detector's score of the other case
    other_p_value: float
    other_anomalous: bool  # the other case's verdict at the same alpha
    differences: list[FeatureDifference]  # largest robust-scaled difference first

    def numbers(self) -> list[float]:
        nums = [self.distance, self.other_score, self.other_p_value]
        try:  # a numeric case id ("against case 17") is a number the claim may write
            nums.append(float(self.other_id))
        except ValueError:
            pass
        return nums + [n for d in self.differences for n in (d.value, d.other, d.difference, abs(d.difference))]


class FeatureProfile(_Model):
    """One feature's training distribution (the normal rows the detector was fitted on)."""

    id: str  # "profile:<name>"
    feature: str
    normal_low: float  # 1% quantile
    normal_median: float
    normal_high: float  # 99% quantile
    quantiles: dict[str, float]  # "1%" -> value, ...
    n_train: int

    def numbers(self) -> list[float]:
        levels = [float(q.rstrip("%")) for q in self.quantiles]  # "the 1% quantile" states the level too
        return [self.normal_low, self.normal_median, self.normal_high, *self.quantiles.values(), self.n_train, *levels]


class Event(_Model):
    """An anomaly event of a series: a run of flagged time points (the series modality)."""

    id: Literal["event"] = "event"
    index: int  # 1, 2, ... in time order within the analysed series
    start: str  # time of the first flagged point (ISO 8601, or the position for a series without timestamps)
    end: str  # time of the last flagged point
    peak: str  # time of the highest point score
    n_points: int
    peak_score: float  # the point score at the peak (the verdict's score)
    channels: list[str]  # channels whose attribution over the event is beyond their normal level, largest first
    note: str | None = None  # e.g. how many missing values the input had filled

    def numbers(self) -> list[float]:
        return [float(self.n_points), self.peak_score, *_positions(self.start, self.end, self.peak)]

    def stamps(self) -> list[str]:
        """Times a claim citing this item may write (read as times, not numbers)."""
        return [self.start, self.end, self.peak]


class Segment(_Model):
    """One channel over an event: observed and restored values, and the channel's most deviating point."""

    id: str  # "segment:<channel>:<start>..<end>"
    channel: str
    start: str
    end: str
    times: list[str]  # the event's times (at most MAX_SEGMENT_POINTS, evenly picked)
    observed: list[float]
    restored: list[float]  # the detector's restoration: what the channel should have looked like
    peak_time: str  # where observed and restored differ most
    peak_value: float  # observed at peak_time
    expected: float  # restored at peak_time
    normal_low: float  # the channel's 1% quantile at that time (the same phase of the period, when there is one)
    normal_high: float  # 99% quantile
    share: float  # the channel's share of the event's attribution

    def numbers(self) -> list[float]:
        return [self.peak_value, self.expected, self.normal_low, self.normal_high, self.share, 100 * self.share,
                self.expected - self.peak_value, *_positions(self.start, self.end, self.peak_time)]

    def stamps(self) -> list[str]:
        return [self.start, self.end, self.peak_time]


class LogLine(_Model):
    """One raw line of a log case: where it is, its template, and how probable the next-event model
    of normal logs found it in its context (the logs modality). ``text`` is the raw line (cut):
    untrusted, shown escaped in reports and never written into a claim."""

    id: str  # "line:<file>:<n>"
    source: str
    lineno: int
    template_id: str  # "E<n>" (learnt from normal logs) or "N<n>" (never seen in normal logs)
    seen: bool  # the template was seen in the normal training logs
    probability: float  # the next-event model's probability of this event at this place
    expected: str | None = None  # the template the model found most likely here, when it is another one
    expected_probability: float | None = None
    time: str | None = None
    text: str = ""

    def numbers(self) -> list[float]:
        nums = [float(self.lineno), self.probability, 100 * self.probability]
        return nums + ([self.expected_probability, 100 * self.expected_probability]
                       if self.expected_probability is not None else [])

    def stamps(self) -> list[str]:
        return [self.time] if self.time else []


class LogTemplate(_Model):
    """A template of the case: its text (untrusted, shown escaped, never in a claim) and how often
    normal logs hold it."""

    id: str  # "template:<id>"
    template_id: str
    text: str
    seen: bool
    training_lines: int  # lines of the normal logs with this template
    training_share: float  # of all normal lines
    normal_cases: float  # share of normal cases that hold it at least once

    def numbers(self) -> list[float]:
        return [float(self.training_lines), self.training_share, 100 * self.training_share, self.normal_cases,
                100 * self.normal_cases]


class Incident(_Model):
    """Anomalous log cases merged into one incident (cases sharing their most abnormal template, or
    adjacent windows), ranked by their strongest case's p-value."""

    id: Literal["incident"] = "incident"
    index: int  # rank: 1 is the most anomalous
    start: str | None = None  # time of the first line (None when the logs carry no times)
    end: str | None = None
    n_cases: int
    n_lines: int
    cases: list[str]  # case keys (sessions or windows), strongest first (at most 20)
    templates: list[str]  # the abnormal templates of its cases, most frequent first
    unseen: list[str]  # templates never seen in normal logs
    p_value: float  # its strongest case's p-value

    def numbers(self) -> list[float]:
        return [float(self.index), float(self.n_cases), float(self.n_lines), self.p_value]

    def stamps(self) -> list[str]:
        return [t for t in (self.start, self.end) if t]


class ExpectedSequence(_Model):
    """The case's events around its most surprising place, beside what the model of normal logs
    expected there (the restoration of a log case)."""

    id: Literal["sequence"] = "sequence"
    observed: list[str]  # template ids, in order
    expected: list[str]  # the most likely template at each place ("END": the case should have ended)
    locations: list[str]  # "<file>:<n>" of each observed event
    first: int  # position of the first shown event in the case (0-based)

    def numbers(self) -> list[float]:
        return [float(len(self.observed))]


def _positions(*times: str) -> list[float]:
    """The times of a series without timestamps are positions: numbers a claim may state."""
    return [float(t) for t in times if t.lstrip("-").isdigit()]


class Context(_Model):
    feature_names: list[str]  # the names of the evidence units (features of a row for the tabular modality)
    unit_kind: str = "feature"  # the prefix of the units' evidence ids: "<unit_kind>:<name>"
    n_train: int
    detector: str
    attribution_method: str
    modality: str = "tabular"
    units_title: str = ""  # what a report calls the units ("Features", "Channels", "Templates"; the modality's)


class Evidence(_Model):
    case_id: str
    verdict: Verdict
    attributions: list[Attribution]  # top features by contribution
    exemplars: list[Exemplar]
    restoration: Restoration | None = None
    context: Context
    # gathered during an investigation (chat tools): features looked up beyond the top ones, comparisons
    lookups: list[Attribution] = Field(default_factory=list)
    profiles: list[FeatureProfile] = Field(default_factory=list)
    comparisons: list[Comparison] = Field(default_factory=list)
    event: Event | None = None  # a series case: the event, its segments (one per involved channel) and plot
    segments: list[Segment] = Field(default_factory=list)
    # a log case: its most surprising lines, its templates, its expected sequence and its incident
    lines: list[LogLine] = Field(default_factory=list)
    templates: list[LogTemplate] = Field(default_factory=list)
    sequence: ExpectedSequence | None = None
    incident: Incident | None = None

    def items(self) -> dict[str, Item]:
        """Every citable item by id."""
        out: dict[str, Item] = {"verdict": self.verdict}
        out.update({a.id: a for a in self.lookups})
        out.update({a.id: a for a in self.attributions})
        out.update({e.id: e for e in self.exemplars})
        if self.restoration is not None:
            out["restoration"] = self.restoration
        out.update({p.id: p for p in self.profiles})
        out.update({c.id: c for c in self.comparisons})
        if self.event is not None:
            out["event"] = self.event
        out.update({g.id: g for g in self.segments})
        out.update({ln.id: ln for ln in self.lines})
        out.update({t.id: t for t in self.templates})
        if self.sequence is not None:
            out["sequence"] = self.sequence
        if self.incident is not None:
            out["incident"] = self.incident
        return out

    def with_items(self, *new: "Attribution | FeatureProfile | Comparison | LogTemplate | LogLine") -> "Evidence":
        """A copy that also holds these looked-up items (an id already held is replaced; a top
        feature's attribution is kept as it is)."""
        top = {a.id for a in self.attributions}
        update = {}
        for field, kind in (("lookups", Attribution), ("profiles", FeatureProfile), ("comparisons", Comparison),
                            ("templates", LogTemplate), ("lines", LogLine)):
            add = [x for x in new if isinstance(x, kind) and x.id not in top]
            ids = {x.id for x in add}
            update[field] = [x for x in getattr(self, field) if x.id not in ids] + add
        return self.model_copy(update=update)

    def features_of(self, item_id: str) -> set[str]:
        """Unit (feature) names an item speaks about."""
        item = self.items()[item_id]
        if isinstance(item, Attribution):
            return {item.feature}
        if isinstance(item, Exemplar):
            return set(item.values)
        if isinstance(item, Restoration):
            return {d.feature for d in item.deltas}
        if isinstance(item, Comparison):
            return {d.feature for d in item.differences}
        if isinstance(item, FeatureProfile):
            return {item.feature}
        if isinstance(item, Segment):
            return {item.channel}
        if isinstance(item, Event):
            return set(item.channels)
        if isinstance(item, LogLine):
            return {item.template_id, *([item.expected] if item.expected else [])}
        if isinstance(item, LogTemplate):
            return {item.template_id}
        if isinstance(item, ExpectedSequence):
            return set(item.observed) | set(item.expected)
        if isinstance(item, Incident):
            return set(item.templates) | set(item.unseen)
        return set()

    def counts(self) -> list[float]:
        """Counts a claim may state ("3 features", "5 exemplars")."""
        return [len(self.attributions), len(self.exemplars), sum(a.abnormal for a in self.attributions)]


Item = (Verdict | Attribution | Exemplar | Restoration | FeatureProfile | Comparison | Event | Segment | LogLine
        | LogTemplate | ExpectedSequence | Incident)


class Claim(_Model):
    """One statement about the case. A typed claim (``kind`` set) is data: its kind from the
    modality's closed vocabulary, the evidence ids it is about and its relation fields (``params``,
    e.g. ``{"position": "above"}``); its ``text`` is rendered from the evidence by the modality. A
    claim without a kind is free text, shown only when the verifier can read it as typed claims."""

    text: str
    cites: list[str] = Field(default_factory=list)  # evidence ids
    kind: str | None = None  # a typed claim's kind (see the modality's ``claim_kinds``); None: free text
    params: dict[str, str] = Field(default_factory=dict)  # a typed claim's relation fields
    verified: bool = False
    reason: str | None = None  # why the verifier rejected it


class Explanation(_Model):
    text: str
    claims: list[Claim]  # what is shown: every one passed the verifier
    rejected: list[Claim] = Field(default_factory=list)  # dropped claims, with the verifier's reasons
    source: str  # "template" or "llm:<model>"
    grounded: bool  # True only when every shown claim passed the verifier
    # the model's own reading of the case (what a pattern usually means): never verified, shown apart and
    # labelled; dropped (interpretation_note says why) when it states a number, name or id absent from the
    # evidence or contradicts the verdict
    interpretation: str | None = None
    interpretation_note: str | None = None
    note: str | None = None  # e.g. why the template was used instead of the configured LLM
    prompt_hash: str | None = None  # hash of the prompt templates that produced the draft
    latency_s: float | None = None
    completion_tokens: int | None = None  # tokens the LLM generated for this explanation (all rounds)
    generation_s: float | None = None  # seconds the LLM spent generating them


class Report(_Model):
    evidence: Evidence
    explanation: Explanation
    plot: str | None = None  # a series event's PNG (written by ``anomalens.modalities.series.plot``), when one was asked for

    @property
    def verdict(self) -> Verdict:
        return self.evidence.verdict

    def to_markdown(self) -> str:
        """A human-readable report: verdict, evidence tables, explanation with citations."""
        ev, v = self.evidence, self.evidence.verdict
        word = "ANOMALOUS" if v.anomalous else "normal"
        if not v.anomalous and v.note:
            word = "not flagged"
        lines = [
            f"# Case {_md(ev.case_id)}: {word}",
            "",
            f"- score {fmt(v.score)} (threshold {fmt(v.threshold)}), p-value {fmt(v.p_value)} (cut-off {fmt(v.cutoff)}, "
            f"alpha {fmt(v.alpha)})",
            f"- detector: {_md(v.detector)}; verdict: {v.method}; p-value: {v.p_value_method}",
            *([f"- note: {_md(v.note)}"] if v.note else []),
            *_event_lines(ev, self.plot),
            *_log_lines(ev),
            "",
            f"## {ev.context.units_title or ev.context.unit_kind.capitalize() + 's'}",
            "",
            f"| {ev.context.unit_kind} | value | normal range (1%-99%) | median | nearest normal mean | share of score | abnormal |",
            "|---|---:|---|---:|---:|---:|---|",
        ]
        for a in ev.attributions:
            ex = "-" if a.exemplar_mean is None else fmt(a.exemplar_mean)
            lines.append(
                f"| {_md(a.feature)} | {fmt(a.value)} | {fmt(a.normal_low)} to {fmt(a.normal_high)} | {fmt(a.normal_median)} "
                f"| {ex} | {100 * a.share:.1f}% | {'yes' if a.abnormal else 'no'} |"
            )
        if ev.exemplars:
            lines += ["", "## Nearest normal exemplars", "", "| id | distance | source |", "|---|---:|---|"]
            lines += [f"| {_md(e.id)} | {fmt(e.distance)} | {_md(e.source or '-')} |" for e in ev.exemplars]
        if ev.restoration is not None:
            lines += ["", "## Normal version (restoration)", "", f"| {ev.context.unit_kind} | observed | restored | change |", "|---|---:|---:|---:|"]
            lines += [
                f"| {_md(d.feature)} | {fmt(d.observed)} | {fmt(d.restored)} | {fmt(d.delta)} |"
                for d in ev.restoration.deltas[:10]
            ]
            if ev.restoration.note:
                lines += ["", f"_{_md(ev.restoration.note)}_"]
        ex = self.explanation
        lines += ["", f"## Explanation ({ex.source}; {'verified' if ex.grounded else 'NOT verified'})", ""]
        lines += [f"- {_md(c.text)} \\[{_md(', '.join(c.cites))}\\]" for c in ex.claims]
        if ex.interpretation:
            lines += ["", f"## Interpretation ({_md(ex.source)}; the model's reading, NOT verified)", "",
                      _md(ex.interpretation)]
        if ex.note:
            lines += ["", f"_{_md(ex.note)}_"]
        if ex.rejected:
            lines += ["", f"_{len(ex.rejected)} draft claim(s) failed verification and are not shown._"]
        return "\n".join(lines) + "\n"


def _event_lines(ev: Evidence, plot: str | None) -> list[str]:
    """A series case's event, its segments and plot, as markdown lines."""
    e = ev.event
    if e is None:
        return []
    lines = ["", "## Event", "", f"- {e.n_points} point(s) from {_md(e.start)} to {_md(e.end)}, peak at {_md(e.peak)}",
             f"- channels involved: {_md(', '.join(e.channels) or 'none beyond their normal level')}"]
    lines += [f"- note: {_md(e.note)}"] if e.note else []
    if plot and re.fullmatch(r"[\w.-]+\.png", plot):  # a name the plots module wrote, next to the report
        lines += [f"- plot: ![event {e.index}]({plot})"]
    if ev.segments:
        lines += ["", "| channel | peak time | observed | restored (expected) | normal range (1%-99%) | share |",
                  "|---|---|---:|---:|---|---:|"]
        lines += [f"| {_md(g.channel)} | {_md(g.peak_time)} | {fmt(g.peak_value)} | {fmt(g.expected)} | "
                  f"{fmt(g.normal_low)} to {fmt(g.normal_high)} | {100 * g.share:.1f}% |" for g in ev.segments]
    return lines


def _log_lines(ev: Evidence) -> list[str]:
    """A log case's incident, lines, templates and expected sequence, as markdown lines (log text escaped);
    none for a case that holds none of them."""
    out: list[str] = []
    i = ev.incident
    if i is not None:
        span = f" from {_md(i.start)} to {_md(i.end)}" if i.start else ""
        out += ["", f"## Incident {i.index}", "", f"- {i.n_cases} case(s), {i.n_lines} line(s){span}; strongest case p-value "
                f"{fmt(i.p_value)}", f"- cases: {_md(', '.join(i.cases))}",
                f"- abnormal templates: {_md(', '.join(i.templates) or 'none')}",
                f"- templates never seen in normal logs: {_md(', '.join(i.unseen) or 'none')}"]
    if ev.lines:
        out += ["", "## Most surprising lines", "", "| line | template | probability here | expected instead | text |",
                "|---|---|---:|---|---|"]
        for ln in ev.lines:
            exp = "-" if ln.expected is None else f"{_md(ln.expected)} ({fmt(ln.expected_probability)})"
            prob = fmt(ln.probability) if ln.seen else f"{fmt(ln.probability)} (never seen in normal logs)"
            out.append(f"| {_md(ln.source)}:{ln.lineno} | {_md(ln.template_id)} | {prob} | {exp} | `{_code(ln.text)}` |")
    if ev.templates:
        out += ["", "## Template texts", "", "| template | text | normal lines | share of normal cases |", "|---|---|---:|---:|"]
        out += [f"| {_md(t.template_id)} | `{_code(t.text)}` | {t.training_lines} | {100 * t.normal_cases:.1f}% |"
                for t in ev.templates]
    q = ev.sequence
    if q is not None:
        out += ["", "## Expected sequence", "", "| line | observed | expected by the model of normal logs |", "|---|---|---|"]
        out += [f"| {_md(loc)} | {_md(o)} | {_md(e) if e != o else '(same)'} |"
                for loc, o, e in zip(q.locations, q.observed, q.expected)]
    return out


def _code(text: str) -> str:
    """Untrusted log text inside a markdown code span: control characters stripped, backticks (which would
    end the span) and table bars replaced. Not HTML-escaped: a code span is literal, and its renderer
    escapes it (escaping here showed a masked ``<UUID>`` as ``&lt;UUID&gt;``)."""
    from anomalens.text import clip, strip_control

    return clip(strip_control(text), 160).replace("`", "'").replace("|", "¦")


def _md(text: str) -> str:
    """Untrusted text (feature names, sources, claim text) as inert markdown: no HTML, links,
    images or table breaks, no control characters."""
    from anomalens.text import for_markdown

    return for_markdown(text)
