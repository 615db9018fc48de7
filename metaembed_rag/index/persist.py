"""Atomic file writes, checksums and the index manifest.

Every file of a saved index is written under a temporary name, fsynced and moved into place
with ``os.replace``; ``manifest.json`` is replaced last, so until that moment the previous
manifest (and the files it names, which are never overwritten) stays valid. Row-store files
are append-only and checksummed in blocks of rows, so a save after appending only hashes the
new blocks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "READ_VERSIONS",
    "MANIFEST",
    "HASH_BLOCK_BYTES",
    "IndexCorruptedError",
    "IndexMismatchError",
    "atomic_writer",
    "sha256_file",
    "block_hashes",
    "read_manifest",
    "write_manifest",
    "fsync_dir",
]

FORMAT_NAME = "metaembed-rag-index"
#: Version 2 (float16 coarse rows, no FAISS file for a flat coarse stage) reads version 1
#: indexes unchanged; version 1 code refuses version 2 with an error that says so.
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
#: Row-store files are hashed in blocks of about this many bytes (whole rows).
HASH_BLOCK_BYTES = 64 * 1024 * 1024
_READ_CHUNK = 8 * 1024 * 1024


class IndexCorruptedError(ValueError):
    """A saved index is incomplete or its bytes do not match the manifest checksums."""


class IndexMismatchError(ValueError):
    """A saved index was built for another model, dimension or storage dtype."""


def fsync_dir(path: Path) -> None:
    """fsync a directory so renames inside it are durable (no-op where unsupported)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """Write ``path`` atomically: into ``path.tmp``, fsync, then ``os.replace``.

    If the body raises, the temporary file is removed and ``path`` is untouched.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def sha256_file(path: Path, start: int = 0, end: int | None = None) -> str:
    """Hex sha256 of bytes ``[start, end)`` of a file (``end=None``: to the end)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        left = None if end is None else end - start
        while left is None or left > 0:
            chunk = f.read(_READ_CHUNK if left is None else min(_READ_CHUNK, left))
            if not chunk:
                break
            h.update(chunk)
            if left is not None:
                left -= len(chunk)
    return h.hexdigest()


def block_hashes(
    path: Path, row_bytes: int, count: int, known: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Checksums of rows ``[0, count)`` of a row-store file, one per block of whole rows.

    Blocks in ``known`` that are complete and still inside ``count`` are reused (rows are never
    rewritten in place), so only new blocks are read.

    Returns:
        ``[{"start": row, "end": row, "sha256": hex}, ...]`` covering ``[0, count)``.
    """
    rows_per_block = max(1, HASH_BLOCK_BYTES // max(row_bytes, 1))
    reuse = {
        (b["start"], b["end"]): b["sha256"]
        for b in (known or [])
        if b["end"] - b["start"] == rows_per_block and b["end"] <= count
    }
    out = []
    for start in range(0, count, rows_per_block):
        end = min(count, start + rows_per_block)
        digest = reuse.get((start, end))
        if digest is None:
            digest = sha256_file(path, start * row_bytes, end * row_bytes)
        out.append({"start": start, "end": end, "sha256": digest})
    return out


def read_json_object(path: Path, fix: str, error: type[ValueError] = ValueError) -> dict[str, Any]:
    """The JSON object in ``path`` (which must exist).

    Raises:
        ``error``: unreadable, not JSON or not an object; the message names the file and
            ends with ``fix`` (what to do about it).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path} is not valid JSON ({exc}); {fix}.") from exc
    if not isinstance(data, dict):
        raise error(f"{path} holds a JSON {type(data).__name__}, not an object; {fix}.")
    return data


def write_json_object(
    path: Path, data: dict[str, Any], indent: int = 2, sort_keys: bool = False
) -> None:
    """Write ``data`` as JSON atomically (:func:`atomic_writer`), then fsync the folder."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, ensure_ascii=False) + "\n"
    with atomic_writer(path) as f:
        f.write(text.encode("utf-8"))
    fsync_dir(path.parent)


def read_manifest(folder: Path) -> dict[str, Any]:
    """Read and sanity-check ``folder/manifest.json``."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(
            f"No index at {folder}: {MANIFEST} is missing. Save an index there first with "
            "MultiVectorIndex.save(path), or check the path."
        )
    fix = "the index is corrupt. Restore it from a backup or rebuild it"
    manifest = read_json_object(path, fix, IndexCorruptedError)
    if manifest.get("format") != FORMAT_NAME:
        raise IndexCorruptedError(f"{path} is not a metaembed-rag index manifest.")
    version = manifest.get("format_version")
    if version not in READ_VERSIONS:
        raise IndexMismatchError(
            f"{path} has index format version {version}; this metaembed-rag reads versions "
            f"{', '.join(map(str, READ_VERSIONS))}. Rebuild the index with this version, or "
            "open it with the metaembed-rag that wrote it."
        )
    return manifest


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Atomically replace ``folder/manifest.json`` (the commit point of a save)."""
    data = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")
    with atomic_writer(Path(folder) / MANIFEST) as f:
        f.write(data)
    fsync_dir(Path(folder))
