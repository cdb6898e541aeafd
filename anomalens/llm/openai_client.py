"""Any OpenAI-compatible chat server: vLLM in production, llama.cpp's server in tests.

It is both a ``ChatClient`` (structured output) and a ``ToolChatClient`` (tool calling; vLLM
needs ``--enable-auto-tool-choice --tool-call-parser <parser>`` for ``tool_choice="auto"``).

Structured output is requested with ``response_format`` of type ``json_schema``; a server that
rejects that (llama.cpp's accepts only ``json_object``) is asked again with ``json_object`` and
the schema in the prompt, and the client remembers which mode worked. Replies are validated with
``model_validate_json``; an invalid reply is re-asked a bounded number of times with the
validation error fed back. Connection failures, timeouts, 429 and 5xx answers are retried by the
``openai`` SDK itself (``max_retries``, its exponential backoff with jitter, honouring
``Retry-After``), then raised as ``BackendError``. One answer is not retried: a 5xx to the first
``json_schema`` request, since llama.cpp's server answers that way for "unsupported", and three
tries of it cost seconds before the ``json_object`` fallback.

The user message may hold image parts (``anomalens.llm.content``): they go to the server as
``image_url`` data URLs. A server that rejects them (vLLM answers 400 "not a multimodal model",
llama.cpp's server 500 to any list content) is asked again with the text parts only, each image
replaced by its ``alt`` text, and the client remembers (``vision`` False) so later requests do not
pay the rejected try; ``vision=True`` makes such a rejection an error instead.
"""

from __future__ import annotations

import json
import logging
import re
import time

from pydantic import BaseModel

from anomalens.errors import BackendError, ConfigError
from anomalens.llm.base import ChatTurn, Completion, T, ToolCallRequest, ask_validated, narrow_tools
from anomalens.llm.content import UserContent, openai_content, text_content

__all__ = ["OpenAIChatClient"]

log = logging.getLogger(__name__)


class _ImagesRejected(Exception):
    """The server answered a request with image parts with an error (see the module docstring)."""


