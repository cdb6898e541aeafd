"""Agents: the explanation pipeline with its verifier (and, later, the orchestrator graphs)."""

from anomalens.agents.explain import explain_evidence
from anomalens.agents.verifier import verify, verify_claim

__all__ = ["explain_evidence", "verify", "verify_claim"]
