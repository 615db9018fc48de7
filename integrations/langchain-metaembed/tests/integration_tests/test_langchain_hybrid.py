"""MetaEmbedVectorStore hybrid search (``hybrid=`` / ``hybrid_weight=`` search options): the
store forwards them to the core's fused search (checked against the core and against BM25)."""

from __future__ import annotations

import pytest
from langchain_shared import HEALTH_TEXTS
from metaembed_rag.index.lexical import LexicalIndex

from langchain_metaembed import MetaEmbedEmbeddings, MetaEmbedVectorStore

IDS = [f"doc{i}" for i in range(len(HEALTH_TEXTS))]
QUERY = "What causes diabetes?"


@pytest.fixture(scope="module")
def store(default_embeddings: MetaEmbedEmbeddings) -> MetaEmbedVectorStore:
    return MetaEmbedVectorStore.from_texts(
        HEALTH_TEXTS, default_embeddings, ids=IDS, index_kwargs={"dtype": "float32"}
    )


def _ids(pairs) -> list[str]:
    return [d.id for d, _ in pairs]


def test_weight_one_is_the_multivector_ranking_and_zero_is_bm25(store) -> None:
    n = len(IDS)
    dense = store.similarity_search_with_score(QUERY, k=n, fetch_k=n)
    one = store.similarity_search_with_score(QUERY, k=n, fetch_k=n, hybrid="weighted",
                                             hybrid_weight=1.0)  # fmt: skip
    assert _ids(one) == _ids(dense)
    lex = LexicalIndex()
    lex.add(IDS, HEALTH_TEXTS)
    bm25 = dict(zip(IDS, lex.scores([QUERY])[0].tolist(), strict=True))
    zero = store.similarity_search_with_score(QUERY, k=3, fetch_k=n, hybrid="weighted",
                                              hybrid_weight=0.0)  # fmt: skip
    assert [bm25[i] for i in _ids(zero)] == sorted(bm25.values(), reverse=True)[:3]
    assert max(s for _, s in zero) == pytest.approx(1.0)


def test_rrf_equals_the_core_search_and_works_through_a_retriever(
    store, default_embeddings
) -> None:
    q = default_embeddings.encode_queries([QUERY])
    core = store._index.search(q, 4, texts=[QUERY], hybrid="rrf")[0]
    got = store.similarity_search_with_score(QUERY, k=4, hybrid="rrf")
    assert _ids(got) == [h.id for h in core]
    assert [s for _, s in got] == pytest.approx([h.score for h in core])
    docs = store.as_retriever(search_kwargs={"k": 4, "hybrid": "rrf"}).invoke(QUERY)
    assert [d.id for d in docs] == [h.id for h in core]


def test_bad_hybrid_options_are_refused(store) -> None:
    with pytest.raises(ValueError, match="applies to hybrid='weighted' only"):
        store.similarity_search(QUERY, hybrid="rrf", hybrid_weight=0.3)
    with pytest.raises(ValueError, match="hybrid must be"):
        store.similarity_search(QUERY, hybrid="sum")
