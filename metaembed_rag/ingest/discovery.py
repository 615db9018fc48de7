"""Finding the files to index: folders walked, hidden and unsupported files left out."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from .base import IMAGE_SUFFIXES, SUPPORTED_SUFFIXES, TEXT_SUFFIXES, IngestError


def _hidden(parts: Iterable[str]) -> bool:
    return any(p.startswith(".") and p not in (".", "..") for p in parts)


def iter_files(
    paths: Iterable[str | os.PathLike[str]], *, all_files: bool = False
) -> Iterator[Path]:
    """Expand files and folders into a sorted, de-duplicated stream of files.

    Folders are walked recursively; hidden files and folders (names starting with ``.``) inside
    them are skipped, and so are files of unsupported types unless ``all_files``. A file named
    explicitly is always yielded (unsupported types then fail in :func:`load_file` with a
    message). Order: the arguments in the order given, each folder's files sorted by path.

    Raises:
        FileNotFoundError: a path does not exist (nothing is yielded for it).
    """
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{raw}: no such file or folder; check the path.")
        if path.is_dir():
            found = []
            for sub in path.rglob("*"):
                rel = sub.relative_to(path)
                if _hidden(rel.parts) or not sub.is_file():
                    continue
                if not all_files and sub.suffix.lower() not in SUPPORTED_SUFFIXES:
                    continue
                found.append(sub)
            candidates = sorted(found)
        else:
            candidates = [path]
        for p in candidates:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                yield p


def discover_files(
    paths: Iterable[str | os.PathLike[str]], *, exclude: str | os.PathLike[str] | None = None
) -> tuple[list[Path], list[Path]]:
    """The files to index under ``paths`` and the files of unsupported types found in their
    folders (left out), both in :func:`iter_files` order.

    A file named explicitly is always in the first list (an unsupported type then fails in
    :func:`load_file` with a message). Files inside ``exclude`` (a collection's own folder)
    are in neither list.

    Raises:
        FileNotFoundError: a path does not exist.
    """
    args = list(paths)
    everything = list(iter_files(args, all_files=True))
    if exclude is not None:
        own = Path(exclude).expanduser().resolve()
        everything = [p for p in everything if not p.resolve().is_relative_to(own)]
    explicit = {Path(a).expanduser().resolve() for a in args if Path(a).expanduser().is_file()}
    files: list[Path] = []
    ignored: list[Path] = []
    for p in everything:
        supported = p.suffix.lower() in SUPPORTED_SUFFIXES or p.resolve() in explicit
        (files if supported else ignored).append(p)
    return files, ignored


def special_file_kind(path: str | os.PathLike[str]) -> str | None:
    """What a path that exists but is not a regular file (or folder) is, e.g. ``"a FIFO
    (named pipe)"``; ``None`` for regular files, folders and missing paths. Reading a FIFO or
    a device could block forever, so such paths are skipped with this as the reason."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    for test, name in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return None


def file_type(path: str | os.PathLike[str]) -> str:
    """The ingest type of a file from its suffix (``text``, ``markdown``, ``html``, ``jsonl``,
    ``pdf``, ``image``).

    Raises:
        IngestError: unsupported suffix.
    """
    suffix = Path(path).suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return TEXT_SUFFIXES[suffix]
    if suffix == ".jsonl":
        return "jsonl"
    if suffix == ".pdf":
        return "pdf"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    supported = " ".join(sorted(SUPPORTED_SUFFIXES))
    raise IngestError(
        f"{path}: unsupported file type {suffix or '(no suffix)'!r}; supported: {supported}. "
        "Convert it to one of these or leave it out."
    )
