"""``MultiVectorIndex.ids_where``: live ids matching a metadata filter, without vectors."""

from __future__ import annotations

import numpy as np
import pytest

from metaembed_rag.index import MultiVectorIndex


def _vectors(n: int, k: int = 4, d: int = 8) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, k, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_ids_where_filters_live_rows_in_order() -> None:
    index = MultiVectorIndex(8, num_vectors=4, budgets=[(1, 1), (2, 4)], dtype="float32")
    metas = [{"src": "a", "n": 1}, {"src": "b", "n": 2}, {"src": "a", "n": 3}, {}]
    index.add(["w", "x", "y", "z"], _vectors(4), metadatas=metas)
    assert index.ids_where(None) == ["w", "x", "y", "z"]
    assert index.ids_where({"src": "a"}) == ["w", "y"]
    assert index.ids_where({"n": {"$gte": 2}}) == ["x", "y"]
    index.delete(["y"])
    assert index.ids_where({"src": "a"}) == ["w"]
    index.upsert(["w"], _vectors(1), metadatas=[{"src": "c"}])
    assert index.ids_where({"src": "a"}) == []
    assert index.ids_where({"src": "c"}) == ["w"]
    with pytest.raises(ValueError, match="Unknown filter operator"):
        index.ids_where({"src": {"$like": "a"}})
