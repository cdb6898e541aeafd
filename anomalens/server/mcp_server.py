"""The MCP server: the investigation tools for LLM agents in other tools (IDEs, desktop assistants),
with the official ``mcp`` SDK (``MCPServer``).

``anomalens mcp DIR [DIR...]`` serves saved investigators on stdio; ``anomalens serve`` serves the
same tools over streamable HTTP at ``/mcp``, behind the REST API's keys. ``investigate`` (CSV rows, a
CSV series whose events become cases, or log text whose incidents do), ``add_case`` (one row) or
``triage_logs`` put cases under investigation, and the tools (each generated from its one
declaration in ``tools/registry.py``) then act on them by id, so a client can ask to compare with case 12 after explaining case 7. Each
tool returns a structured result: the text an agent reads and the evidence item it rests on (the
same JSON as the reports). Bad arguments (an unknown investigator, case, feature or template) come
back as a tool error that lists the valid choices.

Where the cases live (a **workspace**): on stdio one process is one client, so it has one. Over
HTTP many clients share the process, and MCP's 2026 protocol is stateless (no ``mcp-session-id``),
so a client calls ``open_session`` and passes the id it gets as ``session`` to the other tools; a
client of the older, stateful protocol may instead rely on its ``mcp-session-id``. A workspace
belongs to the API key that opened it (another key gets "unknown session"), is dropped after
``session_ttl`` seconds idle, and at most ``max_sessions`` are held (the least recently used goes).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Any, Optional

from mcp.server.mcpserver import Context
from pydantic import Field

from anomalens.errors import InputError

__all__ = ["build_mcp", "Workspaces"]

STDIO = "stdio"
MAX_RESOURCE_UNITS = 500  # units listed in an investigator's resource
MAX_LISTED_CASES = 50  # cases whose verdicts ``investigate`` lists
SessionArg = Annotated[Optional[str], Field(description="the id open_session returned: needed over HTTP, left out on stdio")]


class Workspaces:
    """The cases under investigation per MCP client: ``{workspace: {investigator: toolbox}}``, bounded
    by count (least recently used dropped) and idle time, each bound to the key that opened it."""

    def __init__(self, *, max_sessions: int = 1000, ttl: float = 3600.0) -> None:
        self.max_sessions, self.ttl = int(max_sessions), float(ttl)
        self._spaces: OrderedDict[str, tuple[str, float, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, owner: str, key: str | None = None) -> str:
        """A new workspace (``key`` or a fresh unguessable id) owned by ``owner``; returns its key."""
        key = key or "s-" + secrets.token_urlsafe(18)
        with self._lock:
            self._expire()
            self._spaces[key] = (owner, time.monotonic(), {})
            while len(self._spaces) > self.max_sessions:
                self._spaces.popitem(last=False)
        return key

    def get(self, key: str, owner: str, *, create: bool = False) -> dict[str, Any]:
        """The toolboxes of workspace ``key``; an unknown, expired or foreign one is an ``InputError``
        (``create``: a missing one is opened, for stdio and for stateful-protocol sessions)."""
        with self._lock:
            self._expire()
            got = self._spaces.get(key)
            if got is not None and got[0] == owner:
                self._spaces[key] = (owner, time.monotonic(), got[2])
                self._spaces.move_to_end(key)
                return got[2]
        if create and got is None:
            self.open(owner, key)
            return self.get(key, owner)
        raise InputError(f"session must be an id that open_session returned (sessions end after "
                         f"{self.ttl:.0f} s idle), got {key[:40]!r}")

    def close(self, key: str, owner: str) -> bool:
        with self._lock:
            got = self._spaces.get(key)
            if got is None or got[0] != owner:
                return False
            del self._spaces[key]
            return True

    def _expire(self) -> None:
        now = time.monotonic()
        for k in [k for k, (_, t, _) in self._spaces.items() if now - t > self.ttl]:
            del self._spaces[k]


def _owner(headers: Any) -> str:
    """Who is calling, for workspace ownership: the REST API's ``key_owner`` ('' on stdio)."""
    if headers is None:
        return ""
    from anomalens.server.runtime import key_owner

    return key_owner(headers)


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


