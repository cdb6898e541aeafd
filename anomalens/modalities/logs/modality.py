"""The logs modality: a case is a **session** (lines sharing an id) or a **window** of lines; its
evidence units are its events, keyed by template (``event:<template id>``), and its lines
(``line:<file>:<n>``).

- input: log files (plain, ``.gz``, several, ``-`` for standard input) read with a header format
  (``anomalens.modalities.logs.reader``), parsed into Drain3 templates (``anomalens.modalities.logs.parser``) and grouped
  into cases (``anomalens.modalities.logs.cases``); or sequences of event ids already parsed (a list of lists,
  e.g. HDFS's log keys);
- models of normal logs (the log flow fits them): the next-event model (per event: how
  probable it was in its context, and what was expected) and a count model (a tabular detector on
  the per-case template count vectors, whose features are the templates: this class is a row
  modality over those vectors);
- normal profile: per template, the quantiles of its count over normal cases, its training lines
  and the share of normal cases that hold it;
- calibration: each model's scores on one half of the calibration cases give its conformal
  p-values; their Cauchy combination, calibrated on the other half, is the case's p-value. The
  calibration cases are a held-out share of the normal cases (``calibration="split"``, the default,
  ``calibration_size``) or every case scored out of fold (``"cross"``: ``n_folds`` contiguous blocks
  of cases, each scored by models fitted on the others; ``n_folds + 1`` fits). Cross-fitting found
  nothing more on the data measured (``python -m evals.verdicts --only logs``; docs/logs.md), so it
  is not the default;
- evidence: templates by surprise (count against the normal range, share), the most surprising
  lines with the expected template, the templates' texts, the expected sequence and the nearest
  normal sessions (their counts);
- claims: ``log_claims`` (template ids and line ids, never log text).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from anomalens.detectors.calibration import Calibrator, CombinationCalibrator
from anomalens.errors import CheckpointError, InputError
from anomalens.modalities.logs import claims as log_claims
from anomalens.modalities.logs.cases import END, ScoredCase
from anomalens.modalities.logs.flow import LogFlow
from anomalens.modalities.rows import RowModality
from anomalens.modalities.logs.parser import DEFAULT_MASKS, TemplateParser
from anomalens.modalities.logs.reader import get_format
from anomalens.modalities.logs.items import ExpectedSequence, LogLine, LogTemplate
from anomalens.schema import Attribution, Claim, Evidence, Exemplar, FeatureDelta, Restoration
from anomalens.store import ExemplarHit

__all__ = ["LogModality", "line_id"]

SEQUENCE_SHOWN = 24  # places of the expected sequence shown around the most surprising one
COUNT_SURPRISE = float(np.log(100.0))  # nats for a count outside the normal 1%-99% range
CALIBRATIONS = ("split", "cross")
CROSS_FOLDS = 5
SCORE_VERSION = 2  # 1 (unmarked): the next-event score was the largest surprise, with the model's own tail; 2: -ln of that tail, GPD-calibrated


def line_id(source: str, lineno: int) -> str:
    """The evidence id of a line: ``line:<file>:<n>`` (characters an id cannot hold become ``_``)."""
    import re

    return f"line:{re.sub(r'[^A-Za-z0-9_.-]', '_', source) or '_'}:{lineno}"


class LogModality(RowModality):
    """Sessions or windows of log lines (see the module docstring). ``next_event``: parameters of the
    next-event model (``NextEventModel``: history, embed, hidden, layers, epochs, min_steps,
    batch_size, lr); None keeps its defaults. ``calibration`` and ``n_folds``: see the module
    docstring (``calibration_mode``, set at fit, is the one used)."""

    name = "logs"
    flow_class = LogFlow
    max_exemplars = 1000  # cases (their event sequences), as many as a series keeps windows
    case_noun = "case"
    units_title = "Templates"
    reads_text = True
    reads_paths = True
    unit_kind = "event"
    default_detector = "autoencoder"  # the count model

    def __init__(self, fmt: str | None = None, session: str | None = None, window: int | str | None = None, *,
                 masks: list | None = None, calibration_size: float = 0.3, next_event: dict | None = None,
                 calibration: str = "split", n_folds: int = CROSS_FOLDS) -> None:
        super().__init__()
        if session is not None and window is not None:
            raise InputError("give one of session (an id pattern) or window (lines or a duration), not both")
        if isinstance(calibration_size, bool) or not 0.05 <= float(calibration_size) <= 0.5:
            raise InputError(f"calibration_size must be in [0.05, 0.5], got {calibration_size!r}")
        self.format, self.session, self.window = fmt, session, window
        if session is None and window is None:
            self.window = 100  # the default grouping: windows of 100 lines
        self.calibration_size = float(calibration_size)
        if calibration not in CALIBRATIONS:
            raise InputError(f"calibration must be one of {', '.join(CALIBRATIONS)}, got {calibration!r}")
        if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or not 2 <= n_folds <= 20:
            raise InputError(f"n_folds must be an int in [2, 20], got {n_folds!r}")
        self.calibration, self.n_folds = calibration, int(n_folds)
        self.calibration_mode = "split"  # the one fit used (set there)
        # (normal cases held out at fit that hold a template the models' training cases lack, of how many)
        self.novel_cases: tuple[int, int] | None = None
        if next_event is not None:  # checked now, not at the end of reading the logs
            from anomalens.detectors.sequence import NextEventModel

            if not isinstance(next_event, dict):
                raise InputError(f"next_event must be a dict of NextEventModel parameters, got {next_event!r}")
            NextEventModel(**next_event)
        self.next_event = dict(next_event) if next_event else None
        self.parser = TemplateParser(masks) if masks is not None else TemplateParser()
        self.parsed_input = True  # False: fitted on sequences of event ids (no parser, no raw lines)
        self.template_lines: dict[str, int] = {}
        self.case_share: np.ndarray | None = None  # (V,) share of normal cases holding each template
        self.member_scores: list[np.ndarray] = []  # calibration scores of the next-event and count models
        self.combined_scores: np.ndarray | None = None
        self.event_level: float = 0.0  # per-event surprise above which an event is improbable (99.9% of normal)
        self.exemplar_sequences: dict[str, list[str]] = {}
        self.read_stats = None  # what reading the normal logs did (set at fit, not saved)
        self.group_stats = None
        self.neighbours: dict[str, dict[str, list]] = {}  # template -> its most frequent predecessors and successors
        self._calibrators: list[Calibrator] | None = None
        self._combined: CombinationCalibrator | None = None

    # ------------------------------------------------------------------ the command line
    options = ("window", "log_format", "session", "mask")
    samples_training = False

    @classmethod
    def from_options(cls, **options: Any) -> LogModality:
        """``mask``: NAME=REGEX strings, applied before the default masks; ``log_format`` is checked now."""
        extra = []
        for m in options.get("mask") or []:
            name, sep, regex = m.partition("=")
            if not sep or not name.strip() or not regex:
                raise InputError(f"--mask must be NAME=REGEX (e.g. 'TRACE=trace-[0-9a-f]+'), got {m!r}")
            extra.append((regex, name.strip()))
        fmt = options.get("log_format")
        if fmt is not None:
            get_format(fmt)  # an unknown --format fails before any work
        return cls(fmt, options.get("session"), options.get("window"),
                   masks=[*extra, *DEFAULT_MASKS] if extra else None)

    def training_table(self, frame: Any, **kw: Any) -> tuple[Any, list[str] | None]:
        raise InputError("logs are read from log files, not from a table")

    def fit_summary(self, inv: Any, data: Any) -> tuple[dict[str, Any], str | None]:
        read, groups = self.read_stats, self.group_stats
        out = {"format": read.format + (" (detected)" if read.detected else ""), "lines": read.lines,
               "lines kept": read.kept, "skipped": read.skipped, "templates": len(self.feature_names),
               "cases": f"{groups.cases} ({'sessions ' + self.session if self.session else 'windows of ' + str(self.window)})",
               "training cases": inv.n_train, "count model": inv.detector_name}
        if groups.no_session:
            out["lines without a session id"] = groups.no_session
        return out, read.summary()

    def __repr__(self) -> str:
        how = f"session={self.session!r}" if self.session else f"window={self.window!r}"
        return f"LogModality(templates={len(self.feature_names)}, {how})"

    # ------------------------------------------------------------------ vocabulary
    @property
    def vocab(self) -> dict[str, int]:
        """Template id -> event id of the next-event model (1..V)."""
        if getattr(self, "_vocab", None) is None or len(self._vocab) != len(self.feature_names):
            self._vocab = {t: i + 1 for i, t in enumerate(self.feature_names)}
        return self._vocab

    def encode(self, events: list[str]) -> np.ndarray:
        """Template ids as the next-event model's ids (an unseen template: its unknown id)."""
        v, unk = self.vocab, len(self.feature_names) + 2
        return np.array([v.get(e, unk) for e in events], dtype=np.int64)

    def count_matrix(self, sequences: list[list[str]]) -> np.ndarray:
        v = self.vocab
        X = np.zeros((len(sequences), len(self.feature_names)), dtype=np.float64)
        for i, seq in enumerate(sequences):
            for e in seq:
                j = v.get(e)
                if j is not None:
                    X[i, j - 1] += 1
        return X

    def learn_templates(self, sequences: list[list[str]], template_lines: dict[str, int]) -> None:
        """The units: every template of the normal logs, in id order (E1, E2, ...)."""
        names = sorted(template_lines, key=lambda t: (len(t), t))
        self.feature_names = names
        self._vocab = None
        self.template_lines = dict(template_lines)

    def fit_neighbours(self, sequences: list[list[str]], top: int = 3) -> None:
        """Each template's most frequent predecessors and successors in the normal cases (with shares)."""
        before: dict[str, dict[str, int]] = {}
        after: dict[str, dict[str, int]] = {}
        for seq in sequences:
            full = ["START", *seq, END]
            for a, b in zip(full, full[1:]):
                after.setdefault(a, {})[b] = after.setdefault(a, {}).get(b, 0) + 1
                before.setdefault(b, {})[a] = before.setdefault(b, {}).get(a, 0) + 1
        def tops(d: dict[str, int]) -> list:
            n = sum(d.values()) or 1
            return [[k, round(v / n, 4)] for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]]
        self.neighbours = {t: {"before": tops(before.get(t, {})), "after": tops(after.get(t, {}))}
                           for t in self.feature_names}

    def describe_template(self, tid: str) -> LogTemplate:
        """A template of the normal logs (or one never seen in them, given its text by the parser)."""
        j = self.vocab.get(tid)
        text = self.template_text(tid)
        if j is None and not text:
            raise InputError(f"template must be one of the {len(self.feature_names)} templates of the normal logs "
                             f"(e.g. {self.feature_names[:8]}) or an unseen one of the logs read (N1, ...), got {tid!r}")
        n_lines = sum(self.template_lines.values()) or 1
        return LogTemplate(id=f"template:{tid}", template_id=tid, text=text, seen=j is not None,
                           training_lines=int(self.template_lines.get(tid, 0)),
                           training_share=float(self.template_lines.get(tid, 0) / n_lines),
                           normal_cases=float(self.case_share[j - 1]) if j is not None and self.case_share is not None else 0.0)

    def template_text(self, tid: str) -> str:
        if not self.parsed_input:
            return f"log key {tid}"
        try:
            return self.parser.template(tid)
        except InputError:
            return ""

    DRIFT_LEVEL = 1e-3  # binomial p-value below which a batch's share of cases with never-seen templates is drift

    def drift_note(self, novel: int, n: int) -> str | None:
        """A sentence when most of a batch's ``n`` cases (``novel`` of them, more than half) hold a
        template never seen in normal logs, far more often than the normal cases held out at fit did
        (``novel_cases``; one-sided binomial test at ``DRIFT_LEVEL`` against their rate, counted as
        (k + 1) / (m + 1)): the logs may have changed since the model was fitted, and flags that rest
        on never-seen templates alone may be normal there. Anomalies are a minority of a batch, so
        injected or real incidents alone do not raise it. None otherwise, or for a model saved before
        fit counted them."""
        if self.novel_cases is None or n == 0 or 2 * novel <= n:
            return None
        from scipy.stats import binom

        k, m = self.novel_cases
        rate = (k + 1) / (m + 1)
        if novel / n <= rate or binom.sf(novel - 1, n, rate) >= self.DRIFT_LEVEL:
            return None
        return (f"The logs may have changed since the model was fitted: {novel} of {n} cases ({100 * novel / n:.0f}%) "
                f"hold templates never seen in the normal logs, against {k} of the {m} normal cases held out at fit (a "
                "new version or configuration does this); if their new lines are normal, fit again on recent normal logs.")

    # ------------------------------------------------------------------ calibration
    def plan_calibration(self, n_cases: int) -> list[np.ndarray]:
        """The calibration ``fit`` will use for ``n_cases`` normal cases, as blocks of case indices:
        ``n_folds`` contiguous blocks in case order (time order for windows) to score out of fold, or
        an empty list for the held-out share. Sets ``calibration_mode``."""
        k = min(self.n_folds, n_cases // 4)  # blocks of at least 4 cases
        if self.calibration == "cross" and k >= 2:
            self.calibration_mode = "cross"
            return np.array_split(np.arange(n_cases), k)
        self.calibration_mode = "split"
        return []

    def fit_calibration(self, member_a: list[np.ndarray], member_b: list[np.ndarray], surprises: list[np.ndarray]) -> None:
        """Member scores of calibration half A calibrate each model; their Cauchy combination on half B
        (``member_b``: the two models' scores) calibrates the case p-value; ``surprises`` (per-event,
        normal) set the improbable-event level."""
        self.member_scores = [np.sort(np.asarray(a, dtype=np.float64)) for a in member_a[:2]]
        self._calibrators = None
        self.combined_scores = np.sort(self.combine(np.stack(member_b[:2])))
        self._combined = None
        flat = np.concatenate(surprises) if surprises else np.zeros(1)
        self.event_level = float(np.quantile(flat, 0.999))

    @property
    def calibrators(self) -> list[Calibrator]:
        if self._calibrators is None:
            self._calibrators = [Calibrator(s) for s in self.member_scores]
            self._inflation = model_inflation(self.member_scores[0])  # derived with them, used beside them
        return self._calibrators

    @property
    def calibrator(self) -> CombinationCalibrator:
        if self._combined is None:
            if self.combined_scores is None:
                from anomalens.errors import NotFittedError

                raise NotFittedError("the logs modality is not calibrated yet (Investigator.fit does it)")
            self._combined = CombinationCalibrator(self.combined_scores)
        return self._combined

    BEYOND = ("Cauchy combination of the next-event and count models' p-values, beyond the largest calibration "
              "score (approximate)")

    def pvalues(self, combined: np.ndarray) -> np.ndarray:
        """Case p-values of combined scores: conformal against the calibration cases' combined scores;
        beyond the largest of them (where the conformal p-value stops at 1 / (n + 1)), the larger of
        the Cauchy combination's own p-value exp(-T) and the GPD tail fitted to the calibration
        cases' combined scores (``approximate``). exp(-T) alone rests on the members' tails, each
        fitted to a few dozen scores where windows are the cases (26 here for windows of 100 lines):
        the count model's normal scores are heavy-tailed beyond what 10 exceedances show, and 7 of 20
        runs on fresh normal logs had a false flag at FDR 5% (a family-wise rate of 35%, where BH
        promises 5%). The combined tail is conservative (shape and scale at upper bounds); where it
        cannot be fitted, exp(-T) alone (Liu & Xie 2020: valid at small levels when the members are)."""
        return self.calibrator.pvalues(combined)  # the rule of CombinationCalibrator, shared with the Ensemble

    def approximate(self, combined: np.ndarray) -> np.ndarray:
        return self.calibrator.approximate(combined)

    def member_pvalues(self, member_scores: np.ndarray) -> np.ndarray:
        """(2, n) p-values of the next-event and count models from their (2, n) scores: conformal
        against calibration half A, the GPD tail (``Calibrator``) beyond its largest score. Where no
        tail can be fitted to the next-event scores (sessions that repeat take a handful of distinct
        scores), its own bound ``exp(-score)`` takes over beyond them, inflated by the most it
        under-stated the calibration cases' frequencies (``model_inflation``)."""
        s = np.asarray(member_scores, dtype=np.float64)
        p = np.stack([c.pvalues(x) for c, x in zip(self.calibrators, s)])
        c1 = self.calibrators[0]
        if c1.tail is None:
            beyond = s[0] > c1.scores[-1]
            p[0, beyond] = np.minimum(c1.floor, self._inflation * np.exp(-s[0, beyond]))
        return p

    def combine(self, member_scores: np.ndarray) -> np.ndarray:
        """The truncated Cauchy combination (-ln of its p-value) of the members' p-values."""
        from anomalens.detectors.ensemble import cauchy_combine

        return cauchy_combine(self.member_pvalues(member_scores), truncate=0.5)

    # ------------------------------------------------------------------ normal profile
    def fit_log_profile(self, counts: np.ndarray) -> None:
        self.fit_profile(counts)
        self.case_share = (counts > 0).mean(axis=0)

    # ------------------------------------------------------------------ evidence
    def expected_at(self, logp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(most likely event id, its probability) at each place, never the unknown id."""
        lp = logp[:, 1 : len(self.feature_names) + 2]  # ids 1..V and the end
        best = lp.argmax(axis=1)
        return best + 1, np.exp(lp[np.arange(len(lp)), best])

    def _name(self, eid: int) -> str:
        return END if eid == len(self.feature_names) + 1 else self.feature_names[eid - 1]

    def case_evidence(self, sc: ScoredCase, hits: list[ExemplarHit], *, top: int, n_lines: int,
                      continuation: list[int] = ()) -> dict[str, Any]:
        """The evidence items of a scored case: attributions (templates), lines, templates, the
        expected sequence, the restoration (counts of the expected sequence) and exemplars.
        ``continuation``: the events the model expected after an improbable end (missing steps)."""
        case, names = sc.case, self.feature_names
        events = case.events
        n = len(events)
        best, best_p = self.expected_at(sc.logp)
        surprise = sc.surprise  # (n + 1,): each event, then the end
        improbable = surprise > self.event_level
        lo, med, hi = self.quantiles
        # contribution of each template: surprise of its events (nats), plus a count outside its normal range
        contrib: dict[str, float] = {}
        worst: dict[str, float] = {}
        for t, e in enumerate(events):
            contrib[e] = contrib.get(e, 0.0) + float(surprise[t])
            worst[e] = max(worst.get(e, 0.0), float(surprise[t]))
        missing = [self._name(int(e)) for e in continuation] if improbable[n] else []
        if improbable[n]:  # the case ended where the model expected more: missing steps
            first = missing[0] if missing else self._name(int(best[n]))
            if first != END:
                contrib[first] = contrib.get(first, 0.0) + float(surprise[n])
                worst[first] = max(worst.get(first, 0.0), float(surprise[n]))
        counts = sc.counts
        outside = np.flatnonzero((counts < lo) | (counts > hi))
        for j in outside:
            contrib[names[j]] = contrib.get(names[j], 0.0) + COUNT_SURPRISE
        total = sum(max(0.0, c) for c in contrib.values())
        ex_counts = np.array([h.values for h in hits]) if hits else None
        attributions = []
        for tid, c in sorted(contrib.items(), key=lambda kv: -kv[1])[:top]:
            j = self.vocab.get(tid)
            if j is None:  # a template never seen in normal logs: normally never there
                v = float(sum(e == tid for e in events))
                lo_j = med_j = hi_j = 0.0
                ex_mean = 0.0 if ex_counts is not None else None
            else:
                j -= 1
                v, lo_j, med_j, hi_j = float(counts[j]), float(lo[j]), float(med[j]), float(hi[j])
                ex_mean = float(ex_counts[:, j].mean()) if ex_counts is not None and ex_counts.shape[1] else None
            attributions.append(Attribution(
                id=self.unit_id(tid), unit=tid, value=v, contribution=c, share=c / total if total > 0 else 0.0,
                abnormal=bool(worst.get(tid, 0.0) > self.event_level or v < lo_j or v > hi_j or j is None),
                normal_low=lo_j, normal_median=med_j, normal_high=hi_j,
                position="below" if v < lo_j else "above" if v > hi_j else "within", exemplar_mean=ex_mean))
        # lines: the most surprising places, and the first line of each template never seen
        order = [int(t) for t in np.argsort(-surprise[:n], kind="stable")[:n_lines]]
        order = [t for t in order if improbable[t]] or order[:1]  # the improbable places (or the least probable one)
        unseen_first = {}
        for t, e in enumerate(events):
            if e not in self.vocab and e not in unseen_first:
                unseen_first[e] = t
        chosen = list(dict.fromkeys([*unseen_first.values(), *order]))[: max(n_lines, len(unseen_first))]
        lines = []
        chosen.sort(key=lambda t: (events[t] in self.vocab, -surprise[t]))  # never-seen first, then least probable
        for t in chosen:
            e = events[t]
            exp = self._name(int(best[t]))
            lines.append(LogLine(
                id=line_id(case.sources[t], case.linenos[t]), source=case.sources[t], lineno=case.linenos[t],
                template_id=e, seen=e in self.vocab, probability=float(np.exp(-surprise[t])),
                expected=exp if exp != e else None, expected_probability=float(best_p[t]) if exp != e else None,
                time=case.times[t], text=case.texts[t]))
        cited = list(dict.fromkeys([*(a.unit for a in attributions), *(ln.template_id for ln in lines)]))
        templates = [self.describe_template(tid) for tid in cited]
        # the expected sequence around the most surprising place, and the counts it implies
        peak = int(np.argmax(surprise))
        a = max(0, min(peak - SEQUENCE_SHOWN // 2, n + 1 - SEQUENCE_SHOWN))
        b = min(n + 1, a + SEQUENCE_SHOWN)
        obs = [*events, END]
        exp = [self._name(int(best[t])) if improbable[t] else obs[t] for t in range(a, b)]
        locs = [case.location(t) if t < n else "(end)" for t in range(a, b)]
        shown_obs = obs[a:b]
        if b == n + 1 and missing:  # the steps the model expected instead of the end
            exp = [*exp[:-1], *missing, END]
            shown_obs = [*shown_obs[:-1], *["-"] * len(missing), END]
            locs = [*locs[:-1], *["(missing)"] * len(missing), "(end)"]
        sequence = ExpectedSequence(observed=shown_obs, expected=exp, locations=locs, first=a)
        restored = [self._name(int(best[t])) if improbable[t] else obs[t] for t in range(n)] + missing
        restored = [e for e in restored if e != END]
        rc = {tid: float(sum(e == tid for e in restored)) for tid in cited}
        deltas = [FeatureDelta(unit=tid, observed=float(sum(e == tid for e in events)), restored=rc[tid],
                               delta=rc[tid] - float(sum(e == tid for e in events))) for tid in cited]
        deltas.sort(key=lambda d: -abs(d.delta))
        restoration = Restoration(values=rc, deltas=deltas)
        exemplars = []
        for h in hits:
            vals = {names[j]: float(h.values[j]) for j in np.flatnonzero(h.values)} if len(h.values) else {}
            for tid in cited:  # the cited templates' counts, zero included
                j = self.vocab.get(tid)
                vals.setdefault(tid, float(h.values[j - 1]) if j is not None and len(h.values) else 0.0)
            exemplars.append(Exemplar(id=f"exemplar:{h.row_id}", row_id=h.row_id, distance=h.distance, values=vals,
                                      source=h.source, timestamp=h.timestamp, weight=h.weight))
        return {"attributions": attributions, "parts": [*lines, *templates, sequence],
                "restoration": restoration, "exemplars": exemplars}

    def context(self, *, n_train: int, detector: str, attribution_method: str, extra_units: list[str] = ()):
        ctx = super().context(n_train=n_train, detector=detector, attribution_method=attribution_method)
        return ctx.model_copy(update={"feature_names": [*self.feature_names, *extra_units]})

    # ------------------------------------------------------------------ typed claims
    claims = log_claims
    claim_kinds = log_claims.KINDS

    @classmethod
    def unit_claims(cls, evidence: Evidence, unit_id: str, *, with_exemplars: bool = True) -> list[Claim]:
        name = unit_id.split(":", 1)[1]
        kinds = ("range", "exemplar_value") if with_exemplars else ("range",)
        lines = {ln.id for ln in evidence.lines if ln.template_id == name}
        return [c for c in log_claims.candidates(evidence) if c.cites and (
            (c.kind in kinds and c.cites[0] == unit_id) or (c.kind in ("line", "unseen") and c.cites[0] in lines))]

    # ------------------------------------------------------------------ persistence
    def to_config(self) -> dict[str, Any]:
        base = super().to_config()
        return {"logs": {
            **base, "format": self.format, "session": self.session, "window": self.window,
            "calibration_size": self.calibration_size, "next_event": self.next_event, "parsed_input": self.parsed_input,
            "calibration": self.calibration, "n_folds": self.n_folds, "calibration_mode": self.calibration_mode,
            "novel_cases": None if self.novel_cases is None else list(self.novel_cases),
            "parser": self.parser.to_config() if self.parsed_input else None,
            "template_lines": self.template_lines,
            "case_share": None if self.case_share is None else self.case_share.tolist(),
            "member_scores": [s.tolist() for s in self.member_scores],
            "combined_scores": None if self.combined_scores is None else self.combined_scores.tolist(),
            "event_level": self.event_level, "exemplar_sequences": self.exemplar_sequences,
            "neighbours": self.neighbours, "score_version": SCORE_VERSION,
        }}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "LogModality":
        try:
            c = config["logs"]
            version = c.get("score_version", 1)
            if version != SCORE_VERSION:
                raise CheckpointError(
                    f"this log model was saved with an earlier next-event score (version {version}, this anomalens "
                    f"computes version {SCORE_VERSION}): its calibration scores do not match today's scores; fit it "
                    "again on the same logs")
            tab = RowModality.from_config(c)
            m = cls(c["format"], c["session"], c["window"] if c["session"] is None else None,
                    calibration_size=c["calibration_size"], next_event=c.get("next_event"),
                    calibration=c.get("calibration", "split"), n_folds=int(c.get("n_folds", CROSS_FOLDS)))
            m.calibration_mode = str(c.get("calibration_mode", "split"))
            novel = c.get("novel_cases")
            m.novel_cases = None if novel is None else (int(novel[0]), int(novel[1]))
            m.feature_names, m.profile, m.quantiles = tab.feature_names, tab.profile, tab.quantiles
            m.parsed_input = bool(c["parsed_input"])
            if m.parsed_input:
                m.parser = TemplateParser.from_config(c["parser"])
            m.template_lines = {str(k): int(v) for k, v in c["template_lines"].items()}
            m.case_share = None if c["case_share"] is None else np.asarray(c["case_share"], dtype=np.float64)
            m.member_scores = [np.asarray(s, dtype=np.float64) for s in c["member_scores"]]
            m.combined_scores = np.asarray(c["combined_scores"], dtype=np.float64)
            m.event_level = float(c["event_level"])
            m.exemplar_sequences = {str(k): [str(e) for e in v] for k, v in c["exemplar_sequences"].items()}
            m.neighbours = dict(c.get("neighbours") or {})
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"the logs metadata is corrupted ({type(exc).__name__}: {exc})") from exc
        if len(m.member_scores) != 2 or m.combined_scores.size == 0:
            raise CheckpointError("the logs metadata is corrupted: its calibration scores are missing")
        if not all(np.isfinite(x).all() for x in (*m.member_scores, m.combined_scores)):  # NaN flagged nothing
            raise CheckpointError("the logs metadata is corrupted: its calibration scores hold NaN or inf")
        if not m.feature_names or (m.parsed_input and not m.parser.templates):  # no template: every case was new
            raise CheckpointError("the logs metadata is corrupted: its list of templates is empty")
        return m


def model_inflation(scores: np.ndarray) -> float:
    """How much more often normal cases reach a next-event score than the model's own bound says:
    max over the calibration scores s of (share of calibration scores >= s) / exp(-s), at least 1."""
    cal = np.sort(np.asarray(scores, dtype=np.float64))
    if cal.size == 0:
        return 1.0
    share = (cal.size - np.searchsorted(cal, cal, side="left")) / (cal.size + 1.0)
    with np.errstate(over="ignore"):
        ratio = share * np.exp(np.minimum(cal, 700.0))
    return float(max(1.0, ratio.max()))
