"""Row stores: growable ``(capacity, *row_shape)`` arrays in RAM or in a memory-mapped file.

A :class:`RowStore` holds rows that are only ever appended (never rewritten in place), which
is what makes in-place saves crash-safe: a manifest written earlier names a byte prefix of the
file, and appending never changes that prefix. On disk the file is raw bytes in C order; its
shape and dtype live in the index manifest.

:class:`VectorCodec` converts float32 document vectors to the stored dtype and back:

* ``float32`` / ``float16``: numpy dtypes of the same name;
* ``bfloat16``: stored as ``uint16`` bit patterns (round-to-nearest-even from float32, via torch)
  and viewed as ``torch.bfloat16`` without copying for scoring;
* ``int8``: symmetric per-vector quantisation, ``x ~= q * scale`` with ``scale = max|x| / 127``;
  the ``(N, K)`` float32 scales live in a second row store;
* ``residual1`` / ``residual2`` / ``residual4``: a k-means centroid id (``(N, K)`` uint16, the
  second row store) plus a 1/2/4-bit residual per dimension, packed into ``(N, K, D*bits/8)``
  bytes (:mod:`~metaembed_rag.index.residual`; the codebook is saved beside the rows);
* ``tiered``: tiered gain-shape transform coding (:mod:`~metaembed_rag.index.tiered`): one
  row of packed codes per document ``(n, W)``, a float16 gain per vector (the second row
  store) and the document's float16 centre, which the index keeps in its coarse store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..scoring.int8 import dequantize_int8
from .residual import ResidualCodebook
from .tiered import TieredCodebook, tiered_centres

__all__ = ["RowStore", "VectorCodec", "STORAGE_DTYPES", "STORAGE_KINDS"]

logger = logging.getLogger(__name__)

#: Stored dtype name -> numpy dtype of the raw file.
STORAGE_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(np.uint16),
    "int8": np.dtype(np.int8),
}

#: Every storage kind: the dtypes above and the residual (PLAID-style) kinds.
STORAGE_KINDS: tuple[str, ...] = (
    *STORAGE_DTYPES, "residual1", "residual2", "residual4", "tiered",
)  # fmt: skip

_MIN_GROW_ROWS = 1024
#: tiered: documents of a later batch decoded for the drift check (its first ones).
DRIFT_SAMPLE = 256


class RowStore:
    """A growable array of rows, in RAM (``path=None``) or memory-mapped from ``path``.

    Args:
        row_shape: shape of one row, e.g. ``(K, D)`` for document vectors.
        dtype: numpy dtype of the stored values.
        path: backing file (raw C-order bytes); ``None`` keeps the rows in RAM.
        count: rows already present in the file (when opening an existing file).
        writable: open an existing file for writing right away (otherwise read-only until
            the first append).
    """

    def __init__(
        self,
        row_shape: tuple[int, ...],
        dtype: np.dtype,
        path: Path | None = None,
        count: int = 0,
        writable: bool = True,
    ) -> None:
        self.row_shape = tuple(int(s) for s in row_shape)
        self.dtype = np.dtype(dtype)
        self.path = None if path is None else Path(path)
        self.count = int(count)
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self._writable = writable
        if self.path is None:
            self._buf: np.ndarray = np.empty((max(count, 0), *self.row_shape), self.dtype)
        else:
            if not self.path.exists():
                if not writable:  # a reader never creates files in an index folder
                    raise FileNotFoundError(f"{self.path} is missing.")
                self.path.touch()
            self._buf = self._map(writable)
        if self.capacity < self.count:
            raise ValueError(
                f"{self.path}: file holds {self.capacity} rows but {self.count} were expected"
            )

    # ------------------------------------------------------------------ mapping
    def _map(self, writable: bool) -> np.ndarray:
        assert self.path is not None
        size = self.path.stat().st_size
        rows = size // self.row_bytes if self.row_bytes else 0
        if not writable:  # exactly the committed rows: a writer may trim the file's tail
            rows = min(rows, self.count)
        if rows == 0:
            return np.empty((0, *self.row_shape), self.dtype)
        mode: Literal["r+", "r"] = "r+" if writable else "r"
        return np.memmap(self.path, dtype=self.dtype, mode=mode, shape=(rows, *self.row_shape))

    @property
    def capacity(self) -> int:
        """Rows that fit before the store has to grow."""
        return int(self._buf.shape[0])

    @property
    def array(self) -> np.ndarray:
        """The ``(count, *row_shape)`` rows (a view, never a copy)."""
        return self._buf[: self.count]

    @property
    def nbytes(self) -> int:
        """Bytes of the ``count`` stored rows."""
        return self.count * self.row_bytes

    def reserve(self, rows: int) -> None:
        """Make room for ``rows`` rows in total (a sparse file extension on disk)."""
        if rows <= self.capacity and (self.path is None or self._writable):
            return
        rows = max(rows, self.capacity)
        if self.path is None:
            new = np.empty((rows, *self.row_shape), self.dtype)
            new[: self.count] = self._buf[: self.count]
            self._buf = new
            return
        self._close_map()
        with open(self.path, "r+b") as f:
            if f.seek(0, os.SEEK_END) < rows * self.row_bytes:
                f.truncate(rows * self.row_bytes)
        self._writable = True
        self._buf = self._map(True)

    def append(self, rows: np.ndarray) -> int:
        """Append ``rows`` (``(n, *row_shape)``, already in ``dtype``); returns the first index."""
        n = int(rows.shape[0])
        start = self.count
        if start + n > self.capacity or not self._writable:
            grow = max(start + n, int(self.capacity * 1.5), _MIN_GROW_ROWS)
            self.reserve(grow if start + n > self.capacity else self.capacity)
        self._buf[start : start + n] = rows
        self.count = start + n
        return start

    def flush(self) -> None:
        """Write dirty pages of a file-backed store to disk."""
        if isinstance(self._buf, np.memmap) and self._writable:
            self._buf.flush()

    def trim(self) -> None:
        """Shrink a file-backed store to exactly ``count`` rows (no-op in RAM)."""
        if self.path is None or self.capacity == self.count:
            return
        self.flush()
        self._close_map()
        with open(self.path, "r+b") as f:
            f.truncate(self.count * self.row_bytes)
        self._buf = self._map(self._writable)

    def _close_map(self) -> None:
        buf = self._buf
        if isinstance(buf, np.memmap):
            if self._writable:
                buf.flush()
            mm = getattr(buf, "_mmap", None)
            self._buf = np.empty((0, *self.row_shape), self.dtype)
            del buf
            if mm is not None:
                # still exported (e.g. a torch view): the GC closes it later
                with contextlib.suppress(BufferError, ValueError):
                    mm.close()

    def close(self) -> None:
        """Release the memory map (the store is unusable afterwards)."""
        self._close_map()


class VectorCodec:
    """Conversion between float32 vectors and a storage kind (see the module docstring).

    Args:
        name: a key of :data:`STORAGE_DTYPES`, a residual kind (``residual1``,
            ``residual2``, ``residual4``: :mod:`~metaembed_rag.index.residual`) or ``tiered``
            (:mod:`~metaembed_rag.index.tiered`).
        dim: vector width D (needed by the residual and tiered kinds).
        num_centroids: residual kinds: k-means centroids (``None``: chosen from the sample).
        num_vectors: tiered: the vectors stored per document (needed by it).
    """

    def __init__(
        self,
        name: str,
        dim: int | None = None,
        num_centroids: int | None = None,
        num_vectors: int | None = None,
    ) -> None:
        if name not in STORAGE_KINDS:
            raise ValueError(f"Unknown storage {name!r}; choose one of {list(STORAGE_KINDS)}.")
        self.name = name
        self.codebook: ResidualCodebook | None = None
        #: The tiered kind's codebook (``None`` for every other kind).
        self.tiered: TieredCodebook | None = None
        if name == "tiered":
            if dim is None or num_vectors is None:
                raise ValueError("storage 'tiered' needs the vector width and vectors per row.")
            self.tiered = TieredCodebook(dim, num_vectors)
            self.np_dtype = np.dtype(np.uint8)
        elif name.startswith("residual"):
            if dim is None:
                raise ValueError(f"storage {name!r} needs the vector width (dim).")
            self.codebook = ResidualCodebook(dim, int(name[len("residual") :]), num_centroids)
            self.np_dtype = np.dtype(np.uint8)
        else:
            self.np_dtype = STORAGE_DTYPES[name]
        #: The per-vector side store: ``(kind, dtype)`` (int8 scales, residual centroid ids).
        self.side: tuple[str, np.dtype] | None = None
        if name == "int8":
            self.side = ("scales", np.dtype(np.float32))
        elif self.codebook is not None:
            self.side = ("codes", np.dtype(np.uint16))
        elif self.tiered is not None:
            self.side = ("scales", np.dtype(np.float16))  # the gains
        self.has_scales = name == "int8"

    @property
    def book(self) -> ResidualCodebook | TieredCodebook | None:
        """The trained state saved beside the rows (residual or tiered codebook), if any."""
        return self.codebook if self.codebook is not None else self.tiered

    def row_shape(self, k: int, dim: int) -> tuple[int, ...]:
        """Shape of one document's stored vectors: ``(k, D)``, ``(k, packed residual
        bytes)``, or ``(row bytes,)`` for tiered (its slots differ in size)."""
        if self.tiered is not None:
            return (self.tiered.row_bytes(),)
        return (k, dim if self.codebook is None else self.codebook.code_bytes)

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """float32 ``(n, K, D)`` -> stored ``(n, K, width)`` and the side rows ``(n, K)``
        (int8 scales, residual centroid ids) or ``None``. A residual codebook not trained yet
        is trained on ``x`` first (the keep-on-add policy: :mod:`.residual`)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.tiered is not None:
            if not self.tiered.trained:
                self.tiered.train(x)
                codes, gains, _ = self.tiered.encode(x)
            else:
                codes, gains, centres = self.tiered.encode(x)
                part = slice(0, DRIFT_SAMPLE)  # the check is a mean: a sample is enough
                self.tiered.check_drift(
                    x[part], self.tiered.decode(codes[part], gains[part], centres[part])
                )
            return codes, gains
        if self.codebook is not None:
            if not self.codebook.trained:
                self.codebook.train(x.reshape(-1, x.shape[-1]))
                cid, packed = self.codebook.encode(x)
            else:
                cid, packed = self.codebook.encode(x)
                self.codebook.check_drift(x, cid, packed)
            return packed, cid
        if self.name == "float32":
            return x, None
        if self.name == "float16":
            return x.astype(np.float16), None
        if self.name == "bfloat16":
            bits = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy()
            return bits.view(np.uint16), None
        amax = np.abs(x).max(axis=-1)
        scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        q = np.clip(np.rint(x / scale[..., None]), -127, 127).astype(np.int8)
        return q, scale

    def centres(self, x: np.ndarray) -> np.ndarray:
        """tiered: float32 ``(n, D)`` centres (float16-rounded means) of documents ``(n, K', D)``,
        kept in the index's coarse store."""
        assert self.tiered is not None
        return tiered_centres(x)

    def torch_view(self, arr: np.ndarray) -> torch.Tensor | None:
        """A torch tensor sharing memory with stored rows (``None`` for coded kinds)."""
        if self.name == "int8" or self.codebook is not None or self.tiered is not None:
            return None
        with warnings.catch_warnings():  # read-only memmaps: we never write through the view
            warnings.simplefilter("ignore", UserWarning)
            t = torch.from_numpy(arr)
        return t.view(torch.bfloat16) if self.name == "bfloat16" else t

    def decode(
        self, stored: np.ndarray, side: np.ndarray | None, centres: np.ndarray | None = None
    ) -> torch.Tensor:
        """Stored rows ``(..., K, width)`` (+ side rows ``(..., K)``) -> float32 torch tensor;
        tiered: whole rows ``(n, W)``, the gains of the first ``r`` vectors ``(n, r)`` and
        the centres ``(n, D)`` -> ``(n, r, D)``."""
        if self.tiered is not None:
            assert side is not None and centres is not None
            return torch.from_numpy(self.tiered.decode(stored, side, centres))
        if self.codebook is not None:
            assert side is not None
            return torch.from_numpy(self.codebook.decode(side, stored))
        if self.name == "int8":
            assert side is not None
            return dequantize_int8(stored, side)
        t = self.torch_view(np.ascontiguousarray(stored))
        assert t is not None
        return t.to(torch.float32)
