"""The series modality: a multivariate time series (channels sampled over time); evidence units
``channel:<name>`` and ``segment:<channel>:<start>..<end>``; a case is an **event**, a run of
flagged time points.

- input: a DataFrame with a time column (``time_column``) or a ``DatetimeIndex``, or with neither
  (the row position is the time); one numeric column per channel; a 1-D array is one channel.
  Timestamps must be unique, increasing and evenly spaced (``resample=`` a pandas rule such as
  ``"5min"`` averages an irregular series onto a grid); a missing value is an error naming its
  channel and time unless ``fill=`` ``"interpolate"`` or ``"ffill"`` fills it (the report says so);
- windows: sliding windows of ``window`` points (default: the dominant period by TSB-AD's rule,
  bounded to [8, 128]; TSB-AD's 125 when there is none), flattened channel by channel (value of
  channel c at offset t is column ``c * window + t``); scored every ``window // 8``-th window and
  the last (``score_stride``; 1 scores every window);
- two readings of each point (``score_points``): its **cells**, each cell's minimum over the
  windows that cover it (an anomalous cell is anomalous in every window that sees it, a normal one
  next to an anomaly is reconstructed well by the windows that do not hold the anomaly: where and
  in which channels), and its **window score**, the largest detector score of the windows that
  cover it (a shape, a level, a stuck stretch that no single point shows: whether);
- calibration: out-of-fold scores of every training point (``calibration="cross"``, the default
  when a held-out block would hold fewer than CROSS_BELOW_WINDOWS windows: ``n_folds`` contiguous
  blocks, each scored by a copy of the detector trained on the rest less a window's gap on each
  side, ``fit_cross_calibration``), or the last ``calibration_size`` of the training series as a
  contiguous held-out block the detector never trains on (``"split"``). A point's p-value combines
  (Cauchy) its window score against the maxima of consecutive windows of the calibration scores
  and its cell sum against the calibration points (``PointCalibration``). Points of a series are
  dependent, so the conformal guarantee (exchangeability) holds only approximately: a p-value is a
  rank among normal windows or points the model did not train on, not an exact probability;
- normal profile: each channel's quantiles over the training series, and per phase of the period
  (when the series has one, over at least 3 periods) its 1%/50%/99% quantiles at that phase;
- events: Benjamini-Hochberg over the series' windows (``flag_points``), runs of flagged points
  (gaps of fewer than window / 2 points joined) trimmed to where the cells pass the held-out block,
  each with its peak, the channels whose attribution exceeds their normal 99% level, a segment per
  channel with observed and restored values, and the nearest normal windows from the exemplar store.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from anomalens.detectors import BaseDetector, Calibrator, Inspection, benjamini_hochberg
from anomalens.detectors.base import nonzero_spread
from anomalens.detectors.calibration import bh_cutoff
from anomalens.detectors.ensemble import cauchy_combine
from anomalens.errors import CheckpointError, InputError
from anomalens.modalities.series import claims as series_claims
from anomalens.modalities.base import CaseItems, Modality, ModelInput
from anomalens.modalities.common import PROFILE_LEVELS
from anomalens.modalities.series.flow import SeriesFlow
from anomalens.modalities.series.items import Event, Segment
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

__all__ = ["FILLS", "PointCalibration", "SeriesData", "SeriesModality", "choose_window", "dominant_period", "read_series"]

FILLS = ("interpolate", "ffill")
COMBINES = ("min", "mean")  # how a point's cells are read off the windows that cover it
POINT_SCORES = ("window", "cell")  # what a point's detection score is (see SeriesModality.score_points)
MIN_WINDOW, MAX_WINDOW, DEFAULT_WINDOW = 8, 128, 125
MAX_TRAIN_WINDOWS = 20000  # training windows beyond it are taken with a stride
MAX_EVENT_WINDOWS = 4000  # windows restored per event (a longer event is restored from a stride of them)
MAX_SEGMENT_POINTS = 200  # points of a segment kept in the evidence (evenly picked)
SCORE_CHUNK = 2048  # windows per detector call when scoring
# the default scoring stride is window // SCORE_STRIDE_DIVISOR: every point is still held by
# SCORE_STRIDE_DIVISOR scored windows, each overlapping the next by 7/8 of its length
SCORE_STRIDE_DIVISOR = 8
CALIBRATIONS = ("auto", "split", "cross")
CROSS_FOLDS = 5  # contiguous blocks of cross-fitted calibration
# window scores are calibrated against the maxima of blocks of window // BLOCK_DIVISOR points. Chosen as
# the most powerful divisor on the nine benchmark series whose normal-only false-event rate stays within
# alpha + 2 SE over 20 seeds (1 / 20 with 4; 3 / 20 with 6 and 8; 9 / 20 point by point); range-F1 at the
# cut-off 0.113 -> 0.354 there, and 0.122 -> 0.206 on the twelve held-out NAB series (docs/series.md)
BLOCK_DIVISOR = 4
# calibration="auto" cross-fits when the held-out block would hold fewer windows than this: its p-values
# could not go below 1 / (CROSS_BELOW_WINDOWS + 1) at the window level
CROSS_BELOW_WINDOWS = 40


@dataclass
class SeriesData:
    """A checked series: ``times`` (a DatetimeIndex, or integer positions), ``values`` (T, C)."""

    times: Any
    values: np.ndarray
    channels: list[str]
    filled: int = 0  # cells filled by ``fill``
    fill: str | None = None
    note: str | None = None  # e.g. that the input was put on the model's time grid

    def stamp(self, i: int) -> str:
        return stamp(self.times[i])


def stamp(t: Any) -> str:
    """A time as written in evidence ids and text: ISO 8601 without spaces, or the integer position."""
    import pandas as pd

    if isinstance(t, pd.Timestamp):
        return t.isoformat()
    return str(int(t))


def read_series(data: Any, *, name: str = "series", time_column: str | None = None, fill: str | None = None,
                resample: str | None = None, channels: list[str] | None = None,
                exclude: tuple[str, ...] = ()) -> SeriesData:
    """Check a series and return it as (times, values); ``channels`` (a fitted model's) must all be there."""
    import pandas as pd

    if fill is not None and fill not in FILLS:
        raise InputError(f"fill must be one of {list(FILLS)} or None, got {fill!r}")
    if data is None or isinstance(data, (str, bytes, dict)) or np.isscalar(data):
        raise InputError(f"{name} must be a DataFrame (a time column or DatetimeIndex, one numeric column per channel) "
                         f"or an array, got {type(data).__name__}")
    if isinstance(data, pd.Series):
        data = data.to_frame(name=str(data.name) if data.name is not None else "value")
    if not isinstance(data, pd.DataFrame):
        try:
            arr = np.asarray(data, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{name} must be numeric, got an array numpy cannot read as numbers ({clip(str(exc), 80)})") from exc
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise InputError(f"{name} must be (time, channels), got an array of shape {arr.shape}")
        data = pd.DataFrame(arr, columns=channels if channels and len(channels) == arr.shape[1]
                            else [f"ch{i}" for i in range(arr.shape[1])])
    frame = data.set_axis([str(c) for c in data.columns], axis=1)
    if time_column is None and channels is not None and not isinstance(frame.index, pd.DatetimeIndex):
        # a fitted model's series given as a table (a CSV upload): one column besides the channels that
        # holds timestamps (text or datetimes, never numbers) is its time axis
        extra = [c for c in frame.columns if c not in channels and c not in exclude]
        if len(extra) == 1 and frame[extra[0]].dtype.kind in "OMU":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pandas' "could not infer format" on odd text
                if pd.to_datetime(frame[extra[0]], errors="coerce").notna().all():
                    time_column = extra[0]
    if time_column is not None and time_column not in frame.columns and isinstance(frame.index, pd.DatetimeIndex):
        time_column = None  # the times are already the index (e.g. a stretch cut from a checked series)
    if time_column is not None:
        if time_column not in frame.columns:
            raise InputError(f"time column {clip(time_column, 60)!r} is not in {name}; its columns are "
                             f"{names_of(list(frame.columns), 12)}")
        raw = frame[time_column]
        if raw.dtype.kind == "f" and np.isfinite(raw).all() and (raw == np.round(raw)).all():
            raw = raw.astype(np.int64)  # epoch seconds read as floats: whole numbers, not nanoseconds of 1970
        times = _to_times(raw) if raw.dtype.kind not in "iu" else raw
        if raw.dtype.kind not in "iu" and times.isna().any():
            i = int(np.flatnonzero(times.isna().to_numpy())[0])
            raise InputError(f"{name}'s time column {clip(time_column, 60)!r} must hold timestamps; row {i} holds "
                             f"{clip(str(raw.iloc[i]), 40)!r}")
        frame = frame.drop(columns=[time_column]).set_axis(pd.Index(times), axis=0)
    elif not isinstance(frame.index, (pd.DatetimeIndex, pd.RangeIndex)) and frame.index.dtype.kind not in "iu":
        raise InputError(f"{name} needs a time column (time_column=...), a DatetimeIndex or a plain integer index; "
                         f"its index is of type {frame.index.dtype}")
    frame = frame.drop(columns=[c for c in exclude if c in frame.columns])
    if channels is not None:
        missing = [c for c in channels if c not in frame.columns]
        extra = [c for c in frame.columns if c not in channels]
        if missing or extra:
            raise InputError(f"{name} channels must be the training channels; missing {names_of(missing)}, "
                             f"unexpected {names_of(extra)}")
        frame = frame[channels]
    if frame.shape[1] == 0:
        raise InputError(f"{name} has no channel columns")
    bad = [c for c in frame.columns if frame[c].dtype.kind not in "biuf"]
    if bad:
        raise InputError(f"channel columns must be numeric; {names_of(bad)} are not (got {frame[bad[0]].dtype})")
    frame = frame.astype(np.float64)
    idx = frame.index
    is_time = isinstance(idx, pd.DatetimeIndex)
    if idx.has_duplicates:
        raise InputError(f"{name} timestamps must be unique; {_show(idx[idx.duplicated()][0])} appears more than once")
    if not idx.is_monotonic_increasing:
        i = int(np.flatnonzero(np.diff(_ns(idx) if is_time else idx.to_numpy()) < 0)[0]) + 1
        raise InputError(f"{name} timestamps must be increasing; {_show(idx[i])} (row {i}) comes after {_show(idx[i - 1])}")
    if resample is not None:
        if not is_time:
            raise InputError(f"resample={resample!r} needs timestamps (a time column or a DatetimeIndex)")
        try:
            frame = frame.resample(resample).mean()
        except (ValueError, TypeError) as exc:
            raise InputError(f"resample must be a pandas frequency such as '5min', got {resample!r}") from exc
        idx = frame.index
    if len(idx) > 2:
        steps = np.diff(_ns(idx) if is_time else idx.to_numpy())
        usual = np.median(steps)
        odd = np.flatnonzero(steps != usual)
        if len(odd):
            i = int(odd[0]) + 1
            raise InputError(f"{name} must be evenly spaced: the step before {_show(idx[i])} (row {i}) is "
                             f"{_step(steps[odd[0]], is_time)}, the usual step is {_step(usual, is_time)}; "
                             f"pass resample= (e.g. '5min') to average it onto a grid")
    values = frame.to_numpy()
    filled = 0
    if np.isinf(values).any():
        r, c = np.argwhere(np.isinf(values))[0]
        raise InputError(f"{name} holds an infinite value in channel {clip(frame.columns[c], 60)!r} at {_show(idx[r])}")
    if np.isnan(values).any():
        if fill is None:
            r, c = np.argwhere(np.isnan(values))[0]
            raise InputError(f"{name} has a missing value (NaN) in channel {clip(frame.columns[c], 60)!r} at "
                             f"{_show(idx[r])}; pass fill='interpolate' or fill='ffill' to fill it")
        empty = [c for c in frame.columns if frame[c].isna().all()]
        if empty:
            raise InputError(f"channel {clip(empty[0], 60)!r} of {name} holds no value to fill from")
        filled = int(np.isnan(values).sum())
        filled_frame = frame.interpolate(method="linear", limit_direction="both") if fill == "interpolate" \
            else frame.ffill().bfill()
        values = filled_frame.to_numpy()
    times = idx if is_time else idx.to_numpy().astype(np.int64)
    return SeriesData(times, np.ascontiguousarray(values), list(frame.columns), filled, fill if filled else None)


def _to_times(raw: Any) -> Any:
    """Timestamps of a text or datetime column (NaT where one cannot be read). Offsets that change
    within the column (daylight saving: +01:00 in winter, +02:00 in summer) are read as UTC instants
    instead of failing with pandas' "Mixed timezones"."""
    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas' "could not infer format" and mixed-offset warnings
        try:
            times = pd.to_datetime(raw, errors="coerce")
        except ValueError:  # mixed offsets (pandas >= 2.x raises)
            return pd.to_datetime(raw, errors="coerce", utc=True)
        if times.dtype == object:  # mixed offsets (older pandas returns objects)
            return pd.to_datetime(raw, errors="coerce", utc=True)
    return times


def _ns(idx: Any) -> np.ndarray:
    """A DatetimeIndex as int64 nanoseconds, whatever its unit (pandas 3 reads times as microseconds,
    and ``asi8`` is in the index's own unit: a 0.9 s step was printed as 900 ms's thousandth)."""
    return idx.as_unit("ns").asi8


def _show(t: Any) -> str:
    return stamp(t) if not isinstance(t, (int, np.integer)) else f"position {int(t)}"


def _step(ns: float, is_time: bool) -> str:
    import pandas as pd

    return str(pd.Timedelta(int(ns), unit="ns")) if is_time else f"{ns:g}"


def dominant_period(x: np.ndarray) -> int | None:
    """TSB-AD's ``find_length_rank`` (rank 1): the lag of the highest local maximum of the
    autocorrelation over lags 3..400 of the first 20,000 points; None where there is none or it is
    below 6 or above 303 (where TSB-AD falls back to its default window)."""
    x = np.asarray(x[:20000], dtype=np.float64)
    x = x - x.mean()
    n = len(x)
    if n < 8 or not x.any():
        return None
    f = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(f * np.conj(f))[: min(n, 401)]
    acf = acf[3:] / acf[0]  # lags 3, 4, ...
    peaks = np.flatnonzero((acf[1:-1] > acf[:-2]) & (acf[1:-1] > acf[2:])) + 1
    if len(peaks) == 0:
        return None
    best = int(peaks[np.argmax(acf[peaks])])
    return best + 3 if 3 <= best <= 300 else None


def choose_window(values: np.ndarray) -> tuple[int, int | None]:
    """(window, period): the median dominant period over the channels that have one, bounded to
    [MIN_WINDOW, MAX_WINDOW] (DEFAULT_WINDOW, TSB-AD's default, bounded, when none has), and that
    period (None when none)."""
    periods = [p for c in range(values.shape[1]) if (p := dominant_period(values[:, c])) is not None]
    if not periods:
        return min(DEFAULT_WINDOW, MAX_WINDOW), None
    period = int(np.median(periods))
    return int(np.clip(period, MIN_WINDOW, MAX_WINDOW)), period


class PointCalibration:
    """The calibration stage of a series' points (``point_score="window"``), against the held-out
    block. A point's p-value is the Cauchy combination (valid under any dependence between the two;
    Liu and Xie, JASA 2020) of:

    - its **window score** (the largest score of the windows that hold it) against the maxima of
      the held-out block's consecutive stretches of a quarter window (``Calibrator(block=window //
      BLOCK_DIVISOR)``), since window scores run for a window and a few hundred held-out points
      hold only a few windows' worth of information; a shape, a level, a flat stretch;
    - its **cell score** (the sum of its cells) against the held-out block's points: a spike at
      one point, which a window's total dilutes.

    A point's score is the larger of its window score and its cell score, each divided by the
    largest the held-out block reached (1 = as high as anything in the normal block): it ranks
    points on a continuous scale where the p-values, with few held-out windows, saturate at their
    floor. Score and p-value both grow with each of the two, but neither is a function of the
    other, so there is no single score threshold (``threshold`` is inf). It implements
    ``detectors.calibration.Calibration``, the protocol every calibration stage shares."""

    def __init__(self, window_scores: np.ndarray, cell_scores: np.ndarray, window: int, *, block: int | None = None) -> None:
        """``block``: points per block of window scores (default ``window // BLOCK_DIVISOR``, at least 1)."""
        self.window = Calibrator(window_scores, check_tail=False,
                                 block=max(1, window // BLOCK_DIVISOR) if block is None else int(block))
        self.cell = Calibrator(cell_scores, check_tail=False)

    def point_pvalues(self, window_scores: np.ndarray, cell_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scores, p-values, approximate mask) of points."""
        neglog = cauchy_combine(np.stack([self.window.pvalues(window_scores), self.cell.pvalues(cell_scores)]),
                                truncate=0.5)
        approx = self.window.approximate(window_scores) | self.cell.approximate(cell_scores)
        scores = np.maximum(window_scores / max(self.window.scores[-1], 1e-12), cell_scores / max(self.cell.scores[-1], 1e-12))
        return scores, np.exp(-neglog), approx

    def pvalues(self, scores: np.ndarray) -> np.ndarray:
        """``Calibration``'s p-values: ``scores`` is (2, n), the points' window scores over their cell scores."""
        return self.point_pvalues(*self._pair(scores))[1]

    def approximate(self, scores: np.ndarray) -> np.ndarray:
        return self.point_pvalues(*self._pair(scores))[2]

    @staticmethod
    def _pair(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = np.asarray(scores, dtype=np.float64)
        if s.ndim != 2 or s.shape[0] != 2:
            raise InputError(f"scores must be (2, n): window scores over cell scores, got shape {s.shape}")
        return s[0], s[1]

    @property
    def n(self) -> int:
        """Calibration blocks of window scores (the coarser of the two calibration sets)."""
        return self.window.n

    @property
    def floor(self) -> float:
        """The smallest p-value without a tail: both at their floors."""
        return float(np.exp(-cauchy_combine(np.array([[self.window.floor], [self.cell.floor]]), truncate=0.5))[0])

    @property
    def tail(self) -> Any:
        return self.window.tail or self.cell.tail

    @property
    def extends(self) -> bool:
        return self.tail is not None

    @property
    def method(self) -> str:
        return "conformal + GPD tail" if self.tail is not None else "conformal"

    def threshold(self, cutoff: float) -> float:
        return float("inf")


class SeriesModality(Modality):
    """Multivariate time series, analysed in sliding windows; a case is an event (a run of flagged points)."""

    name = "series"
    max_exemplars = 1000  # windows: each exemplar keeps channels x window values
    case_noun = "event"
    units_title = "Channels"
    unit_kind = "channel"
    default_detector = "conv_ae"
    sequential = True  # cases are events found in a series, not rows
    flow_class = SeriesFlow

    def __init__(self, window: int | None = None, *, time_column: str | None = None, fill: str | None = None,
                 resample: str | None = None, calibration_size: float = 0.2, combine: str = "min",
                 point_score: str = "window", score_stride: int | None = None, calibration: str = "auto",
                 n_folds: int = CROSS_FOLDS) -> None:
        if window is not None and (isinstance(window, bool) or not isinstance(window, (int, np.integer))
                                   or not MIN_WINDOW // 2 <= window <= 4096):
            raise InputError(f"window must be an int in [{MIN_WINDOW // 2}, 4096] or None, got {window!r}")
        if fill is not None and fill not in FILLS:
            raise InputError(f"fill must be one of {list(FILLS)} or None, got {fill!r}")
        if isinstance(calibration_size, bool) or not isinstance(calibration_size, (int, float)) \
                or not 0.05 <= calibration_size <= 0.5:
            raise InputError(f"calibration_size must be a number in [0.05, 0.5], got {calibration_size!r}")
        if combine not in COMBINES:
            raise InputError(f"combine must be one of {list(COMBINES)}, got {combine!r}")
        self.combine = combine
        if calibration not in CALIBRATIONS:
            raise InputError(f"calibration must be one of {list(CALIBRATIONS)}, got {calibration!r}")
        if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or not 2 <= n_folds <= 20:
            raise InputError(f"n_folds must be an int in [2, 20], got {n_folds!r}")
        self.calibration, self.n_folds = calibration, int(n_folds)
        self.calibration_mode = "split"  # what fit did: "split" (a held-out block) or "cross" (out-of-fold blocks)
        if point_score not in POINT_SCORES:
            raise InputError(f"point_score must be one of {list(POINT_SCORES)}, got {point_score!r}")
        self.point_score = point_score
        if score_stride is not None and (isinstance(score_stride, bool) or not isinstance(score_stride, (int, np.integer))
                                         or score_stride < 1):
            raise InputError(f"score_stride must be a positive int or None, got {score_stride!r}")
        # k: every k-th window is scored (1: every window); None: window // SCORE_STRIDE_DIVISOR, set by ``split``
        self.score_stride = None if score_stride is None else int(score_stride)
        self.window = None if window is None else int(window)
        self.time_column, self.fill, self.resample = time_column, fill, resample
        self.calibration_size = float(calibration_size)
        self.channels: list[str] = []
        self.period: int | None = None
        self.time_kind = "position"  # or "datetime"
        self.t0: str | None = None  # first training time
        self.step: float = 1.0  # seconds (datetime) or positions between points
        self.quantiles: np.ndarray | None = None  # (3, C): 1%, 50%, 99% over the training series
        self.profile: np.ndarray | None = None  # (len(PROFILE_LEVELS), C)
        self.phase: np.ndarray | None = None  # (3, period, C) per phase of the period, or None
        self.calibration_scores: np.ndarray | None = None  # held-out block: window scores in time order ("cell": cell sums)
        self.cell_calibration_scores: np.ndarray | None = None  # held-out block: cell sums, sorted
        self.channel_limits: np.ndarray | None = None  # (C,) 99% of a channel's point attribution, held-out block
        self.n_points = 0  # training points

    def __repr__(self) -> str:
        return f"SeriesModality(channels={len(self.channels)}, window={self.window}, period={self.period})"

    @property
    def unit_names(self) -> list[str]:
        return self.channels

    @property
    def stride(self) -> int:
        """Windows scored: every ``score_stride``-th (None: every window // SCORE_STRIDE_DIVISOR-th)."""
        return self.score_stride or max(1, (self.window or 0) // SCORE_STRIDE_DIVISOR)

    @property
    def model_width(self) -> int:
        """Values per detector row: channels x window."""
        return len(self.channels) * (self.window or 0)

    # ------------------------------------------------------------------ input
    def read(self, data: Any, name: str = "series") -> SeriesData:
        """``data`` checked against the training series (channels, spacing, missing values) and long
        enough for one window."""
        try:
            s = read_series(data, name=name, time_column=self.time_column, fill=self.fill, resample=self.resample,
                            channels=self.channels or None)
        except InputError as exc:  # uneven steps: put them on the model's grid, when it has one
            if self.resample is not None or self.time_kind != "datetime" or "evenly spaced" not in str(exc):
                raise
            s = self._on_grid(data, name, "its steps were uneven")
        else:
            if self.time_kind == "datetime" and self.resample is None and len(s.times) > 2:
                given = float((s.times[1] - s.times[0]).total_seconds())
                if not np.isclose(given, self.step, rtol=1e-6):  # another grid: a 1-minute series, a 5-minute model
                    s = self._on_grid(data, name, f"its step was {_step(given * 1e9, True)}")
        if self.window is not None and len(s.values) < self.window:
            raise InputError(f"{name} must be at least one window long ({self.window} points), got {len(s.values)}")
        return s

    def _on_grid(self, data: Any, name: str, why: str) -> SeriesData:
        """A datetime series put on the fitted model's step (averaged per step, empty steps filled by
        ``fill`` or interpolated), with a note saying so: the model reads points one step apart, and
        real exports hold duplicated samples, short steps and gaps."""
        import pandas as pd
        from pandas.tseries.frequencies import to_offset

        rule = to_offset(pd.Timedelta(seconds=self.step))
        s = read_series(data, name=name, time_column=self.time_column, fill=self.fill or "interpolate",
                        resample=rule, channels=self.channels or None)
        s.note = (f"{name} was put on the model's grid of {_step(self.step * 1e9, True)} ({why}): values averaged "
                  f"per step" + (f", {s.filled} empty cell(s) filled ({s.fill})" if s.filled else ""))
        return s

    # ------------------------------------------------------------------ the command line
    options = ("window", "time_column", "fill", "resample")

    @classmethod
    def from_options(cls, **options: Any) -> SeriesModality:
        window = options.pop("window", None)
        if window is not None and not str(window).isdigit():
            raise InputError(f"--window of a series is a number of points, got {str(window)[:40]!r}")
        return cls(None if window is None else int(window), **options)

    def fit_summary(self, inv: Any, data: Any) -> tuple[dict[str, Any], str | None]:
        cross = self.calibration_mode == "cross"
        return {"rows": len(data), "channels": len(self.channels), "window": self.window, "period": self.period,
                "calibration_points": len(self.calibration_scores),
                "calibration": (f"out-of-fold scores of every training point ({len(self.fold_blocks(self.n_points))} "
                                "contiguous blocks)" if cross else "a held-out block at the end")}, None

    def begin_fit(self, data: Any) -> tuple[SeriesData, SeriesData | None]:
        """The series checked and split (``split``) before the detector is built: it needs the window."""
        return self.split(data)

    def detector_defaults(self, fields: set[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "window" in fields:
            out["window"] = self.window
        if "calibration" in fields:
            out["calibration"] = "split"  # p-values come from the modality's point calibration; one fit
        return out

    def split(self, data: Any) -> tuple[SeriesData, SeriesData]:
        """Learn the channels, time grid and window of normal training data; (training part,
        contiguous held-out calibration block)."""
        s = read_series(data, name="data", time_column=self.time_column, fill=self.fill, resample=self.resample)
        T = len(s.values)
        self.channels = s.channels
        n_cal = int(round(self.calibration_size * T))
        window, self.period = choose_window(s.values[: int(T * (1 - self.calibration_size))])
        # a chosen window is at most what the data can hold: 4 windows to train on, 2 to calibrate with
        self.window = self.window or max(MIN_WINDOW // 2, min(window, int(min((T - n_cal) / 4, n_cal / 2))))
        self.score_stride = self.stride
        mode = self.calibration
        if mode == "auto":
            mode = "cross" if n_cal < CROSS_BELOW_WINDOWS * self.window else "split"
        folds = self.folds(T)
        if mode == "cross" and folds >= 2:
            self.calibration_mode = "cross"
            self._set_grid(s)
            self.n_points = T
            return s, None
        self.calibration_mode = "split"
        if T - n_cal < 4 * self.window or n_cal < 2 * self.window:
            need = int(math.ceil(max(4 * self.window / (1 - self.calibration_size), 2 * self.window / self.calibration_size)))
            raise InputError(f"data must be at least {need} points long for window {self.window} (4 windows to train on "
                             f"and 2 in the held-out calibration block), got {T}")
        self._set_grid(s)
        self.n_points = T - n_cal
        head = SeriesData(s.times[: T - n_cal], s.values[: T - n_cal], s.channels, s.filled, s.fill)
        tail = SeriesData(s.times[T - n_cal :], s.values[T - n_cal :], s.channels)
        return head, tail

    def _set_grid(self, s: SeriesData) -> None:
        import pandas as pd

        T = len(s.times)
        if isinstance(s.times, pd.DatetimeIndex):
            self.time_kind, self.step = "datetime", float((s.times[1] - s.times[0]).total_seconds())
        else:
            self.time_kind, self.step = "position", float(s.times[1] - s.times[0]) if T > 1 else 1.0
        self.t0 = stamp(s.times[0])

    def folds(self, T: int) -> int:
        """Contiguous blocks a series of T points is cut into for cross-fitted calibration: at most
        ``n_folds``, each at least 2 windows long, each leaving at least 4 windows to train on
        besides its block and a window's gap on each side of it (fewer than 2: no cross-fitting)."""
        w = self.window
        k = min(self.n_folds, T // (2 * w))
        while k >= 2 and T - math.ceil(T / k) - 2 * w < 4 * w:
            k -= 1
        return k

    def fold_blocks(self, T: int) -> list[tuple[int, int]]:
        """(start, end) of the contiguous calibration blocks of a T-point training series."""
        edges = np.linspace(0, T, self.folds(T) + 1).round().astype(int)
        return list(zip(edges[:-1].tolist(), edges[1:].tolist()))

    def learn(self, data: Any, ids: Any = None) -> ModelInput:
        """The training windows (strided beyond MAX_TRAIN_WINDOWS) of the training part of ``data``;
        ids are the windows' start times."""
        head, _ = self.split(data)
        starts = self.train_starts(head)
        X = self.windows(head.values, starts)
        return ModelInput(X, X, [head.stamp(i) for i in starts])

    def train_starts(self, head: SeriesData) -> np.ndarray:
        """Starts of the training windows of the training part: stride 1, or the stride that keeps MAX_TRAIN_WINDOWS."""
        n = len(head.values) - self.window + 1
        return np.arange(0, n, max(1, math.ceil(n / MAX_TRAIN_WINDOWS)))

    def prepare(self, data: Any, name: str = "case") -> ModelInput:
        """Every window (stride 1) of a series."""
        s = self.read(data, name)
        starts = np.arange(len(s.values) - self.window + 1)
        return ModelInput(s, self.windows(s.values, starts), [s.stamp(i) for i in starts])

    def windows(self, values: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """(len(starts), C * window) windows starting at ``starts``, channel by channel."""
        from numpy.lib.stride_tricks import sliding_window_view

        view = sliding_window_view(values, self.window, axis=0)  # (T - w + 1, C, w)
        return view[np.asarray(starts)].reshape(len(starts), -1)

    def frame(self, s: SeriesData, lo: int, hi: int) -> Any:
        """Points lo..hi-1 of a checked series as a DataFrame this modality reads back (times kept)."""
        import pandas as pd

        return pd.DataFrame(s.values[lo:hi], columns=self.channels, index=s.times[lo:hi])

    def to_saved(self, stretch: Any) -> list[float]:
        """A stretch as plain numbers: per point its position on the training grid, then its channels."""
        s = self.read(stretch, "stretch")
        return np.column_stack([self.positions(s.times), s.values]).reshape(-1).tolist()

    def from_saved(self, saved: Any) -> Any:
        """The stretch ``to_saved`` wrote, with its times rebuilt from the positions."""
        import pandas as pd

        arr = np.asarray(saved, dtype=np.float64)
        if arr.ndim != 1 or arr.size % (len(self.channels) + 1):
            raise InputError(f"a saved stretch must hold (1 + {len(self.channels)}) numbers per point, got {arr.size}")
        arr = arr.reshape(-1, len(self.channels) + 1)
        pos = arr[:, 0]
        if self.time_kind == "datetime":
            index = pd.Timestamp(self.t0) + pd.to_timedelta(pos * self.step, unit="s")
        else:
            index = pd.Index((float(self.t0) + pos * self.step).round().astype(np.int64))
        return pd.DataFrame(arr[:, 1:], columns=self.channels, index=index)

    # ------------------------------------------------------------------ scoring
    def score_points(self, detector: BaseDetector, values: np.ndarray,
                     progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """((C, T) channel x time attribution, (T,) point scores) of a series, from the windows
        that cover each point (every ``stride``-th window and the last).

        - a cell's attribution is its minimum (or mean, ``combine``) over those windows: it says
          where and in which channels an anomaly is;
        - a point's window score is the largest detector score of those windows: a point is as anomalous as the most anomalous window that holds it.
          A window sees a shape, a level or a flat stretch that no single point shows, and the
          score stays high over the whole stretch a window around the anomaly covers.
          ``point_pvalues`` turns it and the point's cell sum into the point's p-value."""
        T, C = values.shape
        w = self.window
        starts_all = np.arange(0, T - w + 1, self.stride)
        if starts_all[-1] != T - w:
            starts_all = np.r_[starts_all, T - w]
        mean = self.combine == "mean"
        cells = np.zeros((C, T)) if mean else np.full((C, T), np.inf)
        count = np.zeros(T)
        window_max = np.full(T, -np.inf)
        chunks = range(0, len(starts_all), SCORE_CHUNK)
        if progress:
            from tqdm import tqdm

            chunks = tqdm(chunks, desc="scoring windows", unit="chunk", leave=False)
        for a in chunks:
            starts = starts_all[a : a + SCORE_CHUNK]
            rows = self.windows(values, starts)
            totals, att = detector.score_explain(rows, checked=True)  # one pass: score and attribution
            A = att.values.reshape(len(starts), C, w)
            _fold(cells, count, A, starts, mean=mean)
            for j in range(w):  # starts are distinct: no index repeats for one j
                window_max[starts + j] = np.maximum(window_max[starts + j], totals)
        return (cells / count[None, :] if mean else cells), window_max

    def point_pvalues(self, cells: np.ndarray, window_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scores, p-values, approximate mask) of a series' points from ``score_points``.

        ``point_score="window"``: the p-value combines (Cauchy) the point's window score against the
        held-out block's windows and its cell sum against the held-out block's points (see
        ``PointCalibration``, which also gives the score). ``"cell"`` (models saved before
        window scores): the cell sum is the score, calibrated against the held-out points."""
        cell_scores = cells.sum(axis=0)
        cal = self.calibrator
        if isinstance(cal, PointCalibration):
            return cal.point_pvalues(window_scores, cell_scores)
        return cell_scores, cal.pvalues(cell_scores), cal.approximate(cell_scores)

    def window_pvalue(self, cells: np.ndarray, score: float) -> float:
        """The p-value one window gives on its own (its points' smallest): its (C, window)
        attribution ``cells`` and its detector ``score``."""
        return float(self.point_pvalues(cells, np.full(cells.shape[1], score))[1].min())

    def restore_span(self, detector: BaseDetector, values: np.ndarray, span: tuple[int, int],
                     peak_start: int) -> tuple[np.ndarray, np.ndarray]:
        """((C, T) the detector's restored values over points ``span`` (first, last) of a series, (1, k) the
        embedding of the window starting at ``peak_start``), in one detector call (``restore_embed``).
        Each cell is its mean over the restored windows that cover it (at most MAX_EVENT_WINDOWS,
        strided beyond, and the peak window); NaN outside the windows that cover the span. (One
        ``inspect`` of those windows would also score them and their restorations and embed every one:
        measured slower, docs/series.md.)"""
        a, b = span
        T, C, w = len(values), len(self.channels), self.window
        starts = np.arange(max(0, a - w + 1), min(T - w, b) + 1)
        if len(starts) > MAX_EVENT_WINDOWS:
            starts = starts[:: math.ceil(len(starts) / MAX_EVENT_WINDOWS)]
        starts = np.union1d(starts, [peak_start])
        R, emb = detector.restore_embed(self.windows(values, starts), np.flatnonzero(starts == peak_start), checked=True)
        R = R.reshape(len(starts), C, w)
        total, count = np.zeros((C, T)), np.zeros(T)
        _fold(total, count, R, starts, mean=True)
        return np.where(count > 0, total / np.maximum(count, 1), np.nan), emb

    def fit_calibration(self, detector: BaseDetector, block: SeriesData) -> None:
        """Point scores of the held-out block become the conformal calibration set; each channel's 99%
        point attribution there is its normal level."""
        self._set_calibration(*self.score_points(detector, block.values))

    def fit_cross_calibration(self, detector: BaseDetector, series: SeriesData) -> None:
        """Cross-fitted calibration (``calibration="cross"``): the training series is cut into
        contiguous blocks (``fold_blocks``); for each, a fresh copy of ``detector`` (same
        hyper-parameters, unfitted) trains on the windows of the rest of the series, less a window's
        gap on each side of the block (a window next to the block shares points with it, and points
        a few steps apart are alike), and scores the block's points. Every training point thus
        gets an out-of-fold score, and the calibration set is the training series, not a thin held-out tail.
        ``detector`` itself is then fitted on every training window, by the caller."""
        T, w = len(series.values), self.window
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        for a, b in self.fold_blocks(T):
            segments = [series.values[: max(0, a - w)], series.values[b + w :]]
            X = np.concatenate([self.windows(v, self._starts(len(v), T)) for v in segments if len(v) >= w])
            member = detector.fold_copy()
            member.fit(X)
            parts.append(self.score_points(member, series.values[a:b]))
        self._set_calibration(np.concatenate([c for c, _ in parts], axis=1), np.concatenate([s for _, s in parts]))

    def _starts(self, n_points: int, total: int) -> np.ndarray:
        """Window starts over a stretch of ``n_points``, strided as ``train_starts`` strides a ``total``-point series."""
        n = n_points - self.window + 1
        return np.arange(0, n, max(1, math.ceil((total - self.window + 1) / MAX_TRAIN_WINDOWS)))

    def _set_calibration(self, cells: np.ndarray, window_scores: np.ndarray) -> None:
        cell_scores = cells.sum(axis=0)
        self.cell_calibration_scores = np.sort(cell_scores)
        self.calibration_scores = window_scores if self.point_score == "window" else self.cell_calibration_scores
        self.channel_limits = np.quantile(cells, 0.99, axis=1)
        self._calibrator = None

    @property
    def calibrator(self) -> "Calibrator | PointCalibration":
        if self.calibration_scores is None:
            raise InputError("the series modality is not fitted (no calibration scores)")
        if getattr(self, "_calibrator", None) is None:
            if self.point_score == "window":
                self._calibrator = PointCalibration(self.calibration_scores, self.cell_calibration_scores, self.window)
            else:  # a model saved before window scores: its cell sums, as one set of points
                self._calibrator = Calibrator(self.calibration_scores, check_tail=False)
        return self._calibrator

    def flag_points(self, pvalues: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """(flags, per-point p-value cut-offs) of a series' points: Benjamini-Hochberg over its **windows**.

        The series is cut into consecutive windows; a window's p-value is the Simes combination of
        its points' (min over i of n p_(i) / i for its n sorted p-values: valid under the positive
        dependence of neighbouring points, and as strong as Bonferroni for one outlying point while
        a run of moderately small p-values adds up), BH at ``alpha`` over the windows passes k of
        them, and inside a passing window the points that make it pass are flagged (BH inside the
        window at level alpha k / windows). A point's cut-off is the p-value its window needed of
        it (in a window that did not pass: what one point alone would need). The false discovery
        rate is controlled over windows, the unit the scores come in: BH over points would count
        an event as the hundred or so points its windows cover, and those discoveries would raise
        the cut-off until single normal points got through."""
        p = np.asarray(pvalues, dtype=np.float64)
        T, w = len(p), self.window
        starts = np.arange(0, T, w)
        blocks = [p[a : a + w] for a in starts]
        simes = np.array([float(np.min(np.sort(b) * len(b) / np.arange(1, len(b) + 1))) for b in blocks])
        k = int(benjamini_hochberg(np.minimum(simes, 1.0), alpha).sum())
        level = alpha * max(k, 1) / len(starts)
        flags, cutoffs = np.zeros(T, dtype=bool), np.empty(T)
        for a, b in zip(starts, blocks):  # a window passes Simes at ``level`` iff BH inside it rejects
            inside = benjamini_hochberg(b, level).astype(bool) if k else np.zeros(len(b), dtype=bool)
            flags[a : a + len(b)] = inside
            cutoffs[a : a + len(b)] = bh_cutoff(int(inside.sum()), len(b), level)
        return flags, cutoffs

    def events(self, flags: np.ndarray, cells: np.ndarray | None = None, alpha: float = 0.05) -> list[tuple[int, int]]:
        """(first, last) positions of runs of flagged points (gaps shorter than window / 2 joined).

        With window point scores a run spans every window that holds the anomaly, up to a window
        on each side of it; given ``cells`` (the (C, T) attribution), each run is trimmed to its
        first and last point whose cell sum is anomalous on its own: beyond anything the held-out
        block showed (its largest cell sum) and, where the held-out tail extrapolates p-values below the
        conformal floor, with a cell p-value at most ``alpha`` / the run's length (Bonferroni over
        the run). The held-out maximum alone is not enough: a series several times longer than
        the held-out block passes it at a few normal points by chance, and one such point a
        window away would stretch the event to it. A run with no such point (an anomaly that
        only a whole window shows, e.g. a shape) is kept whole."""
        idx = np.flatnonzero(flags)
        if len(idx) == 0:
            return []
        gap = max(1, self.window // 2)
        breaks = np.flatnonzero(np.diff(idx) > gap)
        starts = np.r_[idx[0], idx[breaks + 1]]
        ends = np.r_[idx[breaks], idx[-1]]
        spans = list(zip(starts.tolist(), ends.tolist()))
        if cells is None or self.point_score != "window":
            return spans
        point = cells.sum(axis=0)
        cell_cal = self.calibrator.cell
        limit = cell_cal.scores[-1]  # the held-out block's largest cell sum
        out = []
        for a, b in spans:
            run = point[a : b + 1]
            beyond = run > limit
            if cell_cal.tail is not None:
                beyond &= cell_cal.pvalues(run) <= alpha / len(run)
            at = np.flatnonzero(beyond)
            out.append((a + int(at[0]), a + int(at[-1])) if len(at) else (a, b))
        return out

    # ------------------------------------------------------------------ normal profile
    def positions(self, times: Any) -> np.ndarray:
        """Positions of times on the training grid (0 = the first training point)."""
        import pandas as pd

        if self.time_kind == "datetime":
            t0, idx = pd.Timestamp(self.t0), pd.DatetimeIndex(times)
            if (t0.tz is None) != (idx.tz is None):  # naive times against a model of UTC times, or the reverse:
                t0 = t0.tz_convert("UTC").tz_localize(None) if t0.tz is not None else t0  # both read as UTC
                idx = idx.tz_convert("UTC").tz_localize(None) if idx.tz is not None else idx
            return np.round((idx - t0).total_seconds().to_numpy() / self.step).astype(np.int64)
        return np.round((np.asarray(times, dtype=np.float64) - float(self.t0)) / self.step).astype(np.int64)

    def fit_profile(self, array: np.ndarray) -> None:
        """``array``: the (T, C) training values (not the windows)."""
        self.profile = np.quantile(array, PROFILE_LEVELS, axis=0)
        self.quantiles = self.profile[[PROFILE_LEVELS.index(q) for q in (0.01, 0.5, 0.99)]]
        P = self.period
        if P is not None and len(array) >= 3 * P:
            T = len(array) - len(array) % P
            by_phase = array[:T].reshape(T // P, P, -1)  # (periods, P, C)
            self.phase = np.quantile(by_phase, (0.01, 0.5, 0.99), axis=0)
        else:
            self.phase = None

    def spreads(self) -> np.ndarray:
        """(C,) each channel's 1%-99% range over the training series: the unit its deviations are
        ranked in. A range is zero relative to the channel's magnitude (as in ``robust_scale``), so
        a channel in small units (1e-15) keeps its own; a constant channel's unit is max(that noise
        level, 1)."""
        q = self.quantiles
        return nonzero_spread(q[2] - q[0], np.abs(q).max(axis=0))

    def normal_at(self, c: int, position: int) -> tuple[float, float, float]:
        """(1%, 50%, 99%) of channel c at a position: at the same phase of the period when known."""
        if self.phase is not None:
            k = int(position) % self.phase.shape[1]
            return tuple(float(v) for v in self.phase[:, k, c])
        return tuple(float(v) for v in self.quantiles[:, c])

    def _index(self, unit: str) -> int:
        if unit not in self.channels:
            raise InputError(f"channel must be one of the {len(self.channels)} training channels "
                             f"(e.g. {names_of(self.channels, 8)}), got {clip(str(unit), 60)!r}")
        return self.channels.index(unit)

    def profile_of(self, unit: str, n_train: int) -> FeatureProfile:
        j = self._index(unit)
        qs = {f"{100 * q:g}%": float(v) for q, v in zip(PROFILE_LEVELS, self.profile[:, j])}
        lo, med, hi = self.quantiles[:, j]
        return FeatureProfile(id=f"profile:{unit}", unit=unit, normal_low=float(lo), normal_median=float(med),
                              normal_high=float(hi), quantiles=qs, n_train=n_train)

    # ------------------------------------------------------------------ evidence
    def event_items(self, s: SeriesData, span: tuple[int, int], cells: np.ndarray, scores: np.ndarray,
                    restored: np.ndarray, hits: list[ExemplarHit], window_start: int,
                    top: int) -> tuple[Event, CaseItems, list]:
        """The evidence of one event ``span`` (first, last point) of series ``s``: ``cells`` its (C, T)
        channel x time attribution, ``scores`` its (T,) point scores, ``restored`` (C, T) restored values over the event (NaN
        elsewhere), ``hits`` the exemplars nearest to the window starting at ``window_start``."""
        a, b = span
        C = len(self.channels)
        pos = self.positions(s.times[a : b + 1])
        ev_cells = cells[:, a : b + 1]
        contrib = ev_cells.sum(axis=1)
        total = np.clip(contrib, 0, None).sum()
        peak_t = a + ev_cells.argmax(axis=1)  # each channel's most deviating point
        abnormal = ev_cells.max(axis=1) > self.channel_limits
        order = np.argsort(-contrib, kind="stable")
        offset = lambda t: t - window_start  # noqa: E731 - a point's offset in the exemplar windows
        ex_vals = [h.values.reshape(C, self.window) for h in hits]
        exemplars = []
        for h, v in zip(hits, ex_vals):
            off = min(max(offset(int(peak_t[order[0]])), 0), self.window - 1)
            exemplars.append(Exemplar(id=f"exemplar:{h.row_id}", row_id=h.row_id, distance=h.distance,
                                      values={ch: float(v[c, off]) for c, ch in enumerate(self.channels)},
                                      source=h.source, timestamp=h.timestamp or h.row_id, weight=h.weight))
        attributions, segments, deltas = [], [], []
        for c in order[:top]:
            t = int(peak_t[c])
            lo, med, hi = self.normal_at(c, pos[t - a])
            v = float(s.values[t, c])
            off = min(max(offset(t), 0), self.window - 1)
            share = float(max(contrib[c], 0) / total) if total > 0 else 0.0
            attributions.append(Attribution(
                id=self.unit_id(self.channels[c]), unit=self.channels[c], value=v, contribution=float(contrib[c]),
                share=share, abnormal=bool(abnormal[c]), normal_low=lo, normal_median=med, normal_high=hi,
                position="below" if v < lo else "above" if v > hi else "within",
                exemplar_mean=float(np.mean([e[c, off] for e in ex_vals])) if ex_vals else None))
            if abnormal[c] or c == order[0]:
                keep = np.unique(np.linspace(a, b, min(b - a + 1, MAX_SEGMENT_POINTS)).round().astype(int))
                segments.append(Segment(
                    id=f"segment:{self.channels[c]}:{s.stamp(a)}..{s.stamp(b)}", channel=self.channels[c],
                    start=s.stamp(a), end=s.stamp(b), times=[s.stamp(i) for i in keep],
                    observed=[float(s.values[i, c]) for i in keep], restored=[float(restored[c, i]) for i in keep],
                    peak_time=s.stamp(t), peak_value=v, expected=float(restored[c, t]), normal_low=lo, normal_high=hi,
                    share=share))
            deltas.append(FeatureDelta(unit=self.channels[c], observed=v, restored=float(restored[c, t]),
                                       delta=float(restored[c, t] - v)))
        scale = self.spreads()
        deltas.sort(key=lambda d: -abs(d.delta) / scale[self.channels.index(d.unit)])
        restoration = Restoration(values={d.unit: d.restored for d in deltas}, deltas=deltas)
        peak = a + int(cells[:, a : b + 1].sum(axis=0).argmax())  # where the anomaly is sharpest
        note = s.note or (f"{s.filled} missing value(s) of the input were filled ({s.fill})" if s.filled else None)
        event = Event(index=0, start=s.stamp(a), end=s.stamp(b), peak=s.stamp(peak), n_points=b - a + 1,
                      peak_score=float(scores[peak]), channels=[self.channels[c] for c in order if abnormal[c]], note=note)
        return event, CaseItems(attributions, exemplars, restoration), segments

    def case_items(self, X: np.ndarray, inspection: Inspection, hits: list[list[ExemplarHit]], top: int,
                   scale: np.ndarray) -> list[CaseItems]:
        """Evidence of single windows (rows of ``X``): each channel's summed attribution, its value
        at the window's last point, and the restoration there."""
        C, w = len(self.channels), self.window
        out = []
        for i in range(len(X)):
            A = inspection.attribution.values[i].reshape(C, w).sum(axis=1)
            x, r = X[i].reshape(C, w)[:, -1], inspection.restored[i].reshape(C, w)[:, -1]
            total = np.clip(A, 0, None).sum()
            atts = []
            for c in np.argsort(-A, kind="stable")[:top]:
                lo, med, hi = self.quantiles[:, c]
                atts.append(Attribution(id=self.unit_id(self.channels[c]), unit=self.channels[c], value=float(x[c]),
                                        contribution=float(A[c]), share=float(max(A[c], 0) / total) if total > 0 else 0.0,
                                        abnormal=False, normal_low=float(lo), normal_median=float(med),
                                        normal_high=float(hi),
                                        position="below" if x[c] < lo else "above" if x[c] > hi else "within"))
            ex = [Exemplar(id=f"exemplar:{h.row_id}", row_id=h.row_id, distance=h.distance,
                           values={ch: float(h.values.reshape(C, w)[c, -1]) for c, ch in enumerate(self.channels)},
                           source=h.source, timestamp=h.timestamp or h.row_id, weight=h.weight) for h in hits[i]]
            deltas = [FeatureDelta(unit=ch, observed=float(x[c]), restored=float(r[c]), delta=float(r[c] - x[c]))
                      for c, ch in enumerate(self.channels)]
            out.append(CaseItems(atts, ex, Restoration(values={d.unit: d.restored for d in deltas}, deltas=deltas)))
        return out

    def compare(self, detector: BaseDetector, X: np.ndarray, Y: np.ndarray, *, other_id: str, p_other: float,
                alpha: float, top: int) -> Comparison:
        """Two windows (rows of channels x window) side by side: per channel, the mean over the window."""
        C, w = len(self.channels), self.window
        ex, ey = detector.embed(X, checked=True)[0], detector.embed(Y, checked=True)[0]
        mx, my = X[0].reshape(C, w).mean(axis=1), Y[0].reshape(C, w).mean(axis=1)
        scale = self.spreads()
        order = np.argsort(-np.abs(my - mx) / scale, kind="stable")[:top]
        return Comparison(
            id=f"compare:{other_id}", other_id=str(other_id), distance=float(np.linalg.norm(ex - ey)),
            other_score=float(detector.decision_function(Y, checked=True)[0]), other_p_value=float(p_other),
            other_anomalous=bool(p_other < alpha),
            differences=[FeatureDifference(unit=self.channels[c], value=float(mx[c]), other=float(my[c]),
                                           difference=float(my[c] - mx[c])) for c in order])

    # ------------------------------------------------------------------ typed claims
    claims = series_claims
    claim_kinds = series_claims.KINDS

    @classmethod
    def unit_claims(cls, evidence: Evidence, unit_id: str, *, with_exemplars: bool = True) -> list[Claim]:
        name = unit_id.split(":", 1)[1]
        seg = [g.id for g in evidence.segments if g.channel == name]
        kinds = ("range", "exemplar_value") if with_exemplars else ("range",)
        return [c for c in series_claims.candidates(evidence) if c.cites and (
            (c.kind in kinds and c.cites[0] == unit_id) or (c.kind == "peak" and c.cites[0] in seg))]


    # ------------------------------------------------------------------ persistence
    def to_config(self) -> dict[str, Any]:
        return {"series": {
            "channels": self.channels, "window": self.window, "period": self.period, "time_column": self.time_column,
            "fill": self.fill, "resample": self.resample, "calibration_size": self.calibration_size,
            "combine": self.combine, "point_score": self.point_score,
            "score_stride": self.score_stride, "calibration": self.calibration, "n_folds": self.n_folds,
            "calibration_mode": self.calibration_mode,
            "time_kind": self.time_kind, "t0": self.t0, "step": self.step, "n_points": self.n_points,
            "quantiles": self.quantiles.tolist(), "profile": self.profile.tolist(),
            "phase": None if self.phase is None else self.phase.tolist(),
            "calibration_scores": self.calibration_scores.tolist(),
            "cell_calibration_scores": self.cell_calibration_scores.tolist(), "channel_limits": self.channel_limits.tolist()}}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "SeriesModality":
        try:
            c = config["series"]
            m = cls(int(c["window"]), time_column=c["time_column"], fill=c["fill"], resample=c["resample"],
                    calibration_size=float(c["calibration_size"]), combine=c.get("combine", "min"),
                    # a model saved before window scores was calibrated on cell scores and keeps them
                    point_score=c.get("point_score", "cell"), score_stride=int(c.get("score_stride", 1)),
                    calibration=c.get("calibration", "split"), n_folds=int(c.get("n_folds", CROSS_FOLDS)))
            m.calibration_mode = str(c.get("calibration_mode", "split"))
            m.channels = [str(x) for x in c["channels"]]
            m.period = None if c["period"] is None else int(c["period"])
            m.time_kind, m.t0, m.step, m.n_points = str(c["time_kind"]), str(c["t0"]), float(c["step"]), int(c["n_points"])
            m.quantiles = np.asarray(c["quantiles"], dtype=np.float64)
            m.profile = np.asarray(c["profile"], dtype=np.float64)
            m.phase = None if c["phase"] is None else np.asarray(c["phase"], dtype=np.float64)
            m.calibration_scores = np.asarray(c["calibration_scores"], dtype=np.float64)
            m.cell_calibration_scores = np.asarray(c.get("cell_calibration_scores", c["calibration_scores"]), dtype=np.float64)
            m.channel_limits = np.asarray(c["channel_limits"], dtype=np.float64)
        except (KeyError, TypeError, ValueError, InputError) as exc:
            raise CheckpointError(f"the series metadata is corrupted ({clip(str(exc), 120)})") from exc
        C = len(m.channels)
        if m.quantiles.shape != (3, C) or m.channel_limits.shape != (C,) or any(
                v.ndim != 1 or len(v) == 0 or not np.isfinite(v).all() for v in (m.calibration_scores, m.cell_calibration_scores)):
            raise CheckpointError(f"the series metadata is corrupted: {C} channels but profiles of shape "
                                  f"{m.quantiles.shape} and {m.channel_limits.shape}")
        return m


def _fold(cells: np.ndarray, count: np.ndarray, A: np.ndarray, starts: np.ndarray, *, mean: bool) -> None:
    """Lay windows' (n, C, w) values ``A``, starting at ``starts``, onto a (C, T) series in place:
    summed with ``count`` (for a mean), or kept as the running minimum."""
    for j in range(A.shape[2]):
        if mean:
            cells[:, starts + j] += A[:, :, j].T  # starts are distinct: no index repeats for one j
            count[starts + j] += 1
        else:
            cells[:, starts + j] = np.minimum(cells[:, starts + j], A[:, :, j].T)
