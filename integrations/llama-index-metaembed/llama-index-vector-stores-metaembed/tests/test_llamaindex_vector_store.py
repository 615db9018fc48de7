"""MetaEmbedVectorStore under llama-index-core's VectorStoreIndex (default model)."""

from __future__ import annotations

import asyncio
import logging

import pytest
import torch
from llama_index.core import StorageContext, VectorStoreIndex, load_index_from_storage
from llama_index.core.schema import MetadataMode, QueryBundle, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)
from llama_index.embeddings.metaembed import MetaEmbedEmbedding
from llama_index.vector_stores.metaembed import MetaEmbedVectorStore

from metaembed_rag import maxsim


def _build(embed, documents, **store_kwargs):
    store = MetaEmbedVectorStore(embed, dtype="float32", **store_kwargs)
    ctx = StorageContext.from_defaults(vector_store=store)
    index = VectorStoreIndex.from_documents(documents, storage_context=ctx, embed_model=embed)
    return store, index


def _exhaustive(model, store, query: str, budget, k: int) -> list[tuple[str, float]]:
    """Reference ranking: exact MaxSim of freshly encoded node contents."""
    nodes = store.get_nodes()
    docs = model.encode_documents([n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes])
    scores = maxsim(model.encode_queries([query]), docs, budget)[0]
    order = sorted(range(len(nodes)), key=lambda i: -float(scores[i]))[:k]
    return [(nodes[i].node_id, float(scores[i])) for i in order]


def test_vector_store_index_runs_budgeted_maxsim(model, embed, documents) -> None:
    store, index = _build(embed, documents)
    assert store is index.vector_store  # not replaced by a SimpleVectorStore
    assert store.num_nodes == len(documents)
    for budget in [(1, 1), (8, 16), (16, 64)]:
        retriever = index.as_retriever(similarity_top_k=3, vector_store_kwargs={"budget": budget})
        got = [
            (n.node.node_id, n.score) for n in retriever.retrieve("What is the capital of France?")
        ]
        want = _exhaustive(model, store, "What is the capital of France?", budget, 3)
        assert [i for i, _ in got] == [i for i, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-4)
    # the node text and the node's own metadata come back intact
    top = index.as_retriever(similarity_top_k=1).retrieve("capital of France")[0].node
    assert isinstance(top, TextNode) and top.ref_doc_id in {d.doc_id for d in documents}
    assert set(top.metadata) == {"topic", "year"}


def test_store_reuses_the_embedding_vectors(model, embed, documents) -> None:
    store, _ = _build(embed, documents)
    node = store.get_nodes()[0]
    stored = store.get_multi_vectors(node.node_id)
    fresh = model.encode_documents([node.get_content(metadata_mode=MetadataMode.EMBED)])[0]
    assert stored.shape == (64, 384)
    assert torch.allclose(stored, fresh, atol=1e-5)
    assert embed.cache_stats()["document_entries"] == 0  # every one was taken by the store


def test_budget_kwargs_are_checked(embed, documents) -> None:
    _, index = _build(embed, documents)
    with pytest.raises(ValueError, match="Valid budgets"):
        index.as_retriever(vector_store_kwargs={"budget": (3, 3)}).retrieve("moon")
    with pytest.raises(TypeError, match="Unknown MetaEmbedVectorStore query option"):
        index.as_retriever(vector_store_kwargs={"budgett": (8, 16)}).retrieve("moon")


def test_metadata_filters(embed, documents) -> None:
    store, index = _build(embed, documents)
    geo = MetadataFilters(filters=[MetadataFilter(key="topic", value="geo")])
    got = index.as_retriever(similarity_top_k=6, filters=geo).retrieve("capital city")
    assert sorted(n.node.ref_doc_id for n in got) == ["doc0", "doc4"]
    recent_or_space = MetadataFilters(
        filters=[
            MetadataFilter(key="year", value=2019, operator=FilterOperator.GT),
            MetadataFilter(key="topic", value="space"),
        ],
        condition=FilterCondition.OR,
    )
    got = index.as_retriever(similarity_top_k=6, filters=recent_or_space).retrieve("moons")
    assert sorted(n.node.ref_doc_id for n in got) == ["doc1", "doc4", "doc5"]
    not_geo = MetadataFilters(filters=[geo], condition=FilterCondition.NOT)
    assert len(store.get_nodes(filters=not_geo)) == 4
    with pytest.raises(ValueError, match="not supported"):
        store.get_nodes(
            filters=MetadataFilters(
                filters=[
                    MetadataFilter(key="topic", value="ge", operator=FilterOperator.TEXT_MATCH)
                ]
            )
        )


