"""Backbone adapters: one per model family. :func:`adapter_for` picks the right one."""

from __future__ import annotations

from typing import Any

from .base import BackboneAdapter, PreparedBatch, Side, left_padded_position_ids
from .idefics3 import Idefics3Adapter
from .qwen2_vl import Qwen2VLAdapter
from .text import TextAdapter

__all__ = [
    "BackboneAdapter",
    "PreparedBatch",
    "Side",
    "TextAdapter",
    "Qwen2VLAdapter",
    "Idefics3Adapter",
    "adapter_for",
    "register_adapter",
    "left_padded_position_ids",
]

_ADAPTERS: list[type[BackboneAdapter]] = []


def register_adapter(cls: type[BackboneAdapter]) -> type[BackboneAdapter]:
    """Register an adapter class (checked before the built-in ones)."""
    _ADAPTERS.insert(0, cls)
    return cls


def _builtin() -> list[type[BackboneAdapter]]:
    # Vision-language families first; the text adapter is the fallback for configs
    # without vision parts.
    return [Qwen2VLAdapter, Idefics3Adapter, TextAdapter]


def adapter_for(hf_config: Any) -> type[BackboneAdapter]:
    """The adapter class for a backbone with this ``transformers`` config.

    Raises:
        ValueError: no adapter handles this model type.
    """
    for cls in [*_ADAPTERS, *_builtin()]:
        if cls.matches(hf_config):
            return cls
    raise ValueError(
        f"No MetaEmbed adapter handles model_type={getattr(hf_config, 'model_type', '?')!r}. "
        "Supported: text encoders/decoders (BERT, MiniLM, Qwen2, ...), Qwen2-VL / Qwen2.5-VL, "
        "Idefics3 / SmolVLM; or register your own with metaembed_rag.backbones.register_adapter."
    )
