"""Resolving model and backbone names to local folders (offline-first)."""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path

__all__ = ["resolve_model_folder", "resolve_backbone_path", "BUILTIN_MODELS", "PACKAGE_PREFIX"]

logger = logging.getLogger(__name__)

PACKAGE_PREFIX = "package:"
_PRETRAINED_DIR = Path(__file__).parent / "pretrained"

#: Models shipped inside this package, by name -> folder.
BUILTIN_MODELS: dict[str, Path] = {
    p.name: p for p in sorted(_PRETRAINED_DIR.glob("*")) if (p / "metaembed_config.json").is_file()
}


def _snapshot(repo_id: str, what: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub comes with transformers
        raise ImportError("Loading from the Hugging Face Hub needs huggingface_hub.") from exc
    try:
        return Path(snapshot_download(repo_id))
    except Exception as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = (
            " HF_HUB_OFFLINE=1 is set, so only models already in the local cache load."
            if offline
            else " Check the name, your network, or pass a local folder instead."
        )
        builtins = ", ".join(BUILTIN_MODELS) or "none"
        raise OSError(
            f"Could not find {what} {repo_id!r}: it is not a local folder, not a built-in "
            f"model ({builtins}), and downloading it from the Hugging Face Hub failed "
            f"({type(exc).__name__}: {exc}).{hint}"
        ) from exc


def resolve_model_folder(name_or_path: str | os.PathLike[str]) -> Path:
    """A MetaEmbed model folder from a local path, a built-in name, or a hub repo id."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if text in BUILTIN_MODELS:
        return BUILTIN_MODELS[text]
    if path.exists():
        raise NotADirectoryError(f"{text!r} is a file; a MetaEmbed model is a folder.")
    return _snapshot(text, "MetaEmbed model")


def resolve_backbone_path(reference: str, model_folder: Path | None = None) -> str:
    """Turn a config's ``backbone`` reference into something ``from_pretrained`` loads.

    ``"embedded"`` -> ``<model_folder>/backbone``; ``"package:<module>"`` -> that module's
    ``get_model_path()``; a local folder stays as is; anything else is a hub id, returned
    unchanged (``transformers`` resolves it, using its cache when offline).
    """
    if reference == "embedded":
        if model_folder is None:
            raise ValueError("backbone='embedded' needs the model folder it is embedded in.")
        folder = model_folder / "backbone"
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{model_folder} says its backbone is embedded, but {folder} is missing."
            )
        return str(folder)
    if reference.startswith(PACKAGE_PREFIX):
        module_name = reference[len(PACKAGE_PREFIX) :]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            dist = module_name.replace("_", "-")
            raise ImportError(
                f"The backbone is shipped in the Python package {dist!r}, which is not installed: "
                f"pip install {dist}  (or pip install 'metaembed-rag[default-model]')."
            ) from exc
        getter = getattr(module, "get_model_path", None)
        if getter is None:
            raise ValueError(
                f"Module {module_name!r} has no get_model_path(); cannot locate its model."
            )
        return str(getter())
    path = Path(reference).expanduser()
    if path.is_dir():
        return str(path)
    if model_folder is not None and (model_folder / reference).is_dir():
        return str(model_folder / reference)
    return reference
