"""Streamed scoring on a Ray cluster: the Parquet file's row groups are cut into slices of
``chunk_rows`` rows, Ray Data hands the slices to a pool of actors (each loads the investigator
once, then reads and scores its slices), and the driver puts the scored rows back in input order
and runs the same Benjamini-Hochberg, verdict and write steps as the local engine
(``anomalens.scale.stream``), so both engines write the same file.

Every scored row carries its position in the input; the driver does not rely on Ray returning
blocks in order (a first version trusted ``preserve_order`` after a repartition and got a million
rows back shuffled). Needs ``pip install 'anomalens[ray]'``. ``address=None`` starts a local
cluster of ``workers + 1`` CPUs (or joins the one ``RAY_ADDRESS`` names); ``"auto"`` joins a
running one. The model folder and the input must be readable at the same path by every worker
(shared storage); see docs/deploy.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from anomalens.errors import AnomalensError, BackendError, InputError
from anomalens.scale.sources import ScoredChunk, check_columns, check_finite, clip, table_kind

__all__ = ["ScoreActor", "check_workers", "connect", "import_ray", "ray_chunks", "root_cause", "slices"]

_BAD = "__anomalens_bad_column"  # per row: index of its first non-finite feature, -1 when all are finite
_BAD_VALUE = "__anomalens_bad_value"  # per row: that feature's value (NaN, inf or -inf), 0 when all are finite


_POS = "__anomalens_position"  # per row: its 0-based position in the input


def slices(path: Path, chunk_rows: int) -> list[dict]:
    """The work items of a Parquet file: (row group, offset in it, rows, position of the first row)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    items, start = [], 0
    for rg in range(meta.num_row_groups):
        n = meta.row_group(rg).num_rows
        for off in range(0, n, chunk_rows):
            k = min(chunk_rows, n - off)
            items.append({"rg": rg, "offset": off, "rows": k, "start": start + off})
        start += n
    return items


class ScoreActor:
    """A Ray Data actor: loads the investigator once, then reads and scores slices of the file."""

    def __init__(self, model_dir: str, path: str, features: list[str], id_column: str | None, keep: list[str],
                 threads: int = 1) -> None:
        import pyarrow.parquet as pq
        import torch

        torch.set_num_threads(max(1, int(threads)))
        from anomalens import Investigator

        self.inv = Investigator.load(model_dir)
        self.file = pq.ParquetFile(path, pre_buffer=False)
        self.features, self.id_column, self.keep = features, id_column, keep
        self.columns = list(dict.fromkeys(features + ([id_column] if id_column else []) + keep))
        self._cached: tuple[int, object] | None = None  # the last row group read (its slices often follow)

    def _row_group(self, rg: int):
        if self._cached is None or self._cached[0] != rg:
            self._cached = (rg, self.file.read_row_group(rg, columns=self.columns))
        return self._cached[1]

    def __call__(self, items: dict):
        import pandas as pd

        parts = []
        for rg, off, n, start in zip(items["rg"], items["offset"], items["rows"], items["start"]):
            batch = self._row_group(int(rg)).slice(int(off), int(n)).to_pandas()
            values = np.array(batch[self.features].to_numpy(dtype=np.float64, na_value=np.nan))  # writable
            finite = np.isfinite(values)
            bad = np.where(finite.all(axis=1), -1, np.argmin(finite, axis=1))
            bad_value = np.where(bad >= 0, values[np.arange(len(values)), np.maximum(bad, 0)], 0.0)
            values[~finite] = 0.0  # the driver raises on the first bad row in input order
            scored = self.inv.score(values)
            out = {_POS: np.arange(int(start), int(start) + int(n)), "score": scored.scores,
                   "p_value": scored.p_values, "p_approximate": scored.approximate, _BAD: bad, _BAD_VALUE: bad_value}
            if self.id_column:
                out["id"] = batch[self.id_column].astype(str).to_numpy()
            for c in self.keep:
                out[c] = batch[c].to_numpy()
            parts.append(pd.DataFrame(out))
        return pd.concat(parts, ignore_index=True)


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401 - the extra's Data library, checked here with Ray itself
    except ImportError as exc:
        raise InputError(f"engine 'ray' needs Ray: pip install 'anomalens[ray]' ({exc})") from exc
    return ray


def check_workers(workers: int | None) -> None:
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InputError(f"workers must be a positive int, got {workers!r}")


