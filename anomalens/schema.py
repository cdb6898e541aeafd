"""The case report: pydantic models of a verdict, its evidence and its verified explanation.

Every evidence item has a stable ``id`` that claims cite:

- ``verdict``                  the calibrated verdict
- ``feature:<name>``           one feature's attribution, value and normal range
- ``exemplar:<row id>``        one nearest normal exemplar
- ``restoration``              the restored normal version and its per-feature deltas
- ``compare:<other id>``       the case beside another row or exemplar   } added during a chat
- ``profile:<name>``           a feature's training distribution          } investigation

Features looked up during an investigation beyond the top ones are ``feature:<name>`` items too
(``Evidence.lookups``). The items of a modality's own (a series' ``event`` and ``segment:...``, a
log case's ``line:...``, ``template:...``, ``sequence``, ``incident``) are ``EvidenceItem``
subclasses that each modality defines in its package and registers (``register_item``); they sit in
``Evidence.parts``, a list discriminated on ``kind``. A report saved when they were fields of their
own (``event``, ``segments``, ``lines``, ...) loads into ``parts``.

``anomalens.schema.Attribution`` is the report's view of one unit (a feature of a row, a channel, a
template: value, normal range, contribution); the detectors' array-valued
``anomalens.detectors.Contributions`` is what it is built from.
"""

from __future__ import annotations

import functools
import importlib
import math
import re
from dataclasses import dataclass
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PrivateAttr, SerializeAsAny, field_validator, model_validator

__all__ = [
    "Attribution",
    "Claim",
    "Comparison",
    "Context",
    "Evidence",
    "EvidenceItem",
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
    "Verdict",
    "View",
    "code_span",
    "fmt",
    "md",
    "register_item",
    "is_ordinary_word",
    "quote",
    "split_mentions",
    "time_positions",
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


def split_mentions(text: str, names: list[str], *, quoted_only: bool = False,
                   blank: str | Callable[[str], str] = " ") -> tuple[list[str], str]:
    """(the names ``text`` mentions, case-insensitively; ``text`` with them blanked).

    A name is mentioned when it appears quoted ('name', "name", `name`, curly quotes), or as a
    whole word when it is not an ordinary word (see ``is_ordinary_word``: a feature called "a" or
    "score" is not mentioned by "a score"). Longest names first, each blanked once found, so "age"
    is not found inside "page_age" and a feature name cannot be mistaken for the words or numbers of
    the text around it. ``quoted_only``: only quoted forms count (a sentence we rendered, which quotes
    every name it writes: a feature named "is anomalous" is then not found in "The case is anomalous").
    ``blank``: what each mention becomes (a space), or a function of the name giving it (the verifier
    marks where each name stood).
    """
    found = []
    for name in sorted(names, key=len, reverse=True):
        pattern = _mention_pattern(name, quoted_only)
        if callable(blank):
            if not pattern.search(text):
                continue
            text, hits = pattern.subn(blank(name), text)
        else:
            text, hits = pattern.subn(blank, text)
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


# a unit's name (a feature of a row, a channel of a series, a template of logs, a region of an image); reports
# saved before 2026-12-07 call it "feature"
UnitName = Annotated[str, Field(validation_alias=AliasChoices("unit", "feature"))]


# What a number of the evidence is, so that a free-text claim cannot state one as another ("'cpu' is 2.1"
# where 2.1 is its range's top, "'cpu' accounts for 6.3%" where 6.3 is its value): the verifier reads the
# role a sentence gives each number from the words around it and checks it against the numbers of that
# role. "any": a number of an item that names no roles (it may be stated in any role).
NUMBER_ROLES = ("value", "bound", "share", "change", "distance", "score", "p", "count", "any")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)

    def numbers(self) -> list[float]:
        return []

    def number_roles(self) -> list[tuple[str, float]]:
        """(role, number) for each number a claim citing this item may state (see ``NUMBER_ROLES``)."""
        return [("any", n) for n in self.numbers()]


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

    def number_roles(self) -> list[tuple[str, float]]:
        return [("score", self.score), ("p", self.p_value), ("p", self.alpha), ("p", self.cutoff),
                *([("score", self.threshold)] if self.threshold is not None else [])]


