"""`metaembed-rag eval` over several BEIR folders, with the BM25 and mean-pool baselines and the
document-vector cache, on tiny folders and a tiny random BERT."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from metaembed_rag import MetaEmbedModel
from metaembed_rag.baselines import MeanPoolEncoder
from metaembed_rag.cli import main
from metaembed_rag.evaluation import QUALITY_METRICS
from metaembed_rag.metrics import evaluate

WORDS = ["apple", "river", "stone", "cloud", "music", "paper", "green", "light", "table", "dream"]


def _beir(root: Path, n_docs: int, shift: int) -> Path:
    (root / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": f"{WORDS[(i + shift) % 10]} notes",
             "text": f"the {WORDS[i % 10]} and the {WORDS[(i * 3 + shift) % 10]} number {i}"}
            for i in range(n_docs)]  # fmt: skip
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    queries = [{"_id": f"q{i}", "text": f"where is the {WORDS[i % 10]} {WORDS[(i + shift) % 10]}"}
               for i in range(6)]  # fmt: skip
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    qrels = "".join(f"q{i}\td{i}\t{1 + i % 2}\nq{i}\td{i + 7}\t1\n" for i in range(6))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return root


@pytest.fixture(scope="module")
def model_dir(tiny_bert_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return MetaEmbedModel.from_backbone(tiny_bert_path).save_pretrained(
        tmp_path_factory.mktemp("model") / "m"
    )


@pytest.fixture()
def sets(tmp_path: Path) -> tuple[Path, Path]:
    return _beir(tmp_path / "alpha", 24, 0), _beir(tmp_path / "beta", 17, 3)


@pytest.fixture(autouse=True)
def _user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the default cache out of the real home folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg"


def _load(folder: Path) -> tuple[list[str], list[str], list[str], dict[str, dict[str, int]]]:
    docs = [json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines()]
    by_id = {d["_id"]: f"{d['title']} {d['text']}".strip() for d in docs}
    doc_ids = sorted(by_id)
    queries = {
        q["_id"]: q["text"]
        for q in map(json.loads, (folder / "queries.jsonl").read_text().splitlines())
    }
    qrels: dict[str, dict[str, int]] = {}
    for line in (folder / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        q, d, g = line.split("\t")
        qrels.setdefault(q, {})[d] = int(g)
    qids = sorted(qrels)
    return doc_ids, [by_id[d] for d in doc_ids], [queries[q] for q in qids], qrels


def _figures(rankings: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    m = evaluate({q: r[:100] for q, r in rankings.items()}, qrels, ks=(10, 100))
    return {**{k: m[k] for k in QUALITY_METRICS if k != "map"},
            "map": evaluate(rankings, qrels)["map"]}  # fmt: skip


def _direct_bm25(folder: Path) -> dict[str, float]:
    """bm25s used directly: its defaults plus English stop words."""
    import bm25s

    doc_ids, texts, queries, qrels = _load(folder)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en"))
    top, _ = retriever.retrieve(bm25s.tokenize(queries, stopwords="en"), k=len(doc_ids))
    rankings = {q: [doc_ids[i] for i in row] for q, row in zip(sorted(qrels), top, strict=True)}
    return _figures(rankings, qrels)


def _direct_mean_pool(folder: Path, backbone: Path, max_length: int) -> dict[str, float]:
    """transformers used directly: mean of the last hidden states over the mask, cosine."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(backbone)
    net = AutoModel.from_pretrained(backbone).eval()

    def enc(texts: list[str]) -> torch.Tensor:
        b = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            h = net(**b).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).float()
        return F.normalize((h * m).sum(1) / m.sum(1), dim=-1)

    doc_ids, texts, queries, qrels = _load(folder)
    top = (enc(queries) @ enc(texts).T).topk(len(doc_ids), dim=1).indices.tolist()
    rankings = {q: [doc_ids[i] for i in row] for q, row in zip(sorted(qrels), top, strict=True)}
    return _figures(rankings, qrels)


def _run(*args: str) -> int:
    return main(["eval", *args])


