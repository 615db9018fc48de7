"""The per-folder writer lock of a saved index (``<folder>/.lock``, the maintained ``filelock``
library) and the record of who holds it (``<folder>/.writer``: pid and host).

One process writes to an index folder at a time. :class:`~metaembed_rag.index.MultiVectorIndex`
takes the lock at its first change (``add``, ``delete``, ``compact``...) and gives it back when
``save`` has committed, so every writer holds it from its first change to its commit, and the
:class:`~metaembed_rag.collection.Collection` and both framework stores inherit it. Readers never
take it and never create a file in the folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from pathlib import Path

from filelock import FileLock, Timeout

__all__ = ["LOCK_FILE", "OWNER_FILE", "IndexLockedError", "IndexStaleError", "WriterLock"]

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"
OWNER_FILE = ".writer"
#: Seconds a second writer waits for the lock by default before :class:`IndexLockedError`.
DEFAULT_LOCK_TIMEOUT = 10.0


class IndexLockedError(TimeoutError):
    """Another writer holds the index folder's lock (the message names its pid); an
    ``OSError``, so the command line prints it as one ``error:`` line."""


class IndexStaleError(ValueError):
    """Another writer committed to the index folder since this object loaded it; changing it now
    would overwrite that commit. Load the index again and redo the change."""


class WriterLock:
    """The writer lock of ``folder`` (not taken until :meth:`acquire`).

    Args:
        folder: the index folder.
        timeout: seconds to wait for another writer (0: fail at once).
    """

    def __init__(self, folder: Path, timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        self.folder = Path(folder)
        self.timeout = float(timeout)
        self._lock = FileLock(str(self.folder / LOCK_FILE), thread_local=False)

    @property
    def held(self) -> bool:
        return bool(self._lock.is_locked)

    def owner(self) -> str:
        """Who holds the lock, as far as ``.writer`` says (``"an unknown process"`` otherwise)."""
        try:
            info = json.loads((self.folder / OWNER_FILE).read_text(encoding="utf-8"))
            return f"pid {int(info['pid'])} on {info.get('host', '?')}"
        except (OSError, ValueError, KeyError, TypeError):
            return "an unknown process"

    def acquire(self) -> None:
        """Take the lock (waiting up to ``timeout`` seconds); a no-op when already held.

        Raises:
            IndexLockedError: another writer still holds it after ``timeout`` seconds.
        """
        if self.held:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=self.timeout, poll_interval=0.05)
        except Timeout as exc:
            raise IndexLockedError(
                f"The index at {self.folder} is locked by {self.owner()} (another writer). "
                f"Wait for it to finish, or close that process; waited {self.timeout:g} s."
            ) from exc
        owner = {"pid": os.getpid(), "host": socket.gethostname()}
        (self.folder / OWNER_FILE).write_text(json.dumps(owner), encoding="utf-8")

    def release(self) -> None:
        """Give the lock back (a no-op when not held)."""
        if not self.held:
            return
        with contextlib.suppress(OSError):  # pragma: no cover - folder made read-only since
            (self.folder / OWNER_FILE).unlink(missing_ok=True)
        self._lock.release(force=True)
