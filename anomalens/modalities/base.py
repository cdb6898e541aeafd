"""The modality contract: what is specific to one kind of data (rows of a table, a multivariate
series, a log), so that the Investigator composes the same stages for every kind.

A modality owns

- the **input**: turning what a user passes (a DataFrame, an array, a dict, ...) into the model
  array a detector scores, and the names of its **evidence units** (features of a row, channels and
  segments of a series, events and lines of a log); a case is checked once, here;
- the **normal profile** kept at fit (e.g. quantiles of each feature of the training rows);
- the **evidence items** of a case, each keyed by a unit id ``<kind>:<name>`` (``feature:memory``,
  later ``channel:cpu``, ``segment:cpu:10:05..10:12``, ``event:E17``), built from the detector's
  one-pass ``Inspection`` and the nearest exemplars;
- its **typed claims**: a closed vocabulary of claim kinds about its units, each rendered from the
  evidence (``claim_candidates``, ``render_claim``), the exact check of a typed claim and the
  reading of a free-text one (``check_claim``, ``parse_claim``: the verifier's rules for its units);
- the lookups its **tools** offer the agent (a unit's profile, a comparison with another case);
- its part of the saved model (``to_config`` / ``from_config``);
- its **flow** (``flow_class``, ``modalities/flow.py``): what a case is and the verbs that find,
  judge and explain cases of this kind (rows by default; a series' events; a log's sessions).

The detector, calibration, store, reasoner and verifier know nothing of the kind of data: they see
arrays, scores, p-values, embeddings and evidence units.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from anomalens.detectors import BaseDetector, Inspection
from anomalens.errors import InputError
from anomalens.modalities.common import column_list
from anomalens.modalities.flow import CaseFlow, RowFlow
from anomalens.schema import Claim, Comparison, Context, Evidence, FeatureProfile
from anomalens.store import ExemplarHit

__all__ = ["CaseItems", "ModelInput", "Modality"]

# the full vocabulary of a relation field, offered whatever the case (so a schema does not tell a
# model which position is true); other fields take the values the case's true claims use
PARAM_VOCABULARY: dict[str, tuple[str, ...]] = {"position": ("above", "below", "within")}


@dataclass(frozen=True)
class ModelInput:
    """User input made ready for a detector: ``data`` is what the detector is fitted on (it may keep
    column names), ``array`` the finite float (n, d) array, ``ids`` the row ids the input carried."""

    data: Any
    array: np.ndarray
    ids: list[str] | None


@dataclass(frozen=True)
class CaseItems:
    """The modality-specific evidence of one case (besides the verdict, which calibration gives):
    its units' attributions, nearest exemplars, restoration, and ``parts``, the evidence items of
    the modality's own types (``schema.EvidenceItem``), which go to ``Evidence.parts``."""

    attributions: list
    exemplars: list
    restoration: Any
    parts: list = field(default_factory=list)


