"""Conformal calibration of anomaly scores, with an extreme-value tail beyond the last calibration score.

A detector keeps the scores of normal rows it did not train on (the calibration set: a held-out
share, or out-of-fold scores over the whole training set). For a new score ``s`` the conformal
p-value is

    p(s) = (1 + #{calibration scores >= s}) / (n_cal + 1)

which, for a new normal row exchangeable with the calibration rows, satisfies
P(p <= alpha) <= alpha (Vovk et al., 2005; Bates et al., "Testing for outliers with conformal
p-values", Ann. Statist. 2023). The p-values of a batch share one calibration set and are
positively dependent (PRDS), so the Benjamini-Hochberg procedure controls the false discovery rate.

**The floor.** No conformal p-value is below 1 / (n_cal + 1), so BH over m rows, which needs
p <= alpha / m for its first rejection, can flag nothing once m > alpha (n_cal + 1): with 120
calibration rows, nothing in a batch of 7 rows at alpha = 0.05. ``Calibrator`` therefore splits
that last cell with a peaks-over-threshold tail (Pickands 1975; the SPOT detector of Siffer et al.,
KDD 2017): a generalized Pareto distribution fitted to the excesses of the top calibration scores.
A score beyond the largest calibration score gets

    p(s) = min(1 / (n_cal + 1), (k + 1) / (n_cal + 1) * S_GPD(s - u))

where u is the (k+1)-th largest calibration score. Every p-value above the floor is the exact
conformal one, so P(p <= t) <= t still holds exactly for every t >= 1 / (n_cal + 1); below it the
p-value is an extrapolation, **approximate**, and is reported as such (``approximate``). The fit is
deliberately conservative (a heavier tail than the data's best fit): the shape is the maximum
likelihood estimate floored at 0 (never lighter than exponential) and then raised by one standard
error (so at least 1/sqrt(k), a polynomial tail even where the data's looks lighter), and the scale
is a 75% upper confidence bound. Raising first and flooring after gives more reach and loses
validity on heavy tails (``python -m evals.tail_rules``). A tail that, fitted without the top 1%
of the calibration scores, calls them far rarer than they are is not used (``fit_tail``'s check).
Nothing can extrapolate to rare normal modes that the calibration set never shows: where normal
scores have such modes, tail p-values under-cover (``evals/calibration.py`` measures FDR and power,
shuttle being the hard case).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol, runtime_checkable

import numpy as np

from anomalens.detectors._validation import check_probability
from anomalens.errors import InputError

__all__ = ["Calibration", "Calibrator", "CombinationCalibrator", "TailFit", "benjamini_hochberg", "bh_count", "bh_cutoff",
           "conformal_pvalues", "score_threshold"]

TAIL_MIN_CAL = 20  # fewer calibration scores than this: no tail is fitted (exact p-values only)
TAIL_MIN_BLOCKS = 8  # the same for block maxima (``Calibrator(block=...)``), each worth a block of scores
TAIL_SHARE = 0.2  # share of the calibration scores whose excesses fit the tail (at least 10, at most 2000)
TAIL_SHAPE_SE = 1.0  # the shape is raised by this many standard errors (conservative: a heavier tail)
TAIL_SCALE_CONF = 0.75  # one-sided confidence level of the scale's upper bound
TAIL_CHECK_LEVEL = 0.05  # the held-back top scores may be at most 20x rarer under the tail than their ranks say


# Scores equal up to floating-point noise are ties: a saved model's calibration scores were computed by one
# build of numpy and torch, and the same case scored by another differs in the 7th digit (a log case whose
# counts equal those of 45 of 90 calibration cases scored 3e-7 above them, and its p-value fell from 1 to
# 0.49). A score within TIE_RTOL (relative) of a calibration score counts as reaching it, as a tie does.
TIE_RTOL = 1e-5


def _tie_floor(s: np.ndarray) -> np.ndarray:
    """The lowest calibration score each of ``s`` counts as reaching (``TIE_RTOL`` below it)."""
    return s - (TIE_RTOL * np.abs(s) + 1e-12)


def conformal_pvalues(calibration_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Exact conformal p-values of ``scores`` against ``calibration_scores`` (higher = more anomalous;
    a calibration score within ``TIE_RTOL`` of a score is a tie).

    Args:
        calibration_scores: (n_cal,) scores of normal rows the model did not train on.
        scores: (n,) scores to test.

    Returns:
        (n,) p-values in [1 / (n_cal + 1), 1].
    """
    cal = np.sort(np.asarray(calibration_scores, dtype=np.float64))
    if cal.size == 0:
        raise InputError("calibration_scores must hold at least one score, got 0")
    s = np.asarray(scores, dtype=np.float64)
    n_ge = cal.size - np.searchsorted(cal, _tie_floor(s), side="left")  # number of calibration scores >= s (ties)
    return (1.0 + n_ge) / (cal.size + 1.0)


