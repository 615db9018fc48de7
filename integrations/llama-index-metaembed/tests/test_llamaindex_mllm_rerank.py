"""MLLMRerank (a tiny random causal LM) as a node postprocessor inside a RetrieverQueryEngine."""

from __future__ import annotations

import pytest
from llama_index.core import get_response_synthesizer
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.postprocessor.metaembed_rerank import MLLMRerank
from llama_index.retrievers.metaembed import MetaEmbedRetriever

from metaembed_rag import TwoStageRetriever
from metaembed_rag.rerank import MLLMReranker

QUESTION = "What is the capital of France?"


def test_mllm_rerank_in_a_query_engine(model, texts, tiny_lm_path) -> None:
    ts = TwoStageRetriever.create(model, dtype="float32")
    ts.add_documents(texts, ids=[f"t{i}" for i in range(len(texts))])
    retriever = MetaEmbedRetriever(ts, similarity_top_k=4)
    reranker = MLLMReranker.from_pretrained(tiny_lm_path, device="cpu", batch_size=2)
    post = MLLMRerank(reranker, top_n=2)
    engine = RetrieverQueryEngine(
        retriever=retriever,
        response_synthesizer=get_response_synthesizer(llm=MockLLM(max_tokens=4)),
        node_postprocessors=[post],
    )
    response = engine.query(QUESTION)
    retrieved = retriever.retrieve(QUESTION)
    probs = reranker.score(QUESTION, [n.node.get_content(metadata_mode="embed") for n in retrieved])
    order = sorted(range(len(probs)), key=lambda i: (-probs[i], i))[:2]
    assert [n.node.node_id for n in response.source_nodes] == [
        retrieved[i].node.node_id for i in order
    ]
    assert [n.score for n in response.source_nodes] == pytest.approx(
        [probs[i] for i in order], abs=1e-6
    )
    # fusion with the retriever's score
    fused = MLLMRerank(MLLMReranker(reranker.model, reranker.tokenizer, fusion_weight=0.5), top_n=4)
    out = fused.postprocess_nodes(retrieved, query_str=QUESTION)
    first = [n.score for n in retrieved]
    lo, hi = min(first), max(first)
    want = {
        n.node.node_id: 0.5 * p + 0.5 * (n.score - lo) / (hi - lo)
        for n, p in zip(retrieved, probs, strict=True)
    }
    assert {n.node.node_id: n.score for n in out} == pytest.approx(want, abs=1e-6)


def test_retriever_with_a_scorer(model, texts) -> None:
    ts = TwoStageRetriever.create(model, dtype="float32")
    ts.add_documents(texts, ids=[f"t{i}" for i in range(len(texts))])
    pooled = MetaEmbedRetriever(ts, similarity_top_k=3, scorer="pooled").retrieve(QUESTION)
    direct = ts.search(QUESTION, 3, scorer="pooled")
    assert [n.node.node_id for n in pooled] == [h.id for h in direct]
    assert [n.score for n in pooled] == pytest.approx([h.score for h in direct])
