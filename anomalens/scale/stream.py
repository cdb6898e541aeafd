"""Streamed scoring: a table of any length (or a log stream) in, a table of scores, p-values and
false-discovery-rate verdicts out, with memory that does not grow with the input.

    summary = score_file(inv, "big.parquet", "scores.parquet", alpha=0.05, explain_top=5)

How it holds memory flat:

1. **One pass over the input.** Chunks (Parquet row groups, CSV blocks, log cases) are scored by
   ``Investigator.score`` and written at once to a temporary Parquet file beside the output: id,
   score, p-value, whether the p-value is the tail's approximation, and any columns asked to be kept.
2. **The Benjamini-Hochberg cut-off without the rows.** BH rejects the k smallest p-values, with k
   the largest rank whose p-value is at most alpha k / m; every rejected p-value is therefore at
   most alpha. ``BHStream`` counts all m p-values and keeps only those <= alpha (a few percent of
   a mostly normal input, plus the anomalies), which gives the exact cut-off of the in-memory
   ``benjamini_hochberg`` over the whole input.
3. **Verdicts.** A second pass reads the temporary file (a few narrow columns) and writes the
   output with ``anomalous = p <= cut-off``, to a second temporary name renamed into place: an
   interrupted run never leaves a file at the output path, and a finished one is complete.
4. **Explanations** only for the ``explain_top`` highest-scoring flagged rows: their positions are
   kept during the pass (a heap of N), their rows read back from the input, and
   ``Investigator.reports_in_batch`` explains them with the whole input's cut-off.

``engine="ray"`` scores the chunks on a Ray cluster (``anomalens.scale.ray_engine``); the steps
2-4 stay here, so both engines write the same file.
"""

from __future__ import annotations

import heapq
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from anomalens import __version__
from anomalens.detectors import check_probability
from anomalens.errors import InputError
from anomalens.scale.sources import ScoredChunk, check_finite, clip, table_chunks, table_rows

__all__ = ["BHStream", "ScoreSummary", "ScoredChunk", "check_out_file", "score_file", "local_chunks", "OUTPUT_SUFFIXES"]

OUTPUT_SUFFIXES = (".parquet", ".pq", ".csv")
CHUNK_ROWS = 65536  # rows per chunk: large enough to amortise a forward pass, small enough to stay flat
LOG_CHUNK_CASES = 2048  # log cases scored together


class BHStream:
    """The exact Benjamini-Hochberg cut-off of a stream of p-values, holding only those <= alpha."""

    def __init__(self, alpha: float) -> None:
        self.alpha = check_probability(alpha, "alpha")
        self.m = 0
        self._small: list[np.ndarray] = []

    def add(self, p: np.ndarray) -> None:
        p = np.asarray(p, dtype=np.float64)
        self.m += p.size
        self._small.append(p[p <= self.alpha])

    @property
    def held(self) -> int:
        """How many p-values are held (those <= alpha)."""
        return int(sum(a.size for a in self._small))

    def result(self) -> tuple[int, float, float]:
        """(number flagged, BH cut-off alpha k / m, p-value threshold: flagged <=> p <= it; -1 when none)."""
        from anomalens.detectors.calibration import bh_count, bh_cutoff

        small = np.sort(np.concatenate(self._small)) if self._small else np.zeros(0)
        k = bh_count(small, self.m, self.alpha)  # benjamini_hochberg's arithmetic, on the p-values <= alpha
        return k, bh_cutoff(k, self.m, self.alpha), float(small[k - 1]) if k else -1.0


class ScoreSummary(dict):
    """What a streamed scoring run did (a plain dict, so that it prints as JSON): rows, flagged,
    alpha, cut-off, timings, throughput, the output path and the top reports."""


def _check_out(out: Path) -> str:
    name = out.name.lower()
    for suffix in OUTPUT_SUFFIXES:
        if name.endswith(suffix):
            return "csv" if suffix == ".csv" else "parquet"
    raise InputError(f"--out must end in .parquet or .csv, got {clip(out.name, 80)!r}")


def local_chunks(inv, source: Path, *, id_column: str | None, keep: list[str], chunk_rows: int
                 ) -> Iterator[ScoredChunk]:
    """Score a table's chunks in this process."""
    features = list(inv.feature_names)
    wanted = list(dict.fromkeys(features + ([id_column] if id_column else []) + keep))
    for chunk in table_chunks(source, columns=wanted, chunk_rows=chunk_rows, numeric=features):
        yield score_frame(inv, chunk.frame, chunk.start, features=features, id_column=id_column, keep=keep,
                          source=source.name)


