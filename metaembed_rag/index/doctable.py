"""``DocumentTable``: the ids, texts and metadata of an index's rows, saved as a JSONL sidecar.

Row ``r`` of the table belongs to row ``r`` of the vector files. A deleted document keeps its
row as a tombstone (``None`` id) until the index is compacted. The table writes and reads its
own file (``docs-<tag>.jsonl``: one line per row, ``{"id", "text", "metadata"}`` or ``null``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .filters import Filter, compile_filter, filter_mask
from .persist import IndexCorruptedError, atomic_writer

__all__ = ["DocumentTable"]

#: Filter masks kept per table (cleared on every write).
_MASK_CACHE_SIZE = 64


class DocumentTable:
    """Ids, texts, metadata and the alive mask of every row (see the module docstring)."""

    def __init__(
        self,
        ids: list[str | None] | None = None,
        texts: list[str | None] | None = None,
        metas: list[dict[str, Any] | None] | None = None,
    ) -> None:
        self.ids: list[str | None] = ids or []
        self.texts: list[str | None] = texts or [None] * len(self.ids)
        self.metas: list[dict[str, Any] | None] = metas or [None] * len(self.ids)
        self.alive = np.array([i is not None for i in self.ids], dtype=bool)
        self.slot_of: dict[str, int] = {i: s for s, i in enumerate(self.ids) if i is not None}
        self._mask_cache: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        """Live documents."""
        return len(self.slot_of)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self.slot_of

    def slot(self, doc_id: str) -> int:
        """The row of a live document.

        Raises:
            KeyError: the id is not in the index.
        """
        try:
            return self.slot_of[doc_id]
        except KeyError:
            raise KeyError(f"Document id {doc_id!r} is not in the index.") from None

    def live_ids(self) -> list[str]:
        """Live ids in row order."""
        return [i for i in self.ids if i is not None]

    def append(
        self, ids: Sequence[str], texts: Sequence[str | None], metas: Sequence[dict[str, Any]]
    ) -> np.ndarray:
        """Append rows; returns their row numbers."""
        start = len(self.ids)
        self.ids.extend(ids)
        self.texts.extend(texts)
        self.metas.extend(metas)
        self.alive = np.concatenate([self.alive, np.ones(len(ids), dtype=bool)])
        for s, i in enumerate(ids, start):
            self.slot_of[i] = s
        self._mask_cache.clear()
        return np.arange(start, start + len(ids), dtype=np.int64)

    def delete(self, ids: Sequence[str]) -> np.ndarray:
        """Tombstone the rows of live ``ids``; returns their row numbers."""
        slots = np.array([self.slot_of.pop(i) for i in ids], dtype=np.int64)
        for s in slots.tolist():
            self.ids[s] = self.texts[s] = self.metas[s] = None
        self.alive[slots] = False
        self._mask_cache.clear()
        return slots

    def keep(self, rows: np.ndarray) -> None:
        """Keep only ``rows`` (in that order): the table side of a compaction."""
        self.__init__(  # type: ignore[misc]
            [self.ids[s] for s in rows],
            [self.texts[s] for s in rows],
            [self.metas[s] for s in rows],
        )

    def allowed(self, filter: Filter | None) -> np.ndarray:
        """Boolean mask of the live rows whose metadata matches ``filter`` (cached)."""
        if filter is None:
            return self.alive
        key = json.dumps(filter, sort_keys=True, default=str)
        mask = self._mask_cache.get(key)
        if mask is None:
            compile_filter(filter)  # validate before scanning
            mask = filter_mask(filter, self.metas) & self.alive
            if len(self._mask_cache) > _MASK_CACHE_SIZE:
                self._mask_cache.clear()
            self._mask_cache[key] = mask
        return mask

    # ------------------------------------------------------------------ persistence
    def write(self, path: Path) -> dict[str, Any]:
        """Write the JSONL sidecar atomically; returns its manifest entry."""
        h = hashlib.sha256()
        with atomic_writer(path) as f:
            buf: list[bytes] = []
            for i, t, m in zip(self.ids, self.texts, self.metas, strict=True):
                row = None if i is None else {"id": i, "text": t, "metadata": m or {}}
                buf.append((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
                if len(buf) >= 4096:
                    data = b"".join(buf)
                    h.update(data)
                    f.write(data)
                    buf = []
            data = b"".join(buf)
            h.update(data)
            f.write(data)
        return {"name": path.name, "bytes": path.stat().st_size, "sha256": h.hexdigest()}

    @classmethod
    def read(cls, path: Path, rows: int) -> DocumentTable:
        """Read a sidecar written by :meth:`write` that must hold ``rows`` rows.

        Raises:
            IndexCorruptedError: not valid JSONL, or another row count.
        """
        ids: list[str | None] = []
        texts: list[str | None] = []
        metas: list[dict[str, Any] | None] = []
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    row = json.loads(line)
                    ids.append(None if row is None else row["id"])
                    texts.append(None if row is None else row.get("text"))
                    metas.append(None if row is None else row.get("metadata") or {})
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise IndexCorruptedError(f"{path} is not a valid document sidecar: {exc}") from exc
        if len(ids) != rows:
            raise IndexCorruptedError(f"{path} has {len(ids)} rows, the vectors have {rows}.")
        return cls(ids, texts, metas)
