"""MetaEmbedRetriever over a TwoStageRetriever and over a MetaEmbedVectorStore (default model)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.schema import ImageNode, QueryBundle, TextNode
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters
from llama_index.retrievers.metaembed import MetaEmbedRetriever, hit_to_node
from llama_index.vector_stores.metaembed import MetaEmbedVectorStore

from metaembed_rag import Hit, TwoStageRetriever, maxsim

IDS = [f"t{i}" for i in range(6)]  # one per passage of the `texts` fixture
METAS = [{"n": i, "even": i % 2 == 0} for i in range(6)]


@pytest.fixture(scope="module")
def two_stage(model, texts) -> TwoStageRetriever:
    ts = TwoStageRetriever.create(model, dtype="float32")
    ts.add_documents(texts, ids=IDS, metadatas=METAS)
    return ts


def _pairs(nodes) -> list[tuple[str, float]]:
    return [(n.node.node_id, n.score) for n in nodes]


def test_retriever_equals_core_search(two_stage, texts) -> None:
    for budgets in [((1, 1), (16, 64)), ((2, 4), (8, 16))]:
        r = MetaEmbedRetriever(
            two_stage, similarity_top_k=3, fetch_k=2, recall_budget=budgets[0],
            rerank_budget=budgets[1],
        )  # fmt: skip
        got = r.retrieve("Which city is the capital of Germany?")
        want = two_stage.search(
            "Which city is the capital of Germany?", k=3, fetch_k=2,
            recall_budget=budgets[0], rerank_budget=budgets[1],
        )  # fmt: skip
        assert _pairs(got) == [(h.id, h.score) for h in want]
        assert got[0].node.text == texts[IDS.index(want[0].id)]
        assert isinstance(got[0].node, TextNode)


def test_retriever_filters_async_and_reassignment(two_stage) -> None:
    filters = MetadataFilters(
        filters=[MetadataFilter(key="n", value=3, operator=FilterOperator.GTE)]
    )
    r = MetaEmbedRetriever(two_stage, similarity_top_k=6, filters=filters)
    got = r.retrieve("capital")
    assert sorted(n.node.node_id for n in got) == ["t3", "t4", "t5"]
    assert got[0].node.metadata["n"] >= 3
    asyn = asyncio.run(r.aretrieve("capital"))
    assert _pairs(asyn) == _pairs(got)
    r.filters = MetadataFilters(
        filters=[MetadataFilter(key="n", value=[0, 2, 4], operator=FilterOperator.IN)]
    )
    assert sorted(n.node.node_id for n in r.retrieve("capital")) == ["t0", "t2", "t4"]
    r.filters = None
    assert len(r.retrieve("capital")) == 6
    with pytest.raises(ValueError, match="list-element index"):  # checked on assignment
        r.filters = MetadataFilters(
            filters=[MetadataFilter(key="n", value=1, operator=FilterOperator.CONTAINS)]
        )
    with pytest.raises(ValueError, match="Valid budgets"):
        MetaEmbedRetriever(two_stage, rerank_budget=(5, 5))


def test_hyde_strings_are_aggregated(model, two_stage, texts) -> None:
    strs = ["Phobos and Deimos orbit a planet.", "Which planet has two moons?"]
    r = MetaEmbedRetriever(two_stage, similarity_top_k=6, fetch_k=6)
    got = r.retrieve(QueryBundle(query_str="ignored for retrieval", custom_embedding_strs=strs))
    q = model.encode_queries(strs).mean(0, keepdim=True)
    scores = maxsim(q, model.encode_documents(texts), None)[0]
    order = sorted(range(len(texts)), key=lambda i: -float(scores[i]))
    assert [n.node.node_id for n in got] == [IDS[i] for i in order]
    assert [n.score for n in got] == pytest.approx([float(scores[i]) for i in order], abs=1e-3)


def _store_index(embed, documents, **store_kwargs):
    store = MetaEmbedVectorStore(embed, dtype="float32", **store_kwargs)
    index = VectorStoreIndex.from_documents(
        documents,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed,
    )
    return store, index


def test_from_vector_store_uses_the_store_settings(embed, documents) -> None:
    store, index = _store_index(
        embed, documents, fetch_k=3, recall_budget=(2, 4), rerank_budget=(8, 16), mode="exhaustive"
    )
    r = MetaEmbedRetriever.from_vector_store(store, similarity_top_k=4)
    assert r.vector_store is store and r.fetch_k == 3 and r.mode == "exhaustive"
    assert r.recall_budget.as_tuple() == (2, 4) and r.rerank_budget.as_tuple() == (8, 16)
    got = r.retrieve("capital of Germany")
    want = index.as_retriever(similarity_top_k=4).retrieve("capital of Germany")
    assert _pairs(got) == _pairs(want)  # same search as the store's own query path
    assert got[0].node.ref_doc_id == "doc4" and got[0].node.metadata["topic"] == "geo"
    override = MetaEmbedRetriever.from_vector_store(store, rerank_budget=(1, 1), mode="two_stage")
    assert override.rerank_budget.as_tuple() == (1, 1) and override.fetch_k == 3
    lists = MetaEmbedRetriever.from_vector_store(
        store,
        filters=MetadataFilters(filters=[MetadataFilter(key="topic", value="space")]),
    )
    assert sorted(n.node.ref_doc_id for n in lists.retrieve("moons")) == ["doc1", "doc5"]
    store.add([TextNode(text="Rome is the capital of Italy.", id_="rome")])
    assert "rome" in [n.node.node_id for n in r.retrieve("capital of Italy")]  # shared index


def test_from_vector_store_searches_under_the_store_lock(embed, documents) -> None:
    store, _ = _store_index(embed, documents)
    r = MetaEmbedRetriever.from_vector_store(store, similarity_top_k=2)
    r.retrieve("warm-up")
    held = threading.Event()

    def hold() -> None:
        with store.lock:
            held.set()
            time.sleep(0.6)

    t = threading.Thread(target=hold)
    t.start()
    held.wait()
    start = time.perf_counter()
    r.retrieve("capital of France")
    waited = time.perf_counter() - start
    t.join()
    assert waited >= 0.4  # the search waited for the writer


def test_hits_become_the_right_node_types() -> None:
    text = hit_to_node(Hit("d1", 1.0, "some text", {"lang": "en"}))
    assert isinstance(text, TextNode) and not isinstance(text, ImageNode)
    assert text.text == "some text" and text.metadata == {"lang": "en"}
    image = hit_to_node(Hit("img", 2.0, None, {"image": "photos/a.jpg", "type": "image"}))
    assert isinstance(image, ImageNode) and image.image_path == "photos/a.jpg"
    bare = hit_to_node(Hit("img2", 2.0, None, {}))
    assert isinstance(bare, ImageNode) and bare.node_id == "img2"
    custom = hit_to_node(Hit("img3", 2.0, "a caption", {"file": "b.png"}), image_key="file")
    assert isinstance(custom, ImageNode) and custom.image_path == "b.png"
    assert custom.text == "a caption"


def test_relevance_score_mode(model, two_stage, embed, documents) -> None:
    """score_mode="relevance": the same nodes, scored by the model's calibrated relevance of the
    raw MaxSim - over a TwoStageRetriever and over a vector store."""
    from metaembed_rag.relevance import relevance_scores

    question = "Which city is the capital of Germany?"
    raw = MetaEmbedRetriever(two_stage, similarity_top_k=4, rerank_budget=(8, 16))
    rel = MetaEmbedRetriever(
        two_stage, similarity_top_k=4, rerank_budget=(8, 16), score_mode="relevance"
    )
    got, want = rel.retrieve(question), raw.retrieve(question)
    assert [n.node.node_id for n in got] == [n.node.node_id for n in want]
    expected = relevance_scores(model, [n.score for n in want], (8, 16))
    assert [n.score for n in got] == pytest.approx(expected)
    store = MetaEmbedVectorStore(embed, dtype="float32")
    ctx = StorageContext.from_defaults(vector_store=store)
    VectorStoreIndex.from_documents(documents, storage_context=ctx, embed_model=embed)
    plain = MetaEmbedRetriever.from_vector_store(store, similarity_top_k=3).retrieve(question)
    scored = MetaEmbedRetriever.from_vector_store(
        store, similarity_top_k=3, score_mode="relevance"
    ).retrieve(question)
    assert [n.node.node_id for n in scored] == [n.node.node_id for n in plain]
    assert [n.score for n in scored] == pytest.approx(
        relevance_scores(model, [n.score for n in plain], (16, 64))
    )
    with pytest.raises(ValueError, match="score_mode"):
        MetaEmbedRetriever(two_stage, score_mode="cosine")  # type: ignore[arg-type]
