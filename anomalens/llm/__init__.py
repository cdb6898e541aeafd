"""Reasoners behind one door: ``make_reasoner`` builds the one that Settings name.

Only this package talks to language models (``openai``, ``llama_cpp``, ``transformers``).
"""

from anomalens.llm.base import ChatClient, ClaimDraft, Completion, Draft, DraftClaims, Reasoner
from anomalens.llm.reasoner import LLMReasoner, evidence_payload, make_reasoner
from anomalens.llm.template import TemplateReasoner

__all__ = [
    "ChatClient",
    "ClaimDraft",
    "Completion",
    "Draft",
    "DraftClaims",
    "LLMReasoner",
    "Reasoner",
    "TemplateReasoner",
    "evidence_payload",
    "make_reasoner",
]
