"""ExemplarStore: normal cases as vectors in chromadb, returned as the nearest normal evidence.

The store knows nothing of detectors: it takes vectors (a detector's ``embed``), the raw rows and
provenance, and answers k-nearest queries. Embedded ``chromadb.PersistentClient`` (a folder) by
default; ``chromadb.HttpClient`` when a URL is given (``ANOMALENS_CHROMA_URL``) for a shared
``chroma run`` server. Embeddings are always passed in, never computed by chromadb (its default
embedding function downloads a model, which fails offline).

Distances are Euclidean in the embedding space (chromadb's "l2" space returns squared distances;
they are square-rooted here).

With a ``MemberIndex`` attached (``attach_members``: every training row under the exemplar of its
cluster), a query is two-staged: the collection finds the ``PROBE`` nearest exemplars, and the
index returns the nearest training rows of their clusters (see ``anomalens.store.members``).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from anomalens.errors import BackendError, InputError
from anomalens.store.members import PROBE, MemberIndex

__all__ = ["ExemplarHit", "ExemplarStore"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExemplarHit:
    row_id: str
    distance: float  # Euclidean, in the embedding space
    values: np.ndarray  # (d,) the stored raw row (empty when none was stored)
    source: str | None
    timestamp: str | None
    weight: int = 1  # training rows this exemplar stands for


def _values(meta: dict[str, Any], doc: str | None) -> np.ndarray:
    """An exemplar's stored raw row: its metadata's "values", or the document where stores written
    before 2026-12-01 kept it (empty when none was stored)."""
    text = meta.get("values") or doc
    return np.asarray(json.loads(text), dtype=np.float64) if text else np.empty(0)


def _client(path: str | Path | None, url: str | None):
    import chromadb

    try:
        if url:
            u = urlparse(url if "://" in url else f"http://{url}")
            if not u.hostname:
                raise InputError(f"chroma url must look like http://host:port, got {url!r}")
            return chromadb.HttpClient(host=u.hostname, port=u.port or 8000, ssl=u.scheme == "https")
        if path is None:
            return chromadb.EphemeralClient()
        Path(path).mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(path))
    except InputError:
        raise
    except Exception as exc:  # chromadb raises several types for an unreachable server or a bad folder
        where = url or str(path)
        raise BackendError(f"cannot open the chroma store at {where}: {exc}") from exc


class ExemplarStore:
    """Normal exemplars in a chromadb collection.

    Args:
        path: folder of an embedded store (None with no url: in memory).
        url: a chroma server (``http://host:port``); takes precedence over ``path``.
        collection: collection name (3-512 chars of [a-zA-Z0-9._-]); None: a fresh unique name.
        create: create the collection when it does not exist (False: a missing one is an error).
    """

    def __init__(self, path: str | Path | None = None, *, url: str | None = None, collection: str | None = None,
                 create: bool = True) -> None:
        self.path = None if path is None else Path(path)
        self.url = url
        self.collection_name = collection or f"anomalens-{uuid.uuid4().hex[:12]}"
        self.members: MemberIndex | None = None  # the second stage of a query (attach_members)
        self.member_source: str | None = None
        self._client = _client(self.path, url)
        try:
            if create:
                self._col = self._client.get_or_create_collection(
                    self.collection_name, embedding_function=None, configuration={"hnsw": {"space": "l2"}}
                )
            else:
                self._col = self._client.get_collection(self.collection_name, embedding_function=None)
        except Exception as exc:
            raise BackendError(f"cannot open collection {self.collection_name!r}: {exc}") from exc

    def __repr__(self) -> str:
        where = self.url or (str(self.path) if self.path else "memory")
        return f"ExemplarStore({where!r}, collection={self.collection_name!r}, count={self.count()})"

    def count(self) -> int:
        try:
            return int(self._col.count())
        except Exception as exc:
            raise BackendError(f"counting the exemplars of {self.collection_name!r} failed: {exc}") from exc

    def total_weight(self) -> int:
        """How many training rows the stored exemplars stand for (the sum of their weights)."""
        try:
            metas = self._col.get(include=["metadatas"])["metadatas"]
        except Exception as exc:
            raise BackendError(f"reading exemplars from {self.collection_name!r} failed: {exc}") from exc
        return int(sum(int((m or {}).get("weight", 1)) for m in metas))

    def attach_members(self, members: MemberIndex | None, *, source: str | None = None) -> None:
        """Answer queries from every training row of ``members`` (None: from the exemplars alone);
        ``source`` is the provenance its rows are returned with."""
        self.members, self.member_source = members, source

    def close(self) -> None:
        """Release the embedded store's files (its SQLite connection); the store is unusable after."""
        try:
            close = getattr(self._client, "close", None)
            if close is not None:
                close()
        except Exception as exc:  # closing is best effort
            log.debug("closing %r: %s", self.collection_name, exc)

    def add(
        self,
        embeddings: Any,
        rows: Any = None,
        ids: Sequence[str] | None = None,
        *,
        source: str | None = None,
        timestamps: Sequence[str | None] | None = None,
        weights: Sequence[int] | None = None,
    ) -> int:
        """Add n exemplars; returns how many were added.

        Args:
            embeddings: (n, k) vectors.
            rows: (n, d) raw rows kept beside the vectors (returned by ``query``), or None.
            ids: n unique row ids (default: "0", "1", ... continuing from ``count()``).
            source: provenance, e.g. the training file's name.
            timestamps: n ISO timestamps, when known.
            weights: n counts of the training rows each exemplar stands for (default 1).
        """
        E = np.asarray(embeddings, dtype=np.float32)
        if E.ndim != 2 or len(E) == 0:
            raise InputError(f"embeddings must be a non-empty 2-D array (n, k), got shape {E.shape}")
        n = len(E)
        if not np.isfinite(E).all():
            raise InputError("embeddings contain NaN or inf")
        R = None if rows is None else np.asarray(rows, dtype=np.float64)
        if R is not None and (R.ndim != 2 or len(R) != n):
            raise InputError(f"rows must be (n, d) with n = {n} like embeddings, got shape {R.shape}")
        start = self.count()
        ids = [str(i) for i in range(start, start + n)] if ids is None else [str(i) for i in ids]
        if len(ids) != n or len(set(ids)) != n:
            raise InputError(f"ids must be {n} unique values, got {len(ids)} ({len(set(ids))} unique)")
        if timestamps is not None and len(timestamps) != n:
            raise InputError(f"timestamps must have n = {n} entries, got {len(timestamps)}")
        if weights is not None and len(weights) != n:
            raise InputError(f"weights must have n = {n} entries, got {len(weights)}")
        metas = []
        for i in range(n):
            m: dict[str, Any] = {"row_id": ids[i]}
            if R is not None:  # a metadata string, not a document: chroma indexes documents for full-text
                m["values"] = json.dumps(R[i].tolist())  # search, which took 3 of 5 s for 5,000 rows
            if source is not None:
                m["source"] = source
            if timestamps is not None and timestamps[i] is not None:
                m["timestamp"] = str(timestamps[i])
            if weights is not None and int(weights[i]) != 1:
                m["weight"] = int(weights[i])
            metas.append(m)
        step = max(1, int(self._client.get_max_batch_size()))
        try:
            for i in range(0, n, step):
                self._col.add(ids=ids[i : i + step], embeddings=E[i : i + step], metadatas=metas[i : i + step])
        except Exception as exc:
            raise BackendError(f"adding exemplars to {self.collection_name!r} failed: {exc}") from exc
        return n

    def query(self, embeddings: Any, k: int = 5) -> list[list[ExemplarHit]]:
        """The k nearest exemplars of each query vector, nearest first.

        Args:
            embeddings: (k_dim,) one vector or (m, k_dim) several.
        """
        Q = np.asarray(embeddings, dtype=np.float32)
        Q = Q[None, :] if Q.ndim == 1 else Q
        if Q.ndim != 2 or not np.isfinite(Q).all():
            raise InputError(f"query embeddings must be a finite (m, k) array, got shape {Q.shape}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InputError(f"k must be a positive int, got {k!r}")
        n = self.count()
        if n == 0:
            return [[] for _ in Q]
        members = self.members
        wanted = min(max(k, PROBE), n) if members is not None else min(k, n)
        try:
            res = self._col.query(query_embeddings=Q, n_results=wanted, include=["distances", "metadatas", "documents"])
        except Exception as exc:
            raise BackendError(f"querying {self.collection_name!r} failed: {exc}") from exc
        out = []
        for q, dists, metas, docs in zip(Q, res["distances"], res["metadatas"], res["documents"] or [[None] * wanted] * len(Q)):
            if members is not None:
                near = members.refine(q, [str(m["row_id"]) for m in metas], k)
                if near:  # (an index that knows none of these exemplars answers with the exemplars)
                    out.append([self._member_hit(h.index, h.distance) for h in near])
                    continue
                dists, metas, docs = dists[:k], metas[:k], docs[:k]
            hits = []
            for dist, meta, doc in zip(dists, metas, docs):
                values = _values(meta, doc)
                hits.append(ExemplarHit(str(meta["row_id"]), float(np.sqrt(max(dist, 0.0))), values,
                                        meta.get("source"), meta.get("timestamp"), int(meta.get("weight", 1))))
            out.append(hits)
        return out

    def _member_hit(self, j: int, distance: float) -> ExemplarHit:
        """A training row of the member index as a hit: it stands for itself (weight 1)."""
        m = self.members
        return ExemplarHit(m.ids[j], distance, m.rows[j].copy(), self.member_source, None, 1)

    def get(self, row_ids: Sequence[str]) -> list[ExemplarHit]:
        """The stored exemplars with these row ids, in the order asked (distance 0).

        Raises:
            InputError: an id the store does not hold (the message names it).
        """
        ids = [str(i) for i in row_ids]
        if self.members is not None:  # every training row the index holds, the exemplars among them
            found = {i: self.members.position(i) for i in ids}
            if all(j is not None for j in found.values()):
                return [self._member_hit(found[i], 0.0) for i in ids]
        try:
            got = self._col.get(ids=ids, include=["metadatas", "documents"])
        except Exception as exc:
            raise BackendError(f"reading exemplars from {self.collection_name!r} failed: {exc}") from exc
        by_id = {i: (m, d) for i, m, d in zip(got["ids"], got["metadatas"], got["documents"] or [None] * len(got["ids"]))}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise InputError(f"row_ids must be stored exemplar ids; not in the store: {missing[:5]}")
        out = []
        for i in ids:
            meta, doc = by_id[i]
            values = _values(meta, doc)
            out.append(ExemplarHit(i, 0.0, values, meta.get("source"), meta.get("timestamp"), int(meta.get("weight", 1))))
        return out

    def copy_to(self, other: "ExemplarStore", batch: int = 5000) -> int:
        """Copy every exemplar (vector, row, provenance) into ``other``; returns how many."""
        n = self.count()
        try:
            for off in range(0, n, batch):
                got = self._col.get(limit=batch, offset=off, include=["embeddings", "metadatas", "documents"])
                metas = got["metadatas"]
                docs = got["documents"]  # (stores written before 2026-12-01 keep their rows there)
                other._col.add(ids=got["ids"], embeddings=got["embeddings"], metadatas=metas,
                               documents=docs if docs and any(d is not None for d in docs) else None)
        except Exception as exc:
            raise BackendError(f"copying exemplars from {self.collection_name!r} failed: {exc}") from exc
        return n

    def delete(self) -> None:
        """Drop the collection (the store's data is lost)."""
        try:
            self._client.delete_collection(self.collection_name)
        except Exception as exc:
            raise BackendError(f"deleting collection {self.collection_name!r} failed: {exc}") from exc
