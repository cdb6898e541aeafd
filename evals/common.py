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


@contextlib.contextmanager
def llama_server():
    """llama.cpp's OpenAI-compatible server on a free 127.0.0.1 port, serving the embedded GGUF
    (the launcher the tests use, ``anomalens.testing``); yields its base URL."""
    from anomalens.llm.local import smollm2_path
    from anomalens.testing import llama_server as serve

    with tempfile.TemporaryDirectory() as tmp, serve(Path(tmp), smollm2_path()) as url:
        yield url
