"""``RowSet``: the vector rows of an index, one :class:`RowStore` per kind, saving themselves.

Kinds: ``vectors`` ``(N, K, D)`` in the stored dtype, ``scales`` ``(N, K)`` float32 (int8 only)
and ``coarse`` ``(N, D)`` float32 (one coarse vector per document). Files are
``<kind>-<tag>.bin``; a new tag is used when the rows are rewritten (compaction, save to
another folder), so files named by a saved manifest are never changed in place except by
appending.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .persist import IndexCorruptedError, atomic_writer, block_hashes
from .storage import RowStore, VectorCodec

__all__ = ["CoarseVector", "RowSet", "new_tag"]

CoarseVector = Literal["first", "mean"]
#: Rows copied per step when rewriting a store (bounded memory).
COPY_ROWS_BYTES = 64 * 1024 * 1024


def new_tag() -> str:
    """A fresh 12-hex-digit file tag."""
    return uuid.uuid4().hex[:12]


class RowSet:
    """The row stores of one index (see the module docstring).

    Args:
        num_vectors: vectors per document K.
        dim: vector width D.
        codec: the stored dtype's codec.
        coarse_vector: how a document's coarse vector is made (``"mean"`` or ``"first"``).
        folder: where the files live (``None``: in RAM).
        tag: the file tag.
        count: rows already in the files (when opening them).
        writable: open existing files for writing.
    """

    def __init__(
        self,
        num_vectors: int,
        dim: int,
        codec: VectorCodec,
        coarse_vector: CoarseVector,
        folder: Path | None,
        tag: str | None = None,
        count: int = 0,
        writable: bool = True,
    ) -> None:
        self.num_vectors, self.dim, self.codec = num_vectors, dim, codec
        self.coarse_vector: CoarseVector = coarse_vector
        self.folder = folder
        tag = tag or new_tag()
        self.vectors = self._store(
            "vectors", (num_vectors, dim), codec.np_dtype, tag, count, writable
        )
        self.scales = (
            self._store("scales", (num_vectors,), np.dtype(np.float32), tag, count, writable)
            if codec.has_scales
            else None
        )
        self.coarse = self._store("coarse", (dim,), np.dtype(np.float32), tag, count, writable)
        #: sha256 blocks already computed per file name (append-only files hash only new blocks).
        self.hash_cache: dict[str, list[dict[str, Any]]] = {}

    def _store(
        self,
        kind: str,
        shape: tuple[int, ...],
        dtype: np.dtype,
        tag: str,
        count: int,
        writable: bool,
    ) -> RowStore:
        path = None if self.folder is None else self.folder / f"{kind}-{tag}.bin"
        return RowStore(shape, dtype, path, count, writable)

    def stores(self) -> list[tuple[str, RowStore]]:
        """``(kind, store)`` pairs, in file order."""
        out = [("vectors", self.vectors), ("coarse", self.coarse)]
        if self.scales is not None:
            out.append(("scales", self.scales))
        return out

    @property
    def count(self) -> int:
        """Rows stored, deleted ones included."""
        return self.vectors.count

    @property
    def row_bytes(self) -> int:
        """Stored bytes per document (vectors, int8 scales, coarse vector)."""
        return sum(store.row_bytes for _, store in self.stores())

    # ------------------------------------------------------------------ rows
    def coarse_of(self, arr: np.ndarray) -> np.ndarray:
        """Coarse vectors ``(n, D)`` float32 of float32 documents ``(n, K, D)``."""
        if self.coarse_vector == "first":
            return np.ascontiguousarray(arr[:, 0])
        mean = arr.mean(axis=1)
        norm = np.linalg.norm(mean, axis=1, keepdims=True)
        return (mean / np.maximum(norm, 1e-12)).astype(np.float32)

    def append(self, arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Append float32 documents ``(n, K, D)``; returns ``(rows, coarse vectors)``."""
        stored, scales = self.codec.encode(arr)
        coarse = self.coarse_of(arr)
        start = self.vectors.append(stored)
        if self.scales is not None:
            assert scales is not None
            self.scales.append(scales)
        self.coarse.append(coarse)
        return np.arange(start, start + arr.shape[0], dtype=np.int64), coarse

    def decode(self, rows: np.ndarray, r_c: int | None = None) -> torch.Tensor:
        """float32 ``(len(rows), r_c, D)`` vectors of ``rows`` (default: all K)."""
        r_c = self.num_vectors if r_c is None else r_c
        stored = self.vectors.array[rows, :r_c]  # copies only the first r_c vectors
        scales = None if self.scales is None else self.scales.array[rows, :r_c]
        return self.codec.decode(stored, scales)

    def reserve(self, rows: int) -> None:
        """Pre-size every store for ``rows`` rows."""
        for _, store in self.stores():
            store.reserve(rows)

    def close(self) -> None:
        """Release the memory maps."""
        for _, store in self.stores():
            store.close()

    def compacted(self, live: np.ndarray) -> RowSet:
        """A new row set (new files) holding only the ``live`` rows; this one is closed."""
        new = RowSet(self.num_vectors, self.dim, self.codec, self.coarse_vector, self.folder)
        for (_, dest), (_, src) in zip(new.stores(), self.stores(), strict=True):
            dest.reserve(live.size)
            step = max(1, COPY_ROWS_BYTES // max(src.row_bytes, 1))
            for s in range(0, live.size, step):
                dest.append(np.asarray(src.array[live[s : s + step]]))
            src.close()
        return new

    # ------------------------------------------------------------------ persistence
    def save(self, target: Path, tag: str) -> dict[str, dict[str, Any]]:
        """Write the rows into ``target`` (only what is new when ``target`` is the row set's
        own folder; otherwise copies as ``<kind>-<tag>.bin``); returns the manifest entries."""
        in_place = self.folder is not None and target.resolve() == self.folder.resolve()
        files: dict[str, dict[str, Any]] = {}
        for kind, store in self.stores():
            if in_place:
                assert store.path is not None
                store.trim()
                store.flush()
                name, known = store.path.name, self.hash_cache.get(store.path.name)
            else:
                name, known = f"{kind}-{tag}.bin", None
                _copy(store, target / name)
            blocks = block_hashes(target / name, store.row_bytes, store.count, known)
            if in_place:
                self.hash_cache[name] = blocks
            files[kind] = {
                "name": name, "bytes": store.nbytes, "rows": store.count,
                "row_shape": list(store.row_shape), "np_dtype": store.dtype.str,
                "sha256_blocks": blocks,
            }  # fmt: skip
        return files

    @classmethod
    def load(
        cls,
        folder: Path,
        files: dict[str, dict[str, Any]],
        empty: RowSet,
        mmap: bool,
    ) -> RowSet:
        """Open the row files named by ``files`` (a manifest's entries) with the layout of
        ``empty`` (an in-RAM row set of the right shape and dtype).

        Raises:
            IndexCorruptedError: a file missing from ``files`` or with another row count.
        """
        rows = int(files["vectors"]["rows"])
        out = cls(empty.num_vectors, empty.dim, empty.codec, empty.coarse_vector, None)
        for kind, store in empty.stores():
            info = files.get(kind)
            if info is None or info["rows"] != rows:
                raise IndexCorruptedError(
                    f"{folder}: {kind} file missing or has the wrong row count."
                )
            path = folder / info["name"]
            if mmap:
                new = RowStore(store.row_shape, store.dtype, path, rows, writable=False)
                out.hash_cache[info["name"]] = info["sha256_blocks"]
            else:
                new = RowStore(store.row_shape, store.dtype, None, 0)
                data = np.fromfile(
                    path, dtype=store.dtype, count=rows * int(np.prod(store.row_shape))
                )
                new.append(data.reshape(rows, *store.row_shape))
            setattr(out, kind, new)
        if mmap:
            out.folder = folder
        return out


def _copy(store: RowStore, dest: Path) -> None:
    """Copy the stored rows into ``dest`` atomically, in 64 MiB pieces."""
    step = max(1, COPY_ROWS_BYTES // max(store.row_bytes, 1))
    with atomic_writer(dest) as f:
        for s in range(0, store.count, step):
            f.write(np.ascontiguousarray(store.array[s : s + step]).tobytes())
