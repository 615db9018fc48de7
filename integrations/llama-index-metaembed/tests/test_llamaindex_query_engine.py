"""RetrieverQueryEngine with MetaEmbedRetriever and MetaEmbedRerank (node_postprocessors) and a
mock LLM, over a TwoStageRetriever and over a VectorStoreIndex's MetaEmbedVectorStore."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core import StorageContext, VectorStoreIndex, get_response_synthesizer
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.postprocessor.metaembed_rerank import MetaEmbedRerank
from llama_index.retrievers.metaembed import MetaEmbedRetriever
from llama_index.vector_stores.metaembed import MetaEmbedVectorStore

from metaembed_rag import TwoStageRetriever

QUESTION = "What is the capital of France?"


def test_query_engine_with_mock_llm(model, embed, texts) -> None:
    ts = TwoStageRetriever.create(model, dtype="float32")
    ts.add_documents(texts, ids=[f"t{i}" for i in range(len(texts))])
    debug = LlamaDebugHandler()
    cm = CallbackManager([debug])
    retriever = MetaEmbedRetriever(ts, similarity_top_k=5, callback_manager=cm)
    rerank = MetaEmbedRerank(embed, top_n=2, budget=(8, 16), callback_manager=cm)
    engine = RetrieverQueryEngine(
        retriever=retriever,
        response_synthesizer=get_response_synthesizer(
            llm=MockLLM(max_tokens=8), callback_manager=cm
        ),
        node_postprocessors=[rerank],
        callback_manager=cm,
    )
    response = engine.query(QUESTION)
    assert response.response == " ".join(["text"] * 8)
    retrieved = retriever.retrieve(QUESTION)
    assert len(retrieved) == 5
    want = rerank.postprocess_nodes(retrieved, query_str=QUESTION)
    assert [n.node.node_id for n in response.source_nodes] == [n.node.node_id for n in want]
    assert response.source_nodes[0].node.node_id == "t0"  # the Paris passage
    assert debug.get_event_pairs(CBEventType.RERANKING)
    assert debug.get_event_pairs(CBEventType.RETRIEVE)
    aresponse = asyncio.run(engine.aquery(QUESTION))
    assert [n.node.node_id for n in aresponse.source_nodes] == [n.node.node_id for n in want]
    assert [n.score for n in aresponse.source_nodes] == pytest.approx([n.score for n in want])


def test_query_engine_over_the_vector_store(embed, documents) -> None:
    store = MetaEmbedVectorStore(embed, dtype="float32", rerank_budget=(4, 8))
    index = VectorStoreIndex.from_documents(
        documents,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed,
    )
    rerank = MetaEmbedRerank(embed, top_n=2, budget=(16, 64))
    engine = RetrieverQueryEngine.from_args(
        MetaEmbedRetriever.from_vector_store(store, similarity_top_k=4),
        llm=MockLLM(max_tokens=4),
        node_postprocessors=[rerank],
    )
    response = engine.query(QUESTION)
    assert response.response == " ".join(["text"] * 4)
    assert response.source_nodes[0].node.ref_doc_id == "doc0"  # the original Document's node
    direct = index.as_retriever(similarity_top_k=4).retrieve(QUESTION)  # store default (4,8)
    want = rerank.postprocess_nodes(direct, query_str=QUESTION)
    assert [n.node.node_id for n in response.source_nodes] == [n.node.node_id for n in want]
    assert [n.score for n in response.source_nodes] == pytest.approx([n.score for n in want])
