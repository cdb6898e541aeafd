"""Reasoners behind one door: ``make_reasoner`` builds the one that Settings name.

Only this package talks to language models (``openai``, ``llama_cpp``, ``transformers``).
"""

from anomalens.llm.base import (
    ChatClient,
    ChatTurn,
    ClaimDraft,
    Completion,
    Draft,
    DraftClaims,
    Reasoner,
    ToolCallRequest,
    ToolChatClient,
    allowed_tools,
)
from anomalens.llm.content import ImagePart, TextPart, UserContent
from anomalens.llm.reasoner import LLMReasoner, evidence_payload, make_reasoner, tool_client
from anomalens.llm.template import TemplateReasoner

__all__ = [
    "ChatClient",
    "ChatTurn",
    "ClaimDraft",
    "Completion",
    "Draft",
    "DraftClaims",
    "ImagePart",
    "LLMReasoner",
    "Reasoner",
    "TemplateReasoner",
    "TextPart",
    "ToolCallRequest",
    "ToolChatClient",
    "UserContent",
    "allowed_tools",
    "evidence_payload",
    "make_reasoner",
    "tool_client",
]
