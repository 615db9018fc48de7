"""``metaembed-rag search --hybrid``: the CLI runs the core's fused search (tiny random model, so
the lexical side decides what the dense side cannot)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metaembed_rag import MetaEmbedModel
from metaembed_rag.cli import main
from metaembed_rag.collection import Collection


@pytest.fixture(scope="module")
def indexed(tiny_bert_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("hybrid_cli")
    model = str(MetaEmbedModel.from_backbone(tiny_bert_path, seed=0).save_pretrained(root / "m"))
    docs = root / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The Moon orbits the Earth.")
    (docs / "b.txt").write_text("Photosynthesis turns light into sugar.")
    (docs / "c.txt").write_text("Insulin resistance causes type 2 diabetes.")
    idx = str(root / "idx")
    assert main(["index", str(docs), "--index", idx, "--model", model, "--no-progress"]) == 0
    return idx, model


def _search(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["search", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_search_hybrid_equals_the_collection_api(indexed, capsys) -> None:
    idx, _ = indexed
    for extra in (["--hybrid", "rrf"], ["--hybrid", "weighted", "--hybrid-weight", "0.25"]):
        rc, out, err = _search(capsys, "insulin diabetes", "--index", idx, "--k", "3", "--json",
                               *extra)  # fmt: skip
        assert rc == 0, err
        res = json.loads(out)
        with Collection.open(idx) as col:
            weight = float(extra[3]) if len(extra) > 2 else None
            want = col.search("insulin diabetes", k=3, hybrid=extra[1], hybrid_weight=weight)
        assert [r["id"] for r in res["results"]] == [r.id for r in want]
        assert [r["score"] for r in res["results"]] == pytest.approx([r.score for r in want])
        assert res["hybrid"] == extra[1]
    rc, out, _ = _search(capsys, "insulin diabetes", "--index", idx, "--k", "1",
                         "--hybrid", "weighted", "--hybrid-weight", "0")  # fmt: skip
    assert rc == 0 and "c.txt" in out and "0 x MaxSim + 1 x BM25" in out


def test_search_hybrid_flag_errors_are_one_line(indexed, capsys) -> None:
    idx, _ = indexed
    rc, _, err = _search(
        capsys, "moon", "--index", idx, "--hybrid", "rrf", "--hybrid-weight", "0.5"
    )
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc != 0 and len(lines) == 1 and "Traceback" not in err
    assert "--hybrid-weight" in lines[0] and "weighted" in lines[0]