def _mcp_tool(spec, call):
    """An MCP tool function for the declared tool ``spec``: the investigator, the tool's own typed
    arguments (their constraints and descriptions kept), the MCP context and the session."""
    import inspect

    def run(**kwargs: Any) -> dict[str, Any]:
        ctx, investigator, session = kwargs.pop("ctx"), kwargs.pop("investigator"), kwargs.pop("session", None)
        return call(ctx, session, investigator, spec.name, **kwargs)

    P = inspect.Parameter
    params = [P("investigator", P.KEYWORD_ONLY, annotation=Annotated[str, Field(description="an investigator's name "
                                                                                      "(list_investigators)")])]
    for fname, f in spec.args.model_fields.items():
        ann = Annotated[(f.annotation, *f.metadata, Field(description=f.description))]
        params.append(P(fname, P.KEYWORD_ONLY, annotation=ann, default=P.empty if f.is_required() else f.default))
    params += [P("ctx", P.KEYWORD_ONLY, annotation=Context), P("session", P.KEYWORD_ONLY, annotation=SessionArg,
                                                               default=None)]
    run.__signature__ = inspect.Signature(params, return_annotation=dict[str, Any])  # type: ignore[attr-defined]
    run.__annotations__ = {**{p.name: p.annotation for p in params}, "return": dict[str, Any]}
    run.__name__ = run.__qualname__ = spec.name
    run.__doc__ = spec.description
    return run


def _image_result(text: str, png: Path):
    """A tool result with the PNG at ``png`` as MCP image content beside its text (a path on the server's
    disk means nothing to a client elsewhere); the file is removed once read."""
    import base64

    from mcp.types import CallToolResult, ImageContent, TextContent

    data = png.read_bytes()
    png.unlink(missing_ok=True)
    return CallToolResult(content=[TextContent(type="text", text=text),
                                   ImageContent(type="image", data=base64.b64encode(data).decode("ascii"),
                                                mime_type="image/png")],
                          structured_content={"text": text, "data": {"mime_type": "image/png", "bytes": len(data)}})


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


