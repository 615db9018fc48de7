"""HTTP API of the demo app (``metaembed-rag serve``) on the real Collection and default model.

Checks behaviour and exact consistency with :meth:`Collection.search` (never retrieval quality:
the default model may hold untrained Meta tokens).
"""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the demo app needs the 'app' extra (fastapi)")
pytest.importorskip("multipart", reason="the demo app needs the 'app' extra (python-multipart)")
pytest.importorskip("pypdfium2", reason="PDF uploads need the 'pdf' extra (pypdfium2)")

from fastapi.testclient import TestClient  # noqa: E402

from metaembed_rag.app import create_app  # noqa: E402
from metaembed_rag.app.server import DemoState, safe_filename  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NOTES = (
    "Insulin resistance in muscle and liver is a major cause of type 2 diabetes.\n"
    "The Moon is Earth's only natural satellite.\n\n"
    "Photosynthesis converts light energy into chemical energy stored in glucose.\n"
)
PDF_PAGES = [
    ["Meta tokens", "", "Learnable Meta tokens are appended to the input of a transformer."],
    ["Budgets", "", "A retrieval budget chooses how many query and document vectors to use."],
]
QUERY = "What causes type 2 diabetes?"


def write_pdf(path: Path, pages: list[list[str]]) -> Path:
    """A small PDF with a text layer, written by examples/make_sample_pdf.py's helper."""
    spec = importlib.util.spec_from_file_location(
        "make_sample_pdf", REPO / "examples" / "make_sample_pdf.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_pdf(path, pages, title="Test PDF")


@pytest.fixture(scope="module")
def default_model() -> Any:
    from metaembed_rag import MetaEmbedModel
    from metaembed_rag.model import DEFAULT_MODEL

    return MetaEmbedModel.from_pretrained(DEFAULT_MODEL, device="cpu")


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo") / "index"


@pytest.fixture(scope="module")
def client(default_model: Any, index_dir: Path) -> TestClient:
    return TestClient(create_app(index_dir, model=default_model))


@pytest.fixture(scope="module")
def indexed(client: TestClient, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Upload a text file, a two-page PDF, an image and an unsupported file; index them all."""
    from PIL import Image

    pdf = write_pdf(tmp_path_factory.mktemp("pdf") / "paper.pdf", PDF_PAGES)
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(png, format="PNG")
    files = [
        ("files", ("notes.txt", NOTES.encode(), "text/plain")),
        ("files", ("paper.pdf", pdf.read_bytes(), "application/pdf")),
        ("files", ("red.png", png.getvalue(), "image/png")),
        ("files", ("data.xyz", b"\x00\x01", "application/octet-stream")),
    ]
    r = client.post("/api/upload", files=files)
    assert r.status_code == 200, r.text
    assert r.json() == {"saved": ["notes.txt", "paper.pdf", "red.png", "data.xyz"]}
    r = client.post("/api/index", json={"files": None})
    assert r.status_code == 200, r.text
    return r.json()


def state_of(client: TestClient) -> DemoState:
    return client.app.state.demo  # type: ignore[attr-defined]


def test_page_and_static_files(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert 'id="budget"' in r.text and "/static/app.js" in r.text
    assert "http" not in r.text.replace("http-equiv", "")  # no CDN / remote assets
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200


def test_info_lists_trained_budgets(client: TestClient, default_model: Any) -> None:
    info = client.get("/api/info").json()
    assert info["budgets"] == [str(b) for b in sorted(default_model.budgets)]
    assert info["default_budget"] == info["budgets"][-1]
    assert info["llm"] is None
    assert info["collection"]["folder"].endswith("index")
    assert info["uploads_dir"].endswith("index-uploads")


def test_upload_and_index_report(
    indexed: dict[str, Any], client: TestClient, index_dir: Path
) -> None:
    assert indexed["files_added"] == 2  # notes.txt and paper.pdf
    assert indexed["chunks_added"] == 3  # one text chunk + one per PDF page
    skipped = {s["path"]: s["reason"] for s in indexed["skipped"]}
    assert set(skipped) == {"red.png", "data.xyz"}
    assert "vision-language model" in skipped["red.png"]
    assert indexed["summary"].startswith("Indexed 2 new files")
    uploads = index_dir.with_name("index-uploads")  # beside the collection folder
    assert sorted(p.name for p in uploads.iterdir()) == [
        "data.xyz", "notes.txt", "paper.pdf", "red.png",
    ]  # fmt: skip
    info = client.get("/api/info").json()
    assert info["collection"]["documents"] == 3 and info["collection"]["files"] == 2
    # Re-indexing finds nothing new (resumable ingestion of the uploads folder).
    again = client.post("/api/index", json={"files": ["notes.txt", "paper.pdf"]}).json()
    assert again["files_unchanged"] == 2 and again["chunks_added"] == 0


@pytest.mark.parametrize("budget", ["1,1", "2,4", "4,8", "8,16", "16,64"])
def test_search_equals_collection_search(
    indexed: dict[str, Any], client: TestClient, budget: str
) -> None:
    r = client.post("/api/search", json={"query": QUERY, "k": 3, "budget": budget})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["budget"] == budget and data["k"] == 3 and data["latency_ms"] > 0
    expected = state_of(client).collection.search(QUERY, k=3, budget=budget)
    assert [x["id"] for x in data["results"]] == [e.id for e in expected]
    assert [x["score"] for x in data["results"]] == pytest.approx([e.score for e in expected])
    assert [x["rank"] for x in data["results"]] == [0, 1, 2]
    for x in data["results"]:
        assert [x["text"][a:b].lower() for a, b in x["highlights"]] == [
            w for w in ("cause", "type", "diabetes") if w in x["text"].lower()
        ]
        if x["source"] == "paper.pdf":
            assert x["page"] in (1, 2) and x["image_url"].startswith("/api/image/")
        else:
            assert x["source"] == "notes.txt" and x["page"] is None and x["image_url"] is None


def test_default_budget_is_the_largest(indexed: dict[str, Any], client: TestClient) -> None:
    assert client.post("/api/search", json={"query": QUERY}).json()["budget"] == "16,64"


def test_pdf_page_image_is_rendered(indexed: dict[str, Any], client: TestClient) -> None:
    data = client.post("/api/search", json={"query": "retrieval budget", "k": 3}).json()
    urls = {x["page"]: x["image_url"] for x in data["results"] if x["source"] == "paper.pdf"}
    assert set(urls) == {1, 2}
    for url in urls.values():
        r = client.get(url)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.content.startswith(b"\x89PNG")
    assert client.get("/api/image/0123456789abcdef01234567").status_code == 404


def test_ask_extractive(indexed: dict[str, Any], client: TestClient) -> None:
    data = client.post("/api/ask", json={"query": QUERY, "k": 3, "budget": "8,16"}).json()
    answer = data["answer"]
    assert answer["mode"] == "extractive" and data["answer_ms"] >= 0
    assert answer["ranking"] == "semantic+lexical"  # the collection's model ranks sentences
    # The only sentence holding all query terms is in notes.txt, whatever the ranking.
    best = max(answer["sentences"], key=lambda s: s["coverage"])
    assert best["text"].startswith("Insulin resistance") and best["coverage"] == 1.0
    assert best["source"] == "notes.txt"
    assert [best["text"][a:b] for a, b in best["highlights"]] == ["cause", "type", "diabetes"]
    assert best["result_id"] in {x["id"] for x in data["results"]}


class DuckComplete:
    """LlamaIndex-like: ``complete(prompt)`` -> ``.text``."""

    def complete(self, prompt: str) -> SimpleNamespace:
        return SimpleNamespace(text=f"DUCK-LI {prompt.count('[')} sources")


class DuckChat:
    """LangChain-like: ``invoke(messages)`` -> ``.content``."""

    def invoke(self, messages: list[tuple[str, str]]) -> SimpleNamespace:
        return SimpleNamespace(content=f"DUCK-LC {messages[1][0]}")


def _llamaindex_llm() -> tuple[Any, str]:
    if importlib.util.find_spec("llama_index") is not None:
        from llama_index.core.llms import MockLLM

        return MockLLM(), f"Question: {QUERY}"  # MockLLM echoes the prompt
    return DuckComplete(), "DUCK-LI"


def _langchain_llm() -> tuple[Any, str]:
    if importlib.util.find_spec("langchain_core") is not None:
        from langchain_core.language_models import FakeListChatModel

        return FakeListChatModel(responses=["Insulin resistance [1]."]), "Insulin resistance [1]."
    return DuckChat(), "DUCK-LC human"


@pytest.mark.parametrize(
    ("make", "kind"), [(_llamaindex_llm, "llamaindex"), (_langchain_llm, "langchain")]
)
def test_ask_with_llm(
    indexed: dict[str, Any], client: TestClient, index_dir: Path, make, kind
) -> None:
    llm, expected = make()
    app = create_app(index_dir, collection=state_of(client).collection, llm=llm)
    with TestClient(app) as llm_client:
        info = llm_client.get("/api/info").json()
        assert info["llm"]["kind"] == kind
        data = llm_client.post("/api/ask", json={"query": QUERY, "k": 2}).json()
    assert data["answer"]["mode"] == "llm" and data["answer"]["kind"] == kind
    assert expected in data["answer"]["text"]
    assert len(data["results"]) == 2


def test_llm_failure_is_reported_with_results(
    indexed: dict[str, Any], client: TestClient, index_dir: Path
) -> None:
    class Broken:
        def invoke(self, messages: Any) -> Any:
            raise ConnectionError("model server down")

    app = create_app(index_dir, collection=state_of(client).collection, llm=Broken())
    data = TestClient(app).post("/api/ask", json={"query": QUERY, "k": 2}).json()
    assert data["answer"]["text"] is None
    assert data["answer"]["error"] == "The LLM call failed: ConnectionError: model server down"
    assert len(data["results"]) == 2


def test_sweep_matches_collection_search(indexed: dict[str, Any], client: TestClient) -> None:
    data = client.post("/api/sweep", json={"query": QUERY, "k": 2}).json()
    rows = data["budgets"]
    assert [r["budget"] for r in rows] == ["1,1", "2,4", "4,8", "8,16", "16,64"]
    assert data["reference_budget"] == "16,64" and rows[-1]["agreement"] == 1.0
    assert data["encode_ms"] > 0
    collection = state_of(client).collection
    for row in rows:
        expected = collection.search(QUERY, k=2, budget=row["budget"])
        assert row["ids"] == [e.id for e in expected]
        assert row["top_score"] == pytest.approx(expected[0].score)
        assert row["latency_ms"] == pytest.approx(data["encode_ms"] + row["score_ms"], abs=2e-3)
        assert 0.0 <= row["agreement"] <= 1.0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"query": QUERY, "budget": "3,3"}, "Budget (3,3) is not one the model was trained with"),
        ({"query": QUERY, "budget": "many"}, "Cannot parse budget 'many'"),
        ({"query": "  "}, "Type a question first"),
        ({"query": QUERY, "k": 0}, "'k' must be an integer from 1 to 50"),
    ],
)
def test_bad_requests_name_the_problem(
    indexed: dict[str, Any], client: TestClient, body: dict[str, Any], message: str
) -> None:
    for path in ("/api/search", "/api/ask"):
        r = client.post(path, json=body)
        assert r.status_code == 400 and message in r.json()["detail"]


def test_index_unknown_upload_is_404(client: TestClient) -> None:
    r = client.post("/api/index", json={"files": ["never-uploaded.txt"]})
    assert r.status_code == 404 and "was not uploaded" in r.json()["detail"]


def test_empty_collection(default_model: Any, tmp_path: Path) -> None:
    c = TestClient(create_app(tmp_path / "empty", model=default_model))
    r = c.post("/api/search", json={"query": QUERY})
    assert r.status_code == 400 and "holds no documents" in r.json()["detail"]
    r = c.post("/api/sweep", json={"query": QUERY})
    assert r.status_code == 400 and "index is empty" in r.json()["detail"]
    r = c.post("/api/index", json=None)
    assert r.status_code == 400 and "Nothing to index" in r.json()["detail"]


def test_upload_names_are_confined_and_size_limited(default_model: Any, tmp_path: Path) -> None:
    app = create_app(tmp_path / "idx", model=default_model, max_upload_mb=0.001)
    c = TestClient(app)
    r = c.post("/api/upload", files=[("files", ("../../evil name?.txt", b"hello", "text/plain"))])
    assert r.json() == {"saved": ["evil name_.txt"]}
    assert (tmp_path / "idx-uploads" / "evil name_.txt").read_bytes() == b"hello"
    r = c.post("/api/upload", files=[("files", ("big.txt", b"x" * 5000, "text/plain"))])
    assert r.status_code == 413 and "upload limit" in r.json()["detail"]
    assert not (tmp_path / "idx-uploads" / "big.txt").exists()
    assert sorted(p.name for p in (tmp_path / "idx-uploads").iterdir()) == ["evil name_.txt"]


def test_uploads_folder_option(default_model: Any, tmp_path: Path) -> None:
    c = TestClient(create_app(tmp_path / "idx", model=default_model, uploads_dir=tmp_path / "up"))
    files = [("files", ("a.txt", b"Cats purr.", "text/plain"))]
    assert c.post("/api/upload", files=files).json() == {"saved": ["a.txt"]}
    assert c.post("/api/index", json=None).json()["files_added"] == 1
    assert (tmp_path / "up" / "a.txt").is_file()
    with pytest.raises(ValueError, match="inside the collection folder"):
        create_app(tmp_path / "idx", model=default_model, uploads_dir=tmp_path / "idx" / "up")


def test_safe_filename() -> None:
    assert safe_filename("C:\\docs\\report (1).pdf") == "report (1).pdf"
    with pytest.raises(Exception, match="Unusable file name"):
        safe_filename("..")
    assert len(safe_filename("a" * 300 + ".pdf")) <= 180


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # makes `import uvicorn` fail
    with pytest.raises(ImportError, match=r"uvicorn.*metaembed-rag\[app\]"):
        create_app(tmp_path / "x")


def test_vlm_collection_serves_uploaded_images(tiny_qwen2vl_path: Path, tmp_path: Path) -> None:
    """With a vision-language model, images and PDF page images are indexed and shown."""
    from PIL import Image

    from metaembed_rag import MetaEmbedModel

    model = MetaEmbedModel.from_backbone(tiny_qwen2vl_path, device="cpu", max_length=256)
    c = TestClient(create_app(tmp_path / "vidx", model=model))
    png = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 120, 200)).save(png, format="PNG")
    pdf = write_pdf(tmp_path / "one.pdf", PDF_PAGES[:1])
    files = [
        ("files", ("blue.png", png.getvalue(), "image/png")),
        ("files", ("one.pdf", pdf.read_bytes(), "application/pdf")),
    ]
    assert c.post("/api/upload", files=files).status_code == 200
    report = c.post("/api/index", json=None).json()
    assert report["skipped"] == [] and report["files_added"] == 2
    assert report["chunks_added"] == 3  # the image, the PDF page text and its page image
    data = c.post("/api/search", json={"query": "a blue picture", "k": 3}).json()
    assert len(data["results"]) == 3
    by_id = {x["id"]: x for x in data["results"]}
    images = [x for x in by_id.values() if x["text"] == ""]
    assert len(images) == 2 and all(x["image_url"] for x in images)
    for x in images:
        r = c.get(x["image_url"])
        assert r.status_code == 200 and r.content.startswith(b"\x89PNG")


def test_cli_serve_arguments(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    from metaembed_rag import cli

    args = cli.build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.model, args.llm) == ("127.0.0.1", 8000, None, None)
    assert (args.index, args.budget) == (".metaembed/index", None)
    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr("metaembed_rag.app.serve", lambda index, **kw: calls.append((index, kw)))
    argv = ["serve", "--index", str(tmp_path), "--port", "9123", "--budget", "8,16",
            "--llm", "my_llms:chat"]  # fmt: skip
    assert cli.main(argv) == 0
    ((index, kw),) = calls
    assert index == str(tmp_path) and kw["port"] == 9123 and kw["llm"] == "my_llms:chat"
    assert kw["default_budget"] == "8,16" and callable(kw["on_ready"])
    # the URL is printed before anything loads (serve binds the port, then loads)
    assert capsys.readouterr().out.startswith("metaembed-rag demo: http://127.0.0.1:9123/")
    kw["on_ready"]()
    assert capsys.readouterr().out.startswith("Ready in ")
    for bad, message in ((["--llm", "no-colon"], "expected 'module:attr'"),
                         (["--budget", "big"], "Cannot parse budget 'big'")):  # fmt: skip
        assert cli.main(["serve", "--index", str(tmp_path), *bad]) == 2
        assert message in capsys.readouterr().err
    assert len(calls) == 1


def test_serve_reports_a_port_in_use_before_loading(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    import socket

    from metaembed_rag import cli
    from metaembed_rag.app import server

    monkeypatch.setattr(server, "create_app", lambda *a, **k: pytest.fail("loaded the app"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc = cli.main(["serve", "--index", str(tmp_path / "idx"), "--port", str(port)])
    out, err = capsys.readouterr()
    assert rc == 2 and out.startswith(f"metaembed-rag demo: http://127.0.0.1:{port}/")
    assert err.strip() == (
        f"error: port {port} on 127.0.0.1 is already in use (another server?): stop it or "
        f"choose another port, e.g. --port {port + 1}."
    )
    assert not (tmp_path / "idx").exists()


def test_default_budget_is_configurable(
    indexed: dict[str, Any], client: TestClient, index_dir: Path
) -> None:
    collection = state_of(client).collection
    app = create_app(index_dir, collection=collection, default_budget="8,16")
    c = TestClient(app)
    assert c.get("/api/info").json()["default_budget"] == "8,16"
    data = c.post("/api/search", json={"query": QUERY, "k": 2}).json()
    assert data["budget"] == "8,16"
    expected = collection.search(QUERY, k=2, budget="8,16")
    assert [x["id"] for x in data["results"]] == [e.id for e in expected]
    with pytest.raises(ValueError, match=r"default_budget: Budget \(3,3\) is not one"):
        create_app(index_dir, collection=collection, default_budget="3,3")


def test_example_answers_once(default_model: Any, tmp_path: Path, capsys) -> None:
    """examples/visual_rag_chatbot.py indexes the sample documents and answers (no server)."""
    spec = importlib.util.spec_from_file_location(
        "visual_rag_chatbot", REPO / "examples" / "visual_rag_chatbot.py"
    )
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    samples = sorted(p for p in example.SAMPLE_DOCS.iterdir() if not p.name.startswith("."))
    argv = ["--index", str(tmp_path / "idx"), "--once", "What is a retrieval budget?"]
    assert example.main(argv, model=default_model) == 0
    out = capsys.readouterr().out
    assert f"Indexed {len(samples)} new files" in out
    assert "Q: What is a retrieval budget?  (budget (16,64)" in out
    assert "A (extractive): " in out and out.count("\n  #") == 3
    assert example.main(argv, model=default_model) == 0  # resumable: nothing re-indexed
    assert f"0 new files, 0 changed, {len(samples)} unchanged" in capsys.readouterr().out


def test_hybrid_search_equals_collection_search(
    indexed: dict[str, Any], client: TestClient
) -> None:
    r = client.post("/api/search", json={"query": QUERY, "k": 3, "hybrid": "rrf"})
    assert r.status_code == 200, r.text
    data = r.json()
    expected = state_of(client).collection.search(QUERY, k=3, hybrid="rrf")
    assert data["hybrid"] == "rrf"
    assert [x["id"] for x in data["results"]] == [e.id for e in expected]
    assert [x["score"] for x in data["results"]] == pytest.approx([e.score for e in expected])
    bad = client.post("/api/search", json={"query": QUERY, "hybrid": "sum"})
    assert bad.status_code == 400 and "'hybrid' must be" in bad.json()["detail"]
