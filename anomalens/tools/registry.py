"""One list of investigation tools, declared once, from which every surface is generated.

A tool is a function ``run(box, **args) -> (text, artifact)`` over a ``Toolbox``: the text is what
a model or an analyst reads, the artifact the typed object it rests on. ``@tool`` declares it
once, with its typed arguments (a pydantic model), the modalities it applies to and its chat
command; from that one declaration come the LangChain tools of the chat graph
(``case_tools.make_tools``), the MCP server's tools (``server/mcp_server.py``) and the chat
commands with their ``/help`` line (``parse_command``, ``help_text``). A modality's own tools are
declared the same way, with ``modalities={"<its name>"}``::

    @tool("describe_pixel", PixelArgs, modalities={"images"}, command="/pixel", words=("x", "y"),
          usage="/pixel <x> <y>: a pixel's value against its normal range")
    def describe_pixel(box, x: int, y: int, case_id: str | None = None):
        "Describe one pixel of a case: its value, its normal range and its part in the score."
        ...
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = ["ToolSpec", "TOOLS", "help_text", "parse_command", "tool", "tools_for"]


@dataclass(frozen=True)
class ToolSpec:
    """A tool as declared once (see the module docstring).

    Attributes:
        name: the tool's name on every surface.
        args: its arguments; a ``case_id`` field means it acts on one case (a chat command fills
            it with the case under discussion).
        run: ``run(box, **args) -> (text, artifact)``; an ``InputError`` is the caller's mistake.
        modalities: the modalities it applies to (None: every one); a model is offered only
            those of its case's modality, and ``/help`` lists only those.
        command: its chat command ("/why"), or None; ``words``: the arguments the command's words
            fill, in order (the last string argument takes the rest of the line); ``usage``: the
            command's ``/help`` line.
        needs_cases: it acts on cases, so it is refused before any case is under investigation.
        mcp: offered over MCP.
        image: its artifact is the path of a PNG it wrote; MCP returns the picture as image content.
    """

    name: str
    args: type[BaseModel]
    run: Callable[..., tuple[str, Any]]
    modalities: frozenset[str] | None = None
    command: str | None = None
    words: tuple[str, ...] = ()
    usage: str = ""
    needs_cases: bool = True
    mcp: bool = True
    image: bool = False

    @property
    def description(self) -> str:
        return " ".join((self.run.__doc__ or self.name).split())

    def applies_to(self, modality: str) -> bool:
        return self.modalities is None or modality in self.modalities


TOOLS: dict[str, ToolSpec] = {}  # name -> spec, in declaration order


def tool(name: str, args: type[BaseModel], *, modalities: Iterable[str] | None = None, command: str | None = None,
         words: Iterable[str] = (), usage: str = "", needs_cases: bool = True, mcp: bool = True, image: bool = False):
    """Declare ``run(box, **args)`` as the tool ``name`` (see ``ToolSpec``); returns ``run`` unchanged."""

    def register(run: Callable[..., tuple[str, Any]]) -> Callable[..., tuple[str, Any]]:
        if name in TOOLS and TOOLS[name].run is not run:
            raise ValueError(f"a tool named {name!r} is already declared")
        words_ = tuple(words)
        unknown = [w for w in words_ if w not in args.model_fields]
        if unknown or (command is not None and not command.startswith("/")):
            raise ValueError(f"tool {name!r}: command must start with '/' and its words be fields of "
                             f"{args.__name__} ({unknown} are not)")
        TOOLS[name] = ToolSpec(name, args, run, None if modalities is None else frozenset(modalities), command,
                               words_, usage or (command or ""), needs_cases, mcp, image)
        return run

    return register


def tools_for(modality: str | None = None) -> list[ToolSpec]:
    """The declared tools (those that apply to ``modality`` when given), in declaration order."""
    return [s for s in TOOLS.values() if modality is None or s.applies_to(modality)]


def _commands(modality: str | None) -> dict[str, ToolSpec]:
    return {s.command: s for s in tools_for(modality) if s.command}


def help_text(modality: str | None = None) -> str:
    """The chat's ``/help``: each command of ``modality``'s tools with its usage."""
    return "Commands: " + "; ".join(s.usage for s in _commands(modality).values()) + "; /help: this list"


def parse_command(text: str, modality: str | None = None) -> tuple[ToolSpec | None, dict] | str:
    """(the command's tool, its arguments) for a chat line such as ``/neighbors 8``; ``(None, {})``
    for ``/help``; else the text that says what is wrong with the line."""
    try:
        parts = shlex.split(text)
    except ValueError as exc:
        return f"could not read the command ({exc})"
    if not parts:
        return "an empty command; try /help"
    cmd, rest = parts[0].lower(), parts[1:]
    if cmd == "/help":
        return None, {}
    known = _commands(modality)
    if cmd not in known:
        return f"unknown command {cmd!r}; try one of {sorted([*known, '/help'])}"
    spec = known[cmd]
    args: dict[str, Any] = {}
    for i, w in enumerate(spec.words):
        if i >= len(rest):
            break
        last = i == len(spec.words) - 1
        args[w] = " ".join(rest[i:]) if last and spec.args.model_fields[w].annotation is str else rest[i]
    try:
        valid = spec.args.model_validate(args)
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(p) for p in e["loc"])
        got = f", got {e['input']!r:.60}" if e.get("type") != "missing" else ""
        return f"usage: {spec.usage} ({where}: {e['msg'].lower()}{got})"
    return spec, {k: getattr(valid, k) for k in args}
