"""``metaembed-rag eval --limit-docs``: every judged document plus a seeded sample, document
vectors from the whole corpus's cache when it exists (the cache is on by default)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metaembed_rag import MetaEmbedModel
from metaembed_rag.cli import main
from metaembed_rag.data import load_beir
from metaembed_rag.evaluation import cached_corpus_vectors
from metaembed_rag.vector_cache import default_cache_dir


def _beir(root: Path, n: int = 40) -> Path:
    (root / "qrels").mkdir(parents=True)
    rows = [json.dumps({"_id": f"d{i:02d}", "title": "", "text": f"doc {i} on topic {i % 5}"})
            for i in range(n)]  # fmt: skip
    (root / "corpus.jsonl").write_text("\n".join(rows) + "\n")
    queries = [json.dumps({"_id": f"q{i}", "text": f"topic {i}"}) for i in range(4)]
    (root / "queries.jsonl").write_text("\n".join(queries) + "\n")
    judged = "".join(f"q{i}\td{3 * i + j:02d}\t1\n" for i in range(4) for j in range(2))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + judged)
    return root


def test_sample_keeps_every_judged_document_and_a_seeded_sample(tmp_path: Path) -> None:
    ds = load_beir(_beir(tmp_path / "b"))
    s = ds.sample_docs(15, ["q0", "q1"], seed=3)
    judged = {"d00", "d01", "d03", "d04"}
    assert len(s.corpus) == 15 and judged <= set(s.corpus)
    assert set(s.queries) == set(s.qrels) == {"q0", "q1"}
    assert s.sample_docs(15, ["q0", "q1"], seed=3).corpus.keys() == s.corpus.keys()
    assert ds.sample_docs(15, ["q0", "q1"], seed=3).corpus.keys() == s.corpus.keys()
    assert ds.sample_docs(15, ["q0", "q1"], seed=4).corpus.keys() != s.corpus.keys()
    assert s.full_ids == sorted(ds.corpus)
    assert set(ds.sample_docs(2).corpus) == {f"d{3 * i + j:02d}" for i in range(4) for j in (0, 1)}
    assert ds.sample_docs(100).corpus == ds.corpus
    with pytest.raises(ValueError, match="positive int"):
        ds.sample_docs(0)


def test_sample_vectors_come_from_the_whole_corpus_cache(tmp_path: Path) -> None:
    ds = load_beir(_beir(tmp_path / "b"))
    calls: list[int] = []

    def encode(texts: list[str]) -> torch.Tensor:
        calls.append(len(texts))
        return torch.tensor([[float(t.split()[1])] for t in texts])

    ids = sorted(ds.corpus)
    sample = ds.sample_docs(10, seed=1)
    sample_ids = sorted(sample.corpus)
    cache = tmp_path / "cache"
    alone, _ = cached_corpus_vectors(sample, sample_ids, cache, "docs", "enc", encode)
    assert calls == [10]  # no whole-corpus cache yet: the sample is encoded (and cached)
    cached_corpus_vectors(sample, sample_ids, cache, "docs", "enc", encode)
    assert calls == [10]
    full, _ = cached_corpus_vectors(ds, ids, cache, "docs", "enc", encode)
    assert calls == [10, 40]
    rows, seconds = cached_corpus_vectors(
        ds.sample_docs(12, seed=2), sorted(ds.sample_docs(12, seed=2).corpus), cache, "docs",
        "enc", encode,
    )  # fmt: skip
    assert calls == [10, 40] and seconds == 0.0
    want = torch.tensor([[float(d[1:])] for d in sorted(ds.sample_docs(12, seed=2).corpus)])
    assert torch.equal(rows, want) and torch.equal(alone[:, 0], torch.tensor(
        [float(d[1:]) for d in sample_ids]))  # fmt: skip


def test_eval_limit_docs_cli(tiny_bert_path: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    model_dir = MetaEmbedModel.from_backbone(tiny_bert_path).save_pretrained(tmp_path / "m")
    data = _beir(tmp_path / "b")
    out = tmp_path / "r.json"
    rc = main(["eval", "--data", str(data), "--model", str(model_dir), "--budgets", "1,1",
               "--limit-docs", "12", "--limit-queries", "2", "--json", str(out)])  # fmt: skip
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["num_docs"] == 12 and res["num_queries"] == 2 and res["limit_docs"] == 12
    assert res["docs_seed"] == 0
    # the cache is on by default, under the user cache folder
    assert any(default_cache_dir().glob("docs-*.safetensors"))
    assert default_cache_dir() == tmp_path / "xdg" / "metaembed-rag" / "eval"
    rc = main(["eval", "--data", str(data), "--model", str(model_dir), "--limit-docs", "0"])
    err = capsys.readouterr().err
    assert rc != 0 and "--limit-docs must be a positive number" in err


def test_cache_follows_the_corpus_content_not_its_path_or_time(tmp_path: Path) -> None:
    """A copied data folder (new path, new mtimes) hits the cache; an edited corpus misses."""
    import os
    import shutil

    calls: list[int] = []

    def encode(texts: list[str]) -> torch.Tensor:
        calls.append(len(texts))
        return torch.zeros(len(texts), 1)

    cache = tmp_path / "cache"
    ds = load_beir(_beir(tmp_path / "b"))
    cached_corpus_vectors(ds, sorted(ds.corpus), cache, "docs", "enc", encode)
    copy = shutil.copytree(tmp_path / "b", tmp_path / "copy")
    os.utime(copy / "corpus.jsonl", ns=(1, 1))
    moved = load_beir(copy)
    _, seconds = cached_corpus_vectors(moved, sorted(moved.corpus), cache, "docs", "enc", encode)
    assert calls == [40] and seconds == 0.0
    with (copy / "corpus.jsonl").open("a") as f:
        f.write(json.dumps({"_id": "d99", "title": "", "text": "new"}) + "\n")
    edited = load_beir(copy)
    cached_corpus_vectors(edited, sorted(edited.corpus), cache, "docs", "enc", encode)
    assert calls == [40, 41]