class Attribution(_Model):
    """One unit's part in the verdict (a feature of a row, a channel of a series, a template of logs...)."""

    id: str  # "<unit kind>:<name>", e.g. "feature:memory"
    unit: UnitName
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

    def number_roles(self) -> list[tuple[str, float]]:
        return [("value", self.value), ("score", self.contribution), ("share", self.share), ("share", 100 * self.share),
                ("bound", self.normal_low), ("bound", self.normal_median), ("bound", self.normal_high),
                ("change", self.value - self.normal_median),
                *([("bound", self.exemplar_mean)] if self.exemplar_mean is not None else [])]


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

    def number_roles(self) -> list[tuple[str, float]]:
        return [("distance", self.distance), *(("value", v) for v in self.values.values())]


class FeatureDelta(_Model):
    unit: UnitName
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

    def number_roles(self) -> list[tuple[str, float]]:
        roles = [(r, n) for d in self.deltas for r, n in (("value", d.observed), ("value", d.restored),
                                                           ("change", d.delta), ("change", abs(d.delta)))]
        return roles + ([("score", self.score_after)] if self.score_after is not None else [])


class FeatureDifference(_Model):
    unit: UnitName
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

    def number_roles(self) -> list[tuple[str, float]]:
        roles = [("distance", self.distance), ("score", self.other_score), ("p", self.other_p_value)]
        try:
            roles.append(("count", float(self.other_id)))
        except ValueError:
            pass
        return roles + [(r, n) for d in self.differences for r, n in (("value", d.value), ("value", d.other),
                                                                       ("change", d.difference),
                                                                       ("change", abs(d.difference)))]


class FeatureProfile(_Model):
    """One feature's training distribution (the normal rows the detector was fitted on)."""

    id: str  # "profile:<name>"
    unit: UnitName
    normal_low: float  # 1% quantile
    normal_median: float
    normal_high: float  # 99% quantile
    quantiles: dict[str, float]  # "1%" -> value, ...
    n_train: int

    def numbers(self) -> list[float]:
        levels = [float(q.rstrip("%")) for q in self.quantiles]  # "the 1% quantile" states the level too
        return [self.normal_low, self.normal_median, self.normal_high, *self.quantiles.values(), self.n_train, *levels]

    def number_roles(self) -> list[tuple[str, float]]:
        return [*(("bound", n) for n in (self.normal_low, self.normal_median, self.normal_high, *self.quantiles.values())),
                ("count", float(self.n_train)), *(("share", float(q.rstrip("%"))) for q in self.quantiles)]


class EvidenceItem(_Model):
    """An item of a case's evidence that its modality contributes (a series' event and segments, a
    log case's lines, templates, expected sequence and incident; each modality's ``items.py``).
    ``Evidence.parts`` holds them: a list discriminated on ``kind``. Each item answers what the
    verifier, the prompt and the report need without anyone knowing its kind: its ``id`` (what a
    claim cites), the unit names it speaks about (``units``), the numbers and times a claim citing
    it may state (``numbers``, ``stamps``), what a model is shown (``payload``) and how a report
    shows the case's items of its kind (``markdown``).

    A subclass sets ``kind`` (a ``Literal`` with its default), ``plural`` (the name the case's items
    of this kind go by: the prompt payload's key, and ``Evidence.<plural>`` to read them) and
    ``single`` (at most one per case, read as one item), and is added with ``register_item``.
    """

    kind: str
    id: str
    plural: ClassVar[str] = ""
    single: ClassVar[bool] = False

    def units(self) -> set[str]:
        return set()

    def numbers(self) -> list[float]:
        return []

    def stamps(self) -> list[str]:
        """Times a claim citing this item may write (read as times, not numbers)."""
        return []

    def payload(self) -> dict[str, Any]:
        """What a language model is shown of this item (untrusted text goes in data blocks)."""
        return self.model_dump(exclude={"id", "kind"})

    def headline(self) -> tuple[str, str] | None:
        """(title, detail): the line a surface prints above a case this item belongs to (the CLI chat's
        header), or None; plain text with the item's untrusted strings as they are (the surface escapes it)."""
        return None

    def label(self) -> str | None:
        """The name surfaces give the case this item leads ("event-2", "incident-3"), or None."""
        return None

    def brief(self, evidence: Evidence) -> dict[str, Any] | None:
        """The case this item leads as a row of a listing of cases (the CLI's tables, MCP's summaries):
        plain JSON values by snake_case column name, its untrusted strings as they are (a surface
        escapes and cuts them), or None."""
        return None

    def quote(self) -> tuple[str, str] | None:
        """(where, text): a piece of the raw input this item quotes (a log line), or None. Untrusted."""
        return None

    @classmethod
    def markdown(cls, items: list[EvidenceItem], evidence: Evidence, plot: str | None) -> list[str]:
        """A report's lines for the case's items of this kind (markdown, untrusted text escaped)."""
        return []


