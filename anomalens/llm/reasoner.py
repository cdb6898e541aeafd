"""The LLM reasoner (prompts -> structured claims) and the factory that picks a backend from Settings."""

from __future__ import annotations

from typing import Any

from anomalens.config import Settings, get_settings
from anomalens.errors import ConfigError
from anomalens.llm.content import ImagePart, UserContent
from anomalens.llm.base import INTERPRETATION_MAX, PARAMS, ChatClient, ClaimDraft, Draft, DraftClaims, KindDraft, Reasoner, ToolChatClient
from anomalens.llm.template import TemplateReasoner
from anomalens.modalities import modality_of
from anomalens.prompts import data_block, render, template_hash
from anomalens.schema import Evidence
from anomalens.text import whole_sentences

__all__ = ["LLMReasoner", "VisionRouter", "gathered_prompt", "next_step_prompt", "tool_mode", "chat_system_prompt", "draft_schema", "evidence_payload", "kind_schema", "kinds_block", "schema_for", "make_reasoner", "tool_client"]

PROMPTS = ("explain_system.jinja2", "explain_user.jinja2")
ANSWER_PROMPTS = ("answer_system.jinja2", "answer_user.jinja2")
VIEWS_PROMPT = "views.jinja2"  # before a case's pictures, for a vision model
QUESTION_BUDGET = 500  # characters of an analyst's question passed to the model


