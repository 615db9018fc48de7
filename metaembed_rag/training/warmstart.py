"""Meta-token warm start: distil the backbone's own pooled embedding into every Meta vector.

Freshly initialised Meta tokens read nothing useful: a model built with
:meth:`~metaembed_rag.MetaEmbedModel.from_backbone` retrieves at random until MMR training has
taught the Meta positions to gather the input. On a small training budget that costs a good part
of what the backbone already knows (all-MiniLM-L6-v2 was trained to embed by mean pooling).
The warm start trains **only the Meta tokens** (and the projection, if any), with the backbone
frozen, so that every Meta vector of an input reproduces the backbone's own mean-pooled
embedding of that input (cosine loss). Afterwards every budget ranks like the backbone's pooled
embedding, and MMR training starts from there instead of from random vectors.

This is a recipe step of this package, not part of the MetaEmbed paper's training (which
starts large vision-language models from their own pre-training). With a projection the
target is the pooled state passed through the projection, so its width always matches.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..inputs import ItemLike
from ..model import MetaEmbedModel

__all__ = ["WarmStartConfig", "warm_start_meta_tokens"]

logger = logging.getLogger(__name__)


@dataclass
class WarmStartConfig:
    """Hyper-parameters of the Meta-token warm start (saved with the recipe).

    Attributes:
        steps: optimisation steps; each encodes ``batch_size`` queries and ``batch_size``
            documents.
        batch_size: inputs per side per step.
        lr: AdamW learning rate of the Meta tokens (and projection).
        warmup_steps: linear learning-rate warm-up, then cosine decay to 0.
        query_max_length / doc_max_length: token limits (as in training).
        seed: seed of the sampling order.
        autocast: ``"bfloat16"`` / ``"float16"`` mixed precision for the forward pass, or None.
        show_progress_bar: tqdm bar with the loss.
    """

    steps: int = 150
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 20
    query_max_length: int = 64
    doc_max_length: int = 256
    seed: int = 0
    autocast: str | None = None
    show_progress_bar: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(
                f"WarmStartConfig needs steps >= 1 and batch_size >= 1, got {self.steps} and "
                f"{self.batch_size}"
            )
        if self.autocast not in (None, "bfloat16", "float16"):
            raise ValueError(
                f"autocast must be None, 'bfloat16' or 'float16', got {self.autocast!r}"
            )


def _lr_factor(step: int, cfg: WarmStartConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _side_loss(
    model: MetaEmbedModel, items: list[ItemLike], side: str, max_length: int, mixed: str | None
) -> torch.Tensor:
    """Mean over items and Meta vectors of 1 - cos(Meta vector, pooled embedding)."""
    batch = model.prepare(items, side, max_length=max_length)  # type: ignore[arg-type]
    with torch.autocast(
        model.device.type, dtype=getattr(torch, mixed) if mixed else None, enabled=bool(mixed)
    ):
        with torch.no_grad():
            target = model.adapter.mean_pooled(batch)
            if model.projection is not None:
                target = model.projection(target.to(model.projection.weight.dtype))
        vectors = model(batch, side)  # type: ignore[arg-type]  # (B, R, D), unit norm
    target = F.normalize(target.float(), dim=-1)
    return (1 - (vectors * target[:, None, :]).sum(dim=-1)).mean()


def warm_start_meta_tokens(
    model: MetaEmbedModel,
    queries: Sequence[ItemLike],
    documents: Sequence[ItemLike],
    config: WarmStartConfig | None = None,
) -> list[dict[str, Any]]:
    """Train the Meta tokens of ``model`` to reproduce its backbone's mean-pooled embedding.

    Args:
        model: a model whose Meta tokens are to be initialised (typically fresh from
            :meth:`~metaembed_rag.MetaEmbedModel.from_backbone`); modified in place. The backbone
            (and any LoRA adapter) is left unchanged.
        queries: query-side inputs to sample from (e.g. training queries).
        documents: document-side inputs to sample from (e.g. the corpus).
        config: hyper-parameters (defaults: :class:`WarmStartConfig`).

    Returns:
        One row per 10 steps: ``{"step", "loss", "query_cos", "document_cos", "seconds"}``,
        where ``*_cos`` is the mean cosine between Meta vectors and the target on that side.

    Raises:
        ValueError: ``queries`` or ``documents`` is empty.
    """
    cfg = config or WarmStartConfig()
    if not queries or not documents:
        raise ValueError(
            f"The warm start needs query and document inputs; got {len(queries)} queries and "
            f"{len(documents)} documents."
        )
    params = [model.query_tokens, model.candidate_tokens]
    if model.projection is not None:
        params += list(model.projection.parameters())
    frozen = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    rng = random.Random(cfg.seed)
    was_training = model.training
    model.eval()  # no dropout: the target and the Meta vectors see the same network
    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="Meta-token warm start", disable=not cfg.show_progress_bar)
    try:
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * _lr_factor(step, cfg)
            qs = [queries[rng.randrange(len(queries))] for _ in range(cfg.batch_size)]
            ds = [documents[rng.randrange(len(documents))] for _ in range(cfg.batch_size)]
            q_loss = _side_loss(model, qs, "query", cfg.query_max_length, cfg.autocast)
            d_loss = _side_loss(model, ds, "document", cfg.doc_max_length, cfg.autocast)
            loss = q_loss + d_loss
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"The warm-start loss became {value} at step {step}.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            q_cos, d_cos = 1 - float(q_loss.detach()), 1 - float(d_loss.detach())
            bar.set_postfix({"query_cos": f"{q_cos:.3f}", "doc_cos": f"{d_cos:.3f}"})
            if (step + 1) % 10 == 0 or step + 1 == cfg.steps:
                row = {
                    "step": step + 1,
                    "loss": value,
                    "query_cos": q_cos,
                    "document_cos": d_cos,
                    "seconds": round(time.perf_counter() - start, 1),
                }
                history.append(row)
                logger.info("warm start step %d: query cos %.4f, document cos %.4f",
                            step + 1, q_cos, d_cos)  # fmt: skip
    finally:
        bar.close()
        for p, flag in frozen.items():
            p.requires_grad_(flag)
        model.train(was_training)
    return history