class Modality(ABC):
    """One kind of data. Subclasses set ``name`` (the registry key) and ``unit_kind`` (the prefix of
    their evidence-unit ids) and implement the abstract methods; ``modalities.register`` adds them."""

    name: ClassVar[str]
    unit_kind: ClassVar[str]
    default_detector: ClassVar[str | None] = None  # None: the package default (``config.DEFAULT_DETECTOR``)
    flow_class: ClassVar[type[CaseFlow]] = RowFlow  # what a case is and the verbs over it (rows by default)
    sequential: ClassVar[bool] = False  # True: a case is an event found in a sequence (see the series flow)
    reads_text: ClassVar[bool] = False  # True: cases come from text read line by line (logs: triage), not tables
    reads_paths: ClassVar[bool] = False  # True: the command line hands it paths (log files, image folders), not a table
    max_exemplars: ClassVar[int] = 5000  # default exemplar sample kept in the store (k-means medoids beyond it)
    case_noun: ClassVar[str] = "row"  # what one case is called in messages and tables ("row", "event", "case")
    units_title: ClassVar[str] = "Features"  # what a report calls its units

    # ------------------------------------------------------------------ input
    @abstractmethod
    def learn(self, data: Any, ids: Any = None) -> ModelInput:
        """Check the normal training data, learn its units (names), and make it ready for the detector."""

    @abstractmethod
    def prepare(self, data: Any, name: str = "case") -> ModelInput:
        """A case or a batch checked once against what ``learn`` saw (raises ``InputError`` naming
        the field, what was expected and what came)."""

    @property
    @abstractmethod
    def unit_names(self) -> list[str]:
        """The names of the evidence units, in the model array's column order where that applies."""

    def from_table(self, frame: Any, *, id_column: str | None = None) -> tuple[Any, list[str] | None]:
        """(the input ``prepare`` takes, case ids) from a table a surface received (an uploaded CSV or
        Parquet file): by default the table as it is; a modality whose cases are rows picks its columns."""
        if id_column is not None:
            raise InputError(f"id_column applies to tables of rows; this investigator holds {self.name} data")
        return frame, None

    @property
    def model_width(self) -> int:
        """Values in one detector row (tabular: one per unit; series: channels x window)."""
        return len(self.unit_names)

    def unit_id(self, name: str) -> str:
        return f"{self.unit_kind}:{name}"

    # ------------------------------------------------------------------ fit
    def begin_fit(self, data: Any) -> Any:
        """What fit does before the detector is built (a series is checked and split: the detector
        needs its window); the returned value goes to the flow's ``fit``. By default ``data``."""
        return data

    def detector_defaults(self, fields: set[str]) -> dict[str, Any]:
        """Hyper-parameters a detector given by name takes from this modality (``fields``: the ones it
        has), unless the user set them (a series' window)."""
        return {}

    def detector_mismatch(self, detector: BaseDetector) -> str | None:
        """Why a loaded detector does not fit this modality's saved metadata (None: it does)."""
        return None

    # ------------------------------------------------------------------ the command line (``anomalens fit``)
    options: ClassVar[tuple[str, ...]] = ()  # the command line's modality options it takes (window, time_column, ...)
    samples_training: ClassVar[bool] = False  # True: fit may train on a uniform sample of a large table's rows

    @classmethod
    def accepts(cls, paths: list[Any]) -> bool:
        """True when the command line's DATA paths are this modality's own files (an image folder), so
        ``anomalens fit`` picks it without ``--modality``."""
        return False

    @classmethod
    def from_options(cls, **options: Any) -> Modality:
        """A modality from the command line's options (names in ``options``; the CLI refuses others)."""
        return cls()

    def training_table(self, frame: Any, *, label_column: str | None = None, exclude: list[str] | None = None,
                       id_column: str | None = None) -> tuple[Any, list[str] | None]:
        """(training data, row ids) of a table read for fit: without its label and excluded columns."""
        if id_column is not None:
            raise InputError(f"--id-column applies to tables of rows; {self.name} data has none")
        drop = [c for c in [label_column, *column_list(exclude)] if c]
        missing = [c for c in drop if c not in frame.columns]
        if missing:
            raise InputError(f"column {str(missing[0])[:60]!r} is not in the data")
        return frame.drop(columns=drop), None

    def fit_summary(self, inv: Any, data: Any) -> tuple[dict[str, Any], str | None]:
        """(what ``anomalens fit`` prints about the investigator fitted on ``data`` beyond its
        detector and exemplars, a line for people about reading the input or None)."""
        return {"cases": inv.n_train, "units": len(self.unit_names)}, None

    # ------------------------------------------------------------------ normal profile
    @abstractmethod
    def fit_profile(self, array: np.ndarray) -> None:
        """Keep what describes the normal training data (called once at fit)."""

    @abstractmethod
    def profile_of(self, unit: str, n_train: int) -> FeatureProfile:
        """The normal profile of one unit (raises ``InputError`` for an unknown one, listing valid ones)."""

    # ------------------------------------------------------------------ evidence
    def bound_restoration(self, detector: BaseDetector, X: np.ndarray, inspection: Inspection) -> Inspection:
        """The inspection with its restorations kept to what normal data look like (tabular: inside the
        training's 1%-99% range); by default unchanged."""
        return inspection

    @abstractmethod
    def case_items(self, X: np.ndarray, inspection: Inspection, hits: list[list[ExemplarHit]], top: int,
                   scale: np.ndarray) -> list[CaseItems]:
        """Evidence items of each row of ``X`` from the detector's ``inspection`` of it and its
        nearest exemplars ``hits``; ``top`` units by contribution."""

    @abstractmethod
    def compare(self, detector: BaseDetector, X: np.ndarray, Y: np.ndarray, *, other_id: str, p_other: float,
                alpha: float, top: int) -> Comparison:
        """One case (X, a single prepared row) beside another (Y)."""

    def context(self, *, n_train: int, detector: str, attribution_method: str) -> Context:
        return Context(unit_names=self.unit_names, unit_kind=self.unit_kind, n_train=n_train, detector=detector,
                       attribution_method=attribution_method, modality=self.name, units_title=self.units_title)

    # ------------------------------------------------------------------ typed claims (the verifier's rules)
    # A modality's claim rules live in one module (``unit_claims``, shared; ``series_claims``) with
    # ``KINDS``, ``candidates``, ``render_kind``, ``check`` and ``parse``; the methods below read it.
    claims: ClassVar[Any]
    claim_kinds: ClassVar[dict[str, str]]  # kind -> what it states (the closed vocabulary sent to models): claims.KINDS

    @classmethod
    def claim_candidates(cls, evidence: Evidence) -> list[Claim]:
        """Every true typed claim the evidence supports, rendered (the template picks from them)."""
        return cls.claims.candidates(evidence)

    @classmethod
    def claim_fields(cls, evidence: Evidence) -> dict[str, dict[str, list[str]]]:
        """What each claim kind can say about this case, for the schema a model decodes under:
        kind -> {"cites": the ids its claims rest on, "most_cites": [how many ids a true claim of it
        cites at most], <param>: the values it takes}. Only kinds the
        evidence supports are listed (a case without a restoration has no restoration kind). Values
        are the vocabulary, not the answers: a range claim may say any position, and the verifier
        checks the one it says."""
        out: dict[str, dict[str, list[str]]] = {}
        for c in cls.claim_candidates(evidence):
            f = out.setdefault(c.kind, {"cites": [], "most_cites": ["1"]})
            f["cites"] += [i for i in c.cites if i not in f["cites"]]
            f["most_cites"] = [str(max(int(f["most_cites"][0]), len(c.cites)))]  # no true claim of it cites more
            for k, v in c.params.items():
                vals = f.setdefault(k, list(PARAM_VOCABULARY.get(k, ())))
                if str(v) not in vals:
                    vals.append(str(v))
        return {k: out[k] for k in cls.claim_kinds if k in out}

    @classmethod
    @abstractmethod
    def unit_claims(cls, evidence: Evidence, unit_id: str, *, with_exemplars: bool = True) -> list[Claim]:
        """The template's claims about one unit (picked from ``claim_candidates``)."""

    @classmethod
    def render_claim(cls, kind: str, cites: list[str], params: dict, evidence: Evidence) -> Claim | None:
        """The typed claim rendered from the evidence, or None when the evidence does not support it."""
        return cls.claims.render_kind(kind, cites, params, evidence)

    @classmethod
    def check_claim(cls, claim: Claim, evidence: Evidence) -> str | None:
        """None when a typed claim is supported exactly (kind, cites, params), else why not."""
        return cls.claims.check(claim, evidence)

    @classmethod
    def parse_claim(cls, claim: Claim, evidence: Evidence) -> str | None:
        """None when a free-text claim reads as typed claims that hold, else why it cannot be proved."""
        return cls.claims.parse(claim, evidence)

    # ------------------------------------------------------------------ persistence
    @abstractmethod
    def to_config(self) -> dict[str, Any]:
        """JSON-able state, merged into the Investigator's ``investigator.json``."""

    @classmethod
    @abstractmethod
    def from_config(cls, config: dict[str, Any]) -> "Modality":
        """Rebuild from ``to_config``'s keys (raises ``CheckpointError`` when they are corrupted)."""