def connect(address: str | None, workers: int | None) -> int:
    """Join (or start) the Ray cluster; the number of scoring actors to run (``workers``, or the
    cluster's CPUs less one, which stays for the driver's and Ray Data's own tasks)."""
    import ray

    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}
        if address is None and not os.environ.get("RAY_ADDRESS"):
            # one CPU per scoring actor plus one for Ray Data's own tasks: with none spare, the actors
            # hold every CPU and the tasks that feed them never get scheduled
            kwargs["num_cpus"] = (workers or max(1, (os.cpu_count() or 2) - 1)) + 1
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise BackendError(f"cannot reach the Ray cluster at {address or 'a new local one'}: "
                               f"{clip(str(exc).splitlines()[0], 200)}") from exc
    return workers or max(1, int(ray.cluster_resources().get("CPU", 2)) - 1)


def root_cause(exc: BaseException) -> AnomalensError:
    """A worker's error as it arrives wrapped by Ray (several layers): its root cause, as one of ours."""
    root = exc
    while root.__cause__ is not None or getattr(root, "cause", None) is not None:
        root = root.__cause__ or root.cause
    if isinstance(root, AnomalensError):
        return type(root)(str(root))
    text = str(root).strip().splitlines()[-1] if str(root).strip() else ""
    return BackendError(f"the Ray job failed: {type(root).__name__}: {clip(text, 300)}")


def ray_chunks(model_dir: str | Path, source: Path, *, features: list[str], id_column: str | None, keep: list[str],
               chunk_rows: int, address: str | None = None, workers: int | None = None) -> Iterator[ScoredChunk]:
    """Scored chunks of ``source`` from a Ray actor pool of ``workers`` actors, in input order."""
    ray = import_ray()
    check_workers(workers)
    source = Path(source)
    if table_kind(source) != "parquet":
        raise InputError(f"engine 'ray' reads Parquet (its row groups are read in parallel by the workers), got "
                         f"{clip(source.name, 80)!r}; convert it, or use the local engine")
    wanted = list(dict.fromkeys(features + ([id_column] if id_column else []) + keep))
    check_columns(source, wanted)  # a missing column fails here, before a cluster is started
    n = connect(address, workers)
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its INFO lines and progress-bar notice are not ours to print
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    items = slices(source, int(chunk_rows))
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))  # one slice per block: spread over actors
    ds = ds.map_batches(ScoreActor, fn_constructor_kwargs={"model_dir": str(model_dir), "path": str(source),
                                                           "features": features, "id_column": id_column, "keep": keep},
                        batch_size=1, batch_format="numpy", num_cpus=1, compute=ray.data.ActorPoolStrategy(size=n))
    pending: dict[int, object] = {}  # scored runs that arrived ahead of their turn, by first position
    start = 0
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="pandas", prefetch_batches=2):
            batch = batch.sort_values(_POS, kind="stable")
            pos = batch[_POS].to_numpy()
            cuts = np.flatnonzero(np.diff(pos) != 1) + 1  # contiguous runs of positions
            for run in np.split(np.arange(len(batch)), cuts):
                part = batch.iloc[run]
                pending[int(pos[run[0]])] = part
            while start in pending:
                part = pending.pop(start)
                yield _chunk(part, start, features, id_column, keep, source.name)
                start += len(part)
        if pending:
            raise BackendError(f"the Ray job returned rows out of reach: rows from {min(pending):,} were scored, "
                               f"but row {start:,} never came back")
    except AnomalensError:
        raise
    except Exception as exc:
        raise root_cause(exc) from exc


def _chunk(part, start: int, features: list[str], id_column: str | None, keep: list[str], source: str) -> ScoredChunk:
    """One contiguous run of scored rows as a ScoredChunk; a non-finite feature is an error naming its row."""
    bad = part[_BAD].to_numpy()
    if (bad >= 0).any():  # the rows' first non-finite values, in place: check_finite names the first one
        rows = np.flatnonzero(bad >= 0)
        values = np.zeros((len(part), len(features)))
        values[rows, bad[rows]] = part[_BAD_VALUE].to_numpy()[rows]
        check_finite(values, features, start, source)
    ids = list(part["id"]) if id_column else [str(i) for i in range(start, start + len(part))]
    return ScoredChunk(start, ids, part["score"].to_numpy(), part["p_value"].to_numpy(),
                       part["p_approximate"].to_numpy(dtype=bool), {c: part[c].to_numpy() for c in keep})
