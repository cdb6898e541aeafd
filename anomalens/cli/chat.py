"""``anomalens chat``: an investigation of one case with the chat agent, in the terminal."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from anomalens.cli.common import (
    BaseUrlOpt,
    CliError,
    IdColOpt,
    JsonOpt,
    LlmOpt,
    ModelOpt,
    app,
    cli_reasoner,
    err,
    guard,
    load_model,
    out,
    pick_row,
    read_table,
    select_features,
    shown,
    verdict_word,
)
from anomalens.errors import InputError
from anomalens.text import for_terminal


@app.command()
@guard
def chat(
    model_dir: Annotated[Path, typer.Argument(metavar="DIR", help="a folder written by 'anomalens fit'")],
    data: Annotated[Optional[Path], typer.Argument(help="the rows the case comes from (omit to resume a saved chat)")] = None,
    row: Annotated[Optional[str], typer.Option(help="the case: 0-based row position, or a value of --id-column")] = None,
    event: Annotated[Optional[int], typer.Option(min=1, help="a series: the event to investigate (as 'analyze' "
                                                 "numbers them)")] = None,
    incident: Annotated[Optional[int], typer.Option(min=1, help="logs: the incident to investigate (as 'triage' "
                                                    "ranks them)")] = None,
    id_column: IdColOpt = None,
    label_column: Annotated[Optional[str], typer.Option("--label-column", help="a series' label column to leave out")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="a series' columns to leave out")] = None,
    thread: Annotated[Optional[str], typer.Option(help="conversation id to start or resume (default: case-<id>)")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="SQLite file keeping conversations (default: DIR/chat.sqlite)")] = None,
    max_steps: Annotated[int, typer.Option(min=1, max=20, help="tool calls per question")] = 5,
    tool_choice: Annotated[Optional[str], typer.Option(
        "--tool-choice", help="with a tool-calling server: 'required' (every step a tool call or the answer, "
        "decoded under the tool schemas) or 'auto' (the model decides); default: ANOMALENS_LLM_TOOL_CHOICE "
        "or 'required'")] = None,
    llm: LlmOpt = None, base_url: BaseUrlOpt = None, model: ModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Investigate one case interactively: ask questions, or use /why /neighbors /restore /compare /feature.

    Reads one line per turn from the terminal or from piped input; /quit or end of input stops.
    """
    from anomalens.agents.chat import TOOL_CHOICES, ChatSession
    from anomalens.config import get_settings
    from anomalens.llm.reasoner import tool_client, tool_mode
    from anomalens.tools.toolbox import toolbox_for

    if tool_choice is not None and tool_choice not in TOOL_CHOICES:  # before the model is loaded
        raise CliError(f"--tool-choice must be one of {list(TOOL_CHOICES)}, got {tool_choice!r}")
    reasoner = cli_reasoner(llm, base_url, model)
    inv = load_model(model_dir, reasoner)
    box_cls = toolbox_for(inv)  # the modality's toolbox: its cases are rows, a series' events, a log's incidents, ...
    box = box_cls(inv)
    case_id = None
    if inv.modality.reads_text:
        if data is not None:
            if incident is None:
                raise CliError("--incident is required with logs: which incident to investigate ('triage' ranks them)")
            if str(data) == "-":
                raise CliError("chat reads your questions from standard input: give the logs as a file")
            box = box_cls(inv, str(data), limit=max(incident, 20))
            case_id = _focus_numbered(box, "incident", incident, data.name)
        elif thread is None:
            raise CliError("give the logs and --incident to start a chat, or --thread to resume a saved one")
    elif inv.modality.sequential:
        if data is not None:
            if event is None:
                raise CliError("--event is required with a series: which event to investigate ('analyze' lists them)")
            box = box_cls(inv, inv.modality.training_table(read_table(data), label_column=label_column, exclude=exclude)[0])
            case_id = _focus_numbered(box, "event", event, data.name)
        elif thread is None:
            raise CliError("give DATA and --event to start a chat, or --thread to resume a saved one")
    elif inv.modality.reads_paths and data is not None:  # images: a folder (or file) the modality reads itself
        if row is None:
            raise CliError(f"--row is required with DATA: which {inv.modality.case_noun} to investigate (its file name)")
        if not data.exists():
            raise CliError(f"DATA must be an existing folder or file, got {str(data)!r} (no such path)")
        box = box_cls(inv, str(data))
        if row not in box.case_ids:
            raise CliError(f"--row must name one of the {len(box.case_ids)} files in {str(data)!r} "
                           f"(e.g. {box.case_ids[:5]}), got {row!r}")
        box.focus = case_id = row
    elif data is not None:
        if row is None:
            raise CliError("--row is required with DATA: which row to investigate")
        X, ids = select_features(read_table(data), id_column=id_column, features=inv.feature_names)
        _, case_id = pick_row(X, ids, row)
        box = box_cls(inv, X, ids=ids or [str(i) for i in range(len(X))], focus=case_id)  # /compare <id> reaches every row
    elif thread is None:
        raise CliError("give DATA and --row to start a chat, or --thread to resume a saved one")
    checkpoint = checkpoint or _default_checkpoint(model_dir)
    model = tool_client(reasoner)
    session = ChatSession(box, case_id, reasoner=reasoner, model=model, max_steps=max_steps,
                          tool_choice=tool_mode(model, tool_choice or get_settings().llm_tool_choice),
                          checkpoint=checkpoint, thread_id=thread or f"case-{case_id}")
    if case_id is None and not session.resumed:
        raise CliError(f"no saved conversation {thread!r} in {str(checkpoint)!r}; give DATA and --row")
    interactive = sys.stdin.isatty() and not as_json
    if not as_json:
        ev = session.evidence
        v = ev.verdict
        for line in filter(None, (p.headline() for p in ev.parts)):  # a series' event, a log's incident
            out.print(f"[bold]{for_terminal(line[0], 60)}[/]: {for_terminal(line[1], 300)}", highlight=False)
        out.print(f"[bold]Case {for_terminal(ev.case_id, 40)}[/]: {verdict_word(v)} "
                  f"(p-value {v.p_value:.4g}, detector {for_terminal(v.detector, 40)}); top "
                  f"{ev.context.units_title.lower() or 'features'}: "
                  f"{for_terminal(', '.join(a.unit for a in ev.attributions[:3]), 120)}. Ask a question, or /help. "
                  "/quit ends.", highlight=False)
        if session.resumed:
            out.print(f"(resumed conversation {for_terminal(repr(session.thread_id), 60)}, "
                      f"{len(session.history())} earlier entries)", highlight=False)
    if interactive:
        try:  # line editing and history for input() (arrow keys, Ctrl-R), where the platform has readline
            import readline  # noqa: F401
        except ImportError:
            pass
    try:
        while True:
            try:
                line = input("you> " if interactive else "")
            except EOFError:
                break
            line = line.strip()
            if not line:
                continue
            if line.lower() in ("/quit", "/exit", "quit", "exit"):
                break
            if interactive:  # a turn with a model takes seconds: say that it is working
                with err.status("[dim]thinking...[/]" if not line.startswith("/") else "[dim]running...[/]"):
                    reply = session.ask(line)
            else:
                reply = session.ask(line)
            if as_json:
                print(json.dumps({"question": line, "answer": reply.text, "tools": reply.tools, "steps": reply.steps,
                                  "explanation": None if reply.explanation is None
                                  else json.loads(reply.explanation.model_dump_json())}), flush=True)
                continue
            if not interactive:
                out.print(f"you> {for_terminal(line, 2000)}", highlight=False)
            _print_reply(reply)
    finally:
        session.close()


