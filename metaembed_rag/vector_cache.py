"""On-disk cache of document vectors for evaluation, keyed by a fingerprint string.

The key names everything the vectors depend on (the encoder's identity, the corpus file's
content digest, the max length); the file name is a digest of it. Files are written to a temporary
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


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_identity(path: str | Path) -> str:
    """``sha256:<digest>|<size>`` of a file's content: the same for a copy of the file (another
    folder, a fresh checkout, a data folder copied again with new times), different as soon as
    a byte changes. The digest is remembered per process for an unchanged path, size and mtime.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     a, b = Path(d, "a.jsonl"), Path(d, "b.jsonl")
    ...     _ = a.write_text("x"), b.write_text("x")
    ...     same = file_identity(a) == file_identity(b)
    ...     _ = b.write_text("y")
    ...     same, file_identity(a) == file_identity(b)
    (True, False)
    """
    p = Path(path).resolve()
    stat = p.stat()
    memo = (str(p), stat.st_size, stat.st_mtime_ns)
    digest = _DIGESTS.get(memo)
    if digest is None:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digest = _DIGESTS[memo] = h.hexdigest()
    return f"sha256:{digest}|{stat.st_size}"


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
