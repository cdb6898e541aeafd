"""Investigator: fit on normal data, then answer "is this anomalous, and why?" with a Report.

It composes the parts and computes nothing itself: a detector (score, p-value, attribution,
restoration, embedding), the exemplar store (nearest normal cases), the training quantiles
(normal ranges), a reasoner and the verifier (the explanation).

    inv = Investigator.fit(train_df, detector="vae")
    report = inv.analyze(row)            # one case -> Report
    reports = inv.analyze_batch(df)      # FDR-controlled verdicts for a batch
    inv.save("model/"); Investigator.load("model/")
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from anomalens import __version__
from anomalens.agents.explain import explain_evidence
from anomalens.detectors import BaseDetector, benjamini_hochberg, conformal_pvalues, make_detector
from anomalens.detectors.base import Attribution as DetectorAttribution
from anomalens.detectors.calibration import score_threshold
from anomalens.errors import CheckpointError, InputError
from anomalens.llm.base import Reasoner
from anomalens.schema import (
    Attribution,
    Comparison,
    Context,
    Evidence,
    Exemplar,
    FeatureDelta,
    FeatureDifference,
    FeatureProfile,
    Report,
    Restoration,
    Verdict,
)
from anomalens.store import ExemplarStore

__all__ = ["Investigator"]

log = logging.getLogger(__name__)

MODALITIES = ("tabular",)
_CONFIG = "investigator.json"
PROFILE_LEVELS = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)  # training quantiles kept per feature


def _as_rows(data: Any, name: str) -> tuple[np.ndarray, list[str] | None, list[str] | None]:
    """(X, column names or None, row ids or None) of a DataFrame, a 2-D array, or one row."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(data, pd.Series):
        frame = pd.DataFrame([data.to_numpy()], columns=[str(c) for c in data.index])
        return frame, list(frame.columns), [str(data.name)] if data.name is not None else None
    if pd is not None and isinstance(data, pd.DataFrame):
        ids = None if isinstance(data.index, pd.RangeIndex) else [str(i) for i in data.index]
        return data, [str(c) for c in data.columns], ids
    if data is None:
        raise InputError(f"{name} must be a DataFrame or an array of rows, got None")
    X = np.asarray(data)
    if X.ndim == 1:
        X = X[None, :]
    return X, None, None


