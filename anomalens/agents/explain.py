"""Grounded claims: draft with a reasoner, verify each claim against the evidence, re-draft the
rejected ones a bounded number of times, and fall back to the template when the reasoner fails or
nothing grounded remains.

The steps (``Drafting.add_draft``, ``Drafting.fail``, ``Drafting.finish``) are shared by the plain
functions here (``explain_evidence``, ``answer_question``) and by the nodes of the analyze and
chat graphs, so every path applies the same rule: a claim is shown only when it passed the verifier.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from anomalens.agents.verifier import verify
from anomalens.errors import BackendError
from anomalens.llm.base import Draft, Reasoner
from anomalens.llm.template import TemplateReasoner
from anomalens.schema import Claim, Evidence, Explanation

__all__ = ["answer_question", "Drafting", "explain_evidence"]

log = logging.getLogger(__name__)


@dataclass
class Drafting:
    """Where the drafting rounds of one explanation or answer stand."""

    source: str  # the reasoner's name
    accepted: list[Claim] = field(default_factory=list)
    rejected: list[Claim] = field(default_factory=list)
    feedback: list[str] | None = None
    rounds: int = 0
    tokens: int = 0
    generation_s: float = 0.0
    prompt_hash: str | None = None
    error: str | None = None  # the backend failure, when there was one
    t0: float = field(default_factory=time.perf_counter)

    def add_draft(self, draft: Draft, evidence: Evidence) -> bool:
        """Verify a draft's claims; True when another round should be asked (something was rejected)."""
        self.rounds += 1
        self.prompt_hash = draft.prompt_hash
        self.tokens, self.generation_s = self.tokens + draft.completion_tokens, self.generation_s + draft.seconds
        ok, bad = verify(draft.claims, evidence)
        seen = {c.text for c in self.accepted}
        self.accepted += [c for c in ok if c.text not in seen]
        self.rejected += bad
        self.feedback = [f"{c.text[:120]!r}: {c.reason}" for c in bad[:5]] or None
        return bool(bad)

    def fail(self, exc: BackendError) -> None:
        log.warning("reasoner %s failed: %s", self.source, exc)
        self.error = str(exc)

    def finish(self, evidence: Evidence, fallback: Callable[[], Draft]) -> Explanation:
        """The Explanation: the accepted claims, or the template's (``fallback``) with a note why."""
        if self.accepted and self.error is None:
            return Explanation(text=" ".join(c.text for c in self.accepted), claims=self.accepted,
                               rejected=self.rejected, source=self.source, grounded=True, prompt_hash=self.prompt_hash,
                               latency_s=time.perf_counter() - self.t0, completion_tokens=self.tokens,
                               generation_s=self.generation_s)
        note = None
        if self.error is not None:
            note = f"{self.source} was unavailable ({self.error}); the template's claims are shown."
        elif self.rounds:
            note = (f"none of the {len(self.rejected)} claims drafted by {self.source} passed verification; "
                    "the template's claims are shown.")
        ok, bad = verify(fallback().claims, evidence)
        ex = Explanation(text=" ".join(c.text for c in ok), claims=ok, rejected=self.rejected + bad, source="template",
                         grounded=not bad and bool(ok), note=note, latency_s=time.perf_counter() - self.t0)
        if self.rounds:
            ex = ex.model_copy(update={"completion_tokens": self.tokens, "generation_s": self.generation_s,
                                       "prompt_hash": self.prompt_hash})
        return ex


def _grounded(evidence: Evidence, reasoner: Reasoner | None, ask: Callable[[Reasoner, list[str] | None], Draft],
              fallback: Callable[[], Draft], max_rounds: int) -> Explanation:
    if reasoner is None or isinstance(reasoner, TemplateReasoner):
        return Drafting("template").finish(evidence, fallback)
    d = Drafting(reasoner.name)
    try:
        for _ in range(max_rounds):
            if not d.add_draft(ask(reasoner, d.feedback), evidence):
                break
    except BackendError as exc:
        d.fail(exc)
    d.source = reasoner.name  # a server's model name is known once it has answered
    return d.finish(evidence, fallback)


def explain_evidence(evidence: Evidence, reasoner: Reasoner | None = None, *, max_rounds: int = 2) -> Explanation:
    """A verified explanation of ``evidence``.

    Args:
        reasoner: what drafts the claims (None: the template).
        max_rounds: drafts asked of an LLM reasoner; later rounds get the reasons earlier claims failed.
    """
    return _grounded(evidence, reasoner, lambda r, fb: r.draft(evidence, fb),
                     lambda: TemplateReasoner().draft(evidence), max_rounds)


def answer_question(question: str, evidence: Evidence, reasoner: Reasoner | None = None, *,
                    max_rounds: int = 2) -> Explanation:
    """A verified answer to an analyst's question about a case, from its evidence alone."""
    return _grounded(evidence, reasoner, lambda r, fb: r.answer(question, evidence, fb),
                     lambda: TemplateReasoner().answer(question, evidence), max_rounds)