def test_delete_really_removes(embed, documents) -> None:
    store, index = _build(embed, documents)
    index.delete_ref_doc("doc0")
    assert store.num_nodes == len(documents) - 1
    assert all(n.ref_doc_id != "doc0" for n in store.get_nodes())
    got = index.as_retriever(similarity_top_k=10).retrieve("Paris is the capital of France")
    assert "doc0" not in {n.node.ref_doc_id for n in got} and len(got) == len(documents) - 1
    doc1_nodes = [n.node_id for n in store.get_nodes() if n.ref_doc_id == "doc1"]
    store.delete_nodes(node_ids=doc1_nodes)
    store.delete_nodes(
        filters=MetadataFilters(filters=[MetadataFilter(key="topic", value="health")])
    )
    assert sorted(n.ref_doc_id for n in store.get_nodes()) == ["doc3", "doc4", "doc5"]
    store.clear()
    assert store.num_nodes == 0 and store.get_nodes() == []
    assert index.as_retriever().retrieve("anything") == []


def test_persist_reload_same_results(embed, documents, tmp_path) -> None:
    store, index = _build(embed, documents, rerank_budget=(8, 16))
    queries = ["capital of Germany", "moons of Mars", "diabetes"]
    kwargs = {"vector_store_kwargs": {"budget": (4, 8), "fetch_k": 2}}
    before = [
        [
            (n.node.node_id, n.score)
            for n in index.as_retriever(similarity_top_k=3, **kwargs).retrieve(q)
        ]
        for q in queries
    ]
    index.storage_context.persist(persist_dir=str(tmp_path))
    assert (tmp_path / "default__vector_store.json").is_file()
    loaded = MetaEmbedVectorStore.from_persist_dir(str(tmp_path), embed_model=embed)
    assert loaded.rerank_budget == (8, 16) and loaded.num_nodes == len(documents)
    ctx = StorageContext.from_defaults(persist_dir=str(tmp_path), vector_store=loaded)
    index2 = load_index_from_storage(ctx, embed_model=embed)
    after = [
        [
            (n.node.node_id, n.score)
            for n in index2.as_retriever(similarity_top_k=3, **kwargs).retrieve(q)
        ]
        for q in queries
    ]
    assert after == before
    # deletes after reload persist too
    index2.delete_ref_doc("doc4")
    index2.storage_context.persist(persist_dir=str(tmp_path))
    again = MetaEmbedVectorStore.from_persist_dir(str(tmp_path), embed_model=embed)
    assert sorted(n.ref_doc_id for n in again.get_nodes()) == [
        "doc0",
        "doc1",
        "doc2",
        "doc3",
        "doc5",
    ]


def test_async_paths_match_sync(embed, documents) -> None:
    store = MetaEmbedVectorStore(embed, dtype="float32")
    ctx = StorageContext.from_defaults(vector_store=store)
    index = VectorStoreIndex.from_documents(
        documents, storage_context=ctx, embed_model=embed, use_async=True
    )
    assert store.num_nodes == len(documents)
    retriever = index.as_retriever(similarity_top_k=3, vector_store_kwargs={"budget": (8, 16)})
    sync = [(n.node.node_id, n.score) for n in retriever.retrieve("orbit of the Moon")]
    asyn = [
        (n.node.node_id, n.score) for n in asyncio.run(retriever.aretrieve("orbit of the Moon"))
    ]
    assert asyn == sync
    ids = [n.node_id for n in store.get_nodes()][:2]
    asyncio.run(store.adelete_nodes(node_ids=ids))
    assert store.num_nodes == len(documents) - 2
    asyncio.run(store.adelete("doc5"))
    assert "doc5" not in {n.ref_doc_id for n in asyncio.run(store.aget_nodes())}