class Investigator:
    """A fitted detector with its exemplar store and feature metadata; produces case Reports."""

    def __init__(self, detector: BaseDetector, store: ExemplarStore, feature_names: list[str],
                 quantiles: np.ndarray, n_train: int, *, detector_name: str, modality: str = "tabular",
                 reasoner: Reasoner | None = None, profile: np.ndarray | None = None) -> None:
        self.detector, self.store = detector, store
        self.feature_names = list(feature_names)
        self.quantiles = np.asarray(quantiles, dtype=np.float64)  # (3, d): 1%, 50%, 99% of the training rows
        # (len(PROFILE_LEVELS), d) training quantiles, or None for an Investigator saved before they were kept
        self.profile = None if profile is None else np.asarray(profile, dtype=np.float64)
        self.n_train, self.detector_name, self.modality = n_train, detector_name, modality
        self.reasoner = reasoner

    def __repr__(self) -> str:
        return (f"Investigator(detector={self.detector_name!r}, features={len(self.feature_names)}, "
                f"n_train={self.n_train}, store={self.store.count()} exemplars)")

    # ------------------------------------------------------------------ fit
    @classmethod
    def fit(cls, data: Any, modality: str = "tabular", detector: str | BaseDetector = "vae", *,
            store_path: str | Path | None = None, chroma_url: str | None = None, source: str | None = None,
            ids: Sequence[str] | None = None, reasoner: Reasoner | None = None, **detector_params: Any) -> "Investigator":
        """Fit on normal data.

        Args:
            data: (n, d) normal rows: a DataFrame (its columns name the features; a non-default
                index gives the row ids) or an array.
            modality: "tabular" (series, images and logs come later on the same contract).
            detector: a registered name (see ``list_detectors()``) or an unfitted detector.
            store_path: folder of the embedded exemplar store (None: in memory until ``save``).
            chroma_url: a chroma server to hold the exemplars instead (``ANOMALENS_CHROMA_URL``).
            source: provenance recorded with every exemplar (e.g. the file name).
            ids: n row ids for the exemplars (default: the DataFrame index, else 0..n-1).
            reasoner: drafts explanations (None: the template; see ``anomalens.llm.make_reasoner``).
            **detector_params: hyper-parameters for a detector given by name.
        """
        if modality not in MODALITIES:
            raise InputError(f"modality must be one of {list(MODALITIES)} for now, got {modality!r}")
        X, names, row_ids = _as_rows(data, "data")
        if isinstance(detector, str):
            det, det_name = make_detector(detector, **detector_params), detector
        else:
            if detector_params:
                raise InputError(f"detector params {sorted(detector_params)} apply only to a detector given by name")
            det, det_name = detector, type(detector).__name__
        det.fit(X)
        Xf = np.asarray(X, dtype=np.float64)
        names = names or list(det.feature_names_in_ or [f"x{i}" for i in range(Xf.shape[1])])
        if ids is not None:
            if len(ids) != len(Xf):
                raise InputError(f"ids must have one entry per row ({len(Xf)}), got {len(ids)}")
            row_ids = [str(i) for i in ids]
        store = ExemplarStore(store_path, url=chroma_url)
        store.add(det.embed(Xf), Xf, row_ids, source=source)
        profile = np.quantile(Xf, PROFILE_LEVELS, axis=0)
        quantiles = profile[[PROFILE_LEVELS.index(q) for q in (0.01, 0.5, 0.99)]]
        return cls(det, store, names, quantiles, len(Xf), detector_name=det_name, modality=modality, reasoner=reasoner,
                   profile=profile)

    # ------------------------------------------------------------------ evidence
    def _rows(self, case: Any) -> tuple[np.ndarray, list[str] | None]:
        X, names, ids = _as_rows(case, "case")
        if names is not None and names != self.feature_names:
            missing = [n for n in self.feature_names if n not in names]
            extra = [n for n in names if n not in self.feature_names]
            if missing or extra:
                raise InputError(f"case columns must be the training features; missing {missing[:5]}, unexpected {extra[:5]}")
            X = X[self.feature_names]
        X = self.detector._check_input(np.asarray(X, dtype=np.float64) if names is None else X)
        return X, ids

    def evidence(self, case: Any, *, alpha: float = 0.05, k: int = 5, top: int | None = 5,
                 case_id: str | None = None) -> Evidence:
        """The evidence for one case (a row, a one-row DataFrame or a Series); ``top=None`` keeps
        every feature's attribution."""
        top = len(self.feature_names) if top is None else top
        X, ids = self._rows(case)
        if len(X) != 1:
            raise InputError(f"case must be one row, got {len(X)}; use analyze_batch for several")
        scores = self.detector.decision_function(X)
        flags = conformal_pvalues(self.detector.calibration_scores_, scores) < alpha
        return self._evidence_batch(X, scores, flags, alpha, alpha, k, top,
                                    [case_id or (ids[0] if ids else "case")], "conformal p-value below alpha")[0]

    def _evidence_batch(self, X: np.ndarray, scores: np.ndarray, flags: np.ndarray, alpha: float, cutoff: float,
                        k: int, top: int, case_ids: list[str], method: str) -> list[Evidence]:
        det = self.detector
        pvals = conformal_pvalues(det.calibration_scores_, scores)
        attr: DetectorAttribution = det.explain(X)
        abnormal = attr.abnormal
        restored = det.restore(X)
        score_after = det.decision_function(restored)
        hits = self.store.query(det.embed(X), k=k)
        thr = score_threshold(det.calibration_scores_, cutoff) if cutoff > 0 else float("inf")
        lo, med, hi = self.quantiles
        scale = det.scale_
        out = []
        for i in range(len(X)):
            exemplars = [
                Exemplar(id=f"exemplar:{h.row_id}", row_id=h.row_id, distance=h.distance,
                         values=dict(zip(self.feature_names, map(float, h.values))), source=h.source, timestamp=h.timestamp)
                for h in hits[i]
            ]
            ex_values = np.array([h.values for h in hits[i]]) if hits[i] else None
            contrib = attr.values[i]
            positive = np.clip(contrib, 0, None)
            total = positive.sum()
            order = np.argsort(-contrib, kind="stable")[:top]
            attributions = []
            for j in order:
                v = float(X[i, j])
                attributions.append(Attribution(
                    id=f"feature:{self.feature_names[j]}", feature=self.feature_names[j], value=v,
                    contribution=float(contrib[j]), share=float(positive[j] / total) if total > 0 else 0.0,
                    abnormal=bool(abnormal[i, j]), normal_low=float(lo[j]), normal_median=float(med[j]),
                    normal_high=float(hi[j]), position="below" if v < lo[j] else "above" if v > hi[j] else "within",
                    exemplar_mean=float(ex_values[:, j].mean()) if ex_values is not None and ex_values.shape[1] else None,
                ))
            delta = restored[i] - X[i]
            rel = np.abs(delta) / scale
            deltas = [FeatureDelta(feature=self.feature_names[j], observed=float(X[i, j]), restored=float(restored[i, j]),
                                   delta=float(delta[j])) for j in np.argsort(-rel, kind="stable")]
            out.append(Evidence(
                case_id=str(case_ids[i]),
                verdict=Verdict(anomalous=bool(flags[i]), score=float(scores[i]), p_value=float(pvals[i]), alpha=alpha,
                                cutoff=float(cutoff), threshold=thr if np.isfinite(thr) else None,
                                detector=self.detector_name, method=method),
                attributions=attributions, exemplars=exemplars,
                restoration=Restoration(values=dict(zip(self.feature_names, map(float, restored[i]))), deltas=deltas,
                                        score_after=float(score_after[i])),
                context=Context(feature_names=self.feature_names, n_train=self.n_train, detector=self.detector_name,
                                attribution_method=det.attribution_method, modality=self.modality),
            ))
        return out

    def feature_profile(self, name: str) -> FeatureProfile:
        """The training distribution of one feature (quantiles of the normal rows)."""
        if name not in self.feature_names:
            close = [n for n in self.feature_names if name.lower() in n.lower() or n.lower() in name.lower()]
            raise InputError(f"feature must be one of the {len(self.feature_names)} training features "
                             f"(e.g. {(close or self.feature_names)[:8]}), got {name!r}")
        j = self.feature_names.index(name)
        if self.profile is not None:
            qs = {f"{100 * q:g}%": float(v) for q, v in zip(PROFILE_LEVELS, self.profile[:, j])}
        else:
            qs = {f"{100 * q:g}%": float(v) for q, v in zip((0.01, 0.5, 0.99), self.quantiles[:, j])}
        lo, med, hi = self.quantiles[:, j]
        return FeatureProfile(id=f"profile:{name}", feature=name, normal_low=float(lo), normal_median=float(med),
                              normal_high=float(hi), quantiles=qs, n_train=self.n_train)

    def compare(self, case: Any, other: Any, *, other_id: str, alpha: float = 0.05, top: int = 5) -> Comparison:
        """The case beside another row: embedding distance, the other's verdict, and the ``top``
        features that differ most (robust-scaled)."""
        X, _ = self._rows(case)
        Y, _ = self._rows(other)
        if len(X) != 1 or len(Y) != 1:
            raise InputError(f"compare takes one row each, got {len(X)} and {len(Y)}")
        det = self.detector
        ex, ey = det.embed(X)[0], det.embed(Y)[0]
        score = det.decision_function(Y)
        p = conformal_pvalues(det.calibration_scores_, score)
        diff = Y[0] - X[0]
        order = np.argsort(-np.abs(diff) / det.scale_, kind="stable")[:top]
        return Comparison(
            id=f"compare:{other_id}", other_id=str(other_id), distance=float(np.linalg.norm(ex - ey)),
            other_score=float(score[0]), other_p_value=float(p[0]), other_anomalous=bool(p[0] < alpha),
            differences=[FeatureDifference(feature=self.feature_names[j], value=float(X[0, j]), other=float(Y[0, j]),
                                           difference=float(diff[j])) for j in order],
        )

    def exemplar_row(self, row_id: str) -> np.ndarray:
        """The stored normal exemplar ``row_id`` as a (d,) row."""
        hit = self.store.get([row_id])[0]
        if hit.values.shape != (len(self.feature_names),):
            raise InputError(f"exemplar {row_id!r} has no stored row of {len(self.feature_names)} values")
        return hit.values

    # ------------------------------------------------------------------ reports
    def analyze(self, case: Any, *, alpha: float = 0.05, k: int = 5, top: int = 5, case_id: str | None = None,
                reasoner: Reasoner | None = None) -> Report:
        """A Report for one case: verdict (p < alpha), evidence and a verified explanation."""
        ev = self.evidence(case, alpha=alpha, k=k, top=top, case_id=case_id)
        return Report(evidence=ev, explanation=explain_evidence(ev, reasoner or self.reasoner))

    def _batch(self, X: Any, alpha: float, ids: Sequence[str] | None):
        """(rows, case ids, scores, BH flags, BH cut-off) of a batch."""
        from anomalens.detectors._validation import check_probability

        alpha = check_probability(alpha, "alpha")
        rows, row_ids = self._rows(X)
        case_ids = [str(i) for i in ids] if ids is not None else row_ids or [str(i) for i in range(len(rows))]
        if len(case_ids) != len(rows):
            raise InputError(f"ids must have one entry per row ({len(rows)}), got {len(case_ids)}")
        scores = self.detector.decision_function(rows)
        flags = benjamini_hochberg(conformal_pvalues(self.detector.calibration_scores_, scores), alpha).astype(bool)
        cutoff = alpha * max(int(flags.sum()), 1) / len(rows)  # the BH cut-off: flagged <=> p <= cutoff
        return rows, case_ids, scores, flags, cutoff

    def verdicts(self, X: Any, *, alpha: float = 0.05, ids: Sequence[str] | None = None) -> dict[str, Verdict]:
        """Verdicts for a batch by case id, controlling the false discovery rate at ``alpha``
        (Benjamini-Hochberg), without the rest of the evidence."""
        rows, case_ids, scores, flags, cutoff = self._batch(X, alpha, ids)
        pvals = conformal_pvalues(self.detector.calibration_scores_, scores)
        thr = score_threshold(self.detector.calibration_scores_, cutoff)
        return {cid: Verdict(anomalous=bool(f), score=float(s), p_value=float(p), alpha=alpha, cutoff=float(cutoff),
                             threshold=float(thr) if np.isfinite(thr) else None, detector=self.detector_name,
                             method="Benjamini-Hochberg false discovery rate control over the batch")
                for cid, s, p, f in zip(case_ids, scores, pvals, flags)}

    def analyze_batch(self, X: Any, *, alpha: float = 0.05, k: int = 5, top: int = 5,
                      ids: Sequence[str] | None = None, reasoner: Reasoner | None = None,
                      only_anomalous: bool = False, limit: int | None = None) -> list[Report]:
        """Reports for a batch, with verdicts that control the false discovery rate at ``alpha``
        (Benjamini-Hochberg over the batch's p-values). Reports keep the input order;
        ``only_anomalous`` keeps just the flagged ones; ``limit`` keeps the ``limit`` highest
        scores, most anomalous first (the verdicts are still those of the whole batch)."""
        rows, case_ids, scores, flags, cutoff = self._batch(X, alpha, ids)
        m = len(rows)
        keep = np.flatnonzero(flags) if only_anomalous else np.arange(m)
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
                raise InputError(f"limit must be a positive int or None, got {limit!r}")
            keep = keep[np.argsort(-scores[keep], kind="stable")[:limit]]
        if len(keep) == 0:
            return []
        evs = self._evidence_batch(rows[keep], scores[keep], flags[keep], alpha, cutoff, k, top, [case_ids[i] for i in keep],
                                   "Benjamini-Hochberg false discovery rate control over the batch")
        r = reasoner or self.reasoner
        return [Report(evidence=ev, explanation=explain_evidence(ev, r)) for ev in evs]

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the detector, feature metadata and (for an embedded store) the exemplars to ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.detector.save(path / "detector")
        store_dir = path / "store"
        if self.store.url is None and (self.store.path is None or self.store.path.resolve() != store_dir.resolve()):
            copy = ExemplarStore(store_dir, collection=self.store.collection_name)
            if copy.count():
                copy.delete()
                copy = ExemplarStore(store_dir, collection=self.store.collection_name)
            self.store.copy_to(copy)
            self.store = copy
        config = {
            "anomalens_version": __version__, "modality": self.modality, "detector": self.detector_name,
            "feature_names": self.feature_names, "quantiles": self.quantiles.tolist(), "n_train": self.n_train,
            "profile": None if self.profile is None else self.profile.tolist(),
            "store": {"url": self.store.url, "collection": self.store.collection_name},
        }
        (path / _CONFIG).write_text(json.dumps(config, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path, *, reasoner: Reasoner | None = None) -> "Investigator":
        """Load an Investigator written by ``save``."""
        path = Path(path)
        try:
            config = json.loads((path / _CONFIG).read_text())
            names, quantiles = config["feature_names"], np.asarray(config["quantiles"], dtype=np.float64)
            store_cfg = config["store"]
        except FileNotFoundError as exc:
            raise CheckpointError(f"{path} holds no saved Investigator ({_CONFIG} is missing)") from exc
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path / _CONFIG} is corrupted: {exc}") from exc
        from anomalens.detectors import load as load_detector

        det = load_detector(path / "detector")
        if quantiles.shape != (3, len(names)) or det.n_features_in_ != len(names):
            raise CheckpointError(f"{path}: the feature metadata does not match the detector ({len(names)} names, "
                                  f"detector expects {det.n_features_in_})")
        store = ExemplarStore(None if store_cfg["url"] else path / "store", url=store_cfg["url"],
                              collection=store_cfg["collection"])
        profile = config.get("profile")
        return cls(det, store, names, quantiles, int(config["n_train"]), detector_name=config["detector"],
                   modality=config["modality"], reasoner=reasoner, profile=None if profile is None else np.asarray(profile))
