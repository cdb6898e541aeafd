"""Explain a case: draft claims with a reasoner, verify each against the evidence, regenerate the
rejected ones a bounded number of times, and fall back to the template when the reasoner fails
or nothing grounded remains."""

from __future__ import annotations

import logging
import time

from anomalens.agents.verifier import verify
from anomalens.errors import BackendError
from anomalens.llm.base import Reasoner
from anomalens.llm.template import TemplateReasoner
from anomalens.schema import Claim, Evidence, Explanation

__all__ = ["explain_evidence"]

log = logging.getLogger(__name__)


def _template(evidence: Evidence, note: str | None, rejected: list[Claim], t0: float) -> Explanation:
    draft = TemplateReasoner().draft(evidence)
    ok, bad = verify(draft.claims, evidence)
    return Explanation(text=" ".join(c.text for c in ok), claims=ok, rejected=rejected + bad, source="template",
                       grounded=not bad and bool(ok), note=note, latency_s=time.perf_counter() - t0)


def explain_evidence(evidence: Evidence, reasoner: Reasoner | None = None, *, max_rounds: int = 2) -> Explanation:
    """A verified explanation of ``evidence``.

    Args:
        reasoner: what drafts the claims (None: the template).
        max_rounds: drafts asked of an LLM reasoner; later rounds get the reasons earlier claims failed.
    """
    t0 = time.perf_counter()
    if reasoner is None or isinstance(reasoner, TemplateReasoner):
        return _template(evidence, None, [], t0)
    accepted: list[Claim] = []
    rejected: list[Claim] = []
    feedback: list[str] | None = None
    prompt_hash = None
    tokens, gen_s = 0, 0.0
    try:
        for _ in range(max_rounds):
            draft = reasoner.draft(evidence, feedback)
            prompt_hash = draft.prompt_hash
            tokens, gen_s = tokens + draft.completion_tokens, gen_s + draft.seconds
            ok, bad = verify(draft.claims, evidence)
            seen = {c.text for c in accepted}
            accepted += [c for c in ok if c.text not in seen]
            rejected += bad
            if not bad:
                break
            feedback = [f"{c.text[:120]!r}: {c.reason}" for c in bad[:5]]
    except BackendError as exc:
        log.warning("reasoner %s failed: %s", reasoner.name, exc)
        return _template(evidence, f"{reasoner.name} was unavailable ({exc}); the template explanation is shown.",
                         rejected, t0)
    if not accepted:
        ex = _template(evidence, f"none of the {len(rejected)} claims drafted by {reasoner.name} passed verification; "
                                 "the template explanation is shown.", rejected, t0)
        return ex.model_copy(update={"completion_tokens": tokens, "generation_s": gen_s, "prompt_hash": prompt_hash})
    return Explanation(text=" ".join(c.text for c in accepted), claims=accepted, rejected=rejected,
                       source=reasoner.name, grounded=True, prompt_hash=prompt_hash,
                       latency_s=time.perf_counter() - t0, completion_tokens=tokens, generation_s=gen_s)