def score_frame(inv, frame, start: int, *, features: list[str], id_column: str | None, keep: list[str],
                source: str) -> ScoredChunk:
    """Score one chunk (a DataFrame holding the features and the id and kept columns)."""
    values = frame[features].to_numpy(dtype=np.float64, na_value=np.nan)
    check_finite(values, features, start, source)
    scored = inv.score(values, name=f"rows {start + 1}-{start + len(values)}")
    ids = ([str(v) for v in frame[id_column]] if id_column
           else [str(i) for i in range(start, start + len(values))])
    return ScoredChunk(start, ids, scored.scores, scored.p_values, scored.approximate,
                       {c: frame[c].to_numpy() for c in keep})


def _log_chunks(inv, sources: list, *, progress: bool) -> Iterator[ScoredChunk]:
    """Score log cases (sessions or windows) as they close, ``LOG_CHUNK_CASES`` at a time."""
    stream, _, _ = inv.read_cases(sources, progress=progress)
    start, chunk = 0, []

    def flush() -> ScoredChunk:
        _, T, p = inv.score_cases(chunk)
        return log_chunk(start, chunk, T, p, inv.modality.approximate(T))

    for case in stream:
        chunk.append(case)
        if len(chunk) >= LOG_CHUNK_CASES:
            yield flush()
            start += len(chunk)
            chunk = []
    if chunk:
        yield flush()


def log_chunk(start: int, cases: list, T: np.ndarray, p: np.ndarray, approx: np.ndarray) -> ScoredChunk:
    """Scored log cases as output rows: the case's key, its scores, its span and first line."""
    extra = {"case_start": [c.start for c in cases], "case_end": [c.end for c in cases],
             "lines": np.array([len(c) for c in cases]), "first_line": [c.location(0) for c in cases]}
    return ScoredChunk(start, [c.key for c in cases], np.asarray(T), np.asarray(p), np.asarray(approx, dtype=bool),
                       extra)


class _Writer:
    """Pass-one rows into a temporary Parquet file beside the output."""

    def __init__(self, out: Path) -> None:
        self.path = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.pass1.parquet")
        self._w = None

    def write(self, ch: ScoredChunk) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = {"id": pa.array(ch.ids, pa.string()), "score": pa.array(ch.scores, pa.float64()),
                "p_value": pa.array(ch.p_values, pa.float64()), "p_approximate": pa.array(ch.approximate, pa.bool_())}
        for k, v in ch.extra.items():
            cols[k] = pa.array(v) if not isinstance(v, pa.Array) else v
        table = pa.table(cols)
        if self._w is None:
            self._w = pq.ParquetWriter(self.path, table.schema)
        elif table.schema != self._w.schema:
            table = table.cast(self._w.schema)
        self._w.write_table(table)

    def close(self) -> None:
        if self._w is not None:
            self._w.close()


def check_out_file(out: Path, sources: list) -> str:
    """The format ("csv" or "parquet") of an output file ``out``, checked before any scoring: its
    suffix, an existing folder this process can write (a write failed after the whole input was
    scored), not a folder itself, and none of the input ``sources`` (it was overwritten while read)."""
    import tempfile

    fmt = _check_out(out)
    if not out.parent.is_dir():
        raise InputError(f"--out must be in an existing folder, got {clip(str(out.parent), 120)!r}")
    if out.is_dir():
        raise InputError(f"--out must be a file name, got the folder {clip(str(out), 120)!r}")
    for src in sources:
        if str(src) != "-" and Path(src).exists() and out.exists() and Path(src).samefile(out):
            raise InputError(f"--out must not be an input file (it would be overwritten while it is read), got "
                             f"{clip(str(out), 120)!r}")
    try:
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".anomalens-probe-"):
            pass
    except OSError as exc:
        raise InputError(f"--out must be in a folder this process can write, got {clip(str(out.parent), 120)!r} "
                         f"({exc.strerror or type(exc).__name__})") from exc
    return fmt


