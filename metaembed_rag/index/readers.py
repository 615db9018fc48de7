"""Readers and the files a save retires: ``<folder>/.readers``, a POSIX ``flock`` that opening
readers share and that a writer takes alone to delete the files of older generations.

A save commits by replacing ``manifest.json``; the files only older manifests name are then
removed. A reader that read the previous manifest a moment before may still be opening those
files, so:

- :func:`reading` holds a *shared* lock on ``.readers`` while a reader reads the manifest and
  opens (or memory-maps) every file it names. Once open, a file survives its deletion on POSIX,
  so the lock is held only for the open, not for the reader's lifetime. A reader opens
  ``.readers`` read-only and never creates it (a read-only folder stays untouched).
- :func:`remove_unread` (the writer, after the commit) waits up to :data:`REMOVE_WAIT` seconds
  for the *exclusive* lock and deletes under it; if readers keep the folder busy that long it
  leaves the files (logged) and the next save removes them with its own leftovers.

``filelock`` (used for the writer lock) offers shared locks only through SQLite, which needs
write access to the folder for readers; hence a plain ``flock`` here. Where ``fcntl`` is missing
(Windows) or ``.readers`` does not exist yet (a folder saved by an older version), readers open
without the lock and :meth:`~metaembed_rag.index.MultiVectorIndex.load` relies on its retry
(it reads the new manifest when a save replaced the files mid-open).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["READERS_FILE", "REMOVE_WAIT", "create_readers_file", "reading", "remove_unread"]

logger = logging.getLogger(__name__)

READERS_FILE = ".readers"
#: Seconds a writer waits for opening readers before leaving retired files to the next save.
REMOVE_WAIT = 10.0
#: Seconds a reader waits for a writer's deletion in progress before opening without the lock.
READ_WAIT = 10.0
_POLL = 0.002


def _flock(fd: int, mode: int, timeout: float) -> bool:
    """Take ``mode`` on ``fd`` within ``timeout`` seconds (polling: a blocking ``flock`` cannot
    time out, and Linux lets new shared holders pass a waiting exclusive one)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL)


@contextlib.contextmanager
def reading(folder: Path) -> Iterator[bool]:
    """Hold the shared reader lock of ``folder`` while opening its files; yields whether it is
    held (``False``: no ``.readers`` file, no ``fcntl``, or a writer kept it past
    :data:`READ_WAIT`; the caller's retry covers those)."""
    if fcntl is None:  # pragma: no cover - Windows
        yield False
        return
    try:
        fd = os.open(Path(folder) / READERS_FILE, os.O_RDONLY)
    except OSError:
        yield False
        return
    try:
        held = _flock(fd, fcntl.LOCK_SH, READ_WAIT)
        if not held:
            logger.warning("%s: a writer held %s for %g s; opening without it",
                           folder, READERS_FILE, READ_WAIT)  # fmt: skip
        yield held
    finally:
        os.close(fd)  # releases the lock


def remove_unread(folder: Path, paths: Iterable[Path], wait: float | None = None) -> int:
    """Delete ``paths`` (files in ``folder`` no committed manifest names any more) once no reader
    is opening the folder (waiting up to ``wait`` seconds, default :data:`REMOVE_WAIT`);
    returns how many were deleted. Creates ``.readers`` if missing.

    Files left behind (readers kept the folder busy for ``wait`` seconds, or the OS refused the
    deletion) are logged; they are not named by any manifest, so the next save removes them.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        return 0
    wait = REMOVE_WAIT if wait is None else wait
    fd = _open_as_writer(folder)
    try:
        if fd >= 0 and not _flock(fd, fcntl.LOCK_EX, wait):
            logger.info("%s: readers kept it busy for %g s; %d retired files stay until the "
                        "next save", folder, wait, len(paths))  # fmt: skip
            return 0
        removed = 0
        for p in paths:
            try:
                p.unlink(missing_ok=True)
                removed += 1
            except OSError as exc:  # e.g. Windows: a file another process has open
                logger.info("could not remove %s (%s); the next save retries", p, exc)
        return removed
    finally:
        if fd >= 0:
            os.close(fd)


def create_readers_file(folder: Path) -> None:
    """Make ``.readers`` exist in ``folder`` (a writer does it before its first commit, so the
    readers of that commit already share the lock)."""
    fd = _open_as_writer(folder)
    if fd >= 0:
        os.close(fd)


def _open_as_writer(folder: Path) -> int:
    """A descriptor of ``folder/.readers``, created if missing (-1 without ``fcntl``)."""
    if fcntl is None:  # pragma: no cover - Windows
        return -1
    return os.open(Path(folder) / READERS_FILE, os.O_RDWR | os.O_CREAT, 0o644)
