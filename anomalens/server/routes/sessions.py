"""Chat sessions: ``/v1/sessions`` (a case under investigation, kept in SQLite) and their messages
(``?stream=true``: Server-Sent Events)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import threading
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import APIRouter, Request

from anomalens.errors import AnomalensError
from anomalens.server.models import HistoryOut, MessageOut, MessageRequest, SessionOut, SessionRequest
from anomalens.server.runtime import (LIVE_CHATS, Busy, HTTPProblem, Pool, Runtime, Sessions, base64_file, key_owner,
                                      log, numbered, problem_of, problem_responses, read_table, verdict_out)

__all__ = ["router"]


def router(rt: Runtime) -> APIRouter:
    """This area's routes over the served app's state ``rt``."""
    api = APIRouter()
    loaded, cfg, pool, model_pool = rt.loaded, rt.cfg, rt.pool, rt.model_pool
    _get, _work, _busy = rt.get, rt.work, rt.busy
    sessions = Sessions(cfg.state_dir)

    def _box(inv, req: SessionRequest | None = None):
        """A toolbox for the investigator, with the request's case when given: (box, case id)."""
        import pandas as pd

        from anomalens.tools.toolbox import toolbox_for

        box_cls = toolbox_for(inv)  # the investigator's modality's toolbox: its cases are rows, events, incidents, ...
        if req is None:
            return box_cls(inv), None
        if inv.modality.reads_text:
            if req.logs is None or req.incident is None:
                raise HTTPProblem(400, "Bad input", "a log investigator's session needs logs (text) and incident (a number)")
            box = box_cls(inv, io.BytesIO(req.logs.encode("utf-8", errors="replace")), limit=max(req.incident, 20))
            return box, numbered(box, "incident", req.incident)
        if inv.modality.reads_paths:  # images: files the modality reads itself (logs, which read text, are above)
            if req.image is None:
                raise HTTPProblem(400, "Bad input", "an image investigator's session needs image (the file in base64) "
                                                 "and, optionally, image_name")
            name = req.image_name or "image"
            return box_cls(inv, {name: base64_file(req.image, "image")}), name
        if inv.modality.sequential:
            if (req.series is None) == (req.series_csv is None) or req.event is None:
                raise HTTPProblem(400, "Bad input", "a series investigator's session needs one of series (rows) or "
                                                 "series_csv (the CSV text), and event (a number)")
            frame = pd.DataFrame(req.series) if req.series is not None else \
                read_table(req.series_csv.encode("utf-8"), "series.csv")
            box = box_cls(inv, frame)
            return box, numbered(box, "event", req.event)
        if req.row is None:
            raise HTTPProblem(400, "Bad input", "a tabular investigator's session needs row (feature name -> value)")
        box = box_cls(inv, pd.DataFrame([req.row]), ids=["case"], focus="case")
        return box, "case"

    @api.post("/v1/sessions", response_model=SessionOut, status_code=201, tags=["chat"],
              responses=problem_responses(400, 401, 404, 413, 422, 429, 504))
    async def create_session(req: SessionRequest, request: Request) -> SessionOut:
        """Start investigating one case; the session persists (SQLite) and survives a restart. It belongs
        to the API key that made it: another key gets 404 for it."""
        inv = _get(req.investigator)
        owner = key_owner(request.headers)

        def job() -> SessionOut:
            import uuid

            box, case_id = _box(inv, req)
            ev = box.evidence(case_id)
            sid = uuid.uuid4().hex
            sessions.add(sid, req.investigator, case_id, box.saved_row(case_id), owner)
            _keep_live(sid, req.investigator, case_id, box.only(case_id))  # its evidence, computed here, kept
            return SessionOut(id=sid, investigator=req.investigator, case_id=case_id,
                              verdict=verdict_out(case_id, ev.verdict))

        return await _work(job, status=201)

    def _session(sid: str, owner: str) -> tuple[str, str, Any]:
        found = sessions.get(sid, owner)
        if found is None:
            raise HTTPProblem(404, "Not found", f"session {sid[:64]!r} does not exist (or was deleted)")
        if found[0] not in loaded:
            raise HTTPProblem(404, "Not found", f"session {sid[:64]!r} investigates {found[0]!r}, which this server "
                                             "does not hold")
        return found

    # Live chats: a session's toolbox (its case and the evidence computed for it) and its compiled
    # graph stay in this process between messages, so a message neither re-scores the case nor
    # rebuilds the graph; the conversation itself is in the SQLite checkpoint, shared by processes.
    live: collections.OrderedDict[str, tuple[threading.Lock, str, str, Any]] = collections.OrderedDict()
    live_lock = threading.Lock()

    def _keep_live(sid: str, name: str, case_id: str, box: Any) -> tuple[threading.Lock, str, str, Any]:
        from anomalens.agents.chat import ChatSession
        from anomalens.config import get_settings
        from anomalens.llm.reasoner import tool_client, tool_mode

        reasoner = loaded[name].reasoner
        model = tool_client(reasoner)  # a model that calls tools investigates, as in `anomalens chat`
        chat = ChatSession(box, case_id, reasoner=reasoner, model=model, checkpoint=sessions.checkpoint, thread_id=sid,
                           tool_choice=tool_mode(model, get_settings().llm_tool_choice))
        entry = (threading.Lock(), name, case_id, chat)
        with live_lock:
            live[sid] = entry
            while len(live) > LIVE_CHATS:
                _, (lock, _, _, old) = live.popitem(last=False)
                if lock.acquire(blocking=False):  # one in use is closed when it is collected
                    old.close()
                    lock.release()
        return entry

    def _forget_live(sid: str) -> None:
        with live_lock:
            entry = live.pop(sid, None)
        if entry is not None:
            with entry[0]:
                entry[3].close()

    @contextlib.contextmanager
    def _chat(sid: str, owner: str):
        """(investigator name, case id, ChatSession) of a saved session, kept live in this process (its case
        re-added from the session store the first time this process sees it); one turn at a time."""
        name, case_id, row = _session(sid, owner)
        with live_lock:
            entry = live.get(sid)
            if entry is not None:
                live.move_to_end(sid)
        if entry is None:
            box, _ = _box(loaded[name])
            box.add_case(row, case_id)
            entry = _keep_live(sid, name, case_id, box)
        lock, name, case_id, chat = entry
        with lock:
            yield name, case_id, chat

    @api.post("/v1/sessions/{sid}/messages", response_model=MessageOut, tags=["chat"],
              responses={**problem_responses(400, 401, 404, 422, 429, 504),
                         200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                               "description": "with stream=true: Server-Sent Events (call, observation, claim, "
                                              "answer or error)"}})
    async def post_message(sid: str, msg: MessageRequest, request: Request, stream: bool = False):
        """A question or a command (/why, /neighbors 3, /compare exemplar:<id>, ...): the verified answer.

        ``stream=true`` answers with Server-Sent Events as the turn runs: ``call`` (tools the model
        called), ``observation`` (each tool's result), then, once verified, one ``claim`` per verified
        claim and ``answer`` (the same JSON as without streaming); a failure mid-way is an ``error``
        event carrying the problem JSON. Nothing unverified is streamed."""
        owner = key_owner(request.headers)
        _session(sid, owner)
        # a command (/neighbors, /score, ...) runs its tool and the template: no reason to queue for the model
        on = pool if msg.text.lstrip().startswith("/") else model_pool

        def reply_out(reply) -> MessageOut:
            return MessageOut(text=reply.text, tools=reply.tools, explanation=reply.explanation)

        if not stream:
            def job() -> MessageOut:
                with _chat(sid, owner) as (_, _, chat):
                    return reply_out(chat.ask(msg.text))

            return await _work(job, on=on)

        def events() -> Iterator[tuple[str, Any]]:
            with _chat(sid, owner) as (_, _, chat):
                for kind, data in chat.ask_stream(msg.text):
                    yield kind, (reply_out(data).model_dump(mode="json") if kind == "answer" else data)

        return _event_stream(events, on=on)

    def _event_stream(events: Callable[[], Iterator[tuple[str, Any]]], on: Pool):
        """Server-Sent Events from ``events``, produced by a pool worker (admission as for any request:
        429 before the stream starts; past ``timeout`` an ``error`` event with status 504). The wire
        format, keep-alive comments and disconnects are sse-starlette's (a dependency of the MCP SDK)."""
        import json

        from sse_starlette import EventSourceResponse

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = object()

        def job() -> None:
            try:
                for item in events():
                    loop.call_soon_threadsafe(queue.put_nowait, item)
            except AnomalensError as exc:
                p = problem_of(exc)
                loop.call_soon_threadsafe(queue.put_nowait, ("error", {"type": "about:blank", "title": p.title,
                                                                       "status": p.status, "detail": p.detail[:2000]}))
            except Exception as exc:  # noqa: BLE001 - never a stack trace to the client
                log.exception("unhandled error in a streamed chat turn")
                loop.call_soon_threadsafe(queue.put_nowait, ("error", {
                    "type": "about:blank", "title": "Internal error", "status": 500,
                    "detail": f"the server failed on this request ({type(exc).__name__}); see its log"}))
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, done)

        try:
            on.submit(job)
        except Busy:
            raise _busy() from None

        async def body():
            deadline = loop.time() + cfg.timeout
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), max(0.0, deadline - loop.time()))
                except asyncio.TimeoutError:
                    item = ("error", {"type": "about:blank", "title": "Timeout", "status": 504,
                                      "detail": f"the answer took longer than {cfg.timeout:g} s"})
                if item is done:
                    return
                kind, data = item
                yield {"event": kind, "data": json.dumps(data, separators=(",", ":"))}
                if kind == "error":
                    return

        return EventSourceResponse(body(), ping=15, headers={"Cache-Control": "no-store"})

    @api.get("/v1/sessions/{sid}", response_model=HistoryOut, tags=["chat"], responses=problem_responses(401, 404))
    async def get_session(sid: str, request: Request) -> HistoryOut:
        """The conversation so far."""
        owner = key_owner(request.headers)
        _session(sid, owner)

        def job() -> HistoryOut:
            with _chat(sid, owner) as (name, case_id, chat):
                hist = chat.history()
            return HistoryOut(id=sid, investigator=name, case_id=case_id,
                              messages=[{"role": r, "text": t} for r, t in hist])

        return await _work(job)

    @api.delete("/v1/sessions/{sid}", status_code=204, tags=["chat"], responses=problem_responses(401, 404))
    async def delete_session(sid: str, request: Request) -> None:
        """Forget a session (its case and its conversation)."""
        _session(sid, key_owner(request.headers))
        sessions.delete(sid)
        _forget_live(sid)

    return api
