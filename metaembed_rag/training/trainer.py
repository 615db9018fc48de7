"""The MMR training loop: Meta tokens (+ projection, + optional LoRA) trained with InfoNCE per
prefix group, in-batch positives plus each query's own hard negative.

Batches are drawn from one data source at a time (as in the reference recipe) and never hold
the same query or the same positive twice (a repeated positive would be a false negative).
Checkpoints are safetensors + JSON (no pickle) and training resumes from the newest one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..inputs import ItemLike
from ..model import MetaEmbedModel
from .loss import MMRLoss

__all__ = ["TrainExample", "TrainingConfig", "MMRTrainer"]

logger = logging.getLogger(__name__)

STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"


@dataclass
class TrainExample:
    """One training triple.

    Attributes:
        query / positive / negative: anything ``encode_*`` accepts (text, image, pair).
        source: the data source; a batch holds one source only.
        query_id / positive_id: ids used to keep duplicates out of a batch.
    """

    query: ItemLike
    positive: ItemLike
    negative: ItemLike | None = None
    source: str = "default"
    query_id: str = ""
    positive_id: str = ""


@dataclass
class TrainingConfig:
    """Hyper-parameters of an MMR run (saved as JSON next to every checkpoint)."""

    output_dir: str
    max_steps: int = 1000
    batch_size: int = 32
    grad_accum_steps: int = 1
    lr: float = 1e-4
    meta_lr: float | None = 1e-3
    warmup_steps: int = 50
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    temperature: float = 0.03
    group_weights: list[float] | None = None
    loss_reduction: str = "sum"
    train_backbone: bool = False
    lora: bool = False
    lora_r: int = 32
    lora_alpha: int = 32
    lora_targets: str | list[str] = "all-linear"
    query_max_length: int = 64
    doc_max_length: int = 256
    seed: int = 0
    save_every: int = 200
    keep_checkpoints: int = 2
    log_every: int = 10
    show_progress_bar: bool = True
    autocast: str | None = None  # "bfloat16" / "float16": mixed precision for the forward pass
    # Keep the backbone's dropout active while training. Off by default: contrastive
    # fine-tuning does not need it, and on CPU the attention-dropout masks (and the slower
    # attention path they force) roughly triple the step time (measured: 12 s -> 4 s per
    # 32-document step, MiniLM, 256 tokens).
    dropout: bool = False
    # Auxiliary loss (0: off): InfoNCE on the backbone's mean-pooled input states from the
    # same forward passes (in-batch positives + own negative), temperature pooled_temperature.
    # It only shapes the backbone; retrieval still uses the Meta vectors alone.
    pooled_loss_weight: float = 0.0
    pooled_temperature: float = 0.05
    # Distillation (0: off): every MMR group also matches the in-batch score distribution of
    # the backbone's own mean-pooled cosine (the untrained backbone: adapters off), with
    # teacher temperature distill_temperature. See metaembed_rag.training.loss.
    distill_weight: float = 0.0
    distill_temperature: float = 0.05
    # The groups that get the KL term, as budget strings ("1,1"); None: every group.
    distill_groups: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum_steps", "save_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainingConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2: in-batch negatives need other positives")
        if self.autocast not in (None, "bfloat16", "float16"):
            raise ValueError(
                f"autocast must be None, 'bfloat16' or 'float16', got {self.autocast!r}"
            )
        if self.lora and self.train_backbone:
            raise ValueError("Choose LoRA or full backbone training, not both.")
        if self.pooled_loss_weight < 0 or self.pooled_temperature <= 0:
            raise ValueError(
                "pooled_loss_weight must be >= 0 and pooled_temperature > 0, got "
                f"{self.pooled_loss_weight} and {self.pooled_temperature}"
            )
        if self.distill_weight > 0 and self.train_backbone:
            raise ValueError(
                "distill_weight needs a frozen backbone or LoRA (the teacher is the untrained "
                "backbone); it cannot be combined with train_backbone."
            )


def _dropout_off(model: torch.nn.Module) -> None:
    """Put every dropout in ``model`` into eval mode, and zero attention-dropout rates that
    modules keep as plain floats (e.g. Qwen2's ``attention_dropout``), so that training-mode
    attention takes the fused no-dropout path."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.eval()
            # Attention modules read ``self.dropout.p`` when ``self.training``: zero it too.
            module.p = 0.0
        rate = getattr(module, "attention_dropout", None)
        if isinstance(rate, float) and rate > 0:
            cast(Any, module).attention_dropout = 0.0  # a float attribute, not a submodule


class _Batcher:
    """Deterministic batches: per epoch, shuffle each source, cut into duplicate-free batches,
    then shuffle the batch order across sources."""

    def __init__(self, examples: Sequence[TrainExample], batch_size: int, seed: int) -> None:
        if not examples:
            raise ValueError("No training examples.")
        self.examples = list(examples)
        self.batch_size = batch_size
        self.seed = seed
        by_source: dict[str, list[int]] = {}
        for i, ex in enumerate(self.examples):
            by_source.setdefault(ex.source, []).append(i)
        self.by_source = by_source
        small = [s for s, idx in by_source.items() if len(idx) < batch_size]
        if len(small) == len(by_source):
            raise ValueError(
                f"Every data source has fewer than batch_size={batch_size} examples "
                f"({ {s: len(i) for s, i in by_source.items()} }); lower the batch size."
            )

    def epoch(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + epoch)
        batches: list[list[int]] = []
        for source in sorted(self.by_source):
            pool = list(self.by_source[source])
            rng.shuffle(pool)
            while len(pool) >= self.batch_size:
                batch: list[int] = []
                seen_q: set[str] = set()
                seen_p: set[str] = set()
                rest: list[int] = []
                for i in pool:
                    ex = self.examples[i]
                    qk = ex.query_id or f"#q{i}"
                    pk = ex.positive_id or f"#p{i}"
                    if len(batch) < self.batch_size and qk not in seen_q and pk not in seen_p:
                        batch.append(i)
                        seen_q.add(qk)
                        seen_p.add(pk)
                    else:
                        rest.append(i)
                if len(batch) < self.batch_size:
                    break  # the remainder cannot form a duplicate-free batch this epoch
                batches.append(batch)
                pool = rest
        rng.shuffle(batches)
        return batches


def _pair_scores(
    queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None
) -> torch.Tensor:
    """(B, B [+1]) cosine scores of pooled states (normalised here), columns as in
    ``group_logits``: the teacher's scores and the auxiliary pooled loss's logits."""
    qn = torch.nn.functional.normalize(queries.float(), dim=-1)
    pn = torch.nn.functional.normalize(positives.float(), dim=-1)
    scores = qn @ pn.T
    if negatives is not None:
        nn_ = torch.nn.functional.normalize(negatives.float(), dim=-1)
        scores = torch.cat([scores, (qn * nn_).sum(-1, keepdim=True)], dim=1)
    return scores


class MMRTrainer:
    """Train a :class:`MetaEmbedModel` with the MMR loss.

    Args:
        model: the model to train (modified in place).
        examples: training triples.
        config: hyper-parameters.
    """

    def __init__(
        self, model: MetaEmbedModel, examples: Sequence[TrainExample], config: TrainingConfig
    ) -> None:
        self.model = model
        self.config = config
        self.output_dir = Path(config.output_dir)
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        if config.lora and not hasattr(model.backbone, "peft_config"):
            model.add_lora(
                r=config.lora_r,
                alpha=config.lora_alpha,
                target_modules=config.lora_targets,
                seed=config.seed,
            )
        self._set_trainable()
        self.loss_fn = MMRLoss(
            model.budgets,
            temperature=config.temperature,
            weights=config.group_weights,
            reduction=config.loss_reduction,
            distill_weight=config.distill_weight,
            distill_temperature=config.distill_temperature,
            distill_groups=config.distill_groups,
        )
        self.batcher = _Batcher(examples, config.batch_size, config.seed)
        self.examples = self.batcher.examples
        self.optimizer = self._make_optimizer()
        self.step = 0
        self.epoch = 0
        self.position = 0  # next batch index within the epoch
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ setup
    def _meta_params(self) -> list[torch.Tensor]:
        return list(self.model.meta_parameters().values())

    def _set_trainable(self) -> None:
        cfg = self.config
        for name, param in self.model.backbone.named_parameters():
            if cfg.train_backbone:
                param.requires_grad_(True)
            elif cfg.lora:
                param.requires_grad_("lora_" in name)
            else:
                param.requires_grad_(False)
        for tensor in self._meta_params():
            tensor.requires_grad_(True)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        meta = self._meta_params()
        meta_ids = {id(p) for p in meta}
        backbone = [p for p in self.model.parameters() if p.requires_grad and id(p) not in meta_ids]
        groups: list[dict[str, Any]] = [{"params": meta, "lr": cfg.meta_lr or cfg.lr}]
        if backbone:
            groups.append({"params": backbone, "lr": cfg.lr})
        return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)

    def _lr_factor(self, step: int) -> float:
        cfg = self.config
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        return max(0.0, 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """Write ``checkpoint-<step>/``: the model folder, optimizer state and trainer state."""
        folder = self.output_dir / f"checkpoint-{self.step:06d}"
        self.model.save_pretrained(folder)
        tensors: dict[str, torch.Tensor] = {}
        scalars: dict[str, Any] = {}
        state = self.optimizer.state_dict()
        for pid, pstate in state["state"].items():
            for key, value in pstate.items():
                if torch.is_tensor(value):
                    tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars[f"{pid}.{key}"] = value
        tensors["rng.cpu"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, st in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda{i}"] = st
        save_file(tensors, str(folder / OPTIMIZER_NAME))
        trainer_state = {
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "config": asdict(self.config),
            "optimizer_scalars": scalars,
            "param_groups": [
                {k: v for k, v in g.items() if k != "params"} for g in state["param_groups"]
            ],
            "history": self.history[-1000:],
        }
        (folder / STATE_NAME).write_text(json.dumps(trainer_state, indent=1, default=str))
        checkpoints = sorted(self.output_dir.glob("checkpoint-*"))
        for old in checkpoints[: -self.config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return folder

    def latest_checkpoint(self) -> Path | None:
        found = [
            p for p in sorted(self.output_dir.glob("checkpoint-*")) if (p / STATE_NAME).is_file()
        ]
        return found[-1] if found else None

    def resume(self, folder: Path | None = None) -> bool:
        """Load model weights, optimizer and step from a checkpoint (default: the newest)."""
        folder = folder or self.latest_checkpoint()
        if folder is None:
            return False
        state = json.loads((folder / STATE_NAME).read_text())
        loaded = MetaEmbedModel.from_pretrained(folder, merge_lora=False, device=self.model.device)
        with torch.no_grad():
            own = dict(self.model.named_parameters())
            for name, value in loaded.named_parameters():
                if name not in own:
                    raise ValueError(f"{folder}: parameter {name} does not exist in the model")
                own[name].copy_(value)
        opt_state = self.optimizer.state_dict()
        tensors = load_file(str(folder / OPTIMIZER_NAME))
        new_state: dict[int, dict[str, Any]] = {}
        rng = {k: tensors.pop(k) for k in list(tensors) if k.startswith("rng.")}
        for key, tensor in tensors.items():
            pid, name = key.split(".", 1)
            new_state.setdefault(int(pid), {})[name] = tensor
        for key, value in state["optimizer_scalars"].items():
            pid, name = key.split(".", 1)
            new_state.setdefault(int(pid), {})[name] = value
        opt_state["state"] = new_state
        for group, saved in zip(opt_state["param_groups"], state["param_groups"], strict=True):
            group.update(saved)
        self.optimizer.load_state_dict(opt_state)
        # dropout masks continue exactly where the interrupted run stopped
        torch.set_rng_state(rng["rng.cpu"])
        if torch.cuda.is_available():
            cuda_states = [rng[k] for k in sorted(rng) if k.startswith("rng.cuda")]
            if len(cuda_states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda_states)
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.history = list(state.get("history", []))
        logger.info("Resumed from %s at step %d", folder, self.step)
        return True

    # ------------------------------------------------------------------ training
    def _teacher_in_forward(self) -> bool:
        """Whether the same forward pass yields the teacher's pooled states: the backbone is
        frozen and the input tokens do not attend to the Meta tokens."""
        cfg = self.config
        causal = (
            getattr(self.model.config, "meta_attention", "full") == "causal"
            or not self.model.adapter.bidirectional
        )
        return not cfg.lora and not cfg.train_backbone and causal

    def _encode(
        self, items: list[ItemLike], side: str, max_length: int
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(B, R, D) vectors, (B, H) pooled states of the trained backbone (for the pooled
        loss) and (B, H) teacher states (for distillation); ``None`` where not needed."""
        cfg = self.config
        batch = self.model.prepare(items, side, max_length=max_length)  # type: ignore[arg-type]
        mixed = cfg.autocast
        distill = cfg.distill_weight > 0
        shared_teacher = distill and self._teacher_in_forward()
        want_pooled = cfg.pooled_loss_weight > 0 or shared_teacher
        with torch.autocast(
            self.model.device.type,
            dtype=getattr(torch, mixed) if mixed else None,
            enabled=mixed is not None,
        ):
            out = self.model(batch, side, return_pooled=want_pooled)  # type: ignore[arg-type]
            vectors, pooled = out if want_pooled else (out, None)
            teacher = pooled.detach() if shared_teacher and pooled is not None else None
            if distill and teacher is None:
                with torch.no_grad(), self._adapters_off():
                    teacher = self.model.adapter.mean_pooled(batch)
        return vectors, pooled, teacher

    def _adapters_off(self) -> Any:
        """Context in which the backbone runs without its LoRA adapters (the teacher)."""
        disable = getattr(self.model.backbone, "disable_adapter", None)
        if disable is None:
            return contextlib.nullcontext()
        return disable()

    def _micro_loss(self, idx: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        exs = [self.examples[i] for i in idx]
        q, qp, qt = self._encode([e.query for e in exs], "query", cfg.query_max_length)
        p, pp, pt = self._encode([e.positive for e in exs], "document", cfg.doc_max_length)
        negs = [e.negative for e in exs]
        n = np_ = nt = None
        if all(x is not None for x in negs):
            n, np_, nt = self._encode(negs, "document", cfg.doc_max_length)  # type: ignore[arg-type]
        elif any(x is not None for x in negs):
            raise ValueError("Within a batch, either every example has a hard negative or none.")
        teacher = None
        if qt is not None and pt is not None:
            teacher = _pair_scores(qt, pt, nt)
        out = self.loss_fn(q, p, n, teacher)
        if cfg.pooled_loss_weight <= 0:
            return out.loss, out.group_losses
        assert qp is not None and pp is not None
        logits = _pair_scores(qp, pp, np_)
        labels = torch.arange(len(exs), device=logits.device)
        aux = torch.nn.functional.cross_entropy(logits.float() / cfg.pooled_temperature, labels)
        groups = dict(out.group_losses)
        groups["pooled"] = float(aux.detach())
        return out.loss + cfg.pooled_loss_weight * aux, groups

    def train(self, resume: bool = True, until: int | None = None) -> list[dict[str, Any]]:
        """Run until ``max_steps`` (or stop early at step ``until``, e.g. to split a run across
        jobs; the schedule still follows ``max_steps``). Returns the logged history (one row per
        ``log_every`` steps)."""
        cfg = self.config
        stop = cfg.max_steps if until is None else min(until, cfg.max_steps)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self.resume()
        self.model.train()
        if not cfg.dropout:
            _dropout_off(self.model)
        micro_per_step = cfg.grad_accum_steps
        micro_size = cfg.batch_size // micro_per_step if micro_per_step > 1 else cfg.batch_size
        if micro_per_step > 1 and micro_size < 2:
            raise ValueError("batch_size / grad_accum_steps must be >= 2")
        batches = self.batcher.epoch(self.epoch)
        if not batches:
            raise ValueError("No full batch could be formed; lower batch_size.")
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            desc="MMR training",
            disable=not cfg.show_progress_bar,
        )
        start = time.perf_counter()
        while self.step < stop:
            if self.position >= len(batches):
                self.epoch += 1
                self.position = 0
                batches = self.batcher.epoch(self.epoch)
            batch = batches[self.position]
            self.position += 1
            for group in self.optimizer.param_groups:
                base = group.setdefault("initial_lr", group["lr"])
                group["lr"] = base * self._lr_factor(self.step)
            self.optimizer.zero_grad(set_to_none=True)
            totals: dict[str, float] = {}
            loss_value = 0.0
            for m in range(micro_per_step):
                part = batch[m * micro_size : (m + 1) * micro_size] if micro_per_step > 1 else batch
                loss, groups = self._micro_loss(part)
                (loss / micro_per_step).backward()
                loss_value += float(loss.detach()) / micro_per_step
                for k, v in groups.items():
                    totals[k] = totals.get(k, 0.0) + v / micro_per_step
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"The loss became {loss_value} at step {self.step}.")
            if cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(
                    [p for p in self.model.parameters() if p.requires_grad], cfg.max_grad_norm
                )
            self.optimizer.step()
            self.step += 1
            bar.update(1)
            bar.set_postfix(
                {"loss": f"{loss_value:.3f}", **{k: f"{v:.2f}" for k, v in totals.items()}}
            )
            if self.step % cfg.log_every == 0 or self.step == stop:
                row = {
                    "step": self.step,
                    "loss": loss_value,
                    "groups": totals,
                    "epoch": self.epoch,
                    "seconds": round(time.perf_counter() - start, 1),
                }
                self.history.append(row)
                logger.info("step %d loss %.4f %s", self.step, loss_value, totals)
            if self.step % cfg.save_every == 0 or self.step == stop:
                self.save_checkpoint()
        bar.close()
        self.model.eval()
        return self.history
