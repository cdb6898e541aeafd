"""What the routes of the REST API share: the work pool and its admission (``Pool``, ``Busy``), the
one-row ``Coalescer``, the saved chat sessions (``Sessions``), problem+json errors (``HTTPProblem``)
and ``Runtime``, the state of one served app that every router reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from anomalens.errors import AnomalensError, BackendError, CheckpointError, InputError
from anomalens.server.models import AnalyzeRequest, Problem, ServeConfig, VerdictOut

__all__ = ["Busy", "Coalescer", "HTTPProblem", "Pool", "Runtime", "Sessions", "key_owner", "presented_key"]

log = logging.getLogger("anomalens.server")

PROBLEM = "application/problem+json"
INLINE_BODY = 16_384  # analyze bodies up to this many bytes are parsed in the event loop, larger ones in the pool
LIVE_CHATS = 64  # chat sessions kept live per process (the least recently used beyond it are rebuilt when asked)


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


def problem_response(status: int, title: str, detail: str, headers: dict | None = None) -> JSONResponse:
    from anomalens.text import strip_control

    return JSONResponse({"type": "about:blank", "title": title, "status": status, "detail": strip_control(detail)[:2000]},
                        status_code=status, media_type=PROBLEM, headers=headers)


def problem_responses(*codes: int) -> dict:
    return {c: {"model": Problem, "content": {PROBLEM: {}}} for c in codes}


class Runtime:
    """The state of one served app: its investigators, configuration, reasoners and pools. Built once by
    ``create_app``; each router reads it (``routes/*.py``)."""

    def __init__(self, investigators: dict[str, str | Path], cfg: ServeConfig, reasoner: Any = None) -> None:
        import numpy as np

        from anomalens.investigator import Investigator
        from anomalens.llm.reasoner import make_reasoner

        self.cfg = cfg
        self.reasoner = reasoner if reasoner is not None else make_reasoner()
        self.loaded = {name: Investigator.load(path, reasoner=self.reasoner) for name, path in investigators.items()}
        self.pool = Pool(cfg.workers, cfg.queue)
        self.batch_reasoner, self.batch_note = reasoner_for_batches(self.reasoner)
        # work that waits on an in-process model (a one-row explanation, a chat turn) runs in a pool of its
        # own: the model drafts one reply at a time, and such jobs would otherwise hold every scoring worker
        # while they wait their turn (an upload then waited behind them)
        self.model_pool = Pool(1, cfg.queue) if self.batch_note is not None else self.pool
        if self.loaded:  # each worker thread's first scoring is slow (torch's thread set-up): do it before serving
            first = next(iter(self.loaded.values()))
            for each in ([self.pool] if self.model_pool is self.pool else [self.pool, self.model_pool]):
                each.warm(lambda: first.detector.decision_function(np.zeros((1, first.detector.n_features_in_)),
                                                                   checked=True))

    def get(self, name: str):
        """The investigator served as ``name`` (404 otherwise)."""
        if name not in self.loaded:
            raise HTTPProblem(404, "Not found", f"investigator must be one of {sorted(self.loaded)}, got {name!r}")
        return self.loaded[name]

    def busy(self) -> HTTPProblem:
        cfg = self.cfg
        return HTTPProblem(429, "Too many requests", f"the server is busy ({cfg.workers} running, {cfg.queue} "
                                                     "waiting); retry shortly", {"Retry-After": "1"})

    async def work(self, fn: Callable[[], Any], status: int = 200, on: Pool | None = None) -> Any:
        """Run ``fn`` in the pool; its pydantic result is serialised there too (a large report would
        otherwise hold the event loop, and /health with it)."""
        from fastapi.responses import Response

        def job() -> Any:
            out = fn()
            if isinstance(out, BaseModel):
                return Response(out.model_dump_json(), status_code=status, media_type="application/json")
            return out

        with self.as_problems():
            return await (on or self.pool).run(job, self.cfg.timeout)

    @contextlib.contextmanager
    def as_problems(self) -> Iterator[None]:
        """What the work of a request may end in, as the client's problem: a full pool (429), the
        timeout (504), a library error (400 or 502)."""
        try:
            yield
        except Busy:
            raise self.busy() from None
        except asyncio.TimeoutError:
            raise HTTPProblem(504, "Timed out", f"the request ran past the server's limit of {self.cfg.timeout:g} s; "
                                                "send fewer rows, or ask with explain=false") from None
        except AnomalensError as exc:
            raise problem_of(exc) from exc


def base64_file(text: str, field: str) -> bytes:
    """A file's bytes from its base64 text, or a 400 naming ``field``."""
    from anomalens.text import from_base64

    try:
        return from_base64(text, field)
    except InputError as exc:
        raise problem_of(exc) from None


def numbered(box, kind: str, number: int) -> str:
    """The toolbox's ``<kind>-<number>`` case (``Toolbox.numbered``), or a 400 naming the valid range."""
    try:
        return box.numbered(kind, number)
    except InputError as exc:
        raise problem_of(exc) from None


class Sessions:
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


def verdict_out(case_id: Any, v: Any) -> VerdictOut:
    """A library Verdict as the API's."""
    return VerdictOut(case_id=str(case_id), anomalous=v.anomalous, score=v.score, p_value=v.p_value, cutoff=v.cutoff,
                      approximate=v.approximate, note=v.note)


def invalid_detail(errors: list) -> str:
    """A validation failure as one line: the first three fields, each with the rule and what came."""
    parts = []
    for e in errors[:3]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {e.get('msg')} (got {str(e.get('input'))[:60]!r})")
    return "; ".join(parts)


def parse_analyze_request(raw: bytes) -> AnalyzeRequest:
    """An analyze body, parsed and checked (422 with the fields that fail)."""
    from pydantic import ValidationError

    try:
        return AnalyzeRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise HTTPProblem(422, "Invalid request", invalid_detail(exc.errors())) from None


class HTTPProblem(Exception):
    """An error answered as problem+json (status, title, detail)."""

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


def problem_of(exc: AnomalensError) -> HTTPProblem:
    """The problem a library error is to a client: a backend's or a store's failure is 502, the rest 400."""
    if isinstance(exc, (BackendError, CheckpointError)):
        return HTTPProblem(502, "Backend failed", str(exc))
    return HTTPProblem(400, "Bad input", str(exc))


def reasoner_for_batches(reasoner: Any) -> tuple[Any, str | None]:
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


def noted(reports: list, note: str | None) -> None:
    """Give each report's explanation ``note`` (when it has none of its own)."""
    if note:
        for r in reports:
            if r.explanation.note is None:
                r.explanation.note = note


def gunzip(raw: bytes, limit: int) -> bytes:
    """A .gz upload unpacked, reading at most ``limit`` + 1 bytes of output: a small file that unpacks
    to gigabytes (a 310 KB gzip held a 300 MB line) is refused without unpacking it."""
    import gzip
    import zlib

    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as fh:
            out = fh.read(limit + 1)
    except (OSError, EOFError, zlib.error) as exc:  # a bad header, a truncated stream, corrupt data
        raise HTTPProblem(400, "Bad input", f"the .gz upload cannot be read ({exc or type(exc).__name__})") from exc
    if len(out) > limit:
        raise HTTPProblem(413, "Request too large", f"the .gz upload must unpack to at most {limit} bytes, got more")
    return out


def read_table(raw: bytes, filename: str):
    import pandas as pd

    try:
        if filename.lower().endswith(".parquet") or raw[:4] == b"PAR1":
            return pd.read_parquet(io.BytesIO(raw))
        from anomalens.modalities.tabular import check_csv_header

        check_csv_header(io.BytesIO(raw), filename)
        return pd.read_csv(io.BytesIO(raw))
    except InputError as exc:
        raise HTTPProblem(400, "Bad input", str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - any reader failure is the upload's fault
        raise HTTPProblem(400, "Bad input", f"file {filename!r} must be a CSV or Parquet table ({type(exc).__name__}: "
                                         f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from exc
