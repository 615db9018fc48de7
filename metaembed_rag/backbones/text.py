"""Text-only backbones: encoder models (BERT family) and decoder-only language models."""

from __future__ import annotations

from typing import Any

import torch

from ..inputs import Item
from .base import BackboneAdapter, PreparedBatch, Side

__all__ = ["TextAdapter"]

_ROBERTA_STYLE = {"roberta", "xlm-roberta", "camembert", "xlm-roberta-xl"}
_ABSOLUTE_POSITIONS = {"bert", "distilbert", "electra", "mpnet", *_ROBERTA_STYLE}


class TextAdapter(BackboneAdapter):
    """Any ``AutoModel`` text backbone with a tokenizer (BERT, MiniLM, RoBERTa, Qwen2, ...).

    Position ids are computed from the attention mask, so left padding does not shift them
    (BERT's default positions would count the pads).
    """

    family = "text"
    supports_images = False
    marks_special_tokens = True
    marks_titles = True
    needs_position_ids = True

    @classmethod
    def matches(cls, hf_config: Any) -> bool:
        # The fallback adapter: anything without a vision tower.
        return not any(
            hasattr(hf_config, attr) for attr in ("vision_config", "vision_tower", "image_token_id")
        )

    @classmethod
    def load_processor(cls, path: str, *, trust_remote_code: bool) -> Any:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        tok.padding_side = "left"
        return tok

    @property
    def tokenizer(self) -> Any:
        return self.processor

    @property
    def placeholder_id(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.pad_token_id, tok.unk_token_id, tok.eos_token_id):
            if candidate is not None:
                return int(candidate)
        return 0

    @property
    def position_offset(self) -> int:
        """First position id of real tokens: RoBERTa-style models start at ``pad_token_id + 1``."""
        cfg = self.model.config
        if getattr(cfg, "model_type", "") in _ROBERTA_STYLE:
            return int(getattr(cfg, "pad_token_id", 1)) + 1
        return 0

    @property
    def bidirectional(self) -> bool:
        # The BERT-family encoders this adapter knows; other text backbones are decoders.
        return str(getattr(self.model.config, "model_type", "")) in _ABSOLUTE_POSITIONS

    @property
    def max_positions(self) -> int | None:
        # Learned absolute position tables (BERT family) are a hard limit; rotary models are not.
        cfg = self.model.config
        if getattr(cfg, "model_type", "") not in _ABSOLUTE_POSITIONS:
            return None
        if getattr(cfg, "position_embedding_type", "absolute") != "absolute":
            return None
        return int(cfg.max_position_embeddings) - self.position_offset

    def prepare(
        self, items: list[Item], side: Side, max_length: int, instruction: str | None = None
    ) -> PreparedBatch:
        for item in items:
            if item.image is not None:
                model_type = self.model.config.model_type
                raise ValueError(
                    f"{item.source}: this backbone ({model_type}) reads text only; image inputs "
                    "need a vision-language backbone such as Qwen2-VL or Idefics3."
                )
        texts = [self.format_text(item.text, side, instruction, item.title) for item in items]
        tok = self.tokenizer
        # titles are located by character offsets, which only fast tokenizers give
        has_titles = any(item.title for item in items)
        titled = has_titles and bool(getattr(tok, "is_fast", False))
        if has_titles and not titled and getattr(self.config, "anchor_skip_title", False):
            raise ValueError(
                f"anchor_skip_title: {type(tok).__name__} is a slow tokenizer and gives no "
                "character offsets to find the titles by; load the backbone's fast "
                "tokenizer (the tokenizer.json file) or pass the title inside the text"
            )
        tok.padding_side = "left"
        enc = tok(
            texts,
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
            return_special_tokens_mask=True,
            return_offsets_mapping=titled,
        )
        num_truncated = 0
        lengths = enc["attention_mask"].sum(dim=1)
        full = [i for i, n in enumerate(lengths.tolist()) if n >= max_length]
        if full:
            # one token more than the limit tells whether anything was cut
            raw = tok([texts[i] for i in full], truncation=True, max_length=max_length + 1)[
                "input_ids"
            ]
            num_truncated = sum(1 for ids in raw if len(ids) > max_length)
        tensors = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if "token_type_ids" in enc:
            tensors["token_type_ids"] = enc["token_type_ids"]
        content = enc["attention_mask"] * (1 - enc["special_tokens_mask"])
        title = None
        if titled:
            title = self._title_mask(items, enc["offset_mapping"], content)
        return PreparedBatch(tensors, num_truncated, content_mask=content, title_mask=title)

    def _title_mask(
        self, items: list[Item], offsets: torch.Tensor, content: torch.Tensor
    ) -> torch.Tensor:
        """(B, L) the content tokens that overlap each item's title characters
        (:meth:`title_span`); ``offsets`` (B, L, 2) the tokenizer's character offsets."""
        spans = torch.tensor([self.title_span(item.title) for item in items])  # (B, 2)
        start, end = spans[:, :1], spans[:, 1:]
        inside = (offsets[..., 0] < end) & (offsets[..., 1] > start)
        return (inside & content.bool()).long()

    def extra_forward_kwargs(
        self, batch: PreparedBatch, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, Any]:
        if "token_type_ids" in batch.tensors:
            return {"token_type_ids": torch.zeros_like(input_ids)}
        return {}
