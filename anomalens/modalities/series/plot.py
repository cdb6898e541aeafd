"""Pictures of evidence, for people: one PNG per event of a series.

``event_plot`` draws, for an event: each involved channel over a context around the event (the
event shaded, the channel's normal 1%-99% band, the restored values over the event, the nearest
normal window from the exemplar store at the peak's window), and a channel x time heat map of the
attribution over the same context. Channel names are untrusted text: matplotlib draws them as
plain text (``usetex`` off, math text escaped), clipped to a readable length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from anomalens.schema import Evidence, fmt
from anomalens.text import clip, strip_control

__all__ = ["event_plot"]

MAX_CHANNELS = 4  # channel panels per picture


def _label(name: str) -> str:
    """Untrusted text drawn as plain text: no control characters, no math text."""
    return clip(strip_control(str(name)), 40).replace("$", r"\$")


def event_plot(path: str | Path, scores: Any, span: tuple[int, int], evidence: Evidence, modality: Any, *,
               restored: np.ndarray, hits: list, window_start: int) -> Path:
    """Write the PNG of one event to ``path`` (see the module docstring); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, cells = scores.series, scores.cells
    a, b = span
    T, w = len(s.values), modality.window
    pad = max(2 * w, b - a + 1)
    lo, hi = max(0, a - pad), min(T, b + pad + 1)
    x = np.arange(lo, hi)
    names = modality.channels
    shown = [names.index(c) for c in (evidence.event.channels or [evidence.attributions[0].unit])][:MAX_CHANNELS]
    fig, axes = plt.subplots(len(shown) + 1, 1, figsize=(11, 2.3 * len(shown) + 2.6), sharex=True,
                             gridspec_kw={"height_ratios": [3] * len(shown) + [2]})
    axes = np.atleast_1d(axes)
    pos = modality.positions(s.times[lo:hi])
    ex = hits[0].values.reshape(len(names), w) if hits else None
    for ax, c in zip(axes, shown):
        band = np.array([modality.normal_at(c, p) for p in pos])
        ax.fill_between(x, band[:, 0], band[:, 2], color="#cfe3cf", label="normal range (1%-99%)", step="mid")
        ax.axvspan(a - 0.5, b + 0.5, color="#f7c6c6", alpha=0.6, label="event")
        ax.plot(x, s.values[lo:hi, c], color="#1f3b73", lw=1.2, label="observed")
        ax.plot(np.arange(a, b + 1), restored[c, a : b + 1], color="#d9480f", lw=1.6, ls="--",
                label="restored (expected)")
        if ex is not None:
            ax.plot(np.arange(window_start, window_start + w), ex[c], color="#555555", lw=1, ls=":",
                    label=f"nearest normal window ({_label(hits[0].row_id)})")
        ax.set_ylabel(_label(names[c]), rotation=0, ha="right", va="center")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower left", bbox_to_anchor=(0, 1.0), fontsize=7, ncol=5, frameon=False)
    heat = axes[-1]
    order = [names.index(at.unit) for at in evidence.attributions]
    rows = order + [i for i in range(len(names)) if i not in order]
    rows = rows[:12]
    img = heat.imshow(cells[rows, lo:hi], aspect="auto", cmap="magma_r", interpolation="nearest",
                      extent=(lo - 0.5, hi - 0.5, len(rows) - 0.5, -0.5))
    heat.set_yticks(range(len(rows)), [_label(names[i]) for i in rows], fontsize=7)
    heat.axvline(a - 0.5, color="#1f77b4", lw=1)
    heat.axvline(b + 0.5, color="#1f77b4", lw=1)
    heat.set_ylabel("attribution", rotation=0, ha="right", va="center")
    fig.colorbar(img, ax=heat, fraction=0.02, pad=0.01)
    ticks = np.linspace(lo, hi - 1, 6).round().astype(int)
    heat.set_xticks(ticks, [s.stamp(t).replace("T", "\n") for t in ticks], fontsize=7)
    e, v = evidence.event, evidence.verdict
    fig.suptitle(f"Event {e.index}: {e.start} to {e.end} ({e.n_points} points), peak {e.peak}; "
                 f"p = {fmt(v.p_value)}{' (flagged)' if v.anomalous else ' (not flagged)'}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