def test_query_text_without_embedding(model, embed, documents) -> None:
    store, _ = _build(embed, documents, is_embedding_query=False)
    res = store.query(VectorStoreQuery(query_str="Phobos and Deimos", similarity_top_k=2))
    want = _exhaustive(model, store, "Phobos and Deimos", None, 2)
    assert res.ids == [i for i, _ in want]
    with pytest.raises(ValueError, match="needs the query itself"):
        store.query(VectorStoreQuery(similarity_top_k=2))


def test_query_embedding_is_never_silently_replaced(model, embed, documents) -> None:
    store, index = _build(embed, documents)
    foreign = [0.1] * 384  # e.g. another embed model's vector
    with pytest.raises(ValueError, match="was not made by this store's MetaEmbedEmbedding"):
        store.query(
            VectorStoreQuery(query_embedding=foreign, query_str="moons", similarity_top_k=2)
        )
    with pytest.raises(ValueError, match="was not made by this store's MetaEmbedEmbedding"):
        store.query(VectorStoreQuery(query_embedding=foreign, similarity_top_k=2))
    # a query embedding that left the cache is re-encoded from query_str and checked: same
    q = "Phobos and Deimos"
    emb = embed.get_query_embedding(q)
    embed.clear_vector_cache()
    res = store.query(VectorStoreQuery(query_embedding=emb, query_str=q, similarity_top_k=2))
    assert res.ids == [i for i, _ in _exhaustive(model, store, q, None, 2)]


def test_hyde_custom_embedding_strs_reach_the_store(model, embed, documents) -> None:
    """VectorStoreIndex embeds custom_embedding_strs with get_agg_embedding_from_queries; the
    store searches with the aggregate of their multi-vectors, not with query_str."""
    store, index = _build(embed, documents)
    strs = ["Which planet has the moons Phobos and Deimos?", "Cats purr when content."]
    bundle = QueryBundle(query_str="unrelated text", custom_embedding_strs=strs)
    got = index.as_retriever(similarity_top_k=6).retrieve(bundle)
    nodes = store.get_nodes()
    docs = model.encode_documents([n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes])
    q = model.encode_queries(strs).mean(0, keepdim=True)
    scores = maxsim(q, docs, None)[0]
    order = sorted(range(len(nodes)), key=lambda i: -float(scores[i]))
    assert [n.node.node_id for n in got] == [nodes[i].node_id for i in order]
    assert [n.score for n in got] == pytest.approx([float(scores[i]) for i in order], abs=1e-3)
    agot = asyncio.run(index.as_retriever(similarity_top_k=6).aretrieve(bundle))
    assert [n.node.node_id for n in agot] == [n.node.node_id for n in got]


def test_foreign_and_evicted_node_embeddings_warn(model, embed, caplog) -> None:
    store = MetaEmbedVectorStore(embed, dtype="float32")
    foreign = [TextNode(text=t, id_=f"f{i}", embedding=[0.5] * 384) for i, t in enumerate("ab")]
    with caplog.at_level(logging.WARNING, logger="llama_index.vector_stores.metaembed.base"):
        store.add(foreign)
    assert "2 of 2 nodes" in caplog.text and "did not make" in caplog.text
    assert torch.allclose(
        store.get_multi_vectors("f0"), model.encode_documents(["a"])[0], atol=1e-5
    )
    caplog.clear()
    small = MetaEmbedEmbedding(model=model, vector_cache_mb=64 * 384 * 4 * 1.5 / 2**20)
    small_store = MetaEmbedVectorStore(small, dtype="float32")
    texts = ["one", "two", "three"]
    nodes = [
        TextNode(text=t, id_=t, embedding=e)
        for t, e in zip(texts, small.get_text_embedding_batch(texts), strict=True)
    ]
    with caplog.at_level(logging.WARNING, logger="llama_index.vector_stores.metaembed.base"):
        small_store.add(nodes)
    assert "2 of 3 nodes were encoded twice" in caplog.text and "vector_cache_mb" in caplog.text
    assert small.cache_stats()["document_entries"] == 0


