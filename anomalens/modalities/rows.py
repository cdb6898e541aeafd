"""Rows of named numeric features, the machinery the tabular modality and the log modality's count
vectors share (``RowModality``); evidence units ``feature:<name>``.

- input: a DataFrame (its columns name the features; a non-default index gives the row ids), a 2-D
  array, one row as a Series, a dict ``{feature: value}`` or a list; a case must carry the
  training features (by name when it has names) and finite numbers; ``select_columns`` picks the
  feature columns of a table (the CLI's ``--label-column`` / ``--exclude`` / ``--id-column``);
- normal profile: quantiles of each feature over the training rows (``PROFILE_LEVELS``);
- evidence: per feature its value, normal range, contribution and share (``feature:<name>``), the
  nearest exemplars' values, the restoration's per-feature deltas;
- claims: a feature against its normal range, a feature's profile, a comparison's main differences.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from anomalens.detectors import BaseDetector, Inspection, check_matrix
from anomalens.errors import CheckpointError, InputError
from anomalens.modalities import unit_claims
from anomalens.modalities.common import PROFILE_LEVELS, column_list
from anomalens.modalities.base import CaseItems, Modality, ModelInput
from anomalens.schema import (
    Attribution,
    Claim,
    Comparison,
    Evidence,
    Exemplar,
    FeatureDelta,
    FeatureDifference,
    FeatureProfile,
    Restoration,
)
from anomalens.store import ExemplarHit
from anomalens.text import clip
from anomalens.text import names as names_of

__all__ = ["PROFILE_LEVELS", "RowModality", "as_rows", "check_csv_header", "check_distinct_columns", "column_list",
           "select_columns"]

_WHERE = {"above": "above its normal range", "below": "below its normal range", "within": "inside its normal range"}


def as_rows(data: Any, name: str) -> tuple[Any, list[str] | None, list[str] | None]:
    """(X, column names or None, row ids or None) of a DataFrame, a 2-D array, or one row."""
    import pandas as pd

    if data is None:
        raise InputError(f"{name} must be a DataFrame, an array of rows, a Series or a dict of feature values, got None")
    if isinstance(data, (str, bytes)) or np.isscalar(data):
        raise InputError(f"{name} must be a DataFrame, an array of rows, a Series or a dict of feature values, "
                         f"got {type(data).__name__}")
    if isinstance(data, Mapping):  # one row given as {feature: value}
        try:
            frame = pd.DataFrame([dict(data)])
        except (TypeError, ValueError) as exc:
            raise InputError(f"{name} as a dict must map feature names to numbers ({exc})") from exc
        return frame.set_axis([str(c) for c in frame.columns], axis=1), [str(c) for c in data], None
    if isinstance(data, pd.Series):
        frame = pd.DataFrame([data.to_numpy()], columns=[str(c) for c in data.index])
        return frame, list(frame.columns), [str(data.name)] if data.name is not None else None
    if isinstance(data, pd.DataFrame):
        ids = None if isinstance(data.index, pd.RangeIndex) else [str(i) for i in data.index]
        return data, [str(c) for c in data.columns], ids
    try:
        X = np.asarray(data)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a rectangular array of numbers, got a {type(data).__name__} numpy cannot read") from exc
    if X.ndim == 1:
        X = X[None, :]
    return X, None, None


def check_csv_header(source: Any, name: str, **read_kw: Any) -> None:
    """Refuse a CSV whose header names a column twice: pandas renames the second ``cpu`` to ``cpu.1``,
    and a model would then be fitted on, or fed, a column nobody named. ``source``: a path or a
    binary file object (read from its start, then put back there)."""
    import pandas as pd

    pos = source.tell() if hasattr(source, "tell") else None
    try:
        head = pd.read_csv(source, header=None, nrows=1, dtype=str, keep_default_na=False, **read_kw)
    except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return  # the reader that follows says what is wrong with the file
    finally:
        if pos is not None:
            source.seek(pos)
    check_distinct_columns([str(c).strip() for c in head.iloc[0].tolist()] if len(head) else [], name)


def check_distinct_columns(columns: list[str], name: str) -> None:
    """Refuse a header that names a column twice (pandas renames the second, pyarrow keeps both)."""
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise InputError(f"columns of {clip(name, 120)!r} must have distinct names, got {names_of(twice)} more than "
                         "once")


def select_columns(frame, *, label_column: str | None = None, exclude: list[str] | None = None,
                   id_column: str | None = None, features: list[str] | None = None):
    """(feature frame, case ids) of a table: drop the label, excluded and id columns, check the rest
    is numeric; with ``features`` (a fitted investigator's), select exactly those. ``exclude`` entries
    may hold several comma-separated names."""
    cols = list(map(str, frame.columns))
    frame = frame.set_axis(cols, axis=1)
    named = [c for c in [label_column, id_column, *column_list(exclude)] if c]
    missing = [c for c in named if c not in cols]
    if missing:
        raise InputError(f"column {clip(missing[0], 60)!r} is not in the data; its columns are {names_of(cols, 12)}")
    ids = [str(v) for v in frame[id_column]] if id_column else None
    if ids is not None and len(set(ids)) != len(ids):
        raise InputError(f"--id-column {id_column!r} must hold unique ids, got {len(ids) - len(set(ids))} duplicates")
    if features is not None:
        absent = [c for c in features if c not in cols]
        if absent:
            raise InputError(f"the data lacks {len(absent)} feature(s) the model was fitted on, e.g. {names_of(absent)}")
        X = frame[features]
    else:
        X = frame.drop(columns=named)
    bad = [c for c in X.columns if X[c].dtype.kind not in "biuf"]
    if bad:
        raise InputError(f"feature columns must be numeric; {names_of(bad)} are not (pass --exclude or --label-column)")
    if X.shape[1] == 0:
        raise InputError("no feature columns are left after --label-column/--exclude/--id-column")
    if ids is not None:
        X = X.set_axis(ids, axis=0)
    return X, ids


class RowModality(Modality):
    """Rows of named numeric features (not registered itself: ``TabularModality`` is, and the log
    modality reads its cases' template counts as such rows)."""

    name = "rows"
    unit_kind = "feature"

    def __init__(self, feature_names: list[str] | None = None, profile: np.ndarray | None = None,
                 quantiles: np.ndarray | None = None) -> None:
        self.feature_names = list(feature_names) if feature_names is not None else []
        # (len(PROFILE_LEVELS), d) training quantiles; None for a model saved before they were kept
        self.profile = None if profile is None else np.asarray(profile, dtype=np.float64)
        if quantiles is None and self.profile is not None:
            quantiles = self.profile[[PROFILE_LEVELS.index(q) for q in (0.01, 0.5, 0.99)]]
        # (3, d): 1%, 50%, 99% of the training rows (the normal range and median)
        self.quantiles = None if quantiles is None else np.asarray(quantiles, dtype=np.float64)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(features={len(self.feature_names)})"

    @property
    def unit_names(self) -> list[str]:
        return self.feature_names

    # ------------------------------------------------------------------ input
    def learn(self, data: Any, ids: Any = None) -> ModelInput:
        X, names, row_ids = as_rows(data, "data")
        arr, _ = check_matrix(X, name="data", min_rows=4)
        if ids is not None:
            if len(ids) != len(arr):
                raise InputError(f"ids must have one entry per row ({len(arr)}), got {len(ids)}")
            row_ids = [str(i) for i in ids]
        self.feature_names = names or [f"x{i}" for i in range(arr.shape[1])]
        return ModelInput(X, arr, row_ids)

    def prepare(self, data: Any, name: str = "case") -> ModelInput:
        X, names, ids = as_rows(data, name)
        if names is not None and names != self.feature_names:
            missing = [n for n in self.feature_names if n not in names]
            extra = [n for n in names if n not in self.feature_names]
            if missing or extra:
                raise InputError(f"{name} columns must be the training features; missing {names_of(missing)}, "
                                 f"unexpected {names_of(extra)}")
            X = X[self.feature_names]
        arr, _ = check_matrix(X, name=name, n_features=len(self.feature_names),
                              feature_names=self.feature_names if names is not None else None)
        return ModelInput(X, arr, ids)

    def from_table(self, frame: Any, *, id_column: str | None = None) -> tuple[Any, list[str] | None]:
        """The fitted features of an uploaded table (other columns, a label for one, left alone) and its
        case ids from ``id_column``."""
        return select_columns(frame, id_column=id_column, features=self.feature_names)

    # ------------------------------------------------------------------ the command line
    samples_training = True

    def training_table(self, frame: Any, *, label_column: str | None = None, exclude: list[str] | None = None,
                       id_column: str | None = None) -> tuple[Any, list[str] | None]:
        """The table's numeric feature columns (less the label and excluded ones) and its row ids."""
        return select_columns(frame, label_column=label_column, exclude=exclude, id_column=id_column)

    def fit_summary(self, inv: Any, data: Any) -> tuple[dict[str, Any], str | None]:
        out: dict[str, Any] = {"rows": inv.rows_seen}
        if inv.n_train < inv.rows_seen:
            out["trained on"] = f"a uniform sample of {inv.n_train:,} of {inv.rows_seen:,} rows (--max-train-rows)"
        out.update({"features": len(inv.feature_names), "calibration_rows": len(inv.detector.calibration_scores_)})
        limit = inv.batch_limit()
        if limit is not None:
            out["batches"] = (f"one anomalous row alone can be flagged in batches of up to {limit} rows at a false "
                              f"discovery rate of 0.05 ({inv.calibrator.n} calibration scores, no tail beyond them); "
                              "larger batches flag it only with other anomalies, or analyze it alone (--row)")
        return out, None

    # ------------------------------------------------------------------ normal profile
    def fit_profile(self, array: np.ndarray) -> None:
        self.profile = np.quantile(array, PROFILE_LEVELS, axis=0)
        self.quantiles = self.profile[[PROFILE_LEVELS.index(q) for q in (0.01, 0.5, 0.99)]]

    def _index(self, unit: str) -> int:
        if unit not in self.feature_names:
            close = [n for n in self.feature_names if unit.lower() in n.lower() or n.lower() in unit.lower()]
            raise InputError(f"feature must be one of the {len(self.feature_names)} training features "
                             f"(e.g. {(close or self.feature_names)[:8]}), got {unit!r}")
        return self.feature_names.index(unit)

    def profile_of(self, unit: str, n_train: int) -> FeatureProfile:
        j = self._index(unit)
        if self.profile is not None:
            qs = {f"{100 * q:g}%": float(v) for q, v in zip(PROFILE_LEVELS, self.profile[:, j])}
        else:
            qs = {f"{100 * q:g}%": float(v) for q, v in zip((0.01, 0.5, 0.99), self.quantiles[:, j])}
        lo, med, hi = self.quantiles[:, j]
        return FeatureProfile(id=f"profile:{unit}", unit=unit, normal_low=float(lo), normal_median=float(med),
                              normal_high=float(hi), quantiles=qs, n_train=n_train)

    # ------------------------------------------------------------------ evidence
    def bound_restoration(self, detector: BaseDetector, X: np.ndarray, inspection: Inspection) -> Inspection:
        """A restored value the detector moved is kept inside the training's 1%-99% range of its feature
        (a generative model's restoration put a ratio at -0.62, and moved values beyond the range);
        values it left alone stay as observed. The clipped rows are scored again."""
        import dataclasses

        lo, _, hi = self.quantiles
        R = inspection.restored
        moved = ~np.isclose(R, X, rtol=1e-9, atol=0.0)
        bounded = np.where(moved, np.clip(R, lo, hi), X)
        changed = np.any(bounded != R, axis=1)
        if not changed.any():
            return inspection
        scores = inspection.restored_scores.copy()
        scores[changed] = detector.decision_function(bounded[changed], checked=True)
        return dataclasses.replace(inspection, restored=bounded, restored_scores=scores)

    def case_items(self, X: np.ndarray, inspection: Inspection, hits: list[list[ExemplarHit]], top: int,
                   scale: np.ndarray) -> list[CaseItems]:
        names = self.feature_names
        attr, restored = inspection.attribution, inspection.restored
        abnormal = attr.abnormal
        lo, med, hi = self.quantiles
        out = []
        for i in range(len(X)):
            exemplars = [Exemplar(id=f"exemplar:{h.row_id}", row_id=h.row_id, distance=h.distance,
                                  values=dict(zip(names, map(float, h.values))), source=h.source,
                                  timestamp=h.timestamp, weight=h.weight) for h in hits[i]]
            ex_values = np.array([h.values for h in hits[i]]) if hits[i] else None
            contrib = attr.values[i]
            positive = np.clip(contrib, 0, None)
            total = positive.sum()
            attributions = []
            for j in np.argsort(-contrib, kind="stable")[:top]:
                v = float(X[i, j])
                attributions.append(Attribution(
                    id=self.unit_id(names[j]), unit=names[j], value=v, contribution=float(contrib[j]),
                    share=float(positive[j] / total) if total > 0 else 0.0, abnormal=bool(abnormal[i, j]),
                    normal_low=float(lo[j]), normal_median=float(med[j]), normal_high=float(hi[j]),
                    position="below" if v < lo[j] else "above" if v > hi[j] else "within",
                    exemplar_mean=float(ex_values[:, j].mean()) if ex_values is not None and ex_values.shape[1] else None,
                ))
            delta = restored[i] - X[i]
            rel = np.abs(delta) / scale
            deltas = [FeatureDelta(unit=names[j], observed=float(X[i, j]), restored=float(restored[i, j]),
                                   delta=float(delta[j])) for j in np.argsort(-rel, kind="stable")]
            restoration = Restoration(values=dict(zip(names, map(float, restored[i]))), deltas=deltas,
                                      score_after=float(inspection.restored_scores[i]))
            out.append(CaseItems(attributions, exemplars, restoration))
        return out

    def compare(self, detector: BaseDetector, X: np.ndarray, Y: np.ndarray, *, other_id: str, p_other: float,
                alpha: float, top: int) -> Comparison:
        ex, ey = detector.embed(X)[0], detector.embed(Y)[0]
        score = float(detector.decision_function(Y)[0])
        diff = Y[0] - X[0]
        order = np.argsort(-np.abs(diff) / detector.scale_, kind="stable")[:top]
        names = self.feature_names
        return Comparison(
            id=f"compare:{other_id}", other_id=str(other_id), distance=float(np.linalg.norm(ex - ey)),
            other_score=score, other_p_value=float(p_other), other_anomalous=bool(p_other < alpha),
            differences=[FeatureDifference(unit=names[j], value=float(X[0, j]), other=float(Y[0, j]),
                                           difference=float(diff[j])) for j in order],
        )

    # ------------------------------------------------------------------ typed claims
    claims = unit_claims
    claim_kinds = unit_claims.KINDS

    @classmethod
    def unit_claims(cls, evidence: Evidence, unit_id: str, *, with_exemplars: bool = True) -> list[Claim]:
        kinds = ("range", "exemplar_value") if with_exemplars else ("range",)
        return [c for c in unit_claims.candidates(evidence) if c.kind in kinds and c.cites and c.cites[0] == unit_id]


    # ------------------------------------------------------------------ persistence
    def detector_mismatch(self, detector: BaseDetector) -> str | None:
        # the detector keeps its own copy of the columns: an edited or reordered list in the JSON would
        # feed every value to another feature's weights (p-values changed, no error)
        names = getattr(detector, "feature_names_in_", None)
        if names is not None and list(names) != list(self.feature_names):
            return (f"its feature names do not match the detector's ({names_of(self.feature_names, 6)} against "
                    f"{names_of(names, 6)})")
        return None

    def to_config(self) -> dict[str, Any]:
        return {"feature_names": self.feature_names, "quantiles": self.quantiles.tolist(),
                "profile": None if self.profile is None else self.profile.tolist()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "RowModality":
        try:
            names = [str(n) for n in config["feature_names"]]
            quantiles = np.asarray(config["quantiles"], dtype=np.float64)
            profile = config.get("profile")
            profile = None if profile is None else np.asarray(profile, dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"the {cls.name} metadata is corrupted ({exc})") from exc
        if quantiles.shape != (3, len(names)) or (profile is not None and profile.shape != (len(PROFILE_LEVELS), len(names))):
            raise CheckpointError(f"the {cls.name} metadata is corrupted: {len(names)} feature names but normal ranges of "
                                  f"shape {quantiles.shape}")
        if not np.isfinite(quantiles).all() or (profile is not None and not np.isfinite(profile).all()):
            raise CheckpointError(f"the {cls.name} metadata is corrupted: its normal ranges hold NaN or inf")
        return cls(names, profile, quantiles)
