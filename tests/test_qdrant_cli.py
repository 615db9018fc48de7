"""`metaembed-rag index / search --qdrant PATH --collection NAME` and a Collection on Qdrant
(local mode), against the same documents indexed in a folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip(
    "qdrant_client", reason="the Qdrant backend needs the qdrant extra: pip install -e '.[qdrant]'"
)

from metaembed_rag import MetaEmbedModel  # noqa: E402
from metaembed_rag.cli import main  # noqa: E402
from metaembed_rag.collection import Collection  # noqa: E402
from metaembed_rag.collection.storage import qdrant_storage  # noqa: E402
from metaembed_rag.index.qdrant import QdrantBackend  # noqa: E402

TOPICS = [
    "Photosynthesis turns light into chemical energy in plant leaves.",
    "The stock market fell sharply after the interest rate decision.",
    "Volcanic eruptions release ash and sulfur dioxide into the air.",
    "A transformer model uses attention over all input tokens.",
    "Bread dough rises because yeast ferments the sugars.",
    "The goalkeeper saved a penalty in the final minute of the match.",
]


@pytest.fixture(scope="module")
def tiny_model(tiny_bert_path: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    model = MetaEmbedModel.from_backbone(tiny_bert_path)
    return str(model.save_pretrained(tmp_path_factory.mktemp("qd_model") / "tiny"))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, text in enumerate(TOPICS):
        (folder / f"doc{i}.txt").write_text(text, encoding="utf-8")
    return folder


def _search(capsys, index: Path, *extra: str) -> dict[str, float]:
    """Every chunk's score (k = all of them: near-tied scores of the tiny random model may
    swap places between bfloat16 local rows and float32 Qdrant vectors)."""
    rc = main(["search", "attention in neural networks", "--index", str(index), "--k", "50",
               "--json", *extra])  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 0, err
    return {r["id"]: r["score"] for r in json.loads(out)["results"]}


def _close(a: dict[str, float], b: dict[str, float]) -> bool:
    """Same ids, scores equal up to the folder index's bfloat16 rounding."""
    return a.keys() == b.keys() and all(abs(a[i] - b[i]) <= 0.01 * abs(b[i]) for i in a)


def test_cli_index_and_search_on_qdrant_equal_the_folder_index(
    tmp_path: Path, corpus: Path, tiny_model: str, capsys
) -> None:
    local, qd, store = tmp_path / "local", tmp_path / "qd", tmp_path / "qdrant-data"
    for index, extra in ((local, []), (qd, ["--qdrant", str(store), "--collection", "docs"])):
        rc = main(["index", str(corpus), "--index", str(index), "--model", tiny_model,
                   "--no-progress", *extra])  # fmt: skip
        out, err = capsys.readouterr()
        assert rc == 0, err
    config = json.loads((qd / "collection.json").read_text())
    assert config["storage"] == {"kind": "qdrant", "location": str(store), "collection": "docs"}
    assert not (qd / "index").exists()  # the vectors live in Qdrant
    expected = _search(capsys, local)
    assert len(expected) >= len(TOPICS)
    assert _close(_search(capsys, qd), expected)  # the storage recorded in collection.json
    assert _close(_search(capsys, qd, "--qdrant", str(store), "--collection", "docs"), expected)
    # re-running finds nothing new; a changed file is re-indexed in Qdrant
    (corpus / "doc3.txt").write_text("Attention layers in neural networks.", encoding="utf-8")
    for index in (local, qd):
        assert main(["index", str(corpus), "--index", str(index), "--no-progress"]) == 0
    capsys.readouterr()
    assert _close(_search(capsys, qd), _search(capsys, local))
    with Collection.open(local, model=tiny_model) as col:
        chunks = len(col)
    with Collection.open(qd, model=tiny_model) as col:
        assert isinstance(col.index.backend, QdrantBackend)
        assert len(col) == chunks
        assert col.info()["coarse_kind"] == "qdrant"


def test_cli_errors_are_one_line(tmp_path: Path, corpus: Path, tiny_model: str, capsys) -> None:
    rc = main(["index", str(corpus), "--index", str(tmp_path / "a"), "--model", tiny_model,
               "--qdrant", str(tmp_path / "s"), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc != 0 and "--qdrant and --collection go together" in err and "Traceback" not in err
    assert main(["index", str(corpus), "--index", str(tmp_path / "b"), "--model", tiny_model,
                 "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    rc = main(["search", "x", "--index", str(tmp_path / "b"), "--qdrant", str(tmp_path / "s"),
               "--collection", "docs"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc != 0 and "keeps its index in the folder" in err


def test_a_new_collection_refuses_a_qdrant_collection_with_documents(
    tmp_path: Path, corpus: Path, tiny_model: str
) -> None:
    storage = qdrant_storage(str(tmp_path / "s"), "docs")
    with Collection.create(tmp_path / "one", tiny_model, storage=storage) as col:
        col.add_paths([corpus], progress=False)
    with pytest.raises(Exception, match="already holds documents"):
        Collection.create(tmp_path / "two", tiny_model, storage=storage)


def test_serve_opens_the_collection_on_qdrant(
    tmp_path: Path, tiny_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve --qdrant --collection` hands the demo a collection whose index is in Qdrant
    (the server itself is not started: app.serve is replaced)."""
    pytest.importorskip("fastapi", reason="the demo needs the app extra")
    from metaembed_rag import app

    seen: dict = {}
    monkeypatch.setattr(app, "serve", lambda index, **kw: seen.update(kw, index=index))
    rc = main(["serve", "--index", str(tmp_path / "demo"), "--model", tiny_model,
               "--qdrant", str(tmp_path / "s"), "--collection", "demo"])  # fmt: skip
    assert rc == 0
    col = seen["collection"]
    assert isinstance(col.index.backend, QdrantBackend) and col.index.backend.collection == "demo"
    col.close()


def test_a_failed_first_run_removes_the_qdrant_collection_it_created(
    tmp_path: Path, corpus: Path, tiny_model: str, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like the index folder, the new Qdrant collection of a run that fails goes away, so the
    same command can run again."""
    from qdrant_client import QdrantClient

    def boom(*a, **k):
        raise OSError("disk on fire")

    monkeypatch.setattr(Collection, "add_paths", boom)
    argv = ["index", str(corpus), "--index", str(tmp_path / "i"), "--model", tiny_model,
            "--qdrant", str(tmp_path / "s"), "--collection", "docs", "--no-progress"]  # fmt: skip
    assert main(argv) != 0
    assert "disk on fire" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()
    client = QdrantClient(path=str(tmp_path / "s"))
    assert not client.collection_exists("docs")
    client.close()
    monkeypatch.undo()
    assert main(argv) == 0
