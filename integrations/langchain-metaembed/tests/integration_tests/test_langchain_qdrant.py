"""``MetaEmbedVectorStore`` on a Qdrant collection (qdrant-client local mode) gives what the
same store on the local index gives: adds, filters, deletes, lookups, retriever + reranker."""

from __future__ import annotations

import pytest

pytest.importorskip("qdrant_client", reason="the Qdrant backend needs metaembed-rag's qdrant extra")
from metaembed_rag.index import MultiVectorIndex  # noqa: E402
from metaembed_rag.index.qdrant import QdrantBackend, qdrant_index  # noqa: E402
from qdrant_client import QdrantClient  # noqa: E402

from langchain_metaembed import (  # noqa: E402
    MetaEmbedEmbeddings,
    MetaEmbedReranker,
    MetaEmbedVectorStore,
)

TEXTS = [
    "Paris is the capital and largest city of France.",
    "The mitochondria is the powerhouse of the cell.",
    "Berlin is the capital of Germany.",
    "Photosynthesis converts light into chemical energy.",
    "Madrid is the capital of Spain.",
    "The heart pumps blood through the body.",
]
QUERY = "What is the capital of France?"


def test_the_store_runs_on_qdrant(default_embeddings: MetaEmbedEmbeddings) -> None:
    model = default_embeddings.client
    local = MetaEmbedVectorStore(
        default_embeddings, index=MultiVectorIndex.for_model(model, dtype="float32")
    )
    index = qdrant_index(QdrantClient(":memory:"), "lc", model, prefixes=(16, 64))
    qd = MetaEmbedVectorStore(default_embeddings, index=index)
    assert isinstance(qd.index.backend, QdrantBackend)
    metas = [{"topic": "geo" if i % 2 == 0 else "bio", "n": i} for i in range(len(TEXTS))]
    ids = [f"t{i}" for i in range(len(TEXTS))]
    for store in (local, qd):
        assert store.add_texts(TEXTS, metas, ids=ids) == ids
        assert store.delete(["t5"])
    for kw in (
        {},
        {"filter": {"topic": "geo"}},
        {"budget": (8, 16)},
        {"budget": (4, 8)},
        {"filter": {"n": {"$gte": 2}}},
    ):
        a = local.similarity_search_with_score(QUERY, k=4, **kw)
        b = qd.similarity_search_with_score(QUERY, k=4, **kw)
        assert [d.id for d, _ in a] == [d.id for d, _ in b]
        assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=1e-4)
        assert [d.metadata for d, _ in a] == [d.metadata for d, _ in b]
    assert [d.page_content for d in qd.get_by_ids(["t0", "t5"])] == [TEXTS[0]]
    reranker = MetaEmbedReranker(embeddings=default_embeddings, top_n=2, budget=(8, 16))
    docs = qd.as_retriever(search_kwargs={"k": 4}).invoke(QUERY)
    assert docs[0].id == "t0"
    assert [d.id for d in reranker.compress_documents(docs, QUERY)][0] == "t0"
