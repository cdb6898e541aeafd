"""Grouping parsed log lines into **cases**: sessions by an id pattern, or windows of lines or time.

- ``session=r"blk_-?\\d+"``: every line carrying an id joins that id's session (a line with two ids
  joins both, as loghub groups HDFS); lines with no id are counted (``GroupStats.no_session``);
- ``window=200``: tumbling windows of 200 lines (a file's last window may be shorter);
- ``window="5m"`` (any pandas offset: ``30s``, ``1h``): tumbling windows of time, from the lines'
  time fields (a line whose time cannot be read joins the window of the line before it, and is
  counted).

Each case keeps, per line, its template id, its source file and line number, its time text and the
raw text (cut at ``MAX_TEXT`` characters), so every piece of evidence points back to the raw line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from anomalens.errors import InputError
from anomalens.modalities.logs.parser import TimedPattern

__all__ = ["END", "GroupStats", "LogCase", "ScoredCase", "compile_session", "group_lines", "parse_window", "session_ids"]

MAX_TEXT = 500  # characters kept of a line's raw text (the location points to the full line)


@dataclass
class LogCase:
    """One session or window: its lines' template ids, locations, times and (cut) raw texts."""

    key: str
    events: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    linenos: list[int] = field(default_factory=list)
    times: list[str | None] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def add(self, tid: str, source: str, lineno: int, time: str | None, text: str) -> None:
        self.events.append(tid)
        self.sources.append(source)
        self.linenos.append(lineno)
        self.times.append(time)
        self.texts.append(text[:MAX_TEXT])

    def __len__(self) -> int:
        return len(self.events)

    @property
    def start(self) -> str | None:
        return next((t for t in self.times if t), None)

    @property
    def end(self) -> str | None:
        return next((t for t in reversed(self.times) if t), None)

    def location(self, i: int) -> str:
        return f"{self.sources[i]}:{self.linenos[i]}"


@dataclass
class GroupStats:
    cases: int = 0
    no_session: int = 0  # lines without a session id (session grouping)
    untimed: int = 0  # lines whose time could not be read (time windows)


def parse_window(window: int | str | None) -> int | object | None:
    """A line count (int) or a pandas Timedelta from ``200``, ``"200"``, ``"5m"``, ``"30s"``."""
    if window is None:
        return None
    if isinstance(window, bool):
        raise InputError(f"window must be a number of lines (e.g. 200) or a duration (e.g. 5m), got {window!r}")
    if isinstance(window, int) or (isinstance(window, str) and window.strip().isdigit()):
        n = int(window)
        if n < 2:
            raise InputError(f"window must be at least 2 lines, got {n}")
        return n
    import pandas as pd

    try:
        td = pd.Timedelta(str(window).replace("m", "min") if re.fullmatch(r"\d+m", str(window)) else str(window))
    except (ValueError, TypeError) as exc:
        raise InputError(f"window must be a number of lines (e.g. 200) or a duration (e.g. 5m, 30s, 1h), "
                         f"got {window!r}") from exc
    if td <= pd.Timedelta(0):
        raise InputError(f"window must be a positive duration, got {window!r}")
    return td


def group_lines(lines: Iterable[tuple], *, session: str | None = None, window: int | str | None = None,
                stats: GroupStats | None = None, keyed: bool = False) -> Iterator[LogCase]:
    """Cases from ``(template id, LogLine)`` pairs. Sessions are yielded at the end of the input
    (an id may come back any time); windows as soon as they close (memory stays flat).

    ``keyed=True``: the items are ``(template id, LogLine, session ids)`` whose ids were already
    found in the raw line (by a worker that read it; the LogLine may then carry no text)."""
    stats = stats if stats is not None else GroupStats()
    if (session is None) == (window is None):
        raise InputError("give exactly one of session (an id pattern such as 'blk_-?\\d+') or window "
                         "(a number of lines such as 200, or a duration such as 5m)")
    if session is not None:
        rx = compile_session(session)
        yield from _sessions(lines if keyed else ((tid, ln, session_ids(rx, ln.raw)) for tid, ln in lines), stats)
        return
    w = parse_window(window)
    if keyed:
        lines = ((tid, ln) for tid, ln, _ in lines)
    yield from (_count_windows(lines, w, stats) if isinstance(w, int) else _time_windows(lines, w, stats))


