"""On-disk cache of document vectors for evaluation, keyed by a fingerprint string.

The key names everything the vectors depend on (the encoder's identity, the corpus file's
identity, the max length); the file name is a digest of it. Files are written to a temporary
name in the cache folder and renamed, so an interrupted or concurrent run never leaves a
half-written file under the final name.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

__all__ = [
    "cache_path",
    "cached_vectors",
    "default_cache_dir",
    "file_identity",
    "folder_identity",
]

logger = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/metaembed-rag/eval``, else ``~/.cache/metaembed-rag/eval``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "metaembed-rag" / "eval"


def file_identity(path: str | Path) -> str:
    """``resolved path|size|mtime_ns`` of a file: changes when the file is replaced or edited."""
    p = Path(path)
    stat = p.stat()
    return f"{p.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def folder_identity(reference: str, path: str) -> str:
    """Identity of a model checkpoint: its reference, where it resolved to and, for a local
    folder, the name, size and mtime of each weight file in it (a hub id is taken as is)."""
    folder = Path(path)
    parts = [reference, str(folder.resolve()) if folder.is_dir() else path]
    if folder.is_dir():
        for f in sorted(folder.iterdir()):
            if f.is_file() and f.name.endswith(_WEIGHT_SUFFIXES):
                stat = f.stat()
                parts.append(f"{f.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return "|".join(parts)


def cache_path(cache_dir: str | Path, prefix: str, key: str) -> Path:
    """The file the tensor stored under ``key`` lives in (whether or not it exists)."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return Path(cache_dir).expanduser() / f"{prefix}-{digest}.safetensors"


def cached_vectors(
    cache_dir: str | Path | None,
    prefix: str,
    key: str,
    compute: Callable[[], torch.Tensor],
) -> tuple[torch.Tensor, float, bool]:
    """Load the tensor stored under ``key``, or compute and store it.

    Args:
        cache_dir: the cache folder; ``None`` computes without caching.
        prefix: start of the file name (``docs``, ``meanpool``...), for people browsing it.
        key: every input the tensor depends on, as one string.
        compute: makes the tensor on a miss.

    Returns:
        (tensor, seconds spent computing — 0.0 on a hit, whether it was a cache hit).
    """
    cache_file = None
    if cache_dir is not None:
        cache_file = cache_path(cache_dir, prefix, key)
        if cache_file.is_file():
            logger.info("Cache hit: loading document vectors from %s", cache_file)
            return load_file(str(cache_file))["vectors"], 0.0, True
    start = time.perf_counter()
    vectors = compute()
    seconds = time.perf_counter() - start
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=cache_file.parent, prefix=f".{cache_file.name}.", suffix=".tmp"
        )
        os.close(fd)
        try:
            save_file({"vectors": vectors.contiguous()}, tmp)
            os.replace(tmp, cache_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        logger.info("Cached document vectors in %s", cache_file)
    return vectors, seconds, False