class OpenAIChatClient:
    """Chat completions against ``base_url`` (e.g. ``http://127.0.0.1:8000/v1``).

    Args:
        model: the served model's name; "" asks the server for its first model.
        timeout: seconds per request.
        max_retries: retries of a failed request (connection error, timeout, 5xx), with backoff.
        max_reasks: re-asks of a reply that does not validate.
        concurrency: requests a batch may have in flight at once (``explain_many``); the client is
            thread-safe, and a vLLM server batches concurrent requests.
        vision: whether the served model reads images: None finds out on the first request that
            carries one (a rejection falls back to text), True makes a rejection an error, False
            always sends the text parts.
    """

    def __init__(self, base_url: str, model: str = "", api_key: str = "EMPTY", *, timeout: float = 60.0,
                 max_retries: int = 2, max_reasks: int = 1, temperature: float = 0.0, concurrency: int = 8,
                 vision: bool | None = None) -> None:
        import openai

        self._openai = openai
        self.base_url, self.timeout = base_url, timeout
        self.max_retries, self.max_reasks, self.temperature = max_retries, max_reasks, temperature
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(f"concurrency must be a positive int, got {concurrency!r}")
        self.concurrency = concurrency
        if vision not in (None, True, False):
            raise ConfigError(f"vision must be None, True or False, got {vision!r}")
        self.vision = vision
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigError(f"max_retries must be an int >= 0, got {max_retries!r}")
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key or "EMPTY", timeout=timeout,
                                     max_retries=max_retries)
        self._model = model
        self.mode = "json_schema"  # switches to "json_object" when the server rejects json_schema
        self._schema_ok = False  # a json_schema request has succeeded: the mode is settled

    @property
    def model(self) -> str:
        if not self._model:
            models = self._call(lambda c: c.models.list())
            if not models.data:
                raise BackendError(f"the server at {self.base_url} serves no model")
            self._model = models.data[0].id
        return self._model

    @property
    def name(self) -> str:
        # no request here: naming a client must not fail when its server is down
        return f"llm:{self._model or self.base_url}"

    def _call(self, fn, *, probe: bool = False, unsupported=lambda exc: False):
        """``fn(client)``, the SDK retrying what fails for a passing reason; what still fails is a
        ``BackendError``, except an error that ``unsupported`` recognises. ``probe``: a 5xx answer to
        the first try is not retried (it may mean "unsupported"); a lost connection still is."""
        o = self._openai
        tries = self.max_retries + 1
        try:
            if not probe:
                return fn(self._client)
            try:
                return fn(self._client.with_options(max_retries=0))
            except (o.APIConnectionError, o.APITimeoutError, o.RateLimitError):
                if self.max_retries == 0:
                    raise
                return fn(self._client.with_options(max_retries=self.max_retries - 1))
            except o.InternalServerError:
                tries = 1
                raise
        except (o.APIConnectionError, o.APITimeoutError, o.InternalServerError, o.RateLimitError) as exc:
            if unsupported(exc):
                raise
            raise BackendError(f"LLM server at {self.base_url} failed after {tries} attempt{'s' * (tries > 1)}: "
                               f"{type(exc).__name__}: {exc}") from exc
        except o.AuthenticationError as exc:
            raise BackendError(f"LLM server at {self.base_url} refused the API key") from exc

    def _response_format(self, schema: type[BaseModel]) -> dict:
        if self.mode == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()}}
        return {"type": "json_object", "schema": schema.model_json_schema()}

    def _create(self, messages: list[dict], schema: type[BaseModel], max_tokens: int, images: bool = False):
        o = self._openai

        def rejects_format(exc: Exception) -> bool:  # llama.cpp's server answers 500 to a json_schema request
            return self.mode == "json_schema" and "json_schema" in str(exc)

        def rejects_images(exc: Exception | None) -> bool:  # tried before the format: the images may be what failed
            return images and self.vision is None and (exc is None or isinstance(exc, o.APIStatusError))

        probe = self.mode == "json_schema" and not self._schema_ok  # a 500 not retried: see the module docstring
        try:
            resp = self._call(lambda c: c.chat.completions.create(
                model=self.model, messages=messages, max_tokens=max_tokens, temperature=self.temperature,
                response_format=self._response_format(schema)), probe=probe or rejects_images(None),
                unsupported=lambda exc: rejects_images(exc) or rejects_format(exc))
            self._schema_ok = self._schema_ok or self.mode == "json_schema"
            return resp
        except (o.BadRequestError, o.UnprocessableEntityError, o.InternalServerError) as exc:
            if rejects_images(exc):
                raise _ImagesRejected(str(exc)[:300]) from exc
            if images:  # vision=True: the images are not dropped silently
                raise BackendError(f"LLM server at {self.base_url} rejected a request with image parts "
                                   f"(vision=True): {exc}") from exc
            if isinstance(exc, o.InternalServerError) and not rejects_format(exc):
                raise
            if self.mode != "json_schema":
                raise BackendError(f"LLM server at {self.base_url} rejected the request: {exc}") from exc
            log.info("server rejected json_schema output (%s); using json_object with the schema in the prompt", exc)
            self.mode = "json_object"
            return self._create(messages, schema, max_tokens, images)

    def complete_json(self, system: str, user: UserContent, schema: type[T], *,
                      max_tokens: int = 512) -> Completion[T]:
        """A reply validated as ``schema``; ``user`` is text or a list of parts (text and images)."""
        rich, plain = openai_content(user), text_content(user)
        images = not isinstance(rich, str)

        def generate(messages: list[dict]) -> tuple[str, int]:
            if self.mode == "json_object":  # no schema-constrained decoding: the schema goes into the prompt
                messages = [{"role": "system", "content": f"{system}\nThe JSON must follow this schema:\n"
                                                          f"{json.dumps(schema.model_json_schema(), separators=(',', ':'))}"}, *messages[1:]]
            send_images = images and self.vision is not False
            if images and not send_images:
                messages = [{**m, "content": plain} if isinstance(m.get("content"), list) else m for m in messages]
            try:
                resp = self._create(messages, schema, max_tokens, send_images)
            except _ImagesRejected as exc:
                log.warning("the server at %s rejected image parts (%s); sending their text instead from now on",
                            self.base_url, exc)
                self.vision = False
                return generate(messages)
            if send_images and self.vision is None:
                self.vision = True
            return resp.choices[0].message.content or "", getattr(resp.usage, "completion_tokens", 0) or 0

        messages = [{"role": "system", "content": system}, {"role": "user", "content": rich}]
        return ask_validated(generate, messages, schema, name=self.name, max_reasks=self.max_reasks)

    def chat(self, messages: list[dict], tools: list[dict], *, tool_choice: str | dict = "auto",
             max_tokens: int = 512) -> ChatTurn:
        """The next assistant turn with tool calling (OpenAI format)."""
        o = self._openai
        t0 = time.perf_counter()
        tools, tool_choice = narrow_tools(tools, tool_choice)  # servers differ on allowed_tools: send the plain form
        try:
            resp = self._call(lambda c: c.chat.completions.create(
                model=self.model, messages=messages, tools=tools or None, tool_choice=tool_choice if tools else None,
                max_tokens=max_tokens, temperature=self.temperature))
        except (o.BadRequestError, o.UnprocessableEntityError) as exc:
            raise BackendError(f"LLM server at {self.base_url} rejected the tool-calling request: {exc}") from exc
        msg = resp.choices[0].message
        calls = []
        for i, tc in enumerate(msg.tool_calls or []):
            try:
                args = json.loads(tc.function.arguments or "{}")
            except json.JSONDecodeError:  # the model's mistake: the tool will report the arguments as invalid
                args = {"__unparsed__": (tc.function.arguments or "")[:200]}
            calls.append(ToolCallRequest(tc.id or f"call_{i}", tc.function.name, args if isinstance(args, dict) else {}))
        content = msg.content or ""
        if not calls and tools and tool_choice != "none":
            calls = calls_in_text(content, {t["function"]["name"] for t in tools})
            if calls:
                content = ""  # the text was the call
        return ChatTurn(content, calls, getattr(resp.usage, "completion_tokens", 0) or 0, time.perf_counter() - t0)


