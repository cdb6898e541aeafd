"""Chat-style investigation of one case: a LangGraph tool-calling loop over the investigation tools,
with the case's evidence in state, a bound on steps, and the verifier on every answer.

Three ways a turn is answered, all ending in the same verify step:

- an explicit command (``/why``, ``/neighbors [k]``, ``/restore``, ``/compare <id>``,
  ``/feature <name>``, ``/score``, ``/detectors``, ``/help``: each tool's command as its one
  declaration in ``tools/registry.py`` says) runs its tool directly; the answer is the
  template's claims about what the tool returned;
- with a model that can call tools (``ToolChatClient``: vLLM or any OpenAI-compatible server), the
  model calls tools until it calls ``answer`` with claims citing evidence ids (or answers in plain
  text, whose sentences are matched to the evidence they mention), within ``max_steps`` calls.
  ``tool_choice="auto"`` lets the model decide whether to call a tool (for models that do it well),
  each tool once a turn (an ``allowed_tools`` choice: the tools stay listed, so the prompt stays the
  same and a server or llama.cpp reuses its processed tokens), but for the last allowed step, which
  names the ``answer`` tool;
  ``"required"`` constrains every step: the server must return a tool call (vLLM decodes it under
  the tool's JSON schema), the tools are ``strict`` with their ids and names as enums, the first
  step is an investigation tool, and the last allowed step is the ``answer`` tool, so a model
  that will not call tools on its own still investigates and answers in typed claims;
- with a model that cannot (the embedded default, or none), the question is answered from the
  evidence by the reasoner (``answer_question``), after looking up any feature it names.

Whatever drafted the claims, only those the verifier accepts are shown; when none pass, the
template's answer is shown with a note. Tool artifacts that are evidence (a feature looked up, a
comparison, a profile) join the case's evidence, so later claims may cite them.

Conversation state is checkpointed (SQLite) per thread and can be resumed.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from contextlib import contextmanager
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage, convert_to_openai_messages
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from pydantic import ValidationError

from anomalens.grounding.drafting import Drafting, answer_question, with_answer
from anomalens.grounding.verifier import cite_text
from anomalens.errors import BackendError, CheckpointError, InputError
from anomalens.llm.base import Draft, Reasoner, ToolChatClient, allowed_tools
from anomalens.llm.reasoner import chat_system_prompt, gathered_prompt, next_step_prompt, schema_for
from anomalens.llm.template import TemplateReasoner, topics
from anomalens.schema import Attribution, Claim, Comparison, Evidence, EvidenceItem, Explanation, FeatureProfile
from anomalens.text import whole_sentences
from anomalens.tools import Toolbox, make_tools
from anomalens.tools.registry import TOOLS, help_text, parse_command

__all__ = ["ChatReply", "ChatSession", "ChatState", "TOOL_CHOICES", "build_chat_graph",
           "constrained_tool_specs"]

log = logging.getLogger(__name__)

ANSWER_TOOL = "answer"
TOOL_CHOICES = ("auto", "required")
ENUM_LIMIT = 200  # values listed in one enum of a constrained tool schema (case ids beyond it are not offered)
INTERPRETATION_LIMIT = 160  # characters of a chat answer's interpretation (a report's may run to 300)
FREE_TEXT_LIMIT = 80  # characters of a string argument without an enum, in constrained mode


class ChatState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    case_id: str
    evidence: dict  # the case's Evidence (JSON form, so checkpoints hold plain data), grown by lookups
    base: dict  # the case's Evidence as the conversation began (the system prompt's, which stays the same)
    turn: dict  # the case's Evidence as this turn began (what this turn's tools add is in its tool results)
    case_row: Any  # the case's values (a log case: its lines as a dict), so a saved conversation resumes without its data file
    question: str  # the analyst's text this turn
    command: str | None  # the command this turn, when it is one
    steps: int  # model calls this turn
    draft: list[dict] | None  # claims drafted this turn, before verification
    interpretation: str | None  # the model's interpretation this turn (unverified; shown apart if it passes)
    reply: dict | None  # this turn's verified answer (an Explanation)


@dataclass
class ChatReply:
    """One answered turn."""

    text: str  # what the analyst sees: verified claims, or a tool's error observation
    explanation: Explanation | None  # the verified claims (None for a help text or an error observation)
    tools: list[str] = field(default_factory=list)  # tools called this turn, in order
    steps: int = 0  # model calls this turn


def _evidence_of(state: ChatState) -> Evidence:
    return Evidence.model_validate(state["evidence"])


def _merge(ev: Evidence, artifact: Any) -> Evidence:
    """Evidence items among a tool's artifact join the case's evidence."""
    found = [a for a in (artifact if isinstance(artifact, (tuple, list)) else [artifact])
             if isinstance(a, (Attribution, FeatureProfile, Comparison, EvidenceItem))]
    return ev.with_items(*found) if found else ev


def constrained_tool_specs(specs: list[dict], enums: dict[str, list[str]]) -> list[dict]:
    """``specs`` (OpenAI tool format) for constrained decoding: each tool ``strict``, every string
    argument named in ``enums`` (as ``"<tool>.<argument>"`` or ``"<argument>"``) limited to those
    values (the items of a list too), every other string bounded in length, every object closed
    to other keys. The values are data (ids and names), never instructions."""
    import copy

    def tighten(schema: dict, tool: str, arg: str | None) -> dict:
        if "anyOf" in schema:
            schema["anyOf"] = [tighten(s, tool, arg) for s in schema["anyOf"]]
        kind = schema.get("type")
        if kind == "object":
            schema["additionalProperties"] = False
            props = schema.get("properties", {})
            for key, sub in props.items():
                props[key] = tighten(sub, tool, key)
        elif kind == "array" and isinstance(schema.get("items"), dict):
            schema["items"] = tighten(schema["items"], tool, arg)
        elif kind == "string" and "enum" not in schema and "const" not in schema:
            values = enums.get(f"{tool}.{arg}", enums.get(arg or ""))
            if values:
                schema["enum"] = list(dict.fromkeys(values))[:ENUM_LIMIT]
            else:
                schema.setdefault("maxLength", FREE_TEXT_LIMIT)
        for sub in schema.get("$defs", {}).values():
            tighten(sub, tool, None)
        return schema

    out = []
    for spec in specs:
        spec = copy.deepcopy(spec)
        fn = spec["function"]
        fn["parameters"] = tighten(fn.get("parameters") or {"type": "object", "properties": {}}, fn["name"], None)
        fn["strict"] = True
        out.append(spec)
    return out


def _offered(names: Sequence[str], modality: str) -> list[str]:
    """The tools a model is offered for a case: a tool of another modality only costs prompt tokens."""
    return [n for n in names if n in TOOLS and TOOLS[n].applies_to(modality)]


def _argument_enums(box: Toolbox, ev: Evidence, case_id: str) -> dict[str, list[str]]:
    """The values each tool argument may take in constrained mode, from the case and its evidence."""
    from anomalens.detectors import list_detectors

    others = [c for c in box.case_ids if c != case_id][: ENUM_LIMIT - 1]
    # a chat investigates one case: its tools act on it; other cases are reached through other_id
    return {"case_id": [case_id], "case_ids": [case_id, *others], "other_id": [*[e.id for e in ev.exemplars], *others],
            "describe_feature.name": list(ev.context.unit_names),
            "describe_region.region": list(ev.context.unit_names),  # offered for images only: their units are regions
            "describe_detector.name": [d.name for d in list_detectors()],
            "template_id": [t.template_id for t in ev.templates]}


def build_chat_graph(box: Toolbox, *, reasoner: Reasoner | None = None, model: ToolChatClient | None = None,
                     max_steps: int = 5, forced: Sequence[str] = (), max_claims: int = 4, checkpointer: Any = None,
                     tool_choice: str = "auto"):
    """The compiled chat graph.

    Args:
        box: the investigator and cases the tools act on.
        reasoner: answers questions from the evidence when no tool-calling model is given.
        model: a tool-calling chat model (None: questions are answered by ``reasoner``).
        max_steps: model calls per turn; at the bound the turn is answered from what was gathered.
        forced: tool names the model must call at its first steps, in order (``tool_choice``);
            for models that cannot choose tools reliably.
        tool_choice: ``"auto"`` (the model may answer without tools) or ``"required"`` (constrained:
            see the module's docstring).
        checkpointer: a LangGraph checkpointer (e.g. ``SqliteSaver``) to save and resume threads.
    """
    if tool_choice not in TOOL_CHOICES:
        raise InputError(f"tool_choice must be one of {list(TOOL_CHOICES)}, got {tool_choice!r}")
    if max_steps < 1:
        raise InputError(f"max_steps must be at least 1, got {max_steps!r}")
    tools = {t.name: t for t in make_tools(box)}
    modality = box.investigator.modality.name
    reasoner = reasoner or TemplateReasoner()
    constrained = tool_choice == "required"

    def start(state: ChatState) -> dict:
        text = state["messages"][-1].content if state["messages"] else ""
        update: dict = {"question": str(text).strip(), "command": None, "steps": 0, "draft": None, "reply": None}
        if not state.get("evidence"):
            update["evidence"] = update["base"] = box.evidence(state["case_id"]).model_dump(mode="json")
            update["case_row"] = box.saved_row(state["case_id"])
        update["turn"] = update.get("evidence") or state["evidence"]
        return update

    def route(state: ChatState) -> str:
        if state["question"].startswith("/"):
            return "command"
        return "agent" if model is not None else "lookup"

    # ---------------------------------------------------------------- explicit commands
    def command(state: ChatState) -> dict:
        parsed = parse_command(state["question"], modality)
        if isinstance(parsed, str):
            return {"messages": [AIMessage(parsed)], "command": None}
        spec, args = parsed
        if spec is None:
            return {"messages": [AIMessage(help_text(modality))]}
        call = {"name": spec.name, "args": {**args}, "id": f"cmd-{len(state['messages'])}", "type": "tool_call"}
        if "case_id" in spec.args.model_fields:  # a tool about one case acts on the case under discussion
            call["args"]["case_id"] = state["case_id"]
        return {"messages": [AIMessage("", tool_calls=[call])], "command": spec.command}

    def after_command(state: ChatState) -> str:
        return "tools" if state.get("command") else END

    # ---------------------------------------------------------------- tool-calling model
    def agent(state: ChatState) -> dict:
        ev = _evidence_of(state)
        # the system prompt shows the case's evidence as it was when the conversation began, and what
        # the tools gathered since comes last, in a message of its own: the prompt's head then stays the
        # same from step to step and question to question, so a server or llama.cpp reuses its
        # processed tokens (on this CPU a 1,500-token head costs 30 s, a reused one nothing)
        base = Evidence.model_validate(state["base"]) if state.get("base") else ev
        system = chat_system_prompt(base, max_claims=max_claims)
        gathered = gathered_prompt(ev, base, Evidence.model_validate(state["turn"]) if state.get("turn") else None)
        specs = [convert_to_openai_tool(tools[n]) for n in _offered(list(tools), modality)]
        params = schema_for(ev).model_json_schema()
        if "interpretation" in params.get("properties", {}):  # a chat answer's is a sentence: each token is
            params["properties"]["interpretation"]["maxLength"] = INTERPRETATION_LIMIT  # decoding time
        specs.append({"type": "function", "function": {
            "name": ANSWER_TOOL, "description": "Give the analyst the final answer as claims citing evidence ids.",
            "parameters": params}})
        step = state.get("steps", 0)
        called = _called(state["messages"])  # the tools this turn has called: each is offered once a turn
        choice: str | dict = "auto"
        if constrained or step < len(forced):  # a forced step is decoded under the strict schemas too
            specs = constrained_tool_specs(specs, _argument_enums(box, ev, state["case_id"]))
        if step < len(forced):
            choice = {"type": "function", "function": {"name": forced[step]}}
        elif constrained:
            specs = [s for s in specs if s["function"]["name"] not in called]  # each tool once a turn: progress
            choice = "required"
            if step == 0 and max_steps > 1:  # look before answering: the first step is an investigation tool
                specs = [s for s in specs if s["function"]["name"] != ANSWER_TOOL]
            elif step >= max_steps - 1:  # the last step answers
                choice = {"type": "function", "function": {"name": ANSWER_TOOL}}
        elif max_steps > 1 and step >= max_steps - 1:  # auto: the last allowed step answers too, rather than
            choice = {"type": "function", "function": {"name": ANSWER_TOOL}}  # a look-up the turn cannot use
        elif called:  # auto: each tool once a turn, as in constrained mode; the tools stay listed (a prompt
            # that lists them stays the same) and only the choice narrows
            choice = allowed_tools("auto", [s["function"]["name"] for s in specs if s["function"]["name"] not in called])
        turn_msgs = _this_turn(state["messages"])
        # earlier turns as plain question and answer (their tool calls are done; a cut-off pair of a
        # tool call and its result would be an invalid request), the last 3 turns at most
        earlier = [m for m in state["messages"][: len(state["messages"]) - len(turn_msgs)]
                   if isinstance(m, HumanMessage) or (isinstance(m, AIMessage) and m.content and not m.tool_calls)]
        messages = [{"role": "system", "content": system}, *convert_to_openai_messages(earlier[-6:]),
                    *convert_to_openai_messages(turn_msgs)]
        trailing = [gathered] if gathered else []
        if step > 0 and not constrained:  # after a look-up: answer when it answers
            trailing.append(next_step_prompt(sorted(called)))
        if trailing:
            messages.append({"role": "system", "content": "\n\n".join(trailing)})
        try:
            turn = model.chat(messages, specs, tool_choice=choice)
        except BackendError as exc:
            log.warning("chat model failed: %s", exc)
            return {"steps": step + 1, "draft": None, "messages": [AIMessage("", additional_kwargs={"error": str(exc)})]}
        calls = [{"name": c.name, "args": c.args, "id": c.id, "type": "tool_call"} for c in turn.tool_calls]
        return {"steps": step + 1, "messages": [AIMessage(turn.content, tool_calls=calls)]}

    def after_agent(state: ChatState) -> str:
        last = state["messages"][-1]
        calls = getattr(last, "tool_calls", None) or []
        if any(c["name"] == ANSWER_TOOL for c in calls) or not calls:
            return "draft"
        return "tools" if state["steps"] < max_steps else "draft"

    def run_tools(state: ChatState) -> dict:
        ev = _evidence_of(state)
        out = []
        for call in state["messages"][-1].tool_calls:
            tool = tools.get(call["name"])
            if tool is None:
                out.append(ToolMessage(f"unknown tool {call['name']!r}; try one of {sorted([*tools, ANSWER_TOOL])}",
                                       tool_call_id=call["id"], name=call["name"], status="error"))
                continue
            msg = tool.invoke(call)
            ev = _merge(ev, msg.artifact)
            # the artifact has joined the evidence; the checkpoint keeps only the text
            out.append(ToolMessage(msg.content, tool_call_id=call["id"], name=call["name"], status=msg.status))
        return {"messages": out, "evidence": ev.model_dump(mode="json")}

    def after_tools(state: ChatState) -> str:
        return "draft" if state.get("command") else "agent"

    # ---------------------------------------------------------------- answering
    def lookup(state: ChatState) -> dict:
        """Without a tool-calling model: look up the features the question names."""
        ev = _evidence_of(state)
        _, features = topics(state["question"], ev)
        calls = [{"name": "describe_feature", "args": {"name": f, "case_id": state["case_id"]},
                  "id": f"lookup-{len(state['messages'])}-{i}", "type": "tool_call"} for i, f in enumerate(features[:3])]
        return {"messages": [AIMessage("", tool_calls=calls)]} if calls else {}

    def after_lookup(state: ChatState) -> str:
        last = state["messages"][-1]
        return "tools_then_answer" if isinstance(last, AIMessage) and last.tool_calls else "answer"

    def answer(state: ChatState) -> dict:
        ev = _evidence_of(state)
        ex = answer_question(state["question"], ev, reasoner)
        return {"reply": ex.model_dump(mode="json"), "messages": [AIMessage(ex.text)]}

    def draft(state: ChatState) -> dict:
        """Claims of this turn, before verification: a command's, or the model's answer."""
        ev = _evidence_of(state)
        if state.get("command"):
            call = next(m for m in reversed(state["messages"]) if isinstance(m, AIMessage) and m.tool_calls)
            failed = [m for m in state["messages"][-len(call.tool_calls):] if getattr(m, "status", "") == "error"]
            if failed:  # the tool said why (unknown feature, unknown case): show that, nothing to verify
                return {"draft": None, "reply": None, "messages": [AIMessage(failed[0].content)]}
            if state["command"] in ("/plot", "/lines"):  # a file written, or raw log lines shown as data: the tool's text
                return {"draft": None, "reply": None, "messages": [AIMessage(state["messages"][-1].content)]}
            held = set(Evidence.model_validate(state["turn"]).items()) if state.get("turn") else set()
            claims = TemplateReasoner().command_claims(state["command"], ev, call.tool_calls[0]["args"],
                                                       new=[i for i in ev.items() if i not in held])
            return {"draft": [c.model_dump() for c in claims], "interpretation": None}
        last = state["messages"][-1]
        for c in getattr(last, "tool_calls", None) or []:
            if c["name"] == ANSWER_TOOL:
                try:
                    drafted = schema_for(ev).model_validate(c["args"])
                    return {"draft": [d.claim().model_dump() for d in drafted.claims],
                            "interpretation": whole_sentences(drafted.interpretation.strip(), INTERPRETATION_LIMIT) or None}
                except ValidationError as exc:
                    return {"draft": [{"text": json.dumps(c["args"])[:200], "cites": [],
                                       "reason": f"invalid answer: {exc.errors()[0]['msg']}"}]}
        text = last.content if isinstance(last, AIMessage) and isinstance(last.content, str) else ""
        return {"draft": [c.model_dump() for c in cite_text(text, ev)] if text.strip() else [], "interpretation": None}

    def verify(state: ChatState) -> dict:
        if state.get("draft") is None:
            return {}
        ev = _evidence_of(state)
        source = "template" if state.get("command") else getattr(model, "name", "model")
        d = Drafting(source)
        claims = [Claim(text=c["text"], cites=c.get("cites", []), kind=c.get("kind"), params=c.get("params") or {})
                  for c in state["draft"]]
        if claims:
            d.add_draft(Draft(claims, interpretation=state.get("interpretation")), ev)
        if not d.accepted:
            last = state["messages"][-1]
            if isinstance(last, AIMessage) and last.additional_kwargs.get("error"):
                d.error = last.additional_kwargs["error"]
            elif not claims:
                d.error = f"no answer within {max_steps} steps" if state.get("steps", 0) >= max_steps else "no answer"
        ex = d.finish(ev, lambda: TemplateReasoner().answer(state["question"], ev))
        if not state.get("command"):
            ex = with_answer(ex, state["question"], ev)
        return {"reply": ex.model_dump(mode="json"), "messages": [AIMessage(ex.text)]}

    g = StateGraph(ChatState)
    for name, fn in [("start", start), ("command", command), ("agent", agent), ("tools", run_tools),
                     ("lookup", lookup), ("tools_then_answer", run_tools), ("answer", answer), ("draft", draft),
                     ("verify", verify)]:
        g.add_node(name, fn)
    g.add_edge(START, "start")
    g.add_conditional_edges("start", route, ["command", "agent", "lookup"])
    g.add_conditional_edges("command", after_command, ["tools", END])
    g.add_conditional_edges("agent", after_agent, ["tools", "draft"])
    g.add_conditional_edges("tools", after_tools, ["agent", "draft"])
    g.add_conditional_edges("lookup", after_lookup, ["tools_then_answer", "answer"])
    g.add_edge("tools_then_answer", "answer")
    g.add_edge("answer", END)
    g.add_edge("draft", "verify")
    g.add_edge("verify", END)
    return g.compile(checkpointer=checkpointer)


def _called(messages: list[AnyMessage]) -> set[str]:
    """The tools called this turn (the answer tool aside)."""
    return {c["name"] for m in _this_turn(messages) if isinstance(m, AIMessage) for c in m.tool_calls} - {ANSWER_TOOL}


def _this_turn(messages: list[AnyMessage]) -> list[AnyMessage]:
    """The messages since the last human message (inclusive)."""
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], HumanMessage):
            return messages[i:]
    return messages


class ChatSession:
    """An investigation of one case that remembers the conversation.

    Args:
        box: the investigator and cases; the case in focus is investigated unless ``case_id`` is given.
        reasoner / model / max_steps / forced / tool_choice: see ``build_chat_graph``.
        checkpoint: a SQLite file that keeps the conversation (None: in memory for this session only).
        thread_id: the conversation to start or resume in ``checkpoint``.
    """

    def __init__(self, box: Toolbox, case_id: str | None = None, *, reasoner: Reasoner | None = None,
                 model: ToolChatClient | None = None, checkpoint: str | Path | None = None, thread_id: str = "default",
                 max_steps: int = 5, forced: Sequence[str] = (), tool_choice: str = "auto") -> None:
        from langgraph.checkpoint.memory import InMemorySaver

        self.box, self.thread_id = box, str(thread_id)
        self._lock_path: Path | None = None
        if checkpoint is not None:
            from langgraph.checkpoint.sqlite import SqliteSaver

            checkpoint = Path(checkpoint)
            try:
                checkpoint.parent.mkdir(parents=True, exist_ok=True)
                self._conn = sqlite3.connect(str(checkpoint), check_same_thread=False, timeout=60)
                saver = SqliteSaver(self._conn)
            except (sqlite3.Error, OSError) as exc:
                raise CheckpointError(f"checkpoint {str(checkpoint)!r} cannot be opened as a chat store: {exc}") from exc
            self._lock_path = checkpoint.with_name(checkpoint.name + ".lock")
        else:
            self._conn, saver = None, InMemorySaver()
        self.graph = build_chat_graph(box, reasoner=reasoner, model=model, max_steps=max_steps, forced=forced,
                                      checkpointer=saver, tool_choice=tool_choice)
        self._config = {"configurable": {"thread_id": self.thread_id}, "recursion_limit": 4 * max_steps + 20}
        with self._writer():  # the first read creates the tables (switching the file to WAL): one process at a time
            saved = self._state().values
        if saved.get("case_id") is not None:  # resuming: the thread's own case, with its saved values
            if case_id is not None and str(case_id) != saved["case_id"]:
                raise InputError(f"thread {self.thread_id!r} investigates case {saved['case_id']!r}, not {case_id!r}; "
                                 "use another thread_id")
            self.case_id = saved["case_id"]
            if self.case_id not in box.case_ids:
                box.add_case(saved["case_row"], self.case_id, focus=False)
        elif case_id is None and box.focus is None:
            raise InputError(f"thread {self.thread_id!r} holds no saved conversation, and no case was given to start one")
        else:
            self.case_id = box.resolve(case_id)

    def _state(self):
        """The thread's saved state; a checkpoint file that is not a chat store is a CheckpointError."""
        try:
            return self.graph.get_state(self._config)
        except (sqlite3.DatabaseError, ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"the chat checkpoint is corrupted or not a chat store ({exc})") from exc

    @contextmanager
    def _writer(self):
        """One writer per checkpoint file at a time, across processes: an exclusive lock held for
        the whole turn, so a second process reads the first one's turn before adding its own (no
        turn is lost to interleaved read-modify-write)."""
        if self._lock_path is None:
            yield
            return
        import fcntl

        with open(self._lock_path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @property
    def resumed(self) -> bool:
        """Whether the thread already held a conversation."""
        return bool(self._state().values.get("messages"))

    def ask(self, text: str) -> ChatReply:
        """Answer one analyst turn (a question or a /command)."""
        for kind, data in self.ask_stream(text):
            if kind == "answer":
                return data
        raise AssertionError("ask_stream ends with its answer")  # pragma: no cover

    def ask_stream(self, text: str) -> Iterator[tuple[str, Any]]:
        """Answer one analyst turn as it runs: ``("call", {"tools": [...], "args": [...]})`` when the model
        calls tools, ``("observation", {"tool", "text"})`` for each tool's result, then, once the answer
        is verified, ``("claim", claim JSON)`` for each verified claim and ``("answer", ChatReply)``.
        Nothing the verifier has not accepted is yielded as a claim or an answer."""
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"text must be a non-empty question or /command, got {text!r}")
        with self._writer():
            before = len(self._state().values.get("messages", []))
            try:
                for update in self.graph.stream({"messages": [HumanMessage(text.strip())], "case_id": self.case_id},
                                                self._config, stream_mode="updates"):
                    for delta in update.values():
                        for m in (delta.get("messages") or []) if isinstance(delta, dict) else []:
                            if isinstance(m, AIMessage) and m.tool_calls:
                                yield "call", {"tools": [c["name"] for c in m.tool_calls],
                                               "args": [c["args"] for c in m.tool_calls]}
                            elif isinstance(m, ToolMessage):
                                yield "observation", {"tool": m.name, "text": str(m.content)}
                state = self._state().values
            except sqlite3.DatabaseError as exc:
                raise CheckpointError(f"the chat checkpoint could not be written ({exc})") from exc
        new = state["messages"][before + 1:]
        called = [c["name"] for m in new if isinstance(m, AIMessage) for c in m.tool_calls]
        reply = state.get("reply")
        out = ChatReply(text=str(new[-1].content) if new else "",
                        explanation=Explanation.model_validate(reply) if reply else None,
                        tools=called, steps=state.get("steps", 0))
        for claim in out.explanation.claims if out.explanation is not None else []:
            yield "claim", claim.model_dump(mode="json")
        yield "answer", out

    @property
    def evidence(self) -> Evidence:
        """The case's evidence, with what this conversation looked up."""
        values = self._state().values
        return Evidence.model_validate(values["evidence"]) if values.get("evidence") else self.box.evidence(self.case_id)

    def history(self) -> list[tuple[str, str]]:
        """(role, text) of the conversation so far (tool calls shown by name)."""
        out = []
        for m in self._state().values.get("messages", []):
            if isinstance(m, HumanMessage):
                out.append(("user", str(m.content)))
            elif isinstance(m, ToolMessage):
                out.append(("tool", f"{m.name}: {m.content}"))
            elif isinstance(m, AIMessage):
                if m.tool_calls:
                    out.append(("call", ", ".join(f"{c['name']}({json.dumps(c['args'])})" for c in m.tool_calls)))
                if m.content:
                    out.append(("assistant", str(m.content)))
        return out

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
