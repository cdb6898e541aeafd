"""Log messages into templates: Drain3 learns them, a fast path matches known ones.

**Learning** (``TemplateParser.fit``) runs Drain3's ``TemplateMiner`` (the maintained Drain
implementation; He et al., ICWS 2017) over the messages of normal logs, after masking the usual
variables: UUIDs, block ids (``blk_...``), request ids (``req-...``), IP addresses (with a port),
hexadecimal values, paths and numbers (``DEFAULT_MASKS``; pass ``masks=`` to change them). Each
cluster becomes a template with id ``E<n>``.

**Matching** (``TemplateParser.parse``) does not run Drain's loop. A line is masked (the same
masks), split into tokens and looked up:

1. an exact-text cache of masked messages already matched (most lines of a log repeat one);
2. the templates with the same token count and first token (or a wildcard first token), each a
   tuple of constants and wildcards, compared token by token; the template with the most constant
   tokens that fits wins (the most specific, as Drain's own exact ``match``).

A line no template fits is **never forced into a near template**: it is "never seen in normal
logs", grouped with other unseen lines by a separate Drain (ids ``N<n>``), and kept as evidence.

The miner's state (its templates, their sizes and the Drain settings) is saved as JSON and the
prefix tree rebuilt at load, so a loaded parser can also go on learning (no pickle, no jsonpickle).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from anomalens.errors import CheckpointError, InputError

__all__ = ["DEFAULT_MASKS", "ParsedLine", "TemplateParser", "TimedPattern"]

# (regex, mask name): applied in this order, so an IP is masked before its numbers are
DEFAULT_MASKS: tuple[tuple[str, str], ...] = (
    (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", "UUID"),
    (r"blk_-?\d+", "BLK"),
    (r"req-[0-9a-fA-F-]+", "REQ"),
    (r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?(?![\w.])", "IP"),
    (r"(?<![\w])0[xX][0-9a-fA-F]+(?![\w])", "HEX"),
    (r"(?<![\w])(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}(?![\w])", "HEX"),
    (r"(?<![\w.:/])(?:/[\w.+-]+){2,}/?", "PATH"),
    # a number, except a status: an HTTP status after the request line or a "status" key stays in the
    # template (a 500 is another event than a 200; masked, a server's errors hid among its successes)
    (r'(?<![A-Za-z0-9])(?<!status )(?<!status: )(?<!status=)(?<!status_code=)(?<!HTTP/\d\.\d" )(?<!HTTP/\d" )'
     r"[-+]?\d+(?:\.\d+)?(?![A-Za-z0-9])", "NUM"),
)
PATTERN_TIMEOUT = 1.0  # seconds a user's pattern (a --mask, a --session) may take on one line


class TimedPattern:
    """A user's regular expression compiled by the ``regex`` package (``re``'s syntax), whose matches
    stop after PATTERN_TIMEOUT seconds on a line with one InputError naming ``what`` (``re`` cannot
    stop a catastrophic pattern such as ``(a|aa)+$``; it hung the read)."""

    def __init__(self, pattern: str, what: str, hint: str = "") -> None:
        import regex

        self.rx, self.what, self.hint = regex.compile(pattern), what, hint
        self.pattern = pattern

    def _stopped(self, text: str) -> InputError:
        return InputError(f"{self.what} {self.pattern!r} took over {PATTERN_TIMEOUT:g} s on one line of {len(text)} "
                          f"characters: it backtracks catastrophically (nested repeats such as (a|aa)+); write it "
                          f"without nested repeats{self.hint}")

    def sub(self, repl: str, text: str) -> str:
        try:
            return self.rx.sub(repl, text, timeout=PATTERN_TIMEOUT)
        except TimeoutError:
            raise self._stopped(text) from None

    def findall(self, text: str) -> list[str]:
        """Every match's text, in order."""
        try:
            return [m.group(0) for m in self.rx.finditer(text, timeout=PATTERN_TIMEOUT)]
        except TimeoutError:
            raise self._stopped(text) from None


# substrings without which a default mask cannot match (its regex is skipped): masking is most of the
# fast path's time
_GUARDS = {DEFAULT_MASKS[0][0]: ("-",), DEFAULT_MASKS[1][0]: ("blk_",), DEFAULT_MASKS[2][0]: ("req-",),
           DEFAULT_MASKS[3][0]: (".",), DEFAULT_MASKS[4][0]: ("0x", "0X"), DEFAULT_MASKS[6][0]: ("/",)}
_NEEDS_DIGIT = {p for p, n in DEFAULT_MASKS if n != "PATH"}
_DIGIT = re.compile(r"\d")
_TO_ONE = str.maketrans("23456789", "11111111")  # a message's shape: digits 1-9 written 1, 0 kept (masks read "0x")
WILDCARD = "<*>"
CACHE_SIZE = 100_000  # masked messages remembered by the fast path


