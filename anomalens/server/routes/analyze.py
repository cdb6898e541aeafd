"""Verdicts and reports for rows or a series: ``/v1/investigators/{name}/analyze`` (JSON) and ``.../analyze/upload``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, File, Request, UploadFile

from anomalens.llm.template import TemplateReasoner
from anomalens.server.models import AnalyzeRequest, AnalyzeResponse, ImagesRequest
from anomalens.server.runtime import (INLINE_BODY, Coalescer, HTTPProblem, Runtime, base64_file, noted,
                                      parse_analyze_request, problem_responses, read_table, verdict_out)

__all__ = ["router"]


def router(rt: Runtime) -> APIRouter:
    """This area's routes over the served app's state ``rt``."""
    api = APIRouter()
    loaded, cfg, pool, model_pool, reasoner = rt.loaded, rt.cfg, rt.pool, rt.model_pool, rt.reasoner
    batch_reasoner, batch_note = rt.batch_reasoner, rt.batch_note
    _get, _work, _as_problems = rt.get, rt.work, rt.as_problems

    def _analyze(name: str, rows: Any, req: AnalyzeRequest | None) -> Callable[[], AnalyzeResponse]:
        """The job of an analyze request; ``rows``: a DataFrame, or the request's rows (made a frame in
        the job); ``req`` None: ``rows`` is the whole request, parsed."""
        if req is None:
            req, rows = rows, rows.rows
        if req.ids is not None and len(req.ids) != len(rows):
            raise HTTPProblem(400, "Bad input", f"ids must have one entry per row ({len(rows)}), got {len(req.ids)}")
        if req.ids is not None and len(set(req.ids)) != len(req.ids):
            from collections import Counter

            twice = next(i for i, n in Counter(req.ids).items() if n > 1)
            raise HTTPProblem(400, "Bad input", f"ids must be unique (one case each), got {str(twice)[:64]!r} more than once")
        inv = _get(name)
        if inv.modality.reads_text:  # its cases are read from log text, not rows
            raise HTTPProblem(400, "Bad input", f"investigator {name!r} holds a {inv.modality.name} model: use "
                                             f"/v1/investigators/{name}/triage")
        if len(rows) > cfg.max_rows:
            raise HTTPProblem(413, "Request too large", f"rows must be at most {cfg.max_rows} per request, got {len(rows)}")
        ids = req.ids

        def job() -> AnalyzeResponse:
            import pandas as pd

            t0 = time.perf_counter()
            frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows, index=ids)
            if len(frame) == 1 and ids is None and not req.only_anomalous and not inv.modality.sequential:
                # one row: its own verdict (p < alpha, no batch), and its report when asked
                if req.explain:
                    rep = inv.analyze(frame, alpha=req.alpha, top=req.top, case_id="0")
                    reports, verdicts = [rep], {"0": rep.verdict}
                else:
                    reports, verdicts = [], {"0": inv.evidence(frame, alpha=req.alpha, top=1, case_id="0").verdict}
            else:  # a batch (rows, or a series' events), checked and scored once: verdicts and chosen reports
                verdicts, reports = inv.assess(frame, alpha=req.alpha, top=req.top, ids=ids, reasoner=batch_reasoner,
                                               only_anomalous=req.only_anomalous, limit=req.limit,
                                               explain=req.explain)
            noted(reports, batch_note)
            out = [verdict_out(k, v) for k, v in verdicts.items()]
            return AnalyzeResponse(investigator=name, n_cases=len(out), n_flagged=sum(v.anomalous for v in out),
                                   verdicts=out, reports=reports, seconds=time.perf_counter() - t0,
                                   note=inv.batch_note(len(out), req.alpha))  # serialized once, by _work

        return job

    @api.post("/v1/investigators/{name}/analyze", response_model=AnalyzeResponse, tags=["analyze"],
              responses=problem_responses(400, 401, 404, 413, 422, 429, 504),
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/AnalyzeRequest"}}}}})
    async def analyze(name: str, request: Request) -> AnalyzeResponse:
        """Verdicts for rows (FDR-controlled over a batch; one row: its own p-value against alpha), and
        for each (or the ``limit`` most anomalous) a report with a verified explanation. The body is
        an ``AnalyzeRequest``."""
        raw = await request.body()
        inv = _get(name)
        if len(raw) > INLINE_BODY:  # parsed in the pool: a 1,000-row body is milliseconds the event loop keeps
            return await _work(lambda: _analyze(name, parse_analyze_request(raw), None)())
        req = parse_analyze_request(raw)
        if (len(req.rows) == 1 and req.ids is None and req.explain and not req.only_anomalous
                and not inv.modality.sequential and not inv.modality.reads_text):  # a row: answered with the others
            return await _analyze_one(name, inv, req)
        return await _work(_analyze(name, req.rows, req))

    coalescers = {name: Coalescer(inv) for name, inv in loaded.items()}
    cheap = isinstance(reasoner, TemplateReasoner)  # explanations drafted in the batch's worker; else each in its own job

    async def _analyze_one(name: str, inv: Any, req: AnalyzeRequest) -> Any:
        """One row, explained: answered with the other one-row requests waiting at the time (``Coalescer``)."""
        from fastapi.responses import Response

        t0 = time.perf_counter()

        def respond(report: Any) -> Response:
            v = report.verdict
            out = AnalyzeResponse(investigator=name, n_cases=1, n_flagged=int(v.anomalous), verdicts=[verdict_out("0", v)],
                                  reports=[report], seconds=time.perf_counter() - t0)
            return Response(out.model_dump_json(), media_type="application/json")

        coalescer = coalescers[name]
        with _as_problems():
            fut = coalescer.submit(pool, req.rows[0], req.alpha, req.top,
                                   (lambda ev: respond(inv.report(ev))) if cheap else (lambda ev: ev))
            try:
                answer = await asyncio.wait_for(asyncio.wrap_future(fut), cfg.timeout)
            finally:
                coalescer.withdraw(fut)
        if cheap:
            return answer
        return await _work(lambda: respond(inv.report(answer)), on=model_pool)

    @api.post("/v1/investigators/{name}/analyze/upload", response_model=AnalyzeResponse, tags=["analyze"],
              responses=problem_responses(400, 401, 404, 413, 422, 429, 504))
    async def analyze_upload(name: str, file: UploadFile = File(..., description="a CSV or Parquet file of rows"),
                             alpha: float = 0.05, top: int = 5, limit: int | None = 20, explain: bool = True,
                             only_anomalous: bool = False, id_column: str | None = None) -> AnalyzeResponse:
        """The same as ``analyze`` for an uploaded CSV or Parquet file (a table: the fitted features are read
        and other columns, a label for one, left alone, as the CLI does; ``id_column`` names the cases; a
        series: its time column and channels)."""
        try:
            req = AnalyzeRequest(rows=[{}], alpha=alpha, top=top, limit=limit, explain=explain,
                                 only_anomalous=only_anomalous)
        except ValueError as exc:
            raise HTTPProblem(422, "Invalid request", str(exc).splitlines()[0]) from exc
        inv = _get(name)
        if inv.modality.reads_text:
            raise HTTPProblem(400, "Bad input", f"investigator {name!r} holds a {inv.modality.name} model: use "
                                                f"/v1/investigators/{name}/triage/upload")
        raw = await file.read()
        frame = read_table(raw, file.filename or "upload")
        with _as_problems():  # the modality reads its cases from the table (a table: its fitted features)
            frame, req.ids = inv.modality.from_table(frame, id_column=id_column)
        return await _work(_analyze(name, frame, req))

    def _images(name: str, images: dict[str, bytes], req: Any) -> Callable[[], AnalyzeResponse]:
        """The job of an images request: the lot judged with the false discovery rate, the reports of
        the ``limit`` most anomalous (or only the flagged ones) and, with ``pictures``, each one's PNG."""
        inv = _get(name)
        if not (inv.modality.reads_paths and inv.flow.plots and not inv.modality.reads_text):
            raise HTTPProblem(400, "Bad input", f"investigator {name!r} holds a {inv.modality.name} model: images go to "
                                             "an investigator fitted on images")
        if len(images) > cfg.max_rows:
            raise HTTPProblem(413, "Request too large", f"images must be at most {cfg.max_rows} per request, got {len(images)}")

        def job() -> AnalyzeResponse:
            import base64
            import tempfile
            from pathlib import Path

            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                verdicts, reports = inv.assess(images, alpha=req.alpha, top=req.top, reasoner=batch_reasoner,
                                               only_anomalous=req.only_anomalous, limit=req.limit,
                                               explain=req.explain, plot_dir=tmp if req.pictures and req.explain else None)
                pictures = {r.evidence.case_id: "data:image/png;base64," + base64.b64encode(
                    (Path(tmp) / r.plot).read_bytes()).decode() for r in reports if r.plot}
            noted(reports, batch_note)
            out = [verdict_out(k, v) for k, v in verdicts.items()]
            return AnalyzeResponse(investigator=name, n_cases=len(out), n_flagged=sum(v.anomalous for v in out),
                                   verdicts=out, reports=reports, seconds=time.perf_counter() - t0,
                                   note=inv.batch_note(len(out), req.alpha), pictures=pictures)

        return job

    @api.post("/v1/investigators/{name}/images", response_model=AnalyzeResponse, tags=["analyze"],
              responses=problem_responses(400, 401, 404, 413, 422, 429, 504))
    async def analyze_images(name: str, files: list[UploadFile] = File(..., description="image files (PNG, JPEG, TIFF, ...)"),
                             alpha: float = 0.05, top: int = 5, limit: int | None = 20, explain: bool = True,
                             only_anomalous: bool = False, pictures: bool = True) -> AnalyzeResponse:
        """Images uploaded as files (multipart): verdicts over the lot (Benjamini-Hochberg at ``alpha``),
        the reports of the ``limit`` most anomalous and, with ``pictures``, each one's picture as a PNG
        data URL. A corrupt or non-image file is a 400 naming it, before any work."""
        try:
            req = ImagesRequest(images={"-": "-"}, alpha=alpha, top=top, limit=limit, explain=explain,
                                only_anomalous=only_anomalous, pictures=pictures)
        except ValueError as exc:
            raise HTTPProblem(422, "Invalid request", str(exc).splitlines()[0]) from exc
        images: dict[str, bytes] = {}
        for i, f in enumerate(files):
            key = f.filename or f"image{i}"
            if key in images:
                raise HTTPProblem(400, "Bad input", f"files must have distinct names, got {key[:80]!r} more than once")
            images[key] = await f.read()
        return await _work(_images(name, images, req))

    @api.post("/v1/investigators/{name}/images/json", response_model=AnalyzeResponse, tags=["analyze"],
              responses=problem_responses(400, 401, 404, 413, 422, 429, 504))
    async def analyze_images_json(name: str, req: ImagesRequest) -> AnalyzeResponse:
        """The same as ``images`` with the files in a JSON body, base64-encoded by name (``ImagesRequest``)."""
        images = {key: base64_file(text, f"images[{key[:80]!r}]") for key, text in req.images.items()}
        return await _work(_images(name, images, req))

    return api
