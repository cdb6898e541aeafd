"""The REST API: saved investigators served by name under ``/v1``, with API keys, problem+json errors,
request limits and a bounded work pool.

    app = create_app({"metrics": "model/"}, api_keys=["s3cret"])   # or: anomalens serve model/ --api-key-file keys

Routes: ``GET /health`` (no key), ``GET /ready``, ``GET /v1/investigators``, ``GET /v1/investigators/{name}``,
``POST /v1/investigators/{name}/analyze`` (JSON rows) and ``.../analyze/upload`` (a CSV or Parquet file),
``POST /v1/investigators/{name}/triage`` (log text, or ``.../triage/upload``), chat sessions under
``/v1/sessions`` (``?stream=true`` on a message: Server-Sent Events), the web page at ``/`` and, with
one process, the MCP tools over streamable HTTP at ``/mcp`` (``mcp_server``). Reports are the same
JSON as ``Report.model_dump_json()``; errors are ``application/problem+json`` with the messages the
CLI prints, never a stack trace.

Bounds: scoring runs in a pool of ``workers`` threads with at most ``queue`` requests waiting; past that
the answer is 429 with ``Retry-After`` (refused at the door, before the body is read, when the pool is
already full). Concurrent one-row analyze requests are answered together (``Coalescer``), each as if
alone. A request that runs past ``timeout`` seconds is answered 504
(its work finishes in the pool, which stays bounded). Bodies beyond ``max_body`` bytes are 413 before
they are read; batches beyond ``max_rows`` rows or ``max_lines`` log lines are 413 too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import io
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from anomalens import __version__
from anomalens.errors import AnomalensError, BackendError, CheckpointError, InputError

__all__ = ["ServeConfig", "app_from_env", "create_app", "presented_key", "process_app"]

ENV_SPEC = "ANOMALENS_SERVE_SPEC"  # JSON {"investigators": {...}, "config": {...}} for worker processes

log = logging.getLogger("anomalens.server")

PROBLEM = "application/problem+json"
DOCS_ASSETS = "/docs-assets"  # Swagger UI's files, for /docs

# How long a thread may hold the GIL before another that waits for it gets it (CPython's default:
# 5 ms). The event loop gives the GIL back at every socket call and waits up to this long to get it
# again from a scoring thread, several times per request; a shorter interval keeps /health and the
# small requests answered while the workers are busy.
SWITCH_INTERVAL = 0.001


class ServeConfig(BaseModel):
    """Limits and security of a served app."""

    model_config = ConfigDict(extra="forbid")

    api_keys: list[str] = Field(default_factory=list)  # empty: no key needed (only with no_auth)
    no_auth: bool = False
    workers: int = Field(2, ge=1, le=64)  # scoring threads
    queue: int = Field(16, ge=0, le=10_000)  # requests that may wait for a worker; beyond: 429
    timeout: float = Field(60.0, gt=0)  # seconds a request may run; beyond: 504
    max_body: int = Field(32 * 1024 * 1024, ge=1024)  # bytes of a request body; beyond: 413
    max_rows: int = Field(100_000, ge=1)  # rows of one analyze request
    max_lines: int = Field(1_000_000, ge=1)  # log lines of one triage request
    max_unpacked: int = Field(256 * 1024 * 1024, ge=1024)  # bytes a .gz upload may unpack to; beyond: 413
    cors_origins: list[str] = Field(default_factory=list)  # empty: CORS off
    state_dir: str | None = None  # where chat sessions persist (SQLite); None: a temporary folder
    mcp: bool = True  # the MCP tools over streamable HTTP at /mcp (their workspaces live in this process)
    host: str = "127.0.0.1"  # the address served: on loopback /mcp refuses other Host and Origin headers
    # torch threads of a server process (``use_threads``): a request is a few rows, too small for
    # intra-op parallelism, and the cores are shared by the workers and processes
    torch_threads: int = Field(1, ge=1, le=256)


# ---------------------------------------------------------------- API models
class InvestigatorInfo(BaseModel):
    name: str
    modality: str
    detector: str
    units: int
    unit_kind: str
    n_train: int
    exemplars: int
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "name": "metrics", "modality": "tabular", "detector": "ensemble", "units": 4, "unit_kind": "feature",
        "n_train": 600, "exemplars": 600}]})


class AnalyzeRequest(BaseModel):
    """Rows to analyze: each a mapping of feature name to value (a series: a time column and channels,
    in time order; logs: use the triage route)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "rows": [{"cpu": 0.2, "memory": 9.0, "latency": 0.1, "errors": 0.0}], "alpha": 0.05, "top": 5,
        "explain": True}]})

    rows: list[dict[str, float | int | str | None]] = Field(min_length=1)
    ids: list[str] | None = None  # one per row (default: "0", "1", ...)
    alpha: float = Field(0.05, gt=0, lt=1)  # false discovery rate of the batch (per-case level for one row)
    top: int = Field(5, ge=1, le=50)  # units per report
    limit: int | None = Field(20, ge=1, le=1000)  # reports for the most anomalous cases only (verdicts: every case)
    only_anomalous: bool = False
    explain: bool = True  # False: verdicts only


class VerdictOut(BaseModel):
    case_id: str
    anomalous: bool
    score: float
    p_value: float
    cutoff: float
    approximate: bool
    note: str | None = None


