"""Synthetic service logs with known anomalies, for tests and the explanation benchmark.

A small web service writes ISO-8601 prefixed lines; each request is a session (``sid=<hex>``) that
follows a workflow with variations (cache hit or miss, an optional retry, a variable number of
database reads), sessions interleave in time, and every variable part (ids, addresses, sizes,
durations, paths, users) changes from line to line.

``inject_logs`` changes chosen sessions in one of four ways and records the lines that show it:

- ``foreign``: a line of a template the normal logs never hold (e.g. "disk quota exceeded");
- ``dropped``: a required step removed (the authentication line); the evidence is where the next
  step comes without it;
- ``duplicated``: a step repeated several times (the response sent again and again);
- ``reordered``: two steps swapped (the response sent before the database was read).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ANOMALY_KINDS", "LogSample", "inject_logs", "normal_logs", "SESSION_PATTERN"]

SESSION_PATTERN = r"sid=[0-9a-f]{8}"
ANOMALY_KINDS = ("foreign", "dropped", "duplicated", "reordered")
_USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
_PATHS = ["/api/orders", "/api/users", "/api/cart", "/api/items", "/api/search"]
_FOREIGN = [
    "disk quota exceeded on volume vol{n}, write of {b} bytes failed",
    "certificate for upstream cache-{n}.internal expired, handshake aborted",
    "worker {n} killed by signal 9 after {b} ms",
]


@dataclass
class LogSample:
    """Lines of a synthetic log (``lines``, no line ends), and for each injected session its kind
    and the 1-based numbers of the lines that show the anomaly."""

    lines: list[str]
    anomalies: dict[str, str] = field(default_factory=dict)  # session id -> kind
    evidence_lines: dict[str, list[int]] = field(default_factory=dict)  # session id -> line numbers

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _session(rng: np.random.Generator, sid: str) -> list[str]:
    """The steps of one normal request (messages without time)."""
    ip = f"10.{rng.integers(0, 255)}.{rng.integers(0, 255)}.{rng.integers(1, 255)}"
    path = f"{_PATHS[rng.integers(len(_PATHS))]}/{rng.integers(1, 100000)}"
    steps = [f"INFO api: [sid={sid}] received {'GET' if rng.random() < 0.7 else 'POST'} {path} from {ip}",
             f"INFO auth: [sid={sid}] token accepted for user {_USERS[rng.integers(len(_USERS))]}"]
    key = f"{rng.integers(0, 16**8):08x}"
    if rng.random() < 0.6:
        steps.append(f"INFO cache: [sid={sid}] cache hit for key {key}")
    else:
        steps.append(f"INFO cache: [sid={sid}] cache miss for key {key}")
        for _ in range(int(rng.integers(1, 4))):
            steps.append(f"INFO db: [sid={sid}] query on shard {rng.integers(0, 8)} returned {rng.integers(0, 500)} "
                         f"rows in {rng.integers(1, 90)} ms")
    if rng.random() < 0.1:
        steps.append(f"WARN api: [sid={sid}] upstream slow, retrying attempt {rng.integers(1, 3)}")
    steps.append(f"INFO api: [sid={sid}] rendered response of {rng.integers(200, 90000)} bytes")
    steps.append(f"INFO api: [sid={sid}] sent status 200 in {rng.integers(2, 400)} ms")
    return steps


def _interleave(rng: np.random.Generator, sessions: list[list[str]], start: float) -> tuple[list[str], list[list[int]]]:
    """Lines of concurrent sessions in time order (each session keeps its order), with their
    1-based line numbers per session."""
    import datetime as dt

    events = []
    t = start
    for k, steps in enumerate(sessions):
        t += float(rng.exponential(0.4))
        tt = t
        for j, _ in enumerate(steps):
            tt += float(rng.exponential(0.05))
            events.append((tt, k, j))
    events.sort()
    lines, where = [], [[0] * len(s) for s in sessions]
    for n, (tt, k, j) in enumerate(events, start=1):
        stamp = dt.datetime.fromtimestamp(tt, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        lines.append(f"{stamp} {sessions[k][j]}")
        where[k][j] = n
    return lines, where


def normal_logs(n_sessions: int = 300, *, seed: int = 0, start: float = 1_714_557_600.0) -> LogSample:
    """A normal log of ``n_sessions`` interleaved requests."""
    rng = np.random.default_rng(seed)
    sessions = [_session(rng, f"{rng.integers(0, 16**8):08x}") for _ in range(n_sessions)]
    lines, _ = _interleave(rng, sessions, start)
    return LogSample(lines)


def inject_logs(n_sessions: int = 300, n_anomalies: int = 20, *, kinds: tuple[str, ...] = ANOMALY_KINDS, seed: int = 1,
                start: float = 1_714_600_000.0) -> LogSample:
    """A log of ``n_sessions`` requests, ``n_anomalies`` of them changed (kinds in turn)."""
    rng = np.random.default_rng(seed)
    sids = [f"{rng.integers(0, 16**8):08x}" for _ in range(n_sessions)]
    sessions = [_session(rng, s) for s in sids]
    picked = rng.choice(n_sessions, size=min(n_anomalies, n_sessions), replace=False)
    marks: dict[int, tuple[str, list[int]]] = {}  # session -> kind, step indices that show it
    for i, k in enumerate(picked):
        kind = kinds[i % len(kinds)]
        steps, sid = sessions[k], sids[k]
        if kind == "foreign":
            at = int(rng.integers(1, len(steps)))
            msg = _FOREIGN[int(rng.integers(len(_FOREIGN)))].format(n=rng.integers(1, 99), b=rng.integers(100, 99999))
            steps.insert(at, f"ERROR io: [sid={sid}] {msg}")
            shown = [at]
        elif kind == "dropped":
            del steps[1]  # the authentication step; the next step now comes too early
            shown = [1]
        elif kind == "duplicated":
            last = steps[-1]
            steps += [last] * 3
            shown = [len(steps) - 3, len(steps) - 2, len(steps) - 1]
        elif kind == "reordered":
            a, b = len(steps) - 2, len(steps) - 1  # sent before rendered
            steps[a], steps[b] = steps[b], steps[a]
            shown = [a, b]
        else:
            raise ValueError(f"kind must be one of {ANOMALY_KINDS}, got {kind!r}")
        marks[int(k)] = (kind, shown)
    lines, where = _interleave(rng, sessions, start)
    sample = LogSample(lines)
    for k, (kind, shown) in marks.items():
        sample.anomalies[f"sid={sids[k]}"] = kind
        sample.evidence_lines[f"sid={sids[k]}"] = [where[k][j] for j in shown]
    return sample
