"""The narrow door to language models: a chat-client Protocol and the reasoner Protocol.

A ``ChatClient`` turns a system and a user prompt into a validated pydantic object (structured
output). A ``Reasoner`` turns case ``Evidence`` into draft claims; it may use a client or not
(the template). Only modules in ``anomalens.llm`` import ``openai``, ``llama_cpp`` or
``transformers``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from anomalens.errors import BackendError
from anomalens.llm.content import UserContent

from anomalens.schema import Claim, Evidence

__all__ = ["ask_validated", "ChatClient", "ChatTurn", "ClaimDraft", "Completion", "Draft", "DraftClaims", "KindDraft",
           "Reasoner", "ToolCallRequest", "ToolChatClient"]

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class Completion(Generic[T]):
    value: T
    completion_tokens: int  # tokens generated, over every attempt
    seconds: float  # wall time, over every attempt
    attempts: int = 1


def ask_validated(generate: Callable[[list[dict]], tuple[str, int]], messages: list[dict], schema: type[T], *,
                  name: str, max_reasks: int) -> Completion[T]:
    """Ask, validate the reply as ``schema``, and re-ask with the validation error at most
    ``max_reasks`` times (instructor's re-ask); ``generate`` returns (reply text, tokens generated)."""
    t0 = time.perf_counter()
    tokens = 0
    for attempt in range(max_reasks + 1):
        content, n = generate(messages)
        tokens += n
        try:
            return Completion(schema.model_validate_json(content.strip()), tokens, time.perf_counter() - t0, attempt + 1)
        except ValidationError as exc:
            msg = exc.errors()[0]["msg"]
            if attempt == max_reasks:
                raise BackendError(f"{name} returned no valid {schema.__name__} after {attempt + 1} attempts: {msg}") from exc
            messages = [*messages, {"role": "assistant", "content": content[:2000]},
                        {"role": "user", "content": f"That reply was not valid ({msg}). Answer again with JSON only."}]
    raise AssertionError("unreachable")


@runtime_checkable
class ChatClient(Protocol):
    name: str  # "llm:<model>"

    def complete_json(self, system: str, user: UserContent, schema: type[T], *, max_tokens: int = 512) -> Completion[T]:
        """A reply validated as ``schema``; raises BackendError when the backend fails. ``user`` is text
        or a list of parts (``anomalens.llm.content``: text and images); a client whose model reads
        text only sends the text parts, each image as its ``alt`` text. A client may say which with a
        ``vision`` attribute (True, False, or None: not known yet)."""
        ...


@dataclass(frozen=True)
class ToolCallRequest:
    id: str
    name: str
    args: dict


@dataclass(frozen=True)
class ChatTurn:
    """One assistant turn of a tool-calling chat: text, tool calls, or both."""

    content: str
    tool_calls: list[ToolCallRequest]
    completion_tokens: int = 0
    seconds: float = 0.0


INTERPRETATION_MAX = 300  # characters of a drafted interpretation (the schema bounds the decoding)


@runtime_checkable
class ToolChatClient(Protocol):
    """A chat model that can call tools (OpenAI tool-calling format: messages and tools as dicts)."""

    name: str

    def chat(self, messages: list[dict], tools: list[dict], *, tool_choice: str | dict = "auto",
             max_tokens: int = 512) -> ChatTurn:
        """The next assistant turn; ``tool_choice`` is "auto", "required", "none",
        ``{"type": "function", "function": {"name": ...}}``, or ``allowed_tools(mode, names)``: only those
        tools may be called, while ``tools`` stays the whole list, so a prompt that lists the tools stays
        the same from step to step (and its processed tokens are reused). Raises BackendError when the
        backend fails."""
        ...


def allowed_tools(mode: str, names: list[str]) -> dict:
    """A ``tool_choice`` that lets the reply call only ``names`` (``mode``: "auto" or "required"),
    in the shape of OpenAI's ``allowed_tools`` choice."""
    return {"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": [{"type": "function", "name": n}
                                                                              for n in names]}}


def narrow_tools(tools: list[dict], tool_choice: str | dict) -> tuple[list[dict], str | dict]:
    """``tools`` and ``tool_choice`` with an ``allowed_tools`` choice applied (for a backend that takes
    only the plain choices): the allowed tools and their mode. Other choices come back unchanged."""
    if not (isinstance(tool_choice, dict) and tool_choice.get("type") == "allowed_tools"):
        return tools, tool_choice
    spec = tool_choice.get("allowed_tools") or {}
    names = {t.get("name") or (t.get("function") or {}).get("name") for t in spec.get("tools", [])}
    return [t for t in tools if t["function"]["name"] in names], spec.get("mode", "auto")


class ClaimDraft(BaseModel):
    """A typed claim as a model chooses it: a kind, the evidence ids it is about and its relation
    fields. The model writes no sentence: the modality renders it from the evidence."""

    kind: str
    cites: list[str] = Field(min_length=1, max_length=6)
    position: str | None = None  # "above" | "below" | "within" (range claims)
    rank: int | None = None  # rank / exemplar_distance claims (a wrong one fails that claim alone, not the draft)
    unit: str | None = None  # restoration / comparison claims: the unit's name

    def params(self) -> dict[str, str]:
        return {k: str(v) for k, v in (("position", self.position), ("rank", self.rank), ("unit", self.unit))
                if v is not None}


PARAMS = ("position", "rank", "unit")  # the relation fields a typed claim may carry


class KindDraft(BaseModel):
    """A typed claim of one kind as a model chooses it (the per-kind models that ``schema_for``
    builds derive from this): ``kind`` fixed, ``cites`` limited to the ids that kind can rest on,
    and exactly that kind's relation fields, required."""

    model_config = ConfigDict(extra="forbid")

    def params(self) -> dict[str, str]:
        return {k: str(getattr(self, k)) for k in PARAMS if getattr(self, k, None) is not None}

    def claim(self) -> Claim:
        """The unrendered typed claim (the verifier renders its sentence); an id cited twice counts once."""
        return Claim(text="", kind=self.kind, cites=list(dict.fromkeys(self.cites)), params=self.params())


class DraftClaims(BaseModel):
    """What an LLM is asked to return (bounds go into the JSON schema, so grammars enforce them)."""

    claims: list[ClaimDraft] = Field(min_length=1, max_length=4)
    # the model's own reading of the case, shown apart and labelled, never as a verified claim
    interpretation: str = Field(default="", max_length=INTERPRETATION_MAX)


@dataclass(frozen=True)
class Draft:
    claims: list[Claim]
    completion_tokens: int = 0
    seconds: float = 0.0
    prompt_hash: str | None = None
    interpretation: str | None = None  # the model's interpretation, unverified


@runtime_checkable
class Reasoner(Protocol):
    name: str  # "template" or "llm:<model>"

    def draft(self, evidence: Evidence, feedback: list[str] | None = None) -> Draft:
        """Draft claims about the case; ``feedback`` lists why earlier claims were rejected."""
        ...

    def answer(self, question: str, evidence: Evidence, feedback: list[str] | None = None) -> Draft:
        """Draft claims that answer an analyst's question about the case from its evidence."""
        ...
