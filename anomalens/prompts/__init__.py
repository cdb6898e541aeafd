"""Prompt templates (``*.jinja2`` files beside this module) and their one loader.

Rendering uses strict undefined variables: a template that names a missing variable fails loudly.
Untrusted text (feature names, values, user questions, log lines) is only ever passed in through
``data_block``, which serialises it as JSON inside delimiters and truncates it to a budget, so it
stays data and never becomes an instruction.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["PROMPTS_DIR", "data_block", "render", "template_hash", "template_names"]

PROMPTS_DIR = Path(__file__).resolve().parent
DATA_BUDGET = 6000  # characters of untrusted data per prompt
NAME_BUDGET = 64  # characters of any single string inside a data block
DATA_FORMAT = "json-compact-2"  # what the prompts' data looks like; change it when the payloads change


@lru_cache(maxsize=1)
def _env():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(PROMPTS_DIR)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )


def template_names() -> list[str]:
    return sorted(p.name for p in PROMPTS_DIR.glob("*.jinja2"))


def render(name: str, **variables: Any) -> str:
    """Render ``<name>`` (e.g. "explain_system.jinja2") with ``variables``."""
    return _env().get_template(name).render(**variables)


def template_hash(*names: str) -> str:
    """Short hash of the named templates' text and of the data blocks' format, recorded with each
    explanation and eval result."""
    h = hashlib.sha256(DATA_FORMAT.encode())
    for n in names:
        h.update((PROMPTS_DIR / n).read_bytes())
    return h.hexdigest()[:12]


def _clip(obj: Any, n: int = NAME_BUDGET) -> Any:
    if isinstance(obj, str):
        return obj if len(obj) <= n else obj[: n - 1] + "…"
    if isinstance(obj, dict):
        return {_clip(k, n): _clip(v, n) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clip(v, n) for v in obj]
    return obj


def data_block(payload: Any, budget: int = DATA_BUDGET, *, text_budget: int = NAME_BUDGET) -> str:
    """Untrusted data as JSON between <data> delimiters, each string clipped to ``text_budget``
    characters and the whole truncated to ``budget``."""
    text = json.dumps(_clip(payload, text_budget), ensure_ascii=False, default=str, separators=(",", ":"))
    text = text.replace("</data>", "<\\/data>")  # the data cannot close its own block
    if len(text) > budget:
        text = text[:budget] + " …(truncated)"
    return f"<data>\n{text}\n</data>"