def _counting(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """Count document encodings (model) and texts encoded by the mean-pool baseline."""
    calls: dict[str, list[int]] = {"documents": [], "mean_pool": []}
    encode_documents = MetaEmbedModel.encode_documents
    encode = MeanPoolEncoder.encode

    def docs(self: Any, inputs: Any, *a: Any, **kw: Any) -> Any:
        calls["documents"].append(len(inputs))
        return encode_documents(self, inputs, *a, **kw)

    def pooled(self: Any, texts: Any, *a: Any, **kw: Any) -> Any:
        calls["mean_pool"].append(len(texts))
        return encode(self, texts, *a, **kw)

    monkeypatch.setattr(MetaEmbedModel, "encode_documents", docs)
    monkeypatch.setattr(MeanPoolEncoder, "encode", pooled)
    return calls


def test_two_sets_with_baselines_macro_and_cache(
    model_dir: Path,
    tiny_bert_path: Path,
    sets: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a, b = sets
    out, plot, cache = tmp_path / "suite.json", tmp_path / "suite.png", tmp_path / "cache"
    argv = ["--data", str(a), str(b), "--model", str(model_dir), "--baselines",
            "bm25,mean-pool", "--cache-dir", str(cache), "--json", str(out)]  # fmt: skip
    calls = _counting(monkeypatch)
    assert _run(*argv, "--plot", str(plot)) == 0
    assert calls["documents"] == [24, 17]  # one corpus encoding per set
    assert sorted(calls["mean_pool"]) == [6, 6, 17, 24]  # documents and queries of each set
    res = json.loads(out.read_text())
    assert list(res["datasets"]) == ["alpha", "beta"]
    assert set(res) >= {"datasets", "macro", "model", "split", "baseline_settings"}
    budgets = ["1,1", "2,4", "4,8", "8,16", "16,64"]
    for name, n_docs in (("alpha", 24), ("beta", 17)):
        got = res["datasets"][name]
        assert list(got["budgets"]) == budgets
        assert got["num_docs"] == n_docs and got["num_queries"] == 6
        assert set(got["baselines"]) == {"bm25", "mean-pool"}
        for row in got["baselines"].values():
            assert set(row) == set(QUALITY_METRICS)
    # macro = mean of the sets, figure by figure
    for section, names in (("budgets", budgets), ("baselines", ["bm25", "mean-pool"])):
        assert list(res["macro"][section]) == names
        for n in names:
            for m in QUALITY_METRICS:
                want = statistics.fmean(
                    res["datasets"][s][section][n][m] for s in ("alpha", "beta")
                )
                assert res["macro"][section][n][m] == pytest.approx(want, abs=1e-12)
    # the baselines equal bm25s and transformers used directly on the same data
    max_length = res["baseline_settings"]["mean-pool"]["max_length"]
    assert max_length == MetaEmbedModel.from_pretrained(model_dir).config.max_length
    for name, folder in (("alpha", a), ("beta", b)):
        assert res["datasets"][name]["baselines"]["bm25"] == pytest.approx(_direct_bm25(folder))
        direct = _direct_mean_pool(folder, tiny_bert_path, max_length)
        assert res["datasets"][name]["baselines"]["mean-pool"] == pytest.approx(direct, abs=1e-6)
    assert plot.stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "== alpha" in printed and "macro average over 2 sets" in printed
    assert "bm25" in printed and "mean-pool" in printed

    # a second run encodes queries only: every document vector comes from the cache
    calls["documents"].clear()
    calls["mean_pool"].clear()
    out2 = tmp_path / "again.json"
    assert _run(*argv[:-1], str(out2)) == 0
    assert calls["documents"] == [] and calls["mean_pool"] == [6, 6]
    again = json.loads(out2.read_text())
    for name in ("alpha", "beta"):
        first, second = res["datasets"][name], again["datasets"][name]
        assert second["doc_encode_s"] == 0.0
        for base in ("bm25", "mean-pool"):
            assert second["baselines"][base] == pytest.approx(first["baselines"][base])
        for n in budgets:
            assert second["budgets"][n]["ndcg@10"] == pytest.approx(first["budgets"][n]["ndcg@10"])


def test_suite_file_default_cache_and_limit_queries(
    model_dir: Path, sets: tuple[Path, Path], tmp_path: Path, _user_cache: Path
) -> None:
    a, b = sets
    suite = tmp_path / "lists" / "suite.txt"
    suite.parent.mkdir()
    suite.write_text(f"# two tiny sets\n../alpha\n\n{b}  # absolute path\n")
    out = tmp_path / "s.json"
    assert _run("--suite", str(suite), "--model", str(model_dir), "--budgets", "1,1 16,64",
                "--limit-queries", "3", "--json", str(out), "--plot", str(tmp_path / "p.png")) == 0  # fmt: skip
    res = json.loads(out.read_text())
    assert list(res["datasets"]) == ["alpha", "beta"] and "baselines" not in res["macro"]
    assert all(s["num_queries"] == 3 for s in res["datasets"].values())
    assert list(res["macro"]["budgets"]) == ["1,1", "16,64"]
    assert len(list((_user_cache / "metaembed-rag" / "eval").glob("docs-*.safetensors"))) == 2


def test_single_data_keeps_the_schema(
    model_dir: Path, sets: tuple[Path, Path], tmp_path: Path, _user_cache: Path
) -> None:
    a, _ = sets
    plain, with_bm25 = tmp_path / "plain.json", tmp_path / "bm25.json"
    assert (
        _run("--data", str(a), "--model", str(model_dir), "--no-cache", "--json", str(plain)) == 0
    )
    res = json.loads(plain.read_text())
    assert set(res) == {"budgets", "doc_encode_s", "docs_per_s", "num_docs", "num_queries",
                        "model", "data", "split"}  # fmt: skip
    assert res["data"] == str(a) and not _user_cache.exists()  # --no-cache writes nothing
    assert _run("--data", str(a), "--model", str(model_dir), "--baselines", "bm25",
                "--json", str(with_bm25), "--plot", str(tmp_path / "one.png")) == 0  # fmt: skip
    res = json.loads(with_bm25.read_text())
    assert list(res["baselines"]) == ["bm25"] and "datasets" not in res
    assert res["baselines"]["bm25"] == pytest.approx(_direct_bm25(a))


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--baselines", "bm25,splade"], "unknown baseline 'splade'; choose from bm25,mean-pool"),
        (["--data", "nowhere"], "--data nowhere: not a folder"),
    ],
)
def test_bad_options_give_one_error_line(
    model_dir: Path, sets: tuple[Path, Path], capsys: pytest.CaptureFixture[str],
    extra: list[str], message: str,
) -> None:  # fmt: skip
    argv = ["--model", str(model_dir), *extra]
    if "--data" not in extra:
        argv += ["--data", str(sets[0])]
    assert _run(*argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_suite_file_errors_name_the_line(
    model_dir: Path, sets: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "suite.txt"
    suite.write_text("alpha\n# comment\nmissing-set\n")
    assert _run("--suite", str(suite), "--model", str(model_dir)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {suite}:3: 'missing-set' is not a folder")
    suite.write_text("alpha\n./alpha/\n")
    assert _run("--suite", str(suite), "--model", str(model_dir)) == 2
    assert "two data sets are named 'alpha'" in capsys.readouterr().err