def score_file(inv, source: str | Path | list, out: str | Path, *, alpha: float = 0.05, chunk_rows: int = CHUNK_ROWS,
               id_column: str | None = None, keep: list[str] | None = None, explain_top: int = 0, k: int = 5,
               top: int = 5, reasoner=None, engine: str = "local", address: str | None = None,
               workers: int | None = None, model_dir: str | Path | None = None, progress: bool = False,
               shard_bytes: int | None = None) -> ScoreSummary:
    """Score every row of ``source`` (a Parquet/CSV file; for a log investigator, log files or
    ``-``) and write ``out`` (.parquet or .csv): one row per input row (per case for logs) with
    ``id, score, p_value, p_approximate, anomalous`` and the ``keep`` columns, in input order.
    Verdicts control the false discovery rate at ``alpha`` over the whole input. See the module
    docstring; ``engine="ray"`` needs ``model_dir`` (the workers load the investigator from it), and
    cuts log files into ``shard_bytes`` ranges for its workers to parse (default 8 MiB)."""
    alpha = check_probability(alpha, "alpha")
    out = Path(out)
    if isinstance(explain_top, bool) or not isinstance(explain_top, (int, np.integer)) or explain_top < 0:
        raise InputError(f"explain_top must be an int >= 0, got {explain_top!r}")
    if engine not in ("local", "ray"):
        raise InputError(f"engine must be 'local' or 'ray', got {engine!r}")
    keep = list(dict.fromkeys(keep or []))
    is_logs = inv.modality.reads_text  # log files or stdin, scored case by case as sessions and windows close
    if inv.modality.sequential:
        raise InputError("score_file streams tables and logs; a series is scored whole (its windows overlap, so its "
                         "chunks are not independent): Investigator.point_table, or `anomalens score`")
    if is_logs and (id_column or keep):
        raise InputError("--id-column and --keep apply to tables; log cases are named by their session or window")
    if not is_logs:
        if isinstance(source, (list, tuple)):
            if len(source) != 1:
                raise InputError(f"source of a {inv.modality.name} model is one Parquet or CSV file, got {len(source)}")
            source = source[0]
        source = Path(source)
        reserved = {"id", "score", "p_value", "p_approximate", "anomalous"}
        clash = [c for c in keep if c in reserved]
        if clash:
            raise InputError(f"--keep columns must not be named like an output column {sorted(reserved)}, got {clash}")
        total = table_rows(source)
    else:
        source = source if isinstance(source, list) else [source]
        total = None
    fmt = check_out_file(out, source if isinstance(source, list) else [source])
    if engine == "ray":
        if model_dir is None:
            raise InputError("engine 'ray' needs model_dir: the folder the workers load the investigator from")
        if is_logs:
            from anomalens.scale.ray_logs import ray_log_chunks

            chunks = (log_chunk(start, cases, *res) for start, cases, res in
                      ray_log_chunks(model_dir, inv, source, chunk_cases=LOG_CHUNK_CASES, address=address,
                                     workers=workers, **({} if shard_bytes is None else {"shard_bytes": shard_bytes})))
        else:
            from anomalens.scale.ray_engine import ray_chunks

            chunks = ray_chunks(model_dir, source, features=list(inv.feature_names), id_column=id_column, keep=keep,
                                chunk_rows=chunk_rows, address=address, workers=workers)
    elif is_logs:
        chunks = _log_chunks(inv, source, progress=progress)
    else:
        chunks = local_chunks(inv, source, id_column=id_column, keep=keep, chunk_rows=chunk_rows)

    t0 = time.perf_counter()
    bh = BHStream(alpha)
    heap: list[tuple[float, int, str, float]] = []  # the explain_top highest scores: (score, -position, id, p)
    writer = _Writer(out)
    final = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    bar = None
    if progress and not is_logs:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="scoring", unit=" rows", unit_scale=True, mininterval=0.5, leave=False)
    n_approx = 0
    try:
        for ch in chunks:
            writer.write(ch)
            bh.add(ch.p_values)
            n_approx += int(np.count_nonzero(ch.approximate))
            if explain_top:
                for j in np.argsort(-ch.scores, kind="stable")[:explain_top]:
                    item = (float(ch.scores[j]), -(ch.start + int(j)), ch.ids[j], float(ch.p_values[j]))
                    if len(heap) < explain_top:
                        heapq.heappush(heap, item)
                    elif item > heap[0]:
                        heapq.heapreplace(heap, item)
            if bar is not None:
                bar.update(len(ch))
        writer.close()
        t_pass = time.perf_counter() - t0
        m = bh.m
        if m == 0:
            raise InputError(f"{_name(source)} holds no {'log case' if is_logs else 'row'} to score")
        n_flagged, cutoff, p_thr = bh.result()
        meta = {"anomalens_version": __version__, "alpha": alpha, "rows": m, "flagged": n_flagged, "cutoff": cutoff,
                "method": "Benjamini-Hochberg over every row of the input", "detector": inv.detector_name,
                "modality": inv.modality.name, "complete": True}
        _write_verdicts(writer.path, final, fmt, p_thr, meta)
        os.replace(final, out)
    finally:
        if bar is not None:
            bar.close()
        writer.close()
        for p in (writer.path, final):
            p.unlink(missing_ok=True)
    t_total = time.perf_counter() - t0
    summary = ScoreSummary(
        input=_name(source), out=str(out), modality=inv.modality.name, detector=inv.detector_name, engine=engine,
        rows=m, flagged=n_flagged, alpha=alpha, cutoff=cutoff, approximate_p_values=n_approx,
        below_alpha_not_flagged=max(0, bh.held - n_flagged),  # p <= alpha per row, not significant over the input
        seconds={"score_pass": round(t_pass, 3), "total": round(t_total, 3)},
        rows_per_s=round(m / t_total, 1) if t_total > 0 else None, reports=[])
    if explain_top and n_flagged:
        picked = sorted((x for x in heap if x[3] <= p_thr), key=lambda x: (-x[0], -x[1]))  # flagged, top first
        if is_logs:
            summary["reports"] = []  # log explanations come from `triage`, which merges cases into incidents
            summary["note"] = "log cases are explained by `anomalens triage` (it merges flagged cases into incidents)"
        else:
            t1 = time.perf_counter()
            positions = [-x[1] for x in picked]
            rows = _read_rows(inv, source, positions, id_column=id_column, chunk_rows=chunk_rows)
            summary["reports"] = inv.reports_in_batch(rows, m=m, cutoff=cutoff, alpha=alpha, k=k, top=top,
                                                      ids=[x[2] for x in picked], reasoner=reasoner)
            summary["seconds"]["explain"] = round(time.perf_counter() - t1, 3)
    return summary


