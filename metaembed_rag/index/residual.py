"""PLAID-style residual compression of document vectors.

A vector ``x`` (D float32) is stored as the id of its nearest k-means centroid (``uint16``)
plus its residual ``x - c`` quantised to ``nbits`` (1, 2 or 4) bits per dimension::

    x ~= centroids[cid] + weights[d, code_d]      for every dimension d

``weights[d]`` holds the ``2**nbits`` bucket means of dimension ``d``'s residuals (bucket
edges: the per-dimension quantiles of the training residuals). Codes are packed
little-endian into bytes, ``8 // nbits`` dimensions a byte, so a vector takes
``2 + D * nbits / 8`` bytes (98 bytes at D=384 and 2 bits, against 768 in bfloat16).

**Unit length.** When every vector of the training batch has unit length (as MetaEmbed
vectors always do), the codebook records it (``unit_norm``) and decoding rescales each
reconstructed vector to unit length. Without it, reconstructions come out up to a few percent
longer than 1, and the chunks with the longest ones score high against every query: at
(16,64) on nfcorpus, three residual2 chunks were in the top 10 of 47 to 61 of 300 queries (no
chunk is in more than 20 with the original vectors), and residual2 lost 0.11 macro nDCG@10 on
the zero-shot suite instead of 0.012 (``docs/storage.md``). A codebook trained on unit vectors
refuses later batches that are not (``ValueError``); one trained on other vectors decodes as
before, and so do codebooks saved before the flag existed.

The codebook (centroids, bucket edges and weights) is trained once, on a sample of the first
batch added to an index (:meth:`ResidualCodebook.train`), and **kept** on later adds: rows
already stored never change, so an append-only, crash-safe store stays append-only. A later
batch that the codebook reconstructs much worse than its training sample (its mean squared
error above ``DRIFT_WARN`` times the training error) logs a warning that says to rebuild the
index from a representative first batch.

Decoding a vector is one table look-up per byte: :meth:`ResidualCodebook.byte_table` holds,
for every byte position and byte value, the ``8 // nbits`` residual values it stands for; the C
kernel (:mod:`metaembed_rag.scoring.residual`) uses the same table, so its decoded values are
bit-identical to :meth:`ResidualCodebook.decode` before the unit-length rescaling.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save

from ..scoring.residual import decode_residual
from .persist import IndexCorruptedError

__all__ = [
    "ResidualCodebook", "RESIDUAL_BITS", "DRIFT_WARN", "UNIT_NORM_TOL", "default_centroids",
    "warn_drift",
]  # fmt: skip

logger = logging.getLogger(__name__)

#: Residual widths supported (bits per dimension).
RESIDUAL_BITS = (1, 2, 4)
#: A later batch reconstructed this many times worse than the training sample logs a warning.
DRIFT_WARN = 2.0
#: Vectors sampled from the first batch to train the codebook.
TRAIN_SAMPLE = 32768
#: Largest number of centroids chosen automatically (ids are uint16: at most 65536).
MAX_AUTO_CENTROIDS = 1024
#: Vectors whose length is within this of 1 count as unit length (``unit_norm``).
UNIT_NORM_TOL = 1e-3


def default_centroids(num_vectors: int) -> int:
    """PLAID's rule ``2**floor(log2(16 * sqrt(n)))`` for ``n`` training vectors, capped at
    :data:`MAX_AUTO_CENTROIDS` and at ``n``.

    >>> default_centroids(320_000), default_centroids(64), default_centroids(1)
    (1024, 64, 1)
    """
    if num_vectors <= 1:
        return 1
    k = 2 ** int(math.floor(math.log2(16 * math.sqrt(num_vectors))))
    return int(max(1, min(k, MAX_AUTO_CENTROIDS, num_vectors)))


class ResidualCodebook:
    """Centroids + per-dimension residual buckets (see the module docstring).

    Args:
        dim: vector width D (a multiple of ``8 // nbits``).
        nbits: residual bits per dimension (1, 2 or 4).
        num_centroids: k-means centroids (``None``: :func:`default_centroids` of the sample).
        seed: k-means seed (training is deterministic for a given sample and seed).
    """

    def __init__(
        self, dim: int, nbits: int, num_centroids: int | None = None, seed: int = 0
    ) -> None:
        if nbits not in RESIDUAL_BITS:
            raise ValueError(f"nbits must be one of {RESIDUAL_BITS}, got {nbits}.")
        per_byte = 8 // nbits
        if dim % per_byte:
            raise ValueError(
                f"residual{nbits} storage packs {per_byte} dimensions a byte; dim {dim} is not "
                f"a multiple of {per_byte}: use another storage."
            )
        if num_centroids is not None and not 1 <= num_centroids <= 65536:
            raise ValueError(f"num_centroids must be in 1..65536, got {num_centroids}.")
        self.dim, self.nbits, self.per_byte = int(dim), int(nbits), per_byte
        self.num_centroids = num_centroids
        self.seed = seed
        self.centroids: np.ndarray | None = None  # (C, D) float32
        self.cutoffs: np.ndarray | None = None  # (D, 2**nbits - 1) float32
        self.weights: np.ndarray | None = None  # (D, 2**nbits) float32
        self.train_mse = 0.0
        #: Whether the training vectors had unit length, so decoding rescales to unit length.
        self.unit_norm = False
        self._table: np.ndarray | None = None

    @property
    def trained(self) -> bool:
        return self.centroids is not None

    @property
    def code_bytes(self) -> int:
        """Packed residual bytes per vector."""
        return self.dim // self.per_byte

    # ------------------------------------------------------------------ training
    def train(self, vectors: np.ndarray) -> None:
        """Train on float32 ``(n, D)`` vectors (a sample of at most :data:`TRAIN_SAMPLE` is
        drawn): spherical-free k-means (FAISS), then per-dimension residual quantiles."""
        from .coarse import import_faiss

        x = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if x.shape[0] == 0:
            raise ValueError("cannot train a residual codebook on no vectors.")
        self.unit_norm = _all_unit(x)
        rng = np.random.default_rng(self.seed)
        if x.shape[0] > TRAIN_SAMPLE:
            x = x[np.sort(rng.choice(x.shape[0], TRAIN_SAMPLE, replace=False))]
        k = self.num_centroids or default_centroids(x.shape[0])
        k = min(k, x.shape[0])
        faiss = import_faiss()
        km = faiss.Kmeans(self.dim, k, niter=10, seed=self.seed, verbose=False)
        km.cp.min_points_per_centroid = 1  # small first batches: no warning spam
        km.train(x)
        self.centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
        resid = x - self.centroids[self._assign(x)]
        levels = 2**self.nbits
        qs = np.arange(1, levels) / levels
        self.cutoffs = np.ascontiguousarray(np.quantile(resid, qs, axis=0).T, dtype=np.float32)
        codes = self._bucket(resid)
        weights = np.zeros((self.dim, levels), dtype=np.float64)
        for b in range(levels):
            mask = codes == b
            cnt = mask.sum(axis=0)
            tot = np.where(mask, resid, 0.0).sum(axis=0, dtype=np.float64)
            # an empty bucket (ties in the quantiles) gets its edge value
            edge = self.cutoffs[:, min(b, levels - 2)] if levels > 1 else 0.0
            weights[:, b] = np.where(cnt > 0, tot / np.maximum(cnt, 1), edge)
        self.weights = weights.astype(np.float32)
        self._table = None
        self.train_mse = self.mse(x)
        logger.info(
            "residual%d codebook: %d centroids on %d vectors, mse %.3g, unit length %s",
            self.nbits, k, x.shape[0], self.train_mse, self.unit_norm,
        )  # fmt: skip

    def _assign(self, x: np.ndarray) -> np.ndarray:
        """Nearest centroid (L2) of each float32 ``(n, D)`` vector, ``(n,)`` int64."""
        assert self.centroids is not None
        c = torch.from_numpy(self.centroids)
        xt = torch.from_numpy(np.ascontiguousarray(x))
        c_sq = (c * c).sum(dim=1)
        out = np.empty(x.shape[0], dtype=np.int64)
        step = 8192
        for s in range(0, x.shape[0], step):
            d = c_sq[None, :] - 2.0 * (xt[s : s + step] @ c.T)
            out[s : s + step] = d.argmin(dim=1).numpy()
        return out

    def _bucket(self, resid: np.ndarray) -> np.ndarray:
        """Bucket index (uint8) of every residual value, ``resid`` ``(n, D)``."""
        assert self.cutoffs is not None
        codes = np.zeros(resid.shape, dtype=np.uint8)
        for j in range(self.cutoffs.shape[1]):
            codes += resid > self.cutoffs[:, j]
        return codes

    def _need_trained(self) -> None:
        if not self.trained:
            raise RuntimeError("the residual codebook is not trained yet (add documents first).")

    # ------------------------------------------------------------------ coding
    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``(..., D)`` -> (centroid ids ``(...,)`` uint16, packed ``(..., D*nbits/8)``
        uint8).

        Raises:
            ValueError: the codebook was trained on unit vectors (``unit_norm``) and ``x``
                holds vectors of another length.
        """
        self._need_trained()
        assert self.centroids is not None
        lead = x.shape[:-1]
        flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, self.dim)
        if self.unit_norm and not _all_unit(flat):
            lengths = np.linalg.norm(flat, axis=1)
            raise ValueError(
                f"this residual index was trained on unit-length vectors and decodes to unit "
                f"length, but the batch holds vectors of length {lengths.min():.4g} to "
                f"{lengths.max():.4g}: normalise them first (every metaembed-rag encoder "
                "returns unit vectors), or build a new index for vectors of other lengths."
            )
        cid = self._assign(flat)
        codes = self._bucket(flat - self.centroids[cid])
        return cid.astype(np.uint16).reshape(lead), self._pack(codes).reshape(
            *lead, self.code_bytes
        )

    def _pack(self, codes: np.ndarray) -> np.ndarray:
        """``(n, D)`` bucket indices -> ``(n, D // per_byte)`` bytes (little-endian in a byte)."""
        g = codes.reshape(codes.shape[0], self.code_bytes, self.per_byte).astype(np.uint8)
        out = np.zeros(g.shape[:2], dtype=np.uint8)
        for t in range(self.per_byte):
            out |= g[:, :, t] << (self.nbits * t)
        return out

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        """``(..., D*nbits/8)`` bytes -> ``(..., D)`` bucket indices (uint8)."""
        mask = (1 << self.nbits) - 1
        parts = [(packed >> (self.nbits * t)) & mask for t in range(self.per_byte)]
        return np.stack(parts, axis=-1).reshape(*packed.shape[:-1], self.dim)

    def decode(self, cid: np.ndarray, packed: np.ndarray) -> np.ndarray:
        """Centroid ids ``(...,)`` + packed codes ``(..., D*nbits/8)`` -> float32 ``(..., D)``:
        ``centroids[cid] + weights[d, code]`` (one float32 addition per value), rescaled to
        unit length when the codebook is ``unit_norm``."""
        self._need_trained()
        assert self.centroids is not None
        return decode_residual(cid, packed, self.centroids, self.byte_table(), self.unit_norm)

    def mse(self, x: np.ndarray) -> float:
        """Mean squared reconstruction error per vector of float32 ``(n, D)`` vectors."""
        cid, packed = self.encode(x)
        err = self.decode(cid, packed) - x.reshape(-1, self.dim)
        return float((err.astype(np.float64) ** 2).sum(axis=1).mean())

    def check_drift(self, x: np.ndarray, cid: np.ndarray, packed: np.ndarray) -> float:
        """Mean squared error of an encoded batch; logs a warning above :data:`DRIFT_WARN`
        times the training error (the kept codebook no longer fits the data)."""
        flat = np.asarray(x, dtype=np.float32).reshape(-1, self.dim)
        err = self.decode(cid.reshape(-1), packed.reshape(-1, self.code_bytes)) - flat
        mse = float((err.astype(np.float64) ** 2).sum(axis=1).mean())
        warn_drift(logger, "residual", mse, self.train_mse)
        return mse

    def byte_table(self) -> np.ndarray:
        """``(D // per_byte, 256, per_byte)`` float32: the residual values byte ``b`` at byte
        position ``p`` stands for (the kernel's decoding table)."""
        self._need_trained()
        assert self.weights is not None
        if self._table is None:
            mask = (1 << self.nbits) - 1
            b = np.arange(256)
            codes = np.stack([(b >> (self.nbits * t)) & mask for t in range(self.per_byte)], 1)
            w = self.weights.reshape(self.code_bytes, self.per_byte, -1)
            t_idx = np.arange(self.per_byte)
            # table[p, byte, t] = weights[p * per_byte + t, codes[byte, t]]
            self._table = np.ascontiguousarray(w[:, t_idx[None, :], codes].astype(np.float32))
        return self._table

    # ------------------------------------------------------------------ persistence
    def to_bytes(self) -> bytes:
        """The codebook as safetensors bytes (centroids, cutoffs, weights, training error,
        ``unit_norm``)."""
        self._need_trained()
        assert self.centroids is not None and self.cutoffs is not None
        assert self.weights is not None
        return save(
            {
                "centroids": self.centroids,
                "cutoffs": self.cutoffs,
                "weights": self.weights,
                "train_mse": np.array([self.train_mse], dtype=np.float64),
                "unit_norm": np.array([self.unit_norm], dtype=np.uint8),
            },
            metadata={"nbits": str(self.nbits), "dim": str(self.dim)},
        )

    def load(self, path: Path) -> None:
        """Read a codebook file written from :meth:`to_bytes`.

        Raises:
            IndexCorruptedError: unreadable, or shapes that do not fit this codebook.
        """
        try:
            t = load_file(str(path))
            cent, cut, w = t["centroids"], t["cutoffs"], t["weights"]
            mse = float(t["train_mse"][0])
            # absent from codebooks saved before it existed: they decode without rescaling
            unit = bool(t["unit_norm"][0]) if "unit_norm" in t else False
        except Exception as exc:  # safetensors raises several types on damaged files
            raise IndexCorruptedError(
                f"{path}: unreadable residual codebook ({exc}); restore it or rebuild the index."
            ) from exc
        levels = 2**self.nbits
        if (
            cent.ndim != 2
            or cent.shape[1] != self.dim
            or not 1 <= cent.shape[0] <= 65536
            or cut.shape != (self.dim, levels - 1)
            or w.shape != (self.dim, levels)
        ):
            raise IndexCorruptedError(
                f"{path}: codebook shapes {cent.shape}, {cut.shape}, {w.shape} do not fit "
                f"residual{self.nbits} at dim {self.dim}; restore it or rebuild the index."
            )
        self.centroids, self.cutoffs, self.weights = (
            np.ascontiguousarray(a, dtype=np.float32) for a in (cent, cut, w)
        )
        self.num_centroids = int(cent.shape[0])
        self.train_mse = mse
        self.unit_norm = unit
        self._table = None


def warn_drift(log: logging.Logger, kind: str, mse: float, train_mse: float) -> None:
    """The drift rule of every kept codebook (residual, tiered): a batch reconstructed with
    more than :data:`DRIFT_WARN` times the training sample's squared error logs a warning on
    ``log`` that says to rebuild."""
    if train_mse > 0 and mse > DRIFT_WARN * train_mse:
        log.warning(
            "%s codebook drift: the new documents reconstruct with squared error %.3g, %.3gx "
            "the training sample's %.3g; the codebook is kept (stored rows never change), so "
            "quality drops. Rebuild the index with a representative first batch.",
            kind, mse, mse / train_mse, train_mse,
        )  # fmt: skip


def _all_unit(x: np.ndarray) -> bool:
    """Whether every row of float32 ``(n, D)`` has length within :data:`UNIT_NORM_TOL` of 1."""
    lengths = np.linalg.norm(x, axis=1)
    return bool(np.all(np.abs(lengths - 1.0) <= UNIT_NORM_TOL))
