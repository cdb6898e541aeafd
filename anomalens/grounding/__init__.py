"""Grounded explanations: the verifier and the drafting pipeline (draft -> verify -> re-draft -> fallback).

Below the Investigator and the agents in the data flow (input -> detector -> calibration -> evidence ->
reasoner -> verifier -> report): the Investigator composes it, and the analyze and chat graphs in
``anomalens.agents`` use the same steps, so every path applies one rule: a claim is shown only when
it passed the verifier.
"""

from anomalens.grounding.drafting import (Drafting, answer_question, explain_evidence, explain_many, with_answer,
                                          with_verdict)
from anomalens.grounding.verifier import cite_text, verify, verify_claim

__all__ = ["Drafting", "answer_question", "cite_text", "explain_evidence", "explain_many", "verify", "verify_claim",
           "with_answer", "with_verdict"]
