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
- its **claims**: the template's sentence about one unit, the profile of a unit, a comparison (the
  template reasoner and the chat commands ask the modality for them);
- the lookups its **tools** offer the agent (a unit's profile, a comparison with another case);
- its part of the saved model (``to_config`` / ``from_config``).

The detector, calibration, store, reasoner and verifier know nothing of the kind of data: they see
arrays, scores, p-values, embeddings and evidence units.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from anomalens.detectors import BaseDetector, Inspection
from anomalens.schema import Claim, Comparison, Context, Evidence, FeatureProfile, Item
from anomalens.store import ExemplarHit

__all__ = ["CaseItems", "ModelInput", "Modality"]


@dataclass(frozen=True)
class ModelInput:
    """User input made ready for a detector: ``data`` is what the detector is fitted on (it may keep
    column names), ``array`` the finite float (n, d) array, ``ids`` the row ids the input carried."""

    data: Any
    array: np.ndarray
    ids: list[str] | None


@dataclass(frozen=True)
class CaseItems:
    """The modality-specific evidence of one case (besides the verdict, which calibration gives)."""

    attributions: list
    exemplars: list
    restoration: Any


class Modality(ABC):
    """One kind of data. Subclasses set ``name`` (the registry key) and ``unit_kind`` (the prefix of
    their evidence-unit ids) and implement the abstract methods; ``modalities.register`` adds them."""

    name: ClassVar[str]
    unit_kind: ClassVar[str]

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

    def unit_id(self, name: str) -> str:
        return f"{self.unit_kind}:{name}"

    # ------------------------------------------------------------------ normal profile
    @abstractmethod
    def fit_profile(self, array: np.ndarray) -> None:
        """Keep what describes the normal training data (called once at fit)."""

    @abstractmethod
    def profile_of(self, unit: str, n_train: int) -> FeatureProfile:
        """The normal profile of one unit (raises ``InputError`` for an unknown one, listing valid ones)."""

    # ------------------------------------------------------------------ evidence
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
        return Context(feature_names=self.unit_names, unit_kind=self.unit_kind, n_train=n_train, detector=detector,
                       attribution_method=attribution_method, modality=self.name)

    # ------------------------------------------------------------------ claims (the template's words)
    @classmethod
    @abstractmethod
    def unit_claim(cls, item: Item, evidence: Evidence, *, with_exemplars: bool = True) -> Claim:
        """The template's claim about one unit's evidence item."""

    @classmethod
    @abstractmethod
    def profile_claim(cls, profile: FeatureProfile) -> Claim:
        """The template's claim about one unit's normal profile."""

    @classmethod
    @abstractmethod
    def comparison_claim(cls, comparison: Comparison, n: int = 2) -> Claim:
        """The template's claim about a comparison."""

    # ------------------------------------------------------------------ persistence
    @abstractmethod
    def to_config(self) -> dict[str, Any]:
        """JSON-able state, merged into the Investigator's ``investigator.json``."""

    @classmethod
    @abstractmethod
    def from_config(cls, config: dict[str, Any]) -> "Modality":
        """Rebuild from ``to_config``'s keys (raises ``CheckpointError`` when they are corrupted)."""
