"""A full training run from data folders: round 1 with in-batch negatives, mining, round 2
from the base weights with hard negatives (MM-Embed), then the final model folder."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..data import load_beir, load_image_captions, load_pairs
from ..metrics import require_backend
from ..model import DEFAULT_BACKBONE, MetaEmbedModel
from .dev import distractors_of, evaluate_dev
from .examples import (
    beir_pairs,
    caption_pairs,
    ict_pairs,
    pair_examples,
    split_dev,
    title_pairs,
    with_negatives,
)
from .mining import mine_hard_negatives, teacher_negatives
from .trainer import MMRTrainer, TrainExample, TrainingConfig
from .warmstart import WarmStartConfig, warm_start_meta_tokens

__all__ = ["RecipeConfig", "run_recipe"]

logger = logging.getLogger(__name__)


@dataclass
class RecipeConfig:
    """Everything one ``metaembed-rag train`` run needs (saved as ``recipe.json``)."""

    output_dir: str
    backbone: str = DEFAULT_BACKBONE
    # start from a trained MetaEmbed model (folder or packaged name) instead of a new one:
    # domain adaptation of the default model on one collection
    init: str | None = None
    # text-pair files or folders holding pairs.jsonl (one source each, named by the folder)
    pairs: list[str] = field(default_factory=list)
    pairs_max_per_source: int | None = None  # seeded sample of at most this many pairs a source
    dev_fraction: float = 0.0  # queries held out of every source as a dev split (dev.json)
    # the hard dev variant (dev-hard.json): this many training positives per source are added
    # to each source's dev candidates (0: only the easy variant)
    dev_distractors: int = 0
    # mine a negative for every text pair with the backbone's own mean-pooled cosine (a random
    # one of its ranks teacher_min_rank+1 .. teacher_top_n among the source's positives)
    teacher_negatives: bool = False
    teacher_top_n: int = 30
    teacher_min_rank: int = 3
    query_prefix: str | None = None  # None: the model's default ("Query: ")
    beir: list[str] = field(default_factory=list)
    beir_split: str = "train"
    captions: list[str] = field(default_factory=list)
    titles: bool = False
    ict: int = 0  # Inverse Cloze Task pairs per corpus document (0: none)
    ict_keep: float = 0.0  # chance the ICT sentence stays in its document
    warm_start_steps: int = 0  # Meta-token warm start before each round (0: none)
    warm_start_lr: float = 1e-3
    rounds: int = 2
    round1_steps: int = 300
    steps: int = 600  # 0 (one round): save the new model untrained, then the dev evaluation
    mine_top_n: int = 50
    mine_min_rank: int = 45
    mine_budget: str | None = None  # "r_q,r_c" used to retrieve when mining (default: largest)
    hard_negative_repeat: int = 1  # round 2: each mined BEIR pair used this many times per epoch
    # round 1 (or the only round): each BEIR pair used this many times per epoch
    beir_repeat: int = 1
    round2_beir_only: bool = False  # round 2 trains on the mined BEIR pairs alone
    # round 2's MMR group weights, smallest budget first (None: training["group_weights"])
    round2_group_weights: list[float] | None = None
    num_query_tokens: int = 16
    num_candidate_tokens: int = 64
    projection_dim: int | None = None
    append_both_sides: bool = True
    meta_attention: str = "causal"  # "causal": input states untouched by Meta tokens; or "full"
    # "mean": vectors = mean-pooled input + a learned map of the Meta states; "segments":
    # document vectors start from the means of finer segments of the input (anchors.py)
    anchor: str | None = None
    anchor_min_tokens: int = 4
    anchor_mix: float = 0.0  # "segments": weight of the whole mean added to each segment
    anchor_skip_special: bool = False  # "segments": cut segments without [CLS]/[SEP]
    anchor_skip_title: bool = False  # "segments": cut segments without a document's title
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rounds not in (1, 2):
            raise ValueError(f"rounds must be 1 or 2, got {self.rounds}")
        if self.ict < 0 or self.warm_start_steps < 0:
            raise ValueError("ict and warm_start_steps must be >= 0")
        if self.steps < 0 or (self.steps == 0 and self.rounds != 1):
            raise ValueError(
                f"steps must be >= 1, or 0 with rounds=1 (save the new model untrained, e.g. "
                f"an anchored model, and run the dev evaluation), got steps={self.steps} "
                f"with rounds={self.rounds}"
            )
        if self.hard_negative_repeat < 1:
            raise ValueError(f"hard_negative_repeat must be >= 1, got {self.hard_negative_repeat}")
        if self.beir_repeat < 1:
            raise ValueError(f"beir_repeat must be >= 1, got {self.beir_repeat}")
        if self.round2_group_weights is not None and self.rounds != 2:
            raise ValueError("round2_group_weights needs rounds=2.")
        if self.round2_beir_only and not self.beir:
            raise ValueError("round2_beir_only needs at least one BEIR folder (--beir).")
        if not self.beir and not self.captions and not self.pairs:
            raise ValueError(
                "No training data: pass at least one pairs file, BEIR folder or caption CSV."
            )
        if not 0.0 <= self.dev_fraction < 1.0:
            raise ValueError(f"dev_fraction must be in [0, 1), got {self.dev_fraction}")
        if self.dev_distractors < 0:
            raise ValueError(f"dev_distractors must be >= 0, got {self.dev_distractors}")
        if self.pairs_max_per_source is not None and self.pairs_max_per_source < 1:
            raise ValueError(f"pairs_max_per_source must be >= 1, got {self.pairs_max_per_source}")


def _new_model(cfg: RecipeConfig, seed: int) -> MetaEmbedModel:
    device = "cpu" if cfg.training.get("device") == "cpu" else None
    if cfg.init is not None:
        # keep LoRA adapters unmerged, so training continues them
        return MetaEmbedModel.from_pretrained(cfg.init, merge_lora=False, device=device)
    extra: dict[str, Any] = {} if cfg.query_prefix is None else {"query_prefix": cfg.query_prefix}
    return MetaEmbedModel.from_backbone(
        cfg.backbone,
        num_query_tokens=cfg.num_query_tokens,
        num_candidate_tokens=cfg.num_candidate_tokens,
        projection_dim=cfg.projection_dim,
        append_both_sides=cfg.append_both_sides,
        meta_attention=cfg.meta_attention,
        anchor=cfg.anchor,
        anchor_min_tokens=cfg.anchor_min_tokens,
        anchor_mix=cfg.anchor_mix,
        anchor_skip_special=cfg.anchor_skip_special,
        anchor_skip_title=cfg.anchor_skip_title,
        device=device,
        seed=seed,
        **extra,
    )


def _warm_config(cfg: RecipeConfig, seed: int) -> WarmStartConfig:
    t = cfg.training
    return WarmStartConfig(
        steps=cfg.warm_start_steps,
        batch_size=int(t.get("batch_size", 32)),
        lr=cfg.warm_start_lr,
        query_max_length=int(t.get("query_max_length", 64)),
        doc_max_length=int(t.get("doc_max_length", 256)),
        seed=seed,
        autocast=t.get("autocast"),
        show_progress_bar=bool(t.get("show_progress_bar", True)),
    )


def _repeated(examples: list[TrainExample], times: int) -> list[TrainExample]:
    """``times`` copies of ``examples``, each copy its own source, so a batch never holds the
    same pair twice and one epoch uses every pair ``times`` times."""
    if times == 1:
        return list(examples)
    return [replace(e, source=f"{e.source}-x{r}") for r in range(times) for e in examples]


def _train_config(
    cfg: RecipeConfig, output: Path, steps: int, group_weights: list[float] | None = None
) -> TrainingConfig:
    kw = {k: v for k, v in cfg.training.items() if k != "device"}
    if group_weights is not None:
        kw["group_weights"] = list(group_weights)
    return TrainingConfig(output_dir=str(output), max_steps=steps, **kw)


def run_recipe(cfg: RecipeConfig) -> Path:
    """Run the recipe; returns the final model folder (``<output_dir>/final``)."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    seed = int(cfg.training.get("seed", 0))
    start = time.perf_counter()

    beir_sets = [load_beir(folder, cfg.beir_split) for folder in cfg.beir]
    base: list[TrainExample] = []
    pair_sets: list[tuple[Any, list[TrainExample]]] = []
    for i, ds in enumerate(beir_sets):
        pairs = beir_pairs(ds, source=f"beir{i}")
        pair_sets.append((ds, pairs))
        if cfg.titles:
            base += title_pairs(ds, source=f"titles{i}")
        if cfg.ict:
            base += ict_pairs(
                ds, cfg.ict, keep_probability=cfg.ict_keep, seed=seed, source=f"ict{i}-"
            )
    for pairs_path in map(Path, cfg.pairs):
        name = pairs_path.name if pairs_path.is_dir() else pairs_path.parent.name
        base += pair_examples(load_pairs(pairs_path), name, cfg.pairs_max_per_source, seed)
    dev: list[TrainExample] = []
    if cfg.dev_fraction:
        base, dev = split_dev(base, cfg.dev_fraction, seed)
        if dev:
            require_backend()  # the dev evaluation's metrics, checked before training
        logger.info("Dev split: %d pairs held out of %d", len(dev), len(dev) + len(base))
    for i, csv_path in enumerate(cfg.captions):
        base += caption_pairs(
            load_image_captions(csv_path, verify_images=False), source=f"captions{i}", seed=seed
        )
    if cfg.teacher_negatives:
        from ..baselines import MeanPoolEncoder

        teacher = MeanPoolEncoder.from_backbone(
            cfg.backbone, device="cpu" if cfg.training.get("device") == "cpu" else None
        )
        base = teacher_negatives(
            base, teacher, top_n=cfg.teacher_top_n, min_rank=cfg.teacher_min_rank, seed=seed,
            max_length=int(cfg.training.get("doc_max_length", 256)),
        )  # fmt: skip
        del teacher
    stats = {
        "beir_pairs": sum(len(p) for _, p in pair_sets),
        "other_pairs": len(base),
        "dev_pairs": len(dev),
    }
    logger.info("Training data: %s", stats)

    steps1 = cfg.round1_steps if cfg.rounds == 2 else cfg.steps
    model = _new_model(cfg, seed)
    warm_state = None
    if cfg.warm_start_steps:
        everything = base + [e for _, p in pair_sets for e in p]
        queries = list(dict.fromkeys(e.query for e in everything if isinstance(e.query, str)))
        documents = list(
            dict.fromkeys(e.positive for e in everything if isinstance(e.positive, str))
        )
        for ds, _ in pair_sets:
            documents += [ds.doc_text(d) for d in sorted(ds.corpus)]
        documents = list(dict.fromkeys(documents))
        history = warm_start_meta_tokens(model, queries, documents, _warm_config(cfg, seed))
        (out / "warm_start.json").write_text(json.dumps(history, indent=1) + "\n")
        warm_state = {k: v.detach().clone() for k, v in model.state_dict().items()
                      if not k.startswith("backbone.")}  # fmt: skip
    if steps1:  # steps = 0: the new model as built (an anchored model starts useful)
        round1 = MMRTrainer(
            model,
            base + _repeated([e for _, p in pair_sets for e in p], cfg.beir_repeat),
            _train_config(cfg, out / "round1", steps1),
        )
        round1.train()
    else:
        logger.info("steps = 0: saving the new model untrained")
    final = model
    # Encode at the length the model was trained at unless the user asks otherwise.
    doc_len = int(cfg.training.get("doc_max_length", model.config.max_length))
    if cfg.rounds == 2:
        model.config.max_length = doc_len  # mining encodes the corpus like training does
        mined: list[TrainExample] = []
        for i, (ds, pairs) in enumerate(pair_sets):
            corpus = {d: ds.doc_item(d) for d in ds.corpus}  # as beir_pairs' positives
            negatives = mine_hard_negatives(
                model,
                ds.queries,
                corpus,
                {q: set(docs) for q, docs in ds.qrels.items()},
                top_n=cfg.mine_top_n,
                min_rank=cfg.mine_min_rank,
                budget=cfg.mine_budget,
            )
            with_neg = with_negatives(pairs, negatives, corpus, seed=seed)
            mined += _repeated(with_neg, cfg.hard_negative_repeat)
            (out / f"negatives-beir{i}.json").write_text(json.dumps(negatives))
        logger.info("Round 2: %d BEIR pairs with mined negatives", len(mined))
        final = _new_model(cfg, seed)  # retrain from the base weights ...
        if warm_state is not None:  # ... and the same warm-started Meta tokens
            final.load_state_dict(warm_state, strict=False)
        round2_data = mined if cfg.round2_beir_only else base + mined
        round2 = MMRTrainer(
            final,
            round2_data,
            _train_config(cfg, out / "round2", cfg.steps, cfg.round2_group_weights),
        )
        round2.train()
    final.config.max_length = doc_len
    folder = final.save_pretrained(out / "final")
    if dev:
        bs = int(cfg.training.get("batch_size", 32))
        report = evaluate_dev(final, dev, batch_size=bs)
        (out / "dev.json").write_text(json.dumps(report, indent=2) + "\n")
        logger.info("Dev nDCG@10 (macro over sources): %s", report["macro"])
        if cfg.dev_distractors:
            hard = evaluate_dev(
                final, dev, batch_size=bs,
                distractors=distractors_of(base, cfg.dev_distractors, seed),
            )  # fmt: skip
            (out / "dev-hard.json").write_text(json.dumps(hard, indent=2) + "\n")
            logger.info("Hard dev nDCG@10 (macro over sources): %s", hard["macro"])
    (out / "train_stats.json").write_text(
        json.dumps({**stats, "seconds": round(time.perf_counter() - start, 1)}, indent=2) + "\n"
    )
    return folder
