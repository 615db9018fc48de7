"""The demo app with an MLLM reranker (``metaembed-rag serve --rerank mllm:MODEL``) on the real
Collection and default model and a tiny random causal LM: the API's results are exactly
``rerank_results`` over the collection's top candidates, and ``/api/info`` names the reranker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the demo app needs the 'app' extra (fastapi)")
pytest.importorskip("multipart", reason="the demo app needs the 'app' extra (python-multipart)")

from fastapi.testclient import TestClient  # noqa: E402
from tiny_models import build_tiny_causal_lm  # noqa: E402

from metaembed_rag.app import create_app  # noqa: E402
from metaembed_rag.index.params import DEFAULT_FETCH_K  # noqa: E402
from metaembed_rag.rerank import MLLMReranker, rerank_results  # noqa: E402

NOTES = [  # one file each: one chunk, one candidate each
    "Insulin resistance in muscle and liver is a major cause of type 2 diabetes.",
    "The Moon is Earth's only natural satellite.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "A retrieval budget chooses how many query and document vectors to use.",
    "Learnable Meta tokens are appended to the input of a transformer.",
    "Glaciers move slowly downhill under their own weight.",
]
QUERY = "What causes type 2 diabetes?"
CANDIDATES = 4


@pytest.fixture(scope="module")
def tiny_lm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm") / "lm")


@pytest.fixture(scope="module")
def reranker(tiny_lm_path: Path) -> MLLMReranker:
    return MLLMReranker.from_pretrained(tiny_lm_path, device="cpu", batch_size=3)


@pytest.fixture(scope="module")
def client(reranker: MLLMReranker, tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    from metaembed_rag import MetaEmbedModel
    from metaembed_rag.model import DEFAULT_MODEL

    model = MetaEmbedModel.from_pretrained(DEFAULT_MODEL, device="cpu")
    folder = tmp_path_factory.mktemp("demo_rerank")
    app = create_app(folder / "index", model=model, reranker=reranker, rerank_candidates=CANDIDATES)
    client = TestClient(app)
    files = [("files", (f"note{i}.txt", t.encode(), "text/plain")) for i, t in enumerate(NOTES)]
    r = client.post("/api/upload", files=files)
    assert r.status_code == 200, r.text
    r = client.post("/api/index", json={"files": None})
    assert r.status_code == 200, r.text
    return client


def _expected(client: TestClient, reranker: MLLMReranker, query: str, k: int) -> list[Any]:
    """What the CLI's ``search --rerank`` computes: the top candidates, reranked by P(True)."""
    col = client.app.state.demo.collection  # type: ignore[attr-defined]
    pool = max(k, CANDIDATES)
    first = col.search(query, k=pool, fetch_k=max(DEFAULT_FETCH_K, pool))
    assert len(first) == CANDIDATES  # the test reranks more hits than it returns
    return rerank_results(reranker, query, first, top_n=k)


def test_info_names_the_reranker(client: TestClient, reranker: MLLMReranker) -> None:
    info = client.get("/api/info").json()["reranker"]
    assert info == {
        "kind": "mllm",
        "name": reranker.model.config.name_or_path,
        "candidates": CANDIDATES,
        "fusion_weight": 0.0,
    }
    assert info["name"].endswith("lm")
    page = client.get("/").text
    assert 'id="rerank-info"' in page


def test_search_returns_reranked_scores(client: TestClient, reranker: MLLMReranker) -> None:
    r = client.post("/api/search", json={"query": QUERY, "k": 2})
    assert r.status_code == 200, r.text
    data = r.json()
    expected = _expected(client, reranker, QUERY, 2)
    assert data["reranker"] == reranker.model.config.name_or_path
    assert [x["id"] for x in data["results"]] == [e.id for e in expected]
    assert [x["score"] for x in data["results"]] == pytest.approx([e.score for e in expected])
    assert [x["rank"] for x in data["results"]] == [0, 1]
    # scores are P("True") from the model itself, one pair at a time
    direct = {str(e.id): e.text for e in expected}
    for x in data["results"]:
        (p,) = reranker.score(QUERY, [direct[x["id"]]])
        assert x["score"] == pytest.approx(p, abs=1e-6) and 0.0 < x["score"] < 1.0


def test_ask_and_hybrid_go_through_the_reranker(client: TestClient, reranker: MLLMReranker) -> None:
    data = client.post("/api/ask", json={"query": QUERY, "k": 3}).json()
    expected = _expected(client, reranker, QUERY, 3)
    assert [x["id"] for x in data["results"]] == [e.id for e in expected]
    assert [x["score"] for x in data["results"]] == pytest.approx([e.score for e in expected])
    assert data["answer"]["text"]
    col = client.app.state.demo.collection  # type: ignore[attr-defined]
    first = col.search(QUERY, k=CANDIDATES, fetch_k=DEFAULT_FETCH_K, hybrid="rrf")
    want = rerank_results(reranker, QUERY, first, top_n=3)
    got = client.post("/api/search", json={"query": QUERY, "k": 3, "hybrid": "rrf"}).json()
    assert [x["id"] for x in got["results"]] == [e.id for e in want]
    assert [x["score"] for x in got["results"]] == pytest.approx([e.score for e in want])


def test_sweep_stays_on_the_first_stage(client: TestClient) -> None:
    data = client.post("/api/sweep", json={"query": QUERY, "k": 2}).json()
    col = client.app.state.demo.collection  # type: ignore[attr-defined]
    top = col.search(QUERY, k=2, budget=data["reference_budget"])
    assert data["budgets"][-1]["ids"] == [str(h.id) for h in top]


def test_no_reranker_and_bad_candidates(tmp_path: Path) -> None:
    from metaembed_rag.app.state import DemoState

    with pytest.raises(ValueError, match="rerank_candidates"):
        DemoState(tmp_path / "i", collection=object(), rerank_candidates=0)


def test_cli_serve_loads_the_reranker_once(
    tiny_lm_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve --rerank mllm:DIR --rerank-candidates 7 --rerank-fusion 0.25`` hands the app one
    loaded reranker with those settings (the server itself is replaced by a recorder)."""
    import metaembed_rag.app as app
    from metaembed_rag.cli import main

    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(app, "serve", lambda index, **kw: seen.append(kw))
    argv = ["serve", "--index", str(tmp_path / "index"), "--rerank", f"mllm:{tiny_lm_path}",
            "--rerank-candidates", "7", "--rerank-fusion", "0.25"]  # fmt: skip
    assert main(argv) == 0
    (kw,) = seen
    assert isinstance(kw["reranker"], MLLMReranker)
    assert kw["reranker"].fusion_weight == 0.25 and kw["rerank_candidates"] == 7
    assert kw["reranker"].model.config.name_or_path == str(tiny_lm_path)
