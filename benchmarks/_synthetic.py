"""Synthetic clustered unit vectors for index benchmarks, generated in chunks.

Each document belongs to one of ``clusters`` topics: its K vectors are its own topic vector
(centroid + document offset) plus per-vector noise, L2-normalised, so the first vector (and the
mean) is informative for the coarse stage, as with trained MetaEmbed vectors. Queries are made
the same way around a random document's topic.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _centroids(d: int, clusters: int, seed: int) -> np.ndarray:
    return _unit(
        np.random.default_rng([seed, 0xC1]).standard_normal((clusters, d)).astype(np.float32)
    )


def _topics(rng: np.random.Generator, cents: np.ndarray, m: int) -> np.ndarray:
    d = cents.shape[1]
    c = cents[rng.integers(0, len(cents), m)]
    return c + 0.5 * _unit(rng.standard_normal((m, d)).astype(np.float32))


_BANK: dict[int, np.ndarray] = {}


def _noise_bank(d: int) -> np.ndarray:
    """65,536 random Gaussian vectors of norm ~1, drawn once: picking from a bank is much
    cheaper than drawing K*D fresh normals per document (the 1M-document build needs 8e9)."""
    if d not in _BANK:
        rng = np.random.default_rng([d, 0xBA4C])
        _BANK[d] = (rng.standard_normal((65536, d), dtype=np.float32) / np.sqrt(d)).astype(
            np.float32
        )
    return _BANK[d]


def _sets(rng: np.random.Generator, topics: np.ndarray, k: int, noise: float) -> np.ndarray:
    m, d = topics.shape
    pick = torch.from_numpy(rng.integers(0, 65536, size=(m, k)))
    eps = torch.from_numpy(_noise_bank(d))[pick]  # (m, k, d)
    eps.mul_(noise).add_(torch.from_numpy(np.ascontiguousarray(topics, dtype=np.float32))[:, None])
    return torch.nn.functional.normalize(eps, dim=-1).numpy()


def clustered_documents(
    n: int, k: int, d: int, *, clusters: int = 1000, chunk: int = 4096, seed: int = 0
) -> Iterator[np.ndarray]:
    """Yield float32 ``(m, k, d)`` chunks of unit vectors, ``n`` documents in total."""
    cents = _centroids(d, clusters, seed)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        rng = np.random.default_rng([seed, s])
        yield _sets(rng, _topics(rng, cents, m), k, noise=0.7)


def clustered_queries(
    nq: int, kq: int, d: int, *, clusters: int = 1000, seed: int = 0
) -> np.ndarray:
    """float32 ``(nq, kq, d)`` query vector sets around random topics."""
    cents = _centroids(d, clusters, seed)
    rng = np.random.default_rng([seed, 0xABCD])
    return _sets(rng, _topics(rng, cents, nq), kq, noise=0.7)