def test_mmr_query_mode_matches_the_core_mmr(model, embed, documents) -> None:
    """VectorStoreQueryMode.MMR over the stored vectors equals the core's mmr_search (checked
    against a brute-force reference in tests/test_diversity.py); mmr_threshold is lambda_mult,
    mmr_prefetch_k the candidates; lambda 1 is the plain ranking."""
    from metaembed_rag.index import SearchParams, mmr_search

    store, index = _build(embed, documents)
    question = "Which city is a capital?"
    q = model.encode_queries([question])[0]
    expected = mmr_search(
        store.client, q, SearchParams(k=3, fetch_k=5, rerank_budget=(16, 64)), lambda_mult=0.2
    )
    retriever = index.as_retriever(
        similarity_top_k=3,
        vector_store_query_mode="mmr",
        vector_store_kwargs={"mmr_threshold": 0.2, "mmr_prefetch_k": 5},
    )
    got = retriever.retrieve(question)
    assert [n.node.node_id for n in got] == [h.id for h in expected]  # index ids = node ids
    assert [n.score for n in got] == pytest.approx([h.score for h in expected], abs=1e-4)
    plain = index.as_retriever(similarity_top_k=3).retrieve(question)
    same = index.as_retriever(
        similarity_top_k=3,
        vector_store_query_mode="mmr",
        vector_store_kwargs={"mmr_threshold": 1.0},
    ).retrieve(question)
    assert [n.node.node_id for n in same] == [n.node.node_id for n in plain]
    query = VectorStoreQuery(
        query_str=question,
        similarity_top_k=2,
        mode="mmr",
        mmr_threshold=0.2,
        filters=MetadataFilters(filters=[MetadataFilter(key="topic", value="space")]),
    )
    spaced = store.query(query, fetch_k=5)
    assert len(spaced.nodes) == 2 and {n.metadata["topic"] for n in spaced.nodes} == {"space"}
    with pytest.raises(ValueError, match="lambda_mult"):
        store.query(VectorStoreQuery(query_str=question, mode="mmr", mmr_threshold=3.0))
    with pytest.raises(ValueError, match="default, MMR and hybrid query modes"):
        store.query(VectorStoreQuery(query_str=question, mode="sparse"))


def test_relevance_score_mode(model, embed, documents) -> None:
    """score_mode="relevance": similarities are the model's calibrated relevance of the raw
    MaxSim (same order); the answer stands several times above unrelated passages, which a 0.5 cutoff
    (SimilarityPostprocessor) drops."""
    from llama_index.core.postprocessor import SimilarityPostprocessor

    from metaembed_rag.relevance import relevance_scores

    store, index = _build(embed, documents)
    question = "What is the capital of Germany?"
    raw = index.as_retriever(similarity_top_k=6).retrieve(question)
    rel = index.as_retriever(
        similarity_top_k=6, vector_store_kwargs={"score_mode": "relevance"}
    ).retrieve(question)
    assert [n.node.node_id for n in rel] == [n.node.node_id for n in raw]
    expected = relevance_scores(model, [n.score for n in raw], (16, 64))
    assert [n.score for n in rel] == pytest.approx(expected)
    by_text = {n.node.get_content(): n.score for n in rel}
    answer = by_text["Berlin is the capital of Germany."]
    unrelated = [s for t, s in by_text.items() if "Cats" in t or "Moon" in t or "Insulin" in t]
    assert rel[0].node.get_content() == "Berlin is the capital of Germany."
    assert max(unrelated) < 0.1 and answer > 3 * max(unrelated), (answer, unrelated)
    kept = SimilarityPostprocessor(similarity_cutoff=0.5).postprocess_nodes(rel)
    assert not any("Cats" in n.node.get_content() or "Moon" in n.node.get_content() for n in kept)
    with pytest.raises(ValueError, match="score_mode"):
        store.query(VectorStoreQuery(query_str=question), score_mode="bad")
