"""Log scoring on a Ray cluster: the workers parse, the driver groups, the workers score.

1. **Shards.** Each log file is cut into byte ranges of about ``shard_bytes`` at line ends (a
   ``.gz`` file cannot be entered mid-way, so it is one shard).
2. **Parse, on the workers.** An actor (one per worker; each loads the investigator once) reads its
   shard with the same decoding and format step as ``read_logs`` and matches every message against
   the fitted template set. It sends back, per kept line, the template id, or for a message that no
   template fits its masked text; the line's number within the shard, its time text and (for
   sessions) the session ids found in it. No line text travels.
3. **Group, on the driver, in input order.** The misses go to the parser's own miner of unseen
   templates in input order, so their ``N<n>`` ids are the ones one process would give; line numbers
   get their shard's offset; lines are grouped into sessions or windows exactly as ``group_lines``
   does in one process.
4. **Score, on the workers.** Cases go back to the actors in chunks of ``LOG_CHUNK_CASES`` (the
   local engine's chunks, so each chunk is the same batch for the models), as template-id sequences;
   the scores, p-values and tail flags come back in order.

Both kinds of task run on the same actors, at most two per actor in flight, and results are taken
in submission order, so memory stays bounded for windows (sessions, as in one process, are held
until the input ends: an id can come back any time). The output equals the local engine's, case
for case; ``tests/test_scale.py`` checks it on a local cluster.

Ray core actors, not Ray Data, because the middle step is sequential: windows and sessions exist only
once the lines before them are grouped, so the cases cannot be a dataset laid out in advance.
"""

from __future__ import annotations

import gzip
import io
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from anomalens.errors import AnomalensError, InputError
from anomalens.modalities.logs.reader import is_gzip, log_file
from anomalens.scale.ray_engine import check_workers, connect, import_ray, root_cause

__all__ = ["LogActor", "SHARD_BYTES", "log_shards", "ray_log_chunks"]

SHARD_BYTES = 8 << 20  # bytes of a log file per parse task (about 50,000 lines of 160 bytes)
_FIND = 1 << 16  # bytes read at a time while looking for the line end after a cut


def log_shards(sources: Iterable[str | Path], shard_bytes: int = SHARD_BYTES) -> list[dict[str, Any]]:
    """The parse tasks of some log files: ``{"file", "path", "name", "start", "end"}`` byte ranges
    that begin at a line start (``file``: the input's position among ``sources``; ``end`` None: to
    the end of the file, a gzip file being one range)."""
    if isinstance(shard_bytes, bool) or not isinstance(shard_bytes, (int, np.integer)) or shard_bytes < 1:
        raise InputError(f"shard_bytes must be a positive int, got {shard_bytes!r}")
    out = []
    for k, src in enumerate(sources):
        if isinstance(src, io.IOBase) or str(src) == "-" or (isinstance(src, str) and ("\n" in src or "\r" in src)):
            raise InputError("engine 'ray' reads log files, which its workers split into byte ranges; standard input "
                             "and in-memory text cannot be split: save them to a file, or use the local engine")
        p = log_file(src)
        if is_gzip(p):
            out.append({"file": k, "path": str(p), "name": p.name, "start": 0, "end": None})
            continue
        with open(p, "rb") as fh:
            size = fh.seek(0, io.SEEK_END)
            start = 0
            while start < size:
                cut = _line_start_after(fh, start + int(shard_bytes), size)
                out.append({"file": k, "path": str(p), "name": p.name, "start": start, "end": cut})
                start = cut
    return out


def _line_start_after(fh, pos: int, size: int) -> int:
    """The first line start at or after ``pos`` (a line start is 0 or just after a newline)."""
    if pos >= size:
        return size
    fh.seek(pos - 1)  # the byte before pos: a newline there makes pos a line start
    while True:
        block = fh.read(_FIND)
        if not block:
            return size
        i = block.find(b"\n")
        if i >= 0:
            return min(size, fh.tell() - len(block) + i + 1)


