"""The LLM door with content parts (issue 42 item 5): a user message of text and images goes to a
vision-language model as OpenAI ``image_url`` parts, and to a text model as its text.

No vision-language weights exist in any package here, so the model that accepts images is a FAKE:
``FakeVisionServer``, a real HTTP server on a real socket that records each request and answers
with a fixed valid JSON reply (it checks the wire format the client sends, nothing about vision).
The text servers are real: llama.cpp's OpenAI-compatible server and vLLM's CPU build, each asked
with an image part they cannot read.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from pydantic import BaseModel, Field
from test_llm import needs_llama

from anomalens.errors import BackendError, InputError
from anomalens.llm import ImagePart, TextPart
from anomalens.llm.content import openai_content, parts_of, text_content
from anomalens.llm.openai_client import OpenAIChatClient


class Word(BaseModel):
    word: str = Field(max_length=12)


def red_square() -> ImagePart:
    px = np.zeros((8, 8, 3), dtype=np.uint8)
    px[2:6, 2:6, 0] = 255
    return ImagePart.from_array(px, alt="[image: an 8x8 crop with a red square]")


def test_parts_become_openai_content_and_text_for_text_models():
    img = red_square()
    from PIL import Image

    back = np.asarray(Image.open(io.BytesIO(img.data)))  # the PNG holds the pixels it was given
    assert back.shape == (8, 8, 3) and back[3, 3, 0] == 255 and back[0, 0].sum() == 0
    assert openai_content("hello") == "hello" == openai_content(["hello"])
    assert openai_content(["a", TextPart("b")]) == "a\nb"  # text only: a string (llama.cpp's server takes no list)
    rich = openai_content(["What is in", img, "this crop?"])
    assert [p["type"] for p in rich] == ["text", "image_url", "text"]
    url = rich[1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,") and base64.b64decode(url.split(",", 1)[1]) == img.data
    assert text_content(["What is in", img, "this crop?"]) == "What is in\n[image: an 8x8 crop with a red square]\nthis crop?"
    grey = ImagePart.from_array(np.linspace(0, 1, 12).reshape(3, 4))  # floats in [0, 1]
    assert "4x3 pixels" in grey.alt and grey.mime == "image/png"


@pytest.mark.parametrize("bad, match", [
    (lambda: ImagePart(b"", "image/png"), "image data must be non-empty bytes"),
    (lambda: ImagePart(b"x", "image/gif"), "image mime must be one of"),
    (lambda: ImagePart.from_array(np.zeros((2, 2, 4))), r"pixels must be \(h, w\) or \(h, w, 3\), got shape \(2, 2, 4\)"),
    (lambda: ImagePart.from_array(np.full((2, 2), np.nan)), "pixels must be finite"),
    (lambda: parts_of(["ok", 3]), "user content part 1 must be a str, TextPart or ImagePart, got int"),
    (lambda: OpenAIChatClient("http://127.0.0.1:9/v1", vision="yes"), "vision must be None, True or False"),
])
def test_bad_parts_are_named(bad, match):
    with pytest.raises((InputError, Exception), match=match):
        bad()


class FakeVisionServer:
    """FAKE vision-language server (see the module docstring): records request bodies; answers
    ``{"word": "red"}`` or, with ``reject_lists``, 400 "not a multimodal model" to list content as
    vLLM does for a text model."""

    def __init__(self, reject_lists: bool = False) -> None:
        self.bodies: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                outer.bodies.append(body)
                content = body["messages"][-1]["content"]
                if reject_lists and isinstance(content, list):
                    self._send(400, {"error": {"message": "fake is not a multimodal model", "type": "BadRequestError"}})
                    return
                self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": "fake-vlm",
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": '{"word": "red"}'}}],
                                 "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})

            def _send(self, code, payload):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


def test_a_vision_model_receives_the_image_as_an_image_url_part():
    fake = FakeVisionServer()
    try:
        client = OpenAIChatClient(fake.url, model="fake-vlm", max_retries=0)
        img = red_square()
        out = client.complete_json("Answer in JSON.", ["Which colour is the square?", img], Word, max_tokens=8)
        assert out.value.word == "red" and client.vision is True
        content = fake.bodies[-1]["messages"][-1]["content"]
        assert content[0] == {"type": "text", "text": "Which colour is the square?"}
        assert content[1] == {"type": "image_url", "image_url": {"url": img.url}}
        client.complete_json("Answer in JSON.", "A text question.", Word, max_tokens=8)
        assert fake.bodies[-1]["messages"][-1]["content"] == "A text question."  # text alone stays a string
    finally:
        fake.close()


def test_a_rejection_falls_back_to_text_once_and_vision_true_refuses_to_drop_images():
    fake = FakeVisionServer(reject_lists=True)
    try:
        client = OpenAIChatClient(fake.url, model="fake", max_retries=2)
        q = ["Which colour?", red_square()]
        assert client.complete_json("Answer in JSON.", q, Word, max_tokens=8).value.word == "red"
        assert client.vision is False and client.mode == "json_schema"  # the format was not blamed
        assert [isinstance(b["messages"][-1]["content"], list) for b in fake.bodies] == [True, False]  # not retried
        assert fake.bodies[-1]["messages"][-1]["content"] == "Which colour?\n[image: an 8x8 crop with a red square]"
        n = len(fake.bodies)
        client.complete_json("Answer in JSON.", q, Word, max_tokens=8)
        assert len(fake.bodies) == n + 1  # remembered: no rejected try again
        strict = OpenAIChatClient(fake.url, model="fake", max_retries=0, vision=True)
        with pytest.raises(BackendError, match="rejected a request with image parts"):
            strict.complete_json("Answer in JSON.", q, Word, max_tokens=8)
        assert strict.mode == "json_schema"
    finally:
        fake.close()


@needs_llama
def test_real_llama_cpp_server_gets_the_text_of_an_image_question(llama_url):
    client = OpenAIChatClient(llama_url, model="", timeout=120)
    out = client.complete_json("Answer in JSON.", ["Name the colour in one word.", red_square()], Word, max_tokens=24)
    assert client.vision is False and out.completion_tokens > 0 and out.value.word  # answered from the text


@needs_llama
def test_embedded_model_reads_the_alt_text():
    from anomalens.llm.local import LlamaCppClient

    client = LlamaCppClient(n_threads=1)
    out = client.complete_json("Answer in JSON.", ["Name the colour in one word.", red_square()], Word, max_tokens=24)
    assert client.vision is False and out.completion_tokens > 0 and out.value.word
