"""Investigator: fit on normal data, then answer "is this anomalous, and why?" with a Report.

It composes the parts and computes nothing itself: a detector (score, p-value, attribution,
restoration, embedding), the exemplar store (nearest normal cases), the training quantiles
(normal ranges), a reasoner and the verifier (the explanation).

    inv = Investigator.fit(train_df)    # detector="ensemble" (AE + VAE + autoregressive) by default
    report = inv.analyze(row)            # one case -> Report
    reports = inv.analyze_batch(df)      # FDR-controlled verdicts for a batch
    inv.save("model/"); Investigator.load("model/")
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from anomalens import __version__
from anomalens.config import DEFAULT_DETECTOR
from anomalens.grounding.drafting import explain_evidence, explain_many
from anomalens.detectors import BaseDetector, benjamini_hochberg, check_matrix, check_probability, make_detector
from anomalens.detectors.base import Attribution as DetectorAttribution
from anomalens.detectors.calibration import bh_cutoff
from anomalens.errors import BackendError, CheckpointError, InputError
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
    fmt,
)
from anomalens.store import ExemplarStore
from anomalens.store.coreset import coverage, select_exemplars
from anomalens.text import names as names_of

__all__ = ["Investigator"]

log = logging.getLogger(__name__)

MODALITIES = ("tabular",)
_CONFIG = "investigator.json"
PROFILE_LEVELS = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)  # training quantiles kept per feature
MAX_EXEMPLARS = 5000  # default size of the exemplar sample kept in the store (k-means medoids beyond it)


def _as_rows(data: Any, name: str) -> tuple[np.ndarray, list[str] | None, list[str] | None]:
    """(X, column names or None, row ids or None) of a DataFrame, a 2-D array, or one row."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if data is None:
        raise InputError(f"{name} must be a DataFrame, an array of rows, a Series or a dict of feature values, got None")
    if isinstance(data, (str, bytes)) or np.isscalar(data):
        raise InputError(f"{name} must be a DataFrame, an array of rows, a Series or a dict of feature values, "
                         f"got {type(data).__name__}")
    if isinstance(data, Mapping):  # one row given as {feature: value}
        if pd is None:  # pragma: no cover
            raise InputError(f"{name} as a dict needs pandas")
        try:
            frame = pd.DataFrame([dict(data)])
        except (TypeError, ValueError) as exc:
            raise InputError(f"{name} as a dict must map feature names to numbers ({exc})") from exc
        return frame.set_axis([str(c) for c in frame.columns], axis=1), [str(c) for c in data], None
    if pd is not None and isinstance(data, pd.Series):
        frame = pd.DataFrame([data.to_numpy()], columns=[str(c) for c in data.index])
        return frame, list(frame.columns), [str(data.name)] if data.name is not None else None
    if pd is not None and isinstance(data, pd.DataFrame):
        ids = None if isinstance(data.index, pd.RangeIndex) else [str(i) for i in data.index]
        return data, [str(c) for c in data.columns], ids
    try:
        X = np.asarray(data)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a rectangular array of numbers, got a {type(data).__name__} numpy cannot read") from exc
    if X.ndim == 1:
        X = X[None, :]
    return X, None, None


