"""The MCP server: the investigation tools for LLM agents in other tools (IDEs, desktop assistants),
with the official ``mcp`` SDK (``MCPServer``).

``anomalens mcp DIR [DIR...]`` serves saved investigators on stdio. One process is one MCP session,
so the investigation is kept for the session: ``add_case`` (a row) or ``triage_logs`` (log text: its
incidents become cases) put cases under investigation, and the tools then act on them by id, so a
client can ask to compare with case 12 after explaining case 7. Each tool returns a structured
result: the text an agent reads and the evidence item it rests on (the same JSON as the reports).
Bad arguments (an unknown investigator, case, feature or template) come back as a tool error that
lists the valid choices.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from anomalens.errors import InputError

__all__ = ["build_mcp"]


def _plain(x: Any) -> Any:
    """A tool artifact as JSON-able data."""
    from pydantic import BaseModel

    if isinstance(x, BaseModel):
        return x.model_dump(mode="json")
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    return x


def _guarded(fn):
    """A tool whose bad-argument errors reach the client as a tool error with their message."""
    import functools

    from mcp.server.mcpserver.exceptions import ToolError

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            raise ToolError(str(exc)) from exc

    return run


def build_mcp(investigators: dict[str, str | Path], *, reasoner=None):
    """An ``MCPServer`` over the saved investigators ``{name: folder}``."""
    from mcp.server.mcpserver import MCPServer

    from anomalens import __version__
    from anomalens.investigator import Investigator
    from anomalens.llm.reasoner import make_reasoner
    from anomalens.tools import LogToolbox, SeriesToolbox, Toolbox, make_tools

    reasoner = reasoner if reasoner is not None else make_reasoner()
    loaded = {name: Investigator.load(path, reasoner=reasoner) for name, path in investigators.items()}
    boxes: dict[str, Any] = {}  # investigator -> the toolbox of this session's cases

    def inv_of(name: str):
        if name not in loaded:
            raise InputError(f"investigator must be one of {sorted(loaded)}, got {name!r}")
        return loaded[name]

    def box_of(name: str):
        inv = inv_of(name)
        if name not in boxes:
            boxes[name] = (LogToolbox(inv) if inv.modality.name == "logs" else SeriesToolbox(inv)
                           if inv.modality.sequential else Toolbox(inv))
        return boxes[name]

    def call(name: str, tool: str, **args: Any) -> dict[str, Any]:
        box = box_of(name)
        if not box.case_ids and tool not in ("list_detectors", "describe_detector", "describe_template"):
            raise InputError(f"no case of {name!r} is under investigation yet: call add_case (rows) or triage_logs "
                             "(logs) first")
        tools = {t.name: t for t in make_tools(box)}
        msg = tools[tool].invoke({"type": "tool_call", "name": tool, "id": "mcp",
                                  "args": {k: v for k, v in args.items() if v is not None}})
        if getattr(msg, "status", "") == "error":
            raise InputError(str(msg.content))
        return {"text": str(msg.content), "data": _plain(msg.artifact)}

    server = MCPServer(name="anomalens", version=__version__,
                       instructions="Explainable anomaly analysis. Put a case under investigation (add_case for a row, "
                                    "triage_logs for log text), then explain, compare, restore. Every claim you relay "
                                    "should cite the evidence ids the tools return.")

    @server.tool(structured_output=True)
    @_guarded
    def list_investigators() -> dict[str, Any]:
        """The investigators this server holds: name, modality, detector, units (features, channels or templates)."""
        return {"investigators": [{"name": n, "modality": i.modality.name, "detector": i.detector_name,
                                   "units": len(i.feature_names), "unit_kind": i.modality.unit_kind, "n_train": i.n_train}
                                  for n, i in sorted(loaded.items())]}

    @server.tool(structured_output=True)
    @_guarded
    def add_case(investigator: str, row: dict[str, float], case_id: str | None = None) -> dict[str, Any]:
        """Put one row (feature name -> value) under investigation; returns its id and verdict. Later tools take
        the id (the last case added is the one in focus)."""
        box = box_of(investigator)
        if isinstance(box, (LogToolbox, SeriesToolbox)):
            raise InputError(f"investigator {investigator!r} holds {box.investigator.modality.name} data: use "
                             "triage_logs for logs")
        import pandas as pd

        cid = case_id or f"case-{len(box.case_ids) + 1}"
        box.add_case(pd.DataFrame([row]), cid)
        v = box.evidence(cid).verdict
        return {"case_id": cid, "anomalous": v.anomalous, "p_value": v.p_value, "score": v.score}

    @server.tool(structured_output=True)
    @_guarded
    def triage_logs(investigator: str, text: str, top: int = 10) -> dict[str, Any]:
        """Triage log text with a log investigator: its ranked incidents become the cases under investigation
        (incident-1, incident-2, ...)."""
        inv = inv_of(investigator)
        if inv.modality.name != "logs":
            raise InputError(f"investigator {investigator!r} holds {inv.modality.name} data, not logs")
        box = LogToolbox(inv, io.BytesIO(text.encode("utf-8", errors="replace")), limit=top)
        boxes[investigator] = box
        res = box.result
        return {"summary": res.summary(), "incidents": [
            {"case_id": f"incident-{r.evidence.incident.index}", "p_value": r.evidence.incident.p_value,
             "cases": r.evidence.incident.n_cases, "lines": r.evidence.incident.n_lines,
             "templates": r.evidence.incident.templates[:5], "never_seen": r.evidence.incident.unseen[:5]}
            for r in res.reports]}

    @server.tool(structured_output=True)
    @_guarded
    def score_case(investigator: str, case_id: str | None = None) -> dict[str, Any]:
        """The calibrated verdict of a case: anomalous or not, score, p-value."""
        return call(investigator, "score_case", case_id=case_id)

    @server.tool(structured_output=True)
    @_guarded
    def explain_case(investigator: str, case_id: str | None = None, top: int = 5) -> dict[str, Any]:
        """The units (features, channels, templates) most responsible for a case's score, with normal ranges."""
        return call(investigator, "explain_case", case_id=case_id, top=top)

    @server.tool(structured_output=True)
    @_guarded
    def nearest_exemplars(investigator: str, case_id: str | None = None, k: int = 5) -> dict[str, Any]:
        """The nearest normal exemplars of a case (normal training cases most like it)."""
        return call(investigator, "nearest_exemplars", case_id=case_id, k=k)

    @server.tool(structured_output=True)
    @_guarded
    def restore_case(investigator: str, case_id: str | None = None) -> dict[str, Any]:
        """A case's normal version: what the model says it should have looked like."""
        return call(investigator, "restore_case", case_id=case_id)

    @server.tool(structured_output=True)
    @_guarded
    def compare_cases(investigator: str, other_id: str, case_id: str | None = None) -> dict[str, Any]:
        """A case beside another case under investigation, or a normal exemplar ('exemplar:<id>')."""
        return call(investigator, "compare_cases", other_id=other_id, case_id=case_id)

    @server.tool(structured_output=True)
    @_guarded
    def describe_feature(investigator: str, name: str, case_id: str | None = None) -> dict[str, Any]:
        """A unit's normal range in the training data and its value and part in a case."""
        return call(investigator, "describe_feature", name=name, case_id=case_id)

    @server.tool(structured_output=True)
    @_guarded
    def batch_verdicts(investigator: str, alpha: float = 0.05) -> dict[str, Any]:
        """Verdicts for every case under investigation, controlling the false discovery rate."""
        return call(investigator, "batch_verdicts", alpha=alpha)

    @server.tool(structured_output=True)
    @_guarded
    def show_lines(investigator: str, case_id: str | None = None, around: int = 2) -> dict[str, Any]:
        """A log incident's most surprising lines (template, probability, expected template) in context."""
        return call(investigator, "show_lines", case_id=case_id, around=around)

    @server.tool(structured_output=True)
    @_guarded
    def describe_template(investigator: str, template_id: str) -> dict[str, Any]:
        """A log template: its text, how often normal logs hold it, its usual neighbours."""
        return call(investigator, "describe_template", template_id=template_id)

    @server.tool(structured_output=True)
    @_guarded
    def incident_timeline(investigator: str, case_id: str | None = None) -> dict[str, Any]:
        """A log incident's cases in order, with span, lines, p-value and most abnormal template."""
        return call(investigator, "incident_timeline", case_id=case_id)

    return server
