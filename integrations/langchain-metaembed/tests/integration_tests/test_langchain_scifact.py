"""End to end on SciFact documents with the default model: an LCEL RAG chain and a
ContextualCompressionRetriever with the MetaEmbed reranker, their mechanics and whether they
find the documents SciFact judges relevant.

The relevance checks use the SciFact test queries whose relevant document is among the
``NUM_SCIFACT_DOCS`` (200) indexed ones: 9 queries. Measured with the default model
(``max_length=128``, bfloat16 store), the relevant document was in the top 10 for 9/9 queries
at (1,1) and 8/9 at (8,16), in the top 3 for 8/9 at both, and in the top 3 for 8/9 after a
(1,1) recall of 10 reranked at (16,64); every assertion is two queries below what was measured.
The full-corpus quality of the model is in docs/default-model.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from metaembed_rag import maxsim
from metaembed_rag.relevance import relevance_scores

from langchain_metaembed import MetaEmbedReranker, MetaEmbedRetriever

QUERY = "Vitamin D deficiency and the risk of disease"


class _PromptRecorder(BaseCallbackHandler):
    """Keeps the messages every chat model in the chain was called with."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def on_chat_model_start(self, serialized, messages, **kwargs) -> None:  # type: ignore[override]
        self.prompts.extend(m.content for batch in messages for m in batch)


def _format(docs: list[Document]) -> str:
    return "\n\n".join(f"[{d.id}] {d.page_content}" for d in docs)


@pytest.fixture(scope="module")
def judged_queries(scifact_dir: Path, scifact_corpus: list[dict]) -> list[tuple[str, set[str]]]:
    """``(query text, relevant document ids)`` of the SciFact test queries with at least one
    relevant document among the indexed ones."""
    indexed = {d["_id"] for d in scifact_corpus}
    relevant: dict[str, set[str]] = {}
    with (scifact_dir / "qrels" / "test.tsv").open() as f:
        next(f)  # header
        for line in f:
            qid, doc_id, grade = line.rstrip("\n").split("\t")
            if doc_id in indexed and int(grade) > 0:
                relevant.setdefault(qid, set()).add(doc_id)
    with (scifact_dir / "queries.jsonl").open() as f:
        texts = {row["_id"]: row["text"] for row in map(json.loads, f)}
    return [(texts[qid], ids) for qid, ids in sorted(relevant.items())]


def _hits(ranked: list[list[Document]], judged: list[tuple[str, set[str]]], k: int) -> int:
    """Queries with a relevant document in their top ``k``."""
    return sum(
        bool({d.id for d in docs[:k]} & rel) for docs, (_, rel) in zip(ranked, judged, strict=True)
    )


@pytest.mark.parametrize(("budget", "min_top10", "min_top3"), [((1, 1), 7, 6), ((8, 16), 6, 6)])
def test_retriever_finds_the_relevant_documents(
    scifact_store, judged_queries, budget, min_top10: int, min_top3: int
) -> None:
    assert len(judged_queries) == 9, "the first 200 SciFact documents hold 9 judged test queries"
    retriever = MetaEmbedRetriever(vectorstore=scifact_store, k=10, budget=budget)
    ranked = retriever.batch([q for q, _ in judged_queries])
    assert all(len(docs) == 10 for docs in ranked)
    assert _hits(ranked, judged_queries, 10) >= min_top10
    assert _hits(ranked, judged_queries, 3) >= min_top3


def test_lcel_rag_chain(scifact_store, scifact_corpus, scifact_dir: Path) -> None:
    retriever = MetaEmbedRetriever(vectorstore=scifact_store, k=3, budget=(8, 16))
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "Answer from the context only.\n\nContext:\n{context}"),
            ("human", "{question}"),
        ]
    )
    llm = FakeListChatModel(responses=["It depends on the evidence."])
    chain = (
        {"context": retriever | _format, "question": RunnablePassthrough()}
        | prompt
        | llm
        | StrOutputParser()
    )
    recorder = _PromptRecorder()
    answer = chain.invoke(QUERY, config={"callbacks": [recorder]})
    assert answer == "It depends on the evidence."
    expected = retriever.invoke(QUERY)
    assert len(expected) == 3 and len(scifact_store) == len(scifact_corpus)
    system, human = recorder.prompts
    assert human == QUERY
    assert system.endswith(_format(expected))
    # batch over several SciFact test queries
    with (scifact_dir / "queries.jsonl").open() as f:
        queries = [json.loads(next(f))["text"] for _ in range(3)]
    answers = chain.batch(queries)
    assert answers == ["It depends on the evidence."] * 3


def test_contextual_compression_with_reranker(scifact_store, default_embeddings) -> None:
    base = MetaEmbedRetriever(vectorstore=scifact_store, k=10, budget=(1, 1))
    reranker = MetaEmbedReranker(embeddings=default_embeddings, top_n=3, budget=(16, 64))
    compression = ContextualCompressionRetriever(base_compressor=reranker, base_retriever=base)
    out = compression.invoke(QUERY)
    candidates = base.invoke(QUERY)
    assert len(candidates) == 10 and len(out) == 3
    assert {d.id for d in out} <= {d.id for d in candidates}
    # The reranker's scores are exact MaxSim at (16,64) of fresh encodings, best first.
    Q = default_embeddings.encode_queries([QUERY])
    D = default_embeddings.encode_documents([d.page_content for d in candidates])
    expected = maxsim(Q, D, (16, 64))[0]
    order = sorted(range(10), key=lambda i: (-float(expected[i]), i))[:3]
    assert [d.id for d in out] == [candidates[i].id for i in order]
    got = torch.tensor([d.metadata["maxsim_score"] for d in out])
    assert torch.allclose(got, expected[order], atol=1e-5)
    relevance = relevance_scores(default_embeddings.client, got.tolist(), (16, 64))
    assert [d.metadata["relevance_score"] for d in out] == pytest.approx(relevance)
    # First-stage scores stay in the copies' metadata next to the rerank score.
    assert all(d.metadata["budget"] == "1,1" and "score" in d.metadata for d in out)
    assert [d.id for d in compression.invoke(QUERY)] == [d.id for d in out]


def test_reranked_pipeline_finds_the_relevant_documents(scifact_store, judged_queries) -> None:
    """Recall 10 at (1,1), rerank to 3 at (16,64) with the store's vectors (no re-encoding)."""
    base = MetaEmbedRetriever(vectorstore=scifact_store, k=10, budget=(1, 1))
    reranker = MetaEmbedReranker(vectorstore=scifact_store, top_n=3, budget=(16, 64))
    compression = ContextualCompressionRetriever(base_compressor=reranker, base_retriever=base)
    ranked = compression.batch([q for q, _ in judged_queries])
    assert all(len(docs) == 3 for docs in ranked)
    assert _hits(ranked, judged_queries, 3) >= 6