class Investigator:
    """A fitted detector with its exemplar store and feature metadata; produces case Reports."""

    def __init__(self, detector: BaseDetector, store: ExemplarStore, feature_names: list[str],
                 quantiles: np.ndarray, n_train: int, *, detector_name: str, modality: str = "tabular",
                 reasoner: Reasoner | None = None, profile: np.ndarray | None = None,
                 exemplar_coverage: float | None = None) -> None:
        self.detector, self.store = detector, store
        self.feature_names = list(feature_names)
        self.quantiles = np.asarray(quantiles, dtype=np.float64)  # (3, d): 1%, 50%, 99% of the training rows
        # (len(PROFILE_LEVELS), d) training quantiles, or None for an Investigator saved before they were kept
        self.profile = None if profile is None else np.asarray(profile, dtype=np.float64)
        self.n_train, self.detector_name, self.modality = n_train, detector_name, modality
        self.reasoner = reasoner
        # median (nearest kept exemplar distance) / (nearest training row distance); None: every row is kept
        self.exemplar_coverage = exemplar_coverage
        self.fit_seconds: dict[str, float] = {}  # time of fit's steps (detector, exemplars, total); empty after load

    def __repr__(self) -> str:
        return (f"Investigator(detector={self.detector_name!r}, features={len(self.feature_names)}, "
                f"n_train={self.n_train}, store={self.store.count()} exemplars)")

    # ------------------------------------------------------------------ fit
    @classmethod
    def fit(cls, data: Any, modality: str = "tabular", detector: str | BaseDetector = DEFAULT_DETECTOR, *,
            store_path: str | Path | None = None, chroma_url: str | None = None, source: str | None = None,
            ids: Sequence[str] | None = None, reasoner: Reasoner | None = None, max_exemplars: int = MAX_EXEMPLARS,
            **detector_params: Any) -> "Investigator":
        """Fit on normal data.

        Args:
            data: (n, d) normal rows: a DataFrame (its columns name the features; a non-default
                index gives the row ids) or an array.
            modality: "tabular" (series, images and logs come later on the same contract).
            detector: a registered name (see ``list_detectors()``) or an unfitted detector; the
                default, ``DEFAULT_DETECTOR``, is the Ensemble (see evals/results/tabular_all.md).
            store_path: folder of the embedded exemplar store (None: in memory until ``save``).
            chroma_url: a chroma server to hold the exemplars instead (default: ``ANOMALENS_CHROMA_URL``).
            source: provenance recorded with every exemplar (e.g. the file name).
            ids: n row ids for the exemplars (default: the DataFrame index, else 0..n-1).
            reasoner: drafts explanations (None: the template; see ``anomalens.llm.make_reasoner``).
            max_exemplars: at most this many training rows are stored as exemplars: beyond it, the
                rows nearest to k-means centres of the embeddings, each with the number of rows it
                stands for (``exemplar_coverage`` says how much nearer the true nearest row is).
            **detector_params: hyper-parameters for a detector given by name.
        """
        if modality not in MODALITIES:
            raise InputError(f"modality must be one of {list(MODALITIES)} for now, got {modality!r}")
        if isinstance(max_exemplars, bool) or not isinstance(max_exemplars, (int, np.integer)) or max_exemplars < 1:
            raise InputError(f"max_exemplars must be a positive int, got {max_exemplars!r}")
        from anomalens.config import get_settings

        settings = get_settings()
        if isinstance(detector, str):
            from anomalens.detectors import get_detector_class

            klass = get_detector_class(detector)
            fields = {f.name for f in dataclasses.fields(klass.Config)}
            defaults = {"device": settings.device, "verbose": settings.progress}  # ANOMALENS_DEVICE, ANOMALENS_PROGRESS
            for k, v in defaults.items():
                if k not in detector_params and (k in fields or klass.__name__ == "Ensemble") and v != {"device": "auto", "verbose": False}[k]:
                    detector_params[k] = v
            det, det_name = make_detector(detector, **detector_params), detector
        else:
            if detector_params:
                raise InputError(f"detector params {sorted(detector_params)} apply only to a detector given by name")
            det, det_name = detector, type(detector).__name__
        det.validate_params()  # a bad hyper-parameter fails before any work
        X, names, row_ids = _as_rows(data, "data")
        arr, _ = check_matrix(X, name="data", min_rows=4)
        if ids is not None:
            if len(ids) != len(arr):
                raise InputError(f"ids must have one entry per row ({len(arr)}), got {len(ids)}")
            row_ids = [str(i) for i in ids]
        t0 = time.perf_counter()
        det.fit(X)
        t_detector = time.perf_counter() - t0
        names = names or list(det.feature_names_in_ or [f"x{i}" for i in range(arr.shape[1])])
        if chroma_url is None:
            chroma_url = settings.chroma_url
        store = ExemplarStore(store_path, url=chroma_url)
        E = det.embed(arr)
        keep, weights = select_exemplars(E, int(max_exemplars), seed=det.config.random_state)
        ids_kept = [row_ids[i] for i in keep] if row_ids is not None else [str(i) for i in keep]
        store.add(E[keep], arr[keep], ids_kept, source=source, weights=weights)
        cover = coverage(E, keep, seed=det.config.random_state) if len(keep) < len(arr) else None
        t_exemplars = time.perf_counter() - t0 - t_detector
        profile = np.quantile(arr, PROFILE_LEVELS, axis=0)
        quantiles = profile[[PROFILE_LEVELS.index(q) for q in (0.01, 0.5, 0.99)]]
        inv = cls(det, store, names, quantiles, len(arr), detector_name=det_name, modality=modality, reasoner=reasoner,
                  profile=profile, exemplar_coverage=cover)
        inv.fit_seconds = {"detector": t_detector, "exemplars": t_exemplars, "total": time.perf_counter() - t0}
        return inv

    # ------------------------------------------------------------------ evidence
    def rows(self, case: Any, name: str = "case") -> tuple[np.ndarray, list[str] | None]:
        """(X, row ids or None): ``case`` (a DataFrame, array, Series, dict or list of rows) checked
        once against the training features and turned into a finite (n, d) float array."""
        X, names, ids = _as_rows(case, name)
        if names is not None and names != self.feature_names:
            missing = [n for n in self.feature_names if n not in names]
            extra = [n for n in names if n not in self.feature_names]
            if missing or extra:
                raise InputError(f"{name} columns must be the training features; missing {names_of(missing)}, "
                                 f"unexpected {names_of(extra)}")
            X = X[self.feature_names]
        self.detector.calibrator  # noqa: B018 - raises NotFittedError before the data is looked at
        arr, _ = check_matrix(X, name=name, n_features=len(self.feature_names),
                              feature_names=self.feature_names if names is not None else None)
        return arr, ids

    def _verdict_parts(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(p-values, approximate mask) of scores, from the detector's calibration stage."""
        cal = self.detector.calibrator
        return cal.pvalues(scores), cal.approximate(scores)

    def evidence(self, case: Any, *, alpha: float = 0.05, k: int = 5, top: int | None = 5,
                 case_id: str | None = None) -> Evidence:
        """The evidence for one case (a row, a one-row DataFrame, a Series or a dict); ``top=None``
        keeps every feature's attribution."""
        alpha = check_probability(alpha, "alpha")
        top = len(self.feature_names) if top is None else top
        X, ids = self.rows(case)
        if len(X) != 1:
            raise InputError(f"case must be one row, got {len(X)}; use analyze_batch for several")
        scores = self.detector.decision_function(X)
        pvals, approx = self._verdict_parts(scores)
        return self._evidence_batch(X, scores, pvals, approx, pvals < alpha, alpha, alpha, k, top,
                                    [case_id or (ids[0] if ids else "case")], "conformal p-value below alpha")[0]

    def _verdict(self, score: float, p: float, approx: bool, flag: bool, alpha: float, cutoff: float,
                 method: str, m: int, thr: float) -> Verdict:
        """One row's verdict; ``thr`` is the batch's score threshold at ``cutoff`` (computed once)."""
        cal = self.detector.calibrator
        note = None
        if not flag and p < alpha and m > 1:
            note = (f"not significant at this batch size: per-row p = {fmt(p)} is below alpha = {fmt(alpha)}, "
                    f"but the false discovery rate control over {m} rows needs p <= {fmt(cutoff)}")
        elif not flag and cal.tail is None and cal.floor > cutoff:
            note = (f"cannot be resolved: with {cal.n} calibration scores no p-value is below {fmt(cal.floor)}, "
                    f"and the cut-off is {fmt(cutoff)}")
        return Verdict(anomalous=bool(flag), score=float(score), p_value=float(p), alpha=alpha, cutoff=float(cutoff),
                       threshold=float(thr) if np.isfinite(thr) else None, detector=self.detector_name, method=method,
                       p_value_method=("GPD tail beyond the largest calibration score (approximate)" if approx
                                       else f"conformal ({cal.n} calibration scores)"),
                       approximate=bool(approx), note=note)

    def _evidence_batch(self, X: np.ndarray, scores: np.ndarray, pvals: np.ndarray, approx: np.ndarray,
                        flags: np.ndarray, alpha: float, cutoff: float, k: int, top: int, case_ids: list[str],
                        method: str, m: int = 1) -> list[Evidence]:
        det = self.detector
        thr = det.calibrator.threshold(cutoff)
        attr: DetectorAttribution = det.explain(X)
        abnormal = attr.abnormal
        restored = det.restore(X)
        score_after = det.decision_function(restored)
        hits = self.store.query(det.embed(X), k=k)
        lo, med, hi = self.quantiles
        scale = det.scale_
        out = []
        for i in range(len(X)):
            exemplars = [
                Exemplar(id=f"exemplar:{h.row_id}", row_id=h.row_id, distance=h.distance,
                         values=dict(zip(self.feature_names, map(float, h.values))), source=h.source,
                         timestamp=h.timestamp, weight=h.weight)
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
                verdict=self._verdict(scores[i], pvals[i], approx[i], flags[i], alpha, cutoff, method, m, thr),
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
        alpha = check_probability(alpha, "alpha")
        X, _ = self.rows(case)
        Y, _ = self.rows(other, "other")
        if len(X) != 1 or len(Y) != 1:
            raise InputError(f"compare takes one row each, got {len(X)} and {len(Y)}")
        det = self.detector
        ex, ey = det.embed(X)[0], det.embed(Y)[0]
        score = det.decision_function(Y)
        p, _ = self._verdict_parts(score)
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
        """(rows, case ids, scores, p-values, approximate mask, BH flags, BH cut-off) of a batch."""
        alpha = check_probability(alpha, "alpha")
        rows, row_ids = self.rows(X, "X")
        case_ids = [str(i) for i in ids] if ids is not None else row_ids or [str(i) for i in range(len(rows))]
        if len(case_ids) != len(rows):
            raise InputError(f"ids must have one entry per row ({len(rows)}), got {len(case_ids)}")
        scores = self.detector.decision_function(rows)
        pvals, approx = self._verdict_parts(scores)
        flags = benjamini_hochberg(pvals, alpha).astype(bool)
        cutoff = bh_cutoff(int(flags.sum()), len(rows), alpha)  # flagged <=> p <= cutoff
        return rows, case_ids, scores, pvals, approx, flags, cutoff

    def verdicts(self, X: Any, *, alpha: float = 0.05, ids: Sequence[str] | None = None) -> dict[str, Verdict]:
        """Verdicts for a batch by case id, controlling the false discovery rate at ``alpha``
        (Benjamini-Hochberg), without the rest of the evidence."""
        rows, case_ids, scores, pvals, approx, flags, cutoff = self._batch(X, alpha, ids)
        thr = self.detector.calibrator.threshold(cutoff)
        return {cid: self._verdict(s, p, a, f, alpha, cutoff, BH_METHOD, len(rows), thr)
                for cid, s, p, a, f in zip(case_ids, scores, pvals, approx, flags)}

    def analyze_batch(self, X: Any, *, alpha: float = 0.05, k: int = 5, top: int = 5,
                      ids: Sequence[str] | None = None, reasoner: Reasoner | None = None,
                      only_anomalous: bool = False, limit: int | None = None) -> list[Report]:
        """Reports for a batch, with verdicts that control the false discovery rate at ``alpha``
        (Benjamini-Hochberg over the batch's p-values). Reports keep the input order;
        ``only_anomalous`` keeps just the flagged ones; ``limit`` keeps the ``limit`` highest
        scores, most anomalous first (the verdicts are still those of the whole batch). When the
        reasoner's backend fails, the rest of the batch is explained by the template (said once,
        in each report's note)."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
            raise InputError(f"limit must be a positive int or None, got {limit!r}")
        rows, case_ids, scores, pvals, approx, flags, cutoff = self._batch(X, alpha, ids)
        m = len(rows)
        keep = np.flatnonzero(flags) if only_anomalous else np.arange(m)
        if limit is not None:
            keep = keep[np.argsort(-scores[keep], kind="stable")[:limit]]
        if len(keep) == 0:
            return []
        evs = self._evidence_batch(rows[keep], scores[keep], pvals[keep], approx[keep], flags[keep], alpha, cutoff, k, top,
                                   [case_ids[i] for i in keep], BH_METHOD, m)
        explanations = explain_many(evs, reasoner or self.reasoner)
        return [Report(evidence=ev, explanation=ex) for ev, ex in zip(evs, explanations)]

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the detector, feature metadata and (for an embedded store) the exemplars to ``path``.

        All or nothing: the new model is written to a fresh version folder inside ``path`` and
        ``investigator.json``, which names that folder, is replaced last (``os.replace``); earlier
        versions (and, for a chroma server, their collections) are removed after the switch. A
        reader sees the complete old model or the complete new one, whenever the writer stops.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise InputError(f"path must be a folder (or a new name), got the file {str(path)!r}")
        path.mkdir(parents=True, exist_ok=True)
        old = _read_config(path) if (path / _CONFIG).is_file() else None
        version = f"v-{uuid.uuid4().hex[:12]}"
        root = path / version
        root.mkdir()
        self.detector.save(root / "detector")
        store = self.store
        if store.url is None:  # a server collection stays where it is; an embedded one is copied in
            copy = ExemplarStore(root / "store", collection=store.collection_name)
            store.copy_to(copy)
            store = copy
        config = {
            "anomalens_version": __version__, "modality": self.modality, "detector": self.detector_name,
            "feature_names": self.feature_names, "quantiles": self.quantiles.tolist(), "n_train": self.n_train,
            "profile": None if self.profile is None else self.profile.tolist(), "root": version,
            "store": {"url": store.url, "collection": store.collection_name, "count": store.count()},
            "exemplar_coverage": self.exemplar_coverage,
        }
        _publish_tree(root)
        tmp = path / f".{_CONFIG}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_text(json.dumps(config, indent=1))
        _publish_tree(tmp)
        os.replace(tmp, path / _CONFIG)  # the switch: before it the old model, after it the new one
        self.store = store
        _remove_old_versions(path, keep=version, old=old, new_store=config["store"])
        return path

    @classmethod
    def load(cls, path: str | Path, *, reasoner: Reasoner | None = None) -> "Investigator":
        """Load an Investigator written by ``save``; needs read access only (a read-only folder's
        exemplar store is opened from a private copy)."""
        path = Path(path)
        config = _read_config(path)
        names, quantiles, store_cfg = config["feature_names"], np.asarray(config["quantiles"], dtype=np.float64), config["store"]
        root = path / config.get("root", ".")
        from anomalens.detectors import load as load_detector

        if not (root / "detector").is_dir():
            raise CheckpointError(f"{path} is incomplete: its detector folder {str(root / 'detector')!r} is missing")
        det = load_detector(root / "detector")
        if quantiles.shape != (3, len(names)) or det.n_features_in_ != len(names):
            raise CheckpointError(f"{path}: the feature metadata does not match the detector ({len(names)} names, "
                                  f"detector expects {det.n_features_in_})")
        if not np.isfinite(quantiles).all():
            raise CheckpointError(f"{path / _CONFIG} is corrupted: its normal ranges hold NaN or inf")
        store = _open_store(path, root, store_cfg)
        profile = config.get("profile")
        return cls(det, store, names, quantiles, int(config["n_train"]), detector_name=config["detector"],
                   modality=config["modality"], reasoner=reasoner, profile=None if profile is None else np.asarray(profile),
                   exemplar_coverage=config.get("exemplar_coverage"))


BH_METHOD = "Benjamini-Hochberg false discovery rate control over the batch"


def _read_config(path: Path) -> dict:
    try:
        config = json.loads((path / _CONFIG).read_text())
        config["feature_names"], config["quantiles"], config["store"]["collection"]  # noqa: B018 - required keys
        if not isinstance(config.get("root", "."), str) or "/" in config.get("root", ".") or ".." in config.get("root", "."):
            raise ValueError(f"root {config.get('root')!r} is not a version folder name")
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path} holds no saved Investigator ({_CONFIG} is missing)") from exc
    except PermissionError as exc:
        raise CheckpointError(f"{path / _CONFIG} cannot be read: permission denied") from exc
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path / _CONFIG} is corrupted: {exc}") from exc
    return config


def _open_store(path: Path, root: Path, cfg: dict) -> ExemplarStore:
    """The saved exemplar store, checked complete; a read-only folder's store is opened from a copy."""
    expected = cfg.get("count")
    if cfg.get("url"):
        store = ExemplarStore(url=cfg["url"], collection=cfg["collection"], create=False)
    else:
        folder = root / "store"
        if not folder.is_dir() or not any(folder.iterdir()):
            raise CheckpointError(f"{path} is incomplete: its exemplar store {str(folder)!r} is missing")
        if not os.access(folder, os.W_OK) or not all(os.access(f, os.W_OK) for f in folder.rglob("*") if f.is_file()):
            private = Path(tempfile.mkdtemp(prefix="anomalens-store-"))
            atexit.register(shutil.rmtree, private, ignore_errors=True)  # the copy lives as long as the process
            shutil.copytree(folder, private / "store")
            for f in [private / "store", *(private / "store").rglob("*")]:
                f.chmod(0o700 if f.is_dir() else 0o600)
            folder = private / "store"
        try:
            store = ExemplarStore(folder, collection=cfg["collection"], create=False)
        except BackendError as exc:
            raise CheckpointError(f"{path}: the exemplar store cannot be opened ({str(exc).splitlines()[0]})") from exc
    try:
        count = store.count()
    except BackendError as exc:
        raise CheckpointError(f"{path}: the exemplar store is corrupted ({str(exc).splitlines()[0]})") from exc
    if expected is not None and count != expected:
        raise CheckpointError(f"{path} is incomplete: its exemplar store holds {count} exemplars, {expected} were saved")
    if count == 0:
        raise CheckpointError(f"{path} is incomplete: its exemplar store is empty")
    return store


def _publish_tree(p: Path) -> None:
    """Give what a save wrote the modes a plain file write would (umask applied): readable by
    others where the umask allows, as a model folder is meant to be shared."""
    mask = os.umask(0)
    os.umask(mask)
    paths = [p] if p.is_file() else [p, *p.rglob("*")]
    for f in paths:
        f.chmod((0o777 if f.is_dir() else 0o666) & ~mask)


def _remove_old_versions(path: Path, *, keep: str, old: dict | None, new_store: dict) -> None:
    """After the switch: remove version folders other than ``keep`` (left by earlier saves or by
    a save that was interrupted), the pre-versioning layout, and an old server collection."""
    for child in path.iterdir():
        if child.name.startswith("v-") and child.name != keep and child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        elif child.name.startswith(f".{_CONFIG}.") and child.name.endswith(".tmp"):
            child.unlink(missing_ok=True)
    if old is not None and old.get("root", ".") == ".":
        for legacy in ("detector", "store"):
            shutil.rmtree(path / legacy, ignore_errors=True)
    if old is not None and old["store"].get("url") and (old["store"]["url"], old["store"]["collection"]) != \
            (new_store.get("url"), new_store["collection"]):
        try:
            ExemplarStore(url=old["store"]["url"], collection=old["store"]["collection"], create=False).delete()
        except Exception as exc:  # the new model is in place; an orphan collection is only a warning
            log.warning("could not remove the old exemplar collection %r: %s", old["store"]["collection"], exc)
