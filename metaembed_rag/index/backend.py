"""``StorageBackend``: what the two-stage search needs from the storage under it.

:class:`~metaembed_rag.index.MultiVectorIndex` validates input, runs the search contract
(:class:`~metaembed_rag.index.params.SearchParams`: coarse recall, optional cascade, exact
budgeted MaxSim rerank, stable top-k) and talks to its storage only through this interface.
Rows are the backend's integer handles for stored documents. The first implementation is
:class:`~metaembed_rag.index.local.LocalBackend` (memory-mapped rows + a FAISS coarse stage). A
vector database that keeps multi-vectors natively (e.g. Qdrant: prefetch on one vector, MaxSim
on the multi-vector, payload filters) implements ``candidates`` with its prefetch and
``score`` with its own MaxSim; a hybrid lexical signal is one more candidate source behind
``candidates``. The callers do not change.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..budget import Budget
from ..scoring import maxsim_pairwise
from .filters import Filter
from .validate import DocumentBatch

__all__ = ["StorageBackend"]


class StorageBackend(ABC):
    """Rows of multi-vector documents: write, filter, recall, fetch, score, persist."""

    dim: int
    num_vectors: int

    @abstractmethod
    def __len__(self) -> int:
        """Live documents."""

    @abstractmethod
    def add(self, batch: DocumentBatch) -> None:
        """Store new documents (checked; their ids are not present yet)."""

    @abstractmethod
    def delete(self, ids: Sequence[str]) -> int:
        """Remove live documents by id; returns how many."""

    @abstractmethod
    def allowed(self, filter: Filter | None) -> np.ndarray:
        """Boolean mask over rows: live and matching ``filter``."""

    @abstractmethod
    def candidates(
        self, queries: torch.Tensor, pool: int, allowed: np.ndarray, filtered: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Coarse recall: ``(rows (nq, m) int64, valid (nq, m) bool)``, at most ``pool`` per
        query, only ``allowed`` rows valid."""

    @abstractmethod
    def fetch(self, rows: np.ndarray, r_c: int | None = None) -> torch.Tensor:
        """float32 ``(len(rows), r_c, D)`` document vectors of ``rows`` (for the exact rerank)."""

    def score(self, queries: torch.Tensor, rows: np.ndarray, budget: Budget) -> np.ndarray:
        """Exact MaxSim ``(nq, m)`` of each query against its rows ``(nq, m)`` at ``budget``."""
        if rows.shape[1] == 0:
            return np.zeros(rows.shape, dtype=np.float32)
        docs = self.fetch(rows.reshape(-1), budget.r_c).view(*rows.shape, budget.r_c, self.dim)
        return maxsim_pairwise(queries, docs, budget.as_tuple()).numpy()

    @abstractmethod
    def save(self, target: Path, header: dict[str, Any]) -> Path:
        """Persist atomically into ``target``, recording ``header`` (the index's settings)."""