def _focus_numbered(box, kind: str, number: int, source: str) -> str:
    """Focus the box on ``<kind>-<number>`` (an event of a series, an incident of logs), or a one-line error."""
    try:
        return box.numbered(kind, number, f" in {shown(source, 80)}", field=f"--{kind}")
    except InputError as exc:
        raise CliError(str(exc)) from None


def _default_checkpoint(model_dir: Path) -> Path:
    """DIR/chat.sqlite, or, for a model folder this user cannot write, a file in the user's cache."""
    import hashlib
    import os

    if os.access(model_dir, os.W_OK):
        return model_dir / "chat.sqlite"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "anomalens" / "chats"
    key = hashlib.sha256(str(model_dir.resolve()).encode()).hexdigest()[:16]
    return cache / f"{key}.sqlite"




def _print_reply(reply) -> None:
    ex = reply.explanation
    if ex is None:  # a tool's text (raw log lines shown as data, a file written) or an error: each line escaped
        parts = reply.text.splitlines() or [""]
        out.print(f"anomalens> {for_terminal(parts[0], 1000)}", highlight=False)
        for part in parts[1:60]:
            out.print(f"  {for_terminal(part, 1000)}", highlight=False)
        return
    tools = f"; tools: {', '.join(reply.tools)}" if reply.tools else ""
    out.print(f"anomalens> [dim]({for_terminal(ex.source + ', ' + ('verified' if ex.grounded else 'NOT verified') + tools, 200)})[/]",
              highlight=False)
    for c in ex.claims:
        cites = ", ".join(c.cites[:4]) + (", ..." if len(c.cites) > 4 else "")
        out.print(f"  - {for_terminal(c.text, 1000)} [dim]\\[{for_terminal(cites, 300)}][/]", highlight=False)
    if ex.interpretation:
        out.print(f"  [italic]the model's interpretation (not verified):[/] {for_terminal(ex.interpretation, 1000)}",
                  highlight=False)
    if ex.note:
        out.print(f"  [dim]{for_terminal(ex.note, 1000)}[/]", highlight=False)
    sys.stdout.flush()