class LogActor:
    """A Ray actor: loads the investigator once, then parses shards and scores chunks of cases."""

    def __init__(self, model_dir: str, threads: int = 1) -> None:
        import torch

        torch.set_num_threads(max(1, int(threads)))
        from anomalens import Investigator
        from anomalens.modalities.logs.cases import compile_session
        from anomalens.modalities.logs.reader import get_format

        self.inv = Investigator.load(model_dir)
        mod = self.inv.modality
        self.form = get_format(mod.format)
        self.rx = compile_session(mod.session) if mod.session else None

    def parse(self, shard: dict[str, Any]) -> dict[str, Any]:
        from anomalens.modalities.logs.cases import session_ids
        from anomalens.modalities.logs.reader import LogStats, decode_lines

        if shard["end"] is None:  # a gzip file, whole
            stream = gzip.open(shard["path"], "rb")
        else:
            with open(shard["path"], "rb") as fh:
                fh.seek(shard["start"])
                stream = io.BytesIO(fh.read(shard["end"] - shard["start"]))
        parser = self.inv.modality.parser
        stats = LogStats()
        tids, misses, linenos, times, keys = [], [], [], [], []
        with stream:
            for ln in decode_lines(shard["name"], stream, self.form, stats):
                tid = parser.match(ln.content)
                if tid is None:
                    misses.append(parser.mask(ln.content))
                tids.append(tid)
                linenos.append(ln.lineno)
                times.append(ln.time)
                if self.rx is not None:
                    keys.append(session_ids(self.rx, ln.raw))
        counts = {k: v for k, v in vars(stats).items() if isinstance(v, int) and not isinstance(v, bool)}
        return {"tids": tids, "misses": misses, "linenos": np.asarray(linenos, dtype=np.int64), "times": times,
                "keys": keys if self.rx is not None else None, "stats": counts}

    def score(self, sequences: list[list[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from anomalens.modalities.logs.cases import LogCase

        _, T, p = self.inv.score_cases([LogCase(str(i), events=list(s)) for i, s in enumerate(sequences)])
        return np.asarray(T), np.asarray(p), np.asarray(self.inv.modality.approximate(T), dtype=bool)


def _ordered(actors: list, method: str, items: Iterable, arg: Callable[[Any], Any]) -> Iterator[tuple[Any, Any]]:
    """(item, result) of ``actor.method(arg(item))`` for every item, in the items' order, with at most
    two calls per actor in flight (round robin: an actor runs its calls in the order they came)."""
    ray = import_ray()
    pending: deque = deque()
    for i, item in enumerate(items):
        pending.append((item, getattr(actors[i % len(actors)], method).remote(arg(item))))
        if len(pending) >= 2 * len(actors):
            done, ref = pending.popleft()
            yield done, ray.get(ref)
    while pending:
        done, ref = pending.popleft()
        yield done, ray.get(ref)


def _lines(actors: list, shards: list[dict[str, Any]], parser, stats) -> Iterator[tuple]:
    """``(template id, LogLine, session ids)`` of every kept line, in input order; ``stats`` (a
    LogStats) adds up what reading did on the workers."""
    from anomalens.modalities.logs.reader import LogLine

    offset, source = 0, None
    for shard, res in _ordered(actors, "parse", shards, lambda s: s):
        for k, v in res["stats"].items():
            setattr(stats, k, getattr(stats, k) + v)
        if shard["file"] != source:  # the next input (a file given twice is read twice, as in one process)
            offset, source = 0, shard["file"]
            stats.files.append(shard["name"])
        misses = iter(res["misses"])
        keys = res["keys"]
        for i, (tid, n, t) in enumerate(zip(res["tids"], res["linenos"], res["times"])):
            if tid is None:
                tid = parser.add_unseen(next(misses))
            yield tid, LogLine(source=shard["name"], lineno=offset + int(n), content="", raw="", time=t), \
                (keys[i] if keys is not None else ())
        offset += res["stats"]["lines"]


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for x in items:
        batch.append(x)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def ray_log_chunks(model_dir: str | Path, inv, sources: list, *, chunk_cases: int, address: str | None = None,
                   workers: int | None = None, shard_bytes: int = SHARD_BYTES, stats=None, groups=None
                   ) -> Iterator[tuple[int, list, tuple]]:
    """``(position of the first case, cases, (scores, p-values, tail flags))`` of the log files
    ``sources``, scored by ``workers`` Ray actors loading the investigator saved in ``model_dir``
    (``inv``, the same investigator loaded here, groups the lines), in input order. The cases carry
    no line text. ``stats`` (LogStats) and ``groups`` (GroupStats), when given, count what reading
    and grouping did, as ``read_cases`` does."""
    from anomalens.modalities.logs.cases import GroupStats, group_lines
    from anomalens.modalities.logs.reader import LogStats

    ray = import_ray()
    check_workers(workers)
    mod = inv.modality
    if not mod.parsed_input:
        raise InputError("this model was fitted on sequences of event ids, not log lines; pass sequences")
    shards = log_shards(sources, shard_bytes)  # every path checked before a cluster is started
    n = connect(address, workers)
    Actor = ray.remote(num_cpus=1)(LogActor)
    actors = [Actor.remote(str(model_dir)) for _ in range(n)]
    mod.parser.forget_unseen()
    try:
        stats = stats if stats is not None else LogStats()
        stats.format = str(mod.format)
        cases = group_lines(_lines(actors, shards, mod.parser, stats), session=mod.session, window=mod.window,
                            stats=groups if groups is not None else GroupStats(), keyed=True)
        start = 0
        for chunk, res in _ordered(actors, "score", _batches(cases, int(chunk_cases)), lambda ch: [c.events for c in ch]):
            yield start, chunk, res
            start += len(chunk)
    except AnomalensError:
        raise
    except Exception as exc:
        raise root_cause(exc) from exc
    finally:
        for a in actors:
            ray.kill(a)
