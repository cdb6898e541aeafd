"""Helpers shared by the benchmark runners."""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, data: Any, markdown: str) -> None:
    """Write ``results/<name>.json`` and ``results/<name>.md`` (the markdown is also printed)."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=1))
    (RESULTS / f"{name}.md").write_text(markdown if markdown.endswith("\n") else markdown + "\n")
    print(markdown)


def ran_lines(res: dict, parts: tuple[str, ...], module: str) -> list[str]:
    """Markdown lines naming, for each part of ``res``, the command line that last produced it
    (``res["ran"]``: part -> {"args", "date"}; a partial run keeps the other parts' results), and the
    earlier commands whose rows it kept (``"earlier"``: a list of such stamps, newest first)."""
    ran = res.get("ran", {})
    commands: dict[str, list[str]] = {}

    def command(r: dict) -> str:
        return f"`python -m {module}{' ' + r['args'] if r['args'] else ''}` ({r['date']})"

    for part in parts:
        if part in res:
            r = ran.get(part)
            line = "an earlier run (its command was not recorded)" if r is None else command(r)
            if r is not None and r.get("earlier"):
                line += "; the other rows from " + ", then ".join(command(e) for e in r["earlier"])
            commands.setdefault(line, []).append(part)
    return [f"- {', '.join(ps)}: {line}" for line, ps in commands.items()] + [""]


@contextlib.contextmanager
def llama_server():
    """llama.cpp's OpenAI-compatible server on a free 127.0.0.1 port, serving the embedded GGUF
    (the launcher the tests use, ``anomalens.testing``); yields its base URL."""
    from anomalens.llm.local import smollm2_path
    from anomalens.testing import llama_server as serve

    with tempfile.TemporaryDirectory() as tmp, serve(Path(tmp), smollm2_path()) as url:
        yield url


def result_name(benchmark: str, detector: str) -> str:
    """``results/<benchmark>.*`` for the VAE (the first runs were the VAE's), ``<benchmark>_<detector>.*``
    for another detector."""
    return benchmark if detector == "vae" else f"{benchmark}_{detector}"


def earlier(name: str) -> dict:
    """The last run's ``results/<name>.json`` ({} when there is none)."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def keep_earlier(name: str, results: list[dict], ran: set[str], meta: dict) -> list[dict]:
    """``results`` plus the rows of ``results/<name>.json`` for backends not run this time (each
    keeps the date of its run, and is kept only when its prompts are the ones measured now)."""
    old = earlier(name)
    old_meta = old.get("meta", {})
    same = all(old_meta.get(k) == meta.get(k) for k in ("prompt_hash", "prompt_hashes") if k in meta)
    kept = [{**r, "date": r.get("date", old_meta.get("date"))} for r in old.get("results", [])
            if r.get("backend") not in ran] if same else []
    order = {b: i for i, b in enumerate(["template", "local", "openai"])}
    return sorted([*results, *kept], key=lambda r: order.get(r["backend"], len(order)))


# the 1.5B model of the agent and explanation benchmarks: in process (its GGUF) and behind vLLM's CPU build
# (`make model-vllm` exports it to bfloat16 under this name)
MODEL_1_5B = "qwen2.5-coder-1.5b"
DTYPE_1_5B_VLLM = "bfloat16"


@contextlib.contextmanager
def vllm_client(model: str | None = None, dtype: str = "float32"):
    """An OpenAI client of vLLM's OpenAI-compatible server (the CPU build from .venv-vllm, started on
    a free 127.0.0.1 port by the launcher the tests use, serving the embedded model exported for
    vLLM, or ``model``'s folder there); None, with the reason printed, where that server cannot run here."""
    from anomalens.llm.openai_client import OpenAIChatClient
    from anomalens.testing import vllm_missing, vllm_server

    reason = vllm_missing()
    if reason:
        print(f"vllm skipped: {reason}", flush=True)
        yield None
        return
    from anomalens.testing import VLLM_MODEL_NAME

    model = model or VLLM_MODEL_NAME
    with tempfile.TemporaryDirectory() as tmp, vllm_server(Path(tmp), model=model, dtype=dtype) as url:
        yield OpenAIChatClient(url, model=model, timeout=300)
