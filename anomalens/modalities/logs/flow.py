"""The log flow: how logs go through an Investigator, where a case is a session or a window and
anomalous cases are merged into ranked **incidents**.

``Investigator.fit(["normal.log"], modality=LogModality(fmt="hdfs", session=r"blk_-?\\d+"))`` (or
``modality="logs"``, windows of 100 lines) holds one. Fitting reads the normal logs, learns their
templates with Drain3, groups the lines into cases, and fits two models of normal logs on most of
the cases: a **next-event model** (an LSTM over template ids: how probable each event was in its
context, what was expected instead) and a **count model** (a tabular detector, the autoencoder by
default, on the per-case template counts). The rest of the cases calibrate them: each model's
conformal p-values come from one half, and the Cauchy combination of the two p-values, calibrated on
the other half, is the case's p-value.

``triage(files)`` reads new logs as a stream (the fast template path; lines of templates never seen
in normal logs are kept as evidence), scores every case, flags cases by Benjamini-Hochberg over all
of them, merges the flagged ones into incidents, ranks the incidents and explains the top ones with
verified claims.

    inv = Investigator.fit("normal.log", modality=LogModality(fmt="hdfs", session=r"blk_-?\\d+"))
    result = inv.triage(["today.log"])      # Triage: ranked incidents, each a Report
    print(result.to_markdown())
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anomalens.detectors import BaseDetector, benjamini_hochberg, check_probability
from anomalens.detectors.calibration import Calibrator, bh_cutoff
from anomalens.detectors.sequence import NextEventModel
from anomalens.errors import CheckpointError, InputError
from anomalens.modalities.flow import ONE_METHOD, CaseFlow, Fitted, check_limit
from anomalens.modalities.logs.cases import END, MAX_TEXT, GroupStats, LogCase, ScoredCase, group_lines
from anomalens.modalities.logs.reader import LogLine, LogStats, line_texts, read_logs
from anomalens.modalities.logs.items import Incident
from anomalens.schema import Evidence, Report, Verdict, fmt
from anomalens.store import ExemplarStore
from anomalens.store.coreset import coverage, nearest, select_exemplars

__all__ = ["LogFlow", "Triage", "as_cases"]

LOGS_METHOD = "Benjamini-Hochberg false discovery rate control over the log cases"
MIN_CASES = 10  # normal cases needed to fit and calibrate
SCORE_CHUNK = 512  # cases scored at a time
MAX_EXEMPLAR_EVENTS = 2000  # events kept of each exemplar session
UNSEEN_LINES = 5  # lines kept per never-seen template, for the triage report
MAX_UNSEEN_SHOWN = 50  # never-seen templates listed in triage.md (all of them in the JSON)


def as_cases(data: Any, name: str = "data") -> list[LogCase] | None:
    """Cases given directly: LogCases, or sequences of event ids (a list of lists of str or int, e.g.
    HDFS log keys; a numeric key k becomes the template id ``E<k>``, as loghub names them; case i is
    named ``case-i`` and its lines are its positions). None for log sources: paths, ``-``, or log
    text (a str holding line ends)."""
    if isinstance(data, (str, Path, io.IOBase)):
        return None
    if isinstance(data, LogCase):
        return [data]
    try:
        items = list(data)
    except TypeError as exc:
        raise InputError(f"{name} must be log files (paths, '-' for standard input) or sequences of event ids, "
                         f"got {type(data).__name__}") from exc
    if not items:
        raise InputError(f"{name} is empty: give log files or at least one sequence of event ids")
    if all(isinstance(x, (str, Path)) for x in items):
        return None
    if all(isinstance(x, LogCase) for x in items):
        return items
    cases = []
    for i, seq in enumerate(items):
        if isinstance(seq, (str, bytes)) or not hasattr(seq, "__iter__"):
            raise InputError(f"{name}[{i}] must be a sequence of event ids, got {type(seq).__name__}")
        events = [f"E{e}" if str(e).isdigit() else str(e) for e in seq]
        if not events:
            raise InputError(f"{name}[{i}] is an empty sequence; every case needs at least one event")
        c = LogCase(f"case-{i}")
        for t, e in enumerate(events):
            c.add(e, f"case-{i}", t + 1, None, "")
        cases.append(c)
    return cases


@dataclass
class Triage:
    """The result of ``Investigator.triage``: ranked incidents (one Report each, most anomalous
    first), what reading and grouping did, and the batch's numbers."""

    reports: list[Report]
    read: LogStats
    groups: GroupStats
    n_cases: int
    n_flagged: int
    n_incidents: int
    alpha: float
    cutoff: float
    unseen: dict[str, str] = field(default_factory=dict)  # templates never seen in normal logs -> text
    # where they occur: template -> its first lines ({"line": "<file>:<n>", "text": raw line, cut}), and
    # the keys of the cases holding them
    unseen_lines: dict[str, list[dict]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    cases: dict[str, LogCase] = field(default_factory=dict)  # the strongest case of each shown incident, by key
    # per shown incident (by rank): its cases in input order, each {case, start, end, lines, p_value, template}
    timelines: dict[int, list[dict]] = field(default_factory=dict)
    # the logs hold never-seen templates in far more cases than the normal logs did: they may have changed
    drift: str | None = None

    def summary(self, *, drift: bool = True) -> str:
        return (f"{self.read.summary()}. {self.n_cases} case(s) scored, {self.n_flagged} flagged at a false discovery "
                f"rate of {fmt(self.alpha)} (p <= {fmt(self.cutoff)}), merged into {self.n_incidents} incident(s); "
                f"{len(self.unseen)} template(s) never seen in normal logs."
                + (f" {self.drift}" if self.drift and drift else ""))

    def to_markdown(self) -> str:
        from anomalens.schema import md as _md

        out = ["# Log triage", "", _md(self.summary(drift=False)), ""]
        if self.drift:
            out += [f"**{_md(self.drift)}**", ""]
        if self.groups.no_session:
            out += [f"_{self.groups.no_session} line(s) carry no session id and belong to no case._", ""]
        if not self.reports:
            out.append("No incident: no case is anomalous at this false discovery rate.")
            return "\n".join(out + self._unseen_markdown()) + "\n"
        out += ["| rank | p-value | cases | lines | span | abnormal templates | never seen | example line |",
                "|---:|---:|---:|---:|---|---|---|---|"]
        for r in self.reports:
            i, ev = r.evidence.incident, r.evidence
            span = f"{_md(i.start)} to {_md(i.end)}" if i.start else "-"
            loc = next((f"{ln.source}:{ln.lineno}" for ln in ev.lines), "-")
            out.append(f"| {i.index} | {fmt(i.p_value)} | {i.n_cases} | {i.n_lines} | {span} | "
                       f"{_md(', '.join(i.templates[:5]))} | {_md(', '.join(i.unseen[:5]) or '-')} | {_md(loc)} |")
        out += self._unseen_markdown()
        for r in self.reports:
            out += ["", "---", "", r.to_markdown().replace("# Case ", f"# Incident {r.evidence.incident.index}: case ", 1)]
        return "\n".join(out) + "\n"

    def _unseen_markdown(self) -> list[str]:
        """The templates never seen in normal logs, each with the lines that hold it (flagged or not: a
        new kind of line is worth a look even when no case reaches the cut-off)."""
        from anomalens.schema import code_span as _code, md as _md

        if not self.unseen:
            return []
        out = ["", f"## Templates never seen in normal logs ({len(self.unseen)})", "",
               "| template | text | lines (first ones) |", "|---|---|---|"]
        for tid, text in list(self.unseen.items())[:MAX_UNSEEN_SHOWN]:
            where = self.unseen_lines.get(tid, [])
            lines = ("<br>".join(f"{_md(x['line'])} `{_code(x['text'])}`" for x in where)
                     or "in no case (its lines carry no session id)")
            out.append(f"| {_md(tid)} | `{_code(text)}` | {lines} |")
        if len(self.unseen) > MAX_UNSEEN_SHOWN:
            out.append(f"\n_{len(self.unseen) - MAX_UNSEEN_SHOWN} more in the JSON report._")
        return out

    def to_json(self) -> dict[str, Any]:
        return {"summary": self.summary(), "read": {k: v for k, v in vars(self.read).items()},
                "groups": vars(self.groups), "n_cases": self.n_cases, "n_flagged": self.n_flagged,
                "n_incidents": self.n_incidents, "alpha": self.alpha, "cutoff": self.cutoff, "drift": self.drift,
                "unseen": self.unseen,
                "unseen_lines": self.unseen_lines,
                "seconds": self.seconds, "incidents": [r.model_dump(mode="json") for r in self.reports],
                "timelines": {str(k): v for k, v in self.timelines.items()}}


class LogFlow(CaseFlow):
    """The flow of logs, whose cases are sessions or windows (see the module docstring); it keeps the
    next-event model beside the Investigator's count detector."""

    verbs = ("read_cases", "score_cases", "exemplar_sequence", "next_event")

    def __init__(self, inv: Any, *, next_event: NextEventModel) -> None:
        super().__init__(inv)
        self.next_event = next_event

    def approximate_method(self) -> str:
        return self.modality.BEYOND

    def summary(self) -> str:
        return (f"Investigator(modality='logs', templates={len(self.feature_names)}, detector={self.detector_name!r}, "
                f"n_train={self.n_train} cases, store={self.store.count()} exemplars)")

    @property
    def calibrator(self) -> Calibrator:
        return self.modality.calibrator

    # ------------------------------------------------------------------ fit
    @classmethod
    def fit(cls, modality: Any, data: Any, det: BaseDetector, det_name: str, *, store: ExemplarStore,
            max_exemplars: int, source: str | None, ids: Any, max_train_rows: int | None, rows_seen: int | None,
            progress: bool) -> Fitted:
        if ids is not None:
            raise InputError("ids do not apply to logs: cases are named by their session id or window number")
        seed = det.config.random_state
        t0 = time.perf_counter()
        cases = as_cases(data)
        if cases is None:
            cases = modality_cases_for_fit(modality, data, progress=progress)
        else:
            modality.parsed_input = False
        if len(cases) < MIN_CASES:
            raise InputError(f"the normal logs must group into at least {MIN_CASES} cases (sessions or windows) to fit "
                             f"and calibrate, got {len(cases)}; use a smaller window or more logs")
        lines: dict[str, int] = {}
        for c in cases:
            for e in c.events:
                lines[e] = lines.get(e, 0) + 1
        modality.learn_templates([c.events for c in cases], lines)
        modality.fit_neighbours([c.events for c in cases])
        rng = np.random.default_rng(seed)
        blocks = modality.plan_calibration(len(cases))
        if blocks:  # every case scored out of fold, then split into the two calibration halves
            oof = [cls._fold_scores(modality, det, [c for j, c in enumerate(cases) if not (b[0] <= j <= b[-1])],
                                    [cases[i] for i in b], seed, progress=progress) for b in blocks]
            s1, s2 = np.concatenate([m.s1 for m in oof]), np.concatenate([m.s2 for m in oof])
            per_case = [x for m in oof for x in m.per_case]
            order = rng.permutation(len(cases))
            halves = {"a": order[: len(cases) // 2], "b": order[len(cases) // 2 :]}
            member = {k: [s1[idx], s2[idx]] for k, idx in halves.items()}
            surprises = [per_case[i][0] for i in order]
            fit_cases = cases
            held = [[cases[i] for i in b] for b in blocks]
            seen = [{e for c in h for e in c.events} for h in held]  # each block's templates
            modality.novel_cases = (sum(_novel(h, set().union(*seen[:f], *seen[f + 1 :])) for f, h in enumerate(held)),
                                    len(cases))
        else:
            order = rng.permutation(len(cases))
            n_cal = max(4, int(round(modality.calibration_size * len(cases))))
            fit_idx, cal_a, cal_b = order[n_cal:], order[: n_cal // 2], order[n_cal // 2 : n_cal]
            fit_cases = [cases[i] for i in fit_idx]
            modality.novel_cases = (_novel([cases[i] for i in order[:n_cal]], {e for c in fit_cases for e in c.events}),
                                    n_cal)
        nxt, counts = cls._fit_members(modality, det, fit_cases, seed, progress=progress)
        modality.fit_log_profile(counts)
        t_models = time.perf_counter() - t0
        if not blocks:
            member = {}
            surprises = []
            for name, idx in (("a", cal_a), ("b", cal_b)):
                ms = member_scores(modality, nxt, det, [cases[i] for i in idx])
                surprises += [sur for sur, _ in ms.per_case]
                member[name] = [ms.s1, ms.s2]
        modality.fit_calibration(member["a"], member["b"], surprises)
        # exemplars: one per distinct count vector (normal sessions repeat: many are identical), standing
        # for its copies (the store's weights), then a sample of at most max_exemplars
        _, first, dup = np.unique(counts, axis=0, return_index=True, return_counts=True)
        order_u = np.argsort(first)
        first, dup = first[order_u], dup[order_u]
        E_all = det.embed(counts)
        E = E_all[first]
        keep_u, _ = select_exemplars(E, int(max_exemplars), seed=seed)
        if len(keep_u) < len(E):  # each kept one stands for the cases nearest to it, copies included
            assign, _ = nearest(np.asarray(E, dtype=np.float32), np.asarray(E[keep_u], dtype=np.float32))
            weights = np.bincount(assign, weights=dup, minlength=len(keep_u)).astype(np.int64)
        else:
            weights = dup[keep_u].astype(np.int64)
        keep = first[keep_u]
        keys = [fit_cases[i].key for i in keep]
        store.add(E_all[keep], counts[keep], keys, source=source, weights=weights.tolist(),
                  timestamps=[fit_cases[i].start for i in keep] if any(c.start for c in fit_cases) else None)
        modality.exemplar_sequences = {fit_cases[i].key: fit_cases[i].events[:MAX_EXEMPLAR_EVENTS] for i in keep}
        return Fitted(n_train=len(fit_cases), exemplar_coverage=coverage(E, keep_u, seed=seed) if len(keep_u) < len(E) else None,
                      seconds={"models": t_models, "total": time.perf_counter() - t0}, parts={"next_event": nxt})

    @staticmethod
    def _fit_members(modality: Any, det: BaseDetector, cases: list[LogCase], seed: int, *,
                     progress: bool | str = False) -> tuple[NextEventModel, np.ndarray]:
        """The next-event model and ``det`` (the count model) fitted on ``cases``; their count matrix."""
        import pandas as pd

        nxt = NextEventModel(random_state=seed, **(modality.next_event or {}))
        nxt.fit([modality.encode(c.events) for c in cases], n_events=len(modality.feature_names), progress=progress)
        counts = modality.count_matrix([c.events for c in cases])
        det.fit(pd.DataFrame(counts, columns=modality.feature_names))
        return nxt, counts

    @classmethod
    def _fold_scores(cls, modality: Any, det: BaseDetector, train: list[LogCase], held: list[LogCase],
                     seed: int, *, progress: bool = False) -> "MemberScores":
        """Both members' scores of ``held`` by fresh copies of the two models fitted on ``train`` (a fold
        of cross-fitted calibration; the count model's own calibration is not used, so it splits)."""
        params = {"calibration": "split"} if "calibration" in det.get_params() else {}
        fold_det = det.fold_copy(**params)
        nxt, _ = cls._fit_members(modality, fold_det, train, seed,
                                  progress="calibrating: a fold's next-event model" if progress else False)
        return member_scores(modality, nxt, fold_det, held)

    # ------------------------------------------------------------------ reading and scoring
    def read_cases(self, sources: Any, *, progress: bool = False) -> tuple[Iterator[LogCase], LogStats, GroupStats]:
        """Cases of new logs (a stream) with the counters of reading and grouping."""
        m = self.modality
        if not m.parsed_input:
            raise InputError("this model was fitted on sequences of event ids, not log lines; pass sequences")
        stats, groups = LogStats(), GroupStats()
        m.parser.forget_unseen()
        lines: Iterable[LogLine] = read_logs(sources, m.format, stats=stats)
        if progress:
            from tqdm.auto import tqdm

            lines = tqdm(lines, desc="reading", unit=" lines", mininterval=0.5, leave=False)
        parsed = ((m.parser.parse(ln.content).template_id, ln) for ln in lines)
        return group_lines(parsed, session=m.session, window=m.window, stats=groups), stats, groups

    def score_cases(self, cases: list[LogCase]) -> tuple[list[ScoredCase], np.ndarray, np.ndarray]:
        """(scored cases, combined scores, p-values) of checked cases."""
        m = self.modality
        if not cases:
            return [], np.zeros(0), np.zeros(0)
        ms = member_scores(m, self.next_event, self.detector, cases)
        scored = [ScoredCase(c, s, sur, lp, ms.counts[i])
                  for i, (c, s, lp, (sur, _)) in enumerate(zip(cases, ms.seqs, ms.logps, ms.per_case))]
        T = m.combine(np.stack([ms.s1, ms.s2]))
        return scored, T, m.pvalues(T)

    # ------------------------------------------------------------------ evidence
    def _case_evidence(self, sc: ScoredCase, T: float, p: float, *, flag: bool, alpha: float, cutoff: float, m: int,
                       k: int, top: int, incident: Incident | None = None) -> Evidence:
        mod = self.modality
        emb = self.detector.embed(sc.counts[None, :], checked=True)
        hits = self.store.query(emb, k=k)[0]
        cont = self.next_event.rollout(sc.ids) if sc.surprise[-1] > mod.event_level else []
        items = mod.case_evidence(sc, hits, top=top, n_lines=top, continuation=cont)
        cal = self.calibrator
        approx = bool(mod.approximate(np.array([T]))[0])
        verdict = self.verdict(T, p, approx, flag, alpha, cutoff, LOGS_METHOD if m > 1 else ONE_METHOD,
                                m, cal.threshold(cutoff))
        unseen = sorted({e for e in sc.case.events if e not in mod.vocab}, key=lambda t: (len(t), t))
        context = mod.context(n_train=self.n_train, detector=f"next-event LSTM + {self.detector_name} on counts",
                              attribution_method="surprise (-log p) of the template's events in context, in nats, "
                                                 "plus a count outside its normal range", extra_units=unseen)
        parts = [*([incident] if incident is not None else []), *items.pop("parts")]
        return Evidence(case_id=sc.case.key, verdict=verdict, context=context, parts=parts, **items)

    def _scored(self, X: Any, name: str) -> tuple[list[ScoredCase], np.ndarray, np.ndarray, LogStats | None]:
        self.calibrator  # noqa: B018 - raises NotFittedError before the data is looked at
        cases = as_cases(X, name)
        stats = None
        if cases is None:
            it, stats, _ = self.read_cases(X)
            cases = list(it)
        if not cases:
            raise InputError(f"{name} holds no log case: every line was blank, binary or without a session id")
        scored, T, p = self.score_cases(cases)
        return scored, T, p, stats

    def evidence(self, case: Any, *, alpha: float, k: int, top: int | None, case_id: str | None,
                 plot_dir: Any = None) -> Evidence:
        """The evidence of one case: a sequence of event ids, a LogCase, or log lines forming one case."""
        scored, T, p, _ = self._scored([case] if isinstance(case, LogCase) or _is_sequence(case) else case, "case")
        if len(scored) > 1 and not self.modality.session:  # log text of one window cut in two: one case
            scored, T, p, _ = self._scored([_merge(sc.case for sc in scored)], "case")
        if len(scored) != 1:
            raise InputError(f"case must be one session or window, got {len(scored)}; use analyze_batch or triage")
        ev = self._case_evidence(scored[0], T[0], p[0], flag=bool(p[0] < alpha), alpha=alpha, cutoff=alpha, m=1, k=k,
                                 top=top or 5)
        return ev if case_id is None else ev.model_copy(update={"case_id": case_id})

    def assess(self, X: Any, *, alpha: float, k: int, top: int, ids: Any, only_anomalous: bool, limit: int | None,
               explain: bool, plot_dir: Any = None, progress: bool = False) -> tuple[dict[str, Verdict], list[Evidence]]:
        """The cases (sequences, LogCases or log files) scored once: every case's verdict by key
        (Benjamini-Hochberg over all of them) and the evidence of the ones to report
        (``only_anomalous``: the flagged ones; ``limit``: the most anomalous)."""
        if ids is not None:
            raise InputError("ids do not apply to logs: cases are named by their session id or window number")
        check_limit(limit)
        scored, T, p, _ = self._scored(X, "X")
        verdicts, flags, cutoff = self.batch_verdicts([sc.case.key for sc in scored], T, p,
                                                      self.modality.approximate(T), alpha, LOGS_METHOD)
        if not explain:
            return verdicts, []
        keep = self.reported(flags, T, only_anomalous, limit)
        return verdicts, [self._case_evidence(scored[i], T[i], p[i], flag=bool(flags[i]), alpha=alpha, cutoff=cutoff,
                                              m=len(p), k=k, top=top) for i in keep]

    # ------------------------------------------------------------------ triage
    def triage(self, sources: Any, *, alpha: float = 0.05, limit: int | None = 10, k: int = 3, top: int = 5,
               progress: bool = False, engine: str = "local", model_dir: str | Path | None = None,
               address: str | None = None, workers: int | None = None,
               explain: Callable[[list[Evidence]], list[Report]]) -> Triage:
        """Ranked incidents of new logs (files, ``-``, or sequences of event ids); see the module docstring.

        Cases are scored in chunks as they close; only those with p <= alpha (the largest cut-off
        Benjamini-Hochberg can reach) are kept beyond their p-value, so memory follows the number of
        candidate cases, not the input (sessions are held until the end of the input, as an id can
        come back any time).

        ``engine="ray"`` (log files only; ``model_dir``: the folder this investigator was loaded
        from, which the workers load too) parses and scores on a Ray cluster
        (``anomalens.scale.ray_logs``); the flagged cases are then scored again here for their
        evidence, and the texts of their lines read back from the files. ``explain`` turns the top
        incidents' evidence into reports (the Investigator's reasoner and verifier)."""
        alpha = check_probability(alpha, "alpha")
        check_limit(limit)
        if engine not in ("local", "ray"):
            raise InputError(f"engine must be 'local' or 'ray', got {engine!r}")
        self.calibrator  # noqa: B018
        t0 = time.perf_counter()
        given = as_cases(sources, "sources")
        pvals: list[float] = []
        kept: list[tuple[int, Any, float, float]] = []  # (position, ScoredCase or, on Ray, LogCase, score, p)
        unseen_lines: dict[str, list[dict]] = {}
        novel = [0]  # cases holding a template never seen in normal logs
        vocab = self.modality.vocab
        if engine == "ray":
            if given is not None:
                raise InputError("engine 'ray' reads log files; sequences of event ids are triaged locally")
            read, groups = LogStats(), GroupStats()
            paths = [sources] if isinstance(sources, (str, Path)) else list(sources)
            for _, cases, (T, p, _) in self._ray_chunks(paths, model_dir, address, workers, read, groups):
                for c, t, pv in zip(cases, T, p):
                    novel[0] += any(e not in vocab for e in c.events)
                    if pv <= alpha:
                        kept.append((len(pvals), c, float(t), float(pv)))
                    pvals.append(float(pv))
        else:
            if given is not None:
                stream, read, groups = iter(given), LogStats(format="(parsed)", lines=sum(map(len, given)),
                                                            kept=sum(map(len, given)), files=["(sequences)"]), \
                    GroupStats(cases=len(given))
            else:
                stream, read, groups = self.read_cases(sources, progress=progress)
            chunk: list[LogCase] = []

            def flush() -> None:
                for case in chunk:  # where never-seen templates occur (their first lines, for the report)
                    novel[0] += any(e not in vocab for e in case.events)
                    for j, e in enumerate(case.events):
                        if e not in vocab:
                            seen_at = unseen_lines.setdefault(e, [])
                            if len(seen_at) < UNSEEN_LINES:
                                seen_at.append({"line": case.location(j), "text": case.texts[j], "case": case.key})
                scored, T, p = self.score_cases(chunk)
                for sc, t, pv in zip(scored, T, p):
                    if pv <= alpha:
                        kept.append((len(pvals), sc, float(t), float(pv)))
                    pvals.append(float(pv))
                chunk.clear()

            for case in stream:
                chunk.append(case)
                if len(chunk) >= SCORE_CHUNK:
                    flush()
            if chunk:
                flush()
        t_score = time.perf_counter() - t0
        if not pvals:
            raise InputError(f"the logs hold no case to score ({read.summary()}"
                             + (f"; {groups.no_session} line(s) without a session id matching {self.modality.session!r}"
                                if groups.no_session else "") + ")")
        p_all = np.asarray(pvals)
        flags = benjamini_hochberg(p_all, alpha).astype(bool)
        cutoff = bh_cutoff(int(flags.sum()), len(p_all), alpha)
        flagged = [x for x in kept if flags[x[0]]]
        if engine == "ray" and flagged:  # their evidence: scored again here, their lines' texts read back
            rescored, _, _ = self.score_cases([x[1] for x in flagged])
            _fill_texts([sc.case for sc in rescored], paths)
            flagged = [(i, sc, t, pv) for (i, _, t, pv), sc in zip(flagged, rescored)]
        incidents = self._incidents(flagged)
        shown = incidents if limit is None else incidents[:limit]
        evs, cases, timelines = [], {}, {}
        for rank, members in enumerate(shown, start=1):
            inc = self._incident_item(rank, members)
            _, sc, t, pv = members[0]
            evs.append(self._case_evidence(sc, t, pv, flag=True, alpha=alpha, cutoff=cutoff, m=len(p_all), k=k, top=top,
                                           incident=inc))
            cases[sc.case.key] = sc.case
            timelines[rank] = [{"case": x[1].case.key, "start": x[1].case.start, "end": x[1].case.end,
                                "lines": len(x[1].case), "first_line": x[1].case.location(0), "p_value": x[3],
                                "template": self._top_template(x[1])} for x in sorted(members, key=lambda x: x[0])]
        reports = explain(evs)
        unseen = self.modality.parser.unseen_templates if given is None else {}
        return Triage(reports=reports, read=read, groups=groups, n_cases=len(p_all), n_flagged=int(flags.sum()),
                      n_incidents=len(incidents), alpha=alpha, cutoff=cutoff, unseen=unseen,
                      unseen_lines={t: unseen_lines[t] for t in unseen if t in unseen_lines},
                      seconds={"read_parse_score": t_score, "total": time.perf_counter() - t0}, cases=cases,
                      timelines=timelines, drift=self.modality.drift_note(novel[0], len(p_all)))

    def _ray_chunks(self, paths: list, model_dir: str | Path | None, address: str | None, workers: int | None,
                    read: LogStats, groups: GroupStats) -> Iterator:
        from anomalens.scale.ray_logs import ray_log_chunks

        if model_dir is None:
            raise InputError("engine 'ray' needs model_dir: the folder the workers load the investigator from")
        names = [Path(str(p)).name for p in paths]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:  # a line is located by its file's name (``app.log:12``); its text is read back by it
            raise InputError(f"engine 'ray' needs log files with distinct names, got {len(twice)} name(s) twice: "
                             f"{twice[:3]}")
        return ray_log_chunks(model_dir, self, paths, chunk_cases=SCORE_CHUNK, address=address, workers=workers,
                              stats=read, groups=groups)

    def _top_template(self, sc: ScoredCase) -> str:
        """The case's most abnormal template: the first unseen one, else the event (or missing step) of
        its most surprising place."""
        m = self.modality
        unseen = next((e for e in sc.case.events if e not in m.vocab), None)
        if unseen is not None:
            return unseen
        t = int(np.argmax(sc.surprise))
        if t < len(sc.case.events):
            return sc.case.events[t]
        best, _ = m.expected_at(sc.logp[t : t + 1])
        return f"missing:{m._name(int(best[0]))}" if int(best[0]) != len(m.feature_names) + 1 else END

    def _incidents(self, flagged: list[tuple[int, ScoredCase, float, float]]) -> list[list]:
        """Flagged cases merged (same most abnormal template; adjacent windows), strongest case first,
        incidents ranked by their strongest case's p-value (then more cases, then the higher score)."""
        parent = list(range(len(flagged)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        by_template: dict[str, int] = {}
        for i, (pos, sc, _, _) in enumerate(flagged):
            key = self._top_template(sc)
            if key in by_template:
                parent[root(i)] = root(by_template[key])
            else:
                by_template[key] = i
        if self.modality.session is None and self.modality.parsed_input:  # windows of lines: adjacent ones are one incident
            for i in range(1, len(flagged)):
                if flagged[i][0] == flagged[i - 1][0] + 1:
                    parent[root(i)] = root(i - 1)
        groups: dict[int, list] = {}
        for i, x in enumerate(flagged):
            groups.setdefault(root(i), []).append(x)
        out = [sorted(g, key=lambda x: (x[3], -x[2])) for g in groups.values()]
        out.sort(key=lambda g: (g[0][3], -len(g), -g[0][2]))
        return out

    def _incident_item(self, rank: int, members: list) -> Incident:
        m = self.modality
        cases = [x[1].case for x in members]
        templates: dict[str, int] = {}
        unseen: dict[str, None] = {}
        for x in members:
            key = self._top_template(x[1])
            templates[key.removeprefix("missing:")] = templates.get(key.removeprefix("missing:"), 0) + 1
            for e in x[1].case.events:
                if e not in m.vocab:
                    unseen[e] = None
        templates.pop(END, None)
        by_pos = sorted(members, key=lambda x: x[0])
        return Incident(index=rank, start=by_pos[0][1].case.start, end=by_pos[-1][1].case.end, n_cases=len(members),
                        n_lines=sum(len(c) for c in cases), cases=[c.key for c in cases[:20]],
                        templates=sorted(templates, key=lambda t: -templates[t]), unseen=list(unseen),
                        p_value=float(members[0][3]))

    # ------------------------------------------------------------------ tools' lookups
    def compare(self, case: Any, other: Any, *, other_id: str, alpha: float, top: int):
        """A case beside another one (each a LogCase, a sequence of event ids or log text; e.g. a
        session and its nearest normal exemplar): the count model's embedding distance, the other's
        verdict and the templates whose counts differ most."""
        a, _, _, _ = self._scored([case] if isinstance(case, LogCase) or _is_sequence(case) else case, "case")
        b, _, p, _ = self._scored([other] if isinstance(other, LogCase) or _is_sequence(other) else other, "other")
        if len(a) != 1 or len(b) != 1:
            raise InputError(f"compare takes one case each, got {len(a)} and {len(b)}")
        return self.modality.compare(self.detector, a[0].counts[None, :], b[0].counts[None, :], other_id=other_id,
                                     p_other=float(p[0]), alpha=alpha, top=top)

    def exemplar(self, row_id: str) -> list[str]:
        return self.exemplar_sequence(row_id)

    def exemplar_sequence(self, row_id: str) -> list[str]:
        """The events of a stored normal session (its first MAX_EXEMPLAR_EVENTS)."""
        seq = self.modality.exemplar_sequences.get(str(row_id))
        if seq is None:
            raise InputError(f"exemplar {row_id!r} is not a stored normal case; stored ones look like "
                             f"{list(self.modality.exemplar_sequences)[:3]}")
        return seq

    # ------------------------------------------------------------------ persistence
    def save_parts(self, root: Path) -> None:
        self.next_event.save(root / "next_event")

    @classmethod
    def load_parts(cls, root: Path) -> dict[str, Any]:
        if not (root / "next_event").is_dir():
            raise CheckpointError(f"{root.parent} is incomplete: its next-event model {str(root / 'next_event')!r} "
                                  "is missing")
        return {"next_event": NextEventModel.load(root / "next_event")}


@dataclass
class MemberScores:
    """What the two models of normal logs say of some cases: the encoded sequences, the next-event
    model's log-probabilities, per case (surprises, tail masses), its scores ``s1`` (see
    ``sequence_scores``), the template counts and the count model's scores ``s2``."""

    seqs: list[np.ndarray]
    logps: list[np.ndarray]
    per_case: list[tuple[np.ndarray, np.ndarray]]
    s1: np.ndarray
    counts: np.ndarray
    s2: np.ndarray


def member_scores(modality: Any, nxt: NextEventModel, det: BaseDetector, cases: list[LogCase]) -> MemberScores:
    """Both members' scores of (non-empty) ``cases``: the same at calibration (fit) and at scoring."""
    seqs = [modality.encode(c.events) for c in cases]
    logps = nxt.log_probs(seqs)
    per_case, s1 = sequence_scores(nxt, seqs, logps)
    counts = modality.count_matrix([c.events for c in cases])
    return MemberScores(seqs, logps, per_case, s1, counts, det.decision_function(counts, checked=True))


def _novel(cases: list[LogCase], seen: set[str]) -> int:
    """How many of ``cases`` hold a template outside ``seen`` (``Any.novel_cases``)."""
    return sum(not seen.issuperset(c.events) for c in cases)


TAIL_PLACES = 3  # the score looks at a case's 1, 2 and 3 least probable places


def sequence_scores(model: NextEventModel, seqs: list[np.ndarray], logps: list[np.ndarray]
                    ) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Per case (surprise of each place, tail mass of each place), and the next-event model's score
    of each case.

    At each place, the tail mass m is the model's probability of an event at least as improbable as
    the one observed (the sum of p(x) over the x with p(x) <= p(observed)): under the model, the
    chance that this place looks this surprising given what came before. Places are drawn one after
    the other, so the chance that k given places all look as surprising is at most the product of
    their masses; over the C(n, k) choices of k places among the case's n, and the ``TAIL_PLACES``
    values of k tried, a case's score is

        -ln(TAIL_PLACES x min over k of C(n, k) x m(1) x ... x m(k))

    with m(1) <= m(2) <= ... its smallest masses: several improbable places (a dropped, repeated or
    swapped step) weigh more than one. A template never seen in normal logs counts as at least as
    improbable as the least probable known event at its place: the model's probability of its
    "unknown" id is learnt from no example and came out above rare known templates (5e-5 against
    3e-7 on OpenStack), so injected error lines scored as ordinary. Were normal logs to follow the
    model, exp(-score) would be a p-value; they do not quite (an LSTM fitted on a few hundred cases is over-confident: 1.5% of
    fresh normal windows came out below 1e-4), so the score is calibrated like any other, conformal
    against normal cases and a GPD tail beyond them. Its null tail is close to exponential by
    construction, which suits that tail."""
    from math import comb, log

    out, score = [], np.zeros(len(seqs))
    for i, (s, lp) in enumerate(zip(seqs, logps)):
        nxt = np.concatenate([s, [model.end]])
        obs = lp[np.arange(len(nxt)), nxt]
        new = nxt == model.unknown
        if new.any():  # a never-seen template: at least as improbable as the least probable known event there
            obs[new] = np.minimum(obs[new], lp[new][:, 1:model.unknown].min(axis=1))
        with np.errstate(under="ignore"):
            mass = (np.exp(lp) * (lp <= obs[:, None] + 1e-12)).sum(axis=1)
        out.append((-obs, mass))
        m = np.sort(np.clip(mass, 1e-300, 1.0))
        n = len(m)
        best = min(log(comb(n, k)) + float(np.log(m[:k]).sum()) for k in range(1, min(TAIL_PLACES, n) + 1))
        score[i] = -(log(TAIL_PLACES) + best)
    return out, score


def _fill_texts(cases: list[LogCase], paths: list) -> None:
    """The raw texts of the cases' lines (cases scored on Ray carry none), read back from the log
    files ``paths`` (distinct file names: a line's source is its file's name)."""
    by_name = {Path(str(p)).name: p for p in paths}
    want: dict[str, set[int]] = {}
    for c in cases:
        for src, n in zip(c.sources, c.linenos):
            want.setdefault(src, set()).add(n)
    texts = {src: line_texts(by_name[src], ns) for src, ns in want.items()}
    for c in cases:
        c.texts = [texts[src].get(n, "")[:MAX_TEXT] for src, n in zip(c.sources, c.linenos)]


def _merge(cases: Iterable[LogCase]) -> LogCase:
    cases = list(cases)
    out = LogCase(cases[0].key)
    for c in cases:
        for i in range(len(c)):
            out.add(c.events[i], c.sources[i], c.linenos[i], c.times[i], c.texts[i])
    return out


def _is_sequence(x: Any) -> bool:
    """One sequence of event ids (not a list of sequences, not a path)."""
    if isinstance(x, (str, bytes, Path)) or not hasattr(x, "__iter__"):
        return False
    items = list(x)
    return bool(items) and all(isinstance(e, (int, np.integer)) or (isinstance(e, str) and not _looks_like_path(e))
                               for e in items)


def _looks_like_path(s: str) -> bool:
    return s == "-" or "/" in s or "." in s or Path(s).exists()


def modality_cases_for_fit(modality: Any, data: Any, *, progress: bool = False) -> list[LogCase]:
    """Read normal logs, learn their templates (Drain3), then group the lines, each given the known
    template the fast path matches (so training and scoring see the same template for a line)."""
    stats = LogStats()
    lines = list(read_logs(data, modality.format, stats=stats))
    if not lines:
        raise InputError(f"the normal logs hold no line to learn from ({stats.summary()})")
    modality.format = modality.format or stats.format
    parser = modality.parser
    it = lines
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(lines, desc="learning templates", unit=" lines", mininterval=0.5, leave=False)
    learnt = [parser.learn(ln.content) for ln in it]
    parser.finish()
    # the template the fast path gives each line (its own cluster's, or a more specific one that also fits)
    pairs = ((parser.match(ln.content) or tid, ln) for tid, ln in zip(learnt, lines))
    gst = GroupStats()
    cases = list(group_lines(pairs, session=modality.session, window=modality.window, stats=gst))
    if modality.session is not None and not cases:
        raise InputError(f"the session pattern {modality.session!r} matches no line of the normal logs "
                         f"({stats.kept} lines); check --session")
    modality.read_stats = stats
    modality.group_stats = gst
    return cases
