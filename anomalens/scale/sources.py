"""Tables read in chunks (Parquet row groups, CSV blocks) and uniform samples drawn while streaming.

Nothing here holds a whole input: ``table_chunks`` yields bounded chunks of the columns asked for,
``sample_table`` keeps a bottom-k sample (each row gets a random key; the k smallest keys win, a
uniform sample without replacement) of at most ``n`` rows, whatever the input's length.

    for chunk in table_chunks(path, columns=["a", "b"], chunk_rows=65536):
        chunk.frame, chunk.start                    # a DataFrame of the rows start..start+len-1
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anomalens.errors import InputError
from anomalens.text import clip as _clip
from anomalens.text import names as names_of
from anomalens.text import strip_control

__all__ = ["ScoredChunk", "TableChunk", "check_columns", "check_finite", "clip", "sample_table", "table_chunks",
           "table_columns", "table_kind", "table_rows"]

CSV_BLOCK_BYTES = 8 << 20  # bytes per CSV block read by pyarrow; chunks are cut to chunk_rows after it


@dataclass
class ScoredChunk:
    """Scores of rows ``start`` .. ``start + len(scores) - 1`` of the input (what the local and the Ray
    engines of ``stream.score_file`` both produce)."""

    start: int
    ids: list[str]
    scores: np.ndarray
    p_values: np.ndarray
    approximate: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)  # kept columns, and a log case's span

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class TableChunk:
    """Rows ``start`` .. ``start + len(frame) - 1`` (0-based positions in the input) of a table."""

    start: int
    frame: "object"  # pandas.DataFrame


def clip(text: object, max_len: int = 120) -> str:
    """Untrusted text (a file or column name) made safe for a one-line message."""
    return _clip(strip_control(text), max_len)


def table_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".tsv", ".tsv.gz")):
        return "tsv"
    if name.endswith((".csv", ".csv.gz", ".txt")):
        return "csv"
    raise InputError(f"INPUT must end in .parquet, .csv, .tsv (optionally .gz), got {clip(path.name, 80)!r}")


def _check_path(path: Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"INPUT must be an existing Parquet or CSV file, got {clip(str(path), 120)!r} (no such file)")
    if path.is_dir():
        raise InputError(f"INPUT must be a Parquet or CSV file, got the folder {clip(str(path), 120)!r}")
    return path


def _csv_reader(path: Path, columns: list[str] | None, types: dict | None):
    import pyarrow as pa
    from pyarrow import csv

    parse = csv.ParseOptions(delimiter="\t" if table_kind(path) == "tsv" else ",")
    convert = csv.ConvertOptions(include_columns=columns, column_types=types or {})
    try:
        return csv.open_csv(pa.input_stream(str(path), compression="detect"), parse_options=parse,
                            read_options=csv.ReadOptions(block_size=CSV_BLOCK_BYTES), convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowKeyError, OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {clip(path.name, 80)!r}: {clip(str(exc).splitlines()[0], 200)}") from exc


def table_columns(path: str | Path) -> list[str]:
    """The column names of a Parquet or CSV file (its header), read without the rows."""
    path = _check_path(Path(path))
    if table_kind(path) == "parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.ParquetFile(path).schema_arrow.names)
        except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
            raise InputError(f"cannot read {clip(path.name, 80)!r} as Parquet: {clip(str(exc).splitlines()[0], 200)}") from exc
    try:
        names = list(_csv_reader(path, None, None).schema.names)
    except UnicodeDecodeError as exc:  # the header is not UTF-8
        raise InputError(f"cannot read {clip(path.name, 80)!r}: its header is not UTF-8 text ({exc.reason} at byte "
                         f"{exc.start})") from exc
    from anomalens.modalities.tabular import check_distinct_columns

    check_distinct_columns(names, path.name)
    return names


def table_rows(path: str | Path) -> int | None:
    """The number of rows of a Parquet file (from its footer); None for CSV (unknown until read)."""
    path = _check_path(Path(path))
    if table_kind(path) != "parquet":
        return None
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise InputError(f"cannot read {clip(path.name, 80)!r} as Parquet: {clip(str(exc).splitlines()[0], 200)}") from exc


def check_columns(path: Path, wanted: list[str]) -> None:
    have = table_columns(path)
    missing = [c for c in wanted if c not in have]
    if missing:
        raise InputError(f"{clip(path.name, 80)!r} lacks {len(missing)} column(s) the job needs: {names_of(missing)}; "
                         f"its columns are {names_of(have, 12)}")


def table_chunks(path: str | Path, *, columns: list[str], chunk_rows: int = 65536,
                 numeric: list[str] | None = None) -> Iterator[TableChunk]:
    """Chunks of at most ``chunk_rows`` rows of ``columns`` (checked present first); ``numeric``
    columns are read as float64 (a value that is not a number is an error naming the column)."""
    import pyarrow as pa

    path = _check_path(Path(path))
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise InputError(f"chunk_rows must be a positive int, got {chunk_rows!r}")
    check_columns(path, columns)
    start = 0
    if table_kind(path) == "parquet":
        import pyarrow.parquet as pq

        # pre_buffer=False: with it, pyarrow keeps every row group it has read until the iteration
        # ends (memory grew 200 MB per million rows of 20 floats); without it, memory stays flat
        batches = pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=int(chunk_rows), columns=columns)
    else:
        types = {c: pa.float64() for c in (numeric or [])}
        batches = _csv_batches(_csv_reader(path, columns, types), path)
    pending = None
    for batch in batches:
        table = pa.Table.from_batches([batch])
        pending = table if pending is None else pa.concat_tables([pending, table])
        while pending.num_rows >= chunk_rows:
            head, pending = pending.slice(0, chunk_rows), pending.slice(chunk_rows)
            yield TableChunk(start, _frame(head, columns))
            start += head.num_rows
    if pending is not None and pending.num_rows:
        yield TableChunk(start, _frame(pending, columns))


def _csv_batches(reader, path: Path):
    import pyarrow as pa

    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read {clip(path.name, 80)!r}: {clip(str(exc).splitlines()[0], 200)}") from exc
        yield batch


def _frame(table, columns: list[str]):
    return table.select(columns).to_pandas()


def check_finite(values: np.ndarray, columns: list[str], start: int, source: str) -> None:
    """Raise an InputError naming the first non-finite value's row (1-based, header not counted) and column."""
    finite = np.isfinite(values)
    if not finite.all():
        bad = np.argwhere(~finite)
        r, c = int(bad[0, 0]), int(bad[0, 1])
        raise InputError(f"{clip(source, 80)} row {start + r + 1:,} (1-based, header not counted), column "
                         f"{clip(columns[c], 60)!r}: expected a finite number, got {float(values[r, c])} "
                         f"({len(bad)} non-finite value(s) in rows {start + 1:,}-{start + len(values):,})")


def sample_table(path: str | Path, n: int, *, columns: list[str] | None = None, seed: int = 0,
                 chunk_rows: int = 262144) -> tuple["object", int]:
    """(a uniform sample of at most ``n`` rows as a DataFrame, in input order; the input's row count).

    Bottom-k sampling while streaming: memory holds at most ``n`` + one chunk of rows."""
    import pandas as pd

    path = _check_path(Path(path))
    cols = columns or table_columns(path)
    rng = np.random.default_rng(seed)
    kept, keys, seen = None, np.zeros(0), 0
    for chunk in table_chunks(path, columns=cols, chunk_rows=chunk_rows):
        frame = chunk.frame.set_axis(np.arange(chunk.start, chunk.start + len(chunk.frame)), axis=0)
        k = rng.random(len(frame))
        kept = frame if kept is None else pd.concat([kept, frame])
        keys = np.concatenate([keys, k])
        if len(keys) > n:
            best = np.argpartition(keys, n - 1)[:n]
            kept, keys = kept.iloc[best], keys[best]
        seen += len(frame)
    if kept is None:
        raise InputError(f"{clip(path.name, 80)!r} holds no rows")
    return kept.sort_index().reset_index(drop=True), seen
