"""Shared helpers for the index tests: small synthetic unit vectors."""

from __future__ import annotations

import numpy as np
import torch

from metaembed_rag.index import MultiVectorIndex

K, D = 8, 16
BUDGETS = [(1, 1), (2, 4), (4, 8)]


def unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Random float32 unit vectors of ``shape`` (last axis normalised)."""
    x = rng.standard_normal(shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def queries(rng: np.random.Generator, nq: int = 4, kq: int = 4) -> torch.Tensor:
    return torch.from_numpy(unit(rng, nq, kq, D))


def make_index(**kw) -> MultiVectorIndex:
    kw.setdefault("num_vectors", K)
    kw.setdefault("budgets", BUDGETS)
    return MultiVectorIndex(D, **kw)


def as_pairs(hits) -> list[list[tuple[str, float]]]:
    return [[(h.id, round(h.score, 5)) for h in row] for row in hits]
