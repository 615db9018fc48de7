from __future__ import annotations

from pathlib import Path

import pytest

from metaembed_rag.data import DataError, load_beir, load_image_captions

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _beir(tmp: Path, corpus: str, queries: str, qrels: str) -> Path:
    (tmp / "qrels").mkdir(parents=True, exist_ok=True)
    (tmp / "corpus.jsonl").write_text(corpus)
    (tmp / "queries.jsonl").write_text(queries)
    (tmp / "qrels" / "test.tsv").write_text(qrels)
    return tmp


CORPUS = '{"_id": "d1", "title": "T", "text": "one"}\n{"_id": "d2", "text": "two"}\n'
QUERIES = '{"_id": "q1", "text": "first"}\n{"_id": "q2", "text": "second"}\n'


def test_small_beir(tmp_path: Path) -> None:
    ds = load_beir(
        _beir(tmp_path, CORPUS, QUERIES, "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\n")
    )
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2}}
    assert ds.doc_text("d1") == "T one"
    assert ds.queries == {"q1": "first", "q2": "second"}


@pytest.mark.parametrize(
    "corpus,queries,qrels,message",
    [
        ("", QUERIES, "q1\td1\t1\n", "corpus.jsonl: empty file"),
        (CORPUS + "{bad\n", QUERIES, "q1\td1\t1\n", "corpus.jsonl:3: not valid JSON"),
        (
            CORPUS,
            QUERIES,
            "query-id\tcorpus-id\tscore\nq1\td9\t1\n",
            "test.tsv:2: corpus id 'd9' is not in",
        ),
        (CORPUS, QUERIES, "q7\td1\t1\n", "test.tsv:1: query id 'q7' is not in"),
        (CORPUS, QUERIES, "q1\td1\n", "test.tsv:1: expected"),
        (CORPUS, QUERIES, "", "no relevance judgments"),
    ],
)
def test_bad_beir_names_file_and_line(
    tmp_path: Path, corpus: str, queries: str, qrels: str, message: str
) -> None:
    with pytest.raises(DataError, match=message):
        load_beir(_beir(tmp_path, corpus, queries, qrels))


def test_bad_captions(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "images" / "ok.jpg")
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not a jpeg")
    csv_path = tmp_path / "captions.csv"
    csv_path.write_text("image,caption\nok.jpg,a red square\nok.jpg,red\n")
    assert load_image_captions(csv_path).captions == {"ok.jpg": ["a red square", "red"]}
    csv_path.write_text("image,caption\nok.jpg,a red square\nbroken.jpg,oops\n")
    with pytest.raises(DataError, match=r"captions.csv:3: image .*broken.jpg' does not decode"):
        load_image_captions(csv_path)
    csv_path.write_text("image,caption\nmissing.jpg,x\n")
    with pytest.raises(DataError, match=r"captions.csv:2: image .*missing.jpg' does not exist"):
        load_image_captions(csv_path)
    csv_path.write_text("")
    with pytest.raises(DataError, match="empty file"):
        load_image_captions(csv_path)


@pytest.mark.skipif(
    not (SHARED / "scifact").is_dir(), reason="../shared/data/scifact is not beside the repo"
)
def test_scifact_loads() -> None:
    test = load_beir(SHARED / "scifact", "test")
    train = load_beir(SHARED / "scifact", "train")
    assert len(test.corpus) == 5183
    assert len(test.qrels) == 300 and sum(len(v) for v in test.qrels.values()) == 339
    assert len(train.qrels) == 809 and sum(len(v) for v in train.qrels.values()) == 919
    assert not set(test.qrels) & set(train.qrels)


@pytest.mark.skipif(
    not (SHARED / "flickr8k").is_dir(), reason="../shared/data/flickr8k is not beside the repo"
)
def test_flickr_captions_load() -> None:
    pytest.importorskip("PIL")
    caps = load_image_captions(SHARED / "flickr8k" / "captions.csv", verify_images=False)
    assert len(caps.captions) == 1000
    assert all(len(v) == 5 for v in caps.captions.values())
