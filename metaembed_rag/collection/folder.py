"""The collection folder format: file names, ``collection.json`` / ``files.json`` I/O and the
model reference a collection records (see the :mod:`metaembed_rag.collection` docstring)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..index.persist import read_json_object, write_json_object

__all__ = [
    "CONFIG_FILE",
    "FILES_FILE",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "INDEX_DIR",
    "CREATING_FILE",
    "LOCK_FILE",
    "PAGES_DIR",
    "CollectionError",
]

FORMAT_NAME = "metaembed-rag-collection"
FORMAT_VERSION = 1
CONFIG_FILE = "collection.json"
FILES_FILE = "files.json"
LOCK_FILE = ".lock"
#: Marker of a collection being created (written first, removed once ``collection.json`` is
#: written): a folder holding it and no ``collection.json`` is ours, half-created, and the
#: next :meth:`~metaembed_rag.collection.Collection.create` finishes it.
CREATING_FILE = ".creating"
INDEX_DIR = "index"
PAGES_DIR = "pages"
#: What a half-created collection folder may hold (removed before creation starts again),
#: including the temporary files of interrupted atomic writes.
_CREATION_PARTS = (INDEX_DIR, FILES_FILE, PAGES_DIR, LOCK_FILE, CREATING_FILE,
                   f"{FILES_FILE}.tmp", f"{CONFIG_FILE}.tmp")  # fmt: skip
#: Chunks encoded per ``encode_documents`` call (bounds the float32 vectors held in RAM:
#: 4096 x 64 x 384 x 4 bytes = 400 MB for the default model).
ENCODE_BLOCK = 4096
#: During big runs, commit at the next file boundary after this many new chunks ...
SAVE_EVERY_CHUNKS = 2000
#: ... or after this many seconds.
SAVE_EVERY_SECONDS = 300.0
#: File names listed in a report summary line before "and N more".
SUMMARY_NAMES = 5


class CollectionError(ValueError):
    """A folder is not a usable collection (missing, not a collection, wrong model)."""


def creatable(root: Path) -> bool:
    """Whether ``Collection.create`` may use ``root``: missing, empty (a stale writer lock
    aside), or half-created by an interrupted create (its marker, only our parts, no
    ``collection.json``)."""
    if not root.exists():
        return True
    if not root.is_dir() or (root / CONFIG_FILE).exists():
        return False
    names = {p.name for p in root.iterdir()}
    if CREATING_FILE in names:
        return names <= set(_CREATION_PARTS)
    return names <= {LOCK_FILE}


def clear_half_created(root: Path) -> bool:
    """Remove what an interrupted create left in ``root`` (only our parts); whether it did."""
    import shutil

    if not (root / CREATING_FILE).exists() or (root / CONFIG_FILE).exists():
        return False
    for name in _CREATION_PARTS:
        path = root / name
        if name in (LOCK_FILE, CREATING_FILE):
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return True


def _display(path: Path) -> str:
    """The name a file gets in chunk ids: relative to the working directory when inside it."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_json_object(path, data, indent=1, sort_keys=True)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    return read_json_object(path, f"the {what} is damaged: restore the folder", CollectionError)


def _model_reference(model: Any) -> str | None:
    """What ``collection.json`` records for a model argument (a name or an absolute path)."""
    if model is None:
        from ..model import DEFAULT_MODEL

        return DEFAULT_MODEL
    if isinstance(model, (str, os.PathLike)):
        path = Path(model).expanduser()
        return str(path.resolve()) if path.is_dir() else str(model)
    return None


def _load_model(model: Any, device: str | None) -> Any:
    """A loaded model as is; a name, folder or ``None`` (the default) through the process-wide
    cache of :func:`metaembed_rag.hub.load_model`."""
    if model is None or isinstance(model, (str, os.PathLike)):
        from ..hub import load_model

        return load_model(model, device)
    return model
