"""Reading and writing a MetaEmbed model folder (``metaembed_config.json``,
``metaembed.safetensors``, ``adapter/``, ``backbone/``) and loading its backbone and LoRA
adapters; :class:`~metaembed_rag.model.MetaEmbedModel` calls these."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .backbones import BackboneAdapter, adapter_for
from .config import ADAPTER_DIR, BACKBONE_DIR, WEIGHTS_NAME, MetaEmbedConfig

__all__ = [
    "backbone_config",
    "check_state",
    "ignore_peft_deprecation",
    "load_backbone",
    "load_lora",
    "lora_digest",
    "quiet_peft",
    "read_meta_weights",
    "write_model_folder",
]


def backbone_config(backbone: nn.Module) -> Any:
    config = getattr(backbone, "config", None)
    if config is None:
        raise TypeError(f"{type(backbone).__name__} has no .config; pass a transformers model.")
    return config


def load_backbone(
    path: str, trust_remote_code: bool, dtype: torch.dtype
) -> tuple[type[BackboneAdapter], nn.Module, Any]:
    """The adapter class, base model (loaded directly in ``dtype``, so a large checkpoint is
    never materialised in float32 first) and processor of the backbone at ``path``."""
    from transformers import AutoConfig

    hf_config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    adapter_cls = adapter_for(hf_config)
    model = adapter_cls.load_backbone(path, dtype=dtype, trust_remote_code=trust_remote_code)
    processor = adapter_cls.load_processor(path, trust_remote_code=trust_remote_code)
    return adapter_cls, model, processor


def ignore_peft_deprecation() -> None:
    """peft calls transformers' deprecated ``is_gradient_checkpointing`` (a FutureWarning on
    every load that users cannot act on); ignore exactly that warning (in the current
    ``warnings`` context)."""
    warnings.filterwarnings(
        "ignore", message=r".*is_gradient_checkpointing.* is deprecated", category=FutureWarning
    )


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """:func:`ignore_peft_deprecation` for the duration of a ``with`` block."""
    with warnings.catch_warnings():
        ignore_peft_deprecation()
        yield


def lora_digest(peft_model: nn.Module) -> str:
    """sha256 of a peft model's adapter tensors as ``save_pretrained`` writes them (names
    without the adapter name, float32), independent of merging and of the device."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(peft_model, save_embedding_layers=False)
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def check_state(state: dict[str, torch.Tensor], config: MetaEmbedConfig, path: Path) -> None:
    expected: dict[str, tuple[int, ...]] = {
        "query_tokens": (config.num_query_tokens, config.hidden_size),
        "candidate_tokens": (config.num_candidate_tokens, config.hidden_size),
    }
    if config.projection_dim is not None:
        expected["projection.weight"] = (config.projection_dim, config.hidden_size)
        expected["projection.bias"] = (config.projection_dim,)
    if getattr(config, "anchor", None) is not None:
        expected["anchor_map.weight"] = (config.hidden_size, config.hidden_size)
        expected["anchor_map.bias"] = (config.hidden_size,)
    has_projection = "projection.weight" in state
    if has_projection and config.projection_dim is None:
        raise ValueError(
            f"{path} holds a projection {tuple(state['projection.weight'].shape)} but the "
            "config has projection_dim=None: the config and weights come from different models."
        )
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(
            f"{path} lacks {missing} that the config requires "
            f"(projection_dim={config.projection_dim}): the checkpoint was trained "
            "without them; do not attach a randomly initialised projection."
        )
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise ValueError(f"{path} holds unexpected tensors {unexpected}.")
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise ValueError(
                f"{path}: {key} has shape {tuple(state[key].shape)} but the config implies "
                f"{shape} (num_query_tokens={config.num_query_tokens}, num_candidate_tokens="
                f"{config.num_candidate_tokens}, hidden_size={config.hidden_size}, "
                f"projection_dim={config.projection_dim})."
            )


def read_meta_weights(folder: Path, config: MetaEmbedConfig) -> dict[str, torch.Tensor]:
    """The Meta-token (and projection) tensors of a model folder, checked against ``config``.

    Raises:
        FileNotFoundError: no weights file. ValueError: unreadable, or shapes / tensors that
            do not match the config.
    """
    weights_path = folder / WEIGHTS_NAME
    if not weights_path.is_file():
        raise FileNotFoundError(
            f"{weights_path} is missing: the folder holds no Meta-token weights."
        )
    try:
        state = load_file(str(weights_path))
    except Exception as exc:
        raise ValueError(f"{weights_path} is not a readable safetensors file: {exc}") from exc
    check_state(state, config, weights_path)
    return state


def load_lora(model: nn.Module, folder: Path, merge_lora: bool) -> tuple[nn.Module, str | None]:
    """The backbone with the saved LoRA adapters of ``folder``: merged (and the adapters'
    digest, for the fingerprint) or kept separate for training (digest ``None``)."""
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise ImportError(
            f"{folder} has LoRA adapters; loading them needs peft: "
            "pip install 'metaembed-rag[default-model]' (or [train])"
        ) from exc
    with quiet_peft():
        model = PeftModel.from_pretrained(
            model, str(folder / ADAPTER_DIR), is_trainable=not merge_lora
        )
    digest = lora_digest(model) if merge_lora else None
    if merge_lora:
        model = model.merge_and_unload()
    return model, digest


def write_model_folder(model: Any, folder: str | os.PathLike[str], *, save_backbone: bool) -> Path:
    """:meth:`MetaEmbedModel.save_pretrained`: written to a temporary sibling, then moved."""
    target = Path(folder).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes the folder private; a model folder is not
    try:
        config = MetaEmbedConfig(**model.config.to_dict())
        state = {
            name: param.detach().float().cpu().contiguous()
            for name, param in model.meta_parameters().items()
        }
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "metaembed", "version": "1"})
        base: Any = model.backbone  # a peft model or a transformers model
        config.has_lora = hasattr(base, "peft_config")
        if config.has_lora:
            base.save_pretrained(str(tmp / ADAPTER_DIR), safe_serialization=True)
            # peft records the folder the backbone was read from (a local path on this
            # machine); record the portable reference the model config uses instead
            adapter_cfg = tmp / ADAPTER_DIR / "adapter_config.json"
            meta = json.loads(adapter_cfg.read_text())
            meta["base_model_name_or_path"] = config.backbone
            adapter_cfg.write_text(json.dumps(meta, indent=2) + "\n")
            base = base.get_base_model()
        if save_backbone:
            base.save_pretrained(str(tmp / BACKBONE_DIR), safe_serialization=True)
            model.adapter.processor.save_pretrained(str(tmp / BACKBONE_DIR))
            config.backbone = "embedded"
        elif config.backbone == "embedded":
            raise ValueError(
                "This model's backbone was loaded from an embedded copy; save it with "
                "save_backbone=True, or set config.backbone to a hub id or folder first."
            )
        config.save(tmp)
        backup = None
        if target.exists():
            backup = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(backup)
        tmp.rename(target)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
