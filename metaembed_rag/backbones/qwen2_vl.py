"""Qwen2-VL and Qwen2.5-VL backbones (multimodal rotary positions, M-RoPE).

Processor side: every input is one chat turn rendered with the checkpoint's chat template
(``<|vision_start|><|image_pad|><|vision_end|>`` then the text); the single ``<|image_pad|>``
is expanded to ``t*h*w / merge_size**2`` copies from the image processor's ``image_grid_thw``
exactly as ``Qwen2VLProcessor`` does, then the batch is tokenised and **left padded**, with
``mm_token_type_ids`` (0 text, 1 image). The expansion is done here from the processor's
tokenizer and image processor so that truncation can shorten only the text part, and so that
checkpoints load without torchvision (transformers 5 needs it for the Qwen2-VL video
processor, hence for ``AutoProcessor``).

Model side: the appended Meta placeholder ids are plain text tokens (``mm_token_type_ids`` 0).
The 3-D position ids are computed here with the model's own ``get_rope_index`` over the
extended ids / mask and passed to the forward: ``get_rope_index`` drops padded positions
through ``attention_mask`` (pads get 0, real tokens start at 0), and the Meta tokens, a text
run after the input, get ``max + 1, max + 2, ...`` on all three axes. The model would compute
the same for image batches, but for text-only batches (no ``image_grid_thw``) its fallback is
``arange(seq_len)``, which counts the left pads; passing the ids always avoids that.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..inputs import Item
from ._vlm import chat_messages, item_body, truncate_bodies
from .base import BackboneAdapter, PreparedBatch, Side, left_padded_position_ids

logger = logging.getLogger(__name__)

__all__ = ["Qwen2VLAdapter", "QwenVLProcessorParts"]


#: The plain Qwen2-VL prompt used when the tokenizer has no chat template.
PLAIN_TEMPLATE = "<|im_start|>user\n{image}{text}<|im_end|>\n<|im_start|>assistant\n"
IMAGE_SLOT = "<|vision_start|><|image_pad|><|vision_end|>"


class QwenVLProcessorParts:
    """Tokenizer + image processor (+ chat template) of a Qwen2-VL checkpoint.

    Stands in for ``Qwen2VLProcessor`` when ``AutoProcessor`` cannot build it (no torchvision);
    offers the attributes the adapter uses and ``save_pretrained``.
    """

    def __init__(self, tokenizer: Any, image_processor: Any, chat_template: str | None) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.chat_template = chat_template

    def save_pretrained(self, folder: str | Path, **kwargs: Any) -> None:
        if self.chat_template and not getattr(self.tokenizer, "chat_template", None):
            self.tokenizer.chat_template = self.chat_template
        self.tokenizer.save_pretrained(folder, **kwargs)
        if self.image_processor is not None:
            self.image_processor.save_pretrained(folder, **kwargs)


def _find_chat_template(path: str) -> str | None:
    """The processor's chat template file of a checkpoint (``chat_template.jinja`` / ``.json``)."""
    import json

    from transformers.utils import cached_file

    for name in ("chat_template.jinja", "chat_template.json"):
        try:
            file = cached_file(
                path,
                name,
                _raise_exceptions_for_missing_entries=False,
                _raise_exceptions_for_connection_errors=False,
            )
        except Exception:  # noqa: BLE001 - absent or unreachable: no template
            file = None
        if file:
            text = Path(file).read_text()
            return text if name.endswith(".jinja") else json.loads(text).get("chat_template")
    return None


