"""Idefics3 and SmolVLM backbones (SigLIP vision tower + Llama-style text model).

Processor side: every input is one chat turn rendered with the checkpoint's chat template
(``User:<image>text<end_of_utterance>\\nAssistant:``); the family's own processor
(``AutoProcessor``) expands ``<image>`` into its crop layout (``<fake_token_around_image>``,
``<row_i_col_j>``, ``<global-img>`` and ``image_seq_len`` ``<image>`` tokens per crop, with image
splitting as configured), tokenises and **left pads**. Truncation shortens only the text part.

Model side: the text model uses 1-D RoPE, so the adapter passes
``position_ids = cumsum(mask) - 1`` over the extended sequence: left pads do not shift the
input, and the Meta tokens get the positions right after it.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..inputs import Item
from ._vlm import chat_messages, item_body, truncate_bodies
from .base import BackboneAdapter, PreparedBatch, Side

logger = logging.getLogger(__name__)

__all__ = ["Idefics3Adapter"]

_MODEL_INPUTS = ("pixel_values", "pixel_attention_mask")


class Idefics3Adapter(BackboneAdapter):
    """Idefics3 (``HuggingFaceM4/Idefics3-8B-Llama3``) and SmolVLM (``HuggingFaceTB/SmolVLM-*``)."""

    family = "idefics3"
    model_types = frozenset({"idefics3", "smolvlm"})
    supports_images = True
    needs_position_ids = True

    # ------------------------------------------------------------------ loading
    @classmethod
    def load_processor(cls, path: str, *, trust_remote_code: bool) -> Any:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
        processor.tokenizer.padding_side = "left"
        return processor

    # ------------------------------------------------------------------ properties
    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def image_token(self) -> str:
        return str(getattr(self.processor, "image_token", "<image>"))

    @property
    def placeholder_id(self) -> int:
        tok = self.tokenizer
        special = {
            tok.convert_tokens_to_ids(t)
            for t in (self.image_token, "<fake_token_around_image>", "<global-img>")
        }
        special.add(getattr(self.model.config, "image_token_id", None))
        for candidate in (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id):
            if candidate is not None and candidate not in special:
                return int(candidate)
        return 0

    # ------------------------------------------------------------------ processor side
    def render(self, body: str, has_image: bool) -> str:
        """The prompt string of one input, with one (unexpanded) ``<image>``."""
        template = getattr(self.processor, "chat_template", None)
        if self.config.use_chat_template and template:
            return str(
                self.processor.apply_chat_template(
                    chat_messages(body, has_image), tokenize=False, add_generation_prompt=True
                )
            )
        image = self.image_token if has_image else ""
        return f"User:{image}{body}<end_of_utterance>\nAssistant:"

    def _process(self, texts: list[str], images: list[Any], padding: bool) -> Any:
        tok = self.tokenizer
        add_special = not (tok.bos_token and texts and texts[0].startswith(tok.bos_token))
        return self.processor(
            text=texts,
            images=images or None,
            padding=padding,
            add_special_tokens=add_special,
            return_tensors="pt" if padding else None,
        )

    def prepare(
        self, items: list[Item], side: Side, max_length: int, instruction: str | None = None
    ) -> PreparedBatch:
        """Chat-template and process a batch, truncating the text part, left padded.

        Returns tensors ``input_ids`` (B, L), ``attention_mask`` (B, L) and, when the batch
        has images, ``pixel_values`` (B, N, 3, H, W) (N crops + global image per item, zero
        padded) and ``pixel_attention_mask`` (B, N, H, W).
        """
        self.tokenizer.padding_side = "left"

        def lengths(indices: list[int], bodies: list[str]) -> list[int]:
            texts = [
                self.render(b, items[i].image is not None)
                for i, b in zip(indices, bodies, strict=True)
            ]
            imgs = [items[i].image for i in indices if items[i].image is not None]
            return [len(x) for x in self._process(texts, imgs, padding=False)["input_ids"]]

        bodies = [item_body(self, item, side, instruction) for item in items]
        bodies, _, num_truncated = truncate_bodies(
            bodies, lengths, self.tokenizer, max_length, [item.source for item in items]
        )
        texts = [
            self.render(b, item.image is not None) for b, item in zip(bodies, items, strict=True)
        ]
        images = [item.image for item in items if item.image is not None]
        enc = self._process(texts, images, padding=True)
        tensors = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        for key in _MODEL_INPUTS:
            if key in enc:
                tensors[key] = enc[key]
        return PreparedBatch(tensors, num_truncated)

    def extra_forward_kwargs(
        self, batch: PreparedBatch, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, Any]:
        return {k: batch.tensors[k] for k in _MODEL_INPUTS if k in batch.tensors}