@dataclass(frozen=True)
class ParsedLine:
    template_id: str  # "E<n>" learnt from normal logs, or "N<n>" for a template never seen in them
    seen: bool


class TemplateParser:
    """Drain3 templates of normal logs and a fast matcher for them (see the module docstring).

    Args:
        masks: (regex, name) pairs masked before parsing (default ``DEFAULT_MASKS``).
        sim_th, depth, max_children: Drain's similarity threshold, tree depth and fan-out
            (Drain3's defaults 0.4, 4, 100).
    """

    def __init__(self, masks: Iterable[tuple[str, str]] | None = None, *, sim_th: float = 0.4, depth: int = 4,
                 max_children: int = 100) -> None:
        self.masks = tuple((str(p), str(n)) for p, n in (DEFAULT_MASKS if masks is None else masks))
        for p, n in self.masks:
            try:
                re.compile(p)
            except re.error as exc:
                raise InputError(f"mask {n!r} is not a valid regular expression ({exc}): {p!r}") from exc
            if not re.fullmatch(r"\w+", n):
                raise InputError(f"mask names must be words, got {n!r}")
        if not 0 < sim_th <= 1:
            raise InputError(f"sim_th must be in (0, 1], got {sim_th!r}")
        if int(depth) < 3:
            raise InputError(f"depth must be at least 3, got {depth!r}")
        self.sim_th, self.depth, self.max_children = float(sim_th), int(depth), int(max_children)
        # a user's mask runs in the ``regex`` package with a time limit per line (a catastrophic pattern
        # is stopped with one error instead of hanging the read); the default masks, applied to every
        # line on the fast path, in ``re``
        defaults = {p for p, _ in DEFAULT_MASKS}
        self._compiled = [(re.compile(p) if p in defaults else TimedPattern(p, "mask"), f"<{n}>", _GUARDS.get(p),
                           p in _NEEDS_DIGIT)
                          for p, n in self.masks]
        # masks that read no digit's value but 0's (\d, classes, counts, a literal 0): then two messages
        # of the same shape (digits 1-9 written 1) mask alike (see ``match``)
        self._digit_blind = all(not re.search(r"[1-9]", re.sub(r"\\d|\{\d+(,\d*)?\}|\[[^\]]*\]", "", p))
                                for p, _ in self.masks)
        self.miner = self._new_miner()
        self.templates: dict[str, str] = {}  # id -> template text (masked tokens and <*>)
        self.sizes: dict[str, int] = {}  # id -> training lines
        self._reset_index()

    # ------------------------------------------------------------------ learning
    def _new_miner(self):
        from drain3 import TemplateMiner
        from drain3.template_miner_config import TemplateMinerConfig

        cfg = TemplateMinerConfig()
        cfg.drain_sim_th, cfg.drain_depth, cfg.drain_max_children = self.sim_th, self.depth, self.max_children
        cfg.masking_instructions = []  # masking is ours (the same for learning and the fast path)
        cfg.parametrize_numeric_tokens = True
        return TemplateMiner(config=cfg)

    def mask(self, content: str) -> str:
        digit = _DIGIT.search(content) is not None
        for rx, repl, guard, needs_digit in self._compiled:
            if (needs_digit and not digit) or (guard is not None and not any(g in content for g in guard)):
                continue  # a default mask that cannot match this line
            content = rx.sub(repl, content)
        return content

    def learn(self, content: str) -> str:
        """Add one normal message to the miner; its template id (the cluster it joined)."""
        res = self.miner.add_log_message(self.mask(content))
        tid = f"E{res['cluster_id']}"
        self.sizes[tid] = self.sizes.get(tid, 0) + 1
        self._dirty = True
        return tid

    def fit(self, contents: Iterable[str]) -> list[str]:
        """Learn the templates of normal messages; each message's template id."""
        ids = [self.learn(c) for c in contents]
        self.finish()
        return ids

    def finish(self) -> None:
        """Freeze the learnt templates into the fast path's index."""
        self.templates = {f"E{c.cluster_id}": " ".join(c.log_template_tokens) for c in self.miner.drain.clusters}
        self._reset_index()
        for tid, text in self.templates.items():
            toks = tuple(text.split())
            key = (len(toks), toks[0] if toks and toks[0] != WILDCARD else None)
            self._index.setdefault(key, []).append((sum(t != WILDCARD for t in toks), tid, toks))
        for cands in self._index.values():
            cands.sort(key=lambda c: -c[0])  # the most specific first
        self._dirty = False

    def _reset_index(self) -> None:
        self._index: dict[tuple[int, str | None], list[tuple[int, str, tuple[str, ...]]]] = {}
        self._cache: OrderedDict[str, str | None] = OrderedDict()
        self._shapes: OrderedDict[str, str | None] = OrderedDict()
        self._unseen = None  # a Drain over the messages no template fits
        self._unseen_templates: dict[str, str] = {}
        self._dirty = False

    # ------------------------------------------------------------------ matching
    def match(self, content: str) -> str | None:
        """The id of the known template that fits the message, or None.

        Two caches come first. The **shape** cache is keyed by the message with digits 1-9 written
        1: masks that read no digit's value but 0's mask such messages alike, so when the masked text
        keeps no digit at all, its template is the template of every message of that shape (most log
        lines differ from a known one only in their numbers), and masking is skipped. Then the cache
        of masked texts, then the template index."""
        if self._dirty:
            self.finish()
        shape = content.translate(_TO_ONE) if self._digit_blind else None
        if shape is not None and shape in self._shapes:
            return self._shapes[shape]
        masked = self.mask(content)
        cache = self._cache
        if masked in cache:
            found = cache[masked]
            if shape is not None and not _DIGIT.search(masked):
                self._remember_shape(shape, found)
            return found
        toks = masked.split()
        found = None
        n = len(toks)
        first = toks[0] if toks else None
        for key in ((n, first), (n, None)):
            for _, tid, ttoks in self._index.get(key, ()):
                if all(t == WILDCARD or t == s for t, s in zip(ttoks, toks)):
                    found = tid
                    break
            if found is not None:
                break
        cache[masked] = found
        if len(cache) > CACHE_SIZE:
            cache.popitem(last=False)
        if shape is not None and not _DIGIT.search(masked):
            self._remember_shape(shape, found)
        return found

    def _remember_shape(self, shape: str, found: str | None) -> None:
        self._shapes[shape] = found
        if len(self._shapes) > CACHE_SIZE:
            self._shapes.popitem(last=False)

    def parse(self, content: str) -> ParsedLine:
        """The message's template: a known one, or an unseen one (``N<n>``, grouped by a Drain of
        their own over this parser's unseen messages)."""
        tid = self.match(content)
        if tid is not None:
            return ParsedLine(tid, True)
        return ParsedLine(self.add_unseen(self.mask(content)), False)

    def add_unseen(self, masked: str) -> str:
        """The unseen template id (``N<n>``) of a masked message that no known template fits. Ids
        are numbered in the order messages come, so a job that matches messages on several workers
        sends the misses here in input order and gets the ids one process would give."""
        if self._unseen is None:
            from drain3.drain import Drain

            self._unseen = Drain(sim_th=self.sim_th, depth=self.depth, max_children=self.max_children)
        cluster, _ = self._unseen.add_log_message(masked)
        nid = f"N{cluster.cluster_id}"
        self._unseen_templates[nid] = " ".join(cluster.log_template_tokens)
        return nid

    def template(self, tid: str) -> str:
        """The text of a known or unseen template."""
        if tid in self.templates:
            return self.templates[tid]
        if tid in self._unseen_templates:
            return self._unseen_templates[tid]
        raise InputError(f"template must be one of the {len(self.templates)} known ids (E1, ...) or an unseen one "
                         f"(N1, ...), got {tid!r}")

    @property
    def unseen_templates(self) -> dict[str, str]:
        return dict(self._unseen_templates)

    def forget_unseen(self) -> None:
        """Start a new input: unseen templates are numbered from N1 again."""
        self._unseen, self._unseen_templates = None, {}

    # ------------------------------------------------------------------ persistence
    def to_config(self) -> dict[str, Any]:
        if self._dirty:
            self.finish()
        clusters = [{"id": c.cluster_id, "tokens": list(c.log_template_tokens), "size": c.size}
                    for c in self.miner.drain.clusters]
        return {"masks": [list(m) for m in self.masks], "sim_th": self.sim_th, "depth": self.depth,
                "max_children": self.max_children, "clusters": clusters, "counter": self.miner.drain.clusters_counter}

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "TemplateParser":
        from drain3.drain import LogCluster

        try:
            p = cls([tuple(m) for m in cfg["masks"]], sim_th=cfg["sim_th"], depth=cfg["depth"],
                    max_children=cfg["max_children"])
            drain = p.miner.drain
            for c in cfg["clusters"]:
                cluster = LogCluster([str(t) for t in c["tokens"]], int(c["id"]))
                cluster.size = int(c["size"])
                drain.id_to_cluster[cluster.cluster_id] = cluster
                drain.add_seq_to_prefix_tree(drain.root_node, cluster)
                p.sizes[f"E{cluster.cluster_id}"] = cluster.size
            drain.clusters_counter = int(cfg["counter"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"the saved template miner is corrupted ({type(exc).__name__}: {exc})") from exc
        p.finish()
        return p
