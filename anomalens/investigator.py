"""Investigator: fit on normal data, then answer "is this anomalous, and why?" with a Report.

It composes the parts and computes nothing itself: the modality (input checks, normal profile,
evidence units), a detector (score, attribution, restoration, embedding), its calibration stage
(p-values), the exemplar store (nearest normal cases), a reasoner and the verifier (the explanation).

    inv = Investigator.fit(train_df)    # detector="ensemble" (AE + VAE + autoregressive + PCA) by default
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from anomalens import __version__
from anomalens.config import DEFAULT_DETECTOR, MAX_TRAIN_ROWS
from anomalens.detectors import BaseDetector, benjamini_hochberg, check_int, check_probability, make_detector
from anomalens.detectors.calibration import Calibrator, bh_cutoff
from anomalens.errors import BackendError, CheckpointError, InputError
from anomalens.grounding.drafting import explain_evidence, explain_many
from anomalens.llm.base import Reasoner
from anomalens.modalities import Modality, get_modality, list_modalities
from anomalens.schema import Comparison, Evidence, FeatureProfile, Report, Verdict, fmt
from anomalens.store import ExemplarStore
from anomalens.store.coreset import coverage, select_exemplars
from anomalens.store.members import MemberIndex
from anomalens.text import names as names_of

__all__ = ["Investigator", "Scored"]

log = logging.getLogger(__name__)

_CONFIG = "investigator.json"
_MEMBERS = "members.npz"  # the member index: every training row under its exemplar (when the store keeps a sample)
MAX_EXEMPLARS = Modality.max_exemplars  # default exemplar sample of a table (each modality sets its own)


class Investigator:
    """A fitted detector with its exemplar store and modality; produces case Reports.

    It composes: modality (input -> model array; evidence units) -> detector (scores, attribution,
    restoration, embedding) -> calibration (p-values) -> store (nearest exemplars) -> modality
    (evidence items) -> reasoner -> verifier. Nothing in it knows the kind of data.
    """

    def __init__(self, detector: BaseDetector, store: ExemplarStore, modality: Modality, n_train: int, *,
                 detector_name: str, reasoner: Reasoner | None = None, exemplar_coverage: float | None = None,
                 rows_seen: int | None = None) -> None:
        if not isinstance(modality, Modality):
            raise InputError(f"modality must be a Modality (see anomalens.modalities), got {type(modality).__name__}")
        self.detector, self.store, self.modality = detector, store, modality
        self.n_train, self.detector_name = n_train, detector_name
        # rows offered to fit; more than n_train when the detector trained on a uniform sample of them
        self.rows_seen = max(int(rows_seen or 0), n_train)
        self.reasoner = reasoner
        # median (nearest kept exemplar distance) / (nearest training row distance); None: every row is kept
        self.exemplar_coverage = exemplar_coverage
        self.fit_seconds: dict[str, float] = {}  # time of fit's steps (detector, exemplars, total); empty after load

    @property
    def feature_names(self) -> list[str]:
        """The names of the evidence units (a table's feature columns)."""
        return self.modality.unit_names

    def __repr__(self) -> str:
        return (f"Investigator(modality={self.modality.name!r}, detector={self.detector_name!r}, "
                f"units={len(self.feature_names)}, n_train={self.n_train}, store={self.store.count()} exemplars)")

    # ------------------------------------------------------------------ fit
    @property
    def calibrator(self):
        """The calibration stage whose p-values the verdicts use (the detector's, for rows)."""
        return self.detector.calibrator

    @classmethod
    def fit(cls, data: Any, modality: str | Modality = "tabular", detector: str | BaseDetector | None = None, *,
            store_path: str | Path | None = None, chroma_url: str | None = None, source: str | None = None,
            ids: Sequence[str] | None = None, reasoner: Reasoner | None = None, max_exemplars: int | None = None,
            max_train_rows: int | None = MAX_TRAIN_ROWS, rows_seen: int | None = None,
            **detector_params: Any) -> "Investigator":
        """Fit on normal data.

        Args:
            data: normal data in a form the modality reads; tabular: (n, d) rows, a DataFrame (its
                columns name the features; a non-default index gives the row ids) or an array.
            modality: a registered name (``anomalens.modalities.list_modalities()``) or an unfitted
                ``Modality``.
            detector: a registered name (see ``list_detectors()``) or an unfitted detector; None:
                the modality's default (tabular: ``DEFAULT_DETECTOR``, the Ensemble, see
                evals/results/tabular_all.md; series: ``conv_ae``).
            store_path: folder of the embedded exemplar store (None: in memory until ``save``).
            chroma_url: a chroma server to hold the exemplars instead (default: ``ANOMALENS_CHROMA_URL``).
            source: provenance recorded with every exemplar (e.g. the file name).
            ids: n row ids for the exemplars (default: the DataFrame index, else 0..n-1).
            reasoner: drafts explanations (None: the template; see ``anomalens.llm.make_reasoner``).
            max_exemplars: at most this many training rows (None: the modality's ``max_exemplars``: 5,000
                rows, 1,000 windows of a series or log cases) are stored as exemplars: beyond it, the
                rows nearest to k-means centres of the embeddings, each with the number of rows it
                stands for (``exemplar_coverage`` says how much nearer the true nearest row is).
            max_train_rows: tabular rows to train on at most (None: every row); beyond it a
                uniform sample (seeded by the detector's ``random_state``), recorded as
                ``rows_seen`` / ``n_train``.
            rows_seen: when ``data`` is already a sample of a larger input (``anomalens fit`` on a
                big file samples while reading), the input's row count, recorded beside ``n_train``.
            **detector_params: hyper-parameters for a detector given by name.
        """
        if isinstance(modality, str):
            if modality not in list_modalities():
                raise InputError(f"modality must be one of {list_modalities()}, got {modality!r}")
            modality = get_modality(modality)()
        elif not isinstance(modality, Modality):
            raise InputError(f"modality must be a name in {list_modalities()} or a Modality, got {type(modality).__name__}")
        if max_exemplars is None:
            max_exemplars = modality.max_exemplars
        if isinstance(max_exemplars, bool) or not isinstance(max_exemplars, (int, np.integer)) or max_exemplars < 1:
            raise InputError(f"max_exemplars must be a positive int, got {max_exemplars!r}")
        from anomalens.config import get_settings

        settings = get_settings()
        if detector is None:
            detector = modality.default_detector or DEFAULT_DETECTOR
        if modality.sequential:  # the series is checked and split before the detector is built: it needs the window
            head, block = modality.split(data)
        if isinstance(detector, str):
            from anomalens.detectors import get_detector_class

            klass = get_detector_class(detector)
            fields = {f.name for f in dataclasses.fields(klass.Config)}
            if modality.sequential:
                if "window" in fields and "window" not in detector_params:
                    detector_params["window"] = modality.window
                if "calibration" in fields and "calibration" not in detector_params:
                    detector_params["calibration"] = "split"  # p-values come from the held-out block; one fit
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
        if chroma_url is None:
            chroma_url = settings.chroma_url
        if modality.name == "logs":
            if ids is not None:
                raise InputError("ids do not apply to logs: cases are named by their session id or window number")
            from anomalens.log_investigator import LogInvestigator

            return LogInvestigator.fit_logs(modality, data, det, det_name, store=ExemplarStore(store_path, url=chroma_url),
                                            reasoner=reasoner, max_exemplars=max_exemplars, source=source,
                                            seed=det.config.random_state,
                                            # bars for reading and the next-event model too when the detector shows its own
                                            progress=settings.progress or bool(getattr(det.config, "verbose", False)))
        if modality.sequential:
            if ids is not None:
                raise InputError("ids do not apply to a series: its exemplars are named by their window's start time")
            if getattr(det.config, "window", None) not in (None, modality.window):
                raise InputError(f"the detector's window ({det.config.window}) must be the modality's ({modality.window})")
            from anomalens.series_investigator import SeriesInvestigator

            return SeriesInvestigator.fit_series(modality, head, block, det, det_name,
                                                 store=ExemplarStore(store_path, url=chroma_url), reasoner=reasoner,
                                                 max_exemplars=max_exemplars, source=source)
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
        store = ExemplarStore(store_path, url=chroma_url)
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
        inv = cls(det, store, modality, len(arr), detector_name=det_name, reasoner=reasoner, exemplar_coverage=cover,
                  rows_seen=max(int(rows_seen or 0), n_given))
        inv.fit_seconds = {"detector": t_detector, "exemplars": t_exemplars, "total": time.perf_counter() - t0}
        return inv

    # ------------------------------------------------------------------ evidence
    def rows(self, case: Any, name: str = "case") -> tuple[np.ndarray, list[str] | None]:
        """(X, row ids or None): ``case`` checked once by the modality against the training data and
        turned into a finite (n, d) float array (tabular: a DataFrame, array, Series, dict or list of rows)."""
        self.detector.calibrator  # noqa: B018 - raises NotFittedError before the data is looked at
        inp = self.modality.prepare(case, name)
        return inp.array, inp.ids

    def _verdict_parts(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(p-values, approximate mask) of scores, from the detector's calibration stage."""
        cal = self.calibrator
        return cal.pvalues(scores), cal.approximate(scores)

    def evidence(self, case: Any, *, alpha: float = 0.05, k: int = 5, top: int | None = 5,
                 case_id: str | None = None) -> Evidence:
        """The evidence for one case (tabular: a row, a one-row DataFrame, a Series or a dict);
        ``top=None`` keeps every unit's attribution."""
        return self.evidence_each([case], alpha=alpha, k=k, top=top, case_ids=[case_id] if case_id else None)[0]

    def _verdict(self, score: float, p: float, approx: bool, flag: bool, alpha: float, cutoff: float,
                 method: str, m: int, thr: float) -> Verdict:
        """One row's verdict; ``thr`` is the batch's score threshold at ``cutoff`` (computed once)."""
        cal = self.calibrator
        note = None
        if not flag and p < alpha and m > 1:
            note = (f"not significant at this batch size: per-row p = {fmt(p)} is below alpha = {fmt(alpha)}, "
                    f"but the false discovery rate control over {m} rows needs p <= {fmt(cutoff)}")
        elif not flag and not cal.extends and cal.floor > cutoff:
            note = (f"cannot be resolved: with {cal.n} calibration scores no p-value is below {fmt(cal.floor)}, "
                    f"and the cut-off is {fmt(cutoff)}")
        tail = cal.method.removeprefix("conformal + ")
        return Verdict(anomalous=bool(flag), score=float(score), p_value=float(p), alpha=alpha, cutoff=float(cutoff),
                       threshold=float(thr) if np.isfinite(thr) else None, detector=self.detector_name, method=method,
                       p_value_method=(f"{tail} beyond the largest calibration score (approximate)" if approx
                                       else f"conformal ({cal.n} calibration scores)"),
                       approximate=bool(approx), note=note)

    def _evidence_batch(self, X: np.ndarray, alpha: float, cutoff: float | None, k: int, top: int,
                        case_ids: list[str], method: str, m: int = 1, in_batch: bool = False) -> list[Evidence]:
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
                r.note = (f"no normal version was found within the training range: the restored row still scores "
                          f"{fmt(r.score_after)}, above the single-case threshold {fmt(normal_below)} at alpha "
                          f"{fmt(alpha)}")
        context = self.modality.context(n_train=self.n_train, detector=self.detector_name,
                                        attribution_method=det.attribution_method)
        return [Evidence(case_id=str(case_ids[i]),
                         verdict=self._verdict(insp.scores[i], pvals[i], approx[i], flags[i], alpha, cutoff, method, m, thr),
                         attributions=it.attributions, exemplars=it.exemplars, restoration=it.restoration, context=context)
                for i, it in enumerate(items)]

    def feature_profile(self, name: str) -> FeatureProfile:
        """The training distribution of one unit (tabular: quantiles of a feature over the normal rows)."""
        return self.modality.profile_of(name, self.n_train)

    def compare(self, case: Any, other: Any, *, other_id: str, alpha: float = 0.05, top: int = 5) -> Comparison:
        """The case beside another one: embedding distance, the other's verdict, and the ``top``
        units that differ most."""
        alpha = check_probability(alpha, "alpha")
        X, _ = self.rows(case)
        Y, _ = self.rows(other, "other")
        if len(X) != 1 or len(Y) != 1:
            raise InputError(f"compare takes one row each, got {len(X)} and {len(Y)}")
        p, _ = self._verdict_parts(self.detector.decision_function(Y, checked=True))
        return self.modality.compare(self.detector, X, Y, other_id=other_id, p_other=float(p[0]), alpha=alpha, top=top)

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
        return self.report(self.evidence(case, alpha=alpha, k=k, top=top, case_id=case_id), reasoner=reasoner)

    def report(self, evidence: Evidence, *, reasoner: Reasoner | None = None) -> Report:
        """The Report of a case's evidence: the evidence and its verified explanation."""
        return Report(evidence=evidence, explanation=explain_evidence(evidence, reasoner or self.reasoner))

    def evidence_each(self, cases: Sequence[Any], *, alpha: float = 0.05, k: int = 5, top: int | None = 5,
                      case_ids: Sequence[str] | None = None) -> list[Evidence]:
        """The evidence for several cases, each judged on its own as ``evidence`` judges one (p <
        alpha, no false discovery rate control across them: they are separate questions, such as the
        concurrent requests of a server), with the detector, the calibration and the store run once
        over all of them: on the default detector eight one-row cases cost about twice one. Each is
        ``evidence``'s for its case, up to floating-point rounding. A case's id: its ``case_ids``
        entry, else its own (a named Series), else its position ("case" when it is the only one).

        Raises:
            InputError: a case that is not one row, or not the training data's units (the message names
                its position among several).
        """
        alpha = check_probability(alpha, "alpha")
        # counts of at least 1 (top=0 and top=2.5 were taken)
        top = len(self.feature_names) if top is None else check_int(top, "top", error=InputError)
        check_int(k, "k", error=InputError)
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
        return self._evidence_batch(np.concatenate(arrays), alpha, alpha, k, top, ids, "conformal p-value below alpha")

    def analyze_each(self, cases: Sequence[Any], *, alpha: float = 0.05, k: int = 5, top: int | None = 5,
                     case_ids: Sequence[str] | None = None, reasoner: Reasoner | None = None) -> list[Report]:
        """Reports for several cases, each judged on its own as ``analyze`` judges one (see
        ``evidence_each``); each explanation is drafted as ``analyze`` drafts it, whatever happened
        to the others'."""
        evs = self.evidence_each(cases, alpha=alpha, k=k, top=top, case_ids=case_ids)
        explanations = explain_many(evs, reasoner or self.reasoner, share_failure=False)
        return [Report(evidence=ev, explanation=ex) for ev, ex in zip(evs, explanations)]

    def _checked(self, X: Any, ids: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
        """(rows, case ids) of a batch, checked once."""
        rows, row_ids = self.rows(X, "X")
        case_ids = [str(i) for i in ids] if ids is not None else row_ids or [str(i) for i in range(len(rows))]
        if len(case_ids) != len(rows):
            raise InputError(f"ids must have one entry per row ({len(rows)}), got {len(case_ids)}")
        return rows, case_ids

    def _scored_batch(self, rows: np.ndarray, alpha: float):
        """(scores, p-values, approximate mask, BH flags, BH cut-off) of a batch's checked rows."""
        scores = self.detector.decision_function(rows, checked=True)
        pvals, approx = self._verdict_parts(scores)
        flags = benjamini_hochberg(pvals, alpha).astype(bool)
        cutoff = bh_cutoff(int(flags.sum()), len(rows), alpha)  # flagged <=> p <= cutoff
        return scores, pvals, approx, flags, cutoff

    def batch_limit(self, alpha: float = 0.05) -> int | None:
        """The largest batch in which one anomalous case, alone among normal ones, can be flagged at a
        false discovery rate ``alpha``. Without a tail the smallest p-value is 1 / (n_cal + 1), and
        Benjamini-Hochberg flags a lone case only when its p <= alpha / m: batches of more than
        alpha * (n_cal + 1) cases cannot flag it (several anomalies together still can). None: no such
        limit (a tail takes p-values below the floor), or a calibration of another kind (series)."""
        cal = self.calibrator
        alpha = check_probability(alpha, "alpha")
        if type(cal) is not Calibrator or cal.extends:
            return None
        return int(np.floor(alpha * (cal.n + 1) + 1e-9))

    def batch_note(self, m: int, alpha: float = 0.05) -> str | None:
        """What to tell the user of a batch of ``m`` cases that ``batch_limit`` says is too large, else None."""
        limit = self.batch_limit(alpha)
        if limit is None or m <= limit:
            return None
        cal = self.calibrator
        return (f"with {cal.n} calibration scores and no tail beyond them, no p-value is below {fmt(cal.floor)}: in a "
                f"batch of {m} cases one anomalous case alone cannot be flagged at a false discovery rate of {alpha:g} "
                f"(batches of up to {limit} can flag it); analyze fewer cases at once, or a case alone, or fit on "
                "more normal data")

    def verdicts(self, X: Any, *, alpha: float = 0.05, ids: Sequence[str] | None = None) -> dict[str, Verdict]:
        """Verdicts for a batch by case id, controlling the false discovery rate at ``alpha``
        (Benjamini-Hochberg), without the rest of the evidence."""
        return self.assess(X, alpha=alpha, ids=ids, explain=False)[0]

    def score(self, X: Any, *, name: str = "X") -> Scored:
        """Scores, p-values and which p-values are the tail's approximation, for a batch of rows in
        input order, and nothing else (no attribution, no exemplars): the cheap pass that streamed
        scoring (``anomalens.scale``) runs over every chunk. Verdicts need the whole input's
        p-values (Benjamini-Hochberg); ``reports_in_batch`` gives them afterwards."""
        rows, row_ids = self.rows(X, name)
        scores = self.detector.decision_function(rows, checked=True)
        pvals, approx = self._verdict_parts(scores)
        return Scored(ids=row_ids, scores=scores, p_values=pvals, approximate=approx)

    def reports_in_batch(self, X: Any, *, m: int, cutoff: float, alpha: float = 0.05, k: int = 5, top: int = 5,
                         ids: Sequence[str] | None = None, reasoner: Reasoner | None = None) -> list[Report]:
        """Reports for some rows of a larger batch whose verdicts were decided over all of it: the
        batch had ``m`` rows and its Benjamini-Hochberg p-value cut-off was ``cutoff`` (a row is
        flagged when p <= cutoff). Streamed scoring explains its top flagged rows with this."""
        alpha = check_probability(alpha, "alpha")
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
            raise InputError(f"m must be a positive int (the batch's size), got {m!r}")
        if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float, np.floating)) or not 0 <= cutoff <= alpha:
            raise InputError(f"cutoff must be a number in [0, alpha = {alpha}], got {cutoff!r}")
        rows, case_ids = self._checked(X, ids)
        return self._batch_reports(rows, case_ids, alpha, float(cutoff), int(m), k, top, reasoner)

    def _batch_reports(self, rows: np.ndarray, case_ids: list[str], alpha: float, cutoff: float, m: int, k: int,
                       top: int, reasoner: Reasoner | None,
                       on_progress: Callable[[int, int], None] | None = None) -> list[Report]:
        """Reports of checked rows of a batch of ``m`` rows whose BH cut-off is ``cutoff``."""
        check_int(top, "top", error=InputError)
        check_int(k, "k", error=InputError)
        if len(rows) == 0:
            return []
        evs = self._evidence_batch(rows, alpha, cutoff, k, top, case_ids, BH_METHOD, m, in_batch=True)
        explanations = explain_many(evs, reasoner or self.reasoner, on_done=on_progress)
        return [Report(evidence=ev, explanation=ex) for ev, ex in zip(evs, explanations)]

    def analyze_batch(self, X: Any, *, alpha: float = 0.05, k: int = 5, top: int = 5,
                      ids: Sequence[str] | None = None, reasoner: Reasoner | None = None,
                      only_anomalous: bool = False, limit: int | None = None,
                      on_progress: Callable[[int, int], None] | None = None) -> list[Report]:
        """Reports for a batch, with verdicts that control the false discovery rate at ``alpha``
        (Benjamini-Hochberg over the batch's p-values). Reports keep the input order;
        ``only_anomalous`` keeps just the flagged ones; ``limit`` keeps the ``limit`` highest
        scores, most anomalous first (the verdicts are still those of the whole batch). When the
        reasoner's backend fails, the rest of the batch is explained by the template (said once,
        in each report's note). ``on_progress(done, total)``: called once the batch is scored (0 of
        the reports to explain) and as each report's explanation is finished."""
        return self.assess(X, alpha=alpha, k=k, top=top, ids=ids, reasoner=reasoner, only_anomalous=only_anomalous,
                           limit=limit, on_progress=on_progress)[1]

    def assess(self, X: Any, *, alpha: float = 0.05, k: int = 5, top: int = 5, ids: Sequence[str] | None = None,
               reasoner: Reasoner | None = None, only_anomalous: bool = False, limit: int | None = None,
               explain: bool = True, on_progress: Callable[[int, int], None] | None = None,
               ) -> tuple[dict[str, Verdict], list[Report]]:
        """A batch checked and scored once: every case's verdict by id (false discovery rate at
        ``alpha``) and the reports ``analyze_batch`` gives (``explain=False``: none, no evidence built).
        Explaining every case, the detector's one inspection of each row gives both its verdict and
        its evidence; explaining some (``only_anomalous``, ``limit``), the batch is scored for the
        verdicts and only the kept rows are inspected."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
            raise InputError(f"limit must be a positive int or None, got {limit!r}")
        check_int(top, "top", error=InputError)
        check_int(k, "k", error=InputError)
        alpha = check_probability(alpha, "alpha")
        rows, case_ids = self._checked(X, ids)
        m = len(rows)
        if explain and not only_anomalous and (limit is None or limit >= m):  # every row explained: one inspection each
            if on_progress is not None:
                on_progress(0, len(rows))
            evs = self._evidence_batch(rows, alpha, None, k, top, case_ids, BH_METHOD, len(rows), in_batch=True)
            explanations = explain_many(evs, reasoner or self.reasoner, on_done=on_progress) if evs else []
            return {ev.case_id: ev.verdict for ev in evs}, [Report(evidence=ev, explanation=ex)
                                                           for ev, ex in zip(evs, explanations)]
        scores, pvals, approx, flags, cutoff = self._scored_batch(rows, alpha)
        thr = self.detector.calibrator.threshold(cutoff)
        verdicts = {cid: self._verdict(s, p, a, f, alpha, cutoff, BH_METHOD, m, thr)
                    for cid, s, p, a, f in zip(case_ids, scores, pvals, approx, flags)}
        if not explain:
            return verdicts, []
        keep = np.flatnonzero(flags) if only_anomalous else np.arange(m)
        if limit is not None:
            keep = keep[np.argsort(-scores[keep], kind="stable")[:limit]]
        if on_progress is not None:
            on_progress(0, len(keep))
        return verdicts, self._batch_reports(rows[keep], [case_ids[i] for i in keep], alpha, cutoff, m, k, top,
                                             reasoner, on_progress=on_progress)

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
        self.save_parts(root)
        store = self.store
        if store.url is None:  # a server collection stays where it is; an embedded one is copied in
            copy = ExemplarStore(root / "store", collection=store.collection_name)
            store.copy_to(copy)
            copy.attach_members(store.members, source=store.member_source)
            store = copy
        members = {}
        if store.members is not None:
            store.members.save(root / _MEMBERS)
            members = {"members": len(store.members), "member_source": store.member_source}
        config = {
            "anomalens_version": __version__, "modality": self.modality.name, "detector": self.detector_name,
            **self.modality.to_config(), "n_train": self.n_train, "rows_seen": self.rows_seen, "root": version,
            "store": {"url": store.url, "collection": store.collection_name, "count": store.count(), **members,
                      **({} if store.url else {"files": _store_files(root / "store")})},
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

    def save_parts(self, root: Path) -> None:
        """Write what a subclass keeps beside the detector (the logs' next-event model)."""

    @classmethod
    def load_parts(cls, root: Path) -> dict[str, Any]:
        """Read what ``save_parts`` wrote, as keyword arguments of the constructor."""
        return {}

    @classmethod
    def load(cls, path: str | Path, *, reasoner: Reasoner | None = None) -> "Investigator":
        """Load an Investigator written by ``save``; needs read access only (a read-only folder's
        exemplar store is opened from a private copy)."""
        path = Path(path)
        config = _read_config(path)
        root = path / config.get("root", ".")
        try:
            modality = get_modality(config.get("modality", "tabular")).from_config(config)
        except (InputError, CheckpointError) as exc:  # an unknown modality, or its part of the config is corrupted
            raise CheckpointError(f"{path / _CONFIG}: {exc}") from exc
        from anomalens.detectors import load as load_detector

        if not (root / "detector").is_dir():
            raise CheckpointError(f"{path} is incomplete: its detector folder {str(root / 'detector')!r} is missing")
        det = load_detector(root / "detector")
        if det.n_features_in_ != modality.model_width:
            raise CheckpointError(f"{path}: the {modality.name} metadata does not match the detector "
                                  f"({modality.model_width} values per row, detector expects {det.n_features_in_})")
        if modality.name == "tabular" and det.feature_names_in_ is not None \
                and list(det.feature_names_in_) != list(modality.feature_names):
            # the detector keeps its own copy of the columns: an edited or reordered list in the JSON would
            # feed every value to another feature's weights (p-values changed, no error)
            raise CheckpointError(f"{path / _CONFIG}: its feature names do not match the detector's "
                                  f"({names_of(modality.feature_names, 6)} against {names_of(det.feature_names_in_, 6)}); "
                                  "the file was edited or mixed with another model's")
        store = _open_store(path, root, config["store"])
        if modality.sequential:
            from anomalens.series_investigator import SeriesInvestigator

            cls = SeriesInvestigator
        elif modality.name == "logs":
            from anomalens.log_investigator import LogInvestigator

            cls = LogInvestigator
        return cls(det, store, modality, int(config["n_train"]), detector_name=config["detector"], reasoner=reasoner,
                   exemplar_coverage=config.get("exemplar_coverage"), rows_seen=config.get("rows_seen"),
                   **cls.load_parts(root))


BH_METHOD = "Benjamini-Hochberg false discovery rate control over the batch"


@dataclasses.dataclass(frozen=True)
class Scored:
    """A batch's scores and p-values (see ``Investigator.score``); ``ids`` None when the input carried none."""

    ids: list[str] | None
    scores: np.ndarray
    p_values: np.ndarray
    approximate: np.ndarray


def _read_config(path: Path) -> dict:
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"a saved Investigator is a folder (written by save or `anomalens fit --out`), got the file "
                              f"{str(path)!r}")
    try:
        config = json.loads((path / _CONFIG).read_text())
        config["n_train"], config["store"]["collection"]  # noqa: B018 - required keys
        if not isinstance(config.get("root", "."), str) or "/" in config.get("root", ".") or ".." in config.get("root", "."):
            raise ValueError(f"root {config.get('root')!r} is not a version folder name")
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path} holds no saved Investigator ({_CONFIG} is missing)") from exc
    except PermissionError as exc:
        raise CheckpointError(f"{path / _CONFIG} cannot be read: permission denied") from exc
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path / _CONFIG} is corrupted: {exc}") from exc
    return config


