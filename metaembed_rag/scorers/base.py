"""The :class:`Scorer` interface of the exact (second) search stage, and the two fixed scorers.

A scorer turns a query's vectors ``(Kq, D)`` and a candidate's vectors ``(Kc, D)`` into one
number, at a budget ``(r_q, r_c)`` (only the first ``r_q`` / ``r_c`` vectors are read). It is
chosen per query (``search(..., scorer=...)``) and reads the vectors the index already stores:
changing the scorer never re-encodes the corpus.

* :class:`MaxSimScorer` (the default): ``sum_i max_j <q_i, c_j>``, kernel-backed in place on the
  stored rows (``StorageBackend.score`` / ``scan``);
* :class:`PooledDotScorer`: ``<mean_i q_i, mean_j c_j>``, one dot product of the pooled sides;
* :class:`~metaembed_rag.scorers.learned.BilinearScorer` and
  :class:`~metaembed_rag.scorers.learned.CrossAttentionScorer`: learned on frozen vectors
  (``metaembed-rag train-scorer``).

>>> import torch
>>> q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
>>> d = torch.tensor([[[1.0, 0.0], [0.0, 3.0]]])
>>> MaxSimScorer().score(q, d, (2, 2))
tensor([[4.]])
>>> PooledDotScorer().score(q, d, (2, 2))
tensor([[1.]])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from ..budget import Budget, BudgetLike, parse_budget
from ..scoring import maxsim, maxsim_pairwise

if TYPE_CHECKING:  # pragma: no cover
    from ..index.backend import StorageBackend

__all__ = ["MaxSimScorer", "PooledDotScorer", "Scorer", "ScorerMismatchError", "as_budget"]

#: Rows fetched per step when a scorer scans every allowed row (``mode="exhaustive"``).
SCAN_ROWS = 4096


class ScorerMismatchError(ValueError):
    """A learned scorer used with vectors of another model (fingerprint or width)."""


def as_budget(budget: BudgetLike) -> Budget:
    """``budget`` as a :class:`Budget` (a ``(r_q, r_c)`` pair or a ``"r_q,r_c"`` string)."""
    b = parse_budget(budget, "budget")
    if b is None:
        raise ValueError("a scorer needs a budget (r_q, r_c), got None")
    return b


class Scorer(ABC):
    """Late-interaction score of query vectors against candidate vectors at a budget.

    Subclasses implement :meth:`score` (every query against every candidate) and
    :meth:`score_pairwise` (each query against its own candidates). :meth:`rerank` and
    :meth:`scan` are what :class:`~metaembed_rag.index.MultiVectorIndex` calls; their defaults
    fetch the candidate rows from the backend (float32) and call the two methods above.

    Attributes:
        name: the short name (``--scorer NAME``).
        first_stage: ``False`` for scorers too costly to score every document
            (``mode="exhaustive"`` refuses them).
        fingerprint: the encoder the scorer was trained for (``None``: any model).
        dim: the vector width it was built for (``None``: any).
    """

    name: ClassVar[str] = ""
    first_stage: ClassVar[bool] = True
    fingerprint: str | None = None
    dim: int | None = None

    @abstractmethod
    def score(self, queries: torch.Tensor, docs: torch.Tensor, budget: BudgetLike) -> torch.Tensor:
        """``(nq, Kq, D) x (N, Kc, D) -> (nq, N)`` float32 scores."""

    @abstractmethod
    def score_pairwise(
        self, queries: torch.Tensor, docs: torch.Tensor, budget: BudgetLike
    ) -> torch.Tensor:
        """``(n, Kq, D) x (n, m, Kc, D) -> (n, m)`` float32: each query against its own ``m``."""

    def check_compatible(self, fingerprint: str | None, dim: int) -> None:
        """Refuse vectors of another model.

        Raises:
            ScorerMismatchError: the scorer was trained for another fingerprint or width.
        """
        if self.dim is not None and self.dim != dim:
            raise ScorerMismatchError(
                f"scorer {self.name!r} was built for {self.dim}-wide vectors but the index holds "
                f"{dim}-wide ones; train a scorer for this model (metaembed-rag train-scorer)."
            )
        if (
            self.fingerprint is not None
            and fingerprint is not None
            and fingerprint != self.fingerprint
        ):
            raise ScorerMismatchError(
                f"scorer {self.name!r} was trained for model fingerprint {self.fingerprint} but "
                f"the vectors come from {fingerprint}; train one for this model "
                "(metaembed-rag train-scorer --model ...) or use --scorer maxsim."
            )

    def rerank(
        self, backend: StorageBackend, queries: torch.Tensor, rows: np.ndarray, budget: Budget
    ) -> np.ndarray:
        """``(nq, m)`` scores of each query against its stored ``rows`` ``(nq, m)``."""
        if rows.shape[1] == 0:
            return np.zeros(rows.shape, dtype=np.float32)
        docs = backend.fetch(rows.reshape(-1), budget.r_c).view(
            *rows.shape, budget.r_c, backend.dim
        )
        with torch.inference_mode():
            return self.score_pairwise(queries, docs, budget).float().numpy()

    def scan(
        self, backend: StorageBackend, queries: torch.Tensor, budget: Budget, allowed: np.ndarray
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every ``allowed`` row scored: ``(rows (m,), scores (nq, m))`` chunks.

        Raises:
            ValueError: the scorer is a reranker only (``first_stage`` is false).
        """
        if not self.first_stage:
            raise ValueError(
                f"scorer {self.name!r} reranks the top candidates only; use "
                "mode='two_stage' (the default) or another scorer for an exhaustive search."
            )
        allowed_rows = np.flatnonzero(allowed).astype(np.int64)
        for s in range(0, allowed_rows.size, SCAN_ROWS):
            rows = allowed_rows[s : s + SCAN_ROWS]
            with torch.inference_mode():
                scores = self.score(queries, backend.fetch(rows, budget.r_c), budget)
            yield rows, scores.float().numpy()

    def describe(self) -> dict[str, Any]:
        """What the scorer is, for logs and ``info``."""
        return {"name": self.name, "fingerprint": self.fingerprint}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MaxSimScorer(Scorer):
    """Budgeted MaxSim, ``sum_{i<r_q} max_{j<r_c} <q_i, c_j>`` (the default; kernel-backed and
    read in place from the stored rows)."""

    name = "maxsim"

    def score(self, queries: torch.Tensor, docs: torch.Tensor, budget: BudgetLike) -> torch.Tensor:
        return maxsim(queries, docs, as_budget(budget).as_tuple())

    def score_pairwise(
        self, queries: torch.Tensor, docs: torch.Tensor, budget: BudgetLike
    ) -> torch.Tensor:
        return maxsim_pairwise(queries, docs, as_budget(budget).as_tuple())

    def rerank(
        self, backend: StorageBackend, queries: torch.Tensor, rows: np.ndarray, budget: Budget
    ) -> np.ndarray:
        return backend.score(queries, rows, budget)

    def scan(
        self, backend: StorageBackend, queries: torch.Tensor, budget: Budget, allowed: np.ndarray
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return backend.scan(queries, budget, allowed)


def _pooled(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean of the first ``r`` vectors along dim -2."""
    return x[..., :r, :].float().mean(dim=-2)


class PooledDotScorer(Scorer):
    """``<mean of the first r_q query vectors, mean of the first r_c candidate vectors>``: one
    dot product per pair (no renormalisation), the cheapest late-interaction scorer."""

    name = "pooled"

    def score(self, queries: torch.Tensor, docs: torch.Tensor, budget: BudgetLike) -> torch.Tensor:
        b = as_budget(budget)
        return _pooled(queries, b.r_q) @ _pooled(docs, b.r_c).T

    def score_pairwise(
        self, queries: torch.Tensor, docs: torch.Tensor, budget: BudgetLike
    ) -> torch.Tensor:
        b = as_budget(budget)
        q = _pooled(queries, b.r_q)  # (n, D)
        return torch.einsum("nd,nmd->nm", q, _pooled(docs, b.r_c))
