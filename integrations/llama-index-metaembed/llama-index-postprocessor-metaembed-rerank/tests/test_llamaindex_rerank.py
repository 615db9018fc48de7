"""MetaEmbedRerank: budgeted MaxSim over any retriever's nodes, its cache and its events."""

from __future__ import annotations

import asyncio
import base64

import pytest
import torch
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import ImageNode, MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.postprocessor.metaembed_rerank import MetaEmbedRerank

from metaembed_rag import maxsim

IDS = [f"t{i}" for i in range(6)]  # one per passage of the `texts` fixture


class _Collect(BaseEventHandler):
    events: list = []  # pydantic copies the default: one list per handler instance

    @classmethod
    def class_name(cls) -> str:
        return "Collect"

    def handle(self, event, **kwargs) -> None:
        self.events.append(event)


def _nodes(texts: list[str]) -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(text=t, id_=i), score=0.1 * k)
        for k, (t, i) in enumerate(zip(texts, IDS, strict=True))
    ]


def test_reranker_is_budgeted_maxsim_and_caches(model, embed, texts) -> None:
    nodes = _nodes(texts)
    rerank = MetaEmbedRerank(embed, top_n=4, budget=(4, 8), batch_size=4, keep_retrieval_score=True)
    out = rerank.postprocess_nodes(nodes, query_str="moons of Mars")
    q = model.encode_queries(["moons of Mars"])
    d = model.encode_documents(
        [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
    )
    ref = maxsim(q, d, (4, 8))[0]
    order = torch.argsort(ref, descending=True, stable=True)[:4].tolist()
    assert [n.node.node_id for n in out] == [IDS[i] for i in order]
    assert [n.score for n in out] == pytest.approx([float(ref[i]) for i in order], abs=1e-4)
    assert out[0].node.metadata["retrieval_score"] == pytest.approx(0.1 * order[0])
    assert "retrieval_score" in out[0].node.excluded_llm_metadata_keys
    assert rerank.num_encoded == len(nodes)
    out2 = rerank.postprocess_nodes(nodes, query_str="moons of Mars")  # all cached now
    assert rerank.num_encoded == len(nodes)
    assert [(n.node.node_id, n.score) for n in out2] == [(n.node.node_id, n.score) for n in out]
    edited = NodeWithScore(node=TextNode(text="Mars has moons.", id_=IDS[0]), score=0.0)
    rerank.postprocess_nodes([edited], query_str="moons of Mars")  # same id, new content
    assert rerank.num_encoded == len(nodes) + 1


def test_cache_entries_own_their_storage_and_are_bounded(embed, texts) -> None:
    one = 64 * 384 * 4
    rerank = MetaEmbedRerank(embed, top_n=2, batch_size=6, cache_mb=3.5 * one / 2**20)
    rerank.postprocess_nodes(_nodes(texts), query_str="capital")
    cached = list(rerank._cache.values())
    assert len(cached) == 3  # the 3.5-document budget keeps the three most recent
    assert all(v.untyped_storage().nbytes() == one for v in cached)  # not views of the batch
    assert rerank._cache_bytes == 3 * one
    off = MetaEmbedRerank(embed, top_n=2, cache_mb=0)
    off.postprocess_nodes(_nodes(texts), query_str="capital")
    off.postprocess_nodes(_nodes(texts), query_str="capital")
    assert off.num_encoded == 2 * len(texts) and not off._cache


def test_reranker_events_and_errors(embed, texts) -> None:
    debug = LlamaDebugHandler()
    rerank = MetaEmbedRerank(embed, top_n=2, callback_manager=CallbackManager([debug]))
    handler = _Collect()
    root = get_dispatcher()
    root.add_event_handler(handler)
    try:
        nodes = [NodeWithScore(node=TextNode(text=t), score=None) for t in texts[:3]]
        out = rerank.postprocess_nodes(nodes, query_bundle=QueryBundle("capital of France"))

        def starts() -> int:
            return sum(e.class_name() == "ReRankStartEvent" for e in handler.events)

        before = starts()
        with pytest.raises(ValueError, match="needs the query"):
            rerank.postprocess_nodes(nodes)
        assert starts() == before == 1  # no ReRankStartEvent for a query that is missing
    finally:
        root.event_handlers.remove(handler)
    assert len(out) == 2
    names = [e.class_name() for e in handler.events]
    assert "ReRankStartEvent" in names and "ReRankEndEvent" in names
    start = next(e for e in handler.events if e.class_name() == "ReRankStartEvent")
    assert start.model_name.startswith("metaembed") and start.top_n == 2
    assert len(debug.get_event_pairs(CBEventType.RERANKING)) == 1
    bad = NodeWithScore(node=ImageNode(image_url="http://127.0.0.1:9/nope.jpg"), score=1.0)
    with pytest.raises(ValueError, match="not reachable"):
        rerank.postprocess_nodes([bad], query_str="a dog")


def test_serialisation_checks_the_model(model, embed) -> None:
    rerank = MetaEmbedRerank(embed, top_n=3, budget=(8, 16))
    data = rerank.to_dict()
    assert data["model_fingerprint"] == model.fingerprint() and data["budget"] == (8, 16)
    again = MetaEmbedRerank.from_dict(data, embed_model=embed)
    assert again.top_n == 3 and again.budget == (8, 16)
    with pytest.raises(ValueError, match="fingerprint"):
        MetaEmbedRerank.from_dict({**data, "model_fingerprint": "0" * 16}, embed_model=embed)
    for name, field in MetaEmbedRerank.model_fields.items():
        if name != "callback_manager":
            assert field.description, name


def test_reranks_any_retriever_in_a_query_engine(model, embed, texts) -> None:
    """A plain VectorStoreIndex (SimpleVectorStore, single vectors) as the retriever; the
    reranker turns its (1,1) ranking into the budgeted MaxSim ranking."""
    docs = [Document(text=t, id_=i) for t, i in zip(texts, IDS, strict=True)]
    index = VectorStoreIndex.from_documents(docs, embed_model=embed)
    retriever = index.as_retriever(similarity_top_k=6)
    rerank = MetaEmbedRerank(embed, top_n=2, budget=(16, 64))
    engine = RetrieverQueryEngine.from_args(
        retriever, llm=MockLLM(max_tokens=8), node_postprocessors=[rerank]
    )
    question = "Which city is the capital of Germany?"
    response = engine.query(question)
    assert response.response == " ".join(["text"] * 8)  # MockLLM answered
    nodes = index.docstore.get_nodes(list(index.index_struct.nodes_dict.values()))
    scores = maxsim(
        model.encode_queries([question]),
        model.encode_documents([n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]),
        (16, 64),
    )[0]
    best = sorted(range(len(nodes)), key=lambda i: -float(scores[i]))[:2]
    assert [n.node.node_id for n in response.source_nodes] == [nodes[i].node_id for i in best]
    assert [n.score for n in response.source_nodes] == pytest.approx(
        [float(scores[i]) for i in best], abs=1e-4
    )
    aresponse = asyncio.run(engine.aquery(question))
    assert [n.node.node_id for n in aresponse.source_nodes] == [nodes[i].node_id for i in best]


def test_image_nodes_by_path_base64_and_url(vlm, vlm_embed, flickr_images) -> None:
    query = flickr_images[4]
    paths = flickr_images[:3]
    nodes = [NodeWithScore(node=ImageNode(image_path=str(paths[0]), id_="path"), score=None)]
    b64 = base64.b64encode(paths[1].read_bytes()).decode()
    nodes.append(NodeWithScore(node=ImageNode(image=b64, id_="b64"), score=None))
    nodes.append(NodeWithScore(node=ImageNode(image_url=paths[2].as_uri(), id_="url"), score=None))
    nodes.append(NodeWithScore(node=TextNode(text="a dog on the grass", id_="text"), score=None))
    rerank = MetaEmbedRerank(vlm_embed, top_n=4, budget=(8, 16))
    out = rerank.postprocess_nodes(
        nodes, query_bundle=QueryBundle(query_str="", image_path=str(query))
    )
    docs = vlm.encode_documents([*paths, "a dog on the grass"])
    scores = maxsim(vlm.encode_queries([query]), docs, (8, 16))[0].tolist()
    want = dict(zip(["path", "b64", "url", "text"], scores, strict=True))
    assert {n.node.node_id: n.score for n in out} == pytest.approx(want, abs=1e-3)
    assert [n.score for n in out] == sorted((n.score for n in out), reverse=True)


def test_reranker_relevance_score_mode(model, embed, texts) -> None:
    """score_mode="relevance": same order, node scores = calibrated relevance of the MaxSim."""
    from metaembed_rag.relevance import relevance_scores

    nodes = _nodes(texts)
    raw = MetaEmbedRerank(embed, top_n=3, budget=(4, 8)).postprocess_nodes(
        nodes, query_str="moons of Mars"
    )
    rel = MetaEmbedRerank(embed, top_n=3, budget=(4, 8), score_mode="relevance").postprocess_nodes(
        nodes, query_str="moons of Mars"
    )
    assert [n.node.node_id for n in rel] == [n.node.node_id for n in raw]
    assert [n.score for n in rel] == pytest.approx(
        relevance_scores(model, [n.score for n in raw], (4, 8))
    )
    assert all(0.0 <= n.score <= 1.0 for n in rel)
