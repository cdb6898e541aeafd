"""ExemplarStore on real chromadb: embedded, persistent, and a real `chroma run` server."""

from __future__ import annotations

import numpy as np
import pytest

from anomalens.errors import BackendError, InputError
from anomalens.store import ExemplarStore
from servers import chroma_binary, chroma_server, free_port


def brute_force(E: np.ndarray, q: np.ndarray, k: int) -> list[int]:
    return np.argsort(np.linalg.norm(E - q, axis=1), kind="stable")[:k].tolist()


def test_nearest_neighbours_match_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    E, R = rng.normal(size=(2000, 8)), rng.normal(size=(2000, 4))
    store = ExemplarStore(tmp_path / "s")
    assert store.add(E, R, source="unit-test") == 2000 and store.count() == 2000
    Q = rng.normal(size=(20, 8))
    hits = store.query(Q, k=5)
    recall = np.mean([len({int(h.row_id) for h in hs} & set(brute_force(E, q, 5))) / 5 for hs, q in zip(hits, Q)])
    assert recall >= 0.95
    h = hits[0][0]
    np.testing.assert_allclose(h.distance, np.linalg.norm(E[int(h.row_id)] - Q[0]), rtol=1e-4)
    np.testing.assert_allclose(h.values, R[int(h.row_id)])
    assert h.source == "unit-test"
    assert [x.distance for x in hits[0]] == sorted(x.distance for x in hits[0])


def test_a_member_index_reaches_every_row_through_a_sample_of_exemplars(tmp_path):
    """A k-means sample in chromadb, every row in the member index: a query returns the true
    nearest rows (the sample alone returns medoids), the index round-trips through its file, a
    damaged file is a CheckpointError, and an index that knows none of the exemplars found leaves
    the exemplars as the answer."""
    from anomalens.errors import CheckpointError
    from anomalens.store.coreset import select_exemplars
    from anomalens.store.members import MemberIndex

    rng = np.random.default_rng(3)
    E, R = rng.normal(size=(6000, 4)), rng.normal(size=(6000, 3))
    ids = [f"r{i}" for i in range(6000)]
    keep, weights, clusters = select_exemplars(E, 300, seed=0, with_clusters=True)
    assert weights.sum() == 6000 and all(clusters[keep] == np.arange(len(keep)))
    store = ExemplarStore()
    store.add(E[keep], R[keep], [ids[i] for i in keep], weights=weights)
    Q = rng.normal(size=(50, 4))
    coarse = store.query(Q, k=1)
    store.attach_members(MemberIndex.build(E, R, ids, keep, clusters), source="train.csv")
    fine = store.query(Q, k=3)
    exact = [brute_force(E, q, 1)[0] for q in Q]
    assert np.mean([h[0].row_id == ids[j] for h, j in zip(fine, exact)]) >= 0.95
    assert np.median([c[0].distance / h[0].distance for c, h in zip(coarse, fine)]) > 1.1  # medoids are further
    h = fine[0][0]
    np.testing.assert_allclose(h.values, R[int(h.row_id[1:])])
    assert h.weight == 1 and h.source == "train.csv"
    assert store.get([ids[5]])[0].row_id == ids[5]  # any training row, not only the exemplars
    store.members.save(tmp_path / "m.npz")
    again = MemberIndex.load(tmp_path / "m.npz")
    assert again.ids == store.members.ids and np.array_equal(again.cluster, store.members.cluster)
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(CheckpointError, match="corrupted"):
        MemberIndex.load(tmp_path / "bad.npz")
    store.attach_members(MemberIndex(E[:2], R[:2], ["x", "y"], ["x"], np.zeros(2, dtype=np.int64)))
    fallback = store.query(Q[:1], k=2)[0]
    assert len(fallback) == 2 and {x.row_id for x in fallback} <= {ids[i] for i in keep}


