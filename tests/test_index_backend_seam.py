"""The storage-backend seam: ``MultiVectorIndex`` over a minimal in-memory backend.

``MemoryBackend`` below is test-only: float32 rows in RAM, an exact "prefetch" on the
renormalised mean vector (what a vector database does with one named vector), exact float32
MaxSim through the interface's default ``score`` / ``scan``, no FAISS, no maintenance. The same
searches, filters, deletes and upserts through ``MultiVectorIndex`` must give what the local
backend (float32 storage, flat FAISS) gives: the index uses nothing but the interface.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _index_utils import BUDGETS, D, K, queries, unit

from metaembed_rag.index import MultiVectorIndex, multivector
from metaembed_rag.index.backend import Record, StorageBackend
from metaembed_rag.index.filters import Filter, filter_mask
from metaembed_rag.index.hits import stable_topk
from metaembed_rag.index.local import LocalBackend
from metaembed_rag.index.validate import DocumentBatch


class MemoryBackend(StorageBackend):
    """Rows in RAM (tombstoned on delete), exact mean-vector prefetch, default MaxSim."""

    def __init__(self, dim: int, num_vectors: int) -> None:
        self.dim, self.num_vectors = dim, num_vectors
        self.vectors = np.zeros((0, num_vectors, dim), dtype=np.float32)
        self.records_: list[Record | None] = []

    def __len__(self) -> int:
        return sum(r is not None for r in self.records_)

    @property
    def num_rows(self) -> int:
        return len(self.records_)

    def add(self, batch: DocumentBatch) -> None:
        self.vectors = np.concatenate([self.vectors, batch.vectors])
        for i, t, m in zip(batch.ids, batch.texts, batch.metadatas, strict=True):
            self.records_.append(Record(i, t, dict(m)))

    def delete(self, ids: Sequence[str]) -> int:
        rows = self.rows_of(ids)
        for r in rows.tolist():
            self.records_[r] = None
        return int(rows.size)

    def rows_of(self, ids: Sequence[str]) -> np.ndarray:
        where = {r.id: n for n, r in enumerate(self.records_) if r is not None}
        return np.array([where.get(i, -1) for i in ids], dtype=np.int64)

    def records(self, rows: np.ndarray) -> list[Record]:
        out = [self.records_[r] for r in np.asarray(rows).tolist()]
        assert all(r is not None for r in out), "records() asked for a deleted row"
        return [Record(r.id, r.text, dict(r.metadata)) for r in out if r is not None]

    def allowed(self, filter: Filter | None) -> np.ndarray:
        metas = [None if r is None else r.metadata for r in self.records_]
        alive = np.array([r is not None for r in self.records_], dtype=bool)
        return alive if filter is None else filter_mask(filter, metas) & alive

    def candidates(
        self, queries: torch.Tensor, pool: int, allowed: np.ndarray, filtered: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        rows = np.flatnonzero(allowed).astype(np.int64)
        norm = torch.nn.functional.normalize
        docs = norm(torch.from_numpy(self.vectors[rows]).mean(dim=1), dim=-1)
        sims = (norm(queries.mean(dim=1), dim=-1) @ docs.T).numpy()
        m = min(pool, rows.size)
        cand = np.stack([rows[stable_topk(s, rows, m)] for s in sims])
        return cand, np.ones(cand.shape, dtype=bool)

    def fetch(self, rows: np.ndarray, r_c: int | None = None) -> torch.Tensor:
        return torch.from_numpy(self.vectors[np.asarray(rows), : r_c or self.num_vectors].copy())

    def save(self, target: Path, header: dict[str, Any]) -> Path:
        raise NotImplementedError("MemoryBackend keeps nothing on disk (test-only).")


def _pair(rng: np.random.Generator, n: int = 60) -> tuple[MultiVectorIndex, MultiVectorIndex]:
    """The same documents in a local (float32, flat FAISS) index and a MemoryBackend index."""
    local = MultiVectorIndex(  # the mean coarse vector: what MemoryBackend prefetches with
        D, num_vectors=K, budgets=BUDGETS, dtype="float32", coarse_index="flat",
        coarse_vector="mean",
    )  # fmt: skip
    fake = MultiVectorIndex(D, num_vectors=K, budgets=BUDGETS, backend=MemoryBackend(D, K))
    assert isinstance(local.backend, LocalBackend)
    vecs = unit(rng, n, K, D)
    ids = [f"d{i}" for i in range(n)]
    texts = [f"text {i}" for i in range(n)]
    metas = [{"group": i % 3, "n": i} for i in range(n)]
    for index in (local, fake):
        index.add(ids, vecs, texts, metas)
    return local, fake


def _same(a: MultiVectorIndex, b: MultiVectorIndex, q: torch.Tensor, **options: Any) -> None:
    ha, hb = a.search(q, 5, **options), b.search(q, 5, **options)
    assert [[h.id for h in row] for row in ha] == [[h.id for h in row] for row in hb]
    assert [[(h.text, h.metadata, h.rank) for h in row] for row in ha] == [
        [(h.text, h.metadata, h.rank) for h in row] for row in hb
    ]
    for ra, rb in zip(ha, hb, strict=True):
        np.testing.assert_allclose([h.score for h in ra], [h.score for h in rb], atol=1e-5)


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


@pytest.mark.parametrize("options", SEARCHES, ids=[str(o) for o in SEARCHES])
def test_memory_backend_searches_like_the_local_backend(options: dict[str, Any]) -> None:
    rng = np.random.default_rng(7)
    local, fake = _pair(rng)
    _same(local, fake, queries(rng), **options)


def test_memory_backend_deletes_upserts_and_lookups_like_the_local_backend() -> None:
    rng = np.random.default_rng(11)
    local, fake = _pair(rng)
    new = unit(rng, 2, K, D)
    for index in (local, fake):
        assert index.delete(["d3", "d4", "d10"]) == 3
        index.upsert(["d5", "d99"], new, ["five", "new"], [{"group": 9}, {"group": 1}])
        with pytest.raises(KeyError, match="not in the index"):
            index.delete(["d3"])
        with pytest.raises(ValueError, match="already in the index"):
            index.add(["d0"], new[:1])
    for attr in ("ids", "num_rows", "num_deleted"):
        assert getattr(local, attr) == getattr(fake, attr), attr
    assert len(local) == len(fake) == 58
    assert local.ids_where({"group": 1}) == fake.ids_where({"group": 1})
    assert ("d3" in fake, "d5" in fake, 5 in fake) == (False, True, False)
    a, b = local.get("d5"), fake.get("d5")
    assert (a["text"], a["metadata"]) == (b["text"], b["metadata"]) == ("five", {"group": 9})
    torch.testing.assert_close(a["vectors"], b["vectors"])
    with pytest.raises(KeyError, match="not in the index"):
        fake.get("d3")
    q = queries(rng)
    for options in SEARCHES:
        _same(local, fake, q, **options)
    local.compact()
    fake.compact()  # the interface's no-op: rows keep their handles
    for options in SEARCHES:
        _same(local, fake, q, **options)
    scores, rows = fake.search_rows(q, 3, filter={"group": 9})
    assert fake.ids_of(rows) == [["d5"]] * len(q)
    assert np.isneginf(scores[:, 1:]).all()


def test_a_backend_of_another_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="pass the backend's dim and num_vectors"):
        MultiVectorIndex(D, num_vectors=K + 1, backend=MemoryBackend(D, K))


def test_maintenance_hooks_are_no_ops_and_save_is_the_backends_call(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    local, fake = _pair(rng, n=20)
    q = queries(rng)
    before = fake.search(q, 5)
    fake.reserve(1000)
    fake.rebuild_coarse()
    fake.compact()
    assert fake.search(q, 5) == before  # rows keep their handles: nothing moved
    _same(local, fake, q)
    assert fake.path is None and fake.coarse_kind == "exact"
    assert fake.bytes_per_document == K * D * 4
    with pytest.raises(NotImplementedError, match="keeps nothing on disk"):
        fake.save(tmp_path / "idx")
    fake.close()


def test_the_index_reaches_its_storage_only_through_the_interface() -> None:
    """Grep-able seam: every ``backend.<name>`` that ``multivector.py`` uses is a member of
    ``StorageBackend`` (``LocalBackend`` is named only to build and load a local index)."""
    source = Path(multivector.__file__).read_text(encoding="utf-8")
    used = set(re.findall(r"(?<![\w.])(?:self|index)\.backend\.(\w+)", source))
    interface = {n for n in dir(StorageBackend) if not n.startswith("_")} | {"dim", "num_vectors"}
    assert used and used <= interface, sorted(used - interface)
    assert not re.search(r"backend\.(table|rows|coarse)\b", source)
