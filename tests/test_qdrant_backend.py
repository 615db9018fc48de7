"""``QdrantBackend`` (qdrant-client local mode) against the local backend.

The same documents go into a local index (float32, flat FAISS) and a Qdrant index; searches,
filters, deletes, upserts and lookups must agree. When ``fetch_k`` covers the collection both
are exact, so the hits must be the same (ties in score tolerated).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _index_utils import BUDGETS, D, K, queries, unit

pytest.importorskip(
    "qdrant_client", reason="the Qdrant backend needs the qdrant extra: pip install -e '.[qdrant]'"
)
from qdrant_client import QdrantClient, models  # noqa: E402

from metaembed_rag.index import MultiVectorIndex  # noqa: E402
from metaembed_rag.index.qdrant import QdrantBackend, qdrant_index  # noqa: E402
from metaembed_rag.index.qdrant_filters import (  # noqa: E402
    UntranslatableFilterError,
    to_qdrant_filter,
)

ALL_PREFIXES = (4, 8)  # the r_c of every budget in BUDGETS beyond (1,1) (8 = K)


def _meta(i: int) -> dict[str, Any]:
    """Metadata with missing fields, bools, ints, floats, strings, nulls and nesting."""
    m: dict[str, Any] = {"group": i % 3, "n": i}
    if i % 4 == 0:
        m["lang"] = "en"
    elif i % 4 == 1:
        m["lang"] = "de"
    if i % 5 == 0:
        m["flag"] = bool(i % 2)
    if i % 7 == 0:
        m["flag"] = 1  # an int where others hold a bool
    if i % 6 == 0:
        m["score"] = i / 4  # floats, some integral (0.0, 3.0, ...)
    if i % 9 == 0:
        m["lang"] = None
    if i % 2 == 0:
        m["author"] = {"name": f"a{i % 4}", "year": 2000 + i % 10}
    return m


def _pair(
    rng: np.random.Generator, n: int = 60, prefixes: tuple[int, ...] = ALL_PREFIXES, **kw: Any
) -> tuple[MultiVectorIndex, MultiVectorIndex]:
    local = MultiVectorIndex(
        D, num_vectors=K, budgets=BUDGETS, dtype="float32", coarse_index="flat"
    )
    backend = QdrantBackend(QdrantClient(":memory:"), "docs", D, K, prefixes=prefixes, **kw)
    qd = MultiVectorIndex(D, num_vectors=K, budgets=BUDGETS, dtype="float32", backend=backend)
    vecs = unit(rng, n, K, D)
    ids = [f"d{i}" for i in range(n)]
    texts = [f"text {i}" for i in range(n)]
    metas = [_meta(i) for i in range(n)]
    for index in (local, qd):
        index.add(ids, vecs, texts, metas)
    return local, qd


def _same(
    a: MultiVectorIndex, b: MultiVectorIndex, q: torch.Tensor, k: int = 5, **opt: Any
) -> None:
    """Same hits: scores close position by position, ids equal except among tied scores."""
    ha, hb = a.search(q, k, **opt), b.search(q, k, **opt)
    for ra, rb in zip(ha, hb, strict=True):
        assert len(ra) == len(rb)
        sa, sb = [h.score for h in ra], [h.score for h in rb]
        np.testing.assert_allclose(sa, sb, atol=1e-4)
        for i, (x, y) in enumerate(zip(ra, rb, strict=True)):
            tied = any(abs(sa[j] - sa[i]) < 1e-4 for j in range(len(sa)) if j != i)
            if not tied:
                assert (x.id, x.text, x.metadata) == (y.id, y.text, y.metadata)


SEARCHES: list[dict[str, Any]] = [
    {},
    {"fetch_k": 6},
    {"fetch_k": 4, "recall_budget": (2, 4)},
    {"rerank_budget": (2, 4)},
    {"filter": {"group": 1}},
    {"filter": {"n": {"$lt": 20}}, "fetch_k": 3},
    {"filter": {"group": {"$in": [0, 2]}}, "recall_budget": (2, 4), "fetch_k": 5},
    {"mode": "exhaustive"},
    {"mode": "exhaustive", "filter": {"group": 2}, "rerank_budget": (4, 8)},
]


@pytest.mark.parametrize("prefixes", [ALL_PREFIXES, (K,)], ids=["native", "full-64-only"])
@pytest.mark.parametrize("options", SEARCHES, ids=[str(o) for o in SEARCHES])
def test_qdrant_searches_like_the_local_backend(
    options: dict[str, Any], prefixes: tuple[int, ...]
) -> None:
    """fetch_k below the collection size: both coarse stages are exact scans here (flat FAISS,
    Qdrant local mode's brute force) on the same renormalised mean vectors."""
    rng = np.random.default_rng(7)
    local, qd = _pair(rng, prefixes=prefixes)
    _same(local, qd, queries(rng), **options)


FILTERS: list[dict[str, Any]] = [
    {},
    {"lang": "en"},
    {"lang": {"$ne": "en"}},
    {"lang": None},
    {"lang": {"$exists": True}},
    {"lang": {"$exists": False}},
    {"flag": True},
    {"flag": 1},
    {"flag": {"$in": [True, 1]}},
    {"flag": {"$nin": [True]}},
    {"score": 3},
    {"score": {"$gte": 2.5, "$lt": 9}},
    {"group": {"$in": []}},
    {"group": {"$nin": []}},
    {"author.name": "a2"},
    {"author.year": {"$gt": 2004}},
    {"author": {"$exists": False}},
    {"$or": [{"lang": "de"}, {"score": {"$lte": 3}}]},
    {"$and": [{"group": 0}, {"$not": {"lang": "en"}}]},
    {"$not": {}},
    {"group": 1, "n": {"$gte": 10, "$lte": 40}, "lang": {"$nin": ["en", "xx"]}},
    {"missing": {"$ne": 3}},
    {"missing": {"$lt": 3}},
    {"lang": {"$gt": 0}},
]


@pytest.mark.parametrize("spec", FILTERS, ids=[str(f) for f in FILTERS])
def test_filters_select_what_the_local_backend_selects(spec: dict[str, Any]) -> None:
    rng = np.random.default_rng(1)
    local, qd = _pair(rng, n=90)
    assert qd.ids_where(spec) == local.ids_where(spec)
    if local.ids_where(spec):
        _same(local, qd, queries(rng), filter=spec, fetch_k=200, k=8)


def test_untranslatable_and_malformed_filters_are_refused() -> None:
    with pytest.raises(UntranslatableFilterError, match="element-wise"):
        to_qdrant_filter({"tags": ["a", "b"]})
    with pytest.raises(UntranslatableFilterError, match="payload keys"):
        to_qdrant_filter({"a[0]": 1})
    with pytest.raises(ValueError, match="Unknown filter operator"):
        to_qdrant_filter({"a": {"$regex": "x"}})
    assert to_qdrant_filter(None) is None


def test_many_random_cases_equal_the_local_backend_when_fetch_k_covers_it() -> None:
    """Random sizes, queries, budgets, filters, deletes and upserts; fetch_k >= collection."""
    rng = np.random.default_rng(2026)
    budgets = [(1, 1), (2, 4), (4, 8)]
    for case in range(12):
        n = int(rng.integers(5, 70))
        local, qd = _pair(rng, n=n, prefixes=ALL_PREFIXES if case % 2 else (K,))
        gone = [
            f"d{i}" for i in rng.choice(n, size=int(rng.integers(0, n // 3 + 1)), replace=False)
        ]
        for index in (local, qd):
            index.delete(gone)
        keep = [f"d{i}" for i in range(n) if f"d{i}" not in gone][:2]
        new = unit(rng, len(keep), K, D)
        for index in (local, qd):
            index.upsert(keep, new, ["new"] * len(keep), [{"group": 5}] * len(keep))
        for _ in range(4):
            spec = FILTERS[int(rng.integers(len(FILTERS)))]
            if not local.ids_where(spec):
                continue
            r_q, r_c = budgets[int(rng.integers(1, 3))]
            opt = {"rerank_budget": (r_q, r_c), "fetch_k": 100, "filter": spec or None}
            if rng.random() < 0.3:
                opt["recall_budget"] = (2, 4)
            q = queries(rng, nq=2, kq=4)
            _same(local, qd, q, k=int(rng.integers(1, 12)), **opt)


def test_writes_lookups_counts_and_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    local, qd = _pair(rng)
    new = unit(rng, 2, K, D)
    for index in (local, qd):
        assert index.delete(["d3", "d4", "d10"]) == 3
        index.upsert(["d5", "d99"], new, ["five", "new"], [{"group": 9}, {"group": 1}])
        with pytest.raises(KeyError, match="not in the index"):
            index.delete(["d3"])
        with pytest.raises(ValueError, match="already in the index"):
            index.add(["d0"], new[:1])
    assert len(local) == len(qd) == 58
    assert sorted(local.ids) == sorted(qd.ids)
    assert (local.num_rows, local.num_deleted) == (qd.num_rows, qd.num_deleted)
    a, b = local.get("d5"), qd.get("d5")
    assert (a["text"], a["metadata"]) == (b["text"], b["metadata"]) == ("five", {"group": 9})
    torch.testing.assert_close(a["vectors"], b["vectors"])
    assert qd.get("d0")["metadata"] == _meta(0)


class _Model:
    """What ``MultiVectorIndex.for_model`` reads from a ``MetaEmbedModel``."""

    dim = 24
    budgets = [(1, 1), (4, 16), (16, 64)]
    config = type("Config", (), {"num_candidate_tokens": 64})()

    def fingerprint(self) -> str:
        return "tiny-0001"


def test_a_saved_collection_reopens_from_a_local_folder(tmp_path: Path) -> None:
    model = _Model()
    location = str(tmp_path / "qdrant")
    index = qdrant_index(location, "docs", model, prefixes=(4, 16, 64))
    rng = np.random.default_rng(0)
    dim, k = model.dim, model.config.num_candidate_tokens
    vecs = unit(rng, 30, k, dim)
    index.add([f"d{i}" for i in range(30)], vecs, None, [{"i": i} for i in range(30)])
    q = torch.from_numpy(unit(rng, 2, 16, dim))
    before = index.search(q, 5, filter={"i": {"$gte": 10}})
    index.close()
    again = qdrant_index(location, "docs", model)
    assert len(again) == 30 and again.num_rows == 30
    assert again.search(q, 5, filter={"i": {"$gte": 10}}) == before
    assert again.fingerprint == model.fingerprint()
    assert again.bytes_per_document == dim * 4 * (1 + 4 + 16 + 64)
    again.add(["x"], vecs[:1])  # rows continue after the stored ones
    assert again.num_rows == 31
    again.close()


def test_options_reach_the_collection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local mode keeps on_disk and datatype but drops quantization and the cluster options,
    so those are checked where they leave the backend: create_collection's arguments."""
    client = QdrantClient(":memory:")
    seen: dict[str, Any] = {}
    create = client.create_collection

    def spy(name: str, **kw: Any) -> Any:
        seen.update(kw)
        return create(name, **kw)

    monkeypatch.setattr(client, "create_collection", spy)
    quant = models.ScalarQuantization(
        scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, always_ram=True)
    )
    QdrantBackend(
        client, "c", D, K, on_disk=True, datatype="float16", on_disk_payload=True,
        quantization=quant, shard_number=6, replication_factor=2,
        hnsw_config=models.HnswConfigDiff(m=32, ef_construct=200),
    )  # fmt: skip
    assert seen["quantization_config"] == quant
    cluster = (seen["shard_number"], seen["replication_factor"], seen["on_disk_payload"])
    assert cluster == (6, 2, True)
    vectors = client.get_collection("c").config.params.vectors
    assert vectors["coarse"].on_disk and vectors["mv8"].on_disk
    assert vectors["coarse"].hnsw_config.m == 32 and vectors["mv8"].hnsw_config.m == 0
    assert vectors["mv8"].datatype == models.Datatype.FLOAT16
    assert vectors["mv8"].multivector_config.comparator == models.MultiVectorComparator.MAX_SIM
    with pytest.raises(ValueError, match="holds"):
        QdrantBackend(client, "c", D + 1, K)
    with pytest.raises(ValueError, match="datatype must be"):
        QdrantBackend(client, "other", D, K, datatype="bf17")


def test_a_search_is_one_qdrant_query(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefetch + MaxSim in one batched query: no allowed-mask scroll, no vector fetch."""
    rng = np.random.default_rng(5)
    _, qd = _pair(rng, n=40)
    backend = qd.backend
    assert isinstance(backend, QdrantBackend)
    calls: list[int] = []
    batch = backend.client.query_batch_points

    def counted(name: str, requests: list[Any], **kw: Any) -> Any:
        calls.append(len(requests))
        return batch(name, requests, **kw)

    def refuse(*a: Any, **k: Any) -> Any:
        raise AssertionError("the native search must not take the generic path")

    monkeypatch.setattr(backend.client, "query_batch_points", counted)
    monkeypatch.setattr(backend, "allowed", refuse)
    monkeypatch.setattr(backend, "fetch", refuse)
    q = queries(rng, nq=3)
    for opt in ({}, {"recall_budget": (2, 4), "fetch_k": 5}, {"mode": "exhaustive"}):
        calls.clear()
        hits = qd.search(q, 4, filter={"group": {"$in": [0, 1]}}, **opt)
        assert calls == [3] and all(len(h) == 4 for h in hits)
