"""Reading logs: files (plain or ``.gz``), several of them, or standard input, as ``LogLine`` records.

A line is split into its header fields and its message (``Content``) by a **format**:

- a loghub-style format string, ``"<Date> <Time> <Pid> <Level> <Component>: <Content>"`` (the text
  between fields is a regular expression, as in loghub's own benchmark: ``\\[`` is a bracket, a
  space matches any run of spaces);
- a preset name: ``syslog`` (RFC 3164), ``rfc5424``, ``iso`` (ISO-8601 prefixed lines), ``jsonl``
  (one JSON object per line; its message, time and level fields found by their usual names, or
  named: ``jsonl:message=msg,time=ts,level=severity``), ``raw`` (the whole line is the message) and
  the 16 loghub systems (``hdfs``, ``bgl``, ``openssh``, ...);
- nothing: the format is **detected** from the first lines (the preset that matches most of them;
  ``raw`` when none matches half of them), and ``LogStats.format`` says which was chosen.

Nothing is dropped silently. ``LogStats`` counts every line read and what happened to it:

- ``blank``: empty or whitespace-only lines, skipped;
- ``binary``: lines that are mostly not text (over 30% control bytes, NUL included, in their first
  4 KiB), skipped;
- ``control``: lines of text holding a few control bytes (a NUL in one field), kept with each
  control byte shown as U+FFFD: one byte never hides a line a person would read;
- ``undecodable``: lines with bytes that are not UTF-8, kept with the bad bytes replaced (U+FFFD);
- ``truncated``: lines longer than ``MAX_LINE`` characters, kept, cut at ``MAX_LINE`` (a line is
  read in blocks: memory stays bounded however long it is, ``/dev/zero`` included);
- ``unmatched``: lines the format does not fit (e.g. a stack-trace continuation), kept with the
  whole line as the message.

CRLF and CR line ends are handled. Reading is a generator: memory does not grow with the input.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anomalens.errors import InputError
from anomalens.text import clip, strip_control

__all__ = ["FORMATS", "LogFormat", "LogLine", "LogStats", "decode_lines", "detect_format", "get_format", "is_gzip",
           "line_texts", "log_file", "open_lines", "read_logs"]

MAX_LINE = 16_384  # characters kept of one line (longer lines are cut and counted)
DETECT_LINES = 200  # lines looked at to detect a format

# loghub's format strings (logpai/logparser's benchmark settings) and common ones; the text between
# fields is a regular expression
FORMATS: dict[str, str] = {
    "hdfs": r"<Date> <Time> <Pid> <Level> <Component>: <Content>",
    "hadoop": r"<Date> <Time> <Level> \[<Process>\] <Component>: <Content>",
    "spark": r"<Date> <Time> <Level> <Component>: <Content>",
    "zookeeper": r"<Date> <Time> - <Level>  \[<Node>:<Component>@<Id>\] - <Content>",
    "bgl": r"<Label> <Timestamp> <Date> <Node> <Time> <NodeRepeat> <Type> <Component> <Level> <Content>",
    "hpc": r"<LogId> <Node> <Component> <State> <Time> <Flag> <Content>",
    "thunderbird": r"<Label> <Timestamp> <Date> <User> <Month> <Day> <Time> <Location> <Component>(\[<PID>\])?: <Content>",
    "windows": r"<Date> <Time>, <Level>                  <Component>    <Content>",
    "linux": r"<Month> <Date> <Time> <Level> <Component>(\[<PID>\])?: <Content>",
    "android": r"<Date> <Time>  <Pid>  <Tid> <Level> <Component>: <Content>",
    "healthapp": r"<Time>\|<Component>\|<Pid>\|<Content>",
    "apache": r"\[<Time>\] \[<Level>\] <Content>",
    "proxifier": r"\[<Time>\] <Program> - <Content>",
    "openssh": r"<Date> <Day> <Time> <Component> sshd\[<Pid>\]: <Content>",
    "openstack": r"<Logrecord> <Date> <Time> <Pid> <Level> <Component> \[<ADDR>\] <Content>",
    "mac": r"<Month>  <Date> <Time> <User> <Component>\[<PID>\]( \(<Address>\))?: <Content>",
    # RFC 3164: "Oct 11 22:14:15 mymachine su[123]: message"
    "syslog": r"<Month> +<Day> <Time> <Host> <Component>: <Content>",
    # RFC 5424: "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - message"
    "rfc5424": r"\<<Pri>\>1 <Timestamp> <Host> <App> <Pid> <MsgId> <Structured> <Content>",
    # "2024-05-01T10:00:00.123Z INFO component: message" (level and component optional)
    "iso": r"<Timestamp> <Content>",
}
# what a field must look like for a preset to match (a format of bare <A> <B> <Content> fields
# would match any line otherwise)
_FIELD_PATTERNS = {
    "Date": r"[\w/.-]+", "Time": r"[\w:.,/ -]+?", "Level": r"[A-Za-z]+", "Pid": r"\d+", "Tid": r"\d+", "PID": r"\d+",
    "LogId": r"\d+", "Id": r"\d+", "Month": r"[A-Z][a-z]{2}", "Day": r"\d{1,2}|[A-Z][a-z]{2}", "Pri": r"\d{1,3}",
    "Timestamp": r"\d{4}-\d{2}-\d{2}[T ][\d:.,]+(?:Z|[+-]\d{2}:?\d{2})?|\d{9,}", "Flag": r"-?\d+",
    "ADDR": r"[^\]]*", "Address": r"[^)]*",
}  # any other field: one word
_GENERIC = ("syslog", "rfc5424", "iso")
_TIME_FIELDS = ("Timestamp", "Date", "Month", "Day", "Time")  # joined, in this order, into the line's time text


@dataclass(frozen=True)
class LogLine:
    """One line read: where it came from (``source`` file name, 1-based ``lineno``), its message
    (``content``), its header fields and time text (None when the format has none)."""

    source: str
    lineno: int
    content: str
    raw: str
    time: str | None = None
    level: str | None = None


@dataclass
class LogStats:
    """What reading did with every line (see the module docstring)."""

    format: str = ""
    detected: bool = False
    lines: int = 0
    kept: int = 0
    blank: int = 0
    binary: int = 0
    undecodable: int = 0
    control: int = 0
    truncated: int = 0
    unmatched: int = 0
    files: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return self.blank + self.binary

    def summary(self) -> str:
        """One sentence: lines read, kept, and why any were skipped or changed."""
        parts = [f"{self.lines} lines read from {len(self.files)} input(s) with format {self.format!r}"
                 + (" (detected)" if self.detected else "")]
        parts.append(f"{self.kept} kept")
        why = [f"{n} {what}" for n, what in ((self.blank, "blank"), (self.binary, "binary")) if n]
        if why:
            parts.append(f"{self.skipped} skipped ({', '.join(why)})")
        changed = [f"{n} {what}" for n, what in ((self.unmatched, "not matching the format, kept whole"),
                                                  (self.undecodable, "with non-UTF-8 bytes replaced"),
                                                  (self.control, "with control bytes replaced"),
                                                  (self.truncated, f"longer than {MAX_LINE} characters, cut")) if n]
        if changed:
            parts.append("; ".join(changed))
        return "; ".join(parts)


class LogFormat:
    """A header format: ``parse(line) -> (content, time, level) | None`` (None: the line does not fit)."""

    def __init__(self, spec: str, name: str | None = None, *, message_field: str = "message",
                 time_field: str | None = None, level_field: str | None = None) -> None:
        self.name = name or spec
        self.spec = spec
        self.json = spec == "jsonl"
        self.raw = spec == "raw"
        self.message_field, self.time_field, self.level_field = message_field, time_field, level_field
        if self.json or self.raw:
            self.fields: list[str] = []
            return
        parts = re.split(r"(<[^<>]+>)", spec)
        fields = [p[1:-1] for p in parts if p.startswith("<") and p.endswith(">") and re.fullmatch(r"<\w+>", p)]
        if "Content" not in fields:
            raise InputError(f"format must contain a <Content> field (the message), got {spec!r}")
        if len(set(fields)) != len(fields):
            raise InputError(f"format names a field twice: {spec!r}")
        regex = ""
        for i, p in enumerate(parts):
            if re.fullmatch(r"<\w+>", p):
                f = p[1:-1]
                after = parts[i + 1] if i + 1 < len(parts) else ""
                # a field without its own pattern: one word when spaces follow it, else the shortest
                # text up to the literal that follows (loghub's rule)
                default = r"\S+?" if not after.strip() else r".*?"
                pat = ".*" if f == "Content" else _FIELD_PATTERNS.get(f, default)
                regex += f"(?P<{f}>{pat})"
            else:
                regex += re.sub(" +", r"\\s+", p)
        try:
            self.regex = re.compile("^" + regex + "$")
        except re.error as exc:
            raise InputError(f"format {spec!r} is not a valid pattern ({exc})") from exc
        self.fields = fields
        self._time = [f for f in _TIME_FIELDS if f in fields]

    def __repr__(self) -> str:
        return f"LogFormat({self.name!r})"

    def parse(self, line: str) -> tuple[str, str | None, str | None] | None:
        if self.raw:
            return line, None, None
        if self.json:
            return self._parse_json(line)
        m = self.regex.match(line)
        if m is None:
            return None
        g = m.groupdict()
        time = " ".join(g[f] for f in self._time if g.get(f)) or None
        return g["Content"], time, g.get("Level")

    def _parse_json(self, line: str) -> tuple[str, str | None, str | None] | None:
        try:
            obj = json.loads(line)
        except ValueError:
            return None
        if not isinstance(obj, dict):
            return None
        msg = obj.get(self.message_field)
        if msg is None:
            msg = next((obj[k] for k in ("message", "msg", "log", "text") if k in obj), None)
        if msg is None:
            return None
        t = obj.get(self.time_field) if self.time_field else next(
            (obj[k] for k in ("timestamp", "time", "ts", "@timestamp") if k in obj), None)
        lv = obj.get(self.level_field) if self.level_field else next(
            (obj[k] for k in ("level", "severity", "lvl") if k in obj), None)
        return str(msg), None if t is None else str(t), None if lv is None else str(lv)


def get_format(fmt: str | LogFormat | None, **json_fields: Any) -> LogFormat | None:
    """A ``LogFormat`` from a preset name, a format string, a LogFormat or None (detect)."""
    if fmt is None or isinstance(fmt, LogFormat):
        return fmt
    if not isinstance(fmt, str) or not fmt.strip():
        raise InputError(f"format must be a preset name, a format string with <Content> or None, got {fmt!r}")
    key = fmt.strip().lower()
    if key.startswith(("jsonl:", "json:")):  # jsonl:message=msg,time=ts,level=severity
        fields = {}
        for part in fmt.split(":", 1)[1].split(","):
            name, _, value = part.partition("=")
            name = name.strip().lower()
            if name not in ("message", "time", "level") or not value.strip():
                raise InputError(f"format jsonl takes message=, time= and level= fields (e.g. "
                                 f"'jsonl:message=msg,time=ts'), got {part.strip()!r}")
            fields[f"{name}_field"] = value.strip()
        return LogFormat("jsonl", fmt.strip(), **{**json_fields, **fields})
    if key in ("jsonl", "json", "raw"):
        return LogFormat("jsonl" if key != "raw" else "raw", key, **json_fields)
    if key in FORMATS:
        return LogFormat(FORMATS[key], key)
    if "<" not in fmt:
        raise InputError(f"format must be one of {sorted([*FORMATS, 'jsonl', 'raw'])} or a format string such as "
                         f"'<Date> <Time> <Level> <Component>: <Content>', got {fmt!r}")
    return LogFormat(fmt)


def detect_format(lines: list[str]) -> LogFormat:
    """The preset that fits most of ``lines``; ties go to the one that reads more header fields
    from them (a generic format, syslog, RFC 5424 or ISO-8601, counts two more, so a plain syslog
    line is called syslog rather than a loghub system's variant of it); ``raw`` when none fits half
    of the lines; ``jsonl`` when most lines are JSON objects with a message."""
    lines = [ln for ln in lines if ln.strip()][:DETECT_LINES]
    if not lines:
        return LogFormat("raw", "raw")
    candidates = [LogFormat("jsonl", "jsonl")] + [LogFormat(spec, name) for name, spec in FORMATS.items()]
    best, best_key = LogFormat("raw", "raw"), (0.5, 0)
    for f in candidates:
        fits = [ln for ln in lines if f.parse(ln) is not None]
        share = len(fits) / len(lines)
        if share <= 0.5:
            continue
        if f.json:
            filled = 100
        else:
            filled = sum(1 for v in f.regex.match(fits[0]).groupdict().values() if v) + 2 * (f.name in _GENERIC)
        key = (share, filled)
        if key > best_key:
            best, best_key = f, key
    return best


def log_file(source: str | Path) -> Path:
    """``source`` as the path of an existing file, or an InputError saying why it is not one."""
    p = Path(source)
    if not p.exists():
        raise InputError(f"log file {clip(strip_control(str(p)), 160)!r} does not exist")
    if p.is_dir():
        raise InputError(f"log file {clip(strip_control(str(p)), 160)!r} is a directory; pass the files in it")
    return p


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def open_lines(source: str | Path | io.IOBase) -> tuple[str, Iterator[bytes]]:
    """(display name, byte lines) of a file, a ``.gz`` file, ``-`` (standard input), or log text
    (a ``str`` holding at least one line end, or a binary file object)."""
    if isinstance(source, io.IOBase):
        name = getattr(source, "name", None)
        return name if isinstance(name, str) else "<text>", _bounded(source)
    if isinstance(source, str) and ("\n" in source or "\r" in source):
        return "<text>", _bounded(io.BytesIO(source.encode("utf-8", errors="surrogateescape")))
    if str(source) == "-":
        return "<stdin>", _bounded(sys.stdin.buffer)
    p = log_file(source)
    stream = gzip.open(p, "rb") if is_gzip(p) else open(p, "rb")
    return p.name, _lines_of(stream, p.name)


def _lines_of(stream: io.BufferedIOBase, name: str) -> Iterator[bytes]:
    import zlib

    n = 0
    with stream:
        try:
            for n, b in enumerate(_bounded(stream), start=1):
                yield b
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:  # a truncated or corrupted .gz
            raise InputError(f"log file {clip(strip_control(name), 160)!r} is a damaged .gz file after line {n} "
                             f"({exc or type(exc).__name__}); nothing past that line can be read") from exc


LINE_BYTES = 4 * MAX_LINE  # bytes of one line read (UTF-8: at most 4 per character); the rest is skipped


def _bounded(stream: Any) -> Iterator[bytes]:
    """The byte lines of ``stream`` (split on \\n; CR is stripped later), each at most ``LINE_BYTES``
    long: the rest of a longer line is read in blocks and dropped, so memory does not grow with a line's
    length (``_decode`` then cuts it to ``MAX_LINE`` characters and counts it)."""
    while True:
        b = stream.readline(LINE_BYTES)
        if not b:
            return
        if len(b) == LINE_BYTES and not b.endswith(b"\n"):
            while True:  # skip to the end of this line
                rest = stream.readline(LINE_BYTES)
                if not rest or rest.endswith(b"\n"):
                    break
            b += b"\n"
        yield b


_NOT_CONTROL = bytes(c for c in range(256) if not (c < 9 or 13 < c < 32))  # deleted: what is left is control bytes
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _decode(b: bytes, stats: LogStats) -> str | None:
    b = b.rstrip(b"\r\n").replace(b"\r", b"")
    if not b.strip():
        stats.blank += 1
        return None
    head = b[:4096]
    n_control = len(head.translate(None, _NOT_CONTROL))
    if n_control > 0.3 * len(head):  # mostly not text: a share over a block, never one byte
        stats.binary += 1
        return None
    try:
        s = b.decode("utf-8")
    except UnicodeDecodeError:
        stats.undecodable += 1
        s = b.decode("utf-8", errors="replace")
    if n_control or len(b) > len(head):
        s, n = _CONTROL.subn("\ufffd", s)
        stats.control += bool(n)
    if len(s) > MAX_LINE:
        stats.truncated += 1
        s = s[:MAX_LINE]
    return s


def read_logs(sources: str | Path | Iterable[str | Path], fmt: str | LogFormat | None = None, *,
              stats: LogStats | None = None, **json_fields: Any) -> Iterator[LogLine]:
    """The lines of ``sources`` (paths, ``-`` for standard input) as ``LogLine``s, in order; ``stats``
    (pass one to read it afterwards) counts what happened to every line. ``fmt`` None: detected
    from the first lines of the first input."""
    if isinstance(sources, (str, Path, io.IOBase)):
        sources = [sources]
    sources = list(sources)
    if not sources:
        raise InputError("no log input given: pass one or more files, or - for standard input")
    stats = stats if stats is not None else LogStats()
    form = get_format(fmt, **json_fields)
    opened = [open_lines(s) for s in sources]  # every path checked before any is read
    for name, byte_lines in opened:
        stats.files.append(name)
        if form is None:  # detect from the first lines of the first input, then read those lines too
            head = []
            for b in byte_lines:
                head.append(b)
                if len(head) >= DETECT_LINES:
                    break
            form = detect_format([b.decode("utf-8", errors="replace").rstrip("\r\n") for b in head])
            stats.detected = True
            byte_lines = _chain(head, byte_lines)
        stats.format = form.name
        yield from decode_lines(name, byte_lines, form, stats)


def decode_lines(name: str, byte_lines: Iterable[bytes], form: LogFormat, stats: LogStats) -> Iterator[LogLine]:
    """The ``LogLine``s of one input's byte lines, numbered from 1: the decoding and format step of
    ``read_logs`` (a worker reading a byte range of a file runs the same step)."""
    for n, b in enumerate(byte_lines, start=1):
        stats.lines += 1
        s = _decode(b, stats)
        if s is None:
            continue
        parsed = form.parse(s)
        if parsed is None:
            stats.unmatched += 1
            parsed = (s.strip(), None, None)
        stats.kept += 1
        yield LogLine(source=name, lineno=n, content=parsed[0], raw=s, time=parsed[1], level=parsed[2])


def line_texts(source: str | Path, linenos: Iterable[int]) -> dict[int, str]:
    """The raw texts (as ``LogLine.raw``) of some 1-based lines of a log file, read in one pass;
    lines skipped by the reader (blank, binary) and numbers beyond the file are absent."""
    want = set(int(n) for n in linenos)
    out: dict[int, str] = {}
    if not want:
        return out
    last = max(want)
    _, byte_lines = open_lines(source)
    stats = LogStats()
    for n, b in enumerate(byte_lines, start=1):
        if n in want:
            s = _decode(b, stats)
            if s is not None:
                out[n] = s
        if n >= last:
            break
    return out


def _chain(head: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    yield from head
    yield from rest