_FUNCTION_TAG = re.compile(r"""<function\s+name\s*=\s*["']([\w.-]+)["']\s+arguments\s*=\s*'(\{.*?\})'\s*/?>""", re.S)


def calls_in_text(text: str, offered: set[str]) -> list[ToolCallRequest]:
    """Tool calls that a model wrote as text where the server's tool parser did not see them: a small
    model imitates the ``<tools>`` block of its prompt instead of writing ``<tool_call>`` (Qwen2.5-Coder
    behind vLLM's Hermes parser: every call of the agent benchmark's ``auto`` rows). Accepted only as
    a whole reply that is nothing but such calls (JSON ``{"name", "arguments"}`` objects, or
    ``<function name=... arguments='{...}'/>``), each naming an offered tool; anything else stays
    text."""
    body = re.sub(r"</?(tools|tool_call|tool_calls)>", " ", text).strip()
    if not body:
        return []
    found: list[tuple[str, dict]] = []
    rest = _FUNCTION_TAG.sub(lambda m: found.append((m.group(1), _json_or_none(m.group(2)))) or " ", body).strip()
    dec = json.JSONDecoder()
    i = 0
    while i < len(rest):
        if rest[i].isspace() or rest[i] == ",":
            i += 1
            continue
        try:
            obj, i = dec.raw_decode(rest, i)
        except json.JSONDecodeError:
            return []
        for o in obj if isinstance(obj, list) else [obj]:
            if not (isinstance(o, dict) and set(o) <= {"name", "arguments"} and "name" in o):
                return []
            found.append((o["name"], o.get("arguments") or {}))
    if not found or any(not isinstance(n, str) or n not in offered or not isinstance(a, dict) for n, a in found):
        return []
    return [ToolCallRequest(f"text_call_{k}_{time.monotonic_ns()}", n, a) for k, (n, a) in enumerate(found)]


def _json_or_none(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None