def build_mcp(investigators: dict[str, Any], *, reasoner=None, max_sessions: int = 1000, session_ttl: float = 3600.0):
    """An ``MCPServer`` over the investigators ``{name: folder or loaded Investigator}``."""
    from mcp.server.mcpserver import MCPServer

    from anomalens import __version__
    from anomalens.investigator import Investigator
    from anomalens.llm.reasoner import make_reasoner
    from anomalens.tools import Toolbox, make_tool
    from anomalens.tools.registry import TOOLS
    from anomalens.tools.toolbox import toolbox_for

    if any(isinstance(v, (str, Path)) for v in investigators.values()):
        reasoner = reasoner if reasoner is not None else make_reasoner()
    loaded = {name: v if isinstance(v, Investigator) else Investigator.load(v, reasoner=reasoner)
              for name, v in investigators.items()}
    spaces = Workspaces(max_sessions=max_sessions, ttl=session_ttl)

    def boxes_of(ctx: Context, session: str | None) -> dict[str, Any]:
        """The toolboxes of the caller's workspace (see the module docstring)."""
        headers = ctx.headers if ctx is not None else None
        owner = _owner(headers)
        if session:
            return spaces.get(session, owner)
        if headers is None:
            return spaces.get(STDIO, owner, create=True)
        sid = headers.get("mcp-session-id")
        if sid:
            return spaces.get("mcp:" + sid, owner, create=True)
        raise InputError("session is required over HTTP: call open_session and pass the id it returns as 'session'")

    def inv_of(name: str):
        if name not in loaded:
            raise InputError(f"investigator must be one of {sorted(loaded)}, got {name!r}")
        return loaded[name]

    def box_of(boxes: dict[str, Any], name: str):
        inv = inv_of(name)
        if name not in boxes:
            boxes[name] = toolbox_for(inv)(inv)
        return boxes[name]

    def call(ctx: Context, session: str | None, name: str, tool: str, /, **args: Any) -> dict[str, Any]:
        """Run toolbox tool ``tool`` of investigator ``name`` with ``args`` (positional-only parameters, so a
        tool argument may be called ``name`` or ``session``)."""
        box = box_of(boxes_of(ctx, session), name)
        spec = TOOLS[tool]
        if not spec.applies_to(box.investigator.modality.name):
            raise InputError(f"{tool} applies to {sorted(spec.modalities or ())} investigators; {name!r} holds "
                             f"{box.investigator.modality.name} data")
        if not box.case_ids and spec.needs_cases:
            raise InputError(f"no case of {name!r} is under investigation yet: call investigate (CSV rows, a CSV "
                             "series or log text), add_case (one row) or triage_logs (logs) first")
        msg = make_tool(box, spec).invoke({"type": "tool_call", "name": tool, "id": "mcp",
                                  "args": {k: v for k, v in args.items() if v is not None}})
        if getattr(msg, "status", "") == "error":
            raise InputError(str(msg.content))
        if spec.image:  # the artifact is a PNG the tool wrote on this machine: the client gets the picture itself
            return _image_result(str(msg.content), Path(msg.artifact))
        return {"text": str(msg.content), "data": _plain(msg.artifact)}

    server = MCPServer(name="anomalens", version=__version__,
                       instructions="Explainable anomaly analysis. Put a case under investigation (add_case for a row, "
                                    "triage_logs for log text), then explain, compare, restore. Every claim you relay "
                                    "should cite the evidence ids the tools return. Over HTTP, call open_session first "
                                    "and pass its id as 'session' to every other tool.")

    @server.tool(structured_output=True)
    @_guarded
    def open_session(ctx: Context) -> dict[str, Any]:
        """Open a workspace for cases under investigation; pass its id as 'session' to the other tools. It ends
        after an idle hour (or close_session)."""
        return {"session": spaces.open(_owner(ctx.headers)), "idle_timeout_s": spaces.ttl}

    @server.tool(structured_output=True)
    @_guarded
    def close_session(session: str, ctx: Context) -> dict[str, Any]:
        """Close a workspace opened by open_session, dropping its cases."""
        return {"closed": spaces.close(session, _owner(ctx.headers))}

    def summary(name: str) -> dict[str, Any]:
        i = loaded[name]
        return {"name": name, "modality": i.modality.name, "detector": i.detector_name, "units": len(i.feature_names),
                "unit_kind": i.modality.unit_kind, "n_train": i.n_train}

    @server.tool(structured_output=True)
    @_guarded
    def list_investigators() -> dict[str, Any]:
        """The investigators this server holds: name, modality, detector, units (features, channels or templates)."""
        return {"investigators": [summary(n) for n in sorted(loaded)]}

    @server.resource("anomalens://investigators", mime_type="application/json")
    def investigators_resource() -> str:
        """The investigators this server holds (as list_investigators)."""
        import json

        return json.dumps({"investigators": [summary(n) for n in sorted(loaded)]})

    @server.resource("anomalens://investigators/{name}", mime_type="application/json")
    def investigator_resource(name: str) -> str:
        """One investigator: what it holds and each unit's normal range in its training data (1%, median, 99%)."""
        import json

        inv = inv_of(name)
        units = []
        for u in inv.feature_names[:MAX_RESOURCE_UNITS]:
            try:
                p = inv.unit_profile(u)
                units.append({"name": u, "normal_low": p.normal_low, "normal_median": p.normal_median,
                              "normal_high": p.normal_high})
            except InputError:  # a unit without a tabular profile (a series channel may have none)
                units.append({"name": u})
        return json.dumps({**summary(name), "unit_list": units,
                           "units_shown": len(units)}, allow_nan=False, default=float)

    @server.tool(structured_output=True)
    @_guarded
    def add_case(investigator: str, row: dict[str, float], ctx: Context, case_id: str | None = None,
                 session: SessionArg = None) -> dict[str, Any]:
        """Put one row (feature name -> value) under investigation; returns its id and verdict. Later tools take
        the id (the last case added is the one in focus)."""
        box = box_of(boxes_of(ctx, session), investigator)
        if type(box) is not Toolbox:  # a modality whose cases are not rows (series events, log incidents)
            raise InputError(f"investigator {investigator!r} holds {box.investigator.modality.name} data, whose "
                             "cases are not rows: use investigate")
        import pandas as pd

        import numpy as np

        cid = case_id or f"case-{len(box.case_ids) + 1}"
        if cid in box.case_ids:  # the same row again is a retry; other values under a used id are refused
            new, _ = box.investigator.rows(pd.DataFrame([row]))
            if not np.array_equal(new[0], box.row(cid), equal_nan=True):
                raise InputError(f"case_id {cid!r} is already under investigation with other values: pass a new "
                                 "case_id, or leave it out for a fresh one")
            v = box.evidence(cid).verdict
            return {"case_id": cid, "anomalous": v.anomalous, "p_value": v.p_value, "score": v.score}
        box.add_case(pd.DataFrame([row]), cid)
        v = box.evidence(cid).verdict
        return {"case_id": cid, "anomalous": v.anomalous, "p_value": v.p_value, "score": v.score}

    @server.tool(structured_output=True)
    @_guarded
    def investigate(investigator: str, text: str, ctx: Context, top: int = 10, session: SessionArg = None) -> dict[str, Any]:
        """Put data under investigation as the investigator's modality reads it: CSV rows (each row a case),
        a CSV series (its events become cases: event-1, event-2, ...), log text (its ranked incidents:
        incident-1, ...) or images (a JSON object of base64-encoded files by name; each image a case). Replaces the investigator's cases in this session; returns each case's own verdict
        (the first 50; batch_verdicts gives them with the false discovery rate controlled over all)."""
        boxes = boxes_of(ctx, session)
        inv = inv_of(investigator)
        box = toolbox_for(inv).from_text(inv, text, limit=top)
        boxes[investigator] = box
        out = []
        for cid in box.case_ids[:MAX_LISTED_CASES]:
            v = box.evidence(cid).verdict
            out.append({"case_id": cid, "anomalous": v.anomalous, "p_value": v.p_value, "score": v.score})
        return {"modality": inv.modality.name, "cases": len(box.case_ids), "listed": out}

    @server.tool(structured_output=True)
    @_guarded
    def triage_logs(investigator: str, text: str, ctx: Context, top: int = 10, session: SessionArg = None) -> dict[str, Any]:
        """Triage log text with a log investigator: its ranked incidents become the cases under investigation
        (incident-1, incident-2, ...)."""
        boxes = boxes_of(ctx, session)
        inv = inv_of(investigator)
        if not inv.modality.reads_text:
            raise InputError(f"investigator {investigator!r} holds {inv.modality.name} data, not logs")
        box = toolbox_for(inv).from_text(inv, text, limit=top)
        boxes[investigator] = box
        res = box.result
        return {"summary": res.summary(), "incidents": [{"case_id": r.evidence.label(), **(r.evidence.brief() or {})}
                                                        for r in res.reports]}

    for spec in TOOLS.values():  # every declared tool, generated from its one declaration
        if spec.mcp:
            server.add_tool(_guarded(_mcp_tool(spec, call)), name=spec.name, description=spec.description,
                            structured_output=True)

    return server
