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

from anomalens.grounding.verifier import check_interpretation, verify
from anomalens.errors import BackendError, InputError
from anomalens.llm.base import Draft, Reasoner
from anomalens.llm.template import TemplateReasoner, verdict_claim
from anomalens.schema import Claim, Evidence, Explanation

__all__ = ["answer_question", "Drafting", "explain_evidence", "explain_many", "with_answer", "with_verdict"]

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
    interpretation: str | None = None  # the model's interpretation, when it passed check_interpretation
    interpretation_note: str | None = None  # why a model's interpretation is not shown
    t0: float = field(default_factory=time.perf_counter)

    def add_draft(self, draft: Draft, evidence: Evidence) -> bool:
        """Verify a draft's claims; True when another round should be asked (something was rejected)."""
        self.rounds += 1
        self.prompt_hash = draft.prompt_hash
        self.tokens, self.generation_s = self.tokens + draft.completion_tokens, self.generation_s + draft.seconds
        ok, bad = verify(draft.claims, evidence)
        if draft.interpretation:
            reason = check_interpretation(draft.interpretation, evidence)
            if reason is None:
                self.interpretation, self.interpretation_note = draft.interpretation, None
            else:
                self.interpretation_note = f"the model's interpretation was dropped: it {reason}"
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
                               interpretation=self.interpretation, interpretation_note=self.interpretation_note,
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


def _drafted(evidence: Evidence, reasoner: Reasoner | None, ask: Callable[[Reasoner, list[str] | None], Draft],
             fallback: Callable[[], Draft], max_rounds: int) -> tuple[Explanation, str | None]:
    """(the explanation, the backend's failure or None)."""
    if reasoner is None or isinstance(reasoner, TemplateReasoner):
        return Drafting("template").finish(evidence, fallback), None
    d = Drafting(reasoner.name)
    try:
        for _ in range(max_rounds):
            if not d.add_draft(ask(reasoner, d.feedback), evidence):
                break
    except BackendError as exc:
        d.fail(exc)
    d.source = reasoner.name  # a server's model name is known once it has answered
    return d.finish(evidence, fallback), d.error


def _grounded(evidence: Evidence, reasoner: Reasoner | None, ask: Callable[[Reasoner, list[str] | None], Draft],
              fallback: Callable[[], Draft], max_rounds: int) -> Explanation:
    return _drafted(evidence, reasoner, ask, fallback, max_rounds)[0]


def with_verdict(ex: Explanation, evidence: Evidence) -> Explanation:
    """A report never loses its verdict sentence: the template's (verified) verdict claim leads
    when no shown claim cites the verdict."""
    if any("verdict" in c.cites for c in ex.claims):
        return ex
    ok, _ = verify([verdict_claim(evidence)], evidence)
    if not ok:
        return ex
    claims = ok + ex.claims
    return ex.model_copy(update={"claims": claims, "text": " ".join(c.text for c in claims)})


def explain_many(evidences: list[Evidence], reasoner: Reasoner | None = None, *, max_rounds: int = 2,
                 concurrency: int | None = None, share_failure: bool = True,
                 on_done: Callable[[int, int], None] | None = None) -> list[Explanation]:
    """Verified explanations of a batch, in its order.

    Up to ``concurrency`` explanations are drafted at once (default: the reasoner's own
    ``concurrency``, 1 when it has none), so a server that batches requests (vLLM) is kept busy;
    the embedded model and the template run one at a time. After the reasoner's backend fails,
    the explanations not yet started are written by the template without calling it again (a
    dead server is not retried for every case), and each of them says why. With
    ``share_failure=False`` the cases are independent (separate requests answered together): each
    is drafted as ``explain_evidence`` drafts one, whatever happened to the others. ``on_done(done,
    total)`` is called as each explanation is finished (a progress bar's n/N)."""
    import threading

    n = concurrency if concurrency is not None else int(getattr(reasoner, "concurrency", 1) or 1)
    if n < 1:
        raise InputError(f"concurrency must be at least 1, got {n!r}")
    lock = threading.Lock()
    failure: list[str] = []

    def one(ev: Evidence) -> Explanation:
        if not share_failure:
            return explain_evidence(ev, reasoner, max_rounds=max_rounds)
        with lock:
            failed = failure[0] if failure else None
        if failed is None:
            ex, error = _drafted(ev, reasoner, lambda r, fb: r.draft(ev, fb), lambda: TemplateReasoner().draft(ev),
                                 max_rounds)
            if error is not None:
                with lock:
                    if not failure:
                        failure.append(error)
                        log.warning("reasoner %s failed (%s); the rest of this batch is explained by the template",
                                    getattr(reasoner, "name", "?"), error)
        else:
            ex = Drafting("template").finish(ev, lambda: TemplateReasoner().draft(ev))
            ex = ex.model_copy(update={"note": f"{getattr(reasoner, 'name', 'the reasoner')} failed earlier in this "
                                               f"batch ({failed}); the template's claims are shown."})
        return with_verdict(ex, ev)

    done = [0]

    def counted(ev: Evidence) -> Explanation:
        ex = one(ev)
        if on_done is not None:
            with lock:
                done[0] += 1
                on_done(done[0], len(evidences))
        return ex

    if n == 1 or len(evidences) < 2 or reasoner is None or isinstance(reasoner, TemplateReasoner):
        return [counted(ev) for ev in evidences]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(n, len(evidences)), thread_name_prefix="explain") as pool:
        return list(pool.map(counted, evidences))


def explain_evidence(evidence: Evidence, reasoner: Reasoner | None = None, *, max_rounds: int = 2) -> Explanation:
    """A verified explanation of ``evidence``.

    Args:
        reasoner: what drafts the claims (None: the template).
        max_rounds: drafts asked of an LLM reasoner; later rounds get the reasons earlier claims failed.
    """
    return with_verdict(_grounded(evidence, reasoner, lambda r, fb: r.draft(evidence, fb),
                                   lambda: TemplateReasoner().draft(evidence), max_rounds), evidence)


def answer_question(question: str, evidence: Evidence, reasoner: Reasoner | None = None, *,
                    max_rounds: int = 2) -> Explanation:
    """A verified answer to an analyst's question about a case, from its evidence alone."""
    return with_answer(_grounded(evidence, reasoner, lambda r, fb: r.answer(question, evidence, fb),
                                 lambda: TemplateReasoner().answer(question, evidence), max_rounds), question, evidence)


def with_answer(ex: Explanation, question: str, evidence: Evidence) -> Explanation:
    """An answer never leaves out the direct answer to its question: unless a shown claim already
    gives it (cites an item of ``TemplateReasoner.direct_answer``, with the same kind or as free
    text), the direct answer's verified claims lead, after the verdict when that is shown. Every
    claim a model chooses is true, but a small one often chose true claims that do not answer
    ("which normal case is closest?" answered with the verdict)."""
    if ex.source == "template":
        return ex

    def covered(d: Claim) -> bool:
        return any(set(d.cites) & set(c.cites) and c.kind in (None, d.kind) for c in ex.claims)

    direct, _ = verify(TemplateReasoner().direct_answer(question, evidence), evidence)
    if not direct or any(covered(d) for d in direct):
        return ex
    verdict = [c for c in ex.claims if c.cites == ["verdict"]]  # the verdict, when shown, stays first
    claims = verdict + direct + [c for c in ex.claims if c not in verdict]
    return ex.model_copy(update={"claims": claims, "text": " ".join(c.text for c in claims)})