class Qwen2VLAdapter(BackboneAdapter):
    """Qwen2-VL / Qwen2.5-VL (and their text-only sub-models)."""

    family = "qwen2_vl"
    model_types = frozenset({"qwen2_vl", "qwen2_5_vl", "qwen2_vl_text", "qwen2_5_vl_text"})
    supports_images = True
    #: positions are 3-D M-RoPE ids from ``get_rope_index``, passed by :meth:`extra_forward_kwargs`
    needs_position_ids = False

    # ------------------------------------------------------------------ loading
    @classmethod
    def load_processor(cls, path: str, *, trust_remote_code: bool) -> Any:
        from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

        try:
            processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
        except ImportError as exc:  # torchvision missing: the video processor cannot load
            logger.info(
                "AutoProcessor unavailable for %s (%s); using its tokenizer and image "
                "processor directly.",
                path,
                str(exc).strip().splitlines()[0],
            )
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            try:
                image_processor = AutoImageProcessor.from_pretrained(
                    path, trust_remote_code=trust_remote_code
                )
            except (OSError, ValueError):  # a text-only checkpoint
                image_processor = None
            template = getattr(tokenizer, "chat_template", None) or _find_chat_template(path)
            processor = QwenVLProcessorParts(tokenizer, image_processor, template)
        tokenizer = getattr(processor, "tokenizer", processor)
        tokenizer.padding_side = "left"
        return processor

    # ------------------------------------------------------------------ properties
    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def image_processor(self) -> Any:
        return getattr(self.processor, "image_processor", None)

    @property
    def chat_template(self) -> str | None:
        return getattr(self.processor, "chat_template", None) or getattr(
            self.tokenizer, "chat_template", None
        )

    @property
    def image_token(self) -> str:
        return str(getattr(self.tokenizer, "image_token", None) or "<|image_pad|>")

    @property
    def image_token_id(self) -> int:
        cfg = self.model.config
        value = getattr(cfg, "image_token_id", None)
        if value is None:
            value = self.tokenizer.convert_tokens_to_ids(self.image_token)
        return int(value)

    @property
    def placeholder_id(self) -> int:
        tok = self.tokenizer
        cfg = self.model.config
        special = {
            getattr(cfg, k, None)
            for k in (
                "image_token_id",
                "video_token_id",
                "vision_start_token_id",
                "vision_end_token_id",
            )
        }
        for candidate in (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id):
            if candidate is not None and candidate not in special:
                return int(candidate)
        return 0

    @property
    def merge_size(self) -> int:
        ip = self.image_processor
        value = getattr(ip, "merge_size", None)
        if value is None:
            value = self.model.config.vision_config.spatial_merge_size
        return int(value)

    # ------------------------------------------------------------------ processor side
    def render(self, body: str, has_image: bool) -> str:
        """The prompt string of one input, with one (unexpanded) image placeholder."""
        if self.config.use_chat_template and self.chat_template:
            return str(
                self.tokenizer.apply_chat_template(
                    chat_messages(body, has_image),
                    chat_template=self.chat_template,
                    tokenize=False,
                    add_generation_prompt=True,
                )
            )
        return PLAIN_TEMPLATE.format(image=IMAGE_SLOT if has_image else "", text=body)

    def prepare(
        self, items: list[Item], side: Side, max_length: int, instruction: str | None = None
    ) -> PreparedBatch:
        """Chat-template, expand image tokens, truncate the text part, left pad.

        Returns tensors ``input_ids`` (B, L), ``attention_mask`` (B, L), ``mm_token_type_ids``
        (B, L) and, when the batch has images, ``pixel_values`` (sum of patches, C*T*P*P) and
        ``image_grid_thw`` (num_images, 3).
        """
        tok = self.tokenizer
        images = [item.image for item in items if item.image is not None]
        tensors: dict[str, torch.Tensor] = {}
        num_image_tokens: dict[int, int] = {}
        if images:
            if self.image_processor is None or not hasattr(self.model.config, "vision_config"):
                raise ValueError(
                    f"{next(i.source for i in items if i.image is not None)}: this "
                    f"{self.model.config.model_type} backbone has no vision tower / image processor."
                )
            vision = self.image_processor(images=images, return_tensors="pt")
            tensors["pixel_values"] = vision["pixel_values"]
            grid = vision["image_grid_thw"]
            tensors["image_grid_thw"] = grid
            counts = (grid.prod(dim=-1) // self.merge_size**2).tolist()
            image_items = [i for i, item in enumerate(items) if item.image is not None]
            num_image_tokens = dict(zip(image_items, counts, strict=True))
        image_token = self.image_token

        def expand(i: int, body: str) -> str:
            text = self.render(body, i in num_image_tokens)
            if i in num_image_tokens:
                if text.count(image_token) != 1:
                    raise ValueError(
                        f"{items[i].source}: the chat template produced {text.count(image_token)} "
                        f"{image_token} tokens for one image."
                    )
                text = text.replace(image_token, image_token * num_image_tokens[i])
            return text

        def encode(indices: list[int], bodies: list[str]) -> list[list[int]]:
            texts = [expand(i, b) for i, b in zip(indices, bodies, strict=True)]
            add_special = not (tok.bos_token and texts and texts[0].startswith(tok.bos_token))
            return tok(texts, add_special_tokens=add_special)["input_ids"]  # type: ignore[no-any-return]

        bodies = [item_body(self, item, side, instruction) for item in items]
        bodies, _, num_truncated = truncate_bodies(
            bodies,
            lambda idx, b: [len(ids) for ids in encode(idx, b)],
            tok,
            max_length,
            [item.source for item in items],
        )
        ids = encode(list(range(len(items))), bodies)
        width = max(len(x) for x in ids)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.placeholder_id
        input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, seq in enumerate(ids):
            if seq:
                input_ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
                attention_mask[row, width - len(seq) :] = 1
        mm_token_type_ids = (input_ids == self.image_token_id).long() * attention_mask
        tensors.update(
            input_ids=input_ids, attention_mask=attention_mask, mm_token_type_ids=mm_token_type_ids
        )
        return PreparedBatch(tensors, num_truncated)

    # ------------------------------------------------------------------ model side
    def position_ids(
        self, batch: PreparedBatch, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """(3, B, L+M) M-RoPE position ids of the extended (Meta-appended) sequence.

        Pads get 0; real tokens count from 0 whatever the padding; the appended Meta tokens
        (text, ``mm_token_type_ids`` 0) continue after the input's largest position.
        """
        bsz, ext_len = input_ids.shape
        token_types = batch.tensors.get("mm_token_type_ids")
        if token_types is None:
            token_types = torch.zeros_like(batch.tensors["input_ids"])
        pad = ext_len - token_types.shape[1]
        ext_types = torch.cat(
            [
                token_types,
                torch.zeros((bsz, pad), dtype=token_types.dtype, device=token_types.device),
            ],
            dim=1,
        )
        rope_owner = self._rope_owner()
        if rope_owner is None:  # text-only sub-model: plain positions on the three axes
            return left_padded_position_ids(attention_mask).unsqueeze(0).expand(3, -1, -1)
        position_ids, _ = rope_owner.get_rope_index(
            input_ids,
            mm_token_type_ids=ext_types,
            image_grid_thw=batch.tensors.get("image_grid_thw"),
            attention_mask=attention_mask,
        )
        return position_ids  # type: ignore[no-any-return]

    def _rope_owner(self) -> Any:
        model = self.model
        if hasattr(model, "get_rope_index"):
            return model
        get_base = getattr(model, "get_base_model", None)  # peft wrapper
        if get_base is not None and hasattr(get_base(), "get_rope_index"):
            return get_base()
        return None

    def extra_forward_kwargs(
        self, batch: PreparedBatch, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "position_ids": self.position_ids(batch, input_ids, attention_mask)
        }
        if "pixel_values" in batch.tensors:
            kwargs["pixel_values"] = batch.tensors["pixel_values"]
            kwargs["image_grid_thw"] = batch.tensors["image_grid_thw"]
        if self._rope_owner() is not None:
            token_types = batch.tensors["mm_token_type_ids"]
            extra = input_ids.shape[1] - token_types.shape[1]
            kwargs["mm_token_type_ids"] = torch.cat(
                [token_types, token_types.new_zeros((token_types.shape[0], extra))], dim=1
            )
        return kwargs
