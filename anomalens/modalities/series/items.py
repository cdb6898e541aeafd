"""The evidence items a series case contributes (``Evidence.parts``): its **event** and one
**segment** per involved channel. Each says which units it is about, which numbers and times a
claim citing it may state, what a model is shown and how a report shows it."""

from __future__ import annotations

import re
from typing import Any, Literal

from anomalens.schema import Evidence, EvidenceItem, fmt, md, register_item, time_positions

__all__ = ["Event", "Segment"]


@register_item
class Event(EvidenceItem):
    """An anomaly event of a series: a run of flagged time points."""

    kind: Literal["event"] = "event"
    plural = "event"
    single = True

    id: Literal["event"] = "event"
    index: int  # 1, 2, ... in time order within the analysed series
    start: str  # time of the first flagged point (ISO 8601, or the position for a series without timestamps)
    end: str  # time of the last flagged point
    peak: str  # time of the highest point score
    n_points: int
    peak_score: float  # the point score at the peak (the verdict's score)
    channels: list[str]  # channels whose attribution over the event is beyond their normal level, largest first
    note: str | None = None  # e.g. how many missing values the input had filled

    def units(self) -> set[str]:
        return set(self.channels)

    def numbers(self) -> list[float]:
        return [float(self.n_points), self.peak_score, *time_positions(self.start, self.end, self.peak)]

    def stamps(self) -> list[str]:
        return [self.start, self.end, self.peak]

    def label(self) -> str:
        return f"event-{self.index}"

    def brief(self, evidence: Evidence) -> dict[str, Any]:
        return {"event": self.index, "start": self.start, "end": self.end, "points": self.n_points, "peak": self.peak,
                "p_value": evidence.verdict.p_value, "channels": self.channels[:4]}

    def headline(self) -> tuple[str, str]:
        return f"Event {self.index}", f"{self.start} to {self.end} ({self.n_points} points)"

    @classmethod
    def markdown(cls, items: list[EvidenceItem], evidence: Evidence, plot: str | None) -> list[str]:
        e = items[0]
        lines = ["", "## Event", "", f"- {e.n_points} point(s) from {md(e.start)} to {md(e.end)}, peak at {md(e.peak)}",
                 f"- channels involved: {md(', '.join(e.channels) or 'none beyond their normal level')}"]
        lines += [f"- note: {md(e.note)}"] if e.note else []
        if plot and re.fullmatch(r"[\w.-]+\.png", plot):  # a name the plot module wrote, next to the report
            lines += [f"- plot: ![event {e.index}]({plot})"]
        return lines


@register_item
class Segment(EvidenceItem):
    """One channel over an event: observed and restored values, and the channel's most deviating point."""

    kind: Literal["segment"] = "segment"
    plural = "segments"

    id: str  # "segment:<channel>:<start>..<end>"
    channel: str
    start: str
    end: str
    times: list[str]  # the event's times (at most MAX_SEGMENT_POINTS, evenly picked)
    observed: list[float]
    restored: list[float]  # the detector's restoration: what the channel should have looked like
    peak_time: str  # where observed and restored differ most
    peak_value: float  # observed at peak_time
    expected: float  # restored at peak_time
    normal_low: float  # the channel's 1% quantile at that time (the same phase of the period, when there is one)
    normal_high: float  # 99% quantile
    share: float  # the channel's share of the event's attribution

    def units(self) -> set[str]:
        return {self.channel}

    def numbers(self) -> list[float]:
        return [self.peak_value, self.expected, self.normal_low, self.normal_high, self.share, 100 * self.share,
                self.expected - self.peak_value, *time_positions(self.start, self.end, self.peak_time)]

    def stamps(self) -> list[str]:
        return [self.start, self.end, self.peak_time]

    def payload(self) -> dict[str, Any]:
        # the point lists stay out: a model reads the peak, the expected value and the normal range
        return self.model_dump(exclude={"id", "kind", "times", "observed", "restored"})

    @classmethod
    def markdown(cls, items: list[EvidenceItem], evidence: Evidence, plot: str | None) -> list[str]:
        return ["", "| channel | peak time | observed | restored (expected) | normal range (1%-99%) | share |",
                "|---|---|---:|---:|---|---:|",
                *[f"| {md(g.channel)} | {md(g.peak_time)} | {fmt(g.peak_value)} | {fmt(g.expected)} | "
                  f"{fmt(g.normal_low)} to {fmt(g.normal_high)} | {100 * g.share:.1f}% |" for g in items]]
