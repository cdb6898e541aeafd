"""Untrusted text (column names, labels, file names, log lines, model output) made safe for where it goes.

- ``strip_control``: removes terminal escape sequences (CSI, OSC such as window titles and OSC-8
  links, DCS/APC/PM/SOS strings, single-character escapes) and every other control character.
- ``for_terminal``: that, clipped, with rich markup escaped, so ``[/]`` or ``[bold]`` prints as itself.
- ``for_markdown``: that, with markdown and HTML escaped, so ``<script>`` or ``![x](http://...)``
  is shown as text and never rendered or fetched.
- ``from_base64``: a file's bytes from its base64 text (strict: no stray characters), or an error
  naming the field.
"""

from __future__ import annotations

import html
import re

__all__ = ["clip", "for_markdown", "for_terminal", "from_base64", "names", "strip_control", "whole_sentences"]

_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI ... final byte (colours, cursor moves, clear screen)
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC ... BEL or ST (window title, OSC-8 hyperlinks)
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC strings
    r"|\x1b[ -/]*[0-~]?"  # other escapes (and a lone ESC)
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]#!|~])")


def strip_control(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` without escape sequences and control characters (tabs and, if asked, newlines kept;
    otherwise they become spaces). Bidirectional overrides and zero-width characters go too."""
    s = _ESCAPES.sub("", str(text))
    if keep_newlines:
        s = s.replace("\r\n", "\n").replace("\r", "\n")
        return _CONTROL.sub("", s.replace("\t", " "))
    return _CONTROL.sub("", s.replace("\t", " ").replace("\r", " ").replace("\n", " "))


def clip(text: str, max_len: int = 120) -> str:
    """At most ``max_len`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= max_len else text[: max_len - 1] + "…"


def for_terminal(text: object, max_len: int | None = 200) -> str:
    """Safe to pass to ``rich`` as markup: control characters stripped, clipped, markup escaped."""
    from rich.markup import escape

    s = strip_control(text)
    return escape(clip(s, max_len) if max_len else s)


def for_markdown(text: object, max_len: int | None = None) -> str:
    """Safe inside a markdown table cell or paragraph: control characters stripped, HTML escaped,
    markdown punctuation backslash-escaped (no links, images, emphasis or table breaks)."""
    s = strip_control(text)
    if max_len:
        s = clip(s, max_len)
    return _MD_SPECIAL.sub(r"\\\1", html.escape(s, quote=False))


def names(values, limit: int = 5, max_len: int = 60) -> str:
    """A short, safe list of untrusted names for an error message: at most ``limit`` of them, each
    clipped to ``max_len`` characters with control characters stripped, and how many were left out."""
    values = list(values)
    shown = [repr(clip(strip_control(v), max_len)) for v in values[:limit]]
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return "[" + ", ".join(shown) + "]" + more


def whole_sentences(text: str, limit: int) -> str:
    """``text`` that a length bound of ``limit`` characters may have cut off (a model's reply decoded
    under a schema's ``maxLength``), back to its last whole sentence, or marked as cut with an
    ellipsis when it has none: a reader should not meet half a sentence."""
    if len(text) < limit - 1:
        return text
    end = max(text.rfind(". "), text.rfind("! "), text.rfind("? "), text.rfind(".", len(text) - 1))
    return text[: end + 1] if end > 0 else text.rstrip(" ,;:") + "…"


def from_base64(text: object, field: str) -> bytes:
    """The bytes of ``text`` decoded as base64 (``validate=True``: a character outside the alphabet is an
    error, not skipped), or an InputError naming ``field``."""
    import base64
    import binascii

    from anomalens.errors import InputError

    try:
        return base64.b64decode(text, validate=True)  # type: ignore[arg-type]
    except (binascii.Error, TypeError, ValueError) as exc:
        raise InputError(f"{field} must be base64 ({exc})") from None
