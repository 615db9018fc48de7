"""The manifest side of a collection: ``files.json`` (per source file its checksum and chunk
ids, plus the ``pending`` journal of a commit in progress), the cross-process writer lock,
commits and the repair of an interrupted one (see the :mod:`metaembed_rag.collection`
docstring)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..index import MultiVectorIndex
from ..retriever import TwoStageRetriever
from .folder import FILES_FILE, LOCK_FILE, _read_json, _write_json
from .storage import open_index

__all__ = ["Journal", "writes"]

logger = logging.getLogger("metaembed_rag.collection")


def writes(method: Any) -> Any:
    """Run a method that changes the collection under its writer lock."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._write_lock():
            return method(self, *args, **kwargs)

    return wrapper


class Journal:
    """Mixin of :class:`~metaembed_rag.collection.Collection`: its file manifest and commits."""

    folder: Path
    config: dict[str, Any]
    index: MultiVectorIndex
    _model: Any
    _files: dict[str, dict[str, Any]]
    _touched: dict[str, list[str]]
    _retriever: TwoStageRetriever | None
    _generation: int

    def _write_files(self, pending: dict[str, dict[str, list[str]]] | None = None) -> None:
        data = {"format": "metaembed-rag-files", "format_version": 1, "files": self._files,
                "pending": pending or {}, "generation": self._generation}  # fmt: skip
        _write_json(self.folder / FILES_FILE, data)

    def _disk_generation(self) -> int:
        path = self.folder / FILES_FILE
        data = _read_json(path, "file manifest") if path.exists() else {}
        return int(data.get("generation", 0))

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        """Hold the collection's writer lock (``.lock``, POSIX ``flock``; waits for another
        writer). If another process committed since this object loaded its state, the state
        is reloaded first, so no commit is lost."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no cross-process lock
            yield
            return
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.warning("waiting for another process writing to %s", self.folder)
                fcntl.flock(fd, fcntl.LOCK_EX)
            if self._disk_generation() != self._generation:
                self._reload()
            yield
        finally:
            os.close(fd)  # releases the lock

    def _reload(self) -> None:
        logger.info("%s changed on disk: reloading", self.folder)
        self.index.close()
        self.index = open_index(self.folder, self.config, self._model)
        self._retriever = None
        self._touched.clear()
        self._read_files(repair=False)

    def _try_lock(self) -> int | None:
        """The writer lock if free right now (a file descriptor to close), else ``None``."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover
            return -1
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def _read_files(self, repair: bool = True) -> None:
        path = self.folder / FILES_FILE
        data = _read_json(path, "file manifest") if path.exists() else {}
        self._files = dict(data.get("files") or {})
        self._generation = int(data.get("generation", 0))
        pending = data.get("pending") or {}
        if not pending or not repair:
            return
        try:
            fd = self._try_lock()
        except OSError:  # read-only folder
            fd = -1
        if fd is None:  # another process is saving right now: its pending entries are live
            return
        try:
            self._repair(pending)
        finally:
            if fd >= 0:
                os.close(fd)

    def _repair(self, pending: dict[str, Any]) -> None:
        logger.warning(
            "%s: the last save of %d file(s) was interrupted; their chunks are removed and "
            "they will be re-indexed by the next add_paths / `metaembed-rag index`.",
            self.folder, len(pending),
        )  # fmt: skip
        for key, ids in pending.items():
            stale = set(ids.get("old", [])) | set(ids.get("new", []))
            self.index.delete(sorted(stale), missing_ok=True)
            self._touched.setdefault(key, list(ids.get("old", [])))
            self._files.pop(key, None)
        try:
            self.commit()
        except OSError as exc:  # read-only folder: keep the repaired state in memory
            logger.warning("could not save the repaired collection %s: %s", self.folder, exc)

    def commit(self) -> None:
        """Save the index and the manifest (crash-safe; see the module docstring)."""
        self._generation += 1
        pending = {
            key: {"old": old, "new": list(self._files.get(key, {}).get("chunks", []))}
            for key, old in self._touched.items()
        }
        if pending:
            self._write_files(pending)
        self.index.save()
        self._write_files()
        self._touched.clear()

    def _touch(self, key: str) -> None:
        if key not in self._touched:
            self._touched[key] = list(self._files.get(key, {}).get("chunks", []))

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        """The manifest: absolute path -> ``{"source", "sha256", "size", "type", "chunks", ...}``."""
        return {k: dict(v) for k, v in self._files.items()}
