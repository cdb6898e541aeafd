"""Flows: how a modality's cases go through an Investigator's parts.

There is one ``Investigator`` (``anomalens/investigator.py``): it resolves the modality and the
detector, saves and loads, and turns evidence into reports (reasoner, verifier). What a case *is*
differs by kind of data (a row; an event found in a series; a session or window of a log, merged
into incidents), so each modality names a **flow** (``Modality.flow_class``) that the Investigator
holds beside it and that supplies the verbs the kind of data needs:

- ``fit``: train the detector (and whatever else the modality keeps, e.g. the logs' next-event
  model) on normal data, calibrate, store the exemplars -> ``Fitted``;
- ``evidence`` / ``evidence_each``: one case (or several, each on its own) -> ``Evidence``;
- ``assess``: a batch checked and scored once -> every case's verdict by id, and the evidence of the
  cases to report (false discovery rate over the batch);
- ``score``, ``compare``, ``exemplar``, ``save_parts`` / ``load_parts``, the calibration stage;
- the verbs only some kinds have (``verbs``: a series' ``point_table``, a log's ``read_cases``),
  which ``Investigator`` forwards by name.

A flow never drafts an explanation: it returns evidence, and the Investigator sends it to the
reasoner and the verifier (data flows one way; nothing here imports ``llm/`` or ``grounding/``).
``RowFlow`` is the flow of rows of numeric units (the tabular modality's, and the default of any
modality that implements the row contract of ``Modality``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from anomalens.detectors import (
    BaseDetector,
    benjamini_hochberg,
    check_int,
    check_probability,
)
from anomalens.detectors.calibration import Calibrator, bh_cutoff
from anomalens.errors import InputError
from anomalens.schema import Comparison, Evidence, FeatureProfile, Verdict, fmt
from anomalens.store import ExemplarStore
from anomalens.store.coreset import coverage, select_exemplars
from anomalens.store.members import MemberIndex

__all__ = ["BH_METHOD", "ONE_METHOD", "CaseFlow", "Fitted", "RowFlow", "Scored", "check_limit"]

BH_METHOD = "Benjamini-Hochberg false discovery rate control over the batch"
ONE_METHOD = "conformal p-value below alpha"


@dataclass
class Fitted:
    """What a flow's ``fit`` gives the Investigator: the number of training cases, the rows offered
    (more than ``n_train`` when the detector trained on a sample), how near the stored exemplars
    stand to the training cases, the time of fit's steps, and the flow's own parts (constructor
    keyword arguments, e.g. the logs' next-event model)."""

    n_train: int
    rows_seen: int | None = None
    exemplar_coverage: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    parts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scored:
    """A batch's scores and p-values (see ``Investigator.score``); ``ids`` None when the input carried none."""

    ids: list[str] | None
    scores: np.ndarray
    p_values: np.ndarray
    approximate: np.ndarray


def check_limit(limit: Any) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise InputError(f"limit must be a positive int or None, got {limit!r}")


class CaseFlow:
    """The verbs of one kind of case over an Investigator's parts (``inv``: its detector, store,
    modality, ``n_train`` and ``detector_name``). Subclasses implement ``fit``, ``evidence``,
    ``assess``; the rest have defaults or say clearly that they do not apply."""

    verbs: ClassVar[tuple[str, ...]] = ()  # further public verbs the Investigator forwards by name
    plots: ClassVar[bool] = False  # True: ``evidence``/``assess`` can draw each case to ``plot_dir``

    def __init__(self, inv: Any) -> None:
        self.inv = inv

    # the Investigator's parts, read through it (a loaded or refitted part is seen at once)
    @property
    def detector(self) -> BaseDetector:
        return self.inv.detector

    @property
    def store(self) -> ExemplarStore:
        return self.inv.store

    @property
    def modality(self) -> Any:
        return self.inv.modality

    @property
    def n_train(self) -> int:
        return self.inv.n_train

    @property
    def detector_name(self) -> str:
        return self.inv.detector_name

    @property
    def feature_names(self) -> list[str]:
        return self.modality.unit_names

    @property
    def calibrator(self) -> Any:
        """The calibration stage whose p-values the verdicts use (the detector's, for rows)."""
        return self.detector.calibrator

    def summary(self) -> str:
        """The Investigator's repr: what it was fitted on."""
        return (f"Investigator(modality={self.modality.name!r}, detector={self.detector_name!r}, "
                f"units={len(self.feature_names)}, n_train={self.n_train}, store={self.store.count()} exemplars)")

    # ------------------------------------------------------------------ fit
    @classmethod
    def fit(cls, modality: Any, data: Any, det: BaseDetector, det_name: str, *, store: ExemplarStore,
            max_exemplars: int, source: str | None, ids: Sequence[str] | None, max_train_rows: int | None,
            rows_seen: int | None, progress: bool) -> Fitted:
        raise NotImplementedError

    # ------------------------------------------------------------------ verdicts
    def verdict(self, score: float, p: float, approx: bool, flag: bool, alpha: float, cutoff: float, method: str,
                m: int, thr: float) -> Verdict:
        """One case's verdict; ``thr`` is the batch's score threshold at ``cutoff`` (computed once)."""
        cal = self.calibrator
        note = None
        if not flag and p < alpha and m > 1:
            note = (f"not significant at this batch size: per-row p = {fmt(p)} is below alpha = {fmt(alpha)}, "
                    f"but the false discovery rate control over {m} rows needs p <= {fmt(cutoff)}")
        elif not flag and not cal.extends and cal.floor > cutoff:
            note = (f"cannot be resolved: with {cal.n} calibration scores no p-value is below {fmt(cal.floor)}, "
                    f"and the cut-off is {fmt(cutoff)}")
        return Verdict(anomalous=bool(flag), score=float(score), p_value=float(p), alpha=alpha, cutoff=float(cutoff),
                       threshold=float(thr) if np.isfinite(thr) else None, detector=self.detector_name, method=method,
                       p_value_method=(self.approximate_method() if approx
                                       else f"conformal ({cal.n} calibration scores)"),
                       approximate=bool(approx), note=note)

    def approximate_method(self) -> str:
        """How a p-value below the calibration's floor was made (a verdict's ``p_value_method``)."""
        tail = self.calibrator.method.removeprefix("conformal + ")
        return f"{tail} beyond the largest calibration score (approximate)"

    def batch_verdicts(self, case_ids: Sequence[str], scores: np.ndarray, pvals: np.ndarray, approx: np.ndarray,
                       alpha: float, method: str) -> tuple[dict[str, Verdict], np.ndarray, float]:
        """(every case's verdict by id, the flags, the cut-off) of a batch: Benjamini-Hochberg at
        ``alpha`` over its p-values (a case is flagged when p <= the cut-off)."""
        flags = benjamini_hochberg(pvals, alpha).astype(bool)
        cutoff = bh_cutoff(int(flags.sum()), len(pvals), alpha)
        thr = self.calibrator.threshold(cutoff)
        return ({cid: self.verdict(s, p, a, f, alpha, cutoff, method, len(pvals), thr)
                 for cid, s, p, a, f in zip(case_ids, scores, pvals, approx, flags)}, flags, cutoff)

    @staticmethod
    def reported(flags: np.ndarray, scores: np.ndarray, only_anomalous: bool, limit: int | None) -> np.ndarray:
        """Positions of a batch's cases to report: the flagged ones (``only_anomalous``) or all, and
        of those the ``limit`` highest scores (in input order otherwise)."""
        keep = np.flatnonzero(flags) if only_anomalous else np.arange(len(flags))
        if limit is not None:
            keep = keep[np.argsort(-scores[keep], kind="stable")[:limit]]
        return keep

    def batch_limit(self, alpha: float = 0.05) -> int | None:
        """See ``Investigator.batch_limit``; None: no such limit for this kind of case."""
        check_probability(alpha, "alpha")
        return None

    # ------------------------------------------------------------------ cases
    def evidence(self, case: Any, *, alpha: float, k: int, top: int | None, case_id: str | None,
                 plot_dir: str | Path | None = None) -> Evidence:
        raise NotImplementedError

    def evidence_each(self, cases: Sequence[Any], *, alpha: float, k: int, top: int | None,
                      case_ids: Sequence[str] | None) -> list[Evidence]:
        """Each case judged on its own (default: one ``evidence`` each)."""
        cases = list(cases)
        if case_ids is not None and len(case_ids) != len(cases):
            raise InputError(f"case_ids must have one entry per case ({len(cases)}), got {len(case_ids)}")
        return [self.evidence(c, alpha=alpha, k=k, top=top, case_id=None if case_ids is None else str(case_ids[i]))
                for i, c in enumerate(cases)]

    def assess(self, X: Any, *, alpha: float, k: int, top: int, ids: Sequence[str] | None, only_anomalous: bool,
               limit: int | None, explain: bool, plot_dir: str | Path | None = None,
               progress: bool = False) -> tuple[dict[str, Verdict], list[Evidence]]:
        raise NotImplementedError

    def evidence_in_batch(self, X: Any, *, m: int, cutoff: float, alpha: float, k: int, top: int,
                          ids: Sequence[str] | None) -> list[Evidence]:
        raise InputError(f"reports_in_batch applies to rows scored in chunks; a {self.modality.case_noun} of "
                         f"{self.modality.name} data is judged with its whole input (use assess)")

    def plot_name(self, evidence: Evidence) -> str | None:
        """The file name ``plot_dir`` holds for a case's picture (None: this kind of case draws none)."""
        return None

    def score(self, X: Any, *, name: str = "X", progress: bool = False) -> Any:
        raise InputError(f"score applies to rows; {self.modality.name} data has no per-row scores")

    def unit_profile(self, name: str) -> FeatureProfile:
        return self.modality.profile_of(name, self.n_train)

    def compare(self, case: Any, other: Any, *, other_id: str, alpha: float, top: int) -> Comparison:
        raise NotImplementedError

    def exemplar(self, row_id: str) -> Any:
        """A stored normal exemplar in the form a case of this kind has."""
        raise NotImplementedError

    # ------------------------------------------------------------------ persistence
    def save_parts(self, root: Path) -> None:
        """Write what the flow keeps beside the detector (the logs' next-event model)."""

    @classmethod
    def load_parts(cls, root: Path) -> dict[str, Any]:
        """Read what ``save_parts`` wrote, as keyword arguments of the flow's constructor."""
        return {}


class RowFlow(CaseFlow):
    """Cases that are rows of numeric units: one detector inspection per row gives its verdict and its
    evidence (scores, attribution, restoration, embedding), a batch is judged by Benjamini-Hochberg."""

    verbs = ("rows",)

    @classmethod
    def fit(cls, modality: Any, data: Any, det: BaseDetector, det_name: str, *, store: ExemplarStore,
            max_exemplars: int, source: str | None, ids: Sequence[str] | None, max_train_rows: int | None,
            rows_seen: int | None, progress: bool) -> Fitted:
        if max_train_rows is not None and (isinstance(max_train_rows, bool) or
                                           not isinstance(max_train_rows, (int, np.integer)) or max_train_rows < 4):
            raise InputError(f"max_train_rows must be an int >= 4 or None, got {max_train_rows!r}")
        inp = modality.learn(data, ids)
        arr, row_ids, train = inp.array, inp.ids, inp.data
        n_given = len(arr)
        if max_train_rows is not None and n_given > max_train_rows:
            keep_rows = np.sort(np.random.default_rng(det.config.random_state).choice(n_given, int(max_train_rows),
                                                                                    replace=False))
            arr = arr[keep_rows]
            row_ids = [row_ids[i] for i in keep_rows] if row_ids is not None else [str(i) for i in keep_rows]
            train = train.iloc[keep_rows] if hasattr(train, "iloc") else arr
        t0 = time.perf_counter()
        det.fit(train)
        t_detector = time.perf_counter() - t0
        E = det.embed(arr)
        keep, weights, clusters = select_exemplars(E, int(max_exemplars), seed=det.config.random_state,
                                                   with_clusters=True)
        all_ids = [str(i) for i in row_ids] if row_ids is not None else [str(i) for i in range(len(arr))]
        store.add(E[keep], arr[keep], [all_ids[i] for i in keep], source=source, weights=weights)
        cover = None
        if len(keep) < len(arr):  # a sample: queries reach every training row through its exemplar
            store.attach_members(MemberIndex.build(E, arr, all_ids, keep, clusters, seed=det.config.random_state),
                                 source=source)
            cover = coverage(E, keep, seed=det.config.random_state, clusters=clusters)
        t_exemplars = time.perf_counter() - t0 - t_detector
        modality.fit_profile(arr)
        return Fitted(n_train=len(arr), rows_seen=max(int(rows_seen or 0), n_given), exemplar_coverage=cover,
                      seconds={"detector": t_detector, "exemplars": t_exemplars, "total": time.perf_counter() - t0})

    # ------------------------------------------------------------------ input
    def rows(self, case: Any, name: str = "case") -> tuple[np.ndarray, list[str] | None]:
        """(X, row ids or None): ``case`` checked once by the modality against the training data and
        turned into a finite (n, d) float array."""
        self.detector.calibrator  # noqa: B018 - raises NotFittedError before the data is looked at
        inp = self.modality.prepare(case, name)
        return inp.array, inp.ids

    def checked(self, X: Any, ids: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
        """(rows, case ids) of a batch, checked once."""
        rows, row_ids = self.rows(X, "X")
        case_ids = [str(i) for i in ids] if ids is not None else row_ids or [str(i) for i in range(len(rows))]
        if len(case_ids) != len(rows):
            raise InputError(f"ids must have one entry per row ({len(rows)}), got {len(case_ids)}")
        return rows, case_ids

    def _verdict_parts(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(p-values, approximate mask) of scores, from the detector's calibration stage."""
        cal = self.calibrator
        return cal.pvalues(scores), cal.approximate(scores)

    # ------------------------------------------------------------------ evidence
    def inspected(self, X: np.ndarray, alpha: float, cutoff: float | None, k: int, top: int, case_ids: list[str],
                  method: str, m: int = 1, in_batch: bool = False, plot_dir: str | Path | None = None) -> list[Evidence]:
        """Evidence of checked rows ``X``: the detector inspects them once (scores, attribution,
        restoration, embedding), calibration gives the p-values, the store the nearest exemplars and
        the modality the evidence items. One case is flagged when p < alpha; rows ``in_batch`` (of
        a batch of ``m``) when p <= its Benjamini-Hochberg ``cutoff`` (the same rows BH rejects);
        ``cutoff`` None: ``X`` is the whole batch, and BH runs on the inspection's own p-values."""
        det = self.detector
        insp = self.modality.bound_restoration(det, X, det.inspect(X, checked=True))  # X checked by the modality
        pvals, approx = self._verdict_parts(insp.scores)
        if cutoff is None:
            cutoff = bh_cutoff(int(benjamini_hochberg(pvals, alpha).sum()), len(X), alpha)
        flags = pvals <= cutoff if in_batch else pvals < alpha
        thr = det.calibrator.threshold(cutoff)
        hits = self.store.query(insp.embedding, k=k)
        items = self.modality.case_items(X, insp, hits, top, det.scale_)
        normal_below = det.calibrator.threshold(alpha)  # a restored row scoring above it is not shown as normal
        for it in items:
            r = it.restoration
            if r is not None and r.score_after is not None and r.score_after > normal_below:
                r.note = (f"no normal version was found within the training range: the restored "
                          f"{self.modality.case_noun} still scores "
                          f"{fmt(r.score_after)}, above the single-case threshold {fmt(normal_below)} at alpha "
                          f"{fmt(alpha)}")
        context = self.modality.context(n_train=self.n_train, detector=self.detector_name,
                                        attribution_method=det.attribution_method)
        evs = [Evidence(case_id=str(case_ids[i]),
                        verdict=self.verdict(insp.scores[i], pvals[i], approx[i], flags[i], alpha, cutoff, method, m, thr),
                        attributions=it.attributions, exemplars=it.exemplars, restoration=it.restoration, context=context,
                        parts=list(it.parts))
               for i, it in enumerate(items)]
        self.after_inspection(X, insp, evs, plot_dir)
        return evs

    def after_inspection(self, X: np.ndarray, insp: Any, evs: list[Evidence], plot_dir: str | Path | None) -> None:
        """What a kind of row does with an inspection besides its evidence (an image draws its views
        for a vision model, ``Evidence.views``, and its picture to ``plot_dir``); nothing by default."""

    def evidence(self, case: Any, *, alpha: float, k: int, top: int | None, case_id: str | None,
                 plot_dir: str | Path | None = None) -> Evidence:
        return self.evidence_each([case], alpha=alpha, k=k, top=top, case_ids=[case_id] if case_id else None,
                                  plot_dir=plot_dir)[0]

    def evidence_each(self, cases: Sequence[Any], *, alpha: float, k: int, top: int | None,
                      case_ids: Sequence[str] | None, plot_dir: str | Path | None = None) -> list[Evidence]:
        """Each case on its own (p < alpha), with the detector, the calibration and the store run once over all."""
        top = len(self.feature_names) if top is None else check_int(top, "top", error=InputError)
        cases = list(cases)
        if case_ids is not None and len(case_ids) != len(cases):
            raise InputError(f"case_ids must have one entry per case ({len(cases)}), got {len(case_ids)}")
        if not cases:
            return []
        arrays, ids = [], []
        for i, case in enumerate(cases):
            name = "case" if len(cases) == 1 else f"cases[{i}]"  # one case: ``evidence``'s messages and id
            X, row_ids = self.rows(case, name)
            if len(X) != 1:
                raise InputError(f"{name} must be one row, got {len(X)}; use analyze_batch for several")
            arrays.append(X)
            ids.append(str(case_ids[i]) if case_ids is not None else (row_ids[0] if row_ids else
                                                                      "case" if len(cases) == 1 else str(i)))
        return self.inspected(np.concatenate(arrays), alpha, alpha, k, top, ids, ONE_METHOD, plot_dir=plot_dir)

    def assess(self, X: Any, *, alpha: float, k: int, top: int, ids: Sequence[str] | None, only_anomalous: bool,
               limit: int | None, explain: bool, plot_dir: str | Path | None = None,
               progress: bool = False) -> tuple[dict[str, Verdict], list[Evidence]]:
        """Explaining every row, the detector's one inspection of each gives both its verdict and its
        evidence; explaining some (``only_anomalous``, ``limit``), the batch is scored for the verdicts
        and only the kept rows are inspected."""
        rows, case_ids = self.checked(X, ids)
        m = len(rows)
        if explain and not only_anomalous and (limit is None or limit >= m):  # every row explained: one inspection each
            evs = self.inspected(rows, alpha, None, k, top, case_ids, BH_METHOD, m, in_batch=True,
                                 plot_dir=plot_dir) if m else []
            return {ev.case_id: ev.verdict for ev in evs}, evs
        scores = self.detector.decision_function(rows, checked=True)
        pvals, approx = self._verdict_parts(scores)
        verdicts, flags, cutoff = self.batch_verdicts(case_ids, scores, pvals, approx, alpha, BH_METHOD)
        if not explain:
            return verdicts, []
        keep = self.reported(flags, scores, only_anomalous, limit)
        if len(keep) == 0:
            return verdicts, []
        return verdicts, self.inspected(rows[keep], alpha, cutoff, k, top, [case_ids[i] for i in keep], BH_METHOD, m,
                                        in_batch=True, plot_dir=plot_dir)

    def evidence_in_batch(self, X: Any, *, m: int, cutoff: float, alpha: float, k: int, top: int,
                          ids: Sequence[str] | None) -> list[Evidence]:
        rows, case_ids = self.checked(X, ids)
        if len(rows) == 0:
            return []
        return self.inspected(rows, alpha, cutoff, k, top, case_ids, BH_METHOD, m, in_batch=True)

    def score(self, X: Any, *, name: str = "X", progress: bool = False) -> Scored:
        rows, row_ids = self.rows(X, name)
        scores = self.detector.decision_function(rows, checked=True)
        pvals, approx = self._verdict_parts(scores)
        return Scored(ids=row_ids, scores=scores, p_values=pvals, approximate=approx)

    def batch_limit(self, alpha: float = 0.05) -> int | None:
        cal = self.calibrator
        alpha = check_probability(alpha, "alpha")
        if type(cal) is not Calibrator or cal.extends:
            return None
        return int(np.floor(alpha * (cal.n + 1) + 1e-9))

    # ------------------------------------------------------------------ lookups
    def compare(self, case: Any, other: Any, *, other_id: str, alpha: float, top: int) -> Comparison:
        X, _ = self.rows(case)
        Y, _ = self.rows(other, "other")
        if len(X) != 1 or len(Y) != 1:
            raise InputError(f"compare takes one row each, got {len(X)} and {len(Y)}")
        p, _ = self._verdict_parts(self.detector.decision_function(Y, checked=True))
        return self.modality.compare(self.detector, X, Y, other_id=other_id, p_other=float(p[0]), alpha=alpha, top=top)

    def exemplar(self, row_id: str) -> np.ndarray:
        """The stored normal exemplar ``row_id`` as a (d,) row."""
        hit = self.store.get([row_id])[0]
        if hit.values.shape != (len(self.feature_names),):
            raise InputError(f"exemplar {row_id!r} has no stored row of {len(self.feature_names)} values")
        return hit.values