_ITEM_TYPES: dict[str, type[EvidenceItem]] = {}  # kind -> class
_BY_PLURAL: dict[str, type[EvidenceItem]] = {}  # plural -> class


def _item_types() -> None:
    """Make sure the modalities' item types are registered: a report read before any modality was
    imported (``from anomalens.schema import Report`` alone) has them looked up here, as plugins are
    (the schema is below the modalities and imports none of them by name)."""
    if not _ITEM_TYPES:
        importlib.import_module("anomalens.modalities")


def register_item(cls: type[EvidenceItem]) -> type[EvidenceItem]:
    """Add an evidence item type (a class decorator): ``Evidence.parts`` then reads its ``kind``."""
    kind = cls.model_fields["kind"].default
    if not isinstance(kind, str) or not kind or not cls.plural:
        raise TypeError(f"{cls.__name__} must set kind (a Literal with its default) and plural")
    _ITEM_TYPES[kind] = cls
    _BY_PLURAL[cls.plural] = cls
    return cls


def time_positions(*times: str) -> list[float]:
    """The times of a series without timestamps are positions: numbers a claim may state."""
    return [float(t) for t in times if t.lstrip("-").isdigit()]


class Context(_Model):
    # the names of the evidence units (features of a row, channels of a series, templates of logs); "feature_names"
    # in reports saved before 2026-12-07
    unit_names: list[str] = Field(validation_alias=AliasChoices("unit_names", "feature_names"))
    unit_kind: str = "feature"  # the prefix of the units' evidence ids: "<unit_kind>:<name>"
    n_train: int
    detector: str
    attribution_method: str
    modality: str = "tabular"
    units_title: str = ""  # what a report calls the units ("Features", "Channels", "Templates"; the modality's)


@dataclass(frozen=True)
class View:
    """A picture of a case for a model that reads images: PNG bytes and what it shows (the text a
    model that reads text only gets instead, and the caption a vision model reads before it)."""

    png: bytes
    caption: str


