"""The index manifest: writing it last (the commit point of a save) and checking the files it
names on load. The parts write their own files (:mod:`.rowset`, :mod:`.doctable`,
:mod:`.coarse`); this module knows only the manifest and file-level integrity.

Layout and crash-safety rules: ``docs/index-and-search.md`` and :mod:`.persist`.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .persist import (
    FORMAT_NAME,
    FORMAT_VERSION,
    IndexCorruptedError,
    IndexMismatchError,
    fsync_dir,
    read_manifest,
    sha256_file,
    write_manifest,
)
from .readers import create_readers_file, remove_unread

if TYPE_CHECKING:  # pragma: no cover
    from .coarse import CoarseIndex

__all__ = ["check_files", "expect", "finish_save", "manifest_files", "write_faiss"]

logger = logging.getLogger(__name__)

_OWN_FILE = re.compile(
    r"^(vectors|scales|codes|coarse|docs|faiss|codebook|lexical)-[0-9a-f]{12}"
    r"\.(bin|jsonl|faiss|safetensors)(\.tmp)?$"
)


def manifest_files(folder: Path) -> set[str]:
    """Names of the files the manifest in ``folder`` references (empty if none/unreadable)."""
    try:
        manifest = read_manifest(folder)
    except (FileNotFoundError, ValueError):
        return set()
    return {f["name"] for f in manifest.get("files", {}).values()}


def write_faiss(coarse: CoarseIndex, path: Path) -> dict[str, Any]:
    """Write the FAISS index atomically (temporary name, fsync, rename); its manifest entry."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        coarse.write(str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def finish_save(target: Path, manifest: dict[str, Any], own: set[str]) -> Path:
    """Write ``manifest`` (last: the commit point), then remove index files in ``target`` that
    neither it nor ``own`` (files the live index still writes to) names, once no reader is
    opening the folder (:mod:`.readers`)."""
    fsync_dir(target)
    create_readers_file(target)
    write_manifest(target, {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **manifest})
    keep = {f["name"] for f in manifest["files"].values()} | own
    remove_unread(
        target, [p for p in target.iterdir() if _OWN_FILE.match(p.name) and p.name not in keep]
    )
    logger.info("saved an index of %d documents to %s", manifest["counts"]["documents"], target)
    return target


def check_files(folder: Path, manifest: dict[str, Any], verify: bool) -> dict[str, dict[str, Any]]:
    """The manifest's file entries, after checking every file exists with the recorded size
    (and, with ``verify``, checksum).

    Raises:
        IndexCorruptedError: a file missing, truncated, modified or corrupt.
    """
    files = manifest.get("files", {})  # which files must be named: manifest.check_manifest
    for kind, info in files.items():
        fpath = folder / info["name"]
        if not fpath.exists():
            raise IndexCorruptedError(
                f"{fpath} is missing: the index at {folder} is incomplete. Restore the "
                "directory from a backup or rebuild the index."
            )
        size = fpath.stat().st_size
        if size < info["bytes"] or (
            kind in ("docs", "faiss", "codebook", "lexical") and size != info["bytes"]
        ):
            raise IndexCorruptedError(
                f"{fpath} has {size} bytes, the manifest says {info['bytes']}: the file is "
                "truncated or was modified. Restore it or rebuild the index."
            )
        if verify:
            _verify(fpath, info)
    return files


def _verify(fpath: Path, info: dict[str, Any]) -> None:
    if "sha256_blocks" not in info:
        if sha256_file(fpath) != info["sha256"]:
            raise IndexCorruptedError(
                f"{fpath}: checksum mismatch; the file is corrupt. Restore it or rebuild the index."
            )
        return
    rb = info["bytes"] // max(info["rows"], 1)
    for b in info["sha256_blocks"]:
        if sha256_file(fpath, b["start"] * rb, b["end"] * rb) != b["sha256"]:
            raise IndexCorruptedError(
                f"{fpath}: checksum mismatch in rows {b['start']}..{b['end']}; the file is "
                "corrupt. Restore it or rebuild the index."
            )


def expect(folder: Path, what: str, stored: Any, expected: Any, fix: str) -> None:
    """Raise :class:`IndexMismatchError` when ``expected`` is given and differs from ``stored``."""
    if expected is None or stored == expected:
        return
    raise IndexMismatchError(
        f"The index at {folder} was built with {what} {stored!r}, but {expected!r} was "
        f"requested: {fix}."
    )
