"""MetaEmbedVectorStore and MetaEmbedRetriever in single-vector mode, with LangChain's fake
embeddings (no model, no data set): scores, relevance scale, delete, save/load checks,
construction-time validation and metadata keys."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from metaembed_rag import Budget

from langchain_metaembed import MetaEmbedRetriever, MetaEmbedVectorStore

TEXTS = ["foo", "bar", "baz", "qux"]


class ScaledEmbeddings(Embeddings):
    """``DeterministicFakeEmbedding`` times ``scale``: the same directions, other lengths."""

    def __init__(self, size: int, scale: float) -> None:
        self.inner = DeterministicFakeEmbedding(size=size)
        self.scale = scale

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[x * self.scale for x in v] for v in self.inner.embed_documents(texts)]

    def embed_query(self, text: str) -> list[float]:
        return [x * self.scale for x in self.inner.embed_query(text)]


@pytest.fixture
def emb() -> DeterministicFakeEmbedding:
    return DeterministicFakeEmbedding(size=6)


@pytest.fixture
def store(emb: DeterministicFakeEmbedding) -> MetaEmbedVectorStore:
    metas = [{"n": i, "group": "a" if i < 2 else "b"} for i in range(len(TEXTS))]
    return MetaEmbedVectorStore.from_texts(TEXTS, emb, metas, ids=TEXTS)


def test_scores_are_dot_products(store: MetaEmbedVectorStore, emb, tmp_path: Path) -> None:
    assert not store.is_multivector and store.index is not None
    D = np.asarray(emb.embed_documents(TEXTS), dtype=np.float32)
    q = np.asarray(emb.embed_query("bar"), dtype=np.float32)
    expected = D @ q
    pairs = store.similarity_search_with_score("bar", k=4)
    order = np.argsort(-expected, kind="stable")
    assert [d.id for d, _ in pairs] == [TEXTS[i] for i in order]
    assert np.allclose([s for _, s in pairs], expected[order], atol=1e-5)
    assert store.budgets == [Budget(1, 1)] and store.default_budget == Budget(1, 1)
    with pytest.raises(ValueError, match=r"budget=\(16,64\) is not a budget of a single-vector"):
        store.similarity_search("bar", budget=(16, 64))
    loaded = MetaEmbedVectorStore.load(store.save(tmp_path / "single"), emb)
    assert loaded.similarity_search_with_score("bar", k=4) == pairs


@pytest.mark.asyncio
async def test_relevance_is_cosine_for_vectors_of_any_length(tmp_path: Path) -> None:
    unit = MetaEmbedVectorStore.from_texts(TEXTS, DeterministicFakeEmbedding(size=6), ids=TEXTS)
    big = MetaEmbedVectorStore.from_texts(TEXTS, ScaledEmbeddings(6, 10.0), ids=TEXTS)
    raw = big.similarity_search_with_score("bar", k=4)
    assert max(abs(s) for _, s in raw) > 10  # far outside [-1, 1]: not unit vectors
    rel = big.similarity_search_with_relevance_scores("bar", k=4)
    assert [d.id for d, _ in rel] == [d.id for d, _ in raw]
    D = np.asarray(DeterministicFakeEmbedding(size=6).embed_documents(TEXTS))
    q = np.asarray(DeterministicFakeEmbedding(size=6).embed_query("bar"))
    cos = {
        t: float(D[i] @ q / np.linalg.norm(D[i]) / np.linalg.norm(q)) for i, t in enumerate(TEXTS)
    }
    for doc, r in rel:
        assert 0.0 <= r <= 1.0
        assert r == pytest.approx(min(1.0, (cos[str(doc.id)] + 1) / 2), abs=1e-5)
    # The length of the vectors does not change the relevance, only the raw scores.
    same = unit.similarity_search_with_relevance_scores("bar", k=4)
    assert [(d.id, pytest.approx(r, abs=1e-5)) for d, r in same] == [(d.id, r) for d, r in rel]
    assert await big.asimilarity_search_with_relevance_scores("bar", k=4) == rel
    # LangChain's score-threshold retriever runs on these relevance scores.
    threshold = big.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.99, "k": 4}
    )
    assert [d.id for d in threshold.invoke("bar")] == ["bar"]
    with pytest.raises(NotImplementedError, match="similarity_search_with_relevance_scores"):
        big._select_relevance_score_fn()


def test_delete_none_deletes_everything(store: MetaEmbedVectorStore) -> None:
    assert store.delete([]) is True and len(store) == 4  # an empty list deletes nothing
    assert store.delete(["foo", "not-there"]) is True and len(store) == 3
    with pytest.raises(TypeError, match="wrap it"):
        store.delete("bar")  # type: ignore[arg-type]
    assert store.delete() is True  # ids=None: everything (VectorStore.delete's contract)
    assert len(store) == 0 and store.similarity_search("bar") == []
    assert MetaEmbedVectorStore(DeterministicFakeEmbedding(size=6)).delete() is True  # no index


@pytest.mark.asyncio
async def test_adelete_none_deletes_everything(store: MetaEmbedVectorStore) -> None:
    await store.adelete()
    assert len(store) == 0


def test_load_refuses_embeddings_of_another_width(store: MetaEmbedVectorStore, tmp_path) -> None:
    folder = store.save(tmp_path / "s")
    config = json.loads((folder / "langchain_metaembed.json").read_text())
    assert config["dim"] == 6 and config["num_vectors"] == 1
    with pytest.raises(
        ValueError, match="embed_query returned 8-float vectors but this store holds 6-float"
    ):
        MetaEmbedVectorStore.load(folder, DeterministicFakeEmbedding(size=8))
    # The width is also checked on every add and search (e.g. an index passed in directly).
    other = MetaEmbedVectorStore(DeterministicFakeEmbedding(size=8), index=store.index)
    with pytest.raises(ValueError, match="8-float vectors but this store holds 6-float"):
        other.similarity_search("bar")
    with pytest.raises(ValueError, match="8-float vectors but this store holds 6-float"):
        other.add_texts(["new"])


def test_load_refuses_embeddings_of_another_class(store: MetaEmbedVectorStore, tmp_path) -> None:
    folder = store.save(tmp_path / "s")
    with pytest.raises(ValueError, match="was built with langchain_core.*DeterministicFake"):
        MetaEmbedVectorStore.load(folder, ScaledEmbeddings(6, 1.0))
    # Explicitly allowed (e.g. a caching wrapper): opens; the width is still checked.
    wrapped = MetaEmbedVectorStore.load(
        folder, ScaledEmbeddings(6, 1.0), allow_other_embeddings=True
    )
    assert len(wrapped) == 4
    with pytest.raises(ValueError, match="returned 5-float vectors"):
        MetaEmbedVectorStore.load(folder, ScaledEmbeddings(5, 1.0), allow_other_embeddings=True)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "holds a JSON list"),
        ('{"format": "something-else"}', "is not a langchain-metaembed/vectorstore v1 file"),
    ],
)
def test_damaged_config_names_the_file_and_the_fix(
    store: MetaEmbedVectorStore, emb, tmp_path: Path, content: str, match: str
) -> None:
    folder = store.save(tmp_path / "s")
    (folder / "langchain_metaembed.json").write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        MetaEmbedVectorStore.load(folder, emb)
    message = str(info.value)
    assert str(folder / "langchain_metaembed.json") in message
    assert "restore it from a backup" in message and "MultiVectorIndex.load" in message
    with pytest.raises(FileNotFoundError, match="no saved MetaEmbedVectorStore"):
        MetaEmbedVectorStore.load(tmp_path / "nothing-here", emb)


def test_bad_settings_fail_at_construction(store: MetaEmbedVectorStore) -> None:
    with pytest.raises(
        ValueError, match=r"budget=\(8,16\) is not a budget .* Valid budgets: \(1,1\)"
    ):
        MetaEmbedVectorStore(DeterministicFakeEmbedding(size=6), budget=(8, 16))
    with pytest.raises(ValueError, match=r"budget=\(5,5\) is not a budget .* Valid budgets"):
        MetaEmbedRetriever(vectorstore=store, budget=(5, 5))
    with pytest.raises(ValueError, match=r"recall_budget=\(2,4\) is not a budget"):
        MetaEmbedRetriever(vectorstore=store, recall_budget=(2, 4))
    with pytest.raises(ValueError, match="recall_budget='lots' is not a budget"):
        MetaEmbedRetriever(vectorstore=store, recall_budget="lots")
    with pytest.raises(ValueError, match="Unknown top-level filter operator"):
        MetaEmbedRetriever(vectorstore=store, filter={"$nope": 1})
    with pytest.raises(ValueError, match="give them different names"):
        MetaEmbedRetriever(vectorstore=store, score_key="x", budget_key="x")
    ok = MetaEmbedRetriever(vectorstore=store, budget=(1, 1), recall_budget="1,1", k=2)
    assert [d.metadata["budget"] for d in ok.invoke("bar")] == ["1,1", "1,1"]


def test_retriever_never_overwrites_user_metadata(emb) -> None:
    docs = [
        Document(id="a", page_content="foo", metadata={"score": 5, "budget": "monthly"}),
        Document(id="b", page_content="bar", metadata={"kind": "plain"}),
    ]
    store = MetaEmbedVectorStore(emb)
    store.add_documents(docs)
    with pytest.raises(
        ValueError, match=r"'a' already has metadata key\(s\) \['budget', 'score'\]"
    ):
        MetaEmbedRetriever(vectorstore=store, k=2).invoke("foo")
    renamed = MetaEmbedRetriever(
        vectorstore=store, k=2, score_key="metaembed_score", budget_key="metaembed_budget"
    )
    out = {d.id: d for d in renamed.invoke("foo")}
    assert out["a"].metadata["score"] == 5 and out["a"].metadata["budget"] == "monthly"
    scores = {d.id: s for d, s in store.similarity_search_with_score("foo", k=2)}
    assert out["a"].metadata["metaembed_score"] == scores["a"]
    assert out["b"].metadata == {
        "kind": "plain",
        "metaembed_score": scores["b"],
        "metaembed_budget": "1,1",
    }
    bare = MetaEmbedRetriever(vectorstore=store, k=2, score_key=None, budget_key=None)
    assert {d.id: d.metadata for d in bare.invoke("foo")} == {d.id: d.metadata for d in docs}
    assert store.get_by_ids(["a"])[0].metadata == {"score": 5, "budget": "monthly"}  # untouched
