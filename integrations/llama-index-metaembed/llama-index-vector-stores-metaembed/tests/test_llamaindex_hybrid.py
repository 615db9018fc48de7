"""MetaEmbedVectorStore under VectorStoreQueryMode.HYBRID: ``alpha`` is the multi-vector share
of the weighted fusion, no ``alpha`` is reciprocal rank fusion (the core's fused search)."""

from __future__ import annotations

import pytest
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode
from llama_index.vector_stores.metaembed import MetaEmbedVectorStore

QUESTION = "What is the capital of France?"


@pytest.fixture()
def built(embed, documents):
    store = MetaEmbedVectorStore(embed, dtype="float32")
    ctx = StorageContext.from_defaults(vector_store=store)
    index = VectorStoreIndex.from_documents(documents, storage_context=ctx, embed_model=embed)
    return store, index


def _query(store, alpha, k=3):
    q = VectorStoreQuery(query_str=QUESTION, similarity_top_k=k, mode=VectorStoreQueryMode.HYBRID,
                         alpha=alpha)  # fmt: skip
    return store.query(q)


def test_hybrid_modes_match_the_core_search(built, model) -> None:
    store, _ = built
    n = store.num_nodes
    q = model.encode_queries([QUESTION])
    for alpha, fusion in ((None, "rrf"), (0.3, "weighted")):
        got = _query(store, alpha)
        weight = None if alpha is None else alpha
        core = store._index.search(q, 3, texts=[QUESTION], hybrid=fusion, hybrid_weight=weight)[0]
        assert got.ids == [h.id for h in core]
        assert got.similarities == pytest.approx([h.score for h in core])
    dense = store.query(VectorStoreQuery(query_str=QUESTION, similarity_top_k=n,
                                         query_embedding=None))  # fmt: skip
    assert _query(store, 1.0, k=n).ids[:3] == dense.ids[:3]


def test_retriever_in_hybrid_mode_and_errors(built) -> None:
    store, index = built
    nodes = index.as_retriever(similarity_top_k=2, vector_store_query_mode="hybrid",
                               alpha=0.0).retrieve(QUESTION)  # fmt: skip
    assert [n.node.node_id for n in nodes] == _query(store, 0.0, k=2).ids
    with pytest.raises(ValueError, match="needs query_str"):
        store.query(VectorStoreQuery(query_embedding=[0.0] * 4, mode=VectorStoreQueryMode.HYBRID))
    with pytest.raises(ValueError, match="default, MMR and hybrid query modes"):
        store.query(VectorStoreQuery(query_str="x", mode=VectorStoreQueryMode.SPARSE))