def _name(source) -> str:
    if isinstance(source, list):
        return ", ".join(clip(str(s), 80) for s in source[:3]) + (f" and {len(source) - 3} more" if len(source) > 3 else "")
    return clip(Path(source).name, 80)


def _write_verdicts(pass1: Path, final: Path, fmt: str, p_thr: float, meta: dict) -> None:
    """Second pass: the verdict column added to the pass-one rows, written in the output format."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    src = pq.ParquetFile(pass1, pre_buffer=False)  # flat memory (see sources.table_chunks)
    writer = None
    try:
        for batch in src.iter_batches(batch_size=1 << 18):
            table = pa.Table.from_batches([batch])
            table = table.append_column("anomalous", pc.less_equal(table["p_value"], pa.scalar(p_thr)))
            if fmt == "parquet":
                if writer is None:
                    schema = table.schema.with_metadata({b"anomalens": json.dumps(meta).encode()})
                    writer = pq.ParquetWriter(final, schema)
                writer.write_table(table.replace_schema_metadata(writer.schema.metadata))
            else:
                from pyarrow import csv

                if writer is None:
                    writer = csv.CSVWriter(str(final), table.schema)
                writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def _read_rows(inv, source: Path, positions: list[int], *, id_column: str | None, chunk_rows: int):
    """The feature rows at ``positions`` (0-based), in the order given, read back from the input."""
    import pandas as pd

    want = set(positions)
    found: dict[int, Any] = {}
    features = list(inv.feature_names)
    for chunk in table_chunks(source, columns=features, chunk_rows=chunk_rows, numeric=features):
        lo, hi = chunk.start, chunk.start + len(chunk.frame)
        hit = [p for p in want if lo <= p < hi]
        for p in hit:
            found[p] = chunk.frame.iloc[p - lo]
        want.difference_update(hit)
        if not want:
            break
    return pd.DataFrame([found[p] for p in positions], columns=features).reset_index(drop=True)