@pytest.mark.parametrize("dims", [3, 10, 11, 24])  # a k-d tree up to KDTREE_MAX_DIM (10), the matrix product beyond
def test_nearest_rows_are_exact_on_both_paths(dims):
    from anomalens.store.coreset import KDTREE_MAX_DIM, nearest

    assert KDTREE_MAX_DIM == 10
    rng = np.random.default_rng(dims)
    Q, C = rng.normal(size=(300, dims)).astype(np.float32), rng.normal(size=(700, dims)).astype(np.float32)
    idx, dist = nearest(Q, C)
    D = np.linalg.norm(Q[:, None, :].astype(np.float64) - C[None, :, :], axis=2)
    np.testing.assert_array_equal(idx, D.argmin(1))
    np.testing.assert_allclose(dist, D.min(1), rtol=1e-5, atol=1e-5)


def test_a_store_written_with_rows_in_documents_still_reads_and_copies():
    """Stores written before 2026-12-01 kept each raw row as a chroma document; rows are now a
    metadata string (documents are indexed for full-text search, the slow part of an add). The
    old layout still gives its rows back, through query, get and copy_to."""
    import json

    old = ExemplarStore()
    E, R = np.eye(3), np.arange(6.0).reshape(3, 2)
    old._col.add(ids=["a", "b", "c"], embeddings=E.astype(np.float32), documents=[json.dumps(r.tolist()) for r in R],
                 metadatas=[{"row_id": i, "weight": 2} for i in "abc"])
    np.testing.assert_array_equal(old.query(E[1], k=1)[0][0].values, R[1])
    np.testing.assert_array_equal(old.get(["c"])[0].values, R[2])
    new = ExemplarStore()
    new.add(E + 10, R + 10, ["d", "e", "f"])
    both = ExemplarStore()
    assert old.copy_to(both) == 3 and new.copy_to(both) == 3
    np.testing.assert_array_equal([h.values for h in both.get(["a", "f"])], [R[0], R[2] + 10])
    assert new._col.get(ids=["d"], include=["documents"])["documents"] == [None]  # nothing for full-text search


def test_persistent_store_reopens_with_its_data(tmp_path):
    rng = np.random.default_rng(1)
    E = rng.normal(size=(50, 3))
    s = ExemplarStore(tmp_path / "p", collection="exemplars-test")
    s.add(E, ids=[f"r{i}" for i in range(50)], timestamps=[f"2026-01-{i % 28 + 1:02d}" for i in range(50)])
    again = ExemplarStore(tmp_path / "p", collection="exemplars-test")
    assert again.count() == 50
    (hit,) = again.query(E[7], k=1)[0]
    assert hit.row_id == "r7" and hit.distance < 1e-3 and hit.timestamp == "2026-01-08"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"embeddings": np.zeros((0, 3))}, "non-empty 2-D"),
        ({"embeddings": np.array([[np.nan, 1.0, 2.0]])}, "NaN"),
        ({"embeddings": np.zeros((2, 3)), "rows": np.zeros((3, 2))}, "rows must be"),
        ({"embeddings": np.zeros((2, 3)), "ids": ["a", "a"]}, "unique"),
    ],
)
def test_bad_input_names_the_problem(tmp_path, kwargs, match):
    with pytest.raises(InputError, match=match):
        ExemplarStore().add(**kwargs)


def test_query_of_empty_store_and_bad_k():
    s = ExemplarStore()
    assert s.query(np.zeros(3), k=3) == [[]]
    s.add(np.zeros((2, 3)))
    with pytest.raises(InputError, match="k must be a positive int"):
        s.query(np.zeros(3), k=0)


def test_unreachable_server_is_a_backend_error():
    with pytest.raises(BackendError, match="cannot open"):
        ExemplarStore(url=f"http://127.0.0.1:{free_port()}")


@pytest.mark.skipif(chroma_binary() is None, reason="the `chroma` command (package chromadb) is not installed")
def test_real_chroma_server(tmp_path):
    rng = np.random.default_rng(2)
    E, R = rng.normal(size=(300, 6)), rng.normal(size=(300, 2))
    with chroma_server(tmp_path) as url:
        s = ExemplarStore(url=url, collection="server-test")
        s.add(E, R, source="server")
        other_client = ExemplarStore(url=url, collection="server-test")  # a second client sees the same data
        assert other_client.count() == 300
        hits = other_client.query(E[:5], k=3)
        assert [h[0].row_id for h in hits] == ["0", "1", "2", "3", "4"]
        np.testing.assert_allclose(hits[2][0].values, R[2])
