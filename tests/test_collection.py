"""metaembed_rag.collection: create/open, resumable add_paths, crash safety, search parity."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
import torch

from metaembed_rag import MetaEmbedModel, TwoStageRetriever, maxsim
from metaembed_rag.collection import Collection, CollectionError, IngestReport, SearchResult
from metaembed_rag.index import MultiVectorIndex

ROOT = Path(__file__).resolve().parents[1]
TOPICS = [
    "Photosynthesis converts light energy into chemical energy in plant leaves.",
    "The Moon orbits the Earth and raises the ocean tides.",
    "Insulin resistance is a major cause of type 2 diabetes.",
    "Late interaction sums the best match of every query vector among document vectors.",
    "Volcanoes erupt molten rock called lava from inside the Earth.",
]


@pytest.fixture(scope="session")
def model_dir(tiny_bert_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = MetaEmbedModel.from_backbone(tiny_bert_path, seed=0)
    return model.save_pretrained(tmp_path_factory.mktemp("col_model") / "tiny")


@pytest.fixture(scope="session")
def model(model_dir: Path) -> MetaEmbedModel:
    return MetaEmbedModel.from_pretrained(model_dir)


#: Words of the tiny test tokenizer's vocabulary: one token each (others are spelled out).
_ONE_TOKEN_TEXT = (
    "dog dogs cat man woman child children girl boy people red blue green black white brown "
    "yellow running playing sitting standing water grass ball street beach snow field park bike "
    "car house tree"
)
ONE_TOKEN = _ONE_TOKEN_TEXT.split()


def _words(i: int, n: int = 30) -> str:
    """``n`` one-token words (with chunk_size 20 / overlap 5 tokens: 2 chunks for 30)."""
    return " ".join(ONE_TOKEN[(i * 7 + j) % len(ONE_TOKEN)] for j in range(n))


def _docs(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(len(TOPICS)):
        (root / f"doc{i}.txt").write_text(_words(i))
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "page.html").write_text("<title>Tides</title><p>A dog on the beach.</p>")
    (root / "sub" / "notes.md").write_text("# Notes\n\nA cat in the park.")
    return root


def _new(tmp_path: Path, model: MetaEmbedModel, model_dir: Path, **kw) -> Collection:
    return Collection.create(tmp_path / "col", model, model_name=str(model_dir), chunk_size=20,
                             chunk_overlap=5, **kw)  # fmt: skip


def _hits(results: list[SearchResult]) -> list[tuple[str, float]]:
    return [(r.id, r.score) for r in results]


def test_create_add_search_equals_core_api(tmp_path: Path, model, model_dir) -> None:
    docs = _docs(tmp_path / "docs")
    col = _new(tmp_path, model, model_dir)
    report = col.add_paths([docs], progress=False)
    assert isinstance(report, IngestReport)
    assert (report.files_added, report.files_updated, report.files_unchanged) == (7, 0, 0)
    assert report.chunks_added == len(col) == 5 * 2 + 2  # 5 files of 2 chunks + html + md
    assert col.config["chunk_unit"] == "tokens"  # chunked by the model's tokenizer
    assert report.skipped == [] and report.chunks_deleted == 0
    assert "7 new files" in report.summary()
    results = col.search("What raises the tides?", k=10)
    assert [r.rank for r in results] == list(range(10))
    # same as the core API over the same index, and as exhaustive MaxSim (all docs reranked)
    core = TwoStageRetriever(model, col.index).search("What raises the tides?", k=10)
    assert _hits(results) == [(h.id, h.score) for h in core]
    exhaustive = col.index.search(model.encode_queries(["What raises the tides?"]), 10,
                                  mode="exhaustive")[0]  # fmt: skip
    assert _hits(results) == [(h.id, h.score) for h in exhaustive]
    top = results[0]
    assert top.text and top.image is None and top.metadata["source"].endswith(top.id.split("#")[0])
    for budget in ("1,1", "8,16", (4, 8)):
        got = col.search("moon", k=3, budget=budget, fetch_k=4)
        ref = TwoStageRetriever(model, col.index).search("moon", 3, fetch_k=4, rerank_budget=budget)
        assert _hits(got) == [(h.id, h.score) for h in ref]
    filtered = col.search("tides", k=10, filter={"type": "html"})
    assert [r.metadata["type"] for r in filtered] == ["html"]
    info = col.info()
    assert info["documents"] == 12 and info["files"] == 7 and info["dim"] == model.dim
    assert info["file_types"] == {"html": 1, "markdown": 1, "text": 5}
    assert info["model"] == str(model_dir) and info["bytes_on_disk"] > 0
    assert info["coarse_kind"] == "flat" and info["budgets"][-1] == "16,64"
    col.close()

    # reopen by folder: the model named in collection.json is loaded; results are identical
    again = Collection.open(tmp_path / "col")
    assert _hits(again.search("What raises the tides?", k=10)) == _hits(results)
    again.close()


def test_resumable_only_new_or_changed_files_are_encoded(tmp_path: Path, model, model_dir) -> None:
    docs = _docs(tmp_path / "docs")
    col = _new(tmp_path, model, model_dir)
    col.add_paths([docs], progress=False)
    ids_before = set(col.index.ids)
    encoded: list[str] = []
    real = model.encode_documents

    def spy(items, **kw):
        encoded.extend(str(i) for i in items)
        return real(items, **kw)

    col.model.encode_documents = spy  # type: ignore[method-assign]
    try:
        second = col.add_paths([docs], progress=False)
        assert (second.files_added, second.files_updated, second.files_unchanged) == (0, 0, 7)
        assert second.chunks_added == 0 and encoded == []
        (docs / "doc1.txt").write_text("The Moon is made of rock.")  # now one chunk
        (docs / "new.md").write_text("A new dog in the park.")
        third = col.add_paths([docs], progress=False)
    finally:
        del col.model.encode_documents
    assert (third.files_added, third.files_updated, third.files_unchanged) == (1, 1, 6)
    assert (third.chunks_added, third.chunks_deleted) == (2, 2)
    assert sorted(encoded) == ["A new dog in the park.", "The Moon is made of rock."]
    doc1 = str((docs / "doc1.txt").resolve().relative_to(Path.cwd().resolve())) \
        if (docs / "doc1.txt").resolve().is_relative_to(Path.cwd().resolve()) \
        else (docs / "doc1.txt").resolve().as_posix()  # fmt: skip
    assert set(col.index.ids) == (ids_before - {f"{doc1}#p0c1"}) | {
        next(i for i in col.index.ids if i.endswith("new.md#p0c0"))
    }
    assert col.index.get(f"{doc1}#p0c0")["text"] == "The Moon is made of rock."
    # other chunking re-indexes everything; the same chunking again is a no-op
    fourth = col.add_paths([docs], chunk_size=8, chunk_overlap=0, progress=False)
    assert fourth.files_updated == 8 and fourth.files_unchanged == 0
    assert col.add_paths([docs], chunk_size=8, chunk_overlap=0, progress=False).chunks_added == 0
    # state survives a reopen, and so does the new chunking: a plain run does not re-chunk
    col.close()
    col = Collection.open(tmp_path / "col")
    assert (col.config["chunk_size"], col.config["chunk_overlap"]) == (8, 0)
    assert col.add_paths([docs], progress=False).files_unchanged == 8
    assert col.add_paths([docs], chunk_size=8, chunk_overlap=0, progress=False).files_unchanged == 8
    col.close()


def test_a_moved_or_recloned_checkout_reuses_its_chunks(
    tmp_path: Path, model, model_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunk ids name files relative to the working directory, so the same tree indexed from
    another checkout is the same source: unchanged files are re-keyed (not re-encoded, not
    refused as id collisions) and changed ones replaced."""
    import shutil

    first, second = tmp_path / "clone1", tmp_path / "clone2"
    _docs(first / "docs")
    col = _new(tmp_path, model, model_dir)
    monkeypatch.chdir(first)
    col.add_paths(["docs"], progress=False)
    ids = set(col.index.ids)
    shutil.copytree(first, second)
    (second / "docs" / "doc0.txt").write_text("A red ball and a blue ball.")
    monkeypatch.chdir(second)
    encoded: list[str] = []
    real = model.encode_documents
    col.model.encode_documents = lambda items, **kw: encoded.extend(items) or real(items, **kw)  # type: ignore[method-assign]
    try:
        report = col.add_paths(["docs"], progress=False)
    finally:
        del col.model.encode_documents
    assert report.skipped == []
    assert (report.files_added, report.files_updated, report.files_unchanged) == (0, 1, 6)
    assert encoded == ["A red ball and a blue ball."]
    assert set(col.index.ids) == ids - {"docs/doc0.txt#p0c1"}
    assert all(Path(k).is_relative_to(second.resolve()) for k in col.files)
    assert len(col.files) == 7
    col.close()
    # the re-keyed manifest was saved: a reopen sees nothing to do, even with clone1 gone
    shutil.rmtree(first)
    again = Collection.open(tmp_path / "col")
    assert again.add_paths(["docs"], progress=False).files_unchanged == 7
    again.close()


