"""The series flow: how a time series goes through an Investigator, where a case is an **event**.

``Investigator.fit(df, modality="series")`` holds one. It composes the same stages as rows, over
windows: the series modality checks the series and cuts it into windows, the detector scores and
attributes each window (a channel x time matrix), the modality reads each point's cells and window
score off the windows that cover it, calibration (cross-fitted, or against a held-out normal block)
gives each point a p-value, Benjamini-Hochberg over the series' windows flags them, contiguous
flagged points become events, and each event gets its evidence (channels, segments with the
restored values, nearest normal windows); the Investigator has it explained and verified.

    inv = Investigator.fit(train_df, modality="series", time_column="timestamp")
    reports = inv.analyze_batch(test_df, plot_dir="out/")   # one report per event, FDR over windows
    report = inv.analyze(stretch)                            # one stretch, one verdict (its strongest event)
    inv.point_table(test_df)                                 # every point's score, p-value and verdict
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from anomalens.detectors import BaseDetector, check_probability
from anomalens.errors import InputError
from anomalens.modalities.flow import CaseFlow, Fitted, check_limit
from anomalens.modalities.series.plot import event_plot
from anomalens.schema import Evidence, Verdict
from anomalens.store import ExemplarStore
from anomalens.store.coreset import coverage, select_exemplars

__all__ = ["SeriesFlow", "SeriesScores"]

SERIES_METHOD = "Benjamini-Hochberg false discovery rate control over the series' windows"


class SeriesScores:
    """A scored series: ``cells`` (C, T) channel x time attribution, ``scores`` (T,) point scores
    (``SeriesModality.score_points``), their p-values and the approximate mask."""

    def __init__(self, series: Any, cells: np.ndarray, window_scores: np.ndarray, modality: Any) -> None:
        self.series, self.cells = series, cells
        self.scores, self.pvalues, self.approximate = modality.point_pvalues(cells, window_scores)


class SeriesFlow(CaseFlow):
    """The flow of a series, whose cases are events (see the module docstring)."""

    verbs = ("point_table", "event_evidence", "plot")
    plots = True

    @property
    def calibrator(self) -> Any:
        return self.modality.calibrator

    @classmethod
    def fit(cls, modality: Any, data: Any, det: BaseDetector, det_name: str, *, store: ExemplarStore,
            max_exemplars: int, source: str | None, ids: Any, max_train_rows: int | None, rows_seen: int | None,
            progress: bool) -> Fitted:
        """Fit on the training part ``head`` and calibrate on the held-out block (``data`` is
        ``modality.begin_fit``'s ``(head, block)``), or, where ``block`` is None, on out-of-fold scores
        of the whole of ``head`` (cross-fitted)."""
        if ids is not None:
            raise InputError("ids do not apply to a series: its exemplars are named by their window's start time")
        if getattr(det.config, "window", None) not in (None, modality.window):
            raise InputError(f"the detector's window ({det.config.window}) must be the modality's ({modality.window})")
        head, block = data
        t0 = time.perf_counter()
        if block is None:  # cross-fitted: out-of-fold scores of every training point
            modality.fit_cross_calibration(det, head)
        det.fit(modality.windows(head.values, modality.train_starts(head)))
        if block is not None:
            modality.fit_calibration(det, block)
        modality.fit_profile(head.values)
        t_detector = time.perf_counter() - t0
        # exemplars: training windows every quarter window (neighbours at stride 1 are near copies)
        n = len(head.values) - modality.window + 1
        starts = np.arange(0, n, max(1, modality.window // 4))
        Xe = modality.windows(head.values, starts)
        E = det.embed(Xe, checked=True)
        keep, weights = select_exemplars(E, int(max_exemplars), seed=det.config.random_state)
        stamps = [head.stamp(int(starts[i])) for i in keep]
        store.add(E[keep], Xe[keep], stamps, source=source, timestamps=stamps, weights=weights)
        cover = coverage(E, keep, seed=det.config.random_state) if len(keep) < len(E) else None
        return Fitted(n_train=len(head.values), exemplar_coverage=cover,
                      seconds={"detector": t_detector, "exemplars": time.perf_counter() - t0 - t_detector,
                               "total": time.perf_counter() - t0})

    # ------------------------------------------------------------------ scoring
    def score(self, series: Any, *, name: str = "series", progress: bool = False) -> SeriesScores:
        """Point scores, p-values and the channel x time attribution of a series."""
        self.detector.calibrator  # noqa: B018 - raises NotFittedError before the data is looked at
        s = self.modality.read(series, name)
        return SeriesScores(s, *self.modality.score_points(self.detector, s.values, progress=progress), self.modality)

    def point_table(self, series: Any, *, alpha: float = 0.05, progress: bool = False):
        """Every point's score, p-value and verdict as a DataFrame (time, score, p_value, p_approximate,
        anomalous, cutoff): what TSB-AD-style evaluations read. Verdicts are the events' rule
        (Benjamini-Hochberg over windows at ``alpha``, ``SeriesModality.flag_points``)."""
        import pandas as pd

        from anomalens.detectors import check_probability

        alpha = check_probability(alpha, "alpha")
        sc = self.score(series, progress=progress)
        flags, cutoffs = self._flags(sc, alpha)
        times = sc.series.times
        return pd.DataFrame({"time": [sc.series.stamp(i) for i in range(len(times))], "score": sc.scores,
                             "p_value": sc.pvalues, "p_approximate": sc.approximate, "anomalous": flags.astype(bool),
                             "cutoff": cutoffs})

    def _flags(self, sc: SeriesScores, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        return self.modality.flag_points(sc.pvalues, alpha)

    def _event_evidence(self, sc: SeriesScores, span: tuple[int, int], *, flag: bool, alpha: float, cutoffs: np.ndarray,
                        k: int, top: int, index: int, case_id: str | None = None) -> tuple[Evidence, dict]:
        """Evidence of one event, and what its plot needs (restored values, nearest window)."""
        m, s, det = self.modality, sc.series, self.detector
        a, b = span
        T, w = len(s.values), m.window
        peak = a + int(sc.cells[:, a : b + 1].sum(axis=0).argmax())
        window_start = int(np.clip(peak - w // 2, 0, T - w))
        restored, emb = m.restore_span(det, s.values, span, window_start)  # one detector call
        hits = self.store.query(emb, k=k)[0]
        event, items, segments = m.event_items(s, span, sc.cells, sc.scores, restored, hits, window_start, top)
        event = event.model_copy(update={"index": index})
        verdict = self._event_verdict(sc, span, flag=flag, alpha=alpha, cutoffs=cutoffs)
        context = m.context(n_train=self.n_train, detector=self.detector_name, attribution_method=det.attribution_method)
        ev = Evidence(case_id=case_id or f"event-{index}", verdict=verdict, attributions=items.attributions,
                      exemplars=items.exemplars, restoration=items.restoration, context=context,
                      parts=[event, *segments])
        return ev, {"restored": restored, "hits": hits, "window_start": window_start}

    def _event_verdict(self, sc: SeriesScores, span: tuple[int, int], *, flag: bool, alpha: float,
                       cutoffs: np.ndarray) -> Verdict:
        """An event's verdict: that of its most significant point."""
        a, b = span
        at = a + int(sc.pvalues[a : b + 1].argmin())
        cutoff = float(cutoffs[at])
        return self.verdict(sc.scores[at], sc.pvalues[at], sc.approximate[at], flag, alpha, cutoff,
                             SERIES_METHOD, len(sc.scores), self.calibrator.threshold(cutoff))

    # ------------------------------------------------------------------ cases
    def assess(self, X: Any, *, alpha: float, k: int, top: int, ids: Any, only_anomalous: bool,
               limit: int | None, explain: bool, plot_dir: str | Path | None = None,
               progress: bool = False) -> tuple[dict[str, Verdict], list[Evidence]]:
        """The series scored once: the verdict of every event (``event-1``, ...) and the evidence of
        the ones ``limit`` keeps, those with the highest peak scores, in time order (each keeps its
        number among all the series' events, as a chat session on the series numbers them); points
        are flagged by Benjamini-Hochberg over the series' windows at ``alpha`` (the false discovery
        rate over windows, ``SeriesModality.flag_points``). Every event is flagged, so
        ``only_anomalous`` changes nothing; ``explain=False``: verdicts only, no evidence built.
        ``plot_dir`` gets ``event-<n>.png`` for each event reported."""
        if ids is not None:
            raise InputError("ids do not apply to a series: events are named event-1, event-2, ... in time order")
        check_limit(limit)
        sc, spans, cutoffs = self._scored_events(X, alpha, progress)
        verdicts = {f"event-{n}": self._event_verdict(sc, sp, flag=True, alpha=alpha, cutoffs=cutoffs)
                    for n, sp in enumerate(spans, 1)}
        if not explain:
            return verdicts, []
        numbers = list(range(1, len(spans) + 1))  # an event keeps its number in the series whatever ``limit`` keeps
        if limit is not None:
            order = sorted(range(len(spans)), key=lambda i: -sc.scores[spans[i][0] : spans[i][1] + 1].max())[:limit]
            spans, numbers = [spans[i] for i in sorted(order)], [numbers[i] for i in sorted(order)]
        built = [self._event_evidence(sc, sp, flag=True, alpha=alpha, cutoffs=cutoffs, k=k, top=top, index=n)
                 for n, sp in zip(numbers, spans)]
        self._draw(sc, spans, built, plot_dir)
        return verdicts, [ev for ev, _ in built]

    def event_evidence(self, X: Any, *, alpha: float = 0.05, k: int = 5, top: int = 5) -> list[Evidence]:
        """The evidence of every event of a series, in time order, without drafting explanations (a
        chat session's cases)."""
        alpha = check_probability(alpha, "alpha")
        sc, spans, cutoffs = self._scored_events(X, alpha, False)
        return [self._event_evidence(sc, sp, flag=True, alpha=alpha, cutoffs=cutoffs, k=k, top=top, index=n)[0]
                for n, sp in enumerate(spans, 1)]

    def _scored_events(self, X: Any, alpha: float, progress: bool, *, name: str = "X") -> tuple[SeriesScores, list, np.ndarray]:
        """(the series' scores, its events' point spans, the points' p-value cut-offs)."""
        sc = self.score(X, name=name, progress=progress)
        flags, cutoffs = self._flags(sc, alpha)
        return sc, self.modality.events(flags, sc.cells, alpha), cutoffs

    def evidence(self, case: Any, *, alpha: float, k: int, top: int | None, case_id: str | None,
                 plot_dir: str | Path | None = None) -> Evidence:
        """One verdict for a stretch of series: anomalous when any of its points is flagged
        (Benjamini-Hochberg over its windows at ``alpha``); the evidence is that of its strongest
        event (or, for a normal stretch, of its highest point)."""
        sc, span, built = self._strongest(case, alpha, k, top or len(self.feature_names), case_id)
        self._draw(sc, [span], [built], plot_dir)
        return built[0]

    def plot(self, case: Any, path: str | Path, *, alpha: float = 0.05, k: int = 5) -> Path:
        """Draw the event ``analyze`` would report for a stretch of series (its strongest) to ``path``,
        a PNG (``series.plot.event_plot``); nothing is explained."""
        alpha = check_probability(alpha, "alpha")
        sc, span, (ev, extra) = self._strongest(case, alpha, k, 5, None)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        event_plot(path, sc, span, ev, self.modality, **extra)
        return path

    def _strongest(self, case: Any, alpha: float, k: int, top: int, case_id: str | None) -> tuple:
        """(scores, span, (evidence, plot material)) of a stretch's strongest event, or of its highest
        point where no point is flagged."""
        sc, spans, cutoffs = self._scored_events(case, alpha, False, name="case")
        if spans:
            span = max(spans, key=lambda sp: sc.scores[sp[0] : sp[1] + 1].max())
            index = spans.index(span) + 1
        else:
            peak = int(sc.scores.argmax())
            span, index = (peak, peak), 1
        return sc, span, self._event_evidence(sc, span, flag=bool(spans), alpha=alpha, cutoffs=cutoffs, k=k, top=top,
                                              index=index, case_id=case_id)

    def plot_name(self, evidence: Evidence) -> str | None:
        return f"event-{evidence.event.index}.png"

    def _draw(self, sc: SeriesScores, spans: list, built: list, plot_dir: str | Path | None) -> None:
        """Each event's picture, ``plot_name`` in ``plot_dir`` (nothing when it is None)."""
        if plot_dir is None:
            return
        folder = Path(plot_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for span, (ev, extra) in zip(spans, built):
            event_plot(folder / self.plot_name(ev), sc, span, ev, self.modality, **extra)

    # ------------------------------------------------------------------ lookups
    def compare(self, case: Any, other: Any, *, other_id: str, alpha: float, top: int):
        """One window beside another (each a channels x window array or its flattened row, e.g. an
        event's peak window and a stored normal window): embedding distance, the other's verdict
        (the point score it gives on its own, against the calibration) and the channels whose
        window means differ most."""
        m = self.modality
        X, Y = (np.asarray(v, dtype=np.float64).reshape(1, -1) for v in (case, other))
        for name, v in (("case", X), ("other", Y)):
            if v.shape[1] != m.model_width or not np.isfinite(v).all():
                raise InputError(f"{name} must be one window of {len(m.channels)} channels x {m.window} finite values, "
                                 f"got {v.shape[1]} values")
        cells = self.detector.explain(Y, checked=True).values.reshape(len(m.channels), m.window)
        p = m.window_pvalue(cells, float(self.detector.decision_function(Y, checked=True)[0]))
        return m.compare(self.detector, X, Y, other_id=other_id, p_other=p, alpha=alpha, top=top)

    def exemplar(self, row_id: str) -> np.ndarray:
        """The stored normal window starting at ``row_id`` as a (channels, window) array."""
        hit = self.store.get([row_id])[0]
        C, w = len(self.feature_names), self.modality.window
        if hit.values.shape != (C * w,):
            raise InputError(f"exemplar {row_id!r} has no stored window of {C} x {w} values")
        return hit.values.reshape(C, w)
