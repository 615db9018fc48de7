"""CLI: search --scorer / --rerank mllm:MODEL, and train-scorer (tiny models, tiny pairs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_models import build_tiny_causal_lm

from metaembed_rag import MetaEmbedModel
from metaembed_rag.cli import main
from metaembed_rag.collection import Collection
from metaembed_rag.rerank import MLLMReranker


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def setup(tiny_bert_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cli_scorers")
    model = str(MetaEmbedModel.from_backbone(tiny_bert_path, seed=0).save_pretrained(root / "m"))
    other = str(MetaEmbedModel.from_backbone(tiny_bert_path, seed=1).save_pretrained(root / "o"))
    docs = root / "docs"
    docs.mkdir()
    for i, text in enumerate(["the dog runs in the park", "a cat on the street", "red car",
                              "two children play with a ball", "snow in the field"]):  # fmt: skip
        (docs / f"{i}.txt").write_text(text)
    idx = str(root / "idx")
    assert main(["index", str(docs), "--index", idx, "--model", model, "--no-progress"]) == 0
    pairs = root / "pairs"
    for source in ("a", "b"):
        (pairs / source).mkdir(parents=True)
        rows = [
            {"query": f"{source} dog {i}", "positive": f"the dog {i} runs in park {source}"}
            for i in range(12)
        ]
        (pairs / source / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    lm = str(build_tiny_causal_lm(root / "lm"))
    return {
        "model": model,
        "other": other,
        "idx": idx,
        "pairs": str(pairs),
        "lm": lm,
        "root": str(root),
    }


def test_search_with_pooled_scorer(capsys, setup) -> None:
    rc, out, err = _run(
        capsys, "search", "dog", "--index", setup["idx"], "--k", "3", "--scorer", "pooled", "--json"
    )
    assert rc == 0, err
    got = [(r["id"], r["score"]) for r in json.loads(out)["results"]]
    with Collection.open(setup["idx"]) as col:
        want = [(r.id, r.score) for r in col.search("dog", k=3, scorer="pooled")]
    assert [g[0] for g in got] == [w[0] for w in want]
    assert [g[1] for g in got] == pytest.approx([w[1] for w in want])
    rc, out, _ = _run(capsys, "search", "dog", "--index", setup["idx"], "--scorer", "pooled")
    assert rc == 0 and "Score = the pooled scorer" in out
    rc, _, err = _run(capsys, "search", "dog", "--index", setup["idx"], "--scorer", "nope")
    assert rc == 2 and "neither a scorer name" in _error(err)


def test_search_with_mllm_rerank(capsys, setup) -> None:
    rc, out, err = _run(capsys, "search", "dog", "--index", setup["idx"], "--k", "2", "--json",
                        "--rerank", f"mllm:{setup['lm']}", "--rerank-candidates", "4")  # fmt: skip
    assert rc == 0, err
    results = json.loads(out)["results"]
    assert len(results) == 2 and [r["rank"] for r in results] == [0, 1]
    with Collection.open(setup["idx"]) as col:
        pool = col.search("dog", k=4)
    probs = MLLMReranker.from_pretrained(setup["lm"], device="cpu").score(
        "dog", [r.text for r in pool]
    )
    order = sorted(range(4), key=lambda i: (-probs[i], i))[:2]
    assert [r["id"] for r in results] == [pool[i].id for i in order]
    assert [r["score"] for r in results] == pytest.approx([probs[i] for i in order], abs=1e-6)
    rc, _, err = _run(capsys, "search", "dog", "--index", setup["idx"], "--rerank", "bm25")
    assert rc == 2 and "mllm:MODEL" in _error(err)


def test_train_scorer_then_search_and_refusal(capsys, setup) -> None:
    out_dir = str(Path(setup["root"]) / "bil")
    rc, out, err = _run(capsys, "train-scorer", "--pairs", setup["pairs"], "--model", setup["model"],
                        "--output", out_dir, "--steps", "5", "--batch-size", "4", "--negatives", "2",
                        "--rank", "4", "--cache-dir", str(Path(setup["root"]) / "cache"))  # fmt: skip
    assert rc == 0, err
    meta = json.loads((Path(out_dir) / "scorer.json").read_text())
    assert meta["kind"] == "bilinear" and meta["training"]["pairs"] == 24
    assert meta["fingerprint"] == MetaEmbedModel.from_pretrained(setup["model"]).fingerprint()
    assert (Path(out_dir) / "scorer.safetensors").is_file()
    rc, out, err = _run(
        capsys, "search", "dog", "--index", setup["idx"], "--scorer", out_dir, "--json"
    )
    assert rc == 0, err
    # an index of another model refuses it
    other_idx = str(Path(setup["root"]) / "idx_other")
    assert (
        main(
            [
                "index",
                str(Path(setup["root"]) / "docs"),
                "--index",
                other_idx,
                "--model",
                setup["other"],
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    rc, _, err = _run(capsys, "search", "dog", "--index", other_idx, "--scorer", out_dir)
    assert rc == 2 and "trained for model fingerprint" in _error(err)
    rc, _, err = _run(
        capsys,
        "train-scorer",
        "--pairs",
        setup["pairs"],
        "--model",
        setup["model"],
        "--output",
        out_dir,
    )
    assert rc == 2 and "--overwrite" in _error(err)
