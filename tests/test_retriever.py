"""TwoStageRetriever with the real packaged MiniLM backbone (untrained Meta tokens)."""

from __future__ import annotations

import pytest
import torch

from metaembed_rag import MetaEmbedModel
from metaembed_rag.index import MultiVectorIndex
from metaembed_rag.retriever import Hit, TwoStageRetriever

DOCS = [
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The mitochondria is the powerhouse of the cell.",
    "Mount Everest is Earth's highest mountain above sea level.",
    "Python is a popular programming language for data science.",
    "The Great Wall of China is visible across northern China.",
]


@pytest.fixture(scope="module")
def model() -> MetaEmbedModel:
    torch.manual_seed(0)
    return MetaEmbedModel.from_backbone()


def test_retriever_end_to_end(model, tmp_path):
    retriever = TwoStageRetriever.create(model)
    ids = retriever.add_documents(
        DOCS, metadatas=[{"topic": t} for t in ["geo", "bio", "bio", "geo", "cs", "geo"]]
    )
    assert ids == [str(i) for i in range(6)]
    hits = retriever.search("Which tower stands in Paris?", k=3)
    assert isinstance(hits[0], Hit) and len(hits) == 3 and hits[0].text in DOCS
    assert [h.rank for h in hits] == [0, 1, 2]
    # two-stage with fetch_k >= N equals exhaustive, for a batch of queries
    qs = ["cell biology", "highest mountain"]
    a = retriever.search(qs, k=6, fetch_k=6)
    b = retriever.search(qs, k=6, mode="exhaustive")
    assert [[h.id for h in r] for r in a] == [[h.id for h in r] for r in b]
    # filters
    geo = retriever.search("cell biology", k=6, filter={"topic": "geo"})
    assert {h.id for h in geo} == {"0", "3", "5"}
    # budgets are validated against the model's trained ones
    with pytest.raises(ValueError, match="Valid budgets"):
        retriever.search("x", rerank_budget=(3, 5))
    # save / load keeps the fingerprint; a retriever over the loaded index gives the same hits
    retriever.index.save(tmp_path / "idx")
    loaded = MultiVectorIndex.load(tmp_path / "idx", model=model)
    again = TwoStageRetriever(model, loaded).search(qs, k=6, fetch_k=6)
    assert [[(h.id, h.score) for h in r] for r in again] == [
        [(h.id, h.score) for h in r] for r in a
    ]
    # upsert through the retriever
    retriever.add_documents(["Paris is the capital of France."], ids=["0"], upsert=True)
    assert len(retriever.index) == 6 and retriever.index.get("0")["text"].startswith("Paris")


def test_retriever_refuses_other_model(model):
    index = MultiVectorIndex.for_model(model)
    index.fingerprint = "0000000000000000"
    with pytest.raises(ValueError, match="0000000000000000.*rebuild"):
        TwoStageRetriever(model, index)
    raw = MultiVectorIndex(model.dim)
    raw.add(["a"], torch.nn.functional.normalize(torch.randn(1, 64, model.dim), dim=-1))
    with pytest.raises(ValueError, match="no model fingerprint"):
        TwoStageRetriever(model, raw)