@pytest.mark.parametrize("crash_at", ["index_save", "final_manifest"])
def test_interrupted_save_leaves_previous_state_loadable(
    tmp_path: Path, model, model_dir, monkeypatch: pytest.MonkeyPatch, crash_at: str
) -> None:
    docs = _docs(tmp_path / "docs")
    col = _new(tmp_path, model, model_dir)
    col.add_paths([docs / "doc0.txt", docs / "doc1.txt"], progress=False)
    before = set(col.index.ids)
    (docs / "doc0.txt").write_text("A white dog in the snow.")

    import metaembed_rag.collection as cmod

    real_write = cmod.Collection._write_files
    calls = {"n": 0}

    def failing_save(self, path=None):
        raise OSError("disk full (simulated)")

    def failing_write(self, pending=None):
        calls["n"] += 1
        if calls["n"] == 2:  # after the pending manifest and the index save
            raise OSError("power cut (simulated)")
        return real_write(self, pending)

    if crash_at == "index_save":
        monkeypatch.setattr(MultiVectorIndex, "save", failing_save)
    else:
        monkeypatch.setattr(cmod.Collection, "_write_files", failing_write)
    with pytest.raises(OSError, match="simulated"):
        col.add_paths([docs], progress=False)
    monkeypatch.undo()
    col.close()

    reopened = Collection.open(tmp_path / "col")
    assert json.loads((tmp_path / "col" / "files.json").read_text())["pending"] == {}
    ids = set(reopened.index.ids)
    # the touched files are gone (they get re-indexed); untouched doc1 is intact
    doc1_ids = {i for i in before if "doc1.txt" in i}
    assert doc1_ids <= ids and not any("doc0.txt" in i for i in ids)
    assert len(reopened.files) == 1
    report = reopened.add_paths([docs], progress=False)
    assert report.files_unchanged == 1 and report.files_added == 6 and not report.skipped
    assert reopened.index.get(next(i for i in reopened.index.ids if "doc0.txt" in i))["text"] == (
        "A white dog in the snow."
    )
    reopened.close()


