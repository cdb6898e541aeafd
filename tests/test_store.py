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
