"""``StorageBackend``: what the two-stage search needs from the storage under it.

:class:`~metaembed_rag.index.MultiVectorIndex` validates input, runs the search contract
(:class:`~metaembed_rag.index.params.SearchParams`: coarse recall, optional cascade, exact
budgeted MaxSim rerank, stable top-k) and talks to its storage only through this interface.
Rows are the backend's integer handles for stored documents (``0 <= row < num_rows``; a deleted
document's row stays unused until :meth:`StorageBackend.compact`). The first implementation is
:class:`~metaembed_rag.index.local.LocalBackend` (memory-mapped rows + a FAISS coarse stage). A
vector database that keeps multi-vectors natively (e.g. Qdrant: prefetch on one vector, MaxSim
on the multi-vector, payload filters) implements ``candidates`` with its prefetch, ``score``
with its own MaxSim and ``records`` with its payloads; a hybrid lexical signal is one more
candidate source behind ``candidates``. The maintenance hooks (``reserve``, ``compact``,
``rebuild_coarse``, ``close``) are no-ops unless a backend needs them. The callers do not change.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypedDict

import numpy as np
import torch

from ..budget import Budget
from ..scoring import maxsim, maxsim_pairwise
from .filters import Filter
from .validate import DocumentBatch

__all__ = ["SCAN_CHUNK", "Record", "SearchPlan", "StorageBackend", "StorageInfo"]

#: Rows scored per step by the default exhaustive :meth:`StorageBackend.scan`.
SCAN_CHUNK = 16384


class Record(NamedTuple):
    """What a backend stores beside a document's vectors."""

    id: str
    text: str | None
    metadata: dict[str, Any]


class SearchPlan(NamedTuple):
    """One search as :meth:`StorageBackend.native_search` receives it (checked values)."""

    #: hits per query
    k: int
    #: documents reranked at ``rerank`` (``max(fetch_k, k)``)
    fetch: int
    #: coarse candidates (``fetch``, times the index's ``recall_pool_factor`` for a cascade)
    pool: int
    #: the cascade budget (``(1,1)``: the coarse vector alone)
    recall: Budget
    #: the final exact MaxSim budget
    rerank: Budget
    #: the metadata filter (``None``: every live document)
    filter: Filter | None
    #: ``mode="exhaustive"``: exact MaxSim at ``rerank`` over every matching document
    exhaustive: bool


class StorageInfo(TypedDict):
    """What ``info`` shows about a backend."""

    #: the coarse stage (local FAISS: ``flat``, ``hnsw`` or ``ivf``; else e.g. ``exact``)
    coarse_kind: str
    #: stored bytes per document
    bytes_per_document: int


class StorageBackend(ABC):
    """Rows of multi-vector documents: write, look up, filter, recall, score, persist."""

    dim: int
    num_vectors: int
    #: The backend persists itself (a database): ``index.save()`` needs no folder and
    #: :meth:`save` records the index's settings there.
    remote: bool = False

    @abstractmethod
    def __len__(self) -> int:
        """Live documents."""

    @property
    @abstractmethod
    def num_rows(self) -> int:
        """Rows in use, deleted ones included (the bound of the row handles)."""

    @property
    def path(self) -> Path | None:
        """The local folder the rows live in (``None``: RAM or a remote store)."""
        return None

    def describe(self) -> StorageInfo:
        """What ``info`` shows (default: an exact coarse stage over float32 vectors)."""
        return {"coarse_kind": "exact", "bytes_per_document": self.num_vectors * self.dim * 4}

    # ------------------------------------------------------------------ writing
    @abstractmethod
    def add(self, batch: DocumentBatch) -> None:
        """Store new documents (checked; their ids are not present yet)."""

    @abstractmethod
    def delete(self, ids: Sequence[str]) -> int:
        """Remove live documents by id (all present); returns how many."""

    # ------------------------------------------------------------------ records
    @abstractmethod
    def rows_of(self, ids: Sequence[str]) -> np.ndarray:
        """int64 row of each live id, ``-1`` for ids not stored."""

    @abstractmethod
    def records(self, rows: np.ndarray) -> list[Record]:
        """The stored id, text and metadata of each (live) row."""

    # ------------------------------------------------------------------ search
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

    def native_search(
        self, queries: torch.Tensor, plan: SearchPlan
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The whole search in the backend's own engine (e.g. one Qdrant query: prefetch +
        MaxSim): ``(scores (nq, k) float32, rows (nq, k) int64)`` padded with ``-inf`` / ``-1``,
        the same contract as ``MultiVectorIndex.search_rows``. ``None`` (the default): the
        index runs the plan through ``allowed`` / ``candidates`` / ``score`` / ``scan``."""
        return None

    def scan(
        self, queries: torch.Tensor, budget: Budget, allowed: np.ndarray
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Exhaustive search: ``(rows (m,), scores (nq, m))`` chunks that together score every
        ``allowed`` row exactly at ``budget`` (scores of rows not allowed may be ``-inf``)."""
        allowed_rows = np.flatnonzero(allowed).astype(np.int64)
        for s in range(0, allowed_rows.size, SCAN_CHUNK):
            rows = allowed_rows[s : s + SCAN_CHUNK]
            docs = self.fetch(rows, budget.r_c)
            yield rows, maxsim(queries, docs, budget.as_tuple()).numpy()

    # ------------------------------------------------------------------ maintenance (optional)
    def reserve(self, num_docs: int) -> None:  # noqa: B027 (optional hook)
        """Pre-size storage for ``num_docs`` rows."""

    def compact(self) -> None:  # noqa: B027 (optional hook)
        """Reclaim deleted rows (row handles may change)."""

    def rebuild_coarse(self, kind: str | None = None) -> None:  # noqa: B027 (optional hook)
        """Rebuild the coarse stage, optionally switching to ``kind`` for good."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release resources (memory maps, connections)."""

    # ------------------------------------------------------------------ persistence
    @abstractmethod
    def save(self, target: Path, header: dict[str, Any]) -> Path:
        """Persist atomically into ``target``, recording ``header`` (the index's settings)."""
