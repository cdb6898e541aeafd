"""MemberIndex: every training row under the exemplar that stands for it, the second stage of retrieval.

A k-means sample of a few thousand exemplars keeps the vector store quick to fill, but the nearest
kept exemplar is a cluster's medoid, not the nearest training row: on 100,000 rows with 5,000 kept
it was 1.7 times further than the true nearest row for a typical (normal) query. Retrieval is
therefore two-staged, as an inverted-file (IVF) index is: the store (chromadb) finds the
``probe`` exemplars nearest to a query, and the index ranks every training row of those
exemplars' clusters by exact distance. The rows live beside the store as arrays (written in
seconds, where inserting 100,000 rows into chromadb took minutes), capped at MAX_MEMBER_VALUES
values (a seeded random subset of the rows beyond, every cluster keeping its exemplar).

The index knows nothing of detectors: it holds vectors, rows, ids and cluster numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anomalens.errors import CheckpointError, InputError

__all__ = ["MAX_MEMBER_VALUES", "MemberIndex", "PROBE"]

MAX_MEMBER_VALUES = 10_000_000  # rows x (features + embedding) kept in the index (at most 80 MB)
PROBE = 16  # exemplars (clusters) whose rows are ranked exactly for a query


@dataclass
class MemberHit:
    index: int  # position in the index
    distance: float


class MemberIndex:
    """Training rows grouped by their exemplar (cluster).

    Args:
        embeddings: (n, k) vectors of the rows.
        rows: (n, d) the raw rows (returned as an exemplar's values).
        ids: n row ids.
        exemplar_ids: the ids of the kept exemplars, one per cluster (as stored in the vector store).
        cluster: (n,) each row's cluster, an index into ``exemplar_ids``.
    """

    def __init__(self, embeddings: np.ndarray, rows: np.ndarray, ids: Sequence[str], exemplar_ids: Sequence[str],
                 cluster: np.ndarray) -> None:
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.rows = np.asarray(rows, dtype=np.float64)
        self.ids = [str(i) for i in ids]
        self.exemplar_ids = [str(i) for i in exemplar_ids]
        self.cluster = np.asarray(cluster, dtype=np.int64)
        n = len(self.embeddings)
        if self.embeddings.ndim != 2 or self.rows.ndim != 2 or len(self.rows) != n or len(self.ids) != n \
                or self.cluster.shape != (n,):
            raise InputError(f"a member index needs n rows of embeddings, rows, ids and clusters alike, got "
                             f"{self.embeddings.shape}, {self.rows.shape}, {len(self.ids)}, {self.cluster.shape}")
        if n and (self.cluster.min() < 0 or self.cluster.max() >= len(self.exemplar_ids)):
            raise InputError(f"cluster numbers must index the {len(self.exemplar_ids)} exemplars, got "
                             f"{int(self.cluster.min())}..{int(self.cluster.max())}")
        self._order = np.argsort(self.cluster, kind="stable")  # rows by cluster
        self._offsets = np.searchsorted(self.cluster[self._order], np.arange(len(self.exemplar_ids) + 1))
        self._by_exemplar = {e: c for c, e in enumerate(self.exemplar_ids)}
        self._by_id = {i: j for j, i in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def build(cls, embeddings: np.ndarray, rows: np.ndarray, ids: Sequence[str], kept: np.ndarray, cluster: np.ndarray,
              *, max_values: int = MAX_MEMBER_VALUES, seed: int | None = 0) -> "MemberIndex":
        """The index of ``rows`` whose clusters ``cluster`` (n,) number the kept rows ``kept`` (row
        indices of the exemplars, in cluster order); beyond ``max_values`` values a seeded random
        subset of the rows, every exemplar kept."""
        n = len(rows)
        width = np.asarray(rows).shape[1] + np.asarray(embeddings).shape[1]
        take = np.arange(n)
        if n * width > max_values:
            rng = np.random.default_rng(seed)
            extra = rng.choice(np.setdiff1d(take, kept), size=max(0, max_values // width - len(kept)), replace=False)
            take = np.sort(np.union1d(kept, extra))
        ids = [str(i) for i in ids]
        return cls(np.asarray(embeddings)[take], np.asarray(rows)[take], [ids[i] for i in take],
                   [ids[i] for i in kept], np.asarray(cluster)[take])

    def members(self, exemplar_id: str) -> np.ndarray:
        """Positions of the rows of one exemplar's cluster (empty for an unknown exemplar)."""
        c = self._by_exemplar.get(str(exemplar_id))
        if c is None:
            return np.empty(0, dtype=np.int64)
        return self._order[self._offsets[c] : self._offsets[c + 1]]

    def refine(self, query: np.ndarray, exemplar_ids: Sequence[str], k: int) -> list[MemberHit]:
        """The k rows nearest to ``query`` (k,) among the clusters of ``exemplar_ids``, nearest first."""
        cand = np.concatenate([self.members(e) for e in exemplar_ids]) if exemplar_ids else np.empty(0, dtype=np.int64)
        if len(cand) == 0:
            return []
        d = np.sqrt(np.maximum(((self.embeddings[cand] - np.asarray(query, dtype=np.float32)) ** 2).sum(axis=1), 0.0))
        best = np.argsort(d, kind="stable")[:k]
        return [MemberHit(int(cand[j]), float(d[j])) for j in best]

    def position(self, row_id: str) -> int | None:
        return self._by_id.get(str(row_id))

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        with open(path, "wb") as f:
            np.savez(f, embeddings=self.embeddings, rows=self.rows, ids=np.array(self.ids, dtype=str),
                     exemplar_ids=np.array(self.exemplar_ids, dtype=str), cluster=self.cluster)

    @classmethod
    def load(cls, path: str | Path) -> "MemberIndex":
        try:
            with np.load(path, allow_pickle=False) as z:
                index = cls(z["embeddings"], z["rows"], z["ids"].tolist(), z["exemplar_ids"].tolist(), z["cluster"])
        except FileNotFoundError as exc:
            raise CheckpointError(f"the member index {str(path)!r} is missing") from exc
        except (OSError, ValueError, KeyError, InputError) as exc:
            raise CheckpointError(f"the member index {str(path)!r} is corrupted: {str(exc).splitlines()[0]}") from exc
        if not (np.isfinite(index.embeddings).all() and np.isfinite(index.rows).all()):
            raise CheckpointError(f"the member index {str(path)!r} holds NaN or inf")
        return index
