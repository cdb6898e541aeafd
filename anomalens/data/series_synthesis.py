"""Anomalies injected into a normal multivariate series, with the exact (channel, time) mask.

Each event changes a contiguous span of some channels of a real normal stretch; the rest is kept,
so the ground truth says which channels and which points an explanation must name. Magnitudes are
in robust standard deviations of the channel (IQR / 1.349; the std where the IQR is 0):

- ``spike``: one point per channel moves by 6 to 10 sd (random sign)
- ``level_shift``: the span moves by 4 to 6 sd
- ``trend``: a ramp from 0 to 6-8 sd over the span
- ``frequency``: the span is the channel played at double speed (a shape / frequency change; its
  values stay in range)
- ``noise``: Gaussian noise of 2 to 3 sd added over the span
- ``decoupling``: for a pair of channels that move together in the normal data, one of them is
  replaced over the span by its own values from a random other stretch: each channel's values stay
  normal, their relation breaks (the hardest type)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anomalens.detectors.base import robust_scale
from anomalens.errors import InputError

__all__ = ["SERIES_ANOMALY_TYPES", "SeriesEvent", "factor_series", "inject_series"]

SERIES_ANOMALY_TYPES = ("spike", "level_shift", "trend", "frequency", "noise", "decoupling")


@dataclass(frozen=True)
class SeriesEvent:
    kind: str
    start: int  # first changed point
    end: int  # last changed point
    channels: tuple[int, ...]


def factor_series(T: int, seed: int, *, channels: tuple[str, ...] = ("cpu", "memory", "latency", "disk", "net"),
                  period: int = 48, start: str = "2026-03-01", freq: str = "min"):
    """A normal multivariate series as a DataFrame (one row per ``freq``): each channel a fixed mix
    (the same for every seed) of two periodic factors (``period`` points) and one smoothed noise
    factor, plus a little noise of its own; ``seed`` draws the noise. The tests' and benchmarks'
    normal series: fresh seeds are fresh normal data of the same process."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    t = np.arange(T)
    f = np.column_stack([np.sin(2 * np.pi * t / period), np.cos(2 * np.pi * t / period),
                         np.convolve(rng.normal(size=T), np.ones(12) / 12, mode="same") * 2])
    W = np.random.default_rng(7).normal(size=(3, len(channels)))
    X = f @ W + 0.1 * rng.normal(size=(T, len(channels)))
    return pd.DataFrame(X, columns=list(channels), index=pd.date_range(start, periods=T, freq=freq))


def inject_series(values: np.ndarray, kinds: list[str], *, length: int = 20, n_channels: int = 1, seed: int = 0,
                  margin: int | None = None) -> tuple[np.ndarray, np.ndarray, list[SeriesEvent]]:
    """(changed values, (T, C) bool mask of changed cells, events): one event per entry of ``kinds``,
    spread evenly over the series (``margin`` points apart at least, default 3 x length) in
    ``n_channels`` random channels (``decoupling``: one channel of the most correlated pair)."""
    X = np.array(values, dtype=np.float64, copy=True)
    if X.ndim != 2:
        raise InputError(f"values must be (time, channels), got shape {X.shape}")
    bad = [k for k in kinds if k not in SERIES_ANOMALY_TYPES]
    if bad:
        raise InputError(f"kinds must be in {list(SERIES_ANOMALY_TYPES)}, got {bad[0]!r}")
    T, C = X.shape
    margin = margin or 3 * length
    slot = T // max(1, len(kinds))
    if slot < length + 2 * margin // 2:
        raise InputError(f"a series of {T} points cannot hold {len(kinds)} events of {length} points {margin} apart")
    rng = np.random.default_rng(seed)
    sd = robust_scale(X)[1]  # the detectors' unit: zero spread is relative to the channel's magnitude
    corr = np.corrcoef(values.T) if C > 1 else np.ones((1, 1))
    mask = np.zeros((T, C), dtype=bool)
    events = []
    for i, kind in enumerate(kinds):
        a = i * slot + int(rng.integers(margin // 2, max(margin // 2 + 1, slot - length - margin // 2)))
        b = a + length - 1
        if kind == "decoupling" and C > 1:
            c_ = np.abs(np.nan_to_num(corr)) - np.eye(C)
            p, q = np.unravel_index(np.argmax(c_), c_.shape)
            chans = (int(rng.choice([p, q])),)
        else:
            chans = tuple(int(c) for c in rng.choice(C, size=min(n_channels, C), replace=False))
        for c in chans:
            sign = rng.choice([-1.0, 1.0])
            if kind == "spike":
                t = a + length // 2
                X[t, c] += sign * rng.uniform(6, 10) * sd[c]
                mask[t, c] = True
                continue
            if kind == "level_shift":
                X[a : b + 1, c] += sign * rng.uniform(4, 6) * sd[c]
            elif kind == "trend":
                X[a : b + 1, c] += sign * np.linspace(0, rng.uniform(6, 8), length) * sd[c]
            elif kind == "frequency":
                src = values[a : a + 2 * length : 2, c] if a + 2 * length <= T else values[a - length : a + length : 2, c]
                X[a : b + 1, c] = src[:length]
            elif kind == "noise":
                X[a : b + 1, c] += rng.normal(size=length) * rng.uniform(2, 3) * sd[c]
            elif kind == "decoupling":
                other = int(rng.integers(0, T - length))
                while abs(other - a) < 2 * length:
                    other = int(rng.integers(0, T - length))
                X[a : b + 1, c] = values[other : other + length, c]
            mask[a : b + 1, c] = True
        rows = np.flatnonzero(mask[a : b + 1].any(axis=1)) + a
        events.append(SeriesEvent(kind, int(rows.min()), int(rows.max()), chans))
    return X, mask, events