def compile_session(session: str) -> TimedPattern:
    """The session id pattern, run with a time limit per line (``TimedPattern``: a pattern that
    backtracks catastrophically is stopped with one clear error instead of hanging the read)."""
    try:
        return TimedPattern(session, "session pattern", ", e.g. 'blk_-?\\d+'")
    except Exception as exc:  # regex.error, or a pattern that is not a string
        raise InputError(f"session must be a regular expression, got {session!r} ({exc})") from exc


def session_ids(rx: TimedPattern, raw: str) -> tuple[str, ...]:
    """The distinct session ids of a raw line, in order of appearance."""
    return tuple(dict.fromkeys(rx.findall(raw)))


def _sessions(lines, stats: GroupStats) -> Iterator[LogCase]:
    cases: dict[str, LogCase] = {}
    for tid, ln, keys in lines:
        if not keys:
            stats.no_session += 1
            continue
        for k in keys:
            case = cases.get(k)
            if case is None:
                case = cases[k] = LogCase(k)
            case.add(tid, ln.source, ln.lineno, ln.time, ln.raw)
    stats.cases += len(cases)
    yield from cases.values()


def _count_windows(lines, n: int, stats: GroupStats) -> Iterator[LogCase]:
    case, k = None, 0
    for tid, ln in lines:
        if case is None:
            k += 1
            case = LogCase(f"window-{k}")
        case.add(tid, ln.source, ln.lineno, ln.time, ln.raw)
        if len(case) >= n:
            stats.cases += 1
            yield case
            case = None
    if case is not None:
        stats.cases += 1
        yield case


class _Clock:
    """Seconds since the epoch of a line's time text: ``datetime.fromisoformat`` first, then the
    strptime format pandas guesses from the first time text that is not ISO (kept for the next
    lines), then pandas' own parser; None when nothing reads it. About 2 microseconds a line for
    ISO-8601 (pandas' ``to_datetime`` on every line takes about 200)."""

    def __init__(self) -> None:
        self.fmt: str | None = None

    def seconds(self, text: str | None) -> float | None:
        from datetime import datetime, timezone

        if not text:
            return None
        t = None
        try:
            t = datetime.fromisoformat(text.strip())
        except ValueError:
            if self.fmt is not None:
                try:
                    t = datetime.strptime(text.strip(), self.fmt)
                except ValueError:
                    t = None
            if t is None:
                import pandas as pd
                from pandas.tseries.api import guess_datetime_format

                self.fmt = guess_datetime_format(text.strip()) or self.fmt
                ts = pd.to_datetime(text, errors="coerce")
                if pd.isna(ts):
                    return None
                t = ts.to_pydatetime()
        if t.tzinfo is None:
            t = t.replace(tzinfo=timezone.utc)
        return t.timestamp()


def _time_windows(lines, width, stats: GroupStats) -> Iterator[LogCase]:
    w = width.total_seconds()
    clock = _Clock()
    case, k, end = None, 0, None
    for tid, ln in lines:
        t = clock.seconds(ln.time)
        if t is None:
            stats.untimed += 1
            if case is None:  # nothing to join yet: it opens the first window
                k += 1
                case = LogCase(f"window-{k}")
            case.add(tid, ln.source, ln.lineno, ln.time, ln.raw)
            continue
        if case is not None and end is not None and t >= end:
            stats.cases += 1
            yield case
            case = None
        if case is None:
            k += 1
            case = LogCase(f"window-{k}")
            end = (t // w) * w + w
        elif end is None:
            end = (t // w) * w + w
        case.add(tid, ln.source, ln.lineno, ln.time, ln.raw)
    if case is not None:
        stats.cases += 1
        yield case


END = "END"  # the expected "event" where the model says the case should have ended


class ScoredCase:
    """A case with its next-event surprises and its count vector, scored by both models."""

    def __init__(self, case, ids: np.ndarray, surprise: np.ndarray, logp: np.ndarray, counts: np.ndarray) -> None:
        self.case, self.ids, self.surprise, self.logp, self.counts = case, ids, surprise, logp, counts