class AnalyzeResponse(BaseModel):
    investigator: str
    n_cases: int
    n_flagged: int
    verdicts: list[VerdictOut]
    reports: list[dict[str, Any]]  # Report JSON (``Report.model_dump(mode="json")``); empty with explain=false
    seconds: float
    # e.g. that this batch is too large for one anomalous row alone to be flagged (Investigator.batch_note)
    note: str | None = None


class TriageResponse(BaseModel):
    investigator: str
    summary: str
    triage: dict[str, Any]  # ``Triage.to_json()``: counters, incidents (Report JSON), timelines
    seconds: float


class SessionRequest(BaseModel):
    """The case a chat session investigates: a row (tabular), a series and one of its events, or log
    text and one of its incidents (as triage ranks them)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "investigator": "metrics", "row": {"cpu": 0.2, "memory": 9.0, "latency": 0.1, "errors": 0.0}}]})

    investigator: str
    row: dict[str, float | int | str | None] | None = None  # the modality checks the values
    series: list[dict[str, float | int | str | None]] | None = None
    # or the series as the CSV text that was uploaded: read as analyze/upload reads it, so the session's
    # event is the upload's, p-value included (rows parsed by a browser can differ in the last digit)
    series_csv: str | None = Field(None, max_length=50_000_000)
    event: int | None = Field(None, ge=1)
    logs: str | None = Field(None, max_length=50_000_000)
    incident: int | None = Field(None, ge=1)


class SessionOut(BaseModel):
    id: str
    investigator: str
    case_id: str
    verdict: VerdictOut


class MessageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"text": "why is this anomalous?"},
                                                                             {"text": "/neighbors 3"}]})

    text: str = Field(min_length=1, max_length=2000)  # a question, or a command such as /why, /neighbors 3


class MessageOut(BaseModel):
    text: str  # the verified answer as shown to the analyst (or a tool's text, or an error observation)
    explanation: dict[str, Any] | None  # the Explanation JSON: verified claims with their citations
    tools: list[str]


class HistoryOut(BaseModel):
    id: str
    investigator: str
    case_id: str
    messages: list[dict[str, str]]  # {"role": "user" | "assistant" | "call" | "tool", "text": ...}


class Problem(BaseModel):
    """An error (RFC 9457 problem details)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "type": "about:blank", "title": "Bad input", "status": 400,
        "detail": "case columns must be the training features; missing ['latency'], unexpected []"}]})


class Health(BaseModel):
    status: str
    version: str


class Ready(BaseModel):
    ready: bool
    investigators: dict[str, str]  # name -> "ok" or why not
    reasoner: str


# ---------------------------------------------------------------- the pool
class Busy(Exception):
    """The work pool and its queue are full."""