def _compact(value):
    """Floats to 4 significant digits (as the rendered claims state them) and no null fields: a
    model reads the same facts in about half the tokens (prompt processing dominates on a CPU)."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_compact(v) for v in value]
    return value


def evidence_payload(evidence: Evidence) -> dict:
    """The evidence as the model sees it: compact, every item under its citable id (about 600
    tokens for a tabular case; prompt processing is most of a request's time on a CPU server)."""
    return _compact(_payload(evidence))


def _verdict(evidence: Evidence) -> dict:
    """The verdict's numbers; the method strings, the detector's name and fields at their defaults
    (cut-off equal to alpha, an exact p-value) are left out: the model chooses claims, and a claim's
    sentence is rendered from the evidence itself, so what it cannot choose by costs prompt time only."""
    v = evidence.verdict.model_dump(exclude={"id", "detector", "method", "p_value_method"})
    if v["cutoff"] == v["alpha"]:
        del v["cutoff"]
    if not v["approximate"]:
        del v["approximate"]
    return v


def _unit(a) -> dict:
    return a.model_dump(exclude={"id", "contribution", "unit"})  # the name is in the id


def _prompted(value: Any) -> Any:
    """An item's dump as the prompt has always shown it: a unit's name under "feature", whatever the
    modality (as the units sit under "features"), so the prompts the benchmarks measured stay the same."""
    if isinstance(value, dict):
        return {("feature" if k == "unit" else k): _prompted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_prompted(v) for v in value]
    return value


def _payload(evidence: Evidence) -> dict:
    payload: dict = {"verdict": _verdict(evidence)}
    # the units (tabular: features) under their ids; the key stays "features" for every modality's prompt
    payload["features"] = {a.id: _unit(a) for a in evidence.attributions}
    payload["exemplars"] = {e.id: {"distance": e.distance} for e in evidence.exemplars}
    if evidence.restoration is not None:  # the changes the restoration makes (an unchanged feature says nothing)
        changed = [d for d in evidence.restoration.deltas if abs(d.delta) > 1e-6 * max(1.0, abs(d.observed))]
        payload["restoration"] = [_prompted(d.model_dump()) for d in changed[:5]]
    if evidence.lookups:
        payload["features"].update({a.id: _unit(a) for a in evidence.lookups})
    if evidence.profiles:
        payload["profiles"] = {p.id: _prompted(p.model_dump(exclude={"id"})) for p in evidence.profiles}
    if evidence.comparisons:
        payload["comparisons"] = {c.id: _prompted(c.model_dump(exclude={"id"})) for c in evidence.comparisons}
    # the items the case's modality contributes (a log case's lines, templates, expected sequence and
    # incident; a series' event and segments), each shown as its type says (raw text is untrusted:
    # data_block clips and fences it): one item under its type's name, several by id
    for p in evidence.parts:
        if p.single:
            payload[p.plural] = p.payload()
        else:
            payload.setdefault(p.plural, {})[p.id] = p.payload()
    return payload


def chat_system_prompt(evidence: Evidence, *, max_claims: int = 4) -> str:
    """The system prompt of a tool-calling chat turn about one case (its evidence as data, never as
    instructions)."""
    return render("chat_system.jinja2", case_id=evidence.case_id, anomalous=evidence.verdict.anomalous,
                  max_claims=max_claims, unit_kind=evidence.context.unit_kind, kinds=kinds_block(evidence), evidence=data_block(evidence_payload(evidence)))


def gathered_prompt(evidence: Evidence, base: Evidence, turn: Evidence | None = None) -> str | None:
    """What ``evidence`` holds beyond ``base`` (the items the chat's tools gathered: features looked up,
    profiles, comparisons), as a data block after the conversation; None when nothing was gathered.
    Items beyond ``turn`` (the evidence as this turn began) are named by id only: this turn's tool
    results, which the model reads just above, hold their values (about 150 prompt tokens a look-up)."""
    now, then = evidence_payload(evidence), evidence_payload(base)
    before = evidence_payload(turn) if turn is not None else now
    new: dict = {}
    ids: list[str] = []
    for key, value in now.items():
        if isinstance(value, dict):
            old = then.get(key) if isinstance(then.get(key), dict) else {}
            seen = before.get(key) if isinstance(before.get(key), dict) else {}
            add = {i: v for i, v in value.items() if i not in old and i in seen}
            ids += [i for i in value if i not in old and i not in seen]
            if add:
                new[key] = add
    if not new and not ids:
        return None
    return render("chat_gathered.jinja2", evidence=data_block(new) if new else None,
                  ids=data_block(ids) if ids else None)


def next_step_prompt(called: list[str]) -> str:
    """The chat's reminder after a look-up (the tools called this turn, by name): answer when the
    evidence answers, rather than look further."""
    return render("chat_next.jinja2", called=", ".join(called))


def draft_schema(ids: list[str], kinds: list[str] | None = None, units: list[str] | None = None) -> type[DraftClaims]:
    """DraftClaims whose ``cites`` may only be the given evidence ids, ``kind`` only the modality's
    claim kinds and ``unit`` only its unit names (enums in the JSON schema, so servers and grammars
    that honour schemas cannot even cite a missing id or invent a kind)."""
    from typing import Literal

    from pydantic import Field, create_model

    Cite = Literal[tuple(ids)]  # type: ignore[valid-type]
    fields: dict = {"cites": (list[Cite], Field(min_length=1, max_length=6))}
    if kinds:
        fields["kind"] = (Literal[tuple(kinds)], ...)  # type: ignore[valid-type]
    fields["position"] = (Literal["above", "below", "within"] | None, None)
    if units:
        fields["unit"] = (Literal[tuple(units)] | None, None)  # type: ignore[valid-type]
    claim = create_model("ClaimDraft", __base__=ClaimDraft, **fields)
    return create_model("DraftClaims", __base__=DraftClaims, claims=(list[claim], Field(min_length=1, max_length=4)))


def kind_schema(fields: dict[str, dict[str, list[str]]]) -> type[DraftClaims]:
    """DraftClaims whose claims are one model per kind (``fields``: kind -> {"cites": ids, <param>:
    values}, as ``Modality.claim_fields`` gives them): each fixes its ``kind``, limits ``cites`` to
    the ids that kind rests on and requires exactly that kind's relation fields, as enums. A server
    or grammar that honours the schema cannot cite a feature for an exemplar claim, leave out a
    range claim's position or invent a unit."""
    from typing import Annotated, Literal, Union

    from pydantic import Field, create_model

    if not fields:
        raise ValueError("kind_schema needs at least one claim kind")
    models = []
    for kind, f in fields.items():
        most = min(6, len(f["cites"]), int((f.get("most_cites") or ["6"])[0]))  # a range claim rests on one unit
        spec: dict = {"kind": (Literal[kind], ...),  # type: ignore[valid-type]
                      "cites": (list[Literal[tuple(f["cites"])]],  # type: ignore[valid-type]
                                Field(min_length=1, max_length=max(1, most)))}
        for param in PARAMS:
            if param in f:
                values = tuple(int(v) for v in f[param]) if param == "rank" else tuple(f[param])
                spec[param] = (Literal[values], ...)  # type: ignore[valid-type]
        name = "".join(w.capitalize() for w in kind.split("_")) + "Claim"
        models.append(create_model(name, __base__=KindDraft, **spec))
    # one model per kind, told apart by ``kind``: a reply that fails says why for its own kind only
    claim = models[0] if len(models) == 1 else Annotated[Union[tuple(models)], Field(discriminator="kind")]
    return create_model("DraftClaims", __base__=_KindClaims, claims=(list[claim], Field(min_length=1, max_length=4)))


class _KindClaims(DraftClaims):
    """DraftClaims whose JSON schema writes the kinds' union as a plain ``anyOf`` (pydantic writes a
    ``oneOf`` with a ``discriminator`` mapping, which not every server's grammar compiler reads),
    without pydantic's ``title`` on every node (a server without ``json_schema`` output reads the
    schema in its prompt, where a quarter of it was titles)."""

    @classmethod
    def model_json_schema(cls, *args, **kwargs) -> dict:
        def plain(node):
            if isinstance(node, dict):
                node.pop("discriminator", None)
                if isinstance(node.get("title"), str):
                    node.pop("title")
                if "oneOf" in node:
                    node["anyOf"] = node.pop("oneOf")
                for v in node.values():
                    plain(v)
            elif isinstance(node, list):
                for v in node:
                    plain(v)
            return node

        return plain(super().model_json_schema(*args, **kwargs))


def schema_for(evidence: Evidence) -> type[DraftClaims]:
    """The draft schema of one case: a model per claim kind its modality can state about it."""
    return kind_schema(modality_of(evidence).claim_fields(evidence))


def kinds_block(evidence: Evidence) -> str:
    """The claim kinds the case's evidence supports (those of its schema), one per line, for the prompt."""
    modality = modality_of(evidence)
    here = modality.claim_fields(evidence)
    return "\n".join(f"- {k}: {v}" for k, v in modality.claim_kinds.items() if k in here)


class LLMReasoner:
    """Claims drafted by a chat model from the evidence (prompt templates in ``anomalens/prompts``)."""

    def __init__(self, client: ChatClient, *, max_claims: int = 4, max_tokens: int = 400) -> None:
        self.client, self.max_claims, self.max_tokens = client, max_claims, max_tokens
        self.prompt_hash = template_hash(*PROMPTS, VIEWS_PROMPT)
        self.answer_hash = template_hash(*ANSWER_PROMPTS)

    @property
    def name(self) -> str:
        return self.client.name

    @property
    def concurrency(self) -> int:
        """Drafts a batch may ask for at once: the client's bound (a server), else 1 (an in-process model)."""
        return int(getattr(self.client, "concurrency", 1) or 1)

    def draft(self, evidence: Evidence, feedback: list[str] | None = None) -> Draft:
        system = render(PROMPTS[0], max_claims=self.max_claims, unit_kind=evidence.context.unit_kind,
                        kinds=kinds_block(evidence))
        user = render(PROMPTS[1], case_id=evidence.case_id, anomalous=evidence.verdict.anomalous,
                      feedback=data_block(feedback, budget=1500) if feedback else "",
                      evidence=data_block(evidence_payload(evidence)))
        return self._ask(system, user, evidence, self.prompt_hash)

    def answer(self, question: str, evidence: Evidence, feedback: list[str] | None = None) -> Draft:
        system = render(ANSWER_PROMPTS[0], max_claims=self.max_claims, unit_kind=evidence.context.unit_kind,
                        kinds=kinds_block(evidence))
        user = render(ANSWER_PROMPTS[1], case_id=evidence.case_id, anomalous=evidence.verdict.anomalous,
                      question=data_block({"question": question}, text_budget=QUESTION_BUDGET),
                      feedback=data_block(feedback, budget=1500) if feedback else "",
                      evidence=data_block(evidence_payload(evidence)))
        return self._ask(system, user, evidence, self.answer_hash)

    def _content(self, user: str, evidence: Evidence) -> UserContent:
        """The user message: text, and for a case with pictures (``Evidence.views``: an image, the
        detector's map over it, the nearest normal image) and a client that may read images, the
        pictures after it with a statement that the map may be wrong (a text-only client is not
        sent them: their captions would cost it prompt time for nothing)."""
        views = evidence.views
        if not views or getattr(self.client, "vision", None) is False:
            return user
        intro = render(VIEWS_PROMPT, captions="; ".join(v.caption.strip("[]") for v in views))
        return [user, intro, *(ImagePart(v.png, "image/png", v.caption) for v in views)]

    def _ask(self, system: str, user: str, evidence: Evidence, prompt_hash: str) -> Draft:
        out = self.client.complete_json(system, self._content(user, evidence), schema_for(evidence),
                                        max_tokens=self.max_tokens)
        claims = [c.claim() for c in out.value.claims[: self.max_claims]]
        return Draft(claims, out.completion_tokens, out.seconds, prompt_hash,
                     interpretation=whole_sentences(out.value.interpretation.strip(), INTERPRETATION_MAX) or None)


class VisionRouter:
    """Cases with pictures (``Evidence.views``) to a vision-language model, the others to ``text``:
    what ``make_reasoner`` builds when ``vlm_base_url`` names a second endpoint (one vLLM server that
    serves a vision model can also be the only endpoint: then no router is needed)."""

    def __init__(self, text: Reasoner, vision: LLMReasoner) -> None:
        self.text, self.vision = text, vision

    @property
    def name(self) -> str:
        return f"{self.text.name} + {self.vision.name} for images"

    @property
    def concurrency(self) -> int:
        return min(int(getattr(self.text, "concurrency", 1) or 1), self.vision.concurrency)

    @property
    def client(self):  # the chat's tool-calling model, when the text reasoner has one
        return getattr(self.text, "client", None)

    def _for(self, evidence: Evidence) -> Reasoner:
        return self.vision if evidence.views else self.text

    def draft(self, evidence: Evidence, feedback: list[str] | None = None) -> Draft:
        return self._for(evidence).draft(evidence, feedback)

    def answer(self, question: str, evidence: Evidence, feedback: list[str] | None = None) -> Draft:
        return self._for(evidence).answer(question, evidence, feedback)


def make_reasoner(settings: Settings | None = None, *, llm: str | None = None, base_url: str | None = None,
                  model: str | None = None) -> Reasoner:
    """The reasoner that ``settings.llm`` names (arguments override the settings).

    ``template``: no model. ``local``: the embedded model in this process. ``openai``: an
    OpenAI-compatible server (vLLM) at ``base_url``. Building a local model loads it (seconds).
    With ``vlm_base_url`` set, cases with pictures (images) go to that vision-language model instead
    (``VisionRouter``); the model must read images (``vision=True``: a rejection is an error, and the
    batch falls back to the template as for any model failure).
    """
    s = settings or get_settings()
    text = _text_reasoner(s, llm or s.llm, base_url, model)
    if not s.vlm_base_url:
        return text
    from anomalens.llm.openai_client import OpenAIChatClient

    vision = LLMReasoner(OpenAIChatClient(s.vlm_base_url, s.vlm_model, s.vlm_api_key or s.llm_api_key,
                                          timeout=s.llm_timeout, concurrency=s.llm_concurrency, vision=True),
                         max_tokens=s.llm_max_tokens)
    return VisionRouter(text, vision)


def _text_reasoner(s: Settings, kind: str, base_url: str | None, model: str | None) -> Reasoner:
    if kind == "template":
        return TemplateReasoner()
    if kind == "local":
        from anomalens.llm.local import make_local_client

        return LLMReasoner(make_local_client(s.llm_local_engine, s.llm_local_path, s.llm_threads,
                                             model=None if s.llm_local_path else s.llm_local_model,
                                             tools=s.llm_local_tools), max_tokens=s.llm_max_tokens)
    if kind == "openai":
        from anomalens.llm.openai_client import OpenAIChatClient

        return LLMReasoner(OpenAIChatClient(base_url or s.llm_base_url, model if model is not None else s.llm_model,
                                            s.llm_api_key, timeout=s.llm_timeout, concurrency=s.llm_concurrency),
                           max_tokens=s.llm_max_tokens)
    raise ConfigError(f"llm must be 'openai', 'local' or 'template', got {kind!r}")


def tool_mode(client: ToolChatClient | None, setting: str | None = None) -> str:
    """The chat's tool mode: ``setting`` when given, else the client's preferred one (``tool_choice``
    on the client class), else ``required``."""
    return setting or getattr(client, "tool_choice", None) or "required"


def tool_client(reasoner: Reasoner) -> ToolChatClient | None:
    """The reasoner's chat client when it can call tools (an OpenAI-compatible server, or a local model
    that calls tools: ``LocalModel.calls_tools``), else None: the embedded 135M model and the template
    answer chat questions from the evidence instead."""
    client = getattr(reasoner, "client", None)
    return client if isinstance(client, ToolChatClient) else None
