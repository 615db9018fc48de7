"""``RowSet``: the vector rows of an index, one :class:`RowStore` per kind, saving themselves.

Kinds: ``vectors`` ``(N, K', W)`` in the stored dtype (``K'``: the stored vectors, ``K`` or
fewer with index-time truncation; ``W``: ``D``, or the packed residual bytes; ``(N, W)`` packed
codes for the tiered kind), a side store ``(N, K')`` (``scales`` float32 for int8 and float16
gains for tiered, ``codes`` uint16 centroid ids for the residual kinds) and ``coarse``
``(N, D)`` float16 (one coarse vector per document, made from all K vectors; float32 in indexes
saved before format version 2, which keep it until they are compacted; for the tiered kind,
each document's centre, from which its coarse vector is made). The residual and tiered kinds
also save their codebook (``codebook-<tag>.safetensors``). Files are
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

from .persist import IndexCorruptedError, atomic_writer, block_hashes, sha256_file
from .storage import RowStore, VectorCodec

__all__ = ["COARSE_DTYPE", "CoarseVector", "RowSet", "new_tag"]

CoarseVector = Literal["first", "mean"]
#: The coarse rows' dtype on disk: float16 halves the coarse stage's bytes (768 at D=384);
#: only the candidate set depends on these rows, never a final score.
COARSE_DTYPE = np.dtype(np.float16)
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
        stored_vectors: vectors kept per document (index-time truncation: the first
            ``stored_vectors`` of the K; ``None``: all K).
        coarse_dtype: the coarse rows' dtype (float32 only for files written before
            format version 2).
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
        stored_vectors: int | None = None,
        coarse_dtype: np.dtype = COARSE_DTYPE,
    ) -> None:
        self.num_vectors, self.dim, self.codec = num_vectors, dim, codec
        self.stored_vectors = num_vectors if stored_vectors is None else int(stored_vectors)
        if not 1 <= self.stored_vectors <= num_vectors:
            raise ValueError(
                f"stored_vectors must be in 1..{num_vectors}, got {self.stored_vectors}."
            )
        self.coarse_vector: CoarseVector = coarse_vector
        self.folder = folder
        tag = tag or new_tag()
        k = self.stored_vectors
        self.vectors = self._store(
            "vectors", codec.row_shape(k, dim), codec.np_dtype, tag, count, writable
        )
        #: ``(kind, store)`` of the per-vector side rows (int8 scales, residual ids) or None.
        self.side: tuple[str, RowStore] | None = None
        if codec.side is not None:
            kind, dtype = codec.side
            self.side = (kind, self._store(kind, (k,), dtype, tag, count, writable))
        self.coarse = self._store("coarse", (dim,), np.dtype(coarse_dtype), tag, count, writable)
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
        if self.side is not None:
            out.append(self.side)
        return out

    @property
    def count(self) -> int:
        """Rows stored, deleted ones included."""
        return self.vectors.count

    @property
    def row_bytes(self) -> int:
        """Stored bytes per document (vectors, side rows, coarse vector)."""
        return sum(store.row_bytes for _, store in self.stores())

    # ------------------------------------------------------------------ rows
    def coarse_of(self, arr: np.ndarray) -> np.ndarray:
        """What the coarse store keeps for float32 documents ``(n, K, D)``: their coarse
        vectors ``(n, D)`` float32, or for the tiered kind the centres of their stored vectors
        (which :meth:`coarse_rows` turns into coarse vectors)."""
        if self.codec.tiered is not None:
            return self.codec.centres(arr[:, : self.stored_vectors])
        if self.coarse_vector == "first":
            return np.ascontiguousarray(arr[:, 0])
        return _unit_rows(arr.mean(axis=1))

    def coarse_rows(self, rows: np.ndarray | slice) -> np.ndarray:
        """float32 ``(n, D)`` coarse vectors of ``rows``, as stored (float16-rounded). The
        tiered kind stores no coarse vector of its own: ``"mean"`` is its centre renormalised,
        ``"first"`` its first vector decoded."""
        if self.codec.tiered is not None and self.coarse_vector == "first":
            return self.decode(rows, 1)[:, 0].numpy()
        stored = np.asarray(self.coarse.array[rows], dtype=np.float32)
        return stored if self.codec.tiered is None else _unit_rows(stored)

    def append(self, arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Append float32 documents ``(n, K, D)``; returns ``(rows, coarse vectors)``, the
        coarse vectors as stored (rounded to the coarse dtype, back in float32), so FAISS holds
        what a reload rebuilds it from."""
        stored, side = self.codec.encode(arr[:, : self.stored_vectors])
        coarse = self.coarse_of(arr).astype(self.coarse.dtype).astype(np.float32)
        start = self.vectors.append(stored)
        if self.side is not None:
            assert side is not None
            self.side[1].append(side)
        self.coarse.append(coarse)
        if self.codec.tiered is not None:  # the coarse vectors FAISS holds, made from the rows
            coarse = self.coarse_rows(slice(start, start + arr.shape[0]))
        return np.arange(start, start + arr.shape[0], dtype=np.int64), coarse

    def decode(self, rows: np.ndarray | slice, r_c: int | None = None) -> torch.Tensor:
        """float32 ``(len(rows), r_c, D)`` vectors of ``rows`` (default: all stored ones).

        Raises:
            ValueError: ``r_c`` above the stored vectors (index-time truncation).
        """
        r_c = self.stored_vectors if r_c is None else r_c
        self.check_r_c(r_c)
        if self.codec.tiered is not None:  # the row prefix the first r_c vectors need
            assert self.side is not None
            codes = self.vectors.array[rows, : self.codec.tiered.read_bytes(r_c)]
            return self.codec.decode(codes, self.side[1].array[rows, :r_c], self.coarse.array[rows])
        stored = self.vectors.array[rows, :r_c]  # copies only the first r_c vectors
        side = None if self.side is None else self.side[1].array[rows, :r_c]
        return self.codec.decode(stored, side)

    def check_r_c(self, r_c: int) -> None:
        """Refuse a candidate budget above the vectors stored per document.

        Raises:
            ValueError: ``r_c`` > ``stored_vectors`` (the message says how to get more).
        """
        if r_c > self.stored_vectors:
            raise ValueError(
                f"budget r_c={r_c} needs {r_c} vectors per document, but this index stores "
                f"only the first {self.stored_vectors} (index-time truncation, chosen when "
                f"it was built): search with r_c <= {self.stored_vectors}, or rebuild the "
                "index with more stored vectors."
            )

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
        new = RowSet(
            self.num_vectors, self.dim, self.codec, self.coarse_vector, self.folder,
            stored_vectors=self.stored_vectors,
        )  # fmt: skip
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
        book = self.codec.book
        if book is not None and book.trained:
            name = f"codebook-{tag}.safetensors"
            with atomic_writer(target / name) as f:
                f.write(book.to_bytes())
            files["codebook"] = {
                "name": name, "bytes": (target / name).stat().st_size,
                "sha256": sha256_file(target / name),
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
        out = cls(
            empty.num_vectors, empty.dim, empty.codec, empty.coarse_vector, None,
            stored_vectors=empty.stored_vectors,
        )  # fmt: skip
        codebook = empty.codec.book
        if codebook is not None and rows > 0:
            if "codebook" not in files:
                raise IndexCorruptedError(
                    f"{folder}: {empty.codec.name} storage but the manifest names no codebook "
                    "file; restore the index from a backup or rebuild it."
                )
            codebook.load(folder / files["codebook"]["name"])
        for kind, store in empty.stores():
            info = files.get(kind)
            if info is None or info["rows"] != rows:
                raise IndexCorruptedError(
                    f"{folder}: {kind} file missing or has the wrong row count."
                )
            path = folder / info["name"]
            # coarse rows: float16, or float32 in files of format version 1 (checked on load)
            dtype = np.dtype(info["np_dtype"]) if kind == "coarse" else store.dtype
            if mmap:
                new = RowStore(store.row_shape, dtype, path, rows, writable=False)
                out.hash_cache[info["name"]] = info["sha256_blocks"]
            else:
                new = RowStore(store.row_shape, dtype, None, 0)
                data = np.fromfile(path, dtype=dtype, count=rows * int(np.prod(store.row_shape)))
                new.append(data.reshape(rows, *store.row_shape))
            if kind in ("vectors", "coarse"):
                setattr(out, kind, new)
            else:
                out.side = (kind, new)
        if mmap:
            out.folder = folder
        return out


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """float32 rows ``(n, D)`` rescaled to unit length (a zero row stays zero): how a
    ``"mean"`` coarse vector is made from a mean."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def _copy(store: RowStore, dest: Path) -> None:
    """Copy the stored rows into ``dest`` atomically, in 64 MiB pieces."""
    step = max(1, COPY_ROWS_BYTES // max(store.row_bytes, 1))
    with atomic_writer(dest) as f:
        for s in range(0, store.count, step):
            f.write(np.ascontiguousarray(store.array[s : s + step]).tobytes())
