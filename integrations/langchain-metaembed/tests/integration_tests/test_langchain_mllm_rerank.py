"""MLLMRerankCompressor (a tiny random causal LM) in a ContextualCompressionRetriever, and the
MaxSim reranker / store with another scorer."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from metaembed_rag.rerank import MLLMReranker
from metaembed_rag.scorers import PooledDotScorer

from langchain_metaembed import (
    MetaEmbedReranker,
    MetaEmbedRetriever,
    MetaEmbedVectorStore,
    MLLMRerankCompressor,
)

TEXTS = [
    "Paris is the capital of France.",
    "Cats purr when they are content.",
    "Berlin is the capital of Germany.",
    "The Seine flows through Paris.",
    "Photosynthesis makes sugar from light.",
]
QUERY = "What is the capital of France?"


def _tiny_models():
    path = Path(__file__).resolve().parents[4] / "tests" / "tiny_models.py"
    name = "metaembed_core_tests_tiny_models"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return sys.modules[name]


@pytest.fixture(scope="module")
def store(default_embeddings) -> MetaEmbedVectorStore:
    s = MetaEmbedVectorStore(default_embeddings, index_kwargs={"dtype": "float32"})
    s.add_documents(
        [Document(page_content=t) for t in TEXTS], ids=[f"d{i}" for i in range(len(TEXTS))]
    )
    return s


def test_mllm_compressor_in_contextual_compression(store, tmp_path) -> None:
    lm = _tiny_models().build_tiny_causal_lm(tmp_path / "lm")
    reranker = MLLMReranker.from_pretrained(lm, device="cpu", batch_size=2)
    base = MetaEmbedRetriever(vectorstore=store, k=4)
    compression = ContextualCompressionRetriever(
        base_compressor=MLLMRerankCompressor(reranker=reranker, top_n=2), base_retriever=base
    )
    out = compression.invoke(QUERY)
    candidates = base.invoke(QUERY)
    probs = reranker.score(QUERY, [d.page_content for d in candidates])
    order = sorted(range(4), key=lambda i: (-probs[i], i))[:2]
    assert [d.id for d in out] == [candidates[i].id for i in order]
    assert [d.metadata["relevance_score"] for d in out] == pytest.approx(
        [probs[i] for i in order], abs=1e-6
    )
    assert all("relevance_score" not in d.metadata for d in candidates)


def test_reranker_and_store_with_pooled_scorer(store, default_embeddings) -> None:
    docs = [Document(page_content=t) for t in TEXTS]
    ranked = MetaEmbedReranker(embeddings=default_embeddings, top_n=5, scorer="pooled").rerank(
        docs, QUERY
    )
    q = default_embeddings.encode_queries([QUERY])
    d = default_embeddings.encode_documents(TEXTS)
    want = PooledDotScorer().score(q, d, (16, 64))[0].tolist()
    assert [i for i, _ in ranked] == sorted(range(5), key=lambda i: (-want[i], i))
    assert [s for _, s in ranked] == pytest.approx(sorted(want, reverse=True), abs=1e-5)
    hits = store.similarity_search_with_score(QUERY, k=3, scorer="pooled", fetch_k=5)
    assert [h[1] for h in hits] == pytest.approx(sorted(want, reverse=True)[:3], abs=1e-5)
