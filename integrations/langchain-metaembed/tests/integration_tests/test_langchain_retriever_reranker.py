"""MetaEmbedRetriever and MetaEmbedReranker on a small store (default model)."""

from __future__ import annotations

import copy

import pytest
import torch
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from metaembed_rag import maxsim
from metaembed_rag.relevance import relevance_scores

from langchain_metaembed import (
    MetaEmbedEmbeddings,
    MetaEmbedReranker,
    MetaEmbedRetriever,
    MetaEmbedVectorStore,
)

TEXTS = [
    "Insulin resistance is a major cause of type 2 diabetes.",
    "Regular exercise improves insulin sensitivity.",
    "The Moon orbits the Earth roughly every 27 days.",
    "Vitamin D deficiency is common in northern latitudes.",
    "Type 1 diabetes is an autoimmune disease.",
    "Jupiter is the largest planet.",
]
IDS = [f"r{i}" for i in range(len(TEXTS))]
METAS = [{"kind": "health" if i in (0, 1, 3, 4) else "space", "i": i} for i in range(len(TEXTS))]
QUERY = "What causes diabetes?"


@pytest.fixture(scope="module")
def store(default_embeddings: MetaEmbedEmbeddings) -> MetaEmbedVectorStore:
    return MetaEmbedVectorStore.from_texts(TEXTS, default_embeddings, METAS, ids=IDS)


def test_retriever_k_budget_filter_per_call(store: MetaEmbedVectorStore) -> None:
    retriever = MetaEmbedRetriever(vectorstore=store, k=3)
    docs = retriever.invoke(QUERY)
    assert len(docs) == 3
    pairs = store.similarity_search_with_score(QUERY, k=3)
    assert [d.id for d in docs] == [d.id for d, _ in pairs]
    for doc, (plain, score) in zip(docs, pairs, strict=True):
        assert doc.metadata == {**plain.metadata, "score": score, "budget": "16,64"}
    assert plain.metadata == METAS[IDS.index(plain.id)]  # the store's copy is untouched
    assert len(retriever.invoke(QUERY, k=1)) == 1
    small = retriever.invoke(QUERY, k=6, budget=(2, 4))
    expected = store.similarity_search_with_score(QUERY, k=6, budget=(2, 4))
    assert [(d.id, d.metadata["score"]) for d in small] == [(d.id, s) for d, s in expected]
    assert {d.metadata["budget"] for d in small} == {"2,4"}
    space = retriever.invoke(QUERY, k=6, filter={"kind": "space"})
    assert sorted(d.id for d in space) == ["r2", "r5"]
    configured = MetaEmbedRetriever(
        vectorstore=store, k=2, budget="8,16", filter={"kind": "health"}, score_key="s"
    )
    out = configured.invoke(QUERY)
    assert len(out) == 2 and all(d.metadata["kind"] == "health" for d in out)
    assert all("s" in d.metadata and d.metadata["budget"] == "8,16" for d in out)


@pytest.mark.asyncio
async def test_retriever_async_equals_sync(store: MetaEmbedVectorStore) -> None:
    retriever = MetaEmbedRetriever(vectorstore=store, k=2, budget=(4, 8))
    assert await retriever.ainvoke(QUERY, k=4) == retriever.invoke(QUERY, k=4)


def test_retriever_rejects_bad_budgets_at_construction(store: MetaEmbedVectorStore) -> None:
    with pytest.raises(ValueError, match="budget='lots' is not a budget"):
        MetaEmbedRetriever(vectorstore=store, budget="lots")
    valid = r"Valid budgets: \(1,1\), \(2,4\), \(4,8\), \(8,16\), \(16,64\)"
    with pytest.raises(
        ValueError, match=r"budget=\(5,5\) is not a budget of this store's .*" + valid
    ):
        MetaEmbedRetriever(vectorstore=store, budget=(5, 5))
    with pytest.raises(ValueError, match=r"recall_budget=\(5,5\) is not a budget"):
        MetaEmbedRetriever(vectorstore=store, recall_budget=(5, 5))
    retriever = MetaEmbedRetriever(vectorstore=store, budget=(2, 4), recall_budget=(2, 4))
    with pytest.raises(ValueError, match=r"budget=\(3,3\) is not a budget"):
        retriever.invoke(QUERY, budget=(3, 3))  # per call: checked by the store