class Pool:
    """``workers`` threads of its own and at most ``queue`` jobs waiting; ``run`` raises Busy beyond that.

    Its own threads (not the event loop's default executor): a fixed set that is warmed once
    (``warm``: the first torch call of a new thread takes seconds), and the event loop, which only
    parses requests and answers ``/health``, never waits for a worker."""

    def __init__(self, workers: int, queue: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.workers, self.queue = workers, queue
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="anomalens-work")
        self._lock = threading.Lock()
        self._admitted = 0  # running + waiting

    def warm(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` once in every worker thread (a barrier keeps each on its own thread)."""
        barrier = threading.Barrier(self.workers)

        def job() -> None:
            barrier.wait(timeout=60)
            fn()

        for f in [self._executor.submit(job) for _ in range(self.workers)]:
            f.result()

    def full(self) -> bool:
        """Whether ``submit`` would refuse a job now."""
        with self._lock:
            return self._admitted >= self.workers + self.queue

    def submit(self, fn: Callable[[], Any]) -> asyncio.Future:
        """Admit ``fn`` (Busy at once when workers + queue are taken) and run it in a worker."""
        with self._lock:
            if self._admitted >= self.workers + self.queue:
                raise Busy
            self._admitted += 1

        def job() -> Any:
            try:
                return fn()
            finally:
                with self._lock:
                    self._admitted -= 1

        return asyncio.get_running_loop().run_in_executor(self._executor, job)

    async def run(self, fn: Callable[[], Any], timeout: float) -> Any:
        return await asyncio.wait_for(asyncio.shield(self.submit(fn)), timeout)


class Coalescer:
    """Concurrent one-row analyze requests of one investigator, answered together (dynamic batching,
    as model servers do).

    A request adds its case; when no job of this coalescer is waiting for a worker, it submits one
    to the Pool (``submit``). A job takes every case waiting when it starts (up to ``limit``) and
    answers them with one ``Investigator.evidence_each``: the detector, the calibration and the store
    run once over all of them, and each case is still judged on its own (p < alpha). A single row is
    mostly per-call overhead (the default detector: ~10 ms for one row, ~18 ms for eight), so under
    load the cost per request falls; alone, a request is answered as before. The cases that arrive
    while a job runs wait for the next one. At most ``limit`` cases wait: past that, and when the Pool
    refuses the job, the request is Busy (429). ``finish(evidence)`` (run in the worker) turns a
    case's evidence into its answer."""

    def __init__(self, investigator: Any, limit: int = 32) -> None:
        self.investigator, self.limit = investigator, limit
        self._lock = threading.Lock()
        self._waiting: list[tuple[dict, float, int, Callable[[Any], Any], Future]] = []
        self._scheduled = False  # a job is submitted and has not started yet

    def submit(self, pool: Pool, row: dict, alpha: float, top: int, finish: Callable[[Any], Any]) -> Future:
        """Queue one row; its future gets ``finish(evidence)``, or the error that analysing it raised.

        Raises:
            Busy: ``limit`` cases already wait, or the pool has no room for the job that would answer them.
        """
        fut: Future = Future()
        with self._lock:
            if len(self._waiting) >= self.limit:
                raise Busy
            self._waiting.append((row, alpha, top, finish, fut))
            if self._scheduled:
                return fut
            self._scheduled = True
        try:
            pool.submit(self._job).add_done_callback(lambda j: j.cancelled() or j.exception())
        except Busy:  # no job will take the waiting cases: each of their requests is told the server is busy
            with self._lock:
                refused, self._waiting, self._scheduled = self._waiting, [], False
            for w in refused:
                if w[4] is not fut and w[4].set_running_or_notify_cancel():
                    w[4].set_exception(Busy())
            raise
        return fut

    def withdraw(self, fut: Future) -> None:
        """Drop a case whose request gave up (if no job has taken it yet)."""
        with self._lock:
            self._waiting = [w for w in self._waiting if w[4] is not fut]

    def _job(self) -> None:
        with self._lock:
            taken, self._waiting = self._waiting[:self.limit], self._waiting[self.limit:]
            self._scheduled = False  # the cases that come now need a job of their own
        taken = [w for w in taken if w[4].set_running_or_notify_cancel()]  # not those whose request gave up
        groups: dict[tuple[float, int], list] = {}
        for w in taken:
            groups.setdefault((w[1], w[2]), []).append(w)
        for (alpha, top), cases in groups.items():
            self._answer(cases, alpha, top)

    def _answer(self, cases: list, alpha: float, top: int) -> None:
        import pandas as pd

        try:
            evs = self.investigator.evidence_each([pd.DataFrame([c[0]]) for c in cases], alpha=alpha, top=top,
                                                  case_ids=["0"] * len(cases))
        except AnomalensError as exc:
            if len(cases) > 1:  # one bad case must not fail the others: each on its own
                for c in cases:
                    self._answer([c], alpha, top)
                return
            cases[0][4].set_exception(exc)
            return
        except Exception as exc:  # noqa: BLE001 - delivered to its request, which answers 500
            for c in cases:
                c[4].set_exception(exc)
            return
        for c, ev in zip(cases, evs):
            try:
                c[4].set_result(c[3](ev))
            except Exception as exc:  # noqa: BLE001 - the request's own failure, delivered to it
                c[4].set_exception(exc)


# ---------------------------------------------------------------- the app
def _problem(status: int, title: str, detail: str, headers: dict | None = None) -> JSONResponse:
    from anomalens.text import strip_control

    return JSONResponse({"type": "about:blank", "title": title, "status": status, "detail": strip_control(detail)[:2000]},
                        status_code=status, media_type=PROBLEM, headers=headers)


def _problem_responses(*codes: int) -> dict:
    return {c: {"model": Problem, "content": {PROBLEM: {}}} for c in codes}


def create_app(investigators: dict[str, str | Path], config: ServeConfig | None = None, *, reasoner=None) -> FastAPI:
    """An app serving the saved investigators ``{name: folder}``."""
    from anomalens.investigator import Investigator
    from anomalens.llm.reasoner import make_reasoner
    from anomalens.llm.template import TemplateReasoner

    cfg = config or ServeConfig()
    if not cfg.api_keys and not cfg.no_auth:
        raise InputError("give API keys (api_keys, --api-key-file or ANOMALENS_API_KEYS) or no_auth=True explicitly")
    reasoner = reasoner if reasoner is not None else make_reasoner()
    loaded = {name: Investigator.load(path, reasoner=reasoner) for name, path in investigators.items()}
    pool = Pool(cfg.workers, cfg.queue)
    batch_reasoner, batch_note = _batch_reasoner(reasoner)
    # work that waits on an in-process model (a one-row explanation, a chat turn) runs in a pool of its
    # own: the model drafts one reply at a time, and such jobs would otherwise hold every scoring worker
    # while they wait their turn (an upload then waited behind them)
    model_pool = Pool(1, cfg.queue) if batch_note is not None else pool
    if loaded:  # each worker thread's first scoring is slow (torch's thread set-up): do it before serving
        first = next(iter(loaded.values()))
        for each in ([pool] if model_pool is pool else [pool, model_pool]):
            each.warm(lambda: first.detector.decision_function(np.zeros((1, first.detector.n_features_in_)),
                                                               checked=True))
    keys = [k.encode() for k in cfg.api_keys]
    mcp = None
    if cfg.mcp:
        from anomalens.server.mcp_server import build_mcp

        mcp = build_mcp(loaded)
        mcp_routes = mcp.streamable_http_app(streamable_http_path="/mcp", host=cfg.host).routes

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if mcp is None:
            yield
            return
        async with mcp.session_manager.run():  # the streamable HTTP sessions' task group
            yield

    app = FastAPI(title="anomalens", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Explainable anomaly analysis: calibrated verdicts, evidence and verified explanations.")
    _docs(app)
    if mcp is not None:
        app.router.routes.extend(mcp_routes)  # /mcp, behind the same keys and body limit (the guard below)
    app.state.investigators, app.state.pool, app.state.config = loaded, pool, cfg
    if cfg.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=cfg.cors_origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])

    def _busy() -> _Problem:
        return _Problem(429, "Too many requests", f"the server is busy ({cfg.workers} running, {cfg.queue} waiting); "
                                                  "retry shortly", {"Retry-After": "1"})

    app.add_middleware(_Guard, keys=keys, max_body=cfg.max_body,  # outermost: before CORS and the routes
                       busy=pool.full, refusal=_busy)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return _problem(422, "Invalid request", _invalid_detail(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _problem(exc.status_code, "Not found" if exc.status_code == 404 else "Error", str(exc.detail))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):  # never a stack trace to the client
        log.exception("unhandled error on %s", request.url.path)
        return _problem(500, "Internal error", f"the server failed on this request ({type(exc).__name__}); see its log")

    def _get(name: str):
        if name not in loaded:
            raise _Problem(404, "Not found", f"investigator must be one of {sorted(loaded)}, got {name!r}")
        return loaded[name]

    async def _work(fn: Callable[[], Any], status: int = 200, on: Pool | None = None) -> Any:
        """Run ``fn`` in the pool; its pydantic result is serialised there too (a large report would
        otherwise hold the event loop, and /health with it)."""
        from fastapi.responses import Response

        def job() -> Any:
            out = fn()
            if isinstance(out, BaseModel):
                return Response(out.model_dump_json(), status_code=status, media_type="application/json")
            return out

        with _as_problems():
            return await (on or pool).run(job, cfg.timeout)

    @contextlib.contextmanager
    def _as_problems() -> Iterator[None]:
        """What the work of a request may end in, as the client's problem: a full pool (429), the
        timeout (504), a library error (400 or 502)."""
        try:
            yield
        except Busy:
            raise _busy() from None
        except asyncio.TimeoutError:
            raise _Problem(504, "Timed out", f"the request ran past the server's limit of {cfg.timeout:g} s; send fewer "
                                             "rows, or ask with explain=false") from None
        except AnomalensError as exc:
            raise _problem_of(exc) from exc

    @app.exception_handler(_Problem)
    async def problem(request: Request, exc: _Problem):
        return _problem(exc.status, exc.title, exc.detail, exc.headers)

    @app.get("/", include_in_schema=False)
    async def page():
        """The web page (static: it holds no data; its API calls carry the key the analyst enters)."""
        from fastapi.responses import HTMLResponse

        html = (Path(__file__).parent / "static" / "index.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline' "
                                                                      "'self'; style-src 'unsafe-inline' 'self'; "
                                                                      "img-src 'self' data:; connect-src 'self'; "
                                                                      "frame-ancestors 'none'",
                                           "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff"})

    @app.get("/health", response_model=Health, tags=["service"])
    async def health() -> Health:
        """Liveness: answers while the server runs, even when the pool is saturated (no key needed)."""
        return Health(status="ok", version=__version__)

    @app.get("/ready", response_model=Ready, tags=["service"], responses=_problem_responses(401))
    async def ready() -> Ready:
        """Readiness: every investigator loaded and its exemplar store reachable."""
        status = {}
        for name, inv in loaded.items():
            try:
                inv.store.count()
                status[name] = "ok"
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                status[name] = f"store unreachable: {str(exc).splitlines()[0][:200]}"
        return Ready(ready=all(v == "ok" for v in status.values()), investigators=status,
                     reasoner=getattr(reasoner, "name", type(reasoner).__name__))

    def _info(name: str) -> InvestigatorInfo:
        inv = loaded[name]
        return InvestigatorInfo(name=name, modality=inv.modality.name, detector=inv.detector_name,
                                units=len(inv.feature_names), unit_kind=inv.modality.unit_kind, n_train=inv.n_train,
                                exemplars=inv.store.count())

    @app.get("/v1/investigators", response_model=list[InvestigatorInfo], tags=["investigators"],
             responses=_problem_responses(401))
    async def list_investigators() -> list[InvestigatorInfo]:
        """The investigators this server holds."""
        return [_info(n) for n in sorted(loaded)]

    @app.get("/v1/investigators/{name}", response_model=InvestigatorInfo, tags=["investigators"],
             responses=_problem_responses(401, 404))
    async def get_investigator(name: str) -> InvestigatorInfo:
        """One investigator."""
        _get(name)
        return _info(name)

    def _analyze(name: str, rows: Any, req: AnalyzeRequest | None) -> Callable[[], AnalyzeResponse]:
        """The job of an analyze request; ``rows``: a DataFrame, or the request's rows (made a frame in
        the job); ``req`` None: ``rows`` is the whole request, parsed."""
        if req is None:
            req, rows = rows, rows.rows
        if req.ids is not None and len(req.ids) != len(rows):
            raise _Problem(400, "Bad input", f"ids must have one entry per row ({len(rows)}), got {len(req.ids)}")
        if req.ids is not None and len(set(req.ids)) != len(req.ids):
            from collections import Counter

            twice = next(i for i, n in Counter(req.ids).items() if n > 1)
            raise _Problem(400, "Bad input", f"ids must be unique (one case each), got {str(twice)[:64]!r} more than once")
        inv = _get(name)
        if callable(getattr(inv, "triage", None)):  # its cases are read from log text, not rows
            raise _Problem(400, "Bad input", f"investigator {name!r} holds a {inv.modality.name} model: use "
                                             f"/v1/investigators/{name}/triage")
        if len(rows) > cfg.max_rows:
            raise _Problem(413, "Request too large", f"rows must be at most {cfg.max_rows} per request, got {len(rows)}")
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
            _noted(reports, batch_note)
            out = [_verdict_out(k, v) for k, v in verdicts.items()]
            return AnalyzeResponse(investigator=name, n_cases=len(out), n_flagged=sum(v.anomalous for v in out),
                                   verdicts=out, reports=[r.model_dump(mode="json") for r in reports],
                                   seconds=time.perf_counter() - t0, note=inv.batch_note(len(out), req.alpha))

        return job

    @app.post("/v1/investigators/{name}/analyze", response_model=AnalyzeResponse, tags=["analyze"],
              responses=_problem_responses(400, 401, 404, 413, 422, 429, 504),
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/AnalyzeRequest"}}}}})
    async def analyze(name: str, request: Request) -> AnalyzeResponse:
        """Verdicts for rows (FDR-controlled over a batch; one row: its own p-value against alpha), and
        for each (or the ``limit`` most anomalous) a report with a verified explanation. The body is
        an ``AnalyzeRequest``."""
        raw = await request.body()
        inv = _get(name)
        if len(raw) > INLINE_BODY:  # parsed in the pool: a 1,000-row body is milliseconds the event loop keeps
            return await _work(lambda: _analyze(name, _analyze_request(raw), None)())
        req = _analyze_request(raw)
        if (len(req.rows) == 1 and req.ids is None and req.explain and not req.only_anomalous
                and not inv.modality.sequential):  # a row: answered with the other one-row requests
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
            out = AnalyzeResponse(investigator=name, n_cases=1, n_flagged=int(v.anomalous), verdicts=[_verdict_out("0", v)],
                                  reports=[report.model_dump(mode="json")], seconds=time.perf_counter() - t0)
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

    @app.post("/v1/investigators/{name}/analyze/upload", response_model=AnalyzeResponse, tags=["analyze"],
              responses=_problem_responses(400, 401, 404, 413, 422, 429, 504))
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
            raise _Problem(422, "Invalid request", str(exc).splitlines()[0]) from exc
        inv = _get(name)
        raw = await file.read()
        frame = _read_table(raw, file.filename or "upload")
        if inv.modality.name == "tabular":
            from anomalens.modalities.tabular import select_columns

            with _as_problems():
                frame, ids = select_columns(frame, id_column=id_column, features=inv.feature_names)
            req.ids = ids
        elif id_column is not None:
            raise _Problem(400, "Bad input", f"id_column applies to tables; investigator {name!r} holds "
                                             f"{inv.modality.name} data")
        return await _work(_analyze(name, frame, req))

    async def _triage(name: str, text: str, alpha: float, top: int, source: str = "request") -> TriageResponse:
        inv = _get(name)
        if not callable(getattr(inv, "triage", None)):
            raise _Problem(400, "Bad input", f"investigator {name!r} holds a {inv.modality.name} model; triage needs "
                                             "one fitted on logs")
        n_lines = text.count("\n") + (0 if text.endswith("\n") else 1)
        if n_lines > cfg.max_lines:
            raise _Problem(413, "Request too large", f"logs must be at most {cfg.max_lines} lines per request, "
                                                     f"got {n_lines}")
        if not text.strip():
            raise _Problem(400, "Bad input", "the request holds no log line")

        def job() -> TriageResponse:
            t0 = time.perf_counter()
            stream = io.BytesIO(text.encode("utf-8", errors="replace"))
            stream.name = source  # the lines' file name in the evidence (line:<file>:<n>)
            res = inv.triage(stream, alpha=alpha, limit=top, reasoner=batch_reasoner)
            _noted(res.reports, batch_note)
            return TriageResponse(investigator=name, summary=res.summary(), triage=res.to_json(),
                                  seconds=time.perf_counter() - t0)

        return await _work(job)

    @app.post("/v1/investigators/{name}/triage", response_model=TriageResponse, tags=["logs"],
              responses=_problem_responses(400, 401, 404, 413, 422, 429, 504),
              openapi_extra={"requestBody": {"required": True, "content": {"text/plain": {"schema": {"type": "string"},
                                                                                            "example": "2024-05-01T10:00:00Z INFO api: started\n"}}}})
    async def triage(name: str, request: Request, alpha: float = 0.05, top: int = 10) -> TriageResponse:
        """Ranked incidents of log lines sent as the request body (text/plain)."""
        if not 0 < alpha < 1 or not 1 <= top <= 100:
            raise _Problem(422, "Invalid request", f"alpha must be in (0, 1) and top in [1, 100], got {alpha} and {top}")
        body = await request.body()
        return await _triage(name, body.decode("utf-8", errors="replace"), alpha, top)

    @app.post("/v1/investigators/{name}/triage/upload", response_model=TriageResponse, tags=["logs"],
              responses=_problem_responses(400, 401, 404, 413, 422, 429, 504))
    async def triage_upload(name: str, file: UploadFile = File(..., description="a log file (plain or .gz)"),
                            alpha: float = 0.05, top: int = 10) -> TriageResponse:
        """Ranked incidents of an uploaded log file."""
        if not 0 < alpha < 1 or not 1 <= top <= 100:
            raise _Problem(422, "Invalid request", f"alpha must be in (0, 1) and top in [1, 100], got {alpha} and {top}")
        raw = await file.read()
        if raw[:2] == b"\x1f\x8b":
            raw = _gunzip(raw, cfg.max_unpacked)
        return await _triage(name, raw.decode("utf-8", errors="replace"), alpha, top,
                             source=Path(file.filename or "upload").name.removesuffix(".gz"))

    def openapi() -> dict:
        """The OpenAPI document, with the served investigators' names as the enum of ``name``."""
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            if keys:  # the key check is the guard's (it covers /mcp too), declared here for clients and /docs
                doc.setdefault("components", {})["securitySchemes"] = {
                    "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API key>"},
                    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
                for route, path in doc.get("paths", {}).items():
                    if not _Guard.is_open(route):
                        for op in path.values():
                            op["security"] = [{"bearer": []}, {"apiKey": []}]
            # the analyze body is read raw (and parsed in the pool when large): its model, declared here
            doc.setdefault("components", {}).setdefault("schemas", {})["AnalyzeRequest"] = \
                AnalyzeRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            for path in doc.get("paths", {}).values():
                for op in path.values():
                    for prm in op.get("parameters", []):
                        if prm.get("name") == "name" and prm.get("in") == "path":
                            prm["schema"] = {**prm.get("schema", {}), "enum": sorted(loaded)}
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    # ---------------------------------------------------------------- chat sessions
    sessions = _Sessions(cfg.state_dir)
    app.state.sessions = sessions

    def _box(inv, req: SessionRequest | None = None):
        """A toolbox for the investigator, with the request's case when given: (box, case id)."""
        import pandas as pd

        from anomalens.tools import LogToolbox, SeriesToolbox, Toolbox
        from anomalens.tools.toolbox import toolbox_for

        name = inv.modality.name
        if req is None:
            return toolbox_for(inv)(inv), None
        if name == "logs":
            if req.logs is None or req.incident is None:
                raise _Problem(400, "Bad input", "a log investigator's session needs logs (text) and incident (a number)")
            box = LogToolbox(inv, io.BytesIO(req.logs.encode("utf-8", errors="replace")), limit=max(req.incident, 20))
            return box, _numbered(box, "incident", req.incident)
        if inv.modality.sequential:
            if (req.series is None) == (req.series_csv is None) or req.event is None:
                raise _Problem(400, "Bad input", "a series investigator's session needs one of series (rows) or "
                                                 "series_csv (the CSV text), and event (a number)")
            frame = pd.DataFrame(req.series) if req.series is not None else \
                _read_table(req.series_csv.encode("utf-8"), "series.csv")
            box = SeriesToolbox(inv, frame)
            return box, _numbered(box, "event", req.event)
        if req.row is None:
            raise _Problem(400, "Bad input", "a tabular investigator's session needs row (feature name -> value)")
        box = Toolbox(inv, pd.DataFrame([req.row]), ids=["case"], focus="case")
        return box, "case"

    @app.post("/v1/sessions", response_model=SessionOut, status_code=201, tags=["chat"],
              responses=_problem_responses(400, 401, 404, 413, 422, 429, 504))
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
                              verdict=_verdict_out(case_id, ev.verdict))

        return await _work(job, status=201)

    def _session(sid: str, owner: str) -> tuple[str, str, Any]:
        found = sessions.get(sid, owner)
        if found is None:
            raise _Problem(404, "Not found", f"session {sid[:64]!r} does not exist (or was deleted)")
        if found[0] not in loaded:
            raise _Problem(404, "Not found", f"session {sid[:64]!r} investigates {found[0]!r}, which this server "
                                             "does not hold")
        return found

    # Live chats: a session's toolbox (its case and the evidence computed for it) and its compiled
    # graph stay in this process between messages, so a message neither re-scores the case nor
    # rebuilds the graph; the conversation itself is in the SQLite checkpoint, shared by processes.
    live: collections.OrderedDict[str, tuple[threading.Lock, str, str, Any]] = collections.OrderedDict()
    live_lock = threading.Lock()

    def _keep_live(sid: str, name: str, case_id: str, box: Any) -> tuple[threading.Lock, str, str, Any]:
        from anomalens.agents.chat import ChatSession

        chat = ChatSession(box, case_id, reasoner=loaded[name].reasoner, checkpoint=sessions.checkpoint, thread_id=sid)
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

    @app.post("/v1/sessions/{sid}/messages", response_model=MessageOut, tags=["chat"],
              responses={**_problem_responses(400, 401, 404, 422, 429, 504),
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
            return MessageOut(text=reply.text, tools=reply.tools,
                              explanation=None if reply.explanation is None else reply.explanation.model_dump(mode="json"))

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
                p = _problem_of(exc)
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

    @app.get("/v1/sessions/{sid}", response_model=HistoryOut, tags=["chat"], responses=_problem_responses(401, 404))
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

    @app.delete("/v1/sessions/{sid}", status_code=204, tags=["chat"], responses=_problem_responses(401, 404))
    async def delete_session(sid: str, request: Request) -> None:
        """Forget a session (its case and its conversation)."""
        _session(sid, key_owner(request.headers))
        sessions.delete(sid)
        _forget_live(sid)

    return app


LIVE_CHATS = 64  # chat sessions kept live per process (the least recently used beyond it are rebuilt when asked)


def _numbered(box, kind: str, number: int) -> str:
    case_id = f"{kind}-{number}"
    if case_id not in box.case_ids:
        raise _Problem(400, "Bad input", f"{kind} must be one of the {len(box.case_ids)} {kind}s found "
                                         f"(1..{len(box.case_ids)}), got {number}")
    return case_id


class _Sessions:
    """Sessions by id (investigator, case id, the case's saved values) in SQLite, beside the chat
    checkpoints (``chat.sqlite``) that keep their conversations."""

    def __init__(self, state_dir: str | None) -> None:
        import sqlite3
        import tempfile

        folder = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="anomalens-serve-"))
        folder.mkdir(parents=True, exist_ok=True)
        self.checkpoint = folder / "chat.sqlite"
        self._path = folder / "sessions.sqlite"
        self._lock = threading.Lock()
        with self._lock, sqlite3.connect(self._path) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, investigator TEXT, case_id TEXT, "
                       "row TEXT, created REAL, owner TEXT)")
            # a state folder from before sessions had owners: its sessions get none, so only a server
            # without keys (owner '') reaches them; with keys they answer 404 like any foreign session
            if "owner" not in {c[1] for c in db.execute("PRAGMA table_info(sessions)")}:
                db.execute("ALTER TABLE sessions ADD COLUMN owner TEXT")

    def _db(self):
        import sqlite3

        return sqlite3.connect(self._path, timeout=30)

    def add(self, sid: str, investigator: str, case_id: str, row: Any, owner: str) -> None:
        import json

        with self._lock, self._db() as db:
            db.execute("INSERT INTO sessions (id, investigator, case_id, row, created, owner) VALUES (?, ?, ?, ?, ?, ?)",
                       (sid, investigator, case_id, json.dumps(row), time.time(), owner))

    def get(self, sid: str, owner: str) -> tuple[str, str, Any] | None:
        """(investigator, case id, saved row) of session ``sid`` if ``owner`` made it; None otherwise
        (another key's session and a missing one look the same)."""
        import json

        with self._lock, self._db() as db:
            row = db.execute("SELECT investigator, case_id, row FROM sessions WHERE id = ? AND coalesce(owner, '') = ?",
                             (sid, owner)).fetchone()
        return None if row is None else (row[0], row[1], json.loads(row[2]))

    def delete(self, sid: str) -> None:
        with self._lock, self._db() as db:
            db.execute("DELETE FROM sessions WHERE id = ?", (sid,))


def app_from_env() -> FastAPI:
    """The app a uvicorn worker process builds (``anomalens serve --processes N``), from ``ANOMALENS_SERVE_SPEC``."""
    import json
    import os

    spec = json.loads(os.environ[ENV_SPEC])
    return process_app(spec["investigators"], ServeConfig(**spec["config"]))


def process_app(investigators: dict[str, str], cfg: ServeConfig) -> FastAPI:
    """The app of a server process that is the CLI's (one process, or each of ``--processes``):
    its process-wide settings first (``use_threads``), then the app, then the heap it loaded frozen
    (``freeze_heap``). Tests and embedders call ``create_app`` in their own process instead."""
    use_threads(cfg)
    app = create_app(investigators, cfg)
    freeze_heap()
    return app


def use_threads(cfg: ServeConfig) -> None:
    """Set this server process's torch threads and GIL switch interval (process-wide settings, so
    only the CLI's server processes set them, through ``process_app``)."""
    import torch

    torch.set_num_threads(cfg.torch_threads)
    sys.setswitchinterval(SWITCH_INTERVAL)


def freeze_heap() -> None:
    """Move everything a server process has loaded (models, stores, libraries: ~400,000 objects)
    out of the cyclic garbage collector's reach. A full collection otherwise walks them all, about
    250 ms on this machine with the GIL held, and stalls every request of the process (it was the
    p99 of the load benchmark). Objects made later are collected as usual. For server processes,
    after ``create_app``; not for tests and embedders, whose heaps are theirs."""
    import gc

    gc.collect()
    gc.freeze()


class _Guard:
    """The body limit, the API keys and shedding analysis past a full pool (429), as plain ASGI
    middleware in front of every route.

    (Starlette's ``@app.middleware("http")`` wraps every request and response in task groups,
    memory streams and a streaming response, on the event loop that every other request waits for.)
    """

    OPEN = frozenset({"/", "/health", "/docs", "/openapi.json"})  # no key needed
    OPEN_UNDER = DOCS_ASSETS + "/"  # nor the files of /docs

    @classmethod
    def is_open(cls, path: str) -> bool:
        return path in cls.OPEN or path.startswith(cls.OPEN_UNDER)

    def __init__(self, app: Any, *, keys: list[bytes], max_body: int, busy: Callable[[], bool],
                 refusal: Callable[[], _Problem]) -> None:
        self.app, self.keys, self.max_body = app, keys, max_body
        self.busy, self.refusal = busy, refusal  # whether the pool is full; the 429 it answers then

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from starlette.datastructures import Headers

        headers = Headers(scope=scope)
        # the body limit, before anything reads the body
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await _problem(413, "Request too large", f"the request body must be at most {self.max_body} bytes, "
                                                            f"got {length}")(scope, receive, send)
        if self.keys and not self.is_open(scope["path"]) and scope["method"] != "OPTIONS":
            given = presented_key(headers)
            # every key compared, in constant time: no early exit that times which prefix matched
            ok = False
            for k in self.keys:
                ok |= hmac.compare_digest(k, (given or "").encode())
            if not ok:
                detail = ("an API key is required: 'Authorization: Bearer <key>' or 'X-API-Key: <key>'" if given is None
                          else "the API key is not valid")
                return await _problem(401, "Unauthorized", detail, {"WWW-Authenticate": "Bearer"})(scope, receive, send)
        if scope["method"] == "POST" and scope["path"].startswith("/v1/investigators/") and self.busy():
            # shed at the door: a full pool refuses the work anyway, so the body (a 1,000-row batch
            # is ~2-5 ms of parsing in the event loop) is never read
            p = self.refusal()
            return await _problem(p.status, p.title, p.detail, p.headers)(scope, receive, send)
        if length is None and scope["method"] in ("POST", "PUT", "PATCH"):
            # a body sent without Content-Length (chunked): counted as it arrives, and refused as soon as
            # it passes the limit; the app then reads it from memory (at most max_body bytes, as any body)
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > self.max_body:
                    return await _problem(413, "Request too large", f"the request body must be at most {self.max_body} "
                                                                    f"bytes, got more ({size} bytes so far, sent without "
                                                                    "Content-Length)")(scope, receive, send)
                if not message.get("more_body", False):
                    break
            receive = _replay(b"".join(chunks), receive)
        await self.app(scope, receive, send)


def _replay(body: bytes, receive: Any) -> Any:
    """An ASGI ``receive`` that gives ``body`` whole first, then what ``receive`` gives (a disconnect)."""
    given = False

    async def replay() -> dict:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) from the files of the ``swagger-ui-bundle-v2`` package: FastAPI's own page
    loads them from a CDN, and a server without internet showed a blank page."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} API",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png")


def _verdict_out(case_id: Any, v: Any) -> VerdictOut:
    """A library Verdict as the API's."""
    return VerdictOut(case_id=str(case_id), anomalous=v.anomalous, score=v.score, p_value=v.p_value, cutoff=v.cutoff,
                      approximate=v.approximate, note=v.note)


INLINE_BODY = 16_384  # analyze bodies up to this many bytes are parsed in the event loop, larger ones in the pool


def _invalid_detail(errors: list) -> str:
    """A validation failure as one line: the first three fields, each with the rule and what came."""
    parts = []
    for e in errors[:3]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {e.get('msg')} (got {str(e.get('input'))[:60]!r})")
    return "; ".join(parts)


def _analyze_request(raw: bytes) -> AnalyzeRequest:
    """An analyze body, parsed and checked (422 with the fields that fail)."""
    from pydantic import ValidationError

    try:
        return AnalyzeRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise _Problem(422, "Invalid request", _invalid_detail(exc.errors())) from None


class _Problem(Exception):
    def __init__(self, status: int, title: str, detail: str, headers: dict | None = None) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.headers = status, title, detail, headers


def presented_key(headers: Any) -> str | None:
    """The API key a request carries: ``X-API-Key``, else ``Authorization: Bearer <key>``; None without one."""
    given = headers.get("x-api-key")
    auth = headers.get("authorization", "")
    if given is None and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return given


def key_owner(headers: Any) -> str:
    """Who is calling, for what a request creates (chat sessions, MCP workspaces): a hash of the API
    key it carried ('' without one, on a server without keys). Another key is another owner."""
    import hashlib

    given = presented_key(headers)
    return hashlib.sha256(given.encode()).hexdigest() if given else ""


def _problem_of(exc: AnomalensError) -> _Problem:
    """The problem a library error is to a client: a backend's or a store's failure is 502, the rest 400."""
    if isinstance(exc, (BackendError, CheckpointError)):
        return _Problem(502, "Backend failed", str(exc))
    return _Problem(400, "Bad input", str(exc))


def _batch_reasoner(reasoner: Any) -> tuple[Any, str | None]:
    """(the reasoner that explains the reports of a batch, the note they carry). An in-process model
    (the embedded default) drafts one explanation at a time, seconds each: a batch's 20 reports took
    over a minute and the page's upload timed out. Its batches are explained by the template, at
    once; one case analyzed alone, or a chat question, still gets the model. A model served elsewhere
    (vLLM) drafts a batch's explanations concurrently and explains batches itself."""
    from anomalens.llm import LLMReasoner
    from anomalens.llm.template import TemplateReasoner

    if isinstance(reasoner, LLMReasoner) and reasoner.concurrency <= 1:
        return TemplateReasoner(), (f"explained by the template: the in-process model {reasoner.name} drafts one "
                                    "explanation at a time, so a batch's reports are not sent to it; analyze this case "
                                    "alone, or ask about it in a chat session, for the model's explanation")
    return reasoner, None


def _noted(reports: list, note: str | None) -> None:
    """Give each report's explanation ``note`` (when it has none of its own)."""
    if note:
        for r in reports:
            if r.explanation.note is None:
                r.explanation.note = note


def _gunzip(raw: bytes, limit: int) -> bytes:
    """A .gz upload unpacked, reading at most ``limit`` + 1 bytes of output: a small file that unpacks
    to gigabytes (a 310 KB gzip held a 300 MB line) is refused without unpacking it."""
    import gzip
    import zlib

    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as fh:
            out = fh.read(limit + 1)
    except (OSError, EOFError, zlib.error) as exc:  # a bad header, a truncated stream, corrupt data
        raise _Problem(400, "Bad input", f"the .gz upload cannot be read ({exc or type(exc).__name__})") from exc
    if len(out) > limit:
        raise _Problem(413, "Request too large", f"the .gz upload must unpack to at most {limit} bytes, got more")
    return out


def _read_table(raw: bytes, filename: str):
    import pandas as pd

    try:
        if filename.lower().endswith(".parquet") or raw[:4] == b"PAR1":
            return pd.read_parquet(io.BytesIO(raw))
        from anomalens.modalities.tabular import check_csv_header

        check_csv_header(io.BytesIO(raw), filename)
        return pd.read_csv(io.BytesIO(raw))
    except InputError as exc:
        raise _Problem(400, "Bad input", str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - any reader failure is the upload's fault
        raise _Problem(400, "Bad input", f"file {filename!r} must be a CSV or Parquet table ({type(exc).__name__}: "
                                         f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from exc
