"""MetaEmbedVectorStore beyond the standard suite: exact scores, budgets, filters, persistence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_shared import HEALTH_TEXTS
from metaembed_rag import maxsim
from metaembed_rag.index import IndexMismatchError, SearchParams, mmr_search
from metaembed_rag.relevance import relevance_scores

from langchain_metaembed import MetaEmbedEmbeddings, MetaEmbedVectorStore

TEXTS = HEALTH_TEXTS
METAS = [{"topic": t, "n": i} for i, t in enumerate("ddaxxaday")][: len(TEXTS)]
IDS = [f"doc{i}" for i in range(len(TEXTS))]
QUERY = "What causes diabetes?"


@pytest.fixture(scope="module")
def store(default_embeddings: MetaEmbedEmbeddings) -> MetaEmbedVectorStore:
    """float32 storage, so scores can be compared with fresh encodings."""
    return MetaEmbedVectorStore.from_texts(
        TEXTS, default_embeddings, METAS, ids=IDS, index_kwargs={"dtype": "float32"}
    )


@pytest.fixture(scope="module")
def core_scores(default_embeddings: MetaEmbedEmbeddings):
    Q = default_embeddings.encode_queries([QUERY])
    D = default_embeddings.encode_documents(TEXTS)
    return lambda budget: maxsim(Q, D, budget)[0]


@pytest.mark.parametrize("budget", [(1, 1), (4, 8), (16, 64)])
def test_scores_equal_exhaustive_core_maxsim(store, core_scores, budget) -> None:
    pairs = store.similarity_search_with_score(QUERY, k=len(TEXTS), budget=budget)
    expected = core_scores(budget)
    order = sorted(range(len(TEXTS)), key=lambda i: (-float(expected[i]), i))
    assert [d.id for d, _ in pairs] == [IDS[i] for i in order]
    got = torch.tensor([s for _, s in pairs])
    assert torch.allclose(got, expected[order], atol=1e-4)
    for doc, _ in pairs:
        i = IDS.index(doc.id)
        assert doc == Document(id=IDS[i], page_content=TEXTS[i], metadata=METAS[i])


def test_default_budget_is_the_largest_and_k_fetch_k_mode(store, core_scores) -> None:
    full = store.similarity_search_with_score(QUERY, k=3)
    assert [s for _, s in full] == [
        s for _, s in store.similarity_search_with_score(QUERY, k=3, budget=(16, 64))
    ]
    exhaustive = store.similarity_search_with_score(QUERY, k=3, mode="exhaustive")
    assert [d.id for d, _ in exhaustive] == [d.id for d, _ in full]
    assert len(store.similarity_search(QUERY, k=2, fetch_k=2)) == 2
    assert len(store.similarity_search(QUERY, k=50)) == len(TEXTS)
    cascade = store.similarity_search_with_score(QUERY, k=3, recall_budget=(2, 4))
    assert [d.id for d, _ in cascade] == [d.id for d, _ in full]  # fetch_k covers all docs


def test_filter_applies_before_truncation(store, core_scores) -> None:
    hits = store.similarity_search_with_score(QUERY, k=10, filter={"topic": "a"}, budget=(8, 16))
    wanted = [i for i, m in enumerate(METAS) if m["topic"] == "a"]
    assert sorted(d.id for d, _ in hits) == sorted(IDS[i] for i in wanted)
    assert all(d.metadata["topic"] == "a" for d, _ in hits)
    ranged = store.similarity_search(QUERY, k=10, filter={"n": {"$gte": 5}})
    assert sorted(d.metadata["n"] for d in ranged) == [5, 6, 7]
    assert store.similarity_search(QUERY, filter={"topic": "none"}) == []
    with pytest.raises(TypeError, match="filter dict"):
        store.similarity_search(QUERY, filter=lambda d: True)  # type: ignore[arg-type]


def test_search_by_vector(store, default_embeddings) -> None:
    multi = default_embeddings.embed_query_multivector(QUERY)
    by_text = store.similarity_search_with_score(QUERY, k=4)
    by_vec = store.similarity_search_with_score_by_vector(multi, k=4)
    assert [d.id for d, _ in by_vec] == [d.id for d, _ in by_text]
    single = store.similarity_search_by_vector(default_embeddings.embed_query(QUERY), k=4)
    assert [d.id for d in single] == [
        d.id for d in store.similarity_search(QUERY, k=4, budget=(1, 1))
    ]


def test_errors_name_the_fix(store) -> None:
    with pytest.raises(ValueError, match=r"budget=\(3,3\) is not a budget .* Valid budgets"):
        store.similarity_search(QUERY, budget=(3, 3))
    with pytest.raises(ValueError, match=r"recall_budget=\(3,3\)"):
        store.similarity_search(QUERY, recall_budget=(3, 3))
    with pytest.raises(ValueError, match=r"budget=\(5,5\) is not a budget"):
        MetaEmbedVectorStore(store.embeddings, index=store.index, budget=(5, 5))
    with pytest.raises(TypeError, match="unexpected argument"):
        store.similarity_search(QUERY, top_k=3)
    with pytest.raises(ValueError, match="k must be a positive int"):
        store.similarity_search(QUERY, k=0)
    with pytest.raises(ValueError, match="3 texts but 2 ids"):
        store.add_texts(["a", "b", "c"], ids=["x", "y"])
    with pytest.raises(TypeError, match="must be a dict"):
        store.add_texts(["a"], [[("k", 1)]], ids=["bad"])  # type: ignore[list-item]
    assert store.get_by_ids(["bad"]) == []


def test_relevance_scores_are_the_models_calibration(store, default_embeddings) -> None:
    model = default_embeddings.client
    assert model.relevance_calibration is not None  # shipped with the default model
    assert set(model.relevance_calibration.coefficients) == set(model.budgets)
    pairs = store.similarity_search_with_relevance_scores(QUERY, k=4, budget=(8, 16))
    raw = store.similarity_search_with_score(QUERY, k=4, budget=(8, 16))
    assert [d.id for d, _ in pairs] == [d.id for d, _ in raw]
    expected = relevance_scores(model, [s for _, s in raw], (8, 16))
    assert [r for _, r in pairs] == pytest.approx(expected)
    assert all(0.0 <= r <= 1.0 for r, _ in zip(expected, raw, strict=True))
    # Without a budget: the store's default, the largest (16,64).
    default = store.similarity_search_with_relevance_scores(QUERY, k=4)
    full = store.similarity_search_with_score(QUERY, k=4)
    assert [r for _, r in default] == pytest.approx(
        relevance_scores(model, [s for _, s in full], (16, 64))
    )


def test_relevance_separates_the_answer_from_unrelated_passages(store) -> None:
    """The issue's case: (score / r_q + 1) / 2 squeezed a relevant passage (0.714) and
    unrelated ones (0.68, 0.668) together. The calibrated relevance puts the answer several
    times above the unrelated passages, which stay near 0 (a 0.5 threshold drops them)."""
    pairs = store.similarity_search_with_relevance_scores(
        "What causes type 2 diabetes?", k=len(store)
    )
    rel = {d.page_content: r for d, r in pairs}
    answer = rel["Insulin resistance is a major cause of type 2 diabetes."]
    unrelated = [
        rel[t]
        for t in (
            "The Moon orbits the Earth roughly every 27 days.",
            "Paris is the capital of France.",
            "Jupiter is the largest planet.",
        )
    ]
    assert pairs[0][0].page_content == "Insulin resistance is a major cause of type 2 diabetes."
    assert max(unrelated) < 0.5
    assert max(unrelated) < 0.1 and answer > 3 * max(unrelated), (answer, unrelated)


@pytest.mark.asyncio
async def test_relevance_scores_async_and_score_fn(store, default_embeddings) -> None:
    sync = store.similarity_search_with_relevance_scores(QUERY, k=3, budget=(2, 4))
    assert await store.asimilarity_search_with_relevance_scores(QUERY, k=3, budget=(2, 4)) == sync
    # _select_relevance_score_fn follows the store's default budget: (16,64) ...
    model = default_embeddings.client
    fn = store._select_relevance_score_fn()
    assert fn(8.0) == pytest.approx(relevance_scores(model, [8.0], (16, 64))[0])
    assert 0.0 <= fn(-16.0) < fn(0.0) < fn(8.0) < fn(16.0) <= 1.0
    # ... and (8,16) for a store whose default budget is (8,16).
    small = MetaEmbedVectorStore(default_embeddings, index=store.index, budget=(8, 16))
    assert small._select_relevance_score_fn()(4.0) == pytest.approx(
        relevance_scores(model, [4.0], (8, 16))[0]
    )


def test_max_marginal_relevance_search(store, default_embeddings) -> None:
    """MMR over the stored vectors equals the core's mmr_search (itself checked against a
    brute-force reference in tests/test_diversity.py); lambda_mult=1 is the plain ranking."""
    q = default_embeddings.encode_queries([QUERY])[0]
    params = SearchParams(k=3, fetch_k=6, rerank_budget=(16, 64))
    expected = [h.id for h in mmr_search(store.index, q, params, lambda_mult=0.25)]
    got = store.max_marginal_relevance_search(QUERY, k=3, fetch_k=6, lambda_mult=0.25)
    assert [d.id for d in got] == expected
    by_vector = store.max_marginal_relevance_search_by_vector(
        q.tolist(), k=3, fetch_k=6, lambda_mult=0.25
    )
    assert [d.id for d in by_vector] == expected
    plain = [d.id for d in store.similarity_search(QUERY, k=3)]
    assert [d.id for d in store.max_marginal_relevance_search(QUERY, k=3, lambda_mult=1.0)] == plain
    filtered = store.max_marginal_relevance_search(QUERY, k=2, filter={"topic": "a"})
    assert len(filtered) == 2 and all(d.metadata["topic"] == "a" for d in filtered)
    with pytest.raises(ValueError, match="lambda_mult"):
        store.max_marginal_relevance_search(QUERY, lambda_mult=2.0)


@pytest.mark.asyncio
async def test_max_marginal_relevance_search_async(store, default_embeddings) -> None:
    sync = store.max_marginal_relevance_search(QUERY, k=3, fetch_k=6, lambda_mult=0.3)
    assert (
        await store.amax_marginal_relevance_search(QUERY, k=3, fetch_k=6, lambda_mult=0.3) == sync
    )
    q = default_embeddings.encode_queries([QUERY])[0].tolist()
    assert (
        await store.amax_marginal_relevance_search_by_vector(q, k=3, fetch_k=6, lambda_mult=0.3)
        == sync
    )


def test_get_vectors_are_the_full_multivectors(store, default_embeddings) -> None:
    vectors = store.get_vectors("doc2")
    fresh = default_embeddings.encode_documents([TEXTS[2]])[0]
    assert vectors.shape == (64, 384)
    assert torch.allclose(vectors, fresh, atol=1e-5)
    with pytest.raises(KeyError):
        store.get_vectors("nope")


def test_save_load_same_results(store, default_embeddings, tmp_path: Path) -> None:
    folder = store.save(tmp_path / "store")
    assert (folder / "langchain_metaembed.json").is_file() and (folder / "index").is_dir()
    loaded = MetaEmbedVectorStore.load(folder, default_embeddings)
    for budget in [(1, 1), (16, 64)]:
        assert loaded.similarity_search_with_score(
            QUERY, k=5, budget=budget
        ) == store.similarity_search_with_score(QUERY, k=5, budget=budget)
    assert loaded.get_by_ids(["doc0"]) == store.get_by_ids(["doc0"])
    with pytest.raises(ValueError, match=r"multi-vector store .*model='metaembed-minilm-l6'"):
        MetaEmbedVectorStore.load(folder, DeterministicFakeEmbedding(size=6))
    config = json.loads((folder / "langchain_metaembed.json").read_text())
    assert config["model"] == "metaembed-minilm-l6"
    assert config["fingerprint"] == default_embeddings.fingerprint()
    assert (config["dim"], config["num_vectors"]) == (384, 64)
    with pytest.raises(FileNotFoundError, match="no saved MetaEmbedVectorStore"):
        MetaEmbedVectorStore.load(tmp_path / "empty", default_embeddings)


def test_load_with_another_model_names_the_model_it_was_built_with(
    store, default_embeddings, other_model_embeddings, tmp_path: Path
) -> None:
    assert other_model_embeddings.fingerprint() != default_embeddings.fingerprint()
    folder = store.save(tmp_path / "store")
    with pytest.raises(IndexMismatchError) as info:
        MetaEmbedVectorStore.load(folder, other_model_embeddings)
    message = str(info.value)
    assert "built with MetaEmbed model 'metaembed-minilm-l6'" in message
    assert default_embeddings.fingerprint() in message
    assert other_model_embeddings.fingerprint() in message
    assert "MetaEmbedEmbeddings(model='metaembed-minilm-l6')" in message
    # The check runs on the saved settings, before the index is opened.
    (folder / "index" / "manifest.json").unlink()
    with pytest.raises(IndexMismatchError, match="metaembed-minilm-l6"):
        MetaEmbedVectorStore.load(folder, other_model_embeddings)
    # Giving another model's store (its index) directly is refused too.
    with pytest.raises(ValueError, match="model fingerprint"):
        MetaEmbedVectorStore(other_model_embeddings, index=store.index)


@pytest.mark.asyncio
async def test_async_variants(default_embeddings) -> None:
    store = MetaEmbedVectorStore(default_embeddings)
    ids = await store.aadd_texts(TEXTS[:4], METAS[:4], ids=IDS[:4])
    assert ids == IDS[:4]
    sync = store.similarity_search_with_score(QUERY, k=3, budget=(4, 8))
    assert await store.asimilarity_search_with_score(QUERY, k=3, budget=(4, 8)) == sync
    assert await store.asimilarity_search(QUERY, k=3, budget=(4, 8)) == [d for d, _ in sync]
    await store.adelete(["doc0"])
    assert [d.id for d in await store.aget_by_ids(IDS[:4])] == IDS[1:4]


def test_title_key_reads_a_metadata_title_with_the_text(
    default_embeddings: MetaEmbedEmbeddings, tmp_path: Path
) -> None:
    """``title_key``: the model reads ``{"title": metadata[title_key], "text": page_content}``
    (the default model keeps the title out of its segment vectors); page_content and metadata
    come back unchanged; documents without a title are their text; the key is saved."""
    docs = [
        Document(page_content="A pump moves fluids by mechanical action.", metadata={"h": "Pump"}),
        Document(page_content="Insulin resistance causes type 2 diabetes.", metadata={"h": ""}),
        Document(page_content="The Moon orbits the Earth."),
    ]
    store = MetaEmbedVectorStore.from_documents(
        docs, default_embeddings, ids=["a", "b", "c"], title_key="h",
        index_kwargs={"dtype": "float32"},
    )  # fmt: skip
    want = default_embeddings.encode_documents(
        [{"title": "Pump", "text": docs[0].page_content}, docs[1].page_content,
         docs[2].page_content]
    )  # fmt: skip
    query = "how does a pump work?"
    q = default_embeddings.encode_queries([query])
    pairs = store.similarity_search_with_score(query, k=3, mode="exhaustive")
    scores = dict(zip(["a", "b", "c"], maxsim(q, want, (16, 64))[0].tolist(), strict=True))
    ranked = sorted(scores.items(), key=lambda t: -t[1])
    assert [d.id for d, _ in pairs] == [i for i, _ in ranked]
    assert [s for _, s in pairs] == pytest.approx([s for _, s in ranked], abs=1e-4)
    plain = default_embeddings.encode_documents([docs[0].page_content])
    assert (want[0, 1:] - plain[0, 1:]).abs().max() > 1e-3  # the title is read
    assert abs(scores["a"] - float(maxsim(q, plain, (16, 64))[0, 0])) > 1e-3
    assert store.get_by_ids(["a"])[0].page_content == docs[0].page_content
    loaded = MetaEmbedVectorStore.load(store.save(tmp_path / "titled"), default_embeddings)
    assert loaded.title_key == "h"
    assert MetaEmbedVectorStore.load(tmp_path / "titled", default_embeddings,
                                     title_key=None).title_key is None  # fmt: skip
    with pytest.raises(TypeError, match="metadata 'h' of 'x' is the title_key and must be a str"):
        store.add_texts(["text"], [{"h": 3}], ids=["x"])
    with pytest.raises(ValueError, match="title_key needs MetaEmbedEmbeddings"):
        MetaEmbedVectorStore(DeterministicFakeEmbedding(size=6), title_key="h")
    with pytest.raises(ValueError, match="title_key must be a metadata key"):
        MetaEmbedVectorStore(default_embeddings, title_key="")
