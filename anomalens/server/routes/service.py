"""The page and the service routes: ``/``, ``/health``, ``/ready``."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter

from anomalens import __version__
from anomalens.server.models import Health, Ready
from anomalens.server.runtime import Runtime, problem_responses

__all__ = ["router"]


def router(rt: Runtime) -> APIRouter:
    """This area's routes over the served app's state ``rt``."""
    api = APIRouter()
    loaded, reasoner = rt.loaded, rt.reasoner

    @api.get("/", include_in_schema=False)
    async def page():
        """The web page (static: it holds no data; its API calls carry the key the analyst enters)."""
        from fastapi.responses import HTMLResponse

        html = (Path(__file__).parents[1] / "static" / "index.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline' "
                                                                      "'self'; style-src 'unsafe-inline' 'self'; "
                                                                      "img-src 'self' data:; connect-src 'self'; "
                                                                      "frame-ancestors 'none'",
                                           "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff"})

    @api.get("/health", response_model=Health, tags=["service"])
    async def health() -> Health:
        """Liveness: answers while the server runs, even when the pool is saturated (no key needed)."""
        return Health(status="ok", version=__version__)

    @api.get("/ready", response_model=Ready, tags=["service"], responses=problem_responses(401))
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

    return api
