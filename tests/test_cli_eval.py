"""`metaembed-rag eval` / `train` on a tiny BEIR folder with a tiny random BERT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metaembed_rag import MetaEmbedModel
from metaembed_rag.cli import main
from metaembed_rag.training import TrainExample
from metaembed_rag.training.recipe import RecipeConfig, _repeated


@pytest.fixture(autouse=True)
def _user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`eval` caches document vectors in the user cache folder by default: keep it in tmp."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def _beir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    docs = [f"document number {i} about topic {i % 5}" for i in range(30)]
    (root / "corpus.jsonl").write_text(
        "".join(
            json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n" for i, t in enumerate(docs)
        )
    )
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": f"topic {i}"}) + "\n" for i in range(5))
    )
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(5))
    )
    return root


def test_eval_writes_the_documented_json(tiny_bert_path: Path, tmp_path: Path, capsys) -> None:
    model_dir = MetaEmbedModel.from_backbone(tiny_bert_path).save_pretrained(tmp_path / "m")
    data = _beir(tmp_path / "beir")
    out = tmp_path / "res.json"
    plot = tmp_path / "res.png"
    rc = main(["eval", "--data", str(data), "--model", str(model_dir), "--budgets", "all",
               "--json", str(out), "--plot", str(plot)])  # fmt: skip
    assert rc == 0
    res = json.loads(out.read_text())
    assert list(res["budgets"]) == ["1,1", "2,4", "4,8", "8,16", "16,64"]
    for row in res["budgets"].values():
        assert set(row) == {
            "ndcg@10",
            "recall@10",
            "recall@100",
            "mrr@10",
            "map",
            "query_ms",
            "score_ms",
        }
        assert 0.0 <= row["ndcg@10"] <= 1.0 and row["recall@100"] == 1.0  # 30 docs < 100
    assert res["model"] == str(model_dir) and res["num_queries"] == 5 and res["num_docs"] == 30
    assert "baselines" not in res and "datasets" not in res
    assert plot.stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "(16,64)" in printed and "nDCG@10" in printed


def test_eval_rejects_unknown_budget(tiny_bert_path: Path, tmp_path: Path, capsys) -> None:
    model_dir = MetaEmbedModel.from_backbone(tiny_bert_path).save_pretrained(tmp_path / "m")
    rc = main(
        [
            "eval",
            "--data",
            str(_beir(tmp_path / "b")),
            "--model",
            str(model_dir),
            "--budgets",
            "3,3",
        ]
    )
    assert rc == 2
    assert "Valid budgets" in capsys.readouterr().err


def test_train_bad_data_names_file_and_line(tmp_path: Path, capsys) -> None:
    data = _beir(tmp_path / "bad")
    (data / "qrels" / "train.tsv").write_text("q1\td1\t1\nq2\tnope\t1\n")
    rc = main(
        [
            "train",
            "--output",
            str(tmp_path / "out"),
            "--beir",
            str(data),
            "--rounds",
            "1",
            "--steps",
            "1",
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "train.tsv:2: corpus id 'nope' is not in" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("content,message", [("", "empty file")])
def test_train_empty_corpus(tmp_path: Path, capsys, content: str, message: str) -> None:
    data = _beir(tmp_path / "empty")
    (data / "corpus.jsonl").write_text(content)
    (data / "qrels" / "train.tsv").write_text("q1\td1\t1\n")
    assert (
        main(["train", "--output", str(tmp_path / "o"), "--beir", str(data), "--rounds", "1"]) == 2
    )
    assert message in capsys.readouterr().err


def test_train_two_rounds_with_ict_and_warm_start(tiny_bert_path: Path, tmp_path: Path) -> None:
    """The whole recipe on a tiny random BERT: warm start, round 1 with ICT + title pairs,
    mining, round 2 from the warm-started base; the final folder loads and encodes."""
    data = _beir(tmp_path / "b")
    sentences = [f"Sentence {k} of abstract {i} talks about subject {i % 7} in detail."
                 for i in range(30) for k in range(4)]  # fmt: skip
    (data / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"d{i}", "title": f"title {i}",
                    "text": " ".join(sentences[4 * i: 4 * i + 4])}) + "\n"
        for i in range(30)))  # fmt: skip
    (data / "qrels" / "train.tsv").write_text("".join(f"q{i}\td{i}\t1\n" for i in range(5)))
    out = tmp_path / "run"
    rc = main(["train", "--output", str(out), "--backbone", str(tiny_bert_path), "--beir",
               str(data), "--titles", "--ict", "1", "--warm-start-steps", "3",
               "--round1-steps", "2", "--steps", "2", "--batch-size", "4", "--doc-max-length",
               "32", "--num-query-tokens", "4", "--num-candidate-tokens", "8",
               "--mine-top-n", "6", "--mine-min-rank", "2", "--save-every", "1",
               "--beir-repeat", "2", "--round2-beir-only",
               "--group-weights", "1,1,1", "--round2-group-weights", "1,2,3"])  # fmt: skip
    assert rc == 0
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["ict"] == 1 and recipe["warm_start_steps"] == 3
    assert recipe["beir_repeat"] == 2 and recipe["round2_beir_only"] is True
    assert recipe["round2_group_weights"] == [1, 2, 3]
    used = {r: json.loads(next((out / r).glob("checkpoint-*/trainer_state.json")).read_text())
            ["config"]["group_weights"] for r in ("round1", "round2")}  # fmt: skip
    assert used == {"round1": [1, 1, 1], "round2": [1, 2, 3]}
    warm = json.loads((out / "warm_start.json").read_text())
    assert warm[-1]["step"] == 3
    assert (out / "negatives-beir0.json").is_file()
    model = MetaEmbedModel.from_pretrained(out / "final")
    assert model.encode_documents(["a document"]).shape == (1, 8, model.dim)


def test_recipe_repeat_and_round2_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="beir_repeat must be >= 1"):
        RecipeConfig(output_dir=str(tmp_path), beir=["b"], beir_repeat=0)
    with pytest.raises(ValueError, match="round2_beir_only needs"):
        RecipeConfig(output_dir=str(tmp_path), captions=["c.csv"], round2_beir_only=True)
    with pytest.raises(ValueError, match="round2_group_weights needs rounds=2"):
        RecipeConfig(output_dir=str(tmp_path), beir=["b"], rounds=1, round2_group_weights=[1.0])


def test_repeated_pairs_get_their_own_sources() -> None:
    """N copies, each copy its own source (a batch holds one source, so never a pair twice)."""
    pairs = [TrainExample("q1", "d1", source="beir0", query_id="q1"),
             TrainExample("q2", "d2", source="beir0", query_id="q2")]  # fmt: skip
    assert _repeated(pairs, 1) == pairs
    three = _repeated(pairs, 3)
    assert [e.source for e in three] == ["beir0-x0"] * 2 + ["beir0-x1"] * 2 + ["beir0-x2"] * 2
    assert [(e.query, e.positive) for e in three] == [("q1", "d1"), ("q2", "d2")] * 3


def test_group_weights_option(capsys) -> None:
    from metaembed_rag.cli import build_parser

    args = build_parser().parse_args(["train", "--output", "o", "--group-weights", "1,1,2"])
    assert args.group_weights == [1.0, 1.0, 2.0] and args.round2_group_weights is None
    args = build_parser().parse_args(["train", "--output", "o", "--round2-group-weights", "1,2"])
    assert args.round2_group_weights == [1.0, 2.0]
    for bad in ("1,x", "0,0", "1,-1"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["train", "--output", "o", "--group-weights", bad])
        assert "--group-weights" in capsys.readouterr().err


def test_train_config_file_and_flags(tmp_path) -> None:
    """`train --config`: the file gives recipe and [training] fields, flags override it, the
    command's own default (save_every=100) applies, unknown fields are refused by name."""
    import json as _json

    from metaembed_rag.cli import build_parser
    from metaembed_rag.cli.train import config_from_args

    toml = tmp_path / "recipe.toml"
    toml.write_text(
        'output_dir = "from-file"\npairs = ["p1"]\nrounds = 1\nsteps = 50\n'
        "[training]\nbatch_size = 8\nlora = true\n"
    )
    parse = build_parser().parse_args
    cfg = config_from_args(parse(["train", "--config", str(toml), "--steps", "70", "--no-lora"]))
    assert (cfg.output_dir, cfg.pairs, cfg.rounds, cfg.steps) == ("from-file", ["p1"], 1, 70)
    assert cfg.training == {"save_every": 100, "batch_size": 8, "lora": False}
    cfg = config_from_args(parse(["train", "--output", "o", "--beir", "b", "--own-side-only"]))
    assert cfg.output_dir == "o" and cfg.beir == ["b"] and cfg.append_both_sides is False
    assert cfg.rounds == 2 and cfg.training == {"save_every": 100}  # the recipe's defaults
    saved = tmp_path / "recipe.json"  # a run's recipe.json is a config file too
    saved.write_text(
        _json.dumps({"output_dir": "x", "captions": ["c.csv"], "training": {"lr": 0.5}})
    )
    cfg = config_from_args(parse(["train", "--config", str(saved)]))
    assert cfg.captions == ["c.csv"] and cfg.training["lr"] == 0.5
    bad = tmp_path / "bad.toml"
    bad.write_text('output_dir = "o"\npairs = ["p"]\nstepz = 3\n')
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['stepz'\]"):
        config_from_args(parse(["train", "--config", str(bad)]))
    with pytest.raises(ValueError, match="no output folder"):
        config_from_args(parse(["train", "--pairs", "p"]))
    for field_name in ("warm_start_lr", "pooled_temperature", "keep_checkpoints"):
        assert "--" + field_name.replace("_", "-") in build_parser_help_train()


def build_parser_help_train() -> str:
    import argparse

    from metaembed_rag.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"].format_help()