def _store_files(folder: Path) -> list[str]:
    """The files of an embedded store as saved (its SQLite file and its nearest-neighbour index),
    relative to the folder; SQLite's transient journal files left out."""
    return sorted(str(f.relative_to(folder)) for f in folder.rglob("*")
                  if f.is_file() and not f.name.endswith(("-wal", "-shm", "-journal")))


def _open_store(path: Path, root: Path, cfg: dict) -> ExemplarStore:
    """The saved exemplar store, checked complete; a read-only folder's store is opened from a copy."""
    expected = cfg.get("count")
    if cfg.get("url"):
        store = ExemplarStore(url=cfg["url"], collection=cfg["collection"], create=False)
    else:
        folder = root / "store"
        if not folder.is_dir() or not any(folder.iterdir()):
            raise CheckpointError(f"{path} is incomplete: its exemplar store {str(folder)!r} is missing")
        gone = [f for f in cfg.get("files", []) if not (folder / f).is_file()]
        if gone:  # chroma answered from what was left (a far exemplar, no error) when its index was deleted
            raise CheckpointError(f"{path} is incomplete: {len(gone)} file(s) of its exemplar store are missing, "
                                  f"e.g. {names_of(gone, 3)}")
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
    if cfg.get("members") is not None:
        try:
            members = MemberIndex.load(root / _MEMBERS)
        except CheckpointError as exc:
            raise CheckpointError(f"{path} is incomplete: {exc}") from exc
        if len(members) != cfg["members"] or len(members.exemplar_ids) != count:
            raise CheckpointError(f"{path} is incomplete: its member index holds {len(members)} rows of "
                                  f"{len(members.exemplar_ids)} exemplars, {cfg['members']} rows of {count} were saved")
        store.attach_members(members, source=cfg.get("member_source"))
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