def test_reranker_scores_are_budgeted_maxsim(default_embeddings: MetaEmbedEmbeddings) -> None:
    docs = [Document(page_content=t, metadata={"i": i}, id=IDS[i]) for i, t in enumerate(TEXTS)]
    before = copy.deepcopy(docs)
    reranker = MetaEmbedReranker(embeddings=default_embeddings, top_n=4, budget=(8, 16))
    out = reranker.compress_documents(docs, QUERY)
    assert docs == before  # inputs untouched
    Q = default_embeddings.encode_queries([QUERY])
    D = default_embeddings.encode_documents(TEXTS)
    expected = maxsim(Q, D, (8, 16))[0]
    order = sorted(range(len(TEXTS)), key=lambda i: (-float(expected[i]), i))[:4]
    assert [d.id for d in out] == [IDS[i] for i in order]
    got = torch.tensor([d.metadata["maxsim_score"] for d in out])
    assert torch.allclose(got, expected[order], atol=1e-5)
    relevance = relevance_scores(default_embeddings.client, got.tolist(), (8, 16))
    assert [d.metadata["relevance_score"] for d in out] == pytest.approx(relevance)
    assert all(0.0 <= r <= 1.0 for r in relevance)
    for d, i in zip(out, order, strict=True):
        assert d.page_content == TEXTS[i] and d.metadata["i"] == i
        assert d is not docs[i] and d.metadata is not docs[i].metadata
    everything = MetaEmbedReranker(embeddings=default_embeddings, top_n=None).compress_documents(
        docs, QUERY
    )
    assert len(everything) == len(docs)
    assert reranker.compress_documents([], QUERY) == []


def test_reranker_ties_keep_input_order(default_embeddings: MetaEmbedEmbeddings) -> None:
    docs = [Document(page_content="same text", metadata={"n": n}) for n in range(3)]
    out = MetaEmbedReranker(embeddings=default_embeddings, top_n=3).compress_documents(docs, QUERY)
    assert [d.metadata["n"] for d in out] == [0, 1, 2]


@pytest.mark.asyncio
async def test_reranker_async(default_embeddings: MetaEmbedEmbeddings) -> None:
    docs = [Document(page_content=t) for t in TEXTS[:3]]
    reranker = MetaEmbedReranker(embeddings=default_embeddings, top_n=2)
    assert await reranker.acompress_documents(docs, QUERY) == reranker.compress_documents(
        docs, QUERY
    )


def test_reranker_rejects_bad_settings_at_construction(
    default_embeddings: MetaEmbedEmbeddings,
    other_model_embeddings: MetaEmbedEmbeddings,
    store: MetaEmbedVectorStore,
) -> None:
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        MetaEmbedReranker(embeddings=default_embeddings, top_n=0)
    with pytest.raises(ValueError, match="budget='x' is not a budget"):
        MetaEmbedReranker(embeddings=default_embeddings, budget="x")
    with pytest.raises(ValueError, match=r"budget=\(5,5\) is not a budget of the reranker's"):
        MetaEmbedReranker(embeddings=default_embeddings, budget=(5, 5))
    single = MetaEmbedVectorStore(DeterministicFakeEmbedding(size=8))
    with pytest.raises(ValueError, match="single-vector store"):
        MetaEmbedReranker(embeddings=default_embeddings, vectorstore=single)
    other_length = MetaEmbedEmbeddings(client=default_embeddings.client, max_length=64)
    with pytest.raises(ValueError, match="max_length=128 but the reranker's embeddings use 64"):
        MetaEmbedReranker(embeddings=other_length, vectorstore=store)
    with pytest.raises(ValueError, match="holds vectors of model 'metaembed-minilm-l6'"):
        MetaEmbedReranker(embeddings=other_model_embeddings, vectorstore=store)


def test_reranker_reuses_the_stores_vectors(
    store: MetaEmbedVectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    reranker = MetaEmbedReranker(vectorstore=store, top_n=None, budget=(8, 16))
    assert reranker.embeddings is store.embeddings  # no second model, same settings
    candidates = MetaEmbedRetriever(vectorstore=store, k=4).invoke(QUERY)
    changed = Document(id="r5", page_content="Jupiter has many moons.")  # text differs
    new = Document(page_content="Insulin is made in the pancreas.")  # not in the store
    docs = [*candidates, changed, new]
    encoded: list[list[str]] = []
    original = MetaEmbedEmbeddings.encode_documents

    def counting(self: MetaEmbedEmbeddings, documents):  # type: ignore[no-untyped-def]
        encoded.append(list(documents))
        return original(self, documents)

    monkeypatch.setattr(MetaEmbedEmbeddings, "encode_documents", counting)
    ranked = reranker.rerank(docs, QUERY)
    assert encoded == [[changed.page_content, new.page_content]]  # the stored ones are reused
    monkeypatch.undo()
    stored = torch.stack([store.get_vectors(str(d.id)) for d in candidates])
    fresh = store.embeddings.encode_documents([changed.page_content, new.page_content])
    Q = store.embeddings.encode_queries([QUERY])
    expected = maxsim(Q, torch.cat([stored, fresh]), (8, 16))[0]
    order = sorted(range(len(docs)), key=lambda i: (-float(expected[i]), i))
    assert [i for i, _ in ranked] == order
    assert torch.allclose(torch.tensor([s for _, s in ranked]), expected[order], atol=1e-5)
