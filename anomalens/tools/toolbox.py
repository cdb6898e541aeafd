"""The cases under investigation, by id, and their evidence: what the tools act on.

A ``Toolbox`` holds an ``Investigator``, a table of cases (rows of the data being investigated,
each with an id) and the case in focus. Evidence is computed once per case (every feature's
attribution, so a later question about any feature is answered from the same computation) and
cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from anomalens.errors import InputError
from anomalens.investigator import Investigator
from anomalens.schema import Evidence

__all__ = ["LogToolbox", "SeriesToolbox", "Toolbox", "register_toolbox", "toolbox_for"]


def _csv(text: str, what: str):
    """A CSV text as a DataFrame; a clear error when it is not one."""
    import io

    import pandas as pd

    from anomalens.modalities.tabular import check_csv_header

    if not isinstance(text, str) or not text.strip():
        raise InputError(f"text must be {what} as CSV with a header row, got {text!r:.40}")
    try:
        check_csv_header(io.StringIO(text), "text")
        return pd.read_csv(io.StringIO(text))
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is the text's fault
        raise InputError(f"text must be {what} as CSV with a header row ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from exc


class Toolbox:
    """An Investigator and the cases it investigates.

    Args:
        investigator: a fitted Investigator.
        cases: rows to investigate: a DataFrame (a non-default index gives the ids) or an array.
        ids: case ids for ``cases`` (default: the DataFrame index, else "0", "1", ...).
        focus: the case the tools act on when no id is given (default: the first case).
        alpha: the per-case level of verdicts; k: exemplars per case; top: features in a report.
    """

    def __init__(self, investigator: Investigator, cases: Any = None, ids: Sequence[str] | None = None, *,
                 focus: str | None = None, alpha: float = 0.05, k: int = 5, top: int = 5) -> None:
        self.investigator, self.alpha, self.k, self.top = investigator, alpha, k, top
        self._rows: dict[str, np.ndarray] = {}
        self._evidence: dict[str, Evidence] = {}
        if cases is not None:
            rows, row_ids = investigator.rows(cases)
            names = [str(i) for i in ids] if ids is not None else row_ids or [str(i) for i in range(len(rows))]
            if len(names) != len(rows) or len(set(names)) != len(names):
                raise InputError(f"ids must be {len(rows)} unique case ids, got {len(names)} ({len(set(names))} unique)")
            self._rows = dict(zip(names, rows))
        self.focus = focus if focus is not None else next(iter(self._rows), None)
        if self.focus is not None:
            self.row(self.focus)

    @classmethod
    def from_text(cls, investigator: Investigator, text: str, *, alpha: float = 0.05, k: int = 5, top: int = 5,
                  limit: int = 20) -> Toolbox:
        """The cases in ``text`` as this modality reads them: here CSV rows (ids "0", "1", ...);
        ``limit`` bounds the cases a modality finds itself (events, incidents)."""
        return cls(investigator, _csv(text, "rows"), alpha=alpha, k=k, top=top)

    _case_maps: tuple[str, ...] = ("_rows", "_evidence")  # what a toolbox keeps per case id

    def only(self, case_id: str) -> Toolbox:
        """A toolbox of this investigator holding just ``case_id``, with what was computed for it (its
        evidence): a chat session's box, the same whether built now or from the session's saved case."""
        import copy

        cid = self.resolve(case_id)
        out = copy.copy(self)
        for name in self._case_maps:
            setattr(out, name, {k: v for k, v in getattr(self, name).items() if k == cid})
        out.focus = cid
        if hasattr(out, "result"):
            out.result = None  # a log triage's other incidents are not this case's
        return out

    @property
    def case_ids(self) -> list[str]:
        return list(self._rows)

    def add_case(self, row: Any, case_id: str, *, focus: bool = True) -> str:
        """Add one row under ``case_id`` (replacing a case of that id); it becomes the focus by default."""
        rows, _ = self.investigator.rows(row)
        if len(rows) != 1:
            raise InputError(f"add_case takes one row, got {len(rows)}")
        self._rows[str(case_id)] = rows[0]
        self._evidence.pop(str(case_id), None)
        if focus:
            self.focus = str(case_id)
        return str(case_id)

    def numbered(self, kind: str, number: int, where: str = "", *, field: str | None = None) -> str:
        """The id of the ``number``-th case of ``kind`` (``event-3`` of a series, ``incident-2`` of logs, as
        their flows name them), now in focus; InputError naming ``field`` (``kind``), the valid range (found
        ``where``) and ``number`` otherwise."""
        case_id = f"{kind}-{number}"
        if case_id not in self._rows:
            raise InputError(f"{field or kind} must be one of the {len(self._rows)} {kind}s found{where} (1..{len(self._rows)}), "
                             f"got {number}")
        self.focus = case_id
        return case_id

    def resolve(self, case_id: str | None) -> str:
        """The id of a known case (``None``: the case in focus)."""
        cid = self.focus if case_id is None else str(case_id)
        if cid is None:
            raise InputError("case_id is required: no case is in focus")
        if cid not in self._rows:
            raise InputError(f"case_id must be one of the {len(self._rows)} cases under investigation "
                             f"(e.g. {self.case_ids[:10]}), got {case_id!r}")
        return cid

    def row(self, case_id: str | None = None) -> np.ndarray:
        """(d,) the case's row; ``"exemplar:<row id>"`` reads a stored normal exemplar."""
        if case_id is not None and str(case_id).startswith("exemplar:"):
            return self.investigator.exemplar_row(str(case_id).split(":", 1)[1])
        return self._rows[self.resolve(case_id)]

    def saved_row(self, case_id: str | None = None) -> list[float]:
        """The case's values as a chat checkpoint keeps them (``add_case`` reads them back)."""
        return [float(v) for v in self.row(case_id)]

    def plot(self, case_id: str | None = None):
        """A PNG of the case (the events of a series have one; a row has none)."""
        raise InputError(f"case_id {self.resolve(case_id)!r} is a row of a table: plots are drawn for the events of a series")

    def lines(self, case_id: str | None = None, around: int = 2):
        """A log case's most surprising lines with the lines around them (logs only)."""
        raise InputError(f"case_id {self.resolve(case_id)!r} is not a log case: lines belong to log incidents")

    def template(self, template_id: str):
        """A log template's text, training frequency and typical neighbours (logs only)."""
        raise InputError("templates belong to log investigators; this one investigates "
                         f"{self.investigator.modality.name} data")

    def timeline(self, case_id: str | None = None) -> list[dict]:
        """The cases of a log incident in input order (logs only)."""
        raise InputError(f"case_id {self.resolve(case_id)!r} is not a log incident")

    def full_evidence(self, case_id: str | None = None) -> Evidence:
        """The case's evidence with every feature's attribution (cached)."""
        cid = self.resolve(case_id)
        if cid not in self._evidence:
            self._evidence[cid] = self.investigator.evidence(self._rows[cid], alpha=self.alpha, k=self.k, top=None,
                                                             case_id=cid)
        return self._evidence[cid]

    def evidence(self, case_id: str | None = None) -> Evidence:
        """The case's evidence as a report shows it (the ``top`` features)."""
        ev = self.full_evidence(case_id)
        return ev.model_copy(update={"attributions": ev.attributions[: self.top]})

    def unit_attribution(self, name: str, case_id: str | None = None):
        """One feature's attribution in the case (any feature, not only the top ones)."""
        self.investigator.unit_profile(name)  # validates the name, listing the valid ones
        return next(a for a in self.full_evidence(case_id).attributions if a.unit == name)


