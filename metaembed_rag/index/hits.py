"""Search results and deterministic top-k selection."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Hit", "stable_topk"]


@dataclass
class Hit:
    """One search result.

    Attributes:
        id: the document id given at ``add`` time.
        score: the MaxSim score at the rerank budget (float; a sum over query vectors).
        text: the stored text, or ``None``.
        metadata: the stored metadata dict (empty if none was given).
        rank: 0-based position in the result list.
    """

    id: str
    score: float
    text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    rank: int = 0


def stable_topk(scores: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` best entries: highest score first, ties by smaller row number.

    Args:
        scores: ``(n,)`` float scores (``-inf`` entries are never returned).
        rows: ``(n,)`` int row numbers used to break ties.
        k: how many to return (fewer if fewer finite scores).

    Returns:
        int64 positions into ``scores``, best first.

    >>> stable_topk(np.array([1.0, 3.0, 3.0, 2.0]), np.array([5, 9, 4, 0]), 2).tolist()
    [2, 1]
    """
    finite = np.flatnonzero(np.isfinite(scores))
    if k <= 0 or finite.size == 0:
        return np.empty(0, dtype=np.int64)
    s = scores[finite]
    if finite.size > k:
        kth = np.partition(s, finite.size - k)[finite.size - k]
        keep = s >= kth
        finite, s = finite[keep], s[keep]
    order = np.lexsort((rows[finite], -s))
    return finite[order[:k]].astype(np.int64)
