"""The interface between :class:`~metaembed_rag.MetaEmbedModel` and a ``transformers`` backbone.

An adapter has two jobs, kept apart as in colpali-engine:

* ``prepare`` (processor side): turn :class:`~metaembed_rag.inputs.Item` objects into padded
  backbone inputs (token ids, attention mask, pixel values, ...), **left padded**, truncated
  at ``max_length`` tokens. It never sees the Meta tokens.
* ``forward`` (model side): append ``M`` Meta-token embeddings after every (left-padded)
  input, extend the attention mask with ones, let the backbone compute positions over the
  extended sequence, and return the last-layer hidden states at the ``M`` Meta positions.

The Meta embeddings enter through a forward hook on the backbone's input-embedding module,
which replaces the embeddings of ``M`` placeholder ids appended to ``input_ids``. The rest of
the backbone's own forward (image-feature merging, M-RoPE position ids, ...) runs unchanged,
so real checkpoints work exactly as the model family's own code treats them.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, cast

import torch
from torch import nn

from ..inputs import Item

logger = logging.getLogger(__name__)

Side = Literal["query", "document"]

__all__ = ["BackboneAdapter", "PreparedBatch", "Side"]


@dataclass
class PreparedBatch:
    """Backbone inputs for one batch (no Meta tokens yet).

    Attributes:
        tensors: model inputs; always ``input_ids`` (B, L) and ``attention_mask`` (B, L),
            left padded; image models add e.g. ``pixel_values``.
        num_truncated: how many items were cut at ``max_length``.
        content_mask: (B, L) the attended positions that are not the tokenizer's special
            tokens (``[CLS]``, ``[SEP]``, ...), from adapters whose ``marks_special_tokens``
            is true; ``None`` otherwise. Not a model input: segment anchors that skip special
            tokens (:mod:`metaembed_rag.anchors`) cut their segments from it.
        title_mask: (B, L) the positions of the items' titles (:attr:`Item.title
            <metaembed_rag.inputs.Item.title>`), from adapters whose ``marks_titles`` is true
            when an item of the batch has a title; ``None`` otherwise. Not a model input:
            segment anchors that skip titles cut their segments without these positions.
    """

    tensors: dict[str, torch.Tensor]
    num_truncated: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    content_mask: torch.Tensor | None = None
    title_mask: torch.Tensor | None = None

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> PreparedBatch:
        moved: dict[str, torch.Tensor] = {}
        for key, value in self.tensors.items():
            if dtype is not None and value.is_floating_point():
                moved[key] = value.to(device=device, dtype=dtype)
            else:
                moved[key] = value.to(device)
        content = None if self.content_mask is None else self.content_mask.to(device)
        title = None if self.title_mask is None else self.title_mask.to(device)
        return PreparedBatch(moved, self.num_truncated, self.extra, content, title)


def left_padded_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only attended tokens: ``cumsum(mask) - 1``, pads at 0.

    With left padding this gives every real token (and every appended Meta token) the
    same position whatever the padding of the batch, so an item's vectors do not depend on
    what it is batched with. Shape (B, L) -> (B, L), int64.
    """
    mask = attention_mask.long()
    return (mask.cumsum(dim=-1) - 1).clamp(min=0)


class BackboneAdapter(ABC):
    """Base class of backbone adapters. Subclasses handle one model family."""

    #: human-readable family name ("text", "qwen2_vl", "idefics3", ...)
    family: ClassVar[str] = "base"
    #: whether image inputs are accepted
    supports_images: ClassVar[bool] = False
    #: whether :meth:`prepare` sets :attr:`PreparedBatch.content_mask` (special tokens marked)
    marks_special_tokens: ClassVar[bool] = False
    #: whether :meth:`prepare` sets :attr:`PreparedBatch.title_mask` for titled items
    marks_titles: ClassVar[bool] = False
    #: whether ``forward`` must pass position ids computed from the attention mask
    needs_position_ids: ClassVar[bool] = True
    #: the ``transformers`` ``model_type`` values the default :meth:`matches` accepts
    model_types: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, model: nn.Module, processor: Any, config: Any) -> None:
        #: the transformers model, used duck-typed (``config``, ``get_input_embeddings``, ...)
        self.model: Any = model
        self.processor = processor
        self.config = config

    # ------------------------------------------------------------------ loading
    @classmethod
    def matches(cls, hf_config: Any) -> bool:
        """Whether this adapter handles a backbone with this ``transformers`` config (default:
        its ``model_type`` is one of :attr:`model_types`)."""
        return getattr(hf_config, "model_type", None) in cls.model_types

    @classmethod
    def load_backbone(
        cls, path: str, *, dtype: torch.dtype | None, trust_remote_code: bool
    ) -> nn.Module:
        """Load the backbone's base model (no LM head) from a hub id or local folder.

        ``AutoModel`` maps a ``...ForConditionalGeneration`` / ``...ForCausalLM`` checkpoint to
        the family's base model class; the head's weights are not loaded.
        """
        from transformers import AutoModel

        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        if dtype is not None:
            kwargs["dtype"] = dtype
        return AutoModel.from_pretrained(path, **kwargs)

    @classmethod
    @abstractmethod
    def load_processor(cls, path: str, *, trust_remote_code: bool) -> Any:
        """Load the tokenizer / processor that goes with the backbone."""

    # ------------------------------------------------------------------ properties
    @property
    @abstractmethod
    def tokenizer(self) -> Any:
        """The backbone's text tokenizer (inside the processor for vision-language models)."""

    @property
    def hidden_size(self) -> int:
        return int(self.input_embeddings().weight.shape[1])

    def input_embeddings(self) -> nn.Embedding:
        """The backbone's token-embedding table (an ``nn.Embedding`` or a subclass in every
        supported family)."""
        return cast(nn.Embedding, self.model.get_input_embeddings())

    @property
    @abstractmethod
    def placeholder_id(self) -> int:
        """A plain token id used as placeholder for the appended Meta positions."""

    @property
    def position_offset(self) -> int:
        """Added to the computed position ids (RoBERTa-style models start after the pad id)."""
        return 0

    @property
    def max_positions(self) -> int | None:
        """The backbone's maximum sequence length (Meta tokens included), if it has one."""
        return None

    @property
    def bidirectional(self) -> bool:
        """Whether the backbone attends in both directions (an encoder): then the Meta tokens'
        attention follows ``config.meta_attention``. Decoders are causal by construction."""
        return False

    # ------------------------------------------------------------------ processor side
    @abstractmethod
    def prepare(
        self, items: list[Item], side: Side, max_length: int, instruction: str | None = None
    ) -> PreparedBatch:
        """Tokenise / process ``items`` into a left-padded batch, truncating at ``max_length``.

        ``instruction`` (queries only) is a task instruction put before the query text.
        """

    def format_text(
        self, text: str | None, side: Side, instruction: str | None = None, title: str | None = None
    ) -> str:
        """The text actually fed for an item (prefixes and instructions applied; a document's
        title before its text, after the document prefix: :meth:`title_span`).

        Raises:
            ValueError: a title on the query side (titles belong to documents).
        """
        cfg = self.config
        prefix = cfg.query_prefix if side == "query" else cfg.document_prefix
        body = text if text is not None else ""
        if title:
            if side == "query":
                raise ValueError(
                    "a query has a title; titles belong to documents: put the words in the "
                    "query's text"
                )
            body = f"{title} {body}"
        if instruction and side == "query":
            body = f"{instruction.strip()} {body}".strip()
        return f"{prefix}{body}"

    def title_span(self, title: str | None) -> tuple[int, int]:
        """The characters ``[start, end)`` of ``title`` in :meth:`format_text`'s output;
        ``(0, 0)`` without a title."""
        if not title:
            return (0, 0)
        start = len(self.config.document_prefix)
        return (start, start + len(title))

    # ------------------------------------------------------------------ model side
    def extra_forward_kwargs(
        self, batch: PreparedBatch, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, Any]:
        """Family-specific forward arguments besides ids, mask and (optional) positions."""
        return {k: v for k, v in batch.tensors.items() if k not in ("input_ids", "attention_mask")}

    def forward(
        self,
        batch: PreparedBatch,
        meta: torch.Tensor,
        *,
        return_pooled: bool = False,
        pool: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> Any:
        """Run the backbone with ``meta`` appended to every input.

        Args:
            batch: left-padded inputs from :meth:`prepare`, on the model's device.
            meta: (M, H) Meta-token embeddings, appended in this order after each input.
            return_pooled: also return the mean of the last-layer states over the input's own
                (attended, non-Meta) positions, from the same forward pass.
            pool: with ``return_pooled``, pools ``(states (B, L, H), mask (B, L))`` of the
                input's own positions instead of the mean (e.g.
                :func:`metaembed_rag.anchors.segment_means`).

        Returns:
            (B, M, H) last-layer hidden states at the Meta positions (with ``return_pooled``:
            a tuple of those and the (B, H) pooled states, or what ``pool`` returns).
        """
        input_ids = batch.tensors["input_ids"]
        attention_mask = batch.tensors["attention_mask"]
        bsz = input_ids.shape[0]
        num_meta = meta.shape[0]
        device = input_ids.device
        ext_ids = torch.cat(
            [
                input_ids,
                torch.full(
                    (bsz, num_meta), self.placeholder_id, dtype=input_ids.dtype, device=device
                ),
            ],
            dim=1,
        )
        ext_mask = torch.cat(
            [
                attention_mask,
                torch.ones((bsz, num_meta), dtype=attention_mask.dtype, device=device),
            ],
            dim=1,
        )
        seq_len = ext_ids.shape[1]

        def replace_meta(_module: nn.Module, _args: Any, output: torch.Tensor) -> torch.Tensor:
            # Only the lookup of the whole extended sequence is rewritten; other calls of the
            # embedding module (e.g. looking up a special token id) pass through.
            if output.dim() != 3 or output.shape[0] != bsz or output.shape[1] != seq_len:
                return output
            meta_rows = meta.to(dtype=output.dtype, device=output.device).unsqueeze(0)
            return torch.cat([output[:, :-num_meta], meta_rows.expand(bsz, -1, -1)], dim=1)

        kwargs = self.extra_forward_kwargs(batch, ext_ids, ext_mask)
        if self.needs_position_ids:
            kwargs["position_ids"] = left_padded_position_ids(ext_mask) + self.position_offset
        model_mask: torch.Tensor = ext_mask
        if (
            num_meta
            and self.bidirectional
            and getattr(self.config, "meta_attention", "full") == "causal"
        ):
            model_mask = self._causal_meta_mask(ext_mask, num_meta)
        handle = self.input_embeddings().register_forward_hook(replace_meta) if num_meta else None
        try:
            out = self.model(input_ids=ext_ids, attention_mask=model_mask, **kwargs)
        finally:
            if handle is not None:
                handle.remove()
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        # no Meta tokens (mean_pooled): every position
        states = hidden if num_meta == 0 else hidden[:, -num_meta:, :]
        if not return_pooled:
            return states
        text = hidden[:, : hidden.shape[1] - num_meta, :]
        if pool is not None:
            return states, pool(text, attention_mask)
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return states, (text * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)

    def _causal_meta_mask(self, ext_mask: torch.Tensor, num_meta: int) -> torch.Tensor:
        """(B, 1, L, L) attention mask for ``meta_attention="causal"``: every position sees the
        attended input tokens; only Meta position i sees Meta positions j <= i. Boolean
        (True = attend) for SDPA / flash attention, additive float for eager attention."""
        bsz, seq = ext_mask.shape
        n_in = seq - num_meta
        keys = ext_mask.bool()[:, None, None, :].expand(bsz, 1, seq, seq).clone()
        meta_block = torch.ones(num_meta, num_meta, dtype=torch.bool, device=ext_mask.device).tril()
        keys[:, :, :n_in, n_in:] = False
        keys[:, :, n_in:, n_in:] = meta_block
        impl = getattr(getattr(self.model, "config", None), "_attn_implementation", "sdpa")
        if impl == "eager":
            dtype = self.input_embeddings().weight.dtype
            zero = torch.zeros((), dtype=dtype, device=ext_mask.device)
            return torch.where(keys, zero, torch.finfo(dtype).min)
        return keys

    def mean_pooled(self, batch: PreparedBatch) -> torch.Tensor:
        """The backbone's own embedding of each input, without Meta tokens: the mean of the
        last-layer states over the attended positions (how sentence-transformers models such as
        all-MiniLM-L6-v2 were trained to embed). Positions as in :meth:`forward`.

        Returns:
            (B, H) float32, not normalised.
        """
        hidden = self.forward(batch, self.input_embeddings().weight[:0])
        mask = batch.tensors["attention_mask"].to(hidden.dtype).unsqueeze(-1)
        return ((hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)).float()
