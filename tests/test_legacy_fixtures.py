"""Stores written by the old code (commit 4ecda57) still open and search the same.

The fixtures in ``tests/fixtures/legacy/`` were written by running
``tests/fixtures/make_legacy_fixtures.py`` on that commit; ``expected.json`` holds what the old
code returned. Each test copies a fixture to a temporary folder first (opening may write).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

LEGACY = Path(__file__).resolve().parent / "fixtures" / "legacy"
EXPECTED = json.loads((LEGACY / "expected.json").read_text())
QUERIES = EXPECTED["queries"]


def _copy(name: str, tmp_path: Path) -> Path:
    dest = tmp_path / name
    shutil.copytree(LEGACY / name, dest)
    return dest


def _same(got: list[list[dict]], want: list[list[dict]]) -> None:
    assert [[h["id"] for h in row] for row in got] == [[h["id"] for h in row] for row in want]
    for grow, wrow in zip(got, want, strict=True):
        for g, w in zip(grow, wrow, strict=True):
            assert g["score"] == pytest.approx(w["score"], rel=1e-4, abs=1e-4)


@pytest.fixture(scope="module")
def model():
    """The model that wrote the fixtures: the embedded default of 4ecda57 (a copy of its
    packaged folder, kept in ``legacy/model/``; the default has been retrained since, and an
    index refuses a model with another fingerprint)."""
    from metaembed_rag import MetaEmbedModel

    return MetaEmbedModel.from_pretrained(LEGACY / "model")


def test_legacy_index_loads_and_searches_the_same(tmp_path: Path) -> None:
    from metaembed_rag.index import MultiVectorIndex

    index = MultiVectorIndex.load(_copy("index", tmp_path))
    assert len(index) == 4 and "d3" not in index
    queries = torch.tensor(EXPECTED["index"]["queries"])
    got = [
        [{"id": h.id, "score": h.score} for h in row]
        for row in index.search(queries, 3, rerank_budget=(4, 8))
    ]
    _same(got, EXPECTED["index"]["hits"])
    got = [
        [{"id": h.id, "score": h.score} for h in row]
        for row in index.search(queries, 3, filter={"n": {"$gte": 2}})
    ]
    _same(got, EXPECTED["index"]["filtered"])


def test_legacy_collection_opens_and_searches_the_same(tmp_path: Path, model) -> None:
    from metaembed_rag.collection import Collection

    col = Collection.open(_copy("collection", tmp_path), model)
    try:
        got = [[{"id": r.id, "score": r.score} for r in col.search(q, k=2)] for q in QUERIES]
        _same(got, EXPECTED["collection"])
    finally:
        col.close()


def test_legacy_langchain_store_loads_and_searches_the_same(tmp_path: Path, model) -> None:
    from langchain_metaembed import MetaEmbedEmbeddings, MetaEmbedVectorStore

    emb = MetaEmbedEmbeddings(client=model, model_name="metaembed-minilm-l6")
    store = MetaEmbedVectorStore.load(_copy("langchain", tmp_path), emb)
    assert store.fetch_k == 50
    got = [
        [{"id": d.id, "score": float(s)} for d, s in store.similarity_search_with_score(q, k=2)]
        for q in QUERIES
    ]
    _same(got, EXPECTED["langchain"])


def test_legacy_llamaindex_store_loads_and_searches_the_same(tmp_path: Path, model) -> None:
    from llama_index.core.vector_stores.types import VectorStoreQuery
    from llama_index.embeddings.metaembed import MetaEmbedEmbedding
    from llama_index.vector_stores.metaembed import MetaEmbedVectorStore

    emb = MetaEmbedEmbedding(model=model, model_name="metaembed-minilm-l6")
    folder = _copy("llamaindex", tmp_path)
    store = MetaEmbedVectorStore.from_persist_path(str(folder / "default__vector_store.json"), emb)
    assert store.fetch_k == 50
    got = []
    for q in QUERIES:
        res = store.query(VectorStoreQuery(query_str=q, similarity_top_k=2))
        got.append(
            [{"id": i, "score": float(s)} for i, s in zip(res.ids, res.similarities, strict=True)]
        )
    _same(got, EXPECTED["llamaindex"])


def test_legacy_index_keeps_float32_coarse_rows_until_compacted(tmp_path: Path) -> None:
    """A format-1 index (float32 coarse rows, a saved flat FAISS index) opened in place, grown
    and saved: its coarse file stays float32 (rows are appended to it), the manifest becomes
    format 2 without a FAISS file, and the old rows search the same. Compaction rewrites the
    coarse rows in float16."""
    import numpy as np

    from metaembed_rag.index import MultiVectorIndex

    folder = _copy("index", tmp_path)
    index = MultiVectorIndex.load(folder, mmap=True)
    new = np.random.default_rng(0).standard_normal((1, 8, 16)).astype(np.float32)
    index.add(["n1"], new / np.linalg.norm(new, axis=-1, keepdims=True))
    index.save()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and "faiss" not in manifest["files"]
    assert manifest["files"]["coarse"]["np_dtype"] == "<f4"
    again = MultiVectorIndex.load(folder)
    queries = torch.tensor(EXPECTED["index"]["queries"])
    got = [
        [{"id": h.id, "score": h.score} for h in row if h.id != "n1"]
        for row in again.search(queries, 4, rerank_budget=(4, 8))
    ]
    _same([row[:3] for row in got], EXPECTED["index"]["hits"])
    again.close()
    index.delete(["d0", "d1"])
    index.compact()
    index.save()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["files"]["coarse"]["np_dtype"] == "<f2"
    assert len(MultiVectorIndex.load(folder)) == 3