def test_bad_files_are_skipped_not_fatal(tmp_path: Path, model, model_dir) -> None:
    docs = _docs(tmp_path / "docs")
    (docs / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    (docs / "broken.pdf").write_bytes(b"not a pdf")
    (docs / "empty.md").write_text("")
    (docs / "script.py").write_text("print('ignored')")
    pil = pytest.importorskip("PIL.Image")
    pil.new("RGB", (4, 4)).save(docs / "photo.png")
    col = _new(tmp_path, model, model_dir)
    report = col.add_paths([docs], progress=False)
    assert report.files_added == 7 and report.files_ignored == 1
    skipped = dict(report.skipped)
    assert sorted(Path(k).name for k in skipped) == ["broken.pdf", "empty.md", "latin.txt",
                                                     "photo.png"]  # fmt: skip
    reasons = {Path(k).name: v for k, v in skipped.items()}
    assert "not UTF-8" in reasons["latin.txt"] and "vision-language" in reasons["photo.png"]
    assert "Skipped 4 unreadable file(s)" in report.summary()
    # skipped files are not recorded: fixing one makes the next run pick it up
    (docs / "latin.txt").write_text("café au lait")
    again = col.add_paths([docs], progress=False)
    assert again.files_added == 1 and len(again.skipped) == 3
    col.close()


def test_errors(tmp_path: Path, model, model_dir) -> None:
    col = _new(tmp_path, model, model_dir)
    with pytest.raises(ValueError, match="holds no documents"):
        col.search("anything")
    with pytest.raises(FileNotFoundError, match="missing-folder"):
        col.add_paths([tmp_path / "missing-folder"], progress=False)
    with pytest.raises(ValueError, match="vision-language"):
        col.add_paths([tmp_path], pdf_page_images=True, progress=False)
    col.add_texts(["alpha beta", "gamma delta"], ids=["a", "b"], metadatas=[{"x": 1}, None])
    assert col.search("alpha", k=5)[0].id in {"a", "b"}
    with pytest.raises(ValueError, match=r"Budget \(3,3\).*Valid budgets: \(1,1\)"):
        col.search("alpha", budget="3,3")
    with pytest.raises(ValueError, match="already in the index"):
        col.add_texts(["again"], ids=["a"])
    # One bare string is one text, never one document per character: refused, nothing added.
    with pytest.raises(
        TypeError, match=r"not one string; wrap a single text: add_texts\(\[text\]\)"
    ):
        col.add_texts("a bare string")
    assert len(col) == 2 and sorted(col.index.ids) == ["a", "b"]
    col.close()
    with pytest.raises(FileExistsError, match="already holds a collection"):
        Collection.create(tmp_path / "col", model)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        Collection.create(tmp_path / "busy", model)
    with pytest.raises(CollectionError, match="No collection at"):
        Collection.open(tmp_path / "busy")
    other = MetaEmbedModel.from_pretrained(model_dir)
    other.init_meta_parameters(seed=123)
    with pytest.raises(CollectionError, match="fingerprint.*re-index"):
        Collection.open(tmp_path / "col", model=other)
    anonymous = Collection.create(tmp_path / "anon", model)
    anonymous.close()
    with pytest.raises(CollectionError, match="records no model name"):
        Collection.open(tmp_path / "anon")
    assert len(Collection.open(tmp_path / "anon", model=model)) == 0


def test_jsonl_ids_and_collisions_delete_source(tmp_path: Path, model, model_dir) -> None:
    a = tmp_path / "a.jsonl"
    a.write_text("".join(json.dumps({"_id": f"d{i}", "title": "T", "text": t}) + "\n"
                         for i, t in enumerate(TOPICS)))  # fmt: skip
    b = tmp_path / "b.jsonl"
    b.write_text(json.dumps({"_id": "d1", "text": "clash"}) + "\n")
    col = Collection.open_or_create(tmp_path / "col", model, model_name=str(model_dir))
    report = col.add_paths([a, b], progress=False)
    assert report.files_added == 1 and sorted(col.index.ids) == [f"d{i}" for i in range(5)]
    assert "already used by" in report.skipped[0][1] and "b.jsonl" in report.skipped[0][0]
    assert col.index.get("d2")["text"] == "T " + TOPICS[2]
    assert col.delete_source(a) == 5 and len(col) == 0 and col.files == {}
    with pytest.raises(KeyError, match="not indexed"):
        col.delete_source(a)
    assert col.add_paths([b], progress=False).files_added == 1  # the id is free now
    # indexing a folder that contains the collection never ingests the collection's own files
    again = col.add_paths([tmp_path], progress=False)  # a.jsonl clashes with b.jsonl now
    assert again.files_unchanged == 1 and [Path(n).name for n, _ in again.skipped] == ["a.jsonl"]
    assert again.files_added == 0 and again.files_ignored == 0  # col/ itself is left out
    col.close()
    same = Collection.open_or_create(tmp_path / "col")
    assert same.index.ids == ["d1"]
    same.close()


def test_images_and_pdf_pages_with_a_vlm(tmp_path: Path, tiny_qwen2vl_path: Path) -> None:
    pil = pytest.importorskip("PIL.Image")
    pytest.importorskip("pypdfium2")
    write_pdf = runpy.run_path(str(ROOT / "examples" / "make_sample_pdf.py"))["write_pdf"]
    vlm = MetaEmbedModel.from_backbone(tiny_qwen2vl_path, use_chat_template=False, max_length=64)
    docs = tmp_path / "docs"
    docs.mkdir()
    pil.new("RGB", (32, 32), "blue").save(docs / "blue.png")
    write_pdf(docs / "two.pdf", [["red apples"], ["green pears"]])
    col = Collection.create(tmp_path / "col", vlm)
    report = col.add_paths([docs], pdf_page_images=True, progress=False, batch_size=2)
    assert report.files_added == 2 and not report.skipped
    ids = col.index.ids
    assert sum(i.endswith("img") for i in ids) == 3 and len(ids) == 5  # 1 image, 2 pages + 2 texts
    page_imgs = sorted((tmp_path / "col" / "pages").glob("*.png"))
    assert len(page_imgs) == 2
    results = col.search(docs / "blue.png", k=5)  # an image query
    images = {r.id: r.image for r in results if r.image is not None}
    assert len(images) == 3 and all(p.is_file() for p in images.values())
    # the page image path is stored relative to the collection (the folder can move)
    page_hit = next(r for r in results if r.metadata["type"] == "pdf" and r.image is not None)
    assert not Path(page_hit.metadata["image"]).is_absolute()
    ref = TwoStageRetriever(vlm, col.index).search(docs / "blue.png", 5)
    assert _hits(results) == [(h.id, h.score) for h in ref]
    added = col.add_images([docs / "blue.png"], ids=["again"], texts=["a blue square"])
    assert added == ["again"] and col.search("blue", k=6, filter={"type": "image"})
    col.close()


def test_search_scores_equal_maxsim_of_fresh_vectors(tmp_path: Path, model, model_dir) -> None:
    col = _new(tmp_path, model, model_dir)
    col.add_texts(TOPICS)
    results = col.search("diabetes", k=5)
    d = model.encode_documents(TOPICS).to(torch.bfloat16).float()  # the index stores bf16
    scores = maxsim(model.encode_queries(["diabetes"]), d)[0]
    order = sorted(range(5), key=lambda i: (-scores[i].item(), i))
    assert [r.id for r in results] == [f"text:{i}" for i in order]
    assert [r.score for r in results] == pytest.approx([scores[i].item() for i in order], abs=1e-5)
    col.close()


def test_ctrl_c_keeps_finished_files(tmp_path: Path, model, model_dir) -> None:
    docs = _docs(tmp_path / "docs")
    col = _new(tmp_path, model, model_dir)
    real = model.encode_documents
    calls = {"n": 0}

    def interrupt_on_third(items, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(items, **kw)

    col.model.encode_documents = interrupt_on_third  # type: ignore[method-assign]
    try:
        with pytest.raises(KeyboardInterrupt):
            col.add_paths([docs], progress=False)
    finally:
        del col.model.encode_documents
    col.close()
    col = Collection.open(tmp_path / "col")
    assert len(col.files) == 2  # the two files finished before the interrupt were saved
    report = col.add_paths([docs], progress=False)
    assert (report.files_unchanged, report.files_added) == (2, 5)
    col.close()


def test_block_encoding_gives_the_vectors_of_one_call(
    tmp_path: Path, model, model_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    import metaembed_rag.collection.indexer as indexer

    monkeypatch.setattr(indexer, "ENCODE_BLOCK", 3)  # -> blocks of 4 chunks with batch_size=2
    texts = [" ".join(["word"] * (3 + (7 * i) % 11)) + f" doc{i}" for i in range(11)]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n"
                              for i, t in enumerate(texts)))  # fmt: skip
    col = _new(tmp_path, model, model_dir)
    calls: list[list[str]] = []
    real = model.encode_documents

    def spy(items, **kw):
        calls.append(list(items))
        return real(items, **kw)

    col.model.encode_documents = spy  # type: ignore[method-assign]
    try:
        col.add_paths([corpus], batch_size=2, progress=False)
    finally:
        del col.model.encode_documents
    # each call gets whole batches, already in encode_documents' own order (longest first), so
    # every batch of 2 holds exactly what it holds in a single call over all the texts
    assert [len(c) for c in calls] == [4, 4, 3]
    flat = [t for c in calls for t in c]
    assert flat == sorted(texts, key=lambda t: -len(t))
    one_call = model.encode_documents(texts, batch_size=2).to(torch.bfloat16).float()
    for i in range(len(texts)):
        assert torch.equal(torch.as_tensor(col.index.get(f"d{i}")["vectors"]), one_call[i])
    col.close()


def test_two_writers_do_not_lose_each_others_files(tmp_path: Path, model, model_dir) -> None:
    docs = _docs(tmp_path / "docs")
    first = _new(tmp_path, model, model_dir)
    second = Collection.open(tmp_path / "col", model=model)  # loaded before first writes
    first.add_paths([docs / "doc0.txt"], progress=False)
    second.add_paths([docs / "doc1.txt"], progress=False)  # reloads first's commit, then adds
    first.close()
    second.close()
    col = Collection.open(tmp_path / "col", model=model)
    assert sorted(Path(k).name for k in col.files) == ["doc0.txt", "doc1.txt"]
    assert len(col) == 4
    col.close()


def test_a_reader_never_repairs_a_save_in_progress(tmp_path: Path, model, model_dir) -> None:
    import fcntl
    import os

    docs = _docs(tmp_path / "docs")
    col = _new(tmp_path, model, model_dir)
    col.add_paths([docs / "doc0.txt"], progress=False)
    col.close()
    manifest = tmp_path / "col" / "files.json"
    data = json.loads(manifest.read_text())
    (key,) = data["files"]
    data["pending"] = {key: {"old": [], "new": data["files"][key]["chunks"]}}
    manifest.write_text(json.dumps(data))  # as a writer between its two manifest writes
    fd = os.open(tmp_path / "col" / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # ... that still holds the lock
    try:
        reader = Collection.open(tmp_path / "col", model=model)
        assert len(reader) == 2 and json.loads(manifest.read_text())["pending"]
        reader.close()
    finally:
        os.close(fd)
    repaired = Collection.open(tmp_path / "col", model=model)  # the writer is gone: repair
    assert len(repaired) == 0 and repaired.files == {}
    assert not json.loads(manifest.read_text())["pending"]
    repaired.close()


def test_files_gone_from_an_indexed_folder_are_removed(tmp_path: Path, model, model_dir) -> None:
    docs = _docs(tmp_path / "docs")
    alone = tmp_path / "alone.txt"
    alone.write_text(_words(9, 5))
    col = _new(tmp_path, model, model_dir)
    col.add_paths([docs, alone], progress=False)
    before = len(col)
    (docs / "doc0.txt").unlink()
    (docs / "sub" / "notes.md").rename(docs / "sub" / "renamed.md")
    alone.unlink()  # indexed as a file, not under an indexed folder: never pruned
    kept = col.add_paths([docs], progress=False, prune=False)
    assert kept.files_removed == 0 and kept.files_added == 1 and len(col) == before + 1
    # only entries under the folders indexed now are pruned: docs/sub, not doc0.txt
    sub = col.add_paths([docs / "sub"], progress=False)
    assert (sub.files_removed, sub.removed) == (1, [_source(docs / "sub" / "notes.md")])
    assert sub.chunks_deleted == 1 and "1 removed" in sub.summary()
    report = col.add_paths([docs], progress=False)
    assert (report.files_removed, report.chunks_deleted, report.files_unchanged) == (1, 2, 6)
    assert not any("doc0.txt" in i or "notes.md" in i for i in col.index.ids)
    assert all("doc0.txt" not in r.id for r in col.search("dog", k=20))
    assert sorted(Path(k).name for k in col.files) == [
        "alone.txt", "doc1.txt", "doc2.txt", "doc3.txt", "doc4.txt", "page.html", "renamed.md",
    ]  # fmt: skip
    col.close()
    again = Collection.open(tmp_path / "col")  # the pruned manifest was saved
    assert again.add_paths([docs], progress=False).files_unchanged == 6 and len(again.files) == 7
    again.close()


def _source(path: Path) -> str:
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    return resolved.relative_to(cwd).as_posix() if resolved.is_relative_to(cwd) else str(resolved)


def test_an_interrupted_prune_leaves_a_loadable_index(
    tmp_path: Path, model, model_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = _docs(tmp_path / "docs")
    col = _new(tmp_path, model, model_dir)
    col.add_paths([docs], progress=False)
    (docs / "doc0.txt").unlink()

    def failing_save(self, path=None):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(MultiVectorIndex, "save", failing_save)
    with pytest.raises(OSError, match="simulated"):
        col.add_paths([docs], progress=False)
    monkeypatch.undo()
    col.close()
    reopened = Collection.open(tmp_path / "col")  # the previous index, repaired on open
    assert json.loads((tmp_path / "col" / "files.json").read_text())["pending"] == {}
    assert not any("doc0.txt" in i for i in reopened.index.ids) and len(reopened) == 10
    assert reopened.add_paths([docs], progress=False).files_unchanged == 6
    reopened.close()


def test_chunking_follows_the_models_tokenizer(tmp_path: Path, model, model_dir) -> None:
    from metaembed_rag.ingest import TOKEN_MARGIN, count_tokens, model_chunk_limit

    limit = model_chunk_limit(model)
    assert limit == model.config.max_length - 2  # [CLS] ... [SEP]
    with pytest.raises(ValueError, match=f"more tokens than the model reads.*<= {limit}"):
        Collection.create(tmp_path / "big", model, chunk_size=limit + 1)
    assert not (tmp_path / "big").exists()
    col = Collection.create(tmp_path / "col", model, model_name=str(model_dir))
    assert (col.config["chunk_unit"], col.config["chunk_size"]) == ("tokens", limit - TOKEN_MARGIN)
    assert col.info()["chunk_unit"] == "tokens"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "long.txt").write_text(_words(0, 3 * limit))  # one-token words
    (docs / "c.jsonl").write_text(
        json.dumps({"_id": "huge", "text": _words(1, 2 * limit)}) + "\n"
        + "not json\n" + json.dumps({"_id": "ok", "text": "a dog"}) + "\n"
    )  # fmt: skip
    (docs / "notes.docx").write_text("x")
    report = col.add_paths([docs], progress=False)
    texts = [col.index.get(i)["text"] for i in col.index.ids if "long.txt" in i]
    assert len(texts) >= 3 and max(count_tokens(texts, col.model.adapter.tokenizer)) <= limit
    # the JSONL record is never split: it is encoded truncated, and the report says so
    assert (report.chunks_truncated, report.max_tokens) == (1, limit)
    assert report.truncated_files == [_source(docs / "c.jsonl")]
    assert report.bad_records == [(f"{_source(docs / 'c.jsonl')}:2",
                                   "not valid JSON (Expecting value); a JSONL corpus has one JSON "
                                   "object per line.")]  # fmt: skip
    assert {"huge", "ok"} <= set(col.index.ids)
    assert report.ignored == [_source(docs / "notes.docx")] and report.files_ignored == 1
    summary = report.summary().splitlines()
    assert summary[0].startswith("Indexed 2 new files, 0 changed, 0 unchanged, 0 removed")
    assert any(line.startswith("Skipped 1 malformed JSONL record(s): ") for line in summary)
    assert any(line.startswith("Ignored 1 file(s) of unsupported types: ") for line in summary)
    assert any(line.startswith(f"Truncated 1 chunk(s) longer than the {limit} tokens the model")
               for line in summary)  # fmt: skip
    col.close()


def test_a_collection_of_the_previous_format_is_not_reindexed(
    tmp_path: Path, model, model_dir
) -> None:
    """Collections written before chunk_unit existed chunked by words: they keep doing so."""
    docs = _docs(tmp_path / "docs")
    col = _new(tmp_path, model, model_dir)
    col.add_paths([docs], progress=False)
    col.close()
    for name in ("collection.json", "files.json"):
        path = tmp_path / "col" / name
        data = json.loads(path.read_text())
        data.pop("chunk_unit", None)
        for entry in data.get("files", {}).values():
            entry.pop("chunk_unit")
        path.write_text(json.dumps(data))
    old = Collection.open(tmp_path / "col")
    assert old.info()["chunk_unit"] == "words"
    assert old.add_paths([docs], progress=False).files_unchanged == 7
    old.close()
