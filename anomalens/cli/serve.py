"""``anomalens demo``, ``mcp``, ``serve`` and ``eval``: the main job, the servers and the benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from anomalens.cli.common import (
    CliError,
    LlmOpt,
    app,
    err,
    guard,
)
from anomalens.config import DEFAULT_DETECTOR
from anomalens.text import for_terminal


@app.command()
@guard
def demo(
    detector: Annotated[str, typer.Option("--detector", "-d")] = DEFAULT_DETECTOR,
    top: Annotated[int, typer.Option(min=1)] = 5,
    llm: LlmOpt = None,
) -> None:
    """The main job on the embedded defaults (what 'make demo' runs): fit, analyze, report, chat."""
    from anomalens import demo as demo_mod

    argv = ["--detector", detector, "--top", str(top)] + (["--llm", llm] if llm else [])
    raise typer.Exit(demo_mod.main(argv))


LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command()
@guard
def mcp(
    models: Annotated[list[str], typer.Argument(metavar="DIR...", help="saved investigators to serve, each a folder "
                                                "(named by its folder name) or NAME=FOLDER")],
) -> None:
    """Serve saved investigators to MCP clients on stdio (the investigation tools, a session's cases kept)."""
    from anomalens.server.mcp_server import build_mcp

    build_mcp(_named_folders(models)).run("stdio")


def _named_folders(models: list[str]) -> dict[str, str]:
    """{name: folder} of DIR or NAME=DIR arguments (a folder is named by its last part)."""
    folders: dict[str, str] = {}
    for m in models:
        name, sep, folder = m.partition("=")
        if not sep:
            name, folder = Path(m).resolve().name, m
        if name in folders:
            raise CliError(f"two investigators are named {name!r}; name them with NAME=FOLDER")
        folders[name] = folder
    return folders


@app.command()
@guard
def serve(
    models: Annotated[list[str], typer.Argument(metavar="DIR...", help="saved investigators to serve, each a folder "
                                                "(named by its folder name) or NAME=FOLDER")],
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    api_key_file: Annotated[Optional[Path], typer.Option("--api-key-file", help="API keys, one per line (default: "
                                                         "ANOMALENS_API_KEYS, comma-separated)")] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="serve without API keys (loopback hosts only)")] = False,
    workers: Annotated[int, typer.Option(min=1, max=64, help="requests scored at a time (per process)")] = 2,
    processes: Annotated[int, typer.Option(min=1, max=64, help="server processes (each loads the models; scoring "
                                                           "is CPU-bound, so up to one per core)")] = 1,
    queue: Annotated[int, typer.Option(min=0, max=10000, help="requests that may wait; beyond, 429")] = 16,
    timeout: Annotated[float, typer.Option(min=0.01, help="seconds a request may run; beyond, 504")] = 60.0,
    max_body_mb: Annotated[float, typer.Option(min=0.01, help="largest request body in MB; beyond, 413")] = 32.0,
    max_rows: Annotated[int, typer.Option(min=1, help="rows per analyze request")] = 100_000,
    cors: Annotated[Optional[list[str]], typer.Option("--cors", help="an origin allowed by CORS (repeatable; default: "
                                                      "CORS off)")] = None,
    state_dir: Annotated[Optional[Path], typer.Option("--state-dir", help="where chat sessions persist (default: "
                                                      "./.anomalens-serve)")] = None,
) -> None:
    """Serve saved investigators over HTTP: the REST API under /v1 (OpenAPI at /docs), the web page at /, MCP at /mcp."""
    import os

    import uvicorn

    from anomalens.server import ServeConfig

    folders = _named_folders(models)
    keys: list[str] = []
    if api_key_file is not None:
        try:
            keys = [ln.strip() for ln in api_key_file.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        except OSError as exc:
            raise CliError(f"--api-key-file {str(api_key_file)!r} cannot be read ({exc.strerror})") from exc
    elif os.environ.get("ANOMALENS_API_KEYS"):
        keys = [k.strip() for k in os.environ["ANOMALENS_API_KEYS"].split(",") if k.strip()]
    if no_auth and keys:
        raise CliError("--no-auth and API keys exclude each other")
    if no_auth and host not in LOOPBACK:
        raise CliError(f"--no-auth is refused on {host!r}: serve without keys on a loopback host only ({', '.join(LOOPBACK)})")
    if not no_auth and not keys:
        raise CliError("API keys are required: --api-key-file FILE or ANOMALENS_API_KEYS (or --no-auth on a loopback host)")
    if any(len(k) < 16 for k in keys):
        raise CliError("API keys must be at least 16 characters long")
    cfg = ServeConfig(api_keys=keys, no_auth=no_auth, workers=workers, queue=queue, timeout=timeout,
                      max_body=int(max_body_mb * 1024 * 1024), max_rows=max_rows, cors_origins=cors or [],
                      state_dir=str(state_dir or Path(".anomalens-serve")), host=host, mcp=processes == 1)
    if processes == 1:
        from anomalens.server.app import process_app

        application = process_app(folders, cfg)  # loaded before the banner: a bad model folder fails here
    else:
        import json as _json

        from anomalens.server.app import ENV_SPEC

        for name, folder in folders.items():  # a bad model folder fails here, not in every worker
            _check_model(folder)
        os.environ[ENV_SPEC] = _json.dumps({"investigators": folders, "config": cfg.model_dump()})
    err.print(f"serving {for_terminal(', '.join(folders), 200)} on http://{for_terminal(host, 80)}:{port} "
              f"({'no API key' if no_auth else f'{len(keys)} API key(s)'}; {processes} process(es); OpenAPI at /docs; "
              f"{'MCP at /mcp' if processes == 1 else 'MCP over HTTP off: its sessions need --processes 1'})",
              highlight=False)
    if processes == 1:
        uvicorn.run(application, host=host, port=port, log_level="warning", access_log=False)
    else:
        uvicorn.run("anomalens.server.app:app_from_env", factory=True, workers=processes, host=host, port=port,
                    log_level="warning", access_log=False)


def _check_model(folder: str) -> None:
    """Load a saved investigator once (its errors are the user's, one line)."""
    from anomalens import Investigator

    Investigator.load(folder)


EVALS = ("tabular", "attribution", "explain", "store", "agent", "calibration", "levels", "tail_rules", "null_tails",
         "linear_member", "fit_large", "latency", "verifier", "series", "logs", "serve", "scale", "soak", "validity", "verdicts",
         "rare_modes", "series_blocks", "import_graph", "images", "series_ab")


@app.command(name="eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@guard
def eval_(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help=f"benchmark: {' | '.join(EVALS)}; extra arguments go to it")],
) -> None:
    """Run a benchmark from the source checkout's evals/ (results under evals/results/)."""
    import importlib

    if name not in EVALS:
        raise CliError(f"benchmark must be one of {list(EVALS)}, got {name!r}")
    try:
        mod = importlib.import_module(f"evals.{name}")
    except ModuleNotFoundError as exc:
        raise CliError(f"the benchmarks are not installed with this anomalens ({exc}); install it from the source "
                       "checkout: pip install -e .") from exc
    import inspect
    import sys

    try:
        if inspect.signature(mod.main).parameters:
            mod.main(list(ctx.args))
        else:  # a runner that reads sys.argv itself
            saved, sys.argv = sys.argv, [f"anomalens eval {name}", *ctx.args]
            try:
                mod.main()
            finally:
                sys.argv = saved
    except SystemExit as exc:  # argparse's --help and usage errors
        raise typer.Exit(exc.code if isinstance(exc.code, int) else 2) from None
