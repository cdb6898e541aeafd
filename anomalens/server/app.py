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

Layout: ``models.py`` (request and response models, ``ServeConfig``), ``runtime.py`` (the pool, the
coalescer, sessions, problems and ``Runtime``, the state every router reads), ``routes/`` (one
``APIRouter`` per area: service, investigators, analyze, logs, sessions) and this module, which
assembles them with the key guard, the error handlers, ``/docs`` and ``/mcp``.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from anomalens import __version__
from anomalens.errors import InputError
from anomalens.server.models import (AnalyzeRequest, AnalyzeResponse, Health, HistoryOut, InvestigatorInfo,  # noqa: F401
                                     MessageOut, MessageRequest, Ready, ServeConfig, SessionOut, SessionRequest,
                                     TriageResponse, VerdictOut)
from anomalens.server.runtime import (Busy, Coalescer, HTTPProblem, Pool, Runtime, invalid_detail,  # noqa: F401
                                      key_owner, presented_key, problem_response)

__all__ = ["ServeConfig", "app_from_env", "create_app", "key_owner", "presented_key", "process_app"]

ENV_SPEC = "ANOMALENS_SERVE_SPEC"  # JSON {"investigators": {...}, "config": {...}} for worker processes

log = logging.getLogger("anomalens.server")

DOCS_ASSETS = "/docs-assets"  # Swagger UI's files, for /docs

# How long a thread may hold the GIL before another that waits for it gets it (CPython's default:
# 5 ms). The event loop gives the GIL back at every socket call and waits up to this long to get it
# again from a scoring thread, several times per request; a shorter interval keeps /health and the
# small requests answered while the workers are busy.
SWITCH_INTERVAL = 0.001


def create_app(investigators: dict[str, str | Path], config: ServeConfig | None = None, *, reasoner=None) -> FastAPI:
    """An app serving the saved investigators ``{name: folder}``."""
    from anomalens.server.routes import analyze, investigators as investigators_routes, logs, service, sessions

    cfg = config or ServeConfig()
    if not cfg.api_keys and not cfg.no_auth:
        raise InputError("give API keys (api_keys, --api-key-file or ANOMALENS_API_KEYS) or no_auth=True explicitly")
    rt = Runtime(investigators, cfg, reasoner)
    keys = [k.encode() for k in cfg.api_keys]
    mcp = None
    if cfg.mcp:
        from anomalens.server.mcp_server import build_mcp

        mcp = build_mcp(rt.loaded)
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
    docs_page(app)
    if mcp is not None:
        app.router.routes.extend(mcp_routes)  # /mcp, behind the same keys and body limit (the guard below)
    app.state.investigators, app.state.pool, app.state.config, app.state.runtime = rt.loaded, rt.pool, cfg, rt
    if cfg.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=cfg.cors_origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    app.add_middleware(Guard, keys=keys, max_body=cfg.max_body,  # outermost: before CORS and the routes
                       busy=rt.pool.full, refusal=rt.busy)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return problem_response(422, "Invalid request", invalid_detail(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return problem_response(exc.status_code, "Not found" if exc.status_code == 404 else "Error", str(exc.detail))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):  # never a stack trace to the client
        log.exception("unhandled error on %s", request.url.path)
        return problem_response(500, "Internal error", f"the server failed on this request ({type(exc).__name__}); "
                                                       "see its log")

    @app.exception_handler(HTTPProblem)
    async def problem(request: Request, exc: HTTPProblem):
        return problem_response(exc.status, exc.title, exc.detail, exc.headers)

    for area in (service, investigators_routes, analyze, logs, sessions):
        app.include_router(area.router(rt))
    app.openapi = lambda: _openapi(app, keys, rt.loaded)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI, keys: list[bytes], loaded: dict) -> dict:
    """The OpenAPI document, with the served investigators' names as the enum of ``name``."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        if keys:  # the key check is the guard's (it covers /mcp too), declared here for clients and /docs
            doc.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API key>"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
            for route, path in doc.get("paths", {}).items():
                if not Guard.is_open(route):
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


class Guard:
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
                 refusal: Callable[[], HTTPProblem]) -> None:
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
            return await problem_response(413, "Request too large", f"the request body must be at most {self.max_body} bytes, "
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
                return await problem_response(401, "Unauthorized", detail, {"WWW-Authenticate": "Bearer"})(scope, receive, send)
        if scope["method"] == "POST" and scope["path"].startswith("/v1/investigators/") and self.busy():
            # shed at the door: a full pool refuses the work anyway, so the body (a 1,000-row batch
            # is ~2-5 ms of parsing in the event loop) is never read
            p = self.refusal()
            return await problem_response(p.status, p.title, p.detail, p.headers)(scope, receive, send)
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
                    return await problem_response(413, "Request too large", f"the request body must be at most {self.max_body} "
                                                                    f"bytes, got more ({size} bytes so far, sent without "
                                                                    "Content-Length)")(scope, receive, send)
                if not message.get("more_body", False):
                    break
            receive = replay_body(b"".join(chunks), receive)
        await self.app(scope, receive, send)


def replay_body(body: bytes, receive: Any) -> Any:
    """An ASGI ``receive`` that gives ``body`` whole first, then what ``receive`` gives (a disconnect)."""
    given = False

    async def replay() -> dict:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def docs_page(app: FastAPI) -> None:
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