class SeriesToolbox(Toolbox):
    """The events of a series as the cases under investigation (``event-1``, ``event-2``, ... as
    ``Investigator.analyze_batch`` numbers them).

    Each event keeps its stretch of series (the event and two windows on each side): a case's
    ``row`` is the window centred on its peak, flattened channel by channel (what ``compare``
    compares; ``exemplar:<start>`` gives the stored (channels, window) one), its ``saved_row`` the
    stretch with each point's position on the training grid (so a saved chat resumes without the
    data file, times and phases included).
    """

    _case_maps = ("_rows", "_evidence", "_stretches")

    def __init__(self, investigator: Investigator, series: Any = None, *, focus: str | None = None,
                 alpha: float = 0.05, k: int = 5, top: int = 5, plot_dir: Any = None) -> None:
        if not investigator.modality.sequential:
            raise InputError("SeriesToolbox takes a series Investigator (modality 'series')")
        self.investigator, self.alpha, self.k, self.top = investigator, alpha, k, top
        self.plot_dir = plot_dir  # where ``plot`` writes (None: a new temporary folder)
        self._rows, self._evidence = {}, {}
        self._stretches: dict[str, Any] = {}
        if series is not None:
            m = investigator.modality
            s = m.read(series, "series")
            where = {s.stamp(i): i for i in range(len(s.values))}
            for ev in investigator.event_evidence(series, alpha=alpha, k=k, top=len(m.channels)):
                a, b = where[ev.event.start], where[ev.event.end]
                lo, hi = max(0, a - 2 * m.window), min(len(s.values), b + 2 * m.window + 1)
                self._keep(ev.case_id, m.frame(s, lo, hi), ev)
        self.focus = focus if focus is not None else next(iter(self._rows), None)
        if self.focus is not None:
            self.resolve(self.focus)

    @classmethod
    def from_text(cls, investigator: Investigator, text: str, *, alpha: float = 0.05, k: int = 5, top: int = 5,
                  limit: int = 20) -> SeriesToolbox:
        """The events of the series in ``text`` (CSV: a time column and the channels)."""
        return cls(investigator, _csv(text, "a series"), alpha=alpha, k=k, top=top)

    def _keep(self, case_id: str, stretch: Any, evidence: Evidence | None) -> None:
        m = self.investigator.modality
        self._stretches[case_id] = stretch
        if evidence is None:
            evidence = self.investigator.evidence(stretch, alpha=self.alpha, k=self.k, top=None, case_id=case_id)
        s = m.read(stretch, "stretch")
        times = [s.stamp(i) for i in range(len(s.values))]
        i = times.index(evidence.event.peak) if evidence.event.peak in times else len(times) // 2
        start = int(np.clip(i - m.window // 2, 0, len(times) - m.window))
        self._rows[case_id] = s.values[start : start + m.window].T.reshape(-1)  # channels x window, as a detector row
        self._evidence[case_id] = evidence

    def plot(self, case_id: str | None = None):
        """Write ``<case id>.png`` (``plots.event_plot`` of the event within its stretch) to ``plot_dir``; its path."""
        import tempfile
        from pathlib import Path

        cid = self.resolve(case_id)
        if self.plot_dir is None:
            self.plot_dir = tempfile.mkdtemp(prefix="anomalens-plots-")
        return self.investigator.plot(self._stretches[cid], Path(self.plot_dir) / f"{cid}.png", alpha=self.alpha, k=self.k)

    def add_case(self, row: Any, case_id: str, *, focus: bool = True) -> str:
        """Add a stretch saved by ``saved_row`` (or a series DataFrame) under ``case_id``."""
        m = self.investigator.modality
        stretch = m.from_saved(row) if not hasattr(row, "columns") else row
        self._keep(str(case_id), stretch, None)
        if focus:
            self.focus = str(case_id)
        return str(case_id)

    def saved_row(self, case_id: str | None = None) -> list[float]:
        return self.investigator.modality.to_saved(self._stretches[self.resolve(case_id)])


class LogToolbox(Toolbox):
    """The incidents of logs as the cases under investigation (``incident-1``, ``incident-2``, ... as
    ``Investigator.triage`` ranks them). Each keeps its strongest case (a session or window: its
    lines, templates and locations), whose evidence is the incident's report; ``row`` is that case
    (``exemplar:<key>`` gives a stored normal session's events), ``saved_row`` its JSON form, so a saved
    chat resumes without the log files."""

    _case_maps = ("_rows", "_evidence", "_timelines")

    def __init__(self, investigator: Investigator, logs: Any = None, *, focus: str | None = None, alpha: float = 0.05,
                 k: int = 5, top: int = 5, limit: int = 20) -> None:
        if not investigator.modality.reads_text:
            raise InputError(f"LogToolbox takes a log Investigator (one that triages), got a {investigator.modality.name} one")
        self.investigator, self.alpha, self.k, self.top = investigator, alpha, k, top
        self._rows, self._evidence = {}, {}
        self._timelines: dict[str, list[dict]] = {}
        self.result = None
        if logs is not None:
            self.result = investigator.triage(logs, alpha=alpha, limit=limit, k=k, top=top)
            for r in self.result.reports:
                cid = r.evidence.label()
                self._rows[cid] = self.result.cases[r.evidence.case_id]
                self._evidence[cid] = r.evidence
                self._timelines[cid] = self.result.timelines[r.evidence.incident.index]
        self.focus = focus if focus is not None else next(iter(self._rows), None)
        if self.focus is not None:
            self.resolve(self.focus)

    @classmethod
    def from_text(cls, investigator: Investigator, text: str, *, alpha: float = 0.05, k: int = 5, top: int = 5,
                  limit: int = 20) -> LogToolbox:
        """The ``limit`` strongest incidents of the log text ``text``."""
        import io

        if not isinstance(text, str):
            raise InputError(f"text must be log text, got {type(text).__name__}")
        return cls(investigator, io.BytesIO(text.encode("utf-8", errors="replace")), alpha=alpha, k=k, top=top,
                   limit=limit)

    def row(self, case_id: str | None = None):
        if case_id is not None and str(case_id).startswith("exemplar:"):
            return self.investigator.exemplar_sequence(str(case_id).split(":", 1)[1])
        return self._rows[self.resolve(case_id)]

    def saved_row(self, case_id: str | None = None) -> dict:
        cid = self.resolve(case_id)
        c = self._rows[cid]
        ev = self._evidence[cid]
        return {"case": {"key": c.key, "events": c.events, "sources": c.sources, "linenos": c.linenos, "times": c.times,
                         "texts": c.texts},
                "incident": None if ev.incident is None else ev.incident.model_dump(mode="json"),
                "timeline": self._timelines.get(cid, [])}

    def add_case(self, row: Any, case_id: str, *, focus: bool = True) -> str:
        """Add a case saved by ``saved_row`` (or a LogCase) under ``case_id``."""
        from anomalens.modalities.logs.cases import LogCase
        from anomalens.modalities.logs.items import Incident

        cid = str(case_id)
        if isinstance(row, LogCase):
            case, incident, timeline = row, None, []
        else:
            try:
                c = row["case"]
                case = LogCase(str(c["key"]))
                for e, src, n, t, txt in zip(c["events"], c["sources"], c["linenos"], c["times"], c["texts"]):
                    case.add(str(e), str(src), int(n), t, str(txt))
                incident = Incident.model_validate(row["incident"]) if row.get("incident") else None
                timeline = list(row.get("timeline") or [])
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(f"a saved log case must be what LogToolbox.saved_row wrote ({exc})") from exc
        ev = self.investigator.evidence(case, alpha=self.alpha, k=self.k, top=self.top)
        self._rows[cid] = case
        self._evidence[cid] = ev.with_items(incident) if incident is not None else ev
        self._timelines[cid] = timeline
        if focus:
            self.focus = cid
        return cid

    def full_evidence(self, case_id: str | None = None) -> Evidence:
        return self._evidence[self.resolve(case_id)]

    def unit_attribution(self, name: str, case_id: str | None = None):
        """A template's part in the case: its attribution when it has one, else its count against its
        normal range with no contribution."""
        from anomalens.schema import Attribution

        ev = self.full_evidence(case_id)
        found = next((a for a in [*ev.attributions, *ev.lookups] if a.unit == name), None)
        if found is not None:
            return found
        p = self.investigator.unit_profile(name)  # validates the name, listing the valid ones
        v = float(sum(e == name for e in self._rows[self.resolve(case_id)].events))
        return Attribution(id=f"event:{name}", unit=name, value=v, contribution=0.0, share=0.0,
                           abnormal=bool(v < p.normal_low or v > p.normal_high), normal_low=p.normal_low,
                           normal_median=p.normal_median, normal_high=p.normal_high,
                           position="below" if v < p.normal_low else "above" if v > p.normal_high else "within")

    def lines(self, case_id: str | None = None, around: int = 2) -> tuple[str, list]:
        """The case's most surprising lines, each with ``around`` lines of the same case before and after."""
        cid = self.resolve(case_id)
        case, ev = self._rows[cid], self._evidence[cid]
        where = {(case.sources[i], case.linenos[i]): i for i in range(len(case))}
        out = []
        for ln in ev.lines:
            i = where.get((ln.source, ln.lineno))
            if i is None:
                continue
            exp = f"; expected {ln.expected} ({ln.expected_probability:.3g})" if ln.expected else ""
            out.append(f"{ln.id} [{ln.template_id}, p={ln.probability:.3g}{exp}]")
            for j in range(max(0, i - around), min(len(case), i + around + 1)):
                mark = ">>" if j == i else "  "
                out.append(f"  {mark} {case.location(j)} {case.events[j]}: {case.texts[j][:300]}")
        return "\n".join(out) or "no line of this case is in its evidence", ev.lines

    def template(self, template_id: str):
        m = self.investigator.modality
        t = m.describe_template(template_id)
        nb = m.neighbours.get(template_id, {"before": [], "after": []})
        return t, nb

    def timeline(self, case_id: str | None = None) -> list[dict]:
        return self._timelines.get(self.resolve(case_id), [])

    def plot(self, case_id: str | None = None):
        raise InputError(f"case_id {self.resolve(case_id)!r} is a log incident: plots are drawn for the events of a series")


class ImageToolbox(Toolbox):
    """Images as the cases under investigation, by name (their pixels at the model's size are the rows)."""

    plot_dir: str | None = None

    @classmethod
    def from_text(cls, investigator: Investigator, text: str, *, alpha: float = 0.05, k: int = 5, top: int = 5,
                  limit: int = 20) -> ImageToolbox:
        """The images in ``text``: a JSON object mapping each image's name to its encoded file (PNG, JPEG,
        TIFF, ...) in base64 (paths are not read: the files of the server's machine are not a client's)."""
        import json

        from anomalens.text import from_base64

        try:
            named = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise InputError('text must be a JSON object {"name.png": "<base64 of the file>", ...} for images') from exc
        if not isinstance(named, dict) or not named or not all(isinstance(v, str) for v in named.values()):
            raise InputError('text must be a non-empty JSON object {"name.png": "<base64 of the file>", ...}')
        images = {str(name): from_base64(b64, f"image {str(name)[:80]!r}") for name, b64 in named.items()}
        return cls(investigator, images, alpha=alpha, k=k, top=top)

    def saved_row(self, case_id: str | None = None) -> dict:
        """The image's pixels at the model's size as a chat checkpoint keeps them (float32, base64: exact)."""
        import base64

        return {"pixels_f32": base64.b64encode(self.row(case_id).astype(np.float32).tobytes()).decode("ascii")}

    def add_case(self, row: Any, case_id: str, *, focus: bool = True) -> str:
        """Add an image (what ``saved_row`` wrote, or anything the modality reads) under ``case_id``."""
        from anomalens.text import from_base64

        if isinstance(row, dict) and "pixels_f32" in row:
            try:
                row = np.frombuffer(from_base64(row["pixels_f32"], "pixels_f32"), dtype=np.float32).astype(np.float64)
            except ValueError as exc:  # not base64 (InputError), or not whole float32 values
                raise InputError(f"the saved image of case {case_id!r} is corrupted ({exc})") from exc
        return super().add_case(row, case_id, focus=focus)

    def region(self, name: str, case_id: str | None = None) -> dict[str, Any]:
        """One region of the case's image: its attribution (any region, not only the top ones), its
        ``RegionLevel`` (zone, box, highest map cell against the normal level) and the normal patch it
        matched (for the regions the evidence holds a match for)."""
        a = self.unit_attribution(name, case_id)  # validates the name, listing the valid ones
        ev = self.full_evidence(case_id)
        level = self.investigator.modality.region_level(ev, name, a.share)
        match = next((x for x in ev.matches if x.region == name), None)
        return {"attribution": a, "level": level, "match": match}

    def plot(self, case_id: str | None = None):
        """Write ``<case id>.png`` (the image, its anomaly map, its restoration, the nearest normal image) to
        ``plot_dir``; its path."""
        import re
        import tempfile
        from pathlib import Path

        cid = self.resolve(case_id)
        if self.plot_dir is None:
            self.plot_dir = tempfile.mkdtemp(prefix="anomalens-plots-")
        stem = re.sub(r"[^\w.-]+", "_", Path(cid).stem)[:80] or "image"
        return self.investigator.picture(self._rows[cid], Path(self.plot_dir) / f"{stem}.png", alpha=self.alpha, k=self.k,
                                         case_id=cid)


TOOLBOXES: dict[str, type[Toolbox]] = {"series": SeriesToolbox, "logs": LogToolbox, "images": ImageToolbox}


def register_toolbox(modality: str, cls: type[Toolbox]) -> None:
    """Make ``cls`` the toolbox of ``modality``'s investigators (a modality without one uses ``Toolbox``:
    its cases are rows)."""
    if not (isinstance(cls, type) and issubclass(cls, Toolbox)):
        raise TypeError(f"a toolbox must be a Toolbox subclass, got {cls!r}")
    TOOLBOXES[modality] = cls


def toolbox_for(investigator: Investigator) -> type[Toolbox]:
    """The toolbox class of ``investigator``'s modality."""
    return TOOLBOXES.get(investigator.modality.name, Toolbox)