@dataclass(frozen=True)
class TailFit:
    """A generalized Pareto tail over the top ``k`` calibration scores (excesses over ``u``)."""

    u: float  # the threshold: the (k+1)-th largest calibration score
    k: int  # excesses the fit used
    shape: float  # xi >= 0 (0: exponential tail)
    scale: float  # sigma > 0

    def survival(self, excess: np.ndarray) -> np.ndarray:
        """P(score - u > excess | score > u) under the fitted tail."""
        z = np.maximum(excess, 0.0) / self.scale
        if self.shape < 1e-9:
            return np.exp(-z)
        return np.exp(-np.log1p(self.shape * z) / self.shape)

    def inverse_survival(self, q: float) -> float:
        """The excess whose survival is ``q`` (0 < q <= 1)."""
        if self.shape < 1e-9:
            return -self.scale * math.log(q)
        return self.scale / self.shape * (q ** (-self.shape) - 1.0)


def fit_tail(calibration_scores: np.ndarray, *, check: bool = True, min_count: int = TAIL_MIN_CAL,
             raise_first: bool = False) -> TailFit | None:
    """The conservative GPD tail of sorted calibration scores, or None when there are too few, the
    top scores are all equal, or the tail fails its own check.

    The check (``check=True``): a tail fitted without the top 1% of the scores must not call those
    scores far rarer than their ranks say (the i-th largest of n gets p >= 0.05 i / (n + 1)). Score
    distributions with rare normal modes (a bulk plus a few huge normal scores, as on shuttle) fail it,
    and their verdicts keep the exact conformal p-values.

    ``raise_first``: the lighter alternative to the rule in use, for ``evals/tail_rules.py``: the
    estimate raised by one standard error first and floored at 0 after (exponential wherever the
    raised shape is still <= 0).
    """
    from scipy import stats

    cal = np.sort(np.asarray(calibration_scores, dtype=np.float64))
    n = cal.size
    if n < min_count:
        return None
    if check:
        j = max(1, n // 100)
        head = fit_tail(cal[:-j], check=False, raise_first=raise_first)
        if head is None:
            return None
        p_top = (head.k + 1.0) / (n - j + 1.0) * head.survival(cal[-j:] - head.u)
        if np.any(p_top < TAIL_CHECK_LEVEL * np.arange(j, 0, -1) / (n + 1.0)):
            return None
    k = int(min(max(10, round(TAIL_SHARE * n)), 2000, n - 1))
    u = float(cal[n - k - 1])
    excess = cal[n - k:] - u
    if not np.any(excess > 0):
        return None
    mean = float(excess.mean())
    try:
        shape, _, scale = stats.genpareto.fit(excess, floc=0.0)
    except Exception:  # scipy's optimiser on degenerate samples; the exponential tail stands in
        shape, scale = 0.0, mean
    if not (math.isfinite(shape) and math.isfinite(scale)) or scale <= 0:
        shape, scale = 0.0, mean  # a failed fit: the exponential tail stands in
    se = TAIL_SHAPE_SE * (1.0 + max(shape, 0.0)) / math.sqrt(k)
    if raise_first:
        shape += se
    if shape <= 0:
        shape, scale = 0.0, mean  # a bounded fit: the exponential tail is heavier, so conservative
    if not raise_first:
        shape += se
    shape = min(shape, 2.0)
    scale = scale * 2 * k / float(stats.chi2.ppf(1.0 - TAIL_SCALE_CONF, 2 * k))
    return TailFit(u=u, k=k, shape=float(shape), scale=float(scale))


@runtime_checkable
class Calibration(Protocol):
    """What the verdicts read from a calibration stage, whatever its scores: the detector's
    ``Calibrator``, the Ensemble's and the logs' ``CombinationCalibrator`` and a series'
    ``PointCalibration`` (``modalities/series.py``) all implement it.

    ``pvalues`` / ``approximate``: a p-value per score, and where it is the tail's extrapolation
    rather than a count of calibration scores; ``threshold(cutoff)``: the score past which p <=
    cutoff (inf when no single score decides it); ``n``, ``floor``: calibration cases and the
    smallest p-value their count alone gives (1 / (n + 1)); ``extends``: a tail takes p-values below
    the floor; ``method``: how, in words."""

    @property
    def n(self) -> int: ...

    @property
    def floor(self) -> float: ...

    @property
    def extends(self) -> bool: ...

    @property
    def method(self) -> str: ...

    def pvalues(self, scores: np.ndarray) -> np.ndarray: ...

    def approximate(self, scores: np.ndarray) -> np.ndarray: ...

    def threshold(self, cutoff: float) -> float: ...


class Calibrator:
    """Turns anomaly scores into p-values against a calibration set; the detector's calibration stage.

    Args:
        calibration_scores: (n_cal,) scores of normal rows the model did not train on.
        tail: extend the p-values beyond the largest calibration score with the GPD tail (see the
            module docstring); False keeps the exact conformal p-values only.
        check_tail: run ``fit_tail``'s check. Scores of dependent points (a series) come in runs, so
            the top 1% is often one run of neighbours that the check reads as a rare mode; the
            series modality turns it off (the tail stays conservative: inflated shape and scale).
        block: > 1 for scores of dependent points in time order (a series' points, whose scores
            share their windows): the calibration set is the maxima of consecutive blocks of
            ``block`` scores (a last partial block included), which are about independent. A point's
            p-value is then the share of held-out blocks whose highest score reaches its score: never
            below the share of points (a point is at most its block's maximum), so conservative, and
            about equal to it where the scores come in runs as long as a block. The tail is fitted
            to the block maxima (at least TAIL_MIN_BLOCKS of them). Without blocks, a few hundred
            dependent calibration points count as that many independent ones and a new normal
            stretch whose scores run a little above theirs gets p-values far too small.
    """

    def __init__(self, calibration_scores: np.ndarray, *, tail: bool = True, check_tail: bool = True,
                 block: int = 1) -> None:
        cal = np.asarray(calibration_scores, dtype=np.float64)
        if cal.size == 0:
            raise InputError("calibration_scores must hold at least one score, got 0")
        self.block = max(1, int(block))
        if self.block > 1:
            cal = np.maximum.reduceat(cal, np.arange(0, cal.size, self.block))
        self.scores = np.sort(cal)
        self.use_tail = bool(tail)
        self.check_tail = bool(check_tail)

    @property
    def n(self) -> int:
        return int(self.scores.size)

    @property
    def floor(self) -> float:
        """The smallest exact conformal p-value, 1 / (n_cal + 1)."""
        return 1.0 / (self.n + 1.0)

    @cached_property
    def tail(self) -> TailFit | None:
        if not self.use_tail:
            return None
        return fit_tail(self.scores, check=self.check_tail,
                        min_count=TAIL_MIN_CAL if self.block == 1 else TAIL_MIN_BLOCKS)

    @property
    def extends(self) -> bool:
        """Whether p-values go below the floor 1 / (n_cal + 1) (approximate there)."""
        return self.tail is not None

    @property
    def method(self) -> str:
        return "conformal + GPD tail" if self.tail is not None else "conformal"

    def pvalues(self, scores: np.ndarray) -> np.ndarray:
        """(n,) p-values: exact conformal ones, split below the floor by the tail where fitted."""
        s = np.asarray(scores, dtype=np.float64)
        p = conformal_pvalues(self.scores, s)
        t = self.tail
        if t is not None:
            beyond = s > self.scores[-1]
            if beyond.any():
                p_tail = (t.k + 1.0) / (self.n + 1.0) * t.survival(s[beyond] - t.u)
                p[beyond] = np.minimum(self.floor, p_tail)
        return p

    def approximate(self, scores: np.ndarray) -> np.ndarray:
        """(n,) bool: the p-value is the tail's extrapolation, not an exact conformal p-value."""
        s = np.asarray(scores, dtype=np.float64)
        if self.tail is None:
            return np.zeros(s.shape, dtype=bool)
        return s > self.scores[-1]

    def threshold(self, cutoff: float) -> float:
        """The smallest score whose p-value is at most ``cutoff`` (inf when none can be)."""
        if not cutoff > 0:
            return float("inf")
        if cutoff >= self.floor or self.tail is None:
            return score_threshold(self.scores, min(cutoff * (1 + 1e-12), 1.0 - 1e-12)) if cutoff < 1 else float("-inf")
        t = self.tail
        q = min(1.0, cutoff * (self.n + 1.0) / (t.k + 1.0))
        return float(max(t.u + t.inverse_survival(q), np.nextafter(self.scores[-1], np.inf)))


class CombinationCalibrator(Calibrator):
    """Conformal p-values of a combination score T = -ln q, where q is a combined p-value (the
    Ensemble's Cauchy combination of its members' conformal p-values). Beyond the largest
    calibration score, where the conformal p-value stops at 1 / (n_cal + 1), two approximations
    must agree: the p-value is the larger of the combination's own q = exp(-T) and the conservative
    GPD tail fitted to the calibration scores of T (``Calibrator``), marked approximate. The logs
    modality's case p-value follows the same rule.

    q alone rests on every member's tail: a member whose normal scores have a heavy far tail that
    its calibration rows do not show (the autoregressive member's, on 2,000 rows of the synthetic
    benchmark) makes q of some new normal rows 1e-7, and BH over 10,000 rows then flagged a
    pure-normal batch in 64% of draws. The tail of T alone is the weaker of the two on clear
    anomalies; it is what keeps the extrapolation honest (docs/calibration.md).

    Args:
        calibration_scores: (n_cal,) combination scores T of normal rows.
        tail: extrapolate beyond the largest calibration score; False keeps the exact conformal
            p-values only (the detector's ``tail=False``).
    """

    @property
    def extends(self) -> bool:
        return self.use_tail

    @property
    def method(self) -> str:
        return "conformal + the larger of the combined p-value and a GPD tail" if self.use_tail else "conformal"

    def pvalues(self, scores: np.ndarray) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        p = conformal_pvalues(self.scores, s)
        if self.use_tail:
            out = s > self.scores[-1]
            if out.any():
                beyond = np.exp(-s[out])
                if self.tail is not None:
                    beyond = np.maximum(beyond, super().pvalues(s[out]))
                p[out] = np.minimum(self.floor, beyond)
        return p

    def approximate(self, scores: np.ndarray) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        return s > self.scores[-1] if self.use_tail else np.zeros(s.shape, dtype=bool)

    def threshold(self, cutoff: float) -> float:
        if not self.use_tail or not 0 < cutoff < self.floor:
            return super().threshold(cutoff)
        # both approximations decrease in T: the p-value is <= cutoff past both of their thresholds
        t = max(-math.log(cutoff), float(np.nextafter(self.scores[-1], np.inf)))
        return float(max(t, super().threshold(cutoff))) if self.tail is not None else t


def benjamini_hochberg(pvalues: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Reject the hypotheses "this row is normal" while controlling the FDR at ``alpha``.

    Args:
        pvalues: (n,) p-values.
        alpha: target false discovery rate.

    Returns:
        (n,) int array, 1 where the row is declared anomalous.
    """
    alpha = check_probability(alpha, "alpha")
    p = np.asarray(pvalues, dtype=np.float64)
    n = p.size
    if n == 0:
        return np.zeros(0, dtype=int)
    order = np.argsort(p, kind="stable")
    k = bh_count(p[order], n, alpha)
    flags = np.zeros(n, dtype=int)
    flags[order[:k]] = 1
    return flags


def bh_count(smallest: np.ndarray, m: int, alpha: float) -> int:
    """How many hypotheses Benjamini-Hochberg rejects in a batch of ``m``, from its smallest p-values
    in ascending order (all of them, or only those <= alpha, which is all a rejection can need):
    the largest rank i with p_(i) <= alpha * i / m. The one place of BH's arithmetic (the streamed
    counter of ``anomalens.scale`` feeds it the p-values <= alpha of an input it never holds whole)."""
    p = np.asarray(smallest, dtype=np.float64)
    below = p <= alpha * np.arange(1, p.size + 1) / max(int(m), 1)
    return int(np.nonzero(below)[0].max()) + 1 if below.any() else 0


def bh_cutoff(n_flagged: int, m: int, alpha: float) -> float:
    """The Benjamini-Hochberg p-value cut-off of a batch of ``m`` rows with ``n_flagged`` flagged:
    flagged <=> p <= cut-off (alpha / m when nothing is flagged: what the first rejection needs)."""
    return alpha * max(int(n_flagged), 1) / max(int(m), 1)


def score_threshold(calibration_scores: np.ndarray, alpha: float) -> float:
    """The smallest score whose exact conformal p-value is below ``alpha`` (inf when none can be)."""
    alpha = check_probability(alpha, "alpha")
    cal = np.sort(np.asarray(calibration_scores, dtype=np.float64))
    n = cal.size
    # p(s) < alpha  <=>  #{cal >= s} < alpha (n + 1) - 1  <=>  s > cal[n - m] with m = ceil(alpha (n+1) - 1)
    m = int(np.ceil(alpha * (n + 1) - 1))
    if m <= 0:
        return float("inf")
    if m > n:
        return float("-inf")
    # the smallest t whose tie floor is above c = cal[n - m]: t - (TIE_RTOL |t| + 1e-12) > c, solved, then
    # settled to the last float by the same arithmetic the p-values use
    c = float(cal[n - m])
    t = (c + 1e-12) / (1 - TIE_RTOL) if c + 1e-12 >= 0 else (c + 1e-12) / (1 + TIE_RTOL)
    def above(x: float) -> bool:
        return float(_tie_floor(np.float64(x))) > c

    while not above(t):
        t = np.nextafter(t, np.inf)
    while above(np.nextafter(t, -np.inf)):
        t = np.nextafter(t, -np.inf)
    return float(t)
