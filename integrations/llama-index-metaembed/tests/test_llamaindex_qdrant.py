"""LlamaIndex's ``VectorStoreIndex`` / ``as_retriever`` / the reranker over a
``MetaEmbedVectorStore`` whose index is a Qdrant collection (qdrant-client local mode), equal
to the same store on the local index."""

from __future__ import annotations

import pytest

pytest.importorskip("qdrant_client", reason="the Qdrant backend needs metaembed-rag's qdrant extra")
from llama_index.core import StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.vector_stores import (  # noqa: E402
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from llama_index.postprocessor.metaembed_rerank import MetaEmbedRerank  # noqa: E402
from llama_index.vector_stores.metaembed import MetaEmbedVectorStore  # noqa: E402
from qdrant_client import QdrantClient  # noqa: E402

from metaembed_rag.index.qdrant import QdrantBackend, qdrant_index  # noqa: E402

QUESTION = "What is the capital of France?"


def _same_nodes(a: list, b: list) -> bool:
    """The same source documents and texts in the same order (node ids are fresh per build)."""
    return [(n.node.ref_doc_id, n.node.get_content()) for n in a] == [
        (n.node.ref_doc_id, n.node.get_content()) for n in b
    ]


def test_vector_store_index_on_qdrant(model, embed, documents) -> None:
    local = MetaEmbedVectorStore(embed, dtype="float32")
    qd = MetaEmbedVectorStore(embed, index=qdrant_index(QdrantClient(":memory:"), "li", model))
    assert isinstance(qd._index.backend, QdrantBackend)
    built = [
        VectorStoreIndex.from_documents(
            documents, storage_context=StorageContext.from_defaults(vector_store=s),
            embed_model=embed,
        )
        for s in (local, qd)
    ]  # fmt: skip
    rerank = MetaEmbedRerank(embed, top_n=2, budget=(8, 16))
    key = next(iter(documents[0].metadata))
    value = documents[0].metadata[key]
    filters = MetadataFilters(
        filters=[MetadataFilter(key=key, value=value, operator=FilterOperator.EQ)]
    )
    for kw in ({}, {"filters": filters}):
        a, b = (i.as_retriever(similarity_top_k=4, **kw).retrieve(QUESTION) for i in built)
        assert a and _same_nodes(a, b)
        assert [n.score for n in a] == pytest.approx([n.score for n in b], abs=1e-4)
        assert [n.node.metadata for n in a] == [n.node.metadata for n in b]
        ra = rerank.postprocess_nodes(a, query_str=QUESTION)
        rb = rerank.postprocess_nodes(b, query_str=QUESTION)
        assert _same_nodes(ra, rb)
    assert b[0].node.ref_doc_id == "doc0"
    qd.delete("doc0")
    assert "doc0" not in {n.node.ref_doc_id for n in built[1].as_retriever().retrieve(QUESTION)}
