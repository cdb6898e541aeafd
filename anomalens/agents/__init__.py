"""Agents: the verifier, the explanation pipeline, and the orchestrator graphs (analyze, chat).

The graphs are imported lazily: they sit on top of the Investigator and the tools, which
themselves use the explanation pipeline from here.
"""

from anomalens.grounding.drafting import answer_question, explain_evidence
from anomalens.grounding.verifier import cite_text, verify, verify_claim

__all__ = ["analyze_case", "answer_question", "build_analyze_graph", "build_chat_graph", "ChatReply", "ChatSession",
           "cite_text", "explain_evidence", "verify", "verify_claim"]

_LAZY = {"analyze_case": "analyze", "build_analyze_graph": "analyze", "build_chat_graph": "chat",
         "ChatReply": "chat", "ChatSession": "chat"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"anomalens.agents.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'anomalens.agents' has no attribute {name!r}")