class _Pictures:
    """A case's views, held beside its evidence: not part of its value (two pieces of evidence that
    differ in pictures only are equal, as they are once saved and read back). Given as a function,
    they are drawn on first use only: most reports never meet a model that reads images. Pickled
    (sent to another process) they are left behind, like a saved report's."""

    __slots__ = ("_draw", "_views")

    def __init__(self, views: list[View] | Callable[[], list[View]] | None = None) -> None:
        self._draw = views if callable(views) else None
        self._views = None if callable(views) else list(views or [])

    @property
    def views(self) -> list[View]:
        if self._views is None:
            self._views, self._draw = list(self._draw()), None
        return self._views

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Pictures)

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self):
        return _Pictures, ()


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
    # the items the case's modality contributes (a series' event and segments; a log case's lines,
    # templates, expected sequence and incident): ``EvidenceItem`` subclasses, by ``kind``
    parts: list[SerializeAsAny[EvidenceItem]] = Field(default_factory=list)
    # pictures of the case its modality drew at inspection (an image's, its map's, its nearest normal's)
    # for a reasoner that reads images; kept in memory only: a report read back has none
    _pictures: _Pictures = PrivateAttr(default_factory=_Pictures)

    @property
    def views(self) -> list[View]:
        """The case's pictures for a vision model (see ``View``); empty for data that has none."""
        return list(self._pictures.views)

    def set_views(self, views: list[View] | Callable[[], list[View]]) -> None:
        """The case's pictures, or a function that draws them when they are first asked for."""
        self._pictures = _Pictures(views)

    @model_validator(mode="before")
    @classmethod
    def _legacy_fields(cls, data: Any) -> Any:
        """A report saved before ``parts`` held its modality's items as fields of their own
        (``event``, ``segments``, ``lines``, ``templates``, ``sequence``, ``incident``): read them
        into ``parts``; passed as keyword arguments, the same."""
        if not isinstance(data, dict):
            return data
        _item_types()
        if not any(k in _BY_PLURAL for k in data):
            return data
        data = dict(data)
        parts = list(data.get("parts") or [])
        for name, item_cls in _BY_PLURAL.items():
            if name not in data:
                continue
            value = data.pop(name)
            for v in ([] if value is None else [value] if item_cls.single else list(value)):
                parts.append({**v, "kind": item_cls.model_fields["kind"].default} if isinstance(v, dict) else v)
        data["parts"] = parts
        return data

    @field_validator("parts", mode="before")
    @classmethod
    def _typed_parts(cls, value: Any) -> Any:
        """Each part read as the item type its ``kind`` names (registered by its modality)."""
        if not isinstance(value, list):
            return value
        if value:
            _item_types()
        out = []
        for v in value:
            if isinstance(v, dict):
                item_cls = _ITEM_TYPES.get(v.get("kind"))  # type: ignore[arg-type]
                if item_cls is None:
                    raise ValueError(f"parts: kind must be one of {sorted(_ITEM_TYPES)}, got {v.get('kind')!r}")
                v = item_cls.model_validate(v)
            out.append(v)
        return out

    def __getattr__(self, name: str) -> Any:
        """The case's parts of one type by its ``plural`` (``evidence.segments``: a list;
        ``evidence.event``: the one item or None)."""
        item_cls = _BY_PLURAL.get(name)
        if item_cls is None:
            return super().__getattr__(name)  # type: ignore[misc]
        found = [p for p in self.__dict__.get("parts", []) if isinstance(p, item_cls)]
        return (found[0] if found else None) if item_cls.single else found

    def label(self) -> str:
        """The case's name on a surface: its leading item's (``event-2``, ``incident-3``) or its id."""
        return next(filter(None, (p.label() for p in self.parts)), None) or self.case_id

    def brief(self) -> dict[str, Any] | None:
        """The case as a row of a listing, from its leading item (``EvidenceItem.brief``); None for a
        case without one (a row, an image: a surface shows its verdict, score and top units)."""
        return next(filter(None, (p.brief(self) for p in self.parts)), None)

    def quotes(self) -> list[tuple[str, str]]:
        """The pieces of raw input the case's items quote (``EvidenceItem.quote``), in order. Untrusted."""
        return [q for p in self.parts if (q := p.quote()) is not None]

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
        out.update({p.id: p for p in self.parts})
        return out

    def with_items(self, *new: Attribution | FeatureProfile | Comparison | EvidenceItem) -> Evidence:
        """A copy that also holds these looked-up items (an id already held is replaced; a top
        feature's attribution is kept as it is)."""
        top = {a.id for a in self.attributions}
        update = {}
        for field, kind in (("lookups", Attribution), ("profiles", FeatureProfile), ("comparisons", Comparison),
                            ("parts", EvidenceItem)):
            add = [x for x in new if isinstance(x, kind) and x.id not in top]
            ids = {x.id for x in add}
            update[field] = [x for x in getattr(self, field) if x.id not in ids] + add
        return self.model_copy(update=update)

    def units_of(self, item_id: str) -> set[str]:
        """Unit names an item speaks about."""
        item = self.items()[item_id]
        if isinstance(item, Attribution):
            return {item.unit}
        if isinstance(item, Exemplar):
            return set(item.values)
        if isinstance(item, Restoration):
            return {d.unit for d in item.deltas}
        if isinstance(item, Comparison):
            return {d.unit for d in item.differences}
        if isinstance(item, FeatureProfile):
            return {item.unit}
        if isinstance(item, EvidenceItem):
            return item.units()
        return set()

    def counts(self) -> list[float]:
        """Counts a claim may state ("3 features", "5 exemplars")."""
        return [len(self.attributions), len(self.exemplars), sum(a.abnormal for a in self.attributions)]


