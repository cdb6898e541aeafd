"""What a user message to a model holds: text, or a list of parts (text and images).

A vision-language model receives an image region exactly as a text model receives a row: as
parts of the user message, in the OpenAI-compatible form that vLLM serves (``{"type": "text"}``
and ``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}``). A backend
that reads text only gets the text parts, each image replaced by its ``alt`` text, so the
prompt still says that an image was there and what it showed; nothing else changes for it.

>>> text_content(["Is this region normal?", ImagePart(b"...", alt="[image: case 3, 64x64 crop]")])
'Is this region normal?\\n[image: case 3, 64x64 crop]'
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

from anomalens.errors import InputError

__all__ = ["ImagePart", "Part", "TextPart", "UserContent", "openai_content", "parts_of", "text_content"]

IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
MAX_IMAGE_BYTES = 8 * 1024 * 1024  # a data URL past this is a mistake, not a region of a case


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    """An encoded image (PNG, JPEG or WebP bytes) and the text that stands in for it where a
    model reads text only."""

    data: bytes
    mime: str = "image/png"
    alt: str = "[image omitted: this model reads text only]"

    def __post_init__(self) -> None:
        if self.mime not in IMAGE_TYPES:
            raise InputError(f"image mime must be one of {list(IMAGE_TYPES)}, got {self.mime!r}")
        if not isinstance(self.data, bytes) or not self.data:
            raise InputError(f"image data must be non-empty bytes, got {type(self.data).__name__} "
                             f"of length {len(self.data) if hasattr(self.data, '__len__') else '?'}")
        if len(self.data) > MAX_IMAGE_BYTES:
            raise InputError(f"image data must be at most {MAX_IMAGE_BYTES} bytes, got {len(self.data)}")

    @classmethod
    def from_array(cls, pixels, *, alt: str | None = None) -> ImagePart:
        """A PNG of ``pixels``: (h, w) grey or (h, w, 3) RGB, uint8 or floats in [0, 1]."""
        import numpy as np
        from PIL import Image

        a = np.asarray(pixels)
        if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3)) or 0 in a.shape:
            raise InputError(f"pixels must be (h, w) or (h, w, 3), got shape {a.shape}")
        if a.dtype != np.uint8:
            if not np.isfinite(a).all():
                raise InputError("pixels must be finite")
            a = (np.clip(a, 0.0, 1.0) * 255).round().astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(a[..., 0] if a.ndim == 3 and a.shape[2] == 1 else a).save(buf, format="PNG")
        h, w = a.shape[:2]
        return cls(buf.getvalue(), "image/png", alt or f"[image: {w}x{h} pixels, omitted: this model reads text only]")

    @property
    def url(self) -> str:
        """The image as a data URL (what ``image_url`` carries)."""
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


Part = TextPart | ImagePart
UserContent = str | Sequence[str | TextPart | ImagePart]


def parts_of(content: UserContent) -> list[Part]:
    """``content`` as a list of parts (a plain string is one text part)."""
    if isinstance(content, str):
        return [TextPart(content)]
    out: list[Part] = []
    for i, p in enumerate(content):
        if isinstance(p, str):
            out.append(TextPart(p))
        elif isinstance(p, (TextPart, ImagePart)):
            out.append(p)
        else:
            raise InputError(f"user content part {i} must be a str, TextPart or ImagePart, got {type(p).__name__}")
    return out


def text_content(content: UserContent) -> str:
    """The text a text-only model reads: the text parts, each image replaced by its ``alt``."""
    return "\n".join(p.text if isinstance(p, TextPart) else p.alt for p in parts_of(content))


def openai_content(content: UserContent) -> str | list[dict]:
    """The user message's ``content`` in the OpenAI chat format: a string when it holds text only
    (what every server accepts; llama.cpp's rejects a list), else a list of text and ``image_url``
    parts in order."""
    parts = parts_of(content)
    if not any(isinstance(p, ImagePart) for p in parts):
        return "\n".join(p.text for p in parts)  # type: ignore[union-attr]
    return [{"type": "text", "text": p.text} if isinstance(p, TextPart)
            else {"type": "image_url", "image_url": {"url": p.url}} for p in parts]

