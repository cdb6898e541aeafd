"""Log triage: ``/v1/investigators/{name}/triage`` (text) and ``.../triage/upload`` (a file, plain or .gz)."""

from __future__ import annotations

import io
import time
from pathlib import Path

from fastapi import APIRouter, File, Request, UploadFile

from anomalens.server.models import TriageResponse
from anomalens.server.runtime import HTTPProblem, Runtime, gunzip, noted, problem_responses

__all__ = ["router"]


def router(rt: Runtime) -> APIRouter:
    """This area's routes over the served app's state ``rt``."""
    api = APIRouter()
    cfg = rt.cfg
    batch_reasoner, batch_note = rt.batch_reasoner, rt.batch_note
    _get, _work = rt.get, rt.work

    async def _triage(name: str, text: str, alpha: float, top: int, source: str = "request") -> TriageResponse:
        inv = _get(name)
        if not inv.modality.reads_text:
            raise HTTPProblem(400, "Bad input", f"investigator {name!r} holds a {inv.modality.name} model; triage needs "
                                             "one fitted on logs")
        n_lines = text.count("\n") + (0 if text.endswith("\n") else 1)
        if n_lines > cfg.max_lines:
            raise HTTPProblem(413, "Request too large", f"logs must be at most {cfg.max_lines} lines per request, "
                                                     f"got {n_lines}")
        if not text.strip():
            raise HTTPProblem(400, "Bad input", "the request holds no log line")

        def job() -> TriageResponse:
            t0 = time.perf_counter()
            stream = io.BytesIO(text.encode("utf-8", errors="replace"))
            stream.name = source  # the lines' file name in the evidence (line:<file>:<n>)
            res = inv.triage(stream, alpha=alpha, limit=top, reasoner=batch_reasoner)
            noted(res.reports, batch_note)
            return TriageResponse(investigator=name, summary=res.summary(), triage=res.to_json(),
                                  seconds=time.perf_counter() - t0)

        return await _work(job)

    @api.post("/v1/investigators/{name}/triage", response_model=TriageResponse, tags=["logs"],
              responses=problem_responses(400, 401, 404, 413, 422, 429, 504),
              openapi_extra={"requestBody": {"required": True, "content": {"text/plain": {"schema": {"type": "string"},
                                                                                            "example": "2024-05-01T10:00:00Z INFO api: started\n"}}}})
    async def triage(name: str, request: Request, alpha: float = 0.05, top: int = 10) -> TriageResponse:
        """Ranked incidents of log lines sent as the request body (text/plain)."""
        if not 0 < alpha < 1 or not 1 <= top <= 100:
            raise HTTPProblem(422, "Invalid request", f"alpha must be in (0, 1) and top in [1, 100], got {alpha} and {top}")
        body = await request.body()
        return await _triage(name, body.decode("utf-8", errors="replace"), alpha, top)

    @api.post("/v1/investigators/{name}/triage/upload", response_model=TriageResponse, tags=["logs"],
              responses=problem_responses(400, 401, 404, 413, 422, 429, 504))
    async def triage_upload(name: str, file: UploadFile = File(..., description="a log file (plain or .gz)"),
                            alpha: float = 0.05, top: int = 10) -> TriageResponse:
        """Ranked incidents of an uploaded log file."""
        if not 0 < alpha < 1 or not 1 <= top <= 100:
            raise HTTPProblem(422, "Invalid request", f"alpha must be in (0, 1) and top in [1, 100], got {alpha} and {top}")
        raw = await file.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gunzip(raw, cfg.max_unpacked)
        return await _triage(name, raw.decode("utf-8", errors="replace"), alpha, top,
                             source=Path(file.filename or "upload").name.removesuffix(".gz"))

    return api