Item = Verdict | Attribution | Exemplar | Restoration | FeatureProfile | Comparison | EvidenceItem


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
            f"# Case {md(ev.case_id)}: {word}",
            "",
            f"- score {fmt(v.score)} (threshold {fmt(v.threshold)}), p-value {fmt(v.p_value)} (cut-off {fmt(v.cutoff)}, "
            f"alpha {fmt(v.alpha)})",
            f"- detector: {md(v.detector)}; verdict: {v.method}; p-value: {v.p_value_method}",
            *([f"- note: {md(v.note)}"] if v.note else []),
            *_part_lines(ev, self.plot),
            "",
            f"## {ev.context.units_title or ev.context.unit_kind.capitalize() + 's'}",
            "",
            f"| {ev.context.unit_kind} | value | normal range (1%-99%) | median | nearest normal mean | share of score | abnormal |",
            "|---|---:|---|---:|---:|---:|---|",
        ]
        for a in ev.attributions:
            ex = "-" if a.exemplar_mean is None else fmt(a.exemplar_mean)
            lines.append(
                f"| {md(a.unit)} | {fmt(a.value)} | {fmt(a.normal_low)} to {fmt(a.normal_high)} | {fmt(a.normal_median)} "
                f"| {ex} | {100 * a.share:.1f}% | {'yes' if a.abnormal else 'no'} |"
            )
        if ev.exemplars:
            lines += ["", "## Nearest normal exemplars", "", "| id | distance | source |", "|---|---:|---|"]
            lines += [f"| {md(e.id)} | {fmt(e.distance)} | {md(e.source or '-')} |" for e in ev.exemplars]
        if ev.restoration is not None:
            lines += ["", "## Normal version (restoration)", "", f"| {ev.context.unit_kind} | observed | restored | change |", "|---|---:|---:|---:|"]
            lines += [
                f"| {md(d.unit)} | {fmt(d.observed)} | {fmt(d.restored)} | {fmt(d.delta)} |"
                for d in ev.restoration.deltas[:10]
            ]
            if ev.restoration.note:
                lines += ["", f"_{md(ev.restoration.note)}_"]
        ex = self.explanation
        lines += ["", f"## Explanation ({ex.source}; {'verified' if ex.grounded else 'NOT verified'})", ""]
        lines += [f"- {md(c.text)} \\[{md(', '.join(c.cites))}\\]" for c in ex.claims]
        if ex.interpretation:
            lines += ["", f"## Interpretation ({md(ex.source)}; the model's reading, NOT verified)", "",
                      md(ex.interpretation)]
        if ex.note:
            lines += ["", f"_{md(ex.note)}_"]
        if ex.rejected:
            lines += ["", f"_{len(ex.rejected)} draft claim(s) failed verification and are not shown._"]
        return "\n".join(lines) + "\n"


def _part_lines(ev: Evidence, plot: str | None) -> list[str]:
    """The markdown of the case's modality items, each type's section once, in the order they come."""
    groups: dict[type[EvidenceItem], list[EvidenceItem]] = {}
    for p in ev.parts:
        groups.setdefault(type(p), []).append(p)
    return [line for item_cls, items in groups.items() for line in item_cls.markdown(items, ev, plot)]


def code_span(text: str) -> str:
    """Untrusted log text inside a markdown code span: control characters stripped, backticks (which would
    end the span) and table bars replaced. Not HTML-escaped: a code span is literal, and its renderer
    escapes it (escaping here showed a masked ``<UUID>`` as ``&lt;UUID&gt;``)."""
    from anomalens.text import clip, strip_control

    return clip(strip_control(text), 160).replace("`", "'").replace("|", "¦")


def md(text: str) -> str:
    """Untrusted text (feature names, sources, claim text) as inert markdown: no HTML, links,
    images or table breaks, no control characters."""
    from anomalens.text import for_markdown

    return for_markdown(text)
